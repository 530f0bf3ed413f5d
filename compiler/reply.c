/* reply.c: decoding what a compiler worker sends (reply.h): the frame prefix, the hello and the
 * answer to a compile. Every byte a worker sends passes through here; the worker is not trusted
 * (a hostile source may have subverted it), so each field is checked before it is used. */
#include "reply.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

pcc_compiler_status pcc_reply_prefix(const uint8_t prefix[PCC_FRAME_PREFIX_LEN], size_t max,
                                     uint8_t *type, size_t *payload_len)
{
  uint32_t total = (uint32_t)prefix[0] | (uint32_t)prefix[1] << 8 | (uint32_t)prefix[2] << 16 |
                   (uint32_t)prefix[3] << 24;
  if (total == 0 || total > max)
    return PCC_COMPILER_PROTOCOL;
  *type = prefix[4];
  *payload_len = total - 1;
  return PCC_COMPILER_OK;
}

/* Copies a hello string field into out when it is 1..PCC_WORKER_NAME_PART_MAX printable, unspaced
 * ASCII characters. */
static bool hello_field(const cJSON *json, const char *key, char *out, size_t size)
{
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(json, key);
  size_t len;
  if (!cJSON_IsString(item) || !item->valuestring)
    return false;
  len = strlen(item->valuestring);
  if (len == 0 || len > PCC_WORKER_NAME_PART_MAX || len >= size)
    return false;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)item->valuestring[i];
    if (ch <= 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
      return false;
  }
  memcpy(out, item->valuestring, len + 1);
  return true;
}

pcc_compiler_status pcc_reply_hello(uint8_t type, const uint8_t *payload, size_t len,
                                    pcc_magic *magic, char *name, size_t name_size)
{
  char impl[PCC_WORKER_NAME_PART_MAX + 1], version[PCC_WORKER_NAME_PART_MAX + 1];
  cJSON *json = type == PCC_FRAME_HELLO ? cJSON_ParseWithLength((const char *)payload, len)
                                        : NULL;
  const cJSON *magic_item = cJSON_GetObjectItemCaseSensitive(json, "magic");
  bool ok = cJSON_IsObject(json) && cJSON_IsString(magic_item) &&
            pcc_magic_from_hex(magic_item->valuestring, magic) == PCC_PROTO_OK &&
            hello_field(json, "implementation", impl, sizeof impl) &&
            hello_field(json, "version", version, sizeof version);
  cJSON_Delete(json);
  if (!ok)
    return PCC_COMPILER_SPAWN;
  int n = snprintf(name, name_size, "%s-%s", impl, version);
  return n > 0 && (size_t)n < name_size ? PCC_COMPILER_OK : PCC_COMPILER_SPAWN;
}

void pcc_compile_result_free(pcc_compile_result *result)
{
  if (!result)
    return;
  free(result->marshal);
  free(result->error_type);
  free(result->error_message);
  free(result);
}

/* A line or offset of an error frame: a whole number in 0..INT_MAX, else left 0 (unknown). */
static void error_position(const cJSON *item, int *out)
{
  int64_t value;
  if (item && pcc_double_to_i64(item->valuedouble, &value) && value >= 0 && value <= INT_MAX)
    *out = (int)value;
}

/* Parses an 'E' payload into result. */
static pcc_compiler_status parse_error(const uint8_t *payload, size_t len,
                                       pcc_compile_result *result)
{
  cJSON *json = cJSON_ParseWithLength((const char *)payload, len);
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(json, "type");
  const cJSON *message = cJSON_GetObjectItemCaseSensitive(json, "message");
  const cJSON *line = cJSON_GetObjectItemCaseSensitive(json, "line");
  const cJSON *offset = cJSON_GetObjectItemCaseSensitive(json, "offset");
  const cJSON *transient = cJSON_GetObjectItemCaseSensitive(json, "transient");
  pcc_compiler_status rc = PCC_COMPILER_OK;

  if (!cJSON_IsObject(json) || !cJSON_IsString(type) || !type->valuestring ||
      !type->valuestring[0] || !cJSON_IsString(message) || !message->valuestring ||
      (line && !cJSON_IsNumber(line)) || (offset && !cJSON_IsNumber(offset)) ||
      (transient && !cJSON_IsBool(transient))) {
    rc = PCC_COMPILER_PROTOCOL;
  } else {
    result->transient = cJSON_IsTrue(transient);
    result->error_type = strdup(type->valuestring);
    result->error_message = strdup(message->valuestring);
    if (!result->error_type || !result->error_message)
      rc = PCC_COMPILER_NOMEM;
    error_position(line, &result->error_line);
    error_position(offset, &result->error_offset);
  }
  cJSON_Delete(json);
  return rc;
}

pcc_compiler_status pcc_reply_answer(uint8_t type, uint8_t *payload, size_t len,
                                     pcc_compile_result **out)
{
  pcc_compiler_status rc = PCC_COMPILER_OK;
  pcc_compile_result *result = calloc(1, sizeof *result);
  if (!result) {
    free(payload);
    return PCC_COMPILER_NOMEM;
  }
  if (type == PCC_FRAME_CODE && len > 0) {
    result->ok = true;
    result->marshal = payload;
    result->marshal_len = len;
    payload = NULL;
  } else if (type == PCC_FRAME_ERROR) {
    rc = parse_error(payload, len, result);
  } else {
    rc = PCC_COMPILER_PROTOCOL;
  }
  free(payload);
  if (rc != PCC_COMPILER_OK) {
    pcc_compile_result_free(result);
    return rc;
  }
  *out = result;
  return PCC_COMPILER_OK;
}
