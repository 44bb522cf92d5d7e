#!/usr/bin/env bash
# Runs every test tier: unit (no model), integration (the real binary with the real test
# models, driven by the official OpenAI SDK for Node). Builds first, incrementally.
#
#   INFERBOX_TEST_MODELS  folder with the test models (default: ../shared/models next to the repo)
#   INFERBOX_BUILD_DIR    build folder (default build/)
#   scripts/test.sh --sanitize   the same suites on an ASan+UBSan build (build-asan/)
#   scripts/test.sh --tsan       the unit tests on a ThreadSanitizer build (build-tsan/)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${INFERBOX_BUILD_DIR:-$root/build}
export INFERBOX_TEST_MODELS=${INFERBOX_TEST_MODELS:-$(cd "$root/.." && pwd)/shared/models}

for f in stories260K.gguf stories260K-chatml.gguf; do
  if [ ! -f "$INFERBOX_TEST_MODELS/$f" ]; then
    echo "test model missing: $INFERBOX_TEST_MODELS/$f (set INFERBOX_TEST_MODELS to the folder holding the test models)" >&2
    exit 1
  fi
done
if [ ! -f "$build/build.ninja" ]; then
  echo "no build in $build: run scripts/setup.sh first" >&2
  exit 1
fi

if [ "${1:-}" = "--tsan" ]; then
  # Only the unit label: the integration tier runs the real binary, whose llama.cpp/ggml compute
  # threads (OpenMP, not instrumented) touch the engine's buffers through synchronization TSan
  # cannot see, and every decode is reported as a race. The unit tests (scheduler, kv, text
  # streaming, schema, metrics, store) never decode, so what TSan reports there is ours.
  llama_build=$(sed -n 's/^INFERBOX_LLAMA_BUILD:PATH=//p' "$build/CMakeCache.txt")
  build="$root/build-tsan"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DINFERBOX_SANITIZE=thread \
    -DINFERBOX_LLAMA_BUILD="$llama_build" >/dev/null
  export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
  ninja -C "$build" unit_tests
  # The vector index's tests (retrieval/hnsw_index.cpp) run with TSan's deadlock detector off, and
  # still with its race detector: hnswlib keeps a mutex per element and locks a new element and
  # its neighbours in orders that differ between inserts, which the detector reports although
  # inserts never overlap (document_index's writer lock); past a few thousand mutexes it also loses
  # the reports' stacks, so no suppression can name them.
  ctest --test-dir "$build" -L unit -E '^RetrievalIndex\.' --output-on-failure
  TSAN_OPTIONS="$TSAN_OPTIONS:detect_deadlocks=0" exec ctest --test-dir "$build" -L unit -R '^RetrievalIndex\.' \
    --output-on-failure
fi
if [ "${1:-}" = "--sanitize" ]; then
  llama_build=$(sed -n 's/^INFERBOX_LLAMA_BUILD:PATH=//p' "$build/CMakeCache.txt")
  build="$root/build-asan"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DINFERBOX_SANITIZE=address,undefined \
    -DINFERBOX_LLAMA_BUILD="$llama_build" >/dev/null
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  # Deliberate process-lifetime allocations of third-party code (each named with its reason).
  export LSAN_OPTIONS=suppressions=$root/tests/lsan.supp:print_suppressions=0
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
fi
ninja -C "$build"
ctest --test-dir "$build" --output-on-failure
