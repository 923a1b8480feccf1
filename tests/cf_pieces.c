/*
 * A connection filter for tests: it sits between the socket and the
 * exchange of every connection a transfer opens, and delivers data in
 * pieces, as TLS will: at least 1 send in 4 is refused with "would block"
 * although the socket could take more, the others take 1 to 8 bytes;
 * receives return 1 to 3 bytes (what it read beyond them it holds, so the
 * exchange must ask it before waiting for an event that will not come);
 * 1 receive in 8 wants OUT instead of IN, as TLS does during a key
 * update.
 *
 * Linked into the "_pieces" builds of test suites (Makefile.am), where a
 * constructor installs it before any test runs. A seeded generator drives
 * it: the seed is printed at start ("pieces: seed N") and is taken from
 * XFER_PIECES_SEED when set, so a failing run can be repeated. Each
 * connection draws from its own generator (the seed and the connection's
 * id), so what one connection sees does not depend on the others.
 */
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cfilter.h"
#include "conn.h"
#include "mem.h"

#define HELD_MAX 4096

struct pieces {
  struct xfer__cf base;
  uint64_t rng;
  char held[HELD_MAX]; /* read from below, not handed up yet */
  size_t held_off, held_len;
  bool wants_out; /* the last receive asked for OUT */
};

static uint64_t seed;

/* splitmix64: small, and good enough to spread the choices. */
static uint64_t next(struct pieces *p) {
  uint64_t z = (p->rng += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static struct pieces *of(const struct xfer__cf *cf) {
  return XFER__CONTAINER_OF(cf, struct pieces, base);
}

static enum xfer__cf_progress pieces_connect(struct xfer__cf *cf,
                                             struct xfer__mev *ev, xfer__time now,
                                             xfer__time *next_at, char *why,
                                             size_t why_len) {
  (void)cf, (void)ev, (void)now, (void)next_at, (void)why, (void)why_len;
  return XFER__CF_DONE;
}

static void pieces_pollset(struct xfer__cf *cf, struct xfer__pollset *ps,
                           unsigned want) {
  if (of(cf)->wants_out && (want & XFER_POLL_IN))
    want = (want & ~(unsigned)XFER_POLL_IN) | XFER_POLL_OUT;
  xfer__cf_pass_pollset(cf, ps, want);
}

static ssize_t pieces_send(struct xfer__cf *cf, const struct iovec *iov,
                           int iovcnt, int *err) {
  struct pieces *p = of(cf);
  struct iovec part[2];
  size_t room = 1 + next(p) % 8;
  int n = 0;

  if (next(p) % 4 == 0) {
    *err = EAGAIN; /* the socket could take it: refused all the same */
    return -1;
  }
  for (int i = 0; i < iovcnt && room && n < 2; i++) {
    size_t take = iov[i].iov_len < room ? iov[i].iov_len : room;
    if (!take)
      continue;
    part[n].iov_base = iov[i].iov_base;
    part[n++].iov_len = take;
    room -= take;
  }
  return xfer__cf_pass_send(cf, part, n, err);
}

static ssize_t pieces_recv(struct xfer__cf *cf, char *buf, size_t len,
                           int *err) {
  struct pieces *p = of(cf);
  size_t give;

  p->wants_out = false;
  if (next(p) % 8 == 0) {
    p->wants_out = true;
    *err = EAGAIN;
    return -1;
  }
  if (p->held_off == p->held_len) {
    ssize_t n = xfer__cf_pass_recv(cf, p->held, sizeof(p->held), err);
    if (n <= 0)
      return n;
    p->held_off = 0;
    p->held_len = (size_t)n;
  }
  give = 1 + next(p) % 3;
  if (give > len)
    give = len;
  if (give > p->held_len - p->held_off)
    give = p->held_len - p->held_off;
  memcpy(buf, p->held + p->held_off, give);
  p->held_off += give;
  return (ssize_t)give;
}

static bool pieces_pending(const struct xfer__cf *cf) {
  return of(cf)->held_off < of(cf)->held_len;
}

/* Bytes held on an idle connection are bytes nobody asked for. */
static bool pieces_alive(struct xfer__cf *cf) { return !pieces_pending(cf); }

static void pieces_close(struct xfer__cf *cf, struct xfer__mev *ev) {
  (void)ev;
  xfer__free(of(cf));
}

static const struct xfer__cf_type pieces_type = {
    .name = "pieces",
    .connect = pieces_connect,
    .pollset = pieces_pollset,
    .send = pieces_send,
    .recv = pieces_recv,
    .data_pending = pieces_pending,
    .alive = pieces_alive,
    .close = pieces_close,
};

static void add_pieces(struct xfer__conn *c) {
  struct pieces *p = xfer__calloc(1, sizeof(*p));

  if (!p)
    return; /* out of memory (a test of that): the plain stack goes on */
  p->base.type = &pieces_type;
  p->rng = seed ^ (c->id * UINT64_C(0x2545f4914f6cdd1d));
  xfer__cf_push(&c->filters, &p->base);
}

__attribute__((constructor)) static void install_pieces(void) {
  const char *given = getenv("XFER_PIECES_SEED");

  seed = given ? strtoull(given, NULL, 10) : (uint64_t)time(NULL);
  fprintf(stderr, "pieces: seed %llu (XFER_PIECES_SEED=%llu repeats it)\n",
          (unsigned long long)seed, (unsigned long long)seed);
  xfer__cf_test_hook = add_pieces;
}
