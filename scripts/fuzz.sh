#!/usr/bin/env bash
# The fuzz tier: builds every libFuzzer target of tests/fuzz with clang in build-fuzz/ and runs
# each for N seconds (default 30) on a copy of its committed seed corpus (tests/fuzz/corpus/<name>/
# for target <name>_fuzz), so a run never writes into the repository. Exits non-zero when a
# target crashes, leaks, trips a sanitizer or breaks one of its invariants; the reproducer is
# kept under build-fuzz/crashes/<target>/ (replay: build-fuzz/tests/fuzz/<target> <file>).
#
#   scripts/fuzz.sh [seconds-per-target]
#   INFERBOX_FUZZ_BUILD_DIR   build folder (default build-fuzz/)
#   INFERBOX_FUZZ_TARGETS     space-separated subset of targets to run (default: all)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-30}
build=${INFERBOX_FUZZ_BUILD_DIR:-$root/build-fuzz}
log() { printf '[fuzz] %s\n' "$*"; }

# The fuzzers link no llama.cpp, but configuring inferbox needs one: take the main build's.
llama_build=${INFERBOX_LLAMA_BUILD:-}
if [ -z "$llama_build" ] && [ -f "$root/build/CMakeCache.txt" ]; then
  llama_build=$(sed -n 's/^INFERBOX_LLAMA_BUILD:PATH=//p' "$root/build/CMakeCache.txt")
fi
if [ -z "$llama_build" ]; then
  echo "no llama.cpp build known: run scripts/setup.sh first (or set INFERBOX_LLAMA_BUILD)" >&2
  exit 1
fi

# Debug keeps assertions (nlohmann-json's among them) on; -O1 keeps the fuzzers fast.
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_FLAGS_DEBUG="-g -O1" -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" \
  -DINFERBOX_FUZZ=ON -DINFERBOX_BUILD_TESTS=OFF -DINFERBOX_LLAMA_BUILD="$llama_build" >/dev/null
ninja -C "$build" fuzz

read -r -a targets <<<"${INFERBOX_FUZZ_TARGETS:-$(tr '\n' ' ' <"$build/fuzz_targets.txt")}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
  seeds="$root/tests/fuzz/corpus/${t%_fuzz}"
  if [ ! -d "$seeds" ]; then
    echo "$t has no seed corpus: $seeds" >&2
    failed+=("$t")
    continue
  fi
  mkdir -p "$work/$t" "$build/crashes/$t"
  cp -R "$seeds/." "$work/$t/"
  # tests/fuzz/<name>.dict, when present, lists tokens (field names) the target's format needs.
  opts=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
    -artifact_prefix="$build/crashes/$t/")
  [ -f "$root/tests/fuzz/${t%_fuzz}.dict" ] && opts+=(-dict="$root/tests/fuzz/${t%_fuzz}.dict")
  log "$t: ${seconds}s on $(find "$seeds" -type f | wc -l) seeds"
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: and over 2 GiB, a bomb.
  if ! "$build/tests/fuzz/$t" "${opts[@]}" "$work/$t" >"$work/$t.log" 2>&1; then
    tail -60 "$work/$t.log" >&2
    echo "[fuzz] $t FAILED; reproducers in $build/crashes/$t/" >&2
    failed+=("$t")
    continue
  fi
  grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' "$work/$t.log" | tail -1 | sed "s/^/[fuzz] $t: /"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "[fuzz] failed: ${failed[*]}" >&2
  exit 1
fi
log "all ${#targets[@]} targets passed"
