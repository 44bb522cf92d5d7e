// The official OpenAI SDK for Node, unmodified, against the server: chat (ChatML model), chat
// streaming, model listing, completions; chat on a model without a template is refused.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import OpenAI from 'openai';

import {
  CHATML_HI_16,
  CHATML_HI_PROMPT,
  CHATML_HI_PROMPT_TOKENS,
  GREEDY_64,
  MODELS,
  ONCE,
  assertErrorShape,
  assertHealthy,
  modelId,
  openaiClient,
  postJson,
  useServer,
} from './harness.mjs';

describe('OpenAI SDK, chat (stories260K-chatml.gguf)', () => {
  const ctx = useServer({ model: MODELS.chatml, parallel: 2 });
  let client;
  let model;
  const hi = [{ role: 'user', content: 'Hi' }];

  before(async () => {
    client = openaiClient(ctx.server);
    model = await modelId(ctx.server);
  });

  test('client.models.list() lists the model', ctx.wrap(async () => {
    const ids = [];
    for await (const m of client.models.list()) {
      ids.push(m.id);
      assert.equal(m.object, 'model');
    }
    assert.deepEqual(ids, ['stories260K-chatml']);
    assert.equal(model, 'stories260K-chatml');
  }));

  test('chat.completions.create: greedy answer to "Hi"', ctx.wrap(async () => {
    const res = await client.chat.completions.create({ model, messages: hi, max_tokens: 16, temperature: 0 });
    assert.equal(res.object, 'chat.completion');
    assert.equal(res.model, model);
    assert.equal(res.choices.length, 1);
    const choice = res.choices[0];
    assert.equal(choice.index, 0);
    assert.equal(choice.message.role, 'assistant');
    assert.equal(typeof choice.message.content, 'string');
    assert.equal(choice.finish_reason, 'length');
    assert.equal(res.usage.completion_tokens, 16);
    // The rendered ChatML prompt, as llama.cpp counts it (BOS + 41 tokens).
    assert.equal(res.usage.prompt_tokens, CHATML_HI_PROMPT_TOKENS);
    assert.equal(res.usage.total_tokens, CHATML_HI_PROMPT_TOKENS + 16);
    // Chat is the completion of the rendered template (README), and equals llama.cpp's answer.
    const raw = await client.completions.create({ model, prompt: CHATML_HI_PROMPT, max_tokens: 16, temperature: 0 });
    assert.equal(choice.message.content, raw.choices[0].text);
    assert.equal(choice.message.content, CHATML_HI_16);
  }));

  test('chat streaming through the SDK equals the non-streamed content', ctx.wrap(async () => {
    const plain = await client.chat.completions.create({ model, messages: hi, max_tokens: 16, temperature: 0 });
    const stream = await client.chat.completions.create({
      model,
      messages: hi,
      max_tokens: 16,
      temperature: 0,
      stream: true,
    });
    const chunks = [];
    for await (const chunk of stream) {
      chunks.push(chunk);
    }
    assert.ok(chunks.length > 1, `expected several chunks, got ${chunks.length}`);
    for (const c of chunks) {
      assert.equal(c.object, 'chat.completion.chunk');
    }
    assert.equal(chunks[0].choices[0].delta.role, 'assistant', 'the first chunk carries the role');
    const content = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    assert.equal(content, plain.choices[0].message.content);
    const finishes = chunks.flatMap((c) => c.choices.map((ch) => ch.finish_reason)).filter((f) => f != null);
    assert.deepEqual(finishes, ['length']);
  }));

  test('chat streaming with include_usage: final chunk has usage and no choices', ctx.wrap(async () => {
    const stream = await client.chat.completions.create({
      model,
      messages: hi,
      max_tokens: 16,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) {
      chunks.push(chunk);
    }
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage?.completion_tokens, 16);
    assert.equal(last.usage?.prompt_tokens, CHATML_HI_PROMPT_TOKENS);
  }));

  test('system and assistant turns are accepted; stop ends the turn', ctx.wrap(async () => {
    const res = await client.chat.completions.create({
      model,
      messages: [
        { role: 'system', content: 'You tell stories.' },
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hello!' },
        { role: 'user', content: 'Tell me a story.' },
      ],
      max_tokens: 16,
      temperature: 0,
    });
    assert.equal(res.choices[0].message.role, 'assistant');
    assert.equal(typeof res.choices[0].message.content, 'string');
    // Cut the greedy answer to "Hi" at its first "?": the turn ends on the stop string.
    const stopped = await client.chat.completions.create({
      model,
      messages: hi,
      max_tokens: 16,
      temperature: 0,
      stop: ['?'],
    });
    assert.equal(stopped.choices[0].message.content, CHATML_HI_16.slice(0, CHATML_HI_16.indexOf('?')));
    assert.equal(stopped.choices[0].finish_reason, 'stop');
  }));

  test('client.completions.create works', ctx.wrap(async () => {
    const res = await client.completions.create({ model, prompt: ONCE, max_tokens: 64, temperature: 0 });
    assert.equal(res.object, 'text_completion');
    assert.equal(res.choices[0].text, GREEDY_64);
    assert.equal(res.choices[0].finish_reason, 'length');
    assert.equal(res.usage.completion_tokens, 64);
  }));

  test('client.completions.create streaming equals non-streaming', ctx.wrap(async () => {
    const stream = await client.completions.create({
      model,
      prompt: ONCE,
      max_tokens: 64,
      temperature: 0,
      stream: true,
    });
    let text = '';
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? '';
    }
    assert.equal(text, GREEDY_64);
  }));
});

describe('chat on a model without a chat template (stories260K.gguf)', () => {
  const ctx = useServer({ model: MODELS.plain });
  let client;
  let model;

  before(async () => {
    client = openaiClient(ctx.server);
    model = await modelId(ctx.server);
  });

  test('POST /v1/chat/completions answers 400 naming the chat template', ctx.wrap(async () => {
    const res = await postJson(`${ctx.server.url}/v1/chat/completions`, {
      model,
      messages: [{ role: 'user', content: 'Hi' }],
      max_tokens: 16,
    });
    const err = assertErrorShape(res, 400);
    assert.match(err.message, /chat.?template/i);
  }));

  test('the SDK raises BadRequestError for it', ctx.wrap(async () => {
    await assert.rejects(
      client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 16 }),
      (err) => {
        assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}: ${err?.message}`);
        assert.equal(err.status, 400);
        assert.match(err.message, /chat.?template/i);
        return true;
      },
    );
  }));

  test('completions still work on it', ctx.wrap(async () => {
    const res = await client.completions.create({ model, prompt: ONCE, max_tokens: 64, temperature: 0 });
    assert.equal(res.choices[0].text, GREEDY_64);
    await assertHealthy(ctx.server);
  }));
});
