/*
 * Name resolution with c-ares: one channel per multi. The resolver tracks
 * the channel's sockets itself (a tracker of its own, like a connection's)
 * and the multi runs it, with c-ares' timeouts as the expiry of an
 * internal handle: a DNS packet wakes the resolver alone, and the answer
 * wakes the transfers that asked. A transfer waiting for an answer has no
 * socket and no timer of its own for it, so a packet costs the same with
 * one transfer resolving or ten thousand, and a lookup whose transfers
 * went away is still watched until c-ares ends it (its answer is cached).
 * Transfers asking for the same name at once share one lookup; answers
 * are cached per multi for their TTL. Numeric addresses never reach
 * c-ares.
 *
 * Protected by: nothing; it belongs to the multi's thread.
 */
#ifndef XFER_RESOLVE_H
#define XFER_RESOLVE_H

#include "common.h"

#include "cf_socket.h"
#include "loop.h"
#include "multi_ev.h"
#include "now.h"

struct xfer__lookup;
struct xfer__resolver;

/* A multi's resolver and its settings. */
struct xfer__dns {
  struct xfer__loop *loop;
  /* A lookup x waited for is answered: x is to run (the multi marks it). */
  void (*answered)(xfer *x);
  /* The channel wants a run in this call (a socket had events, or a query
   * went out): the multi calls xfer__resolve_run() before it returns.
   * `due_now`: the call may be one that runs nothing (a socket refused at
   * the resync of an add or a remove): the run is due at once as well, so
   * the timer callback hears 0. */
  void (*wake)(struct xfer__dns *dns, bool due_now);
  struct xfer__resolver *resolver; /* created at the first lookup */
  bool used;     /* a lookup was tried (or made): the settings are fixed */
  char *servers; /* "ip[:port],..." or NULL: the system's */
  int timeout_ms;
  int tries;
};

void xfer__dns_init(struct xfer__dns *dns, struct xfer__loop *loop,
                    void (*answered)(xfer *x),
                    void (*wake)(struct xfer__dns *dns, bool due_now));
/* Frees the resolver (lookups still waiting end without an answer; their
 * transfers are not told) and the settings. */
void xfer__dns_cleanup(struct xfer__dns *dns);

/* One transfer's question and, once done, its answer. */
struct xfer__resolve_req {
  struct xfer__lookup *lookup;  /* while waiting */
  struct xfer__list waiter_node;
  xfer *x;
  uint16_t port;
  bool done;
  xfer_code result;
  char detail[128];
  struct xfer__addr addrs[XFER__HE_MAX_ADDRS];
  unsigned naddrs;
};

/* ip_version: 0 any, 4, 6. Starts or answers at once (req->done). */
xfer_code xfer__resolve_start(struct xfer__dns *dns,
                              struct xfer__resolve_req *req,
                              xfer *x, const char *host, uint16_t port,
                              int ip_version, xfer__time now);
/* Forgets a request still waiting (the transfer is going away). */
void xfer__resolve_cancel(struct xfer__resolve_req *req);

/* The resolver's run: processes the channel's ready sockets and its
 * timeouts (once per multi call; finished lookups mark their transfers
 * dirty through `answered`), then tracks the channel's sockets as they are
 * now. When they cannot be tracked (the socket callback refused one, or
 * memory ran out), every lookup ends with that error. Returns when c-ares
 * wants to run again (a retry, a timeout), or XFER__TIME_NEVER. */
xfer__time xfer__resolve_run(struct xfer__dns *dns, xfer__time now);
/* Are lookups on their way? */
bool xfer__resolve_busy(const struct xfer__dns *dns);

/* Is `csv` a list c-ares takes: "ip[:port],..." with numeric addresses
 * ([ipv6]:port for a port with IPv6)? Checked when the list is set, so a
 * bad one is refused there, not at the first lookup. */
bool xfer__dns_servers_valid(const char *csv);

#endif /* XFER_RESOLVE_H */
