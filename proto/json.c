/* json.c: the JSON forms of served entries and errors (cJSON), and base64: encoded here with a
 * table (a pyc is no secret: libsodium's constant-time encoder took 0.4-0.5 ms for a 25 KB pyc,
 * the table 0.03 ms, docs/BENCHMARKS.md, "Hits against nginx"), decoded by libsodium. */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "proto_internal.h"

/* The length of the base64 text of len bytes, without the NUL. */
static size_t base64_len(size_t len)
{
  return (len + 2) / 3 * 4;
}

/* Writes the standard base64 (with padding) of data into out (base64_len(len) + 1 bytes, NUL
 * included). */
static void base64_write(const uint8_t *data, size_t len, char *out)
{
  static const char table[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i = 0;
  for (; len - i >= 3; i += 3, out += 4) {
    uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
    out[0] = table[v >> 18];
    out[1] = table[(v >> 12) & 63];
    out[2] = table[(v >> 6) & 63];
    out[3] = table[v & 63];
  }
  if (i < len) { /* one or two bytes left */
    uint32_t v = (uint32_t)data[i] << 16 | (len - i == 2 ? (uint32_t)data[i + 1] << 8 : 0);
    out[0] = table[v >> 18];
    out[1] = table[(v >> 12) & 63];
    out[2] = len - i == 2 ? table[(v >> 6) & 63] : '=';
    out[3] = '=';
    out += 4;
  }
  *out = '\0';
}

char *pcc_base64_encode(const uint8_t *data, size_t len)
{
  if (len > SIZE_MAX / 2)
    return NULL;
  char *out = malloc(base64_len(len) + 1);
  if (out != NULL)
    base64_write(data, len, out);
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

/* The JSON object of an entry with pyc_b64 as its "pyc", the last field. NULL without memory. */
static cJSON *entry_object(const pcc_entry_view *entry, const char *pyc_b64)
{
  char magic_hex[2 * PCC_MAGIC_LEN + 1], digest_hex[PCC_DIGEST_HEX_LEN + 1], checksum_hex[17];
  pcc_magic_to_hex(&entry->magic, magic_hex);
  pcc_digest_to_hex(&entry->digest, digest_hex);
  pcc_checksum_to_hex(entry->checksum, checksum_hex);
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
  if (!ok) {
    cJSON_Delete(obj);
    return NULL;
  }
  return obj;
}

cJSON *pcc_entry_to_json(const pcc_entry_view *entry)
{
  char *pyc_b64 = pcc_base64_encode(entry->pyc, entry->pyc_len);
  cJSON *obj = pyc_b64 != NULL ? entry_object(entry, pyc_b64) : NULL;
  free(pyc_b64);
  return obj;
}

char *pcc_entry_to_json_text(const pcc_entry_view *entry, size_t *len)
{
  if (entry->pyc_len > SIZE_MAX / 2)
    return NULL;
  cJSON *obj = entry_object(entry, ""); /* printed: {...,"pyc":""} */
  char *fields = obj != NULL ? cJSON_PrintUnformatted(obj) : NULL;
  cJSON_Delete(obj);
  static const char tail[] = "\"pyc\":\"\"}";
  size_t fields_len = fields != NULL ? strlen(fields) : 0;
  if (fields == NULL || fields_len < sizeof tail - 1 ||
      strcmp(fields + fields_len - (sizeof tail - 1), tail) != 0) {
    free(fields);
    return NULL;
  }
  size_t head = fields_len - 2, b64 = base64_len(entry->pyc_len); /* head ends "pyc":" */
  char *text = malloc(head + b64 + 3);
  if (text != NULL) {
    memcpy(text, fields, head);
    base64_write(entry->pyc, entry->pyc_len, text + head);
    memcpy(text + head + b64, "\"}", 3);
    *len = head + b64 + 2;
  }
  free(fields);
  return text;
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
