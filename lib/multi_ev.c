/*
 * Event tracking: the socket table, last pollsets, and the diff that
 * reports only changes to the application's socket callback.
 * Design: seed multi-ev.md; ours in docs/internals/multi-ev.md.
 */
#include "common.h"

#include <poll.h>
#include <string.h>

#include "mem.h"
#include "multi_ev.h"
#include "now.h"

struct xfer__mev_entry {
  int fd;
  unsigned readers;       /* uses that want IN */
  unsigned writers;       /* uses that want OUT */
  unsigned conns;         /* uses by connections (the shutdown handle) */
  unsigned char reported; /* action the application was told; 0: none */
  void *socketp;          /* from xfer_multi_assign() */
  struct xfer__list users;
  struct xfer__list node; /* in xfer__mev.entries */
};

bool xfer__pollset_add(struct xfer__pollset *ps, int fd, unsigned want) {
  want &= XFER_POLL_INOUT;
  if (!want)
    return true;
  for (unsigned i = 0; i < ps->count; i++) {
    if (ps->fd[i] == fd) {
      ps->want[i] |= (unsigned char)want;
      return true;
    }
  }
  if (ps->count == XFER__POLLSET_MAX)
    return false;
  ps->fd[ps->count] = fd;
  ps->want[ps->count] = (unsigned char)want;
  ps->count++;
  return true;
}

void xfer__mev_init(struct xfer__mev *ev) {
  memset(ev, 0, sizeof(*ev));
  xfer__list_init(&ev->entries);
}

void xfer__mev_tracker_init(struct xfer__mev_tracker *t,
                            enum xfer__mev_kind kind,
                            const struct xfer__mev_ops *ops, void *owner) {
  t->kind = kind;
  t->count = 0;
  t->capacity = XFER__MEV_INLINE_USES;
  t->uses = t->inline_uses;
  t->ops = ops;
  t->owner = owner;
  t->dispatch_mark = 0;
}

/* --- the socket table ---------------------------------------------------- */

static struct xfer__mev_entry *entry_find(const struct xfer__mev *ev, int fd) {
  if (fd < 0 || (size_t)fd >= ev->by_fd_len)
    return NULL;
  return ev->by_fd[fd];
}

static struct xfer__mev_entry *entry_get(struct xfer__mev *ev, int fd) {
  struct xfer__mev_entry *e = entry_find(ev, fd);

  if (e)
    return e;
  if ((size_t)fd >= ev->by_fd_len) {
    size_t len = ev->by_fd_len ? ev->by_fd_len : 64;
    struct xfer__mev_entry **by_fd;
    while (len <= (size_t)fd)
      len *= 2;
    by_fd = xfer__realloc(ev->by_fd, len * sizeof(*by_fd));
    if (!by_fd)
      return NULL;
    memset(by_fd + ev->by_fd_len, 0, (len - ev->by_fd_len) * sizeof(*by_fd));
    ev->by_fd = by_fd;
    ev->by_fd_len = len;
  }
  e = xfer__calloc(1, sizeof(*e));
  if (!e)
    return NULL;
  e->fd = fd;
  xfer__list_init(&e->users);
  xfer__list_insert_tail(&ev->entries, &e->node);
  ev->by_fd[fd] = e;
  ev->count++;
  return e;
}

static unsigned char entry_want(const struct xfer__mev_entry *e) {
  return (unsigned char)((e->readers ? XFER_POLL_IN : 0) |
                         (e->writers ? XFER_POLL_OUT : 0));
}

static int report_entry(struct xfer__mev *ev, struct xfer__mev_entry *e,
                        int what) {
  int rc;

  XFER__ASSERT_NO_POOL_LOCK(); /* rule 3: no callback under a pool lock */
  rc = ev->report(ev->report_owner, e->fd, what, e->socketp);
  /* A refused report counts as not made: a socket new to the application
   * stays new, so what it assigned while it refused is forgotten (asked
   * again, it must see socketp NULL, as for any new socket). */
  if (rc && !e->reported)
    e->socketp = NULL;
  return rc;
}

static void entry_free(struct xfer__mev *ev, struct xfer__mev_entry *e) {
  xfer__list_remove(&e->node);
  ev->by_fd[e->fd] = NULL;
  ev->count--;
  xfer__free(e);
}

/*
 * Brings the application up to date with the entry: REMOVE and free it
 * when it has no users left, report a changed action otherwise. Returns the
 * socket callback's answer (0 when it was not called).
 */
static int entry_update(struct xfer__mev *ev, struct xfer__mev_entry *e) {
  unsigned char want = entry_want(e);
  int rc = 0;

  if (xfer__list_empty(&e->users)) {
    assert(!want && !e->conns);
    /* Its answer is not looked at: nobody needs the socket any more, so
     * there is no transfer to fail, and nothing to ask again. */
    if (e->reported && ev->report)
      (void)report_entry(ev, e, XFER_POLL_REMOVE);
    entry_free(ev, e);
    return 0;
  }
  /* `reported` is what the application took: a refused change leaves it
   * (a socket it never took gets no REMOVE; one it watches keeps its
   * REMOVE), and the next update asks again. */
  if (want != e->reported && ev->report) {
    if (!(rc = report_entry(ev, e, want)))
      e->reported = want;
    else
      ev->refused_fd = e->fd;
  }
  return rc;
}

static void entry_count(struct xfer__mev_entry *e,
                        const struct xfer__mev_use *u, int sign) {
  if (u->want & XFER_POLL_IN)
    e->readers += (unsigned)sign;
  if (u->want & XFER_POLL_OUT)
    e->writers += (unsigned)sign;
  if (u->tracker->kind == XFER__MEV_CONN)
    e->conns += (unsigned)sign;
}

/* --- trackers (last pollsets) -------------------------------------------- */

static int tracker_find(const struct xfer__mev_tracker *t, int fd) {
  for (unsigned i = 0; i < t->count; i++)
    if (t->uses[i].fd == fd)
      return (int)i;
  return -1;
}

static struct xfer__mev_use *tracker_append(struct xfer__mev_tracker *t) {
  if (t->count == t->capacity) {
    unsigned capacity = t->capacity * 2;
    struct xfer__mev_use *uses;
    if (t->uses == t->inline_uses) {
      uses = xfer__malloc(capacity * sizeof(*uses));
      if (uses)
        memcpy(uses, t->inline_uses, t->count * sizeof(*uses));
    } else {
      uses = xfer__realloc(t->uses, capacity * sizeof(*uses));
    }
    if (!uses)
      return NULL;
    /* The list nodes moved: their neighbours point at the old copies. */
    for (unsigned i = 0; i < t->count; i++)
      xfer__list_relink(&uses[i].entry_node);
    t->uses = uses;
    t->capacity = capacity;
  }
  return &t->uses[t->count++];
}

/* Takes use i out of its entry's counts and list and out of the tracker
 * (the last use moves into its slot). Returns the entry, which the caller
 * brings up to date. */
static struct xfer__mev_entry *use_drop(struct xfer__mev_tracker *t,
                                        unsigned i) {
  struct xfer__mev_use *u = &t->uses[i];
  struct xfer__mev_entry *e = u->entry;

  entry_count(e, u, -1);
  xfer__list_remove(&u->entry_node);
  if (i != t->count - 1) {
    *u = t->uses[t->count - 1];
    xfer__list_relink(&u->entry_node);
  }
  t->count--;
  return e;
}

static void tracker_release(struct xfer__mev_tracker *t) {
  assert(t->count == 0);
  if (t->uses != t->inline_uses)
    xfer__free(t->uses);
  t->uses = t->inline_uses;
  t->capacity = XFER__MEV_INLINE_USES;
}

static int pollset_find(const struct xfer__pollset *ps, int fd) {
  for (unsigned i = 0; i < ps->count; i++)
    if (ps->fd[i] == fd)
      return (int)i;
  return -1;
}

/*
 * The diff. Old uses not in the new set are dropped, changed ones are
 * recounted, new ones are added; each touched entry is brought up to date
 * at once, so the application sees exactly the changes. Pollsets hold at
 * most XFER__POLLSET_MAX sockets, so the quadratic matching is cheap.
 */
static xfer_code assess_diff(struct xfer__mev *ev, struct xfer__mev_tracker *t,
                             const struct xfer__pollset *ps);

/* The common case first: the same one socket, wanted the same way (a
 * transfer tracked again after a run that changed nothing, or after its
 * connection's use was handed over to it). */
xfer_code xfer__mev_assess(struct xfer__mev *ev, struct xfer__mev_tracker *t,
                           const struct xfer__pollset *ps) {
  if (t->count == 1 && ps->count == 1 && t->uses[0].fd == ps->fd[0] &&
      t->uses[0].want == ps->want[0])
    return XFER_OK;
  return assess_diff(ev, t, ps);
}

__attribute__((noinline)) static xfer_code
assess_diff(struct xfer__mev *ev, struct xfer__mev_tracker *t,
            const struct xfer__pollset *ps) {
  xfer_code result = XFER_OK;

  for (unsigned i = t->count; i-- > 0;) {
    struct xfer__mev_use *u = &t->uses[i];
    int j = pollset_find(ps, u->fd);
    struct xfer__mev_entry *e;

    if (j < 0) {
      e = use_drop(t, i); /* moves a use from index > i into i: done ones */
    } else if (ps->want[j] != u->want) {
      e = u->entry;
      entry_count(e, u, -1);
      u->want = ps->want[j];
      entry_count(e, u, +1);
    } else {
      continue;
    }
    if (entry_update(ev, e))
      result = XFER_E_SOCKET_CALLBACK;
  }

  for (unsigned j = 0; j < ps->count; j++) {
    struct xfer__mev_entry *e;
    struct xfer__mev_use *u;

    if (tracker_find(t, ps->fd[j]) >= 0)
      continue;
    e = entry_get(ev, ps->fd[j]);
    u = e ? tracker_append(t) : NULL;
    if (!u) {
      if (e && xfer__list_empty(&e->users))
        entry_free(ev, e);
      return XFER_E_OUT_OF_MEMORY;
    }
    u->entry = e;
    u->tracker = t;
    u->fd = ps->fd[j];
    u->want = ps->want[j];
    xfer__list_insert_tail(&e->users, &u->entry_node);
    entry_count(e, u, +1);
    if (entry_update(ev, e))
      result = XFER_E_SOCKET_CALLBACK;
  }
  return result;
}

bool xfer__mev_hand_over(struct xfer__mev *ev, struct xfer__mev_tracker *from,
                         struct xfer__mev_tracker *to, int fd, unsigned want) {
  int i = tracker_find(from, fd);
  struct xfer__mev_use *u, *v;
  unsigned last;

  (void)ev;
  if (i < 0 || from->uses[i].want != want || tracker_find(to, fd) >= 0)
    return false;
  if (to->count < to->capacity) /* room: no call */
    v = &to->uses[to->count++];
  else if (!(v = tracker_append(to)))
    return false;
  u = &from->uses[i];
  *v = *u;
  v->tracker = to;
  xfer__list_relink(&v->entry_node); /* its neighbours point at v now */
  /* Readers and writers stay; only a connection's use counts apart. */
  if (from->kind != to->kind) {
    if (to->kind == XFER__MEV_CONN)
      v->entry->conns++;
    else
      v->entry->conns--;
  }
  last = from->count - 1;
  if ((unsigned)i != last) {
    *u = from->uses[last];
    xfer__list_relink(&u->entry_node);
  }
  from->count = last;
  return true;
}

void xfer__mev_tracker_done(struct xfer__mev *ev, struct xfer__mev_tracker *t) {
  while (t->count)
    entry_update(ev, use_drop(t, t->count - 1));
  tracker_release(t);
}

void xfer__mev_socket_done(struct xfer__mev *ev, int fd) {
  struct xfer__mev_entry *e = entry_find(ev, fd);
  struct xfer__list *pos, *tmp;

  if (!e)
    return;
  /* Each tracker has at most one use of fd, so dropping a use only moves
   * a use of another socket: the walk over this entry's list stays valid. */
  XFER__LIST_FOREACH_SAFE(pos, tmp, &e->users) {
    struct xfer__mev_use *u = XFER__CONTAINER_OF(pos, struct xfer__mev_use,
                                                 entry_node);
    struct xfer__mev_tracker *t = u->tracker;
    use_drop(t, (unsigned)(u - t->uses));
  }
  entry_update(ev, e); /* REMOVE (if reported) and free */
}

/* `due` only marks for running (the multi's does): it must not change
 * the tracking, so the walk needs no care. */
bool xfer__mev_expire_xfers(struct xfer__mev *ev, int fd) {
  struct xfer__mev_entry *e = entry_find(ev, fd);
  struct xfer__list *pos;

  if (!e)
    return false;
  for (pos = e->users.next; pos != &e->users; pos = pos->next) {
    struct xfer__mev_use *u = XFER__CONTAINER_OF(pos, struct xfer__mev_use,
                                                 entry_node);
    struct xfer__mev_tracker *t = u->tracker;
    if (t->kind == XFER__MEV_XFER && t->ops && t->ops->due)
      t->ops->due(t, fd);
  }
  return e->conns > 0;
}

/* A handler may change any tracking (even close fd), so after each call
 * the entry is looked up again; the round mark keeps each connection to
 * one call. */
void xfer__mev_dispatch_conns(struct xfer__mev *ev, int fd, int events) {
  uint64_t round = ++ev->dispatch_round;

  for (;;) {
    struct xfer__mev_entry *e = entry_find(ev, fd);
    struct xfer__mev_tracker *next = NULL;
    struct xfer__list *pos;

    if (!e || !e->conns)
      return;
    for (pos = e->users.next; pos != &e->users; pos = pos->next) {
      struct xfer__mev_use *u = XFER__CONTAINER_OF(pos, struct xfer__mev_use,
                                                   entry_node);
      if (u->tracker->kind == XFER__MEV_CONN &&
          u->tracker->dispatch_mark != round) {
        next = u->tracker;
        break;
      }
    }
    if (!next)
      return;
    next->dispatch_mark = round;
    if (next->ops && next->ops->event)
      next->ops->event(next, fd, events);
  }
}

void xfer__mev_set_report(struct xfer__mev *ev, xfer__mev_report_fn report,
                          void *owner) {
  struct xfer__list *pos;

  /* A replaced function knows nothing: not the sockets, nor the pointers
   * the old one assigned (it is told every socket anew, as new). */
  for (pos = ev->entries.next; pos != &ev->entries; pos = pos->next) {
    struct xfer__mev_entry *e = XFER__CONTAINER_OF(pos, struct xfer__mev_entry,
                                                   node);
    e->reported = 0;
    e->socketp = NULL;
  }
  ev->report = report;
  ev->report_owner = owner;
  ev->resync = report != NULL;
}

/* `refused` only marks for failing (the multi's and the resolver's do):
 * the walk needs no care. */
static void refuse_users(struct xfer__mev_entry *e) {
  struct xfer__list *pos;

  for (pos = e->users.next; pos != &e->users; pos = pos->next) {
    struct xfer__mev_use *u = XFER__CONTAINER_OF(pos, struct xfer__mev_use,
                                                 entry_node);
    struct xfer__mev_tracker *t = u->tracker;
    if (t->ops && t->ops->refused)
      t->ops->refused(t, e->fd);
  }
}

void xfer__mev_resync(struct xfer__mev *ev) {
  struct xfer__list *pos;

  if (!ev->resync)
    return;
  ev->resync = false;
  for (pos = ev->entries.next; pos != &ev->entries; pos = pos->next) {
    struct xfer__mev_entry *e = XFER__CONTAINER_OF(pos, struct xfer__mev_entry,
                                                   node);
    unsigned char want = entry_want(e);
    if (want == e->reported)
      continue;
    if (!report_entry(ev, e, want)) {
      e->reported = want;
    } else {
      /* Its transfers fail, and the resolver's lookups; a socket of
       * connections alone (the wake-up fd, an attached or closing
       * connection) is asked for again at the next call, rather than
       * taken for watched. */
      refuse_users(e);
      ev->resync = true;
    }
  }
}

void xfer__mev_cleanup(struct xfer__mev *ev) {
  xfer__mev_report_fn report = ev->report;
  void *owner = ev->report_owner;

  /* Whatever is still tracked goes the way of a closing socket: purged
   * from its owners' pollsets, REMOVE reported. */
  while (!xfer__list_empty(&ev->entries))
    xfer__mev_socket_done(
        ev,
        XFER__CONTAINER_OF(ev->entries.next, struct xfer__mev_entry, node)->fd);
  xfer__free(ev->by_fd);
  xfer__mev_init(ev);
  ev->report = report;
  ev->report_owner = owner;
}

xfer_mcode xfer__mev_assign(struct xfer__mev *ev, int fd, void *socketp) {
  struct xfer__mev_entry *e = entry_find(ev, fd);

  if (!e)
    return XFER_M_BAD_ARGUMENT;
  e->socketp = socketp;
  return XFER_M_OK;
}

bool xfer__mev_socket_info(const struct xfer__mev *ev, int fd,
                           struct xfer__mev_socket_info *out) {
  const struct xfer__mev_entry *e = entry_find(ev, fd);
  const struct xfer__list *pos;

  if (!e)
    return false;
  out->readers = e->readers;
  out->writers = e->writers;
  out->conns = e->conns;
  out->users = 0;
  for (pos = e->users.next; pos != &e->users; pos = pos->next)
    out->users++;
  out->want = entry_want(e);
  out->reported = e->reported;
  return true;
}

unsigned xfer__mev_reported(const struct xfer__mev *ev, int fd) {
  const struct xfer__mev_entry *e = entry_find(ev, fd);

  return e ? e->reported : 0;
}

size_t xfer__mev_pollfds(const struct xfer__mev *ev, struct pollfd *out,
                         size_t max) {
  const struct xfer__list *pos;
  size_t n = 0;

  for (pos = ev->entries.next; pos != &ev->entries && n < max;
       pos = pos->next) {
    const struct xfer__mev_entry *e =
        XFER__CONTAINER_OF(pos, const struct xfer__mev_entry, node);
    unsigned char want = entry_want(e);
    out[n].fd = e->fd;
    out[n].events = (short)(((want & XFER_POLL_IN) ? POLLIN : 0) |
                            ((want & XFER_POLL_OUT) ? POLLOUT : 0));
    out[n].revents = 0;
    n++;
  }
  return n;
}
