// Speculative decoding: a draft model (--draft-model) and prompt lookup (--draft-ngram) guess
// tokens that the served model verifies in one batched decode. The guesses must never change the
// output: greedy text, logprobs, stop strings and max_tokens come out exactly as without drafting.
// stories260K-Q8_0.gguf is the quantized stories260K: its greedy guesses are nearly always right
// (../shared/models/README.md), so acceptance is high and the metrics show it.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  GREEDY_64,
  MODELS,
  ONCE,
  assertErrorShape,
  assertHealthy,
  freePort,
  modelPath,
  openaiClient,
  postJson,
  serverBinary,
  startServer,
  useServer,
} from './harness.mjs';

const DRAFT = 'stories260K-Q8_0.gguf';
const PROMPTS = [ONCE, 'Tom and Lily', 'The dog ran to the park and', 'One day, a little bird', 'She said'];

async function complete(server, prompt, extra = {}) {
  const res = await postJson(`${server.url}/v1/completions`, {
    prompt,
    max_tokens: 120,
    temperature: 0,
    ...extra,
  });
  assert.equal(res.status, 200, res.text);
  return res.body;
}

async function specCounters(server) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const value = (name) => {
    const line = text.split('\n').find((l) => l.startsWith(`${name}{`));
    assert.ok(line, `${name} is missing from /metrics`);
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  };
  return {
    drafts: value('spec_decode_num_drafts_total'),
    draftTokens: value('spec_decode_num_draft_tokens_total'),
    accepted: value('spec_decode_num_accepted_tokens_total'),
  };
}

// The reference: the same model served without drafting.
let plain;
const reference = new Map();
before(async () => {
  plain = await startServer({ model: MODELS.plain, parallel: 4 });
  for (const p of PROMPTS) {
    reference.set(p, (await complete(plain, p)).choices[0].text);
  }
});
after(async () => {
  await plain?.stop();
});

describe('speculative decoding with a draft model (--draft-model stories260K-Q8_0.gguf)', () => {
  // --draft-max-batch 4: draft under concurrency too (the default drafts for a lone sequence only).
  const ctx = useServer({ model: MODELS.plain, parallel: 4, args: ['--draft-model', modelPath(DRAFT), '--draft-max-batch', 4] });

  test('greedy output equals the output without drafting, and the drafts are accepted', ctx.wrap(async () => {
    const before = await specCounters(ctx.server);
    for (const p of PROMPTS) {
      const body = await complete(ctx.server, p);
      assert.equal(body.choices[0].text, reference.get(p), `prompt ${JSON.stringify(p)}`);
      assert.equal(body.usage.completion_tokens, 120);
    }
    const after = await specCounters(ctx.server);
    const drafted = after.draftTokens - before.draftTokens;
    const accepted = after.accepted - before.accepted;
    assert.ok(after.drafts > before.drafts, 'no step carried a draft');
    assert.ok(drafted >= 100, `only ${drafted} tokens were drafted for 600 generated`);
    assert.ok(accepted <= drafted);
    assert.ok(accepted / drafted > 0.9, `acceptance ${accepted}/${drafted}: the Q8_0 draft should nearly always agree`);
    assert.equal((await complete(ctx.server, ONCE, { max_tokens: 64 })).choices[0].text, GREEDY_64);
  }));

  test('the draft model counts in the memory estimate (/v1/models memory_bytes)', ctx.wrap(async () => {
    const bytes = async (server) => {
      const res = await fetch(`${server.url}/v1/models`);
      assert.equal(res.status, 200);
      return (await res.json()).data[0].memory_bytes;
    };
    // The draft's own estimate for the served model's settings: 4 slots of its 512 tokens, the
    // same attention (what `inferbox profiles` estimates for a custom configuration).
    const out = spawnSync(serverBinary(), ['profiles', '--model', modelPath(DRAFT), '--json', '--parallel', '4',
      '--ctx-size', '512'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(out.status, 0, out.stderr);
    const draft = JSON.parse(out.stdout).profiles.find((p) => p.name === 'custom');
    assert.ok(draft.memory.total > 0);
    assert.equal(await bytes(ctx.server), (await bytes(plain)) + draft.memory.total);
    assert.match(ctx.server.log(), /memory estimate: \d+ MiB \(weights \d+, KV \d+, compute \d+, draft model \d+\)/);
  }));

  test('concurrent requests each get exactly their sequential output', ctx.wrap(async () => {
    const prompts = [...PROMPTS, ...PROMPTS].slice(0, 8);
    const before = await specCounters(ctx.server);
    const bodies = await Promise.all(prompts.map((p) => complete(ctx.server, p)));
    bodies.forEach((b, i) => assert.equal(b.choices[0].text, reference.get(prompts[i]), `request ${i}`));
    const after = await specCounters(ctx.server);
    assert.ok(after.draftTokens - before.draftTokens >= 200, `${after.draftTokens - before.draftTokens} drafted tokens`);
  }));

  test('stop strings and max_tokens cut inside a drafted run exactly as without drafting', ctx.wrap(async () => {
    for (const max_tokens of [1, 2, 7, 33]) {
      const got = await complete(ctx.server, ONCE, { max_tokens });
      const want = await complete(plain, ONCE, { max_tokens });
      assert.equal(got.choices[0].text, want.choices[0].text, `max_tokens ${max_tokens}`);
      assert.equal(got.usage.completion_tokens, max_tokens);
      assert.equal(got.choices[0].finish_reason, 'length');
    }
    const stop = { stop: ['park'] };
    const got = await complete(ctx.server, ONCE, stop);
    const want = await complete(plain, ONCE, stop);
    assert.equal(got.choices[0].text, want.choices[0].text);
    assert.equal(got.choices[0].finish_reason, 'stop');
    assert.equal(got.usage.completion_tokens, want.usage.completion_tokens);
  }));

  test('logprobs of drafted tokens equal those computed one token at a time', ctx.wrap(async () => {
    const extra = { max_tokens: 40, logprobs: 3 };
    const got = (await complete(ctx.server, ONCE, extra)).choices[0].logprobs;
    const want = (await complete(plain, ONCE, extra)).choices[0].logprobs;
    assert.deepEqual(got.tokens, want.tokens);
    got.token_logprobs.forEach((lp, i) => assert.ok(Math.abs(lp - want.token_logprobs[i]) < 1e-3, `token ${i}: ${lp} vs ${want.token_logprobs[i]}`));
  }));

  test('output under a JSON schema (grammar) equals the output without drafting', ctx.wrap(async () => {
    const extra = {
      max_tokens: 80,
      response_format: {
        type: 'json_schema',
        json_schema: { name: 'x', schema: { type: 'object', properties: { name: { type: 'string' }, n: { type: 'integer' } }, required: ['name', 'n'] } },
      },
    };
    const got = await complete(ctx.server, ONCE, extra);
    const want = await complete(plain, ONCE, extra);
    assert.equal(got.choices[0].text, want.choices[0].text);
    assert.equal(got.choices[0].finish_reason, want.choices[0].finish_reason);
  }));

  test('streaming through the OpenAI SDK gives the same text', ctx.wrap(async () => {
    const client = openaiClient(ctx.server);
    const stream = await client.completions.create({ model: 'stories260K', prompt: ONCE, max_tokens: 120, temperature: 0, stream: true });
    let text = '';
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? '';
    }
    assert.equal(text, reference.get(ONCE));
  }));

  test('"speculative": false opts a request out; a non-boolean is a 400 naming it', ctx.wrap(async () => {
    const before = await specCounters(ctx.server);
    const body = await complete(ctx.server, ONCE, { speculative: false });
    assert.equal(body.choices[0].text, reference.get(ONCE));
    const after = await specCounters(ctx.server);
    assert.equal(after.drafts, before.drafts, 'an opted-out request was drafted for');
    const bad = await postJson(`${ctx.server.url}/v1/completions`, { prompt: ONCE, speculative: 'yes' });
    assertErrorShape(bad, 400);
    assert.equal(bad.body.error.param, 'speculative');
    await assertHealthy(ctx.server);
  }));

  test('sampled output (temperature 1) stays valid and the server stays healthy', ctx.wrap(async () => {
    const body = await complete(ctx.server, ONCE, { temperature: 1, seed: 7, max_tokens: 80 });
    assert.equal(body.usage.completion_tokens, 80);
    assert.ok(body.choices[0].text.length > 0);
    await assertHealthy(ctx.server);
  }));
});

describe('speculative decoding from prompt lookup (--draft-ngram)', () => {
  const ctx = useServer({ model: MODELS.plain, parallel: 4, args: ['--draft-ngram', '--draft-max', '6'] });

  test('greedy output equals the output without drafting', ctx.wrap(async () => {
    for (const p of PROMPTS) {
      assert.equal((await complete(ctx.server, p)).choices[0].text, reference.get(p), `prompt ${JSON.stringify(p)}`);
    }
  }));

  test('a prompt that the output repeats is drafted from and accepted', ctx.wrap(async () => {
    // Greedy text continued from a copy of itself: the model says again what the prompt says, so
    // lookup guesses right. The prompt starts unlike any earlier one: a prompt computed partly
    // from the prefix cache is computed in other batch shapes, and this story has a near tie that
    // floating-point rounding in another shape can flip, drafting or not.
    const story = reference.get(ONCE);
    const prompt = `Story: ${ONCE}${story}\n\n${ONCE}`;
    const before = await specCounters(ctx.server);
    const got = await complete(ctx.server, prompt, { max_tokens: 60 });
    const want = await complete(plain, prompt, { max_tokens: 60 });
    assert.equal(got.choices[0].text, want.choices[0].text);
    const after = await specCounters(ctx.server);
    assert.ok(after.accepted - before.accepted >= 20, `accepted ${after.accepted - before.accepted} of ${after.draftTokens - before.draftTokens}`);
  }));
});

describe('speculative decoding: a draft model that cannot work is refused at start', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-draft-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('a file that is not a model: serve exits 1 naming it', async () => {
    const bad = path.join(dir, 'draft.gguf');
    fs.writeFileSync(bad, 'GGUF and nothing else');
    const port = await freePort();
    const res = spawnSync(serverBinary(), ['serve', '--model', modelPath(MODELS.plain), '--draft-model', bad, '--port', String(port)], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(res.status, 1, res.stderr + res.stdout);
    assert.match(res.stderr + res.stdout, /draft\.gguf/);
  });

  test('a draft model that does not fit beside the model: exit 1 with both sizes and a context that fits both',
    async () => {
      // 64 slots of 1M tokens fit neither model here; the suggested --ctx-size must leave room for
      // the draft's KV and compute too, about half of what the model alone could have.
      const refuse = (extra) => {
        const res = spawnSync(serverBinary(), ['serve', '--model', modelPath(MODELS.plain), ...extra, '--parallel', '64',
          '--ctx-size', '1048576', '--port', '0'], { encoding: 'utf8', timeout: 30_000 });
        assert.equal(res.status, 1, res.stderr + res.stdout);
        const m = (res.stderr + res.stdout).match(/needs about (\d+) MiB(?: \((\d+) MiB of it for the draft model\))? but \d+ MiB are available; try --ctx-size (\d+)/);
        assert.ok(m, res.stderr + res.stdout);
        return { total: Number(m[1]), draft: m[2] === undefined ? null : Number(m[2]), ctx: Number(m[3]) };
      };
      const alone = refuse([]);
      const both = refuse(['--draft-model', modelPath(DRAFT)]);
      assert.equal(alone.draft, null);
      assert.ok(both.draft > 0.4 * both.total && both.draft < 0.6 * both.total, JSON.stringify(both));
      assert.ok(both.ctx > 0.4 * alone.ctx && both.ctx < 0.6 * alone.ctx, `${both.ctx} vs ${alone.ctx} alone`);
    });

  test('a missing file: serve exits 1 naming it', async () => {
    const port = await freePort();
    const res = spawnSync(serverBinary(), ['serve', '--model', modelPath(MODELS.plain), '--draft-model', path.join(dir, 'none.gguf'), '--port', String(port)], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(res.status, 1, res.stderr + res.stdout);
    assert.match(res.stderr + res.stdout, /none\.gguf/);
  });
});
