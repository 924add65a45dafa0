//! Card data in memory (issue 13), over real loopback: the card leaves the
//! in-memory vault (zeroed) as soon as its authorization is done, not at
//! the end of the booking; a booking refused before authorization forgets
//! it too; and card input is trimmed and bounded before it is kept, with
//! one `422` per field that never quotes the value.

mod support;

use demo_server::{RemoteParticipants, ServerConfig};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{booking_body, find_flight, local, request_from, wait_terminal, Raw, Server};

async fn book(server: &Server, key: &str, body: &Value) -> Raw {
    let bytes = serde_json::to_vec(body).unwrap();
    request_from(
        local(),
        server.addr,
        "POST",
        "/api/bookings",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ],
        &bytes,
    )
    .await
}

async fn get(server: &Server, path: &str) -> Raw {
    request_from(local(), server.addr, "GET", path, &[], b"").await
}

fn cards_held(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("cards_held "))
        .and_then(|v| v.trim().parse().ok())
        .expect("cards_held in /metrics")
}

#[tokio::test]
async fn the_card_is_forgotten_once_authorized_not_at_the_end() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let (flight, date) = find_flight(server.addr).await;
    // award_miles waits 3 s: the booking sits after its authorization.
    let body = booking_body(
        &flight,
        &date,
        json!({"award_miles": {"mode": "delay", "ms": 3000}}),
    );
    let r = book(&server, "card-1", &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["booking_id"].as_str().unwrap().to_string();
    assert_eq!(
        server.state.services.cards.len(),
        1,
        "held until authorization"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let v = get(&server, &format!("/api/bookings/{id}")).await.body;
        if step(&v, "authorize_payment")["state"] == "succeeded" {
            break v;
        }
        assert!(Instant::now() < deadline, "never authorized: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        view["status"], "pending",
        "still before confirmation: {view}"
    );
    assert_eq!(
        server.state.services.cards.len(),
        0,
        "the card is dropped as soon as the authorization is done"
    );
    let m = get(&server, "/metrics").await;
    assert_eq!(cards_held(&m.text), 0);
    let done = wait_terminal(server.addr, &id).await;
    assert_eq!(done["status"], "confirmed", "{done}");

    // Refused before authorization: compensation forgets the card too.
    let body = booking_body(&flight, &date, json!({"reserve_seat": {"mode": "reject"}}));
    let r = book(&server, "card-2", &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["booking_id"].as_str().unwrap().to_string();
    let done = wait_terminal(server.addr, &id).await;
    assert_eq!(done["status"], "compensated", "{done}");
    assert!(server.state.services.cards.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn card_input_is_bounded_per_field_without_echo() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let (flight, date) = find_flight(server.addr).await;
    let long_number = format!("4242 4242 4242 4242{}", " 4".repeat(20));
    let long_cvc = "12345678901234567890";
    let long_name = "N".repeat(101);
    let mut body = booking_body(&flight, &date, json!({}));
    body["card"]["number"] = json!(long_number);
    body["card"]["cvc"] = json!(long_cvc);
    body["card"]["holder_name"] = json!(long_name);
    let r = book(&server, "bounds-1", &body).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["code"], "validation_failed");
    let fields: Vec<&str> = r.body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    for f in ["card.number", "card.cvc", "card.holder_name"] {
        assert!(fields.contains(&f), "{f} reported: {}", r.text);
    }
    for secret in [long_number.as_str(), long_cvc, long_name.as_str(), "4242"] {
        assert!(!r.text.contains(secret), "value echoed: {}", r.text);
    }
    // A control character in the holder name is refused as well.
    let mut body = booking_body(&flight, &date, json!({}));
    body["card"]["holder_name"] = json!("Ada\u{0007}Lovelace");
    let r = book(&server, "bounds-2", &body).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.body["fields"][0]["field"], "card.holder_name",
        "{}",
        r.text
    );
    assert!(server.state.services.cards.is_empty(), "nothing kept");

    // Surrounding spaces are trimmed, not refused: the booking goes through.
    let mut body = booking_body(&flight, &date, json!({}));
    body["card"]["number"] = json!("  4242 4242 4242 4242  ");
    body["card"]["cvc"] = json!(" 123 ");
    body["card"]["holder_name"] = json!("  Ada Lovelace  ");
    let r = book(&server, "bounds-3", &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let done = wait_terminal(server.addr, r.body["booking_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "confirmed", "{done}");
    server.stop().await;
}

/// The step named `name` in a booking view.
fn step<'a>(view: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    view["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}
