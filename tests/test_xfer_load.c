/* examples/xfer-load: the load tool, run as a user runs it (a process of
 * its own), against the embedded server, our test server and our DNS
 * responder; bad input gives one clear line and a non-zero exit. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dnsserver.h"
#include "testhelp.h"
#include "testserver.h"

static char out[65536], err[8192];

static void xfer_load_end(void) {}

/* Runs xfer-load with args; its stdout and stderr land in out and err.
 * Returns the exit status. */
static int run(const char *const *args) {
  const char *argv[32] = {XFER_LOAD_BIN};
  int n = 1;

  for (; args[n - 1] && n < 31; n++)
    argv[n] = args[n - 1];
  argv[n] = NULL;
  return th_spawn(argv, out, sizeof(out), err, sizeof(err));
}

/* What make demo runs, smaller: the embedded server, the whole report. */
TH_TEST(xfer_load, embedded_server_and_the_report) {
  int rc = run((const char *[]){"-t", "2", "-c", "4", "-n", "400", NULL});

  cr_assert_eq(rc, 0, "%s%s", out, err);
  cr_assert(strstr(out, "(the embedded server)"), "%s", out);
  cr_assert(strstr(out, "requests:     400 in"), "%s", out);
  cr_assert(strstr(out, "errors:       0"), "%s", out);
  cr_assert(strstr(out, "status:       200: 400"), "%s", out);
  cr_assert(strstr(out, "latency:      min"), "%s", out);
  cr_assert(strstr(out, "p99.9"), "%s", out);
  cr_assert(strstr(out, "clock reads:"), "%s", out);
  cr_assert(strstr(out, "timeline:     namelookup"), "%s", out);
  cr_assert(strstr(out, "connections:"), "%s", out);
  cr_assert_eq(err[0], '\0', "quiet on stderr: %s", err);
}

TH_TEST(xfer_load, json_report) {
  int rc = run((const char *[]){"-t", "2", "-c", "2", "-n", "50", "--json",
                                "--pool", "per-thread", NULL});

  cr_assert_eq(rc, 0, "%s%s", out, err);
  cr_assert_eq(th_lines(out), 1, "one JSON object: %s", out);
  cr_assert(strstr(out, "\"requests\":50,"), "%s", out);
  cr_assert(strstr(out, "\"errors\":0,"), "%s", out);
  cr_assert(strstr(out, "\"pool\":\"per-thread\""), "%s", out);
  cr_assert(strstr(out, "\"p99.9\":"), "%s", out);
  cr_assert(strstr(out, "\"status\":{\"200\":50}"), "%s", out);
}

TH_TEST(xfer_load, duration_instead_of_a_count) {
  int rc = run((const char *[]){"-c", "2", "-d", "300ms", "--json", NULL});

  cr_assert_eq(rc, 0, "%s%s", out, err);
  cr_assert_null(strstr(out, "\"requests\":0,"), "%s", out);
}

TH_TEST(xfer_load, a_bad_url_is_one_line) {
  int rc = run((const char *[]){"htp://example", NULL});

  cr_assert_eq(rc, 2);
  cr_assert_eq(th_lines(err), 1, "%s", err);
  cr_assert(strstr(err, "bad URL 'htp://example'"), "%s", err);
  cr_assert_eq(out[0], '\0');
}

TH_TEST(xfer_load, an_unknown_option_is_one_line) {
  int rc = run((const char *[]){"--frobnicate", NULL});

  cr_assert_eq(rc, 2);
  cr_assert_eq(th_lines(err), 1, "%s", err);
  cr_assert(strstr(err, "unknown option '--frobnicate'"), "%s", err);
}

TH_TEST(xfer_load, a_refused_port_is_one_line) {
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM, 0), rc;
  char url[64];

  /* A port that was free a moment ago, closed: connect is refused. */
  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  getsockname(fd, (struct sockaddr *)&a, &len);
  close(fd);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(a.sin_port));
  rc = run((const char *[]){"-n", "3", "-c", "1", url, NULL});
  cr_assert_eq(rc, 1);
  cr_assert_eq(th_lines(err), 1, "%s", err);
  cr_assert(strstr(err, "all 3 requests failed"), "%s", err);
  cr_assert(strstr(err, "refused"), "%s", err);
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

/* A URL list with bad lines: the good ones are fetched and saved, the bad
 * ones reported. */
TH_TEST(xfer_load, a_url_list_with_bad_lines) {
  struct ts_server *web = ts_start(NULL);
  char list[] = "/tmp/xfer-load-urls-XXXXXX";
  char dir[] = "/tmp/xfer-load-bodies-XXXXXX";
  char path[128];
  struct stat st;
  FILE *f;
  int rc;

  cr_assert_not_null(mkdtemp(dir));
  cr_assert_neq(mkstemp(list), -1);
  f = fopen(list, "w");
  fprintf(f, "http://127.0.0.1:%d/bytes/10\n", ts_port(web));
  fprintf(f, "# a comment\n\n");
  fprintf(f, "htp:/nope\n");
  fprintf(f, "http://127.0.0.1:%d/chunked/20/7\n", ts_port(web));
  fclose(f);
  rc = run((const char *[]){"--urls", list, "-o", dir, NULL});
  cr_assert_eq(rc, 1, "a bad line makes the exit non-zero: %s", out);
  cr_assert(strstr(out, "requests:     2 in"), "%s", out);
  cr_assert(strstr(out, "bad URL on line 4: 'htp:/nope'"), "%s", out);
  snprintf(path, sizeof(path), "%s/1.body", dir);
  cr_assert_eq(stat(path, &st), 0);
  cr_assert_eq(st.st_size, 10);
  unlink(path);
  snprintf(path, sizeof(path), "%s/5.body", dir);
  cr_assert_eq(stat(path, &st), 0);
  cr_assert_eq(st.st_size, 20);
  unlink(path);
  rmdir(dir);
  unlink(list);
  ts_stop(web);
}
