/* lib/transfer.c: the handle, its clock and its timeline. */
#include <criterion/criterion.h>

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
