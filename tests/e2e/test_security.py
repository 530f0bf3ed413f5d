#!/usr/bin/env python3
"""test_security.py: the `security` suite (issue 9): one test per attack on the promise that the
cache never makes an import wrong. Each test reproduces an attack that worked before its fix.

The tests live in modules of their own, by area, and run here together:
- security_poison.py: poisoning through path entries (read-role and token-less lookups, batches,
  bundles), crafted digests, namespaces, cross-origin requests, the fleet of many mtimes;
- security_sources.py: --source-root confinement (symlink swaps, the existence oracle);
- security_compiles.py: what is remembered of failed compiles (timeouts; errors that are not
  the source's fault are never stored);
- security_workers.py: the worker sandbox;
- security_hook.py: the import hook never breaks an import (non-ASCII messages and paths, fork).
"""
import importlib
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_e2e import run_tests  # noqa: E402

MODULES = ["security_poison", "security_compiles", "security_sources", "security_workers",
           "security_hook"]


def load():
    suite = unittest.TestSuite()
    loader = unittest.TestLoader()
    here = os.path.dirname(os.path.abspath(__file__))
    for name in MODULES:
        if os.path.exists(os.path.join(here, name + ".py")):
            suite.addTests(loader.loadTestsFromModule(importlib.import_module(name)))
    return suite


if __name__ == "__main__":
    sys.exit(run_tests(load()))
