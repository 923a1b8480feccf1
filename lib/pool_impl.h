/*
 * What the pool's files share (pool.h lists them): the pool and bundle
 * structures, the locks and their order, and the helpers every part uses.
 * Not included outside the pool's files (and its tests).
 *
 * Locks, and what each guards (docs/internals/pool.md):
 *
 *   bundle->lock      its FIFO of waiters, its room list's membership
 *                     counts' writes, conns (destination slots), the
 *                     attached lists, requested, dead
 *   pool->total_lock  the room FIFO (pool-wide) and every bundle's room
 *                     list, every lowering of pool->total, and moves of a
 *                     waiter into or out of the room FIFO
 *   lane->lock        one lane's idle list
 *   pool->index_lock  the index of bundles with idle connections in lanes
 *                     (kept only with a total or idle limit)
 *   pool->tally_lock  the list of the attached multis' tallies (pool.h)
 *
 * Order: a bundle's lock, then total_lock or one lane's lock (never both
 * of those at once); index_lock is a leaf, taken under any of them or
 * alone, and takes none; tally_lock is taken alone. Every hold is a few
 * pointer moves: no clock read, system call, allocation or callback
 * (rule 3; debug builds assert the first and count the list nodes a hold
 * visits). The one walk is a statistics read's under tally_lock, one node
 * a multi, which no request waits for: a multi's creation and destruction
 * are the only other holders.
 */
#ifndef XFER_POOL_IMPL_H
#define XFER_POOL_IMPL_H

#include "common.h"

#ifndef XFER_SANITIZE
/* Inline RCU read-side fast paths. Sanitizer builds call into
 * liburcu-bp.so instead: TSan so that its suppressions can name the
 * library (notes/tsan-liburcu.md), UBSan because liburcu 0.13's inline
 * reader touches its 128-byte aligned reader struct at addresses its own
 * allocator does not align (a report in third-party code). */
#define _LGPL_SOURCE
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <urcu-bp.h>
#include <urcu/rculfhash.h>

#include "pool.h"

#ifdef XFER_TSAN
#include <sanitizer/tsan_interface.h>
/* RCU's publish and grace-period guarantees, told to TSan (see
 * notes/tsan-liburcu.md). */
#define TSAN_PUBLISH(node) __tsan_release(node)
/* (Its argument is an address to TSan, never written: const may go.) */
#define TSAN_READ_BEGIN(node) __tsan_acquire((void *)(node))
#define TSAN_READ_END(rcu) __tsan_release(rcu)
#define TSAN_BEFORE_FREE(rcu) __tsan_acquire(rcu)
#else
#define TSAN_PUBLISH(node) ((void)0)
#define TSAN_READ_BEGIN(node) ((void)0)
#define TSAN_READ_END(rcu) ((void)0)
#define TSAN_BEFORE_FREE(rcu) ((void)0)
#endif

#define XFER__MAGIC_POOL 0x706f6f6cu /* "pool" */

/*
 * The pool's locks: a word and the kernel's futex, a mutex cut to what a
 * lock that guards a few pointer moves (rule 3) needs. A free one costs
 * one atomic instruction to take and one to release, where glibc's mutex
 * spent about 60 instructions on the pair, and the attached fast path
 * takes a bundle lock twice a request. A thread that finds one held spins
 * a short while (its holder is most likely running), then sleeps in the
 * kernel until the holder wakes it, as a mutex does: a preempted holder
 * gets the CPU, whatever the threads' priorities. Zero is unlocked.
 */
typedef struct {
  atomic_int state; /* 0 free; 1 held; 2 held, and a thread may sleep on it */
} xfer__lock;

static inline void xfer__lock_init(xfer__lock *l) { atomic_init(&l->state, 0); }

/* Wakes one thread that sleeps on l (pool.c). */
void xfer__lock_wake(xfer__lock *l);

/* Lanes a bundle's idle connections are spread over: one per CPU, up to
 * this many (CPUs beyond share lanes, modulo). */
#define XFER__POOL_LANES_MAX 16
#define XFER__CACHE_LINE 64

/* The most list nodes (or lanes) one lock hold may visit; debug builds
 * assert it (rule 3: a few pointer moves, not a walk). */
#define XFER__POOL_VISITS_MAX 64

/* A destination's idle connections on the shared side, one lane per CPU
 * (pool_lanes.c). */
struct xfer__lane {
  xfer__lock lock;        /* guards idle */
  struct xfer__list idle; /* xfer__conn.idle_node, oldest first */
  atomic_uint count;      /* idle's length: exact under the lock, a hint
                             without it */
};

/* Whole cache lines a lane, so two CPUs' lanes share none. */
#define XFER__LANE_LINES                                                      \
  ((sizeof(struct xfer__lane) + XFER__CACHE_LINE - 1) / XFER__CACHE_LINE)
union xfer__lane_slot {
  struct xfer__lane lane;
  char lines[XFER__LANE_LINES * XFER__CACHE_LINE];
};

/* One destination (a pool key): its slots, waiters, attached and idle
 * connections. */
struct xfer__bundle {
  struct cds_lfht_node node;
  struct rcu_head rcu;
  xfer__lock lock;      /* guards what follows, up to `dead` */
  unsigned conns;       /* destination slots held: connections open (or
                           closing) and waiters that will open one */
  struct xfer__list waiters; /* QUEUED xfer__waiter.node, oldest first */
  /* QUEUED waiters, and one being queued: written under `lock`, read by
   * returners under a lane lock (see pool_slots.c). */
  atomic_uint nwaiters;
  struct xfer__list room; /* ROOM waiters of this bundle, oldest first
                             (xfer__waiter.node; under total_lock) */
  /* ROOM waiters of this bundle, and one about to enter: raised under
   * `lock`, lowered under `lock` or total_lock, read by returners under a
   * lane lock. */
  atomic_uint nroom;
  struct xfer__list attached;  /* attached, not asked for: oldest first */
  struct xfer__list requested; /* attached, asked for by a waiter */
  unsigned nrequested;         /* requested's length */
  atomic_uint attached_count;  /* both lists, kept only with an idle
                                  limit: written under `lock` */
  bool dead; /* a sweep removes it from the table: look it up again */
  /* What the server of this destination does with idle connections,
   * learned (0: not known yet): it closes them after at most this long.
   * Relaxed atomic: a hint any thread may update. */
  _Atomic xfer__time idle_close;
  /* The lanes' counts summed, plus places reserved for a link under way
   * (raised before a link, lowered after an unlink): the idle limit and
   * the index read it. Kept only with an idle or total limit. */
  atomic_uint idle_count;
  struct xfer__list index_node; /* in pool->idle_index (index_lock) */
  bool indexed;                 /* index_lock */
  union xfer__lane_slot *lanes; /* nlanes of them, in this allocation */
  unsigned nlanes;
  struct xfer_pool *pool; /* for the call_rcu callback */
  uint64_t hash;
  size_t key_len;
  char key[]; /* NUL-terminated */
};

struct xfer_pool {
  uint32_t magic;
  struct cds_lfht *bundles;
  unsigned max_idle_per_destination; /* 0: no limit */
  unsigned max_per_destination;      /* 0: no limit */
  unsigned max_total;                /* 0: no limit */
  unsigned nlanes;                   /* idle lanes a bundle */
  bool count_idle;              /* keep bundle->idle_count and the index */
  xfer__time attach_hold;       /* 0: attaching is off */
  xfer__time attached_wait;     /* 0: never wait for another multi's */
  xfer__time recheck;           /* until a destination's idle close is
                                   learned */
  xfer__time idle_timeout;
  xfer__time max_lifetime;
  xfer__time sweep_every;
  _Atomic xfer__time next_sweep; /* CAS: one thread sweeps at a time */
  atomic_int multis;
  atomic_long rcu_pending; /* bundles handed to call_rcu, not freed yet */

  /* The total limit: total slots held (connections open and not closing,
   * waiters holding slots). Raised with an atomic outside any lock, then
   * checked; lowered only under total_lock, which also guards the room
   * FIFO, so a freed total slot always reaches a waiter. */
  atomic_long total;
  xfer__lock total_lock;
  struct xfer__list room; /* ROOM xfer__waiter.room_node, oldest first */
  /* ROOM waiters, and ones about to enter (announced): read by returners
   * under a lane lock, which then close their connection for room. */
  atomic_long total_waiting;

  /* The tallies of the attached multis (xfer__pool_tally.node): taken
   * when a multi comes or goes and by a statistics read, which visits one
   * node a multi; never on a request's way. */
  xfer__lock tally_lock;
  struct xfer__list tallies;

  xfer__lock index_lock;
  struct xfer__list idle_index; /* bundles with idle connections in lanes,
                                   by the time they got their first */

  /* Statistics: relaxed atomics. */
  atomic_long idle; /* in lanes (attached ones are counted apart) */
  atomic_long opened;
  atomic_long reused; /* shared ones; attached ones in the tallies (and
                         here once their multi is gone) */
  atomic_long closed;
  atomic_long reopened;
  atomic_long dead_on_checkout;
  atomic_long retries;
  atomic_long closed_idle_timeout;
  atomic_long closed_lifetime;
  atomic_long open;    /* opened and not closed yet */
  atomic_long closing; /* evicted, in a shutdown handle */
  atomic_long misses;
  atomic_long contention;
  atomic_long waiting; /* QUEUED and ROOM waiters */
  atomic_long waited;
  atomic_long attached; /* the tallies of multis gone: 0 unless one left
                           connections attached */
  atomic_long released_on_demand;
  atomic_long closed_peer;
  atomic_long closed_error;
  atomic_long closed_limit;
  atomic_long destinations; /* bundles in the table */
  atomic_long liveness_checks;
};

/* --- locks -------------------------------------------------------------- */

/* Nodes visited in the calling thread's current outermost lock hold
 * (pool.c). */
extern XFER__THREAD_LOCAL unsigned xfer__pool_visits;

#ifdef XFER_DEBUG
/* Debug builds, for the tests: the most nodes one hold of this thread
 * visited, and the pool locks it took (both reset by the tests). */
extern XFER__THREAD_LOCAL unsigned xfer__pool_visits_peak;
extern XFER__THREAD_LOCAL unsigned long xfer__pool_locks_taken;
#define XFER__POOL_DEBUG_LOCKED() (xfer__pool_locks_taken++)
#define XFER__POOL_DEBUG_VISITED()                                            \
  (xfer__pool_visits > xfer__pool_visits_peak                                 \
       ? (void)(xfer__pool_visits_peak = xfer__pool_visits)                   \
       : (void)0)
#else
#define XFER__POOL_DEBUG_LOCKED() ((void)0)
#define XFER__POOL_DEBUG_VISITED() ((void)0)
#endif

#ifdef XFER_LOCK_STATS
void xfer__lock_stats_taken(int depth);
void xfer__lock_stats_released(int depth);
#else
#define xfer__lock_stats_taken(depth) ((void)0)
#define xfer__lock_stats_released(depth) ((void)0)
#endif

/* A lock that was held when tried: counted, then waited for (pool.c). */
void xfer__pool_lock_contended(xfer_pool *pool, xfer__lock *l);

/* Every pool lock is taken here: contention is counted, and the depth
 * lets debug builds catch a clock read or a long walk under it. */
static inline void xfer__pool_lock(xfer_pool *pool, xfer__lock *l) {
  int free_ = 0;

  if (__builtin_expect(!atomic_compare_exchange_strong_explicit(
                           &l->state, &free_, 1, memory_order_acquire,
                           memory_order_relaxed),
                       0))
    xfer__pool_lock_contended(pool, l);
  xfer__lock_stats_taken(xfer__pool_lock_depth);
  XFER__POOL_DEBUG_LOCKED();
#ifdef XFER__POOL_LOCK_DEPTH_KEPT
  if (xfer__pool_lock_depth++ == 0)
    xfer__pool_visits = 0;
#endif
}

static inline void xfer__pool_unlock(xfer__lock *l) {
#ifdef XFER__POOL_LOCK_DEPTH_KEPT
  xfer__pool_lock_depth--;
#endif
  xfer__lock_stats_released(xfer__pool_lock_depth);
  if (__builtin_expect(atomic_exchange_explicit(&l->state, 0,
                                                memory_order_release) == 2,
                       0))
    xfer__lock_wake(l);
}

/* One list node (or lane) visited, counted when under a lock (debug
 * builds: only their assertion reads the count). */
#ifdef XFER_DEBUG
#define XFER__POOL_VISIT()                                                    \
  do {                                                                         \
    if (xfer__pool_lock_depth > 0) {                                           \
      xfer__pool_visits++;                                                     \
      XFER__POOL_DEBUG_VISITED();                                              \
      assert(xfer__pool_visits <= XFER__POOL_VISITS_MAX);                      \
    }                                                                          \
  } while (0)
#else
#define XFER__POOL_VISIT() ((void)0)
#endif

static inline void xfer__bundle_lock(xfer_pool *pool, struct xfer__bundle *b) {
  xfer__pool_lock(pool, &b->lock);
}

static inline void xfer__bundle_unlock(struct xfer__bundle *b) {
  xfer__pool_unlock(&b->lock);
}

#define XFER__POOL_HOOK(point, arg)                                           \
  do {                                                                         \
    if (__builtin_expect(xfer__pool_hook != NULL, 0))                          \
      xfer__pool_hook((point), (arg));                                         \
  } while (0)

#define XFER__POOL_COUNT(pool, field)                                         \
  atomic_fetch_add_explicit(&(pool)->field, 1, memory_order_relaxed)
#define XFER__POOL_UNCOUNT(pool, field)                                       \
  atomic_fetch_sub_explicit(&(pool)->field, 1, memory_order_relaxed)

/* --- pool.c: expiry and eviction ----------------------------------------- */

enum xfer__pool_expiry { XFER__FRESH, XFER__IDLE_TOO_LONG, XFER__TOO_OLD };

enum xfer__pool_expiry xfer__pool_expired(const xfer_pool *pool,
                                     const struct xfer__conn *c,
                                     xfer__time now);

/* c (idle, in no list and under no lock) goes to the caller's shutdown
 * handle, counted under `reason`: its total slot is freed at once (and
 * passed on), its destination slot when its close ends. */
void xfer__pool_evict(xfer_pool *pool, struct xfer__conn *c,
                      atomic_long *reason, struct xfer__list *evicted);

/* --- pool_slots.c: slots and waiting ---------------------------------------- */

/* A freed destination slot of b (NULL: none) and/or a freed total slot,
 * after every lock: each goes to the oldest waiter that can use it, and
 * what nobody can use is given back. A waiter that then waits for room
 * gets an idle connection closed for it (onto `evicted`) when there is
 * one. The one way any slot comes free. */
void xfer__slots_release(xfer_pool *pool, struct xfer__bundle *b, bool total,
                         struct xfer__list *evicted);

/* Under b's lock, the decision when no idle connection was taken: slots
 * (OPEN), or w queued for its destination (WAIT) or for room (ROOM_WAIT),
 * or a connection returned meanwhile (CONN, or REPLACE for fresh_only)
 * found on the way. The wake-ups to write after the lock (a waiter
 * granted on the way, the owner of an attached connection asked for) are
 * collected in *ws; *room is set when a waiter now waits for room (the
 * caller then calls xfer__room_make()). */
enum xfer__slots_decision {
  XFER__DECIDE_OPEN,
  XFER__DECIDE_NEED_ROOM, /* w holds b's destination slot; the pool is at
                             its total limit: xfer__room_take() after the
                             lock, or xfer__slots_room_wait_locked() */
  XFER__DECIDE_WAIT,
  XFER__DECIDE_ROOM_WAIT,
  XFER__DECIDE_CONN,
  XFER__DECIDE_REPLACE
};
enum xfer__slots_decision xfer__slots_decide_locked(
    xfer_pool *pool, struct xfer__bundle *b, struct xfer__waiter *w,
    struct xfer__conn **conn, struct xfer__wakeups *ws, bool *room);

/* Closes idle connections for the transfers that wait for room, while
 * both exist. No lock held. */
void xfer__room_make(xfer_pool *pool, struct xfer__list *evicted);

/* No lock held; w holds its destination slot (NEED_ROOM): closes an idle
 * connection of any destination and moves its total slot to w (true; w
 * then holds both), when one is idle and nobody waits for room already. */
bool xfer__room_take(xfer_pool *pool, struct xfer__waiter *w,
                     struct xfer__list *evicted);

/* Under b's lock, after NEED_ROOM and a failed xfer__room_take(): w
 * waits for room (ROOM_WAIT), unless a connection of b came back (CONN,
 * REPLACE) or a total slot came free (OPEN). */
enum xfer__slots_decision xfer__slots_room_wait_locked(
    xfer_pool *pool, struct xfer__bundle *b, struct xfer__waiter *w,
    struct xfer__conn **conn, struct xfer__wakeups *ws, bool *room);

/* Under b's lock: c (idle, holding both its slots) goes to b's oldest
 * waiter (true; the wake-up is collected, *room as above), or nobody of b
 * waits (false). */
bool xfer__slots_give_locked(xfer_pool *pool, struct xfer__bundle *b,
                             struct xfer__conn *c, struct xfer__wakeups *ws,
                             bool *room);

/* Under b's lock: a bounded waiter gives up waiting for attached
 * connections. Queued with a destination slot free, it leaves the queue
 * with that slot (OPEN with a total slot, or NEED_ROOM); otherwise it
 * keeps its place (WAIT), and no longer bounded unless still queued (a
 * waiter for room, or one granted, waits on no other multi's loop). */
enum xfer__slots_decision xfer__slots_leave_queue_locked(
    xfer_pool *pool, struct xfer__bundle *b, struct xfer__waiter *w,
    struct xfer__wakeups *ws);

/* Under b's lock: serves b's queued waiters with slots while a slot is
 * free and they outnumber the attached connections asked for (*room as
 * above). */
void xfer__slots_pump_locked(xfer_pool *pool, struct xfer__bundle *b,
                             struct xfer__wakeups *ws, bool *room);

/* The owner takes what w was granted: both slots (OPEN), a connection
 * (CONN, not checked or counted yet) or one to replace (REPLACE); WAIT
 * when nothing yet. No lock. */
enum xfer__acquire xfer__slots_take_grant(xfer_pool *pool,
                                          struct xfer__waiter *w,
                                          struct xfer__conn **conn);

/* Does a transfer wait (or is about to) for room under the total limit? */
static inline bool xfer__room_wanted(const xfer_pool *pool) {
  return pool->max_total &&
         atomic_load_explicit(&pool->total_waiting, memory_order_relaxed) > 0;
}

/* Does a transfer of b wait (or is about to)? Read under a lane lock. */
static inline bool xfer__bundle_wanted(const struct xfer__bundle *b) {
  return atomic_load_explicit(&b->nwaiters, memory_order_relaxed) > 0 ||
         atomic_load_explicit(&b->nroom, memory_order_relaxed) > 0;
}

/* --- pool_lanes.c: idle lanes ------------------------------------------------ */

void xfer__lanes_init(struct xfer__bundle *b, unsigned nlanes);

/* The lane of the CPU this thread runs on (taken before any lock). */
unsigned xfer__lanes_home(const xfer_pool *pool);

enum xfer__lane_keep {
  XFER__LANE_LINKED, /* c is idle in the lane */
  XFER__LANE_FULL,   /* b is at its idle limit */
  XFER__LANE_WAITER, /* a transfer of b waits (check_waiters only) */
  XFER__LANE_ROOM    /* a transfer waits for room under the total limit */
};
/* c joins lane `home` of b unless one of the others applies (read under
 * the lane's lock). check_waiters: the caller holds no bundle lock. */
enum xfer__lane_keep xfer__lanes_keep(xfer_pool *pool, struct xfer__bundle *b,
                                      unsigned home, struct xfer__conn *c,
                                      bool check_waiters);

/* An idle connection of b, unlinked: the newest of lane `home`, else of
 * the next lane that has one; NULL when none. hint: lanes whose count
 * reads 0 are passed without their lock (a checkout); without it every
 * lane is looked at under its lock (a transfer about to queue). */
struct xfer__conn *xfer__lanes_take(xfer_pool *pool, struct xfer__bundle *b,
                                    unsigned home, bool hint);

/* An idle connection of any destination but `except` (NULL: any),
 * unlinked, to close for room; NULL when none was found. Bounded: at
 * most XFER__POOL_VISITS_MAX destinations are looked at. */
struct xfer__conn *xfer__lanes_take_any(xfer_pool *pool,
                                        const struct xfer__bundle *except);

/* The idle sweep of b's lanes at `now`: expired connections are unlinked
 * onto `doomed` (at most XFER__POOL_VISITS_MAX visited a hold; a lane is
 * walked from its oldest up to the first that has not been idle too
 * long). Returns how many. */
unsigned xfer__lanes_sweep(xfer_pool *pool, struct xfer__bundle *b,
                           xfer__time now, struct xfer__list *doomed);

/* b is dead: out of the index. */
void xfer__lanes_unindex(xfer_pool *pool, struct xfer__bundle *b);

/* Every idle connection of b, unlinked onto `out` (pool destroy). */
void xfer__lanes_drain(struct xfer__bundle *b, struct xfer__list *out);

/* --- pool_table.c -------------------------------------------------------------- */

/* The idle sweep, when this `now` passes its time (one thread at a time). */
void xfer__pool_sweep(xfer_pool *pool, xfer__time now,
                      struct xfer__list *evicted);

/* --- pool_attached.c ------------------------------------------------------- */

/* Under b's lock: an attached connection of b a waiter may ask for
 * (NULL: none); xfer__attached_ask_locked() records the request and adds
 * its owner's wake-up to ws (written after the lock). */
struct xfer__conn *xfer__attached_askable_locked(struct xfer__bundle *b);
void xfer__attached_ask_locked(struct xfer__bundle *b, struct xfer__conn *c,
                               struct xfer__wakeups *ws);

#endif /* XFER_POOL_IMPL_H */
