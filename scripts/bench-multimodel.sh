#!/usr/bin/env bash
# What multi-model hosting costs: two random-weight synthetic 24x896 Q4_K_M models (different
# seeds; made here when missing) served by one inferbox under a memory budget that holds one of
# them. Requests alternate a, b, a, b ...: each switch unloads the idle model and loads the other.
# Prints a markdown table per request: the model's state before it, the request's wall time
# (including the load), the estimate of the loaded set, and the server's RSS after it — so the
# estimate can be read against what the process really holds, and the unload against the RSS.
#
#   scripts/bench-multimodel.sh [SWITCHES]    default 4
# Environment: INFERBOX_TEST_MODELS (default ../shared/models), INFERBOX_BIN (default build/inferbox),
# BENCH_MMAP=1 to keep mmap (default --no-mmap, so RSS counts the weights as loaded, not as paged in).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${INFERBOX_TEST_MODELS:-$root/../shared/models}
bin=${INFERBOX_BIN:-$root/build/inferbox}
synth_tool=${MAKE_SYNTHETIC_GGUF:-$root/build/tools/make-synthetic-gguf}
switches=${1:-4}
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

# shellcheck source=scripts/bench-lib.sh
. "$root/scripts/bench-lib.sh"
a=$root/build/bench/models/synthetic-24x896-q4_k_m.gguf
b=$root/build/bench/models/synthetic-24x896-q4_k_m-seed2.gguf
synthetic_model "$a" 1
synthetic_model "$b" 2

mmap_flag=--no-mmap
[ "${BENCH_MMAP:-0}" = 1 ] && mmap_flag=

start() { # budget
  port=$((20000 + RANDOM % 20000))
  "$bin" serve --model "a=$a" --model "b=$b" --port "$port" --parallel 2 --ctx-size 1024 --threads 2 \
    $mmap_flag --memory-budget "$1" >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/v1/health/ready" >/dev/null && return 0
    sleep 0.2
  done
  cat "$work/server.log" >&2
  exit 1
}
rss_mib() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$server/status"; }
hwm_mib() { awk '/^VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$server/status"; }
field() { # model-id json-field (from /v1/models)
  curl -sf "http://127.0.0.1:$port/v1/models" |
    node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const m=JSON.parse(s).data.find(x=>x.id==='$1');console.log(m['$2'])})"
}

# The budget: the larger estimate plus half the smaller, so exactly one fits.
start off
est_a=$(field a memory_bytes)
est_b=$(field b memory_bytes)
kill "$server"; wait "$server" 2>/dev/null || true
budget=$(( (est_a > est_b ? est_a : est_b) + (est_a < est_b ? est_a : est_b) / 2 ))
start "${budget}B"
echo "estimates: a $((est_a >> 20)) MiB, b $((est_b >> 20)) MiB; budget $((budget >> 20)) MiB; RSS after start $(rss_mib) MiB"
echo
echo "| request | model | state before | wall s (with load) | RSS after MiB |"
echo "|---|---|---|---|---|"
for i in $(seq 0 $((2 * switches))); do
  m=$([ $((i % 2)) = 0 ] && echo b || echo a)
  state=$(field "$m" status)
  t0=$(date +%s.%N)
  curl -sf "http://127.0.0.1:$port/v1/completions" -H 'content-type: application/json' \
    -d "{\"model\":\"$m\",\"prompt\":\"Once upon a time\",\"max_tokens\":16,\"temperature\":0}" >/dev/null
  t1=$(date +%s.%N)
  echo "| $((i + 1)) | $m | $state | $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') | $(rss_mib) |"
done
echo
echo "peak RSS (VmHWM): $(hwm_mib) MiB"
kill "$server"; wait "$server" 2>/dev/null || true
server=
