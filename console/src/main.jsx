import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import './styles.css';
import { auth, getApiKey, saveKey } from './api.js';
import { useStore } from './store.js';
import { ChatPage } from './chat.jsx';
import { AgentsPage } from './agents.jsx';
import { ConversationsPage } from './conversations.jsx';
import { DashboardPage } from './dashboard.jsx';
import { ModelsPage } from './models.jsx';

const ROUTES = {
  chat: { label: 'Chat', Page: ChatPage },
  agents: { label: 'Agents', Page: AgentsPage },
  conversations: { label: 'Conversations', Page: ConversationsPage },
  dashboard: { label: 'Dashboard', Page: DashboardPage },
  models: { label: 'Models', Page: ModelsPage },
};

function routeOf(hash) {
  const m = /^#\/([a-z]+)/.exec(hash || '');
  return m && ROUTES[m[1]] ? m[1] : 'chat';
}

// ---- theme: prefers-color-scheme unless the user picked one ------------------------------

const THEME_KEY = 'inferbox.theme';

function storedTheme() {
  try {
    const t = localStorage.getItem(THEME_KEY);
    return t === 'light' || t === 'dark' ? t : '';
  } catch {
    return '';
  }
}

function systemTheme() {
  return window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

function applyTheme(t) {
  if (t) document.documentElement.setAttribute('data-theme', t);
  else document.documentElement.removeAttribute('data-theme');
}

applyTheme(storedTheme());

function ThemeToggle() {
  const [theme, setTheme] = useState(() => storedTheme() || systemTheme());
  useEffect(() => {
    if (!window.matchMedia) return undefined;
    const mq = window.matchMedia('(prefers-color-scheme: dark)');
    const onChange = () => {
      if (!storedTheme()) setTheme(systemTheme());
    };
    mq.addEventListener('change', onChange);
    return () => mq.removeEventListener('change', onChange);
  }, []);
  const next = theme === 'dark' ? 'light' : 'dark';
  const flip = () => {
    try {
      localStorage.setItem(THEME_KEY, next);
    } catch {
      /* not stored: still applies for this page */
    }
    applyTheme(next);
    setTheme(next);
  };
  return (
    <button type="button" class="icon-button" id="theme-toggle" onClick={flip} aria-label={`Switch to ${next} theme`} title={`Switch to ${next} theme`}>
      <span aria-hidden="true">{theme === 'dark' ? '\u2600' : '\u263e'}</span>
    </button>
  );
}

// ---- API key form: shown when a call gets 401, or on request -----------------------------

function KeyForm({ onClose }) {
  const a = useStore(auth);
  const input = useRef(null);
  const [value, setValue] = useState('');
  const hasKey = !!getApiKey();
  useEffect(() => {
    if (input.current) input.current.focus();
  }, []);
  const submit = (e) => {
    e.preventDefault();
    const key = (input.current ? input.current.value : value).trim();
    if (!key) return;
    saveKey(key);
    setValue('');
    onClose();
  };
  const forget = () => {
    saveKey('');
    onClose();
  };
  return (
    <section class="keyform" role={a.needed ? 'alert' : undefined} aria-labelledby="keyform-title">
      <form onSubmit={submit}>
        <h2 id="keyform-title">{a.needed ? 'This server needs an API key' : 'API key'}</h2>
        {a.needed && a.message ? <p class="error-text">{a.message}</p> : null}
        <p class="hint">The key is kept in this tab only (session storage) and sent as a bearer token.</p>
        {/* Chrome asks password forms for a username field; a hidden one satisfies it. */}
        <input type="text" name="username" autocomplete="username" value="inferbox" class="hidden-field" tabIndex={-1} readOnly />
        <div class="row">
          <label for="api-key">API key</label>
          <input
            id="api-key"
            ref={input}
            type="password"
            autocomplete="current-password"
            value={value}
            onInput={(e) => setValue(e.currentTarget.value)}
            placeholder="sk-..."
          />
          <button type="submit" class="primary">
            Save key
          </button>
          {hasKey ? (
            <button type="button" onClick={forget}>
              Forget key
            </button>
          ) : null}
          {!a.needed ? (
            <button type="button" onClick={onClose}>
              Cancel
            </button>
          ) : null}
        </div>
      </form>
    </section>
  );
}

function App() {
  const [route, setRoute] = useState(() => routeOf(location.hash));
  const [keyOpen, setKeyOpen] = useState(false);
  const a = useStore(auth);
  const main = useRef(null);
  const first = useRef(true);

  useEffect(() => {
    const onHash = () => setRoute(routeOf(location.hash));
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  useEffect(() => {
    document.title = `${ROUTES[route].label} · inferbox`;
    if (first.current) {
      first.current = false;
      return;
    }
    if (main.current) main.current.focus({ preventScroll: true });
  }, [route]);

  const { Page } = ROUTES[route];
  return (
    <div class="app">
      <a class="skip-link" href="#main" onClick={(e) => { e.preventDefault(); if (main.current) main.current.focus(); }}>
        Skip to content
      </a>
      <header class="topbar">
        <a class="brand" href="#/chat" aria-label="inferbox console, chat">
          <span class="brand-mark" aria-hidden="true">▣</span> inferbox
        </a>
        <nav aria-label="Main">
          <ul>
            {Object.entries(ROUTES).map(([id, r]) => (
              <li key={id}>
                <a href={`#/${id}`} data-nav={id} aria-current={route === id ? 'page' : undefined}>
                  {r.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="topbar-tools">
          <button type="button" class="icon-button" onClick={() => setKeyOpen((o) => !o)} aria-label="API key" aria-expanded={keyOpen || a.needed} title="API key">
            <svg class="icon" viewBox="0 0 24 24" aria-hidden="true" focusable="false">
              <circle cx="8" cy="12" r="4" />
              <path d="M12 12h9M18 12v3M21 12v2" />
            </svg>
          </button>
          <ThemeToggle />
        </div>
      </header>
      {a.needed || keyOpen ? <KeyForm onClose={() => setKeyOpen(false)} /> : null}
      <main id="main" ref={main} tabIndex={-1} class={`main main-${route}`}>
        <Page key={route} />
      </main>
    </div>
  );
}

render(<App />, document.getElementById('app'));
