/*
 * libFuzzer target 1: the response path. The input's first byte picks the
 * options (HEAD request, a small header limit, a header callback or none)
 * and the next bytes the points where the rest is split into the reads a
 * transfer would get; those reads go to the receive side's parser
 * (lib/http1.c over llhttp), then the end of the connection. Whatever the
 * bytes, the parser gives a result or an error with a detail, never a
 * crash, a leak or a body byte past what was framed; the header strings
 * made afterwards from the kept head agree with what the parse counted.
 * Every input is parsed by both builds of llhttp's parser (baseline and
 * SSE4.2, where the CPU has it), which must give the same result.
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

#include "http1.h"

struct seen {
  uint64_t body;
  unsigned headers;
  const struct xfer__http1_resp *r;
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
  const struct xfer__http1_resp *r = s->r;

  /* Whichever way the head ended (a pause, or not), it is whole before
   * the first body byte: the strings can be made from it, and, but for a
   * chunked body's framing, it ends right before that byte (as far as
   * this feed shows). */
  if (s->body == 0 && len && r->headers_done) {
    size_t k = (size_t)(data - r->feed_base);
    if (k > r->head.len)
      k = r->head.len;
    if (!xfer__http1_resp_load_headers(r) || !r->head.len)
      __builtin_trap();
    if (!(r->parser.flags & F_CHUNKED) &&
        memcmp(r->head.data + r->head.len - k, data - k, k) != 0)
      __builtin_trap();
  }
  s->body += len;
  return 0;
}

static const struct xfer__http1_events events = {on_header, on_body};
/* No header callback: the parse keeps the head and makes no strings. */
static const struct xfer__http1_events lazy_events = {NULL, on_body};

/* The strings made on demand from the kept head: as many as the parse
 * counted (and the callback saw), each with a name, each found by name. */
static void check_headers(const struct xfer__http1_resp *r,
                          const struct seen *seen, bool eager) {
  if (!r->headers_done)
    return;
  if (eager && seen->headers != r->header_count)
    __builtin_trap();
  if (!xfer__http1_resp_load_headers(r))
    __builtin_trap(); /* only memory can fail, and the fuzzer has it */
  for (unsigned i = 0; i < r->header_count; i++) {
    const struct xfer__header *h = &r->headers[i];
    const char *name = r->header_text.data + h->name_off;
    const char *found;

    if (!h->name_len || strlen(name) != h->name_len)
      __builtin_trap();
    found = xfer__http1_resp_header(r, name);
    if (!found)
      __builtin_trap();
    if (found == r->header_text.data + h->value_off &&
        strlen(found) != h->value_len)
      __builtin_trap();
  }
  /* The Keep-Alive value kept while parsing is the first one's, cut to
   * fit its buffer. */
  const char *ka = xfer__http1_resp_keep_alive(r);
  const char *loaded = xfer__http1_resp_header(r, "Keep-Alive");
  if (!ka != !loaded)
    __builtin_trap();
  if (ka && strncmp(ka, loaded, sizeof(r->ka_value) - 1) != 0)
    __builtin_trap();
}

/* The reason phrase as the kept head's status line says it: after the
 * empty lines llhttp skips, the version, a space and the digits of the
 * status, then a space and the phrase up to the line's end (none without
 * that space). */
static size_t reason_in_head(const struct xfer__buf *head, const char **at) {
  const char *p = head->data, *end = head->data + head->len, *stop;

  while (p < end && (*p == '\r' || *p == '\n'))
    p++;
  p = memchr(p, ' ', (size_t)(end - p));
  if (!p || end - p < 2 || p[1] < '0' || p[1] > '9')
    __builtin_trap(); /* llhttp accepted a head without a status code */
  for (p++; p < end && *p >= '0' && *p <= '9'; p++)
    ; /* llhttp 8.1 takes leading zeros: "0200" */
  if (p == end || *p != ' ') {
    *at = p;
    return 0;
  }
  for (stop = ++p; stop < end && *stop != '\r' && *stop != '\n'; stop++)
    ;
  *at = p;
  return (size_t)(stop - p);
}

/* The reason phrase made on demand (llhttp runs over the kept head once
 * more) is the status line's, cut to fit, and at a NUL (llhttp lets one
 * through; the getter returns a C string). */
static void check_reason(const struct xfer__http1_resp *r, char *out,
                         size_t out_len) {
  const char *reason = xfer__http1_resp_reason(r);
  size_t n = strlen(reason), want;
  const char *at;

  if (!r->headers_done) {
    if (n)
      __builtin_trap();
    return;
  }
  want = reason_in_head(&r->head, &at);
  if (want > sizeof(r->reason) - 1)
    want = sizeof(r->reason) - 1;
  want = strnlen(at, want);
  if (n != want || n >= out_len || memcmp(reason, at, n) != 0)
    __builtin_trap();
  memcpy(out, reason, n + 1);
}

/* What one parse gave, for the two builds to be compared. */
struct outcome {
  xfer_code rc;
  bool complete, keep_alive;
  int status;
  uint64_t body;
  unsigned headers;
  char reason[128];
};

static struct outcome parse(uint8_t flags, const uint8_t *cuts,
                            const uint8_t *data, size_t size) {
  struct xfer__http1_resp r;
  struct seen seen = {0, 0, &r};
  struct outcome out;
  size_t off = 0, ncuts;
  xfer_code rc = XFER_OK;

  memset(&r, 0, sizeof(r));
  xfer__http1_resp_init(&r, (flags & 16) ? &lazy_events : &events, &seen,
                        flags & 1,
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
  check_headers(&r, &seen, !(flags & 16));
  out = (struct outcome){rc,       r.complete, r.keep_alive,
                         r.status, seen.body,  r.header_count, ""};
  check_reason(&r, out.reason, sizeof(out.reason));
  xfer__http1_resp_free(&r);
  return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct outcome base, sse42;

  if (size < 5)
    return 0;
  xfer__http1_use_sse42(false);
  base = parse(data[0], data + 1, data + 5, size - 5);
  if (!xfer__http1_use_sse42(true))
    return 0; /* this CPU runs the baseline build only */
  sse42 = parse(data[0], data + 1, data + 5, size - 5);
  if (base.rc != sse42.rc || base.complete != sse42.complete ||
      base.keep_alive != sse42.keep_alive || base.status != sse42.status ||
      base.body != sse42.body || base.headers != sse42.headers ||
      strcmp(base.reason, sse42.reason) != 0)
    __builtin_trap(); /* the two builds of llhttp's parser disagree */
  return 0;
}
