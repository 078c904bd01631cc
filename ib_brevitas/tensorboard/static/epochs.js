// I(X;T) and I(T;Y) against epoch: one line per layer (faint seeds, bold
// mean with a band of +-1 s.d.), phase events marked with one shape per kind
// (legend on top, tooltip with the event's numbers).

import { chart, hideTip, showTip, svgEl } from "./dom.js";
import { drawAxes, drawBound } from "./axes.js";
import {
  epochAxisEnd, epochScale, extent, fmt4, layerColor, linear, mergeExtent, seedGrowth, strokeFaint, tracePolyline,
} from "./scales.js";

const EPOCHS = { w: 440, h: 350, l: 52, r: 84, t: 34, b: 38, gap: 30 };
// One shape per phase event kind (ib_brevitas.phases.EVENT_KINDS), as SVG paths around (0, 0).
export const PHASE_SHAPES = {
  fitting_ended: { d: "M0,-5A5,5 0 1 1 0,5A5,5 0 1 1 0,-5Z", text: "fitting ended" },
  compression_started: { d: "M-5,-4H5L0,5Z", text: "compression started" },
  compression_confirmed: { d: "M0,-6L6,0L0,6L-6,0Z", text: "compression confirmed" },
  compression_retracted: { d: "M-4,-5L0,-1L4,-5L5,-4L1,0L5,4L4,5L0,1L-4,5L-5,4L-1,0L-5,-4Z", text: "compression retracted" },
};
const OTHER_SHAPE = { d: "M-4,-4H4V4H-4Z", text: "other event" };

function shapeOf(kind) {
  return PHASE_SHAPES[kind] || OTHER_SHAPE;
}

function detailRows(detail) {
  if (!detail || typeof detail !== "object") return detail ? [[String(detail)]] : [];
  return Object.entries(detail).map(([k, v]) => [`${k.replace(/_/g, " ")} = ${typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(4) : v}`]);
}

let legendCtx = null;

// One entry per kind shown, in rows that fit the chart's width.
function legend(svg, kinds) {
  if (!legendCtx) legendCtx = document.createElement("canvas").getContext("2d");
  legendCtx.font = "11px Roboto, \"Helvetica Neue\", Arial, sans-serif";
  const g = svgEl("g", { class: "ip-phase-legend" });
  let x = EPOCHS.l;
  let y = 9;
  for (const kind of kinds) {
    const { d, text } = shapeOf(kind);
    const w = 16 + Math.ceil(legendCtx.measureText(text).width) + 10;
    if (x + w > EPOCHS.w - 4 && x > EPOCHS.l) { x = EPOCHS.l; y += 14; }
    const item = svgEl("g", { class: "ip-phase-key", "data-kind": kind });
    item.appendChild(svgEl("path", { d, transform: `translate(${x + 5},${y}) scale(0.9)` }));
    item.appendChild(svgEl("text", { x: x + 13, y: y + 4 }, text));
    g.appendChild(item);
    x += w;
  }
  svg.appendChild(g);
}

// The chart's axes for these extents; `key` tells whether two draws share them.
function epochAxes(ext, bounds, log) {
  let { lo, hi } = ext;
  if (!(lo <= hi)) { lo = 0; hi = 1; }
  if (lo === hi) { hi = lo + 1; if (lo !== 0) lo -= 1; }
  const end = epochAxisEnd(lo, hi, log);
  const half = (EPOCHS.h - EPOCHS.t - EPOCHS.b - EPOCHS.gap) / 2;
  const xs = epochScale(lo, end, EPOCHS.l, EPOCHS.w - EPOCHS.r, log);
  const parts = [
    { key: "i_xt", sd: "sd_xt", label: "I(X;T)", top: EPOCHS.t, max: Math.max(ext.maxX, bounds.log2_n ?? 0), bound: bounds.log2_n, name: "log\u2082N" },
    { key: "i_ty", sd: "sd_ty", label: "I(T;Y)", top: EPOCHS.t + half + EPOCHS.gap, max: Math.max(ext.maxY, bounds.h_y ?? 0), bound: bounds.h_y, name: "H(Y)" },
  ];
  for (const part of parts) part.ys = linear(0, (part.max || 1) * 1.1, part.top + half, part.top);
  return { lo, hi, half, xs, parts, key: `${lo} ${end} ${parts[0].ys.hi} ${parts[1].ys.hi} ${bounds.log2_n} ${bounds.h_y}` };
}

// view: {series, seeds, bounds, events, mean, opts: {logEpoch, spread}, hidden(label), charts, updates}
// (view.updates: as in drawPlane, an update in place when the axes stay).
export function drawEpochs(view) {
  const { seeds = [], events = [], opts } = view;
  let { series } = view;
  const { bounds } = view;
  const c = chart(EPOCHS, "ip-epochs");
  const { svg } = c;
  let seedExt = extent(seeds.flatMap((s) => s.series));
  const { lo, hi, half, xs, parts, key } = epochAxes(mergeExtent(seedExt, extent(series)), bounds, opts.logEpoch);
  if (lo < 0) {  // a random-label prefit: its epochs shaded and named
    const x1 = Math.min(xs.map(0), EPOCHS.w - EPOCHS.r);
    for (const part of parts) {
      svg.appendChild(svgEl("rect", { x: EPOCHS.l, y: part.top, width: Math.max(0, x1 - EPOCHS.l), height: half, class: "ip-prefit-band" }));
    }
    svg.appendChild(svgEl("text", { x: EPOCHS.l + 3, y: parts[0].top + 11, class: "ip-prefit-label" }, "random-label prefit"));
  }
  for (const part of parts) {
    const box = { ...EPOCHS, t: part.top, h: part.top + half + EPOCHS.b };
    drawAxes(svg, box, xs, part.ys, part.key === "i_ty" ? (opts.logEpoch ? "epoch (log)" : "epoch") : "", `${part.label} [bits]`);
    if (part.bound !== null) drawBound(svg, box, "hy", part.ys.map(part.bound), part.name);
  }
  for (const s of series) svg.appendChild(svgEl("g", { class: "ip-layer", "data-layer": s.layer, "data-label": s.label }));
  const shown = events.filter((e) => e.epoch >= lo && e.epoch <= hi);
  if (shown.length) legend(svg, [...new Set(shown.map((e) => e.kind))]);
  const markers = svgEl("g", { class: "ip-phases" });
  svg.appendChild(markers);
  const bySeries = new Map(series.map((s) => [s.layer, s]));
  for (const e of shown) {
    const s = bySeries.get(e.layer);
    if (!s) continue;
    const x = xs.map(e.epoch);
    for (const part of parts) {
      const m = svgEl("path", {
        d: shapeOf(e.kind).d, transform: `translate(${x.toFixed(1)},${part.ys.map(e[part.key]).toFixed(1)})`,
        fill: layerColor(s.index), class: "ip-phase", "data-layer": s.layer, "data-label": s.label,
        "data-epoch": e.epoch, "data-kind": String(e.kind),
      });
      m.addEventListener("mousemove", (ev) => showTip(ev, [
        [`${shapeOf(e.kind).text}: ${s.label} \u00b7 ${s.layer}`],
        [`epoch ${e.epoch} (decided at epoch ${e.detected_epoch})`, "epoch"],
        [`I(X;T) = ${fmt4(e.i_xt)} bits`, "i_xt"], [`I(T;Y) = ${fmt4(e.i_ty)} bits`, "i_ty"],
        ...detailRows(e.detail),
      ], { layer: s.layer, epoch: String(e.epoch), kind: String(e.kind) }));
      m.addEventListener("mouseleave", hideTip);
      markers.appendChild(m);
    }
  }
  // Pixels computed once per chart (a seed's new points only, on a refresh); a redraw (toggle, theme) only paints.
  const project = (a, map, old = null) => {
    const out = new Float32Array(a.length);
    const from = old ? old.length : 0;
    if (old) out.set(old);
    for (let i = from; i < a.length; i++) out[i] = map(a[i]);
    return out;
  };
  const projectSeed = (s, old = null) => ({
    s, px: project(s.epoch, xs.map, old && old.px), py: parts.map((part, k) => project(s[part.key], part.ys.map, old && old.py[k])),
  });
  const faint = seeds.map(({ series: ss }) => ss.map((s) => projectSeed(s)));
  const alpha = seeds.length > 10 ? 0.25 : 0.35;
  const strokeSeeds = (lines) => {
    for (const k of parts.keys()) strokeFaint(c.back, lines.map((f) => ({ s: f.s, px: f.px, py: f.py[k] })), view.hidden, alpha);
  };
  let faintDrawn = null;  // the hidden layers the seeds' layer was drawn with
  const hiddenKey = () => series.map((s) => (view.hidden(s.label) ? 1 : 0)).join("");
  const draw = () => {
    const { ctx } = c;
    if (faint.length && faintDrawn !== hiddenKey()) {
      c.clearBack();
      strokeSeeds(faint.flat());
      faintDrawn = hiddenKey();
    }
    c.clear();
    if (faint.length) c.compose();
    for (const part of parts) {
      const Y = (v) => part.ys.map(v);
      for (const s of series) {
        if (view.hidden(s.label) || !s.epoch.length) continue;
        const color = layerColor(s.index);
        const px = Float32Array.from(s.epoch, xs.map);
        const v = s[part.key];
        if (view.mean && opts.spread && s[part.sd]) {
          const sd = s[part.sd];
          ctx.beginPath();
          for (let i = 0; i < px.length; i++) (i ? ctx.lineTo : ctx.moveTo).call(ctx, px[i], Y(v[i] + sd[i]));
          for (let i = px.length - 1; i >= 0; i--) ctx.lineTo(px[i], Y(v[i] - sd[i]));
          ctx.closePath();
          ctx.globalAlpha = 0.16;
          ctx.fillStyle = color;
          ctx.fill();
          ctx.globalAlpha = 1;
        }
        ctx.beginPath();
        if (px.length === 1) {
          ctx.arc(px[0], Y(v[0]), 2.5, 0, 2 * Math.PI);
          ctx.fillStyle = color;
          ctx.fill();
          continue;
        }
        tracePolyline(ctx, px, Float32Array.from(v, Y));
        ctx.strokeStyle = color;
        ctx.lineWidth = view.mean ? 2 : 1.5;
        ctx.stroke();
      }
    }
    for (const m of markers.children) m.style.display = view.hidden(m.dataset.label) ? "none" : "";
  };
  view.charts.push(draw);

  if (view.updates) {
    view.updates.push((next) => {
      const grown = seedGrowth(seeds, next.seeds || []);
      if (!grown || (next.events || []).length || events.length) return null;
      let nextSeedExt = seedExt;
      for (const { k, j, from } of grown) nextSeedExt = mergeExtent(nextSeedExt, extent([next.seeds[k].series[j]], from));
      if (epochAxes(mergeExtent(nextSeedExt, extent(next.series)), next.bounds, opts.logEpoch).key !== key) return null;
      return () => {
        const tails = [];
        for (const { k, j, from } of grown) {
          const f = faint[k][j];
          Object.assign(f, projectSeed(next.seeds[k].series[j], f));
          const at = Math.max(0, from - 1);  // from the last point drawn on
          tails.push({ s: f.s, px: f.px.subarray(at), py: f.py.map((p) => p.subarray(at)) });
        }
        for (const [k, seed] of next.seeds.entries()) seeds[k] = seed;
        if (faintDrawn === hiddenKey()) strokeSeeds(tails);
        series = next.series;
        seedExt = nextSeedExt;
        draw();
      };
    });
  }
  return c.wrap;
}
