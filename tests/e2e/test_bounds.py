#!/usr/bin/env python3
"""test_bounds.py: the `bounds` suite (issue 10): a bound on every resource a client can make the
server spend. Each test reproduces a way a small request made the server spend much, and fails on
the code before the fix:

- a batch of 100 copies of one lookup of a 1 MB source built a 133 MB answer in memory: now
  identical lookups are answered once ({"same_as": i}), answers are streamed entry by entry, and
  one answer stays within --max-batch-response (the rest are answered too-large);
- the JSON form of a bundle had no cap: now --max-bundle, as for the binary form, and streamed;
- the compile queue had no bound: past --max-queued-compiles a compile is 503 busy with
  Retry-After;
- every made-up magic of a lookup got counters (stats and metrics rows) of its own: now only the
  magics a backend serves or the store holds do, the others are counted in "other";
- a compiler worker kept the heap of its largest compile for up to --worker-recycle compiles
  (75 to 125 MB each after a prewarm of sympy): now one whose anonymous resident memory passes
  --worker-rss after a compile is replaced by a fresh one (issue 11);
- a backup download streamed from a pipe, so a copy failing halfway ended a 200 early: now the
  copy is made into a temporary file first and served with its Content-Length (a failed copy is
  a 500), and server-side copies are private (0600).

Memory is the server's peak resident set (VmHWM of /proc/PID/status) before and after a request.
Run by meson (`meson test bounds`); every server, thread and mount it starts, it stops.
"""
import base64
import concurrent.futures
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import MAGIC, Server, java_hash, make_tree, run_tests  # noqa: E402

MIB = 1024 * 1024
# The most a batch or bundle answer may add to the server's peak memory (an answer of 40 to 140
# MB, once held whole, added 2 to 3 times its size).
MEMORY_BOUND = 40 * MIB
# ASan keeps freed memory in a quarantine (256 MiB by default), which would count as the
# server's own; the sanitizer build's servers of this suite keep it small.
HASHES = {}  # Java hash of each source's bytes, by SHA-256


def vm_hwm(pid):
    """The peak resident set of a process, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM for %d" % pid)


def q(**params):
    return urllib.parse.urlencode(params)


class Case(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pcc-bounds-")
        os.chmod(self.tmp, 0o755)  # the workers run as nobody when the tests run as root
        self.servers = []
        # cleanups run last added first: a test's own (a mount) before these
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.addCleanup(self.stop_servers)

    def stop_servers(self):
        for server in self.servers:
            self.assertEqual(server.stop(), 0, "pycached exited badly on SIGTERM")
        self.servers = []

    def start(self, *args):
        saved = os.environ.get("ASAN_OPTIONS")
        os.environ["ASAN_OPTIONS"] = (saved + ":" if saved else "") + "quarantine_size_mb=4"
        try:
            server = Server(self.tmp, "--workers", "1", *args)
        finally:
            if saved is None:
                del os.environ["ASAN_OPTIONS"]
            else:
                os.environ["ASAN_OPTIONS"] = saved
        self.servers.append(server)
        return server

    def write(self, name, text):
        make_tree(os.path.join(self.tmp, "src"), {name: text})
        return os.path.join(self.tmp, "src", name)

    def compile(self, server, path, timeout=60):
        query = q(magic=MAGIC, path=path, mtime=int(os.stat(path).st_mtime))
        status, headers, body = server.request("POST", "/v1/compile?" + query,
                                               open(path, "rb").read(), timeout=timeout)
        return status, headers, json.loads(body)

    def lookup_params(self, path):
        data = open(path, "rb").read()
        digest = hashlib.sha256(data).hexdigest()
        if digest not in HASHES:  # java_hash is slow in Python: once a source
            HASHES[digest] = java_hash(data)
        return {"magic": MAGIC, "path": path, "mtime": int(os.stat(path).st_mtime),
                "size": len(data), "hash": HASHES[digest]}

    def large(self, name, size):
        """A source whose code is about size bytes (one string constant)."""
        return self.write(name, "S = %r\n" % ("".join(random.choice("abcdefgh")
                                                       for _ in range(64)) * (size // 64)))

    def batch(self, server, lookups):
        status, headers, data = server.request(
            "POST", "/v1/batch", json.dumps({"lookups": lookups}).encode(),
            {"Content-Type": "application/json"}, timeout=120)
        return status, headers, data


class Batches(Case):
    def check_memory(self, what, server, before, answered):
        """The server's peak memory grew by less than MEMORY_BOUND since before."""
        after = vm_hwm(server.proc.pid)
        print("%s: %d bytes answered; server peak memory %.1f -> %.1f MB (+%.1f)"
              % (what, answered, before / MIB, after / MIB, (after - before) / MIB),
              file=sys.stderr)
        self.assertLess(after - before, MEMORY_BOUND)

    def check_entry(self, entry, path):
        self.assertEqual(entry["path"], path)
        pyc = base64.b64decode(entry["pyc"])
        self.assertEqual(hashlib.sha256(open(path, "rb").read()).hexdigest(), entry["digest"])
        self.assertGreater(len(pyc), 1000000)

    def test_copies_of_one_large_lookup_are_answered_once(self):
        server = self.start()
        path = self.large("one.py", 1000000)
        self.assertEqual(self.compile(server, path)[0], 200)
        lookups = [self.lookup_params(path)] * 100
        self.assertLess(len(json.dumps({"lookups": lookups})), 20000)
        before = vm_hwm(server.proc.pid)
        status, headers, data = self.batch(server, lookups)
        self.check_memory("batch of 100 copies", server, before, len(data))
        self.assertEqual(status, 200)
        results = json.loads(data)["results"]
        self.assertEqual(len(results), 100)
        self.check_entry(results[0], path)
        self.assertEqual(results[1:], [{"same_as": 0}] * 99)
        self.assertLess(len(data), 2 * MIB, "the entry is sent once")
        self.assertEqual(server.stats()["hits"], 1, "looked up once")

    def test_distinct_large_lookups_are_streamed(self):
        server = self.start()
        source = self.large("first.py", 1000000)
        text = open(source).read()
        paths = [source] + [self.write("copy%d.py" % i, text) for i in range(39)]
        for path in paths:  # the same source: one compile, then stored under each path
            self.assertEqual(self.compile(server, path)[0], 200)
        before = vm_hwm(server.proc.pid)
        status, headers, data = self.batch(server, [self.lookup_params(p) for p in paths])
        self.check_memory("batch of 40 distinct lookups", server, before, len(data))
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("Transfer-Encoding"), "chunked")
        results = json.loads(data)["results"]
        for path, result in zip(paths, results):
            self.check_entry(result, path)
        self.assertGreater(len(data), 40 * MIB)

    def test_an_answer_stays_within_max_batch_response(self):
        server = self.start("--max-batch-response", "1M", "--max-batch", "10000")
        source = self.large("capped.py", 300000)
        text = open(source).read()
        paths = [source] + [self.write("capped%d.py" % i, text) for i in range(5)]
        for path in paths:
            self.assertEqual(self.compile(server, path)[0], 200)
        lookups = [self.lookup_params(p) for p in paths]
        lookups += [lookups[0], {"magic": MAGIC, "path": "relative.py", "mtime": 1, "size": 1}]
        status, _, data = self.batch(server, lookups)
        self.assertEqual(status, 200)
        self.assertLessEqual(len(data), MIB)
        results = json.loads(data)["results"]
        self.assertEqual(len(results), len(lookups))
        served = [r for r in results[:6] if "pyc" in r]
        self.assertEqual(len(served), 2, "two entries of 400 KB fit in 1 MiB")
        self.assertEqual([r["path"] for r in served], paths[:2])
        self.assertEqual([r["error"] for r in results[2:6]], ["too-large"] * 4)
        self.assertEqual(results[6], {"same_as": 0})
        self.assertEqual((results[7]["error"], results[7]["param"]), ("bad-parameter", "path"))
        # a batch whose results could not all be said within the cap is refused whole
        status, _, data = self.batch(server, [{}] * 9000)
        self.assertEqual((status, json.loads(data)["error"]), (413, "too-large"))

    def test_json_bundle_is_capped_like_the_binary_one(self):
        server = self.start("--max-bundle", "1M")
        source = self.large("bundled.py", 300000)
        text = open(source).read()
        paths = [source] + [self.write("bundled%d.py" % i, text) for i in range(4)]
        for path in paths:
            self.assertEqual(self.compile(server, path)[0], 200)
        profile = q(magic=MAGIC, profile="big-app")
        status, _, _ = server.request("POST", "/v1/profile?" + profile,
                                      json.dumps({"paths": paths}).encode(),
                                      {"Content-Type": "application/json"})
        self.assertEqual(status, 200)
        status, headers, binary = server.request("GET", "/v1/bundle?" + profile)
        self.assertEqual(status, 200)
        self.assertLessEqual(len(binary), MIB)
        self.assertEqual(headers["X-Pycached-Bundle-Entries"], "3")
        status, headers, data = server.request("GET", "/v1/bundle?" + profile + "&format=json")
        self.assertEqual(status, 200)
        self.assertLessEqual(len(data), MIB)
        self.assertEqual(headers.get("Transfer-Encoding"), "chunked", "streamed")
        doc = json.loads(data)
        self.assertEqual((doc["magic"], doc["profile"]), (MAGIC, "big-app"))
        self.assertEqual([e["path"] for e in doc["entries"]], paths[:2], "the rest left out")
        status, _, _ = server.request("GET", "/v1/bundle?" + q(magic=MAGIC, profile="none") +
                                      "&format=json")
        self.assertEqual(status, 404)


class CompileQueue(Case):
    def test_a_full_queue_answers_503_with_retry_after(self):
        server = self.start("--max-queued-compiles", "2", "--compile-timeout", "30")
        slow = [self.write("slow%d.py" % i, "H%d = [" % i + ",".join(
            str(n) for n in range(600000)) + "]\n") for i in range(4)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            running = [pool.submit(self.compile, server, slow[0])]
            self.wait_for(server, compiling=1, queued=0)
            running += [pool.submit(self.compile, server, path) for path in slow[1:3]]
            self.wait_for(server, compiling=1, queued=2)
            t0 = time.monotonic()
            status, headers, body = self.compile(server, slow[3])
            self.assertLess(time.monotonic() - t0, 5, "answered at once")
            self.assertEqual((status, body["error"]), (503, "busy"))
            self.assertGreaterEqual(int(headers["Retry-After"]), 1)
            self.assertEqual(body["retry_after"], int(headers["Retry-After"]))
            self.assertIn("--max-queued-compiles", body["message"])
            # the same source as a queued compile joins it: a full queue refuses new work only
            joined = pool.submit(self.compile, server, slow[2])
            outcomes = [f.result(timeout=120) for f in running + [joined]]
        self.assertEqual([o[0] for o in outcomes], [200] * 4, [o[2] for o in outcomes])
        self.assertEqual(sorted(o[1]["X-Pycached-Outcome"] for o in outcomes),
                         ["compiled"] * 3 + ["joined"])
        self.assertEqual(self.compile(server, slow[3])[0], 200, "room again once the queue ran")

    def wait_for(self, server, **figures):
        """Waits (at most 30 s) until /v1/stats shows these figures."""
        deadline = time.monotonic() + 30
        while True:
            stats = server.stats()
            if all(stats[name] == value for name, value in figures.items()):
                return
            self.assertLess(time.monotonic(), deadline, (figures, stats))
            time.sleep(0.02)


def rss_anon(pid):
    """The anonymous resident memory of a process, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon for %d" % pid)


class WorkerMemory(Case):
    def big_module(self, name):
        """About 1 MB of functions (named after name: the servers of a test share a store, so
        each big module is new to it): compiling it leaves a worker's heap some 20 MB larger."""
        return self.write(name, "# %s\n" % name + "".join(
            "def f%d(a, b=%d):\n    x = [a * k + b for k in range(%d) if k %% 3]\n"
            "    return {'k%d': x, 'n': len(x), 's': sum(x) - %d}\n\n" % (i, i, i % 50, i, i)
            for i in range(8000)))

    def test_a_worker_past_worker_rss_is_replaced(self):
        small = [self.write("small%d.py" % i, "S = %d\n" % i) for i in range(3)]
        big = [self.big_module("big%d.py" % i) for i in range(2)]
        # without a limit: a small compile leaves the worker at `base`, the big one far above
        server = self.start("--worker-rss", "0")
        self.assertEqual(self.compile(server, small[0])[0], 200)
        (pid,) = server.worker_pids()
        base = rss_anon(pid)
        self.assertEqual(self.compile(server, big[0])[0], 200)
        self.assertEqual(server.worker_pids(), [pid], "no limit: the same worker")
        grown = rss_anon(pid)
        self.assertGreater(grown - base, 8 * MIB, "the big compile must grow the heap")
        # a limit half-way: small compiles keep the worker, the big one replaces it
        limit = base + (grown - base) // 2
        server = self.start("--worker-rss", str(limit))
        self.assertEqual(self.compile(server, small[1])[0], 200)
        self.assertEqual(self.compile(server, small[2])[0], 200)
        (pid,) = server.worker_pids()
        status, headers, _ = self.compile(server, big[1])
        self.assertEqual((status, headers["X-Pycached-Outcome"]), (200, "compiled"))
        (fresh,) = server.worker_pids()
        self.assertNotEqual(fresh, pid, "replaced past --worker-rss")
        self.assertLess(rss_anon(fresh), limit)
        compiler = server.stats()["compilers"][0]
        self.assertEqual((compiler["recycles"], compiler["restarts"]), (1, 0), "not a failure")
        self.assertEqual(self.compile(server, small[0])[0], 200, "the fresh worker compiles")
        self.assertEqual(server.worker_pids(), [fresh])


class Magics(Case):
    def test_made_up_magics_fold_into_other(self):
        server = self.start()
        path = self.write("real.py", "R = 1\n")
        self.assertEqual(self.compile(server, path)[0], 200)
        made_up = ["%04x0d0a" % n for n in random.sample(range(1, 0xffff), 40)]
        made_up = [m for m in made_up if m != MAGIC]
        for magic in made_up:
            params = dict(self.lookup_params(path), magic=magic)
            status, _, body = server.request("GET", "/v1/code?" + q(**params))
            self.assertEqual((status, json.loads(body)["error"]), (422, "unsupported-magic"))
        status, _, _ = server.request("POST", "/v1/report?" + q(magic=made_up[0]),
                                      json.dumps({"fallbacks": {"miss": 2}}).encode(),
                                      {"Content-Type": "application/json"})
        self.assertEqual(status, 200)
        status, _, body = server.request("GET", "/v1/admin/stats")
        stats = json.loads(body)
        self.assertEqual(sorted(stats["magics"]), sorted([MAGIC, "other"]))
        other = stats["magics"]["other"]
        # counted as unsupported, not as absent misses (issue 14)
        self.assertEqual(other["misses"], {"absent": 0, "stale": 0,
                                           "unsupported_magic": len(made_up)})
        self.assertEqual(other["fallbacks"], {"miss": 2})
        self.assertEqual(stats["total"]["misses"]["unsupported_magic"], len(made_up))
        status, _, body = server.request("GET", "/metrics")
        labels = {line.split('magic="')[1].split('"')[0]
                  for line in body.decode().splitlines() if 'magic="' in line}
        self.assertEqual(labels, {MAGIC, "other"})


class Backups(Case):
    def mount_tiny(self, where, size="256k"):
        os.makedirs(where)
        run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs",
                              where], capture_output=True, text=True, timeout=30)
        if run.returncode != 0:
            self.skipTest("cannot mount a tmpfs (needs root): %s" % run.stderr.strip())
        self.addCleanup(self.unmount, where)

    def unmount(self, where):
        """Stops the servers first, so that nothing of theirs stays open there."""
        self.stop_servers()
        subprocess.run(["umount", where], check=True, timeout=30)

    def test_a_backup_whose_copy_fails_is_not_a_200(self):
        tiny = os.path.join(self.tmp, "tiny")
        self.mount_tiny(tiny)
        server = self.start("--backup-dir", tiny)
        self.assertEqual(self.compile(server, self.large("fills.py", 1000000))[0], 200)
        status, headers, body = server.request("GET", "/v1/admin/backup")
        self.assertEqual(status, 500, "a copy that did not fit is an error, not a short 200")
        self.assertEqual(json.loads(body)["error"], "internal")
        self.assertIn("backup copy failed", json.loads(body)["message"])
        status, _, body = server.request("POST", "/v1/admin/backup")
        self.assertEqual((status, json.loads(body)["error"]), (500, "internal"))
        self.assertEqual(os.listdir(tiny), [], "nothing half-written is left")
        self.assertEqual(server.request("GET", "/healthz")[0], 200)

    def test_downloads_have_a_length_and_copies_are_private(self):
        backups = os.path.join(self.tmp, "backups")
        os.makedirs(backups)
        server = self.start("--backup-dir", backups)
        path = self.write("kept.py", "K = 1\n")
        self.assertEqual(self.compile(server, path)[0], 200)
        status, body = server.json("POST", "/v1/admin/backup")
        self.assertEqual(status, 200)
        copy = os.path.join(body["path"], "data.mdb")
        self.assertEqual(os.stat(copy).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(body["path"]).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(copy).st_size, body["bytes"])
        status, headers, data = server.request("GET", "/v1/admin/backup")
        self.assertEqual(status, 200)
        self.assertEqual(int(headers["Content-Length"]), len(data))
        self.assertEqual(data, open(copy, "rb").read(), "the same compacted copy")
        self.assertEqual(sorted(os.listdir(backups)), [os.path.basename(body["path"])],
                         "the download's temporary file is gone")


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
