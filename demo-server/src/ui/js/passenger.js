// SkySaga demo page: the passenger details a carrier needs on the booking
// form: a date of birth for each passenger and a contact phone, required
// here (the JSON API keeps them optional), checked as the server checks
// them before the request leaves, and added to the request. The server
// seals them; they come back only on the e-ticket and, masked, on the
// manage page. Hooks into booking.js (bookingHooks); loaded after it.

// ---------- passenger details ----------

/** What is wrong with a date of birth (the server's words), or null. */
function dobProblem(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text);
  if (!m) return "date of birth must be written YYYY-MM-DD";
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const day = new Date(Date.UTC(y, mo - 1, d));
  if (day.getUTCFullYear() !== y || day.getUTCMonth() !== mo - 1 || day.getUTCDate() !== d) return "date of birth is not a real date";
  if (text > new Date().toISOString().slice(0, 10)) return "date of birth is in the future";
  if (y < 1900) return "date of birth must be in 1900 or later";
  return null;
}

/** What is wrong with a phone (the server's words), or null. */
function phoneProblem(text) {
  if (!/^\+[0-9 -]*$/.test(text)) return "phone must be + and the country code, then digits (spaces and dashes allowed)";
  const digits = text.replace(/[^0-9]/g, "");
  if (digits.startsWith("0")) return "phone must be + and the country code, then digits (spaces and dashes allowed)";
  if (digits.length < 8 || digits.length > 15) return "phone must have 8 to 15 digits, country code included; it has " + digits.length;
  return null;
}

/** The input behind a passenger-details field of a 422, or null. */
function passengerFieldInput(field) {
  if (field === "phone") return $("booking-phone");
  const m = /^passengers\[(\d+)\]\.date_of_birth$/.exec(field);
  return m ? $("pax-" + m[1] + "-dob") : null;
}

function passengerCount() {
  return bookingTarget ? bookingTarget.passengers : 0;
}

bookingHooks.open.push(() => {
  // booking.js has just drawn the rows: each gets its date of birth.
  $("passenger-list").querySelectorAll(".passenger").forEach((row, i) => {
    row.append(el("label", {}, "Date of birth", el("input", {
      id: "pax-" + i + "-dob", "data-testid": "pax-" + i + "-dob", required: true, inputmode: "numeric",
      placeholder: "YYYY-MM-DD", maxlength: "10", autocomplete: "bday" })));
  });
});

bookingHooks.body.push((body) => {
  for (let i = 0; i < passengerCount(); i++) body.passengers[i].date_of_birth = $("pax-" + i + "-dob").value.trim();
  body.phone = $("booking-phone").value.trim();
});

// Before booking.js's submit handler (a capture listener on the form runs
// first): missing or malformed details stop the booking here.
$("booking-form").addEventListener("submit", (e) => {
  if (!bookingTarget) return;
  const fields = [];
  for (let i = 0; i < passengerCount(); i++) {
    const v = $("pax-" + i + "-dob").value.trim();
    const p = v ? dobProblem(v) : "is required";
    if (p) fields.push({ field: "passengers[" + i + "].date_of_birth", message: p });
  }
  const phone = $("booking-phone").value.trim();
  const p = phone ? phoneProblem(phone) : "is required";
  if (p) fields.push({ field: "phone", message: p });
  if (!fields.length) return;
  e.preventDefault();
  e.stopImmediatePropagation();
  hideError($("booking-error"), $("booking-form"));
  showError($("booking-error"), { message: "Check the passenger details", fields }, passengerFieldInput);
}, { capture: true });
