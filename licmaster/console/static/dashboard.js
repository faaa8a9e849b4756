// licmaster dashboard: one EventSource on this master's console; when it is gone, the other
// masters' consoles it told us about, in turn. No framework, no build step.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
// 14 colours told apart on a white page, solid then dashed: 28 styles, one per family of the
// catalog at most, so no two families of an installation ever share one.
const colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
  "#17becf", "#7f7f7f", "#bcbd22", "#393b79", "#ad494a", "#637939", "#843c39"];
const SHOWN = 100;  // rows of the denial and event lists
let consoles = [location.origin];   // where to look for a master: this one first, then the others
let current = 0;
let source = null;
let history = [];
let lastState = null;
let retryTimer = null;
let skew = 0;  // the master's clock less this browser's, in seconds: the chart's "now" is the master's
let denied = 0;  // denials in the last hour, as the master counts them (a flood is counted, not each listed)

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
  source.addEventListener("history", (e) => { history = JSON.parse(e.data); serverClock(history); chart(); });
  source.addEventListener("sample", (e) => { history.push(JSON.parse(e.data)); history = history.slice(-720); serverClock(history); chart(); });
  source.addEventListener("recent", (e) => recent(JSON.parse(e.data)));
  source.addEventListener("denials", (e) => { const list = JSON.parse(e.data); denied += list.length; denials(list); });
  source.addEventListener("events", (e) => events(JSON.parse(e.data)));
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
  coverBanner(state.standby_cover);
  coverLine(state.standby_cover, state.pools);
  const pools = document.getElementById("pools");
  assignStyles(history);
  // PBX-Standby is never drawn (R-STBY-2: its count enables the standby function): the cover line says what it does.
  pools.replaceChildren(...state.pools.filter((p) => p.family !== "PBX-Standby").map((p) => {
    const share = (n) => p.installed ? Math.min(100, 100 * n / p.installed) : 0;
    const level = fullness(p);
    const pct = p.usable > 0 ? `${Math.floor(100 * p.in_use / p.usable)}%` : (p.installed ? "none usable" : "");
    const row = el("div", { class: "pool" + (level ? " " + level : ""), "data-family": p.family, "data-level": level },
      el("div", { class: "family" }, el("i", { class: "swatch", style: swatch(p.family) }), p.family,
        el("div", { class: "extra", "data-peak": p.peak, "data-usable": p.usable }, `peak ${p.peak} · usable ${p.usable}`)),
      el("div", { class: "track" },
        el("div", { class: "fill" + (level ? " " + level : ""), style: `width:${share(p.in_use)}%` }),
        el("div", { class: "peak", style: `left:calc(${share(p.peak)}% - 1px)`, title: `peak ${p.peak}` })),
      el("div", { class: "count", "data-in-use": p.in_use }, `${p.in_use} / ${p.installed}`),
      el("div", { class: "pct" + (level ? " " + level : ""), title: `in use, of the ${p.usable} usable` }, pct));
    if (p.usable < p.installed) row.title = `${p.installed - p.usable} of ${p.installed} serve none of the PBXs connected (version, binding)`;
    return row;
  }));
  document.querySelector("#terms").textContent = (state.terms || []).map((t) =>
    `${t.count} × ${t.family}${t.version ? " V" + t.version : ""}: ` +
    [t.ssa_until ? `SSA until ${t.ssa_until} (${t.days_left} days)` : "", t.rented ? "rented (iSC)" : ""].filter(Boolean).join(", ")
  ).join(" · ");
  const sites = state.sites || [];
  document.getElementById("sites-section").hidden = sites.length === 0;
  document.querySelector("#sites tbody").replaceChildren(...sites.map((r) => {
    const state_ = r.over ? "over" : (r.max !== null && r.in_use >= r.max ? "at-max" : (r.in_use < r.reserve ? "under-reserve" : ""));
    return el("tr", { "data-site": r.site, "data-family": r.family, class: state_ },
      el("td", {}, r.site), el("td", {}, r.family), el("td", {}, r.in_use), el("td", {}, r.reserve || "–"),
      el("td", {}, r.max ?? "–"), el("td", { title: Object.entries(r.refused_by_code).map(([c, n]) => `${c} ${n}`).join(", ") }, r.refused));
  }));
  // Missing first: absent or cut off (a session without its connection), then gone within the hour, then the connected.
  // Absent: silent for a lease TTL, its leases held (the Absent PBXs panel says until when); cut off: not yet.
  const nodes = document.querySelector("#nodes tbody");
  const session = (n) => el("tr", { "data-node": n.node, class: n.connected ? "connected" : (n.absent ? "absent" : "cut-off") },
    el("td", {}, n.node, ...(n.simulator ? [" ", simBadge()] : [])), el("td", {}, n.role), el("td", {}, n.firmware ?? "–"),
    el("td", {}, n.connected ? "connected" : (n.absent ? "absent" : "cut off")), el("td", {}, n.since ? when(n.since) : "–"), el("td", {}, n.leases),
    el("td", {}, `${n.idle_s} s`));
  const gone = (g) => el("tr", { "data-node": g.node, class: "gone " + g.event },
    el("td", {}, g.node), el("td", {}, g.role ?? "–"), el("td", {}, "–"), el("td", {}, goneText(g)),
    el("td", {}, when(g.at)), el("td", {}, "–"), el("td", {}, "–"));
  nodes.replaceChildren(...state.nodes.filter((n) => !n.connected).map(session), ...(state.gone || []).map(gone),
    ...state.nodes.filter((n) => n.connected).map(session));
  const left = (state.nodes_total ?? state.nodes.length) - state.nodes.length;
  const goneLeft = (state.gone_total ?? 0) - (state.gone || []).length;
  document.querySelector("#nodes-more").textContent = [left > 0
    ? `${left} more not shown (cut off first, then the largest holders are): every node in licmaster status or /api/v1/nodes` : "",
  goneLeft > 0 ? `${goneLeft} more gone within the hour: licmaster journal --event expire` : ""].filter(Boolean).join(" · ");
  refusedBox(state.refused);
  absentPanel(state.absent);
  const masters = document.querySelector("#masters tbody");
  const rows = [el("tr", {}, el("td", {}, `${state.master} (this)`), el("td", {}, state.role), el("td", {}, state.epoch),
    el("td", {}, state.degraded ? "degraded: no in-sync standby, serving alone (its standby is gone)"
      : (state.standbys ? `${state.standbys} in-sync standby following` : "no in-sync standby: serving alone")))];
  for (const p of state.peers || []) {
    rows.push(el("tr", {}, el("td", {}, p.peer), el("td", {}, p.reachable === false ? "unreachable" : (p.role ?? "?")),
      el("td", {}, p.epoch ?? "–"), el("td", {}, p.standby_of ? `follows ${p.standby_of}` : (p.why ?? ""))));
  }
  masters.replaceChildren(...rows);
  const reload = state.last_reload;
  const said = document.querySelector("#reload");
  said.className = reload && !reload.ok ? "note alarm" : "note";
  said.textContent = !reload ? "" : reload.ok
    ? `last reload ${when(reload.at)} by ${reload.by}: ` +
      (Object.entries(reload.changed).map(([f, [a, b]]) => `${f} ${a}→${b}`).join(", ") || "nothing changed") +
      (reload.forced ? " · FORCED: a standby PBX's cover taken away" : "") +
      ((reload.warnings || []).length ? ` · ${reload.warnings.length} warning(s): ${reload.warnings[0].message}` : "")
    : `last reload REFUSED ${when(reload.at)} by ${reload.by}: ${reload.problems.length} problem(s), ` +
      `the set in force stays — ${reload.problems[0] ?? ""}`;
  chart();
  if (state.role === "standby" && consoles.length > 1) {
    // This master serves nobody: show the acting one instead.
    source.close();
    current += 1;
    retryTimer = setTimeout(connect, 100);
  }
}

function coverBanner(cover) {
  // Shown for as long as a standby PBX's takeover would be refused (R-STBY-2/3): a reload that
  // raised the Ports without the Standby licenses, say.
  const banner = document.getElementById("cover-banner");
  banner.hidden = !cover || cover.held;
  banner.dataset.reason = cover ? cover.reason : "";
  if (banner.hidden) { banner.textContent = ""; return; }
  const who = cover.standbys.length ? `standby PBX ${cover.standbys.join(", ")} could not take over` :
    "no standby PBX is connected now, and none could take over";
  banner.textContent = `Standby cover MISSING: ${who} (standby_unlicensed, V${cover.firmware}): ${cover.message}` +
    (cover.rule ? ` (${cover.rule})` : "");
}

function fullness(p) {
  // Against what serves the PBXs connected: red when none is left, amber from 90%.
  if (!p.installed) return "";
  if (p.usable <= 0 || p.in_use >= p.usable) return "full";
  return p.in_use >= 0.9 * p.usable ? "near" : "";
}

function coverLine(cover, pools) {
  // One line in place of a PBX-Standby bar: does a standby PBX's takeover stay licensed (R-STBY-2/3)?
  const line = document.getElementById("cover");
  if (!cover) { line.textContent = ""; return; }
  line.className = "cover " + (!cover.held ? "lost" : cover.reason === "no_standby" ? "none" : "held");
  line.dataset.held = cover.held;
  line.dataset.reason = cover.reason;
  const installed = (family) => (pools.find((p) => p.family === family) || { installed: 0 }).installed;
  const who = cover.standbys.length ? ` · standby PBX ${cover.standbys.join(", ")}` : " · no standby PBX connected";
  line.textContent = cover.reason === "no_standby" ? "Standby cover: none needed (no PBX-Standby installed, no standby PBX connected)"
    : cover.held ? `Standby cover holds: ${installed("PBX-Standby")} Standby for ${installed("PBX-Port")} Port ` +
      `(V${cover.firmware}, ${cover.rule})${who}`
    : `Standby cover MISSING: ${cover.message}${cover.rule ? ` (${cover.rule})` : ""}${who}`;
}

function absentPanel(absent) {
  // Two clocks: a PBX silent for a lease TTL is absent; what it holds stays its own (in use, given
  // to nobody else) until its hold ends, hold_s after its last word. Longest absent first.
  const a = absent || { pbxs: 0, leases: 0, hold_s: 0, shown: [] };
  const summary = document.getElementById("absent-summary");
  summary.className = "absent-summary " + (a.pbxs ? "some" : "none");
  summary.dataset.pbxs = a.pbxs;
  summary.dataset.leases = a.leases;
  const hold = a.hold_s ? ` (hold ${span(a.hold_s)})` : "";
  summary.textContent = a.pbxs
    ? `${count(a.pbxs, "absent PBX", "absent PBXs")} ${a.pbxs === 1 ? "holds" : "hold"} ${count(a.leases, "lease", "leases")}${hold}`
    : `No PBX is absent: every PBX holding licenses was heard within the lease TTL${hold}.`;
  const table = document.getElementById("absent");
  table.hidden = a.shown.length === 0;
  const now = Date.now() / 1000 + skew;
  table.querySelector("tbody").replaceChildren(...a.shown.map((p) => {
    const left = p.back_at - now;
    return el("tr", { "data-node": p.node, "data-leases": p.leases, class: left < 3600 ? "ending" : "" },
      el("td", {}, p.node), el("td", {}, stamp(p.since)), el("td", {}, heldText(p.held)),
      el("td", { title: "its leases go back to the pool then, unless it speaks first" }, `${stamp(p.back_at)} (${inSpan(left)})`));
  }));
  const more = a.pbxs - a.shown.length;
  document.getElementById("absent-more").textContent = more > 0
    ? `${more} more absent, not listed (the longest absent are): every node in licmaster status or /api/v1/nodes` : "";
}

function count(n, one, many) { return `${n} ${n === 1 ? one : many}`; }

function heldText(held) {
  // "port 10, operator 1": by resource, the most first
  return Object.entries(held).sort((x, y) => y[1] - x[1] || x[0].localeCompare(y[0])).map(([r, n]) => `${r} ${n}`).join(", ");
}

function span(seconds) {
  // a configured duration: 72 h, 30 min, 3 s
  if (seconds >= 3600 && seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds >= 60 && seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}

function inSpan(left) {
  // what is left, cut to the minute (never rounded up: 72 h less a few seconds is "in 71 h 59 min")
  if (left <= 0) return "due now";
  if (left < 60) return "in under a minute";
  const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60);
  return h ? `in ${h} h ${m} min` : `in ${m} min`;
}

function stamp(at) {
  // 24 h; with the date when it is not today (a hold ends up to 30 days on)
  const d = new Date(at * 1000), today = new Date((Date.now() / 1000 + skew) * 1000), two = (n) => String(n).padStart(2, "0");
  return d.toDateString() === today.toDateString() ? clock(at) : `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${clock(at)}`;
}

function goneText(g) {
  if (g.event === "expire") return "expired: went silent";
  if (g.event === "takeover") return `failed: ${g.detail} took over`;
  return /^\d+$/.test(g.detail ?? "0") ? "left (bye)" : `left: ${g.detail}`;  // "released by alice": an operator's
}

function simBadge() {
  return el("span", { class: "sim", title: "a session of slave-sim itself (its preflight, auditor or watchers), not a PBX" },
    "simulator's own session");
}

function refusedBox(refused) {
  // The last hour's refusals by node and family, every one counted (the list below shows the newest).
  const cells = refused ? refused.cells : [];
  const table = document.getElementById("refused");
  table.hidden = cells.length === 0;
  const families = [...new Set(cells.map(([, f]) => f))].sort((a, b) => (a === "") - (b === "") || a.localeCompare(b));
  const byNode = {};
  for (const [node, family, n] of cells) (byNode[node] ??= { total: 0 })[family] = n;
  for (const [node, , n] of cells) byNode[node].total += n;
  const nodes = Object.keys(byNode).sort((a, b) => byNode[b].total - byNode[a].total || a.localeCompare(b));
  table.querySelector("thead").replaceChildren(el("tr", {}, el("th", {}, "node"),
    ...families.map((f) => el("th", { "data-family": f, title: f ? f : "refusals about no family: not the master, grace, bad requests" }, f || "other")),
    el("th", {}, "all")));
  table.querySelector("tbody").replaceChildren(...nodes.map((node) => el("tr", { "data-node": node }, el("td", {}, node),
    ...families.map((f) => el("td", { "data-family": f }, byNode[node][f] ?? "")), el("td", {}, byNode[node].total))));
  const more = refused ? refused.nodes - nodes.length : 0;
  table.querySelector("caption").textContent = more > 0 ? `the ${nodes.length} nodes refused most; ${more} more` : "";
}

function serverClock(points) {
  if (points.length) skew = points[points.length - 1].at - Date.now() / 1000;
}

function clock(at, seconds = true) {
  // 24 h, whatever the browser's locale: 14:05:09
  const d = new Date(at * 1000), two = (n) => String(n).padStart(2, "0");
  return `${two(d.getHours())}:${two(d.getMinutes())}` + (seconds ? `:${two(d.getSeconds())}` : "");
}

function when(at) { return clock(at); }

function recent(data) {
  // What happened before the page opened: replaces the lists (a reconnect brings it again).
  document.getElementById("denials").replaceChildren();
  document.getElementById("events").replaceChildren();
  denied = data.denied;
  denials(data.denials);
  events(data.events);
}

function denials(list) {
  const ol = document.getElementById("denials");
  for (const d of list) {
    ol.prepend(el("li", {}, `${when(d.at)} `, el("span", { class: "code" }, d.code), ` ${d.rule ?? ""} ${d.node}: ${d.message}`));
  }
  while (ol.children.length > SHOWN) ol.lastChild.remove();
  document.getElementById("denied").textContent = `last hour: ${denied}` +
    (denied > ol.children.length ? `, the newest ${ol.children.length} listed` : "");
}

function events(list) {
  const ol = document.getElementById("events");
  for (const e of list) {
    ol.prepend(el("li", { "data-event": e.event, class: e.event + (e.simulator ? " simulator" : "") }, `${when(e.at)} `,
      el("span", { class: "code" }, e.event), ...(e.simulator ? [" ", simBadge()] : []), ` ${e.text}`));
  }
  while (ol.children.length > SHOWN) ol.lastChild.remove();
}

let styleOf = {};  // family -> index into the 28 styles, in the order of the installation's pools

function assignStyles(points) {
  const families = [...new Set([...(lastState ? lastState.pools.map((p) => p.family) : []),
    ...points.flatMap((h) => Object.keys(h.in_use))])].sort();
  styleOf = Object.fromEntries(families.map((f, i) => [f, i]));
  return families;
}

function swatch(family) {
  const i = styleOf[family] ?? 0;
  const c = colors[i % colors.length];
  return i < colors.length ? `background:${c}` : `background:repeating-linear-gradient(90deg, ${c} 0 3px, transparent 3px 5px)`;
}

const SVG = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceStep(max, ticks) {
  const raw = max / ticks, mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
}

function chart() {
  const svg = document.getElementById("chart");
  const legend = document.getElementById("legend");
  svg.replaceChildren();
  legend.replaceChildren();
  const now = lastState ? [{ at: Date.now() / 1000 + skew, in_use: Object.fromEntries(lastState.pools.map((p) => [p.family, p.in_use])) }] : [];
  const latest = Math.max(...history.map((h) => h.at), ...now.map((h) => h.at));
  const points = [...history, ...now].filter((h) => h.at >= latest - 3600 && h.at <= latest);  // the last hour, whatever came
  const families = assignStyles(points);
  if (points.length < 2) return;
  const W = 640, H = 200, left = 44, right = 8, top = 8, bottom = 22;
  const t1 = latest, t0 = Math.min(Math.min(...points.map((h) => h.at)), t1 - 30);
  const top_count = Math.max(1, ...points.flatMap((h) => Object.values(h.in_use)));
  const step = niceStep(top_count, 4), ymax = Math.ceil(top_count / step) * step;
  const x = (t) => left + (W - left - right) * (t - t0) / (t1 - t0);
  const y = (n) => H - bottom - (H - top - bottom) * n / ymax;
  const axes = svgEl("g", { class: "axes" });
  for (let n = 0; n <= ymax; n += step) {  // count axis: gridlines and labels
    axes.append(svgEl("line", { x1: left, x2: W - right, y1: y(n), y2: y(n), class: "grid" }));
    axes.append(svgEl("text", { x: left - 6, y: y(n) + 4, "text-anchor": "end", class: "tick count-tick" }, n));
  }
  const span = t1 - t0;
  const every = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600].find((s) => span / s <= 6) ?? Math.ceil(span / 6);  // ≤ ~6 labels
  for (let t = Math.ceil(t0 / every) * every; t <= t1; t += every) {
    axes.append(svgEl("line", { x1: x(t), x2: x(t), y1: H - bottom, y2: H - bottom + 4, class: "axis" }));
    axes.append(svgEl("text", { x: x(t), y: H - 6, "text-anchor": "middle", class: "tick time-tick" },
      clock(t, every < 60)));
  }
  axes.append(svgEl("line", { x1: left, x2: W - right, y1: H - bottom, y2: H - bottom, class: "axis" }));
  axes.append(svgEl("line", { x1: left, x2: left, y1: top, y2: H - bottom, class: "axis" }));
  svg.append(axes);
  for (const family of families) {
    if (!points.some((h) => h.in_use[family])) continue;  // never in use within the hour: no line, no legend
    const i = styleOf[family];
    const line = svgEl("polyline", {
      points: points.map((h) => `${x(h.at).toFixed(1)},${y(h.in_use[family] || 0).toFixed(1)}`).join(" "),
      fill: "none", stroke: colors[i % colors.length], "stroke-width": 2, "data-family": family,
    });
    if (i >= colors.length) line.setAttribute("stroke-dasharray", "6 3");
    svg.append(line);
    legend.append(el("span", { "data-family": family }, el("i", { class: "swatch", style: swatch(family) }), family));
  }
}

connect();
// "in 71 h 59 min" counts down between states (a state is sent only when something changed)
setInterval(() => { if (lastState) absentPanel(lastState.absent); }, 15000);
