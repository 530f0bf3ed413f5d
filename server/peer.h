/* peer.h: one remote server a tier of pycached asks (shared.c's Redis servers, upstream.c's
 * upstreams): its breaker and its pool of idle connections, both under one mutex.
 *
 * The breaker: a failure (pcc_peer_failed) marks the peer down for a backoff that starts at the
 * tier's minimum and doubles, up to its maximum, at each failure in a row; while it runs, callers
 * skip the peer without a syscall (pcc_peer_take says no, and counts it skipped); once it has run,
 * one caller probes the peer while the others keep skipping it; an answer (pcc_peer_give) marks it
 * up and resets the backoff. Connections are the tier's own (a redisContext, a pcc_client):
 * pcc_peer_give keeps at most idle_max of them, closing the others with the tier's close
 * function. */
#ifndef PCC_PEER_H
#define PCC_PEER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#define PCC_PEER_IDLE_SLOTS 8 /* the most idle_max a tier may ask for */

typedef struct {
  pthread_mutex_t lock; /* guards the fields up to down_until_ms */
  void *idle[PCC_PEER_IDLE_SLOTS];
  unsigned n_idle;
  bool down, probing;     /* probing: a caller tries the down peer now */
  unsigned backoff_ms;    /* the last backoff; 0 when up */
  int64_t down_until_ms;  /* monotonic: skipped until then */
  unsigned idle_max, backoff_min_ms, backoff_max_ms;
  void (*close_conn)(void *conn);
  atomic_uint_fast64_t failures, skipped;
} pcc_peer;

/* Milliseconds of CLOCK_MONOTONIC. */
int64_t pcc_peer_now_ms(void);

/* Sets peer up (up, no connection), for a tier that keeps at most idle_max (<=
 * PCC_PEER_IDLE_SLOTS) idle connections and closes one with close_conn. */
void pcc_peer_init(pcc_peer *peer, unsigned idle_max, unsigned backoff_min_ms,
                   unsigned backoff_max_ms, void (*close_conn)(void *conn));
/* Closes the idle connections and the mutex of a peer pcc_peer_init set. */
void pcc_peer_destroy(pcc_peer *peer);

/* May the caller use peer now? false while it is down and its backoff runs or another caller
 * probes it (counted in skipped). true: *conn is an idle connection (not when fresh), else NULL
 * for the caller to open one; when the peer was down, this caller is its probe and must end with
 * pcc_peer_give or pcc_peer_failed. */
bool pcc_peer_take(pcc_peer *peer, bool fresh, void **conn);

/* The peer answered as it should through conn (NULL: none to keep): it is up, and conn goes
 * back to the pool or, the pool full, is closed. Returns whether the peer was down. */
bool pcc_peer_give(pcc_peer *peer, void *conn);

/* The peer failed (conn, NULL or the connection that failed, is closed; with drop_idle the idle
 * ones too, likely as dead): counted, and down for the next backoff, written to *backoff_ms.
 * Returns whether it was up before (to log once). */
bool pcc_peer_failed(pcc_peer *peer, void *conn, bool drop_idle, unsigned *backoff_ms);

/* Is peer up (not down)? */
bool pcc_peer_up(pcc_peer *peer);

/* Appends {name_key: name, "up", "failures", "skipped"} of peer to the JSON array. */
void pcc_peer_json(pcc_peer *peer, cJSON *array, const char *name_key, const char *name);

#endif /* PCC_PEER_H */
