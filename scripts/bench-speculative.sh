#!/usr/bin/env bash
# What speculative decoding gains or loses. For each model, one inferbox server per drafting mode
# (none; --draft-model; --draft-ngram) answers the same `inferbox bench` run: one stream at a time
# (where drafting can help: a lone sequence leaves the hardware idle between tokens), 64-token
# prompts, 128 output tokens. Prints a markdown table: output tokens/s, ITL p50/p99, TTFT p50,
# the draft acceptance rate from /metrics, and tokens/s as a ratio to no drafting.
#
#   scripts/bench-speculative.sh [REQUESTS]    default 8
#   BENCH_CONCURRENCY=4 scripts/bench-speculative.sh 16   streams at once (and --parallel), default 1
#   BENCH_DRAFT_MAX_BATCH=N   the servers' --draft-max-batch (default 256: draft at any batch size)
#
# Models: stories260K.gguf with its Q8_0 quantization as the draft (they agree nearly always),
# and a random-weight synthetic 24x896 Q4_K_M model (scripts/bench.sh makes it; made here when
# missing) with stories260K.gguf as the draft (same tokenizer, unrelated weights: they disagree).
# Environment: INFERBOX_TEST_MODELS (default ../shared/models), INFERBOX_BIN (default build/inferbox).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${INFERBOX_TEST_MODELS:-$root/../shared/models}
bin=${INFERBOX_BIN:-$root/build/inferbox}
synth_tool=${MAKE_SYNTHETIC_GGUF:-$root/build/tools/make-synthetic-gguf}
requests=${1:-8}
concurrency=${BENCH_CONCURRENCY:-1}
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

# shellcheck source=scripts/bench-lib.sh
. "$root/scripts/bench-lib.sh"
synthetic=$root/build/bench/models/synthetic-24x896-q4_k_m.gguf
synthetic_model "$synthetic"

run() { # label model draft-args...
  local label=$1 model=$2
  shift 2
  local port=$((20000 + RANDOM % 20000))
  "$bin" serve --model "$model" --port "$port" --parallel "$concurrency" --threads 2 --ctx-size 1024 --draft-max-batch "${BENCH_DRAFT_MAX_BATCH:-256}" "$@" \
    >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$port/v1/health/ready" >/dev/null && break
    sleep 0.2
  done
  curl -sf "http://127.0.0.1:$port/v1/health/ready" >/dev/null || { cat "$work/server.log" >&2; exit 1; }
  "$bin" bench --url "http://127.0.0.1:$port" --concurrency 1 --requests 2 --prompt-tokens 64 \
    --max-tokens 32 >/dev/null 2>&1 # warm-up
  "$bin" bench --url "http://127.0.0.1:$port" --concurrency "$concurrency" --requests "$requests" --prompt-tokens 64 \
    --max-tokens 128 --json-out "$work/$label.json" --label "$label" >/dev/null 2>&1
  curl -sf "http://127.0.0.1:$port/metrics" >"$work/$label.prom"
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=
}

row() { # label mode reference-label
  node -e "
    const fs = require('fs');
    const j = require('$work/$1.json'), ref = require('$work/$3.json');
    const prom = fs.readFileSync('$work/$1.prom', 'utf8');
    const v = (n) => Number((prom.split('\n').find((l) => l.startsWith(n + '{')) || ' 0').split(' ').pop());
    const drafted = v('spec_decode_num_draft_tokens_total'), accepted = v('spec_decode_num_accepted_tokens_total');
    const tps = (x) => x.output_tokens_total / x.duration_s;
    const rate = drafted ? (100 * accepted / drafted).toFixed(0) + '% of ' + drafted : '-';
    console.log('| $2 | ' + tps(j).toFixed(1) + ' | ' + j.itl_ms.p50.toFixed(1) + ' | ' + j.itl_ms.p99.toFixed(1) +
      ' | ' + j.ttft_ms.p50.toFixed(1) + ' | ' + rate + ' | ' + (tps(j) / tps(ref)).toFixed(2) + '× |');"
}

echo "| model, drafting | output tok/s | ITL p50 ms | ITL p99 ms | TTFT p50 ms | drafts accepted | tok/s vs none |"
echo "|---|---|---|---|---|---|---|"
bench_model() { # id name model draft-model
  run "$1-none" "$3"
  run "$1-draft" "$3" --draft-model "$4"
  run "$1-ngram" "$3" --draft-ngram
  row "$1-none" "$2, none" "$1-none"
  row "$1-draft" "$2, draft $(basename "$4" .gguf)" "$1-none"
  row "$1-ngram" "$2, prompt lookup" "$1-none"
}
bench_model s stories260K "$models/stories260K.gguf" "$models/stories260K-Q8_0.gguf"
bench_model y "synthetic 24x896 Q4_K_M" "$synthetic" "$models/stories260K.gguf"
