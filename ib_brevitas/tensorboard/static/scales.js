// Scales, ticks and the epoch colour map: pure maths, no DOM.

export const VIRIDIS = ["#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c",
  "#22a884", "#44bf70", "#7ad151", "#bddf26", "#fde725"];
const VIRIDIS_RGB = VIRIDIS.map((h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)));
export const VIRIDIS_LUT = Array.from({ length: 256 }, (_, k) => {
  const t = (k / 255) * (VIRIDIS_RGB.length - 1);
  const i = Math.min(Math.floor(t), VIRIDIS_RGB.length - 2);
  const f = t - i;
  const c = VIRIDIS_RGB[i].map((a, j) => Math.round(a + f * (VIRIDIS_RGB[i + 1][j] - a)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
});
export const LAYER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
export const LONG_RUN_EPOCHS = 1000;  // from here on the epoch axis is logarithmic by default

// Faint seed lines of a sweep: one path per layer (one stroke call), thinned to 1-pixel steps.
export function strokeFaint(ctx, lines, hidden, alpha) {
  const byIndex = new Map();
  for (const line of lines) {
    if (hidden(line.s.label) || line.px.length < 2) continue;
    if (!byIndex.has(line.s.index)) byIndex.set(line.s.index, []);
    byIndex.get(line.s.index).push(line);
  }
  ctx.globalAlpha = alpha;
  ctx.lineWidth = 0.7;
  for (const [index, group] of byIndex) {
    ctx.strokeStyle = layerColor(index);
    ctx.beginPath();
    for (const { px, py } of group) tracePolyline(ctx, px, py, 1);
    ctx.stroke();
  }
  ctx.globalAlpha = 1;
}

export function layerColor(index) {
  const n = LAYER_COLORS.length;
  return LAYER_COLORS[((index % n) + n) % n];
}

// Linear scale [lo, hi] -> [a, b].
export function linear(lo, hi, a, b) {
  const k = hi > lo ? (b - a) / (hi - lo) : 0;
  return { lo, hi, log: false, map: (v) => a + (v - lo) * k, ticks: (n = 5) => niceTicks(lo, hi, n) };
}

// Epoch scale: linear, or logarithmic in (epoch + 1) so that epoch 0 has a place
// (a random-label prefit's negative epochs mirrored: -log10(1 - epoch)).
export function epochScale(lo, hi, a, b, log) {
  if (!log) return linear(lo, hi, a, b);
  const f = (v) => (v >= 0 ? Math.log10(v + 1) : -Math.log10(1 - v));
  const flo = f(lo);
  const k = f(hi) > flo ? (b - a) / (f(hi) - flo) : 0;
  const ticks = () => {
    const out = lo <= 0 && hi >= 0 ? [0] : [];
    for (let d = 1; d <= hi; d *= 10) if (d >= lo) out.push(d);
    for (let d = 1; -d >= lo; d *= 10) if (-d <= hi) out.push(-d);
    if (out.length < 3) for (const d of [3, 30, 300, 3000, 30000]) if (d >= lo && d <= hi) out.push(d);
    return out.sort((u, v) => u - v);
  };
  return { lo, hi, log: true, map: (v) => a + (f(v) - flo) * k, ticks };
}

// The end of an epoch axis: the last epoch rounded up (half a tick step on a
// linear axis, a tenth of a decade on a log axis), so that a few new epochs of
// a running job fit on the same axis and the refresh only draws what they add.
export function epochAxisEnd(lo, hi, log) {
  if (log) {
    if (hi <= 0) return hi;
    const d = Math.log10(hi + 1);
    return Math.max(hi, Math.round(10 ** (Math.ceil(d * 10 - 1e-9) / 10)) - 1);
  }
  const ticks = niceTicks(lo, hi, 5);
  const step = ticks.length > 1 ? (ticks[1] - ticks[0]) / 2 : 0;
  return step > 0 ? Math.ceil(hi / step - 1e-9) * step : hi;
}

// The share t in [0, 1] of an epoch along the colour scale.
export function epochShare(scale) {
  const a = scale.map(scale.lo);
  const b = scale.map(scale.hi);
  return b === a ? () => 1 : (e) => (scale.map(e) - a) / (b - a);
}

export function niceTicks(lo, hi, count = 5) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || 10 * mag;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return ticks;
}

export function fmtTick(v) {
  return Number.isInteger(v) ? String(v) : String(+v.toFixed(3));
}

export function fmt4(v) {
  return typeof v === "number" ? v.toFixed(4) : "\u2013";
}

// Lowest and highest epoch and the largest values (plus spread) of some series,
// each from its point `from` on (a refresh: only what it added).
export function extent(series, from = 0) {
  let lo = Infinity;
  let hi = -Infinity;
  let maxX = 0;
  let maxY = 0;
  for (const s of series) {
    const n = s.epoch.length;
    if (n <= from) continue;
    lo = Math.min(lo, s.epoch[from]);
    hi = Math.max(hi, s.epoch[n - 1]);
    for (let i = from; i < n; i++) {
      maxX = Math.max(maxX, s.i_xt[i] + (s.sd_xt ? s.sd_xt[i] : 0));
      maxY = Math.max(maxY, s.i_ty[i] + (s.sd_ty ? s.sd_ty[i] : 0));
    }
  }
  return { lo, hi, maxX, maxY };
}

export function mergeExtent(a, b) {
  return { lo: Math.min(a.lo, b.lo), hi: Math.max(a.hi, b.hi), maxX: Math.max(a.maxX, b.maxX), maxY: Math.max(a.maxY, b.maxY) };
}

// What a refresh did to a sweep's seeds: null when it is not a pure extension
// (another run list, a series gone or rewritten), else per seed the series that
// gained points: [{k (seed), j (series), from (old length)}]. Unchanged seeds keep their arrays.
export function seedGrowth(before, after) {
  if (before.length !== after.length) return null;
  const grown = [];
  for (let k = 0; k < before.length; k++) {
    const a = before[k];
    const b = after[k];
    if (a.run !== b.run || a.series.length !== b.series.length) return null;
    if (a.series === b.series) continue;
    for (let j = 0; j < a.series.length; j++) {
      const u = a.series[j];
      const v = b.series[j];
      if (u.layer !== v.layer || u.estimator !== v.estimator || v.epoch.length < u.epoch.length) return null;
      const n = u.epoch.length;
      for (let i = 0; i < n; i++) {
        if (u.epoch[i] !== v.epoch[i] || u.i_xt[i] !== v.i_xt[i] || u.i_ty[i] !== v.i_ty[i]) return null;
      }
      if (v.epoch.length > n) grown.push({ k, j, from: n });
    }
  }
  return grown;
}

// Trace a polyline, skipping vertices within `step` pixels (default half a pixel) of the last one kept.
export function tracePolyline(ctx, px, py, step = 0.5) {
  let lx = px[0];
  let ly = py[0];
  const min2 = step * step;
  ctx.moveTo(lx, ly);
  for (let i = 1; i < px.length; i++) {
    const dx = px[i] - lx;
    const dy = py[i] - ly;
    if (dx * dx + dy * dy >= min2 || i === px.length - 1) {
      ctx.lineTo(px[i], py[i]);
      lx = px[i];
      ly = py[i];
    }
  }
}
