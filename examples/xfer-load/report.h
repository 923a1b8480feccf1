/*
 * xfer-load's report, as text or as one JSON object (unique keys, printed
 * even when every request failed). Latency figures are of the successful
 * requests; failures have theirs apart, and requests cut at a stop are in
 * neither.
 */
#ifndef XFER_LOAD_REPORT_H
#define XFER_LOAD_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <xfer/xfer.h>

#include "stats.h"
#include "targets.h"
#include "worker.h"

struct load_totals {
  const char *target; /* what was fetched, in words */
  int threads, connections;
  bool per_thread_pool;
  long done, ok, cut, reused; /* done = ok + failed; cut apart */
  long by_code[LOAD_CODES];
  const char *first_detail[LOAD_CODES];
  long by_status[600];
  uint64_t body_bytes;
  struct lat_stats ok_lat, failed_lat;
  uint64_t sum_namelookup, sum_connect, sum_start;
  uint64_t clock_reads;
  xfer_pool_stats pool;
  double seconds;         /* first request added to last one done */
  const char *stopped_by; /* NULL, "SIGINT", "SIGTERM" or "duration" */
  const struct target_list *targets;
};

/* Adds a worker's counters (after its thread was joined). */
void report_add_worker(struct load_totals *t, const struct worker *w);
/* Adds a pool's statistics. */
void report_add_pool(struct load_totals *t, xfer_pool *p);

void report_text(const struct load_totals *t);
void report_json(const struct load_totals *t);

#endif
