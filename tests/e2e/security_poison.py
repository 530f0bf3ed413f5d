"""security_poison.py: attacks on what the cache serves, run by test_security.py.

- A lookup must never change what another client is served: read-role and token-less lookups
  (and batches) that name another source's hash and digest, then timestamp-mode clients, bundles
  and the hook.
- Blob names are SHA-256 of the source: a digest that is not the source's is refused.
- Namespaces: writers of one namespace cannot change what another namespace is served.
- Browsers: foreign Origin, foreign Host, simple content types on state-changing requests.
- HeaderBytes: a NUL byte after a token in the Authorization header (the token was accepted).
- A fleet whose hosts see different mtimes: hits stay read-only (LMDB's last transaction id does
  not move) and a built bundle stays cached.
"""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import unittest
import urllib.parse

from test_e2e import MAGIC, PYCACHECTL, PYTHON, Server, java_hash, make_tree, raw_json

GOOD = 'print("GOOD")\n'
EVIL = 'print("EVIL")\n'  # the same size as GOOD: a timestamp check cannot tell them apart

TOKENS = {
    "ops": ("ops-2c8e4a6f0b1d9e37", ["read", "compile", "admin"], None),
    "ci": ("ci-7b3f9a1e5c2d8f40", ["read", "compile"], None),
    "reader": ("reader-5d1c7e9a3b2f4068", ["read"], None),
    "team-a": ("team-a-0123456789abcdef", ["read", "compile"], "a"),
    "team-b": ("team-b-fedcba9876543210", ["read", "compile"], "b"),
    "reader-b": ("reader-b-1122334455667788", ["read"], "b"),
}


def auth(name):
    return {"Authorization": "Bearer " + TOKENS[name][0], "X-Pycached-Client": "test"}


def q(**params):
    return urllib.parse.urlencode(params)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class Case(unittest.TestCase):
    tokens = False  # start the server with the token file

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pcc-sec-")
        os.chmod(self.tmp, 0o755)
        args = ["--workers", "1"]
        if self.tokens:
            path = os.path.join(self.tmp, "tokens.json")
            with open(path, "w") as f:
                json.dump({"tokens": [dict({"name": n, "token": t, "roles": r},
                                           **({"namespace": ns} if ns else {}))
                                      for n, (t, r, ns) in TOKENS.items()]}, f)
            args += ["--tokens", path]
        self.server = Server(self.tmp, *args)
        self.victim = self.write("app/victim.py", GOOD)
        self.evil = self.write("attacker/evil.py", EVIL)

    def tearDown(self):
        self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, name, text):
        return make_tree(self.tmp, {name: text}) and os.path.join(self.tmp, name)

    def headers(self, name):
        return auth(name) if self.tokens else {"X-Pycached-Client": "test"}

    def compile(self, path, who="ci", mtime=None):
        st = os.stat(path)
        status, _, body = self.server.request(
            "POST", "/v1/compile?" + q(magic=MAGIC, path=path,
                                       mtime=int(st.st_mtime) if mtime is None else mtime),
            open(path, "rb").read(), self.headers(who))
        return status, json.loads(body)

    def lookup(self, path, who="reader", mtime=None, size=None, **extra):
        st = os.stat(path)
        params = dict(magic=MAGIC, path=path, mtime=int(st.st_mtime) if mtime is None else mtime,
                      size=st.st_size if size is None else size, **extra)
        status, _, body = self.server.request("GET", "/v1/code?" + q(**params),
                                              headers=self.headers(who))
        return status, json.loads(body)

    def served_text(self, entry):
        """What the served code prints when run (the pyc run by the reference python)."""
        import base64
        pyc = os.path.join(self.tmp, "served.pyc")
        with open(pyc, "wb") as f:
            f.write(base64.b64decode(entry["pyc"]))
        return subprocess.run([PYTHON, pyc], capture_output=True, text=True,
                              timeout=60).stdout.strip()


class LookupsNeverWrite(Case):
    """GET /v1/code and POST /v1/batch with another source's hash and digest."""

    def poison(self, who):
        self.assertEqual(self.compile(self.victim)[0], 200)
        status, evil = self.compile(self.evil)
        self.assertEqual(status, 200)
        data = open(self.evil, "rb").read()
        batch = {"lookups": [{"magic": MAGIC, "path": self.victim,
                              "mtime": int(os.stat(self.victim).st_mtime) + 7,
                              "size": len(data), "hash": java_hash(data),
                              "digest": evil["digest"]}]}
        self.server.request("POST", "/v1/batch", json.dumps(batch).encode(),
                            dict(self.headers(who), **{"Content-Type": "application/json"}))
        # the attacker asks for the victim's path, naming the evil source's hash and digest
        self.lookup(self.victim, who=who, hash=java_hash(data), digest=evil["digest"])
        return evil

    def assert_victim_intact(self, evil):
        good = sha256(GOOD.encode())
        for mtime in (None, int(os.stat(self.victim).st_mtime) + 7):
            status, entry = self.lookup(self.victim, mtime=mtime)  # timestamp mode: no hash
            if status == 200:
                self.assertNotEqual(entry["digest"], evil["digest"], "poisoned (mtime %s)" % mtime)
                self.assertEqual(self.served_text(entry), "GOOD")
            else:
                self.assertEqual(entry["error"], "miss")
        self.assertNotEqual(good, evil["digest"])

    def test_token_less_lookup_cannot_repoint_a_path(self):
        self.assert_victim_intact(self.poison("reader"))

    def test_hook_in_timestamp_mode_runs_the_victims_code(self):
        self.poison("reader")
        env = {"PATH": "/usr/bin:/bin", "PYCACHED_VALIDATION": "timestamp",
               "PYCACHED_PROFILE": "off", "PYTHONDONTWRITEBYTECODE": "1"}
        env.update({k: v for k, v in os.environ.items()  # a sanitizer build's runtimes
                    if k.startswith(("ASAN_", "LSAN_", "UBSAN_", "LD_PRELOAD"))})
        if self.tokens:
            env["PYCACHED_TOKEN"] = TOKENS["reader"][0]
        env.update({k: v for k, v in os.environ.items()  # a sanitizer build's runtimes
                    if k.startswith(("ASAN_", "LSAN_", "UBSAN_", "LD_PRELOAD"))})
        program = ("import sys; sys.path.insert(0, %r); import victim, pycached; "
                   "print(pycached.stats()['hits'] + pycached.stats()['compiles_asked'])"
                   % os.path.dirname(self.victim))
        run = subprocess.run([PYCACHECTL, "--server", self.server.url, "exec", "--", PYTHON,
                              "-c", program], cwd=self.tmp, capture_output=True, text=True,
                             env=env, timeout=120)
        self.assertEqual(run.stdout.split(), ["GOOD", "1"], run.stderr)  # served, and right

    def test_bundle_serves_the_victims_code(self):
        self.assertEqual(self.compile(self.victim)[0], 200)
        profile = q(magic=MAGIC, profile="victim-app")
        self.server.request("POST", "/v1/profile?" + profile,
                            json.dumps({"paths": [self.victim]}).encode(),
                            dict(self.headers("ci"), **{"Content-Type": "application/json"}))
        evil = self.poison("reader")
        status, _, body = self.server.request("GET", "/v1/bundle?" + profile + "&format=json",
                                              headers=self.headers("reader"))
        self.assertEqual(status, 200)
        for entry in json.loads(body)["entries"]:
            self.assertNotEqual(entry["digest"], evil["digest"])
            self.assertEqual(self.served_text(entry), "GOOD")


class ReadRoleCannotWrite(LookupsNeverWrite):
    tokens = True

    def test_read_role_lookup_cannot_repoint_a_path(self):
        self.assert_victim_intact(self.poison("reader"))


class Digests(Case):
    def test_blobs_are_named_by_sha256(self):
        status, entry = self.compile(self.victim)
        self.assertEqual(status, 200)
        self.assertEqual(entry["digest"], sha256(GOOD.encode()))
        status, hit = self.lookup(self.victim, hash=java_hash(GOOD.encode()),
                                  digest=sha256(GOOD.encode()))
        self.assertEqual((status, hit["digest"]), (200, sha256(GOOD.encode())))

    def test_a_digest_that_is_not_the_sources_sha256_is_refused(self):
        data = GOOD.encode()
        crafted = hashlib.blake2b(data, digest_size=16).hexdigest()  # 32 hex: the old width
        st = os.stat(self.victim)
        status, _, body = self.server.request(
            "POST", "/v1/compile?" + q(magic=MAGIC, path=self.victim, mtime=int(st.st_mtime),
                                       digest=crafted), data, self.headers("ci"))
        self.assertEqual((status, json.loads(body)["param"]), (400, "digest"))
        wrong = sha256(b"something else")
        status, _, body = self.server.request(
            "POST", "/v1/compile?" + q(magic=MAGIC, path=self.victim, mtime=int(st.st_mtime),
                                       digest=wrong), data, self.headers("ci"))
        self.assertEqual((status, json.loads(body)["param"]), (409, "digest"))


class Namespaces(Case):
    tokens = True

    def test_writers_of_one_namespace_cannot_change_another(self):
        # team-b writes the evil source under the victim's path and mtime
        mtime = int(os.stat(self.victim).st_mtime)
        evil_at_victim = self.write("b/victim.py", EVIL)
        st, body = self.server.request(
            "POST", "/v1/compile?" + q(magic=MAGIC, path=self.victim, mtime=mtime),
            open(evil_at_victim, "rb").read(), auth("team-b"))[0:3:2]
        self.assertEqual(st, 200, body)
        # team-a's readers (and the default namespace) do not see it in timestamp mode
        for who in ("team-a", "reader"):
            status, entry = self.lookup(self.victim, who=who)
            self.assertEqual((status, entry["error"]), (404, "miss"), who)
        status, entry = self.lookup(self.victim, who="reader-b")
        self.assertEqual(status, 200)
        self.assertEqual(self.served_text(entry), "EVIL")  # b's own namespace: its writers' word
        # an operator sees each namespace's entries apart
        for ns, expected in (("b", [self.victim]), ("a", []), ("", [])):
            run = subprocess.run([PYCACHECTL, "--server", self.server.url, "--json", "admin", "ls",
                                  "--namespace", ns], capture_output=True, text=True, timeout=60,
                                 env={"PATH": "/usr/bin:/bin", "PYCACHED_TOKEN": TOKENS["ops"][0]})
            self.assertEqual(run.returncode, 0, run.stderr)
            entries = json.loads(run.stdout.splitlines()[0])["entries"]
            self.assertEqual([e["path"] for e in entries], expected, ns)
            self.assertTrue(all(e["namespace"] == ns for e in entries))
        # blobs are shared: team-a's compile of the same bytes elsewhere is answered "stored"
        status, entry = self.compile(self.evil, who="team-a")
        self.assertEqual((status, entry["digest"]), (200, sha256(EVIL.encode())))

    def test_profiles_and_bundles_are_per_namespace(self):
        self.assertEqual(self.compile(self.victim, who="team-a")[0], 200)
        profile = q(magic=MAGIC, profile="shared-name")
        for who in ("team-a", "team-b"):
            self.server.request("POST", "/v1/profile?" + profile,
                                json.dumps({"paths": [self.victim]}).encode(),
                                dict(auth(who), **{"Content-Type": "application/json"}))
        status, _, body = self.server.request("GET", "/v1/bundle?" + profile + "&format=json",
                                              headers=auth("team-a"))
        self.assertEqual((status, len(json.loads(body)["entries"])), (200, 1))
        status, _, body = self.server.request("GET", "/v1/bundle?" + profile + "&format=json",
                                              headers=auth("team-b"))
        self.assertEqual((status, len(json.loads(body)["entries"])), (200, 0))


class Browsers(Case):
    def test_foreign_origin_is_refused(self):
        self.assertEqual(self.compile(self.victim)[0], 200)
        for headers in ({"Origin": "http://evil.example", "Content-Type": "text/plain",
                         "X-Pycached-Client": None},
                        {"Origin": "http://evil.example", "X-Pycached-Client": "x"},
                        {"Origin": "null", "Content-Type": "application/json"}):
            status, _, body = self.server.request("POST", "/v1/admin/purge", b"", headers)
            self.assertEqual((status, json.loads(body)["error"]), (403, "forbidden"), headers)
        self.assertEqual(self.lookup(self.victim)[0], 200, "the purge went through")
        # the server's own origin (the admin page) is fine
        origin = {"Origin": self.server.url, "X-Pycached-Client": "admin-page"}
        self.assertEqual(self.server.request("GET", "/v1/stats", headers=origin)[0], 200)

    def test_simple_requests_cannot_change_state(self):
        data = open(self.victim, "rb").read()
        target = "/v1/compile?" + q(magic=MAGIC, path=self.victim,
                                    mtime=int(os.stat(self.victim).st_mtime))
        for headers in ({"Content-Type": "text/plain"},
                        {"Content-Type": "application/x-www-form-urlencoded"},
                        {"Content-Type": "multipart/form-data; boundary=x"}, {}):
            headers["X-Pycached-Client"] = None  # a page cannot add it without asking first
            status, _, body = self.server.request("POST", target, data, headers)
            self.assertEqual((status, json.loads(body)["error"]), (403, "forbidden"), headers)
        self.assertEqual(self.lookup(self.victim)[1]["error"], "miss")
        status, _, _ = self.server.request("POST", target, data,
                                           {"Content-Type": "text/x-python",
                                            "X-Pycached-Client": None})
        self.assertEqual(status, 200)

    def test_dns_rebinding_host_is_refused(self):
        for host in ("evil.example", "evil.example:%d" % self.server.port, "10.1.2.3"):
            status, _, body = self.server.request("GET", "/v1/stats", headers={"Host": host})
            self.assertEqual((status, json.loads(body)["error"]), (403, "forbidden"), host)
        for host in ("127.0.0.1:%d" % self.server.port, "localhost:%d" % self.server.port):
            self.assertEqual(self.server.request("GET", "/v1/stats",
                                                 headers={"Host": host})[0], 200, host)


class HeaderBytes(Case):
    """A token followed by a NUL byte and more in the Authorization header was accepted as the
    token (issue 11): the server read the value cut at the NUL, a proxy in front of it reads the
    whole line. Now any NUL in a header is a 400."""
    tokens = True

    def send(self, authorization):
        return raw_json(self.server.port, b"GET /v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Authorization: " + authorization + b"\r\nConnection: close\r\n\r\n")

    def test_nul_after_a_token_is_refused(self):
        token = TOKENS["ops"][0].encode()
        self.assertEqual(self.send(b"Bearer " + token)[0], 200)
        for value in (b"Bearer " + token + b"\0junk", b"Bearer " + token + b"\0\0",
                      b"Bearer " + token[:8] + b"\0" + token[8:]):
            status, body = self.send(value)
            self.assertEqual((status, body["error"], body.get("param")),
                             (400, "bad-parameter", "Authorization"), value)
        self.assertEqual(self.send(b"Bearer wrong-token-0123456789")[0], 401)


class Fleet(Case):
    HOSTS = 8

    def content(self):
        """What the store serves: its path entries, blobs and their references, as mdb_dump
        prints them. (The last use of each blob, in the tables uses and lru, is written in
        batches after hits, by design; it changes nothing a client is served.)"""
        return [subprocess.run(["mdb_dump", "-s", table, self.server.store], capture_output=True,
                               text=True, check=True, timeout=60).stdout
                for table in ("paths", "blobs", "refs")]

    def test_hosts_with_different_mtimes_hit_read_only(self):
        sources = [self.write("fleet/m%d.py" % i, "VALUE = %d\n" % i) for i in range(10)]
        base = int(os.stat(sources[0]).st_mtime)
        mtimes = [base + 1000 * h for h in range(self.HOSTS)]
        for mtime in mtimes:  # each host compiles once (a write: the compile role's job)
            for path in sources:
                self.assertEqual(self.compile(path, mtime=mtime)[0], 200)
        profile = q(magic=MAGIC, profile="fleet")
        self.server.request("POST", "/v1/profile?" + profile,
                            json.dumps({"paths": sources}).encode(),
                            dict(self.headers("ci"), **{"Content-Type": "application/json"}))
        status, first, _ = self.server.request("GET", "/v1/bundle?" + profile,
                                               headers=self.headers("reader"))
        self.assertEqual(status, 200)
        before = self.content()
        for _ in range(3):
            for mtime in mtimes:
                for path in sources:
                    data = open(path, "rb").read()
                    for extra in ({}, {"hash": java_hash(data)},
                                  {"hash": java_hash(data), "digest": sha256(data)}):
                        status, entry = self.lookup(path, mtime=mtime, **extra)
                        self.assertEqual(status, 200, (path, mtime, extra, entry))
        self.assertTrue(self.content() == before, "hits changed what the store serves")
        status, again, _ = self.server.request("GET", "/v1/bundle?" + profile,
                                               headers=self.headers("reader"))
        self.assertEqual(status, 200)
        self.assertEqual(again.get("X-Pycached-Bundle-Cache"), "hit")
