/* The shutdown handle (see shutdown.h). */
#include "common.h"

#include <poll.h>

#include "conn.h"
#include "mem.h"
#include "multi.h"
#include "pool.h"
#include "shutdown.h"
#include "transfer.h"

static struct xfer__conn *conn_of(struct xfer__mev_tracker *t) {
  return XFER__CONTAINER_OF(t, struct xfer__conn, ev);
}

static void finish(xfer_multi *m, struct xfer__conn *c) {
  struct xfer__list evicted;

  xfer__list_remove(&c->idle_node);
  m->shutdown.count--;
  xfer__mev_conn_done(m, &c->ev);
  xfer__list_init(&evicted);
  /* Its destination slot passes on (to a waiter, which may close an idle
   * connection for room: this handle takes that one too). */
  xfer__pool_closing(m->pool, c, XFER__CLOSE_EVICTED, &evicted);
  xfer__conn_close(c, m); /* socket_done, then close */
  xfer__shutdown_adopt_list(m, &evicted, m->last_now);
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
static bool watch(xfer_multi *m, struct xfer__conn *c) {
  struct xfer__pollset ps;

  xfer__pollset_reset(&ps);
  xfer__conn_pollset(c, &ps, XFER_POLL_IN);
  if (xfer__mev_assess_conn(m, &c->ev, &ps) == XFER_OK)
    return true;
  finish(m, c);
  return false;
}

static void on_event(xfer_multi *m, struct xfer__mev_tracker *t, int fd,
                     int events) {
  struct xfer__conn *c = conn_of(t);

  (void)fd;
  (void)events;
  if (step(c))
    finish(m, c);
  else
    watch(m, c);
}

/* The internal handle's timer: hard close what is past its deadline. */
static enum xfer__step handle_run(xfer *x, unsigned due) {
  xfer_multi *m = x->multi;
  struct xfer__list *pos, *tmp;
  xfer__time next = XFER__TIME_NEVER;

  (void)due;
  XFER__LIST_FOREACH_SAFE(pos, tmp, &m->shutdown.conns) {
    struct xfer__conn *c = XFER__CONTAINER_OF(pos, struct xfer__conn,
                                              idle_node);
    if (c->shutdown_deadline <= x->now)
      finish(m, c);
    else if (c->shutdown_deadline < next)
      next = c->shutdown_deadline;
  }
  xfer__expiry_set(&m->timers, &x->expiry, XFER__EXPIRE_SHUTDOWN, next);
  return XFER__STEP_AGAIN;
}

static const struct xfer__handler shutdown_handler = {
    .name = "shutdown",
    .run = handle_run,
};

bool xfer__shutdown_init(xfer_multi *m) {
  xfer__list_init(&m->shutdown.conns);
  m->shutdown.timeout = XFER__SHUTDOWN_TIMEOUT;
  m->shutdown.handle = xfer__multi_internal_new(m, &shutdown_handler);
  return m->shutdown.handle != NULL;
}

void xfer__shutdown_adopt(xfer_multi *m, struct xfer__conn *c,
                          xfer__time now) {
  xfer *h = m->shutdown.handle;

  c->shutdown_deadline = now + m->shutdown.timeout;
  xfer__mev_tracker_init(&c->ev, XFER__MEV_CONN, on_event);
  c->ev_live = true;
  xfer__list_insert_tail(&m->shutdown.conns, &c->idle_node);
  m->shutdown.count++;
  m->shutdown.total++;
  /* Top down: the exchange's goodbye, then each filter's (the socket:
   * our FIN, then the peer's EOF). */
  if (step(c)) {
    finish(m, c);
    return;
  }
  if (!watch(m, c))
    return;
  xfer__now_at_least(h, now);
  if (h->expiry.at[XFER__EXPIRE_SHUTDOWN] > c->shutdown_deadline)
    xfer__expiry_set(&m->timers, &h->expiry, XFER__EXPIRE_SHUTDOWN,
                     c->shutdown_deadline);
}

void xfer__shutdown_adopt_list(xfer_multi *m, struct xfer__list *evicted,
                               xfer__time now) {
  while (!xfer__list_empty(evicted)) {
    struct xfer__conn *c =
        XFER__CONTAINER_OF(evicted->next, struct xfer__conn, idle_node);
    xfer__list_remove(&c->idle_node);
    xfer__shutdown_adopt(m, c, now);
  }
}

void xfer__shutdown_drain_and_free(xfer_multi *m) {
  struct xfer__shutdown *s = &m->shutdown;

  while (s->count) {
    struct pollfd pfd[64];
    nfds_t n = 0;
    struct xfer__list *pos, *tmp;
    xfer__time now = xfer__multi_now(m), first = XFER__TIME_NEVER;

    XFER__LIST_FOREACH_SAFE(pos, tmp, &s->conns) {
      struct xfer__conn *c = XFER__CONTAINER_OF(pos, struct xfer__conn,
                                                idle_node);
      if (c->shutdown_deadline <= now) {
        finish(m, c);
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
    if (!s->count)
      break;
    poll(pfd, n, (int)((first - now + XFER__NS_PER_MS - 1) / XFER__NS_PER_MS));
    XFER__LIST_FOREACH_SAFE(pos, tmp, &s->conns) {
      struct xfer__conn *c = XFER__CONTAINER_OF(pos, struct xfer__conn,
                                                idle_node);
      if (step(c))
        finish(m, c);
    }
  }
  xfer__multi_internal_free(m, s->handle);
  s->handle = NULL;
}
