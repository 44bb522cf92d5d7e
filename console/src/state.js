// Shared application state: the chat in progress, the model list and the saved conversations.
// Kept outside components so a stream keeps running while the user looks at another page.
import { api, streamChat, streamResponse, ApiError } from './api.js';
import { createStore } from './store.js';
import { validateAnswer } from './schema.js';
import { TEAM_PREFIX, answerText, captainModel, isTerminal, teamEntry, teamToolChoice, traceRecorder } from './team.js';

export const DEFAULT_SCHEMA = JSON.stringify(
  {
    type: 'object',
    properties: {
      answer: { type: 'string' },
      confidence: { type: 'number', minimum: 0, maximum: 1 },
    },
    required: ['answer', 'confidence'],
    additionalProperties: false,
  },
  null,
  2,
);

export const DEFAULT_TOOLS = JSON.stringify(
  [
    {
      type: 'function',
      function: {
        name: 'get_weather',
        description: 'Current weather for a city',
        parameters: {
          type: 'object',
          properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
          required: ['city'],
        },
      },
    },
  ],
  null,
  2,
);

const emptyParams = { temperature: '', top_p: '', max_tokens: '', seed: '' };

export const chat = createStore({
  session: 0, // bumps whenever another conversation is loaded or a new one started
  convId: null,
  title: '',
  model: '',
  system: '',
  params: { ...emptyParams },
  structured: { enabled: false, schema: DEFAULT_SCHEMA, open: false },
  tools: { enabled: false, text: DEFAULT_TOOLS, choice: 'auto', open: false },
  team: { choice: 'auto', maxCalls: '' }, // a team's first step (auto | required | none | member:NAME), its max_tool_calls
  messages: [],
  streaming: false,
  formError: '',
  save: { state: 'idle', message: '' },
  restoring: null, // the id being reopened from the address (#/chat/ID)
});

// ---- models -------------------------------------------------------------------------------

export const models = createStore({ list: [], error: '', loaded: false });

export async function loadModels() {
  try {
    const r = await api('/v1/models');
    const list = Array.isArray(r && r.data) ? r.data : [];
    models.set({ list, error: '', loaded: true });
    const s = chat.get();
    if (!s.model) {
      const pick = list.find((m) => !m.parent && m.ready !== false && !String(m.id).startsWith(TEAM_PREFIX)) || list[0];
      if (pick) chat.set({ model: pick.id });
    }
  } catch (e) {
    models.set({ error: e.message, loaded: true });
  }
}

// ---- parsing the settings panels ---------------------------------------------------------

export function parseSchema(text) {
  if (!text.trim()) return { error: 'the schema is empty' };
  try {
    const value = JSON.parse(text);
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      if (typeof value !== 'boolean') return { error: 'a JSON schema must be an object' };
    }
    return { value };
  } catch (e) {
    return { error: e.message };
  }
}

export function parseTools(text) {
  if (!text.trim()) return { error: 'the tool list is empty' };
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return { error: e.message };
  }
  if (!Array.isArray(value)) return { error: 'tools must be a JSON array' };
  for (let i = 0; i < value.length; i++) {
    const t = value[i];
    if (!t || typeof t !== 'object' || t.type !== 'function') return { error: `tools[${i}]: type must be "function"` };
    if (!t.function || typeof t.function.name !== 'string' || !t.function.name) {
      return { error: `tools[${i}]: function.name is required` };
    }
  }
  return { value, names: value.map((t) => t.function.name) };
}

function num(text, integer) {
  if (text === '' || text == null) return undefined;
  const v = integer ? Number.parseInt(text, 10) : Number.parseFloat(text);
  return Number.isFinite(v) ? v : undefined;
}

// Extra request fields from the settings; { error } when a panel holds invalid JSON.
function requestExtras(s) {
  const extra = {};
  const p = s.params;
  const t = num(p.temperature, false);
  const tp = num(p.top_p, false);
  const mt = num(p.max_tokens, true);
  const seed = num(p.seed, true);
  if (t !== undefined) extra.temperature = t;
  if (tp !== undefined) extra.top_p = tp;
  if (mt !== undefined) extra.max_tokens = mt;
  if (seed !== undefined) extra.seed = seed;
  let schema;
  if (s.structured.enabled) {
    const r = parseSchema(s.structured.schema);
    if (r.error) return { error: `Structured output: the schema is not valid JSON (${r.error})` };
    schema = r.value;
    extra.response_format = { type: 'json_schema', json_schema: { name: 'console', schema, strict: true } };
  }
  if (s.tools.enabled) {
    const r = parseTools(s.tools.text);
    if (r.error) return { error: `Tools: ${r.error}` };
    if (r.value.length) {
      extra.tools = r.value;
      const c = s.tools.choice;
      if (c.startsWith('fn:')) extra.tool_choice = { type: 'function', function: { name: c.slice(3) } };
      else if (c) extra.tool_choice = c;
    }
  }
  return { extra, schema };
}

function wireMessages(system, history) {
  const out = [];
  if (system.trim()) out.push({ role: 'system', content: system });
  for (const m of history) {
    if (m.role !== 'user' && m.role !== 'assistant') continue;
    if (m.role === 'assistant' && !m.content && m.error) continue;
    out.push({ role: m.role, content: m.content || '' });
  }
  return out;
}

// ---- streaming a turn ----------------------------------------------------------------------

let controller = null;

export function stop() {
  if (controller) controller.abort();
}

function replaceLast(messages, msg) {
  const copy = messages.slice();
  copy[copy.length - 1] = msg;
  return copy;
}

async function runTurn(history) {
  const s = chat.get();
  if (s.streaming) return false;
  if (!s.model) {
    chat.set({ formError: 'Pick a model first.' });
    return false;
  }
  const prepared = requestExtras(s);
  if (prepared.error) {
    chat.set({ formError: prepared.error });
    return false;
  }
  if (s.model.startsWith(TEAM_PREFIX)) return runTeamTurn(s, history, prepared);
  const body = {
    model: s.model,
    messages: wireMessages(s.system, history),
    stream: true,
    stream_options: { include_usage: true },
    ...prepared.extra,
  };
  const session = s.session;
  const model = s.model;
  chat.set({ messages: [...history, { role: 'assistant', content: '', pending: true, model }], streaming: true, formError: '' });

  const ctrl = new AbortController();
  controller = ctrl;
  const t0 = performance.now();
  let tFirst = null;
  let usage = null;
  let finish = null;
  let backend = '';
  let route = '';
  let deltas = 0;
  let content = '';
  const calls = [];
  let timer = 0;

  const snapshot = (extra) => {
    const msg = { role: 'assistant', content, model, ...extra };
    const tc = calls.filter(Boolean).map((c) => ({ id: c.id, type: c.type, function: { ...c.function } }));
    if (tc.length) msg.tool_calls = tc;
    return msg;
  };
  const flush = () => {
    timer = 0;
    if (chat.get().session !== session) return;
    chat.set((st) => ({ messages: replaceLast(st.messages, snapshot({ pending: true })) }));
  };

  let error = null;
  let stopped = false;
  try {
    await streamChat(body, {
      signal: ctrl.signal,
      onOpen(res) {
        backend = res.headers.get('X-Inferbox-Backend') || '';
        route = res.headers.get('X-Inferbox-Route') || '';
      },
      onChunk(obj) {
        if (obj.usage) usage = obj.usage;
        const ch = Array.isArray(obj.choices) ? obj.choices[0] : null;
        if (!ch) return;
        const d = ch.delta || {};
        if (typeof d.content === 'string' && d.content) {
          if (tFirst === null) tFirst = performance.now();
          content += d.content;
          deltas++;
        }
        if (Array.isArray(d.tool_calls)) {
          if (tFirst === null) tFirst = performance.now();
          for (const part of d.tool_calls) {
            const i = Number.isInteger(part.index) ? part.index : 0;
            const slot = calls[i] || (calls[i] = { id: '', type: 'function', function: { name: '', arguments: '' } });
            if (part.id) slot.id = part.id;
            if (part.type) slot.type = part.type;
            const f = part.function || {};
            if (f.name) slot.function.name = slot.function.name && slot.function.name !== f.name ? slot.function.name + f.name : f.name;
            if (typeof f.arguments === 'string') slot.function.arguments += f.arguments;
          }
        }
        if (ch.finish_reason) finish = ch.finish_reason;
        if (!timer) timer = setTimeout(flush, 40);
      },
    });
  } catch (e) {
    if (e && e.name === 'AbortError') stopped = true;
    else error = e instanceof ApiError ? e : new ApiError(0, (e && e.message) || String(e));
  } finally {
    if (controller === ctrl) controller = null;
    clearTimeout(timer);
  }
  const tEnd = performance.now();
  const stats = { ttft_ms: tFirst === null ? null : Math.round(tFirst - t0), total_ms: Math.round(tEnd - t0) };
  if (usage) {
    stats.completion_tokens = usage.completion_tokens;
    stats.prompt_tokens = usage.prompt_tokens;
    const details = usage.prompt_tokens_details;
    if (details && typeof details.cached_tokens === 'number') stats.cached_tokens = details.cached_tokens;
  } else if (deltas) {
    stats.completion_tokens_estimated = deltas;
  }
  const produced = usage ? usage.completion_tokens : deltas;
  if (tFirst !== null && produced && tEnd > tFirst) {
    // completion tokens over the time from the first token to the end
    stats.tokens_per_s = Math.round((produced / ((tEnd - tFirst) / 1000)) * 10) / 10;
  }
  if (backend) stats.backend = backend;
  if (route) stats.route = route;
  if (finish) stats.finish_reason = finish;
  if (stopped) stats.stopped = true;

  const extra = { stats };
  if (error) extra.error = error.message;
  if (prepared.schema !== undefined && !error && (content || !calls.length)) {
    extra.validation = validateAnswer(prepared.schema, content);
  }
  if (chat.get().session !== session) return true; // another conversation was opened meanwhile
  chat.set((st) => ({ messages: replaceLast(st.messages, snapshot(extra)), streaming: false }));
  if (!error) save();
  return true;
}

// ---- a turn with a team (team/NAME): /v1/responses, its trace kept in the message ---------

export const MAX_TEAM_CALLS = 32;

// The Responses body of a team turn: the chat's settings in the Responses API's names, and the
// team panel's first-step choice (which wins over the tools panel's) and member-call budget.
function teamBody(s, history, extra) {
  const body = { model: s.model, input: wireMessages('', history), stream: true, store: true };
  if (s.system.trim()) body.instructions = s.system;
  for (const k of ['temperature', 'top_p', 'seed']) if (extra[k] !== undefined) body[k] = extra[k];
  if (extra.max_tokens !== undefined) body.max_output_tokens = extra.max_tokens;
  if (extra.response_format) {
    const js = extra.response_format.json_schema;
    body.text = { format: { type: 'json_schema', name: js.name, schema: js.schema, strict: js.strict } };
  }
  if (extra.tools) {
    body.tools = extra.tools.map((t) => ({ type: 'function', name: t.function.name, description: t.function.description, parameters: t.function.parameters }));
  }
  if (extra.tool_choice) {
    body.tool_choice = typeof extra.tool_choice === 'string' ? extra.tool_choice : { type: 'function', name: extra.tool_choice.function.name };
  }
  const choice = teamToolChoice(s.team.choice);
  if (choice !== undefined) body.tool_choice = choice;
  const max = String(s.team.maxCalls ?? '').trim();
  if (max) {
    const v = Number(max);
    if (!Number.isInteger(v) || v < 1 || v > MAX_TEAM_CALLS) return { error: `Member calls must be a whole number from 1 to ${MAX_TEAM_CALLS}.` };
    body.max_tool_calls = v;
  }
  return { body };
}

async function runTeamTurn(s, history, prepared) {
  const built = teamBody(s, history, prepared.extra);
  if (built.error) {
    chat.set({ formError: built.error });
    return false;
  }
  const body = built.body;
  const session = s.session;
  const model = s.model;
  const t0 = performance.now();
  const team = {
    id: '',
    model,
    captain: captainModel(teamEntry(models.get().list, model)),
    status: 'in_progress',
    nodes: [],
    usage: null,
    backend: '',
    t0,
    totalMs: null,
  };
  const rec = traceRecorder(t0);
  const calls = () =>
    rec.nodes
      .filter((n) => n.type === 'function_call' && !(n.item && n.item.parent_id))
      .map((n) => ({ id: n.item.call_id || n.item.id || '', type: 'function', function: { name: n.item.name || '', arguments: n.item.arguments || '' } }));
  const snapshot = (extra) => {
    const msg = { role: 'assistant', content: answerText(rec.nodes), model, team: { ...team, nodes: rec.snapshot() }, ...extra };
    const tc = calls();
    if (tc.length) msg.tool_calls = tc;
    return msg;
  };
  chat.set({ messages: [...history, { role: 'assistant', content: '', pending: true, model, team: { ...team } }], streaming: true, formError: '' });

  const ctrl = new AbortController();
  controller = ctrl;
  let timer = 0;
  let tFirst = null;
  let error = null;
  let stopped = false;
  let incomplete = '';
  const flush = () => {
    timer = 0;
    if (chat.get().session !== session) return;
    chat.set((st) => ({ messages: replaceLast(st.messages, snapshot({ pending: true })) }));
  };
  const finish = (r, fallback) => {
    if (r && typeof r === 'object') {
      if (r.id) team.id = r.id;
      if (r.usage) team.usage = r.usage;
      if (r.incomplete_details && r.incomplete_details.reason) incomplete = String(r.incomplete_details.reason);
      if (r.error && typeof r.error === 'object' && !error) error = new ApiError(0, r.error.message || r.error.code || 'the response failed');
      rec.finish(r);
    }
    team.status = r && isTerminal(r.status) ? r.status : fallback;
  };
  try {
    await streamResponse(body, {
      signal: ctrl.signal,
      onOpen(res) {
        team.backend = res.headers.get('X-Inferbox-Backend') || '';
      },
      onEvent(ev) {
        if (ev.type === 'response.created' && ev.response && ev.response.id) team.id = ev.response.id;
        else if (ev.type === 'response.completed') finish(ev.response, 'completed');
        else if (ev.type === 'response.incomplete') finish(ev.response, 'incomplete');
        else if (ev.type === 'response.failed') {
          finish(ev.response, 'failed');
          if (!error) error = new ApiError(0, 'The response failed.');
        } else if (rec.event(ev) && tFirst === null) tFirst = performance.now();
        if (!timer) timer = setTimeout(flush, 40);
      },
    });
    if (!isTerminal(team.status)) {
      team.status = 'failed';
      error = new ApiError(0, 'The stream ended before the response did.');
    }
  } catch (e) {
    if (e && e.name === 'AbortError') {
      stopped = true;
      team.status = 'cancelled';
    } else {
      team.status = 'failed';
      error = e instanceof ApiError ? e : new ApiError(0, (e && e.message) || String(e));
    }
  } finally {
    if (controller === ctrl) controller = null;
    clearTimeout(timer);
  }
  const tEnd = performance.now();
  rec.end(team.status);
  team.totalMs = Math.round(tEnd - t0);
  const stats = { ttft_ms: tFirst === null ? null : Math.round(tFirst - t0), total_ms: team.totalMs };
  if (team.usage) {
    stats.completion_tokens = team.usage.output_tokens;
    stats.prompt_tokens = team.usage.input_tokens;
    const details = team.usage.input_tokens_details;
    if (details && typeof details.cached_tokens === 'number') stats.cached_tokens = details.cached_tokens;
  }
  if (team.backend) stats.backend = team.backend;
  if (incomplete) stats.finish_reason = incomplete;
  if (stopped) stats.stopped = true;
  const extra = { stats };
  if (error) extra.error = `${error.message}${error.code ? ` (${error.code})` : ''}`;
  const msg = snapshot(extra);
  if (prepared.schema !== undefined && !error && (msg.content || !calls().length)) {
    msg.validation = validateAnswer(prepared.schema, msg.content);
  }
  if (chat.get().session !== session) return true;
  chat.set((st) => ({ messages: replaceLast(st.messages, msg), streaming: false }));
  if (!error) save();
  return true;
}

export function send(text) {
  if (!text.trim() || chat.get().streaming) return Promise.resolve(false);
  return runTurn([...chat.get().messages, { role: 'user', content: text }]);
}

export function regenerate() {
  const msgs = chat.get().messages;
  let i = msgs.length - 1;
  if (i < 0 || msgs[i].role !== 'assistant') return Promise.resolve(false);
  return runTurn(msgs.slice(0, i));
}

export function editAndResend(index, text) {
  const msgs = chat.get().messages;
  if (!msgs[index] || msgs[index].role !== 'user' || !text.trim()) return Promise.resolve(false);
  return runTurn([...msgs.slice(0, index), { role: 'user', content: text }]);
}

// ---- saving to the server -----------------------------------------------------------------

export function defaultTitle(messages) {
  const first = messages.find((m) => m.role === 'user' && m.content && m.content.trim());
  if (!first) return 'Untitled';
  const flat = first.content.replace(/\s+/g, ' ').trim();
  return Array.from(flat).slice(0, 60).join('');
}

function settingsOf(s) {
  return {
    params: { ...s.params },
    structured: { enabled: s.structured.enabled, schema: s.structured.schema },
    tools: { enabled: s.tools.enabled, text: s.tools.text, choice: s.tools.choice },
    team: { choice: s.team.choice, maxCalls: s.team.maxCalls },
  };
}

function storedMessages(s) {
  const out = [];
  if (s.system.trim()) out.push({ role: 'system', content: s.system });
  for (const m of s.messages) {
    const { pending, ...rest } = m;
    if (rest.team) {
      const { t0, ...team } = rest.team; // a clock of this page only
      rest.team = team;
    }
    out.push(rest);
  }
  return out;
}

let saveChain = Promise.resolve();

export function save() {
  saveChain = saveChain.then(doSave, doSave);
  return saveChain;
}

async function doSave() {
  const s = chat.get();
  if (!s.messages.length) return;
  const session = s.session;
  chat.set({ save: { state: 'saving', message: '' } });
  const payload = { model: s.model, settings: settingsOf(s), messages: storedMessages(s) };
  try {
    let conv;
    if (s.convId) {
      try {
        conv = await api(`/v1/console/conversations/${encodeURIComponent(s.convId)}`, { method: 'POST', body: payload });
      } catch (e) {
        if (!(e instanceof ApiError) || e.status !== 404) throw e;
        conv = null; // deleted meanwhile: save it anew
      }
    }
    if (!conv) {
      conv = await api('/v1/console/conversations', { method: 'POST', body: { title: s.title || defaultTitle(s.messages), ...payload } });
    }
    if (chat.get().session === session) {
      chat.set({ convId: conv.id, title: conv.title || s.title, save: { state: 'saved', message: '' } });
      syncHash();
    }
    refreshConversations();
  } catch (e) {
    if (chat.get().session === session) {
      const code = e.code ? ` (${e.code})` : '';
      chat.set({ save: { state: 'error', message: `${e.message}${code}` } });
    }
  }
}

export function newChat() {
  stop();
  chat.set((s) => ({
    session: s.session + 1,
    convId: null,
    title: '',
    messages: [],
    streaming: false,
    formError: '',
    save: { state: 'idle', message: '' },
  }));
  syncHash();
}

function applyConversation(conv) {
  const msgs = Array.isArray(conv.messages) ? conv.messages : [];
  let system = '';
  let rest = msgs;
  if (msgs.length && msgs[0].role === 'system') {
    system = typeof msgs[0].content === 'string' ? msgs[0].content : '';
    rest = msgs.slice(1);
  }
  const st = conv.settings && typeof conv.settings === 'object' ? conv.settings : {};
  chat.set((s) => {
    const next = {
      session: s.session + 1,
      convId: conv.id,
      title: conv.title || '',
      system,
      messages: rest
        .filter((m) => m && typeof m === 'object')
        .map((m) => ({ ...m, content: typeof m.content === 'string' ? m.content : JSON.stringify(m.content ?? '') })),
      streaming: false,
      formError: '',
      save: { state: 'saved', message: '' },
    };
    if (conv.model) next.model = conv.model;
    if (st.params && typeof st.params === 'object') {
      next.params = { ...emptyParams };
      for (const k of Object.keys(emptyParams)) if (st.params[k] != null) next.params[k] = String(st.params[k]);
    }
    if (st.structured && typeof st.structured === 'object') {
      next.structured = {
        ...s.structured,
        enabled: !!st.structured.enabled,
        schema: typeof st.structured.schema === 'string' ? st.structured.schema : s.structured.schema,
      };
    }
    if (st.tools && typeof st.tools === 'object') {
      next.tools = {
        ...s.tools,
        enabled: !!st.tools.enabled,
        text: typeof st.tools.text === 'string' ? st.tools.text : s.tools.text,
        choice: typeof st.tools.choice === 'string' ? st.tools.choice : 'auto',
      };
    }
    if (st.team && typeof st.team === 'object') {
      next.team = {
        choice: typeof st.team.choice === 'string' ? st.team.choice : 'auto',
        maxCalls: typeof st.team.maxCalls === 'string' ? st.team.maxCalls : '',
      };
    }
    return next;
  });
  syncHash();
}

export async function openConversation(id) {
  stop();
  const conv = await api(`/v1/console/conversations/${encodeURIComponent(id)}`);
  applyConversation(conv);
}

// ---- the open conversation in the address (#/chat/ID), so a reload reopens it ---------------

export function hashConvId(hash = location.hash) {
  const m = /^#\/chat\/([^/?#]+)/.exec(hash || '');
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return null;
  }
}

function onChatRoute() {
  const h = location.hash;
  return !h || h === '#' || h === '#/' || /^#\/chat(\/|$)/.test(h);
}

// Puts the open conversation's id in the address (replacing the entry: no history is added),
// or takes a stale one out; only while the chat is the page shown.
export function syncHash() {
  if (!onChatRoute() || chat.get().restoring) return;
  const id = chat.get().convId;
  if (!id && !hashConvId()) return;
  const want = id ? `#/chat/${encodeURIComponent(id)}` : '#/chat';
  if (location.hash !== want) history.replaceState(history.state, '', want);
}

// Whether the caller's conversation list holds `id` (true/false), or null when the list could
// not be read. Asking only for listed ids means a stale address never costs a 404.
async function isListed(id) {
  await new Promise((r) => setTimeout(r, 0)); // the sidebar starts its list call on mount
  let c = convs.get();
  if (c.q) {
    const r = await api('/v1/console/conversations?limit=100');
    return Array.isArray(r && r.data) && r.data.some((x) => x.id === id);
  }
  if (!c.loading) {
    refreshConversations('');
    c = convs.get();
  }
  if (c.loading) {
    c = await new Promise((resolve) => {
      const off = convs.subscribe((st) => {
        if (!st.loading) {
          off();
          resolve(st);
        }
      });
    });
  }
  if (c.error) return null;
  return c.items.some((x) => x.id === id);
}

let restoreSeq = 0;

// Opens the conversation the address names (on load, or when the hash changes); a conversation
// that is gone leaves a new chat and takes its id out of the address, without an error.
export async function restoreFromHash() {
  const id = hashConvId();
  if (!id || id === chat.get().convId) {
    syncHash();
    return;
  }
  const seq = ++restoreSeq;
  const session = chat.get().session;
  chat.set({ restoring: id });
  let listed = null;
  try {
    listed = await isListed(id);
    if (listed && seq === restoreSeq && chat.get().session === session) await openConversation(id);
  } catch {
    listed = null; // unreadable (a key is needed, the server is away): keep the address for later
  }
  if (seq !== restoreSeq) return;
  chat.set({ restoring: null });
  if (listed === false) syncHash();
}

// ---- the saved conversation list ----------------------------------------------------------

export const convs = createStore({ items: [], q: '', loading: false, error: '', loaded: false });
let listSeq = 0;

// Stale answers (an older search finishing after a newer one) are ignored rather than
// aborted, so no request is ever cut off mid-flight.
export async function refreshConversations(q = convs.get().q) {
  const seq = ++listSeq;
  convs.set({ loading: true, q });
  try {
    const query = q ? `&q=${encodeURIComponent(q)}` : '';
    const r = await api(`/v1/console/conversations?limit=100${query}`);
    if (seq === listSeq) convs.set({ items: Array.isArray(r && r.data) ? r.data : [], loading: false, error: '', loaded: true });
  } catch (e) {
    if (seq === listSeq) convs.set({ loading: false, error: e.message, loaded: true });
  }
}

export async function renameConversation(id, title) {
  const conv = await api(`/v1/console/conversations/${encodeURIComponent(id)}`, { method: 'POST', body: { title } });
  convs.set((s) => ({ items: s.items.map((c) => (c.id === id ? { ...c, title: conv.title, updated_at: conv.updated_at } : c)) }));
  if (chat.get().convId === id) chat.set({ title: conv.title });
  return conv;
}

export async function deleteConversation(id) {
  await api(`/v1/console/conversations/${encodeURIComponent(id)}`, { method: 'DELETE' });
  convs.set((s) => ({ items: s.items.filter((c) => c.id !== id) }));
  if (chat.get().convId === id) newChat();
}

export async function exportConversation(id) {
  const conv = await api(`/v1/console/conversations/${encodeURIComponent(id)}`);
  const blob = new Blob([JSON.stringify(conv, null, 2) + '\n'], { type: 'application/json' });
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  const base = (conv.title || conv.id || 'conversation').replace(/[^\w.-]+/g, '_').slice(0, 60);
  a.download = `${base || 'conversation'}.json`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
