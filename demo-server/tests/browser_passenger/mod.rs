//! The passenger details on the booking form in the browser: the form
//! asks a date of birth per passenger and a phone; an impossible date (a
//! 29 February of 2023) stops the booking on the page, naming and marking
//! the field (the page checks as the server does); corrected, the booking
//! is confirmed and its
//! printable e-ticket lists each passenger with the date of birth given.

use super::{
    fill_booking_form, find_route, open_first_result, search, submit_booking, watch_saga, Harness,
    Instant, UI_TIMEOUT, WATCH_ERRORS_JS,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_asks_dates_of_birth_and_a_phone_and_the_ticket_prints_them() {
    let started = Instant::now();
    let mut h = Harness::start("passenger").await;
    let outcome = run(&mut h).await;
    h.finish(outcome, started).await;
}

async fn run(h: &mut Harness) -> Result<(), String> {
    let route = find_route(&h.http, &h.server.base).await?;
    h.wd.goto(&format!("{}/", h.server.base)).await?;
    h.wd.wait_visible("#search-form", UI_TIMEOUT).await?;
    h.wd.exec(WATCH_ERRORS_JS, json!([])).await?;
    search(h, &route, 2).await?;
    open_first_result(h).await?;
    fill_booking_form(
        h,
        &[("Ada", "Lovelace"), ("Charles", "Babbage")],
        "ada@example.com",
    )
    .await?;

    // No such day: refused on the page, the field named and marked.
    h.scenario = "bad date of birth";
    h.wd.type_into("#pax-0-dob", "1987-03-14").await?;
    h.wd.type_into("#pax-1-dob", "2023-02-29").await?;
    h.wd.click("#booking-submit").await?;
    let shown = h
        .wd
        .wait_js(
            "the form's error naming the date of birth",
            "const li = document.querySelector('#booking-error li[data-field=\"passengers[1].date_of_birth\"]');\
             return li && !document.getElementById('booking-error').hidden ? li.textContent : null;",
            json!([]),
            UI_TIMEOUT,
        )
        .await?;
    ensure!(
        shown
            .as_str()
            .is_some_and(|s| s.contains("not a real date")),
        "the error says {shown}"
    );
    let state = h
        .wd
        .exec(
            "return { hash: location.hash, invalid: document.getElementById('pax-1-dob').getAttribute('aria-invalid') };",
            json!([]),
        )
        .await?;
    ensure!(
        state["hash"]
            .as_str()
            .is_some_and(|s| s.starts_with("#/book"))
            && state["invalid"] == "true",
        "still on the form with the field marked: {state}"
    );
    h.shot("1-bad-date-of-birth").await?;

    // Corrected: booked, confirmed, and the ticket prints both dates.
    h.scenario = "book and print";
    h.wd.type_into("#pax-1-dob", "1991-11-23").await?;
    let id = submit_booking(h).await?;
    let view = watch_saga(h).await?;
    ensure!(view.status == "confirmed", "confirmed: {view:?}");
    let reference = h.wd.text("#booking-ref").await?;
    h.wd.goto(&format!(
        "{}/api/tickets/{reference}?last_name=Babbage",
        h.server.base
    ))
    .await?;
    h.wd.wait_visible("#passengers", UI_TIMEOUT).await?;
    let rows = h.wd.text("#passengers").await?;
    for (name, dob) in [
        ("Ada LOVELACE", "1987-03-14"),
        ("Charles BABBAGE", "1991-11-23"),
    ] {
        ensure!(
            rows.lines().any(|l| l.contains(name) && l.contains(dob)),
            "the ticket of booking {id} lists {name} born {dob}: {rows}"
        );
    }
    h.shot("2-ticket").await?;
    Ok(())
}
