#!/usr/bin/env bash
# Team fan-out (issue 22, docs/agents.md "Teams"): four independent member calls on four slots
# against the same four calls one after another. One inferbox serves the model with --parallel 4
# and two teams whose four members (m1..m4) are the same: that model, no tools, greedy, a fixed
# max-tokens. Their captains are scripted, so that what is timed is the members' work and the
# loop's fan-out, not what a model chooses to call:
#   - team/fanout: the captain's first step calls all four members at once (four tool calls in one
#     step), then it answers;
#   - team/serial: the captain calls one member per step, m1 then m2, m3, m4, then it answers.
# The captains are the model ids of a small OpenAI-compatible server this script starts (node, no
# dependencies) and names with --backend: it streams those tool calls in no measurable time. Each
# captain request is a real Responses request (`tool_choice: "required"`, `parallel_tool_calls:
# true`, greedy) through the router, the captain's tool loop, the team pool and the engine's slots.
# A third arm sends the four members' requests straight to the model, one after another (no team).
# Each arm runs BENCH_TEAM_RUNS times, alternating, after a warm-up; the report gives the wall
# time of each run, the median of each arm, the ratio serial / fan-out, and each member call's
# timing from the trace (its start and end relative to the request, duration_ms, output tokens).
#
#   scripts/bench-team.sh [OUT_DIR]     default build/bench/team; the report also goes to stdout
#
# Environment (all optional):
#   BENCH_TEAM_MODEL       the model (default: the ~0.5B synthetic model of scripts/bench-lib.sh,
#                          made when missing); e.g. /work/shared/models/stories260K-chatml.gguf for
#                          a quick check of the script
#   BENCH_TEAM_MAX_TOKENS  tokens each member generates at most (default 128)
#   BENCH_TEAM_RUNS        timed runs per arm (default 3)
#   BENCH_TEAM_SLOTS       the server's --parallel (default 4)
#   BENCH_TEAM_CTX         --ctx-size, per slot (default 1024)
#   BENCH_TEAM_CHAT_TEMPLATE  --chat-template for the members' model (default: chatml for the
#                          synthetic model, which has no template; none for a BENCH_TEAM_MODEL)
#   BENCH_THREADS          compute threads (default 2)
#   INFERBOX_BUILD_DIR, INFERBOX_BIN, INFERBOX_TEST_MODELS, MAKE_SYNTHETIC_GGUF   as in scripts/bench.sh
#   INFERBOX_EXTRA_ARGS    more flags for inferbox
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$root/scripts/bench-lib.sh"

build=${INFERBOX_BUILD_DIR:-$root/build}
out=${1:-$build/bench/team}
# shellcheck disable=SC2034 # models and synth_tool are read by synthetic_model (bench-lib.sh)
models=${INFERBOX_TEST_MODELS:-$root/../shared/models}
inferbox=${INFERBOX_BIN:-$build/inferbox}
# shellcheck disable=SC2034
synth_tool=${MAKE_SYNTHETIC_GGUF:-$build/tools/make-synthetic-gguf}
max_tokens=${BENCH_TEAM_MAX_TOKENS:-128}
runs=${BENCH_TEAM_RUNS:-3}
slots=${BENCH_TEAM_SLOTS:-4}
ctx=${BENCH_TEAM_CTX:-1024}
threads=${BENCH_THREADS:-2}

log() { printf '[team] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v curl >/dev/null || die "curl is required"
command -v node >/dev/null || die "node is required (scripts/setup.sh installs it)"
[ -x "$inferbox" ] || die "inferbox not found at $inferbox: build the project first"
mkdir -p "$out"

model=${BENCH_TEAM_MODEL:-$build/bench/models/synthetic-0.5b-v151936-q4_k_m.gguf}
# The synthetic model has no chat template, and members are chat requests.
if [ -n "${BENCH_TEAM_MODEL:-}" ]; then template=${BENCH_TEAM_CHAT_TEMPLATE:-}; else template=${BENCH_TEAM_CHAT_TEMPLATE-chatml}; fi
if [ ! -f "$model" ]; then
  [ -z "${BENCH_TEAM_MODEL:-}" ] || die "no model at $model"
  synthetic_model "$model" 1 151936 || die "cannot make the synthetic model"
fi
model_id=$(basename "$model" .gguf)

pids=()
stop_all() {
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  pids=()
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT TERM

# --- the scripted captains ------------------------------------------------------------------
captain_port=$(free_port)
node - "$captain_port" >"$out/captain.log" 2>&1 <<'EOF' &
// An OpenAI-compatible chat server whose two models are scripted captains: captain-fanout calls
// m1..m4 in its first step, captain-serial one member per step; once every member has answered
// (four tool messages), each says "done". Always streamed (inferbox's remote backend asks so).
const http = require('http');
const port = Number(process.argv[2]);
const members = ['m1', 'm2', 'm3', 'm4'];
const task = (m) => `Write a short story about a ${{ m1: 'cat', m2: 'dog', m3: 'fox', m4: 'owl' }[m]}.`;
http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    if (req.method === 'GET' && req.url.endsWith('/models')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ object: 'list', data: ['captain-fanout', 'captain-serial'].map((id) => ({ id, object: 'model' })) }));
      return;
    }
    if (req.method !== 'POST' || !req.url.endsWith('/chat/completions')) {
      res.writeHead(404).end();
      return;
    }
    const r = JSON.parse(body);
    const answered = r.messages.filter((m) => m.role === 'tool').length;
    const calls = answered >= members.length ? []
      : r.model === 'captain-fanout' ? members : [members[answered]];
    const chunk = (choice, extra = {}) => `data: ${JSON.stringify({
      id: 'chatcmpl-captain', object: 'chat.completion.chunk', created: 0, model: r.model,
      choices: choice ? [choice] : [], ...extra,
    })}\n\n`;
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    if (calls.length === 0) {
      res.write(chunk({ index: 0, delta: { role: 'assistant', content: 'done' }, finish_reason: null }));
      res.write(chunk({ index: 0, delta: {}, finish_reason: 'stop' }));
    } else {
      calls.forEach((m, i) => res.write(chunk({
        index: 0, finish_reason: null,
        delta: { tool_calls: [{ index: i, id: `call_${answered}_${m}`, type: 'function',
          function: { name: m, arguments: JSON.stringify({ task: task(m) }) } }] },
      })));
      res.write(chunk({ index: 0, delta: {}, finish_reason: 'tool_calls' }));
    }
    res.write(chunk(null, { usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }));
    res.end('data: [DONE]\n\n');
  });
}).listen(port, '127.0.0.1', () => console.log(`scripted captains on ${port}`));
EOF
pids+=($!)

# --- inferbox -------------------------------------------------------------------------------
member_keys() {
  local m
  for m in m1 m2 m3 m4; do
    printf ';member.%s=%s;member.%s.temperature=0;member.%s.max-tokens=%s;member.%s.max-time-ms=3600000' \
      "$m" "$model_id" "$m" "$m" "$max_tokens" "$m"
  done
}
port=$(free_port)
log "serving $model_id with $slots slots, $threads threads; members generate up to $max_tokens tokens"
# shellcheck disable=SC2086 # INFERBOX_EXTRA_ARGS is a list of flags
"$inferbox" serve --model "$model" --host 127.0.0.1 --port "$port" --parallel "$slots" --ctx-size "$ctx" \
  --threads "$threads" ${template:+--chat-template "$template"} \
  --backend "captains=http://127.0.0.1:$captain_port/v1;models=captain-fanout,captain-serial;probe-interval-ms=0" \
  --team "fanout=captain-fanout$(member_keys)" --team "serial=captain-serial$(member_keys)" \
  ${INFERBOX_EXTRA_ARGS:-} >"$out/server.log" 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$port" "${pids[1]}" "$out/server.log" || die "inferbox did not become ready (log: $out/server.log)"

# --- the runs and the report ----------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
BENCH_TEAM_META="date: $(date -u '+%Y-%m-%d %H:%M UTC') | host: ${cpu:-unknown CPU}, $(nproc) cores | threads: $threads | slots: $slots | ctx per slot: $ctx | load average before: $(cut -d' ' -f1-3 /proc/loadavg)${template:+ | chat template: $template}${INFERBOX_EXTRA_ARGS:+ | inferbox flags: $INFERBOX_EXTRA_ARGS}"
export BENCH_TEAM_META
node - "http://127.0.0.1:$port" "$model_id" "$max_tokens" "$runs" "$out" <<'EOF'
const fs = require('fs');
const path = require('path');
const [url, modelId, maxTokens, runs, dir] = process.argv.slice(2);
const members = ['m1', 'm2', 'm3', 'm4'];
const task = (m) => `Write a short story about a ${{ m1: 'cat', m2: 'dog', m3: 'fox', m4: 'owl' }[m]}.`;

async function post(pathname, body) {
  const res = await fetch(url + pathname, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  const j = await res.json();
  if (res.status !== 200) throw new Error(`${pathname}: HTTP ${res.status}: ${JSON.stringify(j).slice(0, 300)}`);
  return j;
}

// One captain run: wall time, and each member call's item (its start and end are read from the
// streamed events' arrival, relative to the request).
async function teamRun(team) {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/responses`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: `team/${team}`, input: 'Get the four stories.', tool_choice: 'required', parallel_tool_calls: true,
      max_tool_calls: 4, temperature: 0, stream: true, store: false,
    }),
  });
  if (res.status !== 200) throw new Error(`team/${team}: HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`);
  const seen = {};
  let final = null;
  let buf = '';
  const decoder = new TextDecoder();
  for await (const piece of res.body) {
    buf += decoder.decode(piece, { stream: true });
    let at;
    while ((at = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, at);
      buf = buf.slice(at + 2);
      const data = block.split('\n').find((l) => l.startsWith('data: '));
      if (!data) continue;
      const ev = JSON.parse(data.slice(6));
      const item = ev.item;
      if (item && item.type === 'team_member_call') {
        const s = (seen[item.id] ??= { member: item.member });
        if (ev.type === 'response.output_item.added') s.start = performance.now() - t0;
        if (ev.type === 'response.output_item.done') Object.assign(s, { end: performance.now() - t0, item });
      }
      if (ev.type === 'response.completed' || ev.type === 'response.incomplete' || ev.type === 'response.failed') {
        final = ev.response;
      }
    }
  }
  const wall = performance.now() - t0;
  if (!final || final.status !== 'completed') throw new Error(`team/${team}: ${JSON.stringify(final).slice(0, 400)}`);
  const calls = Object.values(seen).sort((a, b) => a.start - b.start);
  // A member that generated its max-tokens is `incomplete` (max_output_tokens): the fixed work asked.
  const ran = (c) => c.item && (c.item.status === 'completed' ||
    (c.item.status === 'incomplete' && c.item.incomplete_reason === 'max_output_tokens'));
  if (calls.length !== 4 || !calls.every(ran)) {
    throw new Error(`team/${team}: expected four member calls that ran, got ${JSON.stringify(calls).slice(0, 600)}`);
  }
  return {
    wall,
    calls: calls.map((c) => ({
      member: c.member, start: c.start, end: c.end, duration_ms: c.item.duration_ms,
      output_tokens: c.item.usage.output_tokens, input_tokens: c.item.usage.input_tokens,
    })),
  };
}

// The members' four requests straight to the model, one after another (no team, no captain).
async function directRun() {
  const t0 = performance.now();
  const calls = [];
  for (const m of members) {
    const s = performance.now() - t0;
    const r = await post('/v1/chat/completions', {
      model: modelId, messages: [{ role: 'user', content: task(m) }], max_tokens: Number(maxTokens), temperature: 0,
    });
    calls.push({ member: m, start: s, end: performance.now() - t0, output_tokens: r.usage.completion_tokens,
      input_tokens: r.usage.prompt_tokens });
  }
  return { wall: performance.now() - t0, calls };
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
const ms = (x) => (x === undefined ? 'n/a' : x.toFixed(0));

(async () => {
  // Warm-up: each path once (graphs, buffers, the grammar-free tool loop), not timed.
  await teamRun('fanout');
  await teamRun('serial');
  await directRun();
  const arms = { fanout: [], serial: [], direct: [] };
  for (let i = 0; i < Number(runs); i++) {
    arms.fanout.push(await teamRun('fanout'));
    arms.serial.push(await teamRun('serial'));
    arms.direct.push(await directRun());
    console.error(`[team] run ${i + 1}/${runs}: fan-out ${ms(arms.fanout.at(-1).wall)} ms, serial ` +
      `${ms(arms.serial.at(-1).wall)} ms, direct ${ms(arms.direct.at(-1).wall)} ms`);
  }
  fs.writeFileSync(path.join(dir, 'team.json'), JSON.stringify(arms, null, 1));
  const med = Object.fromEntries(Object.entries(arms).map(([k, v]) => [k, median(v.map((r) => r.wall))]));
  const md = [];
  md.push(`# Team fan-out: four member calls at once vs one after another`);
  md.push('');
  md.push(process.env.BENCH_TEAM_META);
  md.push('');
  md.push(`Model ${modelId}; four members (no tools, greedy, max-tokens ${maxTokens}); scripted captains; ` +
    `${runs} timed runs per arm after one warm-up each.`);
  md.push('');
  md.push('| arm | what runs | wall ms per run | median ms |');
  md.push('|---|---|---|---:|');
  const what = {
    fanout: 'team/fanout: one captain step calls m1..m4 at once',
    serial: 'team/serial: one member per captain step, m1..m4',
    direct: 'the four members\' prompts as chat requests, one after another (no team)',
  };
  for (const [k, v] of Object.entries(arms)) {
    md.push(`| ${k} | ${what[k]} | ${v.map((r) => ms(r.wall)).join(', ')} | **${ms(med[k])}** |`);
  }
  md.push('');
  md.push(`- ratio serial / fan-out (medians): **${(med.serial / med.fanout).toFixed(2)}x**`);
  md.push(`- ratio direct / fan-out (medians): ${(med.direct / med.fanout).toFixed(2)}x`);
  md.push('');
  md.push('Member calls of the median-time run of each arm (ms from the request; team arms from the trace: ' +
    'the item added and done, and its duration_ms):');
  md.push('');
  md.push('| arm | member | start | end | duration_ms | input tokens | output tokens |');
  md.push('|---|---|---:|---:|---:|---:|---:|');
  for (const [k, v] of Object.entries(arms)) {
    const run = [...v].sort((a, b) => a.wall - b.wall)[Math.floor((v.length - 1) / 2)];
    for (const c of run.calls) {
      md.push(`| ${k} | ${c.member} | ${ms(c.start)} | ${ms(c.end)} | ${c.duration_ms ?? 'n/a'} | ${c.input_tokens} | ${c.output_tokens} |`);
    }
  }
  const tokens = (arm) => arms[arm].flatMap((r) => r.calls.map((c) => c.output_tokens));
  const all = [...tokens('fanout'), ...tokens('serial')];
  md.push('');
  if (Math.min(...all) !== Math.max(...all)) {
    md.push(`Note: member calls generated ${Math.min(...all)} to ${Math.max(...all)} tokens (an end-of-sequence ` +
      `token before max-tokens, or greedy outputs that differ between batched and single decoding).`);
  } else {
    md.push(`Every member call of both team arms generated ${all[0]} tokens.`);
  }
  md.push('');
  fs.writeFileSync(path.join(dir, 'team.md'), md.join('\n'));
  console.log(md.join('\n'));
})().catch((e) => { console.error(`[team] error: ${e.message}`); process.exit(1); });
EOF
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg); report: $out/team.md, runs: $out/team.json"
