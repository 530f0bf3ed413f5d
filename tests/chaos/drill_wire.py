#!/usr/bin/env python3
"""drill_wire.py: a damaged wire between the import hook and the server (issue 11). A TCP proxy
on loopback (threads, in this drill) forwards the hook's connections to a real pycached and, per
connection at random (seeded), damages what the server answers: one byte flipped, the stream cut
(truncated), one pause of 50-350 ms (below the hook's 500 ms lookup timeout) or of 0.6-2.5 s
(beyond it, below the compile timeout), a reset (RST), or nothing. Each fault strikes at an
offset into the connection's answers drawn log-uniformly up to 4 MiB, so it lands in a bundle,
a first answer or one deep into a kept-alive connection; a fault whose offset the connection
never reaches is counted as not injected.

Real programs run under the hook (`pycachectl exec`) through the proxy, each trial one program,
and must give what they give without the hook: the same exit status and output. Programs: a
sympy computation on a pyc-free copy of Debian's sympy and mpmath (as tests/e2e/test_hook.py),
and the stdlib's own test suites of json and ast (libpython3.11-testsuite) run with
`python3 -m unittest -v` from a pyc-free copy with PYTHONDONTWRITEBYTECODE=1 (their verdict
lines and summary compared, the timing left out). The short version runs a small mpmath
computation and the json suite alone. Trials alternate profiles (bundles) on and off and hash
and timestamp validation. A trial is a hang when it runs past 3 x its plain run + 30 s.

Figures: trials, connections, faults injected by kind, mismatches (goal 0), hangs (goal 0),
trees left with a __pycache__ (goal 0). Damaged answers of each kind one at a time, with the
fallback each one must give, are tests/e2e/test_hook.py DamagedResponses.

    tests/chaos/drill_wire.py            # full: 20 trials (sympy, json and ast suites)
    tests/chaos/drill_wire.py --short    # meson's chaos-wire: 8 trials (mpmath, json suite)
"""
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chaoslib import PYCACHECTL, PYTHON, Goals, Server, parse_args  # noqa: E402

FULL = {"trials": 20}
SHORT = {"trials": 8}
KINDS = ["none", "flip", "truncate", "delay-short", "delay-long", "reset"]
OFFSET_MAX = 4 << 20
SITE = "/usr/lib/python3/dist-packages"
STDLIB_TESTS = "/usr/lib/python3.11/test"

SYMPY = ("import sympy\nx = sympy.Symbol('x')\n"
         "print(sympy.factor(x**2 - 1), sympy.integrate(sympy.sin(x) * x, x),\n"
         "      sympy.Rational(1, 3) + sympy.Rational(1, 6), sympy.solve(x**2 - 4, x))\n")
MPMATH = ("import mpmath\nmpmath.mp.dps = 30\n"
          "print(mpmath.pi, mpmath.zeta(3), mpmath.quad(mpmath.sin, [0, mpmath.pi]))\n")


class Proxy:
    """Forwards 127.0.0.1:self.port to the server's port, damaging each connection's answers as
    its fault (drawn from rng) says. Counts connections and faults injected by kind."""

    def __init__(self, upstream, rng):
        self.upstream, self.rng = upstream, rng
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.connections = 0
        self.injected = {}
        self.stop = threading.Event()
        self.threads = []
        self.acceptor = threading.Thread(target=self.accept_loop)
        self.acceptor.start()

    def accept_loop(self):
        for _ in range(10 ** 7):  # bounded; ends when stopped
            if self.stop.is_set():
                break
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self.lock:
                self.connections += 1
                kind = self.rng.choice(KINDS)
                offset = int(math.exp(self.rng.uniform(0, math.log(OFFSET_MAX))))
                pause = self.rng.uniform(0.05, 0.35) if kind == "delay-short" else \
                    self.rng.uniform(0.6, 2.5)
                mask = self.rng.randint(1, 255)
            thread = threading.Thread(target=self.serve, args=(client, kind, offset, pause, mask))
            thread.start()
            self.threads.append(thread)

    def count(self, kind):
        with self.lock:
            self.injected[kind] = self.injected.get(kind, 0) + 1

    def serve(self, client, kind, offset, pause, mask):
        try:
            server = socket.create_connection(("127.0.0.1", self.upstream), timeout=30)
        except OSError:
            client.close()
            return
        up = threading.Thread(target=self.pump_up, args=(client, server))
        up.start()
        try:
            self.pump_down(server, client, kind, offset, pause, mask)
        finally:
            for sock in (client, server):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            up.join(60)
            client.close()
            server.close()

    def pump_up(self, client, server):
        """The hook's requests, as they are."""
        client.settimeout(60)
        try:
            for _ in range(10 ** 7):
                data = client.recv(65536)
                if not data:
                    break
                server.sendall(data)
        except OSError:
            pass
        try:
            server.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def pump_down(self, server, client, kind, offset, pause, mask):
        """The server's answers, damaged once at offset."""
        sent, done = 0, kind == "none"
        server.settimeout(60)
        try:
            for _ in range(10 ** 7):
                data = server.recv(65536)
                if not data:
                    break
                if not done and sent + len(data) > offset:
                    at = offset - sent
                    done = True
                    self.count(kind)
                    if kind == "flip":
                        data = data[:at] + bytes([data[at] ^ mask]) + data[at + 1:]
                    elif kind == "truncate":
                        client.sendall(data[:at])
                        return
                    elif kind in ("delay-short", "delay-long"):
                        client.sendall(data[:at])
                        sent += at
                        data = data[at:]
                        time.sleep(pause)
                    elif kind == "reset":
                        client.sendall(data[:at])
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        return
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass

    def close(self):
        self.stop.set()
        self.acceptor.join(30)
        self.listener.close()
        for thread in self.threads:
            thread.join(60)


def copy_tree(src, dst, names=None):
    """Copies src (or its entries in names) to dst without any __pycache__, read-only."""
    for name in names or [""]:
        source, target = os.path.join(src, name), os.path.join(dst, name)
        if os.path.isdir(source):
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy(source, target)


def programs(tmp, short):
    """{name: (argv after python3, cwd)} of the drill's programs, their trees made in tmp."""
    site = os.path.join(tmp, "site")
    copy_tree(SITE, site, ["mpmath"] if short else ["sympy", "mpmath"])
    found = {}
    prelude = "import sys\nsys.path.insert(0, %r)\n" % site
    if short:
        found["mpmath"] = (["-c", prelude + MPMATH], tmp)
    else:
        found["sympy"] = (["-c", prelude + SYMPY], tmp)
    suites = ["test.test_json"] if short else ["test.test_json", "test.test_ast"]
    if os.path.isdir(os.path.join(STDLIB_TESTS, "test_json")):
        tree = os.path.join(tmp, "stdlib-tests")
        copy_tree(STDLIB_TESTS, os.path.join(tree, "test"),
                  ["__init__.py", "support", "test_json", "test_ast.py"])
        found["stdlib-tests"] = (["-m", "unittest", "-v", *suites], tree)
    subprocess.run(["chmod", "-R", "a-w", site] + ([found["stdlib-tests"][1]]
                                                   if "stdlib-tests" in found else []),
                   check=True)
    return found


def outcome(run):
    """What must not change: the exit status, stdout, and unittest's verdict lines and summary
    (stderr's 'Ran N tests in T s' without T)."""
    verdicts = [line for line in run.stderr.splitlines()
                if re.search(r" \.\.\. (ok|FAIL|ERROR|skipped.*|expected failure)$", line)
                or re.match(r"(OK|FAILED)\b", line)]
    ran = re.findall(r"^Ran (\d+) tests?", run.stderr, re.M)
    return (run.returncode, run.stdout, ran, sorted(verdicts))


def run_program(argv, cwd, hook_url, env_extra, timeout):
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    env.update({k: v for k, v in os.environ.items()
                if k.startswith(("ASAN_", "LSAN_", "UBSAN_", "LD_PRELOAD"))})
    env.update(env_extra)
    cmd = [PYTHON, *argv]
    if hook_url:
        cmd = [PYCACHECTL, "--server", hook_url, "exec", "--"] + cmd
    else:
        env = {k: v for k, v in env.items() if k != "LD_PRELOAD"}  # plain python, no hook
    t0 = time.monotonic()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - t0
    return run, time.monotonic() - t0


def has_pycache(root):
    return any("__pycache__" in dirs for _, dirs, _ in os.walk(root))


def main():
    args, rng = parse_args(__doc__, FULL, SHORT)
    goals = Goals("drill_wire")
    tmp = tempfile.mkdtemp(prefix="pcc-chaos-wire-")
    os.chmod(tmp, 0o755)
    server = proxy = None
    mismatches, hangs, dirty, trials, by_program = [], [], [], 0, {}
    try:
        progs = programs(tmp, args.short)
        baselines = {}
        for name, (argv, cwd) in progs.items():
            run, took = run_program(argv, cwd, None, {}, 600)
            if run is None or run.returncode != 0:
                raise RuntimeError("%s fails without the hook: %s" % (
                    name, run and run.stderr[-2000:]))
            baselines[name] = (outcome(run), took)
            print("plain %s: %.1f s" % (name, took), flush=True)
        server = Server(tmp, "--workers", "2")
        proxy = Proxy(server.port, random.Random(rng.getrandbits(64)))
        url = "http://127.0.0.1:%d" % proxy.port
        names = sorted(progs)
        for t in range(args.trials):
            name = names[t % len(names)]
            argv, cwd = progs[name]
            expected, plain = baselines[name]
            env = {"PYCACHED_PROFILE": "off" if rng.random() < 0.5 else "",
                   "PYCACHED_VALIDATION": rng.choice(["hash", "timestamp"])}
            env = {k: v for k, v in env.items() if v}
            limit = 3 * plain + 30
            run, took = run_program(argv, cwd, url, env, limit + 60)
            trials += 1
            by_program[name] = by_program.get(name, 0) + 1
            if run is None or took > limit:
                hangs.append((t, name, round(took, 1)))
            elif outcome(run) != expected:
                got = outcome(run)
                mismatches.append((t, name, got[0], got[1][-200:], run.stderr[-600:]))
            if has_pycache(cwd) or has_pycache(os.path.join(tmp, "site")):
                dirty.append((t, name))
            print("trial %d %s %s: %.1f s%s" % (t + 1, name, env, took,
                                                "" if not mismatches or mismatches[-1][0] != t
                                                else " MISMATCH"), flush=True)
    finally:
        if proxy:
            proxy.close()
        code = server.stop() if server else None
        subprocess.run(["chmod", "-R", "u+w", tmp])
        shutil.rmtree(tmp, ignore_errors=True)
    goals.figure("seed", args.seed)
    goals.figure("trials", trials)
    goals.figure("programs", by_program)
    goals.figure("connections", proxy.connections if proxy else 0)
    goals.figure("faults_injected", proxy.injected if proxy else {})
    goals.figure("mismatches", len(mismatches))
    goals.figure("hangs", len(hangs))
    goals.figure("trees_with_pycache", len(dirty))
    goals.check("trials", trials == args.trials, "%d of %d" % (trials, args.trials))
    goals.check("mismatches", not mismatches, mismatches[:3])
    goals.check("hangs", not hangs, hangs[:5])
    goals.check("pyc_free", not dirty, dirty[:5])
    goals.check("faults_injected", proxy and sum(proxy.injected.values()) > 0,
                proxy.injected if proxy else "no proxy")
    goals.check("clean_exit", code == 0, "exit %r on SIGTERM" % code)
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
