/* lib/wake.c: a multi's wake-up across threads. An eventfd with
 * references: wake-ups collected under a lock are written after it, each
 * once per waiter granted, and a granter's reference keeps the descriptor
 * open after its multi dropped its own (a multi destroyed meanwhile), so
 * a write never reaches a number closed and given out again. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

#include "testhelp.h"
#include "wake.h"

static void wake_end(void) {
  cr_assert_eq(xfer_mem_set(NULL), XFER_OK);
}

static void setup(void) { cr_assert_eq(xfer_mem_set(&th_mem), XFER_OK); }

TestSuite(wake, .init = setup);

/* The counter read back (0: nothing written; the eventfd is
 * non-blocking). */
static uint64_t drain(int fd) {
  uint64_t n = 0;

  if (read(fd, &n, sizeof(n)) != (ssize_t)sizeof(n))
    return 0;
  return n;
}

TH_TEST(wake, a_flush_writes_each_wake_up_collected) {
  struct xfer__wake *w = xfer__wake_new();
  struct xfer__wakeups ws;

  cr_assert_not_null(w);
  cr_assert_eq(atomic_load(&w->refs), 1);
  cr_assert_neq(fcntl(w->fd, F_GETFL) & O_NONBLOCK, 0);
  cr_assert_neq(fcntl(w->fd, F_GETFD) & FD_CLOEXEC, 0);
  cr_assert_eq(drain(w->fd), 0, "nothing before a flush");
  xfer__wakeups_init(&ws);
  xfer__wakeups_add(&ws, w);
  xfer__wakeups_add(&ws, w); /* two waiters of one multi granted */
  xfer__wakeups_add(&ws, NULL); /* a waiter nobody wakes: nothing */
  cr_assert_eq(ws.n, 2);
  cr_assert_eq(atomic_load(&w->refs), 3, "a reference for each");
  cr_assert_eq(drain(w->fd), 0, "nothing written under the lock");
  xfer__wakeups_flush(&ws);
  cr_assert_eq(ws.n, 0);
  cr_assert_eq(atomic_load(&w->refs), 1, "the references dropped");
  cr_assert_eq(drain(w->fd), 2);
  xfer__wake_unref(w);
  cr_assert_eq(th_mem_live_bytes(), 0);
}

/* The multi drops its reference (destroyed) while a granter holds one:
 * the descriptor stays open until the granter's write is done, and the
 * last reference closes it. */
TH_TEST(wake, the_last_reference_closes_it) {
  struct xfer__wake *w = xfer__wake_new();
  struct xfer__wakeups ws;
  int fd;

  cr_assert_not_null(w);
  fd = w->fd;
  xfer__wakeups_init(&ws);
  xfer__wakeups_add(&ws, w);
  xfer__wake_unref(w); /* the multi's */
  cr_assert_neq(fcntl(fd, F_GETFD), -1, "still open for the granter");
  xfer__wakeups_flush(&ws); /* writes, then drops the last reference */
  cr_assert_eq(fcntl(fd, F_GETFD), -1, "closed by the last reference");
  cr_assert_eq(th_mem_live_bytes(), 0);
  xfer__wake_unref(NULL); /* nothing */
}

/* Out of memory: no wake-up, and nothing held. */
TH_TEST(wake, no_memory_no_wake_up) {
  th_mem_fail_at(1);
  cr_assert_null(xfer__wake_new());
  th_mem_fail_at(0);
  cr_assert_eq(th_mem_live_bytes(), 0);
}
