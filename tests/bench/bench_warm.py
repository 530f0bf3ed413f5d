#!/usr/bin/python3
"""Benchmark: prewarming an empty pycached with `pycachectl warm` against `python3 -m compileall`.

Usage: /usr/bin/python3 tests/bench/bench_warm.py [--runs N] [--jobs N] [--build DIR]

What it measures. The tree is a copy of Debian's sympy and mpmath (python3-sympy) without any
__pycache__. Each run times, interleaved (the order alternates from run to run):
  warm        `pycachectl --server URL warm --jobs N --json TREE` into a server with an EMPTY
              store (a fresh store directory and a fresh `pycached --workers 2` per run; starting
              the server is not timed), so every source is really compiled by the server
  compileall  `/usr/bin/python3 -m compileall -q -j 2 COPY` of a fresh copy of the tree (the copy
              is not timed), so every source is really compiled and written as a pyc
Both are wall times of the whole command (walk, reading, compiling, writing or storing). Every
warm run must report each file compiled, no compile error and no failure, and the server's
/v1/stats `compiles` must equal the number of distinct sources (files with the same bytes are
compiled once: that is what a content-addressed cache does), or the benchmark exits 1.

Prints the medians of the runs (default 3), the ratio warm/compileall against the aim <= 1.0,
and the server-side compile counts. Exit status: 0 whether or not the aim is met, 1 when a run
failed, 2 on a setup error.
"""
import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import start_server, stats, stop, write_bytes  # noqa: E402  (shared with the other benchmarks)

PYTHON = "/usr/bin/python3"
DIST = "/usr/lib/python3/dist-packages"
PACKAGES = ("sympy", "mpmath")
RUN_TIMEOUT = 600


class RunFailed(Exception):
    pass


def copy_tree(target):
    os.mkdir(target)
    for package in PACKAGES:
        shutil.copytree(os.path.join(DIST, package), os.path.join(target, package),
                        ignore=shutil.ignore_patterns("__pycache__"))


def sources(tree):
    """(files, distinct contents, bytes) of the *.py files, walked as compileall does."""
    files, digests, size = 0, set(), 0
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"
                       and not os.path.islink(os.path.join(dirpath, d))]
        for name in filenames:
            if name.endswith(".py"):
                data = open(os.path.join(dirpath, name), "rb").read()
                files, size = files + 1, size + len(data)
                digests.add(hashlib.sha256(data).digest())
    return files, len(digests), size


def run_warm(ctl, build, tmp, tree, jobs, rnd, expect):
    """One warm into an empty store; returns (seconds, warm's JSON summary, server compiles,
    bytes the server wrote)."""
    store = os.path.join(tmp, "store-%d" % rnd)
    server, url = start_server(build, store, os.path.join(tmp, "server-%d" % rnd))
    try:
        if stats(url)["store"]["entries"] != 0:
            raise RunFailed("warm: the store is not empty")
        t = time.perf_counter()
        proc = subprocess.run([ctl, "--server", url, "warm", "--jobs", str(jobs), "--json", tree],
                              capture_output=True, text=True, timeout=RUN_TIMEOUT,
                              stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RunFailed("warm: exit %d\n%s" % (proc.returncode, proc.stderr[-3000:]))
        out = json.loads(proc.stdout)
        compiles = stats(url)["compiles"]
        written = write_bytes(server.pid)
    finally:
        stop(server)
        shutil.rmtree(store, ignore_errors=True)
    files, distinct = expect
    if (out["files"], out["compiled"] + out["cached"], out["compile_errors"],
            out["failures"]) != (files, files, 0, 0):
        raise RunFailed("warm: unexpected summary %s" % {k: v for k, v in out.items()
                                                          if k not in ("errors", "failed")})
    if compiles != distinct:
        raise RunFailed("warm: the server ran %d compiles for %d distinct sources"
                        % (compiles, distinct))
    return wall, out, compiles, written


def run_compileall(tmp, source, rnd, files):
    """One compileall of a fresh copy; returns seconds."""
    copy = os.path.join(tmp, "copy-%d" % rnd)
    shutil.copytree(source, copy)
    try:
        t = time.perf_counter()
        proc = subprocess.run([PYTHON, "-m", "compileall", "-q", "-j", "2", copy],
                              capture_output=True, text=True, timeout=RUN_TIMEOUT)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RunFailed("compileall: exit %d\n%s" % (proc.returncode, proc.stdout[-3000:]))
        pycs = sum(1 for _, _, names in os.walk(copy) for n in names if n.endswith(".pyc"))
        if pycs != files:
            raise RunFailed("compileall wrote %d pycs for %d sources" % (pycs, files))
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return wall


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="measured runs of each (default 3)")
    parser.add_argument("--jobs", type=int, default=4,
                        help="pycachectl warm --jobs (default 4: warm's own default against a "
                             "server with 2 workers)")
    parser.add_argument("--build", default=os.path.join(root, "build"), help="build directory")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    build = os.path.abspath(args.build)
    ctl = os.path.join(build, "client", "pycachectl")
    tmp = tempfile.mkdtemp(prefix="pycached-bench-warm-")
    results = {"warm": [], "compileall": []}
    try:
        source = os.path.join(tmp, "tree")
        copy_tree(source)
        files, distinct, size = sources(source)
        compiles, written = [], []
        for rnd in range(args.runs):
            order = ("warm", "compileall") if rnd % 2 == 0 else ("compileall", "warm")
            for what in order:
                if what == "warm":
                    wall, out, n, w = run_warm(ctl, build, tmp, source, args.jobs, rnd,
                                               (files, distinct))
                    compiles.append(n)
                    written.append(w)
                else:
                    wall = run_compileall(tmp, source, rnd, files)
                results[what].append(wall)
            print("run %d/%d: warm %.2f s, compileall %.2f s" % (
                rnd + 1, args.runs, results["warm"][-1], results["compileall"][-1]),
                file=sys.stderr)
    except RunFailed as exc:
        print("bench_warm: run failed: %s" % exc, file=sys.stderr)
        return 1
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        print("bench_warm: setup failed: %s" % exc, file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in results.items()}
    print("prewarm sympy + mpmath into an empty server, %d runs each (interleaved), %s, %d CPUs"
          % (args.runs, time.strftime("%Y-%m-%d %H:%M %Z"), os.cpu_count()))
    print("tree: %d files, %d distinct sources, %.1f MB" % (files, distinct, size / 1e6))
    print("%-58s %8s %8s %8s" % ("command", "median", "min", "max"))
    for what, label in (("warm", "pycachectl warm --jobs %d (server --workers 2)" % args.jobs),
                        ("compileall", "python3 -m compileall -q -j 2")):
        print("%-58s %8.2f %8.2f %8.2f" % (label, med[what], min(results[what]),
                                           max(results[what])))
    ratio = med["warm"] / med["compileall"]
    print("\nwarm/compileall %.2f   aim <= 1.00: %s" % (ratio, "met" if ratio <= 1.0 else "MISSED"))
    print("server compiles per warm run: %s (= distinct sources: each compiled once)"
          % ", ".join(map(str, compiles)))
    print("bytes the server wrote per warm run (/proc/PID/io write_bytes): median %.1f MB, "
          "min %.1f, max %.1f" % (statistics.median(written) / 1e6, min(written) / 1e6,
                                  max(written) / 1e6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
