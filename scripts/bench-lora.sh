#!/usr/bin/env bash
# What serving LoRA adapters next to the base model costs. One inferbox server (--parallel 4,
# the adapter folder holding the test LoRA as "tom") serves three mixes in turn, each as two
# `inferbox bench` clients at concurrency 2 running together (4 streams in all):
#   base+base   every stream on the base model (the reference)
#   base+tom    two streams on the base model, two on the adapter (steps alternate adapter sets)
#   tom+tom     every stream on the adapter
# and prints a markdown table: output tokens/s of the four streams together, ITL p50/p99 and
# TTFT p50 of each client. Streams are 64-token prompts, 128 output tokens, ignore_eos.
#
#   scripts/bench-lora.sh [REQUESTS_PER_CLIENT]    default 32
#
# Environment: INFERBOX_TEST_MODELS (default ../shared/models), INFERBOX_BIN (default build/inferbox).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${INFERBOX_TEST_MODELS:-$root/../shared/models}
bin=${INFERBOX_BIN:-$root/build/inferbox}
requests=${1:-32}
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

mkdir -p "$work/loras"
cp "$models/stories260K-lora-tom-max-r64.gguf" "$work/loras/tom.gguf"
port=$((20000 + RANDOM % 20000))
"$bin" serve --model "$models/stories260K.gguf" --port "$port" --parallel 4 --threads 2 \
  --lora-dir "$work/loras" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/v1/health/ready" >/dev/null && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$port/v1/health/ready" >/dev/null || { cat "$work/server.log" >&2; exit 1; }

client() { # model label
  "$bin" bench --url "http://127.0.0.1:$port" --model "$1" --concurrency 2 --requests "$requests" \
    --prompt-tokens 64 --max-tokens 128 --json-out "$work/$2.json" --label "$2" >/dev/null 2>&1
}
field() { # file expression
  node -e "const j=require('$1'); console.log(($2).toFixed(1))"
}

echo "| mix | output tok/s (4 streams) | client | ITL p50 ms | ITL p99 ms | TTFT p50 ms |"
echo "|---|---|---|---|---|---|"
for mix in "stories260K stories260K" "stories260K tom" "tom tom"; do
  read -r m1 m2 <<<"$mix"
  client "$m2" warmup # warm-up (loads the adapter)
  client "$m1" c1 &
  p1=$!
  client "$m2" c2 &
  p2=$!
  wait "$p1" "$p2"
  total=$(node -e "const a=require('$work/c1.json'), b=require('$work/c2.json');
    console.log(((a.output_tokens_total + b.output_tokens_total) / Math.max(a.duration_s, b.duration_s)).toFixed(0))")
  name="${m1/stories260K/base}+${m2/stories260K/base}"
  for c in c1 c2; do
    f="$work/$c.json"
    model=$(node -e "console.log(require('$f').model)")
    echo "| $name | $total | $model | $(field "$f" j.itl_ms.p50) | $(field "$f" j.itl_ms.p99) | $(field "$f" j.ttft_ms.p50) |"
  done
done
