// Layered configuration: defaults < YAML config file < INFERBOX_* environment < command line,
// `inferbox config` reporting where each value came from, and `serve` taking its model from
// the file, a positional cached name, or refusing with one line when there is none.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { MODELS, modelPath, serverBinary, startServer } from './harness.mjs';

let work;
let home;
let cache;

function cleanEnv(extra = {}) {
  const env = { ...process.env, HOME: home, INFERBOX_CACHE: cache, ...extra };
  for (const k of Object.keys(env)) {
    if (k.startsWith('INFERBOX_') && !(k in extra) && !['INFERBOX_CACHE', 'INFERBOX_TEST_MODELS', 'INFERBOX_BIN'].includes(k)) {
      delete env[k];
    }
  }
  delete env.XDG_CONFIG_HOME;
  return env;
}

function inferbox(args, env = {}) {
  const r = spawnSync(serverBinary(), args, { env: cleanEnv(env), encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.error, undefined, String(r.error));
  return r;
}

function settings(env = {}, args = []) {
  const r = inferbox([...args, 'config', '--json'], env);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  return { file: out.config_file, get: (name) => out.settings.find((s) => s.name === name) };
}

before(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-config-'));
  home = path.join(work, 'home');
  cache = path.join(work, 'cache');
  fs.mkdirSync(path.join(home, '.config', 'inferbox'), { recursive: true });
});

after(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

describe('inferbox config', () => {
  test('without a file: every serve setting at its default', () => {
    const s = settings();
    assert.equal(s.file, null);
    assert.deepEqual(s.get('serve.port'), { name: 'serve.port', value: '8000', source: 'default' });
    assert.deepEqual(s.get('serve.parallel').source, 'default');
    assert.deepEqual(s.get('log-format'), { name: 'log-format', value: 'text', source: 'default' });
  });

  test('the user file, then the environment on top; --config and INFERBOX_CONFIG pick another file', () => {
    const user = path.join(home, '.config', 'inferbox', 'config.yaml');
    fs.writeFileSync(user, 'log-format: json\nserve:\n  port: 9001\n  ctx_size: 1024\n  api-key: [k1, k2]\n');
    try {
      let s = settings({ INFERBOX_PORT: '9002' });
      assert.equal(s.file, user);
      assert.deepEqual(s.get('serve.port'), { name: 'serve.port', value: '9002', source: 'environment INFERBOX_PORT' });
      assert.deepEqual(s.get('serve.ctx-size'), { name: 'serve.ctx-size', value: '1024', source: user });
      assert.deepEqual(s.get('serve.api-key').value, 'k1,k2');
      assert.deepEqual(s.get('log-format'), { name: 'log-format', value: 'json', source: user });

      const other = path.join(work, 'other.yaml');
      fs.writeFileSync(other, 'serve:\n  port: 7000\n');
      s = settings({}, ['--config', other]);
      assert.equal(s.file, other);
      assert.equal(s.get('serve.port').value, '7000');
      assert.equal(s.get('serve.ctx-size').source, 'default');
      s = settings({ INFERBOX_CONFIG: other });
      assert.equal(s.file, other);
      assert.equal(s.get('serve.port').value, '7000');
    } finally {
      fs.rmSync(user);
    }
  });

  test('a bad file fails every command with the file and the key named', () => {
    const bad = path.join(work, 'bad.yaml');
    for (const [text, want] of [
      ['serve:\n  bogus: 1\n', /bad\.yaml: serve\.bogus is not a setting/],
      ['serve: [1\n', /bad\.yaml: not valid YAML/],
      ['serve:\n  port: [1, 2]\n', /port/],
    ]) {
      fs.writeFileSync(bad, text);
      const r = inferbox(['--config', bad, 'models']);
      assert.notEqual(r.status, 0, `accepted ${JSON.stringify(text)}`);
      assert.match(r.stderr, want);
    }
    const missing = inferbox(['models'], { INFERBOX_CONFIG: path.join(work, 'absent.yaml') });
    assert.notEqual(missing.status, 0);
    assert.match(missing.stderr, /absent\.yaml/);
  });
});

describe('serve with layered settings', () => {
  test('model and model-name from the file; INFERBOX_MODEL_NAME outranks the file; a flag outranks both', async () => {
    const file = path.join(work, 'serve.yaml');
    fs.writeFileSync(file, `serve:\n  model: ${modelPath(MODELS.plain)}\n  model-name: from-file\n  parallel: 3\n`);
    for (const [env, args, id] of [
      [{ INFERBOX_CONFIG: file }, [], 'from-file'],
      [{ INFERBOX_CONFIG: file, INFERBOX_MODEL_NAME: 'from-env' }, [], 'from-env'],
      [{ INFERBOX_CONFIG: file, INFERBOX_MODEL_NAME: 'from-env' }, ['--model-name', 'from-flag'], 'from-flag'],
    ]) {
      const server = await startServer({ model: null, args, env: cleanEnv(env) });
      try {
        const models = await (await fetch(`${server.url}/v1/models`)).json();
        assert.equal(models.data[0].id, id);
        assert.match(server.log(), /3 slots/, 'parallel: 3 from the file');
      } finally {
        await server.stop();
      }
    }
  });

  test('serve NAME takes a cached model as a positional argument', async () => {
    const imp = inferbox(['import', modelPath(MODELS.plain), '--name', 'tiny']);
    assert.equal(imp.status, 0, imp.stderr);
    const server = await startServer({ model: null, args: ['tiny'], env: cleanEnv() });
    try {
      const models = await (await fetch(`${server.url}/v1/models`)).json();
      assert.equal(models.data[0].id, 'tiny');
    } finally {
      await server.stop();
    }
  });

  test('serve with no model anywhere exits 1 with one line saying how to get one', () => {
    const r = inferbox(['serve', '--port', '0']);
    assert.equal(r.status, 1);
    const lines = r.stderr.split('\n').filter((l) => l.length > 0);
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /no model to serve: .*inferbox pull/);
  });
});
