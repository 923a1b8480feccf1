/* lib/conn.c: the pool key (brief rule 5), its hash, and the liveness
 * check of an idle connection. */
#include <criterion/criterion.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testhelp.h"

#include "conn.h"

static void conn_end(void) {}

static size_t key_of(char *out, size_t len, const char *host, unsigned port,
                     int ip_version, const char *bind) {
  return xfer__conn_key(out, len, "http", host, port, ip_version, bind);
}

TH_TEST(conn, key_names_every_setting) {
  char key[128];
  size_t n = key_of(key, sizeof(key), "example.test", 8080, 6, "127.0.0.2");

  cr_assert_str_eq(key, "http://example.test:8080|ip=6|bind=127.0.0.2");
  cr_assert_eq(n, strlen(key));
  n = key_of(key, sizeof(key), "h", 1, 0, NULL);
  cr_assert_str_eq(key, "http://h:1|ip=0|bind=");
  cr_assert_eq(n, strlen(key));
  n = key_of(key, sizeof(key), "h", 65535, -1, "");
  cr_assert_str_eq(key, "http://h:65535|ip=-1|bind=");
  cr_assert_eq(n, strlen(key));
}

/* Two connections are interchangeable only when every setting matches. */
TH_TEST(conn, keys_differ_in_each_setting) {
  char base[128], other[128];

  key_of(base, sizeof(base), "a.test", 80, 0, "");
  key_of(other, sizeof(other), "A.test", 80, 0, "");
  cr_assert_str_neq(base, other, "host as given");
  key_of(other, sizeof(other), "a.test", 8, 0, "");
  cr_assert_str_neq(base, other, "port");
  key_of(other, sizeof(other), "a.test", 80, 4, "");
  cr_assert_str_neq(base, other, "IP version");
  key_of(other, sizeof(other), "a.test", 80, 0, "127.0.0.1");
  cr_assert_str_neq(base, other, "local bind");
  cr_assert_neq(xfer__conn_key_hash(base, strlen(base)),
                xfer__conn_key_hash(other, strlen(other)));
  key_of(other, sizeof(other), "a.test", 80, 0, NULL);
  cr_assert_str_eq(base, other, "no bind and an empty bind are one key");
  cr_assert_eq(xfer__conn_key_hash(base, strlen(base)),
               xfer__conn_key_hash(other, strlen(other)));
}

/* Too long for the buffer: the length it would need, nothing past it. */
TH_TEST(conn, key_too_long_says_so) {
  const char *want = "http://a-long-host.test:80|ip=0|bind=";
  size_t full = strlen(want);
  char key[64];

  memset(key, 'x', sizeof(key));
  cr_assert_eq(key_of(key, 16, "a-long-host.test", 80, 0, ""), full);
  cr_assert_eq(key[0], '\0');
  for (size_t i = 1; i < sizeof(key); i++)
    cr_assert_eq(key[i], 'x', "wrote byte %zu of a 16-byte buffer", i);
  memset(key, 'x', sizeof(key));
  cr_assert_eq(key_of(key, full, "a-long-host.test", 80, 0, ""), full,
               "one byte short (no room for the NUL)");
  cr_assert_eq(key[full], 'x', "wrote past the buffer");
  cr_assert_eq(key_of(key, full + 1, "a-long-host.test", 80, 0, ""), full);
  cr_assert_str_eq(key, want);
}

/* An idle connection is alive while the peer says nothing; a close or
 * stray bytes mean it cannot carry a request any more. */
TH_TEST(conn, alive_until_the_peer_closes_or_talks) {
  int sv[2];
  struct xfer__conn *c;

  cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  c = xfer__conn_new(sv[0], "k", 1, 1);
  cr_assert_not_null(c);
  cr_assert(xfer__conn_alive(c));
  cr_assert_eq(write(sv[1], "x", 1), 1);
  cr_assert_not(xfer__conn_alive(c), "unexpected bytes");
  xfer__conn_close(c, NULL);

  cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  c = xfer__conn_new(sv[0], "k", 1, 1);
  cr_assert_not_null(c);
  close(sv[1]);
  cr_assert_not(xfer__conn_alive(c), "peer closed");
  xfer__conn_close(c, NULL);
}
