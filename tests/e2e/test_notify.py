#!/usr/bin/env python3
"""test_notify.py: the `notify` suite (issue 14): pycached speaks systemd's notification protocol
(sd_notify(3), server/notify.c) to a unix datagram socket this test owns, named by NOTIFY_SOCKET
as systemd names its own for a Type=notify service:
- READY=1 once the listener answers, with a STATUS line;
- WATCHDOG=1 at half of WATCHDOG_USEC, from start to shutdown, and none when WATCHDOG_PID names
  another process (the watchdog is for the pid systemd started);
- RELOADING=1 then READY=1 again around a SIGHUP;
- STOPPING=1 on SIGTERM, before the exit.

The server is the real one on loopback; every wait is bounded and every server is stopped by
pid.
"""
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import Server, run_tests  # noqa: E402

WATCHDOG_USEC = 200000  # systemd's WatchdogSec=0.2s: a WATCHDOG=1 every 100 ms


class Listener:
    """The notification socket: a unix datagram socket at a path of the test's own."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []  # (monotonic time, set of assignments) in arrival order
        self.seen = 0       # messages before this index were matched by wait_for already

    def read(self, seconds):
        """Collects whatever arrives within seconds."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return
            self.messages.append((time.monotonic(), set(data.decode().split("\n"))))

    def wait_for(self, assignment, seconds=30):
        """Reads until a message holding assignment arrives; returns its index, or None."""
        deadline = time.monotonic() + seconds
        while True:
            for i, (_, fields) in enumerate(self.messages):
                if assignment in fields and i >= self.seen:
                    self.seen = i + 1
                    return i
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.read(min(left, 0.5))

    def count(self, assignment, start=0):
        return sum(1 for _, fields in self.messages[start:] if assignment in fields)

    def close(self):
        self.sock.close()


class Notify(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pcc-notify-")
        os.chmod(self.tmp, 0o755)
        self.listener = Listener(os.path.join(self.tmp, "notify.sock"))
        self.server = None

    def tearDown(self):
        if self.server is not None:
            self.server.stop()
        self.listener.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, **env):
        """A server started with env added to the environment (as systemd would set it)."""
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            self.server = Server(self.tmp, "--workers", "1")
        finally:
            for k, v in saved.items():
                if v is None:
                    del os.environ[k]
                else:
                    os.environ[k] = v
        return self.server

    def test_ready_watchdog_reload_stopping(self):
        server = self.start(NOTIFY_SOCKET=self.listener.path, WATCHDOG_USEC=str(WATCHDOG_USEC))
        ready = self.listener.wait_for("READY=1")
        self.assertIsNotNone(ready, self.listener.messages)
        status = [f for f in self.listener.messages[ready][1] if f.startswith("STATUS=")]
        self.assertEqual(status, ["STATUS=listening on port %d" % server.port])
        self.assertEqual(server.request("GET", "/healthz")[0], 200)

        # the watchdog: about one a 100 ms; 1 s holds 10, a loaded machine may delay a few
        first = len(self.listener.messages)
        self.listener.read(1.0)
        pings = self.listener.count("WATCHDOG=1", first)
        self.assertGreaterEqual(pings, 4, self.listener.messages[first:])
        self.assertLessEqual(pings, 12, self.listener.messages[first:])

        server.proc.send_signal(signal.SIGHUP)
        reloading = self.listener.wait_for("RELOADING=1")
        self.assertIsNotNone(reloading, self.listener.messages)
        again = self.listener.wait_for("READY=1")
        self.assertIsNotNone(again, self.listener.messages)
        self.assertGreater(again, reloading)
        self.assertEqual(server.request("GET", "/healthz")[0], 200)

        # still pinged after the reload
        first = len(self.listener.messages)
        self.listener.read(0.5)
        self.assertGreaterEqual(self.listener.count("WATCHDOG=1", first), 2)

        server.proc.send_signal(signal.SIGTERM)
        stopping = self.listener.wait_for("STOPPING=1")
        self.assertIsNotNone(stopping, self.listener.messages)
        self.assertEqual(server.stop(), 0)
        # nothing after the exit: the watchdog thread was stopped
        after = len(self.listener.messages)
        self.listener.read(0.3)
        self.assertEqual(len(self.listener.messages), after, self.listener.messages[after:])

    def test_no_watchdog_for_another_pid(self):
        # WATCHDOG_PID names a process other than pycached (here: this test): READY, no pings
        self.start(NOTIFY_SOCKET=self.listener.path, WATCHDOG_USEC=str(WATCHDOG_USEC),
                   WATCHDOG_PID=str(os.getpid()))
        self.assertIsNotNone(self.listener.wait_for("READY=1"), self.listener.messages)
        self.listener.read(0.6)
        self.assertEqual(self.listener.count("WATCHDOG=1"), 0, self.listener.messages)

    def test_without_watchdog_usec_only_the_states(self):
        server = self.start(NOTIFY_SOCKET=self.listener.path)
        self.assertIsNotNone(self.listener.wait_for("READY=1"), self.listener.messages)
        self.listener.read(0.3)
        server.proc.send_signal(signal.SIGTERM)
        self.assertIsNotNone(self.listener.wait_for("STOPPING=1"), self.listener.messages)
        self.assertEqual(server.stop(), 0)
        self.assertEqual(self.listener.count("WATCHDOG=1"), 0, self.listener.messages)


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
