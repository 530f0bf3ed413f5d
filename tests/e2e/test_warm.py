"""End-to-end tests of `pycachectl warm DIR...` (docs/CLI.md, "warm"): a real pycached on a
loopback port, trees of generated sources, and the server's /v1/stats counters as the witness
of what was compiled.

Run by meson (`meson test warm`), which passes PCC_PYCACHED, PCC_PYCACHECTL and
PCC_REFERENCE_PYTHON. Every file written has content no other test writes (the server shares
one compile among sources with the same bytes), every process started is stopped by pid and
every loop is bounded.
"""
import json
import os
import pty
import select
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import MAGIC, PYCACHECTL, Server, SharedServerCase, run_tests, make_tree  # noqa: E402  (shared harness)

EXIT_USAGE, EXIT_SERVER, EXIT_COMPILE, EXIT_LOCAL = 2, 3, 4, 5
SANITIZER_ENV = ("ASAN_", "LSAN_", "UBSAN_", "LD_PRELOAD")


def make_tree(root, count, tag, bad=None):
    """count good modules (in a few subpackages) with content unique to tag; bad, when given,
    names one more file with a syntax error on line 3. Returns the good paths."""
    paths = []
    for i in range(count):
        path = os.path.join(root, "pkg%d" % (i % 4), "mod_%s_%d.py" % (tag, i))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("# %s %d\ndef f%d(x):\n    return x * %d + len(%r)\n" % (tag, i, i, i, tag))
        paths.append(path)
    if bad:
        with open(os.path.join(root, bad), "w") as f:
            f.write("# %s bad\nx = 1\ndef broken(:\n    pass\n" % tag)
    return paths


class Warm(SharedServerCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="pcc-warm-")
        cls.server = Server(cls.tmp, "--workers", "2", "--max-source", "1M")


    def tree(self, name):
        path = os.path.join(self.tmp, name)
        os.makedirs(path)
        return path

    def warm(self, *args, url=None, timeout=120):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PYCACHED_") or k.startswith(SANITIZER_ENV)}
        return subprocess.run([PYCACHECTL, "--server", url or self.server.url, "warm", *args],
                              capture_output=True, text=True, env=env, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def compiles(self):
        return self.server.stats()["compiles"]

    def lookup(self, path, opt=0):
        st = os.stat(path)
        q = urllib.parse.urlencode({"magic": MAGIC, "opt": opt, "path": path,
                                    "mtime": int(st.st_mtime), "size": st.st_size})
        status, _, _ = self.server.request("GET", "/v1/code?" + q)
        return status

    def summary(self, stdout):
        """The text summary's counters: {"compiled": N, "already cached": N, ...}."""
        counts = {}
        for line in stdout.splitlines()[1:]:
            key, _, value = line.strip().rpartition(" ")
            counts[key.strip()] = int(value)
        return counts

    def test_syntax_error_is_reported_and_every_other_file_compiled(self):
        root = self.tree("syntax")
        good = make_tree(root, 12, "syntax", bad="broken.py")
        before = self.compiles()
        run = self.warm(root)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("%s/broken.py:3:" % root, run.stderr)
        self.assertIn("SyntaxError", run.stderr)
        counts = self.summary(run.stdout)
        self.assertEqual(counts, {"compiled": 12, "already cached": 0, "compile errors": 1,
                                  "failures": 0}, run.stdout)
        self.assertTrue(run.stdout.startswith("warm: 13 files, opt 0, magic %s" % MAGIC),
                        run.stdout)
        self.assertEqual(self.compiles() - before, 12 + 1)  # the bad one stored as an error
        for path in good:
            self.assertEqual(self.lookup(path), 200, path)
        self.assertEqual(self.lookup(os.path.join(root, "broken.py")), 422)

        strict = self.warm("--strict", root)
        self.assertEqual(strict.returncode, EXIT_COMPILE, strict.stderr)
        self.assertIn("%s/broken.py:3:" % root, strict.stderr)

    def test_second_warm_finds_everything_cached(self):
        root = self.tree("again")
        make_tree(root, 20, "again")
        first = self.warm(root)
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertEqual(self.summary(first.stdout)["compiled"], 20)
        before = self.compiles()
        second = self.warm(root)
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertEqual(self.summary(second.stdout),
                         {"compiled": 0, "already cached": 20, "compile errors": 0,
                          "failures": 0}, second.stdout)
        self.assertEqual(self.compiles(), before)
        strict = self.warm("--strict", root)  # nothing wrong: --strict changes nothing
        self.assertEqual(strict.returncode, 0, strict.stderr)

    def test_opt_levels_make_three_entries_per_file(self):
        root = self.tree("levels")
        good = make_tree(root, 6, "levels", bad="bad.py")
        before = self.compiles()
        run = self.warm("--opt", "0,1,2", "--json", root)
        self.assertEqual(run.returncode, 0, run.stderr)
        out = json.loads(run.stdout)
        self.assertEqual(out["opt"], [0, 1, 2])
        self.assertEqual((out["files"], out["compiled"], out["compile_errors"]), (7, 18, 3))
        self.assertEqual(self.compiles() - before, 21)
        self.assertEqual(sorted(e["opt"] for e in out["errors"]), [0, 1, 2])
        for path in good:
            for opt in (0, 1, 2):
                self.assertEqual(self.lookup(path, opt), 200, (path, opt))
        text = self.warm("--opt", "2,0", root)  # any order; problems name their level
        self.assertIn("bad.py:3:", text.stderr)
        self.assertIn("(opt 2)", text.stderr)
        self.assertIn("opt 0,2", text.stdout)

    def test_many_files_eight_jobs_compile_each_once(self):
        root = self.tree("many")
        good = make_tree(root, 300, "many")
        before = self.compiles()
        run = self.warm("--jobs", "8", "--json", root)
        self.assertEqual(run.returncode, 0, run.stderr)
        out = json.loads(run.stdout)
        self.assertEqual(out["jobs"], 8)
        self.assertEqual((out["files"], out["files_done"], out["compiled"], out["joined"],
                          out["cached"], out["compile_errors"], out["failures"]),
                         (300, 300, 300, 0, 0, 0, 0))
        self.assertEqual(self.compiles() - before, 300)
        for path in good[::37]:
            self.assertEqual(self.lookup(path), 200, path)

    def test_json_summary(self):
        root = self.tree("json")
        make_tree(root, 3, "json", bad="zz_bad.py")
        with open(os.path.join(root, "huge.py"), "w") as f:  # over the server's --max-source 1M
            f.write("# json huge\n" + "x = 1\n" * 200000)
        run = self.warm("--json", root)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stderr, "")  # everything is in the JSON
        out = json.loads(run.stdout)
        for key in ("files", "files_done", "opt", "magic", "jobs", "compiled", "joined",
                    "cached", "compile_errors", "failures", "errors", "failed", "elapsed",
                    "rate", "stopped"):
            self.assertIn(key, out)
        self.assertEqual((out["files"], out["compiled"], out["compile_errors"], out["failures"]),
                         (5, 3, 1, 1))
        self.assertEqual(out["magic"], MAGIC)
        self.assertEqual(out["jobs"], 4)  # 2 x the server's 2 workers
        self.assertIsNone(out["stopped"])
        error = out["errors"][0]
        self.assertEqual((error["path"], error["opt"], error["type"], error["line"]),
                         (os.path.join(root, "zz_bad.py"), 0, "SyntaxError", 3))
        self.assertGreater(error["offset"], 0)
        failed = out["failed"][0]
        self.assertEqual(failed["path"], os.path.join(root, "huge.py"))
        self.assertIn("413 too-large", failed["reason"])
        self.assertGreater(out["elapsed"], 0)
        strict = self.warm("--json", "--strict", root)  # a failure counts for --strict too
        self.assertEqual(strict.returncode, EXIT_COMPILE)

    def test_walk_follows_compileall(self):
        root = self.tree("walk")
        outside = self.tree("walk-outside")
        make_tree(outside, 2, "walk-outside")
        files = {"top.py": "t = 'walk top'\n", "sub/inner.py": "i = 'walk inner'\n",
                 ".hidden/h.py": "h = 'walk hidden'\n", "__pycache__/skip.py": "s = 'walk no'\n",
                 "notes.txt": "not python\n", "pkg.py/m.py": "m = 'walk dir named .py'\n"}
        for name, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
            with open(os.path.join(root, name), "w") as f:
                f.write(text)
        os.symlink(outside, os.path.join(root, "linked"))            # not entered
        os.symlink("top.py", os.path.join(root, "alias.py"))        # warmed under its own name
        os.symlink("missing.py", os.path.join(root, "dangling.py"))  # nothing to read
        run = self.warm("--json", root, os.path.join(root, "sub"))  # overlapping DIRs: once each
        self.assertEqual(run.returncode, 0, run.stderr)
        out = json.loads(run.stdout)
        self.assertEqual(out["files"], 5, out)  # top, inner, h, pkg.py/m, alias
        self.assertEqual(self.lookup(os.path.join(root, "alias.py")), 200)
        self.assertEqual(self.lookup(os.path.join(root, ".hidden", "h.py")), 200)
        self.assertEqual(self.lookup(os.path.join(root, "__pycache__", "skip.py")), 404)

    def test_no_progress_off_a_terminal(self):
        root = self.tree("quiet")
        make_tree(root, 150, "quiet")
        run = self.warm(root)
        self.assertEqual(run.returncode, 0, run.stderr)
        for stream in (run.stdout, run.stderr):
            self.assertNotIn("\r", stream)
            self.assertNotIn("\x1b", stream)
        self.assertEqual(run.stderr, "")

    def test_progress_on_a_terminal(self):
        root = self.tree("tty")
        make_tree(root, 600, "tty")
        for i in range(3):  # a few slow compiles keep the run going for a while
            with open(os.path.join(root, "slow%d.py" % i), "w") as f:
                f.write("# tty slow %d\n" % i + "".join("v%d = %d\n" % (j, j) for j in range(60000)))
        master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYCACHED_")}
        proc = subprocess.Popen([PYCACHECTL, "--server", self.server.url, "warm", "--jobs", "2",
                                 root], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=slave, env=env)
        os.close(slave)
        seen, deadline = b"", time.monotonic() + 120
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            try:
                chunk = os.read(master, 65536) if ready else b""
            except OSError:  # EIO: the child closed the terminal
                break
            if ready and not chunk:
                break
            seen += chunk
            if proc.poll() is not None and not ready:
                break
        stdout, _ = proc.communicate(timeout=60)
        os.close(master)
        self.assertEqual(proc.returncode, 0, seen)
        self.assertIn(b"\rwarm: ", seen)
        self.assertIn(b"/603 files", seen)
        self.assertIn(b"files/s", seen)
        self.assertTrue(seen.endswith(b"\r\x1b[K"), seen[-80:])  # the line is cleared at the end
        self.assertNotIn(b"\r", stdout)

    def test_missing_directory(self):
        missing = os.path.join(self.tmp, "no-such-dir")
        before = self.server.stats()["requests"]
        run = self.warm(missing)
        self.assertEqual(run.returncode, EXIT_LOCAL)
        self.assertIn("%s: No such file or directory" % missing, run.stderr)
        self.assertEqual(run.stdout, "")
        self.assertEqual(self.server.stats()["requests"], before + 1)  # nothing was sent
        not_dir = os.path.join(self.tmp, "plain-file.py")
        with open(not_dir, "w") as f:
            f.write("p = 'warm plain'\n")
        run = self.warm(not_dir)
        self.assertEqual(run.returncode, EXIT_LOCAL)
        self.assertIn("not a directory", run.stderr)

    def test_unreadable_directory_in_the_tree(self):
        if os.geteuid() == 0:
            self.skipTest("root reads every directory")
        root = self.tree("locked")
        good = make_tree(root, 4, "locked")
        locked = os.path.join(root, "secret")
        os.makedirs(locked)
        with open(os.path.join(locked, "s.py"), "w") as f:
            f.write("s = 'locked secret'\n")
        os.chmod(locked, 0)
        try:
            run = self.warm(root)
        finally:
            os.chmod(locked, 0o755)
        self.assertEqual(run.returncode, EXIT_LOCAL, run.stderr)
        self.assertIn("%s: failed: cannot list the directory: Permission denied" % locked,
                      run.stderr)
        for path in good:  # the rest is warmed all the same
            self.assertEqual(self.lookup(path), 200, path)

    def test_tree_too_deep(self):
        root = self.tree("deep")
        good = make_tree(root, 3, "deep")
        deep = root
        for level in range(66):  # DIR/d0/.../d65: d64 is the 65th level below DIR
            deep = os.path.join(deep, "d%d" % level)
            os.mkdir(deep)
            with open(os.path.join(deep, "m.py"), "w") as f:
                f.write("level = 'deep %d'\n" % level)
        run = self.warm(root)
        self.assertEqual(run.returncode, EXIT_LOCAL, run.stderr)
        self.assertIn("not entered: over 64 directory levels below DIR", run.stderr)
        self.assertIn("/d63/d64: failed:", run.stderr)
        self.assertIn("warm: 67 files", run.stdout)  # 3 + levels d0..d63
        for path in good:
            self.assertEqual(self.lookup(path), 200, path)

    def test_server_down_and_usage(self):
        root = self.tree("down")
        make_tree(root, 2, "down")
        run = self.warm(root, url="http://127.0.0.1:1")
        self.assertEqual(run.returncode, EXIT_SERVER)
        self.assertIn("cannot connect", run.stderr)
        run = self.warm("--magic", MAGIC, "--jobs", "2", root, url="http://127.0.0.1:1")
        self.assertEqual(run.returncode, EXIT_SERVER)  # no request before the uploads
        self.assertIn("cannot connect", run.stderr)
        for args in (["--jobs", "0", root], ["--jobs", "65", root], ["--opt", "0,0", root],
                     ["--opt", "3", root], ["--opt", "0,", root], ["--output", "x.pyc", root],
                     []):
            run = self.warm(*args)
            self.assertEqual(run.returncode, EXIT_USAGE, (args, run.stderr))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYCACHED_")}
        for args in (["get", "--opt", "0,1", root + "/x.py"], ["compile", "--jobs", "2", "x.py"],
                     ["stats", "--strict"]):
            run = subprocess.run([PYCACHECTL, "--server", self.server.url, *args],
                                 capture_output=True, text=True, env=env, timeout=60)
            self.assertEqual(run.returncode, EXIT_USAGE, (args, run.stderr))
        helptext = subprocess.run([PYCACHECTL, "--help"], capture_output=True, text=True,
                                  timeout=60).stdout
        for word in ("warm DIR...", "--jobs", "--strict"):
            self.assertIn(word, helptext)


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
