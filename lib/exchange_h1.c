/*
 * The HTTP/1.1 exchange (see exchange.h): the request head and body go
 * out through the connection's filters, the response comes in through
 * them into llhttp (http1.c), one request at a time on a connection.
 *
 *   start: the head is built           -> SEND
 *   SEND:  head, then the body (a buffer in the same call, or the read
 *          callback's frames)          -> RECV
 *   RECV:  bytes into the parser       -> DONE at the response's end
 *
 * A reused connection that fails before any response byte says RETRY: the
 * transfer decides whether the request goes again on a fresh one.
 *
 * A server may answer before it has read the whole request, most often to
 * refuse it (413, 401, a redirect), and then stop reading or close. While
 * a send waits (or fails) the exchange also reads, so that the transfer
 * gets that answer rather than a wait until its timeout or the server's
 * reset (RFC 9112, 9.5; curl does the same): see read_while_sending().
 */
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>

#include "conn.h"
#include "exchange.h"
#include "loop.h"
#include "transfer.h"

/* Do two URLs name one origin? (HTTP alone today: the host as given,
 * case-insensitive, and the port.) */
static bool same_origin(const struct xfer__url *a, const struct xfer__url *b) {
  return a->port == b->port && strcasecmp(a->host, b->host) == 0;
}

/* The head of the transfer's own request (no redirect hop) is built once
 * per change of options and kept in `out`: the method, target, headers
 * and body length it depends on cannot change while the transfer is
 * added. A hop's head, or one with a streamed body (whose frames follow
 * it in `out`), is built for its run. */
static bool head_ready(xfer *x) {
  struct xfer__http *h = &x->http;
  struct xfer__h1 *e = &h->h1;
  bool own = h->url == &x->opts.url && h->redirects == 0 && !x->opts.read_cb;
  struct xfer__http1_req req;

  if (own && e->head_gen == x->opts.gen) {
    e->out.len = e->head_len;
    return true;
  }
  req.method = h->method;
  req.authority = h->url->authority;
  req.target = h->url->target;
  req.headers = &x->opts.headers;
  req.body_len = xfer__body_length(x);
  req.body_dropped = h->redirects > 0 && !h->send_body;
  req.other_origin = h->redirects > 0 && !same_origin(h->url, &x->opts.url);
  e->asked_close = xfer__http1_asks_close(&x->opts.headers);
  e->head_gen = 0;
  if (!xfer__http1_build_head(&e->out, &req))
    return false;
  e->head_len = e->out.len;
  if (own)
    e->head_gen = x->opts.gen;
  return true;
}

static const struct xfer__http1_events resp_events, resp_events_body;

/* The response parser is set up with the request: the server may answer
 * before the request is all sent (read_while_sending()). */
static enum xfer__step h1_start(xfer *x) {
  struct xfer__http *h = &x->http;
  struct xfer__h1 *e = &h->h1;

  e->out_sent = 0;
  e->body_sent = 0;
  e->body_streamed = 0;
  e->cut = false;
  e->send_err = 0;
  e->body_done = !h->send_body || x->opts.has_body;
  if (!head_ready(x))
    return xfer__step_fail(x, XFER_E_OUT_OF_MEMORY, "out of memory");
  xfer__http1_resp_init(&h->resp,
                        x->opts.header_cb ? &resp_events : &resp_events_body, x,
                        h->head_request, x->opts.max_header_bytes);
  h->conn->proto = &xfer__h1_exchange;
  e->state = XFER__H1_SEND;
  return XFER__STEP_NEXT;
}

/* Refills the output from the read callback: raw bytes for a known size,
 * chunked framing ("<hex>\r\n" data "\r\n", the last "0\r\n\r\n")
 * otherwise. The data is read straight into place after room for the
 * frame header. */
#define BODY_CHUNK 16384
#define FRAME_ROOM 20

static enum xfer__step refill_from_callback(xfer *x) {
  struct xfer__h1 *e = &x->http.h1;
  bool chunked = x->opts.read_size < 0;
  size_t at = chunked ? FRAME_ROOM : 0, ask = BODY_CHUNK;
  uint64_t left = 0;
  char frame[FRAME_ROOM];
  long n;
  int hl;

  /* The announced length is the contract (a byte past it would start the
   * next request on this connection: request smuggling). The callback is
   * asked for at most one byte more than is left, so one that has more
   * says so, and that byte is never written. */
  if (!chunked) {
    left = (uint64_t)x->opts.read_size - e->body_streamed;
    if (left < BODY_CHUNK)
      ask = (size_t)left + 1;
  }
  if (!xfer__buf_reserve(&e->out, FRAME_ROOM + BODY_CHUNK + 2))
    return xfer__step_fail(x, XFER_E_OUT_OF_MEMORY, "out of memory");
  xfer__loop_callback_enter(x->loop);
  n = x->opts.read_cb(e->out.data + at, ask, x->opts.read_userp);
  xfer__loop_callback_leave(x->loop);
  if (n < 0)
    return xfer__step_fail(x, XFER_E_READ_CALLBACK,
                           "the read callback aborted the transfer");
  if ((size_t)n > ask)
    return xfer__step_fail(x, XFER_E_READ_CALLBACK,
                           "the read callback returned %ld bytes when asked "
                           "for at most %zu",
                           n, ask);
  if (!chunked && (uint64_t)n > left)
    return xfer__step_fail(x, XFER_E_BODY_LENGTH,
                           "the read callback gave more than the %lld bytes "
                           "announced; nothing past them was sent, and the "
                           "connection is closed",
                           (long long)x->opts.read_size);
  if (!chunked && n == 0 && left > 0)
    return xfer__step_fail(x, XFER_E_BODY_LENGTH,
                           "the read callback ended the body after %llu of "
                           "the %lld bytes announced; the connection is "
                           "closed",
                           (unsigned long long)e->body_streamed,
                           (long long)x->opts.read_size);
  e->body_streamed += (uint64_t)n;
  if (n == 0)
    e->body_done = true;
  e->out_sent = at;
  e->out.len = at + (size_t)n;
  if (chunked) {
    hl = snprintf(frame, sizeof(frame), "%lx\r\n", n);
    e->out_sent = at - (size_t)hl;
    memcpy(e->out.data + e->out_sent, frame, (size_t)hl);
    memcpy(e->out.data + e->out.len, "\r\n", 2);
    e->out.len += 2;
  }
  return XFER__STEP_NEXT;
}

/* The connection failed (err: an errno value, 0 for EOF): RETRY when it
 * was a reused one that died before any response byte (the transfer
 * decides), else FAILED with `code`. */
static enum xfer__step conn_failed(xfer *x, int err, xfer_code code,
                                   const char *doing) {
  struct xfer__http *h = &x->http;

  if (h->reused && !h->got_byte) {
    h->died_errno = err;
    return XFER__STEP_RETRY;
  }
  return xfer__step_fail(x, code, "%s failed: %s", doing,
                         err ? strerror(err) : "the server closed the "
                                               "connection");
}

static inline enum xfer__step start_receiving(xfer *x);
static enum xfer__step read_while_sending(xfer *x, int send_err);

/* A send failed because the server ended the connection: what it sent
 * before may be an answer (read_while_sending()). */
static bool peer_gone(int err) {
  return err == EPIPE || err == ECONNRESET || err == ECONNABORTED ||
         err == ETIMEDOUT;
}

/* Sends a run makes before it looks for an answer and gives the others
 * their turn (as step_recv() reads at most 16 times): a body that never
 * makes a send wait (a server that reads as fast as the callback gives)
 * would else go out whole in one run, the multi's other transfers and
 * this one's deadlines waiting, and a server's early answer (a 413 it
 * sends while it drains the body) unread until the end. */
#define SENDS_PER_RUN 16

/* Out of line: inlined into h1_run(), its frame (the iovecs, the saved
 * registers) was set up for every receive too. */
__attribute__((noinline)) static enum xfer__step step_send(xfer *x) {
  struct xfer__http *h = &x->http;
  struct xfer__h1 *e = &h->h1;
  struct iovec iov[2];
  int iovcnt, err = 0, sends = 0;
  ssize_t n;

  if (e->send_err)
    return read_while_sending(x, e->send_err);
  for (;;) {
    iovcnt = 0;
    if (e->out_sent < e->out.len) {
      iov[iovcnt].iov_base = e->out.data + e->out_sent;
      iov[iovcnt++].iov_len = e->out.len - e->out_sent;
    }
    /* The body buffer goes out in the same call as the head. */
    if (h->send_body && x->opts.has_body && e->body_sent < x->opts.body_len) {
      iov[iovcnt].iov_base = x->opts.body + e->body_sent;
      iov[iovcnt++].iov_len = x->opts.body_len - e->body_sent;
    }
    if (iovcnt == 0) {
      if (!e->body_done) {
        enum xfer__step st = refill_from_callback(x);
        if (st != XFER__STEP_NEXT)
          return st;
        continue;
      }
      break;
    }
    if (h->early_err) { /* the send failed inside xfer_multi_add() */
      err = h->early_err;
      h->early_err = 0;
      return conn_failed(x, err, XFER_E_SEND, "sending the request");
    }
    /* Enough for this run: an answer already there is read (and decides,
     * as after a send that would block); else the wait for OUT, ready at
     * once, brings the rest at the next turn of the loop. Inside
     * xfer_multi_add() the start sends a whole request at most. */
    if (++sends > SENDS_PER_RUN && !h->early)
      return read_while_sending(x, 0);
    n = xfer__conn_send(h->conn, iov, iovcnt, &err);
    if (n < 0 && h->early) {
      /* Inside xfer_multi_add(): the rest (waiting for OUT; the failure
       * and its retry) at the 0 ms timer. */
      if (err != EAGAIN)
        h->early_err = err;
      h->early_deferred = true;
      return XFER__STEP_AGAIN;
    }
    if (n < 0 && (err == EAGAIN || peer_gone(err)))
      return read_while_sending(x, err == EAGAIN ? 0 : err);
    if (n < 0) /* our own side failed (ENOBUFS, ENOMEM): no answer to wait
                  for */
      return conn_failed(x, err, XFER_E_SEND, "sending the request");
    h->bytes_sent += (uint64_t)n;
    if (e->out_sent < e->out.len) {
      size_t head_left = e->out.len - e->out_sent;
      size_t used = (size_t)n < head_left ? (size_t)n : head_left;
      e->out_sent += used;
      n -= (ssize_t)used;
    }
    e->body_sent += (size_t)n;
  }
  return start_receiving(x);
}

static int resp_on_header(void *owner, const char *name, size_t name_len,
                          const char *value, size_t value_len) {
  xfer *x = owner;
  int rc;

  xfer__loop_callback_enter(x->loop);
  rc = x->opts.header_cb(name, name_len, value, value_len,
                         x->opts.header_userp);
  xfer__loop_callback_leave(x->loop);
  return rc;
}

static int resp_on_body(void *owner, const char *data, size_t len) {
  xfer *x = owner;
  size_t taken;

  /* A redirect's body (a server's little HTML page) is not the user's
   * when the transfer goes on to its Location, as in curl. */
  if (!x->opts.write_cb || xfer__http_redirect_followed(x))
    return 0;
  xfer__loop_callback_enter(x->loop);
  taken = x->opts.write_cb(data, len, x->opts.write_userp);
  xfer__loop_callback_leave(x->loop);
  return taken != len;
}

/* Without a header callback the parser makes no header strings (they
 * are made when a getter asks). */
static const struct xfer__http1_events resp_events = {resp_on_header,
                                                      resp_on_body};
static const struct xfer__http1_events resp_events_body = {NULL,
                                                           resp_on_body};

static enum xfer__step step_recv(xfer *x);

/* The request is out (or stops, the server having answered first): the
 * response is what the exchange waits for, and the low-speed limit applies
 * from now. Inlined into step_send() as well as the rarer
 * read_while_sending(): out of line it costs every request a call. */
static inline __attribute__((always_inline)) enum xfer__step
start_receiving(xfer *x) {
  struct xfer__http *h = &x->http;

  h->h1.state = XFER__H1_RECV;
  h->receiving = true;
  h->low_speed_mark = h->bytes_received;
  if (x->opts.low_speed_bytes > 0)
    xfer__expire_in(x, XFER__EXPIRE_LOW_SPEED,
                    xfer__ms_to_ns(x->opts.low_speed_period_ms));
  /* The answer is seldom in the socket yet: a read now would most often
   * only say EAGAIN (a syscall a request), and the socket's IN event
   * brings us back (bytes already there raise it too). Bytes a filter
   * holds already would bring no event. */
  if (xfer__conn_data_pending(h->conn)) {
    if (h->early) { /* reading may end the transfer: not inside add */
      h->early_deferred = true;
      return XFER__STEP_AGAIN;
    }
    return step_recv(x);
  }
  return XFER__STEP_AGAIN;
}

static enum xfer__step recv_failed(xfer *x, xfer_code rc) {
  snprintf(x->detail, sizeof(x->detail), "%s", x->http.resp.detail);
  return xfer__step_failed(x, rc);
}

/* The answer's bytes failed the parser. On a reused connection, bytes
 * that fail at their first byte (not even the start of "HTTP/"), with no
 * interim response before them, are no answer to this request: they were
 * left there after the last response (by a server that sent more than it
 * announced, once that response's end was read), so the connection is at
 * fault, not the request: RETRY, as for one that died idle (the transfer
 * decides whether the request may go again, and says why not). A status
 * line that fails later is the server's answer, malformed: no retry. */
__attribute__((noinline)) static enum xfer__step answer_failed(xfer *x,
                                                              xfer_code rc) {
  struct xfer__http *h = &x->http;

  if (rc == XFER_E_BAD_STATUS_LINE && h->reused &&
      xfer__http1_resp_failed_at_start(&h->resp)) {
    h->stray_bytes = true;
    h->died_errno = 0;
    return XFER__STEP_RETRY;
  }
  return recv_failed(x, rc);
}

/* The response is complete. Bytes received already beyond its end are
 * the server's mistake (a body longer than its Content-Length), found
 * whether they came in the same read from the socket or a filter holds
 * them (as TLS holds a record's rest): they are gathered and the parser
 * says which error. A connection whose stack cannot hand them over, or
 * ends or fails meanwhile, is not kept. */
static inline __attribute__((always_inline)) enum xfer__step
check_after_end(xfer *x) {
  struct xfer__http *h = &x->http;
  char *buf = x->loop->recv_buf;
  size_t got = 0;
  xfer_code rc;
  int err = 0;
  ssize_t n;

  if (!xfer__conn_data_pending(h->conn))
    return XFER__STEP_DONE; /* the common case: nothing held */
  for (int tries = 0; tries < 64 && got < XFER__RECV_BUF_SIZE &&
                      xfer__conn_data_pending(h->conn);
       tries++) {
    n = xfer__conn_recv(h->conn, buf + got, XFER__RECV_BUF_SIZE - got, &err);
    if (n < 0 && err == EAGAIN)
      continue; /* a filter that wants another event: ask again */
    if (n <= 0) {
      h->resp.keep_alive = false;
      break;
    }
    got += (size_t)n;
  }
  if (xfer__conn_data_pending(h->conn))
    h->resp.keep_alive = false;
  if (got) {
    h->bytes_received += got;
    rc = xfer__http1_resp_feed(&h->resp, buf, got);
    if (rc)
      return recv_failed(x, rc);
  }
  return XFER__STEP_DONE;
}

/* n bytes of the answer arrived: the first of them stamps the timeline,
 * all go to the parser. Its verdict: XFER_OK while more is expected or
 * once the answer is complete (resp.complete). */
static inline __attribute__((always_inline)) xfer_code
answer_bytes(xfer *x, const char *buf, size_t n) {
  struct xfer__http *h = &x->http;

  if (!h->got_byte) {
    h->got_byte = true;
    xfer__stamp(x, XFER__PHASE_STARTTRANSFER);
  }
  h->bytes_received += (uint64_t)n;
  return xfer__http1_resp_feed(&h->resp, buf, n);
}

/* What one read of the answer gave (n bytes, 0 at the peer's end, or
 * -1 with err): the step it ends with, or NEXT to read on. */
static inline __attribute__((always_inline)) enum xfer__step
answer_read(xfer *x, const char *buf, ssize_t n, int err) {
  struct xfer__http *h = &x->http;
  xfer_code rc;

  if (n < 0)
    return conn_failed(x, err, XFER_E_RECV, "receiving the response");
  if (n == 0) {
    rc = xfer__http1_resp_eof(&h->resp);
    return rc ? recv_failed(x, rc) : XFER__STEP_DONE;
  }
  if ((rc = answer_bytes(x, buf, (size_t)n)))
    return answer_failed(x, rc);
  if (h->resp.complete)
    return check_after_end(x);
  return XFER__STEP_NEXT;
}

static enum xfer__step step_recv(xfer *x) {
  struct xfer__http *h = &x->http;
  char *buf = x->loop->recv_buf;
  enum xfer__step st;
  int err = 0;
  ssize_t n;

  /* A few reads per run, so one busy transfer cannot starve the others. */
  for (int reads = 0; reads < 16; reads++) {
    n = xfer__conn_recv(h->conn, buf, XFER__RECV_BUF_SIZE, &err);
    if (n < 0 && err == EAGAIN)
      return XFER__STEP_AGAIN;
    if (n == 0 && h->reused && !h->got_byte) /* died idle: RETRY */
      return conn_failed(x, 0, XFER_E_RECV, "receiving the response");
    if ((st = answer_read(x, buf, n, err)) != XFER__STEP_NEXT)
      return st;
  }
  /* More may be waiting. Come back through the timer (0 ms) rather than
   * the dirty list, so a fast download cannot keep one call running. */
  xfer__expire_in(x, XFER__EXPIRE_RUN_NOW, 0);
  return XFER__STEP_AGAIN;
}

/*
 * The request is not all out: its send would block (send_err 0) or failed
 * (an errno). Has the server answered already? What it sent is read, and
 * decides:
 *   - nothing: the send's wait stands; after a failed send, the server's
 *     end or reset (or the timeout) fails it with the send's error, and
 *     until then only IN is waited for (a filter may need more bytes to
 *     hand over an answer, as TLS a record's rest);
 *   - an interim answer (100 Continue) or part of a head: the request goes
 *     on;
 *   - a final head of 300 or more: the rest of the request is not sent
 *     (the server refuses it, and may have stopped reading); the answer
 *     is received to its end and the connection closed after it;
 *   - a 2xx head: the request goes on while the answer comes (a server
 *     may answer as it reads); if the answer ends first, the request ends
 *     there too, and the connection is closed.
 * The server's close or reset after an answer is the answer's end, not
 * the send's failure.
 */
static enum xfer__step read_while_sending(xfer *x, int send_err) {
  struct xfer__http *h = &x->http;
  struct xfer__h1 *e = &h->h1;
  char *buf = x->loop->recv_buf;
  enum xfer__step st;
  int err = 0;
  ssize_t n;

  e->send_err = send_err;
  for (int reads = 0; reads < 16; reads++) {
    n = xfer__conn_recv(h->conn, buf, XFER__RECV_BUF_SIZE, &err);
    if (n < 0 && err == EAGAIN)
      return XFER__STEP_AGAIN;
    if (n <= 0 && !h->got_byte) /* no answer: the send's failure */
      return conn_failed(x, send_err ? send_err : n < 0 ? err : 0,
                         XFER_E_SEND, "sending the request");
    e->cut = true; /* from here, the request never ends on this connection */
    if ((st = answer_read(x, buf, n, err)) != XFER__STEP_NEXT)
      return st;
    if (h->resp.headers_done && h->resp.status >= 300)
      return start_receiving(x);
    e->cut = false; /* an interim answer, a head in part, or a 2xx: the
                       request goes on (unless its send failed) */
  }
  xfer__expire_in(x, XFER__EXPIRE_RUN_NOW, 0); /* more may wait: as in
                                                  step_recv() */
  return XFER__STEP_AGAIN;
}

static enum xfer__step h1_run(xfer *x) {
  return x->http.h1.state == XFER__H1_SEND ? step_send(x) : step_recv(x);
}

/* A request waiting to go on also waits for the server's answer (see
 * read_while_sending()); one whose send failed waits for that alone. */
static void h1_pollset(xfer *x, struct xfer__pollset *ps) {
  const struct xfer__h1 *e = &x->http.h1;

  xfer__conn_pollset(x->http.conn, ps,
                     e->state == XFER__H1_SEND && !e->send_err
                         ? XFER_POLL_INOUT
                         : XFER_POLL_IN);
}

/* The server keeps the connection only if its response says so, our
 * request did not say "Connection: close" (RFC 9112, 9.6: then it closes
 * after answering, whether it says so or not), and our request went out
 * whole (the rest of one cut short would be read as the next request). */
static bool h1_keep_alive(const xfer *x) {
  return x->http.resp.keep_alive && !x->http.h1.asked_close &&
         !x->http.h1.cut;
}

/* HTTP/1.1 has no goodbye of its own and no state of an idle connection
 * beyond what its filters know: shutdown and alive are the filters'. */
const struct xfer__exchange_type xfer__h1_exchange = {
    .name = "http/1.1",
    .start = h1_start,
    .run = h1_run,
    .pollset = h1_pollset,
    .keep_alive = h1_keep_alive,
};
