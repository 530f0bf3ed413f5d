/* http.c: the libmicrohttpd mechanics of pycached (http.h). The routes come from the features
 * (route.h); this file knows none of them by name.
 *
 * Request handling follows libmicrohttpd's own pattern: the first call finds the route, checks
 * its role and a declared Content-Length against the route's body limit (answering 401, 403,
 * 404, 405 or 413 at once, before any body byte is read), and allocates per-request state;
 * upload calls append the body to a bounded buffer (a body without a declared length that grows
 * past the limit is discarded and answered 413 once it is over); the final call parses the
 * parameters and runs the handler. A PENDING answer suspends the connection; the feature resumes
 * it and the handler's finish runs on the next call. State is freed in the completion callback.
 *
 * Connections (conns.h): every connection is in the table from libmicrohttpd's "started" to its
 * "closed" notification; the request line (the URI callback), the first call, the final call and
 * the completion move it through its phases, and the table's sweeper cuts off a connection past
 * the deadline of its phase (libmicrohttpd's own timeout is an idle timeout, which a client that
 * sends a byte a second never reaches). libmicrohttpd's connection limit is --max-connections
 * plus a reserve: past --max-connections a new connection takes the place of the one idle the
 * longest, or, with none idle, is a reserve connection, answered 503 busy unless its route is a
 * reserve route (reserve_route) and closed after its answer; past the reserve, the accept policy
 * closes new connections at once, so that none waits in the listen backlog. The listening
 * socket is listener.c's, whose thread hands each connection to libmicrohttpd
 * (MHD_add_connection). */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "conns.h"
#include "http.h"
#include "listener.h"
#include "pcc_log.h"
#include "tls.h"

#define HTTP_ROUTES_MAX 64   /* routes of every feature together */
#define HTTP_UPLOAD_FIRST 16384 /* the first allocation of a body without a declared length */
#define HTTP_STREAM_BLOCK 65536 /* the buffer libmicrohttpd fills from a STREAM answer's producer */
#define HTTP_SWEEP_MS 100       /* how often deadlines are checked */
#define HTTP_BUSY_RETRY "1"     /* Retry-After of a 503 busy, in seconds */
#define HTTP_SPARE_FDS 256      /* descriptors besides connections: store, workers, eventfds, ... */

/* One route of the table, with the state of its feature and its 405 answer (built once per
 * path, shared by the rows of that path). */
typedef struct {
  const pcc_route *route;
  void *state;
  struct MHD_Response *not_allowed;
  size_t not_allowed_len; /* bytes of its body, for the access log */
} http_route;

struct pcc_http {
  struct MHD_Daemon *daemon;
  pcc_listener *listener;         /* accepts on the TCP address, and hands each connection to
                                   * the daemon; NULL without one */
  pcc_listener *unix_listener;    /* the same on the unix socket; NULL without one */
  pcc_counters *counters;
  pcc_auth *auth;                 /* NULL: every endpoint open (loopback only) */
  const pcc_tls *tls;             /* NULL: plain HTTP */
  const pcc_config *config;
  http_route routes[HTTP_ROUTES_MAX];
  size_t n_routes;
  struct MHD_Response *not_found; /* constant responses, built once */
  struct MHD_Response *busy;      /* 503 to an ordinary request on a reserve connection */
  size_t not_found_len, busy_len; /* bytes of their bodies */
  pcc_log *access_log;            /* NULL: none */
  atomic_uint active;             /* requests between their first call and completion */
  pcc_conns *conns;               /* every open connection, its phase and deadline */
};

/* What the access log says of a request (docs/OPERATIONS.md, "The access log"). */
typedef struct {
  uint64_t start_ns;  /* CLOCK_MONOTONIC at its request line */
  unsigned status;    /* the status queued; 0: none (the connection went away first) */
  _Atomic uint64_t bytes; /* body bytes queued, or produced so far by a STREAM answer */
  char method[16];
  char *path;         /* the URL's path, without the query: as sent until the first call, then
                       * decoded; NULL without memory */
  const char *token;  /* the token's name (points into who), NULL: no token checked */
  const char *role;   /* the role it was checked for (static) */
  pcc_auth_identity who;
  char remote[INET6_ADDRSTRLEN]; /* the client's address, from the first call on */
} access_note;

/* A request: allocated at its request line (on_request_line; else at its first call), freed at
 * its completion. A request answered at its first call (401, 403, 404, 405, 413, 503) has no
 * route. */
typedef struct {
  access_note note;
  bool begun;         /* its first call has run */
  bool counted;       /* counted in http->active (it has a route) */
  const http_route *route;
  pcc_conn *conn;     /* the connection's entry in the table (NULL: not tracked) */
  pcc_request request;
  pcc_dynbuf body;
  bool too_large;     /* the body passed the route's limit: discarded, answered 413 */
  bool waiting;       /* suspended until the pending answer can be finished */
  pcc_answer pending; /* a PENDING answer while waiting */
} request;

static const unsigned error_statuses[PCC_ERR_COUNT] = {
  [PCC_ERR_BAD_PARAMETER] = 400,
  [PCC_ERR_NOT_FOUND] = 404,
  [PCC_ERR_MISS] = 404,
  [PCC_ERR_FORBIDDEN] = 403,
  [PCC_ERR_MISMATCH] = 409,
  [PCC_ERR_TOO_LARGE] = 413,
  [PCC_ERR_COMPILE_ERROR] = 422,
  [PCC_ERR_UNSUPPORTED_MAGIC] = 422,
  [PCC_ERR_COMPILE_TIMEOUT] = 504,
  [PCC_ERR_COMPILER_UNAVAILABLE] = 503,
  [PCC_ERR_STORE_FULL] = 507,
  [PCC_ERR_INTERNAL] = 500,
  [PCC_ERR_BUSY] = 503,
};

unsigned pcc_http_status(pcc_error_code code)
{
  return code < PCC_ERR_COUNT ? error_statuses[code] : 500;
}

bool pcc_http_path_matches(const char *pattern, const char *path, size_t *arg_start,
                           size_t *arg_len)
{
  const char *star = strchr(pattern, '*');
  if (star == NULL)
    return strcmp(pattern, path) == 0;
  size_t prefix = (size_t)(star - pattern), suffix = strlen(star + 1), len = strlen(path);
  if (len <= prefix + suffix || strncmp(path, pattern, prefix) != 0 ||
      strcmp(path + len - suffix, star + 1) != 0)
    return false;
  size_t arg = len - prefix - suffix;
  if (memchr(path + prefix, '/', arg) != NULL)
    return false;
  if (arg_start != NULL)
    *arg_start = prefix;
  if (arg_len != NULL)
    *arg_len = arg;
  return true;
}

/* ---- responses ------------------------------------------------------------------------- */

/* The request this HTTP thread is handling in on_request (every answer is queued from there),
 * whose access note the responses fill; NULL outside of it. */
static _Thread_local access_note *current_note;

/* Notes the status and body size of the response being queued. */
static void note_response(unsigned status, uint64_t bytes)
{
  if (current_note != NULL) {
    current_note->status = status;
    atomic_store(&current_note->bytes, bytes);
  }
}

/* Queues a response with a content type, the extra headers of answer (may be NULL) and status,
 * and drops our reference to it. NULL response: the connection is closed. */
static enum MHD_Result queue(struct MHD_Connection *connection, unsigned status,
                             struct MHD_Response *response, uint64_t bytes,
                             const char *content_type, const pcc_answer *answer)
{
  if (response == NULL)
    return MHD_NO;
  note_response(status, bytes);
  if (content_type != NULL)
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  for (unsigned i = 0; answer != NULL && i < answer->n_headers; i++)
    MHD_add_response_header(response, answer->headers[i].name, answer->headers[i].value);
  enum MHD_Result result = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return result;
}

/* A response that owns text (malloc'd; freed with the response, or here on failure). */
static struct MHD_Response *owned_response(char *text, size_t len)
{
  if (text == NULL)
    return NULL;
  struct MHD_Response *response =
    MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
  if (response == NULL)
    free(text);
  return response;
}

/* The response of json (taken); *len gets the bytes of its body. */
static struct MHD_Response *json_response(cJSON *json, uint64_t *len)
{
  char *text = json ? cJSON_PrintUnformatted(json) : NULL;
  cJSON_Delete(json);
  *len = text ? strlen(text) : 0;
  return owned_response(text, (size_t)*len);
}

/* Whether an Accept-Encoding value (NULL: none) lists zstd, without q=0: a comma-separated list
 * of codings, each maybe with ";q=VALUE" (RFC 9110, 12.5.3). */
static bool accepts_zstd(const char *value)
{
  for (const char *at = value; at != NULL && *at != '\0';) {
    at += strspn(at, " \t,");
    size_t name = strcspn(at, " \t,;"), item = strcspn(at, ",");
    if (name == 4 && strncasecmp(at, "zstd", 4) == 0) {
      const char *params = at + name;
      for (size_t i = 0; i + 1 < item - name; i++)
        if ((params[i] == 'q' || params[i] == 'Q') && params[i + 1] == '=')
          /* a weight of only zeros and dots ("0", "0.000") refuses zstd */
          return strspn(params + i + 2, "0.") < strspn(params + i + 2, "0123456789.");
      return true;
    }
    at += item;
  }
  return false;
}

static bool wants_raw_pyc(struct MHD_Connection *connection)
{
  const char *accept = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_ACCEPT);
  return accept != NULL && strstr(accept, "application/x-python-pyc") != NULL;
}

/* The zstd frame of an answer body of len bytes (malloc'd; *frame_len its size), or NULL when the
 * body is under PCC_ZSTD_ANSWER_MIN, cannot be compressed or would not shrink by
 * PCC_ZSTD_ANSWER_SAVING percent. The frame states its decompressed size, which the client's
 * limit is checked against before it decompresses. */
static uint8_t *zstd_body(const void *body, size_t len, size_t *frame_len)
{
  if (len < PCC_ZSTD_ANSWER_MIN)
    return NULL;
  size_t bound = ZSTD_compressBound(len);
  uint8_t *frame = ZSTD_isError(bound) ? NULL : malloc(bound);
  size_t n = frame ? ZSTD_compress(frame, bound, body, len, PCC_ZSTD_ANSWER_LEVEL) : 0;
  if (frame == NULL || ZSTD_isError(n) ||
      n > len - len / 100 * PCC_ZSTD_ANSWER_SAVING) {
    free(frame);
    return NULL;
  }
  *frame_len = n;
  return frame;
}

/* Queues an ENTRY body (text, malloc'd, taken) compressed with zstd when the client accepts it
 * and it pays (zstd_body), else as it is; the answer says Content-Encoding: zstd then. */
static enum MHD_Result queue_entry_body(struct MHD_Connection *connection, char *text, size_t len,
                                        bool zstd, const char *content_type, pcc_answer *answer)
{
  size_t frame_len = 0;
  uint8_t *frame = zstd && text != NULL ? zstd_body(text, len, &frame_len) : NULL;
  if (frame == NULL)
    return queue(connection, 200, owned_response(text, len), len, content_type, answer);
  free(text);
  pcc_answer_header(answer, MHD_HTTP_HEADER_CONTENT_ENCODING, "zstd");
  return queue(connection, 200, owned_response((char *)frame, frame_len), frame_len, content_type,
               answer);
}

/* An ENTRY answer: the pyc for the request's mtime and size, raw (with its fields in headers)
 * or as JSON; compressed with zstd when the request accepts it (zstd) and the body is worth it. A
 * raw pyc sent as it is goes from the blob it was built in (no copy). */
static enum MHD_Result send_entry(struct MHD_Connection *connection, const pcc_params *params,
                                  pcc_answer *answer, bool zstd)
{
  pcc_entry_view view;
  const uint8_t *pyc = pcc_answer_entry_view(params, answer, &view);
  pcc_answer_header(answer, "X-Pycached-Outcome", answer->outcome);
  pcc_answer_header(answer, MHD_HTTP_HEADER_VARY, MHD_HTTP_HEADER_ACCEPT_ENCODING);
  if (!wants_raw_pyc(connection)) {
    size_t len = 0;
    char *text = pcc_entry_to_json_text(&view, &len);
    return queue_entry_body(connection, text, len, zstd, "application/json", answer);
  }
  char digest_hex[PCC_DIGEST_HEX_LEN + 1], checksum_hex[17], hash_text[16];
  char etag[PCC_DIGEST_HEX_LEN + 32];
  pcc_digest_to_hex(&view.digest, digest_hex);
  pcc_checksum_to_hex(view.checksum, checksum_hex);
  snprintf(hash_text, sizeof hash_text, "%d", (int)view.hash);
  size_t frame_len = 0;
  uint8_t *frame = zstd ? zstd_body(pyc, view.pyc_len, &frame_len) : NULL;
  /* the zstd form is another representation: another strong validator */
  snprintf(etag, sizeof etag, "\"%s-%s%s\"", digest_hex, checksum_hex, frame ? "-zstd" : "");
  struct MHD_Response *response;
  if (frame != NULL) {
    response = MHD_create_response_from_buffer(frame_len, frame, MHD_RESPMEM_MUST_FREE);
    if (response == NULL) {
      free(frame);
      return MHD_NO;
    }
    pcc_answer_header(answer, MHD_HTTP_HEADER_CONTENT_ENCODING, "zstd");
  } else {
    /* the pyc is sent from the blob it was built in, which the response frees once sent */
    pcc_blob *blob = answer->blob;
    answer->blob = NULL;
    response = MHD_create_response_from_buffer_with_free_callback_cls(view.pyc_len, (void *)pyc,
                                                                      free, blob);
    if (response == NULL) {
      free(blob);
      return MHD_NO;
    }
  }
  MHD_add_response_header(response, "X-Pycached-Digest", digest_hex);
  MHD_add_response_header(response, "X-Pycached-Checksum", checksum_hex);
  MHD_add_response_header(response, "X-Pycached-Hash", hash_text);
  MHD_add_response_header(response, "X-Pycached-Validation",
                          view.hash_checked ? "hash" : "timestamp");
  MHD_add_response_header(response, "X-Pycached-Compiler", view.compiler);
  MHD_add_response_header(response, MHD_HTTP_HEADER_ETAG, etag);
  return queue(connection, 200, response, frame ? frame_len : view.pyc_len,
               "application/x-python-pyc", answer);
}

/* Releases shared bytes once libmicrohttpd is done with them. */
static void release_bytes(void *cls)
{
  pcc_answer *owner = cls;
  owner->release(owner->release_ctx);
  free(owner);
}

/* A STREAM answer's producer and its release, held by the response until it is destroyed. */
typedef struct {
  ssize_t (*produce)(void *ctx, uint8_t *buf, size_t max);
  void (*stream_free)(void *ctx);
  void *ctx;
  _Atomic uint64_t *sent; /* the request's access-note bytes (read only until it completes,
                           * which is after the last read), or NULL */
} http_stream;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
  (void)pos; /* a response is never reused: pos is the sum of what was produced so far */
  http_stream *stream = cls;
  ssize_t n = stream->produce(stream->ctx, (uint8_t *)buf, max);
  if (n > 0 && stream->sent != NULL)
    atomic_fetch_add(stream->sent, (uint64_t)n);
  return n > 0 ? n : n == 0 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_done(void *cls)
{
  http_stream *stream = cls;
  stream->stream_free(stream->ctx);
  free(stream);
}

/* The response of a STREAM answer (chunked, of unknown length); takes the producer from answer. */
static struct MHD_Response *stream_response(pcc_answer *answer)
{
  http_stream *stream = malloc(sizeof *stream);
  if (stream == NULL)
    return NULL;
  *stream = (http_stream){answer->produce, answer->stream_free, answer->stream_ctx,
                          current_note ? &current_note->bytes : NULL};
  struct MHD_Response *response = MHD_create_response_from_callback(
    MHD_SIZE_UNKNOWN, HTTP_STREAM_BLOCK, stream_read, stream, stream_done);
  if (response == NULL)
    free(stream);
  else
    answer->stream_free = NULL; /* now the response's */
  return response;
}

/* Encodes and queues an answer; clears it. zstd: the request accepts zstd (an ENTRY answer may
 * be compressed). */
static enum MHD_Result send_answer(struct MHD_Connection *connection, const pcc_params *params,
                                   pcc_answer *answer, bool zstd)
{
  struct MHD_Response *response = NULL;
  uint64_t len = 0;
  enum MHD_Result result;
  switch (answer->kind) {
  case PCC_ANSWER_ENTRY:
    result = send_entry(connection, params, answer, zstd);
    break;
  case PCC_ANSWER_JSON:
    response = json_response(answer->json, &len);
    result = queue(connection, 200, response, len, "application/json", answer);
    answer->json = NULL; /* json_response took it */
    break;
  case PCC_ANSWER_BYTES:
    if (answer->release == NULL) {
      response = MHD_create_response_from_buffer(answer->bytes_len, (void *)answer->bytes,
                                                 MHD_RESPMEM_PERSISTENT);
    } else {
      /* the response holds the release callback until it is destroyed */
      pcc_answer *owner = malloc(sizeof *owner);
      if (owner != NULL) {
        *owner = (pcc_answer){.release = answer->release, .release_ctx = answer->release_ctx};
        response = MHD_create_response_from_buffer_with_free_callback_cls(
          answer->bytes_len, (void *)answer->bytes, release_bytes, owner);
        if (response == NULL)
          free(owner);
        else
          answer->release = NULL; /* now the response's */
      }
    }
    result = queue(connection, 200, response, answer->bytes_len, answer->content_type, answer);
    break;
  case PCC_ANSWER_FILE:
    response = MHD_create_response_from_fd64(answer->file_size, answer->fd); /* closes the fd */
    if (response != NULL)
      answer->fd = -1;
    result = queue(connection, 200, response, answer->file_size, answer->content_type, answer);
    break;
  case PCC_ANSWER_STREAM:
    response = stream_response(answer);
    result = queue(connection, 200, response, 0, answer->content_type, answer); /* counted */
    break;
  case PCC_ANSWER_ERROR:
    response = json_response(pcc_answer_error_json(answer), &len);
    result = queue(connection, pcc_http_status(answer->error), response, len, "application/json",
                   answer);
    break;
  default: /* NONE or a PENDING answer where none may be: a handler's bug */
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "the handler gave no answer");
    result = send_answer(connection, params, answer, false);
    break;
  }
  pcc_answer_clear(answer);
  return result;
}

/* An error answered before a handler runs (auth, limits, parameters). */
static enum MHD_Result send_error(struct MHD_Connection *connection, pcc_answer *answer)
{
  return send_answer(connection, NULL, answer, false);
}

/* ---- routes and auth ------------------------------------------------------------------- */

/* The client's address, numeric ("127.0.0.1", "::1"), "unix" on a unix socket, or "-" when
 * unknown. */
static const char *remote_address(struct MHD_Connection *connection, char *out, size_t len)
{
  const union MHD_ConnectionInfo *info =
    MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  const struct sockaddr *addr = info ? info->client_addr : NULL;
  const void *where = NULL;
  if (addr != NULL && addr->sa_family == AF_INET)
    where = &((const struct sockaddr_in *)(const void *)addr)->sin_addr;
  else if (addr != NULL && addr->sa_family == AF_INET6)
    where = &((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr;
  if (where == NULL || inet_ntop(addr->sa_family, where, out, (socklen_t)len) == NULL)
    snprintf(out, len, "%s", addr != NULL && addr->sa_family == AF_UNIX ? "unix" : "-");
  return out;
}

/* The audit line of a refused token: which refusal, with the address and the route; the token
 * is never in it (nor anything derived from it), only, on a 403, the name the file gives it. */
static void audit_refusal(struct MHD_Connection *connection, pcc_auth_status rc, unsigned status,
                          const char *name, const char *needed)
{
  char remote[INET6_ADDRSTRLEN];
  const access_note *note = current_note;
  if (note != NULL)
    memcpy(remote, note->remote, sizeof remote);
  else
    remote_address(connection, remote, sizeof remote);
  const char *method = note ? note->method : "-", *path = note && note->path ? note->path : "-";
  if (rc == PCC_AUTH_NO_ROLE)
    PCC_LOG_AUDIT("token-refused", "a token lacking the route's role was refused",
                  PCC_LOG_INT("status", status), PCC_LOG_STR("reason", "lacks-role"),
                  PCC_LOG_STR("token", name), PCC_LOG_STR("role", needed),
                  PCC_LOG_STR("remote", remote), PCC_LOG_STR("method", method),
                  PCC_LOG_STR("path", path));
  else
    PCC_LOG_AUDIT("token-refused", rc == PCC_AUTH_MISSING ? "a request without a token was refused"
                                                          : "an unknown token was refused",
                  PCC_LOG_INT("status", status),
                  PCC_LOG_STR("reason", rc == PCC_AUTH_MISSING ? "missing" : "unknown"),
                  PCC_LOG_STR("role", needed), PCC_LOG_STR("remote", remote),
                  PCC_LOG_STR("method", method), PCC_LOG_STR("path", path));
}

/* Checks the bearer token of a request for role; *who gets its identity (the default namespace
 * without access control). On failure queues 401 or 403. */
static bool authorized(pcc_http *http, struct MHD_Connection *connection, unsigned role,
                       pcc_auth_identity *who, enum MHD_Result *result)
{
  memset(who, 0, sizeof *who);
  if (http->auth == NULL || role == 0)
    return true;
  const char *header = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_AUTHORIZATION);
  pcc_auth_status rc = pcc_auth_check(http->auth, header, (pcc_role)role, who);
  const char *name = who->name;
  /* a route open to several roles (/metrics: read or admin) names the first */
  const char *needed = pcc_role_name((pcc_role)(role & -role));
  if (rc == PCC_AUTH_OK) {
    if (current_note != NULL) {
      current_note->who = *who;
      current_note->token = current_note->who.name;
      current_note->role = needed;
    }
    return true;
  }
  cJSON *json;
  unsigned status;
  if (rc == PCC_AUTH_NO_ROLE) {
    char message[160];
    snprintf(message, sizeof message, "token \"%s\" lacks the %s role", name, needed);
    json = pcc_error_to_json("forbidden", message);
    cJSON_AddStringToObject(json, "role", needed);
    status = 403;
  } else {
    json = pcc_error_to_json("unauthorized", rc == PCC_AUTH_MISSING
                                               ? "send Authorization: Bearer TOKEN"
                                               : "unknown token");
    status = 401;
  }
  audit_refusal(connection, rc, status, name, needed);
  uint64_t len;
  struct MHD_Response *response = json_response(json, &len);
  if (response != NULL && status == 401)
    MHD_add_response_header(response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
  *result = queue(connection, status, response, len, "application/json", NULL);
  return false;
}

/* ---- mutual TLS ----------------------------------------------------------------------- */

/* With --tls-client-ca, a request whose connection has no client certificate that verifies is
 * refused 403, whatever its route (tls.c: libmicrohttpd only asks for one). A connection whose
 * certificate verified is not verified again (conn: its table entry, NULL when untracked). */
static bool client_certified(const pcc_http *http, struct MHD_Connection *connection,
                             pcc_conn *conn, enum MHD_Result *result)
{
  const char *why = NULL;
  if (pcc_conns_certified(conn))
    return true;
  if (pcc_tls_client_ok(http->tls, connection, &why)) {
    if (pcc_tls_mutual(http->tls))
      pcc_conns_set_certified(conn);
    return true;
  }
  pcc_answer answer;
  pcc_answer_init(&answer);
  pcc_answer_error(&answer, PCC_ERR_FORBIDDEN, "%s", why);
  pcc_answer_header(&answer, MHD_HTTP_HEADER_CONNECTION, "close");
  *result = send_error(connection, &answer);
  return false;
}

/* ---- browsers ------------------------------------------------------------------------- */

/* Did the connection come in on the unix socket? */
static bool over_unix_socket(struct MHD_Connection *connection)
{
  const union MHD_ConnectionInfo *info =
    MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  return info != NULL && info->client_addr != NULL && info->client_addr->sa_family == AF_UNIX;
}

/* Is host (a Host header's name, without the port) one this server answers to: a name given
 * with --server-name, the --listen address or host name, or, on a loopback address or over
 * the unix socket (over_unix), a loopback name? A server on a wildcard address without
 * --server-name answers to any name (tokens guard it). */
static bool host_name_ok(const pcc_config *config, const char *host, size_t len, bool over_unix)
{
  for (unsigned i = 0; i < config->n_server_names; i++)
    if (strlen(config->server_names[i]) == len && strncasecmp(config->server_names[i], host,
                                                              len) == 0)
      return true;
  if (config->listen_name[0] != '\0' && strlen(config->listen_name) == len &&
      strncasecmp(config->listen_name, host, len) == 0)
    return true;
  char name[64];
  if (len == 0 || len >= sizeof name)
    return false;
  memcpy(name, host, len);
  name[len] = '\0';
  if (name[0] == '[' && name[len - 1] == ']') { /* [v6] */
    memmove(name, name + 1, len - 2);
    name[len - 2] = '\0';
  }
  if (config->listen[0] != '\0' && strcmp(name, config->listen) == 0)
    return true;
  struct in_addr v4;
  struct in6_addr v6;
  bool wildcard = strcmp(config->listen, "0.0.0.0") == 0 || strcmp(config->listen, "::") == 0;
  if (wildcard && config->n_server_names == 0)
    return true;
  /* a unix socket: no browser reaches it (curl --unix-socket sends "Host: localhost") */
  bool loopback_server = over_unix ||
                         (inet_pton(AF_INET, config->listen, &v4) == 1 &&
                          (ntohl(v4.s_addr) >> 24) == 127) || strcmp(config->listen, "::1") == 0;
  if (!loopback_server)
    return false;
  if (strcasecmp(name, "localhost") == 0)
    return true;
  if (inet_pton(AF_INET, name, &v4) == 1)
    return (ntohl(v4.s_addr) >> 24) == 127;
  return inet_pton(AF_INET6, name, &v6) == 1 && memcmp(&v6, &in6addr_loopback, sizeof v6) == 0;
}

/* The name of a Host value ("name:port", "[v6]:port", "name"), as (start, length). */
static size_t host_name_len(const char *host)
{
  const char *end = host[0] == '[' ? strchr(host, ']') : strrchr(host, ':');
  if (host[0] == '[')
    return end ? (size_t)(end - host) + 1 : strlen(host);
  return end ? (size_t)(end - host) : strlen(host);
}

/* Content types a browser may send across origins without asking first (CORS "simple"). */
static bool simple_content_type(const char *type)
{
  static const char *const simple[] = {"application/x-www-form-urlencoded",
                                       "multipart/form-data", "text/plain"};
  for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++)
    if (strncasecmp(type, simple[i], strlen(simple[i])) == 0)
      return true;
  return false;
}

/* Refuses what a web page could make a browser send (docs/DESIGN.md, "Trust"): a Host that is
 * not this server's (DNS rebinding), an Origin other than the server's own, and a
 * state-changing request (POST, DELETE) that is "simple" (no X-Pycached-Client header and a
 * simple or no content type). On refusal queues 403 and returns false. */
static bool browser_safe(pcc_http *http, struct MHD_Connection *connection, const char *method,
                         enum MHD_Result *result)
{
  const char *host = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_HOST);
  const char *origin = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Origin");
  const char *why = NULL;
  if (host != NULL &&
      !host_name_ok(http->config, host, host_name_len(host), over_unix_socket(connection))) {
    why = "Host: not a name of this server (see --server-name)";
  } else if (origin != NULL) {
    const char *rest = strncmp(origin, "http://", 7) == 0    ? origin + 7
                       : strncmp(origin, "https://", 8) == 0 ? origin + 8
                                                              : NULL;
    if (rest == NULL || host == NULL || strcasecmp(rest, host) != 0)
      why = "Origin: requests from other origins are refused";
  }
  if (why == NULL && (strcmp(method, "POST") == 0 || strcmp(method, "DELETE") == 0) &&
      MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "X-Pycached-Client") == NULL) {
    const char *type = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_CONTENT_TYPE);
    if (type == NULL || simple_content_type(type))
      why = "send X-Pycached-Client or a non-form Content-Type (e.g. text/x-python, "
            "application/json) with a request that changes state";
  }
  if (why == NULL)
    return true;
  pcc_answer answer;
  pcc_answer_init(&answer);
  pcc_answer_error(&answer, PCC_ERR_FORBIDDEN, "%s", why);
  *result = send_error(connection, &answer);
  return false;
}

/* ---- header and query values ------------------------------------------------------------- */

/* A request with a NUL byte in a header or a query argument (%00), name or value, is refused:
 * every reader takes a value as a C string and would see it cut at the NUL (`Authorization:
 * Bearer TOKEN\0junk` read as the token, a Host or Content-Length other than what a proxy in
 * front saw). A query argument's value_size counts the bytes after a %00. A header's does not in
 * libmicrohttpd before 0.9.77 (it is the value's strlen), so there the header lines are checked
 * where that version keeps them: in place in the connection's read buffer, from the request line
 * (`method` points at its start) over MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE bytes, the key and
 * the value of each line NUL-terminated and the line's CR and LF overwritten with NULs. Between
 * the end of one value and the next key there are then one or two NULs (its line end), and
 * between the last value and the end of the headers two to four (its line end and the empty
 * line); anything else, a byte that is not a NUL above all, is a line that went on after a NUL.
 * A header that is not in that place (a folded line, which RFC 9112 lets a server refuse) is
 * refused too. What this cannot see: a NUL right before a line end, which is where a CR would
 * be (the value is then read whole, without that NUL). */

typedef struct {
  const char *start, *end; /* the request's header bytes in the read buffer (old versions) */
  const char *value_end;   /* the end of the previous header's value, NULL before the first */
  const char *last_key;    /* the previous header's name */
  const char *bad;         /* the name of the first header or argument refused */
} values_scan;

/* Are the bytes [from, to) n_min..n_max NULs? */
static bool only_line_ends(const char *from, const char *to, size_t n_min, size_t n_max)
{
  if (to < from || (size_t)(to - from) < n_min || (size_t)(to - from) > n_max)
    return false;
  for (const char *p = from; p < to; p++)
    if (*p != '\0')
      return false;
  return true;
}

/* Every header and query argument: a NUL within its sizes. */
static enum MHD_Result scan_sizes(void *cls, enum MHD_ValueKind kind, const char *key,
                                  size_t key_size, const char *value, size_t value_size)
{
  (void)kind;
  values_scan *scan = cls;
  if ((key != NULL && memchr(key, '\0', key_size) != NULL) ||
      (value != NULL && memchr(value, '\0', value_size) != NULL)) {
    scan->bad = key != NULL ? key : "";
    return MHD_NO;
  }
  return MHD_YES;
}

#if MHD_VERSION < 0x00097700
/* Every header, in the order received: its line in place, nothing but line ends between it and
 * the line before. */
static enum MHD_Result scan_lines(void *cls, enum MHD_ValueKind kind, const char *key,
                                  size_t key_size, const char *value, size_t value_size)
{
  (void)kind;
  values_scan *scan = cls;
  const char *low = scan->value_end ? scan->value_end : scan->start;
  bool in_place = key != NULL && value != NULL && key > low && value > key + key_size &&
                  value + value_size < scan->end;
  if (!in_place) {
    scan->bad = key != NULL ? key : "";
    return MHD_NO;
  }
  if (scan->value_end != NULL && !only_line_ends(scan->value_end, key, 1, 2)) {
    scan->bad = scan->last_key; /* its line went on after its value */
    return MHD_NO;
  }
  scan->value_end = value + value_size;
  scan->last_key = key;
  return MHD_YES;
}
#endif

/* Refuses a request with a NUL byte in a header or query argument (see above): queues 400
 * bad-parameter naming it and returns false. method is the one libmicrohttpd passed. */
static bool values_clean(struct MHD_Connection *connection, const char *method,
                         enum MHD_Result *result)
{
  values_scan scan = {NULL, NULL, NULL, NULL, NULL};
  MHD_get_connection_values_n(connection, MHD_HEADER_KIND | MHD_GET_ARGUMENT_KIND, scan_sizes,
                              &scan);
#if MHD_VERSION < 0x00097700
  const union MHD_ConnectionInfo *info =
    MHD_get_connection_info(connection, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
  if (scan.bad == NULL && info != NULL) {
    scan.start = method;
    scan.end = method + info->header_size;
    MHD_get_connection_values_n(connection, MHD_HEADER_KIND, scan_lines, &scan);
    if (scan.bad == NULL && scan.value_end != NULL &&
        !only_line_ends(scan.value_end, scan.end, 2, 4))
      scan.bad = scan.last_key;
  }
#else
  (void)method;
#endif
  if (scan.bad == NULL)
    return true;
  char name[65]; /* the name as far as it goes, printable ASCII only: it is sent back as JSON */
  size_t len = 0;
  for (; scan.bad[len] != '\0' && len < sizeof name - 1; len++)
    name[len] = scan.bad[len] > 0x20 && scan.bad[len] < 0x7f ? scan.bad[len] : '?';
  name[len] = '\0';
  pcc_answer answer;
  pcc_answer_init(&answer);
  pcc_answer_error(&answer, PCC_ERR_BAD_PARAMETER, "a NUL byte in a header or query argument");
  pcc_answer_extra_string(&answer, "param", name);
  *result = send_error(connection, &answer);
  return false;
}

/* The route of path and method, or NULL after queueing 404 or 405. */
static const http_route *find_route(pcc_http *http, struct MHD_Connection *connection,
                                    const char *path, const char *method,
                                    enum MHD_Result *result)
{
  const http_route *same_path = NULL;
  for (size_t i = 0; i < http->n_routes; i++) {
    if (!pcc_http_path_matches(http->routes[i].route->path, path, NULL, NULL))
      continue;
    if (strcmp(method, http->routes[i].route->method) == 0)
      return &http->routes[i];
    same_path = &http->routes[i];
  }
  note_response(same_path ? 405 : 404,
                same_path ? same_path->not_allowed_len : http->not_found_len);
  *result = MHD_queue_response(connection, same_path ? 405 : 404,
                               same_path ? same_path->not_allowed : http->not_found);
  return NULL;
}

/* The 405 of a path: built once, with the methods its rows allow; *len gets its body's bytes. */
static struct MHD_Response *build_not_allowed(const pcc_http *http, const char *path,
                                              size_t *len)
{
  char allow[64] = "";
  size_t used = 0;
  for (size_t i = 0; i < http->n_routes; i++) {
    if (strcmp(http->routes[i].route->path, path) != 0)
      continue;
    int n = snprintf(allow + used, sizeof allow - used, "%s%s", used ? ", " : "",
                     http->routes[i].route->method);
    if (n > 0 && (size_t)n < sizeof allow - used)
      used += (size_t)n;
  }
  char message[128];
  snprintf(message, sizeof message, "this method is not allowed here; use %s", allow);
  cJSON *json = pcc_error_to_json("method-not-allowed", message);
  if (json != NULL)
    cJSON_AddStringToObject(json, "allow", allow);
  char *text = json ? cJSON_PrintUnformatted(json) : NULL;
  cJSON_Delete(json);
  *len = text ? strlen(text) : 0;
  struct MHD_Response *response = owned_response(text, *len);
  if (response != NULL) {
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, allow);
  }
  return response;
}

/* The body limit of a route, in bytes (0: no body). */
static uint64_t body_limit(const pcc_http *http, const pcc_route *route)
{
  if (route->body == PCC_ROUTE_NO_BODY)
    return 0;
  uint64_t limit;
  memcpy(&limit, (const char *)http->config + route->body - 1, sizeof limit);
  return limit;
}

/* 413 for a body over the route's limit, naming the option that raises it. */
static enum MHD_Result send_too_large(const pcc_http *http, struct MHD_Connection *connection,
                                      const pcc_route *route)
{
  pcc_answer answer;
  pcc_answer_init(&answer);
  const char *option = route->body ? pcc_config_option_for(route->body - 1) : NULL;
  pcc_answer_error(&answer, PCC_ERR_TOO_LARGE, "the body exceeds %s%s (%llu bytes)",
                     option ? "--" : "this endpoint's limit", option ? option : "",
                     (unsigned long long)body_limit(http, route));
  return send_error(connection, &answer);
}

/* ---- connections ----------------------------------------------------------------------- */

/* The table entry of a connection (NULL when it could not be tracked). */
static pcc_conn *conn_of(struct MHD_Connection *connection)
{
  const union MHD_ConnectionInfo *info =
    MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return info != NULL ? info->socket_context : NULL;
}

/* Is a route served on a reserve connection? Those of the admin role, so that an operator gets
 * through to a full server, and those open to all (role 0: /healthz, the admin page), which are
 * cheap and what a health check asks. */
static bool reserve_route(const pcc_route *route)
{
  return route->role == 0 || (route->role & PCC_ROLE_ADMIN) != 0;
}

/* Started: the connection's entry, taken at accept (take_connection), is libmicrohttpd's now (a
 * connection without one is shut down: without a deadline it could be held forever). Closed: it
 * leaves the table, before libmicrohttpd closes the descriptor. */
static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
  pcc_http *http = cls;
  if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
    pcc_conns_remove(http->conns, *socket_context);
    *socket_context = NULL;
    return;
  }
  const union MHD_ConnectionInfo *info =
    MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (info == NULL)
    return;
  *socket_context = pcc_conns_start(http->conns, info->connect_fd);
  if (*socket_context == NULL) /* its slot was given up (PCC_CONN_START_MS): no deadline */
    shutdown(info->connect_fd, SHUT_RDWR);
}

static uint64_t monotonic_ns(void)
{
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

/* A new request, its clock started (NULL without memory). */
static request *request_new(void)
{
  request *req = calloc(1, sizeof *req);
  if (req != NULL)
    req->note.start_ns = monotonic_ns();
  return req;
}

/* The request line of a request is in (libmicrohttpd's URI callback): a kept-alive connection
 * starts its header deadline. Returns the request, the *req_cls of its first call (NULL without
 * memory: the first call tries again). libmicrohttpd calls on_completed for every request this
 * has seen, answered or not. */
static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *connection)
{
  pcc_http *http = cls;
  pcc_conns_enter(http->conns, conn_of(connection), PCC_CONN_HEADERS, pcc_conns_now_ms());
  request *req = request_new();
  if (req != NULL) /* as sent, for a request libmicrohttpd answers itself (431); no query */
    req->note.path = strndup(uri, strcspn(uri, "?") < PCC_LOG_LINE_MAX ? strcspn(uri, "?")
                                                                      : PCC_LOG_LINE_MAX);
  return req;
}

/* ---- requests -------------------------------------------------------------------------- */

static const char *query_value(void *ctx, const char *name)
{
  return MHD_lookup_connection_value(ctx, MHD_GET_ARGUMENT_KIND, name);
}

/* Parses the route's parameters and arguments into the request; on a malformed or missing
 * parameter fills answer (400 naming it) and returns false. */
static bool parse_request(struct MHD_Connection *connection, const char *url, request *req,
                          pcc_answer *answer)
{
  const pcc_route *route = req->route->route;
  if (route->params) {
    const char *bad = NULL;
    pcc_proto_status rc = pcc_params_parse(query_value, connection, route->required,
                                           &req->request.params, &bad);
    if (rc != PCC_PROTO_OK) {
      pcc_answer_bad_parameter(answer, bad, "%s", pcc_proto_strerror(rc));
      return false;
    }
  }
  for (size_t i = 0; i < PCC_ROUTE_ARGS_MAX && route->args[i] != NULL; i++)
    req->request.args[i] = query_value(connection, route->args[i]);
  size_t start = 0, len = 0;
  if (strchr(route->path, '*') != NULL && pcc_http_path_matches(route->path, url, &start, &len))
    req->request.path_arg = strndup(url + start, len);
  req->request.body = req->body.len ? req->body.data : NULL;
  req->request.body_len = req->body.len;
  return true;
}

/* pcc_request's release_body: the handler holds its own copy of what it needs of the body. */
static void release_body(pcc_request *r)
{
  request *req = (request *)((char *)r - offsetof(request, request));
  pcc_dynbuf_free(&req->body);
  r->body = NULL;
  r->body_len = 0;
}

static void suspend_connection(void *ctx)
{
  MHD_suspend_connection(ctx);
}

static void resume_connection(void *ctx)
{
  MHD_resume_connection(ctx);
}

/* Sends the final answer of a request. A reserve connection is closed after it, which frees its
 * slot of the reserve. */
static enum MHD_Result send_final(struct MHD_Connection *connection, const request *req,
                                  pcc_answer *answer)
{
  if (pcc_conns_reserved(req->conn))
    pcc_answer_header(answer, MHD_HTTP_HEADER_CONNECTION, "close");
  return send_answer(connection, &req->request.params, answer, req->request.accept_zstd);
}

/* The final call of a request: run its handler (or finish its pending answer) and answer. */
static enum MHD_Result answer_request(struct MHD_Connection *connection, const char *url,
                                      request *req, const pcc_http *http)
{
  pcc_answer answer;
  pcc_answer_init(&answer);
  if (req->waiting) { /* resumed: the pending answer can be finished */
    req->waiting = false;
    pcc_answer pending = req->pending;
    pcc_answer_init(&req->pending);
    pending.finish(pending.pending, &req->request, &answer);
    return send_final(connection, req, &answer);
  }
  if (req->too_large)
    return send_too_large(http, connection, req->route->route);
  if (!parse_request(connection, url, req, &answer))
    return send_final(connection, req, &answer);
  req->route->route->handler(req->route->state, &req->request, &answer);
  if (answer.kind == PCC_ANSWER_PENDING) {
    req->pending = answer; /* the handler has suspended the connection */
    req->waiting = true;
    return MHD_YES;
  }
  return send_final(connection, req, &answer);
}

/* Appends upload data to the body, up to its route's limit; past it, discards the rest. The body
 * of a route that takes none is ignored. */
static void consume_upload(request *req, const char *data, size_t size)
{
  if (req->too_large || req->route->route->body == PCC_ROUTE_NO_BODY)
    return;
  if (pcc_dynbuf_add(&req->body, data, size) != PCC_PROTO_OK) {
    req->too_large = true; /* without memory too: nothing better to say than 413 */
    pcc_dynbuf_free(&req->body);
  }
}

static enum MHD_Result serve_request(pcc_http *http, struct MHD_Connection *connection,
                                     const char *url, const char *method,
                                     const char *upload_data, size_t *upload_data_size,
                                     request *req);

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
  (void)version;
  pcc_http *http = cls;
  request *req = *req_cls;
  if (req == NULL && (req = *req_cls = request_new()) == NULL)
    return MHD_NO;
  current_note = &req->note; /* the answers queued below fill it */
  enum MHD_Result result = serve_request(http, connection, url, method, upload_data,
                                         upload_data_size, req);
  current_note = NULL;
  return result;
}

/* on_request, for its request (never NULL). */
static enum MHD_Result serve_request(pcc_http *http, struct MHD_Connection *connection,
                                     const char *url, const char *method,
                                     const char *upload_data, size_t *upload_data_size,
                                     request *req)
{
  if (!req->begun) { /* the headers are in: the body's deadline starts */
    req->begun = true;
    snprintf(req->note.method, sizeof req->note.method, "%s", method);
    remote_address(connection, req->note.remote, sizeof req->note.remote);
    free(req->note.path); /* the path decoded */
    req->note.path = strndup(url, PCC_LOG_LINE_MAX);
    atomic_fetch_add(&pcc_counters_totals(http->counters)->requests, 1);
    pcc_conn *conn = conn_of(connection);
    pcc_conns_enter(http->conns, conn, PCC_CONN_BODY, pcc_conns_now_ms());
    enum MHD_Result result = MHD_YES;
    if (!client_certified(http, connection, conn, &result) ||
        !values_clean(connection, method, &result) ||
        !browser_safe(http, connection, method, &result))
      return result;
    const http_route *route = find_route(http, connection, url, method, &result);
    if (route == NULL)
      return result;
    if (pcc_conns_reserved(conn) && !reserve_route(route->route)) {
      note_response(503, http->busy_len);
      return MHD_queue_response(connection, 503, http->busy);
    }
    pcc_auth_identity who;
    if (!authorized(http, connection, route->route->role, &who, &result))
      return result;
    uint64_t limit = body_limit(http, route->route);
    const char *length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
    int64_t declared = 0;
    if (length != NULL && pcc_parse_i64(length, 0, INT64_MAX, &declared) == PCC_PROTO_OK &&
        (uint64_t)declared > limit && route->route->body != PCC_ROUTE_NO_BODY)
      return send_too_large(http, connection, route->route); /* before any body byte */
    req->route = route;
    req->conn = conn;
    req->request.route = route->route;
    req->request.suspend = suspend_connection;
    req->request.resume = resume_connection;
    req->request.ctx = connection;
    req->request.release_body = release_body;
    memcpy(req->request.ns, who.ns, sizeof who.ns);
    req->request.token = req->note.who.name; /* "" without a token */
    req->request.remote = req->note.remote;
    req->request.accept_zstd = accepts_zstd(MHD_lookup_connection_value(
      connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING));
    pcc_dynbuf_init(&req->body, (size_t)limit);
    if (declared > 0 && (uint64_t)declared <= limit)
      pcc_dynbuf_reserve(&req->body, (size_t)declared); /* one allocation for a known size */
    else if (limit > 0)
      pcc_dynbuf_reserve(&req->body, limit < HTTP_UPLOAD_FIRST ? limit : HTTP_UPLOAD_FIRST);
    req->counted = true;
    atomic_fetch_add(&http->active, 1);
    return MHD_YES;
  }
  if (req->route == NULL) { /* answered at its first call: the rest of its body is dropped */
    *upload_data_size = 0;
    return MHD_YES;
  }
  if (*upload_data_size != 0) {
    consume_upload(req, upload_data, *upload_data_size);
    *upload_data_size = 0;
    return MHD_YES;
  }
  pcc_conns_enter(http->conns, req->conn, PCC_CONN_ANSWERING, pcc_conns_now_ms());
  return answer_request(connection, url, req, http);
}

/* How a request ended other than answered in full, for its access line (NULL: answered). */
static const char *ended(enum MHD_RequestTerminationCode toe)
{
  switch (toe) {
  case MHD_REQUEST_TERMINATED_COMPLETED_OK: return NULL;
  case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED: return "timeout";
  case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN: return "shutdown";
  case MHD_REQUEST_TERMINATED_READ_ERROR: return "read-error";
  case MHD_REQUEST_TERMINATED_CLIENT_ABORT: return "client-abort";
  default: return "error";
  }
}

/* The access line of a request: who asked what, the answer and how long it took. The token is
 * never in it: only its name from the token file. */
static void access_line(pcc_log *log, struct MHD_Connection *connection, const access_note *note,
                        enum MHD_RequestTerminationCode toe)
{
  char remote[INET6_ADDRSTRLEN];
  pcc_log_field fields[10];
  size_t n = 0;
  fields[n++] = PCC_LOG_STR("remote", remote_address(connection, remote, sizeof remote));
  fields[n++] = PCC_LOG_STR("method", note->method[0] ? note->method : "-");
  fields[n++] = PCC_LOG_STR("path", note->path ? note->path : "-");
  unsigned status = note->status;
  const union MHD_ConnectionInfo *info =
    status == 0 ? MHD_get_connection_info(connection, MHD_CONNECTION_INFO_HTTP_STATUS) : NULL;
  if (info != NULL) /* answered by libmicrohttpd itself (a request line or header too long) */
    status = info->http_status;
  fields[n++] = PCC_LOG_INT("status", status);
  fields[n++] = PCC_LOG_INT("bytes", atomic_load(&note->bytes));
  fields[n++] = PCC_LOG_INT("us", (monotonic_ns() - note->start_ns) / 1000);
  if (note->token != NULL) {
    fields[n++] = PCC_LOG_STR("token", note->token);
    fields[n++] = PCC_LOG_STR("role", note->role);
  }
  if (ended(toe) != NULL)
    fields[n++] = PCC_LOG_STR("ended", ended(toe));
  pcc_log_write(log, PCC_LOG_INFO, "request", fields, n);
}

/* A request is over (answered, or its connection went away); a kept-alive connection is idle
 * until its next request line. */
static void on_completed(void *cls, struct MHD_Connection *connection, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
  pcc_http *http = cls;
  pcc_conns_enter(http->conns, conn_of(connection), PCC_CONN_IDLE, pcc_conns_now_ms());
  request *req = *req_cls;
  if (req == NULL)
    return;
  if (req->waiting) /* went away before it was answered */
    req->pending.abandon(req->pending.pending);
  if (http->access_log != NULL)
    access_line(http->access_log, connection, &req->note, toe);
  free(req->note.path);
  free((char *)req->request.path_arg);
  pcc_dynbuf_free(&req->body);
  bool counted = req->counted;
  free(req);
  *req_cls = NULL;
  if (counted)
    atomic_fetch_sub(&http->active, 1);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

/* A constant JSON response (static text); *len gets its bytes. NULL without memory. */
static struct MHD_Response *constant_json(const char *text, size_t *len)
{
  *len = strlen(text);
  struct MHD_Response *response =
    MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
  if (response != NULL)
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
  return response;
}

/* Copies the routes of the mounts and builds the constant responses. */
static int build_routes(pcc_http *http, const pcc_http_mount *mounts, size_t n)
{
  for (size_t m = 0; m < n; m++)
    for (size_t r = 0; r < mounts[m].n_routes; r++) {
      if (http->n_routes == HTTP_ROUTES_MAX) {
        pcc_logf(PCC_LOG_ERROR, "more than %d routes", HTTP_ROUTES_MAX);
        return -1;
      }
      http->routes[http->n_routes++] = (http_route){&mounts[m].routes[r], mounts[m].state, NULL, 0};
    }
  for (size_t i = 0; i < http->n_routes; i++) {
    for (size_t j = 0; j < i && http->routes[i].not_allowed == NULL; j++)
      if (strcmp(http->routes[j].route->path, http->routes[i].route->path) == 0) {
        http->routes[i].not_allowed = http->routes[j].not_allowed; /* shared, not owned */
        http->routes[i].not_allowed_len = http->routes[j].not_allowed_len;
      }
    if (http->routes[i].not_allowed == NULL &&
        (http->routes[i].not_allowed = build_not_allowed(http, http->routes[i].route->path,
                                                         &http->routes[i].not_allowed_len)) ==
          NULL)
      return -1;
  }
  http->not_found = constant_json("{\"error\":\"not-found\",\"message\":\"no such endpoint; "
                                  "see docs/API.md\"}",
                                  &http->not_found_len);
  http->busy = constant_json("{\"error\":\"busy\",\"message\":\"the server is at "
                             "--max-connections; try again after Retry-After seconds\"}",
                             &http->busy_len);
  if (http->not_found == NULL || http->busy == NULL)
    return -1;
  MHD_add_response_header(http->busy, MHD_HTTP_HEADER_RETRY_AFTER, HTTP_BUSY_RETRY);
  MHD_add_response_header(http->busy, MHD_HTTP_HEADER_CONNECTION, "close");
  return 0;
}

/* Raises the soft file-descriptor limit to what the connections need, up to the hard limit, and
 * warns when that is lower: out of descriptors, new connections are closed at once (listener.c)
 * until one closes. */
static void ensure_descriptors(const pcc_config *config)
{
  rlim_t need = (rlim_t)(config->max_connections + PCC_CONNECTION_RESERVE + config->threads +
                         HTTP_SPARE_FDS);
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) != 0 || nofile.rlim_cur == RLIM_INFINITY ||
      nofile.rlim_cur >= need)
    return;
  rlim_t was = nofile.rlim_cur;
  nofile.rlim_cur = nofile.rlim_max == RLIM_INFINITY || nofile.rlim_max >= need ? need
                                                                                : nofile.rlim_max;
  if (nofile.rlim_cur > was && setrlimit(RLIMIT_NOFILE, &nofile) != 0)
    nofile.rlim_cur = was;
  if (nofile.rlim_cur < need)
    pcc_logf(PCC_LOG_WARN, "%llu file descriptors (RLIMIT_NOFILE) for "
             "--max-connections %llu, which needs about %llu: raise the hard limit "
             "(ulimit -Hn, systemd's LimitNOFILE=)", (unsigned long long)nofile.rlim_cur,
             (unsigned long long)config->max_connections, (unsigned long long)need);
}

/* The listener's callback, the accept policy: the connection takes its entry in the table,
 * which applies --max-connections, the reserve and --max-connections-per-ip (a connection past
 * them is closed at once, rather than left in the listen backlog), then goes to libmicrohttpd.
 * libmicrohttpd's own limits are set past ours: in 0.9.75 a connection added from outside that
 * meets them in its worker thread leaves that thread waiting for a mutex it holds. */
static void take_connection(void *ctx, int fd, const struct sockaddr *addr, socklen_t addrlen)
{
  pcc_http *http = ctx;
  pcc_conn *conn = pcc_conns_take(http->conns, fd, addr, addrlen, pcc_conns_now_ms());
  if (conn == NULL) { /* past the reserve, or the address's share: closed at once */
    close(fd);
    return;
  }
  if (MHD_add_connection(http->daemon, fd, addr, addrlen) != MHD_YES)
    pcc_conns_remove(http->conns, conn); /* libmicrohttpd has closed fd */
}

/* libmicrohttpd's own messages (refused and cut connections), as warn lines of the log
 * ("libmicrohttpd: ..."). On a unix socket, 0.9.75 sets
 * TCP_NODELAY and TCP_CORK on every connection and logs each refusal (EOPNOTSUPP on AF_UNIX),
 * then a "Client may experience some delay" that cannot happen there (a unix socket has neither
 * Nagle nor corking): three lines a connection, dropped. cls is the pcc_http. */
static void mhd_log(void *cls, const char *format, va_list ap)
{
  const pcc_http *http = cls;
  static const char *const unix_noise[] = {"Setting %s option to %s state failed",
                                           "Failed to push the data from buffers to the network"};
  for (size_t i = 0; http->config->listen_path[0] != '\0' && i < 2; i++)
    if (strncmp(format, unix_noise[i], strlen(unix_noise[i])) == 0)
      return;
  char msg[1024];
  vsnprintf(msg, sizeof msg, format, ap);
  pcc_logf(PCC_LOG_WARN, "libmicrohttpd: %s", msg);
}

int pcc_http_start(const pcc_config *config, const pcc_http_mount *mounts, size_t n,
                   pcc_counters *counters, pcc_auth *auth, const pcc_tls *tls,
                   pcc_log *access_log, pcc_http **out)
{
  struct sockaddr_storage addr;
  memset(&addr, 0, sizeof addr);
  /* no listening socket of its own: listener.c accepts (libmicrohttpd's accept loop spins when
   * out of descriptors); MHD_USE_ITC wakes a thread of the pool for each added connection.
   * poll, not epoll: 0.9.75's epoll loop takes 128 events a call and, after a full batch, calls
   * again with the blocking timeout (the idle timeout) before it serves the events it has, so
   * a thread with 128 or 256 connections ready at once served none of them until another event
   * came (40 requests/s at 256 connections on one thread; test_connections.py, (f)). Under load
   * poll's scan of every connection was not measurable against epoll (docs/BENCHMARKS.md). */
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME |
                   MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET;
  struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
  /* a unix socket is opened by listener.c below too; libmicrohttpd takes its AF_UNIX peers */
  if (config->listen[0] == '\0') {
    /* a unix socket only */
  } else if (inet_pton(AF_INET, config->listen, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)config->port);
  } else if (inet_pton(AF_INET6, config->listen, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)config->port);
    flags |= MHD_USE_IPv6;
  } else {
    pcc_logf(PCC_LOG_ERROR, "--listen %s: not an IPv4 or IPv6 address", config->listen);
    return -1;
  }
  pcc_http *http = calloc(1, sizeof *http);
  if (http == NULL)
    return -1;
  http->counters = counters;
  http->auth = auth;
  http->tls = tls;
  http->access_log = access_log;
  http->config = config;
  if (build_routes(http, mounts, n) != 0) {
    pcc_logf(PCC_LOG_ERROR, "cannot build the route table");
    pcc_http_stop(http);
    return -1;
  }
  const pcc_conns_limits limits = {
    .max = config->max_connections,
    .reserve = PCC_CONNECTION_RESERVE,
    .per_ip = config->max_connections_per_ip,
    .header_ms = config->header_timeout * 1000,
    .body_ms = config->body_timeout * 1000,
    .idle_ms = config->idle_timeout * 1000,
    .reserve_ms = PCC_RESERVE_TIMEOUT * 1000,
    .tick_ms = HTTP_SWEEP_MS,
  };
  ensure_descriptors(config);
  pcc_conns_status rc = pcc_conns_open(&limits, &http->conns);
  if (rc != PCC_CONNS_OK) {
    pcc_logf(PCC_LOG_ERROR, "%s", pcc_conns_strerror(rc));
    pcc_http_stop(http);
    return -1;
  }
  /* never reached: each thread of the pool may get every connection the table admits */
  unsigned mhd_limit = (unsigned)((config->max_connections + PCC_CONNECTION_RESERVE) *
                                  (config->threads + 1));
  struct MHD_OptionItem tls_options[PCC_TLS_OPTIONS_MAX];
  flags |= pcc_tls_daemon_options(tls, tls_options);
  http->daemon = MHD_start_daemon(
    flags, 0, NULL, NULL, on_request, http, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, http, /* first */
    MHD_OPTION_THREAD_POOL_SIZE, (unsigned)config->threads, MHD_OPTION_CONNECTION_LIMIT,
    mhd_limit, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)config->idle_timeout,
    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)PCC_REQUEST_MEMORY, MHD_OPTION_NOTIFY_COMPLETED,
    on_completed, http, MHD_OPTION_NOTIFY_CONNECTION, on_connection, http,
    MHD_OPTION_URI_LOG_CALLBACK, on_request_line, http, MHD_OPTION_ARRAY, tls_options,
    MHD_OPTION_END);
  if (http->daemon == NULL) {
    pcc_logf(PCC_LOG_ERROR, "cannot start libmicrohttpd");
    pcc_http_stop(http);
    return -1;
  }
  pcc_listener_status listening = PCC_LISTENER_OK;
  if (config->listen_path[0] != '\0')
    listening = pcc_listener_open_unix(config->listen_path, config->socket_mode,
                                       config->socket_gid, take_connection, http,
                                       &http->unix_listener);
  if (listening != PCC_LISTENER_OK) {
    pcc_logf(PCC_LOG_ERROR, "cannot listen on unix:%s: %s%s", config->listen_path,
             pcc_listener_strerror(listening),
             listening == PCC_LISTENER_IN_USE ? " (stop it, or give another path)" : "");
    pcc_http_stop(http);
    return -1;
  }
  if (config->listen[0] != '\0')
    listening = pcc_listener_open((const struct sockaddr *)&addr,
                                  v4->sin_family == AF_INET ? sizeof *v4 : sizeof *v6,
                                  take_connection, http, &http->listener);
  if (listening != PCC_LISTENER_OK) {
    pcc_logf(PCC_LOG_ERROR, "cannot listen on %s port %llu: %s", config->listen,
             (unsigned long long)config->port, pcc_listener_strerror(listening));
    pcc_http_stop(http);
    return -1;
  }
  *out = http;
  return 0;
}

uint16_t pcc_http_port(const pcc_http *http)
{
  return http->listener != NULL ? pcc_listener_port(http->listener) : 0;
}

void pcc_http_quiesce(pcc_http *http)
{
  if (http != NULL) {
    pcc_listener_stop(http->listener);
    pcc_listener_stop(http->unix_listener);
  }
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
  pcc_listener_close(http->listener); /* first: nothing is added to a stopped daemon */
  pcc_listener_close(http->unix_listener);
  if (http->daemon != NULL)
    MHD_stop_daemon(http->daemon);
  for (size_t i = 0; i < http->n_routes; i++) {
    bool shared = false;
    for (size_t j = 0; j < i && !shared; j++)
      shared = http->routes[j].not_allowed == http->routes[i].not_allowed;
    if (http->routes[i].not_allowed != NULL && !shared)
      MHD_destroy_response(http->routes[i].not_allowed);
  }
  if (http->not_found != NULL)
    MHD_destroy_response(http->not_found);
  if (http->busy != NULL)
    MHD_destroy_response(http->busy);
  pcc_conns_close(http->conns); /* after the daemon: its connections have left the table */
  free(http);
}
