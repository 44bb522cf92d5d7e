#!/usr/bin/env bash
# Single-stream decode against the roofline: for the synthetic Qwen2.5-0.5B-shaped model (24x896,
# 151936-token vocabulary, tied embeddings; made here when missing) at F16, Q8_0 and Q4_K_M, the
# decode rate `inferbox profiles` predicts from the measured limits (`inferbox hardware --measure`),
# then what inferbox and llama-server (the same llama.cpp source) reach on one stream, each as a
# share of the prediction. One server at a time, same threads, one slot, short context. Prints a
# markdown table (docs/profiles.md keeps the figures).
#
#   scripts/bench-roofline.sh
# Environment: INFERBOX_TEST_MODELS (default ../shared/models), INFERBOX_BIN (default build/inferbox),
# LLAMA_SERVER, LLAMA_QUANTIZE (default: scripts/setup.sh's llama.cpp build), ROOFLINE_THREADS
# (default 2), ROOFLINE_TOKENS (output tokens per request, default 64), ROOFLINE_REQUESTS (default 4),
# ROOFLINE_TYPES (default "f16 q8_0 q4_k_m").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/deps.env
. "$root/scripts/deps.env"
models=${INFERBOX_TEST_MODELS:-$root/../shared/models}
bin=${INFERBOX_BIN:-$root/build/inferbox}
synth_tool=${MAKE_SYNTHETIC_GGUF:-$root/build/tools/make-synthetic-gguf}
llama_bin=${INFERBOX_DEPS_CACHE:-$HOME/.cache/inferbox-deps}/node-llama-cpp-$NODE_LLAMA_CPP_VERSION/build-cpu/bin
peer=${LLAMA_SERVER:-$llama_bin/llama-server}
quantize=${LLAMA_QUANTIZE:-$llama_bin/llama-quantize}
threads=${ROOFLINE_THREADS:-2}
tokens=${ROOFLINE_TOKENS:-64}
requests=${ROOFLINE_REQUESTS:-4}
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=scripts/bench-lib.sh
. "$root/scripts/bench-lib.sh"
for tool in "$bin" "$peer" "$quantize" "$synth_tool"; do
  [ -x "$tool" ] || { echo "not found: $tool (run scripts/setup.sh)" >&2; exit 1; }
done

dir=$root/build/bench/models
f16=$dir/synthetic-0.5b-f16.gguf
if [ ! -f "$f16" ]; then
  mkdir -p "$dir"
  echo "generating $f16" >&2
  "$synth_tool" --out "$f16.tmp" --vocab-from "$models/stories260K.gguf" --layers 24 --embd 896 --heads 14 \
    --kv-heads 2 --ffn 4864 --ctx 4096 --seed 1 --type f16 --vocab-size 151936 --tie-embeddings >&2
  mv "$f16.tmp" "$f16"
fi
# Quantized from that F16 file under names of their own: other scripts keep a 512-token-vocabulary
# model as synthetic-0.5b-q4_k_m.gguf in the same folder.
for t in Q8_0 Q4_K_M; do
  q=$dir/synthetic-0.5b-f16-to-${t,,}.gguf
  [ -f "$q" ] || { "$quantize" "$f16" "$q.tmp" "$t" >"$work/quantize.log" 2>&1 && mv "$q.tmp" "$q"; } ||
    { cat "$work/quantize.log" >&2; exit 1; }
done

"$bin" hardware --measure >"$work/hardware.txt" 2>&1 || { cat "$work/hardware.txt" >&2; exit 1; }

# decode t/s of one server: the inverse of the median inter-token latency over $requests requests.
decode_rate() { # URL
  "$bin" bench --url "$1" --concurrency 1 --requests 2 --max-tokens 8 --seed 7 >/dev/null 2>&1 # warm-up
  "$bin" bench --url "$1" --concurrency 1 --requests "$requests" --prompt-tokens 16 --max-tokens "$tokens" \
    --seed 1 --json-out "$work/r.json" >/dev/null 2>"$work/bench.err" || { cat "$work/bench.err" >&2; return 1; }
  node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    if (r.failed) { console.error(`${r.failed} requests failed`); process.exit(1); }
    console.log((1000 / r.itl_ms.p50).toFixed(1));' "$work/r.json"
}

run() { # NAME MODEL: starts the server, prints its decode rate, stops it
  local port=$((20000 + RANDOM % 20000))
  if [ "$1" = inferbox ]; then
    "$bin" serve --model "$2" --port "$port" --parallel 1 --ctx-size 512 --threads "$threads" >"$work/server.log" 2>&1 &
  else
    "$peer" -m "$2" --port "$port" -np 1 -c 512 -t "$threads" >"$work/server.log" 2>&1 &
  fi
  server=$!
  wait_ready "http://127.0.0.1:$port" "$server" "$work/server.log"
  decode_rate "http://127.0.0.1:$port"
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=
}

echo "single stream, $threads threads, $tokens output tokens after a 16-token prompt (median inter-token latency);"
echo "prediction: \`inferbox profiles\` from \`inferbox hardware --measure\`"
echo
echo "| weights | predicted | bound | inferbox | share | llama-server | share | inferbox / llama-server |"
echo "|---|---:|---|---:|---:|---:|---:|---:|"
for t in ${ROOFLINE_TYPES:-f16 q8_0 q4_k_m}; do
  m=$dir/synthetic-0.5b-$t.gguf; [ "$t" = f16 ] || m=$dir/synthetic-0.5b-f16-to-$t.gguf
  read -r predicted bound <<<"$("$bin" profiles --model "$m" --json | node -e '
    const p = JSON.parse(require("fs").readFileSync(0, "utf8")).decode_prediction;
    if (!p) { console.error("no decode_prediction: run inferbox hardware --measure"); process.exit(1); }
    console.log(p.tokens_per_s.toFixed(1), p.bound);')"
  ours=$(run inferbox "$m")
  theirs=$(run peer "$m")
  awk -v t="${t^^}" -v p="$predicted" -v b="$bound" -v o="$ours" -v l="$theirs" 'BEGIN {
    printf "| %s | %.1f t/s | %s | %.1f t/s | %.0f %% | %.1f t/s | %.0f %% | %.2f |\n", t, p, b, o, 100*o/p, l, 100*l/p, o/l }'
done
