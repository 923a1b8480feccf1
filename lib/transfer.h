/*
 * A transfer: its handle, its own `now`, its timeline, its error detail,
 * and the handler that does its work: for HTTP, the sequence init, wait,
 * resolve, connect, exchange, done (transfer.c), with redirects and
 * retries; the exchange itself is exchange.h's.
 *
 * Protected by: nothing; a transfer belongs to the thread that drives the
 * multi it is added to (or to whoever holds it when it is not added).
 */
#ifndef XFER_TRANSFER_H
#define XFER_TRANSFER_H

#include "common.h"

#include "cf_socket.h"
#include "exchange.h"
#include "http1.h"
#include "loop.h"
#include "multi_ev.h"
#include "now.h"
#include "pool.h"
#include "resolve.h"
#include "timer.h"
#include "url.h"

enum xfer__state {
  XFER__STATE_IDLE,    /* not added to a multi */
  XFER__STATE_RUNNING, /* added, not done */
  XFER__STATE_DONE     /* added, finished; its message is queued */
};

enum xfer__phase {
  XFER__PHASE_QUEUE,
  XFER__PHASE_NAMELOOKUP,
  XFER__PHASE_CONNECT,
  XFER__PHASE_APPCONNECT,
  XFER__PHASE_PRETRANSFER,
  XFER__PHASE_STARTTRANSFER,
  XFER__PHASE_TOTAL,
  XFER__PHASE_COUNT
};

/* What a start inside xfer_multi_add() came to (handler->start_early). */
enum xfer__early {
  XFER__EARLY_NO,      /* not tried: the transfer runs at the 0 ms timer */
  XFER__EARLY_WAITING, /* started, and waits for IN on a socket the
                          multi watches for IN already: tracking its
                          pollset tells the application nothing */
  XFER__EARLY_TRACKED, /* the same, and its tracked pollset is that
                          already (the socket's use was handed to it):
                          nothing to track */
  XFER__EARLY_DEFERRED /* started, and goes on at the 0 ms timer (its
                          pollset not tracked yet) */
};

/* The protocol work of a transfer. Every function runs on the multi's
 * thread, from inside a multi call, with the transfer's `now` current. */
struct xfer__handler {
  const char *name;
  /* Makes progress without blocking. `due` has bit (1u << id) set for
   * each expiry (enum xfer__expire_id) that fired since the last run.
   * Returns XFER__STEP_AGAIN while not done, XFER__STEP_DONE, or
   * XFER__STEP_FAILED with the code in x->failure. */
  enum xfer__step (*run)(xfer *x, unsigned due);
  /* Adds the sockets the transfer waits on now to ps. */
  void (*pollset)(xfer *x, struct xfer__pollset *ps);
  /* Releases what run() set up, closing sockets through the event
   * tracking's socket_done. Called once when the transfer finishes or is
   * removed. May be NULL. */
  void (*cleanup)(xfer *x);
  /* The multi has just tracked the pollset of a run that is not done.
   * May be NULL. */
  void (*assessed)(xfer *x);
  /* Inside xfer_multi_add(), on its clock reading: the first run, when
   * it needs nothing the application would hear of (no socket callback,
   * never done or failed here). May be NULL. */
  enum xfer__early (*start_early)(xfer *x);
};

#define XFER__DETAIL_MAX 256
#define XFER__METHOD_MAX 32
#define XFER__DEFAULT_CONNECT_TIMEOUT_MS 300000L

/* What the application set: survives runs, changed only while not added. */
struct xfer__opts {
  /* Bumped by every setter (and reset): what is built from the options
   * once for many runs (the pool key, the request head) remembers the
   * generation it was built for. Never 0; 0 marks "built for no run". */
  uint64_t gen;
  /* What every run reads, first and together (struct xfer__http). */
  struct xfer__url url;          /* parsed by xfer_set_url() */
  char *body;                    /* copy of the body buffer */
  size_t body_len;
  bool has_body;
  int ip_version;                /* 0, 4, 6 */
  xfer_read_cb read_cb;
  void *read_userp;
  int64_t read_size;             /* -1: unknown, chunked */
  xfer_write_cb write_cb;
  void *write_userp;
  xfer_header_cb header_cb;
  void *header_userp;
  long connect_timeout_ms;
  long timeout_ms;
  long low_speed_bytes;
  long low_speed_period_ms;
  size_t max_header_bytes;
  int max_redirects;
  /* Read once per change of options. */
  char method[XFER__METHOD_MAX]; /* "" means GET */
  struct xfer__buf headers;      /* "Name: value\r\n" lines */
  char local_text[48];           /* "" when not bound */
  struct xfer__addr local;
};

enum xfer__http_state {
  XFER__HTTP_INIT,    /* pick a pooled connection or resolve */
  XFER__HTTP_WAIT,    /* the destination is at its limit: queued */
  XFER__HTTP_RESOLVE,
  XFER__HTTP_CONNECT, /* h->conn is connecting */
  XFER__HTTP_EXCHANGE /* the exchange runs on h->conn */
};

struct xfer__conn;

/* One run of the HTTP sequence (and its redirect hops). */
struct xfer__http {
  /* What a request uses, first and together: a request touches few cache
   * lines of its transfer (docs/internals/performance.md). */
  enum xfer__http_state state;
  bool send_body;                /* for this hop */
  bool idempotent;               /* method is (RFC 9110 9.2.2) */
  bool head_request;             /* method is HEAD: the response has no body */
  bool reused;
  bool wait_expired;             /* attached_wait passed while waiting */
  bool started;                  /* the first run happened */
  bool fresh_only;               /* a retry: do not take from the pool */
  bool early;          /* running inside xfer_multi_add() (start_early) */
  bool early_deferred; /* ... and stopped there, to go on at the timer */
  bool saw_dead;                 /* the pool had a dead one for us */
  bool receiving;                /* the exchange waits for the response
                                    (the low-speed limit applies) */
  bool got_byte;                 /* a response byte arrived */
  int early_err;       /* a send failed there (errno): said at the timer */
  int retries;
  int died_errno;                /* XFER__STEP_RETRY: why (0: EOF) */
  bool stray_bytes;              /* XFER__STEP_RETRY: the reused connection
                                    held bytes that are no response */
  int redirects;
  const struct xfer__url *url;   /* &opts.url, or &hop */
  uint64_t method_gen;           /* opts.gen the method fields are of; 0: a
                                    hop's */
  size_t key_len;
  uint64_t key_hash;
  uint64_t key_gen;              /* opts.gen the key is of; 0: a hop's */
  struct xfer__conn *conn;       /* connecting, or the exchange's */
  xfer__time reused_idle;        /* how long it had been idle when taken */
  const struct xfer__exchange_type *exchange;
  uint64_t bytes_sent;
  uint64_t bytes_received;
  uint64_t low_speed_mark;       /* bytes_received at the period start */
  uint64_t conn_id;
  struct xfer__waiter wait;      /* place in the pool's FIFO, or slot */
  struct xfer__list wait_node;   /* in multi->waiting while waiting */
  struct xfer__h1 h1;            /* the HTTP/1.1 exchange's state */
  struct xfer__http1_resp resp;

  /* Read once per change of options, a hop, or a lookup. */
  struct xfer__url hop;          /* the URL of a redirect hop */
  char method[XFER__METHOD_MAX]; /* for this hop (303 turns POST into GET) */
  char key[XFER__POOL_KEY_MAX];  /* pool key of this hop */
  struct xfer__resolve_req resolve;
};

struct xfer {
  uint32_t magic;
  enum xfer__state state;
  xfer_multi *multi; /* the multi it is added to, or NULL */
  struct xfer__loop *loop; /* &multi->loop, for the modules below the multi
                              (loop.h); NULL with multi */
  const struct xfer__handler *handler;
  void *handler_ctx;

  xfer__time now;      /* this transfer's clock: never goes back */
  xfer__time added_at; /* timeline origin */
  xfer__time stamps[XFER__PHASE_COUNT]; /* XFER__TIME_NEVER: not reached */
  unsigned stamped; /* stamps[0 .. stamped) are set, the rest NEVER */

  unsigned due;             /* expiries fired, handed to the next run */
  xfer_code pending_error;  /* fail with this at the next run */
  xfer_code failure;        /* what XFER__STEP_FAILED carries */
  xfer_code result;         /* of its last run: set when it finishes or
                               is stopped (multi.c), in one place */
  struct xfer__expiry expiry;
  struct xfer__mev_tracker ev; /* last pollset */

  struct xfer__list multi_node; /* in multi->xfers */
  struct xfer__list dirty_node; /* in multi->dirty: run it in this call */
  struct xfer__list msg_node;   /* in multi->msgs while its message waits */
  xfer_msg msg;

  void *app_private;
  char detail[XFER__DETAIL_MAX];

  struct xfer__opts opts;
  struct xfer__http http;
};

/* Is x a live transfer handle? */
bool xfer__valid(const xfer *x);

/* Frees what a run left (connection, buffers), for xfer_free(). */
void xfer__http_free(xfer *x);

/* Is the response in hand (its head complete) a redirect that x goes on
 * to follow (within the limit, with a Location, and a body it can send
 * again)? Then its body is not the user's. Makes the header strings when
 * they are not made yet. */
bool xfer__http_redirect_followed(xfer *x);

/* Installs the handler that does the transfer's work (tests install their
 * own). Refused while the transfer is added. */
xfer_code xfer__set_handler(xfer *x, const struct xfer__handler *h, void *ctx);

/* Prepares x for a new run in a multi, at `now`. */
void xfer__start(xfer *x, xfer__time now);

/* Advances the transfer's clock to at least t; it never goes back. */
static inline void xfer__now_at_least(xfer *x, xfer__time t) {
  if (t > x->now)
    x->now = t;
}

/* Transfer `from` acts for x (dispatching data to it): x's clock is
 * advanced to at least from's, and x is marked dirty so the loop runs it
 * in this call. Both must be in the same multi. */
void xfer__now_update(xfer *x, const xfer *from);

/* Records the end of phase p at the transfer's `now`. Earlier phases not
 * reached take the previous phase's value; later ones recorded by an
 * earlier attempt (a retry, a redirect hop) are cleared, to be recorded
 * again: the timeline stays ordered. */
void xfer__stamp(xfer *x, enum xfer__phase p);

/* Sets expiry `id` to fire `delay_ns` after the transfer's `now`. */
void xfer__expire_in(xfer *x, enum xfer__expire_id id, xfer__time delay_ns);
void xfer__expire_clear(xfer *x, enum xfer__expire_id id);

/* The HTTP/1.1 handler: what every transfer does unless a test installs
 * its own (lib/transfer.c). */
extern const struct xfer__handler xfer__http_handler;

/* The body this hop sends, as the framing check and the request head
 * count it (xfer__http1_req): -1 none, -2 streamed of unknown length
 * (chunked), else its length. */
int64_t xfer__body_length(const xfer *x);

/* Records the detail text of an error (printf format) and returns `code`,
 * so that a refusal is one statement: return xfer__fail(x, code, ...). */
xfer_code xfer__fail(xfer *x, xfer_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4))) XFER__COLD;

/* The same for a step: records the detail and the code (x->failure) and
 * returns XFER__STEP_FAILED: return xfer__step_fail(x, code, ...). */
enum xfer__step xfer__step_fail(xfer *x, xfer_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4))) XFER__COLD;

/* A step failed with `code`, its detail already in x->detail. */
static inline enum xfer__step xfer__step_failed(xfer *x, xfer_code code) {
  x->failure = code;
  return XFER__STEP_FAILED;
}

#endif /* XFER_TRANSFER_H */
