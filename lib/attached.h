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
 * The hold end is seen at the end of every call of the multi that runs
 * transfers, or removes a running one (xfer__attached_settle()). A multi with transfers running is called
 * again (their sockets and deadlines bring the calls), so its holds need
 * no deadline of their own: a busy multi whose transfers set none keeps
 * no deadline at all, and its application's wait arms no kernel timer
 * (about 0.5 us a wait, measured in tests/bench). An idle multi sets the
 * multi's timer for the oldest's hold end, and so does every multi of a
 * pool with a limit, or whose transfers do not ask for attached
 * connections (attached_wait_ms < 0): a transfer waiting for room, at
 * its destination's limit without asking (a retry, say), or opening its
 * own for want of asking, counts on the hold end. A busy multi of any
 * other pool clears the timer it set when it was idle (the multi's timer
 * callback then hears -1, at most once per XFER__TIMER_STOP_EVERY_MS:
 * multi.h).
 *
 * Protected by: nothing here; the list belongs to the multi's thread. The
 * pool side (the bundle's attached list) is under the bundle lock.
 */
#ifndef XFER_ATTACHED_H
#define XFER_ATTACHED_H

#include "common.h"

#include "loop.h"
#include "now.h"
#include "shutdown.h"
#include "timer.h"

struct xfer__conn;

/* More than this many attached connections per multi: the oldest goes to
 * the shared side (the list is searched linearly). */
#define XFER__ATTACHED_MAX 128

struct xfer__attached {
  struct xfer__loop *loop;
  struct xfer__shutdown *shutdown; /* takes what the pool evicts */
  struct xfer__expiry *timer;      /* XFER__EXPIRE_ATTACHED: the next hold
                                      end (the multi runs
                                      xfer__attached_run() then) */
  struct xfer__list conns; /* xfer__conn.owner_node, oldest first */
  size_t count;
  struct xfer__pool_tally *tally; /* the multi's, in the pool */
};

void xfer__attached_init(struct xfer__attached *a, struct xfer__loop *loop,
                         struct xfer__shutdown *shutdown,
                         struct xfer__expiry *timer,
                         struct xfer__pool_tally *tally);

/* c's response completed on this loop (the transfer, whose tracker is
 * `user`, still tracks its socket; NULL: no transfer does): keep it
 * attached. The transfer's use of the socket passes to c where it is what
 * c wants (xfer__mev_hand_over()). false: attaching is off or refused;
 * return c the shared way. */
bool xfer__attached_keep(struct xfer__attached *a, struct xfer__conn *c,
                         struct xfer__mev_tracker *user, xfer__time now);

/* An attached connection for the key that passes the pool's reuse check
 * for a request that is `replayable` or not (xfer__pool_reuse_check():
 * dead ones are closed, counted in dead_on_checkout, *saw_dead set, and
 * the next is tried), or NULL. The first that is expired or idle too long
 * for this request goes to the shared side, and
 * the walk stops there with NULL: the pool decides on it (its checkout
 * sees it with the others idle there).
 * Its socket stays tracked by c->ev (c->ev_live) until
 * xfer__attached_untrack(), which the user calls once its transfer tracks
 * the socket itself. */
struct xfer__conn *xfer__attached_take(struct xfer__attached *a,
                                       const char *key, size_t key_len,
                                       uint64_t hash, bool replayable,
                                       xfer__time now, bool *saw_dead);
void xfer__attached_untrack(struct xfer__attached *a, struct xfer__conn *c);
/* The same, for a start inside xfer_multi_add(): only a connection that
 * needs no liveness check and nobody asked for, and no side effect
 * otherwise (nothing released or closed, nothing told to the
 * application); NULL when there is none. */
struct xfer__conn *xfer__attached_take_trusted(struct xfer__attached *a,
                                               const char *key, size_t key_len,
                                               uint64_t hash, bool replayable,
                                               xfer__time now);

/* Its timer fired: releases what was held long enough. */
void xfer__attached_run(struct xfer__attached *a, xfer__time now);
/* At the end of each call of the multi that runs transfers: releases
 * what was held long enough. Sets the timer for the oldest's hold end
 * (never later than one set already) where the multi is idle (not
 * `busy`: no transfer running), or its pool has a limit or does not let
 * transfers ask for attached connections; a busy multi of any other pool
 * clears it. */
void xfer__attached_settle(struct xfer__attached *a, xfer__time now,
                           bool busy);

/* Releases those another thread asked for (the loop's wake-up fired). */
void xfer__attached_release_requested(struct xfer__attached *a,
                                      xfer__time now);

/* Releases every attached connection (xfer_multi_destroy). */
void xfer__attached_release_all(struct xfer__attached *a, xfer__time now);

#endif /* XFER_ATTACHED_H */
