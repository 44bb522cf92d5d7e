// Teams in the console (docs/agents.md#teams): which listed models are teams, the trace of a team
// run recorded from the /v1/responses event stream, and that trace as a tree (the captain's
// steps, the member calls of each, each member's own tool calls). Pure functions and plain data:
// the chat keeps the recorded nodes in its message (and so in the saved conversation); the
// components that draw the tree are in team_trace.jsx.

export const TEAM_PREFIX = 'team/';

// The /v1/models entry of a team (status "team", with its captain and members), or null.
export function teamEntry(list, id) {
  if (typeof id !== 'string' || !id.startsWith(TEAM_PREFIX)) return null;
  const m = Array.isArray(list) ? list.find((x) => x && x.id === id) : null;
  return m && m.team && typeof m.team === 'object' ? m : null;
}

// A team's members as the picker shows them: [{ name, model, tools }].
export function teamMembers(entry) {
  const members = entry && entry.team && Array.isArray(entry.team.members) ? entry.team.members : [];
  return members
    .filter((x) => x && typeof x.name === 'string')
    .map((x) => ({ name: x.name, model: typeof x.model === 'string' ? x.model : '', tools: Array.isArray(x.tools) ? x.tools.filter((t) => typeof t === 'string') : [] }));
}

export function captainModel(entry) {
  const c = entry && entry.team && entry.team.captain;
  return c && typeof c.model === 'string' ? c.model : '';
}

// The first step's tool_choice from the team panel's value: auto | required | none | member:NAME.
export function teamToolChoice(value) {
  if (typeof value !== 'string' || !value || value === 'auto') return undefined;
  if (value.startsWith('member:')) return { type: 'function', name: value.slice(7) };
  return value;
}

// What the tree shows for a status the server gives (an item's, or the response's).
export const STATUS_LABEL = {
  in_progress: 'running',
  completed: 'done',
  incomplete: 'incomplete',
  failed: 'failed',
  cancelled: 'stopped',
};

export function statusLabel(status) {
  return STATUS_LABEL[status] || String(status || 'unknown');
}

const TERMINAL = new Set(['completed', 'incomplete', 'failed', 'cancelled']);

// Records a run's output items from its Responses events, one node per output_index:
// { index, type, status, item, text, tAdded, tDone }, times in ms since `t0` (performance.now()).
// `event(ev)` takes each event; `finish(response)` merges the final Response's output (items the
// stream did not show, or showed before they ended); `end(status)` closes what still runs.
export function traceRecorder(t0) {
  const nodes = [];
  const byIndex = new Map();
  const rel = () => Math.max(0, Math.round(performance.now() - t0));
  const nodeFor = (at, item) => {
    const index = Number.isInteger(at) ? at : nodes.length ? nodes[nodes.length - 1].index : 0;
    let n = byIndex.get(index);
    if (!n) {
      n = { index, type: (item && item.type) || 'unknown', status: 'in_progress', item: {}, text: '', tAdded: rel(), tDone: null };
      byIndex.set(index, n);
      nodes.push(n);
      nodes.sort((a, b) => a.index - b.index);
    }
    return n;
  };
  // A message's content is its text: kept once, in `text`.
  const keep = (n, item) => {
    if (!item || typeof item !== 'object') return;
    if (n.type === 'message') {
      n.item = { id: item.id, type: 'message' };
      const text = messageText(item);
      if (text) n.text = text;
    } else {
      n.item = { ...n.item, ...item };
    }
  };
  return {
    nodes,
    event(ev) {
      switch (ev && ev.type) {
        case 'response.output_item.added': {
          const n = nodeFor(ev.output_index, ev.item);
          keep(n, ev.item);
          n.status = (ev.item && ev.item.status) || 'in_progress';
          return true;
        }
        case 'response.output_item.done': {
          const n = nodeFor(ev.output_index, ev.item);
          keep(n, ev.item);
          n.status = (ev.item && ev.item.status) || 'completed';
          n.tDone = rel();
          return true;
        }
        case 'response.output_text.delta': {
          const n = nodeFor(ev.output_index, { type: 'message' });
          if (typeof ev.delta === 'string') n.text += ev.delta;
          return true;
        }
        case 'response.function_call_arguments.delta': {
          const n = nodeFor(ev.output_index, { type: 'function_call' });
          if (typeof ev.delta === 'string') n.item = { ...n.item, arguments: (n.item.arguments || '') + ev.delta };
          return true;
        }
        default:
          return false;
      }
    },
    finish(response) {
      const output = response && Array.isArray(response.output) ? response.output : [];
      for (const item of output) {
        if (!item || typeof item !== 'object') continue;
        const known = nodes.filter((n) => item.id && n.item.id === item.id);
        if (!known.length) {
          const n = nodeFor(nodes.length ? nodes[nodes.length - 1].index + 1 : 0, item);
          keep(n, item);
          n.status = item.status || 'completed';
          n.tDone = rel();
        } else if (item.type !== 'message') {
          for (const n of known) {
            keep(n, item);
            if (n.status === 'in_progress') n.status = item.status || 'completed';
            if (n.tDone == null) n.tDone = rel();
          }
        }
      }
    },
    end(status) {
      if (status === 'completed') return;
      for (const n of nodes) {
        if (n.status === 'in_progress') {
          n.status = status === 'incomplete' ? 'incomplete' : status;
          if (n.tDone == null) n.tDone = rel();
        }
      }
    },
    snapshot() {
      return nodes.map((n) => ({ ...n, item: { ...n.item } }));
    },
  };
}

export function isTerminal(status) {
  return TERMINAL.has(status);
}

export function messageText(item) {
  const parts = Array.isArray(item && item.content) ? item.content : [];
  return parts.map((p) => (p && typeof p.text === 'string' ? p.text : '')).join('');
}

// The recorded nodes as a tree:
//   { steps: [{ n, text: [message nodes], calls: [call nodes] }], answer: [message nodes], orphans }
// where a member call node is { ...node, calls: [its own tool call nodes] }.
//
// The stream does not mark the captain's steps, so they are read from its shape: a step is what
// one generation of the captain wrote, its text first, then its calls, and the calls of one step
// run at once, so a call added while an earlier call of the step still ran belongs to that step;
// text, or a call added after all of the step's calls had ended, begins the next step. What the
// captain wrote after its last call is the answer. A member's own calls name it in `parent_id`.
export function teamTree(nodes) {
  const sorted = [...nodes].sort((a, b) => a.index - b.index);
  const members = new Map();
  const steps = [];
  const orphans = [];
  let step = null;
  const begin = () => {
    step = { n: steps.length + 1, text: [], calls: [] };
    steps.push(step);
  };
  for (const node of sorted) {
    const it = node.item || {};
    if (typeof it.parent_id === 'string' && it.parent_id) {
      const parent = members.get(it.parent_id);
      if (parent) parent.calls.push(node);
      else orphans.push(node);
      continue;
    }
    if (node.type === 'message') {
      if (!step || step.calls.length) begin();
      step.text.push(node);
      continue;
    }
    const view = node.type === 'team_member_call' ? { ...node, calls: [] } : node;
    if (view.type === 'team_member_call' && it.id) members.set(it.id, view);
    if (step && (!step.calls.length || step.calls.some((c) => c.tDone == null || c.tDone >= node.tAdded))) {
      step.calls.push(view);
    } else {
      begin();
      step.calls.push(view);
    }
  }
  let answer = [];
  if (steps.length && !steps[steps.length - 1].calls.length) answer = steps.pop().text;
  return { steps, answer, orphans };
}

// The answer so far: the text the captain wrote after its last call.
export function answerText(nodes) {
  return teamTree(nodes).answer.map((n) => n.text).join('\n\n');
}
