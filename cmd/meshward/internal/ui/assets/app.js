// meshward status page. Reads the JSON endpoints under api/ and renders
// them with DOM calls only (textContent, never innerHTML: paths, hosts and
// NACK messages come from the network). Charts are plain SVG.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = { allow: "#16a34a", deny: "#dc2626", error: "#d97706", dry_run: "#2563eb" };
const TYPES = ["listener", "cluster", "route", "secret"];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text != null) e.textContent = String(text);
  return e;
}

function ago(t, now) {
  if (!t) return "—";
  const s = Math.round((now - new Date(t)) / 1000);
  return s >= 0 ? dur(s) + " ago" : "in " + dur(-s);
}

function dur(s) {
  if (s < 90) return s + "s";
  if (s < 600) return Math.floor(s / 60) + "m" + (s % 60 ? (s % 60) + "s" : "");
  if (s < 5400) return Math.round(s / 60) + "m";
  if (s < 172800) return (s / 3600).toFixed(1) + "h";
  return Math.round(s / 86400) + "d";
}

function short(v, n) { n = n || 12; return v && v.length > n ? v.slice(0, n) + "…" : (v || "—"); }

async function get(path) {
  const r = await fetch("api/" + path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function panel(id, enabled) {
  const p = document.getElementById(id);
  p.querySelector(".off").hidden = enabled;
  for (const t of p.querySelectorAll("table, .chart, .legend")) t.hidden = !enabled;
}

function fill(tbody, rows, cols, empty) {
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: cols }, empty))]));
}

function renderNodes(d) {
  panel("nodes-panel", d.enabled);
  const now = new Date(d.now);
  fill(document.getElementById("nodes"), d.nodes.map(n => {
    const cells = TYPES.map(t => {
      const want = (n.versions || {})[t], got = (n.acked || {})[t];
      const td = el("td", { class: "mono ver", title: "snapshot " + (want || "—") + "\nACKed " + (got ? got.version + " at " + got.at : "never (not subscribed, or rejected)") });
      if (!want && !got) { td.append("—"); return td; }
      td.append(got ? short(got.version, 8) : el("span", { class: "muted" }, "—"));
      if (want && got && got.version !== want) td.append(el("div", { class: "pending" }, "snapshot " + short(want, 8)));
      const nk = ((d.nacks || {})[n.node] || {})[t];
      if (nk) td.append(el("div", { class: "bad", title: nk.message }, "NACK " + short(nk.version, 8) + ", " + ago(nk.at, now)));
      return td;
    });
    const nack = n.lastNack
      ? el("td", { class: "bad nack", title: n.lastNack.message }, n.lastNack.type + " " + short(n.lastNack.version, 8) + ", " + ago(n.lastNack.at, now) + ": " + n.lastNack.message.slice(0, 120))
      : el("td", { class: "ok" }, "none");
    return el("tr", {}, el("td", {}, n.node), el("td", {}, n.streams), el("td", { title: n.connectedSince }, ago(n.connectedSince, now)), ...cells, nack);
  }), 8, d.enabled ? "no Envoy connected" : "—");
}

function lifeBar(c, now) {
  const W = 260, H = 16, s = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
  if (!c.notAfter) { s.append(svg("text", { x: 2, y: 12, "font-size": 11, fill: "#6b7280" }, "not issued yet")); return s; }
  const t0 = new Date(c.issued || c.notBefore), t1 = new Date(c.notAfter), span = Math.max(1, t1 - t0);
  const x = t => Math.min(W, Math.max(0, (t - t0) / span * W));
  const color = c.lowLife ? "#dc2626" : c.lifeLeft < 0.5 ? "#d97706" : "#16a34a";
  s.append(svg("rect", { x: 0, y: 3, width: W, height: H - 6, rx: 3, fill: "#e5e7eb" }));
  s.append(svg("rect", { x: x(now), y: 3, width: Math.max(0, W - x(now)), height: H - 6, rx: 3, fill: color }));
  if (c.nextIssue) {
    const nx = x(new Date(c.nextIssue));
    s.append(svg("line", { x1: nx, x2: nx, y1: 0, y2: H, stroke: "#111827", "stroke-width": 2 }));
  }
  s.append(svg("title", {}, `issued ${c.issued}\nexpires ${c.notAfter}\nnext issuance ${c.nextIssue || "—"}`));
  return s;
}

function renderCerts(d) {
  panel("certs-panel", d.enabled);
  const now = new Date(d.now);
  fill(document.getElementById("certs"), d.certificates.map(c => {
    const left = c.notAfter ? Math.round(c.lifeLeft * 100) + " %" : "—";
    const issuance = c.failures ? el("td", { class: "bad", title: c.lastError || "" }, c.failures + " failed: " + (c.lastError || "").slice(0, 80)) : el("td", { class: "ok" }, "ok");
    return el("tr", { class: c.lowLife ? "low" : "" },
      el("td", { class: "mono" }, c.spiffeID), el("td", {}, lifeBar(c, now)),
      el("td", { title: c.notAfter || "" }, c.notAfter ? ago(c.notAfter, now) : "—"),
      el("td", { class: c.lowLife ? "bad nowrap" : "nowrap" }, left), issuance);
  }), 5, d.enabled ? "no certificate registered" : "—");
}

function renderPolicy(d) {
  panel("policy-panel", d.enabled);
  document.getElementById("revision").textContent = d.enabled ? (d.revision || "none loaded: every Check is denied") : "—";
  const now = new Date();
  fill(document.getElementById("reloads"), d.reloads.map(r => el("tr", {},
    el("td", { title: r.at }, ago(r.at, now)),
    el("td", { class: r.result === "failure" ? "bad" : "ok" }, r.result),
    el("td", { class: "mono" }, short(r.revision)),
    el("td", { class: "mono" }, r.error || ""))), 4, d.enabled ? "no reload yet" : "—");
}

function renderRates(d) {
  panel("decisions-panel", d.enabled);
  const legend = document.getElementById("rate-legend");
  legend.replaceChildren(...d.results.map(r => el("span", {}, el("span", { class: "swatch " + r }), r)));
  const W = 640, H = 180, L = 44, B = 22, T = 8, R = 8;
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "decisions per second" });
  // The axis spans the samples kept: the whole window, or less while the
  // process is younger than it.
  const now = new Date(d.now);
  const first = d.points.length ? new Date(d.points[0].time) - d.intervalSeconds * 1000 : now - d.windowSeconds * 1000;
  const from = new Date(Math.max(now - d.windowSeconds * 1000, first)), span = Math.max(1, (now - from) / 1000);
  document.getElementById("window").textContent = !d.enabled ? "" : span < d.windowSeconds - d.intervalSeconds
    ? `(the last ${dur(Math.round(span))}: kept up to ${dur(d.windowSeconds)}, ${d.intervalSeconds}s steps)`
    : `(last ${dur(d.windowSeconds)}, ${d.intervalSeconds}s steps)`;
  const x = t => L + (new Date(t) - from) / (now - from) * (W - L - R);
  let top = 0;
  for (const p of d.points) for (const r of d.results) top = Math.max(top, p.perSecond[r] || 0);
  top = top > 0 ? niceCeil(top) : 1;
  const y = v => H - B - v / top * (H - B - T);
  for (const v of [0, top / 2, top]) {
    s.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e5e7eb" }));
    s.append(svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", "font-size": 10, fill: "#6b7280" }, fmt(v)));
  }
  for (const f of [1, 0.75, 0.5, 0.25, 0]) {
    const t = new Date(now - f * span * 1000);
    s.append(svg("text", { x: x(t), y: H - 6, "text-anchor": f === 1 ? "start" : f === 0 ? "end" : "middle", "font-size": 10, fill: "#6b7280" }, f ? "-" + dur(Math.round(f * span)) : "now"));
  }
  if (d.points.length === 0) {
    s.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "font-size": 12, fill: "#6b7280" }, "no samples yet"));
  }
  for (const r of d.results) {
    const pts = d.points.map(p => `${x(p.time).toFixed(1)},${y(p.perSecond[r] || 0).toFixed(1)}`);
    if (pts.length === 1) pts.unshift(`${(x(d.points[0].time) - 3).toFixed(1)},${y(d.points[0].perSecond[r] || 0).toFixed(1)}`);
    if (pts.length) s.append(svg("polyline", { points: pts.join(" "), fill: "none", stroke: COLORS[r] || "#111827", "stroke-width": 1.5, class: "rate-" + r }));
  }
  document.getElementById("rate-chart").replaceChildren(s);
  renderReasons(d);
}

function renderReasons(d) {
  document.getElementById("reasons-since").textContent = d.since ? "(since " + ago(d.since, new Date(d.now)) + ")" : "";
  const rows = d.denyReasons.slice(0, 12), W = 640, RH = 20, L = 180;
  const s = svg("svg", { viewBox: `0 0 ${W} ${Math.max(1, rows.length) * RH + 4}`, role: "img", "aria-label": "deny reasons" });
  if (!rows.length) s.append(svg("text", { x: 4, y: 15, "font-size": 12, fill: "#6b7280" }, d.enabled ? "no denies in the window" : "—"));
  const most = rows.length ? rows[0].count : 1;
  rows.forEach((r, i) => {
    const w = Math.max(2, r.count / most * (W - L - 60));
    s.append(svg("text", { x: L - 6, y: i * RH + 15, "text-anchor": "end", "font-size": 12, fill: "#1d2330" }, r.reason || "(none)"));
    s.append(svg("rect", { x: L, y: i * RH + 4, width: w, height: RH - 6, rx: 2, fill: "#dc2626", class: "reason-bar" }));
    s.append(svg("text", { x: L + w + 6, y: i * RH + 15, "font-size": 12, fill: "#1d2330" }, fmt(r.count)));
  });
  document.getElementById("reason-chart").replaceChildren(s);
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v))), m = v / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

function fmt(v) { return v >= 100 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(v >= 10 ? 1 : 2); }

// idTail shortens a decision id (process prefix, counter) to its counter,
// which is what tells the rows apart; the whole id is the cell's title.
function idTail(id) {
  const i = (id || "").lastIndexOf("-");
  return i > 0 ? "…" + id.slice(i) : short(id);
}

function renderDenies(d) {
  panel("denies-panel", d.enabled);
  document.getElementById("denies-cap").textContent = d.enabled ? `(newest first, up to ${d.capacity}; redacted as in the audit log)` : "";
  const now = new Date();
  fill(document.getElementById("denies"), d.denies.map(x => el("tr", { class: "deny" },
    el("td", { title: x.time }, ago(x.time, now)),
    el("td", { class: "bad" }, x.status || ""),
    el("td", {}, x.reason + (x.decision === "error" ? " (error)" : "") + (x.dryRun ? " (dry run)" : "")),
    el("td", { class: "mono" }, x.principal || (x.kind === "authn_failure" ? "(no verified identity)" : "")),
    el("td", { class: "mono" }, [x.method, (x.host || "") + (x.path || "")].filter(Boolean).join(" ")),
    el("td", {}, x.rule || ""),
    el("td", { class: "mono", title: x.decisionID || "" }, idTail(x.decisionID)))), 7, d.enabled ? "no deny yet" : "—");
}

function renderQuarantine(d) {
  panel("quarantine-panel", d.enabled);
  document.getElementById("quarantine-file").textContent = d.enabled ? "(every Check from or to them is denied; state in " + d.file + ")" : "";
  const now = new Date();
  const alert = document.getElementById("quarantine-error");
  alert.hidden = !d.error;
  alert.replaceChildren(...(d.error ? [
    el("strong", {}, "The quarantine state file " + d.file + " does not load" + (d.errorSince ? " (since " + ago(d.errorSince, now) + ")" : "") + ": "),
    el("code", {}, d.error),
    el("p", {}, "serve keeps enforcing the last state that loaded, shown below: no agent is released or quarantined until the file loads again. " +
      "meshward quarantine / release and the admin API refuse to edit it, and serve would not start with it: fix or restore the file by hand " +
      "(removing it releases every agent)."),
  ] : []));
  fill(document.getElementById("quarantined"), d.quarantined.map(q => el("tr", { class: "quarantined" },
    el("td", {}, q.agents.length ? q.agents.join(", ") : "(no agent)"),
    el("td", { class: "mono" }, q.spiffeID),
    el("td", {}, q.reason || "—"),
    el("td", {}, q.by),
    el("td", { title: q.at }, ago(q.at, now)))), 5, d.enabled ? "no agent quarantined" : "—");
}

async function refresh() {
  const parts = [["nodes", renderNodes], ["certificates", renderCerts], ["policy", renderPolicy], ["decisions", renderRates], ["denies", renderDenies], ["quarantine", renderQuarantine]];
  const errors = [];
  await Promise.all(parts.map(async ([path, render]) => {
    try { render(await get(path)); } catch (e) { errors.push(e.message); }
  }));
  const u = document.getElementById("updated");
  u.textContent = errors.length ? "error: " + errors.join("; ") : "updated " + new Date().toLocaleTimeString();
  u.className = errors.length ? "bad" : "muted";
  document.body.dataset.loaded = "true";
}

refresh();
setInterval(refresh, 5000);
