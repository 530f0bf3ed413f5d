"""The fleet of issue 15 on loopback (docs/OPERATIONS.md, "Topology"): 2 Redis servers, 3 central
replicas sharing them (--shared), the deploy file's HAProxy in front of the replicas, and 4
node-local daemons on unix sockets with HAProxy as their upstream (--upstream); then client
processes (/usr/bin/python3 with the hook, each on one node's socket) import a pyc-free,
read-only sympy + mpmath tree in waves.

It shows: every client computes the right answer; each distinct source is compiled once across
the fleet (the duplicates are counted and printed); the second wave is served entirely by the
node-local tier (the replicas' counters do not move); a replica and a Redis server killed in the
middle of a wave, with a byte flipped in every value of the Redis that stays, fail no import and
serve no wrong code, the damaged values detected. Each wave's time is printed (docs/BENCHMARKS.md,
"A fleet on loopback").

The fleet (LoopbackFleet), the tree (copy_tree) and the clients at once (run_at_once) are also
what tests/bench/bench_fleet.py times against anchors measured in the same run.

Run by meson (`meson test fleet_scale`). Every process is stopped by pid; every wait is bounded.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import PYCACHECTL, PYTHON, Server, free_port, run_tests  # noqa: E402
from test_haproxy import HAPROXY, SERVER_NAME, HAProxy  # noqa: E402
from test_hook import SYMPY_SCRIPT, SYMPY_SITE  # noqa: E402
from test_shared import REDIS_SERVER, Redis  # noqa: E402

NODES = 4
REPLICAS = ("r1", "r2", "r3")
WAVE = 4             # clients a wave, one a node (16 in all over the four waves)
CLIENT_TIMEOUT = 300  # seconds one client may take (the ASan build is slow)
ANSWER = ["(x - 1)*(x + 1)", "9"]


def client_env():
    """A client's environment: only what the hook and the sanitizer build need."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("ASAN_", "LSAN_", "UBSAN_", "LD_PRELOAD"))}
    env.update(PATH="/usr/bin:/bin", PYTHONDONTWRITEBYTECODE="1", PYCACHED_PROFILE="off")
    return env


def copy_tree(dest, comment=None, writable=False):
    """Copies Debian's sympy and mpmath to dest without their __pycache__; with comment, the line
    `# comment` is appended to every .py (new bytes: new digests, a source the fleet has never
    seen); read-only unless writable. Returns dest."""
    for pkg in ("sympy", "mpmath"):
        shutil.copytree(os.path.join(SYMPY_SITE, pkg), os.path.join(dest, pkg),
                        ignore=shutil.ignore_patterns("__pycache__"))
    if comment is not None:
        for dirpath, _, filenames in os.walk(dest):
            for name in filenames:
                if name.endswith(".py"):
                    with open(os.path.join(dirpath, name), "ab") as f:
                        f.write(b"\n# %s\n" % comment.encode())
    if not writable:
        subprocess.run(["chmod", "-R", "a-w", dest], check=True)
    return dest


def run_at_once(commands, during=None, timeout=CLIENT_TIMEOUT):
    """Starts every (argv, env) of commands at once; during() runs once they have started.
    Returns ([(returncode, stdout, stderr)] in the order of commands, seconds from the first
    start to the last exit). A client past timeout raises subprocess.TimeoutExpired; every
    process started is killed (if still running) and reaped before this returns or raises."""
    start = time.monotonic()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for argv, env in commands]
    try:
        if during:
            during()
        finished = []
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            finished.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return finished, time.monotonic() - start


class LoopbackFleet:
    """The fleet, started in tmp (a directory of the caller's, mode 0755): `redis` (2),
    `replicas` ({name: Server}, --shared, behind `haproxy`), `nodes` (NODES Servers on unix
    sockets, --upstream HAProxy). stop() stops every process by pid; a failed start stops what
    it started before raising."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.redis, self.replicas, self.nodes, self.haproxy = [], {}, [], None
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self):
        self.redis = [Redis(self.tmp) for _ in range(2)]
        shared = ",".join(r.url for r in self.redis)
        ports = {name: free_port() for name in REPLICAS}
        for name in REPLICAS:
            workdir = os.path.join(self.tmp, name)
            os.makedirs(workdir)
            os.chmod(workdir, 0o755)
            self.replicas[name] = Server(workdir, "--workers", "1", "--server-name", SERVER_NAME,
                                         "--shared", shared,
                                         port_args=("--port", str(ports[name])))
        self.haproxy = HAProxy(self.tmp, ["127.0.0.1:%d" % ports[name] for name in REPLICAS])
        self.haproxy.wait_states({name: "UP" for name in REPLICAS})
        for i in range(NODES):
            workdir = os.path.join(self.tmp, "node%d" % i)
            os.makedirs(workdir)
            os.chmod(workdir, 0o755)
            self.nodes.append(Server(workdir, "--workers", "1", "--listen",
                                     "unix:" + os.path.join(workdir, "pycached.sock"),
                                     "--upstream", self.haproxy.url, port_args=()))

    def stop(self):
        for node in self.nodes:
            node.stop()
        if self.haproxy:
            self.haproxy.stop()
        for server in self.replicas.values():
            server.stop()
        for redis in self.redis:
            redis.stop()

    def hook_command(self, i, tree):
        """(argv, env) of a hook client on node i % NODES importing tree (SYMPY_SCRIPT)."""
        code = "TREE = %r\n%s" % (tree, SYMPY_SCRIPT)
        return ([PYCACHECTL, "--server", self.nodes[i % NODES].url, "exec", "--", PYTHON, "-c",
                 code], client_env())

    def wave(self, tree, during=None):
        """WAVE hook clients at once, client i on node i, importing tree: run_at_once's answer."""
        return run_at_once([self.hook_command(i, tree) for i in range(WAVE)], during)

    def live_replicas(self):
        return {name: s for name, s in self.replicas.items() if s.proc.poll() is None}

    def replica_figures(self):
        """{name: (compiles, hits)} of the replicas alive."""
        figures = {}
        for name, server in self.live_replicas().items():
            stats = server.stats()
            figures[name] = (stats["compiles"], stats["hits"])
        return figures


@unittest.skipUnless(os.access(HAPROXY, os.X_OK) and os.access(REDIS_SERVER, os.X_OK),
                     "needs haproxy and redis-server (deploy/install-deps.sh)")
class Fleet(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="pcc-fleet-")
        os.chmod(cls.tmp, 0o755)
        cls.fleet = None
        try:
            cls.fleet = LoopbackFleet(cls.tmp)
            cls.redis, cls.replicas, cls.nodes = (cls.fleet.redis, cls.fleet.replicas,
                                                  cls.fleet.nodes)
            # the same sources at two paths: b is a fresh install of a
            cls.trees = {name: copy_tree(os.path.join(cls.tmp, "tree-" + name))
                         for name in ("a", "b")}
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.fleet:
            cls.fleet.stop()
        subprocess.run(["chmod", "-R", "u+w", cls.tmp])
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- helpers ---------------------------------------------------------------------------

    def wave(self, tree, during=None):
        """Runs WAVE clients at once, client i on node i; during() runs once they have started.
        Returns (their results, seconds from the first start to the last exit)."""
        finished, seconds = self.fleet.wave(tree, during)
        results = []
        for returncode, out, err in finished:
            self.assertEqual(returncode, 0, err[-3000:])
            results.append(json.loads(out))
        return results, seconds

    def live_replicas(self):
        return self.fleet.live_replicas()

    def replica_figures(self):
        return self.fleet.replica_figures()

    def assert_right(self, results):
        for result in results:
            self.assertEqual(result["answer"], ANSWER)

    # ---- the waves, in order ---------------------------------------------------------------

    def test_waves(self):
        # wave 1: a cold fleet; each node's client asks its node, which asks HAProxy's replica
        first, seconds1 = self.wave(self.trees["a"])
        self.assert_right(first)
        modules = len(first[0]["from_tree"])
        self.assertGreater(modules, 300)
        compiles = sum(c for c, _ in self.replica_figures().values())
        node_compiles = sum(n.stats()["compiles"] for n in self.nodes)
        duplicates = compiles - modules
        print("wave 1: %d clients, %d modules, %.2f s; %d compiles on the replicas (%d "
              "duplicates), %d on the nodes" % (WAVE, modules, seconds1, compiles, duplicates,
                                               node_compiles), file=sys.stderr)
        for result in first:
            self.assertEqual(result["stats"]["fallbacks"], {}, result["stats"])
        self.assertGreaterEqual(compiles, modules)
        self.assertLessEqual(duplicates, 5, "each source compiled once across the fleet")

        # wave 2: every node holds every module: the replicas see nothing
        before = self.replica_figures()
        second, seconds2 = self.wave(self.trees["a"])
        self.assert_right(second)
        for result in second:
            self.assertEqual((result["stats"]["hits"], result["stats"]["local_compile"]),
                             (modules, 0), result["stats"])
        self.assertEqual(self.replica_figures(), before, "served entirely by the node tier")
        print("wave 2: %.2f s, all %d modules from the nodes" % (seconds2, modules),
              file=sys.stderr)

        # wave 3: the nodes start empty (purged: as new hosts would) and the sources are at new
        # paths (a fresh install); every value of the Redis that stays gets a byte flipped, and
        # r2 and the other Redis die once the clients run: r2's sources move to r1 and r3,
        # which have to find them in the shared tier or compile them
        for node in self.nodes:
            self.assertEqual(node.request("POST", "/v1/admin/purge")[0], 200)
        keep, kill = self.redis
        damaged = 0
        for key in keep.keys("pcc:v1:blob:*"):
            value = keep.command("GET", key)
            if value:
                at = len(value) // 2
                keep.command("SETRANGE", key, at, bytes([value[at] ^ 0x40]))
                damaged += 1
        self.assertGreater(damaged, 0)

        def faults():
            time.sleep(0.3)
            self.replicas["r2"].proc.kill()
            self.replicas["r2"].proc.wait(10)
            kill.proc.kill()
            kill.proc.wait(10)

        third, seconds3 = self.wave(self.trees["b"], during=faults)
        self.assert_right(third)
        for result in third:
            self.assertEqual(len(result["from_tree"]), modules)
        fallbacks = [r["stats"]["fallbacks"] for r in third]
        corrupt = sum(s.stats().get("shared", {}).get("corrupt", 0)
                      for s in self.live_replicas().values())
        print("wave 3 (r2 and a Redis killed, %d values damaged): %.2f s, fallbacks %r, "
              "damaged values detected %d" % (damaged, seconds3, fallbacks, corrupt),
              file=sys.stderr)
        self.assertGreater(corrupt, 0, "r2's sources, found damaged in the Redis that stayed")

        # wave 4: after the faults, the fleet serves everything from the nodes again
        fourth, seconds4 = self.wave(self.trees["b"])
        self.assert_right(fourth)
        for result in fourth:
            self.assertEqual(result["stats"]["fallbacks"], {}, result["stats"])
            self.assertEqual(result["stats"]["local_compile"], 0, result["stats"])
        print("wave 4: %.2f s" % seconds4, file=sys.stderr)


if __name__ == "__main__":
    run_tests(__name__)
