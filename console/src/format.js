export function formatBytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

// A number as short text that still parses back (parseFloat) close to the value.
export function formatNumber(v, digits = 2) {
  if (v === null || v === undefined || typeof v !== 'number' || !Number.isFinite(v)) return '—';
  return String(Number(v.toFixed(digits)));
}

export function formatTime(unixSeconds) {
  if (typeof unixSeconds !== 'number') return '';
  const d = new Date(unixSeconds * 1000);
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

export function modelStatus(m) {
  const parts = [];
  if (m.status) parts.push(String(m.status));
  else if (typeof m.ready === 'boolean') parts.push(m.ready ? 'ready' : 'not ready');
  if (m.owned_by && m.owned_by !== 'inferbox') parts.push(String(m.owned_by));
  return parts.join(', ');
}

// Base models with their LoRA adapters (entries whose parent is another listed model).
export function groupModels(list) {
  const ids = new Set(list.map((m) => m.id));
  const groups = [];
  for (const m of list) {
    if (m.parent && ids.has(m.parent)) continue;
    groups.push({ base: m, adapters: list.filter((a) => a.parent === m.id && a.id !== m.id) });
  }
  return groups;
}

// Flattens nested objects into [dotted.key, value] rows.
export function flatten(obj, prefix = '', out = []) {
  if (obj === null || typeof obj !== 'object') {
    out.push([prefix || 'value', obj]);
    return out;
  }
  const keys = Object.keys(obj);
  if (!keys.length && prefix) out.push([prefix, Array.isArray(obj) ? '[]' : '{}']);
  for (const k of keys) {
    const v = obj[k];
    const key = prefix ? `${prefix}.${k}` : k;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) flatten(v, key, out);
    else if (Array.isArray(v) && v.some((x) => x !== null && typeof x === 'object')) v.forEach((x, i) => flatten(x, `${key}[${i}]`, out));
    else out.push([key, v]);
  }
  return out;
}

export function showValue(key, v) {
  if (v === null || v === undefined) return '—';
  if (Array.isArray(v)) return v.length ? v.join(', ') : 'none';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'number' && /bytes$/i.test(key)) return `${formatBytes(v)} (${v})`;
  return String(v);
}

// ---- what the traces show (the Agents view, a team run) ----

function inlineJson(v) {
  if (Array.isArray(v)) return `[${v.map(inlineJson).join(', ')}]`;
  if (v && typeof v === 'object') return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${inlineJson(x)}`).join(', ')}}`;
  const s = JSON.stringify(v);
  return s === undefined ? 'null' : s;
}

// JSON with short arrays and objects (a row of values) kept on one line.
export function prettyJson(v, indent = '') {
  const one = inlineJson(v);
  if (v === null || typeof v !== 'object' || one.length + indent.length <= 88) return one;
  const inner = `${indent}  `;
  if (Array.isArray(v)) return `[\n${v.map((x) => inner + prettyJson(x, inner)).join(',\n')}\n${indent}]`;
  return `{\n${Object.entries(v).map(([k, x]) => `${inner}${JSON.stringify(k)}: ${prettyJson(x, inner)}`).join(',\n')}\n${indent}}`;
}

export function parseJson(text) {
  if (typeof text !== 'string') return { ok: false };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return { ok: false };
  }
}

export function formatMs(ms) {
  if (ms == null || !Number.isFinite(ms)) return '';
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  const m = Math.floor(ms / 60000);
  return `${m} min ${Math.round((ms - m * 60000) / 1000)} s`;
}
