/*
 * HTTP/1.1: the request head we send and the response parser (llhttp).
 * No sockets here: bytes in, events out, so the response path can be
 * tested and fuzzed on its own.
 */
#ifndef XFER_HTTP1_H
#define XFER_HTTP1_H

#include "common.h"

#include <llhttp.h>
#include <string.h>

/* A growable byte buffer that keeps its capacity between uses. */
struct xfer__buf {
  char *data;
  size_t len;
  size_t cap;
};

void xfer__buf_free(struct xfer__buf *b);
/* Makes room for `cap` bytes (plus a terminating NUL). */
bool xfer__buf_reserve(struct xfer__buf *b, size_t cap);

/* Appends and keeps the buffer a C string. Inline: the response parser
 * appends every piece of every header with it, dozens of times a request
 * (docs/internals/performance.md). */
static inline bool xfer__buf_append(struct xfer__buf *b, const void *data,
                                    size_t len) {
  if (b->len + len >= b->cap && !xfer__buf_reserve(b, b->len + len))
    return false;
  if (len) /* data may be NULL then */
    memcpy(b->data + b->len, data, len);
  b->len += len;
  b->data[b->len] = '\0';
  return true;
}

/* The request, as the transfer's options describe it. */
struct xfer__http1_req {
  const char *method;    /* "GET", ... */
  const char *authority; /* Host header value */
  const char *target;    /* request target */
  const struct xfer__buf *headers; /* "Name: value\r\n" lines of the user */
  int64_t body_len;      /* -1: no body; -2: streamed, chunked */
};

/* Builds the request head (request line, Host unless the user gave one,
 * the user's lines, Content-Length or chunked framing, blank line) into
 * `out`, replacing its content. false when out of memory. */
bool xfer__http1_build_head(struct xfer__buf *out,
                            const struct xfer__http1_req *req);

/* Does the header block contain a header `name` (case-insensitive)? */
bool xfer__http1_has_header(const struct xfer__buf *headers, const char *name);

/* The user's own Content-Length and Transfer-Encoding headers against the
 * body the request sends (body_len as in xfer__http1_req): a
 * Content-Length must be its decimal length (0 for none), a
 * Transfer-Encoding must be "chunked" with a body of unknown length (-2).
 * false, with why, when they disagree (a request that would be framed
 * two ways). */
bool xfer__http1_check_framing(const struct xfer__buf *headers,
                               int64_t body_len, char *why, size_t why_len);

/* Does the header block say "Connection: close" (the token among others,
 * any case)? Then the server closes after its response (RFC 9112, 9.6). */
bool xfer__http1_asks_close(const struct xfer__buf *headers);

/* Response headers as received, for the getters. */
struct xfer__header {
  uint32_t name_off, name_len, value_off, value_len;
};

struct xfer__http1_resp;

/* What the parser tells its owner. Return 0 to go on, non-zero to abort
 * (the parse then fails with XFER_E_HEADER_CALLBACK from on_header,
 * XFER_E_WRITE_CALLBACK from on_body). */
struct xfer__http1_events {
  int (*on_header)(void *owner, const char *name, size_t name_len,
                   const char *value, size_t value_len);
  int (*on_body)(void *owner, const char *data, size_t len);
};

struct xfer__http1_resp {
  llhttp_t parser;
  const struct xfer__http1_events *events;
  void *owner;

  size_t max_header_bytes; /* status line and headers together */
  unsigned max_headers;
  bool head_request;       /* the response to a HEAD has no body */

  int status;
  char reason[128];        /* the status line's reason phrase, cut to fit */
  size_t reason_len;
  bool status_seen;        /* the status line was parsed */
  bool headers_done;       /* the final (non-1xx) headers are complete */
  bool complete;           /* the whole response is in */
  bool keep_alive;         /* the connection may be reused after it */
  bool in_value;           /* last header callback was a value */
  bool header_open;        /* the last header is not terminated yet */
  uint64_t body_bytes;

  size_t header_bytes;
  struct xfer__buf header_text;  /* names and values, back to back */
  struct xfer__header *headers;
  unsigned header_count;
  unsigned header_cap;

  xfer_code error;
  char detail[192];
};

#define XFER__HTTP1_DEFAULT_MAX_HEADER_BYTES (100 * 1024)
#define XFER__HTTP1_DEFAULT_MAX_HEADERS 500u

/* Prepares r for a new response (keeps its buffers). */
void xfer__http1_resp_init(struct xfer__http1_resp *r,
                           const struct xfer__http1_events *events,
                           void *owner, bool head_request,
                           size_t max_header_bytes);
void xfer__http1_resp_free(struct xfer__http1_resp *r);

/*
 * Feeds received bytes. XFER_OK while more is expected or when the
 * response just completed (r->complete). Bytes after the end of the
 * response are an error (we never pipeline: they can only be a body longer
 * than announced, or garbage). On error, r->detail says what.
 */
xfer_code xfer__http1_resp_feed(struct xfer__http1_resp *r, const char *data,
                                size_t len);

/* The peer closed the connection: completes a close-delimited body, or
 * fails with XFER_E_PEER_CLOSED. */
xfer_code xfer__http1_resp_eof(struct xfer__http1_resp *r);

/* Value of the first response header `name` (case-insensitive), or NULL. */
const char *xfer__http1_resp_header(const struct xfer__http1_resp *r,
                                    const char *name);

#endif /* XFER_HTTP1_H */
