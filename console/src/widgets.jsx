// Small pieces that the console's views share.
import { useEffect, useRef, useState } from 'preact/hooks';

// An error the reader must see (role="alert"), after the name of `what` failed if given
// ("Models: ..."); nothing while `error` is empty.
export function ErrorAlert({ error, what, class: extra }) {
  if (!error) return null;
  return (
    <p class={extra ? `error-text ${extra}` : 'error-text'} role="alert">
      {what ? `${what}: ` : null}
      {error}
    </p>
  );
}

// Figures in a row (<dl class="stats">): `items` are [key, label, value], each shown as a
// `.stat[data-stat=key]` pair. A chat answer's speed and tokens, an agent run's usage.
export function StatList({ items, class: extra }) {
  return (
    <dl class={extra ? `stats ${extra}` : 'stats'}>
      {items.map(([k, label, value]) => (
        <div key={k} class="stat" data-stat={k}>
          <dt>{label}</dt>
          <dd>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

// A labelled field (<div class="param">) around its input.
export function Field({ id, label, children }) {
  return (
    <div class="param">
      <label for={id}>{label}</label>
      {children}
    </div>
  );
}

// A labelled number input; `onValue` gets the text as typed (empty: the server's default). The
// other props (min, max, step, placeholder, inputMode, disabled) go to the input.
export function NumberField({ id, label, onValue, ...input }) {
  return (
    <Field id={id} label={label}>
      <input id={id} type="number" inputMode="decimal" {...input} onInput={(e) => onValue(e.currentTarget.value)} />
    </Field>
  );
}

// A textarea's onKeyDown: Enter calls submit(), Shift+Enter starts a new line.
export function enterSubmits(submit) {
  return (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  };
}

// Calls onEscape(event) for every Escape pressed on the page while the calling view is shown.
// The handler is the first render's: it must read what changes from the stores, not from props.
export function useEscape(onEscape) {
  useEffect(() => {
    const onKey = (e) => {
      if (e.key === 'Escape') onEscape(e);
    };
    document.addEventListener('keydown', onKey);
    return () => document.removeEventListener('keydown', onKey);
  }, []);
}

// Keeps a scrolling box at its bottom while what it shows grows (each change of `content`), as
// long as the reader has not scrolled up. Returns the box's ref and its onScroll handler.
export function useFollow(content) {
  const box = useRef(null);
  const stick = useRef(true);
  useEffect(() => {
    const el = box.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [content]);
  const onScroll = () => {
    const el = box.current;
    if (el) stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  };
  return [box, onScroll];
}

// A clock that ticks while `active`, for the times of what is still running.
export function useNow(active) {
  const [now, setNow] = useState(() => performance.now());
  useEffect(() => {
    if (!active) return undefined;
    setNow(performance.now());
    const t = setInterval(() => setNow(performance.now()), 200);
    return () => clearInterval(t);
  }, [active]);
  return now;
}
