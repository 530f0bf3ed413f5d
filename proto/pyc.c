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
  proto_hex_encode(magic->bytes, PCC_MAGIC_LEN, out);
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

static void put_u32le(uint8_t *out, uint32_t value)
{
  out[0] = (uint8_t)value;
  out[1] = (uint8_t)(value >> 8);
  out[2] = (uint8_t)(value >> 16);
  out[3] = (uint8_t)(value >> 24);
}

static uint32_t get_u32le(const uint8_t *in)
{
  return (uint32_t)in[0] | (uint32_t)in[1] << 8 | (uint32_t)in[2] << 16 | (uint32_t)in[3] << 24;
}

void pcc_pyc_header_write(const pcc_pyc_header *header, uint8_t out[PCC_PYC_HEADER_LEN])
{
  memcpy(out, header->magic.bytes, PCC_MAGIC_LEN);
  put_u32le(out + 4, header->flags);
  put_u32le(out + 8, header->mtime);
  put_u32le(out + 12, header->size);
}

pcc_proto_status pcc_pyc_header_parse(const uint8_t *buf, size_t len, pcc_pyc_header *out)
{
  if (buf == NULL || len < PCC_PYC_HEADER_LEN)
    return PCC_PROTO_HEADER;
  pcc_pyc_header header;
  memcpy(header.magic.bytes, buf, PCC_MAGIC_LEN);
  header.flags = get_u32le(buf + 4);
  header.mtime = get_u32le(buf + 8);
  header.size = get_u32le(buf + 12);
  if (!magic_well_formed(&header.magic) || header.flags != 0)
    return PCC_PROTO_HEADER;
  *out = header;
  return PCC_PROTO_OK;
}
