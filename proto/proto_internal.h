/* proto_internal.h: helpers shared by the files of the proto module only (not installed). */
#ifndef PCC_PROTO_INTERNAL_H
#define PCC_PROTO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* Decodes exactly 2*len hex digits (either case) followed by a NUL. */
pcc_proto_status proto_hex_decode(const char *hex, uint8_t *out, size_t len);

/* The implementations of the Java hash (java_hash.c), best first; the last, "scalar", is the
 * reference and runs everywhere. Each continues a hash: fn(state, data, len) is the state after
 * data, where state is 1 before any byte and (int32_t)state the hash. usable() says whether this
 * CPU runs it. The table is for pcc_java_hash and for tests and benchmarks. */
typedef uint32_t (*proto_java_hash_fn)(uint32_t state, const uint8_t *data, size_t len);
typedef struct {
  const char *name;
  bool (*usable)(void);
  proto_java_hash_fn fn;
} proto_java_hash_impl;
extern const proto_java_hash_impl proto_java_hash_impls[];
extern const size_t proto_java_hash_impl_count;

/* The Java hash continued over len more bytes with the best usable implementation (state 1 at
 * the start, as above). */
uint32_t proto_java_hash_update(uint32_t state, const void *data, size_t len);

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
