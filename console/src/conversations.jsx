import { useEffect, useRef, useState } from 'preact/hooks';
import { auth } from './api.js';
import { useStore } from './store.js';
import { formatBytes, formatTime } from './format.js';
import { ErrorAlert } from './widgets.jsx';
import {
  chat,
  convs,
  refreshConversations,
  openConversation,
  renameConversation,
  deleteConversation,
  exportConversation,
} from './state.js';

function SearchBox({ id }) {
  const c = useStore(convs);
  const [value, setValue] = useState(c.q);
  const timer = useRef(0);
  useEffect(() => () => clearTimeout(timer.current), []);
  const onInput = (e) => {
    const v = e.currentTarget.value;
    setValue(v);
    clearTimeout(timer.current);
    timer.current = setTimeout(() => refreshConversations(v.trim()), 300);
  };
  return (
    <div class="search">
      <label for={id} class="visually-hidden">
        Search conversations
      </label>
      <input id={id} type="search" placeholder="Search titles and messages" value={value} onInput={onInput} aria-describedby={`${id}-status`} />
      <span id={`${id}-status`} class="visually-hidden" aria-live="polite">
        {c.loading ? 'Searching' : `${c.items.length} conversations`}
      </span>
    </div>
  );
}

function Item({ conv, compact, active, onOpened }) {
  const [mode, setMode] = useState('view'); // view | rename | confirm
  const [title, setTitle] = useState(conv.title || '');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const renameInput = useRef(null);
  const cancelBtn = useRef(null);

  useEffect(() => {
    if (mode === 'rename' && renameInput.current) renameInput.current.select();
    if (mode === 'confirm' && cancelBtn.current) cancelBtn.current.focus();
  }, [mode]);

  const run = async (fn) => {
    setBusy(true);
    setError('');
    try {
      await fn();
      return true;
    } catch (e) {
      setError(e.code ? `${e.message} (${e.code})` : e.message);
      return false;
    } finally {
      setBusy(false);
    }
  };
  const open = () =>
    run(async () => {
      await openConversation(conv.id);
      if (onOpened) onOpened();
      if (!/^#\/chat(\/|$)/.test(location.hash)) location.hash = '#/chat';
    });

  const label = conv.title || 'Untitled';
  return (
    <li class={`conv${active ? ' active' : ''}`} data-conversation-id={conv.id}>
      {mode === 'rename' ? (
        <form
          class="conv-rename"
          onSubmit={async (e) => {
            e.preventDefault();
            if (await run(() => renameConversation(conv.id, title.trim() || 'Untitled'))) setMode('view');
          }}
        >
          <label for={`rename-${conv.id}`} class="visually-hidden">
            New title
          </label>
          <input id={`rename-${conv.id}`} ref={renameInput} value={title} maxLength={200} onInput={(e) => setTitle(e.currentTarget.value)} onKeyDown={(e) => e.key === 'Escape' && (e.stopPropagation(), setMode('view'))} />
          <button type="submit" class="primary" disabled={busy}>
            Save
          </button>
          <button type="button" onClick={() => setMode('view')}>
            Cancel
          </button>
        </form>
      ) : (
        <button type="button" class="conv-open" onClick={open} disabled={busy} aria-current={active ? 'true' : undefined}>
          <span class="conv-title">{label}</span>
          <span class="conv-meta muted">
            {formatTime(conv.updated_at)}
            {!compact ? ` · ${conv.message_count ?? '?'} messages · ${formatBytes(conv.bytes)}${conv.model ? ` · ${conv.model}` : ''}` : ''}
          </span>
        </button>
      )}
      {!compact && mode === 'view' ? (
        <div class="conv-actions">
          <button type="button" onClick={() => (setTitle(conv.title || ''), setMode('rename'))} aria-label={`Rename ${label}`}>
            Rename
          </button>
          <button type="button" onClick={() => run(() => exportConversation(conv.id))} disabled={busy} aria-label={`Export ${label} as JSON`}>
            Export JSON
          </button>
          <button type="button" class="danger" onClick={() => setMode('confirm')} aria-label={`Delete ${label}`}>
            Delete
          </button>
        </div>
      ) : null}
      {mode === 'confirm' ? (
        <div class="conv-confirm" role="alertdialog" aria-label={`Delete ${label}?`}>
          <span>Delete “{label}”? This cannot be undone.</span>
          <button type="button" class="danger" data-confirm="delete" disabled={busy} onClick={() => run(() => deleteConversation(conv.id))}>
            Delete
          </button>
          <button type="button" ref={cancelBtn} onClick={() => setMode('view')}>
            Cancel
          </button>
        </div>
      ) : null}
      <ErrorAlert error={error} />
    </li>
  );
}

export function ConversationList({ compact, onOpened }) {
  const c = useStore(convs);
  const a = useStore(auth);
  const s = useStore(chat);
  useEffect(() => {
    refreshConversations();
  }, [a.version]);
  const searchId = compact ? 'sidebar-search' : 'conversation-search';
  return (
    <div class={`conv-list${compact ? ' compact' : ''}`}>
      <SearchBox id={searchId} />
      <ErrorAlert what="Conversations" error={c.error} />
      {c.loaded && !c.items.length && !c.error ? <p class="muted empty">{c.q ? 'Nothing matches.' : 'No saved conversations yet.'}</p> : null}
      <ul>
        {c.items.map((conv) => (
          <Item key={conv.id} conv={conv} compact={compact} active={conv.id === s.convId} onOpened={onOpened} />
        ))}
      </ul>
    </div>
  );
}

export function ConversationsPage() {
  return (
    <div class="page">
      <div class="page-head">
        <h1>Conversations</h1>
        <a class="button primary" href="#/chat">
          Back to chat
        </a>
      </div>
      <p class="muted">Chats are saved on the server after each answer. Search looks at titles and message text.</p>
      <ConversationList />
    </div>
  );
}
