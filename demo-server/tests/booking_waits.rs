//! The booking's durable waits over loopback HTTP: a card that needs the
//! customer's confirmation (`awaiting_confirmation`,
//! `POST /api/bookings/{id}/confirm-payment`), a held booking paid later
//! (`"hold": true`, `held`, `hold_expires_at`, `POST /api/bookings/{id}/pay`),
//! their repeats, and the JSON errors: 404 for no booking, 409 when the
//! booking is not waiting for it, 422 for a bad card and once the window
//! has passed (with the reason, also in the booking's `failure_reason`).

mod support;

use booking_domain::booking_saga::{BookingWaits, CONFIRMATION_TIMED_OUT, HOLD_EXPIRED};
use demo_server::{RemoteParticipants, ServerConfig};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{booking_body, find_flight, local, request_from, Raw, Server};

const SCA_CARD: &str = "4000 0000 0000 3220";

async fn call(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: &Value) -> Raw {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(body).unwrap()
    };
    let mut h = vec![("content-type", "application/json")];
    if let Some(k) = key {
        h.push(("idempotency-key", k));
    }
    request_from(local(), addr, method, path, &h, &bytes).await
}

fn card(number: &str) -> Value {
    json!({"number": number, "exp_month": 12, "exp_year": 2035, "cvc": "123", "holder_name": "Ada Lovelace"})
}

async fn book(addr: SocketAddr, key: &str, edit: impl FnOnce(&mut Value)) -> String {
    let (flight, date) = find_flight(addr).await;
    let mut body = booking_body(&flight, &date, json!({}));
    edit(&mut body);
    let r = call(addr, "POST", "/api/bookings", Some(key), &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.body["booking_id"].as_str().unwrap().to_string()
}

fn hold(body: &mut Value) {
    body.as_object_mut().unwrap().remove("card");
    body["hold"] = json!(true);
}

/// Polls a booking until its status is `want` (30 s deadline).
async fn until_status(addr: SocketAddr, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = call(
            addr,
            "GET",
            &format!("/api/bookings/{id}"),
            None,
            &Value::Null,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        if r.body["status"] == want {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "booking {id} never {want}: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_error(r: &Raw, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{}",
        r.head
    );
    assert_eq!(r.body["code"], code, "{}", r.text);
    assert!(
        r.body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        r.text
    );
}

fn secs(config: u64) -> ServerConfig {
    ServerConfig {
        booking_waits: BookingWaits {
            confirmation_timeout: Duration::from_secs(config),
            hold_window: Duration::from_secs(config),
        },
        ..ServerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_needing_confirmation_is_confirmed_over_http() {
    let server = Server::start(secs(600), RemoteParticipants::default()).await;
    let addr = server.addr;
    let id = book(addr, "sca-http", |b| b["card"] = card(SCA_CARD)).await;
    let b = until_status(addr, &id, "awaiting_confirmation").await;
    let expires = b["confirmation_expires_at"].as_str().expect("a deadline");
    assert!(
        chrono::DateTime::parse_from_rfc3339(expires).is_ok(),
        "{expires}"
    );
    assert!(b["hold_expires_at"].is_null());
    let path = format!("/api/bookings/{id}/confirm-payment");
    let r = call(addr, "POST", &path, None, &Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["outcome"], "delivered");
    let r = call(addr, "POST", &path, None, &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["outcome"], "duplicate", "a second confirmation");
    let b = until_status(addr, &id, "confirmed").await;
    assert!(b["booking_ref"].is_string());

    // Not waiting for a confirmation: a booking paid by a card that
    // needed none, and a held one; no such booking.
    let plain = book(addr, "plain-http", |_| {}).await;
    until_status(addr, &plain, "confirmed").await;
    let r = call(
        addr,
        "POST",
        &format!("/api/bookings/{plain}/confirm-payment"),
        None,
        &Value::Null,
    )
    .await;
    assert_error(&r, 409, "conflict");
    let held = book(addr, "held-for-confirm", hold).await;
    until_status(addr, &held, "held").await;
    let r = call(
        addr,
        "POST",
        &format!("/api/bookings/{held}/confirm-payment"),
        None,
        &Value::Null,
    )
    .await;
    assert_error(&r, 409, "conflict");
    let r = call(
        addr,
        "POST",
        "/api/bookings/nope/confirm-payment",
        None,
        &Value::Null,
    )
    .await;
    assert_error(&r, 404, "not_found");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_booking_is_paid_over_http() {
    let server = Server::start(secs(600), RemoteParticipants::default()).await;
    let addr = server.addr;
    // A hold takes no card.
    let (flight, date) = find_flight(addr).await;
    let mut body = booking_body(&flight, &date, json!({}));
    body["hold"] = json!(true);
    let r = call(addr, "POST", "/api/bookings", Some("hold-with-card"), &body).await;
    assert_error(&r, 422, "validation_failed");
    assert_eq!(r.body["fields"][0]["field"], "card", "{}", r.text);

    let id = book(addr, "hold-http", hold).await;
    let b = until_status(addr, &id, "held").await;
    assert_eq!(b["hold"], true);
    let expires = b["hold_expires_at"].as_str().expect("a deadline");
    let at = chrono::DateTime::parse_from_rfc3339(expires).unwrap();
    let left = at.timestamp() - chrono::Utc::now().timestamp();
    assert!((500..=600).contains(&left), "{left} s left");
    let path = format!("/api/bookings/{id}/pay");
    let r = call(addr, "POST", &path, None, &json!({})).await;
    assert_error(&r, 422, "validation_failed");
    assert_eq!(r.body["fields"][0]["field"], "card");
    let r = call(addr, "POST", &path, None, &json!({"card": "4242"})).await;
    assert_error(&r, 422, "validation_failed");
    assert!(!r.text.contains("4242"), "{}", r.text);
    let mut bad = card("4242 4242 4242 4242");
    bad["cvc"] = json!("1");
    let r = call(addr, "POST", &path, None, &json!({ "card": bad })).await;
    assert_error(&r, 422, "validation_failed");
    assert_eq!(r.body["fields"][0]["field"], "card.cvc", "{}", r.text);
    until_status(addr, &id, "held").await;

    let r = call(
        addr,
        "POST",
        &path,
        None,
        &json!({"card": card("4242 4242 4242 4242")}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["outcome"], "delivered");
    let r = call(
        addr,
        "POST",
        &path,
        None,
        &json!({"card": card("4242 4242 4242 4242")}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["outcome"], "duplicate",
        "paying twice with the same card"
    );
    let b = until_status(addr, &id, "confirmed").await;
    assert_eq!(b["card"]["last4"], "4242");
    assert!(b["hold_expires_at"].is_null());
    // Paid: another card is refused.
    let r = call(
        addr,
        "POST",
        &path,
        None,
        &json!({"card": card("5555 5555 5555 4444")}),
    )
    .await;
    assert_error(&r, 409, "conflict");
    let r = call(
        addr,
        "POST",
        "/api/bookings/nope/pay",
        None,
        &json!({"card": card("4242 4242 4242 4242")}),
    )
    .await;
    assert_error(&r, 404, "not_found");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_that_run_out_release_the_booking_and_refuse_late_signals() {
    let server = Server::start(secs(1), RemoteParticipants::default()).await;
    let addr = server.addr;
    let held = book(addr, "hold-expires", hold).await;
    let sca = book(addr, "sca-expires", |b| b["card"] = card(SCA_CARD)).await;
    let b = until_status(addr, &held, "compensated").await;
    assert_eq!(b["failure_reason"], HOLD_EXPIRED, "{b}");
    let r = call(
        addr,
        "POST",
        &format!("/api/bookings/{held}/pay"),
        None,
        &json!({"card": card("4242 4242 4242 4242")}),
    )
    .await;
    assert_error(&r, 422, "validation_failed");
    assert!(
        r.body["error"].as_str().unwrap().contains("hold expired"),
        "{}",
        r.text
    );
    let b = until_status(addr, &sca, "compensated").await;
    assert_eq!(b["failure_reason"], CONFIRMATION_TIMED_OUT, "{b}");
    let r = call(
        addr,
        "POST",
        &format!("/api/bookings/{sca}/confirm-payment"),
        None,
        &Value::Null,
    )
    .await;
    assert_error(&r, 422, "validation_failed");
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("not confirmed in time"),
        "{}",
        r.text
    );
    server.stop().await;
}
