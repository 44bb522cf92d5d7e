// `inferbox import PATH --quantize TYPE` (llama.cpp's quantizer into the model cache) and the
// weight-type advice of `inferbox profiles`, with INFERBOX_CACHE in a temporary folder: the F32
// test model quantized to Q8_0 serves completions and reports its new type; bad types, missing
// files, corrupt importance matrices and already-quantized sources fail with one clear line and
// leave nothing in the cache; an interrupted quantization leaves nothing either.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { MODELS, ONCE, cliOk, modelPath, postJson, runCli, serverBinary, startServer } from './harness.mjs';

const Q8_0 = 'stories260K-Q8_0.gguf';

let work;
let cache;

function inferbox(args, env = {}) {
  return runCli(args, { env: { INFERBOX_CACHE: cache, ...env }, timeout: 60_000 });
}

function ok(args) {
  return cliOk(args, { env: { INFERBOX_CACHE: cache }, timeout: 60_000 });
}

// Exit 1; the last line on stderr is the error. Returns it.
function fails(args) {
  const res = inferbox(args);
  assert.equal(res.signal, null, `inferbox ${args.join(' ')} died of ${res.signal}\n${res.stderr}`);
  assert.equal(res.status, 1, `inferbox ${args.join(' ')} exited ${res.status}\nstdout: ${res.stdout}\nstderr: ${res.stderr}`);
  assert.equal(res.stdout, '', `nothing on stdout after an error, got:\n${res.stdout}`);
  const lines = res.stderr.split('\n').filter((l) => l.length > 0);
  return lines[lines.length - 1];
}

// Nothing in the cache but `names`, and no staging left-overs.
function assertCacheHolds(names) {
  const models = path.join(cache, 'models');
  const have = fs.existsSync(models) ? fs.readdirSync(models).sort() : [];
  assert.deepEqual(have, [...names].sort());
  const tmp = path.join(cache, 'tmp');
  assert.deepEqual(fs.existsSync(tmp) ? fs.readdirSync(tmp) : [], [], 'staging left behind');
}

before(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-quantize-'));
  cache = path.join(work, 'cache');
});

after(() => {
  if (work) {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

describe('inferbox import --quantize', () => {
  test('quantizes the F32 model to Q8_0 into the cache; show reports the new type', () => {
    const source = modelPath(MODELS.plain);
    assert.equal(JSON.parse(ok(['show', source, '--json']).stdout).quantization, 'F32');
    const res = ok(['import', source, '--quantize', 'Q8_0', '--threads', '2']);
    assert.match(res.stdout, /^quantized .*stories260K\.gguf to q8_0 in [\d.]+ s: imported stories260K-q8_0 \(/);
    assert.match(res.stderr, /quantizing .* \(F32, .*\) to q8_0 on 2 threads/);
    assert.match(res.stderr, /\d+\/\d+ tensors \([\d.]+ s\)/);
    const shown = JSON.parse(ok(['show', 'stories260K-q8_0', '--json']).stdout);
    assert.equal(shown.quantization, 'Q8_0');
    assert.equal(shown.cached.name, 'stories260K-q8_0');
    assert.equal(shown.cached.source, source);
    assert.ok(shown.size < fs.statSync(source).size / 2, `${shown.size} bytes`);
    // Every matrix in Q8_0, but those whose rows (172 wide: ffn_down) no 32-block divides, which
    // llama.cpp's quantizer writes in F16; the 1-D norms stay F32.
    const matrices = shown.tensors.filter((t) => t.dims.length >= 2);
    assert.ok(matrices.some((t) => t.dims[0] % 32 !== 0));
    for (const t of matrices) {
      assert.equal(t.type, t.dims[0] % 32 === 0 ? 'Q8_0' : 'F16', JSON.stringify(t));
    }
    assertCacheHolds(['stories260K-q8_0']);
    // Same name again: refused, nothing added.
    assert.match(fails(['import', source, '--quantize', 'q8_0']), /^inferbox import: model 'stories260K-q8_0' is already in the cache/);
    assertCacheHolds(['stories260K-q8_0']);
  });

  test('the quantized model serves completions', async () => {
    const server = await startServer({ model: null, args: ['--model', 'stories260K-q8_0'], env: { INFERBOX_CACHE: cache } });
    try {
      const res = await postJson(`${server.url}/v1/completions`, { model: 'stories260K-q8_0', prompt: ONCE, max_tokens: 16, temperature: 0 });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.ok(res.body.choices[0].text.length > 0);
      assert.equal(res.body.usage.completion_tokens, 16);
    } finally {
      await server.stop();
    }
  });

  test('--name, other types, and an importance matrix', () => {
    const source = modelPath(MODELS.plain);
    ok(['import', source, '--quantize', 'f16', '--name', 'tiny/half']);
    assert.equal(JSON.parse(ok(['show', 'tiny/half', '--json']).stdout).quantization, 'F16');
    // A legacy-format importance matrix for two of the model's matrices (64 columns each).
    const entries = [['blk.0.attn_q.weight', 64], ['blk.0.ffn_up.weight', 64]];
    const parts = [Buffer.from(new Int32Array([entries.length]).buffer)];
    for (const [name, n] of entries) {
      parts.push(Buffer.from(new Int32Array([name.length]).buffer), Buffer.from(name),
        Buffer.from(new Int32Array([1, n]).buffer), Buffer.from(new Float32Array(n).fill(1.5).buffer));
    }
    const dat = path.join(work, 'good.dat');
    fs.writeFileSync(dat, Buffer.concat(parts));
    const res = ok(['import', source, '--quantize', 'q4_0', '--imatrix', dat]);
    assert.match(res.stderr, /importance matrix .*good\.dat \(legacy format, 2 entries\)/);
    assert.equal(JSON.parse(ok(['show', 'stories260K-q4_0', '--json']).stdout).quantization, 'Q4_0');
    assertCacheHolds(['stories260K-q8_0', 'tiny+half', 'stories260K-q4_0']);
  });

  test('bad types, missing files, corrupt matrices and quantized sources fail and leave nothing', () => {
    const source = modelPath(MODELS.plain);
    const before = ['stories260K-q8_0', 'tiny+half', 'stories260K-q4_0'];
    let line = fails(['import', source, '--quantize', 'q4_9']);
    assert.match(line, /^inferbox import: unknown weight type 'q4_9' for --quantize; accepted: f32, bf16, f16, q8_0, q6_k, .*q4_k_m.*q2_k/);
    line = fails(['import', path.join(work, 'absent.gguf'), '--quantize', 'q8_0']);
    assert.match(line, /absent\.gguf/);
    line = fails(['import', source, '--quantize', 'q8_0', '--name', 'x', '--imatrix', path.join(work, 'absent.dat')]);
    assert.match(line, /^inferbox import: .*absent\.dat: cannot read the importance matrix/);
    const corrupt = path.join(work, 'corrupt.dat');
    fs.writeFileSync(corrupt, Buffer.from(new Int32Array([1, 1000000]).buffer));
    line = fails(['import', source, '--quantize', 'q8_0', '--name', 'x', '--imatrix', corrupt]);
    assert.match(line, /^inferbox import: .*corrupt\.dat: entry 1: the name length is 1000000 \(must be 0 to 1024\)$/);
    // An importance matrix of the wrong width for the model.
    const wrong = path.join(work, 'wrong.dat');
    const name = 'blk.0.attn_q.weight';
    fs.writeFileSync(wrong, Buffer.concat([Buffer.from(new Int32Array([1, name.length]).buffer), Buffer.from(name),
      Buffer.from(new Int32Array([1, 3]).buffer), Buffer.from(new Float32Array(3).fill(1).buffer)]));
    line = fails(['import', source, '--quantize', 'q8_0', '--name', 'x', '--imatrix', wrong]);
    assert.match(line, /'blk\.0\.attn_q\.weight' has 3 values but the model's tensor needs 64/);
    // An already quantized source: refused unless --allow-requantize, which is then honoured.
    line = fails(['import', modelPath(Q8_0), '--quantize', 'q4_0']);
    assert.match(line, /is already quantized \(Q8_0, .*\): quantizing it again adds a second rounding error .* --allow-requantize/);
    assertCacheHolds(before);
    ok(['import', modelPath(Q8_0), '--quantize', 'q4_0', '--allow-requantize', '--name', 'requantized']);
    assert.equal(JSON.parse(ok(['show', 'requantized', '--json']).stdout).quantization, 'Q4_0');
    ok(['rm', 'requantized']);
    // Quantizer options without --quantize are refused by the parser.
    const res = inferbox(['import', source, '--imatrix', corrupt]);
    assert.notEqual(res.status, 0);
    assertCacheHolds(before);
  });

  test('an interrupted quantization leaves no model and no partial file', async () => {
    const source = modelPath(MODELS.plain);
    const child = spawn(serverBinary(), ['import', source, '--quantize', 'q6_k', '--name', 'interrupted'], {
      env: { ...process.env, INFERBOX_CACHE: cache, INFERBOX_FAILPOINT_QUANTIZE_DELAY_MS: '8000' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    const waiting = new Promise((resolve) => {
      child.stderr.on('data', (d) => {
        stderr += d;
        if (stderr.includes('waiting 8000 ms (failpoint)')) {
          resolve();
        }
      });
    });
    const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    await Promise.race([waiting, exited]);
    // The whole output is written, in the staging folder.
    const tmp = path.join(cache, 'tmp');
    const staged = fs.readdirSync(tmp);
    assert.equal(staged.length, 1, stderr);
    assert.ok(fs.statSync(path.join(tmp, staged[0], 'model.gguf')).size > 0);
    child.kill('SIGINT');
    const { signal } = await exited;
    assert.equal(signal, 'SIGINT', stderr);
    assertCacheHolds(['stories260K-q8_0', 'tiny+half', 'stories260K-q4_0']);
  });
});

describe('inferbox profiles: the weight-type advice', () => {
  test('an F32 model is told which type decodes faster, with the command to make it', () => {
    const model = modelPath(MODELS.plain);
    assert.equal(JSON.parse(ok(['profiles', '--model', model, '--json']).stdout).weight_type_advice, null,
      'no advice without a measurement');
    ok(['hardware', '--measure']);
    // Fixed limits, so the advice is deterministic: memory binds every type.
    const file = path.join(cache, 'roofline.json');
    const saved = JSON.parse(fs.readFileSync(file, 'utf8'));
    const kernels = Object.fromEntries(Object.keys(saved.kernel_bytes_per_s).map((k) => [k, 60e9]));
    fs.writeFileSync(file, JSON.stringify({ ...saved, read_bytes_per_s: 30e9, kernel_bytes_per_s: kernels }));

    const out = JSON.parse(ok(['profiles', '--model', model, '--json']).stdout);
    const a = out.weight_type_advice;
    assert.equal(a.current, 'F32');
    assert.equal(a.quantized, false);
    assert.ok(Math.abs(a.current_tokens_per_s - out.decode_prediction.tokens_per_s) < 1e-9);
    assert.deepEqual(a.options.map((o) => o.type).sort(), ['bf16', 'f16', 'q8_0']); // equal quality only
    assert.equal(a.recommendation.type, 'q8_0');
    assert.ok(a.recommendation.speedup >= 1.1, JSON.stringify(a));
    assert.equal(a.recommendation.command, `inferbox import ${model} --quantize q8_0`);
    const text = ok(['profiles', '--model', model]).stdout;
    assert.match(text, new RegExp(`^weight type: q8_0 would decode \\d+% faster .* at equal or better quality than F32: inferbox import ${model.replace(/[.+]/g, '\\$&')} --quantize q8_0$`, 'm'));

    // The command works, and the Q8_0 model it makes gets no further advice.
    ok(['import', model, '--quantize', 'q8_0', '--name', 'advised']);
    const q8 = JSON.parse(ok(['profiles', '--model', 'advised', '--json']).stdout).weight_type_advice;
    assert.equal(q8.current, 'Q8_0');
    assert.equal(q8.recommendation, null);
    assert.doesNotMatch(ok(['profiles', '--model', 'advised']).stdout, /^weight type:/m);
    // A cached F32 model's command names the new model.
    ok(['import', model, '--name', 'plain']);
    const cached = JSON.parse(ok(['profiles', '--model', 'plain', '--json']).stdout).weight_type_advice;
    assert.match(cached.recommendation.command, / --quantize q8_0 --name plain-q8_0$/);
  });
});
