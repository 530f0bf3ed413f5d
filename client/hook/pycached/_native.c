/* _native.c: the hot path of the pycached import hook (pycached._native), a CPython extension on
 * libpycached (client/pycached.h) and proto/. For one source it stats and (in hash mode) reads
 * the file, computes hash and digest, asks the server over a kept-alive connection, has the
 * source compiled on a miss (unless read-only), and returns the verified pyc bytes, or the reason
 * why not. Python (pycached/_hook.py) unmarshals the code and falls back to local compilation on
 * anything but a verified pyc. All I/O runs without the GIL. PYCACHED_URL may list several
 * servers (at most PCC_HOOK_URLS_MAX), asked in order: each has its own client and its own
 * circuit breaker, which stops asking a server that did not answer, refused the token, or
 * answered 5xx PYCACHED_BREAKER_5XX times in a row (with several servers, at the first 5xx); a
 * fetch whose server trips its breaker goes on to the next server, and a server whose breaker
 * has closed again is asked first again. The package's README section and docs/HOOK.md have
 * the settings.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "pycached.h"

/* The one API newer than the oldest interpreter built for (CPython 3.8, PyPy 3.9's cpyext). */
#if !defined(Py_NewRef) && (PY_VERSION_HEX < 0x030a0000 || defined(PYPY_VERSION))
static PyObject *pcc_py_new_ref(PyObject *object)
{
  Py_INCREF(object);
  return object;
}
#define Py_NewRef(object) pcc_py_new_ref((PyObject *)(object))
#endif

/* One server of PYCACHED_URL: its client and its breaker. */
typedef struct {
  pcc_client *client;
  pid_t pid;                    /* the process the client's connection belongs to */
  char url[PCC_CLIENT_URL_MAX]; /* with its NUL */
  double breaker_until;         /* monotonic seconds; no request before then */
  long failures_5xx;            /* 5xx answers in a row; any other answer resets it */
} hook_server;

/* The servers of this process, in the order they are asked, the settings, and the breakers.
 * Guarded by lock; never held together with the GIL (the lock is taken with the GIL
 * released). */
/* PYCACHED_ZSTD: whether lookups and compiles ask for zstd bodies. */
typedef enum {
  HOOK_ZSTD_OFF = 0,
  HOOK_ZSTD_ON,
  HOOK_ZSTD_AUTO, /* on unless the server is on this host (unix:, localhost, 127.0.0.0/8, ::1) */
} hook_zstd;

static const char *const zstd_modes[] = {[HOOK_ZSTD_OFF] = "off", [HOOK_ZSTD_ON] = "on",
                                         [HOOK_ZSTD_AUTO] = "auto"};

static struct {
  pthread_mutex_t lock;
  hook_server servers[PCC_HOOK_URLS_MAX];
  size_t n_servers;
  bool configured;
  char token[PCC_TOKEN_MAX + 1]; /* "" when none; wiped when replaced */
  pcc_magic magic;
  long timeout_ms;         /* lookups */
  long compile_timeout_ms; /* compiles */
  bool readonly;
  bool compile_forbidden; /* the token lacks the compile role: only look up from now on */
  bool hash_validation;
  bool bundle_zstd;        /* bundles asked for compressed with zstd */
  hook_zstd zstd;          /* lookups and compiles asked for compressed with zstd (PYCACHED_ZSTD) */
  char ca_file[PCC_PATH_MAX + 1];     /* TLS files of an https:// server; "" when not set */
  char client_cert[PCC_PATH_MAX + 1];
  char client_key[PCC_PATH_MAX + 1];
  double breaker_seconds;
  long breaker_5xx; /* 5xx answers in a row that open a lone server's breaker */
  size_t max_source;
} state = {.lock = PTHREAD_MUTEX_INITIALIZER};

static double now_seconds(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A forked child must not share its parent's connection nor inherit a held lock. */
static void after_fork_in_child(void)
{
  pthread_mutex_init(&state.lock, NULL);
  for (size_t i = 0; i < state.n_servers; i++) {
    state.servers[i].client = NULL; /* the parent's handles are leaked on purpose: their */
    state.servers[i].pid = 0;       /* sockets are the parent's */
  }
}

/* Whether a server URL is on this host: a unix socket, localhost, 127.0.0.0/8 or [::1]. There
 * zstd costs more time than its bytes save (docs/BENCHMARKS.md, "Bytes on the wire (issue 15)"). */
static bool url_is_local(const char *url)
{
  if (strncmp(url, "unix:", 5) == 0)
    return true;
  const char *host = strstr(url, "://");
  if (host == NULL)
    return false;
  host += 3;
  size_t len = host[0] == '[' ? strcspn(host, "]") + 1 : strcspn(host, ":/");
  return (len == 9 && strncasecmp(host, "localhost", 9) == 0) || strncmp(host, "127.", 4) == 0 ||
         (len == 5 && strncmp(host, "[::1]", 5) == 0);
}

/* Opens the client of server s when needed. Caller holds the lock. */
static pcc_client_status ensure_client(hook_server *s)
{
  if (s->client != NULL && s->pid == getpid())
    return PCC_CLIENT_OK;
  s->client = NULL;
  pcc_client_config config = {
    .base_url = s->url,
    .token = state.token[0] ? state.token : NULL,
    .connect_timeout_ms = state.timeout_ms,
    .timeout_ms = state.timeout_ms,
    .raw_pyc = true, /* the pyc as the body: no base64 or JSON on either side */
    .accept_zstd = state.bundle_zstd,
    .code_zstd = state.zstd == HOOK_ZSTD_ON ||
                 (state.zstd == HOOK_ZSTD_AUTO && !url_is_local(s->url)),
  };
  if (strncmp(s->url, "https://", 8) == 0) { /* libpycached refuses TLS files for the others */
    config.ca_file = state.ca_file[0] ? state.ca_file : NULL;
    config.client_cert = state.client_cert[0] ? state.client_cert : NULL;
    config.client_key = state.client_key[0] ? state.client_key : NULL;
  }
  pcc_client_status rc = pcc_client_open(&config, &s->client);
  if (rc == PCC_CLIENT_OK)
    s->pid = getpid();
  return rc;
}

/* The first server whose breaker is closed at now, from index from on; NULL when none. */
static hook_server *next_server(size_t *from, double now)
{
  for (; *from < state.n_servers; (*from)++)
    if (now >= state.servers[*from].breaker_until)
      return &state.servers[(*from)++];
  return NULL;
}

/* The reason a fallback is taken, as Python sees it (stats and debug lines). */
static const char *reason_of(pcc_client_status rc)
{
  switch (rc) {
  case PCC_CLIENT_OK: return "ok";
  case PCC_CLIENT_MISS: return "miss";
  case PCC_CLIENT_COMPILE_ERROR: return "compile-error";
  case PCC_CLIENT_UNSUPPORTED_MAGIC: return "unsupported-magic";
  case PCC_CLIENT_HTTP: return "http-error";
  case PCC_CLIENT_CONNECT: return "server-down";
  case PCC_CLIENT_TIMEOUT: return "timeout";
  case PCC_CLIENT_PROTOCOL: return "bad-response";
  case PCC_CLIENT_IO: return "source-unreadable";
  case PCC_CLIENT_TOOBIG: return "too-large";
  case PCC_CLIENT_NOMEM: return "no-memory";
  case PCC_CLIENT_INVALID: return "invalid";
  case PCC_CLIENT_UNAUTHORIZED: return "unauthorized";
  case PCC_CLIENT_FORBIDDEN: return "forbidden";
  }
  return "error";
}

typedef struct {
  const char *outcome; /* "hit", "compiled", "stored", "joined", or a fallback reason */
  uint8_t *pyc;        /* malloc'd, NULL on a fallback */
  size_t pyc_len;
  char detail[256];
} fetch_result;

/* Opens s's breaker for what rc (the final answer of one request) says of the server; returns
 * whether it did (the request may go on to the next server). Every 5xx status counts (a 507
 * too: a full store stays full for a while): the breaker opens at the breaker_5xx-th in a row,
 * or at the first when there is another server to ask, for breaker_seconds or the answer's
 * Retry-After when longer (libpycached bounds it). Any other HTTP answer resets the count, so a
 * lone server's single 500 or 507 is one request's fallback. */
static bool trip_breaker(hook_server *s, pcc_client_status rc)
{
  const pcc_client_error *err = s->client ? pcc_client_last_error(s->client) : NULL;
  long status = err ? err->http_status : 0;
  bool answered_5xx = rc == PCC_CLIENT_HTTP && status >= 500 && status <= 599;
  if (status > 0 && !answered_5xx)
    s->failures_5xx = 0; /* the server answered: it works */
  if (answered_5xx && (++s->failures_5xx >= state.breaker_5xx || state.n_servers > 1)) {
    double seconds = state.breaker_seconds;
    if (err->retry_after > 0 && (double)err->retry_after > seconds)
      seconds = (double)err->retry_after;
    s->breaker_until = now_seconds() + seconds;
    s->failures_5xx = 0; /* counted afresh once it closes */
  } else if (rc == PCC_CLIENT_CONNECT || rc == PCC_CLIENT_TIMEOUT) {
    s->breaker_until = now_seconds() + state.breaker_seconds;
  } else if (rc == PCC_CLIENT_UNSUPPORTED_MAGIC || rc == PCC_CLIENT_UNAUTHORIZED ||
             rc == PCC_CLIENT_FORBIDDEN) {
    s->breaker_until = 1e300; /* will not change within this process: never ask again */
  } else {
    return false;
  }
  return true;
}

/* Takes a verified entry's pyc. */
static void take_pyc(hook_server *s, fetch_result *result, pcc_entry *entry,
                     const char *outcome)
{
  s->failures_5xx = 0; /* the server served */
  result->pyc = malloc(entry->view.pyc_len ? entry->view.pyc_len : 1);
  if (result->pyc == NULL) {
    result->outcome = "no-memory";
  } else {
    memcpy(result->pyc, entry->view.pyc, entry->view.pyc_len);
    result->pyc_len = entry->view.pyc_len;
    result->outcome = outcome;
  }
  pcc_entry_free(entry);
}

/* A text that holds what a server sent (its messages can be any bytes, cut anywhere: here too,
 * by the detail buffers), as a str: never a UnicodeDecodeError, a bad byte becomes U+FFFD.
 * Returns a new reference, or NULL with an exception set (no memory). */
static PyObject *server_text(const char *text)
{
  return PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace");
}

/* Fills result with rc's reason and what the server said; returns whether s's breaker opened. */
static bool describe(hook_server *s, fetch_result *result, pcc_client_status rc)
{
  const pcc_client_error *err = s->client ? pcc_client_last_error(s->client) : NULL;
  snprintf(result->detail, sizeof result->detail, "%s%s%s", pcc_client_strerror(rc),
           err && err->message ? ": " : "", err && err->message ? err->message : "");
  result->outcome = reason_of(rc);
  return trip_breaker(s, rc);
}

/* The request path on server s, without the GIL. Caller holds the lock. Returns whether s's
 * breaker opened on the way (result is then that failure, and another server may be asked). */
static bool fetch_from(hook_server *s, const char *path, int opt, fetch_result *result)
{
  pcc_client_status rc = ensure_client(s);
  if (rc != PCC_CLIENT_OK)
    return describe(s, result, rc);
  pcc_source *source = NULL;
  rc = pcc_source_load(path, state.max_source, state.hash_validation, &source);
  if (rc != PCC_CLIENT_OK) {
    result->outcome = reason_of(rc);
    return false;
  }
  bool tripped = false;
  pcc_entry *entry = NULL;
  rc = pcc_client_lookup(s->client, &state.magic, opt, source, state.hash_validation, &entry);
  if (rc == PCC_CLIENT_OK) {
    take_pyc(s, result, entry, "hit");
  } else if (rc != PCC_CLIENT_MISS || state.readonly || state.compile_forbidden) {
    tripped = describe(s, result, rc);
  } else {
    rc = PCC_CLIENT_OK;
    if (!source->has_data) { /* timestamp mode read nothing so far: the upload needs the bytes */
      pcc_source_free(source);
      source = NULL;
      rc = pcc_source_load(path, state.max_source, true, &source);
    }
    if (rc == PCC_CLIENT_OK) {
      pcc_client_set_timeout(s->client, state.compile_timeout_ms);
      rc = pcc_client_compile(s->client, &state.magic, opt, source, &entry);
      pcc_client_set_timeout(s->client, state.timeout_ms);
    }
    if (rc == PCC_CLIENT_OK) {
      const char *outcome = pcc_client_last_outcome(s->client);
      take_pyc(s, result, entry,
               strcmp(outcome, "stored") == 0   ? "stored"
               : strcmp(outcome, "joined") == 0 ? "joined"
                                                : "compiled");
    } else if (rc == PCC_CLIENT_TIMEOUT) {
      /* a slow compile is not a dead server: fall back without opening the breaker (nor
       * counting it as an answer) */
      snprintf(result->detail, sizeof result->detail, "compile took over %ld ms",
               state.compile_timeout_ms);
      result->outcome = "compile-timeout";
    } else if (rc == PCC_CLIENT_FORBIDDEN) {
      /* a token with read but not compile: lookups still work, compiles never will */
      snprintf(result->detail, sizeof result->detail, "the token lacks the compile role");
      result->outcome = "forbidden";
      state.compile_forbidden = true;
      s->failures_5xx = 0;
    } else {
      tripped = describe(s, result, rc);
    }
  }
  pcc_source_free(source);
  return tripped;
}

/* The whole request path, without the GIL: the servers in order, skipping those whose breaker
 * is open, until one serves or falls back without opening its breaker. Caller holds the lock. */
static void fetch_locked(const char *path, int opt, fetch_result *result)
{
  if (!state.configured) {
    result->outcome = "disabled";
    return;
  }
  result->outcome = "breaker-open"; /* unless a server is asked */
  size_t from = 0;
  for (hook_server *s; (s = next_server(&from, now_seconds())) != NULL;) {
    free(result->pyc);
    *result = (fetch_result){.outcome = "error"};
    if (!fetch_from(s, path, opt, result))
      return;
  }
}

PyDoc_STRVAR(configure_doc,
"configure(url, magic, timeout_ms, compile_timeout_ms, readonly, hash_validation,\n"
"          breaker_seconds, max_source, token=None, bundle_zstd=False, zstd='auto', ca_file=None,\n"
"          client_cert=None, client_key=None, breaker_5xx=BREAKER_5XX_DEFAULT)\n"
"Sets the servers and behaviour of fetch(); resets the circuit breakers. url is one base URL\n"
"or several separated by commas (at most URLS_MAX), asked in that order. token (str or None)\n"
"is sent as 'Authorization: Bearer TOKEN'; ValueError unless printable ASCII without spaces,\n"
"1..512 bytes. bundle_zstd: fetch_bundle() asks for the bundle compressed with zstd. zstd\n"
"('on', 'off' or 'auto': on unless the server is on this host): fetch() asks for zstd bodies.\n"
"ca_file, client_cert, client_key (str or None): the TLS files of the https:// servers among\n"
"url (libcurl's CAINFO, SSLCERT, SSLKEY); the others are opened without them. breaker_5xx\n"
"(1..BREAKER_5XX_MAX): 5xx answers in a row that open a lone server's breaker.");

static PyObject *native_configure(PyObject *self, PyObject *args, PyObject *kwargs)
{
  (void)self;
  static char *keywords[] = {"url", "magic", "timeout_ms", "compile_timeout_ms", "readonly",
                             "hash_validation", "breaker_seconds", "max_source", "token",
                             "bundle_zstd", "zstd", "ca_file", "client_cert", "client_key",
                             "breaker_5xx", NULL};
  const char *url;
  Py_buffer magic;
  long timeout_ms, compile_timeout_ms;
  int readonly, hash_validation;
  double breaker_seconds;
  Py_ssize_t max_source;
  const char *token = NULL;
  int bundle_zstd = 0;
  const char *zstd = "auto";
  const char *ca_file = NULL, *client_cert = NULL, *client_key = NULL;
  long breaker_5xx = PCC_HOOK_BREAKER_5XX_DEFAULT;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sy*llppdn|zpszzzl", keywords, &url, &magic,
                                   &timeout_ms, &compile_timeout_ms, &readonly, &hash_validation,
                                   &breaker_seconds, &max_source, &token, &bundle_zstd, &zstd,
                                   &ca_file, &client_cert, &client_key, &breaker_5xx))
    return NULL;
  const char *urls[PCC_HOOK_URLS_MAX];
  size_t lens[PCC_HOOK_URLS_MAX], n_urls = 0;
  bool bad_urls = false;
  for (const char *p = url; !bad_urls; p++) {
    size_t len = strcspn(p, ",");
    bad_urls = len == 0 || len >= PCC_CLIENT_URL_MAX || n_urls == PCC_HOOK_URLS_MAX;
    if (!bad_urls) {
      urls[n_urls] = p;
      lens[n_urls++] = len;
    }
    p += len;
    if (*p == '\0')
      break;
  }
  size_t zstd_mode = 0;
  while (zstd_mode < sizeof zstd_modes / sizeof zstd_modes[0] &&
         strcmp(zstd, zstd_modes[zstd_mode]) != 0)
    zstd_mode++;
  bool bad = zstd_mode == sizeof zstd_modes / sizeof zstd_modes[0] ||
             magic.len != PCC_MAGIC_LEN || bad_urls || timeout_ms <= 0 ||
             compile_timeout_ms <= 0 || breaker_seconds < 0 || max_source <= 0 ||
             breaker_5xx < 1 || breaker_5xx > PCC_HOOK_BREAKER_5XX_MAX ||
             (token != NULL && pcc_token_check(token) != PCC_CLIENT_OK) ||
             (ca_file != NULL && strlen(ca_file) >= sizeof state.ca_file) ||
             (client_cert != NULL && strlen(client_cert) >= sizeof state.client_cert) ||
             (client_key != NULL && strlen(client_key) >= sizeof state.client_key);
  if (bad) {
    PyBuffer_Release(&magic);
    PyErr_SetString(PyExc_ValueError, "pycached: bad configuration value");
    return NULL;
  }
  Py_BEGIN_ALLOW_THREADS
  pthread_mutex_lock(&state.lock);
  for (size_t i = 0; i < state.n_servers; i++)
    pcc_client_close(state.servers[i].pid == getpid() ? state.servers[i].client : NULL);
  memset(state.servers, 0, sizeof state.servers); /* clients gone, breakers closed */
  for (size_t i = 0; i < n_urls; i++) {
    memcpy(state.servers[i].url, urls[i], lens[i]);
    state.servers[i].url[lens[i]] = '\0';
  }
  state.n_servers = n_urls;
  explicit_bzero(state.token, sizeof state.token);
  if (token != NULL)
    memcpy(state.token, token, strlen(token) + 1); /* checked: at most PCC_TOKEN_MAX bytes */
  state.compile_forbidden = false;
  memcpy(state.magic.bytes, magic.buf, PCC_MAGIC_LEN);
  state.timeout_ms = timeout_ms;
  state.compile_timeout_ms = compile_timeout_ms;
  state.readonly = readonly;
  state.hash_validation = hash_validation;
  state.bundle_zstd = bundle_zstd;
  state.zstd = (hook_zstd)zstd_mode;
  snprintf(state.ca_file, sizeof state.ca_file, "%s", ca_file ? ca_file : "");
  snprintf(state.client_cert, sizeof state.client_cert, "%s", client_cert ? client_cert : "");
  snprintf(state.client_key, sizeof state.client_key, "%s", client_key ? client_key : "");
  state.breaker_seconds = breaker_seconds;
  state.breaker_5xx = breaker_5xx;
  state.max_source = (size_t)max_source;
  state.configured = true;
  pthread_mutex_unlock(&state.lock);
  Py_END_ALLOW_THREADS
  PyBuffer_Release(&magic);
  Py_RETURN_NONE;
}

PyDoc_STRVAR(fetch_doc,
"fetch(path, opt) -> (outcome, pyc, detail)\n"
"Asks the server for the code of the source at `path` (absolute) at optimization level opt.\n"
"outcome is 'hit', 'compiled', 'stored' or 'joined' with pyc the verified pyc bytes (checksum,\n"
"magic, mtime and size checked), or a fallback reason with pyc None. detail says why, with\n"
"what the server said (any bytes it sent that are not UTF-8 become U+FFFD).");

static PyObject *native_fetch(PyObject *self, PyObject *args)
{
  (void)self;
  PyObject *path_obj;
  int opt;
  if (!PyArg_ParseTuple(args, "O&i", PyUnicode_FSConverter, &path_obj, &opt))
    return NULL;
  if (opt < 0 || opt > PCC_OPT_MAX) {
    Py_DECREF(path_obj);
    PyErr_SetString(PyExc_ValueError, "opt must be 0, 1 or 2");
    return NULL;
  }
  fetch_result result = {.outcome = "error"};
  const char *path = PyBytes_AS_STRING(path_obj);
  Py_BEGIN_ALLOW_THREADS
  pthread_mutex_lock(&state.lock);
  fetch_locked(path, opt, &result);
  pthread_mutex_unlock(&state.lock);
  Py_END_ALLOW_THREADS
  Py_DECREF(path_obj);
  PyObject *pyc = result.pyc ? PyBytes_FromStringAndSize((const char *)result.pyc,
                                                         (Py_ssize_t)result.pyc_len)
                             : Py_NewRef(Py_None);
  free(result.pyc);
  if (pyc == NULL)
    return NULL;
  return Py_BuildValue("(sNN)", result.outcome, pyc, server_text(result.detail));
}

PyDoc_STRVAR(java_hash_doc, "java_hash(data) -> int: Java Arrays.hashCode(byte[]) of data.");

static PyObject *native_java_hash(PyObject *self, PyObject *arg)
{
  (void)self;
  Py_buffer data;
  if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) != 0)
    return NULL;
  int32_t hash = pcc_java_hash(data.buf, (size_t)data.len);
  PyBuffer_Release(&data);
  return PyLong_FromLong(hash);
}

PyDoc_STRVAR(checksum_doc, "checksum(data) -> str: XXH3-64 of data as 16 hex digits.");

static PyObject *native_checksum(PyObject *self, PyObject *arg)
{
  (void)self;
  Py_buffer data;
  if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) != 0)
    return NULL;
  char hex[17];
  pcc_checksum_to_hex(pcc_checksum(data.buf, (size_t)data.len), hex);
  PyBuffer_Release(&data);
  return PyUnicode_FromString(hex);
}

PyDoc_STRVAR(digest_doc, "digest(data) -> str: SHA-256 of data as 64 hex digits.");

static PyObject *native_digest(PyObject *self, PyObject *arg)
{
  (void)self;
  Py_buffer data;
  if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) != 0)
    return NULL;
  pcc_digest digest;
  char hex[PCC_DIGEST_HEX_LEN + 1];
  pcc_digest_compute(data.buf, (size_t)data.len, &digest);
  pcc_digest_to_hex(&digest, hex);
  PyBuffer_Release(&data);
  return PyUnicode_FromString(hex);
}

/* ---- warm start: bundles and profiles ----------------------------------------------------- */

/* The URL of a warm-start request into url (url_len bytes): the endpoint and magic, and a
 * profile name (NULL: none) in which every byte may need %XX. False when it does not fit.
 * Caller holds the lock. */
static bool warm_url(const char *endpoint, const char *profile, int opt, char *url,
                     size_t url_len)
{
  char magic[2 * PCC_MAGIC_LEN + 1];
  pcc_dynbuf name;
  pcc_dynbuf_init(&name, 3 * PCC_PROFILE_NAME_MAX + 1);
  if (profile)
    pcc_dynbuf_add_escaped(&name, profile, strlen(profile));
  pcc_dynbuf_add(&name, "", 1);
  pcc_magic_to_hex(&state.magic, magic);
  int n = name.error == PCC_PROTO_OK
            ? snprintf(url, url_len, "%s?magic=%s&opt=%d%s%s", endpoint, magic, opt,
                       profile ? "&profile=" : "", (const char *)name.data)
            : -1;
  pcc_dynbuf_free(&name);
  return n >= 0 && (size_t)n < url_len;
}

/* GET or POST one warm-start request (profile NULL: none in the query) without the GIL, to the
 * servers in order as fetch does: the first whose breaker is closed, then, when that one's
 * breaker opens on the way, the next. The body (caller frees) on success. */
static pcc_client_status warm_request(const char *method, const char *endpoint,
                                      const char *profile, int opt, const char *body,
                                      size_t body_len, char **out, size_t *out_len,
                                      long *status, char *detail, size_t detail_len)
{
  char url[64 + 3 * PCC_PROFILE_NAME_MAX];
  pthread_mutex_lock(&state.lock);
  pcc_client_status rc = !state.configured                                    ? PCC_CLIENT_INVALID
                         : !warm_url(endpoint, profile, opt, url, sizeof url) ? PCC_CLIENT_INVALID
                                                                               : PCC_CLIENT_CONNECT;
  if (rc == PCC_CLIENT_CONNECT)
    snprintf(detail, detail_len, "breaker-open"); /* unless a server is asked */
  bool ask = rc == PCC_CLIENT_CONNECT;
  size_t from = 0;
  for (hook_server *s; ask && (s = next_server(&from, now_seconds())) != NULL;) {
    *status = 0;
    if ((rc = ensure_client(s)) == PCC_CLIENT_OK) {
      pcc_client_set_timeout(s->client, state.compile_timeout_ms); /* a bundle is big */
      rc = pcc_client_request(s->client, method, url, body, body_len, out, out_len, status);
      pcc_client_set_timeout(s->client, state.timeout_ms);
    }
    const pcc_client_error *err = s->client ? pcc_client_last_error(s->client) : NULL;
    if (rc != PCC_CLIENT_OK)
      snprintf(detail, detail_len, "%s%s%s", pcc_client_strerror(rc),
               err && err->message ? ": " : "", err && err->message ? err->message : "");
    /* a server whose breaker opens: the next one is asked (no profile yet, 404, opens none) */
    if (rc == PCC_CLIENT_OK || *status == 404)
      s->failures_5xx = 0;
    ask = rc != PCC_CLIENT_OK && *status != 404 && trip_breaker(s, rc);
  }
  pthread_mutex_unlock(&state.lock);
  return rc;
}

/* The bytes of a fetched bundle, exported through the buffer protocol so that each entry's pyc
 * is a memoryview slice of them rather than a copy (a bundle is megabytes). */
typedef struct {
  PyObject_HEAD
  char *data; /* malloc'd by libpycached; freed with the object */
  size_t len;
} bundle_bytes;

static void bundle_bytes_dealloc(PyObject *self)
{
  free(((bundle_bytes *)self)->data);
  Py_TYPE(self)->tp_free(self);
}

static int bundle_bytes_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
  bundle_bytes *bytes = (bundle_bytes *)self;
  return PyBuffer_FillInfo(view, self, bytes->data, (Py_ssize_t)bytes->len, 1, flags);
}

static PyBufferProcs bundle_bytes_buffer = {bundle_bytes_getbuffer, NULL};

static PyTypeObject bundle_bytes_type = {
  PyVarObject_HEAD_INIT(NULL, 0)
  .tp_name = "pycached._native.BundleBytes",
  .tp_basicsize = sizeof(bundle_bytes),
  .tp_dealloc = bundle_bytes_dealloc,
  .tp_as_buffer = &bundle_bytes_buffer,
  .tp_flags = Py_TPFLAGS_DEFAULT,
  .tp_doc = "The read-only bytes of a fetched bundle.",
};

typedef struct {
  PyObject *dict;
  PyObject *view; /* memoryview of the whole bundle */
  const char *base;
  bool failed;
} bundle_visit;

static void add_bundle_entry(const pcc_bundle_entry *entry, void *ctx)
{
  bundle_visit *visit = ctx;
  if (visit->failed)
    return;
  char digest[PCC_DIGEST_HEX_LEN + 1];
  pcc_digest_to_hex(&entry->digest, digest);
  Py_ssize_t start = (const char *)entry->pyc - visit->base;
  PyObject *path = PyUnicode_DecodeFSDefaultAndSize(entry->path, (Py_ssize_t)entry->path_len);
  PyObject *slice = PySequence_GetSlice(visit->view, start, start + (Py_ssize_t)entry->pyc_len);
  PyObject *value = slice ? Py_BuildValue("(LKisN)", (long long)entry->mtime,
                                          (unsigned long long)entry->size, (int)entry->hash,
                                          digest, slice)
                          : NULL;
  if (path == NULL || value == NULL || PyDict_SetItem(visit->dict, path, value) != 0)
    visit->failed = true;
  Py_XDECREF(path);
  Py_XDECREF(value);
}

PyDoc_STRVAR(fetch_bundle_doc,
"fetch_bundle(profile, opt) -> (entries, reason, skipped)\n"
"Asks the server for the bundle of an import profile. entries maps each source path to\n"
"(mtime, size, hash, digest, pyc) for every entry whose checksum and pyc header are right\n"
"(skipped counts the others; pyc is a read-only memoryview into the bundle), or is None\n"
"with reason saying why (the profile is unknown, the bundle is damaged or truncated, the\n"
"server is down).");

static PyObject *native_fetch_bundle(PyObject *self, PyObject *args)
{
  (void)self;
  const char *profile;
  int opt;
  if (!PyArg_ParseTuple(args, "si", &profile, &opt))
    return NULL;
  char *body = NULL, detail[256] = "";
  size_t len = 0;
  long status = 0;
  pcc_client_status rc;
  Py_BEGIN_ALLOW_THREADS
  rc = warm_request("GET", "/v1/bundle", profile, opt, NULL, 0, &body, &len, &status, detail,
                    sizeof detail);
  Py_END_ALLOW_THREADS
  if (rc != PCC_CLIENT_OK) {
    free(body);
    const char *reason = status == 404                          ? "no-profile"
                         : strcmp(detail, "breaker-open") == 0 ? "breaker-open"
                                                                : reason_of(rc);
    return Py_BuildValue("(OsN)", Py_None, reason, server_text(detail));
  }
  bundle_bytes *bytes = PyObject_New(bundle_bytes, &bundle_bytes_type);
  if (bytes == NULL) {
    free(body);
    return NULL;
  }
  bytes->data = body; /* owned by the object from here on */
  bytes->len = len;
  pcc_magic magic;
  int bundle_opt = -1;
  size_t skipped = 0;
  bundle_visit visit = {PyDict_New(), PyMemoryView_FromObject((PyObject *)bytes), body, false};
  Py_DECREF(bytes); /* the memoryview keeps it */
  pcc_proto_status prc = visit.dict && visit.view
                           ? pcc_bundle_parse((const uint8_t *)body, len, &magic, &bundle_opt,
                                              add_bundle_entry, &visit, &skipped)
                           : PCC_PROTO_NOMEM;
  Py_XDECREF(visit.view);
  if (visit.failed || prc == PCC_PROTO_NOMEM) {
    Py_XDECREF(visit.dict);
    return PyErr_Occurred() ? NULL : PyErr_NoMemory();
  }
  if (prc != PCC_PROTO_OK || !pcc_magic_equal(&magic, &state.magic) || bundle_opt != opt) {
    Py_XDECREF(visit.dict);
    return Py_BuildValue("(Osn)", Py_None, "bad-bundle", (Py_ssize_t)skipped);
  }
  return Py_BuildValue("(Nsn)", visit.dict, "ok", (Py_ssize_t)skipped);
}

PyDoc_STRVAR(post_profile_doc,
"post_profile(profile, opt, paths) -> outcome\n"
"Sends the source paths this process imported to the server's profile (merged over runs).");

static PyObject *native_post_profile(PyObject *self, PyObject *args)
{
  (void)self;
  const char *profile;
  int opt;
  PyObject *paths;
  if (!PyArg_ParseTuple(args, "siO!", &profile, &opt, &PyList_Type, &paths))
    return NULL;
  cJSON *doc = cJSON_CreateObject();
  cJSON *list = doc ? cJSON_AddArrayToObject(doc, "paths") : NULL;
  for (Py_ssize_t i = 0; list != NULL && i < PyList_GET_SIZE(paths); i++) {
    /* the file system's bytes, as fetch() sends them and fetch_bundle() decodes them, so a
     * path that is not UTF-8 (surrogate escapes) comes back as the same str */
    PyObject *path = PyUnicode_EncodeFSDefault(PyList_GET_ITEM(paths, i));
    if (path == NULL) {
      cJSON_Delete(doc);
      return NULL;
    }
    cJSON_AddItemToArray(list, cJSON_CreateString(PyBytes_AS_STRING(path)));
    Py_DECREF(path);
  }
  char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
  cJSON_Delete(doc);
  if (text == NULL)
    return PyErr_NoMemory();
  char *body = NULL, detail[256] = "";
  size_t len = 0;
  long status = 0;
  pcc_client_status rc;
  Py_BEGIN_ALLOW_THREADS
  rc = warm_request("POST", "/v1/profile", profile, opt, text, strlen(text), &body, &len,
                    &status, detail, sizeof detail);
  Py_END_ALLOW_THREADS
  free(text);
  free(body);
  return PyUnicode_FromString(reason_of(rc));
}

PyDoc_STRVAR(report_doc,
"report(opt, fallbacks) -> outcome\n"
"Tells the server how often this process fell back to local compilation, by reason.");

static PyObject *native_report(PyObject *self, PyObject *args)
{
  (void)self;
  int opt;
  PyObject *fallbacks, *key, *value;
  Py_ssize_t pos = 0;
  if (!PyArg_ParseTuple(args, "iO!", &opt, &PyDict_Type, &fallbacks))
    return NULL;
  cJSON *doc = cJSON_CreateObject();
  cJSON *counts = doc ? cJSON_AddObjectToObject(doc, "fallbacks") : NULL;
  while (counts != NULL && PyDict_Next(fallbacks, &pos, &key, &value)) {
    const char *reason = PyUnicode_AsUTF8(key);
    long long count = PyLong_AsLongLong(value);
    if (reason == NULL || (count == -1 && PyErr_Occurred())) {
      cJSON_Delete(doc);
      return NULL;
    }
    cJSON_AddNumberToObject(counts, reason, (double)count);
  }
  char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
  cJSON_Delete(doc);
  if (text == NULL)
    return PyErr_NoMemory();
  char *body = NULL, detail[256] = "";
  size_t len = 0;
  long status = 0;
  pcc_client_status rc;
  Py_BEGIN_ALLOW_THREADS
  rc = warm_request("POST", "/v1/report", NULL, opt, text, strlen(text), &body, &len, &status,
                    detail, sizeof detail);
  Py_END_ALLOW_THREADS
  free(text);
  free(body);
  return PyUnicode_FromString(reason_of(rc));
}

PyDoc_STRVAR(source_ids_doc,
"source_ids(path) -> (hash, digest)\n"
"Reads a source and returns its Java hash and SHA-256 digest (hex), as a lookup sends them.");

static PyObject *native_source_ids(PyObject *self, PyObject *arg)
{
  (void)self;
  PyObject *path_obj;
  if (!PyUnicode_FSConverter(arg, &path_obj))
    return NULL;
  pcc_source *source = NULL;
  pcc_client_status rc;
  Py_BEGIN_ALLOW_THREADS
  rc = pcc_source_load(PyBytes_AS_STRING(path_obj), state.max_source ? state.max_source : 0,
                       true, &source);
  Py_END_ALLOW_THREADS
  Py_DECREF(path_obj);
  if (rc != PCC_CLIENT_OK)
    return PyErr_Format(PyExc_OSError, "cannot read the source: %s", pcc_client_strerror(rc));
  char digest[PCC_DIGEST_HEX_LEN + 1];
  pcc_digest_to_hex(&source->digest, digest);
  PyObject *result = Py_BuildValue("(is)", (int)source->hash, digest);
  pcc_source_free(source);
  return result;
}

static PyMethodDef native_methods[] = {
  {"fetch_bundle", native_fetch_bundle, METH_VARARGS, fetch_bundle_doc},
  {"post_profile", native_post_profile, METH_VARARGS, post_profile_doc},
  {"source_ids", native_source_ids, METH_O, source_ids_doc},
  {"report", native_report, METH_VARARGS, report_doc},
  {"configure", (PyCFunction)(void (*)(void))native_configure, METH_VARARGS | METH_KEYWORDS,
   configure_doc},
  {"fetch", native_fetch, METH_VARARGS, fetch_doc},
  {"java_hash", native_java_hash, METH_O, java_hash_doc},
  {"checksum", native_checksum, METH_O, checksum_doc},
  {"digest", native_digest, METH_O, digest_doc},
  {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
  PyModuleDef_HEAD_INIT, "pycached._native",
  "The C part of the pycached import hook (see pycached/_hook.py).", -1, native_methods,
  NULL, NULL, NULL, NULL,
};

static void register_fork_handler(void)
{
  pthread_atfork(NULL, NULL, after_fork_in_child);
}

/* The limits of proto/pcc_limits.h that _hook.py applies itself, as module constants. */
static const struct {
  const char *name;
  long value;
} native_limits[] = {
  {"SOURCE_MAX_DEFAULT", (long)PCC_SOURCE_MAX_DEFAULT},
  {"TOKEN_MAX", PCC_TOKEN_MAX},
  {"TOKEN_FILE_MAX", PCC_TOKEN_FILE_MAX},
  {"PROFILE_NAME_MAX", PCC_PROFILE_NAME_MAX},
  {"URLS_MAX", PCC_HOOK_URLS_MAX},
  {"BREAKER_5XX_DEFAULT", PCC_HOOK_BREAKER_5XX_DEFAULT},
  {"BREAKER_5XX_MAX", PCC_HOOK_BREAKER_5XX_MAX},
  {"UNIX_PATH_MAX", PCC_UNIX_PATH_MAX},
};

PyMODINIT_FUNC PyInit__native(void)
{
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, register_fork_handler);
  if (PyType_Ready(&bundle_bytes_type) < 0)
    return NULL;
  PyObject *module = PyModule_Create(&native_module);
  for (size_t i = 0; module && i < sizeof native_limits / sizeof native_limits[0]; i++) {
    if (PyModule_AddIntConstant(module, native_limits[i].name, native_limits[i].value) < 0)
      Py_CLEAR(module);
  }
  return module;
}
