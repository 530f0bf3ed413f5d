/* http1.c: libpycached's own HTTP/1.1 client, the transport of http:// URLs (transport.h).
 *
 * One TCP connection, kept alive between requests and opened again when the server closed it.
 * A request is written whole (a body from PCC_EXPECT_CONTINUE_MIN bytes on waits for
 * 100 Continue, PCC_CLIENT_CONTINUE_WAIT_MS at most); the response is read strictly: an
 * HTTP/1.0 or 1.1 status line, at most PCC_CLIENT_HEADERS_MAX bytes of CRLF-terminated header
 * lines (no folding), then a body delimited by one Content-Length, by chunked coding (chunk-size
 * lines of at most PCC_CLIENT_CHUNK_LINE_MAX bytes, trailers within the header limit) or by the
 * close, and never past the caller's limit. Every wait is a poll() bounded by the request's
 * deadline. Written for the import hook: libcurl, loaded with the ~30 libraries it links, cost
 * 7-8 ms at every interpreter start, more than a whole `python3 -c pass` (docs/BENCHMARKS.md,
 * "The hook's fixed cost"); this needs nothing but libc.
 *
 * The same client is the transport of unix:/PATH URLs (a node-local server on a unix socket,
 * docs/OPERATIONS.md): it connects to the socket at PATH instead of a TCP address, sends
 * "Host: localhost", and takes the request path after the base URL, since a socket path has
 * slashes of its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "transport.h"

#define HTTP_READ_SIZE (64 * 1024)  /* bytes buffered from the socket at a time */
#define HTTP_DIRECT_MIN (16 * 1024) /* body bytes from which reads go straight into the body */
#define HTTP_HOST_MAX 256           /* bytes of the host of a base URL */

struct client_conn {
  char host[HTTP_HOST_MAX]; /* as getaddrinfo takes it: brackets of an IPv6 literal removed */
  char port[8];
  char authority[HTTP_HOST_MAX + 8];     /* the Host header */
  char unix_path[PCC_UNIX_PATH_MAX + 1]; /* a unix: URL's socket; "" for http:// */
  char origin[PCC_CLIENT_URL_MAX + 1];   /* what every request URL starts with: "http://" and
                                          * the authority, or the whole unix: base URL */
  size_t origin_len;
  int fd;           /* -1 when not connected */
  bool close_after; /* the last response asked for the connection's end */
  char *in;         /* HTTP_READ_SIZE bytes read, not yet consumed */
  size_t in_start, in_end;
};

/* ---- time and waits ------------------------------------------------------------------------ */

static int64_t http_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static pcc_client_status http_fail(client_response *response, pcc_client_status rc,
                                   const char *what)
{
  snprintf(response->message, sizeof response->message, "%s", what);
  return rc;
}

static pcc_client_status http_fail_errno(client_response *response, pcc_client_status rc,
                                         const char *what, int err)
{
  snprintf(response->message, sizeof response->message, "%s: %s", what, strerror(err));
  return rc;
}

/* Waits until fd is ready for events or deadline (ms, monotonic) passes: PCC_CLIENT_OK,
 * PCC_CLIENT_TIMEOUT, or PCC_CLIENT_PROTOCOL for a poll error. */
static pcc_client_status http_wait(int fd, short events, int64_t deadline,
                                   client_response *response)
{
  for (;;) {
    int64_t left = deadline - http_now_ms();
    if (left <= 0)
      return http_fail(response, PCC_CLIENT_TIMEOUT, "timed out");
    struct pollfd p = {.fd = fd, .events = events};
    int n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
    if (n > 0)
      return PCC_CLIENT_OK; /* readable, writable, or an error the next call reports */
    if (n < 0 && errno != EINTR)
      return http_fail_errno(response, PCC_CLIENT_PROTOCOL, "poll", errno);
  }
}

/* ---- open, connect, close ------------------------------------------------------------------ */

static void http_disconnect(client_conn *conn)
{
  if (conn->fd >= 0)
    close(conn->fd);
  conn->fd = -1;
  conn->in_start = conn->in_end = 0;
  conn->close_after = false;
}

static pcc_client_status http_open(const char *base_url, const client_tls *tls,
                                   client_conn **out)
{
  (void)tls; /* all NULL: pcc_client_open refuses TLS files for http:// */
  const char *authority = base_url + strlen("http://");
  size_t len = strcspn(authority, "/");
  if (len == 0 || len >= HTTP_HOST_MAX || memchr(authority, '@', len) != NULL)
    return PCC_CLIENT_INVALID; /* no host, too long, or user information */
  client_conn *conn = calloc(1, sizeof *conn);
  if (conn == NULL || (conn->in = malloc(HTTP_READ_SIZE)) == NULL) {
    free(conn);
    return PCC_CLIENT_NOMEM;
  }
  conn->fd = -1;
  memcpy(conn->authority, authority, len);
  conn->origin_len = strlen("http://") + len;
  memcpy(conn->origin, base_url, conn->origin_len);
  const char *host = conn->authority, *port = NULL;
  size_t host_len;
  if (host[0] == '[') { /* an IPv6 literal */
    const char *end = strchr(host, ']');
    host_len = end ? (size_t)(end - host) - 1 : 0;
    host++;
    port = end && end[1] == ':' ? end + 2 : NULL;
    if (end == NULL || (end[1] != '\0' && end[1] != ':'))
      host_len = 0;
  } else {
    const char *colon = strchr(host, ':');
    host_len = colon ? (size_t)(colon - host) : len;
    port = colon ? colon + 1 : NULL;
  }
  size_t port_len = port ? strlen(port) : 0;
  bool port_ok = port == NULL || (port_len >= 1 && port_len <= 5 &&
                                  strspn(port, "0123456789") == port_len &&
                                  strtol(port, NULL, 10) >= 1 && strtol(port, NULL, 10) <= 65535);
  if (host_len == 0 || !port_ok) {
    free(conn->in);
    free(conn);
    return PCC_CLIENT_INVALID;
  }
  memmove(conn->host, host, host_len);
  conn->host[host_len] = '\0';
  snprintf(conn->port, sizeof conn->port, "%s", port ? port : "80");
  *out = conn;
  return PCC_CLIENT_OK;
}

/* "unix:/PATH": the socket at the absolute PATH (at most PCC_UNIX_PATH_MAX bytes). */
static pcc_client_status unix_open(const char *base_url, const client_tls *tls,
                                   client_conn **out)
{
  (void)tls; /* all NULL: pcc_client_open refuses TLS files for unix: */
  const char *path = base_url + strlen("unix:");
  size_t len = strlen(path);
  if (path[0] != '/' || len > PCC_UNIX_PATH_MAX || len + 5 > PCC_CLIENT_URL_MAX)
    return PCC_CLIENT_INVALID;
  client_conn *conn = calloc(1, sizeof *conn);
  if (conn == NULL || (conn->in = malloc(HTTP_READ_SIZE)) == NULL) {
    free(conn);
    return PCC_CLIENT_NOMEM;
  }
  conn->fd = -1;
  memcpy(conn->unix_path, path, len + 1);
  snprintf(conn->authority, sizeof conn->authority, "localhost");
  conn->origin_len = strlen(base_url);
  memcpy(conn->origin, base_url, conn->origin_len + 1);
  *out = conn;
  return PCC_CLIENT_OK;
}

static void http_close(client_conn *conn)
{
  if (conn == NULL)
    return;
  http_disconnect(conn);
  free(conn->in);
  free(conn);
}

/* Connects one address without blocking past deadline. Returns the socket or -1 (errno set;
 * ETIMEDOUT when the deadline passed). */
static int http_connect_one(const struct addrinfo *ai, int64_t deadline)
{
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0)
    return -1;
  int one = 1;
  if (ai->ai_family != AF_UNIX) {
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  }
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
    return fd;
  int err = errno;
  while (err == EINPROGRESS || err == EINTR) {
    int64_t left = deadline - http_now_ms();
    if (left <= 0) {
      err = ETIMEDOUT;
      break;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      err = errno;
      break;
    }
    if (n == 0)
      continue; /* the deadline is looked at again */
    socklen_t err_len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len) != 0)
      err = errno;
    if (err == 0)
      return fd;
  }
  close(fd);
  errno = err;
  return -1;
}

/* Connects the unix socket of conn. A full backlog (EAGAIN) is a server that cannot take the
 * connection now: PCC_CLIENT_CONNECT, like a refusal, rather than a wait. */
static pcc_client_status unix_connect(client_conn *conn, int64_t deadline,
                                      client_response *response)
{
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, conn->unix_path, strlen(conn->unix_path) + 1);
  struct addrinfo ai = {.ai_family = AF_UNIX, .ai_socktype = SOCK_STREAM,
                        .ai_addr = (struct sockaddr *)&addr, .ai_addrlen = sizeof addr};
  conn->fd = http_connect_one(&ai, deadline);
  if (conn->fd >= 0)
    return PCC_CLIENT_OK;
  int err = errno;
  snprintf(response->message, sizeof response->message, "cannot connect to unix:%.150s: %s",
           conn->unix_path, strerror(err));
  return err == ETIMEDOUT ? PCC_CLIENT_TIMEOUT : PCC_CLIENT_CONNECT;
}

static pcc_client_status http_connect(client_conn *conn, long connect_timeout_ms,
                                      int64_t deadline, client_response *response)
{
  int64_t connect_deadline = http_now_ms() + connect_timeout_ms;
  if (connect_deadline > deadline)
    connect_deadline = deadline;
  if (conn->unix_path[0] != '\0')
    return unix_connect(conn, connect_deadline, response);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV};
  struct addrinfo *list = NULL;
  int grc = getaddrinfo(conn->host, conn->port, &hints, &list);
  if (grc != 0) {
    snprintf(response->message, sizeof response->message, "cannot resolve %.100s: %s", conn->host,
             gai_strerror(grc));
    return PCC_CLIENT_CONNECT;
  }
  int err = ECONNREFUSED;
  for (const struct addrinfo *ai = list; ai != NULL && conn->fd < 0; ai = ai->ai_next) {
    conn->fd = http_connect_one(ai, connect_deadline);
    err = conn->fd < 0 ? errno : 0;
    if (err == ETIMEDOUT)
      break;
  }
  freeaddrinfo(list);
  if (conn->fd >= 0)
    return PCC_CLIENT_OK;
  snprintf(response->message, sizeof response->message, "cannot connect to %.100s: %s",
           conn->authority, strerror(err));
  return err == ETIMEDOUT ? PCC_CLIENT_TIMEOUT : PCC_CLIENT_CONNECT;
}

/* ---- sending ----------------------------------------------------------------------------- */

/* Writes every byte of the two pieces (b may be empty). */
static pcc_client_status http_send(client_conn *conn, const char *a, size_t a_len, const char *b,
                                   size_t b_len, int64_t deadline, client_response *response)
{
  while (a_len + b_len > 0) {
    struct iovec iov[2] = {{(void *)(uintptr_t)a, a_len}, {(void *)(uintptr_t)b, b_len}};
    struct msghdr msg = {.msg_iov = a_len ? iov : iov + 1, .msg_iovlen = a_len ? 2 : 1};
    ssize_t n = sendmsg(conn->fd, &msg, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pcc_client_status rc = http_wait(conn->fd, POLLOUT, deadline, response);
      if (rc != PCC_CLIENT_OK)
        return rc;
      continue;
    }
    if (n < 0)
      return http_fail_errno(response, PCC_CLIENT_PROTOCOL, "sending the request", errno);
    size_t sent = (size_t)n;
    size_t from_a = sent < a_len ? sent : a_len;
    a += from_a, a_len -= from_a, sent -= from_a;
    b += sent, b_len -= sent;
  }
  return PCC_CLIENT_OK;
}

/* ---- receiving --------------------------------------------------------------------------- */

/* Reads more bytes into conn->in (moving what is left to its start). PCC_CLIENT_OK with at least
 * one new byte; PCC_CLIENT_PROTOCOL on the server's close ("eof" set) or a reset. */
static pcc_client_status http_fill(client_conn *conn, int64_t deadline, bool *eof,
                                   client_response *response)
{
  if (conn->in_start > 0) {
    memmove(conn->in, conn->in + conn->in_start, conn->in_end - conn->in_start);
    conn->in_end -= conn->in_start;
    conn->in_start = 0;
  }
  if (conn->in_end == HTTP_READ_SIZE) /* callers never ask for more than the buffer holds */
    return http_fail(response, PCC_CLIENT_PROTOCOL, "a line longer than the read buffer");
  for (;;) {
    ssize_t n = recv(conn->fd, conn->in + conn->in_end, HTTP_READ_SIZE - conn->in_end, 0);
    if (n > 0) {
      conn->in_end += (size_t)n;
      return PCC_CLIENT_OK;
    }
    if (n == 0) {
      *eof = true;
      return http_fail(response, PCC_CLIENT_PROTOCOL, "the server closed the connection");
    }
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      *eof = errno == ECONNRESET;
      return http_fail_errno(response, PCC_CLIENT_PROTOCOL, "receiving the response", errno);
    }
    pcc_client_status rc = http_wait(conn->fd, POLLIN, deadline, response);
    if (rc != PCC_CLIENT_OK)
      return rc;
  }
}

/* The next line, without its CRLF, at most max bytes with it: *line points into conn->in and
 * stays valid until the next read. A bare LF, a NUL or a longer line is PCC_CLIENT_PROTOCOL. */
static pcc_client_status http_line(client_conn *conn, size_t max, int64_t deadline, bool *eof,
                                   const char **line, size_t *len, client_response *response)
{
  size_t scanned = 0;
  for (;;) {
    const char *start = conn->in + conn->in_start;
    size_t have = conn->in_end - conn->in_start;
    const char *nl = memchr(start + scanned, '\n', have - scanned);
    if (nl != NULL) {
      size_t n = (size_t)(nl - start) + 1;
      if (n > max)
        return http_fail(response, PCC_CLIENT_PROTOCOL, "a response line over the limit");
      if (n < 2 || nl[-1] != '\r' || memchr(start, '\0', n) != NULL)
        return http_fail(response, PCC_CLIENT_PROTOCOL, "a response line not ending in CRLF");
      *line = start;
      *len = n - 2;
      conn->in_start += n;
      return PCC_CLIENT_OK;
    }
    if (have >= max)
      return http_fail(response, PCC_CLIENT_PROTOCOL, "a response line over the limit");
    scanned = have;
    pcc_client_status rc = http_fill(conn, deadline, eof, response);
    if (rc != PCC_CLIENT_OK)
      return rc;
  }
}

/* What the header section says about the body. */
typedef struct {
  long status;
  bool chunked;
  bool has_length;
  uint64_t length;
  bool close; /* Connection: close, or HTTP/1.0 */
} http_head;

static bool http_token_char(unsigned char c)
{
  return c > 0x20 && c < 0x7f && strchr("\"(),/:;<=>?@[\\]{}", c) == NULL;
}

/* Whether a header line (without CRLF) names `name` (lower case, with its ':'); *value gets the
 * value with its surrounding blanks trimmed. */
static bool http_header_is(const char *line, size_t len, const char *name, const char **value,
                           size_t *value_len)
{
  size_t n = strlen(name);
  if (len < n || strncasecmp(line, name, n) != 0)
    return false;
  const char *v = line + n;
  size_t vl = len - n;
  while (vl > 0 && (*v == ' ' || *v == '\t'))
    v++, vl--;
  while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
    vl--;
  *value = v;
  *value_len = vl;
  return true;
}

/* Reads header lines up to the empty one into response->headers (within its max) and, when head
 * is not NULL, what they say about the body. Used for the headers and for chunked trailers. */
static pcc_client_status http_read_headers(client_conn *conn, int64_t deadline, bool *eof,
                                           http_head *head, client_response *response)
{
  for (;;) {
    const char *line;
    size_t len;
    size_t room = response->headers.max - response->headers.len;
    pcc_client_status rc = http_line(conn, room < 2 ? 2 : room, deadline, eof, &line, &len,
                                     response);
    if (rc != PCC_CLIENT_OK)
      return rc;
    if (len == 0)
      return PCC_CLIENT_OK;
    size_t name_len = 0;
    while (name_len < len && http_token_char((unsigned char)line[name_len]))
      name_len++;
    if (name_len == 0 || name_len == len || line[name_len] != ':')
      return http_fail(response, PCC_CLIENT_PROTOCOL, "a malformed response header line");
    for (size_t i = name_len + 1; i < len; i++)
      if ((unsigned char)line[i] < 0x20 && line[i] != '\t')
        return http_fail(response, PCC_CLIENT_PROTOCOL, "a control character in a header");
    if (pcc_dynbuf_add(&response->headers, line, len) != PCC_PROTO_OK ||
        pcc_dynbuf_add(&response->headers, "\r\n", 2) != PCC_PROTO_OK)
      return http_fail(response, PCC_CLIENT_PROTOCOL, "the response headers are over the limit");
    if (head == NULL)
      continue;
    const char *value;
    size_t value_len;
    if (http_header_is(line, len, "content-length:", &value, &value_len)) {
      uint64_t n = 0;
      if (value_len == 0 || value_len > 19 || strspn(value, "0123456789") < value_len)
        return http_fail(response, PCC_CLIENT_PROTOCOL, "a malformed Content-Length");
      for (size_t i = 0; i < value_len; i++)
        n = n * 10 + (uint64_t)(value[i] - '0');
      if (head->has_length && head->length != n)
        return http_fail(response, PCC_CLIENT_PROTOCOL, "two different Content-Lengths");
      head->has_length = true;
      head->length = n;
    } else if (http_header_is(line, len, "transfer-encoding:", &value, &value_len)) {
      if (value_len != 7 || strncasecmp(value, "chunked", 7) != 0 || head->chunked)
        return http_fail(response, PCC_CLIENT_PROTOCOL, "a transfer coding other than chunked");
      head->chunked = true;
    } else if (http_header_is(line, len, "connection:", &value, &value_len)) {
      for (size_t i = 0; i + 5 <= value_len; i++)
        if (strncasecmp(value + i, "close", 5) == 0)
          head->close = true;
    }
  }
}

/* Reads a status line and its headers (response->headers is emptied first). */
static pcc_client_status http_read_head(client_conn *conn, int64_t deadline, bool *eof,
                                        http_head *head, client_response *response)
{
  pcc_dynbuf_free(&response->headers);
  *head = (http_head){0};
  const char *line;
  size_t len;
  pcc_client_status rc = http_line(conn, PCC_CLIENT_HEADERS_MAX, deadline, eof, &line, &len,
                                   response);
  if (rc != PCC_CLIENT_OK)
    return rc;
  /* "HTTP/1.1 200 OK": the version, a space, three digits, then a space and a reason or nothing */
  bool ok = len >= 12 && memcmp(line, "HTTP/1.", 7) == 0 && (line[7] == '0' || line[7] == '1') &&
            line[8] == ' ' && line[9] >= '1' && line[9] <= '5' && line[10] >= '0' &&
            line[10] <= '9' && line[11] >= '0' && line[11] <= '9' && (len == 12 || line[12] == ' ');
  if (!ok)
    return http_fail(response, PCC_CLIENT_PROTOCOL, "not an HTTP/1.x status line");
  for (size_t i = 12; i < len; i++)
    if ((unsigned char)line[i] < 0x20 && line[i] != '\t')
      return http_fail(response, PCC_CLIENT_PROTOCOL, "a control character in the status line");
  head->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  head->close = line[7] == '0';
  rc = http_read_headers(conn, deadline, eof, head, response);
  if (rc == PCC_CLIENT_OK && head->chunked && head->has_length)
    rc = http_fail(response, PCC_CLIENT_PROTOCOL, "both Content-Length and chunked");
  return rc;
}

/* Where n bytes of body go: fd for a 2xx download, else the body buffer within its max. */
static pcc_client_status http_deliver(const client_request *request, long status,
                                      const char *data, size_t n, client_response *response)
{
  if (request->fd >= 0 && status >= 200 && status <= 299) {
    if ((uint64_t)n > request->fd_max - response->written)
      return http_fail(response, PCC_CLIENT_TOOBIG, "the download is over its limit");
    for (size_t done = 0; done < n;) {
      ssize_t w = write(request->fd, data + done, n - done);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0) {
        response->fd_errno = w < 0 ? errno : EIO;
        return http_fail_errno(response, PCC_CLIENT_IO, "writing the download",
                               response->fd_errno);
      }
      done += (size_t)w;
      response->written += (uint64_t)w;
    }
    return PCC_CLIENT_OK;
  }
  pcc_dynbuf *out = request->body_out;
  pcc_proto_status prc = n > out->max - 1 - out->len ? PCC_PROTO_RANGE
                                                     : pcc_dynbuf_add(out, data, n);
  if (prc == PCC_PROTO_RANGE)
    return http_fail(response, PCC_CLIENT_TOOBIG,
                     "the response is over the client's max_response limit");
  return prc == PCC_PROTO_OK ? PCC_CLIENT_OK
                             : http_fail(response, PCC_CLIENT_NOMEM, "out of memory");
}

/* Whether body bytes may be read straight into body_out (a big body that is not a download). */
static bool http_direct(const client_request *request, long status)
{
  return !(request->fd >= 0 && status >= 200 && status <= 299);
}

/* Reads exactly n body bytes (n == UINT64_MAX: up to the close). */
static pcc_client_status http_read_body(client_conn *conn, const client_request *request,
                                        long status, uint64_t n, int64_t deadline,
                                        client_response *response)
{
  bool to_close = n == UINT64_MAX;
  if (!to_close && http_direct(request, status) &&
      n > request->body_out->max - 1 - request->body_out->len)
    return http_fail(response, PCC_CLIENT_TOOBIG,
                     "the response is over the client's max_response limit");
  if (!to_close && http_direct(request, status) &&
      pcc_dynbuf_reserve(request->body_out, (size_t)n) != PCC_PROTO_OK)
    return http_fail(response, PCC_CLIENT_NOMEM, "out of memory");
  while (n > 0) {
    size_t have = conn->in_end - conn->in_start;
    if (have > 0) {
      size_t take = (uint64_t)have < n ? have : (size_t)n;
      pcc_client_status rc = http_deliver(request, status, conn->in + conn->in_start, take,
                                          response);
      if (rc != PCC_CLIENT_OK)
        return rc;
      conn->in_start += take;
      n -= take;
      continue;
    }
    conn->in_start = conn->in_end = 0;
    pcc_dynbuf *out = request->body_out;
    if (!to_close && n >= HTTP_DIRECT_MIN && http_direct(request, status)) {
      /* straight into the reserved body: a bundle of 15 MB is not copied once more */
      ssize_t got = recv(conn->fd, (char *)out->data + out->len, (size_t)n, 0);
      if (got > 0) {
        pcc_dynbuf_commit(out, (size_t)got);
        n -= (uint64_t)got;
        continue;
      }
      if (got == 0)
        return http_fail(response, PCC_CLIENT_PROTOCOL, "the body was cut short");
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        return http_fail_errno(response, PCC_CLIENT_PROTOCOL, "receiving the body", errno);
      pcc_client_status rc = http_wait(conn->fd, POLLIN, deadline, response);
      if (rc != PCC_CLIENT_OK)
        return rc;
      continue;
    }
    bool eof = false;
    pcc_client_status rc = http_fill(conn, deadline, &eof, response);
    if (rc != PCC_CLIENT_OK && eof && to_close)
      return PCC_CLIENT_OK; /* the close ends this body */
    if (rc != PCC_CLIENT_OK)
      return eof ? http_fail(response, PCC_CLIENT_PROTOCOL, "the body was cut short") : rc;
  }
  return PCC_CLIENT_OK;
}

/* Reads a chunked body: chunk-size lines (hex, an extension after ';' ignored), each chunk and
 * its CRLF, the last chunk, then trailers (kept with the headers, within their limit). */
static pcc_client_status http_read_chunked(client_conn *conn, const client_request *request,
                                           long status, int64_t deadline,
                                           client_response *response)
{
  for (;;) {
    const char *line;
    size_t len;
    bool eof = false;
    pcc_client_status rc = http_line(conn, PCC_CLIENT_CHUNK_LINE_MAX, deadline, &eof, &line, &len,
                                     response);
    if (rc != PCC_CLIENT_OK)
      return rc;
    size_t digits = 0;
    uint64_t size = 0;
    while (digits < len && digits < 16 && strchr("0123456789abcdefABCDEF", line[digits]) &&
           line[digits] != '\0') {
      char c = line[digits];
      size = size * 16 + (uint64_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
      digits++;
    }
    if (digits == 0 || digits == 16 ||
        (digits < len && line[digits] != ';' && line[digits] != ' ' && line[digits] != '\t'))
      return http_fail(response, PCC_CLIENT_PROTOCOL, "a malformed chunk size");
    if (size == 0)
      return http_read_headers(conn, deadline, &eof, NULL, response); /* trailers */
    rc = http_read_body(conn, request, status, size, deadline, response);
    if (rc != PCC_CLIENT_OK)
      return rc;
    rc = http_line(conn, 2, deadline, &eof, &line, &len, response);
    if (rc != PCC_CLIENT_OK)
      return rc;
    if (len != 0)
      return http_fail(response, PCC_CLIENT_PROTOCOL, "a chunk longer than its size");
  }
}

/* ---- one exchange ------------------------------------------------------------------------ */

/* The request head: request line, Host, the caller's headers, Content-Length, Expect. */
static pcc_client_status http_build_head(const client_conn *conn, const client_request *request,
                                         bool expect, pcc_dynbuf *head,
                                         client_response *response)
{
  const char *target = request->url + conn->origin_len;
  pcc_dynbuf_addf(head, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: libpycached/" PCC_VERSION
                        "\r\n",
                  request->method, target[0] ? target : "/", conn->authority);
  for (const char *const *h = request->headers; h && *h; h++)
    pcc_dynbuf_addf(head, "%s\r\n", *h);
  if (strcmp(request->method, "POST") == 0)
    pcc_dynbuf_addf(head, "Content-Length: %zu\r\n", request->body_len);
  if (expect)
    pcc_dynbuf_addf(head, "Expect: 100-continue\r\n");
  pcc_dynbuf_addf(head, "\r\n");
  if (head->error != PCC_PROTO_OK)
    return http_fail(response, head->error == PCC_PROTO_NOMEM ? PCC_CLIENT_NOMEM
                                                              : PCC_CLIENT_INVALID,
                     "the request head is over its limit");
  return PCC_CLIENT_OK;
}

/* The rest of a response whose head h has been read: its body, and whether the connection
 * ends with it. */
static pcc_client_status http_read_rest(client_conn *conn, const client_request *request,
                                        const http_head *h, int64_t deadline,
                                        client_response *response)
{
  response->status = h->status;
  conn->close_after = conn->close_after || h->close;
  if (h->status == 204 || h->status == 304)
    return PCC_CLIENT_OK;
  if (h->chunked)
    return http_read_chunked(conn, request, h->status, deadline, response);
  if (!h->has_length)
    conn->close_after = true;
  return http_read_body(conn, request, h->status, h->has_length ? h->length : UINT64_MAX,
                        deadline, response);
}

/* Reads responses up to the final one (at most PCC_CLIENT_INTERIM_MAX 1xx before it) and its
 * body. *retry is set when a reused connection ended before a byte of the response came. */
static pcc_client_status http_read_final(client_conn *conn, const client_request *request,
                                         bool reused, int64_t deadline, bool *retry,
                                         client_response *response)
{
  http_head h = {0};
  for (int interim = 0;; interim++) {
    if (interim > PCC_CLIENT_INTERIM_MAX)
      return http_fail(response, PCC_CLIENT_PROTOCOL, "too many 1xx responses");
    bool eof = false;
    pcc_client_status rc = http_read_head(conn, deadline, &eof, &h, response);
    if (rc != PCC_CLIENT_OK) {
      *retry = eof && reused && interim == 0 && conn->in_end == 0;
      return rc;
    }
    if (h.status >= 200)
      break;
  }
  return http_read_rest(conn, request, &h, deadline, response);
}

/* One attempt on the current (or a fresh) connection. *retry is set when a kept-alive
 * connection turned out closed before any byte of a response came back: the caller tries once
 * more on a new one. */
static pcc_client_status http_attempt(client_conn *conn, const client_request *request,
                                      const char *head, size_t head_len, bool expect,
                                      int64_t deadline, bool *retry, client_response *response)
{
  bool reused = conn->fd >= 0;
  pcc_client_status rc = PCC_CLIENT_OK;
  if (!reused)
    rc = http_connect(conn, request->connect_timeout_ms, deadline, response);
  if (rc != PCC_CLIENT_OK)
    return rc;
  const char *body = request->body ? request->body : "";
  rc = http_send(conn, head, head_len, body, expect ? 0 : request->body_len, deadline, response);
  if (rc != PCC_CLIENT_OK) {
    *retry = rc == PCC_CLIENT_PROTOCOL && reused;
    return rc;
  }
  if (expect) {
    /* wait a while for 100 Continue, or for an early final answer (413, 401) */
    int64_t wait_until = http_now_ms() + PCC_CLIENT_CONTINUE_WAIT_MS;
    client_response scratch = {0};
    if (http_wait(conn->fd, POLLIN, wait_until < deadline ? wait_until : deadline, &scratch) ==
        PCC_CLIENT_OK) {
      http_head h = {0};
      bool eof = false;
      rc = http_read_head(conn, deadline, &eof, &h, response);
      if (rc != PCC_CLIENT_OK) {
        *retry = eof && reused && conn->in_end == 0;
        return rc;
      }
      if (h.status >= 200) {
        conn->close_after = true; /* the body was not sent: the server may still wait for it */
        return http_read_rest(conn, request, &h, deadline, response);
      }
    }
    rc = http_send(conn, NULL, 0, body, request->body_len, deadline, response);
    if (rc != PCC_CLIENT_OK)
      return rc;
    reused = false; /* bytes of the response may have come: never sent twice */
  }
  return http_read_final(conn, request, reused, deadline, retry, response);
}

/* For pcc_client_replay_response: reads `bytes` as the response to request, through a
 * socketpair, as a response from the server is read. */
static pcc_client_status http_replay(client_conn *conn, const client_request *request,
                                     const void *bytes, size_t len, client_response *response)
{
  int pair[2];
  if (len > PCC_CLIENT_REPLAY_MAX)
    return http_fail(response, PCC_CLIENT_INVALID, "a replayed response is over its limit");
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
    return http_fail_errno(response, PCC_CLIENT_NOMEM, "socketpair", errno);
  int size = (int)PCC_CLIENT_REPLAY_MAX * 2;
  setsockopt(pair[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  setsockopt(pair[0], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  size_t done = 0;
  while (done < len) {
    ssize_t n = send(pair[1], (const char *)bytes + done, len - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    done += (size_t)n;
  }
  close(pair[1]); /* the end of the bytes is the server's close */
  http_disconnect(conn);
  pcc_client_status rc = PCC_CLIENT_OK;
  if (done < len)
    rc = http_fail(response, PCC_CLIENT_NOMEM, "the replayed response does not fit");
  fcntl(pair[0], F_SETFL, O_NONBLOCK);
  conn->fd = pair[0];
  bool retry = false;
  if (rc == PCC_CLIENT_OK)
    rc = http_read_final(conn, request, false, http_now_ms() + request->timeout_ms, &retry,
                         response);
  http_disconnect(conn);
  return rc;
}

static pcc_client_status http_perform(client_conn *conn, const client_request *request,
                                      client_response *response)
{
  int64_t deadline = http_now_ms() + request->timeout_ms;
  if (strncmp(request->url, conn->origin, conn->origin_len) != 0 ||
      (request->url[conn->origin_len] != '/' && request->url[conn->origin_len] != '\0'))
    return http_fail(response, PCC_CLIENT_INVALID, "the URL is not the client's server");
  bool expect = strcmp(request->method, "POST") == 0 &&
                request->body_len >= PCC_EXPECT_CONTINUE_MIN;
  pcc_dynbuf head;
  pcc_dynbuf_init(&head, PCC_CLIENT_REQUEST_URL_MAX + 4 * PCC_KIB + PCC_TOKEN_MAX);
  pcc_client_status rc = http_build_head(conn, request, expect, &head, response);
  if (rc == PCC_CLIENT_OK && conn->fd >= 0) {
    /* a kept-alive connection with something to read (the server's close) is not reused */
    struct pollfd p = {.fd = conn->fd, .events = POLLIN};
    if (conn->in_end > conn->in_start || poll(&p, 1, 0) != 0)
      http_disconnect(conn);
  }
  for (int attempt = 0; rc == PCC_CLIENT_OK && attempt < 2; attempt++) {
    bool retry = false;
    uint64_t body_before = request->body_out->len;
    response->status = 0;
    response->written = 0;
    rc = http_attempt(conn, request, head.data, head.len, expect, deadline, &retry, response);
    if (rc == PCC_CLIENT_OK)
      break;
    http_disconnect(conn);
    if (!retry || request->body_out->len != body_before || response->written != 0)
      break;
    rc = PCC_CLIENT_OK; /* once more on a fresh connection */
  }
  pcc_dynbuf_free(&head);
  if (rc != PCC_CLIENT_OK || conn->close_after)
    http_disconnect(conn);
  return rc;
}

const client_transport client_http1_transport = {
  .scheme = "http://",
  .open = http_open,
  .perform = http_perform,
  .replay = http_replay,
  .close = http_close,
};

const client_transport client_unix_transport = {
  .scheme = "unix:",
  .open = unix_open,
  .perform = http_perform,
  .replay = http_replay,
  .close = http_close,
};
