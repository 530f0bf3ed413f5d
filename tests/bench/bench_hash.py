#!/usr/bin/python3
"""bench_hash.py: the Java hash (proto/java_hash.c) against the scalar loop it replaced, XXH3 and a
read-only pass, and the two hashes of a source (Java hash and SHA-256) in two passes or in one,
on buffers of 4 KiB, 64 KiB and 16 MiB (docs/BENCHMARKS.md, "Hashing and group commits (issue
12)"). Not a test.

Each round runs build/proto/bench_hash_helper once per size, which times every method for
--seconds in an order rotated from round to round; the table gives, per size and method, the
median, min and max GB/s over the rounds and the ratio of the medians to the anchor, the scalar
loop of before (measured in the same rounds). Run from the top of the checkout after
`ninja -C build`:

    /usr/bin/python3 tests/bench/bench_hash.py        # --rounds N (default 7), --seconds S (0.2)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SIZES = [4096, 65536, 16 << 20]
METHODS = ["scalar", "sse2", "avx2", "java", "xxh3", "read", "sha256", "both", "both-blocks"]
LABELS = {
    "scalar": "Java hash, scalar loop (before; anchor)",
    "sse2": "Java hash, SSE2",
    "avx2": "Java hash, AVX2",
    "java": "pcc_java_hash (the one it picks)",
    "xxh3": "XXH3-64 (pcc_checksum)",
    "read": "read-only pass (AVX2 loads)",
    "sha256": "SHA-256 (pcc_digest_compute)",
    "both": "Java hash + SHA-256, two passes",
    "both-blocks": "Java hash + SHA-256, one pass of 64 KiB blocks",
}
AIM_GBPS = 8.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default="build")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.2)
    args = parser.parse_args()
    helper = os.path.join(args.build, "proto", "bench_hash_helper")
    usable = []
    for method in METHODS:  # an implementation this CPU does not run is left out
        probe = subprocess.run([helper, "4096", "0.001", method], capture_output=True, text=True)
        if probe.returncode == 0:
            usable.append(method)
    runs = {(size, m): [] for size in SIZES for m in usable}
    for r in range(args.rounds):
        for size in SIZES:
            order = usable[r % len(usable):] + usable[:r % len(usable)]
            out = subprocess.run([helper, str(size), str(args.seconds)] + order,
                                 capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                result = json.loads(line)
                runs[size, result["method"]].append(result["gbps"])
    print("hashing one buffer of random bytes, %d rounds of %.2f s a method (order rotated), "
          "%s, %d CPUs" % (args.rounds, args.seconds, time.strftime("%Y-%m-%d %H:%M UTC",
                                                                   time.gmtime()),
                           os.cpu_count()))
    aims = []
    for size in SIZES:
        anchor = statistics.median(runs[size, "scalar"])
        label = "%d KiB" % (size >> 10) if size < (1 << 20) else "%d MiB" % (size >> 20)
        print("\n%-8s %-48s %8s %8s %8s %9s" % (label, "GB/s", "median", "min", "max",
                                                "/scalar"))
        for m in usable:
            values = runs[size, m]
            print("%-8s %-48s %8.2f %8.2f %8.2f %9.2f" % (
                "", LABELS[m], statistics.median(values), min(values), max(values),
                statistics.median(values) / anchor))
        java = statistics.median(runs[size, "java"])
        aims.append("pcc_java_hash at %-7s %6.2f GB/s   aim >= %.0f: %s" % (
            label, java, AIM_GBPS, "met" if java >= AIM_GBPS else "MISSED"))
        if "both" in usable:
            aims.append("one pass / two passes at %-7s %.2f" % (
                label, statistics.median(runs[size, "both-blocks"]) /
                statistics.median(runs[size, "both"])))
    print()
    print("\n".join(aims))
    return 0


if __name__ == "__main__":
    sys.exit(main())
