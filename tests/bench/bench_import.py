#!/usr/bin/python3
"""Benchmark: `import sympy` in fresh interpreters, with and without pycached.

Usage: /usr/bin/python3 tests/bench/bench_import.py [--runs N] [--fixed-runs N] [--fixed-only]
                                                     [--build DIR] [--python PATH]

--python PATH measures another interpreter (pyenv's 3.12, /usr/bin/pypy3): the children, tree B's
compileall and, when its magic is not the embedded CPython's, a --compiler PATH backend of the
server are that interpreter's (the hook must be built for it: meson option hook_pythons).

What it measures. Each run is one fresh `/usr/bin/python3 -s` process that puts a copy of Debian's
sympy and mpmath first on sys.path, imports sympy, computes sympy.factor(x**2 - 1) and prints the
time the import took inside the process (the main figure) and the answer; the parent also times
the whole process (perf_counter around subprocess.run: interpreter start, hook start, import,
the computation, exit). PYTHONDONTWRITEBYTECODE=1 keeps every run from writing pycs.

Conditions, all in one temporary directory and one run of this script:
  a   no pycs at all: tree A (a copy with every __pycache__ removed, made read-only), plain python
  b   local pycs: tree B (a copy compiled with `python3 -m compileall -q -j 2`), plain python
  c1  the hook, warm server, one request a module (PYCACHED_PROFILE=off),
      PYCACHED_VALIDATION=hash: tree A under `pycachectl exec`
  c2  the same with PYCACHED_VALIDATION=timestamp
  u1  c1 over a unix socket: a second server, the same options and its own store, on
      --listen unix:TMP/pycached.sock, PYCACHED_URL=unix:TMP/pycached.sock (issue 14); warmed by
      one unmeasured run of its own
  e1  the hook, warm server, the program's profile served as one bundle, hash validation
  e2  the same with timestamp validation
  d   the hook with the server down: PYCACHED_URL names a closed loopback port
and the hook's fixed cost, in a process that imports nothing from the cache (--fixed-runs
rounds, 40 by default, of processes that only start and exit; --fixed-only measures just these):
  f0  `python3 -c pass`, with an empty user site (PYTHONUSERBASE)
  f1  the same with the hook installed in the user site as `meson install` lays it out (the
      package, its pycs compiled as an installer does, and pycached.pth), PYCACHED_URL set to
      the running server
  f2  `pycachectl --server URL exec -- python3 -c pass` (the build tree's hook; its own pycs are
      compiled first, into build/client/hook/pycached/__pycache__)
Each f process is timed (wall, and its CPU time from wait4); a check run first proves the hook
active in f1 and f2, absent in f0, and libcurl not loaded. The aim is f1 - f0 <= 3 ms (medians).
The server (build/server/pycached, its own store in the temporary directory) is warmed by one
unmeasured hook run (which also records the profile); every measured c run must then get each
sympy/mpmath module as a hit, every e run each from the bundle (checked from pycached.stats()
printed by the child). Conditions are interleaved run by run, in
a rotating order, so drift affects all of them alike; the first round is a discarded warm-up.

Prints a table (median/min/max import time, median process time), the ratios against the aims
c/b <= 1.10, e/b <= 0.95 and d/a <= 1.02, the ratio u1/c1 (unix socket against TCP loopback,
no aim), and the server's HTTP requests per warm hook run (/v1/stats). Exit status: 0 whether or not the aims are met, 1 when any run
failed or gave a wrong answer, 2 on a setup error.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import start_server, stats, stop  # noqa: E402  (shared with the other benchmarks)

PYTHON = "/usr/bin/python3"
DIST = "/usr/lib/python3/dist-packages"
ANSWER = "(x - 1)*(x + 1)"
RUN_TIMEOUT = 120  # seconds for one child process
CONDITIONS = ("a", "b", "c1", "u1", "c2", "e1", "e2", "d")
LABELS = {"a": "a  no pycs (tree A)", "b": "b  local __pycache__ (tree B)",
          "c1": "c1 hook, warm server, hash", "c2": "c2 hook, warm server, timestamp",
          "u1": "u1 c1 over a unix socket",
          "e1": "e1 hook, warm bundle, hash", "e2": "e2 hook, warm bundle, timestamp",
          "d": "d  hook, server down"}

# The child: argv[1] is the tree. Prints one JSON line; `stats` is None when the hook is absent.
CHILD = r"""
import sys, time
tree = sys.argv[1]
sys.path.insert(0, tree)
t = time.perf_counter()
import sympy
elapsed = time.perf_counter() - t
x = sympy.Symbol("x")
answer = str(sympy.factor(x**2 - 1))
import json

hook = sys.modules.get("pycached")
modules = [n for n, m in list(sys.modules.items())
           if (getattr(m, "__file__", None) or "").startswith(tree + "/")]
print(json.dumps({"import": elapsed, "answer": answer, "file": sympy.__file__,
                  "modules": len(modules),
                  "stats": hook.stats() if hook and hook.is_active() else None}))
"""


def magic_of(python):
    return subprocess.run([python, "-I", "-S", "-c", "import importlib.util as u; "
                           "print(u.MAGIC_NUMBER.hex())"], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def set_python(python):
    global PYTHON
    PYTHON = python


def backend_args(python):
    """--compiler python unless the embedded CPython (the one of /usr/bin/python3) has its magic."""
    return [] if magic_of(python) == magic_of("/usr/bin/python3") else ["--compiler", python]


class RunFailed(Exception):
    pass


def sh(*argv):
    subprocess.run(argv, check=True, timeout=600, stdout=subprocess.DEVNULL)


def setup_trees(tmp):
    """Tree A: sympy and mpmath without any pyc, read-only. Tree B: the same, compiled."""
    tree_a, tree_b = os.path.join(tmp, "A"), os.path.join(tmp, "B")
    for tree in (tree_a, tree_b):
        os.mkdir(tree)
        for package in ("sympy", "mpmath"):
            shutil.copytree(os.path.join(DIST, package), os.path.join(tree, package),
                            ignore=shutil.ignore_patterns("__pycache__"))
    sh(PYTHON, "-m", "compileall", "-q", "-j", "2", tree_b)
    sh("chmod", "-R", "a-w", tree_a)
    return tree_a, tree_b


def server_requests(url):
    """The server's request counter (this request included)."""
    return stats(url)["requests"]


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "http://127.0.0.1:%d" % s.getsockname()[1]


def run_child(cond, argv, env, tree):
    """One measured process; returns (import seconds, wall seconds, parsed output)."""
    t = time.perf_counter()
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RunFailed("%s: timed out after %d s" % (cond, RUN_TIMEOUT))
    wall = time.perf_counter() - t
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        out = None
    if proc.returncode != 0 or out is None:
        raise RunFailed("%s: exit %d\n%s%s" % (cond, proc.returncode, proc.stdout,
                                               proc.stderr[-3000:]))
    if out["answer"] != ANSWER or not out["file"].startswith(tree + "/"):
        raise RunFailed("%s: wrong answer %r from %s" % (cond, out["answer"], out["file"]))
    return out["import"], wall, out


def check_hook(cond, out, warm):
    """The hook must be active; on a warm server every tree module must be a hit (c) or come
    from the bundle (e)."""
    stats = out["stats"]
    if stats is None:
        raise RunFailed("%s: the hook is not active" % cond)
    served = stats.get("bundle_hits", 0) if cond.startswith("e") else stats["hits"]
    if warm and (stats["fallbacks"] or stats["local_compile"] or stats["compiles_asked"]
                 or served < out["modules"]):
        raise RunFailed("%s: not every module was a hit: %d modules, stats %s"
                        % (cond, out["modules"], stats))
    if not warm and stats["hits"]:
        raise RunFailed("%s: hits with the server down: %s" % (cond, stats))


FIXED = ("f0", "f1", "f2")
FIXED_LABELS = {"f0": "f0 python3 -c pass", "f1": "f1 the same, hook from the .pth, server up",
                "f2": "f2 pycachectl exec -- python3 -c pass"}
FIXED_AIM_MS = 3.0  # f1 - f0, medians of the wall time
# The check run of each f condition: whether the hook is active, whether libcurl is mapped.
FIXED_CHECK = ("import sys; p = sys.modules.get('pycached'); "
               "print(bool(p and p.is_active()), 'libcurl' in open('/proc/self/maps').read())")


def user_site(base, env):
    """The user site directory PYTHON uses with PYTHONUSERBASE=base (created)."""
    path = subprocess.run([PYTHON, "-c", "import site; print(site.getusersitepackages())"],
                          env=dict(env, PYTHONUSERBASE=base), capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()
    os.makedirs(path)
    return path


def fixed_plans(tmp, build, root, ctl, url, env):
    """The f conditions: (argv, env) each; installs the hook into a user site of tmp."""
    empty, hooked = os.path.join(tmp, "user-empty"), os.path.join(tmp, "user-hook")
    user_site(empty, env)
    site = user_site(hooked, env)
    package = os.path.join(build, "client", "hook", "pycached")
    shutil.copytree(package, os.path.join(site, "pycached"),
                    ignore=shutil.ignore_patterns("*.p", "__pycache__"))
    shutil.copy(os.path.join(root, "client", "hook", "pycached.pth"), site)
    sh(PYTHON, "-m", "compileall", "-q", os.path.join(site, "pycached"), package)
    child = [PYTHON, "-c", "pass"]
    return {"f0": (child, dict(env, PYTHONUSERBASE=empty)),
            "f1": (child, dict(env, PYTHONUSERBASE=hooked, PYCACHED_URL=url)),
            "f2": ([ctl, "--server", url, "exec", "--"] + child, dict(env, PYTHONUSERBASE=empty))}


def measure_fixed(plans, runs):
    """Rounds of one process per f condition, rotating; returns {cond: [(wall ms, cpu ms)]}."""
    for cond, (argv, env) in plans.items():
        check = argv[:-1] + [FIXED_CHECK]
        out = subprocess.run(check, env=env, capture_output=True, text=True, timeout=60)
        want = "%s False" % (cond != "f0")
        if out.returncode != 0 or out.stdout.strip() != want:
            raise RunFailed("%s: the check printed %r, not %r (exit %d)\n%s" % (
                cond, out.stdout.strip(), want, out.returncode, out.stderr[-2000:]))
    results = {c: [] for c in FIXED}
    for rnd in range(runs + 1):  # round 0 is the discarded warm-up
        k = rnd % len(FIXED)
        for cond in FIXED[k:] + FIXED[:k]:
            argv, env = plans[cond]
            t = time.perf_counter()
            pid = os.spawnve(os.P_NOWAIT, argv[0], argv, env)
            _, status, usage = os.wait4(pid, 0)
            wall = time.perf_counter() - t
            if status != 0:
                raise RunFailed("%s: exit status %d" % (cond, status))
            if rnd:
                results[cond].append((wall * 1000, (usage.ru_utime + usage.ru_stime) * 1000))
    return results


def report_fixed(results, runs):
    print("the hook's fixed cost with %s, %d measured runs per condition (after 1 warm-up), %s, "
          "%d CPUs" % (PYTHON, runs, time.strftime("%Y-%m-%d %H:%M %Z"), os.cpu_count()))
    print("%-44s %9s %9s %9s %9s %9s" % ("condition (ms)", "wall med", "wall min", "wall max",
                                         "cpu med", "over f0"))
    med = {c: statistics.median(w for w, _ in r) for c, r in results.items()}
    for c in FIXED:
        walls = [w for w, _ in results[c]]
        print("%-44s %9.2f %9.2f %9.2f %9.2f %+9.2f" % (
            FIXED_LABELS[c], med[c], min(walls), max(walls),
            statistics.median(u for _, u in results[c]), med[c] - med["f0"]))
    over = med["f1"] - med["f0"]
    print("fixed cost of the .pth hook (f1 - f0): %.2f ms, aim <= %.1f ms: %s; "
          "f1/f0 %.2f, f2/f0 %.2f" % (over, FIXED_AIM_MS,
                                      "met" if over <= FIXED_AIM_MS else "MISSED",
                                      med["f1"] / med["f0"], med["f2"] / med["f0"]))


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="measured runs per condition")
    parser.add_argument("--fixed-runs", type=int, default=40,
                        help="measured runs per fixed-cost condition (f0, f1, f2)")
    parser.add_argument("--fixed-only", action="store_true",
                        help="measure the hook's fixed cost only (no sympy)")
    parser.add_argument("--build", default=os.path.join(root, "build"), help="build directory")
    parser.add_argument("--python", default=PYTHON, help="interpreter measured (default %s)"
                        % PYTHON)
    args = parser.parse_args()
    set_python(args.python)
    if args.runs < 1 or args.fixed_runs < 1:
        parser.error("--runs and --fixed-runs must be at least 1")
    build = os.path.abspath(args.build)
    ctl = os.path.join(build, "client", "pycachectl")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYCACHED_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    tmp = tempfile.mkdtemp(prefix="pycached-bench-")
    server = unix_server = None
    fixed = None
    try:
        server, url = start_server(build, os.path.join(tmp, "store"), os.path.join(tmp, "server"),
                                   *backend_args(args.python))
        fixed = measure_fixed(fixed_plans(tmp, build, root, ctl, url, env), args.fixed_runs)
        if args.fixed_only:
            report_fixed(fixed, args.fixed_runs)
            return 0
        tree_a, tree_b = setup_trees(tmp)
        unix_server, unix_url = start_server(
            build, os.path.join(tmp, "store-unix"), os.path.join(tmp, "server-unix"),
            "--listen", "unix:" + os.path.join(tmp, "pycached.sock"), *backend_args(args.python))
        down = closed_port_url()
        child = [PYTHON, "-s", "-c", CHILD]
        plans = {  # condition: (argv, env, tree)
            "a": (child + [tree_a], env, tree_a),
            "b": (child + [tree_b], env, tree_b),
            "c1": ([ctl, "--server", url, "exec", "--"] + child + [tree_a],
                   dict(env, PYCACHED_VALIDATION="hash", PYCACHED_PROFILE="off"), tree_a),
            "u1": ([ctl, "--server", unix_url, "exec", "--"] + child + [tree_a],
                   dict(env, PYCACHED_VALIDATION="hash", PYCACHED_PROFILE="off"), tree_a),
            "c2": ([ctl, "--server", url, "exec", "--"] + child + [tree_a],
                   dict(env, PYCACHED_VALIDATION="timestamp", PYCACHED_PROFILE="off"), tree_a),
            "e1": ([ctl, "--server", url, "exec", "--"] + child + [tree_a],
                   dict(env, PYCACHED_VALIDATION="hash", PYCACHED_PROFILE="bench"), tree_a),
            "e2": ([ctl, "--server", url, "exec", "--"] + child + [tree_a],
                   dict(env, PYCACHED_VALIDATION="timestamp", PYCACHED_PROFILE="bench"), tree_a),
            "d": ([ctl, "--server", down, "exec", "--"] + child + [tree_a], env, tree_a),
        }
        _, _, out = run_child("warm", *plans["e1"])  # fills the store, records the profile
        check_hook("warm", out, warm=False)
        _, _, out = run_child("warm-unix", *plans["u1"])  # fills the unix server's store
        check_hook("warm-unix", out, warm=False)
        modules = out["modules"]  # every run must import the same tree modules
        results = {c: [] for c in CONDITIONS}
        before = server_requests(url)
        for rnd in range(args.runs + 1):  # round 0 is the discarded warm-up
            k = rnd % len(CONDITIONS)
            order = CONDITIONS[k:] + CONDITIONS[:k]
            for cond in order:
                imp, wall, out = run_child(cond, *plans[cond])
                if out["modules"] != modules:
                    raise RunFailed("%s: %d tree modules, not %d" % (cond, out["modules"], modules))
                if cond not in ("a", "b"):
                    check_hook(cond, out, warm=cond != "d")
                if rnd:
                    results[cond].append((imp, wall))
            print("round %d/%d done" % (rnd, args.runs), file=sys.stderr)
        per_run = (server_requests(url) - before - 1) / (4 * (args.runs + 1))
    except RunFailed as exc:
        print("bench_import: run failed: %s" % exc, file=sys.stderr)
        return 1
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print("bench_import: setup failed: %s" % exc, file=sys.stderr)
        return 2
    finally:
        for proc in (server, unix_server):
            if proc is not None:
                stop(proc)
        subprocess.run(["chmod", "-R", "u+w", tmp], timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)

    report(results, args.runs)
    print()
    report_fixed(fixed, args.fixed_runs)
    print("\nwarm hook runs (c and e): %d tree modules imported, %.0f HTTP requests per run "
          "on average (c: one a module; e: one bundle)" % (modules, per_run))
    return 0


def report(results, runs):
    med = {c: (statistics.median(i for i, _ in r), statistics.median(w for _, w in r))
           for c, r in results.items()}
    print("import sympy with %s, %d measured runs per condition (after 1 warm-up), %s, %d CPUs"
          % (PYTHON, runs, time.strftime("%Y-%m-%d %H:%M %Z"), os.cpu_count()))
    print("%-32s %11s %11s %11s %11s" % ("condition", "import med", "process med",
                                          "import min", "import max"))
    for c in CONDITIONS:
        imports = [i for i, _ in results[c]]
        print("%-32s %11.3f %11.3f %11.3f %11.3f" % (LABELS[c], med[c][0], med[c][1],
                                                      min(imports), max(imports)))
    print("\n%-8s %8s %8s   %s" % ("ratio", "import", "process", "aim (on import time)"))
    for num, den, aim in (("c1", "b", 1.10), ("c2", "b", 1.10), ("e1", "b", 0.95),
                          ("e2", "b", 0.95), ("a", "c1", None), ("a", "e1", None),
                          ("d", "a", 1.02), ("u1", "c1", None)):
        r_imp, r_wall = med[num][0] / med[den][0], med[num][1] / med[den][1]
        verdict = ("<= %.2f: %s" % (aim, "met" if r_imp <= aim else "MISSED")) if aim else "-"
        print("%-8s %8.2f %8.2f   %s" % (num + "/" + den, r_imp, r_wall, verdict))


if __name__ == "__main__":
    sys.exit(main())
