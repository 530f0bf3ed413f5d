#!/usr/bin/python3
"""bench_commits.py: concurrent synced puts into the store, with group commits (store/store.c,
"puts") and, when --anchor names a build of the code before, without, in the same run
(docs/BENCHMARKS.md, "Hashing and group commits (issue 12)"). Not a test.

Each round runs `bench_store_helper puts` of both builds (the order alternating from round to
round) for every thread count: a fresh store in a temporary directory on the same file system,
synced as the server's, THREADS threads putting --puts entries in all, each its own path and blob
of --payload bytes. It prints, per build and thread count, the puts a second and the bytes
written a put (/proc/self/io write_bytes) as median, min and max over the rounds, and the ratios
of the medians against the anchor. Run from the top of the checkout after `ninja -C build`:

    /usr/bin/python3 tests/bench/bench_commits.py --anchor OLD/build   # --rounds 5 --puts 2000
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def run_puts(build, threads, puts, payload, base):
    store = tempfile.mkdtemp(prefix="store-", dir=base)
    try:
        out = subprocess.run([os.path.join(build, "store", "bench_store_helper"), "puts", store,
                              str(threads), str(puts // threads), str(payload)],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)
    finally:
        shutil.rmtree(store, ignore_errors=True)


def fmt(values, spec):
    return " ".join(spec % v for v in (statistics.median(values), min(values), max(values)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default="build")
    parser.add_argument("--anchor", default=None, help="the build directory of the code before")
    parser.add_argument("--threads", default="1,4,16")
    parser.add_argument("--puts", type=int, default=2000)
    parser.add_argument("--payload", type=int, default=370)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the stores go (default: $TMPDIR)")
    args = parser.parse_args()
    builds = [("group commits", args.build)] + ([("before", args.anchor)] if args.anchor else [])
    threads = [int(t) for t in args.threads.split(",")]
    base = tempfile.mkdtemp(prefix="pcc-bench-commits-", dir=args.dir)
    runs = {(name, t): [] for name, _ in builds for t in threads}
    try:
        for r in range(args.rounds):
            for t in threads:
                order = builds if r % 2 == 0 else builds[::-1]
                for name, build in order:
                    runs[name, t].append(run_puts(build, t, args.puts, args.payload, base))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("synced puts of %d entries (%d-byte payloads) by 1 to %d threads, %d rounds (builds "
          "alternating), %s, %d CPUs" % (args.puts, args.payload, max(threads), args.rounds,
                                         time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                         os.cpu_count()))
    print("%-14s %7s %28s %30s" % ("build", "threads", "puts/s median min max",
                                   "bytes/put median min max"))
    for name, _ in builds:
        for t in threads:
            rates = [x["per_second"] for x in runs[name, t]]
            sizes = [x["bytes_per_put"] for x in runs[name, t]]
            print("%-14s %7d %28s %30s" % (name, t, fmt(rates, "%8.0f"), fmt(sizes, "%9.0f")))
    if args.anchor:
        print()
        for t in threads:
            new, old = runs["group commits", t], runs["before", t]
            print("%2d threads: puts/s %.2f x, bytes/put %.2f x (group commits / before)" % (
                t, statistics.median(x["per_second"] for x in new) /
                statistics.median(x["per_second"] for x in old),
                statistics.median(x["bytes_per_put"] for x in new) /
                statistics.median(x["bytes_per_put"] for x in old)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
