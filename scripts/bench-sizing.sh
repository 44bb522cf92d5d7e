#!/usr/bin/env bash
# Sizing replicas: how many concurrent requests one inferbox replica holds at a target TTFT. One
# server (the synthetic 24x896 Q4_K_M model, made here when missing; --parallel SLOTS) is driven by
# `inferbox bench` at rising concurrency; each level's TTFT, inter-token latency and throughput are
# printed as a markdown table, then the highest concurrency whose TTFT p90 stays within the target.
# docs/deploy.md turns that into the replica rule.
#
#   scripts/bench-sizing.sh [TARGET_TTFT_MS]     default 1000
# Environment: INFERBOX_TEST_MODELS (default ../shared/models), INFERBOX_BIN (default build/inferbox),
# SIZING_LEVELS (default "1 2 4 8 12 16"), SIZING_SLOTS (default 8), SIZING_THREADS (default 2),
# SIZING_PROMPT (prompt tokens, default 128), SIZING_OUT (output tokens, default 64).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${INFERBOX_TEST_MODELS:-$root/../shared/models}
bin=${INFERBOX_BIN:-$root/build/inferbox}
synth_tool=${MAKE_SYNTHETIC_GGUF:-$root/build/tools/make-synthetic-gguf}
target=${1:-1000}
levels=${SIZING_LEVELS:-"1 2 4 8 12 16"}
slots=${SIZING_SLOTS:-8}
threads=${SIZING_THREADS:-2}
prompt=${SIZING_PROMPT:-128}
out=${SIZING_OUT:-64}
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=scripts/bench-lib.sh
. "$root/scripts/bench-lib.sh"

model=$root/build/bench/models/synthetic-24x896-q4_k_m.gguf
synthetic_model "$model"

port=$((20000 + RANDOM % 20000))
"$bin" serve --model "$model" --port "$port" --parallel "$slots" --ctx-size 1024 --threads "$threads" \
  --max-queue 256 >"$work/server.log" 2>&1 &
server=$!
wait_ready "http://127.0.0.1:$port" "$server" "$work/server.log"

url=http://127.0.0.1:$port
"$bin" bench --url "$url" --concurrency 1 --requests 2 --max-tokens 8 --seed 999 >/dev/null 2>&1 # warm-up

echo "inferbox --parallel $slots --threads $threads, synthetic 24x896 Q4_K_M, $prompt-token prompts, $out output tokens"
echo
echo "| concurrency | TTFT p50 ms | TTFT p90 ms | TTFT p99 ms | ITL p50 ms | ITL p90 ms | output tok/s | req/s |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
best=0
for c in $levels; do
  requests=$((c * 4 > 8 ? c * 4 : 8))
  "$bin" bench --url "$url" --concurrency "$c" --requests "$requests" --prompt-tokens "$prompt" \
    --max-tokens "$out" --seed "$c" --json-out "$work/c$c.json" >/dev/null 2>"$work/c$c.err" ||
    { cat "$work/c$c.err" >&2; exit 1; }
  row=$(node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const f = (x) => x.toFixed(1);
    if (r.failed) { console.error(`${r.failed} requests failed`); process.exit(1); }
    console.log([r.concurrency, f(r.ttft_ms.p50), f(r.ttft_ms.p90), f(r.ttft_ms.p99), f(r.itl_ms.p50),
      f(r.itl_ms.p90), f(r.output_throughput_tok_s), r.request_throughput_req_s.toFixed(2), r.ttft_ms.p90].join(" "));
  ' "$work/c$c.json")
  read -r col1 col2 col3 col4 col5 col6 col7 col8 p90 <<<"$row"
  echo "| $col1 | $col2 | $col3 | $col4 | $col5 | $col6 | $col7 | $col8 |"
  if awk -v a="$p90" -v t="$target" 'BEGIN { exit !(a <= t) }'; then
    best=$c
  fi
done
echo
if [ "$best" = 0 ]; then
  echo "no level kept TTFT p90 within ${target} ms: one replica holds fewer than 1 concurrent request at this target"
else
  echo "one replica holds $best concurrent requests at TTFT p90 <= ${target} ms (of the levels tried: $levels)"
fi
