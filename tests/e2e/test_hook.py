"""End-to-end tests of the CPython import hook (pycached package): real /usr/bin/python3
processes importing a real package tree (Debian's sympy and mpmath, copied read-only without any
__pycache__) through a real pycached server, plus a fault-injecting proxy in front of it.

Run by meson (`meson test hook`), which passes PCC_PYCACHED, PCC_PYCACHECTL, PCC_HOOK_ROOT (the
import root holding the built pycached package) and PCC_REFERENCE_PYTHON.
"""
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import PYCACHECTL, PYTHON, Server, make_tree, run_tests  # noqa: E402  (shared harness)

HOOK_ROOT = os.environ.get("PCC_HOOK_ROOT", "build/client/hook")
sys.path.insert(0, HOOK_ROOT)
from pycached import _native  # noqa: E402  (checksums for the proxy)

SYMPY_SITE = "/usr/lib/python3/dist-packages"
SYMPY_SCRIPT = r"""
import json, sys, time
sys.path.insert(0, TREE)
import sympy, pycached
x = sympy.Symbol("x")
print(json.dumps({"answer": [str(sympy.factor(x**2 - 1)), str(sympy.integrate(x**2, (x, 0, 3)))],
                  "stats": pycached.stats(),
                  "from_tree": sorted(m for m, mod in list(sys.modules.items())
                                      if (getattr(mod, "__file__", "") or "").startswith(TREE)
                                      and mod.__file__.endswith(".py"))}))
"""


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




class HookCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pcc-hook-")
        self.servers = []

    def tearDown(self):
        for server in self.servers:
            server.stop()
        subprocess.run(["chmod", "-R", "u+w", self.tmp])
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start_server(self, *args):
        server = Server(self.tmp, "--workers", "2", *args)
        self.servers.append(server)
        return server

    def hook_run(self, url, code, *python_args, env=None, cwd=None, timeout=120, stdin=None):
        """Runs /usr/bin/python3 with the hook active through `pycachectl exec`. Profiles and
        bundles are off unless env turns them on: these suites test the per-module path."""
        run_env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
                   "PYCACHED_PROFILE": "off"}
        run_env.update({k: v for k, v in os.environ.items()
                        if k.startswith(("ASAN_", "LSAN_", "UBSAN_", "LD_PRELOAD"))})
        run_env.update(env or {})
        return subprocess.run([PYCACHECTL, "--server", url, "exec", "--", PYTHON, *python_args,
                               "-c", code], capture_output=True, text=True, env=run_env,
                              cwd=cwd, timeout=timeout, input=stdin)

    def hook_run_paused(self, url, code, between, env=None, timeout=60):
        """Runs code like hook_run (profiles on unless env turns them off); code prints 'ready'
        and reads a line from stdin: between() runs then, and the process goes on. Returns
        (exit status, stdout, stderr)."""
        run_env = {k: v for k, v in os.environ.items()
                   if k.startswith(("ASAN_", "LSAN_", "UBSAN_", "LD_PRELOAD"))}
        run_env.update(PATH="/usr/bin:/bin", PYTHONDONTWRITEBYTECODE="1")
        run_env.update(env or {})
        proc = subprocess.Popen([PYCACHECTL, "--server", url, "exec", "--", PYTHON, "-c", code],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=run_env)
        try:
            self.assertEqual(proc.stdout.readline().strip(), "ready")
            between()
            out, err = proc.communicate("go\n", timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        return proc.returncode, out, err

    def small_package(self, name="pkg", value=1):
        root = os.path.join(self.tmp, "src-" + name)
        make_tree(root, {
            name + "/__init__.py": "from . import alpha, beta\n",
            name + "/alpha.py": "VALUE = %d\n" % value,
            name + "/beta.py": "def double(x):\n    '''doc'''\n    return 2 * x\n",
        })
        return root

    def import_small(self, url, root, name="pkg", env=None, *python_args):
        code = ("import sys, json; sys.path.insert(0, %r); import %s, pycached; "
                "print(json.dumps({'value': %s.alpha.VALUE, 'double': %s.beta.double(21), "
                "'stats': pycached.stats()}))" % (root, name, name, name))
        run = self.hook_run(url, code, *python_args, env=env)
        self.assertEqual(run.returncode, 0, run.stderr)
        return json.loads(run.stdout)


class Sympy(HookCase):
    """The acceptance run: a read-only sympy tree served entirely from the cache."""

    def test_second_process_gets_every_module_from_the_cache(self):
        tree = os.path.join(self.tmp, "tree")
        os.makedirs(tree)
        for pkg in ("sympy", "mpmath"):
            shutil.copytree(os.path.join(SYMPY_SITE, pkg), os.path.join(tree, pkg),
                            ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run(["chmod", "-R", "a-w", tree], check=True)
        server = self.start_server()
        code = "TREE = %r\n%s" % (tree, SYMPY_SCRIPT)

        first = self.hook_run(server.url, code)
        self.assertEqual(first.returncode, 0, first.stderr[-3000:])
        first = json.loads(first.stdout)
        self.assertEqual(first["answer"], ["(x - 1)*(x + 1)", "9"])
        modules = len(first["from_tree"])
        self.assertGreater(modules, 300)
        self.assertEqual(first["stats"]["fallbacks"], {})
        self.assertEqual(first["stats"]["compiles_asked"], modules)

        second = self.hook_run(server.url, code)
        self.assertEqual(second.returncode, 0, second.stderr[-3000:])
        second = json.loads(second.stdout)
        self.assertEqual(second["answer"], first["answer"])
        self.assertEqual(second["from_tree"], first["from_tree"])
        self.assertEqual(second["stats"]["hits"], modules, "every .py module came from the cache")
        self.assertEqual(second["stats"]["local_compile"], 0)
        self.assertEqual(second["stats"]["fallbacks"], {})
        self.assertEqual(server.stats()["compiles"], modules)


class Fallbacks(HookCase):
    def test_server_down_from_the_start_costs_one_attempt(self):
        root = self.small_package()
        url = "http://127.0.0.1:%d" % closed_port()
        t0 = time.monotonic()
        out = self.import_small(url, root)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual((out["value"], out["double"]), (1, 42))
        self.assertEqual(out["stats"]["fallbacks"], {"server-down": 1, "breaker-open": 2})
        self.assertEqual(out["stats"]["local_compile"], 3)

    def test_a_server_that_never_answers_costs_one_timeout(self):
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes connections; nobody ever reads or answers
        try:
            root = self.small_package()
            url = "http://127.0.0.1:%d" % silent.getsockname()[1]
            t0 = time.monotonic()
            out = self.import_small(url, root, env={"PYCACHED_TIMEOUT_MS": "300"})
            elapsed = time.monotonic() - t0
        finally:
            silent.close()
        self.assertEqual((out["value"], out["double"]), (1, 42))
        self.assertEqual(out["stats"]["fallbacks"], {"timeout": 1, "breaker-open": 2})
        self.assertLess(elapsed, 5, "one 300 ms timeout, not one per module")

    def test_server_stopped_half_way(self):
        server = self.start_server()
        first = self.small_package("first")
        second = self.small_package("second", 2)
        code = ("import sys, json; sys.path[:0] = [%r, %r]; import first, pycached; "
                "print('ready', flush=True); sys.stdin.readline(); import second; "
                "print(json.dumps({'v': second.alpha.VALUE, 'stats': pycached.stats()}))"
                % (first, second))
        status, out, err = self.hook_run_paused(
            server.url, code, lambda: self.assertEqual(server.stop(), 0))
        self.assertEqual(status, 0, err)
        result = json.loads(out)
        self.assertEqual(result["v"], 2)
        self.assertEqual(result["stats"]["compiles_asked"], 3, "the first package came from the server")
        self.assertEqual(result["stats"]["fallbacks"], {"server-down": 1, "breaker-open": 2})

    def test_syntax_error_is_the_same_as_plain_cpython(self):
        server = self.start_server()
        root = os.path.join(self.tmp, "bad")
        make_tree(root, {"broken.py": "x = 1\nif x:\nprint('no indent')\n",
                         "broken2.py": "def f(:\n    pass\n"})
        for module in ("broken", "broken2"):
            code = ("import sys; sys.path.insert(0, %r)\ntry:\n    import %s\n"
                    "except SyntaxError as e:\n"
                    "    print(type(e).__name__, e.filename, e.lineno, e.offset, e.msg, sep='|')"
                    % (root, module))
            hooked = self.hook_run(server.url, code)
            plain = subprocess.run([PYTHON, "-B", "-c", code], capture_output=True, text=True,
                                   timeout=60)
            self.assertEqual(hooked.returncode, 0, hooked.stderr)
            self.assertTrue(plain.stdout.strip())
            self.assertEqual(hooked.stdout, plain.stdout)
        self.assertEqual(server.stats()["compile_errors"], 2)

    def test_edited_source_is_never_served_stale(self):
        server = self.start_server()
        root = self.small_package()
        self.assertEqual(self.import_small(server.url, root)["value"], 1)
        alpha = os.path.join(root, "pkg", "alpha.py")
        st = os.stat(alpha)
        # same size, same mtime: only hash validation can tell
        with open(alpha, "w") as f:
            f.write("VALUE = 7\n")
        os.utime(alpha, ns=(st.st_atime_ns, st.st_mtime_ns))
        out = self.import_small(server.url, root)
        self.assertEqual(out["value"], 7)
        self.assertEqual(out["stats"]["compiles_asked"], 1)
        self.assertEqual(out["stats"]["hits"], 2)
        # a new mtime is caught in both validation modes
        with open(alpha, "w") as f:
            f.write("VALUE = 8\n")
        os.utime(alpha, (st.st_atime + 10, st.st_mtime + 10))
        for validation in ("timestamp", "hash"):
            out = self.import_small(server.url, root, env={"PYCACHED_VALIDATION": validation})
            self.assertEqual(out["value"], 8, validation)

    def test_optimization_levels(self):
        server = self.start_server()
        root = os.path.join(self.tmp, "opt")
        make_tree(root, {"optmod.py": "def f():\n    'the doc'\n    assert False\n"})
        code = ("import sys, json; sys.path.insert(0, %r); import optmod\n"
                "try:\n    optmod.f(); asserted = False\nexcept AssertionError:\n"
                "    asserted = True\n"
                "print(json.dumps([optmod.f.__doc__, asserted]))" % root)
        expected = {(): ["the doc", True], ("-O",): ["the doc", False], ("-OO",): [None, False]}
        for flags, answer in expected.items():
            run = self.hook_run(server.url, code, *flags, env={"PYCACHED_DEBUG": "1"})
            self.assertEqual(run.returncode, 0, run.stderr)
            self.assertEqual(json.loads(run.stdout), answer, flags)
            self.assertIn("compiled       optmod", run.stderr, flags)
        # one entry per optimization level, each with its own code
        path = os.path.join(root, "optmod.py")
        checksums = set()
        for opt in (0, 1, 2):
            status, entry = server.json("GET", "/v1/code?magic=a70d0d0a&opt=%d&path=%s&mtime=%d"
                                        "&size=%d" % (opt, path, int(os.stat(path).st_mtime),
                                                      os.stat(path).st_size))
            self.assertEqual(status, 200, opt)
            checksums.add(entry["checksum"])
        self.assertEqual(len(checksums), 3)

    def test_readonly_never_asks_for_a_compile(self):
        server = self.start_server()
        root = self.small_package()
        out = self.import_small(server.url, root, env={"PYCACHED_READONLY": "1"})
        self.assertEqual((out["value"], out["double"]), (1, 42))
        self.assertEqual(out["stats"]["fallbacks"], {"miss": 3})
        self.assertEqual(server.stats()["compiles"], 0)
        self.import_small(server.url, root)
        out = self.import_small(server.url, root, env={"PYCACHED_READONLY": "1"})
        self.assertEqual(out["stats"]["hits"], 3)

    def test_local_prefix_keeps_served_pycs(self):
        server = self.start_server()
        root = self.small_package()
        prefix = os.path.join(self.tmp, "prefix")
        env = {"PYCACHED_LOCAL_PREFIX": prefix, "PYTHONDONTWRITEBYTECODE": ""}
        out = self.import_small(server.url, root, env=env)
        self.assertEqual(out["stats"]["compiles_asked"], 3)
        written = [os.path.join(d, f) for d, _, fs in os.walk(prefix) for f in fs]
        self.assertEqual(len(written), 3, written)
        self.assertTrue(all(w.startswith(os.path.join(prefix, root.lstrip("/"))) for w in written))
        # with the server gone, the prefix serves every module without a request
        server.stop()
        out = self.import_small(server.url, root, env=env)
        self.assertGreaterEqual(out["stats"]["local_pyc"], 3)  # with the stdlib's own pycs
        self.assertEqual((out["stats"]["hits"], out["stats"]["compiles_asked"],
                          out["stats"]["local_compile"], out["stats"]["fallbacks"]), (0, 0, 0, {}))
        # -B (sys.dont_write_bytecode) writes nothing
        other = self.small_package("other")
        prefix_b = os.path.join(self.tmp, "prefix-b")
        server = self.start_server()
        self.import_small(server.url, other, "other", {"PYCACHED_LOCAL_PREFIX": prefix_b,
                                                       "PYTHONDONTWRITEBYTECODE": ""}, "-B")
        self.assertFalse(os.path.exists(prefix_b))

    def test_status_command_and_bad_settings(self):
        server = self.start_server()
        run = self.hook_run(server.url, "import runpy; runpy.run_module('pycached', "
                            "run_name='__main__')")
        self.assertIn("server:      reachable", run.stdout)
        self.assertIn("hook:        active", run.stdout)
        run = self.hook_run(server.url, "import pycached; print(pycached.is_active())",
                            env={"PYCACHED_VALIDATION": "sometimes"})
        self.assertEqual(run.stdout.strip(), "False")
        self.assertIn("PYCACHED_VALIDATION", run.stderr)

    def test_a_url_without_a_scheme_is_refused_in_one_line(self):
        """PYCACHED_URL=127.0.0.1:PORT left the hook active, falling back at every import."""
        server = self.start_server()
        root = self.small_package()
        bare = server.url.split("://", 1)[1]
        env = dict(os.environ, PYTHONPATH=HOOK_ROOT, PYCACHED_URL=bare, PYCACHED_PROFILE="off",
                   PYTHONDONTWRITEBYTECODE="1")
        code = ("import sys, json; sys.path.insert(0, %r); import pycached; "
                "active = pycached.install(); import pkg; "
                "print(json.dumps([active, pycached.is_active(), pkg.alpha.VALUE]))" % root)
        run = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60,
                             env=env)
        self.assertEqual(json.loads(run.stdout), [False, False, 1], run.stderr)
        lines = run.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, run.stderr)
        self.assertIn("PYCACHED_URL must begin with http://, https:// or unix:/", lines[0])
        self.assertIn("http://" + bare, lines[0])

    def test_pth_file_activates_the_hook_at_startup(self):
        server = self.start_server()
        userbase = os.path.join(self.tmp, "userbase")
        site = os.path.join(userbase, "lib", "python3.11", "site-packages")
        os.makedirs(site)
        shutil.copytree(os.path.join(HOOK_ROOT, "pycached"), os.path.join(site, "pycached"))
        shutil.copy(os.path.join(os.path.dirname(__file__), "..", "..", "client", "hook",
                                 "pycached.pth"), site)
        root = self.small_package()
        code = ("import sys, json; sys.path.insert(0, %r); import pkg, pycached; "
                "print(json.dumps([pycached.is_active(), pycached.stats()['compiles_asked']]))" % root)
        env = {k: v for k, v in os.environ.items()
               if k.startswith(("ASAN_", "LSAN_", "UBSAN_", "LD_PRELOAD"))}
        env.update(PATH="/usr/bin:/bin", PYTHONUSERBASE=userbase, PYTHONDONTWRITEBYTECODE="1")
        run = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60,
                             env=dict(env, PYCACHED_URL=server.url))
        self.assertEqual(json.loads(run.stdout), [True, 3], run.stderr)
        run = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60,
                             env=env)
        self.assertEqual(json.loads(run.stdout), [False, 0], "inactive without PYCACHED_URL")


class FaultProxy(http.server.ThreadingHTTPServer):
    """Forwards to a pycached server and damages answers according to `mode`."""
    daemon_threads = True

    def __init__(self, upstream_port, mode):
        self.upstream_port = upstream_port
        self.mode = mode
        self.encodings = []  # the Accept-Encoding of each request (None: none)
        super().__init__(("127.0.0.1", 0), FaultHandler)


def zstd_frame(data):
    """data as one zstd frame that states its size (the zstd tool, from a file)."""
    with tempfile.NamedTemporaryFile() as plain:
        plain.write(data)
        plain.flush()
        return subprocess.run(["zstd", "-q", "-c", "-3", plain.name], capture_output=True,
                              check=True, timeout=60).stdout


def ZSTD_BOMB(cache=[]):
    """A frame of a few KiB that expands to 64 MiB + 1 zero bytes: one past the hook's response
    limit (libpycached's max_response, PCC_RESPONSE_MAX_DEFAULT)."""
    if not cache:
        cache.append(zstd_frame(bytes(64 * 1024 * 1024 + 1)))
    return cache[0]


def damage_bundle(bundle, mode):
    """bundle-truncate: cut in half; bundle-flip: one byte of the last entry changed (the
    whole-bundle checksum then fails); bundle-flip-entry: the same with the trailer recomputed,
    so only that entry's own checksum can tell."""
    if mode == "bundle-truncate":
        return bytes(bundle[: len(bundle) // 2])
    if mode in ("bundle-flip", "bundle-flip-entry"):
        bundle[-13] ^= 0x01  # the last byte of the last entry's pyc, before the trailer
        if mode == "bundle-flip-entry":
            body = bytes(bundle[:-12])
            bundle[-8:] = int(_native.checksum(body), 16).to_bytes(8, "little")
    return bytes(bundle)


class FaultHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.forward()

    def do_POST(self):
        self.forward()

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        conn = __import__("http.client").client.HTTPConnection("127.0.0.1",
                                                               self.server.upstream_port,
                                                               timeout=30)
        forwarded = {k: self.headers[k] for k in ("Accept", "Content-Type", "X-Pycached-Client",
                                                  "Authorization") if k in self.headers}
        self.server.encodings.append(self.headers.get("Accept-Encoding"))
        conn.request(self.command, self.path, body, forwarded)
        resp = conn.getresponse()
        status, data = resp.status, resp.read()
        headers = [(k, v) for k, v in resp.getheaders()
                   if k.lower() not in ("content-length", "connection", "date")]
        conn.close()
        mode = self.server.mode
        if mode == "unsupported":
            status, headers = 422, [("Content-Type", "application/json")]
            data = b'{"error":"unsupported-magic","message":"injected","magics":["50010d0a"]}'
        elif status == 200 and resp.getheader("Content-Type") == "application/x-pycached-bundle":
            data = damage_bundle(bytearray(data), mode)
        elif status == 200 and resp.getheader("Content-Type") == "application/x-python-pyc":
            pyc = bytearray(data)
            if mode == "flip":
                pyc[len(pyc) // 2] ^= 0x40  # checksum header left as it was
            elif mode == "bad-magic":
                pyc[0] ^= 0x01
            elif mode == "garbage-marshal":
                pyc[16:] = b"\x00garbage" * 4
            elif mode == "truncate":
                pyc = pyc[: len(pyc) // 2]
            elif mode == "http-500":
                status, headers = 500, [("Content-Type", "application/json")]
                pyc = bytearray(b'{"error":"internal","message":"injected"}')
            elif mode.startswith("zstd-"):  # what a server sends that accepts zstd
                headers.append(("Content-Encoding", "zstd"))
                pyc = bytearray(zstd_frame(bytes(pyc)) if mode != "zstd-bomb" else ZSTD_BOMB())
                if mode == "zstd-damaged":
                    pyc[len(pyc) // 2] ^= 0x40
            if mode in ("bad-magic", "garbage-marshal"):  # consistent checksum: deeper checks
                headers = [(k, _native.checksum(bytes(pyc)) if k == "X-Pycached-Checksum"
                            else v) for k, v in headers]
            data = bytes(pyc)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class DamagedResponses(HookCase):
    def test_every_kind_of_damage_falls_back_to_local_compilation(self):
        server = self.start_server()
        expected = {"flip": {"bad-response": 3}, "truncate": {"bad-response": 3},
                    "bad-magic": {"bad-response": 3}, "garbage-marshal": {"bad-code": 3},
                    "http-500": {"http-error": 3},
                    # this interpreter's magic is unknown there: stop asking for the process
                    "unsupported": {"unsupported-magic": 1, "breaker-open": 2}}
        for mode, reason in expected.items():  # reason: the fallbacks expected
            proxy = FaultProxy(server.port, mode)
            thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05})
            thread.start()
            try:
                root = self.small_package("pkg_" + mode.replace("-", "_"), 5)
                out = self.import_small("http://127.0.0.1:%d" % proxy.server_address[1], root,
                                        "pkg_" + mode.replace("-", "_"))
            finally:
                proxy.shutdown()
                proxy.server_close()
                thread.join(10)
            self.assertEqual((out["value"], out["double"]), (5, 42), mode)
            self.assertEqual(out["stats"]["fallbacks"], reason, mode)
            self.assertEqual(out["stats"]["local_compile"], 3, mode)


class ZstdAnswers(HookCase):
    def proxied(self, mode, env):
        server = self.start_server()
        proxy = FaultProxy(server.port, mode)
        thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            name = "pkg_" + mode.replace("-", "_")
            root = self.small_package(name, 5)
            out = self.import_small("http://127.0.0.1:%d" % proxy.server_address[1], root, name,
                                    env)
        finally:
            proxy.shutdown()
            proxy.server_close()
            thread.join(10)
        self.assertEqual((out["value"], out["double"]), (5, 42), mode)
        return out["stats"], proxy.encodings

    def test_zstd_pycs_are_decoded_and_damage_falls_back(self):
        """PYCACHED_ZSTD=1: every lookup and compile asks for zstd; a zstd pyc is decoded and
        served; a damaged frame, or one that expands past the response limit, falls back to a
        local compile (bad-response, too-large) and the import works."""
        stats, encodings = self.proxied("zstd-good", {"PYCACHED_ZSTD": "1"})
        self.assertEqual(set(encodings), {"zstd"})
        self.assertEqual((stats["fallbacks"], stats["local_compile"]), ({}, 0))
        self.assertEqual(stats["compiles_asked"] + stats["hits"], 3, stats)
        for mode, reason in (("zstd-damaged", "bad-response"), ("zstd-bomb", "too-large")):
            stats, _ = self.proxied(mode, {"PYCACHED_ZSTD": "1"})
            self.assertEqual(stats["fallbacks"], {reason: 3}, mode)
            self.assertEqual(stats["local_compile"], 3, mode)

    def test_a_real_server_sends_fewer_bytes_with_zstd(self):
        """PYCACHED_ZSTD=1 against pycached itself: every module is a hit (no fallback), and the
        access log's bytes of the GET /v1/code answers are fewer than without."""
        log = os.path.join(self.tmp, "access.log")
        server = self.start_server("--access-log", log)
        root = os.path.join(self.tmp, "src-big")
        make_tree(root, {"big/__init__.py": "from .body import *\n",
                         "big/body.py": "".join("def f%d(x):\n    return x * %d + len('%s')\n"
                                                % (i, i, "b" * i) for i in range(300))})
        code = ("import sys, json; sys.path.insert(0, %r); import big, pycached; "
                "print(json.dumps([big.f7(1), pycached.stats()]))" % root)
        sent = {}
        for zstd in ("0", "1", "0", "1"):  # the first run compiles
            with open(log, "w"):
                pass  # emptied: only this run's lines (the server appends)
            run = self.hook_run(server.url, code, env={"PYCACHED_ZSTD": zstd})
            self.assertEqual(run.returncode, 0, run.stderr)
            value, stats = json.loads(run.stdout)
            self.assertEqual((value, stats["fallbacks"], stats["local_compile"]), (14, {}, 0))
            deadline = time.monotonic() + 10
            lines = []
            while time.monotonic() < deadline and len(lines) < 2:
                with open(log) as f:
                    lines = [line for line in f if "path=/v1/code" in line]
                time.sleep(0.05)
            sent[zstd] = sum(int(line.split(" bytes=")[1].split()[0]) for line in lines)
            self.assertEqual(len(lines), 2, lines)
        self.assertLess(sent["1"], sent["0"] * 0.7, sent)

    def test_zstd_is_off_for_a_server_on_this_host_unless_asked(self):
        """PYCACHED_ZSTD=auto (the default) and 0 ask a loopback server for nothing compressed;
        a bad value keeps the hook off with a one-line reason."""
        for env in ({}, {"PYCACHED_ZSTD": "auto"}, {"PYCACHED_ZSTD": "0"}):
            _, encodings = self.proxied("none", env)
            self.assertTrue(encodings, env)
            self.assertEqual(set(encodings), {None}, env)
        run = self.hook_run("http://127.0.0.1:9", "import pycached; print(pycached.stats())",
                            env={"PYCACHED_ZSTD": "gzip"})
        self.assertIn("PYCACHED_ZSTD must be", run.stderr)


class FiveXXServer(http.server.ThreadingHTTPServer):
    """A server that answers every request with `status` (503 unless told), and Retry-After when
    retry_after is set; with alternate=True every second request gets a 404 miss instead.
    requests counts what reached it (path of each)."""
    daemon_threads = True

    def __init__(self, status=503, retry_after=None, alternate=False):
        self.status, self.retry_after, self.alternate = status, retry_after, alternate
        self.requests = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), FiveXXHandler)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_address[1]

    def stop(self):
        self.shutdown()
        self.server_close()
        self.thread.join(10)


class FiveXXHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.answer()

    def do_POST(self):
        self.answer()

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with self.server.lock:
            self.server.requests.append(self.path)
            nth = len(self.server.requests)
        status, data = self.server.status, b'{"error":"busy","message":"injected"}'
        if self.server.alternate and nth % 2 == 0:
            status, data = 404, b'{"error":"miss","reason":"absent","message":"injected"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if self.server.retry_after is not None and status != 404:
            self.send_header("Retry-After", str(self.server.retry_after))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class RepeatedServerErrors(HookCase):
    """A lone server that answers 5xx: PYCACHED_BREAKER_5XX (3) in a row open its breaker, so an
    import of many modules costs a few requests, not one per module (53 for one `import mpmath`
    before), and every module is still compiled locally."""
    MODULES = 20

    def setUp(self):
        super().setUp()
        files = {"many/__init__.py": ""}
        files.update({"many/m%d.py" % i: "VALUE = %d * 3\n" % i for i in range(self.MODULES)})
        self.root = make_tree(os.path.join(self.tmp, "src-many"), files)

    def fake(self, **kwargs):
        server = FiveXXServer(**kwargs)
        self.addCleanup(server.stop)
        return server

    @staticmethod
    def fetches(server):
        """The lookups and compiles that reached server (not the report sent at exit)."""
        return [p for p in server.requests if p.startswith(("/v1/code?", "/v1/compile?"))]

    def import_many(self, url, env=None, pause=0):
        """Imports many and its modules (pause seconds after the first half); returns the hook's
        stats."""
        half = self.MODULES // 2
        code = ("import sys, json, time, importlib; sys.path.insert(0, %r); import pycached\n"
                "mods = [importlib.import_module('many.m%%d' %% i) for i in range(%d)]\n"
                "time.sleep(%r)\n"
                "mods += [importlib.import_module('many.m%%d' %% i) for i in range(%d, %d)]\n"
                "print(json.dumps({'sum': sum(m.VALUE for m in mods), "
                "'stats': pycached.stats()}))" % (self.root, half, pause, half, self.MODULES))
        run = self.hook_run(url, code, env=env)
        self.assertEqual(run.returncode, 0, run.stderr)
        out = json.loads(run.stdout)
        self.assertEqual(out["sum"], 3 * sum(range(self.MODULES)), "every module works")
        self.assertEqual(out["stats"]["local_compile"], self.MODULES + 1)
        return out["stats"]

    def test_a_server_answering_503_to_everything_gets_three_requests(self):
        for status in (503, 500, 502, 504, 507):
            server = self.fake(status=status)
            stats = self.import_many(server.url)
            self.assertEqual(len(self.fetches(server)), 3, status)
            self.assertEqual(stats["fallbacks"], {"http-error": 3, "breaker-open": 18}, status)

    def test_the_count_is_a_setting(self):
        server = self.fake()
        stats = self.import_many(server.url, env={"PYCACHED_BREAKER_5XX": "1"})
        self.assertEqual(len(self.fetches(server)), 1)
        self.assertEqual(stats["fallbacks"], {"http-error": 1, "breaker-open": 20})
        for bad in ("0", "1001", "many"):
            run = self.hook_run(server.url, "import pycached; print(pycached.is_active())",
                                env={"PYCACHED_BREAKER_5XX": bad})
            self.assertIn("PYCACHED_BREAKER_5XX", run.stderr, bad)
            self.assertEqual(run.stdout.strip(), "False", bad)

    def test_an_answer_between_two_5xx_resets_the_count(self):
        # 503, miss, 503, miss...: a read-only hook's lookups, never three 5xx in a row
        server = self.fake(alternate=True)
        stats = self.import_many(server.url, env={"PYCACHED_READONLY": "1"})
        self.assertEqual(len(self.fetches(server)), self.MODULES + 1, "every module asked")
        self.assertEqual(stats["fallbacks"], {"http-error": 11, "miss": 10})

    def test_the_breaker_closes_after_breaker_seconds(self):
        server = self.fake()
        stats = self.import_many(server.url, env={"PYCACHED_BREAKER_SECONDS": "1"}, pause=1.5)
        self.assertEqual(len(self.fetches(server)), 6, "three before the pause, three after")
        self.assertEqual(stats["fallbacks"], {"http-error": 6, "breaker-open": 15})

    def test_a_longer_retry_after_keeps_the_breaker_open(self):
        server = self.fake(retry_after=60)
        stats = self.import_many(server.url, env={"PYCACHED_BREAKER_SECONDS": "1"}, pause=1.5)
        self.assertEqual(len(self.fetches(server)), 3, "Retry-After: 60 outlasts the pause")
        self.assertEqual(stats["fallbacks"], {"http-error": 3, "breaker-open": 18})


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
