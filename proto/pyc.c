/* pyc.c: magic numbers and the 16-byte PEP 552 pyc header (timestamp-based form only). */
#include <string.h>

#include "proto_internal.h"

static bool magic_well_formed(const pcc_magic *magic)
{
  return magic->bytes[2] == '\r' && magic->bytes[3] == '\n';
}

pcc_proto_status pcc_magic_from_hex(const char *hex, pcc_magic *out)
{
  pcc_magic magic;
  pcc_proto_status rc = proto_hex_decode(hex, magic.bytes, PCC_MAGIC_LEN);
  if (rc != PCC_PROTO_OK)
    return rc;
  if (!magic_well_formed(&magic))
    return PCC_PROTO_INVALID;
  *out = magic;
  return PCC_PROTO_OK;
}

void pcc_magic_to_hex(const pcc_magic *magic, char out[2 * PCC_MAGIC_LEN + 1])
{
  pcc_hex_encode(magic->bytes, PCC_MAGIC_LEN, out);
}

bool pcc_magic_equal(const pcc_magic *a, const pcc_magic *b)
{
  return memcmp(a->bytes, b->bytes, PCC_MAGIC_LEN) == 0;
}

void pcc_pyc_header_init(pcc_pyc_header *header, const pcc_magic *magic, int64_t mtime,
                         uint64_t size)
{
  header->magic = *magic;
  header->flags = 0;
  header->mtime = (uint32_t)((uint64_t)mtime & 0xffffffffu);
  header->size = (uint32_t)(size & 0xffffffffu);
}

void pcc_pyc_header_write(const pcc_pyc_header *header, uint8_t out[PCC_PYC_HEADER_LEN])
{
  memcpy(out, header->magic.bytes, PCC_MAGIC_LEN);
  proto_put_le(out + 4, header->flags, 4);
  proto_put_le(out + 8, header->mtime, 4);
  proto_put_le(out + 12, header->size, 4);
}

pcc_proto_status pcc_pyc_header_parse(const uint8_t *buf, size_t len, pcc_pyc_header *out)
{
  if (buf == NULL || len < PCC_PYC_HEADER_LEN)
    return PCC_PROTO_HEADER;
  pcc_pyc_header header;
  memcpy(header.magic.bytes, buf, PCC_MAGIC_LEN);
  header.flags = (uint32_t)proto_get_le(buf + 4, 4);
  header.mtime = (uint32_t)proto_get_le(buf + 8, 4);
  header.size = (uint32_t)proto_get_le(buf + 12, 4);
  if (!magic_well_formed(&header.magic) || header.flags != 0)
    return PCC_PROTO_HEADER;
  *out = header;
  return PCC_PROTO_OK;
}
