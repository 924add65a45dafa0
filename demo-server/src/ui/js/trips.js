// SkySaga demo page: "My trips", the logged-in account's bookings, newest
// first, a page at a time (the API's cursor), each with its status:
// confirmed (ticket, PDF, cancel with live progress and the refund),
// cancelled, failed with the reason, awaiting confirmation, or held
// (time left, and a link to pay). Loaded after /app.js and account.js.

// ---------- my trips ----------

const TRIP_STATUS = {
  confirmed: "Confirmed",
  cancelled: "Cancelled",
  failed: "Not booked",
  awaiting_confirmation: "Awaiting confirmation",
  needs_attention: "Needs attention",
  held: "Held, not paid",
};

let tripCursors = [null]; // the cursor of each page shown so far
let holdTimer = null;

/** "3 h 05 min left" until an RFC 3339 time, or "expired". */
function timeLeft(rfc3339) {
  const ms = Date.parse(rfc3339) - Date.now();
  if (!(ms > 0)) return "expired";
  const m = Math.ceil(ms / 60000);
  return (m >= 60 ? Math.floor(m / 60) + " h " + String(m % 60).padStart(2, "0") + " min" : m + " min") + " left";
}

function tripCard(t) {
  const f = t.flight;
  const status = t.status;
  const ref = t.booking_ref;
  const card = el("div", { class: "card trip", "data-testid": "trip", "data-booking-id": t.booking_id, "data-status": status },
    el("h2", {}, f ? f.airline + " " + f.flight_no + ": " + f.origin + " \u2192 " + f.destination : t.flight_id, " ",
      el("span", { class: "badge", "data-status": status === "confirmed" ? "confirmed" : status === "cancelled" || status === "failed" ? "compensated" : "pending",
        "data-testid": "trip-status" }, TRIP_STATUS[status] || status)),
    el("dl", { class: "kv" },
      el("dt", {}, "Date"), el("dd", {}, t.date + (f ? " " + hhmm(f.departure) : "")),
      el("dt", {}, "Cabin"), el("dd", {}, t.cabin),
      el("dt", {}, "Passengers"), el("dd", {}, t.passengers.map((p) => p.first_name + " " + p.last_name).join(", ")),
      ref ? [el("dt", {}, "Reference"), el("dd", { "data-testid": "trip-ref" }, ref)] : null,
      el("dt", {}, status === "held" ? "To pay" : "Charged"), el("dd", { "data-testid": "trip-charged" }, money(t.charged)),
      t.miles_redeemed ? [el("dt", {}, "Paid with miles"), el("dd", { "data-testid": "trip-miles-redeemed" }, t.miles_redeemed.toLocaleString())] : null,
      t.miles_awarded ? [el("dt", {}, "Miles earned"), el("dd", {}, t.miles_awarded.toLocaleString())] : null,
      el("dt", {}, "Booked"), el("dd", {}, new Date(t.created_at_ms).toLocaleString())),
    status === "failed" ? el("p", { class: "error", "data-testid": "trip-failure" }, "Reason: " + (t.failure_reason || "unknown")) : null,
    status === "awaiting_confirmation" ? el("p", { class: "hint" }, "The booking saga is still running (your bank may ask you to confirm the payment). ",
      el("a", { href: "#/booking/" + encodeURIComponent(t.booking_id), "data-testid": "trip-confirm" }, "Open it")) : null,
    status === "held" ? el("p", { "data-testid": "trip-hold" },
      el("span", { class: "hold-left", "data-expires": t.hold_expires_at || "", "data-testid": "trip-hold-left" }, t.hold_expires_at ? timeLeft(t.hold_expires_at) : ""), " ",
      el("a", { href: "#/booking/" + encodeURIComponent(t.booking_id), "data-testid": "trip-pay" }, "Pay now")) : null,
    el("p", { class: "actions" },
      el("a", { href: "#/booking/" + encodeURIComponent(t.booking_id) }, "How it was booked"),
      t.ticket_url ? el("span", { "data-testid": "trip-tickets" }, " \u00b7 ",
        el("a", { href: t.ticket_url, target: "_blank", rel: "noopener", "data-testid": "trip-ticket" }, "E-ticket"), " \u00b7 ",
        el("a", { href: "/api/bookings/" + encodeURIComponent(t.booking_id) + "/ticket.pdf", target: "_blank", rel: "noopener", "data-testid": "trip-ticket-pdf" }, "PDF")) : null,
      status === "confirmed" ? [" ", el("button", { type: "button", class: "secondary small", "data-testid": "trip-cancel",
        onclick: (ev) => cancelTrip(ev.target, card, t.booking_id) }, "Cancel this trip")] : null),
    el("div", { "data-testid": "trip-cancellation" }));
  return card;
}

/** Starts the cancellation of one of my trips and follows it live. */
async function cancelTrip(button, card, bookingId) {
  button.disabled = true;
  const out = clear(card.querySelector("[data-testid=trip-cancellation]"));
  try {
    const r = await api("POST", "/api/account/cancellations", { body: { booking_id: bookingId } });
    followCancellation(out, r, (c) => {
      if (c.status !== "cancelled") {
        button.disabled = false;
        return;
      }
      // The card shows the trip as cancelled; no ticket, no cancel button.
      card.dataset.status = "cancelled";
      const badge = card.querySelector("[data-testid=trip-status]");
      badge.textContent = TRIP_STATUS.cancelled;
      badge.dataset.status = "compensated";
      card.querySelectorAll("[data-testid=trip-cancel], [data-testid=trip-tickets]").forEach((n) => n.remove());
    });
  } catch (err) {
    out.append(el("p", { class: "error", "data-testid": "trip-cancel-error" }, err.message));
    button.disabled = false;
  }
}

/** Shows a cancellation saga's steps as they happen, then its refund. */
function followCancellation(out, accepted, done) {
  const log = el("ul", { class: "sub", "data-testid": "trip-cancel-steps" });
  out.append(el("p", {}, "Cancelling\u2026"), log);
  const es = new EventSource(accepted.events_url);
  const finish = async () => {
    es.close();
    try {
      const c = await api("GET", accepted.status_url);
      clear(out).append(el("p", { "data-testid": "trip-cancel-result", "data-status": c.status, "data-refund-minor": c.refund ? String(c.refund.minor) : "",
        class: c.status === "cancelled" ? "success" : "error" },
        c.status === "cancelled"
          ? "Cancelled. Refunded " + money(c.refund) + (c.fee && c.fee.minor ? " (fee " + money(c.fee) + ")" : "") +
            (c.seats_released ? "; " + c.seats_released + " seat(s) released" : "") +
            (c.miles_recredited ? "; " + c.miles_recredited.toLocaleString() + " miles back" : "") + "."
          : "Not cancelled: " + (c.failure_reason || c.status)));
      if (done) done(c);
    } catch (err) {
      out.append(el("p", { class: "error" }, err.message));
    }
  };
  const follow = (m) => {
    const ev = JSON.parse(m.data);
    if (ev.step) log.append(el("li", { "data-step": ev.step, "data-event": ev.event }, ev.step.replace(/_/g, " ") + ": " + ev.event.replace(/_/g, " ")));
    if (ev.event === "saga_finished") finish();
  };
  for (const kind of ["step_started", "step_succeeded", "step_failed", "step_compensated", "saga_finished"]) es.addEventListener(kind, follow);
}

async function loadTrips(cursor, push) {
  const box = $("trips-error");
  hideError(box);
  const list = $("trips-list");
  try {
    const q = new URLSearchParams({ limit: "5" });
    if (cursor) q.set("cursor", cursor);
    const r = await api("GET", "/api/account/trips?" + q.toString());
    if (push) tripCursors.push(cursor);
    clear(list);
    if (!r.trips.length) list.append(el("p", { class: "hint", "data-testid": "trips-empty" }, "No trips yet. ", el("a", { href: "#/search" }, "Find a flight")));
    for (const t of r.trips) list.append(tripCard(t));
    const miles = clear($("trips-miles"));
    if (r.loyalty) miles.append(el("p", {}, "Miles to spend: ", el("strong", { "data-testid": "trips-miles-balance" }, r.loyalty.balance.toLocaleString()),
      " (" + r.loyalty.tier_name + ", account " + r.loyalty.id + ")"));
    else miles.append(el("p", { class: "hint" }, "No loyalty account linked. ", el("a", { href: "#/account" }, "Link one")));
    $("trips-older").disabled = !r.next_cursor;
    $("trips-older").dataset.cursor = r.next_cursor || "";
    $("trips-newer").disabled = tripCursors.length <= 1;
    $("trips-page").textContent = "Page " + tripCursors.length;
  } catch (err) {
    if (err.status === 401) {
      setAccount(null);
      clear(list).append(el("p", {}, "Log in to see your trips. ", el("a", { href: "#/account", "data-testid": "trips-login" }, "Log in")));
    } else showError(box, err);
  }
}

$("trips-older").addEventListener("click", (e) => loadTrips(e.target.dataset.cursor, true));
$("trips-newer").addEventListener("click", () => {
  if (tripCursors.length > 1) tripCursors.pop();
  loadTrips(tripCursors[tripCursors.length - 1], false);
});

registerView("trips", () => {
  tripCursors = [null];
  loadTrips(null, false);
  if (holdTimer) clearInterval(holdTimer);
  // The time left on held trips counts down while the page is open.
  holdTimer = setInterval(() => {
    document.querySelectorAll(".hold-left[data-expires]").forEach((s) => {
      if (s.dataset.expires) s.textContent = timeLeft(s.dataset.expires);
    });
  }, 30000);
  leaveView = () => {
    clearInterval(holdTimer);
    holdTimer = null;
  };
});
