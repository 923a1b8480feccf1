/*
 * xfer-load: a load generator and fetcher on libxfer.
 *
 * T threads, each with its own epoll loop driving its own multi (socket
 * callback, timer callback, xfer_multi_socket_action), C transfers in
 * flight per thread, all on one shared connection pool (or a pool per
 * thread). With no URL it starts the embedded test server on 127.0.0.1
 * and runs against that, so it works on a machine with nothing else
 * running. `xfer-load --help` lists the options.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xfer/xfer.h>

#include "testserver.h"

/* --- options ---------------------------------------------------------------- */

static struct {
  int threads, per_thread;
  long requests;    /* 0: by duration, or the URL list once */
  double seconds;   /* -d */
  const char *method;
  const char *data;
  char **headers;   /* "Name: value" */
  int nheaders;
  const char *dns_servers;
  const char *urls_file;
  bool per_thread_pool;
  bool json;
  const char *out_dir;
  long timeout_ms;
} opt = {.threads = 1, .per_thread = 16, .timeout_ms = 30000};

/* The work: URLs from the command line (load: round robin) or from a file
 * (fetch: each once). */
struct target {
  char *url;
  int line;
};
static struct target *targets;
static long ntargets;
struct bad_line {
  int line;
  char *text, *detail;
};
static struct bad_line *bad_lines;
static int nbad_lines;
static bool fetch_list; /* --urls: each once, bodies to -o */

__attribute__((format(printf, 1, 2), noreturn)) static void
die_usage(const char *fmt, ...) {
  va_list ap;

  fprintf(stderr, "xfer-load: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (xfer-load --help lists the options)\n");
  exit(2);
}

static void usage(void) {
  printf(
      "usage: xfer-load [options] [URL...]\n"
      "  -t, --threads N        worker threads, each with its own loop and "
      "multi (1)\n"
      "  -c, --concurrency N    transfers in flight per thread (16)\n"
      "  -n, --requests N       requests in all (1000, or each --urls line "
      "once)\n"
      "  -d, --duration TIME    run for TIME instead (10s, 500ms, 2m)\n"
      "  -X, --method M         request method (GET)\n"
      "  -H, --header 'N: V'    add a request header (repeatable)\n"
      "      --data STRING      request body\n"
      "      --timeout MS       per-request total timeout (30000)\n"
      "      --dns-servers A[:P] name servers to use (as curl names it)\n"
      "      --urls FILE        URLs to fetch, one a line (mixed hosts)\n"
      "  -o, --output DIR       with --urls: save each body as DIR/LINE.body\n"
      "      --pool shared|per-thread  one pool for all threads (shared)\n"
      "      --json             a machine-readable report\n"
      "  -h, --help             this text\n"
      "With no URL, an embedded HTTP/1.1 server on 127.0.0.1 is started and\n"
      "used (http://127.0.0.1:PORT/bytes/100).\n");
  exit(0);
}

static long parse_long(const char *s, const char *what, long min) {
  char *end;
  long v;

  errno = 0;
  v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < min)
    die_usage("bad %s '%s'", what, s);
  return v;
}

static double parse_duration(const char *s) {
  char *end;
  double v = strtod(s, &end);

  if (end == s || v <= 0)
    die_usage("bad duration '%s'", s);
  if (!strcmp(end, "ms"))
    return v / 1000;
  if (!*end || !strcmp(end, "s"))
    return v;
  if (!strcmp(end, "m"))
    return v * 60;
  die_usage("bad duration '%s'", s);
}

/* A URL libxfer accepts, or its error detail in *detail. */
static bool url_ok(const char *url, char *detail, size_t len) {
  xfer *x = xfer_new();
  xfer_code rc;

  if (!x) {
    snprintf(detail, len, "out of memory");
    return false;
  }
  rc = xfer_set_url(x, url);
  if (rc)
    snprintf(detail, len, "%s", xfer_get_error_detail(x));
  xfer_free(x);
  return rc == XFER_OK;
}

static void add_target(const char *url, int line) {
  targets = realloc(targets, (size_t)(ntargets + 1) * sizeof(*targets));
  if (!targets) {
    fprintf(stderr, "xfer-load: out of memory\n");
    exit(1);
  }
  targets[ntargets].url = strdup(url);
  targets[ntargets++].line = line;
}

static void read_url_file(const char *path) {
  FILE *f = fopen(path, "r");
  char buf[8192], detail[256];
  int line = 0;

  if (!f) {
    fprintf(stderr, "xfer-load: cannot read %s: %s\n", path, strerror(errno));
    exit(2);
  }
  while (fgets(buf, sizeof(buf), f)) {
    char *s = buf, *e;
    line++;
    while (*s == ' ' || *s == '\t')
      s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' '))
      *--e = '\0';
    if (!*s || *s == '#')
      continue;
    if (url_ok(s, detail, sizeof(detail))) {
      add_target(s, line);
    } else {
      bad_lines = realloc(bad_lines, (size_t)(nbad_lines + 1) *
                                         sizeof(*bad_lines));
      bad_lines[nbad_lines].line = line;
      bad_lines[nbad_lines].text = strdup(s);
      bad_lines[nbad_lines++].detail = strdup(detail);
    }
  }
  fclose(f);
}

/* --- latency histogram ----------------------------------------------------- */

/* HdrHistogram-style buckets of microseconds: exact below 64, then 32
 * sub-buckets per power of two (relative error under 3.2%), up to 2^40. */
#define SUB 32
#define HIST_SIZE (64 + 40 * SUB)

static int hist_index(uint64_t us) {
  int mag;

  if (us < 64)
    return (int)us;
  mag = 63 - __builtin_clzll(us); /* >= 6 */
  if (mag > 45)
    return HIST_SIZE - 1;
  return 64 + (mag - 6) * SUB + (int)((us >> (mag - 5)) & (SUB - 1));
}

/* The largest value of a bucket. */
static uint64_t hist_value(int i) {
  int mag;

  if (i < 64)
    return (uint64_t)i;
  mag = (i - 64) / SUB + 6;
  return (((uint64_t)(SUB + (i - 64) % SUB) + 1) << (mag - 5)) - 1;
}

/* --- workers ----------------------------------------------------------------- */

struct worker;

struct slot {
  struct worker *w;
  xfer *x;
  long item;
  FILE *out; /* -o */
};

struct worker {
  int id;
  pthread_t thread;
  int ep;
  long timeout_ms;
  int running;
  long outstanding;
  xfer_multi *m;
  xfer_pool *own_pool;
  struct slot *slots;
  /* results */
  long done, ok, reused;
  long by_code[64];
  char *first_detail[64];
  long by_status[600];
  uint64_t bytes;
  uint64_t sum_namelookup, sum_connect, sum_start, sum_total;
  uint64_t hist[HIST_SIZE];
  uint64_t clock_reads;
};

static xfer_pool *shared_pool;
static atomic_long next_item, finished;
static atomic_bool stop;
static atomic_int workers_left;
static long total_items; /* 0: until stopped */

static long take_item(void) {
  long i;

  if (atomic_load(&stop))
    return -1;
  i = atomic_fetch_add(&next_item, 1);
  if (total_items && i >= total_items)
    return -1;
  return i;
}

static size_t on_body(const char *data, size_t len, void *userp) {
  struct slot *s = userp;

  s->w->bytes += len;
  if (s->out && fwrite(data, 1, len, s->out) != len)
    return 0; /* the transfer fails with a write-callback error */
  return len;
}

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

/* Starts the slot's next request; false when there is none. */
static bool start(struct slot *s) {
  struct worker *w = s->w;
  const struct target *t;
  long item = take_item();

  if (item < 0)
    return false;
  s->item = item;
  t = &targets[item % ntargets];
  xfer_set_url(s->x, t->url);
  if (fetch_list && opt.out_dir) {
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%d.body", opt.out_dir, t->line);
    s->out = fopen(path, "w");
    if (!s->out) /* fetched anyway; the missing file is said */
      fprintf(stderr, "xfer-load: cannot write %s: %s\n", path,
              strerror(errno));
  }
  if (xfer_multi_add(w->m, s->x) != XFER_M_OK) {
    w->done++;
    w->by_code[XFER_E_OUT_OF_MEMORY]++;
    atomic_fetch_add(&finished, 1);
    return false;
  }
  w->outstanding++;
  return true;
}

static void record(struct worker *w, const xfer_msg *msg) {
  xfer *x = msg->x;
  xfer_timeline tl;
  int code = (int)msg->result;
  int status = xfer_get_status(x);

  w->done++;
  atomic_fetch_add(&finished, 1);
  if (code) {
    if (code < 0 || code >= 64)
      code = 63;
    if (!w->by_code[code]++)
      w->first_detail[code] = strdup(xfer_get_error_detail(x));
    return;
  }
  w->ok++;
  if (status >= 100 && status < 600)
    w->by_status[status]++;
  if (xfer_get_reused(x))
    w->reused++;
  if (xfer_get_timeline(x, &tl) == XFER_OK) {
    w->sum_namelookup += (uint64_t)tl.namelookup_us;
    w->sum_connect += (uint64_t)tl.connect_us;
    w->sum_start += (uint64_t)tl.starttransfer_us;
    w->sum_total += (uint64_t)tl.total_us;
    w->hist[hist_index((uint64_t)tl.total_us)]++;
  }
}

static void reap(struct worker *w) {
  const xfer_msg *msg;

  while ((msg = xfer_multi_info_read(w->m, NULL))) {
    struct slot *s = xfer_get_private(msg->x);
    record(w, msg);
    xfer_multi_remove(w->m, msg->x); /* finished: reads no clock */
    w->outstanding--;
    if (s->out) {
      fclose(s->out);
      s->out = NULL;
    }
    start(s);
  }
}

static void action(struct worker *w, int fd, int events) {
  xfer_multi_socket_action(w->m, fd, events, &w->running);
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  struct epoll_event evs[128];

  for (int i = 0; i < opt.per_thread; i++)
    if (!start(&w->slots[i]))
      break;
  action(w, XFER_SOCKET_TIMEOUT, 0);
  for (;;) {
    int n;
    reap(w);
    if (!w->outstanding)
      break;
    n = epoll_wait(w->ep, evs, 128, (int)w->timeout_ms);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      w->timeout_ms = -1; /* fired: the callback arms the next */
      action(w, XFER_SOCKET_TIMEOUT, 0);
    }
    for (int i = 0; i < n; i++) {
      uint32_t e = evs[i].events;
      action(w, evs[i].data.fd,
             ((e & EPOLLIN) ? XFER_CSELECT_IN : 0) |
                 ((e & EPOLLOUT) ? XFER_CSELECT_OUT : 0) |
                 ((e & (EPOLLERR | EPOLLHUP)) ? XFER_CSELECT_ERR : 0));
    }
  }
  atomic_fetch_sub(&workers_left, 1);
  return NULL;
}

static void worker_init(struct worker *w, int id) {
  w->id = id;
  w->ep = epoll_create1(EPOLL_CLOEXEC);
  w->timeout_ms = -1;
  if (opt.per_thread_pool)
    w->own_pool = xfer_pool_new(NULL);
  w->m = xfer_multi_new(opt.per_thread_pool ? w->own_pool : shared_pool);
  if (w->ep < 0 || !w->m) {
    fprintf(stderr, "xfer-load: cannot create thread %d's loop: %s\n", id,
            strerror(errno));
    exit(1);
  }
  xfer_multi_set_socket_cb(w->m, on_socket, w);
  xfer_multi_set_timer_cb(w->m, on_timer, w);
  if (opt.dns_servers &&
      xfer_multi_set_dns_servers(w->m, opt.dns_servers) != XFER_M_OK) {
    fprintf(stderr, "xfer-load: bad --dns-servers '%s'\n", opt.dns_servers);
    exit(2);
  }
  w->slots = calloc((size_t)opt.per_thread, sizeof(*w->slots));
  for (int i = 0; i < opt.per_thread; i++) {
    struct slot *s = &w->slots[i];
    s->w = w;
    s->x = xfer_new();
    xfer_set_private(s->x, s);
    xfer_set_write_cb(s->x, on_body, s);
    xfer_set_timeout_ms(s->x, opt.timeout_ms);
    if (opt.method)
      xfer_set_method(s->x, opt.method);
    if (opt.data)
      xfer_set_body(s->x, opt.data, strlen(opt.data));
    for (int h = 0; h < opt.nheaders; h++) {
      char name[256];
      const char *colon = strchr(opt.headers[h], ':'), *value;
      size_t len = colon ? (size_t)(colon - opt.headers[h]) : 0;
      if (!colon || !len || len >= sizeof(name))
        die_usage("bad header '%s' (expected 'Name: value')", opt.headers[h]);
      memcpy(name, opt.headers[h], len);
      name[len] = '\0';
      for (value = colon + 1; *value == ' '; value++)
        ;
      if (xfer_add_header(s->x, name, value) != XFER_OK)
        die_usage("bad header '%s'", opt.headers[h]);
    }
  }
}

/* --- report --------------------------------------------------------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

struct totals {
  long done, ok, reused;
  long by_code[64];
  const char *first_detail[64];
  long by_status[600];
  uint64_t bytes, sum_namelookup, sum_connect, sum_start, sum_total;
  uint64_t hist[HIST_SIZE];
  uint64_t clock_reads;
  xfer_pool_stats pool;
};

static void sum_up(struct worker *ws, struct totals *t) {
  memset(t, 0, sizeof(*t));
  for (int i = 0; i < opt.threads; i++) {
    struct worker *w = &ws[i];
    t->done += w->done, t->ok += w->ok, t->reused += w->reused;
    for (int c = 0; c < 64; c++) {
      t->by_code[c] += w->by_code[c];
      if (!t->first_detail[c])
        t->first_detail[c] = w->first_detail[c];
    }
    for (int s = 0; s < 600; s++)
      t->by_status[s] += w->by_status[s];
    t->bytes += w->bytes;
    t->sum_namelookup += w->sum_namelookup;
    t->sum_connect += w->sum_connect;
    t->sum_start += w->sum_start;
    t->sum_total += w->sum_total;
    for (int h = 0; h < HIST_SIZE; h++)
      t->hist[h] += w->hist[h];
    t->clock_reads += w->clock_reads;
  }
}

static double percentile_ms(const struct totals *t, double p) {
  uint64_t n = 0, seen = 0;

  for (int i = 0; i < HIST_SIZE; i++)
    n += t->hist[i];
  if (!n)
    return 0;
  for (int i = 0; i < HIST_SIZE; i++) {
    seen += t->hist[i];
    if (seen && (double)seen >= p / 100.0 * (double)n)
      return (double)hist_value(i) / 1000.0;
  }
  return 0;
}

static double min_ms(const struct totals *t) {
  for (int i = 0; i < HIST_SIZE; i++)
    if (t->hist[i])
      return (double)hist_value(i) / 1000.0;
  return 0;
}

static double avg_ms(uint64_t sum, long n) {
  return n ? (double)sum / (double)n / 1000.0 : 0;
}

static void json_string(const char *s) {
  putchar('"');
  for (; s && *s; s++) {
    if (*s == '"' || *s == '\\')
      printf("\\%c", *s);
    else if ((unsigned char)*s < 0x20)
      printf("\\u%04x", *s);
    else
      putchar(*s);
  }
  putchar('"');
}

static void report(const struct totals *t, double secs, const char *what) {
  static const double pcts[] = {50, 90, 99, 99.9};
  long errors = t->done - t->ok;

  if (opt.json) {
    printf("{\"target\":");
    json_string(what);
    printf(",\"threads\":%d,\"per_thread\":%d,\"pool\":\"%s\","
           "\"requests\":%ld,\"ok\":%ld,\"errors\":%ld,\"seconds\":%.3f,"
           "\"requests_per_s\":%.1f,\"bytes\":%" PRIu64
           ",\"bytes_per_s\":%.1f,",
           opt.threads, opt.per_thread,
           opt.per_thread_pool ? "per-thread" : "shared", t->done, t->ok,
           errors, secs, t->done / secs, t->bytes, (double)t->bytes / secs);
    printf("\"latency_ms\":{\"min\":%.3f,\"p50\":%.3f,\"p90\":%.3f,"
           "\"p99\":%.3f,\"p99.9\":%.3f,\"max\":%.3f},",
           min_ms(t), percentile_ms(t, 50), percentile_ms(t, 90),
           percentile_ms(t, 99), percentile_ms(t, 99.9),
           percentile_ms(t, 100));
    printf("\"status\":{");
    for (int s = 0, first = 1; s < 600; s++)
      if (t->by_status[s]) {
        printf("%s\"%d\":%ld", first ? "" : ",", s, t->by_status[s]);
        first = 0;
      }
    printf("},\"errors_by_kind\":{");
    for (int c = 0, first = 1; c < 64; c++)
      if (t->by_code[c]) {
        printf("%s", first ? "" : ",");
        json_string(xfer_strerror((xfer_code)c));
        printf(":{\"count\":%ld,\"first\":", t->by_code[c]);
        json_string(t->first_detail[c]);
        printf("}");
        first = 0;
      }
    printf("},\"bad_lines\":[");
    for (int i = 0; i < nbad_lines; i++) {
      printf("%s{\"line\":%d,\"text\":", i ? "," : "", bad_lines[i].line);
      json_string(bad_lines[i].text);
      printf(",\"error\":");
      json_string(bad_lines[i].detail);
      printf("}");
    }
    printf("],\"connections\":{\"opened\":%" PRIu64 ",\"reused\":%ld},",
           t->pool.opened_total, t->reused);
    printf("\"pool\":{\"open\":%" PRIu64 ",\"idle\":%" PRIu64
           ",\"attached\":%" PRIu64 ",\"waited\":%" PRIu64
           ",\"closed\":%" PRIu64 ",\"released_on_demand\":%" PRIu64
           ",\"lock_contention\":%" PRIu64 "},",
           t->pool.open, t->pool.idle, t->pool.attached,
           t->pool.waited_total, t->pool.closed_total,
           t->pool.released_on_demand, t->pool.lock_contention);
    printf("\"clock_reads_per_request\":%.3f,",
           t->done ? (double)t->clock_reads / (double)t->done : 0);
    printf("\"timeline_avg_ms\":{\"namelookup\":%.3f,\"connect\":%.3f,"
           "\"starttransfer\":%.3f,\"total\":%.3f}}\n",
           avg_ms(t->sum_namelookup, t->ok), avg_ms(t->sum_connect, t->ok),
           avg_ms(t->sum_start, t->ok), avg_ms(t->sum_total, t->ok));
    return;
  }
  printf("xfer-load: %s\n", what);
  printf("  %d threads x %d in flight, %s pool\n", opt.threads,
         opt.per_thread, opt.per_thread_pool ? "a per-thread" : "one shared");
  printf("  requests:     %ld in %.2f s: %.0f req/s, %.2f MB/s\n", t->done,
         secs, t->done / secs, (double)t->bytes / secs / 1e6);
  printf("  latency:      min %.3f ms", min_ms(t));
  for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++)
    printf(", p%g %.3f", pcts[i], percentile_ms(t, pcts[i]));
  printf(", max %.3f ms\n", percentile_ms(t, 100));
  printf("  status:      ");
  for (int s = 0; s < 600; s++)
    if (t->by_status[s])
      printf(" %d: %ld", s, t->by_status[s]);
  printf("%s\n", t->ok ? "" : " none");
  printf("  errors:       %ld\n", errors);
  for (int c = 0; c < 64; c++)
    if (t->by_code[c])
      printf("    %s: %ld (first: %s)\n", xfer_strerror((xfer_code)c),
             t->by_code[c], t->first_detail[c] ? t->first_detail[c] : "");
  for (int i = 0; i < nbad_lines; i++)
    printf("    bad URL on line %d: '%s': %s\n", bad_lines[i].line,
           bad_lines[i].text, bad_lines[i].detail);
  printf("  connections:  %" PRIu64 " opened, %ld requests reused one\n",
         t->pool.opened_total, t->reused);
  printf("  pool:         %" PRIu64 " open, %" PRIu64 " idle (%" PRIu64
         " attached), %" PRIu64 " waited, %" PRIu64 " closed, %" PRIu64
         " released on demand, %" PRIu64 " lock waits\n",
         t->pool.open, t->pool.idle, t->pool.attached, t->pool.waited_total,
         t->pool.closed_total, t->pool.released_on_demand,
         t->pool.lock_contention);
  printf("  clock reads:  %.2f per request\n",
         t->done ? (double)t->clock_reads / (double)t->done : 0);
  printf("  timeline:     namelookup %.3f, connect %.3f, starttransfer %.3f, "
         "total %.3f ms (averages)\n",
         avg_ms(t->sum_namelookup, t->ok), avg_ms(t->sum_connect, t->ok),
         avg_ms(t->sum_start, t->ok), avg_ms(t->sum_total, t->ok));
}

static void add_pool_stats(xfer_pool *p, xfer_pool_stats *sum) {
  xfer_pool_stats s;

  if (!p || xfer_pool_get_stats(p, &s) != XFER_OK)
    return;
  sum->opened_total += s.opened_total;
  sum->open += s.open;
  sum->idle += s.idle;
  sum->attached += s.attached;
  sum->waited_total += s.waited_total;
  sum->closed_total += s.closed_total;
  sum->released_on_demand += s.released_on_demand;
  sum->lock_contention += s.lock_contention;
}

int main(int argc, char **argv) {
  static const struct option longs[] = {
      {"threads", required_argument, NULL, 't'},
      {"concurrency", required_argument, NULL, 'c'},
      {"requests", required_argument, NULL, 'n'},
      {"duration", required_argument, NULL, 'd'},
      {"method", required_argument, NULL, 'X'},
      {"header", required_argument, NULL, 'H'},
      {"data", required_argument, NULL, 'D'},
      {"timeout", required_argument, NULL, 'T'},
      {"dns-servers", required_argument, NULL, 'S'},
      {"urls", required_argument, NULL, 'U'},
      {"output", required_argument, NULL, 'o'},
      {"pool", required_argument, NULL, 'P'},
      {"json", no_argument, NULL, 'J'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  struct ts_server *embedded = NULL;
  struct worker *ws;
  struct totals t;
  char what[600], detail[256];
  double started, secs, last_progress = 0;
  bool tty = isatty(STDOUT_FILENO);
  int c;

  opterr = 0;
  while ((c = getopt_long(argc, argv, ":t:c:n:d:X:H:o:h", longs, NULL)) !=
         -1) {
    switch (c) {
    case 't':
      opt.threads = (int)parse_long(optarg, "thread count", 1);
      break;
    case 'c':
      opt.per_thread = (int)parse_long(optarg, "concurrency", 1);
      break;
    case 'n':
      opt.requests = parse_long(optarg, "request count", 1);
      break;
    case 'd':
      opt.seconds = parse_duration(optarg);
      break;
    case 'X':
      opt.method = optarg;
      break;
    case 'H':
      opt.headers = realloc(opt.headers, (size_t)(opt.nheaders + 1) *
                                             sizeof(*opt.headers));
      opt.headers[opt.nheaders++] = optarg;
      break;
    case 'D':
      opt.data = optarg;
      break;
    case 'T':
      opt.timeout_ms = parse_long(optarg, "timeout", 1);
      break;
    case 'S':
      opt.dns_servers = optarg;
      break;
    case 'U':
      opt.urls_file = optarg;
      break;
    case 'o':
      opt.out_dir = optarg;
      break;
    case 'P':
      if (!strcmp(optarg, "per-thread"))
        opt.per_thread_pool = true;
      else if (strcmp(optarg, "shared"))
        die_usage("bad --pool '%s' (shared or per-thread)", optarg);
      break;
    case 'J':
      opt.json = true;
      break;
    case 'h':
      usage();
      break;
    case ':':
      die_usage("option '%s' needs a value", argv[optind - 1]);
      break;
    default:
      die_usage("unknown option '%s'", argv[optind - 1]);
    }
  }
  if (opt.threads > 1024 || opt.per_thread > 100000)
    die_usage("too many threads or transfers in flight ('%s')", "-t/-c");

  if (opt.urls_file) {
    fetch_list = true;
    read_url_file(opt.urls_file);
    if (!ntargets) {
      fprintf(stderr, "xfer-load: no usable URL in %s (%d bad lines)\n",
              opt.urls_file, nbad_lines);
      return 1;
    }
    if (opt.out_dir && mkdir(opt.out_dir, 0777) && errno != EEXIST) {
      fprintf(stderr, "xfer-load: cannot create %s: %s\n", opt.out_dir,
              strerror(errno));
      return 2;
    }
    snprintf(what, sizeof(what), "%ld URLs from %s", ntargets,
             opt.urls_file);
  }
  for (int i = optind; i < argc; i++) {
    if (!url_ok(argv[i], detail, sizeof(detail))) {
      fprintf(stderr, "xfer-load: bad URL '%s': %s\n", argv[i], detail);
      return 2;
    }
    add_target(argv[i], 0);
  }
  if (!opt.urls_file) {
    if (!ntargets) { /* nothing given: the embedded server */
      char url[64];
      embedded = ts_start(NULL);
      if (!embedded) {
        fprintf(stderr, "xfer-load: cannot start the embedded server\n");
        return 1;
      }
      snprintf(url, sizeof(url), "http://127.0.0.1:%d/bytes/100",
               ts_port(embedded));
      add_target(url, 0);
      snprintf(what, sizeof(what), "%s (the embedded server)", url);
    } else {
      snprintf(what, sizeof(what), "%s%s", targets[0].url,
               ntargets > 1 ? " and more" : "");
    }
  }
  if (fetch_list)
    total_items = opt.requests ? opt.requests : ntargets;
  else if (opt.seconds > 0)
    total_items = opt.requests; /* 0: until the time is up */
  else
    total_items = opt.requests ? opt.requests : 1000;

  if (!opt.per_thread_pool && !(shared_pool = xfer_pool_new(NULL))) {
    fprintf(stderr, "xfer-load: out of memory\n");
    return 1;
  }
  ws = calloc((size_t)opt.threads, sizeof(*ws));
  for (int i = 0; i < opt.threads; i++)
    worker_init(&ws[i], i);
  atomic_store(&workers_left, opt.threads);
  started = now_s();
  for (int i = 0; i < opt.threads; i++)
    pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);

  /* The progress line, a few times a second, on a terminal only. */
  while (atomic_load(&workers_left) > 0) {
    struct timespec pause = {0, 50 * 1000 * 1000};
    double now;
    nanosleep(&pause, NULL);
    now = now_s();
    if (opt.seconds > 0 && now - started >= opt.seconds)
      atomic_store(&stop, true);
    if (tty && !opt.json && now - last_progress >= 0.25) {
      long done = atomic_load(&finished);
      xfer_pool_stats ps = {0};
      if (shared_pool)
        xfer_pool_get_stats(shared_pool, &ps);
      last_progress = now;
      if (total_items)
        printf("\r  %ld / %ld done, %.0f req/s, %" PRIu64 " open   ", done,
               total_items, done / (now - started), ps.open);
      else
        printf("\r  %ld done, %.0f req/s, %.0f s left, %" PRIu64
               " open   ",
               done, done / (now - started),
               opt.seconds - (now - started) > 0
                   ? opt.seconds - (now - started)
                   : 0,
               ps.open);
      fflush(stdout);
    }
  }
  for (int i = 0; i < opt.threads; i++)
    pthread_join(ws[i].thread, NULL);
  secs = now_s() - started;
  if (tty && !opt.json)
    printf("\r%60s\r", "");

  for (int i = 0; i < opt.threads; i++) {
    xfer_multi_stats ms;
    if (xfer_multi_get_stats(ws[i].m, &ms) == XFER_M_OK)
      ws[i].clock_reads = ms.clock_reads;
  }
  sum_up(ws, &t);
  add_pool_stats(shared_pool, &t.pool);
  for (int i = 0; i < opt.threads; i++)
    add_pool_stats(ws[i].own_pool, &t.pool);

  if (t.done && !t.ok) { /* nothing worked: one line says why */
    for (int code = 1; code < 64; code++)
      if (t.by_code[code]) {
        fprintf(stderr, "xfer-load: all %ld requests failed: %s (%s)\n",
                t.done, xfer_strerror((xfer_code)code),
                t.first_detail[code] ? t.first_detail[code] : "");
        break;
      }
  } else {
    report(&t, secs, what);
  }

  for (int i = 0; i < opt.threads; i++) {
    xfer_multi_destroy(ws[i].m);
    for (int s = 0; s < opt.per_thread; s++)
      xfer_free(ws[i].slots[s].x);
    xfer_pool_destroy(ws[i].own_pool);
    close(ws[i].ep);
    free(ws[i].slots);
    for (int code = 0; code < 64; code++)
      free(ws[i].first_detail[code]);
  }
  xfer_pool_destroy(shared_pool);
  if (embedded)
    ts_stop(embedded);
  free(ws);
  return t.ok == t.done && !nbad_lines ? 0 : 1;
}
