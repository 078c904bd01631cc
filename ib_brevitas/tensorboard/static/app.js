// The Information Plane tab: state, data flow and panels (entry: render()).
//
// TensorBoard loads index.js in an iframe and calls render(). Runs of one
// configuration (names differing only in a seed suffix, or the sink's group)
// form one panel by default: every seed faint, the mean +- s.d. bold (computed
// by the backend's `mean` route, the same code as `ib-brevitas plot --mean`).
// Each run's data are fetched and kept separately: a run that fails shows its
// error in its own panel, and the others keep drawing and updating.
// For tests: after each render <body> gets data-ready="true", data-render-ms,
// data-renders and data-updated (group panels drawn in place so far); the first
// load sets data-load-ms, a poll with new data data-poll-ms.

import { el, hideTip } from "./dom.js";
import { fetchHardware, fetchMean, fetchPhases, fetchPlane, fetchPoints, fetchVersions, isEmbedded } from "./api.js";
import { buildShell, drawGroupPicker, drawLayerToggles, drawRunList, drawViewOptions, setStatus } from "./controls.js";
import { drawEpochs } from "./epochs.js";
import { drawHardware } from "./hardware.js";
import { drawPlane } from "./plane.js";
import { LONG_RUN_EPOCHS } from "./scales.js";

const POLL_MS = 3000;
const MAX_DEFAULT_GROUPS = 6;
const MAX_RUN_PANELS = 12;
const SEP = "\u0001";

const state = {
  runs: [],              // run names with data
  info: {},              // run -> {version, group}
  selected: new Set(),   // runs shown
  touched: false,        // the user changed the selection (no more defaults)
  mode: "groups",        // "groups" (seeds of a configuration together) or "runs"
  logEpoch: null,        // null: automatic (log for long runs)
  spread: true,
  hidden: new Set(),     // `${model}${SEP}${label}` switched off
  data: new Map(),       // run -> {version, full, points, phases, hardware, error}
  means: new Map(),      // JSON.stringify(runs) -> {version, body, error}
  renders: 0,
  updated: 0,            // group panels drawn in place (a refresh that only added seed points)
  charts: [],            // redraw callbacks of every chart on screen
  panels: new Map(),     // panel key -> {sig, node, models, charts}: reused while unchanged
};
let ui = null;

// ---------------------------------------------------------------- model

function groupsOf(runs) {
  const groups = new Map();
  for (const run of runs) {
    const g = (state.info[run] && state.info[run].group) || run;
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(run);
  }
  return groups;
}

// The panels to draw: [{kind: "run", run} | {kind: "group", group, runs}].
function panelPlan() {
  const shown = state.runs.filter((r) => state.selected.has(r));
  if (state.mode === "runs") return shown.slice(0, MAX_RUN_PANELS).map((run) => ({ kind: "run", run, group: state.info[run].group }));
  return [...groupsOf(shown)].map(([group, runs]) => (runs.length === 1 ? { kind: "run", run: runs[0], group } : { kind: "group", group, runs }));
}

function modelKey(series) {
  return series.map((s) => `${s.layer}@${s.estimator}`).join("\n");
}

function isHidden(model) {
  return (label) => state.hidden.has(model + SEP + label);
}

function logEpoch(series) {
  if (state.logEpoch !== null) return state.logEpoch;
  return series.some((s) => s.epoch.length && s.epoch[s.epoch.length - 1] >= LONG_RUN_EPOCHS);
}

// ---------------------------------------------------------------- data flow

// Fetch what the panels need and changed since last time; errors stay per run.
async function refresh(plan) {
  const jobs = [];
  const means = [];  // asked at once with the runs: the server decodes each run once for both
  for (const p of plan) {
    const members = p.kind === "run" ? [p.run] : p.runs;
    const full = p.kind === "run";
    const faint = [];  // seeds of a group: their plane data, all in one request
    for (const run of members) {
      const version = state.info[run].version;
      const old = state.data.get(run);
      if (old && old.version === version && (old.full || !full)) continue;
      if (!full) { faint.push(run); continue; }
      jobs.push((async () => {
        const [points, phases, hardware] = await Promise.all([
          fetchPoints(run),
          full ? fetchPhases(run) : { body: { events: [] } },
          full ? fetchHardware(run) : { body: { rows: [] } },
        ]);
        const error = points.error || phases.error || hardware.error || null;
        if (error) {  // keep what was drawn before, say why it is stale, and try again next poll
          state.data.set(run, { ...(old || {}), version: null, full: false, error });
          return;
        }
        state.data.set(run, { version, full, error, points: points.body, phases: phases.body, hardware: hardware.body });
      })());
    }
    if (faint.length) {
      const versions = Object.fromEntries(faint.map((r) => [r, state.info[r].version]));
      jobs.push(fetchPlane(faint).then((answer) => {
        for (const run of faint) {
          const old = state.data.get(run);
          const body = answer.body && answer.body.runs[run];
          if (!body) state.data.set(run, { ...(old || {}), version: null, full: false, error: answer.error || "no data" });
          else state.data.set(run, { version: versions[run], full: false, error: null, points: body, phases: { events: [] }, hardware: { rows: [] } });
        }
      }));
    }
    if (p.kind === "group") {
      const key = JSON.stringify(p.runs);
      const version = p.runs.map((r) => state.info[r].version).join(",");
      const old = state.means.get(key);
      if (!old || old.version !== version) {
        means.push(() => fetchMean(p.runs).then((m) => state.means.set(key, m.error
          ? { ...(old || {}), version: null, error: m.error } : { version, body: m.body, error: null })));
      }
    }
  }
  await Promise.all([...jobs, ...means.map((f) => f())]);
  return jobs.length + means.length > 0;
}

// One poll; a poll that brought new data leaves its duration (fetch + draw) in data-poll-ms.
async function poll(first = false) {
  if (!first && document.hidden) return;
  const t0 = performance.now();
  const answer = await fetchVersions();
  if (answer.error) {
    setStatus(ui, `could not load the run list: ${answer.error}`, true);
    if (first) drawAll();
    return;
  }
  const info = answer.body || {};
  const runs = Object.keys(info).sort();
  const listChanged = JSON.stringify(runs) !== JSON.stringify(state.runs)
    || runs.some((r) => !state.info[r] || state.info[r].group !== info[r].group);
  state.info = info;
  state.runs = runs;
  for (const r of [...state.selected]) if (!info[r]) state.selected.delete(r);
  if (!state.touched && state.selected.size === 0) {
    [...groupsOf(runs).values()].slice(0, MAX_DEFAULT_GROUPS).flat().forEach((r) => state.selected.add(r));
  }
  if (listChanged) drawSelectors();
  const changed = await refresh(panelPlan());
  const failed = runs.filter((r) => state.data.has(r) && state.data.get(r).error);
  setStatus(ui, failed.length ? `${failed.length} run${failed.length === 1 ? "" : "s"} could not be read (see the panel)`
    : isEmbedded() ? "saved by ib-brevitas plot --html" : `updated ${new Date().toLocaleTimeString()}`, failed.length > 0);
  if (first || listChanged || changed) {
    drawAll();
    document.body.dataset.pollMs = (performance.now() - t0).toFixed(1);
  }
}

async function pollLoop() {
  const t0 = performance.now();
  try { await poll(false); } catch (err) { setStatus(ui, `update failed: ${err.message}`, true); }
  setTimeout(pollLoop, Math.max(POLL_MS, 3 * (performance.now() - t0)));
}

// ---------------------------------------------------------------- panels

function seriesOf(body) {
  return body && Array.isArray(body.series) ? body.series : [];
}

function describe(series) {
  const n = series.reduce((a, s) => a + s.epoch.length, 0);
  const epochs = series.flatMap((s) => (s.epoch.length ? [s.epoch[0], s.epoch[s.epoch.length - 1]] : []));
  const span = epochs.length ? `, epochs ${Math.min(...epochs)}\u2013${Math.max(...epochs)}` : "";
  const est = [...new Set(series.map((s) => s.estimator))].filter((e) => e !== "exact");
  const kind = est.length ? `; estimated series marked (${est.join(", ")})` : "; exact";
  return `${series.length} layer${series.length === 1 ? "" : "s"}, ${n} point${n === 1 ? "" : "s"}${span}${kind}`;
}

function warningsOf(bodies, errors) {
  const lines = [...errors.filter(Boolean)];
  const skipped = bodies.reduce((a, b) => a + ((b && b.skipped) || 0), 0);
  if (skipped) lines.push(`${skipped} value${skipped === 1 ? "" : "s"} skipped: not valid measurements (bad data in the event files)`);
  for (const b of bodies) for (const w of (b && b.warnings) || []) lines.push(w);
  if (!lines.length) return null;
  const box = el("div", { class: "ip-warning", role: "status" });
  for (const line of [...new Set(lines)]) box.appendChild(el("div", {}, line));
  return box;
}

function section(attrs, title, subtitle) {
  const s = el("section", { class: "ip-panel", ...attrs });
  s.appendChild(el("h3", { class: "ip-title" }, title));
  s.appendChild(el("div", { class: "ip-sub" }, subtitle));
  return s;
}

function runPanel(run, group, { models, charts }) {
  const d = state.data.get(run) || { error: "loading\u2026" };
  const series = seriesOf(d.points);
  const s = section({ "data-run": run, "data-group": group }, run, describe(series));
  const warn = warningsOf([d.points, d.phases, d.hardware], [d.error]);
  if (warn) s.appendChild(warn);
  if (!series.some((x) => x.epoch.length)) {
    s.appendChild(el("div", { class: "ip-empty" }, d.error ? "Nothing to draw for this run." : "No measurements in this run yet."));
    return s;
  }
  const model = modelKey(series);
  models.set(model, models.get(model) || { key: model, caption: group, series, shown: [] });
  models.get(model).shown.push(...series);
  const view = { series, bounds: d.points.bounds, mean: false, title: run, events: (d.phases && d.phases.events) || [],
    opts: { logEpoch: logEpoch(series), spread: state.spread }, hidden: isHidden(model), charts };
  s.append(drawPlane(view), drawEpochs(view));
  const hw = drawHardware(d.hardware);
  if (hw) s.appendChild(hw);
  return s;
}

// What a group panel shows, from the state: its view (null: nothing to draw), texts and
// warnings; `shape` is what must not change for the panel to be updated in place.
function groupView(group, runs, charts) {
  const m = state.means.get(JSON.stringify(runs)) || { error: "loading\u2026" };
  const series = seriesOf(m.body);
  const names = runs.length > 4 ? `${runs.slice(0, 3).join(", ")} \u2026 ${runs[runs.length - 1]}` : runs.join(", ");
  const subtitle = `mean \u00b1 s.d. over ${runs.length} runs (${names}); ${describe(series)}`;
  const seeds = runs.map((run) => ({ run, d: state.data.get(run) })).filter((x) => x.d && x.d.points)
    .map(({ run, d }) => ({ run, series: seriesOf(d.points) }));
  const bodies = [m.body, ...runs.map((r) => (state.data.get(r) || {}).points)];
  const errors = [m.error, ...runs.map((r) => (state.data.get(r) || {}).error && `${r}: ${state.data.get(r).error}`)];
  const drawable = series.some((x) => x.epoch.length);
  const model = modelKey(series);
  const view = drawable ? { series, seeds, bounds: m.body.bounds, mean: true, title: group, events: [],
    opts: { logEpoch: logEpoch(series), spread: state.spread }, hidden: isHidden(model), charts, updates: [] } : null;
  const shape = JSON.stringify([drawable, model, view && view.opts, seeds.map((x) => x.run), errors,
    bodies.map((b) => [(b && b.skipped) || 0, (b && b.warnings) || []])]);
  return { series, subtitle, bodies, errors, model, view, shape };
}

function groupPanel(group, runs, { models, charts }, g = groupView(group, runs, charts)) {
  const s = section({ "data-group": group }, group, g.subtitle);
  const warn = warningsOf(g.bodies, g.errors);
  if (warn) s.appendChild(warn);
  if (!g.view) {
    s.appendChild(el("div", { class: "ip-empty" }, "Nothing to draw for this configuration yet."));
    return s;
  }
  models.set(g.model, models.get(g.model) || { key: g.model, caption: group, series: g.series, shown: [] });
  models.get(g.model).shown.push(...g.series);
  s.append(drawPlane(g.view), drawEpochs(g.view));
  s.ibUpdates = g.view.updates;
  return s;
}

// A group panel whose seeds only gained points: drawn in place (the new seed
// points and the moved mean), or null when it must be drawn anew.
function updateGroupPanel(p, hit) {
  if (!hit.shape || !hit.node.ibUpdates) return null;
  const charts = [];
  const g = groupView(p.group, p.runs, charts);
  if (g.shape !== hit.shape) return null;
  const apply = hit.node.ibUpdates.map((u) => u(g.view));
  if (!apply.every(Boolean)) return null;
  apply.forEach((f) => f());
  hit.node.querySelector(".ip-sub").textContent = g.subtitle;
  const models = new Map([[g.model, { key: g.model, caption: p.group, series: g.series, shown: [...g.series] }]]);
  return { models, charts: hit.charts, shape: hit.shape };
}

function drawSelectors() {
  const groups = groupsOf(state.runs);
  const select = (runs, on) => {
    state.touched = true;
    for (const r of runs) if (on) state.selected.add(r); else state.selected.delete(r);
    drawSelectors();
    update();
  };
  drawGroupPicker(ui.groupList, groups, state.selected, (g, on) => select(groups.get(g), on));
  drawRunList(ui.runList, state.runs, state.selected, (r, on) => select([r], on));
}

// The view options; "log epoch axis" shows what the panels use (automatic: on for long runs).
function drawView(shownSeries) {
  drawViewOptions(ui.viewList, { mode: state.mode, logEpoch: logEpoch(shownSeries), spread: state.spread }, (k, v) => {
    state[k] = v;
    update();
  });
}

async function update() {
  await refresh(panelPlan());
  drawAll();
}

function redrawCharts() {
  for (const draw of state.charts) draw();
}

// What a panel was drawn from: the same signature, the same panel (a poll that
// changed one run redraws only the panels that show it).
function signature(p) {
  const members = p.kind === "run" ? [p.run] : p.runs;
  const d = members.map((r) => { const x = state.data.get(r); return x ? [x.version, x.error] : null; });
  const m = p.kind === "group" ? state.means.get(JSON.stringify(p.runs)) : null;
  return JSON.stringify([p.kind, members, d, m ? [m.version, m.error] : null, state.spread, state.logEpoch,
    document.documentElement.classList.contains("ip-dark")]);
}

function buildPanel(p) {
  const key = `${p.kind}\u0000${p.kind === "run" ? p.run : p.group}`;
  const sig = signature(p);
  const hit = state.panels.get(key);
  if (hit && hit.sig === sig) return { ...hit, fresh: false };
  const updated = hit && p.kind === "group" ? updateGroupPanel(p, hit) : null;
  if (updated) {
    const entry = { ...hit, ...updated, sig };
    state.panels.set(key, entry);
    state.updated += 1;
    return { ...entry, fresh: false };
  }
  const ctx = { models: new Map(), charts: [] };
  let shape = null;
  let node;
  if (p.kind === "run") node = runPanel(p.run, p.group, ctx);
  else {
    const g = groupView(p.group, p.runs, ctx.charts);
    shape = g.shape;
    node = groupPanel(p.group, p.runs, ctx, g);
  }
  const entry = { sig, node, models: ctx.models, charts: ctx.charts, shape };
  state.panels.set(key, entry);
  return { ...entry, fresh: true };
}

function drawAll() {
  const t0 = performance.now();
  hideTip();
  state.charts = [];
  const panels = [];
  const fresh = [];
  const models = new Map();
  if (!state.runs.length) {
    const msg = el("div", { class: "ip-empty" });
    msg.append(
      el("p", {}, "No information-plane data in this log directory yet."),
      el("p", {}, "Write it during training with ib_brevitas.tensorboard.TensorBoardSink (or `ib-brevitas train --run-dir runs/NAME`), then point TensorBoard at the parent directory: tensorboard --logdir runs/"),
    );
    panels.push(msg);
  } else {
    const plan = panelPlan();
    const keep = new Set();
    for (const p of plan) {
      const built = buildPanel(p);
      keep.add(`${p.kind}\u0000${p.kind === "run" ? p.run : p.group}`);
      panels.push(built.node);
      state.charts.push(...built.charts);
      if (built.fresh) fresh.push(...built.charts);
      for (const [k, m] of built.models) {
        if (!models.has(k)) models.set(k, { ...m, shown: [] });
        models.get(k).shown.push(...m.shown);
      }
    }
    for (const k of [...state.panels.keys()]) if (!keep.has(k)) state.panels.delete(k);
    if (!panels.length) panels.push(el("div", { class: "ip-empty" }, "Select a configuration or run above."));
  }
  ui.panels.replaceChildren(...panels);
  drawView([...models.values()].flatMap((m) => m.shown));
  drawLayerToggles(ui.layerList, [...models.values()].map((m) => ({
    key: m.key, caption: m.caption, layers: m.series.map((s) => ({ label: s.label, index: s.index, layer: s.layer })),
  })), (model, label) => state.hidden.has(model + SEP + label), (model, label, on) => {
    if (on) state.hidden.delete(model + SEP + label); else state.hidden.add(model + SEP + label);
    redrawCharts();
  });
  for (const draw of fresh) draw();  // panels kept from the last render are drawn already
  ui.panels.getBoundingClientRect();  // force layout so the timing includes it
  requestAnimationFrame(() => requestAnimationFrame(() => {
    state.renders += 1;
    document.body.dataset.renderMs = (performance.now() - t0).toFixed(1);
    document.body.dataset.renders = String(state.renders);
    document.body.dataset.updated = String(state.updated);
    document.body.dataset.ready = "true";
  }));
}

// ---------------------------------------------------------------- theme

// TensorBoard marks its own <body> with "dark-mode"; the tab's iframe follows
// it (the embedded HTML file follows the system's colour scheme).
function followTheme() {
  const apply = (dark) => {
    if (document.documentElement.classList.contains("ip-dark") === dark) return;
    document.documentElement.classList.toggle("ip-dark", dark);
    redrawCharts();
  };
  let host = null;
  try { host = window.parent !== window ? window.parent.document.body : null; } catch (e) { host = null; }
  if (host) {
    apply(host.classList.contains("dark-mode"));
    new MutationObserver(() => apply(host.classList.contains("dark-mode"))).observe(host, { attributes: true, attributeFilter: ["class"] });
  } else {
    const media = window.matchMedia("(prefers-color-scheme: dark)");
    apply(media.matches);
    media.addEventListener("change", (e) => apply(e.matches));
  }
}

function addStylesheet() {
  if (isEmbedded()) return Promise.resolve();  // the HTML file carries the stylesheet inline
  const link = el("link", { rel: "stylesheet", href: "./static/style.css" });
  const loaded = new Promise((resolve) => { link.onload = resolve; link.onerror = resolve; });
  document.head.appendChild(link);
  return loaded;
}

export async function render() {
  await addStylesheet();
  ui = buildShell();
  followTheme();
  const t0 = performance.now();
  await poll(true);
  document.body.dataset.loadMs = (performance.now() - t0).toFixed(1);
  // The TensorBoard reload button does not reach iframe plugins: poll ourselves.
  if (!isEmbedded()) setTimeout(pollLoop, POLL_MS);
}
