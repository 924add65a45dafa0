//! The web page end to end: the real `demo-server` binary, driven through
//! headless Chromium by chromedriver's W3C WebDriver HTTP API (plain JSON
//! over hyper, no WebDriver crate). One browser tab books a flight the way a
//! user does (search with airport autocomplete, Book, passengers and card,
//! live saga view until the booking reference), then books again with a
//! rejection injected at `award_miles` and watches the saga compensate.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`; without them
//! the test fails, it never skips. Screenshots, the page source on failure
//! and the server and chromedriver logs go to `browser-artifacts/` in the
//! cargo target directory.
//!
//! ```text
//! cargo test -p demo-server --features chromium --test browser -- --nocapture
//! ```

#![cfg(feature = "chromium")]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER_BIN: &str = env!("CARGO_BIN_EXE_demo-server");
/// Where the Debian package `chromium` puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL_HINT: &str =
    "install the Debian packages chromium and chromium-driver (apt-get install -y chromium chromium-driver)";
/// The test card that payments approve.
const APPROVING_CARD: &str = "4242 4242 4242 4242";
const STEPS: [&str; 7] = [
    "reserve_seat",
    "reserve_return_seat",
    "redeem_miles",
    "authorize_payment",
    "award_miles",
    "confirm_booking",
    "send_itinerary",
];
/// How long the page may take to show something after an action.
const UI_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a saga may take to end in the live view.
const SAGA_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one HTTP request (to the server or to chromedriver) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
/// The W3C key of an element reference in WebDriver JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Returns early with a formatted error when a condition does not hold.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The admin page and the search results at desktop and phone widths.
#[path = "browser_ops/mod.rs"]
mod ops;
/// Dates of birth and the phone on the form, the date on the ticket.
#[path = "browser_passenger/mod.rs"]
mod passenger;
/// A round trip: search with a return date, both legs booked and watched.
#[path = "browser_round_trip/mod.rs"]
mod round_trip;
/// A saga's operations page: pause, resume, dry run, force compensation.
#[path = "browser_saga_ops/mod.rs"]
mod saga_ops;
/// The harness and the WebDriver client the scenarios use.
#[path = "browser_support/mod.rs"]
mod support;
/// Accounts, My trips, promo code, miles, PDF ticket, cancellation.
#[path = "browser_traveller/mod.rs"]
mod traveller;
use support::*;
/// Confirm with your bank, and hold now, pay later.
#[path = "browser_waits/mod.rs"]
mod waits;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_confirms_then_one_with_a_rejection_compensates_in_the_browser() {
    let started = Instant::now();
    let mut h = Harness::start("booking").await;
    let outcome = run_scenarios(&mut h).await;
    h.finish(outcome, started).await;
}

async fn run_scenarios(h: &mut Harness) -> Result<(), String> {
    let route = find_route(&h.http, &h.server.base).await?;
    println!(
        "route: {} -> {} (typed as {:?}) on {}",
        route.from, route.to, route.to_typed, route.date
    );
    h.wd.goto(&format!("{}/", h.server.base)).await?;
    h.wd.wait_visible("#search-form", UI_TIMEOUT).await?;
    h.wd.exec(WATCH_ERRORS_JS, json!([])).await?;

    h.scenario = "1 confirm";
    let t = Instant::now();
    confirm_scenario(h, &route).await?;
    println!("scenario 1 (confirm) took {:.1?}", t.elapsed());

    h.scenario = "2 compensate";
    let t = Instant::now();
    compensate_scenario(h, &route).await?;
    println!("scenario 2 (compensate) took {:.1?}", t.elapsed());

    let errors =
        h.wd.exec("return window.__e2eErrors || [];", json!([]))
            .await?;
    ensure!(
        errors.as_array().is_some_and(|a| a.is_empty()),
        "the page reported script errors: {errors}"
    );
    Ok(())
}

/// Scenario 1: two passengers, the approving card, no faults; the live
/// view shows every step succeed and ends in a six-character reference.
async fn confirm_scenario(h: &mut Harness, route: &Route) -> Result<(), String> {
    search(h, route, 2).await?;
    h.shot("1-results").await?;
    open_first_result(h).await?;
    fill_booking_form(
        h,
        &[("Ada", "Lovelace"), ("Charles", "Babbage")],
        "ada@example.com",
    )
    .await?;
    h.shot("1-booking-form").await?;
    let booking_id = submit_booking(h).await?;
    let view = watch_saga(h).await?;
    h.shot("1-confirmed").await?;

    let api = booking_from_api(h, &booking_id).await?;
    let reference = h.wd.text("#booking-ref").await?;
    ensure!(
        reference.len() == 6 && reference.bytes().all(|b| b.is_ascii_alphanumeric()),
        "#booking-ref shows {reference:?}, not a six-character reference (view: {view:?})"
    );
    ensure!(
        api["status"] == "confirmed" && api["booking_ref"] == reference.as_str(),
        "the page shows reference {reference} but the API says {api}"
    );
    ensure!(
        view.failure.is_none() && view.status == "confirmed",
        "the live view should show a confirmed booking: {view:?}"
    );
    for step in STEPS {
        ensure!(
            view.state(step) == Some("succeeded"),
            "step {step} should show succeeded in the live view: {view:?}"
        );
        ensure!(
            view.went_through(step, &["pending", "running", "succeeded"]),
            "step {step} should have gone pending, running, succeeded in the live view: {view:?}"
        );
    }
    ensure!(
        view.count("step_succeeded") == STEPS.len() && view.count("saga_finished") == 1,
        "the event log should list a step_succeeded per step and one saga_finished: {:?}",
        view.log
    );
    println!("scenario 1: booking {booking_id} confirmed with reference {reference}");
    Ok(())
}

/// Scenario 2: in the same tab, back to search, book again with the
/// `award_miles` switch on "reject"; the live view shows the rejection, the
/// three earlier steps compensated, and the reason.
async fn compensate_scenario(h: &mut Harness, route: &Route) -> Result<(), String> {
    h.wd.click("#nav-search").await?;
    h.wd.wait_visible("#search-form", UI_TIMEOUT).await?;
    search(h, route, 1).await?;
    open_first_result(h).await?;
    fill_booking_form(h, &[("Grace", "Hopper")], "grace@example.com").await?;
    h.wd.select("#fault-award_miles-mode", "reject").await?;
    let mode = h.wd.js_value("#fault-award_miles-mode").await?;
    ensure!(
        mode == "reject",
        "the award_miles switch shows {mode:?}, not reject"
    );
    h.shot("2-booking-form").await?;
    let booking_id = submit_booking(h).await?;
    let view = watch_saga(h).await?;
    h.shot("2-compensated").await?;

    let api = booking_from_api(h, &booking_id).await?;
    let reason = api["failure_reason"].as_str().unwrap_or_default();
    ensure!(
        api["status"] == "compensated" && reason.contains("award_miles"),
        "the API should report a compensated booking rejected at award_miles: {api}"
    );
    let shown = h.wd.text("#saga-failure").await?;
    ensure!(
        shown.contains(reason),
        "#saga-failure shows {shown:?}, which lacks the reason {reason:?}"
    );
    ensure!(
        view.status == "compensated",
        "the status badge should say compensated: {view:?}"
    );
    let reference = h.wd.text("#booking-ref").await?;
    ensure!(
        reference.is_empty(),
        "a compensated booking shows the reference {reference:?}"
    );
    for (step, state) in [
        ("reserve_seat", "compensated"),
        ("reserve_return_seat", "compensated"),
        ("redeem_miles", "compensated"),
        ("authorize_payment", "compensated"),
        ("award_miles", "rejected"),
        ("confirm_booking", "pending"),
    ] {
        ensure!(
            view.state(step) == Some(state),
            "step {step} should show {state} in the live view: {view:?}"
        );
    }
    for (step, states) in [
        (
            "reserve_seat",
            &["running", "succeeded", "compensating", "compensated"][..],
        ),
        (
            "redeem_miles",
            &["running", "succeeded", "compensating", "compensated"],
        ),
        (
            "authorize_payment",
            &["running", "succeeded", "compensating", "compensated"],
        ),
        ("award_miles", &["running", "rejected"]),
        ("confirm_booking", &["pending"]),
    ] {
        ensure!(
            view.went_through(step, states),
            "step {step} should have shown {states:?} in the live view: {view:?}"
        );
    }
    ensure!(
        view.count("step_compensated") == 4 && view.count("saga_finished") == 1,
        "the event log should list four step_compensated (the one-way booking's return member too) and one saga_finished: {:?}",
        view.log
    );
    println!("scenario 2: booking {booking_id} compensated: {shown}");
    Ok(())
}

// ---------- page steps ----------

/// A route of the default dataset and a date it flies, found through the
/// JSON API so the test does not guess.
struct Route {
    from: String,
    to: String,
    /// What the test types into "To": the city when the autocomplete's best
    /// match for it is the airport, else the code.
    to_typed: String,
    date: String,
}

async fn find_route(http: &HttpClient, base: &str) -> Result<Route, String> {
    let (status, body) =
        http_json(http, Method::GET, &format!("{base}/api/airports"), None).await?;
    ensure!(
        status == StatusCode::OK,
        "GET /api/airports: {status} {body}"
    );
    let airports = body["airports"].as_array().cloned().unwrap_or_default();
    let city_of = |code: &str| {
        airports
            .iter()
            .find(|a| a["code"] == code)
            .and_then(|a| a["city"].as_str())
            .map(str::to_string)
    };
    let mut pairs: Vec<(String, String)> = [("JFK", "LAX"), ("DEL", "BOM"), ("LHR", "JFK")]
        .iter()
        .filter(|(a, b)| city_of(a).is_some() && city_of(b).is_some())
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    // Another catalog: try pairs of its first airports.
    let codes: Vec<String> = airports
        .iter()
        .take(6)
        .filter_map(|a| a["code"].as_str().map(str::to_string))
        .collect();
    for a in &codes {
        for b in codes.iter().filter(|b| *b != a) {
            pairs.push((a.clone(), b.clone()));
        }
    }
    // Three weeks out, so the date is in the future in every time zone.
    let first_day = chrono::Utc::now().date_naive() + chrono::Days::new(21);
    for (from, to) in pairs {
        for d in 0..7 {
            let date = (first_day + chrono::Days::new(d)).to_string();
            let url =
                format!("{base}/api/flights/search?from={from}&to={to}&date={date}&passengers=2");
            let (status, body) = http_json(http, Method::GET, &url, None).await?;
            ensure!(status == StatusCode::OK, "GET {url}: {status} {body}");
            if body["results"].as_array().is_some_and(|r| !r.is_empty()) {
                let city = city_of(&to).unwrap_or_default();
                let url = format!("{base}/api/airports?limit=1&q={}", percent_encode(&city));
                let (_, best) = http_json(http, Method::GET, &url, None).await?;
                let to_typed = if !city.is_empty() && best["airports"][0]["code"] == to.as_str() {
                    city
                } else {
                    to.clone()
                };
                return Ok(Route {
                    from,
                    to,
                    to_typed,
                    date,
                });
            }
        }
    }
    Err("no route with flights found in the catalog through /api/flights/search".into())
}

/// A query parameter value with every byte but ASCII letters and digits
/// percent-encoded.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Fills the search form (the origin as a code, the destination as typed
/// by `route`), checks the autocomplete offers both airports, and waits for
/// fresh results.
async fn search(h: &Harness, route: &Route, passengers: u32) -> Result<(), String> {
    let wd = &h.wd;
    wd.type_into("#search-from", &route.from).await?;
    wd.wait_js(
        &format!("the autocomplete to offer {}", route.from),
        "return document.querySelector('#airports-list option[value=\"' + arguments[0] + '\"]') ? true : null;",
        json!([route.from]),
        UI_TIMEOUT,
    )
    .await?;
    wd.type_into("#search-to", &route.to_typed).await?;
    wd.wait_js(
        &format!("the autocomplete to offer {} for {:?}", route.to, route.to_typed),
        "return document.querySelector('#airports-list option[value=\"' + arguments[0] + '\"]') ? true : null;",
        json!([route.to]),
        UI_TIMEOUT,
    )
    .await?;
    // A date input's keyboard format depends on the locale; set its value.
    let set = wd
        .exec(
            "const d = document.getElementById('search-date'); d.value = arguments[0];\
             d.dispatchEvent(new Event('input', {bubbles: true}));\
             d.dispatchEvent(new Event('change', {bubbles: true})); return d.value;",
            json!([route.date]),
        )
        .await?;
    ensure!(
        set == route.date.as_str(),
        "the date input took {set}, not {}",
        route.date
    );
    wd.type_into("#search-passengers", &passengers.to_string())
        .await?;
    // Results of an earlier search stay on the page until the new ones
    // arrive: mark them so the wait below sees only fresh ones.
    wd.exec(
        "document.querySelectorAll('[data-testid=book-button]').forEach((b) => b.dataset.e2eStale = '1');",
        json!([]),
    )
    .await?;
    wd.click("#search-submit").await?;
    wd.wait_js(
        "fresh search results with a Book button",
        "const err = document.getElementById('search-error');\
         if (!err.hidden) return {error: err.textContent};\
         return document.querySelector('[data-testid=results-table-outbound] [data-testid=book-button]:not([data-e2e-stale])') ? {ok: true} : null;",
        json!([]),
        UI_TIMEOUT,
    )
    .await
    .and_then(|v| match v["error"].as_str() {
        Some(e) => Err(format!("the search failed on the page: {e}")),
        None => Ok(()),
    })?;
    let from = wd.js_value("#search-from").await?;
    let to = wd.js_value("#search-to").await?;
    ensure!(
        from == route.from && to == route.to,
        "the search resolved the airports to {from} -> {to}, not {} -> {}",
        route.from,
        route.to
    );
    Ok(())
}

/// Clicks Book on the first result and waits for the booking form, its
/// flight summary and the test cards (which, once loaded, fill the card
/// number: typing before that would be overwritten).
async fn open_first_result(h: &Harness) -> Result<(), String> {
    let wd = &h.wd;
    let first = "[data-testid=results-table-outbound] [data-testid=book-button]";
    let flight = wd.attribute(first, "data-flight-id").await?;
    wd.click(first).await?;
    wd.wait_visible("#booking-form", UI_TIMEOUT).await?;
    wd.wait_js(
        "the booking form with its flight summary, passenger rows and test cards",
        "return location.hash.includes('flight=' + encodeURIComponent(arguments[0]))\
           && document.querySelector('#booking-summary h2')\
           && document.getElementById('pax-0-first')\
           && document.querySelectorAll('#card-test option').length > 1 ? true : null;",
        json!([flight]),
        UI_TIMEOUT,
    )
    .await?;
    Ok(())
}

async fn fill_booking_form(
    h: &Harness,
    passengers: &[(&str, &str)],
    email: &str,
) -> Result<(), String> {
    let wd = &h.wd;
    let rows = wd
        .exec(
            "return document.querySelectorAll('#passenger-list [data-testid^=passenger-]').length;",
            json!([]),
        )
        .await?;
    ensure!(
        rows == passengers.len(),
        "the form has {rows} passenger rows for {} passengers",
        passengers.len()
    );
    for (i, (first, last)) in passengers.iter().enumerate() {
        wd.type_into(&format!("#pax-{i}-first"), first).await?;
        wd.type_into(&format!("#pax-{i}-last"), last).await?;
        wd.type_into(&format!("#pax-{i}-dob"), "1990-01-01").await?;
    }
    wd.type_into("#booking-email", email).await?;
    wd.type_into("#booking-phone", "+44 20 7946 0958").await?;
    wd.type_into("#card-number", APPROVING_CARD).await?;
    wd.type_into(
        "#card-holder",
        &format!("{} {}", passengers[0].0, passengers[0].1),
    )
    .await?;
    let number = wd.js_value("#card-number").await?;
    ensure!(
        number == APPROVING_CARD,
        "the card number field holds {number:?}"
    );
    Ok(())
}

/// Submits the booking form; returns the booking id the page moved to.
async fn submit_booking(h: &Harness) -> Result<String, String> {
    h.wd.exec(OBSERVE_STEPS_JS, json!([])).await?;
    h.wd.click("#booking-submit").await?;
    let v =
        h.wd.wait_js(
            "the live saga view of the new booking",
            "if (location.hash.startsWith('#/booking/'))\
               return {id: decodeURIComponent(location.hash.slice('#/booking/'.length))};\
             const err = document.getElementById('booking-error');\
             return err.hidden ? null : {error: err.textContent};",
            json!([]),
            UI_TIMEOUT,
        )
        .await?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("the booking was refused on the page: {e}"));
    }
    h.wd.wait_visible("#view-saga", UI_TIMEOUT).await?;
    v["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no booking id in {v}"))
}

/// What the live saga view showed, polled until it ended.
#[derive(Debug, Default)]
struct SagaView {
    /// Every state each step's row showed, in order (repeats collapsed),
    /// as recorded by [`OBSERVE_STEPS_JS`].
    history: Vec<(String, Vec<String>)>,
    /// Each step's last state, in page order.
    steps: Vec<(String, String)>,
    status: String,
    reference: Option<String>,
    failure: Option<String>,
    /// The kinds of event in the page's event log.
    log: Vec<String>,
}

impl SagaView {
    fn state(&self, step: &str) -> Option<&str> {
        self.steps
            .iter()
            .find(|(s, _)| s == step)
            .map(|(_, state)| state.as_str())
    }

    /// Whether the step's row showed `states` in this order (others may
    /// come between them).
    fn went_through(&self, step: &str, states: &[&str]) -> bool {
        let shown = self
            .history
            .iter()
            .find(|(s, _)| s == step)
            .map(|(_, h)| h.as_slice())
            .unwrap_or_default();
        let mut rest = shown.iter();
        states.iter().all(|want| rest.any(|s| s == want))
    }

    fn count(&self, event: &str) -> usize {
        self.log.iter().filter(|e| *e == event).count()
    }
}

/// Records every state the step rows of the live view take, from before
/// the booking is submitted: a saga can finish between two polls, but not
/// between two mutation records.
const OBSERVE_STEPS_JS: &str = "\
    if (window.__e2eObserver) window.__e2eObserver.disconnect();\
    const seen = window.__e2eStates = {};\
    const note = (li, state) => {\
      if (!li.dataset || !li.dataset.step || state === null) return;\
      const h = seen[li.dataset.step] = seen[li.dataset.step] || [];\
      if (h[h.length - 1] !== state) h.push(state);\
    };\
    window.__e2eObserver = new MutationObserver((records) => {\
      for (const r of records) {\
        if (r.type === 'attributes') { note(r.target, r.oldValue); note(r.target, r.target.dataset.state); }\
        else for (const n of r.addedNodes) if (n.nodeType === 1) note(n, n.dataset.state);\
      }\
    });\
    window.__e2eObserver.observe(document.getElementById('saga-steps'),\
      {subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'], attributeOldValue: true});";

const SAGA_VIEW_JS: &str = "\
    const confirmed = document.getElementById('booking-confirmed');\
    const failure = document.getElementById('saga-failure');\
    return {\
      history: window.__e2eStates || {},\
      steps: Array.from(document.querySelectorAll('#saga-steps li[data-step]'), (li) => [li.dataset.step, li.dataset.state]),\
      status: document.getElementById('saga-status').dataset.status,\
      reference: confirmed.hidden ? null : document.getElementById('booking-ref').textContent,\
      failure: failure.hidden ? null : failure.textContent,\
      log: Array.from(document.querySelectorAll('#saga-log li'), (li) => li.dataset.event),\
    };";

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Polls the live view until it shows a reference or a failure.
async fn watch_saga(h: &Harness) -> Result<SagaView, String> {
    let deadline = Instant::now() + SAGA_TIMEOUT;
    loop {
        let v = h.wd.exec(SAGA_VIEW_JS, json!([])).await?;
        let view = SagaView {
            history: v["history"]
                .as_object()
                .map(|o| o.iter().map(|(k, h)| (k.clone(), strings(h))).collect())
                .unwrap_or_default(),
            steps: v["steps"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(strings)
                        .map(|p| (p[0].clone(), p[1].clone()))
                        .collect()
                })
                .unwrap_or_default(),
            status: v["status"].as_str().unwrap_or_default().to_string(),
            reference: v["reference"].as_str().map(str::to_string),
            failure: v["failure"].as_str().map(str::to_string),
            log: strings(&v["log"]),
        };
        if view.reference.is_some() || view.failure.is_some() {
            return Ok(view);
        }
        ensure!(
            Instant::now() < deadline,
            "the live view showed neither #booking-ref nor #saga-failure within {SAGA_TIMEOUT:?}: {view:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn booking_from_api(h: &Harness, id: &str) -> Result<Value, String> {
    let url = format!("{}/api/bookings/{id}", h.server.base);
    let (status, body) = http_json(&h.http, Method::GET, &url, None).await?;
    ensure!(status == StatusCode::OK, "GET {url}: {status} {body}");
    Ok(body)
}

/// Collects uncaught errors, rejected promises and console errors of the
/// page (which stays one document: the app routes by hash).
const WATCH_ERRORS_JS: &str = "\
    window.__e2eErrors = [];\
    window.addEventListener('error', (e) => window.__e2eErrors.push('error: ' + e.message));\
    window.addEventListener('unhandledrejection', (e) => window.__e2eErrors.push('rejection: ' + e.reason));\
    const original = console.error;\
    console.error = (...args) => { window.__e2eErrors.push('console.error: ' + args.join(' ')); original(...args); };";

#[test]
fn base64_and_percent_encoding_helpers() {
    assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
    assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
    assert_eq!(base64_decode("aGk=\n").unwrap(), b"hi");
    assert!(base64_decode("a$").is_err());
    assert_eq!(percent_encode("São Paulo"), "S%C3%A3o%20Paulo");
}
