/*
 * xfer-load's worker threads: each has its own epoll loop driving its own
 * multi through the socket and timer callbacks (the model of a threaded
 * embedding), keeps its share of the connections busy, and counts what it
 * saw. Its counters are written by that thread alone and read by the main
 * thread only after the join.
 */
#ifndef XFER_LOAD_WORKER_H
#define XFER_LOAD_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <xfer/xfer.h>

#include "options.h"
#include "stats.h"
#include "targets.h"

#define LOAD_CODES 64 /* above every xfer_code */

/* What every thread shares: set up by the main thread before the workers
 * start; the atomics are the only fields written afterwards. */
struct load_run {
  const struct load_opts *opts;
  const struct target_list *targets;
  bool fetch_list;   /* --urls: each line once, bodies to -o */
  long total_items;  /* 0: until stopped */
  xfer_pool *shared_pool; /* NULL with --pool per-thread */
  atomic_long next_item;
  atomic_long finished; /* requests done, for the progress line */
  atomic_long failed;   /* of them, those that failed (ditto) */
  atomic_bool stop;     /* start no new request */
  atomic_bool cut;      /* stop the ones in flight too */
  atomic_int workers_left;
  int done_fd; /* eventfd the main thread waits on: a worker ended */
};

struct slot;

struct worker {
  int id;
  pthread_t thread;
  struct load_run *run;
  int ep, wake_fd;
  double timer_at; /* when the timer callback's timer fires (load_now_s()
                     time); < 0: none */
  int running;
  long outstanding;
  xfer_multi *m;
  xfer_pool *own_pool;
  struct slot *slots;
  int nslots;

  /* What it saw. */
  long done, ok, reused, cut;
  long by_code[LOAD_CODES];
  char *first_detail[LOAD_CODES];
  long by_status[600];
  uint64_t body_bytes;
  struct lat_stats ok_lat, failed_lat; /* total time, add to done */
  uint64_t sum_namelookup, sum_connect, sum_start; /* successful ones */
  double first_add_s, last_done_s; /* CLOCK_MONOTONIC; 0: none yet */
  uint64_t clock_reads;            /* the multi's, after the join */
};

/* Makes the worker's loop, multi and nslots transfers; on failure prints
 * why and exits 1. */
void worker_init(struct worker *w, int id, int nslots, struct load_run *run);
/* Starts its thread. */
void worker_start(struct worker *w);
/* Wakes its loop to look at run->stop and run->cut. Any thread. */
void worker_wake(struct worker *w);
/* After the join: copies the multi's counters into the worker. */
void worker_read_multi_stats(struct worker *w);
/* After the report: frees what it holds (its pool after its multi). */
void worker_free(struct worker *w);

/* Seconds on CLOCK_MONOTONIC. */
double load_now_s(void);

#endif
