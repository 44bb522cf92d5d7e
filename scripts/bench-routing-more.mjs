#!/usr/bin/env node
// The two routing benchmarks bench-routing.sh does not run (docs/routing.md, docs/benchmarks.md),
// every server an inferbox on a loopback port of this machine, driven through the official
// OpenAI SDK:
//
//   1. Prefix affinity. C multi-turn conversations at once (closed loop: each sends its next turn
//      when the previous answer is in), each turn carrying the whole history, over two backends:
//      placed at random by the client (no router, as an L4 balancer would), through a router
//      with `--route MODEL=balanced` without prefix affinity (--route-affinity-bytes 0: fewest
//      requests in flight only), and with it (512, the default), each on freshly started
//      servers. Reported: the client's time to the first token (TTFT) over every request and over
//      the follow-up turns, the share of follow-up turns that stayed on their conversation's
//      previous backend, and the prompt tokens the backends found cached
//      (usage.prompt_tokens_details.cached_tokens).
//   2. Failover gap. Two backends serving the same model behind a `balanced` router; per trial one
//      greedy stream, the backend serving it (X-Inferbox-Backend) SIGKILLed after K chunks, the
//      longest gap between two chunks the client sees from the kill on, then the killed backend
//      restarted on its port. Every stream must finish with the text of an unbroken run.
//
//   node scripts/bench-routing-more.mjs [RESULTS.md]    default build/bench/routing-more.md; also printed
//
// Environment (all optional):
//   INFERBOX_BIN           the inferbox binary (default build/inferbox; needs --route-affinity-bytes)
//   INFERBOX_TEST_MODELS   the test models folder (default ../shared/models)
//   AFFINITY_MODEL         model of the affinity run (default build/bench/models/synthetic-0.5b-q4_k_m.gguf,
//                          the 24x896 random-weight model of scripts/bench-lib.sh, served with a
//                          ChatML template: a 0.5B model's prefill cost per token, where
//                          stories260K reads ~500 tokens in 0.1-0.2 s)
//   AFFINITY_CONVERSATIONS conversations at once (default 4), AFFINITY_TURNS turns each (default 3),
//   AFFINITY_ROUNDS        rounds of the three placements, rotating their order (default 2)
//   AFFINITY_STAGGER_MS    the conversations start this far apart (default 250)
//   FAILOVER_TRIALS        kills (default 20); FAILOVER_KILL_AFTER chunks before the kill (default 24);
//   FAILOVER_STEP_DELAY_MS each backend engine step waits this long first (default 20, a test-build
//                          failpoint), so that a stream of stories260K-chatml lasts long enough
//                          to be killed mid-way and its pace is a real model's
//   BENCH_THREADS          compute threads per backend (default 1: every server shares the machine)
//   BENCH_PARTS            which benchmarks run (default affinity,failover)

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

import { freePort, modelPath, openaiClient, repoRoot, serverBinary, startServer } from '../tests/integration/js/harness.mjs';

process.env.INFERBOX_TEST_MODELS ??= path.resolve(repoRoot, '..', 'shared', 'models');
const env = (name, def) => process.env[name] ?? def;
const outMd = process.argv[2] ?? path.join(repoRoot, 'build', 'bench', 'routing-more.md');
const threads = String(env('BENCH_THREADS', '1'));
const parts = env('BENCH_PARTS', 'affinity,failover').split(',');
const CHATML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + " +
  "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const log = (msg) => process.stderr.write(`[bench-routing-more] ${msg}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// nearest-rank percentile
function pct(values, p) {
  const v = [...values].sort((a, b) => a - b);
  return v.length ? v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))] : NaN;
}
const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '-');

// `inferbox serve` on a given port (the failover run restarts a backend where the router expects
// it; harness.startServer picks a new port each time), ready once /v1/health/ready answers 200.
async function serveOn(port, args, extraEnv = {}) {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-bench-'));
  const child = spawn(serverBinary(), ['serve', '--host', '127.0.0.1', '--port', String(port), ...args], {
    env: { ...process.env, ...extraEnv, INFERBOX_DATA: data },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let errText = '';
  const keep = (d) => { errText = (errText + d).slice(-4000); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((r) => child.on('exit', r)).then(() => fs.rmSync(data, { recursive: true, force: true }));
  const url = `http://127.0.0.1:${port}`;
  for (const deadline = Date.now() + 60_000; Date.now() < deadline;) {
    if (child.exitCode !== null) {
      break;
    }
    try {
      const res = await fetch(`${url}/v1/health/ready`);
      await res.arrayBuffer();
      if (res.status === 200) {
        return { url, port, pid: child.pid, kill: (sig = 'SIGTERM') => { child.kill(sig); return exited; } };
      }
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  child.kill('SIGKILL');
  throw new Error(`inferbox on port ${port} did not become ready:\n${errText}`);
}

// A router (its own stub model; `serve` needs one) with MODEL routed `balanced` over `backends`.
function routerArgs(model, backends, { extra = [], probeMs = 0, spec = '' } = {}) {
  return ['--model', `stub=${modelPath('stories260K.gguf')}`, '--threads', '1', '--parallel', '1',
    '--route', `${model}=balanced`,
    ...backends.flatMap((b) => ['--backend',
      `${b.name}=${b.url}/v1;models=${model}=${b.remoteId};probe-interval-ms=${probeMs}${spec}`]),
    ...extra];
}

// --- 1. prefix affinity -----------------------------------------------------------------------

const WORDS = ('Lily Tom Max Sue Ben the a little big red blue green happy sad dog cat ball tree park ' +
  'house garden river boat sun moon star cake toy bird fish flower jumped ran played found saw ' +
  'wanted said looked smiled laughed cried went came gave took made and but so then one day').split(' ');
// Deterministic text of about `chars` characters (seeded), so every run sends the same prompts.
function story(seed, chars) {
  let x = (Math.imul(seed, 2654435761) >>> 0) || 1;
  const out = [];
  let n = 0;
  while (n < chars) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; // xorshift32
    const w = WORDS[x % WORDS.length];
    out.push(w);
    n += w.length + 1;
  }
  return `${out.join(' ')}.`;
}

// One conversation, turn after turn; returns a record per turn. `pick()` says where each request
// goes: { client, model, name } (name: the backend, when the client chose it itself).
async function converse(pick, id, turns, salt) {
  // The opening differs from the first character on (affinity hashes the prompt's head) and is
  // long: the shared history a follow-up turn can find cached.
  const messages = [{ role: 'user', content: `Conversation ${salt}-${id}. ${story(salt * 1000 + id, 560)}` }];
  const records = [];
  let previous = null;
  for (let turn = 1; turn <= turns; turn++) {
    const { client, model, name } = pick();
    const t0 = performance.now();
    const { data, response } = await client.chat.completions
      .create({ model, messages, max_tokens: 8, temperature: 0, stream: true, stream_options: { include_usage: true } })
      .withResponse();
    let ttft = null;
    let reply = '';
    let usage = null;
    for await (const chunk of data) {
      const piece = chunk.choices[0]?.delta?.content;
      if (ttft === null && typeof piece === 'string' && piece.length > 0) {
        ttft = performance.now() - t0;
      }
      reply += piece ?? '';
      usage = chunk.usage ?? usage;
    }
    const backend = name ?? response.headers.get('x-inferbox-backend');
    records.push({
      turn, ttft: ttft ?? performance.now() - t0, backend, route: response.headers.get('x-inferbox-route'),
      stayed: previous === null ? null : backend === previous,
      prompt: usage?.prompt_tokens ?? 0, cached: usage?.prompt_tokens_details?.cached_tokens ?? 0,
    });
    previous = backend;
    messages.push({ role: 'assistant', content: reply },
      { role: 'user', content: story(salt * 1000 + id * 10 + turn, 120) });
  }
  return records;
}

// The same conversations against two fresh backends, placed by `mode`:
//   random            no router: the client sends each request to a backend drawn at random
//                     (seeded), as an L4 balancer does (kube-proxy picks an endpoint at random).
//                     This is round robin as a conversation sees it among many clients: its next
//                     turn lands on its previous backend with probability 1/2. (A strict round
//                     robin over 4 conversations that take turns in step is no baseline: each
//                     conversation meets the same backend every time.)
//   fewest in flight  a `balanced` router with --route-affinity-bytes 0
//   affinity          a `balanced` router with prefix affinity (--route-affinity-bytes 512)
async function affinityArm(mode, salt) {
  const model = env('AFFINITY_MODEL', path.join(repoRoot, 'build', 'bench', 'models', 'synthetic-0.5b-q4_k_m.gguf'));
  const conversations = Number(env('AFFINITY_CONVERSATIONS', 4));
  const turns = Number(env('AFFINITY_TURNS', 3));
  const backendArgs = ['--model', `m=${model}`, '--threads', threads, '--parallel', String(conversations),
    '--ctx-size', '2048', '--chat-template', CHATML];
  const backends = [];
  let router = null;
  try {
    for (const name of ['b1', 'b2']) {
      backends.push({ name, remoteId: 'm', ...(await serveOn(await freePort(), backendArgs)) });
    }
    let pick;
    if (mode === 'random') {
      const direct = backends.map((b) => ({ client: openaiClient(b, { timeout: 600_000 }), model: 'm', name: b.name }));
      let x = salt * 7919 + 1;
      pick = () => {
        x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; // xorshift32
        return direct[x % direct.length];
      };
    } else {
      router = await startServer({
        model: null,
        // A cold prefill of a long history on a busy 2-core machine can exceed the 30 s of
        // silence a streamed answer is allowed by default.
        args: routerArgs('chat', backends, {
          extra: ['--route-affinity-bytes', mode === 'affinity' ? '512' : '0'],
          spec: ';idle-timeout-ms=600000;first-byte-timeout-ms=600000',
        }),
      });
      const via = { client: openaiClient(router, { timeout: 600_000 }), model: 'chat' };
      pick = () => via;
    }
    // The conversations start a little apart: `balanced` counts a backend's requests from when
    // the backend takes them, so requests that arrive in the same instant all see the same loads
    // and go to the first backend (docs/benchmarks.md).
    const stagger = Number(env('AFFINITY_STAGGER_MS', 250));
    const t0 = performance.now();
    const all = (await Promise.all(Array.from({ length: conversations },
      (_, i) => sleep(i * stagger).then(() => converse(pick, i + 1, turns, salt))))).flat();
    log(`${mode}: ${all.length} requests in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return { label: mode, records: all };
  } finally {
    await router?.stop();
    await Promise.all(backends.map((b) => b.kill()));
  }
}

function affinityRow(label, records) {
  const follow = records.filter((r) => r.turn > 1);
  const sum = (rs, k) => rs.reduce((t, r) => t + r[k], 0);
  return {
    label,
    n: records.length,
    p50: pct(records.map((r) => r.ttft), 50),
    p90: pct(records.map((r) => r.ttft), 90),
    followP50: pct(follow.map((r) => r.ttft), 50),
    firstP50: pct(records.filter((r) => r.turn === 1).map((r) => r.ttft), 50),
    stayed: follow.filter((r) => r.stayed).length / follow.length,
    cached: sum(follow, 'cached') / sum(follow, 'prompt'),
    computed: (sum(follow, 'prompt') - sum(follow, 'cached')) / follow.length,
  };
}

// The affinity table (every round's requests pooled per placement) and the ratios, pooled and
// per round (the rounds show how much the machine's other load moves them).
function affinityReport(arms) {
  const modes = [...new Set(arms.map((a) => a.label))];
  const rows = modes.map((m) => affinityRow(m, arms.filter((a) => a.label === m).flatMap((a) => a.records)));
  const lines = [
    `Prefix affinity: ${env('AFFINITY_CONVERSATIONS', 4)} conversations at once, ${env('AFFINITY_TURNS', 3)} turns each, ` +
      `${arms.length / modes.length} round(s), 2 backends (${path.basename(env('AFFINITY_MODEL', 'synthetic-0.5b-q4_k_m.gguf'))}, ` +
      `--threads ${threads}):`,
    '',
    '| placement | requests | TTFT p50 ms | TTFT p90 ms | turn 1 TTFT p50 ms | follow-up TTFT p50 ms | ' +
      'follow-ups on the same backend | follow-up prompt tokens cached | prompt tokens computed per follow-up |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.label} | ${r.n} | ${fmt(r.p50)} | ${fmt(r.p90)} | ${fmt(r.firstP50)} | ` +
      `${fmt(r.followP50)} | ${fmt(100 * r.stayed)} % | ${fmt(100 * r.cached)} % | ${fmt(r.computed)} |`),
    '',
  ];
  const ratio = (rs, base, k) => {
    const of = (label) => rs.find((r) => r.label === label)?.[k];
    return `${fmt(of('affinity') / of(base), 2)}×`;
  };
  for (const base of modes.filter((m) => m !== 'affinity')) {
    lines.push(`- affinity / ${base}, TTFT p50: **${ratio(rows, base, 'p50')}** over every request, ` +
      `**${ratio(rows, base, 'followP50')}** over follow-up turns`);
  }
  const rounds = arms.length / modes.length;
  for (let round = 0; round < rounds && rounds > 1; round++) {
    const rs = arms.slice(round * modes.length, (round + 1) * modes.length).map((a) => affinityRow(a.label, a.records));
    lines.push(`- round ${round + 1} (${rs.map((r) => r.label).join(', ')}): affinity / ` +
      modes.filter((m) => m !== 'affinity').map((b) => `${b} ${ratio(rs, b, 'p50')} (follow-ups ${ratio(rs, b, 'followP50')})`)
        .join(', '));
  }
  lines.push('');
  return lines;
}

// --- 2. failover gap ----------------------------------------------------------------------------

// One trial: a greedy stream through the router, whose backend (X-Inferbox-Backend) is SIGKILLed
// once `killAfter` chunks with text have arrived. An error that ends the stream is recorded, not
// thrown: a stream that does not complete is a result too.
async function killTrial(client, body, backends, killAfter) {
  const times = [];
  let text = '';
  let killedAt = null;
  let last = null;
  let victim;
  let startRoute;
  let error = null;
  try {
    const { data, response } = await client.chat.completions.create({ ...body, stream: true }).withResponse();
    victim = backends.find((b) => b.name === response.headers.get('x-inferbox-backend'));
    startRoute = response.headers.get('x-inferbox-route');
    for await (const chunk of data) {
      const piece = chunk.choices[0]?.delta?.content;
      if (typeof piece === 'string' && piece.length > 0) {
        times.push(performance.now());
        text += piece;
        if (times.length === killAfter && victim) {
          process.kill(victim.pid, 'SIGKILL');
          killedAt = times.length - 1;
        }
      }
      last = chunk.nvext ?? last;
    }
  } catch (err) {
    error = err.message;
  }
  // The longest wait between two chunks from the last one before the kill on.
  let gap = 0;
  for (let i = killedAt === null ? times.length : killedAt + 1; i < times.length; i++) {
    gap = Math.max(gap, times[i] - times[i - 1]);
  }
  const before = times.slice(1, killAfter).map((t, i) => t - times[i]);
  return { victim, startRoute, killed: killedAt !== null, gap, itl: pct(before, 50), text, error,
    finishedOn: last?.backend, route: last?.route };
}

// Each trial kills a backend of a working pair: after the restart, wait until the router lists
// the restarted backend as available again (its probe reached it; a circuit that the kills opened
// is half-open, so the next request may be its trial).
async function rejoin(router, backend) {
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(50)) {
    const res = await fetch(`${router.url}/v1/models/story`);
    const placement = (await res.json()).placements?.find((p) => p.backend === backend.name);
    if (placement?.state === 'available') {
      return;
    }
  }
  throw new Error(`the router did not list the restarted ${backend.name} as available within 30 s`);
}

async function failover() {
  const trials = Number(env('FAILOVER_TRIALS', 20));
  const killAfter = Number(env('FAILOVER_KILL_AFTER', 24));
  const slow = { INFERBOX_FAILPOINT_STEP_DELAY_MS: String(env('FAILOVER_STEP_DELAY_MS', 20)) };
  const backendArgs = ['--model', modelPath('stories260K-chatml.gguf'), '--threads', threads, '--parallel', '2'];
  const backends = [];
  for (const name of ['b1', 'b2']) {
    backends.push({ name, remoteId: 'stories260K-chatml', ...(await serveOn(await freePort(), backendArgs, slow)) });
  }
  // Probes on, so that the router sees a restarted backend again without waiting out its circuit.
  const router = await startServer({ model: null, args: routerArgs('story', backends, { probeMs: 250 }) });
  const body = {
    model: 'story', messages: [{ role: 'user', content: 'Tell me a story about Lily and her red ball.' }],
    max_tokens: 96, temperature: 0,
  };
  const results = [];
  try {
    const client = openaiClient(router);
    const reference = (await client.chat.completions.create(body)).choices[0].message.content;
    for (let trial = 1; trial <= trials; trial++) {
      const mark = router.mark();
      const r = await killTrial(client, body, backends, killAfter);
      results.push({ trial, ...r, victim: r.victim?.name, same: r.text === reference, text: undefined });
      if (r.error || r.text !== reference) {
        log(`trial ${trial}: ${r.error ?? 'the text differs from the unbroken run'}; router log:\n` +
          router.logSince(mark).slice(-3000));
      }
      if (r.victim) {
        await r.victim.kill('SIGKILL');
        Object.assign(r.victim, await serveOn(r.victim.port, backendArgs, slow));
        await rejoin(router, r.victim);
      }
    }
  } finally {
    await router.stop();
    await Promise.all(backends.map((b) => b.kill()));
  }
  return results;
}

function failoverReport(fo) {
  const gaps = fo.map((r) => r.gap);
  const errors = fo.filter((r) => r.error);
  return [
    `Failover gap: ${fo.length} greedy chat streams of 96 tokens (stories260K-chatml, each backend step delayed ` +
      `${env('FAILOVER_STEP_DELAY_MS', 20)} ms), the serving backend SIGKILLed after chunk ${env('FAILOVER_KILL_AFTER', 24)}, ` +
      'then restarted:',
    '',
    '| trials | killed mid-stream | finished elsewhere (route failover) | text = unbroken run | ' +
      'ITL p50 ms before the kill | gap p50 ms | gap p99 ms | gap max ms |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|',
    `| ${fo.length} | ${fo.filter((r) => r.killed).length} | ${fo.filter((r) => r.killed && r.route === 'failover').length} | ` +
      `${fo.filter((r) => r.same).length} | ${fmt(pct(fo.map((r) => r.itl), 50), 1)} | ${fmt(pct(gaps, 50), 1)} | ` +
      `${fmt(pct(gaps, 99), 1)} | ${fmt(Math.max(...gaps), 1)} |`,
    '',
    `- per trial (gap ms): ${fo.map((r) => fmt(r.gap)).join(', ')}`,
    ...(errors.length ? [`- streams that ended with an error: ${errors.map((r) => `${r.trial} (${r.error})`).join('; ')}`] : []),
  ];
}

// --- main ---------------------------------------------------------------------------------------

async function main() {
  const rounds = Number(env('AFFINITY_ROUNDS', 2));
  const modes = ['random', 'fewest in flight', 'affinity'];
  const arms = [];
  for (let round = 1; round <= rounds && parts.includes('affinity'); round++) {
    // Rotate which arm runs first; fresh servers (empty caches) and new conversations each time.
    for (let k = 0; k < modes.length; k++) {
      const mode = modes[(k + round - 1) % modes.length];
      log(`prefix affinity, round ${round}: ${mode}`);
      arms.push(await affinityArm(mode, round * 10 + k));
    }
  }
  const fo = [];
  if (parts.includes('failover')) {
    log('failover gap');
    fo.push(...await failover());
  }

  const lines = [...(arms.length ? affinityReport(arms) : []), ...(fo.length ? failoverReport(fo) : [])];
  const text = `${lines.join('\n')}\n`;
  fs.mkdirSync(path.dirname(outMd), { recursive: true });
  fs.writeFileSync(outMd, text);
  fs.writeFileSync(outMd.replace(/\.md$/, '.json'), JSON.stringify({ arms, failover: fo }, null, 1));
  process.stdout.write(text);
}

main().then(() => process.exit(0), (err) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  process.exit(1);
});
