/* Attached connections of a multi (see attached.h). */
#include "common.h"

#include <string.h>

#include "attached.h"
#include "conn.h"
#include "pool.h"
#include "shutdown.h"

static struct xfer__conn *conn_of(struct xfer__mev_tracker *t) {
  return XFER__CONTAINER_OF(t, struct xfer__conn, ev);
}

void xfer__attached_untrack(struct xfer__attached *a, struct xfer__conn *c) {
  if (c->ev_live) {
    xfer__mev_tracker_done(&a->loop->ev, &c->ev);
    c->ev_live = false;
  }
}

/* Is c a connection to the destination of this pool key? */
static bool has_key(const struct xfer__conn *c, const char *key,
                    size_t key_len, uint64_t hash) {
  return c->key_hash == hash && c->key_len == key_len &&
         memcmp(c->key, key, key_len) == 0;
}

/* Off this multi's list and the pool's; false when a waiter asked for
 * it first (reuse only). */
static bool unlink_conn(struct xfer__attached *a, struct xfer__conn *c,
                        enum xfer__take why) {
  if (!xfer__pool_take_attached(a->loop->pool, c, a->tally, why))
    return false;
  xfer__list_remove(&c->owner_node);
  a->count--;
  return true;
}

/* To the shared side, after its socket left our tracking (REMOVE first:
 * rule 4). */
static void release(struct xfer__attached *a, struct xfer__conn *c,
                    xfer__time now, bool on_demand) {
  struct xfer__list evicted;

  xfer__list_remove(&c->owner_node);
  a->count--;
  xfer__attached_untrack(a, c);
  xfer__mev_socket_done(&a->loop->ev, c->fd);
  xfer__list_init(&evicted);
  xfer__pool_release_attached(a->loop->pool, c, a->tally, on_demand, now,
                              &evicted);
  xfer__shutdown_adopt_list(a->shutdown, &evicted, now);
}

static void close_dead(struct xfer__attached *a, struct xfer__conn *c,
                       enum xfer__close_reason why, xfer__time now);

/* Its socket became readable while attached: the peer closed it (or sent
 * bytes nobody asked for), so it is closed. */
static void on_event(struct xfer__mev_tracker *t, int fd, int events) {
  struct xfer__attached *a = t->owner;
  struct xfer__conn *c = conn_of(t);
  xfer__time now = a->loop->last_now;

  (void)fd;
  (void)events;
  if (!xfer__list_linked(&c->owner_node))
    return; /* taken by a transfer of ours: its bytes are the answer */
  if (xfer__conn_alive(c))
    return; /* a spurious wake-up */
  /* Closed by the server after this much idle time, seen as it happened:
   * the best lesson of its idle-close time there is. */
  xfer__pool_learn_died(a->loop->pool, c, now - c->last_used);
  close_dead(a, c, XFER__CLOSE_PEER, now);
}

static const struct xfer__mev_ops conn_ev_ops = {.event = on_event};

/* Releases the connections whose hold has passed, oldest first. */
static void release_held_out(struct xfer__attached *a, xfer__time now) {
  xfer__time hold = xfer__pool_attach_hold(a->loop->pool);

  while (!xfer__list_empty(&a->conns)) {
    struct xfer__conn *c = XFER__CONTAINER_OF(a->conns.next,
                                              struct xfer__conn, owner_node);
    if (c->attached_at + hold > now)
      break;
    release(a, c, now, false);
  }
}

void xfer__attached_run(struct xfer__attached *a, xfer__time now) {
  release_held_out(a, now);
}

void xfer__attached_settle(struct xfer__attached *a, xfer__time now,
                           bool busy) {
  struct xfer__conn *oldest;
  xfer__time at;

  release_held_out(a, now);
  if (busy && !xfer__pool_limited(a->loop->pool) &&
      xfer__pool_attached_wait(a->loop->pool)) {
    /* Its transfers bring the next calls, and a transfer of another
     * multi that wants the connection asks for it (the wake-up): no
     * deadline is needed, and one set while it was idle goes. */
    if (a->timer->at[XFER__EXPIRE_ATTACHED] != XFER__TIME_NEVER)
      xfer__expiry_clear(&a->loop->timers, a->timer, XFER__EXPIRE_ATTACHED);
    return;
  }
  if (xfer__list_empty(&a->conns))
    return; /* an expiry set earlier stays: it fires and finds nothing */
  oldest = XFER__CONTAINER_OF(a->conns.next, struct xfer__conn, owner_node);
  at = oldest->attached_at + xfer__pool_attach_hold(a->loop->pool);
  /* Only ever earlier: one that fires before the oldest's end finds
   * nothing due, and the call it brings sets the next. */
  if (at < a->timer->at[XFER__EXPIRE_ATTACHED])
    xfer__expiry_set(&a->loop->timers, a->timer, XFER__EXPIRE_ATTACHED, at);
}

void xfer__attached_init(struct xfer__attached *a, struct xfer__loop *loop,
                         struct xfer__shutdown *shutdown,
                         struct xfer__expiry *timer,
                         struct xfer__pool_tally *tally) {
  memset(a, 0, sizeof(*a));
  a->loop = loop;
  a->tally = tally;
  a->shutdown = shutdown;
  a->timer = timer;
  xfer__list_init(&a->conns);
}

/* c's stack waiting for IN, tracked as c's own use; false when that
 * failed (out of memory, or the socket callback refused). */
static bool track_in(struct xfer__loop *loop, struct xfer__conn *c) {
  struct xfer__pollset ps;

  xfer__pollset_reset(&ps);
  xfer__conn_pollset(c, &ps, XFER_POLL_IN);
  return xfer__mev_assess(&loop->ev, &c->ev, &ps) == XFER_OK;
}

bool xfer__attached_keep(struct xfer__attached *a, struct xfer__conn *c,
                         struct xfer__mev_tracker *user, xfer__time now) {
  struct xfer__loop *loop = a->loop;

  if (!xfer__pool_attach_hold(loop->pool) || xfer__loop_wake_ready(loop) ||
      !xfer__pool_keep_attached(loop->pool, c, loop->wake, a->tally, now))
    return false;
  /* IN, like the finishing transfer: the application hears no change,
   * and a peer that closes it makes it readable. Where the transfer's
   * last pollset was just that (the socket alone wants IN on c->fd), its
   * use passes to the connection. */
  if (!c->ev_live)
    xfer__mev_tracker_init(&c->ev, XFER__MEV_CONN, &conn_ev_ops, a);
  c->ev_live = true;
  if (user && c->ev.count == 0 && xfer__conn_socket_alone(c) &&
      xfer__mev_hand_over(&loop->ev, user, &c->ev, c->fd, XFER_POLL_IN))
    ; /* tracked as it was */
  else if (!track_in(loop, c)) {
    xfer__pool_take_attached(loop->pool, c, a->tally, XFER__TAKE_CLOSE);
    xfer__attached_untrack(a, c);
    return false;
  }
  c->attached_at = now;
  xfer__list_insert_tail(&a->conns, &c->owner_node);
  a->count++;
  if (a->count > XFER__ATTACHED_MAX)
    release(a, XFER__CONTAINER_OF(a->conns.next, struct xfer__conn, owner_node),
            now, false);
  return true;
}

/* c is closed: the peer closed it (its socket said so: CLOSE_PEER; or the
 * check before a reuse found it: CLOSE_DEAD). Its slots serve a waiter
 * that asked for it. */
static void close_dead(struct xfer__attached *a, struct xfer__conn *c,
                       enum xfer__close_reason why, xfer__time now) {
  struct xfer__list evicted;

  (void)unlink_conn(a, c, XFER__TAKE_CLOSE);
  xfer__attached_untrack(a, c);
  xfer__list_init(&evicted);
  xfer__pool_close(a->loop->pool, c, why, &a->loop->ev, &evicted);
  xfer__shutdown_adopt_list(a->shutdown, &evicted, now);
}

struct xfer__conn *xfer__attached_take(struct xfer__attached *a,
                                       const char *key, size_t key_len,
                                       uint64_t hash, bool replayable,
                                       xfer__time now, bool *saw_dead) {
  struct xfer__list *pos, *prev;

  /* The most recently attached first: the others age out to the shared
   * side, so no more connections stay warm than the load needs. */
  for (pos = a->conns.prev; pos != &a->conns; pos = prev) {
    struct xfer__conn *c = XFER__CONTAINER_OF(pos, struct xfer__conn,
                                              owner_node);
    prev = pos->prev;
    if (!has_key(c, key, key_len, hash))
      continue;
    if (atomic_load_explicit(&c->release_requested, memory_order_relaxed)) {
      release(a, c, now, true); /* promised to a waiter: it goes now */
      continue;
    }
    /* The pool's rules for reuse (rule 6): the same for an attached one,
     * though most are too young to need a check. */
    switch (xfer__pool_reuse_check(a->loop->pool, c, now, replayable)) {
    case XFER__REUSE_OK:
      if (unlink_conn(a, c, XFER__TAKE_REUSE))
        return c;
      release(a, c, now, true); /* asked for meanwhile */
      continue;
    case XFER__REUSE_DEAD: /* the request opens a new one: a reopen */
      *saw_dead = true;
      close_dead(a, c, XFER__CLOSE_DEAD, now);
      continue;
    default: /* expired, or too idle for this request: the pool decides */
      release(a, c, now, false);
      return NULL;
    }
  }
  return NULL;
}

struct xfer__conn *xfer__attached_take_trusted(struct xfer__attached *a,
                                               const char *key, size_t key_len,
                                               uint64_t hash, bool replayable,
                                               xfer__time now) {
  struct xfer__list *pos;

  for (pos = a->conns.prev; pos != &a->conns; pos = pos->prev) {
    struct xfer__conn *c = XFER__CONTAINER_OF(pos, struct xfer__conn,
                                              owner_node);
    if (!has_key(c, key, key_len, hash))
      continue;
    if (atomic_load_explicit(&c->release_requested, memory_order_relaxed) ||
        !xfer__pool_reuse_trusted(a->loop->pool, c, now, replayable))
      return NULL; /* the run at the timer decides what becomes of it */
    return unlink_conn(a, c, XFER__TAKE_REUSE) ? c : NULL;
  }
  return NULL;
}

void xfer__attached_release_requested(struct xfer__attached *a,
                                      xfer__time now) {
  struct xfer__list *pos, *tmp;

  XFER__LIST_FOREACH_SAFE(pos, tmp, &a->conns) {
    struct xfer__conn *c = XFER__CONTAINER_OF(pos, struct xfer__conn,
                                              owner_node);
    if (atomic_load_explicit(&c->release_requested, memory_order_relaxed))
      release(a, c, now, true);
  }
}

void xfer__attached_release_all(struct xfer__attached *a, xfer__time now) {
  while (!xfer__list_empty(&a->conns))
    release(a, XFER__CONTAINER_OF(a->conns.next, struct xfer__conn, owner_node),
            now, false);
}
