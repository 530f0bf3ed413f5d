"""End-to-end tests of access control from the client side: `pycachectl admin ...`, the token
options of pycachectl, and the import hook sending PYCACHED_TOKEN, against a real pycached
started with `--tokens FILE` and `--backup-dir DIR` (docs/API.md, "Access control" and
"Admin API"; docs/CLI.md, "admin").

Run by meson (`meson test admin-cli`), which passes PCC_PYCACHED, PCC_PYCACHECTL,
PCC_REFERENCE_PYTHON and PCC_HOOK_ROOT. Every process started is stopped by pid; every loop is
bounded.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import (MAGIC, PYCACHECTL, PYTHON, Server, SharedServerCase,  # noqa: E402
                      make_tree, run_tests)

# The server wants tokens of 16 to 512 printable characters.
TOKENS = {
    "ci": ("ci-7b3f9a1e5c2d8f40", ["read", "compile"]),
    "ops": ("ops-2c8e4a6f0b1d9e37", ["read", "compile", "admin"]),
    "reader": ("rd-5e1c7a9b3d2f4068", ["read"]),
}
CI, OPS, READER = (TOKENS[n][0] for n in ("ci", "ops", "reader"))
EXIT_MISS, EXIT_USAGE, EXIT_OTHER, EXIT_AUTH = 1, 2, 6, 7
SANITIZER_ENV = ("ASAN_", "LSAN_", "UBSAN_", "LD_PRELOAD")


def write_tokens(path):
    with open(path, "w") as f:
        json.dump({"tokens": [{"name": name, "token": token, "roles": roles}
                              for name, (token, roles) in TOKENS.items()]}, f)
    os.chmod(path, 0o600)




class AdminCase(SharedServerCase):
    """One server with tokens and a backup directory for the whole class."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="pcc-admin-")
        cls.tokens = os.path.join(cls.tmp, "tokens.json")
        cls.backups = os.path.join(cls.tmp, "backups")
        os.makedirs(cls.backups)
        write_tokens(cls.tokens)
        cls.server = Server(cls.tmp, "--workers", "2", "--tokens", cls.tokens,
                            "--backup-dir", cls.backups)


    def ctl(self, *args, token=OPS, env=None, stdin=subprocess.DEVNULL, server=None):
        """Runs pycachectl with the token in PYCACHED_TOKEN (None: no token at all)."""
        run_env = {"PATH": "/usr/bin:/bin"}
        run_env.update({k: v for k, v in os.environ.items() if k.startswith(SANITIZER_ENV)})
        if token is not None:
            run_env["PYCACHED_TOKEN"] = token
        run_env.update(env or {})
        return subprocess.run([PYCACHECTL, "--server", server or self.server.url, *args],
                              capture_output=True, text=True, env=run_env, stdin=stdin,
                              timeout=120)

    def ok(self, *args, **kw):
        run = self.ctl(*args, **kw)
        self.assertEqual(run.returncode, 0, "%s: %s" % (args, run.stderr))
        return run

    def sources(self, name, count):
        """count small modules under a fresh directory, compiled into the store (ci token)."""
        root = make_tree(os.path.join(self.tmp, name),
                         {"m%d.py" % i: "VALUE = %d\n" % i for i in range(count)})
        paths = sorted(os.path.join(root, "m%d.py" % i) for i in range(count))
        for path in paths:
            self.ok("compile", path, token=CI)
        return root, paths

    def ls_paths(self, *args):
        run = self.ok("admin", "ls", "--json", "--all", *args)
        pages = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
        return [e["path"] for page in pages for e in page["entries"]], pages


class Tokens(AdminCase):
    def test_without_a_token_every_endpoint_but_healthz_is_exit_7(self):
        self.ok("health", token=None)
        for args in (["stats"], ["admin", "stats"], ["admin", "ls"]):
            run = self.ctl(*args, token=None)
            self.assertEqual(run.returncode, EXIT_AUTH, run.stderr)
            self.assertIn("unauthorized", run.stderr)
            self.assertIn("PYCACHED_TOKEN", run.stderr, "says how to give a token")

    def test_an_unknown_token_is_exit_7(self):
        run = self.ctl("admin", "stats", token="not-a-known-token-0000")
        self.assertEqual(run.returncode, EXIT_AUTH, run.stderr)
        self.assertIn("does not accept the token", run.stderr)

    def test_a_token_without_the_admin_role_is_exit_7_naming_the_role(self):
        self.ok("stats", token=CI)
        for token in (CI, READER):
            run = self.ctl("admin", "magics", token=token)
            self.assertEqual(run.returncode, EXIT_AUTH, run.stderr)
            self.assertIn("forbidden", run.stderr)
            self.assertIn("'admin'", run.stderr)
        path = os.path.join(make_tree(os.path.join(self.tmp, "ro"), {"r.py": "R = 1\n"}), "r.py")
        run = self.ctl("compile", path, token=READER)
        self.assertEqual(run.returncode, EXIT_AUTH, run.stderr)
        self.assertIn("'compile'", run.stderr)

    def test_token_file_option_and_variable(self):
        good = os.path.join(self.tmp, "ops.token")
        with open(good, "w") as f:
            f.write("\n  %s \n" % OPS)
        self.ok("--token-file", good, "admin", "stats", token=None)
        self.ok("admin", "stats", token=None, env={"PYCACHED_TOKEN_FILE": good})
        # --token-file wins over PYCACHED_TOKEN; PYCACHED_TOKEN over PYCACHED_TOKEN_FILE
        self.ok("--token-file", good, "admin", "stats", token=CI)
        run = self.ctl("admin", "stats", token=CI, env={"PYCACHED_TOKEN_FILE": good})
        self.assertEqual(run.returncode, EXIT_AUTH, run.stderr)
        run = self.ctl("--token-file", os.path.join(self.tmp, "missing"), "admin", "stats")
        self.assertEqual(run.returncode, 5, run.stderr)
        empty = os.path.join(self.tmp, "empty.token")
        open(empty, "w").close()
        run = self.ctl("--token-file", empty, "admin", "stats")
        self.assertEqual(run.returncode, EXIT_USAGE, run.stderr)
        run = self.ctl("admin", "stats", token="two words")
        self.assertEqual(run.returncode, EXIT_USAGE, run.stderr)


class Admin(AdminCase):
    def test_stats_summary_and_json(self):
        self.sources("stats", 2)
        run = self.ok("admin", "stats")
        for word in ("total:", MAGIC, "LATENCY", "P99", "store:"):
            self.assertIn(word, run.stdout)
        stats = json.loads(self.ok("admin", "stats", "--json").stdout)
        self.assertGreaterEqual(stats["total"]["entries"], 2)
        self.assertIn(MAGIC, stats["magics"])
        self.assertEqual(stats["latency"]["compile"]["buckets"][-1][1],
                         stats["latency"]["compile"]["count"])

    def test_magics_table_and_json(self):
        self.sources("magics", 1)
        run = self.ok("admin", "magics")
        self.assertIn(MAGIC, run.stdout)
        self.assertIn("cpython", run.stdout)
        magics = json.loads(self.ok("admin", "magics", "--json").stdout)
        self.assertIn(MAGIC, [b["magic"] for b in magics["backends"]])
        self.assertIn(MAGIC, [s["magic"] for s in magics["store"] if s["served"]])

    def test_ls_pages_with_limit_and_all(self):
        root, paths = self.sources("paged", 5)
        one = self.ok("admin", "ls", "--prefix", root + "/", "--limit", "2")
        rows = [line for line in one.stdout.splitlines()[1:] if line.strip()]
        self.assertLessEqual(len(rows), 2)
        self.assertIn("--cursor", one.stderr, "says how to get the next page")
        every = self.ok("admin", "ls", "--prefix", root + "/", "--limit", "2", "--all")
        lines = every.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["MAGIC", "OPT", "KIND", "BYTES", "HITS", "PATH"])
        self.assertEqual(sorted(line.split()[-1] for line in lines[1:]), paths)
        self.assertNotIn("--cursor", every.stderr)
        listed, pages = self.ls_paths("--prefix", root + "/", "--limit", "2")
        self.assertEqual(sorted(listed), paths)
        self.assertGreaterEqual(len(pages), 3)
        self.assertIsNone(pages[-1]["next_cursor"])
        for entry in pages[0]["entries"]:
            self.assertEqual((entry["magic"], entry["opt"], entry["kind"]), (MAGIC, 0, "code"))
        listed, _ = self.ls_paths("--prefix", root + "/", "--magic", MAGIC, "--opt", "1")
        self.assertEqual(listed, [], "no -O entries were compiled")

    def test_show_then_rm(self):
        _, (path,) = self.sources("show", 1)
        self.ok("get", path, token=READER)  # one hit
        run = self.ok("admin", "show", "--magic", MAGIC, path)
        self.assertIn(path, run.stdout)
        self.assertIn("code", run.stdout)
        entry = json.loads(self.ok("admin", "show", "--magic", MAGIC, "--json", path).stdout)
        self.assertEqual((entry["path"], entry["kind"], entry["hits"]), (path, "code", 1))
        run = self.ctl("admin", "rm", "--magic", MAGIC, path)  # stdin is not a terminal
        self.assertEqual(run.returncode, EXIT_USAGE, run.stderr)
        self.assertIn("--yes", run.stderr)
        self.ok("admin", "show", "--magic", MAGIC, path)  # still there
        run = self.ok("admin", "rm", "--magic", MAGIC, "--yes", path)
        self.assertIn("removed 1", run.stdout)
        run = self.ctl("admin", "show", "--magic", MAGIC, path)
        self.assertEqual(run.returncode, EXIT_MISS, run.stderr)
        self.assertEqual(self.ctl("get", path, token=CI).returncode, EXIT_MISS)
        run = self.ctl("admin", "rm", "--magic", MAGIC, "--yes", path)
        self.assertEqual(run.returncode, EXIT_MISS, run.stderr)

    def test_rm_asks_on_a_terminal(self):
        _, (path,) = self.sources("asked", 1)
        for answer, code, left in (("n\n", EXIT_MISS, True), ("y\n", 0, False)):
            master, slave = os.openpty()
            try:
                os.write(master, answer.encode())
                run = self.ctl("admin", "rm", "--magic", MAGIC, path, stdin=slave)
            finally:
                os.close(slave)
                os.close(master)
            self.assertEqual(run.returncode, code, run.stderr)
            self.assertIn("[y/N]", run.stderr)
            shown = self.ctl("admin", "show", "--magic", MAGIC, path).returncode
            self.assertEqual(shown == 0, left, answer)

    def test_invalidate_by_prefix_and_by_magic_and_prefix(self):
        root, paths = self.sources("inval", 3)
        other, _ = self.sources("inval-other", 1)
        run = self.ctl("admin", "invalidate", "--prefix", root + "/")
        self.assertEqual(run.returncode, EXIT_USAGE, "refused without --yes off a terminal")
        run = self.ok("admin", "invalidate", "--prefix", root + "/", "--yes", "--json")
        self.assertEqual(json.loads(run.stdout), {"removed": 3})
        self.assertEqual(self.ls_paths("--prefix", root + "/")[0], [])
        self.assertEqual(len(self.ls_paths("--prefix", other + "/")[0]), 1)
        run = self.ok("admin", "invalidate", "--magic", MAGIC, "--prefix", other + "/", "--yes")
        self.assertIn("removed 1 entry", run.stdout)
        run = self.ctl("admin", "invalidate", "--yes")
        self.assertEqual(run.returncode, EXIT_USAGE, "needs --magic or --prefix")

    def test_retire_a_served_magic_is_refused(self):
        self.sources("retire", 1)
        run = self.ctl("admin", "retire", "--yes", MAGIC)
        self.assertEqual(run.returncode, EXIT_OTHER, run.stderr)
        self.assertIn("mismatch", run.stderr)
        run = self.ok("admin", "retire", "--yes", "3b0d0d0a")  # nothing stored for it
        self.assertIn("removed 0 entries", run.stdout)
        self.assertEqual(self.ctl("admin", "retire", MAGIC).returncode, EXIT_USAGE)

    def test_backup_on_the_server_and_downloaded(self):
        _, paths = self.sources("backup", 2)
        run = self.ok("admin", "backup")
        self.assertTrue(run.stdout.startswith("backup"), run.stdout)
        made = json.loads(self.ok("admin", "backup", "--json").stdout)
        self.assertTrue(made["path"].startswith(self.backups), made)
        self.assertTrue(os.path.exists(made["path"]), made)
        self.assertGreater(made["bytes"], 0)

        target = os.path.join(self.tmp, "restore", "store", "data.mdb")
        os.makedirs(os.path.dirname(target))
        run = self.ok("admin", "backup", "--download", target)
        self.assertIn("downloaded", run.stdout)
        self.assertGreater(os.path.getsize(target), 0)
        self.assertEqual(os.listdir(os.path.dirname(target)), ["data.mdb"], "no temporary left")
        run = self.ctl("admin", "backup", "--download", os.path.join(self.tmp, "no", "dir", "x"))
        self.assertEqual(run.returncode, 5, run.stderr)
        # the download is a store: a server started on it has the entries
        restored = Server(os.path.join(self.tmp, "restore"), "--workers", "1",
                          "--tokens", self.tokens)
        try:
            listed = self.ctl("admin", "ls", "--json", "--all", server=restored.url)
            self.assertEqual(listed.returncode, 0, listed.stderr)
            found = {e["path"] for line in listed.stdout.splitlines()
                     for e in json.loads(line)["entries"]}
            self.assertTrue(set(paths) <= found, (paths, found))
        finally:
            restored.stop()

    def test_backup_without_a_backup_dir_is_not_an_access_error(self):
        workdir = os.path.join(self.tmp, "nobackup")
        os.makedirs(workdir)
        server = Server(workdir, "--workers", "1", "--tokens", self.tokens)
        try:
            run = self.ctl("admin", "backup", server=server.url)
            self.assertEqual(run.returncode, EXIT_OTHER, run.stderr)
            self.assertIn("403", run.stderr)
        finally:
            server.stop()

    def test_option_misuse_is_a_usage_error(self):
        for args in (["admin"], ["admin", "frobnicate"], ["admin", "show", "/x"],
                     ["admin", "show", "--magic", MAGIC, "relative.py"],
                     ["admin", "ls", "--limit", "0"], ["admin", "ls", "--limit", "1001"],
                     ["admin", "stats", "--yes"], ["admin", "ls", "--all", "--cursor", "c"],
                     ["admin", "retire", "--yes", "zz"], ["get", "--all", "x.py"]):
            run = self.ctl(*args)
            self.assertEqual(run.returncode, EXIT_USAGE, (args, run.stderr))


class StatsZero(AdminCase):
    """Zeroes its own server's counters."""

    def test_stats_zero_zeroes_the_counters_and_keeps_the_store(self):
        _, paths = self.sources("zero", 2)
        for path in paths:
            self.ok("get", path, token=CI)
        stats = json.loads(self.ok("stats", "--json", token=CI).stdout)
        self.assertEqual((stats["hits"], stats["compiles"], stats["hit_ratio"]), (2, 2, 1))
        run = self.ctl("stats", "--zero", token=READER)
        self.assertEqual(run.returncode, EXIT_AUTH, run.stderr)
        self.assertIn("admin", run.stderr)
        run = self.ok("stats", "--zero")
        self.assertIn("counters zeroed", run.stdout)
        flat = dict(line.split(None, 1) for line in run.stdout.splitlines()[1:])
        self.assertEqual((flat["hits"], flat["compiles"], flat["misses.absent"],
                          flat["hit_ratio"]), ("0", "0", "0", "null"))
        stats = json.loads(self.ok("stats", "--json", token=CI).stdout)
        self.assertEqual((stats["hits"], stats["compiles"]), (0, 0))
        self.assertEqual(len(self.ls_paths()[0]), 2, "the store keeps its entries")
        self.ok("get", paths[0], token=CI)  # still a hit
        self.assertIn("hit ratio: 100.0%", self.ok("admin", "stats").stdout)


class Help(unittest.TestCase):
    """pycachectl CMD --help and pycachectl help CMD, for every command --help lists."""

    VALUES = {"opt": "0", "magic": MAGIC, "limit": "5", "jobs": "2", "timeout": "1000"}

    def run_ctl(self, *args):
        return subprocess.run([PYCACHECTL, *args], capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)

    def commands_and_options(self):
        text = self.run_ctl("--help").stdout
        commands, options, section = [], {}, None
        for line in text.splitlines():
            if line and not line.startswith(" "):
                section = line
            elif section == "Commands:" and line.startswith("  ") and line[2] != " ":
                commands.append([line.split()[0]])
            elif section.startswith("Admin commands") and line.startswith("  admin "):
                commands.append(line.split()[:2])
            elif section.startswith("Options") and "--" in line:
                words = line.split("--", 1)[1].split()
                options[words[0]] = words[1] if len(words) > 1 and words[1][0].isupper() else None
        return commands, options

    def test_every_command_has_its_own_help(self):
        commands, options = self.commands_and_options()
        self.assertGreaterEqual(len(commands), 18, commands)
        self.assertIn(["stats"], commands)
        self.assertIn(["admin", "ls"], commands)
        for words in commands:
            run = self.run_ctl(*words, "--help")
            self.assertEqual(run.returncode, 0, (words, run.stderr))
            self.assertTrue(run.stdout.startswith("usage: pycachectl [OPTIONS] " +
                                                  " ".join(words)), (words, run.stdout))
            self.assertEqual(self.run_ctl("help", *words).stdout, run.stdout, words)
            self.assertEqual(self.run_ctl("-h", *words).stdout, run.stdout, words)
            listed = {line.split("--", 1)[1].split()[0] for line in run.stdout.splitlines()
                      if line.startswith("  ") and "--" in line}
            self.assertTrue({"server", "timeout", "token-file", "help"} <= listed, words)
            for option, arg in options.items():
                if option in listed:
                    continue
                # an option the help leaves out is one the command refuses
                refused = self.refused(words, option, arg)
                self.assertTrue(refused, (words, option))

    def refused(self, words, option, arg):
        given = ["--" + option] + ([self.VALUES.get(option, "/x.py")] if arg else [])
        extra = []
        for _ in range(3):  # the words the command wants first, so that the option is judged
            run = self.run_ctl(*given, *words, *extra)
            if "does not apply" in run.stderr or " takes --server" in run.stderr:
                return run.returncode == EXIT_USAGE
            if run.returncode != EXIT_USAGE or not ("missing" in run.stderr or
                                                    "wants" in run.stderr):
                return False
            extra.append("/x.py")
        return False

    def test_stats_help_names_zero_and_the_admin_group_lists_its_commands(self):
        run = self.run_ctl("stats", "--help")
        self.assertIn("--zero", run.stdout)
        self.assertNotIn("--prefix", run.stdout)
        run = self.run_ctl("admin", "--help")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("admin purge", run.stdout)
        self.assertEqual(self.run_ctl("help", "nonsense").returncode, EXIT_USAGE)
        self.assertIn("usage: pycachectl [OPTIONS] exec",
                      self.run_ctl("exec", "--help").stdout)


class Purge(AdminCase):
    """Purges its own server's store."""

    def test_purge(self):
        _, paths = self.sources("purge", 3)
        run = self.ctl("admin", "purge")
        self.assertEqual(run.returncode, EXIT_USAGE, run.stderr)
        self.assertIn("--yes", run.stderr)
        self.assertEqual(len(self.ls_paths()[0]), 3, "nothing removed without --yes")
        run = self.ok("admin", "purge", "--yes")
        self.assertIn("removed 3 entries", run.stdout)
        self.assertEqual(self.ls_paths()[0], [])
        self.assertIn("no entries", self.ok("admin", "ls").stdout)
        self.assertEqual(self.ctl("get", paths[0], token=CI).returncode, EXIT_MISS)


class Hook(AdminCase):
    """The import hook sends the token of PYCACHED_TOKEN / PYCACHED_TOKEN_FILE."""

    CODE = ("import sys, json; sys.path.insert(0, %r); import pkg, pycached; "
            "print(json.dumps({'value': pkg.alpha.VALUE, 'stats': pycached.stats()}))")

    def package(self, name):
        # the name in every source: the same bytes elsewhere would be hits by digest
        return make_tree(os.path.join(self.tmp, name), {
            "pkg/__init__.py": "from . import alpha, beta\nNAME = %r\n" % name,
            "pkg/alpha.py": "VALUE = 42\nNAME = %r\n" % name,
            "pkg/beta.py": "def double(x):\n    return 2 * x\nNAME = %r\n" % name,
        })

    def hook_run(self, code, env=None, ctl_args=()):
        # profiles off: these tests follow the token through per-module requests
        run_env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
                   "PYCACHED_PROFILE": "off"}
        run_env.update({k: v for k, v in os.environ.items() if k.startswith(SANITIZER_ENV)})
        run_env.update(env or {})
        return subprocess.run([PYCACHECTL, "--server", self.server.url, *ctl_args, "exec", "--",
                               PYTHON, "-c", code], capture_output=True, text=True,
                              env=run_env, timeout=120)

    def imported(self, root, env=None, ctl_args=()):
        run = self.hook_run(self.CODE % root, env, ctl_args)
        self.assertEqual(run.returncode, 0, run.stderr)
        out = json.loads(run.stdout)
        self.assertEqual(out["value"], 42)
        return out["stats"]

    def test_a_compile_token_gets_compiles_then_hits(self):
        root = self.package("hook-ci")
        first = self.imported(root, {"PYCACHED_TOKEN": CI})
        self.assertEqual((first["compiles_asked"], first["fallbacks"]), (3, {}))
        second = self.imported(root, {"PYCACHED_TOKEN": CI})
        self.assertEqual((second["hits"], second["local_compile"], second["fallbacks"]),
                         (3, 0, {}))
        token_file = os.path.join(self.tmp, "ci.token")
        with open(token_file, "w") as f:
            f.write(CI + "\n")
        third = self.imported(root, {"PYCACHED_TOKEN_FILE": token_file})
        self.assertEqual((third["hits"], third["fallbacks"]), (3, {}))
        fourth = self.imported(root, ctl_args=("--token-file", token_file))
        self.assertEqual((fourth["hits"], fourth["fallbacks"]), (3, {}))
        reader = self.imported(root, {"PYCACHED_TOKEN": READER})
        self.assertEqual((reader["hits"], reader["fallbacks"]), (3, {}))

    def test_no_token_falls_back_once_then_the_breaker_stays_open(self):
        root = self.package("hook-none")
        stats = self.imported(root)
        self.assertEqual(stats["fallbacks"], {"unauthorized": 1, "breaker-open": 2})
        self.assertEqual(stats["local_compile"], 3)
        stats = self.imported(root, {"PYCACHED_TOKEN": "not-a-known-token-0000"})
        self.assertEqual(stats["fallbacks"], {"unauthorized": 1, "breaker-open": 2})

    def test_a_read_only_token_stops_asking_for_compiles(self):
        root = self.package("hook-reader")
        stats = self.imported(root, {"PYCACHED_TOKEN": READER})
        # the first compile is refused (403); later modules are looked up only
        self.assertEqual(stats["fallbacks"], {"forbidden": 1, "miss": 2})
        self.assertEqual((stats["hits"], stats["local_compile"]), (0, 3))

    def test_status_shows_whether_a_token_is_set_but_never_the_token(self):
        code = "import runpy; runpy.run_module('pycached', run_name='__main__')"
        run = self.hook_run(code, {"PYCACHED_TOKEN": CI})
        self.assertIn("token:", run.stdout)
        self.assertIn("set (from PYCACHED_TOKEN)", run.stdout)
        self.assertNotIn(CI, run.stdout + run.stderr)
        run = self.hook_run(code)
        self.assertIn("token:       none", run.stdout)

    def test_a_bad_token_file_leaves_the_hook_off(self):
        code = "import pycached; print(pycached.is_active())"
        run = self.hook_run(code, {"PYCACHED_TOKEN_FILE": os.path.join(self.tmp, "missing")})
        self.assertEqual(run.stdout.strip(), "False")
        self.assertIn("PYCACHED_TOKEN_FILE", run.stderr)
        empty = os.path.join(self.tmp, "blank.token")
        with open(empty, "w") as f:
            f.write("  \n")
        run = self.hook_run(code, {"PYCACHED_TOKEN_FILE": empty})
        self.assertEqual(run.stdout.strip(), "False")
        self.assertIn("no token", run.stderr)


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
