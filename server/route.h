/* route.h: what the HTTP front (http.c) and the features of pycached (cache.c, admin.c, warm.c)
 * agree on: a request as a handler sees it, a route (one row of the route table: method, path,
 * role, body limit, parameters, handler) and a feature (its routes, and what runs at open,
 * shutdown and close). http.c knows features only through these rows; main.c lists the features
 * (feature_list.h). docs/DESIGN.md, "Where things go", says how to add one. */
#ifndef PCC_ROUTE_H
#define PCC_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "answer.h"
#include "auth.h"
#include "config.h"
#include "core.h"
#include "proto.h"

#define PCC_ROUTE_ARGS_MAX 4 /* named query arguments of one route, besides the pcc_params */

typedef struct pcc_route pcc_route;

/* A request, as a handler sees it. Everything lives until the request completes, but the body
 * may go earlier: see release_body. */
typedef struct pcc_request {
  const pcc_route *route;
  pcc_params params;        /* parsed when the route declares parameters (else all zero) */
  const uint8_t *body;      /* NULL when empty */
  size_t body_len;
  /* Frees the body at once (body becomes NULL, body_len 0), for a handler that has copied what
   * it needs of it and will wait (a PENDING answer): the upload buffer does not stay allocated
   * while the request waits. NULL when the caller owns the body (tests). */
  void (*release_body)(struct pcc_request *req);
  const char *path_arg;     /* the part of the URL the pattern's '*' matched, or NULL */
  char ns[PCC_NAMESPACE_MAX + 1]; /* the caller's namespace ("" the default; auth.h) */
  const char *token;        /* the name of the caller's token ("" without one), for audit lines */
  const char *remote;       /* the caller's address ("127.0.0.1", "::1"; "-" when unknown) */
  bool accept_zstd;         /* the request's Accept-Encoding names zstd (not with q=0) */
  const char *args[PCC_ROUTE_ARGS_MAX]; /* values of route->args, NULL when absent */
  /* For a PENDING answer: suspend(ctx) before returning, resume(ctx) from any thread when the
   * answer can be finished. */
  void (*suspend)(void *ctx);
  void (*resume)(void *ctx);
  void *ctx;
} pcc_request;

/* Fills *answer (see answer.h). state is the feature's, from its open. */
typedef void (*pcc_handler)(void *state, pcc_request *req, pcc_answer *answer);

/* The body limit of a route: a pcc_config field (bytes), or none (no body is accepted). */
#define PCC_ROUTE_BODY(field) (offsetof(pcc_config, field) + 1)
#define PCC_ROUTE_NO_BODY 0

/* One row of the route table. */
struct pcc_route {
  const char *method;       /* "GET", "POST", "DELETE" */
  const char *path;         /* exact, or with one "*" standing for a non-empty segment */
  unsigned role;            /* the pcc_roles that may (any one of them); 0: open to all.
                               Routes open to all and those admin may are also served when
                               the server is at --max-connections (from its reserve; http.c,
                               reserve_route) */
  size_t body;              /* PCC_ROUTE_BODY(field) or PCC_ROUTE_NO_BODY */
  bool params;              /* parse the pcc_params of the query (400 when malformed) */
  unsigned required;        /* PCC_PARAM_* bits that must be present */
  const char *args[PCC_ROUTE_ARGS_MAX]; /* other query arguments the handler reads */
  pcc_handler handler;
  const char *summary;      /* one line, for docs and errors */
};

/* The value of a named argument of the route (one of route->args), or NULL. */
static inline const char *pcc_request_arg(const pcc_request *req, const char *name)
{
  for (size_t i = 0; i < PCC_ROUTE_ARGS_MAX && req->route->args[i] != NULL; i++)
    if (strcmp(req->route->args[i], name) == 0)
      return req->args[i];
  return NULL;
}

/* A feature: its routes and its life cycle. open returns 0 and sets *state, or -1 after printing
 * why; shutdown (may be NULL) stops work in progress before the HTTP front drains; close frees
 * (state NULL is fine). Features never call each other: what they share is in the core. */
typedef struct {
  const char *name;
  const pcc_route *routes;
  size_t n_routes;
  int (*open)(pcc_core *core, void **state);
  void (*shutdown)(void *state);
  void (*close)(void *state);
} pcc_feature;

#endif
