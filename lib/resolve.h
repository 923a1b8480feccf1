/*
 * Name resolution with c-ares: one channel per multi. The channel's
 * sockets join the pollset of every transfer resolving at that moment (a
 * socket shared by many transfers, with real reader counts); c-ares'
 * timeouts become those transfers' RESOLVE expiry. Transfers asking for
 * the same name at once share one lookup; answers are cached per multi for
 * their TTL. Numeric addresses never reach c-ares.
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
  struct xfer__resolver *resolver; /* created at the first lookup */
  bool used;     /* a lookup was tried (or made): the settings are fixed */
  char *servers; /* "ip[:port],..." or NULL: the system's */
  int timeout_ms;
  int tries;
};

void xfer__dns_init(struct xfer__dns *dns, struct xfer__loop *loop,
                    void (*answered)(xfer *x));
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

/* Processes the channel's sockets and timeouts, once per multi call;
 * finished lookups mark their transfers dirty. */
void xfer__resolve_step(struct xfer__dns *dns, xfer__time now);
/* The channel's sockets, for a resolving transfer's pollset. */
void xfer__resolve_pollset(struct xfer__dns *dns, struct xfer__pollset *ps);
/* When c-ares wants to be run again (retries), or XFER__TIME_NEVER. */
xfer__time xfer__resolve_next_at(struct xfer__dns *dns, xfer__time now);

/* Is `csv` a list c-ares takes: "ip[:port],..." with numeric addresses
 * ([ipv6]:port for a port with IPv6)? Checked when the list is set, so a
 * bad one is refused there, not at the first lookup. */
bool xfer__dns_servers_valid(const char *csv);

#endif /* XFER_RESOLVE_H */
