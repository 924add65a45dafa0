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
  // A search attribute, looked up through the store's index (the server
  // hashes an email address itself).
  const attr = $("admin-attr-value").value.trim();
  if (attr) p.set("attr", $("admin-attr-name").value + ":" + attr);
  if (cursor) p.set("cursor", cursor);
  return "/api/admin/sagas?" + p.toString();
}

// Only the newest request draws the list (filters changed in quick
// succession must not be overwritten by an older, slower answer).
let adminListSeq = 0;

async function loadSagas(page) {
  loadCancellations().catch(() => {});
  loadOverview().catch(() => {});
  const seq = ++adminListSeq;
  const index = page || 0;
  const cursor = index === 0 ? null : adminCursors[index];
  const data = await api("GET", sagaQuery(cursor), { admin: true });
  if (seq !== adminListSeq) return;
  if (index === 0) adminCursors = [null];
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
      el("td", {}, el("a", { href: "#/booking/" + encodeURIComponent(s.id) }, s.id), el("span", { class: "sub" }, s.definition + (s.booking_ref ? " \u00b7 ref " + s.booking_ref : "")),
        el("a", { href: "#/ops/" + encodeURIComponent(s.id), class: "sub", "data-testid": "admin-operate" }, "Timeline and operations")),
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
  // Beside them, the overdue ones: past their deadline after the pivot,
  // still going (from the store's overdue index).
  if (o.overdue && o.overdue.length) {
    stuck.append(el("h3", {}, "Overdue: past the deadline, still going"), sagaTable(o.overdue, "admin-overdue-table", "admin-overdue-row"));
  }
  clear($("admin-chart")).append(rateChart(o.rates));
  $("admin-overview-note").textContent = o.retention_days ? "Finished sagas are kept " + o.retention_days + " days" : "Finished sagas are kept forever";
}

async function adminAction(id, action) {
  try {
    // A retry is an operation: who, why, and an id that makes a double
    // click one retry.
    const body = action === "cancel" ? { reason: "cancelled by an operator from the admin page" }
      : { operator: "admin page", reason: "retried from the admin page", operation_id: "page-" + id + "-" + Date.now() };
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
$("admin-attr-name").addEventListener("change", () => {
  if ($("admin-attr-value").value.trim()) loadSagas().catch(adminFail);
});
// "change" fires on Enter and on leaving the field; the list starts again
// at the newest page of the filtered sagas.
$("admin-attr-value").addEventListener("change", () => loadSagas().catch(adminFail));
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


// ---------- one saga: operations (dry run first), timeline, history ----------

let opsSaga = null;
let opsStream = null;
let opsReload = null;
let opsPending = null;

const OPS_EVENTS = [
  "saga_started", "step_started", "step_succeeded", "step_failed", "compensation_started", "step_compensated",
  "compensation_failed", "wait_started", "signal_received", "wait_timed_out", "deadline_passed", "cancel_requested",
  "resumed", "operator_retry", "operation_applied", "saga_paused", "saga_unpaused", "step_skipped", "rerun_started",
  "rerun_created", "saga_finished",
];

const OPS_LABEL = {
  pause: "Pause", resume: "Resume", "retry-now": "Retry now", retry: "Retry stuck saga", skip: "Skip step",
  "force-compensate": "Force compensation", rerun: "Re-run from step",
};

async function openOps(params, parts) {
  const id = decodeURIComponent(parts[1] || "");
  opsSaga = id;
  hideError($("ops-error"));
  show($("ops-preview"), false);
  $("ops-id").textContent = id;
  if (!adminToken()) {
    showError($("ops-error"), new ApiFailure(401, { error: "Set the admin token on the Operations page first." }));
    return;
  }
  await loadOps().catch(opsFail);
  if (opsStream) opsStream.close();
  // Every event of the saga redraws the page (no polling).
  opsStream = new EventSource("/api/sagas/" + encodeURIComponent(id) + "/events");
  // The stream names each event by its kind.
  for (const kind of OPS_EVENTS) {
    opsStream.addEventListener(kind, () => {
      clearTimeout(opsReload);
      opsReload = setTimeout(() => loadOps().catch(opsFail), 150);
    });
  }
  leaveView = () => {
    if (opsStream) opsStream.close();
    opsStream = null;
    opsSaga = null;
  };
}

function opsFail(err) {
  showError($("ops-error"), err);
}

async function loadOps() {
  const id = opsSaga;
  if (!id) return;
  const path = "/api/admin/sagas/" + encodeURIComponent(id);
  const [detail, history] = await Promise.all([api("GET", path, { admin: true }), api("GET", path + "/history", { admin: true })]);
  if (id !== opsSaga) return;
  const s = detail.saga;
  const badge = $("ops-status");
  badge.textContent = s.status;
  badge.dataset.status = s.status;
  $("ops-definition").textContent = s.definition + " v" + s.version + (detail.rerun_of ? " \u00b7 re-runs " + detail.rerun_of : "") +
    (detail.reruns && detail.reruns.length ? " \u00b7 re-run as " + detail.reruns.join(", ") : "") +
    (detail.paused ? " \u00b7 paused by " + detail.paused.operator + ": " + detail.paused.reason : "") +
    (s.failure ? " \u00b7 " + s.failure : "");
  const step = $("ops-step");
  const chosen = step.value;
  clear(step).append(...s.steps.map((st) => el("option", { value: st.name }, st.name + " (" + st.state + ")")));
  if (chosen && s.steps.some((st) => st.name === chosen)) step.value = chosen;
  else {
    const here = s.steps.find((st) => st.state !== "succeeded");
    if (here) step.value = here.name;
  }
  clear($("ops-timeline")).append(sagaTimeline(history.events, s.steps.map((st) => st.name), Date.now()));
  const log = clear($("ops-history"));
  for (const e of history.events) {
    const what = [e.event, e.step, e.attempt ? "#" + e.attempt : null, e.status, e.operation, e.operator ? "by " + e.operator : null,
      e.reason, e.error, e.kind && e.event === "step_failed" ? "(" + e.kind + ")" : null].filter(Boolean).join(" \u00b7 ");
    log.append(el("li", { "data-event": e.event }, timeOf(e.at_ms) + " \u00b7 " + what));
  }
}

function opsBody(op, dryRun, operationId) {
  const body = { operator: $("ops-operator").value.trim(), reason: $("ops-reason").value.trim(), operation_id: operationId, dry_run: dryRun };
  if (op === "skip") {
    body.step = $("ops-step").value;
    try {
      body.result = JSON.parse($("ops-result").value || "{}");
    } catch (e) {
      throw new ApiFailure(422, { error: "the result is not JSON", fields: [{ field: "result", message: e.message }] });
    }
  }
  if (op === "rerun") body.from_step = $("ops-step").value;
  return body;
}

/** First the dry run: what would run or be compensated, in order. */
async function previewOp(op) {
  hideError($("ops-error"));
  const operationId = "page-" + newKey();
  try {
    const out = await api("POST", "/api/admin/sagas/" + encodeURIComponent(opsSaga) + "/" + op, { admin: true, body: opsBody(op, true, operationId) });
    opsPending = { op, operationId };
    $("ops-preview-title").textContent = OPS_LABEL[op] + ": the saga would be " + out.status +
      (out.plan.ends_as ? " and end " + out.plan.ends_as : "") + ". Confirm to do it.";
    const list = clear($("ops-preview-steps"));
    const held = out.plan.held_after;
    out.plan.steps.forEach((p, i) => {
      if (held === i) list.append(el("li", { class: "hint", "data-testid": "ops-preview-held" }, "paused here; once resumed:"));
      list.append(el("li", { "data-testid": "ops-preview-step", "data-action": p.action, "data-step": p.step }, p.action + " " + p.step));
    });
    if (held === out.plan.steps.length) list.append(el("li", { class: "hint", "data-testid": "ops-preview-held" }, "paused here"));
    if (!out.plan.steps.length && held === null) list.append(el("li", { class: "hint" }, "nothing left to run"));
    show($("ops-preview"), true);
  } catch (err) {
    opsFail(err);
  }
}

async function confirmOp() {
  if (!opsPending) return;
  const { op, operationId } = opsPending;
  try {
    const out = await api("POST", "/api/admin/sagas/" + encodeURIComponent(opsSaga) + "/" + op, { admin: true, body: opsBody(op, false, operationId) });
    opsPending = null;
    show($("ops-preview"), false);
    $("ops-last").textContent = OPS_LABEL[op] + " applied (operation " + operationId + "): the saga is " + out.status +
      (out.new_saga ? "; new saga " + out.new_saga : "");
    if (out.new_saga) $("ops-last").append(" ", el("a", { href: "#/ops/" + encodeURIComponent(out.new_saga), "data-testid": "ops-new-saga" }, "open it"));
    await loadOps();
  } catch (err) {
    opsFail(err);
  }
}

for (const b of document.querySelectorAll("#ops-buttons button[data-op]")) {
  b.addEventListener("click", () => previewOp(b.dataset.op));
}
$("ops-confirm").addEventListener("click", () => confirmOp());
$("ops-dismiss").addEventListener("click", () => {
  opsPending = null;
  show($("ops-preview"), false);
});

registerView("admin", () => openAdmin());
registerView("ops", (params, parts) => openOps(params, parts));
