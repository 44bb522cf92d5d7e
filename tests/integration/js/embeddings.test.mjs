// Embeddings (POST /v1/embeddings) and ranking (POST /v1/ranking) on stories260K.gguf, a
// generative model with no pooling type in its metadata, so it is mean-pooled (64 dimensions).
// The vectors come from a causal story model: these tests check mechanics (shapes, unit norm,
// batching, determinism, truncation, errors), not semantics. Driven by the official OpenAI SDK
// and by fetch.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  GREEDY_64,
  MODELS,
  ONCE,
  ONCE_PROMPT_IDS,
  assertErrorShape,
  assertHealthy,
  modelId,
  openaiClient,
  postJson,
  startServer,
  useServer,
} from './harness.mjs';

const DIM = 64; // stories260K's embedding size
const N_CTX = 512; // its trained context: the longest input the embedder takes
const ONCE_IDS = ONCE_PROMPT_IDS.slice(1); // " Once upon a time" without BOS
const BOS = ONCE_PROMPT_IDS[0];

const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));

function assertClose(a, b, tol, what) {
  assert.equal(a.length, b.length, `${what}: lengths differ`);
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - b[i]) <= tol, `${what}: component ${i} differs: ${a[i]} vs ${b[i]}`);
  }
}

function assertUnit(v, what) {
  assert.ok(Math.abs(norm(v) - 1) < 1e-5, `${what}: norm ${norm(v)} is not 1`);
}

function decodeBase64(s) {
  const buf = Buffer.from(s, 'base64');
  const out = [];
  for (let i = 0; i < buf.length; i += 4) {
    out.push(buf.readFloatLE(i));
  }
  return out;
}

// "Once upon a time Once upon a time ..." (k times): BOS + ONCE_IDS repeated k times.
const onceTimes = (k) => Array(k).fill(ONCE).join(' ');
const onceIds = (k) => Array(k).fill(ONCE_IDS).flat();

async function embed(server, body) {
  return postJson(`${server.url}/v1/embeddings`, { encoding_format: 'float', ...body });
}

async function vectorOf(server, input) {
  const res = await embed(server, { input });
  assert.equal(res.status, 200, res.text);
  return res.body.data.map((d) => d.embedding);
}

async function scrape(server) {
  const res = await fetch(`${server.url}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

// The value of one sample line of a Prometheus exposition (0 when absent).
function sample(text, series) {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

describe('/v1/embeddings (stories260K.gguf, mean pooling)', () => {
  const ctx = useServer({ model: MODELS.plain, args: ['--embedding-max-inputs', 40] });

  test('the OpenAI SDK gets unit vectors of the model size in OpenAI\'s shape (float)', ctx.wrap(async () => {
    const client = openaiClient(ctx.server);
    const model = await modelId(ctx.server);
    const res = await client.embeddings.create({ model, input: ONCE, encoding_format: 'float' });
    assert.equal(res.object, 'list');
    assert.equal(res.model, model);
    assert.equal(res.data.length, 1);
    assert.equal(res.data[0].object, 'embedding');
    assert.equal(res.data[0].index, 0);
    assert.equal(res.data[0].embedding.length, DIM);
    assertUnit(res.data[0].embedding, 'float embedding');
    assert.deepEqual(res.usage, { prompt_tokens: ONCE_PROMPT_IDS.length, total_tokens: ONCE_PROMPT_IDS.length });
  }));

  test('base64: the SDK decodes it by default, and explicit base64 is little-endian float32', ctx.wrap(async () => {
    // Separate requests may differ in the last bits of a float (ggml's kernels), so answers of
    // different requests are compared within 1e-6; the exact encoding is unit-tested.
    const client = openaiClient(ctx.server);
    const model = await modelId(ctx.server);
    const [ref] = await vectorOf(ctx.server, ONCE);
    // No encoding_format: the SDK asks for base64 and decodes it into numbers.
    const dflt = await client.embeddings.create({ model, input: ONCE });
    assert.ok(Array.isArray(dflt.data[0].embedding));
    assertClose(dflt.data[0].embedding, ref, 1e-6, 'SDK-decoded base64 vs float');
    // Explicit base64: the SDK hands over the string.
    const b64 = await client.embeddings.create({ model, input: [ONCE, 'The dog'], encoding_format: 'base64' });
    assert.equal(typeof b64.data[0].embedding, 'string');
    assert.equal(Buffer.from(b64.data[0].embedding, 'base64').length, DIM * 4);
    const floats = await vectorOf(ctx.server, [ONCE, 'The dog']);
    assertClose(decodeBase64(b64.data[0].embedding), floats[0], 1e-6, 'base64 vs float, first');
    assertClose(decodeBase64(b64.data[1].embedding), floats[1], 1e-6, 'base64 vs float, second');
    assertUnit(decodeBase64(b64.data[1].embedding), 'second base64 vector');
  }));

  test('a list of strings: one vector per input, in order, each equal to its own request', ctx.wrap(async () => {
    const texts = ['The cat sat.', ONCE, 'Lily went to the park', 'a'];
    const res = await embed(ctx.server, { input: texts, model: await modelId(ctx.server) });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body.data.map((d) => d.index), [0, 1, 2, 3]);
    for (let i = 0; i < texts.length; i++) {
      const [alone] = await vectorOf(ctx.server, texts[i]);
      assertClose(res.body.data[i].embedding, alone, 1e-5, `input ${i} batched vs alone`);
      assertUnit(res.body.data[i].embedding, `input ${i}`);
    }
    const [a, b] = [res.body.data[0].embedding, res.body.data[2].embedding];
    assert.ok(a.some((x, i) => Math.abs(x - b[i]) > 1e-3), 'different texts give different vectors');
  }));

  test('token-array input equals the string input\'s vector', ctx.wrap(async () => {
    const [fromText] = await vectorOf(ctx.server, ONCE);
    const [fromIds] = await vectorOf(ctx.server, ONCE_PROMPT_IDS);
    assertClose(fromIds, fromText, 1e-5, 'token ids vs text');
    const both = await vectorOf(ctx.server, [ONCE_PROMPT_IDS, [BOS, 403]]);
    assertClose(both[0], fromText, 1e-5, 'array of token arrays, first');
    assert.equal(both[1].length, DIM);
    const usage = await embed(ctx.server, { input: [ONCE_PROMPT_IDS, [BOS, 403]] });
    assert.equal(usage.body.usage.prompt_tokens, ONCE_PROMPT_IDS.length + 2);
  }));

  test('determinism: the same input gives the same vector, also batched with concurrent requests',
    ctx.wrap(async () => {
      const texts = Array.from({ length: 12 }, (_, i) => `${onceTimes(1 + (i % 5))} number ${i}`);
      const sequential = [];
      for (const t of texts) {
        sequential.push((await vectorOf(ctx.server, t))[0]);
      }
      const before = await scrape(ctx.server);
      // Twelve single-input requests and three multi-input ones at once, twice over.
      for (let round = 0; round < 2; round++) {
        const singles = texts.map((t) => vectorOf(ctx.server, t));
        const multis = [0, 4, 8].map((s) => vectorOf(ctx.server, texts.slice(s, s + 4)));
        const [one, many] = await Promise.all([Promise.all(singles), Promise.all(multis)]);
        one.forEach(([v], i) => assertClose(v, sequential[i], 1e-5, `round ${round}, concurrent input ${i}`));
        many.forEach((vs, k) =>
          vs.forEach((v, j) => assertClose(v, sequential[4 * k + j], 1e-5, `round ${round}, multi ${k}[${j}]`)),
        );
      }
      const after = await scrape(ctx.server);
      const model = await modelId(ctx.server);
      const batches = sample(after, `inferbox_embedding_batches_total{model_name="${model}"}`) -
        sample(before, `inferbox_embedding_batches_total{model_name="${model}"}`);
      const inputs = sample(after, `inferbox_embedding_inputs_total{model_name="${model}"}`) -
        sample(before, `inferbox_embedding_inputs_total{model_name="${model}"}`);
      assert.equal(inputs, 2 * 24, 'every input encoded once');
      assert.ok(batches < inputs, `inputs are batched (${inputs} inputs in ${batches} batches)`);
    }));

  test('dimensions truncates then re-normalises; more than the model has is a 400', ctx.wrap(async () => {
    const [full] = await vectorOf(ctx.server, ONCE);
    const res = await embed(ctx.server, { input: ONCE, dimensions: 8 });
    assert.equal(res.status, 200, res.text);
    const short = res.body.data[0].embedding;
    assert.equal(short.length, 8);
    assertUnit(short, 'shortened');
    const n8 = norm(full.slice(0, 8));
    assertClose(short, full.slice(0, 8).map((x) => x / n8), 1e-5, 'prefix re-normalised');
    const same = await embed(ctx.server, { input: ONCE, dimensions: DIM });
    assertClose(same.body.data[0].embedding, full, 1e-5, 'dimensions = model size');
    const sdk = await openaiClient(ctx.server).embeddings.create({
      model: await modelId(ctx.server), input: ONCE, dimensions: 16,
    });
    assert.equal(sdk.data[0].embedding.length, 16);
    const over = assertErrorShape(await embed(ctx.server, { input: ONCE, dimensions: DIM + 1 }), 400);
    assert.equal(over.param, 'dimensions');
    assert.match(over.message, /dimensions is 65, but this model's embeddings have 64 dimensions/);
  }));

  test('truncate: NONE refuses a long input naming the lengths; START and END cut it', ctx.wrap(async () => {
    // Tokenization assumption the other checks rely on: BOS + 4 tokens per repetition.
    const small = await embed(ctx.server, { input: onceTimes(3) });
    assert.equal(small.body.usage.prompt_tokens, 1 + 12, small.text);

    const text = onceTimes(150); // 601 tokens
    for (const body of [{ input: text }, { input: text, truncate: 'NONE' }, { input: [ONCE, text] }]) {
      const err = assertErrorShape(await embed(ctx.server, body), 400);
      assert.equal(err.param, 'input');
      assert.equal(err.code, 'context_length_exceeded');
      assert.match(err.message, /has 601 tokens, but this model embeds at most 512 tokens per input/);
      assert.match(err.message, Array.isArray(body.input) ? /^input\[1\]/ : /^input /);
    }
    const content = onceIds(150);
    // END keeps the start (BOS stays first); START keeps the end (BOS still first).
    const end = await embed(ctx.server, { input: text, truncate: 'END' });
    assert.equal(end.status, 200, end.text);
    assert.equal(end.body.usage.prompt_tokens, N_CTX);
    const [endRef] = await vectorOf(ctx.server, [BOS, ...content.slice(0, N_CTX - 1)]);
    assertClose(end.body.data[0].embedding, endRef, 1e-5, 'END equals the first 512 tokens');
    const start = await embed(ctx.server, { input: text, truncate: 'START' });
    assert.equal(start.status, 200, start.text);
    assert.equal(start.body.usage.prompt_tokens, N_CTX);
    const [startRef] = await vectorOf(ctx.server, [BOS, ...content.slice(content.length - (N_CTX - 1))]);
    assertClose(start.body.data[0].embedding, startRef, 1e-5, 'START equals BOS + the last 511 tokens');
    assert.ok(norm(start.body.data[0].embedding.map((x, i) => x - end.body.data[0].embedding[i])) > 1e-3);
    // Token arrays are cut as given.
    const ids = [BOS, ...content];
    const idsEnd = await embed(ctx.server, { input: ids, truncate: 'END' });
    assertClose(idsEnd.body.data[0].embedding, endRef, 1e-5, 'token array END');
    const idsStart = await embed(ctx.server, { input: ids, truncate: 'START' });
    const [tail] = await vectorOf(ctx.server, ids.slice(ids.length - N_CTX));
    assertClose(idsStart.body.data[0].embedding, tail, 1e-5, 'token array START');
    // A fitting input is untouched by truncate.
    const fits = await embed(ctx.server, { input: ONCE, truncate: 'START', input_type: 'query' });
    assertClose(fits.body.data[0].embedding, (await vectorOf(ctx.server, ONCE))[0], 1e-5, 'fitting input');
  }));

  test('invalid requests are 400s naming the param', ctx.wrap(async () => {
    const url = `${ctx.server.url}/v1/embeddings`;
    const cases = [
      [{}, 'input', /input is required/],
      [{ input: '' }, 'input', /empty string/],
      [{ input: [] }, 'input', /empty array/],
      [{ input: ['a', ''] }, 'input', /input\[1\] is an empty string/],
      [{ input: [[1], []] }, 'input', /input\[1\] is an empty token array/],
      [{ input: Array(41).fill('a') }, 'input', /has 41 entries; the limit is 40/],
      [{ input: [BOS, 512] }, 'input', /token id 512, outside the vocabulary \[0, 512\)/],
      [{ input: [[BOS], [BOS, 99999]] }, 'input', /input\[1\] holds token id 99999/],
      [{ input: [1, -1] }, 'input', /outside \[0, 2\^31\)/],
      [{ input: ['a', 1] }, 'input', /only strings or only token-id arrays/],
      [{ input: 'a', encoding_format: 'binary' }, 'encoding_format', /"float" or "base64"/],
      [{ input: 'a', dimensions: 0 }, 'dimensions', /between 1 and/],
      [{ input: 'a', truncate: 'LEFT' }, 'truncate', /"NONE", "START", "END"/],
      [{ input: 'a', input_type: 'doc' }, 'input_type', /"query" or "passage"/],
    ];
    for (const [body, param, message] of cases) {
      const err = assertErrorShape(await postJson(url, body), 400);
      assert.equal(err.param, param, JSON.stringify(body));
      assert.match(err.message, message, JSON.stringify(body));
      assert.equal(err.type, 'invalid_request_error');
    }
    const notJson = assertErrorShape(await postJson(url, '{"input": '), 400);
    assert.equal(notJson.code, 'invalid_json');
    const wrongModel = assertErrorShape(await postJson(url, { input: 'a', model: 'gpt-4' }), 404);
    assert.equal(wrongModel.code, 'model_not_found');
    assert.equal(wrongModel.param, 'model');
    const get = await fetch(url);
    assert.equal(get.status, 405);
    // The SDK surfaces them as BadRequestError with the param.
    await assert.rejects(
      openaiClient(ctx.server).embeddings.create({ model: await modelId(ctx.server), input: [[BOS, 1000]] }),
      (e) => e.status === 400 && e.param === 'input',
    );
  }));

  test('/v1/ranking answers 400 on a model that is not a reranker', ctx.wrap(async () => {
    const url = `${ctx.server.url}/v1/ranking`;
    const model = await modelId(ctx.server);
    const err = assertErrorShape(
      await postJson(url, { model, query: { text: 'a dog' }, passages: [{ text: 'Tom had a dog.' }] }),
      400,
    );
    assert.equal(err.param, 'model');
    assert.equal(err.code, 'model_not_reranker');
    assert.match(err.message, /not a reranker.*mean pooling/);
    const bad = assertErrorShape(await postJson(url, { query: 'a dog', passages: [{ text: 'x' }] }), 400);
    assert.equal(bad.param, 'query');
    const noPassages = assertErrorShape(await postJson(url, { query: { text: 'q' }, passages: [] }), 400);
    assert.equal(noPassages.param, 'passages');
  }));

  test('generation is unaffected while embeddings run concurrently', ctx.wrap(async () => {
    const model = await modelId(ctx.server);
    let stop = false;
    let embedded = 0;
    const pump = (async () => {
      while (!stop) {
        const res = await embed(ctx.server, { input: [onceTimes(100), 'The end.', onceTimes(20)] });
        assert.equal(res.status, 200, res.text);
        embedded++;
      }
    })();
    const completions = await Promise.all(
      Array.from({ length: 3 }, () =>
        postJson(`${ctx.server.url}/v1/completions`, { model, prompt: ONCE, max_tokens: 64, temperature: 0 }),
      ),
    );
    stop = true;
    await pump;
    for (const c of completions) {
      assert.equal(c.status, 200, c.text);
      assert.equal(c.body.choices[0].text, GREEDY_64, 'greedy text unchanged beside embeddings');
    }
    assert.ok(embedded > 0);
  }));

  test('access log and metrics record embedding requests and tokens', ctx.wrap(async () => {
    const model = await modelId(ctx.server);
    const before = await scrape(ctx.server);
    const mark = ctx.server.mark();
    const res = await embed(ctx.server, { input: [ONCE_PROMPT_IDS, ONCE_PROMPT_IDS], input_type: 'passage' });
    assert.equal(res.status, 200);
    await sleep(100); // the access-log line is written after the last byte
    const log = ctx.server.logSince(mark);
    const line = log.split('\n').find((l) => l.includes('path=/v1/embeddings'));
    assert.ok(line, `no access-log line for the request:\n${log}`);
    assert.match(line, /status=200/);
    assert.match(line, /inputs=2/);
    assert.match(line, /prompt_tokens=10/);
    assert.match(line, /input_type=passage/);
    const after = await scrape(ctx.server);
    const delta = (s) => sample(after, s) - sample(before, s);
    assert.equal(delta(`inferbox_embedding_request_success_total{model_name="${model}",endpoint="embeddings"}`), 1);
    assert.equal(delta(`inferbox_embedding_request_started_total{model_name="${model}",endpoint="embeddings"}`), 1);
    assert.equal(delta(`inferbox_embedding_tokens_total{model_name="${model}"}`), 10);
    assert.equal(delta(`inferbox_embedding_inputs_total{model_name="${model}"}`), 2);
    assert.match(after, /inferbox_embedding_request_latency_seconds_count\{model_name="[^"]+",endpoint="embeddings"\}/);
  }));

  test('hostile inputs leave the server healthy', ctx.wrap(async () => {
    const url = `${ctx.server.url}/v1/embeddings`;
    const hostile = [
      '{"input": [' + '['.repeat(200) + ']'.repeat(200) + ']}',
      JSON.stringify({ input: Array(40).fill(onceTimes(400)), truncate: 'END' }),
      JSON.stringify({ input: Array(40).fill(Array(600).fill(2147483647)) }),
      JSON.stringify({ input: 'x'.repeat(200_000), truncate: 'START' }),
      JSON.stringify({ input: '\u0000\uFFFD\uD83D\uDE00<s></s>[CLS]', dimensions: 1 }),
      JSON.stringify({ input: 'a', dimensions: 1e308 }),
      JSON.stringify({ input: [1.5e10] }),
      '{"input":"a","encoding_format":"base64","dimensions":1,"truncate":"end","input_type":"query","model":null}',
    ];
    for (const body of hostile) {
      const res = await postJson(url, body);
      assert.ok([200, 400].includes(res.status), `${body.slice(0, 80)} -> ${res.status} ${res.text.slice(0, 200)}`);
      if (res.status === 200) {
        for (const d of res.body.data) {
          const v = typeof d.embedding === 'string' ? decodeBase64(d.embedding) : d.embedding;
          assertUnit(v, body.slice(0, 40));
        }
      }
    }
    await assertHealthy(ctx.server);
    assert.equal((await vectorOf(ctx.server, ONCE))[0].length, DIM);
  }));
});

describe('embeddings behind the API key, CORS and rate limit machinery', () => {
  const KEY = 'sk-embed-test-key-1';
  const ctx = useServer({
    model: MODELS.plain,
    args: ['--api-key', KEY, '--cors-origin', 'https://app.example', '--rate-limit-rpm', 3],
  });

  test('401 without a key, 200 with it, CORS preflight, then 429 past the rate limit', ctx.wrap(async () => {
    const url = `${ctx.server.url}/v1/embeddings`;
    const none = assertErrorShape(await postJson(url, { input: 'a' }), 401);
    assert.equal(none.code, 'invalid_api_key');
    const pre = await fetch(url, {
      method: 'OPTIONS',
      headers: { Origin: 'https://app.example', 'Access-Control-Request-Method': 'POST' },
    });
    assert.equal(pre.status, 204);
    assert.match(pre.headers.get('access-control-allow-methods'), /POST/);
    const ranking = await fetch(`${ctx.server.url}/v1/ranking`, {
      method: 'OPTIONS',
      headers: { Origin: 'https://app.example', 'Access-Control-Request-Method': 'POST' },
    });
    assert.equal(ranking.status, 204);
    const auth = { authorization: `Bearer ${KEY}`, origin: 'https://app.example' };
    const ok = await postJson(url, { input: 'a', encoding_format: 'float' }, { headers: auth });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.headers.get('access-control-allow-origin'), 'https://app.example');
    assert.match(ok.headers.get('x-request-id'), /^[0-9a-f]{32}$/);
    const sdk = openaiClient(ctx.server, { apiKey: KEY });
    const res = await sdk.embeddings.create({ model: 'stories260K', input: 'b' });
    assert.equal(res.data[0].embedding.length, DIM);
    await postJson(url, { input: 'c' }, { headers: auth });
    const limited = assertErrorShape(await postJson(url, { input: 'd' }, { headers: auth }), 429);
    assert.equal(limited.code, 'rate_limit_exceeded');
  }));
});

describe('the embedder queue bound, cancellation and shutdown', () => {
  test('a full queue answers 429 stating the limit; SIGTERM lets queued work finish', async () => {
    const server = await startServer({
      model: MODELS.plain,
      args: ['--embedding-max-queue', 8, '--embedding-max-inputs', 8, '--embedding-batch-inputs', 1],
    });
    try {
      const heavy = { input: Array(8).fill(onceTimes(127)), encoding_format: 'float' }; // 8 × 509 tokens
      const answers = await Promise.all(Array.from({ length: 24 }, () => embed(server, heavy)));
      const statuses = answers.map((a) => a.status);
      assert.ok(statuses.every((s) => s === 200 || s === 429), `statuses: ${statuses}`);
      assert.ok(statuses.includes(200), `statuses: ${statuses}`);
      const refused = answers.find((a) => a.status === 429);
      assert.ok(refused, `24 concurrent 8-input requests against a queue of 8 were all admitted: ${statuses}`);
      const err = assertErrorShape(refused, 429);
      assert.equal(err.code, 'queue_full');
      assert.match(err.message, /limit 8, --embedding-max-queue/);
      assert.equal(refused.headers.get('retry-after'), '1');

      // A client that leaves mid-request cancels it; the books still balance.
      const abort = new AbortController();
      const gone = fetch(`${server.url}/v1/embeddings`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(heavy),
        signal: abort.signal,
      }).catch((e) => e);
      const ep = `model_name="stories260K",endpoint="embeddings"`;
      const m0 = await scrape(server);
      const startedBefore = sample(m0, `inferbox_embedding_request_started_total{${ep}}`);
      const inputsBefore = sample(m0, 'inferbox_embedding_inputs_total{model_name="stories260K"}');
      for (let i = 0; i < 2000; i++) { // until the server has queued it
        if (sample(await scrape(server), `inferbox_embedding_request_started_total{${ep}}`) > startedBefore) {
          break;
        }
      }
      abort.abort();
      await gone;
      // The batch in progress finishes (about 0.5 s for 509 tokens here), then the cancelled
      // request's remaining inputs leave the queue.
      let m = await scrape(server);
      for (let i = 0; i < 100 && sample(m, 'inferbox_embedding_queued_inputs{model_name="stories260K"}') > 0; i++) {
        await sleep(100);
        m = await scrape(server);
      }
      assert.equal(sample(m, `inferbox_embedding_request_cancelled_total{${ep}}`), 1, 'the request was cancelled');
      const encoded = sample(m, 'inferbox_embedding_inputs_total{model_name="stories260K"}') - inputsBefore;
      assert.ok(encoded < 8, `the cancelled request's queued inputs were dropped (${encoded} of 8 encoded)`);
      const started = sample(m, `inferbox_embedding_request_started_total{${ep}}`);
      const done = sample(m, `inferbox_embedding_request_success_total{${ep}}`) +
        sample(m, `inferbox_embedding_request_cancelled_total{${ep}}`) +
        ['overloaded', 'unavailable', 'engine_error']
          .map((r) => sample(m, `inferbox_embedding_request_failure_total{${ep},reason="${r}"}`))
          .reduce((a, b) => a + b, 0);
      assert.equal(started, done, `started ${started} = success + cancelled + failure ${done}\n${m}`);
      assert.equal(sample(m, 'inferbox_embedding_queued_inputs{model_name="stories260K"}'), 0);
      await assertHealthy(server);

      // SIGTERM with embeddings queued: the drain lets them finish, then the process exits 0.
      const inflight = Array.from({ length: 3 }, (_, i) =>
        embed(server, { input: Array(i + 1).fill(onceTimes(127)) }));
      await sleep(2);
      process.kill(server.pid, 'SIGTERM');
      const last = await Promise.all(inflight);
      for (const r of last) {
        assert.ok(r.status === 200 || r.status === 503, `${r.status} ${r.text.slice(0, 200)}`);
        if (r.status === 200) {
          r.body.data.forEach((d) => assertUnit(d.embedding, 'drained'));
        }
      }
      const exit = await server.exited;
      assert.equal(exit.code, 0, server.log().slice(-3000));
    } finally {
      await server.stop();
    }
  });

  test('--pooling none switches embeddings off with a clear 400', async () => {
    const server = await startServer({ model: MODELS.plain, args: ['--pooling', 'none'] });
    try {
      const err = assertErrorShape(await embed(server, { input: 'a' }), 400);
      assert.equal(err.code, 'embeddings_disabled');
      assert.match(err.message, /--pooling none/);
      await assertHealthy(server);
    } finally {
      await server.stop();
    }
  });

  test('--pooling last and cls choose other token states of the same size', async () => {
    const mean = await startServer({ model: MODELS.plain });
    const last = await startServer({ model: MODELS.plain, args: ['--pooling', 'last'] });
    const cls = await startServer({ model: MODELS.plain, args: ['--pooling', 'cls'] });
    try {
      const [m] = await vectorOf(mean, ONCE);
      const [l] = await vectorOf(last, ONCE);
      assert.equal(l.length, DIM);
      assertUnit(l, 'last pooling');
      assert.ok(norm(m.map((x, i) => x - l[i])) > 1e-3, 'last pooling differs from mean pooling');
      const [l2] = await vectorOf(last, [BOS, ...ONCE_IDS.slice(0, 2)]);
      assert.ok(norm(l.map((x, i) => x - l2[i])) > 1e-3, 'the last token differs');
      // In a causal model the first token sees only itself: CLS pooling of any two inputs that
      // start with BOS is the same vector.
      const [c1, c2] = await vectorOf(cls, [ONCE, 'The dog ran home.']);
      assertUnit(c1, 'cls pooling');
      assertClose(c1, c2, 1e-5, 'first-token states');
    } finally {
      await Promise.all([mean.stop(), last.stop(), cls.stop()]);
    }
  });
});
