// Axes, bounds and the epoch colour bar, drawn into a chart's SVG overlay.

import { svgEl } from "./dom.js";
import { VIRIDIS_LUT, epochShare, fmtTick } from "./scales.js";

export function drawAxes(svg, box, xs, ys, xLabel, yLabel) {
  const g = svgEl("g", { class: "ip-axes" });
  const x0 = box.l;
  const x1 = box.w - box.r;
  const y0 = box.h - box.b;
  const y1 = box.t;
  g.appendChild(svgEl("rect", { x: x0, y: y1, width: x1 - x0, height: y0 - y1, class: "ip-frame" }));
  for (const v of xs.ticks(5)) {
    const x = xs.map(v);
    g.appendChild(svgEl("line", { x1: x, x2: x, y1: y0, y2: y0 + 4, class: "ip-tick" }));
    g.appendChild(svgEl("text", { x, y: y0 + 15, "text-anchor": "middle" }, fmtTick(v)));
  }
  for (const v of ys.ticks(4)) {
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

// A dashed bound with its name: vertical at x (log2 N) or horizontal at y (H(Y)).
export function drawBound(svg, box, kind, at, text) {
  const vertical = kind === "log2n";
  const line = vertical
    ? { x1: at, x2: at, y1: box.t, y2: box.h - box.b }
    : { x1: box.l, x2: box.w - box.r, y1: at, y2: at };
  svg.appendChild(svgEl("line", { ...line, class: "ip-bound", "data-bound": kind }));
  if (text) {
    svg.appendChild(svgEl("text", vertical
      ? { x: at - 3, y: box.h - box.b - 5, "text-anchor": "end", class: "ip-bound-label" }
      : { x: box.l + 4, y: at - 4, class: "ip-bound-label" }, text));
  }
}

// The epoch colour bar right of a plane, in the same (linear or log) scale as the points.
export function drawColorBar(svg, box, scale) {
  const g = svgEl("g", { class: "ip-colorbar" });
  const x = box.w - box.r + 14;
  const top = box.t;
  const bottom = box.h - box.b;
  const share = epochShare(scale);
  const steps = 64;
  for (let k = 0; k < steps; k++) {
    const y = bottom - ((k + 1) / steps) * (bottom - top);
    g.appendChild(svgEl("rect", { x, y, width: 10, height: (bottom - top) / steps + 0.5, fill: VIRIDIS_LUT[Math.round((k / (steps - 1)) * 255)] }));
  }
  const ticks = [...new Set([scale.lo, ...scale.ticks(4), scale.hi])].filter((v) => v >= scale.lo && v <= scale.hi);
  let lastY = Infinity;
  for (const v of ticks.sort((a, b) => a - b)) {
    const y = bottom - share(v) * (bottom - top);
    if (lastY - y < 11 && v !== scale.hi) continue;  // keep tick labels apart
    g.appendChild(svgEl("line", { x1: x + 10, x2: x + 13, y1: y, y2: y, class: "ip-tick" }));
    g.appendChild(svgEl("text", { x: x + 15, y: y + 3 }, fmtTick(v)));
    lastY = y;
  }
  g.appendChild(svgEl("text", {
    x: 0, y: 0, "text-anchor": "middle", class: "ip-axis-label",
    transform: `translate(${x + 52},${(bottom + top) / 2}) rotate(-90)`,
  }, scale.log ? "epoch (log)" : "epoch"));
  svg.appendChild(g);
  return g;
}
