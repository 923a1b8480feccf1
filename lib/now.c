/*
 * The one function that reads the clock, and the test hook that replaces
 * it. See docs/internals/time.md.
 */
#include "common.h"

#include <time.h>

#include "now.h"

XFER__THREAD_LOCAL int xfer__pool_lock_depth;

static xfer__clock_fn clock_override;
static void *clock_override_userp;

void xfer__now_set_clock(xfer__clock_fn fn, void *userp) {
  clock_override = fn;
  clock_override_userp = userp;
}

xfer__time xfer__now_read(uint64_t *reads) {
  struct timespec ts;

  /* Rule 3 of the brief: never a clock read while a pool lock is held. */
  XFER__ASSERT_NO_POOL_LOCK();
  if (reads)
    (*reads)++;
  if (clock_override)
    return clock_override(clock_override_userp);
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (xfer__time)ts.tv_sec * INT64_C(1000000000) + ts.tv_nsec;
}
