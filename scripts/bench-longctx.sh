#!/usr/bin/env bash
# Long contexts and how their cost grows (issue 25, part 3). For each context length, one server at
# a time with one slot and a context of exactly that length: one greedy completion whose prompt
# fills the context but for the output, then 64 tokens decoded at that depth. Per server and
# length: TTFT (the whole prompt's prefill), decode tokens/s (1000 / the median inter-token
# latency), and memory (VmRSS after the request and the peak VmHWM, from /proc). Servers: inferbox
# with its default attention ("auto": what its profile picks for that length) and llama-server
# (same llama.cpp source) with its defaults; with LONGCTX_SWEEP=1 also inferbox with each attention
# option forced (the measurements the profile's choice rests on).
#
# The model, made here when missing: the llama architecture with Qwen2.5-0.5B's layer shape
# (896 wide, 14 heads, 2 KV heads, FFN 4864, so the same attention-to-weights ratio per layer) but
# 4 layers instead of 24 and the 512-token TinyStories vocabulary, trained context 32768, Q4_K_M,
# random weights: a 32k prompt's prefill takes minutes here, not the half hour of the 24-layer model.
#
#   scripts/bench-longctx.sh [OUT.md]
# Environment: INFERBOX_BIN (default build/inferbox), LLAMA_SERVER, INFERBOX_TEST_MODELS,
# LONGCTX_LENGTHS (default "512 4096 16384 32768"), LONGCTX_RUNS (runs of inferbox auto against
# llama-server, default 3; 0: none), LONGCTX_TOKENS (output tokens, default 64), LONGCTX_SWEEP
# (inferbox with forced attention options after those runs, one run each: a list of KV-fa / KV-nofa,
# e.g. "f32-nofa f16-fa", or 1 for f32-nofa f16-nofa f16-fa q8_0-fa), BENCH_THREADS (default 2),
# LONGCTX_MODEL (another GGUF), LONGCTX_NICE (a nice level for the servers, e.g. -20),
# LONGCTX_PNG (also copy the plot there, e.g. docs/img/longctx.png), LONGCTX_ROWS (a rows file
# of an earlier run, OUT's .tsv: report and plot it again without measuring).
# Writes OUT (markdown), OUT without .md + .tsv (one row per measurement), .svg and .png (decode
# tokens/s against the context length, drawn by headless Chromium).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/deps.env
. "$root/scripts/deps.env"
models=${INFERBOX_TEST_MODELS:-$root/../shared/models}
bin=${INFERBOX_BIN:-$root/build/inferbox}
synth_tool=${MAKE_SYNTHETIC_GGUF:-$(dirname "$bin")/tools/make-synthetic-gguf}
llama_bin=${INFERBOX_DEPS_CACHE:-$HOME/.cache/inferbox-deps}/node-llama-cpp-$NODE_LLAMA_CPP_VERSION/build-cpu/bin
peer=${LLAMA_SERVER:-$llama_bin/llama-server}
threads=${BENCH_THREADS:-2}
tokens=${LONGCTX_TOKENS:-64}
runs=${LONGCTX_RUNS:-3}
lengths=${LONGCTX_LENGTHS:-512 4096 16384 32768}
out=${1:-$root/build/bench/longctx.md}
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=scripts/bench-lib.sh
. "$root/scripts/bench-lib.sh"
for tool in "$bin" "$peer"; do
  [ -x "$tool" ] || { echo "not found: $tool (run scripts/setup.sh)" >&2; exit 1; }
done

model=${LONGCTX_MODEL:-$(dirname "$bin")/bench/models/synthetic-longctx-4x896.gguf}
if [ ! -f "$model" ]; then
  [ -x "$synth_tool" ] || { echo "make-synthetic-gguf not found at $synth_tool" >&2; exit 1; }
  mkdir -p "$(dirname "$model")"
  "$synth_tool" --out "$model.tmp" --vocab-from "$models/stories260K.gguf" --layers 4 --embd 896 --heads 14 \
    --kv-heads 2 --ffn 4864 --ctx 32768 --seed 7 --type q4_k_m >&2
  mv "$model.tmp" "$model"
fi

kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$server/status"; }

# one SERVER_CONFIG LENGTH RUN: starts the server, runs the request, appends a TSV row to rows.tsv.
# SERVER_CONFIG: peer | auto | KV-fa | KV-nofa (KV: f32, f16, q8_0).
one() {
  local cfg=$1 len=$2 run=$3 port
  port=$(free_port)
  local launch=()
  [ -n "${LONGCTX_NICE:-}" ] && launch=(nice -n "$LONGCTX_NICE")
  if [ "$cfg" = peer ]; then
    "${launch[@]}" "$peer" -m "$model" --port "$port" -np 1 -c "$len" -t "$threads" >"$work/server.log" 2>&1 &
  else
    local extra=()
    case $cfg in
      auto) ;;
      *-fa) extra=(--kv-type "${cfg%-fa}" --flash-attn on) ;;
      *-nofa) extra=(--kv-type "${cfg%-nofa}" --flash-attn off) ;;
    esac
    "${launch[@]}" "$bin" serve --model "$model" --port "$port" --parallel 1 --ctx-size "$len" --threads "$threads" \
      "${extra[@]}" >"$work/server.log" 2>&1 &
  fi
  server=$!
  wait_ready "http://127.0.0.1:$port" "$server" "$work/server.log"
  local url=http://127.0.0.1:$port
  if ! "$bin" bench --url "$url" --concurrency 1 --requests 1 --prompt-tokens 16 --max-tokens 8 --seed 3 \
    >"$work/bench.out" 2>&1; then # warm-up
    cat "$work/bench.out" "$work/server.log" >&2
    return 1
  fi
  # N words are about N tokens with this tokenizer (plus BOS); leave room for the output.
  local words=$((len - tokens - 24))
  if ! "$bin" bench --url "$url" --concurrency 1 --requests 1 --prompt-tokens "$words" --max-tokens "$tokens" \
    --seed "$run" --json-out "$work/r.json" >"$work/bench.out" 2>&1; then
    cat "$work/bench.out" "$work/server.log" >&2
    return 1
  fi
  local rss hwm attention=-
  rss=$(kib VmRSS)
  hwm=$(kib VmHWM)
  if [ "$cfg" = auto ]; then
    attention=$(sed -n 's/.*attention: \([a-z0-9_]*\) KV, flash attention \(on\|off\).*/\1 KV, FA \2/p' "$work/server.log" |
      head -1)
  fi
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    if (r.failed) { console.error(`${r.failed} requests failed`); process.exit(1); }
    const [cfg, len, run, rss, hwm, att] = process.argv.slice(2);
    console.log([cfg, len, run, r.prompt_tokens_mean.toFixed(0), r.ttft_ms.p50.toFixed(0),
      (1000 / r.itl_ms.p50).toFixed(2), (rss / 1024).toFixed(0), (hwm / 1024).toFixed(0), att].join("\t"));
  ' "$work/r.json" "$cfg" "$len" "$run" "$rss" "$hwm" "$attention" >>"$work/rows.tsv"
  tail -1 "$work/rows.tsv" >&2
}

configs="auto peer"
[ "$runs" -gt 0 ] || configs=""
if [ -n "${LONGCTX_ROWS:-}" ]; then # report an earlier run again
  cp "$LONGCTX_ROWS" "$work/rows.tsv"
  configs=$(cut -f1 "$work/rows.tsv" | awk '!seen[$0]++' | tr '\n' ' ')
  runs=0
fi
for run in $(seq "$runs"); do
  for len in $lengths; do
    # alternate which server goes first, so a slow minute of the shared machine does not always
    # fall on the same one
    if [ $((run % 2)) -eq 1 ]; then order="auto peer"; else order="peer auto"; fi
    for cfg in $order; do one "$cfg" "$len" "$run"; done
  done
done
sweep=${LONGCTX_SWEEP:-}
[ -n "${LONGCTX_ROWS:-}" ] && sweep=
[ "$sweep" = 1 ] && sweep="f32-nofa f16-nofa f16-fa q8_0-fa"
if [ -n "$sweep" ]; then
  configs="$configs $sweep"
  for len in $lengths; do
    for cfg in $sweep; do one "$cfg" "$len" 1; done
  done
fi

mkdir -p "$(dirname "$out")"
base=${out%.md}
cp "$work/rows.tsv" "$base.tsv"
node - "$work/rows.tsv" "$configs" "$threads" "$tokens" "$(basename "$model")" "$base.svg" >"$out" <<'EOF'
const fs = require("fs");
const [file, configs, threads, tokens, model, svgFile] = process.argv.slice(2);
const rows = fs.readFileSync(file, "utf8").trim().split("\n").map((l) => {
  const [cfg, len, run, prompt, ttft, tps, rss, hwm, att] = l.split("\t");
  return { cfg, len: +len, run: +run, prompt: +prompt, ttft: +ttft, tps: +tps, rss: +rss, hwm: +hwm, att };
});
const med = (a) => { const s = [...a].sort((x, y) => x - y); const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
const span = (a, d) => a.length > 1 ? ` (${Math.min(...a).toFixed(d)}-${Math.max(...a).toFixed(d)})` : "";
const names = { auto: "inferbox (auto)", peer: "llama-server (defaults)", "f32-nofa": "inferbox f32 KV, no FA",
  "f16-nofa": "inferbox f16 KV, no FA", "f16-fa": "inferbox f16 KV, FA", "q8_0-fa": "inferbox q8_0 KV, FA" };
const lens = [...new Set(rows.map((r) => r.len))].sort((a, b) => a - b);
console.log(`${model}, ${threads} threads, one slot, context = length, prompt fills it but for ${tokens} output tokens;`);
console.log("medians over runs (range in brackets); decode t/s = 1000 / median inter-token latency at that depth\n");
console.log("| length | server | attention | runs | prompt tokens | TTFT ms | decode t/s | RSS MiB | peak RSS MiB |");
console.log("|---:|---|---|---:|---:|---:|---:|---:|---:|");
for (const len of lens) {
  for (const cfg of configs.trim().split(/ +/)) {
    const rs = rows.filter((r) => r.len === len && r.cfg === cfg);
    if (!rs.length) continue;
    const att = cfg === "peer" ? "f16 KV, FA auto" : cfg === "auto" ? [...new Set(rs.map((r) => r.att))].join(", ")
      : cfg.replace("-nofa", " KV, FA off").replace("-fa", " KV, FA on");
    const f = (k, d) => med(rs.map((r) => r[k])).toFixed(d) + span(rs.map((r) => r[k]), d);
    console.log(`| ${len} | ${names[cfg]} | ${att} | ${rs.length} | ${f("prompt", 0)} | ${f("ttft", 0)} | ${f("tps", 1)} | ${f("rss", 0)} | ${f("hwm", 0)} |`);
  }
}
console.log("\nRatios inferbox (auto) / llama-server, per run then median:\n");
console.log("| length | decode t/s | TTFT | RSS | peak RSS |");
console.log("|---:|---:|---:|---:|---:|");
for (const len of lens) {
  const ratios = { tps: [], ttft: [], rss: [], hwm: [] };
  for (const run of [...new Set(rows.map((r) => r.run))]) {
    const a = rows.find((r) => r.len === len && r.cfg === "auto" && r.run === run);
    const p = rows.find((r) => r.len === len && r.cfg === "peer" && r.run === run);
    if (!a || !p) continue;
    for (const k of Object.keys(ratios)) ratios[k].push(a[k] / p[k]);
  }
  if (!ratios.tps.length) continue;
  const f = (k) => med(ratios[k]).toFixed(2) + span(ratios[k], 2);
  console.log(`| ${len} | ${f("tps")} | ${f("ttft")} | ${f("rss")} | ${f("hwm")} |`);
}

// The plot: median decode tokens/s against the context length, both axes logarithmic, a line
// per server configuration with each run's value as a dot.
const W = 900, H = 520, L = 80, R = 240, T = 60, B = 70;
const all = rows.map((r) => r.tps);
const ylo = Math.pow(10, Math.floor(Math.log10(Math.min(...all))));
const yhi = Math.pow(10, Math.ceil(Math.log10(Math.max(...all))));
const xlo = Math.log2(lens[0]) - 0.3, xhi = Math.log2(lens[lens.length - 1]) + 0.3;
const x = (len) => L + ((Math.log2(len) - xlo) / (xhi - xlo)) * (W - L - R);
const y = (v) => T + (1 - (Math.log10(v) - Math.log10(ylo)) / (Math.log10(yhi) - Math.log10(ylo))) * (H - T - B);
const palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
const svg = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="DejaVu Sans, sans-serif">`,
  `<rect width="${W}" height="${H}" fill="white"/>`,
  `<text x="${W / 2}" y="30" font-size="16" text-anchor="middle">Decode after a prompt that fills the context (${model}, ${threads} threads)</text>`];
for (let d = ylo; d <= yhi * 1.0001; d *= 10) {
  for (const m of [1, 2, 5]) {
    const v = d * m;
    if (v > yhi * 1.0001) break;
    svg.push(`<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="${m === 1 ? "#d8d8d8" : "#f0f0f0"}"/>`);
    svg.push(`<text x="${L - 8}" y="${y(v) + 5}" font-size="13" text-anchor="end">${v}</text>`);
  }
}
for (const len of lens) {
  svg.push(`<line x1="${x(len)}" x2="${x(len)}" y1="${T}" y2="${H - B}" stroke="#f0f0f0"/>`);
  svg.push(`<text x="${x(len)}" y="${H - B + 20}" font-size="13" text-anchor="middle">${len}</text>`);
}
svg.push(`<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#888"/>`);
svg.push(`<text x="${(L + W - R) / 2}" y="${H - 20}" font-size="14" text-anchor="middle">context length (tokens)</text>`);
svg.push(`<text x="22" y="${(T + H - B) / 2}" font-size="14" text-anchor="middle" transform="rotate(-90 22 ${(T + H - B) / 2})">decode tokens/s</text>`);
let ly = T + 10;
configs.trim().split(/ +/).forEach((cfg, i) => {
  const c = palette[i % palette.length];
  const pts = lens.map((len) => rows.filter((r) => r.len === len && r.cfg === cfg)).filter((rs) => rs.length)
    .map((rs) => `${x(rs[0].len).toFixed(1)},${y(med(rs.map((r) => r.tps))).toFixed(1)}`);
  if (!pts.length) return;
  svg.push(`<polyline points="${pts.join(" ")}" fill="none" stroke="${c}" stroke-width="3"/>`);
  for (const r of rows.filter((r) => r.cfg === cfg)) svg.push(`<circle cx="${x(r.len)}" cy="${y(r.tps)}" r="3.5" fill="${c}" opacity="0.6"/>`);
  svg.push(`<line x1="${W - R + 15}" x2="${W - R + 45}" y1="${ly}" y2="${ly}" stroke="${c}" stroke-width="3"/>`);
  svg.push(`<text x="${W - R + 52}" y="${ly + 5}" font-size="13">${names[cfg]}</text>`);
  ly += 22;
});
svg.push("</svg>");
fs.writeFileSync(svgFile, svg.join("\n"));
EOF
chromium=${INFERBOX_CHROMIUM:-/usr/bin/chromium}
if [ -x "$chromium" ]; then
  "$chromium" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars --window-size=900,520 \
    --screenshot="$base.png" "file://$base.svg" >"$work/chromium.log" 2>&1 || cat "$work/chromium.log" >&2
  if [ -s "$base.png" ] && [ -n "${LONGCTX_PNG:-}" ]; then cp "$base.png" "$LONGCTX_PNG"; fi
else
  echo "no Chromium at $chromium: the plot is $base.svg" >&2
fi
cat "$out"

