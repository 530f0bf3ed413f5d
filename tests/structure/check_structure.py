#!/usr/bin/env python3
"""check_structure.py: checks that the files of server/ and client/ depend on each other without
circles (docs/DESIGN.md, "Where things go").

Two graphs per folder, file to file:
- includes: a.c -> b.c when a.c (or a header it includes) includes b.h;
- calls: a.c -> b.c when a.o uses a symbol b.o defines (read with nm from the build tree).
Each must be acyclic. Also: the features of server/ (cache.c, admin.c, warm.c) never reach each
other, and only main.c (and the tests) include feature_list.h.

Usage: check_structure.py SOURCE_ROOT BUILD_ROOT. Prints each problem; exits 1 when there is one.
Also prints a Check-style line "Checks: N, Failures: F, Errors: 0" for the test count."""
import glob
import os
import re
import subprocess
import sys

FEATURES = {"cache.c", "admin.c", "warm.c"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def includes(path):
    with open(path, encoding="utf-8") as f:
        return INCLUDE.findall(f.read())


def include_graph(folder):
    """file.c -> set of file.c it reaches through its includes (headers resolved to their .c)."""
    names = set(os.listdir(folder))
    graph = {}
    for name in sorted(names):
        if not name.endswith(".c"):
            continue
        seen, todo, reached = set(), [name], set()
        while todo:
            current = todo.pop()
            if current in seen or current not in names:
                continue
            seen.add(current)
            for inc in includes(os.path.join(folder, current)):
                base = os.path.basename(inc)
                if base.endswith(".h"):
                    todo.append(base)
                    source = base[:-2] + ".c"
                    if source in names and source != name:
                        reached.add(source)
        graph[name] = reached
    return graph


def symbols(obj):
    out = subprocess.run(["nm", obj], capture_output=True, text=True, check=True).stdout
    defined, used = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U":
            used.add(parts[1])
        elif len(parts) == 3 and parts[1] in "TDBR":
            defined.add(parts[2])
    return defined, used


def call_graph(objects):
    """file.c -> set of file.c whose symbols it uses."""
    table = {}
    for obj in objects:
        name = os.path.basename(obj).replace(".o", "")
        table[name] = symbols(obj)
    graph = {}
    for name, (_, used) in table.items():
        graph[name] = {other for other, (defined, _) in table.items()
                       if other != name and used & defined}
    return graph


def cycle(graph):
    """A cycle of graph as a list of nodes, or None."""
    state = {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                found = visit(nxt, stack)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None:
            found = visit(node, [])
            if found:
                return found
    return None


def main():
    source_root, build_root = sys.argv[1], sys.argv[2]
    problems, checks = [], 0
    objects = {
        "server": glob.glob(os.path.join(build_root, "server", "libpcc_server.a.p", "*.c.o")),
        "client": glob.glob(os.path.join(build_root, "client", "pycachectl.p", "*.c.o")) +
        glob.glob(os.path.join(build_root, "client", "libpycached_client.a.p", "*.c.o")),
    }
    for folder in ("server", "client"):
        graphs = {"includes": include_graph(os.path.join(source_root, folder)),
                  "calls": call_graph(objects[folder])}
        if not graphs["calls"]:
            problems.append("%s: no object files under %s" % (folder, build_root))
        for kind, graph in graphs.items():
            checks += 1
            found = cycle(graph)
            if found:
                problems.append("%s: a circle of %s: %s" % (folder, kind, " -> ".join(found)))
            if folder == "server":
                for feature in FEATURES:
                    checks += 1
                    others = graph.get(feature, set()) & (FEATURES - {feature})
                    if others:
                        problems.append("server: %s %s %s" % (feature, kind, sorted(others)))
    for name in sorted(os.listdir(os.path.join(source_root, "server"))):
        if name.endswith((".c", ".h")) and name != "main.c":
            checks += 1
            if "feature_list.h" in includes(os.path.join(source_root, "server", name)):
                problems.append("server/%s includes feature_list.h (only main.c may)" % name)
    for problem in problems:
        print(problem)
    print("Checks: %d, Failures: %d, Errors: 0" % (checks, len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
