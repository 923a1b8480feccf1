/*
 * A scripted HTTP/1.1 server for tests: the request path says how to answer,
 * so a test picks a behaviour (sizes, framing, delays, broken responses) by
 * the URL it fetches and needs no set-up calls.
 *
 * It listens on 127.0.0.1 only, on an ephemeral port, and runs one thread of
 * its own around epoll with non-blocking sockets. It keeps no global state,
 * never exits or aborts and prints nothing except to cfg->log, so it can be
 * linked into a load tool as well. Requests on a keep-alive connection,
 * pipelined ones included, are answered one at a time and in order.
 *
 * Bodies are the pattern of ts_fill_pattern(); N, K, M, MS and CODE are
 * decimal. All responses are HTTP/1.1.
 *   /bytes/N               200, Content-Length: N.
 *   /chunked/N/K           200, chunked, N bytes in chunks of K; with the
 *                          query "?trailer" the last chunk carries the
 *                          trailer "X-Trailer: yes".
 *   /close-delimited/N     200, "Connection: close", no length, N bytes,
 *                          then close.
 *   /status/CODE           CODE 200..599; no body; Content-Length: 0 except
 *                          for 204 and 304, which have none.
 *   /redirect/CODE?to=LOC  CODE 300..399, "Location: LOC" with LOC exactly
 *                          as given (all of the query after "to="),
 *                          Content-Length: 0.
 *   /redirect/CODE/N?to=LOC  the same with a body of N pattern bytes (as
 *                          nginx's redirects carry a small HTML page).
 *   /delay/MS/REST         waits MS ms (at most 600000), then answers as
 *                          /REST would.
 *   /echo                  200, text/plain: "METHOD TARGET\n", one
 *                          "name: value\n" line per request header as
 *                          received, "\n", then the request body verbatim.
 *                          TARGET is the whole request target, so through
 *                          /delay it is the /delay/... one.
 *   /partial/N/M           Content-Length: N, only M < N bytes, then close.
 *   /too-long/N/M          Content-Length: N, M > N bytes in the same
 *                          write; the connection stays open.
 *   /malformed/status      "HTTP/1.1 2x0 Bad\r\n\r\n", then close.
 *   /malformed/header      a 200 status line, "Bad header line\r\n", "\r\n",
 *                          then close (nothing else delimits it).
 *   /big-headers/N         200, one "X-Big:" header of N 'a' (N <= 16 MiB).
 *   /many-headers/N        200, headers X-H0..X-H<N-1>: v (N <= 100000).
 *   /headers?N=V&N2=V2     200, Content-Length: 0, and each header N: V as
 *                          given (names of letters, digits and '-';
 *                          values printable, without space or '&').
 *   /chunk-overflow        chunked, first chunk size "ffffffffffffffffff",
 *                          then close.
 *   /1xx/N                 "100 Continue" and "103 Early Hints" with
 *                          "Link: </a>", then as /bytes/N.
 *   /drip/N/MS             200, Content-Length: N, one byte every MS ms.
 *   /never                 reads the request and never answers; later
 *                          requests on that connection are not read either.
 *   /rst/N                 Content-Length: 2N, N bytes, then a TCP reset
 *                          (once the N bytes have left the send queue, or
 *                          after about a second).
 *   /close-now             closes without a response.
 *   /close-once/ID/REST    ID 0..63: the first request with this ID is
 *                          closed without a response (as the request
 *                          arrives); later ones are answered as /REST.
 *   /stray-first/REST      on a reused connection, "STRAY" (no response)
 *                          before the answer to /REST; on a new one, the
 *                          answer alone.
 *   /gather/N/REST         N 1..64: held until N /gather requests are
 *                          held at once (this one included), then each
 *                          answered as its /REST: N transfers in flight
 *                          together, whatever the machine's speed.
 *   /close-silently/REST   answered as /REST without "Connection: close"
 *                          (even to a request that said it), then
 *                          closed.
 *   /early/CODE            CODE 200..599, Content-Length: 0 and
 *                          "Connection: close", sent as soon as the
 *                          request's head is parsed, before its body: the
 *                          server answers first. The rest of the request is
 *                          never parsed; the connection reads on until 1 MiB
 *                          waits unparsed, then stops reading, and stays
 *                          open until the peer closes.
 *   /early/CODE?close      the same, then closed at once (with the request's
 *                          body unread, the close sends a reset).
 *   /early/CODE?drain      the same, but what follows is read and dropped,
 *                          without end (as nginx drains a refused body);
 *                          the connection stays open until the peer
 *                          closes.
 *   /close-at-head         closes, without a response, as soon as the
 *                          request's head is parsed (a body not read yet
 *                          makes the close a reset).
 *   /early-head/N          "200, Content-Length: N" sent as soon as the
 *                          request's head is parsed (after the 100
 *                          Continue an Expect asks for); then nothing is
 *                          read for 200 ms (a client sending a large body
 *                          has to wait, with the head to read); the N body
 *                          bytes once the whole request is read. The head
 *                          never says "Connection: close".
 *   anything else          404, Content-Length: 0 (bad numbers too).
 * HEAD gets the same status line and headers without body bytes; what
 * follows the body (close, reset, keep-alive) is unchanged.
 *
 * Connections: a response is sent after the whole request body has been
 * read. "Connection: close" in the request (or HTTP/1.0 without keep-alive)
 * gets "Connection: close" and a close after the response, as does the
 * max_requests_per_conn-th response. A request that llhttp rejects gets 400
 * and a close. "Expect: 100-continue" on a request with a body gets an
 * interim "100 Continue" first. The server closes as soon as the peer
 * closes (reads EOF), even with a response in progress.
 *
 * Stats: accepted counts accepted sockets; requests counts requests parsed
 * in full (bad ones not); open_conns is the connections open now;
 * bytes_in counts every byte read from clients; closed counts every
 * connection closed, for any reason (counted after the close, so once it
 * reaches a number of connections, their bytes are all in bytes_in);
 * closed_by_server counts closes the script, Connection: close,
 * max_requests_per_conn, idle_close_ms or a bad request asked for (not peer
 * closes, errors, or ts_stop()).
 */
#ifndef XFER_TESTS_TESTSERVER_H
#define XFER_TESTS_TESTSERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct ts_config {
  int max_requests_per_conn; /* 0 = unlimited; else "Connection: close" on
                                the Nth response and close after it */
  int idle_close_ms;         /* 0 = never; else close a keep-alive
                                connection idle this long between
                                requests: answered at least once, not
                                answering, nothing left to send, no part
                                of a request received (as nginx's
                                keepalive_timeout; fresh connections and
                                requests still arriving are not closed) */
  bool announce_idle_close;  /* say "Keep-Alive: timeout=N" in every
                                keep-alive response, N = idle_close_ms
                                in whole seconds (when at least 1) */
  int listen_backlog;        /* 0 = default 1024 */
  int port;                  /* 0 = any free one; else this one (a server
                                that comes back on the port of one that
                                was stopped) */
  FILE *log;                 /* NULL = quiet; else a line per event */
};

struct ts_stats {
  long accepted;
  long requests;
  long open_conns;
  long closed_by_server;
  long bytes_in; /* every byte read from clients */
  long closed;   /* connections closed, any reason */
};

struct ts_server;

/* Binds 127.0.0.1:0 and starts the thread. cfg may be NULL (all defaults);
 * it is copied. Raises the RLIMIT_NOFILE soft limit towards the hard one
 * when it is too low for a few thousand connections. NULL on failure,
 * errno set (EINVAL for a negative field). */
struct ts_server *ts_start(const struct ts_config *cfg);

/* The bound port on 127.0.0.1. */
int ts_port(const struct ts_server *s);

/* Each counter is read atomically, though not all at one instant; callable
 * from any thread. */
void ts_get_stats(struct ts_server *s, struct ts_stats *out);

/* Waits until a counter reaches at_least (an event of the server, not a
 * time: "the server has closed its second connection"), at most
 * timeout_ms. true when it did. Any thread. */
enum ts_stat {
  TS_ACCEPTED,
  TS_REQUESTS,
  TS_OPEN_CONNS,
  TS_CLOSED_BY_SERVER,
  TS_BYTES_IN,
  TS_CLOSED
};
bool ts_wait(struct ts_server *s, enum ts_stat which, long at_least,
             int timeout_ms);

/* A blocking GET of target from the calling thread on a connection of
 * its own, read to its end (5 s at most): a test's own request, to
 * complete a /gather group. true when an answer came. */
bool ts_fetch(const struct ts_server *s, const char *target);

/* Closes every keep-alive connection that is between requests (answered
 * at least once, nothing being answered, sent or received), as the idle
 * timer would, but now: a test makes a pooled connection dead by an
 * event, not by a time. Returns at once; ts_wait(TS_CLOSED_BY_SERVER)
 * says when they are closed. Any thread. */
void ts_close_idle(struct ts_server *s);

/* Wakes the thread, joins it, closes every socket (open connections
 * included) and frees everything. NULL is a no-op. */
void ts_stop(struct ts_server *s);

/* Writes len bytes of the body pattern starting at body offset `offset`:
 * byte i of every body is "0123456789abcdefghijklmnopqrstuvwxyz"[i % 36]. */
void ts_fill_pattern(char *buf, size_t offset, size_t len);

#endif
