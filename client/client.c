/* client.c: libpycached, the libcurl client of the pycached HTTP API (docs/API.md).
 *
 * One CURL easy handle per pcc_client, reused for every request so the connection stays open.
 * Response bodies are collected into a buffer with a hard limit; error bodies are decoded into
 * the client's last error; hit bodies are decoded and verified by proto's pcc_entry_from_json
 * and then compared against the request. Downloads (pcc_client_download) stream a 2xx body to
 * a file descriptor instead. Tokens (pcc_token_*) are read and checked here too, and sent as an
 * Authorization header that is part of every header list of the client. See pycached.h for the
 * contract.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "pycached.h"

#define CLIENT_SOURCE_RETRIES 3
#define CLIENT_SOURCE_CHUNK 16384 /* bytes of a source file read at a time */
#define CLIENT_AUTH_PREFIX "Authorization: Bearer "

/* A response body: grows up to the client's max_response bytes (buf.max holds one more, for a
 * NUL that is not counted), always NUL-terminated once allocated. */
typedef struct {
  pcc_dynbuf buf;
  size_t expected; /* the response's Content-Length (capped at max_response), 0 when not given */
  bool toobig;
  bool nomem;
} client_buf;

/* Where pcc_client_download puts a 2xx body; fd is -1 outside a download. */
typedef struct {
  int fd;
  uint64_t written;
  int error;   /* errno of a failed write, 0 when none */
  bool toobig; /* over PCC_DOWNLOAD_MAX */
} client_sink;

struct pcc_client {
  CURL *curl;
  char *base_url; /* without a trailing '/' */
  long connect_timeout_ms;
  long timeout_ms;
  size_t max_response;
  struct curl_slist *post_headers; /* compiles */
  struct curl_slist *code_headers; /* lookups */
  struct curl_slist *get_headers;  /* stats, health */
  struct curl_slist *request_headers;  /* pcc_client_request */
  struct curl_slist *download_headers; /* pcc_client_download */
  char *auth_header;                   /* "Authorization: Bearer TOKEN", or NULL; wiped on close */
  bool raw_pyc;
  client_buf body;
  client_sink sink;
  char curl_errbuf[CURL_ERROR_SIZE];
  /* X-Pycached-* headers of the last response, "" when absent */
  char outcome[16], digest[PCC_DIGEST_HEX_LEN + 1], checksum[17], hash[16], validation[16];
  char compiler[64];
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

/* ---- global init ----------------------------------------------------------------------- */

static pthread_once_t client_global_once = PTHREAD_ONCE_INIT;
static CURLcode client_global_rc = CURLE_OK;

static void client_global_init(void)
{
  client_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
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
  client->err = (pcc_client_error){.http_status = 0, .line = -1, .offset = -1};
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
  return curl_easy_setopt(client->curl, CURLOPT_TIMEOUT_MS, client->timeout_ms) == CURLE_OK
             ? PCC_CLIENT_OK
             : PCC_CLIENT_INVALID;
}

const char *pcc_client_last_outcome(const pcc_client *client)
{
  return client->outcome;
}

const char *pcc_client_last_body(const pcc_client *client, size_t *len_out)
{
  const pcc_dynbuf *buf = &client->body.buf;
  if (len_out)
    *len_out = buf->data ? buf->len : 0;
  return buf->data ? buf->data : "";
}

/* ---- response buffer ------------------------------------------------------------------- */

/* Keeps the X-Pycached-* headers of a response (curl passes one header line a call). A value
 * longer than its buffer is dropped, which the checks of a hit then report. */
static size_t client_header_cb(char *line, size_t size, size_t nitems, void *userdata)
{
  pcc_client *client = userdata;
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
  };
  size_t len = size * nitems;
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
  static const char length_name[] = "content-length:";
  if (len > sizeof length_name - 1 && strncasecmp(line, length_name, sizeof length_name - 1) == 0) {
    char digits[24];
    size_t n = 0;
    for (size_t i = sizeof length_name - 1; i < len && n < sizeof digits - 1; i++)
      if (line[i] >= '0' && line[i] <= '9')
        digits[n++] = line[i];
    digits[n] = '\0';
    int64_t value = 0;
    if (n > 0 && pcc_parse_i64(digits, 0, INT64_MAX, &value) == PCC_PROTO_OK)
      client->body.expected = (uint64_t)value < client->max_response ? (size_t)value
                                                                       : client->max_response;
  }
  return len;
}

/* Appends a piece of the body; returning less than it was given aborts the transfer with
 * CURLE_WRITE_ERROR, the flags say why. */
static size_t client_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
  client_buf *body = userdata;
  size_t n = size * nmemb;
  /* one allocation of the announced size: big bodies (bundles) are not copied as they grow */
  pcc_proto_status rc = PCC_PROTO_OK;
  if (body->buf.cap == 0 && body->expected > n)
    rc = pcc_dynbuf_reserve(&body->buf, body->expected + 1);
  if (rc == PCC_PROTO_OK)
    rc = pcc_dynbuf_reserve(&body->buf, n + 1); /* the bytes and the NUL */
  if (rc != PCC_PROTO_OK) {
    body->toobig = rc == PCC_PROTO_RANGE;
    body->nomem = rc == PCC_PROTO_NOMEM;
    return 0;
  }
  pcc_dynbuf_add(&body->buf, ptr, n); /* cannot fail: the room is reserved */
  ((char *)body->buf.data)[body->buf.len] = '\0';
  return n;
}

static void client_buf_reset(client_buf *body)
{
  pcc_dynbuf_free(&body->buf);
  body->expected = 0;
  body->toobig = body->nomem = false;
}

/* ---- open/close --------------------------------------------------------------------------- */

pcc_client_status pcc_client_open(const pcc_client_config *config, pcc_client **out)
{
  pcc_client_config defaults = {0};
  if (config == NULL)
    config = &defaults;
  if (config->connect_timeout_ms < 0 || config->timeout_ms < 0)
    return PCC_CLIENT_INVALID;
  const char *url = config->base_url ? config->base_url : PCC_CLIENT_DEFAULT_URL;
  size_t url_len = strnlen(url, PCC_CLIENT_URL_MAX + 1);
  if (url_len == 0 || url_len > PCC_CLIENT_URL_MAX ||
      (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
    return PCC_CLIENT_INVALID;
  for (size_t i = 0; i < url_len; i++)
    if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f || url[i] == '?' || url[i] == '#')
      return PCC_CLIENT_INVALID;
  while (url_len > 0 && url[url_len - 1] == '/')
    url_len--;
  if (config->token != NULL && pcc_token_check(config->token) != PCC_CLIENT_OK)
    return PCC_CLIENT_INVALID;

  pthread_once(&client_global_once, client_global_init);
  if (client_global_rc != CURLE_OK)
    return client_global_rc == CURLE_OUT_OF_MEMORY ? PCC_CLIENT_NOMEM : PCC_CLIENT_INVALID;

  pcc_client *client = calloc(1, sizeof *client);
  if (client == NULL)
    return PCC_CLIENT_NOMEM;
  client->err = (pcc_client_error){.http_status = 0, .line = -1, .offset = -1};
  client->connect_timeout_ms = config->connect_timeout_ms ? config->connect_timeout_ms
                                                          : PCC_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
  client->timeout_ms = config->timeout_ms ? config->timeout_ms : PCC_CLIENT_DEFAULT_TIMEOUT_MS;
  client->max_response = config->max_response ? config->max_response
                                              : PCC_CLIENT_DEFAULT_MAX_RESPONSE;
  if (client->max_response > SIZE_MAX / 2)
    client->max_response = SIZE_MAX / 2;
  pcc_dynbuf_init(&client->body.buf, client->max_response + 1); /* + 1: the NUL */
  client->sink.fd = -1;
  client->raw_pyc = config->raw_pyc;
  client->base_url = strndup(url, url_len);
  client->curl = curl_easy_init();
  bool ok = client->base_url != NULL && client->curl != NULL;
  if (ok && config->token != NULL) {
    size_t n = sizeof CLIENT_AUTH_PREFIX + strlen(config->token);
    ok = (client->auth_header = malloc(n)) != NULL;
    if (ok)
      snprintf(client->auth_header, n, "%s%s", CLIENT_AUTH_PREFIX, config->token);
  }
  const char *accept_code = client->raw_pyc ? "Accept: application/x-python-pyc"
                                            : "Accept: application/json";
  /* each list: its headers, then the Authorization header when there is a token */
  /* X-Pycached-Client on every request: the server refuses state-changing requests that a web
   * page could make a browser send, and a page cannot add this header without asking first */
  static const char client_header[] = "X-Pycached-Client: libpycached/" PCC_VERSION;
  struct {
    struct curl_slist **list;
    const char *lines[4];
  } lists[] = {
    {&client->post_headers,
     {"Content-Type: application/octet-stream", accept_code, client_header, NULL}},
    {&client->code_headers, {accept_code, client_header, NULL, NULL}},
    {&client->get_headers, {"Accept: application/json", client_header, NULL, NULL}},
    {&client->request_headers,
     {"Content-Type: application/json", "Accept: application/json", client_header, NULL}},
    {&client->download_headers, {"Accept: application/octet-stream", client_header, NULL, NULL}},
  };
  for (size_t i = 0; ok && i < sizeof lists / sizeof lists[0]; i++) {
    for (size_t j = 0; ok && j < 5; j++) {
      const char *line = j < 4 ? lists[i].lines[j] : client->auth_header;
      if (line == NULL)
        continue;
      struct curl_slist *list = curl_slist_append(*lists[i].list, line);
      ok = list != NULL;
      if (ok)
        *lists[i].list = list;
    }
  }
  if (!ok) {
    pcc_client_close(client);
    return PCC_CLIENT_NOMEM;
  }

  CURL *c = client->curl;
  bool set = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
             curl_easy_setopt(c, CURLOPT_ERRORBUFFER, client->curl_errbuf) == CURLE_OK &&
             curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, client_write_cb) == CURLE_OK &&
             curl_easy_setopt(c, CURLOPT_WRITEDATA, &client->body) == CURLE_OK &&
             curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, client_header_cb) == CURLE_OK &&
             curl_easy_setopt(c, CURLOPT_HEADERDATA, client) == CURLE_OK &&
             curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, client->connect_timeout_ms) ==
                 CURLE_OK &&
             curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, client->timeout_ms) == CURLE_OK &&
             curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)client->max_response) ==
                 CURLE_OK &&
             curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
             curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
             curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK &&
             /* big reads: a bundle of 15 MB in 30 reads, not 900 */
             curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 512L * 1024) == CURLE_OK &&
             curl_easy_setopt(c, CURLOPT_USERAGENT, "libpycached/" PCC_VERSION) == CURLE_OK;
  if (!set) {
    pcc_client_close(client);
    return PCC_CLIENT_INVALID;
  }
  *out = client;
  return PCC_CLIENT_OK;
}

void pcc_client_close(pcc_client *client)
{
  if (client == NULL)
    return;
  if (client->curl)
    curl_easy_cleanup(client->curl);
  curl_slist_free_all(client->post_headers);
  curl_slist_free_all(client->code_headers);
  curl_slist_free_all(client->get_headers);
  curl_slist_free_all(client->request_headers);
  curl_slist_free_all(client->download_headers);
  if (client->auth_header != NULL) {
    explicit_bzero(client->auth_header, strlen(client->auth_header));
    free(client->auth_header);
  }
  client_buf_reset(&client->body);
  client_error_reset(client);
  free(client->base_url);
  free(client);
}

/* ---- one request ------------------------------------------------------------------------ */

static pcc_client_status client_map_curl(pcc_client *client, CURLcode code)
{
  const char *detail = client->curl_errbuf[0] ? client->curl_errbuf : curl_easy_strerror(code);
  pcc_client_status rc;
  switch (code) {
  case CURLE_COULDNT_CONNECT:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    rc = PCC_CLIENT_CONNECT;
    break;
  case CURLE_OPERATION_TIMEDOUT:
    rc = PCC_CLIENT_TIMEOUT;
    break;
  case CURLE_FILESIZE_EXCEEDED:
    rc = PCC_CLIENT_TOOBIG;
    break;
  case CURLE_WRITE_ERROR:
    rc = client->body.toobig || client->sink.toobig ? PCC_CLIENT_TOOBIG
         : client->body.nomem                       ? PCC_CLIENT_NOMEM
         : client->sink.error != 0                  ? PCC_CLIENT_IO
                                                    : PCC_CLIENT_PROTOCOL;
    if (client->body.toobig)
      detail = "the response is over the client's max_response limit";
    else if (client->sink.toobig)
      detail = "the download is over the 1 TiB limit";
    else if (client->sink.error != 0)
      detail = strerror(client->sink.error);
    break;
  case CURLE_OUT_OF_MEMORY:
    rc = PCC_CLIENT_NOMEM;
    break;
  case CURLE_URL_MALFORMAT:
    rc = PCC_CLIENT_INVALID;
    break;
  default: /* empty reply, reset connection, garbage (curl: "HTTP/0.9" = unsupported protocol) */
    rc = PCC_CLIENT_PROTOCOL;
    break;
  }
  return client_fail(client, rc, detail);
}

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
  const pcc_dynbuf *body = &client->body.buf;
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

/* Writes a download's 2xx body to client->sink.fd; any other body goes to client->body (the
 * status line and headers have arrived when curl first calls this). */
static size_t client_sink_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
  pcc_client *client = userdata;
  long status = 0;
  curl_easy_getinfo(client->curl, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200 || status > 299)
    return client_write_cb(ptr, size, nmemb, &client->body);
  size_t n = size * nmemb;
  if ((uint64_t)n > PCC_DOWNLOAD_MAX - client->sink.written) {
    client->sink.toobig = true;
    return 0;
  }
  for (size_t done = 0; done < n;) {
    ssize_t w = write(client->sink.fd, ptr + done, n - done);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      client->sink.error = w < 0 ? errno : EIO;
      return 0;
    }
    done += (size_t)w;
    client->sink.written += (uint64_t)w;
  }
  return n;
}

/* Forgets the last response: its body, curl's error text and the X-Pycached-* headers. */
static void client_response_reset(pcc_client *client)
{
  client_buf_reset(&client->body);
  client->curl_errbuf[0] = '\0';
  client->outcome[0] = client->digest[0] = client->checksum[0] = client->hash[0] = '\0';
  client->validation[0] = client->compiler[0] = '\0';
}

/* A response has arrived whole with this status: PCC_CLIENT_OK for a 2xx, else the error it
 * maps to (the details in the last error). *status_out (may be NULL) gets the status. */
static pcc_client_status client_response_status(pcc_client *client, long status,
                                                long *status_out)
{
  if (client->body.nomem)
    return client_fail(client, PCC_CLIENT_NOMEM, "out of memory");
  if (status_out)
    *status_out = status;
  if (status < 200 || status > 299)
    return client_map_http_error(client, status);
  return PCC_CLIENT_OK;
}

/* Performs one request to url: method "GET", "DELETE", or "POST" of body_len bytes of body
 * (NULL: an empty body), with these headers. On PCC_CLIENT_OK the response was 2xx and
 * client->body holds it (possibly empty, data may be NULL), or client->sink.fd got it when
 * client->sink.fd >= 0. *status_out gets the HTTP status whenever a response arrived. */
static pcc_client_status client_perform(pcc_client *client, const char *url, const char *method,
                                        const void *body, size_t body_len,
                                        struct curl_slist *headers, long *status_out)
{
  CURL *c = client->curl;
  client_response_reset(client);
  bool post = strcmp(method, "POST") == 0;
  /* A POST says whether it waits for 100 Continue: a small body goes at once (no round trip), a
   * large one waits, so that a server refusing it early (413) is heard instead of resetting the
   * upload. The node lives on this frame, which outlives the transfer. */
  char expect_none[] = "Expect:", expect_continue[] = "Expect: 100-continue";
  struct curl_slist expect = {body_len >= PCC_EXPECT_CONTINUE_MIN ? expect_continue : expect_none,
                              headers};
  if (post)
    headers = &expect;
  CURLcode code = curl_easy_setopt(c, CURLOPT_URL, url);
  if (code == CURLE_OK && !post) {
    code = curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else if (code == CURLE_OK) {
    code = curl_easy_setopt(c, CURLOPT_POST, 1L);
    if (code == CURLE_OK)
      code = curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    if (code == CURLE_OK)
      code = curl_easy_setopt(c, CURLOPT_POSTFIELDS, body_len ? body : "");
  }
  if (code == CURLE_OK)
    code = curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST,
                            strcmp(method, "DELETE") == 0 ? method : NULL);
  if (code == CURLE_OK)
    code = curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  if (code == CURLE_OK && client->sink.fd >= 0) {
    code = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, client_sink_cb);
    if (code == CURLE_OK)
      code = curl_easy_setopt(c, CURLOPT_WRITEDATA, client);
    if (code == CURLE_OK)
      code = curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)PCC_DOWNLOAD_MAX);
  }
  if (code == CURLE_OK)
    code = curl_easy_perform(c);
  /* POSTFIELDS is not copied: never leave a pointer to the caller's bytes in the handle */
  if (post)
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL); /* nor a pointer to this frame's node */
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
  if (client->sink.fd >= 0) { /* back to collecting bodies within max_response */
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, client_write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &client->body);
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)client->max_response);
  }
  if (code != CURLE_OK)
    return client_map_curl(client, code);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  return client_response_status(client, status, status_out);
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
  char *path = curl_easy_escape(client->curl, source->path, 0);
  if (path == NULL)
    return client_fail(client, PCC_CLIENT_NOMEM, "out of memory");
  const char *fmt = "%s%s?magic=%s&opt=%d&path=%s&mtime=%" PRId64 "&size=%" PRIu64 "%s";
  int n = snprintf(NULL, 0, fmt, client->base_url, endpoint, magic_hex, opt, path, source->mtime,
                   source->size, extra);
  char *url = NULL;
  if (n > 0 && n < PCC_CLIENT_REQUEST_URL_MAX && (url = malloc((size_t)n + 1)) != NULL)
    snprintf(url, (size_t)n + 1, fmt, client->base_url, endpoint, magic_hex, opt, path,
             source->mtime, source->size, extra);
  curl_free(path);
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
  const pcc_dynbuf *body = &client->body.buf;
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
  const pcc_dynbuf *body = &client->body.buf;
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
    rc = client_perform(client, url, "GET", NULL, 0, client->code_headers, NULL);
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
  /* what curl does with a response: each header line to the header callback, the body to the
   * write callback (a short count there is curl's CURLE_WRITE_ERROR), then the status */
  for (size_t at = 0; at < headers_len;) {
    const char *nl = memchr(headers + at, '\n', headers_len - at);
    size_t line = nl ? (size_t)(nl - (headers + at)) + 1 : headers_len - at;
    client_header_cb((char *)(uintptr_t)(headers + at), 1, line, client);
    at += line;
  }
  pcc_client_status rc = PCC_CLIENT_OK;
  if (body_len > 0 &&
      client_write_cb((char *)(uintptr_t)body, 1, body_len, &client->body) != body_len)
    rc = client_map_curl(client, CURLE_WRITE_ERROR);
  if (rc == PCC_CLIENT_OK)
    rc = client_response_status(client, status, NULL);
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
    rc = client_perform(client, url, "POST", source->data, source->len, client->post_headers,
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
  const pcc_dynbuf *buf = &client->body.buf;
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
    rc = client_perform(client, url, "GET", NULL, 0, client->get_headers, status_out);
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
    rc = client_perform(client, url, method, body, body_len, client->request_headers,
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
  client->sink = (client_sink){.fd = fd};
  rc = client_perform(client, url, "GET", NULL, 0, client->download_headers, status_out);
  free(url);
  if (rc == PCC_CLIENT_OK && client->sink.error != 0) /* cannot happen: a failed write aborts */
    rc = client_fail(client, PCC_CLIENT_IO, strerror(client->sink.error));
  if (bytes_out)
    *bytes_out = client->sink.written;
  int saved = client->sink.error;
  client->sink = (client_sink){.fd = -1};
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
  size_t len = 0;
  pcc_client_status rc = PCC_CLIENT_OK;
  while (len < PCC_TOKEN_FILE_MAX + 1) { /* one byte more than allowed shows an oversize file */
    ssize_t n = read(fd, buf + len, PCC_TOKEN_FILE_MAX + 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = PCC_CLIENT_IO;
      break;
    }
    if (n == 0)
      break;
    len += (size_t)n;
  }
  int saved = errno;
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
