/* URL parsing on uriparser (see url.h). */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uriparser/Uri.h>

#include "mem.h"
#include "url.h"

static size_t range_len(const UriTextRangeA *r) {
  return r->first ? (size_t)(r->afterLast - r->first) : 0;
}

static bool range_is(const UriTextRangeA *r, const char *word) {
  size_t n = range_len(r);
  return n == strlen(word) && strncasecmp(r->first, word, n) == 0;
}

static char *dup_text(const char *text) {
  size_t n = strlen(text) + 1;
  char *copy = xfer__malloc(n);
  if (copy)
    memcpy(copy, text, n);
  return copy;
}

void xfer__url_free(struct xfer__url *u) {
  xfer__free(u->text);
  xfer__free(u->block);
  memset(u, 0, sizeof(*u));
}

static xfer_code check_scheme(const UriUriA *uri, char *detail, size_t len) {
  if (!uri->scheme.first) {
    snprintf(detail, len, "the URL has no scheme (expected http://)");
    return XFER_E_BAD_URL;
  }
  if (range_is(&uri->scheme, "http"))
    return XFER_OK;
  if (range_is(&uri->scheme, "https")) {
    snprintf(detail, len, "https is not supported yet (TLS arrives later)");
    return XFER_E_UNSUPPORTED_SCHEME;
  }
  snprintf(detail, len, "the scheme '%.*s' is not supported (only http)",
           (int)range_len(&uri->scheme), uri->scheme.first);
  return XFER_E_UNSUPPORTED_SCHEME;
}

/* A host no request could reach is refused here, with the reason: an
 * IPvFuture literal ([v1.x]: no address family knows it, and as a name
 * it would go to DNS), or a name longer than DNS allows (253 characters,
 * a trailing dot aside; labels of 63). */
static xfer_code check_host(const UriUriA *uri, size_t host_len, char *detail,
                            size_t len) {
  const char *h = uri->hostText.first, *label = h, *end = h + host_len;

  if (uri->hostData.ipFuture.first) {
    snprintf(detail, len,
             "the host [%.*s] is an IPvFuture literal, which no address "
             "family here can reach",
             (int)(host_len < 64 ? host_len : 64), h);
    return XFER_E_BAD_URL;
  }
  if (uri->hostData.ip4 || uri->hostData.ip6)
    return XFER_OK;
  if (host_len > 253 && !(host_len == 254 && h[253] == '.')) {
    snprintf(detail, len,
             "the host name is %zu characters long (DNS allows 253)",
             host_len);
    return XFER_E_BAD_URL;
  }
  for (const char *p = h; p <= end; p++) {
    if (p < end && *p != '.')
      continue;
    if (p - label > 63) {
      snprintf(detail, len,
               "the host name has a label of %ld characters, '%.20s...' "
               "(DNS allows 63)",
               (long)(p - label), label);
      return XFER_E_BAD_URL;
    }
    label = p + 1;
  }
  return XFER_OK;
}

static xfer_code parse_port(const UriUriA *uri, uint16_t *port, char *detail,
                            size_t len) {
  size_t n = range_len(&uri->portText);
  unsigned long value = 0;

  *port = 80;
  if (n == 0)
    return XFER_OK;
  for (size_t i = 0; i < n; i++) {
    char c = uri->portText.first[i];
    if (c < '0' || c > '9' || value > 65535) {
      value = 65536;
      break;
    }
    value = value * 10 + (unsigned long)(c - '0');
  }
  if (value == 0 || value > 65535) {
    snprintf(detail, len, "bad port '%.*s' (1-65535)", (int)n,
             uri->portText.first);
    return XFER_E_BAD_URL;
  }
  *port = (uint16_t)value;
  return XFER_OK;
}

/* The request target: everything after the authority up to a fragment,
 * percent-encoding untouched; "/" when the path is empty. */
static void target_span(const UriUriA *uri, const char *text, bool ipv6,
                        const char **start, size_t *len) {
  const char *p = uri->portText.first ? uri->portText.afterLast
                                      : uri->hostText.afterLast + (ipv6 ? 1 : 0);
  const char *end = p + strcspn(p, "#");
  (void)text;
  *start = p;
  *len = (size_t)(end - p);
}

static xfer_code build(struct xfer__url *u, const UriUriA *uri,
                       const char *text, char *detail, size_t len) {
  bool ipv6 = uri->hostData.ip6 != NULL ||
              (uri->hostData.ipFuture.first != NULL);
  size_t host_len = range_len(&uri->hostText);
  const char *target;
  size_t target_len, size;
  uint16_t port;
  xfer_code rc;
  char *block, *p;
  bool slash;

  if ((rc = check_scheme(uri, detail, len)))
    return rc;
  if (uri->userInfo.first) {
    snprintf(detail, len, "credentials in the URL (user:password@) are not "
                          "supported in this version");
    return XFER_E_BAD_URL;
  }
  if (host_len == 0) {
    snprintf(detail, len, "the URL has no host");
    return XFER_E_BAD_URL;
  }
  if ((rc = check_host(uri, host_len, detail, len)))
    return rc;
  if ((rc = parse_port(uri, &port, detail, len)))
    return rc;
  target_span(uri, text, ipv6, &target, &target_len);
  slash = target_len == 0 || target[0] != '/';

  /* host\0 authority\0 target\0, in one block */
  size = host_len + 1 + (host_len + 2 + 7) + 1 + target_len + 2;
  block = xfer__malloc(size);
  u->text = dup_text(text);
  if (!block || !u->text) {
    xfer__free(block);
    xfer__free(u->text);
    u->text = NULL;
    snprintf(detail, len, "out of memory");
    return XFER_E_OUT_OF_MEMORY;
  }
  p = block;
  u->host = p;
  memcpy(p, uri->hostText.first, host_len);
  p += host_len;
  *p++ = '\0';
  u->authority = p;
  p += sprintf(p, ipv6 ? "[%.*s]" : "%.*s", (int)host_len, uri->hostText.first);
  if (uri->portText.first && port != 80)
    p += sprintf(p, ":%u", (unsigned)port);
  *p++ = '\0';
  u->target = p;
  if (slash)
    *p++ = '/';
  memcpy(p, target, target_len);
  p[target_len] = '\0';
  u->block = block;
  u->port = port;
  u->host_is_ipv6 = ipv6;
  return XFER_OK;
}

xfer_code xfer__url_parse(struct xfer__url *u, const char *text, char *detail,
                          size_t detail_len) {
  UriUriA uri;
  const char *error_pos = NULL;
  xfer_code rc;

  memset(u, 0, sizeof(*u));
  if (!text || !*text) {
    snprintf(detail, detail_len, "empty URL");
    return XFER_E_BAD_URL;
  }
  if (uriParseSingleUriA(&uri, text, &error_pos) != URI_SUCCESS) {
    snprintf(detail, detail_len, "malformed URL at offset %ld: '%.40s'",
             error_pos ? (long)(error_pos - text) : 0L,
             error_pos ? error_pos : text);
    return XFER_E_BAD_URL;
  }
  rc = build(u, &uri, text, detail, detail_len);
  uriFreeUriMembersA(&uri);
  return rc;
}

xfer_code xfer__url_resolve(struct xfer__url *out, const struct xfer__url *base,
                            const char *reference, char *detail,
                            size_t detail_len) {
  UriUriA base_uri, ref_uri, abs_uri;
  const char *error_pos = NULL;
  char *text = NULL;
  int chars = 0;
  xfer_code rc = XFER_E_BAD_URL;

  memset(out, 0, sizeof(*out));
  if (uriParseSingleUriA(&base_uri, base->text, NULL) != URI_SUCCESS) {
    snprintf(detail, detail_len, "malformed base URL");
    return XFER_E_BAD_URL;
  }
  if (uriParseSingleUriA(&ref_uri, reference, &error_pos) != URI_SUCCESS) {
    snprintf(detail, detail_len, "malformed redirect location '%.80s'",
             reference);
    uriFreeUriMembersA(&base_uri);
    return XFER_E_BAD_URL;
  }
  if (uriAddBaseUriA(&abs_uri, &ref_uri, &base_uri) != URI_SUCCESS) {
    snprintf(detail, detail_len, "cannot resolve redirect location '%.80s'",
             reference);
  } else {
    if (uriToStringCharsRequiredA(&abs_uri, &chars) == URI_SUCCESS &&
        (text = malloc((size_t)chars + 1)) &&
        uriToStringA(text, &abs_uri, chars + 1, NULL) == URI_SUCCESS)
      rc = xfer__url_parse(out, text, detail, detail_len);
    else
      snprintf(detail, detail_len, "cannot resolve redirect location");
    free(text);
    uriFreeUriMembersA(&abs_uri);
  }
  uriFreeUriMembersA(&ref_uri);
  uriFreeUriMembersA(&base_uri);
  return rc;
}
