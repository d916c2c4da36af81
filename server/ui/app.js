// idem's web console: polls the API every 2 s and renders the mappings,
// functions and on-failure destinations. Plain JavaScript, no build step,
// nothing loaded from elsewhere. Everything shown from the server goes
// through textContent, never parsed as HTML: records hold anyone's data.
"use strict";

const POLL_MS = 2000;
const HISTORY_MS = 60 * 60 * 1000; // the lag chart's hour
const SAMPLE_MS = 10 * 1000; // one kept sample per 10 s
const TOKEN_KEY = "idem.token";
const HISTORY_KEY = "idem.lagHistory";

const state = {
  info: null, // GET /v1/console
  infoAt: 0,
  status: null, // GET /v1/status
  expanded: new Set(), // mappings whose shards are shown
  rows: new Map(), // mapping name -> its row's elements
  history: loadHistory(), // mapping name -> [[time ms, lag], ...]
  dlq: { stream: "", shard: "", stack: [], after: "", carry: null, next: "", nextCarry: null },
  streams: null,
};

// --- helpers ---------------------------------------------------------------

function $(sel) { return document.querySelector(sel); }

// h builds an element: h("td", {class: "num"}, "text", child, ...).
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function fmtNum(n) { return Number(n || 0).toLocaleString("en-US"); }

// fmtAge writes milliseconds as 850ms, 12.3s, 4m 05s, 2h 03m or 3d 04h.
function fmtAge(ms) {
  ms = Number(ms || 0);
  if (ms <= 0) return "0";
  if (ms < 1000) return ms + "ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(1) + "s";
  const pad = (x) => String(Math.floor(x)).padStart(2, "0");
  if (s < 3600) return Math.floor(s / 60) + "m " + pad(s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + pad((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + pad((s % 86400) / 3600) + "h";
}

function fmtSeq(seq) { return String(seq || "").replace(/^0+(?=\d)/, ""); }

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

// api calls the API with the token, and returns the JSON answer or throws
// an Error with the server's message and the status in .status.
async function api(method, path, body) {
  const headers = {};
  const t = token();
  if (t) headers["Authorization"] = "Bearer " + t;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15000),
  });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!resp.ok) {
    const msg = (data && (data.error || data.message || data.Message)) || text || resp.statusText;
    const err = new Error(resp.status + " " + msg.trim());
    err.status = resp.status;
    throw err;
  }
  return data;
}

function showError(msg) {
  const el = $("#error");
  el.textContent = msg || "";
  el.hidden = !msg;
}

function showResult(el, text, bad) {
  el.textContent = text;
  el.classList.toggle("bad", !!bad);
  el.hidden = false;
}

// --- lag history -----------------------------------------------------------

function loadHistory() {
  try {
    const raw = JSON.parse(sessionStorage.getItem(HISTORY_KEY) || "{}");
    return new Map(Object.entries(raw));
  } catch (e) {
    return new Map();
  }
}

function saveHistory() {
  try {
    sessionStorage.setItem(HISTORY_KEY, JSON.stringify(Object.fromEntries(state.history)));
  } catch (e) { /* full: the chart starts over after a reload */ }
}

// record keeps one sample per SAMPLE_MS over the last hour: the highest
// lag polled in those 10 s, so that a short peak still shows.
function record(name, now, lag) {
  let ring = state.history.get(name);
  if (!ring) state.history.set(name, (ring = []));
  const last = ring[ring.length - 1];
  const bucket = Math.floor(now / SAMPLE_MS) * SAMPLE_MS;
  if (last && last[0] === bucket) last[1] = Math.max(last[1], lag);
  else ring.push([bucket, lag]);
  while (ring.length && ring[0][0] < now - HISTORY_MS) ring.shift();
}

const SVG = "http://www.w3.org/2000/svg";

// sparkline draws a mapping's lag over the last hour, or over the time
// since the page began watching when that is shorter (at least a minute).
function sparkline(ring, now) {
  const w = 120, ht = 22;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", ht);
  svg.setAttribute("viewBox", `0 0 ${w} ${ht}`);
  const span = ring.length ? Math.min(HISTORY_MS, Math.max(60 * 1000, now - ring[0][0])) : HISTORY_MS;
  const peak = Math.max(0, ...ring.map((p) => p[1]));
  const max = Math.max(1, peak);
  const x = (t) => Math.max(0, w * (t - (now - span)) / span).toFixed(1);
  const y = (v) => (ht - 1 - (ht - 3) * v / max).toFixed(1);
  const pts = ring.map((p) => x(p[0]) + "," + y(p[1]));
  if (pts.length) {
    const area = document.createElementNS(SVG, "polygon");
    area.setAttribute("class", "area");
    area.setAttribute("points", `${x(ring[0][0])},${ht} ${pts.join(" ")} ${x(ring[ring.length - 1][0])},${ht}`);
    svg.append(area);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.length > 1 ? pts.join(" ") : `${Math.max(0, x(ring[0][0]) - 2)},${y(ring[0][1])} ${pts[0]}`);
    svg.append(line);
  }
  const title = document.createElementNS(SVG, "title");
  title.textContent = `lag over the last ${Math.round(span / 60000)} min: peak ${fmtNum(peak)} records`;
  svg.append(title);
  return svg;
}

// --- polling ---------------------------------------------------------------

async function poll() {
  try {
    const now = Date.now();
    if (!state.info || now - state.infoAt > 30000) {
      state.info = await api("GET", "/v1/console");
      state.infoAt = now;
      renderDestinations();
    }
    state.status = await api("GET", "/v1/status");
    $("#replay-controls").hidden = !state.info.replay;
    renderMappings(now);
    renderFunctions();
    saveHistory();
    showError("");
    $("#status").textContent = "updated " + new Date(now).toLocaleTimeString();
  } catch (e) {
    $("#status").textContent = "not updated";
    if (e.status === 401 || e.status === 403) {
      showError("This idem needs a token: enter one of auth.tokens (or auth.readTokens to look only) above.\n" + e.message);
      $("#token").focus();
    } else {
      showError("Cannot read the status: " + e.message);
    }
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

// --- mappings --------------------------------------------------------------

const COUNTERS = ["processed", "skipped", "discarded", "lost", "filtered"];

function renderMappings(now) {
  const st = state.status;
  const info = state.info || { mappings: [] };
  const byName = new Map(info.mappings.map((m) => [m.name, m]));
  const shards = new Map();
  for (const s of st.shards) {
    if (!shards.has(s.mapping)) shards.set(s.mapping, []);
    shards.get(s.mapping).push(s);
  }
  const filter = $("#mappings-filter").value.trim().toLowerCase();
  const tbody = $("#mappings-table tbody");
  const seen = new Set();
  let counts = { enabled: 0, paused: 0, disabled: 0 }, totalLag = 0, totalShards = 0;
  for (const ms of st.mappings) {
    seen.add(ms.name);
    const cfg = byName.get(ms.name) || { source: "", stream: ms.stream, function: ms.function, uuid: ms.uuid };
    const list = shards.get(ms.name) || [];
    const sum = { lag: 0, age: 0, inFlight: 0, states: new Map() };
    for (const c of COUNTERS) sum[c] = 0;
    for (const s of list) {
      sum.lag += s.lagRecords;
      sum.age = Math.max(sum.age, s.iteratorAgeMs);
      sum.inFlight += s.inFlight;
      for (const c of COUNTERS) sum[c] += s[c];
      sum.states.set(s.state, (sum.states.get(s.state) || 0) + 1);
    }
    counts[ms.state] = (counts[ms.state] || 0) + 1;
    totalLag += sum.lag;
    totalShards += list.length;
    if (ms.state !== "disabled") record(ms.name, now, sum.lag);

    let row = state.rows.get(ms.name);
    if (!row) {
      row = mappingRow(ms.name);
      state.rows.set(ms.name, row);
      tbody.append(row.tr, row.shardsTr);
    }
    const visible = !filter || [ms.name, ms.function, ms.stream, ms.state].some((v) => String(v).toLowerCase().includes(filter));
    row.tr.hidden = !visible;
    row.state.textContent = ms.state;
    row.state.className = "badge state-" + ms.state;
    row.flow.textContent = `${cfg.source ? cfg.source + ":" : ""}${ms.stream} → ${ms.function}`;
    const summary = [...sum.states].map(([k, n]) => `${n} ${k}`).join(", ");
    row.shards.textContent = list.length ? `${list.length} (${summary})` : "none";
    row.shards.classList.toggle("problem", sum.states.has("error"));
    row.lag.textContent = fmtNum(sum.lag);
    row.age.textContent = fmtAge(sum.age);
    row.spark.replaceChildren(sparkline(state.history.get(ms.name) || [], now));
    row.inFlight.textContent = fmtNum(sum.inFlight);
    for (const c of COUNTERS) row[c].textContent = fmtNum(sum[c]);
    row.result.textContent = ms.lastProcessingResult;
    row.result.classList.toggle("problem", ms.lastProcessingResult.startsWith("PROBLEM"));
    row.pause.hidden = ms.state !== "enabled";
    row.resume.hidden = ms.state !== "paused";
    row.pause.dataset.uuid = row.resume.dataset.uuid = ms.uuid;
    row.replay.hidden = !(state.info && state.info.replay) || ms.state === "disabled";
    row.toggle.disabled = list.length === 0;
    const open = state.expanded.has(ms.name) && list.length > 0;
    row.toggle.textContent = open ? "▾" : "▸";
    row.toggle.setAttribute("aria-expanded", open);
    row.shardsTr.hidden = !open || !visible;
    if (open) renderShards(row, list);
    else if (row.shardsBody.firstChild) row.shardsBody.replaceChildren();
  }
  for (const [name, row] of state.rows) {
    if (!seen.has(name)) {
      row.tr.remove();
      row.shardsTr.remove();
      state.rows.delete(name);
    }
  }
  $("#mappings-summary").textContent =
    `${st.mappings.length} mappings (${counts.enabled} enabled, ${counts.paused} paused, ${counts.disabled} disabled), ` +
    `${fmtNum(totalShards)} shards, lag ${fmtNum(totalLag)} records`;
}

// mappingRow makes a mapping's row, and the row under it that holds its
// shards when expanded; renderMappings fills them in at each poll.
function mappingRow(name) {
  const td = (cls) => h("td", { class: cls });
  const r = {};
  r.toggle = h("button", { class: "toggle", type: "button", title: "Show the shards", onclick: () => {
    if (state.expanded.has(name)) state.expanded.delete(name); else state.expanded.add(name);
    if (state.status) renderMappings(Date.now());
  } });
  r.state = h("span", { class: "badge" });
  r.flow = td(), r.shards = td(), r.lag = td("num lag"), r.age = td("num age"), r.spark = td("spark-cell");
  r.inFlight = td("num in-flight");
  for (const c of COUNTERS) r[c] = td("num " + c);
  r.result = td("wrap result-text");
  r.pause = h("button", { class: "pause", type: "button", onclick: (e) => setPaused(name, e.target.dataset.uuid, true) }, "Pause");
  r.resume = h("button", { class: "resume", type: "button", onclick: (e) => setPaused(name, e.target.dataset.uuid, false) }, "Resume");
  r.replay = h("button", { class: "replay", type: "button", title: "What a replay would send, without sending it", onclick: () => replayDryRun(name) }, "Replay dry run");
  r.tr = h("tr", { class: "mapping", "data-mapping": name },
    h("td", {}, r.toggle), h("td", { class: "name" }, h("b", {}, name)), h("td", { class: "state" }, r.state),
    r.flow, r.shards, r.lag, r.age, r.spark, r.inFlight, ...COUNTERS.map((c) => r[c]), r.result,
    h("td", { class: "actions" }, r.pause, " ", r.resume, " ", r.replay));
  r.shardsBody = h("tbody");
  r.shardsTr = h("tr", { class: "shards-row", "data-mapping": name, hidden: true },
    h("td", { colspan: 16 }, h("div", { class: "shards-wrap" },
      h("table", { class: "grid shards" },
        h("thead", {}, h("tr", {}, ...["Shard", "State", "Checkpoint", "Latest", "Lag", "Age", "In flight",
          "Invocations", "Retries", ...COUNTERS.map((c) => c[0].toUpperCase() + c.slice(1)), "Last error"]
          .map((t, i) => h("th", { class: i >= 2 && i < 14 ? "num" : "" }, t)))),
        r.shardsBody))));
  return r;
}

function renderShards(row, list) {
  row.shardsBody.replaceChildren(...list.map((s) => h("tr", { class: "shard", "data-shard": s.shard },
    h("td", {}, s.shard),
    h("td", {}, h("span", { class: "badge state-" + s.state.replace(/\s+/g, "-") }, s.state)),
    h("td", { class: "num checkpoint" }, fmtSeq(s.checkpoint)),
    h("td", { class: "num" }, fmtSeq(s.latest)),
    h("td", { class: "num lag" }, fmtNum(s.lagRecords)),
    h("td", { class: "num" }, fmtAge(s.iteratorAgeMs)),
    h("td", { class: "num" }, fmtNum(s.inFlight)),
    h("td", { class: "num" }, fmtNum(s.invocations)),
    h("td", { class: "num" }, fmtNum(s.retries)),
    ...COUNTERS.map((c) => h("td", { class: "num " + c }, fmtNum(s[c]))),
    h("td", { class: "wrap problem" }, s.lastError || ""))));
}

async function setPaused(name, uuid, paused) {
  try {
    await api("PUT", "/2015-03-31/event-source-mappings/" + encodeURIComponent(uuid), { Enabled: !paused });
    showError("");
  } catch (e) {
    showError(`${paused ? "Pausing" : "Resuming"} ${name}: ${e.message}`);
  }
  refreshSoon();
}

// replayDryRun asks what a replay of the mapping from the chosen
// position would run and skip, without moving anything.
async function replayDryRun(name) {
  const out = $("#replay-result");
  const path = state.info.replay.split(" ").pop().replace("{name}", encodeURIComponent(name));
  const q = new URLSearchParams({ from: $("#replay-from").value, dryRun: "true" });
  if (q.get("from") === "AT_TIMESTAMP") {
    const at = $("#replay-at").value;
    if (!at) {
      showResult(out, "Replay dry run: choose the time to replay from.", true);
      return;
    }
    q.set("timestamp", new Date(at).toISOString());
  }
  showResult(out, `Replay dry run of ${name}…`);
  try {
    const ans = state.info.replay.startsWith("GET ")
      ? await api("GET", path + "?" + q)
      : await api("POST", path, { from: q.get("from"), timestamp: q.get("timestamp") || undefined, dryRun: true });
    const head = ans && ans.wouldRun !== undefined
      ? `Replay dry run of ${name} from ${ans.from}: ${fmtNum(ans.records)} records read, ${fmtNum(ans.wouldRun)} would run, ` +
        `${fmtNum(ans.wouldSkip)} would be skipped (done already), ${fmtNum(ans.duplicates)} duplicates, ` +
        `${fmtNum(ans.filtered)} filtered, ${fmtNum(ans.keyErrors)} key errors.\n`
      : `Replay dry run of ${name}:\n`;
    showResult(out, head + JSON.stringify(ans, null, 2));
  } catch (e) {
    showResult(out, `Replay dry run of ${name}: ${e.message}`, true);
  }
}

let soon = null;
// refreshSoon redraws shortly after an action rather than at the next poll.
function refreshSoon() {
  clearTimeout(soon);
  soon = setTimeout(async () => {
    try {
      state.status = await api("GET", "/v1/status");
      renderMappings(Date.now());
      renderFunctions();
    } catch (e) { /* the poll reports it */ }
  }, 200);
}

// --- functions -------------------------------------------------------------

function renderFunctions() {
  const st = state.status;
  const names = new Map();
  for (const f of (state.info && state.info.functions) || []) names.set(f.name, { name: f.name, kind: f.kind });
  for (const f of st.functions) names.set(f.name, Object.assign(names.get(f.name) || {}, { proc: f, kind: f.kind === "process" ? "process" : f.kind }));
  for (const q of st.queues) {
    const e = names.get(q.function) || { name: q.function, kind: "" };
    e.name = q.function;
    e.queue = q;
    names.set(q.function, e);
  }
  // A function's recent errors: its processes' last exit and its mappings'
  // shards' errors.
  const errors = new Map();
  for (const s of st.shards) {
    if (!s.lastError) continue;
    if (!errors.has(s.function)) errors.set(s.function, new Set());
    errors.get(s.function).add(`${s.mapping}/${s.shard}: ${s.lastError}`);
  }
  const rows = [...names.values()].sort((a, b) => a.name.localeCompare(b.name)).map((f) => {
    const p = f.proc, q = f.queue;
    const errs = [...(errors.get(f.name) || [])];
    if (p && p.lastExit) errs.unshift(`last exit: ${p.lastExit}${p.lastExitAt ? " at " + new Date(p.lastExitAt).toLocaleTimeString() : ""}`);
    const shown = errs.slice(0, 3).join("\n") + (errs.length > 3 ? `\n… and ${errs.length - 3} more` : "");
    return h("tr", { class: "fn", "data-function": f.name },
      h("td", {}, h("b", {}, f.name)),
      h("td", {}, f.kind || ""),
      h("td", {}, p ? `${p.running} of ${p.concurrency} running` : f.kind === "go" ? "in-process" : f.kind === "http" ? "remote" : ""),
      h("td", { class: "num" }, p ? fmtNum(p.restarts) : ""),
      h("td", {}, p ? h("span", { class: "badge " + (p.crashLoop ? "bad" : "ok") }, p.crashLoop ? "crash loop" : "no") : ""),
      h("td", { class: "wrap problem" }, shown),
      h("td", { class: "num queued" }, q ? fmtNum(q.queued) : ""),
      h("td", { class: "num" }, q ? fmtNum(q.dispatched) : ""),
      h("td", { class: "num" }, q ? fmtAge(q.oldestAgeMs) : ""),
      h("td", { class: "num" }, q ? fmtNum(q.processed) : ""),
      h("td", { class: "num" }, q ? fmtNum(q.skipped) : ""),
      h("td", { class: "num" }, q ? fmtNum(q.discarded) : ""));
  });
  $("#functions-table tbody").replaceChildren(...rows);
}

// --- on-failure destinations ----------------------------------------------

// destinations lists the on-failure streams of the config, each with who
// sends to it: the mappings and functions a redrive may send back to.
function destinations() {
  const out = new Map();
  const add = (stream, kind, name) => {
    if (!stream) return;
    if (!out.has(stream)) out.set(stream, []);
    out.get(stream).push({ kind, name });
  };
  for (const m of state.info.mappings) add(m.onFailure, "mapping", m.name);
  for (const f of state.info.functions) add(f.onFailure, "function", f.name);
  return out;
}

function renderDestinations() {
  const sel = $("#dlq-stream");
  const dests = destinations();
  const names = [...dests.keys()].sort();
  const current = sel.value;
  if (names.join("\n") !== [...sel.options].map((o) => o.value).join("\n")) {
    sel.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
    if (names.includes(current)) sel.value = current;
  }
  if (!names.length) {
    $("#dlq-records").replaceChildren(h("p", { class: "muted" }, "No mapping or function has an on-failure destination (destinationConfig.onFailure, async.onFailure)."));
    $("#redrive").hidden = true;
    return;
  }
  if (sel.value !== state.dlq.stream) selectStream(sel.value);
}

async function selectStream(stream) {
  state.dlq.stream = stream;
  const targets = destinations().get(stream) || [];
  $("#redrive-target").replaceChildren(...targets.map((t) => h("option", { value: t.kind + ":" + t.name }, `${t.kind} ${t.name}`)));
  $("#redrive").hidden = targets.length === 0;
  $("#redrive-result").hidden = true;
  try {
    state.streams = await api("GET", "/v1/streams");
  } catch (e) {
    showResult($("#redrive-result"), "Listing the streams: " + e.message, true);
    return;
  }
  const info = (state.streams || []).find((s) => s.name === stream);
  const shards = info ? info.shards : [];
  const sel = $("#dlq-shard");
  sel.replaceChildren(...shards.map((s) => h("option", { value: s.id },
    `${s.id} (${fmtNum(Math.max(0, s.latest - s.lowestRetained + 1))} records)`)));
  // The shard with the most records first: a failure's records follow its
  // metadata record in one shard.
  const busiest = shards.slice().sort((a, b) => (b.latest - b.lowestRetained) - (a.latest - a.lowestRetained))[0];
  if (busiest) sel.value = busiest.id;
  selectShard(sel.value);
}

function selectShard(shard) {
  Object.assign(state.dlq, { shard, stack: [], after: "", carry: null });
  loadPage();
}

async function loadPage() {
  const d = state.dlq;
  const box = $("#dlq-records");
  if (!d.stream || !d.shard) {
    box.replaceChildren(h("p", { class: "muted" }, "This destination does not exist as a stream."));
    return;
  }
  const limit = $("#dlq-limit").value;
  let page;
  try {
    page = await api("GET", `/v1/streams/${encodeURIComponent(d.stream)}/records?shard=${encodeURIComponent(d.shard)}` +
      `&limit=${limit}${d.after ? "&after=" + encodeURIComponent(d.after) : ""}`);
  } catch (e) {
    box.replaceChildren(h("p", { class: "problem" }, "Reading the records: " + e.message));
    return;
  }
  const { groups, carry } = groupFailures(page.records, d.carry);
  d.next = page.next || "";
  d.nextCarry = carry;
  $("#dlq-prev").disabled = d.stack.length === 0;
  $("#dlq-first").disabled = d.stack.length === 0;
  $("#dlq-next").disabled = !d.next;
  const first = page.records[0], last = page.records[page.records.length - 1];
  $("#dlq-page").textContent = page.records.length
    ? `records ${fmtSeq(first.sequenceNumber)}–${fmtSeq(last.sequenceNumber)}, page ${d.stack.length + 1}`
    : "no records";
  if (!groups.length) {
    box.replaceChildren(h("p", { class: "muted" }, d.after ? "No more records." : "No failed records: nothing was discarded to this destination (or retention removed it)."));
    return;
  }
  box.replaceChildren(...groups.map(failureView));
}

// groupFailures splits a page of an on-failure stream into failures: a
// metadata record, then the records it lists (KinesisBatchInfo's or
// KafkaBatchInfo's batchSize, or one for an asynchronous invocation).
// carry is the failure the previous page ended in the middle of.
function groupFailures(records, carry) {
  const groups = [];
  let cur = carry ? { meta: carry.meta, metaRecord: carry.metaRecord, records: [], left: carry.left, continued: true } : null;
  if (cur) groups.push(cur);
  for (const r of records) {
    if (cur && cur.left > 0) {
      cur.records.push(r);
      cur.left--;
      continue;
    }
    const meta = parseMeta(r);
    if (meta) {
      const info = meta.KinesisBatchInfo || meta.KafkaBatchInfo;
      const n = info ? info.batchSize : (meta.requestPayload !== undefined || meta.requestContext ? 1 : 0);
      cur = { meta, metaRecord: r, records: [], left: n };
      groups.push(cur);
    } else {
      cur = { meta: null, metaRecord: null, records: [r], left: 0 };
      groups.push(cur);
    }
  }
  const next = cur && cur.left > 0 ? { meta: cur.meta, metaRecord: cur.metaRecord, left: cur.left } : null;
  return { groups, carry: next };
}

function parseMeta(r) {
  if (r.data === undefined || !r.data.startsWith("{")) return null;
  try {
    const v = JSON.parse(r.data);
    return v && typeof v === "object" && v.requestContext ? v : null;
  } catch (e) {
    return null;
  }
}

function failureView(g) {
  const m = g.meta;
  const metaLine = h("div", { class: "meta" });
  if (m) {
    const rc = m.requestContext || {};
    const info = m.KinesisBatchInfo || m.KafkaBatchInfo || {};
    const field = (k, v) => v !== undefined && v !== "" && v !== null ? h("span", {}, h("b", {}, k + " "), String(v)) : null;
    metaLine.append(...[
      field("condition", rc.condition),
      field("function", (rc.functionArn || "").split(":function:")[1] || rc.functionArn),
      field("invocations", rc.approximateInvokeCount),
      field("at", m.timestamp),
      field("error", [m.idemErrorType, m.idemErrorMessage].filter(Boolean).join(": ") ||
        (m.responseContext && m.responseContext.functionError)),
      field("shard", info.shardId),
      field("sequences", info.startSequenceNumber && `${fmtSeq(info.startSequenceNumber)}–${fmtSeq(info.endSequenceNumber)}`),
      field("records", info.batchSize),
      field("request", rc.requestId),
    ].filter(Boolean));
    if (g.continued) metaLine.append(h("span", { class: "muted" }, "(continued from the previous page)"));
  } else {
    metaLine.append(h("span", { class: "muted" }, "record without a metadata record on this page"));
  }
  const origins = (m && m.idemRecords) || [];
  const offset = g.continued && m ? ((m.KinesisBatchInfo || m.KafkaBatchInfo || {}).batchSize || 0) - g.records.length - g.left : 0;
  const rows = g.records.map((r, i) => {
    const o = origins[offset + i] || {};
    return h("tr", { class: "failed-record", "data-seq": r.sequenceNumber },
      h("td", { class: "num" }, fmtSeq(r.sequenceNumber)),
      h("td", {}, r.partitionKey),
      h("td", {}, o.stream ? `${o.stream}/${o.shardId}/${fmtSeq(o.sequenceNumber)}` : ""),
      h("td", {}, o.idempotencyKey || ""),
      h("td", { class: "data" }, r.data !== undefined ? r.data : "base64:" + r.dataBase64));
  });
  return h("div", { class: "failure", "data-seq": g.metaRecord ? g.metaRecord.sequenceNumber : "" },
    metaLine,
    rows.length ? h("table", { class: "grid" },
      h("thead", {}, h("tr", {}, h("th", { class: "num" }, "Sequence"), h("th", {}, "Partition key"),
        h("th", {}, "Origin"), h("th", {}, "Idempotency key"), h("th", {}, "Data"))),
      h("tbody", {}, ...rows)) : null,
    m ? h("details", {}, h("summary", {}, "Failure metadata"), h("pre", {}, JSON.stringify(m, null, 2))) : null);
}

async function redrive(dryRun) {
  const out = $("#redrive-result");
  const [kind, name] = $("#redrive-target").value.split(/:(.*)/s);
  const body = { from: state.dlq.stream, dryRun, newKeys: $("#redrive-newkeys").checked };
  body[kind] = name;
  const send = $("#redrive-send");
  if (!dryRun && !send.dataset.armed) {
    // A redrive sends records again: the first click asks, the second
    // (within 10 s) sends.
    send.dataset.armed = "1";
    send.textContent = `Click again to redrive ${state.dlq.stream} to ${kind} ${name}`;
    setTimeout(disarm, 10000);
    return;
  }
  disarm();
  showResult(out, dryRun ? "Dry run…" : "Redriving…");
  try {
    const ans = await api("POST", (state.info && state.info.redrive) || "/v1/redrive", body);
    const head = dryRun
      ? `Dry run: would send ${fmtNum(ans.wouldSend)}, skip ${fmtNum(ans.skipped)}.`
      : `Redrove: sent ${fmtNum(ans.sent)}, skipped ${fmtNum(ans.skipped)}.`;
    showResult(out, head + "\n" + JSON.stringify(ans.records || [], null, 2));
    refreshSoon();
  } catch (e) {
    showResult(out, `Redrive from ${state.dlq.stream} to ${kind} ${name}: ${e.message}`, true);
  }
}

function disarm() {
  const send = $("#redrive-send");
  delete send.dataset.armed;
  send.textContent = "Redrive";
}

// --- wiring ----------------------------------------------------------------

function init() {
  $("#token").value = token();
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
    state.info = null;
    showError("");
    $("#status").textContent = "token set";
  });
  $("#token-clear").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("#token").value = "";
  });
  $("#mappings-filter").addEventListener("input", () => state.status && renderMappings(Date.now()));
  $("#dlq-stream").addEventListener("change", (e) => selectStream(e.target.value));
  $("#dlq-shard").addEventListener("change", (e) => selectShard(e.target.value));
  $("#dlq-limit").addEventListener("change", () => selectShard(state.dlq.shard));
  $("#dlq-reload").addEventListener("click", () => selectStream(state.dlq.stream));
  $("#dlq-first").addEventListener("click", () => selectShard(state.dlq.shard));
  $("#dlq-next").addEventListener("click", () => {
    const d = state.dlq;
    if (!d.next) return;
    d.stack.push({ after: d.after, carry: d.carry });
    d.after = d.next;
    d.carry = d.nextCarry;
    loadPage();
  });
  $("#dlq-prev").addEventListener("click", () => {
    const d = state.dlq;
    const p = d.stack.pop();
    if (!p) return;
    d.after = p.after;
    d.carry = p.carry;
    loadPage();
  });
  $("#replay-from").addEventListener("change", (e) => { $("#replay-at").hidden = e.target.value !== "AT_TIMESTAMP"; });
  $("#redrive-dry").addEventListener("click", () => redrive(true));
  $("#redrive-send").addEventListener("click", () => redrive(false));
  poll();
}

init();
