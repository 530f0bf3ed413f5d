# worker.py: a pycached compiler worker for interpreters other than the embedded CPython.
#
# Speaks the frame protocol of compiler/frame.h on stdin/stdout (stdlib only, any Python 3), the
# same as pycached-cpython-worker: a hello with this interpreter's importlib.util.MAGIC_NUMBER,
# then one 'K' (marshal.dumps(code)) or 'E' (JSON error) answer per 'C' compile frame. Run it as
#   <interpreter> -I -S -B /usr/share/pycached/worker.py
# (the pool's argv). Exits 0 on EOF at a frame boundary, non-zero on anything malformed. The pool
# confines it before exec as it does every worker (compiler/compiler.h); unlike the embedded
# worker it has no seccomp filter (another interpreter loads what it likes when it likes).
import importlib.util
import json
import marshal
import os
import struct
import sys

# The C side's PCC_FRAME_MAX and PCC_WORKER_ERROR_MESSAGE_MAX (proto/pcc_limits.h); the compiler
# suite (tests/unit/test_compiler.c) fails when these two lines and the header disagree.
MAX_FRAME = 64 << 20  # u32 length (type + payload) limit, either way
MAX_MESSAGE = 4096  # bytes of an error message


def read_exact(stream, n):
    data = bytearray()
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return bytes(data)
        data += chunk
    return bytes(data)


def write_frame(out, kind, payload):
    if len(payload) + 1 > MAX_FRAME:
        sys.exit(3)
    out.write(struct.pack("<IB", len(payload) + 1, ord(kind)) + payload)
    out.flush()


def error_frame(out, exc):
    # Only SyntaxError and ValueError (null bytes, UnicodeDecodeError) are the source's fault;
    # anything else (MemoryError, RecursionError, our frame limit) is transient (frame.h).
    if isinstance(exc, SyntaxError):
        message = exc.msg if exc.msg is not None else str(exc)
        line, offset = exc.lineno or 0, exc.offset or 0
    else:
        message, line, offset = str(exc), 0, 0
    message = str(message).encode("utf-8", "backslashreplace")[:MAX_MESSAGE]
    doc = {"type": type(exc).__name__,
           "message": message.decode("utf-8", "ignore"),
           "line": line if isinstance(line, int) and line > 0 else 0,
           "offset": offset if isinstance(offset, int) and offset > 0 else 0,
           "transient": not isinstance(exc, (SyntaxError, ValueError))}
    write_frame(out, "E", json.dumps(doc).encode("ascii"))


def main():
    sys.dont_write_bytecode = True
    # Frames own the real stdin/stdout; anything Python prints goes to stderr instead.
    inp = os.fdopen(os.dup(0), "rb", buffering=0)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    impl = sys.implementation
    hello = {"magic": importlib.util.MAGIC_NUMBER.hex(),
             "implementation": impl.name,
             "version": "%d.%d.%d" % tuple(impl.version[:3])}
    write_frame(out, "H", json.dumps(hello).encode("ascii"))
    while True:
        prefix = read_exact(inp, 5)
        if not prefix:
            return 0
        if len(prefix) < 5:
            return 2
        total, kind = struct.unpack("<IB", prefix)
        if kind != ord("C") or total < 6 or total > MAX_FRAME:
            return 3
        body = read_exact(inp, total - 1)
        if len(body) != total - 1:
            return 2
        opt, path_len = struct.unpack_from("<BI", body)
        if opt > 2 or path_len > len(body) - 5:
            return 3
        path = os.fsdecode(body[5:5 + path_len])
        source = body[5 + path_len:]
        try:
            code = compile(source, path, "exec", 0, True, opt)
            data = marshal.dumps(code)
        except Exception as exc:  # SyntaxError, ValueError (null bytes), MemoryError, ...
            error_frame(out, exc)
            continue
        if len(data) + 1 > MAX_FRAME:
            error_frame(out, OverflowError("marshalled code exceeds the frame limit"))
            continue
        write_frame(out, "K", data)


if __name__ == "__main__":
    sys.exit(main())
