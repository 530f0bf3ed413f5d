#!/usr/bin/env python3
"""drill_workers.py: compiler worker faults under load (issue 11), in two phases.

1. "signals": the embedded CPython workers, while a compile storm (one client thread per worker,
   distinct sources, one in twelve a syntax error) runs, are killed (SIGKILL) or stopped
   (SIGSTOP, and left stopped: only --compile-timeout gets the pool out of it) at random moments
   (seeded), busy or idle.
2. "garbage": the workers are a fake (FAKE_WORKER below, run by /usr/bin/python3 as --worker)
   that compiles for real but answers about one compile in four with garbage: random bytes, a
   frame of an unknown type, a length past the frame limit, a frame cut short (then exit, or
   then silence), an error frame that is not JSON, a second hello, or nothing at all (exit).
   A well-formed answer frame with wrong marshal bytes is not among them: the server stores
   what its workers compile (docs/DESIGN.md, "Trust"); the hook refuses such code (bad-code,
   tests/e2e/test_hook.py DamagedResponses).

Meanwhile a thread times lookups of entries compiled before the faults (hits). Goals: every
compile answers 200, 422 compile-error, 503 compiler-unavailable or 504 compile-timeout, never
anything else and never later than --compile-timeout + MARGIN seconds; hits stay fast (p99 under
HIT_P99 s, none as slow as the compile timeout); after the faults stop and a few more compiles,
the pool is back to --workers live, running processes (from /proc: no zombie, none stopped), and
the server exits 0 on SIGTERM. Existing tests of single faults: tests/e2e/test_e2e.py Lifecycle
(a worker killed mid-compile, the compile timeout), tests/e2e/security_workers.py (a forbidden
call), tests/unit/test_compiler.c (the pool against misbehaving workers).

    tests/chaos/drill_workers.py           # full: 30 s of faults a phase
    tests/chaos/drill_workers.py --short   # meson's chaos-workers: 8 s a phase
"""
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chaoslib import (Client, Goals, PYTHON, Server, children, local_compile,  # noqa: E402
                      make_source, parse_args, percentile, source_query)

FULL = {"seconds": 30.0, "workers": 3, "hot": 50}
SHORT = {"seconds": 8.0, "workers": 2, "hot": 20}
TIMEOUT = 2       # --compile-timeout
MARGIN = 3.0      # what a replacement's start and a loaded machine may add to it
HIT_P99 = 0.1     # seconds
ALLOWED = {200: None, 422: "compile-error", 503: "compiler-unavailable", 504: "compile-timeout"}

FAKE_WORKER = r'''
import importlib.util, json, marshal, os, random, struct, sys, time
inp = os.fdopen(os.dup(0), "rb", buffering=0)
out = os.fdopen(os.dup(1), "wb", buffering=0)
os.dup2(2, 1)
rng = random.Random(int(sys.argv[1]) * 65537 + os.getpid())
def frame(kind, payload):
    out.write(struct.pack("<IB", len(payload) + 1, ord(kind)) + payload)
def read(n):
    data = b""
    while len(data) < n:
        chunk = inp.read(n - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data
frame("H", json.dumps({"magic": importlib.util.MAGIC_NUMBER.hex(), "implementation": "cpython",
                       "version": "%d.%d.%d" % sys.version_info[:3]}).encode())
for _ in range(100000):
    total, kind = struct.unpack("<IB", read(5))
    body = read(total - 1)
    opt, path_len = struct.unpack_from("<BI", body)
    path, source = body[5:5 + path_len].decode(), body[5 + path_len:]
    mode = rng.choice(GARBAGE) if rng.random() < 0.25 else "ok"
    with open(sys.argv[2] + "/" + mode, "ab") as f:
        f.write(b".")
    if mode == "random":
        out.write(os.urandom(rng.randint(1, 64)))
    elif mode == "unknown-type":
        frame("Z", b"junk")
    elif mode == "past-limit":
        out.write(struct.pack("<IB", 0xFFFFFFF0, ord("K")))
    elif mode == "cut-exit":
        out.write(struct.pack("<IB", 1000, ord("K")) + b"\xe3" * 10)
        sys.exit(0)
    elif mode == "cut-silent":
        out.write(struct.pack("<IB", 1000, ord("K")) + b"\xe3" * 10)
        time.sleep(3600)
    elif mode == "bad-error":
        frame("E", b"{not json")
    elif mode == "hello-again":
        frame("H", b"{}")
    elif mode == "exit":
        sys.exit(0)
    else:
        try:
            frame("K", marshal.dumps(compile(source, path, "exec", 0, True, opt)))
        except (SyntaxError, ValueError) as e:
            frame("E", json.dumps({"type": type(e).__name__, "message": str(e), "line": 1,
                                   "offset": 1, "transient": False}).encode())
'''
GARBAGE = ["random", "unknown-type", "past-limit", "cut-exit", "cut-silent", "bad-error",
           "hello-again", "exit"]


class Phase:
    """One server under a compile storm, a hit timer and a fault injector."""

    def __init__(self, name, args, rng, tmp, server_args):
        self.name, self.args, self.rng, self.tmp = name, args, rng, tmp
        os.makedirs(os.path.join(tmp, name))
        self.server = Server(os.path.join(tmp, name), "--workers", str(args.workers),
                             "--compile-timeout", str(TIMEOUT), "--timeout-memory", "0",
                             *server_args)
        self.lock = threading.Lock()
        self.next = 0
        self.latencies, self.hits, self.slow_hits = [], [], 0
        self.statuses, self.bad = {}, []
        self.faults = {}
        self.stop = threading.Event()

    def source(self, i):
        import random
        path = os.path.join(self.tmp, self.name, "src", "w%05d.py" % i)
        return path, make_source(random.Random(self.args.seed * 7919 + i), i, i % 12 == 11)

    def compile_one(self, client, i):
        path, source = self.source(i)
        t0 = time.monotonic()
        try:
            status, _, body = client.request("POST", "/v1/compile?" + source_query(path, source),
                                             source)
        except Exception as e:
            status, body = type(e).__name__, b""
        took = time.monotonic() - t0
        error = None
        try:
            error = json.loads(body).get("error") if status != 200 else None
        except ValueError:
            pass
        with self.lock:
            self.latencies.append(took)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status not in ALLOWED or ALLOWED[status] != error or \
                    (status == 422 and local_compile(source, path)[0] != "error"):
                self.bad.append((i, status, error, body[:100]))
            if took > TIMEOUT + MARGIN:
                self.bad.append((i, status, "took %.1f s" % took, b""))
        return status

    def compiler(self, t):
        client = Client(self.server.port, timeout=TIMEOUT + 60)
        for _ in range(10 ** 7):
            if self.stop.is_set():
                break
            with self.lock:
                i, self.next = self.next, self.next + 1
            self.compile_one(client, i)
        client.close()

    def hitter(self, hot):
        client = Client(self.server.port, timeout=30)
        for n in range(10 ** 7):
            if self.stop.is_set():
                break
            path, source = hot[n % len(hot)]
            t0 = time.monotonic()
            try:
                status = client.request("GET", "/v1/code?" + source_query(path, source))[0]
            except Exception as e:
                status = type(e).__name__
            took = time.monotonic() - t0
            with self.lock:
                self.hits.append(took)
                if status != 200:
                    self.bad.append(("hit", status, "a hit missed", b""))
            time.sleep(0.005)
        client.close()

    def fault(self, kind):
        with self.lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1

    def live_workers(self):
        return [p for p, state in children(self.server.proc.pid).items() if state not in "ZTt"]

    def run(self, inject):
        """Returns (pool size at the end, or the sizes seen while waiting for it)."""
        args = self.args
        client = Client(self.server.port)
        hot = []
        for i in range(10 ** 6, 10 ** 6 + args.hot):  # compiled before any fault
            for _ in range(20):  # the garbage worker may refuse it a few times
                if self.compile_one(client, i) == 200:
                    hot.append(self.source(i))
                    break
        threads = [threading.Thread(target=self.compiler, args=(t,)) for t in range(args.workers)]
        threads.append(threading.Thread(target=self.hitter, args=(hot,)))
        for thread in threads:
            thread.start()
        try:
            end = time.monotonic() + args.seconds
            while inject and time.monotonic() < end:
                time.sleep(self.rng.uniform(0.2, 0.8))
                workers = self.live_workers()
                if not workers:
                    continue
                pid = self.rng.choice(sorted(workers))
                kind = self.rng.choice(["SIGKILL", "SIGSTOP"])
                try:
                    os.kill(pid, signal.SIGKILL if kind == "SIGKILL" else signal.SIGSTOP)
                    self.fault(kind)
                except ProcessLookupError:
                    pass
            if not inject:
                time.sleep(args.seconds)
            # faults over: the storm goes on for a while, then the pool must be whole
            time.sleep(2 * TIMEOUT + 2)
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(TIMEOUT + 90)
        sizes = []
        for k in range(4 * args.workers):  # a few compiles after the storm, one at a time
            self.compile_one(client, 2 * 10 ** 6 + k)
            sizes.append(len(self.live_workers()))
        client.close()
        # a worker retired by the last answer is replaced just after it (pcc_compiler_repair):
        # the pool must be whole again within a worker's start, bounded
        deadline = time.monotonic() + 10
        while sizes[-1] != args.workers and time.monotonic() < deadline:
            time.sleep(0.1)
            sizes.append(len(self.live_workers()))
        return sizes

    def close(self):
        return self.server.stop()


def main():
    args, rng = parse_args(__doc__, FULL, SHORT)
    goals = Goals("drill_workers")
    tmp = tempfile.mkdtemp(prefix="pcc-chaos-workers-")
    os.chmod(tmp, 0o755)
    marks = os.path.join(tmp, "marks")
    os.makedirs(marks)
    os.chmod(marks, 0o1777)  # the workers may run as a uid of their own
    script = os.path.join(tmp, "fake_worker.py")
    with open(script, "w") as f:
        f.write("GARBAGE = %r\n%s" % (GARBAGE, FAKE_WORKER))
    wrapper = os.path.join(tmp, "fake_worker.sh")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec %s -I -S -B %s %d %s\n" % (PYTHON, script, args.seed, marks))
    os.chmod(script, 0o644)
    os.chmod(wrapper, 0o755)
    codes = []
    try:
        for name, server_args in (("signals", ()), ("garbage", ("--worker", wrapper))):
            phase = Phase(name, args, rng, tmp, server_args)
            try:
                sizes = phase.run(inject=name == "signals")
            finally:
                codes.append(phase.close())
            if name == "garbage":
                for mode in os.listdir(marks):
                    phase.faults[mode] = os.path.getsize(os.path.join(marks, mode))
                phase.faults.pop("ok", None)
            p99, worst = percentile(phase.hits, 99), max(phase.hits or [0])
            goals.figure(name + "_compiles", len(phase.latencies))
            goals.figure(name + "_statuses", phase.statuses)
            goals.figure(name + "_faults", phase.faults)
            goals.figure(name + "_compile_max_s", max(phase.latencies or [0]))
            goals.figure(name + "_hits", len(phase.hits))
            goals.figure(name + "_hit_p50_ms", 1000 * percentile(phase.hits, 50))
            goals.figure(name + "_hit_p99_ms", 1000 * p99)
            goals.figure(name + "_hit_max_ms", 1000 * worst)
            goals.figure(name + "_pool_sizes_after", "/".join(map(str, sizes)))
            goals.check(name + "_answers", not phase.bad, phase.bad[:5])
            goals.check(name + "_hits_fast", p99 < HIT_P99 and worst < TIMEOUT,
                        "p99 %.3f s, max %.3f s" % (p99, worst))
            goals.check(name + "_pool_recovers", sizes and sizes[-1] == args.workers,
                        "live workers after the storm: %s" % sizes)
            goals.check(name + "_faults_injected", sum(phase.faults.values()) > 0, phase.faults)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    goals.check("clean_exit", codes == [0, 0], "exit codes on SIGTERM: %r" % codes)
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
