#!/usr/bin/env python3
"""bench_store.py: the store at 10 k and 1 M entries (docs/BENCHMARKS.md, "The store at 10 k and
1 M entries"). A benchmark, not a test: it prints figures and ratios and exits 0 whether the aims
are met or not (1 when a run fails).

For each size it fills a fresh store through build/store/bench_store_helper (the C store API:
1 M entries through the server would be 1 M CPython compiles), with payloads the sizes of the
reference interpreter's own stdlib pycs (cycled). Then two kinds of rounds, --runs of each, on 1
and on 2 threads:

- store: --lookups random lookups through the store API (the store's part of GET /v1/code: the
  path entry, then the blob copied out and its use recorded in memory), after one warm-up read of
  every entry: what grows with the store, alone. --uses server also writes the uses as the server
  does, from a cold start (every use written: the rule that a recent use is not moved again needs
  a minute or two of uptime, which a round is not);
- http: --http-lookups random GET /v1/code (raw pyc, hash validation, kept-alive connections) to
  build/server/pycached started on that store, after it served every entry once (as a server
  that has run for a while has its map's pages mapped): what a client sees.

Prints medians, minimums and maximums of the throughput and of the 99th percentile, the ratios of
1 M to 10 k, and the file's size against the payload bytes.

Aims: lookups at 1 M within 20 % of 10 k (throughput and p99); the file at most 1.3 x the
payload.

  /usr/bin/python3 tests/bench/bench_store.py [--build DIR] [--sizes 10000,1000000] [--runs N]
      [--lookups N] [--http-lookups N] [--scale K] [--uses server|off] [--dir DIR]

--dir holds the stores (default: a temporary directory, removed at the end; with --dir they are
kept); 1 M entries of stdlib-sized payloads take about 20 GB of disk and as much page cache. The
rounds of the sizes are interleaved, so that each size sees the same machine. --scale K
divides every payload size by K (for a machine whose memory cannot hold 1 M full-sized entries).
--uses server writes the last uses during the store rounds (the default, off, leaves that to
the http rounds, where a server that has run for minutes writes them).
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def stdlib_sizes():
    """The marshal sizes (pyc less its 16-byte header) of the reference interpreter's stdlib."""
    sizes = [os.path.getsize(p) - 16
             for p in glob.glob("/usr/lib/python3.11/**/__pycache__/*.cpython-311.pyc",
                                recursive=True)]
    if not sizes:
        raise SystemExit("no stdlib pycs under /usr/lib/python3.11 to take sizes from")
    return sorted(sizes)


def helper(build, *args):
    """Runs bench_store_helper; returns its JSON object (or, for several lines, their list)."""
    run = subprocess.run([os.path.join(build, "store", "bench_store_helper"), *map(str, args)],
                         capture_output=True, text=True, timeout=3600)
    if run.returncode != 0:
        raise SystemExit("bench_store_helper %s failed: %s" % (args[0], run.stderr))
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    return lines[0] if len(lines) == 1 else lines


def summary(values):
    return statistics.median(values), min(values), max(values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default="build")
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lookups", type=int, default=300000)
    parser.add_argument("--http-lookups", type=int, default=40000)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--uses", choices=("server", "off"), default="off")
    args = parser.parse_args()
    sizes = [max(1, s // args.scale) for s in stdlib_sizes()]
    base = args.dir or tempfile.mkdtemp(prefix="pcc-bench-store-")
    os.makedirs(base, exist_ok=True)
    sizes_file = os.path.join(base, "sizes.txt")
    with open(sizes_file, "w") as f:
        f.write("\n".join(map(str, sizes)) + "\n")
    mean = sum(sizes) / len(sizes)
    print("payloads: the sizes of %d stdlib pycs%s, cycled: mean %.0f B, median %d B, largest %d "
          "B; uses: %s" % (len(sizes), " / %d" % args.scale if args.scale > 1 else "", mean,
                           sizes[len(sizes) // 2], sizes[-1], args.uses))
    results, servers = {}, {}
    try:
        for n in [int(x) for x in args.sizes.split(",")]:
            store = os.path.join(base, "store-%d" % n)
            shutil.rmtree(store, ignore_errors=True)
            os.makedirs(store)
            map_size = int(n * (mean * 1.3 + 2048)) + (256 << 20)
            filled = helper(args.build, "fill", store, n, sizes_file, map_size)
            print("%d entries: filled in %.1f s (%.0f puts/s, no fsync per commit); file %.1f MiB "
                  "for %.1f MiB of payload: %.3f x (used %.1f MiB, free %.1f MiB)"
                  % (n, filled["seconds"], n / filled["seconds"], filled["file"] / 2**20,
                     filled["payload"] / 2**20, filled["file"] / filled["payload"],
                     filled["used"] / 2**20, filled["free"] / 2**20))
            servers[n] = benchlib.start_server(
                args.build, store, os.path.join(base, "server-%d" % n), "--workers", "1",
                "--max-size", str(map_size), "--map-size", str(2 * map_size))
            port = int(servers[n][1].rsplit(":", 1)[1])
            warm = helper(args.build, "http", port, n, 2, 0, 0, sizes_file)  # every entry once
            print("  the server read every entry once: %.1f s" % warm["seconds"])
            results[n] = (filled, {("store", 1): [], ("store", 2): [], ("http", 1): [],
                                   ("http", 2): []}, store, port)
        for r in range(args.runs):  # interleaved: every size sees the same machine
            for n, (_, runs, store, port) in results.items():
                one, two = helper(args.build, "lookup", store, n, "1,2", args.lookups, 1000 + r,
                                  args.uses)
                runs["store", 1].append(one)
                runs["store", 2].append(two)
                for threads in (1, 2):
                    runs["http", threads].append(helper(args.build, "http", port, n, threads,
                                                        args.http_lookups, 2000 + r,
                                                        sizes_file))
        for n, (_, runs, _, _) in results.items():
            served = benchlib.stats(servers[n][1])["store"]
            if served["entries"] != n or served["evictions"] != 0:
                raise SystemExit("the server's store is not the one filled: %r" % served)
            print("\n%d entries: %d rounds, interleaved with the other sizes; each store round "
                  "after a warm-up read of every entry (%.1f s)"
                  % (n, args.runs, statistics.median(x["warm_seconds"]
                                                     for x in runs["store", 1])))
            print("%-6s %-8s %12s %12s %12s %10s %10s %10s %10s" % (
                "path", "threads", "lookups/s", "min", "max", "p50 us", "p99 us", "min", "max"))
            for kind, threads in runs:
                rate = summary([x["per_second"] for x in runs[kind, threads]])
                p99 = summary([x["p99_us"] for x in runs[kind, threads]])
                p50 = statistics.median(x["p50_us"] for x in runs[kind, threads])
                print("%-6s %-8d %12.0f %12.0f %12.0f %10.2f %10.2f %10.2f %10.2f" % (
                    kind, threads, rate[0], rate[1], rate[2], p50, p99[0], p99[1], p99[2]))
    finally:
        for proc, _ in servers.values():
            benchlib.stop(proc)
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    ns = sorted(results)
    if len(ns) >= 2:
        small, big = ns[0], ns[-1]
        print("\nratio %d / %d (medians)        aim" % (big, small))
        for kind, threads in results[small][1]:
            rate = [statistics.median(x["per_second"] for x in results[n][1][kind, threads])
                    for n in (small, big)]
            p99 = [statistics.median(x["p99_us"] for x in results[n][1][kind, threads])
                   for n in (small, big)]
            label = "%s, %d thread%s" % (kind, threads, "s" if threads > 1 else "")
            print("lookups/s, %-18s %5.2f   >= 0.80: %s" % (
                label, rate[1] / rate[0], "met" if rate[1] / rate[0] >= 0.8 else "MISSED"))
            print("p99,       %-18s %5.2f   <= 1.20: %s" % (
                label, p99[1] / p99[0], "met" if p99[1] / p99[0] <= 1.2 else "MISSED"))
        for n in ns:
            ratio = results[n][0]["file"] / results[n][0]["payload"]
            print("file / payload at %-11d %5.3f   <= 1.30: %s" % (
                n, ratio, "met" if ratio <= 1.3 else "MISSED"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
