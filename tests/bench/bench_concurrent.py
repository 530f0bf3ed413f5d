#!/usr/bin/python3
"""Benchmark: 64 clients asking at the same moment for the same missing module (parse once),
and what that storm does to the latency of hits on another module.

Usage: /usr/bin/python3 tests/bench/bench_concurrent.py [--runs N] [--clients N] [--hits N]
                                                         [--build DIR]

What it measures. A pycached (`--workers 2`, a fresh store) holds one small cached module. Each
run generates a large module nobody has asked for yet (about 1.6 MB of source, different in every
run) and then:
  idle   the anchor: --hits (default 200) sequential GETs of the cached module on one keep-alive
         connection with the server otherwise idle; the latency of each
  storm  --clients (default 64) threads, each with its own connected http.client connection, wait
         on a barrier and POST /v1/compile of the large module at the same moment; meanwhile a
         separate thread makes the same sequential hits as in idle, from the barrier on, until
         the storm is over (so they cover all of it; hits that end after it do not count)
Reported per run: the server's compiles during the storm (/v1/stats `compiles` delta; it must be
1, else the benchmark exits 1), the X-Pycached-Outcome of the answers (compiled / joined / stored),
the time until all clients had their answer, and the hit latency (median, p99) idle and during
the storm. The summary gives the medians over the runs and the storm/idle ratio of hit latency.
Exit status: 0 when every storm compiled once, 1 otherwise or when a request failed, 2 on a
setup error.
"""
import argparse
import http.client
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import start_server, stats, stop  # noqa: E402  (shared with the other benchmarks)

MAGIC = "a70d0d0a"
STORM_HITS_MAX = 1000000  # bounds the hit loop during a storm


class RunFailed(Exception):
    pass


def large_source(seed):
    """About 1.6 MB of Python that takes the compiler a noticeable time."""
    parts = ["# generated for bench_concurrent, run %d\n" % seed]
    for i in range(6000):
        parts.append("def f_%d_%d(a, b=%d):\n    x = [a * k + b for k in range(%d) if k %% 3]\n"
                     "    y = {'k%d': x, 'n': len(x), 's': sum(x) - %d}\n"
                     "    if y['n'] > %d:\n        return y['s'] + f_%d_%d(a - 1) if a else 0\n"
                     "    return (a, b, y, 'run %d item %d' * 2)\n\n"
                     % (seed, i, i, i % 50 + 5, i, i, i % 7, seed, max(i - 1, 0), seed, i))
    return "".join(parts).encode()


def port_stats(port):
    return stats("http://127.0.0.1:%d" % port)


def compile_query(path, data, mtime):
    return "/v1/compile?" + urllib.parse.urlencode({"magic": MAGIC, "opt": 0, "path": path,
                                                    "mtime": mtime, "size": len(data)})


def hit_loop(port, query, count, until=None, start=None):
    """count sequential raw-pyc hits on one connection, starting at the barrier `start` (when
    given) and stopping early once the event `until` is set. Returns the latencies (seconds)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.connect()
    if start is not None:
        start.wait()
    latencies = []
    try:
        for _ in range(count):
            if until is not None and until.is_set():
                break
            t = time.perf_counter()
            conn.request("GET", query, headers={"Accept": "application/x-python-pyc"})
            resp = conn.getresponse()
            resp.read()
            done = time.perf_counter()
            if resp.status != 200 or resp.getheader("X-Pycached-Outcome") != "hit":
                raise RunFailed("a hit answered %d %s" % (resp.status,
                                                          resp.getheader("X-Pycached-Outcome")))
            if until is not None and until.is_set():
                break  # finished after the storm: not a storm hit
            latencies.append(done - t)
    finally:
        conn.close()
    return latencies


def p99(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def storm(port, clients, query, body, hit_query, hits):
    """One storm; returns (seconds until all answered, outcomes, storm hit latencies)."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=300) for _ in range(clients)]
    for conn in conns:
        conn.connect()
    barrier = threading.Barrier(clients + 2)
    answered = [None] * clients
    over = threading.Event()
    hit_result = {}

    def client(i):
        barrier.wait()
        try:
            conns[i].request("POST", query, body=body,
                             headers={"Accept": "application/x-python-pyc",
                                      "Content-Type": "application/octet-stream"})
            resp = conns[i].getresponse()
            resp.read()
            answered[i] = (time.perf_counter(), resp.status, resp.getheader("X-Pycached-Outcome"))
        except (OSError, http.client.HTTPException) as exc:
            answered[i] = (time.perf_counter(), 0, repr(exc))

    def hitter():
        try:
            hit_result["latencies"] = hit_loop(port, hit_query, STORM_HITS_MAX, over, barrier)
        except (RunFailed, OSError, http.client.HTTPException) as exc:
            hit_result["error"] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    threads.append(threading.Thread(target=hitter))
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads[:-1]:
        t.join(300)
    over.set()
    threads[-1].join(300)
    for conn in conns:
        conn.close()
    if any(a is None for a in answered) or "latencies" not in hit_result:
        raise RunFailed("storm: no answer: %s" % hit_result.get("error", "a client hung"))
    bad = [a for a in answered if a[1] != 200]
    if bad:
        raise RunFailed("storm: %d clients failed, e.g. %s" % (len(bad), bad[0]))
    outcomes = {}
    for _, _, outcome in answered:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return max(a[0] for a in answered) - t0, outcomes, hit_result["latencies"]


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="storms (default 3)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients (default 64)")
    parser.add_argument("--hits", type=int, default=200, help="sequential hits (default 200)")
    parser.add_argument("--build", default=os.path.join(root, "build"), help="build directory")
    args = parser.parse_args()
    if args.runs < 1 or args.clients < 1 or args.hits < 1:
        parser.error("--runs, --clients and --hits must be at least 1")
    build = os.path.abspath(args.build)
    tmp = tempfile.mkdtemp(prefix="pycached-bench-concurrent-")
    server = None
    rows, ok = [], True
    try:
        server, url = start_server(build, os.path.join(tmp, "store"), os.path.join(tmp, "server"))
        port = int(url.rsplit(":", 1)[1])
        small = b"# bench_concurrent: the cached module\nVALUE = [i * i for i in range(10)]\n"
        small_path, mtime = os.path.join(tmp, "cached_mod.py"), 1700000000
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", compile_query(small_path, small, mtime), body=small,
                     headers={"Content-Type": "text/x-python"})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        if resp.status != 200:
            raise RuntimeError("cannot compile the small module: %d" % resp.status)
        hit_query = "/v1/code?" + urllib.parse.urlencode(
            {"magic": MAGIC, "opt": 0, "path": small_path, "mtime": mtime, "size": len(small)})
        hit_loop(port, hit_query, 50)  # warm-up, not counted
        for rnd in range(args.runs):
            body = large_source(rnd + int(time.time()))
            query = compile_query(os.path.join(tmp, "large_%d.py" % rnd), body, mtime)
            idle = hit_loop(port, hit_query, args.hits)
            before = port_stats(port)["compiles"]
            seconds, outcomes, during = storm(port, args.clients, query, body, hit_query,
                                              args.hits)
            compiles = port_stats(port)["compiles"] - before
            ok = ok and compiles == 1
            rows.append((rnd + 1, len(body), compiles, outcomes, seconds, idle, during))
            print("run %d/%d done" % (rnd + 1, args.runs), file=sys.stderr)
    except RunFailed as exc:
        print("bench_concurrent: run failed: %s" % exc, file=sys.stderr)
        return 1
    except (OSError, RuntimeError, http.client.HTTPException) as exc:
        print("bench_concurrent: setup failed: %s" % exc, file=sys.stderr)
        return 2
    finally:
        if server is not None:
            stop(server)
        shutil.rmtree(tmp, ignore_errors=True)

    ms = lambda s: s * 1e3  # noqa: E731
    print("%d clients compile the same missing module at once, server --workers 2, %s, %d CPUs"
          % (args.clients, time.strftime("%Y-%m-%d %H:%M %Z"), os.cpu_count()))
    print("%-4s %8s %8s %-32s %9s %13s %13s %7s" % (
        "run", "source", "compiles", "outcomes", "all in s", "idle med/p99", "storm med/p99",
        "hits"))
    for rnd, size, compiles, outcomes, seconds, idle, during in rows:
        text = " ".join("%s %d" % kv for kv in sorted(outcomes.items()))
        print("%-4d %7.2fM %8d %-32s %9.3f %6.2f/%6.2f %6.2f/%6.2f %7d" % (
            rnd, size / 1e6, compiles, text, seconds, ms(statistics.median(idle)), ms(p99(idle)),
            ms(statistics.median(during)) if during else 0, ms(p99(during)) if during else 0,
            len(during)))
    idle_med = statistics.median(statistics.median(r[5]) for r in rows)
    idle_p99 = statistics.median(p99(r[5]) for r in rows)
    storm_rows = [r for r in rows if r[6]]
    print("\nmedians over %d runs: all answered in %.3f s; hit latency idle %.2f ms (p99 %.2f)"
          % (len(rows), statistics.median(r[4] for r in rows), ms(idle_med), ms(idle_p99)),
          end="")
    if storm_rows:
        storm_med = statistics.median(statistics.median(r[6]) for r in storm_rows)
        storm_p99 = statistics.median(p99(r[6]) for r in storm_rows)
        print(", during the storm %.2f ms (p99 %.2f): storm/idle %.2f (p99 %.2f)"
              % (ms(storm_med), ms(storm_p99), storm_med / idle_med, storm_p99 / idle_p99))
    else:
        print(", no hit completed during a storm")
    print("compiles per storm: %s (must be 1): %s" % (
        ", ".join(str(r[2]) for r in rows), "ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
