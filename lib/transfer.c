/*
 * The transfer handle: life cycle, its own clock, the timeline and the
 * error detail; and the HTTP sequence that runs it (init, wait, resolve,
 * connect, exchange, done), with redirects and retries. The request and
 * response are the exchange's (exchange_h1.c).
 */
#include "common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "attached.h"
#include "conn.h"
#include "multi.h"
#include "pool.h"
#include "shutdown.h"
#include "transfer.h"

bool xfer__valid(const xfer *x) { return x && x->magic == XFER__MAGIC_XFER; }

/* A transfer as xfer_new() gives it: every option at its default, no
 * result. x is zeroed. */
static void init_fresh(xfer *x) {
  x->magic = XFER__MAGIC_XFER;
  x->state = XFER__STATE_IDLE;
  x->handler = &xfer__http_handler;
  x->now = 0;
  for (size_t i = 0; i < XFER__PHASE_COUNT; i++)
    x->stamps[i] = XFER__TIME_NEVER;
  x->stamped = 0;
  xfer__expiry_init(&x->expiry);
  xfer__mev_tracker_init(&x->ev, XFER__MEV_XFER, &xfer__multi_xfer_ev_ops, x);
  xfer__list_init(&x->multi_node);
  xfer__list_init(&x->dirty_node);
  xfer__list_init(&x->msg_node);
  x->opts.read_size = -1;
  x->opts.gen = 1;
  xfer__list_init(&x->http.resolve.waiter_node);
  xfer__list_init(&x->http.wait_node);
  xfer__waiter_init(&x->http.wait);
}

/* Frees what x holds: its options' copies and what its last run left. */
static void release(xfer *x) {
  xfer__http_free(x);
  xfer__url_free(&x->opts.url);
  xfer__buf_free(&x->opts.headers);
  xfer__free(x->opts.body);
}

xfer *xfer_new(void) {
  xfer *x = xfer__calloc(1, sizeof(*x));

  if (x)
    init_fresh(x);
  return x;
}

xfer_code xfer_reset(xfer *x) {
  if (!xfer__valid(x))
    return XFER_E_BAD_HANDLE;
  if (x->multi)
    return XFER_E_IN_USE;
  release(x);
  memset(x, 0, sizeof(*x));
  init_fresh(x);
  return XFER_OK;
}

xfer_code xfer_free(xfer *x) {
  if (!x)
    return XFER_OK;
  if (!xfer__valid(x))
    return XFER_E_BAD_HANDLE;
  if (x->multi)
    return XFER_E_IN_USE;
  release(x);
  x->magic = XFER__MAGIC_DEAD;
  xfer__free(x);
  return XFER_OK;
}

xfer_code xfer_set_private(xfer *x, void *ptr) {
  if (!xfer__valid(x))
    return XFER_E_BAD_HANDLE;
  x->app_private = ptr;
  return XFER_OK;
}

void *xfer_get_private(const xfer *x) {
  return xfer__valid(x) ? x->app_private : NULL;
}

const char *xfer_get_error_detail(const xfer *x) {
  return xfer__valid(x) ? x->detail : "";
}

xfer_code xfer_get_timeline(const xfer *x, xfer_timeline *out) {
  int64_t *fields[XFER__PHASE_COUNT];

  if (!xfer__valid(x))
    return XFER_E_BAD_HANDLE;
  if (!out)
    return XFER_E_BAD_ARGUMENT;
  fields[XFER__PHASE_QUEUE] = &out->queue_us;
  fields[XFER__PHASE_NAMELOOKUP] = &out->namelookup_us;
  fields[XFER__PHASE_CONNECT] = &out->connect_us;
  fields[XFER__PHASE_APPCONNECT] = &out->appconnect_us;
  fields[XFER__PHASE_PRETRANSFER] = &out->pretransfer_us;
  fields[XFER__PHASE_STARTTRANSFER] = &out->starttransfer_us;
  fields[XFER__PHASE_TOTAL] = &out->total_us;
  for (size_t i = 0; i < XFER__PHASE_COUNT; i++)
    *fields[i] = x->stamps[i] == XFER__TIME_NEVER
                     ? -1
                     : (x->stamps[i] - x->added_at) / XFER__NS_PER_US;
  return XFER_OK;
}

xfer_code xfer__set_handler(xfer *x, const struct xfer__handler *h,
                            void *ctx) {
  if (!xfer__valid(x))
    return XFER_E_BAD_HANDLE;
  if (x->multi)
    return XFER_E_IN_USE;
  x->handler = h ? h : &xfer__http_handler;
  x->handler_ctx = ctx;
  return XFER_OK;
}

void xfer__start(xfer *x, xfer__time now) {
  xfer__now_at_least(x, now);
  x->state = XFER__STATE_RUNNING;
  x->added_at = x->now;
  for (size_t i = 0; i < XFER__PHASE_COUNT; i++)
    x->stamps[i] = XFER__TIME_NEVER;
  x->stamped = 0;
  x->due = 0;
  x->pending_error = XFER_OK;
  x->failure = XFER_OK;
  x->detail[0] = '\0';
  memset(&x->msg, 0, sizeof(x->msg));
  x->http.state = XFER__HTTP_INIT;
  x->http.started = false;
  x->http.fresh_only = false;
  x->http.saw_dead = false;
  x->http.retries = 0;
  x->http.got_byte = false;
  x->http.stray_bytes = false;
  x->http.receiving = false;
  /* A send that failed inside the last add is that run's, said at its
   * first step; a run stopped before it must not hand it on. */
  x->http.early = false;
  x->http.early_deferred = false;
  x->http.early_err = 0;
  x->http.exchange = NULL;
  x->http.wait_expired = false;
  x->http.url = &x->opts.url;
  x->http.conn_id = 0;
  x->http.reused = false;
  x->http.redirects = 0;
  x->http.bytes_sent = 0;
  x->http.bytes_received = 0;
  x->result = XFER_OK;
  x->http.resp.headers_done = false;
  x->http.resp.status = 0;
}

void xfer__now_update(xfer *x, const xfer *from) {
  assert(x->multi && x->multi == from->multi);
  xfer__now_at_least(x, from->now);
  xfer__multi_mark_dirty(x->multi, x);
}

void xfer__stamp(xfer *x, enum xfer__phase p) {
  unsigned i = x->stamped;
  xfer__time previous = i ? x->stamps[i - 1] : x->added_at;

  assert(p < XFER__PHASE_COUNT);
  /* Phases that did not happen take the previous phase's time; phases
   * after p are not reached (again, after a retry) yet. */
  for (; i < (unsigned)p; i++)
    x->stamps[i] = previous;
  x->stamps[p] = x->now;
  for (i = (unsigned)p + 1; i < x->stamped; i++)
    x->stamps[i] = XFER__TIME_NEVER;
  x->stamped = (unsigned)p + 1;
}

void xfer__expire_in(xfer *x, enum xfer__expire_id id, xfer__time delay_ns) {
  assert(x->multi);
  xfer__expiry_set(&x->loop->timers, &x->expiry, id,
                   xfer__time_after(x->now, delay_ns));
}

void xfer__expire_clear(xfer *x, enum xfer__expire_id id) {
  assert(x->multi);
  xfer__expiry_clear(&x->loop->timers, &x->expiry, id);
}

xfer_code xfer__fail(xfer *x, xfer_code code, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(x->detail, sizeof(x->detail), fmt, ap);
  va_end(ap);
  return code;
}

enum xfer__step xfer__step_fail(xfer *x, xfer_code code, const char *fmt,
                                ...) {
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(x->detail, sizeof(x->detail), fmt, ap);
  va_end(ap);
  x->failure = code;
  return XFER__STEP_FAILED;
}

/* ------------------------------------------------------------------------
 * The HTTP sequence: init -> (wait) -> resolve -> connect -> exchange,
 * and back to init for a redirect hop or a retry. Every step is
 * non-blocking; a state change stamps the timeline with the transfer's
 * own `now` (rule 2). The exchange (exchange.h) does the request and the
 * response; this file finds and keeps connections.
 */

/* Connections the pool evicted while serving this transfer are closed
 * gracefully by this transfer's multi. */
static void shut_down_evicted(xfer *x, struct xfer__list *evicted) {
  xfer__shutdown_adopt_list(&x->multi->shutdown, evicted, x->now);
}

/* Drops the connection: closed (it broke or may not be reused), `why`
 * for the pool's statistics. */
static void conn_drop(xfer *x, enum xfer__close_reason why) {
  struct xfer__http *h = &x->http;
  struct xfer__list evicted;

  if (!h->conn)
    return;
  xfer__attached_untrack(&x->multi->attached, h->conn);
  xfer__list_init(&evicted);
  /* Closed, then its slots pass on, which may close an idle one for
   * room (socket_done is a no-op for a socket this multi never tracked). */
  xfer__pool_close(x->loop->pool, h->conn, why, &x->loop->ev, &evicted);
  h->conn = NULL;
  shut_down_evicted(x, &evicted);
}

/* A connection whose response completed stays attached to this multi for
 * its next transfer, or goes to the pool after its socket left this
 * multi's tracking (REMOVE first: rule 4), or is closed when the server
 * does not keep it alive. `used`: it served a request (its idle time
 * starts now); else it goes back as it came, its idle time its own. */
static void give_back(xfer *x, struct xfer__conn *c, bool used) {
  struct xfer__list evicted;
  xfer__time last_used = c->last_used;
  bool kept = xfer__attached_keep(&x->multi->attached, c, &x->ev, x->now);

  if (!used) /* kept or refused, still this thread's alone */
    c->last_used = last_used;
  if (kept)
    return;
  xfer__attached_untrack(&x->multi->attached, c);
  xfer__mev_socket_done(&x->loop->ev, c->fd);
  xfer__list_init(&evicted);
  if (used)
    xfer__pool_return(x->loop->pool, c, x->now, &evicted);
  else
    xfer__pool_give_back(x->loop->pool, c, x->now, &evicted);
  shut_down_evicted(x, &evicted);
}

static void conn_release(xfer *x, bool keep_alive) {
  struct xfer__http *h = &x->http;

  if (!h->conn)
    return;
  if (!keep_alive) {
    conn_drop(x, XFER__CLOSE_PEER);
    return;
  }
  h->conn->requests++;
  give_back(x, h->conn, true);
  h->conn = NULL;
}

static const char *method_of(const xfer *x) {
  return x->opts.method[0] ? x->opts.method : "GET";
}

int64_t xfer__body_length(const xfer *x) {
  if (!x->http.send_body)
    return -1;
  if (x->opts.has_body)
    return (int64_t)x->opts.body_len;
  return x->opts.read_size >= 0 ? x->opts.read_size : -2;
}

/* The connection is ready: the exchange starts on it. */
static enum xfer__step start_exchange(xfer *x) {
  struct xfer__http *h = &x->http;

  h->exchange = &xfer__h1_exchange;
  h->receiving = false;
  xfer__stamp(x, XFER__PHASE_PRETRANSFER);
  h->state = XFER__HTTP_EXCHANGE;
  return h->exchange->start(x);
}

/* A reused (or handed over) connection: the request goes out on it. */
static enum xfer__step use_conn(xfer *x, struct xfer__conn *c) {
  struct xfer__http *h = &x->http;

  h->conn = c;
  h->reused = true;
  h->reused_idle = x->now - c->last_used; /* what the server saw */
  h->conn_id = c->id;
  return start_exchange(x);
}

/* A slot is ours: resolve and connect a new connection. */
static enum xfer__step open_new(xfer *x) {
  struct xfer__http *h = &x->http;
  const struct xfer__url *u = h->url;
  xfer_code rc;

  h->reused = false;
  xfer__expire_in(x, XFER__EXPIRE_CONNECT,
                  xfer__ms_to_ns(x->opts.connect_timeout_ms
                                     ? x->opts.connect_timeout_ms
                                     : XFER__DEFAULT_CONNECT_TIMEOUT_MS));
  rc = xfer__resolve_start(&x->multi->dns, &h->resolve, x, u->host, u->port,
                           x->opts.ip_version, x->now);
  if (rc)
    return xfer__step_fail(x, rc, "%s", h->resolve.detail);
  h->state = XFER__HTTP_RESOLVE;
  return XFER__STEP_NEXT;
}

/* What a checkout (or a grant) gave: a connection, or slots for a new
 * one (after closing the one it replaces, which no multi tracks). */
static enum xfer__step take_checkout(xfer *x, enum xfer__acquire got,
                                     struct xfer__conn *c) {
  switch (got) {
  case XFER__ACQUIRE_CONN:
    return use_conn(x, c);
  case XFER__ACQUIRE_REPLACE:
    xfer__conn_close(c, NULL);
    return open_new(x);
  case XFER__ACQUIRE_OPEN:
    return open_new(x);
  default:
    return xfer__step_fail(x, XFER_E_OUT_OF_MEMORY, "out of memory");
  }
}

/* Rule 6: a request that failed on a reused connection before any
 * response byte is sent again on a fresh one, when sending it twice is
 * harmless (an idempotent method) and possible (no body, or a buffer). */
#define XFER__MAX_RETRIES 2

static bool idempotent(const char *method) {
  static const char *const safe[] = {"GET", "HEAD", "PUT", "DELETE",
                                     "OPTIONS"};
  for (size_t i = 0; i < XFER__ARRAY_SIZE(safe); i++)
    if (strcmp(method, safe[i]) == 0)
      return true;
  return false;
}

/* What the request's method tells, worked out when it is set (the
 * options or a redirect), not for every request. */
static void method_set(struct xfer__http *h) {
  h->idempotent = idempotent(h->method);
  h->head_request = strcmp(h->method, "HEAD") == 0;
}

/* Does this hop send a body from the read callback (which cannot be sent
 * again)? */
static bool body_streamed(const xfer *x) {
  return x->http.send_body && x->opts.read_cb;
}

/* Could the request be sent again if a reused connection died before
 * any response byte (rule 6)? */
static bool replayable(const xfer *x) {
  return x->http.idempotent && !body_streamed(x);
}

/* What the request of this hop is: its method, whether a body goes,
 * the framing headers checked, the pool key. NEXT, or FAILED. */
static enum xfer__step prepare_request(xfer *x) {
  struct xfer__http *h = &x->http;
  const struct xfer__url *u = h->url;

  if (!u->block)
    return xfer__step_fail(x, XFER_E_NO_URL,
                           "the transfer has no URL to fetch");
  /* The method and body of the options are looked at once per change of
   * options, as the key below. */
  if (h->redirects == 0 && h->method_gen != x->opts.gen) {
    const char *method = method_of(x); /* shorter than the buffer */
    memcpy(h->method, method, strlen(method) + 1);
    method_set(h);
    h->send_body = x->opts.has_body || x->opts.read_cb;
    if (!xfer__http1_check_framing(&x->opts.headers, xfer__body_length(x),
                                   x->detail, sizeof(x->detail)))
      return xfer__step_failed(x, XFER_E_BAD_ARGUMENT);
    h->method_gen = x->opts.gen;
  }
  /* URL, IP version and local bind cannot change while the transfer is
   * added: the key of its own URL is built once per change of options. */
  if (u == &x->opts.url && h->key_gen == x->opts.gen)
    return XFER__STEP_NEXT;
  h->key_gen = 0;
  h->key_len = xfer__conn_key(h->key, sizeof(h->key), "http", u->host,
                              u->port, x->opts.ip_version, x->opts.local_text);
  if (h->key_len >= sizeof(h->key))
    return xfer__step_fail(x, XFER_E_BAD_URL, "the host name is too long");
  h->key_hash = xfer__conn_key_hash(h->key, h->key_len);
  if (u == &x->opts.url)
    h->key_gen = x->opts.gen;
  return XFER__STEP_NEXT;
}

static enum xfer__step step_init(xfer *x) {
  struct xfer__http *h = &x->http;
  xfer_multi *m = x->multi;
  struct xfer__list evicted;
  struct xfer__conn *c = NULL;
  enum xfer__acquire got;
  enum xfer__step st = prepare_request(x);

  if (st != XFER__STEP_NEXT)
    return st;
  /* A waiter must be wakeable before it can be queued: at a limit, or for
   * a connection another multi holds attached. */
  if (xfer__pool_limited(m->loop.pool) ||
      xfer__pool_attach_hold(m->loop.pool)) {
    xfer_code rc = xfer__loop_wake_ready(&m->loop);
    if (rc == XFER_E_SOCKET_CALLBACK)
      return xfer__step_fail(x, rc,
                             "the socket callback refused the multi's wake-up "
                             "fd (an eventfd other threads write to when they "
                             "hand this multi a connection)");
    if (rc)
      return xfer__step_fail(x, rc,
                             "out of memory for the multi's wake-up fd");
  }
  h->wait.wake = m->loop.wake;
  h->wait.fresh_only = h->fresh_only;
  h->wait.replayable = replayable(x);

  /* Our own attached connection first: no lookup, no lock, no syscall. */
  if (!h->fresh_only &&
      (c = xfer__attached_take(&m->attached, h->key, h->key_len, h->key_hash,
                               h->wait.replayable, x->now, &h->saw_dead)))
    return use_conn(x, c);
  xfer__list_init(&evicted);
  got = xfer__pool_acquire(m->loop.pool, h->key, h->key_len, h->key_hash,
                           x->now, &h->wait, &c, &h->saw_dead, &evicted);
  shut_down_evicted(x, &evicted);
  if (got == XFER__ACQUIRE_WAIT) {
    xfer__list_insert_tail(&m->waiting, &h->wait_node);
    h->state = XFER__HTTP_WAIT;
    /* Waiting for another multi's attached connection: bounded on our
     * own clock, so its owner's loop holds us up at most that long. */
    if (h->wait.bounded)
      xfer__expire_in(x, XFER__EXPIRE_ATTACHED_WAIT,
                      xfer__pool_attached_wait(m->loop.pool));
    return XFER__STEP_AGAIN;
  }
  return take_checkout(x, got, c);
}

/* Queued: go on when another thread (or this one) handed us a connection
 * or slots, or, waiting for an attached one past attached_wait, with
 * slots of our own. */
static enum xfer__step step_wait(xfer *x) {
  struct xfer__http *h = &x->http;
  struct xfer__list evicted;
  struct xfer__conn *c = NULL;
  enum xfer__acquire got;

  xfer__list_init(&evicted);
  if (h->wait_expired) {
    h->wait_expired = false;
    got = xfer__pool_stop_waiting(x->loop->pool, &h->wait, x->now, &c,
                                  &h->saw_dead, &evicted);
  } else {
    got = xfer__pool_take_grant(x->loop->pool, &h->wait, x->now, &c,
                                &h->saw_dead, &evicted);
  }
  shut_down_evicted(x, &evicted);
  if (got == XFER__ACQUIRE_WAIT) {
    /* Still waiting: for a slot, or for an attached one (again, after a
     * connection handed over failed its check). Bounded anew while
     * another multi's release may be what it waits for: at its
     * destination's limit, it looks again every attached_wait. */
    if (h->wait.bounded &&
        x->expiry.at[XFER__EXPIRE_ATTACHED_WAIT] == XFER__TIME_NEVER)
      xfer__expire_in(x, XFER__EXPIRE_ATTACHED_WAIT,
                      xfer__pool_attached_wait(x->loop->pool));
    return XFER__STEP_AGAIN;
  }
  xfer__list_remove(&h->wait_node);
  xfer__expire_clear(x, XFER__EXPIRE_ATTACHED_WAIT);
  return take_checkout(x, got, c);
}

static enum xfer__step step_resolve(xfer *x) {
  struct xfer__http *h = &x->http;

  /* The answer marks the transfer dirty; the multi's resolver watches the
   * channel meanwhile (resolve.h), and the connect timeout bounds it. */
  if (!h->resolve.done)
    return XFER__STEP_AGAIN;
  if (h->resolve.result)
    return xfer__step_fail(x, h->resolve.result, "%s", h->resolve.detail);
  xfer__stamp(x, XFER__PHASE_NAMELOOKUP);
  h->conn = xfer__conn_open(h->key, h->key_len, x->now, h->resolve.addrs,
                            h->resolve.naddrs,
                            x->opts.local_text[0] ? &x->opts.local : NULL);
  if (!h->conn)
    return xfer__step_fail(x, XFER_E_OUT_OF_MEMORY, "out of memory");
  h->state = XFER__HTTP_CONNECT;
  return XFER__STEP_NEXT;
}

/* A connection that never connected: no pool slot is its own yet (the
 * transfer's waiter holds them), so it is closed alone. */
static void conn_abandon(xfer *x) {
  xfer__conn_close(x->http.conn, &x->loop->ev);
  x->http.conn = NULL;
}

static enum xfer__step step_connect(xfer *x) {
  struct xfer__http *h = &x->http;
  xfer__time next = XFER__TIME_NEVER;
  enum xfer__cf_progress p = xfer__conn_connect(
      h->conn, &x->loop->ev, x->now, &next, x->detail, sizeof(x->detail));

  if (p == XFER__CF_AGAIN) {
    if (next != XFER__TIME_NEVER)
      xfer__expiry_set(&x->loop->timers, &x->expiry,
                       XFER__EXPIRE_HAPPY_EYEBALLS, next);
    return XFER__STEP_AGAIN;
  }
  xfer__expire_clear(x, XFER__EXPIRE_HAPPY_EYEBALLS);
  if (p == XFER__CF_FAILED) {
    conn_abandon(x);
    return xfer__step_failed(x, XFER_E_CONNECT);
  }
  h->conn_id = h->conn->id; /* a connection that exists now */
  xfer__pool_opened(x->loop->pool, &h->wait, h->conn,
                    h->saw_dead || h->retries > 0);
  h->fresh_only = false; /* a retry got its new one; a redirect may reuse */
  xfer__expire_clear(x, XFER__EXPIRE_CONNECT);
  xfer__stamp(x, XFER__PHASE_CONNECT);
  return start_exchange(x);
}

/* The exchange said RETRY: a reused connection died before any response
 * byte, or held bytes that are no response (stray_bytes). The request
 * goes again on a fresh connection when that is harmless, else a clear
 * error says why not. Out of line, as follow_redirect() below. */
__attribute__((noinline)) static enum xfer__step retry_or_fail(xfer *x) {
  struct xfer__http *h = &x->http;
  bool streamed = body_streamed(x);
  bool stray = h->stray_bytes;
  int err = h->died_errno;
  const char *why_not;

  /* The server closed it after it had been idle this long: its idle
   * connections are checked before that from now on. (Stray bytes say
   * nothing of its idle time.) */
  if (!stray)
    xfer__pool_learn_died(x->loop->pool, h->conn, h->reused_idle);
  conn_drop(x, stray ? XFER__CLOSE_ERROR : XFER__CLOSE_PEER);
  h->receiving = false;
  h->stray_bytes = false;
  xfer__expire_clear(x, XFER__EXPIRE_LOW_SPEED);
  if (!streamed && h->idempotent && h->retries < XFER__MAX_RETRIES) {
    h->retries++;
    xfer__pool_count_retry(x->loop->pool);
    h->fresh_only = true;
    h->got_byte = false; /* the stray bytes were no answer */
    h->state = XFER__HTTP_INIT;
    return XFER__STEP_NEXT;
  }
  why_not = streamed     ? "its streamed body cannot be sent again"
            : h->retries ? "the retries are used up"
                         : "the server may have processed it";
  if (stray)
    return xfer__step_fail(x, XFER_E_BAD_STATUS_LINE,
                           "a reused connection held bytes that are no "
                           "response (%s); a %s request is not retried: %s",
                           h->resp.detail, h->method, why_not);
  return xfer__step_fail(x, XFER_E_PEER_CLOSED,
                         "the server closed a reused connection before "
                         "answering (%s); a %s request is not retried: %s",
                         err ? strerror(err) : "end of file", h->method,
                         why_not);
}

static bool is_redirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 ||
         status == 308;
}

/* 301/302/303 turn a POST into a GET (what browsers and curl do), 303
 * anything but HEAD; 307/308 keep the method and body. */
static bool drops_body(const struct xfer__http *h, int status) {
  return (status == 303 && !h->head_request) ||
         ((status == 301 || status == 302) && strcmp(h->method, "POST") == 0);
}

enum redirect_verdict {
  REDIRECT_NONE,          /* not one to follow: off, not a redirect, or
                             no Location */
  REDIRECT_TOO_MANY,      /* past max_redirects */
  REDIRECT_CANNOT_RESEND, /* the hop would send the streamed body again */
  REDIRECT_FOLLOW
};

/* What becomes of the response in hand as a redirect: the one decision
 * that the write path (whose body is it?) and the end of the exchange
 * both take. *location is the Location header, where one was looked for
 * (it makes the header strings). */
static enum redirect_verdict redirect_verdict(xfer *x, const char **location) {
  struct xfer__http *h = &x->http;
  int status = h->resp.status;

  *location = NULL;
  if (x->opts.max_redirects <= 0 || !is_redirect(status))
    return REDIRECT_NONE;
  /* An empty Location names no other resource (as a reference it would
   * resolve to this very URL, a loop until the limit): the 3xx is the
   * answer, as curl has it. */
  if (!(*location = xfer__http1_resp_header(&h->resp, "Location")) ||
      (*location)[strspn(*location, " \t")] == '\0')
    return REDIRECT_NONE;
  if (h->redirects >= x->opts.max_redirects)
    return REDIRECT_TOO_MANY;
  if (body_streamed(x) && !drops_body(h, status))
    return REDIRECT_CANNOT_RESEND;
  return REDIRECT_FOLLOW;
}

bool xfer__http_redirect_followed(xfer *x) {
  const char *location;

  return redirect_verdict(x, &location) == REDIRECT_FOLLOW;
}

/* "Keep-Alive: timeout=N" (RFC 2068 19.7.1.1, what Apache and nginx
 * send): the server closes idle connections after N seconds. */
static void learn_keep_alive(xfer *x) {
  const char *v = xfer__http1_resp_keep_alive(&x->http.resp);
  const char *t = v ? strstr(v, "timeout=") : NULL;
  long seconds;

  if (!t)
    return;
  seconds = strtol(t + 8, NULL, 10);
  xfer__pool_learn_keep_alive(x->loop->pool, x->http.conn, seconds);
}

/* A redirect to follow (the exchange is done): the connection goes back
 * (or is closed), and the transfer is done, or on to the next hop. Out of
 * line: inlined, its frame was set up for every response. */
__attribute__((noinline)) static enum xfer__step
follow_redirect(xfer *x, int status, bool keep) {
  struct xfer__http *h = &x->http;
  struct xfer__url next;
  xfer_code rc;
  /* Only a redirect to follow makes the header strings. */
  const char *location;
  enum redirect_verdict verdict = redirect_verdict(x, &location);

  conn_release(x, keep);
  if (!h->resp.headers_loaded)
    return xfer__step_fail(x, XFER_E_OUT_OF_MEMORY,
                           "out of memory reading the redirect's Location");
  /* Refused before anything changes: a redirect not followed is not
   * counted either. */
  switch (verdict) {
  case REDIRECT_NONE:
    return XFER__STEP_DONE;
  case REDIRECT_TOO_MANY:
    return xfer__step_fail(x, XFER_E_TOO_MANY_REDIRECTS,
                           "stopped after %d redirects (the limit)",
                           h->redirects);
  case REDIRECT_CANNOT_RESEND:
    return xfer__step_fail(x, XFER_E_CANNOT_RESEND,
                           "cannot follow a %d redirect: the streamed body "
                           "cannot be sent again",
                           status);
  case REDIRECT_FOLLOW:
    break;
  }
  rc = xfer__url_resolve(&next, h->url, location, x->detail, sizeof(x->detail));
  if (rc) { /* which hop, and where it pointed: the URL given was fine */
    char why[sizeof(x->detail)];

    memcpy(why, x->detail, sizeof(why));
    return xfer__step_fail(x, rc,
                           "cannot follow the %d redirect to '%.80s': %s",
                           status, location, why);
  }
  xfer__url_free(&h->hop);
  h->hop = next;
  h->url = &h->hop;
  h->redirects++;
  if (drops_body(h, status)) {
    snprintf(h->method, sizeof(h->method), "GET");
    method_set(h);
    h->send_body = false;
  }
  h->method_gen = 0; /* the next use of the options starts from them */
  h->state = XFER__HTTP_INIT;
  h->got_byte = false;
  return XFER__STEP_NEXT;
}

/* The exchange is done: the connection goes back (or is closed), and the
 * transfer is done, or on to a redirect hop. */
static enum xfer__step exchange_done(xfer *x) {
  struct xfer__http *h = &x->http;
  int status = h->resp.status;
  bool keep = h->exchange->keep_alive(x);

  h->receiving = false;
  xfer__expire_clear(x, XFER__EXPIRE_LOW_SPEED);
  if (keep)
    learn_keep_alive(x);
  if (x->opts.max_redirects > 0 && is_redirect(status))
    return follow_redirect(x, status, keep);
  conn_release(x, keep);
  return XFER__STEP_DONE;
}

static enum xfer__step step_exchange(xfer *x) {
  switch (x->http.exchange->run(x)) {
  case XFER__STEP_AGAIN:
    return XFER__STEP_AGAIN;
  case XFER__STEP_NEXT:
    return XFER__STEP_NEXT;
  case XFER__STEP_DONE:
    return exchange_done(x);
  case XFER__STEP_RETRY:
    return retry_or_fail(x);
  case XFER__STEP_FAILED:
  default:
    /* A connection in the middle of an exchange is in an unknown state:
     * closed, never pooled. */
    conn_drop(x, XFER__CLOSE_ERROR);
    return XFER__STEP_FAILED;
  }
}

static enum xfer__step check_timers(xfer *x, unsigned due) {
  struct xfer__http *h = &x->http;

  if (due & (1u << XFER__EXPIRE_TOTAL))
    return xfer__step_fail(x, XFER_E_TIMEOUT,
                           "the transfer took longer than %ld ms",
                           x->opts.timeout_ms);
  if ((due & (1u << XFER__EXPIRE_CONNECT)) &&
      (h->state == XFER__HTTP_RESOLVE || h->state == XFER__HTTP_CONNECT)) {
    long ms = x->opts.connect_timeout_ms ? x->opts.connect_timeout_ms
                                         : XFER__DEFAULT_CONNECT_TIMEOUT_MS;
    if (h->state == XFER__HTTP_RESOLVE)
      return xfer__step_fail(x, XFER_E_RESOLVE_TIMEOUT,
                             "resolving '%s' took longer than %ld ms",
                             h->url->host, ms);
    return xfer__step_fail(x, XFER_E_CONNECT_TIMEOUT,
                           "connecting to %s port %u took longer than %ld ms",
                           h->url->host, (unsigned)h->url->port, ms);
  }
  if ((due & (1u << XFER__EXPIRE_ATTACHED_WAIT)) &&
      h->state == XFER__HTTP_WAIT)
    h->wait_expired = true;
  if ((due & (1u << XFER__EXPIRE_LOW_SPEED)) && h->receiving) {
    uint64_t got = h->bytes_received - h->low_speed_mark;
    if (got < (uint64_t)x->opts.low_speed_bytes) {
      conn_drop(x, XFER__CLOSE_ERROR);
      return xfer__step_fail(x, XFER_E_TOO_SLOW,
                             "%llu bytes in %ld ms, below the limit of %ld",
                             (unsigned long long)got,
                             x->opts.low_speed_period_ms,
                             x->opts.low_speed_bytes);
    }
    h->low_speed_mark = h->bytes_received;
    xfer__expire_in(x, XFER__EXPIRE_LOW_SPEED,
                    xfer__ms_to_ns(x->opts.low_speed_period_ms));
  }
  return XFER__STEP_NEXT;
}

/* The first run: the total timeout counts from add. */
static void first_run(xfer *x) {
  struct xfer__http *h = &x->http;

  if (h->started)
    return;
  h->started = true;
  if (x->opts.timeout_ms > 0)
    xfer__expiry_set(&x->loop->timers, &x->expiry, XFER__EXPIRE_TOTAL,
                     xfer__time_after(x->added_at,
                                      xfer__ms_to_ns(x->opts.timeout_ms)));
}

static bool recv_buf_ready(xfer *x) {
  return x->loop->recv_buf ||
         (x->loop->recv_buf = xfer__malloc(XFER__RECV_BUF_SIZE));
}

/*
 * The start inside xfer_multi_add() (rule 2: on the add's clock reading),
 * for the common case of a busy client: the multi holds an attached
 * connection to the destination that needs no liveness check, and the
 * request goes out in one send (no body callback). The request is sent,
 * and the transfer waits for IN on a socket already watched for IN, so
 * the application hears nothing. Anything else (a check, DNS, a new
 * connection, a partial send that needs OUT, a failed send and its
 * retry) goes on at the 0 ms timer as before: nothing here tells the
 * application anything, fails or finishes the transfer.
 */
static enum xfer__early http_start_early(xfer *x) {
  struct xfer__http *h = &x->http;
  xfer_multi *m = x->multi;
  struct xfer__conn *c;
  enum xfer__step st;
  bool handed = false;

  if (x->opts.read_cb || !m->attached.count || !recv_buf_ready(x) ||
      prepare_request(x) != XFER__STEP_NEXT) {
    x->detail[0] = '\0'; /* the run at the timer says it again */
    return XFER__EARLY_NO;
  }
  c = xfer__attached_take_trusted(&m->attached, h->key, h->key_len,
                                  h->key_hash, replayable(x), x->now);
  if (!c)
    return XFER__EARLY_NO;
  /* The connection's use of its socket (IN) becomes this transfer's, which
   * wants IN once its request is out: its tracking then finds nothing to
   * change (a partial send adds OUT there). */
  if (c->ev_live && c->ev.count == 1 &&
      xfer__mev_hand_over(&m->loop.ev, &c->ev, &x->ev, c->fd, XFER_POLL_IN)) {
    xfer__attached_untrack(&m->attached, c);
    handed = true;
  }
  first_run(x);
  h->wait.wake = m->loop.wake;
  h->wait.fresh_only = false;
  h->wait.replayable = true;
  h->early = true;
  h->early_deferred = false;
  h->early_err = 0;
  st = use_conn(x, c);
  while (st == XFER__STEP_NEXT)
    st = step_exchange(x);
  h->early = false;
  if (st != XFER__STEP_AGAIN) {
    /* Only running out of memory for the request head gets here, before
     * anything was sent: the connection goes back as it was (attached
     * again, as a rule; the shared way if a waiter came meanwhile; its
     * idle time not restarted), and the run at the timer tries anew. */
    assert(st == XFER__STEP_FAILED);
    if (h->conn == c) {
      h->conn = NULL;
      give_back(x, c, false);
    }
    h->state = XFER__HTTP_INIT;
    x->detail[0] = '\0';
    return XFER__EARLY_DEFERRED;
  }
  if (h->early_deferred)
    return XFER__EARLY_DEFERRED;
  /* Waiting for IN on the connection: a socket alone wants that on c->fd,
   * the use it was handed (and the connection's own use is gone). */
  return handed && h->conn == c && x->ev.count == 1 &&
                 xfer__conn_socket_alone(c)
             ? XFER__EARLY_TRACKED
             : XFER__EARLY_WAITING;
}

static enum xfer__step http_run(xfer *x, unsigned due) {
  struct xfer__http *h = &x->http;
  enum xfer__step st;

  first_run(x);
  if (!recv_buf_ready(x))
    return xfer__step_fail(x, XFER_E_OUT_OF_MEMORY, "out of memory");
  st = check_timers(x, due);
  while (st == XFER__STEP_NEXT) {
    switch (h->state) {
    case XFER__HTTP_INIT:
      st = step_init(x);
      break;
    case XFER__HTTP_WAIT:
      st = step_wait(x);
      break;
    case XFER__HTTP_RESOLVE:
      st = step_resolve(x);
      break;
    case XFER__HTTP_CONNECT:
      st = step_connect(x);
      break;
    case XFER__HTTP_EXCHANGE:
      st = step_exchange(x);
      break;
    }
  }
  return st;
}

static void http_pollset(xfer *x, struct xfer__pollset *ps) {
  struct xfer__http *h = &x->http;

  switch (h->state) {
  case XFER__HTTP_CONNECT:
    xfer__conn_pollset(h->conn, ps, 0);
    break;
  case XFER__HTTP_EXCHANGE:
    h->exchange->pollset(x, ps);
    break;
  default:
    break;
  }
}

/* A place in a FIFO, a slot, or a grant not taken yet is passed on, so
 * a transfer timing out while it waits leaves nothing stuck. */
__attribute__((noinline)) static void cancel_wait(xfer *x) {
  struct xfer__list evicted;

  xfer__list_init(&evicted);
  xfer__pool_cancel(x->loop->pool, &x->http.wait, x->now, &evicted);
  shut_down_evicted(x, &evicted);
}

/* A connection in use was interrupted: closed, never pooled. */
__attribute__((noinline)) static void drop_interrupted(xfer *x) {
  if (x->http.state == XFER__HTTP_CONNECT)
    conn_abandon(x);
  if (x->http.conn)
    conn_drop(x, XFER__CLOSE_ERROR);
}

/* Whatever the run still holds goes. A finished transfer holds nothing:
 * the checks alone, out of line what they find. */
static void http_cleanup(xfer *x) {
  struct xfer__http *h = &x->http;

  if (xfer__list_linked(&h->wait_node))
    xfer__list_remove(&h->wait_node);
  xfer__resolve_cancel(&h->resolve);
  /* A connection still connecting holds its waiter's slots: its socket
   * closes before they pass on, so a waiter handed them (in another
   * thread, at once) never connects while the server still sees this
   * one (as xfer__pool_close() does for an open connection). */
  if (h->conn)
    drop_interrupted(x);
  if (!xfer__pool_waiter_idle(&h->wait))
    cancel_wait(x);
}

/* A connection taken attached: now that the multi tracks the transfer's
 * pollset, the connection's own tracking of the socket can go, with no
 * change the application would hear of when both want IN. */
static void http_assessed(xfer *x) {
  struct xfer__http *h = &x->http;

  if (h->conn && h->conn->ev_live)
    xfer__attached_untrack(&x->multi->attached, h->conn);
}

const struct xfer__handler xfer__http_handler = {
    .name = "http",
    .run = http_run,
    .pollset = http_pollset,
    .cleanup = http_cleanup,
    .assessed = http_assessed,
    .start_early = http_start_early,
};

void xfer__http_free(xfer *x) {
  struct xfer__http *h = &x->http;

  if (h->conn) /* not added to a multi: no tracking to tell */
    xfer__conn_close(h->conn, NULL);
  h->conn = NULL;
  xfer__url_free(&h->hop);
  xfer__buf_free(&h->h1.out);
  xfer__http1_resp_free(&h->resp);
}
