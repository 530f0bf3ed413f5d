/* fuzz_bundle.c: reading a bundle as the import hook does (pcc_bundle_parse, proto/bundle.c: the
 * client side of GET /v1/bundle, before _native.c hands the entries to Python).
 *
 * Input: byte 0 asks for fix-ups (fuzz_common.h): bit 0 sets each entry's checksum to that of its
 * pyc, bit 1 sets the trailer to the XXH3-64 of what precedes it; the rest is the bundle. Checked:
 * every visited entry lies inside the bundle, its pyc matches its checksum and carries the
 * bundle's magic and the entry's mtime and size; a bundle that parses is rebuilt from its visited
 * entries by pcc_bundle_writer and parses again to the same entries, none skipped. */
#include "fuzz_common.h"

typedef struct {
  const uint8_t *data;
  size_t len;
  pcc_magic magic;
  pcc_bundle_entry entries[64];
  size_t n, visited;
} visit_ctx;

static void visit(const pcc_bundle_entry *entry, void *ctx)
{
  visit_ctx *v = ctx;
  const uint8_t *end = v->data + v->len;
  FUZZ_CHECK((const uint8_t *)entry->path >= v->data &&
             (const uint8_t *)entry->path + entry->path_len <= end);
  FUZZ_CHECK(entry->pyc >= v->data && entry->pyc + entry->pyc_len <= end);
  FUZZ_CHECK(entry->path_len <= PCC_PATH_MAX);
  FUZZ_CHECK(pcc_checksum(entry->pyc, entry->pyc_len) == entry->checksum);
  pcc_pyc_header header, expected;
  FUZZ_CHECK(pcc_pyc_header_parse(entry->pyc, entry->pyc_len, &header) == PCC_PROTO_OK);
  pcc_pyc_header_init(&expected, &header.magic, entry->mtime, entry->size);
  FUZZ_CHECK(header.mtime == expected.mtime && header.size == expected.size);
  FUZZ_CHECK(pcc_magic_equal(&header.magic, &v->magic)); /* set by the parse before visiting */
  if (v->n < sizeof v->entries / sizeof v->entries[0])
    v->entries[v->n++] = *entry;
  v->visited++;
}

/* Sets each entry's checksum, walking the framing as pcc_bundle_parse does, as far as it holds. */
static void fix_entries(uint8_t *data, size_t len)
{
  if (len < PCC_BUNDLE_HEADER_LEN + PCC_BUNDLE_TRAILER_LEN)
    return;
  uint8_t *r = data + PCC_BUNDLE_HEADER_LEN, *end = data + len - PCC_BUNDLE_TRAILER_LEN;
  while ((size_t)(end - r) >= PCC_BUNDLE_ENTRY_FIXED) {
    size_t path_len = (size_t)(r[0] | r[1] << 8 | r[2] << 16 | (uint32_t)r[3] << 24);
    size_t pyc_len = (size_t)(r[4] | r[5] << 8 | r[6] << 16 | (uint32_t)r[7] << 24);
    size_t room = (size_t)(end - r) - PCC_BUNDLE_ENTRY_FIXED;
    if (path_len > room || pyc_len > room - path_len)
      return;
    uint64_t checksum = pcc_checksum(r + PCC_BUNDLE_ENTRY_FIXED + path_len, pyc_len);
    for (int i = 0; i < 8; i++)
      r[28 + PCC_DIGEST_LEN + i] = (uint8_t)(checksum >> (8 * i));
    r += PCC_BUNDLE_ENTRY_FIXED + path_len + pyc_len;
  }
}

static void fix_trailer(uint8_t *data, size_t len)
{
  if (len < PCC_BUNDLE_HEADER_LEN + PCC_BUNDLE_TRAILER_LEN)
    return;
  size_t body = len - PCC_BUNDLE_TRAILER_LEN;
  uint64_t checksum = pcc_checksum(data, body);
  memcpy(data + body, "PCCE", 4);
  for (int i = 0; i < 8; i++)
    data[body + 4 + i] = (uint8_t)(checksum >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  size_t len = size - 1;
  uint8_t *bundle = malloc(len ? len : 1);
  FUZZ_CHECK(bundle != NULL);
  memcpy(bundle, data + 1, len);
  if (data[0] & 1)
    fix_entries(bundle, len);
  if (data[0] & 2)
    fix_trailer(bundle, len);

  visit_ctx v = {.data = bundle, .len = len};
  int opt = -1;
  size_t skipped = 0;
  pcc_proto_status rc = pcc_bundle_parse(bundle, len, &v.magic, &opt, visit, &v, &skipped);
  FUZZ_CHECK(rc == PCC_PROTO_OK || rc == PCC_PROTO_INVALID || rc == PCC_PROTO_CHECKSUM);
  if (rc == PCC_PROTO_OK && v.n == v.visited) {
    /* rebuilt from what was visited: the same entries again, none skipped */
    FUZZ_CHECK(opt >= 0 && opt <= PCC_OPT_MAX);
    pcc_bundle_writer *writer = NULL;
    FUZZ_CHECK(pcc_bundle_writer_open(&v.magic, opt, len + 1024, &writer) == PCC_PROTO_OK);
    for (size_t i = 0; i < v.n; i++)
      FUZZ_CHECK(pcc_bundle_writer_add(writer, &v.entries[i]) == PCC_PROTO_OK);
    uint8_t *out = NULL;
    size_t out_len = 0;
    FUZZ_CHECK(pcc_bundle_writer_finish(writer, &out, &out_len) == PCC_PROTO_OK);
    pcc_bundle_writer_close(writer);
    visit_ctx again = {.data = out, .len = out_len, .magic = v.magic};
    pcc_magic magic;
    int opt_again = -1;
    size_t skipped_again = 0;
    FUZZ_CHECK(pcc_bundle_parse(out, out_len, &magic, &opt_again, visit, &again,
                                &skipped_again) == PCC_PROTO_OK);
    FUZZ_CHECK(skipped_again == 0 && again.visited == v.visited && opt_again == opt &&
               pcc_magic_equal(&magic, &v.magic));
    for (size_t i = 0; i < again.n; i++)
      FUZZ_CHECK(again.entries[i].path_len == v.entries[i].path_len &&
                 memcmp(again.entries[i].path, v.entries[i].path, v.entries[i].path_len) == 0 &&
                 again.entries[i].pyc_len == v.entries[i].pyc_len &&
                 memcmp(again.entries[i].pyc, v.entries[i].pyc, v.entries[i].pyc_len) == 0 &&
                 again.entries[i].mtime == v.entries[i].mtime &&
                 again.entries[i].size == v.entries[i].size &&
                 again.entries[i].hash == v.entries[i].hash &&
                 pcc_digest_equal(&again.entries[i].digest, &v.entries[i].digest));
    free(out);
  }
  free(bundle);
  return 0;
}
