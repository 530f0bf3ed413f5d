/* service.h: the cache logic of pycached, apart from HTTP: lookups against the store, compiles
 * through the compiler pool with "parse once" (one compile per (magic, opt, digest) however many
 * requests ask at once), counters. server/http.c turns its answers into responses.
 */
#ifndef PCC_SERVICE_H
#define PCC_SERVICE_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "compiler.h"
#include "config.h"
#include "proto.h"
#include "store.h"

typedef struct pcc_service pcc_service;
typedef struct svc_job svc_job;

typedef enum {
  PCC_SERVICE_OK = 0,
  PCC_SERVICE_STORE,    /* the store could not be opened */
  PCC_SERVICE_COMPILER, /* the compiler pool could not be started */
  PCC_SERVICE_CONFIG,   /* a bad configuration value (source root, worker path) */
  PCC_SERVICE_NOMEM,
} pcc_service_status;

const char *pcc_service_strerror(pcc_service_status rc);

/* Opens the store and starts the compiler pool and its dispatch threads. *out owns them. */
pcc_service_status pcc_service_open(const pcc_config *config, pcc_service **out);

/* Stops dispatching (queued and running compiles end as 503, their waiters are resumed), stops
 * the workers and closes the store. NULL is fine. Call after the HTTP daemon stops accepting
 * and before it is stopped, so that suspended requests get their answer. */
void pcc_service_shutdown(pcc_service *service);
void pcc_service_close(pcc_service *service);

/* What a request gets: a served entry (error == NULL) or an error. */
typedef struct {
  unsigned http_status;
  const char *error;      /* NULL on success; else the API error code ("miss", ...) */
  char message[512];
  cJSON *extra;           /* owned: more fields of the error body, or NULL */
  cJSON *json;            /* owned: on success, a JSON body to send (admin answers) */
  uint8_t *raw;           /* on success, a binary body to send (bundles): owned (free()), or
                             shared when raw_release is set ... */
  size_t raw_len;
  const char *raw_type;   /* ... its content type ... */
  void (*raw_release)(void *ctx); /* ... and, for shared bytes, what releases them */
  void *raw_ctx;
  unsigned raw_entries;   /* bundles: entries in it */
  pcc_blob *blob;         /* owned: the code on success */
  pcc_digest digest;      /* on success: digest of the source the code was compiled from */
  const char *compiler;   /* on success */
  const char *outcome;    /* on success: "hit", "stored", "compiled" or "joined" */
  bool hash_checked;
} svc_answer;

/* The entry a successful lookup or compile answers: the pyc (16-byte header for the request's
 * mtime and size, then the code) is returned, to be freed by the caller, and view points into
 * it, params and answer. NULL when out of memory. */
uint8_t *svc_entry_view(const pcc_params *params, const svc_answer *answer,
                        pcc_entry_view *view);

/* Frees what an answer owns and clears it. */
void svc_answer_clear(svc_answer *answer);

/* GET /v1/code with parsed params (magic, path, mtime, size required). */
void svc_lookup(pcc_service *service, const pcc_params *params, svc_answer *answer);

/* POST /v1/compile, step 1. source is the body (len bytes), or NULL when the body was empty and
 * the server should read params->path itself. Once the source is known, params gets its size,
 * hash and digest (so that the answer describes the source that was compiled). Returns true when *answer is final. Returns false
 * when the compile is queued or already running: then suspend(ctx) has been called, resume(ctx)
 * will be called (from another thread) when the job is done, and *job_out must be handed to
 * svc_compile_finish once the request runs again. */
bool svc_compile_begin(pcc_service *service, pcc_params *params, const uint8_t *source,
                       size_t len, void (*suspend)(void *), void (*resume)(void *), void *ctx,
                       svc_job **job_out, svc_answer *answer);

/* POST /v1/compile, step 2: the answer of a finished job; releases the request's hold on it.
 * ctx is the one given to svc_compile_begin: the request that queued the job answers
 * "compiled", the others "joined". */
void svc_compile_finish(pcc_service *service, svc_job *job, const void *ctx,
                        const pcc_params *params, svc_answer *answer);

/* Releases a job whose request went away before it finished (connection closed). */
void svc_job_release(pcc_service *service, svc_job *job);

/* Counts one request (every HTTP request, answered or not). */
void svc_count_request(pcc_service *service);

/* The figures of GET /v1/stats. Caller owns the result. */
cJSON *svc_stats(pcc_service *service);

/* ---- admin API (admin.c; docs/API.md "Admin API") ------------------------------------------
 * Each fills *answer: answer->json (status 200) or an error. */

/* Query of the admin endpoints: magic, opt, path (parsed with pcc_params_parse) and prefix,
 * cursor, limit. Values point into the request and live as long as it does. */
typedef struct {
  pcc_params params;
  const char *prefix;
  const char *cursor;
  const char *limit;
} svc_admin_query;

void svc_admin_stats(pcc_service *service, svc_answer *answer);
void svc_admin_entries(pcc_service *service, const svc_admin_query *query, svc_answer *answer);
void svc_admin_entry(pcc_service *service, const svc_admin_query *query, bool delete_it,
                     svc_answer *answer);
void svc_admin_invalidate(pcc_service *service, const svc_admin_query *query,
                          svc_answer *answer);
void svc_admin_purge(pcc_service *service, svc_answer *answer);
void svc_admin_magics(pcc_service *service, svc_answer *answer);
void svc_admin_retire(pcc_service *service, const char *magic_hex, svc_answer *answer);
void svc_admin_backup(pcc_service *service, svc_answer *answer);

/* ---- warm start (warm.c; docs/API.md "Warm start") ------------------------------------------ */

/* POST /v1/profile: merges the JSON body {"paths": [...]} into profile `name`. */
void svc_profile_record(pcc_service *service, const pcc_params *params, const char *name,
                        const uint8_t *body, size_t len, svc_answer *answer);

/* GET /v1/bundle: every valid stored pyc of profile `name`, binary (answer->raw) or, with
 * json, as JSON (answer->json). */
void svc_bundle(pcc_service *service, const pcc_params *params, const char *name, bool json,
                svc_answer *answer);

/* POST /v1/report: the JSON body {"fallbacks": {"reason": count, ...}} a client sends at exit,
 * added to the counters of params->magic. */
void svc_report(pcc_service *service, const pcc_params *params, const uint8_t *body, size_t len,
                svc_answer *answer);

/* POST /v1/batch: the JSON body {"lookups": [...]} answered one by one as /v1/code would. */
void svc_batch(pcc_service *service, const uint8_t *body, size_t len, svc_answer *answer);

/* Writes a compacted copy of the store to fd (then the caller closes fd). */
pcc_store_status svc_backup_to_fd(pcc_service *service, int fd);

/* GET /metrics: the Prometheus text. Caller frees *text; NULL when out of memory. */
char *svc_metrics(pcc_service *service, size_t *len);

#endif
