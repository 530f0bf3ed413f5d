"""pycached: CPython client of the pycached compile cache.

With PYCACHED_URL set, `pycached.install()` (run by the installed pycached.pth, or by
`pycachectl exec`) makes every import of a .py module ask the pycached server for its code
instead of compiling it, and fall back to local compilation whenever the cache cannot help.
See docs/HOOK.md for the settings.
"""
from ._hook import install, uninstall, is_active, settings, stats, read_settings

__all__ = ["install", "uninstall", "is_active", "settings", "stats", "read_settings"]
