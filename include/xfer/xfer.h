/*
 * libxfer: outbound network transfers for multithreaded servers.
 *
 * The model is libcurl's multi_socket API: each worker thread owns one
 * multi handle and drives it from its own event loop through a socket
 * callback, a timer callback and xfer_multi_socket_action().
 *
 * Thread rules, in short (docs/threading.md has the whole page):
 *   - a multi and the transfers added to it are used by one thread at a
 *     time (the thread that drives that multi);
 *   - a transfer that is not added to any multi may be used by any thread,
 *     one at a time;
 *   - xfer_strerror() and xfer_multi_strerror() may be called from any
 *     thread at any time.
 *
 * The comment above each function is its contract: what it does, each
 * value it returns and when, what a failure changes, and which thread may
 * call it (docs/api/ has a page per function). "Not a transfer" (a multi,
 * a pool) means a pointer that is not a live handle of that kind: a
 * freed one is caught while its memory is not reused, a help in finding
 * bugs, not a licence to use freed handles.
 *
 * This header is strict C11 and self-contained.
 */
#ifndef XFER_XFER_H
#define XFER_XFER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(BUILDING_XFER) && defined(__GNUC__)
#define XFER_EXTERN __attribute__((visibility("default")))
#else
#define XFER_EXTERN
#endif

#define XFER_VERSION_MAJOR 0
#define XFER_VERSION_MINOR 1
#define XFER_VERSION_PATCH 0
#define XFER_VERSION_STRING "0.1.0"

/* One transfer (a request and its response). */
typedef struct xfer xfer;
/* A set of transfers driven by one thread's event loop. */
typedef struct xfer_multi xfer_multi;
/* The connection pool shared by the multis of a process. */
typedef struct xfer_pool xfer_pool;

/*
 * Errors. One enum per interface; 0 is success; values are never
 * renumbered, new ones are appended. The third column is the text that
 * xfer_strerror() / xfer_multi_strerror() return.
 */
#define XFER_CODE_MAP(XX)                                                     \
  XX(OK, 0, "no error")                                                       \
  XX(E_BAD_HANDLE, 1, "not a valid handle")                                   \
  XX(E_BAD_ARGUMENT, 2, "bad argument")                                       \
  XX(E_OUT_OF_MEMORY, 3, "out of memory")                                     \
  XX(E_IN_USE, 4, "the handle is in use")                                     \
  XX(E_NO_URL, 5, "no URL set on the transfer")                               \
  XX(E_SOCKET_CALLBACK, 6, "the socket callback refused a socket")            \
  XX(E_TIMEOUT, 7, "operation timed out")                                     \
  XX(E_BAD_URL, 8, "malformed URL")                                           \
  XX(E_UNSUPPORTED_SCHEME, 9, "URL scheme not supported")                     \
  XX(E_RESOLVE, 10, "could not resolve host name")                            \
  XX(E_CONNECT, 11, "could not connect")                                      \
  XX(E_CONNECT_TIMEOUT, 12, "connection timed out")                           \
  XX(E_TOO_SLOW, 13, "transfer slower than the low-speed limit")              \
  XX(E_PEER_CLOSED, 14, "the server closed the connection early")             \
  XX(E_SEND, 15, "failed sending the request")                                \
  XX(E_RECV, 16, "failed receiving the response")                             \
  XX(E_BAD_STATUS_LINE, 17, "malformed response status line")                 \
  XX(E_BAD_HEADER, 18, "malformed response header")                           \
  XX(E_HEADERS_TOO_LARGE, 19, "response headers too large")                   \
  XX(E_BAD_CHUNK, 20, "malformed chunked encoding")                           \
  XX(E_BODY_TOO_LONG, 21, "response body longer than announced")              \
  XX(E_BAD_RESPONSE, 22, "malformed response")                                \
  XX(E_TOO_MANY_REDIRECTS, 23, "too many redirects")                          \
  XX(E_WRITE_CALLBACK, 24, "the write callback aborted the transfer")         \
  XX(E_READ_CALLBACK, 25, "the read callback aborted the transfer")           \
  XX(E_RESOLVE_TIMEOUT, 26, "name resolution timed out")                     \
  XX(E_BODY_LENGTH, 27,                                                       \
     "the request body did not match its announced length")                   \
  XX(E_HEADER_CALLBACK, 28, "the header callback aborted the transfer")       \
  XX(E_STOPPED, 29, "the transfer was stopped before it finished")           \
  XX(E_CANNOT_RESEND, 30, "the streamed request body cannot be sent again")

#define XFER_MCODE_MAP(XX)                                                    \
  XX(OK, 0, "no error")                                                       \
  XX(BAD_HANDLE, 1, "not a valid multi handle")                               \
  XX(BAD_XFER_HANDLE, 2, "not a valid transfer handle")                       \
  XX(BAD_ARGUMENT, 3, "bad argument")                                         \
  XX(OUT_OF_MEMORY, 4, "out of memory")                                       \
  XX(RECURSIVE_API_CALL, 5, "multi call made from inside a callback")         \
  XX(ADDED_ALREADY, 6, "the transfer is already added to a multi handle")     \
  XX(NOT_ADDED, 7, "the transfer is not added to this multi handle")          \
  XX(TIMER_CALLBACK, 8, "the timer callback returned an error")               \
  XX(POLL_FAILED, 9, "poll() failed")

typedef enum xfer_code {
#define XFER_CODE_ENUM_(name, value, text) XFER_##name = value,
  XFER_CODE_MAP(XFER_CODE_ENUM_)
#undef XFER_CODE_ENUM_
  XFER_CODE_LAST_ /* not an error: one past the highest value */
} xfer_code;

typedef enum xfer_mcode {
#define XFER_MCODE_ENUM_(name, value, text) XFER_M_##name = value,
  XFER_MCODE_MAP(XFER_MCODE_ENUM_)
#undef XFER_MCODE_ENUM_
  XFER_MCODE_LAST_ /* not an error: one past the highest value */
} xfer_mcode;

/* A static English text for a transfer error code (XFER_CODE_MAP's third
 * column; never free it). Returns the text; "unknown error code" for a
 * value outside the enum; never NULL. Cannot fail; changes nothing.
 * Thread: any thread, any time. */
XFER_EXTERN const char *xfer_strerror(xfer_code code);
/* The same for a multi error code (XFER_MCODE_MAP). Returns the text;
 * "unknown error code" for a value outside the enum; never NULL. Cannot
 * fail; changes nothing. Thread: any thread, any time. */
XFER_EXTERN const char *xfer_multi_strerror(xfer_mcode code);

/* ------------------------------------------------------------------------
 * Allocator hooks
 */

/* The allocator of libxfer's own memory, as nghttp2's nghttp2_mem: each
 * function gets `user` last, and all four are required. uriparser's
 * allocations go through them too; c-ares and liburcu allocate through
 * the C library's allocator regardless. */
typedef struct xfer_mem {
  void *user;
  void *(*malloc)(size_t size, void *user);
  void (*free)(void *ptr, void *user);
  void *(*calloc)(size_t count, size_t size, void *user);
  void *(*realloc)(void *ptr, size_t size, void *user);
} xfer_mem;

/* Installs process-wide allocator hooks (*mem is copied) for the next
 * allocation on; NULL restores the C library's.
 * Returns XFER_OK; XFER_E_BAD_ARGUMENT when one of the four functions is
 * NULL; XFER_E_IN_USE while libxfer holds any memory (some handle is
 * alive), so that no block is freed by another allocator than the one
 * that made it: call it before the first handle, or after the last is
 * freed. On failure, nothing is changed (the hooks in use stay).
 * Thread: any one thread, while no other thread calls into libxfer. */
XFER_EXTERN xfer_code xfer_mem_set(const xfer_mem *mem);

/* ------------------------------------------------------------------------
 * Transfers
 */

/* A new transfer, every option at its default; it does nothing until it
 * is added to a multi. The caller owns it and frees it with xfer_free().
 * Returns the transfer; NULL when out of memory (nothing is left
 * allocated). Thread: any thread. */
XFER_EXTERN xfer *xfer_new(void);

/* Frees a transfer that is not added to a multi, and all it holds: the
 * strings, message and detail it gave out become invalid.
 * Returns XFER_OK (also for NULL); XFER_E_BAD_HANDLE when x is not a
 * transfer; XFER_E_IN_USE while x is added (remove it first).
 * On failure, nothing is freed or changed.
 * Thread: any thread, one at a time, while x is not added. */
XFER_EXTERN xfer_code xfer_free(xfer *x);

/* Puts a transfer that is not added back as xfer_new() made it: every
 * option (URL, method, headers, body, callbacks, timeouts, private
 * pointer) to its default and its results (status, headers, byte counts,
 * timeline, result, message, error detail) cleared; the handle stays, and
 * strings it gave out become invalid.
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer;
 * XFER_E_IN_USE while x is added (also from its own callbacks).
 * On failure, nothing is changed.
 * Thread: any thread, one at a time, while x is not added. */
XFER_EXTERN xfer_code xfer_reset(xfer *x);

/* Stores an opaque pointer for the application, returned by
 * xfer_get_private(); the library never looks at it. Allowed while x is
 * added. Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a
 * transfer. On failure, nothing is changed.
 * Thread: the thread driving x's multi (callbacks included), or any
 * thread (one at a time) while x is not added. */
XFER_EXTERN xfer_code xfer_set_private(xfer *x, void *ptr);
/* The pointer stored with xfer_set_private(). Returns it; NULL when none
 * was stored or x is not a transfer. Cannot fail; changes nothing.
 * Thread: the thread driving x's multi (callbacks included), or any
 * thread (one at a time) while x is not added. */
XFER_EXTERN void *xfer_get_private(const xfer *x);

/*
 * A transfer's timeline: the time from the moment it was added to its
 * multi to the end of each phase, in microseconds. The values are ordered:
 * queue <= namelookup <= connect <= appconnect <= pretransfer <=
 * starttransfer <= total. A phase that did not happen (no name lookup for a
 * numeric address, no TLS, a reused connection) takes the previous phase's
 * value. A phase not reached yet is -1; when the transfer is done, every
 * phase has a value.
 */
typedef struct xfer_timeline {
  int64_t queue_us;         /* waiting in the multi before it started */
  int64_t namelookup_us;    /* name resolved */
  int64_t connect_us;       /* TCP connected */
  int64_t appconnect_us;    /* TLS handshake done */
  int64_t pretransfer_us;   /* about to send the request */
  int64_t starttransfer_us; /* first response byte */
  int64_t total_us;         /* done */
} xfer_timeline;

/* Copies the timeline of x's current or last run into *out (the
 * caller's; all -1 before x was ever added).
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer;
 * XFER_E_BAD_ARGUMENT when out is NULL. On failure, *out is not written.
 * Thread: the thread driving x's multi (callbacks included), or any
 * thread (one at a time) while x is not added. */
XFER_EXTERN xfer_code xfer_get_timeline(const xfer *x, xfer_timeline *out);

/* The human-readable detail of x's last error, more specific than
 * xfer_strerror() of its code: of a failed run, or of a setter's refusal.
 * Returns it; "" when there is none or x is not a transfer; never NULL.
 * The string belongs to x: its text changes with x's next error, when x
 * is added again or reset, and when xfer_set_url() accepts a URL
 * (cleared); it is gone with x. Cannot fail; changes nothing.
 * Thread: the thread driving x's multi (callbacks included), or any
 * thread (one at a time) while x is not added. */
XFER_EXTERN const char *xfer_get_error_detail(const xfer *x);

/* --- what to fetch, and how (all refused with XFER_E_IN_USE while the
 * transfer is added to a multi; strings are copied). While x is added only
 * its multi's thread may call them (to get XFER_E_IN_USE, e.g. from a
 * callback). A refusal leaves the options as they were. --- */

/* The URL: http://host[:port]/path?query, checked at once. URLs that
 * could never be fetched are bad ones too: user info, port 0, an
 * IPvFuture literal ([v1.x]), a host name longer than DNS allows (253
 * characters, labels of 63), or one that holds anything but letters,
 * digits, '-', '.' and '_' once its percent-encoding is decoded.
 * Returns XFER_OK (and clears xfer_get_error_detail()); XFER_E_BAD_HANDLE
 * when x is NULL or not a transfer; XFER_E_IN_USE while x is added;
 * XFER_E_BAD_URL for a NULL, empty or bad URL; XFER_E_UNSUPPORTED_SCHEME
 * for any scheme but http (https included); XFER_E_OUT_OF_MEMORY.
 * On failure the previous URL stays; the last three put the reason in
 * xfer_get_error_detail().
 * Thread: any thread, one at a time, while x is not added. */
XFER_EXTERN xfer_code xfer_set_url(xfer *x, const char *url);
/* The request method: any HTTP token of at most 31 bytes (GET when not
 * set). Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a
 * transfer; XFER_E_IN_USE while x is added; XFER_E_BAD_ARGUMENT when
 * method is NULL, empty, too long or not a token.
 * On failure the method stays; XFER_E_BAD_ARGUMENT puts the reason in
 * xfer_get_error_detail().
 * Thread: any thread, one at a time, while x is not added. */
XFER_EXTERN xfer_code xfer_set_method(xfer *x, const char *method);
/* Adds a request header. The name must be a token; neither name nor value
 * may hold a control character (0x00-0x1F but tab, or 0x7F). A Host given
 * here replaces ours. A Content-Length must be the decimal length of the
 * body the transfer sends (0 without one), and a Transfer-Encoding must be
 * "chunked" with a streamed body of size -1; both are checked when the
 * transfer starts, whose run then fails with XFER_E_BAD_ARGUMENT and a
 * detail when they do not say the body.
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer;
 * XFER_E_IN_USE while x is added; XFER_E_BAD_ARGUMENT for a NULL or empty
 * name, a NULL value, or a character refused above; XFER_E_OUT_OF_MEMORY.
 * On failure the headers stay as they were; XFER_E_BAD_ARGUMENT puts the
 * reason in xfer_get_error_detail().
 * Thread: any thread, one at a time, while x is not added. */
XFER_EXTERN xfer_code xfer_add_header(xfer *x, const char *name,
                                      const char *value);
/* Removes every header added with xfer_add_header().
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer;
 * XFER_E_IN_USE while x is added. On failure, nothing is changed.
 * Thread: any thread, one at a time, while x is not added. */
XFER_EXTERN xfer_code xfer_clear_headers(xfer *x);
/* A request body from a buffer (copied), sent with Content-Length; it
 * replaces a body callback. NULL data with len 0 removes the body;
 * non-NULL data with len 0 sends "Content-Length: 0".
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer;
 * XFER_E_IN_USE while x is added; XFER_E_BAD_ARGUMENT for NULL data with
 * a len; XFER_E_OUT_OF_MEMORY.
 * On failure the body stays as it was; XFER_E_BAD_ARGUMENT puts the
 * reason in xfer_get_error_detail().
 * Thread: any thread, one at a time, while x is not added. */
XFER_EXTERN xfer_code xfer_set_body(xfer *x, const void *data, size_t len);

/* Fills buf with up to len bytes of the request body; returns how many, 0
 * at the end, or -1 to abort the transfer (XFER_E_READ_CALLBACK, as is a
 * return above len). */
typedef long (*xfer_read_cb)(char *buf, size_t len, void *userp);
/* A streamed request body: `size` bytes (sent with Content-Length), or -1
 * for unknown (sent chunked); it replaces a buffer body. The size is a
 * promise: no byte past it is ever sent, and a callback that has more (it
 * is asked for one byte more than is left) or ends before it fails the
 * transfer with XFER_E_BODY_LENGTH and closes the connection. A streamed
 * body cannot be sent twice: such a request is never retried, and a
 * followed redirect that keeps the body (307, 308; 301, 302 of a method
 * other than POST) fails the run with XFER_E_CANNOT_RESEND.
 * A server's final answer (300 or more) that comes before the body is all
 * sent, with a buffer body as well, stops the upload: the transfer ends
 * with that answer and its connection is closed (xfer_set_body_cb(3)).
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer;
 * XFER_E_IN_USE while x is added; XFER_E_BAD_ARGUMENT for a NULL cb or a
 * size below -1.
 * On failure the body stays as it was; XFER_E_BAD_ARGUMENT puts the
 * reason in xfer_get_error_detail().
 * Thread: any thread, one at a time, while x is not added. The callback
 * runs on x's multi's thread and must not call the multi. */
XFER_EXTERN xfer_code xfer_set_body_cb(xfer *x, xfer_read_cb cb, void *userp,
                                       int64_t size);

/* Receives response body bytes; return len to go on, anything else aborts
 * the transfer (XFER_E_WRITE_CALLBACK). Without one, the body is dropped. */
typedef size_t (*xfer_write_cb)(const char *data, size_t len, void *userp);
/* Sets the write callback (NULL: none, the body is dropped); data is
 * valid during the call only.
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer;
 * XFER_E_IN_USE while x is added. On failure, nothing is changed.
 * Thread: any thread, one at a time, while x is not added. The callback
 * runs on x's multi's thread and must not call the multi. */
XFER_EXTERN xfer_code xfer_set_write_cb(xfer *x, xfer_write_cb cb, void *userp);
/* Receives each final response header once the head is complete (each
 * followed redirect's too; name and value are not NUL-terminated; trailer
 * fields are not passed);
 * return 0, anything else aborts the transfer (XFER_E_HEADER_CALLBACK). */
typedef int (*xfer_header_cb)(const char *name, size_t name_len,
                              const char *value, size_t value_len, void *userp);
/* Sets the header callback (NULL: none); the strings are valid during the
 * call only.
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer;
 * XFER_E_IN_USE while x is added. On failure, nothing is changed.
 * Thread: any thread, one at a time, while x is not added. The callback
 * runs on x's multi's thread and must not call the multi. */
XFER_EXTERN xfer_code xfer_set_header_cb(xfer *x, xfer_header_cb cb,
                                         void *userp);

#define XFER_IPRESOLVE_ANY 0
#define XFER_IPRESOLVE_V4 4
#define XFER_IPRESOLVE_V6 6
/* Which address family to resolve and connect over (default ANY). A
 * numeric host of the other family fails the run with XFER_E_RESOLVE.
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer;
 * XFER_E_IN_USE while x is added; XFER_E_BAD_ARGUMENT for a value other
 * than 0, 4 or 6.
 * On failure the version stays; XFER_E_BAD_ARGUMENT puts the reason in
 * xfer_get_error_detail().
 * Thread: any thread, one at a time, while x is not added. */
XFER_EXTERN xfer_code xfer_set_ip_version(xfer *x, int version);
/* Binds the connection to a local IP address (numeric). NULL: any.
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer;
 * XFER_E_IN_USE while x is added; XFER_E_BAD_ARGUMENT when ip is not a
 * numeric IPv4 or IPv6 address.
 * On failure the bind stays; XFER_E_BAD_ARGUMENT puts the reason in
 * xfer_get_error_detail().
 * Thread: any thread, one at a time, while x is not added. */
XFER_EXTERN xfer_code xfer_set_local_address(xfer *x, const char *ip);
/* The time options take any value from 0 to LONG_MAX; one too large for
 * the clock saturates: effectively no limit.
 * Name lookup and connect together (default 300000); 0: the default. Past
 * it the run fails with XFER_E_RESOLVE_TIMEOUT or XFER_E_CONNECT_TIMEOUT.
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer;
 * XFER_E_IN_USE while x is added; XFER_E_BAD_ARGUMENT when ms < 0.
 * On failure the timeout stays; XFER_E_BAD_ARGUMENT puts the reason in
 * xfer_get_error_detail().
 * Thread: any thread, one at a time, while x is not added. */
XFER_EXTERN xfer_code xfer_set_connect_timeout_ms(xfer *x, long ms);
/* The whole transfer, from add to done, redirects included (default 0:
 * none; up to LONG_MAX, saturating). Past it: XFER_E_TIMEOUT.
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer;
 * XFER_E_IN_USE while x is added; XFER_E_BAD_ARGUMENT when ms < 0.
 * On failure the timeout stays; XFER_E_BAD_ARGUMENT puts the reason in
 * xfer_get_error_detail().
 * Thread: any thread, one at a time, while x is not added. */
XFER_EXTERN xfer_code xfer_set_timeout_ms(xfer *x, long ms);
/* Fails the run with XFER_E_TOO_SLOW when fewer than `bytes` arrive in
 * any `period_ms` while waiting for the response. 0 bytes: off (the
 * default). A period too long for the clock saturates.
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer;
 * XFER_E_IN_USE while x is added; XFER_E_BAD_ARGUMENT for a negative
 * value, or bytes > 0 with period_ms 0.
 * On failure the limit stays; XFER_E_BAD_ARGUMENT puts the reason in
 * xfer_get_error_detail().
 * Thread: any thread, one at a time, while x is not added. */
XFER_EXTERN xfer_code xfer_set_low_speed(xfer *x, long bytes, long period_ms);
/* The status line and headers of a response together, with a chunked
 * body's trailer fields (default 102400 bytes); past it, or past 500
 * header and trailer lines, the run fails with XFER_E_HEADERS_TOO_LARGE.
 * The heads of interim (1xx) responses before it count toward both.
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer;
 * XFER_E_IN_USE while x is added; XFER_E_BAD_ARGUMENT below 64 or above
 * 1 GiB (1073741824).
 * On failure the limit stays; XFER_E_BAD_ARGUMENT puts the reason in
 * xfer_get_error_detail().
 * Thread: any thread, one at a time, while x is not added. */
XFER_EXTERN xfer_code xfer_set_max_header_size(xfer *x, size_t bytes);
/* Follows up to `max` redirects (0: off, the default); one more fails the
 * run with XFER_E_TOO_MANY_REDIRECTS. 301 and 302 turn a POST into a GET,
 * 303 any method but HEAD, as browsers and curl do; 307 and 308 keep the
 * method and body. A followed redirect's body does not reach the write
 * callback. A hop without the body goes without the Content-Length and
 * Transfer-Encoding headers added; one to another host or port without
 * the Authorization, Cookie and Host headers added.
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer;
 * XFER_E_IN_USE while x is added; XFER_E_BAD_ARGUMENT when max < 0.
 * On failure the limit stays; XFER_E_BAD_ARGUMENT puts the reason in
 * xfer_get_error_detail().
 * Thread: any thread, one at a time, while x is not added. */
XFER_EXTERN xfer_code xfer_set_follow_redirects(xfer *x, int max);

/* --- what happened (valid after the transfer finished, and from its
 * header and write callbacks; the strings belong to the transfer until it
 * is added again, reset or freed). None of these changes anything.
 * Thread, for each: the thread driving x's multi (callbacks included), or
 * any thread (one at a time) while x is not added. --- */

/* The final response's status code (interim 1xx responses are skipped).
 * Returns it; 0 before the final response's headers are in (none yet, or
 * none came) or when x is not a transfer. Changes nothing.
 * Thread: the thread driving x's multi, or any thread (one at a time)
 * while x is not added. */
XFER_EXTERN int xfer_get_status(const xfer *x);
/* The final response's reason phrase ("OK", "Not Found": whatever the
 * server wrote after the code, up to 127 bytes). Returns it, owned by x
 * and valid until x is added again, reset or freed; "" when the server
 * wrote none, before the headers are in, or when x is not a transfer;
 * never NULL. Changes nothing.
 * Thread: the thread driving x's multi, or any thread (one at a time)
 * while x is not added. */
XFER_EXTERN const char *xfer_get_reason(const xfer *x);
/* The value of the final response's first header `name`
 * (case-insensitive; trailer fields of a chunked body are not headers
 * here). Returns it, owned by x and valid until x is added again, reset or
 * freed; NULL when there is none, before the headers are in, when name is
 * NULL or x is not a transfer, or when memory ran out. The first call for
 * a response makes the header strings from the head as received (the
 * parse keeps the head, not strings); nothing else changes.
 * Thread: the thread driving x's multi, or any thread (one at a time)
 * while x is not added. */
XFER_EXTERN const char *xfer_get_header(const xfer *x, const char *name);
/* The number of the final response's header lines, for
 * xfer_get_header_at() (trailer fields not included).
 * Returns it; 0 before the headers are in or when x is not a transfer.
 * Changes nothing (the parse counted them).
 * Thread: the thread driving x's multi, or any thread (one at a time)
 * while x is not added. */
XFER_EXTERN size_t xfer_get_header_count(const xfer *x);
/* The i-th header of the final response, in order of arrival, into *name
 * and *value (owned by x, valid until x is added again, reset or freed).
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer;
 * XFER_E_BAD_ARGUMENT when name or value is NULL or i is not below
 * xfer_get_header_count(x); XFER_E_OUT_OF_MEMORY when the header strings
 * could not be made (the first call for a response makes them, as
 * xfer_get_header() does). On failure, *name and *value are not written.
 * Thread: the thread driving x's multi, or any thread (one at a time)
 * while x is not added. */
XFER_EXTERN xfer_code xfer_get_header_at(const xfer *x, size_t i,
                                         const char **name,
                                         const char **value);
/* Bytes sent (request heads and bodies) and received (whole responses,
 * headers included) by the current or last run, over all its redirect
 * hops, into *sent and *received (either may be NULL).
 * Returns XFER_OK; XFER_E_BAD_HANDLE when x is NULL or not a transfer.
 * On failure, nothing is written.
 * Thread: the thread driving x's multi, or any thread (one at a time)
 * while x is not added. */
XFER_EXTERN xfer_code xfer_get_bytes(const xfer *x, uint64_t *sent,
                                     uint64_t *received);
/* The id of the connection the last request used (unique in the
 * process: equal ids, one connection). Returns it; 0 when none was used
 * yet or x is not a transfer. Changes nothing.
 * Thread: the thread driving x's multi, or any thread (one at a time)
 * while x is not added. */
XFER_EXTERN uint64_t xfer_get_conn_id(const xfer *x);
/* Whether the last request went out on a connection it did not open
 * (idle, attached, or handed over while it waited). Returns 1 when it
 * did, else 0 (also when x is not a transfer). Changes nothing.
 * Thread: the thread driving x's multi, or any thread (one at a time)
 * while x is not added. */
XFER_EXTERN int xfer_get_reused(const xfer *x);
/* The number of redirects the current or last run followed. Returns it;
 * 0 when x is not a transfer. Changes nothing.
 * Thread: the thread driving x's multi, or any thread (one at a time)
 * while x is not added. */
XFER_EXTERN int xfer_get_redirects(const xfer *x);
/* The result of the last run, the same as its message's. Returns it:
 * XFER_OK while running or never run; XFER_E_STOPPED when
 * xfer_multi_remove() or xfer_multi_destroy() stopped it before it
 * finished; XFER_E_BAD_HANDLE when x is NULL or not a transfer. Changes
 * nothing. Thread: the thread driving x's multi, or any thread (one at a
 * time) while x is not added. */
XFER_EXTERN xfer_code xfer_get_result(const xfer *x);

/* ------------------------------------------------------------------------
 * Connection pools
 */

typedef struct xfer_pool_opts {
  unsigned max_idle_per_destination; /* 0: the default, no limit */
  /* Until the pool has learned when a destination's server closes idle
   * connections, one idle longer than this is checked for liveness when
   * it is taken (a non-blocking peek). Once learned (from a
   * "Keep-Alive: timeout=N" response header, or from the idle age of
   * connections found closed), connections idle past three quarters of
   * that time are checked instead. Younger ones are trusted, and a
   * request they fail before any response byte is retried when it can
   * be sent again (idempotent, and a body that can be sent again). A
   * request that cannot is sent on a reused connection only after a
   * liveness check, and never on one idle past three quarters of the
   * learned time (it gets a new connection). 0: the default, 1000 ms. */
  unsigned recheck_ms;
  /* Idle connections older than this are closed (0: 118000 ms, as curl);
   * one attached to a multi whose transfers all wait on silent peers
   * without a deadline, at that multi's next call. */
  unsigned idle_timeout_ms;
  /* Connections older than this are not reused (0: 24 h). */
  unsigned max_lifetime_ms;
  /* Connections per destination: open sockets, busy, idle, being opened
   * or closing gracefully. A transfer over it waits in the destination's
   * FIFO, across threads, until one is returned or closed; waiters are
   * served in the order they came, but for one case: a waiter that gave up
   * waiting for another multi's attached connection (attached_wait_ms)
   * and holds a slot may be served ahead of an older one still waiting
   * for such a release. 0: no limit. */
  unsigned max_per_destination;
  /* Connections in the whole pool (open or being opened; one closing
   * gracefully no longer counts from the moment its close begins). At the
   * limit an idle connection of another destination is closed to make
   * room; when there is none, the transfer waits in a pool-wide FIFO.
   * 0: no limit. */
  unsigned max_total;
  /* How long a multi keeps a connection it has just finished with
   * attached (still watched by its event loop, for its own next transfer
   * to the same destination) before it goes to the shared side, unless
   * another thread asks for it first. 0: the default, 100 ms; negative:
   * never attach (every connection goes back to the shared side at
   * once). A multi with transfers running lets it go at its first event
   * or timeout after the hold (those transfers bring them; no timer is
   * armed for it); an idle multi, or any multi of a pool with max_total,
   * max_per_destination or a negative attached_wait_ms, arms its timer
   * for the hold's end. */
  int attach_hold_ms;
  /* How long a transfer waits for a connection attached to another multi
   * (whose owner it asked to release it) before it opens one of its own,
   * limits permitting (at a limit it keeps its place, and looks again
   * every attached_wait_ms for a slot that came free): measured with its
   * own clock, so a thread that is busy or stopped driving its multi
   * never holds up another. 0: the default, 10 ms; negative: never wait
   * for one (open instead). */
  int attached_wait_ms;
} xfer_pool_opts;

/* A pool that any number of multis may share (one per process is usual).
 * opts (copied) may be NULL: every default. The caller owns the pool and
 * destroys it after every multi that uses it.
 * Returns the pool; NULL when out of memory (nothing is left allocated).
 * Thread: any thread. */
XFER_EXTERN xfer_pool *xfer_pool_new(const xfer_pool_opts *opts);
/* Closes the idle connections and frees the pool.
 * Returns XFER_OK (also for NULL); XFER_E_BAD_HANDLE when pool is not a
 * pool; XFER_E_IN_USE while a multi still uses it (destroy the multis
 * first). On failure, nothing is freed or changed.
 * Thread: any thread, once no multi uses the pool and no other thread
 * calls into it. */
XFER_EXTERN xfer_code xfer_pool_destroy(xfer_pool *pool);

typedef struct xfer_pool_stats {
  uint64_t idle;         /* idle connections now */
  uint64_t opened_total; /* connections opened */
  uint64_t reused_total; /* transfers given a connection they did not
                            open (idle, attached, or handed over while
                            they waited): once each */
  uint64_t closed_total; /* connections closed, for any of the reasons
                            below */
  uint64_t reopened_total;     /* of opened_total: opened because a
                                  reused one was dead (not first opens) */
  uint64_t dead_on_checkout;   /* idle connections found dead when taken */
  uint64_t retries_total;      /* requests retried on a fresh connection */
  uint64_t closed_idle_timeout; /* of closed_total: idle too long */
  uint64_t closed_lifetime;     /* of closed_total: too old */
  uint64_t closed_peer;         /* of closed_total: the server closed it
                                   (or said it would) */
  uint64_t closed_error;        /* of closed_total: a transfer failed or
                                   was stopped while using it */
  uint64_t closed_limit;        /* of closed_total: over an idle or total
                                   limit */
  uint64_t open;                /* connections open now, in any state */
  uint64_t busy;                /* of those, in use by a transfer */
  uint64_t checkout_hits;       /* checkouts that found an idle one */
  uint64_t checkout_misses;     /* checkouts that found none */
  uint64_t lock_contention;     /* pool lock attempts that had to wait */
  uint64_t waiting;             /* transfers waiting for a connection now */
  uint64_t waited_total;        /* transfers that had to wait */
  uint64_t attached;            /* of idle: attached to the multi that
                                   last used them */
  uint64_t released_on_demand;  /* attached ones released early because
                                   another thread waited for them */
  uint64_t destinations;        /* destinations known now (unused ones
                                   are forgotten by the idle sweep) */
  uint64_t liveness_checks;     /* idle connections checked before
                                   reuse (a non-blocking peek each) */
} xfer_pool_stats;

/* Copies the pool's counters into *out without stopping the pool: each
 * counter is exact, the set is not one snapshot.
 * Returns XFER_OK; XFER_E_BAD_HANDLE when pool is NULL or not a pool;
 * XFER_E_BAD_ARGUMENT when out is NULL. On failure, *out is not written.
 * Thread: any thread, any time (while the pool exists). */
XFER_EXTERN xfer_code xfer_pool_get_stats(xfer_pool *pool,
                                          xfer_pool_stats *out);

/* ------------------------------------------------------------------------
 * Multi handles
 */

/* What the socket callback is told about a socket. */
#define XFER_POLL_NONE 0
#define XFER_POLL_IN 1     /* wait for it to be readable */
#define XFER_POLL_OUT 2    /* wait for it to be writable */
#define XFER_POLL_INOUT 3  /* both */
#define XFER_POLL_REMOVE 4 /* stop watching it (it is about to be closed,
                              or nothing in the multi needs it now) */

/* The fd argument of xfer_multi_socket_action() for "a timer expired". */
#define XFER_SOCKET_TIMEOUT (-1)

/* The events argument of xfer_multi_socket_action(). */
#define XFER_CSELECT_IN 0x01
#define XFER_CSELECT_OUT 0x02
#define XFER_CSELECT_ERR 0x04

/*
 * Told about *changes* only: a new socket (IN/OUT/INOUT for an fd not
 * watched yet; socketp is NULL then), a changed interest (socketp is what
 * xfer_multi_assign() stored), and REMOVE. After REMOVE the same fd number
 * may come back at once as a new socket. Return 0; any other value makes
 * the transfer that needed the socket fail with XFER_E_SOCKET_CALLBACK.
 * The answer to REMOVE is not looked at. A refused report counts as not
 * made: a socket refused as new gets no REMOVE; one only the multi itself needs is asked for again at the next
 * call. Called from inside xfer_multi_* calls on the multi's thread; it must not
 * call back into the multi (such calls get XFER_M_RECURSIVE_API_CALL) but
 * for xfer_multi_assign(), xfer_multi_info_read() and
 * xfer_multi_get_stats().
 */
typedef int (*xfer_socket_cb)(xfer_multi *multi, int fd, int what,
                              void *userp, void *socketp);

/*
 * Told when the multi needs a timer earlier than the one armed: call
 * xfer_multi_socket_action(multi, XFER_SOCKET_TIMEOUT, 0, ...) once
 * timeout_ms milliseconds have passed (0: as soon as possible), replacing
 * any timer set before. A deadline that moves later is not told: the
 * armed timer fires, the timeout action finds nothing due, and the next
 * deadline is told then (so the callback runs about once per deadline
 * reached, not once per request). The timer is taken as one-shot: after
 * a timeout action the callback is told again if a deadline remains.
 * When no deadline is left while transfers run, a timer told before
 * that may still be armed is told -1 (stop it), at most once per 100 ms
 * (left armed, it would make each wait of the loop arm a kernel timer
 * until it fired); an idle multi's timer is left to fire.
 * xfer_multi_destroy() tells -1 when a timeout was told and no -1 since.
 * Return 0; any other value makes the xfer_multi_* call that triggered
 * it return XFER_M_TIMER_CALLBACK (a refused deadline counts as no timer
 * armed, a refused -1 as the timer still armed).
 */
typedef int (*xfer_timer_cb)(xfer_multi *multi, long timeout_ms, void *userp);

/* A new multi handle using `pool` (NULL: a private pool of its own,
 * destroyed with the multi). The caller owns it and destroys it with
 * xfer_multi_destroy(), before the pool.
 * Returns the multi; NULL when out of memory or when pool is not a pool
 * (nothing is left allocated; the pool is untouched).
 * Thread: any thread; from then on one thread at a time drives it. */
XFER_EXTERN xfer_multi *xfer_multi_new(xfer_pool *pool);

/* The DNS servers of the multi's resolver, "ip[:port],..." (c-ares'
 * format; [ipv6]:port), copied. NULL: the system's (the default).
 * Returns XFER_M_OK; XFER_M_BAD_HANDLE when multi is NULL or not a multi;
 * XFER_M_RECURSIVE_API_CALL from inside a callback; XFER_M_BAD_ARGUMENT
 * for a malformed list, and once the multi has attempted a lookup of a
 * name (whether it worked or not); XFER_M_OUT_OF_MEMORY.
 * On failure, nothing is changed.
 * Thread: the thread driving the multi, not inside its callbacks. */
XFER_EXTERN xfer_mcode xfer_multi_set_dns_servers(xfer_multi *multi,
                                                  const char *servers);
/* Time per try and number of tries of a DNS query (defaults 2000 ms, 3);
 * a lookup that runs out fails with XFER_E_RESOLVE_TIMEOUT.
 * Returns XFER_M_OK; XFER_M_BAD_HANDLE when multi is NULL or not a multi;
 * XFER_M_RECURSIVE_API_CALL from inside a callback; XFER_M_BAD_ARGUMENT
 * for timeout_ms outside 1..600000, tries below 1, or once the multi has
 * attempted a lookup of a name. On failure, nothing is changed.
 * Thread: the thread driving the multi, not inside its callbacks. */
XFER_EXTERN xfer_mcode xfer_multi_set_dns_timeout(xfer_multi *multi,
                                                  long timeout_ms, int tries);

/*
 * Destroys the multi. Transfers still added are removed (a running one is
 * stopped with XFER_E_STOPPED, its sockets closed; unread messages are
 * dropped) and stay owned by the application, which frees them. Attached
 * connections go to the pool; a private pool is destroyed. It waits for
 * its graceful closes to end, at most 2 s after each began. The socket
 * callback gets REMOVE for every watched socket, the timer callback -1
 * if it was told a timeout and no -1 since.
 * Returns XFER_M_OK (also for NULL); XFER_M_BAD_HANDLE when multi is not
 * a multi; XFER_M_RECURSIVE_API_CALL from inside one of its callbacks.
 * On failure, nothing is changed.
 * Thread: the thread driving the multi, not inside its callbacks.
 */
XFER_EXTERN xfer_mcode xfer_multi_destroy(xfer_multi *multi);

/*
 * Sets the socket callback. The event tracking reports nothing until one
 * is set; after setting (or replacing) it, the next call that runs the
 * multi (socket_action, socket_timeout, perform, add, or remove of a
 * transfer not done) reports every socket in use as new, so an
 * application may switch from xfer_multi_perform() to events at any time,
 * even in the middle of a transfer. The callback replaced is told nothing
 * (no REMOVE), and the new one gets no pointer the old one assigned.
 * NULL turns reporting off.
 * Returns XFER_M_OK; XFER_M_BAD_HANDLE when multi is NULL or not a multi;
 * XFER_M_RECURSIVE_API_CALL from inside a callback.
 * On failure, nothing is changed.
 * Thread: the thread driving the multi, not inside its callbacks.
 */
XFER_EXTERN xfer_mcode xfer_multi_set_socket_cb(xfer_multi *multi,
                                                xfer_socket_cb cb, void *userp);
/* Sets the timer callback (NULL: none); the next call that runs the
 * multi (as for the socket callback) tells it the current deadline, if
 * there is one. A callback replaced (another function or userp) hears
 * nothing more, -1 included: stop the timer it armed yourself. Setting the
 * same callback and userp again changes nothing.
 * Returns XFER_M_OK; XFER_M_BAD_HANDLE when multi is NULL or not a multi;
 * XFER_M_RECURSIVE_API_CALL from inside a callback.
 * On failure, nothing is changed.
 * Thread: the thread driving the multi, not inside its callbacks. */
XFER_EXTERN xfer_mcode xfer_multi_set_timer_cb(xfer_multi *multi,
                                               xfer_timer_cb cb, void *userp);

/* Stores socketp for fd; the socket callback gets it with later events of
 * that fd, REMOVE included. The library does not own it.
 * Returns XFER_M_OK; XFER_M_BAD_HANDLE when multi is NULL or not a multi;
 * XFER_M_BAD_ARGUMENT when the multi does not track fd.
 * On failure, nothing is changed.
 * Thread: the thread driving the multi, also from inside its socket
 * callback. */
XFER_EXTERN xfer_mcode xfer_multi_assign(xfer_multi *multi, int fd,
                                         void *socketp);

/*
 * The event loop saw `events` (XFER_CSELECT_*) on fd, or a timer expired
 * (fd == XFER_SOCKET_TIMEOUT, events ignored). Runs the transfers that
 * wait on fd and those whose deadline has passed. *running (may be NULL)
 * gets the number of transfers not done yet. An fd the multi does not
 * track is ignored (an event may race a REMOVE).
 * Returns XFER_M_OK; XFER_M_BAD_HANDLE when multi is NULL or not a multi;
 * XFER_M_RECURSIVE_API_CALL from inside a callback; XFER_M_TIMER_CALLBACK
 * when the timer callback refused what it was told (a deadline, or -1).
 * A transfer's own failure is not an error of this call: it comes as a
 * message.
 * On BAD_HANDLE and RECURSIVE_API_CALL nothing is changed (*running not
 * set); on TIMER_CALLBACK the work is done, *running is set, and the
 * next call tells the timer again (a refused deadline counts as no timer
 * armed, a refused -1 as the timer still armed).
 * Thread: the thread driving the multi, not inside its callbacks.
 */
XFER_EXTERN xfer_mcode xfer_multi_socket_action(xfer_multi *multi, int fd,
                                                int events, int *running);

/* Exactly xfer_multi_socket_action(multi, XFER_SOCKET_TIMEOUT, 0,
 * running): call it when the timer the timer callback asked for expires.
 * Returns as xfer_multi_socket_action() (XFER_M_OK; XFER_M_BAD_HANDLE;
 * XFER_M_RECURSIVE_API_CALL; XFER_M_TIMER_CALLBACK), with the same
 * effects of a failure.
 * Thread: the thread driving the multi, not inside its callbacks. */
XFER_EXTERN xfer_mcode xfer_multi_socket_timeout(xfer_multi *multi,
                                                 int *running);

/*
 * Without an event loop: runs every transfer that is not done, without
 * blocking; *running (may be NULL) gets the number of transfers not done
 * yet.
 * Returns XFER_M_OK; XFER_M_BAD_HANDLE when multi is NULL or not a multi;
 * XFER_M_RECURSIVE_API_CALL from inside a callback; XFER_M_TIMER_CALLBACK
 * when the timer callback refused what it was told (a deadline, or -1).
 * On BAD_HANDLE and RECURSIVE_API_CALL nothing is changed (*running not
 * set); on TIMER_CALLBACK the work is done, *running is set, and the
 * next call tells the timer again, as for xfer_multi_socket_action().
 * Thread: the thread driving the multi, not inside its callbacks.
 */
XFER_EXTERN xfer_mcode xfer_multi_perform(xfer_multi *multi, int *running);

/*
 * Without an event loop: waits with poll(2) until a socket of the multi is
 * ready, its earliest deadline passes, or timeout_ms passes; at once when
 * a transfer is waiting to run. *numfds (may be NULL) gets the number of
 * ready sockets. Follow it with xfer_multi_perform().
 * Returns XFER_M_OK (also when a signal interrupted the wait: 0 ready);
 * XFER_M_BAD_HANDLE when multi is NULL or not a multi;
 * XFER_M_RECURSIVE_API_CALL from inside a callback; XFER_M_BAD_ARGUMENT
 * when timeout_ms < 0; XFER_M_OUT_OF_MEMORY; XFER_M_POLL_FAILED when
 * poll(2) fails otherwise (errno says why).
 * On failure, nothing is changed (*numfds is not set).
 * Thread: the thread driving the multi, not inside its callbacks.
 */
XFER_EXTERN xfer_mcode xfer_multi_poll(xfer_multi *multi, int timeout_ms,
                                       int *numfds);

/*
 * Adds a transfer. When the multi holds an attached connection to x's
 * destination that needs no liveness check, and x has no body callback,
 * the request goes out from inside the add (on its clock reading), and x
 * waits on a socket already watched for input. Otherwise the multi runs
 * it from the next timeout action (the timer callback is told 0) or
 * perform; so does the rest of a send that did not finish here. The add
 * never finishes x, and calls the socket callback for it only when out
 * of memory (docs/api has the details). What x's last run left (result,
 * detail, response, counters, timeline, message) is cleared. The
 * application keeps ownership; x must not be freed while added.
 * Returns XFER_M_OK; XFER_M_BAD_HANDLE when multi is NULL or not a multi;
 * XFER_M_RECURSIVE_API_CALL from inside a callback;
 * XFER_M_BAD_XFER_HANDLE when x is NULL or not a transfer;
 * XFER_M_ADDED_ALREADY when x is added to this or another multi;
 * XFER_M_OUT_OF_MEMORY; XFER_M_TIMER_CALLBACK when the timer callback
 * refused what it was told (a deadline, or -1).
 * On failure, nothing is changed; but on TIMER_CALLBACK x is added all
 * the same, and runs (or is removed) like any other.
 * Thread: the thread driving the multi, not inside its callbacks; no
 * other thread may be using x.
 */
XFER_EXTERN xfer_mcode xfer_multi_add(xfer_multi *multi, xfer *x);

/* Removes a transfer, done or not; a transfer still running is stopped
 * (its sockets closed, REMOVE reported first; result XFER_E_STOPPED with
 * a detail). An unread message about it is dropped. x keeps its results
 * and may be freed, changed, or added again afterwards.
 * Returns XFER_M_OK; XFER_M_BAD_HANDLE when multi is NULL or not a multi;
 * XFER_M_RECURSIVE_API_CALL from inside a callback;
 * XFER_M_BAD_XFER_HANDLE when x is NULL or not a transfer;
 * XFER_M_NOT_ADDED when x is not added to this multi;
 * XFER_M_TIMER_CALLBACK (x was running) when the timer callback refused
 * what it was told (a deadline, or -1).
 * On failure, nothing is changed; but on TIMER_CALLBACK x is removed all
 * the same.
 * Thread: the thread driving the multi, not inside its callbacks; once
 * removed, x is any thread's (one at a time). */
XFER_EXTERN xfer_mcode xfer_multi_remove(xfer_multi *multi, xfer *x);

/* What xfer_multi_info_read() returns. */
typedef enum xfer_msg_kind { XFER_MSG_DONE = 1 } xfer_msg_kind;
typedef struct xfer_msg {
  xfer_msg_kind msg;
  xfer *x;          /* the finished transfer */
  xfer_code result; /* XFER_OK, or why it failed (xfer_get_error_detail()) */
} xfer_msg;

/*
 * Takes the next message about a finished transfer off the queue, oldest
 * first; each finished transfer gives one. *left (may be NULL) gets the
 * number of messages still queued (0 with NULL).
 * Returns the message, which belongs to the transfer and stays valid
 * until it is added again, reset or freed (removing it is fine); NULL
 * when none is queued or multi is not a multi.
 * NULL changes nothing but *left.
 * Thread: the thread driving the multi, also from inside its callbacks.
 */
XFER_EXTERN const xfer_msg *xfer_multi_info_read(xfer_multi *multi, int *left);

/* Counters of one multi, since it was created. */
typedef struct xfer_multi_stats {
  uint64_t clock_reads;     /* reads of the monotonic clock */
  uint64_t wakeups;         /* socket_action, perform and poll returns */
  uint64_t socket_cb_calls; /* socket callback invocations */
  uint64_t timer_cb_calls;  /* timer callback invocations */
  uint64_t xfers_run;       /* times a transfer was run */
  uint64_t xfers_added;     /* successful xfer_multi_add() calls */
  uint64_t xfers_done;      /* transfers that finished (ok or not) */
  uint64_t sockets_tracked; /* sockets the multi tracks now */
  uint64_t running;         /* transfers added and not done now */
  uint64_t shutdowns;       /* connections handed to the graceful close */
  uint64_t shutting_down;   /* of those, still closing now */
} xfer_multi_stats;

/* Copies the multi's counters into *out. Reads no clock.
 * Returns XFER_M_OK; XFER_M_BAD_HANDLE when multi is NULL or not a multi;
 * XFER_M_BAD_ARGUMENT when out is NULL. On failure, *out is not written.
 * Thread: the thread driving the multi, also from inside its callbacks. */
XFER_EXTERN xfer_mcode xfer_multi_get_stats(xfer_multi *multi,
                                            xfer_multi_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* XFER_XFER_H */
