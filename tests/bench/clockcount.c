/*
 * LD_PRELOAD counter of clock reads: clock_gettime() and gettimeofday(),
 * the two ways the clients measured here read the time (libxfer and
 * libcurl use clock_gettime, wrk gettimeofday). The same counter for every
 * client. In-process readers call clockcount_get(); at exit the count is
 * written to the file $CLOCKCOUNT_OUT names, for clients we cannot change
 * (wrk).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static atomic_ulong reads;

unsigned long clockcount_get(void);
unsigned long clockcount_get(void) { return atomic_load(&reads); }

int clock_gettime(clockid_t id, struct timespec *ts) {
  static int (*real)(clockid_t, struct timespec *);

  atomic_fetch_add_explicit(&reads, 1, memory_order_relaxed);
  if (!real)
    real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT,
                                                        "clock_gettime");
  return real(id, ts);
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
  static int (*real)(struct timeval *restrict, void *restrict);

  atomic_fetch_add_explicit(&reads, 1, memory_order_relaxed);
  if (!real)
    real = (int (*)(struct timeval *restrict, void *restrict))dlsym(
        RTLD_NEXT, "gettimeofday");
  return real(tv, tz);
}

__attribute__((destructor)) static void write_count(void) {
  const char *path = getenv("CLOCKCOUNT_OUT");
  FILE *f;

  if (!path || !(f = fopen(path, "w")))
    return;
  fprintf(f, "%lu\n", atomic_load(&reads));
  fclose(f);
}
