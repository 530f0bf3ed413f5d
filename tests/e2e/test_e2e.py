"""End-to-end tests of pycached: a real server on a loopback port, real LMDB, real compiler
workers, the real pycachectl, and pycs loaded by the reference interpreter (/usr/bin/python3).

Run by meson (`meson test e2e`), which passes the paths of the built programs in the
environment: PCC_PYCACHED, PCC_PYCACHECTL, PCC_REFERENCE_PYTHON. Every loop here is bounded and
every process started is stopped by pid.
"""
import base64
import concurrent.futures
import hashlib
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

PYCACHED = os.environ.get("PCC_PYCACHED", "build/server/pycached")
PYCACHECTL = os.environ.get("PCC_PYCACHECTL", "build/client/pycachectl")
PYTHON = os.environ.get("PCC_REFERENCE_PYTHON", "/usr/bin/python3")
MAGIC = "a70d0d0a"  # CPython 3.11, the reference interpreter's magic


def java_hash(data: bytes) -> int:
    """Java Arrays.hashCode(byte[]): an independent implementation to check the server's."""
    h = 1
    for b in data:
        h = (31 * h + (b - 256 if b > 127 else b)) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client on the unix socket at path; Host: localhost, as curl --unix-socket sends."""

    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def stop_process(proc, timeout=10):
    """SIGTERM to proc unless it has ended, then wait for it timeout seconds, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Server:
    """A pycached process, on 127.0.0.1 with an ephemeral port unless args say otherwise
    (port_args come first; env: the server's environment, by default this one's). host, port
    and url (http:// or, with --tls-cert, https://) are the ones the server says it listens on;
    request() speaks TLS to an https:// one with the ssl.SSLContext in `context`. On a unix
    socket (--listen unix:PATH) unix_path is its PATH, url "unix:PATH", and requests go over the
    socket; with a TCP address as well (--listen unix:PATH,HOST) tcp_url and port are that
    one's."""

    def __init__(self, workdir, *args, env=None, port_args=("--port", "0")):
        self.store = os.path.join(workdir, "store")
        self.log = open(os.path.join(workdir, "server.log"), "ab")
        self.proc = subprocess.Popen(
            [PYCACHED, *port_args, "--store", self.store, *args], env=env,
            stdout=subprocess.PIPE, stderr=self.log, bufsize=0)  # unbuffered: select sees all
        line, deadline = "", time.monotonic() + 30
        for _ in range(20):  # start-up notes may come first (e.g. retired magics)
            ready, _, _ = select.select([self.proc.stdout], [], [],
                                        max(0, deadline - time.monotonic()))
            line = self.proc.stdout.readline().decode() if ready else ""
            if not line or " listening on http" in line or " listening on unix:" in line:
                break
        self.unix_path = self.tcp_url = None
        if " listening on unix:" in line:
            self.unix_path = line.split(" listening on unix:")[1].split()[0]
            self.host, self.port, self.url = "localhost", None, "unix:" + self.unix_path
            if " and http" in line:  # a TCP address too: its url in tcp_url, its port in port
                self.tcp_url = line.split(" and ")[1].split()[0]
                self.port = int(self.tcp_url.rpartition(":")[2])
            return
        if " listening on http" not in line:
            self.stop()
            raise RuntimeError("pycached did not start: %r" % line)
        # http://127.0.0.1:N, https://[::1]:N
        scheme, _, address = line.split(" listening on ")[1].split()[0].partition("://")
        host, _, port = address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.url = "%s://%s" % (scheme, address)
        self.context = None

    def request(self, method, path, body=None, headers=None, timeout=30):
        """One request. Like every real client, it sends X-Pycached-Client (which the server
        wants on state-changing requests) unless headers name it; None leaves it out."""
        headers = dict(headers or {})
        headers.setdefault("X-Pycached-Client", "e2e")
        headers = {k: v for k, v in headers.items() if v is not None}
        if self.unix_path:
            conn = UnixHTTPConnection(self.unix_path, timeout)
        elif self.url.startswith("https://"):
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=self.context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            try:
                conn.request(method, path, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered (413) before the whole body was sent: read it
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def json(self, method, path, body=None, headers=None):
        status, _, data = self.request(method, path, body, headers)
        return status, json.loads(data)

    def stats(self):
        status, stats = self.json("GET", "/v1/stats")
        assert status == 200
        return stats

    def worker_pids(self):
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self, timeout=30):
        """SIGTERM, then wait (bounded); returns the exit code."""
        stop_process(self.proc, timeout)
        self.proc.stdout.close()
        self.log.close()
        return self.proc.returncode


def source_params(path, opt=0, with_hash=True, with_digest=False, mtime=None):
    data = open(path, "rb").read()
    st = os.stat(path)
    params = {"magic": MAGIC, "opt": opt, "path": path,
              "mtime": int(st.st_mtime) if mtime is None else mtime, "size": len(data)}
    if with_hash:
        params["hash"] = java_hash(data)
    if with_digest:
        params["digest"] = hashlib.sha256(data).hexdigest()  # an independent SHA-256
    return {k: v for k, v in params.items() if v is not None}


def query(params):
    return urllib.parse.urlencode(params)


def raw_exchange(port, request, timeout=5, host="127.0.0.1"):
    """Sends request (bytes, as they are: NULs, bare LFs) on a connection of its own and returns
    all the server sends until it closes the connection."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    finally:
        sock.close()


def raw_json(port, request, host="127.0.0.1"):
    """raw_exchange for one request answered with JSON (or nothing): (status, decoded body)."""
    head, _, body = raw_exchange(port, request, host=host).partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if body.startswith(b"{") else body


def unzstd(data):
    """What a zstd frame decompresses to (the zstd tool)."""
    return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True,
                          timeout=30).stdout


def make_tree(root, files):
    """Writes files ({relative path: text}) under root, making directories; returns root."""
    for name, text in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return root


class SharedServerCase(unittest.TestCase):
    """A suite with one server (cls.server) and one temporary directory (cls.tmp) per class; the
    server must exit 0 on SIGTERM."""

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        if code != 0:
            raise AssertionError("pycached exited with %r on SIGTERM" % code)


class E2E(SharedServerCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="pcc-e2e-")
        cls.root = os.path.join(cls.tmp, "root")
        cls.outside = os.path.join(cls.tmp, "outside")
        os.makedirs(cls.root)
        os.makedirs(cls.outside)
        cls.server = Server(cls.tmp, "--workers", "2", "--compile-timeout", "1",
                            "--source-root", cls.root, "--max-source", "8M")


    def write(self, name, text, directory=None):
        path = os.path.join(directory or self.root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
        return path

    def compile(self, path, opt=0, body=None, extra=None, headers=None):
        params = source_params(path, opt, with_hash=False)
        del params["size"]
        params.update(extra or {})
        data = open(path, "rb").read() if body is None else body
        return self.server.request("POST", "/v1/compile?" + query(params), data, headers)

    def lookup(self, path, **kw):
        return self.server.json("GET", "/v1/code?" + query(source_params(path, **kw)))

    def run_python(self, *args, cwd=None, env=None):
        run_env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
        run_env.update(env or {})
        return subprocess.run([PYTHON, *args], capture_output=True, text=True, cwd=cwd,
                              env=run_env, timeout=60)

    def install_pyc(self, path, pyc, opt=0):
        """Writes a served pyc where CPython's own loader looks for it."""
        directory, name = os.path.split(path)
        tag = "cpython-311" + ("" if opt == 0 else ".opt-%d" % opt)
        cache = os.path.join(directory, "__pycache__")
        os.makedirs(cache, exist_ok=True)
        target = os.path.join(cache, "%s.%s.pyc" % (name[:-3], tag))
        with open(target, "wb") as f:
            f.write(pyc)
        return target

    # ---- the main path: compile through the CLI, hit through GET, load with CPython ----

    def test_cli_compile_then_get_then_cpython_loads_it(self):
        app = os.path.join(self.tmp, "app1")
        path = self.write("shapes.py", '"""Shapes."""\nimport math\n\n'
                          'def area(r):\n    return round(math.pi * r * r, 6)\n\n'
                          'NAMES = [n.upper() for n in ("a", "b")]\n', app)
        env = dict(os.environ, PYCACHED_URL=self.server.url)
        out = subprocess.run([PYCACHECTL, "compile", path], capture_output=True, text=True,
                             env=env, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(out.stdout.startswith("compiled"), out.stdout)
        again = subprocess.run([PYCACHECTL, "compile", path], capture_output=True, text=True,
                               env=env, timeout=60)
        self.assertTrue(again.stdout.startswith("stored"), again.stdout)
        status, entry = self.lookup(path)
        self.assertEqual(status, 200, entry)
        self.assertEqual(entry["validation"], "hash")
        self.assertEqual(entry["hash"], java_hash(open(path, "rb").read()))
        pyc = base64.b64decode(entry["pyc"])
        self.install_pyc(path, pyc)
        code = ("import shapes, sys; print(shapes.area(2), shapes.NAMES, shapes.__doc__);"
                "print(shapes.__cached__)")
        served = self.run_python("-v", "-c", code, cwd=app)
        self.assertEqual(served.returncode, 0, served.stderr)
        self.assertIn("code object from '%s/__pycache__/shapes.cpython-311.pyc'" % app,
                      served.stderr)
        shutil.rmtree(os.path.join(app, "__pycache__"))
        local = self.run_python("-B", "-c", code, cwd=app)
        self.assertEqual(served.stdout.splitlines()[0], local.stdout.splitlines()[0])
        self.assertEqual(served.stdout.splitlines()[0], "12.566371 ['A', 'B'] Shapes.")

    def test_cli_get_writes_a_pyc_cpython_accepts(self):
        app = os.path.join(self.tmp, "app2")
        path = self.write("greet.py", "def hello(n):\n    return 'hello ' + n\n", app)
        env = dict(os.environ, PYCACHED_URL=self.server.url)
        miss = subprocess.run([PYCACHECTL, "get", path], capture_output=True, env=env,
                              timeout=60)
        self.assertEqual(miss.returncode, 1, "a get before any compile is a miss (exit 1)")
        subprocess.run([PYCACHECTL, "compile", path], check=True, capture_output=True, env=env,
                       timeout=60)
        target = os.path.join(app, "__pycache__", "greet.cpython-311.pyc")
        os.makedirs(os.path.dirname(target))
        got = subprocess.run([PYCACHECTL, "get", path, "-o", target], capture_output=True,
                             text=True, env=env, timeout=60)
        self.assertEqual(got.returncode, 0, got.stderr)
        run = self.run_python("-v", "-c", "import greet; print(greet.hello('you'))", cwd=app)
        self.assertEqual(run.stdout.strip(), "hello you")
        self.assertIn("code object from '%s'" % target, run.stderr)

    def test_raw_pyc_form_matches_json_form(self):
        path = self.write("raw/m.py", "X = 1\n")
        self.assertEqual(self.compile(path)[0], 200)
        _, entry = self.lookup(path)
        status, headers, body = self.server.request(
            "GET", "/v1/code?" + query(source_params(path)),
            headers={"Accept": "application/x-python-pyc"})
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "application/x-python-pyc")
        self.assertEqual(body, base64.b64decode(entry["pyc"]))
        self.assertEqual(headers["X-Pycached-Checksum"], entry["checksum"])
        self.assertEqual(headers["X-Pycached-Digest"], entry["digest"])
        self.assertEqual(headers["ETag"], '"%s-%s"' % (entry["digest"], entry["checksum"]))
        self.assertEqual(body[:4], bytes.fromhex(MAGIC))
        self.assertEqual(int.from_bytes(body[8:12], "little"), int(os.stat(path).st_mtime))
        self.assertEqual(int.from_bytes(body[12:16], "little"), os.stat(path).st_size)

    def test_zstd_answers_when_asked_for(self):
        """Accept-Encoding: zstd (and not zstd;q=0): a /v1/code or /v1/compile answer over
        PCC_ZSTD_ANSWER_MIN bytes comes compressed and decompresses to exactly the plain body
        (its checksum over the pyc); a client that does not ask, refuses with q=0, or a body
        under the threshold gets the plain body. Every answer says Vary: Accept-Encoding."""
        source = "".join("def f%d(x):\n    return x * %d + len('%s')\n" % (i, i, "y" * i)
                         for i in range(60))
        path = self.write("zstd/big.py", source)
        small = self.write("zstd/small.py", "X = 1\n")
        raw = {"Accept": "application/x-python-pyc"}
        zstd = dict(raw, **{"Accept-Encoding": "gzip, zstd;q=0.5"})
        status, headers, compiled = self.server.request(
            "POST", "/v1/compile?" + query(source_params(path)), source.encode(), headers=zstd)
        self.assertEqual((status, headers["Content-Encoding"]), (200, "zstd"))
        url = "/v1/code?" + query(source_params(path))
        status, plain_headers, plain = self.server.request("GET", url, headers=raw)
        self.assertEqual((status, plain_headers.get("Content-Encoding")), (200, None))
        self.assertEqual(plain_headers["Vary"], "Accept-Encoding")
        self.assertGreater(len(plain), 1024)
        self.assertEqual(unzstd(compiled), plain)
        status, headers, packed = self.server.request("GET", url, headers=zstd)
        self.assertEqual((status, headers["Content-Encoding"], headers["Vary"]),
                         (200, "zstd", "Accept-Encoding"))
        self.assertLess(len(packed), len(plain) * 0.9)
        self.assertEqual(unzstd(packed), plain)
        self.assertEqual(headers["X-Pycached-Checksum"], plain_headers["X-Pycached-Checksum"])
        self.assertTrue(headers["ETag"].endswith('-zstd"'), headers["ETag"])
        # the JSON form too
        status, headers, packed = self.server.request("GET", url, headers={
            "Accept-Encoding": "zstd"})
        self.assertEqual((status, headers["Content-Encoding"]), (200, "zstd"))
        self.assertEqual(base64.b64decode(json.loads(unzstd(packed))["pyc"]), plain)
        for refusal in ("zstd;q=0", "gzip, zstd; q=0.000", "gzip", "zstdx", ""):
            status, headers, body = self.server.request("GET", url, headers=dict(
                raw, **{"Accept-Encoding": refusal}))
            self.assertEqual((status, headers.get("Content-Encoding"), body),
                             (200, None, plain), refusal)
        self.assertEqual(self.compile(small)[0], 200)
        status, headers, body = self.server.request(
            "GET", "/v1/code?" + query(source_params(small)), headers=zstd)
        self.assertEqual((status, headers.get("Content-Encoding")), (200, None))
        self.assertLess(len(body), 1024)

    # ---- validation ---------------------------------------------------------------------

    def test_changed_mtime_and_changed_content_are_misses(self):
        path = self.write("val/m.py", "A = 1\n")
        self.assertEqual(self.compile(path)[0], 200)
        self.assertEqual(self.lookup(path)[0], 200)
        st = os.stat(path)
        status, body = self.lookup(path, mtime=int(st.st_mtime) + 1)
        self.assertEqual((status, body["error"], body["reason"]), (404, "miss", "stale"))
        # same size, same mtime, different bytes: only the hash tells
        with open(path, "wb") as f:
            f.write(b"A = 2\n")
        os.utime(path, (st.st_atime, st.st_mtime))
        status, body = self.lookup(path)
        self.assertEqual((status, body["reason"]), (404, "stale"))
        # without a hash the server cannot tell, and says the lookup was timestamp-only
        status, body = self.lookup(path, with_hash=False)
        self.assertEqual((status, body["validation"]), (200, "timestamp"))
        status, body = self.lookup(self.write("val/never.py", "B = 1\n"))
        self.assertEqual((status, body["reason"]), (404, "absent"))

    def test_same_source_at_another_path_is_stored_without_compiling(self):
        # A lookup never writes (issue 9: it could re-point another client's path): the other
        # path misses, even naming the digest; its compile is answered from the stored blob.
        first = self.write("dup/a/mod.py", "V = 'shared'\n")
        self.assertEqual(self.compile(first)[0], 200)
        second = self.write("dup/b/mod.py", "V = 'shared'\n")
        before = self.server.stats()["compiles"]
        self.assertEqual(self.lookup(second)[0], 404)
        status, body = self.lookup(second, with_digest=True)
        self.assertEqual((status, body["error"]), (404, "miss"), "a lookup adopted a path")
        status, headers, data = self.compile(second)
        self.assertEqual((status, headers.get("X-Pycached-Outcome")), (200, "stored"), data)
        status, body = self.lookup(second, with_digest=True)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["digest"], source_params(first, with_digest=True)["digest"])
        self.assertEqual(self.server.stats()["compiles"], before)

    def test_another_magic_is_unsupported(self):
        path = self.write("magic/m.py", "X = 1\n")
        params = source_params(path)
        params["magic"] = "50010d0a"  # Debian's pypy3
        before = self.server.stats()
        status, body = self.server.json("GET", "/v1/code?" + query(params))
        self.assertEqual((status, body["error"]), (422, "unsupported-magic"))
        self.assertEqual(body["magics"], [MAGIC])
        status, _, data = self.server.request("POST", "/v1/compile?" + query(params), b"X = 1\n")
        self.assertEqual((status, json.loads(data)["error"]), (422, "unsupported-magic"))
        # counted as what it is, not as an absent miss (that would read as a cold cache)
        after = self.server.stats()
        self.assertEqual(after["misses"]["unsupported_magic"] -
                         before["misses"]["unsupported_magic"], 2)
        self.assertEqual(after["misses"]["absent"], before["misses"]["absent"])

    def test_bad_parameters_are_named(self):
        good = {"magic": MAGIC, "path": "/x/m.py", "mtime": "1", "size": "1"}
        cases = [("magic", "a70d0d"), ("magic", "zz0d0d0a"), ("opt", "3"), ("path", "rel.py"),
                 ("mtime", "-1"), ("mtime", "1.5"), ("size", "x"), ("hash", "2147483648"),
                 ("digest", "abc"), ("mtime", None)]
        for name, value in cases:
            params = dict(good)
            if value is None:
                del params[name]
            else:
                params[name] = value
            status, body = self.server.json("GET", "/v1/code?" + query(params))
            self.assertEqual((status, body["error"], body["param"]), (400, "bad-parameter", name),
                             (name, value))
        status, body = self.server.json("GET", "/v1/code?" + query(dict(good, path="/" + "p" * 4096)))
        self.assertEqual((status, body["param"]), (400, "path"))

    def test_query_claims_must_match_the_body(self):
        path = self.write("claims/m.py", "C = 3\n")
        for name, value in (("size", 99), ("hash", 1), ("digest", "0" * 64)):
            status, _, data = self.compile(path, extra={name: value})
            body = json.loads(data)
            self.assertEqual((status, body["error"], body["param"]), (409, "mismatch", name))

    def test_opt_levels_are_separate_entries(self):
        app = os.path.join(self.tmp, "app3")
        path = self.write("docs.py", 'def f():\n    "the doc"\n    assert False, "boom"\n', app)
        for opt in (0, 2):
            status, _, data = self.compile(path, opt=opt)
            self.assertEqual(status, 200)
            entry = json.loads(data)
            self.assertEqual(entry["opt"], opt)
            self.install_pyc(path, base64.b64decode(entry["pyc"]), opt)
        flags = {0: [], 2: ["-OO"]}
        for opt, expected in ((0, "the doc AssertionError"), (2, "None ok")):
            code = ("import docs\ntry:\n    docs.f(); r = 'ok'\nexcept AssertionError:\n"
                    "    r = 'AssertionError'\nprint(docs.f.__doc__, r)")
            run = self.run_python(*flags[opt], "-v", "-c", code, cwd=app)
            self.assertEqual(run.stdout.strip(), expected, run.stderr[-2000:])
            self.assertIn("code object from", run.stderr)
        self.assertEqual(self.lookup(path, opt=1)[0], 404)

    def test_coding_declaration_and_bom(self):
        app = os.path.join(self.tmp, "app4")
        latin = self.write("latin.py", "# -*- coding: latin-1 -*-\nS = 'caf\xe9'\n".encode(
            "latin-1"), app)
        bom = self.write("bommed.py", b"\xef\xbb\xbfT = '\xc3\xa9t\xc3\xa9'\n", app)
        for path in (latin, bom):
            status, _, data = self.compile(path)
            self.assertEqual(status, 200, data)
            self.install_pyc(path, base64.b64decode(json.loads(data)["pyc"]))
        run = self.run_python("-c", "import latin, bommed; print(ascii(latin.S), ascii(bommed.T))",
                              cwd=app)
        self.assertEqual(run.stdout.strip(), "'caf\\xe9' '\\xe9t\\xe9'")

    def test_syntax_error_is_structured_and_not_recompiled(self):
        path = self.write("broken/bad.py", "x = 1\ndef f(:\n    pass\n")
        before = self.server.stats()
        for _ in range(2):
            status, _, data = self.compile(path)
            body = json.loads(data)
            self.assertEqual((status, body["error"], body["type"]), (422, "compile-error",
                                                                     "SyntaxError"))
        ref = self.run_python("-c", "import sys\ntry:\n compile(open(sys.argv[1],'rb').read(), "
                              "sys.argv[1], 'exec')\nexcept SyntaxError as e:\n"
                              " print(e.msg, e.lineno, e.offset, sep='|')", path)
        self.assertEqual("%s|%d|%d" % (body["message"], body["line"], body["offset"]),
                         ref.stdout.strip())
        after = self.server.stats()
        self.assertEqual(after["compile_errors"] - before["compile_errors"], 1)
        status, body = self.lookup(path)
        self.assertEqual((status, body["error"], body["line"]), (422, "compile-error", 2))

    def test_empty_source_file(self):
        path = self.write("empty/__init__.py", "")
        status, _, data = self.compile(path, extra={"size": 0})
        self.assertEqual(status, 200, data)
        self.assertEqual(json.loads(data)["size"], 0)

    # ---- the server reading sources itself, confined to the roots -----------------------

    def test_source_root_reads_and_confines(self):
        inside = self.write("served/m.py", "IN = 1\n")
        status, _, data = self.compile(inside, body=b"")
        self.assertEqual(status, 200, data)
        self.assertEqual(json.loads(data)["size"], 7)

        secret = self.write("secret.py", "TOKEN = 's3cr3t'\n", self.outside)
        dotdot = os.path.join(self.root, "..", "outside", "secret.py")
        link = os.path.join(self.root, "link.py")
        os.symlink(secret, link)
        linkdir = os.path.join(self.root, "linkdir")
        os.symlink(self.outside, linkdir)
        for path in (secret, dotdot, link, os.path.join(linkdir, "secret.py"), "/etc/passwd"):
            params = {"magic": MAGIC, "path": path, "mtime": int(os.stat(path).st_mtime)}
            status, _, data = self.server.request("POST", "/v1/compile?" + query(params), b"")
            self.assertEqual((status, json.loads(data)["error"]), (403, "forbidden"), path)
            self.assertNotIn(b"s3cr3t", data)
        params = {"magic": MAGIC, "path": inside, "mtime": int(os.stat(inside).st_mtime) + 5}
        status, _, data = self.server.request("POST", "/v1/compile?" + query(params), b"")
        self.assertEqual((status, json.loads(data)["param"]), (409, "mtime"))

    def test_oversize_body_is_413_and_server_keeps_serving(self):
        params = {"magic": MAGIC, "path": "/big/m.py", "mtime": 1}
        status, _, data = self.server.request("POST", "/v1/compile?" + query(params),
                                              b"#" * (8 * 1024 * 1024 + 1))
        self.assertEqual((status, json.loads(data)["error"]), (413, "too-large"))
        path = self.write("after413.py", "OK = 1\n")
        self.assertEqual(self.compile(path)[0], 200)

    def test_cli_hears_the_413_of_a_large_upload(self):
        # The server answers 413 from the headers and closes; libpycached sent its bodies without
        # waiting (Expect: off), so the upload met a reset and the CLI said "Send failure: Broken
        # pipe" instead of the refusal. A large body now waits for 100 Continue.
        path = self.write("huge_upload.py", "x = 1\n" * (2 * 1024 * 1024))  # 12 MiB: > 8M, < 16M
        env = dict(os.environ, PYCACHED_URL=self.server.url)
        for attempt in range(4):
            out = subprocess.run([PYCACHECTL, "compile", path], capture_output=True, text=True,
                                 env=env, timeout=60)
            self.assertNotEqual(out.returncode, 0)
            self.assertIn("too-large", out.stderr, "attempt %d: %s" % (attempt, out.stderr))
        self.assertEqual(self.server.json("GET", "/healthz")[0], 200)

    def test_declared_oversize_body_is_413_before_the_body_is_sent(self):
        # Only the headers go out: the answer must come without waiting for a byte of the body.
        limits = {"/v1/compile?" + query({"magic": MAGIC, "path": "/big/m.py", "mtime": 1}):
                  8 * 1024 * 1024,
                  "/v1/batch": 1024 * 1024,
                  "/v1/profile?" + query({"magic": MAGIC, "profile": "p"}): 4 * 1024 * 1024}
        for target, limit in limits.items():
            for length, expected in ((limit + 1, 413), (limit, None)):
                sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=3)
                try:
                    sock.sendall(("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pycached-Client: e2e"
                                  "\r\nContent-Length: %d\r\n\r\n" % (target, length)).encode())
                    try:
                        head = sock.recv(4096)
                    except socket.timeout:
                        head = None  # still waiting for the body, as it should at the limit
                finally:
                    sock.close()
                if expected is None:
                    self.assertIsNone(head, (target, length))
                else:
                    self.assertIsNotNone(head, "no answer before the body: %s" % target)
                    self.assertTrue(head.startswith(b"HTTP/1.1 413"), head[:80])
                    self.assertIn(b'"too-large"', head)
        self.assertEqual(self.server.json("GET", "/healthz")[0], 200)

    def test_numbers_out_of_range_in_a_batch_are_bad_parameters(self):
        # issue 11: "mtime": 1e300 was converted to int64_t unchecked (undefined behaviour; the
        # sanitizer build ended the server). Each such lookup is its own bad-parameter result.
        path = self.write("batch_numbers.py", "N = 1\n")
        self.assertEqual(self.compile(path)[0], 200)
        good = source_params(path, with_hash=False)
        bad = [("mtime", 1e300), ("mtime", -1e300), ("mtime", 1.5), ("mtime", 2.0 ** 63),
               ("size", 1e300), ("hash", 1e300), ("opt", 1e300)]
        lookups = [dict(good, **{field: value}) for field, value in bad] + [good]
        status, _, data = self.server.request("POST", "/v1/batch",
                                              json.dumps({"lookups": lookups}).encode(),
                                              {"Content-Type": "application/json"})
        self.assertEqual(status, 200, data[:200])
        results = json.loads(data)["results"]
        self.assertEqual(len(results), len(lookups))
        for (field, value), result in zip(bad, results):
            self.assertEqual((result.get("error"), result.get("param")),
                             ("bad-parameter", field), (field, value, result))
        self.assertIn("pyc", results[-1])  # the good lookup is still a hit
        # a report's count and a body's number alike; the server goes on serving
        status, _, data = self.server.request(
            "POST", "/v1/report?" + query({"magic": MAGIC}),
            json.dumps({"fallbacks": {"miss": 1e300}}).encode(),
            {"Content-Type": "application/json"})
        self.assertEqual((status, json.loads(data)["param"]), (400, "fallbacks"))
        self.assertEqual(self.server.json("GET", "/healthz")[0], 200)
        self.assertEqual(self.lookup(path, with_hash=False)[0], 200)

    def test_nul_bytes_in_headers_and_query_are_refused(self):
        # issue 11: a value was read cut at a NUL byte (libmicrohttpd keeps the rest), so the
        # server and a proxy before it could read two different values. Refused: 400.
        path = self.write("nul.py", "N = 1\n")
        self.assertEqual(self.compile(path)[0], 200)
        target = "/v1/code?" + query(source_params(path, with_hash=False))
        line = ("GET %s HTTP/1.1\r\n" % target).encode()
        host = b"Host: 127.0.0.1\r\n"
        end = b"Connection: close\r\n\r\n"
        self.assertEqual(raw_json(self.server.port, line + host + end)[0], 200)
        for request, param in (
                (line + b"Host: 127.0.0.1\0.evil.example\r\n" + end, "Host"),
                (line + host + b"Accept: application/json\0junk\r\n" + end, "Accept"),
                (line + host + b"X-Pycached-Client: e2e\0\r\n" + end, "X-Pycached-Client"),
                (line + host + b"Connection: close\0x\r\n\r\n", "Connection"),
                (line.replace(b"&mtime=", b"%00&mtime=") + host + end, "path"),
                (b"GET /healthz HTTP/1.0\nHost: 127.0.0.1\nX-A: b\0c\n\n", "X-A")):
            status, body = raw_json(self.server.port, request)
            self.assertEqual((status, body["error"], body["param"]),
                             (400, "bad-parameter", param), request)
        # kept-alive and pipelined requests without NULs are still served
        data = raw_exchange(self.server.port, line + host + b"\r\n" + line + host + b"X-Pad: " +
                            b"p" * 20000 + b"\r\n\r\n" + line + host + end)
        self.assertEqual(data.count(b"HTTP/1.1 200 OK"), 3, data[:300])
        self.assertEqual(self.server.json("GET", "/healthz")[0], 200)

    def test_limits_are_listed_and_documented(self):
        run = subprocess.run([PYCACHED, "--limits"], capture_output=True, text=True, timeout=30)
        self.assertEqual(run.returncode, 0, run.stderr)
        printed = {}
        for line in run.stdout.splitlines()[1:]:
            name, value, option = line.split()[:3]
            printed[name] = (int(value), None if option == "-" else option)
        self.assertIn("PCC_FRAME_MAX", printed)
        design = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                              "DESIGN.md")
        with open(design) as f:
            text = f.read()
        section = text.split("\n## Limits\n", 1)[1].split("\n## ", 1)[0]
        documented = {}
        for line in section.splitlines():
            cells = [c.strip(" `") for c in line.strip().strip("|").split("|")]
            if len(cells) >= 3 and cells[0].startswith("PCC_"):
                documented[cells[0]] = (int(cells[1].replace(",", "")),
                                        None if cells[2] in ("", "-") else cells[2])
        self.assertEqual(documented, printed, "docs/DESIGN.md, Limits, and pycached --limits")
        # the options named there exist, with that default in --help
        helptext = subprocess.run([PYCACHED, "--help"], capture_output=True, text=True).stdout
        for name, (value, option) in printed.items():
            if option:
                self.assertIn(option + " ", helptext, name)

    def test_http_errors_are_json(self):
        status, headers, data = self.server.request("DELETE", "/v1/code")
        self.assertEqual((status, json.loads(data)["error"]), (405, "method-not-allowed"))
        self.assertEqual(headers["Allow"], "GET")
        status, _, data = self.server.request("GET", "/v2/nothing")
        self.assertEqual((status, json.loads(data)["error"]), (404, "not-found"))
        status, body = self.server.json("GET", "/healthz")
        self.assertEqual((status, body["status"]), (200, "ok"))

    def test_stats_shape(self):
        stats = self.server.stats()
        for key in ("requests", "hits", "compiles", "compile_errors", "corruptions", "uptime"):
            self.assertIsInstance(stats[key], (int, float), key)
        self.assertEqual(set(stats["misses"]), {"absent", "stale", "unsupported_magic"})
        lookups = stats["hits"] + sum(stats["misses"].values())
        if lookups:
            self.assertAlmostEqual(stats["hit_ratio"], stats["hits"] / lookups)
        for compiler in stats["compilers"]:
            self.assertLessEqual(compiler["busy"], compiler["workers"])
            self.assertLessEqual(compiler["alive"], compiler["workers"])
        self.assertEqual(stats["compilers"][0]["magic"], MAGIC)
        self.assertTrue(stats["compilers"][0]["name"].startswith("cpython-3.11"))
        self.assertGreaterEqual(stats["store"]["map_size"], 1 << 30)

    # ---- parse once, and failures of the compiler ---------------------------------------

    def test_32_concurrent_compiles_of_one_module_compile_once(self):
        # big enough that requests arrive while it compiles, small enough to stay well under the
        # shared server's 1 s --compile-timeout on a loaded machine in the sanitizer build
        source = "DATA = [" + ",".join(str(i) for i in range(40000)) + "]\n"
        path = self.write("hot/big.py", source)
        before = self.server.stats()["compiles"]

        def one(_):
            return self.compile(path)

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            results = list(pool.map(one, range(32)))
        self.assertEqual([r[0] for r in results], [200] * 32)
        checksums = {json.loads(r[2])["checksum"] for r in results}
        self.assertEqual(len(checksums), 1)
        outcomes = sorted(r[1]["X-Pycached-Outcome"] for r in results)
        self.assertEqual(outcomes.count("compiled"), 1, outcomes)
        self.assertEqual(self.server.stats()["compiles"] - before, 1)

    def test_compile_timeout_kills_the_worker_and_server_recovers(self):
        path = self.write("slow/huge.py", "H = [" + ",".join(str(i) for i in range(1000000)) + "]\n")
        restarts = self.server.stats()["compilers"][0]["restarts"]
        t0 = time.monotonic()
        status, _, data = self.compile(path)
        self.assertEqual((status, json.loads(data)["error"]), (504, "compile-timeout"))
        self.assertLess(time.monotonic() - t0, 10)
        self.assertGreater(self.server.stats()["compilers"][0]["restarts"], restarts)
        ok = self.write("slow/after.py", "A = 1\n")
        self.assertEqual(self.compile(ok)[0], 200)


class ServersCase(unittest.TestCase):
    """Tests that start servers of their own (self.start), in one temporary directory
    (self.tmp, readable by the workers' uid); every server is stopped at the end."""
    prefix = "pcc-e2e-"

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix=self.prefix)
        os.chmod(self.tmp, 0o755)
        self.servers = []

    def tearDown(self):
        for server in self.servers:
            server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, *args, workdir=None, **kwargs):
        server = Server(workdir or self.tmp, *args, **kwargs)
        self.servers.append(server)
        return server


class Lifecycle(ServersCase):
    """Tests that need their own server: restarts, killed workers, shutdown."""
    prefix = "pcc-e2e-life-"

    def test_entries_survive_a_restart(self):
        path = os.path.join(self.tmp, "keep.py")
        with open(path, "w") as f:
            f.write("KEEP = 1\n")
        server = self.start("--workers", "1")
        params = source_params(path, with_hash=False)
        status, _, _ = server.request("POST", "/v1/compile?" + query(params), open(path, "rb").read())
        self.assertEqual(status, 200)
        self.assertEqual(server.stop(), 0)
        server = self.start("--workers", "1")
        status, body = server.json("GET", "/v1/code?" + query(source_params(path)))
        self.assertEqual(status, 200, body)
        self.assertEqual(server.stats()["compiles"], 0)

    def test_store_compression_serves_the_same_pycs_and_reads_both_records(self):
        """--store-compression zstd: a store written without it is read with it and the other
        way round; every pyc served is the one compiled; the compressed store's pages hold
        less for the same payload bytes."""
        sources = {}
        for name in ("old", "new"):
            sources[name] = os.path.join(self.tmp, name + ".py")
            with open(sources[name], "w") as f:
                f.write("".join("def %s_%d(x):\n    return x * %d + len('%s')\n"
                                % (name, i, i, "q" * i) for i in range(400)))
        raw = {"Accept": "application/x-python-pyc"}

        def compile_one(server, name):
            with open(sources[name], "rb") as f:
                text = f.read()
            status, _, pyc = server.request("POST", "/v1/compile?" + query(source_params(
                sources[name])), text, headers=raw)
            self.assertEqual(status, 200)
            return pyc

        def lookup(server, name):
            status, _, pyc = server.request("GET", "/v1/code?" + query(source_params(
                sources[name])), headers=raw)
            self.assertEqual(status, 200, pyc[:200])
            return pyc

        server = self.start("--workers", "1")
        old = compile_one(server, "old")
        plain = server.stats()["store"]
        self.assertEqual(server.stop(), 0)
        server = self.start("--workers", "1", "--store-compression", "zstd")
        self.assertEqual(lookup(server, "old"), old)
        new = compile_one(server, "new")
        self.assertEqual(lookup(server, "new"), new)
        both = server.stats()["store"]
        self.assertEqual(both["bytes"], 2 * plain["bytes"] - (len(old) - len(new)))
        self.assertLess(both["used"] - plain["used"], (plain["used"] - 4 * 4096) / 2)
        self.assertEqual(server.stop(), 0)
        server = self.start("--workers", "1")
        self.assertEqual((lookup(server, "old"), lookup(server, "new")), (old, new))
        self.assertEqual(server.stats()["compiles"], 0)
        verify = subprocess.run([PYCACHED, "--verify-store", "--store",
                                 os.path.join(self.tmp, "store")], capture_output=True,
                                text=True, timeout=60)
        self.assertEqual(verify.returncode, 0, verify.stdout + verify.stderr)

    @unittest.skipUnless(shutil.which("mdb_dump") and shutil.which("mdb_load"),
                         "needs lmdb-utils")
    def test_flipped_byte_in_the_store_is_never_served(self):
        path = os.path.join(self.tmp, "flip.py")
        with open(path, "w") as f:
            f.write("VALUE = 12345\n")
        server = self.start("--workers", "1")
        params = source_params(path, with_hash=False)
        self.assertEqual(server.request("POST", "/v1/compile?" + query(params),
                                        open(path, "rb").read())[0], 200)
        self.assertEqual(server.stop(), 0)
        # flip the last byte of the one blob record (inside the marshal bytes) with LMDB's tools
        dump = subprocess.run(["mdb_dump", "-s", "blobs", server.store], capture_output=True,
                              text=True, check=True, timeout=30).stdout.splitlines()
        dump = [line for line in dump if not line.startswith("db_pagesize=")]  # load ignores it
        value = dump.index("HEADER=END") + 2
        last = dump[value][-1]
        dump[value] = dump[value][:-1] + ("1" if last == "0" else "0")
        dump_file = os.path.join(self.tmp, "blobs.dump")
        with open(dump_file, "w") as f:
            f.write("\n".join(dump) + "\n")
        subprocess.run(["mdb_load", "-s", "blobs", "-f", dump_file, server.store], check=True,
                       timeout=30)
        server = self.start("--workers", "1")
        status, body = server.json("GET", "/v1/code?" + query(source_params(path)))
        self.assertEqual((status, body["reason"]), (404, "stale"))
        self.assertEqual(server.stats()["corruptions"], 1)
        status, headers, _ = server.request("POST", "/v1/compile?" + query(params),
                                            open(path, "rb").read())
        self.assertEqual((status, headers["X-Pycached-Outcome"]), (200, "compiled"))
        self.assertEqual(server.json("GET", "/v1/code?" + query(source_params(path)))[0], 200)

    def test_worker_killed_mid_compile(self):
        server = self.start("--workers", "1", "--compile-timeout", "30")
        path = os.path.join(self.tmp, "victim.py")
        with open(path, "w") as f:
            f.write("V = [" + ",".join(str(i) for i in range(1000000)) + "]\n")
        params = source_params(path, with_hash=False)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(server.request, "POST", "/v1/compile?" + query(params),
                                  open(path, "rb").read())
            time.sleep(0.5)  # upload done, the worker is compiling (a 2 s compile)
            for pid in server.worker_pids():
                os.kill(pid, signal.SIGKILL)
            status, _, data = pending.result(timeout=60)
        self.assertEqual((status, json.loads(data)["error"]), (503, "compiler-unavailable"))
        ok = os.path.join(self.tmp, "after.py")
        with open(ok, "w") as f:
            f.write("A = 1\n")
        status, _, _ = server.request("POST", "/v1/compile?" + query(source_params(
            ok, with_hash=False)), b"A = 1\n")
        self.assertEqual(status, 200)
        self.assertEqual(server.stats()["compilers"][0]["restarts"], 1)

    def test_sigterm_during_a_compile_answers_and_exits_cleanly(self):
        server = self.start("--workers", "1")
        path = os.path.join(self.tmp, "late.py")
        with open(path, "w") as f:
            f.write("L = [" + ",".join(str(i) for i in range(200000)) + "]\n")
        params = source_params(path, with_hash=False)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(server.request, "POST", "/v1/compile?" + query(params),
                                  open(path, "rb").read())
            time.sleep(0.2)
            server.proc.send_signal(signal.SIGTERM)
            status, _, _ = pending.result(timeout=60)
        self.assertIn(status, (200, 503))
        self.assertEqual(server.stop(), 0)
        self.assertEqual(server.worker_pids(), [])

    def test_hits_are_served_while_a_compile_runs(self):
        # one HTTP thread: a compile that blocked it would block every hit
        server = self.start("--workers", "1", "--threads", "1", "--compile-timeout", "30")
        quick = os.path.join(self.tmp, "quick.py")
        with open(quick, "w") as f:
            f.write("Q = 1\n")
        params = source_params(quick, with_hash=False)
        self.assertEqual(server.request("POST", "/v1/compile?" + query(params), b"Q = 1\n")[0], 200)
        slow = os.path.join(self.tmp, "slow.py")
        with open(slow, "w") as f:
            f.write("S = [" + ",".join(str(i) for i in range(1000000)) + "]\n")  # ~2 s
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(server.request, "POST", "/v1/compile?" + query(
                source_params(slow, with_hash=False)), open(slow, "rb").read())
            time.sleep(0.5)
            latencies = []
            for _ in range(10):
                t0 = time.monotonic()
                status, _ = server.json("GET", "/v1/code?" + query(source_params(quick)))
                latencies.append(time.monotonic() - t0)
                self.assertEqual(status, 200)
            self.assertFalse(pending.done(), "the compile should still be running")
            self.assertLess(max(latencies), 0.25, latencies)
            self.assertEqual(pending.result(timeout=60)[0], 200)

    def test_full_store_is_a_clear_error(self):
        server = self.start("--workers", "1", "--map-size", "1M")
        big = os.path.join(self.tmp, "big.py")
        with open(big, "w") as f:
            f.write("B = [" + ",".join(repr("s%d" % i) for i in range(300000)) + "]\n")
        status, _, data = server.request("POST", "/v1/compile?" + query(
            source_params(big, with_hash=False)), open(big, "rb").read())
        self.assertEqual((status, json.loads(data)["error"]), (507, "store-full"))
        small = os.path.join(self.tmp, "small.py")
        with open(small, "w") as f:
            f.write("S = 1\n")
        status, _, _ = server.request("POST", "/v1/compile?" + query(
            source_params(small, with_hash=False)), b"S = 1\n")
        self.assertEqual(status, 200, "a full map does not stop small entries or the server")
        self.assertEqual(server.json("GET", "/v1/code?" + query(source_params(small)))[0], 200)

    @unittest.skipUnless(os.geteuid() == 0, "the workers change user only under root")
    def test_workers_do_not_run_as_root(self):
        import pwd
        server = self.start("--workers", "1")
        uids = []
        for pid in server.worker_pids():
            with open("/proc/%d/status" % pid) as f:
                uids += [int(line.split()[1]) for line in f if line.startswith("Uid:")]
        self.assertEqual(len(uids), 1)  # a uid of their own (security_workers.py has more)
        self.assertNotIn(uids[0], (0, pwd.getpwnam("nobody").pw_uid))
        path = os.path.join(self.tmp, "as_nobody.py")
        with open(path, "w") as f:
            f.write("N = 1\n")
        status, _, _ = server.request("POST", "/v1/compile?" + query(source_params(
            path, with_hash=False)), b"N = 1\n")
        self.assertEqual(status, 200, "a worker without privileges still compiles")
        run = subprocess.run([PYCACHED, "--store", os.path.join(self.tmp, "s2"), "--port", "0",
                              "--worker-user", "no-such-user-here"], capture_output=True,
                             text=True, timeout=30)
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("no-such-user-here", run.stderr)

    def test_bad_options_are_refused(self):
        for args in (["--port", "70000"], ["--map-size", "lots"], ["--nonsense"],
                     ["--source-root", os.path.join(self.tmp, "missing")]):
            run = subprocess.run([PYCACHED, "--store", os.path.join(self.tmp, "s"), *args],
                                 capture_output=True, text=True, timeout=30)
            self.assertNotEqual(run.returncode, 0, args)
            self.assertTrue(run.stderr.strip(), args)
        run = subprocess.run([PYCACHED, "--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(run.returncode, 0)
        self.assertIn("--compile-timeout", run.stdout)


SANITIZER_VARIABLES = ("ASAN_", "LSAN_", "UBSAN_", "LD_PRELOAD")


def without_sanitizers(env=None):
    """env (default: this process's) without the sanitizer build's variables: for the programs a
    test runs that are not ours (curl, openssl), which hang or fail with libasan preloaded."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if not k.startswith(SANITIZER_VARIABLES)}


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    """A port nothing listens on now (the kernel's pick for port 0)."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Configure(ServersCase):
    """The configuration (docs/OPERATIONS.md, "Configuration"): the forms of --listen, the
    --config file and the PYCACHED_* variables with their precedence, on real servers."""
    prefix = "pcc-e2e-config-"

    def workdir(self, name):
        path = os.path.join(self.tmp, name)
        os.makedirs(path)
        return path

    def config_file(self, text, name="pycached.conf", mode=0o600):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def refused(self, *args, env=None):
        """Runs pycached, which must refuse to start (exit 2); returns its stderr."""
        run = subprocess.run([PYCACHED, "--store", os.path.join(self.tmp, "refused"), *args],
                             capture_output=True, text=True, timeout=30, env=env)
        self.assertEqual(run.returncode, 2, (args, run.stderr))
        return run.stderr

    def compile_size(self, server, size):
        """The status of a compile of a source of size bytes."""
        params = {"magic": MAGIC, "path": "/config/m%d.py" % size, "mtime": 1}
        return server.request("POST", "/v1/compile?" + query(params), b"#" * size)[0]

    def get(self, server, host_header, address=None):
        request = b"GET /healthz HTTP/1.1\r\nHost: " + host_header.encode() + \
            b"\r\nConnection: close\r\n\r\n"
        return raw_json(server.port, request, host=address or server.host)[0]

    def test_listen_takes_a_port(self):
        # issue 14: the whole of "127.0.0.1:PORT" was taken as an address, which is not a
        # loopback one, and refused "without --tokens"
        port = free_port()
        server = self.start("--workers", "1", "--listen", "127.0.0.1:%d" % port, port_args=())
        self.assertEqual((server.host, server.port), ("127.0.0.1", port))
        self.assertEqual(self.get(server, "127.0.0.1:%d" % port), 200)
        for bad in ("127.0.0.1:99999", "127.0.0.1:http", "not an address", "[::1"):
            stderr = self.refused("--listen", bad)
            self.assertIn("--listen %s: " % bad, stderr)
            self.assertIn("--port", stderr)
            self.assertNotIn("--tokens", stderr)

    def test_ipv6_loopback(self):
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
                sock.bind(("::1", 0))
        except OSError as e:
            self.skipTest("no IPv6 on lo (%s): --listen [::1] cannot be checked here" % e)
        server = self.start("--workers", "1", "--listen", "[::1]")
        self.assertEqual(server.host, "::1")
        self.assertTrue(server.url.startswith("http://[::1]:"), server.url)
        status, stats = server.json("GET", "/v1/stats")  # over ::1, Host: [::1]:PORT
        self.assertEqual(status, 200, stats)
        self.assertEqual(self.compile_size(server, 10), 200)
        self.assertEqual(self.get(server, "[::1]:%d" % server.port), 200)
        self.assertEqual(self.get(server, "localhost:%d" % server.port), 200)
        self.assertEqual(self.get(server, "rebound.example:%d" % server.port), 403)
        with self.assertRaises(ConnectionRefusedError):  # ::1 only, not 127.0.0.1 too
            raw_exchange(server.port, b"GET /healthz HTTP/1.0\r\n\r\n", host="127.0.0.1")

    def test_listen_takes_host_names(self):
        server = self.start("--workers", "1", "--listen", "localhost")
        self.assertEqual(server.host, "127.0.0.1")  # a name's first IPv4 address
        self.assertEqual(self.get(server, "localhost:%d" % server.port), 200)
        self.assertEqual(self.get(server, "rebound.example:%d" % server.port), 403)
        # another name of a loopback address: the server answers to it because --listen names
        # it (a loopback server answers to "localhost" and loopback addresses of itself)
        names = {}
        with open("/etc/hosts") as f:
            for line in f:
                fields = line.split("#")[0].split()
                if fields and fields[0].startswith("127."):
                    for name in fields[1:]:
                        if not name.startswith("localhost"):
                            names.setdefault(name, fields[0])
        name = next((n for n in sorted(names) if socket.gethostbyname(n) == names[n]), None)
        if name is None:
            self.skipTest("no name of a loopback address but localhost in /etc/hosts")
        named = self.start("--workers", "1", "--listen", name,
                           workdir=self.workdir("named"))
        self.assertEqual(self.get(named, "%s:%d" % (name, named.port)), 200)
        self.assertEqual(self.get(server, "%s:%d" % (name, server.port)), 403)  # not its name

    def test_file_environment_and_flags(self):
        p_file, p_env, p_flag = free_port(), free_port(), free_port()
        conf = self.config_file("# pycached.conf of the e2e suite\n"
                                "listen = 127.0.0.1:%d\n"
                                "max-source = 1K\n"
                                "workers = 1\n" % p_file)
        env = dict(os.environ)
        for name in [n for n in env if n.startswith("PYCACHED_")]:
            del env[name]
        # the file over the defaults
        server = self.start("--config", conf, port_args=(), env=env,
                            workdir=self.workdir("file"))
        self.assertEqual(server.port, p_file)
        self.assertEqual(self.compile_size(server, 1024), 200)
        self.assertEqual(self.compile_size(server, 1025), 413)
        server.stop()
        # the environment over the file, and the file named by PYCACHED_CONFIG
        env.update(PYCACHED_CONFIG=conf, PYCACHED_PORT=str(p_env), PYCACHED_MAX_SOURCE="2K")
        server = self.start(port_args=(), env=env, workdir=self.workdir("env"))
        self.assertEqual(server.port, p_env)
        self.assertEqual(self.compile_size(server, 2048), 200)
        self.assertEqual(self.compile_size(server, 2049), 413)
        server.stop()
        # the command line over the environment
        server = self.start("--port", str(p_flag), "--max-source", "1500", port_args=(),
                            env=env, workdir=self.workdir("flag"))
        self.assertEqual(server.port, p_flag)
        self.assertEqual(self.compile_size(server, 1500), 200)
        self.assertEqual(self.compile_size(server, 1501), 413)

    def test_every_option_reaches_the_file_and_the_environment(self):
        # from the table through --help: each option with a value that can be wrong is set to
        # a wrong one in a file, then in its variable, and the refusal names where it was
        help_text = subprocess.run([PYCACHED, "--help"], capture_output=True, text=True,
                                   timeout=30, check=True).stdout
        self.assertIn("command line > environment > file > default", help_text)
        options = []
        for line in help_text.splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0].startswith("--") and fields[0] not in (
                    "--help", "--version", "--limits", "--config"):
                options.append((fields[0][2:], fields[1], "(command line only)" in line))
        self.assertGreater(len(options), 30)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYCACHED_")}
        checked = 0
        for name, arg, cli_only in options:
            metavar = arg if arg.upper() == arg or "|" in arg else None  # else a flag's help
            bad = {"N": "x1", "SECONDS": "x1", "DAYS": "x1", "MS": "x1", "BYTES": "12Q",
                   "refuse|quarantine": "sometimes", "HOST[:PORT]": "not an address"}.get(
                       metavar, "maybe" if metavar is None else None)
            if bad is None:  # a path or a name: any text is one
                continue
            variable = "PYCACHED_" + name.upper().replace("-", "_")
            conf = self.config_file("# line 1\n%s = %s\n" % (name, bad), name="bad.conf")
            stderr = self.refused("--config", conf, env=env)
            if cli_only:
                self.assertIn("%s:2: %s is not set in a config file" % (conf, name), stderr)
                continue
            self.assertIn("%s:2: %s" % (conf, name), stderr)
            stderr = self.refused(env=dict(env, **{variable: bad}))
            self.assertIn(variable, stderr)
            checked += 1
        self.assertGreater(checked, 25)

    def test_a_file_others_may_write_is_refused(self):
        conf = self.config_file("port = 0\n", mode=0o602)
        self.assertIn("writable by its group or others", self.refused("--config", conf))
        conf = self.config_file("port = 0\nbogus = 1\n", mode=0o600)
        self.assertIn("%s:2: unknown key 'bogus'" % conf, self.refused("--config", conf))


def run_tests(module_name):
    """Runs a suite module's tests (or a unittest.TestSuite) and ends with the closing line of
    the Check suites, so that one parser (deploy/test.sh) counts every suite. Returns the exit
    status."""
    runner = unittest.TextTestRunner(verbosity=2)
    tests = module_name if isinstance(module_name, unittest.TestSuite) else \
        unittest.defaultTestLoader.loadTestsFromModule(sys.modules[module_name])
    result = runner.run(tests)
    failures, errors = len(result.failures), len(result.errors)
    print("%d%%: Checks: %d, Failures: %d, Errors: %d" % (
        100 * (result.testsRun - failures - errors) // max(result.testsRun, 1), result.testsRun,
        failures, errors))
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
