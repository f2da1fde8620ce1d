// Shared helpers of the dashboard pages (no framework: fetch + Plotly.js from the plotly package).
"use strict";

function navbar(active) {
  const links = [["/", "Runs"], ["/live", "Live driving"], ["/laps", "Lap analysis"]];
  const nav = links.map(([href, text]) =>
    `<a href="${href}" class="${href === active ? "active" : ""}">${text}</a>`).join("");
  document.body.insertAdjacentHTML("afterbegin",
    `<header><div class="brand">kart<span>sim</span> dashboard</div><nav>${nav}</nav></header>`);
}

// GET/POST JSON; resolves {ok, status, data} and never throws (network problems become a message).
async function api(url, body) {
  try {
    const opts = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"},
                                            body: JSON.stringify(body)};
    const r = await fetch(url, opts);
    let data = null;
    try { data = await r.json(); } catch (e) { data = {error: `the dashboard answered ${r.status} without JSON`}; }
    return {ok: r.ok, status: r.status, data};
  } catch (e) {
    return {ok: false, status: 0, data: {error: "cannot reach the dashboard server (stopped?)"}};
  }
}

function esc(s) {
  return String(s === null || s === undefined ? "" : s).replace(/[&<>"']/g,
    c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function fmtInt(n) { return n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US"); }
function fmtNum(n, d) { return n === null || n === undefined || !isFinite(n) ? "–" : Number(n).toFixed(d); }
function fmtDur(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : (m ? `${m}m${String(sec).padStart(2, "0")}s` : `${sec}s`);
}
function fmtAgo(t) {
  if (!t) return "–";
  return fmtDur(Date.now() / 1000 - t) + " ago";
}
function badge(state) {
  const cls = String(state || "unknown").replace(/[^a-z]/g, "");
  return `<span class="badge ${cls}">${esc(state || "unknown")}</span>`;
}
function message(el, kind, text) {
  el.innerHTML = text ? `<div class="msg ${kind}">${esc(text)}</div>` : "";
}
const PLOT_CONFIG = {displaylogo: false, responsive: true};
const CURVE_CONFIG = {displaylogo: false, responsive: true, displayModeBar: false};
