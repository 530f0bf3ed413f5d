#!/usr/bin/env bash
# serve.sh: the first command of the README. Installs what is missing, builds, and runs pycached
# in the foreground on 127.0.0.1:8700 with its LMDB store under ./var/pycached. Besides the
# embedded CPython it starts a backend for every other interpreter found (deploy/interpreters.sh:
# /usr/bin/pypy3, pyenv's CPython 3.8 and later), one per magic; choose them with
#   --backends LIST   comma-separated interpreter paths, "none" for the embedded one alone
# (also PYCACHED_BACKENDS). Other arguments go to pycached (see `pycached --help`); stop it with
# Ctrl-C (SIGINT) or SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."

backends="${PYCACHED_BACKENDS:-auto}"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --backends) backends="${2:?--backends needs a list}"; shift 2 ;;
    --backends=*) backends="${1#--backends=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

deploy/install-deps.sh
if [ ! -d build ]; then
  meson setup build --buildtype=release >/dev/null
fi
ninja -C build >/dev/null

compilers=()
case "$backends" in
  none) ;;
  auto) while IFS= read -r interpreter; do compilers+=(--compiler "$interpreter"); done \
          < <(deploy/interpreters.sh --backends) ;;
  *) IFS=, read -r -a chosen <<<"$backends"
     for interpreter in "${chosen[@]}"; do compilers+=(--compiler "$interpreter"); done ;;
esac
exec build/server/pycached --listen 127.0.0.1 --port 8700 --store ./var/pycached \
  ${compilers[@]+"${compilers[@]}"} ${args[@]+"${args[@]}"}
