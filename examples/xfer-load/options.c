/* xfer-load's command line (see options.h). */
#define _GNU_SOURCE
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <xfer/xfer.h>

#define DEFAULT_CONNECTIONS 16
#define DEFAULT_REQUESTS 1000
#define DEFAULT_TIMEOUT_MS 30000

void load_usage_error(const char *fmt, ...) {
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
      "  -c, --connections N    requests in flight in all, spread over the "
      "threads\n"
      "                         (16, or one a thread); at least -t\n"
      "  -n, --requests N       requests in all (1000, or each --urls line "
      "once)\n"
      "  -d, --duration TIME    run for TIME instead of -n (500ms, 10s, 2m)\n"
      "  -X, --method M         request method (GET)\n"
      "  -H, --header 'N: V'    add a request header (repeatable)\n"
      "      --data STRING      request body\n"
      "      --timeout TIME     per-request total timeout (30s; units as -d)\n"
      "      --dns-servers A[:P],...  name servers (as curl names it)\n"
      "      --urls FILE        URLs to fetch, one a line (mixed hosts)\n"
      "  -o, --output DIR       with --urls: save each body as DIR/LINE.body\n"
      "      --pool shared|per-thread  one pool for all threads (shared)\n"
      "      --json             the report as one JSON object\n"
      "  -V, --version          the version\n"
      "  -h, --help             this text\n"
      "With no URL, an embedded HTTP/1.1 server on 127.0.0.1 is started and\n"
      "used (http://127.0.0.1:PORT/bytes/100). Ctrl-C (SIGINT) or SIGTERM\n"
      "stops new requests, gives those in flight a second, and reports.\n");
  exit(0);
}

static long parse_count(const char *s, const char *what) {
  char *end;
  long v;

  errno = 0;
  v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < 1)
    load_usage_error("bad %s '%s' (a whole number from 1)", what, s);
  return v;
}

/* "500ms", "2s", "1m" in milliseconds; a bare number has no unit and is
 * refused, so that -d and --timeout read alike. */
static long parse_time_ms(const char *s, const char *what) {
  static const struct {
    const char *unit;
    double ms;
  } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
  char *end;
  double v;

  errno = 0;
  v = strtod(s, &end);
  if (errno || end == s || !(v > 0))
    load_usage_error("bad %s '%s' (a time such as 500ms, 2s or 1m)", what, s);
  for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
    if (!strcmp(end, units[i].unit)) {
      double ms = v * units[i].ms;
      if (ms < 1 || ms > (double)LONG_MAX / 2)
        load_usage_error("bad %s '%s' (from 1ms to years)", what, s);
      return (long)ms;
    }
  load_usage_error("bad %s '%s' (give a unit: 500ms, 2s, 1m)", what, s);
}

/* "Name: value" into a header, checked by libxfer itself. */
static void add_header(struct load_opts *o, const char *line) {
  const char *colon = strchr(line, ':'), *value;
  struct load_header *h;
  xfer *probe;

  if (!colon || colon == line)
    load_usage_error("bad header '%s' (expected 'Name: value')", line);
  o->headers = realloc(o->headers, (size_t)(o->nheaders + 1) * sizeof(*h));
  if (!o->headers)
    load_usage_error("out of memory");
  h = &o->headers[o->nheaders++];
  h->name = strndup(line, (size_t)(colon - line));
  for (value = colon + 1; *value == ' ' || *value == '\t'; value++)
    ;
  h->value = value;
  probe = xfer_new();
  if (!h->name || !probe)
    load_usage_error("out of memory");
  if (xfer_add_header(probe, h->name, h->value) != XFER_OK)
    load_usage_error("bad header '%s': %s", line,
                     xfer_get_error_detail(probe));
  xfer_free(probe);
}

/* A -H Content-Length or Transfer-Encoding must say how --data is sent
 * (its length; no body: 0), as libxfer checks when each request starts:
 * refused now, rather than every request failing. */
static void check_framing(const struct load_opts *o) {
  size_t len = o->data ? strlen(o->data) : 0;
  char want[32];

  snprintf(want, sizeof(want), "%zu", len);
  for (int i = 0; i < o->nheaders; i++) {
    const struct load_header *h = &o->headers[i];
    size_t n = strlen(h->value);

    while (n && (h->value[n - 1] == ' ' || h->value[n - 1] == '\t'))
      n--;
    if (!strcasecmp(h->name, "Transfer-Encoding"))
      load_usage_error("-H '%s: %s': the request body is sent with its "
                       "length, not a Transfer-Encoding",
                       h->name, h->value);
    if (!strcasecmp(h->name, "Content-Length") &&
        (n != strlen(want) || strncmp(h->value, want, n)))
      load_usage_error("-H '%s: %s' does not say the %zu bytes of the "
                       "request body (--data)",
                       h->name, h->value, len);
  }
}

/* Refused now, not by the first request. */
static void check_method(const char *m) {
  xfer *probe = xfer_new();

  if (!probe)
    load_usage_error("out of memory");
  if (xfer_set_method(probe, m) != XFER_OK)
    load_usage_error("bad method '%s': %s", m, xfer_get_error_detail(probe));
  xfer_free(probe);
}

static void check_dns_servers(const char *servers) {
  xfer_multi *probe = xfer_multi_new(NULL);

  if (!probe)
    load_usage_error("out of memory");
  if (xfer_multi_set_dns_servers(probe, servers) != XFER_M_OK)
    load_usage_error("bad --dns-servers '%s' (ip[:port] or [ipv6]:port, "
                     "comma separated)",
                     servers);
  xfer_multi_destroy(probe);
}

void load_parse_args(int argc, char **argv, struct load_opts *o) {
  static const struct option longs[] = {
      {"threads", required_argument, NULL, 't'},
      {"connections", required_argument, NULL, 'c'},
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
      {"version", no_argument, NULL, 'V'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int c;

  memset(o, 0, sizeof(*o));
  o->threads = 1;
  o->timeout_ms = DEFAULT_TIMEOUT_MS;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":t:c:n:d:X:H:o:Vh", longs, NULL)) !=
         -1) {
    switch (c) {
    case 't': /* bounded as a long, before it becomes an int */
      if (parse_count(optarg, "thread count") > 1024)
        load_usage_error("too many threads (%s; at most 1024)", optarg);
      o->threads = (int)parse_count(optarg, "thread count");
      break;
    case 'c':
      if (parse_count(optarg, "connection count") > 1000000)
        load_usage_error("too many connections (%s; at most 1000000)",
                         optarg);
      o->connections = (int)parse_count(optarg, "connection count");
      break;
    case 'n':
      o->requests = parse_count(optarg, "request count");
      break;
    case 'd':
      o->duration_ms = parse_time_ms(optarg, "duration");
      break;
    case 'X':
      check_method(optarg);
      o->method = optarg;
      break;
    case 'H':
      add_header(o, optarg);
      break;
    case 'D':
      o->data = optarg;
      break;
    case 'T':
      o->timeout_ms = parse_time_ms(optarg, "timeout");
      break;
    case 'S':
      check_dns_servers(optarg);
      o->dns_servers = optarg;
      break;
    case 'U':
      o->urls_file = optarg;
      break;
    case 'o':
      o->out_dir = optarg;
      break;
    case 'P':
      if (!strcmp(optarg, "per-thread"))
        o->per_thread_pool = true;
      else if (strcmp(optarg, "shared"))
        load_usage_error("bad --pool '%s' (shared or per-thread)", optarg);
      break;
    case 'J':
      o->json = true;
      break;
    case 'V':
      printf("xfer-load (libxfer) %s\n", XFER_LOAD_VERSION);
      exit(0);
    case 'h':
      usage();
      break;
    case ':':
      load_usage_error("option '%s' needs a value", argv[optind - 1]);
    default:
      load_usage_error("unknown option '%s'", argv[optind - 1]);
    }
  }
  o->urls = argv + optind;
  o->nurls = argc - optind;

  if (!o->connections)
    o->connections =
        o->threads > DEFAULT_CONNECTIONS ? o->threads : DEFAULT_CONNECTIONS;
  if (o->connections < o->threads)
    load_usage_error("-c %d is below -t %d: each thread needs at least one "
                     "connection",
                     o->connections, o->threads);
  if (o->requests && o->duration_ms)
    load_usage_error("-n and -d both given: a run is by count or by time");
  if (o->out_dir && !o->urls_file)
    load_usage_error("-o needs --urls (it saves each line's body)");
  if (o->out_dir && o->requests)
    load_usage_error("-o with -n: -o saves each line's body once (without "
                     "-n, each --urls line is fetched once)");
  if (o->urls_file && o->nurls)
    load_usage_error("URLs both on the command line and in --urls");
  check_framing(o);
  if (o->urls_file && o->duration_ms)
    load_usage_error("-d with --urls: a list is fetched once");
  if (!o->requests && !o->duration_ms && !o->urls_file)
    o->requests = DEFAULT_REQUESTS;
}

int load_connections_of(const struct load_opts *o, int i) {
  return o->connections / o->threads + (i < o->connections % o->threads);
}
