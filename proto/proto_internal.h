/* proto_internal.h: helpers shared by the files of the proto module only (not installed). */
#ifndef PCC_PROTO_INTERNAL_H
#define PCC_PROTO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* Decodes exactly 2*len hex digits (either case) followed by a NUL. */
pcc_proto_status proto_hex_decode(const char *hex, uint8_t *out, size_t len);

/* Little-endian integers in byte buffers (pyc headers, bundles). */
static inline void proto_put_le(uint8_t *out, uint64_t value, int bytes)
{
  for (int i = 0; i < bytes; i++)
    out[i] = (uint8_t)(value >> (8 * i));
}

static inline uint64_t proto_get_le(const uint8_t *in, int bytes)
{
  uint64_t value = 0;
  for (int i = bytes - 1; i >= 0; i--)
    value = value << 8 | in[i];
  return value;
}

#endif
