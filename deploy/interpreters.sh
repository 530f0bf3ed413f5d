#!/usr/bin/env bash
# interpreters.sh: the Python interpreters of this machine, one path a line (those the import
# hook is built for: client/hook/find_interpreters.py). With --backends: only those a server
# needs a --compiler backend for, one per magic number (importlib.util.MAGIC_NUMBER), without
# the embedded CPython's magic (the one of /usr/bin/python3, which pycached embeds).
set -euo pipefail
cd "$(dirname "$0")/.."
reference=/usr/bin/python3
list=$("$reference" client/hook/find_interpreters.py "$reference")
if [ "${1:-}" != "--backends" ]; then
  printf '%s\n' "$list"
  exit 0
fi
magic_of() { "$1" -I -S -c 'import importlib.util as u; print(u.MAGIC_NUMBER.hex())' 2>/dev/null; }
declare -A seen=(["$(magic_of "$reference")"]=1)
while IFS= read -r interpreter; do
  magic=$(magic_of "$interpreter") || continue
  [ -n "$magic" ] && [ -z "${seen[$magic]:-}" ] || continue
  seen[$magic]=1
  printf '%s\n' "$interpreter"
done <<<"$list"
