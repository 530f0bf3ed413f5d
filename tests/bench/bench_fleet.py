#!/usr/bin/python3
"""Benchmark: a wave of 4 hook clients on the issue-15 fleet, against two anchors in the same run.

Usage: /usr/bin/python3 tests/bench/bench_fleet.py [--build DIR] [--runs N]

The fleet is the fleet_scale suite's (tests/e2e/test_fleet_scale.py, LoopbackFleet), on
loopback: 2 redis-servers, 3 replicas with --shared behind HAProxy (deploy/haproxy/pycached.cfg),
4 node-local daemons on unix sockets with --upstream HAProxy. Every condition is one wave: 4
client processes at once (/usr/bin/python3 -c SYMPY_SCRIPT of tests/e2e/test_hook.py: import
sympy from a sympy + mpmath tree, compute factor(x**2 - 1) and integrate(x**2, (x, 0, 3))),
timed from the first start to the last exit:

  local-pyc        anchor 1: no hook; each process on a writable copy of its own whose
                   __pycache__ was filled beforehand (compileall): what a host with pycs pays
  no-pyc           anchor 2: no hook, the read-only pyc-free tree, PYTHONDONTWRITEBYTECODE=1:
                   every module compiled in every process (what the cache replaces)
  fleet-warm       the hook, client i on node i's socket, the tree fetched before: every module
                   a hit of the node (checked: the replicas' counters and the nodes' upstream
                   hits do not move)
  fleet-cold-node  the same tree after POST /v1/admin/purge on every node (untimed): each node
                   misses, sends each compile through HAProxy, and the replica that owns the path
                   answers it from its store (checked: no compile anywhere)
  fleet-new-path   a fresh copy of the same bytes at a new path (a reinstall), the nodes warm:
                   the blobs are keyed by the source's SHA-256, so each node answers the
                   compile `stored` itself (checked: no upstream hit, no compile); the path is new
                   to the nodes only, and nothing crosses HAProxy
  fleet-cold       a fresh copy with `# bench_fleet ROUND` appended to every .py: new bytes,
                   so new digests, never seen by any tier: compiled once on the replicas
                   (checked: the replicas count at least one compile a module)

Rounds alternate the conditions in a rotating order; round 0 is a discarded warm-up. The copies
and purges are made before a condition's wave, untimed. A run in which a client fails, computes
another answer, imports another number of modules, reports a fallback (the hook's `fallbacks`
or a local compile), or is served by another tier than its condition names is an error: printed,
not timed. Prints the header (date, CPUs, load average before and after), per condition
min/median/max seconds and the fleet's counters per run, and each fleet condition's median over
both anchors' medians. Exit status 0 when every run passed, 1 when one failed, 2 on a setup
error. Every process is stopped by pid in a finally; every wait is bounded (a client: 300 s).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

ANCHORS = ("local-pyc", "no-pyc")
FLEET = ("fleet-warm", "fleet-cold-node", "fleet-new-path", "fleet-cold")
CONDITIONS = ANCHORS + FLEET
# The anchors run SYMPY_SCRIPT without the hook: `pycached` is a stand-in whose stats() is None,
# unless the hook is there after all (then its stats are not None, and the run is an error).
NO_HOOK = ("import sys, types\n"
           "sys.modules.setdefault('pycached', types.SimpleNamespace(stats=lambda: None))\n")


class RunFailed(Exception):
    """A run did not measure what its condition names."""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"), help="build directory")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per condition")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    build = os.path.abspath(args.build)
    os.environ["PCC_PYCACHED"] = os.path.join(build, "server", "pycached")
    os.environ["PCC_PYCACHECTL"] = os.path.join(build, "client", "pycachectl")
    os.environ["PCC_HOOK_ROOT"] = os.path.join(build, "client", "hook")
    import test_fleet_scale as fs  # noqa: E402  (test_e2e reads PCC_* at import)

    load_before = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="pcc-bench-fleet-")
    os.chmod(tmp, 0o755)
    fleet, failures = None, 0
    results = {c: [] for c in CONDITIONS}
    counters = {c: [] for c in CONDITIONS}
    try:
        fleet = fs.LoopbackFleet(tmp)
        tree = fs.copy_tree(os.path.join(tmp, "tree"))
        local = []
        for i in range(fs.WAVE):
            copy = fs.copy_tree(os.path.join(tmp, "local%d" % i), writable=True)
            subprocess.run([fs.PYTHON, "-m", "compileall", "-q", "-j", "2", copy], check=True,
                           timeout=900, stdout=subprocess.DEVNULL)
            local.append(copy)
        finished, seconds = fleet.wave(tree)  # the fleet fetches the tree once: untimed
        modules, _ = check(finished, None, hooked=True)
        print("setup: %d modules from the tree, first wave %.2f s (untimed)" % (modules, seconds),
              file=sys.stderr)

        def prepare(cond, rnd):
            """The wave's commands, after the untimed preparation of cond."""
            if cond == "local-pyc":
                env = {k: v for k, v in fs.client_env().items()
                       if k != "PYTHONDONTWRITEBYTECODE"}
                return [([fs.PYTHON, "-c", "TREE = %r\n%s%s" % (local[i], NO_HOOK,
                                                                  fs.SYMPY_SCRIPT)], env)
                        for i in range(fs.WAVE)]
            if cond == "no-pyc":
                return [([fs.PYTHON, "-c", "TREE = %r\n%s%s" % (tree, NO_HOOK, fs.SYMPY_SCRIPT)],
                         fs.client_env()) for _ in range(fs.WAVE)]
            path = tree
            if cond == "fleet-cold-node":
                for node in fleet.nodes:
                    status = node.request("POST", "/v1/admin/purge")[0]
                    if status != 200:
                        raise RuntimeError("purge answered %d" % status)
            elif cond == "fleet-new-path":
                path = fs.copy_tree(os.path.join(tmp, "new-path%d" % rnd))
            elif cond == "fleet-cold":
                path = fs.copy_tree(os.path.join(tmp, "cold%d" % rnd),
                                    comment="bench_fleet round %d" % rnd)
            return [fleet.hook_command(i, path) for i in range(fs.WAVE)]

        for rnd in range(args.runs + 1):  # round 0 is the discarded warm-up
            k = rnd % len(CONDITIONS)
            for cond in CONDITIONS[k:] + CONDITIONS[:k]:
                commands = prepare(cond, rnd)
                before = figures(fleet)
                try:
                    finished, seconds = fs.run_at_once(commands)
                    delta = {k2: v - before[k2] for k2, v in figures(fleet).items()}
                    _, stats = check(finished, modules, hooked=cond in FLEET)
                    check_tier(cond, stats, delta, modules)
                except (RunFailed, subprocess.TimeoutExpired) as exc:
                    failures += 1
                    print("bench_fleet: round %d, %s: run failed, not timed: %s"
                          % (rnd, cond, exc), file=sys.stderr)
                    continue
                if rnd:
                    results[cond].append(seconds)
                    counters[cond].append(delta)
            for name in ("new-path%d" % rnd, "cold%d" % rnd):
                remove(os.path.join(tmp, name))
            print("round %d/%d done" % (rnd, args.runs), file=sys.stderr)
    except (OSError, RuntimeError, subprocess.SubprocessError, RunFailed) as exc:
        print("bench_fleet: setup failed: %s" % exc, file=sys.stderr)
        return 2
    finally:
        if fleet is not None:
            fleet.stop()
        remove(tmp)
    report(results, counters, args.runs, load_before, os.getloadavg())
    return 1 if failures else 0


def figures(fleet):
    """The fleet's counters that say which tier served: summed over the nodes and replicas."""
    nodes = [n.stats() for n in fleet.nodes]
    replicas = [r.stats() for r in fleet.live_replicas().values()]
    return {"node_upstream_hits": sum(s["upstream"]["hits"] for s in nodes),
            "node_compiles": sum(s["compiles"] for s in nodes),
            "replica_compiles": sum(s["compiles"] for s in replicas),
            "replica_shared_hits": sum(s["shared"]["hits"] for s in replicas)}


def check(finished, modules, hooked):
    """Every client exited 0 with the right answer, imported `modules` modules from its tree
    (the first client's number when None) and, when hooked, ran the hook with no fallback and
    no local compile; without the hook, ran without it. Returns (the number of modules, the
    hook's stats of each client: None without it)."""
    outs = []
    for i, (returncode, out, err) in enumerate(finished):
        if returncode != 0:
            raise RunFailed("client %d: exit %d\n%s" % (i, returncode, err[-3000:]))
        try:
            result = json.loads(out)
        except ValueError:
            raise RunFailed("client %d printed %r" % (i, out[-500:]))
        outs.append(result)
    import test_fleet_scale as fs
    count = len(outs[0]["from_tree"])
    for i, result in enumerate(outs):
        if result["answer"] != fs.ANSWER:
            raise RunFailed("client %d: the answer %r" % (i, result["answer"]))
        if len(result["from_tree"]) != (modules or count):
            raise RunFailed("client %d: %d modules from the tree, not %d"
                            % (i, len(result["from_tree"]), modules or count))
        stats = result["stats"]
        if not hooked and stats is not None:
            raise RunFailed("client %d: the hook is active in an anchor" % i)
        if hooked and stats is None:
            raise RunFailed("client %d: the hook is not active" % i)
        if hooked and (stats["fallbacks"] or stats["local_compile"]):
            raise RunFailed("client %d: a fallback: %s" % (i, stats))
    return count, [r["stats"] for r in outs]


def check_tier(cond, stats, delta, modules):
    """The tier that served the wave is the one cond names (figures' deltas over the wave)."""
    want = {  # counter: (least, most) over the wave; None: no bound
        "fleet-warm": {"node_upstream_hits": (0, 0), "node_compiles": (0, 0),
                       "replica_compiles": (0, 0)},
        "fleet-cold-node": {"node_upstream_hits": (modules, None), "node_compiles": (0, 0),
                            "replica_compiles": (0, 0), "replica_shared_hits": (0, 0)},
        "fleet-new-path": {"node_upstream_hits": (0, 0), "node_compiles": (0, 0),
                           "replica_compiles": (0, 0)},
        "fleet-cold": {"node_compiles": (0, 0), "replica_compiles": (modules, None)},
    }.get(cond, {})
    for name, (least, most) in want.items():
        if delta[name] < least or (most is not None and delta[name] > most):
            raise RunFailed("%s counted %d, not %s" % (
                name, delta[name], least if least == most else "%d or more" % least))
    if cond == "fleet-warm":
        for s in stats:
            if s["hits"] != modules:
                raise RunFailed("%d hits of the node, not %d" % (s["hits"], modules))


def remove(path):
    if os.path.exists(path):
        subprocess.run(["chmod", "-R", "u+w", path], timeout=300)
        shutil.rmtree(path, ignore_errors=True)


def report(results, counters, runs, load_before, load_after):
    import test_fleet_scale as fs
    print("a wave of %d clients at once on the fleet (2 Redis, 3 replicas, HAProxy, %d nodes) "
          "with %s, %d measured runs per condition (after 1 warm-up), %s, %d CPUs, load average "
          "%.2f before, %.2f after" % (fs.WAVE, fs.NODES, fs.PYTHON, runs,
                                       time.strftime("%Y-%m-%d %H:%M %Z"), os.cpu_count(),
                                       load_before[0], load_after[0]))
    print("%-16s %4s %8s %8s %8s   %s" % ("condition", "runs", "min s", "median s", "max s",
                                         "per run (medians): node upstream hits, node compiles, "
                                         "replica compiles, replica shared hits"))
    med = {}
    for c in CONDITIONS:
        times = results[c]
        if not times:
            print("%-16s %4d %8s %8s %8s" % (c, 0, "-", "-", "-"))
            continue
        med[c] = statistics.median(times)
        per = " ".join("%d" % statistics.median(d[k] for d in counters[c])
                       for k in ("node_upstream_hits", "node_compiles", "replica_compiles",
                                 "replica_shared_hits"))
        print("%-16s %4d %8.2f %8.2f %8.2f   %s" % (c, len(times), min(times), med[c],
                                                  max(times), per))
    print("\n%-16s %14s %14s" % ("ratio (medians)", "/ local-pyc", "/ no-pyc"))
    for c in FLEET:
        if c in med:
            print("%-16s %14s %14s" % (c, *("%.2f" % (med[c] / med[a]) if a in med else "-"
                                             for a in ANCHORS)))


if __name__ == "__main__":
    sys.exit(main())
