//! A round trip in the browser: search with a return date, choose an
//! outbound and a return flight, book both with one form, and watch the
//! live view: the two seat steps (`reserve_seat`, `reserve_return_seat`:
//! one parallel group) stand side by side and run at the same time (each
//! is slowed by a per-booking delay of 1.5 s, so a view that ran them one
//! after the other would never show both running), then the booking is
//! confirmed with the return leg in its overview and in the API.

use super::{
    booking_from_api, fill_booking_form, find_route, http_json, submit_booking, watch_saga,
    Harness, Instant, Method, Route, StatusCode, UI_TIMEOUT, WATCH_ERRORS_JS,
};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_is_searched_booked_and_both_legs_watched_in_the_browser() {
    let started = Instant::now();
    let mut h = Harness::start("round-trip").await;
    let outcome = run(&mut h).await;
    h.finish(outcome, started).await;
}

/// A return date for `route` with flights back, found through the API.
async fn return_date(h: &Harness, route: &Route) -> Result<String, String> {
    let out = chrono::NaiveDate::parse_from_str(&route.date, "%Y-%m-%d")
        .map_err(|e| format!("route date {}: {e}", route.date))?;
    for d in 2..12 {
        let back = (out + chrono::Days::new(d)).to_string();
        let url = format!(
            "{}/api/flights/search?from={}&to={}&date={}&return_date={back}&passengers=1",
            h.server.base, route.from, route.to, route.date
        );
        let (status, body) = http_json(&h.http, Method::GET, &url, None).await?;
        ensure!(status == StatusCode::OK, "GET {url}: {status} {body}");
        if body["inbound"].as_array().is_some_and(|r| !r.is_empty()) {
            return Ok(back);
        }
    }
    Err(format!(
        "no return flight {} -> {} within 12 days of {}",
        route.to, route.from, route.date
    ))
}

/// Sets a date input the way the page reads it (its keyboard format
/// depends on the locale).
async fn set_date(h: &Harness, id: &str, date: &str) -> Result<(), String> {
    let set =
        h.wd.exec(
            "const d = document.getElementById(arguments[0]); d.value = arguments[1];\
             d.dispatchEvent(new Event('input', {bubbles: true}));\
             d.dispatchEvent(new Event('change', {bubbles: true})); return d.value;",
            json!([id, date]),
        )
        .await?;
    ensure!(set == date, "#{id} took {set}, not {date}");
    Ok(())
}

/// Notes whether both seat rows were ever `running` at once.
const BOTH_RUNNING_JS: &str = "\
    window.__e2eBothRunning = false;\
    const steps = document.getElementById('saga-steps');\
    const check = () => {\
      const a = steps.querySelector('li[data-step=reserve_seat]');\
      const b = steps.querySelector('li[data-step=reserve_return_seat]');\
      if (a && b && a.dataset.state === 'running' && b.dataset.state === 'running') window.__e2eBothRunning = true;\
    };\
    if (window.__e2eBoth) window.__e2eBoth.disconnect();\
    window.__e2eBoth = new MutationObserver(check);\
    window.__e2eBoth.observe(steps, {subtree: true, childList: true, attributes: true, attributeFilter: ['data-state']});";

async fn run(h: &mut Harness) -> Result<(), String> {
    let route = find_route(&h.http, &h.server.base).await?;
    let back = return_date(h, &route).await?;
    println!(
        "round trip: {} -> {} on {}, back on {back}",
        route.from, route.to, route.date
    );
    let wd = &h.wd;
    wd.goto(&format!("{}/", h.server.base)).await?;
    wd.wait_visible("#search-form", UI_TIMEOUT).await?;
    wd.exec(WATCH_ERRORS_JS, json!([])).await?;

    // Search with a return date: two tables, a Choose button per row.
    wd.type_into("#search-from", &route.from).await?;
    wd.type_into("#search-to", &route.to).await?;
    set_date(h, "search-date", &route.date).await?;
    set_date(h, "search-return", &back).await?;
    wd.type_into("#search-passengers", "1").await?;
    wd.click("#search-submit").await?;
    wd.wait_js(
        "results for both legs with Choose buttons",
        "const err = document.getElementById('search-error');\
         if (!err.hidden) return {error: err.textContent};\
         return document.querySelector('[data-testid=results-table-outbound] [data-testid=choose-outbound]')\
           && document.querySelector('[data-testid=results-table-inbound] [data-testid=choose-inbound]')\
           ? {ok: true} : null;",
        json!([]),
        UI_TIMEOUT,
    )
    .await
    .and_then(|v| match v["error"].as_str() {
        Some(e) => Err(format!("the search failed on the page: {e}")),
        None => Ok(()),
    })?;
    let book = "[data-testid=book-round-trip]";
    ensure!(
        wd.exec(
            "return document.querySelector(arguments[0]).disabled;",
            json!([book])
        )
        .await?
            == true,
        "Book round trip is enabled before both legs are chosen"
    );
    let out_btn = "[data-testid=results-table-outbound] [data-testid=choose-outbound]";
    let back_btn = "[data-testid=results-table-inbound] [data-testid=choose-inbound]";
    let outbound = wd.attribute(out_btn, "data-flight-id").await?;
    let inbound = wd.attribute(back_btn, "data-flight-id").await?;
    wd.click(out_btn).await?;
    wd.click(back_btn).await?;
    wd.wait_js(
        "both legs chosen",
        "const b = document.querySelector(arguments[0]);\
         return b && !b.disabled && document.querySelectorAll('#search-results tr[data-picked=true]').length === 2 ? true : null;",
        json!([book]),
        UI_TIMEOUT,
    )
    .await?;
    h.shot("rt-1-chosen").await?;
    let wd = &h.wd;
    wd.click(book).await?;
    wd.wait_visible("#booking-form", UI_TIMEOUT).await?;
    wd.wait_js(
        "the booking form with both flights and the test cards",
        "return location.hash.includes('return_flight=' + encodeURIComponent(arguments[0]))\
           && document.querySelector('#booking-summary h2')\
           && document.querySelector('#booking-return h2')\
           && document.getElementById('pax-0-first')\
           && document.querySelectorAll('#card-test option').length > 1 ? true : null;",
        json!([inbound]),
        UI_TIMEOUT,
    )
    .await?;
    fill_booking_form(h, &[("Ada", "Lovelace")], "ada@example.com").await?;
    // Both seat steps slowed by 1.5 s: run at once, they overlap.
    for step in ["reserve_seat", "reserve_return_seat"] {
        h.wd.select(&format!("#fault-{step}-mode"), "delay").await?;
        let ms = h.wd.js_value(&format!("#fault-{step}-value")).await?;
        ensure!(ms == "1500", "the {step} delay shows {ms:?} ms, not 1500");
    }
    h.shot("rt-2-form").await?;
    h.wd.exec(BOTH_RUNNING_JS, json!([])).await?;
    let booking_id = submit_booking(h).await?;
    let view = watch_saga(h).await?;
    h.shot("rt-3-confirmed").await?;

    ensure!(
        view.status == "confirmed" && view.failure.is_none(),
        "the round trip should be confirmed: {view:?}"
    );
    for step in ["reserve_seat", "reserve_return_seat"] {
        ensure!(
            view.went_through(step, &["pending", "running", "succeeded"]),
            "{step} should have gone pending, running, succeeded: {view:?}"
        );
    }
    let both =
        h.wd.exec("return window.__e2eBothRunning === true;", json!([]))
            .await?;
    ensure!(
        both == true,
        "the live view never showed both seat steps running at once: {view:?}"
    );
    let layout = h
        .wd
        .exec(
            "const a = document.querySelector('#saga-steps li[data-step=reserve_seat]').getBoundingClientRect();\
             const b = document.querySelector('#saga-steps li[data-step=reserve_return_seat]').getBoundingClientRect();\
             return {same_row: Math.abs(a.top - b.top) < 1, apart: b.left >= a.right - 1};",
            json!([]),
        )
        .await?;
    ensure!(
        layout["same_row"] == true && layout["apart"] == true,
        "the two seat steps are not side by side: {layout}"
    );
    let shown = h.wd.text("[data-testid=booking-return-leg]").await?;
    let api: Value = booking_from_api(h, &booking_id).await?;
    ensure!(
        api["status"] == "confirmed"
            && api["return_leg"]["flight_id"] == inbound.as_str()
            && api["flight_id"] == outbound.as_str(),
        "the API should show the confirmed round trip {outbound} + {inbound}: {api}"
    );
    let flight_no = api["return_leg"]["flight"]["flight_no"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        !flight_no.is_empty() && shown.contains(flight_no),
        "the overview's return line {shown:?} does not name {flight_no}"
    );
    let step_state = |name: &str| {
        api["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .map(|s| s["state"].clone())
    };
    ensure!(
        step_state("reserve_return_seat") == Some(json!("succeeded")),
        "the API's steps lack a succeeded reserve_return_seat: {api}"
    );
    let errors =
        h.wd.exec("return window.__e2eErrors || [];", json!([]))
            .await?;
    ensure!(
        errors.as_array().is_some_and(|a| a.is_empty()),
        "the page reported script errors: {errors}"
    );
    println!(
        "round trip {booking_id}: {outbound} + {inbound} confirmed, reference {}",
        api["booking_ref"]
    );
    Ok(())
}
