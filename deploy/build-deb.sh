#!/usr/bin/env bash
# build-deb.sh: builds the Debian package pycached_VERSION_ARCH.deb from this tree (debian/,
# dpkg-buildpackage -b -us -uc) in a copy under OUT (default build-deb/), so that nothing is
# written beside the checkout; prints the .deb's path on its last line. Needs the Build-Depends
# of debian/control (deploy/install-deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-build-deb}")
rm -rf "$out/src"
mkdir -p "$out/src"
# the files of the work tree that git tracks or would (uncommitted changes included)
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$out/src"
rm -f "$out"/pycached_*
(cd "$out/src" && dpkg-buildpackage -b -us -uc) >"$out/build.log" 2>&1 || {
  tail -40 "$out/build.log" >&2
  exit 1
}
ls "$out"/pycached_*.deb
