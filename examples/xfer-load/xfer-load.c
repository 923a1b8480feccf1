/*
 * xfer-load: a load generator and fetcher on libxfer.
 *
 * T threads, each with its own epoll loop driving its own multi (socket
 * callback, timer callback, xfer_multi_socket_action), C requests in
 * flight across them, all on one shared connection pool (or a pool per
 * thread). With no URL it starts the embedded test server on 127.0.0.1
 * and runs against that, so it works on a machine with nothing else
 * running. `xfer-load --help` lists the options; docs/xfer-load.md tells
 * the rest.
 *
 * The modules: options.c (the command line), targets.c (what to fetch),
 * worker.c (the threads), stats.c (latency figures), report.c (text and
 * JSON); this file starts them, waits, stops on a signal or at the end of
 * -d, and reports.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xfer/xfer.h>

#include "options.h"
#include "report.h"
#include "targets.h"
#include "testserver.h"
#include "worker.h"

/* How long the requests in flight get to finish once a stop was asked
 * (Ctrl-C, SIGTERM, the end of -d) before they are cut. A second signal
 * cuts them at once. */
#define GRACE_S 1.0
#define PROGRESS_S 0.25

static struct load_run run;
static volatile sig_atomic_t first_signal, signals_seen;

static void on_signal(int sig) {
  int saved = errno;

  if (!first_signal)
    first_signal = sig;
  signals_seen++;
  eventfd_write(run.done_fd, 1); /* async-signal-safe: one write() */
  errno = saved;
}

/* Installed explicitly: a run started in the background of a script
 * inherits SIGINT ignored, and must stop on it all the same. */
static void install_signal_handlers(void) {
  struct sigaction sa;

  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

/* Connections open now: the shared pool's, or the sum of the threads'
 * own pools (their statistics are readable from any thread). */
static uint64_t open_connections(const struct worker *ws, int n) {
  xfer_pool_stats ps;
  uint64_t open = 0;

  if (run.shared_pool)
    return xfer_pool_get_stats(run.shared_pool, &ps) == XFER_OK ? ps.open
                                                                 : 0;
  for (int i = 0; i < n; i++)
    if (ws[i].own_pool && xfer_pool_get_stats(ws[i].own_pool, &ps) == XFER_OK)
      open += ps.open;
  return open;
}

static void progress_line(const struct worker *ws, int n, double started,
                          double now) {
  long done = atomic_load(&run.finished), failed = atomic_load(&run.failed);
  uint64_t open = open_connections(ws, n);
  double left = started + (double)run.opts->duration_ms / 1000 - now;

  if (run.total_items)
    printf("\r  %ld / %ld done, %ld failed, %.0f req/s, %" PRIu64
           " open   ",
           done, run.total_items, failed, done / (now - started), open);
  else
    printf("\r  %ld done, %ld failed, %.0f req/s, %.1f s left, %" PRIu64
           " open   ",
           done, failed, done / (now - started), left > 0 ? left : 0, open);
  fflush(stdout);
}

/* poll()'s timeout until `wake` (-1: none): never negative, and at most
 * an hour at a time (a -d of years would overflow an int). */
static int wait_ms(double wake, double now) {
  double ms = (wake - now) * 1000 + 1;

  if (wake < 0)
    return -1;
  if (ms < 0)
    return 0;
  return ms > 3600000 ? 3600000 : (int)ms;
}

/* Waits for the workers: stops new requests on a signal or at the end of
 * -d, cuts those still in flight after the grace, and draws the progress
 * line on a terminal. Returns what stopped the run, or NULL. */
static const char *wait_for_workers(struct worker *ws, int n, bool progress) {
  double started = load_now_s(), stop_at = 0, next_progress = started;
  double end = run.opts->duration_ms
                   ? started + (double)run.opts->duration_ms / 1000
                   : 0;
  const char *stopped_by = NULL;
  bool cut = false;

  while (atomic_load(&run.workers_left) > 0) {
    struct pollfd pfd = {.fd = run.done_fd, .events = POLLIN};
    double now = load_now_s(), wake = -1;
    eventfd_t drained;

    if (progress)
      wake = next_progress;
    if (end && !stopped_by && (wake < 0 || end < wake))
      wake = end;
    if (stopped_by && !cut && (wake < 0 || stop_at + GRACE_S < wake))
      wake = stop_at + GRACE_S;
    poll(&pfd, 1, wait_ms(wake, now));
    eventfd_read(run.done_fd, &drained);
    now = load_now_s();
    if (!stopped_by && (first_signal || (end && now >= end))) {
      stopped_by = first_signal == SIGINT    ? "SIGINT"
                   : first_signal == SIGTERM ? "SIGTERM"
                                             : "duration";
      stop_at = now;
      atomic_store(&run.stop, true);
    }
    if (stopped_by && !cut &&
        (now >= stop_at + GRACE_S || signals_seen > 1)) {
      cut = true;
      atomic_store(&run.cut, true);
      for (int i = 0; i < n; i++)
        worker_wake(&ws[i]);
    }
    if (progress && now >= next_progress) {
      progress_line(ws, n, started, now);
      next_progress = now + PROGRESS_S;
    }
  }
  if (progress)
    printf("\r%80s\r", "");
  /* A signal that came after the last request ended still counts. */
  if (!stopped_by && first_signal)
    stopped_by = first_signal == SIGINT ? "SIGINT" : "SIGTERM";
  return stopped_by;
}

/* The time from the first request added to the last one done. */
static double elapsed_s(const struct worker *ws, int n) {
  double first = 0, last = 0;

  for (int i = 0; i < n; i++) {
    if (ws[i].first_add_s && (!first || ws[i].first_add_s < first))
      first = ws[i].first_add_s;
    if (ws[i].last_done_s > last)
      last = ws[i].last_done_s;
  }
  return first && last > first ? last - first : 0;
}

int main(int argc, char **argv) {
  static struct load_opts opts;
  static struct target_list targets;
  static struct load_totals t;
  struct ts_server *embedded = NULL;
  struct worker *ws;
  char what[600], detail[256];
  bool progress = isatty(STDOUT_FILENO);
  int status;

  load_parse_args(argc, argv, &opts);
  run.opts = &opts;
  run.targets = &targets;
  if (opts.urls_file) {
    run.fetch_list = true;
    target_read_file(&targets, opts.urls_file);
    if (!targets.n) {
      fprintf(stderr, "xfer-load: no usable URL in %s (%d bad %s)\n",
              opts.urls_file, targets.nbad,
              targets.nbad == 1 ? "line" : "lines");
      return 1;
    }
    if (opts.out_dir && mkdir(opts.out_dir, 0777) && errno != EEXIST) {
      fprintf(stderr, "xfer-load: cannot create %s: %s\n", opts.out_dir,
              strerror(errno));
      return 2;
    }
    snprintf(what, sizeof(what), "%ld %s from %s", targets.n,
             targets.n == 1 ? "URL" : "URLs", opts.urls_file);
  }
  for (int i = 0; i < opts.nurls; i++) {
    if (!target_url_ok(opts.urls[i], detail, sizeof(detail))) {
      fprintf(stderr, "xfer-load: bad URL '%s': %s\n", opts.urls[i], detail);
      return 2;
    }
    target_add(&targets, opts.urls[i], 0);
  }
  if (!opts.urls_file && !targets.n) { /* nothing given: the embedded one */
    char url[64];
    if (!(embedded = ts_start(NULL))) {
      fprintf(stderr, "xfer-load: cannot start the embedded server: %s\n",
              strerror(errno));
      return 1;
    }
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/bytes/100",
             ts_port(embedded));
    target_add(&targets, url, 0);
    snprintf(what, sizeof(what), "%s (the embedded server)", url);
  } else if (!opts.urls_file) {
    snprintf(what, sizeof(what), "%s%s", targets.items[0].url,
             targets.n > 1 ? " and more" : "");
  }
  run.total_items = opts.requests ? opts.requests
                    : run.fetch_list ? targets.n
                                     : 0; /* -d: until the time is up */

  run.done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (run.done_fd < 0 ||
      (!opts.per_thread_pool && !(run.shared_pool = xfer_pool_new(NULL)))) {
    fprintf(stderr, "xfer-load: cannot set up: %s\n", strerror(errno));
    return 1;
  }
  install_signal_handlers();
  ws = calloc((size_t)opts.threads, sizeof(*ws));
  if (!ws) {
    fprintf(stderr, "xfer-load: out of memory\n");
    return 1;
  }
  for (int i = 0; i < opts.threads; i++)
    worker_init(&ws[i], i, load_connections_of(&opts, i), &run);
  atomic_store(&run.workers_left, opts.threads);
  for (int i = 0; i < opts.threads; i++)
    worker_start(&ws[i]);
  t.stopped_by =
      wait_for_workers(ws, opts.threads, progress && !opts.json);
  for (int i = 0; i < opts.threads; i++) {
    pthread_join(ws[i].thread, NULL);
    worker_read_multi_stats(&ws[i]);
    report_add_worker(&t, &ws[i]);
    report_add_pool(&t, ws[i].own_pool);
  }
  report_add_pool(&t, run.shared_pool);
  t.target = what;
  t.threads = opts.threads;
  t.connections = opts.connections;
  t.per_thread_pool = opts.per_thread_pool;
  t.seconds = elapsed_s(ws, opts.threads);
  t.targets = &targets;

  if (t.done && !t.ok) { /* nothing worked: one line says why */
    for (int code = 1; code < LOAD_CODES; code++)
      if (t.by_code[code]) {
        fprintf(stderr, "xfer-load: all %ld %s failed: %s (%s)\n", t.done,
                t.done == 1 ? "request" : "requests",
                xfer_strerror((xfer_code)code),
                t.first_detail[code] ? t.first_detail[code] : "");
        break;
      }
    if (opts.json)
      report_json(&t);
  } else if (opts.json) {
    report_json(&t);
  } else {
    report_text(&t);
  }
  if (!t.done && t.cut)
    fprintf(stderr, "xfer-load: no request finished (%ld cut at the end "
                    "of the run)\n", t.cut);
  fflush(stdout);
  /* A run in which nothing finished did not measure anything. */
  status = t.done && t.ok == t.done && !targets.nbad ? 0 : 1;

  for (int i = 0; i < opts.threads; i++)
    worker_free(&ws[i]);
  xfer_pool_destroy(run.shared_pool);
  if (embedded)
    ts_stop(embedded);
  free(ws);
  target_list_free(&targets);
  for (int i = 0; i < opts.nheaders; i++)
    free(opts.headers[i].name);
  free(opts.headers);
  close(run.done_fd);
  if (t.stopped_by && first_signal)
    return 128 + first_signal; /* 130 for SIGINT, 143 for SIGTERM */
  return status;
}
