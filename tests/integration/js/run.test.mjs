// `inferbox run`: one answer for a prompt argument or piped stdin, and an interactive chat on a
// terminal (a pseudo-terminal from script(1)) where Ctrl-C stops a reply without quitting.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';

import { CHATML_HI_16, GREEDY_64, MODELS, modelPath, serverBinary } from './harness.mjs';

function runOnce(args, input) {
  const r = spawnSync(serverBinary(), ['run', ...args], { input, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.error, undefined, String(r.error));
  return r;
}

describe('inferbox run, one answer', () => {
  test('a prompt argument on a model without a chat template continues the text', () => {
    const r = runOnce([modelPath(MODELS.plain), 'Once upon a time', '--temperature', '0', '--max-tokens', '20']);
    assert.equal(r.status, 0, r.stderr);
    const text = r.stdout.replace(/\n$/, '');
    assert.ok(text.length > 20 && GREEDY_64.startsWith(text), `got ${JSON.stringify(r.stdout)}`);
  });

  test('piped stdin is the prompt, so run works in a pipeline', () => {
    const r = runOnce([modelPath(MODELS.plain), '--temperature', '0', '--max-tokens', '20'], 'Once upon a time\n');
    assert.equal(r.status, 0, r.stderr);
    assert.ok(GREEDY_64.startsWith(r.stdout.replace(/\n$/, '')), r.stdout);
  });

  test('a chat model answers through its template, as /v1/chat/completions does', () => {
    const r = runOnce([modelPath(MODELS.chatml), 'Hi', '--temperature', '0', '--max-tokens', '16']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), CHATML_HI_16.trim());
  });

  test('errors: a missing model, an empty prompt', () => {
    const missing = runOnce(['/nonexistent/model.gguf', 'hi']);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /\/nonexistent\/model\.gguf/);
    const empty = runOnce([modelPath(MODELS.plain)], '');
    assert.equal(empty.status, 1);
    assert.match(empty.stderr, /no prompt/);
  });
});

describe('inferbox run, interactive', () => {
  test('turns on a terminal; Ctrl-C stops a long reply and the chat goes on; /bye quits', async () => {
    // script(1) gives the program a pseudo-terminal; without one this test cannot mean anything.
    const probe = spawnSync('script', ['-qec', 'tty', '/dev/null'], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(probe.status, 0, `script(1) could not open a pseudo-terminal here: ${probe.stderr}${probe.error ?? ''}`);
    // exec: script(1) runs $SHELL -c (dash where SHELL is unset, as under CI), and a shell that
    // stays as the parent would take the Ctrl-C itself and end the session.
    const cmd = `exec ${serverBinary()} run ${modelPath(MODELS.plain)} --temperature 0 --max-tokens 100000 --ctx-size 8192`;
    const child = spawn('script', ['-qfec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const waitFor = async (re, from = 0) => {
      const deadline = Date.now() + 60_000;
      while (!re.test(out.slice(from))) {
        assert.ok(Date.now() < deadline, `timed out waiting for ${re}; output:\n${out}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const exited = new Promise((resolve) => child.on('close', (code) => resolve(code)));
    try {
      await waitFor(/>>> /);
      let mark = out.length;
      child.stdin.write('Once upon a time\r');
      await waitFor(/there was a little girl named Lily/, mark);
      child.stdin.write('\x03'); // Ctrl-C, through the terminal's line discipline
      await waitFor(/\(stopped\)[\s\S]*>>> /, mark);
      mark = out.length;
      child.stdin.write('Tom\r');
      // Ctrl-C only once the reply is streaming: the terminal discards a typed line that the
      // program has not read yet when ^C arrives, so an earlier ^C would race the read of "Tom".
      await waitFor(/Tom\r*\n[^\n]*[^\s>][\s\S]{16}/, mark);
      child.stdin.write('\x03');
      await waitFor(/\(stopped\)[\s\S]*>>> /, mark);
      child.stdin.write('/bye\r');
      assert.equal(await exited, 0, out);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
