#!/usr/bin/env python3
"""seeds.py: writes the seed corpora of the fuzz targets (tests/fuzz/corpus/TARGET/), small
well-formed inputs and a few malformed ones for each, so that a run starts from the formats
rather than from nothing. Deterministic: run it again after changing a format, and commit the
result. Checksums (XXH3-64) are left to the targets' fix-up bits (fuzz_common.h), so that this
needs nothing but the standard library.

Usage: tests/fuzz/seeds.py [CORPUS_DIR]   (default: tests/fuzz/corpus)"""
import base64
import hashlib
import json
import os
import shutil
import struct
import sys

MAGIC = bytes.fromhex("a70d0d0a")
SOURCE = b"print('hi')\n"  # the hook target's source: mtime 1700000000, 12 bytes
MTIME = 1700000000
PATH = "/srv/app/mod.py"
MARSHAL = bytes.fromhex("e3000000000000000000000000000000000300000040000000730a0000006500"
                        "640083014401000064015300290272")


def java_hash(data):
    h = 1
    for b in data:
        h = (31 * h + (b - 256 if b > 127 else b)) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def pyc(mtime=MTIME, size=len(SOURCE), magic=MAGIC, flags=0, body=MARSHAL):
    return magic + struct.pack("<III", flags, mtime & 0xFFFFFFFF, size & 0xFFFFFFFF) + body


def entry_json(**over):
    code = pyc()
    doc = {"magic": MAGIC.hex(), "opt": 0, "path": PATH, "mtime": MTIME, "size": len(SOURCE),
           "hash": java_hash(SOURCE), "validation": "hash",
           "digest": hashlib.sha256(SOURCE).hexdigest(), "checksum": "0" * 16,
           "compiler": "cpython-3.11.2", "pyc": base64.b64encode(code).decode()}
    doc.update(over)
    return json.dumps(doc, separators=(",", ":")).encode()


def frame(kind, payload):
    return struct.pack("<I", len(payload) + 1) + kind + payload


def bundle_entry(path, code, mtime=MTIME, size=len(SOURCE), digest=b"\0" * 32):
    p = path.encode()
    return (struct.pack("<IIqQi", len(p), len(code), mtime, size, java_hash(SOURCE)) + digest +
            b"\0" * 8 + p + code)


def bundle(entries, opt=0, count=None, version=2):
    head = b"PCCB" + bytes([version, opt]) + b"\0\0" + MAGIC + struct.pack(
        "<I", len(entries) if count is None else count)
    return head + b"".join(entries) + b"PCCE" + b"\0" * 8


def seeds():
    digest = hashlib.sha256(SOURCE).hexdigest()
    out = {}
    double = struct.pack("<d", 1e300)
    out["params"] = {
        "full": b"\x1f" + struct.pack("<d", 3.0) + (
            "magic=a70d0d0a\nopt=1\npath=%s\nmtime=%d\nsize=12\nhash=%d\ndigest=%s" % (
                PATH, MTIME, java_hash(SOURCE), digest)).encode(),
        "lookup": b"\x1d" + struct.pack("<d", -0.0) + b"magic=a70d0d0a\npath=/a.py\nmtime=0\nsize=0",
        "missing": b"\x1f" + double + b"magic=a70d0d0a\npath=/a.py",
        "range": b"\x00" + struct.pack("<d", 2.0 ** 63) +
                 b"opt=3\nmtime=9223372036854775808\nhash=2147483648",
        "bad": b"\x00" + struct.pack("<d", 0.5) + b"magic=a70d0d0b\npath=relative\nsize=-1\n"
               b"digest=" + b"f" * 32,
        "control": b"\x04" + struct.pack("<d", float("nan")) + b"path=/a\x01b",
    }
    out["pyc_header"] = {
        "header": pyc(),
        "hash_based": pyc(flags=1),
        "pypy": pyc(magic=bytes.fromhex("50010d0a")),
        "short": pyc()[:15],
        "magic_hex": b"A70D0D0A",
        "digest_hex": digest.encode(),
        "checksum_hex": b"0123456789abcdef",
        "base64": base64.b64encode(pyc()),
        "utf8_cut": "caf\u00e9 \u2603".encode()[:-1],
    }
    one = bundle_entry(PATH, pyc())
    two = bundle_entry("/srv/app/pkg/__init__.py", pyc(mtime=1, size=0), mtime=1, size=0)
    out["bundle"] = {
        "fixed_two": b"\x03" + bundle([one, two]),
        "fixed_empty": b"\x03" + bundle([]),
        "unfixed": b"\x00" + bundle([one]),
        "wrong_header": b"\x03" + bundle([bundle_entry("/x.py", pyc(mtime=5))]),
        "count_too_big": b"\x03" + bundle([one], count=2),
        "path_too_long": b"\x03" + bundle([bundle_entry("/" + "a" * 4096, pyc())]),
        "version_1": b"\x03" + bundle([one], version=1),
    }
    out["entry_json"] = {
        "fixed": b"\x01" + entry_json(),
        "fixed_header": b"\x03" + entry_json(mtime=5),
        "unfixed": b"\x00" + entry_json(),
        "huge_mtime": b"\x01" + entry_json(mtime=1e300),
        "fraction": b"\x01" + entry_json(size=12.5),
        "negative": b"\x01" + entry_json(mtime=-1, opt=3),
        "timestamp": b"\x01" + entry_json(validation="timestamp", compiler=None),
    }
    hello = frame(b"H", json.dumps({"magic": "a70d0d0a", "implementation": "cpython",
                                    "version": "3.11.2"}).encode())
    out["worker_frames"] = {
        "code": hello + frame(b"K", MARSHAL),
        "error": hello + frame(b"E", json.dumps({"type": "SyntaxError", "message": "invalid",
                                                 "line": 3, "offset": 7,
                                                 "transient": False}).encode()),
        "huge_line": hello + frame(b"E", b'{"type":"X","message":"m","line":1e300,'
                                         b'"offset":-1e300}'),
        "transient": hello + frame(b"E", b'{"type":"MemoryError","message":"","transient":true}'),
        "two_answers": hello + frame(b"K", b"\x00") + frame(b"E", b'{"type":1}'),
        "bad_hello": frame(b"H", b'{"magic":"a70d0d0a","implementation":"c py","version":"1"}'),
        "hello_not_json": frame(b"H", b"hello"),
        "zero_length": hello + b"\0\0\0\0K",
        "truncated": hello + struct.pack("<I", 100) + b"K" + MARSHAL,
    }
    lookup = {"magic": "a70d0d0a", "path": PATH, "mtime": MTIME, "size": 12}
    out["warm_bodies"] = {
        "profile": b"\x00" + json.dumps({"paths": [PATH, "/srv/app/pkg/__init__.py"]}).encode(),
        "profile_bad": b"\x00" + json.dumps({"paths": [PATH, "relative", 3]}).encode(),
        "batch": b"\x01" + json.dumps({"lookups": [
            lookup, dict(lookup, hash=java_hash(SOURCE), digest=digest), lookup,
            dict(lookup, opt=0), dict(lookup, mtime=str(MTIME)), 7]}).encode(),
        "batch_numbers": b"\x01" + json.dumps({"lookups": [
            dict(lookup, mtime=1e300), dict(lookup, size=-1e300), dict(lookup, mtime=1.5),
            dict(lookup, hash=2147483648), dict(lookup, size=9223372036854775807)]}).encode(),
        "batch_empty": b"\x01" + b'{"lookups":[]}',
        "report": b"\x02" + json.dumps({"fallbacks": {"miss": 3, "server-down": 1}}).encode(),
        "report_bad": b"\x02" + json.dumps({"fallbacks": {"miss": 1e300, "Bad": 1}}).encode(),
    }
    tokens = {"tokens": [
        {"name": "ops", "token": "ops-2c8e4a6f0b1d9e37", "roles": ["read", "compile", "admin"]},
        {"name": "team-a", "token": "team-a-0123456789abcdef", "roles": ["read"],
         "namespace": "a"},
    ]}
    out["token_file"] = {
        "two": json.dumps(tokens).encode(),
        "duplicate": json.dumps({"tokens": [tokens["tokens"][0]] * 2}).encode(),
        "short_token": b'{"tokens":[{"name":"x","token":"short","roles":["read"]}]}',
        "bad_role": b'{"tokens":[{"name":"x","token":"0123456789abcdef","roles":["root"]}]}',
        "bad_namespace": b'{"tokens":[{"name":"x","token":"0123456789abcdef","roles":[],'
                         b'"namespace":"A B"}]}',
        "empty": b'{"tokens":[]}',
    }
    raw_headers = ("X-Pycached-Outcome: hit\r\nX-Pycached-Digest: %s\r\nX-Pycached-Hash: %d\r\n"
                   "X-Pycached-Validation: hash\r\nX-Pycached-Compiler: cpython-3.11.2\r\n"
                   "Content-Length: %d\r\n" % (digest, java_hash(SOURCE), len(pyc()))).encode()
    out["hook_response"] = {
        "raw_hit": b"\x06\x00" + raw_headers + b"\r\n" + pyc(),
        "raw_hit_unchecked": b"\x02\x00" + raw_headers + b"\r\n" + pyc(),
        "raw_wrong_mtime": b"\x06\x00" + raw_headers + b"\r\n" + pyc(mtime=1),
        "json_hit": b"\x07\x00" + b"Content-Type: application/json\r\n\r\n" + entry_json(),
        "miss": b"\x04\x0d" + b"Content-Type: application/json\r\n\r\n" +
                b'{"error":"miss","message":"nothing cached","reason":"absent"}',
        "compile_error": b"\x04\x10\r\n\r\n" + json.dumps({
            "error": "compile-error", "message": "invalid syntax", "type": "SyntaxError",
            "line": 1e300, "offset": -3}).encode(),
        "unauthorized": b"\x04\x0b\r\n\r\n" + b'{"error":"unauthorized"}',
        "busy": b"\x04\x12Retry-After: 1\r\n\r\n" + b'{"error":"busy"}',
        # bit 3: whole HTTP responses through client/http1.c's parser (bit 1: the checksum)
        "http_hit": b"\x0e" + b"HTTP/1.1 200 OK\r\n" + raw_headers + b"\r\n" + pyc(),
        "http_chunked_hit": b"\x0e" + b"HTTP/1.1 200 OK\r\n" +
                            raw_headers.replace(b"Content-Length: %d" % len(pyc()),
                                                b"Transfer-Encoding: chunked") +
                            b"\r\n%x;ext=1\r\n" % 10 + pyc()[:10] + b"\r\n" +
                            b"%X\r\n" % (len(pyc()) - 10) + pyc()[10:] +
                            b"\r\n0\r\nX-Trailer: t\r\n\r\n",
        "http_close_delimited": b"\x0e" + b"HTTP/1.0 200 OK\r\n" +
                                raw_headers.replace(b"Content-Length: %d\r\n" % len(pyc()),
                                                    b"") + b"\r\n" + pyc(),
        "http_continue_then_miss": b"\x0c" + b"HTTP/1.1 100 Continue\r\n\r\n" +
                                   b"HTTP/1.1 404 Not Found\r\nContent-Length: 61\r\n"
                                   b"Connection: close\r\n\r\n" +
                                   b'{"error":"miss","message":"nothing cached","reason":"absent"}',
        "http_two_lengths": b"\x0e" + b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                            b"Content-Length: 4\r\n\r\nabcd",
        # a zstd body (`zstd -3 --no-check` of the miss error above, as a file: the frame states
        # its size), decompressed by client.c
        "http_zstd_miss": b"\x0c" + b"HTTP/1.1 404 Not Found\r\nContent-Encoding: zstd\r\n"
                          b"Content-Length: 70\r\n\r\n" + bytes.fromhex(
                              "28b52ffd203de901007b226572726f72223a226d697373222c226d657373616765"
                              "223a226e6f7468696e6720636163686564222c22726561736f6e223a2261627365"
                              "6e74227d"),
    }
    return out


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                              "corpus")
    for target, files in seeds().items():
        directory = os.path.join(root, target)
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)
        for name, data in files.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)
    print("seeds written under %s" % root)


if __name__ == "__main__":
    main()
