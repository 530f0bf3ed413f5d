"""pycached: CPython client of the pycached compile cache.

With PYCACHED_URL set, `pycached.install()` (run by the installed pycached.pth, or by
`pycachectl exec`) makes every import of a .py module ask the pycached server for its code
instead of compiling it, and fall back to local compilation whenever the cache cannot help.
See docs/HOOK.md for the settings.
"""
try:
    from ._hook import install, uninstall, is_active, settings, stats, read_settings
    unavailable = None
except ImportError as _exc:  # no pycached._native for this interpreter: the hook stays off
    if not getattr(_exc, "pycached_unavailable", False):
        raise
    unavailable = str(_exc)  # why, in one line

    def install(env=None):
        """Cannot activate the hook on this interpreter: says why (PYCACHED_DEBUG=1), and the
        program runs as without it."""
        env = __import__("os").environ if env is None else env
        if env.get("PYCACHED_URL") and env.get("PYCACHED_DEBUG", "0") not in ("", "0"):
            __import__("sys").stderr.write("pycached: hook not installed: %s\n" % unavailable)
        return False

    def uninstall():
        pass

    def is_active():
        return False

    def settings():
        return None

    def stats():
        return {"hits": 0, "compiles_asked": 0, "local_pyc": 0, "local_compile": 0,
                "misses": 0, "fallbacks": {}}

    def read_settings(env=None):
        raise ValueError(unavailable)

__all__ = ["unavailable", "install", "uninstall", "is_active", "settings", "stats", "read_settings"]
