/*
 * The table of destinations (see pool.h, pool_impl.h and
 * docs/internals/pool.md): an RCU hash table (liburcu cds_lfht) from pool
 * key to bundle; checkout and return; the idle sweep.
 *
 * Protected by:
 *   pool->bundles    lookups under rcu_read_lock() (urcu-bp flavour: no
 *                    thread registration); bundles are added with
 *                    cds_lfht_add_unique(), removed by whoever wins
 *                    cds_lfht_del() once a sweep marked them dead, and
 *                    freed with call_rcu(); rcu_barrier() in destroy
 *   bundle->dead     bundle->lock (a bundle with a slot held is never
 *                    dead, so a connection's or waiter's bundle pointer
 *                    needs no RCU section)
 *   pool->next_sweep compare-and-swap: one thread sweeps at a time
 */
#include "pool_impl.h"

#include <string.h>

#include "mem.h"

struct bundle_key {
  const char *key;
  size_t len;
};

static int bundle_match(struct cds_lfht_node *node, const void *arg) {
  const struct xfer__bundle *b =
      caa_container_of(node, struct xfer__bundle, node);
  const struct bundle_key *k = arg;

  TSAN_READ_BEGIN(b);
  return b->key_len == k->len && memcmp(b->key, k->key, k->len) == 0;
}

/* Under rcu_read_lock(). */
static struct xfer__bundle *bundle_find(xfer_pool *pool, const char *key,
                                        size_t len, uint64_t hash) {
  struct bundle_key k = {key, len};
  struct cds_lfht_iter iter;
  struct cds_lfht_node *node;

  cds_lfht_lookup(pool->bundles, (unsigned long)hash, bundle_match, &k, &iter);
  node = cds_lfht_iter_get_node(&iter);
  return node ? caa_container_of(node, struct xfer__bundle, node) : NULL;
}

/* One allocation: the bundle, its key, then its lanes at the next cache
 * line boundary. */
static struct xfer__bundle *bundle_new(const xfer_pool *pool, const char *key,
                                       size_t len, uint64_t hash) {
  size_t lanes_at = sizeof(struct xfer__bundle) + len + 1;
  struct xfer__bundle *b =
      xfer__calloc(1, lanes_at + XFER__CACHE_LINE - 1 +
                          pool->nlanes * sizeof(union xfer__lane_slot));
  uintptr_t lanes;

  if (!b)
    return NULL;
  lanes = ((uintptr_t)b + lanes_at + XFER__CACHE_LINE - 1) &
          ~(uintptr_t)(XFER__CACHE_LINE - 1);
  b->lanes = (union xfer__lane_slot *)lanes;
  xfer__lanes_init(b, pool->nlanes);
  cds_lfht_node_init(&b->node);
  xfer__lock_init(&b->lock);
  xfer__list_init(&b->waiters);
  xfer__list_init(&b->room);
  xfer__list_init(&b->attached);
  xfer__list_init(&b->requested);
  b->pool = (xfer_pool *)pool;
  b->hash = hash;
  b->key_len = len;
  memcpy(b->key, key, len);
  b->key[len] = '\0';
  return b;
}

static void bundle_free(struct xfer__bundle *b) {
  xfer__free(b);
}

/* Frees a bundle once no reader can hold it (a call_rcu callback, on
 * liburcu's thread). The pool outlives it: destroy waits for these. */
static void bundle_free_rcu(struct rcu_head *head) {
  struct xfer__bundle *b = caa_container_of(head, struct xfer__bundle, rcu);
  xfer_pool *pool = b->pool;

  TSAN_BEFORE_FREE(&b->rcu);
  bundle_free(b);
  atomic_fetch_sub(&pool->rcu_pending, 1);
}

/* Under rcu_read_lock(): a dead bundle leaves the table. The sweep that
 * marked it and any acquirer that met it may race here: cds_lfht_del()
 * succeeds for one of them, which frees it after a grace period. */
static void bundle_delete(xfer_pool *pool, struct xfer__bundle *b) {
  if (cds_lfht_del(pool->bundles, &b->node) != 0)
    return; /* another thread was first */
  atomic_fetch_sub_explicit(&pool->destinations, 1, memory_order_relaxed);
  atomic_fetch_add(&pool->rcu_pending, 1);
  call_rcu(&b->rcu, bundle_free_rcu);
}

/* The bundle for a key, created (allocated outside any lock) when
 * missing. Under rcu_read_lock(). */
static struct xfer__bundle *bundle_get(xfer_pool *pool, const char *key,
                                       size_t len, uint64_t hash) {
  struct xfer__bundle *b = bundle_find(pool, key, len, hash);
  struct bundle_key k = {key, len};
  struct cds_lfht_node *added;
  struct xfer__bundle *fresh;

  if (b)
    return b;
  fresh = bundle_new(pool, key, len, hash);
  if (!fresh)
    return NULL;
  TSAN_PUBLISH(fresh);
  added = cds_lfht_add_unique(pool->bundles, (unsigned long)hash,
                              bundle_match, &k, &fresh->node);
  if (added != &fresh->node) { /* another thread was first: use its */
    bundle_free(fresh);        /* never published */
  } else {
    atomic_fetch_add_explicit(&pool->destinations, 1, memory_order_relaxed);
  }
  return caa_container_of(added, struct xfer__bundle, node);
}

/* The live bundle for a key (created when missing), locked; NULL when
 * out of memory. Under rcu_read_lock(). One a sweep marked dead is about
 * to leave the table: this thread deletes it itself (rather than look it
 * up again and again until the sweep gets there), then creates a new
 * one. */
static struct xfer__bundle *bundle_get_locked(xfer_pool *pool,
                                              const char *key, size_t len,
                                              uint64_t hash) {
  for (;;) {
    struct xfer__bundle *b = bundle_get(pool, key, len, hash);

    if (!b)
      return NULL;
    xfer__bundle_lock(pool, b);
    if (!b->dead)
      return b;
    xfer__bundle_unlock(b);
    XFER__POOL_HOOK(XFER__HOOK_DEAD_BUNDLE_MET, b->key);
    bundle_delete(pool, b);
    TSAN_READ_END(&b->rcu);
  }
}

/*
 * Idle and lifetime expiry, run by whichever thread first passes the next
 * sweep time (one compare-and-swap decides), with that thread's `now`: the
 * pool never reads the clock. Under each lock only unlinking, a batch at
 * a time; the closes come after.
 */
static void maybe_sweep(xfer_pool *pool, xfer__time now,
                        struct xfer__list *evicted) {
  xfer__time due = atomic_load_explicit(&pool->next_sweep,
                                        memory_order_relaxed);
  struct xfer__list doomed;
  struct cds_lfht_iter iter;
  struct cds_lfht_node *node;

  if (now < due || !atomic_compare_exchange_strong(&pool->next_sweep, &due,
                                                   now + pool->sweep_every))
    return;
  xfer__list_init(&doomed);
  rcu_read_lock();
  cds_lfht_for_each(pool->bundles, &iter, node) {
    struct xfer__bundle *b = caa_container_of(node, struct xfer__bundle, node);
    bool unused;

    TSAN_READ_BEGIN(b);
    xfer__lanes_sweep(pool, b, now, &doomed);
    xfer__bundle_lock(pool, b);
    /* A destination nobody uses any more (no slot held, nobody waiting)
     * leaves the table, so a crawler's pool does not grow with every host
     * it ever met. Readers that found it see `dead` under the lock and
     * delete it themselves; RCU frees it after they are gone. */
    unused = !b->conns && xfer__list_empty(&b->waiters) && !b->dead;
    if (unused)
      b->dead = true;
    xfer__bundle_unlock(b);
    if (unused) {
      XFER__POOL_HOOK(XFER__HOOK_SWEEP_MARKED_DEAD, b->key);
      xfer__lanes_unindex(pool, b);
      bundle_delete(pool, b);
    }
    TSAN_READ_END(&b->rcu);
  }
  rcu_read_unlock();
  while (!xfer__list_empty(&doomed)) {
    struct xfer__conn *c =
        XFER__CONTAINER_OF(doomed.next, struct xfer__conn, idle_node);
    xfer__list_remove(&c->idle_node);
    xfer__pool_evict(pool, c,
                     xfer__pool_expired(pool, c, now) == XFER__TOO_OLD
                         ? &pool->closed_lifetime
                         : &pool->closed_idle_timeout,
                     evicted);
  }
}

void xfer__pool_sweep(xfer_pool *pool, xfer__time now,
                      struct xfer__list *evicted) {
  maybe_sweep(pool, now, evicted);
}

/* --- checkout ------------------------------------------------------------------ */

/* Under rcu_read_lock(): an idle connection without the bundle's lock
 * (the usual case), else the decision under it. */
static enum xfer__slots_decision find_or_decide(
    xfer_pool *pool, const char *key, size_t key_len, uint64_t hash,
    unsigned home, struct xfer__waiter *w, struct xfer__conn **conn,
    struct xfer__wakeups *ws, bool *room, bool *nomem) {
  enum xfer__slots_decision d;
  /* A bundle a sweep marked dead has no idle connection (its slots keep
   * a bundle alive), so this may look at one. */
  struct xfer__bundle *b =
      w->fresh_only ? NULL : bundle_find(pool, key, key_len, hash);

  if (b) {
    *conn = xfer__lanes_take(pool, b, home, true);
    TSAN_READ_END(&b->rcu);
    if (*conn)
      return XFER__DECIDE_CONN;
  }
  b = bundle_get_locked(pool, key, key_len, hash);
  if (!b) {
    *nomem = true;
    return XFER__DECIDE_OPEN;
  }
  if (!w->fresh_only && (*conn = xfer__lanes_take(pool, b, home, true)))
    d = XFER__DECIDE_CONN;
  else
    d = xfer__slots_decide_locked(pool, b, w, conn, ws, room);
  xfer__bundle_unlock(b);
  TSAN_READ_END(&b->rcu);
  return d;
}

/* No lock held; w holds its destination slot at the total limit: an idle
 * connection elsewhere is closed for its total slot, or w waits for room
 * (a connection of its own or a total slot may come on the way). */
static enum xfer__slots_decision make_or_wait_for_room(
    xfer_pool *pool, struct xfer__waiter *w, struct xfer__conn **conn,
    struct xfer__list *evicted) {
  struct xfer__bundle *b = w->bundle; /* alive: w holds one of its slots */
  enum xfer__slots_decision d;
  struct xfer__wakeups ws;
  bool room = false;

  if (xfer__room_take(pool, w, evicted))
    return XFER__DECIDE_OPEN;
  xfer__wakeups_init(&ws);
  xfer__bundle_lock(pool, b);
  d = xfer__slots_room_wait_locked(pool, b, w, conn, &ws, &room);
  xfer__bundle_unlock(b);
  xfer__wakeups_flush(&ws);
  if (room || d == XFER__DECIDE_ROOM_WAIT)
    xfer__room_make(pool, evicted);
  return d;
}

/* An idle connection for w (taken from a lane, or handed over while it
 * waited): reused (counted), or not to be used (expired, too idle for
 * this request, dead: evicted or closed here). Expiry and liveness come
 * after every lock (system calls). */
static bool usable(xfer_pool *pool, struct xfer__waiter *w,
                   struct xfer__conn *c, xfer__time now, bool *saw_dead,
                   struct xfer__list *evicted) {
  switch (xfer__pool_reuse_check(pool, c, now, w->replayable)) {
  case XFER__REUSE_OK:
    XFER__POOL_COUNT(pool, reused);
    return true;
  case XFER__REUSE_EXPIRED:
    xfer__pool_evict(pool, c,
                     xfer__pool_too_old(pool, c, now)
                         ? &pool->closed_lifetime
                         : &pool->closed_idle_timeout,
                     evicted);
    return false;
  case XFER__REUSE_TOO_IDLE: /* about to be closed by the server */
    xfer__pool_evict(pool, c, &pool->closed_idle_timeout, evicted);
    return false;
  case XFER__REUSE_DEAD:
    break;
  }
  *saw_dead = true;
  /* Tracked by no multi while idle: no socket_done. */
  xfer__pool_close(pool, c, XFER__CLOSE_DEAD, NULL, evicted);
  return false;
}

enum xfer__acquire xfer__pool_take_grant(xfer_pool *pool,
                                         struct xfer__waiter *w,
                                         xfer__time now,
                                         struct xfer__conn **conn,
                                         bool *saw_dead,
                                         struct xfer__list *evicted) {
  enum xfer__acquire got = xfer__slots_take_grant(pool, w, conn);
  char key[XFER__POOL_KEY_MAX];
  struct xfer__conn *c = *conn;
  size_t key_len;
  uint64_t hash;

  if (got != XFER__ACQUIRE_CONN)
    return got;
  /* Its key, to look again if it fails its check (and is closed). */
  key_len = c->key_len < sizeof(key) ? c->key_len : sizeof(key);
  memcpy(key, c->key, key_len);
  hash = c->key_hash;
  if (usable(pool, w, c, now, saw_dead, evicted))
    return got;
  *conn = NULL;
  return xfer__pool_acquire(pool, key, key_len, hash, now, w, conn, saw_dead,
                            evicted);
}

/* A decision made: the result of the checkout, or false when the idle
 * connection it took is not to be used: look again. */
static bool conclude(xfer_pool *pool, struct xfer__waiter *w,
                     enum xfer__slots_decision d, struct xfer__conn *c,
                     xfer__time now, struct xfer__conn **conn,
                     bool *saw_dead, struct xfer__list *evicted,
                     enum xfer__acquire *result) {
  if (d == XFER__DECIDE_NEED_ROOM)
    d = make_or_wait_for_room(pool, w, &c, evicted);
  if (d != XFER__DECIDE_CONN)
    XFER__POOL_COUNT(pool, misses);
  switch (d) {
  case XFER__DECIDE_OPEN:
  case XFER__DECIDE_NEED_ROOM: /* (never left as it is) */
    *result = XFER__ACQUIRE_OPEN;
    return true;
  case XFER__DECIDE_REPLACE:
    *conn = c;
    *result = XFER__ACQUIRE_REPLACE;
    return true;
  case XFER__DECIDE_ROOM_WAIT:
  case XFER__DECIDE_WAIT:
    w->waiting = true;
    /* Room made just now may have been ours: then it never waited (and
     * a checkout that take_grant starts again counts for itself). */
    if (!atomic_load_explicit(&w->granted, memory_order_acquire))
      XFER__POOL_COUNT(pool, waited);
    *result = xfer__pool_take_grant(pool, w, now, conn, saw_dead, evicted);
    return true;
  case XFER__DECIDE_CONN:
    break;
  }
  w->bundle = NULL; /* a destination slot reserved on the way went back */
  w->state = XFER__WAIT_NONE;
  if (!usable(pool, w, c, now, saw_dead, evicted))
    return false;
  *conn = c;
  *result = XFER__ACQUIRE_CONN;
  return true;
}

enum xfer__acquire xfer__pool_acquire(xfer_pool *pool, const char *key,
                                      size_t key_len, uint64_t hash,
                                      xfer__time now,
                                      struct xfer__waiter *w,
                                      struct xfer__conn **conn,
                                      bool *saw_dead,
                                      struct xfer__list *evicted) {
  unsigned home = xfer__lanes_home(pool);
  enum xfer__acquire result;

  assert(w->state == XFER__WAIT_NONE && !w->waiting);
  w->bounded = false;
  maybe_sweep(pool, now, evicted);
  for (;;) {
    struct xfer__wakeups ws;
    struct xfer__conn *c = NULL;
    enum xfer__slots_decision d;
    bool room = false, nomem = false;

    xfer__wakeups_init(&ws);
    rcu_read_lock();
    d = find_or_decide(pool, key, key_len, hash, home, w, &c, &ws, &room,
                       &nomem);
    rcu_read_unlock();
    xfer__wakeups_flush(&ws); /* a waiter granted, an owner asked */
    if (nomem)
      return XFER__ACQUIRE_NOMEM;
    if (room)
      xfer__room_make(pool, evicted);
    if (conclude(pool, w, d, c, now, conn, saw_dead, evicted, &result))
      return result;
  }
}

enum xfer__acquire xfer__pool_stop_waiting(xfer_pool *pool,
                                           struct xfer__waiter *w,
                                           xfer__time now,
                                           struct xfer__conn **conn,
                                           bool *saw_dead,
                                           struct xfer__list *evicted) {
  enum xfer__acquire result =
      xfer__pool_take_grant(pool, w, now, conn, saw_dead, evicted);
  char key[XFER__POOL_KEY_MAX];
  enum xfer__slots_decision d;
  struct xfer__bundle *b;
  struct xfer__conn *c = NULL;
  struct xfer__wakeups ws;
  size_t key_len;
  uint64_t hash;

  if (result != XFER__ACQUIRE_WAIT || !w->waiting)
    return result;
  /* Read only now: take_grant may have started the checkout again, in
   * another bundle. Alive: w waits in it. */
  b = w->bundle;
  key_len = b->key_len < sizeof(key) ? b->key_len : sizeof(key);
  memcpy(key, b->key, key_len);
  hash = b->hash;
  xfer__wakeups_init(&ws);
  xfer__bundle_lock(pool, b);
  d = xfer__slots_leave_queue_locked(pool, b, w, &ws);
  xfer__bundle_unlock(b);
  xfer__wakeups_flush(&ws);
  if (d == XFER__DECIDE_WAIT)
    return XFER__ACQUIRE_WAIT; /* at its destination's limit: keeps its
                                  place */
  w->waiting = false;
  if (conclude(pool, w, d, c, now, conn, saw_dead, evicted, &result))
    return result;
  /* Waiting for room, it found a connection of its destination come back,
   * which failed its check: a checkout as any other (b may be gone). */
  return xfer__pool_acquire(pool, key, key_len, hash, now, w, conn, saw_dead,
                            evicted);
}

/* --- return -------------------------------------------------------------------- */

/* The usual return takes only the lock of this CPU's lane. With a waiter
 * of its destination (queued or being queued), or a transfer that wants
 * room, it goes through the bundle's lock instead: to the oldest waiter,
 * or closed for room. */
static void give_or_keep(xfer_pool *pool, struct xfer__conn *c,
                         struct xfer__list *evicted) {
  struct xfer__bundle *b = c->bundle;
  unsigned home = xfer__lanes_home(pool);
  enum xfer__lane_keep kept;
  struct xfer__wakeups ws;
  bool given, room = false;

  kept = xfer__lanes_keep(pool, b, home, c, true);
  if (kept == XFER__LANE_LINKED)
    return;
  xfer__wakeups_init(&ws);
  xfer__bundle_lock(pool, b);
  given = xfer__slots_give_locked(pool, b, c, &ws, &room);
  if (!given)
    kept = xfer__lanes_keep(pool, b, home, c, false);
  xfer__bundle_unlock(b);
  xfer__wakeups_flush(&ws);
  if (room)
    xfer__room_make(pool, evicted);
  if (!given && kept != XFER__LANE_LINKED) /* over a limit, or for room */
    xfer__pool_evict(pool, c, &pool->closed_limit, evicted);
}

void xfer__pool_give_back(xfer_pool *pool, struct xfer__conn *c,
                          xfer__time now, struct xfer__list *evicted) {
  assert(c->bundle && c->holds_total);
  maybe_sweep(pool, now, evicted);
  if (xfer__pool_too_old(pool, c, now)) { /* not worth keeping */
    xfer__pool_evict(pool, c, &pool->closed_lifetime, evicted);
    return;
  }
  give_or_keep(pool, c, evicted);
}

void xfer__pool_return(xfer_pool *pool, struct xfer__conn *c, xfer__time now,
                       struct xfer__list *evicted) {
  c->last_used = now; /* idle from now */
  xfer__pool_give_back(pool, c, now, evicted);
}
