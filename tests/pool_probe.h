/*
 * Driving lib/pool.c directly, without transfers or sockets, for the
 * tests and the benchmark that check the pool itself: a checkout with a
 * fresh waiter, and the connection a checkout said to open (on /dev/null:
 * nothing is ever sent on it). Header only, so that the benchmark, a
 * Criterion suite and a plain TAP program can all use it.
 */
#ifndef XFER_TESTS_POOL_PROBE_H
#define XFER_TESTS_POOL_PROBE_H

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "pool.h"

/* One checkout of `key` at `now`, by a transfer that must have a new
 * connection when `fresh_only` (a retry). w must live as long as a wait
 * does; `wake` (NULL where nothing can wait) is what the pool writes to
 * when it hands w a connection or a slot. Connections the pool evicts
 * meanwhile are added to `evicted`, for the caller to close
 * (probe_close_evicted()). */
static inline enum xfer__acquire
probe_acquire_as(xfer_pool *pool, const char *key, xfer__time now,
                 bool fresh_only, struct xfer__waiter *w,
                 struct xfer__wake *wake, struct xfer__conn **conn,
                 struct xfer__list *evicted) {
  size_t len = strlen(key);
  bool dead = false;

  xfer__waiter_init(w);
  w->wake = wake;
  w->fresh_only = fresh_only;
  w->replayable = true; /* a GET */
  *conn = NULL;
  return xfer__pool_acquire(pool, key, len, xfer__conn_key_hash(key, len),
                            now, w, conn, &dead, evicted);
}

static inline enum xfer__acquire
probe_acquire(xfer_pool *pool, const char *key, xfer__time now,
              struct xfer__waiter *w, struct xfer__wake *wake,
              struct xfer__conn **conn, struct xfer__list *evicted) {
  return probe_acquire_as(pool, key, now, false, w, wake, conn, evicted);
}

/* What w was granted, taken at `now` (a connection handed over passes
 * the reuse check: at a `now` close to its return, it is trusted). */
static inline enum xfer__acquire probe_take(xfer_pool *pool,
                                            struct xfer__waiter *w,
                                            xfer__time now,
                                            struct xfer__conn **conn,
                                            struct xfer__list *evicted) {
  bool dead = false;

  return xfer__pool_take_grant(pool, w, now, conn, &dead, evicted);
}

/* The end of every evicted connection's graceful close; how many. (A
 * close may pass a slot to a waiter for room, which closes another idle
 * connection: that one joins the list and is closed too.) */
static inline int probe_close_evicted(xfer_pool *pool,
                                      struct xfer__list *evicted) {
  int n = 0;

  while (!xfer__list_empty(evicted)) {
    struct xfer__conn *c = XFER__CONTAINER_OF(evicted->next,
                                              struct xfer__conn, idle_node);
    xfer__list_remove(&c->idle_node);
    xfer__pool_close(pool, c, XFER__CLOSE_EVICTED, NULL, evicted);
    n++;
  }
  return n;
}

/* After XFER__ACQUIRE_OPEN or _REPLACE, or slots granted to a waiter: the
 * connection w's slots are for; NULL when out of descriptors or memory. */
static inline struct xfer__conn *probe_open(xfer_pool *pool,
                                            struct xfer__waiter *w,
                                            const char *key, xfer__time now) {
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  struct xfer__conn *c = fd < 0 ? NULL
                                : xfer__conn_new(fd, key, strlen(key), now);

  if (!c) {
    if (fd >= 0)
      close(fd);
    return NULL;
  }
  xfer__pool_opened(pool, w, c, false);
  return c;
}

#endif /* XFER_TESTS_POOL_PROBE_H */
