/*
 * A connection: a stack of filters (cfilter.h) over a socket to one
 * destination (the pool key), the protocol exchange that last used it, and
 * its life data. Busy, it belongs to the one transfer (and multi) using
 * it; idle, it sits in the pool, where any multi may take it.
 */
#ifndef XFER_CONN_H
#define XFER_CONN_H

#include "common.h"

#include <stdatomic.h>

#include "cfilter.h"
#include "multi_ev.h"
#include "now.h"

struct xfer__addr;
struct xfer__bundle;
struct xfer__exchange_type;
struct xfer__wake;

struct xfer__conn {
  uint64_t id;          /* unique in the process */
  int fd;               /* the socket at the bottom (-1 while connecting):
                           what the multi tracks and closes */
  struct xfer__cf *filters; /* the top of its stack */
  /* The exchange that runs on it (set when one starts): its part of a
   * graceful close and of the liveness check come first. */
  const struct xfer__exchange_type *proto;
  bool proto_shut;      /* the exchange's shutdown step ended */
  char *key;            /* the pool key (see xfer__conn_key()) */
  size_t key_len;
  uint64_t key_hash;
  xfer__time created;
  xfer__time last_used; /* when it last went idle */
  unsigned requests;    /* requests sent on it */
  struct xfer__list idle_node; /* in a lane or an attached list of its
                                  bundle, or in the shutdown handle's
                                  list, or an eviction list on its way
                                  there */
  struct xfer__bundle *bundle; /* the pool destination whose slot it holds
                                  (NULL: none) */
  bool holds_total;            /* and a slot under the pool's total limit
                                  (open and not closing) */
  /* Its own last pollset, while no transfer uses it in a multi: attached
   * (attached.h) or shutting down (shutdown.h). ev_live: ev has uses. */
  struct xfer__mev_tracker ev;
  bool ev_live;
  xfer__time shutdown_deadline;
  /* Attached (brief rule 4 fast path): kept by the multi that last used
   * it. owner_node and attached_at belong to that multi's thread;
   * owner_wake is set before the connection joins its bundle's attached
   * list and read by waiters under the bundle lock; release_requested is
   * set by a waiter under the bundle lock and read by the owner without
   * it. */
  struct xfer__list owner_node;
  xfer__time attached_at;
  struct xfer__wake *owner_wake;
  atomic_bool release_requested;
};

/* The longest pool key (a host of 253 characters and the rest). */
#define XFER__POOL_KEY_MAX 600

/*
 * The pool key: every setting that makes two connections
 * non-interchangeable (brief rule 5): scheme, host as given, port, IP
 * version, local bind address. TLS settings join it when TLS lands.
 * Writes at most `len` bytes; returns the length (>= len: too long).
 */
size_t xfer__conn_key(char *out, size_t len, const char *scheme,
                      const char *host, unsigned port, int ip_version,
                      const char *local_addr);

uint64_t xfer__conn_key_hash(const char *key, size_t len);

/* A connection over a socket connected already (taking it over): its
 * stack is the socket filter. NULL when out of memory (the socket is not
 * closed). */
struct xfer__conn *xfer__conn_new(int fd, const char *key, size_t key_len,
                                  xfer__time now);

/* A connection that starts connecting to the first of `addrs` to answer
 * (`local`: the address to bind, or NULL). The tests' filter hook
 * (xfer__cf_test_hook) may add to its stack. NULL when out of memory. */
struct xfer__conn *xfer__conn_open(const char *key, size_t key_len,
                                   xfer__time now,
                                   const struct xfer__addr *addrs,
                                   unsigned naddrs,
                                   const struct xfer__addr *local);

/* Advances the connect of every filter, bottom up. On AGAIN *next_at may
 * be lowered to when to call again without an event; on FAILED `why`
 * says why. Sets fd once the socket is connected. */
enum xfer__cf_progress xfer__conn_connect(struct xfer__conn *c,
                                          struct xfer__mev *ev, xfer__time now,
                                          xfer__time *next_at, char *why,
                                          size_t why_len);

/* Is the stack one connected socket (no TLS, no test filter)? Then it
 * waits on c->fd for just what the exchange waits for: the pollset of
 * most requests, known without a call down the stack. */
static inline bool xfer__conn_socket_alone(const struct xfer__conn *c) {
  const struct xfer__cf *top = c->filters;

  return !top->below && top->connected && top->type->waits_as_asked;
}

/* What the stack waits on when the exchange waits for `want` (0 while
 * connecting). */
static inline void xfer__conn_pollset(struct xfer__conn *c,
                                      struct xfer__pollset *ps,
                                      unsigned want) {
  if (!xfer__conn_socket_alone(c))
    xfer__cf_pollset(c->filters, ps, want);
  else if (want)
    xfer__pollset_add(ps, c->fd, want);
}

static inline ssize_t xfer__conn_send(struct xfer__conn *c,
                                      const struct iovec *iov, int iovcnt,
                                      int *err) {
  return xfer__cf_send(c->filters, iov, iovcnt, err);
}

static inline ssize_t xfer__conn_recv(struct xfer__conn *c, char *buf,
                                      size_t len, int *err) {
  return xfer__cf_recv(c->filters, buf, len, err);
}

/* Received bytes the stack holds already (no event will announce them). */
static inline bool xfer__conn_data_pending(const struct xfer__conn *c) {
  return xfer__cf_data_pending(c->filters);
}

/* One step of a graceful close, top down: the exchange's part (HTTP/1.1:
 * none), then each filter's from the top (the socket: FIN, then the
 * peer's EOF). DONE when all ended; AGAIN: wait for IN (assess_conn). */
enum xfer__cf_progress xfer__conn_shutdown_step(struct xfer__conn *c);

/* Closes the stack (its socket through socket_done of `ev`, the event
 * tracking that knows it; NULL for a socket none knows) and frees the
 * connection. */
void xfer__conn_close(struct xfer__conn *c, struct xfer__mev *ev);

/* Before reusing an idle connection: may it be? The exchange's view
 * first, then every filter's (the socket: a non-blocking MSG_PEEK; a
 * closed peer, or bytes nobody asked for, mean no). */
bool xfer__conn_alive(const struct xfer__conn *c);

#endif /* XFER_CONN_H */
