/*
 * Socket scaling: one multi holds K transfers in flight that our test
 * server never answers (its /never path), while a steady stream of fast
 * keep-alive GETs (C in flight, N in total) runs against URL. Prints the
 * client CPU per fast request: with event tracking indexed by fd and
 * timers in a heap, it should not depend on K.
 *
 *   bench_scaling -k K [-c C] [-n N] URL
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xfer/xfer.h>

#include "testserver.h"

static int ep;
static int64_t deadline_ns = -1; /* the timer callback's, kept; -1: none */
static long fast_done, fast_started, fast_total = 20000, errors;
static const char *fast_url;

static int on_socket(xfer_multi *m, int fd, int what, void *u, void *sp) {
  struct epoll_event ev = {.data.fd = fd};

  if (what == XFER_POLL_REMOVE)
    return epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) ? -1 : 0;
  ev.events = ((what & XFER_POLL_IN) ? EPOLLIN : 0) |
              ((what & XFER_POLL_OUT) ? EPOLLOUT : 0);
  if (!sp) {
    xfer_multi_assign(m, fd, &ep);
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) ? -1 : 0;
  }
  return epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) ? -1 : 0;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The deadline is kept as an absolute time, as in bench_client.c and
 * libcurl's ephiperfifo: it fires when it passes, however busy the
 * sockets are (the held transfers' timers run under load too). */
static int on_timer(xfer_multi *m, long ms, void *u) {
  (void)m, (void)u;
  deadline_ns = ms < 0 ? -1 : now_ns() + (int64_t)ms * 1000000;
  return 0;
}

static size_t discard(const char *d, size_t n, void *u) {
  (void)d, (void)u;
  return n;
}

static void add(xfer_multi *m, const char *url, void *tag) {
  xfer *x = xfer_new();
  xfer_set_url(x, url);
  xfer_set_write_cb(x, discard, NULL);
  xfer_set_private(x, tag);
  xfer_multi_add(m, x);
}

static int fast_tag;

/* One turn of the loop, waiting at most max_ms (-1: the timer's wait);
 * finished fast transfers start the next. */
static void turn(xfer_multi *m, int max_ms) {
  struct epoll_event evs[256];
  const xfer_msg *msg;
  int wait = -1;
  int n;

  if (deadline_ns >= 0 && now_ns() >= deadline_ns) {
    deadline_ns = -1;
    xfer_multi_socket_action(m, XFER_SOCKET_TIMEOUT, 0, NULL);
  }
  if (deadline_ns >= 0) {
    int64_t left = deadline_ns - now_ns();
    wait = left <= 0 ? 0 : (int)((left + 999999) / 1000000);
  }
  if (max_ms >= 0 && (wait < 0 || wait > max_ms))
    wait = max_ms;
  n = epoll_wait(ep, evs, 256, wait);
  for (int i = 0; i < n; i++) {
    uint32_t e = evs[i].events;
    xfer_multi_socket_action(m, evs[i].data.fd,
                             ((e & EPOLLIN) ? XFER_CSELECT_IN : 0) |
                                 ((e & EPOLLOUT) ? XFER_CSELECT_OUT : 0) |
                                 ((e & (EPOLLERR | EPOLLHUP))
                                      ? XFER_CSELECT_ERR
                                      : 0),
                             NULL);
  }
  while ((msg = xfer_multi_info_read(m, NULL))) {
    xfer *x = msg->x;
    if (xfer_get_private(x) != &fast_tag) {
      errors++; /* a held transfer ended: the measurement is void */
      continue;
    }
    fast_done++;
    if (msg->result != XFER_OK)
      errors++;
    xfer_multi_remove(m, x);
    if (fast_started < fast_total) {
      fast_started++;
      xfer_multi_add(m, x);
    } else {
      xfer_free(x);
    }
  }
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* The server of the held transfers, in a child process: each side then
 * needs only K descriptors. Returns its port; the child lives until
 * killed. */
static int start_server(pid_t *child) {
  int fds[2], port = 0;

  if (pipe(fds))
    return 0;
  *child = fork();
  if (*child == 0) {
    struct ts_server *srv = ts_start(&(struct ts_config){.listen_backlog =
                                                             4096});
    port = srv ? ts_port(srv) : 0;
    if (write(fds[1], &port, sizeof(port)) != sizeof(port))
      _exit(1);
    for (;;)
      pause();
  }
  close(fds[1]);
  if (*child < 0 || read(fds[0], &port, sizeof(port)) != sizeof(port))
    port = 0;
  close(fds[0]);
  return port;
}

int main(int argc, char **argv) {
  long held = 10, per = 16;
  struct rlimit rl;
  xfer_multi *m;
  xfer_multi_stats ms = {0};
  char never[64];
  double cpu;
  time_t give_up;
  pid_t child;
  int port;

  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-k") && i + 1 < argc)
      held = atol(argv[++i]);
    else if (!strcmp(argv[i], "-c") && i + 1 < argc)
      per = atol(argv[++i]);
    else if (!strcmp(argv[i], "-n") && i + 1 < argc)
      fast_total = atol(argv[++i]);
    else
      fast_url = argv[i];
  }
  if (!fast_url || held < 0 || per < 1) {
    fprintf(stderr, "usage: bench_scaling -k K [-c C] [-n N] URL\n");
    return 2;
  }
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < (rlim_t)(held + 1024)) {
    rl.rlim_cur = (rlim_t)(held + 1024);
    if (rl.rlim_max < rl.rlim_cur)
      rl.rlim_max = rl.rlim_cur;
    if (setrlimit(RLIMIT_NOFILE, &rl)) {
      perror("bench_scaling: RLIMIT_NOFILE");
      return 1;
    }
  }
  port = start_server(&child);
  if (!port) {
    fprintf(stderr, "bench_scaling: the test server did not start\n");
    return 1;
  }
  ep = epoll_create1(EPOLL_CLOEXEC);
  m = xfer_multi_new(NULL);
  xfer_multi_set_socket_cb(m, on_socket, NULL);
  xfer_multi_set_timer_cb(m, on_timer, NULL);
  snprintf(never, sizeof(never), "http://127.0.0.1:%d/never", port);
  for (long i = 0; i < held; i++)
    add(m, never, NULL);
  xfer_multi_socket_action(m, XFER_SOCKET_TIMEOUT, 0, NULL);
  give_up = time(NULL) + 60;
  do { /* until every held transfer waits on its socket */
    turn(m, 10);
    xfer_multi_get_stats(m, &ms);
  } while (ms.sockets_tracked < (uint64_t)held && time(NULL) < give_up);
  for (int i = 0; i < 20; i++) /* the last requests go out */
    turn(m, 10);
  if (ms.sockets_tracked < (uint64_t)held || errors) {
    fprintf(stderr, "bench_scaling: only %llu of %ld held transfers got "
            "going\n", (unsigned long long)ms.sockets_tracked, held);
    kill(child, SIGTERM);
    return 1;
  }

  cpu = cpu_seconds();
  for (long i = 0; i < per && fast_started < fast_total; i++, fast_started++)
    add(m, fast_url, &fast_tag);
  xfer_multi_socket_action(m, XFER_SOCKET_TIMEOUT, 0, NULL);
  while (fast_done < fast_total && !errors)
    turn(m, -1);
  cpu = cpu_seconds() - cpu;

  printf("{\"held\":%ld,\"fast_requests\":%ld,\"errors\":%ld,"
         "\"cpu_us_per_fast_req\":%.3f}\n",
         held, fast_done, errors, cpu * 1e6 / (double)(fast_done ? fast_done : 1));
  xfer_multi_destroy(m); /* the held ones are removed with it */
  kill(child, SIGTERM);
  waitpid(child, NULL, 0);
  close(ep);
  return errors ? 1 : 0;
}
