#!/usr/bin/python3
"""Benchmark: what the upstream tier (--upstream, issue 15) costs and saves per compile.

Usage: /usr/bin/python3 tests/bench/bench_tiers.py [--build DIR] [--modules N] [--lines N]

What it measures. N (--modules, default 200) generated modules of --lines functions each
(default 150: about 300 lines) are compiled one request after the other (POST /v1/compile,
the source uploaded) through: a pycached on a unix socket without an upstream (the baseline:
compiled here); node A on a unix socket with --upstream http://central (every module compiled
on the central and stored on A); node B with the same upstream (every module stored on the
central already); node B again (its own store: "stored"); lookups on A (GET /v1/code, local
hits); and node C, whose upstream is down (new modules: compiled at C, the upstream skipped).
All on loopback, the servers started here (the harness of tests/e2e/test_e2e.py) and stopped
by pid.

Reports, per condition: the median, p95 and largest request time, the compiles counted (the
node's, and the central's), and the node's upstream hits, errors and skipped. Exit status 0
when every request answered 200, 1 otherwise.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build")
    parser.add_argument("--modules", type=int, default=200)
    parser.add_argument("--lines", type=int, default=150)
    args = parser.parse_args()
    os.environ["PCC_PYCACHED"] = os.path.join(args.build, "server", "pycached")
    import test_e2e  # noqa: E402,F401  (reads PCC_PYCACHED)
    from test_e2e import Server, query, source_params  # noqa: E402

    tmp = tempfile.mkdtemp(prefix="pcc-bench-tiers-")
    os.chmod(tmp, 0o755)
    servers, ok = [], True

    def server(name, *extra, unix=True):
        workdir = os.path.join(tmp, name)
        os.makedirs(workdir)
        os.chmod(workdir, 0o755)
        listen = ("--listen", "unix:" + os.path.join(workdir, "s.sock")) if unix else ()
        started = Server(workdir, "--workers", "2", *listen, *extra,
                         port_args=() if unix else ("--port", "0"))
        servers.append(started)
        return started

    def modules(prefix):
        paths = []
        for i in range(args.modules):
            path = os.path.join(tmp, "src", "%s%04d.py" % (prefix, i))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write("".join("def %s%d_%d(x):\n    return x * %d + %d\n" % (prefix, i, j, j, i)
                                for j in range(args.lines)))
            paths.append(path)
        return paths

    def run(label, target, paths, central=None, lookup=False):
        nonlocal ok
        times = []
        for path in paths:
            with open(path, "rb") as f:
                body = f.read()
            started = time.monotonic()
            if lookup:
                status, _, _ = target.request("GET", "/v1/code?" + query(source_params(path)))
            else:
                status, _, _ = target.request("POST", "/v1/compile?" + query(
                    source_params(path, with_hash=False)), body)
            times.append(time.monotonic() - started)
            ok = ok and status == 200
        times.sort()
        stats = target.stats()
        extra = ""
        if central is not None:
            extra += ", central compiles %d" % central.stats()["compiles"]
        if "upstream" in stats:
            extra += "".join(", %s %d" % (k, stats["upstream"][k])
                             for k in ("hits", "errors", "skipped"))
        print("%-36s median %6.2f ms  p95 %6.2f ms  max %7.2f ms  compiles %d%s" % (
            label, statistics.median(times) * 1e3, times[int(len(times) * 0.95) - 1] * 1e3,
            times[-1] * 1e3, stats["compiles"], extra))

    try:
        first, second = modules("m"), modules("n")
        run("no upstream: compiled here", server("plain"), first)
        central = server("central", unix=False)
        a = server("a", "--upstream", central.url)
        b = server("b", "--upstream", central.url)
        run("node A: compiled on the central", a, first, central)
        run("node B: stored on the central", b, first, central)
        run("node B again: its own store", b, first, central)
        run("node A lookups: local hits", a, first, central, lookup=True)
        run("node C: upstream down", server("c", "--upstream", "http://127.0.0.1:1"), second)
    finally:
        for started in servers:
            started.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
