#!/usr/bin/python3
"""Benchmark: pycached's hits, raw pyc and JSON, against nginx serving the same pyc bytes from
files, under wrk at 64 and 256 connections (issue 12).

Usage: /usr/bin/python3 tests/bench/bench_hits.py [--duration S] [--rounds N]
           [--connections 64,256] [--threads 1,2,4] [--entries N] [--build DIR [--build DIR2]]
           [--store-compression none,zstd]

What it measures. For each build (--build, default build; give it twice to compare two builds in
one run) and each --threads value (default 2), one pycached (`--workers 2 --threads N
--max-connections-per-ip 0`: every loopback client is one address) is filled with --entries
(default 300) modules of the stdlib (/usr/lib/python3.11, sorted, at most 256 KiB each); the raw
pycs of the first are written as static files for one nginx on loopback (`worker_processes 1`,
access log off, keep-alive without a request limit, sendfile off: Debian's default). The
conditions are each pycached raw (`GET /v1/code?magic&opt&path&mtime&size&hash` with `Accept:
application/x-python-pyc`, hash-validated as the import hook asks), each pycached JSON (the same
lookups without Accept: the pyc in base64 in a JSON object) and nginx (the same bytes). Each run
is `wrk -t 2 -c C --latency` for --duration seconds (default 5) with a Lua script cycling through
the lookups; every condition runs at every --connections value in each of --rounds rounds
(default 3), the order of the conditions rotating from round to round, after one unmeasured
second of each. wrk runs on the same CPUs as the servers and takes a share of them.

Reports, per connections and condition: requests/s, p50 and p99 latency (min median max over
the rounds), the server's CPU time per request (utime + stime of the process and its children
from /proc, over the run), errors (wrk's socket errors and non-2xx; the aim is 0); then each
condition's ratios to nginx in the same round (median, min-max): rps and p99, with the aims of
issue 12: raw rps >= 1.0x nginx's, JSON rps >= 0.6x, p99 <= 1.5x. With --store-compression
none,zstd each build and --threads value gets one server per setting (its own store, filled the
same way), and the store's payload bytes and LMDB pages in use are printed for each.
Exit status: 0 when the runs ran (aims met or not), 1 when a run failed, 2 on a setup error.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (NGINX, WRK, RunFailed, fill, lua_script, run_wrk,  # noqa: E402
                      spread, start_nginx, start_server, stats, stdlib_sources, stop,
                      worker_pids)

AIM_RAW = 1.0   # raw rps / nginx rps, at least
AIM_JSON = 0.6  # JSON rps / nginx rps, at least
AIM_P99 = 1.5   # p99 / nginx p99, at most
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of pid and its children (threads included), in seconds; 0 when gone."""
    total = 0
    for p in [pid] + worker_pids(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
        except (OSError, IndexError, ValueError):
            pass
    return total / TICK


def int_list(text):
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive numbers")
    return values


def measure(cond, url, connections, seconds):
    """One wrk run of a condition; its figures with the server's CPU per request (us)."""
    before = cpu_seconds(cond["pid"])
    figures = run_wrk(url, cond["script"], connections, seconds)
    used = cpu_seconds(cond["pid"]) - before
    figures["cpu_us"] = used / max(figures["requests"], 1) * 1e6
    return figures


def report(conds, rows, connections, rounds):
    print("\n%d connections" % connections)
    print("%-30s %20s %18s %20s %10s %7s" % ("condition", "rps min med max", "p50 ms min med max",
                                            "p99 ms min med max", "CPU us/req", "errors"))
    for cond in conds:
        r = rows[(cond["name"], connections)]
        print("%-30s %20s %18s %20s %10.1f %7d" % (
            cond["name"], spread([x["rps"] for x in r]), spread([x["p50"] for x in r], "%.2f"),
            spread([x["p99"] for x in r], "%.2f"), statistics.median(x["cpu_us"] for x in r),
            sum(x["socket_errors"] + x["non2xx"] for x in r)))
    nginx = rows[("nginx", connections)]
    print("%-30s %26s %26s" % ("ratio to nginx, same round", "rps median (min-max)",
                               "p99 median (min-max)"))
    for cond in conds:
        if cond["name"] == "nginx":
            continue
        r = rows[(cond["name"], connections)]
        rps = [p["rps"] / n["rps"] for p, n in zip(r, nginx)]
        p99 = [p["p99"] / n["p99"] for p, n in zip(r, nginx) if n["p99"] > 0]
        aim = AIM_RAW if cond["raw"] else AIM_JSON
        rps_med, p99_med = statistics.median(rps), statistics.median(p99) if p99 else 0
        print("%-30s %8.2f (%.2f-%.2f) %-7s %8.2f (%.2f-%.2f) %-7s" % (
            cond["name"], rps_med, min(rps), max(rps),
            ">=%.1f %s" % (aim, "met" if rps_med >= aim else "MISSED"),
            p99_med, min(p99 or [0]), max(p99 or [0]),
            "<=%.1f %s" % (AIM_P99, "met" if p99_med <= AIM_P99 else "MISSED")))


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of each wrk run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--connections", type=int_list, default=[64, 256],
                        help="wrk -c values, comma-separated (default 64,256)")
    parser.add_argument("--threads", type=int_list, default=[2],
                        help="pycached --threads values, comma-separated (default 2)")
    parser.add_argument("--entries", type=int, default=300, help="modules stored (default 300)")
    parser.add_argument("--build", action="append",
                        help="build directory (default build); twice: both, in one run")
    parser.add_argument("--store-compression", default="none",
                        help="pycached --store-compression values, comma-separated (default "
                        "none; none,zstd: both, each its own server and store)")
    args = parser.parse_args()
    if args.duration < 1 or args.rounds < 1 or args.entries < 1:
        parser.error("--duration, --rounds and --entries must be at least 1")
    builds = [os.path.abspath(b) for b in (args.build or [os.path.join(root, "build")])]
    compressions = [c for c in args.store_compression.split(",") if c]
    if not compressions or set(compressions) - {"none", "zstd"}:
        parser.error("--store-compression: none, zstd or both")
    store_used = {}
    for tool in (WRK, NGINX):
        if not os.access(tool, os.X_OK):
            print("bench_hits: %s missing (deploy/install-deps.sh installs it)" % tool,
                  file=sys.stderr)
            return 2
    tmp = tempfile.mkdtemp(prefix="pycached-bench-hits-")
    os.chmod(tmp, 0o755)  # nginx's worker (nobody) reads the docroot
    docroot = os.path.join(tmp, "docroot")
    os.mkdir(docroot)
    procs, conds = [], []
    rows = {}
    try:
        sources = stdlib_sources(args.entries)
        statics = mean_pyc = None
        for b, build in enumerate(builds):
            for threads, compression in [(t, c) for t in args.threads for c in compressions]:
                name = "pycached%s -t %d%s" % (" [%s]" % os.path.basename(build)
                                               if len(builds) > 1 else "", threads,
                                               " [%s]" % compression if len(compressions) > 1
                                               else "")
                work = os.path.join(tmp, "s%d-%d-%s" % (b, threads, compression))
                os.mkdir(work)
                server, url = start_server(build, os.path.join(work, "store"),
                                           os.path.join(work, "server"), "--threads",
                                           str(threads), "--max-connections-per-ip", "0",
                                           "--store-compression", compression)
                procs.append(server)
                port = int(url.rsplit(":", 1)[1])
                lookups, paths, mean = fill(port, tmp, sources, docroot if not conds else None)
                figures = stats(url)["store"]
                store_used[name] = (figures["bytes"], figures["used"])
                statics, mean_pyc = statics or paths, mean_pyc or mean
                for raw in (True, False):
                    script = lua_script(os.path.join(work, "raw.lua" if raw else "json.lua"),
                                        lookups, 0, raw)
                    conds.append({"name": name + (" raw" if raw else " JSON"), "url": url,
                                  "script": script, "pid": server.pid, "raw": raw})
        nginx, nginx_url = start_nginx(tmp, docroot, "1")
        procs.append(nginx)
        conds.append({"name": "nginx", "url": nginx_url, "raw": True, "pid": nginx.pid,
                      "script": lua_script(os.path.join(tmp, "static.lua"), statics, 0, True)})
        for cond in conds:  # warm-up, not counted
            run_wrk(cond["url"], cond["script"], args.connections[0], 1)
        for rnd in range(args.rounds):
            for connections in args.connections:
                shift = rnd % len(conds)
                for cond in conds[shift:] + conds[:shift]:
                    figures = measure(cond, cond["url"], connections, args.duration)
                    rows.setdefault((cond["name"], connections), []).append(figures)
                print("round %d/%d, %d connections: %s" % (
                    rnd + 1, args.rounds, connections, ", ".join(
                        "%s %.0f" % (c["name"], rows[(c["name"], connections)][-1]["rps"])
                        for c in conds)), file=sys.stderr)
    except RunFailed as exc:
        print("bench_hits: run failed: %s" % exc, file=sys.stderr)
        return 1
    except (OSError, RuntimeError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        print("bench_hits: setup failed: %r" % exc, file=sys.stderr)
        return 2
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)

    print("pycached --workers 2 --max-connections-per-ip 0 (%s) and nginx (worker_processes 1) "
          "under wrk -t 2, %s, %d CPUs (wrk on the same CPUs)" % (
              ", ".join(builds), time.strftime("%Y-%m-%d %H:%M %Z"), os.cpu_count()))
    print("%d stdlib modules stored, mean pyc %.0f bytes; %d rounds of %d s per condition" % (
        len(sources), mean_pyc, args.rounds, args.duration))
    for name, (payload, used) in store_used.items():
        print("%s: store payload %d bytes, LMDB pages in use %d bytes" % (name, payload, used))
    for connections in args.connections:
        report(conds, rows, connections, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
