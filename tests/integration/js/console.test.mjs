// The web console: served by the binary (embedded files, strict CSP, caching, gzip, the bundle
// budget) and driven in headless Chromium (Debian's `chromium`, through puppeteer-core) against
// the real server and test model: no console errors, a streamed chat, stop freeing the slot,
// hostile model output rendered inert, conversations kept on the server per API key across a
// restart, a dashboard that moves under load, and phone and desktop screenshots. A reload keeps
// the open conversation (its id is in the address). The Agents view runs /v1/responses with the
// server's own tools (a SQLite database, a real MCP server) and shows the run as a live trace
// whose rows are checked against the sqlite3 shell. A team (--team) picked in the chat runs as a
// live trace tree (captain, steps, members, their tool calls), checked against the stored Response.
//
// The screenshots go to a temporary folder; INFERBOX_UPDATE_SCREENSHOTS=1 writes them to
// docs/images/ instead (what the README shows).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import zlib from 'node:zlib';

import puppeteer from 'puppeteer-core';

import { EVERYTHING_JS, makeShop, sqliteRows } from './agent-fixtures.mjs';
import { MODELS, modelPath, postJson, repoRoot, startServer, timeBound } from './harness.mjs';

const CHROMIUM = process.env.INFERBOX_CHROMIUM || '/usr/bin/chromium';
const KEY_A = 'console-key-alpha';
const KEY_B = 'console-key-bravo';
const BUDGET_GZIP_BYTES = 250 * 1024;

// GET with the raw bytes as they came over the wire (fetch would undo the gzip).
function rawGet(url, headers = {}, method = 'GET') {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

function authed(key) {
  return { authorization: `Bearer ${key}` };
}

async function getAuthed(url, key) {
  const res = await fetch(url, { headers: authed(key) });
  return { status: res.status, body: await res.json() };
}

// Polls fn until it returns a truthy value; fails naming `what` after `ms`.
async function until(what, fn, ms = timeBound(15_000)) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) {
      return last;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

async function runningNow(server, headers = authed(KEY_A)) {
  const text = await (await fetch(`${server.url}/metrics`, { headers })).text();
  const m = text.match(/^num_requests_running\{[^}]*\} (\S+)$/m);
  return m ? Number(m[1]) : NaN;
}

function launchBrowser() {
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
}

// What goes wrong on `page`, as lines in the returned array (a test expects it empty): every
// console error or warning and page error and, with `network`, every HTTP error answer and every
// failed request but those that `aborted(url)` says the test cancels on purpose.
function watchProblems(page, { network = true, aborted = () => false } = {}) {
  const problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warn' || m.type() === 'warning') {
      problems.push(`console.${m.type()}: ${m.text()}`);
    }
  });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  if (network) {
    page.on('response', async (r) => {
      if (r.status() >= 400) {
        problems.push(`HTTP ${r.status()} ${r.request().method()} ${r.url()}: ${(await r.text().catch(() => '')).slice(0, 300)}`);
      }
    });
    page.on('requestfailed', (r) => {
      if (!aborted(r.url())) {
        problems.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`);
      }
    });
  }
  return problems;
}

// A new page of `browser` at `url`, loaded until the network is idle, with its problems watched
// (`watch`: watchProblems' options). `key` goes into its session storage first (as the key form
// leaves it); `prepare(page)` runs before it loads.
async function openPage(browser, url, { viewport = { width: 1280, height: 800 }, key = null, prepare = null, ...watch } = {}) {
  const page = await browser.newPage();
  await page.setViewport(viewport);
  const problems = watchProblems(page, watch);
  if (prepare) {
    await prepare(page);
  }
  if (key) {
    await page.evaluateOnNewDocument((k) => sessionStorage.setItem('inferbox.apiKey', k), key);
  }
  await page.goto(url, { waitUntil: 'networkidle0' });
  return { page, problems };
}

describe('the console is served by the binary', () => {
  let server;
  let off;
  before(async () => {
    server = await startServer({ model: MODELS.chatml });
    off = await startServer({ model: MODELS.chatml, args: ['--no-console'] });
  });
  after(async () => {
    await server?.stop();
    await off?.stop();
  });

  test('the page: strict CSP, no inline script or style, revalidated; assets immutable and gzipped', async () => {
    const page = await rawGet(`${server.url}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers['content-type'], /^text\/html/);
    const csp = page.headers['content-security-policy'];
    assert.ok(csp, 'no Content-Security-Policy');
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(page.headers['x-content-type-options'], 'nosniff');
    assert.equal(page.headers['cache-control'], 'no-cache');
    const html = page.body.toString('utf8');
    for (const m of html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)) {
      assert.match(m[1], /\bsrc=/, `an inline script: ${m[0].slice(0, 80)}`);
      assert.equal(m[2].trim(), '');
    }
    assert.doesNotMatch(html, /<style\b|\sstyle=|\son[a-z]+=/i, 'inline style or event handler in index.html');

    // Revalidation: the ETag answers 304 with no body and no length; HEAD gives the headers only.
    const again = await rawGet(`${server.url}/`, { 'if-none-match': page.headers.etag });
    assert.equal(again.status, 304);
    assert.equal(again.body.length, 0);
    assert.equal(again.headers['content-length'], undefined);
    // Each encoding is its own representation with its own validator: the identity ETag does not
    // revalidate the gzip bytes, nor the other way round.
    const zipped = await rawGet(`${server.url}/`, { 'accept-encoding': 'gzip' });
    assert.equal(zipped.headers['content-encoding'], 'gzip');
    assert.notEqual(zipped.headers.etag, page.headers.etag);
    assert.equal((await rawGet(`${server.url}/`, { 'accept-encoding': 'gzip', 'if-none-match': page.headers.etag })).status, 200);
    assert.equal((await rawGet(`${server.url}/`, { 'if-none-match': zipped.headers.etag })).status, 200);
    assert.equal((await rawGet(`${server.url}/`, { 'accept-encoding': 'gzip', 'if-none-match': `"x", ${zipped.headers.etag}` })).status, 304);
    const head = await rawGet(`${server.url}/`, {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    assert.equal(Number(head.headers['content-length']), page.body.length);

    const assets = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]);
    assert.ok(assets.some((a) => a.endsWith('.js')), `no script asset in ${html}`);
    assert.ok(assets.some((a) => a.endsWith('.css')), `no style asset in ${html}`);
    for (const a of assets) {
      const plain = await rawGet(`${server.url}${a}`);
      assert.equal(plain.status, 200, a);
      assert.equal(plain.headers['content-encoding'], undefined);
      assert.match(plain.headers['cache-control'], /max-age=31536000, immutable/);
      const gz = await rawGet(`${server.url}${a}`, { 'accept-encoding': 'gzip, br' });
      assert.equal(gz.headers['content-encoding'], 'gzip', a);
      assert.ok(gz.body.length < plain.body.length, `${a}: gzip is not smaller`);
      assert.deepEqual(zlib.gunzipSync(gz.body), plain.body, `${a}: gzip differs from the file`);
      for (const accept of ['gzip;q=0', '*, gzip;q=0', 'GZIP; Q=0', 'br', '']) {
        const refused = await rawGet(`${server.url}${a}`, { 'accept-encoding': accept });
        assert.equal(refused.headers['content-encoding'], undefined, `Accept-Encoding: ${accept}`);
      }
      for (const accept of ['*', 'br;q=1, GZIP;q=0.5', 'identity;q=0.1, gzip']) {
        const taken = await rawGet(`${server.url}${a}`, { 'accept-encoding': accept });
        assert.equal(taken.headers['content-encoding'], 'gzip', `Accept-Encoding: ${accept}`);
      }
    }
    const missing = await rawGet(`${server.url}/assets/nope.js`);
    assert.equal(missing.status, 404);
  });

  test('the bundle budget: page and assets under 250 KB gzipped', async () => {
    const page = await rawGet(`${server.url}/`, { 'accept-encoding': 'gzip' });
    const html = zlib.gunzipSync(page.body).toString('utf8');
    let total = page.body.length;
    const sizes = { '/': page.body.length };
    for (const m of html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)) {
      const res = await rawGet(`${server.url}${m[1]}`, { 'accept-encoding': 'gzip' });
      sizes[m[1]] = res.body.length;
      total += res.body.length;
    }
    console.log(`console bundle, gzipped bytes: ${JSON.stringify(sizes)}; total ${total}`);
    assert.ok(total <= BUDGET_GZIP_BYTES, `the console is ${total} bytes gzipped; the budget is ${BUDGET_GZIP_BYTES}`);
  });

  test('--no-console: 404 at / and for the assets, the API unchanged', async () => {
    const res = await fetch(`${off.url}/`);
    assert.equal(res.status, 404);
    assert.match((await res.json()).error.message, /--no-console/);
    assert.equal((await fetch(`${off.url}/v1/models`)).status, 200);
  });
});

describe('the console in a browser', () => {
  let server;
  let browser;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-console-'));
  const shots = process.env.INFERBOX_UPDATE_SCREENSHOTS === '1'
    ? path.join(repoRoot, 'docs', 'images')
    : fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-console-shots-'));
  const serverArgs = ['--api-key', KEY_A, '--api-key', KEY_B, '--data-dir', dataDir, '--parallel', '2'];
  // Each engine step waits a little, so that a stream lasts long enough to watch and stop.
  const slow = { INFERBOX_FAILPOINT_STEP_DELAY_MS: '15' };

  before(async () => {
    server = await startServer({ model: MODELS.chatml, args: serverArgs, env: slow });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  // A page with `key` in its session storage (as the key form leaves it), recording every
  // console message, page error and failed request.
  // `stopping`: the test stops a chat stream on purpose, so an aborted chat request is expected;
  // nothing else may fail (a finished stream is read to its end, never cancelled).
  function open(key, hash = '#/chat', viewport = { width: 1280, height: 800 }, { stopping = false } = {}) {
    return openPage(browser, `${server.url}/${hash}`, { key, viewport, aborted: (url) => stopping && /chat\/completions/.test(url) });
  }

  async function send(page, text) {
    await page.waitForSelector('#composer');
    await page.click('#composer');
    await page.keyboard.type(text);
    await page.keyboard.press('Enter');
  }

  const assistantText = (page) =>
    page.$$eval('[data-role="assistant"] .message-body', (els) => (els.length ? els[els.length - 1].textContent : ''));

  test('with keys on, the page asks for a key and every API call carries it', async () => {
    const { page } = await open(null);
    await page.waitForSelector('#api-key', { visible: true });
    await page.type('#api-key', KEY_A);
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelectorAll('#model option').length > 0);
    const stored = await page.evaluate(() => ({
      session: sessionStorage.getItem('inferbox.apiKey'),
      local: JSON.stringify(localStorage),
    }));
    assert.equal(stored.session, KEY_A);
    assert.ok(!stored.local.includes(KEY_A), 'the key leaked into localStorage');
    await page.close();
  });

  test('loads with no console errors, streams a chat, and saves it on the server', async () => {
    const { page, problems } = await open(KEY_A);
    await page.waitForFunction(() => document.querySelectorAll('#model option').length > 0);
    await send(page, 'Hello there');
    // Streaming: the answer grows while the chat says it is streaming.
    await page.waitForSelector('#chat[data-streaming="true"]');
    const early = await until('the first tokens', async () => (await assistantText(page)) || null);
    await page.waitForSelector('#chat[data-streaming="false"]', { timeout: timeBound(30_000) });
    const final = await assistantText(page);
    assert.ok(final.length > early.length, `the answer did not grow: ${JSON.stringify(early)} -> ${JSON.stringify(final)}`);
    // The conversation is on the server, titled from the first message.
    const list = await until('the saved conversation', async () => {
      const r = await getAuthed(`${server.url}/v1/console/conversations`, KEY_A);
      return r.body.data?.length ? r.body.data : null;
    });
    assert.equal(list[0].title, 'Hello there');
    const conv = await getAuthed(`${server.url}/v1/console/conversations/${list[0].id}`, KEY_A);
    assert.deepEqual(conv.body.messages.map((m) => m.role), ['user', 'assistant']);
    assert.equal(conv.body.messages[1].content.length > 0, true);
    assert.deepEqual(problems, []);
    await page.close();
  });

  test('stop mid-stream cancels the request and frees its slot', async () => {
    const { page, problems } = await open(KEY_A, '#/chat', undefined, { stopping: true });
    await page.waitForFunction(() => document.querySelectorAll('#model option').length > 0);
    await send(page, 'Tell me a long story');
    await page.waitForSelector('#chat[data-streaming="true"]');
    await until('the first tokens', async () => (await assistantText(page)) || null);
    await until('the request running on the server', async () => (await runningNow(server)) >= 1);
    await page.click('#stop');
    await page.waitForSelector('#chat[data-streaming="false"]');
    await until('the running gauge back to 0', async () => (await runningNow(server)) === 0);
    const cancelled = await (await fetch(`${server.url}/metrics`, { headers: authed(KEY_A) })).text();
    assert.match(cancelled, /^inferbox_request_cancelled_total\{[^}]*\} [1-9]/m);
    assert.deepEqual(problems, []);
    await page.close();
  });

  test('hostile model output renders inert (structured output forces it)', async () => {
    const { page, problems } = await open(KEY_A);
    await page.waitForFunction(() => document.querySelectorAll('#model option').length > 0);
    const schema = {
      type: 'object',
      properties: {
        a: { const: '<img src=x onerror="window.__pwned=1">' },
        b: { const: '[click me](javascript:window.__pwned=2)' },
        c: { const: '<script>window.__pwned=3</script><a href="javascript:window.__pwned=4">x</a>' },
      },
      required: ['a', 'b', 'c'],
    };
    await page.click('#structured-toggle');
    await page.waitForSelector('#schema', { visible: true });
    await page.$eval('#schema', (el) => {
      el.value = '';
    });
    await page.type('#schema', JSON.stringify(schema));
    await send(page, 'Answer');
    await page.waitForSelector('#chat[data-streaming="false"] [data-role="assistant"] [data-validation]', {
      timeout: timeBound(30_000),
    });
    const seen = await page.evaluate(() => {
      const bodies = document.querySelectorAll('[data-role="assistant"] .message-body');
      const body = bodies[bodies.length - 1];
      return {
        text: body.textContent,
        imgs: body.querySelectorAll('img').length,
        scripts: body.querySelectorAll('script').length,
        badLinks: [...body.querySelectorAll('a')].filter((a) => !/^(https?:|mailto:|#)/.test(a.getAttribute('href') || '#')).length,
        handlers: [...body.querySelectorAll('*')].filter((e) => [...e.attributes].some((a) => a.name.startsWith('on'))).length,
        pwned: window.__pwned ?? null,
        validation: document.querySelectorAll('[data-role="assistant"] [data-validation]')[bodies.length - 1]?.dataset.validation,
      };
    });
    // The model's text is there, as text: markup and links never become elements.
    assert.ok(seen.text.includes('<img src=x onerror='), `the output is not shown as text: ${seen.text}`);
    assert.ok(seen.text.includes('<script>'), seen.text);
    assert.equal(seen.imgs, 0);
    assert.equal(seen.scripts, 0);
    assert.equal(seen.badLinks, 0);
    assert.equal(seen.handlers, 0);
    assert.equal(seen.pwned, null);
    assert.equal(seen.validation, 'valid');
    // Give an injected handler time to fire, had there been one.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await page.evaluate(() => window.__pwned ?? null), null);
    assert.deepEqual(problems, []);
    await page.close();
  });

  test('conversations survive a restart and one key never sees another\'s', async () => {
    const made = await postJson(`${server.url}/v1/console/conversations`, {
      title: 'Kept across restarts',
      messages: [{ role: 'user', content: 'remember me' }, { role: 'assistant', content: 'I will.' }],
    }, { headers: authed(KEY_A) });
    assert.equal(made.status, 200, made.text);
    await server.stop();
    server = await startServer({ model: MODELS.chatml, args: serverArgs, env: slow });

    const alpha = await open(KEY_A, '#/conversations');
    const item = await alpha.page.waitForSelector(`[data-conversation-id="${made.body.id}"]`);
    assert.match(await item.evaluate((e) => e.textContent), /Kept across restarts/);
    assert.deepEqual(alpha.problems, []);
    await alpha.page.close();

    const bravo = await open(KEY_B, '#/conversations');
    await bravo.page.waitForNetworkIdle();
    const ids = await bravo.page.$$eval('[data-conversation-id]', (els) => els.map((e) => e.dataset.conversationId));
    assert.ok(!ids.includes(made.body.id), 'key B sees key A\'s conversation');
    const direct = await fetch(`${server.url}/v1/console/conversations/${made.body.id}`, { headers: authed(KEY_B) });
    assert.equal(direct.status, 404);
    await bravo.page.close();
  });

  test('the dashboard\'s numbers move while a load runs', async () => {
    const { page, problems } = await open(KEY_A, '#/dashboard');
    await page.waitForSelector('[data-metric="output_tokens_per_s"]');
    const metric = (name) => page.$eval(`[data-metric="${name}"]`, (e) => Number.parseFloat(e.textContent));
    const load = Array.from({ length: 4 }, () =>
      postJson(`${server.url}/v1/chat/completions`, {
        messages: [{ role: 'user', content: 'Hi' }], max_tokens: 120,
      }, { headers: authed(KEY_A) }));
    const moved = await until('tokens/s and running requests above 0 on the dashboard', async () => {
      const tps = await metric('output_tokens_per_s');
      const running = await metric('requests_running');
      return tps > 0 && running > 0 ? { tps, running } : null;
    });
    assert.ok(moved.tps > 0);
    await Promise.all(load);
    await until('the running gauge back to 0 on the dashboard', async () => (await metric('requests_running')) === 0);
    assert.deepEqual(problems, []);
    await page.close();
  });

  test('phone and desktop screenshots, light and dark', async () => {
    fs.mkdirSync(shots, { recursive: true });
    const views = [
      ['console-desktop.png', { width: 1280, height: 800 }, 'light'],
      ['console-phone.png', { width: 390, height: 844, isMobile: true, hasTouch: true, deviceScaleFactor: 1 }, 'dark'],
    ];
    for (const [file, viewport, theme] of views) {
      const page = await browser.newPage();
      await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: theme }]);
      await page.setViewport(viewport);
      await page.evaluateOnNewDocument((k) => sessionStorage.setItem('inferbox.apiKey', k), KEY_A);
      await page.goto(`${server.url}/#/chat`, { waitUntil: 'networkidle0' });
      await send(page, 'Once upon a time');
      await page.waitForSelector('#chat[data-streaming="false"] [data-role="assistant"]', { timeout: timeBound(30_000) });
      // Nothing may overflow the viewport sideways (the phone layout works).
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 1, `${file}: the page is ${overflow} px wider than the viewport`);
      const out = path.join(shots, file);
      await page.screenshot({ path: out });
      const png = fs.readFileSync(out);
      assert.equal(png.subarray(1, 4).toString('latin1'), 'PNG');
      assert.equal(png.readUInt32BE(16), viewport.width); // IHDR width
      await page.close();
    }
  });

  test('a reload reopens the open conversation from the address (#/chat/ID)', async () => {
    const { page, problems } = await open(KEY_A);
    await page.waitForFunction(() => document.querySelectorAll('#model option').length > 0);
    await send(page, 'Keep me open');
    await page.waitForSelector('#chat[data-streaming="false"] [data-role="assistant"]', { timeout: timeBound(30_000) });
    await page.waitForSelector('[data-save="saved"]');
    const hash = await until('the conversation in the address',
      () => page.evaluate(() => (/^#\/chat\/conv_/.test(location.hash) ? location.hash : null)));
    const shown = () => page.$$eval('.messages [data-role]', (els) => els.map((e) => ({
      role: e.dataset.role,
      text: (e.querySelector('.message-body, .message-text') || e).textContent,
    })));
    const before = await shown();
    assert.deepEqual(before.map((m) => m.role), ['user', 'assistant']);
    assert.equal(before[0].text, 'Keep me open');
    const conv = await getAuthed(`${server.url}/v1/console/conversations/${hash.slice('#/chat/'.length)}`, KEY_A);
    assert.equal(conv.status, 200);
    assert.equal(conv.body.messages[0].content, 'Keep me open');

    await page.reload({ waitUntil: 'networkidle0' });
    await page.waitForFunction((n) => document.querySelectorAll('.messages [data-role]').length === n,
      { timeout: timeBound(15_000) }, before.length);
    assert.deepEqual(await shown(), before);
    assert.equal(await page.evaluate(() => location.hash), hash);
    assert.equal(await page.$eval('.chat-title h1', (e) => e.textContent), 'Keep me open');
    assert.deepEqual(problems, []);
    await page.close();

    // An address naming a conversation that is not there: a new chat, with no 404 and no error.
    const stale = await open(KEY_A, '#/chat/conv_0123456789abcdef01234567');
    await stale.page.waitForFunction(() => location.hash === '#/chat', { timeout: timeBound(15_000) });
    assert.equal(await stale.page.$$eval('.messages [data-role]', (els) => els.length), 0);
    assert.deepEqual(stale.problems, []);
    await stale.page.close();
  });

  test('the agents view on a server without built-in tools says how to add them', async () => {
    const { page, problems } = await open(KEY_A, '#/agents');
    const notice = await page.waitForSelector('[data-no-builtin-tools]');
    const text = await notice.evaluate((e) => e.textContent);
    assert.match(text, /no built-in tools/);
    assert.match(text, /--sql-database NAME=FILE/);
    assert.match(text, /--mcp-server NAME=stdio:/);
    assert.deepEqual(problems, []);
    await page.close();
  });
});

// A small MCP server (stdio, JSON-RPC lines) whose one tool, `lookup`, answers HOSTILE after
// 600 ms whatever it is asked: a team member's tool output the test knows in advance, and a member
// that runs long enough to be watched while it runs.
const HOSTILE = '<img src=x onerror="window.__pwned=1">';
const NOTES_MCP = `import readline from 'node:readline';
const send = (m) => process.stdout.write(JSON.stringify(m) + '\\n');
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  let msg;
  try { msg = JSON.parse(line); } catch { return; }
  if (msg.id === undefined || typeof msg.method !== 'string') return;
  const ok = (result) => send({ jsonrpc: '2.0', id: msg.id, result });
  if (msg.method === 'initialize') {
    ok({ protocolVersion: msg.params.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: 'notes', version: '1.0.0' } });
  } else if (msg.method === 'tools/list') {
    ok({ tools: [{ name: 'lookup', description: 'Looks up a note.',
      inputSchema: { type: 'object', properties: { topic: { type: 'string', maxLength: 12 } }, required: ['topic'] } }] });
  } else if (msg.method === 'tools/call') {
    setTimeout(() => ok({ content: [{ type: 'text', text: ${JSON.stringify(HOSTILE)} }] }), 600);
  } else if (msg.method === 'ping') {
    ok({});
  } else {
    send({ jsonrpc: '2.0', id: msg.id, error: { code: -32601, message: 'method not found' } });
  }
});
`;

describe('the agents view in a browser', () => {
  let server;
  let browser;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-console-agents-'));
  const shop = makeShop(dir);
  const mcp = `everything=stdio:${process.execPath} ${EVERYTHING_JS} stdio;allowed-tools=echo,get-sum;timeout-ms=1500`;
  const notes = path.join(dir, 'notes-mcp.mjs');
  fs.writeFileSync(notes, NOTES_MCP);
  // A team of the chat model (as team.test.mjs declares one): `scout` must call the notes tool
  // first and may call it once; `writer` has no tools. The chat model never ends a turn by itself,
  // so a member's run ends at its token budget, which the server reports as `incomplete`.
  const MODEL = 'stories260K-chatml';
  const team = [
    `crew=${MODEL}`,
    'instructions=You lead a small team.',
    `member.scout=${MODEL}`,
    'member.scout.instructions=You look things up in the notes.',
    'member.scout.tools=mcp:notes',
    'member.scout.tool-choice=required',
    'member.scout.temperature=0',
    'member.scout.max-tool-calls=1',
    'member.scout.max-tokens=110',
    `member.writer=${MODEL}`,
    'member.writer.temperature=0',
    'member.writer.max-tokens=32',
  ].join(';');

  before(async () => {
    // The tool's schema and grammar need more than the model's trained 512 tokens of context; each
    // engine step waits a little, so that a run lasts long enough to watch it live and stop it.
    server = await startServer({
      model: MODELS.chatml,
      args: ['--ctx-size', 4096, '--sql-database', `shop=${shop}`, '--mcp-server', mcp,
        '--mcp-server', `notes=stdio:${process.execPath} ${notes}`, '--team', team],
      env: { INFERBOX_FAILPOINT_STEP_DELAY_MS: '10' },
    });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  // The Agents view, recording console messages, page errors, failed requests and the bodies
  // of the /v1/responses requests it sends. Only a run the test stops may be aborted.
  async function openAgents({ stopping = false } = {}) {
    const sent = [];
    const { page, problems } = await openPage(browser, `${server.url}/#/agents`, {
      viewport: { width: 1280, height: 900 },
      aborted: (url) => stopping && url.endsWith('/v1/responses'),
      prepare: (p) => {
        p.on('request', (r) => {
          if (r.url().endsWith('/v1/responses') && r.method() === 'POST') {
            sent.push(JSON.parse(r.postData()));
          }
        });
      },
    });
    await page.waitForFunction(() => document.querySelectorAll('#agent-model option').length > 0);
    return { page, problems, sent };
  }

  async function fill(page, selector, value) {
    await page.$eval(selector, (e) => {
      e.value = '';
      e.dispatchEvent(new Event('input', { bubbles: true }));
    });
    await page.type(selector, String(value));
  }

  // Picks tool_choice, types the number fields given (`fields`: '#agent-...' → value) and the
  // input, and presses Run.
  async function run(page, choice, fields, input) {
    await page.select('#agent-tool-choice', choice);
    for (const [selector, value] of Object.entries(fields)) {
      await fill(page, selector, value);
    }
    await page.type('#agent-input', input);
    await page.click('#agent-run');
  }

  // Every node of the trace as the page shows it.
  const traceOf = (page) => page.$eval('#agent-trace', (t) => ({
    status: t.dataset.status,
    id: t.dataset.responseId,
    incomplete: t.querySelector('[data-incomplete-reason]')?.dataset.incompleteReason ?? null,
    inputTokens: t.querySelector('[data-stat="input_tokens"] dd')?.textContent ?? null,
    nodes: [...t.querySelectorAll('[data-item-type]')].map((n) => ({
      type: n.dataset.itemType,
      status: n.dataset.itemStatus,
      args: n.querySelector('.trace-args')?.dataset.arguments ?? null,
      output: n.querySelector('.trace-output')?.textContent ?? null,
      error: n.querySelector('.trace-error')?.textContent ?? null,
      text: n.querySelector('.message-body')?.textContent ?? null,
    })),
  }));

  test('a forced sql run: live trace, the call\'s rows exactly as sqlite3 returns them, then the answer', async () => {
    const { page, problems, sent } = await openAgents();
    await page.click('[data-sql-database="shop"]');
    await run(page, 'sql', { '#agent-max-tool-calls': 1, '#agent-max-output-tokens': 400, '#agent-temperature': 0 }, 'How many items are there?');

    // Live: the call is in the trace, done, while the response is still running.
    await page.waitForSelector('#agent-trace[data-status="in_progress"] [data-item-type="sql_call"][data-item-status="completed"]',
      { timeout: timeBound(60_000) });
    await page.waitForSelector('#agent-stop');
    await page.waitForSelector('#agent-trace:not([data-status="in_progress"])', { timeout: timeBound(90_000) });
    const trace = await traceOf(page);
    assert.ok(['completed', 'incomplete'].includes(trace.status), JSON.stringify(trace));

    assert.equal(sent.length, 1);
    assert.deepEqual(sent[0].tools, [{ type: 'sql', database: 'shop' }]);
    assert.deepEqual(sent[0].tool_choice, { type: 'sql' });
    assert.equal(sent[0].max_tool_calls, 1);
    assert.equal(sent[0].max_output_tokens, 400);
    assert.equal(sent[0].stream, true);
    assert.equal(sent[0].store, true);

    const [call, ...rest] = trace.nodes;
    assert.equal(call.type, 'sql_call', JSON.stringify(trace.nodes));
    assert.equal(call.status, 'completed');
    assert.equal(call.error, null);
    const { query } = JSON.parse(call.args);
    assert.match(query, /^SELECT .+ FROM (items|orders)\b/);
    const result = JSON.parse(call.output);
    assert.deepEqual(result.rows, sqliteRows(shop, query).slice(0, result.rows.length), `rows of ${query}`);
    if (!result.truncated) {
      assert.equal(result.rows.length, sqliteRows(shop, query).length);
    }
    assert.ok(rest.some((n) => n.type === 'message'), `no answer after the call: ${JSON.stringify(trace.nodes)}`);

    // The trace is the stored Response: the same call and rows, the same end and usage.
    const stored = await (await fetch(`${server.url}/v1/responses/${trace.id}`)).json();
    assert.equal(stored.status, trace.status);
    assert.equal(JSON.parse(stored.output[0].arguments).query, query);
    assert.deepEqual(JSON.parse(stored.output[0].output), result);
    assert.equal(trace.incomplete, stored.incomplete_details?.reason ?? null);
    assert.equal(Number(trace.inputTokens), stored.usage.input_tokens);
    assert.equal(await page.$('#agent-stop'), null);
    assert.deepEqual(problems, []);
    await page.close();
  });

  test('an MCP tool picked by its checkbox: only it is offered, its output is the server\'s', async () => {
    const { page, problems, sent } = await openAgents();
    await page.click('[data-mcp-server="everything"]');
    await page.click('[data-mcp-tool="get-sum"]');
    await run(page, 'mcp:everything:echo', { '#agent-max-tool-calls': 1, '#agent-max-output-tokens': 300, '#agent-temperature': 0 }, 'Say something.');
    await page.waitForSelector('#agent-trace:not([data-status="in_progress"])', { timeout: timeBound(90_000) });
    const trace = await traceOf(page);
    assert.ok(['completed', 'incomplete'].includes(trace.status), JSON.stringify(trace));
    assert.deepEqual(sent[0].tools, [{ type: 'mcp', server_label: 'everything', require_approval: 'never', allowed_tools: ['echo'] }]);
    assert.deepEqual(sent[0].tool_choice, { type: 'mcp', server_label: 'everything', name: 'echo' });
    const call = trace.nodes[0];
    assert.equal(call.type, 'mcp_call', JSON.stringify(trace.nodes));
    assert.equal(call.status, 'completed');
    const args = JSON.parse(call.args);
    assert.equal(call.output, `Echo: ${args.message}`);
    assert.deepEqual(problems, []);
    await page.close();
  });

  test('a team picked in the chat: a live trace tree, folded with the keyboard, a tool\'s hostile output inert', async () => {
    const sent = [];
    const { page, problems } = await openPage(browser, `${server.url}/#/chat`, {
      viewport: { width: 1280, height: 900 },
      prepare: (p) => p.on('request', (r) => {
        if (r.url().endsWith('/v1/responses') && r.method() === 'POST') {
          sent.push(JSON.parse(r.postData()));
        }
      }),
    });
    // The picker lists the team (from /v1/models), and the team panel its members.
    await page.waitForSelector('#model option[value="team/crew"]');
    await page.select('#model', 'team/crew');
    await page.waitForSelector('#team-choice');
    assert.deepEqual(await page.$$eval('#team-choice option', (os) => os.map((o) => o.value)),
      ['auto', 'required', 'none', 'member:scout', 'member:writer']);
    assert.deepEqual(await page.$$eval('[data-team-member]', (es) => es.map((e) => e.dataset.teamMember)), ['scout', 'writer']);
    await page.select('#team-choice', 'member:scout');
    await fill(page, '#team-max-calls', 1);
    await fill(page, '#max-tokens', 120);
    await fill(page, '#temperature', 0);
    await page.click('#composer');
    await page.keyboard.type('What do the notes say?');
    await page.keyboard.press('Enter');

    // Live: the member is running, and its tool call (done) is already under it; seen before the
    // turn ends (the tool answers after 600 ms, then the member writes on for a step of its own).
    const tree = '.team-trace';
    const live = `${tree}[data-status="running"] [data-node="member"][data-member="scout"][data-status="running"] [data-node="tool"][data-status="done"]`;
    const first = await page.waitForFunction((sel) => {
      if (document.querySelector(sel)) return 'live';
      return document.querySelector('#chat[data-streaming="false"] .team-trace') ? 'ended' : false;
    }, { polling: 'mutation', timeout: timeBound(120_000) }, live);
    assert.equal(await first.jsonValue(), 'live',
      await page.$eval(tree, (t) => [...t.querySelectorAll('[data-node]')].map((n) => `${n.dataset.node}:${n.dataset.status}`).join(' ')));
    await page.waitForSelector('#chat[data-streaming="false"]', { timeout: timeBound(120_000) });

    assert.equal(sent.length, 1);
    assert.equal(sent[0].model, 'team/crew');
    assert.equal(sent[0].stream, true);
    assert.deepEqual(sent[0].tool_choice, { type: 'function', name: 'scout' });
    assert.equal(sent[0].max_tool_calls, 1);
    assert.equal(sent[0].max_output_tokens, 120);
    assert.deepEqual(sent[0].input, [{ role: 'user', content: 'What do the notes say?' }]);

    const seen = await page.$eval(tree, (t) => {
      const head = (n) => n.querySelector(':scope > .tt-head');
      return {
        status: t.dataset.status,
        id: t.dataset.responseId,
        captain: [...t.querySelectorAll('[data-node="captain"]')].map((n) => n.dataset.status),
        steps: t.querySelectorAll('[data-node="step"]').length,
        members: [...t.querySelectorAll('[data-node="member"]')].map((n) => ({
          name: n.dataset.member,
          status: n.dataset.status,
          id: n.dataset.itemId,
          task: n.querySelector('.tt-task .tt-text').textContent,
          tokens: [head(n).querySelector('.tt-tokens')?.dataset.inputTokens, head(n).querySelector('.tt-tokens')?.dataset.outputTokens],
          where: head(n).querySelector('.tt-where')?.dataset.backend ?? null,
          tools: [...n.querySelectorAll('[data-node="tool"]')].map((c) => ({
            type: c.dataset.toolType,
            status: c.dataset.status,
            id: c.dataset.itemId,
            expanded: head(c).querySelector('.tt-toggle').getAttribute('aria-expanded'),
            body: !!c.querySelector('.tt-body'),
          })),
        })),
      };
    });
    // The tree is the stored Response: the captain's end, each member call it made, and under it
    // the member's own calls.
    const stored = await (await fetch(`${server.url}/v1/responses/${seen.id}`)).json();
    const label = { completed: 'done', incomplete: 'incomplete', failed: 'failed' };
    assert.ok(['completed', 'incomplete'].includes(stored.status), JSON.stringify(stored));
    assert.equal(seen.status, label[stored.status]);
    assert.deepEqual(seen.captain, [label[stored.status]]);
    assert.ok(seen.steps >= 1, JSON.stringify(seen));
    const calls = stored.output.filter((o) => o.type === 'team_member_call');
    assert.deepEqual(calls.map((c) => c.member), ['scout'], JSON.stringify(stored.output));
    assert.equal(seen.members.length, calls.length, JSON.stringify(seen));
    const [scout] = seen.members;
    assert.equal(scout.name, 'scout');
    assert.equal(scout.id, calls[0].id);
    assert.notEqual(scout.status, 'running');
    assert.equal(scout.status, label[calls[0].status], JSON.stringify(calls[0]));
    assert.equal(scout.task, calls[0].task);
    assert.deepEqual(scout.tokens, [String(calls[0].usage.input_tokens), String(calls[0].usage.output_tokens)]);
    assert.equal(scout.where, 'local');
    const tools = stored.output.filter((o) => o.type === 'mcp_call' && o.parent_id === calls[0].id);
    assert.equal(tools.length, 1, JSON.stringify(stored.output));
    assert.equal(tools[0].output, HOSTILE);
    // The member's tool call: done, folded until asked for.
    assert.deepEqual(scout.tools, [{ type: 'mcp_call', status: 'done', id: tools[0].id, expanded: 'false', body: false }]);

    // The keyboard unfolds it (Enter) and folds the member (Space); its output is the text HOSTILE.
    const toolToggle = `${tree} [data-node="tool"] > .tt-head > .tt-toggle`;
    await page.focus(toolToggle);
    await page.keyboard.press('Enter');
    await page.waitForSelector(`${toolToggle}[aria-expanded="true"]`);
    const inert = await page.$eval(tree, (t) => ({
      output: t.querySelector('[data-node="tool"] .tt-tool-output').textContent,
      input: t.querySelector('[data-node="tool"] .tt-input').dataset.arguments,
      imgs: t.querySelectorAll('img').length,
      handlers: [...t.querySelectorAll('*')].filter((e) => [...e.attributes].some((a) => a.name.startsWith('on'))).length,
      pwned: window.__pwned ?? null,
    }));
    assert.equal(inert.output, HOSTILE);
    assert.equal(typeof JSON.parse(inert.input).topic, 'string');
    assert.equal(inert.imgs, 0);
    assert.equal(inert.handlers, 0);
    assert.equal(inert.pwned, null);
    const memberToggle = `${tree} [data-node="member"] > .tt-head > .tt-toggle`;
    assert.equal(await page.$eval(memberToggle, (b) => b.getAttribute('aria-expanded')), 'true');
    await page.focus(memberToggle);
    await page.keyboard.press('Space');
    await page.waitForSelector(`${memberToggle}[aria-expanded="false"]`);
    assert.equal(await page.$(`${tree} [data-node="member"] [data-node="tool"]`), null);
    // Give an injected handler time to fire, had there been one.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await page.evaluate(() => window.__pwned ?? null), null);

    // The trace is kept with the answer in the saved conversation.
    const saved = await until('the saved conversation', async () => {
      const list = await (await fetch(`${server.url}/v1/console/conversations`)).json();
      const conv = list.data?.find((c) => c.model === 'team/crew');
      return conv ? (await fetch(`${server.url}/v1/console/conversations/${conv.id}`)).json() : null;
    });
    const answer = saved.messages.at(-1);
    assert.equal(answer.team.id, seen.id);
    assert.ok(answer.team.nodes.some((n) => n.type === 'team_member_call' && n.item.id === calls[0].id));
    assert.deepEqual(problems, []);
    await page.close();
  });

  test('stop ends the run: the trace says cancelled and the server frees the request', async () => {
    const { page, problems } = await openAgents({ stopping: true });
    await page.click('[data-sql-database="shop"]');
    await run(page, 'required', {}, 'Tell me about the items.');
    await page.waitForSelector('#agent-trace[data-status="in_progress"]');
    await until('the run on the server', async () => (await runningNow(server, {})) >= 1);
    await page.click('#agent-stop');
    await page.waitForSelector('#agent-trace[data-status="cancelled"]');
    assert.equal(await page.$('#agent-trace [data-item-status="in_progress"]'), null);
    await until('the running gauge back to 0', async () => (await runningNow(server, {})) === 0);
    assert.deepEqual(problems, []);
    await page.close();
  });
});

describe('routed models in the console (a second inferbox as a remote backend)', () => {
  let remote;
  let router;
  let browser;
  // The router also pulls "tiny" (route pull=) from a local file server that sends the first
  // 64 KiB, then holds the rest until the test opens `gate`.
  const modelBytes = fs.readFileSync(modelPath(MODELS.plain));
  let openGate;
  const gate = new Promise((resolve) => { openGate = resolve; });
  const files = http.createServer(async (req, res) => {
    res.writeHead(200, { 'content-length': String(modelBytes.length) });
    res.write(modelBytes.subarray(0, 64 * 1024));
    await gate;
    res.end(modelBytes.subarray(64 * 1024));
  });
  let cache;
  before(async () => {
    await new Promise((resolve) => files.listen(0, '127.0.0.1', resolve));
    cache = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-console-cache-'));
    // The remote serves the chat model as "far"; the router serves it as "near" and knows "far"
    // only through its backend.
    remote = await startServer({ model: null, args: ['--model', `far=${modelPath(MODELS.chatml)}`] });
    router = await startServer({
      model: null,
      env: { INFERBOX_CACHE: cache },
      args: ['--model', `near=${modelPath(MODELS.chatml)}`,
        '--backend', `edge=${remote.url}/v1;models=far;probe-interval-ms=200`,
        '--route', `tiny=local-first;pull=http://127.0.0.1:${files.address().port}/tiny.gguf`],
    });
    browser = await launchBrowser();
  });
  after(async () => {
    openGate();
    await browser?.close();
    await router?.stop();
    await remote?.stop();
    files.closeAllConnections();
    files.close();
    fs.rmSync(cache, { recursive: true, force: true });
  });

  test('the picker lists the remote model, the answer says where it ran, the dashboard shows the backend', async () => {
    const page = await browser.newPage();
    // Console and page errors only: the test leaves the chat for the dashboard without waiting for
    // the chat's requests to end.
    const problems = watchProblems(page, { network: false });
    await page.goto(`${router.url}/#/chat`, { waitUntil: 'networkidle0' });
    await page.waitForFunction(() => [...document.querySelectorAll('#model option')].some((o) => o.value === 'far'));
    await page.select('#model', 'far');
    await page.click('#composer');
    await page.keyboard.type('Hi');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#chat[data-streaming="false"] [data-role="assistant"] [data-stat="where"]', {
      timeout: timeBound(30_000),
    });
    const where = await page.$eval('[data-role="assistant"] [data-stat="where"]', (e) => e.textContent);
    assert.match(where, /edge: remote/);
    // The remote's access log has the request: it really ran there.
    assert.ok(remote.log().includes('path=/v1/chat/completions '), 'the remote never saw the request');

    await page.goto(`${router.url}/#/dashboard`, { waitUntil: 'networkidle0' });
    const backend = await page.waitForSelector('[data-backend="edge"]');
    const text = await backend.evaluate((e) => e.textContent);
    assert.match(text, /closed/); // its circuit: healthy
    assert.ok(text.includes(remote.url), text);
    assert.deepEqual(problems, []);
    await page.close();
  });

  test('the dashboard shows a pull in progress with its progress bar, then the model loaded', async () => {
    const page = await browser.newPage();
    const problems = watchProblems(page, { network: false });
    await page.goto(`${router.url}/#/dashboard`, { waitUntil: 'networkidle0' });
    const pull = await page.waitForSelector('[aria-label="Pulls in progress"] [data-pull="tiny"]');
    const shown = await pull.evaluate((e) => ({
      received: Number(e.dataset.received),
      total: Number(e.dataset.total),
      bar: e.querySelector('progress') && { value: e.querySelector('progress').value, max: e.querySelector('progress').max },
      text: e.textContent,
    }));
    assert.equal(shown.total, modelBytes.length);
    assert.equal(shown.received, 64 * 1024, 'the bytes the file server has sent so far');
    assert.deepEqual(shown.bar, { value: 64 * 1024, max: modelBytes.length });
    assert.match(shown.text, new RegExp(`${Math.floor((64 * 1024 * 100) / modelBytes.length)} % of 1\\.1 MiB`));
    // The models table says so too.
    assert.match(await page.$eval('tr[data-model-id="tiny"]', (e) => e.textContent), /pulling/);

    openGate();
    await page.waitForSelector('tr[data-model-id="tiny"] .status-loaded', { timeout: timeBound(30_000) });
    assert.equal(await page.$('[aria-label="Pulls in progress"]'), null, 'no pulls are left');
    assert.deepEqual(problems, []);
    await page.close();
  });
});
