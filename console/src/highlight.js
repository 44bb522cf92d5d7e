// Syntax highlighting without HTML strings: lowlight runs highlight.js's grammars and hands
// back a hast tree, which we map to Preact vnodes (only spans with hljs-* classes and text).
import { h } from 'preact';
import { createLowlight } from 'lowlight';
import javascript from 'highlight.js/lib/languages/javascript';
import typescript from 'highlight.js/lib/languages/typescript';
import python from 'highlight.js/lib/languages/python';
import json from 'highlight.js/lib/languages/json';
import bash from 'highlight.js/lib/languages/bash';
import c from 'highlight.js/lib/languages/c';
import cpp from 'highlight.js/lib/languages/cpp';
import sql from 'highlight.js/lib/languages/sql';
import yaml from 'highlight.js/lib/languages/yaml';
import markdown from 'highlight.js/lib/languages/markdown';

const lowlight = createLowlight({ javascript, typescript, python, json, bash, c, cpp, sql, yaml, markdown });
lowlight.registerAlias({
  javascript: ['js', 'jsx', 'mjs', 'node'],
  typescript: ['ts', 'tsx'],
  python: ['py'],
  bash: ['sh', 'shell', 'zsh', 'console'],
  cpp: ['c++', 'cc', 'hpp', 'cxx'],
  yaml: ['yml'],
  markdown: ['md'],
});

const SAFE_CLASS = /^hljs-[\w-]+$|^language-[\w+-]+$/;

function toVnodes(nodes, keyPrefix) {
  const out = [];
  nodes.forEach((node, i) => {
    if (node.type === 'text') {
      out.push(node.value);
    } else if (node.type === 'element') {
      const kids = toVnodes(node.children || [], `${keyPrefix}.${i}`);
      const cls = ((node.properties && node.properties.className) || []).filter((c) => SAFE_CLASS.test(c)).join(' ');
      // Only spans are expected; anything else contributes its text only.
      if (node.tagName === 'span') out.push(h('span', { class: cls || undefined, key: `${keyPrefix}.${i}` }, kids));
      else out.push(...kids);
    }
  });
  return out;
}

// Returns vnodes for `code`, highlighted when `lang` is known; plain text otherwise.
export function highlight(code, lang) {
  const name = (lang || '').toLowerCase();
  if (!name || !lowlight.registered(name)) return [code];
  try {
    return toVnodes(lowlight.highlight(name, code).children, 'h');
  } catch {
    return [code];
  }
}
