// SkySaga demo page: plain JavaScript, no build step, no dependencies.
// Talks only to the JSON API of this origin; follows a booking's saga with
// EventSource (server-sent events), never by polling.
"use strict";

const STEPS = [
  ["reserve_seat", "Reserve seats"],
  ["redeem_miles", "Pay with miles"],
  ["authorize_payment", "Authorize payment"],
  ["award_miles", "Award miles"],
  ["confirm_booking", "Confirm booking"],
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

/** Calls the JSON API; resolves to the parsed body, rejects with ApiFailure. */
async function api(method, path, { body, key, admin } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (key) headers["Idempotency-Key"] = key;
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

const views = ["search", "book", "saga", "manage", "loyalty", "admin"];
let leaveView = null;

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const parts = path.split("/").filter(Boolean);
  const params = new URLSearchParams(query || "");
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
  if (view === "book") openBooking(params);
  if (view === "saga" && parts[1]) openSaga(decodeURIComponent(parts[1]));
  if (view === "admin") openAdmin();
}

window.addEventListener("hashchange", route);

// ---------- search ----------

let airportTimer = null;
let lastSearch = null;

function fillAirports(q) {
  clearTimeout(airportTimer);
  airportTimer = setTimeout(async () => {
    try {
      const data = await api("GET", "/api/airports?limit=10&q=" + encodeURIComponent(q));
      const list = clear($("airports-list"));
      for (const a of data.airports) {
        list.append(el("option", { value: a.code }, a.city + " \u2014 " + a.name + " (" + a.code + ")"));
      }
    } catch (_) {
      /* autocomplete is a convenience */
    }
  }, 120);
}

for (const id of ["search-from", "search-to"]) {
  $(id).addEventListener("input", (e) => {
    if (e.target.value.trim()) fillAirports(e.target.value.trim());
  });
}

/** A typed airport: a code as is, else the best autocomplete match. */
async function resolveAirport(text) {
  const t = text.trim();
  if (/^[A-Za-z]{3}$/.test(t)) return t.toUpperCase();
  if (!t) return "";
  const data = await api("GET", "/api/airports?limit=1&q=" + encodeURIComponent(t));
  return data.airports.length ? data.airports[0].code : t;
}

async function runSearch() {
  const box = $("search-error");
  hideError(box, $("search-form"));
  const from = await resolveAirport($("search-from").value);
  const to = await resolveAirport($("search-to").value);
  $("search-from").value = from;
  $("search-to").value = to;
  const p = new URLSearchParams({
    from,
    to,
    date: $("search-date").value,
    cabin: $("search-cabin").value,
    passengers: $("search-passengers").value,
    sort: $("filter-sort").value,
  });
  const ret = $("search-return").value;
  if (ret) p.set("return_date", ret);
  const max = $("filter-max-price").value;
  if (max !== "") p.set("max_price", String(Math.round(Number(max) * 100)));
  if ($("filter-depart-after").value) p.set("depart_after", $("filter-depart-after").value);
  if ($("filter-depart-before").value) p.set("depart_before", $("filter-depart-before").value);
  if ($("filter-airline").value) p.set("airline", $("filter-airline").value);
  const results = clear($("search-results"));
  results.append(el("p", { class: "hint" }, "Searching\u2026"));
  $("search-submit").disabled = true;
  try {
    const data = await api("GET", "/api/flights/search?" + p.toString());
    lastSearch = data;
    show($("search-filters"), true);
    renderResults(data);
  } catch (err) {
    clear(results);
    const inputs = {
      from: $("search-from"), to: $("search-to"), date: $("search-date"), return_date: $("search-return"),
      cabin: $("search-cabin"), passengers: $("search-passengers"), depart_after: $("filter-depart-after"),
      depart_before: $("filter-depart-before"), max_price: $("filter-max-price"),
    };
    showError(box, err, (f) => inputs[f]);
  } finally {
    $("search-submit").disabled = false;
  }
}

function updateAirlines(offers) {
  const sel = $("filter-airline");
  const current = sel.value;
  const names = new Map();
  for (const o of offers) names.set(o.flight.airline_code, o.flight.airline);
  if (current && !names.has(current)) names.set(current, current);
  clear(sel).append(el("option", { value: "" }, "Any"));
  for (const [code, name] of [...names].sort((a, b) => a[1].localeCompare(b[1]))) {
    sel.append(el("option", { value: code, selected: code === current }, name));
  }
}

function renderResults(data) {
  const box = clear($("search-results"));
  const q = data.query;
  const legs = data.results
    ? [["Flights " + q.from + " \u2192 " + q.to + " on " + q.date, data.results, "outbound"]]
    : [
        ["Outbound " + q.from + " \u2192 " + q.to + " on " + q.date, data.outbound, "outbound"],
        ["Return " + q.to + " \u2192 " + q.from + " on " + q.return_date, data.inbound, "inbound"],
      ];
  updateAirlines(legs.flatMap((l) => l[1]));
  for (const [title, offers, leg] of legs) {
    box.append(el("h2", {}, title));
    if (!offers.length) {
      box.append(el("p", { class: "hint", "data-testid": "no-results" }, "No flights match. Try another date or fewer filters."));
      continue;
    }
    const rows = offers.map((o) =>
      el("tr", { "data-testid": "result-row", "data-flight-id": o.flight.id, "data-leg": leg },
        el("td", { "data-label": "Flight" }, o.flight.airline, el("span", { class: "sub" }, o.flight.flight_no)),
        el("td", { "data-label": "Departs" }, hhmm(o.flight.departure), el("span", { class: "sub" }, o.flight.origin + " \u00b7 " + o.date)),
        el("td", { "data-label": "Arrives" }, hhmm(o.flight.arrival), el("span", { class: "sub" }, o.flight.destination + " \u00b7 " + o.arrival_date)),
        el("td", { "data-label": "Duration" }, duration(o.flight.duration_minutes)),
        el("td", { class: "num", "data-label": "Seats left", "data-testid": "seats-left" }, String(o.seats_left)),
        el("td", { class: "num", "data-label": "Fare / passenger", "data-testid": "fare" }, money(o.fare)),
        el("td", { class: "num", "data-label": "Total", "data-testid": "total" }, o.price ? money(o.price.total) : ""),
        el("td", { class: "book" },
          el("button", {
            type: "button", class: "small", "data-testid": "book-button", "data-flight-id": o.flight.id,
            onclick: () => {
              location.hash = "#/book?" + new URLSearchParams({
                flight: o.flight.id, date: o.date, cabin: o.cabin, passengers: String(q.passengers),
              }).toString();
            },
          }, "Book"))));
    box.append(el("div", { class: "results-table" },
      el("table", { "data-testid": "results-table-" + leg },
        el("thead", {}, el("tr", {},
          el("th", {}, "Flight"), el("th", {}, "Departs"), el("th", {}, "Arrives"), el("th", {}, "Duration"),
          el("th", { class: "num" }, "Seats left"), el("th", { class: "num" }, "Fare / passenger"),
          el("th", { class: "num" }, "Total"), el("th", {}, ""))),
        el("tbody", {}, rows))));
  }
}

$("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  runSearch();
});
for (const id of ["filter-sort", "filter-max-price", "filter-depart-after", "filter-depart-before", "filter-airline"]) {
  $(id).addEventListener("change", () => {
    if (lastSearch) runSearch();
  });
}

// ---------- booking form ----------

let bookingKey = newKey();
let bookingTarget = null;
let testCards = null;

function faultEditor(container, prefix, initial) {
  clear(container);
  for (const [step, label] of STEPS) {
    const f = (initial && initial[step]) || { mode: "none" };
    const mode = el("select", { id: prefix + "-" + step + "-mode", "data-testid": prefix + "-" + step + "-mode", "aria-label": label + " fault" },
      FAULT_MODES.map(([v, text]) => el("option", { value: v, selected: v === f.mode }, text)));
    const value = el("input", {
      id: prefix + "-" + step + "-value", "data-testid": prefix + "-" + step + "-value", type: "number", min: "0",
      "aria-label": label + " fault parameter", value: f.times !== undefined ? f.times : f.ms !== undefined ? f.ms : "",
    });
    const sync = () => {
      const needs = mode.value === "transient" || mode.value === "delay";
      value.disabled = !needs;
      value.placeholder = mode.value === "transient" ? "times" : mode.value === "delay" ? "ms" : "";
      if (needs && value.value === "") value.value = mode.value === "transient" ? "2" : "1500";
    };
    mode.addEventListener("change", sync);
    sync();
    container.append(el("div", { class: "fault", "data-step": step }, el("span", { class: "name" }, label), mode, value));
  }
}

function readFaults(prefix, onlySet) {
  const out = {};
  for (const [step] of STEPS) {
    const mode = $(prefix + "-" + step + "-mode").value;
    const n = Number($(prefix + "-" + step + "-value").value || 0);
    if (mode === "none" && onlySet) continue;
    if (mode === "transient") out[step] = { mode, times: n };
    else if (mode === "delay") out[step] = { mode, ms: n };
    else out[step] = { mode };
  }
  return out;
}

function passengerRows(n) {
  const list = clear($("passenger-list"));
  for (let i = 0; i < n; i++) {
    list.append(el("div", { class: "passenger", "data-testid": "passenger-" + i },
      el("span", { class: "n" }, String(i + 1)),
      el("label", {}, "First name", el("input", { id: "pax-" + i + "-first", "data-testid": "pax-" + i + "-first", required: true, autocomplete: "given-name" })),
      el("label", {}, "Last name", el("input", { id: "pax-" + i + "-last", "data-testid": "pax-" + i + "-last", required: true, autocomplete: "family-name" }))));
  }
}

async function loadTestCards() {
  if (testCards) return;
  const sel = $("card-test");
  try {
    testCards = (await api("GET", "/api/test-cards")).cards;
  } catch (_) {
    testCards = [];
  }
  clear(sel).append(el("option", { value: "" }, "Type my own card"));
  for (const c of testCards) sel.append(el("option", { value: c.number }, c.number + " \u2014 " + c.brand + ", " + c.outcome));
  if (testCards.length) {
    sel.value = testCards[0].number;
    $("card-number").value = testCards[0].number;
  }
}

$("card-test").addEventListener("change", (e) => {
  if (e.target.value) $("card-number").value = e.target.value;
});

async function openBooking(params) {
  const flight = params.get("flight");
  const date = params.get("date");
  const cabin = params.get("cabin") || "economy";
  const passengers = Math.min(9, Math.max(1, Number(params.get("passengers") || 1)));
  hideError($("booking-error"), $("booking-form"));
  const summary = clear($("booking-summary"));
  if (!flight || !date) {
    summary.append(el("p", {}, "Choose a flight first. ", el("a", { href: "#/search" }, "Search flights")));
    return;
  }
  bookingTarget = { flight, date, cabin, passengers };
  bookingKey = newKey();
  passengerRows(passengers);
  faultEditor($("fault-switches"), "fault", {});
  if (!$("card-exp-month").value) $("card-exp-month").value = "12";
  if (!$("card-exp-year").value) $("card-exp-year").value = String(new Date().getFullYear() + 3);
  if (!$("card-cvc").value) $("card-cvc").value = "123";
  loadTestCards();
  summary.append(el("p", { class: "hint" }, "Loading flight\u2026"));
  try {
    const f = await api("GET", "/api/flights/" + encodeURIComponent(flight) + "?date=" + encodeURIComponent(date));
    const fare = f.flight[cabin];
    clear(summary).append(
      el("h2", {}, f.flight.airline + " " + f.flight.flight_no + ": " + f.flight.origin + " \u2192 " + f.flight.destination),
      el("dl", { class: "kv" },
        el("dt", {}, "Departs"), el("dd", {}, date + " " + hhmm(f.flight.departure) + " from " + (f.origin ? f.origin.name : f.flight.origin)),
        el("dt", {}, "Arrives"), el("dd", {}, (f.arrival_date || "") + " " + hhmm(f.flight.arrival) + " at " + (f.destination ? f.destination.name : f.flight.destination)),
        el("dt", {}, "Cabin"), el("dd", {}, cabin),
        el("dt", {}, "Passengers"), el("dd", {}, String(passengers)),
        el("dt", {}, "Fare per passenger"), el("dd", {}, fare ? money(fare) : "not sold"),
        el("dt", {}, "Seats left"), el("dd", { "data-testid": "summary-seats" }, f.seats_left && f.seats_left[cabin] !== undefined ? String(f.seats_left[cabin]) : "?")));
  } catch (err) {
    clear(summary).append(el("p", { class: "error" }, err.message));
  }
}

function bookingFieldInput(field) {
  const direct = {
    email: "booking-email", loyalty_id: "booking-loyalty", "card.number": "card-number", "card.expiry": "card-exp-month",
    "card.cvc": "card-cvc", "card.holder_name": "card-holder",
  };
  if (direct[field]) return $(direct[field]);
  const m = /^passengers\[(\d+)\]\.(first|last)_name$/.exec(field);
  if (m) return $("pax-" + m[1] + "-" + m[2]);
  const f = /^faults\.(\w+)$/.exec(field);
  if (f) return $("fault-" + f[1] + "-value");
  return null;
}

$("booking-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!bookingTarget) return;
  const box = $("booking-error");
  hideError(box, $("booking-form"));
  const passengers = [];
  for (let i = 0; i < bookingTarget.passengers; i++) {
    passengers.push({ first_name: $("pax-" + i + "-first").value, last_name: $("pax-" + i + "-last").value });
  }
  const holder = $("card-holder").value || (passengers[0].first_name + " " + passengers[0].last_name).trim();
  const body = {
    flight_id: bookingTarget.flight,
    date: bookingTarget.date,
    cabin: bookingTarget.cabin,
    passengers,
    email: $("booking-email").value,
    loyalty_id: $("booking-loyalty").value.trim() || null,
    card: {
      number: $("card-number").value,
      exp_month: Number($("card-exp-month").value),
      exp_year: Number($("card-exp-year").value),
      cvc: $("card-cvc").value,
      holder_name: holder,
    },
    faults: readFaults("fault", true),
  };
  const button = $("booking-submit");
  button.disabled = true;
  try {
    const accepted = await api("POST", "/api/bookings", { body, key: bookingKey });
    bookingKey = newKey();
    location.hash = "#/booking/" + encodeURIComponent(accepted.booking_id);
  } catch (err) {
    if (err.fields.some((f) => f.field === "Idempotency-Key")) {
      // The key started a booking with other details: the next try is a new booking.
      bookingKey = newKey();
    }
    showError(box, err, bookingFieldInput);
  } finally {
    button.disabled = false;
  }
});

// ---------- live saga view ----------

let source = null;

function stepRow(step) {
  return document.querySelector('#saga-steps li[data-step="' + step + '"]');
}

function setStep(step, state, detail) {
  let li = stepRow(step);
  if (!li) {
    li = el("li", { class: "step", "data-step": step, "data-testid": "step-" + step, "data-state": "pending" },
      el("span", { class: "dot", "aria-hidden": "true" }),
      el("span", { class: "name" }, STEP_LABEL[step] || step),
      el("span", { class: "state", "data-testid": "step-state-" + step }, "pending"),
      el("span", { class: "detail", "data-testid": "step-detail-" + step }));
    $("saga-steps").append(li);
  }
  li.dataset.state = state;
  li.querySelector(".state").textContent = state.replace("_", " ");
  if (detail !== undefined) li.querySelector(".detail").textContent = detail;
}

function setStatus(status) {
  const badge = $("saga-status");
  badge.textContent = status;
  badge.dataset.status = status;
}

function logEvent(e) {
  const parts = [timeOf(e.at_ms), "#" + e.seq, e.event];
  if (e.step) parts.push(e.step);
  if (e.attempt) parts.push("attempt " + e.attempt);
  if (e.duration_us !== undefined) parts.push((e.duration_us / 1000).toFixed(1) + " ms");
  if (e.error) parts.push(e.error);
  if (e.status) parts.push(e.status);
  if (e.reason) parts.push(e.reason);
  $("saga-log").append(el("li", { "data-event": e.event }, parts.join(" \u00b7 ")));
}

function applyEvent(e) {
  logEvent(e);
  switch (e.event) {
    case "step_started":
      setStep(e.step, "running", e.attempt > 1 ? "attempt " + e.attempt : "");
      break;
    case "step_succeeded":
      setStep(e.step, "succeeded", "done in " + (e.duration_us / 1000).toFixed(1) + " ms" + (e.attempt > 1 ? " (attempt " + e.attempt + ")" : ""));
      break;
    case "step_failed":
      if (e.retry_at_ms) setStep(e.step, "retrying", "attempt " + e.attempt + " failed: " + e.error + "; retrying at " + timeOf(e.retry_at_ms));
      else setStep(e.step, e.kind === "rejected" ? "rejected" : "failed", e.error);
      break;
    case "compensation_started":
      setStep(e.step, "compensating", "undoing" + (e.attempt > 1 ? " (attempt " + e.attempt + ")" : ""));
      setStatus("compensating");
      break;
    case "step_compensated":
      setStep(e.step, "compensated", "undone");
      break;
    case "compensation_failed":
      setStep(e.step, "compensation_failed", e.error + (e.retry_at_ms ? "; retrying at " + timeOf(e.retry_at_ms) : ""));
      break;
    case "cancel_requested":
      setStatus("cancelling");
      break;
    case "saga_finished":
      break;
  }
}

async function showOutcome(id) {
  try {
    const b = await api("GET", "/api/bookings/" + encodeURIComponent(id));
    setStatus(b.status);
    renderOverview(b);
    if (b.status === "confirmed") {
      $("booking-ref").textContent = b.booking_ref || "";
      show($("booking-confirmed"), true);
      $("saga-title").textContent = "Booking confirmed";
    } else if (b.status !== "pending") {
      $("saga-failure").textContent =
        (b.status === "stuck" ? "Undoing the booking is stuck and waits for an operator: " : "Not booked; everything was undone. Reason: ") +
        (b.failure_reason || "unknown");
      show($("saga-failure"), true);
      $("saga-title").textContent = b.status === "stuck" ? "Booking needs attention" : "Booking not completed";
    }
  } catch (err) {
    $("saga-failure").textContent = err.message;
    show($("saga-failure"), true);
  }
}

function renderOverview(b) {
  const f = b.flight;
  clear($("booking-overview")).append(el("dl", { class: "kv" },
    el("dt", {}, "Flight"), el("dd", {}, f ? f.airline + " " + f.flight_no + ", " + f.origin + " \u2192 " + f.destination + ", " + b.date + " " + f.departure : b.flight_id + " on " + b.date),
    el("dt", {}, "Passengers"), el("dd", {}, b.passengers.map((p) => p.first_name + " " + p.last_name).join(", ")),
    el("dt", {}, "Cabin"), el("dd", {}, b.cabin),
    el("dt", {}, "Total"), el("dd", { "data-testid": "booking-total" }, money(b.total) + " (card " + b.card.brand + " \u2022\u2022\u2022\u2022 " + b.card.last4 + ")"),
    b.miles_awarded ? [el("dt", {}, "Miles"), el("dd", {}, String(b.miles_awarded))] : null));
}

async function openSaga(id) {
  if (source) source.close();
  $("saga-id").textContent = id;
  $("saga-title").textContent = "Booking in progress";
  setStatus("pending");
  clear($("saga-steps"));
  clear($("saga-log"));
  clear($("booking-overview"));
  show($("booking-confirmed"), false);
  show($("saga-failure"), false);
  $("booking-ref").textContent = "";
  for (const [step] of STEPS) setStep(step, "pending", "");
  try {
    renderOverview(await api("GET", "/api/bookings/" + encodeURIComponent(id)));
  } catch (err) {
    $("saga-failure").textContent = err.status === 404 ? "No booking with this id." : err.message;
    show($("saga-failure"), true);
    return;
  }
  const es = new EventSource("/api/sagas/" + encodeURIComponent(id) + "/events");
  source = es;
  const kinds = ["saga_started", "step_started", "step_succeeded", "step_failed", "compensation_started",
    "step_compensated", "compensation_failed", "cancel_requested", "resumed", "operator_retry", "saga_finished"];
  for (const kind of kinds) {
    es.addEventListener(kind, (msg) => {
      const e = JSON.parse(msg.data);
      applyEvent(e);
      if (e.event === "saga_finished") {
        es.close();
        if (source === es) source = null;
        showOutcome(id);
      }
    });
  }
  leaveView = () => {
    es.close();
    if (source === es) source = null;
  };
}

// ---------- manage booking ----------

$("lookup-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const box = $("lookup-error");
  hideError(box, $("lookup-form"));
  const out = clear($("lookup-result"));
  const p = new URLSearchParams({ reference: $("lookup-reference").value.trim(), last_name: $("lookup-last-name").value.trim() });
  try {
    const r = await api("GET", "/api/bookings/lookup?" + p.toString());
    const b = r.booking;
    const f = r.flight;
    out.append(el("div", { class: "card", "data-testid": "lookup-booking" },
      el("h2", {}, "Booking ", el("span", { "data-testid": "lookup-ref" }, b.reference), " ",
        el("span", { class: "badge", "data-status": b.status === "confirmed" ? "confirmed" : "compensated" }, b.status)),
      el("dl", { class: "kv" },
        el("dt", {}, "Flight"), el("dd", {}, f ? f.airline + " " + f.flight_no + ", " + f.origin + " \u2192 " + f.destination : b.flight_id),
        el("dt", {}, "Date"), el("dd", {}, b.date + (f ? " " + f.departure + ", arrives " + f.arrival_date + " " + f.arrival : "")),
        el("dt", {}, "Cabin"), el("dd", {}, b.cabin),
        el("dt", {}, "Passengers"), el("dd", {}, b.passengers.map((x) => x.first_name + " " + x.last_name).join(", ")),
        el("dt", {}, "Paid"), el("dd", {}, money(b.total)),
        el("dt", {}, "Contact"), el("dd", {}, b.email),
        b.miles ? [el("dt", {}, "Miles"), el("dd", {}, String(b.miles) + " to account " + b.loyalty_id)] : null),
      el("p", {}, el("a", { href: "#/booking/" + encodeURIComponent(r.booking_id) }, "See how it was booked")),
      b.status === "confirmed" ? el("p", {}, el("button", { type: "button", class: "secondary", "data-testid": "cancel-booking",
        onclick: (ev) => startCancellation(ev.target, b.reference, $("lookup-last-name").value.trim()) }, "Cancel this booking")) : null,
      el("div", { "data-testid": "cancellation-progress" })));
  } catch (err) {
    showError(box, err, (f) => ({ reference: $("lookup-reference"), last_name: $("lookup-last-name") })[f]);
  }
});

/** Starts the cancellation saga and follows it live (server-sent events). */
async function startCancellation(button, reference, lastName) {
  button.disabled = true;
  const out = clear(button.closest(".card").querySelector("[data-testid=cancellation-progress]"));
  try {
    const r = await api("POST", "/api/cancellations", { body: { reference, last_name: lastName } });
    const log = el("ul", { class: "sub" });
    out.append(el("p", {}, "Cancelling\u2026"), log);
    const es = new EventSource(r.events_url);
    const follow = (m) => {
      const ev = JSON.parse(m.data);
      if (ev.step) log.append(el("li", {}, ev.step + ": " + ev.event.replace(/_/g, " ")));
      if (ev.event === "saga_finished") {
        es.close();
        api("GET", r.status_url).then((c) => {
          clear(out).append(el("p", { "data-testid": "cancellation-result", "data-status": c.status },
            c.status === "cancelled" ? "Cancelled. Refunded " + money(c.refund) + (c.fee.minor ? " (fee " + money(c.fee) + ")" : "") + "." : "Not cancelled: " + (c.failure_reason || c.status)));
        });
      }
    };
    for (const kind of ["step_started", "step_succeeded", "step_failed", "step_compensated", "saga_finished"]) es.addEventListener(kind, follow);
  } catch (err) {
    out.append(el("p", { class: "error" }, err.message || String(err)));
    button.disabled = false;
  }
}

// ---------- loyalty ----------

$("loyalty-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const box = $("loyalty-error");
  hideError(box, $("loyalty-form"));
  const out = clear($("loyalty-result"));
  const id = $("loyalty-number").value.trim();
  try {
    const r = await api("GET", "/api/loyalty/" + encodeURIComponent(id || "-") + "?last_name=" + encodeURIComponent($("loyalty-last-name").value.trim()));
    renderLoyalty(out, r.account, r.history);
  } catch (err) {
    showError(box, err, (f) => ({ last_name: $("loyalty-last-name") })[f]);
  }
});

// The page's CSP (style-src 'self') blocks style attributes; a width set
// through the CSSOM is not an inline style and is allowed.
function progressFill(pct) {
  const fill = el("div", { class: "fill" });
  fill.style.width = pct + "%";
  return fill;
}

function renderLoyalty(out, a, history) {
  const next = a.next_tier;
  const pct = next ? Math.min(100, Math.round((100 * a.qualifying_miles) / (a.qualifying_miles + next.miles_needed))) : 100;
  out.append(el("div", { class: "card", "data-testid": "loyalty-account" },
    el("h2", {}, a.first_name + " " + a.last_name + " ", el("span", { class: "badge", "data-testid": "loyalty-tier" }, a.tier_name)),
    el("dl", { class: "kv" },
      el("dt", {}, "Account"), el("dd", {}, a.id),
      el("dt", {}, "Miles to spend"), el("dd", { "data-testid": "loyalty-balance" }, a.balance.toLocaleString()),
      el("dt", {}, "Qualifying miles"), el("dd", {}, a.qualifying_miles.toLocaleString()),
      el("dt", {}, "Earning"), el("dd", {}, "\u00d7" + a.earn_multiplier),
      el("dt", {}, "Email"), el("dd", {}, a.email)),
    el("div", { class: "progress", role: "progressbar", "aria-valuenow": String(pct), "aria-valuemin": "0", "aria-valuemax": "100", "data-testid": "loyalty-progress" },
      progressFill(pct)),
    el("p", { class: "hint" }, next ? next.miles_needed.toLocaleString() + " qualifying miles to " + next.name : "Top tier reached"),
    history && history.length
      ? el("table", { "data-testid": "loyalty-history" },
          el("thead", {}, el("tr", {}, el("th", {}, "Date"), el("th", {}, "What"), el("th", { class: "num" }, "Miles"), el("th", {}, "State"))),
          el("tbody", {}, history.map((h) => el("tr", {},
            el("td", {}, new Date(h.created_at).toLocaleString()),
            el("td", {}, h.kind.award ? "Flight paid " + money(h.kind.award.amount) : "Redemption"),
            el("td", { class: "num" }, (h.kind.award ? "+" : "\u2212") + h.miles.toLocaleString()),
            el("td", {}, h.state)))))
      : el("p", { class: "hint" }, "No miles yet.")));
}

let enrollKey = newKey();
$("enroll-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const box = $("enroll-error");
  hideError(box, $("enroll-form"));
  const out = clear($("enroll-result"));
  const body = {
    first_name: $("enroll-first-name").value,
    last_name: $("enroll-last-name").value,
    email: $("enroll-email").value,
  };
  try {
    const r = await api("POST", "/api/loyalty", { body, key: enrollKey });
    enrollKey = newKey();
    out.append(el("p", { class: "success", "data-testid": "enroll-success" },
      "Welcome! Your account number is ", el("strong", { "data-testid": "enroll-account-id" }, r.account.id),
      ". Use it with your last name to see your miles."));
    $("loyalty-number").value = r.account.id;
    $("loyalty-last-name").value = r.account.last_name;
  } catch (err) {
    if (err.status === 422 && err.fields.some((f) => f.field === "Idempotency-Key")) enrollKey = newKey();
    showError(box, err, (f) => ({ first_name: $("enroll-first-name"), last_name: $("enroll-last-name"), email: $("enroll-email") })[f]);
  }
});

// ---------- admin ----------

let adminStream = null;
let adminRefreshTimer = null;

function adminToken() {
  return sessionStorage.getItem("adminToken") || "";
}

function adminFail(err) {
  if (err.status === 401) {
    showError($("admin-error"), new ApiFailure(401, { error: "The admin token was refused. Check it and try again." }));
    show($("admin-panel"), false);
  } else {
    showError($("admin-error"), err);
  }
}

async function openAdmin() {
  $("admin-token").value = adminToken();
  hideError($("admin-error"));
  if (!adminToken()) {
    show($("admin-panel"), false);
    return;
  }
  try {
    await Promise.all([loadSagas(), loadFaults()]);
    show($("admin-panel"), true);
    if ($("admin-live").checked) startAdminStream();
  } catch (err) {
    adminFail(err);
  }
  leaveView = stopAdminStream;
}

async function loadCancellations() {
  const data = await api("GET", "/api/admin/cancellations", { admin: true });
  const box = clear($("admin-cancellations"));
  if (!data.cancellations.length) return box.append(el("p", { class: "hint" }, "None."));
  box.append(el("table", { "data-testid": "admin-cancellations-table" },
    el("thead", {}, el("tr", {}, el("th", {}, "Booking"), el("th", {}, "Status"), el("th", {}, "Refund"), el("th", {}, "Fee"), el("th", {}, "Asked"))),
    el("tbody", {}, data.cancellations.map((c) => el("tr", { "data-testid": "admin-cancellation-row", "data-status": c.status },
      el("td", {}, c.reference), el("td", {}, el("span", { class: "badge", "data-status": c.saga_status }, c.status)),
      el("td", {}, money(c.refund)), el("td", {}, money(c.fee)), el("td", {}, new Date(c.requested_at).toLocaleString()))))));
}

const PAGE_SIZE = 50;
// Cursors of the pages shown so far: [null] is the newest page.
let adminCursors = [null];

function sagaQuery(cursor) {
  const p = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if ($("admin-status").value) p.set("status", $("admin-status").value);
  if ($("admin-definition").value) p.set("definition", $("admin-definition").value);
  const age = $("admin-age").value;
  if (age) {
    const [k, v] = age.split("=");
    p.set(k, v);
  }
  if (cursor) p.set("cursor", cursor);
  return "/api/admin/sagas?" + p.toString();
}

async function loadSagas(page) {
  loadCancellations().catch(() => {});
  loadOverview().catch(() => {});
  if (page === undefined || page === 0) adminCursors = [null];
  const index = page || 0;
  const data = await api("GET", sagaQuery(adminCursors[index]), { admin: true });
  adminCursors.length = index + 1;
  if (data.next_cursor) adminCursors.push(data.next_cursor);
  $("admin-older").disabled = !data.next_cursor;
  $("admin-older").onclick = () => loadSagas(index + 1).catch(adminFail);
  $("admin-first").disabled = index === 0;
  $("admin-page").textContent = "Page " + (index + 1) + (data.partial ? " (stopped early: many sagas read; Older goes on)" : "");
  $("admin-total").textContent = (data.total !== null && data.total !== undefined ? data.total + " saga(s)" : "Filtered") +
    ", newest first, " + PAGE_SIZE + " a page" +
    (data.unregistered.length ? "; " + data.unregistered.length + " with an unregistered definition" : "");
  const box = clear($("admin-sagas"));
  if (!data.sagas.length) {
    box.append(el("p", { class: "hint" }, "None."));
    return;
  }
  box.append(sagaTable(data.sagas, "admin-sagas-table", "admin-saga-row"));
}

function sagaTable(sagas, testid, rowid) {
  return el("table", { "data-testid": testid, class: "saga-table" },
    el("thead", {}, el("tr", {}, el("th", {}, "Saga"), el("th", {}, "Status"), el("th", {}, "Steps"), el("th", {}, "Updated"), el("th", {}, "Why"), el("th", {}, ""))),
    el("tbody", {}, sagas.map((s) => el("tr", { "data-testid": rowid, "data-saga-id": s.id, "data-status": s.status },
      el("td", {}, el("a", { href: "#/booking/" + encodeURIComponent(s.id) }, s.id), el("span", { class: "sub" }, s.definition + (s.booking_ref ? " \u00b7 ref " + s.booking_ref : ""))),
      el("td", {}, el("span", { class: "badge", "data-status": s.status }, s.status)),
      el("td", {}, s.steps.map((st) => el("span", { class: "sub" }, st.name + ": " + st.state + (st.attempts > 1 ? " \u00d7" + st.attempts : "")))),
      el("td", {}, new Date(s.updated_at_ms).toLocaleString()),
      el("td", {}, s.failure || ""),
      el("td", {},
        s.status === "stuck" ? el("button", { type: "button", class: "small", "data-testid": "admin-retry", onclick: () => adminAction(s.id, "retry") }, "Retry") : null,
        s.status === "running" ? el("button", { type: "button", class: "small secondary", "data-testid": "admin-cancel", onclick: () => adminAction(s.id, "cancel") }, "Cancel") : null)))));
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

// A line per series over the buckets, drawn as SVG (no library; the
// colours come from the style sheet, the page's CSP allows no inline style).
function rateChart(rates) {
  const buckets = rates.buckets || [];
  const w = 600, h = 120, pad = 4;
  const per = (b, k) => b[k] / rates.bucket_secs;
  const max = Math.max(0.1, ...buckets.flatMap((b) => [per(b, "started"), per(b, "completed"), per(b, "compensated")]));
  const x = (i) => pad + (buckets.length > 1 ? (i * (w - 2 * pad)) / (buckets.length - 1) : 0);
  const y = (v) => h - pad - (v * (h - 2 * pad)) / max;
  const chart = svg("svg", { viewBox: "0 0 " + w + " " + h, preserveAspectRatio: "none", class: "chart", role: "img", "data-testid": "admin-rate-chart",
    "aria-label": "Sagas per second started, completed and compensated over the last minutes; peak " + max.toFixed(2) + "/s" });
  chart.append(svg("line", { x1: pad, y1: h - pad, x2: w - pad, y2: h - pad, class: "axis", "vector-effect": "non-scaling-stroke" }));
  for (const k of ["started", "completed", "compensated"]) {
    const points = buckets.map((b, i) => x(i).toFixed(1) + "," + y(per(b, k)).toFixed(1)).join(" ");
    chart.append(svg("polyline", { points, class: "series " + k, "data-series": k, "vector-effect": "non-scaling-stroke" }));
  }
  return el("div", {}, chart, el("span", { class: "peak", "data-testid": "admin-chart-peak" }, "top of the chart: " + max.toFixed(2) + " sagas/s"));
}

async function loadOverview() {
  const o = await api("GET", "/api/admin/overview", { admin: true });
  const counts = clear($("admin-counts"));
  // Stuck first: what needs an operator.
  for (const { status, count: n } of o.counts) {
    counts.append(el("div", { class: "count", "data-status": status, "data-testid": "admin-count-" + status },
      el("span", { class: "n" }, String(n)), el("span", { class: "badge", "data-status": status }, status)));
  }
  const stuck = clear($("admin-stuck"));
  if (o.stuck.length) {
    stuck.append(el("h3", {}, "Stuck: needs an operator"), sagaTable(o.stuck, "admin-stuck-table", "admin-stuck-row"));
  }
  clear($("admin-chart")).append(rateChart(o.rates));
  $("admin-overview-note").textContent = o.retention_days ? "Finished sagas are kept " + o.retention_days + " days" : "Finished sagas are kept forever";
}

async function adminAction(id, action) {
  try {
    const body = action === "cancel" ? { reason: "cancelled by an operator from the admin page" } : undefined;
    await api("POST", "/api/admin/sagas/" + encodeURIComponent(id) + "/" + action, { admin: true, body });
    await loadSagas();
  } catch (err) {
    adminFail(err);
  }
}

async function loadFaults() {
  const faults = await api("GET", "/api/faults");
  faultEditor($("admin-faults"), "global-fault", faults);
}

$("admin-token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("adminToken", $("admin-token").value.trim());
  stopAdminStream();
  openAdmin();
});
$("admin-token-forget").addEventListener("click", () => {
  sessionStorage.removeItem("adminToken");
  $("admin-token").value = "";
  stopAdminStream();
  show($("admin-panel"), false);
});
$("admin-status").addEventListener("change", () => loadSagas().catch(adminFail));
$("admin-definition").addEventListener("change", () => loadSagas().catch(adminFail));
$("admin-age").addEventListener("change", () => loadSagas().catch(adminFail));
$("admin-first").addEventListener("click", () => loadSagas().catch(adminFail));
$("admin-refresh").addEventListener("click", () => loadSagas().catch(adminFail));
$("admin-live").addEventListener("change", (e) => (e.target.checked ? startAdminStream() : stopAdminStream()));

$("admin-faults-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    const now = await api("PUT", "/api/faults", { admin: true, body: readFaults("global-fault", true) });
    faultEditor($("admin-faults"), "global-fault", now);
    $("admin-faults-status").textContent = "Saved at " + new Date().toLocaleTimeString();
  } catch (err) {
    adminFail(err);
  }
});

$("admin-payments-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const out = clear($("admin-payments"));
  const email = $("admin-payments-email").value.trim();
  try {
    const r = await api("GET", "/api/admin/payments" + (email ? "?email=" + encodeURIComponent(email) : ""), { admin: true });
    if (!r.payments.length) {
      out.append(el("p", { class: "hint" }, "No payments."));
      return;
    }
    out.append(el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "When"), el("th", {}, "Customer"), el("th", {}, "Card"), el("th", { class: "num" }, "Amount"), el("th", {}, "Status"))),
      el("tbody", {}, r.payments.map((p) => el("tr", {},
        el("td", {}, new Date(p.created_at).toLocaleString()),
        el("td", {}, p.customer_email),
        el("td", {}, p.brand + " \u2022\u2022\u2022\u2022 " + p.last4),
        el("td", { class: "num" }, money(p.amount)),
        el("td", {}, p.status + (p.decline_reason ? " (" + p.decline_reason + ")" : "")))))));
  } catch (err) {
    adminFail(err);
  }
});

/** Follows GET /api/events with the token in a header (EventSource cannot
 *  send one), parsing the event stream from a fetch body. */
function startAdminStream() {
  stopAdminStream();
  const controller = new AbortController();
  adminStream = controller;
  (async () => {
    try {
      const resp = await fetch("/api/events", { headers: { Authorization: "Bearer " + adminToken() }, signal: controller.signal });
      if (!resp.ok) throw new ApiFailure(resp.status, await resp.json().catch(() => null));
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (!data) continue;
          const e = JSON.parse(data);
          const list = $("admin-events");
          list.prepend(el("li", {}, timeOf(e.at_ms) + " \u00b7 " + e.saga_id + " \u00b7 " + e.event + (e.step ? " \u00b7 " + e.step : "") + (e.status ? " \u00b7 " + e.status : "")));
          while (list.children.length > 100) list.lastChild.remove();
          if (e.event === "saga_started" || e.event === "saga_finished") {
            clearTimeout(adminRefreshTimer);
            adminRefreshTimer = setTimeout(() => loadSagas().catch(adminFail), 300);
          }
        }
      }
    } catch (err) {
      if (err.name !== "AbortError") adminFail(err);
    }
  })();
}

function stopAdminStream() {
  if (adminStream) adminStream.abort();
  adminStream = null;
}

// ---------- start ----------

(function init() {
  const d = new Date();
  d.setDate(d.getDate() + 14);
  $("search-date").value = isoDate(d);
  $("search-date").min = isoDate(new Date());
  $("search-return").min = isoDate(new Date());
  route();
})();
