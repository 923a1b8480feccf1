/* lib/timer.c: the per-multi heap and the per-transfer named expiries. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "testhelp.h"

static void expect_heap_valid(const struct xfer__timer_heap *h) {
  for (size_t i = 0; i < h->count; i++) {
    cr_assert_eq(h->nodes[i]->index, i);
    if (i)
      cr_assert_leq(h->nodes[(i - 1) / 2]->deadline, h->nodes[i]->deadline);
  }
}


static void timer_end(void) {}


TH_TEST(timer, heap_returns_earliest_first) {
  enum { N = 500 };
  static struct xfer__expiry e[N];
  struct xfer__timer_heap h;
  xfer__time last = 0;

  srand(7);
  xfer__timer_heap_init(&h);
  cr_assert(xfer__timer_heap_reserve(&h, N));
  for (int i = 0; i < N; i++) {
    xfer__expiry_init(&e[i]);
    xfer__expiry_set(&h, &e[i], XFER__EXPIRE_TOTAL, MS(1 + rand() % 10000));
  }
  expect_heap_valid(&h);
  for (int i = 0; i < N; i++) {
    struct xfer__timer_node *top = xfer__timer_heap_top(&h);
    struct xfer__expiry *ex = XFER__CONTAINER_OF(top, struct xfer__expiry, node);
    cr_assert_geq(top->deadline, last);
    last = top->deadline;
    cr_assert_eq(xfer__expiry_take_due(&h, ex, last),
                 1u << XFER__EXPIRE_TOTAL);
    cr_assert_eq(ex->node.index, XFER__TIMER_NOT_QUEUED);
    expect_heap_valid(&h);
  }
  cr_assert_null(xfer__timer_heap_top(&h));
  xfer__timer_heap_free(&h);
}

TH_TEST(timer, node_is_keyed_by_earliest_expiry) {
  struct xfer__timer_heap h;
  struct xfer__expiry a, b;

  xfer__timer_heap_init(&h);
  cr_assert(xfer__timer_heap_reserve(&h, 2));
  xfer__expiry_init(&a);
  xfer__expiry_init(&b);
  xfer__expiry_set(&h, &a, XFER__EXPIRE_TOTAL, MS(300));
  xfer__expiry_set(&h, &b, XFER__EXPIRE_TOTAL, MS(200));
  cr_assert_eq(xfer__timer_heap_top(&h), &b.node);
  xfer__expiry_set(&h, &a, XFER__EXPIRE_CONNECT, MS(100)); /* earlier id */
  cr_assert_eq(xfer__timer_heap_top(&h), &a.node);
  cr_assert_eq(a.node.deadline, MS(100));
  xfer__expiry_clear(&h, &a, XFER__EXPIRE_CONNECT); /* back to 300 */
  cr_assert_eq(a.node.deadline, MS(300));
  cr_assert_eq(xfer__timer_heap_top(&h), &b.node);
  xfer__expiry_clear_all(&h, &b);
  cr_assert_eq(xfer__timer_heap_top(&h), &a.node);
  cr_assert_eq(h.count, 1);
  xfer__expiry_clear_all(&h, &a);
  cr_assert_eq(h.count, 0);
  xfer__timer_heap_free(&h);
}

TH_TEST(timer, take_due_takes_only_what_is_due) {
  struct xfer__timer_heap h;
  struct xfer__expiry e;

  xfer__timer_heap_init(&h);
  cr_assert(xfer__timer_heap_reserve(&h, 1));
  xfer__expiry_init(&e);
  xfer__expiry_set(&h, &e, XFER__EXPIRE_CONNECT, MS(10));
  xfer__expiry_set(&h, &e, XFER__EXPIRE_LOW_SPEED, MS(10));
  xfer__expiry_set(&h, &e, XFER__EXPIRE_TOTAL, MS(50));
  cr_assert_eq(xfer__expiry_take_due(&h, &e, MS(9)), 0);
  cr_assert_eq(xfer__expiry_take_due(&h, &e, MS(10)),
               (1u << XFER__EXPIRE_CONNECT) | (1u << XFER__EXPIRE_LOW_SPEED));
  cr_assert_eq(e.node.deadline, MS(50));
  cr_assert_eq(xfer__timer_heap_top(&h), &e.node);
  cr_assert_eq(xfer__expiry_take_due(&h, &e, MS(60)), 1u << XFER__EXPIRE_TOTAL);
  cr_assert_null(xfer__timer_heap_top(&h));
  xfer__timer_heap_free(&h);
}

TH_TEST(timer, moving_and_removing_middle_nodes_keeps_the_heap) {
  enum { N = 64 };
  static struct xfer__expiry e[N];
  struct xfer__timer_heap h;

  xfer__timer_heap_init(&h);
  cr_assert(xfer__timer_heap_reserve(&h, N));
  for (int i = 0; i < N; i++) {
    xfer__expiry_init(&e[i]);
    xfer__expiry_set(&h, &e[i], XFER__EXPIRE_TOTAL, MS(100 + i));
  }
  for (int i = 0; i < N; i += 3)
    xfer__expiry_set(&h, &e[i], XFER__EXPIRE_TOTAL, MS(1000 - i)); /* later */
  expect_heap_valid(&h);
  for (int i = 1; i < N; i += 3)
    xfer__expiry_set(&h, &e[i], XFER__EXPIRE_TOTAL, MS(i)); /* earlier */
  expect_heap_valid(&h);
  for (int i = 2; i < N; i += 3)
    xfer__expiry_clear_all(&h, &e[i]);
  expect_heap_valid(&h);
  cr_assert_eq(h.count, N - (N - 2 + 2) / 3);
  cr_assert_eq(xfer__timer_heap_top(&h), &e[1].node);
  xfer__timer_heap_free(&h);
}
