// The peer dashboard: polls /api/dashboard every second and redraws.
// Read-only: it sends nothing but GETs.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let updates = 0;

function el(tag, attrs, ...kids) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}

function short(id) { return id ? id.slice(-8) : ""; }

function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function stateColor(s) {
  return { alive: "#2e7d32", suspect: "#ef6c00" }[s] || "#9e9e9e";
}

function drawRing(d) {
  const svg = $("ring");
  svg.replaceChildren();
  const R = 130;
  svg.append(el("svg:circle", { cx: 0, cy: 0, r: R, fill: "none", stroke: "#dde", "stroke-width": 10 }));
  const n = d.ring.length;
  d.ring.forEach((p, i) => {
    const prev = d.ring[(i - 1 + n) % n];
    let a0 = prev.pos * 2 * Math.PI - Math.PI / 2;
    let a1 = p.pos * 2 * Math.PI - Math.PI / 2;
    if (n === 1) { a0 = -Math.PI / 2; a1 = a0 + 2 * Math.PI - 1e-3; }
    if (a1 <= a0) a1 += 2 * Math.PI;
    const large = a1 - a0 > Math.PI ? 1 : 0;
    const path = `M ${R * Math.cos(a0)} ${R * Math.sin(a0)} A ${R} ${R} 0 ${large} 1 ${R * Math.cos(a1)} ${R * Math.sin(a1)}`;
    const hue = (i * 360 / Math.max(n, 1)) | 0;
    svg.append(el("svg:path", { class: "arc", d: path, fill: "none", stroke: `hsl(${hue} 55% 60%)`, "stroke-width": 10 },
      el("svg:title", {}, `${p.id}: owns (${prev.chord_id.slice(0, 8)}…, ${p.chord_id.slice(0, 8)}…]`)));
  });
  d.ring.forEach((p) => {
    const a = p.pos * 2 * Math.PI - Math.PI / 2;
    const x = R * Math.cos(a), y = R * Math.sin(a);
    const g = el("svg:g", { class: "peer", "data-id": p.id, "data-state": p.state });
    g.append(el("svg:circle", { cx: x, cy: y, r: p.self ? 8 : 6, fill: stateColor(p.state) },
      el("svg:title", {}, `${p.id} (${p.state}${p.self ? ", this peer" : ""})`)));
    const lx = (R + 22) * Math.cos(a), ly = (R + 22) * Math.sin(a);
    g.append(el("svg:text", { x: lx, y: ly + 3, "text-anchor": "middle", "font-weight": p.self ? "bold" : null }, p.short));
    svg.append(g);
  });
  $("ring-count").textContent = `${n} peer${n === 1 ? "" : "s"}`;
}

function heat(rtt, loss) {
  if (loss >= 1) return "#b71c1c";
  if (rtt < 0) return "#eceff1";
  if (loss > 0.02) return `hsl(0 70% ${85 - 35 * Math.min(loss * 4, 1)}%)`;
  // Green at 0 ms to yellow near 100 ms and beyond, on a log scale.
  const t = Math.min(Math.log10(1 + rtt) / 2, 1);
  return `hsl(${120 - 80 * t} 60% ${80 - 20 * t}%)`;
}

function drawMatrix(d) {
  const m = d.matrix, t = $("matrix");
  t.replaceChildren();
  const head = el("tr", {}, el("th", {}, "from \\ to"));
  for (const p of m.peers || []) head.append(el("th", { title: p }, short(p)));
  t.append(head);
  (m.peers || []).forEach((from, i) => {
    const tr = el("tr", { class: "row" }, el("th", { title: from }, short(from)));
    m.peers.forEach((to, j) => {
      if (i === j) { tr.append(el("td", { class: "cell self" }, "—")); return; }
      const rtt = m.rtt_ms[i][j], loss = m.loss[i][j];
      const txt = loss >= 1 ? "down" : rtt < 0 ? "" : rtt < 10 ? rtt.toFixed(1) : rtt.toFixed(0);
      tr.append(el("td", { class: "cell", style: `background:${heat(rtt, loss)}`,
        title: `${short(from)} → ${short(to)}: ${rtt < 0 ? "not measured" : rtt + " ms"}, loss ${(loss * 100).toFixed(0)}%` }, txt));
    });
    t.append(tr);
  });
  const ul = $("paths");
  ul.replaceChildren();
  if (!d.paths.length) ul.append(el("li", {}, "none: every route is direct"));
  for (const p of d.paths) ul.append(el("li", {}, `to ${short(p.to)} via ${short(p.via)} (${p.rtt_ms.toFixed(1)} ms)`));
}

function drawSwarms(d) {
  const box = $("swarms");
  box.replaceChildren();
  if (!d.swarms.length) box.append(el("p", { class: "legend" }, "no swarms"));
  for (const s of d.swarms) {
    const pct = s.pieces ? (100 * s.have / s.pieces) : 0;
    const div = el("div", { class: "swarm", "data-infohash": s.infohash, "data-have": s.have, "data-pieces": s.pieces });
    div.append(el("div", {}, el("b", {}, s.name || s.infohash), ` ${s.have}/${s.pieces} pieces (${pct.toFixed(1)}%)` +
      `, ↓ ${bytes(s.download_rate || 0)}/s ↑ ${bytes(s.upload_rate || 0)}/s` + (s.complete ? ", complete" : "") +
      (s.error ? `, error: ${s.error}` : "")));
    div.append(el("progress", { max: Math.max(s.pieces, 1), value: s.have }));
    const peers = (s.connections || []).map((c) => `${short(c.peer)}${c.have_all ? "*" : ""}`).join(" ");
    div.append(el("div", { class: "peers" }, `${s.peers} peer${s.peers === 1 ? "" : "s"}${peers ? ": " + peers : ""}`));
    box.append(div);
  }
}

function drawJobs(d) {
  const box = $("jobs");
  box.replaceChildren();
  if (!d.jobs.length) box.append(el("p", { class: "legend" }, "no distribute jobs"));
  for (const j of d.jobs) {
    const t = el("table", {}, el("tr", {}, el("th", {}, "target"), el("th", {}, "state"), el("th", {}, "progress"), el("th", {}, "rate")));
    for (const x of j.targets) {
      t.append(el("tr", { class: "target", "data-state": x.state }, el("td", { title: x.peer }, short(x.peer)), el("td", {}, x.state),
        el("td", {}, `${x.percent.toFixed(1)}%`), el("td", {}, `${bytes(x.rate || 0)}/s`)));
    }
    box.append(el("div", { class: "job", "data-id": j.id }, el("h3", {}, `${j.name} (${j.state})`), t));
  }
}

function drawNAT(d) {
  const t = $("nat");
  t.replaceChildren(el("tr", {}, el("th", {}, "peer"), el("th", {}, "role"), el("th", {}, "mapping"), el("th", {}, "reachable")));
  for (const p of d.ring) {
    t.append(el("tr", {}, el("td", { title: p.id }, short(p.id) + (p.self ? " (this peer)" : "")), el("td", {}, p.role || "?"),
      el("td", {}, p.mapping || "?"), el("td", {}, p.reachable ? "yes" : "no")));
  }
}

async function refresh() {
  try {
    const r = await fetch("api/dashboard", { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
    const d = await r.json();
    $("self").textContent = d.id;
    $("group").textContent = d.group + " group";
    $("group").className = "tag " + d.group;
    drawRing(d);
    drawMatrix(d);
    drawSwarms(d);
    drawJobs(d);
    drawNAT(d);
    updates++;
    const u = $("updated");
    if (updates === 1) u.dataset.firstPaintMs = performance.now().toFixed(1); // since navigation started
    u.dataset.updates = updates;
    u.textContent = "updated " + new Date().toLocaleTimeString();
    $("error").hidden = true;
  } catch (e) {
    $("error").hidden = false;
    $("error").textContent = "cannot reach the peer: " + e.message;
  }
}

refresh();
setInterval(refresh, 1000);
