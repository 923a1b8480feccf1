/* The shutdown handle (see shutdown.h). */
#include "common.h"

#include <assert.h>
#include <poll.h>
#include <string.h>

#include "conn.h"
#include "mem.h"
#include "pool.h"
#include "shutdown.h"

static struct xfer__conn *conn_of(struct xfer__mev_tracker *t) {
  return XFER__CONTAINER_OF(t, struct xfer__conn, ev);
}

/* Closes c (socket_done, then close), and its destination slot passes
 * on: to a waiter, which may close an idle connection for room. This
 * handle takes that one too, but the caller adopts it (from `later`) only
 * once its walk of s->conns is over: adopted during the walk, behind the
 * one just closed, it could land past the walk's end, never stepped,
 * never timed, never polled. */
static void finish_into(struct xfer__shutdown *s, struct xfer__conn *c,
                        struct xfer__list *later) {
  struct xfer__loop *loop = s->loop;

  xfer__list_remove(&c->idle_node);
  s->count--;
  xfer__mev_tracker_done(&loop->ev, &c->ev);
  xfer__pool_close(loop->pool, c, XFER__CLOSE_EVICTED, &loop->ev, later);
}

/* The same outside a walk: what it frees room for is adopted at once. */
static void finish(struct xfer__shutdown *s, struct xfer__conn *c) {
  struct xfer__list later;

  xfer__list_init(&later);
  finish_into(s, c, &later);
  xfer__shutdown_adopt_list(s, &later, s->loop->last_now);
}

/* One step of its graceful close (the exchange's part, then each
 * filter's: the socket reads and drops what the peer still sends). true
 * when it is finished. */
static bool step(struct xfer__conn *c) {
  return xfer__conn_shutdown_step(c) != XFER__CF_AGAIN;
}

/* Tracks what the stack waits on to go on with its close: IN, unless a
 * filter must write first (TLS's close_notify), and asked again after
 * every step, so such a need lasts only as long as it does. false when
 * the tracking failed (the connection is finished then). */
static bool watch(struct xfer__shutdown *s, struct xfer__conn *c) {
  struct xfer__pollset ps;

  xfer__pollset_reset(&ps);
  xfer__conn_pollset(c, &ps, XFER_POLL_IN);
  if (xfer__mev_assess(&s->loop->ev, &c->ev, &ps) == XFER_OK)
    return true;
  finish(s, c);
  return false;
}

static void on_event(struct xfer__mev_tracker *t, int fd, int events) {
  struct xfer__shutdown *s = t->owner;
  struct xfer__conn *c = conn_of(t);

  (void)fd;
  (void)events;
  if (step(c))
    finish(s, c);
  else
    watch(s, c);
}

static const struct xfer__mev_ops conn_ev_ops = {.event = on_event};

void xfer__shutdown_run(struct xfer__shutdown *s, xfer__time now) {
  struct xfer__list *pos, *tmp, later;
  xfer__time next = XFER__TIME_NEVER;

  xfer__list_init(&later);
  XFER__LIST_FOREACH_SAFE(pos, tmp, &s->conns) {
    struct xfer__conn *c = XFER__CONTAINER_OF(pos, struct xfer__conn,
                                              idle_node);
    if (c->shutdown_deadline <= now)
      finish_into(s, c, &later);
    else if (c->shutdown_deadline < next)
      next = c->shutdown_deadline;
  }
  xfer__expiry_set(&s->loop->timers, s->timer, XFER__EXPIRE_SHUTDOWN, next);
  /* After the timer is set: each adoption moves it earlier if it must. */
  xfer__shutdown_adopt_list(s, &later, now);
}

void xfer__shutdown_init(struct xfer__shutdown *s, struct xfer__loop *loop,
                         struct xfer__expiry *timer) {
  memset(s, 0, sizeof(*s));
  s->loop = loop;
  s->timer = timer;
  xfer__list_init(&s->conns);
  s->timeout = XFER__SHUTDOWN_TIMEOUT;
  s->close_by = XFER__TIME_NEVER;
}

void xfer__shutdown_adopt(struct xfer__shutdown *s, struct xfer__conn *c,
                          xfer__time now) {
  c->shutdown_deadline = now + s->timeout;
  if (c->shutdown_deadline > s->close_by)
    c->shutdown_deadline = s->close_by;
  xfer__mev_tracker_init(&c->ev, XFER__MEV_CONN, &conn_ev_ops, s);
  c->ev_live = true;
  xfer__list_insert_tail(&s->conns, &c->idle_node);
  s->count++;
  s->total++;
  /* Top down: the exchange's goodbye, then each filter's (the socket:
   * our FIN, then the peer's EOF). */
  if (step(c)) {
    finish(s, c);
    return;
  }
  if (!watch(s, c))
    return;
  if (s->timer->at[XFER__EXPIRE_SHUTDOWN] > c->shutdown_deadline)
    xfer__expiry_set(&s->loop->timers, s->timer, XFER__EXPIRE_SHUTDOWN,
                     c->shutdown_deadline);
}

void xfer__shutdown_adopt_list(struct xfer__shutdown *s,
                               struct xfer__list *evicted, xfer__time now) {
  while (!xfer__list_empty(evicted)) {
    struct xfer__conn *c =
        XFER__CONTAINER_OF(evicted->next, struct xfer__conn, idle_node);
    xfer__list_remove(&c->idle_node);
    xfer__shutdown_adopt(s, c, now);
  }
}

void xfer__shutdown_drain(struct xfer__shutdown *s) {
  /* The caller's reading first (rule 2: one a call), then one after each
   * wait. */
  xfer__time now = s->loop->last_now;

  /* What the drain adopts meanwhile (room made for other threads'
   * waiters as slots pass on) closes by the drain's own end: however busy
   * the other threads are, the drain is bounded by one timeout. */
  s->close_by = now + s->timeout;
  while (s->count) {
    struct pollfd pfd[64];
    nfds_t n = 0;
    struct xfer__list *pos, *tmp, later;
    xfer__time first = XFER__TIME_NEVER;

    xfer__list_init(&later);
    XFER__LIST_FOREACH_SAFE(pos, tmp, &s->conns) {
      struct xfer__conn *c = XFER__CONTAINER_OF(pos, struct xfer__conn,
                                                idle_node);
      if (c->shutdown_deadline <= now) {
        finish_into(s, c, &later);
        continue;
      }
      if (c->shutdown_deadline < first)
        first = c->shutdown_deadline;
      if (n < 64) {
        struct xfer__pollset ps;
        xfer__pollset_reset(&ps);
        xfer__conn_pollset(c, &ps, XFER_POLL_IN);
        for (unsigned i = 0; i < ps.count && n < 64; i++) {
          pfd[n].fd = ps.fd[i];
          pfd[n].events = (short)((ps.want[i] & XFER_POLL_IN ? POLLIN : 0) |
                                  (ps.want[i] & XFER_POLL_OUT ? POLLOUT : 0));
          pfd[n++].revents = 0;
        }
      }
    }
    if (!xfer__list_empty(&later)) {
      /* Walked again before any wait: polled and timed with the rest. */
      xfer__shutdown_adopt_list(s, &later, now);
      continue;
    }
    if (!s->count)
      break;
    /* Every connection listed was seen: one of them is due first. */
    assert(first != XFER__TIME_NEVER);
    poll(pfd, n, (int)((first - now + XFER__NS_PER_MS - 1) / XFER__NS_PER_MS));
    now = xfer__loop_now(s->loop);
    XFER__LIST_FOREACH_SAFE(pos, tmp, &s->conns) {
      struct xfer__conn *c = XFER__CONTAINER_OF(pos, struct xfer__conn,
                                                idle_node);
      if (step(c))
        finish_into(s, c, &later);
    }
    xfer__shutdown_adopt_list(s, &later, now);
  }
  s->close_by = XFER__TIME_NEVER;
}
