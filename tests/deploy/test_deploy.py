#!/usr/bin/env python3
"""test_deploy.py: the `deploy` suite (issue 14): what is shipped to run pycached, each item tried
on the real files and programs:
- `meson install` (into a DESTDIR): libpycached as a shared library with pycached.h and a
  pkg-config file, from which a C program is built and run against a real server; the man
  pages, generated from --help, render without warnings and list every option; the systemd
  unit, the hook's .pth, the LICENSE;
- the systemd unit: `systemd-analyze verify` says nothing, `systemd-analyze security` scores it
  at most SECURITY_THRESHOLD, and (release build) every system call the server and its workers
  make in a run under strace is one its SystemCallFilter allows;
- the unit's user model: a server started as an unprivileged user with the unit's two ambient
  capabilities runs its workers as --worker-user with no capability left;
- deploy/Dockerfile: dockerfile-utils' linter (npm) says nothing, and the fields it must have;
- deploy/k8s/: yamllint (Debian), every object validated against the Kubernetes schema
  (kubernetes-models, npm: validate_k8s.mjs), and the fields a deployment needs.
The Debian package is built and installed on a fresh root by deploy/test-package.sh (too long
for a test).

Run by meson (`meson test deploy`) with PCC_* paths in the environment (tests/meson.build).
Every loop is bounded; every process started is stopped by pid.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from test_e2e import MAGIC, run_tests  # noqa: E402

SOURCE_ROOT = os.environ.get("PCC_SOURCE_ROOT", os.path.join(HERE, "..", ".."))
BUILD_ROOT = os.environ.get("PCC_BUILD_ROOT", os.path.join(SOURCE_ROOT, "build"))
PYCACHED = os.environ.get("PCC_PYCACHED", os.path.join(BUILD_ROOT, "server", "pycached"))
SANITIZED = os.environ.get("PCC_SANITIZED", "0") == "1"
NODE_MODULES = os.path.join(HERE, "node_modules")
SECURITY_THRESHOLD = 25  # systemd-analyze security's exposure x 10 (2.2 when written)


def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def wait_listening(proc, timeout=30):
    """Reads proc's stdout until the listening line; returns the port."""
    deadline = time.monotonic() + timeout
    for _ in range(50):
        if time.monotonic() > deadline:
            break
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            return int(m.group(1))
    raise RuntimeError("pycached did not start")


def stop(proc, timeout=30):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if proc.stdout:
        proc.stdout.close()
    return proc.returncode


def compile_once(port, tmp):
    """POSTs one source for compiling; returns the HTTP status."""
    path = os.path.join(tmp, "mod.py")
    with open(path, "w") as f:
        f.write("def f(x):\n    return x * 2\n")
    st = os.stat(path)
    url = "http://127.0.0.1:%d/v1/compile?magic=%s&path=%s&mtime=%d&size=%d" % (
        port, MAGIC, path, int(st.st_mtime), st.st_size)
    req = urllib.request.Request(url, data=open(path, "rb").read(), method="POST",
                                 headers={"Content-Type": "text/x-python",
                                          "X-Pycached-Client": "deploy"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status


def proc_status(pid):
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return fields


def children(pid):
    out = run(["pgrep", "-P", str(pid)]).stdout
    return [int(p) for p in out.split()]


class UserModel(unittest.TestCase):
    """The unit's user model without systemd: the server as an unprivileged user holding only
    CAP_SETUID and CAP_SETGID (ambient, as AmbientCapabilities= gives them), --worker-user."""

    SERVER_USER, WORKER_USER = "nobody", "daemon"

    def setUp(self):
        if os.geteuid() != 0 or not shutil.which("setpriv"):
            self.skipTest("needs root and setpriv (util-linux)")
        self.tmp = tempfile.mkdtemp(prefix="pcc-deploy-user-")
        os.chmod(self.tmp, 0o755)
        shutil.chown(self.tmp, self.SERVER_USER)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_workers_run_as_worker_user_without_capabilities(self):
        proc = subprocess.Popen(
            ["setpriv", "--reuid", self.SERVER_USER, "--regid", "nogroup", "--clear-groups",
             "--inh-caps", "+setuid,+setgid", "--ambient-caps", "+setuid,+setgid",
             PYCACHED, "--port", "0", "--store", os.path.join(self.tmp, "store"),
             "--workers", "2", "--worker-user", self.WORKER_USER],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            port = wait_listening(proc)
            server = proc_status(proc.pid)
            self.assertEqual(server["Uid"][0], "65534")
            self.assertNotEqual(int(server["CapEff"][0], 16), 0)  # the premise: it has them
            self.assertEqual(compile_once(port, self.tmp), 200)
            workers = children(proc.pid)
            self.assertEqual(len(workers), 2, workers)
            worker_uid = run(["id", "-u", self.WORKER_USER]).stdout.strip()
            for pid in workers:
                status = proc_status(pid)
                self.assertEqual(status["Uid"], [worker_uid] * 4, pid)
                for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
                    self.assertEqual(int(status[cap][0], 16), 0, "worker %d %s %s" % (
                        pid, cap, status[cap][0]))
        finally:
            self.assertEqual(stop(proc), 0)


class Installed(unittest.TestCase):
    """`meson install` into a DESTDIR, and what it put there."""

    @classmethod
    def setUpClass(cls):
        cls.destdir = tempfile.mkdtemp(prefix="pcc-deploy-install-")
        os.chmod(cls.destdir, 0o755)
        rc = run(["meson", "install", "-C", BUILD_ROOT, "--destdir", cls.destdir, "--no-rebuild",
                  "--quiet"], timeout=300)
        if rc.returncode != 0:
            raise RuntimeError("meson install failed: " + rc.stdout + rc.stderr)
        info = json.loads(run(["meson", "introspect", "--buildoptions", BUILD_ROOT]).stdout)
        opts = {o["name"]: o["value"] for o in info}
        cls.prefix = opts["prefix"]
        cls.root = cls.destdir + cls.prefix
        cls.libdir = os.path.join(cls.root, opts["libdir"])
        cls.unitdir = opts["systemdunitdir"] or os.path.join(cls.prefix, "lib/systemd/system")
        cls.mandir = os.path.join(cls.root, opts["mandir"])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.destdir, ignore_errors=True)

    def test_files(self):
        for path in ("bin/pycached", "bin/pycachectl", "include/pycached/pycached.h",
                     "include/pycached/proto.h", "include/pycached/pcc_limits.h",
                     "lib/sysusers.d/pycached.conf", "share/doc/pycached/LICENSE",
                     "share/doc/pycached/OPERATIONS.md"):
            self.assertTrue(os.path.exists(os.path.join(self.root, path)), path)
        self.assertTrue(os.path.islink(os.path.join(self.libdir, "libpycached.so")))
        self.assertTrue(os.path.exists(os.path.join(self.libdir, "libpycached.so.0")))
        self.assertTrue(os.path.exists(os.path.join(self.libdir, "pkgconfig", "pycached.pc")))
        self.assertTrue(os.path.exists(self.destdir + self.unitdir + "/pycached.service"))
        self.assertTrue(os.path.exists(os.path.join(SOURCE_ROOT, "LICENSE")))
        # the hook: its package and the .pth beside it
        pth = [os.path.join(d, f) for d, _, files in os.walk(self.root) for f in files
               if f == "pycached.pth"]
        self.assertEqual(len(pth), 1, pth)
        self.assertTrue(os.path.exists(os.path.join(os.path.dirname(pth[0]), "pycached",
                                                    "_hook.py")))

    def test_a_program_built_from_pkg_config_talks_to_a_server(self):
        tmp = tempfile.mkdtemp(prefix="pcc-deploy-pc-")
        try:
            src = os.path.join(tmp, "health.c")
            with open(src, "w") as f:
                f.write(HEALTH_PROGRAM)
            env = dict(os.environ, PKG_CONFIG_SYSROOT_DIR=self.destdir,
                       PKG_CONFIG_PATH=os.path.join(self.libdir, "pkgconfig"))
            flags = run(["pkg-config", "--cflags", "--libs", "pycached"], env=env)
            self.assertEqual(flags.returncode, 0, flags.stderr)
            self.assertIn("-I" + self.root + "/include/pycached", flags.stdout)
            exe = os.path.join(tmp, "health")
            cc = run(["cc", "-std=c11", "-Wall", "-Werror", *SANITIZE_FLAGS, src, "-o", exe,
                      *flags.stdout.split()])
            self.assertEqual(cc.returncode, 0, cc.stderr)
            ldd = run(["ldd", exe], env=dict(os.environ, LD_LIBRARY_PATH=self.libdir)).stdout
            self.assertIn(os.path.join(self.libdir, "libpycached.so.0"), ldd)
            proc = subprocess.Popen([PYCACHED, "--port", "0", "--store",
                                     os.path.join(tmp, "store"), "--workers", "1"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                port = wait_listening(proc)
                out = run([exe, "http://127.0.0.1:%d" % port],
                          env=dict(os.environ, LD_LIBRARY_PATH=self.libdir))
                self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
                self.assertEqual(json.loads(out.stdout.splitlines()[0])["status"], "ok")
                self.assertEqual(out.stdout.splitlines()[1], "magic " + MAGIC)
                # and a server that is not there is an error, not a crash
                proc_rc = stop(proc)
                self.assertEqual(proc_rc, 0)
                gone = run([exe, "http://127.0.0.1:%d" % port],
                           env=dict(os.environ, LD_LIBRARY_PATH=self.libdir))
                self.assertEqual(gone.returncode, 3, gone.stdout + gone.stderr)
            finally:
                stop(proc)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def man_page(self, program, page):
        path = os.path.join(self.mandir, "man" + page[-1], page)
        self.assertTrue(os.path.exists(path), path)
        render = run(["man", "--warnings=all", "-l", path],
                     env=dict(os.environ, MANWIDTH="200", LC_ALL="C.UTF-8"))
        self.assertEqual(render.returncode, 0, render.stderr)
        self.assertEqual(render.stderr, "", render.stderr)
        text = re.sub(r".\x08", "", render.stdout)
        help_text = run([program, "--help"]).stdout
        options = sorted(set(re.findall(r"--[a-z][a-z0-9-]+", help_text)))
        self.assertGreater(len(options), 5)
        for option in options:
            self.assertIn(option, text, "%s lacks %s" % (page, option))
        return text

    def test_man_pages_list_every_option(self):
        text = self.man_page(PYCACHED, "pycached.8")
        self.assertIn("SIGHUP", text)
        pycachectl = os.environ.get("PCC_PYCACHECTL", os.path.join(BUILD_ROOT, "client",
                                                                  "pycachectl"))
        text = self.man_page(pycachectl, "pycachectl.1")
        self.assertIn("admin backup", text)

    def verify_root(self):
        """A root for systemd-analyze: the installed tree, the host's units (targets the unit
        names) and the kill its ExecReload runs."""
        root = tempfile.mkdtemp(prefix="pcc-deploy-root-")
        shutil.copytree("/usr/lib/systemd/system", os.path.join(root, "usr/lib/systemd/system"),
                        symlinks=True)
        shutil.copytree(self.destdir, root, symlinks=True, dirs_exist_ok=True)
        os.makedirs(os.path.join(root, "bin"), exist_ok=True)
        shutil.copy(shutil.which("kill"), os.path.join(root, "bin", "kill"))
        return root

    def test_unit_verifies_and_scores(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("needs systemd-analyze")
        root = self.verify_root()
        try:
            unit = open(os.path.join(root + self.unitdir, "pycached.service")).read()
            self.assertIn("ExecStart=%s/bin/pycached " % self.prefix, unit)
            verify = run(["systemd-analyze", "verify", "--man=no", "--root=" + root,
                          "pycached.service"])
            self.assertEqual((verify.returncode, verify.stdout + verify.stderr), (0, ""))
            security = run(["systemd-analyze", "security", "--offline=yes", "--root=" + root,
                            "--threshold=%d" % SECURITY_THRESHOLD, "pycached.service"])
            self.assertEqual(security.returncode, 0, security.stdout[-2000:] + security.stderr)
            score = re.search(r"Overall exposure level for pycached.service: ([0-9.]+)",
                              security.stdout)
            self.assertIsNotNone(score, security.stdout[-500:])
            print("systemd-analyze security: exposure %s" % score.group(1))
            for setting in ("Type=notify", "WatchdogSec=", "ExecReload=/bin/kill -HUP $MAINPID",
                            "StateDirectory=pycached", "ProtectSystem=strict",
                            "ProtectHome=yes", "NoNewPrivileges=yes", "PrivateTmp=yes",
                            "RestrictAddressFamilies=", "SystemCallFilter=", "User=pycached",
                            "--worker-user pycached-worker"):
                self.assertIn(setting, unit)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def test_unit_syscall_filter_allows_every_call_made(self):
        if SANITIZED:
            self.skipTest("a sanitizer build's calls (LeakSanitizer's ptrace) are not the "
                          "shipped program's")
        if not shutil.which("strace") or os.geteuid() != 0:
            self.skipTest("needs strace and root")
        unit = open(self.destdir + self.unitdir + "/pycached.service").read()
        allowed = syscall_filter(unit)
        self.assertIn("read", allowed)
        self.assertNotIn("ptrace", allowed)
        tmp = tempfile.mkdtemp(prefix="pcc-deploy-strace-")
        os.chmod(tmp, 0o755)
        trace = os.path.join(tmp, "trace")
        try:
            proc = subprocess.Popen(
                ["strace", "-f", "-qq", "-o", trace, PYCACHED, "--port", "0", "--store",
                 os.path.join(tmp, "store"), "--workers", "2"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                port = wait_listening(proc, timeout=60)
                self.assertEqual(compile_once(port, tmp), 200)
                with urllib.request.urlopen("http://127.0.0.1:%d/v1/stats" % port,
                                            timeout=30) as resp:
                    self.assertEqual(resp.status, 200)
                server = [p for p in children(proc.pid)]  # strace's child: the server
                for pid in server:
                    os.kill(pid, signal.SIGHUP)
                time.sleep(0.3)
                for pid in server:
                    os.kill(pid, signal.SIGTERM)
                proc.wait(60)
            finally:
                stop(proc)
            calls, wx = set(), []
            with open(trace) as f:
                for line in f:
                    m = re.match(r"^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)[( ]", line)
                    if m:
                        calls.add(m.group(1))
                    if re.search(r"mprotect\(.*PROT_EXEC|mmap\(.*PROT_WRITE\|PROT_EXEC", line):
                        wx.append(line.strip())
            self.assertIn("execve", calls)
            self.assertIn("seccomp", calls)  # the embedded workers' filter was installed
            self.assertEqual(sorted(calls - allowed), [])
            self.assertEqual(wx, [], "MemoryDenyWriteExecute= would refuse these")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


    def test_unit_syscall_filter_allows_a_unix_socket_listener(self):
        """--listen unix:PATH under the unit's filter: a stale socket probed (connect) and
        removed (unlink), bind, chown and chmod, a connection, the socket removed at stop."""
        if SANITIZED:
            self.skipTest("a sanitizer build's calls are not the shipped program's")
        if not shutil.which("strace") or os.geteuid() != 0:
            self.skipTest("needs strace and root")
        allowed = syscall_filter(open(self.destdir + self.unitdir + "/pycached.service").read())
        tmp = tempfile.mkdtemp(prefix="pcc-deploy-strace-unix-")
        sock, trace = os.path.join(tmp, "pycached.sock"), os.path.join(tmp, "trace")
        try:
            stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stale.bind(sock)  # what a killed server leaves: probed, then removed
            stale.close()
            proc = subprocess.Popen(
                ["strace", "-f", "-qq", "-o", trace, PYCACHED, "--listen", "unix:" + sock,
                 "--socket-group", str(os.getgid()), "--store", os.path.join(tmp, "store"),
                 "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                line = proc.stdout.readline()
                self.assertIn("listening on unix:" + sock, line)
                health = run(["curl", "-sS", "--max-time", "30", "--unix-socket", sock,
                              "http://localhost/healthz"])
                self.assertIn('"status":"ok"', health.stdout, health.stderr)
                for pid in children(proc.pid):
                    os.kill(pid, signal.SIGTERM)
                proc.wait(60)
            finally:
                stop(proc)
            self.assertFalse(os.path.exists(sock))
            calls = set()
            with open(trace) as f:
                for line in f:
                    m = re.match(r"^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)[( ]", line)
                    if m:
                        calls.add(m.group(1))
            for names in ({"connect"}, {"bind"}, {"unlink", "unlinkat"},
                          {"chown", "fchownat"}, {"chmod", "fchmodat"}):
                self.assertTrue(names & calls, "none of %s made: %s" % (names, sorted(calls)))
            self.assertEqual(sorted(calls - allowed), [])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def npm_tool(*parts):
    path = os.path.join(NODE_MODULES, *parts)
    if not os.path.exists(path):
        raise unittest.SkipTest("needs `npm ci` in tests/deploy (deploy/test.sh runs it)")
    return path


class Dockerfile(unittest.TestCase):
    """deploy/Dockerfile: the linter, then what it must hold (no container engine here)."""

    path = os.path.join(SOURCE_ROOT, "deploy", "Dockerfile")

    def instructions(self):
        text = open(self.path).read().replace("\\\n", " ")
        return [line.strip().split(None, 1) for line in text.splitlines()
                if line.strip() and not line.strip().startswith("#")]

    def test_lint(self):
        lint = run(["node", npm_tool("dockerfile-utils", "bin", "dockerfile-utils"), "lint",
                    "--json", self.path])
        self.assertEqual(lint.returncode, 0, lint.stderr)
        self.assertEqual(json.loads(lint.stdout), [])

    def test_stages_user_volume_healthcheck(self):
        ins = self.instructions()
        froms = [args for op, args in ins if op == "FROM"]
        self.assertGreaterEqual(len(froms), 2, "multi-stage")
        self.assertTrue(all(f.startswith("debian:bookworm") for f in froms), froms)
        final = ins[max(i for i, (op, _) in enumerate(ins) if op == "FROM"):]
        ops = {op: args for op, args in final}
        self.assertIn("COPY", ops)
        self.assertIn("--from=build", ops["COPY"])
        user = ops["USER"].split(":")[0]
        self.assertTrue(user.isdigit() and int(user) != 0, "a numeric non-root USER")
        self.assertIn("/var/lib/pycached", ops["VOLUME"])
        self.assertIn("8700", ops["EXPOSE"])
        self.assertIn("health", ops["HEALTHCHECK"])  # pycachectl health: GET /healthz
        self.assertIn("/var/lib/pycached/store", ops["ENTRYPOINT"])
        self.assertIn("--tokens", ops["CMD"])
        # the uid the manifests run as
        for name in ("central.yaml", "node-local.yaml"):
            self.assertIn("runAsUser: %s" % user,
                          open(os.path.join(SOURCE_ROOT, "deploy", "k8s", name)).read())


class Kubernetes(unittest.TestCase):
    """deploy/k8s/: yamllint, the schema, then the fields a deployment of pycached needs."""

    folder = os.path.join(SOURCE_ROOT, "deploy", "k8s")

    @classmethod
    def setUpClass(cls):
        cls.files = sorted(os.path.join(cls.folder, f) for f in os.listdir(cls.folder)
                           if f.endswith(".yaml"))
        import yaml
        cls.objects = [o for f in cls.files for o in yaml.safe_load_all(open(f)) if o]

    def of_kind(self, kind):
        return [o for o in self.objects if o["kind"] == kind]

    def test_yamllint(self):
        if not shutil.which("yamllint"):
            self.skipTest("needs yamllint")
        lint = run(["yamllint", "-s", "-c", os.path.join(self.folder, ".yamllint"), *self.files])
        self.assertEqual(lint.returncode, 0, lint.stdout)

    def test_schema(self):
        npm_tool("kubernetes-models")
        check = run(["node", os.path.join(HERE, "validate_k8s.mjs"), *self.files])
        results = [json.loads(line) for line in check.stdout.splitlines()]
        self.assertEqual(check.returncode, 0, [r for r in results if r["error"]] or check.stderr)
        self.assertEqual(len(results), len(self.objects))

    def test_central_and_node_local(self):
        central = self.of_kind("StatefulSet") + self.of_kind("Deployment")
        self.assertEqual(len(central), 1)
        self.assertEqual(len(self.of_kind("DaemonSet")), 1)
        services = self.of_kind("Service")
        for workload in central + self.of_kind("DaemonSet"):
            labels = workload["spec"]["template"]["metadata"]["labels"]
            self.assertEqual(workload["spec"]["selector"]["matchLabels"], labels)
            matching = [s for s in services if s["spec"]["selector"] == labels]
            self.assertEqual(len(matching), 1, workload["metadata"]["name"])
            pod = workload["spec"]["template"]["spec"]
            self.assertTrue(pod["securityContext"]["runAsNonRoot"])
            (container,) = pod["containers"]
            self.assertIn("requests", container["resources"])
            self.assertIn("limits", container["resources"])
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                self.assertEqual(container[probe]["httpGet"]["path"], "/healthz", probe)
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            self.assertEqual(mounts["store"], "/var/lib/pycached")
            args = container["args"]
            tokens = args[args.index("--tokens") + 1]
            self.assertTrue(tokens.startswith(mounts["tokens"] + "/"), tokens)
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            secret = volumes["tokens"]["secret"]["secretName"]
            self.assertIn(secret, [s["metadata"]["name"] for s in self.of_kind("Secret")])
            if workload["kind"] == "StatefulSet":
                self.assertEqual(workload["spec"]["replicas"], 1)  # one writer per store
                self.assertIn("store", [t["metadata"]["name"]
                                        for t in workload["spec"]["volumeClaimTemplates"]])
            else:
                self.assertIn("hostPath", volumes["store"])
        node_service = [s for s in services if s["metadata"]["name"] == "pycached-node"]
        self.assertEqual(node_service[0]["spec"]["internalTrafficPolicy"], "Local")

    def test_the_secret_is_a_token_file_pycached_accepts(self):
        (secret,) = self.of_kind("Secret")
        tmp = tempfile.mkdtemp(prefix="pcc-deploy-k8s-")
        try:
            tokens = os.path.join(tmp, os.path.basename("tokens.json"))
            with open(tokens, "w") as f:
                f.write(secret["stringData"]["tokens.json"])
            os.chmod(tokens, 0o600)
            proc = subprocess.Popen([PYCACHED, "--port", "0", "--store",
                                     os.path.join(tmp, "store"), "--workers", "1",
                                     "--tokens", tokens],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                wait_listening(proc)
                note = proc.stdout.readline()
                self.assertIn("3 tokens from", note)
            finally:
                self.assertEqual(stop(proc), 0)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def syscall_filter(unit):
    """The system calls a unit's SystemCallFilter= lines allow, groups expanded with
    systemd-analyze syscall-filter (allow lists add, ~ lists take away)."""
    groups, current = {}, None
    for line in run(["systemd-analyze", "syscall-filter"]).stdout.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if line.startswith("@"):
            current = groups.setdefault(s, [])
        elif current is not None:
            current.append(s)

    def expand(name, seen):
        if not name.startswith("@"):
            return {name}
        if name in seen:
            return set()
        seen.add(name)
        out = set()
        for member in groups.get(name, []):
            out |= expand(member, seen)
        return out

    allowed = set()
    for value in re.findall(r"^SystemCallFilter=(.*)$", unit, re.M):
        deny = value.startswith("~")
        names = set()
        for name in value.lstrip("~").split():
            names |= expand(name, set())
        allowed = allowed - names if deny else allowed | names
    return allowed


HEALTH_PROGRAM = r"""
/* health.c: a libpycached program built from pkg-config: GET /healthz, then the server's
 * default magic. Exit 3 when the server cannot be reached. */
#include <stdio.h>
#include <stdlib.h>
#include <pycached.h>

int main(int argc, char **argv)
{
  pcc_client_config config = {.base_url = argc > 1 ? argv[1] : NULL, .timeout_ms = 10000};
  pcc_client *client = NULL;
  pcc_client_status rc = pcc_client_open(&config, &client);
  if (rc != PCC_CLIENT_OK)
    return 2;
  char *body = NULL;
  long status = 0;
  rc = pcc_client_get_json(client, "/healthz", &body, &status);
  if (rc != PCC_CLIENT_OK) {
    fprintf(stderr, "health: %s\n", pcc_client_strerror(rc));
    pcc_client_close(client);
    return rc == PCC_CLIENT_CONNECT ? 3 : 1;
  }
  printf("%s\n", body);
  free(body);
  pcc_magic magic;
  if (pcc_client_default_magic(client, &magic) != PCC_CLIENT_OK)
    return 1;
  char hex[2 * PCC_MAGIC_LEN + 1];
  pcc_magic_to_hex(&magic, hex);
  printf("magic %s\n", hex);
  pcc_client_close(client);
  return 0;
}
"""
SANITIZE_FLAGS = os.environ.get("PCC_SANITIZE_FLAGS", "").split()


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
