/* fuzz_common.h: what the libFuzzer targets of tests/fuzz/ share (README.md there says how they
 * are built and run). A target aborts through FUZZ_CHECK when a parser accepted something that
 * breaks its contract: libFuzzer then reports the input as a crash, like a sanitizer finding.
 *
 * The "fix-ups" help a target past a checksum: a mutated input almost never carries the XXH3-64
 * of its own bytes, so without them the fuzzer would stop at every checksum check. A target
 * applies one when a bit of its first byte asks for it, so that inputs with a wrong checksum are
 * fuzzed as well. */
#ifndef PCC_FUZZ_COMMON_H
#define PCC_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proto.h"

#define FUZZ_CHECK(cond)                                                                     \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      fprintf(stderr, "%s:%d: contract broken: %s\n", __FILE__, __LINE__, #cond);           \
      abort();                                                                               \
    }                                                                                        \
  } while (0)

/* A NUL-terminated copy of the input (the caller frees it). */
static inline char *fuzz_text(const uint8_t *data, size_t size)
{
  char *text = malloc(size + 1);
  if (text == NULL)
    abort();
  if (size > 0)
    memcpy(text, data, size);
  text[size] = '\0';
  return text;
}

/* The JSON of an entry (text, len) with its "checksum" set to that of its decoded "pyc", and,
 * with header, its "magic", "mtime" and "size" set from the pyc's header, so that the checks
 * after them are reached. NULL when the text is no such object (then fuzz it as it is). The
 * caller frees the result. */
static inline char *fuzz_fix_entry(const char *text, size_t len, int header)
{
  cJSON *obj = cJSON_ParseWithLength(text, len);
  const cJSON *pyc = cJSON_GetObjectItemCaseSensitive(obj, "pyc");
  uint8_t *bytes = NULL;
  size_t n = 0;
  char *fixed = NULL;
  if (cJSON_IsObject(obj) && cJSON_IsString(pyc) &&
      pcc_base64_decode(pyc->valuestring, strlen(pyc->valuestring), &bytes, &n) ==
        PCC_PROTO_OK) {
    char hex[17];
    pcc_checksum_to_hex(pcc_checksum(bytes, n), hex);
    cJSON_DeleteItemFromObjectCaseSensitive(obj, "checksum");
    cJSON_AddStringToObject(obj, "checksum", hex);
    pcc_pyc_header header_fields;
    if (header && pcc_pyc_header_parse(bytes, n, &header_fields) == PCC_PROTO_OK) {
      char magic[2 * PCC_MAGIC_LEN + 1];
      pcc_magic_to_hex(&header_fields.magic, magic);
      cJSON_DeleteItemFromObjectCaseSensitive(obj, "magic");
      cJSON_DeleteItemFromObjectCaseSensitive(obj, "mtime");
      cJSON_DeleteItemFromObjectCaseSensitive(obj, "size");
      cJSON_AddStringToObject(obj, "magic", magic);
      cJSON_AddNumberToObject(obj, "mtime", header_fields.mtime);
      cJSON_AddNumberToObject(obj, "size", header_fields.size);
    }
    fixed = cJSON_PrintUnformatted(obj);
  }
  free(bytes);
  cJSON_Delete(obj);
  return fixed;
}

#endif /* PCC_FUZZ_COMMON_H */
