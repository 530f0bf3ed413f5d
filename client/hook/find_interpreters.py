"""find_interpreters.py: prints, one a line, the Python interpreters of this machine that the
import hook can be built for (client/hook/pycached/meson.build runs it at configure time when the
hook_pythons option is empty): the reference interpreter, Debian's /usr/bin/python3 and
/usr/bin/pypy3, and pyenv's CPython 3.8 and later ($PYENV_ROOT, else `pyenv root`, else
~/.pyenv). Only interpreters that exist and run are printed; runs on any Python 3."""
import glob
import os
import subprocess
import sys

MIN_VERSION = (3, 8)


def pyenv_root():
    root = os.environ.get("PYENV_ROOT")
    if root:
        return root
    try:
        return subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.path.expanduser("~/.pyenv")


def version_of(path):
    try:
        out = subprocess.run([path, "-I", "-S", "-c",
                              "import sys; print('%d %d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return tuple(int(x) for x in out.split())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def candidates(reference):
    yield reference
    yield "/usr/bin/python3"
    yield "/usr/bin/pypy3"
    found = []
    for path in glob.glob(os.path.join(pyenv_root(), "versions", "3.*", "bin", "python3")):
        version = os.path.basename(os.path.dirname(os.path.dirname(path)))
        try:
            key = tuple(int(x) for x in version.split("."))
        except ValueError:
            continue  # e.g. 3.12-dev, a virtualenv
        found.append((key, path))
    for _, path in sorted(found):
        yield path


def main(argv):
    reference = argv[1] if len(argv) > 1 else sys.executable
    seen = set()
    for path in candidates(reference):
        real = os.path.realpath(path)
        if real in seen or not os.access(path, os.X_OK):
            continue
        seen.add(real)
        version = version_of(path)
        if version is not None and version >= MIN_VERSION:
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
