// Where the data come from: the plugin's JSON routes (relative URLs resolve
// to /data/plugin/information_plane/), or, in a file written by
// `ib-brevitas plot --html`, the same bodies embedded in the page.
// Every call answers {body} or {error}; one run's failure never throws.

let embedded = null;

export function useEmbedded(data) {
  embedded = data;
}

export function isEmbedded() {
  return embedded !== null;
}

async function getJSON(url) {
  try {
    const response = await fetch(url, { cache: "no-store" });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) return { error: body && body.error ? body.error : `HTTP ${response.status}`, status: response.status };
    return { body };
  } catch (err) {
    return { error: `could not reach TensorBoard (${err.message})` };
  }
}

function fromFile(table, key) {
  const body = embedded[table] && embedded[table][key];
  return body === undefined ? { error: `not saved in this file (${table} of ${key})`, status: 404 } : { body };
}

const q = encodeURIComponent;

// {run: {version, group}} of every run with data.
export function fetchVersions() {
  return embedded ? Promise.resolve({ body: embedded.versions }) : getJSON("./versions");
}

// fields: null for all, or ["epoch", "i_xt", "i_ty"] (what a faint seed needs).
export function fetchPoints(run, fields = null) {
  if (embedded) return Promise.resolve(fromFile("points", run));
  return getJSON(`./points?run=${q(run)}${fields ? `&fields=${fields.join(",")}` : ""}`);
}

// Several runs' (epoch, i_xt, i_ty) per series, as float32 arrays: {runs: {run: {series, skipped, warnings}}}.
export async function fetchPlane(runs) {
  if (embedded) {
    const out = {};
    for (const run of runs) {
      const p = fromFile("points", run);
      if (p.error) return p;
      out[run] = p.body;
    }
    return { body: { runs: out } };
  }
  try {
    const response = await fetch(`./plane?${runs.map((r) => `run=${q(r)}`).join("&")}`, { cache: "no-store" });
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch (e) { body = null; }
      return { error: body && body.error ? body.error : `HTTP ${response.status}`, status: response.status };
    }
    return { body: parsePlane(await response.arrayBuffer()) };
  } catch (err) {
    return { error: `could not reach TensorBoard (${err.message})` };
  }
}

// The plane route's layout (views.plane_binary): uint32 header length, JSON header, float32 data.
function parsePlane(buffer) {
  const n = new DataView(buffer).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, n)));
  const data = new Float32Array(buffer, 4 + n);
  for (const run of Object.values(header.runs)) {
    for (const s of run.series) {
      s.epoch = data.subarray(s.offset, s.offset + s.n);
      s.i_xt = data.subarray(s.offset + s.n, s.offset + 2 * s.n);
      s.i_ty = data.subarray(s.offset + 2 * s.n, s.offset + 3 * s.n);
    }
  }
  return header;
}

export function fetchMean(runs) {
  if (embedded) return Promise.resolve(fromFile("mean", JSON.stringify(runs)));
  return getJSON(`./mean?${runs.map((r) => `run=${q(r)}`).join("&")}`);
}

export function fetchPhases(run) {
  if (embedded) return Promise.resolve(fromFile("phases", run));
  return getJSON(`./phases?run=${q(run)}`);
}

export function fetchHardware(run) {
  if (embedded) return Promise.resolve(fromFile("hardware", run));
  return getJSON(`./hardware?run=${q(run)}`);
}
