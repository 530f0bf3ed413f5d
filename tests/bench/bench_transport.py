#!/usr/bin/python3
"""Benchmark: one lookup of the hook's per-module path over a unix socket against TCP loopback.

Usage: /usr/bin/python3 tests/bench/bench_transport.py [--build DIR] [--tree DIR] [--passes N]

One pycached on `--listen unix:TMP/pycached.sock,127.0.0.1` (issue 14: the socket and a TCP
address from one server, so both serve the same store and the same process). Every .py of the
tree (default Debian's sympy) is compiled into it once, then N passes (default 15) each fetch
every module through the hook's own client (the `_native` extension of build/client/hook:
libpycached, one kept-alive connection, hash validation), alternating the two URLs pass by pass
(tcp first on even passes, unix first on odd ones), each pass after one untimed fetch that opens
the connection. A module that is not a hit is an error (exit 1).

Prints the header (date, CPUs, load average before and after), per URL the min/median/max
milliseconds of a pass and the median per module, and the ratio unix / tcp of the medians (tcp
loopback, measured in the same run, is the anchor). The server is stopped by pid.
"""
import argparse
import glob
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402

MAX_SOURCE = 16 << 20


def configure(native, url, readonly):
    native.configure(url, importlib.util.MAGIC_NUMBER, 2000, 30000, readonly, True, 30.0,
                     MAX_SOURCE)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build")
    parser.add_argument("--tree", default="/usr/lib/python3/dist-packages/sympy")
    parser.add_argument("--passes", type=int, default=15)
    args = parser.parse_args()
    if args.passes < 2:
        parser.error("--passes must be at least 2 (one each URL)")
    build = os.path.abspath(args.build)
    sys.path.insert(0, os.path.join(build, "client", "hook"))
    from pycached import _native  # the build's extension, as the hook loads it

    files = sorted(glob.glob(os.path.join(args.tree, "**", "*.py"), recursive=True))
    load_before = os.getloadavg()[0]
    tmp = tempfile.mkdtemp(prefix="pycached-bench-transport-")
    sock = os.path.join(tmp, "pycached.sock")
    proc = None
    try:
        proc, first = benchlib.start_server(build, os.path.join(tmp, "store"),
                                            os.path.join(tmp, "server"),
                                            "--listen", "unix:%s,127.0.0.1" % sock)
        with open(os.path.join(tmp, "server.out")) as out:
            line = out.readline()
        tcp = line.split(" and ")[1].split()[0]  # "listening on unix:PATH and http://..."
        urls = {"tcp": tcp, "unix": first}
        configure(_native, tcp, False)  # fill: every module compiled once
        hits = [f for f in files if _native.fetch(f, 0)[1] is not None]
        times = {name: [] for name in urls}
        for rnd in range(args.passes):
            for name in (("tcp", "unix") if rnd % 2 == 0 else ("unix", "tcp")):
                configure(_native, urls[name], True)
                _native.fetch(hits[0], 0)  # opens the connection
                start = time.perf_counter()
                for f in hits:
                    outcome = _native.fetch(f, 0)[0]
                    if outcome != "hit":
                        print("error: %s over %s: %s" % (f, name, outcome))
                        return 1
                times[name].append(time.perf_counter() - start)
    finally:
        if proc is not None:
            benchlib.stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d modules of %s fetched a pass over each URL of one server (%s), %d passes "
          "over each, alternating, %s UTC, %d CPUs, load average %.2f before, %.2f after"
          % (len(hits), args.tree, first, args.passes,
             time.strftime("%Y-%m-%d %H:%M", time.gmtime()), os.cpu_count(), load_before,
             os.getloadavg()[0]))
    print("%-6s %8s %9s %8s %14s" % ("url", "min ms", "median ms", "max ms", "us a module"))
    for name, ts in times.items():
        print("%-6s %8.1f %9.1f %8.1f %14.0f" % (name, min(ts) * 1e3, statistics.median(ts) * 1e3,
                                                max(ts) * 1e3,
                                                statistics.median(ts) / len(hits) * 1e6))
    print("ratio unix / tcp (medians): %.2f"
          % (statistics.median(times["unix"]) / statistics.median(times["tcp"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
