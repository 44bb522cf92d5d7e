// Small hand-drawn SVG line charts. The SVG stretches to its box (preserveAspectRatio none);
// strokes keep their width through vector-effect. Gaps (null values) break the line.
const W = 600;
const H = 100;

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function pathFor(samples, key, t0, span, yMax, scale) {
  let d = '';
  let run = 0; // points in the current unbroken segment
  const close = () => {
    if (run === 1) d += 'h1.5'; // a lone value still shows, as a short dash
    run = 0;
  };
  for (const s of samples) {
    const raw = s[key];
    if (typeof raw !== 'number' || !Number.isFinite(raw)) {
      close();
      continue;
    }
    const v = raw * scale;
    const x = ((s.t - t0) / span) * W;
    const y = H - (Math.min(v, yMax) / yMax) * (H - 4) - 2;
    d += `${run ? 'L' : 'M'}${x.toFixed(1)} ${y.toFixed(1)}`;
    run++;
  }
  close();
  return d;
}

// series: [{ key, label, cls, scale? }]; samples sorted by t (unix ms); windowMs: x-axis span.
export function LineChart({ samples, series, windowMs, fixedMax, unit, title }) {
  const tEnd = samples.length ? samples[samples.length - 1].t : 0;
  const t0 = tEnd - windowMs;
  let top = 0;
  for (const s of samples) {
    for (const se of series) {
      const v = s[se.key];
      if (typeof v === 'number' && Number.isFinite(v)) top = Math.max(top, v * (se.scale || 1));
    }
  }
  const yMax = fixedMax || niceMax(top);
  const mins = Math.round(windowMs / 60000);
  return (
    <figure class="chart">
      <div class="chart-scale muted" aria-hidden="true">
        <span>
          {yMax} {unit}
        </span>
        <span>0</span>
      </div>
      <svg viewBox={`0 0 ${W} ${H}`} preserveAspectRatio="none" role="img" aria-label={`${title}, last ${mins} minutes, scale 0 to ${yMax} ${unit}`}>
        <line class="grid" x1="0" y1={H / 2} x2={W} y2={H / 2} vector-effect="non-scaling-stroke" />
        <line class="grid" x1="0" y1={H - 1} x2={W} y2={H - 1} vector-effect="non-scaling-stroke" />
        {series.map((se) => (
          <path key={se.key} class={`line ${se.cls}`} d={pathFor(samples, se.key, t0, windowMs, yMax, se.scale || 1)} vector-effect="non-scaling-stroke" />
        ))}
      </svg>
      <figcaption class="chart-axis muted" aria-hidden="true">
        <span>−{mins} min</span>
        <span>now</span>
      </figcaption>
    </figure>
  );
}
