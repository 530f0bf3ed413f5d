#!/usr/bin/env bash
# coverage.sh: which lines of the files under test the fuzz corpora reach. Builds each target
# again with clang's source-based coverage (no sanitizers), replays its corpus (the one run.sh
# grew, and the seeds) once, and prints llvm-cov's figures for the files that target tests.
# README.md, "Coverage of the files under test".
#
#   tests/fuzz/coverage.sh [OUTDIR]   (default: build-fuzz in the source root; its corpus/ is read)
#   PCC_FUZZ_TARGETS  the targets (default: all)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/build-fuzz}
cc=${CC:-clang}
profdata=${LLVM_PROFDATA:-llvm-profdata}
cov=${LLVM_COV:-llvm-cov}
dir=$out/coverage
mkdir -p "$dir"

cflags=(-std=c11 -g -O0 -D_GNU_SOURCE -DPCC_VERSION='"fuzz"' -fprofile-instr-generate
        -fcoverage-mapping -fsanitize=fuzzer
        -I"$root/proto" -I"$root/compiler" -I"$root/server" -I"$root/client"
        $(pkg-config --cflags libcjson libxxhash libsodium libcrypto libcurl libzstd))
libs=($(pkg-config --libs libcjson libxxhash libsodium libzstd) -ldl -pthread -lm)  # libcurl, libcrypto: dlopen

# target: the files it tests, and the one it links besides proto/
declare -A tested=(
  [params]="proto/params.c"
  [pyc_header]="proto/pyc.c proto/hash.c proto/json.c"
  [bundle]="proto/bundle.c"
  [entry_json]="proto/json.c"
  [worker_frames]="compiler/reply.c"
  [warm_bodies]="server/bodies.c"
  [token_file]="server/auth.c"
  [hook_response]="client/client.c client/http1.c"
)
declare -A extra=([worker_frames]="compiler/reply.c" [warm_bodies]="server/bodies.c"
                  [token_file]="server/auth.c"
                  [hook_response]="client/client.c client/http1.c client/curl.c")
targets=${PCC_FUZZ_TARGETS:-params pyc_header bundle entry_json worker_frames warm_bodies \
token_file hook_response}
for target in $targets; do
  binary=$dir/cov_$target
  sources=("$root/tests/fuzz/fuzz_$target.c" "$root"/proto/*.c)
  for f in ${extra[$target]:-}; do sources+=("$root/$f"); done
  "$cc" "${cflags[@]}" "${sources[@]}" "${libs[@]}" -o "$binary"
  corpora=("$root/tests/fuzz/corpus/$target")
  [ -d "$out/corpus/$target" ] && corpora=("$out/corpus/$target" "${corpora[@]}")
  LLVM_PROFILE_FILE="$dir/$target.profraw" "$binary" -runs=0 "${corpora[@]}" \
    >"$dir/$target.log" 2>&1
  "$profdata" merge -sparse "$dir/$target.profraw" -o "$dir/$target.profdata"
  files=()
  for f in ${tested[$target]}; do files+=("$root/$f"); done
  echo "== $target ($(find "${corpora[@]}" -type f | wc -l) inputs)"
  "$cov" report "$binary" -instr-profile="$dir/$target.profdata" "${files[@]}" |
    sed "s#$root/##"
done
echo "lines no input reached: $cov show $dir/cov_TARGET -instr-profile=$dir/TARGET.profdata FILE"
