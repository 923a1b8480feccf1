/* lib/mem.c: the allocator and its count of live blocks. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "testhelp.h"
#include "testserver.h"

static void mem_end(void) {}

TH_TEST(mem, live_blocks_follow_every_call) {
  long base = xfer__mem_live();
  void *a = xfer__malloc(10);
  void *b = xfer__calloc(4, 8);
  void *c = xfer__realloc(NULL, 16); /* a fresh block */

  cr_assert(a && b && c);
  cr_assert_eq(xfer__mem_live(), base + 3);
  a = xfer__realloc(a, 4096); /* moves, still one block */
  cr_assert_not_null(a);
  cr_assert_eq(xfer__mem_live(), base + 3);
  xfer__free(a);
  xfer__free(b);
  xfer__free(NULL); /* not counted */
  cr_assert_eq(xfer__mem_live(), base + 1);
  xfer__free(c);
  cr_assert_eq(xfer__mem_live(), base);
}

TH_TEST(mem, calloc_zeroes) {
  unsigned char *p = xfer__calloc(64, 1);

  cr_assert_not_null(p);
  for (int i = 0; i < 64; i++)
    cr_assert_eq(p[i], 0);
  xfer__free(p);
}

TH_TEST(mem, handles_are_all_given_back) {
  long base = xfer__mem_live();
  xfer_multi *m = xfer_multi_new(NULL);
  xfer *x = xfer_new();

  cr_assert_gt(xfer__mem_live(), base);
  xfer_multi_add(m, x);
  xfer_multi_destroy(m);
  xfer_free(x);
  cr_assert_eq(xfer__mem_live(), base);
}

/* --- allocator hooks -------------------------------------------------------- */

/* The hooks are testhelp's th_mem: they count calls and live bytes, and
 * fail the call th_mem_fail_at() names. */
static long fail_at;

TH_TEST(mem, hooks_get_every_allocation) {
  xfer_multi *m;

  cr_assert_eq(xfer_mem_set(&th_mem), XFER_OK);
  th_mem_fail_at(0);
  m = xfer_multi_new(NULL);
  cr_assert_not_null(m);
  cr_assert_gt(th_mem_calls(), 0);
  cr_assert_gt(th_mem_live_bytes(), 0);
  cr_assert_eq(xfer_mem_set(NULL), XFER_E_IN_USE, "blocks are live");
  xfer_multi_destroy(m);
  cr_assert_eq(th_mem_live_bytes(), 0, "every byte given back");
  cr_assert_eq(xfer_mem_set(NULL), XFER_OK);
  cr_assert_eq(xfer_mem_set(&(xfer_mem){NULL, th_mem.malloc, NULL, NULL, NULL}),
               XFER_E_BAD_ARGUMENT);
}

/* th_run(), except that the driver's own calls may fail for memory too
 * (xfer_multi_poll() grows its pollfd array): they are simply retried. */
static void run_tolerant(xfer_multi *m) {
  int running = 1;

  for (int turns = 0; running && turns < 500; turns++) {
    xfer_mcode rc = xfer_multi_perform(m, &running);
    cr_assert(rc == XFER_M_OK || rc == XFER_M_OUT_OF_MEMORY, "%s",
              xfer_multi_strerror(rc));
    if (running) {
      rc = xfer_multi_poll(m, 20, NULL);
      cr_assert(rc == XFER_M_OK || rc == XFER_M_OUT_OF_MEMORY, "%s",
                xfer_multi_strerror(rc));
    }
  }
  cr_assert_eq(running, 0, "fail at %ld: still running", fail_at);
}

/* The main paths, whole: a multi on a pool, a transfer that waits on its
 * socket, a second one that reuses the connection (checkout and return),
 * two at once over an idle limit of one (the pool evicts one to the
 * shutdown handle), everything destroyed. Each step may meet an
 * out-of-memory error; nothing else may go wrong. */
static void main_paths(int port) {
  xfer_pool *pool = xfer_pool_new(&(xfer_pool_opts){.max_idle_per_destination
                                                    = 1});
  xfer_multi *m = pool ? xfer_multi_new(pool) : NULL;
  xfer *xs[4] = {NULL, NULL, NULL, NULL};
  const char *paths[4] = {"/delay/10/bytes/100",
                          "/x/../delay/10/./bytes/50", /* dots removed */
                          "/delay/10/chunked/300/7",
                          "/redirect/302?to=/delay/10/bytes/20"};

  for (int round = 0; m && round < 2; round++) {
    int first = round == 0 ? 0 : 1, last = round == 0 ? 0 : 3;
    for (int i = first; i <= last; i++) {
      xs[i] = xfer_new();
      if (!xs[i])
        continue;
      if (xfer_set_url(xs[i], th_url(port, paths[i])) != XFER_OK ||
          xfer_set_follow_redirects(xs[i], 1) != XFER_OK ||
          xfer_multi_add(m, xs[i]) != XFER_M_OK) {
        xfer_free(xs[i]);
        xs[i] = NULL;
      }
    }
    run_tolerant(m);
    for (int i = first; i <= last; i++) {
      xfer_code rc;
      if (!xs[i])
        continue;
      rc = th_result(m, xs[i]);
      cr_assert(rc == XFER_OK || rc == XFER_E_OUT_OF_MEMORY,
                "fail at %ld: %s: %s", fail_at, xfer_strerror(rc),
                xfer_get_error_detail(xs[i]));
      /* Done means the redirect was followed: a Location that could not
       * be read for memory is an error, not a 302 as the result. */
      cr_assert(rc != XFER_OK || xfer_get_status(xs[i]) == 200,
                "fail at %ld: %s ended with %d", fail_at, paths[i],
                xfer_get_status(xs[i]));
      xfer_multi_remove(m, xs[i]);
      xfer_free(xs[i]);
      xs[i] = NULL;
    }
  }
  if (m)
    cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  if (pool)
    cr_assert_eq(xfer_pool_destroy(pool), XFER_OK);
}

/* The header strings are made when first asked: each allocation that
 * makes them may fail, the getter says so, and the next ask makes them. */
TH_TEST(mem, header_strings_made_on_demand_survive_failing_allocations) {
  struct ts_server *web = ts_start(NULL);
  xfer_multi *m;
  xfer *x;
  const char *name, *value;
  long made;

  cr_assert_eq(xfer_mem_set(&th_mem), XFER_OK);
  th_mem_fail_at(0);
  m = xfer_multi_new(NULL);
  x = th_get(m, th_url(ts_port(web), "/bytes/10"), NULL);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK);
  cr_assert_eq(xfer_multi_remove(m, x), XFER_M_OK);
  cr_assert_gt(xfer_get_header_count(x), 0);
  /* How many allocations making them takes (the buffers stay between
   * responses, so at most the first response's strings allocate). */
  th_mem_fail_at(0);
  cr_assert_str_eq(xfer_get_header(x, "content-length"), "10");
  made = th_mem_calls();
  cr_assert_gt(made, 0, "the parse made no strings: the getter did");
  xfer_free(x);

  for (long n = 1; n <= made; n++) {
    th_mem_fail_at(0);
    x = th_get(m, th_url(ts_port(web), "/bytes/10"), NULL);
    th_run(m, 5000);
    cr_assert_eq(th_result(m, x), XFER_OK);
    cr_assert_eq(xfer_multi_remove(m, x), XFER_M_OK);
    th_mem_fail_at(n);
    if (n % 2)
      cr_assert_null(xfer_get_header(x, "content-length"), "fail at %ld", n);
    else
      cr_assert_eq(xfer_get_header_at(x, 0, &name, &value),
                   XFER_E_OUT_OF_MEMORY, "fail at %ld", n);
    th_mem_fail_at(0);
    cr_assert_str_eq(xfer_get_header(x, "content-length"), "10");
    cr_assert_eq(xfer_get_header_at(x, 0, &name, &value), XFER_OK);
    xfer_free(x);
  }
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(th_mem_live_bytes(), 0);
  cr_assert_eq(xfer_mem_set(NULL), XFER_OK);
  ts_stop(web);
}

/* Every allocation of the main paths fails once, in turn. */
TH_TEST(mem, every_failing_allocation_gives_an_error_or_completes) {
  struct ts_server *web = ts_start(NULL);
  long total;

  cr_assert_eq(xfer_mem_set(&th_mem), XFER_OK);
  fail_at = 0;
  th_mem_fail_at(0);
  main_paths(ts_port(web)); /* counting */
  total = th_mem_calls();
  cr_assert_gt(total, 10);
  cr_assert_eq(th_mem_live_bytes(), 0);
  for (fail_at = 1; fail_at <= total; fail_at++) {
    th_mem_fail_at(fail_at);
    main_paths(ts_port(web));
    cr_assert_eq(xfer__mem_live(), 0, "fail at %ld: blocks left", fail_at);
    cr_assert_eq(th_mem_live_bytes(), 0, "fail at %ld: %ld bytes left",
                 fail_at, th_mem_live_bytes());
  }
  cr_assert_eq(xfer_mem_set(NULL), XFER_OK);
  ts_stop(web);
}
