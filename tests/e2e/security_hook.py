"""security_hook.py: the import hook never breaks an import (issue 9), part of the `security`
suite (test_security.py runs it with the others). One test case per way it broke before:

- ServerTexts: a server message cut inside a UTF-8 character (a 507 for a module under a long
  non-ASCII path, a 422 for a SyntaxError with a long non-ASCII identifier) made pycached._native
  raise UnicodeDecodeError out of the import; a fake server answers those bytes exactly;
- CatchAll: any exception of the cache machinery (here injected into pycached._native, or a
  damaged pyc in PYCACHED_LOCAL_PREFIX) reached the importing program;
- ProfileNames: long, non-ASCII or non-UTF-8 script paths gave profile names the server refuses
  (or a UnicodeEncodeError), so no profile was ever recorded;
- ForkDuringBundle: a child forked by another thread while the first import fetched the bundle
  waited forever for the bundle's lock.

Real /usr/bin/python3 processes through `pycachectl exec` (HookCase in test_hook.py); every
process and server a test starts, it stops, and every wait is bounded.
"""
import http.server
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import MAGIC, PYTHON, make_tree  # noqa: E402
from test_hook import FaultHandler, FaultProxy, HookCase  # noqa: E402
from pycached import _hook  # noqa: E402  (test_hook put the built package on sys.path)

# prints how importing `module` from `root` fails: exactly what plain CPython prints
SYNTAX_REPORT = ("import sys; sys.path.insert(0, %r)\ntry:\n    import %s\n"
                 "except SyntaxError as e:\n"
                 "    print(type(e).__name__, e.filename, e.lineno, e.offset, e.msg, sep='|')")
# a module whose SyntaxError names a long non-ASCII identifier (its 'x' puts the end of the
# hook's 256-byte detail buffer inside an 'é' when the real server sends the message)
LONG_NAME = "x" + "é" * 150
BAD_SOURCE = "def f(%s, %s):\n    pass\n" % (LONG_NAME, LONG_NAME)


class CraftedServer(http.server.ThreadingHTTPServer):
    """A fake pycached: answers each endpoint (the path before '?') with a crafted status and
    JSON body, byte for byte, and 404 not-found elsewhere (no profile: no bundle)."""
    daemon_threads = True

    def __init__(self, answers):
        self.answers = answers
        super().__init__(("127.0.0.1", 0), CraftedHandler)


class CraftedHandler(FaultHandler):
    """Answers what the server's `answers` say instead of forwarding."""

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, body = self.server.answers.get(
            self.path.split("?")[0], (404, b'{"error":"not-found","message":"nothing here"}'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class SlowBundleHandler(FaultHandler):
    """FaultHandler that holds every bundle request for the proxy's `delay` seconds."""

    def forward(self):
        if self.path.startswith("/v1/bundle"):
            time.sleep(self.server.delay)
        super().forward()


class SecurityHookCase(HookCase):
    def serve(self, httpd):
        """Runs an HTTP server of this process until the test ends; returns its URL."""
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()

        def stop():
            httpd.shutdown()
            httpd.server_close()
            thread.join(10)
        self.addCleanup(stop)
        return "http://127.0.0.1:%d" % httpd.server_address[1]

    def run_script(self, url, script, env=None):
        """Runs the script file through the hook with the default profile (derived from its
        path); its last line of output is JSON. hook_run appends `-c ""`, which here are just
        arguments of the script."""
        run = self.hook_run(url, "", script, env=dict({"PYCACHED_PROFILE": ""}, **(env or {})))
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        return json.loads(run.stdout.splitlines()[-1])

    def assert_syntax_error_as_cpython(self, url, root, module, inject="", env=None):
        """Importing module from root through the hook (after the code inject) raises the
        SyntaxError plain CPython raises."""
        code = SYNTAX_REPORT % (root, module)
        hooked = self.hook_run(url, inject + code, env=env)
        plain = subprocess.run([PYTHON, "-B", "-c", code], capture_output=True, text=True,
                               env={"PATH": "/usr/bin:/bin"}, timeout=60)
        self.assertEqual(hooked.returncode, 0, hooked.stderr[-3000:])
        self.assertTrue(plain.stdout.startswith("SyntaxError|"), plain.stdout)
        self.assertEqual(hooked.stdout, plain.stdout)


class ServerTexts(SecurityHookCase):
    """Server messages are decoded with errors='replace': a cut character is no exception."""

    def test_a_507_cut_inside_a_character_is_a_fallback(self):
        # every lookup, compile and bundle answered 507, the message cut inside a character
        # (the path it names was long and non-ASCII); short enough to fit the detail buffer
        root = self.small_package("pkg_full", 3)
        full = (b'{"error":"store-full","message":"no room for /' + "données/".encode() * 12 +
                b'\xc3"}')
        url = self.serve(CraftedServer({"/v1/code": (507, full), "/v1/compile": (507, full),
                                        "/v1/bundle": (507, full)}))
        out = self.import_small(url, root, "pkg_full", {"PYCACHED_PROFILE": "texts",
                                                        "PYCACHED_DEBUG": "1"})
        self.assertEqual((out["value"], out["double"]), (3, 42))
        # the bundle's 507 and two modules' make three 5xx in a row: the breaker opens for
        # the third module (PYCACHED_BREAKER_5XX, issue 15)
        self.assertEqual(out["stats"]["fallbacks"],
                         {"bundle-http-error": 1, "http-error": 2, "breaker-open": 1})

    def test_a_422_cut_inside_a_character_is_cpythons_syntax_error(self):
        # a stored compile error whose message ends in two of the three bytes of a character:
        # the hook compiles locally and the user gets CPython's own SyntaxError
        bad = make_tree(os.path.join(self.tmp, "bad"), {"longname.py": BAD_SOURCE})
        error = (b'{"error":"compile-error","type":"SyntaxError","line":1,"offset":7,'
                 b'"message":"duplicate argument \'' + LONG_NAME.encode()[:41] +
                 "€".encode()[:2] + b'"}')
        url = self.serve(CraftedServer({"/v1/code": (422, error), "/v1/compile": (422, error)}))
        self.assert_syntax_error_as_cpython(url, bad, "longname")

    def test_a_real_servers_syntax_error_with_a_long_identifier(self):
        server = self.start_server()
        bad = make_tree(os.path.join(self.tmp, "bad"), {"longname.py": BAD_SOURCE})
        self.assert_syntax_error_as_cpython(server.url, bad, "longname")


# every function of the C part an import calls raises (the reports at exit still work)
INJECT = """
from pycached import _native
def boom(*args, **kwargs):
    raise RuntimeError("injected into the cache machinery")
for name in ("fetch", "fetch_bundle", "source_ids"):
    setattr(_native, name, boom)
"""


class CatchAll(SecurityHookCase):
    """Whatever the cache machinery raises is a fallback (hook-error), never the program's."""

    def inject_at_start(self):
        """The environment of a process that runs INJECT before the hook is installed (the
        bundle is fetched from install on): a .pth of a user site, which site.py processes
        before the hook's sitecustomize."""
        site = os.path.join(self.tmp, "userbase", "lib", "python%d.%d" % sys.version_info[:2],
                            "site-packages")
        make_tree(site, {"pycached_inject.py": INJECT, "inject.pth": "import pycached_inject\n"})
        return {"PYCACHED_PROFILE": "boom", "PYTHONUSERBASE": os.path.join(self.tmp, "userbase")}

    def test_exceptions_of_the_native_part_are_fallbacks(self):
        server = self.start_server()
        root = self.small_package("pkg_boom", 4)
        env = self.inject_at_start()
        code = ("import sys, json; sys.path.insert(0, %r); import pkg_boom, pycached\n"
                "print(json.dumps({'value': pkg_boom.alpha.VALUE, 'stats': pycached.stats()}))"
                % root)
        run = self.hook_run(server.url, code, env=env)
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        out = json.loads(run.stdout)
        self.assertEqual(out["value"], 4)
        # the bundle raised once (and is not asked for again), each module's fetch raised
        self.assertEqual(out["stats"]["fallbacks"], {"hook-error": 1 + 3})
        self.assertEqual(out["stats"]["local_compile"], 3)
        status, stats = server.json("GET", "/v1/admin/stats")  # reported at exit
        self.assertEqual((status, stats["total"]["fallbacks"]), (200, {"hook-error": 4}))
        # a real SyntaxError still surfaces as CPython raises it
        bad = make_tree(os.path.join(self.tmp, "bad"), {"broken.py": "x = (1,\n"})
        self.assert_syntax_error_as_cpython(server.url, bad, "broken", "", env)

    def test_a_damaged_pyc_in_the_local_prefix_is_not_used(self):
        server = self.start_server()
        root = self.small_package("pkg_prefix", 6)
        prefix = os.path.join(self.tmp, "prefix")
        env = {"PYCACHED_LOCAL_PREFIX": prefix, "PYTHONDONTWRITEBYTECODE": ""}
        self.assertEqual(self.import_small(server.url, root, "pkg_prefix", env)["value"], 6)
        written = [os.path.join(d, f) for d, _, fs in os.walk(prefix) for f in fs]
        self.assertEqual(len(written), 3, written)
        for pyc in written:  # the header still fits the source; the marshal bytes do not
            with open(pyc, "r+b") as f:
                f.seek(16)
                f.write(b"\x00garbage" * 4)
                f.truncate()
        out = self.import_small(server.url, root, "pkg_prefix", env)
        self.assertEqual((out["value"], out["double"]), (6, 42))
        self.assertEqual((out["stats"]["hits"], out["stats"]["fallbacks"]), (3, {}))
        out = self.import_small(server.url, root, "pkg_prefix", env)  # rewritten by the hits
        self.assertEqual((out["stats"]["hits"], out["stats"]["local_compile"]), (0, 0))


class ProfileNames(SecurityHookCase):
    """Every script path gives a profile name the server takes (1..200 printable bytes)."""

    def app(self, directory, lib, scripts):
        """Scripts in directory importing the package `app` from lib, which holds 3 modules."""
        make_tree(lib, {"app/__init__.py": "from . import one, two\n",
                        "app/one.py": "VALUE = 1\n", "app/two.py": "VALUE = 2\n"})
        body = ("import json, sys\nsys.path.insert(0, %r)\nimport app, pycached\n"
                "print(json.dumps({'values': [app.one.VALUE, app.two.VALUE], "
                "'stats': pycached.stats()}))\n" % lib)
        return [os.path.join(make_tree(directory, {name: body}), name) for name in scripts]

    def test_long_non_ascii_and_non_utf8_script_paths_record_profiles(self):
        server = self.start_server()
        long_dir = os.path.join(self.tmp, *["données-" * 5] * 6)  # 246 characters, 276 bytes
        odd_dir = os.path.join(self.tmp, os.fsdecode(b"tab\there caf\xe9 del\x7f"))
        first, second = self.app(long_dir, os.path.join(self.tmp, "lib"), ["a.py", "b.py"])
        odd, = self.app(odd_dir, os.path.join(self.tmp, os.fsdecode(b"lib-\xe9")), ["c.py"])
        for script in (first, odd):
            out = self.run_script(server.url, script)
            self.assertEqual(out["values"], [1, 2])
            self.assertEqual((out["stats"]["fallbacks"], out["stats"].get("bundle_missing")),
                             ({}, 1), script)
            out = self.run_script(server.url, script)  # the profile was recorded: one bundle
            self.assertEqual((out["stats"]["fallbacks"], out["stats"].get("bundle_hits")),
                             ({}, 3), script)
        # b.py shares its first 200 bytes with a.py, but not its profile
        out = self.run_script(server.url, second)
        self.assertEqual(out["stats"].get("bundle_missing"), 1)
        # the names: within the limit, printable, cut between characters, stable
        names = {_hook._profile_name(kind, text)
                 for kind, text in (("script", first), ("script", second), ("script", odd),
                                    ("module", "модуль" * 40))}
        self.assertEqual(len(names), 4)
        for name in names:
            self.assertTrue(1 <= len(name.encode()) <= _hook._PROFILE_NAME_MAX, name)
            self.assertTrue(all(_hook._name_char(c) for c in name), name)
        self.assertEqual(_hook._profile_name("script", "/short/path.py"), "script:/short/path.py")


# A thread imports a package (the first import: the bundle fetch, held by the proxy); the main
# thread forks meanwhile; the child imports another package and must be done in CHILD_LIMIT s.
FORK_PROGRAM = """
import json, os, sys, threading, time
sys.path[:0] = [%(first)r, %(second)r]
import pycached
done = threading.Event()
def first_import():
    import pkg_first
    done.set()
thread = threading.Thread(target=first_import)
thread.start()
time.sleep(%(lead)r)
in_progress = not done.is_set()
pid = os.fork()
if pid == 0:
    import pkg_second
    print(json.dumps({"child": pkg_second.alpha.VALUE, "stats": pycached.stats()}), flush=True)
    os._exit(0)
deadline, status = time.monotonic() + %(limit)r, None
while status is None and time.monotonic() < deadline:
    if os.waitpid(pid, os.WNOHANG)[0] == pid:
        status = "done"
    time.sleep(0.05)
if status is None:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print(json.dumps({"child": "hung"}), flush=True)
thread.join(60)
import pkg_first
print(json.dumps({"parent": pkg_first.alpha.VALUE, "in_progress": in_progress}), flush=True)
"""


class ForkDuringBundle(SecurityHookCase):
    def test_a_child_forked_during_the_first_bundle_fetch_imports(self):
        server = self.start_server()
        proxy = FaultProxy(server.port, "pass")  # an unknown mode damages nothing
        proxy.RequestHandlerClass = SlowBundleHandler
        proxy.delay = 3
        url = self.serve(proxy)
        first = self.small_package("pkg_first", 1)
        second = self.small_package("pkg_second", 2)
        code = FORK_PROGRAM % {"first": first, "second": second, "lead": 1.0, "limit": 20.0}
        t0 = time.monotonic()
        run = self.hook_run(url, code, env={"PYCACHED_PROFILE": "fork"}, timeout=90)
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        lines = [json.loads(line) for line in run.stdout.splitlines()]
        child = next(line for line in lines if "child" in line)
        parent = next(line for line in lines if "parent" in line)
        self.assertTrue(parent["in_progress"], "the fork came after the fetch")
        self.assertEqual(child["child"], 2, "the child hung on the bundle's lock")
        self.assertEqual(child["stats"]["bundle_missing"], 1, "the child fetched its own")
        self.assertEqual(parent["parent"], 1)
        self.assertLess(time.monotonic() - t0, 60)
        status, _, _ = server.request("GET", "/v1/bundle?magic=%s&profile=fork" % MAGIC)
        self.assertEqual(status, 200, "the parent recorded its profile at exit")
