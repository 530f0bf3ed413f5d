#!/usr/bin/python3
"""Benchmark: the sympy bundle fetched plain or compressed with zstd, on loopback and through a
link of a given rate.

Usage: /usr/bin/python3 tests/bench/bench_bundle_zstd.py [--runs N] [--rates MBPS,...] [--build DIR]

What it measures. The server (build/server/pycached, its own store in a temporary directory)
gets the import profile of `import sympy` (a copy of Debian's sympy and mpmath without pycs) from
one unmeasured hook run. Then each run is one fresh /usr/bin/python3 that configures
pycached._native and times one _native.fetch_bundle (the request, the transfer, zstd's
decompression when asked for, the checks of every entry): `plain` without, `zstd` with
bundle_zstd (Accept-Encoding: zstd). Both conditions alternate run by run; the first round is a
discarded warm-up (the server compresses the bundle once, at the first zstd request: that time
is printed apart). Each rate in --rates (MB/s, default 12.5 and 125: 100 Mbit/s and 1 Gbit/s)
is a link simulated by a proxy on loopback that sends the server's bytes no faster than that;
"loopback" is the server itself.

Also printed: the sizes of both forms, zstd's decompression speed on this machine (`zstd -b`
at the server's level, 3), and the link rate below which zstd pays, from the figures of this run:
B* = D * (1 - Sz/S) (D decompression speed, Sz and S the compressed and plain sizes): zstd saves
(S - Sz)/B of transfer and costs S/D of decompression; and the same from what zstd costs the
client on loopback (the difference of the medians, decompression and its buffer included):
B* = (S - Sz) / cost.

Exit status: 0 (whatever the figures), 1 when a run failed, 2 on a setup error.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import LinkProxy, start_server, stop  # noqa: E402

PYTHON = "/usr/bin/python3"
DIST = "/usr/lib/python3/dist-packages"
PROFILE = "bench-zstd"
RUN_TIMEOUT = 120

# The child: argv: hook root, url, "1" for zstd. Prints milliseconds and the entry count.
CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from importlib import _bootstrap_external
from pycached import _native
_native.configure(sys.argv[2], _bootstrap_external.MAGIC_NUMBER, 10000, 60000, False, True, 30.0,
                  1 << 24, bundle_zstd=sys.argv[3] == "1")
t = time.perf_counter()
entries, reason, skipped = _native.fetch_bundle(sys.argv[4], 0)
elapsed = time.perf_counter() - t
if entries is None or skipped:
    sys.exit("fetch_bundle: %s, %s skipped" % (reason, skipped))
print("%.3f %d" % (elapsed * 1000, len(entries)))
"""


def fetch_child(hook_root, url, zstd):
    out = subprocess.run([PYTHON, "-s", "-c", CHILD, hook_root, url, "1" if zstd else "0",
                          PROFILE], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if out.returncode != 0:
        raise RuntimeError("fetch child: %s" % out.stderr.strip()[-2000:])
    ms, entries = out.stdout.split()
    return float(ms), int(entries)


def size_of(url, zstd):
    request = urllib.request.Request(url + "/v1/bundle?magic=%s&opt=0&profile=%s" % (
        magic(), PROFILE), headers={"Accept-Encoding": "zstd"} if zstd else {})
    t = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        data = response.read()
        encoding = response.headers.get("Content-Encoding")
    if (encoding == "zstd") != zstd:
        raise RuntimeError("asked %s, got Content-Encoding %s" % ("zstd" if zstd else "plain",
                                                                  encoding))
    return len(data), time.perf_counter() - t, data


def magic():
    return subprocess.run([PYTHON, "-I", "-S", "-c", "import importlib.util as u; "
                           "print(u.MAGIC_NUMBER.hex())"], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def zstd_speed(path):
    """zstd's decompression speed (MB/s) of the file at level 3, from `zstd -b3`."""
    out = subprocess.run(["zstd", "-b3", "-i3", path], capture_output=True, text=True,
                         timeout=300)
    speeds = re.findall(r"([\d.]+) MB/s", (out.stdout + out.stderr).replace("\r", "\n"))
    if len(speeds) < 2:
        raise RuntimeError("zstd -b3 printed no speeds: %r" % (out.stdout + out.stderr))
    return float(speeds[-1])


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="measured runs per condition")
    parser.add_argument("--rates", default="12.5,125", help="link rates in MB/s, comma-separated")
    parser.add_argument("--build", default=os.path.join(root, "build"), help="build directory")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    rates = [float(r) for r in args.rates.split(",") if r]
    build = os.path.abspath(args.build)
    hook_root = os.path.join(build, "client", "hook")
    ctl = os.path.join(build, "client", "pycachectl")
    tmp = tempfile.mkdtemp(prefix="pycached-zstd-")
    server, proxies = None, []
    try:
        tree = os.path.join(tmp, "A")
        for package in ("sympy", "mpmath"):
            shutil.copytree(os.path.join(DIST, package), os.path.join(tree, package),
                            ignore=shutil.ignore_patterns("__pycache__"))
        server, url = start_server(build, os.path.join(tmp, "store"), os.path.join(tmp, "server"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYCACHED_"))}
        env.update(PYTHONDONTWRITEBYTECODE="1", PYCACHED_PROFILE=PROFILE)
        subprocess.run([ctl, "--server", url, "exec", "--", PYTHON, "-s", "-c",
                        "import sys; sys.path.insert(0, %r); import sympy" % tree],
                       env=env, check=True, timeout=600)
        plain_len, _, plain = size_of(url, False)
        zstd_len, first_zstd, _ = size_of(url, True)  # compresses, once
        _, again_zstd, _ = size_of(url, True)
        bundle_path = os.path.join(tmp, "bundle")
        with open(bundle_path, "wb") as f:
            f.write(plain)
        links = [("loopback", url)]
        for rate in rates:
            proxy = LinkProxy(server_port(url), rate * 1e6)
            threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True).start()
            proxies.append(proxy)
            links.append(("%g MB/s" % rate, "http://127.0.0.1:%d" % proxy.server_address[1]))
        results = {}
        for name, link in links:
            times = {False: [], True: []}
            for rnd in range(args.runs + 1):
                for zstd in ((False, True) if rnd % 2 else (True, False)):
                    ms, entries = fetch_child(hook_root, link, zstd)
                    if rnd:
                        times[zstd].append(ms)
            results[name] = times
            print("%s done" % name, file=sys.stderr)
        speed = zstd_speed(bundle_path)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print("bench_bundle_zstd: %s" % exc, file=sys.stderr)
        return 1
    finally:
        for proxy in proxies:
            proxy.shutdown()
            proxy.server_close()
        if server is not None:
            stop(server)
        shutil.rmtree(tmp, ignore_errors=True)

    print("the sympy bundle (%d entries) plain and with zstd, %d measured runs per condition "
          "(after 1 warm-up), %s, %d CPUs" % (entries, args.runs,
                                              time.strftime("%Y-%m-%d %H:%M %Z"), os.cpu_count()))
    print("sizes: plain %.2f MB, zstd %.2f MB (%.2fx); the server compressed it in %.0f ms "
          "(first zstd request %.0f ms, then %.0f ms)" % (
              plain_len / 1e6, zstd_len / 1e6, plain_len / zstd_len,
              (first_zstd - again_zstd) * 1000, first_zstd * 1000, again_zstd * 1000))
    print("%-12s %-6s %9s %9s %9s   %s" % ("link", "form", "med ms", "min ms", "max ms",
                                          "zstd/plain (medians)"))
    for name, times in results.items():
        for zstd in (False, True):
            v = times[zstd]
            ratio = statistics.median(times[True]) / statistics.median(times[False])
            print("%-12s %-6s %9.1f %9.1f %9.1f   %s" % (
                name, "zstd" if zstd else "plain", statistics.median(v), min(v), max(v),
                "%.2f" % ratio if zstd else ""))
    crossover = speed * (1 - zstd_len / plain_len)
    print("zstd -b3 decompression on this machine: %.0f MB/s; zstd pays on links slower than "
          "B* = %.0f MB/s (%.1f Gbit/s)" % (speed, crossover, crossover * 8 / 1000))
    loop = results["loopback"]
    cost = statistics.median(loop[True]) - statistics.median(loop[False])
    if cost > 0:
        print("from the loopback medians: zstd costs the client %.1f ms more; it saves that on "
              "links slower than %.0f MB/s ((S - Sz) / cost)" % (
                  cost, (plain_len - zstd_len) / 1e6 / (cost / 1000)))
    return 0


def server_port(url):
    return int(url.rsplit(":", 1)[1])


if __name__ == "__main__":
    sys.exit(main())
