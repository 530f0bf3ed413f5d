#!/usr/bin/env bash
# build.sh: builds the libFuzzer targets of tests/fuzz/ with clang, straight from the sources
# (no meson: the targets need every file they test compiled with -fsanitize=fuzzer-no-link, and
# the rest of the project stays a gcc build). README.md says how to run them.
#
#   tests/fuzz/build.sh [OUTDIR]     (default: build-fuzz in the source root)
#
# CC (default clang) must be a clang with libFuzzer (Debian: clang and libclang-rt-dev). Every
# target is built with AddressSanitizer and UndefinedBehaviorSanitizer, float-cast-overflow
# included, and no sanitizer recovers: a finding ends the run.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/build-fuzz}
cc=${CC:-clang}
mkdir -p "$out/obj"

if ! command -v "$cc" >/dev/null; then
  echo "build.sh: $cc not found (Debian: apt-get install clang libclang-rt-dev)" >&2
  exit 2
fi
probe="$out/obj/probe"
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
  > "$probe.c"
if ! "$cc" -fsanitize=fuzzer "$probe.c" -o "$probe" 2>"$probe.log"; then
  echo "build.sh: $cc cannot link libFuzzer (Debian: apt-get install libclang-rt-dev)" >&2
  cat "$probe.log" >&2
  exit 2
fi

sanitize=(-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all)
cflags=(-std=c11 -g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE -DPCC_VERSION='"fuzz"'
        -Wall -Wextra -Werror "${sanitize[@]}"
        -I"$root/proto" -I"$root/compiler" -I"$root/server" -I"$root/client"
        $(pkg-config --cflags libcjson libxxhash libsodium libcrypto libcurl libzstd))
libs=($(pkg-config --libs libcjson libxxhash libsodium libzstd) -ldl -pthread -lm)  # libcurl, libcrypto: dlopen

# The sources under test, one object each, instrumented for coverage.
sources=("$root"/proto/*.c "$root/compiler/reply.c" "$root/server/bodies.c"
         "$root/server/auth.c" "$root/client/client.c" "$root/client/http1.c"
         "$root/client/curl.c")
for src in "${sources[@]}"; do
  obj="$out/obj/$(basename "$(dirname "$src")")_$(basename "${src%.c}").o"
  "$cc" "${cflags[@]}" -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
done
proto_objs=("$out"/obj/proto_*.o)

# target: the objects it needs besides proto's
declare -A extra=(
  [params]=""
  [pyc_header]=""
  [bundle]=""
  [entry_json]=""
  [worker_frames]="compiler_reply.o"
  [warm_bodies]="server_bodies.o"
  [token_file]="server_auth.o"
  [hook_response]="client_client.o client_http1.o client_curl.o"
)
for target in params pyc_header bundle entry_json worker_frames warm_bodies token_file \
              hook_response; do
  objs=("${proto_objs[@]}")
  for o in ${extra[$target]}; do objs+=("$out/obj/$o"); done
  "$cc" "${cflags[@]}" -fsanitize=fuzzer "$root/tests/fuzz/fuzz_$target.c" "${objs[@]}" \
    "${libs[@]}" -o "$out/fuzz_$target"
  echo "built $out/fuzz_$target"
done
