/*
 * TAP output for the tests that are plain programs (their own main, not
 * Criterion): the threaded tests that must also run under TSan, where
 * Criterion cannot, and the test servers' self-tests. Header only.
 *
 *   tap_result("name", ok);  ...  return tap_done();
 */
#ifndef XFER_TAP_H
#define XFER_TAP_H

#include <stdbool.h>
#include <stdio.h>

static int tap_count;
static int tap_failed;

/* Reports one test case: "ok N - name" or "not ok N - name". */
static inline void tap_result(const char *name, bool ok) {
  tap_count++;
  if (!ok)
    tap_failed++;
  printf("%sok %d - %s\n", ok ? "" : "not ", tap_count, name);
  fflush(stdout);
}

/* Prints the plan (at the end, which TAP allows) and returns the exit
 * status: 0 when every case passed. */
static inline int tap_done(void) {
  printf("1..%d\n", tap_count);
  fflush(stdout);
  return tap_failed ? 1 : 0;
}

#endif /* XFER_TAP_H */
