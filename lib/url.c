/* URL parsing on uriparser (see url.h). */
#include "common.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <uriparser/Uri.h>

#include "mem.h"
#include "url.h"

/* uriparser allocates through the library's allocator too: the hooks of
 * xfer_mem_set() see those blocks, and failing-allocation tests reach
 * them. */
static void *uri_malloc(UriMemoryManager *m, size_t n) {
  (void)m;
  return xfer__malloc(n);
}

static void *uri_calloc(UriMemoryManager *m, size_t count, size_t n) {
  (void)m;
  return xfer__calloc(count, n);
}

static void *uri_realloc(UriMemoryManager *m, void *p, size_t n) {
  (void)m;
  return xfer__realloc(p, n);
}

static void uri_free(UriMemoryManager *m, void *p) {
  (void)m;
  xfer__free(p);
}

/* Read only (uriparser takes it by a non-const pointer). */
static UriMemoryManager uri_memory = {uri_malloc, uri_calloc, uri_realloc,
                                      uriEmulateReallocarray, uri_free, NULL};

/* (uriparser 0.9.7 refuses a NULL end here, though its header allows it) */
static int parse_uri(UriUriA *uri, const char *text, const char **error_pos) {
  return uriParseSingleUriExMmA(uri, text, text + strlen(text), error_pos,
                                &uri_memory);
}

static xfer_code out_of_memory(char *detail, size_t len) {
  snprintf(detail, len, "out of memory");
  return XFER_E_OUT_OF_MEMORY;
}

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

static int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = (char)(c | 0x20);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A character a host name can have: letters, digits, '-', '.', and '_'
 * (not in DNS host names, but in names that resolvers look up, as curl
 * takes it too). */
static bool host_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

/* A registered name as a resolver will see it: its percent-encoding
 * decoded (as curl does), into out (room for len bytes, the decoded name
 * being no longer). A name that then has any other character (a
 * sub-delimiter the URL grammar allows there, a space, a NUL, a byte past
 * ASCII) could never be looked up: refused now, with the reason, rather
 * than at the lookup. Its decoded length, or 0. */
static size_t decode_host(const char *h, size_t len, char *out, char *detail,
                          size_t detail_len) {
  size_t n = 0;

  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)h[i];
    if (c == '%' && i + 2 < len && hex_value(h[i + 1]) >= 0 &&
        hex_value(h[i + 2]) >= 0) {
      c = (unsigned char)(hex_value(h[i + 1]) * 16 + hex_value(h[i + 2]));
      i += 2;
    }
    if (!host_char(c)) {
      snprintf(detail, detail_len,
               c > 0x20 && c < 0x7f
                   ? "the host name '%.*s' has a character no host name can "
                     "have: '%c'"
                   : "the host name '%.*s' has a character no host name can "
                     "have: byte 0x%02x",
               (int)(len < 64 ? len : 64), h, c);
      return 0;
    }
    out[n++] = (char)c;
  }
  return n;
}

/* A host no request could reach is refused here, with the reason: an
 * IPvFuture literal ([v1.x]: no address family knows it, and as a name
 * it would go to DNS), or a name longer than DNS allows (253 characters,
 * a trailing dot aside; labels of 63), `h` being the name decoded. */
static xfer_code check_host(const UriUriA *uri, const char *h, size_t host_len,
                            char *detail, size_t len) {
  const char *label = h, *end = h + host_len;

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

/* Does the path hold a "." or ".." segment? */
static bool has_dot_segments(const UriUriA *uri) {
  for (const UriPathSegmentA *s = uri->pathHead; s; s = s->next) {
    size_t n = range_len(&s->text);
    if ((n == 1 || n == 2) && s->text.first[0] == '.' &&
        (n == 1 || s->text.first[1] == '.'))
      return true;
  }
  return false;
}

/*
 * The target of uri (a URL that parsed; `text` as given, for the detail)
 * with its dot segments removed (RFC 3986 5.2.4), as curl sends it and as
 * a redirect's Location comes out of uriparser's resolution: "/a/../b"
 * goes out as "/b" (a server that does not do the same would see a way
 * up the tree the URL did not mean). The same resolution does it here:
 * an absolute reference resolved against itself is itself with its dot
 * segments removed (RFC 3986 5.2.2). *out is the library's to free.
 */
static xfer_code dot_free_target(const UriUriA *uri, const char *text,
                                 char **out, size_t *out_len, char *detail,
                                 size_t len) {
  UriUriA abs;
  size_t size = 2;
  char *p;
  int err = uriAddBaseUriExMmA(&abs, uri, uri, URI_RESOLVE_STRICTLY,
                               &uri_memory);

  if (err != URI_SUCCESS) { /* uriparser freed what it had */
    if (err == URI_ERROR_MALLOC)
      return out_of_memory(detail, len);
    snprintf(detail, len, "cannot remove the dot segments of '%.80s'", text);
    return XFER_E_BAD_URL;
  }
  for (const UriPathSegmentA *s = abs.pathHead; s; s = s->next)
    size += 1 + range_len(&s->text);
  size += 1 + range_len(&abs.query);
  if (!(*out = p = xfer__malloc(size))) {
    uriFreeUriMembersMmA(&abs, &uri_memory);
    return out_of_memory(detail, len);
  }
  for (const UriPathSegmentA *s = abs.pathHead; s; s = s->next) {
    *p++ = '/';
    memcpy(p, s->text.first, range_len(&s->text));
    p += range_len(&s->text);
  }
  if (p == *out)
    *p++ = '/';
  if (abs.query.first) {
    *p++ = '?';
    memcpy(p, abs.query.first, range_len(&abs.query));
    p += range_len(&abs.query);
  }
  *p = '\0';
  *out_len = (size_t)(p - *out);
  uriFreeUriMembersMmA(&abs, &uri_memory); /* its text is uri's */
  return XFER_OK;
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
  char *block, *p, *normal = NULL;
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
  if ((rc = parse_port(uri, &port, detail, len)))
    return rc;
  target_span(uri, text, ipv6, &target, &target_len);
  if (has_dot_segments(uri)) {
    if ((rc = dot_free_target(uri, text, &normal, &target_len, detail, len)))
      return rc;
    target = normal;
  }
  slash = target_len == 0 || target[0] != '/';

  /* host\0 authority\0 target\0, in one block (a decoded host is no
   * longer than as written) */
  size = host_len + 1 + (host_len + 2 + 7) + 1 + target_len + 2;
  block = xfer__malloc(size);
  if (!block) {
    rc = out_of_memory(detail, len);
    goto done;
  }
  p = block;
  u->host = p;
  if (uri->hostData.ip4 || uri->hostData.ip6 || uri->hostData.ipFuture.first)
    memcpy(p, uri->hostText.first, host_len);
  else if (!(host_len = decode_host(uri->hostText.first, host_len, p, detail,
                                    len))) {
    rc = XFER_E_BAD_URL;
    goto done;
  }
  if ((rc = check_host(uri, p, host_len, detail, len)))
    goto done;
  if (!(u->text = dup_text(text))) {
    rc = out_of_memory(detail, len);
    goto done;
  }
  p += host_len;
  *p++ = '\0';
  u->authority = p;
  p += sprintf(p, ipv6 ? "[%s]" : "%s", u->host);
  if (uri->portText.first && port != 80)
    p += sprintf(p, ":%u", (unsigned)port);
  *p++ = '\0';
  u->target = p;
  if (slash)
    *p++ = '/';
  memcpy(p, target, target_len);
  p[target_len] = '\0';
  u->block = block;
  block = NULL; /* u's now */
  u->port = port;
  u->host_is_ipv6 = ipv6;
  rc = XFER_OK;
done: /* what is not u's: the block on a failure, the dot-free target */
  xfer__free(block);
  xfer__free(normal);
  return rc;
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
  switch (parse_uri(&uri, text, &error_pos)) {
  case URI_SUCCESS:
    break;
  case URI_ERROR_MALLOC:
    return out_of_memory(detail, detail_len);
  default:
    snprintf(detail, detail_len, "malformed URL at offset %ld: '%.40s'",
             error_pos ? (long)(error_pos - text) : 0L,
             error_pos ? error_pos : text);
    return XFER_E_BAD_URL;
  }
  rc = build(u, &uri, text, detail, detail_len);
  uriFreeUriMembersMmA(&uri, &uri_memory);
  return rc;
}

/* uriparser failed: out of memory, or `what` (with the reference as
 * received, when there is one). */
static xfer_code url_error(int err, const char *what, char *detail,
                           size_t len, const char *reference) {
  if (err == URI_ERROR_MALLOC)
    return out_of_memory(detail, len);
  if (reference)
    snprintf(detail, len, "%s '%.80s'", what, reference);
  else
    snprintf(detail, len, "%s", what);
  return XFER_E_BAD_URL;
}

/* Where a reference's authority ends: after "scheme://host:port" or
 * "//host:port" (at the first '/', '?' or '#' after it), or at its start
 * when it has none (a path, a query). */
static const char *authority_end(const char *ref) {
  const char *p = ref;

  while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
         (p > ref && ((*p >= '0' && *p <= '9') || *p == '+' || *p == '-' ||
                      *p == '.')))
    p++;
  p = p > ref && *p == ':' ? p + 1 : ref; /* a scheme, or none */
  if (p[0] != '/' || p[1] != '/')
    return ref;
  return p + 2 + strcspn(p + 2, "/?#");
}

/* A Location as servers send it, made a URI reference: a space, a
 * control byte, a byte past ASCII (UTF-8 paths) and the few printable
 * characters RFC 3986 has no place for (a '%' that starts no escape too)
 * are percent-encoded, as curl and browsers do, rather than the redirect
 * failing. NULL when out of memory. */
static char *encode_location(const char *ref) {
  static const char hex[] = "0123456789ABCDEF";
  size_t len = strlen(ref);
  const char *path = authority_end(ref);
  char *out = xfer__malloc(3 * len + 1), *p = out;

  if (!out)
    return NULL;
  for (const unsigned char *q = (const unsigned char *)ref; *q; q++) {
    bool stray_percent = *q == '%' && !(hex_value((char)q[1]) >= 0 &&
                                        hex_value((char)q[2]) >= 0);
    /* Brackets belong to an IPv6 literal; past the authority ("?a[]=1",
     * as PHP and Rails write) they are data. */
    bool bracket = (*q == '[' || *q == ']') && (const char *)q >= path;
    if (*q <= 0x20 || *q >= 0x7f || strchr("\"<>\\^`{|}", *q) ||
        stray_percent || bracket) {
      *p++ = '%';
      *p++ = hex[*q >> 4];
      *p++ = hex[*q & 15];
    } else {
      *p++ = (char)*q;
    }
  }
  *p = '\0';
  return out;
}

xfer_code xfer__url_resolve(struct xfer__url *out, const struct xfer__url *base,
                            const char *reference, char *detail,
                            size_t detail_len) {
  UriUriA base_uri, ref_uri, abs_uri;
  char *text = NULL, *encoded;
  int chars = 0, err;
  xfer_code rc = XFER_E_BAD_URL;

  memset(out, 0, sizeof(*out));
  if (!(encoded = encode_location(reference)))
    return out_of_memory(detail, detail_len);
  if ((err = parse_uri(&base_uri, base->text, NULL)) != URI_SUCCESS) {
    xfer__free(encoded);
    return url_error(err, "malformed base URL", detail, detail_len, NULL);
  }
  if ((err = parse_uri(&ref_uri, encoded, NULL)) != URI_SUCCESS) {
    xfer__free(encoded);
    uriFreeUriMembersMmA(&base_uri, &uri_memory);
    return url_error(err, "malformed redirect location", detail, detail_len,
                     reference);
  }
  if ((err = uriAddBaseUriExMmA(&abs_uri, &ref_uri, &base_uri,
                                URI_RESOLVE_STRICTLY, &uri_memory)) !=
      URI_SUCCESS) {
    rc = url_error(err, "cannot resolve redirect location", detail, detail_len,
                   reference);
  } else {
    if ((err = uriToStringCharsRequiredA(&abs_uri, &chars)) == URI_SUCCESS)
      err = !(text = xfer__malloc((size_t)chars + 1))
                ? URI_ERROR_MALLOC
                : uriToStringA(text, &abs_uri, chars + 1, NULL);
    rc = err == URI_SUCCESS
             ? xfer__url_parse(out, text, detail, detail_len)
             : url_error(err, "cannot resolve redirect location", detail,
                         detail_len, reference);
    xfer__free(text);
    uriFreeUriMembersMmA(&abs_uri, &uri_memory);
  }
  xfer__free(encoded);
  uriFreeUriMembersMmA(&ref_uri, &uri_memory);
  uriFreeUriMembersMmA(&base_uri, &uri_memory);
  return rc;
}
