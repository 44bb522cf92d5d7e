#!/usr/bin/env bash
# Enforces the house style on our own code (not llama.cpp's, not node_modules):
#   1. clang-format: every .cpp/.h under src/ apps/ tools/ tests/unit tests/fuzz must already be
#      formatted by the root .clang-format (a dry run; nothing is rewritten).
#   2. clang-tidy: the root .clang-tidy (WarningsAsErrors: '*') on every .cpp of ours, headers
#      under src/ included; any warning fails.
# clang-tidy needs a compilation database; it comes from configuring (not building) build-tidy/
# with clang, fuzz targets on, so every file of ours is in it. Takes a few minutes on 2 cores.
#
#   scripts/lint.sh [--format-only]
#   INFERBOX_TIDY_BUILD_DIR   folder for the compilation database (default build-tidy/)
#   INFERBOX_LINT_JOBS        parallel clang-tidy processes (default: the number of cores)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${INFERBOX_TIDY_BUILD_DIR:-$root/build-tidy}
log() { printf '[lint] %s\n' "$*"; }

mapfile -t sources < <(find src apps tools tests/unit tests/fuzz -type f \( -name '*.cpp' -o -name '*.h' \) | sort)
log "clang-format: ${#sources[@]} files"
failed=0
if ! clang-format --dry-run -Werror "${sources[@]}"; then
  echo "[lint] clang-format: the files above are not formatted; run: clang-format -i <file>" >&2
  failed=1
fi

# Layer include rules (docs/architecture.md): each row is a folder of src/ and an extended regular
# expression its files must not #include. The engine thread's layers see neither HTTP nor the API;
# the API and the backends never reach llama.cpp directly (only through engine/ and model/ types).
# Only the CLI includes server/ (serve's wiring), and server/ never includes the CLI.
layer_rules=(
  "common|nlohmann/|boost/beast|\"api/|\"engine/|llama\.h|\"server/"
  "kv|nlohmann/|boost/|\"api/|\"engine/|llama\.h|\"server/"
  "scheduler|nlohmann/|boost/|\"api/|\"engine/|llama\.h|\"server/"
  "store|nlohmann/|boost/beast|\"api/|\"engine/|llama\.h|\"server/"
  "host|nlohmann/|boost/beast|\"api/|\"engine/|llama\.h|\"server/"
  "metrics|nlohmann/|boost/beast|\"api/|\"engine/|llama\.h|\"server/"
  "engine|boost/beast|\"api/(http_server|routes|openai|responses)|\"backend/|\"server/"
  "model|boost/|\"api/|\"backend/|\"server/|\"engine/(engine|decoder|llama_decoder|draft_model|embedder)\.h"
  "backend|\"api/(http_server|routes|openai|responses|answer)|llama\.h|\"common\.h\"|\"chat\.h\"|\"server/"
  "api|llama\.h|\"common\.h\"|\"chat\.h\"|\"sampling\.h\"|\"server/"
  "tools|boost/|\"api/|\"engine/|\"backend/|llama\.h|\"server/"
  "agent|\"api/(http_server|routes|openai|responses|answer)|llama\.h|\"common\.h\"|\"chat\.h\"|\"server/"
  "console|boost/|\"api/|\"engine/|\"backend/|llama\.h|\"server/"
  "files|nlohmann/|boost/|\"api/|\"engine/|\"backend/|llama\.h|\"server/"
  "retrieval|boost/|\"api/|\"engine/|\"backend/|llama\.h|\"server/"
  "server|\"cli/"
)
for rule in "${layer_rules[@]}"; do
  dir=${rule%%|*}
  forbidden=${rule#*|}
  if hits=$(grep -nE "^#include [<\"]?($forbidden)" -r "src/$dir" 2>/dev/null); then
    echo "[lint] src/$dir includes what its layer must not (forbidden: $forbidden):" >&2
    echo "$hits" >&2
    failed=1
  fi
done
# The engine core sees llama.cpp only through the decoder seam (engine/decoder.h); its library
# does not link llama.cpp either.
core_files=(src/engine/engine.h src/engine/engine.cpp src/engine/decoder.h)
if hits=$(grep -nE '^#include [<"]?(llama\.h|ggml|common\.h"|sampling\.h"|chat\.h"|"engine/llama_decoder)' "${core_files[@]}"); then
  echo "[lint] the engine core includes llama.cpp or its decoder:" >&2
  echo "$hits" >&2
  failed=1
fi
log "layer include rules: ${#layer_rules[@]} layers checked"

[ "${1:-}" = "--format-only" ] && exit $failed

llama_build=${INFERBOX_LLAMA_BUILD:-}
if [ -z "$llama_build" ] && [ -f "$root/build/CMakeCache.txt" ]; then
  llama_build=$(sed -n 's/^INFERBOX_LLAMA_BUILD:PATH=//p' "$root/build/CMakeCache.txt")
fi
if [ -z "$llama_build" ]; then
  echo "no llama.cpp build known: run scripts/setup.sh first (or set INFERBOX_LLAMA_BUILD)" >&2
  exit 1
fi
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DINFERBOX_FUZZ=ON \
  -DINFERBOX_BUILD_TESTS=ON -DINFERBOX_LLAMA_BUILD="$llama_build" >/dev/null

mapfile -t units < <(printf '%s\n' "${sources[@]}" | grep '\.cpp$')
# A .cpp no target compiles has no flags to check it with: it fails the lint rather than being skipped.
for f in "${units[@]}"; do
  if ! grep -qF "\"file\": \"$root/$f\"" "$build/compile_commands.json"; then
    echo "[lint] $f is not compiled by any target (not in $build/compile_commands.json)" >&2
    failed=1
  fi
done
# Units clang-tidy found clean before, with the same preprocessed text, flags, .clang-tidy and
# clang-tidy, are not checked again (scripts/tidy_cache.py; INFERBOX_TIDY_CACHE=off checks all).
tidy_cache=${INFERBOX_TIDY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inferbox-tidy}
if [ "$tidy_cache" = off ]; then
  todo=("${units[@]}")
else
  # Through a file, so that a failure of the script fails the lint instead of checking nothing.
  python3 "$root/scripts/tidy_cache.py" pending --build "$build" --root "$root" --cache "$tidy_cache" \
    "${units[@]}" >"$build/tidy-todo.txt"
  mapfile -t todo <"$build/tidy-todo.txt"
fi
log "clang-tidy: ${#todo[@]} of ${#units[@]} files (the others were clean with the same text and flags)"
if [ ${#todo[@]} -gt 0 ]; then
  # run-clang-tidy takes regular expressions; it prints each file's diagnostics together and exits
  # 1 when any file had one.
  mapfile -t patterns < <(printf '%s\n' "${todo[@]/#/$root/}" | sed 's/[][\.*^$+?(){}|]/\\&/g; s/^/^/; s/$/$/')
  if run-clang-tidy -quiet -p "$build" -j "${INFERBOX_LINT_JOBS:-$(nproc)}" "${patterns[@]}" >"$build/tidy.log" 2>&1; then
    [ "$tidy_cache" = off ] || python3 "$root/scripts/tidy_cache.py" mark --build "$build" --cache "$tidy_cache"
  else
    sed 's/\x1b\[[0-9;]*m//g' "$build/tidy.log" | grep -v '^clang-tidy-14 \|^[0-9]* warnings\? generated\.$' >&2 || true
    echo "[lint] clang-tidy: the warnings above fail the lint (full log: $build/tidy.log)" >&2
    failed=1
  fi
fi
[ $failed = 0 ] && log "clean"
exit $failed
