// A GGUF whose tokenizer would crash llama.cpp (issue 24, item 2) is refused when it loads, and
// the server survives it. The bad files are copies of stories260K.gguf with one tokenizer entry
// changed, written by the small GGUF rewriter below. The case that used to kill the server: the
// byte token '<0x0A>' respelled '<0xZZ>' leaves the SentencePiece vocabulary without a token for
// byte 0x0A, and llama.cpp's tokenizer then throws std::out_of_range (unordered_map::at) on the
// first prompt holding a newline; uncaught, that aborted the process.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  GREEDY_64,
  MODELS,
  ONCE,
  assertErrorShape,
  getJson,
  modelPath,
  postJson,
  serverBinary,
  startServer,
} from './harness.mjs';

// --- a GGUF rewriter ----------------------------------------------------------------------------
// Reads a GGUF (v2/v3, little-endian) into its header, its metadata entries (each kept as the
// encoded value bytes) and the tensor infos and data; writes it back with entries changed. The
// tensor data section moves with the metadata, so it is re-aligned; tensor offsets are relative
// to it and stay valid.

const TYPE = {
  u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12,
};
const FIXED_SIZE = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

function readGguf(buf) {
  assert.equal(buf.subarray(0, 4).toString('latin1'), 'GGUF');
  let pos = 4;
  const u32 = () => {
    const v = buf.readUInt32LE(pos);
    pos += 4;
    return v;
  };
  const u64 = () => {
    const v = buf.readBigUInt64LE(pos);
    pos += 8;
    return Number(v);
  };
  const str = () => {
    const n = u64();
    pos += n;
    return buf.subarray(pos - n, pos);
  };
  const skipValue = (type) => {
    if (type === TYPE.string) {
      str();
    } else if (type === TYPE.array) {
      const elementType = u32();
      const n = u64();
      for (let i = 0; i < n; i++) {
        skipValue(elementType);
      }
    } else {
      pos += FIXED_SIZE[type];
    }
  };
  const version = u32();
  const nTensors = u64();
  const nKv = u64();
  const kvs = [];
  for (let i = 0; i < nKv; i++) {
    const key = str().toString('utf8');
    const type = u32();
    const start = pos;
    skipValue(type);
    kvs.push({ key, type, value: buf.subarray(start, pos) });
  }
  const align = kvs.find((kv) => kv.key === 'general.alignment');
  const alignment = align ? align.value.readUInt32LE(0) : 32;
  const infoStart = pos;
  for (let i = 0; i < nTensors; i++) {
    str();
    const nDims = u32();
    pos += 8 * nDims + 4 + 8; // dimensions, type, offset
  }
  const infos = buf.subarray(infoStart, pos);
  const data = buf.subarray(Math.ceil(pos / alignment) * alignment);
  return { version, nTensors, kvs, alignment, infos, data };
}

function writeGguf(g) {
  const parts = [];
  const u32 = (v) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    parts.push(b);
  };
  const u64 = (v) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    parts.push(b);
  };
  parts.push(Buffer.from('GGUF', 'latin1'));
  u32(g.version);
  u64(g.nTensors);
  u64(g.kvs.length);
  for (const kv of g.kvs) {
    const key = Buffer.from(kv.key, 'utf8');
    u64(key.length);
    parts.push(key);
    u32(kv.type);
    parts.push(kv.value);
  }
  parts.push(g.infos);
  const size = parts.reduce((n, p) => n + p.length, 0);
  parts.push(Buffer.alloc(Math.ceil(size / g.alignment) * g.alignment - size));
  parts.push(g.data);
  return Buffer.concat(parts);
}

// Encoded values (the bytes after the type id).
const encode = {
  u32(v) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return b;
  },
  stringArray(list) {
    const parts = [encode.u32(TYPE.string), Buffer.alloc(8)];
    parts[1].writeBigUInt64LE(BigInt(list.length));
    for (const s of list) {
      const bytes = Buffer.isBuffer(s) ? s : Buffer.from(s, 'utf8');
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(bytes.length));
      parts.push(len, bytes);
    }
    return Buffer.concat(parts);
  },
  string(s) {
    const bytes = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(bytes.length));
    return Buffer.concat([len, bytes]);
  },
  // An array of fixed-size elements: `write(buffer, value, offset)` writes one.
  fixedArray(elementType, list, write) {
    const size = FIXED_SIZE[elementType];
    const b = Buffer.alloc(12 + size * list.length);
    b.writeUInt32LE(elementType, 0);
    b.writeBigUInt64LE(BigInt(list.length), 4);
    list.forEach((v, i) => write(b, v, 12 + size * i));
    return b;
  },
};

function decodeStringArray(value) {
  assert.equal(value.readUInt32LE(0), TYPE.string);
  const n = Number(value.readBigUInt64LE(4));
  const out = [];
  let pos = 12;
  for (let i = 0; i < n; i++) {
    const len = Number(value.readBigUInt64LE(pos));
    out.push(value.subarray(pos + 8, pos + 8 + len).toString('utf8'));
    pos += 8 + len;
  }
  return out;
}

function decodeI32Array(value) {
  assert.equal(value.readUInt32LE(0), TYPE.i32);
  const n = Number(value.readBigUInt64LE(4));
  return Array.from({ length: n }, (_, i) => value.readInt32LE(12 + 4 * i));
}

// A copy of stories260K.gguf with `change(g, kv)` applied: kv(key) is the entry (undefined when
// absent) and set(key, type, value) replaces or adds one.
function variant(change) {
  const g = readGguf(fs.readFileSync(modelPath(MODELS.plain)));
  const kv = (key) => g.kvs.find((e) => e.key === key);
  const set = (key, type, value) => {
    const e = kv(key);
    if (e) {
      e.type = type;
      e.value = value;
    } else {
      g.kvs.push({ key, type, value });
    }
  };
  change({ kv, set, tokens: () => decodeStringArray(kv('tokenizer.ggml.tokens').value) });
  return writeGguf(g);
}

// Respells token `from` as `to`, and gives it token type `type` when set.
function respell(from, to, type) {
  return variant(({ kv, set, tokens }) => {
    const list = tokens();
    const i = list.indexOf(from);
    assert.ok(i >= 0, `stories260K.gguf has no token ${from}`);
    list[i] = to;
    set('tokenizer.ggml.tokens', TYPE.array, encode.stringArray(list));
    if (type !== undefined) {
      const types = decodeI32Array(kv('tokenizer.ggml.token_type').value);
      types[i] = type;
      set('tokenizer.ggml.token_type', TYPE.array,
        encode.fixedArray(TYPE.i32, types, (b, v, o) => b.writeInt32LE(v, o)));
    }
  });
}

const NORMAL = 1; // token type

// name → [file bytes, what the error must say]
function badFiles() {
  return {
    'byte-zz.gguf': [respell('<0x0A>', '<0xZZ>'), /tokenizer\.ggml\.tokens.*element 13.*'<0xZZ>'.*<0xHH>/],
    'byte-minus-1.gguf': [respell('<0x41>', '<0x-1>'), /tokenizer\.ggml\.tokens.*element 68.*'<0x-1>'.*<0xHH>/],
    // Spelled like a normal token: no spelling rule applies, but byte 0x0A has no token left.
    'byte-zz-normal.gguf': [respell('<0x0A>', '<0xZZ>', NORMAL), /tokenizer\.ggml\.tokens.*no token for byte 0x0A/],
    'eos-512.gguf': [
      variant(({ set }) => set('tokenizer.ggml.eos_token_id', TYPE.u32, encode.u32(512))),
      /tokenizer\.ggml\.eos_token_id is 512.*512 tokens/,
    ],
    'bos-2e31.gguf': [
      variant(({ set }) => set('tokenizer.ggml.bos_token_id', TYPE.u32, encode.u32(2 ** 31))),
      /tokenizer\.ggml\.bos_token_id is 2147483648/,
    ],
    'token-type-u32.gguf': [
      variant(({ kv, set }) => {
        const types = decodeI32Array(kv('tokenizer.ggml.token_type').value);
        set('tokenizer.ggml.token_type', TYPE.array,
          encode.fixedArray(TYPE.u32, types, (b, v, o) => b.writeUInt32LE(v, o)));
      }),
      /tokenizer\.ggml\.token_type.*u32.*i32/,
    ],
    'scores-short.gguf': [
      variant(({ set }) => set('tokenizer.ggml.scores', TYPE.array,
        encode.fixedArray(TYPE.f32, new Array(511).fill(0), (b, v, o) => b.writeFloatLE(v, o)))),
      /tokenizer\.ggml\.scores has 511 elements.*512/,
    ],
  };
}

function serve(args) {
  const r = spawnSync(serverBinary(), ['serve', ...args, '--host', '127.0.0.1', '--port', '0'], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: r.status, signal: r.signal, output: `${r.stdout ?? ''}${r.stderr ?? ''}`, error: r.error };
}

async function greedy(server, model) {
  const res = await postJson(`${server.url}/v1/completions`, { model, prompt: ONCE, max_tokens: 64, temperature: 0 });
  assert.equal(res.status, 200, `${model}: ${res.text}`);
  return res.body.choices[0].text;
}

// Prompts that make llama.cpp's SentencePiece tokenizer fall back to byte tokens: newlines and a
// tab (no tokens of their own in stories260K) and characters outside the vocabulary.
const BYTE_FALLBACK_PROMPTS = ['Once upon a time\nthere was', 'a\tb', 'Zürich € 🙂\n\n'];

describe('a tokenizer that would crash llama.cpp is refused at load', () => {
  let dir;
  let files;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-gguf-tokenizer-'));
    files = badFiles();
    for (const [name, [bytes]] of Object.entries(files)) {
      fs.writeFileSync(path.join(dir, name), bytes);
    }
    // The rewriter itself changes nothing else: an unchanged copy loads and answers.
    fs.writeFileSync(path.join(dir, 'copy.gguf'), variant(() => {}));
    // A chat template that recurses without end (issue 24, item 3), embedded as a GGUF carries it.
    fs.writeFileSync(path.join(dir, 'template-recursion.gguf'), variant(({ set }) => set('tokenizer.chat_template',
      TYPE.string, encode.string('{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}'))));
  });
  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('serve --model <bad tokenizer>: exits 1 with an error naming the file and the problem, never a signal', () => {
    const wrong = [];
    for (const [name, [, why]] of Object.entries(files)) {
      const file = path.join(dir, name);
      const r = serve(['--model', file]);
      assert.equal(r.error, undefined, `${name}: ${r.error}`);
      assert.equal(r.signal, null, `${name}: killed by ${r.signal}\n${r.output}`);
      const errors = r.output.split('\n').filter((l) => /\berror\b/.test(l) && !/llama\.cpp:/.test(l));
      if (r.code !== 1) {
        wrong.push(`${name}: exit ${r.code}`);
      } else if (errors.length !== 1 || !errors[0].includes(name) || !why.test(errors[0])) {
        wrong.push(`${name}: expected one error line naming the file and matching ${why}: ${JSON.stringify(errors)}`);
      }
    }
    assert.equal(wrong.length, 0, `${wrong.length} case(s) wrong:\n  ${wrong.join('\n  ')}\n`);
  });

  describe('in a multi-model server', () => {
    let server;
    before(async () => {
      server = await startServer({
        model: null,
        args: [
          '--model', `good=${modelPath(MODELS.plain)}`,
          '--model', `bad=${path.join(dir, 'byte-zz.gguf')}`,
          '--model', `normal=${path.join(dir, 'byte-zz-normal.gguf')}`,
          '--model', `copy=${path.join(dir, 'copy.gguf')}`,
          '--model', `tmpl=${path.join(dir, 'template-recursion.gguf')}`,
        ],
      });
    });
    after(async () => {
      await server?.stop();
    });

    test('requests to the bad models get 503 model_load_failed naming the problem; the server keeps serving', async () => {
      for (const [id, file, why] of [
        ['bad', 'byte-zz.gguf', /'<0xZZ>'/],
        ['normal', 'byte-zz-normal.gguf', /no token for byte 0x0A/],
      ]) {
        for (const prompt of BYTE_FALLBACK_PROMPTS) {
          const res = await postJson(`${server.url}/v1/completions`, { model: id, prompt, max_tokens: 4 });
          const err = assertErrorShape(res, 503);
          assert.equal(err.code, 'model_load_failed');
          assert.match(err.message, new RegExp(`'${id}'.*${file.replace('.', '\\.')}`));
          assert.match(err.message, why);
        }
        const m = (await getJson(`${server.url}/v1/models`)).body.data.find((e) => e.id === id);
        assert.equal(m.status, 'failed');
        assert.match(m.error, why);
      }
      assert.equal(server.exitInfo, null, 'the server is still running');
      assert.equal((await getJson(`${server.url}/v1/health/ready`)).status, 200);
      assert.equal(await greedy(server, 'good'), GREEDY_64);
    });

    test('a model whose embedded chat template recurses forever: 503 for it alone, no crash', async () => {
      for (const kind of ['chat/completions', 'completions']) {
        const body = kind === 'completions' ? { model: 'tmpl', prompt: ONCE, max_tokens: 4 }
          : { model: 'tmpl', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4 };
        const res = await postJson(`${server.url}/v1/${kind}`, body);
        const err = assertErrorShape(res, 503);
        assert.equal(err.code, 'model_load_failed', res.text);
        assert.match(err.message, /template-recursion\.gguf/);
        assert.match(err.message, /chat template/);
      }
      assert.equal(server.exitInfo, null, 'the server is still running');
      assert.equal(await greedy(server, 'good'), GREEDY_64);
    });

    test('the good model and the rewritten copy tokenize byte-fallback prompts', async () => {
      for (const id of ['good', 'copy']) {
        for (const prompt of BYTE_FALLBACK_PROMPTS) {
          const body = { model: id, prompt, max_tokens: 4, temperature: 0 };
          const res = await postJson(`${server.url}/v1/completions`, body);
          assert.equal(res.status, 200, `${id} ${JSON.stringify(prompt)}: ${res.text}`);
        }
      }
      assert.equal(await greedy(server, 'copy'), GREEDY_64);
      assert.equal(server.exitInfo, null, 'the server is still running');
    });
  });
});
