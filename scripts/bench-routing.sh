#!/usr/bin/env bash
# Routing benchmarks (docs/routing.md), side by side in one run, reported as ratios:
#   1. router overhead: `inferbox bench` straight at a backend inferbox, then through a router
#      inferbox whose only route to that model is the backend (remote-only), same load;
#   2. overflow: a local box with N slots offered 2N streams, alone, then with one remote box
#      taking the overflow (local-first).
# Every server is an inferbox on a loopback port with the same model and threads.
#
#   scripts/bench-routing.sh [RESULTS.md]     default build/bench/routing.md; also printed
#
# Environment (all optional):
#   INFERBOX_TEST_MODELS  test models folder (default ../shared/models)
#   INFERBOX_BIN          the inferbox binary (default build/inferbox)
#   BENCH_MODEL           model file (default stories260K.gguf: the router's own cost stands out
#                         against the smallest possible generation cost)
#   BENCH_CONCURRENCY     streams of the overhead run (default 16)
#   BENCH_REQUESTS        requests per run (default 64)
#   BENCH_MAX_TOKENS      output tokens per request (default 64)
#   BENCH_SLOTS           N of the overflow run (default 2)
#   BENCH_THREADS         compute threads per server (default 1: two servers share the machine)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$root/scripts/bench-lib.sh"
build=${INFERBOX_BUILD_DIR:-$root/build}
out_md=${1:-$build/bench/routing.md}
models=${INFERBOX_TEST_MODELS:-$root/../shared/models}
bin=${INFERBOX_BIN:-$build/inferbox}
model=$models/${BENCH_MODEL:-stories260K.gguf}
conc=${BENCH_CONCURRENCY:-16}
requests=${BENCH_REQUESTS:-64}
max_tokens=${BENCH_MAX_TOKENS:-64}
slots=${BENCH_SLOTS:-2}
threads=${BENCH_THREADS:-1}
work=$build/bench/routing
mkdir -p "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# serve NAME PORT ARGS...: starts an inferbox, waits until it is ready.
serve() {
  local name=$1 port=$2
  shift 2
  INFERBOX_DATA=$work/$name "$bin" serve --model "$model" --host 127.0.0.1 --port "$port" --threads "$threads" \
    "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  wait_ready "http://127.0.0.1:$port" "$!" "$work/$name.log"
}
stop_all() { cleanup; pids=(); }

# bench LABEL URL CONCURRENCY MODEL: one `inferbox bench` run; its JSON lands in $work/LABEL.json.
bench() {
  "$bin" bench --url "$2" --model "$4" --concurrency "$3" --requests "$requests" --max-tokens "$max_tokens" \
    --prompt-tokens 64 --label "$1" --json-out "$work/$1.json" >"$work/$1.txt"
}
field() { python3 -c "import json,sys; d=json.load(open('$work/$1.json')); print(d$2)"; }

echo "[bench-routing] router overhead: $conc streams, $requests requests of $max_tokens tokens" >&2
serve backend 18601 --parallel "$conc"
serve router 18602 --parallel 1 --route far=remote-only \
  --backend "b=http://127.0.0.1:18601/v1;models=far=$(basename "$model" .gguf);probe-interval-ms=0"
bench direct-warm http://127.0.0.1:18601 "$conc" "$(basename "$model" .gguf)"
bench direct http://127.0.0.1:18601 "$conc" "$(basename "$model" .gguf)"
bench routed http://127.0.0.1:18602 "$conc" far
stop_all

echo "[bench-routing] overflow: $slots slots offered $((2 * slots)) streams" >&2
serve alone 18611 --parallel "$slots"
bench local-alone http://127.0.0.1:18611 $((2 * slots)) "$(basename "$model" .gguf)"
stop_all
serve remote 18621 --parallel "$slots"
serve local 18622 --parallel "$slots" \
  --backend "r=http://127.0.0.1:18621/v1;models=$(basename "$model" .gguf);probe-interval-ms=0"
bench overflow http://127.0.0.1:18622 $((2 * slots)) "$(basename "$model" .gguf)"
overflowed=$(curl -s http://127.0.0.1:18622/metrics | sed -n 's/^inferbox_routed_requests_total{backend="r",route="overflow"} //p')
stop_all

python3 - "$work" "$out_md" "$conc" "$requests" "$max_tokens" "$slots" "$threads" "${overflowed:-0}" "$model" <<'PY'
import json, sys, subprocess
work, out_md, conc, requests, max_tokens, slots, threads, overflowed, model = sys.argv[1:]
r = {k: json.load(open(f"{work}/{k}.json")) for k in ["direct", "routed", "local-alone", "overflow"]}
def g(d, *path):
    for p in path:
        d = d[p]
    return d
def ms(d, key):
    return g(d, "ttft_ms", key)
rows = []
d, t = r["direct"], r["routed"]
lines = [
    "| run | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | output tok/s | failed |",
    "|---|---|---|---|---|---|",
]
for name in ["direct", "routed", "local-alone", "overflow"]:
    x = r[name]
    lines.append(f"| {name} | {ms(x,'p50'):.2f} | {ms(x,'p99'):.2f} | {g(x,'itl_ms','p50'):.2f} | "
                 f"{x['output_throughput_tok_s']:.0f} | {x['failed']} |")
lines += [
    "",
    f"- router overhead ({conc} streams): added TTFT p50 **{ms(t,'p50') - ms(d,'p50'):+.2f} ms**, "
    f"output tokens/s **{t['output_throughput_tok_s'] / d['output_throughput_tok_s']:.3f}×** of direct",
    f"- overflow ({slots} local slots, {2*int(slots)} streams): served tokens/s "
    f"**{r['overflow']['output_throughput_tok_s'] / r['local-alone']['output_throughput_tok_s']:.2f}×** the local box "
    f"alone, {overflowed} requests overflowed, {r['overflow']['failed']} failed",
]
text = "\n".join(lines) + "\n"
open(out_md, "w").write(text)
print(text)
PY
