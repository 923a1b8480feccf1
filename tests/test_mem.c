/* lib/mem.c: the allocator and its count of live blocks. */
#include <criterion/criterion.h>

#include "mem.h"
#include "testhelp.h"

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
