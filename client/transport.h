/* transport.h: how libpycached moves one HTTP exchange (internal to client/). client.c builds
 * each request and reads each response; a transport only carries them, chosen by the base URL's
 * scheme from client.c's table: http1.c, libpycached's own HTTP/1.1 client on one kept-alive
 * socket, for http:// (it loads no library: the import hook starts in every interpreter, and
 * libcurl with what it links cost it 7-8 ms a start, docs/BENCHMARKS.md, issue 12), the same
 * client on a unix socket for unix:/PATH, and curl.c, libcurl loaded with dlopen at the first
 * https:// client. */
#ifndef PCC_CLIENT_TRANSPORT_H
#define PCC_CLIENT_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pycached.h"

/* One request. Every pointer belongs to the caller and must stay valid during the call. */
typedef struct {
  const char *method;         /* "GET", "POST" or "DELETE" */
  const char *url;            /* the whole URL; it starts with the base URL the transport has
                                 (the path of the request is what follows it) */
  const char *const *headers; /* "Name: value" lines without CRLF, NULL-terminated */
  const void *body;           /* a POST's body_len bytes (NULL when body_len is 0) */
  size_t body_len;
  long connect_timeout_ms; /* > 0 */
  long timeout_ms;         /* > 0: the whole exchange */
  pcc_dynbuf *body_out;    /* the response body is appended here, at most its max less one
                              bytes (the one is for the NUL client.c adds) */
  int fd;                  /* >= 0: a 2xx body is written to fd instead, at most fd_max bytes */
  uint64_t fd_max;
} client_request;

/* What came back. The caller initialises headers (pcc_dynbuf_init, PCC_CLIENT_HEADERS_MAX) and
 * frees it. */
typedef struct {
  long status;        /* the final response's status; 0 when none arrived */
  pcc_dynbuf headers; /* its header lines as received, each ending in "\r\n" */
  uint64_t written;   /* bytes written to fd */
  int fd_errno;       /* errno of a failed write to fd, else 0 */
  char message[256];  /* on failure, what went wrong */
} client_response;

typedef struct client_conn client_conn;

/* The TLS files of an https:// client (pcc_client_config's, checked readable); NULL: not set.
 * A transport copies what it keeps. */
typedef struct {
  const char *ca_file;
  const char *client_cert;
  const char *client_key;
} client_tls;

/* A transport: open for a base URL (already checked by pcc_client_open: scheme, length, no
 * spaces, no query) and the TLS files (all NULL for http://), perform requests, close (NULL is
 * fine). perform returns PCC_CLIENT_OK when
 * a whole response arrived, whatever its status, else PCC_CLIENT_CONNECT, PCC_CLIENT_TIMEOUT,
 * PCC_CLIENT_PROTOCOL (a malformed or cut response), PCC_CLIENT_TOOBIG (a body over body_out's
 * max or fd_max), PCC_CLIENT_IO (writing to fd failed, fd_errno set), PCC_CLIENT_NOMEM or
 * PCC_CLIENT_INVALID, with response->message saying why. */
typedef struct {
  const char *scheme; /* "http://" */
  pcc_client_status (*open)(const char *base_url, const client_tls *tls, client_conn **out);
  pcc_client_status (*perform)(client_conn *conn, const client_request *request,
                               client_response *response);
  /* for tests and fuzzing (may be NULL): reads len bytes (at most PCC_CLIENT_REPLAY_MAX) as
   * the response to request, the way perform reads one from the server */
  pcc_client_status (*replay)(client_conn *conn, const client_request *request,
                              const void *bytes, size_t len, client_response *response);
  void (*close)(client_conn *conn);
} client_transport;

extern const client_transport client_http1_transport; /* http1.c */
extern const client_transport client_unix_transport;  /* http1.c: unix:/PATH, a unix socket */
extern const client_transport client_curl_transport;  /* curl.c */

#endif /* PCC_CLIENT_TRANSPORT_H */
