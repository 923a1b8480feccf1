/*
 * One benchmark client run: T threads, each with its own epoll loop and its
 * own multi handle (libxfer or libcurl, driven the same way: socket
 * callback, timer callback, socket_action), C transfers in flight per
 * thread, N keep-alive GETs in total, each finished handle re-added at
 * once. Prints one JSON object with what it measured.
 *
 *   bench_client --client xfer-shared|xfer-per-multi|curl|curl-share|
 *                         floor|floor-llhttp
 *                -t T -c C -n N [--check-timelines] URL
 *
 * The loop keeps the timer callback's deadline, as libcurl's ephiperfifo
 * example does: the timeout becomes an absolute time, the epoll wait ends
 * at it, and the timeout action runs once it has passed, however busy the
 * sockets are. The loop's own clock reads are counted (driver_clock_reads)
 * and subtracted from what clockcount.so (LD_PRELOAD, counting runs only)
 * counted, so clock_reads are the library's. It also counts its
 * epoll_wait calls and timer callbacks. CPU comes from getrusage() around
 * the run, after start-up. --check-timelines checks every finished
 * transfer's timeline (brief rule 2), for the counting runs: the CPU runs
 * carry no such measuring (timeline_violations is then -1).
 *
 * libcurl is driven as its docs ask of a multi-threaded program:
 * CURLOPT_NOSIGNAL on every handle (libcurl-thread(3)).
 *
 * `floor` is the floor of any HTTP/1.1 client: C keep-alive connections
 * per thread, each writing one fixed, pre-built GET and reading only the
 * status line and Content-Length of the answer, with its own epoll loop.
 * `floor-llhttp` is the same client with llhttp, the parser the brief
 * fixes for libxfer, parsing each answer where it was read instead of
 * the floor's own search for the status line and Content-Length: what
 * the parser alone adds to the floor (the same llhttp build as libxfer's,
 * SSE4.2 where the CPU has it).
 */
#define _GNU_SOURCE
#include "config.h" /* XFER_LLHTTP_SSE42: which llhttp build libxfer runs */
#include <curl/curl.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <llhttp.h>
#include <xfer/xfer.h>

#include "timeline_check.h"

enum client {
  XFER_SHARED,
  XFER_PER_MULTI,
  CURL_PLAIN,
  CURL_SHARE,
  FLOOR,
  FLOOR_LLHTTP
};

static enum client client;
static int threads = 1, per_thread = 16;
static long total = 10000;
static bool check_timelines; /* --check-timelines */
static const char *url;

static atomic_long issued;   /* requests handed out so far (<= total) */
static atomic_long in_flight, in_flight_peak;
static xfer_pool *shared_pool;
static CURLSH *curl_share;
static pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];

#define NO_DEADLINE INT64_MAX

struct worker {
  int id;
  int ep;
  int64_t deadline_ns; /* from the timer callback; NO_DEADLINE: none */
  long clock_reads_own; /* the loop's own clock reads */
  long epoll_waits, timer_cbs;
  int running;
  long outstanding; /* added and not reaped yet */
  xfer_multi *xm;
  xfer_pool *own_pool; /* xfer-per-multi */
  CURLM *cm;
  long done, errors, bad_timelines, bytes;
  long connects; /* libcurl: CURLINFO_NUM_CONNECTS summed */
  uint64_t clock_reads; /* libxfer: xfer_multi_stats */
  char first_error[200];
  pthread_t thread;
};

static void note_in_flight(long delta) {
  long now = atomic_fetch_add(&in_flight, delta) + delta;
  long peak = atomic_load(&in_flight_peak);
  while (now > peak &&
         !atomic_compare_exchange_weak(&in_flight_peak, &peak, now))
    ;
}

/* Hands out the next request, if any are left. */
static bool take_request(void) {
  if (atomic_fetch_add(&issued, 1) >= total) {
    atomic_fetch_sub(&issued, 1);
    return false;
  }
  note_in_flight(+1);
  return true;
}

static size_t sink(const char *data, size_t len, void *userp) {
  struct worker *w = userp;
  (void)data;
  w->bytes += (long)len;
  return len;
}

static size_t curl_sink(char *data, size_t size, size_t n, void *userp) {
  return sink(data, size * n, userp);
}

static void note_error(struct worker *w, const char *what, const char *detail) {
  if (!w->errors++)
    snprintf(w->first_error, sizeof(w->first_error), "%s: %s", what, detail);
}

/* --- the event loop: the same for both libraries ------------------------- */

static int watch(struct worker *w, int fd, bool in, bool out, bool remove,
                 bool known) {
  struct epoll_event ev = {.data.fd = fd};

  if (remove)
    return epoll_ctl(w->ep, EPOLL_CTL_DEL, fd, NULL);
  ev.events = (in ? EPOLLIN : 0) | (out ? EPOLLOUT : 0);
  return epoll_ctl(w->ep, known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
}

static int xfer_socket(xfer_multi *m, int fd, int what, void *userp,
                       void *socketp) {
  struct worker *w = userp;
  int rc = watch(w, fd, what & XFER_POLL_IN, what & XFER_POLL_OUT,
                 what == XFER_POLL_REMOVE, socketp != NULL);
  if (!socketp && what != XFER_POLL_REMOVE)
    xfer_multi_assign(m, fd, w);
  return rc ? -1 : 0;
}

static int curl_socket(CURL *e, curl_socket_t fd, int what, void *userp,
                       void *socketp) {
  struct worker *w = userp;
  int rc = watch(w, fd, what & CURL_POLL_IN, what & CURL_POLL_OUT,
                 what == CURL_POLL_REMOVE, socketp != NULL);
  (void)e;
  if (!socketp && what != CURL_POLL_REMOVE)
    curl_multi_assign(w->cm, fd, w);
  return rc ? -1 : 0;
}

/* The driver's clock, counted so that its reads can be subtracted. */
static int64_t own_now_ns(struct worker *w) {
  struct timespec ts;

  w->clock_reads_own++;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void set_timer(struct worker *w, long ms) {
  w->timer_cbs++;
  w->deadline_ns = ms < 0 ? NO_DEADLINE : own_now_ns(w) + ms * 1000000;
}

static int xfer_timer(xfer_multi *m, long ms, void *userp) {
  (void)m;
  set_timer(userp, ms);
  return 0;
}

static int curl_timer(CURLM *m, long ms, void *userp) {
  (void)m;
  set_timer(userp, ms);
  return 0;
}

static void action(struct worker *w, int fd, int events) {
  if (w->xm) {
    xfer_multi_socket_action(w->xm, fd, events, &w->running);
  } else {
    int cev = ((events & XFER_CSELECT_IN) ? CURL_CSELECT_IN : 0) |
              ((events & XFER_CSELECT_OUT) ? CURL_CSELECT_OUT : 0) |
              ((events & XFER_CSELECT_ERR) ? CURL_CSELECT_ERR : 0);
    curl_multi_socket_action(w->cm,
                             fd == XFER_SOCKET_TIMEOUT ? CURL_SOCKET_TIMEOUT
                                                       : fd,
                             cev, &w->running);
  }
}

/* --- the floor: a fixed request, the status line and Content-Length ------ */

static struct sockaddr_in floor_addr;
static char floor_request[512];
static size_t floor_request_len;

struct floor_conn {
  int fd;
  bool busy;          /* a request is out */
  long body_left;     /* -1: still reading the head */
  size_t head_len;    /* bytes of the head gathered */
  char head[4096];
  /* floor-llhttp: the parser, and what its callbacks found */
  llhttp_t parser;
  long body_bytes;
  bool complete;
  bool not_200;
};

/* The URL's parts through libcurl's URL API, and the request built once. */
static bool floor_setup(void) {
  CURLU *u = curl_url();
  char *host = NULL, *port = NULL, *path = NULL, *query = NULL;
  bool ok = false;

  if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) ==
          CURLUE_OK &&
      curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK) {
    curl_url_get(u, CURLUPART_QUERY, &query, 0);
    floor_addr.sin_family = AF_INET;
    floor_addr.sin_port = htons((uint16_t)atoi(port));
    ok = inet_pton(AF_INET, host, &floor_addr.sin_addr) == 1;
    floor_request_len = (size_t)snprintf(
        floor_request, sizeof(floor_request),
        "GET %s%s%s HTTP/1.1\r\nHost: %s:%s\r\nAccept: */*\r\n\r\n", path,
        query ? "?" : "", query ? query : "", host, port);
  }
  curl_free(host), curl_free(port), curl_free(path), curl_free(query);
  curl_url_cleanup(u);
  return ok && floor_request_len < sizeof(floor_request);
}

/* A connection that failed: out of the loop, its request given up. */
static void floor_drop(struct worker *w, struct floor_conn *c) {
  epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
  if (c->busy) {
    c->busy = false;
    w->outstanding--;
    note_in_flight(-1);
  }
}

static void floor_send(struct worker *w, struct floor_conn *c) {
  c->busy = true;
  if (send(c->fd, floor_request, floor_request_len, MSG_NOSIGNAL) !=
      (ssize_t)floor_request_len) {
    note_error(w, "floor", "short write");
    floor_drop(w, c);
    return;
  }
  c->body_left = -1;
  c->head_len = 0;
}

/* The answer is whole: the next request goes out on c, if any is left. */
static void floor_answered(struct worker *w, struct floor_conn *c) {
  c->busy = false;
  note_in_flight(-1);
  w->done++;
  if (take_request())
    floor_send(w, c);
  else
    w->outstanding--;
}

/* The head is complete in c->head: the status and Content-Length. Returns
 * the body bytes that came with it, or -1 for a bad head. */
static long floor_head(struct worker *w, struct floor_conn *c, char *end) {
  char *line = strstr(c->head, "\r\n");
  long length = -1;

  if (strncmp(c->head, "HTTP/1.1 200 ", 13) != 0)
    note_error(w, "status", "not 200");
  while (line && line < end) {
    line += 2;
    if (strncasecmp(line, "Content-Length:", 15) == 0)
      length = strtol(line + 15, NULL, 10);
    line = strstr(line, "\r\n");
  }
  if (length < 0)
    note_error(w, "floor", "no Content-Length");
  return length;
}

static void floor_readable(struct worker *w, struct floor_conn *c) {
  char buf[65536];
  ssize_t n = read(c->fd, buf, sizeof(buf));
  size_t used = 0;

  if (n <= 0 || !c->busy) {
    note_error(w, "floor", n == 0 ? "closed" : n < 0 ? strerror(errno)
                                                     : "bytes nobody asked for");
    floor_drop(w, c);
    return;
  }
  if (c->body_left < 0) {
    size_t room = sizeof(c->head) - 1 - c->head_len;
    size_t take = (size_t)n < room ? (size_t)n : room;
    char *end;
    memcpy(c->head + c->head_len, buf, take);
    c->head_len += take;
    c->head[c->head_len] = '\0';
    end = strstr(c->head, "\r\n\r\n");
    if (!end && c->head_len == sizeof(c->head) - 1) {
      note_error(w, "floor", "a response head over 4 KiB");
      floor_drop(w, c);
      return;
    }
    if (!end)
      return;
    used = (size_t)(end + 4 - c->head) - (c->head_len - take);
    c->body_left = floor_head(w, c, end);
    if (c->body_left < 0)
      c->body_left = 0;
  }
  c->body_left -= (long)((size_t)n - used);
  w->bytes += (long)((size_t)n - used);
  if (c->body_left > 0)
    return;
  floor_answered(w, c);
}

/* floor-llhttp: llhttp_execute() over each read, in place (no copy of
 * the head). The callbacks note the status, count the body and pause at
 * the end of the answer, as libxfer's do. */
static int floor_on_headers_complete(llhttp_t *p) {
  struct floor_conn *c = p->data;

  c->not_200 = p->status_code != 200;
  return 0;
}

static int floor_on_body(llhttp_t *p, const char *at, size_t len) {
  struct floor_conn *c = p->data;

  (void)at;
  c->body_bytes += (long)len;
  return 0;
}

static int floor_on_message_complete(llhttp_t *p) {
  struct floor_conn *c = p->data;

  c->complete = true;
  return HPE_PAUSED;
}

static llhttp_settings_t floor_settings;

/* libxfer's choice of llhttp's build (lib/http1.c): llhttp_execute(p,
 * data, len) is llhttp__internal_execute(p, data, data + len). */
typedef int (*floor_execute_fn)(llhttp_t *p, const char *data,
                                const char *end);
int llhttp__internal_execute(llhttp_t *p, const char *data, const char *end);
#ifdef XFER_LLHTTP_SSE42
int llhttp__sse42_execute(llhttp_t *p, const char *data, const char *end);
#endif
static floor_execute_fn floor_execute = llhttp__internal_execute;

static void floor_llhttp_setup(struct floor_conn *conns) {
  llhttp_settings_init(&floor_settings);
  floor_settings.on_headers_complete = floor_on_headers_complete;
  floor_settings.on_body = floor_on_body;
  floor_settings.on_message_complete = floor_on_message_complete;
#ifdef XFER_LLHTTP_SSE42
  if (__builtin_cpu_supports("sse4.2"))
    floor_execute = llhttp__sse42_execute;
#endif
  for (int i = 0; i < per_thread; i++) {
    llhttp_init(&conns[i].parser, HTTP_RESPONSE, &floor_settings);
    conns[i].parser.data = &conns[i];
  }
}

static void floor_llhttp_readable(struct worker *w, struct floor_conn *c) {
  char buf[65536];
  ssize_t n = read(c->fd, buf, sizeof(buf));
  int err;

  if (n <= 0 || !c->busy) {
    note_error(w, "floor-llhttp", n == 0 ? "closed"
                                  : n < 0 ? strerror(errno)
                                          : "bytes nobody asked for");
    floor_drop(w, c);
    return;
  }
  c->body_bytes = 0;
  err = floor_execute(&c->parser, buf, buf + n);
  w->bytes += c->body_bytes;
  if (err != HPE_OK && err != HPE_PAUSED) {
    note_error(w, "floor-llhttp", llhttp_errno_name(err));
    floor_drop(w, c);
    return;
  }
  if (!c->complete)
    return;
  /* The answer ended where llhttp paused; nothing may follow it. */
  if (llhttp_get_error_pos(&c->parser) != buf + n) {
    note_error(w, "floor-llhttp", "bytes after the answer");
    floor_drop(w, c);
    return;
  }
  c->complete = false;
  llhttp_resume(&c->parser);
  if (c->not_200)
    note_error(w, "status", "not 200");
  floor_answered(w, c);
}

static void *floor_run(struct worker *w) {
  struct floor_conn *conns = calloc((size_t)per_thread, sizeof(*conns));
  struct epoll_event evs[256];
  int one = 1;
  bool with_llhttp = client == FLOOR_LLHTTP;

  if (with_llhttp)
    floor_llhttp_setup(conns);
  for (int i = 0; i < per_thread; i++) {
    struct floor_conn *c = &conns[i];
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(c->fd, (struct sockaddr *)&floor_addr, sizeof(floor_addr))) {
      note_error(w, "floor connect", strerror(errno));
      close(c->fd);
      c->fd = -1;
      continue;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    w->connects++;
    epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev);
    if (take_request()) {
      w->outstanding++;
      floor_send(w, c);
    }
  }
  while (w->outstanding > 0) {
    int n;
    w->epoll_waits++;
    n = epoll_wait(w->ep, evs, 256, -1);
    if (n < 0 && errno == EINTR)
      continue;
    for (int i = 0; i < n; i++) {
      if (with_llhttp)
        floor_llhttp_readable(w, evs[i].data.ptr);
      else
        floor_readable(w, evs[i].data.ptr);
    }
  }
  for (int i = 0; i < per_thread; i++)
    if (conns[i].fd >= 0)
      close(conns[i].fd);
  free(conns);
  return NULL;
}

/* --- finished transfers --------------------------------------------------- */

static bool curl_timeline_ok(CURL *e) {
  static const CURLINFO order[] = {
      CURLINFO_NAMELOOKUP_TIME_T,   CURLINFO_CONNECT_TIME_T,
      CURLINFO_APPCONNECT_TIME_T,   CURLINFO_PRETRANSFER_TIME_T,
      CURLINFO_STARTTRANSFER_TIME_T, CURLINFO_TOTAL_TIME_T};
  curl_off_t prev = 0, v;

  for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
    if (curl_easy_getinfo(e, order[i], &v) != CURLE_OK)
      return false;
    if (v == 0)
      v = prev; /* a phase that did not happen (reuse, no TLS): 0 */
    if (v < prev)
      return false;
    prev = v;
  }
  return true;
}

static void xfer_reap(struct worker *w) {
  const xfer_msg *msg;

  while ((msg = xfer_multi_info_read(w->xm, NULL))) {
    xfer *x = msg->x;
    note_in_flight(-1);
    w->done++;
    if (msg->result != XFER_OK)
      note_error(w, xfer_strerror(msg->result), xfer_get_error_detail(x));
    else if (xfer_get_status(x) != 200)
      note_error(w, "status", "not 200");
    if (check_timelines && !timeline_ordered(x))
      w->bad_timelines++;
    xfer_multi_remove(w->xm, x);
    w->outstanding--;
    if (take_request()) {
      xfer_multi_add(w->xm, x);
      w->outstanding++;
    } else {
      xfer_free(x);
    }
  }
}

static void curl_reap(struct worker *w) {
  CURLMsg *msg;
  int left;

  while ((msg = curl_multi_info_read(w->cm, &left))) {
    CURL *e = msg->easy_handle;
    long code = 0, connects = 0;
    if (msg->msg != CURLMSG_DONE)
      continue;
    note_in_flight(-1);
    w->done++;
    if (msg->data.result != CURLE_OK)
      note_error(w, "curl", curl_easy_strerror(msg->data.result));
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    if (msg->data.result == CURLE_OK && code != 200)
      note_error(w, "status", "not 200");
    curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects);
    w->connects += connects;
    if (check_timelines && !curl_timeline_ok(e))
      w->bad_timelines++;
    curl_multi_remove_handle(w->cm, e);
    w->outstanding--;
    if (take_request()) {
      curl_multi_add_handle(w->cm, e);
      w->outstanding++;
    } else {
      curl_easy_cleanup(e);
    }
  }
}

/* --- set-up -----------------------------------------------------------------
 */

static void share_lock(CURL *e, curl_lock_data data, curl_lock_access a,
                       void *u) {
  (void)e, (void)a, (void)u;
  pthread_mutex_lock(&share_locks[data]);
}

static void share_unlock(CURL *e, curl_lock_data data, void *u) {
  (void)e, (void)u;
  pthread_mutex_unlock(&share_locks[data]);
}

static void start_one(struct worker *w) {
  w->outstanding++;
  if (w->xm) {
    xfer *x = xfer_new();
    xfer_set_url(x, url);
    xfer_set_write_cb(x, sink, w);
    xfer_multi_add(w->xm, x);
  } else {
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, curl_sink);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, w);
    if (curl_share)
      curl_easy_setopt(e, CURLOPT_SHARE, curl_share);
    curl_multi_add_handle(w->cm, e);
  }
}

static void worker_open(struct worker *w) {
  w->ep = epoll_create1(EPOLL_CLOEXEC);
  w->deadline_ns = NO_DEADLINE;
  if (client == XFER_SHARED || client == XFER_PER_MULTI) {
    if (client == XFER_PER_MULTI)
      w->own_pool = xfer_pool_new(NULL);
    w->xm = xfer_multi_new(client == XFER_SHARED ? shared_pool : w->own_pool);
    xfer_multi_set_socket_cb(w->xm, xfer_socket, w);
    xfer_multi_set_timer_cb(w->xm, xfer_timer, w);
  } else if (client != FLOOR && client != FLOOR_LLHTTP) {
    w->cm = curl_multi_init();
    curl_multi_setopt(w->cm, CURLMOPT_SOCKETFUNCTION, curl_socket);
    curl_multi_setopt(w->cm, CURLMOPT_SOCKETDATA, w);
    curl_multi_setopt(w->cm, CURLMOPT_TIMERFUNCTION, curl_timer);
    curl_multi_setopt(w->cm, CURLMOPT_TIMERDATA, w);
  }
}

static void *worker_run(void *arg) {
  struct worker *w = arg;
  struct epoll_event evs[256];

  if (client == FLOOR || client == FLOOR_LLHTTP)
    return floor_run(w);

  for (int i = 0; i < per_thread && take_request(); i++)
    start_one(w);
  action(w, XFER_SOCKET_TIMEOUT, 0); /* kick off */
  for (;;) {
    int64_t now;
    int n, wait_ms = -1;

    if (w->xm) /* first: a transfer may end in the very first call */
      xfer_reap(w);
    else
      curl_reap(w);
    if (!w->outstanding)
      break;
    if (w->deadline_ns != NO_DEADLINE) {
      now = own_now_ns(w);
      if (now >= w->deadline_ns) {
        /* Due, busy sockets or not: the timer fires (a new one comes
         * through the callback). */
        w->deadline_ns = NO_DEADLINE;
        action(w, XFER_SOCKET_TIMEOUT, 0);
        continue;
      }
      wait_ms = (int)((w->deadline_ns - now + 999999) / 1000000);
    }
    w->epoll_waits++;
    n = epoll_wait(w->ep, evs, 256, wait_ms);
    if (n < 0 && errno == EINTR)
      continue;
    for (int i = 0; i < n; i++) {
      uint32_t e = evs[i].events;
      action(w, evs[i].data.fd,
             ((e & EPOLLIN) ? XFER_CSELECT_IN : 0) |
                 ((e & EPOLLOUT) ? XFER_CSELECT_OUT : 0) |
                 ((e & (EPOLLERR | EPOLLHUP)) ? XFER_CSELECT_ERR : 0));
    }
  }
  if (w->xm) {
    xfer_multi_stats st;
    xfer_multi_get_stats(w->xm, &st);
    w->clock_reads = st.clock_reads;
  }
  return NULL;
}

static void worker_close(struct worker *w) {
  if (w->xm)
    xfer_multi_destroy(w->xm);
  if (w->cm)
    curl_multi_cleanup(w->cm);
  close(w->ep);
}

/* The process's CPU so far, in user space and in the kernel. */
static void cpu_seconds(double *user, double *sys) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  *user = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
  *sys = (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static double wall_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* clockcount.so's counter, when it is preloaded. */
static unsigned long clock_count(void) {
  static unsigned long (*get)(void);
  static bool looked;
  if (!looked) {
    get = (unsigned long (*)(void))dlsym(RTLD_DEFAULT, "clockcount_get");
    looked = true;
  }
  return get ? get() : 0;
}

static void usage(void) {
  fprintf(stderr, "usage: bench_client --client xfer-shared|xfer-per-multi|"
                  "curl|curl-share|floor|floor-llhttp -t T -c C -n N "
                  "[--check-timelines] URL\n");
  exit(2);
}

int main(int argc, char **argv) {
  struct worker *ws;
  double user0, sys0, user, sys, wall0, cpu, wall;
  unsigned long clocks0, clocks;
  long done = 0, errors = 0, bad = 0, connects = 0;
  long epoll_waits = 0, timer_cbs = 0, own_reads = 0;
  uint64_t lib_clock_reads = 0;
  const char *first_error = "";
  const char *name = NULL;

  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--client") && i + 1 < argc)
      name = argv[++i];
    else if (!strcmp(argv[i], "-t") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-c") && i + 1 < argc)
      per_thread = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-n") && i + 1 < argc)
      total = atol(argv[++i]);
    else if (!strcmp(argv[i], "--check-timelines"))
      check_timelines = true;
    else if (argv[i][0] != '-')
      url = argv[i];
    else
      usage();
  }
  if (!name || !url || threads < 1 || per_thread < 1 || total < 1)
    usage();
  if (!strcmp(name, "xfer-shared"))
    client = XFER_SHARED;
  else if (!strcmp(name, "xfer-per-multi"))
    client = XFER_PER_MULTI;
  else if (!strcmp(name, "curl"))
    client = CURL_PLAIN;
  else if (!strcmp(name, "curl-share"))
    client = CURL_SHARE;
  else if (!strcmp(name, "floor"))
    client = FLOOR;
  else if (!strcmp(name, "floor-llhttp"))
    client = FLOOR_LLHTTP;
  else
    usage();

  curl_global_init(CURL_GLOBAL_DEFAULT);
  if ((client == FLOOR || client == FLOOR_LLHTTP) && !floor_setup()) {
    fprintf(stderr, "bench_client: %s needs http://IPv4:port/path\n", name);
    return 2;
  }
  if (client == XFER_SHARED)
    shared_pool = xfer_pool_new(NULL);
  if (client == CURL_SHARE) {
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
      pthread_mutex_init(&share_locks[i], NULL);
    curl_share = curl_share_init();
    curl_share_setopt(curl_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    curl_share_setopt(curl_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(curl_share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(curl_share, CURLSHOPT_UNLOCKFUNC, share_unlock);
  }
  ws = calloc((size_t)threads, sizeof(*ws));
  for (int i = 0; i < threads; i++) {
    ws[i].id = i;
    worker_open(&ws[i]);
  }

  clocks0 = clock_count();
  wall0 = wall_seconds();
  cpu_seconds(&user0, &sys0);
  for (int i = 0; i < threads; i++)
    pthread_create(&ws[i].thread, NULL, worker_run, &ws[i]);
  for (int i = 0; i < threads; i++)
    pthread_join(ws[i].thread, NULL);
  cpu_seconds(&user, &sys);
  user -= user0;
  sys -= sys0;
  cpu = user + sys;
  wall = wall_seconds() - wall0;
  clocks = clock_count() - clocks0;

  for (int i = 0; i < threads; i++) {
    done += ws[i].done;
    errors += ws[i].errors;
    bad += ws[i].bad_timelines;
    connects += ws[i].connects;
    epoll_waits += ws[i].epoll_waits;
    timer_cbs += ws[i].timer_cbs;
    own_reads += ws[i].clock_reads_own;
    lib_clock_reads += ws[i].clock_reads;
    if (ws[i].errors && !*first_error)
      first_error = ws[i].first_error;
  }
  /* The driver's own reads: the loops', and our two of the wall clock;
   * clock_count() is 0 without clockcount.so (CPU runs). */
  own_reads += 2;
  clocks = clocks >= (unsigned long)own_reads
               ? clocks - (unsigned long)own_reads
               : 0;
  if (client == XFER_SHARED || client == XFER_PER_MULTI) {
    connects = 0;
    for (int i = 0; i < threads; i++) {
      xfer_pool_stats ps;
      xfer_pool *p = client == XFER_SHARED ? shared_pool : ws[i].own_pool;
      xfer_pool_get_stats(p, &ps);
      connects += (long)ps.opened_total;
      if (client == XFER_SHARED)
        break;
    }
  }
  for (int i = 0; i < threads; i++) {
    worker_close(&ws[i]);
    xfer_pool_destroy(ws[i].own_pool);
  }
  printf("{\"client\":\"%s\",\"threads\":%d,\"per_thread\":%d,"
         "\"requests\":%ld,\"errors\":%ld,\"timeline_violations\":%ld,"
         "\"wall_s\":%.6f,\"cpu_s\":%.6f,\"rps\":%.1f,"
         "\"cpu_us_per_req\":%.3f,\"user_us_per_req\":%.3f,"
         "\"sys_us_per_req\":%.3f,\"clock_reads\":%lu,"
         "\"clock_reads_per_req\":%.4f,\"lib_clock_reads\":%llu,"
         "\"connections\":%ld,\"peak_in_flight\":%ld,"
         "\"epoll_waits_per_req\":%.4f,\"timer_cbs_per_req\":%.4f,"
         "\"first_error\":\"%s\"}\n",
         name, threads, per_thread, done, errors, check_timelines ? bad : -1,
         wall, cpu,
         done / wall, cpu * 1e6 / (double)done, user * 1e6 / (double)done,
         sys * 1e6 / (double)done, clocks,
         (double)clocks / (double)done, (unsigned long long)lib_clock_reads,
         connects, atomic_load(&in_flight_peak),
         (double)epoll_waits / (double)done, (double)timer_cbs / (double)done,
         first_error);
  if (shared_pool)
    xfer_pool_destroy(shared_pool);
  if (curl_share)
    curl_share_cleanup(curl_share);
  curl_global_cleanup();
  free(ws);
  return errors ? 1 : 0;
}
