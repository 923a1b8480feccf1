/*
 * Is a finished transfer's timeline complete and ordered (queue <=
 * namelookup <= connect <= appconnect <= pretransfer <= starttransfer <=
 * total, brief rule 2)? For the plain programs that check every transfer
 * they run (the threaded test, the soak, the benchmark client); Criterion
 * suites use th_expect_timeline_ordered().
 */
#ifndef XFER_TIMELINE_CHECK_H
#define XFER_TIMELINE_CHECK_H

#include <stdbool.h>
#include <stdint.h>
#include <xfer/xfer.h>

static inline bool timeline_ordered(const xfer *x) {
  xfer_timeline t;
  int64_t v[7];

  if (xfer_get_timeline(x, &t) != XFER_OK)
    return false;
  v[0] = t.queue_us, v[1] = t.namelookup_us, v[2] = t.connect_us;
  v[3] = t.appconnect_us, v[4] = t.pretransfer_us;
  v[5] = t.starttransfer_us, v[6] = t.total_us;
  for (int i = 0; i < 7; i++)
    if (v[i] < 0 || (i && v[i] < v[i - 1]))
      return false;
  return true;
}

#endif /* XFER_TIMELINE_CHECK_H */
