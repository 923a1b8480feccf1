/* examples/gateway: the threaded reverse proxy, in front of our test
 * server and in front of nginx, driven by xfer-load; upstream connections
 * stay within the concurrency, nothing fails, SIGTERM stops it cleanly. */
#define _GNU_SOURCE /* memmem */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testhelp.h"
#include "testserver.h"

static char out[65536], err[8192], gw_out[4096];
static pid_t gw_pid = -1;
static int gw_port;
static char gw_log[] = "/tmp/xfer-gateway-XXXXXX";
static struct th_nginx nginx;

static void gateway_end(void) {
  if (gw_pid > 0) {
    kill(gw_pid, SIGKILL);
    waitpid(gw_pid, NULL, 0);
    gw_pid = -1;
  }
  th_nginx_stop(&nginx);
  unlink(gw_log);
}

/* Starts the gateway in front of `upstream` on a probed port. */
static void start_gateway(const char *upstream) {
  int logfd = mkstemp(gw_log);

  cr_assert_geq(logfd, 0);
  for (int attempt = 0; attempt < 5; attempt++) {
    char port[16];
    gw_port = th_free_port();
    snprintf(port, sizeof(port), "%d", gw_port);
    gw_pid = fork();
    cr_assert_geq(gw_pid, 0);
    if (gw_pid == 0) {
      dup2(logfd, 1);
      dup2(logfd, 2);
      execl(GATEWAY_BIN, GATEWAY_BIN, "-w", "2", "-l", port, "-u", upstream,
            (char *)NULL);
      _exit(127);
    }
    for (int i = 0; i < 100; i++) {
      struct timespec pause = {0, 20000000};
      if (th_port_answers(gw_port)) {
        close(logfd);
        return;
      }
      if (waitpid(gw_pid, NULL, WNOHANG) == gw_pid)
        break; /* the port was taken meanwhile */
      nanosleep(&pause, NULL);
    }
    kill(gw_pid, SIGKILL);
    waitpid(gw_pid, NULL, 0);
  }
  cr_assert_fail("the gateway did not start");
}

/* SIGTERM: it stops accepting, finishes, and exits 0 with its summary. */
static void stop_gateway(void) {
  int status;
  FILE *f;
  size_t n;

  kill(gw_pid, SIGTERM);
  cr_assert_eq(waitpid(gw_pid, &status, 0), gw_pid);
  gw_pid = -1;
  f = fopen(gw_log, "r");
  n = fread(gw_out, 1, sizeof(gw_out) - 1, f);
  gw_out[n] = '\0';
  fclose(f);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "the gateway's exit: %d; its output: %s", status, gw_out);
  cr_assert(strstr(gw_out, "gateway: stopped"), "%s", gw_out);
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
