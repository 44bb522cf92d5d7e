// The benchmark model generator (tools/make-synthetic-gguf), as scripts/bench.sh uses it for the
// ~0.5B model: a vocabulary padded to a real model's size with the output tied to the embeddings
// loads in llama.cpp at that size, and greedy decoding still emits only the tokenizer's text
// tokens, one per stream chunk (the benchmarks' chunk gaps time one token each only then).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { MODELS, modelPath, postJson, postStream, serverBinary, useServer } from './harness.mjs';

const generator = () => path.join(path.dirname(serverBinary()), 'tools', 'make-synthetic-gguf');
// A small shape (2 layers x 128) so the test takes seconds; the padding and tying are the point.
const SHAPE = ['--layers', '2', '--embd', '128', '--heads', '4', '--kv-heads', '2', '--ffn', '256', '--ctx', '1024',
  '--type', 'f16'];

describe('make-synthetic-gguf --vocab-size --tie-embeddings', () => {
  const synth = path.join(os.tmpdir(), `inferbox-synth-vocab-${process.pid}.gguf`);
  before(() => {
    const r = spawnSync(generator(), ['--out', synth, '--vocab-from', modelPath(MODELS.plain), ...SHAPE,
      '--vocab-size', '8192', '--tie-embeddings', '--verify'], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${generator()}: ${r.stderr}${r.error ?? ''}`);
    // llama.cpp loaded it with the padded vocabulary and decoded a prompt.
    assert.match(r.stdout, /vocab 8192, prompt of \d+ tokens decoded \(rc 0\)/);
  });
  after(() => fs.rmSync(synth, { force: true }));
  const ctx = useServer({ model: synth });

  test('greedy decoding emits only text tokens, never the padding, one token per stream chunk', ctx.wrap(async () => {
    const body = { prompt: 'Once upon a time there was a girl', max_tokens: 48, temperature: 0, logprobs: 1 };
    const res = await postJson(`${ctx.server.url}/v1/completions`, body);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.usage.completion_tokens, 48);
    const tokens = res.body.choices[0].logprobs.tokens;
    assert.equal(tokens.length, 48);
    for (const t of tokens) {
      assert.doesNotMatch(t, /synthetic_unused|<0x[0-9A-F]{2}>|<s>|<\/s>/, `non-text token ${JSON.stringify(t)}`);
    }

    const streamed = await postStream(`${ctx.server.url}/v1/completions`, { ...body, logprobs: undefined, stream: true });
    assert.equal(streamed.status, 200, streamed.text);
    const pieces = streamed.chunks.map((c) => c.choices[0]?.text ?? '').filter((t) => t.length > 0);
    assert.equal(pieces.length, 48, `48 tokens came in ${pieces.length} content chunks`);
    assert.equal(pieces.join(''), res.body.choices[0].text);
  }));

  test('a --vocab-size below the tokenizer\'s own is refused, naming both sizes', () => {
    const out = path.join(os.tmpdir(), `inferbox-synth-small-${process.pid}.gguf`);
    const r = spawnSync(generator(), ['--out', out, '--vocab-from', modelPath(MODELS.plain), ...SHAPE,
      '--vocab-size', '100'], { encoding: 'utf8' });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /has 512 tokens, more than --vocab-size 100 \(the vocabulary can be padded, not cut\)/);
    assert.equal(fs.existsSync(out), false);
  });
});
