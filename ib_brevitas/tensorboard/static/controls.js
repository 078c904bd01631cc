// The control bar: configuration picker, run list, view options, layer
// toggles per model, status line. Callbacks go back to app.js.

import { el } from "./dom.js";
import { layerColor } from "./scales.js";

export function buildShell() {
  const root = el("div", { class: "ip-root" });
  const bar = el("div", { class: "ip-bar" });
  const box = (cls, title) => {
    const f = el("fieldset", { class: cls });
    f.appendChild(el("legend", {}, title));
    const list = el("div", { class: "ip-list" });
    f.appendChild(list);
    bar.appendChild(f);
    return list;
  };
  const groupList = box("ip-groups", "Configurations");
  const runList = box("ip-runs", "Runs");
  const viewList = box("ip-view", "View");
  const layerList = box("ip-layer-toggles", "Layers");
  const status = el("div", { class: "ip-status" });
  bar.appendChild(status);
  const panels = el("div", { class: "ip-panels" });
  root.append(bar, panels);
  document.body.appendChild(root);
  return { groupList, runList, viewList, layerList, status, panels };
}

function checkbox(attrs, checked, text, onChange, extra = null) {
  const label = el("label");
  const input = el("input", { type: "checkbox", ...attrs });
  input.checked = checked;
  input.addEventListener("change", () => onChange(input.checked));
  label.append(input);
  if (extra) label.append(extra);
  label.append(el("span", { class: "ip-name" }, text));
  return label;
}

// groups: Map group -> [runs]; selected: Set of runs.
export function drawGroupPicker(list, groups, selected, onChange) {
  list.replaceChildren();
  for (const [group, runs] of groups) {
    const n = runs.filter((r) => selected.has(r)).length;
    const label = checkbox({ "data-group": group }, n > 0, ` ${group} (${runs.length})`, (on) => onChange(group, on));
    label.querySelector("input").indeterminate = n > 0 && n < runs.length;
    list.appendChild(label);
  }
}

export function drawRunList(list, runs, selected, onChange) {
  list.replaceChildren();
  for (const run of runs) {
    const label = checkbox({ "data-run": run }, selected.has(run), "", (on) => onChange(run, on));
    label.querySelector(".ip-name").classList.add("ip-run-name");
    label.querySelector(".ip-name").textContent = ` ${run}`;
    list.appendChild(label);
  }
}

// opts: {mode, logEpoch, spread}; onChange(key, value).
export function drawViewOptions(list, opts, onChange) {
  list.replaceChildren();
  for (const [value, text] of [["groups", "seeds grouped (mean \u00b1 s.d.)"], ["runs", "each run"]]) {
    const label = el("label");
    const input = el("input", { type: "radio", name: "ip-mode", value });
    input.checked = opts.mode === value;
    input.addEventListener("change", () => onChange("mode", value));
    label.append(input, document.createTextNode(` ${text}`));
    list.appendChild(label);
  }
  list.appendChild(checkbox({ "data-option": "log-epoch" }, opts.logEpoch, " log epoch axis and colours", (on) => onChange("logEpoch", on)));
  list.appendChild(checkbox({ "data-option": "spread" }, opts.spread, " spread (\u00b11 s.d.)", (on) => onChange("spread", on)));
}

// models: [{key, caption, layers: [{label, index, layer}]}]; hidden(key, label).
export function drawLayerToggles(list, models, hidden, onChange) {
  list.replaceChildren();
  for (const m of models) {
    const row = el("div", { class: "ip-model", "data-model": m.key });
    if (models.length > 1) row.appendChild(el("span", { class: "ip-model-name", title: m.caption }, m.caption));
    for (const { label, index, layer } of m.layers) {
      const swatch = el("span", { class: "ip-swatch" });
      swatch.style.background = layerColor(index);
      const item = checkbox({ "data-label": label, "data-model": m.key }, !hidden(m.key, label), label, (on) => onChange(m.key, label, on), swatch);
      item.title = layer;
      row.appendChild(item);
    }
    list.appendChild(row);
  }
}

export function setStatus(ui, text, isError = false) {
  ui.status.textContent = text;
  ui.status.classList.toggle("ip-error", isError);
}
