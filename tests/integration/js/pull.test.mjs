// `inferbox pull` against a local stand-in for the Hugging Face hub (these machines cannot reach
// the real one): the hub answers /ORG/REPO/resolve/REV/FILE with a 302 to a "CDN" on another
// loopback address (127.0.0.2, so a different host) and publishes the file's SHA-256 in
// X-Linked-Etag, as huggingface.co does for LFS files. Each test can make the hub or the CDN
// misbehave: drop the connection, throttle, fail with 503, demand a token, publish a wrong hash,
// change the file under a resumed download. The pull must end with a verified model in the
// cache or with one clear error line and nothing in models/, and never send the token to the CDN.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';

import {
  MODELS, ONCE, README_REFERENCE, assertErrorShape, getJson, modelPath, openaiClient, postJson, serverBinary, startServer,
} from './harness.mjs';

const MODEL_BYTES = fs.readFileSync(modelPath(MODELS.plain));
const MODEL_SHA = crypto.createHash('sha256').update(MODEL_BYTES).digest('hex');
const OTHER_BYTES = fs.readFileSync(modelPath('stories260K-Q8_0.gguf'));
const REF = 'hf://TheOrg/tiny-stories/stories260K.gguf';
const NAME = 'TheOrg/stories260K';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// --- the stand-in hub ----------------------------------------------------------------------------

function listen(server, host) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve(server.address().port));
  });
}

// Files: path inside the repository → { bytes, etag }. `behaviour` is reset before each test.
const hub = {
  files: new Map(),
  requests: [], // { host: 'hub' | 'cdn', url, range, ifRange, authorization }
  behaviour: {},
  hubUrl: '',
  cdnUrl: '',
};

function resetHub() {
  hub.files = new Map([
    ['stories260K.gguf', { bytes: MODEL_BYTES, etag: '"v1-stories"' }],
    ['folder/nested.gguf', { bytes: MODEL_BYTES, etag: '"v1-nested"' }],
    ['not-a-model.gguf', { bytes: Buffer.from('<html><body>Sign in to continue</body></html>\n'), etag: '"html"' }],
  ]);
  hub.requests = [];
  hub.behaviour = {};
}

function record(which, req) {
  hub.requests.push({
    host: which,
    url: req.url,
    range: req.headers.range ?? null,
    ifRange: req.headers['if-range'] ?? null,
    authorization: req.headers.authorization ?? null,
  });
}

const hubServer = http.createServer((req, res) => {
  record('hub', req);
  const b = hub.behaviour;
  const m = /^\/TheOrg\/tiny-stories\/resolve\/([^/]+)\/(.+)$/.exec(req.url);
  if (b.token && req.headers.authorization !== `Bearer ${b.token}`) {
    res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"Invalid credentials in Authorization header"}');
    return;
  }
  if (b.hubFailures > 0) {
    b.hubFailures -= 1;
    res.writeHead(503, { 'retry-after': '0' }).end('busy');
    return;
  }
  const file = m && hub.files.get(decodeURIComponent(m[2]));
  if (!file || decodeURIComponent(m[1]) !== (b.revision ?? 'main')) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('Entry not found');
    return;
  }
  const sha = b.wrongHash ? 'ab'.repeat(32) : crypto.createHash('sha256').update(file.bytes).digest('hex');
  res.writeHead(302, {
    location: `${hub.cdnUrl}/cdn/${encodeURIComponent(m[2])}`,
    'x-linked-etag': `"${sha}"`,
    'x-linked-size': String(file.bytes.length),
  }).end();
});

const cdnServer = http.createServer(async (req, res) => {
  record('cdn', req);
  const b = hub.behaviour;
  const m = /^\/cdn\/(.+)$/.exec(req.url);
  const file = m && hub.files.get(decodeURIComponent(m[1]));
  if (!file) {
    res.writeHead(404).end();
    return;
  }
  let start = 0;
  const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  const ifRange = req.headers['if-range'];
  if (range && (ifRange === undefined || ifRange === file.etag)) {
    start = Number(range[1]);
    if (start >= file.bytes.length) {
      res.writeHead(416, { 'content-range': `bytes */${file.bytes.length}` }).end();
      return;
    }
  }
  const body = file.bytes.subarray(start);
  const headers = { 'content-length': String(body.length), etag: file.etag, 'accept-ranges': 'bytes' };
  if (start > 0) {
    headers['content-range'] = `bytes ${start}-${file.bytes.length - 1}/${file.bytes.length}`;
  }
  res.writeHead(start > 0 ? 206 : 200, headers);
  const chunk = 16 * 1024;
  let sent = 0;
  for (let at = 0; at < body.length; at += chunk) {
    const piece = body.subarray(at, at + chunk);
    if (b.dropAfter !== undefined && b.drops > 0 && sent + piece.length > b.dropAfter) {
      b.drops -= 1;
      res.write(piece.subarray(0, b.dropAfter - sent));
      await sleep(20);
      req.socket.destroy(); // the connection dies mid-file
      return;
    }
    if (!res.write(piece)) {
      await new Promise((r) => res.once('drain', r));
    }
    sent += piece.length;
    if (b.gate) {
      await b.gate; // holds the rest of the file until the test opens it
    }
    if (b.bytesPerSecond) {
      await sleep((piece.length / b.bytesPerSecond) * 1000);
    }
    if (req.socket.destroyed) {
      return;
    }
  }
  res.end();
});

// --- running the CLI -------------------------------------------------------------------------------

let work;
let cache;

function baseEnv(extra = {}) {
  const env = { ...process.env, INFERBOX_CACHE: cache, HF_ENDPOINT: hub.hubUrl, HOME: work, ...extra };
  for (const k of ['HF_TOKEN', 'HF_HOME', 'INFERBOX_OFFLINE']) {
    if (!(k in extra)) {
      delete env[k];
    }
  }
  return env;
}

// Runs inferbox without blocking the event loop (the hub lives in this process).
function start(args, env = {}) {
  const child = spawn(serverBinary(), args, { env: baseEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  const done = new Promise((resolve) => {
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  done.finally(() => clearTimeout(timer));
  return { child, done, stderrSoFar: () => stderr };
}

const run = (args, env) => start(args, env).done;

async function ok(args, env) {
  const r = await run(args, env);
  assert.equal(r.signal, null, `inferbox ${args.join(' ')} died of ${r.signal}\n${r.stderr}`);
  assert.equal(r.status, 0, `inferbox ${args.join(' ')} exited ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

// Exit 1 with one error line (progress and notices may precede it); returns that line.
async function fails(args, env) {
  const r = await run(args, env);
  assert.equal(r.signal, null, `inferbox ${args.join(' ')} died of ${r.signal}\n${r.stderr}`);
  assert.equal(r.status, 1, `inferbox ${args.join(' ')} exited ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.equal(r.stdout, '', `nothing on stdout after an error, got:\n${r.stdout}`);
  const errors = r.stderr.split('\n').filter((l) => l.startsWith('inferbox pull: ') || l.includes(' error '));
  assert.equal(errors.length, 1, `expected one error line, got:\n${r.stderr}`);
  return errors[0];
}

async function models() {
  const r = await ok(['models', '--json']);
  return JSON.parse(r.stdout);
}

function partFiles() {
  const dir = path.join(cache, 'downloads');
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.part')) : [];
}

function cdnRequests() {
  return hub.requests.filter((r) => r.host === 'cdn');
}

before(async () => {
  resetHub();
  const hubPort = await listen(hubServer, '127.0.0.1');
  const cdnPort = await listen(cdnServer, '127.0.0.2');
  hub.hubUrl = `http://127.0.0.1:${hubPort}`;
  hub.cdnUrl = `http://127.0.0.2:${cdnPort}`;
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-pull-'));
});

after(() => {
  hubServer.close();
  cdnServer.close();
  hubServer.closeAllConnections();
  cdnServer.closeAllConnections();
  fs.rmSync(work, { recursive: true, force: true });
});

beforeEach(() => {
  resetHub();
  cache = fs.mkdtempSync(path.join(work, 'cache-'));
});

// --- tests -----------------------------------------------------------------------------------------

describe('inferbox pull from a Hugging Face-style hub', () => {
  test('downloads through the redirect, checks the published SHA-256, lists the model; a second pull reuses it', async () => {
    const r = await ok(['pull', REF]);
    assert.match(r.stdout, new RegExp(`^pulled ${NAME} \\(1\\.1 MiB, sha256 ${MODEL_SHA}, matches the published hash\\) into `));
    assert.match(r.stderr, /^pull: downloaded 1\.1 MiB of 1\.1 MiB \(100%\)/m, r.stderr);
    const list = await models();
    assert.equal(list.length, 1);
    assert.equal(list[0].name, NAME);
    assert.equal(list[0].sha256, MODEL_SHA);
    assert.equal(list[0].size, MODEL_BYTES.length);
    assert.equal(list[0].source, REF);
    assert.equal(list[0].architecture, 'llama');
    assert.equal(sha256Of(list[0].file), MODEL_SHA);
    assert.deepEqual(hub.requests.map((q) => q.host), ['hub', 'cdn']);
    assert.deepEqual(partFiles(), [], 'no partial file is left');

    hub.requests = [];
    const again = await ok(['pull', REF]);
    assert.match(again.stdout, new RegExp(`^${NAME} is already in the cache`));
    assert.equal(hub.requests.length, 0, 'a cached model is not fetched again');
  });

  test('--json, --name, a revision and a file in a folder', async () => {
    hub.behaviour.revision = 'refs/pr/1';
    const r = await ok(['pull', 'hf://TheOrg/tiny-stories/folder/nested.gguf@refs/pr/1', '--name', 'mine/nested', '--json']);
    const out = JSON.parse(r.stdout);
    assert.equal(out.name, 'mine/nested');
    assert.equal(out.downloaded, true);
    assert.equal(out.verified, true);
    assert.equal(out.sha256, MODEL_SHA);
    assert.equal(out.url, `${hub.hubUrl}/TheOrg/tiny-stories/resolve/refs%2Fpr%2F1/folder/nested.gguf`);
    assert.equal(hub.requests[0].url, '/TheOrg/tiny-stories/resolve/refs%2Fpr%2F1/folder/nested.gguf');
  });

  test('a connection that dies mid-file is resumed with a Range request guarded by If-Range', async () => {
    hub.behaviour.dropAfter = 300_000;
    hub.behaviour.drops = 1;
    const r = await ok(['pull', REF]);
    assert.match(r.stderr, /attempt 1 failed .*retrying/, r.stderr);
    const cdn = cdnRequests();
    assert.equal(cdn.length, 2, JSON.stringify(cdn));
    assert.equal(cdn[0].range, null);
    assert.equal(cdn[1].range, 'bytes=300000-');
    assert.equal(cdn[1].ifRange, '"v1-stories"');
    assert.equal((await models())[0].sha256, MODEL_SHA);
  });

  test('a killed pull leaves nothing in the cache; the next pull resumes where it stopped', async () => {
    hub.behaviour.bytesPerSecond = 150_000;
    const first = start(['pull', REF]);
    const deadline = Date.now() + 20_000;
    let size = 0;
    while (Date.now() < deadline) {
      const parts = partFiles();
      size = parts.length ? fs.statSync(path.join(cache, 'downloads', parts[0])).size : 0;
      if (size >= 200_000) {
        break;
      }
      await sleep(50);
    }
    assert.ok(size >= 200_000, `the download did not progress (${size} bytes)`);
    first.child.kill('SIGKILL');
    await first.done;
    assert.deepEqual(await models(), [], 'a killed pull shows no model');
    const kept = fs.statSync(path.join(cache, 'downloads', partFiles()[0])).size;
    assert.ok(kept >= 200_000 && kept < MODEL_BYTES.length, `partial file of ${kept} bytes`);

    hub.behaviour = {};
    hub.requests = [];
    const r = await ok(['pull', REF]);
    assert.match(r.stderr, new RegExp(`resuming a partial download at byte ${kept}`), r.stderr);
    assert.equal(cdnRequests()[0].range, `bytes=${kept}-`);
    const list = await models();
    assert.equal(list[0].sha256, MODEL_SHA);
    assert.deepEqual(partFiles(), []);
  });

  test('a file that changed upstream since the partial download starts over instead of splicing', async () => {
    hub.behaviour.dropAfter = 400_000;
    hub.behaviour.drops = 1;
    const first = await run(['pull', REF, '--max-attempts', '1']);
    assert.equal(first.status, 1, first.stderr);
    assert.match(first.stderr, /the partial file is kept; run the same command to resume/);
    // A new version of the file: different bytes, different ETag and published hash.
    hub.files.set('stories260K.gguf', { bytes: OTHER_BYTES, etag: '"v2-q8"' });
    hub.behaviour = {};
    hub.requests = [];
    const r = await ok(['pull', REF]);
    assert.equal(cdnRequests()[0].range, 'bytes=400000-');
    assert.equal(cdnRequests()[0].ifRange, '"v1-stories"');
    assert.match(r.stderr, /the server sent the whole file; the partial download is discarded/);
    const list = await models();
    assert.equal(list[0].sha256, crypto.createHash('sha256').update(OTHER_BYTES).digest('hex'));
    assert.equal(list[0].size, OTHER_BYTES.length);
  });

  test('503s are retried (Retry-After honoured) until the hub answers', async () => {
    hub.behaviour.hubFailures = 2;
    const r = await ok(['pull', REF]);
    assert.equal((r.stderr.match(/HTTP 503 from 127\.0\.0\.1:\d+: busy\); retrying/g) ?? []).length, 2, r.stderr);
    assert.equal((await models())[0].sha256, MODEL_SHA);
  });

  test('a wrong published hash, or a wrong --sha256, discards the file', async () => {
    hub.behaviour.wrongHash = true;
    const line = await fails(['pull', REF]);
    assert.match(line, new RegExp(`SHA-256 mismatch for .*: the source publishes ${'ab'.repeat(32)}, the download has ${MODEL_SHA}; the file was discarded`));
    assert.deepEqual(await models(), []);
    assert.deepEqual(partFiles(), []);

    hub.behaviour = {};
    const line2 = await fails(['pull', REF, '--sha256', 'CD'.repeat(32)]);
    assert.match(line2, new RegExp(`--sha256 expects ${'cd'.repeat(32)}`));
    assert.deepEqual(await models(), []);
    const r = await ok(['pull', REF, '--sha256', MODEL_SHA.toUpperCase()]);
    assert.match(r.stdout, /matches the published hash/);
    assert.match(await fails(['pull', REF, '--sha256', 'xyz', '--name', 'other']), /--sha256 must be 64 hexadecimal digits/);
  });

  test('a gated repository: 401 names HF_TOKEN; with the token it works, and the CDN never sees it', async () => {
    hub.behaviour.token = 's3cret-token';
    const line = await fails(['pull', REF]);
    assert.match(line, /HTTP 401 from 127\.0\.0\.1:\d+: .*Invalid credentials.* \(no token was sent\); for a gated or private repository set HF_TOKEN/);
    const wrong = await fails(['pull', REF], { HF_TOKEN: 'nope' });
    assert.match(wrong, /the token was refused.*check that HF_TOKEN has access to TheOrg\/tiny-stories/);

    hub.requests = [];
    await ok(['pull', REF], { HF_TOKEN: 's3cret-token' });
    const [toHub, toCdn] = hub.requests;
    assert.equal(toHub.authorization, 'Bearer s3cret-token');
    assert.equal(toCdn.host, 'cdn');
    assert.equal(toCdn.authorization, null, 'the token must not follow the redirect to another host');
  });

  test('the token also comes from $HF_HOME/token, as huggingface-cli login leaves it', async () => {
    hub.behaviour.token = 'from-file';
    const home = fs.mkdtempSync(path.join(work, 'hfhome-'));
    fs.writeFileSync(path.join(home, 'token'), 'from-file\n');
    await ok(['pull', REF], { HF_HOME: home });
  });

  test('404, a file that is not GGUF, bad references: one clear error, nothing cached', async () => {
    assert.match(await fails(['pull', 'hf://TheOrg/tiny-stories/missing.gguf']),
      /not found: http:\/\/127\.0\.0\.1:\d+\/TheOrg\/tiny-stories\/resolve\/main\/missing\.gguf \(HTTP 404 from 127\.0\.0\.1:\d+: Entry not found\)/);
    const html = await fails(['pull', 'hf://TheOrg/tiny-stories/not-a-model.gguf']);
    assert.match(html, /the file downloaded from .*not-a-model\.gguf was not added: .*(magic|GGUF)/i);
    assert.match(await fails(['pull', 'ftp://example.com/x.gguf']), /ftp/);
    assert.match(await fails(['pull', 'hf://TheOrg/../x.gguf']), /hf:\/\//);
    const local = path.join(work, 'local.gguf');
    fs.writeFileSync(local, MODEL_BYTES);
    assert.match(await fails(['pull', local]), /inferbox import adds a local file/);
    assert.deepEqual(await models(), []);
    assert.deepEqual(partFiles(), []);
  });

  test('a name already used by a model from elsewhere is refused, naming both sources', async () => {
    await ok(['import', modelPath(MODELS.plain), '--name', NAME]);
    const line = await fails(['pull', REF]);
    assert.match(line, new RegExp(`the cache already has a model named '${NAME}' from /.*stories260K\\.gguf, not from ${REF.replace(/[/.]/g, '\\$&')}`));
    assert.equal(hub.requests.length, 0);
  });

  test('--offline and INFERBOX_OFFLINE=1 never touch the network and say what they would fetch', async () => {
    for (const [args, env] of [[['pull', REF, '--offline'], {}], [['pull', REF], { INFERBOX_OFFLINE: '1' }]]) {
      const line = await fails(args, env);
      assert.match(line, new RegExp(`offline .*model '${NAME}' is not in the cache at ${cache.replace(/[/.]/g, '\\$&')} and would be downloaded from http://127\\.0\\.0\\.1:\\d+/TheOrg/tiny-stories/resolve/main/stories260K\\.gguf`));
    }
    assert.equal(hub.requests.length, 0);
    await ok(['pull', REF]);
    hub.requests = [];
    const r = await ok(['pull', REF, '--offline']);
    assert.match(r.stdout, /is already in the cache/);
    assert.equal(hub.requests.length, 0);
  });

  test('two pulls of the same file at once: one downloads, the other waits and reuses it', async () => {
    hub.behaviour.bytesPerSecond = 1_000_000;
    const a = start(['pull', REF]);
    await sleep(300);
    const b = start(['pull', REF]);
    const [ra, rb] = await Promise.all([a.done, b.done]);
    assert.equal(ra.status, 0, ra.stderr);
    assert.equal(rb.status, 0, rb.stderr);
    const outs = [ra.stdout, rb.stdout].sort();
    assert.match(outs[0], new RegExp(`^${NAME} is already in the cache`));
    assert.match(outs[1], /^pulled /);
    assert.match(rb.stderr, /another pull of .* is running; waiting for it/);
    assert.equal(cdnRequests().length, 1, 'the file was downloaded once');
    assert.equal((await models())[0].sha256, MODEL_SHA);
  });
});

describe('serve --model with a cached name or a reference', () => {
  test('serve NAME serves the cached model under its name; serve hf://… pulls first, then serves offline too', async () => {
    await ok(['pull', REF]);
    hub.requests = [];
    const env = { INFERBOX_CACHE: cache, HF_ENDPOINT: hub.hubUrl, INFERBOX_OFFLINE: '1' };
    for (const model of [NAME, REF]) {
      const server = await startServer({ model: null, args: ['--model', model], env });
      try {
        const models = await (await fetch(`${server.url}/v1/models`)).json();
        assert.equal(models.data[0].id, NAME);
        const res = await postJson(`${server.url}/v1/completions`, {
          model: NAME, prompt: 'Once upon a time', max_tokens: 57, temperature: 0,
        });
        assert.equal(res.status, 200);
        assert.equal((ONCE + res.body.choices[0].text).trim(), README_REFERENCE.trim());
      } finally {
        await server.stop();
      }
    }
    assert.equal(hub.requests.length, 0, 'serving cached models needs no network');
  });

  test('serve hf://… with an empty cache downloads the model, then serves it', async () => {
    const env = { INFERBOX_CACHE: cache, HF_ENDPOINT: hub.hubUrl };
    const server = await startServer({ model: null, args: ['--model', REF], env });
    try {
      assert.equal(server.log().includes('downloaded 1.1 MiB'), true, server.log());
      const res = await postJson(`${server.url}/v1/completions`, { prompt: 'Once upon a time', max_tokens: 57, temperature: 0 });
      assert.equal((ONCE + res.body.choices[0].text).trim(), README_REFERENCE.trim());
    } finally {
      await server.stop();
    }
    assert.equal((await models())[0].name, NAME);
  });

  test('serve with an uncached name, or offline with an uncached reference, exits 1 saying what is missing', async () => {
    const env = baseEnv({ INFERBOX_OFFLINE: '1' });
    for (const [model, pattern] of [
      ['nobody/nothing', /model 'nobody\/nothing' is not in the cache .*inferbox pull/],
      [REF, /offline .*would be downloaded from http:\/\/127\.0\.0\.1/],
    ]) {
      const child = spawn(serverBinary(), ['serve', '--model', model, '--port', '0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d) => { err += d; });
      child.stdout.on('data', (d) => { err += d; });
      const code = await new Promise((resolve) => child.on('close', (c) => resolve(c)));
      assert.equal(code, 1, err);
      assert.match(err, pattern);
    }
    assert.equal(hub.requests.length, 0);
  });
});

// Start remote, move home (docs/routing.md): a local-first route names a source for a model this
// server does not have; while it downloads (throttled here), its requests run on a remote backend;
// once it is verified and loaded, they run here. A restart finds it in the cache.
describe('serve --route MODEL=local-first;pull=REF', () => {
  const greedy = { prompt: ONCE, max_tokens: 24, temperature: 0 };

  async function modelEntry(server, id) {
    const r = await getJson(`${server.url}/v1/models`);
    return r.body.data.find((m) => m.id === id);
  }

  async function until(what, fn, limitMs = 30_000) {
    const end = Date.now() + limitMs;
    for (;;) {
      const v = await fn();
      if (v) {
        return v;
      }
      assert.ok(Date.now() < end, `timed out waiting for ${what}`);
      await sleep(100);
    }
  }

  test('requests run remotely while the model downloads, and here once it is loaded', async () => {
    const remote = await startServer({ model: null, args: ['--model', `tiny=${modelPath(MODELS.plain)}`] });
    let open;
    hub.behaviour.gate = new Promise((resolve) => { open = resolve; }); // the first 16 KiB, then a pause
    const env = { INFERBOX_CACHE: cache, HF_ENDPOINT: hub.hubUrl };
    const route = ['--backend', `b1=${remote.url}/v1;models=tiny`, '--route', `tiny=local-first;pull=${REF}`];
    let router = await startServer({ model: MODELS.chatml, args: route, env });
    try {
      const client = openaiClient(router);
      const reference = (await openaiClient(remote).completions.create({ model: 'tiny', ...greedy })).choices[0].text;

      const pulling = await until('the pull to start', async () => {
        const m = await modelEntry(router, 'tiny');
        return m?.status === 'pulling' && m.pull.received_bytes > 0 ? m : null;
      });
      assert.equal(pulling.ready, true, 'servable remotely while it downloads');
      assert.equal(pulling.placements[0].backend, 'local');
      assert.equal(pulling.placements[0].state, 'pulling');
      assert.equal(pulling.pull.total_bytes, MODEL_BYTES.length);
      assert.ok(pulling.pull.received_bytes < MODEL_BYTES.length);
      assert.match(pulling.status_detail, /not on this server yet \(downloading: \d+ % of 1 MiB from hf:\/\//);
      assert.deepEqual(pulling.placements.slice(1).map((p) => p.backend), ['b1']);

      const during = await client.completions.create({ model: 'tiny', ...greedy }).withResponse();
      assert.equal(during.response.headers.get('x-inferbox-backend'), 'b1');
      assert.equal(during.data.choices[0].text, reference);

      // A request that may not leave the box is told why it cannot run here yet.
      const pinned = await postJson(`${router.url}/v1/completions`, { model: 'tiny', ...greedy },
        { headers: { 'X-Inferbox-Placement': 'local-only' } });
      assert.equal(assertErrorShape(pinned, 503).code, 'model_pulling');
      assert.match(pinned.body.error.message, /the model 'tiny' is not on this server yet/);

      const metrics = await (await fetch(`${router.url}/metrics`)).text();
      assert.match(metrics, /^inferbox_model_pull_received_bytes\{model="tiny"\} [1-9]/m);
      assert.match(metrics, new RegExp(`^inferbox_model_pull_size_bytes\\{model="tiny"\\} ${MODEL_BYTES.length}$`, 'm'));

      open();
      await until('the model to come home', async () => (await modelEntry(router, 'tiny'))?.status === 'loaded');
      const home = await client.completions.create({ model: 'tiny', ...greedy }).withResponse();
      assert.equal(home.response.headers.get('x-inferbox-backend'), 'local');
      assert.equal(home.response.headers.get('x-inferbox-route'), 'local');
      assert.equal(home.data.choices[0].text, reference, 'the same model gives the same greedy text here');
      assert.match(router.log(), /model 'tiny' pulled and loaded in [\d.]+ s: its requests run here now/);
      assert.match(await (await fetch(`${router.url}/metrics`)).text(),
        /^inferbox_model_pulls_total\{model="tiny",outcome="pulled"\} 1$/m);
      assert.equal((await models())[0].name, NAME, 'the pull landed in the cache');
      assert.equal((await models())[0].sha256, MODEL_SHA);

      // Restarted, it finds the model in the cache: no download, served here at once.
      await router.stop();
      hub.requests = [];
      router = await startServer({ model: MODELS.chatml, args: route, env });
      assert.match(router.log(), /model 'tiny' \(hf:\/\/[^)]+\) is in the cache: it is served here/);
      const again = await openaiClient(router).completions.create({ model: 'tiny', ...greedy }).withResponse();
      assert.equal(again.response.headers.get('x-inferbox-backend'), 'local');
      assert.equal(hub.requests.length, 0);
    } finally {
      open();
      await router.stop();
      await remote.stop();
    }
  });

  test('a pull that cannot succeed leaves the model remote and says why; a bad route is refused at start', async () => {
    const remote = await startServer({ model: null, args: ['--model', `tiny=${modelPath(MODELS.plain)}`] });
    const env = { INFERBOX_CACHE: cache, HF_ENDPOINT: hub.hubUrl };
    const missing = 'hf://TheOrg/tiny-stories/missing.gguf';
    const router = await startServer({
      model: MODELS.chatml, env, args: ['--backend', `b1=${remote.url}/v1;models=tiny`, '--route', `tiny=local-first;pull=${missing}`],
    });
    try {
      const failed = await until('the pull to fail', async () => {
        const m = await modelEntry(router, 'tiny');
        return m?.status === 'failed' ? m : null;
      });
      assert.match(failed.error, /the model 'tiny' could not be pulled to this server: .*404/);
      const r = await openaiClient(router).completions.create({ model: 'tiny', ...greedy }).withResponse();
      assert.equal(r.response.headers.get('x-inferbox-backend'), 'b1');
      assert.match(router.log(), /pulling hf:\/\/TheOrg\/tiny-stories\/missing\.gguf failed for good/);
    } finally {
      await router.stop();
      await remote.stop();
    }
    const bad = await run(['serve', '--model', modelPath(MODELS.plain), '--port', '0', '--route', 'tiny=remote-only;pull=' + REF]);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /--route tiny=remote-only;pull=hf:.*: pull= needs a local-first \(or auto\) route/);
  });
});

function sha256Of(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}
