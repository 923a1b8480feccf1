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
static struct th_epoll loop = {.ep = -1}; /* for the tests that use one */

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
  if (loop.ep >= 0) /* after the destroy, whose REMOVEs it hears */
    th_epoll_close(&loop);
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

/* The channel's socket as the application was told of it: the one IN
 * socket that is not the multi's wake-up (-1: none). */
static int channel_fd_reported(void) {
  int fd = -1;

  for (int i = 0; i < rec.count; i++)
    if (rec.calls[i].what == XFER_POLL_IN &&
        (!m->loop.wake || rec.calls[i].fd != m->loop.wake->fd))
      fd = rec.calls[i].fd;
  return fd;
}

/* A lookup that times out (a retry, then the end) wakes the multi a few
 * times, not in a loop of 0 ms timers: c-ares' time left is cut to whole
 * milliseconds, so a deadline taken as it is came before c-ares' timeout
 * and the multi spun through the last millisecond of each try. */
TH_TEST(resolve, a_timeout_does_not_spin) {
  xfer *x;
  xfer_multi_stats st;

  cr_assert_eq(xfer_multi_set_dns_timeout(m, 300, 2), XFER_M_OK);
  th_epoll_init(&loop, m, &rec);
  x = get_name("silent.test", "/");
  th_epoll_run(&loop, m, 10000);
  cr_assert_eq(th_result(m, x), XFER_E_RESOLVE_TIMEOUT, "%s",
               xfer_get_error_detail(x));
  cr_assert_eq(xfer_multi_get_stats(m, &st), XFER_M_OK);
  /* The start, each try's timeout (early by the loop's millisecond
   * rounding at most once each), the end. */
  cr_assert_leq(st.wakeups, 12, "%llu wake-ups",
                (unsigned long long)st.wakeups);
}

/* Twenty transfers ask for one name at once: one lookup (an A and an AAAA
 * query), through one channel socket, which the resolver alone reads: a
 * DNS packet wakes it, not the twenty. */
TH_TEST(resolve, one_lookup_and_one_socket_for_many_transfers) {
  enum { N = 20 };
  int channel_fd;
  struct xfer__mev_socket_info info;

  for (int i = 0; i < N; i++)
    get_name("slow.test", "/bytes/10");
  cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
  cr_assert_not_null(m->loop.wake, "the multi can be woken for pooled "
                                "connections of other threads");
  channel_fd = channel_fd_reported();
  cr_assert_neq(channel_fd, -1, "the channel's socket was reported");
  cr_assert_eq(rec.count, 2, "one socket, reported once (and the wake-up)");
  cr_assert(xfer__mev_socket_info(&m->loop.ev, channel_fd, &info));
  cr_assert_eq(info.readers, 1, "the resolver reads it, for all twenty");
  th_run(m, 5000);
  for (int i = 0; i < N; i++)
    cr_assert_eq(th_result(m, xs[i]), XFER_OK, "%s",
                 xfer_get_error_detail(xs[i]));
  cr_assert_eq(ds_queries(dns, "slow.test"), 2, "A and AAAA, once");
}

/* Many names at once, answered one after another: each answer runs the
 * resolver and the transfer it answers, so the runs grow with the number
 * of transfers. When every resolving transfer watched the channel itself,
 * each answer ran all of those still waiting (about N * N / 2 runs here). */
TH_TEST(resolve, each_answer_runs_only_its_own_transfers) {
  enum { N = 48 };
  char name[32];
  xfer_multi_stats st;

  th_epoll_init(&loop, m, &rec);
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof(name), "n%d.test", i);
    cr_assert_eq(ds_add_a(dns, name, "127.0.0.1", 60), 0);
    cr_assert_eq(ds_set_delay(dns, name, 5 + 3 * i), 0); /* spread out */
    get_name(name, "/bytes/1");
  }
  th_epoll_run(&loop, m, 10000);
  for (int i = 0; i < N; i++)
    cr_assert_eq(th_result(m, xs[i]), XFER_OK, "%s",
                 xfer_get_error_detail(xs[i]));
  cr_assert_eq(xfer_multi_get_stats(m, &st), XFER_M_OK);
  /* Per transfer: its start, its answer, its connect and its response,
   * with room for a split response; per DNS packet one resolver run. */
  cr_assert_leq(st.xfers_run, 6 * N + 2 * N + 16, "%llu runs for %d names",
                (unsigned long long)st.xfers_run, N);
}

/* A transfer removed while its lookup is on its way: the resolver still
 * watches the channel until c-ares ends the lookup (it used to leave the
 * socket open and unwatched until the next lookup), and the answer is
 * cached for the next transfer to the name. */
TH_TEST(resolve, a_lookup_outlives_its_removed_transfer) {
  xfer *x = get_name("slow.test", "/bytes/1");
  xfer *y;
  int channel_fd, from;
  bool closed = false;
  long queries;
  struct timespec start, t;

  cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
  channel_fd = channel_fd_reported();
  cr_assert_neq(channel_fd, -1);
  from = rec.count;
  cr_assert_eq(xfer_multi_remove(m, x), XFER_M_OK);
  cr_assert_eq(xfer__mev_reported(&m->loop.ev, channel_fd), XFER_POLL_IN,
               "the channel is still watched");
  cr_assert_eq(rec.count, from, "nothing was removed");
  /* The answer comes 200 ms later; c-ares then closes the socket. */
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (int i = 0; i < 10000 && !closed; i++) {
    cr_assert_eq(xfer_multi_poll(m, 100, NULL), XFER_M_OK);
    cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
    for (int k = from; k < rec.count; k++)
      if (rec.calls[k].fd == channel_fd &&
          rec.calls[k].what == XFER_POLL_REMOVE)
        closed = true;
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (t.tv_sec - start.tv_sec > 5)
      break;
  }
  cr_assert(closed, "the lookup ended and its socket was closed");
  queries = ds_queries(dns, "slow.test");
  y = get_name("slow.test", "/bytes/1");
  th_run(m, 5000);
  cr_assert_eq(th_result(m, y), XFER_OK, "%s", xfer_get_error_detail(y));
  cr_assert_eq(ds_queries(dns, "slow.test"), queries, "from the cache");
}

/* The socket callback refuses the channel's socket: no answer could be
 * heard, so the lookup ends at once with that error, and the multi
 * resolves again once the application takes the socket. */
static bool refuse_new;

static int refusing_cb(xfer_multi *mm, int fd, int what, void *userp,
                       void *socketp) {
  if (refuse_new && what != XFER_POLL_REMOVE &&
      (!m->loop.wake || fd != m->loop.wake->fd))
    return -1;
  return th_sockrec_cb(mm, fd, what, userp, socketp);
}

TH_TEST(resolve, a_refused_channel_socket_fails_the_lookup) {
  xfer *x, *y;

  xfer_multi_set_socket_cb(m, refusing_cb, &rec);
  refuse_new = true;
  x = get_name("slow.test", "/bytes/1");
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_E_SOCKET_CALLBACK, "%s",
               xfer_get_error_detail(x));
  cr_assert(strstr(xfer_get_error_detail(x),
                   "could not resolve 'slow.test': the socket callback "
                   "refused the resolver's socket"),
            "%s", xfer_get_error_detail(x));
  refuse_new = false;
  y = get_name("web.test", "/bytes/1");
  th_run(m, 5000);
  cr_assert_eq(th_result(m, y), XFER_OK, "%s", xfer_get_error_detail(y));
}

/* The same when the socket callback is set late, and refuses the channel
 * socket as everything is reported anew: the lookup ends at once (it was
 * heard only at c-ares' timeout, by polling, and asked for again on
 * every call). */
TH_TEST(resolve, a_channel_socket_refused_when_reported_anew) {
  xfer *x;

  xfer_multi_set_socket_cb(m, NULL, NULL);
  x = get_name("slow.test", "/bytes/1"); /* 200 ms to its answer */
  cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
  refuse_new = true;
  xfer_multi_set_socket_cb(m, refusing_cb, &rec);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_E_SOCKET_CALLBACK, "%s",
               xfer_get_error_detail(x));
  cr_assert(strstr(xfer_get_error_detail(x), "refused the resolver's socket"),
            "%s", xfer_get_error_detail(x));
  refuse_new = false;
}

/* Refused at the resync of a remove, which runs nothing: the resolver's
 * run is due at once (the timer callback hears 0), as a transfer's is.
 * It was left to wait for an unrelated event or c-ares' next timeout. */
TH_TEST(resolve, a_channel_socket_refused_at_a_remove_is_due_at_once) {
  static struct th_timerrec tr; /* the teardown's destroy tells it -1 */
  xfer *x, *other;
  int running;

  xfer_multi_set_socket_cb(m, NULL, NULL);
  x = get_name("slow.test", "/bytes/1"); /* 200 ms to its answer */
  other = get_name("slow.test", "/bytes/1");
  cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
  th_timerrec_init(&tr);
  xfer_multi_set_timer_cb(m, th_timerrec_cb, &tr);
  refuse_new = true;
  xfer_multi_set_socket_cb(m, refusing_cb, &rec);
  cr_assert_eq(xfer_multi_remove(m, other), XFER_M_OK);
  cr_assert_gt(tr.count, 0);
  cr_assert_eq(tr.timeouts[tr.count - 1], 0, "due at once: %ld ms",
               tr.timeouts[tr.count - 1]);
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  cr_assert_eq(th_result(m, x), XFER_E_SOCKET_CALLBACK, "%s",
               xfer_get_error_detail(x));
  refuse_new = false;
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

/* The connect timeout covers the lookup too: a name that is not answered
 * within it fails with XFER_E_RESOLVE_TIMEOUT at the transfer's own
 * deadline, long before c-ares' timeout (5 s here), and says how long. */
TH_TEST(resolve, the_connect_timeout_ends_a_slow_lookup) {
  xfer *x = prepare_name("silent.test", "/");

  cr_assert_eq(xfer_set_connect_timeout_ms(x, 300), XFER_OK);
  cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
  th_run(m, 4000); /* under c-ares' 5 s: only the transfer's deadline */
  cr_assert_eq(th_result(m, x), XFER_E_RESOLVE_TIMEOUT, "%s",
               xfer_get_error_detail(x));
  cr_assert(strstr(xfer_get_error_detail(x),
                   "resolving 'silent.test' took longer than 300 ms"),
            "%s", xfer_get_error_detail(x));
}

/* An IP version asks for that family alone: a name with both connects
 * over the one asked for, and a name with none of it does not resolve. */
TH_TEST(resolve, an_ip_version_asks_for_its_family_only) {
  xfer *v4, *v6, *none;

  ds_add_a(dns, "both.test", "127.0.0.1", 60);
  ds_add_aaaa(dns, "both.test", "::1", 60); /* nothing listens there */
  ds_add_aaaa(dns, "sixonly.test", "::1", 60);
  v4 = prepare_name("both.test", "/bytes/2");
  v6 = prepare_name("both.test", "/bytes/2");
  none = prepare_name("sixonly.test", "/bytes/2");
  cr_assert_eq(xfer_set_ip_version(v4, XFER_IPRESOLVE_V4), XFER_OK);
  cr_assert_eq(xfer_set_ip_version(v6, XFER_IPRESOLVE_V6), XFER_OK);
  cr_assert_eq(xfer_set_ip_version(none, XFER_IPRESOLVE_V4), XFER_OK);
  cr_assert_eq(xfer_multi_add(m, v4), XFER_M_OK);
  cr_assert_eq(xfer_multi_add(m, v6), XFER_M_OK);
  cr_assert_eq(xfer_multi_add(m, none), XFER_M_OK);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, v4), XFER_OK, "%s", xfer_get_error_detail(v4));
  cr_assert_eq(th_result(m, v6), XFER_E_CONNECT, "%s",
               xfer_get_error_detail(v6));
  cr_assert(strstr(xfer_get_error_detail(v6), "::1 port"), "IPv6 alone: %s",
            xfer_get_error_detail(v6));
  cr_assert_eq(th_result(m, none), XFER_E_RESOLVE, "%s",
               xfer_get_error_detail(none));
  cr_assert(strstr(xfer_get_error_detail(none), "sixonly.test"), "%s",
            xfer_get_error_detail(none));
}
