/* lib/cfilter.c: the stack's operations over fake filters (each records
 * what it was asked, in order): connect from the bottom up, the graceful
 * close from the top down and resumed where it stopped, liveness, close
 * of every filter top first, and the pass-through parts. The socket
 * filter itself is tests/test_cf_socket.c's. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "cfilter.h"
#include "testhelp.h"

struct fake_cf {
  struct xfer__cf base;
  const char *name;
  enum xfer__cf_progress connect_says, shutdown_says;
  bool alive;
  int connects, shutdowns, closes;
};

static char trail[256]; /* "name:op " for every call, in order */

static struct fake_cf *fake_of(struct xfer__cf *cf) {
  return XFER__CONTAINER_OF(cf, struct fake_cf, base);
}

static void note(struct xfer__cf *cf, const char *op) {
  size_t len = strlen(trail);
  snprintf(trail + len, sizeof(trail) - len, "%s:%s ", fake_of(cf)->name, op);
}

static enum xfer__cf_progress fake_connect(struct xfer__cf *cf,
                                           struct xfer__mev *ev,
                                           xfer__time now, xfer__time *next_at,
                                           char *why, size_t why_len) {
  (void)ev, (void)now, (void)next_at;
  note(cf, "connect");
  fake_of(cf)->connects++;
  if (fake_of(cf)->connect_says == XFER__CF_FAILED)
    snprintf(why, why_len, "%s failed", fake_of(cf)->name);
  return fake_of(cf)->connect_says;
}

/* The bottom: pollset, send and recv answer for the whole stack. */
static void bottom_pollset(struct xfer__cf *cf, struct xfer__pollset *ps,
                           unsigned want) {
  note(cf, "pollset");
  xfer__pollset_add(ps, 7, want);
}

static ssize_t bottom_send(struct xfer__cf *cf, const struct iovec *iov,
                           int iovcnt, int *err) {
  (void)err;
  note(cf, "send");
  return iovcnt ? (ssize_t)iov[0].iov_len : 0;
}

static ssize_t bottom_recv(struct xfer__cf *cf, char *buf, size_t len,
                           int *err) {
  (void)err;
  note(cf, "recv");
  memset(buf, 'r', len);
  return (ssize_t)len;
}

static enum xfer__cf_progress fake_shutdown(struct xfer__cf *cf) {
  note(cf, "shutdown");
  fake_of(cf)->shutdowns++;
  return fake_of(cf)->shutdown_says;
}

static bool fake_alive(struct xfer__cf *cf) {
  note(cf, "alive");
  return fake_of(cf)->alive;
}

static void fake_close(struct xfer__cf *cf, struct xfer__mev *ev) {
  (void)ev;
  note(cf, "close");
  fake_of(cf)->closes++;
}

static const struct xfer__cf_type bottom_type = {
    .name = "bottom",
    .connect = fake_connect,
    .pollset = bottom_pollset,
    .send = bottom_send,
    .recv = bottom_recv,
    .shutdown = fake_shutdown,
    .alive = fake_alive,
    .close = fake_close,
};

/* A filter above: it passes pollset, send and recv down. */
static const struct xfer__cf_type middle_type = {
    .name = "middle",
    .connect = fake_connect,
    .pollset = xfer__cf_pass_pollset,
    .send = xfer__cf_pass_send,
    .recv = xfer__cf_pass_recv,
    .shutdown = fake_shutdown,
    .alive = fake_alive,
    .close = fake_close,
};

static struct fake_cf bottom, middle, top;
static struct xfer__cf *stack;

static void setup(void) {
  trail[0] = '\0';
  bottom = (struct fake_cf){.base.type = &bottom_type, .name = "bottom",
                            .connect_says = XFER__CF_DONE,
                            .shutdown_says = XFER__CF_DONE, .alive = true};
  middle = (struct fake_cf){.base.type = &middle_type, .name = "middle",
                            .connect_says = XFER__CF_DONE,
                            .shutdown_says = XFER__CF_DONE, .alive = true};
  top = middle;
  top.name = "top";
  stack = NULL;
  xfer__cf_push(&stack, &bottom.base);
  xfer__cf_push(&stack, &middle.base);
  xfer__cf_push(&stack, &top.base);
}

static void cfilter_end(void) {}

TestSuite(cfilter, .init = setup);

static enum xfer__cf_progress connect_stack(char *why, size_t len) {
  xfer__time next_at = XFER__TIME_NEVER;
  return xfer__cf_connect(stack, NULL, 0, &next_at, why, len);
}

TH_TEST(cfilter, push_puts_a_filter_on_top) {
  cr_assert_eq(stack, &top.base);
  cr_assert_eq(top.base.below, &middle.base);
  cr_assert_eq(middle.base.below, &bottom.base);
  cr_assert_null(bottom.base.below);
}

/* Each filter connects once the one below is connected, and once only:
 * a connect step after the bottom said AGAIN asks the bottom again and
 * nobody above it. */
TH_TEST(cfilter, connect_goes_from_the_bottom_up) {
  char why[64] = "";

  bottom.connect_says = XFER__CF_AGAIN;
  cr_assert_eq(connect_stack(why, sizeof(why)), XFER__CF_AGAIN);
  cr_assert_str_eq(trail, "bottom:connect ");
  bottom.connect_says = XFER__CF_DONE;
  middle.connect_says = XFER__CF_AGAIN;
  cr_assert_eq(connect_stack(why, sizeof(why)), XFER__CF_AGAIN);
  cr_assert_str_eq(trail, "bottom:connect bottom:connect middle:connect ");
  middle.connect_says = XFER__CF_DONE;
  trail[0] = '\0';
  cr_assert_eq(connect_stack(why, sizeof(why)), XFER__CF_DONE);
  cr_assert_str_eq(trail, "middle:connect top:connect ",
                   "a connected filter is not asked again");
  cr_assert(top.base.connected && middle.base.connected &&
            bottom.base.connected);
  trail[0] = '\0';
  cr_assert_eq(connect_stack(why, sizeof(why)), XFER__CF_DONE);
  cr_assert_str_eq(trail, "");
}

TH_TEST(cfilter, a_failed_connect_says_why_and_stops) {
  char why[64] = "";

  middle.connect_says = XFER__CF_FAILED;
  cr_assert_eq(connect_stack(why, sizeof(why)), XFER__CF_FAILED);
  cr_assert_str_eq(why, "middle failed");
  cr_assert_eq(top.connects, 0, "nothing above a failed filter connects");
  cr_assert_not(middle.base.connected);
}

/* The graceful close runs from the top down; a filter that is not done
 * yet gets the next step, and the ones done are not asked again. */
TH_TEST(cfilter, shutdown_goes_from_the_top_down_and_resumes) {
  middle.shutdown_says = XFER__CF_AGAIN;
  cr_assert_eq(xfer__cf_shutdown(stack), XFER__CF_AGAIN);
  cr_assert_str_eq(trail, "top:shutdown middle:shutdown ");
  middle.shutdown_says = XFER__CF_DONE;
  trail[0] = '\0';
  cr_assert_eq(xfer__cf_shutdown(stack), XFER__CF_DONE);
  cr_assert_str_eq(trail, "middle:shutdown bottom:shutdown ");
  cr_assert_eq(top.shutdowns, 1);
  trail[0] = '\0';
  cr_assert_eq(xfer__cf_shutdown(stack), XFER__CF_DONE);
  cr_assert_str_eq(trail, "", "done once, done");
}

TH_TEST(cfilter, alive_only_if_every_filter_says_so) {
  cr_assert(xfer__cf_alive(stack));
  cr_assert_str_eq(trail, "top:alive middle:alive bottom:alive ");
  middle.alive = false;
  trail[0] = '\0';
  cr_assert_not(xfer__cf_alive(stack));
  cr_assert_str_eq(trail, "top:alive middle:alive ");
}

TH_TEST(cfilter, close_frees_every_filter_top_first) {
  xfer__cf_close(stack, NULL);
  cr_assert_str_eq(trail, "top:close middle:close bottom:close ");
  cr_assert(top.closes == 1 && middle.closes == 1 && bottom.closes == 1);
}

/* A filter that changes only some of the stack's behaviour passes the
 * rest down unchanged. */
TH_TEST(cfilter, the_pass_through_parts_reach_the_bottom) {
  struct xfer__pollset ps;
  char buf[4];
  struct iovec iov = {.iov_base = "abc", .iov_len = 3};
  int err = 0;

  ps.count = 0;
  xfer__cf_pollset(stack, &ps, XFER_POLL_IN);
  cr_assert_eq(ps.count, 1);
  cr_assert_eq(ps.fd[0], 7);
  cr_assert_eq(ps.want[0], XFER_POLL_IN);
  cr_assert_eq(xfer__cf_send(stack, &iov, 1, &err), 3);
  cr_assert_eq(xfer__cf_recv(stack, buf, sizeof(buf), &err), 4);
  cr_assert_eq(buf[3], 'r');
  cr_assert_str_eq(trail, "bottom:pollset bottom:send bottom:recv ");
}
