#!/usr/bin/env bash
# Side-by-side benchmark of inferbox against llama.cpp's own llama-server built from the same
# llama.cpp source (scripts/setup.sh builds both). For every scenario and concurrency level it
# starts one server at a time with the same model, threads and slots, warms it up, runs
# `inferbox bench` against it, stops it, and finally prints a markdown report with both servers'
# figures and the ratios inferbox/peer.
#
#   scripts/bench.sh [RESULTS.md]        default build/bench/results.md; the report also goes to stdout
#
# Environment (all optional):
#   INFERBOX_TEST_MODELS  folder of the test models (default ../shared/models from the repo root)
#   INFERBOX_DEPS_CACHE   llama.cpp cache of scripts/setup.sh (default ~/.cache/inferbox-deps)
#   INFERBOX_BUILD_DIR    the project's build folder (default build/)
#   INFERBOX_BIN          the inferbox binary (default $INFERBOX_BUILD_DIR/inferbox)
#   LLAMA_SERVER          the peer binary (default <cache>/node-llama-cpp-<version>/build-cpu/bin/llama-server)
#   MAKE_SYNTHETIC_GGUF   the generator (default $INFERBOX_BUILD_DIR/tools/make-synthetic-gguf)
#   BENCH_CLIENT          the load generator command (default "$INFERBOX_BIN bench")
#   BENCH_SERVERS         which servers, in order (default "peer inferbox")
#   BENCH_SCENARIOS       which scenarios (default "a b c d")
#   BENCH_THREADS         compute threads of both servers (default 2)
#   INFERBOX_EXTRA_ARGS   more `inferbox serve` flags, e.g. "--prefill-chunk 32" (default none)
#   PEER_EXTRA_ARGS       more llama-server flags, e.g. "-fa off -ctk f32 -ctv f32" to give it the
#                         attention inferbox settles on a CPU (default none: its own defaults)
#   BENCH_SLOTS           "level": slots = the concurrency of each run (default);
#                         "max": slots = the scenario's highest concurrency for all its runs
#
# Progress and the client's own reports go to stderr; logs and JSON results to build/bench/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/deps.env
. "$root/scripts/deps.env"
# shellcheck source=scripts/bench-lib.sh
. "$root/scripts/bench-lib.sh"

build=${INFERBOX_BUILD_DIR:-$root/build}
out_md=${1:-$build/bench/results.md}
cache=${INFERBOX_DEPS_CACHE:-$HOME/.cache/inferbox-deps}
models=${INFERBOX_TEST_MODELS:-$root/../shared/models}
inferbox=${INFERBOX_BIN:-$build/inferbox}
peer=${LLAMA_SERVER:-$cache/node-llama-cpp-$NODE_LLAMA_CPP_VERSION/build-cpu/bin/llama-server}
synth_tool=${MAKE_SYNTHETIC_GGUF:-$build/tools/make-synthetic-gguf}
if [ -n "${BENCH_CLIENT:-}" ]; then
  read -r -a client <<<"$BENCH_CLIENT"
else
  client=("$inferbox" bench)
fi
servers=${BENCH_SERVERS:-"peer inferbox"}
scenarios=${BENCH_SCENARIOS:-"a b c d"}
threads=${BENCH_THREADS:-2}
slots_mode=${BENCH_SLOTS:-level}
work=$build/bench
run_timeout=1800   # seconds for one client run (each request is also bounded by the client: 600 s)
ready_timeout=180  # seconds for a server to load its model

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$work/logs" "$work/json" "$work/models" "$(dirname "$out_md")"
command -v curl >/dev/null || die "curl is required"
command -v node >/dev/null || die "node is required (scripts/setup.sh installs it)"
for s in $servers; do
  case $s in
    peer) [ -x "$peer" ] || die "llama-server not found at $peer: run scripts/setup.sh" ;;
    inferbox) [ -x "$inferbox" ] || die "inferbox not found at $inferbox: build the project first" ;;
    *) die "unknown server '$s' in BENCH_SERVERS (expected peer, inferbox)" ;;
  esac
done
case $slots_mode in level | max) ;; *) die "BENCH_SLOTS must be 'level' or 'max'" ;; esac
[ -f "$models/stories260K.gguf" ] || die "no test models in $models (set INFERBOX_TEST_MODELS)"
models=$(cd "$models" && pwd)

# --- servers -------------------------------------------------------------------------------
server_pid=""
stop_server() {
  [ -n "$server_pid" ] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

# A port nothing listens on (checked by connecting; the servers bind 127.0.0.1).
# start_server NAME MODEL SLOTS CTX_PER_SLOT LOGFILE -> sets server_pid and port
start_server() {
  local name=$1 model=$2 slots=$3 ctx=$4 logf=$5 ready_path
  port=$(free_port) || exit 1
  case $name in
    peer)
      # llama-server splits -c across its slots (the KV cache is per slot when -np is given).
      # shellcheck disable=SC2086 # PEER_EXTRA_ARGS is a list of flags
      "$peer" -m "$model" --host 127.0.0.1 --port "$port" -np "$slots" -c $((slots * ctx)) \
        -t "$threads" --no-webui ${PEER_EXTRA_ARGS:-} >"$logf" 2>&1 &
      ready_path=/health
      ;;
    inferbox)
      # shellcheck disable=SC2086 # INFERBOX_EXTRA_ARGS is a list of flags
      "$inferbox" serve --model "$model" --host 127.0.0.1 --port "$port" --parallel "$slots" \
        --ctx-size "$ctx" --threads "$threads" ${INFERBOX_EXTRA_ARGS:-} >"$logf" 2>&1 &
      ready_path=/v1/health/ready
      ;;
  esac
  server_pid=$!
  local deadline=$((SECONDS + ready_timeout))
  while :; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      tail -20 "$logf" >&2
      server_pid=""
      die "$name exited while loading (log: $logf)"
    fi
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port$ready_path")" = 200 ] && break
    [ $SECONDS -lt $deadline ] || { tail -20 "$logf" >&2; die "$name not ready after ${ready_timeout}s (log: $logf)"; }
    sleep 0.2
  done
}

# --- the synthetic model --------------------------------------------------------------------
# The issue's ~0.5B model: Qwen2.5-0.5B's shape, its 151936-token vocabulary included (padded,
# tied to the output), so every decode step also computes and samples 151936 logits per stream.
synthetic=$work/models/synthetic-0.5b-v151936-q4_k_m.gguf
need_synthetic() {
  synthetic_model "$synthetic" 1 151936 || die "cannot make the synthetic model"
}

# --- scenarios ------------------------------------------------------------------------------
# id | title | model | endpoint | prompt tokens | max tokens | shared prefix | levels | ctx per slot | requests per level | arrivals
# Requests per level: max(min_requests, 2 x concurrency), so every slot sees at least two requests.
# Arrivals: 0 = closed loop (a new request as soon as one ends, so equal requests run in lockstep);
# R = open loop, Poisson arrivals at R requests/s with at most `level` in flight (vLLM's
# --request-rate with --max-concurrency), so prompts arrive while other streams decode.
scenario() {
  case $1 in
    a) echo "a|stories260K chat, 64-token prompts, 128 out|$models/stories260K-chatml.gguf|chat|64|128|0|1 4 16 64|512|64|0" ;;
    b) echo "b|synthetic 0.5B (24x896, vocab 151936) Q4_K_M completions, 128-token prompts, 64 out|$synthetic|completions|128|64|0|1 4 8|512|16|0" ;;
    # 512 shared words + 64 unique words, 64 out: about 641 tokens per sequence.
    c) echo "c|synthetic 0.5B Q4_K_M, 16 requests sharing a 512-token prefix|$synthetic|completions|576|64|512|4|1024|16|0" ;;
    # (b)'s requests arriving at random: about 2/3 of what the 2 cores serve at 8 streams.
    d) echo "d|synthetic 0.5B Q4_K_M completions as (b), Poisson arrivals at 0.35 req/s, at most 8 in flight|$synthetic|completions|128|64|0|8|512|40|0.35" ;;
    *) die "unknown scenario '$1' (expected a, b, c, d)" ;;
  esac
}

manifest=$work/manifest.tsv
: >"$manifest"
failures=0
for sc in $scenarios; do
  IFS='|' read -r id title model endpoint ptok maxtok prefix levels ctx min_req rate <<<"$(scenario "$sc")"
  if [ "$id" != a ]; then need_synthetic; fi
  max_level=0
  for c in $levels; do
    if [ "$c" -gt "$max_level" ]; then max_level=$c; fi
  done
  for c in $levels; do
    slots=$c
    if [ "$slots_mode" = max ]; then slots=$max_level; fi
    requests=$((2 * c > min_req ? 2 * c : min_req))
    for s in $servers; do
      tag="$id-c$c-$s"
      log "scenario $id ($title): $s, concurrency $c, $requests requests, $slots slots"
      start_server "$s" "$model" "$slots" "$ctx" "$work/logs/$tag.server.log"
      common=(--url "http://127.0.0.1:$port" --endpoint "$endpoint" --prompt-tokens "$ptok")
      if [ "$prefix" -gt 0 ]; then common+=(--shared-prefix-tokens "$prefix"); fi
      # Warm-up with another seed (so another shared prefix): graphs and buffers get allocated,
      # nothing useful lands in the prompt cache.
      timeout "$run_timeout" "${client[@]}" "${common[@]}" --concurrency 1 --requests 2 --max-tokens 8 --seed 999 \
        >"$work/logs/$tag.warmup.log" 2>&1 || log "warm-up reported failures (see $work/logs/$tag.warmup.log)"
      json=$work/json/$tag.json
      rm -f "$json"
      rc=0
      timeout "$run_timeout" "${client[@]}" "${common[@]}" --concurrency "$c" --requests "$requests" \
        --max-tokens "$maxtok" --seed 1 --request-rate "$rate" --json-out "$json" --label "$tag" 2>&1 |
        tee "$work/logs/$tag.client.log" >&2 || rc=$?
      if [ "$rc" != 0 ]; then
        failures=$((failures + 1))
        log "client exited with $rc for $tag"
      fi
      stop_server
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$title" "$c" "$s" "$json" "$slots" "$requests" >>"$manifest"
    done
  done
done

# --- report ---------------------------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
llama_rev=$(git -C "$cache/node-llama-cpp-$NODE_LLAMA_CPP_VERSION/src" rev-parse --short HEAD 2>/dev/null || echo unknown)
ib_rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo uncommitted)
BENCH_META="date: $(date -u '+%Y-%m-%d %H:%M UTC') | host: ${cpu:-unknown CPU}, $(nproc) cores | threads: $threads | slots: $slots_mode | llama.cpp: node-llama-cpp $NODE_LLAMA_CPP_VERSION ($llama_rev) | inferbox: $ib_rev${INFERBOX_EXTRA_ARGS:+ | inferbox flags: $INFERBOX_EXTRA_ARGS}${PEER_EXTRA_ARGS:+ | llama-server flags: $PEER_EXTRA_ARGS}"
export BENCH_META
node - "$manifest" >"$out_md.tmp" <<'EOF'
const fs = require('fs');
const rows = fs.readFileSync(process.argv[2], 'utf8').split('\n').filter(Boolean).map((l) => {
  const [id, title, c, server, json, slots, requests] = l.split('\t');
  let r = null;
  try { r = JSON.parse(fs.readFileSync(json, 'utf8')); } catch (e) { /* run failed: no file */ }
  return { id, title, c: Number(c), server, r, slots, requests };
});
const name = { peer: 'llama-server', inferbox: 'inferbox' };
const f = (x, d = 1) => (x === undefined || x === null || !Number.isFinite(x) ? 'n/a' : x.toFixed(d));
const out = [];
out.push('# inferbox vs llama-server');
out.push('');
out.push(process.env.BENCH_META);
out.push('');
out.push('Streaming requests, temperature 0, `ignore_eos`, every request generates max_tokens. TTFT: send to first');
out.push('content; ITL: per request (e2e - TTFT) / (output tokens - 1) (AIPerf\'s ITL, vLLM\'s TPOT); gap: every');
out.push('interval between content chunks of all requests (vLLM\'s ITL); times in ms; tok/s is output tokens over the');
out.push('wall time of the run; client CPU is the load generator\'s own (it shares the cores).');
out.push('');
const scen = [...new Map(rows.map((x) => [x.id, x.title])).entries()];
for (const [id, title] of scen) {
  out.push(`## (${id}) ${title}`);
  out.push('');
  out.push('| conc | server | ok/failed | prompt tok | out tok/s | req/s | TTFT mean | TTFT p50 | TTFT p90 | TTFT p99 | ITL p50 | ITL p90 | ITL p99 | gap p50 | gap p99 | E2E p50 | E2E p99 | client CPU s |');
  out.push('|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const x of rows.filter((y) => y.id === id)) {
    const r = x.r;
    if (!r) { out.push(`| ${x.c} | ${name[x.server]} | no result | | | | | | | | | | | | | | | |`); continue; }
    out.push(`| ${x.c} | ${name[x.server]} | ${r.completed}/${r.failed} | ${f(r.prompt_tokens_mean)} | ${f(r.output_throughput_tok_s)} | ${f(r.request_throughput_req_s, 2)} | ` +
      `${f(r.ttft_ms.mean)} | ${f(r.ttft_ms.p50)} | ${f(r.ttft_ms.p90)} | ${f(r.ttft_ms.p99)} | ${f(r.itl_ms.p50, 2)} | ${f(r.itl_ms.p90, 2)} | ${f(r.itl_ms.p99, 2)} | ` +
      `${f(r.chunk_gap_ms.p50, 2)} | ${f(r.chunk_gap_ms.p99, 2)} | ` +
      `${f(r.e2e_ms.p50)} | ${f(r.e2e_ms.p99)} | ${f(r.client_cpu_s, 2)} |`);
  }
  out.push('');
  const levels = [...new Set(rows.filter((y) => y.id === id).map((y) => y.c))];
  const pair = (c) => ({
    p: rows.find((y) => y.id === id && y.c === c && y.server === 'peer'),
    i: rows.find((y) => y.id === id && y.c === c && y.server === 'inferbox'),
  });
  if (levels.some((c) => { const { p, i } = pair(c); return p && p.r && i && i.r; })) {
    out.push('Ratios inferbox / llama-server (throughput: higher is better; latency: lower is better):');
    out.push('');
    out.push('| conc | out tok/s | req/s | TTFT mean | TTFT p50 | TTFT p90 | TTFT p99 | ITL p50 | ITL p99 | gap p99 | E2E p50 | E2E p99 |');
    out.push('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    const q = (a, b) => (a > 0 && b > 0 ? (a / b).toFixed(2) : 'n/a');
    for (const c of levels) {
      const { p, i } = pair(c);
      if (!(p && p.r && i && i.r)) continue;
      const P = p.r, I = i.r;
      out.push(`| ${c} | ${q(I.output_throughput_tok_s, P.output_throughput_tok_s)} | ${q(I.request_throughput_req_s, P.request_throughput_req_s)} | ` +
        `${q(I.ttft_ms.mean, P.ttft_ms.mean)} | ${q(I.ttft_ms.p50, P.ttft_ms.p50)} | ${q(I.ttft_ms.p90, P.ttft_ms.p90)} | ${q(I.ttft_ms.p99, P.ttft_ms.p99)} | ${q(I.itl_ms.p50, P.itl_ms.p50)} | ${q(I.itl_ms.p99, P.itl_ms.p99)} | ` +
        `${q(I.chunk_gap_ms.p99, P.chunk_gap_ms.p99)} | ` +
        `${q(I.e2e_ms.p50, P.e2e_ms.p50)} | ${q(I.e2e_ms.p99, P.e2e_ms.p99)} |`);
    }
    out.push('');
  }
}
process.stdout.write(out.join('\n'));
EOF
mv "$out_md.tmp" "$out_md"
cat "$out_md"
log "report written to $out_md"
[ "$failures" = 0 ] || die "$failures client run(s) reported failures"
