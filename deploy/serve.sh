#!/usr/bin/env bash
# serve.sh: the first command of the README. Installs what is missing, builds, and runs pycached
# in the foreground on 127.0.0.1:8700 with its LMDB store under ./var/pycached. Extra arguments
# go to pycached (see `pycached --help`); stop it with Ctrl-C (SIGINT) or SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh
if [ ! -d build ]; then
  meson setup build --buildtype=release >/dev/null
fi
ninja -C build >/dev/null
exec build/server/pycached --listen 127.0.0.1 --port 8700 --store ./var/pycached "$@"
