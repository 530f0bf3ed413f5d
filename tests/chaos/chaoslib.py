"""chaoslib.py: what the drills of tests/chaos/ (issue 11) share: their arguments (a full and a
short size, a printed seed), the figures line and the goals that decide their exit status, the
comparison of a served pyc with the reference interpreter's own compile(), and the server's
children from /proc. The servers themselves are the e2e harness's (tests/e2e/test_e2e.py).

A drill prints one line `figures DRILL: name=value ...` and, for each goal, `goal NAME: ok` or
`goal NAME: MISSED (...)`; it exits 1 when a goal is missed, 0 otherwise.
"""
import argparse
import hashlib
import http.client
import marshal
import os
import random
import sys
import time
import types
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from test_e2e import (MAGIC, PYCACHECTL, PYCACHED, PYTHON, Server,  # noqa: E402,F401
                      java_hash, make_tree, query)

MTIME = 1700000000  # the mtime the drills' uploads claim (their sources need no file)


def parse_args(doc, full, short, extra=None):
    """The drill's arguments: --short picks the sizes of `short` (a dict of option: value),
    otherwise `full`; each size can also be given alone (--kills 5). --seed (default: from the
    clock) is printed, so that a run can be repeated. Returns (args, rng)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="the short version (meson's)")
    parser.add_argument("--seed", type=int, default=None)
    for name, value in full.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=None,
                            help="full: %s, short: %s" % (value, short[name]))
    for name, (kind, default, text) in (extra or {}).items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=text)
    args = parser.parse_args()
    sizes = short if args.short else full
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.seed is None:
        args.seed = int(time.time() * 1000) % 1000000007
    print("seed %d (%s version)" % (args.seed, "short" if args.short else "full"), flush=True)
    return args, random.Random(args.seed)


class Goals:
    """The figures of a drill and its goals: `check(name, ok, detail)` for each, `finish()`
    prints them, and a "Checks: N, Failures: F" line (one check a goal), and returns the exit
    status."""

    def __init__(self, drill):
        self.drill = drill
        self.figures = {}
        self.goals = []

    def figure(self, name, value):
        self.figures[name] = value

    def check(self, name, ok, detail=""):
        self.goals.append((name, bool(ok), detail))

    def finish(self):
        print("figures %s: %s" % (self.drill, " ".join(
            "%s=%s" % (k, format_value(v)) for k, v in self.figures.items())), flush=True)
        missed = 0
        for name, ok, detail in self.goals:
            print("goal %s: %s" % (name, "ok" if ok else "MISSED (%s)" % detail), flush=True)
            missed += not ok
        # one check a goal, in the form deploy/test.sh counts
        print("Checks: %d, Failures: %d, Errors: 0" % (len(self.goals), missed), flush=True)
        return 1 if missed else 0


def format_value(v):
    if isinstance(v, float):
        return "%.4g" % v
    if isinstance(v, dict):
        return ",".join("%s:%s" % (k, format_value(x)) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))) or "-"
    return str(v)


def percentile(values, p):
    """The p-th percentile (0..100) of values, nearest rank; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))]


# ---- sources and code -------------------------------------------------------------------------

def make_source(rng, i, broken=False):
    """A source unique to i, with functions, a class, a comprehension, an f-string, constants of
    several types and nested code; `broken` gives one that does not compile."""
    names = ["alpha", "beta", "gamma", "delta", "omega"]
    name = "%s_%d" % (rng.choice(names), i)
    lines = ['"""module %d of the drill (%08x)."""' % (i, rng.getrandbits(32)),
             "import math",
             "TABLE_%d = %r" % (i, {str(k): rng.random() for k in range(rng.randint(1, 6))}),
             "WORDS = %r" % (tuple(rng.choice(names) * rng.randint(1, 3) for _ in range(4)),),
             "",
             "def %s(x, *args, scale=%d, **kw):" % (name, rng.randint(1, 99)),
             "    '''returns a number from x'''",
             "    total = sum(v * scale for v in args if v %% %d)" % rng.randint(2, 9),
             "    def inner(y):",
             "        nonlocal total",
             "        total += y",
             "        return f'{y!r:>%d}'" % rng.randint(1, 12),
             "    return [inner(k) for k in range(x)], total + %d" % i,
             "",
             "class C%d:" % i,
             "    LIMIT = %d" % rng.randint(0, 10 ** 9),
             "    def __init__(self, v):",
             "        self.v = math.sqrt(abs(v)) + %r" % rng.random(),
             "    async def later(self):",
             "        async for item in self.v:",
             "            yield item",
             ""]
    for k in range(rng.randint(0, 12)):
        lines.append("CONST_%d = %r" % (k, rng.choice([rng.random(), rng.getrandbits(70), b"\x00b",
                                                       "t%d" % k, None, (1, 2.5j), frozenset({k})])))
    if broken:
        lines.insert(rng.randint(1, len(lines) - 1), "def broken_%d(:" % i)
    return ("\n".join(lines) + "\n").encode()


def code_key(obj):
    """A comparable form of a code object and everything in it (recursively): two code objects
    with the same key run the same. Constants keep their type (1 and 1.0 and True differ)."""
    if isinstance(obj, types.CodeType):
        return ("code",) + tuple(code_key(getattr(obj, a)) for a in (
            "co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_nlocals",
            "co_stacksize", "co_flags", "co_code", "co_consts", "co_names", "co_varnames",
            "co_freevars", "co_cellvars", "co_filename", "co_name", "co_qualname",
            "co_firstlineno", "co_linetable", "co_exceptiontable"))
    if isinstance(obj, (tuple, list)):
        return (type(obj).__name__,) + tuple(code_key(x) for x in obj)
    if isinstance(obj, frozenset):
        return ("frozenset",) + tuple(sorted((code_key(x) for x in obj), key=repr))
    if isinstance(obj, float):
        return ("float", obj.hex())
    if isinstance(obj, complex):
        return ("complex", obj.real.hex(), obj.imag.hex())
    return (type(obj).__name__, obj)


def local_compile(source, path, opt=0):
    """What the reference interpreter compiles source to: ("code", key) or ("error", type)."""
    try:
        code = compile(source, path, "exec", dont_inherit=True, optimize=opt)
    except (SyntaxError, ValueError) as e:
        return ("error", type(e).__name__)
    return ("code", code_key(code))


def check_pyc(pyc, source, path, mtime, expected):
    """None when pyc is a right pyc of source (header with the magic, flags 0, mtime and size;
    a body whose code equals `expected` from local_compile), else what is wrong."""
    if len(pyc) < 16:
        return "short pyc"
    if pyc[:4] != bytes.fromhex(MAGIC) or pyc[4:8] != b"\0\0\0\0":
        return "bad magic or flags"
    if int.from_bytes(pyc[8:12], "little") != mtime & 0xFFFFFFFF or \
            int.from_bytes(pyc[12:16], "little") != len(source) & 0xFFFFFFFF:
        return "bad mtime or size in the header"
    try:
        code = marshal.loads(pyc[16:])
    except (ValueError, EOFError, TypeError) as e:
        return "body does not unmarshal: %r" % e
    if expected[0] != "code":
        return "served code for a source that does not compile"
    if not isinstance(code, types.CodeType) or code_key(code) != expected[1]:
        return "served code differs from compile()"
    return None


def source_query(path, source, mtime=MTIME, opt=0):
    """The full query of a lookup or compile of source at path (hash and digest included)."""
    return urllib.parse.urlencode({"magic": MAGIC, "opt": opt, "path": path, "mtime": mtime,
                                   "size": len(source), "hash": java_hash(source),
                                   "digest": hashlib.sha256(source).hexdigest()})


class Client:
    """One kept-alive HTTP connection to 127.0.0.1:port that reconnects after any error."""

    def __init__(self, port, timeout=30):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        """(status, headers, body); raises OSError / http.client errors (then reconnects)."""
        headers = dict(headers or {})
        headers.setdefault("X-Pycached-Client", "chaos")
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            return resp.status, dict(resp.getheaders()), data
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def children(pid):
    """{pid: state letter} of pid's children, from /proc (R, S, T stopped, Z zombie...)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found[int(entry)] = fields[0]
    return found


def alive(pid):
    """Is pid a process that is neither gone nor a zombie?"""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
