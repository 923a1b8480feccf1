/*
 * Slots and waiting (see pool.h, pool_impl.h, docs/internals/pool.md).
 *
 * A connection needs two slots to exist: one of its destination
 * (max_per_destination, counted in bundle->conns) and one of the pool
 * (max_total, counted in pool->total). Each slot is owned by exactly one
 * connection (open, idle, attached, busy; a closing one keeps only its
 * destination slot) or one waiter (which will open a connection with it).
 * Every freed slot passes through xfer__slots_release(), which hands it to
 * the oldest waiter that can use it.
 *
 * Waiters, and the lock that guards each list and state change:
 *
 *   QUEUED   bundle->waiters (bundle->lock): waits for a connection of
 *            its destination, or its destination slot; holds nothing
 *   ROOM     bundle->room and pool->room (total_lock): holds its
 *            destination slot, waits for a total slot (or a connection of
 *            its destination, which comes first)
 *   GRANTED  handed a connection, or both slots; the owner takes it
 *            without a lock (xfer__slots_take_grant())
 *
 * A move between QUEUED and ROOM holds both locks (bundle, then total), so
 * the owner, cancelling under both, always finds its waiter in one place.
 * ROOM waiters of a destination are always older than its QUEUED ones
 * (a QUEUED one exists only while the destination has no free slot, and
 * the oldest QUEUED one is the first to get a freed slot), so a returned
 * connection goes to the ROOM ones first: the oldest waiter of its
 * destination.
 *
 * Nothing stays idle while a transfer waits for it: a transfer raises its
 * destination's nwaiters (or nroom, and pool->total_waiting for room)
 * before it looks at the lanes under their locks one last time, and a
 * returner reads those counts under its lane's lock before it links
 * (pool_lanes.c), so of the two, the second to hold a lane's lock sees the
 * first.
 */
#include "pool_impl.h"

void xfer__waiter_init(struct xfer__waiter *w) {
  xfer__list_init(&w->node);
  xfer__list_init(&w->room_node);
  w->bundle = NULL;
  w->wake = NULL;
  w->granted_conn = NULL;
  w->state = XFER__WAIT_NONE;
  w->fresh_only = false;
  w->replace = false;
  w->waiting = false;
  atomic_init(&w->granted, false);
}

/* Under the lock of the list w just left: w gets c (or, with c NULL, both
 * slots). Nothing touches w after `granted` is set: its owner may take the
 * grant and reuse w at once. */
static void grant(xfer_pool *pool, struct xfer__waiter *w,
                  struct xfer__conn *c, struct xfer__wakeups *ws) {
  w->granted_conn = c;
  w->replace = c && w->fresh_only;
  w->state = XFER__WAIT_GRANTED;
  XFER__POOL_UNCOUNT(pool, waiting);
  xfer__wakeups_add(ws, w->wake);
  atomic_store_explicit(&w->granted, true, memory_order_release);
}

/* --- the total slot --------------------------------------------------------- */

/* Under total_lock: w leaves the room FIFOs. */
static void room_unlink_locked(xfer_pool *pool, struct xfer__waiter *w) {
  xfer__list_remove(&w->room_node);
  xfer__list_remove(&w->node);
  atomic_fetch_sub_explicit(&pool->total_waiting, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&w->bundle->nroom, 1, memory_order_relaxed);
}

/* Under total_lock: takes a total slot if one is free. Raise, then
 * check, as the lock-free reservation does (a look, then an add, would
 * let a reservation made between the two pass the limit). */
static bool total_take_locked(xfer_pool *pool) {
  if (atomic_fetch_add(&pool->total, 1) < (long)pool->max_total)
    return true;
  atomic_fetch_sub(&pool->total, 1);
  return false;
}

/* Under total_lock: when the count leaves room, the oldest waiter for
 * room takes it (it holds its destination slot already). */
static void total_grant_locked(xfer_pool *pool, struct xfer__wakeups *ws) {
  struct xfer__waiter *w;

  if (xfer__list_empty(&pool->room) || !total_take_locked(pool))
    return;
  XFER__POOL_VISIT();
  w = XFER__CONTAINER_OF(pool->room.next, struct xfer__waiter, room_node);
  room_unlink_locked(pool, w);
  grant(pool, w, NULL, ws);
}

/* Under total_lock: a total slot is given back, to the oldest waiter for
 * room if there is one. */
static void total_free_locked(xfer_pool *pool, struct xfer__wakeups *ws) {
  atomic_fetch_sub(&pool->total, 1);
  total_grant_locked(pool, ws);
}

static void total_lock(xfer_pool *pool) {
  xfer__pool_lock(pool, &pool->total_lock);
}

static void total_unlock(xfer_pool *pool) {
  xfer__pool_unlock(&pool->total_lock);
}

/* Raise, then check: no lock on the usual path. A failed reservation is
 * taken back at once. A release made meanwhile saw the count over the
 * limit because of it and granted nobody; so when the take-back leaves
 * room and someone waits for it, the slot is granted here, under
 * total_lock. (Sequentially consistent: a transfer that found the pool
 * full under total_lock before this take-back had announced itself in
 * total_waiting before that.) */
static bool total_reserve(xfer_pool *pool, struct xfer__wakeups *ws) {
  if (!pool->max_total ||
      atomic_fetch_add(&pool->total, 1) < (long)pool->max_total)
    return true;
  if (atomic_fetch_sub(&pool->total, 1) - 1 < (long)pool->max_total &&
      atomic_load(&pool->total_waiting) > 0) {
    total_lock(pool);
    total_grant_locked(pool, ws);
    total_unlock(pool);
  }
  return false;
}

/* Under b's lock (and total_lock): w, holding b's destination slot,
 * joins the room FIFOs. */
static void room_link_locked(xfer_pool *pool, struct xfer__bundle *b,
                             struct xfer__waiter *w) {
  assert(w->bundle == b); /* set by its owner: not written here, where
                             the owner may read it without a lock */
  w->state = XFER__WAIT_ROOM;
  xfer__list_insert_tail(&b->room, &w->node);
  xfer__list_insert_tail(&pool->room, &w->room_node);
}

/* --- the destination slot --------------------------------------------------- */

static bool dest_slot_free(const xfer_pool *pool, const struct xfer__bundle *b) {
  return !pool->max_per_destination || b->conns < pool->max_per_destination;
}

/*
 * Under b's lock: serves the head of b's FIFO while it can be served with
 * slots. The first `nrequested` queued waiters are covered by releases of
 * attached connections asked for (each release goes to the oldest), so
 * only waiters beyond them need a slot, and only while b has one free.
 * The head takes it (releases and slots alike go to the oldest), with a
 * total slot when one is free; else it waits for room (*room set: the
 * caller makes room after the locks). Called wherever a destination slot
 * comes free, a request goes, or a waiter queues.
 */
void xfer__slots_pump_locked(xfer_pool *pool, struct xfer__bundle *b,
                             struct xfer__wakeups *ws, bool *room) {
  while (!xfer__list_empty(&b->waiters) &&
         atomic_load_explicit(&b->nwaiters, memory_order_relaxed) >
             b->nrequested &&
         dest_slot_free(pool, b)) {
    struct xfer__waiter *w =
        XFER__CONTAINER_OF(b->waiters.next, struct xfer__waiter, node);

    XFER__POOL_VISIT();
    xfer__list_remove(&w->node);
    b->conns++;
    if (total_reserve(pool, ws)) {
      atomic_fetch_sub_explicit(&b->nwaiters, 1, memory_order_relaxed);
      grant(pool, w, NULL, ws);
      continue;
    }
    /* Counted as wanting room before it stops counting as queued, so a
     * returner of b reading both always sees it. */
    atomic_fetch_add_explicit(&b->nroom, 1, memory_order_relaxed);
    /* Sequentially consistent, as the lock-free reservation's take-back
     * reads it (total_reserve()). */
    atomic_fetch_add(&pool->total_waiting, 1);
    atomic_fetch_sub_explicit(&b->nwaiters, 1, memory_order_relaxed);
    total_lock(pool);
    if (total_take_locked(pool)) {
      atomic_fetch_sub_explicit(&b->nroom, 1, memory_order_relaxed);
      atomic_fetch_sub_explicit(&pool->total_waiting, 1, memory_order_relaxed);
      grant(pool, w, NULL, ws);
    } else {
      room_link_locked(pool, b, w);
      *room = true;
    }
    total_unlock(pool);
  }
}

/* Under b's lock: one of b's destination slots is free. */
static void dest_free_locked(xfer_pool *pool, struct xfer__bundle *b,
                             struct xfer__wakeups *ws, bool *room) {
  b->conns--;
  xfer__slots_pump_locked(pool, b, ws, room);
}

void xfer__slots_release(xfer_pool *pool, struct xfer__bundle *b, bool total,
                         struct xfer__list *evicted) {
  struct xfer__wakeups ws;
  bool room = false;

  XFER__ASSERT_NO_POOL_LOCK();
  xfer__wakeups_init(&ws);
  /* The total slot first: it belongs to the oldest waiter for room,
   * whichever its destination, before b's own queue may claim it. */
  if (total && pool->max_total) {
    total_lock(pool);
    total_free_locked(pool, &ws);
    total_unlock(pool);
  }
  if (b) {
    xfer__bundle_lock(pool, b);
    dest_free_locked(pool, b, &ws, &room);
    xfer__bundle_unlock(b);
  }
  xfer__wakeups_flush(&ws);
  if (room)
    xfer__room_make(pool, evicted);
}

bool xfer__room_take(xfer_pool *pool, struct xfer__waiter *w,
                     struct xfer__list *evicted) {
  struct xfer__conn *c;

  /* Not ahead of transfers that wait for room already (there is none
   * idle for them anyway, unless it is being closed for them). */
  if (atomic_load(&pool->total_waiting) > 0 ||
      !(c = xfer__lanes_take_any(pool, w->bundle)))
    return false;
  c->holds_total = false; /* its total slot is w's now: no release */
  xfer__pool_evict(pool, c, &pool->closed_limit, evicted);
  w->state = XFER__WAIT_SLOTS;
  return true;
}

void xfer__room_make(xfer_pool *pool, struct xfer__list *evicted) {
  struct xfer__conn *c;

  XFER__ASSERT_NO_POOL_LOCK();
  /* Each close frees a total slot for the oldest waiter for room. */
  while (xfer__room_wanted(pool) && (c = xfer__lanes_take_any(pool, NULL)))
    xfer__pool_evict(pool, c, &pool->closed_limit, evicted);
}

/* --- deciding, queuing, handing over ------------------------------------------ */

/* Under b's lock: c (idle, taken from a lane) goes to w, which must have
 * a new connection: c's slots are w's now, c is closed by w's owner at
 * once. */
static void take_over(xfer_pool *pool, struct xfer__bundle *b,
                      struct xfer__waiter *w, struct xfer__conn *c) {
  assert(c->bundle == b && c->holds_total);
  c->bundle = NULL;
  c->holds_total = false;
  w->bundle = b;
  w->state = XFER__WAIT_SLOTS;
  XFER__POOL_COUNT(pool, closed);
  XFER__POOL_COUNT(pool, closed_limit);
  XFER__POOL_UNCOUNT(pool, open);
}

/* Under b's lock: w joins b's FIFO, unless a connection was linked into a
 * lane meanwhile (returned instead; w is not queued). See the comment at
 * the top for why nwaiters is raised before the look. */
static struct xfer__conn *queue(xfer_pool *pool, struct xfer__bundle *b,
                                struct xfer__waiter *w) {
  struct xfer__conn *c;

  atomic_fetch_add_explicit(&b->nwaiters, 1, memory_order_relaxed);
  XFER__POOL_HOOK(XFER__HOOK_WAITER_ANNOUNCED, w);
  if ((c = xfer__lanes_take(pool, b, 0, false))) {
    atomic_fetch_sub_explicit(&b->nwaiters, 1, memory_order_relaxed);
    return c;
  }
  w->bundle = b;
  w->state = XFER__WAIT_QUEUED;
  XFER__POOL_COUNT(pool, waiting);
  xfer__list_insert_tail(&b->waiters, &w->node);
  return NULL;
}

/* Under b's lock: w holds b's destination slot and the pool is at its
 * total limit. It waits for room, unless a connection of b was linked
 * into a lane meanwhile (CONN or REPLACE; w's destination slot goes back)
 * or a total slot came free (OPEN). See the comment at the top for why
 * it announces itself before its last look. */
enum xfer__slots_decision xfer__slots_room_wait_locked(
    xfer_pool *pool, struct xfer__bundle *b, struct xfer__waiter *w,
    struct xfer__conn **conn, struct xfer__wakeups *ws, bool *room) {
  struct xfer__conn *c;
  bool queued = false;

  atomic_fetch_add_explicit(&b->nroom, 1, memory_order_relaxed);
  atomic_fetch_add(&pool->total_waiting, 1);
  XFER__POOL_HOOK(XFER__HOOK_WAITER_ANNOUNCED, w);
  if ((c = xfer__lanes_take(pool, b, 0, false))) {
    atomic_fetch_sub_explicit(&b->nroom, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&pool->total_waiting, 1, memory_order_relaxed);
    dest_free_locked(pool, b, ws, room); /* c brings its own */
    *conn = c;
    if (!w->fresh_only)
      return XFER__DECIDE_CONN;
    take_over(pool, b, w, c);
    return XFER__DECIDE_REPLACE;
  }
  total_lock(pool);
  if (!total_take_locked(pool)) {
    XFER__POOL_COUNT(pool, waiting);
    room_link_locked(pool, b, w);
    queued = true;
  }
  total_unlock(pool);
  if (queued)
    return XFER__DECIDE_ROOM_WAIT;
  atomic_fetch_sub_explicit(&b->nroom, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&pool->total_waiting, 1, memory_order_relaxed);
  w->state = XFER__WAIT_SLOTS;
  return XFER__DECIDE_OPEN;
}

enum xfer__slots_decision xfer__slots_decide_locked(
    xfer_pool *pool, struct xfer__bundle *b, struct xfer__waiter *w,
    struct xfer__conn **conn, struct xfer__wakeups *ws, bool *room) {
  bool attached_ok = !w->fresh_only && w->wake && pool->attached_wait;
  struct xfer__conn *asked = attached_ok ? xfer__attached_askable_locked(b)
                                         : NULL, *c;

  /* First come, first served: with waiters of b queued (for a slot, or
   * for attached connections their owners were asked to release), a
   * newcomer queues behind them. Sharing must not cost a connection
   * (rule 4): one idle but attached to another multi is asked for
   * rather than a new one opened, and so is a release asked for earlier
   * whose waiter got another connection meanwhile. */
  if (xfer__list_empty(&b->waiters) && !asked && !(attached_ok &&
                                                   b->nrequested > 0) &&
      dest_slot_free(pool, b)) {
    b->conns++;
    w->bundle = b;
    if (total_reserve(pool, ws)) {
      w->state = XFER__WAIT_SLOTS;
      return XFER__DECIDE_OPEN;
    }
    /* At the total limit: room is made after this lock. */
    return XFER__DECIDE_NEED_ROOM;
  }
  if ((c = queue(pool, b, w))) {
    *conn = c;
    if (!w->fresh_only)
      return XFER__DECIDE_CONN;
    take_over(pool, b, w, c);
    return XFER__DECIDE_REPLACE;
  }
  if (asked)
    xfer__attached_ask_locked(b, asked, ws);
  /* Queued where a release asked of another multi may be what it waits
   * for (its own ask, or ones asked before it that cover the head of the
   * queue), its wait is bounded on its own clock (rule 4): with a slot
   * free, it opens its own after attached_wait; without one, it looks
   * again every attached_wait, for a slot may come free while every
   * queued waiter is covered by a release, and then the pump serves
   * none of them. A retry, which takes no attached connection, is
   * covered by such a release all the same (the pump counts on it for
   * the whole queue), so it is bounded too. */
  w->bounded = dest_slot_free(pool, b) || b->nrequested > 0;
  /* The queue may be beyond what pending releases cover, with a slot
   * free (w itself, or an older one, is served now). */
  xfer__slots_pump_locked(pool, b, ws, room);
  return XFER__DECIDE_WAIT;
}

enum xfer__slots_decision xfer__slots_leave_queue_locked(
    xfer_pool *pool, struct xfer__bundle *b, struct xfer__waiter *w,
    struct xfer__wakeups *ws) {
  enum xfer__wait_state state;

  /* Under both locks, as a cancel reads it: a waiter for room is granted
   * under total_lock alone. */
  if (pool->max_total)
    total_lock(pool);
  state = w->state;
  if (pool->max_total)
    total_unlock(pool);
  if (state != XFER__WAIT_QUEUED) {
    /* Moved on to wait for room (holding its destination slot), or
     * granted: its bound is spent, no other multi's release is awaited. */
    w->bounded = false;
    return XFER__DECIDE_WAIT;
  }
  if (!dest_slot_free(pool, b))
    return XFER__DECIDE_WAIT;
  xfer__list_remove(&w->node);
  atomic_fetch_sub_explicit(&b->nwaiters, 1, memory_order_relaxed);
  XFER__POOL_UNCOUNT(pool, waiting);
  b->conns++;
  w->state = XFER__WAIT_NONE; /* holds b's destination slot */
  if (!total_reserve(pool, ws))
    return XFER__DECIDE_NEED_ROOM;
  w->state = XFER__WAIT_SLOTS;
  return XFER__DECIDE_OPEN;
}

bool xfer__slots_give_locked(xfer_pool *pool, struct xfer__bundle *b,
                             struct xfer__conn *c, struct xfer__wakeups *ws,
                             bool *room) {
  struct xfer__waiter *w = NULL;

  if (atomic_load_explicit(&b->nroom, memory_order_relaxed) > 0) {
    total_lock(pool);
    if (!xfer__list_empty(&b->room)) {
      XFER__POOL_VISIT();
      w = XFER__CONTAINER_OF(b->room.next, struct xfer__waiter, node);
      room_unlink_locked(pool, w);
    }
    total_unlock(pool);
  }
  if (w) { /* c brings its own slots: w's destination slot is free */
    grant(pool, w, c, ws);
    dest_free_locked(pool, b, ws, room);
    return true;
  }
  if (xfer__list_empty(&b->waiters))
    return false;
  XFER__POOL_VISIT();
  w = XFER__CONTAINER_OF(b->waiters.next, struct xfer__waiter, node);
  xfer__list_remove(&w->node);
  atomic_fetch_sub_explicit(&b->nwaiters, 1, memory_order_relaxed);
  grant(pool, w, c, ws);
  return true;
}

/* --- the owner's side ---------------------------------------------------------- */

enum xfer__acquire xfer__slots_take_grant(xfer_pool *pool,
                                          struct xfer__waiter *w,
                                          struct xfer__conn **conn) {
  struct xfer__conn *c;

  if (!atomic_load_explicit(&w->granted, memory_order_acquire))
    return XFER__ACQUIRE_WAIT;
  atomic_store_explicit(&w->granted, false, memory_order_relaxed);
  w->waiting = false;
  c = w->granted_conn;
  w->granted_conn = NULL;
  *conn = c;
  if (!c) { /* both slots */
    w->state = XFER__WAIT_SLOTS;
    return XFER__ACQUIRE_OPEN;
  }
  if (!w->replace) { /* counted as reused once it passes its check */
    w->state = XFER__WAIT_NONE;
    w->bundle = NULL;
    return XFER__ACQUIRE_CONN;
  }
  /* A retry handed a used connection: its slots, and it is closed. No
   * lock: nobody else holds c or w. */
  w->replace = false;
  XFER__POOL_COUNT(pool, closed);
  XFER__POOL_COUNT(pool, closed_limit);
  XFER__POOL_UNCOUNT(pool, open);
  w->bundle = c->bundle;
  w->state = XFER__WAIT_SLOTS;
  c->bundle = NULL;
  c->holds_total = false;
  return XFER__ACQUIRE_REPLACE;
}

void xfer__pool_cancel(xfer_pool *pool, struct xfer__waiter *w,
                       xfer__time now, struct xfer__list *evicted) {
  struct xfer__bundle *b = w->bundle;
  enum xfer__wait_state held;

  if (xfer__pool_waiter_idle(w))
    return;
  if (w->waiting) {
    /* QUEUED, ROOM or GRANTED (maybe at this very moment): under both
     * locks where those change, the state is settled. While it is not
     * waiting, the state is its owner's alone. */
    xfer__bundle_lock(pool, b);
    if (pool->max_total)
      total_lock(pool);
    if (w->state == XFER__WAIT_QUEUED) {
      xfer__list_remove(&w->node);
      atomic_fetch_sub_explicit(&b->nwaiters, 1, memory_order_relaxed);
      XFER__POOL_UNCOUNT(pool, waiting);
    } else if (w->state == XFER__WAIT_ROOM) {
      room_unlink_locked(pool, w);
      XFER__POOL_UNCOUNT(pool, waiting);
    }
    if (pool->max_total)
      total_unlock(pool);
    xfer__bundle_unlock(b);
    w->waiting = false;
  }
  held = w->state;
  w->state = XFER__WAIT_NONE;
  w->bundle = NULL;
  atomic_store_explicit(&w->granted, false, memory_order_relaxed);
  switch (held) {
  case XFER__WAIT_ROOM: /* its destination slot, to the next of b */
    xfer__slots_release(pool, b, false, evicted);
    break;
  case XFER__WAIT_SLOTS:
    xfer__slots_release(pool, b, true, evicted);
    break;
  case XFER__WAIT_GRANTED:
    if (w->granted_conn) /* whole: its slots and idle time its own */
      xfer__pool_give_back(pool, w->granted_conn, now, evicted);
    else
      xfer__slots_release(pool, b, true, evicted);
    break;
  default:
    break;
  }
  w->granted_conn = NULL;
  w->replace = false;
}
