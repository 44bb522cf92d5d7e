// The model store on the command line: `inferbox import | models | show | rm` with INFERBOX_CACHE
// pointing at a temporary folder, and `show` on damaged copies of a real model (truncated, header
// counts or lengths overwritten): exit code 1, one line on stderr naming the file, never a crash.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { MODELS, cliOk, modelPath, runCli } from './harness.mjs';

const Q8_0 = 'stories260K-Q8_0.gguf';

let work; // temporary folder: the cache and the damaged copies
let cache;

function inferbox(args, { env = {} } = {}) {
  return runCli(args, { env: { INFERBOX_CACHE: cache, ...env } });
}

// Exit 0; returns stdout.
function ok(args) {
  return cliOk(args, { env: { INFERBOX_CACHE: cache } }).stdout;
}

// Exit 1 with exactly one line on stderr; returns that line.
function fails(args) {
  const res = inferbox(args);
  assert.equal(res.signal, null, `inferbox ${args.join(' ')} died of ${res.signal}\n${res.stderr}`);
  assert.equal(res.status, 1, `inferbox ${args.join(' ')} exited ${res.status}\nstdout: ${res.stdout}\nstderr: ${res.stderr}`);
  const lines = res.stderr.split('\n').filter((l) => l.length > 0);
  assert.equal(lines.length, 1, `expected one error line, got:\n${res.stderr}`);
  assert.equal(res.stdout, '', `nothing on stdout after an error, got:\n${res.stdout}`);
  return lines[0];
}

function sha256(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function cacheEntries(sub) {
  const dir = path.join(cache, sub);
  return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
}

before(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-store-'));
  cache = path.join(work, 'cache');
});

after(() => {
  if (work) {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

describe('inferbox import / models / show / rm', () => {
  test('models on an empty cache says how to add one', () => {
    const out = ok(['models']);
    assert.match(out, /no models in .*inferbox import PATH/);
    assert.deepEqual(JSON.parse(ok(['models', '--json'])), []);
  });

  test('import copies the models into the cache', () => {
    let out = ok(['import', modelPath(MODELS.plain)]);
    assert.match(out, /^imported stories260K \(/);
    out = ok(['import', modelPath(MODELS.chatml), '--name', 'acme/chatml']);
    assert.match(out, /^imported acme\/chatml \(/);
    ok(['import', modelPath(Q8_0)]);

    const file = path.join(cache, 'models', 'stories260K', 'model.gguf');
    assert.ok(fs.existsSync(file), `${file} missing`);
    assert.equal(sha256(file), sha256(modelPath(MODELS.plain)));
    const manifest = fs.readFileSync(path.join(cache, 'models', 'stories260K', 'manifest'), 'utf8');
    assert.match(manifest, new RegExp(`^sha256=${sha256(modelPath(MODELS.plain))}$`, 'm'));
    assert.match(manifest, new RegExp(`^source=${modelPath(MODELS.plain)}$`, 'm'));
    assert.deepEqual(cacheEntries('tmp'), []);
  });

  test('models --json lists them with their metadata', () => {
    const list = JSON.parse(ok(['models', '--json']));
    assert.deepEqual(
      list.map((m) => m.name),
      ['acme/chatml', 'stories260K', 'stories260K-Q8_0'],
    );
    const byName = Object.fromEntries(list.map((m) => [m.name, m]));
    for (const m of list) {
      assert.equal(m.problem, null, `${m.name}: ${m.problem}`);
      assert.equal(m.architecture, 'llama');
      assert.equal(m.context_length, 512);
      assert.equal(m.embedding_length, 64);
      assert.equal(m.block_count, 5);
      assert.equal(m.head_count, 8);
      assert.equal(m.head_count_kv, 4);
      assert.equal(m.vocab_size, 512);
      assert.ok(m.parameters > 250_000 && m.parameters < 300_000, `parameters ${m.parameters}`);
      assert.equal(m.size, fs.statSync(m.file).size);
    }
    assert.equal(byName['stories260K'].quantization, 'F32');
    assert.equal(byName['stories260K'].chat_template, false);
    assert.equal(byName['stories260K'].sha256, sha256(modelPath(MODELS.plain)));
    assert.equal(byName['acme/chatml'].chat_template, true);
    assert.equal(byName['acme/chatml'].source, modelPath(MODELS.chatml));
    assert.equal(byName['stories260K-Q8_0'].quantization, 'Q8_0');
    assert.equal(byName['stories260K-Q8_0'].sha256, sha256(modelPath(Q8_0)));
  });

  test('models prints a table', () => {
    const lines = ok(['models']).trimEnd().split('\n');
    assert.match(lines[0], /^NAME\s+FILE\s+SIZE\s+ARCH\s+PARAMS\s+QUANT\s+CONTEXT\s+TEMPLATE$/);
    assert.equal(lines.length, 4, lines.join('\n'));
    assert.match(lines[1], /^acme\/chatml\s+stories260K-chatml\.gguf\s+1\.1 MiB\s+llama\s+\d+K\s+F32\s+512\s+yes$/);
    assert.match(lines[2], /^stories260K\s+stories260K\.gguf\s+.*\s+F32\s+512\s+no$/);
    assert.match(lines[3], /^stories260K-Q8_0\s+.*\s+Q8_0\s+512\s+no$/);
  });

  test('show NAME prints the summary and the metadata', () => {
    const out = ok(['show', 'stories260K']);
    assert.match(out, /^model:\s+stories260K \(cached\)$/m);
    assert.match(out, /^architecture:\s+llama$/m);
    assert.match(out, /^context length:\s+512$/m);
    assert.match(out, /^heads:\s+8 \(4 key-value\)$/m);
    assert.match(out, /^vocabulary:\s+512$/m);
    assert.match(out, /^chat template:\s+no$/m);
    assert.match(out, /^ {2}tokenizer\.ggml\.tokens = \[string × 512\]$/m);

    const j = JSON.parse(ok(['show', 'acme/chatml', '--json']));
    assert.equal(j.cached.name, 'acme/chatml');
    assert.equal(j.chat_template, true);
    assert.match(j.metadata['tokenizer.chat_template'], /<\|im_start\|>/);
    assert.equal(j.metadata['llama.context_length'], 512);
    assert.deepEqual(j.metadata['tokenizer.ggml.tokens'], { type: 'array', element_type: 'string', length: 512 });
    assert.equal(j.tensor_count, j.tensors.length);
    assert.ok(j.tensors.every((t) => t.type === 'F32'));
  });

  test('show PATH reads a file outside the cache', () => {
    const j = JSON.parse(ok(['show', modelPath(Q8_0), '--json']));
    assert.equal(j.cached, null);
    assert.equal(j.quantization, 'Q8_0');
    assert.equal(j.size, fs.statSync(modelPath(Q8_0)).size);
    assert.ok(j.tensors.some((t) => t.type === 'Q8_0'));
  });

  test('import refuses a taken name and a name that leaves the store', () => {
    let line = fails(['import', modelPath(MODELS.chatml), '--name', 'stories260K']);
    assert.match(line, /^inferbox import: model 'stories260K' is already in the cache/);
    line = fails(['import', modelPath(MODELS.plain), '--name', '../escape']);
    assert.match(line, /'\.\.\/escape' may not contain '\.' or '\.\.' parts/);
    line = fails(['import', modelPath(MODELS.plain), '--name', '/abs']);
    assert.match(line, /may not start with '\/'/);
    assert.ok(!fs.existsSync(path.join(work, 'escape')));
    assert.deepEqual(cacheEntries('tmp'), []);
  });

  test('show and rm on unknown names fail cleanly', () => {
    assert.match(fails(['show', 'no-such-model']), /^inferbox show: model 'no-such-model' is not in the cache/);
    assert.match(fails(['rm', 'no-such-model']), /^inferbox rm: model 'no-such-model' is not in the cache/);
    assert.match(fails(['rm', 'a/../../b']), /'\.' or '\.\.' parts/);
  });

  test('rm removes a model', () => {
    assert.match(ok(['rm', 'stories260K-Q8_0']), /^removed stories260K-Q8_0 \(/);
    const names = JSON.parse(ok(['models', '--json'])).map((m) => m.name);
    assert.deepEqual(names, ['acme/chatml', 'stories260K']);
    assert.ok(!fs.existsSync(path.join(cache, 'models', 'stories260K-Q8_0')));
    assert.deepEqual(cacheEntries('tmp'), []);
    assert.ok(fs.existsSync(modelPath(Q8_0)), 'rm must never touch the source file');
  });
});

describe('damaged GGUF files', () => {
  let good;
  before(() => {
    good = fs.readFileSync(modelPath(MODELS.plain));
  });

  function damaged(name, mutate) {
    const buf = Buffer.from(good);
    const out = mutate(buf) ?? buf;
    const file = path.join(work, name);
    fs.writeFileSync(file, out);
    return file;
  }

  test('a truncated model: show and import fail, naming the file', () => {
    const file = damaged('truncated.gguf', (b) => b.subarray(0, Math.floor(b.length / 2)));
    let line = fails(['show', file]);
    assert.ok(line.startsWith(`inferbox show: ${file}: truncated: tensor '`), line);
    assert.match(line, /data ends at byte \d+ but the file has \d+ bytes$/);

    const before = JSON.parse(ok(['models', '--json'])).length;
    line = fails(['import', file]);
    assert.ok(line.includes(`${file}: truncated`), line);
    assert.equal(JSON.parse(ok(['models', '--json'])).length, before, 'a failed import left an entry');
    assert.ok(!fs.existsSync(path.join(cache, 'models', 'truncated')));
    assert.deepEqual(cacheEntries('tmp'), []);

    // Cut inside the header and inside the metadata too.
    for (const n of [3, 10, 30, 200]) {
      const f = damaged(`cut-${n}.gguf`, (b) => b.subarray(0, n));
      const l = fails(['show', f]);
      assert.ok(l.startsWith(`inferbox show: ${f}: `), l);
    }
  });

  test('corrupted header counts and lengths: show fails, naming the file', () => {
    const cases = [
      // [what, offset, bytes written there, expected message]
      ['tensor count', 8, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], /tensors, more than the limit/],
      ['metadata count', 16, [0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0], /metadata entries, more than the limit/],
      ['metadata count (plausible)', 16, [0x00, 0x10, 0, 0, 0, 0, 0, 0], /metadata/], // tensor infos read as keys
      ['first key length', 24, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f], /bytes long, more than the limit of 4096/],
      ['version', 4, [99, 0, 0, 0], /GGUF version 99 is not supported/],
      ['magic', 0, [0x47, 0x47, 0x4d, 0x4c], /not a GGUF file: the magic is 'GGML'/],
    ];
    for (const [what, offset, bytes, expected] of cases) {
      const file = damaged(`corrupt-${offset}-${bytes[0]}.gguf`, (b) => {
        Buffer.from(bytes).copy(b, offset);
      });
      const line = fails(['show', file]);
      assert.ok(line.startsWith(`inferbox show: ${file}: `), `${what}: ${line}`);
      assert.match(line, expected, what);
    }
  });

  test('bytes flipped all over the metadata never crash show', () => {
    // Deterministic: flip one byte at a time in the first 2 KiB (header, keys, lengths, types).
    let failures = 0;
    for (let offset = 0; offset < 2048; offset += 37) {
      const file = damaged('flipped.gguf', (b) => {
        b[offset] ^= 0xff;
      });
      const res = inferbox(['show', file, '--json']);
      assert.equal(res.signal, null, `offset ${offset}: died of ${res.signal}\n${res.stderr}`);
      assert.ok(res.status === 0 || res.status === 1, `offset ${offset}: exit ${res.status}\n${res.stderr}`);
      if (res.status === 1) {
        failures += 1;
        assert.ok(res.stderr.startsWith(`inferbox show: ${file}: `), `offset ${offset}: ${res.stderr}`);
      } else {
        JSON.parse(res.stdout); // a flip inside a string value still gives valid JSON
      }
    }
    assert.ok(failures > 0, 'no flip was detected at all');
  });
});
