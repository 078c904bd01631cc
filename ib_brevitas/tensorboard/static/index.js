// Information-plane dashboard for TensorBoard (plain ES module, no build step).
//
// TensorBoard loads this module in an iframe and calls render(). Data comes
// from the plugin's JSON routes (relative URLs resolve to
// /data/plugin/information_plane/). Run and layer names are user-controlled:
// they only ever reach the page through textContent and setAttribute.
// Points are drawn on a canvas (fast for 100,000 of them); axes, labels and
// markers are SVG on top. For tests and tools, each layer's SVG group in a
// plane carries data-layer, data-label, data-count and data-epochs (the points
// drawn), the plane svg its scale (data-x0/kx/y0/ky), and after each render
// <body> gets data-ready="true", data-render-ms and data-renders.

const POLL_MS = 3000;
const MAX_DEFAULT_RUNS = 6;
const SVG_NS = "http://www.w3.org/2000/svg";
const VIRIDIS = ["#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c",
  "#22a884", "#44bf70", "#7ad151", "#bddf26", "#fde725"];
const LAYER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const MARK_R = 3;
const HOVER_PX = 8;
const PLANE = { w: 440, h: 360, l: 52, r: 78, t: 16, b: 42 };
const EPOCHS = { w: 440, h: 330, l: 52, r: 78, t: 14, b: 38, gap: 30 };

const state = {
  runs: [],                 // run names with data, from ./runs
  selected: new Set(),      // runs shown
  touched: false,           // the user changed the selection (no more defaults)
  mode: "runs",             // "runs" (side by side) or "mean" (seeds averaged per group)
  hiddenLabels: new Set(),  // layer labels (T1..) switched off
  data: new Map(),          // run -> {version, points, phases, hardware}
  renders: 0,
  charts: [],               // redraw callbacks of the canvases on screen
};
let ui = null;

// ---------------------------------------------------------------- helpers

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const msg = body && body.error ? body.error : `HTTP ${response.status}`;
    const err = new Error(msg);
    err.status = response.status;
    throw err;
  }
  return body;
}

function runURL(route, run) {
  return `./${route}?run=${encodeURIComponent(run)}`;
}

const VIRIDIS_RGB = VIRIDIS.map((h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)));
const VIRIDIS_LUT = Array.from({ length: 256 }, (_, k) => {
  const t = (k / 255) * (VIRIDIS_RGB.length - 1);
  const i = Math.min(Math.floor(t), VIRIDIS_RGB.length - 2);
  const f = t - i;
  const c = VIRIDIS_RGB[i].map((a, j) => Math.round(a + f * (VIRIDIS_RGB[i + 1][j] - a)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
});

function layerColor(index) {
  return LAYER_COLORS[((index % LAYER_COLORS.length) + LAYER_COLORS.length) % LAYER_COLORS.length];
}

function niceTicks(lo, hi, count = 5) {
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

function fmtTick(v) {
  return Number.isInteger(v) ? String(v) : String(+v.toFixed(3));
}

function detailText(detail) {
  if (detail === undefined || detail === null || detail === "") return "";
  if (typeof detail !== "object") return ` \u2013 ${detail}`;
  const parts = Object.entries(detail).map(([k, v]) => `${k} = ${typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(4) : v}`);
  return parts.length ? ` \u2013 ${parts.join(", ")}` : "";
}

function fmt(v) {
  return typeof v === "number" ? v.toFixed(4) : "–";
}

// ---------------------------------------------------------------- data

// Per-layer series of one run: [{layer, label, index, points: [...] sorted by epoch}].
function seriesOf(data) {
  const byLayer = new Map();
  for (const name of data.points.layers) byLayer.set(name, []);
  for (const p of data.points.points) {
    if (!byLayer.has(p.layer)) byLayer.set(p.layer, []);
    byLayer.get(p.layer).push(p);
  }
  return [...byLayer.entries()].map(([layer, pts]) => {
    pts.sort((a, b) => a.epoch - b.epoch);
    const index = pts.length ? pts[0].layer_index : data.points.layers.indexOf(layer);
    const label = data.points.labels[layer] || `T${index + 1}`;
    return { layer, label, index, points: pts };
  });
}

// Average runs of one group per layer and epoch; spread = standard deviation.
function meanSeries(members) {
  const byLayer = new Map();
  for (const data of members) {
    for (const s of seriesOf(data)) {
      if (!byLayer.has(s.layer)) byLayer.set(s.layer, { layer: s.layer, label: s.label, index: s.index, epochs: new Map() });
      const entry = byLayer.get(s.layer);
      for (const p of s.points) {
        if (!entry.epochs.has(p.epoch)) entry.epochs.set(p.epoch, []);
        entry.epochs.get(p.epoch).push(p);
      }
    }
  }
  const stats = (xs) => {
    const m = xs.reduce((a, b) => a + b, 0) / xs.length;
    const v = xs.length > 1 ? xs.reduce((a, b) => a + (b - m) * (b - m), 0) / (xs.length - 1) : 0;
    return [m, Math.sqrt(v)];
  };
  return [...byLayer.values()].sort((a, b) => a.index - b.index).map((e) => {
    const points = [...e.epochs.entries()].sort((a, b) => a[0] - b[0]).map(([epoch, ps]) => {
      const [ix, sx] = stats(ps.map((p) => p.i_xt));
      const [iy, sy] = stats(ps.map((p) => p.i_ty));
      return { layer: e.layer, epoch, i_xt: ix, i_ty: iy, sd_xt: sx, sd_ty: sy, n_runs: ps.length };
    });
    return { layer: e.layer, label: e.label, index: e.index, points };
  });
}

function boundsOf(datas) {
  let log2n = null;
  let hy = null;
  for (const d of datas) {
    const b = d.points.bounds || {};
    if (typeof b.log2_n === "number") log2n = Math.max(log2n ?? 0, b.log2_n);
    if (typeof b.h_y === "number") hy = Math.max(hy ?? 0, b.h_y);
  }
  return { log2n, hy };
}

// ---------------------------------------------------------------- drawing

function axes(svg, box, xs, ys, xLabel, yLabel) {
  const g = svgEl("g", { class: "ip-axes" });
  const x0 = box.l;
  const x1 = box.w - box.r;
  const y0 = box.h - box.b;
  const y1 = box.t;
  g.appendChild(svgEl("rect", { x: x0, y: y1, width: x1 - x0, height: y0 - y1, class: "ip-frame" }));
  for (const v of niceTicks(xs.lo, xs.hi)) {
    const x = xs.map(v);
    g.appendChild(svgEl("line", { x1: x, x2: x, y1: y0, y2: y0 + 4, class: "ip-tick" }));
    g.appendChild(svgEl("text", { x, y: y0 + 15, "text-anchor": "middle" }, fmtTick(v)));
  }
  for (const v of niceTicks(ys.lo, ys.hi, 4)) {
    const y = ys.map(v);
    g.appendChild(svgEl("line", { x1: x0 - 4, x2: x0, y1: y, y2: y, class: "ip-tick" }));
    g.appendChild(svgEl("text", { x: x0 - 6, y: y + 3, "text-anchor": "end" }, fmtTick(v)));
  }
  if (xLabel) g.appendChild(svgEl("text", { x: (x0 + x1) / 2, y: y0 + 32, "text-anchor": "middle", class: "ip-axis-label" }, xLabel));
  g.appendChild(svgEl("text", {
    x: 0, y: 0, "text-anchor": "middle", class: "ip-axis-label",
    transform: `translate(${x0 - 38},${(y0 + y1) / 2}) rotate(-90)`,
  }, yLabel));
  svg.appendChild(g);
}

function scale(lo, hi, a, b) {
  const k = hi > lo ? (b - a) / (hi - lo) : 0;
  return { lo, hi, map: (v) => a + (v - lo) * k };
}

function colorBar(svg, box, lo, hi) {
  const id = `ip-grad-${Math.random().toString(36).slice(2)}`;
  const defs = svgEl("defs");
  const grad = svgEl("linearGradient", { id, x1: 0, y1: 1, x2: 0, y2: 0 });
  VIRIDIS.forEach((c, i) => grad.appendChild(svgEl("stop", { offset: i / (VIRIDIS.length - 1), "stop-color": c })));
  defs.appendChild(grad);
  svg.appendChild(defs);
  const x = box.w - box.r + 14;
  const g = svgEl("g", { class: "ip-colorbar" });
  g.appendChild(svgEl("rect", { x, y: box.t, width: 10, height: box.h - box.t - box.b, fill: `url(#${id})` }));
  g.appendChild(svgEl("text", { x: x + 14, y: box.t + 8 }, String(hi)));
  g.appendChild(svgEl("text", { x: x + 14, y: box.h - box.b }, String(lo)));
  g.appendChild(svgEl("text", {
    x: 0, y: 0, "text-anchor": "middle", class: "ip-axis-label",
    transform: `translate(${x + 46},${(box.h - box.b + box.t) / 2}) rotate(-90)`,
  }, "epoch"));
  svg.appendChild(g);
}

// A chart: data drawn on a <canvas> (fast for 100,000 points), with an <svg>
// overlay on top for axes, bounds, labels and markers (text stays text).
function chart(box, cls) {
  const wrap = el("div", { class: `ip-chart ${cls}` });
  wrap.style.width = `${box.w}px`;
  wrap.style.height = `${box.h}px`;
  const dpr = window.devicePixelRatio || 1;
  const canvas = el("canvas", { width: Math.round(box.w * dpr), height: Math.round(box.h * dpr) });
  canvas.style.width = `${box.w}px`;
  canvas.style.height = `${box.h}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const svg = svgEl("svg", { class: cls, width: box.w, height: box.h, viewBox: `0 0 ${box.w} ${box.h}` });
  wrap.append(canvas, svg);
  return { wrap, ctx, svg, clear: () => ctx.clearRect(0, 0, box.w, box.h) };
}

// Canvas marker per layer (shape cycles with the layer index).
function traceMark(ctx, shape, x, y, r) {
  switch (shape % 4) {
    case 0: ctx.rect(x - r, y - r, 2 * r, 2 * r); break;
    case 1: ctx.moveTo(x, y - 1.2 * r); ctx.lineTo(x + 1.1 * r, y + 0.9 * r); ctx.lineTo(x - 1.1 * r, y + 0.9 * r); ctx.closePath(); break;
    case 2: ctx.moveTo(x, y - 1.3 * r); ctx.lineTo(x + 1.3 * r, y); ctx.lineTo(x, y + 1.3 * r); ctx.lineTo(x - 1.3 * r, y); ctx.closePath(); break;
    default: ctx.moveTo(x + r, y); ctx.arc(x, y, r, 0, 2 * Math.PI);
  }
}

// Trace a polyline, skipping vertices within half a pixel of the last one kept
// (10,000 epochs on a 340-pixel axis would otherwise cost paint time for nothing).
function tracePolyline(ctx, px, py) {
  let lx = px[0];
  let ly = py[0];
  ctx.moveTo(lx, ly);
  for (let i = 1; i < px.length; i++) {
    const dx = px[i] - lx;
    const dy = py[i] - ly;
    if (dx * dx + dy * dy >= 0.25 || i === px.length - 1) {
      ctx.lineTo(px[i], py[i]);
      lx = px[i];
      ly = py[i];
    }
  }
}

function extent(series) {
  let lo = Infinity;
  let hi = -Infinity;
  let maxX = 0;
  let maxY = 0;
  for (const s of series) {
    for (const p of s.points) {
      if (p.epoch < lo) lo = p.epoch;
      if (p.epoch > hi) hi = p.epoch;
      maxX = Math.max(maxX, p.i_xt + (p.sd_xt || 0));
      maxY = Math.max(maxY, p.i_ty + (p.sd_ty || 0));
    }
  }
  return { lo, hi, maxX, maxY };
}

// The information plane: one trajectory per layer, points coloured by epoch.
// Per layer the overlay holds <g class="ip-layer" data-layer data-label
// data-count data-epochs> listing the points drawn; the svg exposes its scale
// (data-x0/kx/y0/ky: pixel = x0 + bits * kx) so a test can aim at a point.
function drawPlane(series, bounds, panel, charts) {
  const c = chart(PLANE, "ip-plane");
  const { svg } = c;
  const ext = extent(series);
  const { lo, hi } = ext;
  const xs = scale(0, Math.max(ext.maxX, bounds.log2n ?? 0, 1e-9) * 1.05, PLANE.l, PLANE.w - PLANE.r);
  const ys = scale(0, Math.max(ext.maxY, bounds.hy ?? 0, 1e-9) * 1.08, PLANE.h - PLANE.b, PLANE.t);
  svg.dataset.x0 = xs.map(0);
  svg.dataset.kx = xs.map(1) - xs.map(0);
  svg.dataset.y0 = ys.map(0);
  svg.dataset.ky = ys.map(1) - ys.map(0);
  axes(svg, PLANE, xs, ys, "I(X;T) [bits]", "I(T;Y) [bits]");
  if (bounds.log2n !== null) {
    const x = xs.map(bounds.log2n);
    svg.appendChild(svgEl("line", { x1: x, x2: x, y1: PLANE.t, y2: PLANE.h - PLANE.b, class: "ip-bound", "data-bound": "log2n" }));
    svg.appendChild(svgEl("text", { x: x - 3, y: PLANE.t + 10, "text-anchor": "end", class: "ip-bound-label" }, "log\u2082N"));
  }
  if (bounds.hy !== null) {
    const y = ys.map(bounds.hy);
    svg.appendChild(svgEl("line", { x1: PLANE.l, x2: PLANE.w - PLANE.r, y1: y, y2: y, class: "ip-bound", "data-bound": "hy" }));
    svg.appendChild(svgEl("text", { x: PLANE.l + 4, y: y - 4, class: "ip-bound-label" }, "H(Y)"));
  }
  if (lo <= hi) colorBar(svg, PLANE, lo, hi);
  const hits = series.map((s) => {
    const n = s.points.length;
    const px = new Float32Array(n);
    const py = new Float32Array(n);
    const bucket = new Uint16Array(n);
    s.points.forEach((p, i) => {
      px[i] = xs.map(p.i_xt);
      py[i] = ys.map(p.i_ty);
      bucket[i] = hi > lo ? Math.round(((p.epoch - lo) / (hi - lo)) * 255) : 255;
    });
    const g = svgEl("g", {
      class: "ip-layer", "data-layer": s.layer, "data-label": s.label,
      "data-count": n, "data-epochs": s.points.map((p) => p.epoch).join(" "),
    });
    if (n) {
      const t = svgEl("text", { x: px[n - 1] + 6, y: py[n - 1] - 6, class: "ip-layer-label" }, s.label);
      t.appendChild(svgEl("title", {}, s.layer));
      g.appendChild(t);
    }
    svg.appendChild(g);
    return { series: s, px, py, bucket };
  });
  const ring = svgEl("circle", { r: MARK_R + 2.5, class: "ip-ring", visibility: "hidden" });
  svg.appendChild(ring);

  const draw = () => {
    const { ctx } = c;
    c.clear();
    ctx.save();
    ctx.beginPath();
    ctx.rect(PLANE.l, PLANE.t, PLANE.w - PLANE.l - PLANE.r, PLANE.h - PLANE.t - PLANE.b);
    ctx.clip();
    const shown = hits.filter((h) => !state.hiddenLabels.has(h.series.label));
    ctx.lineWidth = 0.8;
    ctx.strokeStyle = "rgba(117,117,117,0.65)";
    for (const h of shown) {
      const { px, py, series: s } = h;
      ctx.beginPath();
      tracePolyline(ctx, px, py);
      if (s.points.some((p) => p.sd_xt > 0 || p.sd_ty > 0)) {  // spread of the mean view
        s.points.forEach((p, i) => {
          ctx.moveTo(xs.map(p.i_xt - p.sd_xt), py[i]);
          ctx.lineTo(xs.map(p.i_xt + p.sd_xt), py[i]);
          ctx.moveTo(px[i], ys.map(p.i_ty - p.sd_ty));
          ctx.lineTo(px[i], ys.map(p.i_ty + p.sd_ty));
        });
      }
      ctx.stroke();
    }
    ctx.lineWidth = 0.3;
    ctx.strokeStyle = "#212121";
    const outline = shown.reduce((a, h) => a + h.px.length, 0) <= 20000;  // outlines cost paint time
    for (const h of shown) {  // one path per colour level: later epochs end on top
      const { px, py, bucket, series: s } = h;
      const order = Array.from(px.keys()).sort((u, v) => bucket[u] - bucket[v] || u - v);
      for (let k = 0; k < order.length;) {
        const b = bucket[order[k]];
        ctx.beginPath();
        const seen = new Set();  // a mark on the same half pixel in the same colour adds nothing
        for (; k < order.length && bucket[order[k]] === b; k++) {
          const i = order[k];
          const key = Math.round(px[i] * 2) * 4096 + Math.round(py[i] * 2);
          if (!seen.has(key)) { seen.add(key); traceMark(ctx, s.index, px[i], py[i], MARK_R); }
        }
        ctx.fillStyle = VIRIDIS_LUT[b];
        ctx.fill();
        if (outline) ctx.stroke();
      }
    }
    ctx.restore();
  };
  charts.push(draw);  // drawn by applyLayerVisibility
  let pending = false;
  c.wrap.addEventListener("mousemove", (ev) => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; hover(ev, svg, ring, hits, panel); });
  });
  c.wrap.addEventListener("mouseleave", () => { ring.setAttribute("visibility", "hidden"); ui.tooltip.hidden = true; });
  return c.wrap;
}

// I(X;T) and I(T;Y) against epoch, one line per layer, phase events marked.
function drawEpochs(series, bounds, events, charts) {
  const c = chart(EPOCHS, "ip-epochs");
  const { svg } = c;
  const ext = extent(series);
  let { lo, hi } = ext;
  if (!(lo <= hi)) { lo = 0; hi = 1; }
  if (lo === hi) { hi = lo + 1; lo = Math.max(0, lo - 1); }
  const half = (EPOCHS.h - EPOCHS.t - EPOCHS.b - EPOCHS.gap) / 2;
  const xs = scale(lo, hi, EPOCHS.l, EPOCHS.w - EPOCHS.r);
  const parts = [
    { key: "i_xt", sd: "sd_xt", label: "I(X;T)", top: EPOCHS.t, max: Math.max(ext.maxX, bounds.log2n ?? 0), bound: bounds.log2n },
    { key: "i_ty", sd: "sd_ty", label: "I(T;Y)", top: EPOCHS.t + half + EPOCHS.gap, max: Math.max(ext.maxY, bounds.hy ?? 0), bound: bounds.hy },
  ];
  for (const part of parts) {
    part.ys = scale(0, (part.max || 1) * 1.08, part.top + half, part.top);
    axes(svg, { ...EPOCHS, t: part.top, h: part.top + half + EPOCHS.b }, xs, part.ys, part.key === "i_ty" ? "epoch" : "", `${part.label} [bits]`);
    if (part.bound !== null) {
      const y = part.ys.map(part.bound);
      svg.appendChild(svgEl("line", { x1: EPOCHS.l, x2: EPOCHS.w - EPOCHS.r, y1: y, y2: y, class: "ip-bound" }));
    }
  }
  for (const s of series) {
    const g = svgEl("g", { class: "ip-layer", "data-layer": s.layer, "data-label": s.label });
    const color = layerColor(s.index);
    if (s.points.length) {
      const last = s.points[s.points.length - 1];
      for (const part of parts) {
        const t = svgEl("text", { x: EPOCHS.w - EPOCHS.r + 4, y: part.ys.map(last[part.key]) + 3, fill: color, class: "ip-layer-label" }, s.label);
        t.appendChild(svgEl("title", {}, s.layer));
        g.appendChild(t);
      }
    }
    for (const e of events.filter((ev) => ev.layer === s.layer && ev.epoch >= lo && ev.epoch <= hi)) {
      let near = null;  // the layer's measurement nearest to the event
      for (const p of s.points) if (!near || Math.abs(p.epoch - e.epoch) < Math.abs(near.epoch - e.epoch)) near = p;
      if (!near) continue;
      const x = xs.map(e.epoch);
      for (const part of parts) {
        const y = part.ys.map(typeof e[part.key] === "number" ? e[part.key] : near[part.key]);
        g.appendChild(svgEl("line", { x1: x, x2: x, y1: part.top, y2: part.top + half, stroke: color, class: "ip-phase-line" }));
        const m = svgEl("path", {
          d: `M${x.toFixed(1)},${(y - 3).toFixed(1)}l-4,-7h8z`, fill: color,
          class: "ip-phase", "data-layer": s.layer, "data-epoch": e.epoch, "data-kind": String(e.kind),
        });
        m.appendChild(svgEl("title", {}, `${s.label} (${s.layer}) epoch ${e.epoch}: ${String(e.kind).replace(/_/g, " ")}${detailText(e.detail)}`));
        g.appendChild(m);
      }
    }
    svg.appendChild(g);
  }
  const draw = () => {
    const { ctx } = c;
    c.clear();
    for (const s of series) {
      if (state.hiddenLabels.has(s.label) || !s.points.length) continue;
      const color = layerColor(s.index);
      for (const part of parts) {
        const X = (p) => xs.map(p.epoch);
        const Y = (v) => part.ys.map(v);
        if (s.points.some((p) => p[part.sd] > 0)) {
          ctx.beginPath();
          s.points.forEach((p, i) => (i ? ctx.lineTo(X(p), Y(p[part.key] + p[part.sd])) : ctx.moveTo(X(p), Y(p[part.key] + p[part.sd]))));
          for (let i = s.points.length - 1; i >= 0; i--) ctx.lineTo(X(s.points[i]), Y(s.points[i][part.key] - s.points[i][part.sd]));
          ctx.closePath();
          ctx.globalAlpha = 0.18;
          ctx.fillStyle = color;
          ctx.fill();
          ctx.globalAlpha = 1;
        }
        ctx.beginPath();
        if (s.points.length === 1) {
          ctx.arc(X(s.points[0]), Y(s.points[0][part.key]), 2.5, 0, 2 * Math.PI);
          ctx.fillStyle = color;
          ctx.fill();
          continue;
        }
        tracePolyline(ctx, Float32Array.from(s.points, X), Float32Array.from(s.points, (p) => Y(p[part.key])));
        ctx.strokeStyle = color;
        ctx.lineWidth = 1.5;
        ctx.stroke();
      }
    }
  };
  charts.push(draw);  // drawn by applyLayerVisibility
  return c.wrap;
}

function drawHardware(hw) {
  if (!hw || !hw.rows || !hw.rows.length) return null;
  const wrap = el("div", { class: "ip-hardware" });
  wrap.appendChild(el("h4", {}, "Information vs hardware cost"));
  const cols = [];
  for (const r of hw.rows) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
  const table = el("table");
  const head = el("tr");
  for (const c of cols) head.appendChild(el("th", {}, c));
  table.appendChild(head);
  const cell = (v) => (typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(4) : v === undefined || v === null ? "" : String(v));
  for (const r of hw.rows) {
    const tr = el("tr");
    for (const c of cols) tr.appendChild(el("td", {}, cell(r[c])));
    table.appendChild(tr);
  }
  wrap.appendChild(table);
  const totals = Object.entries(hw.totals || {});
  if (totals.length) wrap.appendChild(el("p", { class: "ip-totals" }, "Totals: " + totals.map(([k, v]) => `${k} = ${cell(v)}`).join(", ")));
  return wrap;
}

// ---------------------------------------------------------------- tooltip

// Nearest visible point within HOVER_PX of the mouse: tooltip and highlight ring.
function hover(ev, svg, ring, hits, panel) {
  const box = svg.getBoundingClientRect();
  const mx = ev.clientX - box.left;
  const my = ev.clientY - box.top;
  let best = null;
  let bestD = HOVER_PX * HOVER_PX;
  for (const h of hits) {
    if (state.hiddenLabels.has(h.series.label)) continue;
    const { px, py } = h;
    for (let i = 0; i < px.length; i++) {
      const dx = px[i] - mx;
      const dy = py[i] - my;
      const d = dx * dx + dy * dy;
      if (d <= bestD) { bestD = d; best = [h, i]; }  // "<=": the point drawn last (on top) wins ties
    }
  }
  if (!best) {
    ring.setAttribute("visibility", "hidden");
    ui.tooltip.hidden = true;
    return;
  }
  const [h, i] = best;
  ring.setAttribute("cx", h.px[i]);
  ring.setAttribute("cy", h.py[i]);
  ring.setAttribute("visibility", "visible");
  showTooltip(ev, panel, h.series, h.series.points[i]);
}

function showTooltip(ev, panel, s, p) {
  const tip = ui.tooltip;
  tip.replaceChildren();
  tip.dataset.layer = s.layer;
  tip.dataset.epoch = String(p.epoch);
  tip.appendChild(el("div", { class: "ip-tip-layer" }, `${s.label} \u00b7 ${s.layer}`));
  if (panel.mean) tip.appendChild(el("div", {}, `${panel.title} (mean of ${p.n_runs} run${p.n_runs === 1 ? "" : "s"})`));
  else tip.appendChild(el("div", {}, `run ${panel.title}`));
  tip.appendChild(el("div", { "data-field": "epoch" }, `epoch ${p.epoch}`));
  const sd = (v) => (panel.mean ? ` \u00b1 ${fmt(v)}` : "");
  tip.appendChild(el("div", { "data-field": "i_xt" }, `I(X;T) = ${fmt(p.i_xt)}${sd(p.sd_xt)} bits`));
  tip.appendChild(el("div", { "data-field": "i_ty" }, `I(T;Y) = ${fmt(p.i_ty)}${sd(p.sd_ty)} bits`));
  if (!panel.mean) tip.appendChild(el("div", {}, `H(T) = ${fmt(p.h_t)} bits, ${p.n_distinct} distinct of ${p.n_samples}`));
  tip.hidden = false;
  tip.style.left = `${Math.min(ev.clientX + 14, window.innerWidth - 270)}px`;
  tip.style.top = `${ev.clientY + 14}px`;
}

// ---------------------------------------------------------------- layout

const STYLE = `
body { margin: 0; font: 12px/1.4 Roboto, "Helvetica Neue", Arial, sans-serif; color: #212121; background: #fff; }
.ip-bar { display: flex; flex-wrap: wrap; gap: 12px; padding: 8px 12px; border-bottom: 1px solid #ddd; align-items: flex-start; }
.ip-bar fieldset { border: 1px solid #ddd; border-radius: 4px; padding: 4px 8px; margin: 0; max-height: 110px; overflow: auto; }
.ip-bar legend { font-weight: 600; padding: 0 4px; }
.ip-bar label { display: block; white-space: nowrap; cursor: pointer; }
.ip-layer-toggles > div { display: grid; grid-template-columns: repeat(5, auto); column-gap: 10px; }
.ip-swatch { display: inline-block; width: 10px; height: 10px; margin: 0 4px; vertical-align: -1px; border-radius: 2px; }
.ip-status { color: #666; align-self: center; }
.ip-status.ip-error { color: #b00020; }
.ip-panels { display: flex; flex-wrap: wrap; gap: 16px; padding: 12px; }
.ip-panel { border: 1px solid #e0e0e0; border-radius: 6px; padding: 8px; width: 440px; }
.ip-chart { position: relative; }
.ip-chart canvas, .ip-chart svg { position: absolute; left: 0; top: 0; }
.ip-panel h3 { margin: 0 0 2px; font-size: 14px; font-weight: 600; word-break: break-all; max-width: 440px; }
.ip-sub { color: #666; margin-bottom: 4px; }
.ip-empty { padding: 24px; color: #666; max-width: 640px; }
svg text { font-size: 11px; fill: #424242; }
.ip-frame { fill: none; stroke: #bdbdbd; }
.ip-tick { stroke: #9e9e9e; }
.ip-axis-label { font-size: 12px; fill: #212121; }
.ip-bound { stroke: #616161; stroke-dasharray: 5 4; stroke-width: 1; }
.ip-bound-label { fill: #616161; font-style: italic; }
.ip-traj { fill: none; stroke: #9e9e9e; stroke-width: 0.8; stroke-opacity: 0.7; }
.ip-spread { fill: none; stroke: #757575; stroke-width: 0.8; stroke-opacity: 0.6; }
.ip-pts { stroke: #212121; stroke-width: 0.3; }
.ip-ring { fill: none; stroke: #d50000; stroke-width: 1.5; pointer-events: none; }
.ip-layer-label { font-weight: 700; font-size: 12px; }
.ip-line { fill: none; stroke-width: 1.5; }
.ip-band { fill-opacity: 0.18; stroke: none; }
.ip-phase { stroke: #212121; stroke-width: 0.5; }
.ip-phase-line { stroke-dasharray: 2 3; stroke-width: 0.8; }
.ip-tooltip { position: fixed; pointer-events: none; background: rgba(33,33,33,0.92); color: #fff; padding: 6px 8px; border-radius: 4px; max-width: 260px; word-break: break-all; z-index: 10; }
.ip-tip-layer { font-weight: 600; }
.ip-hardware table { border-collapse: collapse; margin-top: 4px; }
.ip-hardware th, .ip-hardware td { border: 1px solid #e0e0e0; padding: 2px 6px; text-align: right; }
.ip-hardware h4 { margin: 8px 0 0; }
`;

function buildShell() {
  document.head.appendChild(el("style", {}, STYLE));
  const root = el("div", { class: "ip-root" });
  const bar = el("div", { class: "ip-bar" });
  const runsBox = el("fieldset", { class: "ip-runs" });
  runsBox.appendChild(el("legend", {}, "Runs"));
  const runList = el("div");
  runsBox.appendChild(runList);
  const viewBox = el("fieldset", { class: "ip-view" });
  viewBox.appendChild(el("legend", {}, "View"));
  for (const [value, text] of [["runs", "each run"], ["mean", "mean over seeds"]]) {
    const label = el("label");
    const input = el("input", { type: "radio", name: "ip-mode", value });
    input.checked = state.mode === value;
    input.addEventListener("change", () => { state.mode = value; drawAll(); });
    label.append(input, document.createTextNode(` ${text}`));
    viewBox.appendChild(label);
  }
  const layerBox = el("fieldset", { class: "ip-layer-toggles" });
  layerBox.appendChild(el("legend", {}, "Layers"));
  const layerList = el("div");
  layerBox.appendChild(layerList);
  const status = el("span", { class: "ip-status" });
  bar.append(runsBox, viewBox, layerBox, status);
  const panels = el("div", { class: "ip-panels" });
  const tooltip = el("div", { class: "ip-tooltip" });
  tooltip.hidden = true;
  root.append(bar, panels, tooltip);
  document.body.appendChild(root);
  ui = { runList, layerList, status, panels, tooltip };
}

function setStatus(text, isError = false) {
  ui.status.textContent = text;
  ui.status.classList.toggle("ip-error", isError);
}

function drawRunSelector() {
  ui.runList.replaceChildren();
  for (const run of state.runs) {
    const label = el("label");
    const input = el("input", { type: "checkbox", "data-run": run });
    input.checked = state.selected.has(run);
    input.addEventListener("change", async () => {
      state.touched = true;
      if (input.checked) state.selected.add(run); else state.selected.delete(run);
      await refreshRuns([run]);
      drawAll();
    });
    label.append(input, el("span", { class: "ip-run-name" }, ` ${run}`));
    ui.runList.appendChild(label);
  }
}

function drawLayerToggles(labels) {
  ui.layerList.replaceChildren();
  for (const { label, index, layer } of labels) {
    const row = el("label", { title: layer });
    const input = el("input", { type: "checkbox", "data-label": label });
    input.checked = !state.hiddenLabels.has(label);
    input.addEventListener("change", () => {
      if (input.checked) state.hiddenLabels.delete(label); else state.hiddenLabels.add(label);
      applyLayerVisibility();
    });
    const swatch = el("span", { class: "ip-swatch" });
    swatch.style.background = layerColor(index);
    row.append(input, swatch, document.createTextNode(label));
    ui.layerList.appendChild(row);
  }
}

function applyLayerVisibility() {
  for (const g of ui.panels.querySelectorAll("g[data-label]")) {
    g.style.display = state.hiddenLabels.has(g.getAttribute("data-label")) ? "none" : "";
  }
  for (const draw of state.charts) draw();
}

function panelFor({ key, title, subtitle, series, bounds, events, hardware, mean }, charts) {
  const section = el("section", { class: "ip-panel", [mean ? "data-group" : "data-run"]: key });
  section.appendChild(el("h3", { class: "ip-title" }, title));
  section.appendChild(el("div", { class: "ip-sub" }, subtitle));
  const panel = { title, mean };
  if (!series.some((s) => s.points.length)) {
    section.appendChild(el("div", { class: "ip-empty" }, "No measurements in this run yet."));
    return section;
  }
  section.appendChild(drawPlane(series, bounds, panel, charts));
  section.appendChild(drawEpochs(series, bounds, events, charts));
  const hw = drawHardware(hardware);
  if (hw) section.appendChild(hw);
  return section;
}

function describe(series) {
  const n = series.reduce((a, s) => a + s.points.length, 0);
  const { lo, hi } = extent(series);
  const span = n ? `, epochs ${lo}\u2013${hi}` : "";
  return `${series.length} layer${series.length === 1 ? "" : "s"}, ${n} point${n === 1 ? "" : "s"}${span}`;
}

function drawAll() {
  const t0 = performance.now();
  ui.tooltip.hidden = true;
  state.charts = [];
  const shown = state.runs.filter((r) => state.selected.has(r) && state.data.has(r));
  const panels = [];
  const labels = new Map();
  if (!state.runs.length) {
    const msg = el("div", { class: "ip-empty" });
    msg.append(
      el("p", {}, "No information-plane data in this log directory yet."),
      el("p", {}, "Write it during training with ib_brevitas.tensorboard.TensorBoardSink (or `ib-brevitas train --run-dir runs/NAME`), then point TensorBoard at the parent directory: tensorboard --logdir runs/"),
    );
    panels.push(msg);
  } else if (state.mode === "mean") {
    const groups = new Map();
    for (const run of shown) {
      const g = state.data.get(run).points.group || run;
      if (!groups.has(g)) groups.set(g, []);
      groups.get(g).push(run);
    }
    for (const [group, runs] of groups) {
      const datas = runs.map((r) => state.data.get(r));
      const series = meanSeries(datas);
      series.forEach((s) => labels.set(s.label, s));
      panels.push(panelFor({
        key: group, title: group, mean: true, series, bounds: boundsOf(datas), events: [], hardware: null,
        subtitle: `mean \u00b1 s.d. over ${runs.length} run${runs.length === 1 ? "" : "s"}: ${runs.join(", ")}; ${describe(series)}`,
      }, state.charts));
    }
  } else {
    for (const run of shown) {
      const data = state.data.get(run);
      const series = seriesOf(data);
      series.forEach((s) => labels.set(s.label, s));
      panels.push(panelFor({
        key: run, title: run, mean: false, series, bounds: boundsOf([data]),
        events: data.phases.events || [], hardware: data.hardware, subtitle: describe(series),
      }, state.charts));
    }
    if (state.runs.length && !shown.length) panels.push(el("div", { class: "ip-empty" }, "Select a run above."));
  }
  ui.panels.replaceChildren(...panels);
  drawLayerToggles([...labels.values()].sort((a, b) => a.index - b.index));
  applyLayerVisibility();
  ui.panels.getBoundingClientRect();  // force layout so the timing includes it
  requestAnimationFrame(() => requestAnimationFrame(() => {
    state.renders += 1;
    document.body.dataset.renderMs = (performance.now() - t0).toFixed(1);
    document.body.dataset.renders = String(state.renders);
    document.body.dataset.ready = "true";
  }));
}

// ---------------------------------------------------------------- data flow

// Fetch the runs whose data changed (by the layers route's version); true if any did.
async function refreshRuns(runs) {
  let changed = false;
  await Promise.all(runs.filter((r) => state.selected.has(r)).map(async (run) => {
    try {
      const layers = await getJSON(runURL("layers", run));
      const old = state.data.get(run);
      if (old && old.version === layers.version) return;
      const [points, phases, hardware] = await Promise.all([
        getJSON(runURL("points", run)),
        layers.has_phases ? getJSON(runURL("phases", run)) : { events: [] },
        layers.has_hardware ? getJSON(runURL("hardware", run)) : { rows: [], totals: {} },
      ]);
      state.data.set(run, { version: layers.version, points, phases, hardware });
      changed = true;
    } catch (err) {
      if (err.status === 404) { state.data.delete(run); changed = true; } else throw err;
    }
  }));
  return changed;
}

async function poll(first = false) {
  if (!first && document.hidden) return;
  try {
    const runs = await getJSON("./runs");
    const listChanged = JSON.stringify(runs) !== JSON.stringify(state.runs);
    for (const r of [...state.selected]) if (!runs.includes(r)) state.selected.delete(r);
    if (!state.touched && state.selected.size === 0) runs.slice(0, MAX_DEFAULT_RUNS).forEach((r) => state.selected.add(r));
    state.runs = runs;
    if (listChanged) drawRunSelector();
    const changed = await refreshRuns(runs);
    setStatus(`updated ${new Date().toLocaleTimeString()}`);
    if (first || listChanged || changed) drawAll();
  } catch (err) {
    setStatus(`could not load data: ${err.message}`, true);
    if (first) drawAll();
  }
}

// Poll again after POLL_MS, or later when the server is slow (huge runs).
async function pollLoop() {
  const t0 = performance.now();
  await poll(false);
  setTimeout(pollLoop, Math.max(POLL_MS, 3 * (performance.now() - t0)));
}

export async function render() {
  buildShell();
  const t0 = performance.now();
  await poll(true);
  document.body.dataset.loadMs = (performance.now() - t0).toFixed(1);
  // The TensorBoard reload button does not reach iframe plugins: poll ourselves.
  setTimeout(pollLoop, POLL_MS);
}
