"""End-to-end tests of the fleet-wide warm start: import profiles recorded by the hook, bundles
that serve a whole program in one response, damaged bundles, and batched lookups. Real server,
real /usr/bin/python3 processes through `pycachectl exec`.

Run by meson (`meson test warm-start`) with PCC_PYCACHED, PCC_PYCACHECTL, PCC_HOOK_ROOT and
PCC_REFERENCE_PYTHON in the environment.
"""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import MAGIC, make_tree, query, run_tests, source_params  # noqa: E402
from test_hook import FaultHandler, FaultProxy, HookCase  # noqa: E402

MODULES = 5


class WarmStart(HookCase):
    def package(self, value=1):
        root = os.path.join(self.tmp, "src")
        files = {"app/__init__.py": "from . import m0, m1, m2, m3\n"}
        for i in range(MODULES - 1):
            files["app/m%d.py" % i] = "VALUE = %d\n" % (value * 10 + i)
        return make_tree(root, files)

    def run_app(self, url, root, env=None):
        # the same command every run: the default profile is derived from it
        code = ("import sys, json; sys.path.insert(0, %r); import app, pycached; "
                "print(json.dumps({'values': [m.VALUE for m in (app.m0, app.m1, app.m2, "
                "app.m3)], 'stats': pycached.stats()}))" % root)
        run = self.hook_run(url, code, env=dict({"PYCACHED_PROFILE": ""}, **(env or {})))
        self.assertEqual(run.returncode, 0, run.stderr)
        return json.loads(run.stdout)

    def test_a_profile_is_served_as_one_bundle_to_the_next_process(self):
        server = self.start_server()
        root = self.package()
        first = self.run_app(server.url, root)
        self.assertEqual(first["stats"]["compiles_asked"], MODULES)
        self.assertEqual(first["stats"]["fallbacks"], {})
        self.assertEqual(first["stats"]["bundle_missing"], 1)
        before = server.stats()["requests"]
        second = self.run_app(server.url, root)
        self.assertEqual(second["values"], first["values"])
        stats = second["stats"]
        self.assertEqual((stats["bundle_entries"], stats["bundle_hits"]), (MODULES, MODULES))
        self.assertEqual((stats["hits"], stats["compiles_asked"], stats["local_compile"]),
                         (0, 0, 0))
        # one round trip for the whole program (+1 for the stats call of this test); the
        # profile was not sent again since the bundle held every module
        self.assertEqual(server.stats()["requests"] - before, 1 + 1)

    def test_entries_served_by_a_bundle_count_as_hits(self):
        server = self.start_server()
        root = self.package()
        self.run_app(server.url, root)  # compiles each module and records the profile
        before = server.stats()
        second = self.run_app(server.url, root)
        self.assertEqual(second["stats"]["bundle_hits"], MODULES)
        after = server.stats()
        self.assertEqual(after["hits"] - before["hits"], MODULES)
        self.assertEqual(after["bundle_hits"] - before["bundle_hits"], MODULES)
        self.assertEqual(after["bundles"] - before["bundles"], 1)
        self.assertEqual(after["misses"], before["misses"])
        # the first run looked up MODULES and missed them all: MODULES hits of 2 * MODULES
        self.assertAlmostEqual(after["hit_ratio"], 0.5)
        for _ in range(8):  # a warm fleet: nearly every import served
            self.run_app(server.url, root)
        self.assertGreater(server.stats()["hit_ratio"], 0.85)
        status, _, data = server.request("GET", "/v1/admin/entries?limit=100")
        self.assertEqual(status, 200, data)
        entries = [e for e in json.loads(data)["entries"] if e["path"].startswith(root)]
        self.assertEqual(len(entries), MODULES)
        for entry in entries:  # what admin ls shows: each module was served, by the bundles
            self.assertEqual(entry["hits"], 9, entry["path"])
            self.assertIsNotNone(entry["last_hit"])

    def test_bundles_and_batches_served_directly_count_each_entry(self):
        """Both forms of a bundle (built, then from memory; JSON) and a batch, by hand."""
        server = self.start_server()
        root = self.package()
        paths = sorted(os.path.join(root, "app", "m%d.py" % i) for i in range(3))
        for path in paths:
            params = source_params(path, with_hash=False)
            status, _, body = server.request("POST", "/v1/compile?" + query(params),
                                             open(path, "rb").read())
            self.assertEqual(status, 200, body)
        profile = urllib.parse.urlencode({"magic": MAGIC, "profile": "by-hand"})
        status, _, body = server.request("POST", "/v1/profile?" + profile,
                                         json.dumps({"paths": paths}).encode(),
                                         {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        before = server.stats()
        for form, cache in (("", "built"), ("", "hit"), ("&format=json", None)):
            status, headers, body = server.request("GET", "/v1/bundle?" + profile + form)
            self.assertEqual(status, 200, body)
            if cache:
                self.assertEqual((headers["X-Pycached-Bundle-Cache"],
                                  headers["X-Pycached-Bundle-Entries"]), (cache, "3"))
            else:
                self.assertEqual(len(json.loads(body)["entries"]), 3)
        lookups = [source_params(paths[0]), source_params(os.path.join(root, "app", "m3.py"))]
        lookups[1]["mtime"] += 1  # a version never stored: a miss
        status, _, body = server.request("POST", "/v1/batch",
                                         json.dumps({"lookups": lookups}).encode(),
                                         {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        after = server.stats()
        self.assertEqual(after["hits"] - before["hits"], 3 * 3 + 1)
        self.assertEqual(after["bundle_hits"] - before["bundle_hits"], 3 * 3)
        self.assertEqual(after["bundles"] - before["bundles"], 3)
        self.assertGreater(after["bundle_bytes"], before["bundle_bytes"])
        self.assertEqual(after["misses"]["absent"] - before["misses"]["absent"], 1)
        self.assertEqual(after["profiles_received"], 1)
        status, _, data = server.request("GET", "/v1/admin/entries?limit=100")
        hits = {e["path"]: e["hits"] for e in json.loads(data)["entries"]}
        self.assertEqual([hits[p] for p in paths], [4, 3, 3])

    def test_an_edited_source_in_a_bundle_is_recompiled(self):
        server = self.start_server()
        root = self.package()
        self.run_app(server.url, root)
        self.assertEqual(self.run_app(server.url, root)["stats"]["bundle_hits"], MODULES)
        m1 = os.path.join(root, "app", "m1.py")
        st = os.stat(m1)
        with open(m1, "w") as f:  # same size, same mtime: only the hash can tell
            f.write("VALUE = 99\n")
        os.utime(m1, ns=(st.st_atime_ns, st.st_mtime_ns))
        third = self.run_app(server.url, root)
        self.assertEqual(third["values"][1], 99, "the new code runs, never the bundled one")
        self.assertEqual((third["stats"]["bundle_stale"], third["stats"]["bundle_hits"],
                          third["stats"]["compiles_asked"]), (1, MODULES - 1, 1))
        fourth = self.run_app(server.url, root)  # the bundle now carries the new code
        self.assertEqual((fourth["values"][1], fourth["stats"]["bundle_hits"]), (99, MODULES))

    def test_damaged_bundles_fall_back_without_error(self):
        server = self.start_server()
        root = self.package()
        self.run_app(server.url, root)
        cases = {"bundle-truncate": ("bad-bundle", 0), "bundle-flip": ("bad-bundle", 0),
                 "bundle-flip-entry": (None, 1)}
        for mode, (reason, skipped) in cases.items():
            proxy = FaultProxy(server.port, mode)
            thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05})
            thread.start()
            try:
                out = self.run_app("http://127.0.0.1:%d" % proxy.server_address[1], root)
            finally:
                proxy.shutdown()
                proxy.server_close()
                thread.join(10)
            stats = out["stats"]
            self.assertEqual(out["values"], [10, 11, 12, 13], mode)
            self.assertEqual(stats["local_compile"], 0, mode)
            if reason:  # the whole bundle refused: every module asked for on its own
                self.assertEqual(stats["fallbacks"], {"bundle-" + reason: 1}, mode)
                self.assertEqual(stats["hits"], MODULES, mode)
            else:  # one entry refused: that module alone asked for
                self.assertEqual((stats["bundle_skipped"], stats["bundle_hits"], stats["hits"]),
                                 (skipped, MODULES - 1, 1), mode)

    def test_profile_off_and_bad_profiles(self):
        server = self.start_server()
        root = self.package()
        self.run_app(server.url, root, env={"PYCACHED_PROFILE": "off"})
        out = self.run_app(server.url, root, env={"PYCACHED_PROFILE": "off"})
        self.assertNotIn("bundle_entries", out["stats"])
        self.assertEqual(out["stats"]["hits"], MODULES)
        query = urllib.parse.urlencode({"magic": MAGIC, "profile": "p" * 201})
        status, _, body = server.request("POST", "/v1/profile?" + query, b'{"paths": []}')
        self.assertEqual((status, json.loads(body)["param"]), (400, "profile"))
        query = urllib.parse.urlencode({"magic": MAGIC, "profile": "x"})
        status, _, body = server.request("POST", "/v1/profile?" + query, b'{"paths": ["rel"]}')
        self.assertEqual((status, json.loads(body)["param"]), (400, "paths"))
        status, _, body = server.request("POST", "/v1/profile?" + query,
                                         b"[" + b"0," * (3 << 20) + b"0]")
        self.assertEqual((status, json.loads(body)["error"]), (413, "too-large"))
        status, _, body = server.request("GET", "/v1/bundle?" + urllib.parse.urlencode(
            {"magic": MAGIC, "profile": "never-recorded"}))
        self.assertEqual((status, json.loads(body)["error"]), (404, "not-found"))

    def test_clients_report_their_fallbacks(self):
        server = self.start_server()
        root = self.package()
        out = self.run_app(server.url, root, env={"PYCACHED_READONLY": "1"})
        self.assertEqual(out["stats"]["fallbacks"], {"miss": MODULES})
        status, stats = server.json("GET", "/v1/admin/stats")
        self.assertEqual(stats["total"]["fallbacks"], {"miss": MODULES})
        self.assertEqual(stats["magics"][MAGIC]["fallbacks"], {"miss": MODULES})
        _, _, metrics = server.request("GET", "/metrics")
        self.assertIn('pycached_client_fallbacks_total{magic="%s",reason="miss"} %d'
                      % (MAGIC, MODULES), metrics.decode().splitlines())
        query = "/v1/report?" + urllib.parse.urlencode({"magic": MAGIC})
        for bad in (b"{}", b'{"fallbacks": {"Bad Reason": 1}}', b'{"fallbacks": {"x": -1}}',
                    b"not json"):
            status, _, body = server.request("POST", query, bad)
            self.assertEqual((status, json.loads(body)["param"]), (400, "fallbacks"), bad)
        out = self.run_app(server.url, root)  # no fallback: nothing reported
        self.assertEqual(server.json("GET", "/v1/admin/stats")[1]["total"]["fallbacks"],
                         {"miss": MODULES})

    def test_zstd_bundles_when_asked_for(self):
        """PYCACHED_BUNDLE_ZSTD=1: the bundle comes compressed (Content-Encoding: zstd) and
        decompresses to the very bytes of the plain one; without it, or with zstd;q=0, it is
        sent plain."""
        server = self.start_server()
        root = self.package()
        env = {"PYCACHED_PROFILE": "zstd-test"}
        self.run_app(server.url, root, env)
        out = self.run_app(server.url, root, dict(env, PYCACHED_BUNDLE_ZSTD="1"))
        self.assertEqual(out["values"], [10, 11, 12, 13])
        stats = out["stats"]
        self.assertEqual((stats["bundle_entries"], stats["bundle_hits"], stats["fallbacks"]),
                         (MODULES, MODULES, {}))
        path = "/v1/bundle?" + urllib.parse.urlencode(
            {"magic": MAGIC, "opt": 0, "profile": "zstd-test"})
        status, headers, plain = server.request("GET", path)
        self.assertEqual((status, headers.get("Content-Encoding")), (200, None))
        self.assertEqual(headers["Vary"], "Accept-Encoding")
        status, headers, packed = server.request("GET", path, headers={
            "Accept-Encoding": "gzip, zstd"})
        self.assertEqual((status, headers["Content-Encoding"]), (200, "zstd"))
        self.assertLess(len(packed), len(plain))
        unpacked = subprocess.run(["zstd", "-dc"], input=packed, capture_output=True,
                                  check=True, timeout=30).stdout
        self.assertEqual(unpacked, plain)
        for refusal in ("zstd;q=0", "zstd; q=0.000, gzip", "gzip"):
            status, headers, body = server.request("GET", path, headers={
                "Accept-Encoding": refusal})
            self.assertEqual((status, headers.get("Content-Encoding"), body),
                             (200, None, plain), refusal)

    def test_batch_lookups(self):
        server = self.start_server()
        root = self.package()
        self.run_app(server.url, root)
        m0 = os.path.join(root, "app", "m0.py")
        st = os.stat(m0)
        body = json.dumps({"lookups": [
            {"magic": MAGIC, "path": m0, "mtime": int(st.st_mtime), "size": st.st_size},
            {"magic": MAGIC, "path": "/no/such.py", "mtime": 1, "size": 1},
            {"magic": MAGIC, "path": m0, "mtime": 1.5, "size": st.st_size},
        ]}).encode()
        status, _, data = server.request("POST", "/v1/batch", body)
        results = json.loads(data)["results"]
        self.assertEqual(status, 200)
        self.assertEqual(results[0]["path"], m0)
        self.assertEqual((results[1]["error"], results[1]["reason"]), ("miss", "absent"))
        self.assertEqual((results[2]["error"], results[2]["param"]), ("bad-parameter", "mtime"))
        status, _, data = server.request("POST", "/v1/batch", json.dumps(
            {"lookups": [{}] * 1001}).encode())
        self.assertEqual((status, json.loads(data)["param"]), (400, "lookups"))


class SlowBundles(FaultHandler):
    """Forwards to the server, holding every bundle request for the proxy's `delay` seconds."""

    def forward(self):
        if self.path.startswith("/v1/bundle"):
            time.sleep(self.server.delay)
        super().forward()


# Waits until the fetch thread has hashed every bundled source, then rewrites m1 in place (same
# size, same mtime), then imports the package.
AHEAD_PROGRAM = """
import json, os, sys, time
sys.path.insert(0, %(root)r)
import pycached
from pycached import _hook
deadline = time.monotonic() + 30
while len(_hook._source_ids) < %(modules)d and time.monotonic() < deadline:
    time.sleep(0.01)
ahead = len(_hook._source_ids)
m1 = os.path.join(%(root)r, "app", "m1.py")
st = os.stat(m1)
with open(m1, "w") as f:
    f.write("VALUE = 99\\n")
os.utime(m1, ns=(st.st_atime_ns, st.st_mtime_ns))
import app
print(json.dumps({"ahead": ahead, "values": [m.VALUE for m in (app.m0, app.m1, app.m2, app.m3)],
                  "stats": pycached.stats()}))
"""


class BackgroundBundle(HookCase):
    """The bundle is fetched from install on, by a thread; in hash mode that thread also hashes
    the bundled sources ahead of their imports."""
    package = WarmStart.package
    run_app = WarmStart.run_app

    def test_the_bundle_arrives_while_the_program_starts(self):
        server = self.start_server()
        root = self.package()
        self.run_app(server.url, root, env={"PYCACHED_PROFILE": "background"})
        proxy = FaultProxy(server.port, "pass")
        proxy.RequestHandlerClass = SlowBundles
        proxy.delay = 1.5
        thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        code = ("import json, sys, time; sys.path.insert(0, %r); time.sleep(2.5)\n"
                "t = time.monotonic(); import app; elapsed = time.monotonic() - t\n"
                "import pycached; print(json.dumps({'elapsed': elapsed, "
                "'stats': pycached.stats()}))" % root)
        try:
            run = self.hook_run("http://127.0.0.1:%d" % proxy.server_address[1], code,
                                env={"PYCACHED_PROFILE": "background"})
        finally:
            proxy.shutdown()
            proxy.server_close()
            thread.join(10)
        self.assertEqual(run.returncode, 0, run.stderr)
        out = json.loads(run.stdout)
        self.assertEqual(out["stats"]["bundle_hits"], MODULES)
        self.assertLess(out["elapsed"], 1.0, "the import waited for a bundle fetched meanwhile")

    def test_sources_hashed_ahead_are_checked_again_at_their_import(self):
        server = self.start_server()
        root = self.package()
        self.run_app(server.url, root, env={"PYCACHED_PROFILE": "ahead"})
        time.sleep(2.2)  # the sources' ctimes are now older than the hook's racy window
        run = self.hook_run(server.url, AHEAD_PROGRAM % {"root": root, "modules": MODULES},
                            env={"PYCACHED_PROFILE": "ahead"})
        self.assertEqual(run.returncode, 0, run.stderr)
        out = json.loads(run.stdout)
        self.assertEqual(out["ahead"], MODULES, "every bundled source was hashed ahead")
        self.assertEqual(out["values"][1], 99, "m1 changed after it was hashed: the new code runs")
        stats = out["stats"]
        self.assertEqual((stats["bundle_ids_ahead"], stats["bundle_stale"],
                          stats["bundle_hits"], stats["compiles_asked"]),
                         (MODULES - 1, 1, MODULES - 1, 1))
        # timestamp mode hashes nothing
        out = self.run_app(server.url, root, env={"PYCACHED_PROFILE": "ahead",
                                                  "PYCACHED_VALIDATION": "timestamp"})
        self.assertEqual(out["values"][1], 99)
        self.assertNotIn("bundle_ids_ahead", out["stats"])


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
