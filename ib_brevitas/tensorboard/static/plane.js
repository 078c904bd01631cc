// The information plane: per layer a trajectory of points coloured by epoch;
// for a group of seeds every seed faint, the mean bold, the spread as light
// ellipses. Per layer the overlay holds <g class="ip-layer" data-layer
// data-label data-count data-epochs> listing the points drawn (faint seeds:
// <g class="ip-seed" data-run data-layer data-count>), the svg its scale
// (data-x0/kx/y0/ky: pixel = x0 + bits * kx) so a test can aim at a point.

import { chart, cssVar, hideTip, showTip, svgEl } from "./dom.js";
import { drawAxes, drawBound, drawColorBar } from "./axes.js";
import { placeLabels } from "./labels.js";
import {
  VIRIDIS_LUT, epochScale, epochShare, extent, fmt4, layerColor, linear, mergeExtent, seedGrowth, strokeFaint, tracePolyline,
} from "./scales.js";

const PLANE = { w: 440, h: 360, l: 52, r: 84, t: 16, b: 42 };
const MARK_R = 3;
const HOVER_PX = 8;
const MAX_ELLIPSES = 300;  // per layer: enough to show the spread, few enough to stay light
const PREFIT = 256;  // colour level of a random-label prefit's points (epochs < 0): open grey marks

// Canvas marker per layer (shape cycles with the layer index, as in `plot`).
function traceMark(ctx, shape, x, y, r) {
  switch (shape % 4) {
    case 0: ctx.rect(x - r, y - r, 2 * r, 2 * r); break;
    case 1: ctx.moveTo(x, y - 1.2 * r); ctx.lineTo(x + 1.1 * r, y + 0.9 * r); ctx.lineTo(x - 1.1 * r, y + 0.9 * r); ctx.closePath(); break;
    case 2: ctx.moveTo(x, y - 1.3 * r); ctx.lineTo(x + 1.3 * r, y); ctx.lineTo(x, y + 1.3 * r); ctx.lineTo(x - 1.3 * r, y); ctx.closePath(); break;
    default: ctx.moveTo(x + r, y); ctx.arc(x, y, r, 0, 2 * Math.PI);
  }
}

// The plane's axes for these extents; `key` tells whether two draws share them.
function planeAxes(ext, bounds) {
  const xs = linear(0, Math.max(ext.maxX, bounds.log2_n ?? 0, 1e-9) * 1.05, PLANE.l, PLANE.w - PLANE.r);
  const ys = linear(0, Math.max(ext.maxY, bounds.h_y ?? 0, 1e-9) * 1.1, PLANE.h - PLANE.b, PLANE.t);
  return { xs, ys, key: `${xs.hi} ${ys.hi} ${bounds.log2_n} ${bounds.h_y}` };
}

// view: {series, seeds: [{run, series}], bounds, mean, title, opts: {logEpoch, spread}, hidden(label), charts, updates}
// view.updates gets a function that takes the next view of the same panel and
// answers null (draw it anew) or a function that applies it in place: the new
// seed points stroked onto the seeds' layer, the mean, labels and marks redrawn.
export function drawPlane(view) {
  const { seeds = [], opts } = view;
  let { series, bounds } = view;
  const c = chart(PLANE, "ip-plane");
  const { svg } = c;
  let seedExt = extent(seeds.flatMap((s) => s.series));
  let ext = mergeExtent(seedExt, extent(series));
  const { xs, ys, key } = planeAxes(ext, bounds);
  Object.assign(svg.dataset, { x0: xs.map(0), kx: xs.map(1) - xs.map(0), y0: ys.map(0), ky: ys.map(1) - ys.map(0) });
  drawAxes(svg, PLANE, xs, ys, "I(X;T) [bits]", "I(T;Y) [bits]");
  if (bounds.log2_n !== null) drawBound(svg, PLANE, "log2n", xs.map(bounds.log2_n), "log\u2082N");
  if (bounds.h_y !== null) drawBound(svg, PLANE, "hy", ys.map(bounds.h_y), "H(Y)");
  let bar = ext.lo <= ext.hi ? drawColorBar(svg, PLANE, epochScale(ext.lo, ext.hi, 0, 1, opts.logEpoch)) : null;
  let share = epochShare(epochScale(ext.lo, ext.hi, 0, 1, opts.logEpoch));

  const project = (s) => {
    const n = s.epoch.length;
    const px = new Float32Array(n);
    const py = new Float32Array(n);
    const bucket = new Uint16Array(n);
    for (let i = 0; i < n; i++) {
      px[i] = xs.map(s.i_xt[i]);
      py[i] = ys.map(s.i_ty[i]);
      bucket[i] = s.epoch[i] < 0 ? PREFIT : Math.round(share(s.epoch[i]) * 255);
    }
    return { series: s, px, py, bucket };
  };
  const projectSeed = (s, old = null) => {  // old: the arrays of the points drawn already
    const n = s.epoch.length;
    const px = new Float32Array(n);
    const py = new Float32Array(n);
    const from = old ? old.px.length : 0;
    if (old) { px.set(old.px); py.set(old.py); }
    for (let i = from; i < n; i++) { px[i] = xs.map(s.i_xt[i]); py[i] = ys.map(s.i_ty[i]); }
    return { s, px, py };
  };
  const faint = seeds.map(({ run, series: ss }) => ss.map((s) => {
    const g = svgEl("g", { class: "ip-seed", "data-run": run, "data-layer": s.layer, "data-label": s.label, "data-count": s.epoch.length });
    svg.appendChild(g);
    return { ...projectSeed(s), g };
  }));
  const layerGroups = series.map((s) => {
    const g = svgEl("g", { class: "ip-layer", "data-layer": s.layer, "data-label": s.label });
    svg.appendChild(g);
    return g;
  });
  let hits = [];
  const setMean = () => {
    hits = series.map(project);
    series.forEach((s, j) => {
      layerGroups[j].setAttribute("data-count", s.epoch.length);
      layerGroups[j].setAttribute("data-epochs", Array.prototype.join.call(s.epoch, " "));
    });
  };
  setMean();
  const labelLayer = svgEl("g", { class: "ip-labels" });
  svg.appendChild(labelLayer);
  const ring = svgEl("circle", { r: MARK_R + 2.5, class: "ip-ring", visibility: "hidden" });
  svg.appendChild(ring);

  const drawLabels = () => {
    labelLayer.replaceChildren();
    const items = hits.filter((h) => !view.hidden(h.series.label) && h.px.length).map((h) => ({
      label: h.series.label, index: h.series.index, layer: h.series.layer, x: h.px[h.px.length - 1], y: h.py[h.py.length - 1],
    }));
    for (const p of placeLabels(items, { x0: PLANE.l + 1, y0: PLANE.t + 1, x1: PLANE.w - PLANE.r - 1, y1: PLANE.h - PLANE.b - 1 })) {
      const cx = Math.max(p.box.x, Math.min(p.anchor.x, p.box.x + p.box.w));
      const cy = Math.max(p.box.y, Math.min(p.anchor.y, p.box.y + p.box.h));
      if (Math.hypot(cx - p.anchor.x, cy - p.anchor.y) > 9) {
        labelLayer.appendChild(svgEl("line", { x1: p.anchor.x, y1: p.anchor.y, x2: cx, y2: cy, class: "ip-leader" }));
      }
      const t = svgEl("text", { x: p.box.x + 1, y: p.box.y + 11, class: "ip-layer-label", "data-labels": p.items.map((it) => it.label).join(" ") }, p.text);
      t.appendChild(svgEl("title", {}, p.items.map((it) => `${it.label}: ${it.layer}`).join("\n")));
      labelLayer.appendChild(t);
    }
  };

  const clipTo = (ctx) => {
    ctx.beginPath();
    ctx.rect(PLANE.l, PLANE.t, PLANE.w - PLANE.l - PLANE.r, PLANE.h - PLANE.t - PLANE.b);
    ctx.clip();
  };
  const alpha = seeds.length > 10 ? 0.25 : 0.35;
  let faintDrawn = null;  // the hidden layers the seeds' layer was drawn with
  const hiddenKey = () => series.map((s) => (view.hidden(s.label) ? 1 : 0)).join("");
  const drawFaint = (lines) => {  // every seed, in its layer's colour, onto the seeds' layer
    c.back.save();
    clipTo(c.back);
    strokeFaint(c.back, lines, view.hidden, alpha);
    c.back.restore();
  };
  const draw = () => {
    const { ctx } = c;
    if (faint.length && faintDrawn !== hiddenKey()) {
      c.clearBack();
      drawFaint(faint.flat());
      faintDrawn = hiddenKey();
    }
    c.clear();
    if (faint.length) c.compose();
    ctx.save();
    clipTo(ctx);
    const shown = hits.filter((h) => !view.hidden(h.series.label));
    if (view.mean && opts.spread) {  // light ellipses of +-1 s.d.
      ctx.globalAlpha = 0.07;
      for (const { series: s, px, py } of shown) {
        ctx.fillStyle = layerColor(s.index);
        const stride = Math.max(1, Math.ceil(px.length / MAX_ELLIPSES));
        ctx.beginPath();
        for (let i = 0; i < px.length; i += stride) {
          const rx = Math.abs(xs.map(s.sd_xt[i]) - xs.map(0));
          const ry = Math.abs(ys.map(s.sd_ty[i]) - ys.map(0));
          if (rx < 0.5 && ry < 0.5) continue;
          ctx.moveTo(px[i] + rx, py[i]);
          ctx.ellipse(px[i], py[i], Math.max(rx, 0.5), Math.max(ry, 0.5), 0, 0, 2 * Math.PI);
        }
        ctx.fill();
      }
      ctx.globalAlpha = 1;
    }
    ctx.lineWidth = view.mean ? 1.4 : 0.8;
    for (const { px, py, series: s } of shown) {
      if (px.length < 2) continue;
      ctx.strokeStyle = view.mean ? layerColor(s.index) : cssVar("--ip-traj");
      ctx.beginPath();
      tracePolyline(ctx, px, py);
      ctx.stroke();
    }
    ctx.lineWidth = 0.3;
    ctx.strokeStyle = cssVar("--ip-mark-edge");
    const outline = shown.reduce((a, h) => a + h.px.length, 0) <= 20000;  // outlines cost paint time
    const prefit = cssVar("--ip-prefit");
    for (const { px, py, bucket, series: s } of shown) {  // one path per colour level: later epochs on top
      const rank = (i) => (bucket[i] === PREFIT ? -1 : bucket[i]);  // the prefit first, under the training
      const order = Array.from(px.keys()).sort((u, v) => rank(u) - rank(v) || u - v);
      for (let k = 0; k < order.length;) {
        const b = bucket[order[k]];
        ctx.beginPath();
        const seen = new Set();  // a mark on the same half pixel in the same colour adds nothing
        for (; k < order.length && bucket[order[k]] === b; k++) {
          const i = order[k];
          const key = Math.round(px[i] * 2) * 4096 + Math.round(py[i] * 2);
          if (!seen.has(key)) { seen.add(key); traceMark(ctx, s.index, px[i], py[i], b === PREFIT ? MARK_R - 0.5 : MARK_R); }
        }
        if (b === PREFIT) {  // the random-label prefit: its own phase, open grey marks
          ctx.save();
          ctx.lineWidth = 1.1;
          ctx.strokeStyle = prefit;
          ctx.stroke();
          ctx.restore();
          continue;
        }
        ctx.fillStyle = VIRIDIS_LUT[b];
        ctx.fill();
        if (outline) ctx.stroke();
      }
    }
    ctx.restore();
    drawLabels();
  };
  view.charts.push(draw);

  if (view.updates) {
    view.updates.push((next) => {
      const grown = seedGrowth(seeds, next.seeds || []);
      if (!grown || next.series.length !== series.length || next.series.some((s, j) => s.layer !== series[j].layer || s.estimator !== series[j].estimator)) return null;
      let nextSeedExt = seedExt;
      for (const { k, j, from } of grown) nextSeedExt = mergeExtent(nextSeedExt, extent([next.seeds[k].series[j]], from));
      const nextExt = mergeExtent(nextSeedExt, extent(next.series));
      if (planeAxes(nextExt, next.bounds).key !== key) return null;  // the axes move: draw anew
      return () => {
        const tails = [];
        for (const { k, j, from } of grown) {
          const s = next.seeds[k].series[j];
          const f = faint[k][j];
          Object.assign(f, projectSeed(s, f));
          f.g.setAttribute("data-count", s.epoch.length);
          const at = Math.max(0, from - 1);  // from the last point drawn on
          tails.push({ s, px: f.px.subarray(at), py: f.py.subarray(at) });
        }
        for (const [k, seed] of next.seeds.entries()) seeds[k] = seed;
        if (faintDrawn === hiddenKey()) drawFaint(tails);  // else draw() strokes every seed anew
        series = next.series;
        bounds = next.bounds;
        seedExt = nextSeedExt;
        if (nextExt.lo !== ext.lo || nextExt.hi !== ext.hi) {
          const scale = epochScale(nextExt.lo, nextExt.hi, 0, 1, opts.logEpoch);
          share = epochShare(scale);
          const fresh = drawColorBar(svg, PLANE, scale);
          if (bar) { svg.insertBefore(fresh, bar); bar.remove(); }
          bar = fresh;
        }
        ext = nextExt;
        setMean();
        draw();
      };
    });
  }

  let pending = false;
  c.wrap.addEventListener("mousemove", (ev) => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; hover(ev, svg, ring, hits, view); });
  });
  c.wrap.addEventListener("mouseleave", () => { ring.setAttribute("visibility", "hidden"); hideTip(); });
  return c.wrap;
}

// Nearest visible point within HOVER_PX of the mouse: tooltip and highlight ring.
function hover(ev, svg, ring, hits, view) {
  const box = svg.getBoundingClientRect();
  const mx = ev.clientX - box.left;
  const my = ev.clientY - box.top;
  let best = null;
  let bestD = HOVER_PX * HOVER_PX;
  for (const h of hits) {
    if (view.hidden(h.series.label)) continue;
    const { px, py } = h;
    for (let i = 0; i < px.length; i++) {
      const d = (px[i] - mx) ** 2 + (py[i] - my) ** 2;
      if (d <= bestD) { bestD = d; best = [h, i]; }  // "<=": the point drawn last (on top) wins ties
    }
  }
  if (!best) {
    ring.setAttribute("visibility", "hidden");
    hideTip();
    return;
  }
  const [h, i] = best;
  ring.setAttribute("cx", h.px[i]);
  ring.setAttribute("cy", h.py[i]);
  ring.setAttribute("visibility", "visible");
  const s = h.series;
  const rows = [[`${s.label} \u00b7 ${s.layer}`]];
  if (view.mean) rows.push([`${view.title} (mean of ${s.n_runs[i]} run${s.n_runs[i] === 1 ? "" : "s"})`]);
  else rows.push([`run ${view.title}`]);
  rows.push([`epoch ${s.epoch[i]}${s.epoch[i] < 0 ? " (random-label prefit)" : ""}`, "epoch"]);
  const sd = (a) => (view.mean ? ` \u00b1 ${fmt4(a[i])}` : "");
  rows.push([`I(X;T) = ${fmt4(s.i_xt[i])}${sd(s.sd_xt)} bits`, "i_xt"]);
  rows.push([`I(T;Y) = ${fmt4(s.i_ty[i])}${sd(s.sd_ty)} bits`, "i_ty"]);
  if (!view.mean && s.h_t) rows.push([`H(T) = ${fmt4(s.h_t[i])} bits, ${s.n_distinct[i]} distinct of ${s.n_samples[i]}`]);
  if (s.estimator !== "exact") rows.push([`estimated (${s.estimator}), not exact`]);
  showTip(ev, rows, { layer: s.layer, epoch: String(s.epoch[i]) });
}
