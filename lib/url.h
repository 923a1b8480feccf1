/*
 * URLs, parsed with uriparser (RFC 3986). Only http:// for now: https is
 * refused with a clear error until TLS lands; userinfo is refused.
 */
#ifndef XFER_URL_H
#define XFER_URL_H

#include "common.h"

struct xfer__url {
  char *text;      /* the URL as given */
  const char *host;      /* as given, without IPv6 brackets: "::1" */
  const char *authority; /* for the Host header: "host[:port]", brackets kept */
  const char *target;    /* request target: path and query, never empty */
  uint16_t port;         /* the given port, or 80 */
  bool host_is_ipv6;     /* an IPv6 literal */
  char *block;           /* one allocation behind host, authority, target */
};

/* Parses text into *u (which must be zeroed or freed). On error, *u is left
 * empty and `detail` (of `detail_len` bytes) says what is wrong. */
xfer_code xfer__url_parse(struct xfer__url *u, const char *text, char *detail,
                          size_t detail_len);

/* Resolves `reference` (a redirect's Location: absolute, or relative to
 * base) and parses the result into *out. */
xfer_code xfer__url_resolve(struct xfer__url *out, const struct xfer__url *base,
                            const char *reference, char *detail,
                            size_t detail_len);

void xfer__url_free(struct xfer__url *u);

#endif /* XFER_URL_H */
