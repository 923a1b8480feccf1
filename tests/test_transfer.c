/* lib/transfer.c: the handle, its clock and its timeline. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>

#include "cfilter.h"
#include "testhelp.h"


static void transfer_end(void) {}


TH_TEST(transfer, new_transfer_has_no_timeline_yet) {
  xfer *x = xfer_new();
  xfer_timeline tl;
  int v = 42;

  cr_assert_not_null(x);
  cr_assert_eq(xfer_get_timeline(x, &tl), XFER_OK);
  cr_assert_eq(tl.queue_us, -1);
  cr_assert_eq(tl.total_us, -1);
  cr_assert_str_eq(xfer_get_error_detail(x), "");
  cr_assert_null(xfer_get_private(x));
  cr_assert_eq(xfer_set_private(x, &v), XFER_OK);
  cr_assert_eq(xfer_get_private(x), &v);
  cr_assert_eq(xfer_get_timeline(x, NULL), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_free(x), XFER_OK);
  cr_assert_eq(xfer_free(NULL), XFER_OK);
}

TH_TEST(transfer, bad_handles_are_refused) {
  xfer_multi *m = xfer_multi_new(NULL);
  xfer_timeline tl;

  cr_assert_eq(xfer_get_timeline(NULL, &tl), XFER_E_BAD_HANDLE);
  cr_assert_eq(xfer_set_private(NULL, NULL), XFER_E_BAD_HANDLE);
  cr_assert_null(xfer_get_private(NULL));
  cr_assert_str_eq(xfer_get_error_detail(NULL), "");
  /* A multi is not a transfer. */
  cr_assert_eq(xfer_get_timeline((xfer *)m, &tl), XFER_E_BAD_HANDLE);
  cr_assert_eq(xfer_free((xfer *)m), XFER_E_BAD_HANDLE);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
}

TH_TEST(transfer, clock_never_goes_back) {
  xfer *x = xfer_new();

  xfer__now_at_least(x, MS(10));
  cr_assert_eq(x->now, MS(10));
  xfer__now_at_least(x, MS(5));
  cr_assert_eq(x->now, MS(10));
  xfer__now_at_least(x, MS(11));
  cr_assert_eq(x->now, MS(11));
  xfer_free(x);
}

TH_TEST(transfer, phases_not_reached_take_the_previous_value) {
  xfer *x = xfer_new();
  xfer_timeline tl;

  xfer__start(x, MS(1000));
  x->now = MS(1002);
  xfer__stamp(x, XFER__PHASE_QUEUE);
  x->now = MS(1010);
  xfer__stamp(x, XFER__PHASE_CONNECT); /* no name lookup */
  x->now = MS(1030);
  xfer__stamp(x, XFER__PHASE_STARTTRANSFER); /* no TLS, no pretransfer */
  cr_assert_eq(xfer_get_timeline(x, &tl), XFER_OK);
  cr_assert_eq(tl.queue_us, 2000);
  cr_assert_eq(tl.namelookup_us, 2000);
  cr_assert_eq(tl.connect_us, 10000);
  cr_assert_eq(tl.appconnect_us, 10000);
  cr_assert_eq(tl.pretransfer_us, 10000);
  cr_assert_eq(tl.starttransfer_us, 30000);
  cr_assert_eq(tl.total_us, -1);
  x->now = MS(1031);
  xfer__stamp(x, XFER__PHASE_TOTAL);
  th_expect_timeline_ordered(x);
  x->state = XFER__STATE_IDLE;
  xfer_free(x);
}

TH_TEST(transfer, without_work_it_fails_with_a_clear_error) {
  xfer_multi *m = xfer_multi_new(NULL);
  xfer *x = xfer_new();
  const xfer_msg *msg;
  int running = -1;

  cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
  cr_assert_eq(xfer_free(x), XFER_E_IN_USE);
  cr_assert_eq(xfer__set_handler(x, &tt_handler, NULL), XFER_E_IN_USE);
  cr_assert_eq(xfer_multi_perform(m, &running), XFER_M_OK);
  cr_assert_eq(running, 0);
  msg = xfer_multi_info_read(m, NULL);
  cr_assert_not_null(msg);
  cr_assert_eq(msg->x, x);
  cr_assert_eq(msg->result, XFER_E_NO_URL);
  cr_assert_str_eq(xfer_get_error_detail(x), "the transfer has no URL to fetch");
  th_expect_timeline_ordered(x);
  cr_assert_eq(xfer_multi_remove(m, x), XFER_M_OK);
  cr_assert_eq(xfer_free(x), XFER_OK);
  xfer_multi_destroy(m);
}

/* --- HTTP/1.1 over real sockets, against the scripted server ------------- */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testserver.h"

static struct ts_server *srv;
static int port;
static xfer_multi *hm;
static struct th_sink sinks[8];
static xfer *hx[8];

static void http_setup(void) {
  srv = ts_start(NULL);
  cr_assert_not_null(srv);
  port = ts_port(srv);
  hm = xfer_multi_new(NULL);
  cr_assert_not_null(hm);
}

static void http_end(void) {
  cr_assert_eq(xfer_multi_destroy(hm), XFER_M_OK);
  for (size_t i = 0; i < XFER__ARRAY_SIZE(hx); i++) {
    cr_assert_eq(xfer_free(hx[i]), XFER_OK);
    th_sink_free(&sinks[i]);
  }
  ts_stop(srv);
}

TestSuite(http, .init = http_setup);

/* A transfer in slot i, GET of path unless changed before running. */
static xfer *get(int i, const char *path) {
  hx[i] = th_get(hm, th_url(port, path), &sinks[i]);
  return hx[i];
}

/* The same, not added yet, for tests that set more options. */
static xfer *prepare(int i, const char *path) {
  hx[i] = xfer_new();
  cr_assert_eq(xfer_set_url(hx[i], th_url(port, path)), XFER_OK);
  cr_assert_eq(xfer_set_write_cb(hx[i], th_sink_cb, &sinks[i]), XFER_OK);
  return hx[i];
}

static void add(int i) { cr_assert_eq(xfer_multi_add(hm, hx[i]), XFER_M_OK); }

TH_TEST(http, get_with_content_length) {
  xfer_pool_stats ps;
  uint64_t sent = 0, received = 0;

  get(0, "/bytes/100");
  th_run(hm, 5000);
  cr_assert_eq(th_result(hm, hx[0]), XFER_OK, "%s",
               xfer_get_error_detail(hx[0]));
  cr_assert_eq(xfer_get_status(hx[0]), 200);
  cr_assert_str_eq(xfer_get_reason(hx[0]), "OK");
  th_expect_pattern(sinks[0].data, sinks[0].len, 100);
  cr_assert_str_eq(xfer_get_header(hx[0], "content-length"), "100");
  cr_assert_geq(xfer_get_header_count(hx[0]), 1);
  th_expect_timeline_ordered(hx[0]);
  xfer_get_bytes(hx[0], &sent, &received);
  cr_assert_gt(sent, 30);
  cr_assert_gt(received, 100);
  cr_assert_neq(xfer_get_conn_id(hx[0]), 0);
  cr_assert_eq(xfer_get_reused(hx[0]), 0);
  xfer_pool_get_stats(hm->loop.pool, &ps);
  cr_assert_eq(ps.opened_total, 1);
  cr_assert_eq(ps.idle, 1, "the keep-alive connection went to the pool");
}

/* With attaching off, the socket leaves the loop as the transfer ends:
 * no event loop watches an idle pooled socket (rule 4). */
TH_TEST(http, keep_alive_connection_is_reused) {
  xfer_pool *p =
      xfer_pool_new(&(xfer_pool_opts){.attach_hold_ms = TH_NO_ATTACH});
  xfer_multi *m = xfer_multi_new(p);
  struct th_sockrec rec;
  int fd;

  th_sockrec_init(&rec);
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
  hx[0] = th_get(m, th_url(ts_port(srv), "/delay/50/bytes/10"), NULL);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, hx[0]), XFER_OK);
  cr_assert_gt(rec.count, 0);
  fd = rec.calls[rec.count - 1].fd;
  cr_assert_eq(rec.calls[rec.count - 1].what, XFER_POLL_REMOVE);
  cr_assert_neq(fcntl(fd, F_GETFD), -1, "the pooled socket is open");
  hx[1] = th_get(m, th_url(ts_port(srv), "/bytes/20"), NULL);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, hx[1]), XFER_OK);
  cr_assert_eq(xfer_get_reused(hx[1]), 1);
  cr_assert_eq(xfer_get_conn_id(hx[1]), xfer_get_conn_id(hx[0]));
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
}

/* Rule 4, deterministic: when the application hears REMOVE for the
 * connection's socket, the connection is not in the pool yet, so no other
 * thread can have taken it while this loop still watched the fd. */
static uint64_t idle_at_remove = 99;

static int remove_order_cb(xfer_multi *m, int fd, int what, void *userp,
                           void *socketp) {
  xfer_pool_stats ps;
  if (what == XFER_POLL_REMOVE) {
    xfer_pool_get_stats(m->loop.pool, &ps);
    idle_at_remove = ps.idle - ps.attached; /* on the shared side */
  }
  return 0;
}

TH_TEST(http, remove_is_reported_before_the_pool_gets_the_connection) {
  xfer_pool_stats ps;

  xfer_multi_set_socket_cb(hm, remove_order_cb, NULL);
  get(0, "/delay/50/bytes/10");
  th_run(hm, 5000);
  cr_assert_eq(th_result(hm, hx[0]), XFER_OK);
  xfer_pool_get_stats(hm->loop.pool, &ps);
  cr_assert_eq(ps.attached, 1, "held for this multi first");
  cr_assert_eq(idle_at_remove, 99, "no REMOVE while attached");
  th_run_for(hm, 250); /* past the 100 ms hold */
  xfer_pool_get_stats(hm->loop.pool, &ps);
  cr_assert_eq(ps.attached, 0);
  cr_assert_eq(ps.idle, 1, "on the shared side afterwards");
  cr_assert_eq(idle_at_remove, 0,
               "REMOVE came before the shared side had it");
}

TH_TEST(http, body_framings) {
  xfer_pool_stats ps;

  get(0, "/chunked/1000/7");
  get(1, "/close-delimited/500");
  get(2, "/status/204");
  get(3, "/status/304");
  get(4, "/1xx/50");
  prepare(5, "/bytes/300");
  cr_assert_eq(xfer_set_method(hx[5], "HEAD"), XFER_OK);
  add(5);
  th_run(hm, 5000);
  for (int i = 0; i < 6; i++)
    cr_assert_eq(th_result(hm, hx[i]), XFER_OK, "%d: %s", i,
                 xfer_get_error_detail(hx[i]));
  th_expect_pattern(sinks[0].data, sinks[0].len, 1000);
  th_expect_pattern(sinks[1].data, sinks[1].len, 500);
  cr_assert_eq(xfer_get_status(hx[2]), 204);
  cr_assert_eq(sinks[2].len, 0);
  cr_assert_eq(xfer_get_status(hx[3]), 304);
  cr_assert_eq(xfer_get_status(hx[4]), 200, "1xx skipped");
  th_expect_pattern(sinks[4].data, sinks[4].len, 50);
  cr_assert_str_eq(xfer_get_header(hx[5], "Content-Length"), "300");
  cr_assert_eq(sinks[5].len, 0, "HEAD has no body");
  /* A transfer can finish in its first run on loopback and hand its
   * connection to the next, so count connections, not transfers. */
  xfer_pool_get_stats(hm->loop.pool, &ps);
  cr_assert_eq(ps.idle, ps.opened_total - 1,
               "all but the close-delimited one are pooled (%llu of %llu)",
               (unsigned long long)ps.idle,
               (unsigned long long)ps.opened_total);
}

/* More than 16 reads of 64 KiB: the transfer yields and comes back
 * through its run-now timer, and the body arrives whole and in order. */
TH_TEST(http, large_body_over_many_runs) {
  xfer_multi_stats st = {0};

  get(0, "/bytes/4000000");
  th_run(hm, 10000);
  cr_assert_eq(th_result(hm, hx[0]), XFER_OK, "%s",
               xfer_get_error_detail(hx[0]));
  th_expect_pattern(sinks[0].data, sinks[0].len, 4000000);
  xfer_multi_get_stats(hm, &st);
  cr_assert_geq(st.xfers_run, 4, "ran %llu times",
                (unsigned long long)st.xfers_run);
}

TH_TEST(http, post_with_body_and_headers) {
  prepare(0, "/echo");
  cr_assert_eq(xfer_set_method(hx[0], "POST"), XFER_OK);
  cr_assert_eq(xfer_set_body(hx[0], "hello", 5), XFER_OK);
  cr_assert_eq(xfer_add_header(hx[0], "X-Test", "one"), XFER_OK);
  add(0);
  th_run(hm, 5000);
  cr_assert_eq(th_result(hm, hx[0]), XFER_OK, "%s",
               xfer_get_error_detail(hx[0]));
  cr_assert(strstr(sinks[0].data, "POST /echo\n"), "%.*s", (int)sinks[0].len,
            sinks[0].data);
  cr_assert(strstr(sinks[0].data, "X-Test: one\n"));
  cr_assert(strstr(sinks[0].data, "Content-Length: 5\n"));
  cr_assert(strstr(sinks[0].data, "Host: 127.0.0.1:"));
  cr_assert_eq(memcmp(sinks[0].data + sinks[0].len - 5, "hello", 5), 0);
}

/* xfer_reset(): the same handle, as xfer_new() made it. */
TH_TEST(http, reset_gives_back_a_fresh_transfer) {
  xfer_timeline tl;
  uint64_t sent = 1, received = 1;
  int me;

  prepare(0, "/echo");
  cr_assert_eq(xfer_set_method(hx[0], "POST"), XFER_OK);
  cr_assert_eq(xfer_set_body(hx[0], "hello", 5), XFER_OK);
  cr_assert_eq(xfer_add_header(hx[0], "X-Test", "one"), XFER_OK);
  cr_assert_eq(xfer_set_private(hx[0], &me), XFER_OK);
  add(0);
  cr_assert_eq(xfer_reset(hx[0]), XFER_E_IN_USE, "refused while added");
  th_run(hm, 5000);
  cr_assert_eq(th_result(hm, hx[0]), XFER_OK);
  cr_assert_eq(xfer_multi_remove(hm, hx[0]), XFER_M_OK);

  cr_assert_eq(xfer_reset(hx[0]), XFER_OK);
  cr_assert_null(xfer_get_private(hx[0]));
  cr_assert_eq(xfer_get_status(hx[0]), 0);
  cr_assert_str_eq(xfer_get_reason(hx[0]), "");
  cr_assert_eq(xfer_get_header_count(hx[0]), 0);
  cr_assert_eq(xfer_get_result(hx[0]), XFER_OK);
  cr_assert_str_eq(xfer_get_error_detail(hx[0]), "");
  cr_assert_eq(xfer_get_bytes(hx[0], &sent, &received), XFER_OK);
  cr_assert(sent == 0 && received == 0);
  cr_assert_eq(xfer_get_timeline(hx[0], &tl), XFER_OK);
  cr_assert_eq(tl.total_us, -1);

  /* No URL any more. */
  add(0);
  th_run(hm, 5000);
  cr_assert_eq(th_result(hm, hx[0]), XFER_E_NO_URL);
  cr_assert_eq(xfer_multi_remove(hm, hx[0]), XFER_M_OK);

  /* A GET with none of the old method, body or headers. */
  cr_assert_eq(xfer_set_url(hx[0], th_url(port, "/echo")), XFER_OK);
  cr_assert_eq(xfer_set_write_cb(hx[0], th_sink_cb, &sinks[1]), XFER_OK);
  add(0);
  th_run(hm, 5000);
  cr_assert_eq(th_result(hm, hx[0]), XFER_OK);
  cr_assert(strstr(sinks[1].data, "GET /echo\n"), "%s", sinks[1].data);
  cr_assert_null(strstr(sinks[1].data, "X-Test"), "%s", sinks[1].data);
  cr_assert_null(strstr(sinks[1].data, "Content-Length"), "%s",
                 sinks[1].data);
  cr_assert_eq(xfer_reset(NULL), XFER_E_BAD_HANDLE);
}

struct upload {
  const char *data;
  size_t len, at, step;
};

static long upload_read(char *buf, size_t len, void *userp) {
  struct upload *u = userp;
  size_t n = u->len - u->at;

  if (n > u->step)
    n = u->step;
  if (n > len)
    n = len;
  memcpy(buf, u->data + u->at, n);
  u->at += n;
  return (long)n;
}

TH_TEST(http, streamed_uploads) {
  static char big[100000];
  struct upload chunked = {big, sizeof(big), 0, 7000};
  struct upload sized = {"0123456789", 10, 0, 3};

  for (size_t i = 0; i < sizeof(big); i++)
    big[i] = (char)('a' + i % 26);
  prepare(0, "/echo");
  xfer_set_method(hx[0], "PUT");
  cr_assert_eq(xfer_set_body_cb(hx[0], upload_read, &chunked, -1), XFER_OK);
  add(0);
  prepare(1, "/echo");
  xfer_set_method(hx[1], "POST");
  cr_assert_eq(xfer_set_body_cb(hx[1], upload_read, &sized, 10), XFER_OK);
  add(1);
  th_run(hm, 5000);
  cr_assert_eq(th_result(hm, hx[0]), XFER_OK, "%s",
               xfer_get_error_detail(hx[0]));
  cr_assert_eq(th_result(hm, hx[1]), XFER_OK, "%s",
               xfer_get_error_detail(hx[1]));
  cr_assert(strstr(sinks[0].data, "Transfer-Encoding: chunked\n"));
  cr_assert_geq(sinks[0].len, sizeof(big));
  cr_assert_eq(memcmp(sinks[0].data + sinks[0].len - sizeof(big), big,
                      sizeof(big)),
               0);
  cr_assert(strstr(sinks[1].data, "Content-Length: 10\n"));
  cr_assert_eq(memcmp(sinks[1].data + sinks[1].len - 10, "0123456789", 10), 0);
}

TH_TEST(http, redirects) {
  char loop[160];

  prepare(0, "/redirect/302?to=/echo");
  xfer_set_method(hx[0], "POST");
  xfer_set_body(hx[0], "data", 4);
  xfer_set_follow_redirects(hx[0], 5);
  add(0);
  prepare(1, "/redirect/307?to=/echo");
  xfer_set_method(hx[1], "POST");
  xfer_set_body(hx[1], "kept", 4);
  xfer_set_follow_redirects(hx[1], 5);
  add(1);
  /* Five hops deep, against a limit of three. */
  snprintf(loop, sizeof(loop), "%s",
           "/redirect/301?to=/redirect/301?to=/redirect/301?to="
           "/redirect/301?to=/redirect/301?to=/bytes/1");
  prepare(2, loop);
  xfer_set_follow_redirects(hx[2], 3);
  add(2);
  get(3, "/redirect/302?to=/bytes/1"); /* not followed by default */
  prepare(4, "/redirect/308?to=bytes/3"); /* relative to /redirect/ */
  xfer_set_follow_redirects(hx[4], 1);
  add(4);
  /* An empty Location: the 302 is the answer (it was followed to this
   * very URL, five times, then XFER_E_TOO_MANY_REDIRECTS). */
  prepare(5, "/redirect/302?to=");
  xfer_set_follow_redirects(hx[5], 5);
  add(5);
  /* A hop that cannot be made says it was a redirect's. */
  prepare(6, "/redirect/301?to=https://127.0.0.1/");
  xfer_set_follow_redirects(hx[6], 5);
  add(6);
  th_run(hm, 5000);
  cr_assert_eq(th_result(hm, hx[0]), XFER_OK, "%s",
               xfer_get_error_detail(hx[0]));
  cr_assert(strstr(sinks[0].data, "GET /echo\n"), "302 turns POST into GET");
  cr_assert_eq(xfer_get_redirects(hx[0]), 1);
  cr_assert_eq(th_result(hm, hx[1]), XFER_OK);
  cr_assert(strstr(sinks[1].data, "POST /echo\n"), "307 keeps the method");
  cr_assert_eq(memcmp(sinks[1].data + sinks[1].len - 4, "kept", 4), 0);
  cr_assert_eq(th_result(hm, hx[2]), XFER_E_TOO_MANY_REDIRECTS);
  cr_assert(strstr(xfer_get_error_detail(hx[2]), "3 redirects"));
  cr_assert_eq(th_result(hm, hx[3]), XFER_OK);
  cr_assert_eq(xfer_get_status(hx[3]), 302);
  cr_assert_str_eq(xfer_get_header(hx[3], "Location"), "/bytes/1");
  cr_assert_eq(th_result(hm, hx[4]), XFER_OK);
  cr_assert_eq(xfer_get_status(hx[4]), 404, "/redirect/bytes/3 is unknown");
  cr_assert_eq(th_result(hm, hx[5]), XFER_OK, "%s",
               xfer_get_error_detail(hx[5]));
  cr_assert_eq(xfer_get_status(hx[5]), 302);
  cr_assert_eq(xfer_get_redirects(hx[5]), 0);
  cr_assert_eq(th_result(hm, hx[6]), XFER_E_UNSUPPORTED_SCHEME);
  cr_assert(strstr(xfer_get_error_detail(hx[6]),
                   "cannot follow the 301 redirect to 'https://127.0.0.1/': "),
            "%s", xfer_get_error_detail(hx[6]));
  cr_assert_eq(xfer_get_status(hx[6]), 301);
}

/* A followed redirect's body (nginx's carry a small HTML page) is not
 * the user's: the write callback gets the final response's body alone. A
 * 3xx that is not followed is the result, body and all. */
TH_TEST(http, a_followed_redirects_body_is_not_written) {
  static struct upload streamed = {"0123456789", 10, 0, 10};

  prepare(0, "/redirect/302/50?to=/redirect/301/20?to=/bytes/7");
  xfer_set_follow_redirects(hx[0], 5);
  add(0);
  get(1, "/redirect/302/50?to=/bytes/7"); /* not followed by default */
  prepare(2, "/redirect/302/50?to=/redirect/302/50?to=/bytes/7");
  xfer_set_follow_redirects(hx[2], 1); /* the second is not followed */
  add(2);
  /* A 307 would send the streamed body again: not followed, nor counted. */
  prepare(3, "/redirect/307/20?to=/echo");
  xfer_set_method(hx[3], "PUT");
  cr_assert_eq(xfer_set_body_cb(hx[3], upload_read, &streamed, 10), XFER_OK);
  xfer_set_follow_redirects(hx[3], 5);
  add(3);
  th_run(hm, 5000);
  cr_assert_eq(th_result(hm, hx[0]), XFER_OK, "%s",
               xfer_get_error_detail(hx[0]));
  cr_assert_eq(xfer_get_redirects(hx[0]), 2);
  th_expect_pattern(sinks[0].data, sinks[0].len, 7);
  cr_assert_eq(th_result(hm, hx[1]), XFER_OK);
  cr_assert_eq(xfer_get_status(hx[1]), 302);
  th_expect_pattern(sinks[1].data, sinks[1].len, 50);
  cr_assert_eq(th_result(hm, hx[2]), XFER_E_TOO_MANY_REDIRECTS);
  cr_assert_eq(xfer_get_redirects(hx[2]), 1);
  th_expect_pattern(sinks[2].data, sinks[2].len, 50); /* the second's */
  cr_assert_eq(th_result(hm, hx[3]), XFER_E_CANNOT_RESEND,
               "not the callback's own abort");
  cr_assert(strstr(xfer_get_error_detail(hx[3]), "cannot follow a 307"));
  cr_assert_eq(xfer_get_redirects(hx[3]), 0);
  th_expect_pattern(sinks[3].data, sinks[3].len, 20);
}

/* A 303 turns a POST into a GET without its body: a Content-Length the
 * user set for that body stays behind too (the server would wait for
 * bytes that never come). */
TH_TEST(http, a_redirect_that_drops_the_body_drops_its_length) {
  prepare(0, "/redirect/303?to=/echo");
  xfer_set_method(hx[0], "POST");
  cr_assert_eq(xfer_set_body(hx[0], "data", 4), XFER_OK);
  cr_assert_eq(xfer_add_header(hx[0], "Content-Length", "4"), XFER_OK);
  xfer_set_follow_redirects(hx[0], 1);
  add(0);
  th_run(hm, 5000);
  cr_assert_eq(th_result(hm, hx[0]), XFER_OK, "%s",
               xfer_get_error_detail(hx[0]));
  cr_assert(strstr(sinks[0].data, "GET /echo\n"), "%s", sinks[0].data);
  cr_assert_null(strstr(sinks[0].data, "Content-Length"), "%s",
                 sinks[0].data);
}

/* A redirect to another origin (here another port) does not take the
 * user's credentials or Host there (as curl: CVE-2018-1000007,
 * CVE-2022-27776); one to the same origin does, and every other header
 * goes to both. */
TH_TEST(http, credentials_do_not_follow_to_another_origin) {
  struct ts_server *other = ts_start(NULL);
  char to[128], host[64];

  cr_assert_not_null(other);
  snprintf(to, sizeof(to), "/redirect/302?to=http://127.0.0.1:%d/echo",
           ts_port(other));
  snprintf(host, sizeof(host), "Host: 127.0.0.1:%d\n", ts_port(other));
  prepare(0, to);
  prepare(1, "/redirect/302?to=/echo");
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(xfer_add_header(hx[i], "Authorization", "Bearer secret"),
                 XFER_OK);
    cr_assert_eq(xfer_add_header(hx[i], "Cookie", "a=b"), XFER_OK);
    cr_assert_eq(xfer_add_header(hx[i], "Host", "named.test"), XFER_OK);
    cr_assert_eq(xfer_add_header(hx[i], "X-Kept", "yes"), XFER_OK);
    xfer_set_follow_redirects(hx[i], 1);
    add(i);
  }
  th_run(hm, 5000);
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(th_result(hm, hx[i]), XFER_OK, "%s",
                 xfer_get_error_detail(hx[i]));
    cr_assert(strstr(sinks[i].data, "X-Kept: yes\n"), "%s", sinks[i].data);
  }
  cr_assert_null(strstr(sinks[0].data, "Authorization"), "%s", sinks[0].data);
  cr_assert_null(strstr(sinks[0].data, "Cookie"), "%s", sinks[0].data);
  cr_assert(strstr(sinks[0].data, host), "%s", sinks[0].data);
  cr_assert_null(strstr(sinks[0].data, "named.test"), "%s", sinks[0].data);
  cr_assert(strstr(sinks[1].data, "Authorization: Bearer secret\n"));
  cr_assert(strstr(sinks[1].data, "Cookie: a=b\n"));
  cr_assert(strstr(sinks[1].data, "Host: named.test\n"), "%s",
            sinks[1].data);
  ts_stop(other);
}

/* A transfer added again after a redirect changed its method (303: POST
 * to GET, without the body) starts from its own options again: the same
 * requests, byte for byte (the method is worked out once per change of
 * options, and a redirect's change must not stick). */
TH_TEST(http, added_again_after_a_redirect_it_starts_from_its_options) {
  struct ts_stats before, after;
  long first = 0, second = 0;

  prepare(0, "/redirect/303?to=/echo");
  xfer_set_method(hx[0], "POST");
  xfer_set_body(hx[0], "data", 4);
  xfer_set_follow_redirects(hx[0], 1);
  for (int run = 0; run < 2; run++) {
    ts_get_stats(srv, &before);
    sinks[0].len = 0;
    add(0);
    th_run(hm, 5000);
    cr_assert_eq(th_result(hm, hx[0]), XFER_OK, "%s",
                 xfer_get_error_detail(hx[0]));
    cr_assert_eq(xfer_multi_remove(hm, hx[0]), XFER_M_OK);
    cr_assert(strstr(sinks[0].data, "GET /echo\n"), "303 turns POST into GET");
    ts_get_stats(srv, &after);
    cr_assert_eq(after.requests - before.requests, 2);
    if (run == 0)
      first = after.bytes_in - before.bytes_in;
    else
      second = after.bytes_in - before.bytes_in;
  }
  cr_assert_eq(second, first, "the second run sent POST with its body again");
}

/* Each error, produced on loopback, beside a good transfer that must not
 * notice; a broken connection is never pooled. */
static void expect_failure(const char *path, xfer_code code, const char *words,
                           void (*tune)(xfer *)) {
  xfer_pool_stats before, after;
  int slot;

  for (slot = 0; slot < 8 && hx[slot]; slot++)
    ;
  cr_assert_lt(slot, 7);
  xfer_pool_get_stats(hm->loop.pool, &before);
  prepare(slot, path);
  if (tune)
    tune(hx[slot]);
  add(slot);
  get(slot + 1, "/bytes/5000");
  th_run(hm, 10000);
  cr_assert_eq(th_result(hm, hx[slot]), code, "%s: got %d: %s", path,
               th_result(hm, hx[slot]), xfer_get_error_detail(hx[slot]));
  cr_assert(strstr(xfer_get_error_detail(hx[slot]), words),
            "%s: detail '%s' lacks '%s'", path,
            xfer_get_error_detail(hx[slot]), words);
  cr_assert_eq(th_result(hm, hx[slot + 1]), XFER_OK);
  th_expect_pattern(sinks[slot + 1].data, sinks[slot + 1].len, 5000);
  th_expect_timeline_ordered(hx[slot]);
  xfer_pool_get_stats(hm->loop.pool, &after);
  cr_assert_leq(after.idle, before.idle + 1, "%s: a broken one was pooled",
                path);
}

TH_TEST(http, malformed_responses) {
  expect_failure("/malformed/status", XFER_E_BAD_STATUS_LINE, "HPE_", NULL);
  expect_failure("/malformed/header", XFER_E_BAD_HEADER, "HPE_", NULL);
  expect_failure("/chunk-overflow", XFER_E_BAD_CHUNK, "CHUNK", NULL);
  expect_failure("/too-long/10/20", XFER_E_BODY_TOO_LONG, "beyond", NULL);
}

static void small_headers(xfer *x) { xfer_set_max_header_size(x, 4096); }

TH_TEST(http, oversized_headers) {
  expect_failure("/big-headers/200000", XFER_E_HEADERS_TOO_LARGE,
                 "102400 bytes", NULL);
  expect_failure("/big-headers/5000", XFER_E_HEADERS_TOO_LARGE, "4096 bytes",
                 small_headers);
  expect_failure("/many-headers/5000", XFER_E_HEADERS_TOO_LARGE,
                 "more than 500 header lines", NULL);
}

TH_TEST(http, peer_closes_early_or_resets) {
  expect_failure("/partial/100/10", XFER_E_PEER_CLOSED, "after 10 body bytes",
                 NULL);
  expect_failure("/close-now", XFER_E_PEER_CLOSED, "before any response",
                 NULL);
  expect_failure("/rst/1000", XFER_E_RECV, "reset", NULL);
}

static void timeout_300(xfer *x) { xfer_set_timeout_ms(x, 300); }
static void low_speed(xfer *x) { xfer_set_low_speed(x, 100, 300); }

TH_TEST(http, timeouts_and_slow_peers) {
  expect_failure("/never", XFER_E_TIMEOUT, "longer than 300 ms", timeout_300);
  expect_failure("/drip/1000/100", XFER_E_TOO_SLOW, "below the limit of 100",
                 low_speed);
}

static int refused_port;
static void to_refused(xfer *x) {
  char url[64];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/", refused_port);
  cr_assert_eq(xfer_set_url(x, url), XFER_OK);
}

TH_TEST(http, refused) {
  refused_port = th_refused_port();
  expect_failure("/", XFER_E_CONNECT, "Connection refused", to_refused);
  cr_assert(strstr(xfer_get_error_detail(hx[0]), "127.0.0.1 port"));
}

static size_t refuse_body(const char *d, size_t len, void *u) { return 0; }
static void aborting(xfer *x) { xfer_set_write_cb(x, refuse_body, NULL); }

TH_TEST(http, write_callback_aborts) {
  expect_failure("/bytes/10", XFER_E_WRITE_CALLBACK, "write callback",
                 aborting);
}

TH_TEST(http, thousand_transfers_in_flight_at_once) {
  enum { N = 1000 };
  static xfer *x[N];
  static struct th_sink s[N];
  xfer_multi_stats st = {0};
  struct ts_stats ss;

  th_raise_nofile(4 * N);
  for (int i = 0; i < N; i++)
    x[i] = th_get(hm, th_url(port, i % 2 ? "/bytes/1000" : "/chunked/1000/100"),
                  &s[i]);
  th_run(hm, 30000);
  for (int i = 0; i < N; i++) {
    cr_assert_eq(th_result(hm, x[i]), XFER_OK, "%d: %s", i,
                 xfer_get_error_detail(x[i]));
    th_expect_pattern(s[i].data, s[i].len, 1000);
    th_expect_timeline_ordered(x[i]);
  }
  xfer_multi_get_stats(hm, &st);
  ts_get_stats(srv, &ss);
  cr_assert_eq(ss.requests, N);
  cr_assert_eq(st.xfers_done, N);
  for (int i = 0; i < N; i++) {
    cr_assert_eq(xfer_multi_remove(hm, x[i]), XFER_M_OK);
    xfer_free(x[i]);
    th_sink_free(&s[i]);
  }
}

/* --- the request side keeps its promises ------------------------------------- */

static int abort_headers(const char *n, size_t nl, const char *v, size_t vl,
                         void *u) {
  (void)n, (void)nl, (void)v, (void)vl, (void)u;
  return 1;
}
static void aborting_headers(xfer *x) {
  xfer_set_header_cb(x, abort_headers, NULL);
}

/* The header callback's abort is its own, not the write callback's. */
TH_TEST(http, header_callback_aborts) {
  expect_failure("/bytes/10", XFER_E_HEADER_CALLBACK, "header callback",
                 aborting_headers);
}

/* The getters inside the callbacks: the reason phrase and a header are
 * made from the kept head while the parse that kept it is paused (the
 * header callback) or running (the write callback). */
struct asking {
  xfer *x;
  char reason_at_header[32], reason_at_body[32], length_at_body[32];
  size_t body;
};

static int ask_at_header(const char *n, size_t nl, const char *v, size_t vl,
                         void *u) {
  struct asking *a = u;

  (void)n, (void)nl, (void)v, (void)vl;
  if (!a->reason_at_header[0])
    snprintf(a->reason_at_header, sizeof(a->reason_at_header), "%s",
             xfer_get_reason(a->x));
  return 0;
}

static size_t ask_at_body(const char *data, size_t len, void *u) {
  struct asking *a = u;
  const char *length = xfer_get_header(a->x, "Content-Length");

  (void)data;
  if (a->body == 0) {
    snprintf(a->reason_at_body, sizeof(a->reason_at_body), "%s",
             xfer_get_reason(a->x));
    snprintf(a->length_at_body, sizeof(a->length_at_body), "%s",
             length ? length : "(none)");
  }
  a->body += len;
  return len;
}

TH_TEST(http, getters_work_inside_the_callbacks) {
  struct asking with = {0}, without = {0};

  /* With a header callback, and without one (the head then runs on
   * without a pause into the body). */
  with.x = prepare(0, "/bytes/300");
  xfer_set_header_cb(with.x, ask_at_header, &with);
  xfer_set_write_cb(with.x, ask_at_body, &with);
  add(0);
  without.x = prepare(1, "/bytes/300");
  xfer_set_write_cb(without.x, ask_at_body, &without);
  add(1);
  th_run(hm, 5000);
  for (int i = 0; i < 2; i++)
    cr_assert_eq(th_result(hm, hx[i]), XFER_OK, "%s",
                 xfer_get_error_detail(hx[i]));
  cr_assert_str_eq(with.reason_at_header, "OK");
  cr_assert_str_eq(with.reason_at_body, "OK");
  cr_assert_str_eq(with.length_at_body, "300");
  cr_assert_eq(with.body, 300);
  cr_assert_str_eq(without.reason_at_body, "OK");
  cr_assert_str_eq(without.length_at_body, "300");
  cr_assert_eq(without.body, 300);
  cr_assert_str_eq(xfer_get_reason(hx[1]), "OK");
}

/* The largest value of every time option means "no limit", not an
 * overflow (UBSan builds trap on one) nor a transfer that fails at once. */
TH_TEST(http, the_largest_time_options_mean_no_limit) {
  prepare(0, "/bytes/10");
  cr_assert_eq(xfer_set_timeout_ms(hx[0], LONG_MAX), XFER_OK);
  cr_assert_eq(xfer_set_connect_timeout_ms(hx[0], LONG_MAX), XFER_OK);
  cr_assert_eq(xfer_set_low_speed(hx[0], 1, LONG_MAX), XFER_OK);
  add(0);
  th_run(hm, 5000);
  cr_assert_eq(th_result(hm, hx[0]), XFER_OK, "%s",
               xfer_get_error_detail(hx[0]));
  th_expect_pattern(sinks[0].data, sinks[0].len, 10);
}

/* A body the callback gives in `step` bytes a call, `total` in all (then
 * 0), or more than asked for when `flood`. */
struct feed {
  size_t total, step, given;
};

static long feed_read(char *buf, size_t len, void *userp) {
  struct feed *f = userp;
  size_t n = f->total - f->given;

  if (n > f->step)
    n = f->step;
  if (n > len)
    n = len;
  memset(buf, 'b', n);
  f->given += n;
  return (long)n;
}

static xfer *post_fed(int i, struct feed *f, int64_t size) {
  prepare(i, "/echo");
  cr_assert_eq(xfer_set_method(hx[i], "POST"), XFER_OK);
  cr_assert_eq(xfer_set_body_cb(hx[i], feed_read, f, size), XFER_OK);
  add(i);
  th_run(hm, 5000);
  return hx[i];
}

static uint64_t sent(xfer *x) {
  uint64_t n = 0;

  cr_assert_eq(xfer_get_bytes(x, &n, NULL), XFER_OK);
  return n;
}

/* The announced length of a streamed body is the contract, on a reused
 * keep-alive connection: a callback with more never gets a byte past it
 * written (they would be the start of another request: smuggling), and
 * one that ends early does not leave the server waiting for a request
 * that looks complete; both fail with XFER_E_BODY_LENGTH and their
 * connection is closed, never pooled. The server counts every byte. */
TH_TEST(http, a_streamed_body_is_held_to_its_announced_length) {
  struct feed good = {5, 5, 0}, flood = {20, 20, 0}, early = {3, 3, 0};
  xfer_pool_stats before, after;
  struct ts_stats ss;
  uint64_t exact, total;
  xfer *x;

  x = post_fed(0, &good, 5);
  cr_assert_eq(th_result(hm, x), XFER_OK, "%s", xfer_get_error_detail(x));
  exact = sent(x); /* the head and 5 body bytes */
  xfer_pool_get_stats(hm->loop.pool, &before);

  x = post_fed(1, &flood, 5);
  cr_assert_eq(th_result(hm, x), XFER_E_BODY_LENGTH);
  cr_assert(strstr(xfer_get_error_detail(x), "more than the 5 bytes"), "%s",
            xfer_get_error_detail(x));
  cr_assert_eq(xfer_get_reused(x), 1, "on the keep-alive connection");
  /* It gave 6 bytes when asked for at most 6 (one more than was left):
   * that call is refused whole, nothing of it written. */
  cr_assert_eq(sent(x), exact - 5, "not a byte past the 5 announced");

  x = post_fed(2, &early, 5);
  cr_assert_eq(th_result(hm, x), XFER_E_BODY_LENGTH);
  cr_assert(strstr(xfer_get_error_detail(x), "after 3 of the 5"), "%s",
            xfer_get_error_detail(x));
  cr_assert_eq(sent(x), exact - 2);

  xfer_pool_get_stats(hm->loop.pool, &after);
  cr_assert_eq(after.closed_error - before.closed_error, 2,
               "both connections closed");
  cr_assert_eq(after.idle, 0, "neither pooled");
  total = exact + sent(hx[1]) + sent(hx[2]);
  cr_assert(ts_wait(srv, TS_BYTES_IN, (long)total, 5000));
  ts_get_stats(srv, &ss);
  cr_assert_eq(ss.bytes_in, (long)total, "the server got what we sent");
  cr_assert_eq(ss.requests, 1, "the good one; no smuggled second");
  cr_assert_eq(ss.closed_by_server, 0, "no garbage it had to refuse");
  /* Chunked (size -1) takes what the callback gives. */
  x = post_fed(3, &(struct feed){20, 7, 0}, -1);
  cr_assert_eq(th_result(hm, x), XFER_OK, "%s", xfer_get_error_detail(x));
}

/* A transfer in slot i that uploads f's body (its whole length
 * announced) with `method` to path; not added yet. */
static xfer *prepare_upload(int i, const char *path, const char *method,
                            struct feed *f) {
  xfer *x = prepare(i, path);

  cr_assert_eq(xfer_set_method(x, method), XFER_OK);
  cr_assert_eq(xfer_set_body_cb(x, feed_read, f, (int64_t)f->total), XFER_OK);
  return x;
}

/*
 * A server may answer before it has read the whole request (a 413, a
 * 401) and stop reading. The upload here is far more than the socket
 * buffers and the server's 1 MiB of input hold, so the send blocks: the
 * transfer hears the answer, stops sending, and ends with it, on a reused
 * connection too (an answer is not a dead connection to retry). The
 * connection, its request cut short, is closed, not pooled.
 */
TH_TEST(http, an_answer_before_the_request_ends_is_heard) {
  struct feed big = {64u << 20, 16384, 0};
  xfer_pool_stats ps;
  struct ts_stats ss;
  xfer *x;

  get(0, "/bytes/10"); /* a keep-alive connection to reuse */
  th_run(hm, 5000);
  cr_assert_eq(th_result(hm, hx[0]), XFER_OK);
  x = prepare_upload(1, "/early/413", "PUT", &big);
  add(1);
  th_run(hm, 10000);
  cr_assert_eq(th_result(hm, x), XFER_OK, "%s", xfer_get_error_detail(x));
  cr_assert_eq(xfer_get_status(x), 413);
  cr_assert_eq(xfer_get_reused(x), 1);
  cr_assert_lt(sent(x), big.total, "the upload stopped at the answer");
  xfer_pool_get_stats(hm->loop.pool, &ps);
  cr_assert_eq(ps.idle, 0, "a connection with half a request is not kept");
  ts_get_stats(srv, &ss);
  cr_assert_eq(ss.accepted, 1);
  /* The next request takes a connection of its own. */
  get(2, "/bytes/10");
  th_run(hm, 5000);
  cr_assert_eq(th_result(hm, hx[2]), XFER_OK);
  cr_assert_eq(xfer_get_reused(hx[2]), 0);
}

/* A server that answers early and then drains what comes (as nginx does
 * with a body it refused): no send ever waits, and the answer was read
 * only after the whole body went out. A run now sends a few times, then
 * looks for an answer: the upload stops at the 413. */
TH_TEST(http, an_early_answer_from_a_server_that_drains_is_heard) {
  struct feed big = {64u << 20, 16384, 0};
  xfer *x;

  x = prepare_upload(0, "/early/413?drain", "PUT", &big);
  add(0);
  th_run(hm, 10000);
  cr_assert_eq(th_result(hm, x), XFER_OK, "%s", xfer_get_error_detail(x));
  cr_assert_eq(xfer_get_status(x), 413);
  /* Within what the socket buffers hold and a run's sends, not at the
   * end (64 MiB). */
  cr_assert_lt(big.given, 16u << 20, "the upload stopped at the answer "
               "only after %zu bytes", big.given);
}

/* An upload that never waits for its socket (a server that reads as fast
 * as the callback gives) goes out a few sends a run, not whole in one:
 * the multi's other transfers and this one's deadlines get their turns.
 * Counted as the callback's calls within one xfer_multi_perform(). */
static long calls_now;

static long counted_read(char *buf, size_t len, void *userp) {
  calls_now++;
  return feed_read(buf, len, userp);
}

TH_TEST(http, an_upload_gives_the_others_their_turn) {
  /* Through the pieces filter (sends of a few bytes) a smaller body: the
   * bound per run holds all the same. */
  static struct feed big = {32u << 20, 16384, 0};
  long most = 0;
  int running = 1;

  if (xfer__cf_test_hook)
    big.total = 64 * 1024;

  prepare(0, "/bytes/1");
  cr_assert_eq(xfer_set_method(hx[0], "POST"), XFER_OK);
  cr_assert_eq(xfer_set_body_cb(hx[0], counted_read, &big, -1), XFER_OK);
  add(0);
  for (int i = 0; i < 100000 && running; i++) {
    calls_now = 0;
    cr_assert_eq(xfer_multi_perform(hm, &running), XFER_M_OK);
    if (calls_now > most)
      most = calls_now;
    if (running)
      cr_assert_eq(xfer_multi_poll(hm, 1000, NULL), XFER_M_OK);
  }
  cr_assert_eq(running, 0);
  cr_assert_eq(th_result(hm, hx[0]), XFER_OK, "%s",
               xfer_get_error_detail(hx[0]));
  cr_assert_eq(big.given, big.total);
  cr_assert_leq(most, 20, "%ld calls of the body callback in one perform",
                most);
}

/* The same answer, then the server closes at once: its reset makes the
 * send fail, and the answer that came before it is what the transfer
 * gets (a buffer body, sent from the same iovecs as the head). */
TH_TEST(http, an_answer_before_a_reset_is_heard) {
  size_t len = 32u << 20;
  char *body = malloc(len);
  xfer *x;

  cr_assert_not_null(body);
  memset(body, 'b', len);
  x = prepare(0, "/early/401?close");
  cr_assert_eq(xfer_set_method(x, "POST"), XFER_OK);
  cr_assert_eq(xfer_set_body(x, body, len), XFER_OK);
  add(0);
  th_run(hm, 10000);
  cr_assert_eq(th_result(hm, x), XFER_OK, "%s", xfer_get_error_detail(x));
  cr_assert_eq(xfer_get_status(x), 401);
  cr_assert_lt(sent(x), len);
  free(body);
}

/* A server that closes mid-request without answering still fails the
 * send, with the send's words. */
TH_TEST(http, a_close_without_an_answer_fails_the_send) {
  struct feed big = {64u << 20, 16384, 0};
  xfer *x = prepare_upload(0, "/close-at-head", "POST", &big);

  add(0);
  th_run(hm, 10000);
  cr_assert_eq(th_result(hm, x), XFER_E_SEND, "%s", xfer_get_error_detail(x));
  cr_assert(strstr(xfer_get_error_detail(x), "sending the request failed"),
            "%s", xfer_get_error_detail(x));
}

/* What does not refuse the request leaves it going: a 2xx head that comes
 * first (the server answers as it reads, and sends the body once it has
 * read everything), after an interim 100 Continue or alone. The server
 * reads nothing for 200 ms after the head, so the upload waits with the
 * head to read. Every byte is sent, and the connection is kept. (Through
 * the pieces filter, which sends a few bytes a call and refuses 1 send in
 * 4, a smaller body waits as often.) */
TH_TEST(http, an_early_head_or_interim_answer_lets_the_request_finish) {
  size_t size = xfer__cf_test_hook ? 256u << 10 : 32u << 20;
  struct feed a = {size, 16384, 0}, b = {size, 16384, 0};
  xfer_pool_stats ps;
  xfer *x;

  x = prepare_upload(0, "/early-head/100", "POST", &a);
  add(0);
  th_run(hm, 10000);
  cr_assert_eq(th_result(hm, x), XFER_OK, "%s", xfer_get_error_detail(x));
  cr_assert_eq(xfer_get_status(x), 200);
  th_expect_pattern(sinks[0].data, sinks[0].len, 100);
  cr_assert_eq(a.given, a.total, "the whole body was sent");
  cr_assert_gt(sent(x), a.total);

  x = prepare_upload(1, "/early-head/10", "POST", &b);
  cr_assert_eq(xfer_add_header(x, "Expect", "100-continue"), XFER_OK);
  add(1);
  th_run(hm, 10000);
  cr_assert_eq(th_result(hm, x), XFER_OK, "%s", xfer_get_error_detail(x));
  cr_assert_eq(xfer_get_status(x), 200);
  th_expect_pattern(sinks[1].data, sinks[1].len, 10);
  cr_assert_eq(b.given, b.total);
  cr_assert_eq(xfer_get_reused(x), 1, "the first connection was kept");
  cr_assert_gt(sent(x), b.total);
  xfer_pool_get_stats(hm->loop.pool, &ps);
  cr_assert_eq(ps.idle, 1, "and this one is kept too");
}

TH_TEST(http, a_body_callback_is_required_with_a_size) {
  prepare(0, "/echo");
  cr_assert_eq(xfer_set_body_cb(hx[0], NULL, NULL, 5), XFER_E_BAD_ARGUMENT);
  cr_assert(strstr(xfer_get_error_detail(hx[0]), "no read callback"));
  cr_assert_eq(xfer_set_body_cb(hx[0], NULL, NULL, -1), XFER_E_BAD_ARGUMENT);
}

/* A Content-Length or Transfer-Encoding of the application's must say
 * what the transfer sends: a request framed two ways is refused when the
 * transfer starts, with the reason. One that agrees is sent once. */
static void framing(int i, const char *name, const char *value,
                    const char *body, int64_t size, xfer_code want,
                    const char *words) {
  static struct feed f;

  prepare(i, "/echo");
  cr_assert_eq(xfer_set_method(hx[i], "POST"), XFER_OK);
  if (body)
    cr_assert_eq(xfer_set_body(hx[i], body, strlen(body)), XFER_OK);
  else if (size != -3) {
    f = (struct feed){size < 0 ? 10 : (size_t)size, 10, 0};
    cr_assert_eq(xfer_set_body_cb(hx[i], feed_read, &f, size), XFER_OK);
  }
  cr_assert_eq(xfer_add_header(hx[i], name, value), XFER_OK,
               "checked when the transfer starts, not when set");
  add(i);
  th_run(hm, 5000);
  cr_assert_eq(th_result(hm, hx[i]), want, "%s: %s: %s", name, value,
               xfer_get_error_detail(hx[i]));
  if (words)
    cr_assert(strstr(xfer_get_error_detail(hx[i]), words), "%s",
              xfer_get_error_detail(hx[i]));
}

TH_TEST(http, framing_headers_must_agree_with_the_body) {
  framing(0, "Content-Length", "abc", "hello", 0, XFER_E_BAD_ARGUMENT,
          "does not say the 5 bytes");
  framing(1, "Content-Length", "6", "hello", 0, XFER_E_BAD_ARGUMENT,
          "does not say the 5 bytes");
  framing(2, "Transfer-Encoding", "gzip", "hello", 0, XFER_E_BAD_ARGUMENT,
          "only \"chunked\"");
  framing(3, "Transfer-Encoding", "chunked", "hello", 0, XFER_E_BAD_ARGUMENT,
          "size -1");
  framing(4, "Content-Length", "10", NULL, -1, XFER_E_BAD_ARGUMENT,
          "unknown length");
  framing(5, "Content-Length", " 5 ", "hello", 0, XFER_OK, NULL);
  cr_assert(strstr(sinks[5].data, "Content-Length: 5\n"));
  cr_assert_null(strstr(strstr(sinks[5].data, "Content-Length") + 1,
                        "Content-Length"),
                "sent once");
  framing(6, "Transfer-Encoding", "chunked", NULL, -1, XFER_OK, NULL);
  framing(7, "Content-Length", "0", NULL, -3, XFER_OK, NULL);
  /* A POST without a body still says its length: the user's line stays
   * when the library has none of its own to send. */
  cr_assert(strstr(sinks[7].data, "Content-Length: 0\n"), "%s",
            sinks[7].data);
}

/* One Host and one Content-Length at most: both lines went out, and a
 * server must refuse two Hosts (RFC 9112 3.2), or frames the request two
 * ways. Refused when the transfer starts, before anything is sent. */
TH_TEST(http, two_hosts_or_two_lengths_are_refused) {
  struct ts_stats st;

  prepare(0, "/echo");
  cr_assert_eq(xfer_add_header(hx[0], "Host", "a.test"), XFER_OK);
  cr_assert_eq(xfer_add_header(hx[0], "host", "b.test"), XFER_OK);
  add(0);
  prepare(1, "/echo");
  cr_assert_eq(xfer_set_method(hx[1], "POST"), XFER_OK);
  cr_assert_eq(xfer_add_header(hx[1], "Content-Length", "0"), XFER_OK);
  cr_assert_eq(xfer_add_header(hx[1], "Content-Length", "0"), XFER_OK);
  add(1);
  prepare(2, "/echo"); /* one Host of its own: sent instead of ours */
  cr_assert_eq(xfer_add_header(hx[2], "Host", "a.test"), XFER_OK);
  add(2);
  th_run(hm, 5000);
  cr_assert_eq(th_result(hm, hx[0]), XFER_E_BAD_ARGUMENT);
  cr_assert(strstr(xfer_get_error_detail(hx[0]), "more than one Host"), "%s",
            xfer_get_error_detail(hx[0]));
  cr_assert_eq(th_result(hm, hx[1]), XFER_E_BAD_ARGUMENT);
  cr_assert(strstr(xfer_get_error_detail(hx[1]),
                   "more than one Content-Length"),
            "%s", xfer_get_error_detail(hx[1]));
  cr_assert_eq(th_result(hm, hx[2]), XFER_OK, "%s",
               xfer_get_error_detail(hx[2]));
  cr_assert(strstr(sinks[2].data, "Host: a.test\n"), "%s", sinks[2].data);
  ts_get_stats(srv, &st);
  cr_assert_eq(st.requests, 1, "only the third was sent");
}

/* The pool key and the request head are built once per change of
 * options and kept between runs of the same handle; every setter makes
 * them stale. A handle re-added as it is sends the same request; one
 * changed between runs sends the changed one, to the changed place. */
TH_TEST(http, request_follows_every_change_of_options_between_runs) {
  struct ts_server *other = ts_start(NULL);
  struct ts_stats st;

  prepare(0, "/echo");
  cr_assert_eq(xfer_add_header(hx[0], "X-One", "1"), XFER_OK);
  for (int run = 0; run < 6; run++) {
    sinks[run].len = 0;
    cr_assert_eq(xfer_set_write_cb(hx[0], th_sink_cb, &sinks[run]), XFER_OK);
    switch (run) {
    case 2:
      cr_assert_eq(xfer_add_header(hx[0], "X-Two", "2"), XFER_OK);
      break;
    case 3:
      cr_assert_eq(xfer_set_method(hx[0], "PUT"), XFER_OK);
      cr_assert_eq(xfer_set_body(hx[0], "abc", 3), XFER_OK);
      break;
    case 4:
      cr_assert_eq(xfer_set_url(hx[0], th_url(ts_port(other), "/echo?q=4")),
                   XFER_OK);
      break;
    case 5:
      cr_assert_eq(xfer_set_url(hx[0], th_url(port, "/redirect/302?to=/echo")),
                   XFER_OK);
      cr_assert_eq(xfer_set_follow_redirects(hx[0], 1), XFER_OK);
      cr_assert_eq(xfer_set_method(hx[0], "GET"), XFER_OK);
      cr_assert_eq(xfer_set_body(hx[0], NULL, 0), XFER_OK);
      break;
    }
    add(0);
    th_run(hm, 5000);
    cr_assert_eq(th_result(hm, hx[0]), XFER_OK, "run %d: %s", run,
                 xfer_get_error_detail(hx[0]));
    cr_assert_eq(xfer_multi_remove(hm, hx[0]), XFER_M_OK);
    th_sink_cb("", 1, &sinks[run]); /* a NUL, for strstr */
  }
  cr_assert(strstr(sinks[0].data, "GET /echo\n"), "%s", sinks[0].data);
  cr_assert(strstr(sinks[0].data, "X-One: 1\n"), "%s", sinks[0].data);
  cr_assert_str_eq(sinks[1].data, sinks[0].data, "the same request again");
  cr_assert(strstr(sinks[2].data, "X-Two: 2\n"), "%s", sinks[2].data);
  cr_assert(strstr(sinks[3].data, "PUT /echo\n"), "%s", sinks[3].data);
  cr_assert(strstr(sinks[3].data, "Content-Length: 3\n"), "%s",
            sinks[3].data);
  cr_assert(strstr(sinks[4].data, "PUT /echo?q=4\n"), "%s", sinks[4].data);
  ts_get_stats(other, &st);
  cr_assert_eq(st.requests, 1, "the changed URL's server got run 4");
  cr_assert(strstr(sinks[5].data, "GET /echo\n"), "after the hop: %s",
            sinks[5].data);
  /* Run 5's hop built its own head; the handle's own comes back. */
  cr_assert_eq(xfer_set_url(hx[0], th_url(port, "/echo")), XFER_OK);
  sinks[6].len = 0;
  cr_assert_eq(xfer_set_write_cb(hx[0], th_sink_cb, &sinks[6]), XFER_OK);
  add(0);
  th_run(hm, 5000);
  cr_assert_eq(th_result(hm, hx[0]), XFER_OK);
  th_sink_cb("", 1, &sinks[6]);
  cr_assert(strstr(sinks[6].data, "GET /echo\n"), "%s", sinks[6].data);
  cr_assert(strstr(sinks[6].data, "X-Two: 2\n"), "%s", sinks[6].data);
  ts_stop(other);
}

/* What each body option puts on the wire: an empty buffer says
 * Content-Length: 0; a NULL one removes the body (no length at all); a
 * buffer replaces a body callback and a callback a buffer; a streamed
 * body of unknown size goes chunked, the line once. */
TH_TEST(http, body_options_on_the_wire) {
  static struct feed f = {3, 3, 0}, unused = {3, 3, 0};

  prepare(0, "/echo");
  cr_assert_eq(xfer_set_method(hx[0], "PUT"), XFER_OK);
  cr_assert_eq(xfer_set_body(hx[0], "", 0), XFER_OK);
  add(0);
  prepare(1, "/echo");
  cr_assert_eq(xfer_set_method(hx[1], "PUT"), XFER_OK);
  cr_assert_eq(xfer_set_body(hx[1], "gone", 4), XFER_OK);
  cr_assert_eq(xfer_set_body(hx[1], NULL, 0), XFER_OK);
  add(1);
  prepare(2, "/echo");
  cr_assert_eq(xfer_set_method(hx[2], "POST"), XFER_OK);
  cr_assert_eq(xfer_set_body_cb(hx[2], feed_read, &unused, 3), XFER_OK);
  cr_assert_eq(xfer_set_body(hx[2], "buffer", 6), XFER_OK);
  add(2);
  prepare(3, "/echo");
  cr_assert_eq(xfer_set_method(hx[3], "POST"), XFER_OK);
  cr_assert_eq(xfer_set_body(hx[3], "buffer", 6), XFER_OK);
  cr_assert_eq(xfer_set_body_cb(hx[3], feed_read, &f, -1), XFER_OK);
  add(3);
  th_run(hm, 5000);
  for (int i = 0; i < 4; i++)
    cr_assert_eq(th_result(hm, hx[i]), XFER_OK, "%d: %s", i,
                 xfer_get_error_detail(hx[i]));
  cr_assert(strstr(sinks[0].data, "PUT /echo\n"), "%s", sinks[0].data);
  cr_assert(strstr(sinks[0].data, "Content-Length: 0\n"), "%s", sinks[0].data);
  cr_assert_null(strstr(sinks[1].data, "Content-Length"), "%s", sinks[1].data);
  cr_assert_null(strstr(sinks[1].data, "Transfer-Encoding"), "%s",
                 sinks[1].data);
  cr_assert(strstr(sinks[2].data, "Content-Length: 6\n"), "%s", sinks[2].data);
  cr_assert_eq(memcmp(sinks[2].data + sinks[2].len - 6, "buffer", 6), 0);
  cr_assert_eq(unused.given, 0, "the callback was replaced");
  cr_assert(strstr(sinks[3].data, "Transfer-Encoding: chunked\n"), "%s",
            sinks[3].data);
  cr_assert_null(strstr(strstr(sinks[3].data, "Transfer-Encoding") + 1,
                        "Transfer-Encoding"),
                 "sent once");
  cr_assert_null(strstr(sinks[3].data, "Content-Length"), "%s",
                 sinks[3].data);
  cr_assert_eq(memcmp(sinks[3].data + sinks[3].len - 3, "bbb", 3), 0);
}

/* Which redirects change the method (RFC 9110 15.4, as curl and browsers
 * do): 301 and 302 turn a POST into a GET and keep a PUT with its body;
 * 303 turns anything but HEAD into a GET; 308 keeps a POST and its body.
 * A streamed body that a hop would send again cannot be followed: its
 * own error, whatever the status that keeps it. */
TH_TEST(http, which_redirects_change_the_method) {
  static struct feed f1 = {3, 3, 0}, f2 = {3, 3, 0};

  prepare(0, "/redirect/301?to=/echo");
  cr_assert_eq(xfer_set_method(hx[0], "POST"), XFER_OK);
  cr_assert_eq(xfer_set_body(hx[0], "data", 4), XFER_OK);
  prepare(1, "/redirect/302?to=/echo");
  cr_assert_eq(xfer_set_method(hx[1], "PUT"), XFER_OK);
  cr_assert_eq(xfer_set_body(hx[1], "kept", 4), XFER_OK);
  prepare(2, "/redirect/303?to=/echo");
  cr_assert_eq(xfer_set_method(hx[2], "HEAD"), XFER_OK);
  prepare(3, "/redirect/308?to=/echo");
  cr_assert_eq(xfer_set_method(hx[3], "POST"), XFER_OK);
  cr_assert_eq(xfer_set_body(hx[3], "kept", 4), XFER_OK);
  prepare(4, "/redirect/308?to=/echo"); /* a streamed body goes again */
  cr_assert_eq(xfer_set_method(hx[4], "POST"), XFER_OK);
  cr_assert_eq(xfer_set_body_cb(hx[4], feed_read, &f1, 3), XFER_OK);
  prepare(5, "/redirect/302?to=/echo"); /* PUT keeps it: again */
  cr_assert_eq(xfer_set_method(hx[5], "PUT"), XFER_OK);
  cr_assert_eq(xfer_set_body_cb(hx[5], feed_read, &f2, 3), XFER_OK);
  for (int i = 0; i < 6; i++) {
    cr_assert_eq(xfer_set_follow_redirects(hx[i], 3), XFER_OK);
    add(i);
  }
  th_run(hm, 5000);
  for (int i = 0; i < 4; i++)
    cr_assert_eq(th_result(hm, hx[i]), XFER_OK, "%d: %s", i,
                 xfer_get_error_detail(hx[i]));
  cr_assert(strstr(sinks[0].data, "GET /echo\n"), "%s", sinks[0].data);
  cr_assert(strstr(sinks[1].data, "PUT /echo\n"), "%s", sinks[1].data);
  cr_assert_eq(memcmp(sinks[1].data + sinks[1].len - 4, "kept", 4), 0);
  cr_assert_eq(xfer_get_status(hx[2]), 200);
  cr_assert_eq(sinks[2].len, 0, "HEAD stays HEAD: no body");
  cr_assert_eq(xfer_get_redirects(hx[2]), 1);
  cr_assert(strstr(sinks[3].data, "POST /echo\n"), "%s", sinks[3].data);
  cr_assert_eq(memcmp(sinks[3].data + sinks[3].len - 4, "kept", 4), 0);
  cr_assert_eq(th_result(hm, hx[4]), XFER_E_CANNOT_RESEND, "%s",
               xfer_get_error_detail(hx[4]));
  cr_assert_eq(th_result(hm, hx[5]), XFER_E_CANNOT_RESEND, "%s",
               xfer_get_error_detail(hx[5]));
}
