/* proto_internal.h: helpers shared by the files of the proto module only (not installed). */
#ifndef PCC_PROTO_INTERNAL_H
#define PCC_PROTO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* Writes 2*len lowercase hex digits and a NUL into out. */
void proto_hex_encode(const uint8_t *bytes, size_t len, char *out);
/* Decodes exactly 2*len hex digits (either case) followed by a NUL. */
pcc_proto_status proto_hex_decode(const char *hex, uint8_t *out, size_t len);

#endif
