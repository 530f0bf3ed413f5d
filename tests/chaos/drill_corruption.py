"""drill_corruption.py: the corruption drill of issue 11 (docs/RELIABILITY.md): random bytes
flipped in a stopped server's data.mdb, then the server started on it. It must start or refuse
with a clear message, never serve a wrong pyc, never crash; damaged entries are counted.

    drill_corruption.py [TRIALS] [--seed N] [--sources N] [--flips N]

One clean store is filled through a real server (compiles of --sources distinct real sources),
and every source looked up in timestamp mode (the pycs it serves are the reference). Then for
each trial: a copy of the store, --flips random bytes of data.mdb changed (a seeded RNG; the
seed is printed, so a failing trial can be run again), `pycached --verify-store` on it, and
the server started on a copy of it twice, with the default policy (--on-damaged-store=refuse)
and with quarantine; each time every source is looked up. Checked:
  - a refusal at start exits 3 and names the damage, --verify-store and the remedy;
  - a server that starts stays up through every lookup, answers /healthz 200 after, and exits 0
    on SIGTERM;
  - every 200 is byte-identical to what the clean store served (header and marshal bytes);
  - quarantine moves data.mdb aside (data.mdb.damaged-*) and starts on an empty store;
  - --verify-store says "sound" (0) of the clean store and "damaged" (3) of every copy on which
    the server refused, quarantined, or met damage (corruptions) while serving;
and a figures line sums the trials. Runs on the server built by meson (PCC_PYCACHED) with the
harness of tests/e2e/test_e2e.py. Every loop is bounded; every process is stopped by pid.
"""
import argparse
import glob
import http.client
import marshal
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from test_e2e import MAGIC, PYCACHED, Server, make_tree  # noqa: E402  (the shared harness)

VERIFY_SOUND, VERIFY_DAMAGED = 0, 3
REFUSED = 3  # pycached's exit status for a damaged store it will not start on


def make_sources(n):
    """n distinct modules, some of several pages (blobs of several chunks)."""
    files = {}
    for i in range(n):
        parts = ['"""Module %d of the corruption drill."""' % i, "import math", "",
                 "VALUE_%d = %d" % (i, i * 7919)]
        for f in range(1 + (i % 7) * (3 if i % 5 == 0 else 1)):
            parts += ["", "def f%d_%d(x, y=%d):" % (i, f, f),
                      "    total = 0",
                      "    for k in range(x):",
                      "        total += (k * %d + y) %% %d" % (i + f + 1, 97 + f),
                      "    return math.sqrt(total) + %r" % (i / (f + 1.0)),
                      "", "class C%d_%d:" % (i, f),
                      "    NAME = %r" % ("c-%d-%d-" % (i, f) * (1 + f)),
                      "    def method(self):",
                      "        return [f%d_%d(n) for n in range(%d)]" % (i, f, f + 2)]
        files["pkg%d/mod%d.py" % (i % 10, i)] = "\n".join(parts) + "\n"
    return files


class Client:
    """Timestamp-mode lookups (no hash) on one kept-alive connection."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def get(self, path):
        st = os.stat(path)
        params = {"magic": MAGIC, "opt": 0, "path": path, "mtime": int(st.st_mtime),
                  "size": st.st_size}
        for _ in range(2):  # once more on a fresh connection if the kept one was closed
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self.conn.request("GET", "/v1/code?" + urllib.parse.urlencode(params),
                                  headers={"Accept": "application/x-python-pyc"})
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (ConnectionError, http.client.HTTPException, OSError):
                self.close()
        return None, b""

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def healthz(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def verify(store):
    out = subprocess.run([PYCACHED, "--verify-store", "--store", store], capture_output=True,
                         text=True, timeout=300)
    return out.returncode, out.stdout


def start(workdir, *args):
    """A Server, or (None, exit status, log) when it did not start."""
    server = Server.__new__(Server)
    try:
        server.__init__(workdir, *args)
        return server, None, ""
    except RuntimeError:
        with open(os.path.join(workdir, "server.log"), errors="replace") as f:
            return None, server.proc.returncode, f.read()


def fill(tmp, paths):
    """Compiles every source through a server and returns {path: pyc} as it then serves them."""
    server = Server(tmp, "--workers", "2")
    try:
        for path in paths:
            st = os.stat(path)
            params = {"magic": MAGIC, "opt": 0, "path": path, "mtime": int(st.st_mtime)}
            status, _, _ = server.request("POST", "/v1/compile?" + urllib.parse.urlencode(params),
                                          open(path, "rb").read())
            assert status == 200, (path, status)
        client, clean = Client(server.port), {}
        for path in paths:
            status, pyc = client.get(path)
            assert status == 200, (path, status)
            clean[path] = pyc
        client.close()
    finally:
        code = server.stop()
        if code != 0:
            with open(os.path.join(tmp, "server.log"), errors="replace") as f:
                tail = f.read()[-4000:]
            raise AssertionError("the filling server exited %r on SIGTERM; its log ends:\n%s"
                                 % (code, tail))
    same = sum(marshal.loads(pyc[16:]) == compile(open(p, "rb").read(), p, "exec",
                                                   dont_inherit=True)
               for p, pyc in clean.items())
    print("filled: %d sources, %d code objects equal to a local compile" % (len(clean), same))
    return clean


def flip(data_mdb, rng, flips):
    size = os.path.getsize(data_mdb)
    with open(data_mdb, "r+b") as f:
        for _ in range(flips):
            at = rng.randrange(size)
            f.seek(at)
            byte = f.read(1)[0]
            f.seek(at)
            f.write(bytes([byte ^ rng.randrange(1, 256)]))


def run_server(workdir, store, paths, clean, policy, figures, failures, label):
    """Starts a server on store with policy, looks every source up, checks what it serves.
    Returns whether it met damage (refused, quarantined or counted corruptions)."""
    os.makedirs(workdir)
    shutil.copytree(store, os.path.join(workdir, "store"))
    server, code, log = start(workdir, "--workers", "1", "--on-damaged-store", policy)
    if server is None:
        figures["refused_" + policy] += 1
        clear = "damaged" in log and "--verify-store" in log and (
            "quarantine" in log or "backup" in log)
        if code != REFUSED or not clear:
            failures.append("%s: did not start (exit %r) without a clear message: %s"
                            % (label, code, log[-600:]))
        return True
    met = False
    try:
        quarantined = glob.glob(os.path.join(server.store, "data.mdb.damaged-*"))
        if quarantined:
            figures["quarantined"] += 1
            met = True
        client = Client(server.port)
        for path in paths:
            status, pyc = client.get(path)
            if status == 200:
                figures["served"] += 1
                if pyc != clean[path]:
                    figures["wrong"] += 1
                    failures.append("%s: a wrong pyc for %s" % (label, path))
            elif status == 404:
                figures["misses"] += 1
            else:
                figures["errors"] += 1
                if server.proc.poll() is not None:
                    break
        client.close()
        if server.proc.poll() is not None:
            figures["crashes"] += 1
            failures.append("%s: the server died (status %r)" % (label, server.proc.returncode))
            return True
        if healthz(server.port) != 200:
            failures.append("%s: /healthz did not answer 200" % label)
        stats = server.stats()
        corruptions = stats["corruptions"] + stats["store"].get("corruptions", 0)
        if stats["store"].get("damaged"):
            figures["damaged_at_runtime"] += 1
        if corruptions > 0:
            figures["servers_counting"] += 1
            figures["corruptions"] += stats["corruptions"]
            met = True
    finally:
        code = server.stop()
    if code != 0:
        figures["crashes"] += 1
        failures.append("%s: exit status %r on SIGTERM" % (label, code))
    return met


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trials", nargs="?", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--sources", type=int, default=300)
    parser.add_argument("--flips", type=int, default=64)
    parser.add_argument("--keep", action="store_true", help="leave the stores (printed)")
    parser.add_argument("--only", type=int, default=None, help="run this trial only (its seed "
                        "is the same as in a full run)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    print("drill_corruption: %d trials, %d flips each, %d sources, seed %d (rerun with --seed %d)"
          % (args.trials, args.flips, args.sources, seed, seed), flush=True)
    tmp = tempfile.mkdtemp(prefix="pcc-drill-corruption-")
    figures = dict.fromkeys(["verify_damaged", "refused_refuse", "refused_quarantine",
                             "quarantined", "served", "wrong", "misses", "errors", "crashes",
                             "servers_counting", "corruptions", "damaged_at_runtime"], 0)
    failures = []
    started = time.monotonic()
    try:
        root = make_tree(os.path.join(tmp, "src"), make_sources(args.sources))
        paths = sorted(glob.glob(os.path.join(root, "*", "*.py")))
        clean = fill(os.path.join(tmp), paths)
        store = os.path.join(tmp, "store")
        code, report = verify(store)
        if code != VERIFY_SOUND:
            failures.append("--verify-store of the clean store: %d\n%s" % (code, report))
        for trial in range(args.trials):
            if args.only is not None and trial != args.only:
                continue
            rng = random.Random(seed * 1000003 + trial)
            trial_dir = os.path.join(tmp, "trial%d" % trial)
            damaged = os.path.join(trial_dir, "damaged")
            os.makedirs(damaged)
            shutil.copy(os.path.join(store, "data.mdb"), damaged)
            flip(os.path.join(damaged, "data.mdb"), rng, args.flips)
            verdict, report = verify(damaged)
            if verdict not in (VERIFY_SOUND, VERIFY_DAMAGED):
                failures.append("trial %d: --verify-store exited %d\n%s" % (trial, verdict,
                                                                           report[-600:]))
            figures["verify_damaged"] += verdict == VERIFY_DAMAGED
            met = False
            for policy in ("refuse", "quarantine"):
                met |= run_server(os.path.join(trial_dir, policy), damaged, paths, clean, policy,
                                  figures, failures, "trial %d (%s)" % (trial, policy))
            if met and verdict != VERIFY_DAMAGED:
                failures.append("trial %d: the server met damage that --verify-store did not "
                                "report:\n%s" % (trial, report[-600:]))
            print("trial %d: verify %s, %s" % (trial, "damaged" if verdict else "sound",
                                               "damage met" if met else "served clean"),
                  flush=True)
            if not args.keep:
                shutil.rmtree(trial_dir, ignore_errors=True)
    finally:
        if args.keep:
            print("kept: " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("figures: trials=%d flips=%d sources=%d seed=%d verify_damaged=%d refused=%d "
          "quarantined=%d quarantine_refused=%d lookups_200=%d wrong_pycs=%d misses=%d "
          "other_answers=%d crashes=%d servers_counting_damage=%d corruptions_counted=%d "
          "damaged_at_runtime=%d seconds=%.0f"
          % (args.trials, args.flips, args.sources, seed, figures["verify_damaged"],
             figures["refused_refuse"], figures["quarantined"], figures["refused_quarantine"],
             figures["served"], figures["wrong"], figures["misses"], figures["errors"],
             figures["crashes"], figures["servers_counting"], figures["corruptions"],
             figures["damaged_at_runtime"], time.monotonic() - started))
    for failure in failures:
        print("FAIL: " + failure)
    # the closing line of the Check suites, which deploy/test.sh counts
    print("%d%%: Checks: %d, Failures: %d, Errors: 0" % (
        100 if not failures else 0, args.trials, min(len(failures), args.trials)))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
