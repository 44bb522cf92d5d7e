// The `sql` tool on PostgreSQL (issue 22, item 3): a real server from Debian's postgresql package,
// started by the test in a temporary directory on a Unix socket, read through a role that may only
// SELECT one table. Writes of every kind are refused (by `inferbox sql`, which runs a statement
// exactly as the tool does), a superuser role is refused outright, and a forced call through the
// tool loop returns exactly the rows psql returns for the model's query.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { MODELS, openaiClient, serverBinary, startServer } from './harness.mjs';

const bindir = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim();
const root = process.getuid() === 0;
// PostgreSQL refuses to run as root: as root, its programs run as the postgres user.
const as = (cmd, args, options = {}) => (root
  ? execFileSync('runuser', ['-u', 'postgres', '--', cmd, ...args], { encoding: 'utf8', ...options })
  : execFileSync(cmd, args, { encoding: 'utf8', ...options }));

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-pg-'));
const port = 20_000 + Math.floor(Math.random() * 20_000);
const psql = (db, sql) => as(path.join(bindir, 'psql'), ['-X', '-q', '-A', '-t', '-F', '\x1f', '-v', 'ON_ERROR_STOP=1',
  '-h', dir, '-p', String(port), '-U', 'postgres', '-d', db, '-c', sql]);
const target = (user) => `postgresql:///shop?host=${dir}&port=${port}&user=${user}`;

// What PostgreSQL itself answers for a query (the exact-match probe), as psql prints it: rows of
// text fields (NULL as ''), compared with the tool's typed JSON values field by field.
function pgRows(query) {
  const out = psql('shop', query).replace(/\n$/, '');
  return out === '' ? [] : out.split('\n').map((line) => line.split('\x1f'));
}
function assertSameRows(typed, text, query) {
  assert.equal(typed.length, text.length, `row count of ${query}`);
  typed.forEach((row, i) => {
    assert.equal(row.length, text[i].length, `columns of row ${i} of ${query}`);
    row.forEach((v, k) => {
      const t = text[i][k];
      if (v === null) {
        assert.equal(t, '', `${query}: row ${i} column ${k}`);
      } else if (typeof v === 'number') {
        assert.equal(v, Number(t), `${query}: row ${i} column ${k}: ${v} vs ${t}`);
      } else if (typeof v === 'boolean') {
        assert.equal(v ? 't' : 'f', t);
      } else {
        assert.equal(v, t, `${query}: row ${i} column ${k}`);
      }
    });
  });
}

function sql(spec, query) {
  const args = ['sql', spec];
  if (query !== undefined) {
    args.push(query);
  }
  const r = spawnSync(serverBinary(), args, { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: `${r.stderr}` };
}

describe('the sql tool on PostgreSQL (a real server, a SELECT-only role)', () => {
  before(() => {
    if (root) {
      const [uid, gid] = ['-u', '-g'].map((f) => Number(execFileSync('id', [f, 'postgres'], { encoding: 'utf8' })));
      fs.chownSync(dir, uid, gid);
    }
    as(path.join(bindir, 'initdb'), ['-D', path.join(dir, 'data'), '-U', 'postgres', '--auth=trust', '-E', 'UTF8'],
      { stdio: 'ignore' });
    as(path.join(bindir, 'pg_ctl'), ['-D', path.join(dir, 'data'), '-l', path.join(dir, 'log'), '-w', '-o',
      `-k ${dir} -p ${port} -c listen_addresses=''`, 'start'], { stdio: 'ignore' });
    psql('postgres', 'CREATE DATABASE shop');
    psql('shop', `
      CREATE TABLE items(id serial PRIMARY KEY, name text, price numeric);
      INSERT INTO items(name, price) VALUES ('apple', 1.5), ('pear', 2.0), ('plum', 0.5), ('fig', 3.25);
      CREATE TABLE secrets(id int, code text);
      INSERT INTO secrets VALUES (1, 'do not read');
      CREATE ROLE reader LOGIN;
      GRANT SELECT ON items TO reader;`);
  });
  after(() => {
    try {
      as(path.join(bindir, 'pg_ctl'), ['-D', path.join(dir, 'data'), '-m', 'immediate', 'stop'], { stdio: 'ignore' });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a superuser role is refused; the reader sees only what it may read', () => {
    const su = sql(`shop=${target('postgres')}`);
    assert.equal(su.code, 1, su.err);
    assert.match(su.err, /connects as role 'postgres', a superuser/);
    const r = sql(`shop=${target('reader')}`);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^items\(id integer e\.g\. .*, name text e\.g\. .*, price numeric e\.g\. .*\) 4 rows$/m);
    assert.doesNotMatch(r.out, /secrets/);
    assert.match(r.out, /^pattern: \^\(\(SELECT /m);
  });

  test('every kind of write, and every way around read-only, is refused; the data is unchanged', () => {
    const spec = `shop=${target('reader')}`;
    const cases = [
      ['INSERT INTO items(name) VALUES (\'x\')', /only a SELECT/],
      ['UPDATE items SET price = 0', /only a SELECT/],
      ['DELETE FROM items', /only a SELECT/],
      ['CREATE TABLE t(x int)', /only a SELECT/],
      ['DROP TABLE items', /only a SELECT/],
      ['COPY items TO STDOUT', /only a SELECT/],
      ['SET default_transaction_read_only = off', /only a SELECT/],
      ['WITH gone AS (DELETE FROM items RETURNING *) SELECT * FROM gone', /would change the database|read-only transaction/],
      ['SELECT nextval(\'items_id_seq\')', /would change the database|read-only transaction|permission denied/],
      ['SELECT 1; DELETE FROM items', /cannot insert multiple commands|multiple commands/],
      ['SELECT * FROM secrets', /permission denied/],
      ['SELECT pg_sleep(10)', /time limit of 2000 ms/],
      ['/* a comment */ DELETE FROM items', /only a SELECT/],
    ];
    for (const [query, why] of cases) {
      const r = sql(spec, query);
      assert.equal(r.code, 1, `${query} ran: ${r.out}`);
      assert.match(r.err, why, query);
    }
    assert.equal(psql('shop', 'SELECT count(*) FROM items').trim(), '4');
    assert.equal(psql('shop', 'SELECT sum(price) FROM items').trim(), '7.25');
    const ok = sql(spec, 'SELECT name, price FROM items ORDER BY price');
    assert.equal(ok.code, 0, ok.err);
    assertSameRows(JSON.parse(ok.out).rows, pgRows('SELECT name, price FROM items ORDER BY price'), 'the prices');
  });

  test('a forced call through the tool loop returns exactly PostgreSQL\'s rows (OpenAI SDK)', async () => {
    const server = await startServer({
      model: MODELS.chatml, args: ['--ctx-size', 4096, '--sql-database', `shop=${target('reader')}`],
    });
    try {
      assert.doesNotMatch(server.log(), /password/);
      const r = await openaiClient(server).responses.create({
        input: 'What do the items cost?', tools: [{ type: 'sql', database: 'shop' }], tool_choice: { type: 'sql' },
        max_output_tokens: 400, temperature: 0,
      });
      const call = r.output[0];
      assert.equal(call.type, 'sql_call', JSON.stringify(r.output));
      assert.equal(call.status, 'completed', JSON.stringify(call));
      const { query } = JSON.parse(call.arguments);
      assert.match(query, /^SELECT .+ FROM items\b/);
      const result = JSON.parse(call.output);
      assertSameRows(result.rows, pgRows(query).slice(0, result.rows.length), query);
      assert.ok(r.output.some((o) => o.type === 'message'));
    } finally {
      await server.stop();
    }
  });
});
