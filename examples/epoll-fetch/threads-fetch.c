/*
 * threads-fetch: T threads, each with its own epoll loop (loop.c) and its
 * own multi, all on one shared pool: a connection one thread returns can
 * serve another's next request. Each thread fetches URL N times, one at a
 * time, and the pool's statistics show what was shared.
 *
 *   threads-fetch URL [THREADS [TIMES [WAIT_MS]]]
 *
 * (4 threads, 25 times each). WAIT_MS is how long a thread waits for an
 * idle connection another thread holds (the pool's attached_wait_ms,
 * 10 ms by default) before it opens one of its own.
 *   cc threads-fetch.c loop.c $(pkg-config --cflags --libs libxfer) -pthread
 *
 * What may be called from which thread: docs/threading.md. Here each multi
 * and its transfer belong to one thread; the pool is made before the
 * threads and destroyed after every multi.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <xfer/xfer.h>

#include "loop.h"

struct job {
  pthread_t thread;
  xfer_pool *pool;
  const char *url;
  int times, ok;
};

static void *fetch_times(void *arg) {
  struct job *j = arg;
  struct loop l;
  xfer *x = xfer_new();

  if (!x || !loop_init(&l, j->pool)) {
    xfer_free(x);
    return NULL;
  }
  xfer_set_timeout_ms(x, 30000);
  for (int i = 0; i < j->times; i++) {
    xfer_set_url(x, j->url);
    j->ok += loop_run(&l, x) == XFER_OK;
    xfer_multi_remove(l.m, x);
  }
  xfer_free(x);
  loop_free(&l);
  return NULL;
}

int main(int argc, char **argv) {
  int threads = argc > 2 ? atoi(argv[2]) : 4;
  int times = argc > 3 ? atoi(argv[3]) : 25, ok = 0, started;
  int wait_ms = argc > 4 ? atoi(argv[4]) : 0; /* 0: the pool's default */
  /* One pool for every thread. */
  xfer_pool *pool =
      xfer_pool_new(&(xfer_pool_opts){.attached_wait_ms = wait_ms});
  xfer_pool_stats st;
  struct job *jobs;

  if (argc < 2 || threads < 1 || times < 1 || !pool) {
    fprintf(stderr, "usage: threads-fetch URL [THREADS [TIMES [WAIT_MS]]]\n");
    return 2;
  }
  jobs = calloc((size_t)threads, sizeof(*jobs));
  if (!jobs) {
    fprintf(stderr, "threads-fetch: out of memory\n");
    xfer_pool_destroy(pool);
    return 1;
  }
  for (started = 0; started < threads; started++) {
    jobs[started] = (struct job){.pool = pool, .url = argv[1],
                                 .times = times};
    if (pthread_create(&jobs[started].thread, NULL, fetch_times,
                       &jobs[started])) {
      fprintf(stderr, "threads-fetch: could not start thread %d of %d\n",
              started + 1, threads);
      break; /* those started run to their end; the run fails */
    }
  }
  for (int i = 0; i < started; i++) {
    pthread_join(jobs[i].thread, NULL);
    ok += jobs[i].ok;
  }
  xfer_pool_get_stats(pool, &st);
  printf("%d of %d fetches ok; %" PRIu64 " connections opened, %" PRIu64
         " reuses\n",
         ok, threads * times, st.opened_total, st.reused_total);
  xfer_pool_destroy(pool); /* after every multi that used it */
  free(jobs);
  return ok == threads * times ? 0 : 1;
}
