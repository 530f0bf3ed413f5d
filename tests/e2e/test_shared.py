"""End-to-end tests of the shared blob tier on Redis (--shared, issue 15; docs/OPERATIONS.md,
"Shared tier on Redis"): real redis-server processes (Debian's) on free loopback ports, each with
a temporary directory of its own and no persistence, and real pycached replicas pointing at them.
A fleet compiles a source once; a value damaged or swapped in Redis is detected, counted and never
served; a Redis killed, or one that accepts connections and never answers, costs bounded time.

Run by meson (`meson test shared`) with the variables of test_e2e.py; PCC_REDIS_SERVER names the
redis-server binary (default /usr/bin/redis-server). Every process started is stopped by pid.
"""
import concurrent.futures
import marshal
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import (PYCACHED, ServersCase, free_port, query, run_tests,  # noqa: E402
                      source_params)
from test_admin import check_prometheus_text  # noqa: E402  (promtool and a strict parse)

REDIS_SERVER = os.environ.get("PCC_REDIS_SERVER", "/usr/bin/redis-server")
PYC = {"Accept": "application/x-python-pyc"}


class Redis:
    """A redis-server on 127.0.0.1 at a free port, in a directory of its own, without
    persistence; command() speaks RESP to it."""

    def __init__(self, workdir, port=None):
        self.port = port or free_port()
        self.dir = os.path.join(workdir, "redis-%d" % self.port)
        os.makedirs(self.dir, exist_ok=True)
        self.log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"],
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.command("PING") == "PONG":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        self.url = "redis://127.0.0.1:%d" % self.port

    def command(self, *args):
        """One command; the reply as str (status), bytes (bulk), int, list or None."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            words = [a if isinstance(a, bytes) else str(a).encode() for a in args]
            sock.sendall(b"*%d\r\n" % len(words) +
                         b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
            reader = sock.makefile("rb")
            return self._reply(reader)

    def _reply(self, reader):
        line = reader.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else reader.read(n + 2)[:-2]
        if kind == b"*":
            return [self._reply(reader) for _ in range(int(rest))]
        raise RuntimeError("bad reply %r" % line)

    def keys(self, pattern):
        cursor, found = "0", []
        for _ in range(1000):
            cursor, batch = self.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            found += [k.decode() for k in batch]
            cursor = cursor.decode()
            if cursor == "0":
                break
        return sorted(found)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


class Silent:
    """A TCP listener that accepts connections and reads them, and never answers (a hung
    Redis)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = "redis://127.0.0.1:%d" % self.port
        self.stopping = False
        self.conns = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.1)
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
                conn.setblocking(False)
                self.conns.append(conn)  # held open, read by nobody: the kernel buffers it
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        for conn in self.conns:
            conn.close()
        self.sock.close()


class SharedCase(ServersCase):
    prefix = "pcc-shared-"

    def setUp(self):
        super().setUp()
        self.redises = []
        self.n_replica = 0

    def tearDown(self):
        super().tearDown()  # the replicas first, then what they talk to
        for redis in self.redises:
            redis.stop()

    def redis(self):
        redis = Redis(self.tmp)
        self.redises.append(redis)
        return redis

    def replica(self, *urls, args=()):
        self.n_replica += 1
        workdir = os.path.join(self.tmp, "replica-%d" % self.n_replica)
        os.makedirs(workdir)
        os.chmod(workdir, 0o755)
        return self.start("--workers", "2", "--shared", ",".join(urls), *args, workdir=workdir)

    def source(self, name, text):
        path = os.path.join(self.tmp, "src", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def compile(self, server, path, timeout=30):
        """POST /v1/compile; (status, outcome, pyc bytes)."""
        params = source_params(path, with_hash=False)
        with open(path, "rb") as f:
            body = f.read()
        status, headers, data = server.request("POST", "/v1/compile?" + query(params), body,
                                               PYC, timeout=timeout)
        return status, headers.get("X-Pycached-Outcome"), data

    def run_pyc(self, pyc):
        """The module namespace of a served pyc, executed here (the reference interpreter)."""
        namespace = {}
        exec(marshal.loads(pyc[16:]), namespace)  # noqa: S102  (our own compile's result)
        return namespace

    @staticmethod
    def compiles(*servers):
        return sum(server.stats()["compiles"] for server in servers)


class Fleet(SharedCase):
    def test_sources_compiled_once_across_replicas_and_spread_over_both_redis(self):
        redises = [self.redis(), self.redis()]
        urls = [r.url for r in redises]
        replicas = [self.replica(*urls) for _ in range(3)]
        paths = [self.source("m%02d.py" % i, "VALUE = %d * 3\n" % i) for i in range(16)]
        for i, path in enumerate(paths):
            first = replicas[i % 3]
            status, outcome, pyc = self.compile(first, path)
            self.assertEqual((status, outcome), (200, "compiled"))
            for other in replicas:
                if other is first:
                    continue
                status, outcome, shared_pyc = self.compile(other, path)
                self.assertEqual((status, outcome), (200, "shared"), path)
                self.assertEqual(shared_pyc, pyc)
                self.assertEqual(self.run_pyc(shared_pyc)["VALUE"], i * 3)
        self.assertEqual(self.compiles(*replicas), len(paths))
        per_redis = [len(r.keys("pcc:v1:blob:*")) for r in redises]
        self.assertEqual(sum(per_redis), len(paths))
        self.assertTrue(all(n > 0 for n in per_redis), per_redis)  # rendezvous spreads them
        self.assertEqual([r.keys("pcc:v1:lock:*") for r in redises], [[], []])  # all freed
        ttl = redises[0].command("TTL", redises[0].keys("pcc:v1:blob:*")[0])
        self.assertTrue(6 * 86400 < ttl <= 7 * 86400, ttl)  # --shared-ttl's default
        hits = sum(r.stats()["shared"]["hits"] for r in replicas)
        self.assertEqual(hits, 2 * len(paths))
        # the shared blob is stored locally: a lookup on a replica that never compiled it hits
        status, _ = replicas[1].json("GET", "/v1/code?" + query(source_params(paths[0])))
        self.assertEqual(status, 200)

    def test_concurrent_compiles_on_every_replica_compile_once(self):
        redises = [self.redis(), self.redis()]
        replicas = [self.replica(*(r.url for r in redises)) for _ in range(3)]
        # a source that takes a while to compile, so that every replica asks while it compiles
        lines = ["def f%d(x):\n    return [x * %d + i for i in range(%d) if i %% 3]\n"
                 % (i, i, i) for i in range(6000)]
        path = self.source("slow.py", "".join(lines) + "TOTAL = f7(2)[:3]\n")
        barrier = threading.Barrier(9)

        def one(n):
            barrier.wait(10)
            return self.compile(replicas[n % 3], path, timeout=60)

        with concurrent.futures.ThreadPoolExecutor(9) as pool:
            results = list(pool.map(one, range(9)))
        self.assertEqual({status for status, _, _ in results}, {200})
        self.assertEqual(len({pyc for _, _, pyc in results}), 1)
        self.assertEqual(self.run_pyc(results[0][2])["TOTAL"], [15, 16, 18])
        compiles = self.compiles(*replicas)
        waits = sum(r.stats()["shared"]["lock_waits"] for r in replicas)
        expired = sum(r.stats()["shared"]["lock_expired"] for r in replicas)
        print("\n  concurrent: %d compile(s) on 3 replicas, %d lock wait(s), %d expired; "
              "outcomes %s" % (compiles, waits, expired,
                               sorted(outcome for _, outcome, _ in results)), file=sys.stderr)
        self.assertEqual(compiles, 1)
        self.assertEqual(expired, 0)


class Locks(SharedCase):
    """A replica that holds a compile lock and never finishes (it died) costs the others at
    most the lock's time; one that frees its lock lets them go on at once."""

    def lock_key(self, path):
        return "pcc:v1:lock:%s:0:%s" % ("a70d0d0a", source_params(path, with_digest=True)["digest"])

    def test_a_lock_never_freed_is_waited_for_its_time_only(self):
        store = self.redis()
        server = self.replica(store.url, args=("--compile-timeout", "1"))  # locks: 1 s + 2 s
        path = self.source("stuck.py", "STUCK = 1\n")
        self.assertEqual(store.command("SET", self.lock_key(path), "dead-replica", "PX", 100000),
                         "OK")
        started = time.monotonic()
        status, outcome, pyc = self.compile(server, path)
        waited = time.monotonic() - started
        self.assertEqual((status, outcome), (200, "compiled"))
        self.assertEqual(self.run_pyc(pyc)["STUCK"], 1)
        self.assertTrue(2.8 < waited < 5.0, waited)
        shared = server.stats()["shared"]
        self.assertEqual((shared["lock_waits"], shared["lock_expired"], shared["stores"]),
                         (1, 1, 1))
        # the lock was another's: left alone (it expires by itself)
        self.assertEqual(store.command("GET", self.lock_key(path)), b"dead-replica")

    def test_a_lock_that_expires_is_taken_over(self):
        store = self.redis()
        server = self.replica(store.url)
        path = self.source("brief.py", "BRIEF = 2\n")
        store.command("SET", self.lock_key(path), "slow-replica", "PX", 400)
        started = time.monotonic()
        status, outcome, pyc = self.compile(server, path)
        waited = time.monotonic() - started
        self.assertEqual((status, outcome), (200, "compiled"))
        self.assertTrue(0.3 < waited < 2.0, waited)
        shared = server.stats()["shared"]
        self.assertEqual((shared["lock_waits"], shared["lock_expired"]), (1, 1))
        self.assertIsNone(store.command("GET", self.lock_key(path)))  # its own lock: freed


class Trust(SharedCase):
    """Nothing from Redis is served unverified."""

    def setUp(self):
        super().setUp()
        self.store = self.redis()
        self.a = self.replica(self.store.url)

    def good_value(self, path):
        status, outcome, pyc = self.compile(self.a, path)
        self.assertEqual((status, outcome), (200, "compiled"))
        [key] = [k for k in self.store.keys("pcc:v1:blob:*")
                 if k.endswith(source_params(path, with_digest=True)["digest"])]
        return key, self.store.command("GET", key), pyc

    def assert_compiled_not_shared(self, path, pyc, corrupt=1):
        b = self.replica(self.store.url)
        status, outcome, served = self.compile(b, path)
        self.assertEqual((status, outcome), (200, "compiled"))
        self.assertEqual(served, pyc)  # the replica's own compile, byte for byte
        shared = b.stats()["shared"]
        self.assertEqual((shared["corrupt"], shared["hits"], b.stats()["compiles"]),
                         (corrupt, 0, 1))
        return b

    def test_a_flipped_byte_in_a_value_is_detected_and_never_served(self):
        path = self.source("flip.py", "ANSWER = 6 * 7\n")
        key, value, pyc = self.good_value(path)
        at = len(value) - 20  # inside the marshal bytes
        flipped = bytes([value[at] ^ 0x01])
        self.assertEqual(self.store.command("SETRANGE", key, at, flipped), len(value))
        self.assert_compiled_not_shared(path, pyc)
        self.assertEqual(self.run_pyc(pyc)["ANSWER"], 42)
        # the bad value was replaced by the good one of the replica that compiled it
        self.assertNotIn(flipped, self.store.command("GETRANGE", key, at, at))
        c = self.replica(self.store.url)
        self.assertEqual(self.compile(c, path), (200, "shared", pyc))

    def test_a_value_moved_to_another_sources_key_is_not_served(self):
        # a value whose checksum holds, under the key of another source: its digest disagrees
        one = self.source("one.py", "WHO = 'one'\n")
        two = self.source("two.py", "WHO = 'two'\n")
        _, value, _ = self.good_value(one)
        key_two, _, pyc_two = self.good_value(two)
        self.store.command("SET", key_two, value)
        b = self.assert_compiled_not_shared(two, pyc_two)
        self.assertEqual(self.run_pyc(self.compile(b, two)[2])["WHO"], "two")

    def test_truncated_and_foreign_values_are_dropped(self):
        path = self.source("trunc.py", "T = 1\n")
        key, value, pyc = self.good_value(path)
        self.store.command("SET", key, value[:-9])
        b = self.assert_compiled_not_shared(path, pyc)
        other = self.source("foreign.py", "F = 2\n")
        key, _, pyc = self.good_value(other)
        self.store.command("SET", key, b"not a value at all")
        status, outcome, served = self.compile(b, other)
        self.assertEqual((status, outcome, served), (200, "compiled", pyc))
        self.assertEqual(b.stats()["shared"]["corrupt"], 2)


class Signed(SharedCase):
    """--shared-key: only values signed with the fleet's key are used."""

    def key(self, name, data=None, mode=0o600):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(os.urandom(32) if data is None else data)
        os.chmod(path, mode)
        return path

    def test_only_values_signed_with_the_key_are_used(self):
        store = self.redis()
        k1, k2 = self.key("k1"), self.key("k2")
        path = self.source("signed.py", "S = 'signed'\n")
        steps = [  # (replica's key, outcome, corrupt): each replica that refuses a value
            (k1, "compiled", 0),        # replaces it with its own
            (k1, "shared", 0),          # same key: used
            (k2, "compiled", 1),        # another key: the signature fails
            (None, "compiled", 1),      # no key: a signed value is not taken unchecked
            (k1, "compiled", 1),        # an unsigned value, checksum and all, is refused
            (k1, "shared", 0),
        ]
        pycs = set()
        for key, outcome, corrupt in steps:
            args = ("--shared-key", key) if key else ()
            server = self.replica(store.url, args=args)
            status, got, pyc = self.compile(server, path)
            self.assertEqual((status, got), (200, outcome), (key, outcome))
            self.assertEqual(server.stats()["shared"]["corrupt"], corrupt, (key, outcome))
            pycs.add(pyc)
            server.stop()
        self.assertEqual(len(pycs), 1)
        self.assertEqual(self.run_pyc(pycs.pop())["S"], "signed")

    def test_bad_key_files_are_refused(self):
        store = self.redis()
        for name, data, mode, what in (("open", None, 0o644, "group or others"),
                                        ("short", b"x" * 31, 0o600, "shorter"),
                                        ("huge", b"x" * 5000, 0o600, "larger")):
            key = self.key(name, data, mode)
            out = subprocess.run([PYCACHED, "--port", "0", "--store",
                                  os.path.join(self.tmp, "bad-" + name), "--shared", store.url,
                                  "--shared-key", key], capture_output=True, text=True,
                                 timeout=30)
            self.assertNotEqual(out.returncode, 0, name)
            self.assertIn("--shared-key", out.stderr)
            self.assertIn(what, out.stderr)


class Failures(SharedCase):
    def test_a_redis_killed_costs_only_its_lookups(self):
        redises = [self.redis(), self.redis()]
        urls = [r.url for r in redises]
        a, b, c = (self.replica(*urls) for _ in range(3))
        before = [self.source("pre%02d.py" % i, "P = %d\n" % i) for i in range(8)]
        for path in before:
            self.assertEqual(self.compile(a, path)[:2], (200, "compiled"))
        redises[0].proc.kill()
        redises[0].proc.wait(10)
        after = [self.source("post%02d.py" % i, "Q = %d\n" % i) for i in range(12)]
        slowest = 0.0
        for i, path in enumerate(before + after):
            started = time.monotonic()
            status, outcome, pyc = self.compile(b, path)
            slowest = max(slowest, time.monotonic() - started)
            self.assertEqual(status, 200, path)
            self.assertIn(outcome, ("compiled", "shared"))
            value = self.run_pyc(pyc)
            self.assertEqual(value.get("P", value.get("Q")), i if i < 8 else i - 8)
        self.assertLess(slowest, 2.0)
        shared = b.stats()["shared"]
        self.assertEqual([s["up"] for s in shared["servers"]], [False, True])
        self.assertGreaterEqual(shared["errors"], 1)
        self.assertEqual(shared["timeouts"], 0)  # refused at once, not waited for
        status, _, text = b.request("GET", "/metrics")
        self.assertEqual(status, 200)
        check_prometheus_text(self, text.decode())
        self.assertIn(b'pycached_shared_server_up{server="127.0.0.1:%d"} 0\n' % redises[0].port,
                      text)
        self.assertIn(b'pycached_shared_server_up{server="127.0.0.1:%d"} 1\n' % redises[1].port,
                      text)
        # the dead server's keys went to the live one: a third replica finds every new source
        for path in after:
            self.assertEqual(self.compile(c, path)[:2], (200, "shared"), path)
        self.assertGreaterEqual(len(redises[1].keys("pcc:v1:blob:*")), len(after))
        print("\n  redis killed: slowest compile %.0f ms; errors %d, skipped %d"
              % (slowest * 1000, shared["errors"], shared["skipped"]), file=sys.stderr)

    def test_a_redis_restarted_costs_nothing(self):
        redis = self.redis()
        server = self.replica(redis.url)
        one = self.source("before.py", "B = 1\n")
        self.assertEqual(self.compile(server, one)[:2], (200, "compiled"))
        port = redis.port  # the same server back on its port: the replica's pooled links are dead
        redis.stop()
        self.redises.remove(redis)
        for _ in range(50):
            try:
                again = Redis(self.tmp, port=port)
                break
            except OSError:
                time.sleep(0.1)
        self.redises.append(again)
        two = self.source("after.py", "A = 2\n")
        self.assertEqual(self.compile(server, two)[:2], (200, "compiled"))
        shared = server.stats()["shared"]
        self.assertEqual((shared["errors"], shared["stores"]), (0, 2))
        self.assertEqual(len(again.keys("pcc:v1:blob:*")), 1)

    def test_a_redis_that_never_answers_costs_bounded_time(self):
        silent = Silent()
        try:
            server = self.replica(silent.url, args=("--shared-timeout", "100"))
            paths = [self.source("hang%02d.py" % i, "H = %d\n" % i) for i in range(10)]
            started = time.monotonic()
            slowest = 0.0
            for i, path in enumerate(paths):
                t = time.monotonic()
                status, outcome, pyc = self.compile(server, path)
                slowest = max(slowest, time.monotonic() - t)
                self.assertEqual((status, outcome), (200, "compiled"))
                self.assertEqual(self.run_pyc(pyc)["H"], i)
            total = time.monotonic() - started
            shared = server.stats()["shared"]
            print("\n  silent redis: 10 compiles in %.0f ms (slowest %.0f ms); errors %d, "
                  "skipped %d" % (total * 1000, slowest * 1000, shared["errors"],
                                  shared["skipped"]), file=sys.stderr)
            self.assertLess(slowest, 1.5)
            self.assertLess(total, 4.0)
            self.assertGreaterEqual(shared["errors"], 1)
            self.assertEqual(shared["timeouts"], shared["errors"])  # each a command timed out
            self.assertGreaterEqual(shared["skipped"], 1)  # the breaker: not asked every time
            self.assertEqual([s["up"] for s in shared["servers"]], [False])
        finally:
            for server in self.servers:
                server.stop()
            self.servers = []
            silent.stop()

    def test_bad_shared_lists_are_refused(self):
        for bad, what in (("http://127.0.0.1:1", "redis://"), ("redis://127.0.0.1", "port"),
                          ("redis://127.0.0.1:70000", "port"),
                          ("redis://127.0.0.1:1,redis://127.0.0.1:1", "twice")):
            out = subprocess.run([PYCACHED, "--port", "0", "--store",
                                  os.path.join(self.tmp, "bad"), "--shared", bad],
                                 capture_output=True, text=True, timeout=30)
            self.assertNotEqual(out.returncode, 0, bad)
            self.assertIn("--shared", out.stderr)
            self.assertIn(what, out.stderr)


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
