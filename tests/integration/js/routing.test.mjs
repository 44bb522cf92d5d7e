// AIM routing: one inferbox answers for its own model and for remote OpenAI-compatible backends
// (other inferbox processes on loopback ports), with overflow, fallback, placement pins, circuit
// breaking, cooldowns, timeouts, TLS, cancellation reaching the remote, and streams that continue
// on another backend when theirs dies mid-way (completions and chat). Driven by the
// official OpenAI SDK where a client would use it.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import {
  MODELS,
  ONCE,
  assertErrorShape,
  freePort,
  getJson,
  modelPath,
  openaiClient,
  postJson,
  serverBinary,
  startServer,
  streamRaw,
  timeBound,
} from './harness.mjs';
import { SKIP_NETNS, addNamespaces, removeNamespaces, requireNetns, sh, vethLink } from './netns.mjs';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-routing-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Waits (up to 1 s) for `re` in a server's log: the access log's line follows the last byte.
async function logged(server, re) {
  for (let i = 0; i < 50 && !re.test(server.log()); i++) {
    await sleep(20);
  }
  assert.match(server.log(), re);
}

const REMOTE_KEY = 'remote-secret-key-123';
const ROUTER_KEY = 'router-client-key-456';
const greedy = { temperature: 0, max_tokens: 24 };
const hi = [{ role: 'user', content: 'Hi' }];

// Requests the remote's access log recorded for a path.
function remoteHits(server, pathName) {
  return server.log().split('\n').filter((l) => l.includes(`path=${pathName} `)).length;
}

// The same count once it has stopped moving: the remote writes its access-log line after the
// response's last byte, so a request an earlier test finished may still be on its way to the log.
async function settledRemoteHits(server, pathName) {
  let last = remoteHits(server, pathName);
  for (let i = 0; i < 50; i++) {
    await sleep(100);
    const now = remoteHits(server, pathName);
    if (now === last) return now;
    last = now;
  }
  return last;
}

describe('a router in front of a remote inferbox', () => {
  let remote;
  let router;
  before(async () => {
    // The remote: the chat model as "tiny" (also this router's own model) and the plain model as
    // "far" (only remote), behind an API key of its own.
    remote = await startServer({
      model: null, parallel: 4,
      args: ['--model', `tiny=${modelPath(MODELS.chatml)}`, '--model', `far=${modelPath(MODELS.plain)}`,
        '--api-key', REMOTE_KEY],
    });
    router = await startServer({
      model: null, parallel: 1,
      args: ['--model', `tiny=${modelPath(MODELS.chatml)}`, '--api-key', ROUTER_KEY,
        '--backend', `b=${remote.url}/v1;models=tiny,far;api-key-env=INFERBOX_TEST_REMOTE_KEY;probe-interval-ms=200`],
      env: { INFERBOX_TEST_REMOTE_KEY: REMOTE_KEY },
    });
  });
  after(async () => {
    await router?.stop();
    await remote?.stop();
  });

  const client = () => openaiClient(router, { apiKey: ROUTER_KEY });
  const direct = () => openaiClient(remote, { apiKey: REMOTE_KEY });

  test('a model only the remote serves is answered there, the same as asking it directly', async () => {
    const { data, response } = await client().completions.create({ model: 'far', prompt: ONCE, ...greedy })
      .withResponse();
    assert.equal(response.headers.get('x-inferbox-backend'), 'b');
    assert.equal(response.headers.get('x-inferbox-route'), 'remote');
    assert.deepEqual(data.nvext, { backend: 'b', route: 'remote' });
    const reference = await direct().completions.create({ model: 'far', prompt: ONCE, ...greedy });
    assert.equal(data.choices[0].text, reference.choices[0].text);
    assert.equal(data.usage.completion_tokens, reference.usage.completion_tokens);
    assert.equal(data.model, 'far');

    // Streamed: chunk by chunk, the same text, usage preserved.
    const stream = await client().chat.completions.create({
      model: 'far', messages: hi, ...greedy, stream: true, stream_options: { include_usage: true },
    }).catch((e) => e);
    // "far" has no chat template: the remote's 400 comes back as a 400 naming the backend.
    assert.equal(stream.status, 400, String(stream));
    assert.match(stream.message, /backend 'b' refused the request/);
  });

  test('embeddings and the Responses API for a remote model pass through', async () => {
    const { data, response } = await client().embeddings.create({ model: 'far', input: ['Once', 'upon a time'] })
      .withResponse();
    assert.equal(response.headers.get('x-inferbox-backend'), 'b');
    const reference = await direct().embeddings.create({ model: 'far', input: ['Once', 'upon a time'] });
    assert.deepEqual(data.data.map((d) => d.embedding), reference.data.map((d) => d.embedding));
    assert.equal(data.model, reference.model);
    // The remote's own error comes back as it is, with where it came from.
    const bad = await postJson(`${router.url}/v1/embeddings`, { model: 'far', input: [] },
      { headers: { authorization: `Bearer ${ROUTER_KEY}` } });
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.headers.get('x-inferbox-backend'), 'b');

    const resp = await client().responses.create({ model: 'tiny', input: 'Hi', max_output_tokens: 8, temperature: 0 },
      { headers: { 'X-Inferbox-Placement': 'remote-only' } });
    const ref = await direct().chat.completions.create({ model: 'tiny', messages: hi, max_tokens: 8, temperature: 0 });
    assert.equal(resp.output_text, ref.choices[0].message.content);
  });

  test('chat streams relay chunk by chunk with usage, and equal the remote answering directly', async () => {
    const pinned = client().chat.completions.create(
      { model: 'tiny', messages: hi, ...greedy, stream: true, stream_options: { include_usage: true } },
      { headers: { 'X-Inferbox-Placement': 'remote-only' } });
    const { data: stream, response } = await pinned.withResponse();
    assert.equal(response.headers.get('x-inferbox-route'), 'pinned');
    let text = '';
    let usage = null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      text += chunk.choices[0]?.delta?.content ?? '';
      usage = chunk.usage ?? usage;
    }
    const reference = await direct().chat.completions.create({ model: 'tiny', messages: hi, ...greedy });
    assert.equal(text, reference.choices[0].message.content);
    assert.ok(chunks > 3, `${chunks} chunks: the stream was relayed piece by piece`);
    assert.equal(usage.completion_tokens, reference.usage.completion_tokens);
    assert.equal(usage.prompt_tokens, reference.usage.prompt_tokens);
  });

  test('overflow: more concurrent streams than local slots run remotely, none refused, all correct', async () => {
    const reference = (await client().chat.completions.create(
      { model: 'tiny', messages: hi, temperature: 0, max_tokens: 48 },
      { headers: { 'X-Inferbox-Placement': 'local-only' } })).choices[0].message.content;
    const runs = await Promise.all(Array.from({ length: 4 }, async () => {
      const { data, response } = await client().chat.completions.create(
        { model: 'tiny', messages: hi, temperature: 0, max_tokens: 48 }).withResponse();
      return { text: data.choices[0].message.content, route: response.headers.get('x-inferbox-route'),
        backend: response.headers.get('x-inferbox-backend') };
    }));
    for (const r of runs) {
      assert.equal(r.text, reference, JSON.stringify(r));
    }
    const routes = runs.map((r) => `${r.backend}:${r.route}`).sort();
    assert.ok(routes.includes('local:local'), routes.join(' '));
    assert.ok(routes.includes('b:overflow'), routes.join(' '));
  });

  test('local-only never leaves the box, even when the box is full', async () => {
    const before = await settledRemoteHits(remote, '/v1/chat/completions');
    const runs = await Promise.all(Array.from({ length: 3 }, () => client().chat.completions.create(
      { model: 'tiny', messages: hi, ...greedy }, { headers: { 'X-Inferbox-Placement': 'local-only' } })
      .withResponse()));
    for (const { response } of runs) {
      assert.equal(response.headers.get('x-inferbox-backend'), 'local');
    }
    // nvext.placement in the body is the same pin.
    const body = await postJson(`${router.url}/v1/chat/completions`,
      { model: 'tiny', messages: hi, ...greedy, nvext: { placement: 'local-only' } },
      { headers: { authorization: `Bearer ${ROUTER_KEY}` } });
    assert.equal(body.status, 200, body.text);
    assert.equal(body.body.nvext.backend, 'local');
    assert.equal(await settledRemoteHits(remote, '/v1/chat/completions'), before, 'the remote saw none of them');

    const bad = await postJson(`${router.url}/v1/chat/completions`, { model: 'tiny', messages: hi, ...greedy },
      { headers: { authorization: `Bearer ${ROUTER_KEY}`, 'X-Inferbox-Placement': 'anywhere' } });
    assert.match(assertErrorShape(bad, 400).message, /X-Inferbox-Placement must be local-only, remote-only or auto/);
    // A model only the remote has cannot be pinned here.
    const far = await postJson(`${router.url}/v1/completions`, { model: 'far', prompt: ONCE, max_tokens: 4 },
      { headers: { authorization: `Bearer ${ROUTER_KEY}`, 'X-Inferbox-Placement': 'local-only' } });
    assert.match(assertErrorShape(far, 503).message, /pinned local-only/);
  });

  test('the catalogue lists local and remote models with where each can run', async () => {
    const models = await client().models.list();
    const byId = Object.fromEntries(models.data.map((m) => [m.id, m]));
    assert.deepEqual(byId.tiny.placements.map((p) => p.backend), ['local', 'b']);
    assert.equal(byId.far.status, 'remote');
    assert.equal(byId.far.owned_by, 'b');
    assert.equal(byId.far.placements[0].state, 'available');
    const one = await client().models.retrieve('far');
    assert.equal(one.id, 'far');
  });

  test('metrics say per backend what was sent, what failed, what is open, and where requests ran', async () => {
    const res = await fetch(`${router.url}/metrics`, { headers: { authorization: `Bearer ${ROUTER_KEY}` } });
    const text = await res.text();
    const value = (series) => {
      const line = text.split('\n').find((l) => l.startsWith(`${series} `));
      assert.ok(line, `${series} is not on /metrics`);
      return Number(line.split(' ').at(-1));
    };
    assert.ok(value('inferbox_backend_requests_total{backend="b"}') >= 3);
    assert.equal(value('inferbox_backend_failures_total{backend="b"}'), 0);
    assert.equal(value('inferbox_backend_in_flight{backend="b"}'), 0);
    assert.equal(value('inferbox_backend_circuit_state{backend="b"}'), 0);
    assert.equal(value('inferbox_backend_up{backend="b"}'), 1);
    assert.ok(value('inferbox_routed_requests_total{backend="b",route="remote"}') >= 1);
    assert.ok(value('inferbox_routed_requests_total{backend="b",route="overflow"}') >= 1);
    assert.ok(value('inferbox_routed_requests_total{backend="local",route="pinned"}') >= 3);
    assert.match(text, /# TYPE inferbox_backend_requests_total counter/);
    // Latency by the backend a routed request finished on, and the router's own share.
    assert.ok(value('inferbox_backend_time_to_first_token_seconds_count{backend="b"}') >= 1);
    assert.ok(value('inferbox_backend_e2e_request_latency_seconds_count{backend="b"}') >= 1);
    assert.ok(value('inferbox_backend_time_to_first_token_seconds_count{backend="local"}') >= 1);
    assert.ok(value('inferbox_router_overhead_seconds_count') >= 1);
  });

  test('the client\'s key is never forwarded: the remote only accepts the backend\'s own key', async () => {
    // The router's key is not valid at the remote; the request works, so the router sent its own.
    const denied = await postJson(`${remote.url}/v1/completions`, { model: 'far', prompt: ONCE, max_tokens: 2 },
      { headers: { authorization: `Bearer ${ROUTER_KEY}` } });
    assert.equal(denied.status, 401);
    const ok = await client().completions.create({ model: 'far', prompt: ONCE, max_tokens: 2 });
    assert.equal(ok.choices.length, 1);
    assert.ok(!router.log().includes(REMOTE_KEY), 'the backend key appears in no log line');
  });

  test('a chat request can continue its final assistant message, as mid-stream failover asks of a backend', async () => {
    // The first 8 streamed tokens of a greedy answer, sent back as the assistant's message to
    // continue: the rest of the answer follows, and the prefix counts as exactly those 8 tokens
    // of prompt (the template did not touch it, and it re-tokenized the same).
    const stream = await direct().chat.completions.create({ model: 'tiny', messages: hi, ...greedy, stream: true });
    const pieces = [];
    for await (const chunk of stream) {
      const piece = chunk.choices[0]?.delta?.content;
      if (piece) pieces.push(piece);
    }
    assert.equal(pieces.length, greedy.max_tokens, 'one streamed event per token');
    const whole = await direct().chat.completions.create({ model: 'tiny', messages: hi, ...greedy });
    assert.equal(pieces.join(''), whole.choices[0].message.content);
    const prefix = pieces.slice(0, 8).join('');
    const rest = await direct().chat.completions.create({
      model: 'tiny', messages: [...hi, { role: 'assistant', content: prefix }], temperature: 0,
      max_tokens: greedy.max_tokens - 8, continue_final_message: true, add_generation_prompt: false,
    });
    assert.equal(rest.choices[0].message.content, pieces.slice(8).join(''), 'the same answer, continued');
    assert.equal(rest.usage.prompt_tokens, whole.usage.prompt_tokens + 8);
    assert.equal(rest.usage.completion_tokens, greedy.max_tokens - 8);

    // Continuing needs an assistant message last; a prompt without an assistant turn is refused.
    const auth = { headers: { authorization: `Bearer ${REMOTE_KEY}` } };
    const noAssistant = await postJson(`${remote.url}/v1/chat/completions`,
      { model: 'tiny', messages: hi, continue_final_message: true }, auth);
    assertErrorShape(noAssistant, 400);
    assert.equal(noAssistant.body.error.param, 'messages[0].role');
    const noTurn = await postJson(`${remote.url}/v1/chat/completions`,
      { model: 'tiny', messages: hi, add_generation_prompt: false }, auth);
    assertErrorShape(noTurn, 400);
    assert.equal(noTurn.body.error.param, 'add_generation_prompt');
  });

  test('a client that disconnects cancels the upstream request', async () => {
    const metric = async (name) => {
      const res = await fetch(`${remote.url}/metrics`, { headers: { authorization: `Bearer ${REMOTE_KEY}` } });
      const m = (await res.text()).match(new RegExp(`^${name}\\{model_name="far"\\} (\\d+)$`, 'm'));
      return m ? Number(m[1]) : -1;
    };
    const cancelledBefore = await metric('inferbox_request_cancelled_total');
    const got = await streamRaw(`${router.url}/v1/completions`,
      { model: 'far', prompt: ONCE, max_tokens: 400, temperature: 0, ignore_eos: true, stream: true },
      (sock) => sock.resetAndDestroy(), { authorization: `Bearer ${ROUTER_KEY}` });
    assert.match(got, /x-inferbox-backend: b/i);
    assert.match(got, /data: \{/, 'the stream had started');
    let running = await metric('num_requests_running');
    for (let i = 0; i < 100 && running !== 0; i++) {
      await sleep(50);
      running = await metric('num_requests_running');
    }
    assert.equal(running, 0, 'the remote stopped generating once the client left');
    // The remote saw its client (the router) leave: a cancellation, not a finished generation.
    assert.equal(await metric('inferbox_request_cancelled_total'), cancelledBefore + 1);
  });
});

describe('failures: refused, silent and busy backends, circuit breaking, bad configuration', () => {
  test('a refused connection is a 502 naming the backend; the circuit then opens and half-opens', async () => {
    const closed = await freePort(); // nothing listens there
    const router = await startServer({
      model: MODELS.plain,
      // No retries: each request is one attempt, so the circuit's count is the requests'.
      args: ['--route-retries', '0', '--backend', `gone=http://127.0.0.1:${closed}/v1;models=ghost;failure-threshold=2;` +
        'open-ms=400;probe-interval-ms=0'],
    });
    try {
      const ask = () => postJson(`${router.url}/v1/completions`, { model: 'ghost', prompt: ONCE, max_tokens: 4 });
      for (let i = 0; i < 2; i++) {
        const err = assertErrorShape(await ask(), 502);
        assert.equal(err.code, 'backend_unreachable');
        assert.match(err.message, /backend http:\/\/127\.0\.0\.1:\d+ failed \(accept a connection\)/);
      }
      const open = assertErrorShape(await ask(), 503);
      assert.equal(open.code, 'backend_circuit_open');
      const listed = (await getJson(`${router.url}/v1/models/ghost`)).body;
      assert.equal(listed.placements[0].state, 'circuit_open');
      await sleep(500);
      // Half-open: one trial goes through (and fails again, re-opening at once).
      assert.equal(assertErrorShape(await ask(), 502).code, 'backend_unreachable');
      assert.equal(assertErrorShape(await ask(), 503).code, 'backend_circuit_open');
    } finally {
      await router.stop();
    }
  });

  test('a backend that refuses for a moment is retried with backoff, within the deadline, before any output', async () => {
    // The backend's port refuses connections until a proxy to a real inferbox opens on it
    // ~400 ms after the request; the retries (250 ms, then 500 ms later) find it.
    const remote = await startServer({ model: null, args: ['--model', `tiny=${modelPath(MODELS.plain)}`] });
    const port = await freePort();
    const piped = [];
    const proxy = net.createServer((client) => {
      const upstream = net.connect(Number(new URL(remote.url).port), '127.0.0.1');
      piped.push(client, upstream);
      client.pipe(upstream).pipe(client);
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
    });
    const router = await startServer({
      model: MODELS.plain,
      args: ['--backend', `later=http://127.0.0.1:${port}/v1;models=tiny;probe-interval-ms=0;failure-threshold=5`],
    });
    try {
      const sent = Date.now();
      setTimeout(() => proxy.listen(port, '127.0.0.1'), 400);
      const { data, response } = await openaiClient(router).completions
        .create({ model: 'tiny', prompt: ONCE, max_tokens: 8, temperature: 0 }).withResponse();
      const took = Date.now() - sent;
      assert.equal(response.headers.get('x-inferbox-backend'), 'later');
      assert.equal(response.headers.get('x-inferbox-route'), 'retry');
      assert.ok(data.choices[0].text.length > 0);
      assert.ok(took >= 400, `answered after ${took} ms: before the backend could listen`);
      await logged(router, /route=retry/);

      // A deadline shorter than the next backoff ends the retries: the first error, saying so.
      proxy.close();
      piped.forEach((sock) => sock.destroy()); // no kept-alive connection gets through either
      await new Promise((r) => setTimeout(r, 50));
      const started = Date.now();
      const err = assertErrorShape(await postJson(`${router.url}/v1/completions`,
        { model: 'tiny', prompt: ONCE, max_tokens: 4 }, { headers: { 'X-Inferbox-Timeout-Ms': '600' } }), 502);
      assert.equal(err.code, 'backend_unreachable');
      assert.match(err.message, /\(tried 1 more time over \d+ ms; last: /);
      assert.ok(Date.now() - started < timeBound(2000));
    } finally {
      proxy.close();
      await router.stop();
      await remote.stop();
    }
  });

  test('a backend that accepts and never answers is cut at its first-byte timeout (504)', async () => {
    const sockets = [];
    const silent = net.createServer((s) => sockets.push(s));
    await new Promise((r) => silent.listen(0, '127.0.0.1', r));
    const router = await startServer({
      model: MODELS.plain,
      args: ['--backend', `mute=http://127.0.0.1:${silent.address().port}/v1;models=ghost;first-byte-timeout-ms=400;` +
        'probe-interval-ms=0'],
    });
    try {
      const started = Date.now();
      const err = assertErrorShape(
        await postJson(`${router.url}/v1/completions`, { model: 'ghost', prompt: ONCE, max_tokens: 4 }), 504);
      assert.equal(err.code, 'backend_timeout');
      assert.match(err.message, /did not start answering within 400 ms/);
      assert.ok(Date.now() - started < timeBound(3000), `${Date.now() - started} ms`);
    } finally {
      await router.stop();
      sockets.forEach((s) => s.destroy());
      silent.close();
    }
  });

  test('a request\'s deadline: a 504 before the answer starts, an error event after; never moved past it', async () => {
    const sockets = [];
    const silent = net.createServer((s) => sockets.push(s));
    await new Promise((r) => silent.listen(0, '127.0.0.1', r));
    const server = await startServer({
      model: MODELS.plain, env: { INFERBOX_FAILPOINT_STEP_DELAY_MS: '5' },
      args: ['--backend', `mute=http://127.0.0.1:${silent.address().port}/v1;models=ghost;probe-interval-ms=0`],
    });
    try {
      const url = `${server.url}/v1/completions`;
      const body = { prompt: ONCE, max_tokens: 400, temperature: 0, ignore_eos: true };
      let started = Date.now();
      const whole = assertErrorShape(await postJson(url, { ...body, nvext: { timeout_ms: 150 } }), 504);
      assert.equal(whole.code, 'deadline_exceeded');
      assert.match(whole.message, /deadline of 150 ms/);
      assert.ok(Date.now() - started < timeBound(2000), `${Date.now() - started} ms`);

      const streamed = await postJson(url, { ...body, stream: true }, { headers: { 'X-Inferbox-Timeout-Ms': '150' } });
      assert.equal(streamed.status, 200);
      const events = streamed.text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
      assert.equal(events.at(-1), '[DONE]');
      assert.equal(JSON.parse(events.at(-2)).error.code, 'deadline_exceeded');

      // A backend that never answers: the deadline, not its 60 s first-byte timeout, ends it.
      started = Date.now();
      const remote = assertErrorShape(await postJson(url, { model: 'ghost', prompt: ONCE, max_tokens: 4 },
        { headers: { 'X-Inferbox-Timeout-Ms': '300' } }), 504);
      assert.equal(remote.code, 'deadline_exceeded');
      assert.ok(Date.now() - started < timeBound(2000), `${Date.now() - started} ms`);

      const bad = await postJson(url, { prompt: ONCE }, { headers: { 'X-Inferbox-Timeout-Ms': 'soon' } });
      assert.match(assertErrorShape(bad, 400).message, /X-Inferbox-Timeout-Ms must be an integer/);
      const bad2 = await postJson(url, { prompt: ONCE, nvext: { timeout_ms: 0 } });
      assert.equal(assertErrorShape(bad2, 400).param, 'nvext.timeout_ms');
      // The engine is free again: nothing left running.
      const ok = await postJson(url, { prompt: ONCE, max_tokens: 4 });
      assert.equal(ok.status, 200, ok.text);
    } finally {
      await server.stop();
      sockets.forEach((s) => s.destroy());
      silent.close();
    }
  });

  test('a remote 429 comes back as 429 and puts the backend in cooldown for its Retry-After', async () => {
    const remote = await startServer({ model: MODELS.plain, args: ['--rate-limit-rpm', '1', '--api-key', REMOTE_KEY] });
    const router = await startServer({
      model: null,
      args: ['--model', `mine=${modelPath(MODELS.plain)}`,
        '--backend', `busy=${remote.url}/v1;models=stories260K;api-key-file=${path.join(dir, 'key')};probe-interval-ms=0`],
      env: {},
    }).catch((e) => e);
    // api-key-file did not exist yet: the router refused to start, naming the entry and the file.
    assert.ok(router instanceof Error);
    assert.match(router.message, /backend 'busy': the api-key-file .*key cannot be read/);
    fs.writeFileSync(path.join(dir, 'key'), `${REMOTE_KEY}\n`);
    const router2 = await startServer({
      model: null,
      args: ['--model', `mine=${modelPath(MODELS.plain)}`,
        '--backend', `busy=${remote.url}/v1;models=stories260K;api-key-file=${path.join(dir, 'key')};probe-interval-ms=0`],
    });
    try {
      const ask = () => postJson(`${router2.url}/v1/completions`, { model: 'stories260K', prompt: ONCE, max_tokens: 4 });
      assert.equal((await ask()).status, 200);
      const limited = assertErrorShape(await ask(), 429);
      assert.match(limited.message, /backend 'busy' is at capacity \(HTTP 429\)/);
      const cooling = assertErrorShape(await ask(), 429);
      assert.equal(cooling.code, 'backend_cooldown');
      const listed = (await getJson(`${router2.url}/v1/models/stories260K`)).body;
      assert.equal(listed.placements[0].state, 'cooling_down');
    } finally {
      await router2.stop();
      await remote.stop();
    }
  });

  test('bad backend configuration stops serve with the entry named', () => {
    const run = (...args) => {
      try {
        execFileSync(serverBinary(), ['serve', '--model', modelPath(MODELS.plain), '--port', '0', ...args],
          { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, INFERBOX_DATA: dir } });
        return { code: 0, out: '' };
      } catch (e) {
        return { code: e.status, out: `${e.stdout}${e.stderr}` };
      }
    };
    const cases = [
      [['--backend', 'x=ftp://host/v1'], /backend 'x': the URL must start with http:\/\/ or https:\/\//],
      [['--backend', 'x=http://h/v1;colour=blue'], /backend 'x': unknown setting 'colour'/],
      [['--backend', 'x=http://h/v1;api-key-env=INFERBOX_TEST_UNSET_VAR'], /INFERBOX_TEST_UNSET_VAR, which is not set/],
      [['--backend', 'x=http://h/v1;max-in-flight=0'], /max-in-flight must be an integer from 1/],
      [['--backend', 'x=http://h:99999/v1'], /invalid port '99999'/],
      [['--backend', 'x=http://h/v1', '--backend', 'x=http://g/v1'], /two backends are named 'x'/],
      [['--backend', 'x=https://h/v1;ca-file=/nonexistent.pem'], /CA file '\/nonexistent\.pem' cannot be loaded/],
      [['--route', 'tiny=sideways'], /unknown routing policy 'sideways'/],
    ];
    for (const [args, expected] of cases) {
      const r = run(...args);
      assert.equal(r.code, 1, `${args.join(' ')}: exit ${r.code}\n${r.out}`);
      assert.match(r.out, expected, args.join(' '));
    }
  });
});

describe('fallback when the local engine fails, and TLS to a backend', () => {
  test('a local decode failure moves the request to the remote before anything reached the client', async () => {
    const remote = await startServer({ model: MODELS.plain });
    const trigger = path.join(dir, 'decode-fail');
    const router = await startServer({
      model: MODELS.plain,
      args: ['--backend', `b=${remote.url}/v1;models=stories260K;probe-interval-ms=0`],
      env: { INFERBOX_FAILPOINT_DECODE: trigger },
    });
    try {
      const client = openaiClient(router);
      const reference = await client.completions.create({ prompt: ONCE, ...greedy });
      fs.writeFileSync(trigger, '1\n');
      const { data, response } = await client.completions.create({ prompt: ONCE, ...greedy, stream: true })
        .withResponse();
      let text = '';
      for await (const chunk of data) {
        text += chunk.choices[0]?.text ?? '';
      }
      assert.equal(response.headers.get('x-inferbox-backend'), 'b');
      assert.equal(response.headers.get('x-inferbox-route'), 'fallback');
      assert.equal(text, reference.choices[0].text);
      assert.ok(!fs.existsSync(trigger), 'the local decode did fail');
    } finally {
      await router.stop();
      await remote.stop();
    }
  });

  test('https backends are verified against the configured CA; a wrong CA is refused clearly', async () => {
    const ossl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=routing CA',
      '-keyout', 'ca.key', '-out', 'ca.pem');
    fs.writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
    ossl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', 'srv.key', '-out', 'srv.csr');
    ossl('x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2',
      '-extfile', 'san.ext', '-out', 'srv.pem');
    ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=other CA',
      '-keyout', 'other.key', '-out', 'other.pem');

    // The HTTPS remote (startServer probes over plain HTTP, so this one is started here).
    const port = await freePort();
    const child = spawn(serverBinary(), ['serve', '--model', modelPath(MODELS.plain), '--host', '127.0.0.1',
      '--port', String(port), '--tls-cert', path.join(dir, 'srv.pem'), '--tls-key', path.join(dir, 'srv.key')],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, INFERBOX_DATA: dir } });
    let log = '';
    child.stdout.on('data', (d) => { log += d; });
    child.stderr.on('data', (d) => { log += d; });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    const ready = () => new Promise((resolve) => {
      https.get({ host: '127.0.0.1', port, path: '/v1/health/ready', ca: fs.readFileSync(path.join(dir, 'ca.pem')) },
        (res) => { res.resume(); resolve(res.statusCode === 200); }).on('error', () => resolve(false));
    });
    let routers = [];
    try {
      let up = false;
      for (let i = 0; i < 300 && !up; i++) {
        up = await ready();
        if (!up) {
          await sleep(100);
        }
      }
      assert.ok(up, `the HTTPS remote did not start:\n${log}`);
      const backend = (ca) => `s=https://127.0.0.1:${port}/v1;models=far=stories260K;ca-file=${path.join(dir, ca)};` +
        'probe-interval-ms=0';
      routers = await Promise.all([
        startServer({ model: MODELS.plain, args: ['--backend', backend('ca.pem')] }),
        startServer({ model: MODELS.plain, args: ['--backend', backend('other.pem')] }),
      ]);
      const ok = await postJson(`${routers[0].url}/v1/completions`, { model: 'far', prompt: ONCE, ...greedy });
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.body.nvext.backend, 's');
      const refused = assertErrorShape(
        await postJson(`${routers[1].url}/v1/completions`, { model: 'far', prompt: ONCE, ...greedy }), 502);
      assert.equal(refused.code, 'backend_tls');
      assert.match(refused.message, /TLS handshake with https:\/\/127\.0\.0\.1:\d+ failed: .*certificate verify failed/);
    } finally {
      await Promise.all(routers.map((r) => r.stop()));
      child.kill('SIGTERM');
      await exited;
    }
  });
});

describe('balanced routing', () => {
  test('a burst of simultaneous requests is spread over the backends, not sent to one', async () => {
    // The router counts what it routed to each backend from the routing decision on; the
    // backends' own in-flight counts only move once a request has been prepared and sent.
    const slow = { model: MODELS.plain, env: { INFERBOX_FAILPOINT_STEP_DELAY_MS: '5' } };
    const remotes = await Promise.all([startServer(slow), startServer(slow)]);
    const router = await startServer({
      model: null,
      args: ['--model', `mine=${modelPath(MODELS.plain)}`, '--route', 'far=balanced',
        '--backend', `b1=${remotes[0].url}/v1;models=far=stories260K;probe-interval-ms=0`,
        '--backend', `b2=${remotes[1].url}/v1;models=far=stories260K;probe-interval-ms=0`],
    });
    try {
      const client = openaiClient(router);
      const answers = await Promise.all([0, 1, 2, 3].map((i) => client.completions
        .create({ model: 'far', prompt: `${ONCE} number ${i}`, max_tokens: 32, temperature: 0 }).withResponse()));
      const where = answers.map((a) => a.response.headers.get('x-inferbox-backend')).sort();
      assert.deepEqual(where, ['b1', 'b1', 'b2', 'b2']);
    } finally {
      await router.stop();
      await Promise.all(remotes.map((r) => r.stop()));
    }
  });
});

describe('mid-stream failover', () => {
  // Two remotes serving `model` as "far" behind a router that prefers b1. Each remote step waits
  // 5 ms (a test-build failpoint), so a stream is still running when its backend is killed.
  async function failoverPair(model, remoteId) {
    const slow = { model, env: { INFERBOX_FAILPOINT_STEP_DELAY_MS: '5' } };
    const remotes = await Promise.all([startServer(slow), startServer(slow)]);
    const router = await startServer({
      model: null,
      args: ['--model', `mine=${modelPath(MODELS.plain)}`, '--route', 'far=remote-first',
        '--backend', `b1=${remotes[0].url}/v1;models=far=${remoteId};probe-interval-ms=0`,
        '--backend', `b2=${remotes[1].url}/v1;models=far=${remoteId};probe-interval-ms=0`],
    });
    const stop = async () => {
      await router.stop();
      await Promise.all(remotes.map((r) => r.stop()));
    };
    return { remotes, router, stop };
  }

  // Streams `body` through the router, SIGKILLs b1 at the first event, and returns the parsed
  // chunks once the stream started on b1, ended with [DONE] and carried no error. A stream that
  // stalls fails with the router's and the surviving remote's logs, which say where the
  // continuation stopped.
  async function streamKillingB1({ remotes, router }, path, body) {
    let killed = false;
    const got = await streamRaw(`${router.url}${path}`, body,
      () => { killed = true; process.kill(remotes[0].pid, 'SIGKILL'); }).catch((e) => {
      throw new Error(`${e.message}\n--- router log:\n${router.log().slice(-4000)}\n--- b2 log:\n` +
        `${remotes[1].log().slice(-3000)}`);
    });
    assert.ok(killed, 'b1 was killed during the stream');
    assert.match(got, /x-inferbox-backend: b1/i, 'the stream started on b1');
    const events = got.split(/\r?\n/).filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
    assert.equal(events.at(-1), '[DONE]', got.slice(-2000));
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    assert.ok(!chunks.some((c) => c.error), `no error reached the client: ${got.slice(-1500)}`);
    return chunks;
  }

  test('a backend killed during a greedy stream: the stream continues on another and equals an unbroken run', async () => {
    const pair = await failoverPair(MODELS.plain, 'stories260K');
    const { remotes, router } = pair;
    try {
      const body = { prompt: ONCE, max_tokens: 200, temperature: 0, ignore_eos: true };
      const reference = await postJson(`${remotes[1].url}/v1/completions`, body);
      assert.equal(reference.status, 200, reference.text);

      // Relayed as generated, not buffered: the events reach the client spread over the time
      // the remote took (each of its steps waits 5 ms).
      const arrivals = [];
      const res = await fetch(`${router.url}/v1/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...body, model: 'far', max_tokens: 40, stream: true }),
      });
      const decoder = new TextDecoder();
      for await (const piece of res.body) {
        const n = (decoder.decode(piece).match(/^data: \{/gm) ?? []).length;
        for (let i = 0; i < n; i++) {
          arrivals.push(Date.now());
        }
      }
      assert.ok(arrivals.length >= 40, `${arrivals.length} events`);
      const distinct = new Set(arrivals).size;
      assert.ok(distinct >= 20 && arrivals.at(-1) - arrivals[0] >= 100,
        `events arrived in bursts: ${distinct} distinct times over ${arrivals.at(-1) - arrivals[0]} ms`);

      const chunks = await streamKillingB1(pair, '/v1/completions', { ...body, model: 'far', stream: true });
      const text = chunks.map((c) => c.choices[0]?.text ?? '').join('');
      assert.equal(text, reference.body.choices[0].text, 'no duplicate and no gap');
      const last = chunks.findLast((c) => c.nvext);
      assert.deepEqual(last.nvext, { backend: 'b2', route: 'failover' });
    } finally {
      await pair.stop();
    }
  });

  test('a backend killed during a greedy chat stream: the answer continues on another as the same assistant message', async () => {
    // As above, with the chat model: the continuation is the conversation plus the text sent as
    // an assistant message to continue (continue_final_message), which b2 (an inferbox) renders
    // after the generation prompt as it is.
    const pair = await failoverPair(MODELS.chatml, 'stories260K-chatml');
    const { remotes, router } = pair;
    try {
      const body = { messages: hi, max_tokens: 200, temperature: 0, ignore_eos: true };
      const reference = await postJson(`${remotes[1].url}/v1/chat/completions`, body);
      assert.equal(reference.status, 200, reference.text);
      const want = reference.body.choices[0].message.content;
      assert.ok(want.length > 200, `a long answer: ${JSON.stringify(want)}`);

      const chunks = await streamKillingB1(pair, '/v1/chat/completions',
        { ...body, model: 'far', stream: true, stream_options: { include_usage: true } });
      const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
      assert.equal(text, want, 'no duplicate and no gap');
      const roles = chunks.filter((c) => c.choices[0]?.delta?.role);
      assert.equal(roles.length, 1, 'one assistant message, not a second turn');
      const finishes = chunks.filter((c) => c.choices[0]?.finish_reason);
      assert.deepEqual(finishes.map((c) => c.choices[0].finish_reason), ['length'], 'one finish');
      const usages = chunks.filter((c) => c.usage);
      assert.equal(usages.length, 1, 'one usage');
      assert.equal(usages[0].usage.completion_tokens, reference.body.usage.completion_tokens,
        'the tokens b1 streamed count as generated, not as b2\'s prompt');
      // b2's prompt was the conversation plus the text sent, which re-tokenized to exactly the
      // tokens b1 had streamed (their count is taken off b2's prompt count here).
      assert.equal(usages[0].usage.prompt_tokens, reference.body.usage.prompt_tokens);
      const last = chunks.findLast((c) => c.nvext);
      assert.deepEqual(last.nvext, { backend: 'b2', route: 'failover' });
      // Route "failover" (above) is only given to a stream that moved after text reached the
      // client; the access log says where it finished.
      assert.match(router.log(), /finished_on=b2/);
    } finally {
      await pair.stop();
    }
  });
});

// A backend on a host of its own (a network namespace joined by a veth pair): a network
// partition is silence, not the reset a killed process gives, so only the idle timeout between
// chunks can notice it.
describe('a backend on another host, partitioned mid-stream', { skip: SKIP_NETNS && 'INFERBOX_SKIP_NETNS=1' }, () => {
  const tag = `ir${process.pid % 100000}`;
  const ns = `${tag}-h`;
  const ADDR = { root: '10.214.0.1', host: '10.214.0.2' };
  before(() => {
    requireNetns('this test');
    removeNamespaces([ns], [`${tag}r`]);
    addNamespaces([ns]);
    vethLink(`${tag}r`, null, ADDR.root, ns, ADDR.host);
  });
  after(() => removeNamespaces([ns], [`${tag}r`]));

  test('the idle timeout notices, the stream continues on another backend and equals an unbroken run', async () => {
    const slow = { INFERBOX_FAILPOINT_STEP_DELAY_MS: '5' };
    const far = await startServer({ model: MODELS.plain, host: ADDR.host, prefix: ['ip', 'netns', 'exec', ns], env: slow });
    const near = await startServer({ model: MODELS.plain, env: slow });
    const router = await startServer({
      model: null,
      args: ['--model', `mine=${modelPath(MODELS.plain)}`, '--route', 'far=remote-first',
        '--backend', `b1=${far.url}/v1;models=far=stories260K;idle-timeout-ms=1500;probe-interval-ms=0`,
        '--backend', `b2=${near.url}/v1;models=far=stories260K;probe-interval-ms=0`],
    });
    try {
      const body = { prompt: ONCE, max_tokens: 200, temperature: 0, ignore_eos: true };
      const reference = await postJson(`${near.url}/v1/completions`, body);
      assert.equal(reference.status, 200, reference.text);

      const res = await fetch(`${router.url}/v1/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...body, model: 'far', stream: true }),
      });
      assert.equal(res.headers.get('x-inferbox-backend'), 'b1', `the stream started on the other host\n${router.log()}`);
      const decoder = new TextDecoder();
      let raw = '';
      const arrivals = [];
      let cutAt = 0;
      for await (const piece of res.body) {
        raw += decoder.decode(piece, { stream: true });
        const n = (raw.match(/^data: \{/gm) ?? []).length;
        while (arrivals.length < n) {
          arrivals.push(Date.now());
        }
        if (!cutAt && n >= 5) {
          sh(`ip link set ${tag}r down`); // the partition: b1's bytes stop, and no reset comes
          cutAt = arrivals.length;
        }
      }
      const events = raw.split(/\r?\n/).filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
      assert.equal(events.at(-1), '[DONE]', raw.slice(-2000));
      const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
      assert.ok(!chunks.some((c) => c.error), raw.slice(-1500));
      const text = chunks.map((c) => c.choices[0]?.text ?? '').join('');
      assert.equal(text, reference.body.choices[0].text, 'no duplicate and no gap');
      assert.deepEqual(chunks.findLast((c) => c.nvext).nvext, { backend: 'b2', route: 'failover' });
      // The client saw one pause: the idle timeout (1.5 s: long enough that a loaded machine's
      // own stalls never trip it) and the move, not a hang.
      const gaps = arrivals.slice(1).map((t, i) => t - arrivals[i]);
      const longest = Math.max(...gaps);
      assert.ok(longest >= 1400 && longest < timeBound(4000), `longest gap ${longest} ms`);
      await logged(router, /finished_on=b2/);
    } finally {
      sh(`ip link set ${tag}r up`, { check: false });
      await router.stop();
      await near.stop();
      await far.stop();
    }
  });
});
