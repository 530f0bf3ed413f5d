/* curl.c: the transport of https:// URLs (transport.h): libcurl, loaded with dlopen when the
 * first https:// client opens, so that nothing else pays for it (libcurl and the ~30 libraries
 * it links cost 7-8 ms to load; an http:// client uses http1.c). One easy handle a connection,
 * kept alive by libcurl; response headers and body are handed over as http1.c hands them. Only
 * curl.h's types and constants are used at build time; the functions come from libcurl.so.4.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "transport.h"

#define CURL_LIBRARY "libcurl.so.4"

/* The libcurl functions used, resolved once. */
static struct {
  __typeof__(curl_global_init) *global_init;
  __typeof__(curl_easy_init) *easy_init;
  __typeof__(curl_easy_setopt) *easy_setopt;
  __typeof__(curl_easy_perform) *easy_perform;
  __typeof__(curl_easy_getinfo) *easy_getinfo;
  __typeof__(curl_easy_cleanup) *easy_cleanup;
  __typeof__(curl_easy_strerror) *easy_strerror;
  __typeof__(curl_slist_append) *slist_append;
  __typeof__(curl_slist_free_all) *slist_free_all;
  bool ready;
  char error[160];
} lib;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_load(void)
{
  void *handle = dlopen(CURL_LIBRARY, RTLD_NOW | RTLD_LOCAL);
  if (handle == NULL) {
    snprintf(lib.error, sizeof lib.error, "https needs %s: %s", CURL_LIBRARY, dlerror());
    return;
  }
  struct {
    const char *name;
    void **slot;
  } symbols[] = {
    {"curl_global_init", (void **)&lib.global_init},
    {"curl_easy_init", (void **)&lib.easy_init},
    {"curl_easy_setopt", (void **)&lib.easy_setopt},
    {"curl_easy_perform", (void **)&lib.easy_perform},
    {"curl_easy_getinfo", (void **)&lib.easy_getinfo},
    {"curl_easy_cleanup", (void **)&lib.easy_cleanup},
    {"curl_easy_strerror", (void **)&lib.easy_strerror},
    {"curl_slist_append", (void **)&lib.slist_append},
    {"curl_slist_free_all", (void **)&lib.slist_free_all},
  };
  for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
    *symbols[i].slot = dlsym(handle, symbols[i].name);
    if (*symbols[i].slot == NULL) {
      snprintf(lib.error, sizeof lib.error, "%s has no %s", CURL_LIBRARY, symbols[i].name);
      return;
    }
  }
  if (lib.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    snprintf(lib.error, sizeof lib.error, "curl_global_init failed");
    return;
  }
  lib.ready = true; /* the library stays loaded for the process's life */
}

struct client_conn {
  CURL *curl;
  char errbuf[CURL_ERROR_SIZE];
  /* the exchange in progress (set by perform, read by the callbacks) */
  const client_request *request;
  client_response *response;
  bool toobig, nomem;
};

/* Sets the TLS options: peer and host verified always (libcurl's defaults, set again so that
 * nothing in the environment can have turned them off), the CA file and the client's
 * certificate and key when given (libcurl copies the strings). */
static bool curl_set_tls(CURL *c, const client_tls *tls)
{
  bool set = lib.easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
             lib.easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK;
  if (set && tls->ca_file != NULL)
    set = lib.easy_setopt(c, CURLOPT_CAINFO, tls->ca_file) == CURLE_OK;
  if (set && tls->client_cert != NULL)
    set = lib.easy_setopt(c, CURLOPT_SSLCERT, tls->client_cert) == CURLE_OK &&
          lib.easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM") == CURLE_OK;
  if (set && tls->client_key != NULL)
    set = lib.easy_setopt(c, CURLOPT_SSLKEY, tls->client_key) == CURLE_OK &&
          lib.easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM") == CURLE_OK;
  return set;
}

static pcc_client_status curl_open(const char *base_url, const client_tls *tls,
                                   client_conn **out)
{
  (void)base_url;
  pthread_once(&curl_once, curl_load);
  if (!lib.ready)
    return PCC_CLIENT_INVALID;
  client_conn *conn = calloc(1, sizeof *conn);
  if (conn == NULL)
    return PCC_CLIENT_NOMEM;
  conn->curl = lib.easy_init();
  CURL *c = conn->curl;
  bool set = c != NULL && lib.easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
             lib.easy_setopt(c, CURLOPT_ERRORBUFFER, conn->errbuf) == CURLE_OK &&
             lib.easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https") == CURLE_OK &&
             lib.easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
             lib.easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK &&
             lib.easy_setopt(c, CURLOPT_BUFFERSIZE, 512L * 1024) == CURLE_OK &&
             lib.easy_setopt(c, CURLOPT_USERAGENT, "libpycached/" PCC_VERSION) == CURLE_OK &&
             curl_set_tls(c, tls);
  if (!set) {
    if (c != NULL)
      lib.easy_cleanup(c);
    free(conn);
    return c == NULL ? PCC_CLIENT_NOMEM : PCC_CLIENT_INVALID;
  }
  *out = conn;
  return PCC_CLIENT_OK;
}

static void curl_close(client_conn *conn)
{
  if (conn == NULL)
    return;
  lib.easy_cleanup(conn->curl);
  free(conn);
}

/* Keeps the header lines of the final response (a new status line, of a 100 Continue's
 * successor, starts them again). */
static size_t curl_header_cb(char *line, size_t size, size_t nitems, void *userdata)
{
  client_conn *conn = userdata;
  size_t len = size * nitems;
  if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
    pcc_dynbuf_free(&conn->response->headers);
    return len;
  }
  if (len <= 2) /* the empty line */
    return len;
  if (pcc_dynbuf_add(&conn->response->headers, line, len) != PCC_PROTO_OK)
    return 0; /* over PCC_CLIENT_HEADERS_MAX: abort */
  return len;
}

static size_t curl_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
  client_conn *conn = userdata;
  const client_request *request = conn->request;
  client_response *response = conn->response;
  size_t n = size * nmemb;
  long status = 0;
  lib.easy_getinfo(conn->curl, CURLINFO_RESPONSE_CODE, &status);
  if (request->fd >= 0 && status >= 200 && status <= 299) {
    if ((uint64_t)n > request->fd_max - response->written) {
      conn->toobig = true;
      return 0;
    }
    for (size_t done = 0; done < n;) {
      ssize_t w = write(request->fd, ptr + done, n - done);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0) {
        response->fd_errno = w < 0 ? errno : EIO;
        return 0;
      }
      done += (size_t)w;
      response->written += (uint64_t)w;
    }
    return n;
  }
  pcc_proto_status rc = pcc_dynbuf_add(request->body_out, ptr, n);
  conn->toobig = rc == PCC_PROTO_RANGE;
  conn->nomem = rc == PCC_PROTO_NOMEM;
  return rc == PCC_PROTO_OK ? n : 0;
}

static pcc_client_status curl_map(client_conn *conn, CURLcode code, client_response *response)
{
  const char *detail = conn->errbuf[0] ? conn->errbuf : lib.easy_strerror(code);
  pcc_client_status rc;
  switch (code) {
  case CURLE_COULDNT_CONNECT:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
  /* no TLS session: the server's certificate or name did not verify, the client's certificate
   * or the CA file could not be used, or the handshake failed (errbuf says which) */
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_ISSUER_ERROR: rc = PCC_CLIENT_CONNECT; break;
  case CURLE_OPERATION_TIMEDOUT: rc = PCC_CLIENT_TIMEOUT; break;
  case CURLE_FILESIZE_EXCEEDED: rc = PCC_CLIENT_TOOBIG; break;
  case CURLE_OUT_OF_MEMORY: rc = PCC_CLIENT_NOMEM; break;
  case CURLE_URL_MALFORMAT: rc = PCC_CLIENT_INVALID; break;
  case CURLE_WRITE_ERROR:
    rc = conn->toobig                 ? PCC_CLIENT_TOOBIG
         : conn->nomem                ? PCC_CLIENT_NOMEM
         : response->fd_errno != 0    ? PCC_CLIENT_IO
                                      : PCC_CLIENT_PROTOCOL;
    if (conn->toobig)
      detail = conn->request->fd >= 0 ? "the download is over its limit"
                                      : "the response is over the client's max_response limit";
    else if (response->fd_errno != 0)
      detail = strerror(response->fd_errno);
    break;
  default: rc = PCC_CLIENT_PROTOCOL; break; /* empty reply, reset, garbage, headers too big */
  }
  snprintf(response->message, sizeof response->message, "%s", detail);
  return rc;
}

static pcc_client_status curl_perform(client_conn *conn, const client_request *request,
                                      client_response *response)
{
  CURL *c = conn->curl;
  conn->errbuf[0] = '\0';
  conn->request = request;
  conn->response = response;
  conn->toobig = conn->nomem = false;
  bool post = strcmp(request->method, "POST") == 0;
  /* a small POST body goes at once, a large one waits for 100 Continue (a refusal is heard) */
  struct curl_slist *headers = lib.slist_append(
    NULL, post && request->body_len >= PCC_EXPECT_CONTINUE_MIN ? "Expect: 100-continue"
                                                               : "Expect:");
  for (const char *const *h = request->headers; headers && h && *h; h++) {
    struct curl_slist *more = lib.slist_append(headers, *h);
    if (more == NULL) {
      lib.slist_free_all(headers);
      headers = NULL;
    }
    headers = more;
  }
  if (headers == NULL) {
    snprintf(response->message, sizeof response->message, "out of memory");
    return PCC_CLIENT_NOMEM;
  }
  curl_off_t max = request->fd >= 0 ? (curl_off_t)request->fd_max
                                    : (curl_off_t)(request->body_out->max - 1); /* - the NUL */
  CURLcode code = lib.easy_setopt(c, CURLOPT_URL, request->url);
  if (code == CURLE_OK)
    code = post ? lib.easy_setopt(c, CURLOPT_POST, 1L) : lib.easy_setopt(c, CURLOPT_HTTPGET, 1L);
  if (code == CURLE_OK && post)
    code = lib.easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)request->body_len);
  if (code == CURLE_OK && post)
    code = lib.easy_setopt(c, CURLOPT_POSTFIELDS, request->body_len ? request->body : "");
  if (code == CURLE_OK)
    code = lib.easy_setopt(c, CURLOPT_CUSTOMREQUEST,
                           strcmp(request->method, "DELETE") == 0 ? "DELETE" : NULL);
  if (code == CURLE_OK)
    code = lib.easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  if (code == CURLE_OK)
    code = lib.easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, request->connect_timeout_ms);
  if (code == CURLE_OK)
    code = lib.easy_setopt(c, CURLOPT_TIMEOUT_MS, request->timeout_ms);
  if (code == CURLE_OK)
    code = lib.easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, max);
  if (code == CURLE_OK)
    code = lib.easy_setopt(c, CURLOPT_WRITEFUNCTION, curl_write_cb);
  if (code == CURLE_OK)
    code = lib.easy_setopt(c, CURLOPT_WRITEDATA, conn);
  if (code == CURLE_OK)
    code = lib.easy_setopt(c, CURLOPT_HEADERFUNCTION, curl_header_cb);
  if (code == CURLE_OK)
    code = lib.easy_setopt(c, CURLOPT_HEADERDATA, conn);
  if (code == CURLE_OK)
    code = lib.easy_perform(c);
  /* no pointer to the caller's bytes or to this call's headers stays in the handle */
  if (post)
    lib.easy_setopt(c, CURLOPT_POSTFIELDS, "");
  lib.easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
  lib.slist_free_all(headers);
  if (code != CURLE_OK)
    return curl_map(conn, code, response);
  lib.easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response->status);
  return PCC_CLIENT_OK;
}

const client_transport client_curl_transport = {
  .scheme = "https://",
  .open = curl_open,
  .perform = curl_perform,
  .replay = NULL,
  .close = curl_close,
};

