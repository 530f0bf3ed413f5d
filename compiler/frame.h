/* frame.h: the framed protocol between the server's compiler pool and a worker process.
 *
 * Simple enough that a short script in any interpreter can speak it (compiler/worker.py does,
 * for backends other than the embedded CPython). Every frame, in both directions:
 *
 *   u32 length (little-endian) of what follows | u8 type | payload (length - 1 bytes)
 *
 * worker -> pool, once at start:
 *   'H' hello   payload: JSON {"magic": "a70d0d0a", "implementation": "cpython",
 *                              "version": "3.11.2"}
 * pool -> worker:
 *   'C' compile payload: u8 opt | u32 LE path length | path bytes | source bytes (the rest)
 * worker -> pool, one answer per compile:
 *   'K' code    payload: marshal.dumps(code)
 *   'E' error   payload: JSON {"type": "SyntaxError", "message": "...", "line": 3,
 *                              "offset": 7, "transient": false}
 *               line/offset 0 when unknown. "transient" (optional, false when absent) is true
 *               when compile() raised anything but SyntaxError (and its subclasses) or ValueError
 *               (and its subclasses: UnicodeDecodeError): MemoryError, RecursionError, or a limit
 *               of the worker itself. Such an error is not the source's fault and must not be
 *               stored as the source's compile error (compiler.h, pcc_compile_result).
 *
 * Anything else, or a frame over the limit, is a protocol error: the pool kills the worker.
 *
 * The limits come from proto/pcc_limits.h, included here: a frame is at most PCC_FRAME_MAX bytes
 * (the u32 length: type + payload) either way, a hello at most PCC_FRAME_HELLO_MAX. worker.py
 * cannot include this header; it repeats the values (MAX_FRAME, MAX_MESSAGE) and the compiler
 * suite checks that they agree.
 */
#ifndef PCC_FRAME_H
#define PCC_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "pcc_limits.h"

#define PCC_FRAME_HELLO 'H'
#define PCC_FRAME_COMPILE 'C'
#define PCC_FRAME_CODE 'K'
#define PCC_FRAME_ERROR 'E'

#define PCC_FRAME_PREFIX_LEN 5 /* u32 length + u8 type */

#endif /* PCC_FRAME_H */
