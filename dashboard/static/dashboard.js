// vipswap dashboard: waits on /v1/events and reads /v1/status, /v1/rollout,
// /v1/releases and /v1/history when something happened; the figures (/v1/status's
// counters, /v1/rates, a running rollout's or release's) once a second. It changes
// state through the same admin API as the CLI.
"use strict";

const $ = (id) => document.getElementById(id);
const palette = ["#2962d9", "#1f9d55", "#8e44ad", "#c98a00", "#16a2b8", "#7f8c8d"];
let token = sessionStorage.getItem("vipswap-token") || "";
let status = null;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k.startsWith("--")) e.style.setProperty(k, v); // CSP allows no style attributes
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (token) headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 401) {
    $("token-form").hidden = false;
    throw new Error("the admin API wants a token: enter it at the top right");
  }
  const data = await resp.json();
  if (!resp.ok) throw new Error(data.error || resp.statusText);
  return data;
}

function showError(err) {
  const box = $("error");
  box.hidden = !err;
  box.textContent = err ? String(err.message || err) : "";
}

// certificates says what a TLS listener serves: " · TLS: www.example.com
// until 2027-03-01"; nothing on a cleartext listener.
function certificates(tls) {
  if (!tls || tls.length === 0) return "";
  return " · TLS: " + tls.map((c) => (c.names || []).join(", ") + " until " + String(c.not_after).slice(0, 10)).join("; ");
}

// renderShadow shows the running shadow (status.shadow), or hides its
// card when none runs.
function renderShadow(sh) {
  $("shadow-card").hidden = !sh;
  if (!sh) return;
  $("shadow-state").textContent = pct(sh.percent) + " of prod's " + (sh.methods || []).join(",") + " copied to " + sh.to +
    (sh.until ? ", until " + new Date(sh.until).toLocaleTimeString() : "");
  const f = sh.figures;
  if (!f) {
    $("shadow-figures").textContent = "this node does not mirror (no built-in proxy)";
    $("shadow-latency").textContent = "";
    $("shadow-samples").tBodies[0].replaceChildren();
    return;
  }
  $("shadow-figures").textContent = f.same + " same, " + f.differ + " differ (" + pct(100 * f.differ_rate) + "), " +
    f.error + " errors, " + f.dropped.total + " dropped" + (f.stopped ? " · stopped: " + f.stopped : "");
  $("shadow-latency").textContent = "p50/p99: prod " + f.prod_p50_ms.toFixed(1) + "/" + f.prod_p99_ms.toFixed(1) + " ms, " +
    sh.to + " " + f.target_p50_ms.toFixed(1) + "/" + f.target_p99_ms.toFixed(1) + " ms";
  $("shadow-samples").tBodies[0].replaceChildren(...(f.samples || []).map((d) => el("tr", {},
    el("td", {}, new Date(d.time).toLocaleTimeString()), el("td", {}, d.request), el("td", {}, d.prod_status),
    el("td", {}, d.target_status), el("td", {}, d.where), el("td", {}, d.prod || ""), el("td", {}, d.target || ""))));
}

function renderStatus(s) {
  status = s;
  renderShadow(s.shadow);
  $("revision").textContent = "revision " + s.revision;
  $("active-slot").textContent = s.active;
  $("standby-slot").textContent = s.standby;
  $("previous").textContent = s.previous ? "(rollback returns to " + s.previous + ")" : "";
  $("rollback-btn").disabled = !s.previous;
  const ls = $("listeners");
  ls.replaceChildren(...s.listeners.map((l) => {
    const weights = Object.entries(l.weights || {}).sort((a, b) => b[1] - a[1])
      .map(([slot, w]) => slot + " " + (+w.toFixed(1)) + "%").join(", ");
    return el("div", { "data-listener": l.name }, el("b", {}, l.name), " " + l.addr + " → ", el("span", { class: "slot-name" }, l.slot),
      " (" + weights + ") · " + outcome(l.failed, l.instance_errors, l.client_errors) + certificates(l.tls));
  }), ...(s.admin_tls ? [el("div", { "data-listener": "admin" }, el("b", {}, "admin"), certificates(s.admin_tls).replace(/^ · /, " "))] : []),
  ...(s.routes || []).map((r) => el("div", { "data-route": r.path_prefix }, el("b", {}, "route"),
    " " + r.path_prefix + "*" + (r.header ? " with " + r.header + ": " + r.value : "") + " → ", el("span", { class: "slot-name" }, r.slot))));

  const slots = $("slots");
  slots.replaceChildren(...s.slots.map((slot) => {
    const rows = slot.instances.map((i) => {
      const state = i.drained ? "drained" : i.healthy ? "up" : "down";
      let label = i.healthy ? "healthy" : "down";
      if (i.check && (!i.healthy || i.check.code !== "L7OK")) label += (i.healthy ? " (last check " : ": ") + i.check.text + (i.healthy ? ")" : "");
      if (!i.healthy && i.health_since) label += " for " + ago(i.health_since);
      if (i.drained) label += ", drained";
      const action = i.drained
        ? el("button", { onclick: () => confirmChange("Put " + i.addr + " of " + slot.name + " back in rotation?",
            () => instanceChange(slot.name, i.addr, "ready")) }, "Ready")
        : el("button", { onclick: () => confirmChange("Drain " + i.addr + " of " + slot.name + "? It finishes its requests and gets no new ones.",
            () => instanceChange(slot.name, i.addr, "drain")) }, "Drain");
      return el("tr", { "data-instance": i.addr },
        el("td", { class: "addr" }, el("span", { class: "dot " + state }), i.addr),
        el("td", { class: "health" }, label),
        el("td", { class: "num" }, i.in_flight.prod + " / " + i.in_flight.stage),
        el("td", { class: "num" }, i.served.prod + " / " + i.served.stage),
        el("td", { class: "act" }, action));
    });
    return el("div", { class: "card", "data-slot": slot.name },
      el("h2", {}, slot.name, el("span", { class: "version" }, version(slot.version)),
        el("span", { class: "role " + slot.role }, slot.role)),
      el("p", { class: "muted" }, slot.routable + " of " + slot.instances.length + " routable · " +
        (slot.in_flight.prod + slot.in_flight.stage) + " in flight"),
      el("table", { class: "instances" },
        el("thead", {}, el("tr", {}, el("th", {}, "instance"), el("th", {}, "health"),
          ...["in flight", "served"].map((h) => el("th", { class: "num", title: h + " on prod / on stage" }, h, el("br"), "prod / stage")),
          el("th", {}))),
        el("tbody", {}, ...rows)));
  }));
}

// ago says how long ago t was: "12s", "3m 4s", "2h 5m".
function ago(t) {
  const secs = Math.max(0, Math.round((Date.now() - new Date(t).getTime()) / 1000));
  if (secs < 60) return secs + "s";
  if (secs < 3600) return Math.floor(secs / 60) + "m " + (secs % 60) + "s";
  return Math.floor(secs / 3600) + "h " + Math.floor((secs % 3600) / 60) + "m";
}

// fullTime shows a date and time with its time zone, for tooltips.
function fullTime(t) {
  return new Date(t).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "long" }); // "long" shows the zone
}

// shortTime shows a time on one short line: "16:50:51" today, "Dec 5, 16:50"
// on another day (with the year in another year).
function shortTime(t) {
  const d = new Date(t), now = new Date();
  const hm = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString(undefined, { ...hm, second: "2-digit" });
  const year = d.getFullYear() !== now.getFullYear() ? { year: "numeric" } : {};
  return d.toLocaleString(undefined, { month: "short", day: "numeric", ...year, ...hm });
}

// timeEl is a <time> showing shortTime, with the full time as its tooltip.
function timeEl(t) {
  return el("time", { datetime: t, title: fullTime(t) }, shortTime(t));
}

// latency rounds a latency given in milliseconds for reading: whole µs
// under 1 ms, 0.1 ms under 10 ms, whole ms under a second, then seconds
// with three significant digits. Every latency on the page goes through it.
function latency(ms) {
  const us = Math.round(ms * 1000);
  if (us < 1000) return us + " µs";
  if (ms < 9.95) return ms.toFixed(1) + " ms";
  if (ms < 999.5) return Math.round(ms) + " ms";
  const s = ms / 1000;
  if (s < 9.995) return s.toFixed(2) + " s";
  if (s < 99.95) return s.toFixed(1) + " s";
  return Math.round(s) + " s";
}

// version shows a slot's or a release's version: "v2.0", or as given
// when it does not start with a digit.
function version(v) {
  return v ? (/^[0-9]/.test(v) ? "v" : "") + v : "";
}

// changeText says what a history entry changed.
function changeText(e) {
  let moved = e.instance ? e.instance : (e.from || "") + (e.to ? " → " + e.to : "");
  if (e.operation === "slot add") moved = e.to; // prod did not move
  if (e.operation === "slot remove") moved = e.from;
  return [moved, ...(e.changes || [])].filter((x) => x).join("; ");
}

let shownEntries = [];
let historyKey = "";
function renderHistory(entries) {
  shownEntries = entries;
  // Redraw only what changed, so a tooltip being read stays up.
  const key = new Date().toDateString() + JSON.stringify(entries);
  if (key === historyKey) return;
  historyKey = key;
  $("history").replaceChildren(...entries.map((e) => {
    let around = "";
    if (e.measurement) {
      const m = e.measurement, p = (m.listeners || {}).prod;
      if (e.steps && e.steps.length) { // a release: what prod served while it ran
        around = count(m.served, "request") + ", " + outcome(m.failed, m.instance_errors, m.client_errors) +
          " over " + (m.window_seconds || 0).toFixed(1) + " s";
      } else {
        around = p
          ? count(p.requests, "request") + ", " + outcome(p.failed, p.instance_errors, p.client_errors) + " in " + m.window_seconds.toFixed(1) + " s"
          : count(m.served, "request") + ", " + outcome(m.failed, m.instance_errors, m.client_errors);
        around += m.complete ? "; drained in " + m.drained_seconds.toFixed(1) + " s" : " (gave up waiting for the drain)";
      }
    }
    return el("tr", { "data-entry": e.id },
      el("td", {}, e.id), el("td", { class: "time" }, timeEl(e.time)),
      el("td", { class: "op" }, e.operation + (e.forced ? " (forced)" : "")), el("td", {}, changeText(e)),
      el("td", {}, e.actor), el("td", { class: e.result }, e.result + (e.error ? ": " + unrepeated(e.error, e.operation) : "")),
      el("td", { class: "reason" }, e.reason || ""), el("td", {}, around));
  }));
}

let lastSamples = [];
function renderChart(samples) {
  lastSamples = samples;
  const canvas = $("chart");
  // Draw at the size the page shows the canvas, in device pixels: text
  // stays sharp and x is the same on the canvas and the marker labels.
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 640, h = canvas.clientHeight || 200, left = 44, bottom = 22, top = 8;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  canvas.dataset.width = w;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const names = [...new Set(samples.flatMap((s) => Object.keys(s.slots)))].sort();
  let max = 1, total = 0;
  for (const s of samples) for (const r of Object.values(s.slots)) { max = Math.max(max, r.requests); total += r.requests; }
  canvas.dataset.samples = samples.length;
  canvas.dataset.total = Math.round(total);
  const span = 300, now = samples.length ? new Date(samples[samples.length - 1].time).getTime() : Date.now();
  const x = (t) => left + (w - left) * (1 - (now - new Date(t).getTime()) / 1000 / span);
  const y = (v) => h - bottom - (h - bottom - top) * (v / max);
  // Axes: requests per second on the left, minutes ago along the bottom.
  ctx.strokeStyle = "#dde2e8"; ctx.fillStyle = "#6a7480"; ctx.font = "11px sans-serif";
  for (const f of [0, 0.5, 1]) {
    const yy = y(max * f);
    ctx.beginPath(); ctx.moveTo(left, yy); ctx.lineTo(w, yy); ctx.stroke();
    ctx.fillText(Math.round(max * f) + "/s", 2, yy + 4);
  }
  for (let m = 5; m >= 0; m--) {
    const xx = left + (w - left) * (1 - m * 60 / span);
    ctx.fillText(m === 0 ? "now" : "-" + m + " min", Math.min(xx - 12, w - 24), h - 6);
  }
  // A dashed line for each change in the window, a shaded band where
  // several share a label, and the labels above the chart.
  const changes = shownEntries.filter((e) => {
    if (e.result !== "applied" || e.operation === "seed") return false;
    const t = new Date(e.time).getTime();
    return now - t <= span * 1000 && t <= now + 1000;
  }).map((e) => ({ e, x: x(e.time) })).sort((a, b) => a.x - b.x || a.e.id - b.e.id);
  const groups = groupMarkers(changes, w);
  ctx.fillStyle = "rgba(154, 165, 177, 0.18)";
  for (const g of groups) if (g.items.length > 1) ctx.fillRect(g.x - 1, top, g.last - g.x + 2, h - bottom - top);
  ctx.strokeStyle = "#9aa5b1"; ctx.setLineDash([2, 2]);
  for (const c of changes) {
    ctx.beginPath(); ctx.moveTo(c.x, top); ctx.lineTo(c.x, h - bottom); ctx.stroke();
  }
  ctx.setLineDash([]);
  canvas.dataset.markers = changes.length;
  showMarkers(groups);
  const legend = [];
  names.forEach((name, i) => {
    const color = palette[i % palette.length];
    for (const [key, dash] of [["requests", []], ["errors", [4, 3]]]) {
      ctx.strokeStyle = key === "errors" ? "#d64545" : color;
      ctx.setLineDash(dash);
      ctx.beginPath();
      let started = false;
      for (const s of samples) {
        const r = s.slots[name];
        const v = r ? r[key] : 0;
        if (started) ctx.lineTo(x(s.time), y(v)); else ctx.moveTo(x(s.time), y(v));
        started = true;
      }
      ctx.stroke();
    }
    ctx.setLineDash([]);
    const last = samples.length ? samples[samples.length - 1].slots[name] : null;
    const lat = last && last.p50_ms ? ", p50 " + latency(last.p50_ms) + ", p99 " + latency(last.p99_ms) : "";
    legend.push(el("span", { "--c": color, "data-slot": name },
      name + ": " + (last ? last.requests.toFixed(0) + "/s, " + last.errors.toFixed(0) + " errors/s" + lat : "idle")));
  });
  $("legend").replaceChildren(...legend);
}

// groupMarkers gives the changes on the chart (oldest first, with their x)
// labels that never overlap: a change whose label would begin before the
// previous label ends (and a small gap) joins that label, which then reads
// "N changes" and lists them in its tooltip; a label is kept inside the
// chart, and one that grows into its predecessor merges with it too.
// Widths are measured on the page, in the labels' own font.
function groupMarkers(changes, w) {
  const probe = $("marker-probe"), gap = 6, groups = [];
  const place = (g) => {
    const n = g.items.length;
    g.text = n === 1 ? "#" + g.items[0].id + " " + g.items[0].operation : n + " changes";
    probe.textContent = g.text;
    g.width = Math.ceil(probe.getBoundingClientRect().width);
    g.left = Math.max(0, Math.min(g.x + 2, w - g.width));
    g.right = g.left + g.width;
    return g;
  };
  for (const c of changes) {
    let g = place({ x: c.x, last: c.x, items: [c.e] });
    while (groups.length && g.left < groups[groups.length - 1].right + gap) {
      const prev = groups.pop();
      g = place({ x: prev.x, last: g.last, items: prev.items.concat(g.items) });
    }
    groups.push(g);
  }
  return groups;
}

// showMarkers puts the groups' labels above the chart, reusing the
// elements already there so that a tooltip being read stays up.
function showMarkers(groups) {
  const layer = $("markers");
  groups.forEach((g, i) => {
    const label = layer.children[i] || layer.appendChild(el("span", { class: "marker" }));
    const title = g.items.map((e) => "#" + e.id + " " + shortTime(e.time) + " " + e.operation +
      (changeText(e) ? ": " + changeText(e) : "")).join("\n");
    if (label.textContent !== g.text) label.textContent = g.text;
    if (label.title !== title) label.title = title;
    label.style.left = g.left + "px"; // CSSOM, which the CSP allows
    label.dataset.count = g.items.length;
  });
  while (layer.children.length > groups.length) layer.lastChild.remove();
}

let rollout = null;

function pct(w) { return (+w.toFixed(1)) + "%"; }

// unrepeated drops the "swap refused: " an entry's error starts with: the
// result column already says refused.
function unrepeated(error, operation) {
  const prefix = operation + " refused: ";
  return error.startsWith(prefix) ? error.slice(prefix.length) : error;
}

// count says "1 request", "2,287 requests".
function count(n, what) { return (n || 0).toLocaleString("en-US") + " " + what + (n === 1 ? "" : "s"); }

// outcome names a run's errors as every summary does: the requests vipswap
// could not get answered, the 5xx the instances answered, the 4xx vipswap
// answered for clients' own mistakes.
function outcome(failed, instanceErrors, clientErrors) {
  return (failed || 0).toLocaleString("en-US") + " failed, " + count(instanceErrors, "instance error") + " (5xx), " +
    count(clientErrors, "client error");
}

function renderRollout(r) {
  rollout = r;
  const running = r.running;
  $("promote-btn").disabled = !(running && r.paused);
  $("promote-full-btn").disabled = !running;
  const split = Object.values(r.weights || {}).filter((w) => w > 0).length > 1;
  $("abort-btn").disabled = !running && !split;
  $("rollout-progress").hidden = !running;
  $("rollout-analysis").hidden = !(running && r.analysis);
  if (!running) {
    $("rollout-state").textContent = split ? "none running; prod is split by hand" : "none running";
    $("rollout-step").textContent = "";
    $("rollout-verdict").textContent = "";
    return;
  }
  $("rollout-state").textContent = "to " + r.to + " from " + r.from + (r.plan ? " (plan " + r.plan + ")" : "") +
    (r.paused ? " · paused: promote to continue" : "");
  $("rollout-progress").replaceChildren(...r.steps.map((w, i) =>
    el("span", { class: i < r.step ? "done" : i === r.step ? "current" : "" }, pct(w))));
  let step = "step " + (r.step + 1) + " of " + r.steps.length + ": " + r.to + " at " + pct(r.steps[r.step]);
  if (r.paused) step += ", waiting for a promote";
  else if (r.left_seconds > 0) step += ", " + Math.ceil(r.left_seconds) + " s left of " + Math.round(r.step_seconds) + " s";
  else if (r.step < r.steps.length - 1) step += ", interval over: waiting for enough requests to judge";
  $("rollout-step").textContent = step;
  const a = r.analysis;
  if (!a) return;
  const row = (role, slot, f) => el("tr", { "data-role": role }, el("td", {}, role), el("td", {}, slot), el("td", {}, f.requests),
    el("td", {}, f.errors), el("td", {}, (f.error_rate * 100).toFixed(2) + "%"), el("td", {}, f.p99_ms ? latency(f.p99_ms) : "–"),
    el("td", { title: "sent by a pin header or a route: shown, not judged" }, f.steered_requests ? f.steered_requests + " (" + f.steered_errors + " errors)" : "–"));
  const paths = (a.canary.paths || []).map(p => el("tr", { "data-role": "path" }, el("td", {}, "canary " + p.prefix), el("td", {}, r.to),
    el("td", {}, p.requests), el("td", {}, p.errors), el("td", {}, (p.error_rate * 100).toFixed(2) + "%"), el("td", {}, "–"), el("td", {}, "–")));
  $("rollout-analysis").tBodies[0].replaceChildren(row("canary", r.to, a.canary), ...paths, row("stable", r.from, a.stable));
  const bounds = [];
  if (a.max_error_rate) bounds.push("error rate ≤ " + (a.max_error_rate * 100) + "%");
  if (a.max_p99_ms) bounds.push("p99 ≤ " + latency(a.max_p99_ms));
  if (a.max_error_rate_ratio) bounds.push("error rate ≤ " + a.max_error_rate_ratio + "× stable");
  if (a.max_p99_ratio) bounds.push("p99 ≤ " + a.max_p99_ratio + "× stable");
  const v = $("rollout-verdict");
  v.className = "verdict-" + (a.verdict === "pass" ? "pass" : a.enough ? "breach" : "wait");
  v.textContent = "analysis over the last " + a.window_seconds + " s (" + (bounds.join(", ") || "no bounds") +
    ", at least " + a.min_requests + " canary requests): " + (a.verdict || "not judged yet");
}

// renderReleases shows the recent releases (vipswap deploy, rolling),
// newest first: each a line (kind, slot, version, state, when, prod's
// figures) that opens onto its steps as they end, the one running with its
// health counts. The newest is open; a release the operator opened or
// closed stays so.
const releaseOpen = new Map();
let releasesKey = "";
function renderReleases(list) {
  list = list || [];
  $("release-card").hidden = list.length === 0;
  const key = new Date().toDateString() + JSON.stringify(list);
  if (key === releasesKey) return;
  releasesKey = key;
  $("releases").replaceChildren(...list.map((p, i) => {
    const d = el("details", { class: "release", "data-release": p.id });
    d.open = releaseOpen.has(p.id) ? releaseOpen.get(p.id) : i === 0;
    let state = p.state;
    if (p.state === "failed" && p.failed_step) state += " at " + p.failed_step;
    if (p.state === "running" && p.instances) state += ", " + p.healthy + "/" + p.instances + " healthy";
    d.append(
      el("summary", { onclick: () => releaseOpen.set(p.id, !d.open) }, el("b", {}, p.kind), " " + p.slot + " ",
        el("span", { class: "version" }, version(p.version)), " · ", el("span", { class: "state-" + p.state }, state), " · ",
        timeEl(p.started), " · prod " + count(p.requests, "request") + ", " + outcome(p.failed, p.instance_errors, p.client_errors)),
      el("p", { class: "muted" }, "release " + p.id + (p.from ? " · prod followed " + p.from : "") +
        (p.history_id ? " · history #" + p.history_id : "") + (p.error ? " · " + p.error : "")),
      el("ol", { class: "steps" }, ...p.steps.map((s) => el("li", { class: "step-" + s.result },
        s.name + " · " + s.seconds.toFixed(2) + " s" +
        (s.result === "running" && p.instances ? " · " + p.healthy + "/" + p.instances + " healthy" : "") +
        (s.detail ? " · " + s.detail : "")))),
      ...(p.kept ? [el("p", { class: "muted" }, p.kept)] : []));
    return d;
  }));
}

function renderShiftSlots(s) {
  const sel = $("shift-slot");
  const names = s.slots.map((x) => x.name);
  if ([...sel.options].map((o) => o.value).join() === names.join()) return;
  const keep = sel.value || s.standby;
  sel.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  sel.value = names.includes(keep) ? keep : s.standby;
}

function confirmChange(text, action) {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.onclose = () => { if (dialog.returnValue === "ok") action(); };
  dialog.showModal();
}

function changeBody() {
  const body = { if_revision: status ? status.revision : undefined };
  const reason = $("reason").value.trim();
  if (reason) body.reason = reason;
  return body;
}

async function change(path, extra, method = "POST") {
  try {
    await api(method, path, Object.assign(changeBody(), extra || {}));
    showError(null);
  } catch (err) {
    showError(err);
  }
  refresh();
}

function instanceChange(slot, addr, op) {
  return change("/v1/slots/" + encodeURIComponent(slot) + "/instances/" + encodeURIComponent(addr) + "/" + op);
}

let refreshing = false;
let again = false; // something happened during a refresh: read everything once it ends
let busy = false; // a rollout or a release runs: its figures change every second

// refresh reads what the page shows: everything when all is true (something
// happened), else the figures alone.
async function refresh(all = true) {
  if (refreshing) {
    again = again || all;
    return;
  }
  refreshing = true;
  try {
    const wanted = all || busy;
    const [s, rates, r, entries, releases] = await Promise.all([
      api("GET", "/v1/status"), api("GET", "/v1/rates"),
      wanted ? api("GET", "/v1/rollout") : null,
      all ? api("GET", "/v1/history?limit=20") : null,
      wanted ? api("GET", "/v1/releases") : null]);
    renderStatus(s);
    renderShiftSlots(s);
    renderChart(rates.samples);
    if (r) renderRollout(r);
    if (releases) renderReleases(releases);
    if (entries) renderHistory(entries);
    if (r || releases) busy = (r && r.running) || (releases || []).some((p) => p.state === "running");
    $("live").textContent = "live · " + new Date().toLocaleTimeString();
    if ($("error").dataset.kind === "read") showError(null);
  } catch (err) {
    $("live").textContent = "disconnected";
    showError(err);
    $("error").dataset.kind = "read";
  } finally {
    refreshing = false;
  }
  if (again) {
    again = false;
    await refresh();
  }
}

// watchEvents waits on the admin API's events and refreshes everything when
// one came (a change, a health transition, a verdict, a rollout's end, a
// drain, a measurement), so a swap shows at once. When vipswap is away
// (restarting) or wants a token, it tries again every two seconds.
async function watchEvents() {
  let seq = null;
  for (;;) {
    try {
      if (seq === null) {
        seq = (await api("GET", "/v1/events")).next;
        await refresh();
      }
      const evs = await api("GET", "/v1/events?since=" + seq + "&wait=20s");
      seq = evs.next;
      if (evs.missed || evs.events.length > 0) await refresh();
    } catch (err) {
      seq = null;
      await new Promise((done) => setTimeout(done, 2000));
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("swap-btn").addEventListener("click", () => {
    if (!status) return;
    confirmChange("Swap: prod moves from " + status.active + " to " + status.standby + ". Requests in flight finish where they are.",
      () => change("/v1/swap"));
  });
  $("rollback-btn").addEventListener("click", () => {
    if (!status || !status.previous) return;
    confirmChange("Roll back: prod returns to " + status.previous + ".", () => change("/v1/rollback"));
  });
  $("shift-btn").addEventListener("click", () => {
    const to = $("shift-slot").value;
    const weight = Number($("shift-weight").value);
    if (!to || !Number.isFinite(weight)) return;
    confirmChange("Shift: " + to + " gets " + pct(weight) + " of prod's new requests" +
      (weight >= 100 ? " and becomes the active slot." : weight <= 0 ? ": all of prod returns to the active slot." : "."),
      () => change("/v1/shift", { to, weight }));
  });
  $("promote-btn").addEventListener("click", () => {
    if (!rollout || !rollout.running) return;
    confirmChange("Promote: the rollout to " + rollout.to + " continues with its next step.", () => change("/v1/promote"));
  });
  $("promote-full-btn").addEventListener("click", () => {
    if (!rollout || !rollout.running) return;
    confirmChange("Promote to 100%: " + rollout.to + " takes all of prod now and the rollout ends.", () => change("/v1/promote", { full: true, if_revision: undefined })); // each step moves the revision
  });
  $("abort-btn").addEventListener("click", () => {
    confirmChange("Abort: all of prod goes back to " + (status ? status.active : "the active slot") + " at once" +
      (rollout && rollout.running ? " and the rollout ends." : "."), () => change("/v1/abort", { if_revision: undefined })); // an emergency brake: whatever the revision
  });
  $("shadow-stop-btn").addEventListener("click", () => {
    if (!status || !status.shadow) return;
    confirmChange("Stop the shadow: no more of prod's requests are copied to " + status.shadow.to + ".", () => change("/v1/shadow", undefined, "DELETE"));
  });
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value;
    sessionStorage.setItem("vipswap-token", token);
    $("token-form").hidden = true;
    refresh();
  });
  window.addEventListener("resize", () => renderChart(lastSamples));
  watchEvents();
  setInterval(() => refresh(false), 1000);
});
