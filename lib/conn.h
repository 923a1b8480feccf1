/*
 * A connection: a connected socket to one destination (the pool key), with
 * its life data. Busy, it belongs to the one transfer (and multi) using
 * it; idle, it sits in the pool, where any multi may take it.
 */
#ifndef XFER_CONN_H
#define XFER_CONN_H

#include "common.h"

#include <stdatomic.h>

#include "multi_ev.h"
#include "now.h"

struct xfer__bundle;
struct xfer__wake;

struct xfer__conn {
  uint64_t id;          /* unique in the process */
  int fd;
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

/* A new connection object for a connected socket (taking it over). NULL
 * when out of memory (the socket is not closed). */
struct xfer__conn *xfer__conn_new(int fd, const char *key, size_t key_len,
                                  xfer__time now);

/* Closes the socket (through socket_done of `m` if it tracks it; m may be
 * NULL for a socket no multi tracks) and frees the connection. */
void xfer__conn_close(struct xfer__conn *c, xfer_multi *m);

/* A cheap check of an idle connection before reuse: false when the peer
 * closed it or sent bytes nobody asked for (a non-blocking MSG_PEEK). */
bool xfer__conn_alive(const struct xfer__conn *c);

#endif /* XFER_CONN_H */
