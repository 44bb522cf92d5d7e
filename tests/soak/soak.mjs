// A bounded soak of an inferbox server: a fixed number of mixed requests (plain and streaming
// completions and chats, streams and requests cancelled at random points, invalid requests,
// bursts beyond the queue limit) at a fixed concurrency from a fixed seed, then a report of the
// server's RSS (start, after the warm-up, end), leaked slots, the reconciliation of the /metrics
// counters and the status codes. Exits 1 when a slot leaked, the counters do not reconcile, a 5xx
// or any unexpected answer appeared, RSS grew beyond --max-rss-growth-mb after the warm-up, or the
// server died.
//
//   node tests/soak/soak.mjs [--requests 2000] [--concurrency 8] [--seed 1] [--warmup 200]
//                            [--url http://HOST:PORT [--pid PID]] [--parallel 4] [--max-queue 8]
//                            [--model stories260K-chatml.gguf] [--json FILE] [--max-rss-growth-mb 64]
//
// Without --url it starts `inferbox serve` itself (INFERBOX_BIN, INFERBOX_TEST_MODELS as for the
// integration tests). With --url it uses a running server; RSS is then read only with --pid (the
// server must run on this machine), and the counters must not be moved by other clients.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';

import { MODELS, startServer } from '../integration/js/harness.mjs';

const USAGE = `usage: node tests/soak/soak.mjs [options]
  --requests N           requests in all, warm-up included (default 2000)
  --concurrency C        clients sending at once (default 8)
  --seed S               seed of the request mix (default 1)
  --warmup N             requests before the "after warm-up" RSS sample (default 10% of --requests)
  --url URL              use a running server instead of starting one
  --pid PID              that server's process id, to read its RSS (with --url)
  --model FILE           model to serve when starting one (default ${MODELS.chatml})
  --parallel N           --parallel of the started server (default 4)
  --max-queue N          --max-queue of the started server (default 8)
  --burst N              requests per burst beyond the queue (default parallel + max-queue + 8)
  --max-rss-growth-mb M  fail when RSS grows more than M MiB after the warm-up (default 64)
  --json FILE            also write the report as JSON
  --quiet                no progress lines`;

const { values: opt } = parseArgs({
  options: {
    requests: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '8' },
    seed: { type: 'string', default: '1' },
    warmup: { type: 'string' },
    url: { type: 'string' },
    pid: { type: 'string' },
    model: { type: 'string', default: MODELS.chatml },
    parallel: { type: 'string', default: '4' },
    'max-queue': { type: 'string', default: '8' },
    burst: { type: 'string' },
    'max-rss-growth-mb': { type: 'string', default: '64' },
    json: { type: 'string' },
    quiet: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opt.help) {
  console.log(USAGE);
  process.exit(0);
}
const int = (name) => {
  const v = Number(opt[name]);
  if (!Number.isInteger(v) || v < 0) {
    console.error(`--${name} must be a non-negative integer, got ${opt[name]}\n${USAGE}`);
    process.exit(2);
  }
  return v;
};
const REQUESTS = int('requests');
const CONCURRENCY = Math.max(1, int('concurrency'));
const SEED = int('seed');
const WARMUP = opt.warmup !== undefined ? int('warmup') : Math.floor(REQUESTS / 10);
const PARALLEL = int('parallel');
const MAX_QUEUE = int('max-queue');
const BURST = opt.burst !== undefined ? int('burst') : PARALLEL + MAX_QUEUE + 8;
const MAX_RSS_GROWTH_KIB = Number(opt['max-rss-growth-mb']) * 1024;
const TIMEOUT_MS = 60_000;

const log = (...args) => {
  if (!opt.quiet) {
    console.error(...args);
  }
};

// --- the request mix ----------------------------------------------------------------------------

// mulberry32: a small, seedable PRNG, so that one seed always gives the same request list.
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PROMPTS = [
  'Once upon a time',
  'The little dog',
  'Lily and Tom went to the park. They',
  'One day, a big bird',
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.',
];
const INVALID = [
  ['completions', '{"prompt": "Once", "max_tokens": '],
  ['completions', '[1, 2, 3]'],
  ['completions', ''],
  ['completions', { prompt: 'Once', max_tokens: 'four' }],
  ['completions', { prompt: 'Once', max_tokens: 0 }],
  ['completions', { prompt: 'Once', temperature: -1 }],
  ['completions', { prompt: [1, 512] }],
  ['completions', { prompt: 'Once', n: 1e9 }],
  ['completions', { prompt: 'Once', stop: Array.from({ length: 100 }, (_, i) => `s${i}`) }],
  ['completions', { prompt: 'Once', model: '../../etc/passwd' }],
  ['chat', { messages: [] }],
  ['chat', { messages: [{ role: 'wizard', content: 'Hi' }] }],
  ['chat', { messages: 'Hi' }],
  ['chat', `{"messages": ${'['.repeat(5000)}`],
];
// Expected statuses per invalid body (404 for the unknown model, 400 for the rest).
const invalidStatus = (body) => (typeof body === 'object' && body.model ? 404 : 400);

function makeOps(n, seed) {
  const rand = prng(seed);
  const pick = (arr) => arr[Math.floor(rand() * arr.length)];
  const between = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
  const ops = [];
  // Weights of the operation kinds (sum 100). A burst is `--burst` requests at once, so at 0.5 %
  // of the operations bursts make about 10 % of the requests.
  const kinds = [
    ['completion', 22], ['completion-stream', 16], ['chat', 16], ['chat-stream', 16],
    ['cancel-stream', 12.5], ['cancel-plain', 5], ['invalid', 12], ['burst', 0.5],
  ];
  while (ops.length < n) {
    let r = rand() * 100;
    let kind = kinds[0][0];
    for (const [k, w] of kinds) {
      if (r < w) {
        kind = k;
        break;
      }
      r -= w;
    }
    const chat = kind.startsWith('chat') || (kind.startsWith('cancel') && rand() < 0.5);
    const sampling = rand() < 0.5
      ? { temperature: 0 }
      : { temperature: Number((rand() * 1.5).toFixed(2)), seed: between(0, 1e6) };
    const body = chat
      ? { messages: [{ role: 'user', content: pick(PROMPTS) }], ...sampling }
      : { prompt: pick(PROMPTS), ...sampling };
    if (kind === 'invalid') {
      const [endpoint, b] = pick(INVALID);
      ops.push({ kind, endpoint, body: b });
    } else if (kind === 'burst') {
      const size = Math.min(BURST, n - ops.length);
      const burst = { prompt: pick(PROMPTS), max_tokens: 32, temperature: 0, ignore_eos: true };
      ops.push({ kind, endpoint: 'completions', body: burst, size });
      for (let i = 1; i < size; i++) {
        ops.push(null); // a burst counts as `size` requests
      }
    } else if (kind.startsWith('cancel')) {
      ops.push({
        kind,
        endpoint: chat ? 'chat' : 'completions',
        body: { ...body, max_tokens: between(64, 400), ignore_eos: true },
        // cancel-stream: events to read before aborting (0 = right after the headers);
        // cancel-plain: milliseconds before aborting.
        after: kind === 'cancel-stream' ? between(0, 30) : between(0, 60),
      });
    } else {
      const extra = {};
      if (rand() < 0.2) {
        extra.stop = [pick(['.', ' the', '\n', 'Lily', 'park'])];
      }
      if (!chat && rand() < 0.15) {
        extra.n = between(2, 3);
      }
      if (rand() < 0.15) {
        Object.assign(extra, chat ? { logprobs: true, top_logprobs: between(0, 5) } : { logprobs: between(0, 5) });
      }
      if (kind.endsWith('stream') && rand() < 0.5) {
        extra.stream_options = { include_usage: true };
      }
      ops.push({
        kind,
        endpoint: chat ? 'chat' : 'completions',
        body: { ...body, max_tokens: between(1, 96), ...extra, stream: kind.endsWith('stream') },
      });
    }
  }
  return ops;
}

// --- clients ------------------------------------------------------------------------------------

const statusCounts = {};
const problems = [];
const kindCounts = {};
let sent = 0;

function count(status) {
  statusCounts[status] = (statusCounts[status] ?? 0) + 1;
  sent += 1;
}

function problem(op, what) {
  if (problems.length < 1000) {
    problems.push(`${op.kind} ${op.endpoint} ${JSON.stringify(op.body).slice(0, 160)}: ${what}`);
  }
}

function endpointUrl(base, endpoint) {
  return `${base}/v1/${endpoint === 'chat' ? 'chat/completions' : 'completions'}`;
}

async function send(base, op, signal) {
  return fetch(endpointUrl(base, op.endpoint), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof op.body === 'string' ? op.body : JSON.stringify(op.body),
    signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(TIMEOUT_MS)]) : AbortSignal.timeout(TIMEOUT_MS),
  });
}

function checkCompletion(op, text) {
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    problem(op, `200 with a body that is not JSON: ${text.slice(0, 200)}`);
    return;
  }
  const n = op.body.n ?? 1;
  if (!Array.isArray(body.choices) || body.choices.length !== n || !body.usage) {
    problem(op, `200 with ${body.choices?.length} choices (expected ${n}) or no usage: ${text.slice(0, 200)}`);
    return;
  }
  if (body.usage.completion_tokens > op.body.max_tokens * n) {
    problem(op, `${body.usage.completion_tokens} completion tokens > max_tokens ${op.body.max_tokens} × ${n}`);
  }
}

function checkStream(op, text) {
  const events = text.split(/\r?\n\r?\n/).map((b) => b.replace(/^data: ?/, '')).filter((e) => e.length);
  if (events.at(-1) !== '[DONE]') {
    problem(op, `stream did not end with [DONE]: ...${text.slice(-200)}`);
    return;
  }
  for (const e of events.slice(0, -1)) {
    let chunk;
    try {
      chunk = JSON.parse(e);
    } catch {
      problem(op, `stream event is not JSON: ${e.slice(0, 200)}`);
      return;
    }
    if (chunk.error) {
      problem(op, `stream error event: ${e.slice(0, 300)}`);
      return;
    }
  }
}

async function runOp(base, op) {
  kindCounts[op.kind] = (kindCounts[op.kind] ?? 0) + (op.size ?? 1);
  if (op.kind === 'burst') {
    const results = await Promise.all(Array.from({ length: op.size }, async () => {
      try {
        const res = await send(base, op);
        const text = await res.text();
        return { status: res.status, text, retryAfter: res.headers.get('retry-after') };
      } catch (err) {
        return { status: 0, text: String(err.cause?.code ?? err.message) };
      }
    }));
    for (const r of results) {
      count(r.status);
      if (r.status === 200) {
        checkCompletion(op, r.text);
      } else if (r.status === 429) {
        if (!/^\d+$/.test(r.retryAfter ?? '')) {
          problem(op, '429 without Retry-After');
        }
      } else {
        problem(op, `burst answered ${r.status}: ${r.text.slice(0, 200)}`);
      }
    }
    return;
  }
  if (op.kind === 'cancel-stream' || op.kind === 'cancel-plain') {
    const controller = new AbortController();
    const stream = op.kind === 'cancel-stream';
    let res;
    try {
      const pending = send(base, { ...op, body: { ...op.body, stream } }, controller.signal);
      if (!stream) {
        setTimeout(() => controller.abort(), op.after);
      }
      res = await pending;
    } catch (err) {
      if (controller.signal.aborted) {
        count('cancelled');
        return;
      }
      count(0);
      problem(op, `no answer: ${err.cause?.code ?? err.message}`);
      return;
    }
    if (res.status !== 200) {
      count(res.status);
      const text = await res.text().catch(() => '');
      if (res.status !== 429) {
        problem(op, `answered ${res.status}: ${text.slice(0, 200)}`);
      }
      controller.abort();
      return;
    }
    if (!stream) {
      // The answer came before the abort: it must be complete.
      try {
        const text = await res.text();
        count(200);
        checkCompletion(op, text);
      } catch {
        count('cancelled');
      }
      return;
    }
    // Read `after` events, then leave.
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let events = 0;
    try {
      while (events < op.after) {
        const { value, done } = await reader.read();
        if (done) {
          break;
        }
        buf += decoder.decode(value, { stream: true });
        events = (buf.match(/\r?\n\r?\n/g) ?? []).length;
      }
    } catch {
      // aborted
    }
    controller.abort();
    count(buf.includes('data: [DONE]') ? 200 : 'cancelled');
    return;
  }
  let res;
  let text;
  try {
    res = await send(base, op);
    text = await res.text();
  } catch (err) {
    count(0);
    problem(op, `no answer: ${err.cause?.code ?? err.message}`);
    return;
  }
  count(res.status);
  if (op.kind === 'invalid') {
    const want = invalidStatus(op.body);
    if (res.status !== want) {
      problem(op, `expected ${want}, got ${res.status}: ${text.slice(0, 200)}`);
      return;
    }
    try {
      const err = JSON.parse(text).error;
      if (typeof err?.message !== 'string' || typeof err?.type !== 'string') {
        throw new Error('shape');
      }
    } catch {
      problem(op, `error body without the OpenAI error shape: ${text.slice(0, 200)}`);
    }
    return;
  }
  if (res.status === 429) {
    return; // the queue was full (a burst ran beside it): expected, and counted
  }
  if (res.status !== 200) {
    problem(op, `answered ${res.status}: ${text.slice(0, 300)}`);
    return;
  }
  if (op.body.stream) {
    checkStream(op, text);
  } else {
    checkCompletion(op, text);
  }
}

// --- server state -------------------------------------------------------------------------------

async function metrics(base) {
  const res = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  if (res.status !== 200) {
    throw new Error(`GET /metrics answered ${res.status}: ${text.slice(0, 200)}`);
  }
  const values = {};
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})? (\S+)$/.exec(line);
    if (m) {
      values[m[1]] = (values[m[1]] ?? 0) + Number(m[2]);
    }
  }
  return values;
}

function rssKiB(pid) {
  if (!pid) {
    return null;
  }
  try {
    return Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
  } catch {
    return null;
  }
}

const mib = (kib) => (kib === null ? 'n/a' : `${(kib / 1024).toFixed(1)} MiB`);

// --- main ---------------------------------------------------------------------------------------

async function main() {
  let server = null;
  let base = opt.url?.replace(/\/+$/, '');
  let pid = opt.pid ? Number(opt.pid) : null;
  if (!base) {
    server = await startServer({
      model: opt.model,
      parallel: PARALLEL,
      args: ['--max-queue', MAX_QUEUE, '--ctx-size', 512],
    });
    base = server.url;
    pid = server.pid;
    log(`started inferbox (pid ${pid}) on ${base}: --parallel ${PARALLEL} --max-queue ${MAX_QUEUE}, model ${opt.model}`);
  }
  const startedAt = new Date();
  const m0 = await metrics(base);
  const rssStart = rssKiB(pid);
  const ops = makeOps(REQUESTS, SEED);
  let rssWarm = null;
  let next = 0;
  let done = 0;
  const t0 = Date.now();
  let lastLog = t0;

  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= ops.length) {
        return;
      }
      const op = ops[i];
      if (op === null) {
        continue;
      }
      await runOp(base, op);
      done += op.size ?? 1;
      if (rssWarm === null && done >= WARMUP) {
        rssWarm = rssKiB(pid) ?? 'n/a';
      }
      if (Date.now() - lastLog > 5000) {
        lastLog = Date.now();
        const s = ((Date.now() - t0) / 1000).toFixed(0);
        log(`  ${done}/${ops.length} requests, ${s} s, statuses ${JSON.stringify(statusCounts)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (Date.now() - t0) / 1000;
  if (rssWarm === 'n/a') {
    rssWarm = null;
  }

  // Idle: every slot and queue place must come back, and the KV cache must be empty.
  let m1;
  const idleDeadline = Date.now() + 10_000;
  for (;;) {
    m1 = await metrics(base);
    const idle = m1.num_requests_running === 0 && m1.num_requests_waiting === 0 && m1.kv_cache_usage_perc === 0;
    if (idle || Date.now() > idleDeadline) {
      break;
    }
    await sleep(100);
  }
  const rssEnd = rssKiB(pid);
  const ready = await fetch(`${base}/v1/health/ready`, { signal: AbortSignal.timeout(10_000) })
    .then((r) => r.status).catch((e) => String(e.cause?.code ?? e.message));

  const delta = (name) => (m1[name] ?? 0) - (m0[name] ?? 0);
  const started = delta('inferbox_request_started_total');
  const success = delta('request_success_total');
  const failure = delta('inferbox_request_failure_total');
  const cancelled = delta('inferbox_request_cancelled_total');
  const failures = [];
  const leaked = m1.num_requests_running !== 0 || m1.num_requests_waiting !== 0 || m1.kv_cache_usage_perc !== 0;
  if (leaked) {
    failures.push(`leaked slots: num_requests_running ${m1.num_requests_running}, num_requests_waiting ` +
      `${m1.num_requests_waiting}, kv_cache_usage_perc ${m1.kv_cache_usage_perc} 10 s after the last request`);
  }
  const totals = {
    started: m1.inferbox_request_started_total,
    success: m1.request_success_total,
    failure: m1.inferbox_request_failure_total,
    cancelled: m1.inferbox_request_cancelled_total,
  };
  const reconciled = totals.started === totals.success + totals.failure + totals.cancelled;
  if (!reconciled) {
    failures.push(`counters do not reconcile: started ${totals.started} != success ${totals.success} + failure ` +
      `${totals.failure} + cancelled ${totals.cancelled}`);
  }
  const bad = Object.keys(statusCounts).filter((s) => !['200', '400', '404', '429', 'cancelled'].includes(s));
  if (bad.length) {
    failures.push(`unexpected statuses: ${bad.map((s) => `${s} ×${statusCounts[s]}`).join(', ')}`);
  }
  if (problems.length) {
    failures.push(`${problems.length} unexpected answers`);
  }
  if (ready !== 200) {
    failures.push(`GET /v1/health/ready answered ${ready} after the soak`);
  }
  if (server?.exitInfo) {
    failures.push(`the server exited: ${JSON.stringify(server.exitInfo)}`);
  }
  const growth = rssEnd !== null && rssWarm !== null ? rssEnd - rssWarm : null;
  if (growth !== null && growth > MAX_RSS_GROWTH_KIB) {
    failures.push(`RSS grew by ${mib(growth)} after the warm-up (limit ${opt['max-rss-growth-mb']} MiB)`);
  }

  const report = {
    date: startedAt.toISOString(),
    machine: `${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.type()} ${os.release()}`,
    server: server ? { pid, parallel: PARALLEL, max_queue: MAX_QUEUE, model: opt.model } : { url: base, pid },
    requests: sent,
    concurrency: CONCURRENCY,
    seed: SEED,
    warmup: WARMUP,
    seconds: Number(seconds.toFixed(1)),
    mix: kindCounts,
    statuses: statusCounts,
    rss_kib: { start: rssStart, after_warmup: rssWarm, end: rssEnd, growth_after_warmup: growth },
    idle: {
      num_requests_running: m1.num_requests_running,
      num_requests_waiting: m1.num_requests_waiting,
      kv_cache_usage_perc: m1.kv_cache_usage_perc,
    },
    counters: { ...totals, during_soak: { started, success, failure, cancelled } },
    problems: problems.slice(0, 50),
    failures,
  };

  const lines = [
    `soak: ${sent} requests (seed ${SEED}, concurrency ${CONCURRENCY}) in ${seconds.toFixed(1)} s on ${report.machine}`,
    `  mix:       ${Object.entries(kindCounts).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `  statuses:  ${Object.entries(statusCounts).map(([k, v]) => `${k} ×${v}`).join(', ')}`,
    `  RSS:       start ${mib(rssStart)}, after ${WARMUP} warm-up requests ${mib(rssWarm)}, end ${mib(rssEnd)}` +
      ` (growth after warm-up ${growth === null ? 'n/a' : mib(growth)})`,
    `  idle:      num_requests_running ${m1.num_requests_running}, num_requests_waiting ${m1.num_requests_waiting},` +
      ` kv_cache_usage_perc ${m1.kv_cache_usage_perc}${leaked ? '  LEAKED' : ''}`,
    `  counters:  started ${totals.started} = success ${totals.success} + failure ${totals.failure} + cancelled ` +
      `${totals.cancelled}: ${reconciled ? 'reconciled' : 'NOT RECONCILED'}` +
      ` (during the soak: started ${started}, success ${success}, failure ${failure}, cancelled ${cancelled})`,
    `  ready:     ${ready}`,
  ];
  for (const p of problems.slice(0, 20)) {
    lines.push(`  problem:   ${p}`);
  }
  lines.push(failures.length ? `FAILED: ${failures.join('; ')}` : 'OK');
  console.log(lines.join('\n'));
  if (opt.json) {
    fs.writeFileSync(opt.json, `${JSON.stringify(report, null, 2)}\n`);
  }
  if (server) {
    const logFile = path.join(os.tmpdir(), `inferbox-soak-${process.pid}.log`);
    fs.writeFileSync(logFile, server.log());
    log(`server log: ${logFile}`);
    const info = await server.stop();
    if (info.code !== 0 || info.signal !== null) {
      console.log(`FAILED: the server exited with ${JSON.stringify(info)} on SIGTERM`);
      return 1;
    }
  }
  return failures.length ? 1 : 0;
}

main().then((code) => process.exit(code), (err) => {
  console.error(`soak: ${err.stack ?? err}`);
  process.exit(1);
});
