/*
 * libFuzzer target 2: URL and option input. The input is split at NUL
 * bytes into a URL, a redirect Location, a method, a header name and
 * value and a local address; each goes through the same setters and
 * parsers an application's input does. Every refusal carries a detail;
 * nothing crashes or leaks.
 */
#include "common.h"

#include <string.h>

#include "transfer.h"
#include "url.h"

static const char *next(const uint8_t **p, const uint8_t *end, char *buf,
                        size_t cap) {
  size_t n = 0;

  while (*p < end && **p && n + 1 < cap)
    buf[n++] = (char)*(*p)++;
  if (*p < end)
    (*p)++;
  buf[n] = '\0';
  return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *p = data, *end = data + size;
  char url[1024], loc[1024], method[64], name[128], value[256], addr[64];
  char detail[256];
  struct xfer__url base, hop;
  xfer *x;

  next(&p, end, url, sizeof(url));
  next(&p, end, loc, sizeof(loc));
  next(&p, end, method, sizeof(method));
  next(&p, end, name, sizeof(name));
  next(&p, end, value, sizeof(value));
  next(&p, end, addr, sizeof(addr));

  memset(&base, 0, sizeof(base));
  memset(&hop, 0, sizeof(hop));
  detail[0] = '\0';
  if (xfer__url_parse(&base, url, detail, sizeof(detail)) == XFER_OK) {
    if (!base.host || !base.target)
      __builtin_trap();
    detail[0] = '\0';
    if (xfer__url_resolve(&hop, &base, loc, detail, sizeof(detail)) !=
            XFER_OK &&
        !detail[0])
      __builtin_trap();
    xfer__url_free(&hop);
  } else if (!detail[0]) {
    __builtin_trap();
  }
  xfer__url_free(&base);

  x = xfer_new();
  if (!x)
    return 0;
  if (xfer_set_url(x, url) != XFER_OK && !xfer_get_error_detail(x)[0])
    __builtin_trap();
  xfer_set_method(x, method);
  xfer_add_header(x, name, value);
  xfer_set_local_address(x, addr);
  xfer_free(x);
  return 0;
}
