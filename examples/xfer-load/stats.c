/* Latency figures of xfer-load (see stats.h). */
#include "stats.h"

#include <math.h>

static int bucket_of(uint64_t us) {
  int mag;

  if (us < 64)
    return (int)us;
  mag = 63 - __builtin_clzll(us); /* >= 6 */
  if (mag > 45)
    return LAT_BUCKETS - 1;
  return 64 + (mag - 6) * LAT_SUB + (int)((us >> (mag - 5)) & (LAT_SUB - 1));
}

/* The largest value of a bucket. */
static uint64_t bucket_top(int i) {
  int mag;

  if (i < 64)
    return (uint64_t)i;
  mag = (i - 64) / LAT_SUB + 6;
  return (((uint64_t)(LAT_SUB + (i - 64) % LAT_SUB) + 1) << (mag - 5)) - 1;
}

void lat_add(struct lat_stats *s, uint64_t us) {
  double delta = (double)us - s->mean_us;

  if (!s->n || us < s->min_us)
    s->min_us = us;
  if (us > s->max_us)
    s->max_us = us;
  s->n++;
  s->mean_us += delta / (double)s->n;
  s->m2 += delta * ((double)us - s->mean_us);
  s->hist[bucket_of(us)]++;
}

void lat_merge(struct lat_stats *into, const struct lat_stats *from) {
  double n, delta;

  if (!from->n)
    return;
  if (!into->n || from->min_us < into->min_us)
    into->min_us = from->min_us;
  if (from->max_us > into->max_us)
    into->max_us = from->max_us;
  n = (double)(into->n + from->n);
  delta = from->mean_us - into->mean_us;
  into->m2 += from->m2 + delta * delta * (double)into->n * (double)from->n / n;
  into->mean_us += delta * (double)from->n / n;
  into->n += from->n;
  for (int i = 0; i < LAT_BUCKETS; i++)
    into->hist[i] += from->hist[i];
}

double lat_min_ms(const struct lat_stats *s) {
  return s->n ? (double)s->min_us / 1000.0 : 0;
}

double lat_max_ms(const struct lat_stats *s) {
  return (double)s->max_us / 1000.0;
}

double lat_mean_ms(const struct lat_stats *s) { return s->mean_us / 1000.0; }

double lat_stdev_ms(const struct lat_stats *s) {
  return s->n > 1 ? sqrt(s->m2 / (double)(s->n - 1)) / 1000.0 : 0;
}

double lat_percentile_ms(const struct lat_stats *s, double p) {
  uint64_t seen = 0, rank;

  if (!s->n)
    return 0;
  /* The rank of the p-th percentile, rounded up: 99.9 / 100 * 1000 is
   * 999.0000000000001 in doubles, which rounded up naively is 1000 (the
   * maximum, not the 999th sample); so what is above a whole number by
   * rounding error alone (relative, whatever n) stays that number. */
  {
    double x = p / 100.0 * (double)s->n;
    rank = (uint64_t)x;
    if ((double)rank < x * (1.0 - 1e-12))
      rank++;
  }
  if (rank < 1)
    rank = 1;
  for (int i = 0; i < LAT_BUCKETS; i++) {
    seen += s->hist[i];
    if (seen >= rank) {
      uint64_t top = bucket_top(i);
      if (top > s->max_us)
        top = s->max_us;
      if (top < s->min_us)
        top = s->min_us;
      return (double)top / 1000.0;
    }
  }
  return lat_max_ms(s);
}
