/* examples/gateway: the threaded reverse proxy, in front of our test
 * server and in front of nginx, driven by xfer-load; upstream connections
 * stay within the concurrency, nothing fails, SIGTERM stops it cleanly. */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testhelp.h"
#include "testserver.h"

static char out[65536], err[8192], gw_out[4096];
static pid_t gw_pid = -1;
static bool gw_stopping; /* SIGTERM sent: a second one stops it at once */
static int gw_port, gw_pipe = -1;
static struct th_nginx nginx;

static void gateway_end(void) {
  if (gw_pid > 0) {
    kill(gw_pid, SIGKILL);
    waitpid(gw_pid, NULL, 0);
    gw_pid = -1;
  }
  if (gw_pipe >= 0)
    close(gw_pipe);
  gw_pipe = -1;
  th_nginx_stop(&nginx);
}

/* Reads the gateway's output until it has a line (or ends): its first
 * line says it listens, or why it cannot. Bounded: 60 s. */
static size_t read_line(char *buf, size_t cap) {
  struct pollfd pfd = {.fd = gw_pipe, .events = POLLIN};
  size_t len = 0;
  ssize_t n;

  while (len + 1 < cap && !memchr(buf, '\n', len)) {
    cr_assert_gt(poll(&pfd, 1, 60000), 0, "the gateway said nothing");
    if ((n = read(gw_pipe, buf + len, cap - 1 - len)) <= 0)
      break;
    len += (size_t)n;
    buf[len] = '\0';
  }
  buf[len] = '\0';
  return len;
}

/* Starts the gateway in front of `upstream` on a probed port, and waits
 * for its "listening" line (another program may take the port between
 * the probe and the bind: then it says so and exits, and we try again). */
static void start_gateway(const char *upstream) {
  for (int attempt = 0; attempt < 5; attempt++) {
    char port[16], line[512];
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    gw_port = th_free_port();
    snprintf(port, sizeof(port), "%d", gw_port);
    gw_pid = fork();
    cr_assert_geq(gw_pid, 0);
    if (gw_pid == 0) {
      dup2(fds[1], 1);
      dup2(fds[1], 2);
      close(fds[0]);
      execl(GATEWAY_BIN, GATEWAY_BIN, "-w", "2", "-l", port, "-u", upstream,
            (char *)NULL);
      _exit(127);
    }
    close(fds[1]);
    gw_pipe = fds[0];
    read_line(line, sizeof(line));
    if (strstr(line, "gateway: 127.0.0.1:"))
      return;
    waitpid(gw_pid, NULL, 0);
    close(gw_pipe);
    gw_pid = gw_pipe = -1;
  }
  cr_assert_fail("the gateway did not start");
}

/* SIGTERM (unless the test sent it): it stops accepting, finishes, and
 * exits 0 with its summary. */
static void stop_gateway(void) {
  size_t len = 0;
  ssize_t n;
  int status;

  if (!gw_stopping)
    kill(gw_pid, SIGTERM);
  gw_stopping = false;
  for (;;) { /* to EOF: it has exited (30 s at most between outputs) */
    struct pollfd pfd = {.fd = gw_pipe, .events = POLLIN};
    if (poll(&pfd, 1, 30000) <= 0) {
      kill(gw_pid, SIGKILL);
      cr_assert_fail("the gateway did not exit after SIGTERM");
    }
    if (len + 1 >= sizeof(gw_out) ||
        (n = read(gw_pipe, gw_out + len, sizeof(gw_out) - 1 - len)) <= 0)
      break;
    len += (size_t)n;
  }
  gw_out[len] = '\0';
  cr_assert_eq(waitpid(gw_pid, &status, 0), gw_pid);
  gw_pid = -1;
  close(gw_pipe);
  gw_pipe = -1;
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "the gateway's exit: %d; its output: %s", status, gw_out);
  cr_assert(strstr(gw_out, "gateway: stopped"), "%s", gw_out);
}

/* Our test server, and the gateway in front of it: the server's URL and
 * `suffix` as the upstream. */
static struct ts_server *gateway_to_test_server(const char *suffix) {
  struct ts_server *web = ts_start(NULL);
  char upstream[64];

  cr_assert_not_null(web);
  snprintf(upstream, sizeof(upstream), "http://127.0.0.1:%d%s", ts_port(web),
           suffix);
  start_gateway(upstream);
  return web;
}

/* curl as the client, verbose: its stdout in out, its trace in err. */
static int curl(const char *const *args) {
  const char *argv[64] = {"/usr/bin/curl", "-sS", "-v", "--max-time", "30"};
  int n = 5;

  for (; args[n - 5]; n++) {
    cr_assert_lt(n, 63, "too many arguments for curl()");
    argv[n] = args[n - 5];
  }
  argv[n] = NULL;
  /* Never through a proxy the machine may name (curl honours http_proxy
   * even for 127.0.0.1): the traffic stays on loopback. For every URL of
   * the command line, --next ones too. */
  setenv("no_proxy", "*", 1);
  setenv("NO_PROXY", "*", 1);
  return th_spawn(argv, out, sizeof(out), err, sizeof(err));
}

/* A URL of the gateway. */
static const char *gw(const char *path) {
  static char urls[8][1100];
  static int next;
  char *u = urls[next++ % 8];

  snprintf(u, sizeof(urls[0]), "http://127.0.0.1:%d%s", gw_port, path);
  return u;
}

static int load(const char *path, const char *n) {
  char url[128];

  snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", gw_port, path);
  return th_spawn((const char *[]){XFER_LOAD_BIN, "-t", "2", "-c", "8", "-n",
                                   n, url, NULL},
                  out, sizeof(out), err, sizeof(err));
}

TH_TEST(gateway, in_front_of_the_test_server) {
  struct ts_server *web = ts_start(NULL);
  struct ts_stats st;
  char upstream[64];

  snprintf(upstream, sizeof(upstream), "http://127.0.0.1:%d", ts_port(web));
  start_gateway(upstream);
  cr_assert_eq(load("/chunked/5000/700", "600"), 0, "%s%s", out, err);
  cr_assert(strstr(out, "requests:     600 in"), "%s", out);
  cr_assert(strstr(out, "status:       200: 600"), "%s", out);
  cr_assert(strstr(out, "errors:       0"), "%s", out);
  { /* A POST's method, headers and body go through; the echo comes
     * back. */
    xfer_multi *m = xfer_multi_new(NULL);
    struct th_sink sink = {0};
    xfer *x = xfer_new();
    xfer_set_url(x, th_url(gw_port, "/echo"));
    xfer_set_method(x, "POST");
    xfer_add_header(x, "X-Trace", "abc");
    xfer_set_body(x, "ping", 4);
    xfer_set_write_cb(x, th_sink_cb, &sink);
    xfer_multi_add(m, x);
    th_run(m, 5000);
    cr_assert_eq(th_result(m, x), XFER_OK, "%s", xfer_get_error_detail(x));
    cr_assert_eq(xfer_get_status(x), 200);
    cr_assert_geq(sink.len, 16);
    cr_assert(!memcmp(sink.data, "POST /echo\n", 11), "%.*s",
              (int)sink.len, sink.data);
    cr_assert(memmem(sink.data, sink.len, "X-Trace: abc\n", 13), "%.*s",
              (int)sink.len, sink.data);
    cr_assert(!memcmp(sink.data + sink.len - 4, "ping", 4), "%.*s",
              (int)sink.len, sink.data);
    xfer_multi_destroy(m);
    xfer_free(x);
    th_sink_free(&sink);
  }
  { /* Graceful stop: a request in flight when SIGTERM comes finishes. */
    char url[128];
    pid_t slow;
    int status;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/delay/300/bytes/10",
             gw_port);
    slow = fork();
    cr_assert_geq(slow, 0);
    if (slow == 0) {
      int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 1);
      dup2(devnull, 2);
      execl(XFER_LOAD_BIN, XFER_LOAD_BIN, "-n", "1", "-c", "1", url,
            (char *)NULL);
      _exit(127);
    }
    /* Until the gateway forwarded it (the server's event). */
    cr_assert(ts_wait(web, TS_REQUESTS, 602, 5000));
    stop_gateway();
    cr_assert_eq(waitpid(slow, &status, 0), slow);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the request in flight finished");
  }
  ts_get_stats(web, &st);
  cr_assert_eq(st.requests, 600 + 1 + 1);
  cr_assert_leq(st.accepted, 16, "upstream connections opened (%ld) <= the "
                                 "concurrency, 2 x 8", st.accepted);
  ts_stop(web);
}

TH_TEST(gateway, in_front_of_nginx) {
  char path[192], upstream[64], body[4096];
  FILE *f;

  th_nginx_prepare(&nginx);
  snprintf(path, sizeof(path), "%s/root/page", nginx.prefix);
  ts_fill_pattern(body, 0, sizeof(body));
  f = fopen(path, "w");
  fwrite(body, 1, sizeof(body), f);
  fclose(f);
  th_nginx_start(&nginx);
  snprintf(upstream, sizeof(upstream), "http://127.0.0.1:%d", nginx.port);
  start_gateway(upstream);
  cr_assert_eq(load("/page", "400"), 0, "%s%s", out, err);
  cr_assert(strstr(out, "status:       200: 400"), "%s", out);
  cr_assert(strstr(out, "errors:       0"), "%s", out);
  stop_gateway();
  { /* the gateway's own count of upstream connections */
    unsigned long long opened = 0;
    const char *at = strstr(gw_out, "upstream connections opened ");
    cr_assert_not_null(at, "%s", gw_out);
    sscanf(at, "upstream connections opened %llu", &opened);
    cr_assert_leq(opened, 16, "%s", gw_out);
  }
}

/* Responses without a body (to HEAD; 204, 304) get none, and no chunked
 * framing: curl reuses the connection for a second one and finds no
 * excess bytes. A HEAD keeps the length the GET would have. */
TH_TEST(gateway, bodiless_responses_stay_bodiless) {
  struct ts_server *web = gateway_to_test_server("");
  cr_assert_eq(curl((const char *[]){"-I", gw("/bytes/100"), gw("/bytes/100"),
                                     NULL}),
               0, "%s", err);
  cr_assert(strstr(err, "< Content-Length: 100"), "%s", err);
  cr_assert_null(strstr(err, "Transfer-Encoding"), "%s", err);
  cr_assert(strstr(err, "Re-using existing connection"), "%s", err);
  cr_assert_null(strstr(err, "Excess found"), "%s", err);
  for (int i = 0; i < 2; i++) {
    const char *path = i ? "/status/304" : "/status/204";
    cr_assert_eq(curl((const char *[]){gw(path), gw(path), NULL}), 0, "%s",
                 err);
    cr_assert(strstr(err, i ? "< HTTP/1.1 304" : "< HTTP/1.1 204"), "%s", err);
    cr_assert_null(strstr(err, "Transfer-Encoding"), "%s: %s", path, err);
    cr_assert(strstr(err, "Re-using existing connection"), "%s: %s", path, err);
    cr_assert_null(strstr(err, "Excess found"), "%s: %s", path, err);
    cr_assert_eq(out[0], '\0', "no body: %s", out);
  }
  /* A body after a bodiless response on the same connection: in step. */
  cr_assert_eq(curl((const char *[]){gw("/status/204"), gw("/bytes/3"), NULL}),
               0, "%s", err);
  cr_assert_str_eq(out, "012");
  cr_assert(strstr(err, "Re-using existing connection"), "%s", err);
  cr_assert_null(strstr(err, "Excess found"), "%s", err);
  stop_gateway();
  ts_stop(web);
}

/* The upstream's status line comes through whole: code and reason. */
TH_TEST(gateway, the_reason_phrase_passes_through) {
  struct ts_server *web = gateway_to_test_server("");
  cr_assert_eq(curl((const char *[]){gw("/status/404"), NULL}), 0, "%s", err);
  cr_assert(strstr(err, "< HTTP/1.1 404 Not Found\r\n"), "%s", err);
  cr_assert_eq(curl((const char *[]){gw("/bytes/1"), NULL}), 0, "%s", err);
  cr_assert(strstr(err, "< HTTP/1.1 200 OK\r\n"), "%s", err);
  stop_gateway();
  ts_stop(web);
}

/* An upstream URL given with a trailing '/' makes no "//" path. */
TH_TEST(gateway, an_upstream_with_a_trailing_slash) {
  struct ts_server *web = gateway_to_test_server("/");
  cr_assert_eq(curl((const char *[]){gw("/echo?q=1"), NULL}), 0, "%s", err);
  cr_assert(!strncmp(out, "GET /echo?q=1\n", 14), "%s", out);
  stop_gateway();
  ts_stop(web);
}

/* Hop-by-hop headers, the proxy credentials and what Connection names
 * stay on their side, both ways; Via says the message passed here. */
TH_TEST(gateway, hop_by_hop_headers_stay_and_via_is_added) {
  struct ts_server *web = gateway_to_test_server("");
  /* Towards the upstream: what its echo received. */
  cr_assert_eq(curl((const char *[]){"-H", "Connection: keep-alive, X-Secret",
                                     "-H", "X-Secret: 1", "-H",
                                     "Proxy-Authorization: Basic eDp5",
                                     "-H", "X-Kept: yes", "-H",
                                     "Via: 1.0 client-side", gw("/echo"),
                                     NULL}),
               0, "%s", err);
  cr_assert(strstr(out, "X-Kept: yes\n"), "%s", out);
  cr_assert(strstr(out, "Via: 1.0 client-side\n"), "%s", out);
  cr_assert(strstr(out, "Via: 1.1 xfer-gateway\n"), "%s", out);
  cr_assert_null(strstr(out, "X-Secret"), "%s", out);
  cr_assert_null(strstr(out, "Proxy-Authorization"), "%s", out);
  cr_assert_null(strstr(out, "Connection:"), "%s", out);
  /* Towards the client: what curl received. */
  cr_assert_eq(curl((const char *[]){gw("/headers?Connection=X-Foo,X-Bar&"
                                        "X-Foo=1&X-Bar=2&Proxy-Authenticate="
                                        "Basic&Keep-Alive=timeout=5&X-Kept=1"),
                                     NULL}),
               0, "%s", err);
  cr_assert(strstr(err, "< X-Kept: 1\r\n"), "%s", err);
  cr_assert(strstr(err, "< Via: 1.1 xfer-gateway\r\n"), "%s", err);
  cr_assert_null(strstr(err, "< X-Foo"), "%s", err);
  cr_assert_null(strstr(err, "< X-Bar"), "%s", err);
  cr_assert_null(strstr(err, "< Proxy-Authenticate"), "%s", err);
  cr_assert_null(strstr(err, "< Keep-Alive"), "%s", err);
  stop_gateway();
  ts_stop(web);
}

/* What a careless peer sends still comes out right: a header line longer
 * than any buffer of the gateway, many Connection headers, a POST framed
 * with a length of 0. */
TH_TEST(gateway, long_headers_many_connection_headers_and_empty_posts) {
  struct ts_server *web = gateway_to_test_server("");
  char path[1000], want[901];
  const char *args[56];
  int n = 0;

  memset(want, 'v', 900);
  want[900] = '\0';
  snprintf(path, sizeof(path), "/headers?X-Long=%s", want);
  cr_assert_eq(curl((const char *[]){gw(path), NULL}), 0, "%s", err);
  snprintf(path, sizeof(path), "< X-Long: %s\r\n", want);
  cr_assert(strstr(err, path), "the long line whole: %.300s", err);

  /* Twelve Connection headers, each naming a header of its own. */
  for (int i = 0; i < 12; i++) {
    static char lines[24][32];
    snprintf(lines[2 * i], sizeof(lines[0]), "Connection: X-Hop%d", i);
    snprintf(lines[2 * i + 1], sizeof(lines[0]), "X-Hop%d: 1", i);
    args[n++] = "-H";
    args[n++] = lines[2 * i];
    args[n++] = "-H";
    args[n++] = lines[2 * i + 1];
  }
  args[n++] = gw("/echo");
  args[n] = NULL;
  cr_assert_eq(curl(args), 0, "%s", err);
  cr_assert_null(strstr(out, "X-Hop"), "%s", out);

  cr_assert_eq(curl((const char *[]){"-X", "POST", "-H", "Content-Length: 0",
                                     gw("/echo"), NULL}),
               0, "%s", err);
  cr_assert(strstr(out, "POST /echo\n"), "%s", out);
  cr_assert(strstr(out, "Content-Length: 0\n"), "%s", out);
  stop_gateway();
  ts_stop(web);
}

/* A target the gateway cannot make an upstream URL of gets its own 400 at
 * once (it was queued and never sent: the client waited), and the
 * connection stays usable for the next request. */
TH_TEST(gateway, its_own_400_is_sent) {
  struct ts_server *web = gateway_to_test_server("");

  cr_assert_eq(curl((const char *[]){"-X", "OPTIONS", "--request-target",
                                     "*", gw("/"), "--next", gw("/bytes/3"),
                                     NULL}),
               0, "%s", err);
  cr_assert(strstr(err, "< HTTP/1.1 400 Bad Request"), "%s", err);
  cr_assert(strstr(err, "Re-using existing connection"), "%s", err);
  cr_assert(strstr(out, "012"), "%s", out);
  stop_gateway();
  ts_stop(web);
}

/* A connection to the gateway; every send and read on it ends within
 * 10 s, or fails the test. */
static int gateway_connect(void) {
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)gw_port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct timeval bound = {.tv_sec = 10};
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  cr_assert_geq(fd, 0);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &bound, sizeof(bound));
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof(bound));
  cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  return fd;
}

/* A stop lets every answer reach its client whole: one that the upstream
 * finished but the client had not read yet was cut when the last
 * transfer ended (the worker closed its clients at once). The upstream
 * holds the answer until the test completes its group, then sends it all
 * and closes; the client reads only after that. */
TH_TEST(gateway, a_stop_sends_every_answer_whole) {
  struct ts_server *web = gateway_to_test_server("");
  /* More than the kernel's buffers hold (client and gateway sockets). */
  static char got[65536];
  char tail[7] = {0};
  size_t len = 0;
  const char req[] = "GET /close-silently/gather/2/bytes/40000000 HTTP/1.1\r\n"
                     "Host: gw\r\n\r\n";
  int fd = gateway_connect();
  ssize_t n;

  cr_assert_eq(write(fd, req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
  cr_assert(ts_wait(web, TS_REQUESTS, 1, 10000), "the upstream got it");
  kill(gw_pid, SIGTERM); /* a request in flight: it finishes */
  gw_stopping = true;
  cr_assert(ts_fetch(web, "/gather/2/bytes/40000000"), "the group is done");
  /* Two closes: the test's own /gather connection, and the upstream
   * connection once it sent all 40 MB (the gateway takes them whether
   * its client reads or not): the answer is whole at the gateway, and
   * its client has read none of it yet. */
  cr_assert(ts_wait(web, TS_CLOSED_BY_SERVER, 2, 30000),
            "the upstream sent it all and closed");
  for (;;) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    cr_assert_gt(poll(&pfd, 1, 30000), 0, "the gateway stopped sending");
    n = read(fd, got, sizeof(got));
    if (n <= 0)
      break;
    len += (size_t)n;
    /* The last 7 bytes so far. */
    if (n >= 7) {
      memcpy(tail, got + n - 7, 7);
    } else {
      memmove(tail, tail + n, (size_t)(7 - n));
      memcpy(tail + 7 - n, got, (size_t)n);
    }
  }
  close(fd);
  cr_assert_gt(len, 40000000, "%zu bytes", len);
  cr_assert_eq(memcmp(tail, "\r\n0\r\n\r\n", 7), 0, "the last chunk came");
  stop_gateway();
  ts_stop(web);
}

/* A HEAD the gateway answers itself (the upstream refused) gets the head
 * alone: the next response on the connection stays in step. */
TH_TEST(gateway, its_own_errors_to_head_have_no_body) {
  char upstream[64];

  snprintf(upstream, sizeof(upstream), "http://127.0.0.1:%d",
           th_refused_port());
  start_gateway(upstream);
  cr_assert_eq(curl((const char *[]){"-I", gw("/a"), gw("/b"), NULL}), 0,
               "%s", err);
  cr_assert(strstr(err, "< HTTP/1.1 502 Bad Gateway"), "%s", err);
  cr_assert(strstr(err, "Re-using existing connection"), "%s", err);
  cr_assert_null(strstr(err, "Excess found"), "%s", err);
  stop_gateway();
}

/* One request over a socket of its own, as written, and everything the
 * gateway sends until it closes (each test's request makes it close). */
static bool raw_reset; /* the last raw() ended with a reset, not an EOF */

static const char *raw(const char *req, size_t req_len) {
  static char got[131072];
  int fd = gateway_connect();
  size_t len = 0, sent = 0;
  ssize_t n;

  while (sent < req_len) {
    n = write(fd, req + sent, req_len - sent);
    if (n <= 0)
      break; /* closed early: what it said is read below */
    sent += (size_t)n;
  }
  for (;;) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    cr_assert_gt(poll(&pfd, 1, 10000), 0, "the gateway did not close: %.*s",
                 (int)len, got);
    n = read(fd, got + len, sizeof(got) - 1 - len);
    raw_reset = n < 0 && errno == ECONNRESET;
    if (n <= 0)
      break;
    len += (size_t)n;
    cr_assert_lt(len, sizeof(got) - 1);
  }
  close(fd);
  got[len] = '\0';
  return got;
}

#define RAW(s) raw(s, sizeof(s) - 1)

static long upstream_requests(struct ts_server *web) {
  struct ts_stats st;

  ts_get_stats(web, &st);
  return st.requests;
}

/* Requests a reverse proxy must not pass as they are: a CONNECT (a
 * tunnel; "CONNECT 81", appended to the upstream URL, named another port
 * of its host) gets 405; a target that is not a path ("*") gets 400; an
 * absolute URL is taken by its path, as RFC 9112 3.2.2 asks. */
TH_TEST(gateway, targets_that_are_not_paths) {
  struct ts_server *web = gateway_to_test_server("");
  const char *got;

  got = RAW("CONNECT 127.0.0.1:81 HTTP/1.1\r\nHost: x\r\n\r\n");
  cr_assert(strstr(got, "HTTP/1.1 405 Method Not Allowed\r\n"), "%s", got);
  cr_assert(strstr(got, "Connection: close\r\n"), "%s", got);
  got = RAW("CONNECT 81 HTTP/1.1\r\nHost: x\r\n\r\n"); /* port 8081 */
  cr_assert(strstr(got, "HTTP/1.1 405 Method Not Allowed\r\n"), "%s", got);
  got = RAW("OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  cr_assert(strstr(got, "HTTP/1.1 400 Bad Request\r\n"), "%s", got);
  cr_assert(strstr(got, "neither a path nor an absolute http URL"), "%s",
            got);
  got = RAW("GET http://elsewhere.example/bytes/4 HTTP/1.1\r\nHost: x\r\n"
            "Connection: close\r\n\r\n");
  cr_assert(strstr(got, "HTTP/1.1 200 OK\r\n"), "%s", got);
  cr_assert(strstr(got, "\r\n4\r\n0123\r\n0\r\n\r\n"), "%s", got);
  cr_assert_eq(upstream_requests(web), 1, "only the last went upstream");
  got = RAW("GET http://elsewhere.example?x=1 HTTP/1.1\r\nHost: x\r\n"
            "Connection: close\r\n\r\n"); /* the path "/?x=1" */
  cr_assert(strstr(got, "HTTP/1.1 404 "), "forwarded: %s", got);
  cr_assert_eq(upstream_requests(web), 2);
  /* A 405 says what is allowed (RFC 9110 15.5.6). */
  got = RAW("CONNECT a:1 HTTP/1.1\r\nHost: x\r\n\r\n");
  cr_assert(strstr(got, "\r\nAllow: GET, HEAD"), "%s", got);
  /* One answer of its own to a request that does not keep the
   * connection, whatever follows it: an upgrade, or a pipelined request
   * (a second 400 followed, from llhttp refusing what came after). */
  got = RAW("OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            "Upgrade: h2c\r\n\r\n");
  cr_assert(strstr(got, "HTTP/1.1 400 "), "%s", got);
  cr_assert_null(strstr(strstr(got, "HTTP/1.1 400 ") + 1, "HTTP/1.1"),
                 "one answer: %s", got);
  got = RAW("OPTIONS * HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            "GET /bytes/1 HTTP/1.1\r\nHost: x\r\n\r\n");
  cr_assert(strstr(got, "HTTP/1.1 400 "), "%s", got);
  cr_assert_null(strstr(strstr(got, "HTTP/1.1 400 ") + 1, "HTTP/1.1"),
                 "one answer: %s", got);
  cr_assert_eq(upstream_requests(web), 2, "the pipelined one not sent");
  stop_gateway();
  ts_stop(web);
}

/* An HTTP/1.0 client knows no chunked framing: its body ends with the
 * connection (it came chunked, size lines in the body). An upgrade is not
 * made: answered, and the connection closed after. */
TH_TEST(gateway, http10_clients_and_upgrades) {
  struct ts_server *web = gateway_to_test_server("");
  const char *got;

  got = RAW("GET /bytes/5 HTTP/1.0\r\nHost: x\r\n\r\n");
  cr_assert(strstr(got, "HTTP/1.1 200 OK\r\n"), "%s", got);
  cr_assert_null(strstr(got, "Transfer-Encoding"), "%s", got);
  cr_assert(strstr(got, "Connection: close\r\n"), "%s", got);
  cr_assert(strstr(got, "\r\n\r\n01234") &&
                strlen(strstr(got, "\r\n\r\n01234")) == 9,
            "the body alone: %s", got);
  cr_assert_not(raw_reset);
  /* Cut short upstream (5 of 10 bytes, then a close): the HTTP/1.0
   * client, whose body ends with the connection, gets a reset, not an end
   * of file that would pass for a whole body. */
  got = RAW("GET /partial/10/5 HTTP/1.0\r\nHost: x\r\n\r\n");
  cr_assert(raw_reset, "a reset: %s", got);
  got = RAW("GET /bytes/2 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            "Upgrade: h2c\r\n\r\n");
  cr_assert(strstr(got, "HTTP/1.1 200 OK\r\n"), "%s", got);
  cr_assert(strstr(got, "Connection: close\r\n"), "%s", got);
  cr_assert(strstr(got, "\r\n2\r\n01\r\n0\r\n\r\n"), "%s", got);
  stop_gateway();
  ts_stop(web);
}

/* A request's head past 64 KiB gets 431 and the connection closed (the
 * gateway took all of it in memory, without end). */
TH_TEST(gateway, a_head_too_large_is_refused) {
  struct ts_server *web = gateway_to_test_server("");
  static char req[80 * 1024];
  const char *got;
  int n = snprintf(req, sizeof(req), "GET /bytes/1 HTTP/1.1\r\nHost: x\r\n"
                                     "X-Big: ");

  memset(req + n, 'a', 70 * 1024);
  n += 70 * 1024;
  n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n\r\n");
  got = raw(req, (size_t)n);
  cr_assert(strstr(got, "HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "%.200s", got);
  cr_assert_eq(upstream_requests(web), 0);
  stop_gateway();
  ts_stop(web);
}

/* Sends n blocks of 64 KiB, each whole: the client still sending. */
static void send_more(int fd, int n) {
  static char more[64 * 1024];

  memset(more, 'x', sizeof(more));
  for (int i = 0; i < n; i++) {
    ssize_t r = send(fd, more, sizeof(more), MSG_NOSIGNAL);
    cr_assert_eq(r, (ssize_t)sizeof(more), "send %d: %s", i,
                 r < 0 ? strerror(errno) : "short");
  }
}

/* Everything the gateway sends, to an end of file (a reset fails the
 * test), NUL-terminated in got; fd is closed. With `shut`, our end is
 * shut first (a client done sending; one that half-closes while its
 * request is upstream gives it up). */
static void read_to_the_end(int fd, bool shut, char *got, size_t cap) {
  size_t len = 0;
  ssize_t r;

  if (shut)
    cr_assert_eq(shutdown(fd, SHUT_WR), 0);
  while ((r = read(fd, got + len, cap - 1 - len)) > 0)
    len += (size_t)r;
  cr_assert_eq(r, 0, "an end of file, not %s", strerror(errno));
  got[len] = '\0';
  close(fd);
}

/* A client refused while it still sends (the rest of a head too large
 * here; a body too large alike) gets its answer whole: the gateway shuts
 * its side and drops what comes until the client closes (RFC 9112 9.6).
 * Before, it closed with those bytes unread: a reset, and the client's
 * next send failed before it read the answer. */
TH_TEST(gateway, a_refused_client_still_sending_gets_its_answer) {
  struct ts_server *web = gateway_to_test_server("");
  static char req[80 * 1024], got[4096];
  int fd = gateway_connect();
  int n = snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nHost: x\r\n"
                                     "X-Big: ");

  memset(req + n, 'a', 70 * 1024);
  n += 70 * 1024;
  cr_assert_eq(send(fd, req, (size_t)n, MSG_NOSIGNAL), n, "%s",
               strerror(errno));
  send_more(fd, 16); /* 1 MiB more, the head still going */
  read_to_the_end(fd, true, got, sizeof(got));
  cr_assert(strstr(got, "HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "%s", got);
  cr_assert_eq(upstream_requests(web), 0);
  stop_gateway();
  ts_stop(web);
}

/* SIGINT stops it as SIGTERM does (Ctrl-C at its terminal): no new
 * clients, the request in flight answered whole, then a clean exit. */
TH_TEST(gateway, sigint_stops_it_gracefully) {
  struct ts_server *web = gateway_to_test_server("");
  static char got[4096];
  const char req[] = "GET /delay/300/bytes/10 HTTP/1.1\r\nHost: gw\r\n"
                     "Connection: close\r\n\r\n";
  int fd = gateway_connect();

  cr_assert_eq(write(fd, req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
  cr_assert(ts_wait(web, TS_REQUESTS, 1, 10000), "the upstream got it");
  kill(gw_pid, SIGINT);
  gw_stopping = true;
  read_to_the_end(fd, false, got, sizeof(got));
  cr_assert(strstr(got, "HTTP/1.1 200 OK\r\n"), "%s", got);
  cr_assert(strstr(got, "\r\na\r\n0123456789\r\n0\r\n\r\n"), "whole: %s", got);
  stop_gateway(); /* exit status 0, "gateway: stopped" */
  ts_stop(web);
}

/* Stopping, every answer to a request that came after the stop closes
 * its connection: a client still sending gets that answer whole, read to
 * its end of file, not a reset: the worker lingers for it within the
 * drain. It closed every client at once when its last transfer ended,
 * with their bytes unread. */
TH_TEST(gateway, a_stop_lingers_for_a_client_still_sending) {
  struct ts_server *web = gateway_to_test_server("");
  static char got[4096];
  const char req[] = "GET /delay/300/bytes/10 HTTP/1.1\r\nHost: gw\r\n\r\n";
  const char req2[] = "GET /bytes/5 HTTP/1.1\r\nHost: gw\r\n\r\n";
  int fd = gateway_connect();

  cr_assert_eq(write(fd, req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
  cr_assert(ts_wait(web, TS_REQUESTS, 1, 10000), "the upstream got it");
  kill(gw_pid, SIGINT);
  gw_stopping = true;
  /* A request after the stop (its answer closes the connection), then
   * 16 MiB: more than the gateway reads ahead (1 MiB) and the socket
   * buffers hold, still going out when the answer is done. */
  cr_assert_eq(write(fd, req2, sizeof(req2) - 1), (ssize_t)sizeof(req2) - 1);
  send_more(fd, 256);
  read_to_the_end(fd, true, got, sizeof(got));
  cr_assert(strstr(got, "HTTP/1.1 200 OK\r\n"), "%s", got);
  cr_assert(strstr(got, "\r\n0123456789\r\n0\r\n\r\n"), "whole: %s", got);
  cr_assert(strstr(got, "Connection: close\r\n"), "the second: %s", got);
  cr_assert(strstr(got, "\r\n5\r\n01234\r\n0\r\n\r\n"), "whole: %s", got);
  stop_gateway();
  ts_stop(web);
}
