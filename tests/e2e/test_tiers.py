"""End-to-end tests of the upstream tier (--upstream, issue 15; docs/OPERATIONS.md, "Tiers: a
node-local daemon with an upstream"): a central pycached on a loopback port and node-local
pycached daemons on unix sockets with `--upstream http://central`. A source is compiled once, on
the central; the nodes store what they get and serve it locally afterwards; a central that is
down costs bounded time and the node compiles itself; an upstream that answers wrong entries or
garbage is detected and never stored or served; a magic the node has no backend for is
forwarded; the import hook through a node's socket gets every module without a fallback.

Run by meson (`meson test tiers`) with PCC_PYCACHED, PCC_PYCACHECTL, PCC_HOOK_ROOT and
PCC_REFERENCE_PYTHON in the environment; CPython 3.12 from pyenv (PYENV_ROOT, default
/root/.pyenv) for the forwarded magic. Every process started is stopped by pid.
"""
import concurrent.futures
import http.server
import json
import marshal
import os
import shutil
import tempfile
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import MAGIC, Server, make_tree, query, run_tests, source_params  # noqa: E402
from test_hook import HookCase  # noqa: E402
from test_admin import check_prometheus_text, write_tokens  # noqa: E402
from test_tls import make_certificates  # noqa: E402

PYC = {"Accept": "application/x-python-pyc"}
PYENV = os.environ.get("PYENV_ROOT", "/root/.pyenv")
PYTHON312 = os.path.join(PYENV, "versions", "3.12.1", "bin", "python3")


class FakeUpstream:
    """A tiny HTTP server on 127.0.0.1 that answers every request with (status, content type,
    body) of `answer`, counting the requests: an upstream that lies or breaks."""

    def __init__(self, status, body, content_type="application/json"):
        fake = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                fake.requests += 1
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_any

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class TierCase(HookCase):
    def setUp(self):
        super().setUp()
        os.chmod(self.tmp, 0o755)
        self.n = 0
        self.fakes = []

    def tearDown(self):
        super().tearDown()
        for fake in self.fakes:
            fake.stop()

    def workdir(self, name):
        self.n += 1
        path = os.path.join(self.tmp, "%s-%d" % (name, self.n))
        os.makedirs(path)
        os.chmod(path, 0o755)
        return path

    def central(self, *args):
        server = Server(self.workdir("central"), "--workers", "2", *args)
        self.servers.append(server)
        return server

    def node(self, *upstreams, args=()):
        """A node-local daemon on a unix socket with --upstream upstreams."""
        workdir = self.workdir("node")
        server = Server(workdir, "--workers", "2", "--listen",
                        "unix:" + os.path.join(workdir, "node.sock"),
                        "--upstream", ",".join(upstreams), *args, port_args=())
        self.servers.append(server)
        return server

    def source(self, name, text):
        return os.path.join(make_tree(os.path.join(self.tmp, "src"), {name: text}), name)

    def compile(self, server, path, magic=MAGIC, timeout=30):
        """POST /v1/compile of path's bytes: (status, outcome, pyc bytes or the error JSON)."""
        params = source_params(path, with_hash=False)
        params["magic"] = magic
        with open(path, "rb") as f:
            body = f.read()
        status, headers, data = server.request("POST", "/v1/compile?" + query(params), body,
                                               PYC, timeout=timeout)
        return status, headers.get("X-Pycached-Outcome"), data

    def lookup(self, server, path, magic=MAGIC):
        params = source_params(path)
        params["magic"] = magic
        status, headers, data = server.request("GET", "/v1/code?" + query(params), None, PYC)
        return status, headers.get("X-Pycached-Outcome"), data

    @staticmethod
    def run_pyc(pyc):
        namespace = {}
        exec(marshal.loads(pyc[16:]), namespace)  # noqa: S102  (checked to be our own source's)
        return namespace


class Tiers(TierCase):
    def test_compiled_once_on_the_central_then_served_by_the_nodes(self):
        central = self.central()
        node1, node2 = self.node(central.url), self.node(central.url)
        path = self.source("m.py", "VALUE = 6 * 7\n")
        status, outcome, pyc = self.compile(node1, path)
        self.assertEqual((status, outcome), (200, "upstream"), pyc)
        self.assertEqual(self.run_pyc(pyc)["VALUE"], 42)
        self.assertEqual(pyc[:4], bytes.fromhex(MAGIC))
        self.assertEqual((central.stats()["compiles"], node1.stats()["compiles"]), (1, 0))
        # a second node: the central has it stored; nobody compiles again
        status, outcome, pyc2 = self.compile(node2, path)
        self.assertEqual((status, outcome, pyc2), (200, "upstream", pyc))
        self.assertEqual((central.stats()["compiles"], node2.stats()["compiles"]), (1, 0))
        # from now on the nodes answer alone: lookups and compiles hit their own store
        before = central.stats()["requests"]
        for node in (node1, node2):
            for _ in range(3):
                self.assertEqual(self.lookup(node, path)[:2], (200, "hit"))
            self.assertEqual(self.compile(node, path)[:2], (200, "stored"))
        self.assertEqual(central.stats()["requests"], before + 1)  # the stats request only
        stats = node1.stats()["upstream"]
        self.assertEqual((stats["hits"], stats["misses"], stats["errors"], stats["rejected"]),
                         (1, 0, 0, 0))
        self.assertEqual(stats["servers"], [{"url": central.url, "up": True, "failures": 0,
                                             "skipped": 0}])
        status, _, metrics = node1.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertIn(b"\npycached_upstream_hits_total 1\n", metrics)
        self.assertIn(b'\npycached_upstream_up{upstream="%s"} 1\n' % central.url.encode(),
                      metrics)
        check_prometheus_text(self, metrics.decode())

    def test_concurrent_compiles_through_a_node_ask_the_central_once(self):
        central = self.central()
        node = self.node(central.url)
        path = self.source("c.py", "C = sum(range(10))\n")
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda _: self.compile(node, path), range(16)))
        self.assertEqual({r[0] for r in results}, {200})
        self.assertEqual({r[2] for r in results}, {results[0][2]})
        outcomes = [r[1] for r in results]
        self.assertEqual(outcomes.count("upstream") + outcomes.count("stored"), 16 -
                         outcomes.count("joined"))
        self.assertEqual(outcomes.count("upstream"), 1, outcomes)
        stats = central.stats()
        self.assertEqual(stats["compiles"], 1)
        self.assertEqual(node.stats()["upstream"]["hits"], 1)

    def test_a_compile_error_comes_from_the_central_and_is_stored(self):
        central = self.central()
        node = self.node(central.url)
        path = self.source("bad.py", "def f(:\n    pass\n")
        status, _, body = self.compile(node, path)
        error = json.loads(body)
        self.assertEqual((status, error["error"], error["type"]), (422, "compile-error",
                                                                   "SyntaxError"))
        self.assertEqual((central.stats()["compile_errors"], node.stats()["compiles"]), (1, 0))
        status, _, body = self.compile(node, path)  # stored on the node: not asked again
        self.assertEqual((status, json.loads(body)["line"]), (422, error["line"]))
        self.assertEqual(node.stats()["upstream"]["hits"], 1)
        self.assertEqual(central.stats()["compile_errors"], 1)

    def test_the_central_down_the_node_serves_what_it_has_and_compiles_itself(self):
        central = self.central()
        node = self.node(central.url)
        old = self.source("old.py", "OLD = 1\n")
        self.assertEqual(self.compile(node, old)[:2], (200, "upstream"))
        central.stop()
        self.assertEqual(self.lookup(node, old)[:2], (200, "hit"))
        for i in range(3):
            path = self.source("new%d.py" % i, "NEW = %d\n" % i)
            t0 = time.monotonic()
            status, outcome, pyc = self.compile(node, path)
            self.assertEqual((status, outcome), (200, "compiled"))
            self.assertLess(time.monotonic() - t0, 5)  # a refused connect: no wait at all
            self.assertEqual(self.run_pyc(pyc)["NEW"], i)
        stats = node.stats()
        self.assertEqual(stats["compiles"], 3)
        up = stats["upstream"]
        self.assertEqual(up["misses"], 3)
        self.assertGreaterEqual(up["errors"], 1)
        self.assertEqual(up["errors"] + up["skipped"], 3)  # each compile tried it or skipped it
        self.assertFalse(up["servers"][0]["up"])

    def test_a_silent_upstream_costs_the_timeout_then_is_skipped(self):
        silent = FakeUpstream(200, b"")
        silent.httpd.RequestHandlerClass.do_POST = lambda h: time.sleep(3)
        self.fakes.append(silent)
        node = self.node(silent.url, args=("--upstream-timeout", "500"))
        t0 = time.monotonic()
        status, outcome, _ = self.compile(node, self.source("s1.py", "S = 1\n"))
        self.assertEqual((status, outcome), (200, "compiled"))
        self.assertLess(time.monotonic() - t0, 2.5)
        t0 = time.monotonic()
        self.assertEqual(self.compile(node, self.source("s2.py", "S = 2\n"))[:2],
                         (200, "compiled"))
        self.assertLess(time.monotonic() - t0, 0.4)  # skipped by the breaker: not waited for
        up = node.stats()["upstream"]
        self.assertEqual((up["timeouts"], up["skipped"]), (1, 1))

    def test_wrong_entries_and_garbage_from_an_upstream_are_never_stored(self):
        # a valid entry, from a real pycached, for another source
        central = self.central()
        other = self.source("other.py", "VALUE = 'other'\n")
        params = source_params(other, with_hash=False)
        with open(other, "rb") as f:
            status, _, entry = central.request("POST", "/v1/compile?" + query(params), f.read())
        self.assertEqual(status, 200)
        liars = [FakeUpstream(200, entry),
                 FakeUpstream(200, b'{"magic": "' + MAGIC.encode() + b'", "pyc": "AAAA"}'),
                 FakeUpstream(200, b"\x00garbage" * 64, "application/x-python-pyc"),
                 FakeUpstream(500, b'{"error": "internal", "message": "broken"}')]
        self.fakes += liars
        for i, liar in enumerate(liars):
            node = self.node(liar.url)
            path = self.source("target%d.py" % i, "VALUE = 'target %d'\n" % i)
            status, outcome, pyc = self.compile(node, path)
            self.assertEqual((status, outcome), (200, "compiled"), liar.url)
            self.assertEqual(self.run_pyc(pyc)["VALUE"], "target %d" % i)
            self.assertEqual(liar.requests, 1)
            status, outcome, pyc = self.lookup(node, path)
            self.assertEqual((status, outcome), (200, "hit"))
            self.assertEqual(self.run_pyc(pyc)["VALUE"], "target %d" % i)
            up = node.stats()["upstream"]
            self.assertEqual((up["hits"], up["misses"]), (0, 1))
            if i < 3:
                self.assertEqual((up["rejected"], up["errors"]), (1, 0))
            else:
                self.assertEqual((up["rejected"], up["errors"]), (0, 1))

    def test_an_upstream_list_is_tried_in_order(self):
        workdir = self.workdir("central")  # this central on a unix socket of its own
        central = Server(workdir, "--workers", "1", "--listen",
                         "unix:" + os.path.join(workdir, "central.sock"), port_args=())
        self.servers.append(central)
        dead = "http://127.0.0.1:1"
        node = self.node(dead, central.url)
        path = self.source("o.py", "O = 1\n")
        self.assertEqual(self.compile(node, path)[:2], (200, "upstream"))
        self.assertEqual(central.stats()["compiles"], 1)
        up = node.stats()["upstream"]
        self.assertEqual([s["up"] for s in up["servers"]], [False, True])
        self.assertEqual((up["hits"], up["errors"]), (1, 1))

    def test_a_central_with_access_control_takes_the_node_token_from_a_file(self):
        tokens = os.path.join(self.tmp, "tokens.json")
        write_tokens(tokens, {"node": ("node-3f9a1c7e5b2d4086", ["read", "compile"])})
        token_file = os.path.join(self.tmp, "node.token")
        with open(os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write("node-3f9a1c7e5b2d4086\n")
        central = self.central("--tokens", tokens)
        # given by the environment, as every option can be
        env = dict(os.environ, PYCACHED_UPSTREAM=central.url,
                   PYCACHED_UPSTREAM_TOKEN_FILE=token_file)
        workdir = self.workdir("node")
        node = Server(workdir, "--workers", "1", "--listen",
                      "unix:" + os.path.join(workdir, "node.sock"), env=env, port_args=())
        self.servers.append(node)
        path = self.source("t.py", "T = 1\n")
        self.assertEqual(self.compile(node, path)[:2], (200, "upstream"))
        # a node without the token is refused by the central (401) and compiles itself
        stranger = self.node(central.url)
        path = self.source("t2.py", "T = 2\n")
        self.assertEqual(self.compile(stranger, path)[:2], (200, "compiled"))
        up = stranger.stats()["upstream"]
        self.assertEqual((up["hits"], up["errors"]), (0, 1))

    def test_an_https_upstream_is_verified_against_the_ca_file(self):
        certs = tempfile.mkdtemp(prefix="pcc-tiers-certs-")
        self.addCleanup(shutil.rmtree, certs, True)
        make_certificates(certs)
        central = self.central("--tls-cert", os.path.join(certs, "server.pem"), "--tls-key",
                               os.path.join(certs, "server.key"))
        self.assertTrue(central.url.startswith("https://"), central.url)
        node = self.node(central.url, args=("--upstream-ca-file",
                                            os.path.join(certs, "ca.pem")))
        path = self.source("tls.py", "TLS = 1\n")
        self.assertEqual(self.compile(node, path)[:2], (200, "upstream"))
        # a node that trusts another CA does not take the central's word: compiled itself
        doubter = self.node(central.url, args=("--upstream-ca-file",
                                               os.path.join(certs, "otherca.pem")))
        self.assertEqual(self.compile(doubter, path)[:2], (200, "compiled"))
        up = doubter.stats()["upstream"]
        self.assertEqual((up["hits"], up["errors"] + up["rejected"]), (0, 1))

    def test_a_source_over_the_upstream_limit_does_not_take_the_upstream_down(self):
        central = self.central("--max-source", "64")
        node = self.node(central.url)
        big = self.source("big.py", "X = 1\n" * 20)
        self.assertEqual(self.compile(node, big)[:2], (200, "compiled"))
        small = self.source("small.py", "X = 2\n")
        self.assertEqual(self.compile(node, small)[:2], (200, "upstream"))
        up = node.stats()["upstream"]
        self.assertEqual((up["errors"], up["skipped"], up["hits"]), (1, 0, 1))

    def test_bad_upstream_lists_are_refused_at_start(self):
        for bad, says in (("ftp://x", "is not a URL of a pycached"),
                          ("http://127.0.0.1:1,,http://127.0.0.1:2", "is not a URL"),
                          (",".join(["http://127.0.0.1:1"] * 9), "more than 8 URLs")):
            run = subprocess.run([os.environ.get("PCC_PYCACHED", "build/server/pycached"),
                                  "--store", os.path.join(self.tmp, "refused"), "--upstream",
                                  bad], capture_output=True, text=True, timeout=60)
            self.assertEqual(run.returncode, 2, run.stderr)
            self.assertIn(says, run.stderr)

    def test_the_hook_through_a_node_socket_gets_every_module(self):
        central = self.central()
        node = self.node(central.url)
        root = self.small_package()
        first = self.import_small(node.url, root)
        self.assertEqual((first["value"], first["double"]), (1, 42))
        self.assertEqual((first["stats"]["compiles_asked"], first["stats"]["fallbacks"]), (3, {}))
        self.assertEqual((central.stats()["compiles"], node.stats()["compiles"]), (3, 0))
        before = central.stats()["requests"]
        second = self.import_small(node.url, root)
        self.assertEqual((second["stats"]["hits"], second["stats"]["fallbacks"]), (3, {}))
        self.assertEqual(central.stats()["requests"], before + 1)  # the stats request only


def magic_of(python):
    run = subprocess.run([python, "-c", "import importlib.util as u; print(u.MAGIC_NUMBER.hex())"],
                         capture_output=True, text=True, timeout=60)
    return run.stdout.strip() if run.returncode == 0 else None


class Forwarding(TierCase):
    def test_a_magic_the_node_cannot_compile_is_forwarded(self):
        if not os.access(PYTHON312, os.X_OK):
            self.skipTest("needs CPython 3.12 (pyenv)")
        magic312 = magic_of(PYTHON312)
        central = self.central("--compiler", PYTHON312)
        node = self.node(central.url)  # the embedded 3.11 only
        path = self.source("f.py", "F = [n * n for n in range(4)]\n")
        # a lookup of that magic is a miss here (the client then compiles), not unsupported
        status, _, body = self.lookup(node, path, magic312)
        self.assertEqual((status, json.loads(body)["error"]), (404, "miss"))
        status, outcome, pyc = self.compile(node, path, magic312)
        self.assertEqual((status, outcome), (200, "upstream"), pyc)
        self.assertEqual(pyc[:4], bytes.fromhex(magic312))
        run = subprocess.run([PYTHON312, "-c", "import marshal, sys; ns = {}; "
                              "exec(marshal.loads(sys.stdin.buffer.read()[16:]), ns); "
                              "print(ns['F'])"], input=pyc, capture_output=True, timeout=60)
        self.assertEqual(run.stdout.strip(), b"[0, 1, 4, 9]", run.stderr)
        self.assertEqual(node.stats()["compiles"], 0)
        # stored on the node: its lookups hit without the central
        before = central.stats()["requests"]
        self.assertEqual(self.lookup(node, path, magic312)[:2], (200, "hit"))
        self.assertEqual(central.stats()["requests"], before + 1)
        # a magic neither has: unsupported-magic, as the upstream said
        status, _, body = self.compile(node, path, "50010d0a")
        self.assertEqual((status, json.loads(body)["error"]), (422, "unsupported-magic"))
        self.assertEqual(node.stats()["upstream"]["unsupported"], 1)

    def test_a_forwarded_compile_with_the_upstream_down_is_compiler_unavailable(self):
        node = self.node("http://127.0.0.1:1")
        path = self.source("d.py", "D = 1\n")
        t0 = time.monotonic()
        status, _, body = self.compile(node, path, "cb0d0d0a")
        self.assertEqual((status, json.loads(body)["error"]), (503, "compiler-unavailable"))
        self.assertLess(time.monotonic() - t0, 5)
        # the node's own magic still compiles here
        self.assertEqual(self.compile(node, path)[:2], (200, "compiled"))


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
