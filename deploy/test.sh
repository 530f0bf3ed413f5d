#!/usr/bin/env bash
# test.sh: the second command of the README. Installs what is missing, then builds twice and runs
# every test in both builds: a release build with warnings as errors, and a build with
# AddressSanitizer and UndefinedBehaviorSanitizer, whose tests include the fuzz targets built with
# clang, PCC_FUZZ_SECONDS each (default 30; 0 leaves them out; tests/fuzz/README.md). Ends with
# one line `N passed, N failed`, counting the individual checks of every suite (Check suites, the
# end-to-end suites, one check a fuzz target) and of deploy/test-package.sh (the Debian package
# installed on a fresh debootstrap root; PCC_PACKAGE_TEST=0 leaves it out).
set -uo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh || { echo "0 passed, 1 failed"; exit 1; }
# The admin page's browser test drives Debian's chromium through playwright-core (the package
# downloads no browser); its node_modules come from package-lock.json.
if [ ! -d tests/e2e/admin_page/node_modules ]; then
  (cd tests/e2e/admin_page && npm ci --no-audit --no-fund) || { echo "0 passed, 1 failed"; exit 1; }
fi
# The deploy suite's linters (tests/deploy/package.json): dockerfile-utils, kubernetes-models.
if [ ! -d tests/deploy/node_modules ]; then
  (cd tests/deploy && npm ci --no-audit --no-fund) || { echo "0 passed, 1 failed"; exit 1; }
fi

passed=0
failed=0
status=0

# Adds up the "Checks: N, Failures: F, Errors: E" lines of a meson test log.
count_checks() {
  local log=$1 line n f e
  while IFS= read -r line; do
    n=$(sed -E 's/.*Checks: ([0-9]+), Failures: ([0-9]+), Errors: ([0-9]+).*/\1 \2 \3/' <<<"$line")
    read -r n f e <<<"$n"
    passed=$((passed + n - f - e))
    failed=$((failed + f + e))
  done < <(grep -E 'Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log")
}

run_build() {
  local dir=$1; shift
  echo "== $dir: meson setup $*"
  if [ ! -d "$dir" ]; then
    meson setup "$dir" "$@" >/dev/null || { failed=$((failed + 1)); status=1; return; }
  else
    meson configure "$dir" "$@" >/dev/null || { failed=$((failed + 1)); status=1; return; }
  fi
  if ! ninja -C "$dir"; then
    echo "build failed: $dir"
    failed=$((failed + 1)); status=1; return
  fi
  local failed_before=$failed rc=0
  meson test -C "$dir" --print-errorlogs || rc=1
  count_checks "$dir/meson-logs/testlog.txt"
  # a suite that died before printing its counts still counts as a failure
  if [ "$rc" -ne 0 ]; then
    status=1
    [ "$failed" -eq "$failed_before" ] && failed=$((failed + 1))
  fi
}

# Sanitizer findings fail the run instead of scrolling by.
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0

run_build build-release --buildtype=release -Dwerror=true
# The sanitizer build also runs the fuzz targets (tests/fuzz/), PCC_FUZZ_SECONDS each (default
# 30; 0 leaves them out): the meson option fuzz_seconds, off in the release build.
run_build build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false \
  -Dwerror=true -Dfuzz_seconds="${PCC_FUZZ_SECONDS:-30}"

# The Debian package on a fresh root (debootstrap; about 3 minutes, 1 once the root is kept in
# build-deb/): built, installed with apt-get, its service's server and the hook run there.
# PCC_PACKAGE_TEST=0 leaves it out.
if [ "${PCC_PACKAGE_TEST:-1}" != 0 ]; then
  echo "== deploy/test-package.sh"
  mkdir -p build-deb
  deploy/test-package.sh build-deb >build-deb/test.log 2>&1
  rc=$?
  cat build-deb/test.log
  line=$(tail -1 build-deb/test.log)
  if [[ "$line" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    passed=$((passed + BASH_REMATCH[1])); failed=$((failed + BASH_REMATCH[2]))
  else
    failed=$((failed + 1))
  fi
  [ "$rc" -eq 0 ] || status=1
fi

echo "$passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
