// The Kubernetes manifests (deploy/k8s): every overlay rendered with `kubectl kustomize` (no cluster
// needed) and checked for what a cluster would otherwise reveal late — the server's real flags and
// endpoints against the Deployment (every flag exists in `inferbox serve --help`; --port,
// containerPort, Service targetPort and probe ports agree; the probe and metrics paths answer on the
// real server started with the Deployment's own arguments), volume paths against INFERBOX_CACHE
// and --model, the HPA's metric against the real /metrics exposition and the prometheus-adapter
// rule, selectors that pick exactly their own pods, and the hardening: no container runs as root,
// read-only root filesystems, no privilege escalation, all capabilities dropped, seccomp, limits
// on every container, a grace period longer than preStop + --shutdown-timeout. The router overlay's
// rendered arguments run for real: replicas and a router on loopback, chat through the OpenAI SDK.
//
// Needs kubectl >= 1.27 (its built-in kustomize v5; Debian 12's kubernetes-client is 1.20, too old,
// so scripts/setup.sh cannot install it) and the npm package `yaml` (a devDependency here).
// Without a usable kubectl this file FAILS; INFERBOX_SKIP_K8S=1 skips it instead.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { before, describe, test } from 'node:test';

import YAML from 'yaml';

import { MODELS, freePort, getJson, modelPath, openaiClient, repoRoot, serverBinary, startServer } from './harness.mjs';

const K8S = path.join(repoRoot, 'deploy', 'k8s');
const OVERLAYS = ['base', 'overlays/cpu', 'overlays/gpu', 'overlays/multi-model', 'overlays/rpc', 'overlays/inference-pool',
  'overlays/router'];
const ADAPTER = 'prometheus-adapter';
const CACHE_ROOT = '/var/cache/inferbox'; // the image's INFERBOX_CACHE (deploy/container)
const UID = 1000; // the image's user
const PROBE_PATHS = {
  livenessProbe: '/v1/health/live',
  readinessProbe: '/v1/health/ready',
  startupProbe: '/v1/health/ready',
};

function render(dir) {
  let out;
  try {
    out = execFileSync('kubectl', ['kustomize', path.join(K8S, dir)], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 60_000,
    });
  } catch (err) {
    if (err.code === 'ENOENT') {
      throw new Error('kubectl is missing: these tests render deploy/k8s with `kubectl kustomize` ' +
        '(install kubectl >= 1.27, which carries kustomize v5; no cluster is needed)');
    }
    throw new Error(`kubectl kustomize ${dir} failed:\n${err.stderr}`);
  }
  return YAML.parseAllDocuments(out).map((d) => {
    if (d.errors.length) {
      throw new Error(`kubectl kustomize ${dir}: unparsable YAML: ${d.errors[0].message}`);
    }
    return d.toJS();
  }).filter(Boolean);
}

// The flags of `inferbox serve` (or another subcommand): name -> takes a value.
function serveFlags(command = 'serve') {
  const help = execFileSync(serverBinary(), [command, '--help'], { encoding: 'utf8' });
  const flags = new Map();
  for (const line of help.split('\n')) {
    const m = line.match(/^\s+(?:-\w,)?(--[a-z0-9-]+)(?:\s+(\S+))?/);
    if (m) {
      flags.set(m[1], Boolean(m[2]) && /^[A-Z]/.test(m[2]));
    }
  }
  assert.ok(flags.has('--port') && (command !== 'serve' || flags.has('--model')), `could not read the flags from:\n${help}`);
  return flags;
}

// The arguments as [flag, value] pairs in order (value true for a switch); repeated flags
// (--backend, --route) stay separate pairs.
function argPairs(args, flags, command = 'serve') {
  const out = [];
  for (let i = 0; i < args.length; i++) {
    const flag = args[i];
    assert.ok(flag.startsWith('--'), `unexpected positional argument ${JSON.stringify(flag)} in ${JSON.stringify(args)}`);
    assert.ok(flags.has(flag), `${flag} is not a flag of \`inferbox ${command}\` (it would refuse to start; in a pod, a crash loop)`);
    if (flags.get(flag)) {
      assert.ok(i + 1 < args.length, `${flag} needs a value`);
      out.push([flag, args[++i]]);
    } else {
      out.push([flag, true]);
    }
  }
  return out;
}

// flag -> value (the last one of a repeated flag).
function parseArgs(args, flags, command = 'serve') {
  return new Map(argPairs(args, flags, command));
}

// The values of a repeated flag, in order.
const allOf = (pairs, flag) => pairs.filter(([f]) => f === flag).map(([, v]) => v);

function cpuCores(q) {
  const s = String(q);
  return s.endsWith('m') ? Number(s.slice(0, -1)) / 1000 : Number(s);
}

function bytes(q) {
  const m = String(q).match(/^([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$/);
  assert.ok(m, `unparsable quantity ${q}`);
  const mult = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(m[1]) * (m[2] ? mult[m[2]] : 1);
}

const matches = (selector, labels) => Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);

// A container's environment as Kubernetes builds it: envFrom ConfigMaps, then env values.
function environment(docs, container) {
  const env = {};
  for (const from of container.envFrom ?? []) {
    const name = from.configMapRef?.name;
    assert.ok(name, `envFrom without a configMapRef in ${container.name}`);
    const cm = docs.find((d) => d.kind === 'ConfigMap' && d.metadata.name === name);
    assert.ok(cm, `${container.name} reads ConfigMap ${name}, which the overlay does not define`);
    Object.assign(env, cm.data);
  }
  for (const e of container.env ?? []) {
    env[e.name] = e.value;
  }
  return env;
}

// $(VAR) references in command/args, expanded as the kubelet does.
function expand(value, env, where) {
  return String(value).replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (_, name) => {
    assert.ok(name in env, `${where} uses $(${name}), which is not in the container's environment`);
    return env[name];
  });
}

function portNumber(port, container) {
  if (typeof port === 'number') {
    return port;
  }
  const p = (container.ports ?? []).find((x) => x.name === port);
  assert.ok(p, `port name ${port} is not a port of container ${container.name}`);
  return p.containerPort;
}

function projectVersion() {
  const cmake = fs.readFileSync(path.join(repoRoot, 'CMakeLists.txt'), 'utf8');
  return cmake.match(/project\(inferbox VERSION ([0-9.]+)/)[1];
}

// The hardening every pod of every overlay must have (pod and every container), limits on every
// container, and volumes that exist.
function checkHardening(docs, pod, where) {
  const psc = pod.securityContext ?? {};
  assert.equal(psc.runAsNonRoot, true, `${where}: pod securityContext.runAsNonRoot`);
  assert.equal(psc.runAsUser, UID, `${where}: pod securityContext.runAsUser`);
  assert.equal(psc.seccompProfile?.type, 'RuntimeDefault', `${where}: pod seccompProfile`);
  assert.equal(pod.hostNetwork ?? false, false);
  assert.equal(pod.hostPID ?? false, false);
  const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
  const all = [...(pod.initContainers ?? []), ...pod.containers];
  for (const c of all) {
    const w = `${where}, container ${c.name}`;
    const sc = c.securityContext ?? {};
    const uid = sc.runAsUser ?? psc.runAsUser;
    assert.ok(uid !== undefined && uid !== 0, `${w} runs as root (runAsUser ${uid})`);
    assert.equal(uid, UID, `${w}: runAsUser`);
    assert.equal(sc.runAsNonRoot ?? psc.runAsNonRoot, true, `${w}: runAsNonRoot`);
    assert.equal(sc.allowPrivilegeEscalation, false, `${w}: allowPrivilegeEscalation`);
    assert.equal(sc.readOnlyRootFilesystem, true, `${w}: readOnlyRootFilesystem`);
    assert.equal(sc.privileged ?? false, false, `${w}: privileged`);
    assert.ok(sc.capabilities?.drop?.includes('ALL'), `${w}: capabilities.drop must include ALL`);
    assert.deepEqual(sc.capabilities?.add ?? [], [], `${w}: adds capabilities`);
    assert.equal((sc.seccompProfile ?? psc.seccompProfile)?.type, 'RuntimeDefault', `${w}: seccompProfile`);
    const { requests = {}, limits = {} } = c.resources ?? {};
    for (const r of ['cpu', 'memory']) {
      assert.ok(limits[r] !== undefined, `${w} has no ${r} limit`);
      assert.ok(requests[r] !== undefined, `${w} has no ${r} request`);
    }
    assert.ok(cpuCores(requests.cpu) <= cpuCores(limits.cpu), `${w}: cpu request above the limit`);
    assert.ok(bytes(requests.memory) <= bytes(limits.memory), `${w}: memory request above the limit`);
    for (const m of c.volumeMounts ?? []) {
      assert.ok(volumes.has(m.name), `${w} mounts volume ${m.name}, which the pod does not define`);
    }
  }
  for (const v of volumes.values()) {
    if (v.persistentVolumeClaim) {
      const claim = v.persistentVolumeClaim.claimName;
      assert.ok(docs.some((d) => d.kind === 'PersistentVolumeClaim' && d.metadata.name === claim),
        `${where}: volume ${v.name} claims ${claim}, which the overlay does not define`);
    }
  }

}

// The server pod of a Deployment (or of the router overlay's replica StatefulSet): hardening, the
// server container's flags, port, probes, paths, sizing and shutdown, the cache and the init
// container that fills it, the image. Returns what the later checks need.
function checkServerPod(docs, pod, flags, where) {
  checkHardening(docs, pod, where);
  const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));

  // The server container: flags, port, probes, paths, sizing, shutdown.
  const main = pod.containers.find((c) => (c.command ?? []).includes('serve'));
  assert.ok(main, `${where}: no container runs \`inferbox serve\``);
  assert.deepEqual(main.command, ['/usr/local/bin/inferbox', 'serve'], `${where}: command`);
  const env = environment(docs, main);
  const args = (main.args ?? []).map((a) => expand(a, env, `${where}: args`));
  const pairs = argPairs(args, flags);
  const opts = new Map(pairs);
  assert.equal(opts.get('--host'), '0.0.0.0', `${where}: --host must be 0.0.0.0 to be reachable in the pod`);
  const port = Number(opts.get('--port') ?? 8000);
  assert.ok(Number.isInteger(port) && port > 0, `${where}: --port ${opts.get('--port')}`);
  assert.ok((main.ports ?? []).some((p) => p.containerPort === port),
    `${where}: --port ${port} is not a containerPort (${JSON.stringify(main.ports)})`);
  const paths = {};
  for (const [probe, want] of Object.entries(PROBE_PATHS)) {
    const get = main[probe]?.httpGet;
    assert.ok(get, `${where}: no ${probe} (httpGet)`);
    assert.equal(get.path, want, `${where}: ${probe} path`);
    assert.equal(portNumber(get.port, main), port, `${where}: ${probe} port is not --port ${port}`);
    assert.equal(get.scheme ?? 'HTTP', opts.has('--tls-cert') ? 'HTTPS' : 'HTTP', `${where}: ${probe} scheme`);
    paths[probe] = get.path;
  }
  const startup = main.startupProbe;
  assert.ok(startup.periodSeconds * startup.failureThreshold >= 600,
    `${where}: the startup probe allows only ${startup.periodSeconds * startup.failureThreshold} s for the model load`);

  const shutdown = Number(opts.get('--shutdown-timeout') ?? 30);
  const preStop = main.lifecycle?.preStop?.sleep?.seconds ?? 0;
  const grace = pod.terminationGracePeriodSeconds ?? 30;
  assert.ok(grace > shutdown + preStop,
    `${where}: terminationGracePeriodSeconds ${grace} must exceed preStop ${preStop} s + --shutdown-timeout ${shutdown} s`);

  const threads = Number(opts.get('--threads'));
  assert.ok(Number.isInteger(threads) && threads >= 1, `${where}: set --threads (got ${opts.get('--threads')}); ` +
    'the default, one per node core, is throttled by the CPU limit');
  assert.ok(threads <= cpuCores(main.resources.limits.cpu),
    `${where}: --threads ${threads} exceeds the CPU limit ${main.resources.limits.cpu}`);
  const ctx = Number(opts.get('--ctx-size'));
  assert.ok(ctx > 0, `${where}: set --ctx-size; 0 means the model's trained context, often 128k tokens of KV per slot`);

  // The cache: INFERBOX_CACHE is a mount of a claim, read-only for the server, and --model is a
  // model in it under the name clients use.
  const cache = env.INFERBOX_CACHE;
  assert.equal(cache, CACHE_ROOT, `${where}: INFERBOX_CACHE must be the image's ${CACHE_ROOT}`);
  const cacheMount = (main.volumeMounts ?? []).find((m) => m.mountPath === cache);
  assert.ok(cacheMount, `${where}: nothing is mounted at INFERBOX_CACHE=${cache}`);
  assert.ok(volumes.get(cacheMount.name).persistentVolumeClaim, `${where}: the cache is not a PersistentVolumeClaim`);
  assert.equal(cacheMount.readOnly, true, `${where}: the server only reads the cache; mount it readOnly`);
  const name = env.MODEL_NAME;
  assert.match(name ?? '', /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/, `${where}: MODEL_NAME ${name} is not a cache name`);
  assert.equal(opts.get('--model'), `${cache}/models/${name}/model.gguf`, `${where}: --model is not the cached model`);
  assert.equal(opts.get('--model-name'), name, `${where}: --model-name should be the cache name`);
  for (const m of main.volumeMounts) {
    if (m.mountPath === '/tmp') {
      assert.ok(volumes.get(m.name).emptyDir, `${where}: /tmp must be an emptyDir`);
    }
  }
  assert.ok(main.volumeMounts.some((m) => m.mountPath === '/tmp'), `${where}: a read-only root needs /tmp mounted`);

  // The init container that fills the cache: same image, same cache, same name.
  const fetch = (pod.initContainers ?? []).find((c) => c.name === 'fetch-model');
  assert.ok(fetch, `${where}: no fetch-model init container`);
  assert.equal(fetch.image, main.image, `${where}: fetch-model must run the server's image`);
  const fenv = environment(docs, fetch);
  assert.equal(fenv.INFERBOX_CACHE, cache, `${where}: fetch-model's INFERBOX_CACHE differs from the server's`);
  assert.equal(fenv.MODEL_NAME, name, `${where}: fetch-model fills a different model`);
  const fmount = fetch.volumeMounts.find((m) => m.mountPath === cache);
  assert.ok(fmount && fmount.name === cacheMount.name && !fmount.readOnly,
    `${where}: fetch-model must mount the cache volume read-write at ${cache}`);
  const script = [...(fetch.command ?? []), ...(fetch.args ?? [])].join(' ');
  assert.match(script, /\/usr\/local\/bin\/inferbox (import|pull) .*--name "\$MODEL_NAME"/, `${where}: fetch-model script`);
  assert.match(script, /inferbox show "\$MODEL_NAME"/, `${where}: fetch-model must skip a cached model`);
  for (const m of script.matchAll(/"(\/[a-z]+)\/\$MODEL_FILE"/g)) {
    assert.ok(fetch.volumeMounts.some((v) => v.mountPath === m[1]), `${where}: fetch-model reads ${m[1]}, not mounted`);
  }
  const shell = fetch.command?.[0];
  assert.ok(fetch.volumeMounts.some((v) => shell.startsWith(`${v.mountPath}/`)),
    `${where}: fetch-model's ${shell} is on no mounted volume`);
  const provider = (pod.initContainers ?? []).find((c) => c !== fetch && (c.command ?? []).includes(shell));
  assert.ok(provider && pod.initContainers.indexOf(provider) < pod.initContainers.indexOf(fetch),
    `${where}: no earlier init container provides ${shell}`);

  // The image: the project's version.
  const tag = main.image.split(':').pop();
  assert.match(tag, new RegExp(`^${projectVersion().replace(/\./g, '\\.')}(-cuda)?$`),
    `${where}: image ${main.image} is not tagged with CMakeLists.txt's version`);
  return { main, args, pairs, opts, port, paths, modelName: name };
}

// Everything about one Deployment that can be checked without a cluster; returns what the
// server-side checks need.
function checkDeployment(docs, dep, flags, overlay) {
  const where = `${overlay}: Deployment ${dep.metadata.name}`;
  const pod = dep.spec.template.spec;
  const podLabels = dep.spec.template.metadata.labels;
  assert.ok(matches(dep.spec.selector.matchLabels, podLabels), `${where}: selector does not match its pods`);
  const deployments = docs.filter((d) => d.kind === 'Deployment');
  for (const other of deployments.filter((d) => d !== dep)) {
    assert.ok(!matches(dep.spec.selector.matchLabels, other.spec.template.metadata.labels),
      `${where}: selector also matches ${other.metadata.name}'s pods`);
  }

  const server = checkServerPod(docs, pod, flags, where);
  const { main, opts, port } = server;
  const rpc = opts.has('--rpc');
  const router = opts.has('--backend');
  if (rpc) {
    // The workers serve one leader at a time: a surge pod could never connect.
    assert.equal(dep.spec.strategy?.type, 'Recreate', `${where}: a leader with --rpc must be replaced, not surged`);
    assert.equal(dep.spec.replicas, 1, `${where}: one leader per worker group`);
  } else {
    assert.equal(dep.spec.strategy?.rollingUpdate?.maxUnavailable, 0,
      `${where}: a rolling update must not remove a pod before its replacement is ready`);
  }

  // Service, ServiceMonitor, PDB and HPA belong to exactly this Deployment.
  const services = docs.filter((d) => d.kind === 'Service' && matches(d.spec.selector, podLabels));
  assert.equal(services.length, 1, `${where}: ${services.length} Services select its pods`);
  const svc = services[0];
  for (const other of deployments.filter((d) => d !== dep)) {
    assert.ok(!matches(svc.spec.selector, other.spec.template.metadata.labels),
      `${where}: Service ${svc.metadata.name} also selects ${other.metadata.name}'s pods`);
  }
  for (const p of svc.spec.ports) {
    assert.equal(portNumber(p.targetPort ?? p.port, main), port, `${where}: Service port ${p.name} misses --port`);
  }
  const monitor = checkMonitor(docs, svc, where);
  const pdbs = docs.filter((d) => d.kind === 'PodDisruptionBudget' && matches(d.spec.selector?.matchLabels, podLabels));
  assert.equal(pdbs.length, 1, `${where}: ${pdbs.length} PodDisruptionBudgets cover its pods`);
  assert.ok(Object.keys(pdbs[0].spec.selector.matchLabels).length > 0, `${where}: PDB with an empty selector`);
  const hpas = docs.filter((d) => d.kind === 'HorizontalPodAutoscaler' && d.spec.scaleTargetRef.name === dep.metadata.name);
  let hpaMetrics = [];
  if (rpc || router) {
    // A leader's workers serve one leader; a router's own queue stays empty (it relays).
    assert.equal(hpas.length, 0, `${where}: an RPC leader or a router is not scaled on its queue`);
  } else {
    assert.equal(hpas.length, 1, `${where}: ${hpas.length} HPAs scale it`);
    const hpa = hpas[0];
    assert.equal(hpa.spec.scaleTargetRef.kind, 'Deployment');
    assert.ok(hpa.spec.minReplicas >= 1 && hpa.spec.maxReplicas >= hpa.spec.minReplicas, `${where}: HPA replica range`);
    hpaMetrics = hpa.spec.metrics.map((m) => {
      assert.equal(m.type, 'Pods', `${where}: HPA metric type ${m.type} (custom metrics per pod expected)`);
      return m.pods.metric.name;
    });
  }
  const ownObjects = [svc, monitor, pdbs[0]];
  const workers = rpc ? checkWorkers(docs, opts.get('--rpc'), podLabels, ownObjects, where) : [];
  const replicas = router ? checkReplicas(docs, flags, server, podLabels, ownObjects, where) : [];

  return {
    ...server,
    where,
    metricsPaths: monitor.spec.endpoints.map((e) => e.path ?? '/metrics'),
    hpaMetrics,
    pod,
    workers,
    replicas,
  };
}

// The one ServiceMonitor that scrapes `svc`, and only it, on one of its ports.
function checkMonitor(docs, svc, where) {
  const monitors = docs.filter((d) => d.kind === 'ServiceMonitor' && matches(d.spec.selector.matchLabels, svc.metadata.labels));
  assert.equal(monitors.length, 1, `${where}: ${monitors.length} ServiceMonitors select Service ${svc.metadata.name}`);
  const monitor = monitors[0];
  const scraped = docs.filter((d) => d.kind === 'Service' && matches(monitor.spec.selector.matchLabels, d.metadata.labels));
  assert.deepEqual(scraped.map((s) => s.metadata.name), [svc.metadata.name],
    `${where}: ServiceMonitor ${monitor.metadata.name} must select only its Service`);
  for (const e of monitor.spec.endpoints) {
    assert.ok(svc.spec.ports.some((p) => p.name === e.port), `${where}: ServiceMonitor port ${e.port} is not a Service port name`);
  }
  return monitor;
}

// A router's replicas (overlays/router): a StatefulSet of model servers, each checked as a server
// pod, behind a headless Service whose stable pod names are exactly the router's --backend URLs
// (one per ordinal, on the replicas' port), serving the model the router routes `balanced`; a PDB
// and a ServiceMonitor of their own, none of the router's objects selecting them. Returns, per
// ordinal, the backend's name, its URL and the replica's server arguments.
function checkReplicas(docs, flags, router, routerLabels, routerObjects, where) {
  const sets = docs.filter((d) => d.kind === 'StatefulSet' &&
    (d.spec.template.spec.containers ?? []).some((c) => (c.command ?? []).includes('serve')));
  assert.equal(sets.length, 1, `${where}: ${sets.length} StatefulSets of model servers behind the router`);
  const sts = sets[0];
  const w = `${where}: StatefulSet ${sts.metadata.name}`;
  const labels = sts.spec.template.metadata.labels;
  assert.ok(matches(sts.spec.selector.matchLabels, labels), `${w}: selector does not match its pods`);
  assert.ok(!matches(sts.spec.selector.matchLabels, routerLabels), `${w}: its selector matches the router's pods`);
  for (const o of routerObjects) {
    assert.ok(!matches(o.spec.selector?.matchLabels ?? o.spec.selector, labels),
      `${where}: ${o.kind} ${o.metadata.name} also selects the replicas`);
  }
  const replica = checkServerPod(docs, sts.spec.template.spec, flags, w);

  const svc = docs.find((d) => d.kind === 'Service' && d.metadata.name === sts.spec.serviceName);
  assert.ok(svc, `${w}: serviceName ${sts.spec.serviceName} is not a Service of the overlay`);
  assert.equal(svc.spec.clusterIP, 'None', `${w}: the replicas' Service must be headless (one DNS name per pod)`);
  assert.ok(matches(svc.spec.selector, labels), `${w}: Service ${svc.metadata.name} does not select the replicas`);
  assert.ok(svc.spec.ports.every((p) => portNumber(p.targetPort ?? p.port, replica.main) === replica.port &&
    p.port === replica.port), `${w}: Service ${svc.metadata.name} must expose --port ${replica.port} as it is`);
  checkMonitor(docs, svc, w);
  const pdbs = docs.filter((d) => d.kind === 'PodDisruptionBudget' && matches(d.spec.selector?.matchLabels, labels));
  assert.equal(pdbs.length, 1, `${w}: ${pdbs.length} PodDisruptionBudgets cover the replicas`);

  // The router: `balanced` for the replicas' model, which it does not serve itself, and one
  // --backend per ordinal naming that pod on the replicas' port.
  const model = replica.modelName;
  assert.notEqual(router.modelName, model, `${where}: the router's own model must not be the routed model`);
  assert.ok(allOf(router.pairs, '--route').includes(`${model}=balanced`),
    `${where}: no --route ${model}=balanced (${allOf(router.pairs, '--route')})`);
  const backends = allOf(router.pairs, '--backend').map((spec) => {
    const m = spec.match(/^([^=;]+)=([^;]+)(.*)$/);
    assert.ok(m, `${where}: unparsable --backend ${spec}`);
    const models = (m[3].match(/;models=([^;]*)/)?.[1] ?? '').split(',');
    assert.ok(models.some((x) => x === model || x === `${model}=${model}`),
      `${where}: --backend ${m[1]} does not serve ${model} (${spec})`);
    return { name: m[1], url: m[2] };
  });
  const expected = Array.from({ length: sts.spec.replicas },
    (_, i) => `http://${sts.metadata.name}-${i}.${svc.metadata.name}:${replica.port}/v1`);
  assert.deepEqual(backends.map((b) => b.url), expected, `${where}: one --backend per replica, in ordinal order`);
  assert.equal(new Set(backends.map((b) => b.name)).size, backends.length, `${where}: backend names repeat`);
  return backends.map((b) => ({ ...b, pairs: replica.pairs, modelName: model }));
}

// The RPC workers a leader's --rpc names: a StatefulSet running `inferbox rpc-worker` behind a
// headless Service whose stable pod names are exactly the --rpc list, on the workers' port,
// hardened, reachable only from the leader's pods, and selected by none of the leader's objects.
// Returns the workers' argument lists, one per replica.
function checkWorkers(docs, rpcList, leaderLabels, leaderObjects, where) {
  const sets = docs.filter((d) => d.kind === 'StatefulSet' &&
    (d.spec.template.spec.containers ?? []).some((c) => (c.command ?? []).includes('rpc-worker')));
  assert.equal(sets.length, 1, `${where}: ${sets.length} StatefulSets of RPC workers`);
  const sts = sets[0];
  const w = `${where}: StatefulSet ${sts.metadata.name}`;
  const pod = sts.spec.template.spec;
  const labels = sts.spec.template.metadata.labels;
  assert.ok(matches(sts.spec.selector.matchLabels, labels), `${w}: selector does not match its pods`);
  checkHardening(docs, pod, w);
  const worker = pod.containers.find((c) => (c.command ?? []).includes('rpc-worker'));
  assert.deepEqual(worker.command, ['/usr/local/bin/inferbox', 'rpc-worker'], `${w}: command`);
  const args = (worker.args ?? []).map((a) => expand(a, environment(docs, worker), `${w}: args`));
  const opts = parseArgs(args, serveFlags('rpc-worker'), 'rpc-worker');
  assert.equal(opts.get('--host'), '0.0.0.0', `${w}: --host must be 0.0.0.0 to be reachable in the pod`);
  const port = Number(opts.get('--port') ?? 50052);
  assert.ok(worker.ports.some((p) => p.containerPort === port), `${w}: --port ${port} is not a containerPort`);
  const threads = Number(opts.get('--threads'));
  assert.ok(threads >= 1 && threads <= cpuCores(worker.resources.limits.cpu),
    `${w}: --threads ${opts.get('--threads')} must be set and within the CPU limit`);

  const svc = docs.find((d) => d.kind === 'Service' && d.metadata.name === sts.spec.serviceName);
  assert.ok(svc, `${w}: serviceName ${sts.spec.serviceName} is not a Service of the overlay`);
  assert.equal(svc.spec.clusterIP, 'None', `${w}: the workers' Service must be headless (stable pod names)`);
  assert.equal(svc.spec.publishNotReadyAddresses, true, `${w}: the leader must resolve workers that have no readiness`);
  assert.ok(matches(svc.spec.selector, labels), `${w}: Service ${svc.metadata.name} does not select the workers`);
  assert.ok(svc.spec.ports.some((p) => portNumber(p.targetPort ?? p.port, worker) === port && p.port === port),
    `${w}: Service ${svc.metadata.name} does not expose port ${port}`);
  const expected = Array.from({ length: sts.spec.replicas },
    (_, i) => `${sts.metadata.name}-${i}.${svc.metadata.name}:${port}`);
  assert.deepEqual(rpcList.split(','), expected, `${where}: --rpc must list the StatefulSet's pods`);

  assert.ok(!matches(sts.spec.selector.matchLabels, leaderLabels), `${w}: its selector matches the leader's pods`);
  for (const o of leaderObjects) {
    const sel = o.spec.selector?.matchLabels ?? o.spec.selector;
    assert.ok(!matches(sel, labels), `${where}: ${o.kind} ${o.metadata.name} also selects the RPC workers`);
  }
  const policies = docs.filter((d) => d.kind === 'NetworkPolicy' && matches(d.spec.podSelector.matchLabels, labels));
  assert.equal(policies.length, 1, `${w}: ${policies.length} NetworkPolicies guard the workers (RPC has no authentication)`);
  const np = policies[0];
  assert.deepEqual(np.spec.policyTypes, ['Ingress'], `${w}: NetworkPolicy policyTypes`);
  for (const rule of np.spec.ingress) {
    for (const from of rule.from ?? []) {
      assert.ok(from.podSelector && !from.namespaceSelector && !from.ipBlock,
        `${w}: the NetworkPolicy admits more than pods of this namespace: ${JSON.stringify(from)}`);
      assert.ok(matches(from.podSelector.matchLabels, leaderLabels), `${w}: the NetworkPolicy admits pods that are not the leader`);
      assert.ok(Object.keys(from.podSelector.matchLabels).length > 0, `${w}: the NetworkPolicy admits every pod`);
    }
    assert.ok((rule.from ?? []).length > 0, `${w}: an ingress rule without 'from' admits everyone`);
    assert.ok(rule.ports.every((p) => portNumber(p.port, worker) === port), `${w}: the NetworkPolicy opens other ports`);
  }
  return expected.map(() => args);
}

// Every sample of a Prometheus text exposition: name -> list of label objects.
function exposition(text) {
  const out = new Map();
  for (const line of text.split('\n')) {
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$/);
    if (!m) {
      continue;
    }
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)]
      .map((x) => [x[1], x[2]]));
    if (!out.has(m[1])) {
      out.set(m[1], []);
    }
    out.get(m[1]).push(labels);
  }
  return out;
}

function loud(msg) {
  const bar = '!'.repeat(100);
  process.stderr.write(`\n${bar}\n!! ${msg}\n${bar}\n\n`);
}

// Why kubectl cannot render the manifests, or null when it can.
function kubectlProblem() {
  let out;
  try {
    out = execFileSync('kubectl', ['version', '--client', '-o', 'json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    return err.code === 'ENOENT' ? 'kubectl is not installed' : `kubectl version failed: ${err.stderr}`;
  }
  const v = JSON.parse(out).kustomizeVersion ?? '';
  const major = Number(v.match(/^v?(\d+)/)?.[1] ?? 0);
  return major >= 5 ? null : `kubectl's kustomize is ${v || 'absent'}; deploy/k8s needs kustomize v5 (kubectl >= 1.27)`;
}

// The systemd unit (deploy/systemd/inferbox.service) needs no kubectl: always checked.
describe('systemd unit (deploy/systemd/inferbox.service)', () => {
  const unitFile = path.join(repoRoot, 'deploy', 'systemd', 'inferbox.service');

  test('ExecStart uses real flags and stop waits out the drain', () => {
    const unit = fs.readFileSync(unitFile, 'utf8').replace(/\\\n/g, ' ');
    const exec = unit.match(/^ExecStart=(.*)$/m)[1].trim().split(/\s+/);
    assert.deepEqual(exec.slice(0, 2), ['/usr/local/bin/inferbox', 'serve']);
    const env = {};
    for (const m of unit.matchAll(/^Environment=([A-Z_]+)=(.*)$/gm)) {
      env[m[1]] = m[2];
    }
    // systemd: ${VAR} inside a word, $VAR alone splits into words (empty here).
    const args = exec.slice(2).flatMap((w) => (/^\$[A-Z_]+$/.test(w)
      ? (env[w.slice(1)] ?? '').split(/\s+/).filter(Boolean)
      : [w.replace(/\$\{([A-Z_]+)\}/g, (_, n) => env[n] ?? '')]));
    const opts = parseArgs(args, serveFlags());
    assert.equal(opts.get('--model'), `${env.INFERBOX_CACHE}/models/${env.INFERBOX_MODEL_NAME}/model.gguf`);
    assert.match(unit, /^CacheDirectory=inferbox$/m);
    assert.equal(env.INFERBOX_CACHE, CACHE_ROOT);
    const shutdown = Number(opts.get('--shutdown-timeout') ?? 30);
    const stop = Number(unit.match(/^TimeoutStopSec=(\d+)$/m)?.[1] ?? 90);
    assert.ok(stop > shutdown, `TimeoutStopSec ${stop} must exceed --shutdown-timeout ${shutdown}`);
    for (const line of ['DynamicUser=yes', 'ProtectSystem=strict', 'NoNewPrivileges=yes', 'CapabilityBoundingSet=']) {
      assert.ok(unit.split('\n').includes(line), `missing hardening: ${line}`);
    }
  });

  test('systemd-analyze verify accepts it', (t) => {
    try {
      execFileSync('systemd-analyze', ['--version'], { stdio: 'ignore' });
    } catch {
      t.skip('systemd-analyze is not installed');
      return;
    }
    // verify wants ExecStart's binary to exist: point it at the one under test. Where systemd is
    // not running, verify leaves a timestamp file behind: removed again if this test made it.
    const stamp = '/run/systemd/systemd-units-load';
    const hadStamp = fs.existsSync(stamp);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-unit-'));
    try {
      const copy = path.join(dir, 'inferbox.service');
      fs.writeFileSync(copy, fs.readFileSync(unitFile, 'utf8').replace('/usr/local/bin/inferbox serve', `${serverBinary()} serve`));
      try {
        execFileSync('systemd-analyze', ['verify', copy], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      } catch (err) {
        assert.fail(`systemd-analyze verify:\n${err.stdout}${err.stderr}`);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
      if (!hadStamp) {
        fs.rmSync(stamp, { force: true });
      }
    }
  });
});

const kubectlIssue = kubectlProblem();
if (process.env.INFERBOX_SKIP_K8S === '1') {
  loud('k8s.test.mjs SKIPPED because INFERBOX_SKIP_K8S=1: the Kubernetes manifests are NOT checked');
  test('Kubernetes manifests (skipped: INFERBOX_SKIP_K8S=1)', { skip: 'INFERBOX_SKIP_K8S=1' }, () => {});
} else if (kubectlIssue) {
  const msg = `${kubectlIssue}: install kubectl >= 1.27 (https://kubernetes.io/docs/tasks/tools/; no cluster is ` +
    'needed), or set INFERBOX_SKIP_K8S=1 to skip these tests on purpose';
  loud(msg);
  test('kubectl with kustomize v5 is installed', () => {
    assert.fail(msg);
  });
} else {
  manifestTests();
}

function manifestTests() {
  describe('Kubernetes manifests (deploy/k8s)', () => {
    let flags;
    const rendered = {};
    const deployments = []; // what checkDeployment returned, per overlay
    let adapterRules;

    before(() => {
      flags = serveFlags();
    });

    for (const overlay of OVERLAYS) {
      test(`${overlay} renders and is consistent with the server`, () => {
        const docs = render(overlay);
        rendered[overlay] = docs;
        const kinds = new Set(docs.map((d) => d.kind));
        // The RPC overlay's leader cannot scale (its workers serve one leader), nor is the router
        // scaled on its queue (it relays to its replicas): no HPA there.
        const extra = {
          'overlays/rpc': ['StatefulSet', 'NetworkPolicy'],
          'overlays/router': ['StatefulSet'],
        }[overlay] ?? ['HorizontalPodAutoscaler'];
        for (const k of ['Deployment', 'Service', 'PersistentVolumeClaim', 'PodDisruptionBudget', ...extra,
          'ServiceMonitor', 'ConfigMap']) {
          assert.ok(kinds.has(k), `${overlay} renders no ${k}`);
        }
        const deps = docs.filter((d) => d.kind === 'Deployment');
        for (const dep of deps) {
          deployments.push({ overlay, ...checkDeployment(docs, dep, flags, overlay) });
        }
        // Every object is named uniquely per kind.
        const ids = docs.map((d) => `${d.kind}/${d.metadata.namespace ?? ''}/${d.metadata.name}`);
        assert.equal(new Set(ids).size, ids.length, `${overlay}: duplicate objects ${ids.join(' ')}`);
      });
    }

    test('overlays: CPU, GPU and multi-model differ where they should', () => {
      const of = (overlay) => deployments.filter((d) => d.overlay === overlay);
      for (const overlay of ['base', 'overlays/cpu']) {
        for (const d of of(overlay)) {
          assert.ok(!d.main.image.endsWith('-cuda'), `${d.where}: CPU overlay with the CUDA image`);
          assert.equal(d.main.resources.limits['nvidia.com/gpu'], undefined, `${d.where}: CPU overlay asks for a GPU`);
        }
      }
      const [gpu] = of('overlays/gpu');
      assert.ok(gpu, 'overlays/gpu renders no Deployment');
      assert.ok(gpu.main.image.endsWith('-cuda'), `${gpu.where}: not the CUDA image (${gpu.main.image})`);
      assert.ok(Number(gpu.main.resources.limits['nvidia.com/gpu']) >= 1, `${gpu.where}: no nvidia.com/gpu limit`);
      assert.ok(gpu.pod.tolerations?.some((t) => t.key === 'nvidia.com/gpu'), `${gpu.where}: no toleration for GPU taints`);
      assert.ok(Object.keys(gpu.pod.nodeSelector ?? {}).length > 0, `${gpu.where}: no nodeSelector for GPU nodes`);
      const [leader] = of('overlays/rpc');
      assert.ok(leader?.workers.length >= 2, 'overlays/rpc must split the model over at least two workers');
      const multi = of('overlays/multi-model');
      assert.equal(multi.length, 2, 'overlays/multi-model must render two Deployments');
      assert.notEqual(multi[0].modelName, multi[1].modelName, 'overlays/multi-model serves one model twice');
    });

    test('inference-pool: the pool selects the server pods on their port; the server shows what its EPP reads',
      async () => {
        const docs = rendered['overlays/inference-pool'] ?? render('overlays/inference-pool');
        const pool = docs.find((d) => d.kind === 'InferencePool');
        assert.ok(pool, 'overlays/inference-pool renders no InferencePool');
        assert.equal(pool.apiVersion, 'inference.networking.k8s.io/v1');
        const dep = docs.find((d) => d.kind === 'Deployment');
        assert.ok(matches(pool.spec.selector.matchLabels, dep.spec.template.metadata.labels),
          'the pool does not select the Deployment\'s pods');
        const main = dep.spec.template.spec.containers.find((c) => (c.command ?? []).includes('serve'));
        assert.ok(main.ports.some((p) => p.containerPort === pool.spec.targetPorts[0].number),
          `targetPorts ${JSON.stringify(pool.spec.targetPorts)} is not the server's port`);
        assert.ok(main.args.includes('--metrics-vllm-names'), 'the EPP reads vLLM\'s metric names');
        assert.ok(pool.spec.endpointPickerRef?.name, 'no endpointPickerRef');
        const route = docs.find((d) => d.kind === 'HTTPRoute');
        assert.deepEqual(route?.spec.rules[0].backendRefs[0],
          { group: 'inference.networking.k8s.io', kind: 'InferencePool', name: pool.metadata.name });
        // The model-server protocol's series, under the names the reference EPP scrapes.
        const server = await startServer({ model: MODELS.plain, args: ['--metrics-vllm-names'] });
        try {
          const text = (await getJson(`${server.url}/metrics`)).text;
          for (const name of ['vllm:num_requests_waiting', 'vllm:gpu_cache_usage_perc', 'vllm:lora_requests_info']) {
            assert.match(text, new RegExp(`^${name}\\{`, 'm'), `${name} is not on /metrics`);
          }
          assert.match(text, /^vllm:lora_requests_info\{[^}]*max_lora="\d+"[^}]*running_lora_adapters="[^"]*"/m);
        } finally {
          await server.stop();
        }
      });

    test('prometheus-adapter exposes the metric the HPAs scale on', () => {
      const docs = render(ADAPTER);
      const cm = docs.find((d) => d.kind === 'ConfigMap');
      assert.ok(cm?.data?.['config.yaml'], `${ADAPTER} renders no ConfigMap with config.yaml`);
      adapterRules = YAML.parse(cm.data['config.yaml']).rules;
      assert.ok(Array.isArray(adapterRules) && adapterRules.length > 0, 'no adapter rules');
      const exposed = new Map();
      for (const r of adapterRules) {
        const series = r.seriesQuery.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)/)[1];
        assert.deepEqual(r.resources?.overrides?.pod, { resource: 'pod' }, `rule for ${series}: no pod mapping`);
        assert.deepEqual(r.resources?.overrides?.namespace, { resource: 'namespace' }, `rule for ${series}: no namespace mapping`);
        const as = r.name?.as ?? series;
        if (r.name?.matches) {
          assert.match(series, new RegExp(r.name.matches), `rule ${as}: name.matches does not match ${series}`);
        }
        exposed.set(as, series);
      }
      assert.ok(deployments.length > 0, 'no Deployment was checked');
      for (const d of deployments) {
        for (const m of d.hpaMetrics) {
          assert.ok(exposed.has(m), `${d.where}: HPA metric ${m} is not served by the adapter (rules: ${[...exposed.keys()]})`);
        }
      }
    });

    test('each Deployment\'s own arguments start the real server; probes, metrics and HPA series are there', async () => {
      assert.ok(deployments.length > 0 && adapterRules, 'the earlier tests did not run');
      // One server per distinct argument list (the multi-model pair differs only in names).
      const seen = new Set();
      for (const d of deployments) {
        const key = runnableArgs(d.pairs).join(' ');
        if (seen.has(key)) {
          continue;
        }
        seen.add(key);
        const workers = await startWorkers(d);
        let replicas = [];
        let server;
        try {
          replicas = await startReplicas(d);
          // What names other pods (the workers, the replicas) points at where they run here.
          server = await startServer({
            model: modelPath(MODELS.plain),
            args: runnableArgs(d.pairs, (flag, value) => {
              if (flag === '--rpc') {
                return workers.map((w) => w.endpoint).join(',');
              }
              const r = flag === '--backend' && replicas.find((x) => value.includes(`=${x.url};`));
              return r ? value.replace(r.url, `${r.server.url}/v1`) : value;
            }),
          });
        } catch (err) {
          workers.forEach((w) => w.child.kill('SIGKILL'));
          await Promise.all(replicas.map((r) => r.server.stop()));
          throw err;
        }
        try {
          if (workers.length) {
            assert.match(server.log(), new RegExp(`RPC: \\d+ of \\d+ layers on ${workers.length} remote devices`),
              `${d.where}: the leader did not put layers on its workers`);
          }
          for (const [probe, p] of Object.entries(d.paths)) {
            const res = await getJson(`${server.url}${p}`);
            assert.equal(res.status, 200, `${d.where}: ${probe} ${p} answered ${res.status}: ${res.text}`);
          }
          for (const p of d.metricsPaths) {
            const res = await fetch(`${server.url}${p}`);
            const text = await res.text();
            assert.equal(res.status, 200, `${d.where}: ServiceMonitor path ${p} answered ${res.status}`);
            const series = exposition(text);
            for (const m of d.hpaMetrics) {
              const rule = adapterRules.find((r) => (r.name?.as ?? '') === m);
              assert.ok(rule, `${d.where}: no adapter rule serves HPA metric ${m}`);
              const name = rule.seriesQuery.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)/)[1];
              assert.ok(series.has(name), `${d.where}: /metrics has no ${name} (HPA metric ${m})`);
              assert.ok(series.get(name).some((l) => l.model_name === d.modelName),
                `${d.where}: ${name} has no model_name="${d.modelName}" series: ${JSON.stringify(series.get(name))}`);
            }
            for (const r of adapterRules) {
              const name = r.seriesQuery.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)/)[1];
              assert.ok(series.has(name), `the adapter rule reads ${name}, which /metrics does not expose`);
            }
          }
          if (replicas.length) {
            await checkRoutedChat(server, d, replicas);
          }
        } catch (err) {
          process.stderr.write(`\n--- ${d.where}: server log ---\n${server.log().slice(-6000)}\n` +
            replicas.map((r) => `--- replica ${r.name} log ---\n${r.server.log().slice(-3000)}\n`).join(''));
          throw err;
        } finally {
          const exit = await server.stop();
          workers.forEach((w) => w.child.kill('SIGKILL'));
          await Promise.all(replicas.map((r) => r.server.stop()));
          assert.equal(exit.code, 0, `${d.where}: the server exited ${exit.code} on SIGTERM\n${server.log().slice(-4000)}`);
        }
      }
    });
  });
}

// A Deployment's server arguments as they can run here: the pod's --model path exists only in the
// cluster (the caller serves a test model instead), host and port are the harness's (loopback, a
// free port), and GPU offload becomes 0 (no GPU here: serve refuses offload without a device,
// which profiles.test.mjs checks, so the GPU overlay's arguments run on the CPU). `endpoint`
// rewrites a value that names other pods (--rpc's workers, --backend's replicas).
function runnableArgs(pairs, endpoint = (flag, value) => value) {
  const rest = [];
  for (const [flag, value] of pairs) {
    if (['--model', '--host', '--port'].includes(flag)) {
      continue;
    }
    rest.push(flag);
    if (flag === '--gpu-layers' && value !== '0') {
      rest.push('0');
    } else if (value !== true) {
      rest.push(endpoint(flag, value));
    }
  }
  return rest;
}

// A leader's workers: real `inferbox rpc-worker`s with the StatefulSet's own arguments, on
// loopback ports instead of the pods' names, once each listens.
async function startWorkers(d) {
  const workers = [];
  for (const wargs of d.workers) {
    const wport = await freePort();
    const argv = [];
    for (let i = 0; i < wargs.length; i++) {
      const flag = wargs[i];
      argv.push(flag);
      if (flag === '--host' || flag === '--port') {
        argv.push(flag === '--host' ? '127.0.0.1' : String(wport));
        i++;
      }
    }
    const child = spawn(serverBinary(), ['rpc-worker', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout.on('data', (x) => { log += x; });
    child.stderr.on('data', (x) => { log += x; });
    workers.push({ child, endpoint: `127.0.0.1:${wport}`, log: () => log });
  }
  try {
    for (const w of workers) {
      const deadline = Date.now() + 20_000;
      while (!/listening on/.test(w.log())) {
        assert.ok(Date.now() < deadline && w.child.exitCode === null, `${d.where}: rpc-worker did not start:\n${w.log()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  } catch (err) {
    workers.forEach((w) => w.child.kill('SIGKILL'));
    throw err;
  }
  return workers;
}

// A router's replicas: real `inferbox serve`s with the StatefulSet's own arguments, on loopback
// ports instead of the pods' names. They serve the ChatML test model under the replicas'
// --model-name (the base's stories260K has no chat template, and the id is all the router sees),
// each engine step 5 ms slower (a test-build failpoint) so that a stream is still running while
// the next request is routed.
async function startReplicas(d) {
  const started = await Promise.allSettled(d.replicas.map((r) => startServer({
    model: MODELS.chatml, args: runnableArgs(r.pairs), env: { INFERBOX_FAILPOINT_STEP_DELAY_MS: '5' },
  })));
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) {
    await Promise.all(started.filter((s) => s.status === 'fulfilled').map((s) => s.value.stop()));
    throw failed.reason;
  }
  return d.replicas.map((r, i) => ({ ...r, server: started[i].value }));
}

// The router's rendered --route/--backend at work, through the OpenAI SDK: answers come from the
// replicas and say which (X-Inferbox-Backend); a request that arrives while one replica streams
// goes to an idle one (fewest in flight); each conversation's next turn goes back to the replica
// that served it (X-Inferbox-Route: affinity).
async function checkRoutedChat(router, d, replicas) {
  const client = openaiClient(router);
  const model = d.replicas[0].modelName;
  const names = replicas.map((r) => r.name);
  // Two conversations whose first messages differ and fill the 512 bytes affinity hashes.
  const opening = (n) => `Story ${n}. ${'Lily had a big red ball and she loved to play with it in the park. '.repeat(8)}`;
  const ask = async (messages, stream = false) => {
    const { data, response } = await client.chat.completions
      .create({ model, messages, max_tokens: stream ? 48 : 16, temperature: 0, stream })
      .withResponse();
    const backend = response.headers.get('x-inferbox-backend');
    assert.ok(names.includes(backend), `${d.where}: X-Inferbox-Backend ${backend} is not a replica (${names})`);
    return { data, backend, route: response.headers.get('x-inferbox-route') };
  };
  const first = await ask([{ role: 'user', content: opening(1) }], true);
  let text = '';
  let second;
  for await (const chunk of first.data) {
    text += chunk.choices[0]?.delta?.content ?? '';
    second ??= await ask([{ role: 'user', content: opening(2) }]);
  }
  assert.ok(text.length > 0, `${d.where}: the stream through the router brought no text`);
  assert.ok(second.data.choices[0].message.content.length > 0, `${d.where}: an empty answer`);
  assert.notEqual(second.backend, first.backend, `${d.where}: a request during a stream went to the busy replica`);
  for (const [n, was, reply] of [[1, first, text], [2, second, second.data.choices[0].message.content]]) {
    const next = await ask([{ role: 'user', content: opening(n) }, { role: 'assistant', content: reply },
      { role: 'user', content: 'And then?' }]);
    assert.deepEqual([next.backend, next.route], [was.backend, 'affinity'],
      `${d.where}: conversation ${n}'s next turn did not return to its replica`);
  }
}
