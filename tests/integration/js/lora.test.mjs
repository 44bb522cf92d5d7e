// Multi-LoRA serving: an adapter folder (--lora-dir) whose adapters are model ids of their own,
// served concurrently with the base model, with KV never shared across adapters. The adapter is
// the real rank-64 "Tom and Max" LoRA for stories260K (../shared/models/README.md): at scale 1 its
// greedy story is about Tom and his dog Max, at scale 0 it is the base model's.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import {
  GREEDY_64,
  MODELS,
  ONCE,
  assertErrorShape,
  assertHealthy,
  getJson,
  modelPath,
  openaiClient,
  postJson,
  postStream,
  useServer,
} from './harness.mjs';

const ADAPTER = 'stories260K-lora-tom-max-r64.gguf';
const TOM_PREFIX = ', there was a boy named Tom. He loved his dog Max';

// The adapter folder, made before the servers start (their arguments name it): the adapter as a
// file, a copy in a folder of its own, and entries that must be skipped with a warning.
const loraDir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-lora-'));
fs.copyFileSync(modelPath(ADAPTER), path.join(loraDir, 'tom.gguf'));
fs.mkdirSync(path.join(loraDir, 'tom-folder'));
fs.copyFileSync(modelPath(ADAPTER), path.join(loraDir, 'tom-folder', 'adapter.gguf'));
fs.writeFileSync(path.join(loraDir, 'broken.gguf'), 'GGUF but not really');
fs.symlinkSync(modelPath(ADAPTER), path.join(loraDir, 'outside.gguf')); // resolves outside the folder
fs.copyFileSync(modelPath(MODELS.plain), path.join(loraDir, 'not-an-adapter.gguf')); // a model, not a LoRA
after(() => fs.rmSync(loraDir, { recursive: true, force: true }));

async function complete(server, model, extra = {}) {
  const res = await postJson(`${server.url}/v1/completions`, {
    model,
    prompt: ONCE,
    max_tokens: 24,
    temperature: 0,
    ...extra,
  });
  assert.equal(res.status, 200, res.text);
  return res.body;
}

describe('LoRA adapters (--lora-dir, --parallel 4)', () => {
  const ctx = useServer({ model: MODELS.plain, parallel: 4, args: ['--lora-dir', loraDir] });

  test('GET /v1/models lists each adapter with the base model as parent; bad entries are skipped and logged',
    ctx.wrap(async () => {
      const res = await getJson(`${ctx.server.url}/v1/models`);
      assert.equal(res.status, 200);
      const ids = res.body.data.map((m) => m.id);
      assert.deepEqual(ids, ['stories260K', 'tom', 'tom-folder']);
      for (const m of res.body.data.slice(1)) {
        assert.equal(m.parent, 'stories260K');
        assert.equal(m.root, 'stories260K');
        assert.equal(m.lora.file_bytes, fs.statSync(modelPath(ADAPTER)).size);
      }
      const log = ctx.server.log();
      assert.match(log, /LoRA adapter skipped: broken: /);
      assert.match(log, /LoRA adapter skipped: outside: resolves outside the adapter folder/);
      assert.match(log, /LoRA adapter skipped: not-an-adapter: not a LoRA adapter/);
      assert.doesNotMatch(log, new RegExp(loraDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + '.*skipped'));
    }));

  test('scale 1 changes the greedy output as the models README says; scale 0 equals the base model',
    ctx.wrap(async () => {
      const base = await complete(ctx.server, 'stories260K');
      assert.ok(GREEDY_64.startsWith(base.choices[0].text), base.choices[0].text);
      const tom = await complete(ctx.server, 'tom');
      assert.equal(tom.model, 'tom');
      assert.ok(tom.choices[0].text.startsWith(TOM_PREFIX), tom.choices[0].text);
      const zero = await complete(ctx.server, 'tom', { lora_scale: 0 });
      assert.equal(zero.choices[0].text, base.choices[0].text);
      const folder = await complete(ctx.server, 'tom-folder');
      assert.equal(folder.choices[0].text, tom.choices[0].text);
    }));

  test('KV never crosses adapters: the same prompt is recomputed under another adapter or scale, reused under its own',
    ctx.wrap(async () => {
      const prompt = `${ONCE}, in a land far away, a girl and a boy lived next to a big forest`;
      const run = async (model, extra = {}) => (await complete(ctx.server, model, { prompt, max_tokens: 4, ...extra }))
        .usage.prompt_tokens_details.cached_tokens;
      const base1 = await run('stories260K');
      assert.equal(await run('tom', { lora_scale: 0.5 }), 0, 'an adapter reused KV computed without it');
      assert.equal(await run('tom', { lora_scale: 0.75 }), 0, 'a scale reused KV computed at another scale');
      assert.ok(await run('tom', { lora_scale: 0.75 }) > 0, 'the adapter at its own scale reuses its prefix');
      assert.ok(await run('stories260K') > base1, 'the base model reuses its own prefix');
    }));

  test('mixed concurrent base and adapter requests, plain and streaming, each equal their sequential output',
    ctx.wrap(async () => {
      const models = ['stories260K', 'tom', 'tom-folder', 'stories260K', 'tom', 'stories260K', 'tom', 'tom-folder'];
      const prompts = models.map((_, i) => `${ONCE} ${['Tom', 'Lily', 'the dog', 'a bird'][i % 4]}`);
      const sequential = [];
      for (let i = 0; i < models.length; ++i) {
        sequential.push((await complete(ctx.server, models[i], { prompt: prompts[i], max_tokens: 32 })).choices[0].text);
      }
      const concurrent = await Promise.all(models.map(async (model, i) => {
        const body = { model, prompt: prompts[i], max_tokens: 32, temperature: 0 };
        if (i % 2 === 0) {
          return (await complete(ctx.server, model, { prompt: prompts[i], max_tokens: 32 })).choices[0].text;
        }
        const s = await postStream(`${ctx.server.url}/v1/completions`, { ...body, stream: true });
        assert.equal(s.status, 200, s.text);
        assert.equal(s.events.at(-1), '[DONE]');
        for (const c of s.chunks) {
          assert.equal(c.model, model);
        }
        return s.chunks.map((c) => c.choices[0]?.text ?? '').join('');
      }));
      assert.deepEqual(concurrent, sequential);
      assert.notEqual(sequential[0], sequential[1], 'base and adapter gave the same text: the adapter did nothing');
    }));

  test('lora_requests_info tells an endpoint picker which adapters run (Gateway API Inference Extension)',
    ctx.wrap(async () => {
      const info = async () => {
        const text = (await getJson(`${ctx.server.url}/metrics`)).text;
        const m = text.match(/^lora_requests_info\{([^}]*)\} (\S+)$/m);
        assert.ok(m, `no lora_requests_info series:\n${text.slice(0, 2000)}`);
        return { labels: Object.fromEntries([...m[1].matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]])),
          value: Number(m[2]) };
      };
      const url = `${ctx.server.url}/v1/completions`;
      // While an adapter's stream runs, the adapter is listed as running.
      let seen = null;
      let finished = false;
      const during = postJson(url, { model: 'tom', prompt: 'Once upon a time', max_tokens: 300, ignore_eos: true })
        .finally(() => { finished = true; });
      // Polled for as long as the stream runs (not a fixed count: on a loaded machine the request
      // may wait for a slot or its adapter before it runs).
      while (!seen && !finished) {
        const x = await info();
        if (x.labels.running_lora_adapters === 'tom') {
          seen = x;
        }
      }
      await during;
      assert.ok(seen, 'the running adapter was never listed');
      assert.match(seen.labels.max_lora, /^[1-9]\d*$/);
      assert.equal(seen.labels.waiting_lora_adapters, '');
      assert.ok(seen.value > 1.7e9, 'the value is the time of the last change (unix seconds)');
      const after = await info();
      assert.equal(after.labels.running_lora_adapters, '', 'finished: nothing running');
    }));

  test('the official OpenAI SDK lists and uses an adapter unmodified', ctx.wrap(async () => {
    const client = openaiClient(ctx.server);
    const ids = [];
    for await (const m of client.models.list()) {
      ids.push(m.id);
    }
    assert.ok(ids.includes('tom'), JSON.stringify(ids));
    const r = await client.completions.create({ model: 'tom', prompt: ONCE, max_tokens: 24, temperature: 0 });
    assert.equal(r.model, 'tom');
    assert.ok(r.choices[0].text.startsWith(TOM_PREFIX), r.choices[0].text);
  }));

  test('errors: an unknown model names the adapters, lora_scale on the base model or out of range is a 400',
    ctx.wrap(async () => {
      const unknown = await postJson(`${ctx.server.url}/v1/completions`, { model: 'jerry', prompt: ONCE });
      assertErrorShape(unknown, 404);
      assert.match(unknown.body.error.message, /'jerry' does not exist.*LoRA adapters/);
      const onBase = await postJson(`${ctx.server.url}/v1/completions`,
        { model: 'stories260K', prompt: ONCE, lora_scale: 1 });
      assertErrorShape(onBase, 400);
      assert.equal(onBase.body.error.param, 'lora_scale');
      const range = await postJson(`${ctx.server.url}/v1/completions`, { model: 'tom', prompt: ONCE, lora_scale: 5 });
      assertErrorShape(range, 400);
      assert.match(range.body.error.message, /lora_scale must be .*between 0 and 4/);
      const traversal = await postJson(`${ctx.server.url}/v1/completions`, { model: '../tom', prompt: ONCE });
      assertErrorShape(traversal, 404);
      await assertHealthy(ctx.server);
    }));

  test('an adapter added to the folder while serving is found on its first request (rescan on demand)',
    ctx.wrap(async () => {
      fs.copyFileSync(modelPath(ADAPTER), path.join(loraDir, 'tom-late.gguf'));
      await new Promise((r) => setTimeout(r, 1100)); // rescans are at most one a second
      const r = await complete(ctx.server, 'tom-late');
      assert.ok(r.choices[0].text.startsWith(TOM_PREFIX), r.choices[0].text);
      const models = await getJson(`${ctx.server.url}/v1/models`);
      assert.ok(models.body.data.some((m) => m.id === 'tom-late'));
    }));
});

describe('LoRA adapters past --max-loras 1', () => {
  const ctx = useServer({ model: MODELS.plain, args: ['--lora-dir', loraDir, '--max-loras', '1'] });

  test('the least recently used idle adapter unloads to make room; both keep answering correctly',
    ctx.wrap(async () => {
      const first = (await complete(ctx.server, 'tom')).choices[0].text;
      const second = (await complete(ctx.server, 'tom-folder')).choices[0].text;
      const again = (await complete(ctx.server, 'tom')).choices[0].text;
      assert.ok(first.startsWith(TOM_PREFIX), first);
      assert.equal(second, first);
      assert.equal(again, first);
      const unloads = ctx.server.log().match(/unloading LoRA adapter/g) ?? [];
      assert.equal(unloads.length, 2, ctx.server.log());
    }));
});
