"""End-to-end test of a fleet of interpreters on one server (issue 13): CPython 3.8 to 3.13
(pyenv's, and Debian's /usr/bin/python3) and PyPy, each through the import hook of its own
pycached._native build, each served code of its own magic by one pycached with a backend per
interpreter; then a fleet's move from 3.11 to 3.12 with 3.11 retired.

Every interpreter imports a pyc-free read-only copy of Debian's sympy and mpmath and computes
integrate(x**2*sin(x), x): the first process through the hook has every module compiled by the
server, the second gets every module from the cache (pycached.stats()), and both answer what the
interpreter answers without the hook. An interpreter that is absent, or that the hook was not
built for, is skipped and the test says so.

Run by meson (`meson test fleet`): PCC_FLEET_PYTHONS (':'-separated, the hook_interpreters of the
build) and the variables of test_e2e.py. PCC_FLEET_SHORT=1: mpmath alone (mpmath.quad of the same
integrand) on the interpreters other than 3.11, 3.12 and PyPy.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import PYCACHECTL, PYTHON, Server, run_tests  # noqa: E402  (shared harness)

HOOK_ROOT = os.environ.get("PCC_HOOK_ROOT", "build/client/hook")
SITE = "/usr/lib/python3/dist-packages"
PYENV = os.environ.get("PYENV_ROOT", "/root/.pyenv")
DEFAULT_PYTHONS = [PYTHON, "/usr/bin/pypy3"] + [
    os.path.join(PYENV, "versions", v, "bin", "python3")
    for v in ("3.8.18", "3.9.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0")]
PYTHONS = [p for p in os.environ.get("PCC_FLEET_PYTHONS", "").split(":") if p] or DEFAULT_PYTHONS
SHORT = os.environ.get("PCC_FLEET_SHORT", "0") not in ("", "0")
ANSWER = "-x**2*cos(x) + 2*x*sin(x) + 2*cos(x)"

SYMPY = r"""
import json, sys
sys.path.insert(0, TREE)
import sympy, pycached
x = sympy.Symbol("x")
answer = str(sympy.integrate(x**2*sympy.sin(x), x))
"""
MPMATH = r"""
import json, sys
sys.path.insert(0, TREE)
import mpmath, pycached
answer = mpmath.nstr(mpmath.quad(lambda t: t**2*mpmath.sin(t), [0, 1]), 15)
"""
REPORT = r"""
import importlib.util
print(json.dumps({"answer": answer, "stats": pycached.stats(), "unavailable": pycached.unavailable,
                  "magic": importlib.util.MAGIC_NUMBER.hex(),
                  "from_tree": sorted(m for m, mod in list(sys.modules.items())
                                      if (getattr(mod, "__file__", "") or "").startswith(TREE)
                                      and mod.__file__.endswith(".py"))}))
"""


def probe(python):
    """(version string, magic hex, extension suffix) of an interpreter, or None."""
    try:
        out = subprocess.run([python, "-I", "-S", "-c",
                              "import sys, importlib.util as u, importlib.machinery as m; "
                              "print('%s-%d.%d' % (sys.implementation.name, *sys.version_info[:2]),"
                              " u.MAGIC_NUMBER.hex(), m.EXTENSION_SUFFIXES[0])"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return tuple(out.split())
    except (OSError, subprocess.SubprocessError):
        return None


def fleet():
    """The interpreters to test: [(python, name, magic)], one a name, and the skipped ones with why."""
    found, skipped, names = [], [], set()
    for python in PYTHONS:
        info = probe(python) if os.access(python, os.X_OK) else None
        if info is None:
            skipped.append("%s: absent" % python)
            continue
        name, magic, suffix = info
        if not os.path.exists(os.path.join(HOOK_ROOT, "pycached", "_native" + suffix)):
            skipped.append("%s: no _native%s built" % (python, suffix))
            continue
        if name in names:
            skipped.append("%s: %s tested already" % (python, name))
            continue
        names.add(name)
        found.append((python, name, magic))
    return found, skipped


FLEET, SKIPPED = fleet()


class Fleet(unittest.TestCase):
    """One server, one backend per magic; each interpreter of the fleet through the hook."""

    @classmethod
    def setUpClass(cls):
        for line in SKIPPED:
            sys.stderr.write("fleet: skipped %s\n" % line)
        cls.tmp = tempfile.mkdtemp(prefix="pcc-fleet-")
        cls.tree = os.path.join(cls.tmp, "tree")
        for pkg in ("sympy", "mpmath"):
            shutil.copytree(os.path.join(SITE, pkg), os.path.join(cls.tree, pkg),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        subprocess.run(["chmod", "-R", "a-w", cls.tree], check=True)
        embedded = probe(PYTHON)[1]
        cls.backends, magics = [], {embedded}
        for python, _, magic in FLEET:
            if magic not in magics:
                magics.add(magic)
                cls.backends.append(python)
        args = ["--workers", "1"]
        for python in cls.backends:
            args += ["--compiler", python]
        cls.server = Server(cls.tmp, *args)

    @classmethod
    def tearDownClass(cls):
        if cls.server:
            cls.server.stop()
        subprocess.run(["chmod", "-R", "u+w", cls.tmp])
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def run_python(cls, python, url, script, hook=True, env=None):
        """(exit code, report, stderr) of python running script on the tree, through
        `pycachectl exec` unless hook is False."""
        code = "TREE = %r\n" % cls.tree + script + REPORT
        run_env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
                   "PYCACHED_PROFILE": "off", "HOME": cls.tmp}
        run_env.update({k: v for k, v in os.environ.items()
                        if k.startswith(("ASAN_", "LSAN_", "UBSAN_", "LD_PRELOAD"))})
        run_env.update(env or {})
        if hook:
            argv = [PYCACHECTL, "--server", url, "exec", "--", python, "-c", code]
        else:
            argv = [python, "-c", code]
            run_env["PYTHONPATH"] = HOOK_ROOT  # `import pycached` without the hook installed
        run = subprocess.run(argv, capture_output=True, text=True, env=run_env, timeout=300)
        report = None
        if run.returncode == 0:
            report = json.loads(run.stdout.strip().splitlines()[-1])
        return run.returncode, report, run.stderr

    def script_for(self, name):
        if SHORT and name not in ("cpython-3.11", "cpython-3.12") and not name.startswith("pypy"):
            return MPMATH
        return SYMPY

    def magic_entries(self, server):
        status, doc = server.json("GET", "/v1/admin/magics")
        self.assertEqual(status, 200)
        return {row["magic"]: row["entries"] for row in doc["store"]}

    def test_1_magics_lists_every_backend(self):
        status, doc = self.server.json("GET", "/v1/admin/magics")
        self.assertEqual(status, 200)
        listed = {b["interpreter"]: b for b in doc["backends"]}
        self.assertEqual(listed["embedded"]["magic"], probe(PYTHON)[1])
        for python in self.backends:
            self.assertIn(python, listed)
            self.assertEqual(listed[python]["magic"], probe(python)[1])
            self.assertTrue(listed[python]["version"])

    def test_2_every_interpreter_is_served_its_own_magic(self):
        if not FLEET:
            self.skipTest("no interpreter of the fleet is present")
        for python, name, magic in FLEET:
            with self.subTest(python=python):
                script = self.script_for(name)
                rc, plain, err = self.run_python(python, self.server.url, script, hook=False)
                self.assertEqual(rc, 0, err)
                if script is SYMPY:
                    self.assertEqual(plain["answer"], ANSWER)
                rc, first, err = self.run_python(python, self.server.url, script)
                self.assertEqual(rc, 0, err)
                self.assertIsNone(first["unavailable"])
                self.assertEqual(first["magic"], magic)
                self.assertEqual(first["answer"], plain["answer"])
                self.assertEqual(first["stats"]["fallbacks"], {}, err)
                self.assertGreaterEqual(first["stats"]["compiles_asked"], len(first["from_tree"]))
                rc, second, err = self.run_python(python, self.server.url, script)
                self.assertEqual(rc, 0, err)
                self.assertEqual(second["answer"], plain["answer"])
                stats = second["stats"]
                self.assertEqual((stats["compiles_asked"], stats["local_compile"],
                                  stats["fallbacks"]), (0, 0, {}), stats)
                self.assertGreaterEqual(stats["hits"], len(second["from_tree"]))
                self.assertGreater(len(second["from_tree"]), 40 if script is SYMPY else 20)
                self.assertGreaterEqual(self.magic_entries(self.server).get(magic, 0),
                                        len(second["from_tree"]))
                sys.stderr.write("fleet: %-14s magic %s: %d modules from the tree, %d hits\n"
                                 % (name, magic, len(second["from_tree"]), stats["hits"]))

    def test_3_an_interpreter_the_hook_cannot_serve_says_why_and_runs(self):
        pypy = next((p for p, name, _ in FLEET if name.startswith("pypy")), None)
        if pypy is None:
            self.skipTest("PyPy is absent or has no hook build")
        root = os.path.join(self.tmp, "partial-hook")
        shutil.copytree(os.path.join(HOOK_ROOT, "pycached"), os.path.join(root, "pycached"),
                        ignore=shutil.ignore_patterns("_native.pypy*", "*.p"))
        code = ("import sys; sys.path.insert(0, %r); import mpmath, pycached; "
                "print(mpmath.mpf(2).sqrt(), pycached.install())" % self.tree)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": root, "PYCACHED_URL": self.server.url,
               "PYCACHED_DEBUG": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        run = subprocess.run([pypy, "-c", code], capture_output=True, text=True, env=env,
                             timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout.split(), ["1.4142135623731", "False"])
        lines = [line for line in run.stderr.splitlines() if line.startswith("pycached:")]
        self.assertEqual(len(lines), 1, run.stderr)
        self.assertIn("not built for pypy", lines[0])
        self.assertNotIn("circular import", run.stderr)

    def test_4_moving_from_311_to_312_then_retiring_311(self):
        by_name = {name: (python, magic) for python, name, magic in FLEET}
        if "cpython-3.11" not in by_name or "cpython-3.12" not in by_name:
            self.skipTest("needs CPython 3.11 and 3.12")
        py311, magic311 = by_name["cpython-3.11"]
        py312, magic312 = by_name["cpython-3.12"]
        # side by side: both served (test 2 filled both), both hit
        for python in (py311, py312):
            rc, report, err = self.run_python(python, self.server.url, SYMPY)
            self.assertEqual(rc, 0, err)
            self.assertEqual(report["stats"]["compiles_asked"], 0, report["stats"])
        before = self.magic_entries(self.server)
        self.assertGreater(before.get(magic311, 0), 0)
        # the fleet has moved: the server restarts without a 3.11 backend
        self.server.stop()
        # on the class: tearDownClass stops what cls.server holds (an instance attribute left
        # this server running after every run)
        server = type(self).server = Server(self.tmp, "--workers", "1", "--no-embedded",
                                            "--compiler", py312)
        status, doc = server.json("GET", "/v1/admin/magics")
        served = {row["magic"]: row["served"] for row in doc["store"]}
        self.assertEqual((served[magic311], served[magic312]), (False, True))
        # a straggler on 3.11 still gets the entries the store holds, until they are retired
        rc, report, err = self.run_python(py311, server.url, SYMPY)
        self.assertEqual(rc, 0, err)
        self.assertEqual(report["stats"]["compiles_asked"], 0, report["stats"])
        status, doc = server.json("POST", "/v1/admin/magics/%s/retire" % magic311)
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc["removed"], before[magic311])
        after = self.magic_entries(server)
        self.assertNotIn(magic311, after)
        self.assertEqual(after[magic312], before[magic312])  # nothing of 3.12 touched
        # 3.11 clients fall back (unsupported-magic, said once) and still run
        rc, report, err = self.run_python(py311, server.url, SYMPY, env={"PYCACHED_DEBUG": "1"})
        self.assertEqual(rc, 0, err)
        self.assertEqual(report["answer"], ANSWER)
        stats = report["stats"]
        self.assertEqual(stats["hits"], 0)
        self.assertEqual(stats["fallbacks"].get("unsupported-magic"), 1, stats)
        self.assertGreaterEqual(stats["local_compile"], len(report["from_tree"]))
        self.assertEqual(sum(1 for line in err.splitlines() if "unsupported-magic" in line), 1)
        # 3.12 clients: every module still from the cache
        rc, report, err = self.run_python(py312, server.url, SYMPY)
        self.assertEqual(rc, 0, err)
        self.assertEqual(report["answer"], ANSWER)
        self.assertEqual((report["stats"]["compiles_asked"], report["stats"]["local_compile"],
                          report["stats"]["fallbacks"]), (0, 0, {}), report["stats"])
        self.assertEqual(self.magic_entries(server)[magic312], before[magic312])


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
