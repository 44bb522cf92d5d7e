// Security: API keys (flag, file and environment; 401 in OpenAI's shape; probes stay open),
// CORS, per-key rate limits, header-count limits and start-up refusal of weak keys.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';

import OpenAI from 'openai';

import {
  MODELS, ONCE, assertErrorShape, getJson, modelPath, openaiClient, postJson, serverBinary, useServer,
} from './harness.mjs';

const KEY_FLAG = 'flag-key-0123456789';
const KEY_FILE = 'file-key-0123456789';
const KEY_ENV = 'env-key-0123456789';

function keyFile() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-keys-'));
  const file = path.join(dir, 'keys');
  fs.writeFileSync(file, `# operators' keys\n${KEY_FILE}\n`);
  return file;
}

async function get(url, headers = {}) {
  const res = await fetch(url, { headers });
  const text = await res.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = null;
  }
  return { status: res.status, headers: res.headers, body, text };
}

describe('API keys', () => {
  const ctx = useServer({
    model: MODELS.plain,
    args: ['--ctx-size', 256, '--api-key', KEY_FLAG, '--api-key-file', keyFile()],
    env: { INFERBOX_API_KEYS: `${KEY_ENV}, ` },
  });

  test('inference, models, version and metrics need a key; 401 is OpenAI-shaped', ctx.wrap(async () => {
    const body = { prompt: ONCE, max_tokens: 2 };
    for (const headers of [{}, { authorization: 'Bearer wrong-key-0123456789' }, { authorization: `Basic ${KEY_FLAG}` },
      { authorization: `Bearer ${KEY_FLAG}x` }]) {
      const res = await postJson(`${ctx.server.url}/v1/completions`, body, { headers });
      const err = assertErrorShape(res, 401);
      assert.equal(err.code, 'invalid_api_key');
      assert.equal(res.headers.get('www-authenticate'), 'Bearer');
      assert.ok(!err.message.includes(KEY_FLAG), 'the error never echoes a key');
    }
    for (const p of ['/v1/models', '/v1/version', '/metrics', '/v1/metrics']) {
      assertErrorShape(await get(`${ctx.server.url}${p}`), 401);
    }
  }));

  test('every configured key works: --api-key, --api-key-file, INFERBOX_API_KEYS; also api-key headers', ctx.wrap(async () => {
    for (const key of [KEY_FLAG, KEY_FILE, KEY_ENV]) {
      const res = await postJson(`${ctx.server.url}/v1/completions`, { prompt: ONCE, max_tokens: 2 },
        { headers: { authorization: `Bearer ${key}` } });
      assert.equal(res.status, 200, `${key}: ${res.text}`);
    }
    assert.equal((await get(`${ctx.server.url}/v1/models`, { 'x-api-key': KEY_ENV })).status, 200);
    assert.equal((await get(`${ctx.server.url}/metrics`, { 'api-key': KEY_FILE })).status, 200);
  }));

  test('health probes need no key', ctx.wrap(async () => {
    for (const p of ['/v1/health/live', '/v1/health/ready', '/health']) {
      assert.equal((await get(`${ctx.server.url}${p}`)).status, 200, p);
    }
  }));

  test('the official SDK: the right key works, a wrong one raises AuthenticationError', ctx.wrap(async () => {
    const good = openaiClient(ctx.server, { apiKey: KEY_FLAG });
    const r = await good.completions.create({ model: 'stories260K', prompt: ONCE, max_tokens: 3, temperature: 0 });
    assert.equal(r.usage.completion_tokens, 3);
    const bad = openaiClient(ctx.server, { apiKey: 'sk-not-a-key-000000' });
    await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  }));
});

describe('metrics public, CORS, rate limits and header limits', () => {
  const ctx = useServer({
    model: MODELS.plain,
    args: ['--ctx-size', 256, '--api-key', KEY_FLAG, '--api-key', KEY_ENV, '--metrics-public',
      '--cors-origin', 'http://app.example', '--rate-limit-rpm', 3, '--max-header-count', 40],
  });
  const auth = (k) => ({ authorization: `Bearer ${k}` });

  test('--metrics-public serves /metrics without a key; other routes still need one', ctx.wrap(async () => {
    assert.equal((await get(`${ctx.server.url}/metrics`)).status, 200);
    assert.equal((await get(`${ctx.server.url}/v1/models`)).status, 401);
  }));

  test('CORS: an allowed origin gets preflight and headers, others get none', ctx.wrap(async () => {
    const pre = await fetch(`${ctx.server.url}/v1/chat/completions`, {
      method: 'OPTIONS',
      headers: { origin: 'http://app.example', 'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization, content-type' },
    });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get('access-control-allow-origin'), 'http://app.example');
    assert.match(pre.headers.get('access-control-allow-methods') ?? '', /POST/);
    assert.match(pre.headers.get('access-control-allow-headers') ?? '', /Authorization/i);
    const ok = await get(`${ctx.server.url}/v1/models`, { origin: 'http://app.example', ...auth(KEY_FLAG) });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('access-control-allow-origin'), 'http://app.example');
    assert.match(ok.headers.get('access-control-expose-headers') ?? '', /X-Request-Id/);
    const other = await get(`${ctx.server.url}/v1/models`, { origin: 'http://evil.example', ...auth(KEY_FLAG) });
    assert.equal(other.status, 200);
    assert.equal(other.headers.get('access-control-allow-origin'), null);
    const otherPre = await fetch(`${ctx.server.url}/v1/models`, {
      method: 'OPTIONS', headers: { origin: 'http://evil.example' },
    });
    assert.equal(otherPre.status, 405, 'no preflight for an origin that is not allowed');
  }));

  test('requests per minute per key: the excess gets 429 with Retry-After; other keys are unaffected', ctx.wrap(async () => {
    const body = { prompt: ONCE, max_tokens: 1 };
    for (let i = 0; i < 3; i++) {
      const r = await postJson(`${ctx.server.url}/v1/completions`, body, { headers: auth(KEY_FLAG) });
      assert.equal(r.status, 200, r.text);
    }
    const limited = await postJson(`${ctx.server.url}/v1/completions`, body, { headers: auth(KEY_FLAG) });
    const err = assertErrorShape(limited, 429);
    assert.equal(err.code, 'rate_limit_exceeded');
    assert.match(err.message, /3 requests/);
    const retry = Number(limited.headers.get('retry-after'));
    assert.ok(retry >= 1 && retry <= 20, `Retry-After ${retry}`);
    const other = await postJson(`${ctx.server.url}/v1/completions`, body, { headers: auth(KEY_ENV) });
    assert.equal(other.status, 200, other.text);
    // Non-inference routes are not rate limited.
    assert.equal((await get(`${ctx.server.url}/v1/models`, auth(KEY_FLAG))).status, 200);
  }));

  test('more header fields than --max-header-count: 431 naming the limit', ctx.wrap(async () => {
    const answer = await new Promise((resolve, reject) => {
      const sock = net.connect(ctx.server.port, '127.0.0.1');
      let text = '';
      sock.on('data', (d) => { text += d; });
      sock.on('end', () => resolve(text));
      sock.on('error', reject);
      let req = 'GET /v1/health/live HTTP/1.1\r\nHost: x\r\n';
      for (let i = 0; i < 60; i++) {
        req += `X-Filler-${i}: ${i}\r\n`;
      }
      sock.write(`${req}\r\n`);
    });
    assert.match(answer, /^HTTP\/1\.1 431 /);
    assert.match(answer, /limit is 40/);
    assert.equal((await get(`${ctx.server.url}/v1/health/ready`)).status, 200);
  }));
});

describe('tokens per minute (--rate-limit-tpm 100)', () => {
  const ctx = useServer({
    model: MODELS.plain,
    args: ['--ctx-size', 256, '--api-key', KEY_FLAG, '--api-key', KEY_ENV, '--rate-limit-tpm', 100],
  });
  const auth = (k) => ({ authorization: `Bearer ${k}` });

  test('a key that spent its minute of tokens waits (429, Retry-After); another key is unaffected', ctx.wrap(async () => {
    // 5 prompt tokens charged at admission, 120 generated tokens when it ends: 25 in debt.
    const big = await postJson(`${ctx.server.url}/v1/completions`,
      { prompt: ONCE, max_tokens: 120, temperature: 0, ignore_eos: true }, { headers: auth(KEY_FLAG) });
    assert.equal(big.status, 200, big.text);
    assert.equal(big.body.usage.total_tokens, 125);
    const limited = await postJson(`${ctx.server.url}/v1/completions`, { prompt: ONCE, max_tokens: 1 },
      { headers: auth(KEY_FLAG) });
    const err = assertErrorShape(limited, 429);
    assert.equal(err.code, 'rate_limit_exceeded');
    assert.match(err.message, /100 tokens per minute/);
    // (25 + 1) tokens at 100 per minute: about 16 s, rounded up.
    const retry = Number(limited.headers.get('retry-after'));
    assert.ok(retry >= 10 && retry <= 20, `Retry-After ${retry}`);
    const other = await postJson(`${ctx.server.url}/v1/completions`, { prompt: ONCE, max_tokens: 1 },
      { headers: auth(KEY_ENV) });
    assert.equal(other.status, 200, other.text);
  }));
});

test('a key shorter than 8 characters is refused at start-up', () => {
  const r = spawnSync(serverBinary(), ['serve', '--model', modelPath(MODELS.plain), '--port', '0', '--api-key', 'short'],
    { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /at least 8/);
});
