// A model split across machines: `inferbox rpc-worker` (ggml's RPC server, from the pinned
// llama.cpp) on two worker hosts and `inferbox serve --rpc` on a leader host, each host a network
// namespace of its own joined to the leader by a veth pair, and the test (in the root namespace)
// reaching the leader over a third pair:
//
//      root 10.213.0.1 ── 10.213.0.2 leader 10.213.1.2 ── 10.213.1.1 worker A
//                                           10.213.2.2 ── 10.213.2.1 worker B
//
// It checks that the greedy output is the single-host output, that the layers really went over
// the links (the workers' interfaces received the weights), that an unreachable or refusing
// worker stops start-up at once with a clear error, and that a worker that dies or goes silent
// mid-request fails the in-flight requests (503, an SSE error event) and makes the leader exit 2
// instead of hanging.
//
// Needs root and iproute2 (`ip netns`). Without them this file FAILS; INFERBOX_SKIP_NETNS=1 skips
// it instead. Every namespace it creates is deleted afterwards.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  GREEDY_64,
  MODELS,
  ONCE,
  modelPath,
  postJson,
  serverBinary,
  startServer,
  timeBound,
} from './harness.mjs';
import { SKIP_NETNS, addNamespaces, removeNamespaces, requireNetns, sh, vethLink } from './netns.mjs';

const tag = `ib${process.pid % 100000}`;
const NS = { leader: `${tag}-l`, a: `${tag}-a`, b: `${tag}-b` };
const WORKER_PORT = 50052;
const ADDR = { root: '10.213.0.1', leader: '10.213.0.2', a: '10.213.1.1', b: '10.213.2.1' };

function teardown() {
  removeNamespaces(Object.values(NS), [`${tag}r`]);
}

function rxBytes(ns, dev) {
  return Number(sh(`ip netns exec ${ns} cat /sys/class/net/${dev}/statistics/rx_bytes`).stdout.trim());
}

// Starts `inferbox rpc-worker` in a worker namespace; resolves once it listens.
async function startWorker(which) {
  const child = spawn(
    'ip',
    ['netns', 'exec', NS[which], serverBinary(), 'rpc-worker', '--host', ADDR[which], '--port', String(WORKER_PORT),
      '--threads', '1'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const deadline = Date.now() + 20_000;
  while (!/listening on/.test(log)) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`rpc-worker in ${NS[which]} did not start:\n${log}`);
    }
    await sleep(50);
  }
  return { child, exited, log: () => log, stop: () => { child.kill('SIGKILL'); return exited; } };
}

const leaderPrefix = () => ['ip', 'netns', 'exec', NS.leader];
const workers = (...which) => which.map((w) => `${ADDR[w]}:${WORKER_PORT}`).join(',');
const greedy = { prompt: ONCE, max_tokens: 64, temperature: 0 };

// Waits for the leader to exit; its exit code and how long it took.
async function exitOf(server, withinMs) {
  const started = Date.now();
  const info = await Promise.race([server.exited, sleep(withinMs).then(() => null)]);
  if (!info) {
    await server.stop();
    assert.fail(`the leader did not exit within ${withinMs} ms of losing its worker\n${server.log()}`);
  }
  return { ...info, ms: Date.now() - started };
}

// Starts a server that is expected to fail before it is ready; resolves with its exit and log.
async function failedStart(args) {
  try {
    const s = await startServer({ model: MODELS.plain, host: ADDR.leader, prefix: leaderPrefix(), args });
    await s.stop();
    assert.fail(`the server started although it should not have:\n${s.log()}`);
  } catch (err) {
    return String(err.message);
  }
}

describe('ggml RPC across network namespaces', { skip: SKIP_NETNS && 'INFERBOX_SKIP_NETNS=1' }, () => {
  let reference;

  before(async () => {
    requireNetns('this test');
    modelPath(MODELS.plain);
    teardown();
    addNamespaces(Object.values(NS));
    vethLink(`${tag}r`, null, ADDR.root, NS.leader, ADDR.leader);
    vethLink(`${tag}a`, NS.leader, '10.213.1.2', NS.a, ADDR.a);
    vethLink(`${tag}b`, NS.leader, '10.213.2.2', NS.b, ADDR.b);

    // The single-host reference, from the same binary without workers.
    const single = await startServer({ model: MODELS.plain });
    try {
      const res = await postJson(`${single.url}/v1/completions`, greedy);
      assert.equal(res.status, 200, res.text);
      reference = res.body.choices[0].text;
      assert.equal(reference, GREEDY_64);
    } finally {
      await single.stop();
    }
  });

  after(() => {
    teardown();
  });

  test('the layers split over two worker hosts give the single-host greedy output', async () => {
    const wa = await startWorker('a');
    const wb = await startWorker('b');
    const rxA = rxBytes(NS.a, `${tag}ap`);
    const rxB = rxBytes(NS.b, `${tag}bp`);
    const server = await startServer({
      model: MODELS.plain, host: ADDR.leader, prefix: leaderPrefix(), args: ['--rpc', workers('a', 'b')],
    });
    try {
      const log = server.log();
      assert.match(log, /RPC device RPC0 on 10\.213\.1\.1:50052/);
      assert.match(log, /RPC device RPC1 on 10\.213\.2\.1:50052/);
      const split = log.match(/RPC: (\d+) of (\d+) layers on 2 remote devices/);
      assert.ok(split, log);
      assert.ok(Number(split[1]) >= 2, `at least one layer per worker: ${split[0]}`);
      for (const stream of [false, true]) {
        const res = await postJson(`${server.url}/v1/completions`, { ...greedy, stream });
        assert.equal(res.status, 200, res.text);
        const text = stream
          ? res.text.split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)).choices[0]?.text ?? '').join('')
          : res.body.choices[0].text;
        assert.equal(text, reference);
      }
      // Each worker received its layers' weights (a layer of this model is ~200 KB of f32).
      const gotA = rxBytes(NS.a, `${tag}ap`) - rxA;
      const gotB = rxBytes(NS.b, `${tag}bp`) - rxB;
      assert.ok(gotA > 150_000, `worker A received ${gotA} bytes`);
      assert.ok(gotB > 150_000, `worker B received ${gotB} bytes`);
      const metadata = await fetch(`${server.url}/v1/metadata`).then((r) => r.json());
      assert.equal(JSON.stringify(metadata).includes('"device":"rpc"'), true, JSON.stringify(metadata));
    } finally {
      // The workers go whatever the leader's exit says, so a failure here cannot leave them
      // holding their ports for the tests after this one.
      const exit = await server.stop();
      await wa.stop();
      await wb.stop();
      assert.equal(exit.code, 0, server.log());
    }
  });

  test('an unreachable or refusing worker stops start-up at once with a clear error', async () => {
    // Nothing listens on worker A's address: refused at once.
    let t0 = Date.now();
    let msg = await failedStart(['--rpc', workers('a')]);
    assert.match(msg, /exited before it was ready \(code 1/);
    assert.match(msg, /RPC worker 10\.213\.1\.1:50052 cannot be reached: Connection refused/);
    assert.ok(Date.now() - t0 < timeBound(10_000));
    // A host that does not exist on the link: no answer within --rpc-timeout.
    t0 = Date.now();
    msg = await failedStart(['--rpc', '10.213.1.77:50052', '--rpc-timeout', '2']);
    assert.match(msg, /exited before it was ready \(code 1/);
    assert.match(msg, /RPC worker 10\.213\.1\.77:50052 (did not accept a connection within 2000 ms|cannot be reached: No route to host)/);
    assert.ok(Date.now() - t0 < timeBound(15_000), `took ${Date.now() - t0} ms`);
    // A bad list is refused before anything connects.
    msg = await failedStart(['--rpc', `${workers('a')},${workers('a')}`]);
    assert.match(msg, /--rpc lists 10\.213\.1\.1:50052 twice/);
  });

  test('a worker that dies mid-request fails the requests and the leader exits 2', async () => {
    const wa = await startWorker('a');
    const server = await startServer({
      model: MODELS.plain, host: ADDR.leader, prefix: leaderPrefix(), args: ['--rpc', workers('a')],
    });
    try {
      // A long stream: once its first token is out, the worker is stopped (so the request is
      // certainly in flight), then killed.
      const res = await fetch(`${server.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: ONCE, max_tokens: 480, temperature: 0, ignore_eos: true, stream: true }),
        signal: AbortSignal.timeout(30_000),
      });
      assert.equal(res.status, 200);
      const reader = res.body.getReader();
      const first = await reader.read();
      assert.match(Buffer.from(first.value).toString(), /data: \{/);
      wa.child.kill('SIGSTOP');
      const queued = postJson(`${server.url}/v1/completions`, greedy);
      await sleep(300);
      wa.child.kill('SIGKILL');
      let rest = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        rest += Buffer.from(value).toString();
      }
      assert.match(rest, /"code":"rpc_worker_lost"/, rest.slice(-2000));
      assert.match(rest, /data: \[DONE\]/);
      const other = await queued;
      assert.equal(other.status, 503, other.text);
      assert.equal(other.body.error.code, 'rpc_worker_lost');
      assert.match(other.body.error.message, /lost its RPC workers \(10\.213\.1\.1:50052\)/);
      const exit = await exitOf(server, 10_000);
      assert.equal(exit.code, 2, server.log());
      assert.match(server.log(), /RPC workers \(10\.213\.1\.1:50052\) lost: ggml: ggml-rpc\.cpp:\d+: Remote RPC server crashed/);
    } finally {
      await server.stop();
      await wa.stop();
    }
  });

  test('a worker that goes silent (its link down) is declared lost after --rpc-timeout', async () => {
    const wb = await startWorker('b');
    const server = await startServer({
      model: MODELS.plain, host: ADDR.leader, prefix: leaderPrefix(), args: ['--rpc', workers('b'), '--rpc-timeout', '3'],
    });
    try {
      const ok = await postJson(`${server.url}/v1/completions`, greedy);
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.body.choices[0].text, reference);
      // No FIN, no RST: the worker's end of the link goes down, and its packets vanish.
      sh(`ip -n ${NS.b} link set ${tag}bp down`);
      const t0 = Date.now();
      const res = await postJson(`${server.url}/v1/completions`, greedy);
      const took = Date.now() - t0;
      assert.equal(res.status, 503, res.text);
      assert.equal(res.body.error.code, 'rpc_worker_lost');
      assert.ok(took >= 2500 && took < timeBound(10_000), `answered after ${took} ms (--rpc-timeout 3)`);
      const exit = await exitOf(server, 10_000);
      assert.equal(exit.code, 2, server.log());
      assert.match(server.log(), /an engine step has waited on them for more than 3 s \(--rpc-timeout\)/);
    } finally {
      sh(`ip -n ${NS.b} link set ${tag}bp up`, { check: false });
      await server.stop();
      await wb.stop();
    }
  });
});
