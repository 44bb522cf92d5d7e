// Tool calling through the official SDK and plain fetch: tools, tool_choice (none, auto,
// required, a named function), parallel_tool_calls, tool and assistant-with-tool_calls messages.
// The stock ChatML template of the test model describes no tools, so the server runs with
// fixtures/chatml-tools.jinja, a ChatML template with Hermes-style <tool_call> JSON </tool_call>
// calls, from which llama.cpp's chat machinery derives the call grammar and parser. Under
// "required" or a named function the grammar makes even the 260K-parameter model call a tool
// with arguments that match the function's parameters.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  MODELS,
  assertErrorShape,
  assertHealthy,
  modelId,
  openaiClient,
  postJson,
  postStream,
  useServer,
} from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const TEMPLATE = fs.readFileSync(path.join(here, 'fixtures', 'chatml-tools.jinja'), 'utf8');

const WEATHER = {
  type: 'object',
  properties: { city: { type: 'string', maxLength: 12 }, unit: { enum: ['c', 'f'] } },
  required: ['city', 'unit'],
  additionalProperties: false,
};
const TIME = {
  type: 'object',
  properties: { tz: { type: 'string', maxLength: 8 } },
  required: ['tz'],
  additionalProperties: false,
};
const TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather for a city', parameters: WEATHER } },
  { type: 'function', function: { name: 'get_time', description: 'Time in a zone', parameters: TIME } },
];
const SCHEMAS = { get_weather: WEATHER, get_time: TIME };

// The arguments are a JSON string whose object matches the function's parameters.
function assertCall(call, names = Object.keys(SCHEMAS)) {
  assert.equal(call.type, 'function');
  assert.equal(typeof call.id, 'string');
  assert.ok(call.id.length > 0);
  assert.ok(names.includes(call.function.name), `unexpected function ${call.function.name}`);
  assert.equal(typeof call.function.arguments, 'string');
  const args = JSON.parse(call.function.arguments);
  const schema = SCHEMAS[call.function.name];
  assert.deepEqual(Object.keys(args).sort(), [...schema.required].sort(), call.function.arguments);
  for (const [key, value] of Object.entries(args)) {
    const p = schema.properties[key];
    if (p.enum) assert.ok(p.enum.includes(value), `${key}=${value}`);
    if (p.type === 'string') {
      assert.equal(typeof value, 'string');
      assert.ok([...value].length <= p.maxLength);
    }
  }
  return args;
}

describe('tool calling (stories260K-chatml.gguf, ChatML template with tool calls)', () => {
  const ctx = useServer({ model: MODELS.chatml, parallel: 2, args: ['--chat-template', TEMPLATE] });
  let client;
  let model;
  const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const url = () => `${ctx.server.url}/v1/chat/completions`;

  before(async () => {
    client = openaiClient(ctx.server);
    model = await modelId(ctx.server);
  });

  test('tool_choice required: the SDK gets a valid call and finish_reason tool_calls', ctx.wrap(async () => {
    const res = await client.chat.completions.create({
      model, messages, tools: TOOLS, tool_choice: 'required', parallel_tool_calls: false, max_tokens: 200,
      temperature: 0,
    });
    const choice = res.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.equal(choice.message.role, 'assistant');
    assert.equal(choice.message.content, null);
    assert.equal(choice.message.tool_calls.length, 1);
    assertCall(choice.message.tool_calls[0]);
    assert.ok(res.usage.completion_tokens < 200);
  }));

  test('a named function is the one called, sampled with several seeds', ctx.wrap(async () => {
    for (const seed of [1, 2, 3]) {
      const res = await client.chat.completions.create({
        model, messages, tools: TOOLS, tool_choice: { type: 'function', function: { name: 'get_time' } },
        parallel_tool_calls: false, max_tokens: 200, temperature: 1, seed, n: 2,
      });
      for (const choice of res.choices) {
        assert.equal(choice.finish_reason, 'tool_calls');
        assert.equal(choice.message.tool_calls.length, 1);
        assertCall(choice.message.tool_calls[0], ['get_time']);
      }
    }
  }));

  test('SDK chat.completions.parse with strict tools parses the arguments', ctx.wrap(async () => {
    const strictTools = TOOLS.map((t) => ({ ...t, function: { ...t.function, strict: true } }));
    const res = await client.chat.completions.parse({
      model, messages, tools: strictTools, tool_choice: { type: 'function', function: { name: 'get_weather' } },
      parallel_tool_calls: false, max_tokens: 200, temperature: 0,
    });
    const call = res.choices[0].message.tool_calls[0];
    assert.deepEqual(call.function.parsed_arguments, assertCall(call, ['get_weather']));
  }));

  test('parallel calls: every complete call is valid; a call cut by max_tokens is not returned', ctx.wrap(async () => {
    const res = await postJson(url(), {
      model, messages, tools: TOOLS, tool_choice: 'required', max_tokens: 120, temperature: 0,
    });
    assert.equal(res.status, 200, res.text);
    const choice = res.body.choices[0];
    assert.ok(choice.message.tool_calls.length >= 1, res.text);
    choice.message.tool_calls.forEach((c) => assertCall(c));
    assert.equal(new Set(choice.message.tool_calls.map((c) => c.id)).size, choice.message.tool_calls.length);
    assert.ok(['tool_calls', 'length'].includes(choice.finish_reason));
  }));

  test('streaming sends tool-call deltas equal to the non-streamed calls', ctx.wrap(async () => {
    const body = {
      model, messages, tools: TOOLS, tool_choice: 'required', parallel_tool_calls: false, max_tokens: 200,
      temperature: 0,
    };
    const whole = await postJson(url(), body);
    assert.equal(whole.status, 200, whole.text);
    const stream = await postStream(url(), { ...body, stream: true });
    assert.equal(stream.status, 200, stream.text);
    const calls = [];
    let finish = null;
    for (const chunk of stream.chunks) {
      const c = chunk.choices[0];
      for (const d of c?.delta?.tool_calls ?? []) {
        calls[d.index] ??= { id: '', type: d.type, function: { name: '', arguments: '' } };
        if (d.id) calls[d.index].id = d.id;
        calls[d.index].function.name += d.function?.name ?? '';
        calls[d.index].function.arguments += d.function?.arguments ?? '';
      }
      finish = c?.finish_reason ?? finish;
    }
    assert.equal(finish, 'tool_calls');
    const expected = whole.body.choices[0].message.tool_calls;
    assert.equal(calls.length, expected.length);
    calls.forEach((c, i) => {
      assertCall(c);
      assert.equal(c.function.name, expected[i].function.name);
      assert.equal(c.function.arguments, expected[i].function.arguments);
    });
    // The SDK's stream helper assembles the same call.
    const runner = client.chat.completions.stream(body);
    const final = await runner.finalChatCompletion();
    assert.equal(final.choices[0].message.tool_calls[0].function.arguments, expected[0].function.arguments);
  }));

  test('tool_choice auto and none: a prose answer is content, with no tool_calls', ctx.wrap(async () => {
    for (const tool_choice of ['auto', 'none']) {
      const res = await client.chat.completions.create({
        model, messages, tools: TOOLS, tool_choice, max_tokens: 24, temperature: 0,
      });
      const choice = res.choices[0];
      assert.equal(typeof choice.message.content, 'string');
      assert.ok(choice.message.content.length > 0);
      assert.equal(choice.message.tool_calls, undefined);
      assert.ok(['stop', 'length'].includes(choice.finish_reason));
    }
  }));

  test('a conversation with the call and the tool result goes on', ctx.wrap(async () => {
    const first = await client.chat.completions.create({
      model, messages, tools: TOOLS, tool_choice: 'required', parallel_tool_calls: false, max_tokens: 200,
      temperature: 0,
    });
    const assistant = first.choices[0].message;
    const call = assistant.tool_calls[0];
    const res = await client.chat.completions.create({
      model,
      tools: TOOLS,
      max_tokens: 16,
      temperature: 0,
      messages: [
        ...messages,
        assistant,
        { role: 'tool', tool_call_id: call.id, content: 'sunny, 21 degrees' },
      ],
    });
    assert.equal(typeof res.choices[0].message.content, 'string');
    assert.ok(res.usage.prompt_tokens > first.usage.prompt_tokens);
  }));

  test('invalid tools and tool_choice get 400 naming the param; the server keeps serving', ctx.wrap(async () => {
    const cases = [
      [{ tools: [{ type: 'function', function: { name: 'has space' } }] }, 'tools[0].function.name'],
      [{ tools: [{ type: 'code_interpreter' }] }, 'tools[0].type'],
      [{ tools: TOOLS, tool_choice: 'always' }, 'tool_choice'],
      [{ tool_choice: 'required' }, 'tool_choice'],
      [{ tools: TOOLS, tool_choice: { type: 'function', function: { name: 'nope' } } }, 'tool_choice.function.name'],
      [{ tools: TOOLS, response_format: { type: 'json_object' } }, 'response_format'],
      [{ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'array', minItems: 1e7 } } }] },
        'tools[0].function.parameters'],
      [{ messages: [{ role: 'tool', content: 'x' }] }, 'messages[0].tool_call_id'],
    ];
    for (const [extra, param] of cases) {
      const res = await postJson(url(), { model, messages, max_tokens: 8, ...extra });
      const err = assertErrorShape(res, 400);
      assert.equal(err.param, param, res.text);
    }
    await assertHealthy(ctx.server);
  }));
});
