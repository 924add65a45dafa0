// SkySaga demo page: the traveller's account (register, log in, log out,
// link a loyalty account). Loaded after /app.js; see ui.rs for the order.
// The session is an HttpOnly cookie the page never sees; what the page
// keeps is the CSRF token the API hands out with the account, which
// app.js's api() sends on every state-changing call (X-CSRF-Token).

// ---------- account state ----------

/** The logged-in account (`{account, loyalty}`), or null when logged out. */
let currentAccount = null;

/** Asks the server who is logged in; updates the nav and the CSRF token. */
async function refreshAccount() {
  try {
    const r = await api("GET", "/api/account");
    setAccount(r);
  } catch (err) {
    if (err.status !== 401) throw err;
    setAccount(null);
  }
  return currentAccount;
}

function setAccount(r) {
  currentAccount = r ? { account: r.account, loyalty: r.loyalty || null } : null;
  csrfToken = r ? r.csrf_token : null;
  const nav = $("nav-account");
  if (nav) nav.textContent = r ? r.account.name : "Log in";
  show($("nav-trips"), !!r);
  // A logged-in booking is linked to the account by the cookie; the form
  // starts with the account's email and linked loyalty number.
  if (r) {
    if ($("booking-email") && !$("booking-email").value) $("booking-email").value = r.account.email;
    if ($("booking-loyalty") && !$("booking-loyalty").value && r.account.loyalty_id) $("booking-loyalty").value = r.account.loyalty_id;
  }
}

// ---------- the account view ----------

function renderAccountView() {
  const inView = !!currentAccount;
  show($("account-forms"), !inView);
  show($("account-panel"), inView);
  if (!inView) return;
  const a = currentAccount.account;
  clear($("account-summary")).append(el("dl", { class: "kv" },
    el("dt", {}, "Name"), el("dd", { "data-testid": "account-name" }, a.name),
    el("dt", {}, "Email"), el("dd", { "data-testid": "account-email" }, a.email),
    el("dt", {}, "Member since"), el("dd", {}, new Date(a.created_at).toLocaleDateString()),
    el("dt", {}, "Loyalty account"), el("dd", { "data-testid": "account-loyalty-id" }, a.loyalty_id || "not linked")));
  show($("link-loyalty-form"), !a.loyalty_id);
  const out = clear($("account-loyalty"));
  if (currentAccount.loyalty) renderLoyalty(out, currentAccount.loyalty, null);
}

/** Submits a form's JSON to `path`; on success stores the session. */
function sessionForm(formId, errorId, path, fields) {
  $(formId).addEventListener("submit", async (e) => {
    e.preventDefault();
    const box = $(errorId);
    hideError(box, $(formId));
    const body = {};
    for (const [name, id] of Object.entries(fields)) body[name] = $(id).value;
    try {
      await api("POST", path, { body });
      $(fields.password).value = "";
      await refreshAccount();
      location.hash = "#/trips";
    } catch (err) {
      showError(box, err, (f) => (fields[f] ? $(fields[f]) : null));
    }
  });
}

sessionForm("register-form", "register-error", "/api/accounts",
  { name: "register-name", email: "register-email", password: "register-password" });
sessionForm("login-form", "login-error", "/api/session", { email: "login-email", password: "login-password" });

$("logout").addEventListener("click", async () => {
  try {
    await api("DELETE", "/api/session");
  } finally {
    setAccount(null);
    location.hash = "#/account";
    renderAccountView();
  }
});

$("link-loyalty-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const box = $("link-loyalty-error");
  hideError(box, $("link-loyalty-form"));
  const body = { loyalty_id: $("link-loyalty-id").value.trim(), last_name: $("link-loyalty-last-name").value.trim() };
  try {
    await api("POST", "/api/account/loyalty", { body });
    await refreshAccount();
    renderAccountView();
  } catch (err) {
    showError(box, err, (f) => ({ loyalty_id: $("link-loyalty-id"), last_name: $("link-loyalty-last-name") })[f]);
  }
});

registerView("account", async () => {
  try {
    await refreshAccount();
  } catch (_) {
    // The forms still show; a failing server is reported when they are used.
  }
  renderAccountView();
});

// Who is logged in is known before the first view opens its forms.
refreshAccount().catch(() => setAccount(null));
