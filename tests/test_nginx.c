/* Interop with a real nginx (Debian's), started and stopped by the test:
 * 1,000 keep-alive GETs, 16 in flight at a time. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testhelp.h"
#include "testserver.h"

#ifndef NGINX_BIN
#define NGINX_BIN "/usr/sbin/nginx"
#endif

static char prefix[128];
static pid_t nginx_pid = -1;
static int nginx_port;

static void nginx_end(void) {
  int status;

  if (nginx_pid > 0) {
    kill(nginx_pid, SIGTERM);
    waitpid(nginx_pid, &status, 0);
  }
  if (prefix[0]) {
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", prefix);
    cr_assert_eq(system(cmd), 0);
  }
}

/* A port that was free a moment ago (nginx cannot listen on port 0). */
static int probe_free_port(void) {
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  getsockname(fd, (struct sockaddr *)&a, &len);
  close(fd);
  return ntohs(a.sin_port);
}

static void write_config(int port) {
  char path[192], line[512], *at;
  FILE *in = fopen(TESTS_SRCDIR "/nginx/nginx.conf", "r"), *out;

  cr_assert_not_null(in, "%s/nginx/nginx.conf: %s", TESTS_SRCDIR,
                     strerror(errno));
  snprintf(path, sizeof(path), "%s/nginx.conf", prefix);
  out = fopen(path, "w");
  cr_assert_not_null(out);
  while (fgets(line, sizeof(line), in)) {
    for (char *p = line; *p;) {
      if ((at = strstr(p, "@PREFIX@")) == p) {
        fputs(prefix, out);
        p += 8;
      } else if ((at = strstr(p, "@PORT@")) == p) {
        fprintf(out, "%d", port);
        p += 6;
      } else {
        fputc(*p++, out);
      }
    }
  }
  fclose(in);
  fclose(out);
}

static bool port_answers(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  bool ok;

  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
  close(fd);
  return ok;
}

/* Starts nginx on a probed port; a lost race for the port (EADDRINUSE:
 * nginx exits) is retried with another. */
static void start_nginx(void) {
  char conf[192], errlog[192];

  cr_assert_eq(access(NGINX_BIN, X_OK), 0,
               NGINX_BIN " is missing: install Debian's nginx (./bootstrap.sh)");
  for (int attempt = 0; attempt < 5; attempt++) {
    int status;
    nginx_port = probe_free_port();
    write_config(nginx_port);
    snprintf(conf, sizeof(conf), "%s/nginx.conf", prefix);
    snprintf(errlog, sizeof(errlog), "%s/error.log", prefix);
    nginx_pid = fork();
    cr_assert_geq(nginx_pid, 0);
    if (nginx_pid == 0) {
      execl(NGINX_BIN, "nginx", "-p", prefix, "-e", errlog, "-c", conf,
            (char *)NULL);
      _exit(127);
    }
    for (int i = 0; i < 100; i++) { /* up to 5 s */
      struct timespec pause = {0, 50000000};
      if (port_answers(nginx_port))
        return;
      if (waitpid(nginx_pid, &status, WNOHANG) == nginx_pid)
        break; /* exited: most likely the port was taken meanwhile */
      nanosleep(&pause, NULL);
    }
    kill(nginx_pid, SIGKILL);
    waitpid(nginx_pid, &status, 0);
    nginx_pid = -1;
  }
  cr_assert_fail("nginx did not start; see %s/error.log", prefix);
}

static void setup(void) {
  char path[192];
  char body[1000];
  FILE *f;

  snprintf(prefix, sizeof(prefix), "/tmp/xfer-nginx-XXXXXX");
  cr_assert_not_null(mkdtemp(prefix));
  snprintf(path, sizeof(path), "%s/root", prefix);
  cr_assert_eq(mkdir(path, 0755), 0);
  snprintf(path, sizeof(path), "%s/tmp", prefix);
  cr_assert_eq(mkdir(path, 0755), 0);
  snprintf(path, sizeof(path), "%s/root/file.bin", prefix);
  ts_fill_pattern(body, 0, sizeof(body));
  f = fopen(path, "w");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(body, 1, sizeof(body), f), sizeof(body));
  fclose(f);
  start_nginx();
}

TestSuite(nginx, .init = setup);

TH_TEST(nginx, thousand_keep_alive_gets_sixteen_in_flight) {
  enum { TOTAL = 1000, IN_FLIGHT = 16 };
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_sink sinks[IN_FLIGHT] = {{0}};
  xfer *slots[IN_FLIGHT];
  const char *url = th_url(nginx_port, "/file.bin");
  int started = 0, done = 0, running = 1, guard = 0;
  const xfer_msg *msg;
  xfer_pool_stats ps;

  for (int i = 0; i < IN_FLIGHT; i++) {
    slots[i] = th_get(m, url, &sinks[i]);
    xfer_set_private(slots[i], &sinks[i]);
    started++;
  }
  while (done < TOTAL && guard++ < 100000) {
    cr_assert_eq(xfer_multi_perform(m, &running), XFER_M_OK);
    while ((msg = xfer_multi_info_read(m, NULL))) {
      xfer *x = msg->x;
      struct th_sink *s = xfer_get_private(x);
      cr_assert_eq(msg->result, XFER_OK, "%s", xfer_get_error_detail(x));
      cr_assert_eq(xfer_get_status(x), 200);
      th_expect_pattern(s->data, s->len, 1000);
      done++;
      cr_assert_eq(xfer_multi_remove(m, x), XFER_M_OK);
      if (started < TOTAL) { /* the same transfer, again */
        s->len = 0;
        cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
        started++;
      }
    }
    if (done < TOTAL)
      cr_assert_eq(xfer_multi_poll(m, 1000, NULL), XFER_M_OK);
  }
  cr_assert_eq(done, TOTAL);
  xfer_pool_get_stats(m->pool, &ps);
  cr_assert_leq(ps.opened_total, IN_FLIGHT, "%llu connections opened",
                (unsigned long long)ps.opened_total);
  cr_assert_geq(ps.reused_total, TOTAL - IN_FLIGHT);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  for (int i = 0; i < IN_FLIGHT; i++) {
    xfer_free(slots[i]);
    th_sink_free(&sinks[i]);
  }
}
