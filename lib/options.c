/*
 * The typed setters and getters of a transfer. Setters validate at once,
 * so bad input is reported where it is given, with a detail string.
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

#include "conn.h"
#include "mem.h"
#include "transfer.h"

/* Every setter: a live transfer, not added to a multi. The options are
 * about to change: what was built from them is stale (opts.gen). */
static xfer_code settable(xfer *x) {
  if (!xfer__valid(x))
    return XFER_E_BAD_HANDLE;
  if (x->multi)
    return XFER_E_IN_USE;
  x->opts.gen++;
  return XFER_OK;
}

xfer_code xfer_set_url(xfer *x, const char *url) {
  xfer_code rc = settable(x);
  struct xfer__url parsed;

  if (rc)
    return rc;
  rc = xfer__url_parse(&parsed, url, x->detail, sizeof(x->detail));
  if (rc)
    return rc; /* the old URL stays */
  xfer__url_free(&x->opts.url);
  x->opts.url = parsed;
  x->detail[0] = '\0';
  return XFER_OK;
}

/* RFC 9110 token characters. */
static bool is_tchar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

xfer_code xfer_set_method(xfer *x, const char *method) {
  xfer_code rc = settable(x);
  size_t n;

  if (rc)
    return rc;
  if (!method || !*method)
    return xfer__fail(x, XFER_E_BAD_ARGUMENT, "empty method");
  n = strlen(method);
  if (n >= sizeof(x->opts.method))
    return xfer__fail(x, XFER_E_BAD_ARGUMENT, "method longer than %zu bytes",
                      sizeof(x->opts.method) - 1);
  for (size_t i = 0; i < n; i++)
    if (!is_tchar(method[i]))
      return xfer__fail(x, XFER_E_BAD_ARGUMENT,
                        "method '%s' is not an HTTP token", method);
  memcpy(x->opts.method, method, n + 1);
  return XFER_OK;
}

xfer_code xfer_add_header(xfer *x, const char *name, const char *value) {
  xfer_code rc = settable(x); /* before anything of x is touched */
  struct xfer__buf *b;
  size_t before;

  if (rc)
    return rc;
  b = &x->opts.headers;
  before = b->len;
  if (!name || !*name || !value)
    return xfer__fail(x, XFER_E_BAD_ARGUMENT, "header name and value required");
  for (const char *p = name; *p; p++)
    if (!is_tchar(*p))
      return xfer__fail(x, XFER_E_BAD_ARGUMENT,
                        "header name '%.40s' is not an HTTP token", name);
  /* Control characters: a CR or LF would let the value inject headers or
   * a second request, and no server should have to parse the others
   * (RFC 9110, 5.5: a tab is the one allowed). */
  for (const unsigned char *p = (const unsigned char *)value; *p; p++)
    if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
      return xfer__fail(x, XFER_E_BAD_ARGUMENT,
                        "header '%.40s' value holds the control character "
                        "0x%02x",
                        name, *p);
  if (!xfer__buf_append(b, name, strlen(name)) ||
      !xfer__buf_append(b, ": ", 2) ||
      !xfer__buf_append(b, value, strlen(value)) ||
      !xfer__buf_append(b, "\r\n", 2)) {
    b->len = before;
    return XFER_E_OUT_OF_MEMORY;
  }
  return XFER_OK;
}

xfer_code xfer_clear_headers(xfer *x) {
  xfer_code rc = settable(x);

  if (rc)
    return rc;
  xfer__buf_free(&x->opts.headers); /* as its doc says: not kept for later */
  return XFER_OK;
}

xfer_code xfer_set_body(xfer *x, const void *data, size_t len) {
  xfer_code rc = settable(x);
  char *copy = NULL;

  if (rc)
    return rc;
  if (len && !data)
    return xfer__fail(x, XFER_E_BAD_ARGUMENT, "NULL body of %zu bytes", len);
  if (len && !(copy = xfer__malloc(len)))
    return XFER_E_OUT_OF_MEMORY;
  if (len)
    memcpy(copy, data, len);
  xfer__free(x->opts.body);
  x->opts.body = copy;
  x->opts.body_len = len;
  x->opts.has_body = data != NULL;
  x->opts.read_cb = NULL;
  return XFER_OK;
}

xfer_code xfer_set_body_cb(xfer *x, xfer_read_cb cb, void *userp,
                           int64_t size) {
  xfer_code rc = settable(x);

  if (rc)
    return rc;
  if (!cb)
    return xfer__fail(x, XFER_E_BAD_ARGUMENT,
                      "no read callback (xfer_set_body(x, NULL, 0) removes "
                      "a body)");
  if (size < -1)
    return xfer__fail(x, XFER_E_BAD_ARGUMENT, "body size %lld",
                      (long long)size);
  xfer__free(x->opts.body);
  x->opts.body = NULL;
  x->opts.body_len = 0;
  x->opts.has_body = false;
  x->opts.read_cb = cb;
  x->opts.read_userp = userp;
  x->opts.read_size = size;
  return XFER_OK;
}

xfer_code xfer_set_write_cb(xfer *x, xfer_write_cb cb, void *userp) {
  xfer_code rc = settable(x);

  if (rc)
    return rc;
  x->opts.write_cb = cb;
  x->opts.write_userp = userp;
  return XFER_OK;
}

xfer_code xfer_set_header_cb(xfer *x, xfer_header_cb cb, void *userp) {
  xfer_code rc = settable(x);

  if (rc)
    return rc;
  x->opts.header_cb = cb;
  x->opts.header_userp = userp;
  return XFER_OK;
}

xfer_code xfer_set_ip_version(xfer *x, int version) {
  xfer_code rc = settable(x);

  if (rc)
    return rc;
  if (version != XFER_IPRESOLVE_ANY && version != XFER_IPRESOLVE_V4 &&
      version != XFER_IPRESOLVE_V6)
    return xfer__fail(x, XFER_E_BAD_ARGUMENT, "IP version %d (0, 4 or 6)",
                      version);
  x->opts.ip_version = version;
  return XFER_OK;
}

xfer_code xfer_set_local_address(xfer *x, const char *ip) {
  xfer_code rc = settable(x);
  struct xfer__addr a;

  if (rc)
    return rc;
  if (!ip) {
    x->opts.local_text[0] = '\0';
    return XFER_OK;
  }
  if (!xfer__addr_parse(&a, ip, 0, 0))
    return xfer__fail(x, XFER_E_BAD_ARGUMENT,
                      "local address '%.60s' is not a numeric IP address", ip);
  x->opts.local = a;
  snprintf(x->opts.local_text, sizeof(x->opts.local_text), "%s", ip);
  return XFER_OK;
}

static xfer_code set_ms(xfer *x, long *field, long ms, const char *what) {
  xfer_code rc = settable(x);

  if (rc)
    return rc;
  if (ms < 0)
    return xfer__fail(x, XFER_E_BAD_ARGUMENT, "negative %s: %ld ms", what, ms);
  *field = ms;
  return XFER_OK;
}

xfer_code xfer_set_connect_timeout_ms(xfer *x, long ms) {
  return set_ms(x, xfer__valid(x) ? &x->opts.connect_timeout_ms : NULL, ms,
                "connect timeout");
}

xfer_code xfer_set_timeout_ms(xfer *x, long ms) {
  return set_ms(x, xfer__valid(x) ? &x->opts.timeout_ms : NULL, ms, "timeout");
}

xfer_code xfer_set_low_speed(xfer *x, long bytes, long period_ms) {
  xfer_code rc = settable(x);

  if (rc)
    return rc;
  if (bytes < 0 || period_ms < 0 || (bytes > 0 && period_ms == 0))
    return xfer__fail(x, XFER_E_BAD_ARGUMENT, "low speed %ld bytes per %ld ms",
                      bytes, period_ms);
  x->opts.low_speed_bytes = bytes;
  x->opts.low_speed_period_ms = period_ms;
  return XFER_OK;
}

xfer_code xfer_set_max_header_size(xfer *x, size_t bytes) {
  xfer_code rc = settable(x);

  if (rc)
    return rc;
  if (bytes < 64)
    return xfer__fail(x, XFER_E_BAD_ARGUMENT, "header size limit %zu < 64",
                      bytes);
  /* The head's offsets are 32 bits (http1.h); a gibibyte of headers is
   * far past anything a server sends. */
  if (bytes > XFER__MAX_HEADER_BYTES_LIMIT)
    return xfer__fail(x, XFER_E_BAD_ARGUMENT,
                      "header size limit %zu over the most, %zu (1 GiB)",
                      bytes, (size_t)XFER__MAX_HEADER_BYTES_LIMIT);
  x->opts.max_header_bytes = bytes;
  return XFER_OK;
}

xfer_code xfer_set_follow_redirects(xfer *x, int max) {
  xfer_code rc = settable(x);

  if (rc)
    return rc;
  if (max < 0)
    return xfer__fail(x, XFER_E_BAD_ARGUMENT, "redirect limit %d", max);
  x->opts.max_redirects = max;
  return XFER_OK;
}

/* --- getters ------------------------------------------------------------ */

int xfer_get_status(const xfer *x) {
  return xfer__valid(x) && x->http.resp.headers_done ? x->http.resp.status : 0;
}

const char *xfer_get_reason(const xfer *x) {
  return xfer__valid(x) ? xfer__http1_resp_reason(&x->http.resp) : "";
}

const char *xfer_get_header(const xfer *x, const char *name) {
  if (!xfer__valid(x) || !name)
    return NULL;
  return xfer__http1_resp_header(&x->http.resp, name);
}

size_t xfer_get_header_count(const xfer *x) {
  return xfer__valid(x) && x->http.resp.headers_done ? x->http.resp.header_count
                                                     : 0;
}

xfer_code xfer_get_header_at(const xfer *x, size_t i, const char **name,
                             const char **value) {
  const struct xfer__http1_resp *r;

  if (!xfer__valid(x))
    return XFER_E_BAD_HANDLE;
  r = &x->http.resp;
  if (!name || !value || i >= xfer_get_header_count(x))
    return XFER_E_BAD_ARGUMENT;
  if (!xfer__http1_resp_load_headers(r))
    return XFER_E_OUT_OF_MEMORY;
  *name = r->header_text.data + r->headers[i].name_off;
  *value = r->header_text.data + r->headers[i].value_off;
  return XFER_OK;
}

xfer_code xfer_get_bytes(const xfer *x, uint64_t *sent, uint64_t *received) {
  if (!xfer__valid(x))
    return XFER_E_BAD_HANDLE;
  if (sent)
    *sent = x->http.bytes_sent;
  if (received)
    *received = x->http.bytes_received;
  return XFER_OK;
}

uint64_t xfer_get_conn_id(const xfer *x) {
  return xfer__valid(x) ? x->http.conn_id : 0;
}

int xfer_get_reused(const xfer *x) { return xfer__valid(x) && x->http.reused; }

int xfer_get_redirects(const xfer *x) {
  return xfer__valid(x) ? x->http.redirects : 0;
}

xfer_code xfer_get_result(const xfer *x) {
  return xfer__valid(x) ? x->result : XFER_E_BAD_HANDLE;
}
