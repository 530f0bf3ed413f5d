#!/usr/bin/env bash
# install-deps.sh: installs, with apt-get, the Debian packages pycached needs to build, run and
# test (wrk and nginx: tests/bench/bench_load.py; a JDK, bookworm's default: the proto-jvm test;
# debhelper, debootstrap, yamllint, strace: the package and the deploy suite, tests/deploy/;
# prometheus: promtool, which lints /metrics in the admin suite; haproxy: the haproxy suite runs
# deploy/haproxy/pycached.cfg in front of three replicas; libhiredis-dev: the shared tier,
# server/shared.c, and redis-server, which the shared suite starts),
# skipping the ones already installed. Runs as root (or through sudo when available).
set -euo pipefail

packages=(
  build-essential pkg-config meson ninja-build
  libmicrohttpd-dev libgnutls28-dev libcjson-dev liblmdb-dev libxxhash-dev libcurl4-openssl-dev
  libsodium-dev libhiredis-dev redis-server
  libssl-dev libseccomp-dev libsystemd-dev libzstd-dev zstd
  libpython3.11-dev python3.11 check
  xxhash lmdb-utils procps curl
  chromium nodejs pypy3 pypy3-dev python3-sympy libpython3.11-testsuite
  clang libclang-rt-dev
  wrk nginx
  openjdk-17-jdk-headless
  debhelper dpkg-dev debootstrap yamllint python3-yaml strace
  prometheus
  haproxy
)
# The admin page's browser test needs npm; a nodejs from NodeSource bundles it (and conflicts with
# Debian's npm package), Debian's own nodejs does not.
command -v npm >/dev/null || packages+=(npm)

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root for: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
