// Back-pressure and cancellation: a full queue answers 429 with Retry-After; streams the client
// abandons give their slots back.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import {
  MODELS,
  ONCE,
  REQUEST_TIMEOUT_MS,
  assertErrorShape,
  assertHealthy,
  modelId,
  postJson,
  timeBound,
  useServer,
} from './harness.mjs';

const LONG = { prompt: ONCE, max_tokens: 400, temperature: 0, ignore_eos: true };

describe('queue full (--parallel 1 --max-queue 1)', () => {
  const ctx = useServer({ model: MODELS.plain, parallel: 1, args: ['--max-queue', 1, '--ctx-size', 512] });
  let model;

  before(async () => {
    model = await modelId(ctx.server);
  });

  test('concurrent long requests beyond slot + queue get 429 with Retry-After', ctx.wrap(async () => {
    const url = `${ctx.server.url}/v1/completions`;
    const results = await Promise.all(Array.from({ length: 8 }, () => postJson(url, { model, ...LONG })));
    const statuses = results.map((r) => r.status);
    const accepted = results.filter((r) => r.status === 200);
    const rejected = results.filter((r) => r.status === 429);
    assert.equal(accepted.length + rejected.length, results.length, `unexpected statuses: ${statuses}`);
    assert.ok(rejected.length >= 1, `no request was refused with 429: ${statuses}`);
    // One slot plus one queue place: at least the first request gets through. With all 8 sent at
    // once, no more than slot + queue should be admitted while the first is still generating.
    assert.ok(accepted.length >= 1, `no request was accepted: ${statuses}`);
    for (const r of rejected) {
      const err = assertErrorShape(r, 429);
      assert.equal(typeof err.message, 'string');
      const retryAfter = r.headers.get('retry-after');
      assert.ok(retryAfter !== null, '429 without a Retry-After header');
      assert.match(retryAfter, /^\d+$/, `Retry-After is not a number of seconds: ${retryAfter}`);
    }
    // The accepted ones ran to the end, and all produced the same greedy text.
    for (const r of accepted) {
      assert.equal(r.body.choices[0].finish_reason, 'length');
      assert.equal(r.body.usage.completion_tokens, 400);
    }
    assert.equal(new Set(accepted.map((r) => r.body.choices[0].text)).size, 1);
    await assertHealthy(ctx.server);
  }));

  test('after the burst the full capacity is available again', ctx.wrap(async () => {
    const url = `${ctx.server.url}/v1/completions`;
    // One running and one queued fit exactly; nothing may be refused.
    const first = postJson(url, { model, ...LONG });
    await new Promise((resolve) => setTimeout(resolve, 20));
    const second = postJson(url, { model, ...LONG, max_tokens: 8 });
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.status, 200, a.text);
    assert.equal(b.status, 200, b.text);
  }));
});

// Reads a streaming response until its first data event; resolves the elapsed milliseconds.
async function readFirstEvent(res) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      throw new Error(`stream ended before its first event: ${buf}`);
    }
    buf += decoder.decode(value, { stream: true });
    if (/(^|\n)data:/.test(buf) && /\r?\n\r?\n/.test(buf)) {
      return buf;
    }
  }
}

describe('cancellation (--parallel 2)', () => {
  const ctx = useServer({ model: MODELS.plain, parallel: 2, args: ['--ctx-size', 512] });
  let model;
  let url;

  before(async () => {
    model = await modelId(ctx.server);
    url = `${ctx.server.url}/v1/completions`;
  });

  const startStreams = async (count, body) => {
    const streams = [];
    for (let i = 0; i < count; i++) {
      const controller = new AbortController();
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model, ...body, stream: true }),
        signal: AbortSignal.any([controller.signal, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]),
      });
      assert.equal(res.status, 200, `stream ${i}: ${res.status}`);
      streams.push({ controller, res });
    }
    for (const s of streams) {
      const first = await readFirstEvent(s.res);
      assert.ok(!first.includes('[DONE]'), 'the stream finished before it could be aborted');
    }
    return streams;
  };

  const abortAll = (streams) => {
    for (const s of streams) {
      s.controller.abort();
    }
  };

  test('aborted streams free their slots: a new request completes promptly', ctx.wrap(async () => {
    for (let round = 0; round < 3; round++) {
      const streams = await startStreams(2, LONG);
      abortAll(streams);
      const started = Date.now();
      const res = await postJson(url, { model, prompt: ONCE, max_tokens: 16, temperature: 0 }, {
        signal: AbortSignal.timeout(5000),
      });
      const ms = Date.now() - started;
      assert.equal(res.status, 200, `round ${round}: ${res.text}`);
      assert.equal(res.body.usage.completion_tokens, 16);
      assert.ok(ms < timeBound(5000), `round ${round}: the request after the aborts took ${ms} ms`);
    }
    await assertHealthy(ctx.server);
  }));

  test('aborted streams stop generating: a new request does not wait for their tokens', ctx.wrap(async (t) => {
    // How long the two long generations take when nobody aborts them.
    const long = { ...LONG, max_tokens: 500 };
    let started = Date.now();
    const full = await Promise.all([postJson(url, { model, ...long }), postJson(url, { model, ...long })]);
    const fullMs = Date.now() - started;
    for (const r of full) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.usage.completion_tokens, 500);
    }
    // The same two as streams, aborted after their first event, then a short request: if the
    // slots kept generating, it would wait for one of them to finish (about fullMs).
    const streams = await startStreams(2, long);
    abortAll(streams);
    started = Date.now();
    const res = await postJson(url, { model, prompt: ONCE, max_tokens: 4, temperature: 0 });
    const ms = Date.now() - started;
    t.diagnostic(`two 500-token generations: ${fullMs} ms; 4-token request after aborting them: ${ms} ms`);
    assert.equal(res.status, 200, res.text);
    assert.ok(
      ms < fullMs / 2,
      `the request after the aborts took ${ms} ms, vs ${fullMs} ms for the full generations: ` +
        'the aborted streams seem to have kept their slots',
    );
  }));
});
