// Markdown → Preact vnodes. marked is used only as a lexer; every token is rendered here, so
// nothing is ever parsed as HTML: raw HTML shows as text, unsafe links as text, images as text.
import { lexer } from 'marked';
import { useMemo, useState } from 'preact/hooks';
import { highlight } from './highlight.js';

const NAMED = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0', '#39': "'" };

function decodeEntities(s) {
  if (!s || s.indexOf('&') < 0) return s;
  return s.replace(/&(amp|lt|gt|quot|apos|nbsp|#39);/g, (_, n) => NAMED[n]);
}

// The href as a browser would read its scheme: control characters and whitespace removed
// anywhere, lowercased. Only http:, https:, mailto: and same-page "#..." fragments pass.
export function safeHref(href) {
  if (typeof href !== 'string') return null;
  // eslint-disable-next-line no-control-regex
  const squashed = href.replace(/[\u0000-\u0020\u007f-\u009f\u00a0\u1680\u2000-\u200f\u2028\u2029\u202f\u205f\u3000\ufeff]/g, '').toLowerCase();
  if (!squashed) return null;
  if (squashed.startsWith('#')) return href.trim();
  const m = /^([a-z][a-z0-9+.-]*):/.exec(squashed);
  if (!m) return null;
  if (m[1] === 'http' || m[1] === 'https' || m[1] === 'mailto') return href.trim();
  return null;
}

function CodeBlock({ text, lang }) {
  const [copied, setCopied] = useState(false);
  const label = (lang || '').split(/\s/)[0];
  const body = useMemo(() => highlight(text, label), [text, label]);
  const copy = () => {
    if (!navigator.clipboard) return;
    navigator.clipboard.writeText(text).then(
      () => {
        setCopied(true);
        setTimeout(() => setCopied(false), 1200);
      },
      () => {},
    );
  };
  return (
    <div class="codeblock">
      <div class="codeblock-bar">
        <span class="codeblock-lang">{label || 'text'}</span>
        <button type="button" class="link-button" onClick={copy} aria-label="Copy code">
          {copied ? 'Copied' : 'Copy'}
        </button>
      </div>
      <pre>
        <code class="hljs">{body}</code>
      </pre>
    </div>
  );
}

function inline(tokens, key) {
  if (!tokens) return null;
  return tokens.map((t, i) => renderInline(t, `${key}.${i}`));
}

function renderInline(t, key) {
  switch (t.type) {
    case 'text':
      return t.tokens ? <span key={key}>{inline(t.tokens, key)}</span> : decodeEntities(t.text);
    case 'escape':
      return t.text;
    case 'strong':
      return <strong key={key}>{inline(t.tokens, key)}</strong>;
    case 'em':
      return <em key={key}>{inline(t.tokens, key)}</em>;
    case 'del':
      return <del key={key}>{inline(t.tokens, key)}</del>;
    case 'codespan':
      return <code key={key}>{decodeEntities(t.text)}</code>;
    case 'br':
      return <br key={key} />;
    case 'link': {
      const kids = t.tokens && t.tokens.length ? inline(t.tokens, key) : t.text;
      const href = safeHref(t.href);
      if (!href) return <span key={key} class="md-unsafe-link">{kids}</span>;
      return (
        <a key={key} href={href} title={t.title || undefined} rel="noopener noreferrer" target="_blank">
          {kids}
        </a>
      );
    }
    case 'image':
      return (
        <span key={key} class="md-image">
          [image: {t.text || 'untitled'}] ({t.href})
        </span>
      );
    case 'checkbox':
      return <span key={key} aria-hidden="true">{t.checked ? '\u2611 ' : '\u2610 '}</span>;
    case 'html':
    default:
      return t.raw != null ? t.raw : t.text || '';
  }
}

function renderBlocks(tokens, key) {
  return tokens.map((t, i) => renderBlock(t, `${key}.${i}`));
}

function renderBlock(t, key) {
  switch (t.type) {
    case 'space':
    case 'def':
      return null;
    case 'checkbox':
      return renderInline(t, key);
    case 'paragraph':
      return <p key={key}>{inline(t.tokens, key)}</p>;
    case 'heading': {
      const Tag = `h${Math.min(6, Math.max(1, t.depth))}`;
      return <Tag key={key}>{inline(t.tokens, key)}</Tag>;
    }
    case 'code':
      return <CodeBlock key={key} text={t.text} lang={t.lang} />;
    case 'blockquote':
      return <blockquote key={key}>{renderBlocks(t.tokens, key)}</blockquote>;
    case 'hr':
      return <hr key={key} />;
    case 'list': {
      const items = t.items.map((item, j) => (
        <li key={`${key}.${j}`} class={item.task ? 'task' : undefined}>
          {renderBlocks(item.tokens, `${key}.${j}`)}
        </li>
      ));
      return t.ordered ? (
        <ol key={key} start={t.start === '' || t.start === 1 ? undefined : t.start}>
          {items}
        </ol>
      ) : (
        <ul key={key}>{items}</ul>
      );
    }
    case 'table':
      return (
        <div key={key} class="table-wrap">
          <table>
            <thead>
              <tr>
                {t.header.map((c, j) => (
                  <th key={j} class={c.align ? `align-${c.align}` : undefined}>
                    {inline(c.tokens, `${key}.h${j}`)}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {t.rows.map((row, r) => (
                <tr key={r}>
                  {row.map((c, j) => (
                    <td key={j} class={c.align ? `align-${c.align}` : undefined}>
                      {inline(c.tokens, `${key}.${r}.${j}`)}
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      );
    case 'text':
      // Block-level text (inside tight list items).
      return <span key={key}>{t.tokens ? inline(t.tokens, key) : decodeEntities(t.text)}</span>;
    case 'html':
      return (
        <p key={key} class="md-html">
          {t.raw != null ? t.raw : t.text}
        </p>
      );
    default:
      return t.raw ? <p key={key}>{t.raw}</p> : null;
  }
}

export function Markdown({ text }) {
  const nodes = useMemo(() => {
    try {
      return renderBlocks(lexer(text || '', { gfm: true, breaks: false }), 'm');
    } catch {
      return <p class="plain">{text}</p>;
    }
  }, [text]);
  return nodes;
}
