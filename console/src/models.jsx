import { useEffect, useState } from 'preact/hooks';
import { api, auth } from './api.js';
import { useStore } from './store.js';
import { formatBytes, groupModels, modelStatus } from './format.js';
import { ErrorAlert } from './widgets.jsx';

// /v1/models and /v1/metadata together, refreshed every `everyMs`.
export function useModelInfo(everyMs) {
  const a = useStore(auth);
  const [info, setInfo] = useState({ models: [], meta: null, error: '', metaError: '', loaded: false });
  useEffect(() => {
    let alive = true;
    let timer = 0;
    const load = async () => {
      const [m, md] = await Promise.allSettled([api('/v1/models'), api('/v1/metadata')]);
      if (!alive) return;
      setInfo((prev) => ({
        models: m.status === 'fulfilled' && Array.isArray(m.value && m.value.data) ? m.value.data : prev.models,
        meta: md.status === 'fulfilled' ? md.value : prev.meta,
        error: m.status === 'rejected' ? m.reason.message : '',
        metaError: md.status === 'rejected' ? md.reason.message : '',
        loaded: true,
      }));
      if (everyMs && !auth.get().needed) timer = setTimeout(load, everyMs);
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
