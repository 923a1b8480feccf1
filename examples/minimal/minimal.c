/*
 * The README's example, kept here so that a test can build it against an
 * installed libxfer with `pkg-config --cflags --libs libxfer` only, as a
 * user would (make check: check-install). Fetches one URL with perform and
 * poll, no event loop, and prints the body.
 */
#include <stdio.h>
#include <xfer/xfer.h>

static size_t print(const char *data, size_t len, void *userp) {
  (void)userp;
  return fwrite(data, 1, len, stdout);
}

int main(int argc, char **argv) {
  xfer_multi *m = xfer_multi_new(NULL); /* a private pool */
  xfer *x = xfer_new();
  int running = 1;

  if (!m || !x || xfer_set_url(x, argc > 1 ? argv[1] : "http://127.0.0.1/") ||
      xfer_set_write_cb(x, print, NULL) || xfer_multi_add(m, x)) {
    fprintf(stderr, "cannot start: %s\n",
            m && x ? xfer_get_error_detail(x) : "out of memory");
    return 1;
  }
  while (running) /* no event loop: perform, then poll */
    if (xfer_multi_perform(m, &running) ||
        (running && xfer_multi_poll(m, 1000, NULL)))
      return 1;
  xfer_code result = xfer_get_result(x); /* what its message said */
  if (result)
    fprintf(stderr, "%s\n", xfer_get_error_detail(x)); /* says what failed */
  xfer_multi_remove(m, x);
  xfer_free(x);
  xfer_multi_destroy(m);
  return result != XFER_OK;
}
