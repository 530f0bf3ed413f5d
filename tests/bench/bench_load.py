#!/usr/bin/python3
"""Benchmark: pycached under wrk with 256 connections, against nginx serving the same bytes; a
mixed load (hits, compiles of new sources, stats and metrics); and a soak of the mixed load.

Usage: /usr/bin/python3 tests/bench/bench_load.py [--duration S] [--rounds N] [--connections N]
                                                   [--entries N] [--soak S] [--build DIR]

What it measures. One pycached (`--workers 2`, 4 HTTP threads, `--max-connections-per-ip 0` so
that wrk's 256 loopback connections are all served: every loopback client is one address) is
filled with --entries (default 300) modules of the stdlib (/usr/lib/python3.11, sorted, at most
256 KiB each). Its raw pycs (`GET /v1/code?magic&opt&path&mtime&size&hash` with `Accept:
application/x-python-pyc`, hash-validated as the import hook asks) are also written as static
files for an nginx on loopback (`worker_processes auto`, access log off, keep-alive without a
request limit), the house's anchor for HTTP benchmarks. Then:
  hits   wrk -t 2 -c 256 --latency for --duration seconds (default 5; 60 for the figures), a Lua
         script cycling through the entries' lookups; the same against nginx cycling through the
         same bytes; --rounds times (default 3), the order alternating from round to round
  mixed  --duration seconds of wrk as above, but 1 request in 50 is GET /v1/stats and 1 in 50
         GET /metrics (no --tokens: a token-less loopback server serves both; with --tokens
         /metrics needs the admin role), while 2 Python threads POST /v1/compile new sources
         (stdlib modules, each with a first line of its own, so every one is compiled)
  soak   with --soak S (e.g. 1800): the mixed load for S seconds instead of the rest
The server's RssAnon and descriptors (/proc/PID/status, /proc/PID/fd) and each worker's are
sampled every 5 s (every 60 s in a soak), from before the first load to its end. wrk runs on the
same 2 CPUs as the server and nginx, and takes a share of them.

Reports, per condition: requests/s (min/median/max over the rounds), errors (wrk's socket errors
and non-2xx answers; the aim is 0), p50 and p99 latency, pycached's rps as a ratio of nginx's
(median of the per-round ratios); for the compiles their count, rate and failures; the memory
samples, and whether the server's RssAnon and its descriptors are flat after the warm-up (the
first sample of the load): flat means within --flat MB (default 16) and 8 descriptors.
Exit status: 0 when the loads ran (aims met or not), 1 when a run failed, 2 on a setup error.
"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (NGINX, WRK, RunFailed, fill, lua_script, open_fds, post_compile,  # noqa: E402
                      rss_anon_kib, run_wrk, spread, start_nginx, start_server, stats,
                      stdlib_sources, stop, worker_pids)

COMPILERS = 2          # threads compiling new sources during the mixed load
ADMIN_EVERY = 50       # 1 request in ADMIN_EVERY is /v1/stats, another /metrics (mixed load)
FD_SLACK = 8           # descriptors of difference still called flat

class Sampler(threading.Thread):
    """Samples the server's and its workers' RssAnon and descriptors every interval seconds."""

    def __init__(self, pid, interval):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples, self.marks = [], []
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()

    def sample(self):
        workers = worker_pids(self.pid)
        self.samples.append((time.monotonic() - self.t0, rss_anon_kib(self.pid),
                             open_fds(self.pid), [rss_anon_kib(p) for p in workers],
                             [open_fds(p) for p in workers]))

    def mark(self, what):
        self.marks.append((time.monotonic() - self.t0, what))

    def run(self):
        while not self.stop_event.wait(self.interval):
            self.sample()

    def finish(self):
        self.stop_event.set()
        self.join(self.interval + 5)
        self.sample()


class Compiler(threading.Thread):
    """POSTs new sources (stdlib modules with a first line of their own) until told to stop."""

    def __init__(self, port, tmp, sources, index, until):
        super().__init__(daemon=True)
        self.port, self.tmp, self.sources, self.index, self.until = port, tmp, sources, index, until
        self.ok = self.failed = 0
        self.failures = {}

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        n = 0
        while not self.until.is_set() and n < 10000000:
            source = self.sources[n % len(self.sources)]
            data = b"# bench_load compiler %d source %d\n" % (self.index, n) + \
                open(source, "rb").read()
            path = os.path.join(self.tmp, "new", "c%d" % self.index, "%d.py" % n)
            try:
                status, _ = post_compile(conn, path, data, 1700000000)
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            if status == 200:
                self.ok += 1
            else:
                self.failed += 1
                self.failures[status] = self.failures.get(status, 0) + 1
            n += 1
        conn.close()


def mixed(port, url, tmp, sources, script, connections, seconds):
    """wrk with admin requests plus COMPILERS compiling threads; returns (wrk figures, compiles
    ok, failed, failures by status, seconds)."""
    until = threading.Event()
    compilers = [Compiler(port, tmp, sources, i, until) for i in range(COMPILERS)]
    t = time.monotonic()
    for c in compilers:
        c.start()
    try:
        figures = run_wrk(url, script, connections, seconds)
    finally:
        until.set()
        for c in compilers:
            c.join(180)
    failures = {}
    for c in compilers:
        for k, v in c.failures.items():
            failures[k] = failures.get(k, 0) + v
    return (figures, sum(c.ok for c in compilers), sum(c.failed for c in compilers), failures,
            time.monotonic() - t)


def show_memory(sampler, flat_mb):
    """Prints the samples; returns (server growth MB, fd growth, worker max MB) after warm-up."""
    print("\nmemory (RssAnon MB) and descriptors, sampled every %d s:" % sampler.interval)
    print("%8s %10s %10s %8s  %-22s %s" % ("t s", "server MB", "workers MB", "srv fds",
                                          "each worker MB", "worker fds"))
    for t, srv, fds, workers, wfds in sampler.samples:
        print("%8.0f %10.1f %10.1f %8d  %-22s %s" % (
            t, srv / 1024, sum(workers) / 1024, fds,
            " ".join("%.1f" % (w / 1024) for w in workers), " ".join(map(str, wfds))))
    for t, what in sampler.marks:
        print("  at %6.0f s: %s" % (t, what))
    load_start = next((t for t, what in sampler.marks if what.startswith("load:")), 0)
    load_end = next((t for t, what in sampler.marks if what == "load over"), float("inf"))
    during = [s for s in sampler.samples if load_start < s[0] <= load_end]
    if len(during) < 2:
        return None
    first, last = during[0], during[-1]
    growth = (last[1] - first[1]) / 1024
    fd_growth = last[2] - first[2]
    peak = max(s[1] for s in during) / 1024
    workers_peak = max((max(s[3]) for s in during if s[3]), default=0) / 1024
    print("server RssAnon from the first sample under load to the last one under load: %.1f -> %.1f MB (%+.1f, "
          "peak %.1f); descriptors %d -> %d; largest worker %.1f MB: %s" % (
              first[1] / 1024, last[1] / 1024, growth, peak, first[2], last[2], workers_peak,
              "flat" if abs(growth) <= flat_mb and abs(fd_growth) <= FD_SLACK else "NOT FLAT"))
    return growth, fd_growth, workers_peak


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5,
                        help="seconds of each wrk run (default 5; 60 for the figures)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of hits (default 3)")
    parser.add_argument("--connections", type=int, default=256, help="wrk -c (default 256)")
    parser.add_argument("--entries", type=int, default=300, help="modules stored (default 300)")
    parser.add_argument("--soak", type=int, default=0,
                        help="seconds of mixed load only, memory sampled every minute")
    parser.add_argument("--flat", type=float, default=16.0,
                        help="MB of server growth under load still called flat (default 16)")
    parser.add_argument("--max-size", help="the server's --max-size (default its own, 3G)")
    parser.add_argument("--build", default=os.path.join(root, "build"), help="build directory")
    args = parser.parse_args()
    if args.duration < 1 or args.rounds < 1 or args.connections < 1 or args.entries < 1:
        parser.error("--duration, --rounds, --connections and --entries must be at least 1")
    for tool in (WRK,) + (() if args.soak else (NGINX,)):
        if not os.access(tool, os.X_OK):
            print("bench_load: %s missing (deploy/install-deps.sh installs it)" % tool,
                  file=sys.stderr)
            return 2
    build = os.path.abspath(args.build)
    tmp = tempfile.mkdtemp(prefix="pycached-bench-load-")
    os.chmod(tmp, 0o755)  # nginx's workers (nobody) read the docroot
    docroot = os.path.join(tmp, "docroot")
    os.mkdir(docroot)
    server = nginx = sampler = None
    rows = {"pycached": [], "nginx": []}
    mixed_rows = []
    try:
        server_args = ["--max-connections-per-ip", "0"]
        if args.max_size:
            server_args += ["--max-size", args.max_size]
        server, url = start_server(build, os.path.join(tmp, "store"), os.path.join(tmp, "server"),
                                   *server_args)
        port = int(url.rsplit(":", 1)[1])
        sampler = Sampler(server.pid, 60 if args.soak else 5)
        sampler.sample()
        sampler.start()
        sources = stdlib_sources(args.entries)
        lookups, statics, mean_pyc = fill(port, tmp, sources, docroot)
        sampler.mark("filled: %d entries" % len(lookups))
        hit_script = lua_script(os.path.join(tmp, "hits.lua"), lookups, 0)
        mixed_script = lua_script(os.path.join(tmp, "mixed.lua"), lookups, ADMIN_EVERY)
        static_script = lua_script(os.path.join(tmp, "static.lua"), statics, 0)
        compiles_before = stats(url)["compiles"]
        if args.soak:
            sampler.mark("load: mixed for %d s" % args.soak)
            mixed_rows.append(mixed(port, url, tmp, sources, mixed_script, args.connections,
                                    args.soak))
        else:
            nginx, nginx_url = start_nginx(tmp, docroot, "auto")
            run_wrk(url, hit_script, args.connections, 2)  # warm-up, not counted
            run_wrk(nginx_url, static_script, args.connections, 2)
            sampler.mark("load: hits, nginx, mixed")
            for rnd in range(args.rounds):
                order = ("pycached", "nginx") if rnd % 2 == 0 else ("nginx", "pycached")
                for what in order:
                    if what == "pycached":
                        rows[what].append(run_wrk(url, hit_script, args.connections,
                                                  args.duration))
                    else:
                        rows[what].append(run_wrk(nginx_url, static_script, args.connections,
                                                  args.duration))
                print("round %d/%d: pycached %.0f rps, nginx %.0f rps" % (
                    rnd + 1, args.rounds, rows["pycached"][-1]["rps"], rows["nginx"][-1]["rps"]),
                    file=sys.stderr)
            stop(nginx)
            nginx = None
            mixed_rows.append(mixed(port, url, tmp, sources, mixed_script, args.connections,
                                    args.duration))
        sampler.mark("load over")
        time.sleep(6)  # one more sample after the load, past a trim of the upkeep thread
        final = stats(url)
    except RunFailed as exc:
        print("bench_load: run failed: %s" % exc, file=sys.stderr)
        return 1
    except (OSError, RuntimeError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        print("bench_load: setup failed: %r" % exc, file=sys.stderr)
        return 2
    finally:
        if nginx is not None:
            stop(nginx)
        if sampler is not None:
            sampler.finish()
        if server is not None:
            stop(server)
        shutil.rmtree(tmp, ignore_errors=True)

    compiler = final["compilers"][0]
    print("pycached --workers 2 --threads 4 %s under wrk -t 2 -c %d, "
          "%s, %d CPUs (wrk on the same CPUs)" % (" ".join(server_args), args.connections,
                                                  time.strftime("%Y-%m-%d %H:%M %Z"),
                                                  os.cpu_count()))
    print("%d stdlib modules stored, mean pyc %.0f bytes; runs of %d s" % (
        len(lookups), mean_pyc, args.soak or args.duration))
    if not args.soak:
        print("\n%-26s %22s %10s %8s %8s %8s" % ("hits (raw pyc)", "rps min median max",
                                                "errors", "non-2xx", "p50 ms", "p99 ms"))
        for what in ("pycached", "nginx"):
            r = rows[what]
            print("%-26s %22s %10d %8d %8.2f %8.2f" % (
                what if what == "pycached" else "nginx, same bytes", spread([x["rps"] for x in r]),
                sum(x["socket_errors"] for x in r), sum(x["non2xx"] for x in r),
                statistics.median(x["p50"] for x in r), statistics.median(x["p99"] for x in r)))
        ratios = [p["rps"] / n["rps"] for p, n in zip(rows["pycached"], rows["nginx"])]
        print("pycached / nginx rps: %s (min median max of %d rounds)" % (
            spread(ratios, "%.2f"), len(ratios)))
    for figures, ok, failed, failures, seconds in mixed_rows:
        print("\nmixed: hits + 1/%d /v1/stats + 1/%d /metrics (wrk), %d threads compiling new "
              "sources" % (ADMIN_EVERY, ADMIN_EVERY, COMPILERS))
        print("wrk: %.0f rps, %d requests, socket errors %d, non-2xx %d, p50 %.2f ms, p99 %.2f ms,"
              " max %.0f ms" % (figures["rps"], figures["requests"], figures["socket_errors"],
                                figures["non2xx"], figures["p50"], figures["p99"],
                                figures["max"]))
        print("compiles: %d ok (%.1f/s), %d failed %s" % (ok, ok / seconds, failed,
                                                          json.dumps(failures) if failures else ""))
    print("server: %d compiles in all during the loads, workers recycled %d, restarted %d; "
          "store: %d entries, %d evictions" % (
              final["compiles"] - compiles_before, compiler.get("recycles", 0),
              compiler["restarts"], final["store"]["entries"], final["store"]["evictions"]))
    show_memory(sampler, args.flat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
