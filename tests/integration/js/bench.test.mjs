// `inferbox bench`, the load generator behind scripts/bench.sh: run against the real server, its
// counts must add up (every request ok, every token counted, one latency sample per request), its
// JSON must agree with its own text report, and bad arguments or an unreachable server must fail
// with a message. Nothing here asserts a timing: the tool reports performance, the tests check
// that what it reports is consistent.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import { MODELS, serverBinary, useServer } from './harness.mjs';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-bench-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function bench(args) {
  const r = spawnSync(serverBinary(), ['bench', ...args], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.error, undefined, String(r.error));
  return r;
}

// Runs bench with --json-out and returns { r, out } after checking what every run must satisfy.
function benchJson(url, args, { requests, maxTokens }) {
  const file = path.join(tmp, `run-${Math.random().toString(36).slice(2)}.json`);
  const r = bench(['--url', url, '--requests', String(requests), '--max-tokens', String(maxTokens), '--json-out', file,
    ...args]);
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  const out = JSON.parse(fs.readFileSync(file, 'utf8'));
  assert.equal(out.requests, requests);
  assert.equal(out.completed, requests, JSON.stringify(out));
  assert.equal(out.failed, 0);
  assert.equal(out.per_request.length, requests);
  // ignore_eos: every request generates exactly max_tokens, as the server's usage says.
  assert.equal(out.output_tokens_total, requests * maxTokens);
  for (const [i, q] of out.per_request.entries()) {
    assert.equal(q.ok, true, `request ${i}: ${q.error}`);
    assert.equal(q.output_tokens, maxTokens, `request ${i}`);
    assert.ok(q.prompt_tokens > 0, `request ${i}: prompt_tokens ${q.prompt_tokens}`);
    assert.ok(q.ttft_ms > 0 && q.ttft_ms <= q.e2e_ms, `request ${i}: ttft ${q.ttft_ms} e2e ${q.e2e_ms}`);
    // The longest stall sits between two content chunks of that request.
    assert.ok(Number.isInteger(q.max_gap_at) && q.max_gap_at >= 0 && q.max_gap_at < maxTokens - 1,
      `request ${i}: max_gap_at ${q.max_gap_at}`);
    assert.ok(q.max_gap_ms >= 0 && q.max_gap_ms <= q.e2e_ms, `request ${i}: max_gap_ms ${q.max_gap_ms}`);
  }
  // One TTFT, ITL and E2E sample per request; gaps between the chunks of every stream.
  assert.equal(out.ttft_ms.n, requests);
  assert.equal(out.itl_ms.n, requests);
  assert.equal(out.e2e_ms.n, requests);
  assert.ok(out.chunk_gap_ms.n >= requests && out.chunk_gap_ms.n <= requests * (maxTokens - 1), out.chunk_gap_ms.n);
  assert.equal(Math.max(...out.per_request.map((q) => q.max_gap_ms)).toFixed(3), out.chunk_gap_ms.max.toFixed(3));
  for (const s of [out.ttft_ms, out.itl_ms, out.e2e_ms, out.chunk_gap_ms]) {
    assert.ok(s.min <= s.p50 && s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.max, JSON.stringify(s));
  }
  assert.ok(out.output_throughput_tok_s > 0);
  assert.ok(Math.abs(out.output_throughput_tok_s * out.duration_s - out.output_tokens_total) < 1e-6 *
    out.output_tokens_total + 1e-3, 'throughput = tokens / duration');
  assert.ok(out.client_cpu_s >= 0);
  // The text report says the same.
  assert.match(r.stdout, new RegExp(`completed\\s+${requests} ok, 0 failed`));
  assert.match(r.stdout, new RegExp(`tokens\\s+${requests * maxTokens} output`));
  return { r, out };
}

describe('inferbox bench against the real server', () => {
  const completions = useServer({ model: MODELS.plain, parallel: 2 });

  test('closed loop on /v1/completions: every request and token accounted for, JSON and text agree',
    completions.wrap(async () => {
      const { out } = benchJson(completions.server.url,
        ['--endpoint', 'completions', '--concurrency', '2', '--prompt-tokens', '16', '--seed', '3'],
        { requests: 6, maxTokens: 8 });
      assert.equal(out.endpoint, 'completions');
      assert.equal(out.concurrency, 2);
      assert.equal(out.request_rate, 0);
      assert.equal(out.model, 'stories260K', 'the first model of /v1/models');
    }));

  test('open loop (--request-rate) and a shared prefix: all requests complete, the prefix is counted in the prompt',
    completions.wrap(async () => {
      const { out } = benchJson(completions.server.url,
        ['--concurrency', '2', '--prompt-tokens', '24', '--shared-prefix-tokens', '16', '--request-rate', '40'],
        { requests: 4, maxTokens: 4 });
      assert.equal(out.request_rate, 40);
      assert.equal(out.shared_prefix_tokens, 16);
      for (const q of out.per_request) {
        assert.ok(q.prompt_tokens >= 16, `prompt_tokens ${q.prompt_tokens} below the shared prefix`);
      }
    }));

  test('a goodput sweep (--rates, --slo-*): one run per rate, shares in [0, 1], goodput = achieved rate x share',
    completions.wrap(async () => {
      const file = path.join(tmp, 'sweep.json');
      const requests = 4;
      const maxTokens = 6;
      const r = bench(['--url', completions.server.url, '--requests', String(requests), '--max-tokens',
        String(maxTokens), '--prompt-tokens', '16', '--concurrency', '4', '--rates', '20,5', '--slo-ttft-ms', '5000',
        '--slo-itl-ms', '0.001', '--slo-attainment', '0.75', '--json-out', file]);
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
      const out = JSON.parse(fs.readFileSync(file, 'utf8'));
      assert.equal(out.slo_ttft_ms, 5000);
      assert.equal(out.slo_itl_ms, 0.001);
      assert.equal(out.slo_attainment, 0.75);
      // Ascending, one run and one table row per rate.
      assert.deepEqual(out.sweep.map((row) => row.rate_req_s), [5, 20]);
      assert.equal(out.runs.length, 2);
      for (const [k, run] of out.runs.entries()) {
        const row = out.sweep[k];
        assert.equal(run.request_rate, row.rate_req_s);
        assert.equal(run.completed, requests, JSON.stringify(run.errors));
        assert.equal(run.output_tokens_total, requests * maxTokens);
        const slo = run.slo;
        assert.equal(slo.offered_rate_req_s, row.rate_req_s);
        assert.equal(slo.requests, requests);
        for (const key of ['share_ttft', 'share_itl', 'share_both']) {
          assert.ok(slo[key] >= 0 && slo[key] <= 1, `${key} ${slo[key]}`);
          assert.equal(slo[key], row[key]);
        }
        assert.ok(slo.share_both <= Math.min(slo.share_ttft, slo.share_itl));
        assert.equal(slo.met_both, Math.round(slo.share_both * requests));
        // Requests answered per second of the run, and goodput its share meeting both targets.
        assert.ok(Math.abs(slo.achieved_rate_req_s - requests / run.duration_s) < 1e-9 * requests);
        assert.ok(Math.abs(slo.goodput_req_s - slo.achieved_rate_req_s * slo.share_both) < 1e-9,
          `goodput ${slo.goodput_req_s} vs ${slo.achieved_rate_req_s} x ${slo.share_both}`);
        assert.equal(row.goodput_req_s, slo.goodput_req_s);
        // The per-request verdicts add up to the counts. 6 tokens, 5 gaps: no stream's p99 gap is
        // under a microsecond, so nothing meets the ITL target, and both shares are 0.
        assert.equal(run.per_request.filter((q) => q.slo_ttft_met).length, slo.met_ttft);
        assert.equal(run.per_request.filter((q) => q.slo_itl_met).length, slo.met_itl);
        assert.equal(slo.met_itl, 0);
        assert.equal(slo.share_both, 0);
        for (const q of run.per_request) {
          assert.ok(q.itl_p99_ms > 0 && q.itl_p99_ms <= q.max_gap_ms + 1e-9, `itl p99 ${q.itl_p99_ms}`);
          assert.ok(q.due_wait_ms >= 0);
        }
      }
      // No rate met both targets for 75 % of its requests.
      assert.equal(out.highest_rate_meeting_slo, null);
      assert.match(r.stdout, /goodput sweep: TTFT <= 5000 ms, per-request ITL p99 <= 0\.001 ms/);
      assert.match(r.stdout, /highest rate with >= 75\.0% meeting both: none/);
    }));

  test('a generous ITL target: the sweep finds the highest rate, shares of 1, goodput = achieved rate',
    completions.wrap(async () => {
      const file = path.join(tmp, 'sweep-met.json');
      const r = bench(['--url', completions.server.url, '--requests', '3', '--max-tokens', '4', '--prompt-tokens',
        '16', '--concurrency', '3', '--rates', '10,30', '--slo-ttft-ms', '60000', '--slo-itl-ms', '60000',
        '--json-out', file]);
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
      const out = JSON.parse(fs.readFileSync(file, 'utf8'));
      assert.equal(out.highest_rate_meeting_slo, 30);
      for (const row of out.sweep) {
        assert.equal(row.share_both, 1);
        assert.ok(Math.abs(row.goodput_req_s - row.achieved_rate_req_s) < 1e-9);
      }
      assert.match(r.stdout, /highest rate with >= 90\.0% meeting both: 30 req\/s/);
    }));

  test('a model id the server does not serve: every request fails, named in the report, exit 1',
    completions.wrap(async () => {
      const file = path.join(tmp, 'unknown-model.json');
      const r = bench(['--url', completions.server.url, '--model', 'no-such-model', '--requests', '2',
        '--max-tokens', '4', '--json-out', file]);
      assert.notEqual(r.status, 0, r.stdout);
      const out = JSON.parse(fs.readFileSync(file, 'utf8'));
      assert.equal(out.completed, 0);
      assert.equal(out.failed, 2);
      for (const q of out.per_request) {
        assert.equal(q.ok, false);
        assert.match(q.error, /404|no-such-model/, q.error);
      }
    }));
});

describe('inferbox bench on the chat endpoint', () => {
  const chat = useServer({ model: MODELS.chatml, parallel: 2 });

  test('/v1/chat/completions: the same accounting through the chat template', chat.wrap(async () => {
    const { out } = benchJson(chat.server.url, ['--endpoint', 'chat', '--concurrency', '2', '--prompt-tokens', '16'],
      { requests: 4, maxTokens: 6 });
    assert.equal(out.endpoint, 'chat');
  }));
});

describe('inferbox bench refuses what it cannot run', () => {
  test('out-of-range arguments name the flag and its range', () => {
    for (const [flag, value, re] of [
      ['--concurrency', '0', /--concurrency: Value 0 not in range 1 to 4096/],
      ['--requests', '0', /--requests: Value 0 not in range 1 to 1000000/],
      ['--endpoint', 'embeddings', /--endpoint: embeddings not in \{completions,chat\}/],
      ['--request-rate', '-1', /--request-rate: Value -1 not in range/],
      ['--slo-itl-ms', '-5', /--slo-itl-ms: Value -5 not in range 0(\.0+)? to 3600000(\.0+)?$/m],
      ['--slo-attainment', '1.5', /--slo-attainment: Value 1\.5 not in range 0(\.0+)? to 1(\.0+)?$/m],
      ['--rates', '0.5,0', /--rates: every rate must be > 0 and <= 1e\+06 requests per second, got 0/],
    ]) {
      const r = bench(['--url', 'http://127.0.0.1:1', flag, value]);
      assert.notEqual(r.status, 0, `${flag} ${value} accepted`);
      assert.match(r.stderr, re);
    }
  });

  test('--rates with --request-rate, and an attainment of 0: refused before any request', () => {
    let r = bench(['--url', 'http://127.0.0.1:1', '--rates', '0.5', '--request-rate', '1']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--rates and --request-rate exclude each other/);
    r = bench(['--url', 'http://127.0.0.1:1', '--slo-attainment', '0']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--slo-attainment must be in \(0, 1\], got 0/);
  });

  test('a server that is not there: one line naming the URL and the reason, exit 1', () => {
    const r = bench(['--url', 'http://127.0.0.1:1', '--requests', '2', '--max-tokens', '4']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /server not reachable at http:\/\/127\.0\.0\.1:1: .*refused/i);
  });
});
