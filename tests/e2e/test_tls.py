"""End-to-end tests of TLS (issue 14, docs/OPERATIONS.md "TLS"): pycached with --tls-cert,
--tls-key and --tls-client-ca, against curl, pycachectl (libpycached over libcurl) and the import
hook in /usr/bin/python3, with certificates made here by openssl: a CA, a server certificate for
127.0.0.1 and localhost, one for another name, client certificates of that CA and of another.

Run by meson (`meson test tls`), which passes PCC_PYCACHED, PCC_PYCACHECTL, PCC_HOOK_ROOT and
PCC_REFERENCE_PYTHON. Every process started is stopped by pid; loops are bounded.
"""
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import (PYCACHECTL, PYCACHED, PYTHON, ServersCase, free_port,  # noqa: E402
                      make_tree, query, run_tests, source_params, without_sanitizers)

CERTS = None  # the directory setUpModule fills


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60,
                   env=without_sanitizers())


def make_certificates(d):
    """ca (signs server, client, wrongname), otherca (signs renewed, stranger); EC P-256, 2
    days."""
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("[server]\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "extendedKeyUsage=serverAuth\n"
                "[wrongname]\nsubjectAltName=DNS:elsewhere.example\nextendedKeyUsage=serverAuth\n"
                "[client]\nextendedKeyUsage=clientAuth\n")
    p = lambda name: os.path.join(d, name)  # noqa: E731
    for ca, cn in (("ca", "pycached test CA"), ("otherca", "another CA")):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", p(ca + ".key"), "-out", p(ca + ".pem"), "-days", "2", "-subj",
                "/CN=" + cn)
    for name, ca, ext in (("server", "ca", "server"), ("wrongname", "ca", "wrongname"),
                          ("renewed", "otherca", "server"),
                          ("client", "ca", "client"), ("stranger", "otherca", "client")):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", p(name + ".key"), "-out", p(name + ".csr"), "-subj", "/CN=" + name)
        openssl("x509", "-req", "-in", p(name + ".csr"), "-CA", p(ca + ".pem"), "-CAkey",
                p(ca + ".key"), "-CAcreateserial", "-out", p(name + ".pem"), "-days", "2",
                "-extfile", p("ext.cnf"), "-extensions", ext)
    for name in os.listdir(d):  # the workers' uid never needs them, the server's user does
        os.chmod(p(name), 0o644)


def setUpModule():
    global CERTS
    CERTS = tempfile.mkdtemp(prefix="pcc-tls-certs-")
    make_certificates(CERTS)


def tearDownModule():
    shutil.rmtree(CERTS, ignore_errors=True)


def cert(name):
    return os.path.join(CERTS, name)


def clean_env(**extra):
    """The environment of a client: nothing of this one's PYCACHED_* (nor proxies)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYCACHED_") and "proxy" not in k.lower()}
    env.update(extra)
    return env


class TLSCase(ServersCase):
    prefix = "pcc-tls-"

    def tls_server(self, *args, mutual=False):
        extra = ["--tls-client-ca", cert("ca.pem")] if mutual else []
        server = self.start("--workers", "1", "--tls-cert", cert("server.pem"), "--tls-key",
                            cert("server.key"), *extra, *args)
        self.assertTrue(server.url.startswith("https://127.0.0.1:"), server.url)
        server.context = ssl.create_default_context(cafile=cert("ca.pem"))
        if mutual:
            server.context.load_cert_chain(cert("client.pem"), cert("client.key"))
        return server

    def reload_log(self, server, until):
        """Sends server SIGHUP and returns its log once `until` is in it (bounded: 5 s)."""
        server.proc.send_signal(signal.SIGHUP)
        log = os.path.join(self.tmp, "server.log")
        for _ in range(50):
            with open(log) as f:
                text = f.read()
            if until in text:
                break
            time.sleep(0.1)
        return text

    def curl(self, url, *args):
        """(exit code, HTTP status or 0, body) of curl on url."""
        run = subprocess.run(["curl", "-sS", "--max-time", "20", "-o", "-", "-w",
                              "\n%{http_code}", *args, url], capture_output=True, timeout=60,
                             env=without_sanitizers(clean_env()))
        body, _, status = run.stdout.rpartition(b"\n")
        return run.returncode, int(status or 0), body, run.stderr.decode(errors="replace")

    def ctl(self, *args, env=None):
        return subprocess.run([PYCACHECTL, *args], capture_output=True, text=True, timeout=60,
                              env=clean_env(**(env or {})))

    def source(self, name="m.py", text="VALUE = 6 * 7\n"):
        root = os.path.join(self.tmp, "src")
        make_tree(root, {name: text})
        return os.path.join(root, name)

    def package(self):
        root = os.path.join(self.tmp, "pkgroot")
        make_tree(root, {"tlspkg/__init__.py": "from . import one, two\nTOTAL = one.A + two.B\n",
                         "tlspkg/one.py": "A = 40\n",
                         "tlspkg/two.py": "B = 2\n"})
        return root

    def hook_run(self, url, root, **env):
        """Imports tlspkg with the hook on (pycachectl exec, which hands the TLS files over
        through the environment); returns (TOTAL, the hook's stats), asserting exit 0."""
        code = ("import json, sys; sys.path.insert(0, %r); import tlspkg, pycached; "
                "print(json.dumps([tlspkg.TOTAL, pycached.is_active(), pycached.stats()]))" % root)
        run_env = clean_env(PATH="/usr/bin:/bin", PYTHONDONTWRITEBYTECODE="1",
                            PYCACHED_PROFILE="off", **env)
        run = subprocess.run([PYCACHECTL, "--server", url, "exec", "--", PYTHON, "-c", code],
                             capture_output=True, text=True, env=run_env, timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        total, active, stats = json.loads(run.stdout)
        self.assertEqual(total, 42)
        self.assertTrue(active)
        return stats, run.stderr


class Serving(TLSCase):
    """TLS without client certificates."""

    def test_curl_healthz_compile_and_get(self):
        server = self.tls_server()
        code, status, body, err = self.curl(server.url + "/healthz", "--cacert", cert("ca.pem"))
        self.assertEqual((code, status), (0, 200), err)
        self.assertEqual(json.loads(body)["status"], "ok")
        # the certificate names localhost too, and the Host check takes it on a loopback server
        port = server.port
        code, status, _, err = self.curl("https://localhost:%d/healthz" % port, "--cacert",
                                         cert("ca.pem"))
        self.assertEqual((code, status), (0, 200), err)

        path = self.source()
        params = source_params(path, with_hash=False)
        del params["size"]
        code, status, body, err = self.curl(
            server.url + "/v1/compile?" + query(params), "--cacert", cert("ca.pem"),
            "--data-binary", "@" + path, "-H", "Content-Type: text/x-python")
        self.assertEqual((code, status), (0, 200), (err, body))
        self.assertEqual(json.loads(body)["path"], path)
        code, status, body, err = self.curl(
            server.url + "/v1/code?" + query(source_params(path)), "--cacert", cert("ca.pem"))
        self.assertEqual((code, status), (0, 200), (err, body))
        self.assertEqual(json.loads(body)["path"], path)
        self.assertEqual(server.stats()["hits"], 1)

    def test_plain_http_to_the_tls_port_fails_and_the_server_keeps_serving(self):
        server = self.tls_server()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            got = b""
            for _ in range(100):  # until the server closes
                chunk = sock.recv(4096)
                if not chunk:
                    break
                got += chunk
        self.assertNotIn(b"HTTP/1.1", got)  # no answer in the clear, at most a TLS alert
        code, status, _, _ = self.curl("http://127.0.0.1:%d/healthz" % server.port)
        self.assertNotEqual(code, 0)
        self.assertEqual(status, 0)
        code, status, _, err = self.curl(server.url + "/healthz", "--cacert", cert("ca.pem"))
        self.assertEqual((code, status), (0, 200), err)
        self.assertIsNone(server.proc.poll())

    def test_a_stalled_handshake_is_cut_at_the_header_timeout(self):
        server = self.tls_server("--header-timeout", "1")
        for opening in (b"", b"\x16\x03\x01\x02\x00"):  # nothing; a record header, then nothing
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(opening)
                start = time.monotonic()
                self.assertEqual(sock.recv(100), b"")  # closed by the server, not a timeout
                self.assertLess(time.monotonic() - start, 5)
        code, status, _, err = self.curl(server.url + "/healthz", "--cacert", cert("ca.pem"))
        self.assertEqual((code, status), (0, 200), err)

    def test_pycachectl_compile_and_get_with_PYCACHED_CA_FILE(self):
        server = self.tls_server()
        path = self.source()
        env = {"PYCACHED_CA_FILE": cert("ca.pem"), "PYCACHED_URL": server.url}
        run = self.ctl("compile", path, env=env)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertTrue(run.stdout.startswith("compiled"), run.stdout)
        out = os.path.join(self.tmp, "m.pyc")
        run = self.ctl("get", path, "-o", out, env=env)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertTrue(run.stdout.startswith("hit"), run.stdout)
        load = subprocess.run([PYTHON, "-c", "import marshal; ns = {}; exec(marshal.loads("
                               "open(%r, 'rb').read()[16:]), ns); print(ns['VALUE'])" % out],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(load.stdout.strip(), "42", load.stderr)
        # the option does what the variable does
        run = self.ctl("--server", server.url, "--ca-file", cert("ca.pem"), "health")
        self.assertEqual(run.returncode, 0, run.stderr)

    def test_a_client_that_does_not_trust_the_ca_fails_and_the_hook_falls_back(self):
        server = self.tls_server()
        path = self.source()
        for env in ({"PYCACHED_CA_FILE": cert("otherca.pem")}, {}):  # another CA; the system's
            run = self.ctl("--server", server.url, "compile", path, env=env)
            self.assertEqual(run.returncode, 3, (env, run.stderr))
            self.assertIn("certificate", run.stderr)
        code, status, _, err = self.curl(server.url + "/healthz")
        self.assertEqual((code, status), (60, 0), err)  # curl: peer certificate not verified
        stats, _ = self.hook_run(server.url, self.package(), PYCACHED_CA_FILE=cert("otherca.pem"))
        self.assertEqual(stats["hits"] + stats["compiles_asked"], 0)
        self.assertEqual(stats["fallbacks"], {"server-down": 1, "breaker-open": 2}, stats)
        self.assertEqual(server.stats()["compiles"], 0)

    def test_the_server_name_is_verified(self):
        server = self.start("--workers", "1", "--tls-cert", cert("wrongname.pem"), "--tls-key",
                            cert("wrongname.key"))
        run = self.ctl("--server", server.url, "--ca-file", cert("ca.pem"), "health")
        self.assertEqual(run.returncode, 3, run.stderr)
        self.assertIn("127.0.0.1", run.stderr)  # "does not match target host name '127.0.0.1'"
        code, _, _, err = self.curl(server.url + "/healthz", "--cacert", cert("ca.pem"))
        self.assertEqual(code, 60, err)

    def test_the_hook_imports_over_https_and_the_server_counts_hits(self):
        server = self.tls_server()
        root = self.package()
        first, _ = self.hook_run(server.url, root, PYCACHED_CA_FILE=cert("ca.pem"))
        self.assertEqual((first["compiles_asked"], first["fallbacks"]), (3, {}), first)
        second, _ = self.hook_run(server.url, root, PYCACHED_CA_FILE=cert("ca.pem"))
        self.assertEqual((second["hits"], second["local_compile"], second["fallbacks"]),
                         (3, 0, {}), second)
        stats = server.stats()
        self.assertEqual((stats["compiles"], stats["hits"]), (3, 3))

    def test_several_servers_the_https_one_gets_the_tls_files(self):
        """PYCACHED_URL listing a dead http:// server, then the https:// one: the TLS files are
        the https:// server's, the http:// one is opened without them (libpycached would refuse
        it), and every module is served by the second."""
        server = self.tls_server()
        root = self.package()
        urls = "http://127.0.0.1:%d,%s" % (free_port(), server.url)
        first, _ = self.hook_run(urls, root, PYCACHED_CA_FILE=cert("ca.pem"))
        self.assertEqual(first["compiles_asked"], 3, first)
        second, _ = self.hook_run(urls, root, PYCACHED_CA_FILE=cert("ca.pem"))
        self.assertEqual((second["hits"], second["local_compile"]), (3, 0), second)
        self.assertEqual(server.stats()["hits"], 3)

    def test_tls_files_with_an_http_url_are_refused(self):
        server = self.start("--workers", "1")  # plain http
        run = self.ctl("--server", server.url, "--ca-file", cert("ca.pem"), "health")
        self.assertEqual(run.returncode, 2, run.stderr)
        self.assertIn("https://", run.stderr)
        code = "import pycached, sys; print(pycached.is_active())"
        run = subprocess.run([PYCACHECTL, "--server", server.url, "exec", "--", PYTHON, "-c",
                              code], capture_output=True, text=True, timeout=60,
                             env=clean_env(PATH="/usr/bin:/bin", PYCACHED_PROFILE="off",
                                           PYCACHED_CA_FILE=cert("ca.pem")))
        self.assertEqual(run.stdout.strip(), "False", run.stderr)
        self.assertIn("PYCACHED_CA_FILE is for an https:// PYCACHED_URL", run.stderr)

    def test_sighup_reloads_the_certificate_and_key(self):
        live_cert, live_key = os.path.join(self.tmp, "live.pem"), os.path.join(self.tmp, "live.key")
        shutil.copy(cert("server.pem"), live_cert)
        shutil.copy(cert("server.key"), live_key)
        server = self.start("--workers", "1", "--tls-cert", live_cert, "--tls-key", live_key)
        server.context = ssl.create_default_context(cafile=cert("ca.pem"))
        import http.client
        kept = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10,
                                           context=server.context)
        kept.request("GET", "/healthz")
        self.assertEqual(kept.getresponse().read(), b'{"status":"ok","version":"0.1.0"}')
        # renewed, by another CA so that the change shows: new connections get it
        shutil.copy(cert("renewed.pem"), live_cert)
        shutil.copy(cert("renewed.key"), live_key)
        server.proc.send_signal(signal.SIGHUP)
        for _ in range(50):
            code, status, _, _ = self.curl(server.url + "/healthz", "--cacert", cert("otherca.pem"))
            if code == 0:
                break
            time.sleep(0.1)
        self.assertEqual((code, status), (0, 200))
        code, _, _, err = self.curl(server.url + "/healthz", "--cacert", cert("ca.pem"))
        self.assertEqual(code, 60, err)
        kept.request("GET", "/healthz")  # an open connection keeps its session
        self.assertEqual(kept.getresponse().status, 200)
        kept.close()
        # a key that is not the certificate's: refused, the renewed pair stays
        shutil.copy(cert("server.key"), live_key)
        log = self.reload_log(server, "the previous certificate stays in force")
        self.assertIn("--tls-key %s: not the key of --tls-cert %s" % (live_key, live_cert), log)
        # both reloads have their audit line (docs/OPERATIONS.md, "Audit lines")
        self.assertIn("audit=tls-reload result=ok", log)
        self.assertIn("audit=tls-reload result=failed", log)
        code, status, _, err = self.curl(server.url + "/healthz", "--cacert", cert("otherca.pem"))
        self.assertEqual((code, status), (0, 200), err)

    def test_tls_from_the_environment(self):
        # every option has its PYCACHED_* variable (config.c's table)
        server = self.start("--workers", "1", env=dict(
            os.environ, PYCACHED_TLS_CERT=cert("server.pem"), PYCACHED_TLS_KEY=cert("server.key")))
        self.assertTrue(server.url.startswith("https://"), server.url)
        code, status, _, err = self.curl(server.url + "/healthz", "--cacert", cert("ca.pem"))
        self.assertEqual((code, status), (0, 200), err)


class Mutual(TLSCase):
    """--tls-client-ca: a client certificate of that CA, or 403."""

    def test_curl_without_a_certificate_with_a_strangers_and_with_a_good_one(self):
        server = self.tls_server(mutual=True)
        base = ["--cacert", cert("ca.pem")]
        for path in ("/healthz", "/v1/stats"):
            code, status, body, err = self.curl(server.url + path, *base)
            self.assertEqual((code, status), (0, 403), err)
            self.assertEqual(json.loads(body)["error"], "forbidden")
            self.assertIn("client certificate", json.loads(body)["message"])
        code, status, body, err = self.curl(server.url + "/healthz", *base, "--cert",
                                            cert("stranger.pem"), "--key", cert("stranger.key"))
        self.assertEqual((code, status), (0, 403), err)
        self.assertIn("not signed by a --tls-client-ca", json.loads(body)["message"])
        code, status, body, err = self.curl(server.url + "/healthz", *base, "--cert",
                                            cert("client.pem"), "--key", cert("client.key"))
        self.assertEqual((code, status), (0, 200), err)
        # a server certificate is not one for client authentication (extendedKeyUsage)
        code, status, body, err = self.curl(server.url + "/healthz", *base, "--cert",
                                            cert("server.pem"), "--key", cert("server.key"))
        self.assertEqual((code, status), (0, 403), err)
        self.assertIn("client authentication", json.loads(body)["message"])

    def test_a_client_without_a_certificate_is_refused_on_every_request(self):
        # libmicrohttpd only asks for a certificate: the handshake completes without one, and
        # each request must be refused (tls.c), also the later ones of a kept-alive connection
        server = self.tls_server(mutual=True)
        context = ssl.create_default_context(cafile=cert("ca.pem"))
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                got = b""
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                for _ in range(100):
                    chunk = tls.recv(4096)
                    if not chunk or b"}" in got + chunk:
                        got += chunk
                        break
                    got += chunk
        self.assertTrue(got.startswith(b"HTTP/1.1 403"), got)
        self.assertNotIn(b'"ok"', got)

    def test_a_certified_connection_is_served_request_after_request(self):
        # the first request's verification holds for the connection's later ones (conns.c)
        server = self.tls_server(mutual=True)
        import http.client
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10,
                                           context=server.context)
        try:
            for _ in range(5):
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                self.assertEqual((response.status, json.loads(response.read())["status"]),
                                 (200, "ok"))
            self.assertEqual(server.stats()["requests"], 5 + 1)  # and the stats request
        finally:
            conn.close()

    def test_sighup_rotates_the_client_ca(self):
        live_ca = os.path.join(self.tmp, "clients-ca.pem")
        shutil.copy(cert("ca.pem"), live_ca)
        server = self.start("--workers", "1", "--tls-cert", cert("server.pem"), "--tls-key",
                            cert("server.key"), "--tls-client-ca", live_ca)
        base = ["--cacert", cert("ca.pem")]
        client = ["--cert", cert("client.pem"), "--key", cert("client.key")]
        stranger = ["--cert", cert("stranger.pem"), "--key", cert("stranger.key")]
        self.assertEqual(self.curl(server.url + "/healthz", *base, *client)[:2], (0, 200))
        self.assertEqual(self.curl(server.url + "/healthz", *base, *stranger)[:2], (0, 403))
        kept = ssl.create_default_context(cafile=cert("ca.pem"))
        kept.load_cert_chain(cert("client.pem"), cert("client.key"))
        import http.client
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10, context=kept)
        conn.request("GET", "/healthz")
        self.assertEqual(conn.getresponse().read(), b'{"status":"ok","version":"0.1.0"}')
        # the clients' CA is now otherca (stranger's): new connections are checked against it
        shutil.copy(cert("otherca.pem"), live_ca)
        server.proc.send_signal(signal.SIGHUP)
        for _ in range(50):  # bounded: the reload is seen within a few tries
            code, status, _, _ = self.curl(server.url + "/healthz", *base, *stranger)
            if (code, status) == (0, 200):
                break
            time.sleep(0.1)
        self.assertEqual((code, status), (0, 200))
        code, status, body, err = self.curl(server.url + "/healthz", *base, *client)
        self.assertEqual((code, status), (0, 403), err)
        self.assertIn("not signed by a --tls-client-ca", json.loads(body)["message"])
        conn.request("GET", "/healthz")  # certified before the rotation: until it closes
        self.assertEqual(conn.getresponse().status, 200)
        conn.close()
        # pycachectl (libpycached over libcurl) with a certificate of the new CA
        run = self.ctl("--client-cert", cert("stranger.pem"), "--client-key",
                       cert("stranger.key"), "health",
                       env={"PYCACHED_URL": server.url, "PYCACHED_CA_FILE": cert("ca.pem")})
        self.assertEqual(run.returncode, 0, run.stderr)
        # a file without a CA in it: the reload fails, the CAs in force stay
        with open(live_ca, "w") as f:
            f.write("not a certificate\n")
        log = self.reload_log(server, "audit=tls-reload result=failed")
        self.assertIn("--tls-client-ca %s: no PEM CA certificate" % live_ca, log)
        self.assertEqual(self.curl(server.url + "/healthz", *base, *stranger)[:2], (0, 200))
        self.assertEqual(self.curl(server.url + "/healthz", *base, *client)[:2], (0, 403))

    def test_pycachectl(self):
        server = self.tls_server(mutual=True)
        path = self.source()
        env = {"PYCACHED_URL": server.url, "PYCACHED_CA_FILE": cert("ca.pem")}
        run = self.ctl("compile", path, env=env)
        self.assertEqual(run.returncode, 6, run.stderr)
        self.assertIn("403 forbidden: mutual TLS", run.stderr)
        run = self.ctl("--client-cert", cert("stranger.pem"), "--client-key",
                       cert("stranger.key"), "compile", path, env=env)
        self.assertEqual(run.returncode, 6, run.stderr)
        self.assertIn("not signed by a --tls-client-ca", run.stderr)
        run = self.ctl("--client-cert", cert("client.pem"), "--client-key", cert("client.key"),
                       "compile", path, env=env)
        self.assertEqual(run.returncode, 0, run.stderr)
        env.update(PYCACHED_CLIENT_CERT=cert("client.pem"), PYCACHED_CLIENT_KEY=cert("client.key"))
        run = self.ctl("get", path, env=env)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertTrue(run.stdout.startswith("hit"), run.stdout)
        run = self.ctl("--client-key", cert("client.key"), "health",
                       env={"PYCACHED_URL": server.url, "PYCACHED_CA_FILE": cert("ca.pem")})
        self.assertEqual(run.returncode, 2, run.stderr)
        self.assertIn("needs --client-cert", run.stderr)
        run = self.ctl("--client-cert", os.path.join(self.tmp, "missing.pem"), "health", env=env)
        self.assertEqual(run.returncode, 5, run.stderr)
        self.assertIn("missing.pem: No such file", run.stderr)

    def test_hook(self):
        server = self.tls_server(mutual=True)
        root = self.package()
        tls = {"PYCACHED_CA_FILE": cert("ca.pem"), "PYCACHED_CLIENT_CERT": cert("client.pem"),
               "PYCACHED_CLIENT_KEY": cert("client.key")}
        first, _ = self.hook_run(server.url, root, **tls)
        self.assertEqual((first["compiles_asked"], first["fallbacks"]), (3, {}), first)
        second, _ = self.hook_run(server.url, root, **tls)
        self.assertEqual((second["hits"], second["fallbacks"]), (3, {}), second)
        # no certificate, or a stranger's: refused, and the imports fall back (right values)
        for files in ({}, {"PYCACHED_CLIENT_CERT": cert("stranger.pem"),
                           "PYCACHED_CLIENT_KEY": cert("stranger.key")}):
            stats, _ = self.hook_run(server.url, root, PYCACHED_CA_FILE=cert("ca.pem"), **files)
            self.assertEqual(stats["hits"] + stats["compiles_asked"], 0, stats)
            self.assertEqual(stats["fallbacks"], {"forbidden": 1, "breaker-open": 2}, stats)
        self.assertEqual(server.stats()["hits"], 3)


class BadFlags(TLSCase):
    """A bad TLS setting stops the server before it listens, in one line naming the problem."""

    def refused(self, *args, code):
        run = subprocess.run([PYCACHED, "--port", "0", "--workers", "1", "--store",
                              os.path.join(self.tmp, "refused"), *args],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(run.returncode, code, (args, run.stderr))
        self.assertNotIn("listening", run.stdout)
        return run.stderr

    def test_bad_flags(self):
        err = self.refused("--tls-key", cert("server.key"), code=2)
        self.assertIn("--tls-key given without --tls-cert", err)
        err = self.refused("--tls-cert", cert("server.pem"), code=2)
        self.assertIn("--tls-cert given without --tls-key", err)
        err = self.refused("--tls-client-ca", cert("ca.pem"), code=2)
        self.assertIn("--tls-client-ca needs --tls-cert", err)
        missing = os.path.join(self.tmp, "nope.pem")
        err = self.refused("--tls-cert", missing, "--tls-key", cert("server.key"), code=1)
        self.assertIn("--tls-cert %s: No such file or directory" % missing, err)
        err = self.refused("--tls-cert", cert("server.pem"), "--tls-key", cert("client.key"),
                           code=1)
        self.assertIn("not the key of --tls-cert", err)
        err = self.refused("--tls-cert", cert("server.key"), "--tls-key", cert("server.key"),
                           code=1)
        self.assertIn("--tls-cert %s: not a PEM certificate" % cert("server.key"), err)
        err = self.refused("--tls-cert", cert("server.pem"), "--tls-key", cert("server.pem"),
                           code=1)
        self.assertIn("not an unencrypted PEM private key", err)
        err = self.refused("--tls-cert", cert("server.pem"), "--tls-key", cert("server.key"),
                           "--tls-client-ca", cert("ext.cnf"), code=1)
        self.assertIn("--tls-client-ca %s: no PEM CA certificate" % cert("ext.cnf"), err)
        err = self.refused("--tls-cert", self.tmp, "--tls-key", cert("server.key"), code=1)
        self.assertIn("not a regular file", err)
        big = os.path.join(self.tmp, "big.pem")
        with open(big, "wb") as f:
            f.write(open(cert("server.pem"), "rb").read() + b"#" * (1 << 20))
        err = self.refused("--tls-cert", big, "--tls-key", cert("server.key"), code=1)
        self.assertIn("larger than PCC_TLS_FILE_MAX", err)
        if os.geteuid() != 0:  # root reads any file
            locked = os.path.join(self.tmp, "locked.key")
            shutil.copy(cert("server.key"), locked)
            os.chmod(locked, 0)
            err = self.refused("--tls-cert", cert("server.pem"), "--tls-key", locked, code=1)
            self.assertIn("Permission denied", err)


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
