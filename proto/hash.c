/* hash.c: two of the three hashes of the validation scheme (see proto.h), the SHA-256 content
 * digest (OpenSSL's libcrypto) that names blobs and the XXH3-64 payload checksum, with their hex
 * forms, and the module's strerror. The third, the weak Java Arrays.hashCode() source hash
 * GraalPy uses, is vectorised in java_hash.c. */
#include <string.h>

#include <openssl/sha.h>
#include <xxhash.h>

#include "proto_internal.h"

const char *pcc_proto_strerror(pcc_proto_status rc)
{
  switch (rc) {
  case PCC_PROTO_OK: return "ok";
  case PCC_PROTO_MISSING: return "required parameter missing";
  case PCC_PROTO_INVALID: return "malformed value";
  case PCC_PROTO_RANGE: return "value out of range";
  case PCC_PROTO_HEADER: return "malformed pyc header";
  case PCC_PROTO_CHECKSUM: return "checksum mismatch";
  case PCC_PROTO_NOMEM: return "out of memory";
  }
  return "unknown proto status";
}

void pcc_digest_compute(const void *data, size_t len, pcc_digest *out)
{
  /* OpenSSL's one-shot SHA-256 uses the CPU's SHA extensions where there are some */
  SHA256(data, len, out->bytes);
}

void pcc_digest_to_hex(const pcc_digest *digest, char out[PCC_DIGEST_HEX_LEN + 1])
{
  pcc_hex_encode(digest->bytes, PCC_DIGEST_LEN, out);
}

pcc_proto_status pcc_digest_from_hex(const char *hex, pcc_digest *out)
{
  return proto_hex_decode(hex, out->bytes, PCC_DIGEST_LEN);
}

bool pcc_digest_equal(const pcc_digest *a, const pcc_digest *b)
{
  return memcmp(a->bytes, b->bytes, PCC_DIGEST_LEN) == 0;
}

uint64_t pcc_checksum(const void *data, size_t len)
{
  return XXH3_64bits(data, len);
}

void pcc_checksum_to_hex(uint64_t checksum, char out[17])
{
  uint8_t be[8];
  for (int i = 0; i < 8; i++)
    be[i] = (uint8_t)(checksum >> (56 - 8 * i));
  pcc_hex_encode(be, sizeof be, out);
}

pcc_proto_status pcc_checksum_from_hex(const char *hex, uint64_t *out)
{
  uint8_t be[8];
  pcc_proto_status rc = proto_hex_decode(hex, be, sizeof be);
  if (rc != PCC_PROTO_OK)
    return rc;
  uint64_t value = 0;
  for (int i = 0; i < 8; i++)
    value = (value << 8) | be[i];
  *out = value;
  return PCC_PROTO_OK;
}

void pcc_hex_encode(const uint8_t *bytes, size_t len, char *out)
{
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 0xf];
  }
  out[2 * len] = '\0';
}

static int hex_value(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

pcc_proto_status proto_hex_decode(const char *hex, uint8_t *out, size_t len)
{
  if (hex == NULL)
    return PCC_PROTO_INVALID;
  for (size_t i = 0; i < len; i++) {
    int hi = hex_value(hex[2 * i]);
    int lo = hi < 0 ? -1 : hex_value(hex[2 * i + 1]);
    if (lo < 0)
      return PCC_PROTO_INVALID;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return hex[2 * len] == '\0' ? PCC_PROTO_OK : PCC_PROTO_INVALID;
}
