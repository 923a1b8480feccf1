/*
 * The public API against a careless user: every function with NULL and
 * with a handle of each wrong type, out-of-range and contradictory
 * values, calls from inside each callback, a transfer added twice or
 * removed twice, handles destroyed in the wrong order, freed handles.
 * Each case expects its exact code (and, where a transfer can hold one, a
 * detail saying why).
 *
 * Table-driven; each case runs in a child process of its own, so a crash
 * is a failure that names the call instead of ending the run. Children
 * leave with _exit() and tear no pool down: liburcu's call_rcu thread does
 * not exist in a forked child, where rcu_barrier() would wait forever.
 * Cases on freed handles are skipped in sanitizer builds, where reading
 * freed memory is itself the report (brief rule 7).
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testhelp.h"
#include "testserver.h"

/* What every case may use, made in its child. */
struct fix {
  xfer *x;             /* a transfer, not added */
  xfer_multi *m;       /* a multi with its private pool */
  xfer_pool *p;        /* a pool nobody uses */
  xfer *freed;         /* a transfer freed (its magic poisoned) */
  struct ts_server *srv;
};

static int failures_seen;

/* The call a case is making, in a page the child shares with the parent
 * (a string literal of the test program: the same address in both), so
 * that a crash names the call, not only its case. */
static const char *volatile *current_call;

#define FAIL_IF(cond, ...)                                                    \
  do {                                                                         \
    if (cond) {                                                                \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
      return 1;                                                                \
    }                                                                          \
  } while (0)

/* The call returns `want`. */
#define EXPECT(call, want)                                                    \
  do {                                                                         \
    *current_call = #call;                                                     \
    long got_ = (long)(call), want_ = (long)(want);                           \
    FAIL_IF(got_ != want_, "%s: got %ld, want %ld", #call, got_, want_);       \
  } while (0)

/* A transfer code whose text says what went wrong. */
#define EXPECT_CODE(call, want)                                               \
  do {                                                                         \
    EXPECT(call, want);                                                        \
    FAIL_IF(strstr(xfer_strerror(want), "unknown"), "%s: no text", #call);    \
  } while (0)

/* ... and the transfer says why in its detail. A running transfer's detail
 * belongs to its result, so a call refused while it runs (XFER_E_IN_USE)
 * says why only through its code's text. */
#define EXPECT_WHY(x, call, want)                                             \
  do {                                                                         \
    EXPECT(call, want);                                                        \
    FAIL_IF(!*xfer_get_error_detail(x), "%s: no detail", #call);               \
  } while (0)

#define CASE(name) static int name(struct fix *f)

static long some_read(char *b, size_t n, void *u) {
  (void)b, (void)n, (void)u;
  return 0;
}
static size_t some_write(const char *d, size_t n, void *u) {
  (void)d, (void)u;
  return n;
}
static int some_header(const char *n, size_t nl, const char *v, size_t vl,
                       void *u) {
  (void)n, (void)nl, (void)v, (void)vl, (void)u;
  return 0;
}

/* --- NULL and handles of the wrong type ----------------------------------- */

/* Every transfer function with `bad` as its transfer. */
static int transfer_functions_refuse(xfer *bad) {
  xfer_timeline tl;
  const char *n, *v;
  uint64_t a, b;

  EXPECT(xfer_set_private(bad, NULL), XFER_E_BAD_HANDLE);
  EXPECT(xfer_get_private(bad), 0);
  EXPECT(xfer_get_timeline(bad, &tl), XFER_E_BAD_HANDLE);
  FAIL_IF(strcmp(xfer_get_error_detail(bad), "") != 0, "detail of a bad one");
  EXPECT(xfer_set_url(bad, "http://127.0.0.1/"), XFER_E_BAD_HANDLE);
  EXPECT(xfer_set_method(bad, "GET"), XFER_E_BAD_HANDLE);
  EXPECT(xfer_add_header(bad, "A", "b"), XFER_E_BAD_HANDLE);
  EXPECT(xfer_clear_headers(bad), XFER_E_BAD_HANDLE);
  EXPECT(xfer_reset(bad), XFER_E_BAD_HANDLE);
  EXPECT(xfer_set_body(bad, "x", 1), XFER_E_BAD_HANDLE);
  EXPECT(xfer_set_body_cb(bad, some_read, NULL, 1), XFER_E_BAD_HANDLE);
  EXPECT(xfer_set_write_cb(bad, some_write, NULL), XFER_E_BAD_HANDLE);
  EXPECT(xfer_set_header_cb(bad, some_header, NULL), XFER_E_BAD_HANDLE);
  EXPECT(xfer_set_ip_version(bad, 0), XFER_E_BAD_HANDLE);
  EXPECT(xfer_set_local_address(bad, "127.0.0.1"), XFER_E_BAD_HANDLE);
  EXPECT(xfer_set_connect_timeout_ms(bad, 1), XFER_E_BAD_HANDLE);
  EXPECT(xfer_set_timeout_ms(bad, 1), XFER_E_BAD_HANDLE);
  EXPECT(xfer_set_low_speed(bad, 1, 1), XFER_E_BAD_HANDLE);
  EXPECT(xfer_set_max_header_size(bad, 100), XFER_E_BAD_HANDLE);
  EXPECT(xfer_set_follow_redirects(bad, 1), XFER_E_BAD_HANDLE);
  EXPECT(xfer_get_status(bad), 0);
  FAIL_IF(strcmp(xfer_get_reason(bad), "") != 0, "reason of a bad one");
  EXPECT(xfer_get_header(bad, "A"), 0);
  EXPECT(xfer_get_header_count(bad), 0);
  EXPECT(xfer_get_header_at(bad, 0, &n, &v), XFER_E_BAD_HANDLE);
  EXPECT(xfer_get_bytes(bad, &a, &b), XFER_E_BAD_HANDLE);
  EXPECT(xfer_get_conn_id(bad), 0);
  EXPECT(xfer_get_reused(bad), 0);
  EXPECT(xfer_get_redirects(bad), 0);
  EXPECT(xfer_get_result(bad), XFER_E_BAD_HANDLE);
  return 0;
}

/* Every multi function with `bad` as its multi. */
static int multi_functions_refuse(xfer_multi *bad, xfer *x) {
  xfer_multi_stats st;
  int n;

  EXPECT(xfer_multi_set_dns_servers(bad, "127.0.0.1"), XFER_M_BAD_HANDLE);
  EXPECT(xfer_multi_set_dns_timeout(bad, 100, 1), XFER_M_BAD_HANDLE);
  EXPECT(xfer_multi_set_socket_cb(bad, NULL, NULL), XFER_M_BAD_HANDLE);
  EXPECT(xfer_multi_set_timer_cb(bad, NULL, NULL), XFER_M_BAD_HANDLE);
  EXPECT(xfer_multi_assign(bad, 3, NULL), XFER_M_BAD_HANDLE);
  EXPECT(xfer_multi_socket_action(bad, 3, 0, &n), XFER_M_BAD_HANDLE);
  EXPECT(xfer_multi_socket_timeout(bad, &n), XFER_M_BAD_HANDLE);
  EXPECT(xfer_multi_perform(bad, &n), XFER_M_BAD_HANDLE);
  EXPECT(xfer_multi_poll(bad, 0, &n), XFER_M_BAD_HANDLE);
  EXPECT(xfer_multi_add(bad, x), XFER_M_BAD_HANDLE);
  EXPECT(xfer_multi_remove(bad, x), XFER_M_BAD_HANDLE);
  EXPECT(xfer_multi_info_read(bad, &n), 0);
  EXPECT(xfer_multi_get_stats(bad, &st), XFER_M_BAD_HANDLE);
  EXPECT(xfer_multi_destroy(bad), bad ? XFER_M_BAD_HANDLE : XFER_M_OK);
  return 0;
}

static int pool_functions_refuse(xfer_pool *bad) {
  xfer_pool_stats st;

  EXPECT(xfer_pool_get_stats(bad, &st), XFER_E_BAD_HANDLE);
  if (bad) /* NULL asks for a private pool */
    EXPECT(xfer_multi_new(bad), 0);
  EXPECT(xfer_pool_destroy(bad), bad ? XFER_E_BAD_HANDLE : XFER_OK);
  return 0;
}

CASE(transfer_functions_refuse_null) { return transfer_functions_refuse(NULL); }
CASE(transfer_functions_refuse_a_multi) {
  return transfer_functions_refuse((xfer *)f->m);
}
CASE(transfer_functions_refuse_a_pool) {
  return transfer_functions_refuse((xfer *)f->p);
}
CASE(transfer_functions_refuse_a_freed_transfer) {
  return transfer_functions_refuse(f->freed);
}
CASE(multi_functions_refuse_null) { return multi_functions_refuse(NULL, f->x); }
CASE(multi_functions_refuse_a_transfer) {
  return multi_functions_refuse((xfer_multi *)f->x, f->x);
}
CASE(multi_functions_refuse_a_pool) {
  return multi_functions_refuse((xfer_multi *)f->p, f->x);
}
CASE(pool_functions_refuse_null) { return pool_functions_refuse(NULL); }
CASE(pool_functions_refuse_a_transfer) {
  return pool_functions_refuse((xfer_pool *)f->x);
}
CASE(pool_functions_refuse_a_multi) {
  return pool_functions_refuse((xfer_pool *)f->m);
}
CASE(free_refuses_what_is_not_a_transfer) {
  EXPECT(xfer_free(NULL), XFER_OK);
  EXPECT(xfer_free((xfer *)f->m), XFER_E_BAD_HANDLE);
  EXPECT(xfer_free((xfer *)f->p), XFER_E_BAD_HANDLE);
  return 0;
}
CASE(add_and_remove_refuse_what_is_not_a_transfer) {
  EXPECT(xfer_multi_add(f->m, NULL), XFER_M_BAD_XFER_HANDLE);
  EXPECT(xfer_multi_add(f->m, (xfer *)f->m), XFER_M_BAD_XFER_HANDLE);
  EXPECT(xfer_multi_add(f->m, (xfer *)f->p), XFER_M_BAD_XFER_HANDLE);
  EXPECT(xfer_multi_remove(f->m, NULL), XFER_M_BAD_XFER_HANDLE);
  EXPECT(xfer_multi_remove(f->m, (xfer *)f->p), XFER_M_BAD_XFER_HANDLE);
  return 0;
}

/* --- values out of range, or contradictory ---------------------------------- */

CASE(setters_refuse_values_out_of_range) {
  xfer *x = f->x;

  EXPECT_WHY(x, xfer_set_ip_version(x, 5), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_set_timeout_ms(x, -1), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_set_connect_timeout_ms(x, LONG_MIN), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_set_low_speed(x, 1, 0), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_set_low_speed(x, -1, 10), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_set_low_speed(x, 0, -5), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_set_max_header_size(x, 10), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_set_follow_redirects(x, -1), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_set_body(x, NULL, 5), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_set_body_cb(x, NULL, NULL, 5), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_set_body_cb(x, some_read, NULL, -2), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_set_method(x, ""), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_set_method(x, NULL), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_set_method(x, "GET /"), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_set_local_address(x, "localhost"), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_add_header(x, NULL, "v"), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_add_header(x, "A", NULL), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_add_header(x, "A B", "v"), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_add_header(x, "A", "v\r\nB: c"), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_add_header(x, "A", "\x01"), XFER_E_BAD_ARGUMENT);
  EXPECT_WHY(x, xfer_add_header(x, "A", "\x7f"), XFER_E_BAD_ARGUMENT);
  return 0;
}

CASE(urls_that_cannot_work_are_refused) {
  xfer *x = f->x;

  EXPECT_WHY(x, xfer_set_url(x, NULL), XFER_E_BAD_URL);
  EXPECT_WHY(x, xfer_set_url(x, ""), XFER_E_BAD_URL);
  EXPECT_WHY(x, xfer_set_url(x, "ftp://h/"), XFER_E_UNSUPPORTED_SCHEME);
  EXPECT_WHY(x, xfer_set_url(x, "http://[v1.x]/"), XFER_E_BAD_URL);
  EXPECT_WHY(x, xfer_set_url(x, "http://h:0/"), XFER_E_BAD_URL);
  EXPECT_WHY(x, xfer_set_url(x, "http://u:p@h/"), XFER_E_BAD_URL);
  return 0;
}

CASE(getters_refuse_bad_arguments) {
  xfer_timeline *none = NULL;
  const char *n;
  xfer_pool_stats *no_stats = NULL;
  xfer_multi_stats *no_mstats = NULL;

  EXPECT(xfer_get_timeline(f->x, none), XFER_E_BAD_ARGUMENT);
  EXPECT(xfer_get_header_at(f->x, 99, &n, &n), XFER_E_BAD_ARGUMENT);
  EXPECT(xfer_get_header(f->x, NULL), 0);
  EXPECT(xfer_pool_get_stats(f->p, no_stats), XFER_E_BAD_ARGUMENT);
  EXPECT(xfer_multi_get_stats(f->m, no_mstats), XFER_M_BAD_ARGUMENT);
  return 0;
}

CASE(multi_calls_refuse_bad_arguments) {
  EXPECT(xfer_multi_poll(f->m, -1, NULL), XFER_M_BAD_ARGUMENT);
  EXPECT(xfer_multi_set_dns_timeout(f->m, 0, 1), XFER_M_BAD_ARGUMENT);
  EXPECT(xfer_multi_set_dns_timeout(f->m, 100, 0), XFER_M_BAD_ARGUMENT);
  EXPECT(xfer_multi_set_dns_timeout(f->m, LONG_MAX, 1), XFER_M_BAD_ARGUMENT);
  EXPECT(xfer_multi_set_dns_servers(f->m, "name.example"),
         XFER_M_BAD_ARGUMENT);
  EXPECT(xfer_multi_assign(f->m, 12345, NULL), XFER_M_BAD_ARGUMENT);
  return 0;
}

CASE(mem_hooks_refuse_missing_functions_and_live_handles) {
  xfer_mem partial = th_mem;

  partial.free = NULL;
  EXPECT(xfer_mem_set(&partial), XFER_E_BAD_ARGUMENT);
  EXPECT(xfer_mem_set(&th_mem), XFER_E_IN_USE); /* f's handles are alive */
  return 0;
}

/* A Content-Length that does not say the body, refused at the start. */
CASE(framing_that_contradicts_the_body_is_refused_at_start) {
  int running = 1;
  const xfer_msg *msg;

  EXPECT(xfer_set_url(f->x, th_url(ts_port(f->srv), "/echo")), XFER_OK);
  EXPECT(xfer_set_body(f->x, "abc", 3), XFER_OK);
  EXPECT(xfer_add_header(f->x, "Content-Length", "4"), XFER_OK);
  EXPECT(xfer_multi_add(f->m, f->x), XFER_M_OK);
  for (int i = 0; i < 100 && running; i++)
    EXPECT(xfer_multi_perform(f->m, &running), XFER_M_OK);
  msg = xfer_multi_info_read(f->m, NULL);
  FAIL_IF(!msg, "no message");
  EXPECT(msg->result, XFER_E_BAD_ARGUMENT);
  EXPECT(xfer_get_result(f->x), XFER_E_BAD_ARGUMENT);
  FAIL_IF(!strstr(xfer_get_error_detail(f->x), "Content-Length"), "%s",
          xfer_get_error_detail(f->x));
  return 0;
}

/* --- order of calls ---------------------------------------------------------------- */

CASE(added_twice_removed_twice) {
  xfer_multi *other = xfer_multi_new(NULL);

  EXPECT(xfer_set_url(f->x, "http://127.0.0.1:9/"), XFER_OK);
  EXPECT(xfer_multi_add(f->m, f->x), XFER_M_OK);
  EXPECT(xfer_multi_add(f->m, f->x), XFER_M_ADDED_ALREADY);
  EXPECT(xfer_multi_add(other, f->x), XFER_M_ADDED_ALREADY);
  EXPECT(xfer_multi_remove(other, f->x), XFER_M_NOT_ADDED);
  EXPECT(xfer_multi_remove(f->m, f->x), XFER_M_OK);
  EXPECT(xfer_multi_remove(f->m, f->x), XFER_M_NOT_ADDED);
  return 0;
}

static long refused_read(char *buf, size_t len, void *userp) {
  (void)buf, (void)len, (void)userp;
  return -1; /* never called: the setter is refused */
}

CASE(options_are_refused_while_added) {
  EXPECT(xfer_set_url(f->x, "http://127.0.0.1:9/"), XFER_OK);
  EXPECT(xfer_multi_add(f->m, f->x), XFER_M_OK);
  EXPECT_CODE(xfer_set_url(f->x, "http://127.0.0.1:8/"), XFER_E_IN_USE);
  EXPECT_CODE(xfer_set_method(f->x, "POST"), XFER_E_IN_USE);
  EXPECT_CODE(xfer_add_header(f->x, "A", "b"), XFER_E_IN_USE);
  EXPECT_CODE(xfer_set_body(f->x, "x", 1), XFER_E_IN_USE);
  EXPECT_CODE(xfer_set_timeout_ms(f->x, 1), XFER_E_IN_USE);
  /* Every other setter alike (xfer_set_private alone is allowed). */
  EXPECT_CODE(xfer_clear_headers(f->x), XFER_E_IN_USE);
  EXPECT_CODE(xfer_set_body_cb(f->x, refused_read, NULL, 1), XFER_E_IN_USE);
  EXPECT_CODE(xfer_set_write_cb(f->x, NULL, NULL), XFER_E_IN_USE);
  EXPECT_CODE(xfer_set_header_cb(f->x, NULL, NULL), XFER_E_IN_USE);
  EXPECT_CODE(xfer_set_ip_version(f->x, XFER_IPRESOLVE_V4), XFER_E_IN_USE);
  EXPECT_CODE(xfer_set_local_address(f->x, "127.0.0.1"), XFER_E_IN_USE);
  EXPECT_CODE(xfer_set_connect_timeout_ms(f->x, 1), XFER_E_IN_USE);
  EXPECT_CODE(xfer_set_low_speed(f->x, 1, 1000), XFER_E_IN_USE);
  EXPECT_CODE(xfer_set_max_header_size(f->x, 100), XFER_E_IN_USE);
  EXPECT_CODE(xfer_set_follow_redirects(f->x, 1), XFER_E_IN_USE);
  EXPECT(xfer_set_private(f->x, f), XFER_OK);
  EXPECT_CODE(xfer_free(f->x), XFER_E_IN_USE);
  EXPECT_CODE(xfer_reset(f->x), XFER_E_IN_USE);
  FAIL_IF(*xfer_get_error_detail(f->x), "a refused call wrote the detail");
  return 0;
}

CASE(destroyed_in_the_wrong_order) {
  xfer_pool *shared = xfer_pool_new(NULL);
  xfer_multi *user = xfer_multi_new(shared);

  EXPECT(xfer_pool_destroy(shared), XFER_E_IN_USE);
  EXPECT(xfer_multi_destroy(user), XFER_M_OK);
  EXPECT(xfer_pool_destroy(shared), XFER_OK);
  return 0;
}

CASE(a_freed_multi_is_refused) {
  xfer_multi *gone = xfer_multi_new(NULL);

  EXPECT(xfer_multi_destroy(gone), XFER_M_OK);
  return multi_functions_refuse(gone, f->x);
}

CASE(a_freed_pool_is_refused) {
  xfer_pool *gone = xfer_pool_new(NULL);

  EXPECT(xfer_pool_destroy(gone), XFER_OK);
  return pool_functions_refuse(gone);
}

/* --- calls from inside callbacks ---------------------------------------------- */

static struct fix *cb_fix;
static xfer *running;
static xfer_mcode seen[8];
static xfer_code seen_x[3];

/* Every multi call the application might make from a callback. */
static void try_reentry(xfer_multi *m) {
  int n;

  seen[0] = xfer_multi_perform(m, &n);
  seen[1] = xfer_multi_socket_action(m, XFER_SOCKET_TIMEOUT, 0, &n);
  seen[2] = xfer_multi_add(m, cb_fix->x);
  seen[3] = xfer_multi_destroy(m);
  seen[4] = xfer_multi_poll(m, 0, &n);
  seen[5] = xfer_multi_set_socket_cb(m, NULL, NULL);
  seen[6] = xfer_multi_remove(m, running); /* the one calling back, mostly */
}

static int all_refused(void) {
  for (int i = 0; i < 7; i++)
    FAIL_IF(seen[i] != XFER_M_RECURSIVE_API_CALL,
            "call %d from a callback: %d", i, seen[i]);
  return 0;
}

static int reentering_socket_cb(xfer_multi *m, int fd, int what, void *u,
                                void *sp) {
  (void)fd, (void)what, (void)u, (void)sp;
  try_reentry(m);
  return 0;
}

static int reentering_timer_cb(xfer_multi *m, long ms, void *u) {
  (void)ms, (void)u;
  try_reentry(m);
  return 0;
}

static size_t reentering_write_cb(const char *d, size_t n, void *u) {
  (void)d;
  try_reentry(u);
  seen_x[0] = xfer_set_url(running, "http://127.0.0.1:8/");
  seen_x[1] = xfer_free(running);
  seen_x[2] = xfer_reset(running);
  return n;
}

static int reentering_header_cb(const char *n, size_t nl, const char *v,
                                size_t vl, void *u) {
  (void)n, (void)nl, (void)v, (void)vl;
  try_reentry(u);
  return 0;
}

static long reentering_read_cb(char *b, size_t n, void *u) {
  (void)b, (void)n;
  try_reentry(u);
  return 0;
}

/* Runs f's multi over a GET (or a POST with a read callback) of `path`
 * with cb_fix->x as the transfer that calls back. */
static int run_with(struct fix *f, const char *path) {
  cb_fix = f;
  for (int i = 0; i < 8; i++)
    seen[i] = -1;
  running = xfer_new();
  EXPECT(xfer_set_url(running, th_url(ts_port(f->srv), path)), XFER_OK);
  return 0;
}

static int drive(struct fix *f) {
  int n = 1;

  EXPECT(xfer_multi_add(f->m, running), XFER_M_OK);
  for (int i = 0; i < 200 && n; i++) {
    xfer_multi_perform(f->m, &n);
    if (n)
      xfer_multi_poll(f->m, 20, NULL);
  }
  FAIL_IF(n, "still running");
  return all_refused();
}

CASE(calls_from_the_socket_callback_are_refused) {
  if (run_with(f, "/bytes/1"))
    return 1;
  xfer_multi_set_socket_cb(f->m, reentering_socket_cb, NULL);
  return drive(f);
}

CASE(calls_from_the_timer_callback_are_refused) {
  if (run_with(f, "/bytes/1"))
    return 1;
  xfer_multi_set_timer_cb(f->m, reentering_timer_cb, NULL);
  return drive(f);
}

CASE(calls_from_the_write_callback_are_refused) {
  if (run_with(f, "/bytes/1"))
    return 1;
  xfer_set_write_cb(running, reentering_write_cb, f->m);
  if (drive(f))
    return 1;
  EXPECT(seen_x[0], XFER_E_IN_USE);
  EXPECT(seen_x[1], XFER_E_IN_USE);
  EXPECT(seen_x[2], XFER_E_IN_USE);
  return 0;
}

CASE(calls_from_the_header_callback_are_refused) {
  if (run_with(f, "/bytes/1"))
    return 1;
  xfer_set_header_cb(running, reentering_header_cb, f->m);
  return drive(f);
}

CASE(calls_from_the_read_callback_are_refused) {
  if (run_with(f, "/echo"))
    return 1;
  xfer_set_method(running, "POST");
  xfer_set_body_cb(running, reentering_read_cb, f->m, -1);
  return drive(f);
}

/* --- callbacks that misbehave ------------------------------------------------ */

/* Runs x on f's multi to its end: the code its message carries, which
 * xfer_get_result() must agree with, and a detail must explain; -1 when it
 * did not end. */
static long finish(struct fix *f, xfer *x) {
  int n = 1;
  const xfer_msg *msg;

  if (xfer_multi_add(f->m, x) != XFER_M_OK)
    return -1;
  for (int i = 0; i < 200 && n; i++) {
    xfer_multi_perform(f->m, &n);
    if (n)
      xfer_multi_poll(f->m, 20, NULL);
  }
  msg = xfer_multi_info_read(f->m, NULL);
  if (!msg || msg->x != x || xfer_get_result(x) != msg->result)
    return -1;
  if (msg->result != XFER_OK && !*xfer_get_error_detail(x))
    return -1;
  return (long)msg->result;
}

static xfer *get_of(struct fix *f, const char *path) {
  xfer *x = xfer_new();

  xfer_set_url(x, th_url(ts_port(f->srv), path));
  return x;
}

static long overfilling_read(char *b, size_t n, void *u) {
  (void)u;
  memset(b, 'a', n);
  return (long)n + 1;
}
static long aborting_read(char *b, size_t n, void *u) {
  (void)b, (void)n, (void)u;
  return -1;
}
static long twenty_bytes(char *b, size_t n, void *u) {
  int *given = u;
  size_t k = n < 20 ? n : 20;

  if (*given)
    return 0;
  memset(b, 'b', k);
  *given = 1;
  return (long)k;
}
static size_t refusing_write(const char *d, size_t n, void *u) {
  (void)d, (void)n, (void)u;
  return 0;
}
static int refusing_header(const char *n, size_t nl, const char *v, size_t vl,
                           void *u) {
  (void)n, (void)nl, (void)v, (void)vl, (void)u;
  return 1;
}
static int refusing_socket_cb(xfer_multi *m, int fd, int what, void *u,
                              void *sp) {
  (void)m, (void)fd, (void)what, (void)u, (void)sp;
  return what == XFER_POLL_REMOVE ? 0 : -1;
}
static int refusing_timer_cb(xfer_multi *m, long ms, void *u) {
  (void)m, (void)ms, (void)u;
  return -1;
}

CASE(a_read_callback_that_claims_more_than_asked) {
  xfer *x = get_of(f, "/echo");

  xfer_set_method(x, "POST");
  xfer_set_body_cb(x, overfilling_read, NULL, -1);
  EXPECT(finish(f, x), XFER_E_READ_CALLBACK);
  return 0;
}

CASE(a_read_callback_that_aborts) {
  xfer *x = get_of(f, "/echo");

  xfer_set_method(x, "POST");
  xfer_set_body_cb(x, aborting_read, NULL, 10);
  EXPECT(finish(f, x), XFER_E_READ_CALLBACK);
  return 0;
}

CASE(a_read_callback_that_gives_more_than_announced) {
  int given = 0;
  xfer *x = get_of(f, "/echo");

  xfer_set_method(x, "POST");
  xfer_set_body_cb(x, twenty_bytes, &given, 5);
  EXPECT(finish(f, x), XFER_E_BODY_LENGTH);
  return 0;
}

CASE(a_read_callback_that_ends_before_announced) {
  int given = 0;
  xfer *x = get_of(f, "/echo");

  xfer_set_method(x, "POST");
  xfer_set_body_cb(x, twenty_bytes, &given, 50);
  EXPECT(finish(f, x), XFER_E_BODY_LENGTH);
  return 0;
}

CASE(a_write_callback_that_refuses) {
  xfer *x = get_of(f, "/bytes/10");

  xfer_set_write_cb(x, refusing_write, NULL);
  EXPECT(finish(f, x), XFER_E_WRITE_CALLBACK);
  return 0;
}

CASE(a_header_callback_that_refuses) {
  xfer *x = get_of(f, "/bytes/10");

  xfer_set_header_cb(x, refusing_header, NULL);
  EXPECT(finish(f, x), XFER_E_HEADER_CALLBACK);
  return 0;
}

CASE(a_socket_callback_that_refuses) {
  xfer *x = get_of(f, "/bytes/10");

  xfer_multi_set_socket_cb(f->m, refusing_socket_cb, NULL);
  EXPECT(finish(f, x), XFER_E_SOCKET_CALLBACK);
  return 0;
}

CASE(a_timer_callback_that_refuses) {
  xfer *x = get_of(f, "/bytes/10");

  xfer_multi_set_timer_cb(f->m, refusing_timer_cb, NULL);
  EXPECT(xfer_multi_add(f->m, x), XFER_M_TIMER_CALLBACK);
  return 0;
}

CASE(a_transfer_removed_before_it_ends_says_stopped) {
  xfer *x = get_of(f, "/bytes/10");

  EXPECT(xfer_multi_add(f->m, x), XFER_M_OK);
  EXPECT(xfer_multi_remove(f->m, x), XFER_M_OK);
  EXPECT_WHY(x, xfer_get_result(x), XFER_E_STOPPED);
  return 0;
}

/* --- the table, and its runner ---------------------------------------------------- */

struct misuse {
  const char *name;
  int (*run)(struct fix *f);
  bool reads_freed_memory; /* skipped in sanitizer builds */
};

#define ROW(fn) {#fn, fn, false}
#define ROW_FREED(fn) {#fn, fn, true}

static const struct misuse cases[] = {
    ROW(transfer_functions_refuse_null),
    ROW(transfer_functions_refuse_a_multi),
    ROW(transfer_functions_refuse_a_pool),
    ROW_FREED(transfer_functions_refuse_a_freed_transfer),
    ROW(multi_functions_refuse_null),
    ROW(multi_functions_refuse_a_transfer),
    ROW(multi_functions_refuse_a_pool),
    ROW_FREED(a_freed_multi_is_refused),
    ROW_FREED(a_freed_pool_is_refused),
    ROW(pool_functions_refuse_null),
    ROW(pool_functions_refuse_a_transfer),
    ROW(pool_functions_refuse_a_multi),
    ROW(free_refuses_what_is_not_a_transfer),
    ROW(add_and_remove_refuse_what_is_not_a_transfer),
    ROW(setters_refuse_values_out_of_range),
    ROW(urls_that_cannot_work_are_refused),
    ROW(getters_refuse_bad_arguments),
    ROW(multi_calls_refuse_bad_arguments),
    ROW(mem_hooks_refuse_missing_functions_and_live_handles),
    ROW(framing_that_contradicts_the_body_is_refused_at_start),
    ROW(added_twice_removed_twice),
    ROW(options_are_refused_while_added),
    ROW(destroyed_in_the_wrong_order),
    ROW(calls_from_the_socket_callback_are_refused),
    ROW(calls_from_the_timer_callback_are_refused),
    ROW(calls_from_the_write_callback_are_refused),
    ROW(calls_from_the_header_callback_are_refused),
    ROW(calls_from_the_read_callback_are_refused),
    ROW(a_read_callback_that_claims_more_than_asked),
    ROW(a_read_callback_that_aborts),
    ROW(a_read_callback_that_gives_more_than_announced),
    ROW(a_read_callback_that_ends_before_announced),
    ROW(a_write_callback_that_refuses),
    ROW(a_header_callback_that_refuses),
    ROW(a_socket_callback_that_refuses),
    ROW(a_timer_callback_that_refuses),
    ROW(a_transfer_removed_before_it_ends_says_stopped),
};

/* One case in a child: its exit status, or the signal that ended it. */
static void run_case(const struct misuse *c) {
  int status = 0;
  pid_t pid;

  if (!current_call) {
    void *page = mmap(NULL, sizeof(*current_call), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(page, MAP_FAILED);
    current_call = page;
  }
  *current_call = "(its set-up, before any call it checks)";
  fflush(NULL);
  pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    struct fix fx = {0};
    fx.srv = ts_start(NULL);
    fx.x = xfer_new();
    fx.m = xfer_multi_new(NULL);
    fx.p = xfer_pool_new(NULL);
    fx.freed = xfer_new();
    xfer_free(fx.freed);
    _exit(fx.srv && fx.x && fx.m && fx.p ? c->run(&fx) : 2);
  }
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  if (WIFSIGNALED(status)) {
    fprintf(stderr, "misuse: %s crashed (signal %d) in %s (or after it)\n",
            c->name, WTERMSIG(status), *current_call);
    failures_seen++;
  } else if (WEXITSTATUS(status) != 0) {
    fprintf(stderr, "misuse: %s failed (see above)\n", c->name);
    failures_seen++;
  }
}

/* The children hold every handle; the parent has nothing to end. */
static void misuse_end(void) {}

TH_TEST(misuse, every_case_gets_its_code_and_nothing_crashes) {
  int skipped = 0;

  for (size_t i = 0; i < XFER__ARRAY_SIZE(cases); i++) {
#ifdef XFER_SANITIZE
    if (cases[i].reads_freed_memory) {
      skipped++;
      continue;
    }
#endif
    run_case(&cases[i]);
  }
  cr_log_info("%zu cases, %d skipped (freed handles, sanitizer build)",
              XFER__ARRAY_SIZE(cases), skipped);
  cr_assert_eq(failures_seen, 0, "%d of %zu cases failed (named above)",
               failures_seen, XFER__ARRAY_SIZE(cases));
}
