/*
 * Attached connections of a multi: the fast path of brief rule 4.
 *
 * A connection a transfer has just finished with stays with its multi,
 * its socket still watched (the connection's own tracker takes over the
 * transfer's IN interest, so the application hears nothing), for the
 * multi's next transfer to the same destination: no REMOVE/ADD, no
 * syscall, no shared pool lookup. It goes to the shared side of the pool
 * (REMOVE first) when the hold time passes (pool option, default 100 ms),
 * when a transfer of another thread asks for it (through this multi's
 * wake-up), and in xfer_multi_destroy(). A peer that closes it meanwhile
 * makes its socket readable, and it is closed.
 *
 * Protected by: nothing here; the list belongs to the multi's thread. The
 * pool side (the bundle's attached list) is under the bundle lock.
 */
#ifndef XFER_ATTACHED_H
#define XFER_ATTACHED_H

#include "common.h"

#include "now.h"

struct xfer__conn;

/* More than this many attached connections per multi: the oldest goes to
 * the shared side (the list is searched linearly). */
#define XFER__ATTACHED_MAX 128

struct xfer__attached {
  xfer *handle;            /* internal: its expiry is the next hold end */
  struct xfer__list conns; /* xfer__conn.owner_node, oldest first */
  size_t count;
};

/* Creates the internal handle. false when out of memory. */
bool xfer__attached_init(xfer_multi *m);

/* c's response completed on m (the transfer still tracks its socket):
 * keep it attached. false: attaching is off or refused; return c the
 * shared way. */
bool xfer__attached_keep(xfer_multi *m, struct xfer__conn *c, xfer__time now);

/* An attached connection for the key that passes the pool's reuse check
 * for a request that is `replayable` or not (xfer__pool_reuse_check():
 * dead ones are closed, others not fit go to the shared side), or NULL.
 * Its socket stays tracked by c->ev (c->ev_live) until
 * xfer__attached_untrack(), which the user calls once its transfer tracks
 * the socket itself. */
struct xfer__conn *xfer__attached_take(xfer_multi *m, const char *key,
                                       size_t key_len, uint64_t hash,
                                       bool replayable, xfer__time now);
void xfer__attached_untrack(xfer_multi *m, struct xfer__conn *c);

/* Releases those another thread asked for (m's wake-up fired). */
void xfer__attached_release_requested(xfer_multi *m, xfer__time now);

/* Releases every attached connection, and frees the internal handle
 * (xfer_multi_destroy). */
void xfer__attached_release_all_and_free(xfer_multi *m, xfer__time now);

#endif /* XFER_ATTACHED_H */
