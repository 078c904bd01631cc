// Layer labels without overlap: layers that end on the same spot share one
// label ("T1-T4"), and each label takes the first nearby place where its box
// meets no other label's box.

const COINCIDENT_PX = 6;
const LABEL_FONT = "bold 12px Roboto, \"Helvetica Neue\", Arial, sans-serif";
const LABEL_H = 14;
const RADII = [7, 14, 24, 36, 50, 66];
const ANGLES = [-45, 45, -135, 135, 0, 180, -90, 90].map((d) => (d * Math.PI) / 180);
let measureCtx = null;

// "T1-T4" for a run of consecutive layers, "T1, T3" otherwise (indices are 0-based).
export function joinLabels(items) {
  if (items.length === 1) return items[0].label;
  if (!items.every((it) => it.label === `T${it.index + 1}`)) return items.map((it) => it.label).join(", ");
  const idx = [...new Set(items.map((it) => it.index))].sort((a, b) => a - b);
  const parts = [];
  for (let i = 0; i < idx.length;) {
    let j = i;
    while (j + 1 < idx.length && idx[j + 1] === idx[j] + 1) j++;
    parts.push(j > i ? `T${idx[i] + 1}\u2013T${idx[j] + 1}` : `T${idx[i] + 1}`);
    i = j + 1;
  }
  return parts.join(", ");
}

function textWidth(text) {
  if (!measureCtx) measureCtx = document.createElement("canvas").getContext("2d");
  measureCtx.font = LABEL_FONT;
  return Math.ceil(measureCtx.measureText(text).width) + 2;
}

function overlaps(a, b) {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

// items: [{label, index, layer, x, y}] (anchor = the layer's last point, in px);
// area: {x0, y0, x1, y1} the labels must stay in. Returns
// [{text, items, anchor: {x, y}, box: {x, y, w, h}}], boxes pairwise disjoint
// whenever the area leaves room.
export function placeLabels(items, area) {
  const clusters = [];
  for (const it of items) {
    const c = clusters.find((cl) => cl.items.some((o) => Math.hypot(o.x - it.x, o.y - it.y) <= COINCIDENT_PX));
    if (c) c.items.push(it); else clusters.push({ items: [it] });
  }
  const placed = [];
  for (const c of clusters) {
    c.items.sort((a, b) => a.index - b.index);
    const text = joinLabels(c.items);
    const w = textWidth(text);
    const ax = c.items.reduce((s, it) => s + it.x, 0) / c.items.length;
    const ay = c.items.reduce((s, it) => s + it.y, 0) / c.items.length;
    let best = null;
    for (const r of RADII) {
      for (const a of ANGLES) {
        const cx = ax + r * Math.cos(a);
        const cy = ay + r * Math.sin(a);
        const box = { x: Math.cos(a) < -0.3 ? cx - w : Math.cos(a) > 0.3 ? cx : cx - w / 2,
          y: Math.sin(a) < -0.3 ? cy - LABEL_H : Math.sin(a) > 0.3 ? cy : cy - LABEL_H / 2, w, h: LABEL_H };
        const inside = box.x >= area.x0 && box.y >= area.y0 && box.x + w <= area.x1 && box.y + LABEL_H <= area.y1;
        if (inside && !placed.some((p) => overlaps(p.box, box))) { best = box; break; }
        if (!best && inside) best = { ...box, fallback: true };
      }
      if (best && !best.fallback) break;
    }
    if (!best) best = { x: Math.min(Math.max(ax + 6, area.x0), area.x1 - w), y: Math.max(ay - LABEL_H - 6, area.y0), w, h: LABEL_H };
    placed.push({ text, items: c.items, anchor: { x: ax, y: ay }, box: best });
  }
  return placed;
}
