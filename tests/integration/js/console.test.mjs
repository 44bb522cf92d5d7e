// The web console: served by the binary (embedded files, strict CSP, caching, gzip, the bundle
// budget) and driven in headless Chromium (Debian's `chromium`, through puppeteer-core) against
// the real server and test model: no console errors, a streamed chat, stop freeing the slot,
// hostile model output rendered inert, conversations kept on the server per API key across a
// restart, a dashboard that moves under load, and phone and desktop screenshots.
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

import { MODELS, postJson, repoRoot, startServer, timeBound } from './harness.mjs';

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

async function runningNow(server) {
  const text = await (await fetch(`${server.url}/metrics`, { headers: authed(KEY_A) })).text();
  const m = text.match(/^num_requests_running\{[^}]*\} (\S+)$/m);
  return m ? Number(m[1]) : NaN;
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

    // Revalidation: the ETag answers 304 with no body; HEAD gives the headers only.
    const again = await rawGet(`${server.url}/`, { 'if-none-match': page.headers.etag });
    assert.equal(again.status, 304);
    assert.equal(again.body.length, 0);
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
      const refused = await rawGet(`${server.url}${a}`, { 'accept-encoding': 'gzip;q=0' });
      assert.equal(refused.headers['content-encoding'], undefined);
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
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  // A page with `key` in its session storage (as the key form leaves it), recording every
  // console message, page error and failed request.
  async function open(key, hash = '#/chat', viewport = { width: 1280, height: 800 }) {
    const page = await browser.newPage();
    await page.setViewport(viewport);
    const problems = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warn' || m.type() === 'warning') {
        problems.push(`console.${m.type()}: ${m.text()}`);
      }
    });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('response', async (r) => {
      if (r.status() >= 400) {
        problems.push(`HTTP ${r.status()} ${r.request().method()} ${r.url()}: ${(await r.text().catch(() => '')).slice(0, 300)}`);
      }
    });
    page.on('requestfailed', (r) => {
      // A stream the page stopped on purpose is aborted; nothing else may fail.
      if (!/chat\/completions/.test(r.url())) {
        problems.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`);
      }
    });
    if (key) {
      await page.evaluateOnNewDocument((k) => sessionStorage.setItem('inferbox.apiKey', k), key);
    }
    await page.goto(`${server.url}/${hash}`, { waitUntil: 'networkidle0' });
    return { page, problems };
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
    const { page, problems } = await open(KEY_A);
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
});
