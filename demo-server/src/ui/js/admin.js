// SkySaga demo page: the admin page (sagas, overview, faults, live stream).
// Loaded after /app.js (helpers, routing); see ui.rs for the load order.

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


registerView("admin", () => openAdmin());
