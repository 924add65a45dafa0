// SkySaga demo page: the loyalty account page.
// Loaded after /app.js (helpers, routing); see ui.rs for the load order.

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

