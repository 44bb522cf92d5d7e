// The Agents view's state: the tools this server runs itself (/v1/metadata's builtin_tools), the
// run form, and the trace of the run in progress, built live from the /v1/responses event stream.
// Kept outside components so a run keeps going while the user looks at another page.
import { api, streamResponse, ApiError } from './api.js';
import { createStore } from './store.js';
import { chat } from './state.js';

export const MAX_TOOL_CALLS_LIMIT = 32;

export const agent = createStore({
  tools: { loaded: false, error: '', sql: [], mcp: [] },
  model: '', // empty: the chat's model
  databases: {}, // name -> enabled
  servers: {}, // label -> enabled
  toolOff: {}, // "label\u0000tool" -> true when that MCP tool is unticked
  choice: 'auto', // auto | required | none | sql | mcp:LABEL | mcp:LABEL:NAME
  maxToolCalls: '8',
  maxOutputTokens: '',
  temperature: '',
  instructions: '',
  input: '',
  formError: '',
  running: false,
  run: null, // the trace (see start())
});

// ---- discovery ----------------------------------------------------------------------------

let toolsSeq = 0;

export async function loadBuiltinTools() {
  const seq = ++toolsSeq;
  try {
    const meta = await api('/v1/metadata');
    if (seq !== toolsSeq) return;
    const bt = (meta && meta.builtin_tools) || {};
    const sql = Array.isArray(bt.sql) ? bt.sql.filter((d) => d && typeof d.database === 'string') : [];
    const mcp = Array.isArray(bt.mcp) ? bt.mcp.filter((m) => m && typeof m.server_label === 'string') : [];
    agent.set({ tools: { loaded: true, error: '', sql, mcp } });
  } catch (e) {
    if (seq === toolsSeq) agent.set((s) => ({ tools: { ...s.tools, loaded: true, error: e.message } }));
  }
}

export const toolKey = (label, name) => `${label}\u0000${name}`;

export function mcpTools(server) {
  return Array.isArray(server.tools) ? server.tools.filter((t) => t && typeof t.name === 'string') : [];
}

// The tool_choice values the enabled tools allow, as [value, label].
export function choiceOptions(s) {
  const out = [
    ['auto', 'auto'],
    ['required', 'required (any tool)'],
    ['none', 'none'],
  ];
  if (s.tools.sql.some((d) => s.databases[d.database])) out.push(['sql', 'sql (forced)']);
  for (const m of s.tools.mcp) {
    if (!s.servers[m.server_label]) continue;
    out.push([`mcp:${m.server_label}`, `mcp: any tool of ${m.server_label}`]);
    for (const t of mcpTools(m)) {
      if (!s.toolOff[toolKey(m.server_label, t.name)]) out.push([`mcp:${m.server_label}:${t.name}`, `mcp: ${m.server_label} · ${t.name}`]);
    }
  }
  return out;
}

// Unticking a tool or a server can take away the forced choice: it falls back to auto.
export function updateSelection(patch) {
  agent.set((s) => {
    const next = { ...s, ...patch };
    const ok = choiceOptions(next).some(([v]) => v === next.choice);
    return ok ? patch : { ...patch, choice: 'auto' };
  });
}

function intOrNull(text) {
  const t = String(text ?? '').trim();
  if (!t) return null;
  if (!/^-?\d+$/.test(t)) return NaN;
  return Number.parseInt(t, 10);
}

// The request body from the form; { error } when something is out of range.
export function buildRequest(s) {
  const model = s.model || chat.get().model;
  if (!model) return { error: 'Pick a model first.' };
  if (!s.input.trim()) return { error: 'Write the input for the agent.' };
  const tools = [];
  for (const d of s.tools.sql) if (s.databases[d.database]) tools.push({ type: 'sql', database: d.database });
  for (const m of s.tools.mcp) {
    if (!s.servers[m.server_label]) continue;
    const all = mcpTools(m);
    const on = all.filter((t) => !s.toolOff[toolKey(m.server_label, t.name)]).map((t) => t.name);
    if (!on.length) return { error: `${m.server_label}: tick at least one of its tools, or turn the server off.` };
    const tool = { type: 'mcp', server_label: m.server_label, require_approval: 'never' };
    if (on.length < all.length) tool.allowed_tools = on;
    tools.push(tool);
  }
  const body = { model, input: s.input, stream: true, store: true };
  if (s.instructions.trim()) body.instructions = s.instructions;
  if (tools.length) {
    body.tools = tools;
    const c = s.choice;
    if (c === 'sql') body.tool_choice = { type: 'sql' };
    else if (c.startsWith('mcp:')) {
      const rest = c.slice(4);
      const i = rest.indexOf(':');
      body.tool_choice = i < 0 ? { type: 'mcp', server_label: rest } : { type: 'mcp', server_label: rest.slice(0, i), name: rest.slice(i + 1) };
    } else if (c && c !== 'auto') body.tool_choice = c;
    const mtc = intOrNull(s.maxToolCalls);
    if (mtc !== null) {
      if (!Number.isInteger(mtc) || mtc < 1 || mtc > MAX_TOOL_CALLS_LIMIT) return { error: `max_tool_calls must be a whole number from 1 to ${MAX_TOOL_CALLS_LIMIT}.` };
      body.max_tool_calls = mtc;
    }
  }
  const mot = intOrNull(s.maxOutputTokens);
  if (mot !== null) {
    if (!Number.isInteger(mot) || mot < 1) return { error: 'max_output_tokens must be a whole number of at least 1.' };
    body.max_output_tokens = mot;
  }
  const temp = String(s.temperature ?? '').trim();
  if (temp) {
    const t = Number(temp);
    if (!Number.isFinite(t) || t < 0 || t > 2) return { error: 'temperature must be a number from 0 to 2.' };
    body.temperature = t;
  }
  return { body };
}

// ---- running ------------------------------------------------------------------------------

let controller = null;

export function stopAgent() {
  if (controller) controller.abort();
}

const TERMINAL = new Set(['completed', 'incomplete', 'failed', 'cancelled']);

export function messageText(item) {
  const parts = Array.isArray(item && item.content) ? item.content : [];
  return parts.map((p) => (p && typeof p.text === 'string' ? p.text : '')).join('');
}

// A trace node per output item, in stream order (keyed by output_index: one message id can
// appear at several indexes when the model writes text between tool calls).
export async function runAgent() {
  const s = agent.get();
  if (s.running) return false;
  const prepared = buildRequest(s);
  if (prepared.error) {
    agent.set({ formError: prepared.error });
    return false;
  }
  const body = prepared.body;
  const t0 = performance.now();
  const run = {
    seq: (s.run ? s.run.seq : 0) + 1,
    id: '',
    status: 'in_progress',
    model: body.model,
    t0,
    tEnd: null,
    request: { tools: body.tools || [], tool_choice: body.tool_choice || 'auto', max_tool_calls: body.max_tool_calls, max_output_tokens: body.max_output_tokens },
    items: [],
    usage: null,
    incomplete: '',
    error: '',
    backend: '',
  };
  const byIndex = new Map();
  let lastBoundary = t0; // when the previous item ended (or the response started)
  let timer = 0;
  const ctrl = new AbortController();
  controller = ctrl;
  agent.set({ running: true, formError: '', run: { ...run, items: [] } });

  const flush = () => {
    timer = 0;
    agent.set({ run: { ...run, items: run.items.map((n) => ({ ...n })) } });
  };
  const schedule = () => {
    if (!timer) timer = setTimeout(flush, 40);
  };
  const nodeFor = (at, item) => {
    // inferbox always numbers items; without a number, an event belongs to the last item.
    const index = Number.isInteger(at) ? at : run.items.length ? run.items[run.items.length - 1].index : 0;
    let n = byIndex.get(index);
    if (!n) {
      const now = performance.now();
      n = { index, type: (item && item.type) || 'unknown', item: item || {}, status: 'in_progress', tAdded: now, tStart: lastBoundary, tDone: null, text: '' };
      byIndex.set(index, n);
      run.items.push(n);
      run.items.sort((a, b) => a.index - b.index);
    }
    return n;
  };
  const finishResponse = (r, fallback) => {
    if (!r || typeof r !== 'object') {
      run.status = fallback;
      return;
    }
    if (r.id) run.id = r.id;
    if (r.model) run.model = r.model;
    run.status = TERMINAL.has(r.status) ? r.status : fallback;
    if (r.usage) run.usage = r.usage;
    if (r.incomplete_details && r.incomplete_details.reason) run.incomplete = String(r.incomplete_details.reason);
    if (r.error && typeof r.error === 'object') run.error = r.error.message || r.error.code || 'failed';
    // Items the stream did not show (or showed before they ended) come from the final output.
    const output = Array.isArray(r.output) ? r.output : [];
    for (const item of output) {
      if (!item || typeof item !== 'object') continue;
      const known = run.items.filter((n) => item.id && n.item.id === item.id);
      if (!known.length) {
        const n = nodeFor(run.items.length ? Math.max(...run.items.map((x) => x.index)) + 1 : 0, item);
        n.item = item;
        n.status = item.status || 'completed';
        n.tDone = performance.now();
        if (item.type === 'message') n.text = messageText(item);
      } else if (item.type !== 'message') {
        for (const n of known) {
          n.item = { ...n.item, ...item };
          if (n.status === 'in_progress') n.status = item.status || 'completed';
        }
      }
    }
  };

  try {
    await streamResponse(body, {
      signal: ctrl.signal,
      onOpen(res) {
        run.backend = res.headers.get('X-Inferbox-Backend') || '';
      },
      onEvent(ev) {
        switch (ev.type) {
          case 'response.created':
          case 'response.in_progress':
            if (ev.response) {
              if (ev.response.id) run.id = ev.response.id;
              if (ev.response.model) run.model = ev.response.model;
            }
            break;
          case 'response.output_item.added': {
            const n = nodeFor(ev.output_index, ev.item);
            n.item = ev.item || n.item;
            n.status = (ev.item && ev.item.status) || 'in_progress';
            break;
          }
          case 'response.output_item.done': {
            const n = nodeFor(ev.output_index, ev.item);
            n.item = ev.item || n.item;
            n.status = (ev.item && ev.item.status) || 'completed';
            n.tDone = performance.now();
            if (n.type === 'message' && ev.item) n.text = messageText(ev.item) || n.text;
            lastBoundary = n.tDone;
            break;
          }
          case 'response.output_text.delta': {
            const n = nodeFor(ev.output_index, { type: 'message' });
            if (typeof ev.delta === 'string') n.text += ev.delta;
            break;
          }
          case 'response.function_call_arguments.delta': {
            const n = nodeFor(ev.output_index, { type: 'function_call' });
            if (typeof ev.delta === 'string') n.item = { ...n.item, arguments: (n.item.arguments || '') + ev.delta };
            break;
          }
          case 'response.completed':
            finishResponse(ev.response, 'completed');
            break;
          case 'response.incomplete':
            finishResponse(ev.response, 'incomplete');
            break;
          case 'response.failed':
            finishResponse(ev.response, 'failed');
            if (!run.error) run.error = 'The response failed.';
            break;
          default:
            break;
        }
        schedule();
      },
    });
    if (!TERMINAL.has(run.status)) {
      run.status = 'failed';
      run.error = 'The stream ended before the response did.';
    }
  } catch (e) {
    if (e && e.name === 'AbortError') {
      run.status = 'cancelled';
    } else {
      run.status = 'failed';
      run.error = e instanceof ApiError ? `${e.message}${e.code ? ` (${e.code})` : ''}` : (e && e.message) || String(e);
    }
  } finally {
    if (controller === ctrl) controller = null;
    clearTimeout(timer);
  }
  run.tEnd = performance.now();
  if (run.status !== 'completed') {
    // Whatever was still running when the response ended did not finish.
    for (const n of run.items) if (n.status === 'in_progress') n.status = run.status === 'incomplete' ? 'incomplete' : run.status;
  }
  agent.set({ running: false, run: { ...run, items: run.items.map((n) => ({ ...n })) } });
  return true;
}
