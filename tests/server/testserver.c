/*
 * Scripted HTTP/1.1 test server; see testserver.h for the script.
 *
 * Shape: one thread, one level-triggered epoll set. Each connection owns an
 * llhttp parser, an input buffer for bytes not parsed yet, an output buffer,
 * and at most one response in progress. on_message_complete pauses the
 * parser, so a request is answered before the next one is parsed; pipelined
 * bytes wait in the input buffer, which keeps responses in order.
 *
 * Large bodies are not built in memory: a "producer" (pattern or chunked)
 * tops the output buffer up as it drains. Timers (delay, drip, idle, the
 * wait before a reset) live in a min-heap with one slot per connection; the
 * epoll_wait timeout is computed from its top.
 */
#define _GNU_SOURCE
#include "testserver.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <llhttp.h>

/* Limits that keep a misbehaving client from eating the process. */
#define TS_MAX_URL (64u * 1024)
#define TS_MAX_REQUEST_HEADERS (1u << 20)
#define TS_MAX_ECHO_BODY (16u << 20)
#define TS_MAX_UNPARSED (1u << 20) /* stop reading a busy connection here */
#define TS_MAX_BODY_LEN (1ull << 62)
#define TS_MAX_DELAY_MS 600000ull
#define TS_MAX_GATHER 64 /* /gather requests held at once */
#define TS_MAX_BIG_HEADER (16ull << 20)
#define TS_MAX_MANY_HEADERS 100000ull

/* Sizes that trade memory per connection against system calls. */
#define TS_READ_SLICE (64u * 1024)
#define TS_FILL_TARGET (32u * 1024) /* producer tops the output up to this */
#define TS_OUT_LOW (64u * 1024)     /* parse the next request below this */
#define TS_KEEP_CAP (64u * 1024)    /* larger idle buffers are freed */
#define TS_STEPS_PER_TURN 64        /* fairness between connections */
#define TS_READS_PER_TURN 4
#define TS_ACCEPTS_PER_TURN 128
#define TS_TIMERS_PER_TURN 4096
#define TS_EVENTS 256
#define TS_RESET_TRIES 1000 /* 1 ms apart: about a second */
#define TS_EARLY_HEAD_PAUSE_MS 200 /* /early-head/: no reading meanwhile */

#define TS_DEFAULT_BACKLOG 1024
#define TS_WANT_NOFILE 8192 /* 2,000 server plus 2,000 client sockets */
#define TS_NOFILE_CEILING (1u << 20)

#define NS_PER_MS 1000000ll
#define NO_HEAP_SLOT SIZE_MAX

/* --- types ---------------------------------------------------------------- */

struct ts_buf {
  char *data;
  size_t off; /* bytes before off are consumed */
  size_t len;
  size_t cap;
  bool failed; /* an allocation failed; the owner closes the connection */
};

enum ts_body { BODY_NONE, BODY_PATTERN, BODY_CHUNKED, BODY_DRIP };
enum ts_after { AFTER_KEEP, AFTER_CLOSE, AFTER_RESET, AFTER_HANG };
enum ts_timer {
  TIMER_NONE,
  TIMER_IDLE,
  TIMER_DELAY,
  TIMER_DRIP,
  TIMER_RESET,
  TIMER_READ_PAUSE
};
enum ts_close { CLOSE_PEER, CLOSE_ERROR, CLOSE_SERVER, CLOSE_RESET };

struct ts_request {
  struct ts_buf url;     /* NUL-terminated once the headers are complete */
  struct ts_buf headers; /* "name: value\n" lines, for /echo */
  struct ts_buf body;    /* only kept when the target is /echo */
  size_t field_start;
  size_t field_len;
  size_t value_start;
  bool in_field;
  bool expect_continue;
  bool keep_body;
  bool answer_at_head; /* /early/: answered before its body is read */
  bool in_progress;    /* begun, not complete: the connection is not idle */
  bool complete;
  bool keep_alive;
  uint8_t method;
};

struct ts_response {
  bool active;       /* a request is being answered; parsing waits */
  bool delayed;      /* a /delay timer runs; then route(next_target) */
  bool close_header; /* "Connection: close" goes into the head */
  const char *next_target;
  enum ts_body body;
  enum ts_after after;
  unsigned long long offset;    /* pattern position of the next body byte */
  unsigned long long remaining; /* pattern bytes still to produce */
  unsigned long long chunk_size;
  unsigned long long chunk_left;
  bool trailer;
  long drip_ms;
  int reset_tries;
};

struct ts_server;

struct ts_conn {
  struct ts_server *srv;
  int fd;
  uint32_t events; /* registered epoll mask */
  bool more_work;  /* the turn's budget ran out with work left */
  bool read_paused; /* /early-head/: reads nothing until its timer */
  bool drain_input; /* /early/CODE?drain: what comes is read and dropped */
  long served;     /* responses begun on this connection */
  llhttp_t parser;
  struct ts_buf in;
  struct ts_buf out;
  struct ts_request req;
  struct ts_response resp;
  bool gathered; /* held in srv->gather until the group is complete */
  enum ts_timer timer;
  int64_t deadline;
  size_t heap_slot;
  struct ts_conn *prev;
  struct ts_conn *next;
};

struct ts_server {
  struct ts_config cfg;
  int listen_fd;
  int epoll_fd;
  int wake_fd;
  atomic_bool stop_asked;       /* ts_stop() */
  atomic_bool close_idle_asked; /* ts_close_idle() */
  int reserve_fd; /* spare fd, given up to shed a connection on EMFILE */
  int port;
  bool stopping;
  bool thread_started;
  pthread_t thread;
  llhttp_settings_t settings;
  struct ts_conn *conns;
  struct ts_conn **heap;
  size_t heap_len;
  size_t heap_cap;
  char scratch[TS_READ_SLICE];
  atomic_long accepted;
  atomic_long requests;
  atomic_long open_conns;
  atomic_long closed_by_server;
  atomic_long bytes_in;
  atomic_long server_closes_done; /* closed_by_server, after the close */
  atomic_long closes_done;        /* every close, after it */
  /* Tests wait for the counters above (ts_wait()): every change is made
   * under stats_lock and broadcast. */
  pthread_mutex_t stats_lock;
  pthread_cond_t stats_changed;
  uint64_t close_once_seen; /* /close-once IDs met (the server thread's) */
  struct ts_conn *gather[TS_MAX_GATHER]; /* /gather requests held */
  int ngather;
};

static void conn_progress(struct ts_conn *c);
static void route(struct ts_conn *c, const char *target);

/* --- small helpers -------------------------------------------------------- */

void ts_fill_pattern(char *buf, size_t offset, size_t len) {
  static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  size_t k = offset % 36;
  for (size_t i = 0; i < len; i++) {
    buf[i] = alphabet[k];
    if (++k == 36)
      k = 0;
  }
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

__attribute__((format(printf, 2, 3))) static void
ts_log(const struct ts_server *s, const char *fmt, ...) {
  if (!s->cfg.log)
    return;
  va_list ap;
  va_start(ap, fmt);
  fputs("testserver: ", s->cfg.log);
  vfprintf(s->cfg.log, fmt, ap);
  fputc('\n', s->cfg.log);
  fflush(s->cfg.log);
  va_end(ap);
}

static void count(struct ts_server *s, atomic_long *counter, long delta) {
  pthread_mutex_lock(&s->stats_lock);
  atomic_fetch_add_explicit(counter, delta, memory_order_relaxed);
  pthread_cond_broadcast(&s->stats_changed);
  pthread_mutex_unlock(&s->stats_lock);
}

/* --- byte buffers --------------------------------------------------------- */

static size_t buf_pending(const struct ts_buf *b) { return b->len - b->off; }

/* Makes room for `extra` more bytes at the end; false (and failed set) when
 * memory runs out, so callers can keep appending and check once. */
static bool buf_reserve(struct ts_buf *b, size_t extra) {
  if (b->failed)
    return false;
  if (b->off > 0 && b->cap - b->len < extra) {
    memmove(b->data, b->data + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
  }
  if (b->cap - b->len >= extra)
    return true;
  size_t want = b->cap ? b->cap : 256;
  while (want - b->len < extra) {
    if (want > SIZE_MAX / 2) {
      b->failed = true;
      return false;
    }
    want *= 2;
  }
  char *grown = realloc(b->data, want);
  if (!grown) {
    b->failed = true;
    return false;
  }
  b->data = grown;
  b->cap = want;
  return true;
}

static void buf_append(struct ts_buf *b, const void *p, size_t n) {
  if (n == 0 || !buf_reserve(b, n))
    return;
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

static void buf_puts(struct ts_buf *b, const char *str) {
  buf_append(b, str, strlen(str));
}

__attribute__((format(printf, 2, 3))) static void
buf_printf(struct ts_buf *b, const char *fmt, ...) {
  char small[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->failed = true;
    return;
  }
  if ((size_t)n < sizeof small) {
    buf_append(b, small, (size_t)n);
    return;
  }
  if (!buf_reserve(b, (size_t)n + 1))
    return;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

static void buf_pattern(struct ts_buf *b, unsigned long long offset, size_t n) {
  if (n == 0 || !buf_reserve(b, n))
    return;
  ts_fill_pattern(b->data + b->len, (size_t)(offset % 36), n);
  b->len += n;
}

/* Keeps a NUL after the bytes without counting it. */
static void buf_terminate(struct ts_buf *b) {
  if (buf_reserve(b, 1))
    b->data[b->len] = '\0';
}

static void buf_consume(struct ts_buf *b, size_t n) {
  b->off += n;
  if (b->off == b->len)
    b->off = b->len = 0;
}

/* Empties the buffer; frees a big allocation so that thousands of idle
 * connections stay small after one large request or response. */
static void buf_reset(struct ts_buf *b) {
  b->off = b->len = 0;
  if (b->cap > TS_KEEP_CAP) {
    free(b->data);
    b->data = NULL;
    b->cap = 0;
  }
}

static void buf_free(struct ts_buf *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

/* --- timer heap ----------------------------------------------------------- */

static void heap_place(struct ts_server *s, size_t slot, struct ts_conn *c) {
  s->heap[slot] = c;
  c->heap_slot = slot;
}

static void heap_up(struct ts_server *s, size_t slot) {
  struct ts_conn *c = s->heap[slot];
  while (slot > 0) {
    size_t parent = (slot - 1) / 2;
    if (s->heap[parent]->deadline <= c->deadline)
      break;
    heap_place(s, slot, s->heap[parent]);
    slot = parent;
  }
  heap_place(s, slot, c);
}

static void heap_down(struct ts_server *s, size_t slot) {
  struct ts_conn *c = s->heap[slot];
  for (;;) {
    size_t child = 2 * slot + 1;
    if (child >= s->heap_len)
      break;
    if (child + 1 < s->heap_len &&
        s->heap[child + 1]->deadline < s->heap[child]->deadline)
      child++;
    if (c->deadline <= s->heap[child]->deadline)
      break;
    heap_place(s, slot, s->heap[child]);
    slot = child;
  }
  heap_place(s, slot, c);
}

static void heap_remove(struct ts_server *s, struct ts_conn *c) {
  size_t slot = c->heap_slot;
  if (slot == NO_HEAP_SLOT)
    return;
  c->heap_slot = NO_HEAP_SLOT;
  struct ts_conn *last = s->heap[--s->heap_len];
  if (last == c)
    return;
  heap_place(s, slot, last);
  heap_up(s, slot);
  heap_down(s, last->heap_slot);
}

static bool heap_grow(struct ts_server *s) {
  size_t cap = s->heap_cap ? s->heap_cap * 2 : 64;
  struct ts_conn **grown = realloc(s->heap, cap * sizeof *grown);
  if (!grown)
    return false;
  s->heap = grown;
  s->heap_cap = cap;
  return true;
}

/* One timer per connection: arming replaces whatever ran before. */
static bool timer_arm(struct ts_conn *c, enum ts_timer kind, long ms) {
  struct ts_server *s = c->srv;
  c->timer = kind;
  c->deadline = now_ns() + (int64_t)ms * NS_PER_MS;
  if (c->heap_slot != NO_HEAP_SLOT) {
    heap_up(s, c->heap_slot);
    heap_down(s, c->heap_slot);
    return true;
  }
  if (s->heap_len == s->heap_cap && !heap_grow(s))
    return false;
  heap_place(s, s->heap_len++, c);
  heap_up(s, c->heap_slot);
  return true;
}

static void timer_cancel(struct ts_conn *c) {
  heap_remove(c->srv, c);
  c->timer = TIMER_NONE;
}

static int epoll_timeout_ms(const struct ts_server *s) {
  if (s->heap_len == 0)
    return -1;
  int64_t left = s->heap[0]->deadline - now_ns();
  if (left <= 0)
    return 0;
  int64_t ms = (left + NS_PER_MS - 1) / NS_PER_MS; /* never wake early */
  return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* --- connection life ------------------------------------------------------ */

static void conn_unlink(struct ts_conn *c) {
  struct ts_server *s = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
}

static void gather_leave(struct ts_conn *c) {
  struct ts_server *s = c->srv;

  for (int i = 0; i < s->ngather; i++)
    if (s->gather[i] == c) {
      s->gather[i] = s->gather[--s->ngather];
      break;
    }
  c->gathered = false;
}

static void conn_free(struct ts_conn *c) {
  if (c->gathered)
    gather_leave(c);
  heap_remove(c->srv, c);
  conn_unlink(c);
  close(c->fd);
  buf_free(&c->in);
  buf_free(&c->out);
  buf_free(&c->req.url);
  buf_free(&c->req.headers);
  buf_free(&c->req.body);
  free(c);
}

static void conn_close(struct ts_conn *c, enum ts_close why) {
  struct ts_server *s = c->srv;
  static const char *const names[] = {"peer closed", "error", "closed",
                                      "reset"};
  ts_log(s, "fd %d: %s after %ld responses", c->fd, names[why], c->served);
  if (why == CLOSE_RESET) {
    /* A zero linger timeout makes close() send RST instead of FIN. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  if (why == CLOSE_SERVER || why == CLOSE_RESET)
    count(s, &s->closed_by_server, 1);
  count(s, &s->open_conns, -1);
  epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
  conn_free(c);
  /* A test waiting for the close (ts_wait) wakes once the socket is
   * closed: it finds the peer gone. */
  if (why == CLOSE_SERVER || why == CLOSE_RESET)
    count(s, &s->server_closes_done, 1);
  count(s, &s->closes_done, 1);
}

static void conn_set_events(struct ts_conn *c) {
  uint32_t want = EPOLLRDHUP;
  if (buf_pending(&c->in) < TS_MAX_UNPARSED && !c->read_paused)
    want |= EPOLLIN;
  /* EPOLLOUT also serves as "come back soon" when the turn's budget ran out
   * or a producer has more: a connected socket with room reports it at
   * once. */
  bool producing = c->resp.active && (c->resp.body == BODY_PATTERN ||
                                      c->resp.body == BODY_CHUNKED);
  if (buf_pending(&c->out) > 0 || c->more_work || producing)
    want |= EPOLLOUT;
  if (want == c->events)
    return;
  struct epoll_event ev = {.events = want, .data.ptr = c};
  if (epoll_ctl(c->srv->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
    c->events = want;
}

/* A keep-alive connection between requests: answered at least once,
 * nothing being answered or sent, no part of a request held or begun
 * (llhttp may have consumed the first bytes of one already). Only such a
 * connection is closed as idle, by the timer or by ts_close_idle(). */
static bool conn_between_requests(const struct ts_conn *c) {
  return c->served > 0 && !c->resp.active && !c->read_paused &&
         !c->req.in_progress && buf_pending(&c->out) == 0 &&
         buf_pending(&c->in) == 0;
}

/* The idle timer runs only on a connection between requests (like
 * nginx's keepalive_timeout; a fresh connection or a request still
 * arriving is another timeout's business, and closing those would make
 * tests depend on how fast the client writes). */
static void conn_update_idle(struct ts_conn *c, bool activity) {
  int idle_ms = c->srv->cfg.idle_close_ms;
  bool idle = conn_between_requests(c);
  if (idle_ms <= 0)
    return;
  if (!idle) {
    if (c->timer == TIMER_IDLE)
      timer_cancel(c);
    return;
  }
  if (c->timer != TIMER_IDLE || activity)
    timer_arm(c, TIMER_IDLE, idle_ms);
}

static struct ts_conn *conn_new(struct ts_server *s, int fd) {
  struct ts_conn *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->srv = s;
  c->fd = fd;
  c->heap_slot = NO_HEAP_SLOT;
  c->events = EPOLLIN | EPOLLRDHUP;
  llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
  c->parser.data = c;
  struct epoll_event ev = {.events = c->events, .data.ptr = c};
  if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
    free(c);
    return NULL;
  }
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;
  return c;
}

/* --- llhttp callbacks ----------------------------------------------------- */

static struct ts_request *req_of(llhttp_t *p) {
  return &((struct ts_conn *)p->data)->req;
}

static int append_limited(struct ts_buf *b, const char *at, size_t n,
                          size_t limit) {
  if (buf_pending(b) + n > limit)
    return -1; /* llhttp fails the request: 400 */
  buf_append(b, at, n);
  return b->failed ? -1 : 0;
}

static int on_message_begin(llhttp_t *p) {
  struct ts_request *r = req_of(p);
  buf_reset(&r->url);
  buf_reset(&r->headers);
  buf_reset(&r->body);
  r->in_field = r->expect_continue = r->keep_body = false;
  r->answer_at_head = false;
  r->in_progress = true;
  r->complete = r->keep_alive = false;
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n) {
  struct ts_request *r = req_of(p);
  return append_limited(&r->url, at, n, TS_MAX_URL);
}

static int on_header_field(llhttp_t *p, const char *at, size_t n) {
  struct ts_request *r = req_of(p);
  if (!r->in_field) {
    r->in_field = true;
    r->field_start = r->headers.len;
  }
  return append_limited(&r->headers, at, n, TS_MAX_REQUEST_HEADERS);
}

static int on_header_field_complete(llhttp_t *p) {
  struct ts_request *r = req_of(p);
  r->in_field = false;
  r->field_len = r->headers.len - r->field_start;
  buf_puts(&r->headers, ": ");
  r->value_start = r->headers.len;
  return r->headers.failed ? -1 : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n) {
  struct ts_request *r = req_of(p);
  return append_limited(&r->headers, at, n, TS_MAX_REQUEST_HEADERS);
}

static bool span_is(const struct ts_buf *b, size_t start, size_t len,
                    const char *word) {
  return len == strlen(word) && strncasecmp(b->data + start, word, len) == 0;
}

static int on_header_value_complete(llhttp_t *p) {
  struct ts_request *r = req_of(p);
  const struct ts_buf *h = &r->headers;
  if (span_is(h, r->field_start, r->field_len, "expect") &&
      span_is(h, r->value_start, h->len - r->value_start, "100-continue"))
    r->expect_continue = true;
  buf_puts(&r->headers, "\n");
  return r->headers.failed ? -1 : 0;
}

static bool at_target_end(const char *p) { return *p == '\0' || *p == '?'; }

static bool take_number(const char **p, unsigned long long max,
                        unsigned long long *out) {
  const char *q = *p;
  unsigned long long v = 0;
  if (*q < '0' || *q > '9')
    return false;
  for (; *q >= '0' && *q <= '9'; q++) {
    unsigned digit = (unsigned)(*q - '0');
    if (v > (max - digit) / 10) /* checked before it could wrap */
      return false;
    v = v * 10 + digit;
  }
  *p = q;
  *out = v;
  return true;
}

static bool take_prefix(const char **p, const char *prefix) {
  size_t n = strlen(prefix);
  if (strncmp(*p, prefix, n) != 0)
    return false;
  *p += n;
  return true;
}

/* Only /echo needs the request body; others discard it as it arrives, so
 * a large upload to /bytes/0 costs no memory. */
static bool target_is_echo(const char *target) {
  unsigned long long ms;
  while (take_prefix(&target, "/delay/") &&
         take_number(&target, TS_MAX_DELAY_MS, &ms))
    ;
  return take_prefix(&target, "/echo") && at_target_end(target);
}

static int on_headers_complete(llhttp_t *p) {
  struct ts_conn *c = p->data;
  struct ts_request *r = &c->req;
  const char *target;
  unsigned long long n;

  buf_terminate(&r->url);
  if (r->url.failed)
    return -1;
  target = r->url.data ? r->url.data : "";
  r->keep_body = target_is_echo(target);
  bool has_body = (p->flags & F_CHUNKED) || p->content_length > 0;
  /* Parsing only runs when no response is in progress, so this interim
   * response cannot land inside another one. */
  if (r->expect_continue && has_body)
    buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
  /* /early/ and /close-at-head: answered now, the body never parsed
   * (route_early(), route_close_at_head()). */
  if (take_prefix(&target, "/early/") ||
      take_prefix(&target, "/close-at-head")) {
    r->answer_at_head = true;
    r->method = llhttp_get_method(p);
    count(c->srv, &c->srv->requests, 1);
    return HPE_PAUSED;
  }
  /* /early-head/N: the head goes out now, like a 100 Continue, and the
   * connection reads nothing for a while, so that a client sending a large
   * body must wait with the head to read; the body once the request is
   * read (route_early_head()). */
  if (take_prefix(&target, "/early-head/") &&
      take_number(&target, TS_MAX_BODY_LEN, &n) && at_target_end(target)) {
    buf_printf(&c->out, "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n",
               llhttp_get_method(p) == HTTP_HEAD ? 0 : n);
    c->read_paused = true;
    if (!timer_arm(c, TIMER_READ_PAUSE, TS_EARLY_HEAD_PAUSE_MS))
      c->out.failed = true;
  }
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n) {
  struct ts_request *r = req_of(p);
  if (!r->keep_body)
    return 0;
  return append_limited(&r->body, at, n, TS_MAX_ECHO_BODY);
}

static int on_message_complete(llhttp_t *p) {
  struct ts_conn *c = p->data;
  struct ts_request *r = &c->req;
  r->complete = true;
  r->in_progress = false;
  r->method = llhttp_get_method(p);
  /* Read now: the flags behind it are cleared once parsing resumes. */
  r->keep_alive = llhttp_should_keep_alive(p) != 0;
  count(c->srv, &c->srv->requests, 1);
  return HPE_PAUSED; /* answer this one before parsing the next */
}

static void init_settings(llhttp_settings_t *st) {
  llhttp_settings_init(st);
  st->on_message_begin = on_message_begin;
  st->on_url = on_url;
  st->on_header_field = on_header_field;
  st->on_header_field_complete = on_header_field_complete;
  st->on_header_value = on_header_value;
  st->on_header_value_complete = on_header_value_complete;
  st->on_headers_complete = on_headers_complete;
  st->on_body = on_body;
  st->on_message_complete = on_message_complete;
}

/* --- response building ---------------------------------------------------- */

static const char *reason_phrase(int code) {
  static const struct {
    int code;
    const char *text;
  } table[] = {
      {100, "Continue"},
      {101, "Switching Protocols"},
      {103, "Early Hints"},
      {200, "OK"},
      {201, "Created"},
      {202, "Accepted"},
      {203, "Non-Authoritative Information"},
      {204, "No Content"},
      {205, "Reset Content"},
      {206, "Partial Content"},
      {300, "Multiple Choices"},
      {301, "Moved Permanently"},
      {302, "Found"},
      {303, "See Other"},
      {304, "Not Modified"},
      {307, "Temporary Redirect"},
      {308, "Permanent Redirect"},
      {400, "Bad Request"},
      {401, "Unauthorized"},
      {403, "Forbidden"},
      {404, "Not Found"},
      {405, "Method Not Allowed"},
      {406, "Not Acceptable"},
      {408, "Request Timeout"},
      {409, "Conflict"},
      {410, "Gone"},
      {411, "Length Required"},
      {412, "Precondition Failed"},
      {413, "Content Too Large"},
      {414, "URI Too Long"},
      {415, "Unsupported Media Type"},
      {416, "Range Not Satisfiable"},
      {417, "Expectation Failed"},
      {418, "I'm a teapot"},
      {421, "Misdirected Request"},
      {422, "Unprocessable Content"},
      {425, "Too Early"},
      {426, "Upgrade Required"},
      {428, "Precondition Required"},
      {429, "Too Many Requests"},
      {431, "Request Header Fields Too Large"},
      {500, "Internal Server Error"},
      {501, "Not Implemented"},
      {502, "Bad Gateway"},
      {503, "Service Unavailable"},
      {504, "Gateway Timeout"},
      {505, "HTTP Version Not Supported"},
  };
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (table[i].code == code)
      return table[i].text;
  return "Unknown";
}

static bool is_head(const struct ts_conn *c) {
  return c->req.method == HTTP_HEAD;
}

static void head_begin(struct ts_conn *c, int code) {
  buf_printf(&c->out, "HTTP/1.1 %d %s\r\n", code, reason_phrase(code));
}

static void head_end(struct ts_conn *c) {
  const struct ts_config *cfg = &c->srv->cfg;

  if (c->resp.close_header)
    buf_puts(&c->out, "Connection: close\r\n");
  else if (cfg->announce_idle_close && cfg->idle_close_ms >= 1000)
    buf_printf(&c->out, "Keep-Alive: timeout=%d\r\n",
               cfg->idle_close_ms / 1000);
  buf_puts(&c->out, "\r\n");
}

static void put_content_length(struct ts_conn *c, unsigned long long n) {
  buf_printf(&c->out, "Content-Length: %llu\r\n", n);
}

/* Queues n pattern bytes to follow the head; HEAD requests get none. */
static void body_pattern(struct ts_conn *c, unsigned long long n) {
  if (is_head(c) || n == 0)
    return;
  c->resp.body = BODY_PATTERN;
  c->resp.offset = 0;
  c->resp.remaining = n;
}

static void send_empty(struct ts_conn *c, int code) {
  head_begin(c, code);
  put_content_length(c, 0);
  head_end(c);
}

static void send_bytes(struct ts_conn *c, unsigned long long n) {
  head_begin(c, 200);
  put_content_length(c, n);
  head_end(c);
  body_pattern(c, n);
}

/* --- routes: each returns false for "not mine / bad numbers" (404) ------- */

static bool route_bytes(struct ts_conn *c, const char *a) {
  unsigned long long n;
  if (!take_number(&a, TS_MAX_BODY_LEN, &n) || !at_target_end(a))
    return false;
  send_bytes(c, n);
  return true;
}

static bool route_chunked(struct ts_conn *c, const char *a) {
  unsigned long long n, k;
  if (!take_number(&a, TS_MAX_BODY_LEN, &n) || !take_prefix(&a, "/") ||
      !take_number(&a, TS_MAX_BODY_LEN, &k) || k == 0 || !at_target_end(a))
    return false;
  head_begin(c, 200);
  buf_puts(&c->out, "Transfer-Encoding: chunked\r\n");
  head_end(c);
  if (is_head(c))
    return true;
  c->resp.body = BODY_CHUNKED;
  c->resp.remaining = n;
  c->resp.chunk_size = k;
  c->resp.trailer = strcmp(a, "?trailer") == 0;
  return true;
}

static bool route_close_delimited(struct ts_conn *c, const char *a) {
  unsigned long long n;
  if (!take_number(&a, TS_MAX_BODY_LEN, &n) || !at_target_end(a))
    return false;
  c->resp.close_header = true;
  c->resp.after = AFTER_CLOSE;
  head_begin(c, 200);
  head_end(c);
  body_pattern(c, n);
  return true;
}

static bool route_status(struct ts_conn *c, const char *a) {
  unsigned long long code;
  if (!take_number(&a, 599, &code) || code < 200 || !at_target_end(a))
    return false;
  head_begin(c, (int)code);
  if (code != 204 && code != 304)
    put_content_length(c, 0);
  head_end(c);
  return true;
}

static bool route_redirect(struct ts_conn *c, const char *a) {
  unsigned long long code, n = 0;
  if (!take_number(&a, 399, &code) || code < 300)
    return false;
  if (take_prefix(&a, "/") && !take_number(&a, TS_MAX_BODY_LEN, &n))
    return false;
  if (!take_prefix(&a, "?to="))
    return false;
  head_begin(c, (int)code);
  buf_printf(&c->out, "Location: %s\r\n", a);
  put_content_length(c, n);
  head_end(c);
  body_pattern(c, n);
  return true;
}

static bool route_delay(struct ts_conn *c, const char *a) {
  unsigned long long ms;
  if (!take_number(&a, TS_MAX_DELAY_MS, &ms) || *a != '/')
    return false;
  if (!timer_arm(c, TIMER_DELAY, (long)ms)) {
    c->out.failed = true; /* no memory for the timer: give up the conn */
    return true;
  }
  c->resp.delayed = true;
  c->resp.next_target = a;
  return true;
}

static bool route_echo(struct ts_conn *c, const char *a) {
  if (!at_target_end(a))
    return false;
  const struct ts_request *r = &c->req;
  const char *method = llhttp_method_name((llhttp_method_t)r->method);
  size_t len =
      strlen(method) + 1 + r->url.len + 1 + r->headers.len + 1 + r->body.len;
  head_begin(c, 200);
  buf_puts(&c->out, "Content-Type: text/plain\r\n");
  put_content_length(c, len);
  head_end(c);
  if (is_head(c))
    return true;
  buf_printf(&c->out, "%s %s\n", method, r->url.data);
  buf_append(&c->out, r->headers.data, r->headers.len);
  buf_puts(&c->out, "\n");
  buf_append(&c->out, r->body.data, r->body.len);
  return true;
}

/* Content-Length n, then m bytes: m < n cut short by a close, m > n
 * overlong on a connection that stays open. */
static bool route_wrong_length(struct ts_conn *c, const char *a, bool shorter) {
  unsigned long long n, m;
  if (!take_number(&a, TS_MAX_BODY_LEN, &n) || !take_prefix(&a, "/") ||
      !take_number(&a, TS_MAX_BODY_LEN, &m) || !at_target_end(a))
    return false;
  if (shorter ? m >= n : m <= n)
    return false;
  if (shorter)
    c->resp.after = AFTER_CLOSE;
  head_begin(c, 200);
  put_content_length(c, n);
  head_end(c);
  body_pattern(c, m);
  return true;
}

static bool route_partial(struct ts_conn *c, const char *a) {
  return route_wrong_length(c, a, true);
}

static bool route_too_long(struct ts_conn *c, const char *a) {
  return route_wrong_length(c, a, false);
}

/* Raw bytes, then a close: nothing else could delimit them. */
static bool send_raw_and_close(struct ts_conn *c, const char *a,
                               const char *raw) {
  if (!at_target_end(a))
    return false;
  buf_puts(&c->out, raw);
  c->resp.after = AFTER_CLOSE;
  return true;
}

static bool route_malformed_status(struct ts_conn *c, const char *a) {
  return send_raw_and_close(c, a, "HTTP/1.1 2x0 Bad\r\n\r\n");
}

static bool route_malformed_header(struct ts_conn *c, const char *a) {
  return send_raw_and_close(c, a, "HTTP/1.1 200 OK\r\nBad header line\r\n\r\n");
}

static bool route_chunk_overflow(struct ts_conn *c, const char *a) {
  return send_raw_and_close(c, a,
                            "HTTP/1.1 200 OK\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n"
                            "ffffffffffffffffff\r\n");
}

static bool route_big_headers(struct ts_conn *c, const char *a) {
  unsigned long long n;
  if (!take_number(&a, TS_MAX_BIG_HEADER, &n) || !at_target_end(a))
    return false;
  head_begin(c, 200);
  buf_puts(&c->out, "X-Big: ");
  if (buf_reserve(&c->out, (size_t)n)) {
    memset(c->out.data + c->out.len, 'a', (size_t)n);
    c->out.len += (size_t)n;
  }
  buf_puts(&c->out, "\r\n");
  put_content_length(c, 0);
  head_end(c);
  return true;
}

static bool route_many_headers(struct ts_conn *c, const char *a) {
  unsigned long long n;
  if (!take_number(&a, TS_MAX_MANY_HEADERS, &n) || !at_target_end(a))
    return false;
  head_begin(c, 200);
  for (unsigned long long i = 0; i < n; i++)
    buf_printf(&c->out, "X-H%llu: v\r\n", i);
  put_content_length(c, 0);
  head_end(c);
  return true;
}

/* /headers?NAME=VALUE&...: 200, Content-Length: 0, and those headers as
 * given (a name of letters, digits and '-'; a value of anything printable
 * but '&' and space). */
/* One NAME=VALUE of /headers at *p (past its '?' or '&'): false when it
 * is malformed. */
static bool take_header_pair(const char **p, const char **name, size_t *nl,
                             const char **value, size_t *vl) {
  const char *q = *p;

  *name = q;
  while ((*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') ||
         (*q >= '0' && *q <= '9') || *q == '-')
    q++;
  *nl = (size_t)(q - *name);
  if (!*nl || *q != '=')
    return false;
  *value = ++q;
  while (*q > ' ' && *q < 0x7f && *q != '&')
    q++;
  *vl = (size_t)(q - *value);
  *p = q;
  return true;
}

static bool route_headers(struct ts_conn *c, const char *a) {
  const char *p = a, *name, *value;
  size_t nl, vl;

  if (*p != '?')
    return false;
  for (; *p == '?' || *p == '&'; ) { /* all well-formed, before any byte */
    p++;
    if (!take_header_pair(&p, &name, &nl, &value, &vl))
      return false;
  }
  if (*p)
    return false;
  head_begin(c, 200);
  for (p = a; *p; ) {
    p++;
    take_header_pair(&p, &name, &nl, &value, &vl);
    buf_printf(&c->out, "%.*s: %.*s\r\n", (int)nl, name, (int)vl, value);
  }
  put_content_length(c, 0);
  head_end(c);
  return true;
}

static bool route_1xx(struct ts_conn *c, const char *a) {
  unsigned long long n;
  if (!take_number(&a, TS_MAX_BODY_LEN, &n) || !at_target_end(a))
    return false;
  buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n"
                    "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
  send_bytes(c, n);
  return true;
}

static bool route_drip(struct ts_conn *c, const char *a) {
  unsigned long long n, ms;
  if (!take_number(&a, TS_MAX_BODY_LEN, &n) || !take_prefix(&a, "/") ||
      !take_number(&a, TS_MAX_DELAY_MS, &ms) || !at_target_end(a))
    return false;
  head_begin(c, 200);
  put_content_length(c, n);
  head_end(c);
  if (is_head(c) || n == 0)
    return true;
  c->resp.body = BODY_DRIP;
  c->resp.remaining = n;
  c->resp.drip_ms = ms > 0 ? (long)ms : 1; /* 0 would spin the loop */
  if (!timer_arm(c, TIMER_DRIP, c->resp.drip_ms))
    c->out.failed = true;
  return true;
}

static bool route_never(struct ts_conn *c, const char *a) {
  if (!at_target_end(a))
    return false;
  c->resp.after = AFTER_HANG;
  return true;
}

static bool route_rst(struct ts_conn *c, const char *a) {
  unsigned long long n;
  if (!take_number(&a, TS_MAX_BODY_LEN / 2, &n) || !at_target_end(a))
    return false;
  head_begin(c, 200);
  put_content_length(c, 2 * n);
  head_end(c);
  body_pattern(c, n);
  c->resp.after = AFTER_RESET;
  return true;
}

static bool route_close_now(struct ts_conn *c, const char *a) {
  if (!at_target_end(a))
    return false;
  c->resp.after = AFTER_CLOSE; /* earlier pipelined answers still go out */
  return true;
}

/* /early/CODE[?close|?drain]: answered as its head arrives; what follows
 * is not read beyond the input limit (with "?drain": read and dropped,
 * without end, as nginx drains a body it refused). Then the connection
 * hangs, or closes at once with "?close" (the unread bytes make that a
 * reset). */
static bool route_early(struct ts_conn *c, const char *a) {
  unsigned long long code;
  bool close = false, drain = false;
  if (!take_number(&a, 599, &code) || code < 200)
    return false;
  if (*a == '?') {
    close = !strcmp(a, "?close");
    drain = !strcmp(a, "?drain");
    if (!close && !drain)
      return false;
    a += strlen(a);
  }
  if (!at_target_end(a))
    return false;
  c->resp.close_header = true;
  send_empty(c, (int)code);
  c->resp.after = close ? AFTER_CLOSE : AFTER_HANG;
  if (drain) {
    c->drain_input = true;
    buf_reset(&c->in); /* the body's first bytes too */
  }
  return true;
}

/* /close-at-head: closed as the head arrives, the body unread (a reset). */
static bool route_close_at_head(struct ts_conn *c, const char *a) {
  if (!at_target_end(a))
    return false;
  c->resp.after = AFTER_CLOSE;
  return true;
}

/* /early-head/N: the head was sent as the request's head arrived
 * (on_headers_complete()); now that the whole request is read, the body. */
static bool route_early_head(struct ts_conn *c, const char *a) {
  unsigned long long n;
  if (!take_number(&a, TS_MAX_BODY_LEN, &n) || !at_target_end(a))
    return false;
  body_pattern(c, n);
  return true;
}

static void route(struct ts_conn *c, const char *target);

/* The first request with this ID: closed without a response; later ones
 * answered as the rest of the target. */
static bool route_close_once(struct ts_conn *c, const char *a) {
  unsigned long long id;
  uint64_t bit;

  if (!take_number(&a, 63, &id) || *a != '/')
    return false;
  bit = UINT64_C(1) << id;
  if (c->srv->close_once_seen & bit) {
    route(c, a);
    return true;
  }
  c->srv->close_once_seen |= bit;
  c->resp.after = AFTER_CLOSE;
  return true;
}

/* /gather/N/REST: held until N /gather requests are held at once (this
 * one included), then each is answered as its REST. */
static bool route_gather(struct ts_conn *c, const char *a) {
  struct ts_server *s = c->srv;
  unsigned long long n;

  if (!take_number(&a, TS_MAX_GATHER, &n) || n == 0 || *a != '/' ||
      s->ngather >= TS_MAX_GATHER)
    return false;
  c->resp.delayed = true;
  c->resp.next_target = a;
  c->gathered = true;
  s->gather[s->ngather++] = c;
  if ((unsigned long long)s->ngather < n)
    return true;
  /* Complete: each goes on from its delay timer, at once. */
  while (s->ngather) {
    struct ts_conn *g = s->gather[0];
    gather_leave(g);
    if (!timer_arm(g, TIMER_DELAY, 0))
      g->out.failed = true;
  }
  return true;
}

/* /stray-first/REST: on a reused connection, bytes that are no response
 * come first (what a server that sent more than it announced leaves
 * behind), then the answer to REST; the first request of a connection is
 * answered as REST alone. */
static bool route_stray_first(struct ts_conn *c, const char *a) {
  if (*a != '/')
    return false;
  if (c->served > 1)
    buf_puts(&c->out, "STRAY");
  route(c, a);
  return true;
}

/* /close-silently/REST: answered as REST, without "Connection: close"
 * (even when the request said it), then closed. */
static bool route_close_silently(struct ts_conn *c, const char *a) {
  if (*a != '/')
    return false;
  c->resp.close_header = false;
  route(c, a);
  c->resp.after = AFTER_CLOSE;
  return true;
}

/* Writes the answer for target into the output buffer and sets up what
 * follows it (producer, timer, close). */
static void route(struct ts_conn *c, const char *target) {
  static const struct {
    const char *prefix;
    bool (*handle)(struct ts_conn *c, const char *args);
  } routes[] = {
      {"/bytes/", route_bytes},
      {"/chunked/", route_chunked},
      {"/close-delimited/", route_close_delimited},
      {"/status/", route_status},
      {"/redirect/", route_redirect},
      {"/delay/", route_delay},
      {"/echo", route_echo},
      {"/partial/", route_partial},
      {"/too-long/", route_too_long},
      {"/malformed/status", route_malformed_status},
      {"/malformed/header", route_malformed_header},
      {"/big-headers/", route_big_headers},
      {"/many-headers/", route_many_headers},
      {"/headers", route_headers},
      {"/chunk-overflow", route_chunk_overflow},
      {"/1xx/", route_1xx},
      {"/drip/", route_drip},
      {"/never", route_never},
      {"/rst/", route_rst},
      {"/close-now", route_close_now},
      {"/close-once/", route_close_once},
      {"/close-silently", route_close_silently},
      {"/stray-first", route_stray_first},
      {"/gather/", route_gather},
      {"/early/", route_early},
      {"/early-head/", route_early_head},
      {"/close-at-head", route_close_at_head},
  };
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    const char *args = target;
    if (take_prefix(&args, routes[i].prefix) && routes[i].handle(c, args))
      return;
  }
  send_empty(c, 404);
}

/* --- producing bodies ----------------------------------------------------- */

static void produce_pattern(struct ts_conn *c, size_t room) {
  struct ts_response *r = &c->resp;
  size_t n = r->remaining < room ? (size_t)r->remaining : room;
  buf_pattern(&c->out, r->offset, n);
  r->offset += n;
  r->remaining -= n;
  if (r->remaining == 0)
    r->body = BODY_NONE;
}

static void produce_chunk_end(struct ts_conn *c) {
  buf_puts(&c->out, "0\r\n");
  if (c->resp.trailer)
    buf_puts(&c->out, "X-Trailer: yes\r\n");
  buf_puts(&c->out, "\r\n");
  c->resp.body = BODY_NONE;
}

/* Emits chunk frames until the output holds about TS_FILL_TARGET bytes; a
 * chunk larger than that is continued on the next call. */
static void produce_chunked(struct ts_conn *c) {
  struct ts_response *r = &c->resp;
  while (r->body == BODY_CHUNKED && !c->out.failed &&
         buf_pending(&c->out) < TS_FILL_TARGET) {
    if (r->chunk_left == 0) {
      if (r->remaining == 0) {
        produce_chunk_end(c);
        break;
      }
      r->chunk_left =
          r->remaining < r->chunk_size ? r->remaining : r->chunk_size;
      buf_printf(&c->out, "%llx\r\n", r->chunk_left);
    }
    size_t pending = buf_pending(&c->out);
    if (pending >= TS_FILL_TARGET)
      break; /* the chunk goes on next time */
    size_t room = TS_FILL_TARGET - pending;
    size_t n = r->chunk_left < room ? (size_t)r->chunk_left : room;
    buf_pattern(&c->out, r->offset, n);
    r->offset += n;
    r->remaining -= n;
    r->chunk_left -= n;
    if (r->chunk_left == 0)
      buf_puts(&c->out, "\r\n");
  }
}

static void produce_body(struct ts_conn *c) {
  size_t pending = buf_pending(&c->out);
  if (pending >= TS_FILL_TARGET)
    return;
  if (c->resp.body == BODY_PATTERN)
    produce_pattern(c, TS_FILL_TARGET - pending);
  else if (c->resp.body == BODY_CHUNKED)
    produce_chunked(c);
}

static void drip_one_byte(struct ts_conn *c) {
  struct ts_response *r = &c->resp;
  buf_pattern(&c->out, r->offset, 1);
  r->offset++;
  if (--r->remaining == 0)
    r->body = BODY_NONE;
  else if (!timer_arm(c, TIMER_DRIP, r->drip_ms))
    c->out.failed = true;
}

/* --- driving a connection ------------------------------------------------- */

enum ts_flush { FLUSH_DONE, FLUSH_BLOCKED, FLUSH_ERROR };

static enum ts_flush flush_out(struct ts_conn *c) {
  while (buf_pending(&c->out) > 0) {
    ssize_t n = send(c->fd, c->out.data + c->out.off, buf_pending(&c->out),
                     MSG_NOSIGNAL); /* a gone peer must not raise SIGPIPE */
    if (n > 0) {
      buf_consume(&c->out, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return FLUSH_BLOCKED;
    return FLUSH_ERROR;
  }
  return FLUSH_DONE;
}

enum ts_parse { PARSE_NEED_MORE, PARSE_REQUEST, PARSE_BAD };

/* Feeds unparsed input to llhttp until one request is complete. */
static enum ts_parse parse_next_request(struct ts_conn *c) {
  while (buf_pending(&c->in) > 0) {
    const char *data = c->in.data + c->in.off;
    size_t len = buf_pending(&c->in);
    llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
    if (err == HPE_OK) {
      buf_consume(&c->in, len);
      continue;
    }
    if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
      ts_log(c->srv, "fd %d: bad request: %s (%s)", c->fd,
             llhttp_errno_name(err), c->parser.reason);
      buf_consume(&c->in, len);
      return PARSE_BAD;
    }
    /* Paused: the bytes after the pause are the next request's. */
    buf_consume(&c->in, (size_t)(llhttp_get_error_pos(&c->parser) - data));
    if (err == HPE_PAUSED_UPGRADE) {
      /* Upgrades are not part of the script: go on parsing HTTP. */
      llhttp_resume_after_upgrade(&c->parser);
      continue;
    }
    if (c->req.answer_at_head)
      return PARSE_REQUEST; /* and the parser stays paused: the rest of
                               the request is never parsed */
    llhttp_resume(&c->parser);
    if (c->req.complete)
      return PARSE_REQUEST;
  }
  return PARSE_NEED_MORE;
}

static void start_response(struct ts_conn *c) {
  struct ts_server *s = c->srv;
  int limit = s->cfg.max_requests_per_conn;
  memset(&c->resp, 0, sizeof c->resp);
  c->resp.active = true;
  c->req.complete = false;
  c->served++;
  c->resp.close_header =
      !c->req.keep_alive || (limit > 0 && c->served >= limit);
  if (c->timer == TIMER_IDLE)
    timer_cancel(c);
  ts_log(s, "fd %d: %s %.200s", c->fd,
         llhttp_method_name((llhttp_method_t)c->req.method), c->req.url.data);
  route(c, c->req.url.data);
  /* An /early/ request's parser stays paused: nothing more is answered on
   * its connection (a bad one's 404 included). */
  if (c->req.answer_at_head && c->resp.after == AFTER_KEEP)
    c->resp.after = AFTER_CLOSE;
}

static void start_bad_request(struct ts_conn *c) {
  memset(&c->resp, 0, sizeof c->resp);
  c->resp.active = true;
  c->resp.close_header = true;
  c->resp.after = AFTER_CLOSE;
  if (c->timer == TIMER_IDLE)
    timer_cancel(c);
  send_empty(c, 400);
}

static void finish_response(struct ts_conn *c) {
  timer_cancel(c);
  c->read_paused = false; /* its timer, if it still ran, is gone */
  memset(&c->resp, 0, sizeof c->resp);
  buf_reset(&c->req.body);
  if (buf_pending(&c->in) == 0)
    buf_reset(&c->in);
  if (buf_pending(&c->out) == 0)
    buf_reset(&c->out);
}

enum ts_step { STEP_AGAIN, STEP_WAIT, STEP_CLOSED };

/* Resets only once the N bytes have left the send queue, so that the
 * client can have them before the RST; a bounded number of 1 ms waits. */
static enum ts_step reset_when_sent(struct ts_conn *c) {
  int queued = 0;
  if (c->timer == TIMER_RESET)
    return STEP_WAIT;
  if (ioctl(c->fd, SIOCOUTQ, &queued) == 0 && queued > 0 &&
      c->resp.reset_tries++ < TS_RESET_TRIES && timer_arm(c, TIMER_RESET, 1))
    return STEP_WAIT;
  conn_close(c, CLOSE_RESET);
  return STEP_CLOSED;
}

/* Once every byte of the response is queued: keep-alive, close, reset or
 * hang, as the route and the request's Connection header decided. */
static enum ts_step end_of_response(struct ts_conn *c, bool blocked) {
  enum ts_after after = c->resp.after;
  if (after == AFTER_KEEP && c->resp.close_header)
    after = AFTER_CLOSE;
  switch (after) {
  case AFTER_KEEP:
    finish_response(c);
    return STEP_AGAIN;
  case AFTER_HANG:
    return STEP_WAIT;
  case AFTER_CLOSE:
    if (blocked)
      return STEP_WAIT;
    conn_close(c, CLOSE_SERVER);
    return STEP_CLOSED;
  case AFTER_RESET:
    return blocked ? STEP_WAIT : reset_when_sent(c);
  }
  return STEP_WAIT;
}

static enum ts_step advance_response(struct ts_conn *c, bool blocked) {
  switch (c->resp.body) {
  case BODY_PATTERN:
  case BODY_CHUNKED:
    return blocked ? STEP_WAIT : STEP_AGAIN; /* produce more next round */
  case BODY_DRIP:
    return STEP_WAIT; /* the drip timer brings the next byte */
  case BODY_NONE:
    break;
  }
  if (c->resp.delayed)
    return STEP_WAIT;
  return end_of_response(c, blocked);
}

static enum ts_step next_request(struct ts_conn *c) {
  if (buf_pending(&c->out) >= TS_OUT_LOW)
    return STEP_WAIT; /* let the client read before answering more */
  switch (parse_next_request(c)) {
  case PARSE_NEED_MORE:
    /* Output here is a fresh "100 Continue": send it before waiting. */
    return buf_pending(&c->out) > 0 || c->out.failed ? STEP_AGAIN : STEP_WAIT;
  case PARSE_BAD:
    start_bad_request(c);
    return STEP_AGAIN;
  case PARSE_REQUEST:
    start_response(c);
    return STEP_AGAIN;
  }
  return STEP_WAIT;
}

/* Answers, writes and parses as far as the socket and the script allow.
 * May close (and free) c. */
static void conn_progress(struct ts_conn *c) {
  c->more_work = false;
  for (int steps = 0;; steps++) {
    if (c->resp.active)
      produce_body(c);
    enum ts_flush fl = flush_out(c);
    if (fl == FLUSH_ERROR || c->out.failed) {
      conn_close(c, CLOSE_ERROR);
      return;
    }
    if (steps == TS_STEPS_PER_TURN) {
      c->more_work = true;
      break;
    }
    bool blocked = fl == FLUSH_BLOCKED;
    enum ts_step st =
        c->resp.active ? advance_response(c, blocked) : next_request(c);
    if (st == STEP_CLOSED)
      return;
    if (st == STEP_WAIT)
      break;
  }
  conn_update_idle(c, false);
  conn_set_events(c);
}

/* Reads what the socket has into the input buffer. False: c was closed. */
static bool conn_read(struct ts_conn *c) {
  struct ts_server *s = c->srv;
  bool got = false;
  for (int i = 0; i < TS_READS_PER_TURN; i++) {
    if (buf_pending(&c->in) >= TS_MAX_UNPARSED)
      break;
    ssize_t n = recv(c->fd, s->scratch, sizeof s->scratch, 0);
    if (n > 0) {
      count(s, &s->bytes_in, n);
      if (!c->drain_input)
        buf_append(&c->in, s->scratch, (size_t)n);
      got = true;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    conn_close(c, n == 0 ? CLOSE_PEER : CLOSE_ERROR);
    return false;
  }
  if (c->in.failed) {
    conn_close(c, CLOSE_ERROR);
    return false;
  }
  if (got)
    conn_update_idle(c, true);
  return true;
}

static void conn_event(struct ts_conn *c, uint32_t revents) {
  if (revents & EPOLLERR) {
    conn_close(c, CLOSE_ERROR);
    return;
  }
  if (revents & EPOLLIN) {
    if (!conn_read(c))
      return;
  } else if (revents & (EPOLLRDHUP | EPOLLHUP)) {
    /* Not reading (input full), but the peer is gone all the same. */
    conn_close(c, CLOSE_PEER);
    return;
  }
  conn_progress(c);
}

static void conn_timer_fired(struct ts_conn *c) {
  enum ts_timer kind = c->timer;
  c->timer = TIMER_NONE;
  switch (kind) {
  case TIMER_IDLE:
    conn_close(c, CLOSE_SERVER);
    return;
  case TIMER_DELAY:
    c->resp.delayed = false;
    route(c, c->resp.next_target);
    break;
  case TIMER_DRIP:
    drip_one_byte(c);
    break;
  case TIMER_READ_PAUSE:
    c->read_paused = false;
    break;
  case TIMER_RESET:
  case TIMER_NONE:
    break;
  }
  conn_progress(c);
}

/* --- the loop ------------------------------------------------------------- */

static void run_due_timers(struct ts_server *s) {
  int64_t now = now_ns();
  for (int i = 0; i < TS_TIMERS_PER_TURN && s->heap_len > 0; i++) {
    struct ts_conn *c = s->heap[0];
    if (c->deadline > now)
      break;
    heap_remove(s, c);
    conn_timer_fired(c);
  }
}

/* Out of descriptors: accept and drop one connection with the spare
 * descriptor, else the listening socket stays readable and the loop spins. */
static void shed_one_connection(struct ts_server *s) {
  if (s->reserve_fd < 0)
    return;
  close(s->reserve_fd);
  int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
  if (fd >= 0)
    close(fd);
  s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ts_log(s, "out of descriptors: dropped a connection");
}

static void add_connection(struct ts_server *s, int fd) {
  int one = 1;
  /* Heads and bodies go in separate writes; Nagle would hold them back. */
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct ts_conn *c = conn_new(s, fd);
  if (!c) {
    ts_log(s, "dropped a connection: %s", strerror(errno));
    close(fd);
    return;
  }
  count(s, &s->accepted, 1);
  count(s, &s->open_conns, 1);
  ts_log(s, "fd %d: accepted", fd);
  conn_update_idle(c, true);
}

static void accept_ready(struct ts_server *s) {
  for (int i = 0; i < TS_ACCEPTS_PER_TURN; i++) {
    int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      add_connection(s, fd);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED)
      continue;
    if (errno == EMFILE || errno == ENFILE)
      shed_one_connection(s);
    else if (errno != EAGAIN && errno != EWOULDBLOCK)
      ts_log(s, "accept: %s", strerror(errno));
    return;
  }
}

/* ts_close_idle(): every keep-alive connection between requests is
 * closed, as the idle timer would. */
static void close_idle_now(struct ts_server *s) {
  struct ts_conn *c = s->conns, *next;

  for (; c; c = next) {
    next = c->next;
    if (conn_between_requests(c))
      conn_close(c, CLOSE_SERVER);
  }
}

static void wake_server(struct ts_server *s) {
  uint64_t one = 1;
  /* An eventfd counter write cannot block or fail short at this value. */
  while (write(s->wake_fd, &one, sizeof one) < 0 && errno == EINTR)
    ;
}

void ts_close_idle(struct ts_server *s) {
  atomic_store(&s->close_idle_asked, true);
  wake_server(s);
}

static void dispatch_event(struct ts_server *s, struct epoll_event *ev) {
  if (ev->data.ptr == &s->listen_fd) {
    accept_ready(s);
  } else if (ev->data.ptr == &s->wake_fd) {
    eventfd_t drained;
    eventfd_read(s->wake_fd, &drained);
    if (atomic_load(&s->stop_asked))
      s->stopping = true;
    /* A close-idle request runs after the batch (close_idle_now()): a
     * connection closed now may have an event later in it. */
  } else {
    conn_event(ev->data.ptr, ev->events);
  }
}

static void *server_main(void *arg) {
  struct ts_server *s = arg;
  struct epoll_event events[TS_EVENTS];
  while (!s->stopping) {
    int n = epoll_wait(s->epoll_fd, events, TS_EVENTS, epoll_timeout_ms(s));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      ts_log(s, "epoll_wait: %s; serving stops", strerror(errno));
      break;
    }
    for (int i = 0; i < n && !s->stopping; i++)
      dispatch_event(s, &events[i]);
    if (!s->stopping && atomic_exchange(&s->close_idle_asked, false))
      close_idle_now(s);
    if (!s->stopping)
      run_due_timers(s);
  }
  return NULL;
}

/* --- start and stop ------------------------------------------------------- */

/* Thousands of connections, client and server in one process, need more
 * than the usual soft limit of 1024 descriptors. Failure is not fatal. */
static void raise_nofile_limit(const struct ts_server *s) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= TS_WANT_NOFILE ||
      rl.rlim_cur >= rl.rlim_max)
    return;
  rlim_t old = rl.rlim_cur;
  rl.rlim_cur =
      rl.rlim_max > TS_NOFILE_CEILING ? TS_NOFILE_CEILING : rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
    return;
  rl.rlim_cur = TS_WANT_NOFILE < rl.rlim_max ? TS_WANT_NOFILE : rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
    ts_log(s, "could not raise RLIMIT_NOFILE above %llu",
           (unsigned long long)old);
}

static int open_listener(struct ts_server *s) {
  s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s->listen_fd < 0)
    return -1;
  int one = 1;
  setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)s->cfg.port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof addr;
  if (bind(s->listen_fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
      listen(s->listen_fd, s->cfg.listen_backlog) != 0 ||
      getsockname(s->listen_fd, (struct sockaddr *)&addr, &len) != 0)
    return -1;
  s->port = ntohs(addr.sin_port);
  return 0;
}

static int watch_fd(struct ts_server *s, int *fd) {
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = fd};
  return epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, *fd, &ev);
}

static int open_descriptors(struct ts_server *s) {
  s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (s->epoll_fd < 0)
    return -1;
  s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s->wake_fd < 0 || open_listener(s) != 0)
    return -1;
  if (watch_fd(s, &s->listen_fd) != 0 || watch_fd(s, &s->wake_fd) != 0)
    return -1;
  s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* optional */
  return 0;
}

/* The thread must not take the test's signals, so it starts with all of
 * them blocked. Returns 0 or an errno value. */
static int start_thread(struct ts_server *s) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&s->thread, NULL, server_main, s);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc == 0)
    s->thread_started = true;
  return rc;
}

static void close_if_open(int fd) {
  if (fd >= 0)
    close(fd);
}

static void server_free(struct ts_server *s) {
  while (s->conns)
    conn_free(s->conns);
  close_if_open(s->listen_fd);
  close_if_open(s->wake_fd);
  close_if_open(s->epoll_fd);
  close_if_open(s->reserve_fd);
  free(s->heap);
  pthread_cond_destroy(&s->stats_changed);
  pthread_mutex_destroy(&s->stats_lock);
  free(s);
}

static bool config_valid(const struct ts_config *cfg) {
  return !cfg || (cfg->max_requests_per_conn >= 0 && cfg->idle_close_ms >= 0 &&
                  cfg->listen_backlog >= 0 && cfg->port >= 0 &&
                  cfg->port <= 65535);
}

struct ts_server *ts_start(const struct ts_config *cfg) {
  if (!config_valid(cfg)) {
    errno = EINVAL;
    return NULL;
  }
  struct ts_server *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->listen_fd = s->epoll_fd = s->wake_fd = s->reserve_fd = -1;
  pthread_mutex_init(&s->stats_lock, NULL);
  pthread_cond_init(&s->stats_changed, NULL);
  if (cfg)
    s->cfg = *cfg;
  if (s->cfg.listen_backlog == 0)
    s->cfg.listen_backlog = TS_DEFAULT_BACKLOG;
  init_settings(&s->settings);
  raise_nofile_limit(s);
  int err = 0;
  if (open_descriptors(s) != 0)
    err = errno;
  else
    err = start_thread(s);
  if (err != 0) {
    server_free(s);
    errno = err;
    return NULL;
  }
  ts_log(s, "listening on 127.0.0.1:%d", s->port);
  return s;
}

int ts_port(const struct ts_server *s) { return s->port; }

void ts_get_stats(struct ts_server *s, struct ts_stats *out) {
  out->accepted = atomic_load_explicit(&s->accepted, memory_order_relaxed);
  out->requests = atomic_load_explicit(&s->requests, memory_order_relaxed);
  out->open_conns = atomic_load_explicit(&s->open_conns, memory_order_relaxed);
  out->closed_by_server =
      atomic_load_explicit(&s->closed_by_server, memory_order_relaxed);
  out->bytes_in = atomic_load_explicit(&s->bytes_in, memory_order_relaxed);
  out->closed = atomic_load_explicit(&s->closes_done, memory_order_relaxed);
}

static long stat_of(struct ts_server *s, enum ts_stat which) {
  switch (which) {
  case TS_ACCEPTED:
    return atomic_load(&s->accepted);
  case TS_REQUESTS:
    return atomic_load(&s->requests);
  case TS_OPEN_CONNS:
    return atomic_load(&s->open_conns);
  case TS_CLOSED_BY_SERVER:
    return atomic_load(&s->server_closes_done);
  case TS_BYTES_IN:
    return atomic_load(&s->bytes_in);
  case TS_CLOSED:
    return atomic_load(&s->closes_done);
  }
  return 0;
}

bool ts_wait(struct ts_server *s, enum ts_stat which, long at_least,
             int timeout_ms) {
  struct timespec until;
  bool reached;

  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += timeout_ms / 1000;
  until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&s->stats_lock);
  while (!(reached = stat_of(s, which) >= at_least) &&
         pthread_cond_timedwait(&s->stats_changed, &s->stats_lock, &until) ==
             0)
    ;
  reached = stat_of(s, which) >= at_least;
  pthread_mutex_unlock(&s->stats_lock);
  return reached;
}

void ts_stop(struct ts_server *s) {
  if (!s)
    return;
  if (s->thread_started) {
    atomic_store(&s->stop_asked, true);
    wake_server(s);
    pthread_join(s->thread, NULL);
  }
  ts_log(s, "stopped");
  server_free(s);
}

bool ts_fetch(const struct ts_server *s, const char *target) {
  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)s->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct timeval tv = {5, 0};
  char buf[4096];
  int len, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool ok = false;
  ssize_t n;

  if (fd < 0)
    return false;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  len = snprintf(buf, sizeof buf,
                 "GET %s HTTP/1.1\r\nHost: ts\r\nConnection: close\r\n\r\n",
                 target);
  if (len > 0 && (size_t)len < sizeof buf &&
      connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
      send(fd, buf, (size_t)len, MSG_NOSIGNAL) == len) {
    /* To the end: the server closes after a Connection: close answer. */
    while ((n = recv(fd, buf, sizeof buf, 0)) > 0)
      ok = true;
    ok = ok && n == 0;
  }
  close(fd);
  return ok;
}
