/* test_client.c: Check suite of libpycached (client/pycached.h) that needs no real server.
 *
 * Sources are read from temporary files; HTTP behaviour is tested against a tiny fake server
 * in a thread (a listening socket on 127.0.0.1:0 that answers one canned HTTP/1.1 response per
 * connection, or stays silent) whose loops are bounded by poll() timeouts so it always stops.
 * The fake keeps the first request it got, so tests check what was sent: the query, the method,
 * the body, and the Authorization header of a client with a token.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>
#include <zstd.h>

#include "pycached.h"
#include "test_helpers.h"

#define CLIENT_RC(expr, expected) CHECK_STATUS(expr, expected, pcc_client_strerror)

#define FAKE_REQUEST_MAX 65536
#define FAKE_POLL_MS 3000

/* ---- temporary files ------------------------------------------------------------------ */

static char tmp_dir[1024];

/* Makes a fresh directory under $TMPDIR (or /tmp). */
static void tmp_setup(void)
{
  const char *base = getenv("TMPDIR");
  int n = snprintf(tmp_dir, sizeof tmp_dir, "%s/pcc-client-XXXXXX", base && *base ? base : "/tmp");
  ck_assert(n > 0 && (size_t)n < sizeof tmp_dir);
  ck_assert_ptr_nonnull(mkdtemp(tmp_dir));
  char real[PATH_MAX]; /* sources are named by their real path */
  ck_assert_ptr_nonnull(realpath(tmp_dir, real));
  ck_assert_uint_lt(strlen(real), sizeof tmp_dir);
  memcpy(tmp_dir, real, strlen(real) + 1);
}

static void tmp_teardown(void)
{
  char cmd[sizeof tmp_dir + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
  ck_assert_int_eq(system(cmd), 0);
}

/* Writes len bytes to tmp_dir/name with the given mtime; returns the path in buf. */
static const char *tmp_file(char *buf, size_t cap, const char *name, const void *data, size_t len,
                            time_t mtime)
{
  snprintf(buf, cap, "%s/%s", tmp_dir, name);
  FILE *f = fopen(buf, "wb");
  ck_assert_ptr_nonnull(f);
  if (len)
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
  ck_assert_int_eq(fclose(f), 0);
  struct timespec times[2] = {{.tv_sec = mtime}, {.tv_sec = mtime}};
  ck_assert_int_eq(utimensat(AT_FDCWD, buf, times, 0), 0);
  return buf;
}

static pcc_source *tmp_source(const char *text)
{
  char path[PATH_MAX];
  tmp_file(path, sizeof path, "m.py", text, strlen(text), 1700000000);
  pcc_source *source = NULL;
  CLIENT_RC(pcc_source_read(path, 0, &source), PCC_CLIENT_OK);
  return source;
}

/* ---- fake server ------------------------------------------------------------------------ */

typedef struct {
  int listen_fd;
  int port;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* a unix socket's; "" for TCP */
  const char *response; /* NULL: accept and stay silent for silent_ms */
  size_t response_len;
  int silent_ms;
  int max_conns;
  int requests_per_conn; /* answered on one connection before it is closed (default 1) */
  int requests_served;
  char request[FAKE_REQUEST_MAX + 1]; /* the first request, headers and body */
  size_t request_len;
  pthread_t thread;
} fake_server;

/* Reads one request (headers, then Content-Length bytes of body), into fs->request when keep.
 * Returns false when nothing arrived. */
static bool fake_read_request(fake_server *fs, int fd, bool keep)
{
  char buf[FAKE_REQUEST_MAX + 1];
  size_t len = 0, want = (size_t)-1;
  while (len < FAKE_REQUEST_MAX && len < want) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, FAKE_POLL_MS) <= 0)
      break;
    ssize_t n = read(fd, buf + len, FAKE_REQUEST_MAX - len);
    if (n <= 0)
      break;
    len += (size_t)n;
    buf[len] = '\0';
    char *end = strstr(buf, "\r\n\r\n");
    if (end && want == (size_t)-1) {
      size_t body = 0;
      char *cl = strcasestr(buf, "\r\nContent-Length:");
      if (cl && cl < end)
        body = strtoul(cl + 17, NULL, 10);
      want = (size_t)(end + 4 - buf) + body;
    }
  }
  if (keep) {
    memcpy(fs->request, buf, len);
    fs->request[len] = '\0';
    fs->request_len = len;
  }
  return len > 0;
}

static void *fake_main(void *arg)
{
  fake_server *fs = arg;
  for (int i = 0; i < fs->max_conns; i++) {
    struct pollfd p = {.fd = fs->listen_fd, .events = POLLIN};
    if (poll(&p, 1, FAKE_POLL_MS) <= 0)
      break;
    int fd = accept(fs->listen_fd, NULL, NULL);
    if (fd < 0)
      break;
    if (fs->response == NULL) {
      /* hold the connection open without answering, bounded */
      struct pollfd q = {.fd = fd, .events = POLLIN};
      char sink[4096];
      for (int waited = 0; waited < fs->silent_ms; waited += 50) {
        if (poll(&q, 1, 50) > 0 && read(fd, sink, sizeof sink) <= 0)
          break;
      }
    } else {
      for (int r = 0; r < fs->requests_per_conn; r++) {
        if (!fake_read_request(fs, fd, i == 0 && r == 0))
          break;
        fs->requests_served++;
        for (size_t done = 0; done < fs->response_len;) {
          ssize_t n = send(fd, fs->response + done, fs->response_len - done, MSG_NOSIGNAL);
          if (n <= 0)
            break;
          done += (size_t)n;
        }
      }
      shutdown(fd, SHUT_WR);
      /* drain until the client closes (bounded), so it sees the whole response */
      struct pollfd q = {.fd = fd, .events = POLLIN};
      char sink[4096];
      while (poll(&q, 1, 500) > 0 && read(fd, sink, sizeof sink) > 0) {
      }
    }
    close(fd);
  }
  return NULL;
}

static int fake_listen(int *port_out)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(fd, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
  socklen_t len = sizeof addr;
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
  *port_out = ntohs(addr.sin_port);
  return fd;
}

/* Starts a fake server answering `response` (NUL-terminated, or NULL for silence) to up to
 * max_conns connections. */
/* Starts a server answering `response` (len bytes; binary is fine) to each request. */
static fake_server *fake_start_bytes(const char *response, size_t len, int max_conns,
                                     int requests_per_conn)
{
  fake_server *fs = calloc(1, sizeof *fs);
  ck_assert_ptr_nonnull(fs);
  fs->listen_fd = fake_listen(&fs->port);
  ck_assert_int_eq(listen(fs->listen_fd, 8), 0);
  fs->response = response;
  fs->response_len = len;
  fs->silent_ms = 2000;
  fs->max_conns = max_conns;
  fs->requests_per_conn = requests_per_conn;
  ck_assert_int_eq(pthread_create(&fs->thread, NULL, fake_main, fs), 0);
  return fs;
}

/* A unix socket at a fresh path under /tmp, listening; its path into path. */
static int fake_listen_unix(char *path, size_t path_len)
{
  static int serial;
  snprintf(path, path_len, "/tmp/pcc-test-client-%d-%d.sock", (int)getpid(), serial++);
  unlink(path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(fd, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
  return fd;
}

/* As fake_start_bytes, on a unix socket (fake_stop removes it). */
static fake_server *fake_start_unix(const char *response, int max_conns, int requests_per_conn)
{
  fake_server *fs = calloc(1, sizeof *fs);
  ck_assert_ptr_nonnull(fs);
  fs->listen_fd = fake_listen_unix(fs->path, sizeof fs->path);
  ck_assert_int_eq(listen(fs->listen_fd, 8), 0);
  fs->response = response;
  fs->response_len = strlen(response);
  fs->silent_ms = 2000;
  fs->max_conns = max_conns;
  fs->requests_per_conn = requests_per_conn;
  ck_assert_int_eq(pthread_create(&fs->thread, NULL, fake_main, fs), 0);
  return fs;
}

static fake_server *fake_start_n(const char *response, int max_conns, int requests_per_conn)
{
  return fake_start_bytes(response, response ? strlen(response) : 0, max_conns,
                          requests_per_conn);
}

static fake_server *fake_start(const char *response, int max_conns)
{
  return fake_start_n(response, max_conns, 1);
}

/* The first request the last stopped server received, and how many it answered. */
static char last_request[FAKE_REQUEST_MAX + 1];
static size_t last_request_len;
static int last_requests_served;

/* Waits for the server's thread to end by itself, keeps its first request, frees it. */
static void fake_stop(fake_server *fs)
{
  pthread_join(fs->thread, NULL);
  memcpy(last_request, fs->request, fs->request_len + 1);
  last_request_len = fs->request_len;
  last_requests_served = fs->requests_served;
  close(fs->listen_fd);
  if (fs->path[0] != '\0')
    unlink(fs->path);
  free(fs);
}

/* Builds a full HTTP/1.1 response. Caller frees. */
static char *http_response(int status, const char *reason, const char *body)
{
  size_t cap = strlen(body) + 256;
  char *out = malloc(cap);
  ck_assert_ptr_nonnull(out);
  snprintf(out, cap,
           "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
           "Connection: close\r\n\r\n%s",
           status, reason, strlen(body), body);
  return out;
}

/* A client of fs with config (its base_url is fs's, set here, with a trailing slash, which
 * the client drops). */
static pcc_client *client_with(const fake_server *fs, pcc_client_config config)
{
  char url[160];
  if (fs->path[0] != '\0')
    snprintf(url, sizeof url, "unix:%s/", fs->path);
  else
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", fs->port);
  config.base_url = url;
  pcc_client *client = NULL;
  CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_OK);
  return client;
}

static pcc_client *client_for(const fake_server *fs, long timeout_ms, size_t max_response)
{
  return client_with(fs, (pcc_client_config){.timeout_ms = timeout_ms,
                                             .max_response = max_response});
}

static const pcc_magic magic311 = {{0xa7, 0x0d, 0x0d, 0x0a}};

/* Builds the JSON of a hit for `source` as the server would (pcc_entry_to_json); the fields of
 * `tweak` that are set override the source's. Caller frees. */
typedef struct {
  int opt;
  int64_t mtime_delta;
  int32_t hash_delta;
  bool other_magic;
} entry_tweak;

static char *hit_json(const pcc_source *source, entry_tweak tweak)
{
  pcc_magic magic = magic311;
  if (tweak.other_magic)
    magic.bytes[0] = 0x6f;
  uint8_t pyc[PCC_PYC_HEADER_LEN + 8];
  pcc_pyc_header header;
  pcc_pyc_header_init(&header, &magic, source->mtime + tweak.mtime_delta, source->size);
  pcc_pyc_header_write(&header, pyc);
  memcpy(pyc + PCC_PYC_HEADER_LEN, "\xe3\x00\x01\x02\x03\x04\x05\x06", 8);
  pcc_entry_view view = {
      .magic = magic,
      .opt = tweak.opt,
      .path = source->path,
      .mtime = source->mtime + tweak.mtime_delta,
      .size = source->size,
      .hash = source->hash + tweak.hash_delta,
      .hash_checked = true,
      .digest = source->digest,
      .pyc = pyc,
      .pyc_len = sizeof pyc,
      .checksum = pcc_checksum(pyc, sizeof pyc),
      .compiler = "cpython-3.11.2",
  };
  cJSON *obj = pcc_entry_to_json(&view);
  ck_assert_ptr_nonnull(obj);
  char *text = cJSON_PrintUnformatted(obj);
  cJSON_Delete(obj);
  ck_assert_ptr_nonnull(text);
  return text;
}

/* ---- sources ------------------------------------------------------------------------------ */

START_TEST(source_abc)
{
  char path[PATH_MAX];
  tmp_file(path, sizeof path, "abc.py", "abc", 3, 1700000123);
  pcc_source *source = NULL;
  CLIENT_RC(pcc_source_read(path, 100, &source), PCC_CLIENT_OK);
  ck_assert_int_eq(source->hash, 126145);
  ck_assert_uint_eq(source->size, 3);
  ck_assert_uint_eq(source->len, 3);
  ck_assert_int_eq(source->mtime, 1700000123);
  ck_assert_mem_eq(source->data, "abc", 3);
  ck_assert_str_eq(source->path, path);
  pcc_digest digest;
  pcc_digest_compute("abc", 3, &digest);
  ck_assert(pcc_digest_equal(&digest, &source->digest));
  pcc_source_free(source);
}
END_TEST

START_TEST(source_empty)
{
  char path[PATH_MAX];
  tmp_file(path, sizeof path, "empty.py", "", 0, 1600000000);
  pcc_source *source = NULL;
  CLIENT_RC(pcc_source_read(path, 0, &source), PCC_CLIENT_OK);
  ck_assert_int_eq(source->hash, 1);
  ck_assert_uint_eq(source->size, 0);
  ck_assert_ptr_nonnull(source->data);
  ck_assert_int_eq(source->mtime, 1600000000);
  pcc_source_free(source);
  pcc_source_free(NULL);
}
END_TEST

START_TEST(source_limits)
{
  char path[PATH_MAX], link[PATH_MAX];
  tmp_file(path, sizeof path, "abc.py", "abc", 3, 1700000000);
  pcc_source *source = NULL;
  CLIENT_RC(pcc_source_read(path, 2, &source), PCC_CLIENT_TOOBIG);
  ck_assert_ptr_null(source);
  CLIENT_RC(pcc_source_read(path, 3, &source), PCC_CLIENT_OK); /* exactly at the limit */
  pcc_source_free(source);
  source = NULL;

  snprintf(link, sizeof link, "%s/missing.py", tmp_dir);
  CLIENT_RC(pcc_source_read(link, 0, &source), PCC_CLIENT_IO);
  ck_assert_int_eq(errno, ENOENT);
  CLIENT_RC(pcc_source_read(tmp_dir, 0, &source), PCC_CLIENT_IO); /* a directory */
  ck_assert_ptr_null(source);

  /* a relative symlink resolves to the real absolute path */
  snprintf(link, sizeof link, "%s/link.py", tmp_dir);
  ck_assert_int_eq(symlink("abc.py", link), 0);
  CLIENT_RC(pcc_source_read(link, 0, &source), PCC_CLIENT_OK);
  ck_assert_str_eq(source->path, path);
  pcc_source_free(source);
}
END_TEST

/* ---- connection failures ---------------------------------------------------------------- */

START_TEST(connect_refused)
{
  int port = 0;
  int fd = fake_listen(&port);
  close(fd); /* nobody listens there now */
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
  pcc_client_config config = {.base_url = url, .timeout_ms = 3000};
  pcc_client *client = NULL;
  CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_OK);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  char *body = NULL;
  long status = -1;
  CLIENT_RC(pcc_client_get_json(client, "/healthz", &body, &status), PCC_CLIENT_CONNECT);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  ck_assert_ptr_null(body);
  ck_assert_int_eq(status, -1);
  ck_assert_ptr_nonnull(pcc_client_last_error(client)->message);
  ck_assert_int_eq(pcc_client_last_error(client)->http_status, 0);
  ck_assert_int_lt((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000, 1000);
  pcc_client_close(client);
}
END_TEST

START_TEST(open_invalid)
{
  pcc_client *client = NULL;
  pcc_client_config config = {.base_url = "ftp://x"};
  CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_INVALID);
  config.base_url = "http://a b";
  CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_INVALID);
  config.base_url = "http://127.0.0.1:1";
  config.timeout_ms = -1;
  CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_INVALID);
  ck_assert_ptr_null(client);
  CLIENT_RC(pcc_client_open(NULL, &client), PCC_CLIENT_OK); /* all defaults */
  char *body = NULL;
  CLIENT_RC(pcc_client_get_json(client, "v1/stats", &body, NULL), PCC_CLIENT_INVALID);
  pcc_client_close(client);
  pcc_client_close(NULL);
}
END_TEST

/* TLS files: refused with http:// (they would protect nothing), a key needs a certificate, and a
 * file that cannot be opened is named at open, not at the first handshake. */
START_TEST(open_tls_files)
{
  pcc_client *client = NULL;
  pcc_client_config config = {.base_url = "http://127.0.0.1:1", .ca_file = "/dev/null"};
  CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_INVALID);
  config = (pcc_client_config){.base_url = "https://127.0.0.1:1", .client_key = "/dev/null"};
  CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_INVALID);
  config = (pcc_client_config){.base_url = "https://127.0.0.1:1", .ca_file = ""};
  CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_INVALID);
  config.ca_file = "/nonexistent/ca.pem";
  CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_IO);
  ck_assert_int_eq(errno, ENOENT);
  ck_assert_ptr_null(client);
  config = (pcc_client_config){.base_url = "https://127.0.0.1:1", .ca_file = "/dev/null",
                               .client_cert = "/dev/null", .client_key = "/dev/null"};
  CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_OK);
  pcc_client_close(client);
}
END_TEST

START_TEST(timeout_silent_server)
{
  fake_server *fs = fake_start(NULL, 1);
  pcc_client *client = client_for(fs, 300, 0);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  char *body = NULL;
  CLIENT_RC(pcc_client_get_json(client, "/healthz", &body, NULL), PCC_CLIENT_TIMEOUT);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
  ck_assert_int_ge(ms, 250);
  ck_assert_int_lt(ms, 1200);
  pcc_client_close(client);
  fake_stop(fs);
}
END_TEST

/* ---- hits -------------------------------------------------------------------------------- */

START_TEST(lookup_hit)
{
  pcc_source *source = tmp_source("x = 1\n");
  char *json = hit_json(source, (entry_tweak){0});
  char *response = http_response(200, "OK", json);
  fake_server *fs = fake_start(response, 1);
  pcc_client *client = client_for(fs, 5000, 0);
  pcc_entry *entry = NULL;
  CLIENT_RC(pcc_client_lookup(client, &magic311, 0, source, true, &entry), PCC_CLIENT_OK);
  ck_assert_ptr_nonnull(entry);
  ck_assert_int_eq(entry->view.mtime, source->mtime);
  ck_assert_str_eq(entry->view.compiler, "cpython-3.11.2");
  ck_assert_uint_eq(entry->view.pyc_len, PCC_PYC_HEADER_LEN + 8);
  size_t body_len = 0;
  ck_assert_str_eq(pcc_client_last_body(client, &body_len), json);
  ck_assert_uint_eq(body_len, strlen(json));
  pcc_entry_free(entry);
  pcc_client_close(client);
  fake_stop(fs);

  /* the request carried every parameter, the path URL-encoded */
  char digest_hex[PCC_DIGEST_HEX_LEN + 1], expect[512];
  pcc_digest_to_hex(&source->digest, digest_hex);
  ck_assert_msg(strncmp(last_request, "GET /v1/code?magic=a70d0d0a&opt=0&path=%2F", 42) == 0,
                "%s", last_request);
  const char *path_at = strstr(last_request, "&path="), *mtime_at = strstr(last_request, "&mtime=");
  ck_assert(path_at != NULL && mtime_at != NULL && path_at < mtime_at);
  ck_assert_ptr_null(memchr(path_at, '/', (size_t)(mtime_at - path_at))); /* '/' escaped */
  snprintf(expect, sizeof expect, "&mtime=1700000000&size=6&hash=%d&digest=%s HTTP/1.1",
           source->hash, digest_hex);
  ck_assert_msg(strstr(last_request, expect) != NULL, "%s", last_request);
  free(response);
  free(json);
  pcc_source_free(source);
}
END_TEST

START_TEST(lookup_no_hash)
{
  pcc_source *source = tmp_source("x = 1\n");
  char *json = hit_json(source, (entry_tweak){.hash_delta = 5}); /* hash not checked */
  char *response = http_response(200, "OK", json);
  fake_server *fs = fake_start(response, 1);
  pcc_client *client = client_for(fs, 5000, 0);
  pcc_entry *entry = NULL;
  CLIENT_RC(pcc_client_lookup(client, &magic311, 0, source, false, &entry), PCC_CLIENT_OK);
  pcc_entry_free(entry);
  pcc_client_close(client);
  fake_stop(fs);
  ck_assert_msg(strstr(last_request, "hash=") == NULL && strstr(last_request, "digest=") == NULL,
                "%s", last_request);
  ck_assert_msg(strstr(last_request, "&mtime=1700000000&size=6 HTTP/1.1") != NULL, "%s",
                last_request);
  free(response);
  free(json);
  pcc_source_free(source);
}
END_TEST

/* Expects PCC_CLIENT_PROTOCOL for a 200 response with this body. */
static void expect_protocol(const pcc_source *source, const char *body)
{
  char *response = http_response(200, "OK", body);
  fake_server *fs = fake_start(response, 1);
  pcc_client *client = client_for(fs, 5000, 0);
  pcc_entry *entry = NULL;
  CLIENT_RC(pcc_client_lookup(client, &magic311, 0, source, true, &entry), PCC_CLIENT_PROTOCOL);
  ck_assert_ptr_null(entry);
  ck_assert_ptr_nonnull(pcc_client_last_error(client)->message);
  pcc_client_close(client);
  fake_stop(fs);
  free(response);
}

START_TEST(lookup_corrupt)
{
  pcc_source *source = tmp_source("x = 1\n");
  char *json = hit_json(source, (entry_tweak){0});

  /* one flipped base64 character in pyc */
  char *bad = strdup(json);
  char *pyc = strstr(bad, "\"pyc\":\"");
  ck_assert_ptr_nonnull(pyc);
  char *c = pyc + 7 + 12;
  *c = *c == 'A' ? 'B' : 'A';
  expect_protocol(source, bad);
  free(bad);

  /* a wrong checksum */
  bad = strdup(json);
  char *sum = strstr(bad, "\"checksum\":\"");
  ck_assert_ptr_nonnull(sum);
  sum[12] = sum[12] == '0' ? '1' : '0';
  expect_protocol(source, bad);
  free(bad);

  /* consistent entries that answer another question */
  char *other = hit_json(source, (entry_tweak){.mtime_delta = 1});
  expect_protocol(source, other);
  free(other);
  other = hit_json(source, (entry_tweak){.opt = 1});
  expect_protocol(source, other);
  free(other);
  other = hit_json(source, (entry_tweak){.hash_delta = 1});
  expect_protocol(source, other);
  free(other);
  other = hit_json(source, (entry_tweak){.other_magic = true});
  expect_protocol(source, other);
  free(other);

  /* not JSON, or not an entry */
  expect_protocol(source, "hello");
  expect_protocol(source, "{\"status\": \"ok\"}");
  expect_protocol(source, "");
  free(json);
  pcc_source_free(source);
}
END_TEST

/* A raw pyc answer (Accept: application/x-python-pyc) as the server sends it; `flip` damages
 * one byte of the body after the checksum was computed, `drop_checksum` leaves its header out. */
static size_t raw_response(char *out, size_t cap, const pcc_source *source, bool flip,
                           bool drop_checksum, int64_t mtime_delta)
{
  uint8_t pyc[PCC_PYC_HEADER_LEN + 8];
  pcc_pyc_header header;
  pcc_pyc_header_init(&header, &magic311, source->mtime + mtime_delta, source->size);
  pcc_pyc_header_write(&header, pyc);
  memcpy(pyc + PCC_PYC_HEADER_LEN, "\xe3\x00\x01\x02\x03\x04\x05\x06", 8);
  char digest_hex[PCC_DIGEST_HEX_LEN + 1], checksum_hex[17], checksum_line[64] = "";
  pcc_digest_to_hex(&source->digest, digest_hex);
  pcc_checksum_to_hex(pcc_checksum(pyc, sizeof pyc), checksum_hex);
  if (!drop_checksum)
    snprintf(checksum_line, sizeof checksum_line, "X-Pycached-Checksum: %s\r\n", checksum_hex);
  if (flip)
    pyc[sizeof pyc - 1] ^= 0x01;
  int n = snprintf(out, cap,
                   "HTTP/1.1 200 OK\r\nContent-Type: application/x-python-pyc\r\n"
                   "Content-Length: %zu\r\nX-Pycached-Digest: %s\r\n%s"
                   "X-Pycached-Hash: %d\r\nX-Pycached-Validation: hash\r\n"
                   "X-Pycached-Compiler: cpython-3.11.2\r\nX-Pycached-Outcome: hit\r\n"
                   "Connection: close\r\n\r\n",
                   sizeof pyc, digest_hex, checksum_line, (int)source->hash);
  ck_assert(n > 0 && (size_t)n + sizeof pyc <= cap);
  memcpy(out + n, pyc, sizeof pyc);
  return (size_t)n + sizeof pyc;
}

static pcc_client_status raw_lookup(const pcc_source *source, const char *response, size_t len,
                                    pcc_entry **entry)
{
  fake_server *fs = fake_start_bytes(response, len, 1, 1);
  pcc_client *client = client_with(fs, (pcc_client_config){.timeout_ms = 5000, .raw_pyc = true});
  pcc_client_status rc = pcc_client_lookup(client, &magic311, 0, source, true, entry);
  pcc_client_close(client);
  fake_stop(fs);
  return rc;
}

START_TEST(lookup_raw_pyc)
{
  pcc_source *source = tmp_source("x = 1\n");
  char response[1024];
  pcc_entry *entry = NULL;
  size_t len = raw_response(response, sizeof response, source, false, false, 0);
  CLIENT_RC(raw_lookup(source, response, len, &entry), PCC_CLIENT_OK);
  ck_assert_ptr_nonnull(strstr(last_request, "Accept: application/x-python-pyc"));
  ck_assert_uint_eq(entry->view.pyc_len, PCC_PYC_HEADER_LEN + 8);
  ck_assert_int_eq(entry->view.hash, source->hash);
  ck_assert(pcc_digest_equal(&entry->view.digest, &source->digest));
  ck_assert(entry->view.hash_checked);
  ck_assert_str_eq(entry->view.compiler, "cpython-3.11.2");
  pcc_entry_free(entry);
  entry = NULL;

  len = raw_response(response, sizeof response, source, true, false, 0);
  CLIENT_RC(raw_lookup(source, response, len, &entry), PCC_CLIENT_PROTOCOL);
  len = raw_response(response, sizeof response, source, false, true, 0);
  CLIENT_RC(raw_lookup(source, response, len, &entry), PCC_CLIENT_PROTOCOL);
  len = raw_response(response, sizeof response, source, false, false, 1);
  CLIENT_RC(raw_lookup(source, response, len, &entry), PCC_CLIENT_PROTOCOL);
  len = raw_response(response, sizeof response, source, false, false, 0);
  CLIENT_RC(raw_lookup(source, response, len - 3, &entry), PCC_CLIENT_PROTOCOL); /* truncated */
  ck_assert_ptr_null(entry);
  pcc_source_free(source);
}
END_TEST

/* Replays response (status line, header lines, body) through pcc_client_replay_lookup. */
static pcc_client_status replay(bool raw, const pcc_source *source, const char *response,
                                size_t len, pcc_entry **entry, int64_t *line)
{
  pcc_client_config config = {.raw_pyc = raw};
  pcc_client *client = NULL;
  CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_OK);
  const char *headers = strstr(response, "\r\n") + 2, *end = strstr(response, "\r\n\r\n");
  long status = strtol(response + 9, NULL, 10);
  size_t headers_len = (size_t)(end - headers) + 2;
  const char *body = end + 4;
  pcc_client_status rc = pcc_client_replay_lookup(client, &magic311, 0, source, true, status,
                                                  headers, headers_len, body,
                                                  len - (size_t)(body - response), entry);
  *line = pcc_client_last_error(client)->line;
  pcc_client_close(client);
  return rc;
}

/* pcc_client_replay_lookup (the fuzz target's way in) answers as a lookup over HTTP does. */
START_TEST(replay_is_lookup)
{
  pcc_source *source = tmp_source("x = 1\n");
  char response[1024];
  const struct {
    bool flip, drop_checksum;
    int64_t mtime_delta;
    pcc_client_status want;
  } cases[] = {{false, false, 0, PCC_CLIENT_OK}, {true, false, 0, PCC_CLIENT_PROTOCOL},
               {false, true, 0, PCC_CLIENT_PROTOCOL}, {false, false, 1, PCC_CLIENT_PROTOCOL}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t len = raw_response(response, sizeof response, source, cases[i].flip,
                              cases[i].drop_checksum, cases[i].mtime_delta);
    pcc_entry *over_http = NULL, *replayed = NULL;
    int64_t line = 0;
    CLIENT_RC(raw_lookup(source, response, len, &over_http), cases[i].want);
    CLIENT_RC(replay(true, source, response, len, &replayed, &line), cases[i].want);
    if (cases[i].want == PCC_CLIENT_OK) {
      ck_assert_uint_eq(replayed->view.pyc_len, over_http->view.pyc_len);
      ck_assert_mem_eq(replayed->view.pyc, over_http->view.pyc, over_http->view.pyc_len);
      ck_assert_str_eq(replayed->view.compiler, over_http->view.compiler);
    }
    pcc_entry_free(over_http);
    pcc_entry_free(replayed);
  }
  /* an error's line out of range (a number the server sends) is -1, not undefined behaviour */
  char *error = http_response(422, "Unprocessable Entity",
                              "{\"error\":\"compile-error\",\"message\":\"m\",\"line\":1e300}");
  pcc_entry *entry = NULL;
  int64_t line = 0;
  CLIENT_RC(replay(false, source, error, strlen(error), &entry, &line),
            PCC_CLIENT_COMPILE_ERROR);
  ck_assert_int_eq(line, -1);
  free(error);
  pcc_source_free(source);
}
END_TEST

START_TEST(garbage_reply)
{
  fake_server *fs = fake_start("this is not HTTP\r\n\r\n", 1);
  pcc_client *client = client_for(fs, 5000, 0);
  char *body = NULL;
  pcc_client_status rc = pcc_client_get_json(client, "/healthz", &body, NULL);
  ck_assert_msg(rc == PCC_CLIENT_PROTOCOL, "%s", pcc_client_strerror(rc));
  pcc_client_close(client);
  fake_stop(fs);
}
END_TEST

/* ---- server errors ------------------------------------------------------------------------ */

START_TEST(lookup_miss)
{
  pcc_source *source = tmp_source("x = 1\n");
  char *response = http_response(404, "Not Found",
                                 "{\"error\":\"miss\",\"message\":\"no entry\",\"reason\":\"absent\"}");
  fake_server *fs = fake_start(response, 1);
  pcc_client *client = client_for(fs, 5000, 0);
  pcc_entry *entry = NULL;
  CLIENT_RC(pcc_client_lookup(client, &magic311, 2, source, true, &entry), PCC_CLIENT_MISS);
  ck_assert_ptr_null(entry);
  const pcc_client_error *err = pcc_client_last_error(client);
  ck_assert_int_eq(err->http_status, 404);
  ck_assert_str_eq(err->error, "miss");
  ck_assert_str_eq(err->reason, "absent");
  ck_assert_str_eq(err->message, "no entry");
  ck_assert_int_eq(err->line, -1);
  ck_assert_ptr_nonnull(strstr(pcc_client_last_body(client, NULL), "\"absent\""));
  pcc_client_close(client);
  fake_stop(fs);
  ck_assert_ptr_nonnull(strstr(last_request, "&opt=2&"));
  free(response);
  pcc_source_free(source);
}
END_TEST

START_TEST(compile_error)
{
  pcc_source *source = tmp_source("def f(:\n");
  char *response = http_response(
      422, "Unprocessable Entity",
      "{\"error\":\"compile-error\",\"message\":\"invalid syntax\",\"type\":\"SyntaxError\","
      "\"line\":1,\"offset\":7}");
  fake_server *fs = fake_start(response, 1);
  pcc_client *client = client_for(fs, 5000, 0);
  pcc_entry *entry = NULL;
  CLIENT_RC(pcc_client_compile(client, &magic311, 0, source, &entry), PCC_CLIENT_COMPILE_ERROR);
  const pcc_client_error *err = pcc_client_last_error(client);
  ck_assert_int_eq(err->http_status, 422);
  ck_assert_str_eq(err->type, "SyntaxError");
  ck_assert_str_eq(err->message, "invalid syntax");
  ck_assert_int_eq(err->line, 1);
  ck_assert_int_eq(err->offset, 7);
  pcc_client_close(client);
  fake_stop(fs);

  /* a POST with the source as its body, no Expect: 100-continue */
  ck_assert_msg(strncmp(last_request, "POST /v1/compile?magic=a70d0d0a&opt=0&path=", 43) == 0, "%s",
                last_request);
  ck_assert_ptr_nonnull(strcasestr(last_request, "\r\nContent-Type: application/octet-stream\r\n"));
  ck_assert_ptr_nonnull(strcasestr(last_request, "\r\nContent-Length: 8\r\n"));
  ck_assert_ptr_null(strcasestr(last_request, "\r\nExpect:"));
  ck_assert_ptr_nonnull(strstr(last_request, "&size=8&hash="));
  ck_assert_str_eq(last_request + last_request_len - 8, "def f(:\n");
  free(response);
  pcc_source_free(source);
}
END_TEST

START_TEST(compile_hit_empty_source)
{
  pcc_source *source = tmp_source("");
  char *json = hit_json(source, (entry_tweak){0});
  char *response = http_response(200, "OK", json);
  fake_server *fs = fake_start(response, 1);
  pcc_client *client = client_for(fs, 5000, 0);
  pcc_entry *entry = NULL;
  CLIENT_RC(pcc_client_compile(client, &magic311, 0, source, &entry), PCC_CLIENT_OK);
  ck_assert_uint_eq(entry->view.size, 0);
  pcc_entry_free(entry);
  pcc_client_close(client);
  fake_stop(fs);
  ck_assert_ptr_nonnull(strcasestr(last_request, "\r\nContent-Length: 0\r\n"));
  ck_assert_ptr_nonnull(strstr(last_request, "&size=0&hash=1&digest="));
  free(response);
  free(json);
  pcc_source_free(source);
}
END_TEST

START_TEST(other_errors)
{
  pcc_source *source = tmp_source("x = 1\n");
  struct {
    int status;
    const char *body;
    pcc_client_status expected;
    const char *code;
  } cases[] = {
      {422, "{\"error\":\"unsupported-magic\",\"message\":\"no backend\",\"magics\":[\"a70d0d0a\"]}",
       PCC_CLIENT_UNSUPPORTED_MAGIC, "unsupported-magic"},
      {400, "{\"error\":\"bad-parameter\",\"message\":\"bad\",\"param\":\"mtime\"}", PCC_CLIENT_HTTP,
       "bad-parameter"},
      {507, "{\"error\":\"store-full\",\"message\":\"full\"}", PCC_CLIENT_HTTP, "store-full"},
      {502, "<html>bad gateway</html>", PCC_CLIENT_HTTP, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *response = http_response(cases[i].status, "Error", cases[i].body);
    fake_server *fs = fake_start(response, 1);
    pcc_client *client = client_for(fs, 5000, 0);
    pcc_entry *entry = NULL;
    CLIENT_RC(pcc_client_compile(client, &magic311, 0, source, &entry), cases[i].expected);
    const pcc_client_error *err = pcc_client_last_error(client);
    ck_assert_int_eq(err->http_status, cases[i].status);
    if (cases[i].code)
      ck_assert_str_eq(err->error, cases[i].code);
    else
      ck_assert_ptr_null(err->error);
    ck_assert_ptr_nonnull(err->message);
    if (i == 1)
      ck_assert_str_eq(err->param, "mtime");
    pcc_client_close(client);
    fake_stop(fs);
    free(response);
  }
  pcc_source_free(source);
}
END_TEST

/* A 503's Retry-After, as the hook's breaker reads it: delta-seconds, bounded; anything else
 * (absent, an HTTP-date, negative) is -1. */
START_TEST(retry_after)
{
  pcc_source *source = tmp_source("x = 1\n");
  struct {
    const char *header; /* the header line with its CRLF, "" for none */
    int64_t expected;
  } cases[] = {
    {"Retry-After: 5\r\n", 5},
    {"retry-after:   42 \r\n", 42},
    {"", -1},
    {"Retry-After: Wed, 21 Oct 2026 07:28:00 GMT\r\n", -1},
    {"Retry-After: -3\r\n", -1},
    {"Retry-After: 100000\r\n", PCC_CLIENT_RETRY_AFTER_MAX},
  };
  static const char body[] = "{\"error\":\"busy\",\"message\":\"try later\"}";
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char response[512];
    snprintf(response, sizeof response,
             "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n%s"
             "Content-Length: %zu\r\n\r\n%s",
             cases[i].header, strlen(body), body);
    fake_server *fs = fake_start(response, 1);
    pcc_client *client = client_for(fs, 5000, 0);
    pcc_entry *entry = NULL;
    CLIENT_RC(pcc_client_compile(client, &magic311, 0, source, &entry), PCC_CLIENT_HTTP);
    const pcc_client_error *err = pcc_client_last_error(client);
    ck_assert_int_eq(err->http_status, 503);
    ck_assert_int_eq(err->retry_after, cases[i].expected);
    pcc_client_close(client);
    fake_stop(fs);
  }
  pcc_source_free(source);
}
END_TEST

/* ---- size limits ------------------------------------------------------------------------- */

START_TEST(response_too_big)
{
  char body[5001];
  memset(body, 'x', 5000);
  body[5000] = '\0';
  /* with a Content-Length (refused up front) */
  char *response = http_response(200, "OK", body);
  fake_server *fs = fake_start(response, 1);
  pcc_client *client = client_for(fs, 5000, 1000);
  char *out = NULL;
  CLIENT_RC(pcc_client_get_json(client, "/v1/stats", &out, NULL), PCC_CLIENT_TOOBIG);
  ck_assert_ptr_null(out);
  pcc_client_close(client);
  fake_stop(fs);
  free(response);

  /* without one (cut off while streaming) */
  size_t cap = sizeof body + 128;
  response = malloc(cap);
  snprintf(response, cap, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n%s", body);
  fs = fake_start(response, 1);
  client = client_for(fs, 5000, 1000);
  CLIENT_RC(pcc_client_get_json(client, "/v1/stats", &out, NULL), PCC_CLIENT_TOOBIG);
  ck_assert_ptr_null(out);
  pcc_client_close(client);
  fake_stop(fs);

  /* exactly at the limit is fine */
  body[1000] = '\0';
  snprintf(response, cap, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n%s", body);
  fs = fake_start(response, 1);
  client = client_for(fs, 5000, 1000);
  CLIENT_RC(pcc_client_get_json(client, "/v1/stats", &out, NULL), PCC_CLIENT_OK);
  ck_assert_uint_eq(strlen(out), 1000);
  free(out);
  pcc_client_close(client);
  fake_stop(fs);
  free(response);
}
END_TEST

/* ---- stats ------------------------------------------------------------------------------- */

START_TEST(stats_default_magic)
{
  char *response = http_response(
      200, "OK",
      "{\"version\":\"0.1.0\",\"compilers\":[{\"name\":\"pypy\",\"magic\":\"500d0d0a\"},"
      "{\"name\":\"cpython-3.11.2\",\"magic\":\"a70d0d0a\",\"default\":true}]}");
  fake_server *fs = fake_start(response, 2);
  pcc_client *client = client_for(fs, 5000, 0);
  pcc_magic magic;
  CLIENT_RC(pcc_client_default_magic(client, &magic), PCC_CLIENT_OK);
  ck_assert(pcc_magic_equal(&magic, &magic311));
  char *body = NULL;
  long status = 0;
  CLIENT_RC(pcc_client_get_json(client, "/v1/stats", &body, &status), PCC_CLIENT_OK);
  ck_assert_int_eq(status, 200);
  ck_assert_ptr_nonnull(strstr(body, "\"default\":true"));
  free(body);
  pcc_client_close(client);
  fake_stop(fs);
  ck_assert_msg(strncmp(last_request, "GET /v1/stats HTTP/1.1\r\n", 24) == 0, "%s", last_request);
  free(response);

  response = http_response(200, "OK", "{\"compilers\":[]}");
  fs = fake_start(response, 1);
  client = client_for(fs, 5000, 0);
  CLIENT_RC(pcc_client_default_magic(client, &magic), PCC_CLIENT_PROTOCOL);
  pcc_client_close(client);
  fake_stop(fs);
  free(response);
}
END_TEST

/* Three GET /healthz through one handle on fs, each answered {"status":"ok"}; stops fs and
 * checks that it served three requests. */
static void healthz_three_times(fake_server *fs)
{
  pcc_client *client = client_for(fs, 5000, 0);
  for (int i = 0; i < 3; i++) {
    char *body = NULL;
    CLIENT_RC(pcc_client_get_json(client, "/healthz", &body, NULL), PCC_CLIENT_OK);
    ck_assert_str_eq(body, "{\"status\":\"ok\"}");
    free(body);
  }
  pcc_client_close(client);
  fake_stop(fs);
  ck_assert_int_eq(last_requests_served, 3);
}

START_TEST(keep_alive)
{
  /* one connection that answers three requests: the handle must reuse it */
  const char *response = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         "Content-Length: 15\r\n\r\n{\"status\":\"ok\"}";
  fake_server *fs = fake_start_n(response, 1, 3);
  healthz_three_times(fs);
}
END_TEST

/* A unix: base URL: one kept-alive connection to the socket for three requests, each asking
 * for the path after the socket's, with Host: localhost. */
START_TEST(unix_keep_alive)
{
  const char *response = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         "Content-Length: 15\r\n\r\n{\"status\":\"ok\"}";
  fake_server *fs = fake_start_unix(response, 1, 3);
  healthz_three_times(fs);
  const char *line = "GET /healthz HTTP/1.1\r\n";
  ck_assert_msg(strncmp(last_request, line, strlen(line)) == 0, "%s", last_request);
  ck_assert_ptr_nonnull(strstr(last_request, "\r\nHost: localhost\r\n"));
}
END_TEST

/* unix: URLs: a relative or too long path is refused at open; a socket path with nobody behind
 * it, or no file at all, is PCC_CLIENT_CONNECT at once, naming the socket. */
START_TEST(unix_invalid_and_refused)
{
  pcc_client *client = NULL;
  pcc_client_config config = {.base_url = "unix:relative.sock", .timeout_ms = 3000};
  CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_INVALID);
  char url[PCC_UNIX_PATH_MAX + 16] = "unix:/";
  memset(url + 6, 'a', PCC_UNIX_PATH_MAX); /* one byte over: 108 with the leading '/' */
  url[6 + PCC_UNIX_PATH_MAX] = '\0';
  config.base_url = url;
  CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_INVALID);
  url[5 + PCC_UNIX_PATH_MAX] = '\0'; /* exactly the limit: opens */
  CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_OK);
  pcc_client_close(client);
  char path[108];
  for (int bound = 0; bound < 2; bound++) {
    int fd = fake_listen_unix(path, sizeof path); /* bound, never listening: refused */
    if (!bound) {
      close(fd);
      unlink(path); /* no file at all */
    }
    snprintf(url, sizeof url, "unix:%s", path);
    CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_OK);
    char *body = NULL;
    CLIENT_RC(pcc_client_get_json(client, "/healthz", &body, NULL), PCC_CLIENT_CONNECT);
    ck_assert_ptr_nonnull(strstr(pcc_client_last_error(client)->message, path));
    pcc_client_close(client);
    if (bound) {
      close(fd);
      unlink(path);
    }
  }
}
END_TEST

/* ---- the HTTP/1.1 transport (client/http1.c) ------------------------------------------------ */

/* GET /healthz answered by `response` (one connection): the status, and the body in *body. */
static pcc_client_status get_over(const char *response, size_t len, size_t max_response,
                                  char **body)
{
  fake_server *fs = fake_start_bytes(response, len, 1, 1);
  pcc_client *client = client_for(fs, 5000, max_response);
  *body = NULL;
  pcc_client_status rc = pcc_client_get_json(client, "/healthz", body, NULL);
  pcc_client_close(client);
  fake_stop(fs);
  return rc;
}

/* Every framing the server may use is read; every malformed or oversize one is refused. */
START_TEST(http_framing)
{
  static char big_headers[PCC_CLIENT_HEADERS_MAX + 200], many_interim[2048];
  int n = snprintf(big_headers, sizeof big_headers, "HTTP/1.1 200 OK\r\nX-Big: ");
  memset(big_headers + n, 'a', PCC_CLIENT_HEADERS_MAX);
  snprintf(big_headers + n + PCC_CLIENT_HEADERS_MAX, 64, "\r\nContent-Length: 2\r\n\r\nok");
  size_t at = 0;
  for (int i = 0; i <= PCC_CLIENT_INTERIM_MAX + 1; i++)
    at += (size_t)snprintf(many_interim + at, sizeof many_interim - at,
                           "HTTP/1.1 103 Early Hints\r\n\r\n");
  snprintf(many_interim + at, sizeof many_interim - at, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  const struct {
    const char *response;
    size_t max_response;
    pcc_client_status want;
    const char *body;
  } cases[] = {
    {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, PCC_CLIENT_OK, "ok"},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n"
     "0\r\nX-Trailer: t\r\n\r\n", 0, PCC_CLIENT_OK, "abc0123456789"},
    {"HTTP/1.0 200 OK\r\n\r\nto the close", 0, PCC_CLIENT_OK, "to the close"},
    {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0,
     PCC_CLIENT_OK, "ok"},
    {"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", 0, PCC_CLIENT_OK, ""},
    {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", 0,
     PCC_CLIENT_PROTOCOL, NULL},
    {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
     0, PCC_CLIENT_PROTOCOL, NULL},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok", 0, PCC_CLIENT_PROTOCOL, NULL},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n", 0,
     PCC_CLIENT_PROTOCOL, NULL},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nok\r\n0\r\n\r\n", 0,
     PCC_CLIENT_PROTOCOL, NULL},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n", 0, PCC_CLIENT_PROTOCOL,
     NULL}, /* no last chunk before the close */
    {"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nshort", 0, PCC_CLIENT_PROTOCOL, NULL},
    {"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok", 0,
     PCC_CLIENT_PROTOCOL, NULL},
    {"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 0, PCC_CLIENT_PROTOCOL, NULL},
    {"HTTP/2 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, PCC_CLIENT_PROTOCOL, NULL},
    {"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok", 0, PCC_CLIENT_PROTOCOL, NULL},
    {big_headers, 0, PCC_CLIENT_PROTOCOL, NULL},
    {many_interim, 0, PCC_CLIENT_PROTOCOL, NULL},
    {"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789a", 10, PCC_CLIENT_TOOBIG, NULL},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n6\r\n6789ab\r\n0\r\n\r\n",
     10, PCC_CLIENT_TOOBIG, NULL},
    {"HTTP/1.0 200 OK\r\n\r\n0123456789a", 10, PCC_CLIENT_TOOBIG, NULL},
    {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", 10, PCC_CLIENT_OK, "0123456789"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *body = NULL;
    pcc_client_status rc = get_over(cases[i].response, strlen(cases[i].response),
                                    cases[i].max_response, &body);
    ck_assert_msg(rc == cases[i].want, "case %zu: %s, not %s", i, pcc_client_strerror(rc),
                  pcc_client_strerror(cases[i].want));
    if (cases[i].body != NULL)
      ck_assert_str_eq(body, cases[i].body);
    free(body);
  }
}
END_TEST

/* A server that closes each connection after one answer (without saying so) costs the next
 * request a new connection, not an error. */
START_TEST(http_reconnects_after_close)
{
  const char *response = "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}";
  fake_server *fs = fake_start_n(response, 3, 1);
  healthz_three_times(fs);
}
END_TEST

/* pcc_client_replay_response (the fuzz target's way into http1.c) answers as a lookup over
 * HTTP does. */
START_TEST(replay_response_is_lookup)
{
  pcc_source *source = tmp_source("x = 1\n");
  char response[1024];
  size_t len = raw_response(response, sizeof response, source, false, false, 0);
  pcc_client_config config = {.raw_pyc = true};
  pcc_client *client = NULL;
  CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_OK);
  pcc_entry *over_http = NULL, *replayed = NULL;
  CLIENT_RC(raw_lookup(source, response, len, &over_http), PCC_CLIENT_OK);
  CLIENT_RC(pcc_client_replay_response(client, &magic311, 0, source, true, response, len,
                                       &replayed),
            PCC_CLIENT_OK);
  ck_assert_uint_eq(replayed->view.pyc_len, over_http->view.pyc_len);
  ck_assert_mem_eq(replayed->view.pyc, over_http->view.pyc, over_http->view.pyc_len);
  pcc_entry_free(over_http);
  pcc_entry_free(replayed);
  replayed = NULL;
  CLIENT_RC(pcc_client_replay_response(client, &magic311, 0, source, true, response, len - 3,
                                       &replayed),
            PCC_CLIENT_PROTOCOL); /* cut short */
  ck_assert_ptr_null(replayed);
  static char huge[PCC_CLIENT_REPLAY_MAX + 1];
  CLIENT_RC(pcc_client_replay_response(client, &magic311, 0, source, true, huge, sizeof huge,
                                       &replayed),
            PCC_CLIENT_INVALID);
  pcc_client_close(client);
  pcc_source_free(source);
}
END_TEST

/* A response whose body is `text` compressed with zstd, with this Content-Encoding. */
static char *zstd_response(const char *text, const char *encoding, size_t *len)
{
  size_t bound = ZSTD_compressBound(strlen(text));
  char *frame = malloc(bound);
  ck_assert_ptr_nonnull(frame);
  size_t n = ZSTD_compress(frame, bound, text, strlen(text), 3);
  ck_assert(!ZSTD_isError(n));
  char *out = malloc(n + 256);
  ck_assert_ptr_nonnull(out);
  int head = snprintf(out, 256, "HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\n"
                      "Content-Length: %zu\r\n\r\n", encoding, n);
  memcpy(out + head, frame, n);
  free(frame);
  *len = (size_t)head + n;
  return out;
}

/* A zstd body is decompressed within max_response; one over it, a damaged or cut one and an
 * unknown encoding are refused; accept_zstd asks for it on pcc_client_request only. */
START_TEST(zstd_bodies)
{
  const char *text = "{\"paths\":[\"/srv/app/a.py\",\"/srv/app/b.py\",\"/srv/app/c.py\"]}";
  size_t len = 0;
  char *response = zstd_response(text, "zstd", &len);
  char *body = NULL;
  CLIENT_RC(get_over(response, len, 0, &body), PCC_CLIENT_OK);
  ck_assert_str_eq(body, text);
  free(body);
  CLIENT_RC(get_over(response, len, strlen(text) - 1, &body), PCC_CLIENT_TOOBIG);
  response[len - 2] ^= 0x55; /* damaged */
  CLIENT_RC(get_over(response, len, 0, &body), PCC_CLIENT_PROTOCOL);
  free(response);
  response = zstd_response(text, "gzip", &len);
  CLIENT_RC(get_over(response, len, 0, &body), PCC_CLIENT_PROTOCOL);
  free(response);
  const char *not_zstd = "HTTP/1.1 200 OK\r\nContent-Encoding: zstd\r\nContent-Length: 2\r\n\r\nok";
  CLIENT_RC(get_over(not_zstd, strlen(not_zstd), 0, &body), PCC_CLIENT_PROTOCOL);

  /* the header goes with pcc_client_request of a client with accept_zstd, not without it; a
   * zstd body is decompressed whatever asked for it */
  response = zstd_response(text, "zstd", &len);
  for (int accept = 0; accept < 2; accept++) {
    fake_server *fs = fake_start_bytes(response, len, 2, 1);
    pcc_client *client =
        client_with(fs, (pcc_client_config){.timeout_ms = 5000, .accept_zstd = accept});
    size_t body_len = 0;
    CLIENT_RC(pcc_client_request(client, "GET", "/v1/bundle", NULL, 0, &body, &body_len, NULL),
              PCC_CLIENT_OK);
    ck_assert_str_eq(body, text);
    free(body);
    CLIENT_RC(pcc_client_get_json(client, "/v1/stats", &body, NULL), PCC_CLIENT_OK);
    free(body);
    pcc_client_close(client);
    fake_stop(fs);
    ck_assert_msg((strstr(last_request, "Accept-Encoding: zstd\r\n") != NULL) == accept, "%s",
                  last_request);
  }
  free(response);
}
END_TEST

/* response (a raw pyc answer of raw_response, NUL-terminated before its body's binary bytes
 * matter: only its head is read) with its body replaced by frame (frame_len bytes) and
 * Content-Encoding: zstd; *out_len gets its size. The caller frees the result. */
static char *with_zstd_body(const char *response, const void *frame, size_t frame_len,
                            size_t *out_len)
{
  const char *end = strstr(response, "\r\n\r\n");
  ck_assert_ptr_nonnull(end);
  char head[1024];
  size_t head_len = (size_t)(end - response);
  ck_assert_uint_lt(head_len, sizeof head);
  memcpy(head, response, head_len);
  head[head_len] = '\0';
  char *cl = strstr(head, "Content-Length: ");
  ck_assert_ptr_nonnull(cl);
  char *cl_end = strstr(cl, "\r\n");
  ck_assert_ptr_nonnull(cl_end);
  char *out = malloc(head_len + frame_len + 256);
  ck_assert_ptr_nonnull(out);
  int n = snprintf(out, head_len + 256,
                   "%.*sContent-Length: %zu\r\nContent-Encoding: zstd%s\r\n\r\n",
                   (int)(cl - head), head, frame_len, cl_end);
  ck_assert(n > 0);
  memcpy(out + n, frame, frame_len);
  *out_len = (size_t)n + frame_len;
  return out;
}

/* code_zstd: lookups ask for zstd (without it they do not); a zstd pyc decompresses to the pyc
 * whose checksum the headers state; a damaged frame is a protocol error; a few bytes that expand
 * past max_response (stated in the frame, or hidden behind a smaller stated size) are refused
 * without holding more than max_response. */
START_TEST(zstd_lookups)
{
  pcc_source *source = tmp_source("x = 1\n");
  char plain[1024];
  size_t plain_len = raw_response(plain, sizeof plain, source, false, false, 0);
  const char *pyc = strstr(plain, "\r\n\r\n") + 4;
  size_t pyc_len = plain_len - (size_t)(pyc - plain);
  uint8_t frame[256];
  size_t frame_len = ZSTD_compress(frame, sizeof frame, pyc, pyc_len, 1);
  ck_assert(!ZSTD_isError(frame_len));
  size_t len = 0;
  char *response = with_zstd_body(plain, frame, frame_len, &len);
  for (int ask = 0; ask < 2; ask++) {
    fake_server *fs = fake_start_bytes(response, len, 1, 1);
    pcc_client *client = client_with(fs, (pcc_client_config){.timeout_ms = 5000, .raw_pyc = true,
                                                             .code_zstd = ask});
    pcc_entry *entry = NULL;
    CLIENT_RC(pcc_client_lookup(client, &magic311, 0, source, true, &entry), PCC_CLIENT_OK);
    pcc_client_close(client);
    fake_stop(fs);
    ck_assert_msg((strstr(last_request, "Accept-Encoding: zstd\r\n") != NULL) == ask, "%s",
                  last_request);
    ck_assert_uint_eq(entry->view.pyc_len, pyc_len);
    ck_assert_mem_eq(entry->view.pyc, pyc, pyc_len);
    pcc_entry_free(entry);
  }
  free(response);

  /* damaged: one byte of the frame's block changed */
  frame[frame_len - 3] ^= 0x55;
  response = with_zstd_body(plain, frame, frame_len, &len);
  pcc_entry *entry = NULL;
  CLIENT_RC(raw_lookup(source, response, len, &entry), PCC_CLIENT_PROTOCOL);
  ck_assert_ptr_null(entry);
  free(response);

  /* bombs: 4 MiB of zeros in a frame of a few hundred bytes, against a 64 KiB limit */
  size_t big = 4 * 1024 * 1024;
  uint8_t *zeros = calloc(1, big);
  ck_assert_ptr_nonnull(zeros);
  size_t bound = ZSTD_compressBound(big);
  uint8_t *bomb = malloc(bound);
  ck_assert_ptr_nonnull(bomb);
  size_t bomb_len = ZSTD_compress(bomb, bound, zeros, big, 1);
  ck_assert(!ZSTD_isError(bomb_len) && bomb_len < 4096);
  for (int lie = 0; lie < 2; lie++) {
    if (lie) { /* the stated size says 1000 bytes (a 4-byte Frame_Content_Size field) */
      unsigned fhd = bomb[4];
      ck_assert_uint_eq(fhd >> 6, 2);
      size_t at = 5 + (((fhd >> 5) & 1) ? 0 : 1) + (size_t[]){0, 1, 2, 4}[fhd & 3];
      bomb[at] = 0xe8, bomb[at + 1] = 0x03, bomb[at + 2] = 0, bomb[at + 3] = 0;
    }
    response = with_zstd_body(plain, bomb, bomb_len, &len);
    fake_server *fs = fake_start_bytes(response, len, 1, 1);
    pcc_client *client = client_with(fs, (pcc_client_config){.timeout_ms = 5000, .raw_pyc = true,
                                                             .max_response = 65536});
    CLIENT_RC(pcc_client_lookup(client, &magic311, 0, source, true, &entry),
              lie ? PCC_CLIENT_PROTOCOL : PCC_CLIENT_TOOBIG);
    ck_assert_ptr_null(entry);
    pcc_client_close(client);
    fake_stop(fs);
    free(response);
  }
  free(bomb);
  free(zeros);
  pcc_source_free(source);
}
END_TEST

static bool libcurl_mapped(void)
{
  FILE *maps = fopen("/proc/self/maps", "r");
  ck_assert_ptr_nonnull(maps);
  char line[4096];
  bool found = false;
  while (!found && fgets(line, sizeof line, maps))
    found = strstr(line, "libcurl") != NULL;
  fclose(maps);
  return found;
}

/* http:// never loads libcurl (the hook's start-up cost, issue 12); https:// loads it then. */
START_TEST(libcurl_only_for_https)
{
  const char *response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  char *body = NULL;
  CLIENT_RC(get_over(response, strlen(response), 0, &body), PCC_CLIENT_OK);
  free(body);
  ck_assert(!libcurl_mapped());
  int port = 0;
  int fd = fake_listen(&port); /* bound, never listening: connections are refused */
  char url[64];
  snprintf(url, sizeof url, "https://127.0.0.1:%d", port);
  pcc_client_config config = {.base_url = url, .timeout_ms = 5000};
  pcc_client *client = NULL;
  CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_OK);
  ck_assert(libcurl_mapped());
  CLIENT_RC(pcc_client_get_json(client, "/healthz", &body, NULL), PCC_CLIENT_CONNECT);
  ck_assert_ptr_nonnull(pcc_client_last_error(client)->message);
  pcc_client_close(client);
  close(fd);
}
END_TEST

/* ---- tokens and access control ------------------------------------------------------------ */

#define TEST_TOKEN "ci-7b3f9a1e5c2d8f40"

static pcc_client *client_with_token(const fake_server *fs, const char *token, bool raw_pyc)
{
  return client_with(fs, (pcc_client_config){.timeout_ms = 5000, .token = token,
                                             .raw_pyc = raw_pyc});
}

START_TEST(token_check)
{
  char long_token[PCC_TOKEN_MAX + 2];
  memset(long_token, 'a', sizeof long_token - 1);
  long_token[PCC_TOKEN_MAX] = '\0';
  CLIENT_RC(pcc_token_check(long_token), PCC_CLIENT_OK); /* exactly at the limit */
  long_token[PCC_TOKEN_MAX] = 'a';
  long_token[PCC_TOKEN_MAX + 1] = '\0';
  CLIENT_RC(pcc_token_check(long_token), PCC_CLIENT_INVALID);
  CLIENT_RC(pcc_token_check("x"), PCC_CLIENT_OK);
  CLIENT_RC(pcc_token_check("!~{}:/+="), PCC_CLIENT_OK);
  const char *bad[] = {"", "has space", "tab\there", "new\nline", "caf\xc3\xa9", "del\x7f"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CLIENT_RC(pcc_token_check(bad[i]), PCC_CLIENT_INVALID);
    pcc_client_config config = {.token = bad[i]};
    pcc_client *client = NULL;
    CLIENT_RC(pcc_client_open(&config, &client), PCC_CLIENT_INVALID);
    ck_assert_ptr_null(client);
  }
  CLIENT_RC(pcc_token_check(NULL), PCC_CLIENT_INVALID);
}
END_TEST

/* Every kind of request carries the token; a client without one sends no Authorization. */
START_TEST(token_sent_on_every_request)
{
  pcc_source *source = tmp_source("x = 1\n");
  char *response = http_response(404, "Not Found",
                                 "{\"error\":\"miss\",\"message\":\"no\",\"reason\":\"absent\"}");
  const char *expect = "\r\nAuthorization: Bearer " TEST_TOKEN "\r\n";
  for (int op = 0; op < 5; op++) {
    fake_server *fs = fake_start(response, 1);
    pcc_client *client = client_with_token(fs, TEST_TOKEN, op == 4);
    pcc_entry *entry = NULL;
    char *body = NULL;
    int fd = -1;
    switch (op) {
    case 0:
      pcc_client_get_json(client, "/v1/stats", &body, NULL);
      break;
    case 1:
      pcc_client_lookup(client, &magic311, 0, source, true, &entry);
      break;
    case 2:
      pcc_client_compile(client, &magic311, 0, source, &entry);
      break;
    case 3:
      pcc_client_request(client, "DELETE", "/v1/admin/entry?magic=a70d0d0a", NULL, 0, &body,
                         NULL, NULL);
      break;
    case 4: /* raw_pyc's own header lists, and a download */
      fd = open("/dev/null", O_WRONLY);
      ck_assert_int_ge(fd, 0);
      pcc_client_download(client, "/v1/admin/backup", fd, NULL, NULL);
      close(fd);
      break;
    }
    ck_assert_ptr_null(entry);
    free(body);
    pcc_client_close(client);
    fake_stop(fs);
    ck_assert_msg(strstr(last_request, expect) != NULL, "op %d: %s", op, last_request);
  }
  /* a raw_pyc lookup too */
  fake_server *fs = fake_start(response, 1);
  pcc_client *client = client_with_token(fs, TEST_TOKEN, true);
  pcc_entry *entry = NULL;
  CLIENT_RC(pcc_client_lookup(client, &magic311, 0, source, true, &entry), PCC_CLIENT_MISS);
  pcc_client_close(client);
  fake_stop(fs);
  ck_assert_msg(strstr(last_request, expect) != NULL, "%s", last_request);
  ck_assert_ptr_nonnull(strstr(last_request, "Accept: application/x-python-pyc"));

  fs = fake_start(response, 1);
  client = client_with_token(fs, NULL, false);
  char *body = NULL;
  pcc_client_get_json(client, "/v1/stats", &body, NULL);
  pcc_client_close(client);
  fake_stop(fs);
  ck_assert_ptr_null(strcasestr(last_request, "Authorization"));
  free(response);
  pcc_source_free(source);
}
END_TEST

START_TEST(unauthorized_and_forbidden)
{
  pcc_source *source = tmp_source("x = 1\n");
  char *response = http_response(401, "Unauthorized",
                                 "{\"error\":\"unauthorized\",\"message\":\"unknown token\"}");
  fake_server *fs = fake_start(response, 1);
  pcc_client *client = client_with_token(fs, "wrong-token", false);
  pcc_entry *entry = NULL;
  CLIENT_RC(pcc_client_lookup(client, &magic311, 0, source, true, &entry), PCC_CLIENT_UNAUTHORIZED);
  const pcc_client_error *err = pcc_client_last_error(client);
  ck_assert_int_eq(err->http_status, 401);
  ck_assert_str_eq(err->error, "unauthorized");
  ck_assert_str_eq(err->message, "unknown token");
  ck_assert_ptr_null(err->role);
  pcc_client_close(client);
  fake_stop(fs);
  free(response);

  response = http_response(403, "Forbidden",
                           "{\"error\":\"forbidden\",\"message\":\"needs admin\",\"role\":\"admin\"}");
  fs = fake_start(response, 1);
  client = client_with_token(fs, TEST_TOKEN, false);
  char *body = NULL;
  long status = 0;
  CLIENT_RC(pcc_client_request(client, "GET", "/v1/admin/stats", NULL, 0, &body, NULL, &status),
            PCC_CLIENT_FORBIDDEN);
  ck_assert_ptr_null(body);
  ck_assert_int_eq(status, 403);
  err = pcc_client_last_error(client);
  ck_assert_int_eq(err->http_status, 403);
  ck_assert_str_eq(err->error, "forbidden");
  ck_assert_str_eq(err->role, "admin");
  ck_assert_ptr_nonnull(strstr(pcc_client_last_body(client, NULL), "\"role\""));
  pcc_client_close(client);
  fake_stop(fs);
  free(response);

  /* the status decides, whatever the body (a proxy's HTML page) */
  response = http_response(401, "Unauthorized", "<html>login</html>");
  fs = fake_start(response, 1);
  client = client_with_token(fs, NULL, false);
  CLIENT_RC(pcc_client_get_json(client, "/v1/stats", &body, NULL), PCC_CLIENT_UNAUTHORIZED);
  ck_assert_ptr_null(pcc_client_last_error(client)->error);
  ck_assert_ptr_nonnull(pcc_client_last_error(client)->message);
  pcc_client_close(client);
  fake_stop(fs);
  free(response);

  ck_assert_str_ne(pcc_client_strerror(PCC_CLIENT_UNAUTHORIZED), "unknown status");
  ck_assert_str_ne(pcc_client_strerror(PCC_CLIENT_FORBIDDEN), "unknown status");
  pcc_source_free(source);
}
END_TEST

START_TEST(token_load)
{
  char path[PATH_MAX];
  char *token = NULL;
  tmp_file(path, sizeof path, "good", "  \t" TEST_TOKEN "\r\n\n", strlen(TEST_TOKEN) + 6, 0);
  CLIENT_RC(pcc_token_load(path, &token), PCC_CLIENT_OK);
  ck_assert_str_eq(token, TEST_TOKEN);
  free(token);
  token = NULL;

  /* 4096 bytes, white space around a 512-byte token: at the limit */
  char big[PCC_TOKEN_FILE_MAX + 1];
  memset(big, '\n', sizeof big);
  memset(big + 100, 'k', PCC_TOKEN_MAX);
  tmp_file(path, sizeof path, "limit", big, PCC_TOKEN_FILE_MAX, 0);
  CLIENT_RC(pcc_token_load(path, &token), PCC_CLIENT_OK);
  ck_assert_uint_eq(strlen(token), PCC_TOKEN_MAX);
  free(token);
  token = NULL;
  tmp_file(path, sizeof path, "oversize", big, PCC_TOKEN_FILE_MAX + 1, 0);
  CLIENT_RC(pcc_token_load(path, &token), PCC_CLIENT_TOOBIG);
  memset(big + 100, 'k', PCC_TOKEN_MAX + 1); /* a token one byte too long */
  tmp_file(path, sizeof path, "longtoken", big, PCC_TOKEN_FILE_MAX, 0);
  CLIENT_RC(pcc_token_load(path, &token), PCC_CLIENT_INVALID);

  struct {
    const char *name, *data;
    size_t len;
  } invalid[] = {
      {"empty", "", 0},
      {"blank", " \n\t\n", 4},
      {"inner-space", "two words\n", 10},
      {"nul", "abc\0def\n", 8},
      {"utf8", "caf\xc3\xa9\n", 6},
  };
  for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
    tmp_file(path, sizeof path, invalid[i].name, invalid[i].data, invalid[i].len, 0);
    CLIENT_RC(pcc_token_load(path, &token), PCC_CLIENT_INVALID);
    ck_assert_ptr_null(token);
  }

  snprintf(path, sizeof path, "%s/missing", tmp_dir);
  CLIENT_RC(pcc_token_load(path, &token), PCC_CLIENT_IO);
  ck_assert_int_eq(errno, ENOENT);
  CLIENT_RC(pcc_token_load(tmp_dir, &token), PCC_CLIENT_IO); /* a directory */
  ck_assert_int_eq(errno, EISDIR);
  ck_assert_ptr_null(token);
}
END_TEST

START_TEST(token_from_env)
{
  char path[PATH_MAX], missing[PATH_MAX];
  tmp_file(path, sizeof path, "tok", "file-token\n", 11, 0);
  snprintf(missing, sizeof missing, "%s/missing", tmp_dir);
  char *token = (char *)"unchanged";
  unsetenv("PYCACHED_TOKEN");
  unsetenv("PYCACHED_TOKEN_FILE");
  CLIENT_RC(pcc_token_from_env(&token), PCC_CLIENT_OK);
  ck_assert_ptr_null(token);

  setenv("PYCACHED_TOKEN_FILE", path, 1);
  CLIENT_RC(pcc_token_from_env(&token), PCC_CLIENT_OK);
  ck_assert_str_eq(token, "file-token");
  free(token);

  setenv("PYCACHED_TOKEN", "", 1); /* empty: as if unset */
  CLIENT_RC(pcc_token_from_env(&token), PCC_CLIENT_OK);
  ck_assert_str_eq(token, "file-token");
  free(token);

  setenv("PYCACHED_TOKEN", "env-token", 1); /* the variable wins over the file */
  CLIENT_RC(pcc_token_from_env(&token), PCC_CLIENT_OK);
  ck_assert_str_eq(token, "env-token");
  free(token);
  token = NULL;

  setenv("PYCACHED_TOKEN", "env token", 1);
  CLIENT_RC(pcc_token_from_env(&token), PCC_CLIENT_INVALID);
  ck_assert_ptr_null(token);

  unsetenv("PYCACHED_TOKEN");
  setenv("PYCACHED_TOKEN_FILE", missing, 1);
  CLIENT_RC(pcc_token_from_env(&token), PCC_CLIENT_IO);
  ck_assert_ptr_null(token);
  unsetenv("PYCACHED_TOKEN_FILE");
}
END_TEST

/* ---- the generic request and the download ------------------------------------------------ */

START_TEST(request_delete_and_post)
{
  char *response = http_response(200, "OK", "{\"removed\":1}");
  fake_server *fs = fake_start(response, 1);
  pcc_client *client = client_for(fs, 5000, 0);
  char *body = NULL;
  size_t len = 0;
  long status = 0;
  CLIENT_RC(pcc_client_request(client, "DELETE", "/v1/admin/entry?magic=a70d0d0a&opt=0&path=%2Fm.py",
                               NULL, 0, &body, &len, &status),
            PCC_CLIENT_OK);
  ck_assert_str_eq(body, "{\"removed\":1}");
  ck_assert_uint_eq(len, 13);
  ck_assert_int_eq(status, 200);
  free(body);
  pcc_client_close(client);
  fake_stop(fs);
  ck_assert_msg(strncmp(last_request,
                        "DELETE /v1/admin/entry?magic=a70d0d0a&opt=0&path=%2Fm.py HTTP/1.1\r\n",
                        66) == 0, "%s", last_request);
  free(response);

  /* POST without a body, then with one, then a GET: one kept-alive connection, and neither the
   * method nor the body of one request leaks into the next */
  const char *ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   "Content-Length: 13\r\n\r\n{\"removed\":7}";
  fs = fake_start_n(ok, 1, 4);
  client = client_for(fs, 5000, 0);
  CLIENT_RC(pcc_client_request(client, "POST", "/v1/admin/purge", NULL, 0, &body, NULL, NULL),
            PCC_CLIENT_OK);
  ck_assert_str_eq(body, "{\"removed\":7}");
  free(body);
  CLIENT_RC(pcc_client_request(client, "POST", "/v1/x", "{\"a\":1}", 7, &body, NULL, NULL),
            PCC_CLIENT_OK);
  free(body);
  CLIENT_RC(pcc_client_request(client, "DELETE", "/v1/y", NULL, 0, &body, NULL, NULL),
            PCC_CLIENT_OK);
  free(body);
  CLIENT_RC(pcc_client_request(client, "GET", "/v1/z", NULL, 0, &body, NULL, NULL), PCC_CLIENT_OK);
  free(body);
  pcc_client_close(client);
  fake_stop(fs);
  ck_assert_int_eq(last_requests_served, 4);
  ck_assert_msg(strncmp(last_request, "POST /v1/admin/purge HTTP/1.1\r\n", 31) == 0, "%s",
                last_request);
  ck_assert_ptr_nonnull(strcasestr(last_request, "\r\nContent-Length: 0\r\n"));

  /* arguments the helper refuses before sending anything */
  fs = fake_start(NULL, 0);
  client = client_for(fs, 5000, 0);
  CLIENT_RC(pcc_client_request(client, "PUT", "/v1/x", NULL, 0, &body, NULL, NULL),
            PCC_CLIENT_INVALID);
  CLIENT_RC(pcc_client_request(client, "DELETE", "/v1/x", "{}", 2, &body, NULL, NULL),
            PCC_CLIENT_INVALID);
  CLIENT_RC(pcc_client_request(client, "GET", "v1/x", NULL, 0, &body, NULL, NULL),
            PCC_CLIENT_INVALID);
  CLIENT_RC(pcc_client_request(client, "GET", "/v1/x y", NULL, 0, &body, NULL, NULL),
            PCC_CLIENT_INVALID);
  CLIENT_RC(pcc_client_request(client, "GET", "/v1/x", NULL, 0, NULL, NULL, NULL),
            PCC_CLIENT_INVALID);
  pcc_client_close(client);
  fake_stop(fs);
}
END_TEST

START_TEST(request_post_body_and_errors)
{
  char *response = http_response(200, "OK", "{}");
  fake_server *fs = fake_start(response, 1);
  pcc_client *client = client_for(fs, 5000, 0);
  char *body = NULL;
  CLIENT_RC(pcc_client_request(client, "POST", "/v1/admin/x", "{\"k\":\"v\"}", 9, &body, NULL, NULL),
            PCC_CLIENT_OK);
  free(body);
  body = NULL;
  pcc_client_close(client);
  fake_stop(fs);
  free(response);
  ck_assert_msg(strncmp(last_request, "POST /v1/admin/x HTTP/1.1\r\n", 27) == 0, "%s", last_request);
  ck_assert_ptr_nonnull(strcasestr(last_request, "\r\nContent-Type: application/json\r\n"));
  ck_assert_ptr_nonnull(strcasestr(last_request, "\r\nContent-Length: 9\r\n"));
  ck_assert_ptr_null(strcasestr(last_request, "\r\nExpect:"));
  ck_assert_str_eq(last_request + last_request_len - 9, "{\"k\":\"v\"}");

  /* 404 and 409: PCC_CLIENT_HTTP with the server's error */
  response = http_response(404, "Not Found", "{\"error\":\"not-found\",\"message\":\"no entry\"}");
  fs = fake_start(response, 1);
  client = client_for(fs, 5000, 0);
  long status = 0;
  CLIENT_RC(pcc_client_request(client, "GET", "/v1/admin/entry?magic=a70d0d0a", NULL, 0, &body,
                               NULL, &status),
            PCC_CLIENT_HTTP);
  ck_assert_ptr_null(body);
  ck_assert_int_eq(status, 404);
  ck_assert_str_eq(pcc_client_last_error(client)->error, "not-found");
  pcc_client_close(client);
  fake_stop(fs);
  free(response);

  /* binary bodies come out whole; max_response bounds them */
  const char raw[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\na\0b\0c";
  fs = fake_start_bytes(raw, sizeof raw - 1, 1, 1);
  client = client_for(fs, 5000, 0);
  size_t len = 0;
  CLIENT_RC(pcc_client_request(client, "GET", "/bin", NULL, 0, &body, &len, NULL), PCC_CLIENT_OK);
  ck_assert_uint_eq(len, 5);
  ck_assert_mem_eq(body, "a\0b\0c", 6); /* and NUL-terminated */
  free(body);
  pcc_client_close(client);
  fake_stop(fs);
  fs = fake_start_bytes(raw, sizeof raw - 1, 1, 1);
  client = client_for(fs, 5000, 4);
  CLIENT_RC(pcc_client_request(client, "GET", "/bin", NULL, 0, &body, &len, NULL),
            PCC_CLIENT_TOOBIG);
  pcc_client_close(client);
  fake_stop(fs);
}
END_TEST

START_TEST(download_streams_to_fd)
{
  enum { N = 300000 }; /* over max_response, which a download ignores */
  size_t head_cap = 256;
  char *response = malloc(head_cap + N);
  ck_assert_ptr_nonnull(response);
  int head = snprintf(response, head_cap,
                      "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                      "Content-Length: %d\r\n\r\n", N);
  for (size_t i = 0; i < N; i++)
    response[head + i] = (char)(i * 7 % 251);
  /* one connection, two requests: the download, then a GET bounded by max_response again */
  fake_server *fs = fake_start_bytes(response, (size_t)head + N, 1, 2);
  pcc_client *client = client_for(fs, 5000, 1000);
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/backup.mdb", tmp_dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ck_assert_int_ge(fd, 0);
  uint64_t bytes = 0;
  long status = 0;
  CLIENT_RC(pcc_client_download(client, "/v1/admin/backup", fd, &bytes, &status), PCC_CLIENT_OK);
  ck_assert_uint_eq(bytes, N);
  ck_assert_int_eq(status, 200);
  ck_assert_int_eq(close(fd), 0);
  char *body = NULL;
  CLIENT_RC(pcc_client_get_json(client, "/v1/stats", &body, NULL), PCC_CLIENT_TOOBIG);
  pcc_client_close(client);
  fake_stop(fs);
  ck_assert_msg(strncmp(last_request, "GET /v1/admin/backup HTTP/1.1\r\n", 31) == 0, "%s",
                last_request);
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  char *back = malloc(N + 1);
  ck_assert_uint_eq(fread(back, 1, N + 1, f), N);
  fclose(f);
  ck_assert_mem_eq(back, response + head, N);
  free(back);
  free(response);

  /* an error goes to the last error, not into the file */
  response = http_response(403, "Forbidden",
                           "{\"error\":\"forbidden\",\"message\":\"no\",\"role\":\"admin\"}");
  fs = fake_start(response, 1);
  client = client_for(fs, 5000, 0);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CLIENT_RC(pcc_client_download(client, "/v1/admin/backup", fd, &bytes, NULL),
            PCC_CLIENT_FORBIDDEN);
  ck_assert_uint_eq(bytes, 0);
  ck_assert_str_eq(pcc_client_last_error(client)->role, "admin");
  close(fd);
  struct stat st;
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_int_eq(st.st_size, 0);
  pcc_client_close(client);
  fake_stop(fs);
  free(response);

  /* a failing write is PCC_CLIENT_IO with errno */
  response = http_response(200, "OK", "some bytes");
  fs = fake_start(response, 1);
  client = client_for(fs, 5000, 0);
  fd = open(path, O_RDONLY);
  CLIENT_RC(pcc_client_download(client, "/v1/admin/backup", fd, &bytes, NULL), PCC_CLIENT_IO);
  ck_assert_int_eq(errno, EBADF);
  close(fd);
  CLIENT_RC(pcc_client_download(client, "/v1/admin/backup", -1, &bytes, NULL), PCC_CLIENT_INVALID);
  pcc_client_close(client);
  fake_stop(fs);
  free(response);
}
END_TEST

static Suite *client_suite(void)
{
  Suite *s = suite_create("client");
  TCase *tc = tcase_create("source");
  tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
  tcase_add_test(tc, source_abc);
  tcase_add_test(tc, source_empty);
  tcase_add_test(tc, source_limits);
  suite_add_tcase(s, tc);

  tc = tcase_create("http");
  tcase_set_timeout(tc, 20);
  tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
  tcase_add_test(tc, connect_refused);
  tcase_add_test(tc, open_invalid);
  tcase_add_test(tc, open_tls_files);
  tcase_add_test(tc, timeout_silent_server);
  tcase_add_test(tc, lookup_hit);
  tcase_add_test(tc, lookup_no_hash);
  tcase_add_test(tc, lookup_corrupt);
  tcase_add_test(tc, garbage_reply);
  tcase_add_test(tc, lookup_miss);
  tcase_add_test(tc, compile_error);
  tcase_add_test(tc, compile_hit_empty_source);
  tcase_add_test(tc, other_errors);
  tcase_add_test(tc, retry_after);
  tcase_add_test(tc, response_too_big);
  tcase_add_test(tc, stats_default_magic);
  tcase_add_test(tc, keep_alive);
  tcase_add_test(tc, unix_keep_alive);
  tcase_add_test(tc, unix_invalid_and_refused);
  tcase_add_test(tc, lookup_raw_pyc);
  tcase_add_test(tc, replay_is_lookup);
  tcase_add_test(tc, http_framing);
  tcase_add_test(tc, http_reconnects_after_close);
  tcase_add_test(tc, replay_response_is_lookup);
  tcase_add_test(tc, libcurl_only_for_https);
  tcase_add_test(tc, zstd_bodies);
  tcase_add_test(tc, zstd_lookups);
  suite_add_tcase(s, tc);

  tc = tcase_create("access");
  tcase_set_timeout(tc, 20);
  tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
  tcase_add_test(tc, token_check);
  tcase_add_test(tc, token_sent_on_every_request);
  tcase_add_test(tc, unauthorized_and_forbidden);
  tcase_add_test(tc, token_load);
  tcase_add_test(tc, token_from_env);
  tcase_add_test(tc, request_delete_and_post);
  tcase_add_test(tc, request_post_body_and_errors);
  tcase_add_test(tc, download_streams_to_fd);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  return test_run_suite(client_suite());
}
