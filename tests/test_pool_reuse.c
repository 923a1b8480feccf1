/*
 * Rule 6, through real transfers: a stale pooled connection never fails a
 * request (lib/pool.c's reuse check, lib/transfer.c's retry). The test
 * has the server close its idle connections (ts_close_idle(), as a
 * keep-alive timeout would) and waits for that close (an event of the
 * test server, not a sleep), then sets how long the connection has been
 * idle on the multi's clock with the test clock.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "cfilter.h"
#include "testhelp.h"
#include "testserver.h"

static struct ts_server *srv;
static xfer_pool *pool;
static xfer_multi *m;
static xfer *xs[32];
static int nxs;

static void reuse_end(void) {
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(pool), XFER_OK);
  for (int i = 0; i < nxs; i++)
    cr_assert_eq(xfer_free(xs[i]), XFER_OK);
  nxs = 0;
  ts_stop(srv);
  th_clock_uninstall();
}

TestSuite(reuse);

/* A server with these settings, a pool with these options, one multi,
 * and the test clock standing at 1000 s. */
static void start(struct ts_config cfg, xfer_pool_opts opts) {
  srv = ts_start(&cfg);
  pool = xfer_pool_new(&opts);
  m = xfer_multi_new(pool);
  cr_assert(srv && pool && m);
  th_clock_install(MS(1000000), 0);
}

/* A request added to m; with `connection`, its Connection header. */
static xfer *request(const char *method, const char *path,
                     const char *connection) {
  xfer *x = xfer_new();

  cr_assert_eq(xfer_set_url(x, th_url(ts_port(srv), path)), XFER_OK);
  if (method) {
    cr_assert_eq(xfer_set_method(x, method), XFER_OK);
    cr_assert_eq(xfer_set_body(x, "payload", 7), XFER_OK);
  }
  if (connection)
    cr_assert_eq(xfer_add_header(x, "Connection", connection), XFER_OK);
  cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
  xs[nxs++] = x;
  return x;
}

/* One request, run to its end; it must succeed. */
static xfer *run(const char *method, const char *path) {
  xfer *x = request(method, path, NULL);

  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK, "%s %s: %s", method ? method : "GET",
               path, xfer_get_error_detail(x));
  return x;
}

static xfer_pool_stats stats(void) {
  xfer_pool_stats ps;

  xfer_pool_get_stats(pool, &ps);
  return ps;
}

/* The server closes its idle connections now (as a keep-alive timeout
 * would, but at an event of the test rather than after a time the test
 * could overrun on a loaded machine), `n` closed in all. */
static void server_closed(long n) {
  ts_close_idle(srv);
  cr_assert(ts_wait(srv, TS_CLOSED_BY_SERVER, n, 5000),
            "the server did not close connection %ld", n);
}

/* Past the recheck interval (100 ms), the check finds the connection the
 * server closed, and the request goes out on a new one. */
TH_TEST(reuse, a_dead_connection_is_found_on_checkout) {
  xfer_pool_stats ps;

  start((struct ts_config){0},
        (xfer_pool_opts){.recheck_ms = 100, .attach_hold_ms = TH_NO_ATTACH});
  run(NULL, "/bytes/3");
  server_closed(1);
  th_clock_advance(MS(200));
  cr_assert_eq(xfer_get_reused(run(NULL, "/bytes/3")), 0);
  ps = stats();
  cr_assert_eq(ps.liveness_checks, 1);
  cr_assert_eq(ps.dead_on_checkout, 1);
  cr_assert_eq(ps.closed_total, 1, "the dead one was closed");
  cr_assert_eq(ps.opened_total, 2);
  cr_assert_eq(ps.reopened_total, 1, "counted apart from first opens");
  cr_assert_eq(ps.reused_total, 0);
  cr_assert_eq(ps.retries_total, 0);
}

/* Within the recheck interval a GET trusts the connection; the server
 * closed it, so the GET is retried on a new one (zero fail), and the pool
 * learns that this server closes connections idle 100 ms: from then on,
 * connections idle that long are checked first, and none is retried. */
TH_TEST(reuse, stale_gets_are_retried_and_teach_the_idle_close_time) {
  xfer_pool_stats ps, after_round_2 = {0};
  long closed = 0;

  start((struct ts_config){0},
        (xfer_pool_opts){.attach_hold_ms = TH_NO_ATTACH});
  for (int round = 0; round < 4; round++) {
    for (int i = 0; i < 3; i++)
      request(NULL, "/bytes/64", NULL);
    th_run(m, 5000);
    server_closed(closed += 3);
    th_clock_advance(MS(100)); /* under the 1 s recheck interval */
    if (round == 1)
      after_round_2 = stats();
  }
  for (int i = 0; i < nxs; i++) {
    cr_assert_eq(th_result(m, xs[i]), XFER_OK, "%d: %s", i,
                 xfer_get_error_detail(xs[i]));
    th_expect_timeline_ordered(xs[i]);
  }
  ps = stats();
  /* Round 2 met them unchecked: the first to find its connection dead was
   * retried and taught the pool; the others were retried too when they
   * had taken theirs before that lesson (all three at once), or found
   * theirs dead at a check when they came after it (the order depends on
   * how the requests' bytes go out). Rounds 3 and 4 checked them all and
   * retried none. */
  cr_assert_geq(after_round_2.retries_total, 1);
  if (!xfer__cf_test_hook) /* the plain stack: all three sent at once */
    cr_assert_eq(after_round_2.retries_total, 3);
  cr_assert_eq(after_round_2.retries_total + after_round_2.dead_on_checkout,
               3, "%llu retries, %llu dead at a check",
               (unsigned long long)after_round_2.retries_total,
               (unsigned long long)after_round_2.dead_on_checkout);
  cr_assert_eq(ps.retries_total, after_round_2.retries_total,
               "retries after the lesson: %llu",
               (unsigned long long)(ps.retries_total -
                                    after_round_2.retries_total));
  cr_assert_eq(ps.dead_on_checkout, after_round_2.dead_on_checkout + 6);
  cr_assert_eq(ps.liveness_checks, ps.dead_on_checkout);
  cr_assert_geq(ps.reopened_total, ps.retries_total,
                "reopens counted apart from first opens");
}

/* A retry opens a new connection; once it has it, the transfer may reuse
 * again: a redirect it then follows takes the connection the retry opened
 * (kept attached) instead of opening a third. */
TH_TEST(reuse, after_a_retry_a_redirect_reuses) {
  xfer_pool_stats ps;
  xfer *x;

  start((struct ts_config){0}, (xfer_pool_opts){0});
  run(NULL, "/bytes/1");
  server_closed(1);
  th_clock_advance(MS(100)); /* under the recheck interval: not checked */
  x = xfer_new();
  xs[nxs++] = x;
  cr_assert_eq(xfer_set_url(x, th_url(ts_port(srv),
                                      "/redirect/302?to=/bytes/5")),
               XFER_OK);
  cr_assert_eq(xfer_set_follow_redirects(x, 1), XFER_OK);
  cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK, "%s", xfer_get_error_detail(x));
  ps = stats();
  cr_assert_eq(ps.retries_total, 1, "the stale one was retried");
  cr_assert_eq(ps.opened_total, 2, "the first and the retry's, no third");
  cr_assert_eq(xfer_get_reused(x), 1, "the redirect reused the retry's");
}

/* A POST cannot be sent twice, so it goes out on a reused connection
 * only after a liveness check, however young the connection: the one the
 * server closed is found, and the POST succeeds on a new one (it used to
 * fail with XFER_E_PEER_CLOSED). Alive, the connection is reused. */
TH_TEST(reuse, a_post_is_sent_on_a_reused_connection_only_after_a_check) {
  xfer_pool_stats ps;
  xfer *x;

  start((struct ts_config){0},
        (xfer_pool_opts){.attach_hold_ms = TH_NO_ATTACH});
  run("POST", "/echo");
  server_closed(1);
  th_clock_advance(MS(100)); /* a GET would trust it */
  x = run("POST", "/echo");
  cr_assert_eq(xfer_get_reused(x), 0);
  ps = stats();
  cr_assert_eq(ps.liveness_checks, 1);
  cr_assert_eq(ps.dead_on_checkout, 1);
  cr_assert_eq(ps.retries_total, 0);
  /* At once (no idle time): alive, checked, reused. */
  x = run("POST", "/echo");
  cr_assert_eq(xfer_get_reused(x), 1);
  cr_assert_eq(stats().liveness_checks, 2);
}

/* "Keep-Alive: timeout=2": the pool rechecks this destination's idle
 * connections past 1.5 s (three quarters) instead of the default 1 s, and
 * sends a POST only on one idle less than that. */
TH_TEST(reuse, the_idle_close_time_is_learned_from_keep_alive) {
  xfer_pool_stats ps;
  xfer *x;

  start((struct ts_config){.idle_close_ms = 2000, .announce_idle_close = true},
        (xfer_pool_opts){.attach_hold_ms = TH_NO_ATTACH});
  run(NULL, "/bytes/1");
  th_clock_advance(MS(1200)); /* past 1 s, under 1.5 s */
  cr_assert_eq(xfer_get_reused(run(NULL, "/bytes/1")), 1);
  cr_assert_eq(stats().liveness_checks, 0, "not checked: under 1.5 s");
  th_clock_advance(MS(1600));
  cr_assert_eq(xfer_get_reused(run(NULL, "/bytes/1")), 1);
  cr_assert_eq(stats().liveness_checks, 1, "checked past 1.5 s, alive");
  th_clock_advance(MS(1600));
  x = run("POST", "/echo");
  cr_assert_eq(xfer_get_reused(x), 0, "too close to the server's close");
  ps = stats();
  cr_assert_eq(ps.liveness_checks, 1, "not even checked");
  cr_assert_eq(ps.closed_idle_timeout, 1, "that one was closed");
  cr_assert_eq(ps.opened_total, 2);
}

/* Attached connections (kept by the multi for its next transfer) obey the
 * same rules: a POST checks the one it would take, finds it closed by the
 * server, and goes out on a new connection. */
TH_TEST(reuse, attached_connections_obey_the_same_rules) {
  xfer_pool_stats ps;
  xfer *x;

  start((struct ts_config){0},
        (xfer_pool_opts){.attach_hold_ms = 600000});
  run(NULL, "/bytes/1");
  cr_assert_eq(stats().attached, 1);
  server_closed(1);
  th_clock_advance(MS(50));
  x = run("POST", "/echo");
  cr_assert_eq(xfer_get_reused(x), 0);
  ps = stats();
  cr_assert_eq(ps.liveness_checks, 1);
  cr_assert_eq(ps.dead_on_checkout, 1, "the attached one the server closed");
  cr_assert_eq(ps.closed_peer, 0, "found by the check: counted once, so");
  cr_assert_eq(ps.opened_total, 2);
  cr_assert_eq(ps.reopened_total, 1);
  cr_assert_eq(ps.retries_total, 0);
  /* Learned (50 ms): a GET on the attached one, idle 50 ms, is checked. */
  server_closed(2);
  th_clock_advance(MS(50));
  x = run(NULL, "/bytes/1");
  cr_assert_eq(xfer_get_reused(x), 0);
  ps = stats();
  cr_assert_eq(ps.liveness_checks, 2);
  cr_assert_eq(ps.retries_total, 0, "found by the check, not retried");
}

/* A request that says "Connection: close" is answered on a connection
 * the server then closes, even when the response does not say so (RFC
 * 9112, 9.6): it is not kept, and the next request opens its own instead
 * of meeting a dead one. */
TH_TEST(reuse, a_request_that_says_connection_close_is_not_kept) {
  xfer_pool_stats ps;
  xfer *x;

  start((struct ts_config){0}, (xfer_pool_opts){0});
  x = request(NULL, "/close-silently/bytes/2", "keep-alive, close");
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK, "%s", xfer_get_error_detail(x));
  ps = stats();
  cr_assert_eq(ps.open, 0, "closed, neither attached nor pooled");
  cr_assert_eq(ps.closed_peer, 1);
  x = run(NULL, "/bytes/2");
  cr_assert_eq(xfer_get_reused(x), 0);
  cr_assert_eq(stats().retries_total, 0, "no dead connection met");
}

/* Bytes that are no response on a reused connection (what a server that
 * sent more than it announced leaves behind, once the last response's end
 * was read) are the connection's fault, not the request's: a GET goes
 * again on a new connection and succeeds (it failed with
 * XFER_E_BAD_STATUS_LINE), and the connection is closed. */
TH_TEST(reuse, stray_bytes_on_a_reused_connection_are_retried) {
  xfer_pool_stats ps;
  xfer *x;

  start((struct ts_config){0}, (xfer_pool_opts){0});
  run(NULL, "/bytes/2");
  x = run(NULL, "/stray-first/bytes/3");
  cr_assert_eq(xfer_get_reused(x), 0, "answered on a new connection");
  cr_assert_eq(xfer_get_status(x), 200);
  th_expect_timeline_ordered(x);
  ps = stats();
  cr_assert_eq(ps.retries_total, 1);
  cr_assert_eq(ps.opened_total, 2);
  cr_assert_eq(ps.closed_error, 1, "the one with the stray bytes");
}

/* A POST cannot be sent twice: it fails, and says why. */
TH_TEST(reuse, stray_bytes_fail_a_post_with_a_clear_error) {
  xfer *x;

  start((struct ts_config){0}, (xfer_pool_opts){0});
  run("POST", "/echo");
  x = request("POST", "/stray-first/echo", NULL); /* checked: alive */
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_E_BAD_STATUS_LINE, "%s",
               xfer_get_error_detail(x));
  cr_assert(strstr(xfer_get_error_detail(x),
                   "a reused connection held bytes that are no response"),
            "%s", xfer_get_error_detail(x));
  cr_assert(strstr(xfer_get_error_detail(x), "a POST request is not retried"),
            "%s", xfer_get_error_detail(x));
  cr_assert_eq(stats().open, 0, "closed, not kept");
}
