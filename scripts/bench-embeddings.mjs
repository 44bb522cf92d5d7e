#!/usr/bin/env node
// Embedding throughput of any OpenAI-compatible server: POSTs /v1/embeddings with `batch` inputs
// of about `tokens` tokens per request, `concurrency` requests in flight, `requests` in all, and
// reports inputs/s and tokens/s (tokens from the answers' usage) and request latency p50/p90.
// Node 20, no dependencies. A tool, not a test (docs/benchmarks.md records results).
//
//   node scripts/bench-embeddings.mjs --url http://127.0.0.1:8000 --batch 32 --concurrency 1 \
//        --requests 50 --tokens 64
import { parseArgs } from 'node:util';

const { values: o } = parseArgs({
  options: {
    url: { type: 'string', default: 'http://127.0.0.1:8000' },
    model: { type: 'string', default: '' },
    batch: { type: 'string', default: '1' },
    concurrency: { type: 'string', default: '1' },
    requests: { type: 'string', default: '100' },
    tokens: { type: 'string', default: '64' },
    warmup: { type: 'string', default: '3' },
  },
});
const batch = Number(o.batch);
const concurrency = Number(o.concurrency);
const total = Number(o.requests);
const words = ['Once', 'upon', 'a', 'time', 'there', 'was', 'a', 'little', 'girl', 'named', 'Lily', 'who', 'loved'];

// Distinct texts (so no cache could help), each about `tokens` tokens for a small-vocabulary model.
let serial = 0;
function text() {
  const n = serial++;
  const out = [`Story ${n}:`];
  for (let i = 0; out.length < Number(o.tokens) - 2; i++) {
    out.push(words[(n + i * 7) % words.length]);
  }
  return out.join(' ');
}

async function one() {
  const body = { input: Array.from({ length: batch }, text), encoding_format: 'float' };
  if (o.model) {
    body.model = o.model;
  }
  const t0 = performance.now();
  const res = await fetch(`${o.url}/v1/embeddings`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const j = await res.json();
  if (res.status !== 200) {
    throw new Error(`HTTP ${res.status}: ${JSON.stringify(j).slice(0, 300)}`);
  }
  return { ms: performance.now() - t0, tokens: j.usage.prompt_tokens, inputs: j.data.length };
}

for (let i = 0; i < Number(o.warmup); i++) {
  await one();
}
const results = [];
let next = 0;
const t0 = performance.now();
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (next < total) {
      next++;
      results.push(await one());
    }
  }),
);
const wall = (performance.now() - t0) / 1000;
const inputs = results.reduce((s, r) => s + r.inputs, 0);
const tokens = results.reduce((s, r) => s + r.tokens, 0);
const lat = results.map((r) => r.ms).sort((a, b) => a - b);
const pct = (p) => lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))];
console.log(
  JSON.stringify({
    batch, concurrency, requests: results.length, tokens_per_input: +(tokens / inputs).toFixed(1),
    inputs_per_s: +(inputs / wall).toFixed(1), tokens_per_s: +(tokens / wall).toFixed(0),
    latency_ms_p50: +pct(50).toFixed(2), latency_ms_p90: +pct(90).toFixed(2), wall_s: +wall.toFixed(2),
  }),
);
