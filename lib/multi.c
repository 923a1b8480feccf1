/*
 * The multi handle: API entry points, the processing loop, timers and
 * finished-transfer messages. Time keeping follows brief rule 2 (seed
 * keeping-time.md; docs/internals/time.md): every API entry reads the
 * clock once and the loop hands that `now` from transfer to transfer.
 */
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "mem.h"
#include "multi.h"
#include "pool.h"
#include "resolve.h"
#include "transfer.h"

static bool multi_valid(const xfer_multi *m) {
  return m && m->magic == XFER__MAGIC_MULTI;
}

/* The guard of every entry that runs the multi: a valid handle, and not
 * from inside one of its callbacks. */
static xfer_mcode api_enter(const xfer_multi *m) {
  if (!multi_valid(m))
    return XFER_M_BAD_HANDLE;
  if (m->loop.in_callback)
    return XFER_M_RECURSIVE_API_CALL;
  return XFER_M_OK;
}

/* An API entry: "once per call" work (the resolver's I/O) keys on this. */
static void call_begin(xfer_multi *m) { m->loop.call_seq++; }

static xfer__time multi_now(xfer_multi *m) { return xfer__loop_now(&m->loop); }

/* The event tracking's report: the application's socket callback. */
static int report_socket(void *owner, int fd, int what, void *socketp) {
  xfer_multi *m = owner;
  int rc;

  m->stats.socket_cb_calls++;
  xfer__loop_callback_enter(&m->loop);
  rc = m->socket_cb(m, fd, what, m->socket_userp, socketp);
  xfer__loop_callback_leave(&m->loop);
  return rc;
}

static void xfer_due(struct xfer__mev_tracker *t, int fd) {
  xfer *x = t->owner;

  (void)fd;
  xfer__multi_mark_dirty(x->multi, x);
}

/* A socket of x was refused when everything was reported anew: x fails
 * at its next run, in this call when it runs transfers, else at once at
 * the timer (a remove runs none). */
static void xfer_refused(struct xfer__mev_tracker *t, int fd) {
  xfer *x = t->owner;

  if (x->pending_error == XFER_OK) {
    x->pending_error = xfer__fail(x, XFER_E_SOCKET_CALLBACK,
                                  "the socket callback refused fd %d", fd);
  }
  xfer__multi_mark_dirty(x->multi, x);
  xfer__expiry_set(&x->loop->timers, &x->expiry, XFER__EXPIRE_RUN_NOW, x->now);
}

const struct xfer__mev_ops xfer__multi_xfer_ev_ops = {
    .due = xfer_due,
    .refused = xfer_refused,
};

static xfer_code wake_ready(struct xfer__loop *loop);

static void dns_answered(xfer *x) { xfer__multi_mark_dirty(x->multi, x); }

static void dns_wake(struct xfer__dns *dns, bool due_now) {
  xfer_multi *m = XFER__CONTAINER_OF(dns, xfer_multi, dns);
  xfer *h = m->resolve_handle;

  xfer__multi_mark_dirty(m, h);
  if (due_now) /* as xfer_refused(): a remove runs nothing */
    xfer__expiry_set(&m->loop.timers, &h->expiry, XFER__EXPIRE_RUN_NOW,
                     h->now);
}

/* The internal handles: their expiries are the shutdown and attached
 * timers, and their runs hand the time to those modules. */
static enum xfer__step run_shutdown(xfer *h, unsigned due) {
  (void)due;
  xfer__shutdown_run(&h->multi->shutdown, h->now);
  return XFER__STEP_AGAIN;
}

static enum xfer__step run_attached(xfer *h, unsigned due) {
  (void)due;
  xfer__attached_run(&h->multi->attached, h->now);
  return XFER__STEP_AGAIN;
}

/* The resolver's sockets are its own (resolve.h); this handle runs it when
 * they had events or a query went out, and at c-ares' next timeout. */
static enum xfer__step run_resolve(xfer *h, unsigned due) {
  xfer__time at = xfer__resolve_run(&h->multi->dns, h->now);

  (void)due;
  if (at == XFER__TIME_NEVER)
    xfer__expire_clear(h, XFER__EXPIRE_RESOLVE);
  else
    xfer__expiry_set(&h->loop->timers, &h->expiry, XFER__EXPIRE_RESOLVE, at);
  return XFER__STEP_AGAIN;
}

static const struct xfer__handler resolve_handler = {
    .name = "resolve",
    .run = run_resolve,
};

static const struct xfer__handler shutdown_handler = {
    .name = "shutdown",
    .run = run_shutdown,
};

static const struct xfer__handler attached_handler = {
    .name = "attached",
    .run = run_attached,
};

/* An internal transfer of m (not in m->xfers, never done) whose expiries
 * drive `handler`; room for its timer node is reserved. NULL when out of
 * memory. */
static xfer *internal_new(xfer_multi *m, const struct xfer__handler *handler) {
  xfer *h = xfer_new();

  if (!h || !xfer__timer_heap_reserve(&m->loop.timers,
                                      XFER__INTERNAL_HANDLES)) {
    xfer_free(h);
    return NULL;
  }
  xfer__set_handler(h, handler, NULL);
  h->multi = m;
  h->loop = &m->loop;
  xfer__start(h, 0);
  return h;
}

/* Clears its timers and frees it (NULL: nothing). */
static void internal_free(xfer_multi *m, xfer *h) {
  if (!h)
    return;
  if (xfer__list_linked(&h->dirty_node))
    xfer__list_remove(&h->dirty_node);
  xfer__expiry_clear_all(&m->loop.timers, &h->expiry);
  h->multi = NULL;
  h->loop = NULL;
  xfer_free(h);
}

xfer_multi *xfer_multi_new(xfer_pool *pool) {
  xfer_multi *m;

  if (pool && !xfer__pool_valid(pool))
    return NULL;
  m = xfer__calloc(1, sizeof(*m));
  if (!m)
    return NULL;
  if (!pool) {
    pool = m->private_pool = xfer_pool_new(NULL);
    if (!pool) {
      xfer__free(m);
      return NULL;
    }
  }
  m->loop.pool = pool;
  xfer__pool_attach(pool, &m->pool_tally);
  m->magic = XFER__MAGIC_MULTI;
  m->timer_armed = XFER__TIME_NEVER;
  xfer__mev_init(&m->loop.ev);
  xfer__timer_heap_init(&m->loop.timers);
  m->loop.wake_ready = wake_ready;
  xfer__list_init(&m->xfers);
  xfer__list_init(&m->dirty);
  xfer__list_init(&m->msgs);
  xfer__list_init(&m->waiting);
  xfer__dns_init(&m->dns, &m->loop, dns_answered, dns_wake);
  m->shutdown_handle = internal_new(m, &shutdown_handler);
  m->attached_handle = internal_new(m, &attached_handler);
  m->resolve_handle = internal_new(m, &resolve_handler);
  if (!m->shutdown_handle || !m->attached_handle || !m->resolve_handle) {
    internal_free(m, m->shutdown_handle);
    internal_free(m, m->attached_handle);
    internal_free(m, m->resolve_handle);
    m->magic = XFER__MAGIC_DEAD;
    xfer__timer_heap_free(&m->loop.timers);
    xfer__pool_detach(pool, &m->pool_tally);
    if (m->private_pool)
      xfer_pool_destroy(m->private_pool);
    xfer__free(m);
    return NULL;
  }
  xfer__shutdown_init(&m->shutdown, &m->loop, &m->shutdown_handle->expiry);
  xfer__attached_init(&m->attached, &m->loop, &m->shutdown,
                      &m->attached_handle->expiry, &m->pool_tally);
  return m;
}

void xfer__multi_mark_dirty(xfer_multi *m, xfer *x) {
  assert(x->multi == m);
  if (x->state == XFER__STATE_RUNNING && !xfer__list_linked(&x->dirty_node))
    xfer__list_insert_tail(&m->dirty, &x->dirty_node);
}

/* Another thread granted one of our waiting transfers a connection or a
 * slot: run those that were granted. */
static void wake_event(struct xfer__mev_tracker *t, int fd, int events) {
  xfer_multi *m = t->owner;
  struct xfer__list *pos;
  uint64_t count;

  (void)events;
  if (read(fd, &count, sizeof(count)) < 0) {
    /* EAGAIN: already read; the flags below are what counts */
  }
  for (pos = m->waiting.next; pos != &m->waiting; pos = pos->next) {
    xfer *x = XFER__CONTAINER_OF(pos, xfer, http.wait_node);
    if (atomic_load_explicit(&x->http.wait.granted, memory_order_acquire))
      xfer__multi_mark_dirty(m, x);
  }
  /* Or a transfer of another thread asked for one we hold attached. */
  xfer__attached_release_requested(&m->attached, m->loop.last_now);
}

static const struct xfer__mev_ops wake_ev_ops = {.event = wake_event};

/* Makes sure the multi can be woken by other threads (an eventfd in its
 * event tracking). XFER_E_SOCKET_CALLBACK when the socket callback
 * refused it, XFER_E_OUT_OF_MEMORY: then the multi has no wake-up (and
 * tries again at the next call). */
static xfer_code wake_ready(struct xfer__loop *loop) {
  xfer_multi *m = XFER__CONTAINER_OF(loop, xfer_multi, loop);
  struct xfer__pollset ps;
  xfer_code rc;

  if (loop->wake)
    return XFER_OK;
  loop->wake = xfer__wake_new();
  if (!loop->wake)
    return XFER_E_OUT_OF_MEMORY;
  xfer__mev_tracker_init(&m->wake_ev, XFER__MEV_CONN, &wake_ev_ops, m);
  xfer__pollset_reset(&ps);
  xfer__pollset_add(&ps, loop->wake->fd, XFER_POLL_IN);
  rc = xfer__mev_assess(&loop->ev, &m->wake_ev, &ps);
  if (rc) {
    /* Not watched, it would wake nobody: no waiter may rely on it. It
     * goes (forgotten before its close), and the next transfer that may
     * wait tries again. */
    xfer__mev_tracker_done(&loop->ev, &m->wake_ev);
    xfer__mev_socket_done(&loop->ev, loop->wake->fd);
    xfer__wake_unref(loop->wake);
    loop->wake = NULL;
  }
  return rc;
}

/* Stops x's protocol work and forgets its sockets and timers. */
static void xfer_stop(xfer_multi *m, xfer *x) {
  if (x->handler->cleanup)
    x->handler->cleanup(x);
  xfer__mev_tracker_done(&m->loop.ev, &x->ev);
  xfer__expiry_clear_all(&m->loop.timers, &x->expiry);
  if (xfer__list_linked(&x->dirty_node))
    xfer__list_remove(&x->dirty_node);
}

static void xfer_finish(xfer_multi *m, xfer *x, xfer_code result) {
  xfer__stamp(x, XFER__PHASE_TOTAL);
  x->state = XFER__STATE_DONE;
  xfer_stop(m, x);
  x->result = result; /* what xfer_get_result() says: the message's */
  x->msg.msg = XFER_MSG_DONE;
  x->msg.x = x;
  x->msg.result = result;
  xfer__list_insert_tail(&m->msgs, &x->msg_node);
  m->num_msgs++;
  m->running--;
  m->stats.xfers_done++;
}

/* The sockets x's handler wants watched now, and how. */
static void wanted_pollset(xfer *x, struct xfer__pollset *ps) {
  xfer__pollset_reset(ps);
  if (x->handler->pollset)
    x->handler->pollset(x, ps);
}

/* Tracks ps as x's sockets (multi_ev reports what changed), then tells
 * the handler they are tracked. */
static xfer_code track(xfer_multi *m, xfer *x, const struct xfer__pollset *ps) {
  xfer_code rc = xfer__mev_assess(&m->loop.ev, &x->ev, ps);

  if (rc == XFER_OK && x->handler->assessed)
    x->handler->assessed(x);
  return rc;
}

static void xfer_run(xfer_multi *m, xfer *x) {
  unsigned due = x->due;
  enum xfer__step st;

  if (x->stamps[XFER__PHASE_QUEUE] == XFER__TIME_NEVER)
    xfer__stamp(x, XFER__PHASE_QUEUE);
  x->due = 0;
  m->stats.xfers_run++;
  st = x->pending_error ? xfer__step_failed(x, x->pending_error)
                        : x->handler->run(x, due);
  if (st == XFER__STEP_AGAIN) {
    struct xfer__pollset ps;
    xfer_code assessed;

    wanted_pollset(x, &ps);
    assessed = track(m, x, &ps);
    if (assessed == XFER_OK)
      return;
    st = assessed == XFER_E_SOCKET_CALLBACK
             ? xfer__step_fail(x, assessed,
                               "the socket callback refused fd %d",
                               m->loop.ev.refused_fd)
             : xfer__step_fail(x, assessed,
                               "out of memory while tracking sockets");
  }
  assert(st == XFER__STEP_DONE || st == XFER__STEP_FAILED);
  xfer_finish(m, x, st == XFER__STEP_DONE ? XFER_OK : x->failure);
}

/* Marks every transfer whose deadline has passed, with the expiries that
 * fired. O(log n) per due transfer; nothing when none is due. */
static void collect_due(xfer_multi *m, xfer__time now) {
  struct xfer__timer_node *top;

  while ((top = xfer__timer_heap_top(&m->loop.timers)) &&
         top->deadline <= now) {
    xfer *x = XFER__CONTAINER_OF(top, xfer, expiry.node);
    x->due |= xfer__expiry_take_due(&m->loop.timers, &x->expiry, now);
    xfer__multi_mark_dirty(m, x);
  }
}

/*
 * The processing loop (brief rule 2): each transfer's clock is advanced to
 * at least the loop's `now`, and a transfer that advanced its own passes
 * it on. After every XFER__CLOCK_REFRESH_EVERY transfers the clock is read
 * again. Returns the loop's final `now`.
 */
static xfer__time run_dirty(xfer_multi *m, xfer__time now) {
  unsigned ran = 0;

  while (!xfer__list_empty(&m->dirty)) {
    xfer *x = XFER__CONTAINER_OF(m->dirty.next, xfer, dirty_node);

    xfer__list_remove(&x->dirty_node);
    xfer__now_at_least(x, now);
    xfer_run(m, x);
    if (x->now > now)
      now = x->now;
    if (++ran % XFER__CLOCK_REFRESH_EVERY == 0) {
      xfer__time fresh = multi_now(m);
      if (fresh > now)
        now = fresh;
    }
  }
  return now;
}

/*
 * No deadline is left while transfers run: a timer still armed is told
 * -1. Left to fire, it would find nothing due, and until it fired its
 * application's every wait would arm a kernel timer (epoll_wait with a
 * timeout: about 0.5 us a wait in tests/bench), where a busy multi waits
 * about once a request. At most once per XFER__TIMER_STOP_EVERY_MS
 * (multi.h), so deadlines that come and go with every request cost no
 * more than that; a timer not stopped fires and finds nothing. An idle
 * multi's timer is left to fire: it waits seldom, and telling -1 there
 * would double the tellings of an application that runs one transfer
 * after the other, each with a deadline.
 */
static xfer_mcode stop_timer(xfer_multi *m, xfer__time now) {
  int rc;

  if (m->timer_armed == XFER__TIME_NEVER || now < m->timer_stop_after)
    return XFER_M_OK;
  m->stats.timer_cb_calls++;
  xfer__loop_callback_enter(&m->loop);
  rc = m->timer_cb(m, -1, m->timer_userp);
  xfer__loop_callback_leave(&m->loop);
  if (rc) /* still armed, as far as we know: the next call tells it again */
    return XFER_M_TIMER_CALLBACK;
  m->timer_armed = XFER__TIME_NEVER;
  m->timer_held = false;
  m->timer_stop_after = now + XFER__TIMER_STOP_EVERY_MS * XFER__NS_PER_MS;
  return XFER_M_OK;
}

/*
 * Tells the timer callback when the earliest deadline is earlier than the
 * one the application's timer is armed for (or none is armed). A deadline
 * that moved later is not told: the armed timer fires, finds nothing due,
 * and the next deadline is told then; one that went away, leaving none
 * while transfers run, is stop_timer()'s. Deadlines move
 * later on nearly every request (a connection's attach hold, a transfer's
 * timeout), and an application whose timer is a timerfd or a libuv timer
 * pays a system call or a heap update for each telling; a spurious firing
 * now and then costs less.
 */
static xfer_mcode update_timer(xfer_multi *m, xfer__time now) {
  struct xfer__timer_node *top = xfer__timer_heap_top(&m->loop.timers);
  xfer__time deadline = top ? top->deadline : XFER__TIME_NEVER;
  long timeout_ms;
  int rc;

  if (!m->timer_cb)
    return XFER_M_OK;
  if (!top && m->running)
    return stop_timer(m, now);
  if (deadline >= m->timer_armed)
    return XFER_M_OK;
  m->timer_armed = deadline;
  if (deadline <= now)
    timeout_ms = 0;
  else /* rounded up, so the timer never fires before the deadline */
    timeout_ms = (long)((deadline - now + XFER__NS_PER_MS - 1) /
                        XFER__NS_PER_MS);
  m->stats.timer_cb_calls++;
  xfer__loop_callback_enter(&m->loop);
  rc = m->timer_cb(m, timeout_ms, m->timer_userp);
  xfer__loop_callback_leave(&m->loop);
  if (rc) /* no timer was armed: the next call tells it again */
    m->timer_armed = XFER__TIME_NEVER;
  else
    m->timer_held = true;
  return rc ? XFER_M_TIMER_CALLBACK : XFER_M_OK;
}

/* The end of every call that changes what is due: the attached
 * connections' hold ends (attached.h: a busy multi's need no deadline),
 * then the application's timer. */
static xfer_mcode settle(xfer_multi *m, xfer__time now) {
  xfer__attached_settle(&m->attached, now, m->running > 0);
  return update_timer(m, now);
}

/* The common end of the calls that run transfers. */
static xfer_mcode run_and_leave(xfer_multi *m, xfer__time now, int *running) {
  xfer__mev_resync(&m->loop.ev);
  collect_due(m, now);
  now = run_dirty(m, now);
  if (running)
    *running = (int)m->running;
  return settle(m, now);
}

xfer_mcode xfer_multi_socket_action(xfer_multi *m, int fd, int events,
                                    int *running) {
  xfer_mcode rc = api_enter(m);
  xfer__time now;

  if (rc)
    return rc;
  call_begin(m);
  now = multi_now(m);
  m->stats.wakeups++;
  if (fd == XFER_SOCKET_TIMEOUT)
    m->timer_armed = XFER__TIME_NEVER; /* the application's timer fired */
  else if (xfer__mev_expire_xfers(&m->loop.ev, fd))
    xfer__mev_dispatch_conns(&m->loop.ev, fd, events);
  return run_and_leave(m, now, running);
}

xfer_mcode xfer_multi_socket_timeout(xfer_multi *m, int *running) {
  return xfer_multi_socket_action(m, XFER_SOCKET_TIMEOUT, 0, running);
}

xfer_mcode xfer_multi_perform(xfer_multi *m, int *running) {
  xfer_mcode rc = api_enter(m);
  struct xfer__list *pos;
  xfer__time now;

  if (rc)
    return rc;
  call_begin(m);
  now = multi_now(m);
  m->stats.wakeups++;
  /* An application may perform from its timer instead of the timeout
   * action, and a timer may fire a little early (libuv counts from the
   * start of its loop's turn): whether the one told still stands is not
   * known here, so the earliest deadline is told again after the run
   * (one timer callback a perform; the timeout action keeps the
   * coalescing). */
  m->timer_armed = XFER__TIME_NEVER;
  /* Everything runs: the resolver too, which then looks at its sockets
   * itself (an application may perform without polling). */
  if (xfer__resolve_busy(&m->dns))
    xfer__multi_mark_dirty(m, m->resolve_handle);
  for (pos = m->xfers.next; pos != &m->xfers; pos = pos->next)
    xfer__multi_mark_dirty(m, XFER__CONTAINER_OF(pos, xfer, multi_node));
  return run_and_leave(m, now, running);
}

xfer_mcode xfer_multi_poll(xfer_multi *m, int timeout_ms, int *numfds) {
  xfer_mcode rc = api_enter(m);
  struct xfer__timer_node *top;
  size_t count;
  int ready;

  if (rc)
    return rc;
  if (timeout_ms < 0)
    return XFER_M_BAD_ARGUMENT;
  if (m->pollfds_len < m->loop.ev.count) {
    struct pollfd *pfds = xfer__realloc(m->pollfds,
                                        m->loop.ev.count * sizeof(*pfds));
    if (!pfds)
      return XFER_M_OUT_OF_MEMORY;
    m->pollfds = pfds;
    m->pollfds_len = m->loop.ev.count;
  }
  count = xfer__mev_pollfds(&m->loop.ev, m->pollfds, m->pollfds_len);

  /* The wait ends at the earliest deadline, measured from the last clock
   * reading: perform() has just read it in the usual perform/poll loop. */
  top = xfer__timer_heap_top(&m->loop.timers);
  if (top) {
    xfer__time left = top->deadline - m->loop.last_now;
    int64_t left_ms = left <= 0 ? 0 : (left + XFER__NS_PER_MS - 1) /
                                          XFER__NS_PER_MS;
    if (left_ms < timeout_ms)
      timeout_ms = (int)left_ms;
  }
  if (!xfer__list_empty(&m->dirty))
    timeout_ms = 0;

  ready = poll(m->pollfds, (nfds_t)count, timeout_ms);
  if (ready < 0 && errno != EINTR)
    return XFER_M_POLL_FAILED;
  if (ready < 0)
    ready = 0;
  call_begin(m);
  multi_now(m); /* the return of poll is an API entry */
  m->stats.wakeups++;
  for (size_t i = 0; i < count && ready > 0; i++) {
    short re = m->pollfds[i].revents;
    int events = ((re & POLLIN) ? XFER_CSELECT_IN : 0) |
                 ((re & POLLOUT) ? XFER_CSELECT_OUT : 0) |
                 ((re & (POLLERR | POLLHUP | POLLNVAL)) ? XFER_CSELECT_ERR : 0);
    if (events && xfer__mev_expire_xfers(&m->loop.ev, m->pollfds[i].fd))
      xfer__mev_dispatch_conns(&m->loop.ev, m->pollfds[i].fd, events);
  }
  if (numfds)
    *numfds = ready;
  return XFER_M_OK;
}

/* The first run of x inside the add, when its handler can make it without
 * anything the application would hear of (xfer__handler.start_early):
 * then no 0 ms timer and no timeout action are needed to send a request
 * on a connection this multi holds. true when x now waits for IN on a
 * socket already watched for IN, its pollset tracked; false: x runs (or
 * goes on) at the 0 ms timer. */
static bool start_in_add(xfer_multi *m, xfer *x) {
  struct xfer__pollset ps;
  enum xfer__early early;

  /* A socket callback set since the last call hears every socket anew
   * (at the resync below): the start waits for the timer then. */
  if (!x->handler->start_early || m->loop.ev.resync)
    return false;
  early = x->handler->start_early(x);
  if (early == XFER__EARLY_NO)
    return false;
  m->stats.xfers_run++;
  if (early == XFER__EARLY_DEFERRED)
    return false;
  if (early == XFER__EARLY_TRACKED) /* x's one use: {fd, IN} */
    return !m->socket_cb ||
           xfer__mev_reported(&m->loop.ev, x->ev.uses[0].fd) == XFER_POLL_IN;
  wanted_pollset(x, &ps);
  /* Tracking it here must tell the application nothing: IN on one socket
   * already reported as IN. A stack that wants more (a filter that must
   * write to read) is tracked at the timer run, as is one that ran out of
   * memory tracking (no callback ran: the socket was reported already). */
  if (ps.count != 1 || ps.want[0] != XFER_POLL_IN ||
      (m->socket_cb &&
       xfer__mev_reported(&m->loop.ev, ps.fd[0]) != XFER_POLL_IN))
    return false;
  return track(m, x, &ps) == XFER_OK;
}

xfer_mcode xfer_multi_add(xfer_multi *m, xfer *x) {
  xfer_mcode rc = api_enter(m);
  xfer__time now;

  if (rc)
    return rc;
  if (!xfer__valid(x))
    return XFER_M_BAD_XFER_HANDLE;
  if (x->multi)
    return XFER_M_ADDED_ALREADY;
  /* Room in the heap now means no timer operation can fail later (one
   * node per transfer and one per internal handle). */
  if (!xfer__timer_heap_reserve(&m->loop.timers,
                                m->num_xfers + 1 + XFER__INTERNAL_HANDLES))
    return XFER_M_OUT_OF_MEMORY;
  call_begin(m);
  now = multi_now(m);
  x->multi = m;
  x->loop = &m->loop;
  xfer__start(x, now);
  xfer__list_insert_tail(&m->xfers, &x->multi_node);
  m->num_xfers++;
  m->running++;
  m->stats.xfers_added++;
  if (!start_in_add(m, x))
    xfer__expiry_set(&m->loop.timers, &x->expiry, XFER__EXPIRE_RUN_NOW,
                     x->now);
  xfer__mev_resync(&m->loop.ev);
  /* No settle(): the add's transfer brings the next call (it waits for
   * IN on a socket, or for the 0 ms timer), which settles the holds. */
  return update_timer(m, now);
}

/* Takes x out of m, done or not (`why`: what stopped it, for one that
 * had not finished). */
static void xfer_detach(xfer_multi *m, xfer *x, const char *why) {
  if (x->state == XFER__STATE_RUNNING) {
    xfer_stop(m, x);
    m->running--;
    x->result = xfer__fail(x, XFER_E_STOPPED, "%s before it finished", why);
  }
  if (xfer__list_linked(&x->msg_node)) {
    xfer__list_remove(&x->msg_node);
    m->num_msgs--;
  }
  xfer__list_remove(&x->multi_node);
  m->num_xfers--;
  x->multi = NULL;
  x->loop = NULL;
  x->state = XFER__STATE_IDLE;
}

xfer_mcode xfer_multi_remove(xfer_multi *m, xfer *x) {
  xfer_mcode rc = api_enter(m);
  xfer__time now;

  if (rc)
    return rc;
  if (!xfer__valid(x))
    return XFER_M_BAD_XFER_HANDLE;
  if (x->multi != m)
    return XFER_M_NOT_ADDED;
  if (x->state == XFER__STATE_DONE) {
    /* Finished: its sockets and timers went when it ended, so nothing
     * here depends on time, and no clock is read: the usual remove and
     * re-add of a finished handle costs no read. */
    xfer_detach(m, x, NULL);
    return XFER_M_OK;
  }
  call_begin(m);
  now = multi_now(m);
  xfer__now_at_least(x, now);
  xfer_detach(m, x, "removed from its multi");
  xfer__mev_resync(&m->loop.ev);
  return settle(m, now);
}

xfer_mcode xfer_multi_destroy(xfer_multi *m) {
  xfer_mcode rc;
  xfer__time now;

  if (!m)
    return XFER_M_OK;
  rc = api_enter(m);
  if (rc)
    return rc;
  /* The call's one reading, before the transfers stop: what they give
   * back (a connection, a grant) is idle from now, not from their last
   * run. */
  now = multi_now(m);
  while (!xfer__list_empty(&m->xfers)) {
    xfer *x = XFER__CONTAINER_OF(m->xfers.next, xfer, multi_node);
    xfer__now_at_least(x, now);
    xfer_detach(m, x, "its multi was destroyed");
  }
  xfer__dns_cleanup(&m->dns); /* c-ares closes its sockets through
                                 socket_done */
  xfer__attached_release_all(&m->attached, now);
  xfer__shutdown_drain(&m->shutdown); /* bounded by the shutdown timeout */
  internal_free(m, m->attached_handle);
  internal_free(m, m->shutdown_handle);
  internal_free(m, m->resolve_handle);
  m->attached.timer = m->shutdown.timer = NULL; /* their expiries are gone */
  if (m->loop.wake) { /* REMOVE first; the last reference closes the fd */
    xfer__mev_tracker_done(&m->loop.ev, &m->wake_ev);
    xfer__mev_socket_done(&m->loop.ev, m->loop.wake->fd);
    xfer__wake_unref(m->loop.wake);
  }
  xfer__mev_cleanup(&m->loop.ev);
  if (m->timer_cb && m->timer_held) {
    m->stats.timer_cb_calls++;
    xfer__loop_callback_enter(&m->loop);
    m->timer_cb(m, -1, m->timer_userp);
    xfer__loop_callback_leave(&m->loop);
  }
  xfer__timer_heap_free(&m->loop.timers);
  xfer__free(m->pollfds);
  xfer__free(m->loop.recv_buf);
  xfer__pool_detach(m->loop.pool, &m->pool_tally);
  if (m->private_pool)
    xfer_pool_destroy(m->private_pool);
  m->magic = XFER__MAGIC_DEAD;
  xfer__free(m);
  return XFER_M_OK;
}

xfer_mcode xfer_multi_set_socket_cb(xfer_multi *m, xfer_socket_cb cb,
                                    void *userp) {
  xfer_mcode rc = api_enter(m);

  if (rc)
    return rc;
  m->socket_cb = cb;
  m->socket_userp = userp;
  xfer__mev_set_report(&m->loop.ev, cb ? report_socket : NULL, m);
  return XFER_M_OK;
}

xfer_mcode xfer_multi_set_timer_cb(xfer_multi *m, xfer_timer_cb cb,
                                   void *userp) {
  xfer_mcode rc = api_enter(m);

  if (rc)
    return rc;
  if (cb == m->timer_cb && userp == m->timer_userp)
    return XFER_M_OK; /* the same: what it armed stays its own */
  m->timer_cb = cb;
  m->timer_userp = userp;
  m->timer_armed = XFER__TIME_NEVER; /* the new callback armed nothing yet */
  m->timer_held = false;
  return XFER_M_OK;
}

xfer_mcode xfer_multi_assign(xfer_multi *m, int fd, void *socketp) {
  if (!multi_valid(m))
    return XFER_M_BAD_HANDLE;
  return xfer__mev_assign(&m->loop.ev, fd, socketp);
}

const xfer_msg *xfer_multi_info_read(xfer_multi *m, int *left) {
  xfer *x;

  if (left)
    *left = 0;
  if (!multi_valid(m) || xfer__list_empty(&m->msgs))
    return NULL;
  x = XFER__CONTAINER_OF(m->msgs.next, xfer, msg_node);
  xfer__list_remove(&x->msg_node);
  m->num_msgs--;
  if (left)
    *left = (int)m->num_msgs;
  return &x->msg;
}

xfer_mcode xfer_multi_get_stats(xfer_multi *m, xfer_multi_stats *out) {
  if (!multi_valid(m))
    return XFER_M_BAD_HANDLE;
  if (!out)
    return XFER_M_BAD_ARGUMENT;
  *out = m->stats;
  out->clock_reads = m->loop.clock_reads;
  out->shutdowns = m->shutdown.total;
  out->shutting_down = m->shutdown.count;
  out->sockets_tracked = m->loop.ev.count;
  out->running = m->running;
  return XFER_M_OK;
}

xfer_mcode xfer_multi_set_dns_servers(xfer_multi *m, const char *servers) {
  xfer_mcode rc = api_enter(m);
  char *copy = NULL;

  if (rc)
    return rc;
  /* Once a lookup was tried (even one that failed), the resolver's
   * settings are fixed; a list c-ares would refuse is refused here. */
  if (m->dns.used || (servers && !xfer__dns_servers_valid(servers)))
    return XFER_M_BAD_ARGUMENT;
  if (servers) {
    size_t n = strlen(servers) + 1;
    if (!(copy = xfer__malloc(n)))
      return XFER_M_OUT_OF_MEMORY;
    memcpy(copy, servers, n);
  }
  xfer__free(m->dns.servers);
  m->dns.servers = copy;
  return XFER_M_OK;
}

xfer_mcode xfer_multi_set_dns_timeout(xfer_multi *m, long timeout_ms,
                                      int tries) {
  xfer_mcode rc = api_enter(m);

  if (rc)
    return rc;
  if (m->dns.used || timeout_ms <= 0 || timeout_ms > 600000 || tries <= 0)
    return XFER_M_BAD_ARGUMENT;
  m->dns.timeout_ms = (int)timeout_ms;
  m->dns.tries = tries;
  return XFER_M_OK;
}
