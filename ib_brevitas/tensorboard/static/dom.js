// DOM helpers shared by every view. Run and layer names are user-controlled:
// they only ever reach the page through textContent and setAttribute.

export const SVG_NS = "http://www.w3.org/2000/svg";

export function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

export function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// A CSS custom property of the page (colours follow the light or dark theme).
export function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// A chart: data drawn on a <canvas> (fast for 100,000s of points), with an
// <svg> overlay on top for axes, bounds, labels and markers (text stays text).
export function chart(box, cls) {
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
  // The faint seeds of a sweep live on a layer of their own (not in the page): a
  // refresh strokes only what it adds there, then the chart is composed again.
  const layer = document.createElement("canvas");
  layer.width = canvas.width;
  layer.height = canvas.height;
  const back = layer.getContext("2d");
  back.setTransform(dpr, 0, 0, dpr, 0, 0);
  const compose = () => {
    ctx.save();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(layer, 0, 0);
    ctx.restore();
  };
  return {
    wrap, ctx, svg, back, compose,
    clear: () => ctx.clearRect(0, 0, box.w, box.h),
    clearBack: () => back.clearRect(0, 0, box.w, box.h),
  };
}

// The one tooltip of the page: rows of [text, data-field] pairs.
let tipNode = null;

export function tooltipNode() {
  if (!tipNode) {
    tipNode = el("div", { class: "ip-tooltip" });
    tipNode.hidden = true;
    document.body.appendChild(tipNode);
  }
  return tipNode;
}

export function showTip(ev, rows, data = {}) {
  const tip = tooltipNode();
  tip.replaceChildren();
  for (const [k, v] of Object.entries(data)) tip.dataset[k] = v;
  rows.forEach(([text, field], i) => {
    const row = el("div", field ? { "data-field": field } : {}, text);
    if (i === 0) row.className = "ip-tip-head";
    tip.appendChild(row);
  });
  tip.hidden = false;
  tip.style.left = `${Math.min(ev.clientX + 14, window.innerWidth - 280)}px`;
  tip.style.top = `${Math.min(ev.clientY + 14, window.innerHeight - tip.offsetHeight - 4)}px`;
}

export function hideTip() {
  tooltipNode().hidden = true;
}
