/* json.c: the JSON forms of served entries and errors (cJSON), and base64 (libsodium). */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "proto_internal.h"

char *pcc_base64_encode(const uint8_t *data, size_t len)
{
  if (len > SIZE_MAX / 2)
    return NULL;
  size_t out_len = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
  char *out = malloc(out_len);
  if (out == NULL)
    return NULL;
  sodium_bin2base64(out, out_len, data, len, sodium_base64_VARIANT_ORIGINAL);
  return out;
}

pcc_proto_status pcc_base64_decode(const char *text, size_t text_len, uint8_t **out,
                                   size_t *out_len)
{
  size_t capacity = text_len / 4 * 3 + 3;
  uint8_t *bytes = malloc(capacity ? capacity : 1);
  if (bytes == NULL)
    return PCC_PROTO_NOMEM;
  const char *end = NULL;
  size_t len = 0;
  if (sodium_base642bin(bytes, capacity, text, text_len, NULL, &len, &end,
                        sodium_base64_VARIANT_ORIGINAL) != 0 ||
      end != text + text_len) {
    free(bytes);
    return PCC_PROTO_INVALID;
  }
  *out = bytes;
  *out_len = len;
  return PCC_PROTO_OK;
}

cJSON *pcc_error_to_json(const char *code, const char *message)
{
  cJSON *obj = cJSON_CreateObject();
  if (obj == NULL || cJSON_AddStringToObject(obj, "error", code) == NULL ||
      cJSON_AddStringToObject(obj, "message", message) == NULL) {
    cJSON_Delete(obj);
    return NULL;
  }
  return obj;
}

cJSON *pcc_entry_to_json(const pcc_entry_view *entry)
{
  char magic_hex[2 * PCC_MAGIC_LEN + 1], digest_hex[PCC_DIGEST_HEX_LEN + 1], checksum_hex[17];
  pcc_magic_to_hex(&entry->magic, magic_hex);
  pcc_digest_to_hex(&entry->digest, digest_hex);
  pcc_checksum_to_hex(entry->checksum, checksum_hex);
  char *pyc_b64 = pcc_base64_encode(entry->pyc, entry->pyc_len);
  cJSON *obj = cJSON_CreateObject();
  bool ok = pyc_b64 != NULL && obj != NULL &&
            cJSON_AddStringToObject(obj, "magic", magic_hex) &&
            cJSON_AddNumberToObject(obj, "opt", entry->opt) &&
            cJSON_AddStringToObject(obj, "path", entry->path) &&
            cJSON_AddNumberToObject(obj, "mtime", (double)entry->mtime) &&
            cJSON_AddNumberToObject(obj, "size", (double)entry->size) &&
            cJSON_AddNumberToObject(obj, "hash", entry->hash) &&
            cJSON_AddStringToObject(obj, "validation",
                                    entry->hash_checked ? "hash" : "timestamp") &&
            cJSON_AddStringToObject(obj, "digest", digest_hex) &&
            cJSON_AddStringToObject(obj, "checksum", checksum_hex) &&
            cJSON_AddStringToObject(obj, "compiler", entry->compiler ? entry->compiler : "") &&
            cJSON_AddStringToObject(obj, "pyc", pyc_b64);
  free(pyc_b64);
  if (!ok) {
    cJSON_Delete(obj);
    return NULL;
  }
  return obj;
}

void pcc_entry_free(pcc_entry *entry)
{
  if (entry == NULL)
    return;
  free(entry->path_owned);
  free(entry->compiler_owned);
  free(entry->pyc_owned);
  free(entry);
}

/* Reads a JSON number that must be a whole number in [min, max]. */
static bool json_whole(const cJSON *obj, const char *name, int64_t min, int64_t max,
                       int64_t *out)
{
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
  int64_t value;
  if (!cJSON_IsNumber(item) || !pcc_double_to_i64(item->valuedouble, &value) || value < min ||
      value > max)
    return false;
  *out = value;
  return true;
}

static const char *json_string(const cJSON *obj, const char *name)
{
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
  return cJSON_IsString(item) ? item->valuestring : NULL;
}

static pcc_proto_status entry_fill(const cJSON *obj, pcc_entry *entry)
{
  pcc_entry_view *view = &entry->view;
  int64_t opt, mtime, size, hash;
  const char *path = json_string(obj, "path"), *compiler = json_string(obj, "compiler");
  const char *pyc = json_string(obj, "pyc"), *validation = json_string(obj, "validation");
  if (!json_whole(obj, "opt", 0, PCC_OPT_MAX, &opt) ||
      !json_whole(obj, "mtime", 0, PCC_JSON_INT_MAX, &mtime) ||
      !json_whole(obj, "size", 0, PCC_JSON_INT_MAX, &size) ||
      !json_whole(obj, "hash", INT32_MIN, INT32_MAX, &hash) || path == NULL || pyc == NULL ||
      pcc_magic_from_hex(json_string(obj, "magic"), &view->magic) != PCC_PROTO_OK ||
      pcc_digest_from_hex(json_string(obj, "digest"), &view->digest) != PCC_PROTO_OK ||
      pcc_checksum_from_hex(json_string(obj, "checksum"), &view->checksum) != PCC_PROTO_OK)
    return PCC_PROTO_INVALID;
  view->opt = (int)opt;
  view->mtime = mtime;
  view->size = (uint64_t)size;
  view->hash = (int32_t)hash;
  view->hash_checked = validation != NULL && strcmp(validation, "hash") == 0;

  entry->path_owned = strdup(path);
  entry->compiler_owned = strdup(compiler ? compiler : "");
  if (entry->path_owned == NULL || entry->compiler_owned == NULL)
    return PCC_PROTO_NOMEM;
  view->path = entry->path_owned;
  view->compiler = entry->compiler_owned;

  pcc_proto_status rc = pcc_base64_decode(pyc, strlen(pyc), &entry->pyc_owned, &view->pyc_len);
  if (rc != PCC_PROTO_OK)
    return rc;
  view->pyc = entry->pyc_owned;
  if (pcc_checksum(view->pyc, view->pyc_len) != view->checksum)
    return PCC_PROTO_CHECKSUM;

  pcc_pyc_header header, expected;
  rc = pcc_pyc_header_parse(view->pyc, view->pyc_len, &header);
  if (rc != PCC_PROTO_OK)
    return rc;
  pcc_pyc_header_init(&expected, &view->magic, view->mtime, view->size);
  if (!pcc_magic_equal(&header.magic, &expected.magic) || header.mtime != expected.mtime ||
      header.size != expected.size)
    return PCC_PROTO_HEADER;
  return PCC_PROTO_OK;
}

pcc_proto_status pcc_entry_from_json(const char *text, size_t len, pcc_entry **out)
{
  cJSON *obj = cJSON_ParseWithLength(text, len);
  if (!cJSON_IsObject(obj)) {
    cJSON_Delete(obj);
    return PCC_PROTO_INVALID;
  }
  pcc_entry *entry = calloc(1, sizeof *entry);
  pcc_proto_status rc = entry ? entry_fill(obj, entry) : PCC_PROTO_NOMEM;
  cJSON_Delete(obj);
  if (rc != PCC_PROTO_OK) {
    pcc_entry_free(entry);
    return rc;
  }
  *out = entry;
  return PCC_PROTO_OK;
}

void pcc_utf8_trim(char *text)
{
  size_t len = strlen(text), start = len;
  while (start > 0 && ((unsigned char)text[start - 1] & 0xc0) == 0x80 && len - start < 3)
    start--;
  if (start == 0)
    return;
  unsigned char lead = (unsigned char)text[start - 1];
  size_t want = lead < 0x80 ? 1 : (lead & 0xe0) == 0xc0 ? 2 : (lead & 0xf0) == 0xe0 ? 3
                                 : (lead & 0xf8) == 0xf0 ? 4 : 1;
  if (len - (start - 1) < want)
    text[start - 1] = '\0';
}
