// Issue 20 through the official SDK: the Responses API (plain, streamed with its typed events, a
// forced function tool, a multi-step tool loop, text.format), and tool calls on a model whose
// chat template has no tool-call format (stock ChatML), streamed call by call in fragments.
// The 260K-parameter model writes nonsense: these tests judge the protocol, never the story.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import { MODELS, assertErrorShape, modelId, openaiClient, postJson, postStream, useServer } from './harness.mjs';

const WEATHER = {
  type: 'object',
  properties: { city: { type: 'string', maxLength: 8 }, days: { type: 'integer', minimum: 1, maximum: 7 } },
  required: ['city', 'days'],
  additionalProperties: false,
};
const LOOKUP = {
  type: 'object',
  properties: { q: { type: 'string', maxLength: 6 } },
  required: ['q'],
  additionalProperties: false,
};

function assertArgs(text, schema) {
  const args = JSON.parse(text);
  assert.deepEqual(Object.keys(args), Object.keys(schema.properties), text); // the schema's order
  for (const [k, v] of Object.entries(args)) {
    const p = schema.properties[k];
    if (p.type === 'string') assert.ok(typeof v === 'string' && [...v].length <= p.maxLength, text);
    if (p.type === 'integer') assert.ok(Number.isInteger(v) && v >= p.minimum && v <= p.maximum, text);
  }
  return args;
}

// Stock ChatML (no tool-call format in the template). --ctx-size 2048: the tool description is
// long in this model's 512-token vocabulary.
describe('tool calls on a template without a tool-call format (stories260K-chatml.gguf)', () => {
  const ctx = useServer({ model: MODELS.chatml, parallel: 2, args: ['--ctx-size', 2048] });
  let client;
  let model;
  const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const tools = [
    { type: 'function', function: { name: 'get_weather', description: 'Weather for a city', parameters: WEATHER } },
    { type: 'function', function: { name: 'lookup', description: 'Search', parameters: LOOKUP } },
  ];
  before(async () => {
    client = openaiClient(ctx.server);
    model = await modelId(ctx.server);
  });

  test('required and a named function yield parseable calls (issue 20: they were ignored)', ctx.wrap(async () => {
    const plain = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0 });
    const res = await client.chat.completions.create({
      model, messages, tools, tool_choice: 'required', parallel_tool_calls: false, max_tokens: 300, temperature: 0,
    });
    const choice = res.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls', JSON.stringify(choice));
    assert.equal(choice.message.content, null);
    assert.equal(choice.message.tool_calls.length, 1);
    const call = choice.message.tool_calls[0];
    assertArgs(call.function.arguments, call.function.name === 'get_weather' ? WEATHER : LOOKUP);
    // The tools are in the prompt, never silently dropped.
    assert.ok(res.usage.prompt_tokens > plain.usage.prompt_tokens + 50, `${res.usage.prompt_tokens} prompt tokens`);
    for (const seed of [1, 2]) {
      const named = await client.chat.completions.create({
        model, messages, tools, tool_choice: { type: 'function', function: { name: 'lookup' } },
        max_tokens: 300, temperature: 1, seed,
      });
      const c = named.choices[0];
      assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(c));
      assert.equal(c.message.tool_calls[0].function.name, 'lookup');
      assertArgs(c.message.tool_calls[0].function.arguments, LOOKUP);
    }
  }));

  test('streamed calls come one after another, arguments in fragments, equal to the whole answer', ctx.wrap(async () => {
    const body = { model, messages, tools, tool_choice: 'required', max_tokens: 400, temperature: 0 };
    const whole = await postJson(`${ctx.server.url}/v1/chat/completions`, body);
    assert.equal(whole.status, 200, whole.text);
    const expected = whole.body.choices[0].message.tool_calls;
    const stream = await postStream(`${ctx.server.url}/v1/chat/completions`, { ...body, stream: true });
    const calls = [];
    let fragments = 0;
    for (const chunk of stream.chunks) {
      const deltas = chunk.choices[0]?.delta?.tool_calls ?? [];
      assert.ok(deltas.length <= 1, 'one call per chunk');
      for (const d of deltas) {
        if (d.id) {
          // A call's first chunk: index, id, type and name; every earlier call is complete.
          assert.equal(d.index, calls.length);
          assert.equal(d.type, 'function');
          calls.push({ id: d.id, name: d.function.name, arguments: d.function.arguments ?? '' });
        } else {
          assert.equal(d.index, calls.length - 1, 'fragments belong to the latest call');
          calls[d.index].arguments += d.function.arguments;
          fragments++;
        }
      }
    }
    assert.deepEqual(calls.map((c) => [c.name, c.arguments]),
      expected.map((c) => [c.function.name, c.function.arguments]));
    assert.ok(fragments >= 2 * calls.length, `only ${fragments} argument fragments`);
    // What the SDK's stream helper assembles.
    const final = await client.chat.completions.stream({ ...body, parallel_tool_calls: false }).finalChatCompletion();
    assert.equal(final.choices[0].message.tool_calls.length, 1);
  }));

  test('with tools offered and tool_choice auto, text streams token by token', ctx.wrap(async () => {
    const stream = await postStream(`${ctx.server.url}/v1/chat/completions`,
      { model, messages, tools, tool_choice: 'auto', max_tokens: 32, temperature: 0, stream: true });
    assert.equal(stream.status, 200, stream.text);
    const texts = stream.chunks.map((c) => c.choices[0]?.delta?.content).filter((t) => t);
    assert.ok(texts.length >= 10, `${texts.length} content chunks for 32 tokens: ${JSON.stringify(texts)}`);
  }));
});

describe('the Responses API (stories260K-chatml.gguf)', () => {
  const ctx = useServer({ model: MODELS.chatml, parallel: 2, args: ['--ctx-size', 2048] });
  let client;
  let model;
  before(async () => {
    client = openaiClient(ctx.server);
    model = await modelId(ctx.server);
  });

  test('responses.create: a Response object whose text equals chat completions\'', ctx.wrap(async () => {
    const r = await client.responses.create({ model, input: 'Hi', max_output_tokens: 16, temperature: 0 });
    assert.equal(r.object, 'response');
    assert.match(r.id, /^resp_/);
    assert.equal(r.model, model);
    assert.ok(['completed', 'incomplete'].includes(r.status));
    assert.equal(r.output[0].type, 'message');
    assert.equal(r.output[0].role, 'assistant');
    assert.equal(r.output[0].content[0].type, 'output_text');
    const chat = await client.chat.completions.create({
      model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 16, temperature: 0,
    });
    assert.equal(r.output_text, chat.choices[0].message.content);
    assert.equal(r.usage.input_tokens, chat.usage.prompt_tokens);
    assert.equal(r.usage.output_tokens, chat.usage.completion_tokens);
    assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
    if (r.status === 'incomplete') assert.equal(r.incomplete_details.reason, 'max_output_tokens');
    // instructions are the system turn.
    const withIns = await client.responses.create({
      model, instructions: 'You tell stories.', input: [{ role: 'user', content: [{ type: 'input_text', text: 'Hi' }] }],
      max_output_tokens: 4, temperature: 0,
    });
    assert.ok(withIns.usage.input_tokens > r.usage.input_tokens);
    assert.equal(withIns.instructions, 'You tell stories.');
  }));

  test('streaming: the typed event sequence, deltas adding up to the final text', ctx.wrap(async () => {
    const stream = await client.responses.create({ model, input: 'Hi', max_output_tokens: 16, temperature: 0, stream: true });
    const events = [];
    for await (const ev of stream) events.push(ev);
    const types = events.map((e) => e.type);
    assert.deepEqual(types.slice(0, 4),
      ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added']);
    assert.deepEqual(types.slice(-4),
      ['response.output_text.done', 'response.content_part.done', 'response.output_item.done', types.at(-1)]);
    assert.ok(['response.completed', 'response.incomplete'].includes(types.at(-1)));
    events.forEach((e, i) => assert.equal(e.sequence_number, i));
    const deltas = events.filter((e) => e.type === 'response.output_text.delta');
    assert.ok(deltas.length >= 5, `${deltas.length} deltas`);
    const text = deltas.map((e) => e.delta).join('');
    assert.equal(events.find((e) => e.type === 'response.output_text.done').text, text);
    assert.equal(events.at(-1).response.output[0].content[0].text, text);
    // The SDK's helper assembles the same response.
    const final = await client.responses.stream({ model, input: 'Hi', max_output_tokens: 16, temperature: 0 }).finalResponse();
    assert.equal(final.output_text, text);
  }));

  test('a forced function tool: a function_call item; streamed as arguments deltas', ctx.wrap(async () => {
    const tools = [{ type: 'function', name: 'get_weather', description: 'Weather', parameters: WEATHER, strict: true }];
    const body = { model, input: 'Weather in Paris?', tools, tool_choice: 'required', parallel_tool_calls: false,
      max_output_tokens: 300, temperature: 0 };
    const r = await client.responses.create(body);
    assert.equal(r.status, 'completed', JSON.stringify(r.output));
    const calls = r.output.filter((o) => o.type === 'function_call');
    assert.equal(calls.length, 1);
    assert.equal(calls[0].name, 'get_weather');
    assert.match(calls[0].call_id, /^call_/);
    assertArgs(calls[0].arguments, WEATHER);
    const events = [];
    for await (const ev of await client.responses.create({ ...body, stream: true })) events.push(ev);
    const added = events.find((e) => e.type === 'response.output_item.added' && e.item.type === 'function_call');
    assert.ok(added, events.map((e) => e.type).join(' '));
    assert.equal(added.item.name, 'get_weather');
    const args = events.filter((e) => e.type === 'response.function_call_arguments.delta').map((e) => e.delta);
    assert.ok(args.length >= 3, `${args.length} argument deltas`);
    const done = events.find((e) => e.type === 'response.function_call_arguments.done');
    assert.equal(done.arguments, args.join(''));
    assert.equal(done.arguments, calls[0].arguments);
  }));

  test('a tool loop: call, function_call_output, then an answer', ctx.wrap(async () => {
    const tools = [{ type: 'function', name: 'get_weather', parameters: WEATHER }];
    const input = [{ role: 'user', content: 'Weather in Paris?' }];
    const first = await client.responses.create({
      model, input, tools, tool_choice: 'required', parallel_tool_calls: false, max_output_tokens: 300, temperature: 0,
    });
    const call = first.output.find((o) => o.type === 'function_call');
    assert.ok(call, JSON.stringify(first.output));
    const second = await client.responses.create({
      model, tools, tool_choice: 'auto', max_output_tokens: 8, temperature: 0,
      input: [...input, call, { type: 'function_call_output', call_id: call.call_id, output: 'sunny, 21 C' }],
    });
    assert.equal(second.output[0].type, 'message');
    assert.ok(second.output_text.length > 0);
    // The call and its result are in the prompt (the same tools, so the rest is equal).
    assert.ok(second.usage.input_tokens > first.usage.input_tokens + 10,
      `${second.usage.input_tokens} vs ${first.usage.input_tokens}`);
  }));

  test('text.format json_schema: JSON in the schema\'s property order', ctx.wrap(async () => {
    const schema = {
      type: 'object',
      properties: { zeta: { type: 'integer', minimum: 0, maximum: 9 }, alpha: { type: 'string', maxLength: 6 } },
      required: ['zeta', 'alpha'],
      additionalProperties: false,
    };
    const r = await client.responses.create({
      model, input: 'x', text: { format: { type: 'json_schema', name: 'pair', schema, strict: true } },
      max_output_tokens: 60, temperature: 0,
    });
    assert.deepEqual(Object.keys(JSON.parse(r.output_text)), ['zeta', 'alpha'], r.output_text);
    assert.equal(r.text.format.type, 'json_schema');
  }));

  test('errors in the OpenAI shape, naming the Responses field', ctx.wrap(async () => {
    const url = `${ctx.server.url}/v1/responses`;
    const cases = [
      [{ model }, 'input'],
      [{ model, input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'x' }] }] }, 'input[0].content[0].type'],
      [{ model, input: 'x', tools: [{ type: 'web_search' }] }, 'tools[0].type'],
      [{ model, input: 'x', max_output_tokens: 0 }, 'max_output_tokens'],
      [{ model, input: 'x', text: { format: { type: 'json_schema', name: 'n', schema: { type: 'string', pattern: '((' } } } },
        'text.format.schema'],
    ];
    for (const [body, param] of cases) {
      const res = await postJson(url, body);
      const err = assertErrorShape(res, 400);
      assert.equal(err.param, param, res.text);
    }
    await assert.rejects(client.responses.create({ model: 'nope', input: 'x' }), (e) => e.status === 404);
  }));
});

describe('stored responses (store, previous_response_id, GET/DELETE, input_items; two API keys)', () => {
  const ctx = useServer({ model: MODELS.chatml, args: ['--ctx-size', 2048, '--api-key', 'sk-key-aaaa', '--api-key', 'sk-key-bbbb'] });
  let a;
  let b;
  let model;
  before(async () => {
    a = openaiClient(ctx.server, { apiKey: 'sk-key-aaaa' });
    b = openaiClient(ctx.server, { apiKey: 'sk-key-bbbb' });
    model = (await a.models.list()).data[0].id;
  });

  test('a stored response is retrievable by its key only, continues, lists its input, and deletes', ctx.wrap(async () => {
    const first = await a.responses.create({ model, input: 'Hi', max_output_tokens: 8, temperature: 0 });
    assert.equal(first.store, true);
    const got = await a.responses.retrieve(first.id);
    assert.deepEqual(got, first);
    await assert.rejects(b.responses.retrieve(first.id), (e) => e.status === 404);
    await assert.rejects(b.responses.create({ model, input: 'x', previous_response_id: first.id }),
      (e) => e.status === 404 && e.param === 'previous_response_id');

    // Continuing: the previous input and output come first.
    const second = await a.responses.create({
      model, input: 'And then?', previous_response_id: first.id, max_output_tokens: 8, temperature: 0,
    });
    assert.equal(second.previous_response_id, first.id);
    assert.ok(second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens,
      `${second.usage.input_tokens} vs ${first.usage.input_tokens} + ${first.usage.output_tokens}`);
    const items = await a.responses.inputItems.list(second.id, { order: 'asc' });
    const texts = items.data.map((i) => i.content?.[0]?.text);
    assert.deepEqual(texts, ['Hi', first.output_text, 'And then?']);
    assert.ok(items.data.every((i) => typeof i.id === 'string' && i.id.length > 0));

    // Streaming stores too.
    let streamedId;
    for await (const ev of await a.responses.create({ model, input: 'Hi', max_output_tokens: 4, temperature: 0, stream: true })) {
      if (ev.type === 'response.completed' || ev.type === 'response.incomplete') streamedId = ev.response.id;
    }
    assert.equal((await a.responses.retrieve(streamedId)).id, streamedId);

    // store: false keeps nothing.
    const unstored = await a.responses.create({ model, input: 'Hi', max_output_tokens: 4, temperature: 0, store: false });
    await assert.rejects(a.responses.retrieve(unstored.id), (e) => e.status === 404);

    const del = await a.responses.delete(first.id);
    assert.deepEqual(del, { id: first.id, object: 'response', deleted: true });
    await assert.rejects(a.responses.retrieve(first.id), (e) => e.status === 404);
    const again = await fetch(`${ctx.server.url}/v1/responses/${first.id}`,
      { method: 'DELETE', headers: { authorization: 'Bearer sk-key-aaaa' } });
    assert.equal(again.status, 404);
  }));
});
