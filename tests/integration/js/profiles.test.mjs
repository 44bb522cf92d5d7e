// `inferbox hardware` and `inferbox profiles` on the real test models: the JSON shapes, sane
// numbers for this machine, at least one runnable profile for the tiny model, the pick, a model
// resolved by its cached name, and a truncated model refused with one line naming the file.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { GREEDY_64, MODELS, ONCE, cliOk, getJson, modelPath, runCli, serverBinary, useServer } from './harness.mjs';

let work; // temporary folder: the cache and the damaged copy
let cache;

function inferbox(args) {
  return runCli(args, { env: { INFERBOX_CACHE: cache } });
}

function ok(args) {
  return cliOk(args, { env: { INFERBOX_CACHE: cache } }).stdout;
}

function fails(args) {
  const res = inferbox(args);
  assert.equal(res.signal, null, `inferbox ${args.join(' ')} died of ${res.signal}\n${res.stderr}`);
  assert.equal(res.status, 1, `inferbox ${args.join(' ')} exited ${res.status}\nstdout: ${res.stdout}\nstderr: ${res.stderr}`);
  const lines = res.stderr.split('\n').filter((l) => l.length > 0);
  assert.equal(lines.length, 1, `expected one error line, got:\n${res.stderr}`);
  assert.equal(res.stdout, '', `nothing on stdout after an error, got:\n${res.stdout}`);
  return lines[0];
}

const isInt = (v) => Number.isInteger(v);

// A small synthetic model (heads of 32, 4 query heads on 2 KV heads) from the project's own
// generator, made once: the tiled flash-attention kernel takes its heads, where it cannot take
// stories260K's heads of 8, and a q8_0 KV cache needs head sizes divisible by 32.
const SYNTH = path.join(os.tmpdir(), `inferbox-synth-${process.pid}.gguf`);
let synthFile;
function synthModel() {
  if (!synthFile) {
    const file = SYNTH;
    const gen = path.join(path.dirname(serverBinary()), 'tools', 'make-synthetic-gguf');
    const r = spawnSync(gen, ['--out', file, '--vocab-from', modelPath(MODELS.plain), '--layers', '2', '--embd', '128',
      '--heads', '4', '--kv-heads', '2', '--ffn', '256', '--ctx', '16384', '--type', 'f16'], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${gen}: ${r.stderr}${r.error ?? ''}`);
    synthFile = file;
  }
  return synthFile;
}

before(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-profiles-'));
  cache = path.join(work, 'cache');
});

after(() => {
  if (synthFile) fs.rmSync(synthFile, { force: true });
  if (work) {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

describe('inferbox hardware', () => {
  test('--json has the documented shape and sane numbers', () => {
    const hw = JSON.parse(ok(['hardware', '--json']));
    for (const key of [
      'arch', 'cpu_model', 'isa', 'logical_cpus', 'physical_cores', 'cpus_allowed', 'cgroup_cpu_quota',
      'effective_cores', 'effective_threads', 'cache', 'ram_total_bytes', 'ram_available_bytes',
      'cgroup_memory_limit_bytes', 'cgroup_memory_usage_bytes', 'effective_ram_total_bytes',
      'effective_ram_available_bytes', 'memlock_limit_bytes', 'gpus',
    ]) {
      assert.ok(key in hw, `missing ${key}`);
    }
    assert.ok(typeof hw.arch === 'string' && hw.arch.length > 0);
    assert.ok(Array.isArray(hw.isa));
    assert.ok(isInt(hw.logical_cpus) && hw.logical_cpus >= 1, `logical_cpus ${hw.logical_cpus}`);
    assert.ok(isInt(hw.physical_cores) && hw.physical_cores >= 1, `physical_cores ${hw.physical_cores}`);
    assert.ok(hw.physical_cores <= hw.logical_cpus);
    assert.ok(hw.effective_cores >= 1 && hw.effective_cores <= hw.effective_threads);
    assert.ok(hw.effective_threads <= hw.logical_cpus);
    assert.ok(hw.ram_total_bytes > 0, `ram_total_bytes ${hw.ram_total_bytes}`);
    assert.ok(hw.effective_ram_available_bytes > 0);
    assert.ok(hw.effective_ram_available_bytes <= hw.effective_ram_total_bytes);
    assert.ok(hw.effective_ram_total_bytes <= hw.ram_total_bytes);
    assert.deepEqual(Object.keys(hw.cache).sort(), ['l1d_bytes', 'l2_bytes', 'l3_bytes']);
    assert.deepEqual(hw.gpus, []); // the CPU build: the store layer reports none
    if (hw.arch === 'x86_64') {
      if (hw.isa.includes('avx2')) {
        assert.ok(hw.isa.includes('avx'));
      }
    }
  });

  test('the text form names the CPU, cores and memory', () => {
    const out = ok(['hardware']);
    assert.match(out, /^cpu:\s+.+\(.+\)$/m);
    assert.match(out, /^physical cores:\s+\d+$/m);
    assert.match(out, /^ram:\s+.+ total, .+ available$/m);
    assert.match(out, /^effective:\s+\d+ cores, \d+ threads$/m);
  });
});

describe('inferbox hardware --measure and the decode prediction', () => {
  test('measures the roofline, caches it for this machine only, and profiles predicts from it', () => {
    const model = modelPath(MODELS.plain);
    assert.equal(JSON.parse(ok(['hardware', '--json'])).roofline, null, 'a fresh cache has no measurement');
    assert.match(ok(['hardware']), /^memory read:\s+not measured \(inferbox hardware --measure\)$/m);
    assert.match(ok(['profiles', '--model', model]), /^decode prediction: run `inferbox hardware --measure` once/m);
    const unmeasured = JSON.parse(ok(['profiles', '--model', model, '--json']));
    const cpuTargets = (out) => out.profiles.filter((p) => p.name.startsWith('cpu-')).map((p) => p.latency_targets);
    for (const t of cpuTargets(unmeasured)) {
      assert.equal(t.basis, 'fallback', JSON.stringify(t)); // no measurement: the assumed bandwidth
    }

    const measured = JSON.parse(ok(['hardware', '--measure', '--json']));
    const r = measured.roofline;
    assert.equal(r.threads, measured.effective_threads);
    assert.ok(r.read_bytes_per_s > 1e8, `read ${r.read_bytes_per_s} B/s`);
    for (const t of ['f32', 'f16', 'q8_0', 'q6_k', 'q5_0', 'q4_k', 'q4_0']) {
      assert.ok(r.kernel_bytes_per_s[t] > 1e7, `kernel ${t}: ${r.kernel_bytes_per_s[t]}`);
      assert.ok(r.batch_kernel_bytes_per_s[t] > 1e7, `batched ${t}: ${r.batch_kernel_bytes_per_s[t]}`);
    }
    assert.match(r.measured_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    // Cached: the same figures without measuring again.
    assert.deepEqual(JSON.parse(ok(['hardware', '--json'])).roofline, r);
    assert.match(ok(['hardware']), /^memory read:\s+\d+\.\d GB\/s on \d+ threads \(measured /m);
    assert.match(ok(['hardware']), /^kernel q8_0:\s+\d+\.\d GB\/s .*; \d+\.\d GB\/s through a 128-token product \(prompts\)$/m);

    // The prediction is the roofline's arithmetic over the model's weights.
    const p = JSON.parse(ok(['profiles', '--model', model, '--json'])).decode_prediction;
    assert.ok(p, 'no decode_prediction after a measurement');
    assert.ok(p.bytes_per_token > 0 && p.bytes_per_token <= fs.statSync(model).size, `${p.bytes_per_token} bytes`);
    const close = (a, b) => Math.abs(a - b) <= 1e-9 * Math.max(Math.abs(a), Math.abs(b));
    assert.ok(close(p.bandwidth_limit_tokens_per_s, r.read_bytes_per_s / p.bytes_per_token),
      `${p.bandwidth_limit_tokens_per_s} vs ${r.read_bytes_per_s / p.bytes_per_token}`);
    assert.deepEqual(p.unmeasured_types, []); // the tiny model is f32 (and f32 was measured)
    assert.ok(p.kernel_limit_tokens_per_s > 0);
    assert.ok(p.tokens_per_s <= Math.min(p.bandwidth_limit_tokens_per_s, p.kernel_limit_tokens_per_s) * (1 + 1e-9));
    assert.ok(['bandwidth', 'kernel', 'mixed'].includes(p.bound));
    assert.match(ok(['profiles', '--model', model]), /^decode, 1 stream, short context \(predicted from `inferbox hardware --measure`\): [\d.]+ tokens\/s/m);
    // The prompt's rate, from the batched products of the types a prompt token passes through.
    assert.ok(p.prefill_tokens_per_s > 0, JSON.stringify(p));
    assert.match(ok(['profiles', '--model', model]), /^prompt, short \(predicted from the batched kernels\): [\d.]+ tokens\/s$/m);
    // The default latency targets now come from the measurement.
    const measuredOut = JSON.parse(ok(['profiles', '--model', model, '--json']));
    for (const t of cpuTargets(measuredOut)) {
      assert.equal(t.basis, 'measured', JSON.stringify(t));
      assert.equal(t.prefill_basis, 'batched kernels', JSON.stringify(t));
      assert.ok(t.itl_ms >= 50 && t.ttft_ms >= 250, JSON.stringify(t));
    }
    assert.match(ok(['profiles', '--model', model]), /^latency targets \(TTFT\/ITL\): serve's defaults, from the decode prediction of the measured roofline$/m);

    const file = path.join(cache, 'roofline.json');
    const saved = JSON.parse(fs.readFileSync(file, 'utf8'));
    // A cache written before the batched probe: prompts fall back to the matrix-vector rate.
    const { batch_kernel_bytes_per_s: _, ...older } = saved;
    fs.writeFileSync(file, JSON.stringify(older));
    const olderOut = JSON.parse(ok(['profiles', '--model', model, '--json']));
    assert.equal(olderOut.decode_prediction.prefill_tokens_per_s, null);
    for (const t of cpuTargets(olderOut)) {
      assert.equal(t.prefill_basis, 'matrix-vector kernels', JSON.stringify(t));
    }

    // Another machine's measurement (another CPU, or another thread count) is never used.
    fs.writeFileSync(file, JSON.stringify({ ...saved, machine: `${saved.machine}-elsewhere` }));
    assert.equal(JSON.parse(ok(['hardware', '--json'])).roofline, null);
    assert.equal(JSON.parse(ok(['profiles', '--model', model, '--json'])).decode_prediction, null);
    for (const damaged of ['{ damaged', JSON.stringify({ ...saved, machine: null }),
      JSON.stringify({ ...saved, threads: 'two' }), JSON.stringify({ ...saved, measured_at: 5, kernel_bytes_per_s: [] })]) {
      fs.writeFileSync(file, damaged);
      const hw = JSON.parse(ok(['hardware', '--json']));
      if (damaged.includes('"measured_at":5')) {
        assert.equal(hw.roofline.measured_at, ''); // usable figures, an unreadable date
        assert.deepEqual(hw.roofline.kernel_bytes_per_s, {});
      } else {
        assert.equal(hw.roofline, null, damaged);
      }
    }
  });
});

describe('inferbox profiles', () => {
  test('--json on stories260K: shapes, a runnable profile, a pick', () => {
    const file = modelPath(MODELS.plain);
    const out = JSON.parse(ok(['profiles', '--model', file, '--json']));
    assert.equal(out.file, file);
    assert.equal(out.model.architecture, 'llama');
    assert.equal(out.model.context_length, 512);
    assert.equal(out.model.block_count, 5);
    assert.equal(out.model.head_count_kv, 4);
    assert.equal(out.model.key_length, 8);
    assert.equal(out.model.problem, null);
    assert.ok(out.model.weight_bytes > 1_000_000 && out.model.weight_bytes < 1_300_000);
    assert.ok(out.hardware.physical_cores >= 1);
    assert.ok(out.hardware.ram_total_bytes > 0);
    assert.ok(out.budget.bytes > 0 && out.budget.bytes <= out.budget.available);

    assert.ok(out.profiles.length >= 4);
    for (const p of out.profiles) {
      assert.match(p.name, /^(cpu|gpu)-(latency|throughput)(-p\d+)?-ctx\d+(-kvq8)?$/);
      assert.ok(['latency', 'throughput'].includes(p.flavour));
      assert.ok(['runnable', 'low_memory', 'incompatible'].includes(p.status));
      assert.ok(['f32', 'f16', 'q8_0'].includes(p.kv_cache_type));
      for (const key of ['threads', 'parallel', 'ctx_size', 'batch_size', 'ubatch_size', 'gpu_layers']) {
        assert.ok(isInt(p[key]), `${p.name}.${key} = ${p[key]}`);
      }
      assert.equal(typeof p.flash_attn, 'boolean');
      assert.equal(typeof p.mmap, 'boolean');
      assert.equal(typeof p.mlock, 'boolean');
      const m = p.memory;
      assert.equal(m.total, m.weights + m.kv_cache + m.compute + m.overhead);
      assert.ok(m.weights === out.model.weight_bytes || p.mlock);
      if (p.status === 'runnable') {
        assert.equal(p.detail, null);
        assert.ok(m.total <= out.budget.bytes);
      } else {
        assert.ok(typeof p.detail === 'string' && p.detail.length > 0, `${p.name}: no detail`);
      }
    }
    const byName = Object.fromEntries(out.profiles.map((p) => [p.name, p]));
    const latency = byName['cpu-latency-ctx512'];
    assert.ok(latency, 'cpu-latency-ctx512 listed');
    assert.equal(latency.status, 'runnable');
    assert.equal(latency.parallel, 1);
    assert.equal(latency.threads, out.hardware.effective_cores);
    assert.equal(latency.gpu_layers, 0);
    // KV, f32 as auto settles it on the CPU for heads of 8 (the tiled flash-attention kernel
    // cannot take them): 2 × 5 layers × 512 cells × (4 KV heads × 8) × 4 bytes.
    assert.equal(latency.kv_cache_type, 'f32');
    assert.equal(latency.memory.kv_cache, 2 * 5 * 512 * 32 * 4);
    // Head size 8 cannot hold q8_0 blocks of 32.
    assert.equal(byName['cpu-latency-ctx512-kvq8'].status, 'incompatible');
    assert.match(byName['cpu-latency-ctx512-kvq8'].detail, /divisible by 32/);
    // No GPU in this build.
    assert.equal(byName['gpu-latency-ctx512'].status, 'incompatible');
    assert.match(byName['gpu-latency-ctx512'].detail, /no GPU/);
    assert.ok(out.profiles.some((p) => p.flavour === 'throughput' && p.status === 'runnable'));

    assert.equal(out.pick_error, null);
    assert.equal(out.pick.name, 'cpu-latency-ctx512');
    assert.equal(out.pick.adjusted, false);
    assert.match(out.pick.reason, /^cpu-latency-ctx512: /);
  });

  test('the table, and the throughput pick', () => {
    const out = ok(['profiles', '--model', modelPath(MODELS.plain), '--goal', 'throughput']);
    const lines = out.trimEnd().split('\n');
    assert.match(lines[0], /^model:\s+.*stories260K\.gguf \(llama, .*trained context 512\)$/);
    assert.match(lines[1], /^budget:\s+/);
    assert.match(
      lines[2],
      /^NAME\s+FLAVOUR\s+THREADS\s+PARALLEL\s+CTX\s+BATCH\/UBATCH\s+KV\s+FLASH\s+GPU-LAYERS\s+EST\.MEMORY\s+TTFT\/ITL\s+STATUS$/,
    );
    assert.match(out, /^cpu-latency-ctx512\s+latency\s+\d+\s+1\s+512\s+2048\/256\s+f32\s+off\s+0\s+[\d.]+ MiB\s+\d+\/\d+ms\s+runnable$/m);
    assert.match(out, /^gpu-latency-ctx512\s+.*\s+-\s+incompatible: /m); // no CPU prediction for a GPU
    assert.match(out, /^serve would pick \(throughput\): cpu-throughput-p8-ctx512: /m);
  });

  test('a custom configuration is estimated next to the candidates', () => {
    const out = JSON.parse(
      ok(['profiles', '--model', modelPath(MODELS.plain), '--json', '--ctx-size', '1024', '--parallel', '4']),
    );
    const custom = out.profiles.find((p) => p.name === 'custom');
    assert.ok(custom, 'custom profile listed');
    assert.equal(custom.parallel, 4);
    assert.equal(custom.ctx_size, 1024);
    assert.equal(custom.flavour, 'throughput');
    // What serve settles on the CPU for heads of 8, which the tiled flash-attention kernel cannot
    // take: f32 KV (4 bytes) without flash attention.
    assert.equal(custom.kv_cache_type, 'f32');
    assert.equal(custom.flash_attn, false);
    assert.equal(custom.memory.kv_cache, 2 * 5 * 4 * 1024 * 32 * 4);

    // An explicit type is kept, and f16 halves the KV; it takes flash attention.
    const f16 = JSON.parse(ok(['profiles', '--model', modelPath(MODELS.plain), '--json', '--ctx-size', '1024',
      '--parallel', '4', '--kv-type', 'f16'])).profiles.find((p) => p.name === 'custom');
    assert.equal(f16.kv_cache_type, 'f16');
    assert.equal(f16.flash_attn, true);
    assert.equal(f16.memory.kv_cache * 2, custom.memory.kv_cache);

    // Heads the tiled kernel takes: f16 KV with flash attention at any length, also with only the
    // type given.
    const synth = (extra) => JSON.parse(ok(['profiles', '--model', synthModel(), '--json', ...extra]))
      .profiles.find((p) => p.name === 'custom');
    for (const ctx of ['1024', '16384']) {
      const auto = synth(['--ctx-size', ctx]);
      assert.deepEqual([auto.kv_cache_type, auto.flash_attn], ['f16', true], ctx);
      const typed = synth(['--ctx-size', ctx, '--kv-type', 'f16']);
      assert.deepEqual([typed.kv_cache_type, typed.flash_attn], ['f16', true], ctx);
    }
    const f32 = synth(['--ctx-size', '1024', '--kv-type', 'f32']);
    assert.deepEqual([f32.kv_cache_type, f32.flash_attn], ['f32', true]);
  });

  test('--draft-model: every estimate includes the draft model, as serve counts it', () => {
    const list = (extra) => JSON.parse(ok(['profiles', '--model', modelPath(MODELS.plain), '--json', ...extra]));
    const alone = list([]);
    const both = list(['--draft-model', modelPath('stories260K-Q8_0.gguf')]);
    for (const p of both.profiles.filter((x) => x.status === 'runnable')) {
      const a = alone.profiles.find((x) => x.name === p.name);
      assert.ok(p.memory.draft > 0, p.name);
      assert.equal(a.memory.draft, 0);
      assert.equal(p.memory.total, a.memory.total + p.memory.draft, p.name);
    }
    const res = spawnSync(serverBinary(), ['profiles', '--model', modelPath(MODELS.plain), '--draft-model', 'none.gguf'],
      { encoding: 'utf8' });
    assert.equal(res.status, 1);
    assert.match(res.stderr, /--draft-model: .*none\.gguf/);
  });

  test('--memory-budget: low_memory with a change that fits, and a refusal with the numbers', () => {
    const file = modelPath(MODELS.plain);
    const full = JSON.parse(ok(['profiles', '--model', file, '--json']));
    const latency = full.profiles.find((p) => p.name === 'cpu-latency-ctx512');
    assert.equal(latency.kv_cache_type, 'f32');
    assert.equal(latency.flash_attn, false);
    const at = (bytes) => JSON.parse(ok(['profiles', '--model', file, '--json', '--memory-budget', String(bytes)]))
      .profiles.find((x) => x.name === 'cpu-latency-ctx512');
    // Just below what f32 needs: f16 with flash attention (no KQ score buffer), the smallest it can
    // be at this context. f16 without it is skipped: it would need more than f32 here, its KQ
    // probabilities converted to f16 for the V product outweighing the KV it saves.
    const f16NoFlash = JSON.parse(ok(['profiles', '--model', file, '--json', '--ctx-size', '512', '--parallel', '1',
      '--kv-type', 'f16', '--memory-budget', String(latency.memory.total - 1)])).profiles.find((x) => x.name === 'custom');
    assert.equal(f16NoFlash.flash_attn, true, 'f16 without flash attention does not fit where f32 does not');
    const withFlash = at(latency.memory.total - 1);
    assert.equal(withFlash.status, 'runnable');
    assert.equal(withFlash.kv_cache_type, 'f16');
    assert.equal(withFlash.flash_attn, true);
    assert.ok(withFlash.memory.total < latency.memory.total);
    // Just below that: low_memory, and the change that fits.
    const budget = withFlash.memory.total - 1;
    const out = JSON.parse(ok(['profiles', '--model', file, '--json', '--memory-budget', String(budget)]));
    assert.equal(out.budget.bytes, budget);
    const p = out.profiles.find((x) => x.name === 'cpu-latency-ctx512');
    assert.equal(p.status, 'low_memory');
    assert.equal(p.detail, '--ctx-size 256');
    assert.equal(p.fit.ctx_size, 256);
    assert.ok(p.fit.memory.total <= budget);
    assert.equal(out.pick.adjusted, true);
    assert.equal(out.pick.settings.ctx_size, 256);
    assert.match(out.pick.reason, /--ctx-size 256/);

    const none = JSON.parse(ok(['profiles', '--model', file, '--json', '--memory-budget', '1M']));
    assert.equal(none.pick, null);
    assert.match(none.pick_error, /^no profile fits in memory: even --parallel 1 --ctx-size 256 needs .* but the budget is 1\.0 MiB$/);
    for (const x of none.profiles) {
      assert.equal(x.status, 'incompatible', x.name);
    }
    assert.match(none.profiles[0].detail, /weights alone/);

    const line = fails(['profiles', '--model', file, '--memory-budget', 'lots']);
    assert.match(line, /--memory-budget 'lots' is not a size/);
  });

  test('a cached model is resolved by name', () => {
    ok(['import', modelPath(MODELS.plain), '--name', 'tiny']);
    const out = JSON.parse(ok(['profiles', '--model', 'tiny', '--json']));
    assert.equal(out.file, path.join(cache, 'models', 'tiny', 'model.gguf'));
    assert.equal(out.model.architecture, 'llama');
    const line = fails(['profiles', '--model', 'not-cached']);
    assert.match(line, /^inferbox profiles: .*not-cached/);
  });

  test('a truncated model: exit 1, one line naming the file', () => {
    const bytes = fs.readFileSync(modelPath(MODELS.plain));
    const file = path.join(work, 'truncated.gguf');
    fs.writeFileSync(file, bytes.subarray(0, Math.floor(bytes.length / 2)));
    const line = fails(['profiles', '--model', file]);
    assert.ok(line.startsWith(`inferbox profiles: ${file}: truncated`), line);
    const again = fails(['profiles', '--model', file, '--json']);
    assert.ok(again.includes(`${file}: truncated`), again);
  });

  test('a remote reference that was never pulled is refused without the network, naming the pull', () => {
    const line = fails(['profiles', '--model', 'hf://org/repo/model.gguf']);
    assert.match(line, /'hf:\/\/org\/repo\/model\.gguf' is not in the cache at .*; run inferbox pull hf:\/\/org\/repo\/model\.gguf first/);
  });
});

describe('serve --profile, /v1/metadata and /v1/manifest', () => {
  const ctx = useServer({ model: MODELS.plain, args: ['--profile', 'auto', '--log-level', 'debug'] });

  test('--profile auto applies the picked profile and reports it in /v1/metadata', ctx.wrap(async () => {
    const meta = await getJson(`${ctx.server.url}/v1/metadata`);
    assert.equal(meta.status, 200, meta.text);
    assert.equal(meta.body.object, 'metadata');
    assert.match(meta.body.profile.name, /^cpu-latency-ctx\d+/);
    assert.equal(meta.body.profile.status, 'runnable');
    assert.match(meta.body.llama_cpp, /^commit [0-9a-f]+/);
    assert.equal(meta.body.models[0].id, 'stories260K');
    const models = await getJson(`${ctx.server.url}/v1/models`);
    assert.equal(models.body.data[0].max_model_len, meta.body.profile.ctx_size, 'the profile context is in force');
    assert.match(ctx.server.log(), /profile cpu-latency-ctx\d+: /);
    const manifest = await getJson(`${ctx.server.url}/v1/manifest`);
    assert.equal(manifest.status, 200, manifest.text);
    assert.ok(manifest.body.profiles.length >= 2);
    assert.ok(manifest.body.profiles.some((p) => p.name === meta.body.profile.name));
    for (const p of manifest.body.profiles) {
      assert.ok(['runnable', 'low_memory', 'incompatible'].includes(p.status), p.status);
    }
  }));

  test('the engine runs with the profile KV type, flash attention and mmap (llama.cpp says so at debug level)',
    ctx.wrap(async () => {
      const meta = await getJson(`${ctx.server.url}/v1/metadata`);
      assert.deepEqual(meta.body.applied_settings,
        ['threads', 'parallel', 'ctx_size', 'batch_size', 'kv_cache_type', 'flash_attn', 'mmap', 'mlock', 'gpu_layers']);
      const p = meta.body.profile;
      const log = ctx.server.log();
      assert.match(log, new RegExp(`K \\(${p.kv_cache_type}\\)`), `KV cache type ${p.kv_cache_type} not in the log`);
      const mode = p.mmap ? (p.mlock ? 'mmap\\+mlock' : 'mmap') : (p.mlock ? 'mlock' : 'none');
      assert.match(log, new RegExp(`load_mode = ${mode}\\)`));
      // A CPU profile's attention settled as auto settles it there, as the listing
      // (/v1/manifest) already says, and as llama.cpp runs it.
      const manifest = await getJson(`${ctx.server.url}/v1/manifest`);
      assert.equal(manifest.body.profiles.find((x) => x.name === p.name).flash_attn, p.flash_attn);
      if (p.flash_attn) {
        assert.match(log, /Flash Attention enabled/); // "auto" resolved by llama.cpp
      } else {
        assert.match(log, /flash_attn\s+=\s+disabled/);
      }
    }));
});

// What auto settles with no attention flags, and that the engine runs it: the output must be the
// same greedy text whichever attention runs.
describe('serve without attention flags on the CPU, heads of 8: f32 KV without flash attention', () => {
  const ctx = useServer({ model: MODELS.plain, args: ['--log-level', 'debug'] });

  test('the engine runs what auto settled, /v1/metadata reports it, and greedy output is the reference',
    ctx.wrap(async () => {
      const log = ctx.server.log();
      assert.match(log, /attention: f32 KV, flash attention off \(auto: the fastest option that fits/);
      assert.match(log, /K \(f32\)/);
      assert.match(log, /V \(f32\)/);
      assert.match(log, /flash_attn\s+=\s+disabled/);
      const meta = await getJson(`${ctx.server.url}/v1/metadata`);
      assert.equal(meta.status, 200, meta.text);
      assert.equal(meta.body.profile.name, 'custom');
      assert.equal(meta.body.profile.kv_cache_type, 'f32');
      assert.equal(meta.body.profile.flash_attn, false);
      const res = await fetch(`${ctx.server.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: ONCE, max_tokens: 64, temperature: 0 }),
      });
      assert.equal(res.status, 200);
      const body = await res.json();
      assert.equal(body.choices[0].text, GREEDY_64);
    }));
});

describe('serve without attention flags on the CPU, heads of 32: f16 KV with flash attention', () => {
  before(() => synthModel()); // before the server's own hook, which useServer adds next
  const ctx = useServer({ model: SYNTH, args: ['--log-level', 'debug'] });

  test('the engine runs what auto settled and /v1/metadata reports it', ctx.wrap(async () => {
    const log = ctx.server.log();
    assert.match(log, /attention: f16 KV, flash attention on \(auto: the fastest option that fits/);
    assert.match(log, /K \(f16\)/);
    assert.match(log, /Flash Attention enabled/); // "auto" resolved by llama.cpp
    const meta = await getJson(`${ctx.server.url}/v1/metadata`);
    assert.equal(meta.body.profile.kv_cache_type, 'f16');
    assert.equal(meta.body.profile.flash_attn, true);
  }));
});

describe('engine options on the command line: --kv-type, --flash-attn, --no-mmap', () => {
  // A q8_0 KV cache needs head sizes divisible by 32 and the test model's are 8: the synthetic
  // model stands in for it.
  before(() => synthModel()); // before the server's own hook, which useServer adds next
  const ctx = useServer({
    model: SYNTH,
    args: ['--kv-type', 'q8_0', '--flash-attn', 'on', '--no-mmap', '--log-level', 'debug'],
  });

  test('a q8_0 KV cache with flash attention, weights read without mmap, and completions still work',
    ctx.wrap(async () => {
      const log = ctx.server.log();
      assert.match(log, /K \(q8_0\)/);
      assert.match(log, /V \(q8_0\)/);
      assert.match(log, /flash_attn\s+=\s+enabled/);
      assert.match(log, /load_mode = none\)/);
      const res = await fetch(`${ctx.server.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 16, temperature: 0 }),
      });
      assert.equal(res.status, 200);
      const body = await res.json();
      assert.equal(body.usage.completion_tokens, 16);
      assert.ok(body.choices[0].text.length > 0);
    }));
});

test('--gpu-layers on a build or machine without a GPU is refused before loading, saying why', (t) => {
  const hw = JSON.parse(spawnSync(serverBinary(), ['hardware', '--json'], { encoding: 'utf8' }).stdout);
  if (hw.gpus.length > 0) {
    t.skip(`this machine has a GPU (${hw.gpus[0].name}): the refusal cannot be shown here`);
    return;
  }
  const r = spawnSync(serverBinary(), ['serve', '--model', modelPath(MODELS.plain), '--port', '0', '--gpu-layers', '99'],
    { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /cannot run here: no GPU device/);
});

test('--kv-type q8_0 with --flash-attn off is refused before loading, naming both', () => {
  const r = spawnSync(serverBinary(), ['serve', '--model', modelPath(MODELS.plain), '--port', '0', '--kv-type', 'q8_0',
    '--flash-attn', 'off'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /--kv-type q8_0 needs flash attention/);
});

test('serve --profile with an unknown name exits 1 listing the profiles', () => {
  const r = spawnSync(serverBinary(), ['serve', '--model', modelPath(MODELS.plain), '--port', '0', '--profile',
    'no-such-profile'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /no profile 'no-such-profile' for this model; profiles: cpu-latency-/);
});

// The latency targets serve runs with: the profile's defaults without --slo-* flags (here from
// the fallback bandwidth: the server's cache has no measurement), an explicit value or `off`
// otherwise, each target on its own; the log and /v1/metadata say which and from where.
describe('serve: latency targets from the profile, or from the flags', () => {
  const noCache = path.join(os.tmpdir(), `inferbox-slo-cache-${process.pid}`); // never created: no roofline.json
  const byProfile = useServer({ model: MODELS.plain, env: { INFERBOX_CACHE: noCache } });
  const byFlags = useServer({
    model: MODELS.plain,
    args: ['--slo-itl-ms', '120', '--slo-ttft-ms', 'off'],
    env: { INFERBOX_CACHE: noCache },
  });

  test("without flags: the profile's defaults, by the documented formulas, in the log and /v1/metadata",
    byProfile.wrap(async () => {
      const meta = await getJson(`${byProfile.server.url}/v1/metadata`);
      assert.equal(meta.status, 200, meta.text);
      const t = meta.body.profile.latency_targets;
      assert.ok(t, `no latency_targets in ${JSON.stringify(meta.body.profile)}`);
      assert.equal(t.ttft_source, 'profile');
      assert.equal(t.itl_source, 'profile');
      const d = t.profile_defaults;
      assert.equal(d.basis, 'fallback');
      assert.equal(d.note, null);
      // docs/profiles.md: ITL = max(50, 2 × step), TTFT = max(250, 2 × (prompt + step)), whole ms up;
      // the typical prompt is min(512, ctx / 2) tokens (the model's trained context is 512).
      assert.equal(d.prompt_tokens, 256);
      assert.ok(d.decode_tokens_per_s > 0 && d.step_ms > 0 && d.prefill_ms > 0, JSON.stringify(d));
      assert.equal(t.itl_ms, Math.ceil(Math.max(50, 2 * d.step_ms)));
      assert.equal(t.ttft_ms, Math.ceil(Math.max(250, 2 * (d.prefill_ms + d.step_ms))));
      assert.equal(d.itl_ms, t.itl_ms);
      assert.equal(d.ttft_ms, t.ttft_ms);
      assert.deepEqual(meta.body.models[0].profile.latency_targets, t);
      assert.match(byProfile.server.log(),
        new RegExp(`latency targets: TTFT ${t.ttft_ms} ms \\(profile\\), ITL ${t.itl_ms} ms \\(profile\\); the profile's from an assumed memory bandwidth`));
      // Every candidate on /v1/manifest carries its own defaults.
      const manifest = await getJson(`${byProfile.server.url}/v1/manifest`);
      for (const p of manifest.body.profiles) {
        assert.ok('latency_targets' in p, p.name);
        if (p.name.startsWith('gpu-')) {
          assert.equal(p.latency_targets.itl_ms, null); // the prediction describes the CPU
          assert.match(p.latency_targets.note, /GPU/);
        } else {
          assert.equal(p.latency_targets.basis, 'fallback', p.name);
          assert.ok(p.latency_targets.itl_ms >= 50, p.name);
        }
      }
    }));

  test('--slo-itl-ms 120 --slo-ttft-ms off: the flags win, each on its own', byFlags.wrap(async () => {
    const meta = await getJson(`${byFlags.server.url}/v1/metadata`);
    assert.equal(meta.status, 200, meta.text);
    const t = meta.body.profile.latency_targets;
    assert.equal(t.itl_ms, 120);
    assert.equal(t.itl_source, 'flag');
    assert.equal(t.ttft_ms, null);
    assert.equal(t.ttft_source, 'flag');
    assert.ok(t.profile_defaults.ttft_ms >= 250, "the profile's default is still reported");
    assert.match(byFlags.server.log(), /latency targets: TTFT off \(flag\), ITL 120 ms \(flag\)$/m);
  }));
});

test('serve --slo-itl-ms with a value that is not auto, off or milliseconds is refused naming the flag', () => {
  const r = spawnSync(serverBinary(), ['serve', '--model', modelPath(MODELS.plain), '--port', '0', '--slo-itl-ms',
    'soon'], { encoding: 'utf8', timeout: 60_000 });
  assert.notEqual(r.status, 0, r.stderr);
  assert.match(r.stderr, /--slo-itl-ms: 'soon' is not auto, off or whole milliseconds from 0 to 3600000/);
});
