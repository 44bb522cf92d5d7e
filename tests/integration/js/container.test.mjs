// The container image: deploy/container/build-image.sh builds it with buildah from the binary under
// test, reproducibly (two builds give one image id); podman runs it on loopback the way Kubernetes
// would (read-only root filesystem, all capabilities dropped, no new privileges) with the test
// models mounted read-only; it answers the same greedy completion as the binary outside the
// container, runs as uid 1000, fills a model-cache volume with `inferbox import`, and on SIGTERM
// drains an in-flight request and exits 0.
//
// deploy/container/Containerfile and Containerfile.cuda cannot be built here (they need the network
// and, for CUDA, NVIDIA's base image); their runtime stages are built against the script's root
// filesystem and must give the same configuration and files, and their defaults must match
// CMakeLists.txt and scripts/deps.env.
//
// Needs buildah, podman and runc (scripts/setup.sh installs them). Without them this file FAILS;
// INFERBOX_SKIP_CONTAINER=1 skips it instead. All container storage lives in a temporary folder
// (--root/--runroot, a private containers.conf) that is removed afterwards.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  GREEDY_64, MODELS, ONCE, buildMode, freePort, modelPath, postJson, repoRoot, serverBinary, startServer,
} from './harness.mjs';

const TOOLS = ['buildah', 'podman', 'runc'];
const SKIP = process.env.INFERBOX_SKIP_CONTAINER === '1';
const READY_TIMEOUT_MS = 60_000;
const SHUTDOWN_TIMEOUT_S = 30; // the image's default --shutdown-timeout

function onPath(tool) {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).status === 0;
}

const missing = TOOLS.filter((t) => !onPath(t));

const CONTAINERFILES = ['Containerfile', 'Containerfile.cuda'];
const ENTRYPOINT = ['/usr/local/bin/inferbox', 'serve', '--host', '0.0.0.0', '--port', '8000'];

function projectVersions() {
  const cmake = fs.readFileSync(path.join(repoRoot, 'CMakeLists.txt'), 'utf8');
  const deps = fs.readFileSync(path.join(repoRoot, 'scripts', 'deps.env'), 'utf8');
  return {
    version: cmake.match(/project\(inferbox VERSION ([0-9.]+)/)[1],
    llamaSource: `node-llama-cpp@${deps.match(/^NODE_LLAMA_CPP_VERSION=(\S+)/m)[1]}`,
    cmake,
  };
}

function containerfile(name) {
  return fs.readFileSync(path.join(repoRoot, 'deploy', 'container', name), 'utf8');
}

// The runtime stage: from `FROM scratch AS runtime` to the end.
function runtimeStage(text) {
  const at = text.indexOf('FROM scratch AS runtime');
  assert.ok(at >= 0, 'no "FROM scratch AS runtime" stage');
  return text.slice(at);
}

// Checks that need no container tools: they always run.
describe('Containerfiles agree with the project', () => {
  const { version, llamaSource, cmake } = projectVersions();
  for (const name of CONTAINERFILES) {
    test(`${name}: versions, copied sources, user, volume and entrypoint`, () => {
      const text = containerfile(name);
      const stage = runtimeStage(text);
      assert.match(stage, new RegExp(`^ARG VERSION=${version.replace(/\./g, '\\.')}$`, 'm'),
        `${name}: ARG VERSION must default to CMakeLists.txt's ${version}`);
      assert.match(stage, new RegExp(`^ARG LLAMA_CPP_SOURCE=${llamaSource.replace(/\./g, '\\.')}$`, 'm'),
        `${name}: ARG LLAMA_CPP_SOURCE must default to scripts/deps.env's ${llamaSource}`);
      assert.match(stage, /^USER 1000:1000$/m);
      assert.match(stage, /^VOLUME \["\/var\/cache\/inferbox"\]$/m);
      assert.match(stage, /INFERBOX_CACHE=\/var\/cache\/inferbox/);
      const entry = stage.match(/^ENTRYPOINT (\[.*\])$/m);
      assert.ok(entry, `${name}: no ENTRYPOINT`);
      assert.deepEqual(JSON.parse(entry[1]), ENTRYPOINT);
      // llama.cpp's backends as scripts/setup.sh configures them (the RPC backend: serve --rpc and
      // rpc-worker must work in the image too).
      const setup = fs.readFileSync(path.join(repoRoot, 'scripts', 'setup.sh'), 'utf8');
      for (const flag of ['-DGGML_RPC=ON', '-DGGML_RPC_RDMA=OFF']) {
        assert.ok(setup.includes(flag), `scripts/setup.sh no longer passes ${flag}: update this test`);
        assert.ok(text.includes(flag), `${name}: configure llama.cpp with ${flag} as scripts/setup.sh does`);
      }
      // The build stage copies every top-level folder the root CMakeLists.txt reads.
      const copied = [...text.matchAll(/^COPY (?!--from)(\S+)/gm)].map((m) => m[1].replace(/\/$/, ''));
      const needed = new Set(['CMakeLists.txt', 'scripts', 'deploy/container/build-image.sh']);
      for (const m of cmake.matchAll(/add_subdirectory\(([^/)\s]+)/g)) {
        needed.add(m[1]);
      }
      for (const m of cmake.matchAll(/include\((cmake)\//g)) {
        needed.add(m[1]);
      }
      for (const m of cmake.matchAll(/add_executable\(inferbox ([^/)\s]+)\//g)) {
        needed.add(m[1]);
      }
      // Folders the layers' CMake files and llama.cmake read (the console's sources, our llama.cpp
      // patches).
      const layered = ['src/CMakeLists.txt', 'cmake/llama.cmake']
        .map((f) => fs.readFileSync(path.join(repoRoot, f), 'utf8')).join('\n');
      for (const m of layered.matchAll(/\$\{(?:PROJECT|CMAKE)_SOURCE_DIR\}\/([A-Za-z_.-]+)/g)) {
        needed.add(m[1]);
      }
      for (const dir of needed) {
        if (dir === 'tests' && /-DINFERBOX_BUILD_TESTS=OFF/.test(text)) {
          continue;
        }
        assert.ok(copied.includes(dir) || (dir === 'scripts' && copied.includes('scripts/deps.env') && copied.includes('scripts')),
          `${name} does not COPY ${dir}, which CMakeLists.txt reads (copied: ${copied.join(' ')})`);
      }
    });
  }
});

function loud(msg) {
  const bar = '!'.repeat(100);
  process.stderr.write(`\n${bar}\n!! ${msg}\n${bar}\n\n`);
}

if (SKIP) {
  loud('container.test.mjs SKIPPED because INFERBOX_SKIP_CONTAINER=1: the container image is NOT tested');
  test('container image (skipped: INFERBOX_SKIP_CONTAINER=1)', { skip: 'INFERBOX_SKIP_CONTAINER=1' }, () => {});
} else if (missing.length > 0) {
  const msg = `container tests need ${missing.join(', ')}, which ${missing.length === 1 ? 'is' : 'are'} not ` +
    'installed: scripts/setup.sh installs them (Debian packages buildah podman runc); ' +
    'set INFERBOX_SKIP_CONTAINER=1 to skip these tests on purpose';
  loud(msg);
  test('container tools are installed', () => {
    assert.fail(msg);
  });
} else {
  containerTests();
}

function containerTests() {
  let work; // temporary folder: storage, runroot, containers.conf
  let storage; // global options shared by buildah and podman
  let env;
  let image; // tag of the image under test
  let imageId;
  const suffix = crypto.randomBytes(4).toString('hex');

  function run(tool, args, { timeout = 120_000, check = true } = {}) {
    const globals = tool === 'podman' ? [...storage, '--runtime-flag', `root=${path.join(work, 'runc')}`] : storage;
    const argv = tool === 'script' ? args : [...globals, ...args];
    const bin = tool === 'script' ? path.join(repoRoot, 'deploy', 'container', 'build-image.sh') : tool;
    const res = spawnSync(bin, argv, { env, encoding: 'utf8', timeout, maxBuffer: 64 << 20 });
    if (res.error) {
      throw new Error(`${bin} ${argv.join(' ')}: ${res.error.message}`);
    }
    if (check && res.status !== 0) {
      throw new Error(`${bin} ${argv.join(' ')} exited ${res.status} (signal ${res.signal})\n` +
        `stdout:\n${res.stdout}\nstderr:\n${res.stderr}`);
    }
    return res;
  }
  const podman = (args, opts) => run('podman', args, opts);

  function buildImage(tag) {
    const res = run('script', [
      '--binary', serverBinary(), '--tag', tag,
      '--root', path.join(work, 'root'), '--runroot', path.join(work, 'runroot'), '--storage-driver', 'vfs',
    ], { timeout: 180_000 });
    const lines = res.stdout.trim().split('\n');
    return { id: lines[lines.length - 1], log: res.stderr };
  }

  function inspectImage() {
    return JSON.parse(podman(['image', 'inspect', image]).stdout)[0];
  }

  // Every path in an image with its type, mode, owner and size (root only: needs `buildah mount`).
  function listFiles(ref) {
    const ctr = run('buildah', ['from', '--quiet', '--pull-never', ref]).stdout.trim();
    try {
      const dir = run('buildah', ['mount', ctr]).stdout.trim();
      const out = [];
      const walk = (rel) => {
        for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
          const r = path.posix.join(rel, name);
          const st = fs.lstatSync(path.join(dir, r));
          out.push(`/${r} ${st.mode.toString(8)} ${st.uid}:${st.gid}${st.isFile() ? ` ${st.size}` : ''}`);
          if (st.isDirectory()) {
            walk(r);
          }
        }
      };
      walk('');
      return out;
    } finally {
      run('buildah', ['umount', ctr], { check: false });
      run('buildah', ['rm', ctr], { check: false });
    }
  }

  function logsOf(name) {
    const res = podman(['logs', name], { check: false });
    return `${res.stdout}${res.stderr}`;
  }

  // `podman run` of the image under test with Kubernetes' restrictions; returns spawnSync's result.
  function runContainer(name, { entrypoint, args = [], volumes = [], detach = true }) {
    const argv = ['run', '--name', name, '--network', 'host', '--read-only', '--cap-drop', 'all',
      '--security-opt', 'no-new-privileges', '--pull', 'never'];
    for (const v of volumes) {
      argv.push('-v', v);
    }
    // Sanitizer builds (scripts/test.sh --sanitize) need their options inside too. Leak checking
    // is off in the container: LeakSanitizer stops the process with ptrace, which a container with
    // every capability dropped may refuse; the same binary's leaks are checked outside it.
    for (const k of ['ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS']) {
      if (process.env[k]) {
        const v = k === 'ASAN_OPTIONS' ? `${process.env[k]}:detect_leaks=0` : process.env[k];
        argv.push('--env', `${k}=${v}`);
      }
    }
    if (detach) {
      argv.push('-d');
    }
    argv.push('--entrypoint', JSON.stringify(entrypoint), image, ...args);
    return podman(argv);
  }

  // containers/image keeps a blob-info cache at this fixed path for root, whatever the storage
  // options say; it is removed afterwards if this test created it.
  const HOST_CACHE = ['/var/lib/containers/cache', '/var/lib/containers'];
  let hostCacheBefore = [];

  before(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-container-'));
    // Everything podman would otherwise keep in /run/libpod, /dev/shm, /etc/cni and /run/runc
    // goes under `work` too: tmp_dir, file locks, the CNI config folder, runc's state root.
    fs.writeFileSync(path.join(work, 'containers.conf'), [
      '[containers]',
      'default_ulimits = []',
      '[engine]',
      'runtime = "runc"',
      'events_logger = "none"',
      'lock_type = "file"',
      `tmp_dir = "${path.join(work, 'libpod')}"`,
      '[network]',
      `network_config_dir = "${path.join(work, 'cni')}"`,
      '',
    ].join('\n'));
    fs.mkdirSync(path.join(work, 'tmp'));
    storage = ['--root', path.join(work, 'root'), '--runroot', path.join(work, 'runroot'),
      '--storage-driver', 'vfs'];
    env = { ...process.env, CONTAINERS_CONF: path.join(work, 'containers.conf'), TMPDIR: path.join(work, 'tmp') };
    image = `localhost/inferbox-test:${suffix}`;
    hostCacheBefore = HOST_CACHE.filter((p) => fs.existsSync(p));
  });

  after(() => {
    if (!work) {
      return;
    }
    if (storage) {
      podman(['rm', '--all', '--force', '--volumes', '--time', '0'], { check: false });
      podman(['volume', 'rm', '--all', '--force'], { check: false });
      podman(['rmi', '--all', '--force'], { check: false });
    }
    // Whatever podman left mounted under the folder (a container's /dev/shm) must go first.
    const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
      .map((l) => l.split(' ')[4]).filter((m) => m && m.startsWith(work)).sort().reverse();
    for (const m of mounts) {
      spawnSync('umount', ['-l', m]);
    }
    fs.rmSync(work, { recursive: true, force: true });
    if (process.getuid() === 0) {
      for (const p of HOST_CACHE) {
        if (!hostCacheBefore.includes(p) && fs.existsSync(p)) {
          fs.rmSync(p, { recursive: true, force: true });
        }
      }
    }
  });

  describe('container image', () => {
    test('build-image.sh refuses a missing binary with a clear message', () => {
      const res = run('script', ['--binary', path.join(work, 'no-such-inferbox')], { check: false });
      assert.notEqual(res.status, 0);
      assert.match(res.stderr, /inferbox binary not found at .*no-such-inferbox: build it first/);
    });

    test('build-image.sh builds a small, labelled image, reproducibly', (t) => {
      const first = buildImage(image);
      imageId = first.id;
      assert.match(imageId, /^[0-9a-f]{64}$/, `no image id from build-image.sh:\n${first.log}`);
      const second = buildImage(`${image}-again`);
      assert.equal(second.id, imageId, 'two builds of the same binary gave different image ids');

      const info = inspectImage();
      const cfg = info.Config;
      t.diagnostic(`image size ${(info.Size / 1e6).toFixed(1)} MB (${info.Size} bytes)`);
      // A sanitizer build (scripts/test.sh --sanitize) carries its runtime and instrumentation.
      if (buildMode() === 'plain') {
        assert.ok(info.Size < 64e6, `image is ${info.Size} bytes; expected a distroless-style image under 64 MB`);
      }
      assert.equal(cfg.User, '1000:1000');
      assert.deepEqual(cfg.Entrypoint, ENTRYPOINT);
      assert.ok(cfg.Env.includes('INFERBOX_CACHE=/var/cache/inferbox'), cfg.Env.join(' '));
      assert.ok('/var/cache/inferbox' in (cfg.Volumes ?? {}), JSON.stringify(cfg.Volumes));
      assert.equal(cfg.StopSignal, 'SIGTERM');

      const { version, llamaSource } = projectVersions();
      const labels = cfg.Labels;
      assert.equal(labels['org.opencontainers.image.version'], version);
      assert.equal(labels['io.inferbox.llama-cpp.source'], llamaSource);
      assert.ok(labels['io.inferbox.llama-cpp.commit'], 'no llama.cpp commit label');
      const epoch = spawnSync('git', ['-C', repoRoot, 'log', '-1', '--format=%ct'], { encoding: 'utf8' });
      if (epoch.status === 0) {
        const created = new Date(Number(epoch.stdout.trim()) * 1000).toISOString().replace(/\.000Z$/, 'Z');
        assert.equal(labels['org.opencontainers.image.created'], created);
        assert.equal(new Date(info.Created).toISOString().replace(/\.000Z$/, 'Z'), created);
      }
      // The same metadata as OCI manifest annotations.
      assert.equal(info.Annotations?.['org.opencontainers.image.version'], version,
        JSON.stringify(info.Annotations));
    });

    test('the Containerfiles\' runtime stages give the same image as the script', (t) => {
      assert.ok(imageId, 'the image was not built');
      const ctx = path.join(work, 'containerfile-context');
      run('script', ['--binary', serverBinary(), '--rootfs', path.join(ctx, 'rootfs')]);
      fs.mkdirSync(path.join(ctx, 'empty'));
      const ref = inspectImage();
      const refLabels = ref.Config.Labels;
      const refFiles = process.getuid() === 0 ? listFiles(image) : null;
      if (!refFiles) {
        t.diagnostic('not root: file listings not compared (buildah mount needs root)');
      }
      for (const name of CONTAINERFILES) {
        // The build stage replaced by the script's root filesystem; the runtime stage as written.
        const file = path.join(ctx, `${name}.test`);
        fs.writeFileSync(file, 'FROM scratch AS build\nCOPY rootfs/ /rootfs/\nCOPY empty/ /empty/\n' +
          runtimeStage(containerfile(name)));
        const tag = `localhost/inferbox-test:${suffix}-${name.toLowerCase().replace('.', '-')}`;
        run('buildah', ['build', '--quiet', '--layers=false', '--identity-label=false', '-f', file, '-t', tag,
          '--build-arg', `REVISION=${refLabels['org.opencontainers.image.revision']}`,
          '--build-arg', `CREATED=${refLabels['org.opencontainers.image.created']}`,
          '--build-arg', `LLAMA_CPP_COMMIT=${refLabels['io.inferbox.llama-cpp.commit']}`, ctx]);
        const got = JSON.parse(podman(['image', 'inspect', tag]).stdout)[0].Config;
        for (const key of ['User', 'Entrypoint', 'Cmd', 'WorkingDir', 'Volumes', 'ExposedPorts', 'StopSignal']) {
          assert.deepEqual(got[key], ref.Config[key], `${name}: ${key} differs from build-image.sh's image`);
        }
        const cuda = name.endsWith('.cuda');
        const env = got.Env.filter((e) => !(cuda && e.startsWith('NVIDIA_')));
        assert.deepEqual(env, ref.Config.Env, `${name}: Env differs from build-image.sh's image`);
        const labels = { ...got.Labels };
        delete labels['io.buildah.version'];
        const expected = { ...refLabels };
        if (cuda) {
          expected['io.inferbox.backend'] = 'cuda';
          expected['org.opencontainers.image.description'] =
            expected['org.opencontainers.image.description'].replace('(CPU build)', '(CUDA build)');
        }
        assert.deepEqual(labels, expected, `${name}: labels differ from build-image.sh's image`);
        if (refFiles) {
          assert.deepEqual(listFiles(tag), refFiles, `${name}: files differ from build-image.sh's image`);
        }
      }
    });

    test('the image user fills a model-cache volume with inferbox import', () => {
      assert.ok(imageId, 'the image was not built');
      const volume = `inferbox-cache-${suffix}`;
      const models = path.dirname(modelPath(MODELS.plain));
      runContainer(`inferbox-import-${suffix}`, {
        entrypoint: ['/usr/local/bin/inferbox', 'import', `/models/${MODELS.plain}`, '--name', 'stories260K'],
        volumes: [`${volume}:/var/cache/inferbox`, `${models}:/models:ro`],
        detach: false,
      });
      const listed = runContainer(`inferbox-models-${suffix}`, {
        entrypoint: ['/usr/local/bin/inferbox', 'models', '--json'],
        volumes: [`${volume}:/var/cache/inferbox:ro`],
        detach: false,
      });
      const names = JSON.parse(listed.stdout).map((m) => m.name);
      assert.deepEqual(names, ['stories260K']);
    });

    test('the image runs an RPC worker that a leader puts layers on', async () => {
      assert.ok(imageId, 'the image was not built');
      const port = await freePort();
      const name = `inferbox-rpc-worker-${suffix}`;
      runContainer(name, {
        entrypoint: ['/usr/local/bin/inferbox', 'rpc-worker', '--host', '127.0.0.1', '--port', String(port), '--threads', '1'],
      });
      try {
        const deadline = Date.now() + READY_TIMEOUT_MS;
        while (!/listening on/.test(logsOf(name))) {
          const state = JSON.parse(podman(['inspect', name]).stdout)[0].State;
          assert.equal(state.Running, true, `the worker stopped (exit ${state.ExitCode})\n${logsOf(name)}`);
          assert.ok(Date.now() < deadline, `the worker did not listen within ${READY_TIMEOUT_MS / 1000} s\n${logsOf(name)}`);
          await sleep(200);
        }
        const leader = await startServer({ model: MODELS.plain, args: ['--rpc', `127.0.0.1:${port}`] });
        try {
          assert.match(leader.log(), /RPC: \d+ of \d+ layers on 1 remote devices/);
          const res = await postJson(`${leader.url}/v1/completions`, { prompt: ONCE, max_tokens: 64, temperature: 0 });
          assert.equal(res.status, 200, res.text);
          assert.equal(res.body.choices[0].text, GREEDY_64);
        } finally {
          assert.equal((await leader.stop()).code, 0, leader.log());
        }
      } finally {
        podman(['rm', '--force', '--time', '0', name], { check: false });
      }
    });

    test('serves the same greedy completion as uid 1000, then drains and exits 0 on SIGTERM', async (t) => {
      assert.ok(imageId, 'the image was not built');
      const request = { prompt: ONCE, max_tokens: 8, temperature: 0 };

      // The reference: the same binary outside the container.
      const native = await startServer({ model: MODELS.plain });
      let expected;
      try {
        const res = await postJson(`${native.url}/v1/completions`, request);
        assert.equal(res.status, 200, res.text);
        expected = res.body.choices[0].text;
      } finally {
        await native.stop();
      }
      assert.ok(GREEDY_64.startsWith(expected) && expected.length > 0,
        `the binary's own greedy text ${JSON.stringify(expected)} is not the reference's start`);

      // The image's entrypoint with loopback and a free port instead of 0.0.0.0:8000.
      const port = await freePort();
      const entrypoint = inspectImage().Config.Entrypoint.slice();
      entrypoint[entrypoint.indexOf('--host') + 1] = '127.0.0.1';
      entrypoint[entrypoint.indexOf('--port') + 1] = String(port);
      const name = `inferbox-serve-${suffix}`;
      const models = path.dirname(modelPath(MODELS.plain));
      runContainer(name, {
        entrypoint,
        args: ['--model', `/models/${MODELS.plain}`, '--parallel', '4'],
        volumes: [`${models}:/models:ro`],
      });
      const url = `http://127.0.0.1:${port}`;
      try {
        const deadline = Date.now() + READY_TIMEOUT_MS;
        for (;;) {
          const state = JSON.parse(podman(['inspect', name]).stdout)[0].State;
          assert.equal(state.Running, true, `container stopped (exit ${state.ExitCode}) before it was ready\n${logsOf(name)}`);
          const ready = await fetch(`${url}/v1/health/ready`, { signal: AbortSignal.timeout(2000) })
            .then((r) => r.status).catch(() => 0);
          if (ready === 200) {
            break;
          }
          assert.ok(Date.now() < deadline, `not ready within ${READY_TIMEOUT_MS / 1000} s\n${logsOf(name)}`);
          await sleep(200);
        }

        const res = await postJson(`${url}/v1/completions`, request);
        assert.equal(res.status, 200, res.text);
        assert.equal(res.body.choices[0].text, expected, 'the container answers differently from the binary');
        assert.equal(res.body.usage.completion_tokens, 8);

        // Runs as uid 1000: the image config, and the kernel's view of the main process.
        const ctr = JSON.parse(podman(['inspect', name]).stdout)[0];
        assert.equal(ctr.Config.User, '1000:1000');
        const pid = ctr.State.Pid;
        assert.ok(pid > 0, `no pid for ${name}`);
        const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
        const uids = status.match(/^Uid:\s+(.*)$/m)[1].trim().split(/\s+/);
        const gids = status.match(/^Gid:\s+(.*)$/m)[1].trim().split(/\s+/);
        if (process.getuid() === 0) {
          // Rootful podman: container ids are host ids.
          assert.deepEqual(uids, ['1000', '1000', '1000', '1000'], status);
          assert.deepEqual(gids, ['1000', '1000', '1000', '1000'], status);
        }
        const top = podman(['top', name, 'user', 'args']).stdout;
        assert.match(top, /^inferbox\s+\/usr\/local\/bin\/inferbox serve/m, top);
        assert.match(status, /^CapEff:\s+0+$/m, 'the server has effective capabilities');

        // SIGTERM while a long request (16 choices × 400 tokens, several seconds) streams: the
        // listener closes, the stream still finishes, and the process exits 0.
        const ctl = new AbortController();
        const timer = setTimeout(() => ctl.abort(), 60_000);
        const stream = await fetch(`${url}/v1/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ prompt: ONCE, max_tokens: 400, n: 16, temperature: 0, stream: true }),
          signal: ctl.signal,
        });
        assert.equal(stream.status, 200);
        const reader = stream.body.getReader();
        const decoder = new TextDecoder();
        let text = '';
        while (!text.includes('data: ')) {
          const { value, done } = await reader.read();
          assert.ok(!done, 'stream ended before its first event');
          text += decoder.decode(value, { stream: true });
        }
        const signalled = Date.now();
        podman(['kill', '--signal', 'TERM', name]);
        // Readiness goes away at once (the listener is closed) while the stream keeps going.
        let readyDuringDrain = 200;
        for (let i = 0; i < 50 && readyDuringDrain === 200; i++) {
          readyDuringDrain = await fetch(`${url}/v1/health/ready`, { signal: AbortSignal.timeout(1000) })
            .then((r) => r.status).catch(() => 0);
          await sleep(20);
        }
        for (;;) {
          const { value, done } = await reader.read();
          if (done) {
            break;
          }
          text += decoder.decode(value, { stream: true });
        }
        clearTimeout(timer);
        const events = text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
        assert.equal(events[events.length - 1], '[DONE]', 'the drained stream did not end with [DONE]');
        const finished = events.slice(0, -1).map((e) => JSON.parse(e))
          .flatMap((c) => c.choices ?? []).filter((c) => c.finish_reason);
        assert.equal(finished.length, 16, 'not every choice finished during the drain');
        assert.ok(finished.every((c) => c.finish_reason === 'length'), JSON.stringify(finished));
        assert.notEqual(readyDuringDrain, 200, 'readiness still answered 200 while draining');

        const waited = podman(['wait', name], { timeout: (SHUTDOWN_TIMEOUT_S + 30) * 1000 });
        t.diagnostic(`exited ${Date.now() - signalled} ms after SIGTERM`);
        assert.equal(waited.stdout.trim(), '0', `exit code after SIGTERM\n${logsOf(name)}`);
        const state = JSON.parse(podman(['inspect', name]).stdout)[0].State;
        assert.equal(state.ExitCode, 0);
        assert.equal(state.OOMKilled, false);
        const log = logsOf(name);
        assert.match(log, /"msg":"signal 15: draining/, log.slice(-4000));
        assert.match(log, /"msg":"stopped"/, log.slice(-4000));
        // The access record of the drained stream comes after the drain began.
        const lines = log.split('\n');
        const drainAt = lines.findIndex((l) => l.includes('signal 15: draining'));
        const streamAt = lines.findIndex((l) => l.includes('"msg":"request"') && l.includes('"completion_tokens":6400'));
        assert.ok(streamAt > drainAt, `the long request finished before SIGTERM arrived\n${log.slice(-4000)}`);
      } catch (err) {
        process.stderr.write(`\n--- container log ---\n${logsOf(name).slice(-16_000)}\n--- end ---\n`);
        throw err;
      }
    });
  });
}
