// Multi-model hosting: several models in one server, routed by `model`, loaded on first request,
// unloaded least-recently-used under a memory budget, and a broken model failing only its own
// requests.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

import {
  GREEDY_64,
  MODELS,
  ONCE,
  assertErrorShape,
  getJson,
  modelPath,
  openaiClient,
  postJson,
  serverBinary,
  startServer,
} from './harness.mjs';

const Q8 = 'stories260K-Q8_0.gguf';

async function models(server) {
  const res = await getJson(`${server.url}/v1/models`);
  assert.equal(res.status, 200, res.text);
  return Object.fromEntries(res.body.data.map((m) => [m.id, m]));
}

async function greedy(server, model, max_tokens = 64) {
  const res = await postJson(`${server.url}/v1/completions`, { model, prompt: ONCE, max_tokens, temperature: 0 });
  assert.equal(res.status, 200, `${model}: ${res.text}`);
  assert.equal(res.body.model, model);
  return res.body.choices[0].text;
}

describe('several models in one server', () => {
  let server;
  before(async () => {
    server = await startServer({
      model: null,
      args: [
        '--model', `plain=${modelPath(MODELS.plain)}`,
        '--model', `chat=${modelPath(MODELS.chatml)}`,
        '--model', `q8=${modelPath(Q8)}`,
        '--memory-budget', 'off',
      ],
    });
  });
  after(async () => {
    await server?.stop();
  });

  test('/v1/models lists every model; only the first is loaded at start', async () => {
    const m = await models(server);
    assert.deepEqual(Object.keys(m), ['plain', 'chat', 'q8']);
    assert.equal(m.plain.status, 'loaded');
    assert.equal(m.plain.ready, true);
    assert.equal(m.chat.status, 'unloaded');
    assert.equal(m.q8.status, 'unloaded');
    for (const v of Object.values(m)) {
      assert.ok(v.memory_bytes > 0, `memory estimate of ${v.id}: ${v.memory_bytes}`);
    }
  });

  test('requests route by model; a model loads on its first request', async () => {
    assert.equal(await greedy(server, 'plain'), GREEDY_64);
    const chat = await postJson(`${server.url}/v1/chat/completions`, {
      model: 'chat',
      messages: [{ role: 'user', content: 'Hi' }],
      max_tokens: 16,
      temperature: 0,
    });
    assert.equal(chat.status, 200, chat.text);
    assert.equal(chat.body.model, 'chat');
    assert.equal(chat.body.choices[0].message.content, '"Here?" Annabyed.\n');
    // The plain model has no chat template: its chat requests still get the clear 400.
    const noTemplate = await postJson(`${server.url}/v1/chat/completions`, {
      model: 'plain',
      messages: [{ role: 'user', content: 'Hi' }],
      max_tokens: 4,
    });
    assertErrorShape(noTemplate, 400);
    const m = await models(server);
    assert.equal(m.chat.status, 'loaded');
    assert.equal(m.chat.max_model_len, 512);
    assert.equal(m.q8.status, 'unloaded');
    // No model named: the first one.
    const dflt = await postJson(`${server.url}/v1/completions`, { prompt: ONCE, max_tokens: 8, temperature: 0 });
    assert.equal(dflt.status, 200, dflt.text);
    assert.equal(dflt.body.model, 'plain');
  });

  test('concurrent first requests to an unloaded model share one load and all succeed', async () => {
    const outs = await Promise.all(Array.from({ length: 6 }, () => greedy(server, 'q8', 24)));
    for (const o of outs) {
      assert.equal(o, outs[0]);
    }
    // The Q8_0 weights agree with the F32 ones greedily on this prompt.
    assert.equal(outs[0], GREEDY_64.slice(0, outs[0].length));
    const meta = await getJson(`${server.url}/v1/metadata`);
    assert.equal(meta.status, 200, meta.text);
    const q8 = meta.body.models.find((x) => x.id === 'q8');
    assert.equal(q8.loads, 1);
    assert.equal(q8.status, 'loaded');
    assert.equal(q8.architecture, 'llama');
    assert.ok(q8.profile && q8.profile.name, `q8 profile: ${JSON.stringify(q8.profile)}`);
    const manifest = await getJson(`${server.url}/v1/manifest`);
    assert.equal(manifest.status, 200);
    assert.deepEqual(manifest.body.models.map((x) => x.id), ['plain', 'chat', 'q8']);
    assert.ok(manifest.body.models.every((x) => x.profiles.length > 0));
  });

  test('an unknown model gets 404 naming the served ones', async () => {
    const res = await postJson(`${server.url}/v1/completions`, { model: 'nope', prompt: ONCE, max_tokens: 4 });
    const err = assertErrorShape(res, 404);
    assert.equal(err.code, 'model_not_found');
    assert.equal(err.param, 'model');
    assert.match(err.message, /'plain', 'chat', 'q8'/);
  });

  test('embeddings route by model too', async () => {
    const res = await postJson(`${server.url}/v1/embeddings`, { model: 'chat', input: 'a dog' });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.model, 'chat');
    assert.equal(res.body.data[0].embedding.length, 64);
    const unknown = await postJson(`${server.url}/v1/embeddings`, { model: 'nope', input: 'a dog' });
    assert.equal(assertErrorShape(unknown, 404).code, 'model_not_found');
  });

  test('each model has its own metrics series', async () => {
    const res = await fetch(`${server.url}/metrics`);
    const text = await res.text();
    for (const id of ['plain', 'chat', 'q8']) {
      const m = text.match(new RegExp(`^request_success_total\\{model_name="${id}",finished_reason="length"\\} (\\d+)`, 'm'));
      assert.ok(m, `no request_success_total series for ${id}`);
      assert.ok(Number(m[1]) >= 1, `${id}: ${m[0]}`);
    }
  });

  test('the OpenAI SDK lists and uses every model', async () => {
    const client = openaiClient(server);
    const list = await client.models.list();
    assert.deepEqual(list.data.map((m) => m.id), ['plain', 'chat', 'q8']);
    const out = await client.completions.create({ model: 'q8', prompt: ONCE, max_tokens: 8, temperature: 0 });
    assert.equal(out.model, 'q8');
  });
});

describe('a memory budget that holds one model at a time', () => {
  let server;
  let budget;
  before(async () => {
    // Size the budget from the server's own estimates: room for the largest model, not two.
    const probe = await startServer({
      model: null,
      args: ['--model', `a=${modelPath(MODELS.plain)}`, '--model', `b=${modelPath(Q8)}`, '--memory-budget', 'off'],
    });
    const m = await models(probe);
    await probe.stop();
    const sizes = [m.a.memory_bytes, m.b.memory_bytes];
    budget = Math.max(...sizes) + Math.floor(Math.min(...sizes) / 2);
    server = await startServer({
      model: null,
      args: [
        '--model', `a=${modelPath(MODELS.plain)}`,
        '--model', `b=${modelPath(Q8)}`,
        '--memory-budget', `${budget}B`,
      ],
    });
  });
  after(async () => {
    await server?.stop();
  });

  test('loading one unloads the least recently used idle one, and it reloads on demand', async () => {
    const first = await greedy(server, 'a', 32);
    let m = await models(server);
    assert.equal(m.a.status, 'loaded');
    assert.equal(m.b.status, 'unloaded');

    const b = await greedy(server, 'b', 32);
    m = await models(server);
    assert.equal(m.b.status, 'loaded');
    assert.equal(m.a.status, 'unloaded', 'a should have been unloaded to make room for b');

    assert.equal(await greedy(server, 'a', 32), first, 'a reloaded gives the same output');
    assert.equal(await greedy(server, 'b', 32), b);
    const meta = await getJson(`${server.url}/v1/metadata`);
    assert.equal(meta.body.memory_budget_bytes, budget);
    assert.ok(meta.body.resident_bytes <= budget, `resident ${meta.body.resident_bytes} > budget ${budget}`);
    const a = meta.body.models.find((x) => x.id === 'a');
    assert.equal(a.loads, 2);
    assert.equal(a.unloads, 2);
    assert.match(server.log(), /model 'a' .* ready in/);
    // Readiness is about the server, not about which model happens to be resident.
    assert.equal((await getJson(`${server.url}/v1/health/ready`)).status, 200);
  });

  test('alternating concurrent requests all complete', async () => {
    const jobs = [];
    for (let i = 0; i < 8; i++) {
      jobs.push(greedy(server, i % 2 ? 'a' : 'b', 16));
    }
    const outs = await Promise.all(jobs);
    assert.equal(outs.length, 8);
    for (let i = 2; i < 8; i++) {
      assert.equal(outs[i], outs[i - 2]);
    }
  });
});

describe('a broken model fails its own requests; the others keep serving', () => {
  let dir;
  let server;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-multi-'));
    const src = fs.readFileSync(modelPath(MODELS.plain));
    fs.writeFileSync(path.join(dir, 'truncated.gguf'), src.subarray(0, 600_000));
    const corrupt = Buffer.from(src);
    corrupt.writeBigUInt64LE(1n << 60n, 8); // tensor count
    fs.writeFileSync(path.join(dir, 'corrupt.gguf'), corrupt);
    fs.copyFileSync(modelPath(MODELS.plain), path.join(dir, 'later.gguf')); // broken after start-up
    server = await startServer({
      model: null,
      args: [
        '--model', `good=${modelPath(MODELS.plain)}`,
        '--model', `truncated=${path.join(dir, 'truncated.gguf')}`,
        '--model', `corrupt=${path.join(dir, 'corrupt.gguf')}`,
        '--model', `later=${path.join(dir, 'later.gguf')}`,
      ],
    });
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('/v1/models shows the broken ones as failed, with the reason', async () => {
    const m = await models(server);
    assert.equal(m.good.status, 'loaded');
    assert.equal(m.truncated.status, 'failed');
    assert.match(m.truncated.error, /truncated\.gguf/);
    assert.equal(m.corrupt.status, 'failed');
    assert.match(m.corrupt.error, /corrupt\.gguf/);
    assert.equal(m.later.status, 'unloaded');
  });

  test('their requests get 503 model_load_failed naming the file; the good model answers', async () => {
    for (const id of ['truncated', 'corrupt']) {
      const res = await postJson(`${server.url}/v1/completions`, { model: id, prompt: ONCE, max_tokens: 4 });
      const err = assertErrorShape(res, 503);
      assert.equal(err.code, 'model_load_failed');
      assert.match(err.message, new RegExp(`'${id}'.*${id}\\.gguf`));
      assert.doesNotMatch(err.message, new RegExp(dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 'no absolute path');
    }
    assert.equal(await greedy(server, 'good'), GREEDY_64);
    assert.equal((await getJson(`${server.url}/v1/health/ready`)).status, 200);
  });

  test('a file that breaks after start-up is refused at load, cleanly', async () => {
    const file = path.join(dir, 'later.gguf');
    fs.truncateSync(file, 5000);
    const res = await postJson(`${server.url}/v1/completions`, { model: 'later', prompt: ONCE, max_tokens: 4 });
    const err = assertErrorShape(res, 503);
    assert.equal(err.code, 'model_load_failed');
    assert.match(err.message, /later\.gguf/);
    assert.equal((await models(server)).later.status, 'failed');
    assert.equal(await greedy(server, 'good'), GREEDY_64);
    assert.equal(server.exitInfo, null);
  });
});

describe('models from the config file', () => {
  let dir;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-multi-config-'));
    fs.writeFileSync(
      path.join(dir, 'config.yaml'),
      `serve:\n  model: [a=${modelPath(MODELS.plain)}, b=${modelPath(Q8)}]\n  memory-budget: off\n`,
    );
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('serve.model as a list hosts every entry', async () => {
    const server = await startServer({ model: null, args: ['--config', path.join(dir, 'config.yaml')] });
    try {
      assert.deepEqual(Object.keys(await models(server)), ['a', 'b']);
      const text = await greedy(server, 'b', 8);
      assert.equal(text, GREEDY_64.slice(0, text.length));
    } finally {
      await server.stop();
    }
  });

  test('serve MODEL serves that one model instead of the configured ones', async () => {
    const server = await startServer({
      model: null,
      args: ['--config', path.join(dir, 'config.yaml'), modelPath(MODELS.chatml)],
    });
    try {
      assert.deepEqual(Object.keys(await models(server)), ['stories260K-chatml']);
      assert.match(server.log(), /MODEL replaces the 2 model\(s\)/);
    } finally {
      await server.stop();
    }
  });
});

describe('serve refuses bad multi-model settings before listening', () => {
  const run = (args) =>
    spawnSync(serverBinary(), ['serve', '--port', '0', ...args], { encoding: 'utf8', timeout: 30_000 });

  test('two models with one id', () => {
    const r = run(['--model', modelPath(MODELS.plain), '--model', modelPath(MODELS.plain)]);
    assert.equal(r.status, 1, r.stderr + r.stdout);
    assert.match(r.stderr + r.stdout, /two models have the id 'stories260K'/);
  });

  test('a memory budget that is not a size', () => {
    const r = run(['--model', modelPath(MODELS.plain), '--memory-budget', 'lots']);
    assert.equal(r.status, 1, r.stderr + r.stdout);
    assert.match(r.stderr + r.stdout, /--memory-budget 'lots' is not a size/);
  });

  test('a budget smaller than the default model', async () => {
    const r = run(['--model', modelPath(MODELS.plain), '--memory-budget', '1KiB']);
    assert.equal(r.status, 1, r.stderr + r.stdout);
    assert.match(r.stderr + r.stdout, /more than the whole memory budget/);
  });
});
