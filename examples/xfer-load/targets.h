/*
 * What xfer-load fetches: the URLs of the command line (a load, round
 * robin) or of a --urls file (a fetch, each line once; the bad lines kept
 * aside with the reason libxfer gives, for the report). Built by the main
 * thread before the workers start; read-only afterwards.
 */
#ifndef XFER_LOAD_TARGETS_H
#define XFER_LOAD_TARGETS_H

#include <stdbool.h>
#include <stddef.h>

struct target {
  char *url;
  int line; /* in the --urls file; 0 on the command line */
};

struct bad_line {
  int line;
  char *text, *detail;
};

struct target_list {
  struct target *items;
  long n;
  struct bad_line *bad;
  int nbad;
};

/* Does libxfer take this URL? Its reason in detail when not. */
bool target_url_ok(const char *url, char *detail, size_t len);

/* Appends a URL already checked; exits 1 when out of memory. */
void target_add(struct target_list *l, const char *url, int line);

/* Reads a --urls file: one URL a line, blank lines and '#' comments
 * skipped, bad lines kept in l->bad. Exits 2 when it cannot be read. */
void target_read_file(struct target_list *l, const char *path);

void target_list_free(struct target_list *l);

#endif
