// SkySaga demo page: flight search and its results.
// Loaded after /app.js (helpers, routing); see ui.rs for the load order.

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

// A round-trip search: one offer chosen per leg, then both booked at once.
let picked = { outbound: null, inbound: null };

function pickLeg(leg, offer, row) {
  picked[leg] = offer;
  document.querySelectorAll('#search-results tr[data-leg="' + leg + '"]').forEach((r) => {
    r.dataset.picked = r === row ? "true" : "false";
  });
  renderRoundTripBar();
}

function renderRoundTripBar() {
  const bar = $("round-trip-bar");
  if (!bar) return;
  const { outbound, inbound } = picked;
  const label = (o) => (o ? o.flight.flight_no + " " + o.date + " " + hhmm(o.flight.departure) : "not chosen yet");
  const total = outbound && inbound && outbound.price && inbound.price &&
    outbound.price.total.currency === inbound.price.total.currency
    ? money({ minor: outbound.price.total.minor + inbound.price.total.minor, currency: outbound.price.total.currency })
    : "";
  clear(bar).append(
    el("span", { "data-testid": "round-trip-choice" }, "Outbound: " + label(outbound) + " \u00b7 Return: " + label(inbound)),
    total ? el("strong", { "data-testid": "round-trip-total" }, " Total " + total) : null,
    el("button", {
      type: "button", "data-testid": "book-round-trip", disabled: !(outbound && inbound),
      onclick: () => {
        if (!(picked.outbound && picked.inbound)) return;
        location.hash = "#/book?" + new URLSearchParams({
          flight: picked.outbound.flight.id, date: picked.outbound.date, cabin: picked.outbound.cabin,
          passengers: String(lastSearch.query.passengers),
          return_flight: picked.inbound.flight.id, return_date: picked.inbound.date,
        }).toString();
      },
    }, "Book round trip"));
}

function renderResults(data) {
  const box = clear($("search-results"));
  const q = data.query;
  const roundTrip = !data.results;
  picked = { outbound: null, inbound: null };
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
          roundTrip
            ? el("button", {
                type: "button", class: "small", "data-testid": "choose-" + leg, "data-flight-id": o.flight.id,
                onclick: (e) => pickLeg(leg, o, e.target.closest("tr")),
              }, "Choose")
            : el("button", {
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
  if (roundTrip) {
    box.append(el("div", { id: "round-trip-bar", class: "card round-trip-bar", "data-testid": "round-trip-bar" }));
    renderRoundTripBar();
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

