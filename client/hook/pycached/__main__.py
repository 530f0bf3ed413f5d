"""`python3 -m pycached status`: the hook's settings, whether the server answers, and this
process's counters."""
import http.client
import json
import socket
import sys
import urllib.parse

import pycached


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over the unix socket at path (a unix:/PATH URL), Host: localhost as libpycached."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def _healthz(url, timeout):
    """GET /healthz of the server at url (http://, https:// or unix:/PATH): its JSON."""
    if url.startswith("unix:"):
        conn, prefix = _UnixConnection(url[len("unix:"):], timeout), ""
    else:
        parts = urllib.parse.urlsplit(url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else \
            http.client.HTTPConnection
        conn, prefix = kind(parts.netloc, timeout=timeout), parts.path
    try:
        conn.request("GET", prefix + "/healthz")
        resp = conn.getresponse()
        if resp.status != 200:
            raise OSError("HTTP %d" % resp.status)
        return json.load(resp)
    finally:
        conn.close()


def status():
    if pycached.unavailable:
        print("hook:        unavailable on this interpreter: %s" % pycached.unavailable)
        return 2
    from . import _hook
    try:
        conf = _hook.read_settings()
    except ValueError as exc:
        print("settings: invalid: %s" % exc)
        return 2
    print("hook:        %s" % ("active" if _hook.is_active() else
                              "inactive (PYCACHED_URL is not set)" if not conf["url"] else
                              "installable (not active in this process)"))
    for key in ("url", "validation", "readonly", "timeout_ms", "compile_timeout_ms",
                "breaker_seconds", "breaker_5xx", "local_prefix", "debug"):
        print("%-12s %s" % (key + ":", conf[key]))
    # whether a token is set and where from, never the token itself
    print("%-12s %s" % ("token:", "set (from %s)" % conf["token_source"] if conf["token"] else
                        "none"))
    code = 0
    for i, url in enumerate(conf["urls"]):  # in the order the hook asks them
        label = "server:" if len(conf["urls"]) == 1 else "server %d:" % (i + 1)
        try:
            health = _healthz(url, conf["timeout_ms"] / 1000)
            print("%-12s reachable, pycached %s (%s)" % (label, health.get("version", "?"), url))
        except Exception as exc:  # any failure is what we report
            print("%-12s unreachable (%s: %s)" % (label, url, exc))
            code = 1
    print("counters:    %s" % json.dumps(_hook.stats(), sort_keys=True))
    return code


def main(argv):
    if argv[1:] in ([], ["status"]):
        return status()
    print("usage: python3 -m pycached [status]", file=sys.stderr)
    return 2


sys.exit(main(sys.argv))
