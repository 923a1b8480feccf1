/*
 * The connection pool: process wide, shared by every multi attached to it,
 * thread-safe. See docs/internals/pool.md.
 *
 * Protection:
 *   pool->bundles        cds_lfht (liburcu): lookups under rcu_read_lock()
 *                        (urcu-bp flavour: no thread registration); bundles
 *                        are added with add_unique and live as long as the
 *                        pool (issue 5 adds removal with call_rcu)
 *   bundle->idle, idle_count   bundle->lock, held for a few pointer moves
 *                        only: no clock read, syscall, allocation or
 *                        callback while held (debug builds assert it)
 *   pool counters        atomics (relaxed: statistics)
 */
#ifndef XFER_POOL_H
#define XFER_POOL_H

#include "common.h"

#include "conn.h"
#include "now.h"

/* Takes the most recently idled connection for `key`, or returns NULL.
 * One idle for longer than the recheck interval (at the caller's `now`)
 * is checked for liveness first; dead ones are closed and *saw_dead set.
 * Connections the pool evicts on the way (expired) are put on `evicted`
 * for the caller's multi to shut down gracefully. Thread-safe; never reads
 * the clock. */
struct xfer__conn *xfer__pool_checkout(xfer_pool *pool, const char *key,
                                       size_t key_len, uint64_t hash,
                                       xfer__time now, bool *saw_dead,
                                       struct xfer__list *evicted);

/* Hands an idle connection to the pool (its socket must no longer be
 * tracked by any multi). It goes on `evicted` instead when the destination
 * already has its maximum of idle connections, it is too old, or out of
 * memory; expired ones found by a sweep join it. `now` is the caller
 * transfer's: the pool never reads the clock. Thread-safe. */
void xfer__pool_return(xfer_pool *pool, struct xfer__conn *c, xfer__time now,
                       struct xfer__list *evicted);

/* Counts a connection opened for the pool's users; `reopen`: because a
 * reused one was dead. */
void xfer__pool_count_open(xfer_pool *pool, bool reopen);
/* Counts a connection closed by its user; `was_evicted`: one the pool
 * handed to a shutdown handle. */
void xfer__pool_count_close(xfer_pool *pool, bool was_evicted);
/* Counts a request retried on a fresh connection. */
void xfer__pool_count_retry(xfer_pool *pool);

/* A multi attaches to the pool for its life; the pool cannot be destroyed
 * while multis are attached. */
void xfer__pool_attach(xfer_pool *pool);
void xfer__pool_detach(xfer_pool *pool);

bool xfer__pool_valid(const xfer_pool *pool);

#endif /* XFER_POOL_H */
