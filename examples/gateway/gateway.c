/*
 * gateway: a small HTTP/1.1 reverse proxy, the model of a threaded server
 * embedding libxfer.
 *
 * W worker threads; each has its own epoll loop, its own listening socket
 * on the same port (SO_REUSEPORT: the kernel spreads clients over them)
 * and its own multi; all multis share one connection pool to the
 * upstream. A client request (parsed with llhttp) becomes a transfer to
 * UPSTREAM + path with the same method, headers and body; the response
 * streams back as it arrives (chunked), with the upstream's status and
 * reason phrase. As a proxy must (RFC 9110 section 7.6): hop-by-hop
 * headers, the Proxy-Authenticate/-Authorization pair and every header the
 * Connection header names stay on their side, both ways, and Via says the
 * message passed here; responses that have no body (to HEAD; 1xx, 204,
 * 304) get none. SIGINT/SIGTERM stop it gracefully: no new clients,
 * in-flight requests finish, the multis drain their shutdowns.
 *
 *   gateway -l PORT -u http://UPSTREAM-HOST:PORT [-w WORKERS]
 *
 * Build: cc gateway.c /usr/share/llhttp/{api,http,llhttp}.c \
 *          -I/usr/share/include/llhttp $(pkg-config --cflags --libs libxfer)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <xfer/xfer.h>

#define MAX_HEADERS 64
/* What one request may take: its target and header lines together (431
 * past it), and its body, which is held whole before it goes upstream
 * (413 past it). */
#define MAX_HEAD_BYTES (64 * 1024)
#define MAX_BODY_BYTES (64 * 1024 * 1024)
/* Bytes a client may send ahead while its request is upstream; then the
 * gateway stops reading it until the answer is done. */
#define MAX_AHEAD_BYTES (1024 * 1024)
/* After its last answer a client that is not kept is closed the way RFC
 * 9112 9.6 asks: the gateway's side is shut, and what the client still
 * sends (the rest of a refused body, a pipelined request) is read and
 * thrown away until it closes too, for at most this long. A close with
 * those bytes unread would reset the connection, and a client still
 * sending would see the reset, not the answer. */
#define LINGER_MS 5000

static char *upstream; /* "http://host:port[/prefix]", no trailing slash */
static int listen_port;
static xfer_pool *pool;
static int stop_fd; /* eventfd: written once by the signal thread */

struct buf {
  char *data;
  size_t len, cap;
};

static bool buf_add(struct buf *b, const void *data, size_t len) {
  if (b->len + len > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 4096;
    char *p;
    while (cap < b->len + len)
      cap *= 2;
    if (!(p = realloc(b->data, cap)))
      return false;
    b->data = p;
    b->cap = cap;
  }
  memcpy(b->data + b->len, data, len);
  b->len += len;
  return true;
}

struct worker;

/* What an epoll entry is: every epoll data pointer points at one. */
enum kind { KIND_LISTEN, KIND_STOP, KIND_CLIENT, KIND_UPSTREAM };
struct handle {
  enum kind kind;
  int fd;               /* -1: an upstream socket REMOVEd (freed soon) */
  struct handle *next;  /* upstream: in the worker's list to free */
};

/* A client connection: one request at a time (pipelined bytes wait). */
struct client {
  struct handle h; /* first: epoll's pointer */
  struct worker *w;
  int fd;
  llhttp_t parser;
  struct buf in;          /* received, not parsed yet */
  struct buf out;         /* to send */
  size_t out_sent;
  struct buf url, field, value, body;
  char *names[MAX_HEADERS], *values[MAX_HEADERS];
  int nheaders;
  bool in_value, keep_alive, busy, head_sent, closing;
  bool no_body; /* the response may not have one (HEAD; 1xx, 204, 304) */
  bool head_request;
  bool http10;    /* an HTTP/1.0 client: no chunked framing, close after */
  bool reading;   /* EPOLLIN is wanted (off while too much waits ahead) */
  bool cut;       /* its answer was cut short: closed with a reset */
  bool writing;   /* EPOLLOUT is wanted (an answer waits to be sent) */
  bool peer_done; /* the client shut its side: nothing more to read */
  bool lingering; /* answered and shut: read and dropped until closed */
  long long linger_until_ms;
  struct client *linger_prev, *linger_next; /* in the worker's FIFO */
  size_t head_bytes; /* the request's target and header lines so far */
  int refuse_status; /* a limit the request broke: the answer's status */
  xfer *x;
  struct client *prev, *next; /* in the worker's list */
};

struct worker {
  pthread_t thread;
  int ep;
  struct handle listener, stop;
  long long timer_at_ms; /* the timer callback's deadline; -1: none */
  xfer_multi *m;
  struct client *clients; /* every open client connection */
  /* Lingering clients, oldest first: they all linger LINGER_MS, so the
   * head's deadline is the next. */
  struct client *linger_head, *linger_tail;
  /* Upstream handles REMOVEd during a batch of events: a later event of
   * the same batch may still point at one, so they are freed after it. */
  struct handle *removed;
  int in_flight;
  int spare_fd; /* given up to accept and close a client past the fd
                   limit (else the listener stays readable: a busy loop) */
  long long accept_again_ms; /* accepting paused until then; -1: not */
  bool stopping;
  long long drain_until_ms; /* stopping: answers still sending, until then */
};

static void client_close(struct client *c);
static void client_finish(struct client *c);
static long long now_ms(void);

static void update_events(struct client *c) {
  struct epoll_event ev = {.events = (c->reading ? EPOLLIN : 0) |
                                     (c->writing ? EPOLLOUT : 0),
                           .data.ptr = c};
  epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void want_out(struct client *c, bool on) {
  if (c->writing == on)
    return;
  c->writing = on;
  update_events(c);
}

static void want_in(struct client *c, bool on) {
  if (c->reading == on)
    return;
  c->reading = on;
  update_events(c);
}

/* Sends what is queued; false when the client is gone. */
static bool flush_out(struct client *c) {
  while (c->out_sent < c->out.len) {
    ssize_t n = send(c->fd, c->out.data + c->out_sent,
                     c->out.len - c->out_sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      want_out(c, true);
      return true;
    }
    if (n <= 0)
      return false;
    c->out_sent += (size_t)n;
  }
  c->out.len = c->out_sent = 0;
  want_out(c, false);
  return true;
}

static void buf_puts(struct buf *b, const char *s) {
  buf_add(b, s, strlen(s));
}

/* "name: value\r\n", whatever their length. */
static void put_header(struct buf *b, const char *name, const char *value) {
  buf_puts(b, name);
  buf_add(b, ": ", 2);
  buf_puts(b, value);
  buf_add(b, "\r\n", 2);
}

static const char *reason_of(int status) {
  switch (status) {
  case 405: return "Method Not Allowed";
  case 413: return "Content Too Large";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 502: return "Bad Gateway";
  case 504: return "Gateway Timeout";
  default: return "Bad Request";
  }
}

/* The gateway's own answer; to a HEAD, the head alone (its length says
 * what a GET would get), so the client's next response stays in step. */
static void send_error(struct client *c, int status, const char *why) {
  char head[256];
  int n = snprintf(head, sizeof(head),
                   "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                   "Content-Length: %zu\r\n%s%s\r\n",
                   status, reason_of(status), strlen(why) + 1,
                   status == 405 ? "Allow: GET, HEAD, POST, PUT, DELETE, "
                                   "OPTIONS, PATCH\r\n"
                                 : "",
                   c->keep_alive ? "" : "Connection: close\r\n");
  buf_add(&c->out, head, (size_t)n);
  if (c->head_request)
    return;
  buf_puts(&c->out, why);
  buf_add(&c->out, "\n", 1);
}

/* What this hop adds to the Via header, both ways (RFC 9110 7.6.3). */
#define VIA "1.1 xfer-gateway"

/* Headers that belong to one connection, not to the message: never
 * forwarded (RFC 9110 7.6.1), plus the framing the gateway redoes. */
static bool hop_by_hop(const char *name) {
  static const char *const hop[] = {
      "connection",         "keep-alive",          "proxy-connection",
      "transfer-encoding",  "te",                  "trailer",
      "upgrade",            "host",                "content-length",
      "proxy-authenticate", "proxy-authorization"};
  for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
    if (!strcasecmp(name, hop[i]))
      return true;
  return false;
}

/* Does a Connection header value (a comma-separated list) name `name`? */
static bool connection_names(const char *list, const char *name) {
  size_t n = strlen(name);

  while (*list) {
    size_t len;
    while (*list == ' ' || *list == '\t' || *list == ',')
      list++;
    len = strcspn(list, ", \t");
    if (len == n && !strncasecmp(list, name, n))
      return true;
    list += len;
  }
  return false;
}

/* Forwarded, unless hop-by-hop or named by the message's Connection
 * headers (`connection`: their values joined by commas, or NULL). */
static bool forwarded(const char *name, const char *connection) {
  return !hop_by_hop(name) &&
         !(connection && connection_names(connection, name));
}

/* Appends a Connection header's value to the joined list. */
static void join_connection(struct buf *list, const char *value) {
  if (list->len)
    buf_add(list, ",", 1);
  buf_puts(list, value);
}

/* The upstream response's head, once: status, reason and headers, then
 * the framing the gateway chooses (chunked, or none without a body). */
static void send_head(struct client *c) {
  char line[64];
  struct buf connection = {0};
  const char *name, *value;
  int status = xfer_get_status(c->x);
  size_t count = xfer_get_header_count(c->x);

  c->head_sent = true;
  c->no_body = c->head_request || status < 200 || status == 204 ||
               status == 304;
  buf_add(&c->out, line,
          (size_t)snprintf(line, sizeof(line), "HTTP/1.1 %d ",
                           status ? status : 502));
  buf_puts(&c->out, status ? xfer_get_reason(c->x) : "Bad Gateway");
  buf_add(&c->out, "\r\n", 2);
  for (size_t i = 0; i < count; i++)
    if (xfer_get_header_at(c->x, i, &name, &value) == XFER_OK &&
        !strcasecmp(name, "connection"))
      join_connection(&connection, value);
  buf_add(&connection, "", 1);
  for (size_t i = 0; i < count; i++) {
    if (xfer_get_header_at(c->x, i, &name, &value) != XFER_OK)
      continue;
    /* A bodiless response keeps the length it describes (the body a GET
     * would get, or the cached one): it frames nothing here. */
    if (forwarded(name, connection.data) ||
        (c->no_body && status != 204 && !strcasecmp(name, "content-length")))
      put_header(&c->out, name, value);
  }
  free(connection.data);
  put_header(&c->out, "Via", VIA);
  /* An HTTP/1.0 client knows no chunked framing: its body ends with the
   * connection (keep_alive is off for it). */
  if (!c->no_body && !c->http10)
    buf_puts(&c->out, "Transfer-Encoding: chunked\r\n");
  if (!c->keep_alive)
    buf_puts(&c->out, "Connection: close\r\n");
  buf_add(&c->out, "\r\n", 2);
}

/* The response body streams back as it arrives. */
static size_t on_upstream_body(const char *data, size_t len, void *userp) {
  struct client *c = userp;
  char size[32];

  if (!c->head_sent)
    send_head(c);
  if (c->http10) {
    buf_add(&c->out, data, len);
  } else {
    buf_add(&c->out, size,
            (size_t)snprintf(size, sizeof(size), "%zx\r\n", len));
    buf_add(&c->out, data, len);
    buf_add(&c->out, "\r\n", 2);
  }
  return flush_out(c) ? len : 0; /* a client gone aborts the transfer */
}

static void reset_request(struct client *c) {
  for (int i = 0; i < c->nheaders; i++) {
    free(c->names[i]);
    free(c->values[i]);
  }
  c->nheaders = 0;
  c->url.len = c->field.len = c->value.len = c->body.len = 0;
  c->in_value = false;
  c->head_bytes = 0;
  c->refuse_status = 0;
  c->head_request = false; /* a bad request after a HEAD gets a body */
}

static bool feed(struct client *c);

/* The upstream transfer ended (from the worker's loop). */
static void request_done(struct client *c, const xfer_msg *msg) {
  struct worker *w = c->w;

  w->in_flight--;
  xfer_multi_remove(w->m, c->x);
  if (msg->result != XFER_OK && !c->head_sent) {
    send_error(c, msg->result == XFER_E_TIMEOUT ? 504 : 502,
               xfer_get_error_detail(c->x));
  } else if (msg->result != XFER_OK) {
    c->keep_alive = false; /* cut short: the client sees no last chunk, */
    c->cut = true;         /* or a reset */
  } else {
    if (!c->head_sent)
      send_head(c);
    if (!c->no_body && !c->http10)
      buf_add(&c->out, "0\r\n\r\n", 5);
  }
  xfer_free(c->x);
  c->x = NULL;
  c->busy = false;
  reset_request(c);
  want_in(c, true); /* what waited ahead is read again */
  if (!flush_out(c) || !c->keep_alive) {
    c->closing = true;
    if (c->out.len == 0)
      client_finish(c);
    return;
  }
  llhttp_resume(&c->parser);
  feed(c); /* a pipelined request may be waiting */
}

/* --- the request parser ------------------------------------------------------ */

static struct client *of(llhttp_t *p) { return p->data; }

/* The request's target and header lines count against MAX_HEAD_BYTES. */
static bool head_fits(struct client *c, size_t len) {
  c->head_bytes += len;
  if (c->head_bytes <= MAX_HEAD_BYTES)
    return true;
  c->refuse_status = 431;
  return false;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  struct client *c = of(p);
  return head_fits(c, len) && buf_add(&c->url, at, len) ? 0 : -1;
}

static int end_header(struct client *c) {
  if (!c->in_value)
    return 0;
  if (c->nheaders == MAX_HEADERS) {
    c->refuse_status = 431;
    return -1;
  }
  c->names[c->nheaders] = strndup(c->field.data, c->field.len);
  c->values[c->nheaders++] = strndup(c->value.data, c->value.len);
  c->field.len = c->value.len = 0;
  c->in_value = false;
  return 0;
}

static int on_field(llhttp_t *p, const char *at, size_t len) {
  struct client *c = of(p);
  if (end_header(c) || !head_fits(c, len))
    return -1;
  return buf_add(&c->field, at, len) ? 0 : -1;
}

static int on_value(llhttp_t *p, const char *at, size_t len) {
  struct client *c = of(p);
  c->in_value = true;
  return head_fits(c, len) && buf_add(&c->value, at, len) ? 0 : -1;
}

static int on_headers_complete(llhttp_t *p) { return end_header(of(p)); }

static int on_body(llhttp_t *p, const char *at, size_t len) {
  struct client *c = of(p);
  if (c->body.len + len > MAX_BODY_BYTES) {
    c->refuse_status = 413;
    return -1;
  }
  return buf_add(&c->body, at, len) ? 0 : -1;
}

/* After an answer of the gateway's own: parsing goes on only on a
 * connection that stays (llhttp would refuse what follows one that does
 * not, or an upgrade, and a second answer would go out). */
static int answered(const struct client *c) {
  return c->keep_alive ? 0 : HPE_PAUSED;
}

/* The upstream path of a request target: origin-form ("/path?query") as
 * it is; absolute-form ("http://host/path", which a server must take,
 * RFC 9112 3.2.2) by its path, which a "/" begins when it has none
 * (*slash). NULL for anything else ("*", an authority): appended to the
 * upstream URL, "81" would make "http://up:80" + "81" a request to port
 * 8081. */
static const char *upstream_path(const char *target, bool *slash) {
  const char *rest = NULL;

  *slash = false;
  if (target[0] == '/')
    return target;
  if (!strncasecmp(target, "http://", 7))
    rest = target + 7;
  else if (!strncasecmp(target, "https://", 8))
    rest = target + 8;
  if (!rest)
    return NULL;
  rest += strcspn(rest, "/?#");
  *slash = *rest != '/';
  return rest;
}

/* A whole request: it becomes a transfer to the upstream. */
static int on_message_complete(llhttp_t *p) {
  struct client *c = of(p);
  struct worker *w = c->w;
  char *url;

  const char *path;
  bool slash;

  /* An HTTP/1.0 client's body ends with the connection; an upgrade is
   * not made (the Upgrade header stays here), and the connection closes
   * after the answer, as llhttp takes what follows for another protocol. */
  c->http10 = p->http_major == 0 || (p->http_major == 1 && p->http_minor == 0);
  c->keep_alive = llhttp_should_keep_alive(p) && !w->stopping && !c->http10 &&
                  !p->upgrade;
  c->head_request = p->method == HTTP_HEAD;
  c->head_sent = false;
  if (p->method == HTTP_CONNECT) { /* a tunnel: what follows is not HTTP */
    c->keep_alive = false;
    send_error(c, 405, "this gateway makes no tunnels (CONNECT)");
    reset_request(c);
    return HPE_PAUSED; /* nothing more is read: closed once answered */
  }
  buf_add(&c->url, "", 1);
  path = upstream_path(c->url.data, &slash);
  if (!path) {
    send_error(c, 400, "the request target is neither a path nor an "
                       "absolute http URL");
    reset_request(c);
    return answered(c); /* go on with the next, if it stays */
  }
  if (asprintf(&url, "%s%s%s", upstream, slash ? "/" : "", path) < 0)
    return -1;
  c->x = xfer_new();
  if (!c->x || xfer_set_url(c->x, url) != XFER_OK) {
    send_error(c, c->x ? 400 : 500,
               c->x ? xfer_get_error_detail(c->x) : "no memory");
    xfer_free(c->x);
    c->x = NULL;
    free(url);
    reset_request(c);
    return answered(c); /* go on with the next, if it stays */
  }
  free(url);
  xfer_set_method(c->x, llhttp_method_name((llhttp_method_t)p->method));
  {
    struct buf connection = {0};
    for (int i = 0; i < c->nheaders; i++)
      if (!strcasecmp(c->names[i], "connection"))
        join_connection(&connection, c->values[i]);
    buf_add(&connection, "", 1);
    for (int i = 0; i < c->nheaders; i++)
      if (forwarded(c->names[i], connection.data))
        xfer_add_header(c->x, c->names[i], c->values[i]);
    free(connection.data);
  }
  xfer_add_header(c->x, "Via", VIA);
  /* A request framed with a length (0 included) or chunked has a body,
   * which the upstream must see framed too. */
  if (c->body.len || (p->flags & (F_CONTENT_LENGTH | F_CHUNKED)))
    xfer_set_body(c->x, c->body.len ? c->body.data : "", c->body.len);
  xfer_set_write_cb(c->x, on_upstream_body, c);
  xfer_set_private(c->x, c);
  xfer_set_timeout_ms(c->x, 30000);
  if (xfer_multi_add(w->m, c->x) != XFER_M_OK) {
    send_error(c, 502, "the gateway could not start the upstream request");
    xfer_free(c->x);
    c->x = NULL;
    reset_request(c);
    return answered(c); /* go on with the next, if it stays */
  }
  c->busy = true;
  w->in_flight++;
  return HPE_PAUSED; /* one request at a time: resumed when it is done */
}

static llhttp_settings_t parser_settings;
static pthread_once_t parser_settings_once = PTHREAD_ONCE_INIT;

static void settings_init(void) {
  llhttp_settings_init(&parser_settings);
  parser_settings.on_url = on_url;
  parser_settings.on_header_field = on_field;
  parser_settings.on_header_value = on_value;
  parser_settings.on_headers_complete = on_headers_complete;
  parser_settings.on_body = on_body;
  parser_settings.on_message_complete = on_message_complete;
}

/* The same for every client of every worker, made once. */
static const llhttp_settings_t *settings(void) {
  pthread_once(&parser_settings_once, settings_init);
  return &parser_settings;
}

/* Parses what the client sent, up to the next whole request. false: the
 * client is closed (and maybe freed): the caller leaves it alone. */
static bool feed(struct client *c) {
  llhttp_errno_t rc;
  size_t used;

  if (c->busy || c->closing || !c->in.len)
    return true;
  rc = llhttp_execute(&c->parser, c->in.data, c->in.len);
  if (rc == HPE_OK || rc == HPE_PAUSED) {
    if (rc == HPE_OK) {
      c->in.len = 0;
    } else { /* keep the bytes after the request */
      used = (size_t)(llhttp_get_error_pos(&c->parser) - c->in.data);
      memmove(c->in.data, c->in.data + used, c->in.len - used);
      c->in.len -= used;
    }
    /* The gateway's own answers (a target it could not make a URL of, an
     * upstream request it could not start) go out now, before any
     * upstream's; after the last, a request that did not keep the
     * connection alive closes it. */
    if (c->out.len && (!flush_out(c) || (!c->busy && !c->keep_alive))) {
      c->closing = true;
      if (c->out.len == 0) {
        client_finish(c);
        return false;
      }
    }
    return true;
  }
  c->keep_alive = false;
  send_error(c, c->refuse_status ? c->refuse_status : 400,
             c->refuse_status == 431   ? "the request's head is too large"
             : c->refuse_status == 413 ? "the request's body is too large"
                                       : llhttp_get_error_reason(&c->parser));
  c->closing = true;
  if (flush_out(c) && c->out.len)
    return true; /* closed once it is sent */
  client_finish(c);
  return false;
}

/* --- clients ------------------------------------------------------------------ */

static void linger_unlink(struct client *c) {
  struct worker *w = c->w;

  if (c->linger_prev)
    c->linger_prev->linger_next = c->linger_next;
  else
    w->linger_head = c->linger_next;
  if (c->linger_next)
    c->linger_next->linger_prev = c->linger_prev;
  else
    w->linger_tail = c->linger_prev;
  c->lingering = false;
}

/* Its last answer is sent whole, and it is not kept (see LINGER_MS). A
 * client that shut its side already has nothing more to send. */
static void client_finish(struct client *c) {
  struct worker *w = c->w;

  if (c->cut || c->out.len || c->peer_done || shutdown(c->fd, SHUT_WR)) {
    client_close(c);
    return;
  }
  c->lingering = true;
  c->linger_until_ms = now_ms() + LINGER_MS;
  c->linger_prev = w->linger_tail;
  c->linger_next = NULL;
  if (w->linger_tail)
    w->linger_tail->linger_next = c;
  else
    w->linger_head = c;
  w->linger_tail = c;
  want_in(c, true);
}

/* A lingering client is readable: what it sent is dropped, and its end
 * of file (or an error) closes it. */
static void linger_read(struct client *c) {
  char buf[16384];
  ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

  if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)))
    return;
  client_close(c);
}

static void client_close(struct client *c) {
  if (c->lingering)
    linger_unlink(c);
  if (c->x) { /* the upstream transfer goes with it */
    xfer_multi_remove(c->w->m, c->x);
    xfer_free(c->x);
    c->w->in_flight--;
  }
  /* An answer cut short ends with a reset, not an end of file: a client
   * whose body ends with the connection (HTTP/1.0) would take a FIN for
   * a whole body. */
  if (c->cut || c->out.len)
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER,
               &(struct linger){.l_onoff = 1, .l_linger = 0},
               sizeof(struct linger));
  epoll_ctl(c->w->ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  if (c->prev)
    c->prev->next = c->next;
  else
    c->w->clients = c->next;
  if (c->next)
    c->next->prev = c->prev;
  reset_request(c);
  free(c->in.data);
  free(c->out.data);
  free(c->url.data);
  free(c->field.data);
  free(c->value.data);
  free(c->body.data);
  free(c);
}

static void client_event(struct client *c, uint32_t events) {
  char buf[16384];
  ssize_t n;

  if (c->lingering) {
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
      linger_read(c);
    return;
  }
  if (events & EPOLLOUT) {
    if (!flush_out(c)) {
      client_close(c);
      return;
    }
    if (c->closing && !c->out.len) {
      client_finish(c);
      return;
    }
  }
  if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
    return;
  if (!c->reading && !(events & (EPOLLHUP | EPOLLERR)))
    return;
  n = recv(c->fd, buf, sizeof(buf), 0);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (n == 0 && !c->busy && c->out.len &&
      !(events & (EPOLLHUP | EPOLLERR))) {
    /* Its end of the connection, with its answer still going out: sent
     * to the end first (a reset now would throw away what the kernel
     * holds of it). */
    c->closing = true;
    c->peer_done = true;
    want_in(c, false);
    return;
  }
  if (n <= 0) { /* the client went away (in-flight work goes too) */
    client_close(c);
    return;
  }
  if (c->closing)
    return; /* answered for good: what it sends more is not read */
  if (!buf_add(&c->in, buf, (size_t)n)) {
    client_close(c);
    return;
  }
  if (!feed(c))
    return;
  /* A client that sends on while its request is upstream waits: the
   * gateway holds at most MAX_AHEAD_BYTES of it. */
  if (c->busy && c->in.len >= MAX_AHEAD_BYTES)
    want_in(c, false);
}

/* Past the fd limit a pending client cannot be accepted, and the
 * listener stays readable: the spare fd makes room to accept it and close
 * it at once (it sees its connection closed), as libuv and libev do. */
static void refuse_one_client(struct worker *w) {
  int fd;

  close(w->spare_fd);
  fd = accept4(w->listener.fd, NULL, NULL, SOCK_CLOEXEC);
  if (fd >= 0)
    close(fd);
  w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* No spare fd either (the workers share one fd table: another took the
 * freed one): the listener leaves the loop for 100 ms, not to spin. */
static void pause_accepting(struct worker *w) {
  epoll_ctl(w->ep, EPOLL_CTL_DEL, w->listener.fd, NULL);
  w->accept_again_ms = now_ms() + 100;
}

static void resume_accepting(struct worker *w) {
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->listener};

  w->accept_again_ms = -1;
  if (w->stopping)
    return;
  if (w->spare_fd < 0)
    w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  epoll_ctl(w->ep, EPOLL_CTL_ADD, w->listener.fd, &ev);
}

static void accept_clients(struct worker *w) {
  for (;;) {
    int fd = accept4(w->listener.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    struct client *c;
    struct epoll_event ev = {.events = EPOLLIN};
    if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
      continue;
    if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
      if (w->spare_fd >= 0)
        refuse_one_client(w);
      if (w->spare_fd < 0) {
        pause_accepting(w);
        return;
      }
      continue;
    }
    if (fd < 0)
      return;
    c = calloc(1, sizeof(*c));
    if (!c) {
      close(fd);
      continue;
    }
    /* Responses go out in pieces as they stream: no Nagle delay. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    c->h.kind = KIND_CLIENT;
    c->h.fd = fd;
    c->w = w;
    c->fd = fd;
    c->reading = true;
    llhttp_init(&c->parser, HTTP_REQUEST, settings());
    c->parser.data = c;
    ev.data.ptr = c;
    epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev);
    c->next = w->clients;
    if (w->clients)
      w->clients->prev = c;
    w->clients = c;
  }
}

/* --- the multi in the worker's loop ------------------------------------------ */

static int on_socket(xfer_multi *m, int fd, int what, void *userp,
                     void *socketp) {
  struct worker *w = userp;
  struct handle *u = socketp;
  struct epoll_event ev;

  if (what == XFER_POLL_REMOVE) {
    epoll_ctl(w->ep, EPOLL_CTL_DEL, fd, NULL);
    u->fd = -1;
    u->next = w->removed;
    w->removed = u;
    return 0;
  }
  ev.events = ((what & XFER_POLL_IN) ? EPOLLIN : 0) |
              ((what & XFER_POLL_OUT) ? EPOLLOUT : 0);
  if (!u) {
    if (!(u = malloc(sizeof(*u))))
      return -1;
    u->kind = KIND_UPSTREAM;
    u->fd = fd;
    ev.data.ptr = u;
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev)) {
      free(u); /* refused: no REMOVE will come for it */
      return -1;
    }
    xfer_multi_assign(m, fd, u); /* remembered once epoll knows it */
    return 0;
  }
  ev.data.ptr = u;
  return epoll_ctl(w->ep, EPOLL_CTL_MOD, fd, &ev) ? -1 : 0;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The timer callback, kept as a deadline: the loop fires it when due,
 * however busy the sockets are (an upstream's timeout must not wait for
 * a quiet moment). */
static int on_timer(xfer_multi *m, long ms, void *userp) {
  (void)m;
  ((struct worker *)userp)->timer_at_ms = ms < 0 ? -1 : now_ms() + ms;
  return 0;
}

static void reap(struct worker *w) {
  const xfer_msg *msg;
  while ((msg = xfer_multi_info_read(w->m, NULL)))
    request_done(xfer_get_private(msg->x), msg);
}

/* How long a stop waits for clients to take what is left of their
 * answers (a client that reads nothing cannot hold the stop up). */
#define DRAIN_MS 10000

static void stop_accepting(struct worker *w) {
  w->stopping = true;
  w->drain_until_ms = now_ms() + DRAIN_MS;
  epoll_ctl(w->ep, EPOLL_CTL_DEL, w->stop.fd, NULL);
  epoll_ctl(w->ep, EPOLL_CTL_DEL, w->listener.fd, NULL);
  close(w->listener.fd);
}

static void free_removed(struct worker *w) {
  while (w->removed) {
    struct handle *u = w->removed;
    w->removed = u->next;
    free(u);
  }
}

/* A stop goes on while an answer is still on its way to its client. */
static bool answers_sending(const struct worker *w) {
  for (const struct client *c = w->clients; c; c = c->next)
    if (c->out.len)
      return true;
  return false;
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  struct epoll_event evs[256];

  /* Stopping, it goes on while answers are sent and their clients
   * linger (each answer then closes its connection, and a client still
   * sending must get it whole), until the drain's end. */
  while (!w->stopping || w->in_flight > 0 ||
         ((answers_sending(w) || w->linger_head) &&
          now_ms() < w->drain_until_ms)) {
    int n, wait_ms = -1;

    if (w->stopping && (answers_sending(w) || w->linger_head)) {
      /* the drain's end */
      long long left = w->drain_until_ms - now_ms();
      if (left > 0)
        wait_ms = (int)left; /* at most DRAIN_MS */
    }
    if (w->linger_head) { /* the oldest lingering client's deadline */
      long long left = w->linger_head->linger_until_ms - now_ms();
      if (left <= 0) {
        client_close(w->linger_head);
        continue;
      }
      if (wait_ms < 0 || left < wait_ms)
        wait_ms = (int)left; /* at most LINGER_MS */
    }
    if (w->accept_again_ms >= 0) {
      long long left = w->accept_again_ms - now_ms();
      if (left <= 0) {
        resume_accepting(w);
        continue;
      }
      if (wait_ms < 0 || left < wait_ms)
        wait_ms = (int)left;
    }
    if (w->timer_at_ms >= 0) {
      long long left = w->timer_at_ms - now_ms();
      if (left <= 0) {
        w->timer_at_ms = -1; /* fired: the timer callback arms the next */
        xfer_multi_socket_action(w->m, XFER_SOCKET_TIMEOUT, 0, NULL);
        reap(w); /* what the timeout action finished */
        free_removed(w);
        continue;
      }
      if (left > 3600 * 1000) /* a deadline days away overflows an int */
        left = 3600 * 1000;
      if (wait_ms < 0 || left < wait_ms)
        wait_ms = (int)left;
    }
    n = epoll_wait(w->ep, evs, 256, wait_ms);
    if (n < 0 && errno == EINTR)
      continue;
    for (int i = 0; i < n; i++) {
      struct handle *h = evs[i].data.ptr;
      uint32_t e = evs[i].events;
      switch (h->kind) {
      case KIND_LISTEN:
        accept_clients(w);
        break;
      case KIND_STOP:
        stop_accepting(w);
        break;
      case KIND_CLIENT:
        client_event((struct client *)h, e);
        break;
      case KIND_UPSTREAM:
        if (h->fd < 0)
          break; /* REMOVEd earlier in this batch */
        xfer_multi_socket_action(
            w->m, h->fd,
            ((e & EPOLLIN) ? XFER_CSELECT_IN : 0) |
                ((e & EPOLLOUT) ? XFER_CSELECT_OUT : 0) |
                ((e & (EPOLLERR | EPOLLHUP)) ? XFER_CSELECT_ERR : 0),
            NULL);
        break;
      }
    }
    reap(w);
    free_removed(w);
  }
  while (w->clients) /* idle keep-alive clients, or past the drain */
    client_close(w->clients);
  return NULL;
}

static bool worker_init(struct worker *w) {
  int one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)listen_port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct epoll_event ev = {.events = EPOLLIN};

  w->ep = epoll_create1(EPOLL_CLOEXEC);
  w->timer_at_ms = -1;
  w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  w->accept_again_ms = -1;
  w->listener.kind = KIND_LISTEN;
  w->listener.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                          0);
  setsockopt(w->listener.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  setsockopt(w->listener.fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (w->ep < 0 ||
      bind(w->listener.fd, (struct sockaddr *)&a, sizeof(a)) ||
      listen(w->listener.fd, 1024)) {
    fprintf(stderr, "gateway: cannot listen on 127.0.0.1:%d: %s\n",
            listen_port, strerror(errno));
    return false;
  }
  ev.data.ptr = &w->listener;
  epoll_ctl(w->ep, EPOLL_CTL_ADD, w->listener.fd, &ev);
  w->stop.kind = KIND_STOP;
  w->stop.fd = stop_fd;
  ev.data.ptr = &w->stop;
  epoll_ctl(w->ep, EPOLL_CTL_ADD, stop_fd, &ev);
  w->m = xfer_multi_new(pool);
  if (!w->m)
    return false;
  xfer_multi_set_socket_cb(w->m, on_socket, w);
  xfer_multi_set_timer_cb(w->m, on_timer, w);
  return true;
}

/* A second SIGINT/SIGTERM while the stop drains: out at once. */
static void *second_signal(void *arg) {
  int sig;

  sigwait(arg, &sig);
  fprintf(stderr, "gateway: second signal, stopping at once\n");
  _exit(1);
}

int main(int argc, char **argv) {
  int workers = 2;
  struct worker *ws;
  sigset_t sigs;
  pthread_t second;
  int sig, total;
  uint64_t one = 1;
  char detail[256] = "";

  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-w") && i + 1 < argc)
      workers = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-l") && i + 1 < argc)
      listen_port = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-u") && i + 1 < argc)
      upstream = argv[++i];
    else {
      fprintf(stderr, "usage: gateway -l PORT -u http://HOST:PORT [-w N]\n");
      return 2;
    }
  }
  if (!upstream || listen_port <= 0 || listen_port > 65535 || workers < 1) {
    fprintf(stderr, "usage: gateway -l PORT -u http://HOST:PORT [-w N]\n");
    return 2;
  }
  /* Request targets start with '/': one from the upstream URL would make
   * "//path". */
  upstream = strdup(upstream);
  for (size_t n = strlen(upstream); n > 0 && upstream[n - 1] == '/'; n--)
    upstream[n - 1] = '\0';
  { /* the upstream must be a URL libxfer takes */
    xfer *probe = xfer_new();
    if (xfer_set_url(probe, upstream) != XFER_OK) {
      snprintf(detail, sizeof(detail), "%s", xfer_get_error_detail(probe));
      xfer_free(probe);
      fprintf(stderr, "gateway: bad upstream '%s': %s\n", upstream, detail);
      return 2;
    }
    xfer_free(probe);
  }
  /* Signals are taken by this thread alone, with sigwait. */
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  signal(SIGPIPE, SIG_IGN);
  stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  pool = xfer_pool_new(NULL);
  ws = calloc((size_t)workers, sizeof(*ws));
  if (stop_fd < 0 || !pool || !ws) {
    fprintf(stderr, "gateway: out of resources at the start\n");
    return 1;
  }
  for (int i = 0; i < workers; i++)
    if (!worker_init(&ws[i]))
      return 1;
  total = workers;
  for (int i = 0; i < workers; i++) {
    if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i])) {
      fprintf(stderr, "gateway: cannot start worker %d\n", i);
      if (write(stop_fd, &one, sizeof(one)) < 0)
        return 1;
      workers = i; /* the ones started stop, and are joined below */
      break;
    }
  }
  if (workers < total) { /* stopped at once: the started ones finish */
    for (int i = 0; i < workers; i++)
      pthread_join(ws[i].thread, NULL);
    return 1; /* the process ends: nothing else to give back */
  }
  printf("gateway: 127.0.0.1:%d -> %s, %d workers\n", listen_port, upstream,
         workers);
  fflush(stdout);
  sigwait(&sigs, &sig);
  /* Graceful: every worker stops accepting and finishes what it has; a
   * second signal stops the gateway at once. */
  if (write(stop_fd, &one, sizeof(one)) < 0)
    return 1;
  if (pthread_create(&second, NULL, second_signal, &sigs) == 0)
    pthread_detach(second);
  for (int i = 0; i < workers; i++) {
    xfer_pool_stats ps;
    pthread_join(ws[i].thread, NULL);
    xfer_multi_destroy(ws[i].m); /* drains its shutdowns */
    free_removed(&ws[i]);        /* the handles its REMOVEs left */
    close(ws[i].ep);
    if (ws[i].spare_fd >= 0)
      close(ws[i].spare_fd);
    if (i == workers - 1) {
      xfer_pool_get_stats(pool, &ps);
      printf("gateway: stopped; upstream connections opened %llu, "
             "reused %llu\n",
             (unsigned long long)ps.opened_total,
             (unsigned long long)ps.reused_total);
    }
  }
  xfer_pool_destroy(pool);
  free(ws);
  free(upstream);
  return 0;
}
