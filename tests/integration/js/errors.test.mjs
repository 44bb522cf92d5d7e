// Error answers: the SDK's error classes and the raw HTTP status codes and error JSON. After the
// errors the server must still be ready and still complete normally.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import OpenAI from 'openai';

import {
  MODELS,
  ONCE,
  ONCE_PROMPT_TOKENS,
  assertErrorShape,
  assertHealthy,
  getJson,
  modelId,
  openaiClient,
  postJson,
  useServer,
} from './harness.mjs';

describe('errors (stories260K.gguf, --ctx-size 256 --max-body-bytes 4096)', () => {
  const ctx = useServer({ model: MODELS.plain, args: ['--ctx-size', 256, '--max-body-bytes', 4096] });
  let client;
  let model;
  let url;

  before(async () => {
    client = openaiClient(ctx.server);
    model = await modelId(ctx.server);
    url = `${ctx.server.url}/v1/completions`;
  });

  // --- through the OpenAI SDK ---

  test('unknown model: NotFoundError (404)', ctx.wrap(async () => {
    await assert.rejects(
      client.completions.create({ model: 'no-such-model', prompt: ONCE, max_tokens: 4 }),
      (err) => {
        assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}: ${err?.message}`);
        assert.equal(err.status, 404);
        return true;
      },
    );
    await assert.rejects(
      client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'Hi' }] }),
      (err) => {
        assert.ok(err instanceof OpenAI.NotFoundError, `chat: got ${err?.constructor?.name}: ${err?.message}`);
        assert.equal(err.status, 404);
        return true;
      },
    );
  }));

  test('unknown model over fetch: 404 with the error JSON naming the model', ctx.wrap(async () => {
    const res = await postJson(url, { model: 'no-such-model', prompt: ONCE, max_tokens: 4 });
    const err = assertErrorShape(res, 404);
    assert.match(err.message, /no-such-model/);
  }));

  test('temperature 5: BadRequestError (400) naming "temperature"', ctx.wrap(async () => {
    await assert.rejects(
      client.completions.create({ model, prompt: ONCE, max_tokens: 4, temperature: 5 }),
      (err) => {
        assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}: ${err?.message}`);
        assert.equal(err.status, 400);
        assert.match(err.message, /temperature/);
        return true;
      },
    );
  }));

  test('prompt + max_tokens beyond the context: BadRequestError naming both numbers', ctx.wrap(async () => {
    await assert.rejects(
      client.completions.create({ model, prompt: ONCE, max_tokens: 1000, temperature: 0 }),
      (err) => {
        assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}: ${err?.message}`);
        assert.equal(err.status, 400);
        assert.ok(err.message.includes('1000'), `message does not name max_tokens 1000: ${err.message}`);
        assert.ok(err.message.includes('256'), `message does not name the context 256: ${err.message}`);
        return true;
      },
    );
    // At the limit exactly it is accepted: 5 prompt tokens + 251 = 256.
    const ok = await postJson(url, {
      model,
      prompt: ONCE,
      max_tokens: 256 - ONCE_PROMPT_TOKENS,
      temperature: 0,
      ignore_eos: true,
    });
    assert.equal(ok.status, 200, `max_tokens ${256 - ONCE_PROMPT_TOKENS} fills the context exactly: ${ok.text}`);
    assert.equal(ok.body.usage.completion_tokens, 256 - ONCE_PROMPT_TOKENS);
    const over = await postJson(url, {
      model,
      prompt: ONCE,
      max_tokens: 256 - ONCE_PROMPT_TOKENS + 1,
      temperature: 0,
    });
    assertErrorShape(over, 400);
  }));

  // --- over plain fetch ---

  test('malformed JSON: 400 with the OpenAI error JSON', ctx.wrap(async () => {
    const res = await postJson(url, '{"model": "x", "prompt": ');
    assertErrorShape(res, 400);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    const chat = await postJson(`${ctx.server.url}/v1/chat/completions`, 'not json at all');
    assertErrorShape(chat, 400);
  }));

  test('a JSON body that is not an object, or lacks the prompt: 400', ctx.wrap(async () => {
    assertErrorShape(await postJson(url, '[1, 2, 3]'), 400);
    assertErrorShape(await postJson(url, { model, max_tokens: 4 }), 400);
    assertErrorShape(await postJson(url, { model, prompt: ONCE, max_tokens: -1 }), 400);
    assertErrorShape(await postJson(url, { model, prompt: ONCE, max_tokens: 'four' }), 400);
  }));

  test('unknown route: 404', ctx.wrap(async () => {
    const res = await getJson(`${ctx.server.url}/v1/no-such-route`);
    assertErrorShape(res, 404);
    const post = await postJson(`${ctx.server.url}/v2/completions`, { model, prompt: ONCE });
    assertErrorShape(post, 404);
  }));

  test('wrong method: GET /v1/completions answers 405', ctx.wrap(async () => {
    const res = await getJson(url);
    assertErrorShape(res, 405);
    const chat = await getJson(`${ctx.server.url}/v1/chat/completions`);
    assertErrorShape(chat, 405);
  }));

  test('body over --max-body-bytes: 413', ctx.wrap(async () => {
    const body = JSON.stringify({ model, prompt: 'a'.repeat(10 * 1024), max_tokens: 1 });
    assert.ok(body.length > 10 * 1024);
    const res = await postJson(url, body);
    assertErrorShape(res, 413);
  }));

  test('the server is still healthy after the errors', ctx.wrap(async () => {
    await assertHealthy(ctx.server);
  }));
});
