/* examples/epoll-fetch: the short epoll examples, run as a user runs them
 * against our test server: one handle reused over several URLs on one
 * loop, and threads sharing one pool. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "testhelp.h"
#include "testserver.h"

static char out[16384], err[4096];

static void epoll_fetch_end(void) {}

TH_TEST(epoll_fetch, one_handle_reused_over_several_urls) {
  struct ts_server *web = ts_start(NULL);
  char a[64], b[64], c[64], want[128];
  int rc;

  snprintf(a, sizeof(a), "http://127.0.0.1:%d/bytes/10", ts_port(web));
  snprintf(b, sizeof(b), "http://127.0.0.1:%d/chunked/20/7", ts_port(web));
  snprintf(c, sizeof(c), "http://127.0.0.1:%d/status/404", ts_port(web));
  rc = th_spawn((const char *[]){EPOLL_FETCH_BIN, a, b, c, NULL}, out,
                sizeof(out), err, sizeof(err));
  cr_assert_eq(rc, 0, "%s%s", out, err);
  snprintf(want, sizeof(want), "%s: 200, 10 bytes\n", a);
  cr_assert(strstr(out, want), "%s", out);
  snprintf(want, sizeof(want), "%s: 200, 20 bytes (connection reused)\n", b);
  cr_assert(strstr(out, want), "%s", out);
  snprintf(want, sizeof(want), "%s: 404, 0 bytes (connection reused)\n", c);
  cr_assert(strstr(out, want), "%s", out);
  cr_assert_eq(err[0], '\0', "%s", err);
  ts_stop(web);
}

TH_TEST(epoll_fetch, a_failure_is_said_and_the_next_url_still_runs) {
  struct ts_server *web = ts_start(NULL);
  char refused[64], good[64];
  int rc;

  snprintf(refused, sizeof(refused), "http://127.0.0.1:%d/", th_refused_port());
  snprintf(good, sizeof(good), "http://127.0.0.1:%d/bytes/5", ts_port(web));
  rc = th_spawn((const char *[]){EPOLL_FETCH_BIN, refused, "nope://x", good,
                                 NULL},
                out, sizeof(out), err, sizeof(err));
  cr_assert_eq(rc, 1, "%s%s", out, err);
  cr_assert(strstr(err, "could not connect"), "%s", err);
  cr_assert(strstr(err, "nope://x: "), "%s", err);
  cr_assert(strstr(out, ": 200, 5 bytes\n"), "%s", out);
  ts_stop(web);
}

/* Four threads, 25 fetches each, one at a time per thread: the shared
 * pool never needs more connections than requests in flight. */
TH_TEST(epoll_fetch, threads_share_one_pool) {
  struct ts_server *web = ts_start(NULL);
  unsigned long opened = 99, reuses = 0;
  char url[64];
  int rc, ok = 0, all = 0;

  snprintf(url, sizeof(url), "http://127.0.0.1:%d/bytes/100", ts_port(web));
  /* Each thread keeps its own connection attached; a thread that finds
   * none idle asks another for its own and waits for it. That wait is 1 s
   * here, not the default 10 ms: a loaded machine may not run the owner
   * within 10 ms, and each thread that gave up would open one more. */
  rc = th_spawn(
      (const char *[]){THREADS_FETCH_BIN, url, "4", "25", "1000", NULL}, out,
      sizeof(out), err, sizeof(err));
  cr_assert_eq(rc, 0, "%s%s", out, err);
  cr_assert_eq(sscanf(out,
                      "%d of %d fetches ok; %lu connections opened, %lu "
                      "reuses",
                      &ok, &all, &opened, &reuses),
               4, "%s", out);
  cr_assert_eq(ok, 100);
  cr_assert_leq(opened, 4, "%s", out);
  cr_assert_eq(reuses, 100 - opened, "%s", out);
  ts_stop(web);
}
