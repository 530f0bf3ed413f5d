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


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
