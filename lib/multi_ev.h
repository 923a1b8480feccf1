/*
 * Event tracking of a multi (seed multi-ev.md; docs/internals/multi-ev.md).
 *
 * The socket table maps fd -> entry: the users of the socket (transfers
 * and connections, one "use" each), reader and writer counts over them,
 * and the action last reported to the application. Each transfer and each
 * connection remembers its last pollset as the list of its uses, so an
 * assessment diffs the new pollset against it and reports only changes.
 *
 * Protected by: nothing; a multi and everything in it belongs to the one
 * thread that drives it.
 */
#ifndef XFER_MULTI_EV_H
#define XFER_MULTI_EV_H

#include "common.h"

/* The sockets an owner wants now, and for what (XFER_POLL_IN/OUT/INOUT).
 * c-ares can hand out up to 16 sockets at once, hence the bound. */
#define XFER__POLLSET_MAX 16

struct xfer__pollset {
  unsigned count;
  int fd[XFER__POLLSET_MAX];
  unsigned char want[XFER__POLLSET_MAX];
};

static inline void xfer__pollset_reset(struct xfer__pollset *ps) {
  ps->count = 0;
}

/* Adds interest `want` in fd (OR-ed into an existing slot for fd). A want
 * of 0 is ignored. Returns false when the set is full. */
bool xfer__pollset_add(struct xfer__pollset *ps, int fd, unsigned want);

enum xfer__mev_kind { XFER__MEV_XFER, XFER__MEV_CONN };

struct xfer__mev_tracker;
struct xfer__mev_entry;

/* A connection's event handler: called by xfer__mev_dispatch_conns() when
 * a socket the connection waits on had `events` (XFER_CSELECT_*). */
typedef void (*xfer__mev_conn_event_fn)(xfer_multi *m,
                                        struct xfer__mev_tracker *conn,
                                        int fd, int events);

/* One owner's interest in one socket: a node of the socket entry's user
 * list and a slot of the owner's last pollset at once. */
struct xfer__mev_use {
  struct xfer__list entry_node;
  struct xfer__mev_entry *entry;
  struct xfer__mev_tracker *tracker;
  int fd;
  unsigned char want;
};

/* A transfer rarely waits on more than 2-5 sockets; the common case needs
 * no allocation. */
#define XFER__MEV_INLINE_USES 4

/* The last pollset of one transfer or connection. Embedded in its owner,
 * and must not move while it has uses. */
struct xfer__mev_tracker {
  enum xfer__mev_kind kind;
  unsigned count;
  unsigned capacity;
  struct xfer__mev_use *uses; /* inline_uses, or a heap array when larger */
  struct xfer__mev_use inline_uses[XFER__MEV_INLINE_USES];
  xfer__mev_conn_event_fn on_event; /* connections only */
  uint64_t dispatch_mark;           /* see xfer__mev_dispatch_conns() */
};

struct xfer__mev {
  struct xfer__mev_entry **by_fd; /* indexed by fd: O(1) lookup, no scans */
  size_t by_fd_len;
  struct xfer__list entries; /* every entry, for poll() and resync */
  size_t count;
  uint64_t dispatch_round;
  bool resync; /* a socket callback was set: report everything anew */
};

void xfer__mev_init(struct xfer__mev *ev);
/* Purges every socket still tracked (REMOVE for those reported) and frees
 * the table. */
void xfer__mev_cleanup(xfer_multi *m);

void xfer__mev_tracker_init(struct xfer__mev_tracker *t,
                            enum xfer__mev_kind kind,
                            xfer__mev_conn_event_fn on_event);

/* Compares the transfer's current pollset with its last one and reports
 * the changes. XFER_E_SOCKET_CALLBACK when the application refused one,
 * XFER_E_OUT_OF_MEMORY; the tracking stays consistent either way. */
xfer_code xfer__mev_assess_xfer(xfer_multi *m, xfer *x);
/* The same for a connection, with its pollset given. */
xfer_code xfer__mev_assess_conn(xfer_multi *m, struct xfer__mev_tracker *conn,
                                const struct xfer__pollset *ps);

/* Marks every transfer that uses fd for running. Returns true when a
 * connection is interested in fd too. */
bool xfer__mev_expire_xfers(xfer_multi *m, int fd);
/* Calls the event handler of every connection interested in fd. */
void xfer__mev_dispatch_conns(xfer_multi *m, int fd, int events);

/* Forget a transfer's / connection's pollset (sockets no longer used are
 * reported REMOVE). Any order relative to each other and socket_done. */
void xfer__mev_xfer_done(xfer_multi *m, xfer *x);
void xfer__mev_conn_done(xfer_multi *m, struct xfer__mev_tracker *conn);
/* fd is about to be closed: REMOVE it if reported, and purge it from every
 * remembered pollset, because the kernel reuses the number at once. */
void xfer__mev_socket_done(xfer_multi *m, int fd);

/* The socket callback changed: nothing was reported to the new one. */
void xfer__mev_callback_changed(xfer_multi *m);
/* Reports every socket whose wanted action differs from what was
 * reported; a transfer whose socket was refused is failed. */
void xfer__mev_resync(xfer_multi *m);

xfer_mcode xfer__mev_assign(xfer_multi *m, int fd, void *socketp);

/* What the table knows of fd, for poll() and tests. false: not tracked. */
struct xfer__mev_socket_info {
  unsigned readers;
  unsigned writers;
  unsigned conns; /* connection uses */
  unsigned users; /* all uses */
  unsigned char want;     /* IN/OUT from the counts */
  unsigned char reported; /* last reported to the application */
};
bool xfer__mev_socket_info(const xfer_multi *m, int fd,
                           struct xfer__mev_socket_info *out);

/* Fills up to `max` pollfds with every tracked socket and the events its
 * users want; returns how many. */
struct pollfd;
size_t xfer__mev_pollfds(const xfer_multi *m, struct pollfd *out, size_t max);

#endif /* XFER_MULTI_EV_H */
