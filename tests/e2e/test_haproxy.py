"""End-to-end test of pycached replicas behind HAProxy (issue 15): deploy/haproxy/pycached.cfg
itself, its addresses given through the environment variables it reads, run by the real
haproxy (Debian's) in front of three real pycached replicas on loopback, with real
/usr/bin/python3 processes importing a package through the import hook (PYCACHED_URL: the
HAProxy frontend).

What it shows (docs/OPERATIONS.md, "Replicas behind HAProxy"): `haproxy -c` accepts the file;
each source's lookups and its compile land on one replica (each source compiled once in the
fleet, the sources spread over the three; pycachectl warm too; a profile and its bundle on one
replica); a source past HAProxy's buffer goes through; a killed replica is taken out by the
health checks and its sources are compiled on the others, every import working and computing
what its source says; a replica killed in the middle of a wave of three processes is replayed
around with no fallback; a restarted replica comes back with its store; one that refuses the
checks' Host is taken out; with every replica down a process asks three times (the hook's 5xx
breaker) and compiles locally.

Run by meson (`meson test haproxy`) with the variables of test_e2e.py; skipped without haproxy.
"""
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import (MAGIC, PYCACHECTL, PYTHON, Server, free_port,  # noqa: E402
                      make_tree, run_tests, stop_process)

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy",
                      "haproxy", "pycached.cfg")
SERVER_NAME = "pycached.test"  # the name the health checks send, which the replicas accept
MODULES = 30
WAIT = 20  # seconds any wait for HAProxy may take, at most


class HAProxy:
    """haproxy -db (foreground) on the deploy file, addresses from env; stopped by pid."""

    def __init__(self, workdir, replicas):
        self.port = free_port()
        self.socket = os.path.join(workdir, "haproxy.sock")
        self.env = {"PATH": "/usr/sbin:/usr/bin:/bin",
                    "PCC_HAPROXY_BIND": "127.0.0.1:%d" % self.port,
                    "PCC_HAPROXY_SOCKET": self.socket,
                    "PCC_SERVER_NAME": SERVER_NAME,
                    "PCC_CHECK_INTER": "200ms"}  # the test's only change: checks every 200 ms
        for i, address in enumerate(replicas, 1):
            self.env["PCC_REPLICA%d" % i] = address
        self.log_path = os.path.join(workdir, "haproxy.log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", CONFIG], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.url = "http://127.0.0.1:%d" % self.port
        deadline = time.monotonic() + WAIT
        while not os.path.exists(self.socket) and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("haproxy exited: %s" % self.log_text())
            time.sleep(0.05)

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def command(self, line):
        """One command on the admin socket; its answer."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(self.socket)
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return b"".join(chunks).decode()
                chunks.append(chunk)

    def states(self):
        """{"r1": "UP", "r2": "DOWN", ...} of the backend's servers ("show stat")."""
        text = self.command("show stat").lstrip("# ")
        return {row["svname"]: row["status"].split()[0] for row in csv.DictReader(io.StringIO(text))
                if row["pxname"] == "replicas" and row["svname"] not in ("BACKEND", "FRONTEND")}

    def wait_states(self, wanted):
        """Waits (at most WAIT s) until the servers named in wanted have those states."""
        deadline = time.monotonic() + WAIT
        while True:
            states = self.states()
            if all(states.get(name) == state for name, state in wanted.items()):
                return states
            if time.monotonic() > deadline:
                raise AssertionError("HAProxy states %r, not %r" % (states, wanted))
            time.sleep(0.1)

    def stop(self):
        stop_process(self.proc)
        self.log.close()
        return self.proc.returncode


@unittest.skipUnless(os.access(HAPROXY, os.X_OK), "needs haproxy (deploy/install-deps.sh)")
class Replicas(unittest.TestCase):
    """Three replicas (r1, r2, r3) behind the deploy file's HAProxy, and a package of MODULES
    modules whose values the test knows."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pcc-haproxy-")
        os.chmod(self.tmp, 0o755)
        self.replicas = {}
        self.haproxy = None
        self.ports = {name: free_port() for name in ("r1", "r2", "r3")}
        for name in self.ports:
            self.start_replica(name)
        self.haproxy = HAProxy(self.tmp, ["127.0.0.1:%d" % self.ports[name]
                                          for name in ("r1", "r2", "r3")])
        self.haproxy.wait_states({"r1": "UP", "r2": "UP", "r3": "UP"})
        files = {"fleet/__init__.py": ""}
        files.update({"fleet/m%02d.py" % i: "def value(x):\n    return x * %d + %d\n" % (i, i * i)
                      for i in range(MODULES)})
        self.root = make_tree(os.path.join(self.tmp, "src"), files)
        self.expected = sum(i * 10 + i * i for i in range(MODULES))

    def tearDown(self):
        if self.haproxy:
            self.haproxy.stop()
        for server in self.replicas.values():
            server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start_replica(self, name):
        """Starts replica name on its port with its own store (kept over restarts)."""
        if name in self.replicas:
            self.replicas[name].stop()  # a dead one: its files closed
        workdir = os.path.join(self.tmp, name)
        os.makedirs(workdir, exist_ok=True)
        os.chmod(workdir, 0o755)
        self.replicas[name] = Server(workdir, "--workers", "1", "--server-name", SERVER_NAME,
                                     port_args=("--port", str(self.ports[name])))
        return self.replicas[name]

    def source(self, i):
        return os.path.join(self.root, "fleet", "m%02d.py" % i)

    def holders(self, path):
        """The replicas whose store holds code for path (asked directly, not through HAProxy)."""
        with open(path, "rb") as f:
            data = f.read()
        query = urllib.parse.urlencode({"magic": MAGIC, "opt": 0, "path": path,
                                        "mtime": int(os.stat(path).st_mtime),
                                        "size": len(data)})
        return sorted(name for name, server in self.replicas.items()
                      if server.proc.poll() is None
                      and server.request("GET", "/v1/code?" + query)[0] == 200)

    def compiles(self):
        return {name: server.stats()["compiles"] for name, server in self.replicas.items()
                if server.proc.poll() is None}

    def import_code(self, between_halves=""):
        """Python that imports the package's modules (running between_halves after the first
        half) and prints the sum of their value(10) and the hook's stats."""
        return ("import sys, json, importlib; sys.path.insert(0, %r); import pycached\n"
                "mods = [importlib.import_module('fleet.m%%02d' %% i) for i in range(%d)]\n"
                "%s\n"
                "mods += [importlib.import_module('fleet.m%%02d' %% i) for i in range(%d, %d)]\n"
                "print(json.dumps({'sum': sum(m.value(10) for m in mods), "
                "'stats': pycached.stats()}))"
                % (self.root, MODULES // 2, between_halves, MODULES // 2, MODULES))

    def hook_env(self):
        env = {k: v for k, v in os.environ.items()
               if k.startswith(("ASAN_", "LSAN_", "UBSAN_", "LD_PRELOAD"))}
        env.update(PATH="/usr/bin:/bin", PYTHONDONTWRITEBYTECODE="1", PYCACHED_PROFILE="off")
        return env

    def hook_import(self):
        """One process importing the package through HAProxy; its stats."""
        run = subprocess.run([PYCACHECTL, "--server", self.haproxy.url, "exec", "--", PYTHON,
                              "-c", self.import_code()], capture_output=True, text=True,
                             env=self.hook_env(), timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        out = json.loads(run.stdout)
        self.assertEqual(out["sum"], self.expected, "the code computes what the source says")
        return out["stats"]

    def assert_served(self, stats, key):
        """Every module (the package's __init__ too) served, as key says ("hits": from a
        store, "compiles_asked": compiled by a replica), no fallback."""
        self.assertEqual(stats["fallbacks"], {}, stats)
        self.assertEqual(stats[key], MODULES + 1, stats)

    def test_the_deploy_file_checks(self):
        run = subprocess.run([HAPROXY, "-c", "-f", CONFIG], env=self.haproxy.env,
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn("Configuration file is valid", run.stdout + run.stderr)
        self.assertNotIn("WARNING", run.stdout + run.stderr)

    def test_each_source_lands_on_one_replica(self):
        self.assert_served(self.hook_import(), "compiles_asked")
        compiles = self.compiles()
        self.assertEqual(sum(compiles.values()), MODULES + 1, "each source compiled once")
        self.assertTrue(all(n > 0 for n in compiles.values()), "spread over all three: %r"
                        % compiles)
        for i in range(MODULES):
            self.assertEqual(len(self.holders(self.source(i))), 1, "m%02d on one replica" % i)
        # a second process: every lookup reaches the replica that compiled it
        self.assert_served(self.hook_import(), "hits")
        self.assertEqual(self.compiles(), compiles, "nothing compiled again")
        self.assertIn("replicas/r", self.haproxy.log_text(), "one log line per request")

    def test_a_replica_that_does_not_know_the_name_fails_its_checks(self):
        """The health checks send Host: PCC_SERVER_NAME; a replica started without
        --server-name refuses it (403) and is taken out rather than serving."""
        self.replicas["r3"].stop()
        workdir = os.path.join(self.tmp, "r3")
        self.replicas["r3"] = Server(workdir, "--workers", "1",
                                     port_args=("--port", str(self.ports["r3"])))
        refused = "replicas/r3 failed, reason: Layer7 wrong status, code: 403"
        deadline = time.monotonic() + WAIT
        while refused not in self.haproxy.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertIn(refused, self.haproxy.log_text())
        self.haproxy.wait_states({"r3": "DOWN", "r1": "UP", "r2": "UP"})
        self.assert_served(self.hook_import(), "compiles_asked")
        self.assertEqual(self.replicas["r3"].stats()["compiles"], 0, "r3 is out")

    def test_a_source_larger_than_haproxys_buffer(self):
        """A compile whose body passes tune.bufsize (64 KiB) is streamed through, not refused."""
        big = make_tree(os.path.join(self.tmp, "src-big"), {
            "bigmod.py": "".join("V%d = %d\n" % (i, i) for i in range(30000)) + "TOTAL = V29999\n"})
        self.assertGreater(os.path.getsize(os.path.join(big, "bigmod.py")), 200 * 1024)
        code = ("import sys, json; sys.path.insert(0, %r); import bigmod, pycached; "
                "print(json.dumps([bigmod.TOTAL, pycached.stats()]))" % big)
        for key in ("compiles_asked", "hits"):
            run = subprocess.run([PYCACHECTL, "--server", self.haproxy.url, "exec", "--", PYTHON,
                                  "-c", code], capture_output=True, text=True,
                                 env=self.hook_env(), timeout=120)
            self.assertEqual(run.returncode, 0, run.stderr)
            total, stats = json.loads(run.stdout)
            self.assertEqual(total, 29999)
            self.assertEqual((stats[key], stats["fallbacks"]), (1, {}), stats)

    def test_warm_through_haproxy_fills_each_replica_with_its_share(self):
        run = subprocess.run([PYCACHECTL, "--server", self.haproxy.url, "warm", self.root,
                              "--jobs", "4"], capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertEqual(sum(self.compiles().values()), MODULES + 1)
        for i in range(MODULES):
            self.assertEqual(len(self.holders(self.source(i))), 1, "m%02d on one replica" % i)
        self.assert_served(self.hook_import(), "hits")

    def test_a_killed_replica_leaves_and_comes_back(self):
        self.assert_served(self.hook_import(), "compiles_asked")
        on = {i: self.holders(self.source(i))[0] for i in range(MODULES)}
        init = self.holders(os.path.join(self.root, "fleet", "__init__.py"))[0]
        lost = sorted(i for i in range(MODULES) if on[i] == "r2")
        self.assertTrue(lost, "r2 holds some sources: %r" % on)
        self.replicas["r2"].proc.kill()  # SIGKILL: no goodbye
        self.replicas["r2"].proc.wait(10)
        self.haproxy.wait_states({"r2": "DOWN", "r1": "UP", "r3": "UP"})
        before = self.compiles()
        stats = self.hook_import()
        self.assertEqual(stats["fallbacks"], {}, "no import fell back: %r" % stats)
        after = self.compiles()
        self.assertEqual(sum(after.values()) - sum(before.values()), len(lost) + (init == "r2"),
                         "r2's sources compiled on the others, the rest hits")
        for i in lost:
            self.assertEqual(len(self.holders(self.source(i))), 1, "m%02d moved to one" % i)
        self.assertEqual(stats["hits"], MODULES + 1 - len(lost) - (init == "r2"), stats)
        # back with its store: its sources return to it, hits there
        r2 = self.start_replica("r2")
        self.haproxy.wait_states({"r1": "UP", "r2": "UP", "r3": "UP"})
        self.assert_served(self.hook_import(), "hits")
        self.assertEqual(r2.stats()["hits"], len(lost) + (init == "r2"),
                         "r2's sources are served by r2 again")

    def test_a_replica_killed_in_the_middle_of_a_wave(self):
        """Killed while three processes are between two halves of their imports, before any
        health check notices: the requests to it are replayed on another replica (retry-on,
        redispatch), and no import falls back."""
        self.assert_served(self.hook_import(), "compiles_asked")
        on = {i: self.holders(self.source(i))[0] for i in range(MODULES)}
        victim = on[MODULES - 1]  # the last module's replica: surely asked after the kill
        lost = sum(1 for i in range(MODULES // 2, MODULES) if on[i] == victim)
        code = self.import_code("print('ready', flush=True); sys.stdin.readline()")
        wave = [subprocess.Popen([PYCACHECTL, "--server", self.haproxy.url, "exec", "--", PYTHON,
                                  "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=self.hook_env())
                for _ in range(3)]
        results = []
        try:
            for proc in wave:
                self.assertEqual(proc.stdout.readline().strip(), "ready")
            self.replicas[victim].proc.kill()
            self.replicas[victim].proc.wait(10)
            for proc in wave:
                proc.stdin.write("go\n")
                proc.stdin.flush()
            for proc in wave:
                out, err = proc.communicate(timeout=120)
                self.assertEqual(proc.returncode, 0, err)
                results.append(json.loads(out))
        finally:
            for proc in wave:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        for result in results:
            self.assertEqual(result["sum"], self.expected, "no wrong code")
            self.assertEqual(result["stats"]["fallbacks"], {}, "replayed elsewhere: %r" % result)
        compiled = sum(r["stats"]["compiles_asked"] for r in results)
        self.assertGreaterEqual(compiled, lost, "the victim's second half compiled elsewhere")

    def test_with_every_replica_down_a_process_asks_three_times(self):
        """HAProxy answers 503 when no replica is up: the hook's breaker opens after three
        (PYCACHED_BREAKER_5XX), and every module compiles locally."""
        for server in self.replicas.values():
            server.proc.kill()
            server.proc.wait(10)
        self.haproxy.wait_states({"r1": "DOWN", "r2": "DOWN", "r3": "DOWN"})
        stats = self.hook_import()
        self.assertEqual(stats["fallbacks"], {"http-error": 3, "breaker-open": MODULES - 2})
        self.assertEqual(stats["local_compile"], MODULES + 1)
        self.assertEqual(self.haproxy.log_text().count(" 503 "), 3, "three requests, logged")

    def test_a_profile_is_recorded_and_bundled_on_one_replica(self):
        env = dict(self.hook_env(), PYCACHED_PROFILE="haproxy-suite")
        for _ in range(2):  # the first records the profile, the second fetches its bundle
            run = subprocess.run([PYCACHECTL, "--server", self.haproxy.url, "exec", "--", PYTHON,
                                  "-c", self.import_code()], capture_output=True, text=True,
                                 env=env, timeout=120)
            self.assertEqual(run.returncode, 0, run.stderr)
            out = json.loads(run.stdout)
            self.assertEqual(out["sum"], self.expected)
            self.assertEqual(out["stats"]["fallbacks"], {}, out["stats"])
        stats = {name: server.stats() for name, server in self.replicas.items()}
        recorded = [n for n, st in stats.items() if st["profiles_received"] > 0]
        bundled = [n for n, st in stats.items() if st["bundles"] > 0]
        self.assertEqual(len(recorded), 1, stats)
        self.assertEqual(bundled, recorded, "the bundle comes from the replica of the profile")
        self.assertGreater(stats[recorded[0]]["bundle_hits"], 0)

if __name__ == "__main__":
    sys.exit(run_tests(__name__))
