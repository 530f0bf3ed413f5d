#!/usr/bin/python3
"""Benchmark: what the shared tier on Redis (--shared, issue 15) costs and saves per compile.

Usage: /usr/bin/python3 tests/bench/bench_shared.py [--build DIR] [--modules N] [--lines N]

What it measures. N (--modules, default 200) generated modules of --lines functions each
(default 150: about 300 lines) are compiled one request after the other (POST /v1/compile,
the source uploaded) through: one pycached without --shared (the baseline); replica A with
--shared over two redis-servers (every module a miss of the tier, compiled and stored there);
replica B on the same list (every module a shared hit); B again after one Redis is killed (new
modules: the dead server skipped); and replica C on a listener that accepts and never answers
(--shared-timeout 100). All on loopback, redis-server and the replicas started here (the
classes of tests/e2e/test_shared.py) and stopped by pid.

Reports, per condition: the median, p95 and largest request time, the compiles counted, and for
the failure conditions the shared tier's errors and skipped commands. Exit status 0 when every
request answered 200, 1 otherwise.
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
    import test_e2e  # noqa: E402  (reads PCC_PYCACHED)
    from test_e2e import Server, query, source_params  # noqa: E402
    from test_shared import Redis, Silent  # noqa: E402

    tmp = tempfile.mkdtemp(prefix="pcc-bench-shared-")
    os.chmod(tmp, 0o755)
    servers, redises, silent, ok = [], [], None, True

    def server(name, *extra):
        workdir = os.path.join(tmp, name)
        os.makedirs(workdir)
        os.chmod(workdir, 0o755)
        started = Server(workdir, "--workers", "2", *extra)
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

    def run(label, target, paths, figures=()):
        nonlocal ok
        times = []
        for path in paths:
            with open(path, "rb") as f:
                body = f.read()
            started = time.monotonic()
            status, _, _ = target.request("POST", "/v1/compile?" + query(
                source_params(path, with_hash=False)), body)
            times.append(time.monotonic() - started)
            ok = ok and status == 200
        times.sort()
        stats = target.stats()
        extra = "".join(", %s %d" % (k, stats["shared"][k]) for k in figures)
        print("%-34s median %6.2f ms  p95 %6.2f ms  max %7.2f ms  compiles %d%s" % (
            label, statistics.median(times) * 1e3, times[int(len(times) * 0.95) - 1] * 1e3,
            times[-1] * 1e3, stats["compiles"], extra))

    try:
        redises = [Redis(tmp), Redis(tmp)]
        urls = ",".join(r.url for r in redises)
        first, second = modules("m"), modules("n")
        run("without --shared", server("plain"), first)
        a, b = server("a", "--shared", urls), server("b", "--shared", urls)
        run("replica A: tier misses, stored", a, first)
        run("replica B: shared hits", b, first)
        redises[0].proc.kill()
        redises[0].proc.wait(10)
        run("replica B: one Redis killed", b, second, ("errors", "skipped"))
        silent = Silent()
        run("replica C: a Redis never answers", server("c", "--shared", silent.url,
                                                       "--shared-timeout", "100"),
            second, ("errors", "skipped"))
    finally:
        for started in servers:
            started.stop()
        for redis in redises:
            redis.stop()
        if silent is not None:
            silent.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
