/*
 * A tiny authoritative DNS responder for tests, so that the resolver under
 * test (c-ares) is pointed at it and never at the system's resolver.
 *
 * It listens on 127.0.0.1 only, UDP and TCP on the same ephemeral port, and
 * runs one thread of its own. It answers A and AAAA from a table the test
 * fills; everything else about DNS is left out on purpose.
 *
 * Answers:
 *   - known name (it has A or AAAA records): NOERROR, the records of the
 *     asked type (none for other types: NODATA);
 *   - unknown name: NXDOMAIN;
 *   - QCLASS other than IN: REFUSED;
 *   - always QR, AA and RA set, ID and RD copied, the question echoed;
 *   - over UDP an answer larger than 512 bytes is cut to the question with
 *     TC set, so the client retries over TCP, where it is sent in full.
 * Malformed packets, responses and opcodes other than QUERY are dropped.
 *
 * Counting: a query counts once it has parsed (header and first question);
 * dropped garbage counts nowhere. Silent names count too.
 *
 * Names are case-insensitive; one trailing dot is accepted and ignored.
 * Functions that return int give 0 on success, -1 with errno on failure
 * (EINVAL: bad argument, ENOMEM, ENOSPC: too many records for a name).
 */
#ifndef XFER_TESTS_DNSSERVER_H
#define XFER_TESTS_DNSSERVER_H

#include <stdio.h>

struct ds_server;

/* Starts the server and its thread. log: where to write one line per query
 * and per dropped packet (NULL: quiet). NULL on failure, errno set. */
struct ds_server *ds_start(FILE *log);

/* The port of both the UDP and the TCP socket on 127.0.0.1. */
int ds_port(const struct ds_server *s);

/* Records; thread-safe, may be called while the server runs. Each call adds
 * one record (a name may have several of each type). */
int ds_add_a(struct ds_server *s, const char *name, const char *ipv4,
             unsigned ttl);
int ds_add_aaaa(struct ds_server *s, const char *name, const char *ipv6,
                unsigned ttl);

/* A name whose queries are read, counted and never answered: for resolver
 * timeout tests. */
int ds_add_silent(struct ds_server *s, const char *name);

/* Delays every answer for name by ms (0: none). Applies to NXDOMAIN too, so
 * a name needs no records to be delayed. */
int ds_set_delay(struct ds_server *s, const char *name, int ms);

/* Queries that arrived for name (any type, any transport), and in total.
 * -1 with errno EINVAL for a bad argument. */
long ds_queries(struct ds_server *s, const char *name);
long ds_queries_total(struct ds_server *s);

/* Wakes the thread, joins it and frees everything, answers still waiting
 * for their delay included. NULL is a no-op. */
void ds_stop(struct ds_server *s);

#endif
