/* lib/now.c: the one clock read, its counter, the test clock and the
 * no-clock-under-a-pool-lock assertion. */
#include <criterion/criterion.h>
#include <signal.h>

#include "testhelp.h"


static void now_end(void) {}


TH_TEST(now, monotonic_and_counted) {
  uint64_t reads = 0;
  xfer__time a = xfer__now_read(&reads);
  xfer__time b = xfer__now_read(&reads);
  xfer__time c = xfer__now_read(NULL);

  cr_assert_gt(a, 0);
  cr_assert_geq(b, a);
  cr_assert_geq(c, b);
  cr_assert_eq(reads, 2);
}

TH_TEST(now, test_clock_replaces_and_restores) {
  uint64_t reads = 0;

  th_clock_install(MS(5000), MS(1));
  cr_assert_eq(xfer__now_read(&reads), MS(5000));
  cr_assert_eq(xfer__now_read(&reads), MS(5001));
  th_clock_advance(MS(100));
  cr_assert_eq(xfer__now_read(&reads), MS(5102));
  cr_assert_eq(reads, 3);
  th_clock_uninstall();
  /* CLOCK_MONOTONIC again: a reading unrelated to the fake one. */
  cr_assert_neq(xfer__now_read(NULL), MS(5103));
}

TH_TEST(now, read_without_pool_lock_is_fine) {
  TH_ASSERT_NO_POOL_LOCK();
  (void)xfer__now_read(NULL);
}

#ifdef XFER_DEBUG
/* Brief rule 3: a clock read while this thread holds a pool lock is a bug
 * that debug builds stop at once. */
TH_TEST(now, read_under_pool_lock_aborts_in_debug, .signal = SIGABRT) {
  xfer__pool_lock_depth++;
  (void)xfer__now_read(NULL);
}
#endif
