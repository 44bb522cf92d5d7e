// Hosts made of network namespaces, for tests where a separate machine matters (a link that can
// go down, a host that falls silent instead of refusing): rpc.test.mjs (ggml RPC workers) and
// routing.test.mjs (a backend partitioned mid-stream). Needs root and iproute2; a file that uses
// it FAILS without them, and INFERBOX_SKIP_NETNS=1 skips it instead.

import { spawnSync } from 'node:child_process';

export const SKIP_NETNS = process.env.INFERBOX_SKIP_NETNS === '1';

export function sh(cmd, { check = true } = {}) {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
  if (check && r.status !== 0) {
    throw new Error(`${cmd}: exit ${r.status}\n${r.stderr}`);
  }
  return r;
}

// Why namespaces cannot be made here, or null. A test's before() throws it (naming the skip
// variable) so that a machine without them fails loudly rather than passing vacuously.
export function netnsProblem() {
  if (process.getuid?.() !== 0) {
    return 'network namespaces need root';
  }
  if (sh('command -v ip', { check: false }).status !== 0) {
    return 'ip (iproute2) is not installed';
  }
  return null;
}

export function requireNetns(what) {
  const why = netnsProblem();
  if (why) {
    throw new Error(`${why}: ${what} builds hosts from network namespaces (set INFERBOX_SKIP_NETNS=1 to skip it)`);
  }
}

// Namespaces `names`, each with its loopback up.
export function addNamespaces(names) {
  for (const ns of names) {
    sh(`ip netns add ${ns}`);
    sh(`ip -n ${ns} link set lo up`);
  }
}

// Kills what runs in `names`, deletes them and the root-side links `links`; never throws.
export function removeNamespaces(names, links = []) {
  for (const ns of names) {
    sh(`ip netns pids ${ns} 2>/dev/null | xargs -r kill -9`, { check: false });
    sh(`ip netns del ${ns} 2>/dev/null`, { check: false });
  }
  for (const l of links) {
    sh(`ip link del ${l} 2>/dev/null`, { check: false });
  }
}

// A veth pair `name` (this end) / `name`p (the peer), the ends moved into namespaces (null: root).
export function vethLink(name, nsHere, addrHere, nsThere, addrThere) {
  const peer = `${name}p`;
  sh(`ip link add ${name} type veth peer name ${peer}`);
  const inNs = (ns, cmd) => (ns ? `ip -n ${ns} ${cmd}` : `ip ${cmd}`);
  if (nsHere) {
    sh(`ip link set ${name} netns ${nsHere}`);
  }
  sh(`ip link set ${peer} netns ${nsThere}`);
  sh(inNs(nsHere, `addr add ${addrHere}/24 dev ${name}`));
  sh(inNs(nsHere, `link set ${name} up`));
  sh(inNs(nsThere, `addr add ${addrThere}/24 dev ${peer}`));
  sh(inNs(nsThere, `link set ${peer} up`));
}
