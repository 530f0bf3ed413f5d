"""End-to-end tests of the unix socket listener (--listen unix:PATH, --socket-mode,
--socket-group) and of the clients that reach it (curl --unix-socket, pycachectl --server unix:,
the import hook with PYCACHED_URL=unix:), and of a PYCACHED_URL that lists several servers, each
with its own breaker (docs/OPERATIONS.md, "Unix socket"; docs/HOOK.md, "Several servers").

Run by meson (`meson test unix`) with PCC_PYCACHED, PCC_PYCACHECTL, PCC_HOOK_ROOT and
PCC_REFERENCE_PYTHON in the environment.
"""
import grp
import http.server
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import (MAGIC, PYCACHED, PYCACHECTL, PYTHON, Server, free_port, query,  # noqa: E402
                      run_tests, source_params, without_sanitizers)
from test_hook import HOOK_ROOT, HookCase  # noqa: E402


def curl_unix(path, url_path, *args):
    """curl --unix-socket path http://localhost/url_path: (status, body)."""
    run = subprocess.run(["curl", "-sS", "--max-time", "30", "--unix-socket", path,
                          "-o", "-", "-w", "\n%{http_code}", *args, "http://localhost" + url_path],
                         capture_output=True, text=True, timeout=60, env=without_sanitizers())
    body, _, status = run.stdout.rpartition("\n")
    return int(status or 0), body


def refused_start(tmp, *args):
    """Runs a pycached that must not start: (exit code, stderr)."""
    run = subprocess.run([PYCACHED, "--store", os.path.join(tmp, "refused-store"), "--workers",
                          "1", *args], capture_output=True, text=True, timeout=60)
    return run.returncode, run.stderr


class UnixCase(HookCase):
    def sock_path(self, name="pycached.sock"):
        return os.path.join(self.tmp, name)

    def start_unix(self, path, *args, workdir=None):
        workdir = workdir or self.tmp
        os.makedirs(workdir, exist_ok=True)
        server = Server(workdir, "--workers", "2", "--listen", "unix:" + path, *args,
                        port_args=())
        self.servers.append(server)
        return server


class Listener(UnixCase):
    def test_curl_pycachectl_and_the_hook_over_a_unix_socket(self):
        path = self.sock_path()
        server = self.start_unix(path)
        self.assertEqual(server.url, "unix:" + path)
        status, body = curl_unix(path, "/healthz")
        self.assertEqual((status, json.loads(body)["status"]), (200, "ok"))
        # compile, then get, with curl; curl sends Host: localhost
        src = os.path.join(self.tmp, "mod.py")
        with open(src, "w") as f:
            f.write("X = 6 * 7\n")
        params = query(source_params(src))
        status, body = curl_unix(path, "/v1/compile?" + params, "-X", "POST", "-H",
                                 "Content-Type: text/x-python", "--data-binary", "@" + src)
        self.assertEqual(status, 200, body)
        status, body = curl_unix(path, "/v1/code?" + params)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["magic"], MAGIC)
        # pycachectl with --server unix:, and with PYCACHED_URL=unix:
        ctl = subprocess.run([PYCACHECTL, "--server", server.url, "get", src],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(ctl.returncode, 0, ctl.stderr)
        self.assertTrue(ctl.stdout.startswith("hit"), ctl.stdout)
        ctl = subprocess.run([PYCACHECTL, "health"], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PYCACHED_URL=server.url))
        self.assertEqual(ctl.returncode, 0, ctl.stderr)
        self.assertIn("unix:" + path, ctl.stdout)
        # the hook: the first process compiles, the second is served from the cache
        root = self.small_package()
        first = self.import_small(server.url, root)
        self.assertEqual((first["value"], first["double"]), (1, 42))
        self.assertEqual((first["stats"]["compiles_asked"], first["stats"]["fallbacks"]), (3, {}))
        second = self.import_small(server.url, root)
        self.assertEqual((second["stats"]["hits"], second["stats"]["fallbacks"]), (3, {}))
        self.assertGreaterEqual(server.stats()["hits"], 4)  # pycachectl get's, and the hook's
        # python -m pycached status asks the server over the socket
        run = self.hook_run(server.url, "import runpy; runpy.run_module('pycached', "
                            "run_name='__main__')")
        self.assertIn("server:      reachable", run.stdout)
        self.assertIn("(unix:%s)" % path, run.stdout)
        # libmicrohttpd's TCP_NODELAY/TCP_CORK complaints (three a connection) are not logged
        with open(os.path.join(self.tmp, "server.log")) as f:
            log = f.read()
        for noise in ("TCP_NODELAY", "TCP_CORK", "Client may experience some delay"):
            self.assertNotIn(noise, log)

    def test_browser_checks_still_apply_on_a_unix_socket(self):
        path = self.sock_path()
        server = self.start_unix(path)
        for headers, why in (({"Host": "evil.example"}, "Host"),
                             ({"Origin": "http://evil.example"}, "Origin")):
            status, body = server.json("GET", "/v1/stats", headers=headers)
            self.assertEqual(status, 403, body)
            self.assertIn(why, body["message"])
        # a state-changing request a web page could send: no X-Pycached-Client, a form type
        status, body = server.json("POST", "/v1/report?opt=0&magic=" + MAGIC, body=b"{}",
                                   headers={"X-Pycached-Client": None,
                                            "Content-Type": "text/plain"})
        self.assertEqual(status, 403, body)
        self.assertEqual(server.json("GET", "/healthz")[0], 200)

    def test_socket_mode_and_group_are_applied(self):
        path = self.sock_path()
        self.start_unix(path)
        st = os.stat(path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid), (0o660, os.getuid()))
        other = [g for g in grp.getgrall() if g.gr_gid != os.getgid()][0]
        for group in (other.gr_name, str(other.gr_gid)):
            path = self.sock_path("g-%s.sock" % group)
            self.start_unix(path, "--socket-mode", "0600", "--socket-group", group,
                            workdir=os.path.join(self.tmp, "g-" + group))
            st = os.stat(path)
            self.assertEqual((stat.S_IMODE(st.st_mode), st.st_gid), (0o600, other.gr_gid))
        bad = "unix:" + self.sock_path("bad.sock")
        for args, message in (([bad, "--socket-mode", "0999"], "--socket-mode 0999: not an octal"),
                              ([bad, "--socket-mode", "1777"], "not an octal mode from 0 to 0777"),
                              ([bad, "--socket-group", "no-such-group-x"], "no such group"),
                              (["unix:relative.sock"], "absolute"),
                              (["127.0.0.1", "--socket-mode", "0600"],
                               "--socket-mode: only for a unix socket (--listen unix:PATH)")):
            code, err = refused_start(self.tmp, "--port", "0", "--listen", *args)
            self.assertEqual(code, 2, err)
            self.assertIn(message, err)
            self.assertFalse(os.path.exists(self.sock_path("bad.sock")))

    def test_stale_socket_replaced_live_one_refused_file_left_alone(self):
        path = self.sock_path()
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)  # bound, never listening, closed: what a killed server leaves
        stale.close()
        self.assertTrue(stat.S_ISSOCK(os.lstat(path).st_mode))
        server = self.start_unix(path)
        self.assertEqual(curl_unix(path, "/healthz")[0], 200)
        # a second server on the same path refuses to start; the first keeps serving
        code, err = refused_start(self.tmp, "--listen", "unix:" + path)
        self.assertNotEqual(code, 0)
        self.assertIn("another server answers on this socket", err)
        self.assertEqual(server.json("GET", "/healthz")[0], 200)
        # a clean stop removes the socket
        self.assertEqual(server.stop(), 0)
        self.servers.remove(server)
        self.assertFalse(os.path.lexists(path))
        # a file that is not a socket is refused and left as it was
        with open(path, "w") as f:
            f.write("not a socket\n")
        code, err = refused_start(self.tmp, "--listen", "unix:" + path)
        self.assertNotEqual(code, 0)
        self.assertIn("a file that is not a socket is there", err)
        with open(path) as f:
            self.assertEqual(f.read(), "not a socket\n")


class Both(UnixCase):
    """--listen unix:PATH,HOST: a node-local daemon's clients on the socket, its scraper (or
    hosts next to it) on TCP, one store."""

    def test_a_unix_socket_and_a_tcp_address_serve_one_store(self):
        path = self.sock_path()
        server = Server(self.tmp, "--workers", "2", "--listen", "unix:%s,127.0.0.1" % path)
        self.servers.append(server)
        self.assertEqual(server.url, "unix:" + path)
        self.assertTrue(server.tcp_url.startswith("http://127.0.0.1:"), server.tcp_url)
        # the hook compiles over the socket; pycachectl over TCP gets the same entries
        root = self.small_package()
        first = self.import_small(server.url, root)
        self.assertEqual((first["value"], first["stats"]["compiles_asked"]), (1, 3))
        ctl = subprocess.run([PYCACHECTL, "--server", server.tcp_url, "get",
                              os.path.join(root, "pkg", "alpha.py")],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(ctl.returncode, 0, ctl.stderr)
        self.assertTrue(ctl.stdout.startswith("hit"), ctl.stdout)
        second = self.import_small(server.tcp_url, root)
        self.assertEqual((second["stats"]["hits"], second["stats"]["fallbacks"]), (3, {}))
        # /metrics over TCP, as Prometheus scrapes a node-local daemon; curl on the socket
        import urllib.request
        with urllib.request.urlopen(server.tcp_url + "/metrics", timeout=30) as response:
            metrics = response.read().decode()
        self.assertRegex(metrics, r'(?m)^pycached_hits_total\{magic="%s"\} 4$' % MAGIC)
        self.assertEqual(curl_unix(path, "/healthz")[0], 200)
        # the browser checks hold on the TCP side: a Host of another server is refused
        request = urllib.request.Request(server.tcp_url + "/v1/stats",
                                         headers={"Host": "evil.example"})
        with self.assertRaises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        self.assertEqual(refused.exception.code, 403)
        # the start-up note says what guards each; a clean stop removes the socket
        stdout = server.proc.stdout.readline().decode()
        self.assertIn("every endpoint is open (loopback only; on the unix socket its mode and "
                      "group decide who may connect)", stdout)
        self.assertEqual(server.stop(), 0)
        self.servers.remove(server)
        self.assertFalse(os.path.lexists(path))

    def test_lists_that_are_not_one_of_each_are_refused(self):
        a, b = "unix:" + self.sock_path("a.sock"), "unix:" + self.sock_path("b.sock")
        for listen, message in (("%s,%s" % (a, b), "two unix sockets: one of each at most"),
                                ("127.0.0.1,127.0.0.2", "two TCP addresses: one of each at most"),
                                ("%s,127.0.0.1,[::1]" % a, "at most two addresses"),
                                (a + ",", "an empty address in the list"),
                                ("," + a, "an empty address in the list"),
                                (a + ",127.0.0.1:99999", "the port is not a number"),
                                ("unix:/" + "p" * 130 + ",127.0.0.1",
                                 "an address longer than 122 bytes")):
            code, err = refused_start(self.tmp, "--port", "0", "--listen", listen)
            self.assertEqual(code, 2, err)
            self.assertIn(message, err)
            self.assertIn("or one of each separated by a comma", err)
        self.assertFalse(os.path.exists(self.sock_path("a.sock")))
        # TLS is the whole daemon's, and unix: clients speak plain HTTP: refused, not half-served
        code, err = refused_start(self.tmp, "--port", "0", "--listen", a + ",127.0.0.1",
                                  "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key")
        self.assertEqual(code, 2, err)
        self.assertIn("TLS is served on a TCP address only", err)


class Always500(http.server.BaseHTTPRequestHandler):
    """A server that answers every request 500, counting them."""
    requests = 0

    def do_GET(self):
        type(self).requests += 1
        body = b'{"error":"internal","message":"injected"}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


class SeveralServers(UnixCase):
    """PYCACHED_URL with several servers: tried in order, each with its own breaker."""

    def test_first_dead_second_serves_without_a_fallback(self):
        server = self.start_unix(self.sock_path())
        root = self.small_package()
        urls = "http://127.0.0.1:%d, %s" % (free_port(), server.url)
        first = self.import_small(urls, root)
        self.assertEqual((first["value"], first["double"]), (1, 42))
        self.assertEqual((first["stats"]["compiles_asked"], first["stats"]["fallbacks"]), (3, {}))
        second = self.import_small(urls, root)
        self.assertEqual((second["stats"]["hits"], second["stats"]["fallbacks"]), (3, {}))
        self.assertEqual(server.stats()["hits"], 3)
        run = self.hook_run(urls, "import runpy; runpy.run_module('pycached', "
                            "run_name='__main__')")
        self.assertIn("server 1:    unreachable", run.stdout)
        self.assertIn("server 2:    reachable", run.stdout)

    def test_warm_start_uses_the_first_server_whose_breaker_is_closed(self):
        server = self.start_unix(self.sock_path())
        root = self.small_package()
        urls = "http://127.0.0.1:%d,%s" % (free_port(), server.url)
        env = {"PYCACHED_PROFILE": "several"}
        first = self.import_small(urls, root, env=env)  # records the profile on the second
        self.assertEqual((first["stats"]["bundle_missing"], first["stats"]["fallbacks"]), (1, {}))
        second = self.import_small(urls, root, env=env)
        self.assertEqual((second["stats"]["bundle_hits"], second["stats"]["fallbacks"]),
                         (3, {}))
        self.assertEqual(server.stats()["store"]["profiles"], 1)

    def test_a_5xx_server_is_passed_over_until_its_breaker_closes(self):
        Always500.requests = 0
        broken = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Always500)
        thread = threading.Thread(target=broken.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            server = self.start_server()
            root = self.small_package()
            urls = "http://127.0.0.1:%d,%s" % (broken.server_address[1], server.url)
            out = self.import_small(urls, root)
            self.assertEqual((out["value"], out["stats"]["fallbacks"]), (1, {}))
            self.assertEqual(out["stats"]["compiles_asked"], 3)
            self.assertEqual(Always500.requests, 1)  # then its breaker is open for the process
        finally:
            broken.shutdown()
            thread.join(10)
            broken.server_close()

    def test_first_server_asked_again_once_its_breaker_closes(self):
        back = self.start_unix(self.sock_path("second.sock"), workdir=os.path.join(self.tmp, "b"))
        port = free_port()
        urls = "http://127.0.0.1:%d,%s" % (port, back.url)
        pkg_a, pkg_b = self.small_package("pkga", 1), self.small_package("pkgb", 2)
        # one process: pkga while the first server is down, then (once it is up and the
        # breaker's second has passed) pkgb
        code = ("import sys, json, time; sys.path[:0] = [%r, %r]; import pkga, pycached; "
                "print('ready', flush=True); sys.stdin.readline(); time.sleep(1.5); "
                "import pkgb; print(json.dumps({'values': [pkga.alpha.VALUE, pkgb.alpha.VALUE],"
                " 'stats': pycached.stats()}))" % (pkg_a, pkg_b))
        started = []

        def start_first():  # on the port the list names first, which was closed so far
            os.makedirs(os.path.join(self.tmp, "a"))
            started.append(Server(os.path.join(self.tmp, "a"), "--workers", "2",
                                  port_args=("--port", str(port))))
            self.servers.append(started[0])

        status, out, err = self.hook_run_paused(
            urls, code, start_first, {"PYCACHED_PROFILE": "off", "PYCACHED_BREAKER_SECONDS": "1"},
            timeout=120)
        self.assertEqual(status, 0, err)
        first = started[0]
        result = json.loads(out.strip().splitlines()[-1])
        self.assertEqual(result["values"], [1, 2])
        self.assertEqual((result["stats"]["compiles_asked"], result["stats"]["fallbacks"]),
                         (6, {}))
        self.assertEqual(back.stats()["compiles"], 3)   # pkga, while the first was down
        self.assertEqual(first.stats()["compiles"], 3)  # pkgb, asked first again

    def test_all_dead_imports_still_work(self):
        root = self.small_package()
        urls = "http://127.0.0.1:%d unix:%s" % (free_port(), self.sock_path("nobody.sock"))
        t0 = time.monotonic()
        out = self.import_small(urls, root)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual((out["value"], out["double"]), (1, 42))
        self.assertEqual(out["stats"]["local_compile"], 3)
        # the first import asked both and fell back; the others found both breakers open
        self.assertEqual(out["stats"]["fallbacks"], {"server-down": 1, "breaker-open": 2})

    def test_a_bad_url_anywhere_in_the_list_is_refused_in_one_line(self):
        server = self.start_server()
        root = self.small_package()
        nine = ",".join([server.url] * 9)
        for urls, message in (("%s,127.0.0.1:1" % server.url, "must begin with http://, https://"),
                              ("%s unix:relative.sock" % server.url, "path is absolute"),
                              ("unix:/" + "a" * 107, "at most 107 bytes"),
                              (nine, "lists 9 servers, at most 8")):
            env = dict(os.environ, PYTHONPATH=HOOK_ROOT, PYCACHED_URL=urls,
                       PYCACHED_PROFILE="off", PYTHONDONTWRITEBYTECODE="1")
            code = ("import sys, json; sys.path.insert(0, %r); import pycached; "
                    "active = pycached.install(); import pkg; "
                    "print(json.dumps([active, pycached.is_active(), pkg.alpha.VALUE]))" % root)
            run = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True,
                                 timeout=60, env=env)
            self.assertEqual(json.loads(run.stdout), [False, False, 1], run.stderr)
            lines = run.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, run.stderr)
            self.assertIn(message, lines[0])
        self.assertEqual(server.stats()["requests"], 1)  # this stats request: nothing else


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
