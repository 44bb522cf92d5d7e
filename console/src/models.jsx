import { useEffect, useState } from 'preact/hooks';
import { api, auth } from './api.js';
import { useStore } from './store.js';
import { formatBytes, groupModels, modelStatus } from './format.js';
import { ErrorAlert } from './widgets.jsx';

// /v1/models and /v1/metadata together, refreshed every `everyMs` (every second while a model
// is being pulled or loaded, so that its progress bar and state move).
export function useModelInfo(everyMs) {
  const a = useStore(auth);
  const [info, setInfo] = useState({ models: [], meta: null, error: '', metaError: '', loaded: false });
  useEffect(() => {
    let alive = true;
    let timer = 0;
    const load = async () => {
      const [m, md] = await Promise.allSettled([api('/v1/models'), api('/v1/metadata')]);
      if (!alive) return;
      const models = m.status === 'fulfilled' && Array.isArray(m.value && m.value.data) ? m.value.data : null;
      setInfo((prev) => ({
        models: models || prev.models,
        meta: md.status === 'fulfilled' ? md.value : prev.meta,
        error: m.status === 'rejected' ? m.reason.message : '',
        metaError: md.status === 'rejected' ? md.reason.message : '',
        loaded: true,
      }));
      const moving = (models || []).some((x) => x.status === 'pulling' || x.status === 'loading');
      if (everyMs && !auth.get().needed) timer = setTimeout(load, moving ? Math.min(everyMs, 1000) : everyMs);
    };
    load();
    return () => {
      alive = false;
      clearTimeout(timer);
    };
  }, [a.version, everyMs]);
  return info;
}

function profileText(p) {
  if (!p || typeof p !== 'object') return '';
  const parts = [];
  if (p.name) parts.push(`profile ${p.name}`);
  if (p.device) parts.push(p.device);
  if (p.threads != null) parts.push(`${p.threads} threads`);
  if (p.parallel != null) parts.push(`${p.parallel} slots`);
  if (p.ctx_size != null) parts.push(`ctx ${p.ctx_size}`);
  if (p.kv_cache_type) parts.push(`KV ${p.kv_cache_type}`);
  if (p.flash_attn != null) parts.push(`flash-attn ${p.flash_attn ? 'on' : 'off'}`);
  if (p.gpu_layers) parts.push(`${p.gpu_layers} GPU layers`);
  return parts.join(' · ');
}

// A model being downloaded here (a route's pull=): its progress as a bar and in words.
export function PullProgress({ m }) {
  const p = m.pull || {};
  const got = Number(p.received_bytes) || 0;
  const total = Number(p.total_bytes) || 0;
  const pct = total ? Math.min(100, Math.floor((got * 100) / total)) : null;
  return (
    <span class="pull" data-pull={m.id} data-received={String(got)} data-total={String(total)} title={m.status_detail || ''}>
      <progress max={total || undefined} value={total ? got : undefined} aria-label={`Download of ${m.id}`} />
      <span class="muted small">
        {pct != null ? `${pct} % of ${formatBytes(total)}` : `${formatBytes(got)} so far`}
      </span>
    </span>
  );
}

// The models being pulled now, each with its progress bar; nothing when there are none.
export function PullList({ models }) {
  const pulls = models.filter((m) => m.status === 'pulling');
  if (!pulls.length) return null;
  return (
    <ul class="pulls" aria-label="Pulls in progress">
      {pulls.map((m) => (
        <li key={m.id}>
          <strong>{m.id}</strong> <PullProgress m={m} />
          {m.status_detail ? <div class="muted small">{m.status_detail}</div> : null}
        </li>
      ))}
    </ul>
  );
}

function Row({ m, meta, adapter }) {
  const md = meta && Array.isArray(meta.models) ? meta.models.find((x) => x.id === m.id) : null;
  const mem = m.memory_bytes ?? (md && md.memory_bytes);
  const file = (md && md.file_bytes) ?? (m.lora && m.lora.file_bytes);
  const status = modelStatus(m) || (md && md.status) || '';
  return (
    <tr class={adapter ? 'adapter' : undefined} data-model-id={m.id}>
      <th scope="row">
        {adapter ? <span class="muted" aria-hidden="true">↳ </span> : null}
        {m.id}
        {adapter ? <span class="tag">LoRA</span> : null}
        {m.parent && !adapter ? <span class="tag">LoRA of {m.parent}</span> : null}
      </th>
      <td>
        <span class={`dot status-${String(m.status || (m.ready ? 'loaded' : 'unknown')).replace(/[^\w-]/g, '')}`} aria-hidden="true" /> {status || '—'}
        {m.ready === false ? <span class="muted"> (not ready)</span> : null}
        {m.status === 'pulling' ? <PullProgress m={m} /> : null}
      </td>
      <td>{m.max_model_len ?? '—'}</td>
      <td>{mem != null ? formatBytes(mem) : '—'}</td>
      <td>{file != null ? formatBytes(file) : '—'}</td>
      <td>{(md && md.architecture) || (m.lora ? 'adapter' : '—')}</td>
      <td class="profile">{profileText(md && md.profile) || (m.lora && m.lora.parameters ? `${m.lora.parameters.toLocaleString()} parameters` : '—')}</td>
    </tr>
  );
}

export function ModelsTable({ info }) {
  const groups = groupModels(info.models);
  return (
    <div class="table-wrap">
      <table class="models-table">
        <thead>
          <tr>
            <th scope="col">Model</th>
            <th scope="col">State</th>
            <th scope="col">Context</th>
            <th scope="col">Memory</th>
            <th scope="col">File</th>
            <th scope="col">Arch</th>
            <th scope="col">Profile</th>
          </tr>
        </thead>
        <tbody>
          {groups.map(({ base, adapters }) => [
            <Row key={base.id} m={base} meta={info.meta} />,
            ...adapters.map((a) => <Row key={a.id} m={a} meta={info.meta} adapter />),
          ])}
          {!groups.length ? (
            <tr>
              <td colSpan={7} class="muted">
                {info.loaded ? 'No models.' : 'Loading…'}
              </td>
            </tr>
          ) : null}
        </tbody>
      </table>
    </div>
  );
}

export function ServerSummary({ meta }) {
  if (!meta) return null;
  const budget = meta.memory_budget_bytes;
  const used = meta.resident_bytes;
  return (
    <dl class="kv summary">
      {meta.version ? (
        <div>
          <dt>inferbox</dt>
          <dd>{meta.version}</dd>
        </div>
      ) : null}
      {meta.llama_cpp ? (
        <div>
          <dt>llama.cpp</dt>
          <dd>{meta.llama_cpp}</dd>
        </div>
      ) : null}
      {used != null ? (
        <div>
          <dt>resident</dt>
          <dd>
            {formatBytes(used)}
            {budget ? ` of ${formatBytes(budget)} budget` : ''}
            {budget ? <meter min={0} max={budget} value={used} aria-label="Resident memory of the budget" /> : null}
          </dd>
        </div>
      ) : null}
      {meta.profile && typeof meta.profile === 'object' ? (
        <div>
          <dt>default profile</dt>
          <dd>{profileText(meta.profile)}</dd>
        </div>
      ) : null}
    </dl>
  );
}

export function ModelsPage() {
  const info = useModelInfo(5000);
  return (
    <div class="page">
      <div class="page-head">
        <h1>Models</h1>
      </div>
      <ErrorAlert what="Models" error={info.error} />
      <ErrorAlert what="Metadata" error={info.metaError} />
      <ServerSummary meta={info.meta} />
      <ModelsTable info={info} />
    </div>
  );
}
