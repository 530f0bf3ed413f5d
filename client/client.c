/* client.c: libpycached, the client of the pycached HTTP API (docs/API.md).
 *
 * Requests are built here and carried by a transport chosen by the base URL's scheme
 * (transport.h): http1.c, libpycached's own HTTP/1.1 client on one kept-alive socket, for
 * http:// and, on a unix socket, unix:/PATH, and libcurl, loaded at the first https:// client,
 * for https:// (curl.c). Response
 * bodies are collected into a buffer with a hard limit; error bodies are decoded into the
 * client's last error; hit bodies are decoded and verified by proto's pcc_entry_from_json (or
 * taken raw with their X-Pycached-* headers) and then compared against the request. Downloads
 * (pcc_client_download) stream a 2xx body to a file descriptor instead. Tokens (pcc_token_*) are
 * read and checked here too, and sent as an Authorization header on every request. See
 * pycached.h for the contract.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <zstd.h>

#include "pycached.h"
#include "transport.h"

#define CLIENT_SOURCE_RETRIES 3
#define CLIENT_SOURCE_CHUNK 16384 /* bytes of a source file read at a time */
#define CLIENT_AUTH_PREFIX "Authorization: Bearer "
#define CLIENT_HEADER_LINES 6 /* the most header lines of one kind of request, with its NULL */

/* The transports, by scheme (transport.h). */
static const client_transport *const client_transports[] = {
  &client_http1_transport,
  &client_unix_transport,
  &client_curl_transport,
};

/* The headers of each kind of request: NULL-terminated lists of lines, the Authorization line
 * (when there is a token) last. */
typedef enum {
  CLIENT_POST,     /* compiles */
  CLIENT_CODE,     /* lookups */
  CLIENT_GET,      /* stats, health */
  CLIENT_REQUEST,  /* pcc_client_request */
  CLIENT_DOWNLOAD, /* pcc_client_download */
  CLIENT_KINDS
} client_kind;

struct pcc_client {
  const client_transport *transport;
  client_conn *conn;
  char *base_url; /* without a trailing '/' */
  long connect_timeout_ms;
  long timeout_ms;
  size_t max_response;
  const char *headers[CLIENT_KINDS][CLIENT_HEADER_LINES];
  char *auth_header; /* "Authorization: Bearer TOKEN", or NULL; wiped on close */
  bool raw_pyc;
  pcc_dynbuf body; /* the last response's body; max is max_response + 1, for a NUL */
  /* X-Pycached-* headers of the last response, "" when absent */
  char outcome[16], digest[PCC_DIGEST_HEX_LEN + 1], checksum[17], hash[16], validation[16];
  char compiler[64];
  char encoding[16]; /* its Content-Encoding, "" when absent */
  char retry_after[24]; /* its Retry-After, "" when absent */
  /* last error; the strings are owned copies */
  pcc_client_error err;
  char *err_error, *err_message, *err_reason, *err_param, *err_type, *err_role;
};

const char *pcc_client_strerror(pcc_client_status rc)
{
  switch (rc) {
  case PCC_CLIENT_OK: return "ok";
  case PCC_CLIENT_MISS: return "miss: nothing valid is stored for this source";
  case PCC_CLIENT_COMPILE_ERROR: return "the source does not compile";
  case PCC_CLIENT_UNSUPPORTED_MAGIC: return "the server has no compiler for this magic";
  case PCC_CLIENT_HTTP: return "the server answered with an error";
  case PCC_CLIENT_CONNECT: return "cannot connect to the server";
  case PCC_CLIENT_TIMEOUT: return "timed out";
  case PCC_CLIENT_PROTOCOL: return "malformed or inconsistent response from the server";
  case PCC_CLIENT_IO: return "cannot read the local file";
  case PCC_CLIENT_TOOBIG: return "over the size limit";
  case PCC_CLIENT_NOMEM: return "out of memory";
  case PCC_CLIENT_INVALID: return "invalid argument";
  case PCC_CLIENT_UNAUTHORIZED: return "unauthorized: no token, or one the server does not accept";
  case PCC_CLIENT_FORBIDDEN: return "forbidden: the server refused the request";
  }
  return "unknown status";
}

/* ---- last error -------------------------------------------------------------------------- */

static void client_error_reset(pcc_client *client)
{
  free(client->err_error);
  free(client->err_message);
  free(client->err_reason);
  free(client->err_param);
  free(client->err_type);
  free(client->err_role);
  client->err_error = client->err_message = client->err_reason = NULL;
  client->err_param = client->err_type = client->err_role = NULL;
  client->err =
    (pcc_client_error){.http_status = 0, .line = -1, .offset = -1, .retry_after = -1};
}

/* Copies s (which may be NULL) into *slot and points *field at it; out of memory leaves NULL. */
static void client_error_set(char **slot, const char **field, const char *s)
{
  free(*slot);
  *slot = s ? strdup(s) : NULL;
  *field = *slot;
}

static pcc_client_status client_fail(pcc_client *client, pcc_client_status rc,
                                     const char *message)
{
  client_error_set(&client->err_message, &client->err.message, message);
  return rc;
}

const pcc_client_error *pcc_client_last_error(const pcc_client *client)
{
  return &client->err;
}

pcc_client_status pcc_client_set_timeout(pcc_client *client, long timeout_ms)
{
  if (client == NULL || timeout_ms < 0)
    return PCC_CLIENT_INVALID;
  client->timeout_ms = timeout_ms ? timeout_ms : PCC_CLIENT_DEFAULT_TIMEOUT_MS;
  return PCC_CLIENT_OK;
}

const char *pcc_client_last_outcome(const pcc_client *client)
{
  return client->outcome;
}

const char *pcc_client_last_body(const pcc_client *client, size_t *len_out)
{
  const pcc_dynbuf *buf = &client->body;
  if (len_out)
    *len_out = buf->data ? buf->len : 0;
  return buf->data ? buf->data : "";
}

/* ---- responses ------------------------------------------------------------------------- */

/* Keeps an X-Pycached-* header of a response (one line, with or without its CRLF). A value
 * longer than its buffer is dropped, which the checks of a hit then report. */
static void client_header_line(pcc_client *client, const char *line, size_t len)
{
  const struct {
    const char *name;
    char *buf;
    size_t cap;
  } wanted[] = {
    {"x-pycached-outcome:", client->outcome, sizeof client->outcome},
    {"x-pycached-digest:", client->digest, sizeof client->digest},
    {"x-pycached-checksum:", client->checksum, sizeof client->checksum},
    {"x-pycached-hash:", client->hash, sizeof client->hash},
    {"x-pycached-validation:", client->validation, sizeof client->validation},
    {"x-pycached-compiler:", client->compiler, sizeof client->compiler},
    {"content-encoding:", client->encoding, sizeof client->encoding},
    {"retry-after:", client->retry_after, sizeof client->retry_after},
  };
  for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++) {
    size_t n = strlen(wanted[i].name);
    if (len <= n || strncasecmp(line, wanted[i].name, n) != 0)
      continue;
    const char *value = line + n;
    size_t value_len = len - n;
    while (value_len > 0 && (*value == ' ' || *value == '\t'))
      value++, value_len--;
    while (value_len > 0 && (value[value_len - 1] == '\r' || value[value_len - 1] == '\n' ||
                             value[value_len - 1] == ' '))
      value_len--;
    if (value_len < wanted[i].cap) {
      memcpy(wanted[i].buf, value, value_len);
      wanted[i].buf[value_len] = '\0';
    }
  }
}

/* Hands each line of a header block (lines ending in "\n"; a last one may lack it) to
 * client_header_line. */
static void client_header_lines(pcc_client *client, const char *headers, size_t len)
{
  for (size_t at = 0; at < len;) {
    const char *nl = memchr(headers + at, '\n', len - at);
    size_t line = nl ? (size_t)(nl - (headers + at)) + 1 : len - at;
    client_header_line(client, headers + at, line);
    at += line;
  }
}

/* Replaces a body that came with Content-Encoding: zstd by what it decompresses to: one frame
 * that states its size, at most max_response bytes (checked before anything is allocated). */
static pcc_client_status client_decode_zstd(pcc_client *client)
{
  pcc_dynbuf *body = &client->body;
  unsigned long long size = body->data ? ZSTD_getFrameContentSize(body->data, body->len)
                                       : ZSTD_CONTENTSIZE_ERROR;
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN ||
      ZSTD_findFrameCompressedSize(body->data, body->len) != body->len)
    return client_fail(client, PCC_CLIENT_PROTOCOL, "a zstd body that is not one sized frame");
  if (size > client->max_response)
    return client_fail(client, PCC_CLIENT_TOOBIG,
                       "the decompressed response is over the client's max_response limit");
  pcc_dynbuf out;
  pcc_dynbuf_init(&out, client->max_response + 1);
  if (pcc_dynbuf_reserve(&out, (size_t)size + 1) != PCC_PROTO_OK)
    return client_fail(client, PCC_CLIENT_NOMEM, "out of memory");
  size_t n = ZSTD_decompress(out.data, (size_t)size, body->data, body->len);
  if (ZSTD_isError(n) || n != size) {
    pcc_dynbuf_free(&out);
    return client_fail(client, PCC_CLIENT_PROTOCOL, "a damaged zstd body");
  }
  pcc_dynbuf_commit(&out, n);
  pcc_dynbuf_free(body);
  *body = out;
  return PCC_CLIENT_OK;
}

/* Keeps the body NUL-terminated (the NUL is not counted; max_response + 1 leaves room). */
static void client_body_terminate(pcc_client *client)
{
  if (client->body.data != NULL && pcc_dynbuf_reserve(&client->body, 1) == PCC_PROTO_OK)
    ((char *)client->body.data)[client->body.len] = '\0';
}

/* ---- open/close --------------------------------------------------------------------------- */

/* The TLS files of a configuration: none for http:// (PCC_CLIENT_INVALID: they would protect
 * nothing), a key only with a certificate, each path at most PCC_PATH_MAX bytes and readable now
 * (PCC_CLIENT_IO, errno set, rather than a handshake that fails at the first request). */
static pcc_client_status client_tls_check(const client_tls *tls, bool https)
{
  const char *const files[] = {tls->ca_file, tls->client_cert, tls->client_key};
  bool any = false;
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    if (files[i] == NULL)
      continue;
    any = true;
    if (files[i][0] == '\0' || strnlen(files[i], PCC_PATH_MAX + 1) > PCC_PATH_MAX)
      return PCC_CLIENT_INVALID;
  }
  if (any && !https)
    return PCC_CLIENT_INVALID;
  if (tls->client_key != NULL && tls->client_cert == NULL)
    return PCC_CLIENT_INVALID;
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    if (files[i] == NULL)
      continue;
    int fd = open(files[i], O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
      return PCC_CLIENT_IO;
    close(fd);
  }
  return PCC_CLIENT_OK;
}

pcc_client_status pcc_client_open(const pcc_client_config *config, pcc_client **out)
{
  pcc_client_config defaults = {0};
  if (config == NULL)
    config = &defaults;
  if (config->connect_timeout_ms < 0 || config->timeout_ms < 0)
    return PCC_CLIENT_INVALID;
  const char *url = config->base_url ? config->base_url : PCC_CLIENT_DEFAULT_URL;
  size_t url_len = strnlen(url, PCC_CLIENT_URL_MAX + 1);
  const client_transport *transport = NULL;
  for (size_t i = 0; i < sizeof client_transports / sizeof client_transports[0]; i++)
    if (strncmp(url, client_transports[i]->scheme, strlen(client_transports[i]->scheme)) == 0)
      transport = client_transports[i];
  if (url_len == 0 || url_len > PCC_CLIENT_URL_MAX || transport == NULL)
    return PCC_CLIENT_INVALID;
  for (size_t i = 0; i < url_len; i++)
    if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f || url[i] == '?' || url[i] == '#')
      return PCC_CLIENT_INVALID;
  while (url_len > 0 && url[url_len - 1] == '/')
    url_len--;
  if (config->token != NULL && pcc_token_check(config->token) != PCC_CLIENT_OK)
    return PCC_CLIENT_INVALID;
  const client_tls tls = {config->ca_file, config->client_cert, config->client_key};
  pcc_client_status tls_rc = client_tls_check(&tls, transport == &client_curl_transport);
  if (tls_rc != PCC_CLIENT_OK)
    return tls_rc;

  pcc_client *client = calloc(1, sizeof *client);
  if (client == NULL)
    return PCC_CLIENT_NOMEM;
  client->transport = transport;
  client->err =
    (pcc_client_error){.http_status = 0, .line = -1, .offset = -1, .retry_after = -1};
  client->connect_timeout_ms = config->connect_timeout_ms ? config->connect_timeout_ms
                                                          : PCC_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
  client->timeout_ms = config->timeout_ms ? config->timeout_ms : PCC_CLIENT_DEFAULT_TIMEOUT_MS;
  client->max_response = config->max_response ? config->max_response
                                              : PCC_CLIENT_DEFAULT_MAX_RESPONSE;
  if (client->max_response > SIZE_MAX / 2)
    client->max_response = SIZE_MAX / 2;
  pcc_dynbuf_init(&client->body, client->max_response + 1); /* + 1: the NUL */
  client->raw_pyc = config->raw_pyc;
  client->base_url = strndup(url, url_len);
  const char *accept_zstd = config->accept_zstd ? "Accept-Encoding: zstd" : NULL;
  const char *code_zstd = config->code_zstd ? "Accept-Encoding: zstd" : NULL;
  if (client->base_url == NULL) {
    pcc_client_close(client);
    return PCC_CLIENT_NOMEM;
  }
  pcc_client_status rc = transport->open(client->base_url, &tls, &client->conn);
  if (rc != PCC_CLIENT_OK) {
    pcc_client_close(client);
    return rc;
  }
  if (config->token != NULL) {
    size_t n = sizeof CLIENT_AUTH_PREFIX + strlen(config->token);
    if ((client->auth_header = malloc(n)) == NULL) {
      pcc_client_close(client);
      return PCC_CLIENT_NOMEM;
    }
    snprintf(client->auth_header, n, "%s%s", CLIENT_AUTH_PREFIX, config->token);
  }
  const char *accept_code = client->raw_pyc ? "Accept: application/x-python-pyc"
                                            : "Accept: application/json";
  /* X-Pycached-Client on every request: the server refuses state-changing requests that a web
   * page could make a browser send, and a page cannot add this header without asking first */
  static const char client_header[] = "X-Pycached-Client: libpycached/" PCC_VERSION;
  const char *lines[CLIENT_KINDS][CLIENT_HEADER_LINES - 1] = {
    [CLIENT_POST] = {"Content-Type: application/octet-stream", accept_code, client_header,
                     code_zstd},
    [CLIENT_CODE] = {accept_code, client_header, code_zstd},
    [CLIENT_GET] = {"Accept: application/json", client_header},
    [CLIENT_REQUEST] = {"Content-Type: application/json", "Accept: application/json",
                        client_header, accept_zstd},
    [CLIENT_DOWNLOAD] = {"Accept: application/octet-stream", client_header},
  };
  for (size_t kind = 0; kind < CLIENT_KINDS; kind++) {
    size_t n = 0;
    for (size_t j = 0; j < CLIENT_HEADER_LINES - 1 && lines[kind][j] != NULL; j++)
      client->headers[kind][n++] = lines[kind][j];
    if (client->auth_header != NULL)
      client->headers[kind][n++] = client->auth_header;
    client->headers[kind][n] = NULL;
  }
  *out = client;
  return PCC_CLIENT_OK;
}

void pcc_client_close(pcc_client *client)
{
  if (client == NULL)
    return;
  if (client->conn != NULL)
    client->transport->close(client->conn);
  if (client->auth_header != NULL) {
    explicit_bzero(client->auth_header, strlen(client->auth_header));
    free(client->auth_header);
  }
  pcc_dynbuf_free(&client->body);
  client_error_reset(client);
  free(client->base_url);
  free(client);
}

/* ---- one request ------------------------------------------------------------------------ */

static void client_error_field(const cJSON *obj, const char *name,
                               char **slot, const char **field)
{
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
  if (cJSON_IsString(item))
    client_error_set(slot, field, item->valuestring);
}

/* A whole number of obj's field within +-2^53, else -1 (absent, a fraction, out of range). */
static int64_t client_json_int(const cJSON *obj, const char *name)
{
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
  int64_t value;
  if (!cJSON_IsNumber(item) || !pcc_double_to_i64(item->valuedouble, &value) ||
      value < -PCC_JSON_INT_MAX || value > PCC_JSON_INT_MAX)
    return -1;
  return value;
}

/* Decodes a non-2xx response into the last error and maps its "error" code. */
static pcc_client_status client_map_http_error(pcc_client *client, long status)
{
  client->err.http_status = status;
  int64_t retry_after;
  pcc_proto_status prc =
    pcc_parse_i64(client->retry_after, 0, PCC_CLIENT_RETRY_AFTER_MAX, &retry_after);
  if (prc == PCC_PROTO_OK && client->retry_after[0] != '-')
    client->err.retry_after = retry_after;
  else if (prc == PCC_PROTO_RANGE && client->retry_after[0] != '-')
    client->err.retry_after = PCC_CLIENT_RETRY_AFTER_MAX; /* a longer wait, bounded */
  const pcc_dynbuf *body = &client->body;
  cJSON *obj = body->data ? cJSON_ParseWithLength(body->data, body->len) : NULL;
  pcc_client_status rc = PCC_CLIENT_HTTP;
  if (cJSON_IsObject(obj)) {
    client_error_field(obj, "error", &client->err_error, &client->err.error);
    client_error_field(obj, "message", &client->err_message, &client->err.message);
    client_error_field(obj, "reason", &client->err_reason, &client->err.reason);
    client_error_field(obj, "param", &client->err_param, &client->err.param);
    client_error_field(obj, "type", &client->err_type, &client->err.type);
    client_error_field(obj, "role", &client->err_role, &client->err.role);
    client->err.line = client_json_int(obj, "line");
    client->err.offset = client_json_int(obj, "offset");
    const char *code = client->err.error;
    if (code && strcmp(code, "miss") == 0)
      rc = PCC_CLIENT_MISS;
    else if (code && strcmp(code, "compile-error") == 0)
      rc = PCC_CLIENT_COMPILE_ERROR;
    else if (code && strcmp(code, "unsupported-magic") == 0)
      rc = PCC_CLIENT_UNSUPPORTED_MAGIC;
  }
  /* by status, whatever the body: a proxy's 401 means the same */
  if (status == 401)
    rc = PCC_CLIENT_UNAUTHORIZED;
  else if (status == 403)
    rc = PCC_CLIENT_FORBIDDEN;
  if (client->err.message == NULL) {
    char text[64];
    snprintf(text, sizeof text, "HTTP status %ld", status);
    client_error_set(&client->err_message, &client->err.message, text);
  }
  cJSON_Delete(obj);
  return rc;
}

/* Forgets the last response: its body and the X-Pycached-* headers. */
static void client_response_reset(pcc_client *client)
{
  pcc_dynbuf_free(&client->body);
  client->outcome[0] = client->digest[0] = client->checksum[0] = client->hash[0] = '\0';
  client->validation[0] = client->compiler[0] = client->encoding[0] = '\0';
  client->retry_after[0] = '\0';
}

/* A response has arrived whole with this status: PCC_CLIENT_OK for a 2xx, else the error it
 * maps to (the details in the last error). *status_out (may be NULL) gets the status. */
static pcc_client_status client_response_status(pcc_client *client, long status,
                                                long *status_out)
{
  if (status_out)
    *status_out = status;
  if (status < 200 || status > 299)
    return client_map_http_error(client, status);
  return PCC_CLIENT_OK;
}

/* Takes what a transport returned: the X-Pycached-* headers, a NUL after the body, the error
 * (response->message) or the status's. Frees response->headers. */
static pcc_client_status client_finish(pcc_client *client, pcc_client_status rc,
                                       client_response *response, long *status_out)
{
  if (rc == PCC_CLIENT_OK)
    client_header_lines(client, response->headers.data, response->headers.len);
  pcc_dynbuf_free(&response->headers);
  if (rc == PCC_CLIENT_OK && client->encoding[0] != '\0') {
    if (strcasecmp(client->encoding, "zstd") == 0)
      rc = client_decode_zstd(client);
    else if (strcasecmp(client->encoding, "identity") != 0)
      rc = client_fail(client, PCC_CLIENT_PROTOCOL, "a content encoding other than zstd");
    if (rc != PCC_CLIENT_OK) {
      client_body_terminate(client);
      return rc;
    }
  }
  client_body_terminate(client);
  if (rc != PCC_CLIENT_OK) {
    rc = client_fail(client, rc, response->message);
    if (rc == PCC_CLIENT_IO)
      errno = response->fd_errno;
    return rc;
  }
  return client_response_status(client, response->status, status_out);
}

/* Performs one request to url: method "GET", "DELETE", or "POST" of body_len bytes of body
 * (NULL: an empty body), with the headers of kind. On PCC_CLIENT_OK the response was 2xx and
 * client->body holds it (possibly empty, data may be NULL), or fd got it when fd >= 0 (at most
 * PCC_DOWNLOAD_MAX bytes; *written_out, when not NULL, gets their count, also on failure).
 * *status_out gets the HTTP status whenever a response arrived. */
static pcc_client_status client_perform(pcc_client *client, const char *url, const char *method,
                                        const void *body, size_t body_len, client_kind kind,
                                        int fd, uint64_t *written_out, long *status_out)
{
  client_response_reset(client);
  client_request request = {
    .method = method,
    .url = url,
    .headers = client->headers[kind],
    .body = body,
    .body_len = body_len,
    .connect_timeout_ms = client->connect_timeout_ms,
    .timeout_ms = client->timeout_ms,
    .body_out = &client->body,
    .fd = fd,
    .fd_max = PCC_DOWNLOAD_MAX,
  };
  client_response response = {0};
  pcc_dynbuf_init(&response.headers, PCC_CLIENT_HEADERS_MAX);
  pcc_client_status rc = client->transport->perform(client->conn, &request, &response);
  if (written_out)
    *written_out = response.written;
  return client_finish(client, rc, &response, status_out);
}

/* ---- URLs ------------------------------------------------------------------------------ */

/* Builds base_url + "/v1/..." with the query of a lookup or compile. Caller frees *out. */
static pcc_client_status client_code_url(pcc_client *client, const char *endpoint,
                                         const pcc_magic *magic, int opt,
                                         const pcc_source *source, bool with_hash, char **out)
{
  if (magic == NULL || source == NULL || source->path == NULL || opt < 0 || opt > PCC_OPT_MAX ||
      strnlen(source->path, PCC_PATH_MAX + 1) > PCC_PATH_MAX || source->mtime < 0 ||
      source->size > (uint64_t)INT64_MAX)
    return client_fail(client, PCC_CLIENT_INVALID, "invalid lookup or compile argument");
  char magic_hex[2 * PCC_MAGIC_LEN + 1], digest_hex[PCC_DIGEST_HEX_LEN + 1];
  char extra[96] = "";
  pcc_magic_to_hex(magic, magic_hex);
  if (with_hash) {
    pcc_digest_to_hex(&source->digest, digest_hex);
    snprintf(extra, sizeof extra, "&hash=%" PRId32 "&digest=%s", source->hash, digest_hex);
  }
  pcc_dynbuf escaped;
  pcc_dynbuf_init(&escaped, 3 * PCC_PATH_MAX + 1);
  if (pcc_dynbuf_add_escaped(&escaped, source->path, strlen(source->path)) != PCC_PROTO_OK ||
      pcc_dynbuf_add(&escaped, "", 1) != PCC_PROTO_OK) {
    pcc_dynbuf_free(&escaped);
    return client_fail(client, PCC_CLIENT_NOMEM, "out of memory");
  }
  const char *path = escaped.data;
  const char *fmt = "%s%s?magic=%s&opt=%d&path=%s&mtime=%" PRId64 "&size=%" PRIu64 "%s";
  int n = snprintf(NULL, 0, fmt, client->base_url, endpoint, magic_hex, opt, path, source->mtime,
                   source->size, extra);
  char *url = NULL;
  if (n > 0 && n < PCC_CLIENT_REQUEST_URL_MAX && (url = malloc((size_t)n + 1)) != NULL)
    snprintf(url, (size_t)n + 1, fmt, client->base_url, endpoint, magic_hex, opt, path,
             source->mtime, source->size, extra);
  pcc_dynbuf_free(&escaped);
  if (url == NULL)
    return client_fail(client, n > 0 && n < PCC_CLIENT_REQUEST_URL_MAX ? PCC_CLIENT_NOMEM
                                                                       : PCC_CLIENT_INVALID,
                       "cannot build the request URL");
  *out = url;
  return PCC_CLIENT_OK;
}

/* ---- hits ------------------------------------------------------------------------------- */

/* Builds the entry of a raw pyc response (body and X-Pycached-* headers) and verifies its
 * checksum and header, as pcc_entry_from_json does for the JSON form. */
static pcc_proto_status client_entry_from_raw(pcc_client *client, int opt,
                                              const pcc_source *source, pcc_entry **out)
{
  pcc_entry *entry = calloc(1, sizeof *entry);
  if (entry == NULL)
    return PCC_PROTO_NOMEM;
  pcc_entry_view *v = &entry->view;
  const pcc_dynbuf *body = &client->body;
  int64_t hash = 0;
  pcc_pyc_header header, expected;
  pcc_proto_status rc = PCC_PROTO_INVALID;
  if (pcc_digest_from_hex(client->digest, &v->digest) == PCC_PROTO_OK &&
      pcc_checksum_from_hex(client->checksum, &v->checksum) == PCC_PROTO_OK &&
      pcc_parse_i64(client->hash, INT32_MIN, INT32_MAX, &hash) == PCC_PROTO_OK) {
    rc = pcc_checksum(body->data, body->len) == v->checksum ? PCC_PROTO_OK : PCC_PROTO_CHECKSUM;
  }
  if (rc == PCC_PROTO_OK)
    rc = pcc_pyc_header_parse(body->data, body->len, &header);
  if (rc == PCC_PROTO_OK) {
    pcc_pyc_header_init(&expected, &header.magic, source->mtime, source->size);
    if (header.mtime != expected.mtime || header.size != expected.size)
      rc = PCC_PROTO_HEADER;
  }
  if (rc == PCC_PROTO_OK) {
    entry->path_owned = strdup(source->path);
    entry->compiler_owned = strdup(client->compiler);
    entry->pyc_owned = malloc(body->len);
    if (!entry->path_owned || !entry->compiler_owned || !entry->pyc_owned)
      rc = PCC_PROTO_NOMEM;
  }
  if (rc != PCC_PROTO_OK) {
    pcc_entry_free(entry);
    return rc;
  }
  memcpy(entry->pyc_owned, body->data, body->len);
  v->magic = header.magic;
  v->opt = opt; /* not in the raw form: the request's, which the URL carried */
  v->path = entry->path_owned;
  v->mtime = source->mtime;
  v->size = source->size;
  v->hash = (int32_t)hash;
  v->hash_checked = strcmp(client->validation, "hash") == 0;
  v->pyc = entry->pyc_owned;
  v->pyc_len = body->len;
  v->compiler = entry->compiler_owned;
  *out = entry;
  return PCC_PROTO_OK;
}

/* Decodes and verifies the hit in client->body against the request. */
static pcc_client_status client_take_entry(pcc_client *client, const pcc_magic *magic, int opt,
                                           const pcc_source *source, bool hash_sent,
                                           pcc_entry **out)
{
  const pcc_dynbuf *body = &client->body;
  if (body->data == NULL)
    return client_fail(client, PCC_CLIENT_PROTOCOL, "empty response body");
  pcc_entry *entry = NULL;
  pcc_proto_status prc = client->raw_pyc ? client_entry_from_raw(client, opt, source, &entry)
                                         : pcc_entry_from_json(body->data, body->len, &entry);
  if (prc == PCC_PROTO_NOMEM)
    return client_fail(client, PCC_CLIENT_NOMEM, "out of memory");
  if (prc != PCC_PROTO_OK)
    return client_fail(client, PCC_CLIENT_PROTOCOL, pcc_proto_strerror(prc));
  const pcc_entry_view *v = &entry->view;
  const char *mismatch = NULL;
  if (!pcc_magic_equal(&v->magic, magic))
    mismatch = "the entry's magic differs from the request's";
  else if (v->opt != opt)
    mismatch = "the entry's opt differs from the request's";
  else if (v->mtime != source->mtime)
    mismatch = "the entry's mtime differs from the request's";
  else if (v->size != source->size)
    mismatch = "the entry's size differs from the request's";
  else if (hash_sent && v->hash != source->hash)
    mismatch = "the entry's hash differs from the request's";
  else if (hash_sent && !pcc_digest_equal(&v->digest, &source->digest))
    mismatch = "the entry's digest differs from the request's";
  if (mismatch) {
    pcc_entry_free(entry);
    return client_fail(client, PCC_CLIENT_PROTOCOL, mismatch);
  }
  *out = entry;
  return PCC_CLIENT_OK;
}

pcc_client_status pcc_client_lookup(pcc_client *client, const pcc_magic *magic, int opt,
                                    const pcc_source *source, bool send_hash, pcc_entry **out)
{
  if (client == NULL)
    return PCC_CLIENT_INVALID;
  client_error_reset(client);
  if (out == NULL)
    return client_fail(client, PCC_CLIENT_INVALID, "out is NULL");
  char *url = NULL;
  pcc_client_status rc = client_code_url(client, "/v1/code", magic, opt, source, send_hash, &url);
  if (rc == PCC_CLIENT_OK)
    rc = client_perform(client, url, "GET", NULL, 0, CLIENT_CODE, -1, NULL, NULL);
  free(url);
  if (rc == PCC_CLIENT_OK)
    rc = client_take_entry(client, magic, opt, source, send_hash, out);
  return rc;
}

pcc_client_status pcc_client_replay_lookup(pcc_client *client, const pcc_magic *magic, int opt,
                                           const pcc_source *source, bool send_hash, long status,
                                           const char *headers, size_t headers_len,
                                           const void *body, size_t body_len, pcc_entry **out)
{
  if (client == NULL)
    return PCC_CLIENT_INVALID;
  client_error_reset(client);
  if (out == NULL || magic == NULL || source == NULL || source->path == NULL ||
      (headers == NULL && headers_len > 0) || (body == NULL && body_len > 0))
    return client_fail(client, PCC_CLIENT_INVALID, "invalid replay argument");
  client_response_reset(client);
  /* what a transport hands over: the header lines, the body within max_response, the status */
  client_header_lines(client, headers, headers_len);
  pcc_client_status rc = PCC_CLIENT_OK;
  pcc_proto_status prc = body_len > client->body.max - 1 ? PCC_PROTO_RANGE
                                                         : pcc_dynbuf_add(&client->body, body,
                                                                          body_len);
  if (prc == PCC_PROTO_RANGE)
    rc = client_fail(client, PCC_CLIENT_TOOBIG,
                     "the response is over the client's max_response limit");
  else if (prc != PCC_PROTO_OK)
    rc = client_fail(client, PCC_CLIENT_NOMEM, "out of memory");
  client_body_terminate(client);
  if (rc == PCC_CLIENT_OK)
    rc = client_response_status(client, status, NULL);
  if (rc == PCC_CLIENT_OK)
    rc = client_take_entry(client, magic, opt, source, send_hash, out);
  return rc;
}

pcc_client_status pcc_client_replay_response(pcc_client *client, const pcc_magic *magic, int opt,
                                             const pcc_source *source, bool send_hash,
                                             const void *bytes, size_t len, pcc_entry **out)
{
  if (client == NULL)
    return PCC_CLIENT_INVALID;
  client_error_reset(client);
  if (out == NULL || magic == NULL || source == NULL || source->path == NULL ||
      (bytes == NULL && len > 0))
    return client_fail(client, PCC_CLIENT_INVALID, "invalid replay argument");
  if (client->transport->replay == NULL)
    return client_fail(client, PCC_CLIENT_INVALID, "this client's transport cannot replay");
  client_response_reset(client);
  client_request request = {
    .method = "GET",
    .url = client->base_url,
    .headers = client->headers[CLIENT_CODE],
    .connect_timeout_ms = client->connect_timeout_ms,
    .timeout_ms = client->timeout_ms,
    .body_out = &client->body,
    .fd = -1,
  };
  client_response response = {0};
  pcc_dynbuf_init(&response.headers, PCC_CLIENT_HEADERS_MAX);
  pcc_client_status rc = client->transport->replay(client->conn, &request, bytes, len, &response);
  rc = client_finish(client, rc, &response, NULL);
  if (rc == PCC_CLIENT_OK)
    rc = client_take_entry(client, magic, opt, source, send_hash, out);
  return rc;
}

pcc_client_status pcc_client_compile(pcc_client *client, const pcc_magic *magic, int opt,
                                     const pcc_source *source, pcc_entry **out)
{
  if (client == NULL)
    return PCC_CLIENT_INVALID;
  client_error_reset(client);
  if (out == NULL || source == NULL || (source->data == NULL && source->len != 0) ||
      source->len != source->size)
    return client_fail(client, PCC_CLIENT_INVALID, "invalid compile argument");
  char *url = NULL;
  pcc_client_status rc = client_code_url(client, "/v1/compile", magic, opt, source, true, &url);
  if (rc == PCC_CLIENT_OK)
    rc = client_perform(client, url, "POST", source->data, source->len, CLIENT_POST, -1, NULL,
                        NULL);
  free(url);
  if (rc == PCC_CLIENT_OK)
    rc = client_take_entry(client, magic, opt, source, true, out);
  return rc;
}

/* ---- stats and health ------------------------------------------------------------------ */

/* Builds base_url + path_and_query (checked: starts with '/', no spaces or control characters,
 * within PCC_CLIENT_REQUEST_URL_MAX). Caller frees *out. */
static pcc_client_status client_plain_url(pcc_client *client, const char *path_and_query,
                                          char **out)
{
  if (path_and_query == NULL || path_and_query[0] != '/')
    return client_fail(client, PCC_CLIENT_INVALID, "the path must start with '/'");
  size_t len = strnlen(path_and_query, PCC_CLIENT_REQUEST_URL_MAX);
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)path_and_query[i] <= 0x20 || path_and_query[i] == 0x7f)
      return client_fail(client, PCC_CLIENT_INVALID, "the path has spaces or control characters");
  int n = snprintf(NULL, 0, "%s%s", client->base_url, path_and_query);
  if (n <= 0 || n >= PCC_CLIENT_REQUEST_URL_MAX)
    return client_fail(client, PCC_CLIENT_INVALID, "the URL is too long");
  char *url = malloc((size_t)n + 1);
  if (url == NULL)
    return client_fail(client, PCC_CLIENT_NOMEM, "out of memory");
  snprintf(url, (size_t)n + 1, "%s%s", client->base_url, path_and_query);
  *out = url;
  return PCC_CLIENT_OK;
}

/* Hands the collected body to the caller: a NUL-terminated copy. */
static pcc_client_status client_take_body(pcc_client *client, char **body_out, size_t *len_out)
{
  const pcc_dynbuf *buf = &client->body;
  size_t len = buf->data ? buf->len : 0;
  char *body = malloc(len + 1);
  if (body == NULL)
    return client_fail(client, PCC_CLIENT_NOMEM, "out of memory");
  if (len)
    memcpy(body, buf->data, len);
  body[len] = '\0';
  *body_out = body;
  if (len_out)
    *len_out = len;
  return PCC_CLIENT_OK;
}

pcc_client_status pcc_client_get_json(pcc_client *client, const char *path_and_query,
                                      char **body_out, long *status_out)
{
  if (client == NULL)
    return PCC_CLIENT_INVALID;
  client_error_reset(client);
  if (body_out == NULL)
    return client_fail(client, PCC_CLIENT_INVALID, "body_out is NULL");
  char *url = NULL;
  pcc_client_status rc = client_plain_url(client, path_and_query, &url);
  if (rc == PCC_CLIENT_OK)
    rc = client_perform(client, url, "GET", NULL, 0, CLIENT_GET, -1, NULL, status_out);
  free(url);
  if (rc != PCC_CLIENT_OK)
    return rc;
  return client_take_body(client, body_out, NULL);
}

pcc_client_status pcc_client_request(pcc_client *client, const char *method,
                                     const char *path_and_query, const void *body,
                                     size_t body_len, char **body_out, size_t *len_out,
                                     long *status_out)
{
  if (client == NULL)
    return PCC_CLIENT_INVALID;
  client_error_reset(client);
  if (body_out == NULL || method == NULL || (body == NULL && body_len != 0))
    return client_fail(client, PCC_CLIENT_INVALID, "invalid request argument");
  if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0 && strcmp(method, "DELETE") != 0)
    return client_fail(client, PCC_CLIENT_INVALID, "the method must be GET, POST or DELETE");
  if (body != NULL && strcmp(method, "POST") != 0)
    return client_fail(client, PCC_CLIENT_INVALID, "only a POST has a body");
  char *url = NULL;
  pcc_client_status rc = client_plain_url(client, path_and_query, &url);
  if (rc == PCC_CLIENT_OK)
    rc = client_perform(client, url, method, body, body_len, CLIENT_REQUEST, -1, NULL,
                        status_out);
  free(url);
  if (rc != PCC_CLIENT_OK)
    return rc;
  return client_take_body(client, body_out, len_out);
}

pcc_client_status pcc_client_download(pcc_client *client, const char *path_and_query, int fd,
                                      uint64_t *bytes_out, long *status_out)
{
  if (client == NULL)
    return PCC_CLIENT_INVALID;
  client_error_reset(client);
  if (bytes_out)
    *bytes_out = 0;
  if (fd < 0)
    return client_fail(client, PCC_CLIENT_INVALID, "invalid file descriptor");
  char *url = NULL;
  pcc_client_status rc = client_plain_url(client, path_and_query, &url);
  if (rc != PCC_CLIENT_OK)
    return rc;
  uint64_t written = 0;
  rc = client_perform(client, url, "GET", NULL, 0, CLIENT_DOWNLOAD, fd, &written, status_out);
  int saved = errno;
  free(url);
  if (bytes_out)
    *bytes_out = written;
  if (rc == PCC_CLIENT_IO)
    errno = saved;
  return rc;
}

pcc_client_status pcc_client_default_magic(pcc_client *client, pcc_magic *out)
{
  if (client == NULL)
    return PCC_CLIENT_INVALID;
  char *body = NULL;
  pcc_client_status rc = pcc_client_get_json(client, "/v1/stats", &body, NULL);
  if (rc != PCC_CLIENT_OK)
    return rc;
  if (out == NULL) {
    free(body);
    return client_fail(client, PCC_CLIENT_INVALID, "out is NULL");
  }
  cJSON *stats = cJSON_Parse(body);
  free(body);
  const cJSON *compilers = cJSON_GetObjectItemCaseSensitive(stats, "compilers");
  const cJSON *chosen = NULL, *item = NULL;
  int count = 0;
  cJSON_ArrayForEach(item, compilers) {
    count++;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(item, "default")) && chosen == NULL)
      chosen = item;
  }
  if (chosen == NULL && count == 1)
    chosen = cJSON_GetArrayItem(compilers, 0);
  const cJSON *magic = cJSON_GetObjectItemCaseSensitive(chosen, "magic");
  rc = cJSON_IsArray(compilers) && cJSON_IsString(magic) &&
               pcc_magic_from_hex(magic->valuestring, out) == PCC_PROTO_OK
           ? PCC_CLIENT_OK
           : PCC_CLIENT_PROTOCOL;
  cJSON_Delete(stats);
  if (rc != PCC_CLIENT_OK)
    return client_fail(client, rc, "/v1/stats lists no default compiler with a valid magic");
  return PCC_CLIENT_OK;
}

/* ---- sources ---------------------------------------------------------------------------- */

void pcc_source_free(pcc_source *source)
{
  if (source == NULL)
    return;
  free(source->path);
  free(source->data);
  free(source);
}

/* Reads fd to its end into a fresh buffer (never NULL, even for no bytes): PCC_CLIENT_TOOBIG
 * past limit bytes (1 at least), PCC_CLIENT_IO (errno set) when a read fails. hint, the expected
 * size, is allocated at once. */
static pcc_client_status source_read_fd(int fd, size_t limit, size_t hint, uint8_t **data_out,
                                        size_t *len_out)
{
  pcc_dynbuf buf;
  pcc_dynbuf_init(&buf, limit);
  size_t first = hint < limit ? hint : limit;
  pcc_proto_status prc = pcc_dynbuf_reserve(&buf, first > 0 ? first : 1);
  pcc_client_status rc = PCC_CLIENT_OK;
  uint8_t chunk[CLIENT_SOURCE_CHUNK];
  while (prc == PCC_PROTO_OK) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = PCC_CLIENT_IO;
      break;
    }
    if (n == 0)
      break;
    prc = pcc_dynbuf_add(&buf, chunk, (size_t)n);
  }
  if (prc != PCC_PROTO_OK)
    rc = prc == PCC_PROTO_RANGE ? PCC_CLIENT_TOOBIG : PCC_CLIENT_NOMEM;
  if (rc != PCC_CLIENT_OK) {
    int saved = errno;
    pcc_dynbuf_free(&buf);
    errno = saved;
    return rc;
  }
  *data_out = pcc_dynbuf_take(&buf, len_out);
  return PCC_CLIENT_OK;
}

static bool source_same_stat(const struct stat *a, const struct stat *b)
{
  return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
         a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ino == b->st_ino;
}

pcc_client_status pcc_source_read(const char *file, size_t max_bytes, pcc_source **out)
{
  if (file == NULL || out == NULL)
    return PCC_CLIENT_INVALID;
  char *path = realpath(file, NULL);
  if (path == NULL)
    return PCC_CLIENT_IO;
  pcc_client_status rc = pcc_source_load(path, max_bytes, true, out);
  int saved = errno;
  free(path);
  errno = saved;
  return rc;
}

/* Stats an absolute path without reading it (for timestamp validation). */
static pcc_client_status source_stat_only(char *path, pcc_source **out)
{
  struct stat st;
  bool ok = stat(path, &st) == 0;
  if (ok && !S_ISREG(st.st_mode)) {
    errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
    ok = false;
  }
  if (!ok) {
    int saved = errno;
    free(path);
    errno = saved;
    return PCC_CLIENT_IO;
  }
  pcc_source *source = calloc(1, sizeof *source);
  if (st.st_mtim.tv_sec < 0 || source == NULL) {
    free(path);
    free(source);
    return source == NULL ? PCC_CLIENT_NOMEM : PCC_CLIENT_INVALID;
  }
  source->path = path;
  source->mtime = (int64_t)st.st_mtim.tv_sec;
  source->size = (uint64_t)st.st_size;
  *out = source;
  return PCC_CLIENT_OK;
}

pcc_client_status pcc_source_load(const char *file, size_t max_bytes, bool with_data,
                                  pcc_source **out)
{
  if (file == NULL || out == NULL || file[0] != '/')
    return PCC_CLIENT_INVALID;
  if (max_bytes == 0)
    max_bytes = PCC_SOURCE_DEFAULT_MAX;
  if (max_bytes > SIZE_MAX / 2)
    max_bytes = SIZE_MAX / 2;
  if (strlen(file) > PCC_PATH_MAX)
    return PCC_CLIENT_INVALID;
  char *path = strdup(file);
  if (path == NULL)
    return PCC_CLIENT_NOMEM;
  if (!with_data)
    return source_stat_only(path, out);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    int saved = errno;
    free(path);
    errno = saved;
    return PCC_CLIENT_IO;
  }
  pcc_client_status rc = PCC_CLIENT_IO;
  uint8_t *data = NULL;
  size_t len = 0;
  struct stat before, after;
  for (int attempt = 0; attempt < CLIENT_SOURCE_RETRIES; attempt++) {
    free(data);
    data = NULL;
    if (fstat(fd, &before) != 0) {
      rc = PCC_CLIENT_IO;
      break;
    }
    if (!S_ISREG(before.st_mode)) {
      errno = S_ISDIR(before.st_mode) ? EISDIR : EINVAL;
      rc = PCC_CLIENT_IO;
      break;
    }
    if (before.st_mtim.tv_sec < 0) {
      rc = PCC_CLIENT_INVALID;
      break;
    }
    if ((uintmax_t)before.st_size > max_bytes) {
      rc = PCC_CLIENT_TOOBIG;
      break;
    }
    if (lseek(fd, 0, SEEK_SET) != 0) {
      rc = PCC_CLIENT_IO;
      break;
    }
    rc = source_read_fd(fd, max_bytes, (size_t)before.st_size, &data, &len);
    if (rc != PCC_CLIENT_OK)
      break;
    if (fstat(fd, &after) != 0) {
      rc = PCC_CLIENT_IO;
      break;
    }
    if (source_same_stat(&before, &after) && (uintmax_t)after.st_size == len)
      break;
    rc = PCC_CLIENT_IO; /* changed while we read it: try again */
    errno = EAGAIN;
  }
  int saved = errno;
  close(fd);
  pcc_source *source = NULL;
  if (rc == PCC_CLIENT_OK && (source = calloc(1, sizeof *source)) == NULL)
    rc = PCC_CLIENT_NOMEM;
  if (rc != PCC_CLIENT_OK) {
    free(data);
    free(path);
    errno = saved;
    return rc;
  }
  source->path = path;
  source->mtime = (int64_t)before.st_mtim.tv_sec;
  source->size = (uint64_t)len;
  source->data = data;
  source->len = len;
  source->has_data = true;
  source->hash = pcc_java_hash(data, len);
  pcc_digest_compute(data, len, &source->digest);
  *out = source;
  return PCC_CLIENT_OK;
}

/* ---- tokens ---------------------------------------------------------------------------- */

pcc_client_status pcc_token_check(const char *token)
{
  if (token == NULL)
    return PCC_CLIENT_INVALID;
  size_t len = strnlen(token, PCC_TOKEN_MAX + 1);
  if (len == 0 || len > PCC_TOKEN_MAX)
    return PCC_CLIENT_INVALID;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)token[i] < 0x21 || (unsigned char)token[i] > 0x7e)
      return PCC_CLIENT_INVALID;
  return PCC_CLIENT_OK;
}

static bool token_space(char c)
{
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

pcc_client_status pcc_token_load(const char *file, char **out)
{
  if (file == NULL || out == NULL)
    return PCC_CLIENT_INVALID;
  int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return PCC_CLIENT_IO;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    int saved = errno;
    if (saved == 0 || !S_ISREG(st.st_mode))
      saved = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
    close(fd);
    errno = saved;
    return PCC_CLIENT_IO;
  }
  char buf[PCC_TOKEN_FILE_MAX + 2];
  size_t len = 0; /* one byte more than allowed shows an oversize file */
  int saved = pcc_read_upto(fd, buf, PCC_TOKEN_FILE_MAX + 1, &len);
  pcc_client_status rc = saved != 0 ? PCC_CLIENT_IO : PCC_CLIENT_OK;
  close(fd);
  if (rc == PCC_CLIENT_OK && len > PCC_TOKEN_FILE_MAX)
    rc = PCC_CLIENT_TOOBIG;
  char *token = NULL;
  if (rc == PCC_CLIENT_OK) {
    buf[len] = '\0';
    size_t start = 0, end = len;
    while (start < end && token_space(buf[start]))
      start++;
    while (end > start && token_space(buf[end - 1]))
      end--;
    buf[end] = '\0';
    if (strlen(buf + start) != end - start || pcc_token_check(buf + start) != PCC_CLIENT_OK)
      rc = PCC_CLIENT_INVALID; /* empty, a NUL inside, too long, or not printable ASCII */
    else if ((token = strdup(buf + start)) == NULL)
      rc = PCC_CLIENT_NOMEM;
  }
  explicit_bzero(buf, sizeof buf);
  if (rc != PCC_CLIENT_OK) {
    errno = saved;
    return rc;
  }
  *out = token;
  return PCC_CLIENT_OK;
}

pcc_client_status pcc_token_from_env(char **out)
{
  if (out == NULL)
    return PCC_CLIENT_INVALID;
  const char *token = getenv("PYCACHED_TOKEN");
  if (token != NULL && token[0] != '\0') {
    if (pcc_token_check(token) != PCC_CLIENT_OK)
      return PCC_CLIENT_INVALID;
    char *copy = strdup(token);
    if (copy == NULL)
      return PCC_CLIENT_NOMEM;
    *out = copy;
    return PCC_CLIENT_OK;
  }
  const char *file = getenv("PYCACHED_TOKEN_FILE");
  if (file != NULL && file[0] != '\0')
    return pcc_token_load(file, out);
  *out = NULL;
  return PCC_CLIENT_OK;
}
