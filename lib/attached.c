/* Attached connections of a multi (see attached.h). */
#include "common.h"

#include <string.h>

#include "attached.h"
#include "conn.h"
#include "multi.h"
#include "pool.h"
#include "shutdown.h"
#include "transfer.h"

static struct xfer__conn *conn_of(struct xfer__mev_tracker *t) {
  return XFER__CONTAINER_OF(t, struct xfer__conn, ev);
}

void xfer__attached_untrack(xfer_multi *m, struct xfer__conn *c) {
  if (c->ev_live) {
    xfer__mev_conn_done(m, &c->ev);
    c->ev_live = false;
  }
}

/* Off this multi's list and the pool's; false when a waiter asked for
 * it first (reuse only). */
static bool unlink_conn(xfer_multi *m, struct xfer__conn *c,
                        enum xfer__take why) {
  if (!xfer__pool_take_attached(m->pool, c, why))
    return false;
  xfer__list_remove(&c->owner_node);
  m->attached.count--;
  return true;
}

/* To the shared side, after its socket left our tracking (REMOVE first:
 * rule 4). */
static void release(xfer_multi *m, struct xfer__conn *c, xfer__time now,
                    bool on_demand) {
  struct xfer__list evicted;

  xfer__list_remove(&c->owner_node);
  m->attached.count--;
  xfer__attached_untrack(m, c);
  xfer__mev_socket_done(m, c->fd);
  xfer__list_init(&evicted);
  xfer__pool_release_attached(m->pool, c, on_demand, now, &evicted);
  xfer__shutdown_adopt_list(m, &evicted, now);
}

static void close_dead(xfer_multi *m, struct xfer__conn *c, xfer__time now);

/* Its socket became readable while attached: the peer closed it (or sent
 * bytes nobody asked for), so it is closed. */
static void on_event(xfer_multi *m, struct xfer__mev_tracker *t, int fd,
                     int events) {
  struct xfer__conn *c = conn_of(t);

  (void)fd;
  (void)events;
  if (!xfer__list_linked(&c->owner_node))
    return; /* taken by a transfer of ours: its bytes are the answer */
  if (xfer__conn_alive(c))
    return; /* a spurious wake-up */
  /* Closed by the server after this much idle time, seen as it happened:
   * the best lesson of its idle-close time there is. */
  xfer__pool_learn_died(m->pool, c, m->last_now - c->last_used);
  close_dead(m, c, m->last_now);
}

/* Arms the internal handle for the oldest connection's hold end (once
 * per hold period at most: connections taken early only make it fire
 * early and find nothing due). */
static void arm(xfer_multi *m, xfer__time now) {
  xfer *h = m->attached.handle;
  struct xfer__conn *oldest;
  xfer__time at = XFER__TIME_NEVER;

  if (!xfer__list_empty(&m->attached.conns)) {
    oldest = XFER__CONTAINER_OF(m->attached.conns.next, struct xfer__conn,
                                owner_node);
    at = oldest->attached_at + xfer__pool_attach_hold(m->pool);
  }
  xfer__now_at_least(h, now);
  xfer__expiry_set(&m->timers, &h->expiry, XFER__EXPIRE_ATTACHED, at);
}

/* The internal handle's timer: release what was held long enough. */
static enum xfer__step handle_run(xfer *x, unsigned due) {
  xfer_multi *m = x->multi;
  xfer__time hold = xfer__pool_attach_hold(m->pool);

  (void)due;
  while (!xfer__list_empty(&m->attached.conns)) {
    struct xfer__conn *c = XFER__CONTAINER_OF(m->attached.conns.next,
                                              struct xfer__conn, owner_node);
    if (c->attached_at + hold > x->now)
      break;
    release(m, c, x->now, false);
  }
  arm(m, x->now);
  return XFER__STEP_AGAIN;
}

static const struct xfer__handler attached_handler = {
    .name = "attached",
    .run = handle_run,
};

bool xfer__attached_init(xfer_multi *m) {
  xfer__list_init(&m->attached.conns);
  m->attached.handle = xfer__multi_internal_new(m, &attached_handler);
  return m->attached.handle != NULL;
}

bool xfer__attached_keep(xfer_multi *m, struct xfer__conn *c,
                         xfer__time now) {
  struct xfer__pollset ps;
  bool armed;

  if (!xfer__pool_attach_hold(m->pool) || xfer__multi_wake_ready(m) ||
      !xfer__pool_keep_attached(m->pool, c, m->wake, now))
    return false;
  /* IN, like the finishing transfer: the application hears no change,
   * and a peer that closes it makes it readable. */
  if (!c->ev_live)
    xfer__mev_tracker_init(&c->ev, XFER__MEV_CONN, on_event);
  xfer__pollset_reset(&ps);
  xfer__conn_pollset(c, &ps, XFER_POLL_IN);
  c->ev_live = true;
  if (xfer__mev_assess_conn(m, &c->ev, &ps) != XFER_OK) {
    xfer__pool_take_attached(m->pool, c, XFER__TAKE_CLOSE);
    xfer__attached_untrack(m, c);
    return false;
  }
  armed = !xfer__list_empty(&m->attached.conns);
  c->attached_at = now;
  xfer__list_insert_tail(&m->attached.conns, &c->owner_node);
  m->attached.count++;
  if (m->attached.count > XFER__ATTACHED_MAX)
    release(m,
            XFER__CONTAINER_OF(m->attached.conns.next, struct xfer__conn,
                               owner_node),
            now, false);
  else if (!armed)
    arm(m, now);
  return true;
}

/* c is closed: the peer closed it (its slots serve a waiter that asked
 * for it). */
static void close_dead(xfer_multi *m, struct xfer__conn *c, xfer__time now) {
  struct xfer__list evicted;

  (void)unlink_conn(m, c, XFER__TAKE_CLOSE);
  xfer__attached_untrack(m, c);
  xfer__list_init(&evicted);
  xfer__pool_closing(m->pool, c, XFER__CLOSE_PEER, &evicted);
  xfer__conn_close(c, m);
  xfer__shutdown_adopt_list(m, &evicted, now);
}

struct xfer__conn *xfer__attached_take(xfer_multi *m, const char *key,
                                       size_t key_len, uint64_t hash,
                                       bool replayable, xfer__time now) {
  struct xfer__list *pos, *prev;

  /* The most recently attached first: the others age out to the shared
   * side, so no more connections stay warm than the load needs. */
  for (pos = m->attached.conns.prev; pos != &m->attached.conns; pos = prev) {
    struct xfer__conn *c = XFER__CONTAINER_OF(pos, struct xfer__conn,
                                              owner_node);
    prev = pos->prev;
    if (c->key_hash != hash || c->key_len != key_len ||
        memcmp(c->key, key, key_len) != 0)
      continue;
    if (atomic_load_explicit(&c->release_requested, memory_order_relaxed)) {
      release(m, c, now, true); /* promised to a waiter: it goes now */
      continue;
    }
    /* The pool's rules for reuse (rule 6): the same for an attached one,
     * though most are too young to need a check. */
    switch (xfer__pool_reuse_check(m->pool, c, now, replayable)) {
    case XFER__REUSE_OK:
      if (unlink_conn(m, c, XFER__TAKE_REUSE))
        return c;
      release(m, c, now, true); /* asked for meanwhile */
      continue;
    case XFER__REUSE_DEAD:
      close_dead(m, c, now);
      continue;
    default: /* expired, or too idle for this request: the pool decides */
      release(m, c, now, false);
      return NULL;
    }
  }
  return NULL;
}

void xfer__attached_release_requested(xfer_multi *m, xfer__time now) {
  struct xfer__list *pos, *tmp;

  XFER__LIST_FOREACH_SAFE(pos, tmp, &m->attached.conns) {
    struct xfer__conn *c = XFER__CONTAINER_OF(pos, struct xfer__conn,
                                              owner_node);
    if (atomic_load_explicit(&c->release_requested, memory_order_relaxed))
      release(m, c, now, true);
  }
}

void xfer__attached_release_all_and_free(xfer_multi *m, xfer__time now) {
  struct xfer__attached *a = &m->attached;

  while (!xfer__list_empty(&a->conns))
    release(m,
            XFER__CONTAINER_OF(a->conns.next, struct xfer__conn, owner_node),
            now, false);
  xfer__multi_internal_free(m, a->handle);
  a->handle = NULL;
}
