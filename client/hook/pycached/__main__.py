"""`python3 -m pycached status`: the hook's settings, whether the server answers, and this
process's counters."""
import json
import sys
import urllib.request

import pycached


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
                "breaker_seconds", "local_prefix", "debug"):
        print("%-12s %s" % (key + ":", conf[key]))
    # whether a token is set and where from, never the token itself
    print("%-12s %s" % ("token:", "set (from %s)" % conf["token_source"] if conf["token"] else
                        "none"))
    code = 0
    if conf["url"]:
        try:
            with urllib.request.urlopen(conf["url"] + "/healthz",
                                        timeout=conf["timeout_ms"] / 1000) as resp:
                health = json.load(resp)
            print("server:      reachable, pycached %s" % health.get("version", "?"))
        except Exception as exc:  # any failure is what we report
            print("server:      unreachable (%s)" % exc)
            code = 1
    print("counters:    %s" % json.dumps(_hook.stats(), sort_keys=True))
    return code


def main(argv):
    if argv[1:] in ([], ["status"]):
        return status()
    print("usage: python3 -m pycached [status]", file=sys.stderr)
    return 2


sys.exit(main(sys.argv))
