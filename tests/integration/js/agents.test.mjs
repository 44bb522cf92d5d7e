// The server-side tool loop (issue 22): /v1/responses runs built-in tools itself. Here the `sql`
// tool on a real SQLite file, with the real engine and the chat test model under forced tool
// choice. The tiny model writes nonsense, so the tests check mechanics: the call is a SELECT the
// grammar allowed, the rows it returned are exactly what SQLite returns for that query (an
// exact-match probe with the sqlite3 shell), the rows go back to the model, which then answers,
// and the database file is never changed.
import { after, before as beforeAll, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { EVERYTHING_JS, makeShop, sqliteRows as rowsOf } from './agent-fixtures.mjs';
import {
  MODELS, assertErrorShape, freePort, modelPath, openaiClient, postJson, serverBinary, useServer,
} from './harness.mjs';

const EVERYTHING = `everything=stdio:${process.execPath} ${EVERYTHING_JS} stdio` +
  ';allowed-tools=echo,get-sum,trigger-long-running-operation;timeout-ms=1500';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-agents-'));
const shop = makeShop(dir);
const digest = () => crypto.createHash('sha256').update(fs.readFileSync(shop)).digest('hex');
const before = digest();
after(() => fs.rmSync(dir, { recursive: true, force: true }));

// What SQLite itself answers for a query, as rows of values (the exact-match probe).
function sqliteRows(query) {
  return rowsOf(shop, query);
}

const SQL_TOOL = { type: 'sql', database: 'shop' };

describe('the sql tool in /v1/responses (--sql-database shop=FILE, chat model, --ctx-size 4096)', () => {
  // The tool's description and grammar carry the schema: more than the model's trained 512 tokens.
  const ctx = useServer({ model: MODELS.chatml, args: ['--ctx-size', 4096, '--sql-database', `shop=${shop}`] });

  test('/v1/metadata lists the database with the tables sqlite3 lists', ctx.wrap(async () => {
    const meta = await (await fetch(`${ctx.server.url}/v1/metadata`)).json();
    const tables = execFileSync('sqlite3', ['-readonly', shop, 'SELECT name FROM sqlite_schema WHERE type = \'table\' ORDER BY name'],
      { encoding: 'utf8' }).trim().split('\n');
    assert.equal(meta.builtin_tools.sql.length, 1);
    assert.equal(meta.builtin_tools.sql[0].database, 'shop');
    assert.equal(meta.builtin_tools.sql[0].engine, 'sqlite');
    assert.deepEqual([...meta.builtin_tools.sql[0].tables].sort(), tables);
    assert.deepEqual(meta.builtin_tools.mcp, []);
  }));

  const checkCall = (item) => {
    assert.equal(item.type, 'sql_call', JSON.stringify(item));
    assert.equal(item.status, 'completed', JSON.stringify(item));
    assert.equal(item.database, 'shop');
    assert.equal(item.name, 'sql');
    assert.equal(item.error, null);
    const { query } = JSON.parse(item.arguments);
    assert.match(query, /^SELECT .+ FROM (items|orders)\b/, 'the grammar admits SELECTs over the real tables');
    const result = JSON.parse(item.output);
    assert.ok(Array.isArray(result.columns) && result.columns.length > 0, item.output);
    assert.deepEqual(result.rows, sqliteRows(query).slice(0, result.rows.length), `rows of ${query}`);
    if (!result.truncated) {
      assert.equal(result.rows.length, sqliteRows(query).length);
    }
    return query;
  };

  test('a forced call runs on SQLite, its exact rows come back, then the model answers (OpenAI SDK)',
    ctx.wrap(async () => {
      const client = openaiClient(ctx.server);
      const r = await client.responses.create({
        input: 'How many items are there?', tools: [SQL_TOOL], tool_choice: { type: 'sql' },
        max_output_tokens: 400, temperature: 0,
      });
      assert.ok(['completed', 'incomplete'].includes(r.status), r.status);
      assert.ok(r.output.length >= 2, JSON.stringify(r.output));
      checkCall(r.output[0]);
      const message = r.output.find((o) => o.type === 'message');
      assert.ok(message, 'the model answered after the rows');
      assert.ok(!r.output.some((o) => o.type === 'function_call'), 'a built-in call is not the client\'s to make');
      // Usage counts both steps: the second prompt holds the first, its call and the rows.
      assert.ok(r.usage.input_tokens > 1000, JSON.stringify(r.usage));
      assert.ok(r.usage.output_tokens <= 400);
      assert.equal(digest(), before, 'the database file is unchanged');
      const metrics = await (await fetch(`${ctx.server.url}/metrics`)).text();
      assert.match(metrics, /^inferbox_tool_loop_overhead_seconds_count [1-9]/m);
      assert.match(metrics, /^inferbox_tool_calls_total\{type="sql_call",server="shop",tool="sql",outcome="ok"\} [1-9]/m);
    }));

  test('streamed: the sql_call item arrives between the steps, then the answer\'s text', ctx.wrap(async () => {
    const client = openaiClient(ctx.server);
    const stream = await client.responses.create({
      input: 'List the items.', tools: [SQL_TOOL], tool_choice: { type: 'sql' }, max_output_tokens: 400,
      temperature: 0, stream: true,
    });
    const types = [];
    let added = null;
    let done = null;
    let final = null;
    let text = '';
    for await (const ev of stream) {
      types.push(ev.type);
      if (ev.type === 'response.output_item.added' && ev.item.type === 'sql_call') {
        added = ev.item;
      }
      if (ev.type === 'response.output_item.done' && ev.item.type === 'sql_call') {
        done = ev.item;
      }
      if (ev.type === 'response.output_text.delta') {
        text += ev.delta;
      }
      if (ev.type === 'response.completed' || ev.type === 'response.incomplete') {
        final = ev.response;
      }
    }
    assert.ok(added && done && final, types.join(' '));
    assert.equal(added.status, 'in_progress');
    const query = checkCall(done);
    assert.ok(!types.includes('response.function_call_arguments.delta'), 'no client call was streamed');
    assert.ok(types.indexOf('response.output_item.done') < types.indexOf('response.output_text.delta'),
      'the rows come before the answer');
    assert.equal(JSON.parse(final.output[0].arguments).query, query);
    assert.equal(final.output.find((o) => o.type === 'message').content[0].text, text);
  }));

  test('previous_response_id continues a run whose output holds a sql_call', ctx.wrap(async () => {
    const client = openaiClient(ctx.server);
    const first = await client.responses.create({
      input: 'Prices?', tools: [SQL_TOOL], tool_choice: { type: 'sql' }, max_output_tokens: 300, temperature: 0,
    });
    checkCall(first.output[0]);
    const next = await client.responses.create({
      previous_response_id: first.id, input: 'And the cheapest?', max_output_tokens: 16, temperature: 0,
    });
    assert.equal(next.previous_response_id, first.id);
    const bare = await client.responses.create({ input: 'And the cheapest?', max_output_tokens: 1, temperature: 0 });
    const rows = JSON.parse(first.output[0].output);
    // The earlier run (its call and rows included) is in the prompt.
    assert.ok(next.usage.input_tokens > bare.usage.input_tokens + JSON.stringify(rows.rows).length / 9,
      `${next.usage.input_tokens} vs ${bare.usage.input_tokens}`);
  }));

  test('bad requests: an unknown database, max_tool_calls out of range, a function named like the tool',
    ctx.wrap(async () => {
      const url = `${ctx.server.url}/v1/responses`;
      const unknown = await postJson(url, { input: 'x', tools: [{ type: 'sql', database: 'nope' }] });
      const e1 = assertErrorShape(unknown, 400);
      assert.equal(e1.param, 'tools[0].database');
      assert.match(e1.message, /no SQL database 'nope' on this server \(it has: shop\)/);
      for (const bad of [0, 33, 'many']) {
        const res = await postJson(url, { input: 'x', tools: [SQL_TOOL], max_tool_calls: bad });
        assert.equal(assertErrorShape(res, 400).param, 'max_tool_calls', res.text);
      }
      const clash = await postJson(url, {
        input: 'x', tools: [SQL_TOOL, { type: 'function', name: 'sql', parameters: { type: 'object' } }],
      });
      assert.match(assertErrorShape(clash, 400).message, /the name of a built-in tool/);
      const other = await postJson(url, { input: 'x', tools: [{ type: 'web_search' }] });
      assert.match(assertErrorShape(other, 400).message, /must be "function", "sql", "mcp", "file_search" or "extract"/);
    }));
});

describe('the correction budget (nvext.max_tool_corrections): a database whose every read fails at run time', () => {
  // One view, whose rows exist only if abs(-2^63) does not overflow: every query that reads it
  // fails when SQLite steps it ("integer overflow"), the schema is still readable at start.
  const broken = path.join(dir, 'broken.db');
  execFileSync('sqlite3', [broken,
    'CREATE VIEW broken AS SELECT 1 AS n, \'a\' AS label WHERE abs(-9223372036854775808) > 0;']);
  const ctx = useServer({ model: MODELS.chatml, args: ['--ctx-size', 4096, '--sql-database', `broken=${broken}`] });
  const url = () => `${ctx.server.url}/v1/responses`;

  test('with no corrections allowed, the first failed query ends the run, incomplete, naming the budget',
    ctx.wrap(async () => {
      const res = await postJson(url(), {
        input: 'How many rows?', tools: [{ type: 'sql', database: 'broken' }], tool_choice: { type: 'sql' },
        max_output_tokens: 300, temperature: 0, nvext: { max_tool_corrections: 0 },
      });
      assert.equal(res.status, 200, res.text);
      const r = res.body;
      assert.equal(r.status, 'incomplete', res.text);
      assert.deepEqual(r.incomplete_details, { reason: 'max_tool_corrections' });
      const calls = r.output.filter((o) => o.type === 'sql_call');
      assert.equal(calls.length, 1, JSON.stringify(r.output));
      assert.equal(calls[0].status, 'failed', JSON.stringify(calls[0]));
      assert.match(calls[0].error, /integer overflow/);
      // The probe: the sqlite3 shell fails on the model's query too.
      const { query } = JSON.parse(calls[0].arguments);
      assert.throws(() => rowsOf(broken, query), /integer overflow/, query);
    }));

  test('nvext.max_tool_corrections out of range is a 400 naming it', ctx.wrap(async () => {
    for (const bad of [-1, 9, 'two']) {
      const res = await postJson(url(), {
        input: 'x', tools: [{ type: 'sql', database: 'broken' }], nvext: { max_tool_corrections: bad },
      });
      const err = assertErrorShape(res, 400);
      assert.equal(err.param, 'nvext.max_tool_corrections', res.text);
      assert.match(err.message, /from 0 to 8/);
    }
  }));
});

test('serve refuses an --sql-database it cannot open, naming it', () => {
  for (const [spec, why] of [
    [`bad name=${shop}`, /database name 'bad name'/],
    [`x=${path.join(dir, 'missing.db')}`, /SQL database 'x' \(.*missing\.db\): cannot open it read-only/],
    ['nofile', /expected NAME=PATH/],
  ]) {
    const res = spawnSync(serverBinary(), ['serve', '--model', modelPath(MODELS.chatml), '--port', '0',
      '--sql-database', spec], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(res.status, 1, `${spec}: ${res.stderr}`);
    assert.match(`${res.stdout}${res.stderr}`, why);
  }
});

describe('MCP tools in /v1/responses (--mcp-server everything=stdio:node server-everything, real MCP server)', () => {
  const ctx = useServer({ model: MODELS.chatml, args: ['--ctx-size', 4096, '--mcp-server', EVERYTHING] });
  const MCP = { type: 'mcp', server_label: 'everything', require_approval: 'never' };

  const forced = async (name, extra = {}) => {
    const client = openaiClient(ctx.server);
    return client.responses.create({
      input: 'Use the tool.', tools: [{ ...MCP, allowed_tools: [name] }],
      tool_choice: { type: 'mcp', server_label: 'everything', name }, max_output_tokens: 300, temperature: 0,
      ...extra,
    });
  };

  test('/v1/metadata lists the server and the tools its allowed-tools kept', ctx.wrap(async () => {
    const meta = await (await fetch(`${ctx.server.url}/v1/metadata`)).json();
    assert.deepEqual(meta.builtin_tools.sql, []);
    assert.equal(meta.builtin_tools.mcp.length, 1);
    assert.equal(meta.builtin_tools.mcp[0].server_label, 'everything');
    assert.deepEqual(meta.builtin_tools.mcp[0].tools.map((t) => t.name).sort(),
      ['echo', 'get-sum', 'trigger-long-running-operation']);
  }));

  test('echo: the call runs on the real server and its answer is exactly the server\'s', ctx.wrap(async () => {
    const r = await forced('echo');
    const call = r.output[0];
    assert.equal(call.type, 'mcp_call', JSON.stringify(r.output));
    assert.equal(call.server_label, 'everything');
    assert.equal(call.name, 'echo');
    assert.equal(call.status, 'completed', JSON.stringify(call));
    const args = JSON.parse(call.arguments);
    assert.equal(typeof args.message, 'string', 'the grammar held the arguments to the tool\'s schema');
    assert.equal(call.output, `Echo: ${args.message}`);
    assert.ok(r.output.some((o) => o.type === 'message'), 'the model answered after the result');
    const metrics = await (await fetch(`${ctx.server.url}/metrics`)).text();
    assert.match(metrics, /^inferbox_tool_calls_total\{type="mcp_call",server="everything",tool="echo",outcome="ok"\} [1-9]/m);
    assert.match(metrics, /^inferbox_tool_call_seconds_count\{type="mcp_call",server="everything",tool="echo"\} [1-9]/m);
  }));

  test('get-sum: numbers under the schema, the server\'s sum comes back (streamed)', ctx.wrap(async () => {
    const client = openaiClient(ctx.server);
    const stream = await client.responses.create({
      input: 'Add two numbers.', tools: [{ ...MCP, allowed_tools: ['get-sum'] }],
      tool_choice: { type: 'mcp', server_label: 'everything' }, max_output_tokens: 300, temperature: 0, stream: true,
    });
    let call = null;
    let final = null;
    for await (const ev of stream) {
      if (ev.type === 'response.output_item.done' && ev.item.type === 'mcp_call') {
        call = ev.item;
      }
      if (ev.type === 'response.completed' || ev.type === 'response.incomplete') {
        final = ev.response;
      }
    }
    assert.ok(call && final);
    const { a, b } = JSON.parse(call.arguments);
    assert.equal(typeof a, 'number');
    assert.equal(typeof b, 'number');
    assert.equal(call.output, `The sum of ${a} and ${b} is ${a + b}.`);
    assert.equal(final.output[0].id, call.id);
  }));

  test('bad requests: a URL, an unknown server or tool, a tool the operator did not allow, approvals',
    ctx.wrap(async () => {
      const url = `${ctx.server.url}/v1/responses`;
      const cases = [
        [{ ...MCP, server_url: 'http://evil.example/mcp' }, 'tools[0].server_url', /configured on the server/],
        [{ ...MCP, server_label: 'other' }, 'tools[0].server_label', /no MCP server 'other' on this server \(it has: everything\)/],
        [{ ...MCP, allowed_tools: ['get-env'] }, 'tools[0].allowed_tools', /offers no tool 'get-env'/],
        [{ ...MCP, require_approval: 'always' }, 'tools[0].require_approval', /only "never"/],
      ];
      for (const [tool, param, why] of cases) {
        const res = await postJson(url, { input: 'x', tools: [tool] });
        const err = assertErrorShape(res, 400);
        assert.equal(err.param, param, res.text);
        assert.match(err.message, why);
      }
    }));
});

describe('MCP: the real filesystem server, read-only by the operator\'s allow-list', () => {
  const root = fs.realpathSync(fs.mkdtempSync(path.join(dir, 'files-')));
  fs.writeFileSync(path.join(root, 'note.txt'), 'hello from a file\n');
  const filesystem = path.join(path.dirname(EVERYTHING_JS), '..', '..', 'server-filesystem', 'dist', 'index.js');
  const ctx = useServer({
    model: MODELS.chatml,
    args: ['--ctx-size', 4096, '--mcp-server',
      `files=stdio:${process.execPath} ${filesystem} ${root};allowed-tools=list_allowed_directories,read_text_file`],
  });
  const FILES = { type: 'mcp', server_label: 'files' };
  const forced = (name) => openaiClient(ctx.server).responses.create({
    input: 'Look at the files.', tools: [FILES], tool_choice: { type: 'mcp', server_label: 'files', name },
    max_output_tokens: 300, temperature: 0,
  });

  test('list_allowed_directories answers exactly what the server was given', ctx.wrap(async () => {
    const r = await forced('list_allowed_directories');
    assert.equal(r.output[0].type, 'mcp_call');
    assert.equal(r.output[0].status, 'completed', JSON.stringify(r.output[0]));
    assert.equal(r.output[0].output, `Allowed directories:\n${root}`);
  }));

  test('a path the server refuses comes back as the call\'s error, and the model goes on', ctx.wrap(async () => {
    const r = await forced('read_text_file');
    const call = r.output[0];
    assert.equal(call.type, 'mcp_call');
    assert.equal(typeof JSON.parse(call.arguments).path, 'string');
    // The model's path is nonsense: the server refuses it (outside the root, or no such file).
    assert.equal(call.status, 'failed', JSON.stringify(call));
    assert.ok(call.error.length > 0);
    assert.equal(call.output, null);
    assert.ok(r.output.some((o) => o.type === 'message'), 'the model answered after the error');
  }));

  test('tools the operator did not allow are not there: write_file is a 400', ctx.wrap(async () => {
    const res = await postJson(`${ctx.server.url}/v1/responses`,
      { input: 'x', tools: [{ ...FILES, allowed_tools: ['write_file'] }] });
    assert.match(assertErrorShape(res, 400).message, /offers no tool 'write_file'/);
    assert.deepEqual(fs.readdirSync(root), ['note.txt']);
  }));
});

test('serve refuses an --mcp-server it cannot start, naming it', () => {
  for (const [spec, why] of [
    [`x=stdio:${path.join(dir, 'no-such-program')}`, /--mcp-server 'x': cannot start/],
    ['x=http://127.0.0.1:1/mcp', /--mcp-server 'x': the MCP server 'x' failed during initialize: cannot reach http:\/\/127\.0\.0\.1:1\/mcp/],
    ['x=ftp://127.0.0.1/mcp', /the transport must be stdio:COMMAND or an http:\/\/ or https:\/\/ URL/],
    ['x=http://user:pw@127.0.0.1:1/mcp', /the URL holds credentials: send them in a header/],
    ['x=http://127.0.0.1:1/mcp;header.Authorization=ENV:INFERBOX_TEST_NO_SUCH_VAR', /the environment variable INFERBOX_TEST_NO_SUCH_VAR is not set/],
    [`x=stdio:${process.execPath} ${EVERYTHING_JS} stdio;allowed-tools=nope`, /has no tool 'nope'/],
    [`x=stdio:${process.execPath} ${EVERYTHING_JS};colour=red`, /unknown option 'colour'/],
  ]) {
    const res = spawnSync(serverBinary(), ['serve', '--model', modelPath(MODELS.chatml), '--port', '0',
      '--mcp-server', spec], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(res.status, 1, `${spec}: ${res.stderr}`);
    assert.match(`${res.stdout}${res.stderr}`, why);
  }
});

// server-everything in its streamable HTTP mode (`index.js streamableHttp`, PORT from the
// environment) on a free loopback port; resolves once it listens. Killed when this process exits.
async function startEverythingHttp(port) {
  const child = spawn(process.execPath, [EVERYTHING_JS, 'streamableHttp'], {
    env: { ...process.env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  process.on('exit', () => {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  });
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server-everything did not listen within 20 s:\n${log}`)), 20_000);
    child.stderr.on('data', (d) => {
      log += d;
      if (/listening on port/.test(log)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server-everything exited (${code}) before it listened:\n${log}`));
    });
  });
  return { child, log: () => log };
}

describe('MCP over streamable HTTP (--mcp-server everything=http://127.0.0.1:PORT/mcp, the real server-everything)', () => {
  let mcp = null;
  // The MCP server starts first (its port goes into inferbox's arguments, read when it starts).
  const args = ['--ctx-size', 4096];
  beforeAll(async () => {
    const port = await freePort();
    mcp = await startEverythingHttp(port);
    args.push('--mcp-server', `everything=http://127.0.0.1:${port}/mcp;allowed-tools=echo,get-sum;timeout-ms=5000`);
  });
  const ctx = useServer({ model: MODELS.chatml, args });
  after(() => mcp?.child.kill('SIGKILL'));

  test('/v1/metadata lists the HTTP server and its allowed tools', ctx.wrap(async () => {
    const meta = await (await fetch(`${ctx.server.url}/v1/metadata`)).json();
    assert.equal(meta.builtin_tools.mcp.length, 1);
    assert.equal(meta.builtin_tools.mcp[0].server_label, 'everything');
    assert.deepEqual(meta.builtin_tools.mcp[0].tools.map((t) => t.name).sort(), ['echo', 'get-sum']);
  }));

  test('echo over HTTP: the call runs on the real server and its answer is exactly the server\'s', ctx.wrap(async () => {
    const r = await openaiClient(ctx.server).responses.create({
      input: 'Use the tool.', tools: [{ type: 'mcp', server_label: 'everything', allowed_tools: ['echo'] }],
      tool_choice: { type: 'mcp', server_label: 'everything', name: 'echo' }, max_output_tokens: 300, temperature: 0,
    });
    const call = r.output[0];
    assert.equal(call.type, 'mcp_call', JSON.stringify(r.output));
    assert.equal(call.server_label, 'everything');
    assert.equal(call.name, 'echo');
    assert.equal(call.status, 'completed', JSON.stringify(call));
    const args = JSON.parse(call.arguments);
    assert.equal(typeof args.message, 'string', 'the grammar held the arguments to the tool\'s schema');
    assert.equal(call.output, `Echo: ${args.message}`);
    assert.ok(r.output.some((o) => o.type === 'message'), 'the model answered after the result');
    assert.match(mcp.log(), /Session initialized with ID/);
  }));

  test('stopping inferbox ends its MCP session (DELETE)', ctx.wrap(async () => {
    const info = await ctx.server.stop();
    assert.equal(info.code, 0, ctx.server.log());
    // inferbox waited for the answer to its DELETE before it exited; the log may come a moment later.
    for (let i = 0; i < 50 && !/Received session termination request/.test(mcp.log()); i++) {
      await new Promise((resolve) => setTimeout(resolve, 40));
    }
    assert.match(mcp.log(), /Received session termination request for session/);
  }));
});

test('a config file\'s mcp-server mappings become the one-line --mcp-server entries', () => {
  const file = path.join(dir, 'mcp.yaml');
  fs.writeFileSync(file, [
    'serve:',
    '  mcp-server:',
    '    - name: remote',
    '      url: https://mcp.example.com/mcp',
    '      allowed-tools: [echo, get-sum]',
    '      timeout-ms: 1500',
    '      headers: {Authorization: ENV:MCP_TOKEN}',
    '    - {name: files, command: [mcp-server-filesystem, /srv/data]}',
    '    - local=stdio:node server.js',
    '',
  ].join('\n'));
  const res = spawnSync(serverBinary(), ['--config', file, 'config', '--json'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(res.status, 0, res.stderr);
  const mcpSetting = JSON.parse(res.stdout).settings.find((s) => s.name === 'serve.mcp-server');
  assert.equal(mcpSetting.value, 'remote=https://mcp.example.com/mcp;allowed-tools=echo,get-sum;timeout-ms=1500;'
    + 'header.Authorization=ENV:MCP_TOKEN,files=stdio:mcp-server-filesystem /srv/data,local=stdio:node server.js');
});
