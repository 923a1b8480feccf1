/*
 * Event tracking of a multi (seed multi-ev.md; docs/internals/multi-ev.md).
 *
 * The socket table maps fd -> entry: the users of the socket (transfers
 * and connections, one "use" each), reader and writer counts over them,
 * and the action last reported to the application. Each transfer and each
 * connection remembers its last pollset as the list of its uses, so an
 * assessment diffs the new pollset against it and reports only changes.
 *
 * A leaf: it knows trackers and their owners' callbacks, not transfers
 * or multis (docs/internals/layers.md). The multi passes its own.
 *
 * Protected by: nothing; a table belongs to the one thread that drives
 * its multi.
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

/* What a tracker's owner is told; the multi passes its own. Any member
 * may be NULL (nothing to tell). Each may change any tracking, even close
 * the socket. */
struct xfer__mev_ops {
  /* Transfers: a socket you use had events; you are due to run. */
  void (*due)(struct xfer__mev_tracker *t, int fd);
  /* Connections: a socket you wait on had `events` (XFER_CSELECT_*). */
  void (*event)(struct xfer__mev_tracker *t, int fd, int events);
  /* The application refused to watch fd when everything was reported
   * anew (xfer__mev_resync()): transfers fail at their next run, the
   * resolver's lookups at its. Must not change any tracking. */
  void (*refused)(struct xfer__mev_tracker *t, int fd);
};

/* Tells the application about a socket (what: XFER_POLL_*); non-zero
 * when it refused. The multi's wraps its socket callback. */
typedef int (*xfer__mev_report_fn)(void *owner, int fd, int what,
                                   void *socketp);

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

/* The last pollset of one owner (a transfer or a connection). Embedded in
 * its owner, and must not move while it has uses. */
struct xfer__mev_tracker {
  enum xfer__mev_kind kind;
  unsigned count;
  unsigned capacity;
  struct xfer__mev_use *uses; /* inline_uses, or a heap array when larger */
  const struct xfer__mev_ops *ops;
  void *owner;            /* for ops: whatever the owner needs */
  uint64_t dispatch_mark; /* see xfer__mev_dispatch_conns() */
  /* Last: the first use shares a cache line with the fields above. */
  struct xfer__mev_use inline_uses[XFER__MEV_INLINE_USES];
};

struct xfer__mev {
  struct xfer__mev_entry **by_fd; /* indexed by fd: O(1) lookup, no scans */
  size_t by_fd_len;
  struct xfer__list entries; /* every entry, for poll() and resync */
  size_t count;
  uint64_t dispatch_round;
  bool resync; /* a report function was set: report everything anew */
  xfer__mev_report_fn report; /* NULL: nothing is reported */
  void *report_owner;
  int refused_fd; /* the socket the application last refused (details) */
};

void xfer__mev_init(struct xfer__mev *ev);
/* Purges every socket still tracked (REMOVE for those reported) and frees
 * the table. */
void xfer__mev_cleanup(struct xfer__mev *ev);

void xfer__mev_tracker_init(struct xfer__mev_tracker *t,
                            enum xfer__mev_kind kind,
                            const struct xfer__mev_ops *ops, void *owner);

/* Compares the owner's current pollset with its last one and reports the
 * changes. XFER_E_SOCKET_CALLBACK when the application refused one,
 * XFER_E_OUT_OF_MEMORY; the tracking stays consistent either way. */
xfer_code xfer__mev_assess(struct xfer__mev *ev, struct xfer__mev_tracker *t,
                           const struct xfer__pollset *ps);

/*
 * Moves `from`'s use of fd, when it wants exactly `want`, to `to`, which
 * has none: the diff both owners' next assessments would make (one use
 * dropped, the same one added) without a lookup. The socket keeps its
 * readers and writers, so the application hears nothing. For a socket
 * that passes between a transfer and its connection (a connection kept
 * attached after its response, taken by the next request): its pollset
 * then lives on in the new owner's. false, and nothing changed, when
 * `from` has no such use, `to` has one of fd, or memory ran out.
 */
bool xfer__mev_hand_over(struct xfer__mev *ev, struct xfer__mev_tracker *from,
                         struct xfer__mev_tracker *to, int fd, unsigned want);

/* Tells `due` to every transfer that uses fd. Returns true when a
 * connection is interested in fd too. */
bool xfer__mev_expire_xfers(struct xfer__mev *ev, int fd);
/* Tells `event` to every connection interested in fd, once each. */
void xfer__mev_dispatch_conns(struct xfer__mev *ev, int fd, int events);

/* Forgets an owner's pollset (sockets no longer used are reported
 * REMOVE). Any order relative to socket_done. */
void xfer__mev_tracker_done(struct xfer__mev *ev, struct xfer__mev_tracker *t);
/* fd is about to be closed: REMOVE it if reported, and purge it from every
 * remembered pollset, because the kernel reuses the number at once. */
void xfer__mev_socket_done(struct xfer__mev *ev, int fd);

/* Sets (or clears) what reports to the application. Nothing was reported
 * to the new one: the next xfer__mev_resync() reports every socket anew,
 * without the pointers the old one assigned. */
void xfer__mev_set_report(struct xfer__mev *ev, xfer__mev_report_fn report,
                          void *owner);
/* Reports every socket whose wanted action differs from what was
 * reported; the users of a refused socket are told `refused`, and it is
 * reported again at the next resync. (A refused report, here or on a
 * change, leaves what was reported as the application last took it.) */
void xfer__mev_resync(struct xfer__mev *ev);

/* The pointer given back with fd's later reports. XFER_M_BAD_ARGUMENT
 * when fd is not tracked. */
xfer_mcode xfer__mev_assign(struct xfer__mev *ev, int fd, void *socketp);

/* What the table knows of fd, for poll() and tests. false: not tracked. */
struct xfer__mev_socket_info {
  unsigned readers;
  unsigned writers;
  unsigned conns; /* connection uses */
  unsigned users; /* all uses */
  unsigned char want;     /* IN/OUT from the counts */
  unsigned char reported; /* last reported to the application */
};
bool xfer__mev_socket_info(const struct xfer__mev *ev, int fd,
                           struct xfer__mev_socket_info *out);

/* What the application was last told of fd (XFER_POLL_IN, _OUT, _INOUT),
 * 0 when nothing or fd is not tracked. */
unsigned xfer__mev_reported(const struct xfer__mev *ev, int fd);

/* Fills up to `max` pollfds with every tracked socket and the events its
 * users want; returns how many. */
struct pollfd;
size_t xfer__mev_pollfds(const struct xfer__mev *ev, struct pollfd *out,
                         size_t max);

#endif /* XFER_MULTI_EV_H */
