"""Installs the pycached hook in interpreters started by `pycachectl exec`, then runs the
sitecustomize this one shadows (Debian ships one)."""
import os
import sys
# importlib's machinery without the importlib package (importlib.util: 3 ms of every start)
machinery = sys.modules["_frozen_importlib_external"]
_bootstrap = sys.modules["_frozen_importlib"]

_here = os.path.dirname(os.path.abspath(__file__))
try:
    import pycached
    pycached.install()
except Exception as exc:  # the hook must never stop a program from starting
    sys.stderr.write("pycached: hook not installed: %s\n" % exc)

_rest = [p for p in sys.path if os.path.abspath(p or ".") != _here]
_spec = machinery.PathFinder.find_spec("sitecustomize", _rest)
if _spec is not None and _spec.loader is not None:
    _module = _bootstrap.module_from_spec(_spec)
    sys.modules["sitecustomize"] = _module
    _spec.loader.exec_module(_module)
