//! The traveller's pages in the browser: register, link a loyalty account,
//! book logged in with a promo code (the quote on the form is the charge),
//! book again paying part with miles (quote = charge, the miles balance
//! exact), see both in My trips newest first, open the PDF ticket from
//! there, cancel the older trip from My trips and watch it live to its
//! refund, with the seats back on the flight. Screenshots of each page.

use super::{
    booking_from_api, find_route, open_first_result, search, submit_booking, watch_saga, Harness,
    Instant, SAGA_TIMEOUT, UI_TIMEOUT, WATCH_ERRORS_JS,
};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traveller_registers_books_with_a_code_and_miles_prints_and_cancels_in_the_browser() {
    let started = Instant::now();
    let mut h = Harness::start("traveller").await;
    let outcome = run(&mut h).await;
    h.finish(outcome, started).await;
}

/// A request from the page (same origin; the session cookie goes along).
async fn fetch(
    h: &Harness,
    method: &str,
    path: &str,
    headers: Value,
    body: Value,
) -> Result<Value, String> {
    h.wd.exec(
        "return fetch(arguments[1], { method: arguments[0], headers: arguments[2],\
           body: arguments[3] === null ? undefined : JSON.stringify(arguments[3]) })\
         .then(async (r) => ({ status: r.status, body: await r.json().catch(() => null) }));",
        json!([method, path, headers, body]),
    )
    .await
}

async fn miles_balance(h: &Harness, member: &str) -> Result<u64, String> {
    let r = fetch(
        h,
        "GET",
        &format!("/api/loyalty/{member}?last_name=Lovelace"),
        json!({}),
        Value::Null,
    )
    .await?;
    r["body"]["account"]["balance"]
        .as_u64()
        .ok_or_else(|| format!("no balance: {r}"))
}

async fn seats_left(h: &Harness, flight: &str, date: &str) -> Result<u64, String> {
    let r = fetch(
        h,
        "GET",
        &format!("/api/flights/{flight}?date={date}"),
        json!({}),
        Value::Null,
    )
    .await?;
    r["body"]["seats_left"]["economy"]
        .as_u64()
        .ok_or_else(|| format!("no seats_left: {r}"))
}

/// Fills passenger, email and card (the email is the account's already).
async fn fill(h: &Harness) -> Result<(), String> {
    h.wd.type_into("#pax-0-first", "Ada").await?;
    h.wd.type_into("#pax-0-last", "Lovelace").await?;
    h.wd.type_into("#pax-0-dob", "1990-01-01").await?;
    h.wd.type_into("#booking-phone", "+44 20 7946 0958").await?;
    h.wd.type_into("#card-number", "4242 4242 4242 4242")
        .await?;
    h.wd.type_into("#card-holder", "Ada Lovelace").await?;
    let email = h.wd.js_value("#booking-email").await?;
    ensure!(
        email == "ada@example.com",
        "the form took the account's email: {email:?}"
    );
    Ok(())
}

/// Asks the form for its quote and returns the charge it shows (minor units).
async fn quote(h: &Harness, shown: &str) -> Result<i64, String> {
    h.wd.click("#quote-refresh").await?;
    let v =
        h.wd.wait_js(
            &format!("the quote with {shown}"),
            "const c = document.querySelector('[data-testid=quote-charge]');\
             const part = document.querySelector('[data-testid=' + arguments[0] + ']');\
             const err = document.getElementById('quote-error');\
             if (!err.hidden) return {error: err.textContent};\
             return c && part ? {minor: Number(c.dataset.minor), text: c.textContent} : null;",
            json!([shown]),
            UI_TIMEOUT,
        )
        .await?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("the quote was refused: {e}"));
    }
    v["minor"]
        .as_i64()
        .ok_or_else(|| format!("no charge in {v}"))
}

/// Books what the form holds; the booking id once confirmed.
async fn book(h: &Harness, what: &str) -> Result<(String, Value), String> {
    let id = submit_booking(h).await?;
    let view = watch_saga(h).await?;
    ensure!(
        view.status == "confirmed",
        "{what}: the live view ended {view:?}"
    );
    let api = booking_from_api(h, &id).await?;
    Ok((id, api))
}

async fn run(h: &mut Harness) -> Result<(), String> {
    let route = find_route(&h.http, &h.server.base).await?;
    h.wd.goto(&format!("{}/", h.server.base)).await?;
    h.wd.wait_visible("#search-form", UI_TIMEOUT).await?;
    h.wd.exec(WATCH_ERRORS_JS, json!([])).await?;

    // The operator's promo code and the traveller's loyalty account.
    h.scenario = "setup";
    let now = chrono::Utc::now();
    let bearer = format!("Bearer {}", h.server.token);
    let r = fetch(h, "PUT", "/api/admin/promo-codes/spring10",
        json!({"Content-Type": "application/json", "Authorization": bearer}),
        json!({"rule": {"kind": "percent", "percent": 10}, "valid_from": now - chrono::Duration::hours(1),
            "valid_until": now + chrono::Duration::days(1), "max_uses": 5})).await?;
    ensure!(r["status"] == 200, "promo code: {r}");
    let r = fetch(
        h,
        "POST",
        "/api/loyalty",
        json!({"Content-Type": "application/json", "Idempotency-Key": "browser-enroll"}),
        json!({"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}),
    )
    .await?;
    let member = r["body"]["account"]["id"]
        .as_str()
        .ok_or_else(|| format!("enroll: {r}"))?
        .to_string();

    // Register: logged in, on an empty My trips.
    h.scenario = "register";
    h.wd.click("#nav-account").await?;
    h.wd.type_into("#register-name", "Ada Lovelace").await?;
    h.wd.type_into("#register-email", "ada@example.com").await?;
    h.wd.type_into("#register-password", "correct horse battery")
        .await?;
    h.shot("1-register").await?;
    h.wd.click("#register-submit").await?;
    h.wd.wait_visible("[data-testid=trips-empty]", UI_TIMEOUT)
        .await?;
    let nav = h.wd.text("#nav-account").await?;
    ensure!(
        nav == "Ada Lovelace",
        "the nav shows {nav:?} once logged in"
    );

    // Link the loyalty account.
    h.scenario = "link loyalty";
    h.wd.click("#nav-account").await?;
    h.wd.type_into("#link-loyalty-id", &member).await?;
    h.wd.type_into("#link-loyalty-last-name", "Lovelace")
        .await?;
    h.wd.click("#link-loyalty-submit").await?;
    h.wd.wait_js("the linked loyalty account",
        "const d = document.querySelector('[data-testid=account-loyalty-id]'); return d && d.textContent === arguments[0] ? true : null;",
        json!([member]), UI_TIMEOUT).await?;
    h.shot("2-account-linked").await?;

    // Book with a promo code: the quote shown is the charge.
    h.scenario = "promo";
    h.wd.click("#nav-search").await?;
    search(h, &route, 1).await?;
    open_first_result(h).await?;
    fill(h).await?;
    let loyalty = h.wd.js_value("#booking-loyalty").await?;
    ensure!(
        loyalty == member,
        "the form took the linked loyalty number: {loyalty:?}"
    );
    h.wd.type_into("#booking-promo", "spring10").await?;
    let charge1 = quote(h, "quote-promo").await?;
    h.shot("3-promo-quote").await?;
    let flight =
        h.wd.exec(
            "return new URLSearchParams(location.hash.split('?')[1]).get('flight');",
            json!([]),
        )
        .await?
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (id1, b1) = book(h, "promo booking").await?;
    ensure!(
        b1["total"]["minor"] == charge1,
        "quoted {charge1}, charged {}",
        b1["total"]
    );
    let balance1 = miles_balance(h, &member).await?;
    ensure!(
        balance1 > 100,
        "miles earned by the first booking: {balance1}"
    );

    // Book paying 100 miles: quote = charge, balance exact.
    h.scenario = "miles";
    h.wd.click("#nav-search").await?;
    search(h, &route, 1).await?;
    open_first_result(h).await?;
    fill(h).await?;
    h.wd.type_into("#booking-redeem-miles", "100").await?;
    let charge2 = quote(h, "quote-miles").await?;
    h.shot("4-miles-quote").await?;
    let (id2, b2) = book(h, "miles booking").await?;
    ensure!(
        b2["total"]["minor"] == charge2,
        "quoted {charge2}, charged {}",
        b2["total"]
    );
    let earned2 = b2["miles_awarded"].as_u64().unwrap_or(0);
    let balance2 = miles_balance(h, &member).await?;
    ensure!(
        balance2 == balance1 - 100 + earned2,
        "miles: {balance1} - 100 + {earned2} earned should be {}, is {balance2}",
        balance1 - 100 + earned2
    );

    // My trips, newest first, with the miles.
    h.scenario = "my trips";
    h.wd.click("#nav-trips").await?;
    let order = h
        .wd
        .wait_js("two trips", "const t = [...document.querySelectorAll('[data-testid=trip]')].map((e) => e.dataset.bookingId);\
            return t.length === 2 ? t : null;", json!([]), UI_TIMEOUT)
        .await?;
    ensure!(order == json!([id2, id1]), "newest first: {order}");
    let shown = h.wd.text("[data-testid=trips-miles-balance]").await?;
    ensure!(
        shown.replace([',', '.', '\u{a0}', ' '], "") == balance2.to_string(),
        "My trips shows {shown:?} miles, the account has {balance2}"
    );
    h.shot("5-my-trips").await?;

    // The PDF ticket link works (with the session, no last name).
    h.scenario = "pdf";
    let pdf = h
        .wd
        .exec(
            "const a = document.querySelector('[data-booking-id=\"' + arguments[0] + '\"] [data-testid=trip-ticket-pdf]');\
             return fetch(a.getAttribute('href')).then(async (r) => ({ status: r.status, type: r.headers.get('content-type'),\
               head: new TextDecoder().decode((await r.arrayBuffer()).slice(0, 5)) }));",
            json!([id1]),
        )
        .await?;
    ensure!(
        pdf["status"] == 200 && pdf["type"] == "application/pdf" && pdf["head"] == "%PDF-",
        "the PDF link: {pdf}"
    );

    // Cancel the older trip from My trips: live steps, the refund, seats back.
    h.scenario = "cancel";
    let before = seats_left(h, &flight, &route.date).await?;
    let card = format!("[data-testid=trip][data-booking-id=\"{id1}\"]");
    h.wd.click(&format!("{card} [data-testid=trip-cancel]"))
        .await?;
    let done = h
        .wd
        .wait_js("the cancellation's result",
            "const r = document.querySelector(arguments[0] + ' [data-testid=trip-cancel-result]');\
             const steps = document.querySelectorAll(arguments[0] + ' [data-testid=trip-cancel-steps] li').length;\
             return r ? {status: r.dataset.status, refund: Number(r.dataset.refundMinor), text: r.textContent,\
               badge: document.querySelector(arguments[0] + ' [data-testid=trip-status]').textContent, steps} : null;",
            json!([card]), SAGA_TIMEOUT)
        .await?;
    h.shot("6-cancelled").await?;
    ensure!(
        done["status"] == "cancelled" && done["badge"] == "Cancelled",
        "the cancellation ended {done}"
    );
    ensure!(
        done["refund"] == b1["total"]["minor"],
        "a full refund within 24 h: {done} for {}",
        b1["total"]
    );
    ensure!(
        done["text"]
            .as_str()
            .is_some_and(|t| t.contains("Refunded")),
        "{done}"
    );
    let after = seats_left(h, &flight, &route.date).await?;
    ensure!(
        after == before + 1,
        "seats back: {before} before, {after} after"
    );
    let errors =
        h.wd.exec("return window.__e2eErrors || [];", json!([]))
            .await?;
    ensure!(
        errors.as_array().is_some_and(|a| a.is_empty()),
        "the page reported script errors: {errors}"
    );
    Ok(())
}
