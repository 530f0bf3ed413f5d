/* answer.c: the answers of pycached's handlers (answer.h): building, clearing, error bodies and
 * the pyc of a served entry. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "answer.h"

static const char *const error_names[PCC_ERR_COUNT] = {
  [PCC_ERR_BAD_PARAMETER] = "bad-parameter",
  [PCC_ERR_NOT_FOUND] = "not-found",
  [PCC_ERR_MISS] = "miss",
  [PCC_ERR_FORBIDDEN] = "forbidden",
  [PCC_ERR_MISMATCH] = "mismatch",
  [PCC_ERR_TOO_LARGE] = "too-large",
  [PCC_ERR_COMPILE_ERROR] = "compile-error",
  [PCC_ERR_UNSUPPORTED_MAGIC] = "unsupported-magic",
  [PCC_ERR_COMPILE_TIMEOUT] = "compile-timeout",
  [PCC_ERR_COMPILER_UNAVAILABLE] = "compiler-unavailable",
  [PCC_ERR_STORE_FULL] = "store-full",
  [PCC_ERR_INTERNAL] = "internal",
  [PCC_ERR_BUSY] = "busy",
};

const char *pcc_error_name(pcc_error_code code)
{
  return code < PCC_ERR_COUNT ? error_names[code] : "internal";
}

void pcc_answer_init(pcc_answer *answer)
{
  memset(answer, 0, sizeof *answer);
}

void pcc_answer_clear(pcc_answer *answer)
{
  if (answer->kind == PCC_ANSWER_PENDING)
    return;
  cJSON_Delete(answer->extra);
  cJSON_Delete(answer->json);
  if (answer->release != NULL)
    answer->release(answer->release_ctx);
  if (answer->kind == PCC_ANSWER_FILE && answer->fd >= 0)
    close(answer->fd);
  if (answer->kind == PCC_ANSWER_STREAM && answer->stream_free != NULL)
    answer->stream_free(answer->stream_ctx);
  free(answer->blob);
  pcc_answer_init(answer);
}

static void set_error(pcc_answer *answer, pcc_error_code code, const char *fmt, va_list ap)
{
  pcc_answer_clear(answer);
  answer->kind = PCC_ANSWER_ERROR;
  answer->error = code;
  int n = vsnprintf(answer->message, sizeof answer->message, fmt, ap);
  if (n >= (int)sizeof answer->message)
    pcc_utf8_trim(answer->message);
}

void pcc_answer_error(pcc_answer *answer, pcc_error_code code, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  set_error(answer, code, fmt, ap);
  va_end(ap);
}

void pcc_answer_extra_string(pcc_answer *answer, const char *name, const char *value)
{
  if (answer->extra == NULL)
    answer->extra = cJSON_CreateObject();
  if (answer->extra != NULL)
    cJSON_AddStringToObject(answer->extra, name, value);
}

void pcc_answer_bad_parameter(pcc_answer *answer, const char *param, const char *fmt, ...)
{
  char what[400];
  va_list ap;
  va_start(ap, fmt);
  if (vsnprintf(what, sizeof what, fmt, ap) >= (int)sizeof what)
    pcc_utf8_trim(what);
  va_end(ap);
  pcc_answer_error(answer, PCC_ERR_BAD_PARAMETER, "%s: %s", param, what);
  pcc_answer_extra_string(answer, "param", param);
}

void pcc_answer_store_error(pcc_answer *answer, pcc_store_status rc)
{
  if (rc == PCC_STORE_FULL) {
    pcc_answer_error(answer, PCC_ERR_STORE_FULL, "the store's map (--map-size) is full: nothing "
                     "was stored; free space (pycachectl admin invalidate or purge, or a lower "
                     "--max-size) or raise --map-size");
    pcc_answer_extra_string(answer, "reason", "map-full");
  } else if (rc == PCC_STORE_NOSPACE) {
    pcc_answer_error(answer, PCC_ERR_STORE_FULL, "the file system holding the store is full: "
                     "nothing was stored; free disk space (the server goes on serving)");
    pcc_answer_extra_string(answer, "reason", "disk-full");
  } else {
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "store: %s", pcc_store_strerror(rc));
  }
}

void pcc_answer_json(pcc_answer *answer, cJSON *json)
{
  pcc_answer_clear(answer);
  if (json == NULL) {
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "out of memory");
    return;
  }
  answer->kind = PCC_ANSWER_JSON;
  answer->json = json;
}

/* Empties answer for a body of kind with a (static) content type. */
static void answer_body(pcc_answer *answer, pcc_answer_kind kind, const char *content_type)
{
  pcc_answer_clear(answer);
  answer->kind = kind;
  answer->content_type = content_type;
}

void pcc_answer_bytes(pcc_answer *answer, const void *bytes, size_t len, const char *content_type,
                      void (*release)(void *ctx), void *release_ctx)
{
  answer_body(answer, PCC_ANSWER_BYTES, content_type);
  answer->bytes = bytes;
  answer->bytes_len = len;
  answer->release = release;
  answer->release_ctx = release_ctx;
}

void pcc_answer_file(pcc_answer *answer, int fd, uint64_t size, const char *content_type)
{
  answer_body(answer, PCC_ANSWER_FILE, content_type);
  answer->fd = fd;
  answer->file_size = size;
}

void pcc_answer_stream(pcc_answer *answer, const char *content_type,
                       ssize_t (*produce)(void *ctx, uint8_t *buf, size_t max),
                       void (*stream_free)(void *ctx), void *ctx)
{
  answer_body(answer, PCC_ANSWER_STREAM, content_type);
  answer->produce = produce;
  answer->stream_free = stream_free;
  answer->stream_ctx = ctx;
}

void pcc_answer_retry_after(pcc_answer *answer, unsigned seconds)
{
  char text[16];
  snprintf(text, sizeof text, "%u", seconds);
  pcc_answer_header(answer, "Retry-After", text);
  if (answer->extra == NULL)
    answer->extra = cJSON_CreateObject();
  if (answer->extra != NULL)
    cJSON_AddNumberToObject(answer->extra, "retry_after", seconds);
}

void pcc_answer_header(pcc_answer *answer, const char *name, const char *value)
{
  if (answer->n_headers == PCC_ANSWER_HEADERS_MAX)
    return;
  answer->headers[answer->n_headers].name = name;
  if (snprintf(answer->headers[answer->n_headers].value, PCC_ANSWER_HEADER_LEN, "%s", value) >=
      PCC_ANSWER_HEADER_LEN)
    pcc_utf8_trim(answer->headers[answer->n_headers].value);
  answer->n_headers++;
}

/* A stored compile error becomes compile-error with type, message, line, offset. */
static void answer_compile_error(pcc_answer *answer, const pcc_blob *blob)
{
  cJSON *details = cJSON_ParseWithLength((const char *)blob->payload, blob->payload_len);
  const cJSON *message = cJSON_GetObjectItemCaseSensitive(details, "message");
  pcc_answer_error(answer, PCC_ERR_COMPILE_ERROR, "%s",
                   cJSON_IsString(message) ? message->valuestring : "compile error");
  answer->extra = cJSON_CreateObject();
  static const char *const fields[] = {"type", "line", "offset"};
  for (size_t i = 0; i < 3 && answer->extra != NULL && details != NULL; i++) {
    cJSON *item = cJSON_GetObjectItemCaseSensitive(details, fields[i]);
    if (item != NULL)
      cJSON_AddItemToObject(answer->extra, fields[i], cJSON_Duplicate(item, true));
  }
  cJSON_Delete(details);
}

void pcc_answer_blob(pcc_answer *answer, pcc_blob *blob, const pcc_digest *digest,
                     bool hash_checked, const char *outcome)
{
  if (blob->kind == PCC_BLOB_COMPILE_ERROR) {
    answer_compile_error(answer, blob);
    free(blob);
    return;
  }
  pcc_answer_clear(answer);
  answer->kind = PCC_ANSWER_ENTRY;
  answer->blob = blob;
  answer->digest = *digest;
  answer->compiler = blob->compiler;
  answer->outcome = outcome;
  answer->hash_checked = hash_checked;
}

const uint8_t *pcc_answer_entry_view(const pcc_params *params, pcc_answer *answer,
                                     pcc_entry_view *view)
{
  pcc_blob *blob = answer->blob;
  size_t pyc_len = PCC_PYC_HEADER_LEN + blob->payload_len;
  uint8_t *pyc = (uint8_t *)blob->payload - PCC_PYC_HEADER_LEN; /* the headroom: ours */
  pcc_pyc_header header;
  pcc_pyc_header_init(&header, &params->magic, params->mtime, params->size);
  pcc_pyc_header_write(&header, pyc);
  *view = (pcc_entry_view){
    .magic = params->magic,
    .opt = params->opt,
    .path = params->path,
    .mtime = params->mtime,
    .size = params->size,
    .hash = blob->hash,
    .hash_checked = answer->hash_checked,
    .digest = answer->digest,
    .pyc = pyc,
    .pyc_len = pyc_len,
    .checksum = pcc_checksum(pyc, pyc_len),
    .compiler = answer->compiler,
  };
  return pyc;
}

cJSON *pcc_answer_error_json(const pcc_answer *answer)
{
  cJSON *json = pcc_error_to_json(pcc_error_name(answer->error), answer->message);
  if (json != NULL && answer->extra != NULL)
    for (cJSON *item = answer->extra->child; item != NULL; item = item->next)
      cJSON_AddItemToObject(json, item->string, cJSON_Duplicate(item, true));
  return json;
}
