/* lib/resolve.c: c-ares against a local DNS responder on 127.0.0.1 (never
 * the system resolver). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "dnsserver.h"
#include "testhelp.h"
#include "testserver.h"

static struct ds_server *dns;
static struct ts_server *web;
static xfer_multi *m;
static struct th_sockrec rec;
static xfer *xs[64];
static int nxs;

static void setup(void) {
  char servers[64];

  dns = ds_start(NULL);
  web = ts_start(NULL);
  cr_assert(dns && web);
  ds_add_a(dns, "web.test", "127.0.0.1", 60);
  ds_add_a(dns, "slow.test", "127.0.0.1", 60);
  ds_set_delay(dns, "slow.test", 200);
  ds_add_a(dns, "short.test", "127.0.0.1", 1);
  ds_add_silent(dns, "silent.test");
  m = xfer_multi_new(NULL);
  snprintf(servers, sizeof(servers), "127.0.0.1:%d", ds_port(dns));
  cr_assert_eq(xfer_multi_set_dns_servers(m, servers), XFER_M_OK);
  /* Long enough that a loaded machine never makes an answer late (a
   * slow one takes 200 ms); the timeout test sets its own. */
  cr_assert_eq(xfer_multi_set_dns_timeout(m, 5000, 1), XFER_M_OK);
  th_sockrec_init(&rec);
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
}

static void resolve_end(void) {
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  for (int i = 0; i < nxs; i++)
    xfer_free(xs[i]);
  ds_stop(dns);
  ts_stop(web);
}

TestSuite(resolve, .init = setup);

static xfer *prepare_name(const char *host, const char *path) {
  char url[256];
  xfer *x = xfer_new();

  snprintf(url, sizeof(url), "http://%s:%d%s", host, ts_port(web), path);
  cr_assert_lt(nxs, 64);
  cr_assert_eq(xfer_set_url(x, url), XFER_OK);
  return xs[nxs++] = x;
}

static xfer *get_name(const char *host, const char *path) {
  xfer *x = prepare_name(host, path);
  cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
  return x;
}

/* Not pooled afterwards, so the next request to the name must resolve. */
static xfer *get_name_once(const char *host, const char *path) {
  xfer *x = prepare_name(host, path);
  cr_assert_eq(xfer_add_header(x, "Connection", "close"), XFER_OK);
  cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
  return x;
}

TH_TEST(resolve, name_resolves_through_the_local_server) {
  xfer *x = get_name("web.test", "/bytes/10");
  xfer_timeline tl;

  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK, "%s", xfer_get_error_detail(x));
  cr_assert_eq(xfer_get_status(x), 200);
  cr_assert_geq(ds_queries(dns, "web.test"), 1);
  xfer_get_timeline(x, &tl);
  th_expect_timeline_ordered(x);
  cr_assert_geq(tl.namelookup_us, tl.queue_us);
}

TH_TEST(resolve, unknown_name_is_nxdomain) {
  xfer *x = get_name("nope.test", "/");

  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_E_RESOLVE);
  cr_assert(strstr(xfer_get_error_detail(x), "could not resolve 'nope.test'"),
            "%s", xfer_get_error_detail(x));
  cr_assert(strstr(xfer_get_error_detail(x), "not found"), "%s",
            xfer_get_error_detail(x));
  th_expect_timeline_ordered(x);
}

TH_TEST(resolve, silent_server_times_out) {
  xfer *x;

  cr_assert_eq(xfer_multi_set_dns_timeout(m, 1000, 1), XFER_M_OK);
  x = get_name("silent.test", "/");
  xfer *ok = get_name("web.test", "/bytes/1");

  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_E_RESOLVE_TIMEOUT, "%s",
               xfer_get_error_detail(x));
  cr_assert(strstr(xfer_get_error_detail(x), "silent.test"));
  cr_assert_eq(th_result(m, ok), XFER_OK, "the other lookup is undisturbed");
}

/* Twenty transfers ask for one name at once: one lookup (an A and an AAAA
 * query), through one channel socket that all twenty read. */
TH_TEST(resolve, one_lookup_and_one_socket_for_many_transfers) {
  enum { N = 20 };
  int channel_fd = -1;
  struct xfer__mev_socket_info info;

  for (int i = 0; i < N; i++)
    get_name("slow.test", "/bytes/10");
  cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
  cr_assert_not_null(m->loop.wake, "the multi can be woken for pooled "
                                "connections of other threads");
  for (int i = 0; i < rec.count; i++)
    if (rec.calls[i].what == XFER_POLL_IN && rec.calls[i].fd != m->loop.wake->fd)
      channel_fd = rec.calls[i].fd;
  cr_assert_neq(channel_fd, -1, "the channel's socket was reported");
  cr_assert_eq(rec.count, 2, "one socket, reported once (and the wake-up)");
  cr_assert(xfer__mev_socket_info(&m->loop.ev, channel_fd, &info));
  cr_assert_eq(info.readers, N, "every resolving transfer reads it");
  th_run(m, 5000);
  for (int i = 0; i < N; i++)
    cr_assert_eq(th_result(m, xs[i]), XFER_OK, "%s",
                 xfer_get_error_detail(xs[i]));
  cr_assert_eq(ds_queries(dns, "slow.test"), 2, "A and AAAA, once");
}

/* The cache keeps time with the transfers' clock: the test clock moves
 * it past the 1 s TTL, no waiting. */
TH_TEST(resolve, answers_are_cached_for_their_ttl) {
  long before;

  xfer_pool_stats ps;

  th_clock_install(MS(1000000), 0);
  get_name_once("web.test", "/bytes/1");
  th_run(m, 5000);
  before = ds_queries(dns, "web.test");
  get_name_once("web.test", "/bytes/1");
  th_run(m, 5000);
  cr_assert_eq(ds_queries(dns, "web.test"), before, "served from the cache");

  get_name_once("short.test", "/bytes/1"); /* TTL 1 s */
  th_run(m, 5000);
  before = ds_queries(dns, "short.test");
  th_clock_advance(MS(1200));
  get_name_once("short.test", "/bytes/1");
  th_run(m, 5000);
  cr_assert_gt(ds_queries(dns, "short.test"), before, "expired: asked again");
  for (int i = 0; i < nxs; i++) {
    cr_assert_eq(th_result(m, xs[i]), XFER_OK);
    cr_assert_eq(xfer_get_reused(xs[i]), 0, "each one resolved and connected");
  }
  xfer_pool_get_stats(m->loop.pool, &ps);
  cr_assert_eq(ps.idle, 0);
  th_clock_uninstall();
}

TH_TEST(resolve, servers_are_set_before_the_first_lookup) {
  get_name("web.test", "/bytes/1");
  th_run(m, 5000);
  cr_assert_eq(xfer_multi_set_dns_servers(m, "127.0.0.1:1"),
               XFER_M_BAD_ARGUMENT);
  cr_assert_eq(xfer_multi_set_dns_timeout(m, 100, 1), XFER_M_BAD_ARGUMENT);
}

/* A failed first lookup fixes the settings too: both setters refuse once
 * a lookup was tried, whatever became of it. */
TH_TEST(resolve, dns_settings_are_fixed_after_a_failed_first_lookup) {
  xfer_multi *fresh = xfer_multi_new(NULL);
  xfer *x = xfer_new();

  /* Servers c-ares cannot use: no lookup is answered. */
  cr_assert_eq(xfer_multi_set_dns_servers(fresh, "127.0.0.1:9"), XFER_M_OK);
  cr_assert_eq(xfer_multi_set_dns_timeout(fresh, 100, 1), XFER_M_OK);
  cr_assert_eq(xfer_set_url(x, "http://nowhere.test/"), XFER_OK);
  cr_assert_eq(xfer_multi_add(fresh, x), XFER_M_OK);
  th_run(fresh, 5000);
  cr_assert_neq(th_result(fresh, x), XFER_OK);
  cr_assert_eq(xfer_multi_set_dns_servers(fresh, "127.0.0.1:53"),
               XFER_M_BAD_ARGUMENT);
  cr_assert_eq(xfer_multi_set_dns_timeout(fresh, 200, 2), XFER_M_BAD_ARGUMENT);
  cr_assert_eq(xfer_multi_destroy(fresh), XFER_M_OK);
  xfer_free(x);
}

/* A list c-ares would refuse is refused when it is set. */
TH_TEST(resolve, a_malformed_server_list_is_refused_when_set) {
  xfer_multi *fresh = xfer_multi_new(NULL);
  static const char *const bad[] = {"",          "localhost",   "1.2.3",
                                    "1.2.3.4:0", "1.2.3.4:abc", "1.2.3.4,",
                                    "[::1",      "[::1]:99999", "::1:53:x"};
  static const char *const good[] = {"127.0.0.1",   "127.0.0.1:5353",
                                     "::1",         "[::1]:53",
                                     "[::1]",       "1.2.3.4, 5.6.7.8:54"};

  for (size_t i = 0; i < XFER__ARRAY_SIZE(bad); i++)
    cr_assert_eq(xfer_multi_set_dns_servers(fresh, bad[i]),
                 XFER_M_BAD_ARGUMENT, "'%s'", bad[i]);
  for (size_t i = 0; i < XFER__ARRAY_SIZE(good); i++)
    cr_assert_eq(xfer_multi_set_dns_servers(fresh, good[i]), XFER_M_OK,
                 "'%s'", good[i]);
  cr_assert_eq(xfer_multi_set_dns_servers(fresh, NULL), XFER_M_OK,
               "NULL: the system's");
  cr_assert_eq(xfer_multi_destroy(fresh), XFER_M_OK);
}

/* A numeric host of the family the transfer excludes fails with a clear
 * error (it used to connect anyway). */
TH_TEST(resolve, a_numeric_host_of_the_wrong_family_is_refused) {
  xfer *v6 = prepare_name("127.0.0.1", "/bytes/1");
  xfer *v4 = prepare_name("[::1]", "/bytes/1");

  cr_assert_eq(xfer_set_ip_version(v6, XFER_IPRESOLVE_V6), XFER_OK);
  cr_assert_eq(xfer_set_ip_version(v4, XFER_IPRESOLVE_V4), XFER_OK);
  cr_assert_eq(xfer_multi_add(m, v6), XFER_M_OK);
  cr_assert_eq(xfer_multi_add(m, v4), XFER_M_OK);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, v6), XFER_E_RESOLVE);
  cr_assert(strstr(xfer_get_error_detail(v6),
                   "127.0.0.1 is an IPv4 address, and the transfer is "
                   "limited to IPv6"),
            "%s", xfer_get_error_detail(v6));
  cr_assert_eq(th_result(m, v4), XFER_E_RESOLVE);
  cr_assert(strstr(xfer_get_error_detail(v4), "limited to IPv4"), "%s",
            xfer_get_error_detail(v4));
  cr_assert_eq(ds_queries(dns, "127.0.0.1"), 0, "no lookup was made");
}
