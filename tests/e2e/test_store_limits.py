"""End-to-end tests of a store that runs for months (issue 10): a real pycached with a small
--max-size and --map-size, real compiles through HTTP, pycachectl.

- Eviction: 3 x --max-size of code compiled through the server stays under --max-size, while a
  thread's lookups of a hot entry keep hitting and lookups of evicted entries are misses.
- Figures: /v1/stats, /v1/admin/stats, /metrics and pycachectl agree on one store.
- Space: fill, purge, fill again with an 8 MiB map (pycachectl warm, as the issue saw it); a
  source shared by two trees survives the invalidation of one; invalidate at a full map; a full
  file system (a tiny tmpfs; root only) is its own 507.
- Profiles through the admin API and pycachectl, bounded in count, gone with a purge.

Run by meson (`meson test store-limits`) with PCC_PYCACHED and PCC_PYCACHECTL in the environment.
Every server started is stopped by pid; a mounted tmpfs is unmounted.
"""
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

from test_e2e import MAGIC, PYCACHECTL, Server, query, run_tests, source_params

KIB = 1024
MIB = 1024 * KIB


def big_source(i, size):
    """A source whose code object holds a string of about size bytes, unique to i."""
    return ('"""module %d"""\nDATA = %r\n' % (i, ("%d-" % i) * (size // (len(str(i)) + 1)))).encode()


class StoreCase(unittest.TestCase):
    """Each test starts its own servers (self.start) in its own directory."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pcc-store-limits-")
        self.servers = []
        self.mounts = []

    def tearDown(self):
        codes = [server.stop() for server in self.servers]
        for mount in self.mounts:
            subprocess.run(["umount", mount], check=False, timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.assertEqual(codes, [0] * len(codes), "pycached exited badly on SIGTERM")

    def start(self, *args, workdir=None):
        server = Server(workdir or self.tmp, "--workers", "2", *args)
        self.servers.append(server)
        return server

    def write(self, name, data):
        path = os.path.join(self.tmp, "src", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def compile(self, server, path):
        params = source_params(path, with_hash=False)
        del params["size"]
        with open(path, "rb") as f:
            status, _, body = server.request("POST", "/v1/compile?" + query(params), f.read())
        return status, json.loads(body)

    def lookup(self, server, path):
        return server.json("GET", "/v1/code?" + query(source_params(path)))

    def ctl(self, server, *args):
        return subprocess.run([PYCACHECTL, "--server", server.url, *args], capture_output=True,
                              text=True, timeout=60)

    def store(self, server):
        status, stats = server.json("GET", "/v1/admin/stats")
        self.assertEqual(status, 200)
        return stats["store"]

    def wait_for(self, server, test, what, seconds=10):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            store = self.store(server)
            if test(store):
                return store
            time.sleep(0.1)
        self.fail("%s: not within %d s: %r" % (what, seconds, self.store(server)))

    def log(self, server):
        with open(os.path.join(os.path.dirname(server.store), "server.log"), "rb") as f:
            return f.read().decode(errors="replace")


class Eviction(StoreCase):
    def test_eviction_while_compiling_3x_max_size_and_hits_keep_answering(self):
        max_size = 256 * KIB
        server = self.start("--max-size", str(max_size))
        hot = self.write("hot.py", big_source(0, 8 * KIB))
        self.assertEqual(self.compile(server, hot)[0], 200)
        stop, seen, latencies = threading.Event(), [], []

        def hits():  # lookups during the compiles and evictions: read-only, never an error
            while not stop.is_set():
                t0 = time.monotonic()
                status, body = self.lookup(server, hot)
                latencies.append(time.monotonic() - t0)
                seen.append((status, body.get("error")))

        cold = [self.write("cold/m%d.py" % i, big_source(i, 16 * KIB)) for i in range(1, 50)]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            looker = pool.submit(hits)
            try:
                for path in cold:  # 49 x 16 KiB: over 3 x --max-size
                    status, body = self.compile(server, path)
                    self.assertEqual(status, 200, body)
                store = self.wait_for(server, lambda s: s["evictions"] > 0 and
                                      s["bytes"] <= max_size, "evicted under --max-size")
            finally:
                stop.set()  # also when the test fails: the pool waits for its thread
            looker.result(timeout=60)
        self.assertGreater(len(seen), 20)
        self.assertEqual(set(seen), {(200, None)}, "a hit failed during eviction")
        self.assertLess(max(latencies), 0.5, "hits waited behind eviction")
        self.assertGreaterEqual(store["evictions"], 30)
        self.assertEqual(store["max_size"], max_size)
        # the least recently used went with their path entries: a miss, never an error
        for path in cold[:10]:
            status, body = self.lookup(server, path)
            self.assertEqual((status, body["error"], body["reason"]), (404, "miss", "absent"))
        self.assertEqual(self.lookup(server, cold[-1])[0], 200)
        self.assertEqual(self.lookup(server, hot)[0], 200)
        # an evicted source compiles again, and the log said what happened
        self.assertEqual(self.compile(server, cold[0])[0], 200)
        self.wait_for(server, lambda s: s["bytes"] <= max_size, "under --max-size again")
        self.assertIn("least recently used blobs", self.log(server))


class Figures(StoreCase):
    def test_stats_admin_stats_metrics_and_cli_agree(self):
        server = self.start("--max-size", "4M")
        paths = [self.write("fig/m%d.py" % i, big_source(i, 2 * KIB)) for i in range(6)]
        shared = self.write("fig/other/m0.py", big_source(0, 2 * KIB))  # one blob, two paths
        for path in paths + [shared]:
            self.assertEqual(self.compile(server, path)[0], 200)
        for _ in range(5):  # the upkeep thread may write between two reads: read them again
            stats = server.stats()["store"]
            admin = server.json("GET", "/v1/admin/stats")[1]
            status, _, text = server.request("GET", "/metrics")
            metrics = {line.split()[0]: float(line.split()[1]) for line in text.decode().splitlines()
                       if line.startswith("pycached_")}
            cli = self.ctl(server, "stats")
            if stats == admin["store"] and stats == self.store(server):
                break
        self.assertEqual(stats, admin["store"], "/v1/stats and /v1/admin/stats")
        self.assertEqual((stats["entries"], stats["blobs"]), (7, 6))
        self.assertEqual(admin["total"]["entries"], stats["entries"])
        self.assertEqual(admin["total"]["bytes"], stats["bytes"], "one byte figure, one meaning")
        self.assertEqual(sum(m["bytes"] for m in admin["magics"].values()), stats["bytes"])
        entries = sum(int(e["bytes"]) for e in server.json(
            "GET", "/v1/admin/entries?limit=1000")[1]["entries"] if "other" not in e["path"])
        self.assertEqual(entries, stats["bytes"], "the bytes are the blobs' payload bytes")
        for name, key in (("entries", "entries"), ("blobs", "blobs"), ("bytes", "bytes"),
                          ("max_bytes", "max_size"), ("profiles", "profiles"),
                          ("used_bytes", "used"), ("free_bytes", "free"),
                          ("map_bytes", "map_size"), ("evictions_total", "evictions")):
            self.assertEqual(metrics["pycached_store_" + name], stats[key], name)
        self.assertEqual(metrics['pycached_entries{magic="%s"}' % MAGIC], stats["entries"])
        self.assertEqual(metrics['pycached_entry_bytes{magic="%s"}' % MAGIC], stats["bytes"])
        self.assertEqual(cli.returncode, 0, cli.stderr)
        for key in ("entries", "bytes", "used", "free", "max_size", "evictions"):
            self.assertRegex(cli.stdout, r"store\.%s +%d\n" % (key, stats[key]))
        admin_cli = self.ctl(server, "admin", "stats")
        self.assertIn("store: 7 entries, 6 blobs, 0 profiles", admin_cli.stdout)
        self.assertGreater(stats["used"], 0)
        self.assertLessEqual(stats["used"] + stats["free"], stats["map_size"])


class Space(StoreCase):
    def warm(self, server, tree):
        run = self.ctl(server, "warm", "--jobs", "2", tree)
        return run.returncode, run.stdout + run.stderr

    def test_fill_purge_fill_with_an_8m_map(self):
        server = self.start("--map-size", "8M", "--max-size", "8M")
        tree = os.path.join(self.tmp, "tree")
        for i in range(90):  # 90 x 64 KiB of code: most of an 8 MiB map
            os.makedirs(tree, exist_ok=True)
            with open(os.path.join(tree, "m%d.py" % i), "wb") as f:
                f.write(big_source(i, 64 * KIB))
        full = None
        for round_ in range(3):
            code, out = self.warm(server, tree)
            self.assertEqual(code, 0, out)
            store = self.store(server)
            self.assertEqual(store["entries"], 90, "round %d: %s" % (round_, out))
            full = full or store
            status, body = server.json("POST", "/v1/admin/purge")
            self.assertEqual((status, body["removed"]), (200, 90))
            empty = self.store(server)
            self.assertEqual((empty["entries"], empty["blobs"], empty["bytes"]), (0, 0, 0))
            self.assertLess(empty["used"], full["used"] / 10, "a purge frees the pages")
            self.assertGreater(empty["free"], full["used"] / 2)

    def test_a_shared_source_survives_a_prefix_invalidation(self):
        server = self.start()
        text = big_source(7, 1 * KIB)
        old, new = self.write("old/lib.py", text), self.write("new/lib.py", text)
        self.assertEqual(self.compile(server, old)[0], 200)
        self.assertEqual(self.compile(server, new)[0], 200)  # "stored": the same blob
        self.assertEqual(self.store(server)["blobs"], 1)
        prefix = os.path.dirname(old) + "/"
        status, body = server.json("POST", "/v1/admin/invalidate?" + query({"prefix": prefix}))
        self.assertEqual((status, body["removed"]), (200, 1))
        status, body = self.lookup(server, new)
        self.assertEqual(status, 200, body)
        self.assertEqual(self.lookup(server, old)[0], 404)
        store = self.store(server)
        self.assertEqual((store["entries"], store["blobs"]), (1, 1))
        status, _ = server.json("POST", "/v1/admin/invalidate?" + query(
            {"prefix": os.path.dirname(new) + "/"}))
        self.assertEqual(status, 200)
        store = self.store(server)
        self.assertEqual((store["entries"], store["blobs"], store["bytes"]), (0, 0, 0))

    def test_invalidate_at_a_full_map(self):
        server = self.start("--map-size", "2M", "--max-size", "2M")
        answers = []
        for i in range(100):
            status, body = self.compile(server, self.write("full/m%d.py" % i,
                                                           big_source(i, 64 * KIB)))
            answers.append((status, body.get("error"), body.get("reason")))
            if status != 200:
                break
        self.assertEqual(answers[-1], (507, "store-full", "map-full"))
        self.assertGreater(len(answers), 10)
        self.assertIn("--map-size", body["message"])
        self.assertIn("invalidate", body["message"])  # what to do
        full = self.store(server)
        prefix = os.path.join(self.tmp, "src", "full") + "/"
        status, body = server.json("POST", "/v1/admin/invalidate?" + query({"prefix": prefix}))
        self.assertEqual((status, body.get("removed")), (200, len(answers) - 1), body)
        after = self.store(server)
        self.assertLess(after["used"], full["used"] / 4)
        status, body = self.compile(server, self.write("after.py", big_source(1000, 64 * KIB)))
        self.assertEqual(status, 200, body)
        log = self.log(server)
        self.assertIn("is full but for the pages kept for deletions", log)
        self.assertIn("writes succeed again", log)

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("mount"), "needs root to mount")
    def test_a_full_disk_is_a_clear_507(self):
        workdir = os.path.join(self.tmp, "disk")
        store = os.path.join(workdir, "store")
        os.makedirs(store)
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "pcc-e2e", store],
                               capture_output=True, text=True, timeout=30)
        if mount.returncode != 0:
            self.skipTest("cannot mount a tmpfs: " + mount.stderr.strip())
        self.mounts.append(store)
        server = self.start("--map-size", "64M", workdir=workdir)
        answer, first = None, None
        for i in range(100):
            path = self.write("disk/m%d.py" % i, big_source(i, 64 * KIB))
            first = first or path
            status, body = self.compile(server, path)
            if status != 200:
                answer = (status, body)
                break
        self.assertIsNotNone(answer, "2 MiB of disk held 100 x 64 KiB")
        status, body = answer
        self.assertEqual((status, body["error"], body["reason"]), (507, "store-full", "disk-full"))
        self.assertIn("file system", body["message"])
        self.assertEqual(self.lookup(server, first)[0], 200, "what was stored is still served")
        self.assertIn("no space left on the file system of the store", self.log(server))


class Profiles(StoreCase):
    def post_profile(self, server, name, paths, magic=MAGIC):
        status, body = server.json("POST", "/v1/profile?" + query(
            {"magic": magic, "profile": name}), json.dumps({"paths": paths}).encode(),
            {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        return body["paths"]

    def test_profiles_through_the_admin_api_and_the_cli(self):
        server = self.start("--max-profiles", "3")
        self.assertEqual(self.post_profile(server, "script:/srv/a.py", ["/srv/a.py", "/srv/b.py",
                                                                       "/srv/a.py"]), 2)
        self.post_profile(server, "script:/srv/b.py", ["/srv/b.py"])
        self.post_profile(server, "module:c", ["/srv/c.py"])
        self.post_profile(server, "script:/srv/a.py", ["/srv/z.py"])  # updated: the newest
        self.post_profile(server, "module:d", ["/srv/d.py"])  # the fourth: b.py's goes
        status, listing = server.json("GET", "/v1/admin/profiles")
        self.assertEqual(status, 200)
        names = [p["profile"] for p in listing["profiles"]]
        self.assertEqual(sorted(names), ["module:c", "module:d", "script:/srv/a.py"])
        self.assertIsNone(listing["next_cursor"])
        self.assertEqual(self.store(server)["profiles"], 3)
        one = {"magic": MAGIC, "profile": "script:/srv/a.py"}
        status, profile = server.json("GET", "/v1/admin/profile?" + query(one))
        self.assertEqual(status, 200)
        self.assertEqual((profile["paths"], profile["list"]), (3, ["/srv/a.py", "/srv/b.py",
                                                                   "/srv/z.py"]))
        self.assertGreater(profile["updated"], 1700000000)
        # pages
        status, page = server.json("GET", "/v1/admin/profiles?limit=2")
        self.assertEqual((status, len(page["profiles"])), (200, 2))
        status, rest = server.json("GET", "/v1/admin/profiles?" + query(
            {"limit": 2, "cursor": page["next_cursor"]}))
        self.assertEqual([p["profile"] for p in page["profiles"] + rest["profiles"]], names)
        # the CLI
        run = self.ctl(server, "admin", "profiles")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("script:/srv/a.py", run.stdout)
        self.assertIn("PATHS", run.stdout)
        run = self.ctl(server, "admin", "profile", "--magic", MAGIC, "script:/srv/a.py")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("  /srv/z.py\n", run.stdout)
        self.assertRegex(run.stdout, r"paths +3\n")
        run = self.ctl(server, "admin", "rm-profile", "--yes", "--magic", MAGIC, "module:c")
        self.assertEqual((run.returncode, run.stdout), (0, "removed 1 profile\n"), run.stderr)
        run = self.ctl(server, "admin", "rm-profile", "--yes", "--magic", MAGIC, "module:c")
        self.assertEqual(run.returncode, 1)
        run = self.ctl(server, "admin", "profile", "module:c")
        self.assertEqual(run.returncode, 2, "--magic is required")
        status, body = server.json("DELETE", "/v1/admin/profile?" + query(
            {"magic": MAGIC, "profile": "module:c"}))
        self.assertEqual((status, body["error"]), (404, "not-found"))
        status, body = server.json("GET", "/v1/admin/profile?" + query({"magic": MAGIC}))
        self.assertEqual((status, body["param"]), (400, "profile"))
        # invalidating a magic takes its profiles, a purge every profile
        other = "3b0d0d0a"
        self.post_profile(server, "other", ["/srv/o.py"], magic=other)
        status, _ = server.json("POST", "/v1/admin/invalidate?" + query({"magic": other}))
        self.assertEqual(status, 200)
        status, listing = server.json("GET", "/v1/admin/profiles?" + query({"magic": other}))
        self.assertEqual(listing["profiles"], [])
        self.assertEqual(server.json("POST", "/v1/admin/purge")[0], 200)
        self.assertEqual(self.store(server)["profiles"], 0)
        status, _ = server.json("GET", "/v1/bundle?" + query(one))
        self.assertEqual(status, 404)

    def test_a_20000_path_profile_does_not_hold_up_compiles(self):
        server = self.start()
        paths = ["/srv/big/module_%05d.py" % i for i in range(20000)]
        tiny = self.write("tiny.py", b"T = 1\n")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            merge = pool.submit(self.post_profile, server, "big", paths)
            time.sleep(0.05)
            t0 = time.monotonic()
            self.assertEqual(self.compile(server, tiny)[0], 200)
            waited = time.monotonic() - t0
            self.assertEqual(merge.result(timeout=60), 20000)
        self.assertLess(waited, 1.0, "a tiny compile waited behind the merge")
        t0 = time.monotonic()
        self.assertEqual(self.post_profile(server, "big", paths[:100] + ["/srv/new.py"]), 101)
        self.assertLess(time.monotonic() - t0, 5)


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
