//! The operator's saga page (`#/ops/<id>`) in Chromium: a booking runs
//! with a delay fault; the operator pauses it (the dry run first, then
//! Confirm), sees it paused on the timeline while the delayed step
//! finishes and nothing else starts, resumes it and sees it complete.
//! Then another booking: a dry run of a force-compensation (nothing
//! changes), then the real one, and the timeline shows the compensations.
//! Screenshots at 1280 and 390 px wide, and no CSP violation on the way
//! (the timeline is SVG with no inline style).

use super::ops::{fetch, inside_viewport, no_csp_violations, scroll_to, viewport, WATCH_CSP_JS};
use super::{find_route, search, Harness, UI_TIMEOUT, WATCH_ERRORS_JS};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long a saga may take to get where the scenario waits for it.
const SAGA_WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pauses_resumes_and_force_compensates_a_saga_from_its_page() {
    let started = Instant::now();
    let mut h = Harness::start("saga-ops").await;
    let outcome = run(&mut h).await;
    h.finish(outcome, started).await;
}

/// Books from the page's origin with `faults`; the saga id.
async fn book(h: &Harness, flight: &Value, date: &str, faults: Value) -> Result<String, String> {
    let body = json!({
        "flight_id": flight, "date": date, "cabin": "economy",
        "passengers": [{"first_name": "Ada", "last_name": "Lovelace"}],
        "email": "ada@example.com",
        "card": {"number": super::APPROVING_CARD, "exp_month": 12, "exp_year": 2035, "cvc": "123", "holder_name": "Ada Lovelace"},
        "faults": faults,
    });
    let key = format!("saga-ops-{}", rand::random::<u64>());
    let r = fetch(
        h,
        "POST",
        "/api/bookings",
        json!({"Content-Type": "application/json", "Idempotency-Key": key}),
        body,
    )
    .await?;
    ensure!(r["status"] == 202, "booking refused: {r}");
    r["body"]["booking_id"]
        .as_str()
        .map(str::to_string)
        .ok_or(format!("no booking id: {r}"))
}

/// Opens the saga's page and waits until `award_miles` is running on
/// the timeline.
async fn open_running(h: &Harness, id: &str) -> Result<(), String> {
    h.wd.exec(
        "location.hash = '#/ops/' + arguments[0]; return true;",
        json!([id]),
    )
    .await?;
    h.wd.wait_js(
        "award_miles running on the timeline",
        "return document.querySelector('[data-testid=saga-timeline] [data-kind=attempt][data-step=award_miles][data-outcome=running]') ? true : null;",
        json!([]),
        SAGA_WAIT,
    )
    .await
    .map(drop)
}

/// Clicks an operation, waits for its dry run, returns the preview.
async fn preview(h: &Harness, op: &str) -> Result<Value, String> {
    h.wd.click(&format!("[data-testid=ops-{op}]")).await?;
    h.wd.wait_js(
        "the dry-run preview",
        "const p = document.getElementById('ops-preview');\
         if (p.hidden) return null;\
         return { title: document.getElementById('ops-preview-title').textContent,\
           steps: Array.from(document.querySelectorAll('[data-testid=ops-preview-step]')).map((s) => [s.dataset.action, s.dataset.step]),\
           held: document.querySelectorAll('[data-testid=ops-preview-held]').length };",
        json!([]),
        UI_TIMEOUT,
    )
    .await
}

async fn status_is(h: &Harness, want: &str) -> Result<(), String> {
    h.wd.wait_js(
        &format!("the saga {want}"),
        "return document.getElementById('ops-status').textContent === arguments[0] ? true : null;",
        json!([want]),
        SAGA_WAIT,
    )
    .await
    .map(drop)
}

async fn saga_status(h: &Harness, id: &str) -> Result<String, String> {
    let r = fetch(
        h,
        "GET",
        &format!("/api/admin/sagas/{id}"),
        json!({"Authorization": format!("Bearer {}", h.server.token)}),
        Value::Null,
    )
    .await?;
    Ok(r["body"]["saga"]["status"]
        .as_str()
        .unwrap_or("?")
        .to_string())
}

async fn run(h: &mut Harness) -> Result<(), String> {
    let route = find_route(&h.http, &h.server.base).await?;
    h.wd.goto(&format!("{}/", h.server.base)).await?;
    h.wd.wait_visible("#search-form", UI_TIMEOUT).await?;
    h.wd.exec(WATCH_CSP_JS, json!([])).await?;
    h.wd.exec(WATCH_ERRORS_JS, json!([])).await?;
    viewport(h, 1280, 1000).await?;
    search(h, &route, 1).await?;
    let flight =
        h.wd.exec(
            "return document.querySelector('[data-testid=result-row]').dataset.flightId;",
            json!([]),
        )
        .await?;
    h.wd.exec("location.hash = '#/admin'; return true;", json!([]))
        .await?;
    h.wd.wait_visible("#admin-token-form", UI_TIMEOUT).await?;
    h.wd.type_into("#admin-token", &h.server.token).await?;
    h.wd.click("#admin-token-save").await?;
    h.wd.wait_visible("#admin-panel", UI_TIMEOUT).await?;

    // Pause a booking while its delayed step runs.
    h.scenario = "pause";
    let id = book(
        h,
        &flight,
        &route.date,
        json!({"award_miles": {"mode": "delay", "ms": 2500}}),
    )
    .await?;
    open_running(h, &id).await?;
    h.wd.type_into("#ops-operator", "ada").await?;
    h.wd.type_into("#ops-reason", "provider down").await?;
    let p = preview(h, "pause").await?;
    ensure!(
        p["steps"][0] == json!(["finish", "award_miles"]) && p["held"] == 1,
        "the pause preview: award_miles finishes, then it holds: {p}"
    );
    ensure!(
        saga_status(h, &id).await? == "running",
        "the dry run changed the saga"
    );
    h.shot("pause-preview-1280").await?;
    h.wd.click("[data-testid=ops-confirm]").await?;
    status_is(h, "paused").await?;
    let held = h
        .wd
        .wait_js(
            "paused on the timeline, award_miles done, confirm_booking not started",
            "const t = document.querySelector('[data-testid=saga-timeline]');\
             const band = t.querySelector('[data-testid=timeline-paused]');\
             const done = t.querySelector('[data-kind=attempt][data-step=award_miles][data-outcome=ok]');\
             if (!band || !done) return null;\
             return { open: band.dataset.open, confirm: t.querySelectorAll('[data-step=confirm_booking]').length };",
            json!([]),
            SAGA_WAIT,
        )
        .await?;
    ensure!(
        held == json!({"open": "true", "confirm": 0}),
        "while paused: {held}"
    );
    ensure!(
        saga_status(h, &id).await? == "paused",
        "the API says paused"
    );
    h.shot("paused-1280").await?;
    viewport(h, 390, 844).await?;
    inside_viewport(h, "[data-testid=ops-pause]", 1).await?;
    inside_viewport(h, "[data-testid=ops-timeline]", 1).await?;
    scroll_to(h, "[data-testid=ops-timeline]").await?;
    h.shot("paused-390").await?;
    viewport(h, 1280, 1000).await?;

    let p = preview(h, "resume").await?;
    ensure!(
        p["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x == &json!(["run", "confirm_booking"]))),
        "the resume preview runs confirm_booking: {p}"
    );
    h.wd.click("[data-testid=ops-confirm]").await?;
    status_is(h, "completed").await?;
    let done = h
        .wd
        .wait_js(
            "the completed timeline",
            "const t = document.querySelector('[data-testid=saga-timeline]');\
             const band = t.querySelector('[data-testid=timeline-paused]');\
             const confirm = t.querySelector('[data-kind=attempt][data-step=confirm_booking][data-outcome=ok]');\
             return band && confirm ? band.dataset.open : null;",
            json!([]),
            SAGA_WAIT,
        )
        .await?;
    ensure!(done == "false", "the pause ended on the timeline: {done}");
    let history =
        h.wd.exec(
            "return Array.from(document.querySelectorAll('#ops-history li')).map((l) => l.dataset.event);",
            json!([]),
        )
        .await?;
    ensure!(
        history.as_array().is_some_and(
            |h| h.contains(&json!("saga_paused")) && h.contains(&json!("saga_unpaused"))
        ),
        "the history lists the pause and the resume: {history}"
    );
    h.shot("completed-1280").await?;

    // A dry run of a force-compensation changes nothing; the real one
    // compensates.
    h.scenario = "force-compensate";
    let id = book(
        h,
        &flight,
        &route.date,
        json!({"award_miles": {"mode": "delay", "ms": 4000}}),
    )
    .await?;
    open_running(h, &id).await?;
    let p = preview(h, "force-compensate").await?;
    let compensations = p["steps"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|x| x[0] == "compensate").count());
    ensure!(
        compensations >= 2
            && p["title"]
                .as_str()
                .is_some_and(|t| t.contains("compensated")),
        "the preview lists the compensations: {p}"
    );
    ensure!(
        saga_status(h, &id).await? == "running",
        "the dry run changed the saga"
    );
    h.shot("force-preview-1280").await?;
    h.wd.click("[data-testid=ops-confirm]").await?;
    status_is(h, "compensated").await?;
    let bars = h
        .wd
        .wait_js(
            "compensation bars on the timeline",
            "const n = document.querySelectorAll('[data-testid=saga-timeline] [data-kind=compensation][data-outcome=ok]').length;\
             return n >= 2 ? n : null;",
            json!([]),
            SAGA_WAIT,
        )
        .await?;
    println!("compensation bars: {bars}");
    h.shot("compensated-1280").await?;
    viewport(h, 390, 844).await?;
    inside_viewport(h, "[data-testid=ops-timeline]", 1).await?;
    scroll_to(h, "[data-testid=ops-timeline]").await?;
    h.shot("compensated-390").await?;
    no_csp_violations(h, "the saga page").await?;
    let errors =
        h.wd.exec("return window.__e2eErrors || [];", json!([]))
            .await?;
    ensure!(
        errors.as_array().is_some_and(|a| a.is_empty()),
        "the page reported script errors: {errors}"
    );
    Ok(())
}
