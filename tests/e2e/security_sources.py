"""security_sources.py: --source-root confinement (issue 9), run by test_security.py.

- The symlink swap: a directory beneath the root is exchanged, over and over, with a symlink to a
  directory outside holding a file of the same name, size and mtime, while compiles with empty
  bodies ask the server to read the file; the outside file must never be served, nor its marker
  appear in any answer. (Before the fix the server checked the realpath, then opened the path:
  the swap between the two made it read outside.)
- The existence oracle: every refusal about a path (outside and existing, outside and absent,
  `..`, a symlink out, a FIFO, a directory...) is one byte-identical 403, so that a client cannot
  learn what exists on the host.

Both run against the server's two resolvers: openat2, and the openat walk it falls back to
without openat2 (forced by PCC_SOURCES_WALK=1).
"""
import base64
import concurrent.futures
import json
import marshal
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import MAGIC, PYTHON, Server, SharedServerCase, query  # noqa: E402

INSIDE_MARK = "inside-the-root-marker"
SECRET_MARK = "s3cr3t-outside-marker!"  # as long as INSIDE_MARK: the two files have one size
MTIME = 1700000000
REFUSED = "path is not a readable regular file beneath a source root"  # docs/API.md
SWAP_SECONDS = 2.5
CLIENTS = 8

# Exchanges two paths (a directory and a symlink) atomically with renameat2(RENAME_EXCHANGE)
# for argv[3] seconds, an even number of times (so the directory ends where it began); prints
# the count.
SWAPPER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
a, b, end = sys.argv[1].encode(), sys.argv[2].encode(), time.monotonic() + float(sys.argv[3])
swaps = 0
while time.monotonic() < end:
    for _ in range(1000):
        if libc.renameat2(-100, a, -100, b, 2) != 0:  # AT_FDCWD, RENAME_EXCHANGE
            sys.exit("renameat2: " + os.strerror(ctypes.get_errno()))
    swaps += 1000
print(swaps)
"""


class SourceRoots(SharedServerCase):
    """Against openat2 (the kernel's, when it has it)."""
    WALK = False

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="pcc-sources-")
        cls.root = os.path.join(cls.tmp, "root")
        cls.outside = os.path.join(cls.tmp, "outside")
        for directory in ("root/pkg", "outside/pkg"):
            os.makedirs(os.path.join(cls.tmp, directory))
        cls.inside_file = cls.write("root/pkg/m.py", "MARK = %r\n" % INSIDE_MARK)
        cls.write("outside/pkg/m.py", "MARK = %r\n" % SECRET_MARK)
        cls.secret = cls.write("outside/secret.py", "MARK = %r\n" % SECRET_MARK)
        saved = os.environ.pop("PCC_SOURCES_WALK", None)
        if cls.WALK:
            os.environ["PCC_SOURCES_WALK"] = "1"
        try:
            cls.server = Server(cls.tmp, "--workers", "2", "--source-root", cls.root)
        finally:
            os.environ.pop("PCC_SOURCES_WALK", None)
            if saved is not None:
                os.environ["PCC_SOURCES_WALK"] = saved

    @classmethod
    def write(cls, name, text):
        path = os.path.join(cls.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        os.utime(path, (MTIME, MTIME))
        return path

    def read_by_server(self, path, mtime=MTIME):
        params = {"magic": MAGIC, "path": path, "mtime": mtime}
        return self.server.request("POST", "/v1/compile?" + query(params), b"")

    def test_directory_swapped_for_a_symlink_never_reads_outside(self):
        status, _, data = self.read_by_server(self.inside_file)
        self.assertEqual(status, 200, data)
        digest = json.loads(data)["digest"]
        link = os.path.join(self.root, "pkg.swap")
        os.symlink(os.path.join(self.outside, "pkg"), link)
        swapper = subprocess.Popen([PYTHON, "-c", SWAPPER, os.path.join(self.root, "pkg"), link,
                                    str(SWAP_SECONDS)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
                answers = [a for chunk in pool.map(lambda _: self.compile_while(swapper),
                                                   range(CLIENTS)) for a in chunk]
            out, err = swapper.communicate(timeout=SWAP_SECONDS + 30)
        finally:
            if swapper.poll() is None:
                swapper.kill()
                swapper.communicate(timeout=10)
            os.unlink(link)
        self.assertEqual(swapper.returncode, 0, err)
        self.assertTrue(os.path.isdir(os.path.join(self.root, "pkg")) and
                        not os.path.islink(os.path.join(self.root, "pkg")))
        leaks, served, refused = [], 0, 0
        for status, data in answers:
            pyc = base64.b64decode(json.loads(data)["pyc"]) if status == 200 else b""
            if SECRET_MARK.encode() in data + pyc:
                leaks.append(status)
            elif status == 200:
                served += 1
                self.assertEqual(json.loads(data)["digest"], digest)
                self.assertIn(INSIDE_MARK, marshal.loads(pyc[16:]).co_consts)
            else:
                refused += 1
                self.assertEqual((status, json.loads(data)["error"]), (403, "forbidden"), data)
        self.assertEqual(len(leaks), 0, "the file outside the root was read: %d of %d answers "
                         "(statuses %s) after %s swaps" % (len(leaks), len(answers),
                                                          sorted(set(leaks)), out.strip()))
        # the race was run: the path was seen both as the directory and as the symlink
        self.assertGreater(served, 0)
        self.assertGreater(refused, 0)
        with open(os.path.join(self.tmp, "server.log"), "rb") as f:
            walks = b"--source-root paths are resolved one component at a time" in f.read()
        self.assertEqual(walks, self.WALK, "the server uses the resolver asked for")

    def compile_while(self, swapper):
        """Compiles with empty bodies until the swapper is done (bounded); the answers."""
        answers, deadline = [], time.monotonic() + SWAP_SECONDS + 10
        while swapper.poll() is None and time.monotonic() < deadline:
            status, _, data = self.read_by_server(self.inside_file)
            answers.append((status, data))
        return answers

    def test_refusals_do_not_tell_what_exists(self):
        os.symlink(self.secret, os.path.join(self.root, "out.py"))
        os.symlink(os.path.join(self.outside, "missing.py"), os.path.join(self.root, "gone.py"))
        os.symlink(os.path.join(self.outside, "pkg"), os.path.join(self.root, "outdir"))
        os.mkfifo(os.path.join(self.root, "fifo.py"))
        paths = {
            "outside, existing": self.secret,
            "outside, absent": os.path.join(self.outside, "missing.py"),
            "outside, a system file": "/etc/passwd",
            "outside, no such directory": "/no-such-directory/m.py",
            "..": os.path.join(self.root, "..", "outside", "secret.py"),
            ".., absent": os.path.join(self.root, "..", "outside", "missing.py"),
            ".. staying inside": os.path.join(self.root, "pkg", "..", "pkg", "m.py"),
            "a symlink out": os.path.join(self.root, "out.py"),
            "a dangling symlink": os.path.join(self.root, "gone.py"),
            "a symlinked directory": os.path.join(self.root, "outdir", "m.py"),
            "inside, absent": os.path.join(self.root, "missing.py"),
            "inside, a directory": os.path.join(self.root, "pkg"),
            "inside, a FIFO": os.path.join(self.root, "fifo.py"),
        }
        answers = {}  # (status, body): what was asked
        for what, path in paths.items():
            mtime = int(os.stat(path).st_mtime) if os.path.exists(path) else MTIME
            status, _, data = self.read_by_server(path, mtime)
            self.assertNotIn(SECRET_MARK.encode(), data, what)
            answers.setdefault((status, data[:200]), []).append(what)
        self.assertEqual(len(answers), 1, "the answers differ:\n" + "\n".join(
            "%s for %s" % (answer, ", ".join(whats)) for answer, whats in answers.items()))
        status, data = next(iter(answers))
        self.assertEqual((status, json.loads(data)), (403, {"error": "forbidden",
                                                           "message": REFUSED}))


class SourceRootsWalk(SourceRoots):
    """The same against the openat walk, the fallback without openat2."""
    WALK = True
