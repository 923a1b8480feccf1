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
  xfer_multi *m = xfer_multi_new(NULL);   /* a private pool */
  xfer *x = xfer_new();
  xfer_code result;
  int running = 1;

  if (!m || !x) {
    fprintf(stderr, "out of memory\n");
    return 1;
  }
  if (xfer_set_url(x, argc > 1 ? argv[1] : "http://127.0.0.1/")) {
    fprintf(stderr, "%s\n", xfer_get_error_detail(x));
    return 1;
  }
  xfer_set_write_cb(x, print, NULL);
  if (xfer_multi_add(m, x) != XFER_M_OK) {
    fprintf(stderr, "the transfer could not be added\n");
    return 1;
  }
  while (running) {                       /* no event loop: perform + poll */
    if (xfer_multi_perform(m, &running) != XFER_M_OK ||
        (running && xfer_multi_poll(m, 1000, NULL) != XFER_M_OK)) {
      fprintf(stderr, "the multi failed\n");
      return 1;
    }
  }
  result = xfer_get_result(x);            /* what its message said */
  if (result)
    fprintf(stderr, "%s: %s\n", xfer_strerror(result),
            xfer_get_error_detail(x));
  xfer_multi_remove(m, x);
  xfer_free(x);
  xfer_multi_destroy(m);
  return result ? 1 : 0;
}
