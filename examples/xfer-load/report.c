/* xfer-load's report (see report.h). */
#include "report.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void report_add_worker(struct load_totals *t, const struct worker *w) {
  t->done += w->done, t->ok += w->ok, t->cut += w->cut;
  t->reused += w->reused;
  for (int c = 0; c < LOAD_CODES; c++) {
    t->by_code[c] += w->by_code[c];
    if (!t->first_detail[c])
      t->first_detail[c] = w->first_detail[c];
  }
  for (int s = 0; s < 600; s++)
    t->by_status[s] += w->by_status[s];
  t->body_bytes += w->body_bytes;
  lat_merge(&t->ok_lat, &w->ok_lat);
  lat_merge(&t->failed_lat, &w->failed_lat);
  t->sum_namelookup += w->sum_namelookup;
  t->sum_connect += w->sum_connect;
  t->sum_start += w->sum_start;
  t->clock_reads += w->clock_reads;
}

void report_add_pool(struct load_totals *t, xfer_pool *p) {
  xfer_pool_stats s;

  if (!p || xfer_pool_get_stats(p, &s) != XFER_OK)
    return;
  t->pool.opened_total += s.opened_total;
  t->pool.open += s.open;
  t->pool.idle += s.idle;
  t->pool.attached += s.attached;
  t->pool.waited_total += s.waited_total;
  t->pool.closed_total += s.closed_total;
  t->pool.released_on_demand += s.released_on_demand;
  t->pool.lock_contention += s.lock_contention;
}

/* The multis' clock reads over every request started: the cut ones read
 * the clock too (their add, events and removal). */
static double clocks_per_request(const struct load_totals *t) {
  long started = t->done + t->cut;

  return started ? (double)t->clock_reads / (double)started : 0;
}

static const char *plural(long n, const char *one, const char *more) {
  return n == 1 ? one : more;
}

static double per_s(double n, double secs) { return secs > 0 ? n / secs : 0; }

static double avg_ms(uint64_t sum_us, long n) {
  return n ? (double)sum_us / (double)n / 1000.0 : 0;
}

/* A rate of bytes in the unit that reads best: B/s, kB/s, MB/s, GB/s. */
static void print_byte_rate(double bps) {
  static const char *const units[] = {"B/s", "kB/s", "MB/s", "GB/s"};
  int u = 0;

  while (bps >= 1000 && u < 3)
    bps /= 1000, u++;
  printf(u ? "%.2f %s" : "%.0f %s", bps, units[u]);
}

static long failed(const struct load_totals *t) { return t->done - t->ok; }

void report_text(const struct load_totals *t) {
  static const double pcts[] = {50, 90, 99, 99.9};
  const struct lat_stats *l = &t->ok_lat, *f = &t->failed_lat;
  const struct target_list *tl = t->targets;

  printf("xfer-load: %s\n", t->target);
  printf("  %d %s, %d %s (%d%s a thread), %s pool\n", t->threads,
         plural(t->threads, "thread", "threads"), t->connections,
         plural(t->connections, "connection", "connections"),
         t->connections / t->threads,
         t->connections % t->threads ? " or one more" : "",
         t->per_thread_pool ? "a per-thread" : "one shared");
  printf("  requests:     %ld in %.3f s: %.0f req/s (%ld ok, %ld failed", t->done,
         t->seconds, per_s((double)t->done, t->seconds), t->ok, failed(t));
  if (t->cut)
    printf("; %ld cut at the stop, not counted", t->cut);
  printf(")\n");
  printf("  bodies:       %" PRIu64 " %s, ", t->body_bytes,
         plural((long)t->body_bytes, "byte", "bytes"));
  print_byte_rate(per_s((double)t->body_bytes, t->seconds));
  printf(" (response bodies only)\n");
  if (l->n) {
    printf("  latency:      of the %" PRIu64 " successful %s%s\n", l->n,
           plural((long)l->n, "request", "requests"),
           failed(t) ? " (failures apart, below)" : "");
    printf("    min %.3f, mean %.3f, stdev %.3f, max %.3f ms\n", lat_min_ms(l),
           lat_mean_ms(l), lat_stdev_ms(l), lat_max_ms(l));
    printf("   ");
    for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++)
      printf(" p%g %.3f%s", pcts[i], lat_percentile_ms(l, pcts[i]),
             i + 1 < sizeof(pcts) / sizeof(pcts[0]) ? "," : " ms\n");
  } else {
    printf("  latency:      none (no request succeeded)\n");
  }
  printf("  status:      ");
  for (int s = 0; s < 600; s++)
    if (t->by_status[s])
      printf(" %d: %ld", s, t->by_status[s]);
  printf("%s\n", t->ok ? "" : " none");
  printf("  errors:       %ld\n", failed(t));
  for (int c = 0; c < LOAD_CODES; c++)
    if (t->by_code[c])
      printf("    %ld x %s (first: %s)\n", t->by_code[c],
             xfer_strerror((xfer_code)c),
             t->first_detail[c] ? t->first_detail[c] : "");
  if (f->n)
    printf("    latency of the failed: min %.3f, mean %.3f, max %.3f ms\n",
           lat_min_ms(f), lat_mean_ms(f), lat_max_ms(f));
  for (int i = 0; tl && i < tl->nbad; i++)
    printf("    bad URL on line %d: '%s': %s\n", tl->bad[i].line,
           tl->bad[i].text, tl->bad[i].detail);
  if (t->stopped_by)
    printf("  stopped:      by %s; %ld in flight %s cut after the grace\n",
           t->stopped_by, t->cut, plural(t->cut, "was", "were"));
  printf("  connections:  %" PRIu64 " opened, %ld %s reused one\n",
         t->pool.opened_total, t->reused,
         plural(t->reused, "request", "requests"));
  printf("  pool:         %" PRIu64 " open, %" PRIu64 " idle (%" PRIu64
         " attached), %" PRIu64 " waited, %" PRIu64 " closed, %" PRIu64
         " released on demand, %" PRIu64 " lock waits\n",
         t->pool.open, t->pool.idle, t->pool.attached, t->pool.waited_total,
         t->pool.closed_total, t->pool.released_on_demand,
         t->pool.lock_contention);
  printf("  clock reads:  %.2f per request\n", clocks_per_request(t));
  printf("  timeline:     namelookup %.3f, connect %.3f, starttransfer %.3f, "
         "total %.3f ms (averages of the successful)\n",
         avg_ms(t->sum_namelookup, t->ok), avg_ms(t->sum_connect, t->ok),
         avg_ms(t->sum_start, t->ok), lat_mean_ms(l));
}

/* The length of the valid UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates, nothing past U+10FFFF), or 0. */
static int utf8_len(const unsigned char *s) {
  unsigned char lo = 0x80, hi = 0xbf;
  int n;

  if (s[0] >= 0xc2 && s[0] <= 0xdf)
    n = 2;
  else if (s[0] >= 0xe0 && s[0] <= 0xef)
    n = 3;
  else if (s[0] >= 0xf0 && s[0] <= 0xf4)
    n = 4;
  else
    return 0;
  if (s[0] == 0xe0)
    lo = 0xa0;
  else if (s[0] == 0xed)
    hi = 0x9f;
  else if (s[0] == 0xf0)
    lo = 0x90;
  else if (s[0] == 0xf4)
    hi = 0x8f;
  if (s[1] < lo || s[1] > hi)
    return 0;
  for (int i = 2; i < n; i++)
    if ((s[i] & 0xc0) != 0x80)
      return 0;
  return n;
}

/* A JSON string: escapes as JSON wants, and a byte that is not part of
 * valid UTF-8 (a URL list's raw bytes, a detail cut mid-character) as
 * U+FFFD, so that a strict parser takes the report. */
static void json_string(const char *text) {
  const unsigned char *s = (const unsigned char *)text;

  putchar('"');
  while (s && *s) {
    int n;
    if (*s == '"' || *s == '\\') {
      printf("\\%c", *s++);
    } else if (*s < 0x20) {
      printf("\\u%04x", *s++);
    } else if (*s < 0x80) {
      putchar(*s++);
    } else if ((n = utf8_len(s)) > 0) {
      fwrite(s, 1, (size_t)n, stdout);
      s += n;
    } else {
      fputs("\\ufffd", stdout);
      s++;
    }
  }
  putchar('"');
}

static void json_latency(const char *key, const struct lat_stats *l,
                         bool percentiles) {
  printf("\"%s\":{\"count\":%" PRIu64 ",\"min\":%.3f,\"mean\":%.3f,"
         "\"stdev\":%.3f,\"max\":%.3f",
         key, l->n, lat_min_ms(l), lat_mean_ms(l), lat_stdev_ms(l),
         lat_max_ms(l));
  if (percentiles)
    printf(",\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p99.9\":%.3f",
           lat_percentile_ms(l, 50), lat_percentile_ms(l, 90),
           lat_percentile_ms(l, 99), lat_percentile_ms(l, 99.9));
  printf("},");
}

void report_json(const struct load_totals *t) {
  const struct target_list *tl = t->targets;

  printf("{\"target\":");
  json_string(t->target);
  printf(",\"threads\":%d,\"connections\":%d,\"pool_mode\":\"%s\","
         "\"requests\":%ld,\"ok\":%ld,\"errors\":%ld,\"cut\":%ld,"
         "\"stopped_by\":",
         t->threads, t->connections,
         t->per_thread_pool ? "per-thread" : "shared", t->done, t->ok,
         failed(t), t->cut);
  if (t->stopped_by)
    json_string(t->stopped_by);
  else
    printf("null");
  printf(",\"seconds\":%.6f,\"requests_per_s\":%.1f,\"body_bytes\":%" PRIu64
         ",\"body_bytes_per_s\":%.1f,",
         t->seconds, per_s((double)t->done, t->seconds), t->body_bytes,
         per_s((double)t->body_bytes, t->seconds));
  printf("\"latency_includes_failures\":false,");
  json_latency("latency_ms", &t->ok_lat, true);
  json_latency("failed_latency_ms", &t->failed_lat, false);
  printf("\"status\":{");
  for (int s = 0, first = 1; s < 600; s++)
    if (t->by_status[s]) {
      printf("%s\"%d\":%ld", first ? "" : ",", s, t->by_status[s]);
      first = 0;
    }
  printf("},\"errors_by_kind\":{");
  for (int c = 0, first = 1; c < LOAD_CODES; c++)
    if (t->by_code[c]) {
      printf("%s", first ? "" : ",");
      json_string(xfer_strerror((xfer_code)c));
      printf(":{\"count\":%ld,\"first\":", t->by_code[c]);
      json_string(t->first_detail[c]);
      printf("}");
      first = 0;
    }
  printf("},\"bad_lines\":[");
  for (int i = 0; tl && i < tl->nbad; i++) {
    printf("%s{\"line\":%d,\"text\":", i ? "," : "", tl->bad[i].line);
    json_string(tl->bad[i].text);
    printf(",\"error\":");
    json_string(tl->bad[i].detail);
    printf("}");
  }
  printf("],\"connections_opened\":%" PRIu64 ",\"requests_reused\":%ld,",
         t->pool.opened_total, t->reused);
  printf("\"pool\":{\"open\":%" PRIu64 ",\"idle\":%" PRIu64
         ",\"attached\":%" PRIu64 ",\"waited\":%" PRIu64
         ",\"closed\":%" PRIu64 ",\"released_on_demand\":%" PRIu64
         ",\"lock_contention\":%" PRIu64 "},",
         t->pool.open, t->pool.idle, t->pool.attached, t->pool.waited_total,
         t->pool.closed_total, t->pool.released_on_demand,
         t->pool.lock_contention);
  printf("\"clock_reads_per_request\":%.3f,", clocks_per_request(t));
  printf("\"timeline_avg_ms\":{\"namelookup\":%.3f,\"connect\":%.3f,"
         "\"starttransfer\":%.3f,\"total\":%.3f}}\n",
         avg_ms(t->sum_namelookup, t->ok), avg_ms(t->sum_connect, t->ok),
         avg_ms(t->sum_start, t->ok), lat_mean_ms(&t->ok_lat));
}
