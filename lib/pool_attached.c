/*
 * The pool's side of attached connections (brief rule 4; the multi's side
 * is lib/attached.c): a connection kept by the multi that last used it,
 * still watched by that multi's event loop, counted as idle, and handed to
 * another thread's waiter on request.
 *
 * Protected by:
 *   bundle->attached, requested, nrequested   bundle->lock
 *   bundle->attached_count                    kept only with an idle limit
 *                                             (the one reader): written
 *                                             under bundle->lock, read by
 *                                             the lanes without it
 *   the owner's tally (pool.h)                the owner's thread alone
 *   conn->owner_wake      set before the connection joins a list; read by
 *                         waiters under bundle->lock
 *   conn->release_requested   set by a waiter under bundle->lock; read by
 *                         the owner without it
 */
#include "pool_impl.h"

/* A count of the owner's tally: one writer, so no locked instruction. */
static void tally_add(atomic_long *count, long delta) {
  atomic_store_explicit(
      count, atomic_load_explicit(count, memory_order_relaxed) + delta,
      memory_order_relaxed);
}

bool xfer__pool_keep_attached(xfer_pool *pool, struct xfer__conn *c,
                              struct xfer__wake *owner,
                              struct xfer__pool_tally *tally, xfer__time now) {
  struct xfer__bundle *b = c->bundle;
  bool kept = false;

  if (!b || !pool->attach_hold || xfer__pool_too_old(pool, c, now))
    return false;
  c->last_used = now;
  c->owner_wake = owner;
  atomic_store_explicit(&c->release_requested, false, memory_order_relaxed);
  xfer__bundle_lock(pool, b);
  /* Someone waits for this destination, or for room: it goes to them
   * instead. Attached ones count against the idle limit like the shared
   * ones. */
  if (xfer__list_empty(&b->waiters) &&
      !atomic_load_explicit(&b->nroom, memory_order_relaxed) &&
      !xfer__room_wanted(pool)) {
    /* Raise, then check (two statements: the operands of one
     * expression may be evaluated in either order), as the lanes'
     * idle_reserve() does. Without an idle limit nobody reads the count:
     * no locked instruction for it. */
    kept = true;
    if (pool->max_idle_per_destination) {
      unsigned attached = atomic_fetch_add(&b->attached_count, 1);

      kept = attached + atomic_load(&b->idle_count) <
             pool->max_idle_per_destination;
      if (!kept)
        atomic_fetch_sub_explicit(&b->attached_count, 1,
                                  memory_order_relaxed);
    }
    if (kept)
      xfer__list_insert_tail(&b->attached, &c->idle_node);
  }
  xfer__bundle_unlock(b);
  if (kept)
    tally_add(&tally->attached, 1);
  return kept;
}

/* Under b's lock: c leaves b's attached lists. */
static void unlink_locked(xfer_pool *pool, struct xfer__bundle *b,
                          struct xfer__conn *c) {
  xfer__list_remove(&c->idle_node);
  if (pool->max_idle_per_destination)
    atomic_fetch_sub_explicit(&b->attached_count, 1, memory_order_relaxed);
  if (atomic_load_explicit(&c->release_requested, memory_order_relaxed))
    b->nrequested--;
}

bool xfer__pool_take_attached(xfer_pool *pool, struct xfer__conn *c,
                              struct xfer__pool_tally *tally,
                              enum xfer__take why) {
  struct xfer__bundle *b = c->bundle;
  bool promised;

  xfer__bundle_lock(pool, b);
  /* Checked under the lock, where waiters ask: a connection promised to
   * a waiter is not taken back for reuse, or the waiter could wait as
   * long as the owner's transfer lasts. (Closing it instead frees its
   * slots for that waiter.) */
  promised = why == XFER__TAKE_REUSE &&
             atomic_load_explicit(&c->release_requested, memory_order_relaxed);
  if (!promised)
    unlink_locked(pool, b, c);
  xfer__bundle_unlock(b);
  if (promised)
    return false;
  tally_add(&tally->attached, -1);
  if (why == XFER__TAKE_REUSE)
    tally_add(&tally->reused, 1);
  return true;
}

/* Under b's lock: a release asked for ended without a hand-over; while
 * more waiters are queued than releases are asked for, one more attached
 * connection nobody asked for is asked for, its owner woken. */
static void ask_again_locked(struct xfer__bundle *b, struct xfer__wakeups *ws) {
  struct xfer__conn *next;

  if (atomic_load_explicit(&b->nwaiters, memory_order_relaxed) <=
          b->nrequested ||
      !(next = xfer__attached_askable_locked(b)))
    return;
  xfer__attached_ask_locked(b, next, ws);
}

void xfer__pool_release_attached(xfer_pool *pool, struct xfer__conn *c,
                                 struct xfer__pool_tally *tally,
                                 bool on_demand, xfer__time now,
                                 struct xfer__list *evicted) {
  struct xfer__bundle *b = c->bundle;
  bool too_old = xfer__pool_too_old(pool, c, now);
  enum xfer__lane_keep kept = XFER__LANE_FULL;
  unsigned home = xfer__lanes_home(pool);
  struct xfer__wakeups ws;
  bool given = false, room = false, asked;

  xfer__pool_sweep(pool, now, evicted);
  xfer__wakeups_init(&ws);
  /* Off the attached list and onto the shared side in one hold of the
   * lock: no moment in which a waiter would find neither and open a
   * connection it does not need (sharing must not cost connections). */
  xfer__bundle_lock(pool, b);
  asked = atomic_load_explicit(&c->release_requested, memory_order_relaxed);
  unlink_locked(pool, b, c);
  /* Before it is published: once given or idle, another thread may take
   * it, and even close and free it. */
  atomic_store_explicit(&c->release_requested, false, memory_order_relaxed);
  if (!too_old) { /* (idle since it was attached: last_used stays) */
    given = xfer__slots_give_locked(pool, b, c, &ws, &room);
    if (!given)
      kept = xfer__lanes_keep(pool, b, home, c, false);
  }
  /* A waiter that asked for it and now gets nothing (too old) takes a
   * slot, if one is free; if none is, it asks for another attached one,
   * as it would have at its checkout (the slot stays with this one while
   * it closes, and the waiter would wait for the next hold's end). */
  xfer__slots_pump_locked(pool, b, &ws, &room);
  if (asked && !given)
    ask_again_locked(b, &ws);
  xfer__bundle_unlock(b);
  tally_add(&tally->attached, -1);
  if (on_demand)
    XFER__POOL_COUNT(pool, released_on_demand);
  xfer__wakeups_flush(&ws);
  if (room)
    xfer__room_make(pool, evicted);
  if (too_old)
    xfer__pool_evict(pool, c, &pool->closed_lifetime, evicted);
  else if (!given && kept != XFER__LANE_LINKED)
    xfer__pool_evict(pool, c, &pool->closed_limit, evicted);
}

struct xfer__conn *xfer__attached_askable_locked(struct xfer__bundle *b) {
  if (xfer__list_empty(&b->attached))
    return NULL;
  XFER__POOL_VISIT();
  return XFER__CONTAINER_OF(b->attached.next, struct xfer__conn, idle_node);
}

void xfer__attached_ask_locked(struct xfer__bundle *b, struct xfer__conn *c,
                               struct xfer__wakeups *ws) {
  /* Asked-for ones live apart, so the next waiter finds an unasked one
   * at the head of `attached` without a walk. */
  xfer__list_remove(&c->idle_node);
  xfer__list_insert_tail(&b->requested, &c->idle_node);
  b->nrequested++;
  atomic_store_explicit(&c->release_requested, true, memory_order_relaxed);
  xfer__wakeups_add(ws, c->owner_wake);
}
