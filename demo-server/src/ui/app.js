// SkySaga demo page: plain JavaScript, no build step, no dependencies.
// Talks only to the JSON API of this origin; follows a booking's saga with
// EventSource (server-sent events), never by polling.
"use strict";

const STEPS = [
  ["reserve_seat", "Reserve seats"],
  ["reserve_return_seat", "Reserve return seats"],
  ["redeem_miles", "Pay with miles"],
  ["authorize_payment", "Authorize payment"],
  ["award_miles", "Award miles"],
  ["confirm_booking", "Confirm booking"],
  ["send_itinerary", "Send the itinerary"],
];
const STEP_LABEL = Object.fromEntries(STEPS);
const FAULT_MODES = [
  ["none", "none"],
  ["reject", "reject"],
  ["transient", "transient N times"],
  ["delay", "delay (ms)"],
  ["lose_reply", "lose reply"],
];

// ---------- small helpers ----------

const $ = (id) => document.getElementById(id);

/** Creates an element; text children become text nodes (never HTML). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

function show(node, visible) {
  node.hidden = !visible;
}

function money(m) {
  if (!m) return "";
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: m.currency }).format(m.minor / 100);
  } catch (_) {
    return (m.minor / 100).toFixed(2) + " " + m.currency;
  }
}

function hhmm(t) {
  return (t || "").slice(0, 5);
}

function duration(minutes) {
  return Math.floor(minutes / 60) + "h " + String(minutes % 60).padStart(2, "0") + "m";
}

function isoDate(d) {
  const z = new Date(d.getTime() - d.getTimezoneOffset() * 60000);
  return z.toISOString().slice(0, 10);
}

function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function timeOf(ms) {
  return new Date(ms).toLocaleTimeString();
}

/** An API error carrying the server's message and field errors. */
class ApiFailure extends Error {
  constructor(status, body) {
    super((body && body.error) || "HTTP " + status);
    this.status = status;
    this.fields = (body && body.fields) || [];
  }
}

/** The logged-in session's CSRF token (set by account.js), or null. */
let csrfToken = null;

/** Calls the JSON API; resolves to the parsed body, rejects with ApiFailure.
 * State-changing calls carry the session's CSRF token when logged in. */
async function api(method, path, { body, key, admin } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (key) headers["Idempotency-Key"] = key;
  if (csrfToken && method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken;
  if (admin) headers["Authorization"] = "Bearer " + adminToken();
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiFailure(0, { error: "cannot reach the server: " + e.message });
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = { error: text };
  }
  if (!resp.ok) throw new ApiFailure(resp.status, data);
  return data;
}

/** Shows an error (and its field list) in `box`; marks inputs by field. */
function showError(box, err, fieldInputs) {
  clear(box);
  box.append(el("span", {}, err.message));
  if (err.fields && err.fields.length) {
    box.append(el("ul", {}, err.fields.map((f) => el("li", { "data-field": f.field }, f.field + ": " + f.message))));
    for (const f of err.fields) {
      const input = fieldInputs && fieldInputs(f.field);
      if (input) input.setAttribute("aria-invalid", "true");
    }
  }
  show(box, true);
}

function hideError(box, form) {
  show(box, false);
  clear(box);
  if (form) form.querySelectorAll("[aria-invalid]").forEach((i) => i.removeAttribute("aria-invalid"));
}

// ---------- routing ----------
// Each view's script registers what to do when its view is shown
// (`registerView`); a view is a <section class="view" data-view="name">.
// The routing here knows no view by name, so a new view is a new script
// and a new section, not an edit of this file.

const viewOpeners = {};
let leaveView = null;

/** Runs `open(params, parts)` whenever the view `name` is shown. */
function registerView(name, open) {
  viewOpeners[name] = open;
}

/** Views by `data-view` name: the sections of the page. */
function viewNames() {
  return [...document.querySelectorAll("section.view[data-view]")].map((s) => s.dataset.view);
}

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const parts = path.split("/").filter(Boolean);
  const params = new URLSearchParams(query || "");
  const views = viewNames();
  let view = parts[0] || "search";
  if (view === "booking") view = "saga";
  if (!views.includes(view)) view = "search";
  if (leaveView) {
    leaveView();
    leaveView = null;
  }
  for (const v of views) show($("view-" + v), v === view);
  document.querySelectorAll(".top nav a").forEach((a) => {
    if (a.getAttribute("href") === "#/" + view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  if (viewOpeners[view]) viewOpeners[view](params, parts);
}

window.addEventListener("hashchange", route);
