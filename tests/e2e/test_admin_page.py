"""End-to-end test of the admin page (GET /admin, server/admin/index.html) in a real browser:
a real pycached with a token file, sources compiled into it under two prefixes, and
tests/e2e/admin_page/test_admin_page.mjs (node + playwright-core driving /usr/bin/chromium)
refusing a wrong token, showing the hit ratio after known lookups, updating itself as lookups
come, showing the compilers' health, filtering the entry list and invalidating one prefix
through the page; and the page on a server without tokens, which must not ask for one.

Run by meson (`meson test admin-page`) with PCC_PYCACHED in the environment. node, chromium and
the node_modules of tests/e2e/admin_page (`npm ci` there, done by deploy/test.sh) must exist;
PCC_SKIP_BROWSER=1 skips the browser part only. Every process started is stopped by pid.
"""
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.parse

from test_e2e import Server, SharedServerCase, query, source_params, run_tests

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE_TEST = os.path.join(HERE, "admin_page")
INDEX_HTML = os.path.join(HERE, "..", "..", "server", "admin", "index.html")
CHROMIUM = os.environ.get("PCC_CHROMIUM", "/usr/bin/chromium")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class AdminPage(SharedServerCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="pcc-admin-page-")
        cls.admin_token = "adm-" + secrets.token_hex(16)
        cls.ci_token = "ci-" + secrets.token_hex(16)
        tokens = os.path.join(cls.tmp, "tokens.json")
        with open(tokens, "w") as f:
            json.dump({"tokens": [
                {"name": "ops", "token": cls.admin_token, "roles": ["read", "compile", "admin"]},
                {"name": "ci", "token": cls.ci_token, "roles": ["read", "compile"]}]}, f)
        cls.server = Server(cls.tmp, "--workers", "1", "--tokens", tokens)
        src = os.path.join(cls.tmp, "src")
        cls.keep = os.path.join(src, "keep") + "/"
        cls.drop = os.path.join(src, "drop") + "/"
        # "dropped.py" shares the string "…/drop" with the invalidated prefix but not "…/drop/";
        # the odd name checks that the page shows paths as text, never as markup.
        files = {cls.keep + "a.py": "A = 1\n", cls.keep + "b.py": "def b():\n    return 2\n",
                 cls.keep + "<img src=x onerror=alert(1)> & \"q\".py": "Q = '<b>'\n",
                 os.path.join(src, "dropped.py"): "D = 0\n",
                 cls.drop + "x.py": "X = [1, 2]\n", cls.drop + "y.py": "import os\nY = os.sep\n",
                 cls.drop + "sub/z.py": "class Z:\n    pass\n"}
        for path, text in files.items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            for opt in (0, 1) if path.endswith("x.py") else (0,):
                params = source_params(path, opt, with_hash=False)
                del params["size"]
                status, _, body = cls.server.request(
                    "POST", "/v1/compile?" + query(params), text.encode(), cls.auth(cls.admin_token))
                if status != 200:
                    cls.tearDownClass()
                    raise AssertionError("compiling %s: %d %r" % (path, status, body))
        cls.lookups = lookup_urls(cls.keep + "a.py", os.path.join(src, "never-compiled.py"))

    def browser_env(self):
        if os.environ.get("PCC_SKIP_BROWSER") == "1":
            self.skipTest("PCC_SKIP_BROWSER=1")
        node = shutil.which("node")
        self.assertIsNotNone(node, "node is not installed (deploy/install-deps.sh installs nodejs)")
        self.assertTrue(os.access(CHROMIUM, os.X_OK),
                        "%s is missing (deploy/install-deps.sh installs chromium)" % CHROMIUM)
        self.assertTrue(os.path.isdir(os.path.join(PAGE_TEST, "node_modules", "playwright-core")),
                        "run `npm ci --no-audit --no-fund` in %s (deploy/test.sh does)" % PAGE_TEST)
        return node


    @staticmethod
    def auth(token):
        return {"Authorization": "Bearer " + token}

    def admin(self, method, path):
        status, body = self.server.json(method, path, headers=self.auth(self.admin_token))
        self.assertEqual(status, 200, (path, body))
        return body

    def paths_under(self, prefix):
        """Every listed entry path under prefix, following next_cursor (bounded)."""
        paths, cursor = [], None
        for _ in range(1000):
            params = {"prefix": prefix, "limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = self.admin("GET", "/v1/admin/entries?" + urllib.parse.urlencode(params))
            paths += [e["path"] for e in page["entries"]]
            cursor = page["next_cursor"]
            if not cursor:
                return paths
        self.fail("more than 1000 pages of entries")

    def test_page_is_served_without_a_token_and_the_api_is_not(self):
        with open(INDEX_HTML, "rb") as f:
            index = f.read()
        for url in ("/admin", "/admin/"):
            status, headers, body = self.server.request("GET", url)
            self.assertEqual(status, 200, url)
            self.assertTrue(headers.get("Content-Type", "").startswith("text/html"), headers)
            self.assertEqual(body, index, "%s serves the embedded index.html" % url)
        status, headers, body = self.server.request("GET", "/v1/admin/stats")
        self.assertEqual((status, json.loads(body)["error"]), (401, "unauthorized"))
        status, body = self.server.json("GET", "/v1/admin/stats", headers=self.auth(self.ci_token))
        self.assertEqual((status, body["error"]), (403, "forbidden"))

    def test_browser_filters_and_invalidates_a_prefix(self):
        node = self.browser_env()
        keep, drop = sorted(self.paths_under(self.keep)), self.paths_under(self.drop)
        self.assertEqual(len(keep), 3, keep)
        self.assertEqual(len(drop), 4, drop)
        others = sorted(set(self.paths_under("/")) - set(drop))
        screenshot = os.path.join(self.tmp, "admin-page.png")
        env = dict(os.environ, PCC_ADMIN_URL=self.server.url, PCC_ADMIN_TOKEN=self.admin_token,
                   PCC_ADMIN_PREFIX=self.drop, PCC_SCREENSHOT=screenshot, PCC_CHROMIUM=CHROMIUM,
                   **self.lookups)
        run = subprocess.run([node, "test_admin_page.mjs"], cwd=PAGE_TEST, env=env,
                             capture_output=True, text=True, timeout=200)
        sys.stderr.write(run.stdout + run.stderr)
        self.assertEqual(run.returncode, 0, "the browser test failed:\n" + run.stdout + run.stderr)
        with open(screenshot, "rb") as f:
            self.assertEqual(f.read(8), PNG_SIGNATURE, "the screenshot is not a PNG")
        keep_dir = os.environ.get("PCC_KEEP_SCREENSHOT")
        if keep_dir:
            shutil.copy(screenshot, keep_dir)
        # Only the invalidated prefix is gone, and the stats agree.
        self.assertEqual(self.paths_under(self.drop), [])
        self.assertEqual(sorted(self.paths_under(self.keep)), keep)
        self.assertEqual(sorted(self.paths_under("/")), others)
        self.assertEqual(self.admin("GET", "/v1/admin/stats")["total"]["entries"], len(others))


def lookup_urls(hit_path, miss_path):
    """The /v1/code URLs of a stored source (a hit) and of one never compiled (a miss)."""
    with open(miss_path, "w") as f:
        f.write("NEVER = 1\n")
    return {"PCC_LOOKUP_HIT": "/v1/code?" + query(source_params(hit_path, with_hash=False)),
            "PCC_LOOKUP_MISS": "/v1/code?" + query(source_params(miss_path, with_hash=False))}


class OpenServerPage(SharedServerCase):
    """The page on a server without tokens: it must not ask for one (it did, and any string
    then "unlocked" it)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="pcc-admin-page-open-")
        cls.server = Server(cls.tmp, "--workers", "1")
        path = os.path.join(cls.tmp, "open.py")
        with open(path, "w") as f:
            f.write("OPEN = 1\n")
        params = source_params(path, with_hash=False)
        del params["size"]
        status, _, body = cls.server.request("POST", "/v1/compile?" + query(params), b"OPEN = 1\n")
        if status != 200:
            cls.tearDownClass()
            raise AssertionError("compiling %s: %d %r" % (path, status, body))
        cls.lookups = lookup_urls(path, os.path.join(cls.tmp, "never-compiled.py"))

    def test_browser_shows_the_figures_without_a_token(self):
        node = AdminPage.browser_env(self)
        screenshot = os.path.join(self.tmp, "admin-page-open.png")
        env = dict(os.environ, PCC_ADMIN_URL=self.server.url, PCC_ADMIN_MODE="open",
                   PCC_SCREENSHOT=screenshot, PCC_CHROMIUM=CHROMIUM, **self.lookups)
        run = subprocess.run([node, "test_admin_page.mjs"], cwd=PAGE_TEST, env=env,
                             capture_output=True, text=True, timeout=200)
        sys.stderr.write(run.stdout + run.stderr)
        self.assertEqual(run.returncode, 0, "the browser test failed:\n" + run.stdout + run.stderr)
        with open(screenshot, "rb") as f:
            self.assertEqual(f.read(8), PNG_SIGNATURE, "the screenshot is not a PNG")
        keep_dir = os.environ.get("PCC_KEEP_SCREENSHOT")
        if keep_dir:
            shutil.copy(screenshot, keep_dir)


if __name__ == "__main__":
    sys.exit(run_tests(__name__))
