#!/usr/bin/python3
"""Benchmark: the memory of a pycached and of its workers over repeated prewarms of new sources.

Usage: /usr/bin/python3 tests/bench/bench_memory.py [--runs N] [--jobs N] [--settle S]
                                                     [--build DIR] [-- SERVER_ARGS...]

What it measures. One pycached (`--workers 2`, a fresh store) lives through all the runs. Each
run writes a new tree: every *.py of Debian's sympy (python3-sympy, about 1,470 files), each with
a first line naming the run, so that every source of every run is new to the server and really
compiled. Then `pycachectl warm --jobs N TREE` (default 4) uploads it. After each run, and again
after --settle seconds idle (default 3; the server gives memory back in its upkeep thread, see
docs/DESIGN.md "Memory"), it reads RssAnon (anonymous resident memory, /proc/PID/status) of the
server and of each worker (the server's children), and the workers' pids (a recycled worker has
a new one).

Prints a row per run and the growth of the server's and the workers' RssAnon from the first run
to the last: flat means the last run's figure is within --flat MB (default 16) of the first
run's. Exit status: 0 when every warm compiled its files (flat or not, as with the other
benchmarks' aims), 1 when a run failed, 2 on a setup error. Anything after `--` is passed to the
server (e.g. `-- --worker-rss 0` to compare without the worker RSS limit).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import rss_anon_kib, start_server, stats, stop, worker_pids  # noqa: E402

SOURCE = "/usr/lib/python3/dist-packages/sympy"
RUN_TIMEOUT = 900


class RunFailed(Exception):
    pass


def write_tree(target, rnd):
    """Every *.py of SOURCE under target, each with a first line of its own for this run."""
    files = 0
    for dirpath, dirnames, filenames in os.walk(SOURCE):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        out_dir = os.path.join(target, os.path.relpath(dirpath, SOURCE))
        os.makedirs(out_dir, exist_ok=True)
        for name in filenames:
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), "rb") as f:
                    data = f.read()
                with open(os.path.join(out_dir, name), "wb") as f:
                    f.write(b"# bench_memory run %d\n" % rnd + data)
                files += 1
    return files


def sample(server):
    """(server RssAnon KiB, {worker pid: RssAnon KiB})."""
    return rss_anon_kib(server.pid), {p: rss_anon_kib(p) for p in worker_pids(server.pid)}


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="prewarms (default 5)")
    parser.add_argument("--jobs", type=int, default=4, help="pycachectl warm --jobs (default 4)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds idle before the second sample of a run (default 3)")
    parser.add_argument("--flat", type=float, default=16.0,
                        help="MB of growth from the first run to the last still called flat")
    parser.add_argument("--build", default=os.path.join(root, "build"), help="build directory")
    parser.add_argument("server_args", nargs="*", help="after --: passed to pycached")
    args = parser.parse_args()
    if args.runs < 1 or args.jobs < 1:
        parser.error("--runs and --jobs must be at least 1")
    build = os.path.abspath(args.build)
    ctl = os.path.join(build, "client", "pycachectl")
    tmp = tempfile.mkdtemp(prefix="pycached-bench-memory-")
    server, rows = None, []
    try:
        server, url = start_server(build, os.path.join(tmp, "store"), os.path.join(tmp, "server"),
                                   *args.server_args)
        time.sleep(0.5)
        start = sample(server)
        for rnd in range(args.runs):
            tree = os.path.join(tmp, "tree-%d" % rnd)
            files = write_tree(tree, rnd)
            before = stats(url)["compiles"]
            t = time.perf_counter()
            proc = subprocess.run([ctl, "--server", url, "warm", "--jobs", str(args.jobs),
                                   "--json", tree], capture_output=True, text=True,
                                  timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
            wall = time.perf_counter() - t
            if proc.returncode != 0:
                raise RunFailed("warm: exit %d\n%s" % (proc.returncode, proc.stderr[-3000:]))
            out = json.loads(proc.stdout)
            if out["failures"] != 0 or out["compiled"] + out["cached"] != files:
                raise RunFailed("warm: unexpected summary %s" % {
                    k: v for k, v in out.items() if k not in ("errors", "failed")})
            compiles = stats(url)["compiles"] - before
            after = sample(server)
            time.sleep(args.settle)
            settled = sample(server)
            shutil.rmtree(tree, ignore_errors=True)
            rows.append((rnd + 1, files, compiles, wall, after, settled))
            print("run %d/%d: %d files, %.1f s" % (rnd + 1, args.runs, files, wall),
                  file=sys.stderr)
        compiler = stats(url)["compilers"][0]
    except RunFailed as exc:
        print("bench_memory: run failed: %s" % exc, file=sys.stderr)
        return 1
    except (OSError, RuntimeError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        print("bench_memory: setup failed: %r" % exc, file=sys.stderr)
        return 2
    finally:
        if server is not None:
            stop(server)
        shutil.rmtree(tmp, ignore_errors=True)

    mb = lambda kib: kib / 1024.0  # noqa: E731
    print("RssAnon of pycached --workers 2 %s over %d prewarms of new sympy trees, "
          "warm --jobs %d, %s, %d CPUs" % (" ".join(args.server_args), args.runs, args.jobs,
                                            time.strftime("%Y-%m-%d %H:%M %Z"), os.cpu_count()))
    print("at start: server %.1f MB, workers %s MB" % (
        mb(start[0]), " ".join("%.1f" % mb(v) for v in start[1].values())))
    print("%-4s %6s %8s %7s %10s %10s %-24s %s" % ("run", "files", "compiles", "warm s",
                                                  "server MB", "settled", "workers MB (settled)",
                                                  "worker pids"))
    for rnd, files, compiles, wall, after, settled in rows:
        print("%-4d %6d %8d %7.1f %10.1f %10.1f %-24s %s" % (
            rnd, files, compiles, wall, mb(after[0]), mb(settled[0]),
            " ".join("%.1f" % mb(v) for v in settled[1].values()),
            " ".join(map(str, settled[1]))))
    first, last = rows[0][5], rows[-1][5]
    server_growth = mb(last[0] - first[0])
    worker_growth = mb(max(last[1].values(), default=0) - max(first[1].values(), default=0))
    print("\ngrowth from run 1 to run %d (settled): server %+.1f MB, largest worker %+.1f MB: %s"
          % (len(rows), server_growth, worker_growth,
             "flat" if max(server_growth, worker_growth) <= args.flat else "GROWING"))
    print("workers replaced: %d recycled (--worker-recycle, --worker-rss), %d restarted"
          % (compiler.get("recycles", 0), compiler["restarts"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
