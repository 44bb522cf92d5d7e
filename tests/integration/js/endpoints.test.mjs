// Health, version and model listing over plain fetch; model id and context length flags; clean
// shutdown on SIGTERM.

import assert from 'node:assert/strict';
import http from 'node:http';
import { describe, test } from 'node:test';

import { MODELS, REQUEST_TIMEOUT_MS, getJson, openaiClient, startServer, timeBound, useServer } from './harness.mjs';

// One request through `agent`; resolves { status, body, reused } (reused: it went over a
// connection that had already carried a request).
function agentRequest(agent, url, method, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      agent,
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      timeout: REQUEST_TIMEOUT_MS,
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, text, reused: req.reusedSocket }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: no answer on a kept-alive connection`)));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

describe('endpoints (stories260K.gguf, --ctx-size 256)', () => {
  const ctx = useServer({ model: MODELS.plain, args: ['--ctx-size', 256] });

  test('GET /v1/health/live answers 200', ctx.wrap(async () => {
    const res = await getJson(`${ctx.server.url}/v1/health/live`);
    assert.equal(res.status, 200, res.text);
  }));

  test('GET /v1/health/ready answers 200', ctx.wrap(async () => {
    const res = await getJson(`${ctx.server.url}/v1/health/ready`);
    assert.equal(res.status, 200, res.text);
  }));

  test('GET /v1/version answers JSON with a version string', ctx.wrap(async () => {
    const res = await getJson(`${ctx.server.url}/v1/version`);
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    assert.equal(typeof res.body?.version, 'string', `no version string in ${res.text}`);
    assert.ok(res.body.version.length > 0, 'version is empty');
  }));

  test('GET /v1/models/{id}: the object /v1/models lists; 404 and 405 in the OpenAI shape', ctx.wrap(async () => {
    // Issue 20: client.models.retrieve() was a 404.
    const list = await getJson(`${ctx.server.url}/v1/models`);
    const client = openaiClient(ctx.server);
    const one = await client.models.retrieve('stories260K');
    assert.deepEqual({ ...one }, list.body.data[0]);
    const missing = await getJson(`${ctx.server.url}/v1/models/nope`);
    assert.equal(missing.status, 404, missing.text);
    assert.equal(missing.body.error.code, 'model_not_found');
    assert.equal(missing.body.error.param, 'model');
    await assert.rejects(client.models.retrieve('org/nope'), (err) => err.status === 404);
    const post = await fetch(`${ctx.server.url}/v1/models/stories260K`, { method: 'POST', body: '{}' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    assert.equal((await post.json()).error.code, 'method_not_allowed');
  }));

  test('GET /v1/models lists the model the OpenAI way', ctx.wrap(async () => {
    const res = await getJson(`${ctx.server.url}/v1/models`);
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    assert.equal(res.body.object, 'list');
    assert.ok(Array.isArray(res.body.data), `data is not an array: ${res.text}`);
    assert.equal(res.body.data.length, 1, `expected exactly one model: ${res.text}`);
    const m = res.body.data[0];
    // The id defaults to the file name without ".gguf".
    assert.equal(m.id, 'stories260K');
    assert.equal(m.object, 'model');
    assert.equal(typeof m.owned_by, 'string');
    assert.ok(m.owned_by.length > 0, 'owned_by is empty');
    assert.ok(Number.isInteger(m.created), `created is not an integer: ${m.created}`);
    assert.ok(m.created > 1_600_000_000 && m.created < 4_000_000_000, `created is not unix seconds: ${m.created}`);
    // The per-sequence context (--ctx-size), named as vLLM names it.
    assert.equal(m.max_model_len, 256, `max_model_len: ${res.text}`);
  }));
});

describe('keep-alive (one connection, many requests)', () => {
  const ctx = useServer({ model: MODELS.plain });

  test('requests of every kind follow each other on one kept-alive connection', ctx.wrap(async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const base = ctx.server.url;
    const completion = { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 4, temperature: 0 };
    const steps = [
      ['GET', '/v1/models', undefined, 200],
      ['GET', '/v1/health/ready', undefined, 200],
      ['POST', '/v1/completions', completion, 200],
      ['POST', '/v1/completions', completion, 200],
      ['GET', '/v1/models', undefined, 200],
      ['POST', '/v1/completions', { ...completion, temperature: 5 }, 400],
      ['POST', '/v1/completions', { ...completion, stream: true }, 200],
      ['GET', '/v1/no-such-route', undefined, 404],
      ['POST', '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: 'Hi' }] }, 400],
      ['POST', '/v1/completions', completion, 200],
    ];
    try {
      for (const [i, [method, path, body, status]] of steps.entries()) {
        const res = await agentRequest(agent, `${base}${path}`, method, body);
        assert.equal(res.status, status, `step ${i}: ${method} ${path}: ${res.text}`);
        if (i > 0) {
          assert.equal(res.reused, true, `step ${i}: ${method} ${path} did not reuse the connection`);
        }
      }
    } finally {
      agent.destroy();
    }
  }));
});

describe('--model-name', () => {
  const ctx = useServer({ model: MODELS.plain, args: ['--model-name', 'tiny-stories'] });

  test('GET /v1/models reports the configured id', ctx.wrap(async () => {
    const res = await getJson(`${ctx.server.url}/v1/models`);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body.data.map((m) => m.id), ['tiny-stories']);
  }));
});

describe('shutdown', () => {
  test('SIGTERM stops an idle server cleanly (exit code 0)', async () => {
    const server = await startServer({ model: MODELS.plain });
    const started = Date.now();
    const info = await server.stop();
    const ms = Date.now() - started;
    assert.deepEqual(
      info,
      { code: 0, signal: null },
      `exit after SIGTERM: ${JSON.stringify(info)} after ${ms} ms\n--- server log ---\n${server.log()}`,
    );
    assert.ok(ms < timeBound(10_000), `shutdown took ${ms} ms`);
  });

  test('a second signal while draining exits at once (code 1), without waiting for the request', async () => {
    // A 1,900-token prompt computed 4 tokens per step keeps a request in flight for seconds.
    const server = await startServer({
      model: MODELS.plain,
      args: ['--ctx-size', 2048, '--batch-size', 4, '--prefill-chunk', 4, '--shutdown-timeout', 60],
    });
    const prompt = [1, ...Array.from({ length: 1900 }, (_, i) => 300 + ((i * 7) % 200))];
    const inflight = fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt, max_tokens: 8 }),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    }).then((r) => r.status, (e) => e);
    try {
      // Wait until the request is running (its prefill under way).
      const running = async () => /^num_requests_running\{[^}]*\} 1$/m.test((await getJson(`${server.url}/metrics`)).text);
      for (let i = 0; i < 250 && !(await running()); i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(await running(), 'the long request never started running');
      process.kill(server.pid, 'SIGTERM');
      await new Promise((r) => setTimeout(r, 300));
      assert.match(server.log(), /draining/);
      const t0 = Date.now();
      process.kill(server.pid, 'SIGTERM');
      const info = await Promise.race([server.exited, new Promise((r) => setTimeout(() => r(null), 5000))]);
      assert.ok(info, `no exit within 5 s of the second signal\n${server.log()}`);
      assert.equal(info.code, 1, server.log());
      assert.ok(Date.now() - t0 < timeBound(5000));
      assert.match(server.log(), /second signal \(15\): exiting now/);
    } finally {
      await server.stop();
      await inflight;
    }
  });
});
