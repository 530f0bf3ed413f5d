/* http.h: the HTTP front of pycached on libmicrohttpd (poll thread pool). It knows no feature
 * by name: it serves the routes it is given (route.h), checks each row's role, enforces its body
 * limit, parses its parameters, suspends and resumes pending answers and encodes answers. */
#ifndef PCC_HTTP_H
#define PCC_HTTP_H

#include <stdint.h>

#include "auth.h"
#include "config.h"
#include "counters.h"
#include "pcc_log.h"
#include "route.h"
#include "tls.h"

typedef struct pcc_http pcc_http;

/* The routes of one feature and the state its handlers get. */
typedef struct {
  const pcc_route *routes;
  size_t n_routes;
  void *state;
} pcc_http_mount;

/* Starts serving config->listen:config->port and/or the unix socket config->listen_path with
 * the routes of mounts (n of them; copied). Each request is counted in counters' totals and,
 * with an access_log (NULL: none), written there as one line when it completes. The states, counters, auth (NULL: no access control),
 * tls (NULL: plain HTTP; tls.h) and access_log must outlive the daemon. Returns 0 and sets *out,
 * or -1 after logging why. */
int pcc_http_start(const pcc_config *config, const pcc_http_mount *mounts, size_t n,
                   pcc_counters *counters, pcc_auth *auth, const pcc_tls *tls,
                   pcc_log *access_log, pcc_http **out);

/* The TCP port actually bound (useful with --port 0); 0 with a unix socket only. */
uint16_t pcc_http_port(const pcc_http *http);

/* Stops accepting new connections; requests in progress go on. */
void pcc_http_quiesce(pcc_http *http);

/* Waits until no request is in progress (idle keep-alive connections do not count), at most
 * timeout_ms. Returns the number of requests still in progress. */
unsigned pcc_http_drain(pcc_http *http, unsigned timeout_ms);

/* Stops the daemon and frees it. NULL is fine. */
void pcc_http_stop(pcc_http *http);

/* The HTTP status of an error code (docs/API.md). */
unsigned pcc_http_status(pcc_error_code code);

/* Does path match a route's pattern (exact, or one '*' standing for a non-empty segment)? On a
 * match with a '*', *arg_start and *arg_len (may be NULL) get the matched segment. */
bool pcc_http_path_matches(const char *pattern, const char *path, size_t *arg_start,
                           size_t *arg_len);

#endif
