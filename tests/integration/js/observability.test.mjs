// Observability: the Prometheus exposition (checked by promtool, scraped by a real Prometheus
// server on loopback), counters that reconcile, request ids, trace context and access logs in
// text and JSON form.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  MODELS, ONCE, freePort, getJson, modelId, postJson, postStream, streamThenDisconnect, useServer,
} from './harness.mjs';

// Every sample of the exposition as { name, labels, value }.
function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) {
      continue;
    }
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/);
    assert.ok(m, `unparsable exposition line: ${line}`);
    const labels = {};
    if (m[3]) {
      for (const part of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
        labels[part[1]] = part[2];
      }
    }
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

function sample(samples, name, labels = {}) {
  const hits = samples.filter((s) => s.name === name
    && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.equal(hits.length, 1, `expected one sample ${name} ${JSON.stringify(labels)}, found ${hits.length}`);
  return hits[0].value;
}

async function scrape(server, pathName = '/metrics') {
  const res = await fetch(`${server.url}${pathName}`);
  const text = await res.text();
  assert.equal(res.status, 200, text);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return { text, samples: parseMetrics(text) };
}

function promtool(args, input) {
  try {
    return execFileSync('promtool', args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (err) {
    if (err.code === 'ENOENT') {
      throw new Error('promtool is missing: scripts/setup.sh installs the Debian package "prometheus"');
    }
    throw new Error(`promtool ${args.join(' ')} failed:\n${err.stdout}\n${err.stderr}`);
  }
}

describe('metrics (stories260K.gguf)', () => {
  const ctx = useServer({ model: MODELS.plain, parallel: 2, args: ['--ctx-size', 256] });

  test('the exposition passes promtool check metrics and has every promised family', ctx.wrap(async () => {
    const model = await modelId(ctx.server);
    const ok = await postJson(`${ctx.server.url}/v1/completions`, { model, prompt: ONCE, max_tokens: 8, temperature: 0 });
    assert.equal(ok.status, 200, ok.text);
    const { text } = await scrape(ctx.server);
    promtool(['check', 'metrics'], text);
    for (const name of ['num_requests_running', 'num_requests_waiting', 'kv_cache_usage_perc', 'gpu_cache_usage_perc',
      'prompt_tokens_total', 'generation_tokens_total', 'prefix_cache_queries_total', 'prefix_cache_hits_total',
      'request_success_total', 'time_to_first_token_seconds', 'time_per_output_token_seconds',
      'e2e_request_latency_seconds', 'request_queue_time_seconds', 'request_prompt_tokens',
      'request_generation_tokens']) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), `family ${name} missing`);
    }
    assert.doesNotMatch(text, /vllm:/, 'vLLM names only with --metrics-vllm-names');
    assert.match(text, new RegExp(`^num_requests_running\\{model_name="${model}"\\} 0$`, 'm'));
    const v1 = await fetch(`${ctx.server.url}/v1/metrics`);
    assert.equal(v1.status, 200);
    assert.match(await v1.text(), /^# TYPE num_requests_running gauge$/m);
  }));

  test('counters move with traffic and reconcile: started = success + failure + cancelled', ctx.wrap(async () => {
    const model = await modelId(ctx.server);
    const before = (await scrape(ctx.server)).samples;
    const get = (s, name, labels) => sample(s, name, { model_name: model, ...labels });

    // Two plain requests (one stops on length, one on a stop string), one stream, one cancelled
    // stream, and one refused by the engine is not possible here, so a 400 (not started) too.
    const a = await postJson(`${ctx.server.url}/v1/completions`, { model, prompt: ONCE, max_tokens: 10, temperature: 0 });
    assert.equal(a.status, 200, a.text);
    const b = await postJson(`${ctx.server.url}/v1/completions`,
      { model, prompt: ONCE, max_tokens: 40, temperature: 0, stop: ['Lily'] });
    assert.equal(b.status, 200, b.text);
    assert.equal(b.body.choices[0].finish_reason, 'stop');
    const s = await postStream(`${ctx.server.url}/v1/completions`,
      { model, prompt: ONCE, max_tokens: 6, temperature: 0, stream: true });
    assert.equal(s.status, 200);
    const bad = await postJson(`${ctx.server.url}/v1/completions`, { model, prompt: ONCE, max_tokens: -1 });
    assert.equal(bad.status, 400);

    const head = await streamThenDisconnect(`${ctx.server.url}/v1/completions`,
      { model, prompt: ONCE, max_tokens: 200, temperature: 0, stream: true, ignore_eos: true });
    assert.match(head, /^HTTP\/1\.1 200/);

    // The cancellation is noticed asynchronously; wait until nothing runs.
    let after;
    for (let i = 0; i < 100; i++) {
      after = (await scrape(ctx.server)).samples;
      if (get(after, 'num_requests_running') === 0 && get(after, 'inferbox_request_cancelled_total')
        > get(before, 'inferbox_request_cancelled_total')) {
        break;
      }
      await sleep(50);
    }
    const d = (name, labels) => get(after, name, labels) - get(before, name, labels);
    assert.equal(d('inferbox_request_started_total'), 4, 'started: 3 finished + 1 cancelled (the 400 never starts)');
    assert.equal(d('request_success_total', { finished_reason: 'length' }), 2);
    assert.equal(d('request_success_total', { finished_reason: 'stop' }), 1);
    assert.equal(d('inferbox_request_cancelled_total'), 1);
    const failures = after.filter((x) => x.name === 'inferbox_request_failure_total')
      .reduce((acc, x) => acc + x.value, 0)
      - before.filter((x) => x.name === 'inferbox_request_failure_total').reduce((acc, x) => acc + x.value, 0);
    assert.equal(failures, 0);
    assert.equal(get(after, 'inferbox_request_started_total'),
      get(after, 'request_success_total', { finished_reason: 'stop' })
        + get(after, 'request_success_total', { finished_reason: 'length' })
        + after.filter((x) => x.name === 'inferbox_request_failure_total').reduce((acc, x) => acc + x.value, 0)
        + get(after, 'inferbox_request_cancelled_total'),
      'started = success + failure + cancelled once idle');

    // Tokens: the three finished requests' usage, plus what the cancelled one generated.
    const usageGen = a.body.usage.completion_tokens + b.body.usage.completion_tokens + 6;
    assert.ok(d('generation_tokens_total') >= usageGen, `generation_tokens_total grew by ${d('generation_tokens_total')}`);
    assert.equal(d('prompt_tokens_total'), 4 * a.body.usage.prompt_tokens);
    assert.equal(d('request_prompt_tokens_count'), 3);
    assert.equal(d('request_prompt_tokens_sum'), 3 * a.body.usage.prompt_tokens);
    assert.equal(d('request_generation_tokens_sum'), usageGen);
    assert.equal(d('e2e_request_latency_seconds_count'), 3);
    assert.equal(d('time_to_first_token_seconds_count'), 4, 'every started request got a first token');
    assert.ok(d('time_per_output_token_seconds_count') >= usageGen - 4);
    assert.equal(d('request_queue_time_seconds_count'), 4);
    // The same prompt again: the prefix cache answers most of it.
    assert.ok(d('prefix_cache_hits_total') > 0, 'repeated prompts hit the prefix cache');
    assert.ok(d('prefix_cache_queries_total') >= d('prefix_cache_hits_total'));
    assert.equal(get(after, 'kv_cache_usage_perc'), 0, 'no running sequence holds KV');
  }));

  test('a real Prometheus server scrapes /metrics', ctx.wrap(async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-prom-'));
    const port = await freePort();
    const target = new URL(ctx.server.url).host;
    fs.writeFileSync(path.join(dir, 'prometheus.yml'),
      `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: inferbox\n    static_configs:\n`
      + `      - targets: ['${target}']\n`);
    promtool(['check', 'config', path.join(dir, 'prometheus.yml')]);
    const prom = spawn('prometheus', [`--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`],
    { stdio: ['ignore', 'ignore', 'pipe'] });
    let promLog = '';
    prom.stderr.on('data', (d) => { promLog += d; });
    t.after(() => {
      prom.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const model = await modelId(ctx.server);
    let found = null;
    for (let i = 0; i < 60 && !found; i++) {
      await sleep(500);
      try {
        const up = await getJson(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent('up{job="inferbox"}')}`);
        const q = await getJson(`http://127.0.0.1:${port}/api/v1/query?query=`
          + encodeURIComponent(`num_requests_waiting{model_name="${model}"}`));
        if (up.body?.data?.result?.[0]?.value?.[1] === '1' && q.body?.data?.result?.length === 1) {
          found = q.body.data.result[0];
        }
      } catch {
        // Prometheus still starting
      }
    }
    assert.ok(found, `Prometheus never stored a sample of inferbox's metrics\n${promLog.slice(-4000)}`);
    assert.equal(found.metric.model_name, model);
  }));
});

describe('request ids, trace context and access logs (text)', () => {
  const ctx = useServer({ model: MODELS.plain, args: ['--ctx-size', 256] });

  test('X-Request-Id is echoed, or generated, on every answer', ctx.wrap(async () => {
    const model = await modelId(ctx.server);
    const mine = await postJson(`${ctx.server.url}/v1/completions`, { model, prompt: ONCE, max_tokens: 2 },
      { headers: { 'x-request-id': 'client-id-42' } });
    assert.equal(mine.headers.get('x-request-id'), 'client-id-42');
    const gen = await postJson(`${ctx.server.url}/v1/completions`, { model, prompt: ONCE, max_tokens: 2 });
    assert.match(gen.headers.get('x-request-id') ?? '', /^[0-9a-f]{32}$/);
    const err = await postJson(`${ctx.server.url}/v1/completions`, { model, prompt: ONCE, max_tokens: 'x' },
      { headers: { 'x-request-id': 'bad id with spaces' } });
    assert.equal(err.status, 400);
    assert.match(err.headers.get('x-request-id') ?? '', /^[0-9a-f]{32}$/, 'an unsafe id is replaced');
    const stream = await fetch(`${ctx.server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'stream-7' },
      body: JSON.stringify({ model, prompt: ONCE, max_tokens: 2, stream: true }),
    });
    await stream.text();
    assert.equal(stream.headers.get('x-request-id'), 'stream-7');
    const notFound = await getJson(`${ctx.server.url}/nope`);
    assert.equal(notFound.status, 404);
    assert.match(notFound.headers.get('x-request-id') ?? '', /^[0-9a-f]{32}$/);
  }));

  test('traceparent keeps the trace id and names the server span; the access log has both', ctx.wrap(async () => {
    const model = await modelId(ctx.server);
    const mark = ctx.server.mark();
    const trace = '4bf92f3577b34da6a3ce929d0e0e4736';
    const res = await postJson(`${ctx.server.url}/v1/completions`, { model, prompt: ONCE, max_tokens: 3 },
      { headers: { traceparent: `00-${trace}-00f067aa0ba902b7-01`, 'x-request-id': 'traced-1' } });
    assert.equal(res.status, 200);
    const tp = res.headers.get('traceparent') ?? '';
    assert.match(tp, new RegExp(`^00-${trace}-[0-9a-f]{16}-01$`));
    assert.notEqual(tp.split('-')[2], '00f067aa0ba902b7', 'the server answers with its own span id');
    let line;
    for (let i = 0; i < 40 && !line; i++) {
      line = ctx.server.logSince(mark).split('\n').find((l) => l.includes('request_id=traced-1'));
      if (!line) {
        await sleep(25);
      }
    }
    assert.ok(line, `no access line for traced-1 in:\n${ctx.server.logSince(mark)}`);
    for (const field of ['method=POST', 'path=/v1/completions', 'status=200', `trace_id=${trace}`,
      'parent_span_id=00f067aa0ba902b7', 'prompt_tokens=5', 'completion_tokens=3', `model=${model}`]) {
      assert.ok(line.includes(field), `access line lacks ${field}: ${line}`);
    }
    assert.match(line, /duration_ms=\d+\.\d{3}/);
  }));
});

describe('JSON logs (INFERBOX_LOG_FORMAT=json), vLLM metric names', () => {
  const ctx = useServer({
    model: MODELS.plain,
    args: ['--ctx-size', 256, '--metrics-vllm-names'],
    env: { INFERBOX_LOG_FORMAT: 'json' },
  });

  test('--metrics-vllm-names exposes each family under vllm: too, with the same samples', ctx.wrap(async () => {
    const model = await modelId(ctx.server);
    const ok = await postJson(`${ctx.server.url}/v1/completions`, { model, prompt: ONCE, max_tokens: 3 });
    assert.equal(ok.status, 200);
    const { samples } = await scrape(ctx.server);
    for (const name of ['num_requests_running', 'kv_cache_usage_perc', 'gpu_cache_usage_perc', 'prompt_tokens_total',
      'generation_tokens_total', 'time_to_first_token_seconds_count', 'e2e_request_latency_seconds_sum']) {
      assert.equal(sample(samples, `vllm:${name}`, { model_name: model }), sample(samples, name, { model_name: model }),
        name);
    }
    assert.equal(sample(samples, 'vllm:request_success_total', { model_name: model, finished_reason: 'length' }),
      sample(samples, 'request_success_total', { model_name: model, finished_reason: 'length' }));
  }));

  test('every log line is one JSON object; the access line carries typed fields', ctx.wrap(async () => {
    const model = await modelId(ctx.server);
    const res = await postJson(`${ctx.server.url}/v1/completions`,
      { model, prompt: ONCE, max_tokens: 4, temperature: 0 }, { headers: { 'x-request-id': 'json-1' } });
    assert.equal(res.status, 200);
    // Also a request whose target has quotes and control-like bytes.
    await getJson(`${ctx.server.url}/v1/%22quoted%22%0Aline`);
    let access;
    for (let i = 0; i < 40 && !access; i++) {
      await sleep(25);
      const lines = ctx.server.log().split('\n').slice(1).filter((l) => l.trim() !== '');
      const parsed = lines.map((l) => {
        try {
          return JSON.parse(l);
        } catch {
          assert.fail(`not a JSON line: ${l}`);
        }
        return null;
      });
      for (const p of parsed) {
        assert.equal(typeof p.time, 'string');
        assert.match(p.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
        assert.equal(typeof p.level, 'string');
        assert.equal(typeof p.msg, 'string');
      }
      access = parsed.find((p) => p.request_id === 'json-1');
    }
    assert.ok(access, 'no access line for json-1');
    assert.equal(access.msg, 'request');
    assert.equal(access.status, 200);
    assert.equal(access.prompt_tokens, 5);
    assert.equal(access.completion_tokens, 4);
    assert.equal(access.path, '/v1/completions');
    assert.equal(typeof access.duration_ms, 'number');
  }));
});
