/*
 * xfer-load's command line: the flags as wrk, h2load and hey users expect
 * them (-c counts connections across all threads; times carry a unit),
 * checked before anything runs: a usage error is one line on stderr and
 * exit status 2.
 */
#ifndef XFER_LOAD_OPTIONS_H
#define XFER_LOAD_OPTIONS_H

#include <stdbool.h>

struct load_opts {
  int threads;          /* -t */
  int connections;      /* -c: in flight, across all threads */
  long requests;        /* -n; 0: by duration, or the URL list once */
  long duration_ms;     /* -d; 0: by count */
  long timeout_ms;      /* --timeout, per request */
  const char *method;   /* -X */
  const char *data;     /* --data */
  struct load_header {
    char *name;
    const char *value;
  } *headers; /* -H "Name: value" */
  int nheaders;
  const char *dns_servers;
  const char *urls_file; /* --urls */
  const char *out_dir;   /* -o, with --urls */
  bool per_thread_pool;
  bool json;
  char **urls; /* the URLs on the command line */
  int nurls;
};

/* Fills *o from argv; prints --help or --version and exits 0 for those,
 * and exits 2 with one line on stderr for a usage error. */
void load_parse_args(int argc, char **argv, struct load_opts *o);

/* The share of thread `i` of the connections: spread evenly, the first
 * threads taking one more when they do not divide. */
int load_connections_of(const struct load_opts *o, int i);

/* Exits 2 with "xfer-load: MESSAGE (xfer-load --help lists the options)". */
__attribute__((format(printf, 1, 2), noreturn)) void
load_usage_error(const char *fmt, ...);

#endif
