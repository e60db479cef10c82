// Release Guardian web UI: shared helpers. Everything from the server is put in the page as text
// (textContent, never innerHTML), so a service name, a log line or an alert annotation cannot run.
"use strict";
const RG = {
  csrf: document.body.dataset.csrf || "",
  role: document.body.dataset.role || "",
  el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k === "href") e.setAttribute("href", String(v));
      else e.setAttribute(k, String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  },
  async getJSON(url) {
    const r = await fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}});
    if (r.status === 401) { location.href = "/ui/login?next=" + encodeURIComponent(location.pathname + location.search); throw new Error("401"); }
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  },
  async act(rolloutId, action) {
    const r = await fetch("/ui/rollouts/" + encodeURIComponent(rolloutId) + "/" + encodeURIComponent(action), {
      method: "POST", credentials: "same-origin", headers: {"X-CSRF-Token": RG.csrf}});
    let body = {};
    try { body = await r.json(); } catch (e) { body = {error: "HTTP " + r.status}; }
    return {ok: r.ok, status: r.status, body};
  },
  duration(s) {
    if (s === null || s === undefined) return "";
    s = Math.round(s);
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  },
  num(x) {
    if (x === null || x === undefined || Number.isNaN(x)) return "—";
    if (typeof x !== "number") return String(x);
    if (Number.isInteger(x)) return x.toLocaleString("en");
    return Math.abs(x) >= 100 ? x.toFixed(0) : x.toPrecision(4);
  },
  time(t) { return t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z" : ""; },
  every(ms, fn) {
    const live = document.getElementById("live");
    const run = async () => {
      try { await fn(); if (live) { live.textContent = "live"; live.className = "live"; } }
      catch (e) { if (live) { live.textContent = "reconnecting…"; live.className = "live stale"; } }
      setTimeout(run, ms);
    };
    run();
  },
};
