#!/usr/bin/python3
"""Benchmark: what --access-log costs a request, text and JSON, against no access log.

Usage: /usr/bin/python3 tests/bench/bench_access_log.py [--build DIR] [--rounds N]
                                                        [--duration S] [--connections C]

Three servers of the build (--workers 1, each its own store): without an access log (the
anchor, measured in the same run), with `--access-log FILE` (text lines) and with `--access-log
FILE --log-format json`. Each round runs wrk (-t 2, C connections, S seconds) on GET /healthz
against each server, in a rotating order (round 0 is a discarded warm-up). After the rounds the
lines of each file are counted: fewer lines than the requests wrk counted is an error (exit 1).

Prints the header (date, CPUs, load average before and after), per condition the min/median/max
requests/s and the ratio of its median to the anchor's, and the cost of a line from the medians
(1/rps - 1/rps of the anchor, in microseconds of the server's throughput). Every server is
stopped by pid.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402

CONDITIONS = (("none", "no access log", ()),
              ("text", "--access-log, text", ("--access-log", "{tmp}/text.log")),
              ("json", "--access-log, --log-format json",
               ("--access-log", "{tmp}/json.log", "--log-format", "json")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--duration", type=int, default=4, help="seconds of a wrk run (4)")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c (16)")
    args = parser.parse_args()
    build = os.path.abspath(args.build)
    load_before = os.getloadavg()[0]
    tmp = tempfile.mkdtemp(prefix="pycached-bench-access-")
    servers = {}
    rps = {name: [] for name, _, _ in CONDITIONS}
    requests = {name: 0 for name, _, _ in CONDITIONS}
    status = 0
    try:
        for name, _, extra in CONDITIONS:
            servers[name] = benchlib.start_server(
                build, os.path.join(tmp, "store-" + name), os.path.join(tmp, "server-" + name),
                "--workers", "1", *(a.format(tmp=tmp) for a in extra))
        script = benchlib.lua_script(os.path.join(tmp, "healthz.lua"), ["/healthz"], raw=False)
        names = [name for name, _, _ in CONDITIONS]
        for rnd in range(args.rounds + 1):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in order:
                figures = benchlib.run_wrk(servers[name][1], script, args.connections,
                                           args.duration)
                if figures["socket_errors"] or figures["non2xx"]:
                    print("error: %s: %d socket errors, %d non-2xx" % (
                        name, figures["socket_errors"], figures["non2xx"]))
                    status = 1
                requests[name] += figures["requests"]
                if rnd > 0:
                    rps[name].append(figures["rps"])
    finally:
        for proc, _ in servers.values():
            benchlib.stop(proc)
    for name, log in (("text", "text.log"), ("json", "json.log")):
        with open(os.path.join(tmp, log), "rb") as f:
            lines = sum(1 for _ in f)
        if lines < requests[name]:
            print("error: %s: %d lines for %d requests" % (name, lines, requests[name]))
            status = 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("GET /healthz under wrk -t 2 -c %d -d %ds against pycached --workers 1 (%s), %d rounds "
          "(after 1 warm-up), %s UTC, %d CPUs (wrk on the same CPUs), load average %.2f before, "
          "%.2f after" % (args.connections, args.duration, build, args.rounds,
                          time.strftime("%Y-%m-%d %H:%M", time.gmtime()), os.cpu_count(),
                          load_before, os.getloadavg()[0]))
    anchor = statistics.median(rps["none"])
    print("%-34s %24s %8s %10s" % ("condition", "req/s min median max", "/ none", "us a line"))
    for name, label, _ in CONDITIONS:
        median = statistics.median(rps[name])
        cost = "-" if name == "none" else "%.1f" % ((1 / median - 1 / anchor) * 1e6)
        print("%-34s %24s %8.2f %10s" % (label, benchlib.spread(rps[name]), median / anchor, cost))
    return status


if __name__ == "__main__":
    sys.exit(main())
