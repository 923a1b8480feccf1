/* lib/pool.c: what may share a connection and what never does, liveness
 * on checkout, limits, sharing between multis, life cycle. */
#define _GNU_SOURCE /* CPU_SET, pthread_setaffinity_np, sched_getcpu */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dnsserver.h"
#include "pool_impl.h"
#include "pool_probe.h"
#include "testhelp.h"
#include "testserver.h"

static struct ts_server *web;
static xfer *xs[32];
static int nxs;

static void setup(void) {
  web = ts_start(NULL);
  cr_assert_not_null(web);
}

static void pool_end(void) {
  for (int i = 0; i < nxs; i++)
    cr_assert_eq(xfer_free(xs[i]), XFER_OK);
  ts_stop(web);
  TH_ASSERT_NO_POOL_LOCK();
}

TestSuite(pool, .init = setup);

static xfer *fetch(xfer_multi *m, const char *url, const char *bind,
                   int ipv) {
  xfer *x = xfer_new();

  cr_assert_eq(xfer_set_url(x, url), XFER_OK);
  if (bind)
    cr_assert_eq(xfer_set_local_address(x, bind), XFER_OK);
  xfer_set_ip_version(x, ipv);
  cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK, "%s: %s", url,
               xfer_get_error_detail(x));
  xs[nxs++] = x;
  return x;
}

/* Rule 5: host as given, port, IP version and local bind are part of the
 * key; connections never cross them. */
TH_TEST(pool, differing_keys_never_share) {
  struct ds_server *dns = ds_start(NULL);
  xfer_multi *m = xfer_multi_new(NULL);
  char ip_url[64], name_url[64], servers[32];
  struct ts_stats st;

  snprintf(servers, sizeof(servers), "127.0.0.1:%d", ds_port(dns));
  xfer_multi_set_dns_servers(m, servers);
  snprintf(ip_url, sizeof(ip_url), "http://127.0.0.1:%d/bytes/1",
           ts_port(web));
  snprintf(name_url, sizeof(name_url), "http://localhost:%d/bytes/1",
           ts_port(web));
  fetch(m, ip_url, NULL, 0);
  cr_assert_eq(xfer_get_reused(fetch(m, ip_url, NULL, 0)), 1, "same key");
  cr_assert_eq(xfer_get_reused(fetch(m, name_url, NULL, 0)), 0,
               "localhost is not 127.0.0.1");
  cr_assert_eq(xfer_get_reused(fetch(m, ip_url, "127.0.0.2", 0)), 0,
               "another local bind");
  cr_assert_eq(xfer_get_reused(fetch(m, ip_url, "127.0.0.1", 0)), 0,
               "a bind is not no bind");
  cr_assert_eq(xfer_get_reused(fetch(m, ip_url, NULL, 4)), 0,
               "IPv4-only is not any");
  cr_assert_eq(xfer_get_reused(fetch(m, ip_url, "127.0.0.2", 0)), 1,
               "same bind again");
  ts_get_stats(web, &st);
  cr_assert_eq(st.accepted, 5);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  ds_stop(dns);
}

TH_TEST(pool, idle_connections_per_destination_are_limited) {
  xfer_pool *pool = xfer_pool_new(&(xfer_pool_opts){.max_idle_per_destination
                                                    = 2});
  xfer_multi *m = xfer_multi_new(pool);
  xfer_pool_stats ps;

  for (int i = 0; i < 4; i++)
    xs[nxs++] = th_get(m, th_url(ts_port(web), "/delay/50/bytes/1"), NULL);
  th_run(m, 5000);
  xfer_pool_get_stats(pool, &ps);
  cr_assert_eq(ps.opened_total, 4);
  cr_assert_eq(ps.idle, 2);
  cr_assert_eq(ps.closed_total, 2);
  cr_assert_eq(xfer_pool_destroy(pool), XFER_E_IN_USE, "a multi uses it");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(pool), XFER_OK);
}

/* The foundation of the shared pool: a connection one multi opened is
 * reused by another. */
TH_TEST(pool, multis_share_one_pool) {
  xfer_pool *pool =
      xfer_pool_new(&(xfer_pool_opts){.attach_hold_ms = TH_NO_ATTACH});
  xfer_multi *a = xfer_multi_new(pool), *b = xfer_multi_new(pool);
  const char *url = th_url(ts_port(web), "/bytes/2");
  xfer *first = fetch(a, url, NULL, 0);
  xfer *second = fetch(b, url, NULL, 0);

  cr_assert_eq(xfer_get_reused(second), 1);
  cr_assert_eq(xfer_get_conn_id(second), xfer_get_conn_id(first));
  cr_assert_eq(xfer_multi_destroy(a), XFER_M_OK);
  cr_assert_eq(xfer_multi_destroy(b), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(pool), XFER_OK);
}

TH_TEST(pool, bad_handles) {
  xfer_pool_stats ps;
  xfer *x = xfer_new();

  cr_assert_eq(xfer_pool_destroy(NULL), XFER_OK);
  cr_assert_eq(xfer_pool_destroy((xfer_pool *)x), XFER_E_BAD_HANDLE);
  cr_assert_eq(xfer_pool_get_stats(NULL, &ps), XFER_E_BAD_HANDLE);
  cr_assert_null(xfer_multi_new((xfer_pool *)x), "not a pool");
  xfer_free(x);
}

/* Expiry, driven by the test clock: the pool sweeps with the caller's
 * `now` and never reads the clock itself. */
TH_TEST(pool, idle_connections_expire_in_every_destination) {
  struct ts_server *other = ts_start(NULL);
  xfer_pool *p = xfer_pool_new(
      &(xfer_pool_opts){.idle_timeout_ms = 10000, .attach_hold_ms = TH_NO_ATTACH});
  xfer_multi *m = xfer_multi_new(p);
  const char *a = th_url(ts_port(web), "/bytes/1");
  const char *b = th_url(ts_port(other), "/bytes/1");
  xfer_pool_stats ps;

  th_clock_install(MS(1000000), 0);
  fetch(m, a, NULL, 0);
  fetch(m, b, NULL, 0);
  th_clock_advance(MS(5000));
  cr_assert_eq(xfer_get_reused(fetch(m, a, NULL, 0)), 1, "5 s idle: kept");
  th_clock_advance(MS(11000));
  /* Using a sweeps b's connection too, which nobody asked for. */
  cr_assert_eq(xfer_get_reused(fetch(m, a, NULL, 0)), 0, "11 s idle: gone");
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.closed_idle_timeout, 2);
  cr_assert_eq(ps.idle, 1, "only the new connection to a");
  cr_assert_eq(ps.dead_on_checkout, 0, "expired, not found dead");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
  ts_stop(other);
  th_clock_uninstall();
}

TH_TEST(pool, connections_are_not_reused_past_their_lifetime) {
  xfer_pool *p = xfer_pool_new(&(xfer_pool_opts){.max_lifetime_ms = 5000});
  xfer_multi *m = xfer_multi_new(p);
  const char *url = th_url(ts_port(web), "/bytes/1");
  xfer *first;
  xfer_pool_stats ps;

  th_clock_install(MS(1000000), 0);
  first = fetch(m, url, NULL, 0);
  th_clock_advance(MS(3000));
  cr_assert_eq(xfer_get_conn_id(fetch(m, url, NULL, 0)),
               xfer_get_conn_id(first), "3 s old: reused");
  th_clock_advance(MS(3000));
  cr_assert_eq(xfer_get_reused(fetch(m, url, NULL, 0)), 0, "6 s old: not");
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.closed_lifetime, 1);
  cr_assert_eq(ps.closed_idle_timeout, 0);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
  th_clock_uninstall();
}

static xfer_pool_stats seen_in_flight;
static size_t note_stats(const char *d, size_t len, void *userp) {
  xfer_pool_get_stats(userp, &seen_in_flight);
  return len;
}

TH_TEST(pool, statistics_follow_the_connections) {
  xfer_pool *p = xfer_pool_new(NULL);
  xfer_multi *m = xfer_multi_new(p);
  const char *url = th_url(ts_port(web), "/bytes/10");
  xfer_pool_stats ps;
  xfer *x;

  for (int i = 0; i < 2; i++) {
    x = xfer_new();
    xfer_set_url(x, url);
    xfer_set_write_cb(x, note_stats, p);
    xfer_multi_add(m, x);
    th_run(m, 5000);
    cr_assert_eq(th_result(m, x), XFER_OK);
    xs[nxs++] = x;
    cr_assert_eq(seen_in_flight.busy, 1, "in use while its body arrives");
    cr_assert_eq(seen_in_flight.idle, 0);
    cr_assert_eq(seen_in_flight.open, 1);
  }
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.open, 1);
  cr_assert_eq(ps.busy, 0);
  cr_assert_eq(ps.idle, 1);
  cr_assert_eq(ps.checkout_misses, 1);
  cr_assert_eq(ps.checkout_hits, 1);
  cr_assert_eq(ps.lock_contention, 0, "one thread: nobody waits");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
}

/* --- limits and waiting ------------------------------------------------- */

TH_TEST(pool, per_destination_limit_queues_in_order) {
  xfer_pool *p = xfer_pool_new(&(xfer_pool_opts){.max_per_destination = 2});
  xfer_multi *m = xfer_multi_new(p);
  xfer_pool_stats ps;
  struct ts_stats ss;
  uint64_t first = 0, second = 0;

  for (int i = 0; i < 6; i++)
    xs[nxs++] = th_get(m, th_url(ts_port(web), "/delay/60/bytes/10"), NULL);
  cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.waiting, 4, "two open, four queued");
  th_run(m, 5000);
  for (int i = 0; i < 6; i++) {
    uint64_t id = xfer_get_conn_id(xs[i]);
    cr_assert_eq(th_result(m, xs[i]), XFER_OK, "%s",
                 xfer_get_error_detail(xs[i]));
    if (!first || id == first)
      first = id;
    else if (!second || id == second)
      second = id;
    else
      cr_assert_fail("a third connection: the limit did not hold");
    cr_assert_eq(xfer_get_reused(xs[i]), i >= 2, "waiters were handed one");
  }
  xfer_pool_get_stats(p, &ps);
  ts_get_stats(web, &ss);
  cr_assert_eq(ps.opened_total, 2);
  cr_assert_eq(ss.accepted, 2);
  cr_assert_eq(ps.waited_total, 4);
  cr_assert_eq(ps.waiting, 0);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
}

/* A GET of url that gives up after ms, added to m. */
static xfer *get_with_timeout(xfer_multi *m, const char *url, long ms) {
  xfer *x = xfer_new();

  cr_assert_eq(xfer_set_url(x, url), XFER_OK);
  cr_assert_eq(xfer_set_timeout_ms(x, ms), XFER_OK);
  cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
  return x;
}

/* A waiter that times out leaves nothing stuck: the connection it might
 * have been handed goes on to the next one (compare golang/go#32336). */
TH_TEST(pool, waiter_timeout_does_not_deadlock) {
  xfer_pool *p = xfer_pool_new(&(xfer_pool_opts){.max_per_destination = 1});
  xfer_multi *m = xfer_multi_new(p);
  xfer *slow, *impatient, *later;
  xfer_pool_stats ps;

  slow = th_get(m, th_url(ts_port(web), "/delay/300/bytes/1"), NULL);
  impatient = get_with_timeout(m, th_url(ts_port(web), "/bytes/1"), 100);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, slow), XFER_OK);
  cr_assert_eq(th_result(m, impatient), XFER_E_TIMEOUT);
  cr_assert(strstr(xfer_get_error_detail(impatient), "longer than 100 ms"));
  later = th_get(m, th_url(ts_port(web), "/bytes/1"), NULL);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, later), XFER_OK, "%s",
               xfer_get_error_detail(later));
  cr_assert_eq(xfer_get_conn_id(later), xfer_get_conn_id(slow));
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.waiting, 0);
  cr_assert_eq(ps.opened_total, 1);
  xs[nxs++] = slow;
  xs[nxs++] = impatient;
  xs[nxs++] = later;
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
}

TH_TEST(pool, removing_a_waiter_leaves_its_place_to_others) {
  xfer_pool *p = xfer_pool_new(&(xfer_pool_opts){.max_per_destination = 1});
  xfer_multi *m = xfer_multi_new(p);
  xfer *busy = th_get(m, th_url(ts_port(web), "/delay/100/bytes/1"), NULL);
  xfer *gone = th_get(m, th_url(ts_port(web), "/bytes/1"), NULL);
  xfer *next = th_get(m, th_url(ts_port(web), "/bytes/1"), NULL);
  xfer_pool_stats ps;

  cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.waiting, 2);
  cr_assert_eq(xfer_multi_remove(m, gone), XFER_M_OK);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.waiting, 1);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, busy), XFER_OK);
  cr_assert_eq(th_result(m, next), XFER_OK);
  cr_assert_eq(xfer_get_conn_id(next), xfer_get_conn_id(busy));
  xs[nxs++] = busy;
  xs[nxs++] = gone;
  xs[nxs++] = next;
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
}

/* --- the total limit ------------------------------------------------------ */

/* Two connections for the whole pool: a third destination waits in the
 * pool-wide FIFO until one is freed, and the connection freed for it is
 * closed (room is what it needs, not a connection to another host). */
TH_TEST(pool, total_limit_holds_across_destinations) {
  struct ts_server *b = ts_start(NULL), *c = ts_start(NULL);
  xfer_pool *p = xfer_pool_new(&(xfer_pool_opts){.max_total = 2});
  xfer_multi *m = xfer_multi_new(p);
  xfer_pool_stats ps;

  for (int i = 0; i < 3; i++) {
    struct ts_server *s = i == 0 ? web : i == 1 ? b : c;
    xs[nxs] = xfer_new();
    xfer_set_url(xs[nxs], th_url(ts_port(s), "/delay/60/bytes/10"));
    xfer_set_write_cb(xs[nxs], note_stats, p);
    xfer_multi_add(m, xs[nxs++]);
  }
  cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.waiting, 1, "two open, the third waits");
  cr_assert_eq(ps.open, 2);
  th_run(m, 5000);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(th_result(m, xs[i]), XFER_OK, "%d: %s", i,
                 xfer_get_error_detail(xs[i]));
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.opened_total, 3);
  cr_assert_eq(ps.waited_total, 1);
  cr_assert_eq(ps.waiting, 0);
  cr_assert_eq(ps.closed_limit, 1, "one closed to make room");
  cr_assert_leq(ps.busy + ps.idle, 2, "closing ones aside");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
  ts_stop(b);
  ts_stop(c);
}

/* At the total limit an idle connection of another destination is closed
 * at once to make room: nobody waits for it. */
TH_TEST(pool, total_limit_closes_an_idle_connection_for_room) {
  struct ts_server *b = ts_start(NULL);
  xfer_pool *p = xfer_pool_new(
      &(xfer_pool_opts){.max_total = 1, .attach_hold_ms = TH_NO_ATTACH});
  xfer_multi *m = xfer_multi_new(p);
  xfer_pool_stats ps;

  cr_assert_eq(xfer_get_reused(fetch(m, th_url(ts_port(web), "/bytes/1"),
                                     NULL, 0)),
               0);
  xs[nxs] = th_get(m, th_url(ts_port(b), "/bytes/5"), NULL);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, xs[nxs]), XFER_OK, "%s",
               xfer_get_error_detail(xs[nxs]));
  nxs++;
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.waited_total, 0, "room was made at once");
  cr_assert_eq(ps.closed_limit, 1);
  cr_assert_eq(ps.opened_total, 2);
  cr_assert_eq(ps.idle, 1, "only b's");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
  ts_stop(b);
}

/* A transfer that times out in the pool-wide FIFO gives its destination
 * slot back and leaves the limit intact for the next one. */
TH_TEST(pool, total_limit_waiter_timeout_does_not_deadlock) {
  struct ts_server *b = ts_start(NULL);
  xfer_pool *p = xfer_pool_new(&(xfer_pool_opts){.max_total = 1});
  xfer_multi *m = xfer_multi_new(p);
  xfer *slow, *impatient, *later;
  xfer_pool_stats ps;

  slow = th_get(m, th_url(ts_port(web), "/delay/300/bytes/1"), NULL);
  impatient = get_with_timeout(m, th_url(ts_port(b), "/bytes/1"), 100);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, slow), XFER_OK);
  cr_assert_eq(th_result(m, impatient), XFER_E_TIMEOUT);
  later = th_get(m, th_url(ts_port(b), "/bytes/1"), NULL);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, later), XFER_OK, "%s",
               xfer_get_error_detail(later));
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.waiting, 0);
  cr_assert_eq(ps.opened_total, 2);
  cr_assert_leq(ps.busy + ps.idle, 1, "the limit held (closing ones aside)");
  xs[nxs++] = slow;
  xs[nxs++] = impatient;
  xs[nxs++] = later;
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
  ts_stop(b);
}

/* The first waiter of a destination waits for room (holding the
 * destination's one slot), the second for that slot. The first times
 * out: its slot goes to the second, which gets the room the busy
 * connection leaves when it is done (it used to wait forever). */
TH_TEST(pool, a_timed_out_waiter_leaves_its_slot_to_the_next) {
  struct ts_server *b = ts_start(NULL);
  xfer_pool *p = xfer_pool_new(
      &(xfer_pool_opts){.max_total = 1, .max_per_destination = 1});
  xfer_multi *m = xfer_multi_new(p);
  xfer *slow, *impatient, *patient;
  xfer_pool_stats ps;

  slow = th_get(m, th_url(ts_port(web), "/delay/300/bytes/1"), NULL);
  impatient = get_with_timeout(m, th_url(ts_port(b), "/bytes/1"), 100);
  patient = th_get(m, th_url(ts_port(b), "/bytes/2"), NULL);
  xs[nxs++] = slow;
  xs[nxs++] = impatient;
  xs[nxs++] = patient;
  cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.waiting, 2, "one for room, one for b's slot");
  th_run(m, 5000);
  cr_assert_eq(th_result(m, slow), XFER_OK);
  cr_assert_eq(th_result(m, impatient), XFER_E_TIMEOUT);
  cr_assert_eq(th_result(m, patient), XFER_OK, "%s",
               xfer_get_error_detail(patient));
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.waiting, 0);
  cr_assert_eq(ps.opened_total, 2);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
  ts_stop(b);
}

/* Every close is counted under one reason. */
TH_TEST(pool, closes_are_counted_by_reason) {
  xfer_pool *p = xfer_pool_new(NULL);
  xfer_multi *m = xfer_multi_new(p);
  xfer_pool_stats ps;

  xs[nxs++] = th_get(m, th_url(ts_port(web), "/close-delimited/10"), NULL);
  xs[nxs++] = th_get(m, th_url(ts_port(web), "/malformed/header"), NULL);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, xs[0]), XFER_OK);
  cr_assert_eq(th_result(m, xs[1]), XFER_E_BAD_HEADER);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.closed_peer, 1, "the server closed the first");
  cr_assert_eq(ps.closed_error, 1, "a bad response closed the second");
  cr_assert_eq(ps.closed_total, 2);
  cr_assert_eq(ps.open, 0);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
}

/* Destinations nobody uses any more leave the table at the next sweep
 * (freed with call_rcu), so the pool does not grow with every host it
 * ever met; using one again simply creates it anew. */
TH_TEST(pool, unused_destinations_are_forgotten) {
  struct ts_server *other = ts_start(NULL), *third = ts_start(NULL);
  xfer_pool *p = xfer_pool_new(&(xfer_pool_opts){
      .idle_timeout_ms = 10000, .attach_hold_ms = TH_NO_ATTACH});
  xfer_multi *m = xfer_multi_new(p);
  xfer_pool_stats ps;

  th_clock_install(MS(1000000), 0);
  fetch(m, th_url(ts_port(web), "/bytes/1"), NULL, 0);
  fetch(m, th_url(ts_port(other), "/bytes/1"), NULL, 0);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.destinations, 2);
  th_clock_advance(MS(11000));
  fetch(m, th_url(ts_port(third), "/bytes/1"), NULL, 0); /* sweeps */
  /* The two evicted ones finish their graceful shutdown. */
  for (int i = 0; i < 100; i++) {
    th_run_for(m, 20);
    xfer_pool_get_stats(p, &ps);
    if (ps.open == 1)
      break;
  }
  cr_assert_eq(ps.closed_idle_timeout, 2);
  cr_assert_eq(ps.open, 1);
  cr_assert_eq(ps.destinations, 3, "still there until the next sweep");
  th_clock_advance(MS(3000)); /* a quarter of the idle timeout */
  fetch(m, th_url(ts_port(third), "/bytes/1"), NULL, 0);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.destinations, 1, "only the one in use");
  cr_assert_eq(xfer_get_reused(fetch(m, th_url(ts_port(web), "/bytes/1"),
                                     NULL, 0)),
               0);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.destinations, 2, "created anew");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
  ts_stop(other);
  ts_stop(third);
  th_clock_uninstall();
}

/* At the total limit, transfers to a destination whose connections are
 * all busy wait for those connections: none is closed and reopened. */
TH_TEST(pool, total_limit_with_one_destination_reuses) {
  xfer_pool *p = xfer_pool_new(&(xfer_pool_opts){.max_total = 2});
  xfer_multi *m = xfer_multi_new(p);
  xfer_pool_stats ps;

  for (int i = 0; i < 6; i++)
    xs[nxs++] = th_get(m, th_url(ts_port(web), "/delay/30/bytes/4"), NULL);
  th_run(m, 5000);
  for (int i = 0; i < 6; i++)
    cr_assert_eq(th_result(m, xs[i]), XFER_OK, "%d: %s", i,
                 xfer_get_error_detail(xs[i]));
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.opened_total, 2);
  cr_assert_eq(ps.closed_total, 0);
  cr_assert_eq(ps.waited_total, 4);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
}

/* With no idle limit set, a destination keeps every connection it needed
 * at once, however many: a fixed bound below the concurrency closed and
 * reopened connections under a steady load (rule 4: sharing never costs
 * connections). */
TH_TEST(pool, idle_connections_kept_up_to_the_peak_by_default) {
  xfer_pool *pool = xfer_pool_new(NULL);
  xfer_multi *m = xfer_multi_new(pool);
  const char *url = th_url(ts_port(web), "/delay/50/bytes/1");
  xfer *many[80];
  xfer_pool_stats ps;

  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < 80; i++)
      many[i] = th_get(m, url, NULL);
    th_run(m, 5000);
    for (int i = 0; i < 80; i++) {
      cr_assert_eq(xfer_get_result(many[i]), XFER_OK);
      cr_assert_eq(xfer_get_reused(many[i]), round, "round %d", round);
      cr_assert_eq(xfer_multi_remove(m, many[i]), XFER_M_OK);
      cr_assert_eq(xfer_free(many[i]), XFER_OK);
    }
    xfer_pool_get_stats(pool, &ps);
    cr_assert_eq(ps.opened_total, 80);
    cr_assert_eq(ps.idle, 80);
    cr_assert_eq(ps.closed_total, 0);
  }
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  xfer_pool_get_stats(pool, &ps);
  cr_assert_eq(ps.idle, 80, "released to the shared side, all kept");
  cr_assert_eq(xfer_pool_destroy(pool), XFER_OK);
}

/* The pool's locks (pool_impl.h): one held when tried is counted as
 * contention; its waiter spins, then sleeps until the holder wakes it, and
 * takes it then, with the holder's writes visible. The same while the
 * waiter holds another pool lock; the depths come back to zero. */
struct lock_waiter {
  xfer_pool *pool;
  xfer__lock *wanted;
  xfer__lock *held_meanwhile; /* NULL: none */
  int *guarded;
  int seen;
  int depth_after; /* its lock depth once it let go of both */
};

static void *wait_for_lock(void *arg) {
  struct lock_waiter *w = arg;

  if (w->held_meanwhile)
    xfer__pool_lock(w->pool, w->held_meanwhile);
  xfer__pool_lock(w->pool, w->wanted);
  w->seen = *w->guarded;
  (*w->guarded)++;
  xfer__pool_unlock(w->wanted);
  if (w->held_meanwhile)
    xfer__pool_unlock(w->held_meanwhile);
  w->depth_after = xfer__pool_lock_depth;
  return NULL;
}

TH_TEST(pool, a_held_lock_is_counted_slept_on_and_then_taken) {
  xfer_pool *pool = xfer_pool_new(NULL);
  int guarded = 0;
  xfer_pool_stats ps;

  for (int nested = 0; nested < 2; nested++) {
    struct lock_waiter w = {pool, &pool->total_lock,
                            nested ? &pool->index_lock : NULL, &guarded, -1, -1};
    pthread_t t;
    long before = atomic_load(&pool->contention);

    xfer__pool_lock(pool, &pool->total_lock);
    guarded = 10 * (nested + 1);
    cr_assert_eq(pthread_create(&t, NULL, wait_for_lock, &w), 0);
    /* It counted once its first try failed, and marks the lock (2) when
     * it goes to sleep on it, after its spin. */
    for (long i = 0; atomic_load(&pool->contention) == before ||
                     atomic_load(&pool->total_lock.state) != 2;
         i++) {
      cr_assert_lt(i, 10L * 1000 * 1000, "the other thread never slept");
      sched_yield();
    }
    cr_assert_eq(w.seen, -1, "not taken while held");
    guarded++;
    xfer__pool_unlock(&pool->total_lock);
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_eq(w.seen, 10 * (nested + 1) + 1, "the holder's writes seen");
    cr_assert_eq(guarded, 10 * (nested + 1) + 2);
#ifdef XFER__POOL_LOCK_DEPTH_KEPT
    cr_assert_eq(w.depth_after, 0);
#endif
    cr_assert_eq(atomic_load(&pool->total_lock.state), 0, "free again");
  }
  xfer_pool_get_stats(pool, &ps);
  cr_assert_eq(ps.lock_contention, 2);
  TH_ASSERT_NO_POOL_LOCK();
  cr_assert_eq(xfer_pool_destroy(pool), XFER_OK);
}

/* Threads that take one pool lock over and over, on a 2-CPU machine as
 * busy as CI's: every increment under it counts, whichever way each wait
 * ended (in the spin, or asleep). */
struct lock_hammer {
  xfer_pool *pool;
  long *count;
  long rounds;
};

static void *hammer_lock(void *arg) {
  struct lock_hammer *h = arg;

  for (long i = 0; i < h->rounds; i++) {
    xfer__pool_lock(h->pool, &h->pool->index_lock);
    (*h->count)++;
    xfer__pool_unlock(&h->pool->index_lock);
  }
  return NULL;
}

TH_TEST(pool, locks_exclude_each_other_under_contention) {
  xfer_pool *pool = xfer_pool_new(NULL);
  long count = 0;
  struct lock_hammer h = {pool, &count, 200000};
  pthread_t t[4];

  for (int i = 0; i < 4; i++)
    cr_assert_eq(pthread_create(&t[i], NULL, hammer_lock, &h), 0);
  for (int i = 0; i < 4; i++)
    cr_assert_eq(pthread_join(t[i], NULL), 0);
  cr_assert_eq(count, 4 * 200000L);
  cr_assert_eq(atomic_load(&pool->index_lock.state), 0);
  cr_assert_eq(xfer_pool_destroy(pool), XFER_OK);
}
