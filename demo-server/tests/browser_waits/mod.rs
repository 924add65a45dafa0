//! The booking's waits in the browser: book with the card that needs the
//! customer's confirmation, see the "Confirm with your bank" step on the
//! booking's page, confirm, see it confirmed; then hold a booking without
//! a card, see it held with its time left in My trips, follow the Pay
//! link, pay on the booking's page, see it confirmed. Screenshots of each.

use super::{
    booking_from_api, find_route, open_first_result, search, submit_booking, watch_saga, Harness,
    Instant, UI_TIMEOUT, WATCH_ERRORS_JS,
};
use serde_json::json;

const SCA_CARD: &str = "4000 0000 0000 3220";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_confirmed_with_the_bank_and_a_held_booking_is_paid_later_in_the_browser() {
    let started = Instant::now();
    let mut h = Harness::start("waits").await;
    let outcome = run(&mut h).await;
    h.finish(outcome, started).await;
}

/// The bank's confirmation never comes: when the window (2 s here) runs
/// out the live view shows the booking compensated with the reason in
/// plain words, and the seats are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_payment_releases_the_seats_when_its_window_runs_out_in_the_browser() {
    let started = Instant::now();
    let mut h = Harness::start_with(
        "waits-timeout",
        &["--payment-confirmation-timeout-secs", "2"],
    )
    .await;
    let outcome = run_timeout(&mut h).await;
    h.finish(outcome, started).await;
}

async fn run_timeout(h: &mut Harness) -> Result<(), String> {
    let route = find_route(&h.http, &h.server.base).await?;
    h.wd.goto(&format!("{}/", h.server.base)).await?;
    h.wd.wait_visible("#search-form", UI_TIMEOUT).await?;
    h.wd.exec(WATCH_ERRORS_JS, json!([])).await?;
    h.scenario = "3 the confirmation never comes";
    search(h, &route, 1).await?;
    open_first_result(h).await?;
    h.wd.type_into("#booking-email", "ada@example.com").await?;
    fill(h, Some(SCA_CARD)).await?;
    let id = submit_booking(h).await?;
    h.wd.wait_visible("[data-testid=confirm-step]", UI_TIMEOUT)
        .await?;
    h.shot("3-waiting-for-the-bank").await?;
    let view = watch_saga(h).await?;
    ensure!(
        view.status == "compensated",
        "after the window the live view shows {view:?}"
    );
    let shown = view.failure.clone().unwrap_or_default();
    ensure!(
        shown.contains("not confirmed in time"),
        "the reason shown: {shown:?}"
    );
    h.shot("3-released").await?;
    let api = booking_from_api(h, &id).await?;
    let reason = api["failure_reason"].as_str().unwrap_or_default();
    ensure!(
        api["status"] == "compensated" && reason.contains("not confirmed in time"),
        "the API says {api}"
    );
    ensure!(
        api["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["name"] == "reserve_seat" && s["state"] == "compensated"),
        "the seats were released: {api}"
    );
    Ok(())
}

async fn fill(h: &Harness, card: Option<&str>) -> Result<(), String> {
    h.wd.type_into("#pax-0-first", "Ada").await?;
    h.wd.type_into("#pax-0-last", "Lovelace").await?;
    h.wd.type_into("#pax-0-dob", "1990-01-01").await?;
    h.wd.type_into("#booking-phone", "+44 20 7946 0958").await?;
    match card {
        Some(number) => {
            h.wd.type_into("#card-number", number).await?;
            h.wd.type_into("#card-holder", "Ada Lovelace").await?;
        }
        None => h.wd.click("#booking-hold").await?,
    }
    Ok(())
}

async fn run(h: &mut Harness) -> Result<(), String> {
    let route = find_route(&h.http, &h.server.base).await?;
    h.wd.goto(&format!("{}/", h.server.base)).await?;
    h.wd.wait_visible("#search-form", UI_TIMEOUT).await?;
    h.wd.exec(WATCH_ERRORS_JS, json!([])).await?;

    h.scenario = "register";
    h.wd.click("#nav-account").await?;
    h.wd.type_into("#register-name", "Ada Lovelace").await?;
    h.wd.type_into("#register-email", "ada@example.com").await?;
    h.wd.type_into("#register-password", "correct horse battery")
        .await?;
    h.wd.click("#register-submit").await?;
    h.wd.wait_visible("[data-testid=trips-empty]", UI_TIMEOUT)
        .await?;

    // 1. The card's issuer asks for a confirmation.
    h.scenario = "1 confirm with the bank";
    h.wd.click("#nav-search").await?;
    search(h, &route, 1).await?;
    open_first_result(h).await?;
    fill(h, Some(SCA_CARD)).await?;
    let id = submit_booking(h).await?;
    h.wd.wait_visible("[data-testid=confirm-step]", UI_TIMEOUT)
        .await?;
    let status = h.wd.attribute("#saga-status", "data-status").await?;
    ensure!(
        status == "awaiting_confirmation",
        "the badge shows {status:?}"
    );
    let left = h.wd.text("[data-testid=wait-time-left]").await?;
    ensure!(left.ends_with("left"), "time left shown as {left:?}");
    let api = booking_from_api(h, &id).await?;
    ensure!(
        api["status"] == "awaiting_confirmation",
        "the API says {api}"
    );
    h.shot("1-confirm-with-your-bank").await?;
    h.wd.click("[data-testid=confirm-payment]").await?;
    let view = watch_saga(h).await?;
    ensure!(
        view.status == "confirmed" && view.reference.is_some(),
        "after the confirmation the live view shows {view:?}"
    );
    ensure!(
        view.state("await_confirmation") == Some("succeeded"),
        "the confirmation step: {view:?}"
    );
    h.shot("1-confirmed").await?;
    let api = booking_from_api(h, &id).await?;
    ensure!(api["status"] == "confirmed", "the API says {api}");

    // 2. Hold now, pay later.
    h.scenario = "2 hold and pay later";
    h.wd.click("#nav-search").await?;
    search(h, &route, 1).await?;
    open_first_result(h).await?;
    fill(h, None).await?;
    let held = submit_booking(h).await?;
    h.wd.wait_visible("[data-testid=hold-step]", UI_TIMEOUT)
        .await?;
    h.shot("2-held").await?;
    h.wd.click("#nav-trips").await?;
    let v = h.wd.wait_js(
        "the held trip with its time left and a Pay link",
        "const t = document.querySelector('[data-testid=trip][data-booking-id=\"' + arguments[0] + '\"]');\
         if (!t || t.dataset.status !== 'held') return null;\
         const left = t.querySelector('[data-testid=trip-hold-left]');\
         const pay = t.querySelector('[data-testid=trip-pay]');\
         return left && pay && left.textContent.endsWith('left') ? {left: left.textContent} : null;",
        json!([held]),
        UI_TIMEOUT,
    ).await?;
    ensure!(
        v["left"].as_str().is_some_and(|l| l.contains(" h ")),
        "a 24-hour hold shows {v}"
    );
    h.shot("2-my-trips-held").await?;
    h.wd.click(&format!(
        "[data-testid=trip][data-booking-id=\"{held}\"] [data-testid=trip-pay]"
    ))
    .await?;
    h.wd.wait_visible("[data-testid=pay-form]", UI_TIMEOUT)
        .await?;
    h.wd.exec(super::OBSERVE_STEPS_JS, json!([])).await?;
    h.wd.type_into("#pay-card-number", "4242 4242 4242 4242")
        .await?;
    h.shot("2-pay-form").await?;
    h.wd.click("[data-testid=pay-submit]").await?;
    let view = watch_saga(h).await?;
    ensure!(
        view.status == "confirmed" && view.reference.is_some(),
        "after paying the live view shows {view:?}"
    );
    h.shot("2-paid-confirmed").await?;
    let api = booking_from_api(h, &held).await?;
    ensure!(
        api["status"] == "confirmed" && api["card"]["last4"] == "4242" && api["hold"] == true,
        "the API says {api}"
    );
    h.wd.click("#nav-trips").await?;
    h.wd.wait_js(
        "the paid trip confirmed in My trips",
        "const t = document.querySelector('[data-testid=trip][data-booking-id=\"' + arguments[0] + '\"]');\
         return t && t.dataset.status === 'confirmed' ? true : null;",
        json!([held]),
        UI_TIMEOUT,
    )
    .await?;
    let errors =
        h.wd.exec("return window.__e2eErrors || [];", json!([]))
            .await?;
    ensure!(
        errors.as_array().is_some_and(|a| a.is_empty()),
        "the page reported script errors: {errors}"
    );
    Ok(())
}
