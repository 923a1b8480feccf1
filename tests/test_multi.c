/*
 * lib/multi.c: the API guards, re-entrancy, messages, timers, time keeping
 * (brief rule 2) and two real drivers: an epoll loop that uses only the
 * callbacks, and the perform/poll loop.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "testhelp.h"
#include "testserver.h"

static void multi_end(void) {
  th_clock_uninstall();
  tt_free_all();
}

/* --- handles and API misuse ------------------------------------------------ */

TH_TEST(multi, null_and_wrong_handles_are_refused) {
  xfer_multi *m = xfer_multi_new(NULL);
  xfer *x = xfer_new();
  xfer_multi_stats st = {0};
  int left = 7;

  cr_assert_eq(xfer_multi_add(NULL, x), XFER_M_BAD_HANDLE);
  cr_assert_eq(xfer_multi_add(m, NULL), XFER_M_BAD_XFER_HANDLE);
  cr_assert_eq(xfer_multi_add((xfer_multi *)x, x), XFER_M_BAD_HANDLE);
  cr_assert_eq(xfer_multi_add(m, (xfer *)m), XFER_M_BAD_XFER_HANDLE);
  cr_assert_eq(xfer_multi_remove(NULL, x), XFER_M_BAD_HANDLE);
  cr_assert_eq(xfer_multi_remove(m, (xfer *)m), XFER_M_BAD_XFER_HANDLE);
  cr_assert_eq(xfer_multi_socket_action(NULL, 3, 0, NULL), XFER_M_BAD_HANDLE);
  cr_assert_eq(xfer_multi_socket_action((xfer_multi *)x, 3, 0, NULL),
               XFER_M_BAD_HANDLE);
  cr_assert_eq(xfer_multi_socket_timeout(NULL, NULL), XFER_M_BAD_HANDLE);
  cr_assert_eq(xfer_multi_perform(NULL, NULL), XFER_M_BAD_HANDLE);
  cr_assert_eq(xfer_multi_poll(NULL, 0, NULL), XFER_M_BAD_HANDLE);
  cr_assert_eq(xfer_multi_poll(m, -1, NULL), XFER_M_BAD_ARGUMENT);
  cr_assert_eq(xfer_multi_set_socket_cb(NULL, NULL, NULL), XFER_M_BAD_HANDLE);
  cr_assert_eq(xfer_multi_set_timer_cb((xfer_multi *)x, NULL, NULL),
               XFER_M_BAD_HANDLE);
  cr_assert_eq(xfer_multi_get_stats(NULL, &st), XFER_M_BAD_HANDLE);
  cr_assert_eq(xfer_multi_get_stats(m, NULL), XFER_M_BAD_ARGUMENT);
  cr_assert_null(xfer_multi_info_read(NULL, &left));
  cr_assert_eq(left, 0);
  cr_assert_eq(xfer_multi_destroy((xfer_multi *)x), XFER_M_BAD_HANDLE);
  cr_assert_eq(xfer_multi_destroy(NULL), XFER_M_OK);
  cr_assert_eq(xfer_free(x), XFER_OK);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
}

TH_TEST(multi, add_and_remove_are_checked) {
  xfer_multi *m1 = xfer_multi_new(NULL), *m2 = xfer_multi_new(NULL);
  struct tt *t = tt_new(1);

  cr_assert_eq(xfer_multi_remove(m1, t->x), XFER_M_NOT_ADDED);
  cr_assert_eq(xfer_multi_add(m1, t->x), XFER_M_OK);
  cr_assert_eq(xfer_multi_add(m1, t->x), XFER_M_ADDED_ALREADY);
  cr_assert_eq(xfer_multi_add(m2, t->x), XFER_M_ADDED_ALREADY);
  cr_assert_eq(xfer_multi_remove(m2, t->x), XFER_M_NOT_ADDED);
  cr_assert_eq(xfer_multi_remove(m1, t->x), XFER_M_OK);
  cr_assert_eq(xfer_multi_add(m2, t->x), XFER_M_OK, "free to move now");
  cr_assert_eq(xfer_multi_destroy(m1), XFER_M_OK);
  cr_assert_eq(xfer_multi_destroy(m2), XFER_M_OK);
}

/* --- re-entrancy ---------------------------------------------------------- */

struct reentry {
  xfer *other;
  xfer_mcode add, remove, perform, action, destroy, set_cb, poll;
  int calls;
};

static int reentering_timer_cb(xfer_multi *m, long timeout_ms, void *userp) {
  struct reentry *r = userp;

  if (r->calls++)
    return 0;
  r->add = xfer_multi_add(m, r->other);
  r->remove = xfer_multi_remove(m, r->other);
  r->perform = xfer_multi_perform(m, NULL);
  r->action = xfer_multi_socket_timeout(m, NULL);
  r->poll = xfer_multi_poll(m, 0, NULL);
  r->set_cb = xfer_multi_set_socket_cb(m, NULL, NULL);
  r->destroy = xfer_multi_destroy(m);
  return 0;
}

TH_TEST(multi, calls_from_inside_a_callback_are_refused) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct tt *a = tt_new(1);
  struct reentry r = {.other = xfer_new()};
  struct th_sockrec rec;
  int running;

  cr_assert_eq(xfer_multi_set_timer_cb(m, reentering_timer_cb, &r), XFER_M_OK);
  cr_assert_eq(xfer_multi_add(m, a->x), XFER_M_OK); /* timer cb: 0 */
  cr_assert_eq(r.calls, 1);
  cr_assert_eq(r.add, XFER_M_RECURSIVE_API_CALL);
  cr_assert_eq(r.remove, XFER_M_RECURSIVE_API_CALL);
  cr_assert_eq(r.perform, XFER_M_RECURSIVE_API_CALL);
  cr_assert_eq(r.action, XFER_M_RECURSIVE_API_CALL);
  cr_assert_eq(r.poll, XFER_M_RECURSIVE_API_CALL);
  cr_assert_eq(r.set_cb, XFER_M_RECURSIVE_API_CALL);
  cr_assert_eq(r.destroy, XFER_M_RECURSIVE_API_CALL);

  th_sockrec_init(&rec);
  rec.try_reentry = true;
  cr_assert_eq(xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec), XFER_M_OK);
  tt_want(a, 9, XFER_POLL_IN);
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  cr_assert_eq(rec.count, 1);
  cr_assert_eq(rec.reentry_rc, XFER_M_RECURSIVE_API_CALL);
  cr_assert_eq(running, 1, "the refused call changed nothing");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_free(r.other), XFER_OK);
}

/* --- messages --------------------------------------------------------------- */

static enum xfer__step finish_at_once(struct tt *t, unsigned due) {
  return t->id == 2 ? xfer__step_failed(t->x, XFER_E_TIMEOUT)
                     : XFER__STEP_DONE;
}

TH_TEST(multi, finished_transfers_are_reported_once_in_order) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct tt *t[3];
  const xfer_msg *msg;
  int left, running;

  for (int i = 0; i < 3; i++) {
    t[i] = tt_new(i);
    t[i]->on_run = finish_at_once;
    xfer_multi_add(m, t[i]->x);
  }
  cr_assert_null(xfer_multi_info_read(m, &left));
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  cr_assert_eq(running, 0);
  for (int i = 0; i < 3; i++) {
    msg = xfer_multi_info_read(m, &left);
    cr_assert_not_null(msg);
    cr_assert_eq(msg->msg, XFER_MSG_DONE);
    cr_assert_eq(msg->x, t[i]->x);
    cr_assert_eq(msg->result, i == 2 ? XFER_E_TIMEOUT : XFER_OK);
    cr_assert_eq(left, 2 - i);
    cr_assert_eq(t[i]->cleanups, 1);
    th_expect_timeline_ordered(t[i]->x);
  }
  cr_assert_null(xfer_multi_info_read(m, &left));

  /* Done transfers run again once re-added; a removed one's unread
   * message goes with it. */
  cr_assert_eq(xfer_multi_remove(m, t[0]->x), XFER_M_OK);
  cr_assert_eq(xfer_multi_add(m, t[0]->x), XFER_M_OK);
  cr_assert_eq(xfer_multi_perform(m, &running), XFER_M_OK);
  cr_assert_eq(t[0]->runs, 2);
  cr_assert_eq(xfer_multi_remove(m, t[0]->x), XFER_M_OK);
  cr_assert_null(xfer_multi_info_read(m, &left));
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
}

TH_TEST(multi, destroy_removes_running_transfers_and_their_sockets) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_sockrec rec;
  struct tt *a = tt_new(1);
  int sv[2];

  th_sockrec_init(&rec);
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
  th_socketpair(sv);
  a->close_fds[0] = sv[0];
  a->close_fds[1] = sv[1];
  a->nclose = 2;
  tt_want(a, sv[0], XFER_POLL_IN);
  tt_want(a, sv[1], XFER_POLL_OUT);
  xfer_multi_add(m, a->x);
  xfer_multi_socket_timeout(m, NULL);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  th_expect_calls(&rec, 0,
                  (int[]){sv[0], XFER_POLL_IN, sv[1], XFER_POLL_OUT, sv[0],
                          XFER_POLL_REMOVE, sv[1], XFER_POLL_REMOVE},
                  4);
  cr_assert_eq(a->cleanups, 1);
  cr_assert_eq(fcntl(sv[0], F_GETFD), -1, "closed by the cleanup");
  cr_assert_eq(xfer_multi_info_read(NULL, NULL), NULL);
  /* tt_free_all() frees a->x: it is no longer added anywhere. */
}

/* --- timers ------------------------------------------------------------------ */

static enum xfer__step expire_by_id(struct tt *t, unsigned due) {
  if (t->state++ == 0) {
    xfer__expire_in(t->x, XFER__EXPIRE_TOTAL, MS(10) * t->id);
    return XFER__STEP_AGAIN;
  }
  return XFER__STEP_DONE;
}

TH_TEST(multi, timer_callback_hears_only_changes) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_timerrec tr;
  struct tt *t[3];
  int running;

  th_clock_install(MS(1000), 0);
  th_timerrec_init(&tr);
  xfer_multi_set_timer_cb(m, th_timerrec_cb, &tr);
  for (int i = 0; i < 3; i++) {
    t[i] = tt_new(i + 1);
    t[i]->on_run = expire_by_id;
    cr_assert_eq(xfer_multi_add(m, t[i]->x), XFER_M_OK);
  }
  /* The first add wants to run now; the others change nothing. */
  cr_assert_eq(tr.count, 1);
  cr_assert_eq(tr.timeouts[0], 0);
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  cr_assert_eq(tr.count, 2);
  cr_assert_eq(tr.timeouts[1], 10);
  /* An event that changes no deadline says nothing. */
  cr_assert_eq(xfer_multi_socket_action(m, 77, XFER_CSELECT_IN, &running),
               XFER_M_OK);
  cr_assert_eq(tr.count, 2);

  /* A timeout exactly at +20 ms runs exactly the two transfers due. */
  th_clock_advance(MS(20));
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  cr_assert_eq(t[0]->runs, 2);
  cr_assert_eq(t[1]->runs, 2);
  cr_assert_eq(t[2]->runs, 1);
  cr_assert_eq(t[0]->last_due, 1u << XFER__EXPIRE_TOTAL);
  cr_assert_eq(running, 1);
  cr_assert_eq(tr.count, 3);
  cr_assert_eq(tr.timeouts[2], 10);

  /* A timer that fired early runs nothing and is armed again. */
  th_clock_advance(MS(4));
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  cr_assert_eq(t[2]->runs, 1);
  cr_assert_eq(tr.count, 4);
  cr_assert_eq(tr.timeouts[3], 6);

  /* The last deadline goes away: nothing is told; the armed timer fires,
   * finds nothing, and nothing is armed after it. */
  cr_assert_eq(xfer_multi_remove(m, t[2]->x), XFER_M_OK);
  cr_assert_eq(tr.count, 4);
  th_clock_advance(MS(6));
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  cr_assert_eq(tr.count, 4);
  /* Destroy cannot know that the timeout action came from the timer (an
   * application may call it to start things): it stops the timer. */
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(tr.count, 5);
  cr_assert_eq(tr.timeouts[4], -1);
}

/* The same callback set again keeps what it armed: destroy still stops
 * it (-1). It lost track, and the timer armed before fired on a freed
 * multi. Another callback is a new start: the one replaced hears
 * nothing more, and the new one is told the deadline by the next call. */
TH_TEST(multi, setting_the_same_timer_callback_again_keeps_its_timer) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_timerrec tr, other;
  struct tt *t = tt_new(1);
  int running;

  th_clock_install(MS(1000), 0);
  th_timerrec_init(&tr);
  th_timerrec_init(&other);
  xfer_multi_set_timer_cb(m, th_timerrec_cb, &tr);
  t->on_run = expire_by_id; /* again 10 ms later */
  cr_assert_eq(xfer_multi_add(m, t->x), XFER_M_OK);
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  cr_assert_eq(tr.count, 2);
  cr_assert_eq(tr.timeouts[1], 10, "armed for 10 ms");
  cr_assert_eq(xfer_multi_remove(m, t->x), XFER_M_OK); /* nothing due */
  cr_assert_eq(xfer_multi_set_timer_cb(m, th_timerrec_cb, &tr), XFER_M_OK);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(tr.count, 3);
  cr_assert_eq(tr.timeouts[2], -1, "the timer armed before is stopped");

  /* Replaced: the new callback hears the deadline at the next call. */
  th_timerrec_init(&tr);
  m = xfer_multi_new(NULL);
  xfer_multi_set_timer_cb(m, th_timerrec_cb, &tr);
  t = tt_new(2);
  t->on_run = expire_by_id;
  cr_assert_eq(xfer_multi_add(m, t->x), XFER_M_OK);
  cr_assert_eq(tr.count, 1);
  cr_assert_eq(xfer_multi_set_timer_cb(m, th_timerrec_cb, &other), XFER_M_OK);
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  cr_assert_eq(other.count, 1);
  cr_assert_eq(tr.count, 1, "the replaced one hears nothing more");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(tr.count, 1);
  cr_assert_eq(other.timeouts[other.count - 1], -1);
}

/* A test transfer that waits for IN on its own socket pair and runs
 * `on_run`, in a multi whose timer callback records into tr, on a test
 * clock that stands still at 1000 ms. Returns the pair's first fd. */
static int timed_on_a_socket(xfer_multi *m, struct th_timerrec *tr,
                             struct tt *a,
                             enum xfer__step (*on_run)(struct tt *, unsigned)) {
  int sv[2];

  th_clock_install(MS(1000), 0);
  th_timerrec_init(tr);
  xfer_multi_set_timer_cb(m, th_timerrec_cb, tr);
  th_socketpair(sv);
  a->close_fds[a->nclose++] = sv[0];
  a->close_fds[a->nclose++] = sv[1];
  tt_want(a, sv[0], XFER_POLL_IN);
  a->on_run = on_run;
  return sv[0];
}

/* Deadlines that move later are not told one by one: the armed timer
 * fires, and the next deadline is told then. One that moves earlier is
 * told at once. xfer_multi_destroy() stops a timer still armed (-1). */
static enum xfer__step move_deadline(struct tt *t, unsigned due) {
  (void)due;
  t->state++;
  xfer__expire_in(t->x, XFER__EXPIRE_TOTAL, MS(t->user ? 5 : 10 * t->state));
  return XFER__STEP_AGAIN;
}

TH_TEST(multi, timer_callback_hears_a_later_deadline_only_when_it_fires) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_timerrec tr;
  struct tt *a = tt_new(1);
  int running, fd = timed_on_a_socket(m, &tr, a, move_deadline);

  xfer_multi_add(m, a->x);
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  cr_assert_eq(tr.count, 2);
  cr_assert_eq(tr.timeouts[1], 10); /* deadline 1010 */
  /* Events that push the deadline later (1020, 1030, ...) tell nothing. */
  for (int i = 0; i < 5; i++)
    cr_assert_eq(xfer_multi_socket_action(m, 77, XFER_CSELECT_IN, &running),
                 XFER_M_OK) /* 77: not a socket of a: a is not run */;
  cr_assert_eq(xfer_multi_socket_action(m, fd, XFER_CSELECT_IN, &running),
               XFER_M_OK); /* runs a: deadline 1020 */
  cr_assert_eq(xfer_multi_socket_action(m, fd, XFER_CSELECT_IN, &running),
               XFER_M_OK); /* 1030 */
  cr_assert_eq(a->runs, 3);
  cr_assert_eq(tr.count, 2, "later deadlines are not told");
  /* The armed timer fires at 1010: nothing due, the real one is told. */
  th_clock_advance(MS(10));
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  cr_assert_eq(a->runs, 3, "nothing was due");
  cr_assert_eq(tr.count, 3);
  cr_assert_eq(tr.timeouts[2], 20);
  /* A deadline earlier than the armed one is told at once. */
  a->user = a;
  cr_assert_eq(xfer_multi_socket_action(m, fd, XFER_CSELECT_IN, &running),
               XFER_M_OK); /* 1015 */
  cr_assert_eq(tr.count, 4);
  cr_assert_eq(tr.timeouts[3], 5);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(tr.count, 5);
  cr_assert_eq(tr.timeouts[4], -1, "destroy stops the armed timer");
}

/* An application that performs from its timer, which fired a little
 * early (libuv counts a timer from the start of its loop's turn): nothing
 * is due yet, and the deadline is told again, or no timer would be armed
 * and the transfer would wait for an unrelated event. */
static enum xfer__step done_at_deadline(struct tt *t, unsigned due) {
  if (t->state++ == 0)
    xfer__expire_in(t->x, XFER__EXPIRE_TOTAL, MS(10));
  return (due & (1u << XFER__EXPIRE_TOTAL)) ? XFER__STEP_DONE
                                             : XFER__STEP_AGAIN;
}

TH_TEST(multi, a_perform_from_a_timer_that_fired_early_arms_it_again) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_timerrec tr;
  struct tt *a = tt_new(1);
  int running;

  th_clock_install(MS(1000), 0);
  th_timerrec_init(&tr);
  xfer_multi_set_timer_cb(m, th_timerrec_cb, &tr);
  a->on_run = done_at_deadline;
  cr_assert_eq(xfer_multi_add(m, a->x), XFER_M_OK);
  cr_assert_eq(xfer_multi_perform(m, &running), XFER_M_OK);
  cr_assert_eq(a->runs, 1);
  cr_assert_eq(tr.timeouts[tr.count - 1], 10);
  th_clock_advance(MS(9)); /* the timer fires 1 ms early */
  tr.count = 0;
  cr_assert_eq(xfer_multi_perform(m, &running), XFER_M_OK);
  cr_assert_eq(running, 1, "not due yet");
  cr_assert_eq(tr.count, 1, "the timer is armed again");
  cr_assert_eq(tr.timeouts[0], 1);
  th_clock_advance(MS(1));
  cr_assert_eq(xfer_multi_perform(m, &running), XFER_M_OK);
  cr_assert_eq(running, 0);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
}

/* A call that leaves transfers running and no deadline at all tells -1
 * to a timer it told before, once: left to fire, that timer would make
 * every wait of the application's loop arm a kernel timer until then.
 * At most once per XFER__TIMER_STOP_EVERY_MS: a deadline that comes and
 * goes with every request would cost a -1 and a timeout each. A refused
 * -1 is an error and is told again at the next call; a timer stopped
 * that way is not stopped again by destroy. (An idle multi's timer is
 * left to fire: timer_callback_hears_only_changes.) */
static enum xfer__step deadline_then_none(struct tt *t, unsigned due) {
  (void)due;
  if (t->state++ == 0)
    xfer__expire_in(t->x, XFER__EXPIRE_TOTAL, MS(10));
  else
    xfer__expire_clear(t->x, XFER__EXPIRE_TOTAL);
  return XFER__STEP_AGAIN;
}

TH_TEST(multi, a_busy_multi_with_no_deadline_left_stops_its_timer) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_timerrec tr;
  struct tt *a = tt_new(1);
  int running, fd = timed_on_a_socket(m, &tr, a, deadline_then_none);

  cr_assert_eq(xfer_multi_add(m, a->x), XFER_M_OK);
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  cr_assert_eq(tr.count, 2);
  cr_assert_eq(tr.timeouts[1], 10);
  /* Its deadline goes; it still runs (waits for its socket). */
  cr_assert_eq(xfer_multi_socket_action(m, fd, XFER_CSELECT_IN, &running),
               XFER_M_OK);
  cr_assert_eq(running, 1);
  cr_assert_eq(tr.count, 3);
  cr_assert_eq(tr.timeouts[2], -1, "no deadline left: the timer stops");
  cr_assert_eq(xfer_multi_socket_action(m, fd, XFER_CSELECT_IN, &running),
               XFER_M_OK);
  cr_assert_eq(a->runs, 3);
  cr_assert_eq(tr.count, 3, "told once");

  /* A deadline again, and gone again at once: no second -1 so soon. */
  a->state = 0;
  cr_assert_eq(xfer_multi_socket_action(m, fd, XFER_CSELECT_IN, &running),
               XFER_M_OK);
  cr_assert_eq(tr.count, 4);
  cr_assert_eq(tr.timeouts[3], 10);
  th_clock_advance(MS(XFER__TIMER_STOP_EVERY_MS) - 1);
  cr_assert_eq(xfer_multi_socket_action(m, fd, XFER_CSELECT_IN, &running),
               XFER_M_OK);
  cr_assert_eq(tr.count, 4, "one -1 per %d ms at most",
               XFER__TIMER_STOP_EVERY_MS);

  /* Past that, the next call tells it. Refused: an error, and told
   * again at the next call. */
  th_clock_advance(1);
  tr.answer = -1;
  cr_assert_eq(xfer_multi_socket_action(m, 77, XFER_CSELECT_IN, &running),
               XFER_M_TIMER_CALLBACK);
  cr_assert_eq(tr.count, 5);
  cr_assert_eq(tr.timeouts[4], -1);
  /* Refused, the timer counts as still armed (for 1010): a later
   * deadline waits for it to fire. */
  tr.answer = 0;
  a->state = 0;
  cr_assert_eq(xfer_multi_socket_action(m, fd, XFER_CSELECT_IN, &running),
               XFER_M_OK); /* its deadline: 1110 */
  cr_assert_eq(tr.count, 5);
  cr_assert_eq(xfer_multi_socket_action(m, fd, XFER_CSELECT_IN, &running),
               XFER_M_OK); /* gone again, and no deadline left */
  cr_assert_eq(xfer_multi_socket_action(m, 77, XFER_CSELECT_IN, &running),
               XFER_M_OK); /* runs nothing */
  cr_assert_eq(tr.count, 6);
  cr_assert_eq(tr.timeouts[5], -1);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(tr.count, 6, "stopped already: destroy tells nothing");
}

TH_TEST(multi, timeout_is_rounded_up_to_whole_milliseconds) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_timerrec tr;
  struct tt *a = tt_new(1);

  th_clock_install(MS(1000), 0);
  th_timerrec_init(&tr);
  xfer_multi_set_timer_cb(m, th_timerrec_cb, &tr);
  a->on_run = expire_by_id;
  xfer_multi_add(m, a->x);
  th_clock_advance(MS(1) / 2); /* the deadline is 9.5 ms away */
  xfer_multi_socket_timeout(m, NULL);
  cr_assert_eq(tr.timeouts[tr.count - 1], 10, "never fire early");
  xfer_multi_destroy(m);
}

TH_TEST(multi, refusing_timer_callback_is_an_error) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_timerrec tr;
  struct tt *a = tt_new(1);

  th_clock_install(MS(1000), 0);
  th_timerrec_init(&tr);
  tr.answer = -1;
  a->on_run = expire_by_id; /* wants to run again 10 ms later */
  xfer_multi_set_timer_cb(m, th_timerrec_cb, &tr);
  cr_assert_eq(xfer_multi_add(m, a->x), XFER_M_TIMER_CALLBACK);
  /* Refused, so no timer is armed: the next call tells it again. */
  tr.answer = 0;
  cr_assert_eq(xfer_multi_socket_action(m, 77, XFER_CSELECT_IN, NULL),
               XFER_M_OK); /* a is due (its run now), and runs */
  cr_assert_eq(tr.count, 2);
  cr_assert_eq(tr.timeouts[1], 10);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
}

/* --- time keeping (brief rule 2) ------------------------------------------ */

static enum xfer__step stamp_and_continue(struct tt *t, unsigned due) {
  if (t->state < XFER__PHASE_TOTAL)
    xfer__stamp(t->x, (enum xfer__phase)t->state++);
  xfer__expire_in(t->x, XFER__EXPIRE_RUN_NOW, 0);
  return t->state >= 4 ? XFER__STEP_DONE : XFER__STEP_AGAIN;
}

TH_TEST(multi, every_transfer_run_has_at_least_the_entry_reading) {
  enum { N = 40 };
  xfer_multi *m = xfer_multi_new(NULL);
  struct tt *t[N];
  int running = 1;

  th_clock_install(MS(1000), MS(1)); /* every read 1 ms later */
  for (int i = 0; i < N; i++) {
    t[i] = tt_new(i);
    t[i]->on_run = stamp_and_continue;
    xfer_multi_add(m, t[i]->x);
  }
  for (int call = 0; call < 10 && running; call++) {
    xfer__time entry = th_clock_peek(); /* what this call reads first */
    int before[N];
    for (int i = 0; i < N; i++)
      before[i] = t[i]->runs;
    cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
    for (int i = 0; i < N; i++)
      if (t[i]->runs > before[i])
        cr_assert_geq(t[i]->run_now[t[i]->runs - 1], entry,
                      "transfer %d ran with a stale now", i);
  }
  cr_assert_eq(running, 0);
  for (int i = 0; i < N; i++) {
    cr_assert(tt_now_monotonic(t[i]), "transfer %d went back in time", i);
    th_expect_timeline_ordered(t[i]->x);
  }
  xfer_multi_destroy(m);
}

static void expect_reads_per_call(int n) {
  xfer_multi *m = xfer_multi_new(NULL);
  xfer_multi_stats before = {0}, after = {0};

  for (int i = 0; i < n; i++)
    xfer_multi_add(m, tt_new(i)->x);
  xfer_multi_get_stats(m, &before);
  cr_assert_eq(before.clock_reads, (uint64_t)n, "one read per add");
  cr_assert_eq(xfer_multi_socket_timeout(m, NULL), XFER_M_OK);
  xfer_multi_get_stats(m, &after);
  cr_assert_eq(after.xfers_run - before.xfers_run, (uint64_t)n);
  cr_assert_eq(after.clock_reads - before.clock_reads,
               (uint64_t)(1 + n / XFER__CLOCK_REFRESH_EVERY),
               "%d transfers: %llu reads", n,
               (unsigned long long)(after.clock_reads - before.clock_reads));
  before = after;
  cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
  xfer_multi_get_stats(m, &after);
  cr_assert_eq(after.clock_reads - before.clock_reads,
               (uint64_t)(1 + n / XFER__CLOCK_REFRESH_EVERY));
  xfer_multi_destroy(m);
}

TH_TEST(multi, a_call_reads_the_clock_once_plus_once_per_16_transfers) {
  cr_assert_eq(XFER__CLOCK_REFRESH_EVERY, 16);
  expect_reads_per_call(100); /* 1 + 6 */
  expect_reads_per_call(16);  /* 1 + 1 */
  expect_reads_per_call(15);  /* 1 */
  expect_reads_per_call(1);
}

TH_TEST(multi, slow_application_callback_keeps_timelines_ordered) {
  enum { N = 40 };
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_sockrec rec;
  struct tt *t[N];
  int running = 1;
  xfer__time after_slow;

  th_clock_install(MS(1000), 0);
  th_sockrec_init(&rec);
  rec.advance_by = MS(50); /* every socket callback takes 50 ms */
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
  for (int i = 0; i < N; i++) {
    t[i] = tt_new(i);
    t[i]->on_run = stamp_and_continue;
    tt_want(t[i], 100 + i, XFER_POLL_IN);
    xfer_multi_add(m, t[i]->x);
  }
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  after_slow = th_clock_peek();
  /* No read after a callback: the loop carried its `now` over the first 16
   * transfers, then read the clock again and saw the 16 slow callbacks. */
  {
    int stale = 0;
    for (int i = 0; i < N; i++) {
      if (t[i]->run_now[0] == MS(1000))
        stale++;
      else
        cr_assert_geq(t[i]->run_now[0], MS(1000) + 16 * MS(50));
      cr_assert_lt(t[i]->run_now[0], after_slow);
    }
    cr_assert_eq(stale, XFER__CLOCK_REFRESH_EVERY);
  }
  for (int i = 0; i < 10 && running; i++)
    cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  cr_assert_eq(running, 0);
  for (int i = 0; i < N; i++) {
    cr_assert(tt_now_monotonic(t[i]));
    th_expect_timeline_ordered(t[i]->x);
  }
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
}

/* a acts for b (as HTTP/2 will dispatch data to another stream): b's clock
 * follows a's, and b runs in the same call. */
static enum xfer__step act_for_other(struct tt *t, unsigned due) {
  struct tt *other = t->user;

  if (other && t->state++ == 1) {
    t->x->now += MS(7); /* a recorded an event later than the loop's now */
    xfer__now_update(other->x, t->x);
  }
  return XFER__STEP_AGAIN;
}

TH_TEST(multi, transfer_acting_for_another_moves_its_clock) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct tt *a = tt_new(1), *b = tt_new(2);
  int runs;

  th_clock_install(MS(1000), 0);
  a->on_run = act_for_other;
  a->user = b;
  xfer_multi_add(m, a->x);
  xfer_multi_add(m, b->x);
  xfer_multi_socket_timeout(m, NULL);
  runs = b->runs;
  tt_want(a, 5, XFER_POLL_IN);
  {
    struct xfer__pollset ps;
    xfer__pollset_reset(&ps);
    a->x->handler->pollset(a->x, &ps);
    xfer__mev_assess(&m->loop.ev, &a->x->ev, &ps);
  }
  xfer_multi_socket_action(m, 5, XFER_CSELECT_IN, NULL);
  cr_assert_eq(b->runs, runs + 1, "b was marked dirty and ran");
  cr_assert_eq(b->run_now[b->runs - 1], MS(1007));
  cr_assert(tt_now_monotonic(b));
  xfer_multi_destroy(m);
}

/* --- real drivers ---------------------------------------------------------- */

/* A client writes "ping" when its socket is writable and waits for "pong";
 * a server reads "ping", answers 5 ms later (a timer), and is done. */
static enum xfer__step client_run(struct tt *t, unsigned due) {
  int fd = t->close_fds[0];
  char buf[8];
  ssize_t n;

  switch (t->state) {
  case 0:
    tt_want(t, fd, XFER_POLL_OUT);
    t->state = 1;
    return XFER__STEP_AGAIN;
  case 1:
    n = write(fd, "ping", 4);
    if (n < 0 && errno == EAGAIN)
      return XFER__STEP_AGAIN;
    cr_assert_eq(n, 4);
    xfer__stamp(t->x, XFER__PHASE_CONNECT);
    tt_want(t, fd, XFER_POLL_IN);
    t->state = 2;
    return XFER__STEP_AGAIN;
  default:
    n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EAGAIN)
      return XFER__STEP_AGAIN;
    cr_assert_eq(n, 4);
    cr_assert_eq(memcmp(buf, "pong", 4), 0);
    xfer__stamp(t->x, XFER__PHASE_STARTTRANSFER);
    return XFER__STEP_DONE;
  }
}

static enum xfer__step server_run(struct tt *t, unsigned due) {
  int fd = t->close_fds[0];
  char buf[8];
  ssize_t n;

  switch (t->state) {
  case 0:
    tt_want(t, fd, XFER_POLL_IN);
    t->state = 1;
    return XFER__STEP_AGAIN;
  case 1:
    n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EAGAIN)
      return XFER__STEP_AGAIN;
    cr_assert_eq(n, 4);
    tt_want(t, fd, 0);
    xfer__expire_in(t->x, XFER__EXPIRE_RETRY_AFTER, MS(5));
    t->state = 2;
    return XFER__STEP_AGAIN;
  default:
    if (!(due & (1u << XFER__EXPIRE_RETRY_AFTER)))
      return XFER__STEP_AGAIN;
    cr_assert_eq(write(fd, "pong", 4), 4);
    return XFER__STEP_DONE;
  }
}

enum { PAIRS = 20 };

static void add_pairs(xfer_multi *m, struct tt *cl[], struct tt *sv[]) {
  for (int i = 0; i < PAIRS; i++) {
    int fds[2];
    th_socketpair(fds);
    cl[i] = tt_new(i);
    sv[i] = tt_new(100 + i);
    cl[i]->on_run = client_run;
    sv[i]->on_run = server_run;
    cl[i]->close_fds[0] = fds[0];
    cl[i]->nclose = 1;
    sv[i]->close_fds[0] = fds[1];
    sv[i]->nclose = 1;
    cr_assert_eq(xfer_multi_add(m, cl[i]->x), XFER_M_OK);
    cr_assert_eq(xfer_multi_add(m, sv[i]->x), XFER_M_OK);
  }
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void expect_all_done(xfer_multi *m, int expected) {
  const xfer_msg *msg;
  int done = 0;

  while ((msg = xfer_multi_info_read(m, NULL))) {
    cr_assert_eq(msg->result, XFER_OK, "%s", xfer_get_error_detail(msg->x));
    th_expect_timeline_ordered(msg->x);
    done++;
  }
  cr_assert_eq(done, expected);
}

/* An application's loop: epoll for sockets, its own deadline for the
 * timer, and nothing else. epoll_ctl fails on an ADD of a watched fd or a
 * MOD/DEL of an unwatched one, so it checks our reports too. */
struct app {
  int ep;
  int64_t deadline_ms; /* -1: no timer */
  int adds, mods, dels;
};

static int watched;

static int app_socket_cb(xfer_multi *m, int fd, int what, void *userp,
                         void *socketp) {
  struct app *app = userp;
  struct epoll_event ev = {.data.fd = fd};

  if (what == XFER_POLL_REMOVE) {
    cr_assert_not_null(socketp);
    cr_assert_eq(epoll_ctl(app->ep, EPOLL_CTL_DEL, fd, NULL), 0, "DEL %d: %s",
                 fd, strerror(errno));
    app->dels++;
    return 0;
  }
  ev.events = ((what & XFER_POLL_IN) ? EPOLLIN : 0) |
              ((what & XFER_POLL_OUT) ? EPOLLOUT : 0);
  if (!socketp) {
    cr_assert_eq(epoll_ctl(app->ep, EPOLL_CTL_ADD, fd, &ev), 0, "ADD %d: %s",
                 fd, strerror(errno));
    xfer_multi_assign(m, fd, &watched);
    app->adds++;
  } else {
    cr_assert_eq(epoll_ctl(app->ep, EPOLL_CTL_MOD, fd, &ev), 0, "MOD %d: %s",
                 fd, strerror(errno));
    app->mods++;
  }
  return 0;
}

static int app_timer_cb(xfer_multi *m, long timeout_ms, void *userp) {
  struct app *app = userp;
  app->deadline_ms = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
  return 0;
}

TH_TEST(multi, epoll_loop_drives_the_multi_through_its_callbacks) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct tt *cl[PAIRS], *sv[PAIRS];
  struct app app = {.ep = epoll_create1(EPOLL_CLOEXEC), .deadline_ms = -1};
  int64_t give_up = mono_ms() + 5000;
  int running = 1, iterations = 0;
  xfer_multi_stats st = {0};

  cr_assert_geq(app.ep, 0);
  xfer_multi_set_socket_cb(m, app_socket_cb, &app);
  xfer_multi_set_timer_cb(m, app_timer_cb, &app);
  add_pairs(m, cl, sv);
  while (running && iterations++ < 10000 && mono_ms() < give_up) {
    struct epoll_event evs[16];
    int wait_ms = -1, n;
    if (app.deadline_ms >= 0) {
      int64_t left = app.deadline_ms - mono_ms();
      wait_ms = left < 0 ? 0 : (int)left;
    }
    n = epoll_wait(app.ep, evs, 16, wait_ms > 1000 ? 1000 : wait_ms);
    cr_assert_geq(n, 0);
    if (n == 0 && app.deadline_ms >= 0 && mono_ms() >= app.deadline_ms) {
      app.deadline_ms = -1; /* one-shot, as libuv's and everyone's */
      cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
    }
    for (int i = 0; i < n; i++) {
      int ev = ((evs[i].events & EPOLLIN) ? XFER_CSELECT_IN : 0) |
               ((evs[i].events & EPOLLOUT) ? XFER_CSELECT_OUT : 0) |
               ((evs[i].events & (EPOLLERR | EPOLLHUP)) ? XFER_CSELECT_ERR : 0);
      cr_assert_eq(xfer_multi_socket_action(m, evs[i].data.fd, ev, &running),
                   XFER_M_OK);
    }
  }
  cr_assert_eq(running, 0, "stuck after %d iterations", iterations);
  expect_all_done(m, 2 * PAIRS);
  cr_assert_eq(app.adds, 2 * PAIRS);
  cr_assert_eq(app.dels, 2 * PAIRS);
  cr_assert_eq(app.mods, PAIRS, "each client went OUT -> IN once");
  xfer_multi_get_stats(m, &st);
  cr_assert_eq(st.sockets_tracked, 0);
  cr_assert_eq(st.socket_cb_calls, (uint64_t)(app.adds + app.mods + app.dels));
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  close(app.ep);
}

TH_TEST(multi, perform_and_poll_without_an_event_loop) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct tt *cl[PAIRS], *sv[PAIRS];
  int64_t give_up = mono_ms() + 5000;
  int running = 1, iterations = 0, numfds, ready_seen = 0;

  add_pairs(m, cl, sv);
  while (running && iterations++ < 10000 && mono_ms() < give_up) {
    cr_assert_eq(xfer_multi_perform(m, &running), XFER_M_OK);
    if (!running)
      break;
    cr_assert_eq(xfer_multi_poll(m, 1000, &numfds), XFER_M_OK);
    ready_seen += numfds;
  }
  cr_assert_eq(running, 0);
  cr_assert_gt(ready_seen, 0, "poll saw the sockets become ready");
  expect_all_done(m, 2 * PAIRS);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
}

TH_TEST(multi, poll_waits_no_longer_than_the_earliest_deadline) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct tt *a = tt_new(1);
  int64_t start;
  int numfds = -1;

  a->on_run = expire_by_id; /* a deadline 10 ms after its first run */
  xfer_multi_add(m, a->x);
  xfer_multi_perform(m, NULL);
  start = mono_ms();
  cr_assert_eq(xfer_multi_poll(m, 5000, &numfds), XFER_M_OK);
  cr_assert_lt(mono_ms() - start, 1000, "poll ignored the deadline");
  cr_assert_eq(numfds, 0);
  xfer_multi_destroy(m);
}

TH_TEST(multi, stats_count_what_happened) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_sockrec rec;
  struct th_timerrec tr;
  struct tt *a = tt_new(1);
  xfer_multi_stats st = {0};

  th_sockrec_init(&rec);
  th_timerrec_init(&tr);
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
  xfer_multi_set_timer_cb(m, th_timerrec_cb, &tr);
  a->on_run = finish_at_once;
  tt_want(a, 12, XFER_POLL_IN);
  xfer_multi_add(m, a->x);
  xfer_multi_socket_action(m, 12, XFER_CSELECT_IN, NULL);
  xfer_multi_socket_timeout(m, NULL);
  xfer_multi_get_stats(m, &st);
  cr_assert_eq(st.clock_reads, 3);
  cr_assert_eq(xfer_multi_remove(m, a->x), XFER_M_OK);
  xfer_multi_get_stats(m, &st);
  cr_assert_eq(st.clock_reads, 3, "removing a finished transfer reads none");
  cr_assert_eq(st.wakeups, 2);
  cr_assert_eq(st.xfers_added, 1);
  cr_assert_eq(st.xfers_run, 1);
  cr_assert_eq(st.xfers_done, 1);
  cr_assert_eq(st.running, 0);
  cr_assert_eq(st.timer_cb_calls, (uint64_t)tr.count);
  cr_assert_eq(st.socket_cb_calls, (uint64_t)rec.count);
  xfer_multi_destroy(m);
}

/* --- the wake-up fd -------------------------------------------------------- */

/* Refuses every eventfd (the multi's wake-up) while `refuse_eventfds`. */
static bool refuse_eventfds;

static int refusing_socket_cb(xfer_multi *m, int fd, int what, void *userp,
                              void *socketp) {
  char path[64], target[64];
  ssize_t n;

  (void)m, (void)userp, (void)socketp;
  if (what == XFER_POLL_REMOVE || !refuse_eventfds)
    return 0;
  snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  n = readlink(path, target, sizeof(target) - 1);
  if (n > 0) {
    target[n] = '\0';
    if (strstr(target, "eventfd"))
      return -1;
  }
  return 0;
}

/* A multi whose socket callback refuses its wake-up fd (made for the
 * first transfer that may wait: here, a pool with a limit) could never be
 * woken by another thread: the transfer that needed it fails with
 * XFER_E_SOCKET_CALLBACK, and the multi stays usable: accepted later, the
 * next transfer runs (it used to hang every later waiter). */
TH_TEST(multi, a_refused_wake_up_fd_fails_the_transfer_not_the_multi) {
  struct ts_server *web = ts_start(NULL);
  xfer_pool *p = xfer_pool_new(&(xfer_pool_opts){.max_per_destination = 1});
  xfer_multi *m = xfer_multi_new(p);
  xfer *x, *y;

  cr_assert(web && p && m);
  xfer_multi_set_socket_cb(m, refusing_socket_cb, NULL);
  refuse_eventfds = true;
  x = th_get(m, th_url(ts_port(web), "/bytes/1"), NULL);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_E_SOCKET_CALLBACK);
  cr_assert(strstr(xfer_get_error_detail(x), "wake-up fd"), "%s",
            xfer_get_error_detail(x));
  cr_assert_null(m->loop.wake, "not kept: nobody could rely on it");
  refuse_eventfds = false;
  y = th_get(m, th_url(ts_port(web), "/bytes/1"), NULL);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, y), XFER_OK, "%s", xfer_get_error_detail(y));
  cr_assert_not_null(m->loop.wake);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
  xfer_free(x);
  xfer_free(y);
  ts_stop(web);
}

/* --- one result ---------------------------------------------------------------- */

static int refuse_all(xfer_multi *m, int fd, int what, void *userp,
                      void *socketp) {
  (void)m, (void)fd, (void)userp, (void)socketp;
  return what == XFER_POLL_REMOVE ? 0 : -1;
}

/* What the message says is what xfer_get_result() says, whatever ended
 * the transfer; one stopped before it finished says so with a code of its
 * own. */
TH_TEST(multi, the_result_is_the_same_everywhere) {
  struct ts_server *web = ts_start(NULL);
  xfer_multi *m = xfer_multi_new(NULL);
  xfer *refused = xfer_new(), *removed = xfer_new(), *destroyed = xfer_new();
  const xfer_msg *msg;

  cr_assert(web && m);
  xfer_set_url(refused, th_url(ts_port(web), "/bytes/1"));
  xfer_multi_set_socket_cb(m, refuse_all, NULL);
  cr_assert_eq(xfer_multi_add(m, refused), XFER_M_OK);
  for (int i = 0; i < 100 && !(msg = xfer_multi_info_read(m, NULL)); i++) {
    cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
    cr_assert_eq(xfer_multi_poll(m, 100, NULL), XFER_M_OK);
  }
  cr_assert_not_null(msg);
  cr_assert_eq(msg->result, XFER_E_SOCKET_CALLBACK);
  cr_assert_eq(xfer_get_result(refused), msg->result, "the same as the message");

  xfer_multi_set_socket_cb(m, NULL, NULL);
  xfer_set_url(removed, th_url(ts_port(web), "/never"));
  cr_assert_eq(xfer_multi_add(m, removed), XFER_M_OK);
  cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
  cr_assert_eq(xfer_multi_remove(m, removed), XFER_M_OK);
  cr_assert_eq(xfer_get_result(removed), XFER_E_STOPPED);
  cr_assert(strstr(xfer_get_error_detail(removed),
                   "removed from its multi before it finished"),
            "%s", xfer_get_error_detail(removed));

  xfer_set_url(destroyed, th_url(ts_port(web), "/never"));
  cr_assert_eq(xfer_multi_add(m, destroyed), XFER_M_OK);
  cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
  cr_assert_eq(xfer_multi_remove(m, refused), XFER_M_OK);
  cr_assert_eq(xfer_get_result(refused), XFER_E_SOCKET_CALLBACK,
               "a finished one keeps its result when removed");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_get_result(destroyed), XFER_E_STOPPED);
  cr_assert(strstr(xfer_get_error_detail(destroyed), "destroyed"));
  xfer_free(refused);
  xfer_free(removed);
  xfer_free(destroyed);
  ts_stop(web);
}

/* --- what the pages promise, checked ------------------------------------------ */

/* An event mask of 0, or ERR alone, on a transfer's socket still runs it:
 * the transfer finds out what happened (the docs: any event wakes the
 * socket's users). */
TH_TEST(multi, any_event_mask_runs_the_sockets_users) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct tt *a = tt_new(1);
  int sv[2];

  th_socketpair(sv);
  a->close_fds[0] = sv[0];
  a->close_fds[1] = sv[1];
  a->nclose = 2;
  tt_want(a, sv[0], XFER_POLL_IN);
  cr_assert_eq(xfer_multi_add(m, a->x), XFER_M_OK);
  cr_assert_eq(xfer_multi_socket_timeout(m, NULL), XFER_M_OK);
  cr_assert_eq(a->runs, 1);
  cr_assert_eq(xfer_multi_socket_action(m, sv[0], 0, NULL), XFER_M_OK);
  cr_assert_eq(a->runs, 2, "a mask of 0");
  cr_assert_eq(xfer_multi_socket_action(m, sv[0], XFER_CSELECT_ERR, NULL),
               XFER_M_OK);
  cr_assert_eq(a->runs, 3, "ERR alone");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
}

/* A transfer that xfer_multi_destroy() stopped (XFER_E_STOPPED) is the
 * application's again: added to another multi, it runs to its end. */
TH_TEST(multi, a_transfer_stopped_by_destroy_runs_in_another_multi) {
  struct ts_server *web = ts_start(NULL);
  xfer_multi *first = xfer_multi_new(NULL), *second = xfer_multi_new(NULL);
  struct th_sink sink = {0};
  xfer *x = th_get(first, th_url(ts_port(web), "/delay/200/bytes/3"), &sink);

  cr_assert_eq(xfer_multi_perform(first, NULL), XFER_M_OK); /* under way */
  cr_assert_eq(xfer_multi_destroy(first), XFER_M_OK);
  cr_assert_eq(xfer_get_result(x), XFER_E_STOPPED);
  cr_assert(strstr(xfer_get_error_detail(x), "destroy"), "%s",
            xfer_get_error_detail(x));
  sink.len = 0;
  cr_assert_eq(xfer_multi_add(second, x), XFER_M_OK);
  th_run(second, 5000);
  cr_assert_eq(th_result(second, x), XFER_OK, "%s", xfer_get_error_detail(x));
  th_expect_pattern(sink.data, sink.len, 3);
  cr_assert_eq(xfer_multi_destroy(second), XFER_M_OK);
  xfer_free(x);
  th_sink_free(&sink);
  ts_stop(web);
}

/* A message already returned stays valid after its transfer is removed
 * (xfer_multi_info_read's page): its fields may still be read. */
TH_TEST(multi, a_message_read_stays_valid_after_the_remove) {
  struct ts_server *web = ts_start(NULL);
  xfer_multi *m = xfer_multi_new(NULL);
  xfer *x = th_get(m, th_url(ts_port(web), "/bytes/2"), NULL);
  const xfer_msg *msg = NULL;
  int running = 1, left = -1;

  for (int i = 0; i < 500 && running; i++) {
    cr_assert_eq(xfer_multi_perform(m, &running), XFER_M_OK);
    if (running)
      cr_assert_eq(xfer_multi_poll(m, 100, NULL), XFER_M_OK);
  }
  cr_assert_eq(running, 0);
  msg = xfer_multi_info_read(m, &left);
  cr_assert_not_null(msg);
  cr_assert_eq(left, 0);
  cr_assert_eq(xfer_multi_remove(m, x), XFER_M_OK);
  cr_assert_eq(msg->x, x, "read after the remove");
  cr_assert_eq(msg->result, XFER_OK);
  cr_assert_null(xfer_multi_info_read(m, NULL));
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  xfer_free(x);
  ts_stop(web);
}

/* xfer_multi_poll() returns at once when a transfer waits to run (one
 * just added, due at the 0 ms timer): the 10 s timeout given is not
 * waited. */
TH_TEST(multi, poll_returns_at_once_when_a_transfer_waits_to_run) {
  struct ts_server *web = ts_start(NULL);
  xfer_multi *m = xfer_multi_new(NULL);
  xfer *x = th_get(m, th_url(ts_port(web), "/bytes/1"), NULL);
  int64_t before = mono_ms();
  int numfds = -1;

  cr_assert_eq(xfer_multi_poll(m, 10000, &numfds), XFER_M_OK);
  cr_assert_lt(mono_ms() - before, 5000, "it waited for the timeout");
  cr_assert_eq(numfds, 0);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  xfer_free(x);
  ts_stop(web);
}

/* Destroy tells the timer callback -1 only when it was told a timeout:
 * one never told anything hears nothing (it armed no timer). */
TH_TEST(multi, destroy_tells_no_minus_one_to_a_timer_never_told) {
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_timerrec tr;

  th_timerrec_init(&tr);
  xfer_multi_set_timer_cb(m, th_timerrec_cb, &tr);
  cr_assert_eq(xfer_multi_socket_timeout(m, NULL), XFER_M_OK);
  cr_assert_eq(tr.count, 0, "nothing is due");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(tr.count, 0);
}

/* A transfer to a numeric host looks nothing up, so the DNS settings are
 * not fixed yet (they are fixed by the first lookup). */
TH_TEST(multi, a_numeric_host_leaves_the_dns_settings_open) {
  struct ts_server *web = ts_start(NULL);
  xfer_multi *m = xfer_multi_new(NULL);
  xfer *x = th_get(m, th_url(ts_port(web), "/bytes/1"), NULL);

  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK);
  cr_assert_eq(xfer_multi_set_dns_servers(m, "127.0.0.1:53"), XFER_M_OK);
  cr_assert_eq(xfer_multi_set_dns_timeout(m, 1000, 2), XFER_M_OK);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  xfer_free(x);
  ts_stop(web);
}
