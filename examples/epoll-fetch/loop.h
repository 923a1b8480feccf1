/*
 * The event loop of the epoll examples: one epoll instance and one multi,
 * driven by one thread.
 */
#ifndef EPOLL_FETCH_LOOP_H
#define EPOLL_FETCH_LOOP_H

#include <stdbool.h>
#include <xfer/xfer.h>

struct loop {
  int ep;
  xfer_multi *m;
  long long deadline_ms; /* when the multi wants its timeout; -1: never */
};

/* An epoll instance and a multi on `pool` (NULL: a private pool), its
 * callbacks set. False when either could not be made. */
bool loop_init(struct loop *l, xfer_pool *pool);
/* Adds x, runs the loop until x is done, and returns its result; x stays
 * added (remove it to add it again). */
xfer_code loop_run(struct loop *l, xfer *x);
/* Destroys the multi (before its pool), then the epoll instance. */
void loop_free(struct loop *l);

#endif
