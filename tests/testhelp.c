/* Helpers for the unit suites (see testhelp.h). */
#include "testhelp.h"

#include "mem.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define TH_HAVE_LSAN 1
#endif

/* --- controllable clock ---------------------------------------------------- */

static xfer__time fake_now;
static xfer__time fake_step;

static xfer__time fake_clock(void *userp) {
  xfer__time now = fake_now;
  (void)userp;
  fake_now += fake_step;
  return now;
}

void th_clock_install(xfer__time start, xfer__time step) {
  fake_now = start;
  fake_step = step;
  xfer__now_set_clock(fake_clock, NULL);
}

void th_clock_advance(xfer__time by) { fake_now += by; }

xfer__time th_clock_peek(void) { return fake_now; }

void th_clock_uninstall(void) { xfer__now_set_clock(NULL, NULL); }

/* --- socket callback recorder --------------------------------------------- */

static int marker;

void th_sockrec_init(struct th_sockrec *r) {
  memset(r, 0, sizeof(*r));
  r->refuse_fd = -1;
}

int th_sockrec_cb(xfer_multi *m, int fd, int what, void *userp,
                  void *socketp) {
  struct th_sockrec *r = userp;

  cr_assert_lt(r->count, TH_MAX_CALLS);
  r->calls[r->count].fd = fd;
  r->calls[r->count].what = what;
  r->calls[r->count].socketp = socketp;
  r->count++;
  if (r->assign && !socketp && what != XFER_POLL_REMOVE)
    cr_assert_eq(xfer_multi_assign(m, fd, &marker), XFER_M_OK);
  if (r->advance_by)
    th_clock_advance(r->advance_by);
  if (r->try_reentry)
    r->reentry_rc = xfer_multi_socket_action(m, XFER_SOCKET_TIMEOUT, 0, NULL);
  return fd == r->refuse_fd ? -1 : 0;
}

void th_expect_calls(const struct th_sockrec *r, int from, const int *pairs,
                     int n) {
  cr_assert_eq(r->count - from, n, "expected %d socket callback calls, got %d",
               n, r->count - from);
  for (int i = 0; i < n; i++) {
    cr_assert_eq(r->calls[from + i].fd, pairs[2 * i],
                 "call %d: fd %d, expected %d", i, r->calls[from + i].fd,
                 pairs[2 * i]);
    cr_assert_eq(r->calls[from + i].what, pairs[2 * i + 1],
                 "call %d (fd %d): what %d, expected %d", i, pairs[2 * i],
                 r->calls[from + i].what, pairs[2 * i + 1]);
  }
}

/* --- timer callback recorder ---------------------------------------------- */

void th_timerrec_init(struct th_timerrec *r) { memset(r, 0, sizeof(*r)); }

int th_timerrec_cb(xfer_multi *m, long timeout_ms, void *userp) {
  struct th_timerrec *r = userp;
  (void)m;
  cr_assert_lt(r->count, TH_MAX_CALLS);
  r->timeouts[r->count++] = timeout_ms;
  return r->answer;
}

/* --- scripted test transfers ---------------------------------------------- */

static int tt_run(xfer *x, unsigned due) {
  struct tt *t = x->handler_ctx;

  if (t->runs < TT_MAX_RUNS)
    t->run_now[t->runs] = x->now;
  t->runs++;
  t->last_due = due;
  t->uses_at_run = x->ev.count;
  return t->on_run ? t->on_run(t, due) : XFER__RUN_AGAIN;
}

static void tt_pollset(xfer *x, struct xfer__pollset *ps) {
  struct tt *t = x->handler_ctx;
  *ps = t->ps;
}

static void tt_cleanup(xfer *x) {
  struct tt *t = x->handler_ctx;

  t->cleanups++;
  for (int i = 0; i < t->nclose; i++)
    xfer__multi_close_socket(x->multi, t->close_fds[i]);
  t->nclose = 0;
}

const struct xfer__handler tt_handler = {
    .name = "test",
    .run = tt_run,
    .pollset = tt_pollset,
    .cleanup = tt_cleanup,
};

static struct tt *alive;

struct tt *tt_new(int id) {
  struct tt *t = calloc(1, sizeof(*t));

  cr_assert_not_null(t);
  t->next_alive = alive;
  alive = t;
  t->id = id;
  t->x = xfer_new();
  cr_assert_not_null(t->x);
  cr_assert_eq(xfer__set_handler(t->x, &tt_handler, t), XFER_OK);
  return t;
}

void tt_free(struct tt *t) {
  struct tt **p;

  if (!t)
    return;
  for (p = &alive; *p != t; p = &(*p)->next_alive)
    cr_assert_not_null(*p, "tt %d freed twice", t->id);
  *p = t->next_alive;
  cr_assert_eq(xfer_free(t->x), XFER_OK);
  free(t);
}

void tt_free_all(void) {
  while (alive)
    tt_free(alive);
}

void tt_want(struct tt *t, int fd, unsigned want) {
  for (unsigned i = 0; i < t->ps.count; i++) {
    if (t->ps.fd[i] == fd) {
      if (want) {
        t->ps.want[i] = (unsigned char)want;
      } else {
        t->ps.count--;
        t->ps.fd[i] = t->ps.fd[t->ps.count];
        t->ps.want[i] = t->ps.want[t->ps.count];
      }
      return;
    }
  }
  cr_assert(xfer__pollset_add(&t->ps, fd, want));
}

bool tt_now_monotonic(const struct tt *t) {
  int n = t->runs < TT_MAX_RUNS ? t->runs : TT_MAX_RUNS;
  for (int i = 1; i < n; i++)
    if (t->run_now[i] < t->run_now[i - 1])
      return false;
  return true;
}

void th_socketpair(int sv[2]) {
  cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
}

void th_expect_timeline_ordered(const xfer *x) {
  xfer_timeline tl;
  int64_t v[7];

  cr_assert_eq(xfer_get_timeline(x, &tl), XFER_OK);
  v[0] = tl.queue_us;
  v[1] = tl.namelookup_us;
  v[2] = tl.connect_us;
  v[3] = tl.appconnect_us;
  v[4] = tl.pretransfer_us;
  v[5] = tl.starttransfer_us;
  v[6] = tl.total_us;
  for (int i = 0; i < 7; i++) {
    cr_assert_geq(v[i], 0, "phase %d not set", i);
    if (i)
      cr_assert_geq(v[i], v[i - 1], "phase %d (%lld) before phase %d (%lld)",
                    i, (long long)v[i], i - 1, (long long)v[i - 1]);
  }
}

void th_expect_no_leaks(void) {
  cr_assert_eq(xfer__mem_live(), 0, "libxfer left %ld blocks allocated",
               xfer__mem_live());
#ifdef TH_HAVE_LSAN
  cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,
               "LeakSanitizer found leaks (report above)");
#endif
}
