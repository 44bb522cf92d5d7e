#!/usr/bin/env bash
# Goodput under latency targets (issue 25), side by side: inferbox serving with --slo-ttft-ms and
# --slo-itl-ms, and llama.cpp's llama-server built from the same llama.cpp, on the same model with
# the same threads and slots. Each server in turn is swept over the same Poisson arrival rates by
# `inferbox bench --rates` (the same prompts and arrival pattern for both); a request counts when
# its first token came within the TTFT target of its arrival and the p99 of its own inter-token
# gaps is within the ITL target. Writes a Markdown report and a PNG plot of the share of requests
# meeting both against the rate (an SVG drawn here, rendered by headless Chromium).
#
#   scripts/bench-goodput.sh [OUT_DIR]       default build/bench/goodput; the report also goes to stdout
#
# Environment (all optional):
#   GOODPUT_RATES        arrival rates, requests/s (default 0.1,0.2,0.3,0.45,0.6)
#   GOODPUT_REQUESTS     requests per rate (default 10); a run lasts about REQUESTS / RATE seconds, so the
#                        defaults take about 9 minutes for both servers
#   GOODPUT_TTFT_MS      first-token target (default 2000)
#   GOODPUT_ITL_MS       per-request inter-token p99 target (default 150)
#   GOODPUT_ATTAINMENT   share of requests that must meet both (default 0.9)
#   GOODPUT_PROMPT_TOKENS, GOODPUT_MAX_TOKENS   request shape (default 128 and 64)
#   GOODPUT_SLOTS        slots of both servers (default 8)
#   GOODPUT_MODEL        the model (default: the ~0.5B synthetic model of scripts/bench.sh)
#   GOODPUT_PNG          also copy the plot here (e.g. docs/img/goodput.png)
#   GOODPUT_SERVERS      which servers, in order (default "inferbox peer")
#   GOODPUT_SERVE_TARGETS  what inferbox serves with: "flags" (default: the targets above as
#                        --slo-ttft-ms/--slo-itl-ms) or "profile" (no flags: the targets its profile
#                        derives, which the startup log names); requests are judged by the targets
#                        above either way
#   GOODPUT_REPORT_ONLY  1: run nothing, redraw the report and plot from the JSON already in OUT_DIR
#   BENCH_THREADS        compute threads of both servers (default 2)
#   INFERBOX_BUILD_DIR, INFERBOX_BIN, LLAMA_SERVER, INFERBOX_DEPS_CACHE, INFERBOX_TEST_MODELS,
#   MAKE_SYNTHETIC_GGUF  as in scripts/bench.sh
#   INFERBOX_EXTRA_ARGS, PEER_EXTRA_ARGS   more flags for either server
#   INFERBOX_CHROMIUM    the browser that renders the plot (default /usr/bin/chromium)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/deps.env
. "$root/scripts/deps.env"
# shellcheck source=scripts/bench-lib.sh
. "$root/scripts/bench-lib.sh"

build=${INFERBOX_BUILD_DIR:-$root/build}
out=${1:-$build/bench/goodput}
cache=${INFERBOX_DEPS_CACHE:-$HOME/.cache/inferbox-deps}
# shellcheck disable=SC2034 # models and synth_tool are read by synthetic_model (bench-lib.sh)
models=${INFERBOX_TEST_MODELS:-$root/../shared/models}
inferbox=${INFERBOX_BIN:-$build/inferbox}
peer=${LLAMA_SERVER:-$cache/node-llama-cpp-$NODE_LLAMA_CPP_VERSION/build-cpu/bin/llama-server}
# shellcheck disable=SC2034
synth_tool=${MAKE_SYNTHETIC_GGUF:-$build/tools/make-synthetic-gguf}
chromium=${INFERBOX_CHROMIUM:-/usr/bin/chromium}
rates=${GOODPUT_RATES:-0.1,0.2,0.3,0.45,0.6}
requests=${GOODPUT_REQUESTS:-10}
ttft_ms=${GOODPUT_TTFT_MS:-2000}
itl_ms=${GOODPUT_ITL_MS:-150}
attainment=${GOODPUT_ATTAINMENT:-0.9}
ptok=${GOODPUT_PROMPT_TOKENS:-128}
maxtok=${GOODPUT_MAX_TOKENS:-64}
slots=${GOODPUT_SLOTS:-8}
servers=${GOODPUT_SERVERS:-"inferbox peer"}
case ${GOODPUT_SERVE_TARGETS:-flags} in
  flags) serve_targets=(--slo-ttft-ms "$ttft_ms" --slo-itl-ms "$itl_ms") ;;
  profile) serve_targets=() ;;
  *) echo "GOODPUT_SERVE_TARGETS must be flags or profile" >&2; exit 2 ;;
esac
threads=${BENCH_THREADS:-2}
ctx=512 # per slot: a 128-token prompt and 64 out fit with room
ready_timeout=180
run_timeout=1800

log() { printf '[goodput] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$out"
command -v curl >/dev/null || die "curl is required"
command -v node >/dev/null || die "node is required (scripts/setup.sh installs it)"
[ -x "$chromium" ] || die "no Chromium at $chromium to render the plot (set INFERBOX_CHROMIUM)"
for s in $servers; do
  case $s in
    peer) [ -x "$peer" ] || die "llama-server not found at $peer: run scripts/setup.sh" ;;
    inferbox) [ -x "$inferbox" ] || die "inferbox not found at $inferbox: build the project first" ;;
    *) die "unknown server '$s' in GOODPUT_SERVERS (expected inferbox, peer)" ;;
  esac
done

model=${GOODPUT_MODEL:-$build/bench/models/synthetic-0.5b-v151936-q4_k_m.gguf}
if [ ! -f "$model" ]; then
  [ -z "${GOODPUT_MODEL:-}" ] || die "no model at $model"
  synthetic_model "$model" 1 151936 || die "cannot make the synthetic model"
fi

# --- servers (as scripts/bench.sh starts them) ---------------------------------------------
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
# The load average every 5 s while the sweeps run: other work on the machine shows in the
# latencies, so the report states it.
sampler_pid=""
stop_all() {
  stop_server
  if [ -n "$sampler_pid" ]; then kill "$sampler_pid" 2>/dev/null || true; wait "$sampler_pid" 2>/dev/null || true; fi
  sampler_pid=""
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT TERM

# start_server NAME LOGFILE -> sets server_pid and port
start_server() {
  local name=$1 logf=$2 ready_path
  port=$(free_port) || exit 1
  case $name in
    peer)
      # shellcheck disable=SC2086 # PEER_EXTRA_ARGS is a list of flags
      "$peer" -m "$model" --host 127.0.0.1 --port "$port" -np "$slots" -c $((slots * ctx)) \
        -t "$threads" --no-webui ${PEER_EXTRA_ARGS:-} >"$logf" 2>&1 &
      ready_path=/health
      ;;
    inferbox)
      # shellcheck disable=SC2086 # INFERBOX_EXTRA_ARGS is a list of flags
      "$inferbox" serve --model "$model" --host 127.0.0.1 --port "$port" --parallel "$slots" \
        --ctx-size "$ctx" --threads "$threads" "${serve_targets[@]}" \
        ${INFERBOX_EXTRA_ARGS:-} >"$logf" 2>&1 &
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

# --- the sweeps -----------------------------------------------------------------------------
failures=0
if [ "${GOODPUT_REPORT_ONLY:-0}" != 1 ]; then
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u '+%Y-%m-%d %H:%M UTC')
: >"$out/load.log"
(while :; do printf '%s %s\n' "$(date -u +%T)" "$(cut -d' ' -f1 /proc/loadavg)" >>"$out/load.log"; sleep 5; done) &
sampler_pid=$!
for s in $servers; do
  log "$s: serving $(basename "$model") with $slots slots, $threads threads"
  start_server "$s" "$out/$s.server.log"
  common=(--url "http://127.0.0.1:$port" --endpoint completions --prompt-tokens "$ptok")
  # Warm-up with another seed: graphs and buffers allocated, and (inferbox) prompt and decode
  # costs measured, prompts arriving while another decodes included. Nothing lands in a cache
  # the sweep could reuse.
  "$inferbox" bench "${common[@]}" --concurrency 3 --requests 3 --request-rate 2 --max-tokens 16 --seed 999 \
    >"$out/$s.warmup.log" 2>&1 || log "warm-up reported failures (see $out/$s.warmup.log)"
  rc=0
  timeout "$run_timeout" "$inferbox" bench "${common[@]}" --concurrency "$requests" --requests "$requests" \
    --max-tokens "$maxtok" --seed 1 --rates "$rates" --slo-ttft-ms "$ttft_ms" --slo-itl-ms "$itl_ms" \
    --slo-attainment "$attainment" --json-out "$out/$s.json" --label "$s" >"$out/$s.client.log" 2>&1 || rc=$?
  sed -n '/^goodput sweep/,$p' "$out/$s.client.log" >&2
  if [ "$rc" != 0 ]; then
    failures=$((failures + 1))
    log "client exited with $rc for $s (log: $out/$s.client.log)"
  fi
  stop_server
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
kill "$sampler_pid" 2>/dev/null || true
wait "$sampler_pid" 2>/dev/null || true
sampler_pid=""
load_max=$(awk 'BEGIN { m = 0 } $2 > m { m = $2 } END { print m }' "$out/load.log")

# --- report and plot ------------------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
echo "date: $started | host: ${cpu:-unknown CPU}, $(nproc) cores | threads: $threads | slots: $slots | load average before: $load_before, after: $load_after, highest 1-min during the sweeps: $load_max | llama.cpp: node-llama-cpp $NODE_LLAMA_CPP_VERSION${INFERBOX_EXTRA_ARGS:+ | inferbox flags: $INFERBOX_EXTRA_ARGS}${PEER_EXTRA_ARGS:+ | llama-server flags: $PEER_EXTRA_ARGS}" >"$out/meta.txt"
fi
[ -f "$out/meta.txt" ] || die "no $out/meta.txt: GOODPUT_REPORT_ONLY needs an earlier sweep's folder"
GOODPUT_META=$(cat "$out/meta.txt")
export GOODPUT_META
node - "$out" "$(basename "$model")" <<'EOF'
const fs = require('fs');
const path = require('path');
const [dir, modelName] = process.argv.slice(2);
const names = { inferbox: 'inferbox', peer: 'llama-server' };
const runs = {};
for (const s of Object.keys(names)) {
  try { runs[s] = JSON.parse(fs.readFileSync(path.join(dir, `${s}.json`), 'utf8')); } catch { /* not run, or failed */ }
}
const servers = Object.keys(runs);
if (servers.length === 0) { console.error('no results to report'); process.exit(1); }
const any = runs[servers[0]];
const pct = (x) => (x === undefined ? 'n/a' : `${(100 * x).toFixed(0)} %`);
const num = (x, d = 3) => (x === undefined || x === null ? 'n/a' : x.toFixed(d));
const md = [];
md.push(`# Goodput: inferbox vs llama-server`);
md.push('');
md.push(process.env.GOODPUT_META);
md.push('');
md.push(`Model ${modelName}, completions, ${any.prompt_tokens}-token prompts, ${any.max_tokens} output tokens ` +
  `(ignore_eos), ${any.requests} requests per rate, Poisson arrivals. Targets: TTFT <= ${any.slo_ttft_ms} ms from ` +
  `arrival, per-request inter-token p99 <= ${any.slo_itl_ms} ms; attainment target ${100 * any.slo_attainment} %.`);
md.push('');
const header = ['rate req/s'];
for (const s of servers) header.push(`${names[s]} TTFT ok`, `ITL ok`, `both`, `goodput req/s`);
md.push(`| ${header.join(' | ')} |`);
md.push(`|${header.map(() => '---:').join('|')}|`);
const rates = [...new Set(servers.flatMap((s) => runs[s].sweep.map((r) => r.rate_req_s)))].sort((a, b) => a - b);
for (const rate of rates) {
  const row = [String(rate)];
  for (const s of servers) {
    const r = runs[s].sweep.find((x) => x.rate_req_s === rate) || {};
    row.push(pct(r.share_ttft), pct(r.share_itl), `**${pct(r.share_both)}**`, num(r.goodput_req_s));
  }
  md.push(`| ${row.join(' | ')} |`);
}
md.push('');
const best = {};
for (const s of servers) {
  best[s] = runs[s].highest_rate_meeting_slo;
  md.push(`- ${names[s]}: highest rate with >= ${100 * any.slo_attainment} % meeting both: ` +
    (best[s] === null ? `none (misses at the lowest rate, ${rates[0]} req/s)` : `${best[s]} req/s`));
}
if (runs.inferbox && runs.peer) {
  const i = best.inferbox, p = best.peer;
  let ratio;
  if (i !== null && p !== null) ratio = `${(i / p).toFixed(2)}x (${i} / ${p})`;
  else if (i !== null) ratio = `at least ${(i / rates[0]).toFixed(2)}x, if attainment only falls with the rate: llama-server's highest rate is below ${rates[0]} req/s`;
  else ratio = 'undefined: inferbox misses at the lowest rate too';
  md.push(`- ratio inferbox / llama-server: ${ratio}`);
}
md.push('');
fs.writeFileSync(path.join(dir, 'goodput.md'), md.join('\n'));

// The plot: share meeting both (solid) and each target (dashed: TTFT, dotted: ITL) against the rate.
const W = 900, H = 520, L = 80, R = 220, T = 60, B = 70;
const xmax = rates[rates.length - 1] * 1.05, x = (v) => L + (v / xmax) * (W - L - R);
const y = (v) => T + (1 - v) * (H - T - B);
const color = { inferbox: '#1f77b4', peer: '#d62728' };
const svg = [];
svg.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="DejaVu Sans, sans-serif">`);
svg.push(`<rect width="${W}" height="${H}" fill="white"/>`);
svg.push(`<text x="${W / 2 - R / 2 + L / 2}" y="30" font-size="18" text-anchor="middle">Requests meeting TTFT &lt;= ${any.slo_ttft_ms} ms and ITL p99 &lt;= ${any.slo_itl_ms} ms</text>`);
for (let v = 0; v <= 1.0001; v += 0.1) {
  svg.push(`<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#e4e4e4"/>`);
  svg.push(`<text x="${L - 8}" y="${y(v) + 5}" font-size="13" text-anchor="end">${Math.round(v * 100)}%</text>`);
}
for (const r of rates) {
  svg.push(`<line x1="${x(r)}" x2="${x(r)}" y1="${T}" y2="${H - B}" stroke="#f0f0f0"/>`);
  svg.push(`<text x="${x(r)}" y="${H - B + 20}" font-size="13" text-anchor="middle">${r}</text>`);
}
svg.push(`<line x1="${L}" x2="${W - R}" y1="${y(any.slo_attainment)}" y2="${y(any.slo_attainment)}" stroke="#555" stroke-dasharray="2,3"/>`);
svg.push(`<text x="${L + 6}" y="${y(any.slo_attainment) - 6}" font-size="12" fill="#555">${100 * any.slo_attainment}% target</text>`);
svg.push(`<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#888"/>`);
svg.push(`<text x="${(L + W - R) / 2}" y="${H - 20}" font-size="14" text-anchor="middle">Poisson arrival rate (requests/s)</text>`);
svg.push(`<text x="22" y="${(T + H - B) / 2}" font-size="14" text-anchor="middle" transform="rotate(-90 22 ${(T + H - B) / 2})">share of requests</text>`);
let ly = T + 10;
for (const s of servers) {
  const pts = (key) => runs[s].sweep.map((r) => `${x(r.rate_req_s).toFixed(1)},${y(r[key]).toFixed(1)}`).join(' ');
  svg.push(`<polyline points="${pts('share_ttft')}" fill="none" stroke="${color[s]}" stroke-width="1.5" stroke-dasharray="7,4" opacity="0.7"/>`);
  svg.push(`<polyline points="${pts('share_itl')}" fill="none" stroke="${color[s]}" stroke-width="1.5" stroke-dasharray="2,3" opacity="0.7"/>`);
  svg.push(`<polyline points="${pts('share_both')}" fill="none" stroke="${color[s]}" stroke-width="3"/>`);
  for (const r of runs[s].sweep) svg.push(`<circle cx="${x(r.rate_req_s)}" cy="${y(r.share_both)}" r="4.5" fill="${color[s]}"/>`);
  for (const [dash, label, w] of [['', 'both', 3], ['7,4', 'TTFT', 1.5], ['2,3', 'ITL', 1.5]]) {
    svg.push(`<line x1="${W - R + 15}" x2="${W - R + 50}" y1="${ly}" y2="${ly}" stroke="${color[s]}" stroke-width="${w}" stroke-dasharray="${dash}"/>`);
    svg.push(`<text x="${W - R + 58}" y="${ly + 5}" font-size="13">${names[s]}: ${label}</text>`);
    ly += 22;
  }
  ly += 10;
}
svg.push('</svg>');
fs.writeFileSync(path.join(dir, 'goodput.svg'), svg.join('\n'));
EOF
# Chromium draws the SVG at its own size; the PNG is a screenshot of exactly that window.
"$chromium" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars --window-size=900,520 \
  --screenshot="$out/goodput.png" "file://$out/goodput.svg" >"$out/chromium.log" 2>&1 ||
  die "Chromium could not render the plot (log: $out/chromium.log)"
[ -s "$out/goodput.png" ] || die "no PNG written (log: $out/chromium.log)"
if [ -n "${GOODPUT_PNG:-}" ]; then
  cp "$out/goodput.png" "$GOODPUT_PNG"
fi
cat "$out/goodput.md"
log "report: $out/goodput.md, plot: $out/goodput.png"
[ "$failures" = 0 ] || die "$failures sweep(s) reported failures"
