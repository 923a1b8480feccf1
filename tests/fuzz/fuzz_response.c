/*
 * libFuzzer target 1: the response path. The input's first byte picks the
 * options (HEAD request, a small header limit) and the next bytes the
 * points where the rest is split into the reads a transfer would get;
 * those reads go to the receive side's parser (lib/http1.c over llhttp),
 * then the end of the connection. Whatever the bytes, the parser gives a
 * result or an error with a detail, never a crash, a leak or a body byte
 * past what was framed.
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

#include "http1.h"

struct seen {
  uint64_t body;
  unsigned headers;
};

static int on_header(void *owner, const char *name, size_t name_len,
                     const char *value, size_t value_len) {
  struct seen *s = owner;
  (void)name, (void)value;
  if (!name_len && value_len)
    __builtin_trap(); /* a value without a name */
  s->headers++;
  return 0;
}

static int on_body(void *owner, const char *data, size_t len) {
  struct seen *s = owner;
  (void)data;
  s->body += len;
  return 0;
}

static const struct xfer__http1_events events = {on_header, on_body};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct xfer__http1_resp r;
  struct seen seen = {0, 0};
  uint8_t flags, cuts[4];
  size_t off = 0, ncuts;
  xfer_code rc = XFER_OK;

  if (size < 5)
    return 0;
  flags = data[0];
  memcpy(cuts, data + 1, 4);
  data += 5;
  size -= 5;
  memset(&r, 0, sizeof(r));
  xfer__http1_resp_init(&r, &events, &seen, flags & 1,
                        (flags & 2) ? 256 : XFER__HTTP1_DEFAULT_MAX_HEADER_BYTES);
  ncuts = (flags >> 2) & 3;
  for (size_t i = 0; i <= ncuts && rc == XFER_OK && !r.complete; i++) {
    size_t len = i == ncuts ? size - off : cuts[i] % (size - off + 1);
    rc = xfer__http1_resp_feed(&r, (const char *)data + off, len);
    off += len;
  }
  if (rc == XFER_OK && !r.complete)
    rc = xfer__http1_resp_eof(&r);
  if (rc != XFER_OK && !r.detail[0])
    __builtin_trap(); /* every error says what */
  if (r.complete && r.body_bytes != seen.body)
    __builtin_trap();
  xfer__http1_resp_free(&r);
  return 0;
}
