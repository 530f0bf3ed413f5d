"""End-to-end tests that the import hook finds what CPython's path finder finds (issue 12): the
same module for the same sys.path, with the same __file__, __spec__, __path__, namespace
packages and shadowing, with and without a warm bundle; and CPython's own test_importlib, run
through the hook from a pyc-free copy, ends case by case as it does without the hook.

Run by meson (`meson test importlib`) with PCC_PYCACHED, PCC_PYCACHECTL, PCC_HOOK_ROOT and
PCC_REFERENCE_PYTHON in the environment. Needs Debian's libpython3.11-testsuite (the test
package of /usr/bin/python3); without it the test_importlib case is skipped and says so.
"""
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import PYTHON, make_tree, run_tests  # noqa: E402
from test_hook import HookCase  # noqa: E402

STDLIB_TESTS = os.path.join(sysconfig.get_path("stdlib"), "test")
# the parts of the stdlib's test package test_importlib imports
TEST_FILES = ["__init__.py", "support", "test_importlib", "test_py_compile.py", "lock_tests.py"]
EXT_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
EXTENSION = os.path.join(sysconfig.get_path("stdlib"), "lib-dynload", "_bz2" + EXT_SUFFIX)

# Imports each name with sys.path = ROOTS and prints, per name, what CPython's import system
# made of it: the module's file, spec (origin, cached, parent, search locations), __path__ and
# the kind of loader, or the exception's type and message.
DESCRIBE = r"""
import importlib.machinery, json, sys
sys.path[:0] = ROOTS
def kind(loader):
    if isinstance(loader, importlib.machinery.SourceFileLoader):
        return "source"  # SourceFileLoader or the hook's subclass of it
    return type(loader).__name__
out = {}
for name in NAMES:
    try:
        module = __import__(name, fromlist=["_"])
    except Exception as exc:
        out[name] = ["error", type(exc).__name__, str(exc)]
        continue
    spec = module.__spec__
    locations = spec.submodule_search_locations
    out[name] = ["ok", getattr(module, "__file__", None), spec.name, spec.origin, spec.cached,
                 spec.parent, spec.has_location, None if locations is None else list(locations),
                 list(getattr(module, "__path__", None) or []) or None, kind(spec.loader),
                 getattr(module, "WHERE", None)]
hook = sys.modules.get("pycached")
print(json.dumps({"found": out, "stats": hook.stats() if hook and hook.is_active() else None}))
"""

NAMES = ["shadow", "pkgmod", "ns", "ns.a", "ns.b", "deleted", "added", "casepkg", "casemod",
         "CaseMod", "_bz2", "plain", "plain.sub", "later", "later.inner"]


class PathFinderSemantics(HookCase):
    """The hook's finder against plain CPython's, on trees made to trip a finder up, before and
    after they change under a bundle made of them."""

    def describe(self, roots, url=None, env=None):
        code = "ROOTS = %r\nNAMES = %r\n%s" % (roots, NAMES, DESCRIBE)
        if url is None:
            run = subprocess.run([PYTHON, "-B", "-c", code], capture_output=True, text=True,
                                 env={"PATH": "/usr/bin:/bin"}, timeout=60)
        else:
            run = self.hook_run(url, code, env=env)
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        return json.loads(run.stdout)

    def test_the_hook_finds_what_the_path_finder_finds(self):
        server = self.start_server()
        first, second = os.path.join(self.tmp, "first"), os.path.join(self.tmp, "second")
        make_tree(first, {"ns/a.py": "WHERE = 'first/ns/a'\n",
                          "later/__init__.py": "WHERE = 'first/later'\n"})
        make_tree(second, {
            "shadow.py": "WHERE = 'second/shadow'\n",
            "pkgmod.py": "WHERE = 'second/pkgmod.py'\n",  # the package of the same name wins
            "pkgmod/__init__.py": "WHERE = 'second/pkgmod/'\n",
            "ns/b.py": "WHERE = 'second/ns/b'\n",  # ns: a namespace package over both roots
            "deleted.py": "WHERE = 'second/deleted'\n",
            "casepkg/__Init__.py": "WHERE = 'casepkg/__Init__'\n",  # not an __init__.py
            "CaseMod.py": "WHERE = 'second/CaseMod'\n",
            "_bz2.py": "WHERE = 'second/_bz2.py'\n",  # the extension next to it wins
            "plain/__init__.py": "WHERE = 'second/plain'\n",
            "plain/sub.py": "WHERE = 'second/plain/sub'\n",
            "later/__init__.py": "WHERE = 'second/later'\n",  # shadowed by first/later
            "later/inner.py": "WHERE = 'second/later/inner'\n",
        })
        shutil.copy(EXTENSION, os.path.join(second, "_bz2" + EXT_SUFFIX))
        roots = [first, second]
        env = {"PYCACHED_PROFILE": "semantics"}
        plain = self.describe(roots)["found"]
        self.assertEqual(plain["_bz2"][9], "ExtensionFileLoader", plain["_bz2"])
        self.assertEqual(plain["ns"][7], [os.path.join(first, "ns"), os.path.join(second, "ns")])
        self.assertEqual(plain["casepkg"][3], None, "a namespace package on Linux")
        for run in ("records the profile", "served from the bundle"):
            hooked = self.describe(roots, server.url, env)
            self.assertEqual(hooked["found"], plain, run)
        self.assertGreaterEqual(hooked["stats"]["bundle_hits"], 8)
        # then the trees change under the bundle: a module shadowing one it holds, a module
        # deleted and one added, a package's __init__.py removed (a namespace package now)
        make_tree(first, {"shadow.py": "WHERE = 'first/shadow'\n",
                          "plain/__init__.py": "WHERE = 'first/plain'\n"})
        make_tree(second, {"added.py": "WHERE = 'second/added'\n"})
        os.unlink(os.path.join(second, "deleted.py"))
        os.unlink(os.path.join(first, "later", "__init__.py"))
        plain = self.describe(roots)["found"]
        self.assertEqual(plain["shadow"][10], "first/shadow")
        self.assertEqual((plain["deleted"][0], plain["added"][10]), ("error", "second/added"))
        self.assertEqual(plain["later.inner"][10], "second/later/inner", "first/later: a portion")
        hooked = self.describe(roots, server.url, env)
        self.assertGreater(hooked["stats"]["bundle_entries"], 0)
        self.assertEqual(hooked["found"], plain)


# Runs test.test_importlib from COPY with a result recording each case, and prints them as JSON.
RUN_TEST_IMPORTLIB = r"""
import json, re, sys, unittest
sys.path.insert(0, COPY)
class Result(unittest.TestResult):
    outcomes = {}
    def record(self, key, outcome):
        key = re.sub(r" at 0x[0-9a-f]+", " at 0x", key)  # subtests named by object addresses
        if self.outcomes.get(key, "ok") == "ok":
            self.outcomes[key] = outcome
    def addSuccess(self, test): self.record(test.id(), "ok")
    def addFailure(self, test, err): super().addFailure(test, err); self.record(test.id(), "FAIL")
    def addError(self, test, err): super().addError(test, err); self.record(test.id(), "ERROR")
    def addSkip(self, test, reason): self.record(test.id(), "skipped")
    def addExpectedFailure(self, test, err): self.record(test.id(), "expected failure")
    def addUnexpectedSuccess(self, test): self.record(test.id(), "unexpected success")
    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        self.record(subtest.id(), "ok" if err is None else
                    "FAIL" if issubclass(err[0], test.failureException) else "ERROR")
suite = unittest.defaultTestLoader.loadTestsFromName("test.test_importlib")
result = Result()
suite.run(result)
import test.test_importlib
hook = sys.modules.get("pycached")
with open(OUT, "w") as f:
    json.dump({"outcomes": result.outcomes, "package": test.test_importlib.__file__,
               "details": {t.id(): text[-2000:] for t, text in result.failures + result.errors},
               "stats": hook.stats() if hook and hook.is_active() else None}, f)
"""


class TestImportlib(HookCase):
    maxDiff = None
    """CPython's test_importlib (1434 cases with subtests on 3.11) through the hook."""

    def run_suite(self, copy, url=None, env=None):
        out = os.path.join(self.tmp, "outcomes.json")
        code = "COPY = %r\nOUT = %r\n%s" % (copy, out, RUN_TEST_IMPORTLIB)
        if url is None:
            run = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, cwd=self.tmp,
                                 env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
                                 timeout=300)
        else:
            run = self.hook_run(url, code, env=env, cwd=self.tmp, timeout=300)
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        with open(out) as f:
            result = json.load(f)
        os.unlink(out)
        self.assertEqual(result["package"], os.path.join(copy, "test", "test_importlib",
                                                         "__init__.py"))
        return result

    def assert_same_outcomes(self, plain, hooked, what):
        """Every case ends as it does without the hook. The hook's own modules are in
        sys.modules only with it: the subtests that check every module there (test_api's
        StartupTests, "(name='pycached...')") exist only through the hook, and must pass."""
        def extra(case):
            return case not in plain["outcomes"] and "(name='pycached" in case \
                and hooked["outcomes"][case] == "ok"
        differ = {case: (plain["outcomes"].get(case), hooked["outcomes"].get(case))
                  for case in set(plain["outcomes"]) | set(hooked["outcomes"])
                  if plain["outcomes"].get(case) != hooked["outcomes"].get(case)
                  and not extra(case)}
        details = "\n".join(hooked["details"].get(case.split(" ")[0], "")[-800:]
                            for case in sorted(differ)[:3])
        self.assertEqual(differ, {}, "%s: cases that end otherwise through the hook "
                         "(plain, hook):\n%s" % (what, details))

    @unittest.skipUnless(os.path.isdir(os.path.join(STDLIB_TESTS, "test_importlib")),
                         "no test_importlib (Debian's libpython3.11-testsuite)")
    def test_test_importlib_ends_case_by_case_as_without_the_hook(self):
        copy = os.path.join(self.tmp, "copy")
        os.makedirs(os.path.join(copy, "test"))
        for name in TEST_FILES:
            source = os.path.join(STDLIB_TESTS, name)
            target = os.path.join(copy, "test", name)
            if os.path.isdir(source):
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(source, target)
        plain = self.run_suite(copy)
        self.assertGreater(len(plain["outcomes"]), 1000)
        server = self.start_server()
        env = {"PYCACHED_PROFILE": "test_importlib"}
        first = self.run_suite(copy, server.url, env)  # compiles, records the profile
        self.assert_same_outcomes(plain, first, "per-module path")
        self.assertGreater(first["stats"]["compiles_asked"], 100, first["stats"])
        second = self.run_suite(copy, server.url, env)  # the bundle
        self.assert_same_outcomes(plain, second, "bundle")
        self.assertGreater(second["stats"]["bundle_hits"], 100, second["stats"])


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
