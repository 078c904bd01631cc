// The information-versus-hardware table written by `ib-brevitas export --finn`:
// human headers, and a fixed layout that fits its panel (long names wrap).

import { el } from "./dom.js";

const HEADERS = {
  layer: "Layer (FINN node)", hw_node: "FINN node", bit_width: "Bits", width: "Width", i_xt: "I(X;T)",
  i_ty: "I(T;Y)", lut: "LUT", bram: "BRAM", dsp: "DSP", cycles: "Cycles", ints_match: "Same ints",
  fps: "Frames/s", latency_ns: "Latency [ns]", fpga_part: "FPGA part", clock_ns: "Clock [ns]", bit_exact: "Bit-exact",
};

export function header(key) {
  if (HEADERS[key]) return HEADERS[key];
  const words = String(key).replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function cell(v) {
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (typeof v === "number" && !Number.isInteger(v)) return Math.abs(v) >= 1e5 ? v.toExponential(3) : v.toPrecision(4);
  return v === undefined || v === null ? "\u2013" : String(v);
}

export function drawHardware(hw) {
  if (!hw || !hw.rows || !hw.rows.length) return null;
  const wrap = el("div", { class: "ip-hardware" });
  wrap.appendChild(el("h4", {}, "Information (bits) vs hardware cost"));
  const cols = [];
  for (const r of hw.rows) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
  const node = cols.includes("layer") && cols.includes("hw_node");  // the node goes under the layer name
  if (node) cols.splice(cols.indexOf("hw_node"), 1);
  const table = el("table");
  const head = el("tr");
  for (const c of cols) {
    head.appendChild(el("th", { "data-key": c, class: c === "layer" || c === "hw_node" ? "ip-wide" : "" },
      c === "layer" && !node ? "Layer" : header(c)));
  }
  table.appendChild(head);
  for (const r of hw.rows) {
    const tr = el("tr");
    for (const c of cols) {
      const td = el("td", { class: typeof r[c] === "number" ? "ip-num" : "" }, cell(r[c]));
      if (c === "layer" && node && r.hw_node) td.appendChild(el("span", { class: "ip-node" }, r.hw_node));
      tr.appendChild(td);
    }
    table.appendChild(tr);
  }
  wrap.appendChild(table);
  const totals = Object.entries(hw.totals || {});
  if (totals.length) {
    const p = el("p", { class: "ip-totals" });
    p.textContent = "Totals: " + totals.map(([k, v]) => `${header(k)} ${cell(v)}`).join(" \u00b7 ");
    wrap.appendChild(p);
  }
  return wrap;
}
