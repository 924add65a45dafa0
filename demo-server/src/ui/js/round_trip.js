// SkySaga demo page: the return leg of a round trip on the booking form and
// in the live saga view. The search (search.js) sends the chosen pair to
// "#/book?...&return_flight=ID&return_date=YYYY-MM-DD"; this script shows
// the return flight on the form, adds return_flight_id and return_date to
// the request, and lists the return leg in the booking's overview. The two
// seat steps (reserve_seat, reserve_return_seat: one parallel group) stand
// side by side in the live view (style.css).
// Loaded after booking.js (its hooks); see ui.rs for the load order.

let bookingReturn = null;

/** The return leg asked for in the page's address, if any. */
function returnLegOfHash() {
  const q = location.hash.split("?")[1] || "";
  const p = new URLSearchParams(q);
  const flight = p.get("return_flight");
  const date = p.get("return_date");
  return flight && date ? { flight, date } : null;
}

async function showReturnLeg(target) {
  const box = clear($("booking-return"));
  bookingReturn = returnLegOfHash();
  show(box, !!bookingReturn);
  if (!bookingReturn) return;
  const leg = bookingReturn;
  box.append(el("p", { class: "hint" }, "Loading the return flight\u2026"));
  try {
    const f = await api("GET", "/api/flights/" + encodeURIComponent(leg.flight) + "?date=" + encodeURIComponent(leg.date));
    if (bookingReturn !== leg) return;
    const fare = f.flight[target.cabin];
    clear(box).append(
      el("h2", {}, "Return: " + f.flight.airline + " " + f.flight.flight_no + ": " + f.flight.origin + " \u2192 " + f.flight.destination),
      el("dl", { class: "kv" },
        el("dt", {}, "Departs"), el("dd", { "data-testid": "return-departs" }, leg.date + " " + hhmm(f.flight.departure)),
        el("dt", {}, "Arrives"), el("dd", {}, (f.arrival_date || "") + " " + hhmm(f.flight.arrival)),
        el("dt", {}, "Fare per passenger"), el("dd", {}, fare ? money(fare) : "not sold"),
        el("dt", {}, "Seats left"), el("dd", {}, f.seats_left && f.seats_left[target.cabin] !== undefined ? String(f.seats_left[target.cabin]) : "?")),
      el("p", { class: "hint" }, "Both legs' seats are reserved at once; one payment covers both."));
  } catch (err) {
    clear(box).append(el("p", { class: "error" }, err.message));
  }
}

bookingHooks.open.push((target) => showReturnLeg(target));
bookingHooks.body.push((body) => {
  if (!bookingReturn) return;
  body.return_flight_id = bookingReturn.flight;
  body.return_date = bookingReturn.date;
});
bookingHooks.overview.push((b, dl) => {
  const leg = b.return_leg;
  if (!leg) return;
  const f = leg.flight;
  dl.append(
    el("dt", {}, "Return"),
    el("dd", { "data-testid": "booking-return-leg" },
      f ? f.airline + " " + f.flight_no + ", " + f.origin + " \u2192 " + f.destination + ", " + leg.date + " " + f.departure
        : leg.flight_id + " on " + leg.date));
});
