// TLS and mutual TLS: certificates made here with the openssl CLI (a test CA, a server
// certificate for 127.0.0.1, a client certificate), requests over node's https module.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { MODELS, ONCE, freePort, modelPath, serverBinary } from './harness.mjs';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-tls-'));
const f = (name) => path.join(dir, name);

function openssl(...args) {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
}

function makeCerts() {
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=inferbox test CA',
    '-keyout', 'ca.key', '-out', 'ca.pem');
  fs.writeFileSync(f('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', 'server.key', '-out', 'server.csr');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2',
    '-extfile', 'server.ext', '-out', 'server.pem');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=client', '-keyout', 'client.key', '-out', 'client.csr');
  openssl('x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2',
    '-out', 'client.pem');
  // A second CA the server does not trust, and a client certificate from it.
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=other CA',
    '-keyout', 'other-ca.key', '-out', 'other-ca.pem');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=intruder', '-keyout', 'intruder.key', '-out',
    'intruder.csr');
  openssl('x509', '-req', '-in', 'intruder.csr', '-CA', 'other-ca.pem', '-CAkey', 'other-ca.key', '-CAcreateserial',
    '-days', '2', '-out', 'intruder.pem');
}

function request(port, pathName, { method = 'GET', body, cert, key, ca = fs.readFileSync(f('ca.pem')) } = {}) {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1', port, path: pathName, method, ca, cert, key, timeout: 30_000,
      headers: body ? { 'content-type': 'application/json' } : {},
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

async function startTls(extra) {
  const port = await freePort();
  const child = spawn(serverBinary(), ['serve', '--model', modelPath(MODELS.plain), '--host', '127.0.0.1', '--port',
    String(port), '--ctx-size', '256', '--tls-cert', f('server.pem'), '--tls-key', f('server.key'), ...extra],
  { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const opts = extra.includes('--tls-client-ca')
    ? { cert: fs.readFileSync(f('client.pem')), key: fs.readFileSync(f('client.key')) } : {};
  for (let i = 0; i < 300; i++) {
    try {
      const r = await request(port, '/v1/health/ready', opts);
      if (r.status === 200) {
        return { port, child, exited, log: () => log };
      }
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  child.kill('SIGKILL');
  throw new Error(`TLS server not ready:\n${log}`);
}

before(() => makeCerts());
after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('HTTPS', () => {
  let srv;
  before(async () => {
    srv = await startTls([]);
  });
  after(async () => {
    srv?.child.kill('SIGTERM');
    assert.equal(await srv?.exited, 0, 'exit 0 after SIGTERM');
  });

  test('a completion over HTTPS, verified against the test CA', async () => {
    const r = await request(srv.port, '/v1/completions',
      { method: 'POST', body: { prompt: ONCE, max_tokens: 4, temperature: 0 } });
    assert.equal(r.status, 200, r.text);
    assert.equal(JSON.parse(r.text).usage.completion_tokens, 4);
    assert.match(srv.log(), /listening on https:\/\//);
  });

  test('a client that does not trust the certificate fails the handshake; plain HTTP gets no answer', async () => {
    await assert.rejects(request(srv.port, '/v1/health/live', { ca: fs.readFileSync(f('other-ca.pem')) }));
    await assert.rejects(fetch(`http://127.0.0.1:${srv.port}/v1/health/live`, { signal: AbortSignal.timeout(5000) }));
    const ok = await request(srv.port, '/v1/health/live');
    assert.equal(ok.status, 200, 'the server still serves after bad handshakes');
  });
});

describe('mutual TLS (--tls-client-ca)', () => {
  let srv;
  before(async () => {
    srv = await startTls(['--tls-client-ca', f('ca.pem')]);
  });
  after(async () => {
    srv?.child.kill('SIGTERM');
    await srv?.exited;
  });

  test('a client certificate from the CA is accepted; none, or one from another CA, is refused', async () => {
    const good = await request(srv.port, '/v1/models',
      { cert: fs.readFileSync(f('client.pem')), key: fs.readFileSync(f('client.key')) });
    assert.equal(good.status, 200, good.text);
    await assert.rejects(request(srv.port, '/v1/models'), 'no client certificate');
    await assert.rejects(request(srv.port, '/v1/models',
      { cert: fs.readFileSync(f('intruder.pem')), key: fs.readFileSync(f('intruder.key')) }), 'untrusted issuer');
  });

  test('a returning client resumes its TLS session (OpenSSL refuses that without a session context)', async () => {
    const opts = {
      host: '127.0.0.1', port: srv.port, ca: fs.readFileSync(f('ca.pem')), servername: 'localhost',
      cert: fs.readFileSync(f('client.pem')), key: fs.readFileSync(f('client.key')),
    };
    // One exchange on a raw TLS socket; resolves with the response head and the session to resume.
    const exchange = (session) => new Promise((resolve, reject) => {
      const sock = tls.connect({ ...opts, session });
      let got = '';
      let ticket = null;
      sock.on('session', (s) => { ticket = s; });
      sock.on('secureConnect', () => sock.write('GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
      sock.on('data', (d) => { got += d; });
      sock.on('end', () => resolve({ head: got.split('\r\n')[0], ticket, reused: sock.isSessionReused() }));
      sock.on('error', reject);
    });
    const first = await exchange(undefined);
    assert.equal(first.head, 'HTTP/1.1 200 OK');
    assert.ok(first.ticket, 'the server issued a session ticket');
    const second = await exchange(first.ticket);
    assert.equal(second.head, 'HTTP/1.1 200 OK');
    assert.equal(second.reused, true, 'the session was resumed');
  });
});

test('a missing or mismatched key is refused at start-up with the file named', () => {
  const r = execFileSyncStatus(['serve', '--model', modelPath(MODELS.plain), '--port', '0', '--tls-cert',
    f('server.pem'), '--tls-key', f('client.key')]);
  assert.equal(r.status, 1, r.output);
  assert.match(r.output, /client\.key/);
  const r2 = execFileSyncStatus(['serve', '--model', modelPath(MODELS.plain), '--port', '0', '--tls-cert',
    f('server.pem')]);
  assert.equal(r2.status, 1, r2.output);
  assert.match(r2.output, /--tls-key/);
});

function execFileSyncStatus(args) {
  try {
    const out = execFileSync(serverBinary(), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
    return { status: 0, output: out };
  } catch (err) {
    return { status: err.status, output: `${err.stdout}${err.stderr}` };
  }
}
