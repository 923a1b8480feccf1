/* examples/xfer-load: the load tool, run as a user runs it (a process of
 * its own), against the embedded server, our test server and our DNS
 * responder: the report's figures, its JSON read by a strict parser, the
 * flags, Ctrl-C, and bad input as one clear line and a non-zero exit. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dnsserver.h"
#include "stats.h"
#include "testhelp.h"
#include "testserver.h"

static char out[65536], err[8192];

static void xfer_load_end(void) {}

static void build_argv(const char **argv, const char *const *args) {
  int n = 1;

  argv[0] = XFER_LOAD_BIN;
  for (; args[n - 1] && n < 31; n++)
    argv[n] = args[n - 1];
  argv[n] = NULL;
}

/* Runs xfer-load with args; its stdout and stderr land in out and err.
 * Returns the exit status. */
static int run(const char *const *args) {
  const char *argv[32];

  build_argv(argv, args);
  return th_spawn(argv, out, sizeof(out), err, sizeof(err));
}

/* Checks `json` with tests/json_check.py: one JSON value, every key unique
 * in its object, and each expression (over `d`) true. */
static void check_json(const char *json, const char *const *exprs) {
  char path[] = "/tmp/xfer-load-json-XXXXXX", jout[8192], jerr[2048];
  const char *argv[24] = {"/usr/bin/python3", JSON_CHECK, path};
  int fd = mkstemp(path), n = 3, rc;

  cr_assert_geq(fd, 0);
  cr_assert_eq(write(fd, json, strlen(json)), (ssize_t)strlen(json));
  close(fd);
  for (; exprs[n - 3] && n < 23; n++)
    argv[n] = exprs[n - 3];
  argv[n] = NULL;
  rc = th_spawn(argv, jout, sizeof(jout), jerr, sizeof(jerr));
  unlink(path);
  cr_assert_eq(rc, 0, "%s%s", jout, jerr);
}

/* A loopback port nothing listens on: connect is refused. */
static int closed_port(void) { return th_refused_port(); }

/* The p-th percentile is the sample of rank ceil(p/100 * n): of 1000
 * samples the 999th for p99.9 (99.9 / 100 * 1000 is 999.0000000000001 in
 * doubles, and the maximum was reported: one outlier showed as p99.9). */
TH_TEST(xfer_load, percentiles_take_the_right_sample) {
  static const long counts[] = {1000, 20000, 20000000};

  for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
    struct lat_stats s;
    long n = counts[k];

    memset(&s, 0, sizeof(s));
    for (long i = 0; i < n - n / 1000; i++)
      lat_add(&s, 10); /* us: below 64 every value has its own bucket */
    for (long i = 0; i < n / 1000; i++)
      lat_add(&s, 50);
    cr_assert_float_eq(lat_percentile_ms(&s, 99.9), 0.010, 1e-9, "n=%ld",
                       n);
    cr_assert_float_eq(lat_percentile_ms(&s, 100), 0.050, 1e-9);
    cr_assert_float_eq(lat_percentile_ms(&s, 50), 0.010, 1e-9);
  }
}

/* What make demo runs, smaller: the embedded server, the whole report. */
TH_TEST(xfer_load, embedded_server_and_the_report) {
  int rc = run((const char *[]){"-t", "2", "-c", "4", "-n", "400", NULL});

  cr_assert_eq(rc, 0, "%s%s", out, err);
  cr_assert(strstr(out, "(the embedded server)"), "%s", out);
  cr_assert(strstr(out, "2 threads, 4 connections (2 a thread)"), "%s", out);
  cr_assert(strstr(out, "requests:     400 in"), "%s", out);
  cr_assert(strstr(out, "(400 ok, 0 failed)"), "%s", out);
  cr_assert(strstr(out, "bodies:       40000 bytes, "), "%s", out);
  cr_assert(strstr(out, "B/s (response bodies only)"), "%s", out);
  cr_assert(strstr(out, "latency:      of the 400 successful requests\n"),
            "%s", out);
  cr_assert(strstr(out, "    min "), "%s", out);
  cr_assert(strstr(out, ", stdev "), "%s", out);
  cr_assert(strstr(out, "p99.9"), "%s", out);
  cr_assert(strstr(out, "errors:       0\n"), "%s", out);
  cr_assert(strstr(out, "status:       200: 400"), "%s", out);
  cr_assert(strstr(out, "clock reads:"), "%s", out);
  cr_assert(strstr(out, "timeline:     namelookup"), "%s", out);
  cr_assert(strstr(out, "connections:"), "%s", out);
  cr_assert_null(strstr(out, "stopped:"), "%s", out);
  cr_assert_eq(err[0], '\0', "quiet on stderr: %s", err);
}

TH_TEST(xfer_load, json_report_has_unique_keys) {
  int rc = run((const char *[]){"-t", "2", "-c", "2", "-n", "50", "--json",
                                "--pool", "per-thread", NULL});

  cr_assert_eq(rc, 0, "%s%s", out, err);
  cr_assert_eq(th_lines(out), 1, "one JSON object: %s", out);
  check_json(out, (const char *[]){
                      "d['requests'] == 50", "d['ok'] == 50",
                      "d['errors'] == 0", "d['cut'] == 0",
                      "d['stopped_by'] is None",
                      "d['pool_mode'] == 'per-thread'",
                      "d['threads'] == 2 and d['connections'] == 2",
                      "d['status'] == {'200': 50}",
                      "d['latency_ms']['count'] == 50",
                      "d['latency_includes_failures'] is False",
                      "d['failed_latency_ms']['count'] == 0",
                      "d['body_bytes'] == 5000",
                      "isinstance(d['pool'], dict)", NULL});
}

/* min <= mean <= max exactly, the percentiles inside [min, max], and one
 * sample is its own min, max and mean. */
TH_TEST(xfer_load, exact_min_max_mean_and_stdev) {
  cr_assert_eq(run((const char *[]){"-c", "4", "-n", "300", "--json", NULL}),
               0, "%s%s", out, err);
  check_json(out, (const char *[]){
                      "d['latency_ms']['min'] <= d['latency_ms']['mean'] <= "
                      "d['latency_ms']['max']",
                      "d['latency_ms']['min'] <= d['latency_ms']['p50'] <= "
                      "d['latency_ms']['p99.9'] <= d['latency_ms']['max']",
                      "d['latency_ms']['stdev'] >= 0", NULL});
  cr_assert_eq(run((const char *[]){"-c", "1", "-n", "1", "--json", NULL}), 0,
               "%s%s", out, err);
  check_json(out, (const char *[]){
                      "d['latency_ms']['min'] == d['latency_ms']['max']",
                      "abs(d['latency_ms']['mean'] - d['latency_ms']['min']) "
                      "< 0.002",
                      "d['latency_ms']['stdev'] == 0",
                      "d['latency_ms']['p50'] == d['latency_ms']['max']",
                      NULL});
}

/* The elapsed time runs from the first request to the last completion:
 * for one request, its own latency, not the start or join of threads or
 * a wait of the main thread (a second's progress period). Its end is the
 * library's completion stamp, not the worker's later reading, so a
 * loaded machine moves it only by the instant between the worker's
 * reading before the add and the library's in it. */
TH_TEST(xfer_load, elapsed_time_ends_at_the_last_completion) {
  cr_assert_eq(run((const char *[]){"-c", "1", "-n", "1", "--json", NULL}), 0,
               "%s%s", out, err);
  check_json(out, (const char *[]){
                      "d['seconds'] > 0",
                      "d['seconds'] * 1000 >= d['latency_ms']['max'] - 0.01",
                      "d['seconds'] * 1000 <= d['latency_ms']['max'] + 5",
                      NULL});
}

TH_TEST(xfer_load, duration_instead_of_a_count) {
  int rc = run((const char *[]){"-c", "2", "-d", "300ms", "--json", NULL});

  cr_assert_eq(rc, 0, "%s%s", out, err);
  check_json(out, (const char *[]){"d['requests'] > 0",
                                   "d['stopped_by'] == 'duration'",
                                   "d['errors'] == 0", NULL});
}

/* Failed requests are counted apart, with a latency of their own. */
TH_TEST(xfer_load, failures_have_their_own_latency) {
  struct ts_server *web = ts_start(NULL);
  char good[64], bad[64];
  int rc;

  snprintf(good, sizeof(good), "http://127.0.0.1:%d/bytes/10", ts_port(web));
  snprintf(bad, sizeof(bad), "http://127.0.0.1:%d/", closed_port());
  rc = run((const char *[]){"-c", "1", "-n", "10", "--json", good, bad,
                            NULL});
  cr_assert_eq(rc, 1, "%s%s", out, err);
  check_json(out, (const char *[]){
                      "d['requests'] == 10", "d['ok'] == 5",
                      "d['errors'] == 5",
                      "d['latency_ms']['count'] == 5",
                      "d['failed_latency_ms']['count'] == 5",
                      "d['latency_includes_failures'] is False",
                      "list(d['errors_by_kind'].values())[0]['count'] == 5",
                      NULL});
  rc = run((const char *[]){"-c", "1", "-n", "4", good, bad, NULL});
  cr_assert_eq(rc, 1, "%s%s", out, err);
  cr_assert(strstr(out, "(2 ok, 2 failed)"), "%s", out);
  cr_assert(strstr(out, "of the 2 successful requests (failures apart, "
                        "below)"),
            "%s", out);
  cr_assert(strstr(out, "errors:       2\n    2 x could not connect"), "%s",
            out);
  cr_assert(strstr(out, "latency of the failed: min "), "%s", out);
  ts_stop(web);
}

/* Ctrl-C: no new requests, the ones in flight finish, the report of what
 * was measured, exit 130; also when SIGINT started ignored, as for a job a
 * script put in the background. */
/* Starts xfer-load with args (SIGINT ignored at start with
 * ignore_sigint), sends it `sig` once the server has seen `requests`
 * requests, and returns its exit status. */
static int signal_when(struct ts_server *web, long requests, int sig,
                       bool ignore_sigint, const char *const *args) {
  const char *argv[32];
  struct th_proc p;

  build_argv(argv, args);
  th_spawn_start(&p, argv, ignore_sigint);
  cr_assert(ts_wait(web, TS_REQUESTS, requests, 60000), "never got going");
  kill(p.pid, sig);
  return th_spawn_wait(&p, out, sizeof(out), err, sizeof(err));
}

TH_TEST(xfer_load, sigint_stops_and_reports) {
  struct ts_server *web = ts_start(NULL);
  char url[64];
  int rc;

  snprintf(url, sizeof(url), "http://127.0.0.1:%d/bytes/10", ts_port(web));
  rc = signal_when(web, 50, SIGINT, true,
                   (const char *[]){"-c", "2", "-d", "10m", url, NULL});
  cr_assert_eq(rc, 130, "%s%s", out, err);
  cr_assert(strstr(out, "stopped:      by SIGINT; 0 in flight were cut"),
            "%s", out);
  cr_assert(strstr(out, " failed)\n"), "%s", out);
  cr_assert(strstr(out, "errors:       0\n"), "%s", out);
  cr_assert_null(strstr(out, "requests:     0 in"), "%s", out);
  ts_stop(web);
}

/* SIGTERM with requests that never end: they are cut after the grace and
 * counted apart, and the JSON report still comes; exit 143. */
TH_TEST(xfer_load, sigterm_cuts_what_does_not_finish) {
  struct ts_server *web = ts_start(NULL);
  char url[64];
  int rc;

  snprintf(url, sizeof(url), "http://127.0.0.1:%d/never", ts_port(web));
  rc = signal_when(web, 3, SIGTERM, false,
                   (const char *[]){"-t", "2", "-c", "3", "-n", "100",
                                    "--json", url, NULL});
  cr_assert_eq(rc, 143, "%s%s", out, err);
  check_json(out, (const char *[]){"d['stopped_by'] == 'SIGTERM'",
                                   "d['cut'] == 3", "d['requests'] == 0",
                                   "d['errors'] == 0",
                                   /* per request started: the cut too */
                                   "d['clock_reads_per_request'] >= 2",
                                   NULL});
  ts_stop(web);
}

/* A run in which no request finished measured nothing: it fails, and
 * says why (it exited 0: scripts took it for a success). */
TH_TEST(xfer_load, a_run_where_nothing_finished_fails) {
  struct ts_server *web = ts_start(NULL);
  char url[64];
  int rc;

  snprintf(url, sizeof(url), "http://127.0.0.1:%d/never", ts_port(web));
  rc = run((const char *[]){"-t", "1", "-c", "2", "-d", "300ms", url, NULL});
  cr_assert_eq(rc, 1, "%s%s", out, err);
  cr_assert(strstr(err, "no request finished (2 cut at the end of the run)"),
            "%s", err);
  ts_stop(web);
}

/* -c counts connections across the threads: 7 over 3 threads are 7 in
 * flight at once (the server holds each /gather/7 until 7 are there). */
TH_TEST(xfer_load, connections_are_spread_over_the_threads) {
  struct ts_server *web = ts_start(NULL);
  char url[64];
  int rc;

  snprintf(url, sizeof(url), "http://127.0.0.1:%d/gather/7/bytes/1",
           ts_port(web));
  rc = run((const char *[]){"-t", "3", "-c", "7", "-n", "7", url, NULL});
  cr_assert_eq(rc, 0, "%s%s", out, err);
  cr_assert(strstr(out, "3 threads, 7 connections (2 or one more a thread)"),
            "%s", out);
  cr_assert(strstr(out, "(7 ok, 0 failed)"), "%s", out);
  ts_stop(web);
}

static void usage_error(const char *const *args, const char *says) {
  int rc = run(args);

  cr_assert_eq(rc, 2, "%s: %s%s", args[0], out, err);
  cr_assert_eq(th_lines(err), 1, "%s", err);
  cr_assert(strstr(err, says), "%s", err);
  cr_assert_eq(out[0], '\0', "%s", out);
}

TH_TEST(xfer_load, usage_errors_are_one_line) {
  char list[] = "/tmp/xfer-load-urls-XXXXXX";

  usage_error((const char *[]){"-t", "3", "-c", "2", NULL},
              "-c 2 is below -t 3");
  usage_error((const char *[]){"--timeout", "500", NULL}, "give a unit");
  usage_error((const char *[]){"-d", "10", NULL}, "give a unit");
  usage_error((const char *[]){"-d", "soon", NULL}, "bad duration 'soon'");
  usage_error((const char *[]){"-n", "5", "-d", "1s", NULL},
              "-n and -d both given");
  usage_error((const char *[]){"-o", "/tmp", NULL}, "-o needs --urls");
  usage_error((const char *[]){"-n", "0", NULL}, "bad request count '0'");
  usage_error((const char *[]){"-H", "Bad Name: x", NULL}, "bad header");
  usage_error((const char *[]){"-X", "GET /", NULL}, "bad method");
  /* Framing that disagrees with --data: every request would fail. */
  usage_error((const char *[]){"-X", "POST", "--data", "abc", "-H",
                               "Content-Length: 4", NULL},
              "does not say the 3 bytes");
  usage_error((const char *[]){"-H", "content-length: 1", NULL},
              "does not say the 0 bytes");
  usage_error((const char *[]){"--data", "abc", "-H",
                               "Transfer-Encoding: chunked", NULL},
              "not a Transfer-Encoding");
  usage_error((const char *[]){"--frobnicate", NULL},
              "unknown option '--frobnicate'");
  usage_error((const char *[]){"-c", NULL}, "needs a value");
  /* Counts past an int were taken modulo 2^32: 0 (the default) and 1. */
  usage_error((const char *[]){"-c", "4294967296", NULL},
              "too many connections (4294967296");
  usage_error((const char *[]){"-t", "4294967297", NULL},
              "too many threads (4294967297");
  usage_error((const char *[]){"-t", "2147483648", NULL}, "too many threads");
  close(mkstemp(list));
  usage_error((const char *[]){"--urls", list, "http://127.0.0.1/", NULL},
              "URLs both");
  /* -n repeats lines; -o saves each line once (slots wrote one file). */
  usage_error((const char *[]){"--urls", list, "-n", "10", "-o", "/tmp",
                               NULL},
              "-o with -n");
  unlink(list);
}

/* A malformed --dns-servers is a usage error before any request. */
TH_TEST(xfer_load, malformed_dns_servers_stop_before_any_request) {
  struct ts_server *web = ts_start(NULL);
  struct ts_stats st;
  char url[64];

  snprintf(url, sizeof(url), "http://127.0.0.1:%d/bytes/1", ts_port(web));
  usage_error((const char *[]){"--dns-servers", "not-an-address", url, NULL},
              "bad --dns-servers 'not-an-address'");
  ts_get_stats(web, &st);
  cr_assert_eq(st.accepted, 0);
  ts_stop(web);
}

TH_TEST(xfer_load, version_and_help) {
  cr_assert_eq(run((const char *[]){"--version", NULL}), 0);
  cr_assert(strstr(out, "xfer-load (libxfer) " PACKAGE_VERSION "\n"), "%s",
            out);
  cr_assert_eq(run((const char *[]){"--help", NULL}), 0);
  cr_assert(strstr(out, "spread over the threads"), "%s", out);
  cr_assert(strstr(out, "--version"), "%s", out);
}

/* Singular where it is one, and the rate of a small body in B/s. */
TH_TEST(xfer_load, report_wording) {
  cr_assert_eq(run((const char *[]){"-c", "1", "-n", "1", NULL}), 0, "%s%s",
               out, err);
  cr_assert(strstr(out, "1 thread, 1 connection (1 a thread)"), "%s", out);
  cr_assert(strstr(out, "requests:     1 in "), "%s", out);
  cr_assert(strstr(out, "(1 ok, 0 failed)"), "%s", out);
  cr_assert(strstr(out, "of the 1 successful request\n"), "%s", out);
  cr_assert(strstr(out, "bodies:       100 bytes, "), "%s", out);
}

TH_TEST(xfer_load, a_bad_url_is_one_line) {
  int rc = run((const char *[]){"htp://example", NULL});

  cr_assert_eq(rc, 2);
  cr_assert_eq(th_lines(err), 1, "%s", err);
  cr_assert(strstr(err, "bad URL 'htp://example'"), "%s", err);
  cr_assert_eq(out[0], '\0');
}

TH_TEST(xfer_load, a_refused_port_is_one_line_and_json_still_comes) {
  char url[64];
  int rc;

  snprintf(url, sizeof(url), "http://127.0.0.1:%d/", closed_port());
  rc = run((const char *[]){"-n", "3", "-c", "1", url, NULL});
  cr_assert_eq(rc, 1);
  cr_assert_eq(th_lines(err), 1, "%s", err);
  cr_assert(strstr(err, "all 3 requests failed"), "%s", err);
  cr_assert(strstr(err, "refused"), "%s", err);
  rc = run((const char *[]){"-n", "3", "-c", "1", "--json", url, NULL});
  cr_assert_eq(rc, 1);
  check_json(out, (const char *[]){"d['requests'] == 3", "d['ok'] == 0",
                                   "d['errors'] == 3",
                                   "d['failed_latency_ms']['count'] == 3",
                                   "d['latency_ms']['count'] == 0", NULL});
}

TH_TEST(xfer_load, an_unknown_host_is_one_line) {
  struct ds_server *dns = ds_start(NULL);
  char servers[64];
  int rc;

  snprintf(servers, sizeof(servers), "127.0.0.1:%d", ds_port(dns));
  rc = run((const char *[]){"-n", "2", "-c", "1", "--dns-servers", servers,
                            "http://nosuch.test/", NULL});
  ds_stop(dns);
  cr_assert_eq(rc, 1);
  cr_assert_eq(th_lines(err), 1, "%s", err);
  cr_assert(strstr(err, "all 2 requests failed"), "%s", err);
  cr_assert(strstr(err, "nosuch.test"), "%s", err);
}

/* Bytes of a URL list that are not UTF-8 still make a report a strict
 * JSON parser takes (as U+FFFD); UTF-8 stays as it is. */
TH_TEST(xfer_load, json_of_a_list_with_raw_bytes) {
  struct ts_server *web = ts_start(NULL);
  char list[] = "/tmp/xfer-load-urls-XXXXXX";
  FILE *f;
  int rc;

  cr_assert_neq(mkstemp(list), -1);
  f = fopen(list, "w");
  fprintf(f, "http://127.0.0.1:%d/bytes/1\n", ts_port(web));
  fprintf(f, "htp://caf\xc3\xa9/\n");
  fprintf(f, "htp://raw\xff\xfe\xc3/\n");
  fclose(f);
  rc = run((const char *[]){"--urls", list, "--json", NULL});
  cr_assert_eq(rc, 1, "exit %d: %s%s", rc, out, err);
  check_json(out, (const char *[]){
                      "d['requests'] == 1", "len(d['bad_lines']) == 2",
                      "d['bad_lines'][0]['text'] == 'htp://caf\\u00e9/'",
                      "'\\ufffd' in d['bad_lines'][1]['text']", NULL});
  unlink(list);
  ts_stop(web);
}

static off_t size_of(const char *dir, int line) {
  char path[128];
  struct stat st;

  snprintf(path, sizeof(path), "%s/%d.body", dir, line);
  if (stat(path, &st))
    return -1;
  unlink(path);
  return st.st_size;
}

/* A URL list with bad lines: the good ones are fetched and saved, the bad
 * ones reported; a request that failed leaves no file, an empty body an
 * empty one. */
TH_TEST(xfer_load, a_url_list_with_bad_lines_and_failures) {
  struct ts_server *web = ts_start(NULL);
  char list[] = "/tmp/xfer-load-urls-XXXXXX";
  char dir[] = "/tmp/xfer-load-bodies-XXXXXX";
  FILE *f;
  int rc;

  cr_assert_not_null(mkdtemp(dir));
  cr_assert_neq(mkstemp(list), -1);
  f = fopen(list, "w");
  fprintf(f, "http://127.0.0.1:%d/bytes/10\n", ts_port(web));
  fprintf(f, "# a comment\n\n");
  fprintf(f, "htp:/nope\n");
  fprintf(f, "http://127.0.0.1:%d/chunked/20/7\n", ts_port(web));
  fprintf(f, "http://127.0.0.1:%d/\n", closed_port());
  fprintf(f, "http://127.0.0.1:%d/bytes/0\n", ts_port(web));
  fprintf(f, "http://127.0.0.1:%d/partial/10/4\n", ts_port(web));
  fclose(f);
  rc = run((const char *[]){"--urls", list, "-o", dir, NULL});
  cr_assert_eq(rc, 1, "a bad line makes the exit non-zero: %s", out);
  cr_assert(strstr(out, "requests:     5 in"), "%s", out);
  cr_assert(strstr(out, "(3 ok, 2 failed)"), "%s", out);
  cr_assert(strstr(out, "bad URL on line 4: 'htp:/nope'"), "%s", out);
  cr_assert_eq(size_of(dir, 1), 10);
  cr_assert_eq(size_of(dir, 5), 20);
  cr_assert_eq(size_of(dir, 6), -1, "no file for a refused connection");
  cr_assert_eq(size_of(dir, 7), 0, "an empty body is an empty file");
  cr_assert_eq(size_of(dir, 8), -1, "no file for a body cut short");
  cr_assert_eq(rmdir(dir), 0, "nothing else was written");
  unlink(list);
  ts_stop(web);
}

/* Runs xfer-load with args on a terminal of its own (a pty: the progress
 * line is drawn on a terminal only) and gathers all it writes there, into
 * out, until it exits (at most 60 s). Returns its exit status. */
static int run_on_a_terminal(const char *const *args) {
  const char *argv[32];
  size_t len = 0;
  int master, status = -1;
  pid_t pid;

  build_argv(argv, args);
  fflush(NULL);
  pid = forkpty(&master, NULL, NULL, NULL);
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  for (int rounds = 0; rounds < 600; rounds++) { /* 100 ms each at most */
    struct pollfd pfd = {.fd = master, .events = POLLIN};
    ssize_t n;

    if (poll(&pfd, 1, 100) <= 0)
      continue;
    n = read(master, out + len, sizeof(out) - 1 - len);
    if (n <= 0)
      break; /* EIO: the child's side closed, it has ended */
    len += (size_t)n;
    cr_assert_lt(len, sizeof(out) - 1);
  }
  out[len] = '\0';
  close(master);
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The progress line says how many failed, and the connections open in
 * every thread's own pool (--pool per-thread: it said 0, the shared
 * pool's count alone being read). Requests of 400 ms, two at a time: the
 * line is drawn every 250 ms meanwhile; the second pair runs after the
 * first failed. */
TH_TEST(xfer_load, the_progress_line_says_failures_and_open_connections) {
  struct ts_server *web = ts_start(NULL);
  char url[128];
  int rc;

  snprintf(url, sizeof(url), "http://127.0.0.1:%d/delay/400/close-now",
           ts_port(web));
  rc = run_on_a_terminal((const char *[]){"-t", "2", "-c", "2", "-n", "4",
                                          "--pool", "per-thread", url,
                                          NULL});
  cr_assert_eq(rc, 1, "every request failed: %s", out);
  cr_assert(strstr(out, " 2 failed,"), "%s", out);
  cr_assert(strstr(out, " 2 open"), "both threads' connections: %s", out);
  ts_stop(web);
}
