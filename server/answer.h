/* answer.h: what a handler of pycached answers, apart from HTTP: one tagged type for a served
 * entry, a JSON document, bytes (owned, static or shared with a release callback), a regular
 * file of known size, a body made piece by piece as the client takes it (a stream), a pending
 * answer (a compile in progress) or an error. Errors carry an API error code (pcc_error_code);
 * server/http.c alone maps codes to HTTP statuses. */
#ifndef PCC_ANSWER_H
#define PCC_ANSWER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

#include "proto.h"
#include "store.h"

/* The error codes of docs/API.md. */
typedef enum {
  PCC_ERR_BAD_PARAMETER = 0,
  PCC_ERR_NOT_FOUND,
  PCC_ERR_MISS,
  PCC_ERR_FORBIDDEN,
  PCC_ERR_MISMATCH,
  PCC_ERR_TOO_LARGE,
  PCC_ERR_COMPILE_ERROR,
  PCC_ERR_UNSUPPORTED_MAGIC,
  PCC_ERR_COMPILE_TIMEOUT,
  PCC_ERR_COMPILER_UNAVAILABLE,
  PCC_ERR_STORE_FULL,
  PCC_ERR_INTERNAL,
  PCC_ERR_BUSY,        /* a bounded queue is full: try again later (503 with Retry-After) */
  PCC_ERR_COUNT
} pcc_error_code;

/* The code as the API spells it ("bad-parameter", "miss", ...). Static storage. */
const char *pcc_error_name(pcc_error_code code);

typedef enum {
  PCC_ANSWER_NONE = 0, /* nothing yet: a handler that leaves it so is a bug (answered 500) */
  PCC_ANSWER_ENTRY,    /* a served pyc: blob, digest, compiler, outcome */
  PCC_ANSWER_JSON,     /* a JSON document */
  PCC_ANSWER_BYTES,    /* bytes with a content type */
  PCC_ANSWER_FILE,     /* a regular file of known size, from fd */
  PCC_ANSWER_STREAM,   /* made piece by piece by a producer: see STREAM below */
  PCC_ANSWER_PENDING,  /* finished later: see pending below */
  PCC_ANSWER_ERROR,    /* error, message, extra */
} pcc_answer_kind;

#define PCC_ANSWER_HEADERS_MAX 6
#define PCC_ANSWER_HEADER_LEN 96

typedef struct pcc_answer pcc_answer;
struct pcc_request; /* route.h */

struct pcc_answer {
  pcc_answer_kind kind;
  /* ERROR */
  pcc_error_code error;
  char message[512];
  cJSON *extra;            /* owned: more fields of the error body, or NULL */
  /* JSON */
  cJSON *json;             /* owned */
  /* BYTES: release(release_ctx) is called once the bytes are no longer needed; NULL release
   * means the bytes are static. The content type is static too. */
  const void *bytes;
  size_t bytes_len;
  const char *content_type;
  void (*release)(void *ctx);
  void *release_ctx;
  /* FILE: the first file_size bytes of the regular file fd, sent with a Content-Length; fd is
   * owned (closed once sent, or by pcc_answer_clear) */
  int fd;
  uint64_t file_size;
  /* STREAM: the body is made as the client takes it, so that the answer is never held whole:
   * produce(stream_ctx, buf, max) writes 1..max bytes into buf and returns how many, 0 at the
   * end, or -1 on an error (the response is then cut short, which an HTTP/1.1 client sees: the
   * chunked body never ends). It runs on an HTTP thread, one call at a time, after the handler
   * has returned. stream_free(stream_ctx) is called exactly once, when the answer has been sent
   * or is cleared unsent. The content type is static. */
  ssize_t (*produce)(void *stream_ctx, uint8_t *buf, size_t max);
  void (*stream_free)(void *stream_ctx);
  void *stream_ctx;
  /* ENTRY */
  pcc_blob *blob;          /* owned: the code */
  pcc_digest digest;       /* of the source the code was compiled from */
  const char *compiler;    /* points into blob */
  const char *outcome;     /* static: "hit", "stored", "compiled" or "joined" */
  bool hash_checked;
  /* PENDING: the handler has suspended the request (through pcc_request's suspend) and will
   * resume it; then finish(pending, ...) gives the final answer. When the request goes away
   * first, abandon(pending) is called instead. Exactly one of the two is called. */
  void *pending;
  void (*finish)(void *pending, struct pcc_request *req, pcc_answer *answer);
  void (*abandon)(void *pending);
  /* extra response headers (any kind but PENDING); names static, values copied */
  struct {
    const char *name;
    char value[PCC_ANSWER_HEADER_LEN];
  } headers[PCC_ANSWER_HEADERS_MAX];
  unsigned n_headers;
};

/* An empty answer (kind NONE). memset to 0 is the same. */
void pcc_answer_init(pcc_answer *answer);

/* Frees what an answer owns (releases shared bytes, closes a file, frees a stream) and empties it. A
 * PENDING answer is not touched: its owner must call finish or abandon. */
void pcc_answer_clear(pcc_answer *answer);

/* Sets an error with a printf-style message (replacing what the answer held); a message over
 * the buffer is cut at a character boundary, never inside a UTF-8 character. */
void pcc_answer_error(pcc_answer *answer, pcc_error_code code, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
/* Adds a string field to the error body (e.g. "param"). */
void pcc_answer_extra_string(pcc_answer *answer, const char *name, const char *value);
/* A parameter error: bad-parameter naming param, with message "param: what". */
void pcc_answer_bad_parameter(pcc_answer *answer, const char *param, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
/* A store failure: store-full (with "reason" map-full or disk-full, and what to do), else
 * internal. */
void pcc_answer_store_error(pcc_answer *answer, pcc_store_status rc);

/* A JSON answer; takes json (NULL, from a failed allocation, becomes an internal error). */
void pcc_answer_json(pcc_answer *answer, cJSON *json);
/* A bytes answer; see the BYTES fields for who owns what. */
void pcc_answer_bytes(pcc_answer *answer, const void *bytes, size_t len, const char *content_type,
                      void (*release)(void *ctx), void *release_ctx);
/* A FILE answer: takes fd (a regular file; closed by the answer) and sends its first size bytes. */
void pcc_answer_file(pcc_answer *answer, int fd, uint64_t size, const char *content_type);
/* A STREAM answer; takes ctx (see the STREAM fields: stream_free is always called once). */
void pcc_answer_stream(pcc_answer *answer, const char *content_type,
                       ssize_t (*produce)(void *ctx, uint8_t *buf, size_t max),
                       void (*stream_free)(void *ctx), void *ctx);
/* Adds a response header (at most PCC_ANSWER_HEADERS_MAX; value truncated to fit). */
void pcc_answer_header(pcc_answer *answer, const char *name, const char *value);
/* Adds Retry-After: seconds to an error answer, and "retry_after": seconds to its body (for a
 * busy error: when to try again). */
void pcc_answer_retry_after(pcc_answer *answer, unsigned seconds);

/* Takes ownership of blob: a code blob becomes an ENTRY answer with outcome, a compile-error blob
 * the compile-error error with its type, line and offset. hash_checked tells whether the request
 * gave the source hash. */
void pcc_answer_blob(pcc_answer *answer, pcc_blob *blob, const pcc_digest *digest,
                     bool hash_checked, const char *outcome);

/* The pyc of an ENTRY answer for params' mtime and size (16-byte header, then the code), built in
 * place in the answer's blob (the header in its PCC_BLOB_HEADROOM, the code its payload: no
 * copy), with view pointing into it, params and answer. The pyc and the view belong to the blob:
 * valid until the answer is cleared, or, once the caller has taken answer->blob, until it frees
 * that. Precondition: the blob is pcc_store_get_blob's or has its headroom. */
const uint8_t *pcc_answer_entry_view(const pcc_params *params, pcc_answer *answer,
                                     pcc_entry_view *view);

/* The JSON body of an error answer: {"error", "message", extra fields...}. Caller owns it. */
cJSON *pcc_answer_error_json(const pcc_answer *answer);

#endif
