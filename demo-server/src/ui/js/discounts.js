// SkySaga demo page: promo code and pay-with-miles on the booking form,
// with the price asked of the server (POST /api/quote, the same pricing the
// booking uses) before the customer books: the charge shown is the charge
// made. Hooks into booking.js (bookingHooks); loaded after it.

// ---------- discounts and quote ----------

let quoteTarget = null;
let quoteSeq = 0;

function discountFields() {
  const miles = Number($("booking-redeem-miles").value || 0);
  const code = $("booking-promo").value.trim();
  return { promo_code: code || null, redeem_miles: Number.isFinite(miles) && miles > 0 ? Math.floor(miles) : 0 };
}

/** Asks the server for the price with the code and miles now entered. */
async function refreshQuote() {
  if (!quoteTarget) return;
  const seq = ++quoteSeq;
  const out = $("booking-quote");
  const box = $("quote-error");
  hideError(box);
  const d = discountFields();
  const body = { flight_id: quoteTarget.flight, date: quoteTarget.date, cabin: quoteTarget.cabin, passengers: quoteTarget.passengers,
    promo_code: d.promo_code, redeem_miles: d.redeem_miles };
  try {
    const q = await api("POST", "/api/quote", { body });
    if (seq !== quoteSeq) return; // a newer quote is on its way
    clear(out).append(el("dl", { class: "kv" },
      el("dt", {}, "Fare"), el("dd", { "data-testid": "quote-base" }, money(q.price.base)),
      el("dt", {}, "Taxes and fees"), el("dd", {}, money({ minor: q.price.taxes.minor + q.price.fees.minor, currency: q.price.total.currency })),
      q.promo ? [el("dt", {}, "Code " + q.promo.code), el("dd", { "data-testid": "quote-promo" }, "\u2212" + money(q.promo.discount))] : null,
      q.miles ? [el("dt", {}, q.miles.miles.toLocaleString() + " miles"), el("dd", { "data-testid": "quote-miles" }, "\u2212" + money(q.miles.discount))] : null,
      el("dt", {}, "Card is charged"), el("dd", {}, el("strong", { "data-testid": "quote-charge", "data-minor": String(q.charge.minor) }, money(q.charge)))));
  } catch (err) {
    if (seq !== quoteSeq) return;
    clear(out);
    showError(box, err, (f) => ({ promo_code: $("booking-promo"), redeem_miles: $("booking-redeem-miles") })[f]);
  }
}

function syncMiles() {
  const member = $("booking-loyalty").value.trim() !== "";
  $("booking-redeem-miles").disabled = !member;
  if (!member) $("booking-redeem-miles").value = "";
}

bookingHooks.open.push((target) => {
  // A new booking starts without the last one's code and miles.
  quoteTarget = target;
  $("booking-promo").value = "";
  $("booking-redeem-miles").value = "";
  syncMiles();
  refreshQuote();
});
bookingHooks.body.push((body) => {
  const d = discountFields();
  if (d.promo_code) body.promo_code = d.promo_code;
  if (d.redeem_miles) body.redeem_miles = d.redeem_miles;
});

$("booking-loyalty").addEventListener("input", syncMiles);
$("quote-refresh").addEventListener("click", refreshQuote);
for (const id of ["booking-promo", "booking-redeem-miles", "booking-loyalty"]) $(id).addEventListener("change", refreshQuote);
