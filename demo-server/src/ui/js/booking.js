// SkySaga demo page: the booking form and the live saga view.
// Loaded after /app.js (helpers, routing); see ui.rs for the load order.

// ---------- booking form ----------

let bookingKey = newKey();
let bookingTarget = null;
let testCards = null;
// Other scripts add to the form: `open(target)` runs when it opens for a
// flight, `body(body)` may add fields to the request before it is sent,
// `overview(booking, dl)` may add lines to the live view's overview.
const bookingHooks = { open: [], body: [], overview: [] };

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
  for (const h of bookingHooks.open) h(bookingTarget);
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
  return passengerFieldInput(field); // passenger.js: dates of birth, phone
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
  const hold = $("booking-hold").checked;
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
  if (hold) {
    // Held: no card now; it is paid later on the booking's page.
    delete body.card;
    body.hold = true;
  }
  for (const h of bookingHooks.body) h(body);
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
    // A wait step is shown where it stands in the saga.
    const prev = WAIT_AFTER[step] && stepRow(WAIT_AFTER[step]);
    if (prev) prev.after(li);
    else $("saga-steps").append(li);
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
    case "wait_started":
      setStep(e.step, "waiting", e.until_ms ? "until " + timeOf(e.until_ms) : "");
      showWait(currentSaga);
      break;
    case "signal_received":
      if (e.step) setStep(e.step, "succeeded", "received");
      showWait(currentSaga);
      break;
    case "wait_timed_out":
      setStep(e.step, "rejected", "timed out");
      break;
    case "saga_finished":
      break;
  }
}

// ---------- waits: hold now pay later, confirm with your bank ----------

const WAIT_AFTER = { await_payment: "reserve_seat", await_confirmation: "authorize_payment" };
STEP_LABEL.await_payment = "Wait for payment";
STEP_LABEL.await_confirmation = "Confirm with your bank";
let currentSaga = null;
let waitTimer = null;

/** Shows what the booking waits for from the customer, if anything. */
async function showWait(id) {
  if (!id) return;
  let b;
  try {
    b = await api("GET", "/api/bookings/" + encodeURIComponent(id));
  } catch (_) {
    return;
  }
  if (id !== currentSaga) return;
  const box = clear($("saga-wait"));
  box.dataset.status = b.status;
  if (waitTimer) clearInterval(waitTimer);
  waitTimer = null;
  const deadline = b.status === "held" ? b.hold_expires_at : b.status === "awaiting_confirmation" ? b.confirmation_expires_at : null;
  if (!deadline) return;
  setStatus(b.status);
  const left = el("span", { class: "hold-left", "data-testid": "wait-time-left" }, timeLeft(deadline));
  waitTimer = setInterval(() => { left.textContent = timeLeft(deadline); }, 15000);
  if (b.status === "awaiting_confirmation") {
    const out = el("p", { "data-testid": "confirm-result" });
    const button = el("button", { type: "button", "data-testid": "confirm-payment" }, "I have confirmed with my bank");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api("POST", "/api/bookings/" + encodeURIComponent(id) + "/confirm-payment");
        out.textContent = "Confirmation received; finishing the booking…";
      } catch (err) {
        out.textContent = err.message;
        out.className = "error";
        button.disabled = false;
      }
    });
    box.append(el("div", { class: "card notice", "data-testid": "confirm-step" },
      el("h2", {}, "Confirm with your bank"),
      el("p", {}, "Your card's issuer asks you to confirm this payment of " + money(b.total) + ". Your seats are held meanwhile: ", left, "."),
      button, out));
    return;
  }
  // Held: pay with a card, tokenized by the payments service like at booking.
  const field = (id2, label, attrs) => el("label", {}, label, el("input", Object.assign({ id: id2, "data-testid": id2, required: "" }, attrs || {})));
  const form = el("form", { class: "grid-form", "data-testid": "pay-form", novalidate: "" },
    field("pay-card-number", "Card number", { inputmode: "numeric", autocomplete: "cc-number" }),
    field("pay-card-exp-month", "Expiry month", { type: "number", min: "1", max: "12", value: "12" }),
    field("pay-card-exp-year", "Expiry year", { type: "number", min: "2000", max: "2100", value: String(new Date().getFullYear() + 3) }),
    field("pay-card-cvc", "CVC", { inputmode: "numeric", maxlength: "4", value: "123" }),
    field("pay-card-holder", "Name on card", { value: b.passengers.length ? b.passengers[0].first_name + " " + b.passengers[0].last_name : "" }),
    el("div", { class: "actions" }, el("button", { type: "submit", "data-testid": "pay-submit" }, "Pay " + money(b.total))),
    el("p", { class: "error", "data-testid": "pay-error", hidden: "" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const err = form.querySelector("[data-testid=pay-error]");
    err.hidden = true;
    const submit = form.querySelector("[data-testid=pay-submit]");
    submit.disabled = true;
    const card = {
      number: $("pay-card-number").value,
      exp_month: Number($("pay-card-exp-month").value),
      exp_year: Number($("pay-card-exp-year").value),
      cvc: $("pay-card-cvc").value,
      holder_name: $("pay-card-holder").value,
    };
    try {
      await api("POST", "/api/bookings/" + encodeURIComponent(id) + "/pay", { body: { card } });
      clear(box).append(el("p", { class: "success", "data-testid": "pay-result" }, "Payment received; finishing the booking…"));
    } catch (e2) {
      err.textContent = e2.message + (e2.fields && e2.fields.length ? ": " + e2.fields.map((f) => f.field + " " + f.message).join("; ") : "");
      err.hidden = false;
      submit.disabled = false;
    }
  });
  box.append(el("div", { class: "card notice", "data-testid": "hold-step" },
    el("h2", {}, "Held, not paid"),
    el("p", {}, "Your seats are held without payment: ", left, ". Pay now to confirm the booking."),
    form));
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
  const dl = el("dl", { class: "kv" },
    el("dt", {}, "Flight"), el("dd", {}, f ? f.airline + " " + f.flight_no + ", " + f.origin + " \u2192 " + f.destination + ", " + b.date + " " + f.departure : b.flight_id + " on " + b.date),
    el("dt", {}, "Passengers"), el("dd", {}, b.passengers.map((p) => p.first_name + " " + p.last_name).join(", ")),
    el("dt", {}, "Cabin"), el("dd", {}, b.cabin),
    el("dt", {}, "Total"), el("dd", { "data-testid": "booking-total" }, money(b.total) + " (card " + b.card.brand + " \u2022\u2022\u2022\u2022 " + b.card.last4 + ")"),
    b.miles_awarded ? [el("dt", {}, "Miles"), el("dd", {}, String(b.miles_awarded))] : null);
  for (const h of bookingHooks.overview) h(b, dl);
  clear($("booking-overview")).append(dl);
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
  currentSaga = id;
  clear($("saga-wait"));
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
    "step_compensated", "compensation_failed", "cancel_requested", "resumed", "operator_retry", "saga_finished",
    "wait_started", "signal_received", "wait_timed_out"];
  for (const kind of kinds) {
    es.addEventListener(kind, (msg) => {
      const e = JSON.parse(msg.data);
      applyEvent(e);
      if (e.event === "saga_finished") {
        es.close();
        if (source === es) source = null;
        clear($("saga-wait"));
        showOutcome(id);
      }
    });
  }
  // Opened while it already waits (from My trips): show the step at once.
  showWait(id);
  leaveView = () => {
    es.close();
    if (source === es) source = null;
    currentSaga = null;
    if (waitTimer) clearInterval(waitTimer);
    waitTimer = null;
  };
}


registerView("book", (params) => openBooking(params));
registerView("saga", (_params, parts) => {
  if (parts[1]) openSaga(decodeURIComponent(parts[1]));
});
