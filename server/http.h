/* http.h: the HTTP front of pycached on libmicrohttpd (epoll thread pool): routes, request
 * bodies with hard limits, JSON errors, suspend/resume of requests waiting for a compile. */
#ifndef PCC_HTTP_H
#define PCC_HTTP_H

#include <stdint.h>

#include "auth.h"
#include "config.h"
#include "service.h"

typedef struct pcc_http pcc_http;

/* Starts serving config->listen:config->port. service and auth (NULL: no access control) must
 * outlive the daemon. Returns 0 and sets *out, or -1 after printing why to stderr. */
int pcc_http_start(const pcc_config *config, pcc_service *service, pcc_auth *auth,
                   pcc_http **out);

/* The port actually bound (useful with --port 0). */
uint16_t pcc_http_port(const pcc_http *http);

/* Stops accepting new connections; requests in progress go on. */
void pcc_http_quiesce(pcc_http *http);

/* Waits until no request is in progress (idle keep-alive connections do not count), at most
 * timeout_ms. Returns the number of requests still in progress. */
unsigned pcc_http_drain(pcc_http *http, unsigned timeout_ms);

/* Stops the daemon and frees it. NULL is fine. */
void pcc_http_stop(pcc_http *http);

#endif
