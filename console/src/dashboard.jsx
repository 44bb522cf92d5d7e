import { useEffect, useState } from 'preact/hooks';
import { api, auth } from './api.js';
import { useStore } from './store.js';
import { LineChart } from './chart.jsx';
import { flatten, formatNumber, showValue } from './format.js';
import { ModelsTable, PullList, ServerSummary, useModelInfo } from './models.jsx';
import { ErrorAlert } from './widgets.jsx';

// Polls /v1/console/stats?since=<last t> and keeps the server's window of samples client-side.
function useStats() {
  const a = useStore(auth);
  const [state, setState] = useState({ samples: [], windowS: 600, hardware: null, backends: null, error: '', loaded: false });
  useEffect(() => {
    let alive = true;
    let timer = 0;
    let samples = [];
    let lastT = null;
    const tick = async () => {
      let delay = 1000;
      try {
        // Not aborted on unmount: the answer of a poll in flight is just dropped.
        const r = await api(`/v1/console/stats${lastT === null ? '' : `?since=${lastT}`}`);
        if (!alive) return;
        const windowS = typeof r.window_s === 'number' && r.window_s > 0 ? r.window_s : 600;
        if (typeof r.interval_ms === 'number' && r.interval_ms >= 250) delay = r.interval_ms;
        const fresh = (Array.isArray(r.samples) ? r.samples : []).filter((s) => s && typeof s.t === 'number' && (lastT === null || s.t > lastT));
        if (fresh.length) {
          samples = samples.concat(fresh);
          if (fresh.some((s, i) => i > 0 && s.t < fresh[i - 1].t)) samples.sort((x, y) => x.t - y.t);
          lastT = samples[samples.length - 1].t;
          const cutoff = lastT - windowS * 1000;
          let drop = 0;
          while (drop < samples.length && samples[drop].t < cutoff) drop++;
          if (drop) samples = samples.slice(drop);
        }
        setState({
          samples,
          windowS,
          hardware: r.hardware && typeof r.hardware === 'object' ? r.hardware : null,
          backends: Array.isArray(r.backends) ? r.backends : [],
          error: '',
          loaded: true,
        });
      } catch (e) {
        if (!alive) return;
        setState((s) => ({ ...s, error: e.message, loaded: true }));
        delay = 3000;
        if (e.status === 401) return; // resumes when a key is entered (auth version changes)
      }
      if (alive) timer = setTimeout(tick, delay);
    };
    tick();
    return () => {
      alive = false;
      clearTimeout(timer);
    };
  }, [a.version]);
  return state;
}

// The most recent non-null value of `key` and how long ago it was seen (ms).
function lastSeen(samples, key) {
  for (let i = samples.length - 1; i >= 0; i--) {
    const v = samples[i][key];
    if (typeof v === 'number' && Number.isFinite(v)) return { v, ago: samples[samples.length - 1].t - samples[i].t };
  }
  return null;
}

function Metric({ name, label, value, digits, unit, cls, seen }) {
  return (
    <div class="metric">
      <span class="metric-label">
        {cls ? <span class={`key ${cls}`} aria-hidden="true" /> : null}
        {label}
      </span>
      <span class="metric-value">
        <span data-metric={name} data-value={value == null ? '' : String(value)}>
          {formatNumber(value, digits)}
        </span>
        {unit ? <span class="metric-unit"> {unit}</span> : null}
      </span>
      {value == null && seen ? (
        <span class="metric-label">
          last {formatNumber(seen.v, digits)} {unit}, {Math.round(seen.ago / 1000)} s ago
        </span>
      ) : null}
    </div>
  );
}

function Card({ title, children, chart }) {
  return (
    <section class="card" aria-label={title}>
      <h2 class="card-title">{title}</h2>
      <div class="metrics">{children}</div>
      {chart}
    </section>
  );
}

// Name/value rows (<dl class="kv">) from [name, value] pairs, as flatten() gives them.
function KvList({ rows }) {
  return (
    <dl class="kv">
      {rows.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>{showValue(k, v)}</dd>
        </div>
      ))}
    </dl>
  );
}

function BackendList({ backends }) {
  if (!backends) return <p class="muted">Loading…</p>;
  if (!backends.length) return <p class="muted" data-backends="none">no remote backends</p>;
  const first = ['name', 'url', 'state', 'in_flight'];
  return (
    <ul class="backends">
      {backends.map((b, i) => {
        const rows = flatten(b).filter(([k]) => !first.includes(k));
        return (
          <li key={b.name || i} class="backend" data-backend={b.name || ''}>
            <div class="backend-head">
              <strong>{b.name || `backend ${i + 1}`}</strong>
              {b.state != null ? <span class={`tag state-${String(b.state).replace(/[^\w-]/g, '')}`}>{String(b.state)}</span> : null}
              {b.in_flight != null ? <span class="muted">in flight: {String(b.in_flight)}</span> : null}
            </div>
            {b.url ? <div class="muted mono">{String(b.url)}</div> : null}
            {rows.length ? <KvList rows={rows} /> : null}
          </li>
        );
      })}
    </ul>
  );
}

export function DashboardPage() {
  const st = useStats();
  const info = useModelInfo(10000);
  const last = st.samples.length ? st.samples[st.samples.length - 1] : {};
  const windowMs = st.windowS * 1000;
  const kv = typeof last.kv_cache_usage === 'number' ? last.kv_cache_usage : null;
  const hw = st.hardware ? flatten(st.hardware) : [];
  return (
    <div class="page dashboard">
      <div class="page-head">
        <h1>Dashboard</h1>
        <span class="muted">
          {st.samples.length ? `${st.samples.length} samples · last ${Math.round(st.windowS / 60)} min · every second` : st.loaded ? 'no samples yet' : 'loading…'}
        </span>
      </div>
      <ErrorAlert what="Stats" error={st.error} />
      <div class="cards">
        <Card title="Output tokens/s" chart={<LineChart title="Output tokens per second" samples={st.samples} windowMs={windowMs} unit="tok/s" series={[{ key: 'output_tokens_per_s', cls: 's1' }]} />}>
          <Metric name="output_tokens_per_s" label="now" value={last.output_tokens_per_s} digits={1} unit="tok/s" />
          {typeof last.prompt_tokens_per_s === 'number' ? <Metric name="prompt_tokens_per_s" label="prompt" value={last.prompt_tokens_per_s} digits={1} unit="tok/s" /> : null}
        </Card>
        <Card
          title="Requests"
          chart={
            <LineChart
              title="Requests running and waiting"
              samples={st.samples}
              windowMs={windowMs}
              unit="req"
              series={[
                { key: 'requests_running', cls: 's1' },
                { key: 'requests_waiting', cls: 's2' },
              ]}
            />
          }
        >
          <Metric name="requests_running" label="running" value={last.requests_running} digits={0} cls="s1" />
          <Metric name="requests_waiting" label="waiting" value={last.requests_waiting} digits={0} cls="s2" />
        </Card>
        <Card title="KV cache use" chart={<LineChart title="KV cache use percent" samples={st.samples} windowMs={windowMs} unit="%" fixedMax={100} series={[{ key: 'kv_cache_usage', cls: 's3', scale: 100 }]} />}>
          <div class="metric">
            <span class="metric-label">now</span>
            <span class="metric-value">
              {kv == null ? '—' : `${formatNumber(kv * 100, 1)} %`}
              <span class="muted small">
                {' '}(fraction <span data-metric="kv_cache_usage" data-value={kv == null ? '' : String(kv)}>{formatNumber(kv, 3)}</span>)
              </span>
            </span>
          </div>
        </Card>
        <Card title="Time to first token" chart={<LineChart title="Time to first token in milliseconds" samples={st.samples} windowMs={windowMs} unit="ms" series={[{ key: 'ttft_ms', cls: 's4' }]} />}>
          <Metric name="ttft_ms" label="latest" value={last.ttft_ms} digits={1} unit="ms" seen={lastSeen(st.samples, 'ttft_ms')} />
        </Card>
        <Card title="Inter-token latency" chart={<LineChart title="Inter-token latency in milliseconds" samples={st.samples} windowMs={windowMs} unit="ms" series={[{ key: 'itl_ms', cls: 's5' }]} />}>
          <Metric name="itl_ms" label="latest" value={last.itl_ms} digits={1} unit="ms" seen={lastSeen(st.samples, 'itl_ms')} />
        </Card>
      </div>
      <div class="panels">
        <section class="card wide" aria-label="Models">
          <h2 class="card-title">Models</h2>
          {info.error ? <p class="error-text">Models: {info.error}</p> : null}
          {info.metaError ? <p class="error-text">Metadata: {info.metaError}</p> : null}
          <ServerSummary meta={info.meta} />
          {info.models.some((m) => m.status === 'pulling') ? (
            <>
              <h3 class="card-subtitle">Pulls in progress</h3>
              <PullList models={info.models} />
            </>
          ) : null}
          <ModelsTable info={info} />
        </section>
        <section class="card" aria-label="Hardware">
          <h2 class="card-title">Hardware</h2>
          {hw.length ? (
            <KvList rows={hw} />
          ) : (
            <p class="muted">{st.loaded ? 'not reported' : 'loading…'}</p>
          )}
        </section>
        <section class="card" aria-label="Backends">
          <h2 class="card-title">Backends</h2>
          <BackendList backends={st.backends} />
        </section>
      </div>
    </div>
  );
}
