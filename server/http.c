/* http.c: routes of the pycached HTTP API (docs/API.md) on libmicrohttpd.
 *
 * Request handling follows libmicrohttpd's own pattern: the first call allocates per-request
 * state, upload calls consume the body into a buffer with a hard limit (recording an error
 * instead of answering mid-upload), and the final call answers. A compile that has to wait for
 * a worker suspends its connection; the service resumes it when the job is done, and the
 * handler runs once more to answer. State is freed in the completion callback. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin_assets.h"
#include "http.h"

struct pcc_http {
  struct MHD_Daemon *daemon;
  pcc_service *service;
  pcc_auth *auth;                 /* NULL: every endpoint open (loopback only) */
  uint64_t max_source;
  struct MHD_Response *not_found; /* constant responses, built once */
  atomic_uint active;             /* requests between their first call and completion */
};

typedef enum {
  ROUTE_HEALTH,
  ROUTE_STATS,
  ROUTE_CODE,
  ROUTE_COMPILE,
  ROUTE_ADMIN_PAGE,
  ROUTE_METRICS,
  ROUTE_ADMIN_STATS,
  ROUTE_ADMIN_ENTRIES,
  ROUTE_ADMIN_ENTRY,
  ROUTE_ADMIN_ENTRY_DELETE,
  ROUTE_ADMIN_INVALIDATE,
  ROUTE_ADMIN_PURGE,
  ROUTE_ADMIN_MAGICS,
  ROUTE_ADMIN_RETIRE,
  ROUTE_ADMIN_BACKUP,
  ROUTE_ADMIN_BACKUP_DOWNLOAD,
  ROUTE_PROFILE,
  ROUTE_BUNDLE,
  ROUTE_BATCH,
  ROUTE_REPORT,
} route;

#define PROFILE_BODY_MAX ((size_t)4 << 20)
#define BATCH_BODY_MAX ((size_t)1 << 20)
#define REPORT_BODY_MAX ((size_t)64 << 10)

typedef struct {
  route route;
  struct MHD_Connection *connection;
  const char *url;
  uint8_t *body;
  size_t len, cap, limit; /* limit: the most this route's body may hold */
  bool too_large;
  bool waiting;  /* suspended until job is done */
  svc_job *job;
  pcc_params params;
} request;

#define RETIRE_PREFIX "/v1/admin/magics/"
#define RETIRE_SUFFIX "/retire"

/* Every endpoint, with its method and the role it needs (0: open to all). A url ending in '*'
 * is RETIRE_PREFIX + magic + RETIRE_SUFFIX. */
static const struct {
  const char *url;
  const char *method;
  route route;
  unsigned role;
} routes[] = {
  {"/healthz", MHD_HTTP_METHOD_GET, ROUTE_HEALTH, 0},
  {"/admin", MHD_HTTP_METHOD_GET, ROUTE_ADMIN_PAGE, 0},
  {"/admin/", MHD_HTTP_METHOD_GET, ROUTE_ADMIN_PAGE, 0},
  {"/v1/stats", MHD_HTTP_METHOD_GET, ROUTE_STATS, PCC_ROLE_READ},
  {"/v1/code", MHD_HTTP_METHOD_GET, ROUTE_CODE, PCC_ROLE_READ},
  {"/v1/compile", MHD_HTTP_METHOD_POST, ROUTE_COMPILE, PCC_ROLE_COMPILE},
  {"/v1/profile", MHD_HTTP_METHOD_POST, ROUTE_PROFILE, PCC_ROLE_READ},
  {"/v1/bundle", MHD_HTTP_METHOD_GET, ROUTE_BUNDLE, PCC_ROLE_READ},
  {"/v1/batch", MHD_HTTP_METHOD_POST, ROUTE_BATCH, PCC_ROLE_READ},
  {"/v1/report", MHD_HTTP_METHOD_POST, ROUTE_REPORT, PCC_ROLE_READ},
  {"/metrics", MHD_HTTP_METHOD_GET, ROUTE_METRICS, PCC_ROLE_ADMIN},
  {"/v1/admin/stats", MHD_HTTP_METHOD_GET, ROUTE_ADMIN_STATS, PCC_ROLE_ADMIN},
  {"/v1/admin/entries", MHD_HTTP_METHOD_GET, ROUTE_ADMIN_ENTRIES, PCC_ROLE_ADMIN},
  {"/v1/admin/entry", MHD_HTTP_METHOD_GET, ROUTE_ADMIN_ENTRY, PCC_ROLE_ADMIN},
  {"/v1/admin/entry", MHD_HTTP_METHOD_DELETE, ROUTE_ADMIN_ENTRY_DELETE, PCC_ROLE_ADMIN},
  {"/v1/admin/invalidate", MHD_HTTP_METHOD_POST, ROUTE_ADMIN_INVALIDATE, PCC_ROLE_ADMIN},
  {"/v1/admin/purge", MHD_HTTP_METHOD_POST, ROUTE_ADMIN_PURGE, PCC_ROLE_ADMIN},
  {"/v1/admin/magics", MHD_HTTP_METHOD_GET, ROUTE_ADMIN_MAGICS, PCC_ROLE_ADMIN},
  {"/v1/admin/backup", MHD_HTTP_METHOD_POST, ROUTE_ADMIN_BACKUP, PCC_ROLE_ADMIN},
  {"/v1/admin/backup", MHD_HTTP_METHOD_GET, ROUTE_ADMIN_BACKUP_DOWNLOAD, PCC_ROLE_ADMIN},
  {RETIRE_PREFIX "*", MHD_HTTP_METHOD_POST, ROUTE_ADMIN_RETIRE, PCC_ROLE_ADMIN},
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

/* Does url match a route's url (see routes[])? */
static bool url_matches(const char *pattern, const char *url)
{
  size_t n = strlen(pattern);
  if (pattern[n - 1] != '*')
    return strcmp(url, pattern) == 0;
  size_t prefix = n - 1, suffix = strlen(RETIRE_SUFFIX), len = strlen(url);
  return len == prefix + 2 * PCC_MAGIC_LEN + suffix && strncmp(url, pattern, prefix) == 0 &&
         strcmp(url + len - suffix, RETIRE_SUFFIX) == 0;
}

/* ---- responses ------------------------------------------------------------------------- */

/* Queues body (malloc'd, taken over) with a content type and status. */
static enum MHD_Result send_owned(struct MHD_Connection *connection, unsigned status,
                                  const char *content_type, char *body, size_t len,
                                  struct MHD_Response **kept)
{
  struct MHD_Response *response =
    MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
  if (response == NULL) {
    free(body);
    return MHD_NO;
  }
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  enum MHD_Result result = MHD_queue_response(connection, status, response);
  if (kept != NULL)
    *kept = response;
  else
    MHD_destroy_response(response);
  return result;
}

static enum MHD_Result send_json(struct MHD_Connection *connection, unsigned status,
                                 cJSON *json)
{
  char *text = json ? cJSON_PrintUnformatted(json) : NULL;
  cJSON_Delete(json);
  if (text == NULL)
    return MHD_NO;
  return send_owned(connection, status, "application/json", text, strlen(text), NULL);
}

static cJSON *error_json(const char *code, const char *message, cJSON *extra)
{
  cJSON *json = pcc_error_to_json(code, message);
  if (json != NULL && extra != NULL)
    for (cJSON *item = extra->child; item != NULL; item = item->next)
      cJSON_AddItemToObject(json, item->string, cJSON_Duplicate(item, true));
  return json;
}

static enum MHD_Result send_error(struct MHD_Connection *connection, unsigned status,
                                  const char *code, const char *message)
{
  return send_json(connection, status, error_json(code, message, NULL));
}

static bool wants_raw_pyc(struct MHD_Connection *connection)
{
  const char *accept = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_ACCEPT);
  return accept != NULL && strstr(accept, "application/x-python-pyc") != NULL;
}

/* A served entry: the pyc is the header for the request's mtime and size plus the code. */
static enum MHD_Result send_entry(struct MHD_Connection *connection, const pcc_params *params,
                                  const svc_answer *answer)
{
  pcc_entry_view view;
  uint8_t *pyc = svc_entry_view(params, answer, &view);
  if (pyc == NULL)
    return MHD_NO;
  size_t pyc_len = view.pyc_len;

  struct MHD_Response *response = NULL;
  enum MHD_Result result;
  if (wants_raw_pyc(connection)) {
    char digest_hex[PCC_DIGEST_HEX_LEN + 1], checksum_hex[17], hash_text[16], etag[64];
    pcc_digest_to_hex(&view.digest, digest_hex);
    pcc_checksum_to_hex(view.checksum, checksum_hex);
    snprintf(hash_text, sizeof hash_text, "%d", (int)view.hash);
    snprintf(etag, sizeof etag, "\"%s-%s\"", digest_hex, checksum_hex);
    result = send_owned(connection, 200, "application/x-python-pyc", (char *)pyc, pyc_len,
                        &response);
    if (response != NULL) {
      MHD_add_response_header(response, "X-Pycached-Digest", digest_hex);
      MHD_add_response_header(response, "X-Pycached-Checksum", checksum_hex);
      MHD_add_response_header(response, "X-Pycached-Hash", hash_text);
      MHD_add_response_header(response, "X-Pycached-Validation",
                              view.hash_checked ? "hash" : "timestamp");
      MHD_add_response_header(response, "X-Pycached-Compiler", view.compiler);
      MHD_add_response_header(response, "X-Pycached-Outcome", answer->outcome);
      MHD_add_response_header(response, MHD_HTTP_HEADER_ETAG, etag);
      MHD_destroy_response(response);
    }
    return result;
  }
  cJSON *json = pcc_entry_to_json(&view);
  free(pyc);
  char *text = json ? cJSON_PrintUnformatted(json) : NULL;
  cJSON_Delete(json);
  if (text == NULL)
    return MHD_NO;
  result = send_owned(connection, 200, "application/json", text, strlen(text), &response);
  if (response != NULL) {
    MHD_add_response_header(response, "X-Pycached-Outcome", answer->outcome);
    MHD_destroy_response(response);
  }
  return result;
}

static enum MHD_Result send_answer(struct MHD_Connection *connection, const pcc_params *params,
                                   svc_answer *answer)
{
  enum MHD_Result result;
  if (answer->error == NULL && answer->raw != NULL) {
    char entries[16];
    snprintf(entries, sizeof entries, "%u", answer->raw_entries);
    /* the response takes the bytes: freed, or released when they are shared */
    struct MHD_Response *response = MHD_create_response_from_buffer_with_free_callback_cls(
      answer->raw_len, answer->raw, answer->raw_release ? answer->raw_release : free,
      answer->raw_release ? answer->raw_ctx : answer->raw);
    if (response == NULL) {
      result = MHD_NO;
    } else {
      answer->raw = NULL;
      answer->raw_release = NULL;
      MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, answer->raw_type);
      MHD_add_response_header(response, "X-Pycached-Bundle-Entries", entries);
      result = MHD_queue_response(connection, answer->http_status, response);
      MHD_destroy_response(response);
    }
  } else if (answer->error == NULL && answer->json != NULL) {
    result = send_json(connection, answer->http_status, answer->json);
    answer->json = NULL; /* send_json took it */
  } else if (answer->error == NULL)
    result = send_entry(connection, params, answer);
  else
    result = send_json(connection, answer->http_status,
                       error_json(answer->error, answer->message, answer->extra));
  svc_answer_clear(answer);
  return result;
}

/* ---- parameters ------------------------------------------------------------------------ */

static const char *query_value(void *ctx, const char *name)
{
  return MHD_lookup_connection_value(ctx, MHD_GET_ARGUMENT_KIND, name);
}

/* Parses the query; on failure answers 400 naming the parameter and returns false. */
static bool parse_params(request *req, unsigned required, enum MHD_Result *result)
{
  const char *bad = NULL;
  pcc_proto_status rc = pcc_params_parse(query_value, req->connection, required, &req->params,
                                         &bad);
  if (rc == PCC_PROTO_OK)
    return true;
  char message[160];
  snprintf(message, sizeof message, "%s: %s", bad, pcc_proto_strerror(rc));
  cJSON *json = error_json("bad-parameter", message, NULL);
  if (json != NULL)
    cJSON_AddStringToObject(json, "param", bad);
  *result = send_json(req->connection, 400, json);
  return false;
}

/* ---- handlers -------------------------------------------------------------------------- */

static void suspend_connection(void *ctx)
{
  MHD_suspend_connection(ctx);
}

static void resume_connection(void *ctx)
{
  MHD_resume_connection(ctx);
}

static enum MHD_Result handle_compile(pcc_http *http, request *req)
{
  enum MHD_Result result = MHD_YES;
  svc_answer answer;
  memset(&answer, 0, sizeof answer);
  if (req->waiting) { /* resumed: the job is done */
    req->waiting = false;
    svc_job *job = req->job;
    req->job = NULL;
    svc_compile_finish(http->service, job, req->connection, &req->params, &answer);
    return send_answer(req->connection, &req->params, &answer);
  }
  if (req->too_large) {
    char message[128];
    snprintf(message, sizeof message, "the body exceeds --max-source (%llu bytes)",
             (unsigned long long)http->max_source);
    return send_error(req->connection, 413, "too-large", message);
  }
  if (!parse_params(req, PCC_PARAM_MAGIC | PCC_PARAM_PATH | PCC_PARAM_MTIME, &result))
    return result;
  if (svc_compile_begin(http->service, &req->params, req->len ? req->body : NULL, req->len,
                        suspend_connection, resume_connection, req->connection, &req->job,
                        &answer))
    return send_answer(req->connection, &req->params, &answer);
  req->waiting = true;
  return MHD_YES;
}

/* ---- admin ------------------------------------------------------------------------------ */

static enum MHD_Result send_admin_page(const char *url, struct MHD_Connection *connection)
{
  const unsigned char *data;
  size_t len;
  const char *type;
  if (!pcc_admin_asset_find(url, &data, &len, &type))
    return send_error(connection, 404, "not-found", "no such file");
  struct MHD_Response *response =
    MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT);
  if (response == NULL)
    return MHD_NO;
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  MHD_add_response_header(response, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header(response, "X-Frame-Options", "DENY");
  enum MHD_Result result = MHD_queue_response(connection, 200, response);
  MHD_destroy_response(response);
  return result;
}

static enum MHD_Result send_metrics(pcc_http *http, struct MHD_Connection *connection)
{
  size_t len = 0;
  char *text = svc_metrics(http->service, &len);
  if (text == NULL)
    return send_error(connection, 500, "internal", "out of memory");
  return send_owned(connection, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL);
}

/* Writes the store's compacted copy into the pipe the download reads (a thread of its own, so
 * that the HTTP thread streams while LMDB writes). */
static void *backup_writer(void *arg)
{
  void **args = arg;
  pcc_service *service = args[0];
  int fd = (int)(intptr_t)args[1];
  free(args);
  pcc_store_status rc = svc_backup_to_fd(service, fd);
  if (rc != PCC_STORE_OK)
    fprintf(stderr, "pycached: backup download: %s\n", pcc_store_strerror(rc));
  close(fd); /* the reader sees the end, or a short file when the copy failed */
  return NULL;
}

static enum MHD_Result send_backup(pcc_http *http, struct MHD_Connection *connection)
{
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0)
    return send_error(connection, 500, "internal", "cannot create a pipe");
  void **args = malloc(2 * sizeof *args);
  pthread_t thread;
  if (args != NULL) {
    args[0] = http->service;
    args[1] = (void *)(intptr_t)fds[1];
  }
  if (args == NULL || pthread_create(&thread, NULL, backup_writer, args) != 0) {
    free(args);
    close(fds[0]);
    close(fds[1]);
    return send_error(connection, 500, "internal", "cannot start the backup");
  }
  pthread_detach(thread);
  struct MHD_Response *response = MHD_create_response_from_pipe(fds[0]); /* closes fds[0] */
  if (response == NULL) {
    close(fds[0]);
    return MHD_NO;
  }
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_DISPOSITION,
                          "attachment; filename=\"pycached-data.mdb\"");
  enum MHD_Result result = MHD_queue_response(connection, 200, response);
  MHD_destroy_response(response);
  return result;
}

/* Parses the query of an admin endpoint; on a malformed parameter answers 400. */
static bool parse_admin_query(request *req, svc_admin_query *query, enum MHD_Result *result)
{
  if (!parse_params(req, 0, result))
    return false;
  memset(query, 0, sizeof *query);
  query->params = req->params;
  query->prefix = MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, "prefix");
  query->cursor = MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, "cursor");
  query->limit = MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, "limit");
  return true;
}

static enum MHD_Result handle_admin(pcc_http *http, request *req)
{
  enum MHD_Result result = MHD_YES;
  svc_answer answer;
  memset(&answer, 0, sizeof answer);
  svc_admin_query query;
  switch (req->route) {
  case ROUTE_ADMIN_STATS:
    svc_admin_stats(http->service, &answer);
    break;
  case ROUTE_ADMIN_MAGICS:
    svc_admin_magics(http->service, &answer);
    break;
  case ROUTE_ADMIN_PURGE:
    svc_admin_purge(http->service, &answer);
    break;
  case ROUTE_ADMIN_BACKUP:
    svc_admin_backup(http->service, &answer);
    break;
  case ROUTE_ADMIN_RETIRE: {
    char magic[2 * PCC_MAGIC_LEN + 1];
    snprintf(magic, sizeof magic, "%s", req->url + strlen(RETIRE_PREFIX));
    svc_admin_retire(http->service, magic, &answer);
    break;
  }
  case ROUTE_ADMIN_ENTRIES:
  case ROUTE_ADMIN_ENTRY:
  case ROUTE_ADMIN_ENTRY_DELETE:
  case ROUTE_ADMIN_INVALIDATE:
    if (!parse_admin_query(req, &query, &result))
      return result;
    if (req->route == ROUTE_ADMIN_ENTRIES)
      svc_admin_entries(http->service, &query, &answer);
    else if (req->route == ROUTE_ADMIN_INVALIDATE)
      svc_admin_invalidate(http->service, &query, &answer);
    else
      svc_admin_entry(http->service, &query, req->route == ROUTE_ADMIN_ENTRY_DELETE, &answer);
    break;
  default:
    return MHD_NO;
  }
  return send_answer(req->connection, &req->params, &answer);
}

/* POST /v1/profile, GET /v1/bundle, POST /v1/report: magic (and opt) in the query, and for
 * profiles and bundles the profile's name. */
static enum MHD_Result handle_warm(pcc_http *http, request *req)
{
  enum MHD_Result result = MHD_YES;
  svc_answer answer;
  memset(&answer, 0, sizeof answer);
  if (req->too_large)
    return send_error(req->connection, 413, "too-large", "the body is over this endpoint's limit");
  if (!parse_params(req, PCC_PARAM_MAGIC, &result))
    return result;
  const char *name = MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND,
                                                 "profile");
  if (req->route == ROUTE_PROFILE) {
    svc_profile_record(http->service, &req->params, name, req->body, req->len, &answer);
  } else if (req->route == ROUTE_REPORT) {
    svc_report(http->service, &req->params, req->body, req->len, &answer);
  } else {
    const char *format = MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND,
                                                     "format");
    svc_bundle(http->service, &req->params, name, format != NULL && strcmp(format, "json") == 0,
               &answer);
  }
  return send_answer(req->connection, &req->params, &answer);
}

static enum MHD_Result handle(pcc_http *http, request *req)
{
  enum MHD_Result result = MHD_YES;
  svc_answer answer;
  memset(&answer, 0, sizeof answer);
  switch (req->route) {
  case ROUTE_HEALTH: {
    cJSON *json = cJSON_CreateObject();
    cJSON_AddStringToObject(json, "status", "ok");
    cJSON_AddStringToObject(json, "version", PCC_VERSION);
    return send_json(req->connection, 200, json);
  }
  case ROUTE_STATS:
    return send_json(req->connection, 200, svc_stats(http->service));
  case ROUTE_CODE:
    if (!parse_params(req, PCC_PARAM_MAGIC | PCC_PARAM_PATH | PCC_PARAM_MTIME | PCC_PARAM_SIZE,
                      &result))
      return result;
    svc_lookup(http->service, &req->params, &answer);
    return send_answer(req->connection, &req->params, &answer);
  case ROUTE_COMPILE:
    return handle_compile(http, req);
  case ROUTE_ADMIN_PAGE:
    return send_admin_page(req->url, req->connection);
  case ROUTE_METRICS:
    return send_metrics(http, req->connection);
  case ROUTE_ADMIN_BACKUP_DOWNLOAD:
    return send_backup(http, req->connection);
  case ROUTE_PROFILE:
  case ROUTE_BUNDLE:
  case ROUTE_REPORT:
    return handle_warm(http, req);
  case ROUTE_BATCH:
    if (req->too_large)
      return send_error(req->connection, 413, "too-large", "a batch body is at most 1 MiB");
    svc_batch(http->service, req->body, req->len, &answer);
    return send_answer(req->connection, &req->params, &answer);
  default:
    return handle_admin(http, req);
  }
}

/* Checks the bearer token of a request for role; on failure queues 401 or 403. */
static bool authorized(pcc_http *http, struct MHD_Connection *connection, unsigned role,
                       enum MHD_Result *result)
{
  if (http->auth == NULL || role == 0)
    return true;
  char name[80] = "";
  const char *header = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_AUTHORIZATION);
  pcc_auth_status rc = pcc_auth_check(http->auth, header, (pcc_role)role, name, sizeof name);
  if (rc == PCC_AUTH_OK)
    return true;
  struct MHD_Response *response = NULL;
  cJSON *json;
  unsigned status;
  if (rc == PCC_AUTH_NO_ROLE) {
    char message[160];
    snprintf(message, sizeof message, "token \"%s\" lacks the %s role", name,
             pcc_role_name((pcc_role)role));
    json = error_json("forbidden", message, NULL);
    cJSON_AddStringToObject(json, "role", pcc_role_name((pcc_role)role));
    status = 403;
  } else {
    json = error_json("unauthorized", rc == PCC_AUTH_MISSING
                                        ? "send Authorization: Bearer TOKEN"
                                        : "unknown token", NULL);
    status = 401;
  }
  char *text = json ? cJSON_PrintUnformatted(json) : NULL;
  cJSON_Delete(json);
  *result = text ? send_owned(connection, status, "application/json", text, strlen(text),
                              &response)
                 : MHD_NO;
  if (response != NULL) {
    if (status == 401)
      MHD_add_response_header(response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    MHD_destroy_response(response);
  }
  return false;
}

/* Finds the route of url/method and checks its role; on failure queues 404, 405, 401 or 403
 * and returns false. */
static bool find_route(pcc_http *http, struct MHD_Connection *connection, const char *url,
                       const char *method, route *out, enum MHD_Result *result)
{
  const char *allowed = NULL;
  for (size_t i = 0; i < N_ROUTES; i++) {
    if (!url_matches(routes[i].url, url))
      continue;
    if (strcmp(method, routes[i].method) == 0) {
      *out = routes[i].route;
      return authorized(http, connection, routes[i].role, result);
    }
    allowed = routes[i].method;
  }
  if (allowed == NULL) {
    *result = MHD_queue_response(connection, 404, http->not_found);
    return false;
  }
  char message[96];
  snprintf(message, sizeof message, "%s is not allowed here; use %s", method, allowed);
  char *text = NULL;
  cJSON *json = error_json("method-not-allowed", message, NULL);
  if (json != NULL) {
    cJSON_AddStringToObject(json, "allow", allowed);
    text = cJSON_PrintUnformatted(json);
    cJSON_Delete(json);
  }
  struct MHD_Response *response = NULL;
  *result = text ? send_owned(connection, 405, "application/json", text, strlen(text), &response)
                 : MHD_NO;
  if (response != NULL) {
    MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, allowed);
    MHD_destroy_response(response);
  }
  return false;
}

/* Appends upload data to the body, up to its route's limit; past it, keeps reading and discarding. */
static void consume_upload(request *req, const char *data, size_t size)
{
  if (req->too_large)
    return;
  if (size > req->limit - req->len) {
    req->too_large = true;
    free(req->body);
    req->body = NULL;
    req->len = req->cap = 0;
    return;
  }
  if (req->len + size > req->cap) {
    size_t cap = req->cap ? req->cap : 16384;
    while (cap < req->len + size)
      cap *= 2;
    if (cap > req->limit)
      cap = req->limit;
    uint8_t *grown = realloc(req->body, cap);
    if (grown == NULL) {
      req->too_large = true; /* answered as 413: nothing better to say without memory */
      return;
    }
    req->body = grown;
    req->cap = cap;
  }
  memcpy(req->body + req->len, data, size);
  req->len += size;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
  (void)version;
  pcc_http *http = cls;
  request *req = *req_cls;
  if (req == NULL) {
    svc_count_request(http->service);
    route r;
    enum MHD_Result result = MHD_YES;
    if (!find_route(http, connection, url, method, &r, &result))
      return result;
    req = calloc(1, sizeof *req);
    if (req == NULL)
      return MHD_NO;
    req->route = r;
    req->connection = connection;
    req->url = url;
    req->limit = r == ROUTE_COMPILE   ? http->max_source
                 : r == ROUTE_PROFILE ? PROFILE_BODY_MAX
                 : r == ROUTE_BATCH   ? BATCH_BODY_MAX
                 : r == ROUTE_REPORT  ? REPORT_BODY_MAX
                                      : 0; /* no other route takes a body */
    *req_cls = req;
    atomic_fetch_add(&http->active, 1);
    const char *length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
    int64_t declared = 0;
    if (length != NULL && pcc_parse_i64(length, 0, INT64_MAX, &declared) == PCC_PROTO_OK &&
        (uint64_t)declared > req->limit)
      req->too_large = true; /* answered once the (discarded) upload is over */
    return MHD_YES;
  }
  if (*upload_data_size != 0) {
    consume_upload(req, upload_data, *upload_data_size);
    *upload_data_size = 0;
    return MHD_YES;
  }
  return handle(http, req);
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
  (void)connection;
  (void)toe;
  pcc_http *http = cls;
  request *req = *req_cls;
  if (req == NULL)
    return;
  if (req->job != NULL) /* went away before it was answered */
    svc_job_release(http->service, req->job);
  free(req->body);
  free(req);
  *req_cls = NULL;
  atomic_fetch_sub(&http->active, 1);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

int pcc_http_start(const pcc_config *config, pcc_service *service, pcc_auth *auth,
                   pcc_http **out)
{
  struct sockaddr_storage addr;
  memset(&addr, 0, sizeof addr);
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                   MHD_USE_ITC | MHD_USE_ERROR_LOG;
  struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
  if (inet_pton(AF_INET, config->listen, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)config->port);
  } else if (inet_pton(AF_INET6, config->listen, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)config->port);
    flags |= MHD_USE_IPv6;
  } else {
    fprintf(stderr, "pycached: --listen %s: not an IPv4 or IPv6 address\n", config->listen);
    return -1;
  }
  pcc_http *http = calloc(1, sizeof *http);
  if (http == NULL)
    return -1;
  http->service = service;
  http->auth = auth;
  http->max_source = config->max_source;
  const char *not_found = "{\"error\":\"not-found\",\"message\":\"no such endpoint; see "
                          "docs/API.md\"}";
  http->not_found = MHD_create_response_from_buffer(strlen(not_found), (void *)not_found,
                                                    MHD_RESPMEM_PERSISTENT);
  if (http->not_found != NULL)
    MHD_add_response_header(http->not_found, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
  http->daemon = MHD_start_daemon(
    flags, (uint16_t)config->port, NULL, NULL, on_request, http, MHD_OPTION_SOCK_ADDR, &addr,
    MHD_OPTION_THREAD_POOL_SIZE, (unsigned)config->threads, MHD_OPTION_CONNECTION_LIMIT,
    (unsigned)config->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024), MHD_OPTION_NOTIFY_COMPLETED,
    on_completed, http, MHD_OPTION_END);
  if (http->daemon == NULL || http->not_found == NULL) {
    fprintf(stderr, "pycached: cannot listen on %s port %llu (in use, or not permitted)\n",
            config->listen, (unsigned long long)config->port);
    pcc_http_stop(http);
    return -1;
  }
  *out = http;
  return 0;
}

uint16_t pcc_http_port(const pcc_http *http)
{
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(http->daemon,
                                                         MHD_DAEMON_INFO_BIND_PORT);
  return info ? info->port : 0;
}

void pcc_http_quiesce(pcc_http *http)
{
  if (http != NULL && http->daemon != NULL)
    MHD_quiesce_daemon(http->daemon);
}

unsigned pcc_http_drain(pcc_http *http, unsigned timeout_ms)
{
  const struct timespec tick = {0, 10 * 1000 * 1000};
  for (unsigned waited = 0; atomic_load(&http->active) > 0 && waited < timeout_ms; waited += 10)
    nanosleep(&tick, NULL);
  return atomic_load(&http->active);
}

void pcc_http_stop(pcc_http *http)
{
  if (http == NULL)
    return;
  if (http->daemon != NULL)
    MHD_stop_daemon(http->daemon);
  if (http->not_found != NULL)
    MHD_destroy_response(http->not_found);
  free(http);
}
