/*
 * Idle connections on the shared side, in lanes (see pool_impl.h and
 * docs/internals/pool.md, "Idle lanes").
 *
 * One idle list under one lock per destination makes threads that check
 * connections of one destination in and out at the same moment collide on
 * that lock (docs/internals/performance.md has the figures). So a bundle
 * spreads its idle connections over lanes, one per CPU, each with its own
 * lock and list on cache lines of its own. A thread returns a connection
 * to the lane of the CPU it runs on and takes one from there first, so
 * threads that run at the same moment (on different CPUs) take different
 * locks.
 *
 * Protected by:
 *   lane->idle                     lane->lock
 *   lane->count                    written under lane->lock; read as a
 *                                  hint without it
 *   bundle->idle_count             atomic (kept with an idle or total
 *                                  limit only): raised before a link,
 *                                  lowered after an unlink
 *   pool->idle_index, bundle->indexed, bundle->index_node
 *                                  pool->index_lock (a leaf lock)
 *
 * Counters every CPU writes (idle_count, the pool's statistics) change
 * outside the lane locks: an atomic on a cache line another CPU holds is a
 * cache miss, which inside the lock doubled the hold time p99.
 */
#define _GNU_SOURCE /* sched_getcpu */
#include "pool_impl.h"

#include <sched.h>

void xfer__lanes_init(struct xfer__bundle *b, unsigned nlanes) {
  b->nlanes = nlanes;
  for (unsigned i = 0; i < nlanes; i++) {
    xfer__lock_init(&b->lanes[i].lane.lock);
    xfer__list_init(&b->lanes[i].lane.idle);
  }
  xfer__list_init(&b->index_node);
}

/* sched_getcpu() reads the kernel's rseq area on x86_64 (glibc 2.35 and
 * later), or asks the vDSO; on a platform where it is a system call it
 * would still run outside every lock: callers take it before they lock. */
unsigned xfer__lanes_home(const xfer_pool *pool) {
  int cpu = sched_getcpu();

  return cpu > 0 ? (unsigned)cpu % pool->nlanes : 0;
}

static struct xfer__lane *lane_at(struct xfer__bundle *b, unsigned i) {
  return &b->lanes[i].lane;
}

static void lane_count(struct xfer__lane *l, int delta) {
  atomic_store_explicit(
      &l->count,
      atomic_load_explicit(&l->count, memory_order_relaxed) + (unsigned)delta,
      memory_order_relaxed);
}

/* Under l's lock. */
static void lane_link(struct xfer__lane *l, struct xfer__conn *c) {
  xfer__list_insert_tail(&l->idle, &c->idle_node);
  lane_count(l, 1);
}

/* Under l's lock: its newest connection (or its oldest), unlinked; NULL
 * when it is empty. */
static struct xfer__conn *lane_unlink(struct xfer__lane *l, bool oldest) {
  struct xfer__conn *c;

  if (xfer__list_empty(&l->idle))
    return NULL;
  XFER__POOL_VISIT();
  c = XFER__CONTAINER_OF(oldest ? l->idle.next : l->idle.prev,
                         struct xfer__conn, idle_node);
  xfer__list_remove(&c->idle_node);
  lane_count(l, -1);
  return c;
}

/* --- the index of destinations with idle connections ---------------------- */

/*
 * With a total limit, a transfer waiting for room closes an idle
 * connection of any destination. Finding one by walking the table visited
 * every lane of every destination (100,000 destinations: 1.6 million
 * lanes per acquire). So the pool keeps an index of the bundles that have
 * idle connections, in the order they got their first, updated when a
 * bundle's idle_count passes between 0 and not 0. Each update takes
 * index_lock after the count changed and sets the membership from the
 * count read there, so the last update to take the lock always sees the
 * final count, whatever order the changes came in.
 */
static void index_update(xfer_pool *pool, struct xfer__bundle *b) {
  bool want;

  if (!pool->max_total)
    return;
  xfer__pool_lock(pool, &pool->index_lock);
  want = atomic_load(&b->idle_count) > 0;
  if (want && !b->indexed)
    xfer__list_insert_tail(&pool->idle_index, &b->index_node);
  else if (!want && b->indexed)
    xfer__list_remove(&b->index_node);
  b->indexed = want;
  xfer__pool_unlock(&pool->index_lock);
}

/* A dead bundle has no connection left, so its count stays 0: once out,
 * it never comes back. */
void xfer__lanes_unindex(xfer_pool *pool, struct xfer__bundle *b) {
  index_update(pool, b);
}

/* --- the idle count ---------------------------------------------------------- */

/* A place under b's idle limit (attached ones count as idle), taken
 * before a connection is linked. Each side raises its own count first and
 * checks the sum after (sequentially consistent), here and for attached
 * ones in xfer__pool_keep_attached(), so of two racing for the last place
 * at least one sees the other: the limit is never exceeded (both may
 * yield). Without an idle or total limit (the default) idle_count is not
 * kept at all: no shared counter on the way in or out. */
static bool idle_reserve(xfer_pool *pool, struct xfer__bundle *b) {
  unsigned idle;

  if (!pool->count_idle)
    return true;
  idle = atomic_fetch_add(&b->idle_count, 1);
  if (pool->max_idle_per_destination &&
      idle + atomic_load(&b->attached_count) >=
          pool->max_idle_per_destination) {
    atomic_fetch_sub_explicit(&b->idle_count, 1, memory_order_relaxed);
    /* A step from 0 another thread may have counted on (its own step
     * then was not from 0, and it did not update the index). */
    if (idle == 0)
      index_update(pool, b);
    return false;
  }
  if (idle == 0)
    index_update(pool, b);
  return true;
}

/* n connections of b left its lanes (or places reserved went unused). */
static void idle_gone(xfer_pool *pool, struct xfer__bundle *b, unsigned n) {
  if (pool->count_idle && n &&
      atomic_fetch_sub_explicit(&b->idle_count, n, memory_order_relaxed) == n)
    index_update(pool, b);
}

/* --- keep and take ------------------------------------------------------------- */

enum xfer__lane_keep xfer__lanes_keep(xfer_pool *pool, struct xfer__bundle *b,
                                      unsigned home, struct xfer__conn *c,
                                      bool check_waiters) {
  struct xfer__lane *l = lane_at(b, home);
  enum xfer__lane_keep out = XFER__LANE_LINKED;

  if (!idle_reserve(pool, b))
    return XFER__LANE_FULL;
  /* Counted before it is published, so a taker's decrement never comes
   * first (the statistic never reads below zero). */
  XFER__POOL_COUNT(pool, idle);
  xfer__pool_lock(pool, &l->lock);
  /* The returner's half of the rule in pool_slots.c: read under the
   * lane's lock, where a transfer about to queue looks. */
  if (check_waiters && xfer__bundle_wanted(b))
    out = XFER__LANE_WAITER;
  else if (xfer__room_wanted(pool))
    out = XFER__LANE_ROOM;
  else
    lane_link(l, c);
  xfer__pool_unlock(&l->lock);
  XFER__POOL_HOOK(XFER__HOOK_RETURNER_CHECKED, &out);
  if (out != XFER__LANE_LINKED) {
    XFER__POOL_UNCOUNT(pool, idle);
    idle_gone(pool, b, 1);
  }
  return out;
}

/* Takes one from lane i; with `hint`, an empty-looking lane is passed
 * without its lock. */
static struct xfer__conn *lane_take(xfer_pool *pool, struct xfer__bundle *b,
                                    unsigned i, bool hint, bool oldest) {
  struct xfer__lane *l = lane_at(b, i);
  struct xfer__conn *c;

  XFER__POOL_VISIT();
  if (hint && !atomic_load_explicit(&l->count, memory_order_relaxed))
    return NULL;
  xfer__pool_lock(pool, &l->lock);
  c = lane_unlink(l, oldest);
  xfer__pool_unlock(&l->lock);
  if (c) {
    XFER__POOL_UNCOUNT(pool, idle);
    idle_gone(pool, b, 1);
  }
  return c;
}

struct xfer__conn *xfer__lanes_take(xfer_pool *pool, struct xfer__bundle *b,
                                    unsigned home, bool hint) {
  struct xfer__conn *c = NULL;

  for (unsigned i = 0; i < b->nlanes && !c; i++)
    c = lane_take(pool, b, (home + i) % b->nlanes, hint, false);
  return c;
}

struct xfer__conn *xfer__lanes_take_any(xfer_pool *pool,
                                        const struct xfer__bundle *except) {
  struct xfer__conn *c = NULL;

  if (!pool->max_total)
    return NULL;
  rcu_read_lock(); /* a bundle read from the index may be freed by RCU */
  for (int looked = 0; looked < XFER__POOL_VISITS_MAX && !c; looked++) {
    struct xfer__bundle *b = NULL;

    xfer__pool_lock(pool, &pool->index_lock);
    if (!xfer__list_empty(&pool->idle_index)) {
      XFER__POOL_VISIT();
      b = XFER__CONTAINER_OF(pool->idle_index.next, struct xfer__bundle,
                             index_node);
      /* `except` at the head: the next one, if any */
      if (b == except)
        b = b->index_node.next == &pool->idle_index
                ? NULL
                : XFER__CONTAINER_OF(b->index_node.next, struct xfer__bundle,
                                     index_node);
    }
    xfer__pool_unlock(&pool->index_lock);
    if (!b)
      break;
    TSAN_READ_BEGIN(b);
    /* Every lane under its lock, even one whose count reads 0: a
     * returner linking into it at this moment reads the room count
     * under the same lock, so one of the two sees the other. */
    for (unsigned i = 0; i < b->nlanes && !c; i++)
      c = lane_take(pool, b, i, false, true);
    if (!c) {
      /* Its connections are taken, or one is being linked (counted, not
       * in a lane yet: that returner sees the transfer waiting for room
       * under its lane's lock and closes it for room itself). Look at
       * the next destination meanwhile. */
      xfer__pool_lock(pool, &pool->index_lock);
      if (b->indexed) { /* to the tail, or out */
        xfer__list_remove(&b->index_node);
        if (atomic_load(&b->idle_count) > 0)
          xfer__list_insert_tail(&pool->idle_index, &b->index_node);
        else
          b->indexed = false;
      }
      xfer__pool_unlock(&pool->index_lock);
    }
    TSAN_READ_END(&b->rcu);
  }
  rcu_read_unlock();
  return c;
}

/* --- the sweep ------------------------------------------------------------------ */

unsigned xfer__lanes_sweep(xfer_pool *pool, struct xfer__bundle *b,
                           xfer__time now, struct xfer__list *doomed) {
  unsigned gone = 0;

  for (unsigned i = 0; i < b->nlanes; i++) {
    struct xfer__lane *l = lane_at(b, i);
    bool more = atomic_load_explicit(&l->count, memory_order_relaxed) > 0;

    /* A batch a hold: what one hold looked at is unlinked, so the next
     * hold starts at the first not looked at yet. */
    while (more) {
      unsigned looked = 0;

      more = false;
      xfer__pool_lock(pool, &l->lock);
      while (!xfer__list_empty(&l->idle)) {
        struct xfer__conn *c =
            XFER__CONTAINER_OF(l->idle.next, struct xfer__conn, idle_node);
        if (looked == XFER__POOL_VISITS_MAX) {
          more = true;
          break;
        }
        looked++;
        XFER__POOL_VISIT();
        /* Oldest first: the first that has not idled too long ends the
         * walk (one past its lifetime behind it is refused on checkout,
         * and goes when its idle time is up). */
        if (xfer__pool_expired(pool, c, now) == XFER__FRESH)
          break;
        xfer__list_remove(&c->idle_node);
        lane_count(l, -1);
        xfer__list_insert_tail(doomed, &c->idle_node);
        gone++;
      }
      xfer__pool_unlock(&l->lock);
    }
  }
  if (gone) {
    atomic_fetch_sub_explicit(&pool->idle, gone, memory_order_relaxed);
    idle_gone(pool, b, gone);
  }
  return gone;
}

void xfer__lanes_drain(struct xfer__bundle *b, struct xfer__list *out) {
  for (unsigned i = 0; i < b->nlanes; i++) {
    struct xfer__lane *l = lane_at(b, i);
    while (!xfer__list_empty(&l->idle)) {
      struct xfer__list *n = l->idle.next;
      xfer__list_remove(n);
      xfer__list_insert_tail(out, n);
    }
  }
}
