/* bundle.c: the binary bundle format of proto.h (every pyc of an import profile in one
 * response): the server writes it, the import hook parses and checks it. */
#include <stdlib.h>
#include <string.h>

#include "proto_internal.h"

struct pcc_bundle_writer {
  uint8_t *data;
  size_t len, cap, max;
  uint32_t count;
};

pcc_proto_status pcc_bundle_writer_open(const pcc_magic *magic, int opt, size_t max_bytes,
                                        pcc_bundle_writer **out)
{
  if (magic == NULL || opt < 0 || opt > PCC_OPT_MAX || out == NULL ||
      max_bytes < PCC_BUNDLE_HEADER_LEN + PCC_BUNDLE_TRAILER_LEN)
    return PCC_PROTO_INVALID;
  pcc_bundle_writer *writer = calloc(1, sizeof *writer);
  size_t cap = max_bytes < 65536 ? max_bytes : 65536;
  if (writer == NULL || (writer->data = malloc(cap)) == NULL) {
    free(writer);
    return PCC_PROTO_NOMEM;
  }
  writer->cap = cap;
  writer->max = max_bytes;
  memcpy(writer->data, "PCCB", 4);
  writer->data[4] = 1;
  writer->data[5] = (uint8_t)opt;
  proto_put_le(writer->data + 6, 0, 2);
  memcpy(writer->data + 8, magic->bytes, PCC_MAGIC_LEN);
  proto_put_le(writer->data + 12, 0, 4); /* the count, set by finish */
  writer->len = PCC_BUNDLE_HEADER_LEN;
  *out = writer;
  return PCC_PROTO_OK;
}

/* Makes room for n more bytes, keeping space for the trailer within max. */
static pcc_proto_status reserve(pcc_bundle_writer *writer, size_t n)
{
  if (n > writer->max - PCC_BUNDLE_TRAILER_LEN - writer->len)
    return PCC_PROTO_RANGE;
  size_t need = writer->len + n + PCC_BUNDLE_TRAILER_LEN;
  if (need <= writer->cap)
    return PCC_PROTO_OK;
  size_t cap = writer->cap;
  while (cap < need)
    cap = cap > writer->max / 2 ? writer->max : cap * 2;
  uint8_t *grown = realloc(writer->data, cap);
  if (grown == NULL)
    return PCC_PROTO_NOMEM;
  writer->data = grown;
  writer->cap = cap;
  return PCC_PROTO_OK;
}

pcc_proto_status pcc_bundle_writer_add(pcc_bundle_writer *writer, const pcc_bundle_entry *entry)
{
  if (writer == NULL || entry == NULL || entry->path_len > PCC_PATH_MAX ||
      entry->pyc_len > UINT32_MAX)
    return PCC_PROTO_INVALID;
  pcc_proto_status rc = reserve(writer, PCC_BUNDLE_ENTRY_FIXED + entry->path_len +
                                          entry->pyc_len);
  if (rc != PCC_PROTO_OK)
    return rc;
  uint8_t *w = writer->data + writer->len;
  proto_put_le(w, entry->path_len, 4);
  proto_put_le(w + 4, entry->pyc_len, 4);
  proto_put_le(w + 8, (uint64_t)entry->mtime, 8);
  proto_put_le(w + 16, entry->size, 8);
  proto_put_le(w + 24, (uint32_t)entry->hash, 4);
  memcpy(w + 28, entry->digest.bytes, PCC_DIGEST_LEN);
  proto_put_le(w + 44, pcc_checksum(entry->pyc, entry->pyc_len), 8);
  memcpy(w + PCC_BUNDLE_ENTRY_FIXED, entry->path, entry->path_len);
  memcpy(w + PCC_BUNDLE_ENTRY_FIXED + entry->path_len, entry->pyc, entry->pyc_len);
  writer->len += PCC_BUNDLE_ENTRY_FIXED + entry->path_len + entry->pyc_len;
  writer->count++;
  return PCC_PROTO_OK;
}

pcc_proto_status pcc_bundle_writer_finish(pcc_bundle_writer *writer, uint8_t **out, size_t *len)
{
  if (writer == NULL || out == NULL || len == NULL || writer->data == NULL)
    return PCC_PROTO_INVALID;
  proto_put_le(writer->data + 12, writer->count, 4);
  uint8_t *t = writer->data + writer->len; /* reserve() always kept room for the trailer */
  memcpy(t, "PCCE", 4);
  proto_put_le(t + 4, pcc_checksum(writer->data, writer->len), 8);
  *len = writer->len + PCC_BUNDLE_TRAILER_LEN;
  *out = writer->data;
  writer->data = NULL;
  return PCC_PROTO_OK;
}

void pcc_bundle_writer_close(pcc_bundle_writer *writer)
{
  if (writer == NULL)
    return;
  free(writer->data);
  free(writer);
}

/* Does the pyc's header carry the bundle's magic and the entry's mtime and size? */
static bool entry_header_ok(const pcc_bundle_entry *entry, const pcc_magic *magic)
{
  pcc_pyc_header header, expected;
  if (pcc_pyc_header_parse(entry->pyc, entry->pyc_len, &header) != PCC_PROTO_OK)
    return false;
  pcc_pyc_header_init(&expected, magic, entry->mtime, entry->size);
  return pcc_magic_equal(&header.magic, magic) && header.mtime == expected.mtime &&
         header.size == expected.size;
}

pcc_proto_status pcc_bundle_parse(const uint8_t *data, size_t len, pcc_magic *magic, int *opt,
                                  void (*visit)(const pcc_bundle_entry *entry, void *ctx),
                                  void *ctx, size_t *skipped)
{
  if (data == NULL || magic == NULL || opt == NULL || visit == NULL || skipped == NULL)
    return PCC_PROTO_INVALID;
  *skipped = 0;
  if (len < PCC_BUNDLE_HEADER_LEN + PCC_BUNDLE_TRAILER_LEN || memcmp(data, "PCCB", 4) != 0 ||
      data[4] != 1 || data[5] > PCC_OPT_MAX)
    return PCC_PROTO_INVALID;
  size_t body = len - PCC_BUNDLE_TRAILER_LEN;
  if (memcmp(data + body, "PCCE", 4) != 0 ||
      proto_get_le(data + body + 4, 8) != pcc_checksum(data, body))
    return PCC_PROTO_CHECKSUM;
  memcpy(magic->bytes, data + 8, PCC_MAGIC_LEN);
  *opt = data[5];
  uint32_t count = (uint32_t)proto_get_le(data + 12, 4);
  const uint8_t *r = data + PCC_BUNDLE_HEADER_LEN, *end = data + body;
  for (uint32_t i = 0; i < count; i++) {
    if ((size_t)(end - r) < PCC_BUNDLE_ENTRY_FIXED)
      return PCC_PROTO_INVALID;
    pcc_bundle_entry entry;
    entry.path_len = (size_t)proto_get_le(r, 4);
    entry.pyc_len = (size_t)proto_get_le(r + 4, 4);
    size_t room = (size_t)(end - r) - PCC_BUNDLE_ENTRY_FIXED;
    if (entry.path_len > PCC_PATH_MAX || entry.path_len > room ||
        entry.pyc_len > room - entry.path_len)
      return PCC_PROTO_INVALID;
    entry.mtime = (int64_t)proto_get_le(r + 8, 8);
    entry.size = proto_get_le(r + 16, 8);
    entry.hash = (int32_t)(uint32_t)proto_get_le(r + 24, 4);
    memcpy(entry.digest.bytes, r + 28, PCC_DIGEST_LEN);
    entry.checksum = proto_get_le(r + 44, 8);
    entry.path = (const char *)r + PCC_BUNDLE_ENTRY_FIXED;
    entry.pyc = r + PCC_BUNDLE_ENTRY_FIXED + entry.path_len;
    r += PCC_BUNDLE_ENTRY_FIXED + entry.path_len + entry.pyc_len;
    if (pcc_checksum(entry.pyc, entry.pyc_len) == entry.checksum && entry_header_ok(&entry, magic))
      visit(&entry, ctx);
    else
      (*skipped)++;
  }
  return r == end ? PCC_PROTO_OK : PCC_PROTO_INVALID;
}
