// Every call to the server goes through here: it adds the API key, turns error bodies into
// ApiError (with the server's error.message) and raises the key form on 401.
import { createStore } from './store.js';

const KEY_NAME = 'inferbox.apiKey';

export function getApiKey() {
  try {
    return sessionStorage.getItem(KEY_NAME) || '';
  } catch {
    return '';
  }
}

export function setApiKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_NAME, key);
    else sessionStorage.removeItem(KEY_NAME);
  } catch {
    /* storage unavailable: the key lives for this call only */
  }
}

// needed: the last call was refused with 401; version: bumps when the key changes, so pages refetch.
export const auth = createStore({ needed: false, message: '', version: 0 });

export function saveKey(key) {
  setApiKey(key.trim());
  auth.set((s) => ({ needed: false, message: '', version: s.version + 1 }));
}

export class ApiError extends Error {
  constructor(status, message, type, code) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.type = type || '';
    this.code = code || '';
  }
}

async function errorFrom(res) {
  let message = '';
  let type = '';
  let code = '';
  try {
    const text = await res.text();
    try {
      const body = JSON.parse(text);
      const err = body && body.error;
      if (err && typeof err === 'object') {
        message = err.message || '';
        type = err.type || '';
        code = err.code == null ? '' : String(err.code);
      } else if (typeof err === 'string') {
        message = err;
      }
    } catch {
      message = text.slice(0, 300);
    }
  } catch {
    /* body unreadable */
  }
  if (!message) message = `HTTP ${res.status}${res.statusText ? ' ' + res.statusText : ''}`;
  return new ApiError(res.status, message, type, code);
}

function headers(json) {
  const h = { Accept: json ? 'application/json' : 'text/event-stream' };
  const key = getApiKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

// Returns the Response (ok) or throws ApiError.
export async function request(path, { method = 'GET', body, signal, accept = 'json' } = {}) {
  const h = headers(accept === 'json');
  const init = { method, headers: h, signal, cache: 'no-store' };
  if (body !== undefined) {
    h['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, `Network error: ${e && e.message ? e.message : 'the server could not be reached'}`);
  }
  if (!res.ok) {
    const err = await errorFrom(res);
    if (res.status === 401) auth.set({ needed: true, message: err.message });
    throw err;
  }
  return res;
}

export async function api(path, opts) {
  const res = await request(path, opts);
  if (res.status === 204) return null;
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(res.status, 'The server answered with something that is not JSON');
  }
}

// Reads a text/event-stream body: onData(obj) for each JSON `data:` payload (a multi-line data
// field joined with newlines). Stops at `[DONE]` (reading the body to its end) or at the end
// of the body. An {"error": ...} payload without a `type` (an error sent mid-stream) and an
// OpenAI `error` event ({"type": "error", "message"}) reject with ApiError.
async function readEvents(res, onData) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let data = [];
  let done = false;
  const dispatch = () => {
    if (!data.length) return;
    const payload = data.join('\n');
    data = [];
    if (payload.trim() === '[DONE]') {
      done = true;
      return;
    }
    let obj;
    try {
      obj = JSON.parse(payload);
    } catch {
      return; // not JSON: ignore rather than break the stream
    }
    if (obj && obj.error && !obj.type) {
      const e = obj.error;
      throw new ApiError(res.status, (e && e.message) || String(e), e && e.type, e && e.code);
    }
    if (obj && obj.type === 'error') {
      const e = obj.error && typeof obj.error === 'object' ? obj.error : obj;
      throw new ApiError(res.status, e.message || 'the server reported an error', e.type, e.code);
    }
    onData(obj);
  };
  const feed = (text) => {
    buffer += text;
    let nl;
    while (!done && (nl = buffer.indexOf('\n')) >= 0) {
      let line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') dispatch();
      else if (line.startsWith('data:')) data.push(line.slice(line.startsWith('data: ') ? 6 : 5));
      // other fields (event:, id:, retry:) and comments are not needed: each payload names its type
    }
  };
  try {
    while (!done) {
      const { value, done: end } = await reader.read();
      if (end) break;
      feed(decoder.decode(value, { stream: true }));
    }
    if (!done) {
      feed(decoder.decode() + '\n');
      dispatch();
    }
    // After [DONE] the server ends the body at once: read it to its end rather than cancel it, so
    // that a finished stream never shows as an aborted request.
    while (done && !(await reader.read()).done) {
      // nothing comes after [DONE]; anything that does is ignored
    }
  } catch (err) {
    reader.cancel().catch(() => {});
    throw err;
  }
}

// POST a streaming chat completion. onOpen(res) gets the response (headers) once; onChunk(obj)
// each parsed SSE data object. Resolves when [DONE] or the stream ends; rejects with ApiError
// (including an {"error":...} event sent mid-stream) or AbortError.
export async function streamChat(body, { signal, onOpen, onChunk }) {
  const res = await request('/v1/chat/completions', { method: 'POST', body, signal, accept: 'sse' });
  if (onOpen) onOpen(res);
  const type = res.headers.get('Content-Type') || '';
  if (!type.includes('text/event-stream')) {
    // A server may answer a stream request with a plain JSON completion.
    const obj = JSON.parse(await res.text());
    if (obj && obj.error) throw new ApiError(res.status, obj.error.message || 'error');
    const choice = obj.choices && obj.choices[0];
    const msg = (choice && choice.message) || {};
    onChunk({ choices: [{ index: 0, delta: { content: msg.content || '', tool_calls: msg.tool_calls }, finish_reason: choice && choice.finish_reason }] });
    if (obj.usage) onChunk({ choices: [], usage: obj.usage });
    return;
  }
  await readEvents(res, onChunk);
}

// POST a streaming Response (/v1/responses, stream: true): onEvent(obj) for each typed event
// ({"type": "response.created", ...}). A plain JSON answer is handed on as one final event.
export async function streamResponse(body, { signal, onOpen, onEvent }) {
  const res = await request('/v1/responses', { method: 'POST', body, signal, accept: 'sse' });
  if (onOpen) onOpen(res);
  const type = res.headers.get('Content-Type') || '';
  if (!type.includes('text/event-stream')) {
    let obj;
    try {
      obj = JSON.parse(await res.text());
    } catch {
      throw new ApiError(res.status, 'The server answered with something that is not JSON');
    }
    if (obj && obj.error && typeof obj.error === 'object' && obj.error.message && !obj.status) {
      throw new ApiError(res.status, obj.error.message, obj.error.type, obj.error.code);
    }
    const status = obj && obj.status;
    onEvent({ type: status === 'incomplete' ? 'response.incomplete' : status === 'failed' ? 'response.failed' : 'response.completed', response: obj });
    return;
  }
  await readEvents(res, onEvent);
}
