// SkySaga demo page: manage a booking (look up, cancel with a refund).
// Loaded after /app.js (helpers, routing); see ui.rs for the load order.

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
        b.contact_phone ? [el("dt", {}, "Phone"), el("dd", { "data-testid": "lookup-phone" }, b.contact_phone)] : null,
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

