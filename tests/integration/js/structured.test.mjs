// Structured output: response_format (json_object, json_schema), guided_json / guided_regex /
// guided_choice / guided_grammar at the top level (vLLM) and under nvext (NIM), on chat (the
// ChatML model, through the official SDK's structured-output helper and plain fetch) and on
// completions (the plain model). Every output must parse and match its constraint, across greedy
// and sampled decoding, streaming and not, n > 1; hostile constraints get a 400 naming the field
// and the server keeps serving.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import {
  MODELS,
  ONCE,
  assertErrorShape,
  assertHealthy,
  modelId,
  openaiClient,
  postJson,
  postStream,
  useServer,
} from './harness.mjs';

// A small JSON Schema validator for what these tests use: type, properties, required,
// additionalProperties: false, items, minItems/maxItems, enum, const, minLength/maxLength,
// minimum/maximum, anyOf, $ref into $defs. Returns the list of problems (empty = valid).
function validate(schema, value, root = schema, path = '$') {
  const problems = [];
  if (schema.$ref) {
    const name = schema.$ref.replace(/^#\/\$defs\//, '');
    return validate(root.$defs[name], value, root, path);
  }
  if (schema.anyOf) {
    if (!schema.anyOf.some((s) => validate(s, value, root, path).length === 0)) {
      problems.push(`${path}: matches no anyOf branch`);
    }
    return problems;
  }
  if (schema.enum && !schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(value))) {
    problems.push(`${path}: ${JSON.stringify(value)} not in enum`);
  }
  if ('const' in schema && JSON.stringify(schema.const) !== JSON.stringify(value)) {
    problems.push(`${path}: not the const`);
  }
  const type = schema.type;
  const typeOf = (v) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);
  if (type === 'integer') {
    if (!Number.isInteger(value)) problems.push(`${path}: not an integer`);
  } else if (type && type !== typeOf(value)) {
    problems.push(`${path}: expected ${type}, got ${typeOf(value)}`);
    return problems;
  }
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) problems.push(`${path}: below minimum`);
    if (schema.maximum !== undefined && value > schema.maximum) problems.push(`${path}: above maximum`);
  }
  if (typeof value === 'string') {
    if (schema.minLength !== undefined && [...value].length < schema.minLength) problems.push(`${path}: too short`);
    if (schema.maxLength !== undefined && [...value].length > schema.maxLength) problems.push(`${path}: too long`);
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) problems.push(`${path}: too few items`);
    if (schema.maxItems !== undefined && value.length > schema.maxItems) problems.push(`${path}: too many items`);
    if (schema.items) value.forEach((v, i) => problems.push(...validate(schema.items, v, root, `${path}[${i}]`)));
  }
  if (typeOf(value) === 'object') {
    for (const key of schema.required ?? []) {
      if (!(key in value)) problems.push(`${path}: missing required ${key}`);
    }
    for (const [key, v] of Object.entries(value)) {
      const sub = schema.properties?.[key];
      if (sub) {
        problems.push(...validate(sub, v, root, `${path}.${key}`));
      } else if (schema.additionalProperties === false) {
        problems.push(`${path}: unexpected property ${key}`);
      }
    }
  }
  return problems;
}

function assertValid(schema, text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    assert.fail(`output is not JSON (${err.message}): ${text}`);
  }
  assert.deepEqual(validate(schema, value), [], `output does not match the schema: ${text}`);
  return value;
}

// Bounded everywhere, so even the 260K-parameter test model finishes well within max_tokens.
const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 12 },
    age: { type: 'integer', minimum: 0, maximum: 120 },
    mood: { enum: ['happy', 'sad', 'sleepy'] },
    pet: { $ref: '#/$defs/pet' },
    tags: { type: 'array', items: { type: 'string', maxLength: 6 }, minItems: 1, maxItems: 3 },
    alive: { type: 'boolean' },
  },
  required: ['name', 'age', 'mood', 'pet', 'tags', 'alive'],
  additionalProperties: false,
  $defs: {
    pet: {
      type: 'object',
      properties: {
        kind: { enum: ['cat', 'dog'] },
        legs: { type: 'integer', minimum: 0, maximum: 4 },
        owner: { anyOf: [{ type: 'null' }, { type: 'string', maxLength: 8 }] },
      },
      required: ['kind', 'legs', 'owner'],
      additionalProperties: false,
    },
  },
};

const REGEX = '(cat|dog)-[0-9]{1,3}( [a-z]{1,6}){0,2}\\.';
const matchesWhole = (re, s) => new RegExp(`^(?:${re})$`).test(s);

// Hostile or wrong constraints: each must get a 400 naming the field, and nothing else happens.
const HOSTILE = [
  ['guided_regex', { guided_regex: '('.repeat(1000) + 'a' + ')'.repeat(1000) }, /nest deeper than 32/],
  ['guided_regex', { guided_regex: 'a{99999}' }, /exceeds the limit of 1000/],
  ['guided_regex', { guided_regex: '((a{100}){100}){100}' }, /multiply to/],
  ['guided_regex', { guided_regex: '(a)\\1' }, /backreferences are not supported/],
  ['guided_regex', { guided_regex: 'foo(?=bar)' }, /lookaround/],
  ['guided_regex', { guided_regex: 'x'.repeat(5000) }, /the limit is 4096/],
  ['guided_regex', { guided_regex: '[a-' }, /unterminated character class/],
  ['nvext.guided_grammar', { nvext: { guided_grammar: 'root ::= ' + '('.repeat(20000) + '"a"' + ')'.repeat(20000) } },
    /nest deeper than 32/],
  ['guided_grammar', { guided_grammar: 'root ::= "a" missing' }, /rejected the grammar/],
  ['guided_grammar', { guided_grammar: 'root ::= root "a"' }, /rejected the grammar/],
  ['guided_grammar', { guided_grammar: 'root ::= "a"{100000}' }, /rejected the grammar/],
  ['guided_grammar', { guided_grammar: '%llguidance {}\nstart: "a"' }, /rejected the grammar|no root rule/],
  ['guided_grammar', { guided_grammar: 'start ::= "a"' }, /no root rule/],
  ['guided_grammar', { guided_grammar: 'root ::= "a' }, /never closed/],
  ['guided_grammar', { guided_grammar: 'root ::= "' + 'a'.repeat(200_000) + '"' }, /the limit is 131072/],
  ['guided_json', { guided_json: { type: 'array', minItems: 1_000_000_000 } }, /minItems 1000000000 at \/ exceeds/],
  ['guided_json', { guided_json: { type: 'string', pattern: '^a{1,99999}$' } }, /repetition count 99999/],
  ['guided_json', { guided_json: { type: 'frobnicate' } }, /unrecognized type/],
  ['guided_json', { guided_json: { $ref: '#/$defs/missing' } }, /JSON schema/i],
  ['guided_json', { guided_json: '{"type": "object"' }, /not a JSON object/],
  ['guided_json', { guided_json: 42 }, /must be a JSON Schema object/],
  // Every regex is validated as guided_regex is, wherever it sits (issue 24).
  ['response_format.json_schema.schema', { response_format: { type: 'json_schema', json_schema: { name: 'x',
    schema: { type: 'object', properties: { a: { type: 'string', pattern: '((' } } } } } },
  /the pattern at \/properties\/a\/pattern is not a usable regular expression/],
  ['guided_json', { guided_json: { type: 'string', pattern: '[z-a]' } }, /class range out of order/],
  ['guided_json', { guided_json: { type: 'string', pattern: 'a{2,1}' } }, /min > max/],
  ['tools[0].function.parameters', { tools: [{ type: 'function', function: { name: 'f',
    parameters: { type: 'object', properties: { q: { type: 'string', pattern: '((' } } } } }] },
  /not a usable regular expression/],
  ['guided_choice', { guided_choice: [] }, /at least one choice/],
  ['guided_choice', { guided_choice: ['a', 7] }, /array of strings/],
  ['guided_choice', { guided_choice: Array.from({ length: 300 }, (_, i) => `c${i}`) }, /the limit is 256/],
  ['response_format.type', { response_format: { type: 'xml' } }, /must be one of/],
  ['response_format.json_schema.schema', { response_format: { type: 'json_schema', json_schema: { name: 'x' } } },
    /must be a JSON Schema object/],
  ['guided_regex', { response_format: { type: 'json_object' }, guided_regex: 'a' },
    /response_format and guided_regex both constrain the output/],
  ['nvext.guided_choice', { guided_json: { type: 'object' }, nvext: { guided_choice: ['a'] } },
    /guided_json and nvext.guided_choice both constrain/],
];

describe('structured output on chat (stories260K-chatml.gguf)', () => {
  const ctx = useServer({ model: MODELS.chatml, parallel: 4 });
  let client;
  let model;
  const messages = [{ role: 'user', content: 'Tell me about a person.' }];
  const url = () => `${ctx.server.url}/v1/chat/completions`;

  before(async () => {
    client = openaiClient(ctx.server);
    model = await modelId(ctx.server);
  });

  test('SDK chat.completions.parse with a nested json_schema ($ref, enums, arrays, bounds)', ctx.wrap(async () => {
    const res = await client.chat.completions.parse({
      model,
      messages,
      max_tokens: 400,
      temperature: 0,
      response_format: { type: 'json_schema', json_schema: { name: 'person', schema: PERSON, strict: true } },
    });
    const choice = res.choices[0];
    assert.equal(choice.finish_reason, 'stop', `greedy output did not complete: ${choice.message.content}`);
    assert.deepEqual(validate(PERSON, choice.message.parsed), [], choice.message.content);
    assert.deepEqual(choice.message.parsed, JSON.parse(choice.message.content));
    assert.ok(res.usage.completion_tokens < 400);
  }));

  test('generated JSON follows the schema\'s property order, not the alphabet', ctx.wrap(async () => {
    // Issue 20: "reasoning, answer, confidence" came back as answer, confidence, reasoning.
    const schema = {
      type: 'object',
      properties: {
        reasoning: { type: 'string', maxLength: 24 },
        answer: { type: 'string', maxLength: 12 },
        confidence: { type: 'integer', minimum: 0, maximum: 9 },
      },
      required: ['reasoning', 'answer', 'confidence'],
      additionalProperties: false,
    };
    for (const [what, extra] of [
      ['response_format', { response_format: { type: 'json_schema', json_schema: { name: 'ordered', schema, strict: true } } }],
      ['guided_json', { guided_json: schema }],
      ['nvext.guided_json as text', { nvext: { guided_json: JSON.stringify(schema) } }],
    ]) {
      const res = await postJson(url(), { model, messages, max_tokens: 200, temperature: 0, ...extra });
      assert.equal(res.status, 200, res.text);
      const text = res.body.choices[0].message.content;
      assert.deepEqual(Object.keys(JSON.parse(text)), ['reasoning', 'answer', 'confidence'], `${what}: ${text}`);
    }
  }));

  test('sampled outputs (several seeds, n=2) all match the schema', ctx.wrap(async () => {
    for (const seed of [1, 2, 3, 4]) {
      const res = await client.chat.completions.create({
        model,
        messages,
        max_tokens: 400,
        temperature: 1,
        seed,
        n: 2,
        response_format: { type: 'json_schema', json_schema: { name: 'person', schema: PERSON } },
      });
      assert.equal(res.choices.length, 2);
      for (const c of res.choices) {
        assert.equal(c.finish_reason, 'stop', `seed ${seed}: ${c.message.content}`);
        assertValid(PERSON, c.message.content);
      }
    }
  }));

  test('response_format json_object gives a JSON object', ctx.wrap(async () => {
    for (const seed of [5, 6]) {
      const res = await client.chat.completions.create({
        model,
        messages,
        max_tokens: 400,
        temperature: 0.7,
        seed,
        response_format: { type: 'json_object' },
      });
      const c = res.choices[0];
      if (c.finish_reason === 'stop') {
        const v = JSON.parse(c.message.content);
        assert.equal(typeof v, 'object');
        assert.ok(v !== null && !Array.isArray(v), c.message.content);
      } else {
        // An unbounded object may run out of tokens, but what came out is still a JSON prefix.
        assert.equal(c.finish_reason, 'length');
        assert.match(c.message.content, /^\s*\{/);
      }
    }
  }));

  test('guided_regex (top level) matches the whole output, greedy and sampled', ctx.wrap(async () => {
    for (const [temperature, seed] of [[0, 0], [1, 7], [1, 8], [1.5, 9]]) {
      const res = await client.chat.completions.create({
        model, messages, max_tokens: 100, temperature, seed, guided_regex: REGEX,
      });
      const c = res.choices[0];
      assert.equal(c.finish_reason, 'stop', c.message.content);
      assert.ok(matchesWhole(REGEX, c.message.content), `"${c.message.content}" does not match ${REGEX}`);
    }
  }));

  test('nvext.guided_choice: every choice is one of the strings, special characters included', ctx.wrap(async () => {
    const choices = ['yes', 'no', 'say "maybe"', 'back\\slash', 'caf\u00e9 \u2603', 'two\nlines'];
    const res = await postJson(url(), {
      model, messages, max_tokens: 50, temperature: 1.2, seed: 11, n: 6, nvext: { guided_choice: choices },
    });
    assert.equal(res.status, 200, res.text);
    for (const c of res.body.choices) {
      assert.ok(choices.includes(c.message.content), `${JSON.stringify(c.message.content)} is not a choice`);
      assert.equal(c.finish_reason, 'stop');
    }
  }));

  test('guided_grammar (GBNF) is followed, also with ignore_eos (the grammar ends the output)', ctx.wrap(async () => {
    const grammar = 'root ::= "The answer is " num "."\nnum ::= [1-9] [0-9]?';
    for (const ignore_eos of [false, true]) {
      const res = await postJson(url(), {
        model, messages, max_tokens: 60, temperature: 1, seed: 3, guided_grammar: grammar, ignore_eos,
      });
      assert.equal(res.status, 200, res.text);
      const c = res.body.choices[0];
      assert.match(c.message.content, /^The answer is [1-9][0-9]?\.$/);
      assert.equal(c.finish_reason, 'stop');
      assert.ok(res.body.usage.completion_tokens < 60);
    }
  }));

  test('streaming equals non-streaming (greedy) for a schema and a regex', ctx.wrap(async () => {
    for (const constraint of [
      { response_format: { type: 'json_schema', json_schema: { name: 'person', schema: PERSON } } },
      { nvext: { guided_regex: REGEX } },
    ]) {
      const body = { model, messages, max_tokens: 400, temperature: 0, ...constraint };
      const whole = await postJson(url(), body);
      assert.equal(whole.status, 200, whole.text);
      const stream = await postStream(url(), { ...body, stream: true });
      assert.equal(stream.status, 200, stream.text);
      const text = stream.chunks.map((ch) => ch.choices[0]?.delta?.content ?? '').join('');
      assert.equal(text, whole.body.choices[0].message.content);
      const finish = stream.chunks.map((ch) => ch.choices[0]?.finish_reason).filter(Boolean);
      assert.deepEqual(finish, ['stop']);
    }
    // The SDK's streaming helper sees the same text.
    const sdkStream = await client.chat.completions.create({
      model, messages, max_tokens: 100, temperature: 0, stream: true, guided_regex: REGEX,
    });
    let text = '';
    for await (const chunk of sdkStream) {
      text += chunk.choices[0]?.delta?.content ?? '';
    }
    assert.ok(matchesWhole(REGEX, text), text);
  }));

  test('streamed n=3 choices each keep their own grammar state', ctx.wrap(async () => {
    const stream = await postStream(url(), {
      model, messages, max_tokens: 100, temperature: 1.3, seed: 21, n: 3, stream: true, guided_regex: REGEX,
    });
    assert.equal(stream.status, 200, stream.text);
    const texts = ['', '', ''];
    for (const ch of stream.chunks) {
      for (const c of ch.choices) {
        texts[c.index] += c.delta?.content ?? '';
      }
    }
    for (const t of texts) {
      assert.ok(matchesWhole(REGEX, t), `"${t}" does not match`);
    }
  }));

  test('constrained and unconstrained requests decode side by side', ctx.wrap(async () => {
    const jobs = [];
    for (let i = 0; i < 6; ++i) {
      const body = { model, messages, max_tokens: 300, temperature: 1, seed: 100 + i };
      if (i % 3 === 0) body.guided_json = PERSON;
      if (i % 3 === 1) body.guided_regex = REGEX;
      jobs.push(postJson(url(), body).then((res) => ({ i, res })));
    }
    for (const { i, res } of await Promise.all(jobs)) {
      assert.equal(res.status, 200, res.text);
      const content = res.body.choices[0].message.content;
      if (i % 3 === 0) assertValid(PERSON, content);
      if (i % 3 === 1) assert.ok(matchesWhole(REGEX, content), content);
    }
  }));

  test('hostile and conflicting constraints get 400 naming the field; the server keeps serving', ctx.wrap(async () => {
    for (const [param, extra, message] of HOSTILE) {
      const res = await postJson(url(), { model, messages, max_tokens: 8, ...extra });
      const err = assertErrorShape(res, 400);
      assert.equal(err.type, 'invalid_request_error');
      assert.equal(err.param, param, `${JSON.stringify(extra).slice(0, 120)}: ${res.text.slice(0, 300)}`);
      assert.match(err.message, message);
    }
    // A grammar no token of the vocabulary can start is refused when sampling starts.
    const dead = await postJson(url(), { model, messages, max_tokens: 8, guided_grammar: 'root ::= [\\x00]' });
    assert.equal(assertErrorShape(dead, 400).code, 'grammar_dead_end');
    await assertHealthy(ctx.server);
    const after = await client.chat.completions.create({
      model, messages, max_tokens: 100, temperature: 0, guided_regex: REGEX,
    });
    assert.ok(matchesWhole(REGEX, after.choices[0].message.content));
  }));

  test('the SDK surfaces a refused schema as a 400 BadRequestError', ctx.wrap(async () => {
    await assert.rejects(
      client.chat.completions.parse({
        model,
        messages,
        response_format: { type: 'json_schema', json_schema: { name: 'bad', schema: { type: 'array', maxItems: 1e6 } } },
      }),
      (err) => err.status === 400 && err.param === 'response_format.json_schema.schema',
    );
  }));
});

describe('structured output on completions (stories260K.gguf)', () => {
  const ctx = useServer({ model: MODELS.plain, parallel: 2 });
  let client;
  let model;
  const url = () => `${ctx.server.url}/v1/completions`;

  before(async () => {
    client = openaiClient(ctx.server);
    model = await modelId(ctx.server);
  });

  test('response_format json_schema on /v1/completions', ctx.wrap(async () => {
    const res = await client.completions.create({
      model,
      prompt: ONCE,
      max_tokens: 400,
      temperature: 0,
      response_format: { type: 'json_schema', json_schema: { name: 'person', schema: PERSON } },
    });
    assert.equal(res.choices[0].finish_reason, 'stop', res.choices[0].text);
    assertValid(PERSON, res.choices[0].text);
  }));

  test('guided_json, guided_regex and guided_choice on /v1/completions, several prompts', ctx.wrap(async () => {
    const schema = { type: 'object', properties: { ok: { type: 'boolean' }, n: { type: 'integer', minimum: -5, maximum: 5 } },
      required: ['ok', 'n'], additionalProperties: false };
    const r1 = await postJson(url(), { model, prompt: [ONCE, 'The dog'], max_tokens: 100, temperature: 0.9, seed: 4,
      n: 2, guided_json: schema });
    assert.equal(r1.status, 200, r1.text);
    assert.equal(r1.body.choices.length, 4);
    for (const c of r1.body.choices) assertValid(schema, c.text);
    const r2 = await postJson(url(), { model, prompt: ONCE, max_tokens: 100, temperature: 1, seed: 5,
      nvext: { guided_regex: REGEX } });
    assert.equal(r2.status, 200, r2.text);
    assert.ok(matchesWhole(REGEX, r2.body.choices[0].text), r2.body.choices[0].text);
    const r3 = await postJson(url(), { model, prompt: ONCE, max_tokens: 20, temperature: 1, seed: 6,
      guided_choice: ['red', 'green', 'blue'] });
    assert.equal(r3.status, 200, r3.text);
    assert.ok(['red', 'green', 'blue'].includes(r3.body.choices[0].text), r3.body.choices[0].text);
  }));

  test('echo keeps the prompt outside the constraint', ctx.wrap(async () => {
    const res = await postJson(url(), { model, prompt: ONCE, echo: true, max_tokens: 20, temperature: 0,
      guided_choice: ['A', 'B'] });
    assert.equal(res.status, 200, res.text);
    assert.ok([`${ONCE}A`, `${ONCE}B`].includes(res.body.choices[0].text), res.body.choices[0].text);
  }));
});
