// The pushjobs dashboard: plain JavaScript, no build step. Every API call goes to this
// origin, where `pushjobs ui` signs it with the operator's key and forwards it.
"use strict";

const FINAL_JOB = new Set(["complete", "quorum_failed", "timed_out", "crashed", "aborted", "stopped"]);
const FAILED_NODE = new Set(["failed", "crashed", "timed_out", "nacked", "aborted", "unavailable"]);
const PAGE_SIZE = 25;
let session = null;
let cleanups = [];

// ------------------------------------------------------------------ helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function badge(status) {
  return h("span", { class: `badge s-${status}` }, status);
}

function showError(message) {
  const box = document.getElementById("error");
  if (!message) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = message;
  box.hidden = false;
}

function apiUrl(rel) {
  return `/organizations/${encodeURIComponent(session.org)}/pushy/${rel}`;
}

const REASONS = {
  400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
  405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict", 413: "Payload Too Large",
  415: "Unsupported Media Type", 500: "Internal Server Error", 502: "Bad Gateway",
  503: "Service Unavailable", 504: "Gateway Timeout",
};

// A server error as the server said it: `<status> <reason>: <texts>`.
async function errorText(response) {
  const text = await response.text();
  let detail = text.trim();
  try {
    const doc = JSON.parse(text);
    if (doc && doc.error !== undefined) {
      detail = Array.isArray(doc.error) ? doc.error.join("; ") : String(doc.error);
    }
  } catch (_) { /* plain text */ }
  const reason = response.statusText || REASONS[response.status] || "";
  return `${response.status} ${reason}${detail ? ": " + detail : ""}`;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(rel, { method = "GET", body, quiet = false } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers[session.token_header] = session.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(apiUrl(rel), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch (e) {
    throw new ApiError(0, `cannot reach the pushjobs ui process (${e.message}); is it still running?`);
  }
  if (!response.ok) {
    const err = new ApiError(response.status, await errorText(response));
    if (!quiet) showError(err.message);
    throw err;
  }
  const data = response.status === 204 ? null : await response.json();
  return { data, response };
}

// An EventSource on an API path, closed when the page changes.
function feed(rel, handlers, onOpen) {
  const source = new EventSource(apiUrl(rel));
  for (const [name, fn] of Object.entries(handlers)) {
    source.addEventListener(name, (ev) => {
      let data = {};
      try { data = JSON.parse(ev.data); } catch (_) { /* keep-alive or junk */ }
      fn(data, ev, source);
    });
  }
  if (onOpen) source.addEventListener("open", () => onOpen(true));
  source.addEventListener("error", () => onOpen && onOpen(false));
  cleanups.push(() => source.close());
  return source;
}

function every(ms, fn) {
  const id = setInterval(fn, ms);
  cleanups.push(() => clearInterval(id));
}

function debounced(ms, fn) {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; fn(); }, ms);
  };
}

function liveDot() {
  const dot = h("span", { class: "live", title: "live updates" });
  return { dot, set: (on) => dot.classList.toggle("on", on) };
}

function parseDate(text) {
  const t = Date.parse(text);
  return Number.isNaN(t) ? null : t;
}

function formatDate(text) {
  const t = parseDate(text);
  return t === null ? (text || "") : new Date(t).toLocaleString();
}

function duration(start, end) {
  const a = parseDate(start), b = parseDate(end);
  if (a === null) return "";
  const seconds = Math.max(0, Math.round(((b === null ? Date.now() : b) - a) / 1000));
  if (seconds < 60) return `${seconds}s`;
  return `${Math.floor(seconds / 60)}m ${seconds % 60}s`;
}

function countsText(nodes) {
  return Object.entries(nodes || {}).map(([s, list]) => `${list.length} ${s}`).join(", ");
}

function labelChips(labels) {
  if (!labels) return "";
  if (Array.isArray(labels)) return labels.map((l) => h("span", { class: "label" }, String(l)));
  return Object.entries(labels).map(([k, v]) => h("span", { class: "label" }, `${k}=${v}`));
}

function labelText(labels) {
  if (!labels) return "";
  if (Array.isArray(labels)) return labels.join(" ");
  return Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(" ");
}

// node_states with every registered node and labels where the server supports it.
async function fetchNodes() {
  try {
    return (await api("node_states?all=true&labels=true", { quiet: true })).data;
  } catch (e) {
    if (e.status !== 400) { showError(e.message); throw e; }
    return (await api("node_states")).data;
  }
}

function render(...children) {
  const main = document.getElementById("main");
  main.replaceChildren(...children);
}

// ------------------------------------------------------------------ nodes

async function nodesPage() {
  const filter = h("input", { type: "search", id: "node-filter", placeholder: "filter by name or label" });
  const summary = h("span", { class: "muted", id: "node-summary" });
  const tbody = h("tbody", { id: "nodes" });
  const live = liveDot();
  let nodes = [];

  function draw() {
    const q = filter.value.trim().toLowerCase();
    const shown = nodes.filter((n) =>
      !q || n.node_name.toLowerCase().includes(q) || labelText(n.labels).toLowerCase().includes(q));
    const available = nodes.filter((n) => n.availability === "available").length;
    summary.textContent = `${nodes.length} nodes, ${available} available` +
      (shown.length !== nodes.length ? ` (${shown.length} shown)` : "");
    tbody.replaceChildren(...shown.map((n) => h("tr", { dataset: { node: n.node_name } },
      h("td", { class: "mono" }, n.node_name),
      h("td", { class: "status" }, badge(n.status || "online")),
      h("td", { class: "availability" }, badge(n.availability)),
      h("td", {}, labelChips(n.labels)))));
    if (!shown.length) {
      tbody.append(h("tr", {}, h("td", { colspan: 4, class: "muted" },
        nodes.length ? "no node matches the filter" : "no node is connected")));
    }
  }
  async function refresh() {
    try { nodes = await fetchNodes(); showError(null); draw(); } catch (_) { /* shown */ }
  }
  filter.addEventListener("input", draw);
  render(
    h("h1", {}, live.dot, "Nodes"),
    h("div", { class: "toolbar" }, filter, summary),
    h("table", {}, h("thead", {}, h("tr", {},
      h("th", {}, "Node"), h("th", {}, "Status"), h("th", {}, "Availability"), h("th", {}, "Labels"))),
      tbody));
  await refresh();
  // Jobs starting and ending change availability; the periodic refresh catches connects.
  const soon = debounced(300, refresh);
  feed("job_status_feed", { start: soon, job_complete: soon }, live.set);
  every(5000, refresh);
}

// ------------------------------------------------------------------ jobs

async function jobsPage(params) {
  const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  const limit = Math.min(1000, Math.max(1, parseInt(params.get("limit") || "", 10) || PAGE_SIZE));
  const fields = {
    status: h("input", { type: "text", id: "f-status", placeholder: "status (e.g. running,aborted)", size: 26, value: params.get("status") || "" }),
    command: h("input", { type: "text", id: "f-command", placeholder: "exact command", value: params.get("command") || "" }),
    requested_by: h("input", { type: "text", id: "f-requested-by", placeholder: "requested by", value: params.get("requested_by") || "" }),
    node: h("input", { type: "text", id: "f-node", placeholder: "node", value: params.get("node") || "" }),
  };
  const tbody = h("tbody", { id: "jobs" });
  const pager = h("div", { class: "toolbar" });
  const live = liveDot();

  function go(newOffset) {
    const q = new URLSearchParams();
    for (const [k, el] of Object.entries(fields)) if (el.value.trim()) q.set(k, el.value.trim());
    if (newOffset) q.set("offset", String(newOffset));
    if (limit !== PAGE_SIZE) q.set("limit", String(limit));
    location.hash = `#/jobs?${q}`;
  }
  const form = h("form", { class: "toolbar", id: "job-filters", onsubmit: (e) => { e.preventDefault(); go(0); } },
    Object.values(fields), h("button", { type: "submit" }, "Filter"),
    h("button", { type: "button", onclick: () => { for (const el of Object.values(fields)) el.value = ""; go(0); } }, "Clear"));

  async function refresh() {
    const q = new URLSearchParams({ limit: String(limit), offset: String(offset) });
    for (const [k, el] of Object.entries(fields)) if (params.get(k)) q.set(k, params.get(k));
    let result;
    try { result = await api(`jobs?${q}`); } catch (_) { return; }
    showError(null);
    const jobs = result.data;
    const hasNext = /rel="next"/.test(result.response.headers.get("Link") || "");
    // Summaries have no `nodes`: each job object gives the counts.
    const details = await Promise.all(jobs.map((j) =>
      api(`jobs/${j.id}`, { quiet: true }).then((r) => r.data, () => null)));
    tbody.replaceChildren(...jobs.map((j, i) => h("tr", { dataset: { job: j.id } },
      h("td", {}, formatDate(j.created_at)),
      h("td", {}, badge(j.status)),
      h("td", {}, h("a", { href: `#/job/${j.id}`, class: "mono" }, j.command || "(empty)")),
      h("td", { class: "counts" }, details[i] ? countsText(details[i].nodes) : ""),
      h("td", {}, j.requested_by || ""),
      h("td", { class: "mono muted" }, h("a", { href: `#/job/${j.id}` }, j.id.slice(0, 12))))));
    if (!jobs.length) tbody.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "no jobs")));
    pager.replaceChildren(
      h("button", { id: "prev", disabled: offset === 0, onclick: () => go(Math.max(0, offset - limit)) }, "← Newer"),
      h("span", { class: "muted" }, jobs.length ? `jobs ${offset + 1}–${offset + jobs.length}` : ""),
      h("button", { id: "next", disabled: !hasNext, onclick: () => go(offset + limit) }, "Older →"));
  }
  render(
    h("h1", {}, live.dot, "Jobs"),
    form,
    h("table", {}, h("thead", {}, h("tr", {},
      h("th", {}, "Created"), h("th", {}, "Status"), h("th", {}, "Command"), h("th", {}, "Nodes"),
      h("th", {}, "Requested by"), h("th", {}, "Id"))), tbody),
    pager);
  await refresh();
  const soon = debounced(300, refresh);
  feed("job_status_feed", { start: soon, job_complete: soon }, live.set);
  every(10000, refresh);
}

// ------------------------------------------------------------------ one job

function bytesOf(piece) {
  if (piece.encoding === "base64") {
    const raw = atob(piece.data);
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  }
  return new TextEncoder().encode(piece.data);
}

// Every node's output as it arrives, kept per (node, channel), de-duplicated by byte offset
// (a resumed EventSource may send bytes again, http-api.md §7.13).
class OutputLog {
  constructor() { this.channels = new Map(); this.lines = []; this.limit = 5000; }
  channel(node, channel) {
    const key = `${node}\u0000${channel}`;
    if (!this.channels.has(key)) {
      this.channels.set(key, { node, channel, held: 0, text: "", partial: "", decoder: new TextDecoder() });
    }
    return this.channels.get(key);
  }
  add(piece) {
    const ch = this.channel(piece.node, piece.channel);
    let bytes = bytesOf(piece);
    const end = piece.offset + bytes.length;
    if (end <= ch.held) return false;
    if (piece.offset < ch.held) bytes = bytes.slice(ch.held - piece.offset);
    ch.held = end;
    const text = ch.decoder.decode(bytes, { stream: true });
    ch.text += text;
    const parts = (ch.partial + text).split("\n");
    ch.partial = parts.pop();
    for (const line of parts) this.lines.push({ node: ch.node, channel: ch.channel, line });
    if (this.lines.length > this.limit) this.lines.splice(0, this.lines.length - this.limit);
    return true;
  }
  end(node, channel) {
    const ch = this.channel(node, channel);
    if (ch.partial) { this.lines.push({ node, channel, line: ch.partial }); ch.partial = ""; }
  }
  text(node, channel) { return this.channel(node, channel).text; }
}

async function jobPage(id) {
  const live = liveDot();
  const header = h("div", { class: "card", id: "job-header" });
  const grid = h("div", { class: "grid", id: "grid" });
  const counts = h("div", { class: "counts", id: "counts" });
  const tbody = h("tbody", { id: "job-nodes" });
  const outputTitle = h("h2", {}, "Output");
  const outputBox = h("div", { id: "output-box" });
  const abort = h("button", { class: "danger", id: "abort", hidden: true, onclick: doAbort }, "Abort job");
  const log = new OutputLog();
  let job = null, nodeRows = null, selected = null, outputStarted = false;
  let quorum; // not in the job object; the job feed's `start` event carries it

  async function doAbort() {
    if (!confirm(`Abort job ${id} (${job ? job.command : ""})? Running commands are stopped.`)) return;
    abort.disabled = true;
    try { await api(`jobs/${id}/abort`, { method: "POST" }); showError(null); } catch (_) { /* shown */ }
    abort.disabled = false;
    refresh();
  }

  function countNodes() {
    return Object.values(job.nodes || {}).reduce((n, list) => n + list.length, 0);
  }

  function nodeStatuses() {
    const byNode = new Map();
    for (const [status, names] of Object.entries(job.nodes || {})) for (const n of names) byNode.set(n, status);
    return byNode;
  }

  function drawHeader() {
    const facts = [["Status", h("span", { id: "job-status" }, badge(job.status))],
      ["Command", h("code", { id: "job-command" }, job.command)],
      ["Id", h("code", {}, job.id)],
      ["Requested by", job.requested_by || ""],
      ["Created", formatDate(job.created_at)],
      ["Updated", formatDate(job.updated_at)],
      ["Run timeout", `${job.run_timeout}s`]];
    if (quorum !== undefined) facts.push(["Quorum", h("span", { id: "job-quorum" }, `${quorum} of ${countNodes()} nodes`)]);
    if (job.max_concurrency !== undefined) facts.push(["Max concurrency", String(job.max_concurrency)]);
    if (job.max_errors !== undefined) facts.push(["Max errors", String(job.max_errors)]);
    if (job.user !== undefined) facts.push(["Run as", job.user]);
    if (job.dir !== undefined) facts.push(["Directory", job.dir]);
    if (job.env !== undefined) facts.push(["Environment", Object.entries(job.env).map(([k, v]) => `${k}=${v}`).join(" ")]);
    facts.push(["Capture output", job.capture_output ? "yes" : "no"]);
    if (job.file_specified) facts.push(["File", "yes"]);
    if (job.aborted_by) facts.push(["Aborted by", job.aborted_by]);
    header.replaceChildren(h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
    abort.hidden = FINAL_JOB.has(job.status);
  }

  function drawNodes() {
    const statuses = nodeStatuses();
    const rows = nodeRows || [...statuses.keys()].sort().map((n) => ({ node_name: n }));
    const byStatus = {};
    for (const s of statuses.values()) byStatus[s] = (byStatus[s] || 0) + 1;
    counts.replaceChildren(...Object.entries(byStatus).sort().map(([s, n]) =>
      h("span", { dataset: { status: s } }, badge(s), ` ${n}`)));
    grid.replaceChildren(...rows.map((r) => {
      const status = statuses.get(r.node_name) || r.status || "new";
      const extra = r.exit_status !== undefined && r.exit_status !== null ? `exit ${r.exit_status}` : (r.signal || "");
      return h("div", {
        class: `cell s-${status}${selected === r.node_name ? " selected" : ""}`,
        dataset: { node: r.node_name, status }, title: `${r.node_name}: ${status}`,
        onclick: () => { selected = selected === r.node_name ? null : r.node_name; drawNodes(); drawOutput(); },
      }, h("span", { class: "name" }, r.node_name), h("span", {}, status, extra ? ` · ${extra}` : ""));
    }));
    tbody.replaceChildren(...rows.map((r) => h("tr", { dataset: { node: r.node_name } },
      h("td", { class: "mono" }, r.node_name),
      h("td", { class: "status" }, badge(statuses.get(r.node_name) || r.status || "new")),
      h("td", { class: "exit" }, r.exit_status === null || r.exit_status === undefined ? "" : String(r.exit_status)),
      h("td", { class: "signal" }, r.signal || ""),
      h("td", {}, r.started_at ? duration(r.started_at, r.finished_at) : ""))));
  }

  function drawOutput() {
    if (!job || !job.capture_output) {
      outputBox.replaceChildren(h("p", { class: "muted" }, "This job does not capture output (start it with \"Capture output\")."));
      return;
    }
    if (selected) {
      outputTitle.textContent = `Output of ${selected}`;
      outputBox.replaceChildren(
        h("div", { class: "row" }, h("strong", {}, "stdout"), h("button", { onclick: () => { selected = null; drawNodes(); drawOutput(); } }, "Show all nodes")),
        h("pre", { class: "output", id: "node-stdout" }, log.text(selected, "stdout")),
        h("strong", {}, "stderr"),
        h("pre", { class: "output", id: "node-stderr" }, log.text(selected, "stderr")));
      return;
    }
    outputTitle.textContent = "Output (all nodes; click a node to see only its output)";
    const pre = h("pre", { class: "output", id: "output" }, log.lines.map((l) =>
      h("span", { class: l.channel === "stderr" ? "stderr" : "" },
        h("span", { class: "node" }, `${l.node}${l.channel === "stderr" ? " [stderr]" : ""}: `), l.line, "\n")));
    if (!log.lines.length) pre.append(h("span", { class: "muted" }, "(no output yet)"));
    outputBox.replaceChildren(pre);
    pre.scrollTop = pre.scrollHeight;
  }

  async function refresh() {
    try {
      job = (await api(`jobs/${id}`)).data;
    } catch (_) { return; }
    try {
      nodeRows = (await api(`jobs/${id}/nodes`, { quiet: true })).data;
    } catch (_) { nodeRows = null; /* a server without the extension */ }
    drawHeader();
    drawNodes();
    if (job.capture_output && !outputStarted) startOutput();
    if (!outputStarted) drawOutput();
  }

  function startOutput() {
    outputStarted = true;
    const redraw = debounced(150, drawOutput);
    drawOutput();
    feed(`jobs/${id}/output`, {
      output: (d) => { if (log.add(d)) redraw(); },
      end: (d) => { log.end(d.node, d.channel); redraw(); refreshSoon(); },
      job_complete: (_d, _ev, source) => { source.close(); drawOutput(); },
    });
  }

  const refreshSoon = debounced(200, refresh);
  render(
    h("div", { class: "row" }, h("h1", {}, live.dot, "Job ", h("span", { class: "mono" }, id.slice(0, 12))), abort),
    header,
    h("h2", {}, "Nodes"), counts, grid,
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Node"), h("th", {}, "Status"),
      h("th", {}, "Exit code"), h("th", {}, "Signal"), h("th", {}, "Duration"))), tbody),
    outputTitle, outputBox);
  await refresh();
  if (!job) return;
  const events = ["start", "quorum_vote", "quorum_succeeded", "run_start", "run_complete", "rehab",
    "budget_exhausted", "run_skipped"];
  const handlers = Object.fromEntries(events.map((e) => [e, refreshSoon]));
  handlers.start = (d) => { if (typeof d.quorum === "number") quorum = d.quorum; refreshSoon(); };
  // After the last event the server ends the stream; an EventSource would reconnect.
  const finished = (_d, _ev, source) => { source.close(); live.set(false); refresh(); };
  handlers.job_complete = finished;
  handlers.summary = finished;
  feed(`job_status_feed/${id}`, handlers, live.set);
  every(5000, () => { if (job && !FINAL_JOB.has(job.status)) refresh(); });
}

// ------------------------------------------------------------------ start a job

function parseLimit(text, least, name) {
  const v = text.trim();
  if (!v) return undefined;
  if (/^\d+$/.test(v) && Number(v) >= least) return Number(v);
  const m = /^(\d{1,3})%$/.exec(v);
  if (m && Number(m[1]) >= least && Number(m[1]) <= 100) return v;
  throw new Error(`${name} must be an integer >= ${least} or a percentage such as 25%`);
}

function parseQuorum(text, count) {
  const v = text.trim();
  if (!v) return undefined;
  if (/^\d+$/.test(v)) return Number(v);
  const m = /^(\d+(?:\.\d+)?)%$/.exec(v);
  if (m) return Math.ceil((Number(m[1]) * count) / 100);
  throw new Error("quorum must be a number of nodes or a percentage such as 75%");
}

function parseEnv(text) {
  const env = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new Error(`environment line '${line}' is not NAME=VALUE`);
    env[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return Object.keys(env).length ? env : undefined;
}

async function startPage() {
  const nodeBox = h("div", { class: "nodepick", id: "node-pick" }, h("span", { class: "muted" }, "loading nodes…"));
  const f = {
    command: h("input", { type: "text", id: "command", required: true, placeholder: "a command of the nodes' whitelist, e.g. chef-client", size: 50 }),
    extra: h("input", { type: "text", id: "extra-nodes", placeholder: "more node names, separated by spaces or commas", size: 50 }),
    selector: h("input", { type: "text", id: "selector", placeholder: "e.g. role=web,dc in (fra1,ams2)", size: 50 }),
    quorum: h("input", { type: "text", id: "quorum", placeholder: "100%", size: 8 }),
    timeout: h("input", { type: "number", id: "run-timeout", min: 0, placeholder: "3600", size: 8 }),
    capture: h("input", { type: "checkbox", id: "capture", checked: true }),
    maxConcurrency: h("input", { type: "text", id: "max-concurrency", placeholder: "e.g. 1 or 25%", size: 14 }),
    maxErrors: h("input", { type: "text", id: "max-errors", placeholder: "e.g. 0 or 10%", size: 14 }),
    user: h("input", { type: "text", id: "run-as", size: 20 }),
    dir: h("input", { type: "text", id: "dir", size: 30 }),
    env: h("textarea", { id: "env", rows: 3, cols: 50, placeholder: "NAME=value, one a line" }),
  };
  const submit = h("button", { type: "submit", class: "primary", id: "submit" }, "Start job");

  function chosen() {
    const names = [...nodeBox.querySelectorAll("input[name=node]:checked")].map((el) => el.value);
    for (const n of f.extra.value.split(/[\s,]+/)) if (n && !names.includes(n)) names.push(n);
    return names;
  }
  // The nodes a selector matches now, as the server resolves it (it resolves it again on POST).
  const matchHint = h("div", { class: "hint", id: "selector-matches" },
    "nodes whose labels match, besides the ones chosen above (optional)");
  async function selectorMatches(selector) {
    const rel = `node_states?all=true&selector=${encodeURIComponent(selector)}`;
    // Like the server's POST: online nodes and nodes that connected before, not never-seen clients.
    return (await api(rel, { quiet: true })).data.filter((n) => n.status === "online" || n.last_seen);
  }
  async function previewSelector() {
    const selector = f.selector.value.trim();
    if (!selector) {
      matchHint.textContent = "nodes whose labels match, besides the ones chosen above (optional)";
      return;
    }
    try {
      const matched = await selectorMatches(selector);
      if (f.selector.value.trim() !== selector) return; // typed on meanwhile
      const names = matched.map((n) => n.node_name);
      const up = matched.filter((n) => n.availability === "available").length;
      const shown = names.slice(0, 20).join(", ") + (names.length > 20 ? ", …" : "");
      matchHint.textContent = names.length
        ? `matches ${names.length} node${names.length === 1 ? "" : "s"} (${up} available): ${shown}`
        : "matches no node";
    } catch (err) {
      matchHint.textContent = err.message;
    }
  }
  f.selector.addEventListener("input", debounced(300, previewSelector));

  async function onSubmit(e) {
    e.preventDefault();
    let body;
    try {
      const nodes = chosen();
      const selector = f.selector.value.trim();
      if (!nodes.length && !selector) throw new Error("choose at least one node or give a label selector");
      body = { command: f.command.value, capture_output: f.capture.checked };
      if (nodes.length) body.nodes = nodes;
      if (selector) body.selector = selector;
      let count = nodes.length;
      if (selector && /%\s*$/.test(f.quorum.value)) {
        // A percentage needs the node count the server will resolve; errors are the server's.
        const matched = (await selectorMatches(selector)).map((n) => n.node_name);
        count = new Set([...nodes, ...matched]).size;
      }
      const quorum = parseQuorum(f.quorum.value, count);
      if (quorum !== undefined) body.quorum = quorum;
      if (f.timeout.value.trim()) body.run_timeout = Number(f.timeout.value);
      const mc = parseLimit(f.maxConcurrency.value, 1, "max concurrency");
      if (mc !== undefined) body.max_concurrency = mc;
      const me = parseLimit(f.maxErrors.value, 0, "max errors");
      if (me !== undefined) body.max_errors = me;
      if (f.user.value.trim()) body.user = f.user.value.trim();
      if (f.dir.value.trim()) body.dir = f.dir.value.trim();
      const env = parseEnv(f.env.value);
      if (env) body.env = env;
    } catch (err) {
      showError(err.message);
      return;
    }
    submit.disabled = true;
    try {
      const { data } = await api("jobs", { method: "POST", body });
      showError(null);
      const id = String(data.uri).split("/").pop();
      location.hash = `#/job/${id}`;
    } catch (_) { /* shown */ } finally { submit.disabled = false; }
  }
  const row = (label, input, hint) => [h("label", { class: "k", for: input.id }, label),
    h("div", {}, input, hint ? h("div", { class: "hint" }, hint) : null)];
  render(
    h("h1", {}, "Start a job"),
    h("form", { class: "start", id: "start-form", onsubmit: onSubmit },
      row("Command", f.command),
      h("label", { class: "k" }, "Nodes"),
      h("div", {}, nodeBox, h("div", { class: "row" },
        h("button", { type: "button", id: "select-available", onclick: () => {
          for (const el of nodeBox.querySelectorAll("input[name=node]")) el.checked = el.dataset.availability === "available";
        } }, "Select available"),
        h("button", { type: "button", onclick: () => { for (const el of nodeBox.querySelectorAll("input[name=node]")) el.checked = false; } }, "Select none")),
        h("div", { style: "margin-top:6px" }, f.extra)),
      h("label", { class: "k", for: "selector" }, "Label selector"), h("div", {}, f.selector, matchHint),
      row("Quorum", f.quorum, "nodes that must agree to run: a number or a percentage (default 100%)"),
      row("Run timeout (s)", f.timeout, "default: the server's (3600)"),
      row("Capture output", f.capture, "return each node's stdout and stderr (needed for live output)"),
      row("Max concurrency", f.maxConcurrency, "at most this many nodes run at once (optional)"),
      row("Max errors", f.maxErrors, "stop starting nodes once more than this many failed (optional)"),
      row("Run as user", f.user),
      row("Working directory", f.dir),
      row("Environment", f.env),
      h("span", {}), h("div", {}, submit)));
  try {
    const nodes = await fetchNodes();
    nodeBox.replaceChildren(...nodes.map((n) => h("label", { class: "mono" },
      h("input", { type: "checkbox", name: "node", value: n.node_name, dataset: { availability: n.availability } }),
      " ", n.node_name, " ", badge(n.availability))));
    if (!nodes.length) nodeBox.replaceChildren(h("span", { class: "muted" }, "no node is connected; type names below"));
  } catch (_) {
    nodeBox.replaceChildren(h("span", { class: "muted" }, "could not list the nodes; type names below"));
  }
}

// ------------------------------------------------------------------ routing

async function route() {
  for (const fn of cleanups) { try { fn(); } catch (_) { /* closing */ } }
  cleanups = [];
  showError(null);
  const hash = location.hash.replace(/^#/, "") || "/nodes";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("header nav a")) a.classList.remove("active");
  const nav = { nodes: "nav-nodes", jobs: "nav-jobs", job: "nav-jobs", start: "nav-start" }[parts[0]];
  if (nav) document.getElementById(nav).classList.add("active");
  try {
    if (parts[0] === "jobs") await jobsPage(params);
    else if (parts[0] === "job" && parts[1]) await jobPage(decodeURIComponent(parts[1]));
    else if (parts[0] === "start") await startPage();
    else await nodesPage();
  } catch (e) {
    showError(`the page failed: ${e.message}`);
  }
}

async function boot() {
  window.addEventListener("error", (e) => showError(`the page failed: ${e.message}`));
  window.addEventListener("unhandledrejection", (e) => showError(`the page failed: ${e.reason && e.reason.message || e.reason}`));
  try {
    const response = await fetch("/session.json", { credentials: "same-origin" });
    if (!response.ok) throw new Error(await response.text());
    session = await response.json();
  } catch (e) {
    render(h("p", {}, String(e.message)));
    return;
  }
  document.getElementById("who").textContent = `${session.user} · ${session.server_url}`;
  window.addEventListener("hashchange", route);
  route();
}

boot();
