#!/usr/bin/python3
"""Benchmark: bytes on the wire per warm start of `import sympy`, with and without zstd, on the
bundle path and on the per-module path, on loopback and through a link of a given rate.

Usage: /usr/bin/python3 tests/bench/bench_wire.py [--runs N] [--rates MBPS,...] [--build DIR]

What it measures. The server (build/server/pycached, its own store in a temporary directory)
gets every module of `import sympy` (a copy of Debian's sympy and mpmath without pycs) and its
import profile from one unmeasured hook run. Then each run is one fresh /usr/bin/python3 with the
hook (`pycachectl exec`) that imports sympy through a proxy on loopback, which counts the bytes
the server sends (status lines, headers and bodies: what a network carries above TCP) and, for a
rate in --rates (MB/s; default 12.5: 100 Mbit/s), sends them no faster than that. Four
conditions, alternating run by run after one discarded warm-up round:

  bundle plain   PYCACHED_PROFILE set, PYCACHED_BUNDLE_ZSTD=0: one bundle, then per-module
                 requests for what it lacks
  bundle zstd    ... PYCACHED_BUNDLE_ZSTD=1 (and PYCACHED_ZSTD=1)
  module plain   PYCACHED_PROFILE=off, PYCACHED_ZSTD=0: one GET /v1/code per module
  module zstd    ... PYCACHED_ZSTD=1 (Accept-Encoding: zstd on each lookup)

Printed per link and condition: bytes from the server (min, median, max), the time of
`import sympy` in the child (min, median, max, ms), and zstd/plain ratios of the medians. A run
that falls back for any module (the hook's stats) is an error: every module must come from the
server.

Exit status: 0 (whatever the figures), 1 when the setup or a run failed.
"""
import argparse
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
from benchlib import LinkProxy, start_server, stop  # noqa: E402

PYTHON = "/usr/bin/python3"
DIST = "/usr/lib/python3/dist-packages"
PROFILE = "bench-wire"
RUN_TIMEOUT = 300

CHILD = r"""
import sys, time, json
sys.path.insert(0, sys.argv[1])
t = time.perf_counter()
import sympy
elapsed = time.perf_counter() - t
import pycached
print(json.dumps({"ms": elapsed * 1000, "stats": pycached.stats()}))
"""

CONDITIONS = [  # name, hook settings
    ("bundle plain", {"PYCACHED_PROFILE": PROFILE, "PYCACHED_BUNDLE_ZSTD": "0",
                      "PYCACHED_ZSTD": "0"}),
    ("bundle zstd", {"PYCACHED_PROFILE": PROFILE, "PYCACHED_BUNDLE_ZSTD": "1",
                     "PYCACHED_ZSTD": "1"}),
    ("module plain", {"PYCACHED_PROFILE": "off", "PYCACHED_ZSTD": "0"}),
    ("module zstd", {"PYCACHED_PROFILE": "off", "PYCACHED_ZSTD": "1"}),
]


def hook_run(ctl, url, tree, settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYCACHED_"))}
    env.update(PYTHONDONTWRITEBYTECODE="1", **settings)
    out = subprocess.run([ctl, "--server", url, "exec", "--", PYTHON, "-s", "-c", CHILD, tree],
                         capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT)
    if out.returncode != 0:
        raise RuntimeError("hook run: %s" % out.stderr.strip()[-2000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    stats = result["stats"]
    if stats["fallbacks"] or stats["local_compile"]:  # local_pyc: the stdlib's own pycs
        raise RuntimeError("a module did not come from the server: %s" % stats)
    return result["ms"], stats


def spread(values, fmt):
    return " ".join(fmt % v for v in (min(values), statistics.median(values), max(values)))


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per condition")
    parser.add_argument("--rates", default="12.5", help="link rates in MB/s, comma-separated "
                        "(loopback is always measured)")
    parser.add_argument("--build", default=os.path.join(root, "build"), help="build directory")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    try:
        rates = [float(r) for r in args.rates.split(",") if r]
    except ValueError:
        parser.error("--rates: numbers separated by commas")
    build = os.path.abspath(args.build)
    ctl = os.path.join(build, "client", "pycachectl")
    tmp = tempfile.mkdtemp(prefix="pycached-wire-")
    server, proxies = None, []
    try:
        tree = os.path.join(tmp, "A")
        for package in ("sympy", "mpmath"):
            shutil.copytree(os.path.join(DIST, package), os.path.join(tree, package),
                            ignore=shutil.ignore_patterns("__pycache__"))
        server, url = start_server(build, os.path.join(tmp, "store"), os.path.join(tmp, "server"))
        port = int(url.rsplit(":", 1)[1])
        _, filled = hook_run(ctl, url, tree, {"PYCACHED_PROFILE": PROFILE})  # compiles, profile
        links = []
        for rate in [None] + rates:
            proxy = LinkProxy(port, rate * 1e6 if rate else None)
            threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True).start()
            proxies.append(proxy)
            links.append(("loopback" if rate is None else "%g MB/s" % rate, proxy))
        results = {}
        for link, proxy in links:
            url_here = "http://127.0.0.1:%d" % proxy.server_address[1]
            got = {name: {"bytes": [], "ms": []} for name, _ in CONDITIONS}
            for rnd in range(args.runs + 1):
                order = CONDITIONS if rnd % 2 else CONDITIONS[::-1]
                for name, settings in order:
                    proxy.take()
                    ms, _ = hook_run(ctl, url_here, tree, settings)
                    n = proxy.take()
                    if rnd:
                        got[name]["bytes"].append(n)
                        got[name]["ms"].append(ms)
            results[link] = got
            print("%s done" % link, file=sys.stderr)
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        print("bench_wire: %s" % exc, file=sys.stderr)
        return 1
    finally:
        for proxy in proxies:
            proxy.shutdown()
            proxy.server_close()
        if server is not None:
            stop(server)
        shutil.rmtree(tmp, ignore_errors=True)

    print("bytes from the server per warm start of `import sympy` (%d modules from the server), "
          "%d measured runs per condition (after 1 warm-up), %s, %d CPUs" % (
              filled["hits"] + filled["compiles_asked"], args.runs,
              time.strftime("%Y-%m-%d %H:%M %Z"), os.cpu_count()))
    print("%-10s %-13s %-38s %-24s %s" % ("link", "condition", "bytes min / median / max",
                                           "ms min / med / max", "zstd/plain (medians)"))
    for link, got in results.items():
        for name, _ in CONDITIONS:
            g = got[name]
            ratio = ""
            if name.endswith("zstd"):
                plain = got[name.replace("zstd", "plain")]
                ratio = "bytes %.3f, time %.2f" % (
                    statistics.median(g["bytes"]) / statistics.median(plain["bytes"]),
                    statistics.median(g["ms"]) / statistics.median(plain["ms"]))
            print("%-10s %-13s %-38s %-24s %s" % (link, name, spread(g["bytes"], "%d"),
                                                  spread(g["ms"], "%.0f"), ratio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
