#!/usr/bin/env python3
"""test_connections.py: the `connections` suite (issue 10): what a client can do to the server's
connections, each test an attack that worked before (libmicrohttpd's connection timeout is an idle
timeout, and a connection past --max-connections waited in the listen backlog):
- headers dripped a byte a second are cut off at --header-timeout, on a fresh connection and on
  a kept-alive one, while /healthz answers a new client at once;
- a body dripped a byte every two seconds is cut off at --body-timeout;
- a flood of --max-connections connections, kept alive idle or silent since their accept, locks
  nobody out: /healthz and admin requests get through (an idle connection makes room, or the
  reserve answers), an ordinary request is served or answered 503 busy at once, and past the
  reserve a connection is closed at once instead of waiting;
- one address gets at most --max-connections-per-ip connections;
- a soft file-descriptor limit below what --max-connections needs is raised (out of descriptors,
  libmicrohttpd stops accepting and new connections wait in the backlog again);
- 256 kept-alive connections whose requests arrive at once on one HTTP thread are all answered
  at once (issue 12: libmicrohttpd 0.9.75's epoll loop takes 128 events a call and, after a
  full batch, waited for more with the idle timeout before serving the ones it had).

Every server runs on loopback with small limits, so that the suite takes seconds; every loop is
bounded and every socket and server is closed by the test that opened it.
"""
import json
import os
import resource
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import MAGIC, Server, run_tests  # noqa: E402

PROBE_TIMEOUT = 2.0  # seconds a probe waits; a connection stuck in the backlog takes all of it
QUICK = 0.1          # what "at once" means: the fastest of a few probes answers within this
REQUEST_LINE = b"GET /healthz HTTP/1.1\r\n"
DRIP_HEADERS = b"Host: 127.0.0.1\r\nX-Drip: " + b"d" * 60 + b"\r\n\r\n"


def probe(port, path="/healthz"):
    """One GET on a new connection: (status or None, seconds, headers, parsed body or error)."""
    t0 = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT)
    try:
        sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path).encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data) < body_end(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as e:  # a timeout (stuck) or a reset (refused)
        return None, time.monotonic() - t0, {}, repr(e)
    finally:
        sock.close()
    took = time.monotonic() - t0
    if not data:
        return None, took, {}, "closed without an answer"
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    return int(lines[0].split()[1]), took, headers, body


def body_end(data):
    """The length of a complete answer in data (its headers and Content-Length bytes)."""
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(data)


def closed_by_peer(sock):
    """Has the server closed sock (end of stream or reset)? Does not block."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(65536) == b""
    except OSError:
        return True


class Connections(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pcc-conns-")
        self.server = None
        self.socks = []

    def tearDown(self):
        for sock in self.socks:
            sock.close()
        code = self.server.stop() if self.server else 0
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.assertEqual(code, 0, "pycached exited with %r on SIGTERM" % code)

    def start(self, *args):
        self.server = Server(self.tmp, "--workers", "1", *args)
        return self.server.port

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=PROBE_TIMEOUT)
        self.socks.append(sock)
        return sock

    def sockets_open(self):
        """How many sockets the server process holds now (its listener, its connections)."""
        fd_dir = "/proc/%d/fd" % self.server.proc.pid
        count = 0
        for name in os.listdir(fd_dir):
            try:
                count += os.readlink(os.path.join(fd_dir, name)).startswith("socket:")
            except OSError:  # closed while we looked
                pass
        return count

    def flood(self, count):
        """count connections, connected and silent, once the server has accepted all of them
        (on a loaded machine its accept loop may lag the kernel's backlog). Bounded: 5 s."""
        before = self.sockets_open()
        socks = [self.connect() for _ in range(count)]
        deadline = time.monotonic() + 5.0
        while self.sockets_open() < before + count and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertGreaterEqual(self.sockets_open(), before + count, "the flood was not accepted")
        return socks

    def assert_quick(self, path, statuses):
        """A few probes of path from new connections: each answers one of statuses, the
        fastest within QUICK, none near PROBE_TIMEOUT. Returns the last (status, headers,
        body)."""
        times = []
        for _ in range(3):
            status, took, headers, body = probe(self.server.port, path)
            self.assertIn(status, statuses, "%s: %s after %.2f s" % (path, body, took))
            self.assertLess(took, 1.0, path)
            times.append(took)
        self.assertLess(min(times), QUICK, "%s took %s" % (path, times))
        return status, headers, body

    def drip(self, socks, data, interval, seconds):
        """Sends the i-th byte of data[k] on socks[k] after i intervals, until the server closes
        the sockets or seconds pass; probes /healthz between the bytes. Returns the second at
        which each socket was closed (None: never) and the probes' (status, seconds)."""
        t0 = time.monotonic()
        cut = [None] * len(socks)
        probes = []
        for i in range(int(seconds / interval) + 1):
            for k, sock in enumerate(socks):
                if cut[k] is None and i < len(data[k]):
                    try:
                        sock.send(data[k][i:i + 1])
                    except OSError:
                        cut[k] = time.monotonic() - t0
            probes.append(probe(self.server.port)[:2])
            until = t0 + (i + 1) * interval
            while time.monotonic() < until and None in cut:
                live = [s for k, s in enumerate(socks) if cut[k] is None]
                for sock in select.select(live, [], [], max(0, until - time.monotonic()))[0]:
                    if closed_by_peer(sock):
                        cut[socks.index(sock)] = time.monotonic() - t0
            if None not in cut:
                break
        return cut, probes

    # ---- (a) headers -------------------------------------------------------------------------

    def test_dripped_headers_are_cut_off_at_the_header_deadline(self):
        self.start("--header-timeout", "2")
        kept = self.connect()  # kept alive: one quick request, idle, then a request line and
        kept.sendall(REQUEST_LINE + b"Host: 127.0.0.1\r\n\r\n")  # headers a byte a second
        answer = kept.recv(4096)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:60])
        time.sleep(1.0)  # idle between its requests: not part of the next one's deadline
        kept.sendall(REQUEST_LINE)
        fresh = [self.connect() for _ in range(6)]  # a byte a second from the first on
        cut, probes = self.drip(fresh + [kept], [REQUEST_LINE + DRIP_HEADERS] * 6 +
                                [DRIP_HEADERS], 1.0, 6.0)
        for k, when in enumerate(cut):
            self.assertIsNotNone(when, "dripping connection %d was never cut off" % k)
            self.assertGreater(when, 1.5, "cut off before the deadline")
            self.assertLess(when, 3.0, "cut off long after the deadline")
        for status, took in probes:
            self.assertEqual(status, 200)
        self.assertLess(min(took for _, took in probes), QUICK, probes)
        self.assert_quick("/healthz", (200,))

    # ---- (b) body ----------------------------------------------------------------------------

    def test_dripped_body_is_cut_off_at_the_body_deadline(self):
        self.start("--body-timeout", "3")
        query = urllib.parse.urlencode({"magic": MAGIC, "path": "/drip/m.py", "mtime": 1})
        sock = self.connect()
        sock.sendall(("POST /v1/compile?%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Type: text/x-python\r\nContent-Length: 40\r\n\r\n"
                      % query).encode())
        (when,), probes = self.drip([sock], [b"X = 1  # " + b"d" * 30 + b"\n"], 2.0, 8.0)
        self.assertIsNotNone(when, "the dripping body was never cut off")
        self.assertGreater(when, 2.5, "cut off before the deadline")
        self.assertLess(when, 4.5, "cut off long after the deadline")
        self.assertTrue(all(status == 200 for status, _ in probes), probes)
        # a body sent at once is not affected
        status, _, data = self.server.request("POST", "/v1/compile?" + query, b"X = 1\n",
                                              {"Content-Type": "text/x-python"})
        self.assertEqual(status, 200, data)

    # ---- (c) floods --------------------------------------------------------------------------

    def test_idle_keep_alive_flood_makes_room(self):
        self.start("--max-connections", "64")
        flood = [self.connect() for _ in range(64)]
        for sock in flood:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for sock in flood:
            answer = sock.recv(4096)
            self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:60])
        self.assert_quick("/healthz", (200,))
        status, headers, body = self.assert_quick("/v1/stats", (200, 503))
        self.assertEqual(status, 200, "an idle connection should have made room")
        time.sleep(0.3)
        evicted = sum(closed_by_peer(sock) for sock in flood)
        self.assertGreaterEqual(evicted, 1, "no idle connection was closed to make room")
        self.assertLessEqual(evicted, 6, "more idle connections closed than new ones came")

    def test_silent_flood_leaves_health_and_admin_and_answers_busy(self):
        self.start("--max-connections", "64")
        flood = self.flood(64)  # connected, silent: nothing to evict
        status, headers, body = self.assert_quick("/healthz", (200,))
        self.assertEqual(headers.get("connection"), "close", "a reserve connection stays open")
        self.assert_quick("/metrics", (200,))  # an admin route
        status, headers, body = self.assert_quick("/v1/stats", (503,))
        self.assertEqual(json.loads(body)["error"], "busy")
        self.assertEqual(headers.get("retry-after"), "1")
        self.assertEqual(headers.get("connection"), "close")
        # past the reserve (32 more), a connection is closed at once instead of waiting
        reserve = [self.connect() for _ in range(40)]
        refused = set()
        deadline = time.monotonic() + 1.0  # bounded; "at once" is checked by the probe below
        while len(refused) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
            refused |= {i for i, sock in enumerate(reserve) if i not in refused and closed_by_peer(sock)}
        self.assertGreaterEqual(len(refused), 8, "connections past the reserve were left waiting")
        status, took, _, error = probe(self.server.port)
        self.assertLess(took, 1.0, "a connection past the reserve waited: %s" % error)

    # ---- (d) per address ---------------------------------------------------------------------

    def test_connections_per_ip_are_limited(self):
        self.start("--max-connections-per-ip", "4")
        held = [self.connect() for _ in range(4)]
        time.sleep(0.2)
        status, took, _, error = probe(self.server.port)
        self.assertIsNone(status, "a fifth connection from one address was served")
        self.assertLess(took, 1.0, "refused late: %s" % error)
        held.pop().close()
        for _ in range(20):  # bounded: the server sees the close within a few polls
            time.sleep(0.05)
            status = probe(self.server.port)[0]
            if status is not None:
                break
        self.assertEqual(status, 200, "a slot freed by a close is not given again")

    # ---- (e) descriptors ---------------------------------------------------------------------

    def test_soft_descriptor_limit_is_raised_for_the_connections(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 2048:
            self.skipTest("hard RLIMIT_NOFILE %d is below what the test needs" % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # inherited by the server
        try:
            self.start("--max-connections", "1000")
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        with open("/proc/%d/limits" % self.server.proc.pid) as f:
            line = next(l for l in f if l.startswith("Max open files"))
        self.assertGreaterEqual(int(line.split()[3]), 1000 + 32, line)
        self.assert_quick("/healthz", (200,))

    # ---- (f) many requests at once -----------------------------------------------------------

    def answers(self, socks, seconds):
        """Reads one answer from each of socks (bounded: seconds in all); returns the statuses
        (None: no complete answer in time) and the seconds the last one took."""
        t0 = time.monotonic()
        data = {sock: b"" for sock in socks}
        waiting = set(socks)
        while waiting and time.monotonic() - t0 < seconds:
            for sock in select.select(list(waiting), [], [], 0.1)[0]:
                chunk = sock.recv(65536)
                data[sock] += chunk
                done = b"\r\n\r\n" in data[sock] and len(data[sock]) >= body_end(data[sock])
                if done or not chunk:
                    waiting.discard(sock)
        statuses = [int(data[s].split()[1]) if s not in waiting and data[s] else None
                    for s in socks]
        return statuses, time.monotonic() - t0

    def test_requests_arriving_at_once_on_one_thread_are_all_answered(self):
        count = 256
        self.start("--threads", "1", "--max-connections-per-ip", "0", "--idle-timeout", "30")
        socks = [self.connect() for _ in range(count)]
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        for sock in socks:  # one request each: all kept alive
            sock.sendall(request)
        statuses, took = self.answers(socks, 10.0)
        self.assertEqual(statuses, [200] * count, "the first requests (%.1f s)" % took)
        for rnd in range(3):  # every request in while the server cannot run: all ready at once
            self.server.proc.send_signal(signal.SIGSTOP)
            try:
                for sock in socks:
                    sock.sendall(request)
                time.sleep(0.1)
            finally:
                self.server.proc.send_signal(signal.SIGCONT)
            statuses, took = self.answers(socks, 5.0)
            self.assertEqual(statuses.count(200), count,
                             "round %d: %d of %d answered within 5 s" % (
                                 rnd, statuses.count(200), count))
            self.assertLess(took, 2.0, "round %d: answered after %.1f s" % (rnd, took))


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
