/* Interop with a real nginx (Debian's), started and stopped by the test:
 * 1,000 keep-alive GETs, 16 in flight at a time. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "testhelp.h"
#include "testserver.h"

static struct th_nginx nginx;
static int nginx_port;

static void nginx_end(void) { th_nginx_stop(&nginx); }

static void setup(void) {
  char path[192], body[1000];
  FILE *f;

  th_nginx_prepare(&nginx);
  snprintf(path, sizeof(path), "%s/root/file.bin", nginx.prefix);
  ts_fill_pattern(body, 0, sizeof(body));
  f = fopen(path, "w");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(body, 1, sizeof(body), f), sizeof(body));
  fclose(f);
  th_nginx_start(&nginx);
  nginx_port = nginx.port;
}

TestSuite(nginx, .init = setup);

TH_TEST(nginx, thousand_keep_alive_gets_sixteen_in_flight) {
  enum { TOTAL = 1000, IN_FLIGHT = 16 };
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_sink sinks[IN_FLIGHT] = {{0}};
  xfer *slots[IN_FLIGHT];
  const char *url = th_url(nginx_port, "/file.bin");
  int started = 0, done = 0, running = 1, guard = 0;
  const xfer_msg *msg;
  xfer_pool_stats ps;

  for (int i = 0; i < IN_FLIGHT; i++) {
    slots[i] = th_get(m, url, &sinks[i]);
    xfer_set_private(slots[i], &sinks[i]);
    started++;
  }
  while (done < TOTAL && guard++ < 100000) {
    cr_assert_eq(xfer_multi_perform(m, &running), XFER_M_OK);
    while ((msg = xfer_multi_info_read(m, NULL))) {
      xfer *x = msg->x;
      struct th_sink *s = xfer_get_private(x);
      cr_assert_eq(msg->result, XFER_OK, "%s", xfer_get_error_detail(x));
      cr_assert_eq(xfer_get_status(x), 200);
      th_expect_pattern(s->data, s->len, 1000);
      done++;
      cr_assert_eq(xfer_multi_remove(m, x), XFER_M_OK);
      if (started < TOTAL) { /* the same transfer, again */
        s->len = 0;
        cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
        started++;
      }
    }
    if (done < TOTAL)
      cr_assert_eq(xfer_multi_poll(m, 1000, NULL), XFER_M_OK);
  }
  cr_assert_eq(done, TOTAL);
  xfer_pool_get_stats(m->loop.pool, &ps);
  cr_assert_leq(ps.opened_total, IN_FLIGHT, "%llu connections opened",
                (unsigned long long)ps.opened_total);
  cr_assert_geq(ps.reused_total, TOTAL - IN_FLIGHT);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  for (int i = 0; i < IN_FLIGHT; i++) {
    xfer_free(slots[i]);
    th_sink_free(&sinks[i]);
  }
}
