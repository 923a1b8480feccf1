/*
 * The soak (make stress): 4 threads, each with its own epoll loop and
 * multi, on one shared pool; N transfers (1,000,000 by default), bounded
 * in time (600 s), mixing keep-alive GETs against nginx (URL argument)
 * with the fault routes of our test server (in this process): resets,
 * truncated bodies, garbage status lines, oversized headers, overflowing
 * chunks, closes without a response, error statuses. Each fault has the
 * error it must give; anything else is unexpected.
 *
 * Passes with 0 unexpected results, 0 timeline violations, the same open
 * fds at the end as before the multis were made, and RSS grown by less
 * than 10% from the end of the warm-up (the first tenth) to the end.
 *
 *   stress [-n TRANSFERS] [-s SECONDS] NGINX-URL
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>
#include <xfer/xfer.h>

#include "testserver.h"
#include "timeline_check.h"

#define THREADS 4
#define IN_FLIGHT 16

struct route {
  const char *path;  /* on the test server; NULL: the nginx URL */
  xfer_code expect;  /* the result it must give */
  int weight;        /* in 1000 */
};

static const struct route routes[] = {
    {NULL, XFER_OK, 900},
    {"/bytes/3000", XFER_OK, 30},
    {"/status/503", XFER_OK, 10},
    {"/rst/1000", XFER_E_RECV, 10},
    {"/partial/100/10", XFER_E_PEER_CLOSED, 10},
    {"/malformed/status", XFER_E_BAD_STATUS_LINE, 10},
    {"/many-headers/5000", XFER_E_HEADERS_TOO_LARGE, 10},
    {"/chunk-overflow", XFER_E_BAD_CHUNK, 10},
    {"/close-now", XFER_E_PEER_CLOSED, 10},
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))

static char urls[NROUTES][160];
static xfer_pool *pool;
static long total = 1000000;
static double seconds = 600, started;
static atomic_long issued, finished;
static atomic_long unexpected, violations, by_code[64];
static char first_unexpected[256];
static pthread_mutex_t first_lock = PTHREAD_MUTEX_INITIALIZER;
static long rss_warm; /* pages, at the end of the warm-up */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static long open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  long n = 0;

  if (!d)
    return -1;
  while (readdir(d))
    n++;
  closedir(d);
  return n - 3; /* ".", ".." and the directory's own fd */
}

static long rss_pages(void) {
  long size = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");

  if (f) {
    if (fscanf(f, "%ld %ld", &size, &rss) != 2)
      rss = 0;
    fclose(f);
  }
  return rss;
}

struct worker {
  pthread_t thread;
  int ep;
  long timeout_ms;
  long outstanding;
  xfer_multi *m;
  unsigned seed;
  int route[IN_FLIGHT];
  xfer *x[IN_FLIGHT];
};

static int on_socket(xfer_multi *m, int fd, int what, void *userp,
                     void *socketp) {
  struct worker *w = userp;
  struct epoll_event ev = {.data.fd = fd};

  if (what == XFER_POLL_REMOVE)
    return epoll_ctl(w->ep, EPOLL_CTL_DEL, fd, NULL) ? -1 : 0;
  ev.events = ((what & XFER_POLL_IN) ? EPOLLIN : 0) |
              ((what & XFER_POLL_OUT) ? EPOLLOUT : 0);
  if (!socketp) {
    xfer_multi_assign(m, fd, w);
    return epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) ? -1 : 0;
  }
  return epoll_ctl(w->ep, EPOLL_CTL_MOD, fd, &ev) ? -1 : 0;
}

static int on_timer(xfer_multi *m, long ms, void *userp) {
  (void)m;
  ((struct worker *)userp)->timeout_ms = ms;
  return 0;
}

/* Starts slot i's next transfer, on a route drawn by weight. */
static void start(struct worker *w, int i) {
  int r = 0, pick;

  if (atomic_fetch_add(&issued, 1) >= total || now_s() - started > seconds)
    return;
  pick = rand_r(&w->seed) % 1000;
  while (pick >= routes[r].weight && r + 1 < (int)NROUTES)
    pick -= routes[r++].weight;
  w->route[i] = r;
  xfer_set_url(w->x[i], urls[r]);
  if (xfer_multi_add(w->m, w->x[i]) == XFER_M_OK)
    w->outstanding++;
}

static void reap(struct worker *w) {
  const xfer_msg *msg;

  while ((msg = xfer_multi_info_read(w->m, NULL))) {
    int i = (int)(intptr_t)xfer_get_private(msg->x);
    const struct route *r = &routes[w->route[i]];
    long done = atomic_fetch_add(&finished, 1) + 1;

    atomic_fetch_add(&by_code[msg->result & 63], 1);
    if (msg->result != r->expect) {
      if (atomic_fetch_add(&unexpected, 1) == 0) {
        pthread_mutex_lock(&first_lock);
        snprintf(first_unexpected, sizeof(first_unexpected),
                 "%s: %s, expected %s: %s", urls[w->route[i]],
                 xfer_strerror(msg->result), xfer_strerror(r->expect),
                 xfer_get_error_detail(msg->x));
        pthread_mutex_unlock(&first_lock);
      }
    } else if (msg->result == XFER_OK && !timeline_ordered(msg->x)) {
      atomic_fetch_add(&violations, 1);
    }
    if (done == total / 10) /* the end of the warm-up */
      rss_warm = rss_pages();
    xfer_multi_remove(w->m, msg->x);
    w->outstanding--;
    start(w, i);
  }
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  struct epoll_event evs[128];

  for (int i = 0; i < IN_FLIGHT; i++)
    start(w, i);
  xfer_multi_socket_action(w->m, XFER_SOCKET_TIMEOUT, 0, NULL);
  for (;;) {
    int n;
    reap(w);
    if (!w->outstanding)
      break;
    n = epoll_wait(w->ep, evs, 128, (int)w->timeout_ms);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      w->timeout_ms = -1;
      xfer_multi_socket_action(w->m, XFER_SOCKET_TIMEOUT, 0, NULL);
    }
    for (int i = 0; i < n; i++) {
      uint32_t e = evs[i].events;
      xfer_multi_socket_action(
          w->m, evs[i].data.fd,
          ((e & EPOLLIN) ? XFER_CSELECT_IN : 0) |
              ((e & EPOLLOUT) ? XFER_CSELECT_OUT : 0) |
              ((e & (EPOLLERR | EPOLLHUP)) ? XFER_CSELECT_ERR : 0),
          NULL);
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  struct worker ws[THREADS];
  struct ts_server *faults;
  const char *nginx = NULL;
  long fds_before, fds_after, rss_start, rss_end;
  bool ok;

  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-n") && i + 1 < argc)
      total = atol(argv[++i]);
    else if (!strcmp(argv[i], "-s") && i + 1 < argc)
      seconds = atof(argv[++i]);
    else
      nginx = argv[i];
  }
  if (!nginx || total < 10) {
    fprintf(stderr, "usage: stress [-n TRANSFERS] [-s SECONDS] NGINX-URL\n");
    return 2;
  }
  fds_before = open_fds(); /* before anything of ours, the server too */
  rss_start = rss_pages();
  faults = ts_start(NULL);
  for (size_t r = 0; r < NROUTES; r++) {
    if (routes[r].path)
      snprintf(urls[r], sizeof(urls[r]), "http://127.0.0.1:%d%s",
               ts_port(faults), routes[r].path);
    else
      snprintf(urls[r], sizeof(urls[r]), "%s", nginx);
  }
  pool = xfer_pool_new(NULL);
  memset(ws, 0, sizeof(ws));
  for (int t = 0; t < THREADS; t++) {
    struct worker *w = &ws[t];
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    w->timeout_ms = -1;
    w->seed = 1234u + (unsigned)t;
    w->m = xfer_multi_new(pool);
    xfer_multi_set_socket_cb(w->m, on_socket, w);
    xfer_multi_set_timer_cb(w->m, on_timer, w);
    for (int i = 0; i < IN_FLIGHT; i++) {
      w->x[i] = xfer_new();
      xfer_set_private(w->x[i], (void *)(intptr_t)i);
      xfer_set_timeout_ms(w->x[i], 10000);
    }
  }
  started = now_s();
  for (int t = 0; t < THREADS; t++)
    pthread_create(&ws[t].thread, NULL, worker_main, &ws[t]);
  for (int t = 0; t < THREADS; t++)
    pthread_join(ws[t].thread, NULL);
  rss_end = rss_pages();
  for (int t = 0; t < THREADS; t++) {
    xfer_multi_destroy(ws[t].m);
    for (int i = 0; i < IN_FLIGHT; i++)
      xfer_free(ws[t].x[i]);
    close(ws[t].ep);
  }
  xfer_pool_destroy(pool);
  ts_stop(faults);
  fds_after = open_fds();

  printf("stress: %ld transfers in %.0f s, 4 threads x %d in flight\n",
         atomic_load(&finished), now_s() - started, IN_FLIGHT);
  printf("  results by kind:");
  for (int c = 0; c < 64; c++)
    if (atomic_load(&by_code[c]))
      printf(" %s: %ld;", xfer_strerror((xfer_code)c), atomic_load(&by_code[c]));
  printf("\n  unexpected: %ld%s%s\n", atomic_load(&unexpected),
         first_unexpected[0] ? " (first: " : "",
         first_unexpected[0] ? first_unexpected : "");
  if (first_unexpected[0])
    printf(")\n");
  printf("  timeline violations: %ld\n", atomic_load(&violations));
  printf("  fds: %ld before, %ld after\n", fds_before, fds_after);
  printf("  RSS: %ld KiB at the start, %ld KiB after the warm-up, %ld KiB "
         "at the end (%+.1f%% over the warm-up's: the bound is 10%%)\n",
         rss_start * 4, rss_warm * 4, rss_end * 4,
         rss_warm ? 100.0 * (double)(rss_end - rss_warm) / (double)rss_warm
                  : 0.0);
  ok = atomic_load(&unexpected) == 0 && atomic_load(&violations) == 0 &&
       fds_before == fds_after && rss_warm > 0 &&
       (double)rss_end < 1.10 * (double)rss_warm;
  printf("stress: %s\n", ok ? "passed" : "FAILED");
  return ok ? 0 : 1;
}
