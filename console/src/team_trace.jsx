// A team run as a live trace tree (team.js records it and reads its shape): the captain, its
// steps, under each step the member calls (member, sub-task, status, where it ran, tokens, time,
// its answer), under each member its own tool calls (input and output, folded by default), then
// the captain's answer. Every node folds with a button that carries aria-expanded. Everything the
// models and tools wrote is text: Markdown through the safe renderer, the rest as text nodes.
import { useState } from 'preact/hooks';
import { Markdown } from './markdown.jsx';
import { highlight } from './highlight.js';
import { formatMs, parseJson, prettyJson } from './format.js';
import { useNow } from './widgets.jsx';
import { statusLabel, teamTree } from './team.js';

const token = (s) => String(s == null ? '' : s).replace(/[^\w-]/g, '_');

function StatusTag({ status }) {
  return (
    <span class={`trace-status st-${token(status)}`}>
      {status === 'in_progress' ? <span class="spinner" aria-hidden="true" /> : null}
      {statusLabel(status)}
    </span>
  );
}

// One node of the tree: a head whose button folds the body, and the body while it is open.
function Node({ id, kind, title, open: initial, meta, attrs, children }) {
  const [open, setOpen] = useState(initial);
  const bodyId = `${id}-body`;
  return (
    <li class={`tt-node tt-${kind}`} {...attrs}>
      <div class="tt-head">
        <button type="button" class="tt-toggle" aria-expanded={open ? 'true' : 'false'} aria-controls={open ? bodyId : undefined} onClick={() => setOpen(!open)}>
          <span class="caret" aria-hidden="true">{open ? '\u25be' : '\u25b8'}</span>
          {title}
        </button>
        {meta}
      </div>
      {open ? (
        <div class="tt-body" id={bodyId}>
          {children}
        </div>
      ) : null}
    </li>
  );
}

function Tokens({ usage }) {
  if (!usage || typeof usage !== 'object') return null;
  const i = usage.input_tokens;
  const o = usage.output_tokens;
  if (i == null && o == null) return null;
  return (
    <span class="tt-tokens muted" data-input-tokens={i ?? ''} data-output-tokens={o ?? ''}>
      {i ?? '?'} in · {o ?? '?'} out
    </span>
  );
}

const TOOL_LABEL = { sql_call: 'SQL', mcp_call: 'MCP', function_call: 'function' };

function ToolInput({ n }) {
  const raw = typeof n.item.arguments === 'string' ? n.item.arguments : '';
  const parsed = parseJson(raw);
  const query = n.type === 'sql_call' && parsed.ok && parsed.value && typeof parsed.value.query === 'string' ? parsed.value.query : null;
  return (
    <div class="tt-input" data-arguments={raw}>
      <p class="trace-label small">Input</p>
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
    </div>
  );
}

function ToolOutput({ n }) {
  const it = n.item;
  if (it.error) {
    return (
      <div class="tt-output">
        <p class="trace-label small">Error</p>
        <pre class="trace-code trace-error">{String(it.error)}</pre>
      </div>
    );
  }
  if (it.output == null) return n.type === 'function_call' ? <p class="muted small">The client runs this function.</p> : null;
  const parsed = parseJson(it.output);
  const structured = parsed.ok && parsed.value !== null && typeof parsed.value === 'object';
  const shown = structured ? prettyJson(parsed.value) : String(it.output);
  return (
    <div class="tt-output">
      <p class="trace-label small">Output</p>
      <pre class="trace-code tt-tool-output">{structured ? <code class="language-json">{highlight(shown, 'json')}</code> : <code>{shown}</code>}</pre>
    </div>
  );
}

// A tool call (a member's, or the captain's own): folded until asked for.
function ToolNode({ n, idp }) {
  const it = n.item || {};
  const where = n.type === 'sql_call' ? it.database : n.type === 'mcp_call' ? it.server_label : '';
  return (
    <Node
      id={`${idp}-${token(it.id || n.index)}`}
      kind="tool"
      open={false}
      attrs={{ 'data-node': 'tool', 'data-tool-type': n.type, 'data-status': statusLabel(n.status), 'data-item-id': it.id || '' }}
      title={
        <>
          <span class="tool-badge">{TOOL_LABEL[n.type] || n.type}</span>
          <span class="tt-name">{[where, it.name].filter(Boolean).join(' · ') || '(unnamed)'}</span>
        </>
      }
      meta={<StatusTag status={n.status} />}
    >
      <ToolInput n={n} />
      <ToolOutput n={n} />
    </Node>
  );
}

function memberTime(n, now) {
  const it = n.item || {};
  if (Number.isFinite(it.duration_ms)) return it.duration_ms;
  if (n.status === 'in_progress' && now != null) return now - n.tAdded;
  return n.tDone != null ? n.tDone - n.tAdded : null;
}

function MemberNode({ n, idp, now }) {
  const it = n.item || {};
  const name = it.member || it.name || '(unnamed)';
  const where = it.backend ? `${it.backend}${it.route && it.route !== it.backend ? ` (${it.route})` : ''}` : '';
  const ms = memberTime(n, now);
  return (
    <Node
      id={`${idp}-${token(it.id || n.index)}`}
      kind="member"
      open
      attrs={{ 'data-node': 'member', 'data-member': name, 'data-status': statusLabel(n.status), 'data-item-id': it.id || '' }}
      title={
        <>
          <span class="tool-badge">member</span>
          <strong class="tt-name">{name}</strong>
        </>
      }
      meta={
        <span class="tt-meta">
          <StatusTag status={n.status} />
          {it.model ? <span class="muted mono">{it.model}</span> : null}
          {where ? <span class="tt-where muted" data-backend={it.backend}>on {where}</span> : null}
          <Tokens usage={it.usage} />
          {ms != null ? (
            <span class="trace-time muted" data-duration-ms={n.status === 'in_progress' ? undefined : Math.round(ms)}>
              {formatMs(ms)}
            </span>
          ) : null}
        </span>
      }
    >
      <div class="tt-task">
        <p class="trace-label small">Task</p>
        <p class="tt-text">{typeof it.task === 'string' && it.task ? it.task : '(none)'}</p>
      </div>
      {n.calls.length ? (
        <ol class="tt-list" aria-label={`Tool calls of ${name}`}>
          {n.calls.map((c) => (
            <ToolNode key={c.index} n={c} idp={idp} />
          ))}
        </ol>
      ) : n.status === 'in_progress' ? (
        <p class="muted small">working…</p>
      ) : null}
      {n.status === 'in_progress' ? null : it.error ? (
        <div class="tt-output">
          <p class="trace-label small">{it.incomplete_reason ? `Stopped at its budget (${it.incomplete_reason})` : 'Error'}</p>
          <pre class="trace-code trace-error tt-member-error">{String(it.error)}</pre>
        </div>
      ) : (
        <div class="tt-output">
          <p class="trace-label small">Answer</p>
          <div class="message-body tt-member-output">{it.output ? <Markdown text={String(it.output)} /> : <p class="muted small">(no text)</p>}</div>
        </div>
      )}
    </Node>
  );
}

function CallNode({ n, idp, now }) {
  return n.type === 'team_member_call' ? <MemberNode n={n} idp={idp} now={now} /> : <ToolNode n={n} idp={idp} />;
}

function StepNode({ step, idp, now }) {
  const running = step.calls.some((c) => c.status === 'in_progress') || step.text.some((t) => t.status === 'in_progress');
  const members = step.calls.filter((c) => c.type === 'team_member_call').length;
  const others = step.calls.length - members;
  const parts = [];
  if (members) parts.push(`${members} member call${members === 1 ? '' : 's'}`);
  if (others) parts.push(`${others} tool call${others === 1 ? '' : 's'}`);
  return (
    <Node
      id={`${idp}-step${step.n}`}
      kind="step"
      open
      attrs={{ 'data-node': 'step', 'data-step': String(step.n), 'data-status': running ? 'running' : 'done' }}
      title={<strong>step {step.n}</strong>}
      meta={<span class="muted small">{parts.join(', ') || 'text'}</span>}
    >
      {step.text
        .filter((t) => t.text)
        .map((t) => (
          <div key={t.index} class="message-body tt-said">
            <Markdown text={t.text} />
          </div>
        ))}
      {step.calls.length ? (
        <ol class="tt-list" aria-label={`Calls of step ${step.n}`}>
          {step.calls.map((c) => (
            <CallNode key={c.index} n={c} idp={idp} now={now} />
          ))}
        </ol>
      ) : null}
    </Node>
  );
}

// `run`: { model, captain, status, nodes, usage, id, backend, t0, totalMs } (node times are ms
// since t0, a performance.now() of this page; t0 matters only while the run goes on). `showAnswer`:
// the tree ends with the answer's text (the Agents view); the chat shows it as its message.
export function TeamTrace({ run, idPrefix, showAnswer = false }) {
  const running = run.status === 'in_progress';
  const clock = useNow(running);
  const now = running ? clock - (run.t0 || 0) : null;
  const nodes = Array.isArray(run.nodes) ? run.nodes : [];
  const tree = teamTree(nodes);
  const idp = token(idPrefix || 'tt');
  const total = run.totalMs != null ? run.totalMs : now;
  const busy = nodes.some((n) => n.status === 'in_progress');
  const answer = tree.answer;
  return (
    <section class="team-trace" data-team-trace={run.model || ''} data-status={statusLabel(run.status)} data-response-id={run.id || ''} aria-label={`Trace of the team run (${run.model || 'team'})`} aria-busy={running ? 'true' : 'false'}>
      <ol class="tt-list tt-root">
        <Node
          id={`${idp}-captain`}
          kind="captain"
          open
          attrs={{ 'data-node': 'captain', 'data-status': statusLabel(run.status) }}
          title={
            <>
              <span class="tool-badge">captain</span>
              <strong class="tt-name">{run.model || 'team'}</strong>
            </>
          }
          meta={
            <span class="tt-meta">
              <StatusTag status={run.status} />
              {run.captain ? <span class="muted mono">{run.captain}</span> : null}
              {run.backend ? <span class="tt-where muted">on {run.backend}</span> : null}
              <Tokens usage={run.usage} />
              {total != null ? (
                <span class="trace-time muted" data-total-ms={running ? undefined : Math.round(total)}>
                  {formatMs(total)}
                </span>
              ) : null}
            </span>
          }
        >
          <ol class="tt-list" aria-label="The captain's steps">
            {tree.steps.map((step) => (
              <StepNode key={step.n} step={step} idp={idp} now={now} />
            ))}
            {tree.orphans.map((c) => (
              <ToolNode key={c.index} n={c} idp={idp} />
            ))}
            {running && !busy ? (
              <li class="tt-node tt-waiting" aria-label="waiting">
                <StatusTag status="in_progress" />
                <span class="muted small">{tree.steps.length ? 'the captain reads the results…' : 'the captain is working…'}</span>
              </li>
            ) : null}
            {answer.length ? (
              <li class="tt-node tt-answer" data-node="answer" data-status={statusLabel(answer[answer.length - 1].status)}>
                <div class="tt-head">
                  <span class="tool-badge">answer</span>
                  <StatusTag status={answer[answer.length - 1].status} />
                  {!showAnswer ? <span class="muted small">below</span> : null}
                </div>
                {showAnswer ? (
                  <div class="tt-body message-body">
                    <Markdown text={answer.map((a) => a.text).join('\n\n')} />
                  </div>
                ) : null}
              </li>
            ) : null}
          </ol>
        </Node>
      </ol>
    </section>
  );
}
