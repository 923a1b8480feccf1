/*
 * epoll-fetch: one thread, one epoll loop (loop.c), one multi. Fetches
 * each URL of its command line in turn with a single transfer handle,
 * reused (remove, change the URL, add again), and prints its status and
 * body size.
 *
 *   epoll-fetch URL...
 *   cc epoll-fetch.c loop.c $(pkg-config --cflags --libs libxfer)
 */
#include <stdio.h>
#include <xfer/xfer.h>

#include "loop.h"

static size_t count(const char *data, size_t len, void *userp) {
  (void)data;
  *(size_t *)userp += len;
  return len;
}

int main(int argc, char **argv) {
  struct loop l;
  xfer *x = xfer_new();
  size_t bytes = 0;
  int failed = 0;

  if (argc < 2 || !x || !loop_init(&l, NULL)) {
    fprintf(stderr, "usage: epoll-fetch URL...\n");
    return 2;
  }
  xfer_set_write_cb(x, count, &bytes);
  xfer_set_timeout_ms(x, 30000);
  for (int i = 1; i < argc; i++) {
    xfer_code rc;
    bytes = 0;
    /* The same handle for each URL: options stay, results start over. */
    if (xfer_set_url(x, argv[i]) != XFER_OK) {
      fprintf(stderr, "%s: %s\n", argv[i], xfer_get_error_detail(x));
      failed++;
      continue;
    }
    rc = loop_run(&l, x);
    if (rc == XFER_OK)
      printf("%s: %d, %zu bytes%s\n", argv[i], xfer_get_status(x), bytes,
             xfer_get_reused(x) ? " (connection reused)" : "");
    else
      fprintf(stderr, "%s: %s (%s)\n", argv[i], xfer_strerror(rc),
              xfer_get_error_detail(x));
    failed += rc != XFER_OK;
    xfer_multi_remove(l.m, x); /* done: it may be added again */
  }
  xfer_free(x);
  loop_free(&l);
  return failed ? 1 : 0;
}
