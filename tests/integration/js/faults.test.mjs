// Engine faults: what a failed decode does to the requests in that step and to the server. Test
// builds of inferbox carry a failpoint (engine.cpp, decode_failpoint): while the file named by
// INFERBOX_FAILPOINT_DECODE exists, each decode fails as a failed llama_decode would; the file
// holds how many to fail and is counted down. (Release images are built without it.)
//
// Expected (issue 5, lifecycle): the requests of a failed step end with a 500 or an SSE error
// event, and the server keeps serving; after three failed steps in a row the engine counts as
// unable to continue, readiness turns 503 and the process exits 2 so the orchestrator restarts it.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  GREEDY_64,
  MODELS,
  ONCE,
  postJson,
  startServer,
  streamRaw,
  timeBound,
} from './harness.mjs';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-faults-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('engine faults: a failed decode (test-build failpoint)', () => {
  test('a decode that fails mid-stream ends that stream with an error event; the server keeps serving', async () => {
    const trigger = path.join(dir, 'decode-once');
    const server = await startServer({ model: MODELS.plain, env: { INFERBOX_FAILPOINT_DECODE: trigger } });
    try {
      const text = await streamRaw(`${server.url}/v1/completions`,
        { prompt: ONCE, max_tokens: 400, temperature: 0, ignore_eos: true, stream: true },
        () => fs.writeFileSync(trigger, '1\n'));
      assert.match(text, /^HTTP\/1\.1 200/);
      assert.match(text, /"code":"decode_failed"/, text.slice(-1500));
      assert.match(text, /data: \[DONE\]/);
      assert.ok(!fs.existsSync(trigger), 'the failpoint fired once and was consumed');
      assert.match(server.log(), /decode failed \(code -1\) for a batch of \d+ tokens; failing 1 sequences/);

      // A request whose first decode fails: 500 in OpenAI's error shape, naming the cause.
      fs.writeFileSync(trigger, '1\n');
      const failed = await postJson(`${server.url}/v1/completions`, { prompt: ONCE, max_tokens: 8, temperature: 0 });
      assert.equal(failed.status, 500, failed.text);
      assert.equal(failed.body.error.type, 'server_error');
      assert.equal(failed.body.error.code, 'decode_failed');

      // Still serving, with the same output as before the faults, and still ready.
      const ok = await postJson(`${server.url}/v1/completions`, { prompt: ONCE, max_tokens: 64, temperature: 0 });
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.body.choices[0].text, GREEDY_64);
      assert.equal((await fetch(`${server.url}/v1/health/ready`)).status, 200);
    } finally {
      assert.equal((await server.stop()).code, 0, server.log());
    }
  });

  test('three failed decodes in a row: readiness 503 and exit 2, no request left hanging', async () => {
    const trigger = path.join(dir, 'decode-thrice');
    const server = await startServer({ model: MODELS.plain, env: { INFERBOX_FAILPOINT_DECODE: trigger } });
    try {
      fs.writeFileSync(trigger, '3\n');
      for (let i = 0; i < 3; i++) {
        const res = await postJson(`${server.url}/v1/completions`, { prompt: `${ONCE} ${i}`, max_tokens: 8 });
        assert.equal(res.status, 500, res.text);
        assert.equal(res.body.error.code, 'decode_failed');
      }
      // Readiness stops answering 200 at once (503 while it drains, then nothing once it exited).
      let ready = 200;
      for (let i = 0; i < 100 && ready === 200; i++) {
        ready = await fetch(`${server.url}/v1/health/ready`).then((r) => r.status, () => 0);
        if (ready === 200) {
          await sleep(50);
        }
      }
      assert.ok(ready === 503 || ready === 0, `readiness answered ${ready}`);
      const started = Date.now();
      const info = await Promise.race([server.exited, sleep(15_000).then(() => null)]);
      assert.ok(info, `the server did not exit within 15 s of its third failed decode\n${server.log()}`);
      assert.equal(info.code, 2, server.log());
      assert.match(server.log(), /the engine cannot continue; exiting so the orchestrator restarts the server/);
      assert.ok(Date.now() - started < timeBound(15_000));
    } finally {
      await server.stop();
    }
  });
});

// The last line of defence (issue 19): an exception nothing else caught ends its request, is
// logged and counted, and never ends the process by itself.
describe('unexpected exceptions (test-build failpoints)', () => {
  test('a handler that throws: 500 in the OpenAI shape, counted; the server keeps serving', async () => {
    const trigger = path.join(dir, 'handler-throw');
    const server = await startServer({ model: MODELS.plain, env: { INFERBOX_FAILPOINT_HANDLER_THROW: trigger } });
    try {
      fs.writeFileSync(trigger, '2\n');
      for (let i = 0; i < 2; i++) {
        const res = await postJson(`${server.url}/v1/completions`, { prompt: ONCE, max_tokens: 4, temperature: 0 });
        assert.equal(res.status, 500, res.text);
        assert.equal(res.body.error.type, 'server_error');
        assert.doesNotMatch(res.body.error.message, /failpoint/, 'the exception text stays in the log');
      }
      assert.match(server.log(), /unexpected exception in handler: failpoint: the handler throws/);
      const ok = await postJson(`${server.url}/v1/completions`, { prompt: ONCE, max_tokens: 64, temperature: 0 });
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.body.choices[0].text, GREEDY_64);
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      assert.match(metrics, /^inferbox_unhandled_exceptions_total\{where="handler"\} 2$/m);
    } finally {
      assert.equal((await server.stop()).code, 0, server.log());
    }
  });

  test('an I/O completion that throws: that connection ends, counted; the thread and the server go on', async () => {
    // The throw happens in the read completion before the handler's own catch-all, so it leaves
    // io_context::run() on the I/O thread. With --http-threads 1 there is no second thread to hide
    // behind: the next requests are served only if that thread caught it and ran again.
    const trigger = path.join(dir, 'io-throw');
    const server = await startServer({
      model: MODELS.plain, args: ['--http-threads', 1], env: { INFERBOX_FAILPOINT_IO_THROW: trigger },
    });
    try {
      fs.writeFileSync(trigger, '1\n');
      const lost = await fetch(`${server.url}/v1/completions`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ prompt: ONCE, max_tokens: 4, temperature: 0 }),
      }).then((r) => `answered ${r.status}`, (e) => `failed: ${e.cause?.code ?? e.message}`);
      assert.match(lost, /^failed: /, 'the connection whose completion threw is closed without an answer');
      assert.match(server.log(), /unexpected exception in io_thread: failpoint: a completion handler throws/);
      for (let i = 0; i < 3; i++) {
        const ok = await postJson(`${server.url}/v1/completions`, { prompt: ONCE, max_tokens: 64, temperature: 0 });
        assert.equal(ok.status, 200, ok.text);
        assert.equal(ok.body.choices[0].text, GREEDY_64);
      }
      const live = await fetch(`${server.url}/v1/health/live`);
      assert.equal(live.status, 200);
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      assert.match(metrics, /^inferbox_unhandled_exceptions_total\{where="io_thread"\} 1$/m);
    } finally {
      assert.equal((await server.stop()).code, 0, server.log());
    }
  });

  test('an engine step that throws: its requests end with an error, the process exits 2 for a restart', async () => {
    const trigger = path.join(dir, 'step-throw');
    const server = await startServer({ model: MODELS.plain, env: { INFERBOX_FAILPOINT_STEP_THROW: trigger } });
    try {
      fs.writeFileSync(trigger, '1\n');
      const res = await postJson(`${server.url}/v1/completions`, { prompt: ONCE, max_tokens: 8, temperature: 0 });
      assert.equal(res.status, 500, res.text);
      assert.equal(res.body.error.code, 'engine_failed');
      const info = await Promise.race([server.exited, sleep(timeBound(15_000)).then(() => null)]);
      assert.deepEqual(info, { code: 2, signal: null }, server.log().slice(-3000));
      assert.match(server.log(), /the engine loop caught an unexpected exception: std::bad_alloc/);
    } finally {
      await server.stop();
    }
  });
});
