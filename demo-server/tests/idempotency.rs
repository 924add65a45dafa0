//! Idempotency keys and card data at `POST /api/bookings` (issue 13), over
//! real loopback: a reused key with another body is refused without naming
//! the other booking; a replay is marked `Idempotent-Replayed: true`; a
//! different card with the same last four digits, or another CVC, is
//! another request; keys are scoped by the contact email; a card number or
//! CVC sent as a JSON number is not echoed in the `422`.

mod support;

use demo_server::{RemoteParticipants, ServerConfig};
use serde_json::{json, Value};
use support::{booking_body, find_flight, local, request_from, Raw, Server};

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

#[tokio::test]
async fn keys_replay_refuse_reuse_and_are_scoped_by_email() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let (flight, date) = find_flight(server.addr).await;
    let body = booking_body(&flight, &date, json!({}));
    let first = book(&server, "k-1", &body).await;
    assert_eq!(first.status, 202, "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), None);
    let id = first.body["booking_id"].as_str().unwrap().to_string();

    let again = book(&server, "k-1", &body).await;
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(again.body["booking_id"], id.as_str());
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));

    // Another body under the same key: refused, and the other booking's id
    // (its capability) is not in the answer.
    let mut other = body.clone();
    other["passengers"][1]["first_name"] = json!("Ada");
    let mut same_last4 = body.clone();
    same_last4["card"]["number"] = json!("4111 1111 1091 4242");
    let mut other_cvc = body.clone();
    other_cvc["card"]["cvc"] = json!("999");
    for (what, b) in [
        ("another passenger", other),
        ("another card, same last four", same_last4),
        ("another CVC", other_cvc),
    ] {
        let r = book(&server, "k-1", &b).await;
        assert_eq!(r.status, 422, "{what}: {}", r.text);
        assert_eq!(r.body["code"], "idempotency_key_reused", "{what}");
        assert!(
            !r.text.contains(&id),
            "{what}: the 422 names the booking: {}",
            r.text
        );
    }

    // The same key from another customer is another booking.
    let mut theirs = body.clone();
    theirs["email"] = json!("charles@example.com");
    let r = book(&server, "k-1", &theirs).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_ne!(r.body["booking_id"], id.as_str());
    assert_eq!(r.header("idempotent-replayed"), None);
    server.stop().await;
}

#[tokio::test]
async fn card_fields_are_never_echoed() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let (flight, date) = find_flight(server.addr).await;
    for (field, value) in [("number", json!(4242424242424242u64)), ("cvc", json!(987))] {
        let mut body = booking_body(&flight, &date, json!({}));
        body["card"][field] = value.clone();
        let r = book(&server, &format!("card-{field}"), &body).await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert!(
            !r.text.contains(&value.to_string()),
            "card.{field} echoed: {}",
            r.text
        );
        assert_eq!(r.body["fields"][0]["field"], "card", "{}", r.text);
    }
    server.stop().await;
}
