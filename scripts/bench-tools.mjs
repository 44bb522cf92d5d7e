#!/usr/bin/env node
// The tool loop's own cost (docs/agents.md): sends `requests` Responses requests, one at a time,
// each forcing one built-in call (`--tool sql` or `--tool mcp:LABEL:NAME`), then reads the
// server's histograms and reports, as percentiles, the loop's time per step change
// (inferbox_tool_loop_overhead_seconds: from a step's last event to the next step's submission,
// less the tool's time), the tools' own time (inferbox_tool_call_seconds) and the requests'
// end-to-end latency. Percentiles of the histograms are interpolated inside their buckets, as
// Prometheus' histogram_quantile does. Node 20, no dependencies; a tool, not a test.
//
//   inferbox serve --model stories260K-chatml.gguf --ctx-size 4096 --sql-database shop=shop.db \
//       --mcp-server 'everything=stdio:node .../server-everything/dist/index.js stdio' &
//   node scripts/bench-tools.mjs --url http://127.0.0.1:8000 --tool sql --requests 50
import { parseArgs } from 'node:util';

const { values: o } = parseArgs({
  options: {
    url: { type: 'string', default: 'http://127.0.0.1:8000' },
    tool: { type: 'string', default: 'sql' },
    database: { type: 'string', default: 'shop' },
    requests: { type: 'string', default: '50' },
    'max-output-tokens': { type: 'string', default: '400' },
    warmup: { type: 'string', default: '2' },
  },
});

function request() {
  if (o.tool === 'sql') {
    return { tools: [{ type: 'sql', database: o.database }], tool_choice: { type: 'sql' } };
  }
  const [kind, label, name] = o.tool.split(':');
  if (kind !== 'mcp' || !label || !name) {
    throw new Error('--tool is sql or mcp:LABEL:NAME');
  }
  return {
    tools: [{ type: 'mcp', server_label: label, allowed_tools: [name] }],
    tool_choice: { type: 'mcp', server_label: label, name },
  };
}

async function one() {
  const body = {
    input: 'Use the tool.', ...request(), max_output_tokens: Number(o['max-output-tokens']), temperature: 0,
  };
  const t0 = performance.now();
  const res = await fetch(`${o.url}/v1/responses`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  const j = await res.json();
  if (res.status !== 200) {
    throw new Error(`HTTP ${res.status}: ${JSON.stringify(j).slice(0, 300)}`);
  }
  return { ms: performance.now() - t0, calls: j.output.filter((x) => x.type.endsWith('_call')).length };
}

// Buckets of one histogram series (name, and labels containing `match`), cumulative counts.
function buckets(text, name, match = '') {
  const out = [];
  for (const line of text.split('\n')) {
    const m = line.match(new RegExp(`^${name}_bucket\\{(.*)\\} (\\S+)$`));
    if (m && m[1].includes(match)) {
      const le = m[1].match(/le="([^"]+)"/)[1];
      out.push([le === '+Inf' ? Infinity : Number(le), Number(m[2])]);
    }
  }
  return out;
}

// The difference of two scrapes, so only this run counts.
function delta(after, before) {
  return after.map(([le, n], i) => [le, n - (before[i] ? before[i][1] : 0)]);
}

function quantile(bs, q) {
  const total = bs.length ? bs[bs.length - 1][1] : 0;
  if (total === 0) {
    return NaN;
  }
  const rank = q * total;
  let prevLe = 0;
  let prevN = 0;
  for (const [le, n] of bs) {
    if (n >= rank) {
      if (le === Infinity) {
        return prevLe;
      }
      return prevLe + (le - prevLe) * ((rank - prevN) / Math.max(1, n - prevN));
    }
    [prevLe, prevN] = [le, n];
  }
  return prevLe;
}

const pct = (xs, q) => xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))];
const scrape = async () => (await fetch(`${o.url}/metrics`)).text();

for (let i = 0; i < Number(o.warmup); i++) {
  await one();
}
const before = await scrape();
const e2e = [];
let calls = 0;
for (let i = 0; i < Number(o.requests); i++) {
  const r = await one();
  e2e.push(r.ms);
  calls += r.calls;
}
const after = await scrape();
const type = o.tool === 'sql' ? 'type="sql_call"' : 'type="mcp_call"';
const overhead = delta(buckets(after, 'inferbox_tool_loop_overhead_seconds'),
  buckets(before, 'inferbox_tool_loop_overhead_seconds'));
const tool = delta(buckets(after, 'inferbox_tool_call_seconds', type), buckets(before, 'inferbox_tool_call_seconds', type));
const ms = (s) => (s * 1000).toFixed(2);
console.log(`tool ${o.tool}: ${o.requests} requests, ${calls} built-in calls, ${overhead.at(-1)?.[1] ?? 0} step changes`);
console.log('| measure | p50 ms | p90 ms | p99 ms |');
console.log('|---|---|---|---|');
console.log(`| loop overhead per step change | ${ms(quantile(overhead, 0.5))} | ${ms(quantile(overhead, 0.9))} | ${ms(quantile(overhead, 0.99))} |`);
console.log(`| the tool's own time per call | ${ms(quantile(tool, 0.5))} | ${ms(quantile(tool, 0.9))} | ${ms(quantile(tool, 0.99))} |`);
console.log(`| request end to end | ${pct(e2e, 0.5).toFixed(1)} | ${pct(e2e, 0.9).toFixed(1)} | ${pct(e2e, 0.99).toFixed(1)} |`);
