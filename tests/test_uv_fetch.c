/* examples/uv: the multi driven by libuv (uv_poll_t per socket, a
 * uv_timer_t), run as a process against our test server. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testhelp.h"
#include "testserver.h"

static char out[16384], err[4096];

static void uv_fetch_end(void) {}

TH_TEST(uv_fetch, fetches_in_parallel_and_reports_each) {
  struct ts_server *web = ts_start(NULL);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM, 0), rc;
  char u1[64], u2[64], u3[64], refused[64], line[128];
  struct ts_stats st;

  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  getsockname(fd, (struct sockaddr *)&a, &len);
  close(fd); /* a closed port: refused */
  snprintf(u1, sizeof(u1), "http://127.0.0.1:%d/delay/100/bytes/10",
           ts_port(web));
  snprintf(u2, sizeof(u2), "http://127.0.0.1:%d/delay/100/chunked/300/7",
           ts_port(web));
  snprintf(u3, sizeof(u3), "http://127.0.0.1:%d/status/404", ts_port(web));
  snprintf(refused, sizeof(refused), "http://127.0.0.1:%d/",
           ntohs(a.sin_port));
  rc = th_spawn((const char *[]){UV_FETCH_BIN, u1, u2, u3, refused, NULL},
                out, sizeof(out), err, sizeof(err));
  cr_assert_eq(rc, 1, "one failed: %s%s", out, err);
  cr_assert_eq(th_lines(out), 4, "%s", out);
  snprintf(line, sizeof(line), "%s: 200, 10 bytes\n", u1);
  cr_assert(strstr(out, line), "%s", out);
  snprintf(line, sizeof(line), "%s: 200, 300 bytes\n", u2);
  cr_assert(strstr(out, line), "%s", out);
  snprintf(line, sizeof(line), "%s: 404", u3);
  cr_assert(strstr(out, line), "%s", out);
  cr_assert(strstr(out, refused) && strstr(out, "refused"), "%s", out);
  ts_get_stats(web, &st);
  cr_assert_eq(st.accepted, 3, "all three at once, in parallel");
  ts_stop(web);
}
