/*
 * Time keeping (docs/internals/time.md, seed keeping-time.md).
 *
 * xfer__now_read() is the only place in the library that reads the clock.
 * Every API entry calls it once; everything else is handed a `now`.
 */
#ifndef XFER_NOW_H
#define XFER_NOW_H

#include "common.h"

#include <stdint.h>

/* Nanoseconds on the monotonic clock (an arbitrary origin). */
typedef int64_t xfer__time;

#define XFER__NS_PER_MS INT64_C(1000000)
#define XFER__NS_PER_US INT64_C(1000)
#define XFER__TIME_NEVER INT64_MAX

/* `ms` milliseconds as a duration, saturated: one longer than the clock
 * can hold (about 292 years) is "never" (XFER__TIME_NEVER). ms >= 0. */
static inline xfer__time xfer__ms_to_ns(long ms) {
  return ms >= XFER__TIME_NEVER / XFER__NS_PER_MS
             ? XFER__TIME_NEVER
             : (xfer__time)ms * XFER__NS_PER_MS;
}

/* The time `d` after `t` (d >= 0), saturated at XFER__TIME_NEVER: a
 * deadline too far to count is none. */
static inline xfer__time xfer__time_after(xfer__time t, xfer__time d) {
  return d >= XFER__TIME_NEVER - t ? XFER__TIME_NEVER : t + d;
}

/* Reads the clock once and counts the read in *reads (may be NULL).
 * Debug builds assert that the calling thread holds no pool lock. */
xfer__time xfer__now_read(uint64_t *reads);

/* A replacement clock, for tests: fn(userp) is returned by every read from
 * then on. NULL restores CLOCK_MONOTONIC. Set it before any multi runs and
 * while none does: the pointer is not synchronised. */
typedef xfer__time (*xfer__clock_fn)(void *userp);
void xfer__now_set_clock(xfer__clock_fn fn, void *userp);

/*
 * The calling thread's pool lock depth. Pool locks raise it while held
 * in the builds that read it (XFER__POOL_LOCK_DEPTH_KEPT): debug builds,
 * where xfer__now_read() and the other "never under a pool lock" places
 * assert it is zero, and the lock statistics build of the bench. Other
 * builds leave it at zero, and their assertion is empty: thread-local
 * updates on every lock hold that nothing reads would cost the attached
 * fast path (docs/internals/performance.md).
 */
#if defined(XFER_DEBUG) || defined(XFER_LOCK_STATS)
#define XFER__POOL_LOCK_DEPTH_KEPT 1
#endif
extern XFER__THREAD_LOCAL int xfer__pool_lock_depth;

#ifdef XFER__POOL_LOCK_DEPTH_KEPT
#define XFER__ASSERT_NO_POOL_LOCK() assert(xfer__pool_lock_depth == 0)
#else
#define XFER__ASSERT_NO_POOL_LOCK() ((void)0)
#endif

#endif /* XFER_NOW_H */
