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
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import (PYCACHED, ServersCase, free_port, make_tree, query,  # noqa: E402
                      run_tests, source_params, stop_process)
from test_admin import check_prometheus_text  # noqa: E402  (promtool and a strict parse)

REDIS_SERVER = os.environ.get("PCC_REDIS_SERVER", "/usr/bin/redis-server")
PYC = {"Accept": "application/x-python-pyc"}


class Redis:
    """A redis-server on 127.0.0.1 at a free port, in a directory of its own, without
    persistence, with the extra redis-server arguments args (e.g. --requirepass, --user);
    command() speaks RESP to it, each connection starting with AUTH *auth when auth is given
    (the words after AUTH: a password, or a user and its password)."""

    def __init__(self, workdir, port=None, args=(), auth=()):
        self.port = port or free_port()
        self.auth = tuple(auth)
        self.dir = os.path.join(workdir, "redis-%d" % self.port)
        os.makedirs(self.dir, exist_ok=True)
        self.log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no", *args],
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
            reader = sock.makefile("rb")
            commands = ([("AUTH",) + self.auth] if self.auth else []) + [args]
            for command in commands:
                words = [a if isinstance(a, bytes) else str(a).encode() for a in command]
                sock.sendall(b"*%d\r\n" % len(words) +
                             b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
                reply = self._reply(reader)
            return reply

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
        stop_process(self.proc)
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

    def redis(self, args=(), auth=()):
        redis = Redis(self.tmp, args=args, auth=auth)
        self.redises.append(redis)
        return redis

    def replica(self, *urls, args=(), env=None):
        self.n_replica += 1
        workdir = os.path.join(self.tmp, "replica-%d" % self.n_replica)
        os.makedirs(workdir)
        os.chmod(workdir, 0o755)
        return self.start("--workers", "2", "--shared", ",".join(urls), *args, workdir=workdir,
                          env=env)

    def source(self, name, text):
        return os.path.join(make_tree(os.path.join(self.tmp, "src"), {name: text}), name)

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


# The ACL of docs/OPERATIONS.md ("Shared tier on Redis"): the replicas' user may touch keys
# under pcc: only, with the commands shared.c sends (the unlock script's get and del run as it).
PCC_ACL = ["~pcc:*", "resetchannels", "-@all", "+get", "+set", "+del", "+eval"]


class Auth(SharedCase):
    """--shared-password-file and --shared-user: a Redis with requirepass or ACL users serves the
    fleet; a wrong password or none costs the lookups only, warned once and never shown."""

    def secret(self, name, data, mode=0o600):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    def warnings(self, server):
        """The shared tier's warn lines of server's log so far."""
        with open(server.log.name, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
        return [line for line in lines if " warn " in line and "shared tier" in line]

    def log_text(self, server):
        with open(server.log.name, "rb") as f:
            return f.read()

    def assert_shared_across(self, a, b, names):
        """Each source compiled on a is served from the tier to b; neither counts an error."""
        for i, name in enumerate(names):
            path = self.source(name, "AUTHED = %d\n" % i)
            status, outcome, pyc = self.compile(a, path)
            self.assertEqual((status, outcome), (200, "compiled"), name)
            self.assertEqual(self.compile(b, path), (200, "shared", pyc), name)
            self.assertEqual(self.run_pyc(pyc)["AUTHED"], i)
        self.assertEqual(self.compiles(a, b), len(names))
        for server in (a, b):
            shared = server.stats()["shared"]
            self.assertEqual((shared["errors"], [s["up"] for s in shared["servers"]]),
                             (0, [True]))

    def test_requirepass_and_the_password_file(self):
        password = "pw-requirepass-%s" % os.urandom(6).hex()
        store = self.redis(args=("--requirepass", password), auth=(password,))
        # the file as an editor leaves it: its trailing newline is not part of the password
        secret = self.secret("redis.pw", password.encode() + b"\n")
        a, b = (self.replica(store.url, args=("--shared-password-file", secret))
                for _ in range(2))
        self.assert_shared_across(a, b, ["rp%02d.py" % i for i in range(4)])
        self.assertEqual(len(store.keys("pcc:v1:blob:*")), 4)
        self.assertEqual(store.keys("pcc:v1:lock:*"), [])  # the unlock script ran
        for server in (a, b):
            self.assertNotIn(password.encode(), self.log_text(server))
            self.assertNotIn(password, server.request("GET", "/v1/stats")[2].decode())
            with open("/proc/%d/cmdline" % server.proc.pid, "rb") as f:
                self.assertNotIn(password.encode(), f.read())

    def test_an_acl_user_restricted_to_pcc_keys_and_our_commands(self):
        password = "pw-acl-%s" % os.urandom(6).hex()
        store = self.redis(args=("--user", "default", "off",
                                 "--user", "admin", "on", ">admin-pw", "~*", "&*", "+@all",
                                 "--user", "pcc", "on", ">" + password, *PCC_ACL),
                           auth=("admin", "admin-pw"))
        secret = self.secret("acl.pw", password.encode())
        args = ("--shared-user", "pcc", "--shared-password-file", secret)
        a, b = (self.replica(store.url, args=args) for _ in range(2))
        self.assert_shared_across(a, b, ["acl%02d.py" % i for i in range(4)])
        self.assertEqual(len(store.keys("pcc:v1:blob:*")), 4)
        self.assertEqual(store.keys("pcc:v1:lock:*"), [])  # EVAL and its get and del allowed
        # a damaged value is deleted (DEL) and replaced by a third replica: all within the ACL
        path = self.source("acl-damaged.py", "DAMAGED = 1\n")
        status, outcome, pyc = self.compile(a, path)
        [key] = [k for k in store.keys("pcc:v1:blob:*")
                 if k.endswith(source_params(path, with_digest=True)["digest"])]
        store.command("SET", key, b"not a value at all")
        # the third from the environment, as the systemd and Kubernetes examples give them
        env = dict(os.environ, PYCACHED_SHARED_USER="pcc", PYCACHED_SHARED_PASSWORD_FILE=secret)
        c = self.replica(store.url, env=env)
        self.assertEqual(self.compile(c, path), (200, "compiled", pyc))
        shared = c.stats()["shared"]
        self.assertEqual((shared["corrupt"], shared["errors"], shared["stores"]), (1, 0, 1))
        self.assertNotEqual(store.command("GET", key), b"not a value at all")
        # the user really is restricted: outside pcc: it may do nothing, and PING is not ours
        pcc = Redis.__new__(Redis)
        pcc.port, pcc.auth = store.port, ("pcc", password)
        self.assertEqual(pcc.command("GET", key)[:4], b"PCCS")
        for denied in (("SET", "elsewhere", "1"), ("PING",), ("KEYS", "*")):
            with self.assertRaisesRegex(RuntimeError, "NOPERM"):
                pcc.command(*denied)
        for server in (a, b, c):
            self.assertNotIn(password.encode(), self.log_text(server))

    def test_an_acl_that_lacks_a_command_warns_once_and_costs_the_lookups(self):
        password = "pw-noperm-%s" % os.urandom(6).hex()
        acl = [rule for rule in PCC_ACL if rule != "+eval"]  # the lock's release is refused
        store = self.redis(args=("--user", "default", "off",
                                 "--user", "admin", "on", ">admin-pw", "~*", "&*", "+@all",
                                 "--user", "pcc", "on", ">" + password, *acl),
                           auth=("admin", "admin-pw"))
        secret = self.secret("noperm.pw", password.encode())
        server = self.replica(store.url, args=("--shared-user", "pcc", "--shared-password-file",
                                               secret))
        for i in range(20):
            path = self.source("noperm%02d.py" % i, "NOPERM = %d\n" % i)
            status, outcome, pyc = self.compile(server, path)
            self.assertEqual((status, outcome), (200, "compiled"), i)
            self.assertEqual(self.run_pyc(pyc)["NOPERM"], i)
            time.sleep(0.03)
        warned = self.warnings(server)
        self.assertEqual(len(warned), 1, warned[:3])  # not one a compile (20 before)
        self.assertIn("NOPERM", warned[0])
        self.assertIn("GET, SET, DEL and EVAL on ~pcc:*", warned[0])
        shared = server.stats()["shared"]
        # what the ACL allows still works (GET, SET: every value stored), what it refuses is
        # counted, and the server is not taken down for it (a partial ACL)
        self.assertEqual(shared["stores"], 20)
        self.assertGreaterEqual(shared["errors"], 20)
        self.assertEqual([s["up"] for s in shared["servers"]], [True])
        self.assertNotIn(password.encode(), self.log_text(server))

    def test_a_wrong_password_or_none_costs_the_lookups_and_warns_once(self):
        password = "pw-right-%s" % os.urandom(6).hex()
        wrong = "pw-wrong-%s" % os.urandom(6).hex()
        store = self.redis(args=("--requirepass", password), auth=(password,))
        wrong_file = self.secret("wrong.pw", wrong.encode() + b"\n")
        cases = (("none", (), "NOAUTH", "give --shared-password-file"),
                 ("wrong", ("--shared-password-file", wrong_file), "WRONGPASS",
                  "--shared-password-file"))
        started_servers = {}
        for name, args, message, hint in cases:
            server = started_servers[name] = self.replica(store.url, args=args)
            started = time.monotonic()
            for i in range(40):
                path = self.source("%s%02d.py" % (name, i), "LOCAL = %d\n" % i)
                status, outcome, pyc = self.compile(server, path)
                self.assertEqual((status, outcome), (200, "compiled"), (name, i))
                self.assertEqual(self.run_pyc(pyc)["LOCAL"], i)
                time.sleep(0.03)  # 40 compiles over more than a second: several backoffs
            took = time.monotonic() - started
            shared = server.stats()["shared"]
            warned = self.warnings(server)
            print("\n  %s password: 40 compiles in %.0f ms, %d warn line(s), errors %d, "
                  "skipped %d" % (name, took * 1000, len(warned), shared["errors"],
                                  shared["skipped"]), file=sys.stderr)
            self.assertEqual(server.stats()["compiles"], 40)
            self.assertGreaterEqual(shared["errors"], 3)  # probed again after each backoff,
            self.assertTrue(1 <= len(warned) <= 2, (len(warned), warned[:3]))  # not one a probe
            self.assertIn(message, warned[0])
            self.assertIn(hint, warned[0])
            self.assertIn("127.0.0.1:%d" % store.port, warned[0])
            self.assertGreaterEqual(shared["skipped"], 20)  # down: not asked per request
            self.assertEqual([s["up"] for s in shared["servers"]], [False])
            self.assertEqual(shared["stores"], 0)
            self.assertNotIn(wrong.encode(), self.log_text(server))
            self.assertNotIn(password.encode(), self.log_text(server))
            self.assertNotIn(wrong, server.request("GET", "/v1/stats")[2].decode())
        self.assertEqual(store.keys("pcc:v1:*"), [])
        # down, not given up: once Redis takes that password, the tier works again (a probe
        # after its backoff, at most PCC_SHARED_BACKOFF_MAX_MS)
        wrong_server = started_servers["wrong"]
        self.assertEqual(store.command("CONFIG", "SET", "requirepass", wrong), "OK")
        store.auth = (wrong,)
        deadline, n = time.monotonic() + 15, 0
        while wrong_server.stats()["shared"]["stores"] == 0 and time.monotonic() < deadline:
            n += 1
            path = self.source("again%03d.py" % n, "AGAIN = %d\n" % n)
            self.assertEqual(self.compile(wrong_server, path)[:2], (200, "compiled"))
            time.sleep(0.2)
        shared = wrong_server.stats()["shared"]
        self.assertGreaterEqual(shared["stores"], 1)
        self.assertEqual([s["up"] for s in shared["servers"]], [True])
        self.assertIn(b"is up again", self.log_text(wrong_server))
        self.assertLessEqual(len(self.warnings(wrong_server)), 2)

    def test_bad_password_files_and_a_user_without_one_are_refused(self):
        store = self.redis()
        too_large = b"p" * 1025  # PCC_SHARED_PASSWORD_MAX is 1024
        cases = [
            (("--shared-password-file", os.path.join(self.tmp, "missing.pw")),
             "--shared-password-file", "No such file"),
            (("--shared-password-file", self.secret("open.pw", b"secret-open", 0o644)),
             "--shared-password-file", "group or others"),
            (("--shared-password-file", self.secret("empty.pw", b"")),
             "--shared-password-file", "empty"),
            (("--shared-password-file", self.secret("newline.pw", b"\n")),
             "--shared-password-file", "empty"),
            (("--shared-password-file", self.secret("large.pw", too_large)),
             "--shared-password-file", "larger than the limit"),
            (("--shared-user", "pcc"), "--shared-user", "without --shared-password-file"),
            (("--shared-user", "two words", "--shared-password-file",
              self.secret("good.pw", b"secret-open")), "--shared-user",
             "not a Redis user name"),
        ]
        for args, option, what in cases:
            out = subprocess.run([PYCACHED, "--port", "0", "--store",
                                  os.path.join(self.tmp, "refused"), "--shared", store.url,
                                  *args], capture_output=True, text=True, timeout=30)
            self.assertNotEqual(out.returncode, 0, args)
            self.assertIn(option, out.stderr, args)
            self.assertIn(what, out.stderr, args)
            self.assertNotIn("secret-open", out.stderr)
            self.assertNotIn("ppppp", out.stderr)
        # a password of the limit, with its newline, is taken
        limit = self.secret("limit.pw", b"p" * 1024 + b"\n")
        server = self.replica(store.url, args=("--shared-password-file", limit))
        self.assertEqual(server.stats()["shared"]["errors"], 0)


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
