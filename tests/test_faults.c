/*
 * Fault injection: the table of the reliability milestone, one test per
 * fault, each with the outcome it must have. Around every fault: a good
 * transfer in the same multi and one in another thread (its own multi on
 * the same pool) must not notice; and afterwards open fds, the pool's
 * open and busy counts, and the bytes libxfer holds (counted through
 * testhelp's xfer_mem hooks) are back to what they were before.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testhelp.h"
#include "testserver.h"

/* --- the balance: fds, pool, bytes ---------------------------------------- */

static long open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  long n = 0;

  cr_assert_not_null(d);
  while (readdir(d))
    n++;
  closedir(d);
  return n;
}

struct balance {
  long fds, bytes;
  uint64_t open, busy;
};

static struct ts_server *web, *faulty;
static xfer_pool *pool;
static xfer_multi *m;
static struct th_sink sinks[4];
static xfer *xs[8];
static int nxs;

static void take(struct balance *b) {
  xfer_pool_stats ps;

  xfer_pool_get_stats(pool, &ps);
  b->fds = open_fds();
  b->bytes = th_mem_live_bytes();
  b->open = ps.open;
  b->busy = ps.busy;
}

static void setup(void) {
  th_mem_fail_at(0);
  cr_assert_eq(xfer_mem_set(&th_mem), XFER_OK);
  web = ts_start(NULL);
  /* One request a connection: a fault never meets a pooled connection,
   * and the warm-up leaves none behind. */
  faulty = ts_start(&(struct ts_config){.max_requests_per_conn = 1});
  pool = xfer_pool_new(&(xfer_pool_opts){.attach_hold_ms = TH_NO_ATTACH});
  m = xfer_multi_new(pool);
}

static void faults_end(void) {
  xfer_multi_destroy(m); /* detaches what is still added */
  for (int i = 0; i < nxs; i++)
    xfer_free(xs[i]);
  nxs = 0;
  for (size_t i = 0; i < XFER__ARRAY_SIZE(sinks); i++)
    th_sink_free(&sinks[i]);
  xfer_pool_destroy(pool);
  ts_stop(web);
  if (faulty)
    ts_stop(faulty);
  cr_assert_eq(th_mem_live_bytes(), 0);
  cr_assert_eq(xfer_mem_set(NULL), XFER_OK);
}

TestSuite(faults, .init = setup);

/* The other thread: a multi of its own on the same pool, one good GET
 * while the fault happens here. */
struct bystander {
  pthread_t thread;
  xfer_code result;
  size_t body;
};

static size_t count(const char *d, size_t n, void *u) {
  (void)d;
  ((struct bystander *)u)->body += n;
  return n;
}

static void *bystander_main(void *arg) {
  struct bystander *b = arg;
  xfer_multi *own = xfer_multi_new(pool);
  xfer *x = xfer_new();
  const xfer_msg *msg = NULL;
  int running = 1;

  xfer_set_url(x, th_url(ts_port(web), "/delay/100/bytes/500"));
  xfer_set_write_cb(x, count, b);
  xfer_multi_add(own, x);
  for (int i = 0; i < 500 && running; i++) {
    xfer_multi_perform(own, &running);
    if (running)
      xfer_multi_poll(own, 20, NULL);
  }
  msg = xfer_multi_info_read(own, NULL);
  b->result = msg ? msg->result : XFER_E_TIMEOUT;
  xfer_multi_remove(own, x);
  xfer_free(x);
  xfer_multi_destroy(own);
  return NULL;
}

/* Runs x to its end, OK, and frees it. */
static void fetch_and_free(xfer *x) {
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK, "%s", xfer_get_error_detail(x));
  xfer_multi_remove(m, x);
  xfer_free(x);
}

/* Two GETs at once first, so that the pool holds the two idle
 * connections to the good server that the two good transfers will use,
 * before the balance is taken; with `faulty_too`, one to the faulty
 * server as well (the pool remembers a destination, a bundle, until its
 * idle sweep: the faulty server's too, before the balance is taken). */
static void warm_up_to(bool faulty_too) {
  xfer *a = th_get(m, th_url(ts_port(web), "/delay/30/bytes/10"), NULL);
  xfer *b = th_get(m, th_url(ts_port(web), "/delay/30/bytes/10"), NULL);

  if (faulty_too)
    fetch_and_free(th_get(m, th_url(ts_port(faulty), "/bytes/1"), NULL));
  th_run(m, 5000);
  cr_assert_eq(th_result(m, a), XFER_OK);
  cr_assert_eq(th_result(m, b), XFER_OK);
  xfer_multi_remove(m, a);
  xfer_multi_remove(m, b);
  xfer_free(a);
  xfer_free(b);
}

static void warm_up(void) { warm_up_to(true); }

/* The witnesses of a fault: a good GET in this multi and one in another
 * thread, both to finish undisturbed while the fault happens. */
struct witnesses {
  struct bystander other;
  xfer *good;
};

static void witnesses_start(struct witnesses *w) {
  memset(w, 0, sizeof(*w));
  sinks[0].len = 0;
  pthread_create(&w->other.thread, NULL, bystander_main, &w->other);
  w->good = th_get(m, th_url(ts_port(web), "/delay/50/bytes/300"), &sinks[0]);
}

/* After the test's runs of m (which run the good one to its end too). */
static void witnesses_check(struct witnesses *w) {
  th_run(m, 10000);
  pthread_join(w->other.thread, NULL);
  cr_assert_eq(th_result(m, w->good), XFER_OK, "the good one in this multi");
  th_expect_pattern(sinks[0].data, sinks[0].len, 300);
  cr_assert_eq(w->other.result, XFER_OK, "the good one in the other thread");
  cr_assert_eq(w->other.body, 500);
  xfer_multi_remove(m, w->good);
  xfer_free(w->good);
}

/* Graceful closes may take a moment: until the balance is back, or 1 s. */
static void expect_balance(const struct balance *before) {
  struct balance after;

  for (int i = 0; i < 100; i++) {
    take(&after);
    if (after.fds == before->fds && after.open == before->open &&
        after.bytes == before->bytes)
      break;
    th_run_for(m, 10);
  }
  cr_assert_eq(after.fds, before->fds, "open fds back to their start");
  cr_assert_eq(after.open, before->open, "pool open back to its start");
  cr_assert_eq(after.busy, before->busy, "pool busy back to its start");
  cr_assert_eq(after.bytes, before->bytes,
               "bytes held by libxfer back to their start (%ld, %ld)",
               before->bytes, after.bytes);
}

static xfer *fault_get(const char *path);

/*
 * Runs a GET of `path` on the faulty server (set up further by `prep`)
 * next to a good transfer in this multi and one in another thread; checks
 * its result (and detail), that the others are undisturbed, and the
 * balance afterwards.
 */
static void run_fault(const char *path, void (*prep)(xfer *),
                      xfer_code expect, const char *detail) {
  struct balance before;
  struct witnesses w;
  xfer *faulty_x;

  warm_up();
  take(&before);
  faulty_x = fault_get(path);
  if (prep)
    prep(faulty_x);
  witnesses_start(&w);
  cr_assert_eq(xfer_multi_add(m, faulty_x), XFER_M_OK);
  th_run(m, 10000);
  witnesses_check(&w);

  cr_assert_eq(th_result(m, faulty_x), expect, "%s: %s",
               xfer_strerror(th_result(m, faulty_x)),
               xfer_get_error_detail(faulty_x));
  if (detail)
    cr_assert(strstr(xfer_get_error_detail(faulty_x), detail), "%s",
              xfer_get_error_detail(faulty_x));
  /* The handle's own buffers go with it. */
  xfer_multi_remove(m, faulty_x);
  xfer_free(faulty_x);
  expect_balance(&before);
}

static xfer *fault_get_port(int port, const char *path) {
  xfer *x = xfer_new();

  cr_assert_eq(xfer_set_url(x, th_url(port, path)), XFER_OK);
  return x;
}

static xfer *fault_get(const char *path) {
  return fault_get_port(ts_port(faulty), path);
}

/* --- the table --------------------------------------------------------------- */

TH_TEST(faults, reset_mid_response) {
  run_fault("/rst/1000", NULL, XFER_E_RECV, "reset");
}

TH_TEST(faults, truncated_body) {
  run_fault("/partial/100/10", NULL, XFER_E_PEER_CLOSED,
            "after 10 body bytes");
}

TH_TEST(faults, garbage_status_line) {
  run_fault("/malformed/status", NULL, XFER_E_BAD_STATUS_LINE, NULL);
}

TH_TEST(faults, header_line_over_the_limit) {
  run_fault("/big-headers/200000", NULL, XFER_E_HEADERS_TOO_LARGE, NULL);
}

TH_TEST(faults, five_thousand_headers) {
  run_fault("/many-headers/5000", NULL, XFER_E_HEADERS_TOO_LARGE, NULL);
}

TH_TEST(faults, chunk_size_that_overflows) {
  run_fault("/chunk-overflow", NULL, XFER_E_BAD_CHUNK, NULL);
}

static void low_speed(xfer *x) { xfer_set_low_speed(x, 50, 300); }

TH_TEST(faults, slow_drip_under_a_low_speed_limit) {
  run_fault("/drip/100/100", low_speed, XFER_E_TOO_SLOW, NULL);
}

static void short_timeout(xfer *x) { xfer_set_timeout_ms(x, 300); }

TH_TEST(faults, accept_and_never_answer) {
  run_fault("/never", short_timeout, XFER_E_TIMEOUT, "300 ms");
}

/* The server dies: a clear refused error while it is gone; back on the
 * same port, a GET on the connection it left behind is retried on a new
 * one and succeeds. The witnesses are undisturbed, and the balance comes
 * back: the dead connection closed, the new one pooled in its place. */
TH_TEST(faults, server_dies_and_comes_back_on_the_same_port) {
  struct balance before;
  struct witnesses w;
  xfer_pool_stats ps0, ps;
  int port;
  xfer *x;

  ts_stop(faulty); /* one that keeps connections alive instead */
  faulty = ts_start(NULL);
  port = ts_port(faulty);
  warm_up_to(true); /* leaves one idle connection to it, as the fault's */
  take(&before);
  xfer_pool_get_stats(pool, &ps0);
  witnesses_start(&w);
  ts_stop(faulty);
  faulty = NULL;

  x = fault_get_port(port, "/bytes/20");
  cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_E_CONNECT, "%s",
               xfer_get_error_detail(x));
  cr_assert(strstr(xfer_get_error_detail(x), "refused"), "%s",
            xfer_get_error_detail(x));
  xfer_multi_remove(m, x);
  xfer_free(x);

  faulty = ts_start(&(struct ts_config){.port = port});
  cr_assert_not_null(faulty, "port %d taken meanwhile", port);
  x = fault_get_port(port, "/bytes/20");
  cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK, "%s", xfer_get_error_detail(x));
  xfer_multi_remove(m, x);
  xfer_free(x);
  witnesses_check(&w);
  xfer_pool_get_stats(pool, &ps);
  cr_assert_eq(ps.retries_total - ps0.retries_total +
                   ps.dead_on_checkout - ps0.dead_on_checkout,
               1, "the connection the dead server left: retried, or found "
                  "dead by its check");
  expect_balance(&before);
}

/* The server closes idle keep-alive connections, at once or after a
 * delay: each GET after such a close meets a stale connection, and is
 * retried on a new one or finds it dead on the check; none is lost, the
 * witnesses are undisturbed, and no socket is left but the pool's. */
TH_TEST(faults, server_closes_idle_connections) {
  static const int close_after_ms[] = {1, 50};

  warm_up_to(false);
  for (size_t k = 0; k < 2; k++) {
    struct ts_server *closing =
        ts_start(&(struct ts_config){.idle_close_ms = close_after_ms[k]});
    struct balance before, after;
    struct witnesses w;
    xfer_pool_stats ps0, ps;

    take(&before);
    xfer_pool_get_stats(pool, &ps0);
    witnesses_start(&w);
    for (int round = 0; round < 3; round++) {
      xfer *x = th_get(m, th_url(ts_port(closing), "/bytes/64"), NULL);
      th_run(m, 5000);
      cr_assert_eq(th_result(m, x), XFER_OK, "%s",
                   xfer_get_error_detail(x));
      xfer_multi_remove(m, x);
      xfer_free(x);
      /* The server closes it (an event, not a pause). */
      cr_assert(ts_wait(closing, TS_CLOSED_BY_SERVER, round + 1, 5000));
    }
    witnesses_check(&w);
    xfer_pool_get_stats(pool, &ps);
    cr_assert_eq(ps.retries_total - ps0.retries_total +
                     ps.dead_on_checkout - ps0.dead_on_checkout,
                 2, "the two stale connections met, retried or found dead");
    /* The last one the server closed stays pooled until it is checked:
     * every socket opened is one the pool still holds, or closed. */
    take(&after);
    cr_assert_eq(after.fds - before.fds, after.open - before.open,
                 "a socket the pool does not hold (fds %ld -> %ld, open "
                 "%ld -> %ld)", before.fds, after.fds, (long)before.open,
                 (long)after.open);
    cr_assert_eq(after.busy, before.busy);
    ts_stop(closing);
  }
}

/* The server closes a reused connection just as the request arrives, no
 * response byte sent: a GET is retried on a new connection and succeeds;
 * a POST gets a clear error. Witnesses and balance as for the others. */
TH_TEST(faults, server_closes_as_the_request_is_sent) {
  struct ts_server *keeps = ts_start(NULL);
  struct balance before, after;
  struct witnesses w;
  xfer_pool_stats ps0, ps;
  xfer *get, *post, *first;

  /* A clock that stands still: every idle age is 0, so the pool learns
   * no idle-close time from the connection that dies here, and the POST
   * takes the pooled connection (after its liveness check) however slow
   * the run is. On the real clock, a slow run taught the pool a few ms
   * and the POST went out on a fresh connection instead. */
  th_clock_install((xfer__time)1000000 * XFER__NS_PER_MS, 0);
  first = th_get(m, th_url(ts_port(keeps), "/bytes/1"), NULL);
  xs[nxs++] = first;
  th_run(m, 5000); /* a connection to reuse, and the destination known */
  cr_assert_eq(th_result(m, first), XFER_OK);
  warm_up_to(false);
  take(&before);
  xfer_pool_get_stats(pool, &ps0);
  witnesses_start(&w);

  get = th_get(m, th_url(ts_port(keeps), "/close-once/1/bytes/10"), NULL);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, get), XFER_OK, "%s", xfer_get_error_detail(get));
  cr_assert_eq(xfer_get_reused(get), 0, "answered on a new connection");
  xfer_pool_get_stats(pool, &ps);
  cr_assert_eq(ps.retries_total - ps0.retries_total, 1);

  post = xfer_new();
  xfer_set_url(post, th_url(ts_port(keeps), "/close-once/2/echo"));
  xfer_set_method(post, "POST");
  xfer_set_body(post, "x", 1);
  xfer_multi_add(m, post);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, post), XFER_E_PEER_CLOSED);
  cr_assert(strstr(xfer_get_error_detail(post), "not retried"), "%s",
            xfer_get_error_detail(post));
  cr_assert_eq(xfer_get_reused(post), 1, "sent on the pooled connection");

  witnesses_check(&w);
  xfer_multi_remove(m, get);
  xfer_multi_remove(m, post);
  xfer_free(get);
  xfer_free(post);
  /* The POST's connection is gone with it: one more GET brings the pool
   * back to the one idle connection it had. */
  get = th_get(m, th_url(ts_port(keeps), "/bytes/1"), NULL);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, get), XFER_OK);
  xfer_multi_remove(m, get);
  xfer_free(get);
  for (int i = 0; i < 100; i++) {
    take(&after);
    if (after.fds == before.fds && after.bytes == before.bytes)
      break;
    th_run_for(m, 10);
  }
  cr_assert_eq(after.fds, before.fds, "open fds back to their start");
  cr_assert_eq(after.open, before.open);
  cr_assert_eq(after.busy, before.busy);
  cr_assert_eq(after.bytes, before.bytes, "bytes back to their start");
  ts_stop(keeps);
  th_clock_uninstall();
}
