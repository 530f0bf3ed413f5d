/* reply.h: the frames a compiler worker sends (compiler/frame.h), decoded from bytes. pool.c
 * reads them from a worker's socket and decodes them here; tests/fuzz/fuzz_worker_frames.c
 * feeds them bytes directly, so that everything a worker may send is decoded by code that is
 * also fuzzed. Nothing here does I/O. */
#ifndef PCC_REPLY_H
#define PCC_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include "compiler.h"
#include "frame.h"

/* The frame prefix (u32 length of what follows, LE, then u8 type): *type and *payload_len (the
 * length minus the type byte). PCC_COMPILER_PROTOCOL when the length is 0 or over max. */
pcc_compiler_status pcc_reply_prefix(const uint8_t prefix[PCC_FRAME_PREFIX_LEN], size_t max,
                                     uint8_t *type, size_t *payload_len);

/* A hello frame: type must be 'H' and the payload a JSON object with a well-formed "magic" and
 * an "implementation" and a "version" of 1..PCC_WORKER_NAME_PART_MAX printable characters
 * without spaces, quotes or backslashes. *magic and name ("implementation-version", name_size
 * bytes with its NUL) are set on PCC_COMPILER_OK; anything else is PCC_COMPILER_SPAWN. */
pcc_compiler_status pcc_reply_hello(uint8_t type, const uint8_t *payload, size_t len,
                                    pcc_magic *magic, char *name, size_t name_size);

/* An answer to a compile: 'K' with a non-empty payload (marshal bytes), or 'E' with the JSON of
 * a compile error (frame.h). Takes payload (malloc'd, len bytes; freed here or handed to the
 * result). On PCC_COMPILER_OK *out is set (caller frees with pcc_compile_result_free;
 * compile_us is left 0); PCC_COMPILER_PROTOCOL for anything else, PCC_COMPILER_NOMEM. */
pcc_compiler_status pcc_reply_answer(uint8_t type, uint8_t *payload, size_t len,
                                     pcc_compile_result **out);

#endif /* PCC_REPLY_H */
