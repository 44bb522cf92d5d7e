// Extraction (issue 22, item 4): the `extract` built-in tool of /v1/responses and a team member
// declared with a schema (member.M.schema), with the real engine and the chat test model through
// the official OpenAI SDK. The tiny model writes nonsense, so the tests check mechanics under
// forced tool choice: the extraction's output is JSON that parses and validates against the
// schema (small schemas of enums and short strings, so generation ends quickly), the item and its
// stream events have their shape, the caller's file reaches the extraction (another key's file is
// a 404), and bad tools are 400s naming the field.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { toFile } from 'openai';

import {
  MODELS, assertErrorShape, modelPath, openaiClient, postJson, serverBinary, useServer,
} from './harness.mjs';

const MODEL = 'stories260K-chatml'; // the served id of the chat test model
const KEY_A = 'sk-extract-test-key-a-0123456789';
const KEY_B = 'sk-extract-test-key-b-9876543210';

const SCHEMA = {
  type: 'object',
  properties: {
    mood: { type: 'string', enum: ['happy', 'sad'] },
    title: { type: 'string', maxLength: 8 },
    count: { type: 'integer', enum: [1, 2, 3] },
  },
  required: ['mood', 'title', 'count'],
  additionalProperties: false,
};

// The schema above, checked by hand: exactly its keys, in range.
function checkAnswer(text) {
  const v = JSON.parse(text);
  assert.deepEqual(Object.keys(v), ['mood', 'title', 'count'], text);
  assert.ok(['happy', 'sad'].includes(v.mood), text);
  assert.equal(typeof v.title, 'string');
  assert.ok([...v.title].length <= 8, text);
  assert.ok([1, 2, 3].includes(v.count), text);
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-extract-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('the extract tool in /v1/responses (two keys, the Files API)', () => {
  const ctx = useServer({
    model: MODELS.chatml,
    args: ['--api-key', KEY_A, '--api-key', KEY_B, '--data-dir', dir, '--ctx-size', 2048],
  });
  const tool = (extra = {}) => ({ type: 'extract', schema: SCHEMA, max_output_tokens: 96, ...extra });
  let fileId;

  test('a forced call reads the caller\'s file and returns JSON under the schema', ctx.wrap(async () => {
    const a = openaiClient(ctx.server, { apiKey: KEY_A });
    const file = await a.files.create({
      file: await toFile(Buffer.from('Tom was happy. He found two red balls.\n'), 'story.txt'), purpose: 'user_data',
    });
    fileId = file.id;
    const r = await a.responses.create({
      input: 'Read the story file.', tools: [tool({ file_ids: [fileId] })], tool_choice: { type: 'extract' },
      max_output_tokens: 200, temperature: 0,
    });
    assert.ok(['completed', 'incomplete'].includes(r.status), r.status);
    const item = r.output[0];
    assert.equal(item.type, 'extract_call', JSON.stringify(r.output));
    assert.match(item.id, /^extract_/);
    assert.equal(item.status, 'completed', JSON.stringify(item));
    assert.equal(item.name, 'extract');
    assert.equal(item.model, MODEL);
    assert.equal(item.error, null);
    // The grammar held the model to the tool's files: the file is named, so its text was read.
    assert.deepEqual(JSON.parse(item.arguments).file_ids, [fileId]);
    checkAnswer(item.output);
    assert.ok(item.usage.input_tokens > 20, JSON.stringify(item.usage)); // the file's text is in the prompt
    assert.ok(item.usage.output_tokens > 0 && item.usage.output_tokens <= 96, JSON.stringify(item.usage));
    assert.equal(typeof item.duration_ms, 'number');
    assert.ok(!r.output.some((o) => o.type === 'function_call'), 'a built-in call is not the client\'s');

    // Stored with the Response, and shown to the model again through previous_response_id.
    const next = await a.responses.create({
      previous_response_id: r.id, input: 'Thanks.', tools: [tool({ file_ids: [fileId] })], tool_choice: 'none',
      max_output_tokens: 8, temperature: 0,
    });
    assert.ok(['completed', 'incomplete'].includes(next.status), next.status);
    const items = await a.responses.inputItems.list(next.id);
    assert.ok(items.data.some((i) => i.type === 'extract_call' && i.id === item.id), JSON.stringify(items.data));
  }));

  test('streamed: the extract_call item is added in progress, then done at the same index', ctx.wrap(async () => {
    const a = openaiClient(ctx.server, { apiKey: KEY_A });
    const stream = await a.responses.create({
      input: 'Tom was sad. He had one cat.', tools: [tool({ name: 'story_facts' })],
      tool_choice: { type: 'extract' }, max_output_tokens: 200, temperature: 0, stream: true,
    });
    const seen = [];
    let final = null;
    for await (const ev of stream) {
      if (ev.type === 'response.output_item.added' || ev.type === 'response.output_item.done') {
        seen.push([ev.type, ev.item.type, ev.output_index, ev.item]);
      }
      if (ev.type === 'response.completed' || ev.type === 'response.incomplete') {
        final = ev.response;
      }
    }
    assert.ok(final, JSON.stringify(seen));
    assert.deepEqual(seen.slice(0, 2).map(([t, it, i]) => [t, it, i]),
      [['response.output_item.added', 'extract_call', 0], ['response.output_item.done', 'extract_call', 0]]);
    assert.equal(seen[0][3].status, 'in_progress');
    assert.equal(seen[0][3].output, null);
    const done = seen[1][3];
    assert.equal(done.status, 'completed', JSON.stringify(done));
    assert.equal(done.name, 'story_facts');
    checkAnswer(done.output);
    assert.deepEqual(final.output[0], done);
    const metrics = await (await fetch(`${ctx.server.url}/metrics`, {
      headers: { authorization: `Bearer ${KEY_A}` },
    })).text();
    assert.match(metrics,
      new RegExp(`^inferbox_tool_calls_total\\{type="extract_call",server="${MODEL}",tool="story_facts",outcome="ok"\\} 1`, 'm'));
  }));

  test('tool_choice naming one of two extract tools forces that one, and an unknown name is a 400',
    ctx.wrap(async () => {
      const a = openaiClient(ctx.server, { apiKey: KEY_A });
      const tools = [tool({ name: 'people' }), tool({ name: 'places' })];
      const r = await a.responses.create({
        input: 'Tom was happy in the park.', tools, tool_choice: { type: 'extract', name: 'places' },
        max_output_tokens: 200, temperature: 0,
      });
      const calls = r.output.filter((o) => o.type === 'extract_call');
      assert.ok(calls.length >= 1, JSON.stringify(r.output));
      assert.equal(calls[0].name, 'places', JSON.stringify(calls[0]));
      checkAnswer(calls[0].output);

      const res = await postJson(`${ctx.server.url}/v1/responses`,
        { input: 'x', max_output_tokens: 8, tools, tool_choice: { type: 'extract', name: 'dates' } },
        { headers: { authorization: `Bearer ${KEY_A}` } });
      const err = assertErrorShape(res, 400);
      assert.equal(err.param, 'tool_choice', JSON.stringify(err));
      assert.match(err.message, /'extract dates', which matches none of this request's built-in tools/);
    }));

  test('refused: another key\'s file, unknown fields, a model not served, bounds', ctx.wrap(async () => {
    const post = (body, key = KEY_A) => postJson(`${ctx.server.url}/v1/responses`,
      { input: 'x', max_output_tokens: 8, ...body }, { headers: { authorization: `Bearer ${key}` } });
    // Key B naming key A's file: the same 404 as a file that does not exist.
    for (const id of [fileId, 'file-000000000000000000000000']) {
      const res = await post({ tools: [tool({ file_ids: [id] })] }, KEY_B);
      const err = assertErrorShape(res, 404);
      assert.equal(err.param, 'tools[0].file_ids');
      assert.match(err.message, new RegExp(id));
    }
    const cases = [
      [tool({ url: 'http://127.0.0.1/' }), 'tools[0].url', /not a field of an extract tool/],
      [tool({ model: 'nope' }), 'tools[0].model', /'nope' is not served/],
      [tool({ model: 'team/x' }), 'tools[0].model', /is not served/],
      [tool({ max_output_tokens: 5000 }), 'tools[0].max_output_tokens', /from 1 to 4096/],
      [tool({ schema: { type: 'string', maxLength: 5000 } }), 'tools[0].schema', /exceeds the limit of 1000/],
      [tool({ schema: { type: 'object', description: 'd'.repeat(70_000) } }), 'tools[0].schema', /the limit is 65536/],
      [tool({ file_ids: ['a', 'b', 'c', 'd', 'e'] }), 'tools[0].file_ids', /1 to 4 file ids/],
      [{ type: 'extract' }, 'tools[0].schema', /must be a JSON Schema object/],
    ];
    for (const [t, param, message] of cases) {
      const err = assertErrorShape(await post({ tools: [t] }), 400);
      assert.equal(err.param, param, JSON.stringify(err));
      assert.match(err.message, message);
    }
    // Two tools with one name.
    const twice = assertErrorShape(await post({ tools: [tool(), tool()] }), 400);
    assert.match(twice.message, /two enabled tools are named 'extract'/);
  }));
});

describe('a team member with a schema (member.reader.schema)', () => {
  const team = [
    `crew=${MODEL}`,
    `member.reader=${MODEL}`,
    'member.reader.instructions=You read stories.',
    `member.reader.schema=${JSON.stringify(SCHEMA)}`,
    'member.reader.temperature=0',
    'member.reader.max-tokens=96',
  ].join(';');
  // The Files API off: the member's function is {task} alone, so the captain's call cannot name
  // files that do not exist.
  const ctx = useServer({
    model: MODELS.chatml, args: ['--ctx-size', 2048, '--files-max-total-bytes', 'off', '--team', team],
  });

  test('the captain\'s forced call gets JSON under the member\'s schema', ctx.wrap(async () => {
    const api = openaiClient(ctx.server);
    const r = await api.responses.create({
      model: 'team/crew', input: 'Tom was happy.', tool_choice: { type: 'function', name: 'reader' },
      max_output_tokens: 400, temperature: 0,
    });
    const member = r.output[0];
    assert.equal(member.type, 'team_member_call', JSON.stringify(r.output));
    assert.equal(member.member, 'reader');
    assert.equal(member.status, 'completed', JSON.stringify(member));
    assert.equal(typeof JSON.parse(member.arguments).task, 'string');
    assert.equal(JSON.parse(member.arguments).file_ids, undefined, 'no Files API here: the member takes no files');
    checkAnswer(member.output);
    assert.ok(member.usage.output_tokens <= 96, JSON.stringify(member.usage));
  }));
});

test('a config file\'s member schema, as a mapping, becomes JSON text in the --team entry', () => {
  const file = path.join(dir, 'team.yaml');
  fs.writeFileSync(file, [
    'serve:',
    '  team:',
    '    - name: crew',
    '      captain: big',
    '      members:',
    '        - name: reader',
    '          model: small',
    '          schema: {type: object, properties: {zeta: {type: string, maxLength: 8}, alpha: {enum: [1, "2", true, null]}}}',
    '        - {name: raw, model: small, schema: \'{"type": "string"}\'}',
    '',
  ].join('\n'));
  const res = spawnSync(serverBinary(), ['--config', file, 'config', '--json'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(res.status, 0, res.stderr);
  const team = JSON.parse(res.stdout).settings.find((s) => s.name === 'serve.team');
  assert.equal(team.value, 'crew=big;member.reader=small;member.reader.schema='
    + '{"type":"object","properties":{"zeta":{"type":"string","maxLength":8},"alpha":{"enum":[1,"2",true,null]}}};'
    + 'member.raw=small;member.raw.schema={"type": "string"}');
});

test('serve refuses a member schema over its bounds, naming the entry and the limit', () => {
  const cases = [
    [`member.r.schema=${JSON.stringify({ type: 'object', description: 'd'.repeat(70_000) })}`,
      /--team: team 'crew': member\.r\.schema is 700\d\d bytes; the limit is 65536/],
    ['member.r.schema={"type":"array","maxItems":5000}', /member\.r\.schema: maxItems 5000 at \/ exceeds the limit of 1000/],
    ['member.r.schema=nope', /member\.r\.schema is a string but not a JSON object/],
  ];
  for (const [entry, why] of cases) {
    const res = spawnSync(serverBinary(), ['serve', '--model', modelPath(MODELS.chatml), '--port', '0',
      '--team', `crew=${MODEL};member.r=${MODEL};${entry}`], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(res.status, 1, `${entry.slice(0, 80)}: ${res.stdout}${res.stderr}`.slice(0, 2000));
    assert.match(`${res.stdout}${res.stderr}`, why);
  }
});
