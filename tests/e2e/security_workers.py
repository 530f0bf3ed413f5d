"""security_workers.py: the confinement of the compiler workers (issue 9), run by
test_security.py with the other security modules.

- A worker that makes a call its seccomp filter forbids (as one subverted by a hostile source
  would) is killed by the kernel: its compile answers 503, the server replaces it and goes on
  serving. The worker's hidden --sandbox-probe option makes the call; a wrapper script given as
  --worker passes it to the first worker only, so the replacement is a normal one.
- Started as root, the workers run as a uid and gid of their own, named by no user and no group,
  without supplementary groups; --worker-user still chooses.
- --worker-recycle N replaces each worker after N compiles.
"""
import grp
import json
import os
import pwd
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import PYCACHED, ServersCase, query, source_params  # noqa: E402  (shared harness)

# The embedded-CPython worker of this build (pycached finds it there too).
WORKER = os.path.join(os.path.dirname(os.path.abspath(PYCACHED)), "..", "compiler",
                      "pycached-cpython-worker")
WRAPPER = """#!/bin/sh
# the first worker attempts the forbidden call at its first compile; its replacements do not
if [ -e '{marker}' ]; then exec '{worker}'; fi
: > '{marker}'
exec '{worker}' --sandbox-probe {kind}
"""


def worker_pids(server):
    """The server's children, from /proc (pgrep may hang under the ASan build's LD_PRELOAD)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == server.proc.pid:
            pids.append(int(entry))
    return sorted(pids)


def status_fields(pid):
    """/proc/PID/status as {field: value}."""
    with open("/proc/%d/status" % pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


class WorkerSandbox(ServersCase):
    prefix = "pcc-sec-workers-"

    def setUp(self):
        super().setUp()
        # Workers may run as another uid (the server runs as root here): they must reach the
        # wrapper and create its marker.
        self.shared = os.path.join(self.tmp, "shared")
        os.makedirs(self.shared)
        os.chmod(self.shared, 0o1777)

    def start(self, name, *args):
        workdir = os.path.join(self.tmp, name)
        os.makedirs(workdir)
        return super().start("--workers", "1", *args, workdir=workdir)

    def compile(self, server, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        status, _, data = server.request("POST", "/v1/compile?" + query(
            source_params(path, with_hash=False)), text.encode())
        return status, data

    def test_a_forbidden_call_kills_the_worker_and_the_server_goes_on(self):
        for kind in ("open", "socket", "exec", "fork"):
            with self.subTest(kind=kind):
                wrapper = os.path.join(self.tmp, "probe-%s.sh" % kind)
                with open(wrapper, "w") as f:
                    f.write(WRAPPER.format(marker=os.path.join(self.shared, kind), kind=kind,
                                           worker=WORKER))
                os.chmod(wrapper, 0o755)
                server = self.start(kind, "--worker", wrapper)
                status, data = self.compile(server, "victim_%s.py" % kind, "V = 1\n")
                self.assertEqual(status, 503, "the worker was not killed: %r" % data)
                self.assertEqual(json.loads(data)["error"], "compiler-unavailable")
                self.assertEqual(server.request("GET", "/healthz")[0], 200)
                status, data = self.compile(server, "after_%s.py" % kind, "A = 2\n")
                self.assertEqual(status, 200, data)
                self.assertEqual(server.stats()["compilers"][0]["restarts"], 1)

    @unittest.skipUnless(os.geteuid() == 0, "the workers change user only under root")
    def test_workers_run_as_a_uid_of_their_own(self):
        server = self.start("own-uid")
        (pid,) = worker_pids(server)
        fields = status_fields(pid)
        uids, gids = set(fields["Uid"].split()), set(fields["Gid"].split())
        self.assertEqual(len(uids), 1, fields["Uid"])  # real, effective, saved, filesystem
        self.assertEqual(len(gids), 1, fields["Gid"])
        uid, gid = int(uids.pop()), int(gids.pop())
        self.assertNotIn(uid, (0, pwd.getpwnam("nobody").pw_uid))
        self.assertRaises(KeyError, pwd.getpwuid, uid)
        self.assertRaises(KeyError, grp.getgrgid, gid)
        self.assertEqual(fields["Groups"].strip(), "")
        self.assertEqual((fields["NoNewPrivs"], fields["Seccomp"]), ("1", "2"))
        self.assertEqual(self.compile(server, "own.py", "O = 1\n")[0], 200)
        # --worker-user still decides
        server = self.start("named", "--worker-user", "nobody")
        (pid,) = worker_pids(server)
        self.assertEqual(status_fields(pid)["Uid"].split()[0], str(pwd.getpwnam("nobody").pw_uid))

    def test_workers_are_recycled(self):
        server = self.start("recycle", "--worker-recycle", "2")
        first = worker_pids(server)
        for i in range(2):
            self.assertEqual(first, worker_pids(server))
            self.assertEqual(self.compile(server, "r%d.py" % i, "R = %d\n" % i)[0], 200)
        second = worker_pids(server)
        for _ in range(100):  # the replacement starts after the answer: bounded, 10 s
            if len(second) == 1 and second != first:
                break
            time.sleep(0.1)
            second = worker_pids(server)
        self.assertEqual(len(second), 1)
        self.assertNotEqual(first, second)
        self.assertEqual(self.compile(server, "r2.py", "R = 2\n")[0], 200)
        self.assertEqual(worker_pids(server), second)
        self.assertEqual(server.stats()["compilers"][0]["restarts"], 0)  # not a failure
        run = subprocess.run([PYCACHED, "--store", os.path.join(self.tmp, "s"),
                              "--worker-recycle", "0"], capture_output=True, text=True,
                             timeout=30)
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("worker-recycle", run.stderr)
