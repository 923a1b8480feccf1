/*
 * Latency figures of xfer-load: exact count, min, max, mean and standard
 * deviation (Welford's running sums, merged with Chan's formula, so a
 * thread's figures add to another's without losing precision), beside a
 * log-bucket histogram for the percentiles (HdrHistogram-style: exact
 * below 64 us, then 32 sub-buckets per power of two, under 3.2% error).
 * One per worker thread, written by that thread alone; summed after the
 * threads are joined.
 */
#ifndef XFER_LOAD_STATS_H
#define XFER_LOAD_STATS_H

#include <stdint.h>

#define LAT_SUB 32
#define LAT_BUCKETS (64 + 40 * LAT_SUB)

struct lat_stats {
  uint64_t n;
  uint64_t min_us, max_us;
  double mean_us, m2; /* m2: the sum of squared differences from the mean */
  uint64_t hist[LAT_BUCKETS];
};

void lat_add(struct lat_stats *s, uint64_t us);
void lat_merge(struct lat_stats *into, const struct lat_stats *from);

/* In milliseconds; 0 when there is no sample. */
double lat_min_ms(const struct lat_stats *s);
double lat_max_ms(const struct lat_stats *s);
double lat_mean_ms(const struct lat_stats *s);
/* The sample standard deviation (n - 1), as wrk prints it. */
double lat_stdev_ms(const struct lat_stats *s);
/* The value at or below which p percent of the samples fall, as the top
 * of its bucket, never above the exact max. */
double lat_percentile_ms(const struct lat_stats *s, double p);

#endif
