/* xfer-load's worker threads (see worker.h). */
#define _GNU_SOURCE
#include "worker.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* One request in flight at a time. */
struct slot {
  struct worker *w;
  xfer *x;
  bool busy;
  double added_s; /* read just before its add: its latency starts there */
  int out_line; /* -o: the target's line, which names its body's file;
                   0: no file (no -o, or it could not be written) */
  FILE *out;           /* opened at the first body byte */
};

double load_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long take_item(struct load_run *run) {
  long i;

  if (atomic_load(&run->stop))
    return -1;
  i = atomic_fetch_add(&run->next_item, 1);
  if (run->total_items && i >= run->total_items)
    return -1;
  return i;
}

/* -o: the file of the slot's body (made when needed: a path a slot
 * would cost a million slots 4 GB). */
static void body_path(const struct slot *s, char *path, size_t cap) {
  snprintf(path, cap, "%s/%d.body", s->w->run->opts->out_dir, s->out_line);
}

static size_t on_body(const char *data, size_t len, void *userp) {
  struct slot *s = userp;
  char path[PATH_MAX];

  s->w->body_bytes += len;
  if (s->out_line && !s->out) {
    body_path(s, path, sizeof(path));
    if (!(s->out = fopen(path, "w"))) {
      fprintf(stderr, "xfer-load: cannot write %s: %s\n", path,
              strerror(errno));
      s->out_line = 0; /* fetched anyway; said once */
    }
  }
  if (s->out && fwrite(data, 1, len, s->out) != len)
    return 0; /* the transfer fails with a write-callback error */
  return len;
}

/* The body file of a finished request: kept (empty for an empty body)
 * when it succeeded, removed when it failed or was cut, so no file stands
 * for a body that did not come. */
static void close_body_file(struct slot *s, bool ok) {
  char path[PATH_MAX];

  if (!s->out_line)
    return;
  body_path(s, path, sizeof(path));
  if (s->out) {
    fclose(s->out);
    s->out = NULL;
  } else if (ok) {
    FILE *empty = fopen(path, "w");
    if (empty)
      fclose(empty);
    return;
  }
  if (!ok)
    unlink(path);
}

static int on_socket(xfer_multi *m, int fd, int what, void *userp,
                     void *socketp) {
  struct worker *w = userp;
  struct epoll_event ev = {.data.fd = fd};

  if (what == XFER_POLL_REMOVE)
    return epoll_ctl(w->ep, EPOLL_CTL_DEL, fd, NULL) ? -1 : 0;
  /* Level-triggered: the multi reads and writes until EAGAIN only when it
   * has room, so an edge could be missed. */
  ev.events = ((what & XFER_POLL_IN) ? EPOLLIN : 0) |
              ((what & XFER_POLL_OUT) ? EPOLLOUT : 0);
  if (!socketp) { /* remembered once epoll knows it */
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev))
      return -1;
    xfer_multi_assign(m, fd, w);
    return 0;
  }
  return epoll_ctl(w->ep, EPOLL_CTL_MOD, fd, &ev) ? -1 : 0;
}

/* The timer callback, kept as a deadline: the loop fires it when it is
 * due, however busy the sockets are (a request's timeout must not wait
 * for a quiet moment). */
static int on_timer(xfer_multi *m, long ms, void *userp) {
  (void)m;
  ((struct worker *)userp)->timer_at = ms < 0 ? -1 : load_now_s() + ms / 1e3;
  return 0;
}

/* Starts the slot's next request; false when there is none. */
static bool start(struct slot *s) {
  struct worker *w = s->w;
  struct load_run *run = w->run;
  const struct target *t;
  long item = take_item(run);

  if (item < 0)
    return false;
  t = &run->targets->items[item % run->targets->n];
  xfer_set_url(s->x, t->url);
  s->out_line = run->fetch_list && run->opts->out_dir ? t->line : 0;
  s->added_s = load_now_s();
  if (!w->first_add_s)
    w->first_add_s = s->added_s;
  if (xfer_multi_add(w->m, s->x) != XFER_M_OK) {
    w->done++;
    atomic_fetch_add(&run->failed, 1);
    if (!w->by_code[XFER_E_OUT_OF_MEMORY]++)
      w->first_detail[XFER_E_OUT_OF_MEMORY] = strdup("xfer_multi_add failed");
    atomic_fetch_add(&run->finished, 1);
    return false;
  }
  s->busy = true;
  w->outstanding++;
  return true;
}

static void record(struct worker *w, struct slot *s, xfer_code result) {
  xfer *x = s->x;
  int code = (int)result, status = xfer_get_status(x);
  xfer_timeline tl;
  bool timed = xfer_get_timeline(x, &tl) == XFER_OK && tl.total_us >= 0;
  /* When it ended, by the library's own stamps: the run's elapsed time
   * ends there, not when this loop came round to read the message (for
   * one request, the elapsed time is its latency). */
  double done_s = timed ? s->added_s + (double)tl.total_us / 1e6
                        : load_now_s();

  w->done++;
  if (done_s > w->last_done_s)
    w->last_done_s = done_s;
  atomic_fetch_add(&w->run->finished, 1);
  if (code != XFER_OK) {
    atomic_fetch_add(&w->run->failed, 1);
    if (code < 0 || code >= LOAD_CODES)
      code = LOAD_CODES - 1;
    if (!w->by_code[code]++)
      w->first_detail[code] = strdup(xfer_get_error_detail(x));
    if (timed)
      lat_add(&w->failed_lat, (uint64_t)tl.total_us);
    return;
  }
  w->ok++;
  if (status >= 100 && status < 600)
    w->by_status[status]++;
  if (xfer_get_reused(x))
    w->reused++;
  if (timed) {
    lat_add(&w->ok_lat, (uint64_t)tl.total_us);
    w->sum_namelookup += (uint64_t)tl.namelookup_us;
    w->sum_connect += (uint64_t)tl.connect_us;
    w->sum_start += (uint64_t)tl.starttransfer_us;
  }
}

static void finish(struct slot *s) {
  struct worker *w = s->w;

  xfer_multi_remove(w->m, s->x); /* finished: reads no clock */
  s->busy = false;
  w->outstanding--;
}

static void reap(struct worker *w) {
  const xfer_msg *msg;

  while ((msg = xfer_multi_info_read(w->m, NULL))) {
    struct slot *s = xfer_get_private(msg->x);
    record(w, s, msg->result);
    close_body_file(s, msg->result == XFER_OK);
    finish(s);
    start(s);
  }
}

/* The stop's grace is over: the requests still in flight are stopped and
 * counted apart (neither a success nor a failure). */
static void cut_in_flight(struct worker *w) {
  for (int i = 0; i < w->nslots; i++) {
    struct slot *s = &w->slots[i];
    if (!s->busy)
      continue;
    close_body_file(s, false);
    finish(s);
    w->cut++;
  }
}

static void action(struct worker *w, int fd, int events) {
  xfer_multi_socket_action(w->m, fd, events, &w->running);
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  struct epoll_event evs[128];

  for (int i = 0; i < w->nslots; i++)
    if (!start(&w->slots[i]))
      break;
  action(w, XFER_SOCKET_TIMEOUT, 0);
  for (;;) {
    int n, wait_ms;
    reap(w);
    if (w->outstanding && atomic_load(&w->run->cut))
      cut_in_flight(w);
    if (!w->outstanding)
      break;
    wait_ms = -1;
    if (w->timer_at >= 0) {
      double left = w->timer_at - load_now_s();
      if (left <= 0) {
        w->timer_at = -1; /* fired: the callback arms the next */
        action(w, XFER_SOCKET_TIMEOUT, 0);
        continue;
      }
      /* Never wake before it; at most an hour at a time (a deadline
       * weeks away, a -m of years, would not fit an int). */
      wait_ms = left > 3600 ? 3600 * 1000 : (int)(left * 1e3) + 1;
    }
    n = epoll_wait(w->ep, evs, 128, wait_ms);
    if (n < 0 && errno == EINTR) /* a signal landed on this thread */
      continue;
    for (int i = 0; i < n; i++) {
      uint32_t e = evs[i].events;
      if (evs[i].data.fd == w->wake_fd) {
        eventfd_t drained;
        eventfd_read(w->wake_fd, &drained);
        continue;
      }
      action(w, evs[i].data.fd,
             ((e & EPOLLIN) ? XFER_CSELECT_IN : 0) |
                 ((e & EPOLLOUT) ? XFER_CSELECT_OUT : 0) |
                 ((e & (EPOLLERR | EPOLLHUP)) ? XFER_CSELECT_ERR : 0));
    }
  }
  atomic_fetch_sub(&w->run->workers_left, 1);
  eventfd_write(w->run->done_fd, 1);
  return NULL;
}

static void init_slot(struct worker *w, struct slot *s) {
  const struct load_opts *o = w->run->opts;

  s->w = w;
  if (!(s->x = xfer_new())) {
    fprintf(stderr, "xfer-load: out of memory\n");
    exit(1);
  }
  xfer_set_private(s->x, s);
  xfer_set_write_cb(s->x, on_body, s);
  xfer_set_timeout_ms(s->x, o->timeout_ms);
  if (o->method)
    xfer_set_method(s->x, o->method);
  if (o->data)
    xfer_set_body(s->x, o->data, strlen(o->data));
  for (int h = 0; h < o->nheaders; h++)
    xfer_add_header(s->x, o->headers[h].name, o->headers[h].value);
}

void worker_init(struct worker *w, int id, int nslots, struct load_run *run) {
  struct epoll_event wake = {.events = EPOLLIN};

  memset(w, 0, sizeof(*w));
  w->id = id;
  w->run = run;
  w->timer_at = -1;
  w->nslots = nslots;
  w->ep = epoll_create1(EPOLL_CLOEXEC);
  w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  wake.data.fd = w->wake_fd;
  if (run->opts->per_thread_pool)
    w->own_pool = xfer_pool_new(NULL);
  w->m = xfer_multi_new(run->opts->per_thread_pool ? w->own_pool
                                                   : run->shared_pool);
  w->slots = calloc((size_t)nslots, sizeof(*w->slots));
  if (w->ep < 0 || w->wake_fd < 0 || !w->m || !w->slots ||
      epoll_ctl(w->ep, EPOLL_CTL_ADD, w->wake_fd, &wake)) {
    fprintf(stderr, "xfer-load: cannot set up thread %d: %s\n", id,
            strerror(errno));
    exit(1);
  }
  xfer_multi_set_socket_cb(w->m, on_socket, w);
  xfer_multi_set_timer_cb(w->m, on_timer, w);
  if (run->opts->dns_servers) /* checked with the options */
    xfer_multi_set_dns_servers(w->m, run->opts->dns_servers);
  for (int i = 0; i < nslots; i++)
    init_slot(w, &w->slots[i]);
}

void worker_start(struct worker *w) {
  int rc = pthread_create(&w->thread, NULL, worker_main, w);

  if (rc) {
    fprintf(stderr, "xfer-load: cannot start thread %d: %s\n", w->id,
            strerror(rc));
    exit(1);
  }
}

void worker_wake(struct worker *w) { eventfd_write(w->wake_fd, 1); }

void worker_read_multi_stats(struct worker *w) {
  xfer_multi_stats ms;

  if (xfer_multi_get_stats(w->m, &ms) == XFER_M_OK)
    w->clock_reads = ms.clock_reads;
}

void worker_free(struct worker *w) {
  xfer_multi_destroy(w->m);
  for (int s = 0; s < w->nslots; s++)
    xfer_free(w->slots[s].x);
  xfer_pool_destroy(w->own_pool);
  close(w->ep);
  close(w->wake_fd);
  free(w->slots);
  for (int code = 0; code < LOAD_CODES; code++)
    free(w->first_detail[code]);
}
