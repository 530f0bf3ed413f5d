#!/usr/bin/env bash
# test-package.sh: the Debian package on a fresh machine. Builds it (deploy/build-deb.sh), makes
# a fresh Debian bookworm root with debootstrap (minbase; kept in OUT/root-clean between runs,
# copied for each run), and there: `apt-get install ./pycached_*.deb` pulls its dependencies,
# the postinst makes the users and enables the service; then the real server runs as the unit
# runs it (user pycached, workers as pycached-worker, the unit's two capabilities) on a loopback
# port, and python3 imports a module through the hook's .pth with PYCACHED_URL set. Too long for
# a meson test (about 2 minutes for debootstrap, 1 for the package): deploy/test.sh runs it.
# Needs root, debootstrap and the package registry. Ends with one line `N passed, N failed`.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-build-deb}")
passed=0
failed=0
check() { # check NAME COMMAND...: one check, counted
  local name=$1; shift
  if "$@" >"$out/check.log" 2>&1; then
    passed=$((passed + 1)); echo "ok: $name"
  else
    failed=$((failed + 1)); echo "FAIL: $name"; sed 's/^/  /' "$out/check.log" | tail -20
  fi
}
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

mkdir -p "$out"
deb=$(deploy/build-deb.sh "$out" | tail -1)
check "dpkg-buildpackage -b -us -uc builds the package" test -f "$deb"
[ -f "$deb" ] || finish

mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)}
if [ ! -f "$out/root-clean/.complete" ]; then
  rm -rf "$out/root-clean"
  check "debootstrap a fresh bookworm root" debootstrap --variant=minbase bookworm \
    "$out/root-clean" "$mirror"
  [ -x "$out/root-clean/usr/bin/apt-get" ] || finish
  touch "$out/root-clean/.complete"
fi
root="$out/root"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  mountpoint -q "$root/proc" && umount "$root/proc"
}
trap cleanup EXIT
[ -d "$root" ] && { mountpoint -q "$root/proc" && umount "$root/proc"; rm -rf "$root"; }
cp -a "$out/root-clean" "$root"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
cp "$deb" "$root/tmp/"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

check "apt-get install ./$(basename "$deb") on the fresh root" in_root sh -c \
  "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /tmp/$(basename "$deb")"
check "the package is installed" in_root dpkg-query -W -f='${Status}' pycached
check "the service is enabled (multi-user.target.wants)" \
  test -L "$root/etc/systemd/system/multi-user.target.wants/pycached.service"
check "the users pycached and pycached-worker exist" in_root sh -c \
  "getent passwd pycached && getent passwd pycached-worker && getent group pycached"
check "the hook's .pth is in python3's site-packages" in_root python3 -c \
  "import site, os, sys; sys.exit(not any(os.path.exists(os.path.join(d, 'pycached.pth')) for d in site.getsitepackages()))"
check "man pycached(8) and pycachectl(1) are installed" \
  test -f "$root/usr/share/man/man8/pycached.8.gz" -a -f "$root/usr/share/man/man1/pycachectl.1.gz"
check "libpycached.so and pycached.pc are installed" in_root sh -c \
  "test -e /usr/lib/x86_64-linux-gnu/libpycached.so.0 && test -f /usr/lib/x86_64-linux-gnu/pkgconfig/pycached.pc"

# The server as the unit starts it (its state directory made as systemd would), on a free port
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$root/var/lib/pycached"
in_root chown pycached:pycached /var/lib/pycached
chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin setpriv --reuid pycached --regid pycached \
  --clear-groups --inh-caps +setuid,+setgid --ambient-caps +setuid,+setgid \
  /usr/bin/pycached --port "$port" --store /var/lib/pycached/store --worker-user pycached-worker \
  --workers 1 >"$out/server.log" 2>&1 &
server_pid=$!
up() {
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" && return 0
    sleep 0.1
  done
  return 1
}
check "the installed server answers /healthz as the unit runs it" up
mkdir -p "$root/srv/app"
printf 'def greet():\n    return "hello from the hook"\n' > "$root/srv/app/greet.py"
check "python3 imports through the hook (.pth, PYCACHED_URL): the server compiled it" \
  in_root sh -c "cd /srv/app && PYCACHED_URL=http://127.0.0.1:$port PYCACHED_DEBUG=1 \
    python3 -c 'import greet; print(greet.greet())' 2>&1 | tee /dev/stderr | \
    grep -q '^pycached: compiled *greet (/srv/app/greet.py)'"
check "a second python3 gets it from the cache" in_root sh -c "cd /srv/app && \
  PYCACHED_URL=http://127.0.0.1:$port PYCACHED_DEBUG=1 python3 -c 'import greet' 2>&1 | \
  tee /dev/stderr | grep -q '^pycached: hit *greet (/srv/app/greet.py)'"
# (chroot, env and setpriv exec one another: $server_pid is pycached's)
worker_uid=$(in_root id -u pycached-worker)
check "its worker runs as pycached-worker (uid $worker_uid)" sh -c \
  "ps -o uid= --ppid $server_pid | tr -d ' ' | grep -qx '$worker_uid'"
finish
