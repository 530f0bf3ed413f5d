"""End-to-end tests of access control, the admin API and the magic-number lifecycle: a real
pycached with a token file, two compiler backends (the embedded CPython and Debian's pypy3),
restarts, SIGHUP, backups restored into a new server, and real CPython and PyPy interpreters
loading what the server compiled for them.

Run by meson (`meson test admin`) with PCC_PYCACHED, PCC_PYCACHECTL, PCC_HOOK_ROOT and
PCC_REFERENCE_PYTHON in the environment.
"""
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import (MAGIC, PYCACHECTL, PYTHON, Server, java_hash, make_tree,  # noqa: E402
                      run_tests)

PYPY = "/usr/bin/pypy3"
PYPY_MAGIC = "50010d0a"
TOKENS = {
    "ops": ("ops-2c8e4a6f0b1d9e37", ["read", "compile", "admin"]),
    "ci": ("ci-7b3f9a1e5c2d8f40", ["read", "compile"]),
    "reader": ("reader-5d1c7e9a3b2f4068", ["read"]),
}
ADMIN = {"Authorization": "Bearer " + TOKENS["ops"][0]}
CI = {"Authorization": "Bearer " + TOKENS["ci"][0]}


def write_tokens(path, tokens):
    with open(path, "w") as f:
        json.dump({"tokens": [{"name": n, "token": t, "roles": r}
                              for n, (t, r) in tokens.items()]}, f)


PROMTOOL = shutil.which("promtool")
METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"'
                         r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*)?\})? (\S+)$')


def check_prometheus_text(case, text):
    """Prometheus' own linter (promtool check metrics, Debian's prometheus package) when it is
    installed; and always a strict parse: every family has HELP and TYPE before its samples,
    each sample is NAME{labels} VALUE of the family declared last, no family twice, no line
    twice, counters end in _total."""
    if PROMTOOL:
        run = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                             text=True, timeout=60)
        case.assertEqual(run.returncode, 0, run.stdout + run.stderr)
    case.assertTrue(text.endswith("\n"))
    types, helps, lines = {}, set(), set()
    current = None
    for line in text.splitlines():
        case.assertNotIn(line, lines, "a line twice")
        lines.add(line)
        if line.startswith("# HELP "):
            name = line.split()[2]
            case.assertNotIn(name, helps, "HELP twice: " + line)
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            case.assertIn(kind, ("counter", "gauge", "histogram"), line)
            case.assertIn(name, helps, "TYPE without HELP: " + line)
            case.assertNotIn(name, types, "TYPE twice: " + line)
            types[name] = kind
            current = name
            continue
        match = METRIC_LINE.match(line)
        case.assertIsNotNone(match, "not a sample: %r" % line)
        name, value = match.group(1), match.group(5)
        float(value)
        family = name
        if types.get(current) == "histogram":
            family = re.sub(r"_(bucket|sum|count)$", "", name)
        case.assertEqual(family, current, "a sample outside its family: " + line)
        if types[current] == "counter":
            case.assertTrue(name.endswith("_total"), line)


def q(**params):
    return urllib.parse.urlencode(params)


class AdminCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pcc-admin-")
        self.tokens = os.path.join(self.tmp, "tokens.json")
        write_tokens(self.tokens, TOKENS)
        self.backups = os.path.join(self.tmp, "backups")
        os.makedirs(self.backups)
        self.servers = []

    def tearDown(self):
        for server in self.servers:
            server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, *args, store=None):
        workdir = store or self.tmp
        server = Server(workdir, "--workers", "1", "--tokens", self.tokens,
                        "--backup-dir", self.backups, *args)
        self.servers.append(server)
        return server

    def source(self, name, text):
        return os.path.join(make_tree(os.path.join(self.tmp, "src"), {name: text}), name)

    def compile(self, server, path, magic=MAGIC, headers=CI):
        st = os.stat(path)
        status, _, body = server.request(
            "POST", "/v1/compile?" + q(magic=magic, path=path, mtime=int(st.st_mtime)),
            open(path, "rb").read(), headers)
        return status, json.loads(body)

    def lookup(self, server, path, magic=MAGIC, headers=CI):
        data = open(path, "rb").read()
        st = os.stat(path)
        return server.json("GET", "/v1/code?" + q(magic=magic, path=path,
                                                  mtime=int(st.st_mtime), size=len(data),
                                                  hash=java_hash(data)), headers=headers)

    def admin(self, server, method, path, headers=ADMIN):
        return server.json(method, path, headers=headers)


class AccessControl(AdminCase):
    def test_every_endpoint_checks_its_role(self):
        server = self.start()
        path = self.source("m.py", "M = 1\n")
        self.assertEqual(self.compile(server, path)[0], 200)
        code_query = "/v1/code?" + q(magic=MAGIC, path=path, mtime=int(os.stat(path).st_mtime),
                                     size=6)
        endpoints = [  # method, path, role it needs
            ("GET", code_query, "read"),
            ("GET", "/v1/stats", "read"),
            ("POST", "/v1/compile?" + q(magic=MAGIC, path=path, mtime=1), "compile"),
            ("GET", "/metrics", "read"),  # a scraper's token need not be able to purge
            ("GET", "/v1/admin/stats", "admin"),
            ("GET", "/v1/admin/magics", "admin"),
            ("GET", "/v1/admin/entries", "admin"),
            ("GET", "/v1/admin/entry?" + q(magic=MAGIC, path=path), "admin"),
            ("DELETE", "/v1/admin/entry?" + q(magic=MAGIC, path="/none.py"), "admin"),
            ("POST", "/v1/admin/invalidate?" + q(prefix="/nothing/here/"), "admin"),
            ("POST", "/v1/admin/magics/3b0d0d0a/retire", "admin"),
            ("POST", "/v1/admin/backup", "admin"),
            ("GET", "/v1/admin/backup", "admin"),
            ("POST", "/v1/admin/stats/zero", "admin"),
            ("POST", "/v1/admin/purge", "admin"),  # last: it empties the store
        ]
        for method, url, role in endpoints:
            status, headers, body = server.request(method, url, b"M = 1\n")
            self.assertEqual((status, json.loads(body)["error"]), (401, "unauthorized"), url)
            self.assertEqual(headers.get("WWW-Authenticate"), "Bearer", url)
            status, _, body = server.request(method, url, b"M = 1\n",
                                             {"Authorization": "Bearer not-a-token-0123456789"})
            self.assertEqual(status, 401, url)
            lacking = "reader" if role != "read" else None
            if lacking:
                status, _, body = server.request(
                    method, url, b"M = 1\n", {"Authorization": "Bearer " + TOKENS[lacking][0]})
                body = json.loads(body)
                self.assertEqual((status, body["error"], body["role"]), (403, "forbidden", role),
                                 url)
            status, _, body = server.request(method, url, b"M = 1\n", ADMIN)
            self.assertIn(status, (200, 404), (url, body[:200]))  # 404: the entry named is absent
        self.assertEqual(server.request("GET", "/healthz")[0], 200)
        self.assertEqual(server.request("GET", "/admin")[0], 200)

    def test_a_reader_token_scrapes_metrics_and_nothing_of_admin(self):
        """/metrics took the admin token, which can also purge the store (issue 14)."""
        server = self.start()
        reader = {"Authorization": "Bearer " + TOKENS["reader"][0]}
        status, _, text = server.request("GET", "/metrics", headers=reader)
        self.assertEqual(status, 200)
        self.assertIn(b"pycached_", text)
        status, _, body = server.request("POST", "/v1/admin/purge", headers=reader)
        self.assertEqual((status, json.loads(body)["role"]), (403, "admin"))

    def test_sighup_reloads_the_tokens(self):
        server = self.start()
        new = {"ops": TOKENS["ops"], "late": ("late-0a9b8c7d6e5f4321", ["read"])}
        write_tokens(self.tokens, new)
        os.kill(server.proc.pid, signal.SIGHUP)
        late = {"Authorization": "Bearer " + new["late"][0]}
        deadline = time.monotonic() + 10
        while server.request("GET", "/v1/stats", headers=late)[0] != 200:
            self.assertLess(time.monotonic(), deadline, "the new token never worked")
            time.sleep(0.05)
        self.assertEqual(server.request("GET", "/v1/stats", headers=CI)[0], 401, "ci was removed")
        # a broken file is refused and the tokens in force stay
        with open(self.tokens, "w") as f:
            f.write("{not json")
        os.kill(server.proc.pid, signal.SIGHUP)
        time.sleep(0.3)
        self.assertEqual(server.request("GET", "/v1/stats", headers=late)[0], 200)
        self.assertEqual(server.proc.poll(), None)

    def test_safe_defaults(self):
        run = subprocess.run([os.environ.get("PCC_PYCACHED", "build/server/pycached"),
                              "--listen", "0.0.0.0", "--port", "0",
                              "--store", os.path.join(self.tmp, "s")],
                             capture_output=True, text=True, timeout=30)
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("--insecure", run.stderr)
        write_tokens(self.tokens, {"x": ("short", ["read"])})
        run = subprocess.run([os.environ.get("PCC_PYCACHED", "build/server/pycached"),
                              "--tokens", self.tokens, "--store", os.path.join(self.tmp, "s")],
                             capture_output=True, text=True, timeout=30)
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("16..512", run.stderr)
        open_server = Server(self.tmp, "--workers", "1")
        self.servers.append(open_server)
        self.assertEqual(open_server.request("GET", "/v1/admin/stats")[0], 200,
                         "without --tokens (loopback only) every endpoint is open")


class Admin(AdminCase):
    def test_listing_show_delete_invalidate_purge(self):
        server = self.start()
        paths = [self.source("app/a%d.py" % i, "A = %d\n" % i) for i in range(5)]
        paths += [self.source("lib/b%d.py" % i, "B = %d\n" % i) for i in range(3)]
        for path in paths:
            self.assertEqual(self.compile(server, path)[0], 200)
        for _ in range(3):
            self.assertEqual(self.lookup(server, paths[0])[0], 200)

        seen, cursor, pages = [], None, 0
        while True:
            url = "/v1/admin/entries?" + q(limit=3, **({"cursor": cursor} if cursor else {}))
            status, page = self.admin(server, "GET", url)
            self.assertEqual(status, 200)
            seen += [e["path"] for e in page["entries"]]
            cursor, pages = page["next_cursor"], pages + 1
            if cursor is None or pages > 10:
                break
        self.assertEqual(sorted(seen), sorted(paths))
        self.assertGreaterEqual(pages, 3)
        app = os.path.join(self.tmp, "src", "app") + "/"
        status, page = self.admin(server, "GET", "/v1/admin/entries?" + q(prefix=app, magic=MAGIC))
        self.assertEqual(len(page["entries"]), 5)

        status, entry = self.admin(server, "GET", "/v1/admin/entry?" + q(magic=MAGIC,
                                                                         path=paths[0]))
        self.assertEqual((status, entry["hits"], entry["kind"]), (200, 3, "code"))
        self.assertTrue(entry["compiler"].startswith("cpython-3.11"))
        self.assertGreater(entry["bytes"], 0)
        self.assertIsInstance(entry["last_hit"], (int, float))

        status, body = self.admin(server, "DELETE", "/v1/admin/entry?" + q(magic=MAGIC,
                                                                           path=paths[0]))
        self.assertEqual((status, body["removed"]), (200, 1))
        self.assertEqual(self.lookup(server, paths[0])[0], 404)
        status, body = self.admin(server, "POST", "/v1/admin/invalidate?" + q(prefix=app))
        self.assertEqual((status, body["removed"]), (200, 4))
        self.assertEqual(self.lookup(server, paths[6])[0], 200, "lib/ is untouched")
        status, body = self.admin(server, "POST", "/v1/admin/invalidate")
        self.assertEqual((status, body["param"]), (400, "prefix"))
        status, body = self.admin(server, "POST", "/v1/admin/purge")
        self.assertEqual((status, body["removed"]), (200, 3))
        self.assertEqual(self.admin(server, "GET", "/v1/admin/stats")[1]["store"]["entries"], 0)

    def test_stats_and_metrics(self):
        server = self.start()
        path = self.source("s.py", "S = 1\n")
        self.compile(server, path)
        for _ in range(4):
            self.lookup(server, path)
        self.lookup(server, self.source("absent.py", "Z = 1\n"))
        status, stats = self.admin(server, "GET", "/v1/admin/stats")
        self.assertEqual(status, 200)
        mine = stats["magics"][MAGIC]
        self.assertEqual((mine["entries"], mine["hits"], mine["compiles"]), (1, 4, 1))
        self.assertEqual(mine["misses"]["absent"], 1)
        self.assertEqual(stats["total"]["hits"], 4)
        hit = stats["latency"]["hit"]
        self.assertEqual((hit["count"], hit["buckets"][-1]), (4, ["+Inf", 4]))
        self.assertEqual(stats["latency"]["compile"]["count"], 1)
        self.assertTrue(stats["build"]["lmdb"].startswith("LMDB"))
        status, _, text = server.request("GET", "/metrics", headers=ADMIN)
        lines = text.decode().splitlines()
        self.assertIn('pycached_hits_total{magic="%s"} 4' % MAGIC, lines)
        self.assertIn('pycached_entries{magic="%s"} 1' % MAGIC, lines)
        self.assertIn('pycached_hit_seconds_bucket{le="+Inf"} 4', lines)
        self.assertIn("pycached_hit_seconds_count 4", lines)
        for line in lines:  # every sample line is NAME[{labels}] NUMBER
            if not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                float(value)
                self.assertTrue(name.startswith("pycached_"), line)

    def test_hit_latency_resolves_below_100_us(self):
        """The first bucket was 100 µs: every hit fell in it and p50/p90/p99 read 50/90/99 µs,
        artefacts of interpolating inside [0, 100 µs] (issue 14)."""
        server = self.start()
        path = self.source("fast.py", "F = 1\n")
        self.compile(server, path)
        for _ in range(200):
            self.assertEqual(self.lookup(server, path)[0], 200)
        hist = self.admin(server, "GET", "/v1/admin/stats")[1]["latency"]["hit"]
        bounds = [b for b, _ in hist["buckets"][:-1]]
        self.assertEqual(bounds, sorted(bounds))
        self.assertGreaterEqual(len([b for b in bounds if b <= 100e-6]), 5, bounds)
        counts = [c for _, c in hist["buckets"]]
        self.assertEqual(counts, sorted(counts), "cumulative")
        self.assertEqual((hist["count"], counts[-1]), (200, 200))
        first = counts[0]
        self.assertLess(first, 200, "not every hit in the first bucket: %s" % hist["buckets"])
        # the median lies in a bucket of its own, not [0, first bound]
        rank, lower, below = 100, 0.0, 0
        for bound, count in hist["buckets"]:
            if count >= rank:
                break
            lower, below = bound, count
        self.assertGreater(lower, 0, hist["buckets"])
        status, _, text = server.request("GET", "/metrics", headers=ADMIN)
        self.assertIn('pycached_hit_seconds_bucket{le="1e-05"}', text.decode())

    def test_stats_zero(self):
        server = self.start()
        path = self.source("z.py", "Z = 1\n")
        self.compile(server, path)
        for _ in range(3):
            self.lookup(server, path)
        self.lookup(server, self.source("nothing.py", "N = 1\n"))
        self.assertEqual(self.admin(server, "GET", "/v1/admin/stats")[1]["total"]["hits"], 3)
        status, body = server.json("POST", "/v1/admin/stats/zero",
                                   headers={"Authorization": "Bearer " + TOKENS["reader"][0]})
        self.assertEqual((status, body["error"], body["role"]), (403, "forbidden", "admin"))
        self.assertEqual(self.admin(server, "GET", "/v1/admin/stats")[1]["total"]["hits"], 3)
        status, zeroed = self.admin(server, "POST", "/v1/admin/stats/zero")
        self.assertEqual(status, 200, zeroed)
        self.assertEqual((zeroed["hits"], zeroed["compiles"], zeroed["misses"]["absent"],
                          zeroed["hit_ratio"]), (0, 0, 0, None))
        self.assertLessEqual(zeroed["requests"], 1)  # at most the zeroing request itself
        stats = self.admin(server, "GET", "/v1/admin/stats")[1]
        self.assertEqual((stats["total"]["hits"], stats["latency"]["hit"]["count"],
                          stats["latency"]["compile"]["count"]), (0, 0, 0))
        self.assertEqual(stats["store"]["entries"], 1, "the store keeps its entries")
        self.assertEqual(self.lookup(server, path)[0], 200)
        self.assertEqual(server.json("GET", "/v1/stats", headers=CI)[1]["hits"], 1)
        entry = self.admin(server, "GET", "/v1/admin/entry?" + q(magic=MAGIC, path=path))[1]
        self.assertEqual(entry["hits"], 4, "per-entry hits are not zeroed")

    def test_metrics_text_format_and_health(self):
        server = self.start()
        path = self.source("h.py", "H = 1\n")
        self.compile(server, path)
        self.lookup(server, path)
        status, _, text = server.request("GET", "/metrics", headers=ADMIN)
        self.assertEqual(status, 200)
        text = text.decode()
        check_prometheus_text(self, text)
        samples = dict(line.rsplit(" ", 1) for line in text.splitlines()
                       if line and not line.startswith("#"))
        backend = '{backend="%s",magic="%s"}' % (
            server.json("GET", "/v1/stats", headers=CI)[1]["compilers"][0]["name"], MAGIC)
        for name in ("compiler_workers", "compiler_workers_alive", "compiler_workers_busy",
                     "compiler_restarts_total", "compiler_recycles_total"):
            self.assertIn("pycached_" + name + backend, samples)
        self.assertEqual(samples["pycached_compiler_workers" + backend], "1")
        self.assertEqual(samples["pycached_compiler_workers_busy" + backend], "0")
        for name in ("compile_failures_total", "compile_timeouts_total", "bundles_served_total",
                     "bundle_bytes_total", "profiles_received_total", "store_evictions_total",
                     "store_evicted_bytes_total", "store_profiles"):
            self.assertIn("pycached_" + name, samples)
        self.assertEqual(samples['pycached_misses_total{magic="%s",reason="unsupported_magic"}'
                                 % MAGIC], "0")
        self.assertEqual(samples['pycached_bundle_hits_total{magic="%s"}' % MAGIC], "0")

    def test_backup_then_restore_into_a_new_server(self):
        server = self.start()
        paths = [self.source("k%d.py" % i, "K = %d\n" % i) for i in range(3)]
        for path in paths:
            self.compile(server, path)
        status, body = self.admin(server, "POST", "/v1/admin/backup")
        self.assertEqual(status, 200)
        self.assertTrue(body["path"].startswith(self.backups))
        status, headers, download = server.request("GET", "/v1/admin/backup", headers=ADMIN)
        self.assertEqual((status, headers["Content-Type"]), (200, "application/octet-stream"))
        server.stop()
        for name, data_file in (("from-dir", os.path.join(body["path"], "data.mdb")),
                                ("from-download", None)):
            workdir = os.path.join(self.tmp, name)
            os.makedirs(os.path.join(workdir, "store"))
            target = os.path.join(workdir, "store", "data.mdb")
            if data_file:
                shutil.copy(data_file, target)
            else:
                with open(target, "wb") as f:
                    f.write(download)
            restored = self.start(store=workdir)
            for path in paths:
                self.assertEqual(self.lookup(restored, path)[0], 200, (name, path))
            self.assertEqual(self.admin(restored, "GET", "/v1/admin/stats")[1]["total"]
                             ["compiles"], 0, "served from the restored store, not recompiled")
            restored.stop()


@unittest.skipUnless(os.path.exists(PYPY), "needs Debian's pypy3")
class MagicLifecycle(AdminCase):
    def test_two_backends_restart_without_one_then_retire(self):
        server = self.start("--compiler", PYPY)
        status, magics = self.admin(server, "GET", "/v1/admin/magics")
        self.assertEqual(sorted(b["magic"] for b in magics["backends"]), sorted([MAGIC, PYPY_MAGIC]))
        app = os.path.join(self.tmp, "app")
        path = os.path.join(app, "shared.py")
        os.makedirs(app)
        with open(path, "w") as f:
            f.write("import sys\nWHO = sys.implementation.name\ndef twice(x):\n    return 2 * x\n")

        # a CPython client and a PyPy client, each served code of its own magic
        for magic, interpreter, tag in ((MAGIC, PYTHON, "cpython-311"),
                                        (PYPY_MAGIC, PYPY, "pypy39")):
            status, entry = self.compile(server, path, magic)
            self.assertEqual((status, entry["magic"]), (200, magic))
            cache = os.path.join(app, "__pycache__")
            os.makedirs(cache, exist_ok=True)
            pyc = os.path.join(cache, "shared.%s.pyc" % tag)
            with open(pyc, "wb") as f:
                f.write(base64.b64decode(entry["pyc"]))
            run = subprocess.run([interpreter, "-v", "-c", "import shared; print(shared.WHO, "
                                  "shared.twice(21))"], capture_output=True, text=True, cwd=app,
                                 timeout=120, env={"PATH": "/usr/bin:/bin"})
            self.assertEqual(run.returncode, 0, run.stderr[-2000:])
            self.assertIn("code object from '%s'" % pyc, run.stderr)
            self.assertEqual(run.stdout.split(), [("cpython" if magic == MAGIC else "pypy"),
                                                  "42"])
        other = self.source("only_pypy.py", "P = 1\n")
        self.assertEqual(self.compile(server, other, PYPY_MAGIC)[0], 200)
        server.stop()

        # restarted without the PyPy backend: its entries are kept and still served
        server = self.start()
        status, magics = self.admin(server, "GET", "/v1/admin/magics")
        store = {m["magic"]: m for m in magics["store"]}
        self.assertEqual((store[PYPY_MAGIC]["entries"], store[PYPY_MAGIC]["served"]), (2, False))
        self.assertTrue(store[MAGIC]["served"])
        self.assertEqual(self.lookup(server, path, PYPY_MAGIC)[0], 200)
        status, body = self.lookup(server, self.source("new.py", "N = 1\n"), PYPY_MAGIC)
        self.assertEqual((status, body["error"]), (422, "unsupported-magic"))
        status, body = self.compile(server, path, PYPY_MAGIC)
        self.assertEqual((status, body["error"]), (422, "unsupported-magic"))
        status, body = self.admin(server, "POST", "/v1/admin/magics/%s/retire" % MAGIC)
        self.assertEqual(status, 409, "a served magic is not retired")

        status, body = self.admin(server, "POST", "/v1/admin/magics/%s/retire" % PYPY_MAGIC)
        self.assertEqual((status, body["removed"]), (200, 2))
        status, body = self.lookup(server, path, PYPY_MAGIC)
        self.assertEqual((status, body["error"]), (422, "unsupported-magic"))
        self.assertEqual(self.lookup(server, path, MAGIC)[0], 200, "CPython entries stay")

        # a client of the retired magic falls back: nothing to fetch, it compiles and runs
        env = dict(os.environ, PYCACHED_URL=server.url, PYCACHED_TOKEN=TOKENS["ci"][0])
        os.remove(os.path.join(app, "__pycache__", "shared.pypy39.pyc"))
        get = subprocess.run([PYCACHECTL, "get", "--magic", PYPY_MAGIC, path, "-o",
                              os.path.join(app, "__pycache__", "shared.pypy39.pyc")],
                             capture_output=True, text=True, env=env, timeout=60)
        self.assertNotEqual(get.returncode, 0)
        self.assertFalse(os.path.exists(os.path.join(app, "__pycache__", "shared.pypy39.pyc")))
        run = subprocess.run([PYPY, "-B", "-c", "import shared; print(shared.twice(4))"],
                             capture_output=True, text=True, cwd=app, timeout=120)
        self.assertEqual(run.stdout.strip(), "8")

    def test_retire_unserved_magics_at_start(self):
        server = self.start("--compiler", PYPY)
        path = self.source("r.py", "R = 1\n")
        for magic in (MAGIC, PYPY_MAGIC):
            self.assertEqual(self.compile(server, path, magic)[0], 200)
        server.stop()
        server = self.start("--retire-unserved-magics")
        status, magics = self.admin(server, "GET", "/v1/admin/magics")
        self.assertEqual([m["magic"] for m in magics["store"]], [MAGIC])
        self.assertEqual(self.lookup(server, path, MAGIC)[0], 200)


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
