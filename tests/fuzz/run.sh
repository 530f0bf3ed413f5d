#!/usr/bin/env bash
# run.sh: runs every fuzz target of tests/fuzz/ for SECONDS each, one after the other, and prints
# for each its executions, coverage (cov: edges, ft: features) and corpus. Exits non-zero when a
# target found anything (a crash, a sanitizer report, a broken contract, a leak, a timeout, an
# out-of-memory) or could not run; the input that did it is kept under OUTDIR/artifacts/TARGET/.
# The last line is "Checks: N, Failures: F, Errors: 0" (one check a target), which
# deploy/test.sh counts. README.md has the details.
#
#   tests/fuzz/run.sh SECONDS [libFuzzer options...]
#     SECONDS 0: no time limit (give -runs=N instead; -runs=0 only replays the corpora)
#   PCC_FUZZ_OUT      where build.sh put the targets (default: build-fuzz in the source root);
#                     the corpora grow in OUTDIR/corpus/TARGET/, seeded from tests/fuzz/corpus/
#   PCC_FUZZ_TARGETS  the targets to run (default: all), e.g. "bundle entry_json"
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/tests/fuzz
out=${PCC_FUZZ_OUT:-$root/build-fuzz}
if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 SECONDS [libFuzzer options...]" >&2
  exit 2
fi
seconds=$1
shift
targets=${PCC_FUZZ_TARGETS:-params pyc_header bundle entry_json worker_frames warm_bodies \
token_file hook_response}

# target: the largest input it is given (bytes), and its dictionary (tests/fuzz/*.dict)
declare -A max_len=([params]=4096 [pyc_header]=4096 [bundle]=65536 [entry_json]=16384
                    [worker_frames]=16384 [warm_bodies]=65536 [token_file]=16384
                    [hook_response]=16384)
declare -A dict=([params]=params [pyc_header]="" [bundle]="" [entry_json]=json
                 [worker_frames]=json [warm_bodies]=json [token_file]=json
                 [hook_response]=hook)

checks=0
failures=0
printf '%-14s %8s %12s %10s %7s %7s %7s  %s\n' target seconds execs exec/s cov ft corp result
for target in $targets; do
  checks=$((checks + 1))
  binary=$out/fuzz_$target
  work=$out/corpus/$target
  artifacts=$out/artifacts/$target
  log=$out/logs/$target.log
  mkdir -p "$work" "$artifacts" "$(dirname "$log")"
  if [ ! -x "$binary" ]; then
    printf '%-14s  not built (tests/fuzz/build.sh)\n' "$target"
    failures=$((failures + 1))
    continue
  fi
  options=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048
           -max_len="${max_len[$target]}" -artifact_prefix="$artifacts/")
  [ -n "${dict[$target]}" ] && options+=(-dict="$here/${dict[$target]}.dict")
  start=$(date +%s)
  # new inputs go into the first corpus directory (the work one); the seeds are only read
  "$binary" "${options[@]}" "$@" "$work" "$here/corpus/$target" >"$log" 2>&1
  rc=$?
  took=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  corpus=$(grep -oE 'corp: [0-9]+' "$log" | tail -1 | cut -d' ' -f2) # inputs kept, in memory
  found=$(find "$artifacts" -type f | wc -l)
  result=ok
  if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then
    result="FAILED (exit $rc, $found inputs in $artifacts; log $log)"
    failures=$((failures + 1))
    grep -E 'ERROR:|runtime error:|contract broken|SUMMARY' "$log" | head -5 | sed 's/^/    /'
  fi
  printf '%-14s %8s %12s %10s %7s %7s %7s  %s\n' "$target" "$took" "${execs:-?}" "${rate:-?}" \
    "${cov:-?}" "${ft:-?}" "${corpus:-?}" "$result"
done
echo "Checks: $checks, Failures: $failures, Errors: 0"
[ "$failures" -eq 0 ]
