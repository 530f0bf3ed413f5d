"""End-to-end tests of pycached's logs (docs/OPERATIONS.md, "Logs"): real servers on loopback,
their stderr read as the log. Text lines are `TIMESTAMP LEVEL message key=value...` with an RFC
3339 UTC time, --log-format json lines are JSON objects, --log-level hides the levels below it,
--access-log has one line per request (reopened after logrotate's rename and a SIGHUP), every
state-changing admin action and every refused token has an audit line, and no token's secret is
in any log.

Run by meson (`meson test logs`) with PCC_PYCACHED and PCC_REFERENCE_PYTHON in the environment.
"""
import collections
import datetime
import http.client
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e  # noqa: E402
from test_e2e import MAGIC, PYCACHED, ServersCase, run_tests  # noqa: E402

TOKENS = {
    "ops": ("ops-secret-4f1e9a7c2b8d6035", ["read", "compile", "admin"]),
    "ci": ("ci-secret-8a2d5c7e1f9b3046", ["read", "compile"]),
}
WRONG = "wrong-secret-0c9e8d7b6a5f4132"
OPS = {"Authorization": "Bearer " + TOKENS["ops"][0]}
CI = {"Authorization": "Bearer " + TOKENS["ci"][0]}
SECRETS = [t for t, _ in TOKENS.values()] + [WRONG]

TEXT_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) "  # TIME LEVEL message
                       r"(error|warn |info |debug) (\S.*)$")
LEVELS = ("error", "warn", "info", "debug")


def rfc3339(text):
    """The time of an RFC 3339 UTC timestamp with milliseconds; raises ValueError otherwise."""
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text):
        raise ValueError("not RFC 3339 with milliseconds in UTC: %r" % text)
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)


def text_fields(rest):
    """The message and the key=value fields of a text line's rest (values maybe JSON-quoted)."""
    fields, msg = {}, rest
    for m in re.finditer(r' ([a-z_]+)=("(?:[^"\\]|\\.)*"|\S*)', rest):
        if not fields:
            msg = rest[:m.start()]
        fields[m.group(1)] = json.loads(m.group(2)) if m.group(2).startswith('"') else m.group(2)
    return msg, fields


def read_lines(path):
    with open(path, "rb") as f:
        return f.read().decode().splitlines()


def wait_for(predicate, what, timeout=10):
    """Polls predicate (bounded) until it returns a true value, which it returns."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


class LogsCase(ServersCase):
    prefix = "pcc-logs-"

    def setUp(self):
        super().setUp()
        self.tokens = os.path.join(self.tmp, "tokens.json")
        self.write_tokens(TOKENS)
        self.n = 0

    def write_tokens(self, tokens):
        with open(self.tokens, "w") as f:
            json.dump({"tokens": [{"name": n, "token": t, "roles": r}
                                  for n, (t, r) in tokens.items()]}, f)

    def server(self, *args, tokens=True):
        """A server in a directory of its own (its stderr: DIR/server.log)."""
        self.n += 1
        workdir = os.path.join(self.tmp, "s%d" % self.n)
        os.makedirs(workdir)
        extra = ("--tokens", self.tokens) if tokens else ()
        server = self.start("--workers", "1", *extra, *args, workdir=workdir)
        server.log_path = os.path.join(workdir, "server.log")
        return server

    def text_log(self, server):
        """The server's log as (time, level, message, fields), every line checked."""
        out = []
        for line in read_lines(server.log_path):
            m = TEXT_LINE.match(line)
            self.assertIsNotNone(m, "not TIMESTAMP LEVEL message: %r" % line)
            msg, fields = text_fields(m.group(3))
            out.append((rfc3339(m.group(1)), m.group(2).strip(), msg, fields))
        return out

    def json_log(self, path):
        out = []
        for line in read_lines(path):
            obj = json.loads(line)
            self.assertTrue({"ts", "level", "msg"} <= obj.keys(), line)
            rfc3339(obj["ts"])
            self.assertIn(obj["level"], LEVELS)
            out.append(obj)
        return out

    def assert_no_secret(self, *paths):
        for path in paths:
            with open(path, "rb") as f:
                data = f.read().decode()
            for secret in SECRETS:
                self.assertNotIn(secret, data, "a token's secret in %s" % path)

    def source(self, name, text):
        path = os.path.join(self.tmp, "src", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(os.path.dirname(path), 0o755)
        return path

    def compile(self, server, path, headers=CI):
        st = os.stat(path)
        query = test_e2e.query({"magic": MAGIC, "path": path, "mtime": int(st.st_mtime)})
        return server.request("POST", "/v1/compile?" + query, open(path, "rb").read(), headers)[0]


class Formats(LogsCase):
    def test_text_lines_have_an_rfc3339_time_a_level_and_the_message(self):
        before = datetime.datetime.now(datetime.timezone.utc)
        server = self.server()
        self.assertEqual(server.request("GET", "/v1/stats",
                                        headers={"Authorization": "Bearer " + WRONG})[0], 401)
        server.stop()
        lines = self.text_log(server)
        after = datetime.datetime.now(datetime.timezone.utc)
        self.assertTrue(lines, "no log line at all")
        for when, level, msg, _ in lines:
            self.assertIn(level, LEVELS)
            self.assertTrue(msg.strip())
            self.assertLessEqual(before - datetime.timedelta(seconds=1), when)
            self.assertLessEqual(when, after + datetime.timedelta(seconds=1))
        refused = [f for _, _, _, f in lines if f.get("audit") == "token-refused"]
        self.assertEqual(len(refused), 1, lines)

    def test_json_lines_are_objects_with_ts_level_msg(self):
        access = os.path.join(self.tmp, "access.json")
        server = self.server("--log-format", "json", "--access-log", access)
        odd = "/v1/a%22b%5Cc%09d"  # a quote, a backslash and a tab in the path
        self.assertEqual(server.request("GET", odd)[0], 404)
        self.assertEqual(server.request("GET", "/v1/stats")[0], 401)
        os.kill(server.proc.pid, signal.SIGHUP)  # a token-reload line
        wait_for(lambda: any(o.get("audit") == "token-reload"
                             for o in self.json_log(server.log_path)), "the reload's line")
        self.assertEqual(server.stop(), 0)
        main = self.json_log(server.log_path)
        self.assertTrue(any(o.get("audit") == "token-refused" for o in main), main)
        reload = [o for o in main if o.get("audit") == "token-reload"][0]
        self.assertEqual((reload["result"], reload["tokens"]), ("ok", 2))
        lines = self.json_log(access)
        self.assertEqual([(o["path"], o["status"]) for o in lines],
                         [('/v1/a"b\\c\td', 404), ("/v1/stats", 401)])
        self.assertIsInstance(lines[0]["bytes"], int)

    def test_a_line_past_the_limit_is_cut_and_marked(self):
        access = os.path.join(self.tmp, "access.log")
        access_json = os.path.join(self.tmp, "access.json")
        long_path = "/v1/" + "x" * 12000
        text = self.server("--access-log", access, tokens=False)
        self.assertEqual(text.request("GET", long_path)[0], 404)
        js = self.server("--access-log", access_json, "--log-format", "json", tokens=False)
        self.assertEqual(js.request("GET", long_path)[0], 404)
        text.stop()
        js.stop()
        line = wait_for(lambda: read_lines(access), "the access line")[0]
        self.assertEqual(len(line) + 1, 8192)  # PCC_LOG_LINE_MAX, its newline included
        self.assertTrue(line.endswith(" ...[cut]"), line[-40:])
        obj = self.json_log(access_json)[0]
        self.assertLess(len(read_lines(access_json)[0]) + 1, 8192)
        self.assertIs(obj["truncated"], True)
        self.assertTrue(long_path.startswith(obj["path"]) and len(obj["path"]) > 100)
        self.assertEqual(obj["status"], 404)

    def test_a_bad_format_or_level_is_refused_naming_it(self):
        for option, value in (("--log-format", "xml"), ("--log-level", "loud")):
            run = subprocess.run([PYCACHED, option, value, "--port", "0",
                                  "--store", os.path.join(self.tmp, "never")],
                                 capture_output=True, text=True, timeout=30)
            self.assertEqual(run.returncode, 2, run.stderr)
            self.assertIn(option, run.stderr)
            self.assertIn("'%s'" % value, run.stderr)
        run = subprocess.run([PYCACHED, "--port", "0", "--store", os.path.join(self.tmp, "never"),
                              "--access-log", os.path.join(self.tmp, "no", "such", "dir", "a.log")],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(run.returncode, 1, run.stderr)
        self.assertIn("--access-log", run.stderr)
        self.assertIn("No such file or directory", run.stderr)


class Levels(LogsCase):
    def low_descriptor_server(self, *args):
        """A server whose file-descriptor limit is too low for --max-connections 1024: a warn
        line at start (http.c, ensure_descriptors)."""
        wrapper = os.path.join(self.tmp, "low-nofile.sh")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\nulimit -n 512 || exit 9\nexec "%s" "$@"\n' % PYCACHED)
        os.chmod(wrapper, 0o755)
        saved, test_e2e.PYCACHED = test_e2e.PYCACHED, wrapper
        try:
            return self.server("--max-connections", "1024", *args)
        finally:
            test_e2e.PYCACHED = saved

    def levels_after_a_refusal(self, server):
        self.assertEqual(server.request("GET", "/v1/stats")[0], 401)
        server.stop()
        return self.text_log(server)

    def test_the_level_hides_the_levels_below_it_but_never_audit_lines(self):
        lines = self.levels_after_a_refusal(self.low_descriptor_server())
        warned = [m for _, level, m, _ in lines if level == "warn" and "RLIMIT_NOFILE" in m]
        self.assertEqual(len(warned), 1, lines)
        lines = self.levels_after_a_refusal(self.low_descriptor_server("--log-level", "error"))
        self.assertEqual([level for _, level, _, _ in lines], ["info"], "only the audit line")
        self.assertEqual(lines[0][3]["audit"], "token-refused")

    @unittest.skipUnless(os.geteuid() == 0, "the info line about the workers' uid needs root")
    def test_warn_hides_info_lines(self):
        note = "compiler workers run as uid"
        lines = self.levels_after_a_refusal(self.server())
        self.assertTrue(any(level == "info" and note in m for _, level, m, _ in lines), lines)
        lines = self.levels_after_a_refusal(self.server("--log-level", "warn"))
        self.assertFalse(any(note in m for _, _, m, _ in lines), lines)
        self.assertEqual([f.get("audit") for _, level, _, f in lines if level == "info"],
                         ["token-refused"])


class AccessLog(LogsCase):
    def test_one_line_per_request_with_status_bytes_time_and_token_name(self):
        access = os.path.join(self.tmp, "access.log")
        server = self.server("--access-log", access)
        path = self.source("one.py", "ONE = 1\n")
        requests = [  # method, path, body, headers, status
            ("GET", "/healthz", None, {}, 200),
            ("GET", "/v1/stats", None, CI, 200),
            ("GET", "/v1/stats", None, {}, 401),
            ("GET", "/v1/stats", None, {"Authorization": "Bearer " + WRONG}, 401),
            ("POST", "/v1/admin/purge", None, CI, 403),
            ("GET", "/v1/no-such-thing", None, {}, 404),
            ("DELETE", "/healthz", None, {}, 405),
            ("GET", "/v1/admin/stats", None, OPS, 200),
            ("POST", "/v1/batch", json.dumps({"lookups": [  # a streamed (chunked) answer
                {"magic": MAGIC, "path": "/no/such%d.py" % i, "mtime": 1, "size": 1}
                for i in range(50)]}).encode(), CI, 200),
        ]
        bodies = []
        for method, target, body, headers, status in requests:
            got, _, data = server.request(method, target, body, headers)
            self.assertEqual(got, status, (method, target, data))
            bodies.append(len(data))
        self.assertEqual(self.compile(server, path), 200)
        query = test_e2e.query(test_e2e.source_params(path))
        self.assertEqual(server.request("GET", "/v1/code?" + query, headers=CI)[0], 200)
        n = len(requests) + 2
        lines = wait_for(lambda: len(read_lines(access)) >= n and read_lines(access),
                         "%d access lines" % n)
        time.sleep(0.2)
        server.stop()
        lines = read_lines(access)
        self.assertEqual(len(lines), n, lines)
        parsed = []
        for line in lines:
            m = TEXT_LINE.match(line)
            self.assertIsNotNone(m, line)
            msg, fields = text_fields(m.group(3))
            self.assertEqual((m.group(2).strip(), msg), ("info", "request"))
            self.assertEqual(fields["remote"], "127.0.0.1")
            self.assertGreaterEqual(int(fields["us"]), 0)
            parsed.append(fields)
        seen = collections.Counter((f["method"], f["path"], f["status"]) for f in parsed)
        expected = collections.Counter((m, t, str(s)) for m, t, _, _, s in requests)
        expected.update([("POST", "/v1/compile", "200"), ("GET", "/v1/code", "200")])
        self.assertEqual(seen, expected)
        for (method, target, _, headers, status), size in zip(requests, bodies):
            row = [f for f in parsed if (f["method"], f["path"], f["status"]) ==
                   (method, target, str(status))]
            self.assertIn(str(size), [f["bytes"] for f in row], (method, target))
        named = {(f["path"], f.get("token"), f.get("role")) for f in parsed if "token" in f}
        self.assertEqual(named, {("/v1/stats", "ci", "read"), ("/v1/admin/stats", "ops", "admin"),
                                 ("/v1/compile", "ci", "compile"), ("/v1/code", "ci", "read"),
                                 ("/v1/batch", "ci", "read")})
        self.assertNotIn("?", "".join(f["path"] for f in parsed), "no query string")
        self.assert_no_secret(access, server.log_path)

    def test_reopened_on_sighup_after_logrotate_renamed_it(self):
        access = os.path.join(self.tmp, "access.log")
        server = self.server("--access-log", access, tokens=False)
        self.assertEqual(server.request("GET", "/healthz")[0], 200)
        wait_for(lambda: read_lines(access), "the first line")
        os.rename(access, access + ".1")
        self.assertEqual(server.request("GET", "/healthz")[0], 200)  # still to the renamed file
        wait_for(lambda: len(read_lines(access + ".1")) == 2, "the second line, in access.log.1")
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_for(lambda: os.path.exists(access), "access.log made again")
        self.assertEqual(stat.S_IMODE(os.stat(access).st_mode) & 0o007, 0, "not world-readable")
        self.assertEqual(server.request("GET", "/v1/stats")[0], 200)
        wait_for(lambda: read_lines(access), "the line after the reopen")
        server.stop()
        self.assertEqual(len(read_lines(access + ".1")), 2)
        self.assertEqual(len(read_lines(access)), 1)
        self.assertIn("path=/v1/stats", read_lines(access)[0])

    def test_requests_that_never_reach_a_handler_have_their_line_too(self):
        access = os.path.join(self.tmp, "access.log")
        server = self.server("--access-log", access, "--header-timeout", "1", tokens=False)
        # too large for libmicrohttpd's memory: it answers 431 itself
        big = b"GET /healthz?x=1 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"
        self.assertIn(b" 431 ", test_e2e.raw_exchange(server.port, big).split(b"\r\n")[0])
        # a request line, then silence: cut at --header-timeout
        self.assertEqual(test_e2e.raw_exchange(server.port, b"GET /v1/stats HTTP/1.1\r\n"), b"")
        lines = wait_for(lambda: len(read_lines(access)) >= 2 and read_lines(access), "2 lines")
        server.stop()
        fields = [text_fields(TEXT_LINE.match(line).group(3))[1] for line in read_lines(access)]
        self.assertEqual([(f["path"], f["status"]) for f in fields],
                         [("/healthz", "431"), ("/v1/stats", "0")], lines)
        self.assertIn("ended", fields[1])

    def test_a_fifo_nobody_reads_drops_lines_instead_of_stalling_requests(self):
        fifo = os.path.join(self.tmp, "access.fifo")
        os.mkfifo(fifo, 0o600)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open, and never read
        try:
            server = self.server("--access-log", fifo, tokens=False)
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            started = time.monotonic()
            for _ in range(1500):  # ~130 bytes a line: twice a 64 KiB pipe
                conn.request("GET", "/healthz")
                self.assertEqual(conn.getresponse().read()[:13], b'{"status":"ok')
            conn.close()
            self.assertLess(time.monotonic() - started, 60)
            self.assertEqual(server.stop(), 0)
        finally:
            os.close(reader)
        dropped = [m for _, level, m, _ in self.text_log(server) if "could not be written" in m]
        self.assertEqual(len(dropped), 1, self.text_log(server))
        self.assertGreater(int(dropped[0].split(": ")[1].split()[0]), 0)

    def test_a_unix_socket_client_is_remote_unix(self):
        access = os.path.join(self.tmp, "access.log")
        workdir = os.path.join(self.tmp, "unix")
        os.makedirs(workdir)
        server = self.start("--workers", "1", "--listen", "unix:" + os.path.join(workdir, "s.sock"),
                            "--access-log", access, workdir=workdir, port_args=())
        self.assertEqual(server.json("GET", "/healthz")[0], 200)
        line = wait_for(lambda: read_lines(access), "the access line")[0]
        server.stop()
        fields = text_fields(TEXT_LINE.match(line).group(3))[1]
        self.assertEqual((fields["remote"], fields["path"], fields["status"]),
                         ("unix", "/healthz", "200"))

    def test_stderr_access_log_with_dash(self):
        server = self.server("--access-log", "-", tokens=False)
        self.assertEqual(server.request("GET", "/healthz")[0], 200)
        wait_for(lambda: any(f.get("path") == "/healthz" for _, _, _, f in self.text_log(server)),
                 "the access line on stderr")


class Audit(LogsCase):
    def audit(self, server, action, count=1):
        """The fields of the audit lines of action, once there are count of them."""
        def lines():
            found = [(level, f) for _, level, _, f in self.text_log(server)
                     if f.get("audit") == action]
            return found if len(found) >= count else None
        found = wait_for(lines, "%d audit lines %s" % (count, action))
        self.assertEqual({level for level, _ in found}, {"info"})
        return [f for _, f in found]

    def test_every_admin_action_has_its_audit_line(self):
        backups = os.path.join(self.tmp, "backups")
        os.makedirs(backups)
        server = self.server("--backup-dir", backups)
        path = self.source("pkg/mod.py", "X = 1\n")
        prefix = os.path.dirname(path)
        self.assertEqual(self.compile(server, path), 200)
        status, body = server.json("POST", "/v1/admin/invalidate?" +
                                   test_e2e.query({"prefix": prefix}), headers=OPS)
        self.assertEqual((status, body["removed"]), (200, 1), body)
        line = self.audit(server, "invalidate")[0]
        self.assertEqual((line["result"], line["removed"], line["prefix"], line["token"],
                          line["remote"]), ("ok", "1", prefix, "ops", "127.0.0.1"))

        self.assertEqual(self.compile(server, path), 200)
        status, body = server.json("DELETE", "/v1/admin/entry?" +
                                   test_e2e.query({"magic": MAGIC, "path": path}), headers=OPS)
        self.assertEqual(status, 200, body)
        line = self.audit(server, "entry-delete")[0]
        self.assertEqual((line["removed"], line["magic"], line["path"], line["token"]),
                         ("1", MAGIC, path, "ops"))

        self.assertEqual(self.compile(server, path), 200)
        self.assertEqual(server.json("POST", "/v1/admin/purge", headers=OPS)[0], 200)
        line = self.audit(server, "purge")[0]
        self.assertEqual((line["result"], line["removed"], line["token"]), ("ok", "1", "ops"))

        self.assertEqual(server.json("POST", "/v1/admin/magics/12340d0a/retire", headers=OPS)[0],
                         200)
        line = self.audit(server, "retire")[0]
        self.assertEqual((line["magic"], line["removed"], line["token"]), ("12340d0a", "0", "ops"))

        status, body = server.json("POST", "/v1/admin/backup", headers=OPS)
        self.assertEqual(status, 200, body)
        line = self.audit(server, "backup")[0]
        self.assertEqual((line["result"], line["target"], line["bytes"], line["token"]),
                         ("ok", os.path.join(body["path"], "data.mdb"), str(body["bytes"]), "ops"))

        self.assertEqual(server.json("POST", "/v1/admin/stats/zero", headers=OPS)[0], 200)
        line = self.audit(server, "stats-zero")[0]
        self.assertEqual((line["result"], line["token"], line["remote"]),
                         ("ok", "ops", "127.0.0.1"))

        os.kill(server.proc.pid, signal.SIGHUP)
        line = self.audit(server, "token-reload")[0]
        self.assertEqual((line["result"], line["tokens"]), ("ok", "2"))
        with open(self.tokens, "w") as f:
            f.write("{not json")
        os.kill(server.proc.pid, signal.SIGHUP)
        line = self.audit(server, "token-reload", 2)[1]
        self.assertEqual((line["result"], line["tokens"]), ("failed", "2"))
        self.assertTrue(line["error"])
        self.assertEqual(server.stop(), 0)
        self.assert_no_secret(server.log_path)

    def test_refused_tokens_are_audited_without_the_secret(self):
        server = self.server("--log-format", "json")
        self.assertEqual(server.request("GET", "/v1/stats",
                                        headers={"Authorization": "Bearer " + WRONG})[0], 401)
        self.assertEqual(server.request("GET", "/v1/stats")[0], 401)
        self.assertEqual(server.request("POST", "/v1/admin/purge", headers=CI)[0], 403)
        refused = wait_for(lambda: len([o for o in self.json_log(server.log_path)
                                        if o.get("audit") == "token-refused"]) == 3 and
                           [o for o in self.json_log(server.log_path)
                            if o.get("audit") == "token-refused"], "three refusals")
        server.stop()
        keys = [(o["status"], o["reason"], o.get("token"), o["role"], o["method"], o["path"],
                 o["remote"], o["level"]) for o in refused]
        self.assertEqual(keys, [
            (401, "unknown", None, "read", "GET", "/v1/stats", "127.0.0.1", "info"),
            (401, "missing", None, "read", "GET", "/v1/stats", "127.0.0.1", "info"),
            (403, "lacks-role", "ci", "admin", "POST", "/v1/admin/purge", "127.0.0.1", "info"),
        ])
        self.assert_no_secret(server.log_path)


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
