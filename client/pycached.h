/* pycached.h: libpycached, the C client of the pycached compile cache (its own HTTP/1.1
 * client for http:// servers; libcurl, loaded when needed, for https://).
 *
 * A pcc_client talks to one server over one reused HTTP connection (keep-alive) and speaks the
 * API of docs/API.md: look up the code of a source (GET /v1/code), have it compiled
 * (POST /v1/compile), read /healthz and /v1/stats, and make the admin API's requests
 * (pcc_client_request, pcc_client_download). Every hit is verified before it is handed out:
 * proto's pcc_entry_from_json checks the pyc checksum and header, and this library checks that
 * the entry answers the question asked (magic, opt, mtime, size, hash, digest).
 *
 * Access control: with a token in the configuration every request carries
 * `Authorization: Bearer TOKEN`; pcc_token_from_env finds the token the way every pycached
 * client does (PYCACHED_TOKEN, else the file named by PYCACHED_TOKEN_FILE).
 *
 * Threads: a pcc_client owns one connection and must be used by one thread at a time (distinct
 * clients may be used concurrently). The first https:// client loads libcurl.so.4 and calls
 * curl_global_init() once, thread-safely; callers need not call it themselves. No client loads
 * it for http://.
 */
#ifndef PYCACHED_H
#define PYCACHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

typedef enum {
  PCC_CLIENT_OK = 0,
  PCC_CLIENT_MISS,              /* 404 "miss": nothing valid stored for this source */
  PCC_CLIENT_COMPILE_ERROR,     /* 422 "compile-error": the source does not compile */
  PCC_CLIENT_UNSUPPORTED_MAGIC, /* 422 "unsupported-magic": no backend for the magic */
  PCC_CLIENT_HTTP,              /* any other HTTP error status */
  PCC_CLIENT_CONNECT,           /* cannot connect: refused, unreachable, unresolvable */
  PCC_CLIENT_TIMEOUT,           /* connect or total timeout expired */
  PCC_CLIENT_PROTOCOL,          /* malformed response, checksum/header/field mismatch */
  PCC_CLIENT_IO,                /* a local file cannot be read (errno is left set) */
  PCC_CLIENT_TOOBIG,            /* a response or a source file is over its hard limit */
  PCC_CLIENT_NOMEM,
  PCC_CLIENT_INVALID,           /* bad argument or configuration (e.g. malformed URL) */
  PCC_CLIENT_UNAUTHORIZED,      /* 401: no token, or one the server does not know */
  PCC_CLIENT_FORBIDDEN,         /* 403: refused; with access control, the token lacks a role
                                   (pcc_client_error.role names it) */
} pcc_client_status;

/* Returns a static, human-readable description of rc. */
const char *pcc_client_strerror(pcc_client_status rc);

#define PCC_CLIENT_DEFAULT_URL "http://127.0.0.1:8700"
#define PCC_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS 2000L
#define PCC_CLIENT_DEFAULT_TIMEOUT_MS 60000L
/* limits (proto/pcc_limits.h): the response and source limits, token sizes, the download limit */
#define PCC_CLIENT_DEFAULT_MAX_RESPONSE ((size_t)PCC_RESPONSE_MAX_DEFAULT)
#define PCC_SOURCE_DEFAULT_MAX ((size_t)PCC_SOURCE_MAX_DEFAULT)

/* Client configuration. A zero field selects the default above; base_url NULL selects
 * PCC_CLIENT_DEFAULT_URL. base_url is copied by pcc_client_open (at most 2048 bytes, http://,
 * https://, or unix:/PATH for a unix socket at the absolute PATH of at most PCC_UNIX_PATH_MAX
 * bytes; a trailing '/' is ignored). token, when not NULL, is copied too and must pass
 * pcc_token_check. */
typedef struct {
  const char *base_url;
  const char *token;       /* sent as "Authorization: Bearer TOKEN" on every request; NULL: none */
  long connect_timeout_ms; /* connection phase only */
  long timeout_ms;         /* whole request, compile included */
  size_t max_response;     /* hard limit on a response body; bigger is PCC_CLIENT_TOOBIG */
  bool raw_pyc;            /* lookups and compiles ask for application/x-python-pyc: the body is
                              the pyc itself, metadata in headers (no base64, no JSON to parse);
                              pcc_client_last_body is then the pyc bytes after a hit */
  bool accept_zstd;        /* pcc_client_request asks for zstd bodies (Accept-Encoding: zstd;
                              the server compresses bundles); any body that comes with
                              Content-Encoding: zstd is decompressed, within max_response,
                              before it is handed out */
  bool code_zstd;          /* lookups and compiles ask for zstd bodies too (Accept-Encoding:
                              zstd): the server compresses a pyc or JSON body of at least 1 KiB
                              when that saves 10 %; the checksum is verified over the
                              decompressed pyc. Pays on a slow link, costs on loopback
                              (docs/BENCHMARKS.md, "Bytes on the wire (issue 15)") */
  /* TLS, for an https:// base_url only (an http:// one with any of them set is
   * PCC_CLIENT_INVALID: no request would be protected by them). Paths of PEM files, each
   * copied and checked readable by pcc_client_open (PCC_CLIENT_IO otherwise); NULL: none. The
   * server's certificate and name are always verified: against ca_file when it is set, else
   * against the system's CAs (libcurl's default). */
  const char *ca_file;     /* CAs that sign the server's certificate (curl's --cacert) */
  const char *client_cert; /* mutual TLS: the client's certificate (it may hold the key too) */
  const char *client_key;  /* its private key, unencrypted; needs client_cert */
} pcc_client_config;

typedef struct pcc_client pcc_client;

/* Creates a client. config may be NULL (all defaults). Nothing is sent yet. On PCC_CLIENT_OK
 * *out is a client the caller owns and frees with pcc_client_close; otherwise *out is unchanged.
 * Returns PCC_CLIENT_INVALID for a negative timeout, an unusable base_url, an invalid token, TLS
 * files with an http:// base_url or a client_key without client_cert; PCC_CLIENT_IO (errno set)
 * for a TLS file that cannot be opened. */
pcc_client_status pcc_client_open(const pcc_client_config *config, pcc_client **out);
/* Closes the connection and frees the client (its copy of the token is wiped). NULL is fine. */
void pcc_client_close(pcc_client *client);

/* Changes the total timeout of the following requests (0: the default). */
pcc_client_status pcc_client_set_timeout(pcc_client *client, long timeout_ms);

/* What went wrong in the last call that did not return PCC_CLIENT_OK. Every pointer belongs to
 * the client and stays valid until the next call on it (or pcc_client_close); absent fields are
 * NULL (strings) or -1 (numbers). */
typedef struct {
  long http_status;    /* 0 when no HTTP response arrived */
  const char *error;   /* the server's "error" code, e.g. "miss", "compile-error" */
  const char *message; /* the server's "message", or a local description */
  const char *reason;  /* "miss": "absent" or "stale" */
  const char *param;   /* "bad-parameter"/"mismatch": the parameter named */
  const char *type;    /* "compile-error": the exception type, e.g. "SyntaxError" */
  int64_t line;        /* "compile-error": 1-based line, or -1 */
  int64_t offset;      /* "compile-error": 1-based column offset, or -1 */
  const char *role;    /* 403 "forbidden": the role the token lacks ("read", "compile", "admin") */
  int64_t retry_after; /* the response's Retry-After in seconds (delta-seconds only, at most
                          PCC_CLIENT_RETRY_AFTER_MAX), or -1 (absent, an HTTP-date, bad) */
} pcc_client_error;

/* Returns the client's last error (never NULL for a non-NULL client; after a successful call
 * every field is empty). Owned by the client; valid until the next call on it. */
const pcc_client_error *pcc_client_last_error(const pcc_client *client);

/* The raw body of the last HTTP response (NUL-terminated; *len_out, when not NULL, gets its
 * length without the NUL): the entry JSON after a hit, the error JSON after a server error.
 * Returns "" when there was none. Owned by the client; valid until the next call on it. */
const char *pcc_client_last_body(const pcc_client *client, size_t *len_out);

/* What the server did for the last successful lookup or compile (its X-Pycached-Outcome):
 * "hit", "stored" (already cached), "compiled", "joined" (another request compiled it), "shared"
 * (another replica compiled it: the server's --shared tier) or "upstream" (another pycached
 * compiled or had it: the server's --upstream tier), or ""
 * when it did not say. Owned by the client; valid until the next call on it. */
const char *pcc_client_last_outcome(const pcc_client *client);

/* ---- sources --------------------------------------------------------------------------------- */

/* A source file as read from disk, with what the API needs to name it. */
typedef struct {
  char *path;      /* absolute (pcc_source_read: symlinks resolved) */
  int64_t mtime;   /* st_mtim.tv_sec, i.e. int(os.stat(p).st_mtime) */
  uint64_t size;   /* == len */
  int32_t hash;    /* pcc_java_hash of the bytes */
  pcc_digest digest;
  uint8_t *data;   /* the bytes, exactly as on disk (never NULL, even when empty) */
  size_t len;
  bool has_data;   /* false after pcc_source_load(..., false): data NULL, no hash, no digest */
} pcc_source;

/* Resolves, stats and reads `file` (a regular file of at most max_bytes bytes; 0 selects
 * PCC_SOURCE_DEFAULT_MAX) and computes its hash and digest. When the file changes while being
 * read it is read again (a few times, then PCC_CLIENT_IO). On PCC_CLIENT_OK *out is owned by
 * the caller (pcc_source_free); otherwise it is unchanged. Returns PCC_CLIENT_IO (errno set)
 * when the file cannot be resolved, opened or read or is not a regular file, PCC_CLIENT_TOOBIG
 * when it is over max_bytes, PCC_CLIENT_INVALID when its path is over PCC_PATH_MAX or its mtime
 * is negative. */
pcc_client_status pcc_source_read(const char *file, size_t max_bytes, pcc_source **out);
/* Like pcc_source_read for an absolute path taken as it is (no realpath: the caller's name for
 * the file is the one the server records). With with_data false the file is only stat'ed (for
 * timestamp validation, where the source is not read on a hit): mtime and size are set, data is
 * NULL and has_data false. PCC_CLIENT_INVALID for a relative path. */
pcc_client_status pcc_source_load(const char *path, size_t max_bytes, bool with_data,
                                  pcc_source **out);

/* NULL is fine. */
void pcc_source_free(pcc_source *source);

/* ---- operations -------------------------------------------------------------------------- */

/* GET /v1/code for `source` compiled by `magic` at optimization level opt (0..2). With
 * send_hash the query carries hash and digest (hash validation, and the server may serve the
 * same bytes stored for another path); without it only magic, opt, path, mtime and size
 * (CPython's timestamp validation). On PCC_CLIENT_OK *out is a verified entry the caller owns
 * (pcc_entry_free): checksum and pyc header are correct and its magic, opt, mtime and size (and
 * hash and digest, when sent) equal the request's; otherwise *out is unchanged and
 * pcc_client_last_error describes the failure (PCC_CLIENT_MISS, PCC_CLIENT_COMPILE_ERROR, ...).
 * A response that is not such an entry is PCC_CLIENT_PROTOCOL. */
pcc_client_status pcc_client_lookup(pcc_client *client, const pcc_magic *magic, int opt,
                                    const pcc_source *source, bool send_hash, pcc_entry **out);

/* For tests and tests/fuzz/fuzz_hook_response.c: handles a response to the lookup of source
 * exactly as pcc_client_lookup handles the one it receives, without the network: status, the
 * header lines (each ending in "\r\n", as a transport hands them over; headers may be NULL) and the
 * body, within the client's max_response. Same results, ownership and errors as
 * pcc_client_lookup. */
pcc_client_status pcc_client_replay_lookup(pcc_client *client, const pcc_magic *magic, int opt,
                                           const pcc_source *source, bool send_hash, long status,
                                           const char *headers, size_t headers_len,
                                           const void *body, size_t body_len, pcc_entry **out);

/* For tests and tests/fuzz/fuzz_hook_response.c: reads len bytes (at most
 * PCC_CLIENT_REPLAY_MAX) as the whole HTTP response to the lookup of source, status line and
 * headers included, through the parser of the client's transport (http:// clients only: else
 * PCC_CLIENT_INVALID), then handles it as pcc_client_lookup does. Same results, ownership and
 * errors; the bytes' end is the server's close. */
pcc_client_status pcc_client_replay_response(pcc_client *client, const pcc_magic *magic, int opt,
                                             const pcc_source *source, bool send_hash,
                                             const void *bytes, size_t len, pcc_entry **out);

/* POST /v1/compile: uploads source->data (Content-Type application/octet-stream) with path,
 * mtime, size, hash and digest in the query; the server compiles and stores it (or finds it
 * stored). Same verification, ownership and errors as pcc_client_lookup (hash and digest are
 * always checked). */
pcc_client_status pcc_client_compile(pcc_client *client, const pcc_magic *magic, int opt,
                                     const pcc_source *source, pcc_entry **out);

/* GET base_url + path_and_query (which must start with '/', e.g. "/v1/stats"). On
 * PCC_CLIENT_OK (a 2xx response) *body_out is the NUL-terminated body, owned by the caller
 * (free()). *status_out (may be NULL) gets the HTTP status whenever a response arrived, also on
 * errors; *body_out is set only on PCC_CLIENT_OK. Non-2xx responses map like the other
 * operations (PCC_CLIENT_HTTP, ...), with the details in pcc_client_last_error. */
pcc_client_status pcc_client_get_json(pcc_client *client, const char *path_and_query,
                                      char **body_out, long *status_out);

/* The generic request of the admin API: method "GET", "POST" or "DELETE" to base_url +
 * path_and_query (which must start with '/' and hold no spaces or control characters; the
 * caller escapes the query). body (body_len bytes, Content-Type application/json) may be NULL
 * for none; a POST without one sends an empty body. On PCC_CLIENT_OK (a 2xx response)
 * *body_out is the body, NUL-terminated (the NUL is not counted in *len_out, which may be
 * NULL), owned by the caller (free()); it may hold any bytes, at most max_response of them
 * (else PCC_CLIENT_TOOBIG). *status_out (may be NULL) gets the HTTP status whenever a response
 * arrived. Errors map like the other operations: PCC_CLIENT_UNAUTHORIZED, PCC_CLIENT_FORBIDDEN,
 * PCC_CLIENT_HTTP (404 "not-found", 409 "mismatch", ...), with the details and the error body in
 * pcc_client_last_error and pcc_client_last_body. */
pcc_client_status pcc_client_request(pcc_client *client, const char *method,
                                     const char *path_and_query, const void *body,
                                     size_t body_len, char **body_out, size_t *len_out,
                                     long *status_out);

/* GET base_url + path_and_query, streaming a 2xx body into fd (e.g. the backup download) at
 * its current offset, up to PCC_DOWNLOAD_MAX bytes (1 TiB, the largest LMDB map the server
 * takes; past it PCC_CLIENT_TOOBIG) whatever max_response is. The client's total timeout still
 * applies: raise it (pcc_client_set_timeout) for big downloads. *bytes_out (may be NULL) gets
 * the bytes written, also on failure (a partial body may then be in fd: the caller writes to a
 * temporary file and discards it). A non-2xx body goes to the last error, never to fd. Returns
 * PCC_CLIENT_IO (errno set) when writing to fd fails; otherwise as pcc_client_request. fd stays
 * the caller's. */
pcc_client_status pcc_client_download(pcc_client *client, const char *path_and_query, int fd,
                                      uint64_t *bytes_out, long *status_out);

/* Reads /v1/stats and sets *out to the magic of the compiler marked "default": true (or of the
 * only compiler, when exactly one is listed). PCC_CLIENT_PROTOCOL when there is none or the
 * stats are malformed. */
pcc_client_status pcc_client_default_magic(pcc_client *client, pcc_magic *out);

/* ---- tokens ---------------------------------------------------------------------------- */

/* PCC_CLIENT_OK when token is usable as a bearer token: 1..PCC_TOKEN_MAX bytes of printable
 * ASCII without spaces (0x21..0x7e); PCC_CLIENT_INVALID otherwise (also for NULL). */
pcc_client_status pcc_token_check(const char *token);

/* Reads a token file: at most PCC_TOKEN_FILE_MAX bytes, surrounding white space trimmed, the
 * rest must pass pcc_token_check. On PCC_CLIENT_OK *out is the token, owned by the caller
 * (free()); otherwise *out is unchanged. Returns PCC_CLIENT_IO (errno set) when the file cannot
 * be opened or read or is not a regular file, PCC_CLIENT_TOOBIG when it is over the limit,
 * PCC_CLIENT_INVALID when it is empty (or white space only) or the token is not valid. */
pcc_client_status pcc_token_load(const char *file, char **out);

/* The token of the environment, in the documented order: PYCACHED_TOKEN when set and not
 * empty (it must pass pcc_token_check, else PCC_CLIENT_INVALID), else the file named by
 * PYCACHED_TOKEN_FILE when set and not empty (pcc_token_load and its errors), else none:
 * PCC_CLIENT_OK with *out NULL. On PCC_CLIENT_OK *out is owned by the caller (free()). */
pcc_client_status pcc_token_from_env(char **out);

#endif /* PYCACHED_H */
