// Test harness for the inferbox integration tier: starts the real server binary on a free port,
// captures its log, waits until it is ready, and stops it. Also small helpers shared by the
// test files (JSON requests, server-sent-event parsing, the OpenAI client, health checks).
//
// Environment:
//   INFERBOX_BIN          the server binary (default: <repo>/build/inferbox)
//   INFERBOX_TEST_MODELS  folder holding stories260K.gguf and stories260K-chatml.gguf (required)

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';

import OpenAI from 'openai';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..', '..');

export const MODELS = {
  plain: 'stories260K.gguf', // no chat template
  chatml: 'stories260K-chatml.gguf', // ChatML chat template
};

const READY_TIMEOUT_MS = 60_000;
// No request in these tests takes more than a few seconds; a server that does not answer fails
// the test after this long instead of after undici's 300 s header timeout.
export const REQUEST_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 10_000;
const LOG_LIMIT_BYTES = 4 << 20;

export function serverBinary() {
  const bin = process.env.INFERBOX_BIN || path.join(repoRoot, 'build', 'inferbox');
  if (!fs.existsSync(bin)) {
    throw new Error(
      `inferbox server binary not found at ${bin}: build the project first ` +
        '(scripts/setup.sh) or point INFERBOX_BIN at the binary',
    );
  }
  return bin;
}

// The inferbox CLI run to its end (a command, not a server), with `env` over this process's
// environment. A spawn failure (a missing binary, the timeout) throws.
export function runCli(args, { env = {}, timeout = 30_000 } = {}) {
  const res = spawnSync(serverBinary(), args, { env: { ...process.env, ...env }, encoding: 'utf8', timeout });
  if (res.error) {
    throw new Error(`inferbox ${args.join(' ')}: ${res.error.message}`);
  }
  return res;
}

// runCli that must exit 0, not by a signal; returns the result.
export function cliOk(args, options) {
  const res = runCli(args, options);
  assert.equal(res.signal, null, `inferbox ${args.join(' ')} died of ${res.signal}\n${res.stderr}`);
  assert.equal(res.status, 0, `inferbox ${args.join(' ')} exited ${res.status}\n${res.stderr}`);
  return res;
}

// The build mode of the binary under test: 'asan' (ASan+UBSan, scripts/test.sh --sanitize),
// 'tsan', or 'plain'. Read from the libraries the binary links, so it holds whatever built it.
let buildModeCache;
export function buildMode() {
  if (buildModeCache === undefined) {
    const ldd = spawnSync('ldd', [serverBinary()], { encoding: 'utf8' });
    const out = ldd.stdout ?? '';
    buildModeCache = /libtsan\.so/.test(out) ? 'tsan' : /lib(asan|ubsan)\.so/.test(out) ? 'asan' : 'plain';
  }
  return buildModeCache;
}

// A wall-clock bound for the build under test. The bounds in the tests are calibrated on the
// plain (optimized) build; ASan+UBSan runs inferbox's own code 2-3x slower (measured on the
// 1,000-connection burst: 429 p50 1,389 ms against ~500 ms), so a sanitizer build gets 3x the
// time. What the bound means (the server answers without waiting for the engine, a slot is freed
// promptly) holds in every mode; only the constant scales.
export const SLOWDOWN = { plain: 1, asan: 3, tsan: 5 };
export function timeBound(ms) {
  return ms * SLOWDOWN[buildMode()];
}

// Memory that the allocator of a sanitizer build keeps on purpose and a plain build returns:
// ASan's quarantine holds freed blocks (256 MiB by default, ASAN_OPTIONS quarantine_size_mb) so
// use-after-free is caught. A bound on RSS growth adds it; 0 on the plain build.
export function allocatorSlackKiB() {
  return buildMode() === 'asan' ? 256 * 1024 : 0;
}

// Absolute path of a test model. Missing models are a hard error, never a silent skip.
export function modelPath(name) {
  if (path.isAbsolute(name)) {
    if (!fs.existsSync(name)) {
      throw new Error(`test model ${name} does not exist`);
    }
    return name;
  }
  const dir = process.env.INFERBOX_TEST_MODELS;
  if (!dir) {
    throw new Error(
      'INFERBOX_TEST_MODELS is not set: point it at the folder holding the test models ' +
        `(${Object.values(MODELS).join(', ')}), e.g. INFERBOX_TEST_MODELS=/work/shared/models`,
    );
  }
  const file = path.resolve(dir, name);
  if (!fs.existsSync(file)) {
    throw new Error(`test model ${name} not found in INFERBOX_TEST_MODELS=${dir} (looked for ${file})`);
  }
  return file;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Children still running when this process exits are killed, so a crashed test never leaves a
// server behind.
const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

// Starts `inferbox serve` and resolves once GET /v1/health/ready answers 200.
//   model:    file name inside INFERBOX_TEST_MODELS, or an absolute path; null: args has --model
//   parallel: adds --parallel N
//   args:     further command-line arguments
//   env:      extra environment variables for the server process
//   host:     the address to listen on and to reach it at (default 127.0.0.1)
//   prefix:   a command that runs the server, e.g. ['ip', 'netns', 'exec', 'NS'] (it must exec it,
//             so that signals reach the server itself)
// Returns { url, port, log(), logSince(mark), mark(), exited, stop() }.
const dataDirs = [];
process.on('exit', () => {
  for (const d of dataDirs) {
    fs.rmSync(d, { recursive: true, force: true });
  }
});

export async function startServer({ model = MODELS.plain, parallel, args = [], env = {}, host = '127.0.0.1', prefix = [] } = {}) {
  const bin = serverBinary();
  const port = await freePort();
  // model: null leaves --model to `args` (a cached name, an hf:// reference).
  const argv = ['serve', ...(model === null ? [] : ['--model', modelPath(model)]), '--host', host, '--port', String(port)];
  if (parallel !== undefined) {
    argv.push('--parallel', String(parallel));
  }
  argv.push(...args.map(String));

  // Each server keeps its state (stored Responses) in a folder of its own unless the test names one.
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-data-'));
  dataDirs.push(dataDir);
  const child = spawn(prefix.length ? prefix[0] : bin, [...prefix.slice(1), ...(prefix.length ? [bin] : []), ...argv], {
    env: { INFERBOX_DATA: dataDir, ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);

  let logText = `$ ${[...prefix, bin, ...argv].join(' ')}\n`;
  let dropped = 0;
  const append = (chunk) => {
    logText += chunk.toString('utf8');
    if (logText.length > LOG_LIMIT_BYTES) {
      const cut = logText.length - LOG_LIMIT_BYTES / 2;
      dropped += cut;
      logText = logText.slice(cut);
    }
  };
  child.stdout.on('data', append);
  child.stderr.on('data', append);

  let exitInfo = null;
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      running.delete(child);
      resolve(exitInfo);
    });
  });
  let spawnError = null;
  child.on('error', (err) => {
    spawnError = err;
  });

  const url = `http://${host}:${port}`;
  const server = {
    url,
    port,
    pid: child.pid,
    exited,
    get exitInfo() {
      return exitInfo;
    },
    log() {
      return (dropped ? `[... ${dropped} earlier log characters dropped ...]\n` : '') + logText;
    },
    // Position in the log, to print only what a test produced.
    mark() {
      return dropped + logText.length;
    },
    logSince(mark) {
      const start = Math.max(0, mark - dropped);
      return logText.slice(start);
    },
    async stop() {
      if (exitInfo) {
        return exitInfo;
      }
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (!exitInfo) {
          append(`\n[harness] server did not exit ${STOP_GRACE_MS} ms after SIGTERM: sending SIGKILL\n`);
          child.kill('SIGKILL');
        }
      }, STOP_GRACE_MS);
      const info = await exited;
      clearTimeout(timer);
      return info;
    },
  };

  const deadline = Date.now() + READY_TIMEOUT_MS;
  let lastProblem = 'no answer yet';
  for (;;) {
    if (spawnError) {
      throw new Error(`could not start ${bin}: ${spawnError.message}\n--- server log ---\n${server.log()}`);
    }
    if (exitInfo) {
      throw new Error(
        `inferbox exited before it was ready (code ${exitInfo.code}, signal ${exitInfo.signal})\n` +
          `--- server log ---\n${server.log()}`,
      );
    }
    try {
      const res = await fetch(`${url}/v1/health/ready`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === 200) {
        return server;
      }
      lastProblem = `GET /v1/health/ready answered ${res.status}`;
    } catch (err) {
      lastProblem = `GET /v1/health/ready failed: ${err.cause?.code ?? err.message}`;
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(
        `inferbox was not ready within ${READY_TIMEOUT_MS / 1000} s (${lastProblem})\n` +
          `--- server log ---\n${server.log()}`,
      );
    }
    await sleep(100);
  }
}

// Starts one server for the enclosing test file or describe() block (before/after hooks).
// `ctx.server` is set once it is ready; `ctx.wrap(fn)` makes a test body that prints the
// server's log of that test when the test fails.
export function useServer(options) {
  const ctx = {
    server: null,
    wrap(fn) {
      return async (t) => {
        const mark = ctx.server ? ctx.server.mark() : 0;
        try {
          await fn(t);
        } catch (err) {
          if (ctx.server) {
            const exited = ctx.server.exitInfo
              ? `server EXITED (code ${ctx.server.exitInfo.code}, signal ${ctx.server.exitInfo.signal})\n`
              : '';
            process.stderr.write(
              `\n--- inferbox log during failed test "${t.name}" ---\n${exited}` +
                `${tail(ctx.server.logSince(mark), 16_000)}\n--- end of log ---\n`,
            );
          }
          throw err;
        }
      };
    },
  };
  before(async () => {
    ctx.server = await startServer(options);
  });
  after(async () => {
    if (ctx.server) {
      await ctx.server.stop();
    }
  });
  return ctx;
}

function tail(text, max) {
  return text.length > max ? `[...]\n${text.slice(text.length - max)}` : text;
}

// --- HTTP helpers -------------------------------------------------------------------------------

// POST a JSON body (an object, or a raw string sent as-is); resolves { status, headers, body,
// text } where body is the parsed JSON or null when the answer is not JSON.
export async function postJson(url, body, { headers = {}, signal } = {}) {
  return timed(`POST ${url}`, signal, async (sig) => {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
      signal: sig,
    });
    return readResponse(res);
  });
}

export async function getJson(url, { method = 'GET' } = {}) {
  return timed(`${method} ${url}`, undefined, async (sig) => readResponse(await fetch(url, { method, signal: sig })));
}

// Runs fn(signal) with REQUEST_TIMEOUT_MS (or the caller's signal); a timeout becomes an error
// that says which request got no answer.
async function timed(what, signal, fn) {
  const sig = signal ?? AbortSignal.timeout(REQUEST_TIMEOUT_MS);
  try {
    return await fn(sig);
  } catch (err) {
    if (sig.aborted && err?.name === 'TimeoutError') {
      throw new Error(`${what}: no complete answer within the time limit (server hung?)`, { cause: err });
    }
    throw err;
  }
}

async function readResponse(res) {
  const text = await res.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = null;
  }
  return { status: res.status, headers: res.headers, body, text };
}

// Parses a whole text/event-stream body into the `data:` payloads of its events, in order.
export function parseSse(text) {
  const events = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    const data = block
      .split(/\r?\n/)
      .filter((line) => line.startsWith('data:'))
      .map((line) => line.slice(5).replace(/^ /, ''));
    if (data.length) {
      events.push(data.join('\n'));
    }
  }
  return events;
}

// POSTs a streaming request and returns { status, headers, events, chunks, text } where events
// are the raw data payloads (the last should be "[DONE]") and chunks the parsed JSON objects
// before [DONE].
export async function postStream(url, body) {
  const { res, text } = await timed(`POST ${url} (stream)`, undefined, async (sig) => {
    const r = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: sig,
    });
    return { res: r, text: await r.text() };
  });
  if (res.status !== 200) {
    return { status: res.status, headers: res.headers, events: [], chunks: [], text };
  }
  const events = parseSse(text);
  const chunks = events.filter((e) => e !== '[DONE]').map((e) => JSON.parse(e));
  return { status: res.status, headers: res.headers, events, chunks, text };
}

// POSTs a request over a raw socket (Connection: close, so the answer ends with the socket) and
// calls onFirstEvent(socket) synchronously in the event-loop turn that brings the first streamed
// event, while the stream is certainly still running (a fetch abort goes through several turns
// first, and on a fast machine a 200-token stream of the tiny model is over by then). Resolves
// with every byte received when the socket closes.
export function streamRaw(url, body, onFirstEvent, headers = {}) {
  const u = new URL(url);
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(u.port), u.hostname);
    let got = '';
    let fired = false;
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`POST ${url}: no complete answer within ${REQUEST_TIMEOUT_MS} ms:\n${got.slice(-2000)}`));
    }, REQUEST_TIMEOUT_MS);
    sock.on('connect', () => {
      const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
      sock.write(`POST ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\nConnection: close\r\n${extra}` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`);
    });
    sock.on('data', (d) => {
      got += d;
      if (!fired && got.includes('data: {')) {
        fired = true;
        onFirstEvent(sock);
      }
    });
    sock.on('error', (err) => { clearTimeout(timer); reject(err); });
    sock.on('close', () => { clearTimeout(timer); resolve(got); });
  });
}

// streamRaw that resets the connection at the first streamed event: the client is gone while
// its request runs. Resolves with the bytes received before the reset.
export async function streamThenDisconnect(url, body) {
  const got = await streamRaw(url, body, (sock) => sock.resetAndDestroy());
  if (!got.includes('data: {')) {
    throw new Error(`POST ${url}: closed before a streamed event:\n${got}`);
  }
  return got;
}

// Asserts the OpenAI error shape {"error":{"message","type","param","code"}}.
export function assertErrorShape(res, status) {
  assert.equal(res.status, status, `expected HTTP ${status}, got ${res.status}: ${res.text}`);
  assert.ok(res.body && typeof res.body === 'object', `error body is not JSON: ${res.text}`);
  const err = res.body.error;
  assert.ok(err && typeof err === 'object', `error body has no "error" object: ${res.text}`);
  assert.equal(typeof err.message, 'string', `error.message is not a string: ${res.text}`);
  assert.ok(err.message.length > 0, `error.message is empty: ${res.text}`);
  assert.equal(typeof err.type, 'string', `error.type is not a string: ${res.text}`);
  assert.ok('param' in err, `error.param is missing: ${res.text}`);
  assert.ok('code' in err, `error.code is missing: ${res.text}`);
  return err;
}

// The id of the (single) served model, from GET /v1/models.
export async function modelId(server) {
  const res = await getJson(`${server.url}/v1/models`);
  assert.equal(res.status, 200, `GET /v1/models: ${res.status} ${res.text}`);
  assert.ok(res.body.data.length >= 1, `GET /v1/models lists no model: ${res.text}`);
  return res.body.data[0].id;
}

// The official OpenAI SDK pointed at a server; no retries so status codes reach the test as-is.
export function openaiClient(server, options = {}) {
  return new OpenAI({
    apiKey: 'sk-inferbox-test',
    baseURL: `${server.url}/v1`,
    maxRetries: 0,
    timeout: REQUEST_TIMEOUT_MS,
    ...options,
  });
}

// The server is still healthy: ready answers 200 and a short greedy completion succeeds.
export async function assertHealthy(server) {
  assert.equal(server.exitInfo, null, `server exited: ${JSON.stringify(server.exitInfo)}`);
  const ready = await getJson(`${server.url}/v1/health/ready`);
  assert.equal(ready.status, 200, 'GET /v1/health/ready after the previous requests');
  const model = await modelId(server);
  const res = await postJson(`${server.url}/v1/completions`, {
    model,
    prompt: 'Once upon a time',
    max_tokens: 8,
    temperature: 0,
  });
  assert.equal(res.status, 200, `normal completion after the previous requests: ${res.text}`);
  assert.equal(res.body.choices.length, 1);
  assert.equal(typeof res.body.choices[0].text, 'string');
  assert.ok(res.body.choices[0].text.length > 0, 'normal completion returned empty text');
  assert.equal(res.body.usage.completion_tokens, 8);
}

export const ONCE = 'Once upon a time';

// Reference outputs of stories260K.gguf (greedy), from /work/shared/models/README.md and checked
// against llama.cpp's own server built from the pinned llama.cpp (scripts/deps.env).
//
// The README's line is the prompt plus the first 57 generated tokens (the 58th is "\n"); a
// 64-token completion goes on past it (GREEDY_64).
export const README_REFERENCE =
  ' Once upon a time, there was a little girl named Lily. She loved to play outside in the park.' +
  ' One day, she saw a big, red ball. She wanted to play with it, but it was too high.';
// The first 64 generated tokens for prompt "Once upon a time" (max_tokens 64, temperature 0).
export const GREEDY_64 =
  ', there was a little girl named Lily. She loved to play outside in the park.' +
  ' One day, she saw a big, red ball. She wanted to play with it, but it was too high.' +
  "\nLily's mom said";
// BOS + " Once" + " upon" + " a" + " time" (llama.cpp tokenizer on stories260K.gguf).
export const ONCE_PROMPT_IDS = [1, 403, 407, 261, 378];
export const ONCE_PROMPT_TOKENS = ONCE_PROMPT_IDS.length;

// ChatML model: what llama.cpp's server answers for [{"role":"user","content":"Hi"}],
// max_tokens 16, temperature 0, and the prompt it renders (README) and its token count
// (BOS + 41 text tokens).
export const CHATML_HI_PROMPT = '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n';
export const CHATML_HI_16 = '"Here?" Annabyed.\n';
export const CHATML_HI_PROMPT_TOKENS = 42;
