/* bundle.c: the binary bundle format of proto.h (every pyc of an import profile in one
 * response): the server writes it, the import hook parses and checks it. */
#include <stdlib.h>
#include <string.h>

#include "proto_internal.h"

#define BUNDLE_FIRST ((size_t)64 << 10) /* the first allocation, unless max_bytes is less */

/* The bundle so far (header and entries) lives in buf, whose max is the bundle's max_bytes:
 * every reservation also keeps room for the trailer, so that finish never fails for want of it.
 * buf.data is NULL once finish has handed the bytes out. */
struct pcc_bundle_writer {
  pcc_dynbuf buf;
  uint32_t count;
};

/* Makes room for n more bytes and the trailer after them, within max_bytes: PCC_PROTO_RANGE when
 * they do not fit, PCC_PROTO_NOMEM when memory runs out. */
static pcc_proto_status reserve(pcc_bundle_writer *writer, size_t n)
{
  if (n > SIZE_MAX - PCC_BUNDLE_TRAILER_LEN)
    return PCC_PROTO_RANGE;
  return pcc_dynbuf_reserve(&writer->buf, n + PCC_BUNDLE_TRAILER_LEN);
}

pcc_proto_status pcc_bundle_writer_open(const pcc_magic *magic, int opt, size_t max_bytes,
                                        pcc_bundle_writer **out)
{
  if (magic == NULL || opt < 0 || opt > PCC_OPT_MAX || out == NULL ||
      max_bytes < PCC_BUNDLE_HEADER_LEN + PCC_BUNDLE_TRAILER_LEN)
    return PCC_PROTO_INVALID;
  pcc_bundle_writer *writer = calloc(1, sizeof *writer);
  if (writer == NULL)
    return PCC_PROTO_NOMEM;
  pcc_dynbuf_init(&writer->buf, max_bytes);
  uint8_t header[PCC_BUNDLE_HEADER_LEN];
  memcpy(header, "PCCB", 4);
  header[4] = PCC_BUNDLE_VERSION;
  header[5] = (uint8_t)opt;
  proto_put_le(header + 6, 0, 2);
  memcpy(header + 8, magic->bytes, PCC_MAGIC_LEN);
  proto_put_le(header + 12, 0, 4); /* the count, set by finish */
  /* BUNDLE_FIRST (or max_bytes) covers the header and the trailer: the adds cannot fail */
  size_t first = max_bytes < BUNDLE_FIRST ? max_bytes : BUNDLE_FIRST;
  if (pcc_dynbuf_reserve(&writer->buf, first) != PCC_PROTO_OK ||
      pcc_dynbuf_add(&writer->buf, header, sizeof header) != PCC_PROTO_OK) {
    pcc_bundle_writer_close(writer);
    return PCC_PROTO_NOMEM;
  }
  *out = writer;
  return PCC_PROTO_OK;
}

pcc_proto_status pcc_bundle_writer_add(pcc_bundle_writer *writer, const pcc_bundle_entry *entry)
{
  if (writer == NULL || entry == NULL || writer->buf.data == NULL ||
      entry->path_len > PCC_PATH_MAX || entry->pyc_len > UINT32_MAX)
    return PCC_PROTO_INVALID;
  pcc_proto_status rc = reserve(writer, PCC_BUNDLE_ENTRY_FIXED + entry->path_len +
                                          entry->pyc_len);
  if (rc != PCC_PROTO_OK)
    return rc;
  uint8_t fixed[PCC_BUNDLE_ENTRY_FIXED];
  proto_put_le(fixed, entry->path_len, 4);
  proto_put_le(fixed + 4, entry->pyc_len, 4);
  proto_put_le(fixed + 8, (uint64_t)entry->mtime, 8);
  proto_put_le(fixed + 16, entry->size, 8);
  proto_put_le(fixed + 24, (uint32_t)entry->hash, 4);
  memcpy(fixed + 28, entry->digest.bytes, PCC_DIGEST_LEN);
  proto_put_le(fixed + 28 + PCC_DIGEST_LEN, pcc_checksum(entry->pyc, entry->pyc_len), 8);
  /* reserve() made room for all three: none of these adds can fail */
  (void)pcc_dynbuf_add(&writer->buf, fixed, sizeof fixed);
  (void)pcc_dynbuf_add(&writer->buf, entry->path, entry->path_len);
  (void)pcc_dynbuf_add(&writer->buf, entry->pyc, entry->pyc_len);
  writer->count++;
  return PCC_PROTO_OK;
}

pcc_proto_status pcc_bundle_writer_finish(pcc_bundle_writer *writer, uint8_t **out, size_t *len)
{
  if (writer == NULL || out == NULL || len == NULL || writer->buf.data == NULL)
    return PCC_PROTO_INVALID;
  uint8_t *data = writer->buf.data;
  proto_put_le(data + 12, writer->count, 4);
  uint8_t trailer[PCC_BUNDLE_TRAILER_LEN];
  memcpy(trailer, "PCCE", 4);
  proto_put_le(trailer + 4, pcc_checksum(data, writer->buf.len), 8);
  /* every reservation kept room for the trailer: this add cannot fail */
  (void)pcc_dynbuf_add(&writer->buf, trailer, sizeof trailer);
  *out = pcc_dynbuf_take(&writer->buf, len);
  return PCC_PROTO_OK;
}

void pcc_bundle_writer_close(pcc_bundle_writer *writer)
{
  if (writer == NULL)
    return;
  pcc_dynbuf_free(&writer->buf);
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
      data[4] != PCC_BUNDLE_VERSION || data[5] > PCC_OPT_MAX)
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
    entry.checksum = proto_get_le(r + 28 + PCC_DIGEST_LEN, 8);
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
