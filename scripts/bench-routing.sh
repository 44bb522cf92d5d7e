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
#   BENCH_PARTS           which runs: "overhead overflow" (default), or one of them
#   BENCH_PIN             1: each server on a CPU of its own (taskset), as if each were a machine
#                         with one core: the backend and the remote box on CPU 1, the router and
#                         the local box on CPU 0; the client is not pinned (default 0)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$root/scripts/bench-lib.sh"
build=${INFERBOX_BUILD_DIR:-$root/build}
out_md=${1:-$build/bench/routing.md}
models=${INFERBOX_TEST_MODELS:-$root/../shared/models}
bin=${INFERBOX_BIN:-$build/inferbox}
model=${BENCH_MODEL:-stories260K.gguf}
[[ $model = /* ]] || model=$models/$model
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

pin=${BENCH_PIN:-0}
if [ "$pin" = 1 ] && [ "$(nproc)" -lt 2 ]; then
  echo "BENCH_PIN=1 needs 2 CPUs, this machine gives $(nproc)" >&2
  exit 1
fi
# serve NAME CPU PORT ARGS...: starts an inferbox (on CPU with BENCH_PIN=1), waits until it is ready.
serve() {
  local name=$1 cpu=$2 port=$3
  shift 3
  local launch=()
  [ "$pin" = 1 ] && launch=(taskset -c "$cpu")
  INFERBOX_DATA=$work/$name "${launch[@]}" "$bin" serve --model "$model" --host 127.0.0.1 --port "$port" --threads "$threads" \
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

parts=${BENCH_PARTS:-overhead overflow}
rm -f "$work/direct.json" "$work/routed.json" "$work/router-overhead.txt"
if [[ " $parts " = *" overhead "* ]]; then
echo "[bench-routing] router overhead: $conc streams, $requests requests of $max_tokens tokens" >&2
serve backend 1 18601 --parallel "$conc"
serve router 0 18602 --parallel 1 --route far=remote-only \
  --backend "b=http://127.0.0.1:18601/v1;models=far=$(basename "$model" .gguf);probe-interval-ms=0"
bench direct-warm http://127.0.0.1:18601 "$conc" "$(basename "$model" .gguf)"
bench direct http://127.0.0.1:18601 "$conc" "$(basename "$model" .gguf)"
bench routed http://127.0.0.1:18602 "$conc" far
curl -s http://127.0.0.1:18602/metrics | grep '^inferbox_router_overhead_seconds' >"$work/router-overhead.txt" || true
stop_all
fi

rm -f "$work/local-alone.json" "$work/overflow.json"
if [[ " $parts " = *" overflow "* ]]; then
echo "[bench-routing] overflow: $slots slots offered $((2 * slots)) streams" >&2
serve alone 0 18611 --parallel "$slots"
bench local-alone http://127.0.0.1:18611 $((2 * slots)) "$(basename "$model" .gguf)"
stop_all
serve remote 1 18621 --parallel "$slots"
serve local 0 18622 --parallel "$slots" \
  --backend "r=http://127.0.0.1:18621/v1;models=$(basename "$model" .gguf);probe-interval-ms=0"
bench overflow http://127.0.0.1:18622 $((2 * slots)) "$(basename "$model" .gguf)"
overflowed=$(curl -s http://127.0.0.1:18622/metrics | sed -n 's/^inferbox_routed_requests_total{backend="r",route="overflow"} //p')
stop_all
fi

python3 - "$work" "$out_md" "$conc" "$requests" "$max_tokens" "$slots" "$threads" "${overflowed:-0}" "$model" "$pin" <<'PY'
import json, os, sys
work, out_md, conc, requests, max_tokens, slots, threads, overflowed, model, pin = sys.argv[1:]
r = {k: json.load(open(f"{work}/{k}.json")) for k in ["direct", "routed", "local-alone", "overflow"]
     if os.path.exists(f"{work}/{k}.json")}
def ms(d, key):
    return d["ttft_ms"][key]
lines = [
    f"{model.split('/')[-1]}, {threads} thread(s) per server, {requests} requests of {max_tokens} tokens"
    + (", each server pinned to a CPU of its own" if pin == "1" else ", servers unpinned"),
    "",
    "| run | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | output tok/s | failed |",
    "|---|---|---|---|---|---|",
]
for name, x in r.items():
    lines.append(f"| {name} | {ms(x,'p50'):.2f} | {ms(x,'p99'):.2f} | {x['itl_ms']['p50']:.2f} | "
                 f"{x['output_throughput_tok_s']:.0f} | {x['failed']} |")
lines.append("")
if "routed" in r:
    d, t = r["direct"], r["routed"]
    lines.append(f"- router overhead ({conc} streams): added TTFT p50 **{ms(t,'p50') - ms(d,'p50'):+.2f} ms**, "
                 f"output tokens/s **{t['output_throughput_tok_s'] / d['output_throughput_tok_s']:.3f}×** of direct")
    # The router's own time per request (arrival until the backend has it), from its histogram:
    # the share within each bucket bound up to 1 ms, and the median interpolated in its bucket.
    buckets = []
    for line in open(f"{work}/router-overhead.txt"):
        if line.startswith("inferbox_router_overhead_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    buckets.sort()
    if buckets and buckets[-1][1] > 0:
        total = buckets[-1][1]
        shares = ", ".join(f"{100 * c / total:.0f} % ≤ {le * 1e3:g} ms" for le, c in buckets if le in (0.0001, 0.0002, 0.0003, 0.0005, 0.001))
        prev_le, prev_c, p50 = 0.0, 0.0, float("nan")
        for le, c in buckets:
            if c >= total / 2:
                p50 = prev_le + (le - prev_le) * (total / 2 - prev_c) / max(c - prev_c, 1e-9)
                break
            prev_le, prev_c = le, c
        lines.append(f"- the router's own time per request (`inferbox_router_overhead_seconds`, {total:.0f} "
                     f"requests): median ≈ {p50 * 1e3:.3f} ms (interpolated in its bucket); {shares}")
if "overflow" in r:
    lines.append(f"- overflow ({slots} local slots, {2*int(slots)} streams): served tokens/s "
                 f"**{r['overflow']['output_throughput_tok_s'] / r['local-alone']['output_throughput_tok_s']:.2f}×** "
                 f"the local box alone, {overflowed} requests overflowed, {r['overflow']['failed']} failed")
text = "\n".join(lines) + "\n"
open(out_md, "w").write(text)
print(text)
PY
