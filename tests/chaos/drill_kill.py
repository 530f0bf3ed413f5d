#!/usr/bin/env python3
"""drill_kill.py: kill -9 under load (issue 11). A storm of compiles of distinct sources
(POST /v1/compile, several client threads, one in twelve sources a syntax error) while the server
is killed with SIGKILL at random moments (seeded) and restarted on the same store and port. After
each restart every entry acknowledged so far (a compile answered 200 or 422) is looked up
(GET /v1/code with hash and digest, raw pyc) and checked against the reference interpreter's own
compile() of its source: the pyc header, and the code object unmarshalled from the body compared
recursively (chaoslib.code_key: co_code, constants, names, line tables...). Entries whose compile
was cut by the kill may be there or not; when served they are checked the same way.

Durability: the store opens LMDB with MDB_NOMETASYNC (store/store.c): each commit writes and
fsyncs its data pages, and writes the meta page without an fsync (the next commit's fsync
flushes it). The path entry and blob of a compile are committed before the answer is sent
(server/cache.c, job_compile then job_finish_locked). A killed process loses nothing that was
committed (the pages are in the kernel's page cache): a 200 is never lost to kill -9, which this
drill checks. A crash of the system (power, kernel) may undo the last commit, that is the last
compile answered before it, never corrupt the file; this drill does not cover that.

Figures: kills, restarts, compiles answered, entries checked, served wrong (goal 0), acknowledged
and gone after a restart (goal 0), restarts that fail (goal 0), workers left behind by a killed
server after 5 s (goal 0).

    tests/chaos/drill_kill.py            # full: 20 kills
    tests/chaos/drill_kill.py --short    # meson's chaos-kill: 5 kills
"""
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chaoslib import (Client, Goals, Server, alive, check_pyc, children,  # noqa: E402
                      local_compile, make_source, parse_args, source_query, MTIME)

FULL = {"kills": 20, "threads": 4, "min_gap": 0.3, "max_gap": 2.0}
SHORT = {"kills": 5, "threads": 3, "min_gap": 0.2, "max_gap": 1.0}


class Storm:
    """Client threads compiling distinct sources until stopped; what was answered and what was
    cut off, by source index."""

    def __init__(self, rng, tmp, threads):
        self.seed = rng.getrandbits(32)
        self.tmp = tmp
        self.port = None
        self.lock = threading.Lock()
        self.next = 0
        self.sources = {}   # index -> (path, source bytes, expected from local_compile)
        self.acked = {}     # index -> status answered (200 or 422)
        self.cut = set()    # indexes whose compile got no answer
        self.wrong = []     # (index, what) for answers that were wrong
        self.answers = 0
        self.errors = {}    # status or exception name -> count
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(t,)) for t in range(threads)]

    def source(self, i):
        import random
        rng = random.Random(self.seed * 1000003 + i)
        path = os.path.join(self.tmp, "src", "m%05d.py" % i)
        source = make_source(rng, i, broken=i % 12 == 11)
        return path, source, local_compile(source, path)

    def run(self, t):
        try:
            self.storm(t)
        except Exception as e:  # a bug of the drill: counted, never silent
            with self.lock:
                self.wrong.append((-1, "client thread %d: %r" % (t, e)))

    def storm(self, t):
        client, port = None, None
        for _ in range(10 ** 7):  # bounded; ends when stopped
            if self.stop.is_set():
                break
            with self.lock:
                i, self.next = self.next, self.next + 1
                current = self.port
            if client is None or port != current:
                if client:
                    client.close()
                client, port = Client(current, timeout=30), current
            path, source, expected = self.source(i)
            with self.lock:
                self.sources[i] = (path, source, expected)
            try:
                status, headers, body = client.request(
                    "POST", "/v1/compile?" + source_query(path, source), source,
                    {"Accept": "application/x-python-pyc", "Content-Type": "text/x-python"})
            except Exception as e:  # the server was killed under it
                with self.lock:
                    self.cut.add(i)
                    self.errors[type(e).__name__] = self.errors.get(type(e).__name__, 0) + 1
                time.sleep(0.05)
                continue
            problem = None
            if status == 200:
                problem = check_pyc(body, source, path, MTIME, expected)
            elif status == 422:
                problem = None if expected[0] == "error" else "422 for a source that compiles"
            with self.lock:
                self.answers += 1
                if status in (200, 422):
                    self.acked[i] = status
                else:
                    self.cut.add(i)
                    self.errors[status] = self.errors.get(status, 0) + 1
                if problem:
                    self.wrong.append((i, "compile answer: " + problem))
        if client:
            client.close()


def verify(server, storm, acked, cut, checked_out):
    """Looks every entry of acked (must be there) and cut (may be there) up on server. Returns
    (wrong, gone) lists of (index, what)."""
    wrong, gone = [], []
    client = Client(server.port, timeout=30)
    try:
        for i in sorted(acked) + sorted(cut):
            path, source, expected = storm.sources[i]
            status, _, body = client.request("GET", "/v1/code?" + source_query(path, source),
                                             headers={"Accept": "application/x-python-pyc"})
            checked_out[0] += 1
            if status == 200:
                problem = check_pyc(body, source, path, MTIME, expected)
                if problem:
                    wrong.append((i, problem))
            elif status == 422:
                if expected[0] != "error":
                    wrong.append((i, "422 for a source that compiles"))
            elif status == 404:
                if i in acked:
                    gone.append((i, "404 %s" % body[:80]))
            else:
                wrong.append((i, "status %d: %s" % (status, body[:120])))
    finally:
        client.close()
    return wrong, gone


def main():
    args, rng = parse_args(__doc__, FULL, SHORT)
    goals = Goals("drill_kill")
    tmp = tempfile.mkdtemp(prefix="pcc-chaos-kill-")
    os.chmod(tmp, 0o755)
    storm = Storm(rng, tmp, args.threads)
    server, port = None, None
    restart_failures, orphans, wrong, gone, checked = [], [], [], [], [0]
    kills = 0
    try:
        server = Server(tmp, "--workers", "2")
        port = server.port
        storm.port = port
        for thread in storm.threads:
            thread.start()
        for k in range(args.kills):
            time.sleep(rng.uniform(args.min_gap, args.max_gap))
            workers = list(children(server.proc.pid))
            server.proc.kill()
            server.proc.wait(30)
            server.stop()
            kills += 1
            time.sleep(0.1)  # answers sent before the kill reach the clients
            with storm.lock:
                acked, cut = dict(storm.acked), set(storm.cut) - set(storm.acked)
            deadline = time.monotonic() + 5
            while any(alive(p) for p in workers) and time.monotonic() < deadline:
                time.sleep(0.05)
            orphans += [p for p in workers if alive(p)]
            for p in workers:  # none should be left; do not leave any behind either
                if alive(p):
                    os.kill(p, 9)
            server = None
            for attempt in range(2):  # the same port, else (counted as a failure) any port
                try:
                    server = Server(tmp, "--workers", "2",
                                    "--port", str(port if attempt == 0 else 0))
                    break
                except RuntimeError as e:
                    restart_failures.append("kill %d attempt %d: %s" % (k + 1, attempt, e))
            if server is None:
                break
            if server.port != port:
                port = server.port
                with storm.lock:
                    storm.port = port
            w, g = verify(server, storm, acked, cut, checked)
            wrong += w
            gone += g
            print("kill %d: %d acknowledged, %d cut, %d wrong, %d gone" % (
                k + 1, len(acked), len(cut), len(w), len(g)), flush=True)
    finally:
        storm.stop.set()
        for thread in storm.threads:
            if thread.is_alive():
                thread.join(60)
        code = server.stop() if server else None
        shutil.rmtree(tmp, ignore_errors=True)
    wrong += storm.wrong
    goals.figure("seed", args.seed)
    goals.figure("kills", kills)
    goals.figure("compiles_answered", storm.answers)
    goals.figure("acknowledged", len(storm.acked))
    goals.figure("cut_by_kills", len(storm.cut - set(storm.acked)))
    goals.figure("entries_checked", checked[0])
    goals.figure("served_wrong", len(wrong))
    goals.figure("acknowledged_then_gone", len(gone))
    goals.figure("restart_failures", len(restart_failures))
    goals.figure("orphan_workers", len(orphans))
    goals.figure("errors", storm.errors)
    goals.check("kills", kills == args.kills, "%d of %d" % (kills, args.kills))
    goals.check("served_wrong", not wrong, wrong[:5])
    goals.check("acknowledged_then_gone", not gone, gone[:5])
    goals.check("restart_failures", not restart_failures, restart_failures[:3])
    goals.check("orphan_workers", not orphans, orphans[:5])
    goals.check("clean_exit", code == 0, "exit %r on SIGTERM" % code)
    goals.check("storm_ran", len(storm.acked) >= args.kills * 5,
                "only %d compiles acknowledged" % len(storm.acked))
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
