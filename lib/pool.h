/*
 * The connection pool: process wide, shared by every multi attached to it,
 * thread-safe. See docs/internals/pool.md.
 *
 * Protection:
 *   pool->bundles        cds_lfht (liburcu): lookups under rcu_read_lock()
 *                        (urcu-bp flavour: no thread registration); bundles
 *                        are added with add_unique, removed by the idle
 *                        sweep once unused (marked dead under their lock)
 *                        and freed with call_rcu; rcu_barrier in destroy
 *   bundle->idle, idle_count, attached, attached_count, conns, waiters
 *                        bundle->lock, held for a few pointer moves
 *                        only: no clock read, syscall, allocation or
 *                        callback while held (debug builds assert it)
 *   pool->total, total_waiters   total_lock (the total is raised with an
 *                        atomic outside it, lowered only under it)
 *   pool counters        atomics (relaxed: statistics)
 */
#ifndef XFER_POOL_H
#define XFER_POOL_H

#include "common.h"

#include <stdatomic.h>

#include "conn.h"
#include "now.h"

struct xfer__bundle;

/* A multi's wake-up: an eventfd other threads write to after granting one
 * of its waiting transfers a connection. Reference counted, so a writer
 * never writes to a descriptor that was closed and reused. */
struct xfer__wake {
  atomic_int refs;
  int fd;
};

struct xfer__wake *xfer__wake_new(void);
void xfer__wake_unref(struct xfer__wake *w);

/* A transfer's place in a destination's FIFO of waiters, and what it was
 * granted. Fields other than `granted` are under the bundle's lock. */
struct xfer__waiter {
  struct xfer__list node;          /* in the bundle's waiters */
  struct xfer__bundle *bundle;     /* waited on, or whose slot it holds */
  struct xfer__wake *wake;         /* the waiting multi's */
  struct xfer__conn *granted_conn; /* an idle connection handed over */
  bool granted_slot;               /* a connection slot handed over */
  bool holds_slot;                 /* a slot to open a connection with */
  bool total_wait;                 /* holds a destination slot and waits
                                      in the pool-wide FIFO (total_lock) */
  bool fresh_only;                 /* must have a new connection (a retry,
                                      rule 6): granted slots, never an
                                      idle connection */
  atomic_bool granted;             /* the owner reads it without the lock */
};

enum xfer__acquire {
  XFER__ACQUIRE_CONN, /* *conn is an idle connection to use */
  XFER__ACQUIRE_OPEN, /* a slot is reserved: open a new connection */
  XFER__ACQUIRE_WAIT, /* the destination is at its limit: queued */
  XFER__ACQUIRE_NOMEM
};

/*
 * Finds a connection for `key`: the most recently idled one (unless
 * fresh_only), checked for liveness when idle past the recheck interval
 * (dead ones are closed, *saw_dead set); else a slot for a new one while
 * the destination is under its limit; else w joins the destination's FIFO
 * (its multi is woken through w->wake when it is granted a connection or a
 * slot). Expired connections met on the way go on `evicted`, for the
 * caller's multi to shut down. Thread-safe; never reads the clock.
 */
enum xfer__acquire xfer__pool_acquire(xfer_pool *pool, const char *key,
                                      size_t key_len, uint64_t hash,
                                      xfer__time now, bool fresh_only,
                                      struct xfer__waiter *w,
                                      struct xfer__conn **conn,
                                      bool *saw_dead,
                                      struct xfer__list *evicted);

/* The owner gives up waiting or its slot (timeout, removal, failure):
 * anything granted meanwhile is passed on, so nothing is lost. */
void xfer__pool_cancel(xfer_pool *pool, struct xfer__waiter *w,
                       xfer__time now, struct xfer__list *evicted);

/* Hands an idle connection to the pool (its socket must no longer be
 * tracked by any multi). It goes on `evicted` instead when the destination
 * already has its maximum of idle connections, it is too old, or out of
 * memory; expired ones found by a sweep join it. `now` is the caller
 * transfer's: the pool never reads the clock. Thread-safe. */
void xfer__pool_return(xfer_pool *pool, struct xfer__conn *c, xfer__time now,
                       struct xfer__list *evicted);

/* Why a connection closes, for the statistics. */
enum xfer__close_reason {
  XFER__CLOSE_EVICTED, /* the pool evicted it (counted then, by reason) */
  XFER__CLOSE_DEAD,    /* found dead on checkout (counted then) */
  XFER__CLOSE_PEER,    /* the server closed it or said it would */
  XFER__CLOSE_ERROR    /* a transfer failed or was stopped on it */
};

/* A connection was opened with w's slot (which moves into it); `reopen`:
 * because a reused one was dead. */
void xfer__pool_opened(xfer_pool *pool, struct xfer__waiter *w,
                       struct xfer__conn *c, bool reopen);
/* A connection is about to be closed by its user (before its memory
 * goes): its slot passes to the oldest waiter of its destination, if
 * any. */
void xfer__pool_closing(xfer_pool *pool, struct xfer__conn *c,
                        enum xfer__close_reason why);

/*
 * The attached fast path (brief rule 4). A multi that just finished with
 * c (its socket still tracked there) keeps it attached: it counts as idle,
 * and a waiter of another thread that finds no shared idle connection
 * asks for it (c->release_requested, then the owner's wake-up) instead of
 * opening one. false: not kept (attaching is off, c is too old, or
 * someone already waits for the destination): return it the usual way.
 */
bool xfer__pool_keep_attached(xfer_pool *pool, struct xfer__conn *c,
                              struct xfer__wake *owner, xfer__time now);

enum xfer__take {
  XFER__TAKE_REUSE, /* the owner's next transfer uses it */
  XFER__TAKE_CLOSE  /* it closes: the peer closed it while attached, or the
                       owner could not keep watching it */
};
/* The owner takes c off its destination's attached list. false (for
 * XFER__TAKE_REUSE only): a waiter has asked for it; release it. */
bool xfer__pool_take_attached(xfer_pool *pool, struct xfer__conn *c,
                              enum xfer__take why);
/* The owner releases c to the shared side (its socket no longer tracked
 * by the owner): to the oldest waiter of its destination, or idle, or
 * evicted (too old, over a limit) onto `evicted`. `on_demand`: a waiter
 * asked for it. */
void xfer__pool_release_attached(xfer_pool *pool, struct xfer__conn *c,
                                 bool on_demand, xfer__time now,
                                 struct xfer__list *evicted);
/* Is c past the pool's maximum lifetime at `now`? */
bool xfer__pool_too_old(const xfer_pool *pool, const struct xfer__conn *c,
                        xfer__time now);
/* The hold time of attached connections; 0: attaching is off. */
xfer__time xfer__pool_attach_hold(const xfer_pool *pool);
/* Counts a request retried on a fresh connection. */
void xfer__pool_count_retry(xfer_pool *pool);

/* A multi attaches to the pool for its life; the pool cannot be destroyed
 * while multis are attached. */
void xfer__pool_attach(xfer_pool *pool);
void xfer__pool_detach(xfer_pool *pool);

bool xfer__pool_valid(const xfer_pool *pool);
/* Does the pool limit connections (so transfers may have to wait)? */
bool xfer__pool_limited(const xfer_pool *pool);

#endif /* XFER_POOL_H */
