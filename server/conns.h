/* conns.h: the connection table of pycached's HTTP front (http.c): every open connection with
 * the phase its current request is in and the deadline of that phase, so that a client that
 * drips its headers or its body is cut off however often it sends a byte; which connections
 * are the reserve (accepted past --max-connections: served only for /healthz and admin, then
 * closed); and the kept-alive idle connections, closed longest-idle first when the server is at
 * its limit. It knows sockets, not libmicrohttpd: cutting a connection is shutdown(2) on its
 * descriptor, after which libmicrohttpd reads the end of the stream and closes it.
 * docs/DESIGN.md, "Limits", and docs/OPERATIONS.md, "Connections", say what the limits are for. */
#ifndef PCC_CONNS_H
#define PCC_CONNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct pcc_conns pcc_conns;
typedef struct pcc_conn pcc_conn;

typedef enum {
  PCC_CONNS_OK = 0,
  PCC_CONNS_NOMEM,
  PCC_CONNS_THREAD, /* the sweeper thread could not start */
} pcc_conns_status;

const char *pcc_conns_strerror(pcc_conns_status rc);

/* Where a connection's current request is; each phase but ANSWERING has a deadline. */
typedef enum {
  PCC_CONN_HEADERS,   /* from accept, or from the request line of a kept-alive connection, until
                         the headers are complete: header_ms */
  PCC_CONN_BODY,      /* from the headers until the body is complete: body_ms */
  PCC_CONN_ANSWERING, /* the handler runs, waits (a compile) or the answer is sent: no deadline
                         here (libmicrohttpd's idle timeout, the compile timeout) */
  PCC_CONN_IDLE,      /* kept alive after an answer, until the next request line: idle_ms */
} pcc_conn_phase;

typedef struct {
  uint64_t max;        /* connections served normally (--max-connections) */
  uint64_t reserve;    /* connections past max, for the reserve routes only */
  uint64_t header_ms;  /* the HEADERS deadline (--header-timeout) */
  uint64_t body_ms;    /* the BODY deadline (--body-timeout) */
  uint64_t idle_ms;    /* the IDLE deadline (--idle-timeout) */
  uint64_t reserve_ms; /* every deadline of a reserve connection, at most */
  uint64_t tick_ms;    /* the sweeper runs this often; 0: no thread (call pcc_conns_sweep) */
  uint64_t per_ip;     /* connections from one address (pcc_conns_take); 0: no limit */
} pcc_conns_limits;

/* What the table has done, since it was opened. */
typedef struct {
  uint64_t open;     /* connections now in the table */
  uint64_t reserved; /* connections accepted into the reserve */
  uint64_t cut;      /* connections shut down past a deadline */
  uint64_t evicted;  /* idle connections shut down to make room for a new one */
} pcc_conns_counts;

/* Opens a table; with limits->tick_ms > 0 it starts the sweeper thread. On PCC_CONNS_OK *out
 * is the caller's (pcc_conns_close). */
pcc_conns_status pcc_conns_open(const pcc_conns_limits *limits, pcc_conns **out);

/* Stops the sweeper and frees the table with every connection still in it (their descriptors
 * are not touched). NULL is fine. */
void pcc_conns_close(pcc_conns *conns);

/* Milliseconds of CLOCK_MONOTONIC, the clock of every `now_ms` below. */
uint64_t pcc_conns_now_ms(void);

/* May one more connection be accepted (fewer than max + reserve are open)? Lock-free. */
bool pcc_conns_admit(const pcc_conns *conns);

/* Adds the connection on descriptor fd, in the HEADERS phase. Past max connections it shuts
 * down the connection idle the longest (never a reserve one, which closes after its answer) and
 * takes its place; when none is idle the new one is a reserve connection. Returns the entry (owned by the table until pcc_conns_remove), or NULL
 * without memory. fd must stay open until pcc_conns_remove: the sweeper may shut it down. */
pcc_conn *pcc_conns_add(pcc_conns *conns, int fd, uint64_t now_ms);

/* As pcc_conns_add, for a connection just accepted on fd from addr, before libmicrohttpd has
 * it: NULL (the caller closes fd) when max + reserve are open, or per_ip from that address, or
 * without memory. The entry counts from now; pcc_conns_start marks it libmicrohttpd's, and one
 * not started within PCC_CONN_START_MS is dropped by the sweeper (its descriptor untouched, and
 * never shut down before it starts). */
pcc_conn *pcc_conns_take(pcc_conns *conns, int fd, const struct sockaddr *addr,
                         socklen_t addrlen, uint64_t now_ms);

/* The taken entry of fd, now started (libmicrohttpd's "started" notification), or NULL. */
pcc_conn *pcc_conns_start(pcc_conns *conns, int fd);

/* Removes and frees a connection's entry; call it before its descriptor is closed. NULL is
 * fine. */
void pcc_conns_remove(pcc_conns *conns, pcc_conn *conn);

/* Moves a connection into phase and sets that phase's deadline from now_ms. Entering HEADERS
 * when already in HEADERS keeps the deadline (the request line of a fresh connection does not
 * extend the time from its accept). NULL conn is ignored. */
void pcc_conns_enter(pcc_conns *conns, pcc_conn *conn, pcc_conn_phase phase, uint64_t now_ms);

/* Was the connection accepted into the reserve? NULL: false. */
bool pcc_conns_reserved(const pcc_conn *conn);

/* Mutual TLS (http.c): has the connection's client certificate been verified? Set once the
 * first request's has, so that a kept-alive connection's later requests are not verified again
 * (its peer certificate cannot change: libmicrohttpd never renegotiates). Only the thread that
 * serves the connection calls them. NULL: false, and ignored. */
bool pcc_conns_certified(const pcc_conn *conn);
void pcc_conns_set_certified(pcc_conn *conn);

/* Shuts down every connection past its deadline; returns how many. The sweeper thread calls
 * it every tick_ms. */
size_t pcc_conns_sweep(pcc_conns *conns, uint64_t now_ms);

/* The counts, at this moment. */
pcc_conns_counts pcc_conns_counts_now(pcc_conns *conns);

#endif
