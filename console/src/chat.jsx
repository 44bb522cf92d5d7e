import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { auth } from './api.js';
import { useStore } from './store.js';
import { Markdown } from './markdown.jsx';
import { formatNumber, groupModels, modelStatus } from './format.js';
import {
  chat,
  models,
  loadModels,
  send,
  stop,
  regenerate,
  editAndResend,
  newChat,
  parseSchema,
  parseTools,
  restoreFromHash,
  MAX_TEAM_CALLS,
} from './state.js';
import { ConversationList } from './conversations.jsx';
import { ErrorAlert, Field, NumberField, StatList, enterSubmits, useEscape, useFollow } from './widgets.jsx';
import { TEAM_PREFIX, captainModel, teamEntry, teamMembers } from './team.js';
import { TeamTrace } from './team_trace.jsx';

// ---- model picker --------------------------------------------------------------------------

function optionLabel(m, adapter) {
  const st = modelStatus(m);
  return `${adapter ? '\u21b3 ' : ''}${m.id}${adapter ? ' (LoRA)' : ''}${st ? ` \u2014 ${st}` : ''}`;
}

// The chat's model by default; the Agents view passes its own id, value and setter.
export function ModelPicker({ id = 'model', value, onSelect, disabled }) {
  const s = useStore(chat);
  const ms = useStore(models);
  const model = value !== undefined ? value : s.model;
  const groups = useMemo(() => groupModels(ms.list.filter((m) => !teamEntry(ms.list, m.id))), [ms.list]);
  const teams = ms.list.filter((m) => teamEntry(ms.list, m.id));
  const known = ms.list.some((m) => m.id === model);
  const current = ms.list.find((m) => m.id === model);
  const select = onSelect || ((v) => chat.set({ model: v }));
  return (
    <div class="model-picker">
      <label for={id}>Model</label>
      <select id={id} value={model} onChange={(e) => select(e.currentTarget.value)} disabled={disabled !== undefined ? disabled : s.streaming}>
        {!ms.list.length && !model ? <option value="">{ms.loaded ? 'no models' : 'loading…'}</option> : null}
        {model && !known ? <option value={model}>{model} — not listed</option> : null}
        {groups.map(({ base, adapters }) =>
          adapters.length ? (
            <optgroup key={base.id} label={`${base.id} + LoRA adapters`}>
              <option value={base.id}>{optionLabel(base, false)}</option>
              {adapters.map((a) => (
                <option key={a.id} value={a.id}>
                  {optionLabel(a, true)}
                </option>
              ))}
            </optgroup>
          ) : (
            <option key={base.id} value={base.id}>
              {optionLabel(base, !!base.parent)}
            </option>
          ),
        )}
        {teams.length ? (
          <optgroup label="Teams (captain and members)">
            {teams.map((t) => (
              <option key={t.id} value={t.id} data-team={t.id}>
                {`${t.id} \u2014 team of ${teamMembers(t).length} (captain ${captainModel(t) || '?'})`}
              </option>
            ))}
          </optgroup>
        ) : null}
      </select>
      {current && teamEntry(ms.list, current.id) ? (
        <span class="model-meta" data-model-status="team">
          <span class="dot status-team" aria-hidden="true" />
          team: captain {captainModel(current) || '?'} · members {teamMembers(current).map((x) => x.name).join(', ') || 'none'}
        </span>
      ) : current ? (
        <span class="model-meta" data-model-status={current.status || ''}>
          <span class={`dot status-${String(current.status || (current.ready ? 'loaded' : 'unknown')).replace(/[^\w-]/g, '')}`} aria-hidden="true" />
          {modelStatus(current) || 'unknown'}
          {current.parent ? ` · LoRA of ${current.parent}` : ''}
          {current.max_model_len ? ` · ${current.max_model_len} ctx` : ''}
        </span>
      ) : null}
      {ms.error ? <span class="error-text">Models: {ms.error}</span> : null}
    </div>
  );
}

// ---- settings panels -----------------------------------------------------------------------

function Param({ name, hint, ...field }) {
  const s = useStore(chat);
  return <NumberField {...field} placeholder={hint} value={s.params[name]} onValue={(v) => chat.set((st) => ({ params: { ...st.params, [name]: v } }))} />;
}

// The state of one of the chat's optional parts (`structured`, `tools`: { open, enabled, ... })
// and its setter, which merges a patch into it.
function usePart(part) {
  const s = useStore(chat);
  return [s[part], (patch) => chat.set((c) => ({ [part]: { ...c[part], ...patch } }))];
}

// A settings section that folds open and closed, with a "use" checkbox that turns its part of the
// request on (and opens it). The body is there only while it is open.
function PartPanel({ title, st, set, toggleId, bodyId, children }) {
  return (
    <section class="panel" aria-label={title}>
      <div class="panel-head">
        <button type="button" class="panel-toggle" aria-expanded={st.open ? 'true' : 'false'} aria-controls={bodyId} onClick={() => set({ open: !st.open })}>
          <span class="caret" aria-hidden="true">{st.open ? '\u25be' : '\u25b8'}</span> {title}
        </button>
        <label class="check">
          <input id={toggleId} type="checkbox" checked={st.enabled} onChange={(e) => set({ enabled: e.currentTarget.checked, open: e.currentTarget.checked || st.open })} />
          use
        </label>
      </div>
      {st.open ? (
        <div id={bodyId} class="panel-body">
          {children}
        </div>
      ) : null}
    </section>
  );
}

function StructuredPanel() {
  const [st, set] = usePart('structured');
  const parsed = useMemo(() => parseSchema(st.schema), [st.schema]);
  return (
    <PartPanel title="Structured output" st={st} set={set} toggleId="structured-toggle" bodyId="structured-body">
      <label for="schema">JSON schema (sent as response_format json_schema, strict)</label>
      <textarea id="schema" class="code-input" rows={10} spellcheck={false} value={st.schema} onInput={(e) => set({ schema: e.currentTarget.value })} aria-describedby="schema-status" aria-invalid={parsed.error ? 'true' : 'false'} />
      <p id="schema-status" class={parsed.error ? 'error-text' : 'ok-text'} data-schema-valid={parsed.error ? 'false' : 'true'}>
        {parsed.error ? `Not valid JSON: ${parsed.error}` : 'Schema parses as JSON.'}
      </p>
    </PartPanel>
  );
}

function ToolsPanel() {
  const [t, set] = usePart('tools');
  const parsed = useMemo(() => parseTools(t.text), [t.text]);
  const names = parsed.names || [];
  return (
    <PartPanel title="Tools" st={t} set={set} toggleId="tools-toggle" bodyId="tools-body">
      <label for="tools">Function tools (JSON array)</label>
      <textarea id="tools" class="code-input" rows={10} spellcheck={false} value={t.text} onInput={(e) => set({ text: e.currentTarget.value })} aria-describedby="tools-status" aria-invalid={parsed.error ? 'true' : 'false'} />
      <p id="tools-status" class={parsed.error ? 'error-text' : 'ok-text'}>
        {parsed.error ? `Invalid: ${parsed.error}` : `${names.length} function${names.length === 1 ? '' : 's'}.`}
      </p>
      <label for="tool-choice">tool_choice</label>
      <select id="tool-choice" value={t.choice} onChange={(e) => set({ choice: e.currentTarget.value })}>
        <option value="auto">auto</option>
        <option value="none">none</option>
        <option value="required">required</option>
        {names.map((n) => (
          <option key={n} value={`fn:${n}`}>
            function: {n}
          </option>
        ))}
        {t.choice.startsWith('fn:') && !names.includes(t.choice.slice(3)) ? <option value={t.choice}>function: {t.choice.slice(3)} (not defined)</option> : null}
      </select>
    </PartPanel>
  );
}

// Shown while a team is the chat's model: its members, which one the captain's first step calls
// (tool_choice), and how many member calls the run may make (max_tool_calls).
function TeamPanel() {
  const s = useStore(chat);
  const ms = useStore(models);
  const entry = teamEntry(ms.list, s.model);
  if (!s.model.startsWith(TEAM_PREFIX)) return null;
  const members = teamMembers(entry);
  const set = (patch) => chat.set((c) => ({ team: { ...c.team, ...patch } }));
  const known = s.team.choice === 'auto' || s.team.choice === 'required' || s.team.choice === 'none' || members.some((m) => `member:${m.name}` === s.team.choice);
  return (
    <section class="team-panel" aria-label="Team run">
      <p class="muted small team-members">
        {members.length
          ? members.map((m, i) => (
              <span key={m.name} data-team-member={m.name}>
                {i ? ' · ' : ''}
                <strong>{m.name}</strong> on <span class="mono">{m.model}</span>
                {m.tools.length ? ` (${m.tools.join(', ')})` : ''}
              </span>
            ))
          : 'The members are not listed.'}
      </p>
      <div class="params team-params">
        <Field id="team-choice" label="Captain's first step">
          <select id="team-choice" value={s.team.choice} disabled={s.streaming} onChange={(e) => set({ choice: e.currentTarget.value })}>
            <option value="auto">the captain decides</option>
            <option value="required">call a member</option>
            <option value="none">answer alone</option>
            {members.map((m) => (
              <option key={m.name} value={`member:${m.name}`}>
                call {m.name}
              </option>
            ))}
            {!known ? <option value={s.team.choice}>{s.team.choice} (not a member)</option> : null}
          </select>
        </Field>
        <NumberField
          id="team-max-calls"
          label={`Member calls (max_tool_calls, 1–${MAX_TEAM_CALLS})`}
          inputMode="numeric"
          min="1"
          max={MAX_TEAM_CALLS}
          step="1"
          placeholder="default"
          value={s.team.maxCalls}
          disabled={s.streaming}
          onValue={(v) => set({ maxCalls: v })}
        />
      </div>
    </section>
  );
}

function SettingsPanel({ onClose }) {
  const s = useStore(chat);
  return (
    <div class="settings-inner">
      <div class="settings-head">
        <h2 class="section-title">Settings</h2>
        <button type="button" class="icon-button settings-close" onClick={onClose} aria-label="Close settings">
          <span aria-hidden="true">✕</span>
        </button>
      </div>
      <label for="system">System prompt</label>
      <textarea id="system" rows={4} value={s.system} placeholder="Optional" onInput={(e) => chat.set({ system: e.currentTarget.value })} />
      <fieldset class="params">
        <legend>Sampling (empty: server default)</legend>
        <Param id="temperature" name="temperature" label="temperature" step="0.05" min="0" max="2" hint="default" />
        <Param id="top-p" name="top_p" label="top_p" step="0.01" min="0" max="1" hint="default" />
        <Param id="max-tokens" name="max_tokens" label="max_tokens" step="1" min="1" hint="default" />
        <Param id="seed" name="seed" label="seed" step="1" hint="random" />
      </fieldset>
      <StructuredPanel />
      <ToolsPanel />
    </div>
  );
}

// ---- messages ------------------------------------------------------------------------------

function prettyArgs(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

function Stats({ st, pending }) {
  if (!st) return null;
  const items = [];
  if (st.ttft_ms != null) items.push(['ttft_ms', 'TTFT', `${st.ttft_ms} ms`]);
  if (st.tokens_per_s != null) items.push(['tokens_per_s', 'speed', `${formatNumber(st.tokens_per_s, 1)} tok/s`]);
  if (st.completion_tokens != null) items.push(['completion_tokens', 'tokens', String(st.completion_tokens)]);
  else if (st.completion_tokens_estimated != null) items.push(['completion_tokens', 'tokens', `~${st.completion_tokens_estimated}`]);
  if (st.cached_tokens != null) items.push(['cached_tokens', 'cached prompt', String(st.cached_tokens)]);
  if (st.backend || st.route) items.push(['where', 'ran on', st.route ? `${st.backend || '?'}: ${st.route}` : st.backend]);
  if (st.stopped) items.push(['stopped', 'status', 'stopped']);
  else if (st.finish_reason && st.finish_reason !== 'stop') items.push(['finish_reason', 'finish', st.finish_reason]);
  if (!items.length || pending) return null;
  return <StatList items={items} />;
}

function EditForm({ id, initial, onCancel, onSubmit }) {
  const ref = useRef(null);
  useEffect(() => {
    if (ref.current) {
      ref.current.focus();
      ref.current.setSelectionRange(ref.current.value.length, ref.current.value.length);
    }
  }, []);
  const submit = (e) => {
    e.preventDefault();
    onSubmit(ref.current.value);
  };
  return (
    <form class="edit-form" onSubmit={submit}>
      <label for={id} class="visually-hidden">
        Edit message
      </label>
      <textarea
        id={id}
        ref={ref}
        rows={3}
        defaultValue={initial}
        onKeyDown={(e) => {
          if (e.key === 'Escape') {
            e.stopPropagation();
            onCancel();
          } else if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            onSubmit(ref.current.value);
          }
        }}
      />
      <div class="row">
        <button type="submit" class="primary">
          Save &amp; resend
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function Message({ m, index, last, streaming }) {
  const [editing, setEditing] = useState(false);
  const isUser = m.role === 'user';
  const label = isUser ? 'You' : m.role === 'assistant' ? 'Assistant' : m.role;
  return (
    <article class={`message message-${m.role}`} data-role={m.role} aria-label={`${label} message`}>
      <div class="message-head">
        <span class="message-role">{label}</span>
        {m.role === 'assistant' && m.model ? <span class="message-model">{m.model}</span> : null}
        <span class="message-actions">
          {isUser && !editing ? (
            <button type="button" class="link-button" onClick={() => setEditing(true)} disabled={streaming} aria-label="Edit and resend this message">
              Edit
            </button>
          ) : null}
          {m.role === 'assistant' && last && !m.pending ? (
            <button type="button" class="link-button" id="regenerate" onClick={() => regenerate()} disabled={streaming} aria-label="Regenerate this answer">
              Regenerate
            </button>
          ) : null}
        </span>
      </div>
      {isUser ? (
        editing ? (
          <EditForm
            id={`edit-message-${index}`}
            initial={m.content}
            onCancel={() => setEditing(false)}
            onSubmit={(text) => {
              if (!text.trim()) return;
              setEditing(false);
              editAndResend(index, text);
            }}
          />
        ) : (
          <div class="message-text">{m.content}</div>
        )
      ) : m.role === 'assistant' ? (
        <>
        {m.team ? <TeamTrace run={m.team} idPrefix={`m${index}`} /> : null}
        <div class="message-body">
          {m.content ? <Markdown text={m.content} /> : null}
          {m.pending ? <span class="typing" aria-label="generating">▍</span> : null}
        </div>
        </>
      ) : (
        <div class="message-text">{m.content}</div>
      )}
      {Array.isArray(m.tool_calls) && m.tool_calls.length ? (
        <div class="tool-calls">
          {m.tool_calls.map((c, i) => (
            <div class="tool-call" key={c.id || i} data-tool-call={(c.function && c.function.name) || ''}>
              <div class="tool-call-head">
                <span class="tool-badge">tool call</span> <strong>{(c.function && c.function.name) || '(unnamed)'}</strong>
                {c.id ? <span class="muted"> {c.id}</span> : null}
              </div>
              <pre class="tool-args">{prettyArgs((c.function && c.function.arguments) || '')}</pre>
            </div>
          ))}
        </div>
      ) : null}
      {m.validation && !m.pending ? (
        <p class={`validation ${m.validation.ok ? 'ok-text' : 'error-text'}`} data-validation={m.validation.ok ? 'valid' : 'invalid'}>
          {m.validation.ok ? 'Structured output: valid' : `Structured output invalid: ${m.validation.message}`}
        </p>
      ) : null}
      <ErrorAlert class="message-error" error={m.error} />
      <Stats st={m.stats} pending={m.pending} />
    </article>
  );
}

function Composer() {
  const s = useStore(chat);
  const [text, setText] = useState('');
  const ref = useRef(null);
  const submit = (e) => {
    if (e) e.preventDefault();
    const value = ref.current ? ref.current.value : text;
    if (!value.trim() || chat.get().streaming) return;
    setText('');
    if (ref.current) ref.current.value = '';
    send(value).then((started) => {
      if (!started) setText(value); // not sent (e.g. invalid schema): give the text back
    });
  };
  return (
    <form class="composer" onSubmit={submit}>
      <ErrorAlert error={s.formError} />
      <div class="composer-row">
        <label for="composer" class="visually-hidden">
          Message
        </label>
        <textarea
          id="composer"
          ref={ref}
          rows={3}
          value={text}
          placeholder="Message (Enter sends, Shift+Enter new line, Esc stops)"
          onInput={(e) => setText(e.currentTarget.value)}
          onKeyDown={enterSubmits(submit)}
        />
        <div class="composer-buttons">
          {s.streaming ? (
            <button type="button" id="stop" class="danger" onClick={stop}>
              Stop
            </button>
          ) : null}
          <button type="submit" id="send" class="primary" disabled={s.streaming}>
            Send
          </button>
        </div>
      </div>
    </form>
  );
}

function SaveStatus() {
  const s = useStore(chat);
  const sv = s.save;
  if (sv.state === 'saving') return <span class="save-status muted">Saving…</span>;
  if (sv.state === 'saved') return <span class="save-status muted" data-save="saved">Saved</span>;
  if (sv.state === 'error') {
    return (
      <span class="save-status error-text" role="alert" data-save="error">
        Not saved: {sv.message}
      </span>
    );
  }
  return null;
}

export function ChatPage() {
  const s = useStore(chat);
  const a = useStore(auth);
  const [sidebar, setSidebar] = useState(false);
  const [settings, setSettings] = useState(false);

  useEffect(() => {
    loadModels();
  }, [a.version]);

  // The address names the open conversation (#/chat/ID): reopen it on load and when it changes.
  useEffect(() => {
    restoreFromHash();
    const onHash = () => restoreFromHash();
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, [a.version]);

  useEscape((e) => {
    if (chat.get().streaming) {
      e.preventDefault();
      stop();
    } else {
      setSidebar(false);
      setSettings(false);
    }
  });

  // Follow the stream while the view is at the bottom.
  const [list, onScroll] = useFollow(s.messages);

  const lastIndex = s.messages.length - 1;
  return (
    <div id="chat" class="chat-page" data-streaming={s.streaming ? 'true' : 'false'}>
      <aside id="chat-sidebar" class={`sidebar${sidebar ? ' open' : ''}`} aria-label="Saved conversations">
        <div class="sidebar-head">
          <button type="button" class="primary wide" id="new-chat" onClick={() => { newChat(); setSidebar(false); }}>
            New chat
          </button>
          <button type="button" class="icon-button sidebar-close" onClick={() => setSidebar(false)} aria-label="Close conversations">
            <span aria-hidden="true">✕</span>
          </button>
        </div>
        <ConversationList compact onOpened={() => setSidebar(false)} />
      </aside>
      {sidebar ? <div class="backdrop backdrop-sidebar" onClick={() => setSidebar(false)} aria-hidden="true" /> : null}
      {settings ? <div class="backdrop backdrop-settings" onClick={() => setSettings(false)} aria-hidden="true" /> : null}
      <section class="chat-main" aria-label="Chat">
        <div class="chat-toolbar">
          <button type="button" class="sidebar-toggle" aria-controls="chat-sidebar" aria-expanded={sidebar ? 'true' : 'false'} onClick={() => setSidebar((v) => !v)}>
            Chats
          </button>
          <ModelPicker />
          <button type="button" class="settings-toggle" aria-controls="chat-settings" aria-expanded={settings ? 'true' : 'false'} onClick={() => setSettings((v) => !v)}>
            Settings
          </button>
        </div>
        <TeamPanel />
        <div class="chat-title">
          <h1>{s.title || 'New chat'}</h1>
          <SaveStatus />
        </div>
        <div class="messages" ref={list} onScroll={onScroll} role="log" aria-live="off" aria-busy={s.streaming ? 'true' : 'false'} aria-label="Messages">
          {s.messages.length ? (
            s.messages.map((m, i) => <Message key={`${s.session}.${i}`} m={m} index={i} last={i === lastIndex} streaming={s.streaming} />)
          ) : (
            <p class="empty muted">Ask something. Answers stream in as the model writes them.</p>
          )}
        </div>
        <Composer />
      </section>
      <aside id="chat-settings" class={`settings${settings ? ' open' : ''}`} aria-label="Chat settings">
        <SettingsPanel onClose={() => setSettings(false)} />
      </aside>
    </div>
  );
}
