// licmaster dashboard: one EventSource on this master's console; when it is gone, the other
// masters' consoles it told us about, in turn. No framework, no build step.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const colors = ["#2f6fde", "#d14343", "#2aa876", "#e8a33d", "#8e5bd6", "#1aa3b8", "#6b7280"];
let consoles = [location.origin];   // where to look for a master: this one first, then the others
let current = 0;
let source = null;
let history = [];
let lastState = null;
let retryTimer = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function connect() {
  const base = consoles[current % consoles.length];
  const url = base + "/api/v1/live" + (token ? "?token=" + encodeURIComponent(token) : "");
  source = new EventSource(url);
  source.addEventListener("open", () => { document.getElementById("link").className = "link"; });
  source.addEventListener("state", (e) => render(JSON.parse(e.data), base));
  source.addEventListener("history", (e) => { history = JSON.parse(e.data); chart(); });
  source.addEventListener("sample", (e) => { history.push(JSON.parse(e.data)); history = history.slice(-720); chart(); });
  source.addEventListener("denials", (e) => denials(JSON.parse(e.data)));
  source.addEventListener("error", () => {
    // Gone (a restart, a failover): try the next console we know, then come back round.
    document.getElementById("link").className = "link down";
    source.close();
    current += 1;
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, current % consoles.length === 0 ? 1000 : 100);
  });
}

function render(state, base) {
  lastState = state;
  for (const url of state.consoles || []) if (!consoles.includes(url)) consoles.push(url);
  const grace = state.grace_ms ? ` · grace ${(state.grace_ms / 1000).toFixed(1)} s` : "";
  document.getElementById("master").textContent =
    `${state.master} · ${state.role} · epoch ${state.epoch}${grace} · ${state.listen || base}`;
  document.getElementById("master").dataset.role = state.role;
  const pools = document.getElementById("pools");
  pools.replaceChildren(...state.pools.map((p) => {
    const pct = p.installed ? Math.min(100, 100 * p.in_use / p.installed) : 0;
    const row = el("div", { class: "pool", "data-family": p.family },
      el("div", {}, p.family),
      el("div", { class: "track" }, el("div", { class: "fill" + (p.in_use >= p.installed ? " full" : ""), style: `width:${pct}%` })),
      el("div", { class: "count", "data-in-use": p.in_use }, `${p.in_use} / ${p.installed}`));
    row.title = `peak ${p.peak}, usable ${p.usable}`;
    return row;
  }));
  document.querySelector("#terms").textContent = (state.terms || []).map((t) =>
    `${t.count} × ${t.family}${t.version ? " V" + t.version : ""}: ` +
    [t.ssa_until ? `SSA until ${t.ssa_until} (${t.days_left} days)` : "", t.rented ? "rented (iSC)" : ""].filter(Boolean).join(", ")
  ).join(" · ");
  const nodes = document.querySelector("#nodes tbody");
  nodes.replaceChildren(...state.nodes.map((n) => el("tr", {},
    el("td", {}, n.node), el("td", {}, n.role), el("td", {}, n.firmware ?? "–"),
    el("td", {}, n.connected ? "yes" : "no"), el("td", {}, n.leases), el("td", {}, `${n.idle_s} s`))));
  const left = (state.nodes_total ?? state.nodes.length) - state.nodes.length;
  document.querySelector("#nodes-more").textContent = left > 0
    ? `${left} more not shown (cut off first, then the largest holders are): every node in licmaster status or /api/v1/nodes` : "";
  const masters = document.querySelector("#masters tbody");
  const rows = [el("tr", {}, el("td", {}, `${state.master} (this)`), el("td", {}, state.role), el("td", {}, state.epoch),
    el("td", {}, state.degraded ? "degraded: its standby is gone" : (state.standbys ? `${state.standbys} standby following` : "no standby")))];
  for (const p of state.peers || []) {
    rows.push(el("tr", {}, el("td", {}, p.peer), el("td", {}, p.reachable === false ? "unreachable" : (p.role ?? "?")),
      el("td", {}, p.epoch ?? "–"), el("td", {}, p.standby_of ? `follows ${p.standby_of}` : (p.why ?? ""))));
  }
  masters.replaceChildren(...rows);
  const reload = state.last_reload;
  const said = document.querySelector("#reload");
  said.className = reload && !reload.ok ? "note alarm" : "note";
  said.textContent = !reload ? "" : reload.ok
    ? `last reload ${new Date(reload.at * 1000).toLocaleTimeString()} by ${reload.by}: ` +
      (Object.entries(reload.changed).map(([f, [a, b]]) => `${f} ${a}→${b}`).join(", ") || "nothing changed")
    : `last reload REFUSED ${new Date(reload.at * 1000).toLocaleTimeString()} by ${reload.by}: ${reload.problems.length} problem(s), ` +
      `the set in force stays — ${reload.problems[0] ?? ""}`;
  chart();
  if (state.role === "standby" && consoles.length > 1) {
    // This master serves nobody: show the acting one instead.
    source.close();
    current += 1;
    retryTimer = setTimeout(connect, 100);
  }
}

function denials(list) {
  const ol = document.getElementById("denials");
  for (const d of list) {
    const when = new Date(d.at * 1000).toLocaleTimeString();
    ol.prepend(el("li", {}, `${when} `, el("span", { class: "code" }, d.code), ` ${d.rule ?? ""} ${d.node}: ${d.message}`));
  }
  while (ol.children.length > 100) ol.lastChild.remove();
}

function chart() {
  const svg = document.getElementById("chart");
  const legend = document.getElementById("legend");
  svg.replaceChildren();
  legend.replaceChildren();
  const now = lastState ? [{ at: Date.now() / 1000, in_use: Object.fromEntries(lastState.pools.map((p) => [p.family, p.in_use])) }] : [];
  const points = [...history, ...now];
  if (points.length < 2) return;
  const families = [...new Set(points.flatMap((h) => Object.keys(h.in_use)))].sort();
  const t0 = points[0].at, t1 = points[points.length - 1].at;
  const max = Math.max(1, ...points.flatMap((h) => Object.values(h.in_use)));
  families.forEach((family, i) => {
    const line_points = points.map((h) => {
      const x = 600 * (h.at - t0) / Math.max(1, t1 - t0);
      const y = 155 - 150 * (h.in_use[family] || 0) / max;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    }).join(" ");
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", line_points);
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", colors[i % colors.length]);
    line.setAttribute("stroke-width", "2");
    svg.append(line);
    legend.append(el("span", {}, el("i", { style: `background:${colors[i % colors.length]}` }), family));
  });
}

connect();
