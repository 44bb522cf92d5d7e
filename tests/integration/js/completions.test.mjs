// /v1/completions over plain fetch against stories260K.gguf: the greedy reference output,
// streaming, stop strings, concurrency and seeded sampling.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import {
  GREEDY_64,
  MODELS,
  ONCE,
  ONCE_PROMPT_IDS,
  ONCE_PROMPT_TOKENS,
  README_REFERENCE,
  modelId,
  postJson,
  postStream,
  useServer,
} from './harness.mjs';

// A server for one describe block, and complete(body): POST /v1/completions with the served model,
// expecting 200. `api.model` and `api.url` are set once the server is up.
function useCompletions(options) {
  const ctx = useServer(options);
  const api = { ctx, model: null, url: null };
  before(async () => {
    api.model = await modelId(ctx.server);
    api.url = `${ctx.server.url}/v1/completions`;
  });
  api.complete = async (body) => {
    const res = await postJson(api.url, { model: api.model, ...body });
    assert.equal(res.status, 200, `POST /v1/completions ${JSON.stringify(body)}: ${res.status} ${res.text}`);
    return res.body;
  };
  return api;
}

// Eight different greedy prompts, one after another and then all at once: the texts, finish
// reasons and token counts must not depend on what else is in the batch. Returns the sequential
// responses.
const STARTS = ['Once upon a time', 'Tom had a red ball', 'The sun was shining', 'Lily and her mom went',
  'One day, a little bird', 'The dog was very happy', 'Sam wanted to play', 'There was a big tree'];
async function concurrentEqualsSequential(complete) {
  const req = (prompt) => ({ prompt, max_tokens: 48, temperature: 0 });
  const sequential = [];
  for (const p of STARTS) {
    sequential.push(await complete(req(p)));
  }
  const concurrent = await Promise.all(STARTS.map((p) => complete(req(p))));
  const texts = new Set(sequential.map((b) => b.choices[0].text));
  assert.ok(texts.size > 1, 'different prompts should give different texts');
  for (let i = 0; i < STARTS.length; i++) {
    assert.equal(
      concurrent[i].choices[0].text,
      sequential[i].choices[0].text,
      `prompt ${JSON.stringify(STARTS[i])}: concurrent output differs from sequential`,
    );
    assert.equal(concurrent[i].choices[0].finish_reason, sequential[i].choices[0].finish_reason);
    // (cached_tokens may differ: which prompt prefixes are cached depends on the order.)
    const counts = ({ prompt_tokens, completion_tokens, total_tokens }) => ({ prompt_tokens, completion_tokens, total_tokens });
    assert.deepEqual(counts(concurrent[i].usage), counts(sequential[i].usage));
  }
  return sequential;
}

describe('completions (stories260K.gguf, --parallel 4)', () => {
  const api = useCompletions({ model: MODELS.plain, parallel: 4, args: ['--ctx-size', 512] });
  const { ctx, complete } = api;

  const stream = async (body) => {
    const res = await postStream(api.url, { model: api.model, ...body, stream: true });
    assert.equal(res.status, 200, `streaming POST /v1/completions ${JSON.stringify(body)}: ${res.status} ${res.text}`);
    assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
    assert.equal(res.events.at(-1), '[DONE]', `stream does not end with data: [DONE]:\n${res.text}`);
    assert.equal(res.events.filter((e) => e === '[DONE]').length, 1, 'more than one [DONE]');
    return res;
  };

  const streamedText = (chunks) =>
    chunks.flatMap((c) => c.choices.filter((ch) => ch.index === 0).map((ch) => ch.text ?? '')).join('');

  test('greedy completion of "Once upon a time" reproduces the README reference (57 tokens)', ctx.wrap(async () => {
    // The README's line is the first 57 generated tokens; the 58th is "\n" (not shown there).
    for (const maxTokens of [57, 58]) {
      const body = await complete({ prompt: ONCE, max_tokens: maxTokens, temperature: 0 });
      assert.equal(body.choices.length, 1);
      assert.equal((ONCE + body.choices[0].text).trim(), README_REFERENCE.trim(), `max_tokens ${maxTokens}`);
      assert.equal(body.choices[0].finish_reason, 'length');
      assert.equal(body.usage.completion_tokens, maxTokens);
    }
  }));

  test('greedy completion, max_tokens 64: exact text, finish_reason, usage', ctx.wrap(async () => {
    const body = await complete({ prompt: ONCE, max_tokens: 64, temperature: 0 });
    assert.equal(body.object, 'text_completion');
    assert.equal(typeof body.id, 'string');
    assert.ok(Number.isInteger(body.created), `created: ${body.created}`);
    assert.equal(body.model, api.model);
    assert.equal(body.choices.length, 1);
    const choice = body.choices[0];
    assert.equal(choice.index, 0);
    // The reference line comes first, then the model goes on for 5 more tokens.
    assert.ok(
      (ONCE + choice.text).trim().startsWith(README_REFERENCE.trim()),
      `prompt + text does not start with the README reference:\n${JSON.stringify(ONCE + choice.text)}`,
    );
    assert.equal(choice.text, GREEDY_64);
    assert.equal(choice.finish_reason, 'length');
    assert.equal(body.usage.completion_tokens, 64);
    assert.ok(body.usage.prompt_tokens > 0, `prompt_tokens: ${body.usage.prompt_tokens}`);
    // BOS + 4 tokens, as llama.cpp's tokenizer counts them.
    assert.equal(body.usage.prompt_tokens, ONCE_PROMPT_TOKENS);
    assert.equal(body.usage.total_tokens, body.usage.prompt_tokens + body.usage.completion_tokens);
  }));

  test('prompt_tokens agrees with echo and with the same prompt given as token ids', ctx.wrap(async () => {
    const echoed = await complete({ prompt: ONCE, max_tokens: 64, temperature: 0, echo: true });
    assert.equal(echoed.choices[0].text, ONCE + GREEDY_64);
    assert.equal(echoed.usage.prompt_tokens, ONCE_PROMPT_TOKENS);
    // BOS, " Once", " upon", " a", " time" as llama.cpp's tokenizer gives them; token-id prompts
    // are taken as they are (no second BOS).
    const ids = await complete({ prompt: ONCE_PROMPT_IDS, max_tokens: 64, temperature: 0 });
    assert.equal(ids.choices[0].text, GREEDY_64);
    assert.equal(ids.usage.prompt_tokens, ONCE_PROMPT_IDS.length);
  }));

  test('echo with logprobs: text_offset indexes the returned text, which starts with the prompt', ctx.wrap(async () => {
    const body = await complete({ prompt: ONCE, max_tokens: 12, temperature: 0, echo: true, logprobs: 1 });
    const { text } = body.choices[0];
    const lp = body.choices[0].logprobs;
    assert.equal(lp.text_offset[0], ONCE.length);
    assert.equal(lp.tokens.length, 12);
    for (let i = 0; i < lp.tokens.length; i++) {
      assert.equal(text.slice(lp.text_offset[i], lp.text_offset[i] + lp.tokens[i].length), lp.tokens[i], `token ${i}`);
    }
  }));

  test('the prompt may be given as a one-element array', ctx.wrap(async () => {
    const body = await complete({ prompt: [ONCE], max_tokens: 64, temperature: 0 });
    assert.equal(body.choices.length, 1);
    assert.equal(body.choices[0].text, GREEDY_64);
  }));

  test('streaming equals non-streaming and ends with [DONE]', ctx.wrap(async () => {
    const plain = await complete({ prompt: ONCE, max_tokens: 64, temperature: 0 });
    const res = await stream({ prompt: ONCE, max_tokens: 64, temperature: 0 });
    assert.ok(res.chunks.length > 1, `expected several chunks, got ${res.chunks.length}`);
    for (const c of res.chunks) {
      assert.equal(c.object, 'text_completion', `chunk object: ${JSON.stringify(c)}`);
      assert.equal(c.model, api.model);
      assert.ok(!c.usage, `usage without stream_options.include_usage: ${JSON.stringify(c)}`);
    }
    assert.equal(streamedText(res.chunks), plain.choices[0].text);
    const finishes = res.chunks.flatMap((c) => c.choices.map((ch) => ch.finish_reason)).filter((f) => f != null);
    assert.deepEqual(finishes, ['length'], 'exactly one finish_reason, on the last choice chunk');
    const last = res.chunks.at(-1);
    assert.equal(last.choices[0].finish_reason, 'length');
    const ids = new Set(res.chunks.map((c) => c.id));
    assert.equal(ids.size, 1, 'all chunks share one id');
  }));

  test('stream_options.include_usage: last chunk before [DONE] has choices [] and usage', ctx.wrap(async () => {
    const res = await stream({
      prompt: ONCE,
      max_tokens: 64,
      temperature: 0,
      stream_options: { include_usage: true },
    });
    const last = res.chunks.at(-1);
    assert.deepEqual(last.choices, [], `last chunk: ${JSON.stringify(last)}`);
    assert.deepEqual(
      {
        prompt_tokens: last.usage?.prompt_tokens,
        completion_tokens: last.usage?.completion_tokens,
        total_tokens: last.usage?.total_tokens,
      },
      { prompt_tokens: ONCE_PROMPT_TOKENS, completion_tokens: 64, total_tokens: ONCE_PROMPT_TOKENS + 64 },
    );
    for (const c of res.chunks.slice(0, -1)) {
      assert.ok(c.usage == null, `usage on a chunk before the last: ${JSON.stringify(c)}`);
    }
    assert.equal(streamedText(res.chunks), GREEDY_64);
  }));

  test('stop string "named": text ends right before it, finish_reason stop', ctx.wrap(async () => {
    const expected = GREEDY_64.slice(0, GREEDY_64.indexOf('named'));
    assert.equal(expected, ', there was a little girl ');
    const plain = await complete({ prompt: ONCE, max_tokens: 64, temperature: 0, stop: ['named'] });
    assert.equal(plain.choices[0].text, expected);
    assert.equal(plain.choices[0].finish_reason, 'stop');

    const res = await stream({ prompt: ONCE, max_tokens: 64, temperature: 0, stop: ['named'] });
    const text = streamedText(res.chunks);
    assert.equal(text, plain.choices[0].text);
    assert.ok(!text.includes('named'), 'streamed text contains the stop string');
    assert.equal(res.chunks.at(-1).choices[0].finish_reason, 'stop');
  }));

  test('stop given as a plain string, spanning several tokens', ctx.wrap(async () => {
    const stop = 'park. One';
    const expected = GREEDY_64.slice(0, GREEDY_64.indexOf(stop));
    const plain = await complete({ prompt: ONCE, max_tokens: 64, temperature: 0, stop });
    assert.equal(plain.choices[0].text, expected);
    assert.equal(plain.choices[0].finish_reason, 'stop');
    const res = await stream({ prompt: ONCE, max_tokens: 64, temperature: 0, stop });
    assert.equal(streamedText(res.chunks), expected);
  }));

  test('the earliest of several stop strings wins', ctx.wrap(async () => {
    const stops = ['red ball', 'Lily.', 'never there'];
    const expected = GREEDY_64.slice(0, GREEDY_64.indexOf('Lily.'));
    const plain = await complete({ prompt: ONCE, max_tokens: 64, temperature: 0, stop: stops });
    assert.equal(plain.choices[0].text, expected);
    assert.equal(plain.choices[0].finish_reason, 'stop');
  }));

  test('a stop string that only partly matches releases the held-back text', ctx.wrap(async () => {
    // "girl namex" matches up to "girl name" and then fails: nothing may be lost or duplicated.
    const stop = ['girl namex', 'too highX'];
    const plain = await complete({ prompt: ONCE, max_tokens: 64, temperature: 0, stop });
    assert.equal(plain.choices[0].text, GREEDY_64);
    assert.equal(plain.choices[0].finish_reason, 'length');
    const res = await stream({ prompt: ONCE, max_tokens: 64, temperature: 0, stop });
    assert.equal(streamedText(res.chunks), GREEDY_64);
    assert.equal(res.chunks.at(-1).choices[0].finish_reason, 'length');
  }));

  test('8 concurrent greedy requests equal their sequential outputs', ctx.wrap(async () => {
    const sequential = await concurrentEqualsSequential(complete);
    assert.equal(sequential[0].choices[0].text, GREEDY_64.slice(0, sequential[0].choices[0].text.length));
  }));

  test('8 concurrent streaming requests equal their sequential outputs', ctx.wrap(async () => {
    const prompts = STARTS;
    const req = (prompt) => ({ prompt, max_tokens: 48, temperature: 0 });
    const sequential = [];
    for (const p of prompts) {
      sequential.push((await complete(req(p))).choices[0].text);
    }
    const streamed = await Promise.all(prompts.map(async (p) => streamedText((await stream(req(p))).chunks)));
    assert.deepEqual(streamed, sequential);
  }));

  test('seed: temperature 0.9 with the same seed gives the same text', ctx.wrap(async () => {
    const req = { prompt: ONCE, max_tokens: 32, temperature: 0.9, seed: 1234, ignore_eos: true };
    const a = await complete(req);
    const b = await complete(req);
    assert.equal(a.choices[0].text, b.choices[0].text);
    // Sampling really happens: a few other seeds do not all give the same text as seed 1234.
    const others = await Promise.all([1, 2, 3, 4].map((seed) => complete({ ...req, seed })));
    const texts = new Set([a, ...others].map((r) => r.choices[0].text));
    assert.ok(texts.size > 1, 'five different seeds at temperature 0.9 all gave the same text');
  }));

  test('n: 2 returns two choices, index 0 and 1', ctx.wrap(async () => {
    const req = { prompt: ONCE, max_tokens: 32, temperature: 0.9, seed: 42, n: 2, ignore_eos: true };
    const a = await complete(req);
    assert.equal(a.choices.length, 2);
    assert.deepEqual(a.choices.map((c) => c.index).sort(), [0, 1]);
    for (const c of a.choices) {
      assert.equal(typeof c.text, 'string');
      assert.equal(c.finish_reason, 'length');
    }
    assert.equal(a.usage.prompt_tokens, ONCE_PROMPT_TOKENS);
    assert.equal(a.usage.completion_tokens, 64, 'usage counts the tokens of both choices');
    // Two independent samples, yet reproducible with the seed.
    const byIndex = (r) => [...r.choices].sort((x, y) => x.index - y.index).map((c) => c.text);
    assert.notEqual(byIndex(a)[0], byIndex(a)[1], 'the two choices are identical: not independent samples');
    const b = await complete(req);
    assert.deepEqual(byIndex(b), byIndex(a));
  }));

  test('n: 2 streaming: chunks carry both indices and match the non-streamed choices', ctx.wrap(async () => {
    const req = { prompt: ONCE, max_tokens: 32, temperature: 0.9, seed: 42, n: 2, ignore_eos: true };
    const plain = await complete(req);
    const res = await stream(req);
    const text = (i) =>
      res.chunks.flatMap((c) => c.choices.filter((ch) => ch.index === i).map((ch) => ch.text ?? '')).join('');
    const byIndex = [...plain.choices].sort((x, y) => x.index - y.index).map((c) => c.text);
    assert.deepEqual([text(0), text(1)], byIndex);
  }));
});

describe('a burst of costly prompts, one prompt per step (stories260K.gguf, --parallel 4, --prefill-step-ms 1)', () => {
  // A prompt of ~270 tokens costs the tiny model several milliseconds, past the 1 ms mark, so the
  // scheduler computes each prompt of a burst in its own step (scheduler.cpp). The engine logs
  // every llama.cpp batch at debug level, which shows the grouping; outputs must not depend on it.
  const { ctx, complete } = useCompletions({
    model: MODELS.plain,
    parallel: 4,
    // Without latency targets: an inter-token target replaces --prefill-chunk and --prefill-step-ms
    // while streams decode (docs/architecture.md), and serve would otherwise take the profile's.
    args: ['--ctx-size', 512, '--prefill-step-ms', 1, '--slo-itl-ms', 'off', '--slo-ttft-ms', 'off'],
    env: { INFERBOX_LOG_LEVEL: 'debug' },
  });
  const story = ' The little girl liked to play with her friends in the park, and every day they ran to the big tree.';
  const prompts = STARTS.map((s) => s + story.repeat(8));
  const req = (prompt) => ({ prompt, max_tokens: 24, temperature: 0 });

  test('each prompt of a burst gets its own step; outputs equal the sequential ones', ctx.wrap(async () => {
    // One request first, so the engine has measured what a prompt token costs.
    await complete(req('Kitty found a shiny stone under the bed and showed it to her brother, who laughed.'));
    const mark = ctx.server.mark();
    const concurrent = await Promise.all(prompts.map((p) => complete(req(p))));
    const batches = [...ctx.server.logSince(mark).matchAll(/prompt batch of (\d+) tokens \[slot:tokens ([^\]]*)\]/g)]
      .map((m) => m[2].split(' ').map((e) => Number(e.split(':')[1])));
    const whole = batches.filter((b) => b.some((n) => n >= 40));
    assert.equal(whole.length, prompts.length, `expected one prompt batch per prompt, got ${JSON.stringify(batches)}`);
    // A step may also finish the short tail of a prompt that an earlier step chunked (when a
    // stream was already decoding, --prefill-chunk cuts prompts at 256): that tail is under the
    // 1 ms mark. What must never happen is two costly prompt pieces in one step.
    for (const b of whole) {
      assert.equal(b.filter((n) => n >= 40).length, 1, `a prompt batch held several prompts: ${JSON.stringify(b)}`);
    }
    for (let i = 0; i < prompts.length; i++) {
      const alone = await complete(req(prompts[i]));
      assert.equal(concurrent[i].choices[0].text, alone.choices[0].text, `prompt ${i}: concurrent output differs`);
      assert.equal(concurrent[i].usage.prompt_tokens, alone.usage.prompt_tokens);
    }
  }));
});
