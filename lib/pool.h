/*
 * The connection pool: process wide, shared by every multi attached to it,
 * thread-safe. See docs/internals/pool.md. Its parts:
 *
 *   pool.c          the pool object: options, statistics, life cycle of a
 *                   connection's accounting (opened, evicted, closing)
 *   pool_table.c    the RCU table of destinations: acquire, return, the
 *                   idle sweep
 *   pool_slots.c    slots and waiting: the FIFOs, cancel, and the one
 *                   function through which every freed slot passes
 *   pool_lanes.c    idle connections in per-CPU lanes, and the index of
 *                   destinations with idle ones (making room)
 *   pool_attached.c connections attached to their last multi (rule 4)
 *   wake.c          the eventfd that wakes a waiting multi
 *
 * Every function here is thread-safe and never reads the clock: the
 * caller passes its transfer's `now` (rule 3). Connections the pool closes
 * gracefully are put on an `evicted` list for the caller's multi to shut
 * down (shutdown.c); the caller passes one to every call that may evict.
 */
#ifndef XFER_POOL_H
#define XFER_POOL_H

#include "common.h"

#include <stdatomic.h>

#include "conn.h"
#include "now.h"
#include "wake.h"

struct xfer__bundle;

/* Where a waiter stands. Written under the lock of the list it leaves or
 * enters (see pool_slots.c); the owner reads it once `granted` is set, or
 * under those locks. */
enum xfer__wait_state {
  XFER__WAIT_NONE,    /* holds nothing, in no list */
  XFER__WAIT_QUEUED,  /* in its destination's FIFO; holds nothing */
  XFER__WAIT_ROOM,    /* holds its destination slot; in the pool's FIFO
                         for a total slot */
  XFER__WAIT_GRANTED, /* handed a connection or both slots; `granted` */
  XFER__WAIT_SLOTS    /* holds both slots: opens a connection with them */
};

/* A transfer's place in the pool's FIFOs, and what it was granted. */
struct xfer__waiter {
  struct xfer__list node;      /* in its bundle's FIFO (QUEUED) or its
                                  bundle's room list (ROOM) */
  struct xfer__list room_node; /* in the pool's room FIFO (ROOM) */
  struct xfer__bundle *bundle; /* waited on, or whose slot it holds */
  struct xfer__wake *wake;     /* the waiting multi's (NULL: none) */
  struct xfer__conn *granted_conn; /* handed over (GRANTED) */
  enum xfer__wait_state state;
  /* What the transfer needs, set by its owner before a checkout: */
  bool fresh_only; /* must have a new connection (a retry, rule 6) */
  bool replayable; /* its request may be sent again when a reused
                      connection dies before any response byte (rule 6):
                      idempotent, and a body that can be sent again */
  bool replace;    /* granted_conn is to be closed at once; its slots
                      are the waiter's (fresh_only) */
  bool waiting;    /* the owner's view: queued, no grant taken yet */
  bool bounded;    /* queued where another multi's release may be what
                      it waits for, or while its destination had a free
                      slot: its owner stops waiting after attached_wait
                      (xfer__pool_stop_waiting()), and looks again every
                      attached_wait while its destination is at its
                      limit. The owner's alone (written under b's lock
                      in a checkout) */
  atomic_bool granted; /* the owner reads it without a lock */
};

/* Readies a waiter (once per transfer). */
void xfer__waiter_init(struct xfer__waiter *w);

enum xfer__acquire {
  XFER__ACQUIRE_CONN,    /* *conn is an idle connection to use */
  XFER__ACQUIRE_OPEN,    /* the waiter holds both slots: open one */
  XFER__ACQUIRE_REPLACE, /* a retry at its destination's limit: *conn is
                            an idle connection whose slots are now the
                            waiter's; close it at once
                            (xfer__conn_close), then open a new one */
  XFER__ACQUIRE_WAIT,    /* queued: the multi is woken through w->wake */
  XFER__ACQUIRE_NOMEM
};

/*
 * Finds a connection for `key` and the request w->fresh_only and
 * w->replayable describe: the most recently idled one (unless
 * fresh_only) that passes xfer__pool_reuse_check() (dead ones are closed,
 * *saw_dead set); else both slots for a new one; else w waits: for its
 * destination (at max_per_destination, behind older waiters, or for an
 * attached connection of another multi, whose owner is asked for it:
 * w->bounded), or for room (at max_total: an idle connection elsewhere is
 * closed for it first when there is one).
 */
enum xfer__acquire xfer__pool_acquire(xfer_pool *pool, const char *key,
                                      size_t key_len, uint64_t hash,
                                      xfer__time now,
                                      struct xfer__waiter *w,
                                      struct xfer__conn **conn,
                                      bool *saw_dead,
                                      struct xfer__list *evicted);

/* A bounded waiter's owner gives up waiting for an attached connection
 * (its attached_wait passed, on its own clock: rule 4, no thread waits on
 * another's event loop): what it was granted meanwhile, or both slots for
 * a connection of its own (or it waits for room), or WAIT when its
 * destination is at its limit (it keeps its place). */
enum xfer__acquire xfer__pool_stop_waiting(xfer_pool *pool,
                                           struct xfer__waiter *w,
                                           xfer__time now,
                                           struct xfer__conn **conn,
                                           bool *saw_dead,
                                           struct xfer__list *evicted);
/* How long a waiter waits for another multi's attached connection. */
xfer__time xfer__pool_attached_wait(const xfer_pool *pool);

/* Rule 6, for an idle connection about to carry a request at `now`
 * (taken from the pool, or attached to the caller's multi). */
enum xfer__reuse {
  XFER__REUSE_OK,      /* reuse it */
  XFER__REUSE_EXPIRED, /* past the idle timeout or its lifetime */
  XFER__REUSE_TOO_IDLE, /* a request that cannot be sent again, on one
                           idle close to the server's idle-close time */
  XFER__REUSE_DEAD     /* the liveness check found it closed */
};
/* Checks liveness (a non-blocking peek, counted in liveness_checks) when
 * c was idle past its destination's recheck time, and always for a
 * request that is not replayable; learns from what it finds. */
enum xfer__reuse xfer__pool_reuse_check(xfer_pool *pool, struct xfer__conn *c,
                                        xfer__time now, bool replayable);
/* Would xfer__pool_reuse_check() say OK without a liveness check (no
 * system call): fresh, a replayable request, idle under the recheck
 * interval? */
bool xfer__pool_reuse_trusted(xfer_pool *pool, const struct xfer__conn *c,
                              xfer__time now, bool replayable);
/* What the server said or did about idle connections of c's destination:
 * a Keep-Alive: timeout=N header (seconds), or one that died unanswered
 * after being idle for `idle` (the peer closed it). */
void xfer__pool_learn_keep_alive(xfer_pool *pool, struct xfer__conn *c,
                                 long seconds);
void xfer__pool_learn_died(xfer_pool *pool, struct xfer__conn *c,
                           xfer__time idle);

/* After w was woken: what it was granted (CONN, OPEN or REPLACE, as
 * xfer__pool_acquire()), or WAIT when nothing yet. A connection handed
 * over passes the same reuse check as one taken from the pool; one that
 * fails it is closed, and the checkout starts again. Owner thread only. */
enum xfer__acquire xfer__pool_take_grant(xfer_pool *pool,
                                         struct xfer__waiter *w,
                                         xfer__time now,
                                         struct xfer__conn **conn,
                                         bool *saw_dead,
                                         struct xfer__list *evicted);

/* The owner gives up waiting or its slots (timeout, removal, failure):
 * its place is left, and what it held or was granted meanwhile passes to
 * the oldest waiter that can use it. A waiter that holds nothing costs a
 * branch. */
void xfer__pool_cancel(xfer_pool *pool, struct xfer__waiter *w,
                       xfer__time now, struct xfer__list *evicted);

/* Does w hold nothing (no place, no slot, no grant)? Then a cancel has
 * nothing to do. The owner's view, without a lock. */
static inline bool xfer__pool_waiter_idle(const struct xfer__waiter *w) {
  return !w->waiting && w->state == XFER__WAIT_NONE;
}

/* A connection was opened with w's slots (which move into it); `reopen`:
 * because a reused one was dead. */
void xfer__pool_opened(xfer_pool *pool, struct xfer__waiter *w,
                       struct xfer__conn *c, bool reopen);

/* Hands an idle connection back (its socket no longer tracked by any
 * multi): to the oldest waiter of its destination, or into a lane, or onto
 * `evicted` (too old, over the idle limit, or closed for room). */
void xfer__pool_return(xfer_pool *pool, struct xfer__conn *c, xfer__time now,
                       struct xfer__list *evicted);
/* The same for one that served no request since it was taken (a grant
 * not taken, a start that could not go on): it keeps the time it went
 * idle, so the reuse checks (rule 6) see its true idle time. */
void xfer__pool_give_back(xfer_pool *pool, struct xfer__conn *c,
                          xfer__time now, struct xfer__list *evicted);

/* Why a connection closes, for the statistics. */
enum xfer__close_reason {
  XFER__CLOSE_EVICTED, /* the pool evicted it (counted then, by reason) */
  XFER__CLOSE_DEAD,    /* found dead by the check before a reuse */
  XFER__CLOSE_PEER,    /* the server closed it or said it would */
  XFER__CLOSE_ERROR    /* a transfer failed or was stopped on it */
};

/* Closes c (xfer__conn_close(c, ev): socket_done on ev, then close; c is
 * freed), then passes the slots it held to the oldest waiters that can
 * use them (which may close an idle connection for room onto `evicted`).
 * In that order: its destination slot counts until the socket is closed.
 * No pool lock may be held. */
void xfer__pool_close(xfer_pool *pool, struct xfer__conn *c,
                      enum xfer__close_reason why, struct xfer__mev *ev,
                      struct xfer__list *evicted);

/*
 * A multi's share of the pool's statistics: the counts that its attached
 * fast path makes on every request. Only that multi's thread writes them,
 * with a relaxed load and store: no locked instruction, and no cache line
 * that the threads of other multis write too (a pool-wide atomic counter
 * costs both on every request). xfer_pool_get_stats() adds them up.
 *
 * Protected by: `node` by pool->tally_lock; the counts by nothing (one
 * writer, read relaxed).
 */
struct xfer__pool_tally {
  atomic_long attached; /* its connections attached now */
  atomic_long reused;   /* attached connections it took back for reuse */
  struct xfer__list node;
};

/*
 * The attached fast path (brief rule 4). A multi that just finished with
 * c (its socket still tracked there) keeps it attached: it counts as idle,
 * and a waiter of another thread that finds no shared idle connection
 * asks for it (c->release_requested, then the owner's wake-up) instead of
 * opening one. false: not kept (attaching is off, c is too old, or
 * someone waits for the destination or for room): return it the usual
 * way.
 */
bool xfer__pool_keep_attached(xfer_pool *pool, struct xfer__conn *c,
                              struct xfer__wake *owner,
                              struct xfer__pool_tally *tally, xfer__time now);

enum xfer__take {
  XFER__TAKE_REUSE, /* the owner's next transfer uses it */
  XFER__TAKE_CLOSE  /* it closes: the peer closed it while attached, or the
                       owner could not keep watching it; the caller calls
                       xfer__pool_close() next, which serves a waiter
                       that asked for it */
};
/* The owner takes c off its destination's attached list. false (for
 * XFER__TAKE_REUSE only): a waiter has asked for it; release it. */
bool xfer__pool_take_attached(xfer_pool *pool, struct xfer__conn *c,
                              struct xfer__pool_tally *tally,
                              enum xfer__take why);
/* The owner releases c to the shared side (its socket no longer tracked
 * by the owner), as xfer__pool_return() does. `on_demand`: a waiter asked
 * for it. */
void xfer__pool_release_attached(xfer_pool *pool, struct xfer__conn *c,
                                 struct xfer__pool_tally *tally,
                                 bool on_demand, xfer__time now,
                                 struct xfer__list *evicted);
/* Is c past the pool's maximum lifetime at `now`? */
bool xfer__pool_too_old(const xfer_pool *pool, const struct xfer__conn *c,
                        xfer__time now);
/* The hold time of attached connections; 0: attaching is off. */
xfer__time xfer__pool_attach_hold(const xfer_pool *pool);
/* Counts a request retried on a fresh connection. */
void xfer__pool_count_retry(xfer_pool *pool);

/* A multi attaches to the pool for its life, with its tally; the pool
 * cannot be destroyed while multis are attached. Detaching folds the
 * tally's counts into the pool's. */
void xfer__pool_attach(xfer_pool *pool, struct xfer__pool_tally *tally);
void xfer__pool_detach(xfer_pool *pool, struct xfer__pool_tally *tally);

bool xfer__pool_valid(const xfer_pool *pool);
/* Does the pool limit connections (so transfers may have to wait)? */
bool xfer__pool_limited(const xfer_pool *pool);

/*
 * Test hooks: points inside the pool's race windows and its sweep, where a
 * test may hold one thread while another runs (tests/test_pool.c,
 * tests/test_pool_threads.c, tests/fuzz/fuzz_pool.c). NULL (always, in
 * programs that are not tests) costs one predicted branch. Set it only
 * while no other thread uses any pool. The hook may run with a pool lock
 * held (said at each point): it must not call back into that pool except
 * where a point says so.
 */
enum xfer__pool_hook_point {
  /* A transfer raised its destination's waiter count (or the room
   * count), under the bundle lock, and is about to look at the lanes
   * once more before it queues. arg: the waiter. */
  XFER__HOOK_WAITER_ANNOUNCED,
  /* A returner read the waiter and room counts under its lane's lock,
   * and has unlocked it. arg: what it did (const enum xfer__lane_keep *,
   * pool_impl.h: linked, or why not). The lane's lock is not held; the
   * bundle's may be (a release of an attached connection, a give-back
   * that found no waiter hold it around the lanes), so the hook must not
   * call into the pool. */
  XFER__HOOK_RETURNER_CHECKED,
  /* The sweep marked a bundle dead and unlocked it; it deletes it from
   * the table next. arg: the bundle's key (NUL-terminated). No lock held
   * (an RCU read-side section): the hook may acquire from the pool. */
  XFER__HOOK_SWEEP_MARKED_DEAD,
  /* An acquirer met a dead bundle (and helps delete it). arg: the key. */
  XFER__HOOK_DEAD_BUNDLE_MET
};
typedef void (*xfer__pool_hook_fn)(enum xfer__pool_hook_point point,
                                   const void *arg);
extern xfer__pool_hook_fn xfer__pool_hook;

#endif /* XFER_POOL_H */
