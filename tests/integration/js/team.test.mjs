// Teams (issue 22, item 6): `--team` serves a captain and its members as the model id team/NAME on
// /v1/responses and /v1/chat/completions. Here a real server with the chat test model as captain
// and members, one member with the `sql` tool on a SQLite file the test creates, driven through the
// official OpenAI SDK. The tiny model writes nonsense, so the tests check mechanics under forced
// tool choice: the captain's first step must call the member named (grammar: {"task": string}),
// the member's first step must call its sql tool (member.analyst.tool-choice=required), and the
// trace shows captain -> member -> tool with the rows exactly as the sqlite3 shell returns them.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { makeShop, sqliteRows } from './agent-fixtures.mjs';
import { MODELS, modelPath, openaiClient, postJson, serverBinary, useServer } from './harness.mjs';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-team-'));
const shop = makeShop(dir);
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const MODEL = 'stories260K-chatml'; // the served id of the chat test model (its file's stem)
const TEAM = [
  `crew=${MODEL}`,
  'instructions=You lead a small team\\; ask the analyst for numbers.',
  `member.analyst=${MODEL}`,
  'member.analyst.instructions=You answer questions about the shop database.',
  'member.analyst.tools=sql:shop',
  'member.analyst.tool-choice=required',
  'member.analyst.temperature=0',
  'member.analyst.max-tool-calls=1',
  'member.analyst.max-tokens=400',
  'member.analyst.max-time-ms=150000',
  `member.writer=${MODEL}`,
  'member.writer.instructions=You write one short line.',
  'member.writer.temperature=0',
  'member.writer.max-tokens=64',
].join(';');

// The sql tool's grammar is large, and a member's run is two steps on it: slower than one request.
const client = (server) => openaiClient(server, { timeout: 180_000 });

// Checks one sql_call a member made: a SELECT the grammar allowed whose rows are SQLite's own.
function checkSqlCall(item, parentId) {
  assert.equal(item.type, 'sql_call', JSON.stringify(item));
  assert.equal(item.member, 'analyst');
  if (parentId !== undefined) { // an output item of its own (nested under its member in nvext.trace)
    assert.equal(item.team, 'crew');
    assert.equal(item.parent_id, parentId);
  }
  assert.equal(item.database, 'shop');
  assert.equal(item.status, 'completed', JSON.stringify(item));
  const { query } = JSON.parse(item.arguments);
  assert.match(query, /^SELECT .+ FROM (items|orders)\b/);
  const result = JSON.parse(item.output);
  const expected = sqliteRows(shop, query);
  assert.deepEqual(result.rows, expected.slice(0, result.rows.length), `rows of ${query}`);
  if (!result.truncated) {
    assert.equal(result.rows.length, expected.length);
  }
}

// Checks the analyst's member-call item (a finished one).
function checkMemberCall(item) {
  assert.equal(item.type, 'team_member_call', JSON.stringify(item));
  assert.equal(item.team, 'crew');
  assert.equal(item.member, 'analyst');
  assert.equal(item.name, 'analyst');
  assert.equal(item.model, MODEL);
  assert.equal(typeof item.task, 'string');
  assert.equal(JSON.parse(item.arguments).task, item.task, 'the task is the grammar-held argument');
  assert.ok(['completed', 'incomplete', 'failed'].includes(item.status), JSON.stringify(item));
  assert.equal(item.backend, 'local');
  assert.ok(item.usage.input_tokens > 0 && item.usage.output_tokens > 0, JSON.stringify(item.usage));
  assert.ok(Number.isInteger(item.duration_ms) && item.duration_ms >= 0);
  if (item.status === 'completed') {
    assert.equal(typeof item.output, 'string');
  } else {
    assert.equal(typeof item.error, 'string'); // a budget (max_tool_calls, max_output_tokens): the captain was told
  }
}

describe('a team served as team/crew (--team, chat model as captain and members, --sql-database shop)', () => {
  const ctx = useServer({
    model: MODELS.chatml,
    args: ['--ctx-size', 4096, '--sql-database', `shop=${shop}`, '--team', TEAM],
  });
  const FORCE_ANALYST = { type: 'function', name: 'analyst' };

  test('/v1/models lists the team with its members', ctx.wrap(async () => {
    const models = await (await fetch(`${ctx.server.url}/v1/models`)).json();
    const team = models.data.find((m) => m.id === 'team/crew');
    assert.ok(team, JSON.stringify(models.data.map((m) => m.id)));
    assert.equal(team.owned_by, 'inferbox');
    assert.equal(team.team.captain.model, MODEL);
    assert.deepEqual(team.team.members.map((m) => [m.name, m.model, m.tools]),
      [['analyst', MODEL, ['sql:shop']], ['writer', MODEL, []]]);
  }));

  test('responses.create: captain -> analyst -> sql, with SQLite\'s rows, then the captain goes on',
    ctx.wrap(async () => {
      const api = client(ctx.server);
      const r = await api.responses.create({
        model: 'team/crew', input: 'How many items does the shop have?', tool_choice: FORCE_ANALYST,
        max_output_tokens: 400, temperature: 0,
      });
      assert.equal(r.model, 'team/crew');
      assert.ok(['completed', 'incomplete'].includes(r.status), r.status);
      const member = r.output[0];
      checkMemberCall(member);
      const sql = r.output.filter((o) => o.type === 'sql_call');
      assert.ok(sql.length >= 1, JSON.stringify(r.output));
      for (const item of sql) {
        checkSqlCall(item, member.id);
        assert.ok(r.output.indexOf(item) > 0, 'the member\'s calls follow its call');
      }
      assert.ok(!r.output.some((o) => o.type === 'function_call'), 'members are not the client\'s to call');
      assert.deepEqual(r.tool_choice, FORCE_ANALYST);
      const metrics = await (await fetch(`${ctx.server.url}/metrics`)).text();
      assert.match(metrics, /^inferbox_team_member_calls_total\{team="crew",member="analyst",outcome="(ok|budget)"\} [1-9]/m);
      assert.match(metrics, /^inferbox_team_member_call_seconds_count\{team="crew",member="analyst"\} [1-9]/m);
      assert.match(metrics, /^inferbox_tool_calls_total\{type="sql_call",server="shop",tool="sql",outcome="ok"\} [1-9]/m);

      // previous_response_id: the captain sees its member call and the result, and answers.
      const next = await api.responses.create({
        model: 'team/crew', previous_response_id: r.id, input: 'Thanks.', tool_choice: 'none',
        max_output_tokens: 64, temperature: 0,
      });
      assert.ok(['completed', 'incomplete'].includes(next.status), next.status);
      assert.equal(next.output.at(-1).type, 'message');
    }));

  test('streamed: the member call is added when it starts, its sql call follows, then it is done',
    ctx.wrap(async () => {
      const api = client(ctx.server);
      const stream = await api.responses.create({
        model: 'team/crew', input: 'List the items.', tool_choice: FORCE_ANALYST, max_output_tokens: 400,
        temperature: 0, stream: true,
      });
      const seen = []; // [event type, item type, output_index, status]
      let final = null;
      for await (const ev of stream) {
        if (ev.type === 'response.output_item.added' || ev.type === 'response.output_item.done') {
          seen.push([ev.type, ev.item.type, ev.output_index, ev.item.status, ev.item]);
        }
        if (ev.type === 'response.completed' || ev.type === 'response.incomplete') {
          final = ev.response;
        }
      }
      assert.ok(final, JSON.stringify(seen.map((s) => s.slice(0, 4))));
      const added = seen.findIndex(([t, it]) => t === 'response.output_item.added' && it === 'team_member_call');
      const sql = seen.findIndex(([t, it]) => t === 'response.output_item.done' && it === 'sql_call');
      const done = seen.findIndex(([t, it]) => t === 'response.output_item.done' && it === 'team_member_call');
      assert.ok(added >= 0 && sql > added && done > sql, JSON.stringify(seen.map((s) => s.slice(0, 4))));
      assert.equal(seen[added][3], 'in_progress');
      assert.equal(seen[done][2], seen[added][2], 'done at the index it was added at');
      checkMemberCall(seen[done][4]);
      checkSqlCall(seen[sql][4], seen[done][4].id);
      // The final Response holds the items at the indexes the stream gave them.
      assert.equal(final.output[seen[done][2]].id, seen[done][4].id);
      assert.equal(final.output[seen[sql][2]].id, seen[sql][4].id);
    }));

  test('chat.completions.create: the answer, and the trace under nvext.trace', ctx.wrap(async () => {
    const api = client(ctx.server);
    const c = await api.chat.completions.create({
      model: 'team/crew', messages: [{ role: 'user', content: 'How many orders are there?' }],
      tool_choice: { type: 'function', function: { name: 'analyst' } }, max_tokens: 400, temperature: 0,
    });
    assert.equal(c.model, 'team/crew');
    assert.equal(typeof c.choices[0].message.content, 'string');
    assert.equal(c.choices[0].message.tool_calls, undefined, 'members are not the client\'s to call');
    const trace = c.nvext.trace;
    assert.ok(Array.isArray(trace) && trace.length >= 1, JSON.stringify(c.nvext));
    checkMemberCall(trace[0]);
    assert.ok(trace[0].calls.length >= 1, JSON.stringify(trace[0]));
    for (const call of trace[0].calls) {
      checkSqlCall(call);
    }
  }));

  test('chat streamed: trace events arrive live, the whole trace with the last chunk', ctx.wrap(async () => {
    const api = client(ctx.server);
    const stream = await api.chat.completions.create({
      model: 'team/crew', messages: [{ role: 'user', content: 'Ask the writer for a line.' }],
      tool_choice: { type: 'function', function: { name: 'writer' } }, max_tokens: 400, temperature: 0,
      stream: true,
    });
    const events = [];
    let trace = null;
    for await (const chunk of stream) {
      if (chunk.nvext?.trace_event) {
        events.push(chunk.nvext.trace_event);
      }
      if (chunk.nvext?.trace) {
        trace = chunk.nvext.trace;
      }
    }
    assert.ok(events.length >= 2, JSON.stringify(events));
    assert.equal(events[0].type, 'team_member_call');
    assert.equal(events[0].member, 'writer');
    assert.equal(events[0].status, 'in_progress');
    assert.ok(trace && trace[0].member === 'writer', JSON.stringify(trace));
    assert.notEqual(trace[0].status, 'in_progress');
    assert.ok(trace[0].usage.output_tokens <= 64, 'the member\'s own token budget');
  }));

  test('inferbox team run: the trace live (captain, member, its sql call), then the answer the server stored',
    ctx.wrap(async () => {
      const res = spawnSync(serverBinary(), ['team', 'run', 'crew', 'How many items does the shop have?',
        '--url', ctx.server.url, '--member', 'analyst', '--temperature', '0', '--max-output-tokens', '400'],
      { encoding: 'utf8', timeout: 200_000, env: { ...process.env, INFERBOX_API_KEY: '' } });
      assert.equal(res.status, 0, `${res.stdout}${res.stderr}`);
      const out = res.stdout;
      const lines = out.split('\n');
      // The head: the team, its captain and every member, from /v1/models.
      assert.equal(lines[0], `team/crew at ${ctx.server.url}`);
      assert.equal(lines[1], `  captain: ${MODEL}`);
      assert.equal(lines[2], `  members: analyst (${MODEL}; tools sql:shop), writer (${MODEL})`);
      assert.equal(lines[3], 'task: How many items does the shop have?');
      assert.equal(lines[4], 'captain, step 1:');
      assert.match(lines[5], /^  -> analyst: /);
      // The member's own tool call, then the member's end: where it ran, tokens, time.
      const sqlAt = lines.findIndex((l) => l.startsWith('     analyst used sql (shop) '));
      const doneAt = lines.findIndex((l) => l.startsWith('  <- analyst '));
      assert.ok(sqlAt > 5 && doneAt > sqlAt, out);
      assert.match(lines[sqlAt], /^     analyst used sql \(shop\) \{\s*"query"\s*:\s*"SELECT .* => \{"columns":/);
      const done = lines[doneAt].match(
        /^  <- analyst (completed|incomplete|failed)[^:]*: model (\S+) on local(?: \(route [^)]*\))?, (\d+) in \+ (\d+) out tokens, (\d+) ms$/);
      assert.ok(done, lines[doneAt]);
      assert.equal(done[2], MODEL);
      // The summary names the stored response: the trace must be what the server kept.
      const summary = lines.findLast((l) => /^(completed|incomplete)/.test(l));
      const m = summary?.match(/^(completed|incomplete)[^:]*: response (\S+), captain (\d+) in \+ (\d+) out tokens, 1 member call, [\d.]+ s$/);
      assert.ok(m, out);
      const stored = await (await fetch(`${ctx.server.url}/v1/responses/${m[2]}`)).json();
      assert.equal(stored.status, m[1]);
      assert.equal(stored.usage.input_tokens, Number(m[3]));
      assert.equal(stored.usage.output_tokens, Number(m[4]));
      const member = stored.output.find((o) => o.type === 'team_member_call');
      assert.equal(member.status, done[1]);
      assert.equal(member.usage.input_tokens, Number(done[3]));
      assert.equal(member.usage.output_tokens, Number(done[4]));
      assert.equal(member.duration_ms, Number(done[5]));
      const message = stored.output.filter((o) => o.type === 'message').at(-1);
      const answer = message ? message.content.map((c) => c.text).join('') : null;
      const answerAt = out.lastIndexOf('\nanswer: ');
      assert.ok(answerAt > 0, out);
      const printed = out.slice(answerAt + '\nanswer: '.length, out.lastIndexOf(`\n${summary}`));
      if (answer) {
        assert.equal(printed, answer.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, '?'));
        assert.ok(out.includes(`captain: ${printed}`), 'the captain\'s text was shown as it came');
      } else {
        assert.equal(printed, '(none: the run ended before the captain answered)');
      }
    }));

  test('inferbox team run: an unknown team exits 1 with the server\'s message', ctx.wrap(async () => {
    const res = spawnSync(serverBinary(), ['team', 'run', 'nosuch', 'x', '--url', ctx.server.url],
      { encoding: 'utf8', timeout: 30_000 });
    assert.equal(res.status, 1, `${res.stdout}${res.stderr}`);
    assert.match(res.stderr, /^inferbox team: the server answered HTTP 404: .*team\/nosuch/m);
  }));

  test('refused: completions on a team, a tool_choice naming nobody, n > 1', ctx.wrap(async () => {
    const base = ctx.server.url;
    let res = await postJson(`${base}/v1/completions`, { model: 'team/crew', prompt: 'x', max_tokens: 4 });
    assert.equal(res.status, 400, res.text);
    assert.match(res.body.error.message, /answers chat requests/);
    res = await postJson(`${base}/v1/responses`, {
      model: 'team/crew', input: 'x', tool_choice: { type: 'function', name: 'nobody' },
    });
    assert.equal(res.status, 400, res.text);
    assert.match(res.body.error.message, /tool_choice names a function that is not among the tools/);
    res = await postJson(`${base}/v1/chat/completions`, {
      model: 'team/crew', messages: [{ role: 'user', content: 'x' }], n: 2,
    });
    assert.equal(res.status, 400, res.text);
    assert.equal(res.body.error.param, 'n');
    res = await postJson(`${base}/v1/chat/completions`, {
      model: 'team/other', messages: [{ role: 'user', content: 'x' }],
    });
    assert.equal(res.status, 404, res.text);
  }));
});

test('serve refuses a bad team at start, naming the entry', () => {
  const cases = [
    [`crew=${MODEL};member.a=${MODEL};member.a=${MODEL}`, /--team: team 'crew': the member 'a' is given twice/],
    [`crew=${MODEL};member.a=nosuch`, /--team: team 'crew', member 'a': unknown model 'nosuch' \(this server serves: stories260K-chatml/],
    [`crew=nosuch;member.a=${MODEL}`, /team 'crew', the captain: unknown model 'nosuch'/],
    [`crew=${MODEL};member.a=${MODEL};member.a.tools=sql:books`, /team 'crew', member 'a': the tool 'sql:books' names no SQL database of this server \(it has shop\)/],
    [`crew=${MODEL};member.a=${MODEL};member.a.tools=mcp:fs`, /the tool 'mcp:fs' names no MCP server of this server \(it has none: --mcp-server\)/],
    [`crew=${MODEL};member.a=${MODEL};member.a.colour=red`, /team 'crew': member.a.colour: unknown key/],
    [`crew=${MODEL}`, /team 'crew' has no members/],
  ];
  for (const [spec, why] of cases) {
    const res = spawnSync(serverBinary(), ['serve', '--model', modelPath(MODELS.chatml), '--port', '0',
      '--sql-database', `shop=${shop}`, '--team', spec], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(res.status, 1, `${spec}: ${res.stdout}${res.stderr}`);
    assert.match(`${res.stdout}${res.stderr}`, why);
  }
});

test('a config file\'s team mapping becomes the one-line --team entry', () => {
  const file = path.join(dir, 'team.yaml');
  fs.writeFileSync(file, [
    'serve:',
    '  team:',
    '    - name: crew',
    '      captain: {model: big, instructions: "Lead; then answer."}',
    '      members:',
    '        - {name: analyst, model: small, tools: [sql:shop, mcp:fs], max-tool-calls: 2}',
    '        - name: writer',
    '          model: small',
    '',
  ].join('\n'));
  const res = spawnSync(serverBinary(), ['--config', file, 'config', '--json'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(res.status, 0, res.stderr);
  const team = JSON.parse(res.stdout).settings.find((s) => s.name === 'serve.team');
  assert.equal(team.value, 'crew=big;instructions=Lead\\; then answer.;member.analyst=small;'
    + 'member.analyst.tools=sql:shop,mcp:fs;member.analyst.max-tool-calls=2;member.writer=small');
});

test('inferbox team run: a server that is not there, a bad name, a missing task', () => {
  for (const [args, why] of [
    [['crew', 'x', '--url', 'http://127.0.0.1:1'], /^inferbox team: cannot reach http:\/\/127\.0\.0\.1:1\/v1\/models/m],
    [['bad name', 'x'], /^inferbox team: 'bad name' is not a team name/m],
    [['crew', '', '--url', 'http://127.0.0.1:1'], /^inferbox team: the task must be 1 to 262144 bytes/m],
    [['crew', 'x', '--url', 'ftp://h'], /^inferbox team: --url 'ftp:\/\/h' is not an http:\/\/ or https:\/\/ URL/m],
  ]) {
    const res = spawnSync(serverBinary(), ['team', 'run', ...args], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(res.status, 1, `${args}: ${res.stdout}${res.stderr}`);
    assert.match(res.stderr, why);
  }
});
