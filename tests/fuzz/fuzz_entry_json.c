/* fuzz_entry_json.c: the JSON form of an entry, as a client reads a hit or a compile
 * (pcc_entry_from_json, proto/json.c: libpycached without raw_pyc, pycachectl, batches and JSON
 * bundles).
 *
 * Input: byte 0 asks for fix-ups (fuzz_common.h): bit 0 sets "checksum" to that of the decoded
 * "pyc", bit 1 also "magic", "mtime" and "size" from its header; the rest is the JSON text.
 * Checked: an entry that parses has a pyc matching its checksum whose header carries its magic,
 * mtime and size, its fields are in range, and it makes the same entry again through
 * pcc_entry_to_json. */
#include "fuzz_common.h"

static void check_entry(const pcc_entry *entry)
{
  const pcc_entry_view *v = &entry->view;
  FUZZ_CHECK(v->opt >= 0 && v->opt <= PCC_OPT_MAX);
  FUZZ_CHECK(v->mtime >= 0 && v->mtime <= PCC_JSON_INT_MAX);
  FUZZ_CHECK(v->size <= (uint64_t)PCC_JSON_INT_MAX);
  FUZZ_CHECK(pcc_checksum(v->pyc, v->pyc_len) == v->checksum);
  pcc_pyc_header header;
  FUZZ_CHECK(pcc_pyc_header_parse(v->pyc, v->pyc_len, &header) == PCC_PROTO_OK);
  FUZZ_CHECK(pcc_magic_equal(&header.magic, &v->magic));
  FUZZ_CHECK(header.mtime == (uint32_t)v->mtime && header.size == (uint32_t)v->size);
  FUZZ_CHECK(v->path != NULL && v->compiler != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  const char *text = (const char *)data + 1;
  size_t len = size - 1;
  char *fixed = (data[0] & 3) ? fuzz_fix_entry(text, len, data[0] & 2) : NULL;
  if (fixed != NULL) {
    text = fixed;
    len = strlen(fixed);
  }
  pcc_entry *entry = NULL;
  pcc_proto_status rc = pcc_entry_from_json(text, len, &entry);
  if (rc == PCC_PROTO_OK) {
    check_entry(entry);
    cJSON *json = pcc_entry_to_json(&entry->view);
    char *printed = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    FUZZ_CHECK(printed != NULL);
    pcc_entry *again = NULL;
    FUZZ_CHECK(pcc_entry_from_json(printed, strlen(printed), &again) == PCC_PROTO_OK);
    check_entry(again);
    const pcc_entry_view *a = &again->view, *b = &entry->view;
    FUZZ_CHECK(pcc_magic_equal(&a->magic, &b->magic) && a->opt == b->opt &&
               strcmp(a->path, b->path) == 0 && a->mtime == b->mtime && a->size == b->size &&
               a->hash == b->hash && a->hash_checked == b->hash_checked &&
               pcc_digest_equal(&a->digest, &b->digest) && a->pyc_len == b->pyc_len &&
               memcmp(a->pyc, b->pyc, a->pyc_len) == 0 && a->checksum == b->checksum &&
               strcmp(a->compiler, b->compiler) == 0);
    pcc_entry_free(again);
    free(printed);
    pcc_entry_free(entry);
  } else {
    FUZZ_CHECK(entry == NULL);
    FUZZ_CHECK(rc == PCC_PROTO_INVALID || rc == PCC_PROTO_CHECKSUM || rc == PCC_PROTO_HEADER);
  }
  free(fixed);
  return 0;
}
