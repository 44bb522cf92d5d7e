#!/usr/bin/env node
// Per-token cost of constrained decoding: sends the same chat request to a running inferbox
// unconstrained and under several constraints, one at a time (concurrency 1), and reports
// output tokens/s and ms per output token for each, and the ratio to unconstrained. Every
// request generates exactly max_tokens tokens (ignore_eos, and constraints whose language is
// longer than max_tokens), so the figures compare like with like.
//
//   node scripts/bench_structured.mjs URL [requests=20] [max_tokens=200]
//   e.g. build/inferbox serve --model ../shared/models/stories260K-chatml.gguf --port 8000 --parallel 1
//        node scripts/bench_structured.mjs http://127.0.0.1:8000

const [url = 'http://127.0.0.1:8000', requestsArg = '20', maxTokensArg = '200'] = process.argv.slice(2);
const requests = Number(requestsArg);
const maxTokens = Number(maxTokensArg);

const scenarios = {
  unconstrained: {},
  'json_schema (object, string of 900-1000 chars)': {
    response_format: {
      type: 'json_schema',
      json_schema: {
        name: 'note',
        schema: {
          type: 'object',
          properties: { text: { type: 'string', minLength: 900, maxLength: 1000 } },
          required: ['text'],
          additionalProperties: false,
        },
      },
    },
  },
  'json_schema (array of >= 300 integers)': {
    guided_json: { type: 'array', items: { type: 'integer' }, minItems: 300 },
  },
  'guided_regex ([a-z ,.]{900,1000})': { guided_regex: '[a-z ,.]{900,1000}' },
};

async function run(extra) {
  let tokens = 0;
  let seconds = 0;
  for (let i = 0; i < requests; ++i) {
    const body = {
      messages: [{ role: 'user', content: 'Write a long story.' }],
      max_tokens: maxTokens,
      temperature: 1,
      seed: i,
      ignore_eos: true,
      ...extra,
    };
    const t0 = process.hrtime.bigint();
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const json = await res.json();
    seconds += Number(process.hrtime.bigint() - t0) / 1e9;
    if (res.status !== 200) {
      throw new Error(`HTTP ${res.status}: ${JSON.stringify(json)}`);
    }
    tokens += json.usage.completion_tokens;
  }
  return { tokens, seconds };
}

await run({}); // warm-up
// Three rounds, scenarios interleaved, the best round of each: the machine may be shared.
const best = {};
for (let round = 0; round < 3; ++round) {
  for (const [name, extra] of Object.entries(scenarios)) {
    const { tokens, seconds } = await run(extra);
    if (!best[name] || tokens / seconds > best[name].tokens / best[name].seconds) {
      best[name] = { tokens, seconds };
    }
  }
}
const base = best.unconstrained.tokens / best.unconstrained.seconds;
console.log(`| constraint | output tokens | tokens/s | ms/token | ratio to unconstrained |`);
console.log(`|---|---:|---:|---:|---:|`);
for (const [name, { tokens, seconds }] of Object.entries(best)) {
  const tps = tokens / seconds;
  console.log(`| ${name} | ${tokens} | ${tps.toFixed(0)} | ${((1000 * seconds) / tokens).toFixed(3)} | ` +
    `${(tps / base).toFixed(2)} |`);
}
