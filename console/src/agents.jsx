// The Agents view (#/agents): run /v1/responses with the tools the server runs itself (sql
// databases, MCP servers) and watch the run as a live trace: the response, then each output item
// (tool calls with their arguments, status, time and output; messages as Markdown), then usage.
import { useEffect, useRef } from 'preact/hooks';
import { auth } from './api.js';
import { useStore } from './store.js';
import { Markdown } from './markdown.jsx';
import { highlight } from './highlight.js';
import { ModelPicker } from './chat.jsx';
import { ErrorAlert, Field, NumberField, StatList, enterSubmits, useEscape, useFollow, useNow } from './widgets.jsx';
import { formatMs, parseJson, prettyJson } from './format.js';
import { chat, loadModels, models } from './state.js';
import { captainModel, teamEntry } from './team.js';
import { TeamTrace } from './team_trace.jsx';
import {
  MAX_TOOL_CALLS_LIMIT,
  agent,
  choiceOptions,
  loadBuiltinTools,
  mcpTools,
  runAgent,
  stopAgent,
  toolKey,
  updateSelection,
} from './agent.js';

// ---- formatting -----------------------------------------------------------------------------

const STATUS_LABEL = {
  in_progress: 'running',
  completed: 'completed',
  incomplete: 'incomplete',
  failed: 'failed',
  cancelled: 'stopped',
};

function Status({ status }) {
  return (
    <span class={`trace-status st-${String(status).replace(/[^\w-]/g, '')}`}>
      {status === 'in_progress' ? <span class="spinner" aria-hidden="true" /> : null}
      {STATUS_LABEL[status] || status}
    </span>
  );
}

// ---- the form -------------------------------------------------------------------------------

function NoTools({ error }) {
  return (
    <div class="notice" data-no-builtin-tools="true">
      <p>
        {error ? `Could not read this server's built-in tools (${error}).` : 'This server has no built-in tools.'} Start it with{' '}
        <code>--sql-database NAME=FILE</code> or <code>--mcp-server NAME=stdio:PROGRAM ARG...</code> to give agents a database or an
        MCP server's tools.
      </p>
      <p class="muted small">A run without tools is still a plain Responses call.</p>
    </div>
  );
}

// A checkbox that turns one database or MCP server on or off for the run: `group` names their map
// in the agent's state (databases, servers). The other props (data-*) go to the input.
function GroupCheck({ id, s, group, name, disabled, children, ...data }) {
  return (
    <label class="check" for={id}>
      <input
        id={id}
        type="checkbox"
        {...data}
        checked={!!s[group][name]}
        disabled={disabled}
        onChange={(e) => updateSelection({ [group]: { ...agent.get()[group], [name]: e.currentTarget.checked } })}
      />
      {children}
    </label>
  );
}

function Databases({ s, disabled }) {
  if (!s.tools.sql.length) return null;
  return (
    <fieldset class="agent-group">
      <legend>Databases (sql tool, read-only)</legend>
      {s.tools.sql.map((d, i) => {
        const tables = Array.isArray(d.tables) ? d.tables : [];
        return (
          <div class="tool-option" key={d.database}>
            <GroupCheck id={`agent-sql-${i}`} s={s} group="databases" name={d.database} data-sql-database={d.database} disabled={disabled}>
              <strong>{d.database}</strong>
              {d.engine ? <span class="tag">{d.engine}</span> : null}
            </GroupCheck>
            <p class="muted small tool-detail">{tables.length ? `tables: ${tables.join(', ')}` : 'no tables listed'}</p>
          </div>
        );
      })}
    </fieldset>
  );
}

function McpServers({ s, disabled }) {
  if (!s.tools.mcp.length) return null;
  return (
    <fieldset class="agent-group">
      <legend>MCP servers</legend>
      {s.tools.mcp.map((m, i) => {
        const on = !!s.servers[m.server_label];
        const tools = mcpTools(m);
        return (
          <div class="tool-option" key={m.server_label}>
            <GroupCheck id={`agent-mcp-${i}`} s={s} group="servers" name={m.server_label} data-mcp-server={m.server_label} disabled={disabled}>
              <strong>{m.server_label}</strong>
              <span class="muted small">
                {tools.length} tool{tools.length === 1 ? '' : 's'}
              </span>
            </GroupCheck>
            {tools.length ? (
              <ul class="mcp-tools" aria-label={`Tools of ${m.server_label}`}>
                {tools.map((t, j) => {
                  const key = toolKey(m.server_label, t.name);
                  return (
                    <li key={t.name}>
                      <label class="check" for={`agent-mcp-${i}-${j}`}>
                        <input
                          id={`agent-mcp-${i}-${j}`}
                          type="checkbox"
                          data-mcp-tool={t.name}
                          checked={!s.toolOff[key]}
                          disabled={disabled || !on}
                          onChange={(e) => {
                            const off = { ...agent.get().toolOff };
                            if (e.currentTarget.checked) delete off[key];
                            else off[key] = true;
                            updateSelection({ toolOff: off });
                          }}
                        />
                        <span class="mono">{t.name}</span>
                      </label>
                      {t.description ? <p class="muted small tool-detail">{t.description}</p> : null}
                    </li>
                  );
                })}
              </ul>
            ) : null}
          </div>
        );
      })}
    </fieldset>
  );
}

function AgentForm() {
  const s = useStore(agent);
  const c = useStore(chat);
  const input = useRef(null);
  const set = (patch) => agent.set(patch);
  const anyTools = s.tools.sql.length > 0 || s.tools.mcp.length > 0;
  const enabled = s.tools.sql.some((d) => s.databases[d.database]) || s.tools.mcp.some((m) => s.servers[m.server_label]);
  const options = choiceOptions(s);
  const submit = (e) => {
    if (e) e.preventDefault();
    if (!agent.get().running) runAgent();
  };
  return (
    <form class="agent-form" onSubmit={submit} aria-label="Agent run">
      <div class="page-head">
        <h1>Agents</h1>
      </div>
      <p class="muted small">
        The server runs these tools itself inside one <code>/v1/responses</code> call and streams every step.
      </p>
      <ModelPicker id="agent-model" value={s.model || c.model} onSelect={(v) => set({ model: v })} disabled={s.running} />
      {!s.tools.loaded ? <p class="muted">Reading the server's tools…</p> : null}
      {s.tools.loaded && (!anyTools || s.tools.error) ? <NoTools error={s.tools.error} /> : null}
      <Databases s={s} disabled={s.running} />
      <McpServers s={s} disabled={s.running} />
      <div class="params agent-params">
        <Field id="agent-tool-choice" label="tool_choice">
          <select id="agent-tool-choice" value={s.choice} disabled={s.running || !enabled} onChange={(e) => set({ choice: e.currentTarget.value })}>
            {options.map(([v, label]) => (
              <option key={v} value={v}>
                {label}
              </option>
            ))}
          </select>
        </Field>
        <NumberField
          id="agent-max-tool-calls"
          label={`max_tool_calls (1–${MAX_TOOL_CALLS_LIMIT})`}
          inputMode="numeric"
          min="1"
          max={MAX_TOOL_CALLS_LIMIT}
          step="1"
          value={s.maxToolCalls}
          disabled={s.running || !enabled}
          onValue={(v) => set({ maxToolCalls: v })}
        />
        <NumberField id="agent-max-output-tokens" label="max_output_tokens" inputMode="numeric" min="1" step="1" placeholder="default" value={s.maxOutputTokens} disabled={s.running} onValue={(v) => set({ maxOutputTokens: v })} />
        <NumberField id="agent-temperature" label="temperature" min="0" max="2" step="0.05" placeholder="default" value={s.temperature} disabled={s.running} onValue={(v) => set({ temperature: v })} />
      </div>
      <label for="agent-instructions">Instructions (system)</label>
      <textarea id="agent-instructions" rows={3} placeholder="Optional" value={s.instructions} disabled={s.running} onInput={(e) => set({ instructions: e.currentTarget.value })} />
      <label for="agent-input">Input</label>
      <textarea
        id="agent-input"
        ref={input}
        rows={4}
        placeholder="What should the agent do? (Enter runs, Shift+Enter new line, Esc stops)"
        value={s.input}
        onInput={(e) => set({ input: e.currentTarget.value })}
        onKeyDown={enterSubmits(submit)}
      />
      <ErrorAlert error={s.formError} />
      <div class="row agent-buttons">
        <button type="submit" id="agent-run" class="primary" disabled={s.running}>
          Run
        </button>
        {s.running ? (
          <button type="button" id="agent-stop" class="danger" onClick={stopAgent}>
            Stop
          </button>
        ) : null}
      </div>
    </form>
  );
}

// ---- the trace ------------------------------------------------------------------------------

function toolTitle(n) {
  const it = n.item || {};
  if (n.type === 'sql_call') return `${it.database || '?'} · ${it.name || 'sql'}`;
  if (n.type === 'mcp_call') return `${it.server_label || '?'} · ${it.name || '?'}`;
  return it.name || '(unnamed)';
}

const TYPE_LABEL = { sql_call: 'SQL', mcp_call: 'MCP', function_call: 'function', message: 'message' };

function Args({ n }) {
  const raw = typeof n.item.arguments === 'string' ? n.item.arguments : '';
  const parsed = parseJson(raw);
  const query = n.type === 'sql_call' && parsed.ok && parsed.value && typeof parsed.value.query === 'string' ? parsed.value.query : null;
  let rest = null;
  if (query !== null) {
    const { query: _q, ...others } = parsed.value;
    if (Object.keys(others).length) rest = prettyJson(others);
  }
  return (
    <div class="trace-args" data-arguments={raw}>
      {query !== null ? (
        <pre class="trace-code trace-sql">
          <code class="language-sql">{highlight(query, 'sql')}</code>
        </pre>
      ) : raw ? (
        <pre class="trace-code">
          <code class="language-json">{parsed.ok ? highlight(prettyJson(parsed.value), 'json') : raw}</code>
        </pre>
      ) : (
        <p class="muted small">no arguments</p>
      )}
      {rest ? (
        <pre class="trace-code">
          <code class="language-json">{highlight(rest, 'json')}</code>
        </pre>
      ) : null}
    </div>
  );
}

const LONG_LINES = 16;

function Output({ n }) {
  const text = n.item.output;
  const parsed = parseJson(text);
  const shown = parsed.ok && parsed.value !== null && typeof parsed.value === 'object' ? prettyJson(parsed.value) : String(text);
  const lines = shown.split('\n').length;
  const v = parsed.ok ? parsed.value : null;
  let summary = '';
  if (n.type === 'sql_call' && v && Array.isArray(v.rows)) {
    const count = typeof v.row_count === 'number' ? v.row_count : v.rows.length;
    const cols = Array.isArray(v.columns) ? v.columns.length : 0;
    summary = `${count} row${count === 1 ? '' : 's'} × ${cols} column${cols === 1 ? '' : 's'}${v.truncated ? ' (truncated)' : ''}`;
  } else {
    summary = `${shown.length} characters`;
  }
  const body = (
    <pre class="trace-code trace-output">
      {parsed.ok ? <code class="language-json">{highlight(shown, 'json')}</code> : <code>{shown}</code>}
    </pre>
  );
  if (lines <= LONG_LINES && shown.length <= 2000) {
    return (
      <div class="trace-result">
        <p class="trace-label small">
          Output <span class="muted">· {summary}</span>
        </p>
        {body}
      </div>
    );
  }
  return (
    <details class="trace-result">
      <summary class="trace-label small">
        Output <span class="muted">· {summary} · {lines} lines</span>
      </summary>
      {body}
    </details>
  );
}

function TraceNode({ n, now, tEnd }) {
  const it = n.item || {};
  const isTool = n.type !== 'message';
  const end = n.tDone != null ? n.tDone : tEnd != null ? tEnd : now;
  const ran = end - n.tAdded;
  const step = end - n.tStart;
  return (
    <li
      class={`trace-node trace-${String(n.type).replace(/[^\w-]/g, '')}`}
      data-item-type={n.type}
      data-item-status={n.status}
      data-item-id={it.id || ''}
      data-output-index={n.index}
    >
      <div class="trace-node-head">
        <span class="tool-badge">{TYPE_LABEL[n.type] || n.type}</span>
        <strong class="trace-title">{isTool ? toolTitle(n) : 'assistant'}</strong>
        <Status status={n.status} />
        <span
          class="trace-time muted"
          data-duration-ms={n.tDone != null ? Math.round(ran) : undefined}
          title="Measured here: from the item's added event to its done event. A tool's step also counts the model writing the call, since the previous item ended."
        >
          {isTool ? `added→done ${formatMs(ran)} · step ${formatMs(step)}` : formatMs(ran)}
        </span>
      </div>
      {isTool ? (
        <div class="trace-node-body">
          <Args n={n} />
          {it.error ? (
            <pre class="trace-code trace-error" role="status">
              {String(it.error)}
            </pre>
          ) : it.output != null ? (
            <Output n={n} />
          ) : null}
        </div>
      ) : (
        <div class="trace-node-body">
          <div class="message-body">{n.text ? <Markdown text={n.text} /> : null}</div>
          {n.status === 'in_progress' ? <span class="typing" aria-label="generating">▍</span> : null}
          {!n.text && n.status !== 'in_progress' ? <p class="muted small">(no text)</p> : null}
        </div>
      )}
    </li>
  );
}

function Usage({ run }) {
  const u = run.usage;
  const items = [];
  if (u) {
    if (u.input_tokens != null) items.push(['input_tokens', 'input tokens', String(u.input_tokens)]);
    const cached = u.input_tokens_details && u.input_tokens_details.cached_tokens;
    if (cached != null) items.push(['cached_tokens', 'cached', String(cached)]);
    if (u.output_tokens != null) items.push(['output_tokens', 'output tokens', String(u.output_tokens)]);
    if (u.total_tokens != null) items.push(['total_tokens', 'total', String(u.total_tokens)]);
  }
  const calls = run.items.filter((n) => n.type !== 'message').length;
  items.push(['tool_calls', 'tool calls', String(calls)]);
  if (run.incomplete) items.push(['incomplete_reason', 'incomplete', run.incomplete]);
  return <StatList class="trace-usage" items={items} />;
}

function describeTools(req) {
  const parts = req.tools.map((t) => {
    if (t.type === 'sql') return `sql: ${t.database}`;
    if (t.type === 'mcp') return `mcp: ${t.server_label}${t.allowed_tools ? ` (${t.allowed_tools.join(', ')})` : ''}`;
    return t.type;
  });
  return parts.length ? parts.join(' · ') : 'no tools';
}

function Trace() {
  const s = useStore(agent);
  const ms = useStore(models);
  const run = s.run;
  const now = useNow(s.running);
  const [box, onScroll] = useFollow(run);
  // On a phone the trace is under the form: bring a new run's trace into view.
  const seq = run ? run.seq : 0;
  useEffect(() => {
    if (!seq || !window.matchMedia || !window.matchMedia('(max-width: 700px)').matches) return;
    const el = document.getElementById('agent-trace');
    if (el) el.scrollIntoView({ block: 'start' });
  }, [seq]);
  if (!run) {
    return (
      <div class="trace-col" ref={box}>
        <p class="empty muted trace-empty">Run an agent to see its trace here: each tool call with its arguments, result and time, then the answer.</p>
      </div>
    );
  }
  const total = (run.tEnd != null ? run.tEnd : now) - run.t0;
  // A team's run is drawn as its tree (the captain, its steps, the members and their calls).
  const team = teamEntry(ms.list, run.model) || (run.items.some((n) => n.type === 'team_member_call') ? { id: run.model } : null);
  const choice = typeof run.request.tool_choice === 'string' ? run.request.tool_choice : JSON.stringify(run.request.tool_choice);
  return (
    <div class="trace-col" ref={box} onScroll={onScroll}>
      <section id="agent-trace" class="trace" data-status={run.status} data-response-id={run.id} aria-label="Agent trace" aria-busy={s.running ? 'true' : 'false'}>
        <header class="trace-head">
          <div class="trace-node-head">
            <span class="tool-badge">response</span>
            <strong class="trace-title mono">{run.id || '…'}</strong>
            <Status status={run.status} />
            <span class="trace-time muted" data-total-ms={run.tEnd != null ? Math.round(total) : undefined}>
              total {formatMs(total)}
            </span>
          </div>
          <p class="muted small trace-request">
            {run.model}
            {run.backend ? ` (on ${run.backend})` : ''} · {describeTools(run.request)} · tool_choice {choice}
            {run.request.max_tool_calls != null ? ` · max_tool_calls ${run.request.max_tool_calls}` : ''}
            {run.request.max_output_tokens != null ? ` · max_output_tokens ${run.request.max_output_tokens}` : ''}
          </p>
        </header>
        {team ? (
          <TeamTrace
            run={{ model: run.model, captain: captainModel(team), status: run.status, nodes: run.items, usage: run.usage, id: run.id, backend: run.backend, t0: 0, totalMs: run.tEnd != null ? run.tEnd - run.t0 : null }}
            idPrefix="agent"
            showAnswer
          />
        ) : (
        <ol class="trace-items">
          {run.items.map((n) => (
            <TraceNode key={n.index} n={n} now={now} tEnd={run.tEnd} />
          ))}
          {s.running && !run.items.some((n) => n.status === 'in_progress') ? (
            <li class="trace-node trace-waiting" aria-label="waiting">
              <div class="trace-node-head">
                <Status status="in_progress" />
                <span class="muted small">{run.items.length ? 'the model is working on the next step…' : 'the model is working…'}</span>
              </div>
            </li>
          ) : null}
        </ol>
        )}
        {!s.running ? (
          <footer class="trace-foot">
            <Usage run={run} />
            {run.status === 'incomplete' ? (
              <p class="trace-incomplete small" data-incomplete-reason={run.incomplete}>
                Ended early: the <code>{run.incomplete || 'unknown'}</code> budget ran out.
              </p>
            ) : null}
            {run.status === 'cancelled' ? <p class="muted small">Stopped: the request was cancelled on the server.</p> : null}
            <ErrorAlert error={run.error} />
          </footer>
        ) : null}
      </section>
    </div>
  );
}

export function AgentsPage() {
  const a = useStore(auth);
  useEffect(() => {
    loadModels();
    loadBuiltinTools();
  }, [a.version]);
  useEscape((e) => {
    if (agent.get().running) {
      e.preventDefault();
      stopAgent();
    }
  });
  const s = useStore(agent);
  return (
    <div id="agents" class="agents-page" data-running={s.running ? 'true' : 'false'}>
      <div class="agent-form-col">
        <AgentForm />
      </div>
      <Trace />
    </div>
  );
}
