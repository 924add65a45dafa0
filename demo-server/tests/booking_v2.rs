//! The booking saga of model v2 over real loopback: the pivot at capture
//! and the itinerary outbox shown as the admin mailbox.

mod support;

use demo_server::{RemoteParticipants, ServerConfig};
use serde_json::{json, Value};
use support::{booking_body, find_flight, local, request_from, wait_terminal, Raw, Server, TOKEN};

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

async fn admin_get(server: &Server, path: &str) -> Raw {
    let bearer = format!("Bearer {TOKEN}");
    request_from(
        local(),
        server.addr,
        "GET",
        path,
        &[("authorization", bearer.as_str())],
        b"",
    )
    .await
}

#[tokio::test]
async fn a_confirmed_booking_sends_its_itinerary_through_the_outbox() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let (flight, date) = find_flight(server.addr).await;
    let r = book(&server, "itin-1", &booking_body(&flight, &date, json!({}))).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["booking_id"].as_str().unwrap().to_string();
    let done = wait_terminal(server.addr, &id).await;
    assert_eq!(done["status"], "confirmed", "{done}");
    let reference = done["booking_ref"].as_str().unwrap();
    let last = done["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["name"].as_str(), last["state"].as_str()),
        (Some("send_itinerary"), Some("succeeded"))
    );

    // A booking rejected at the pivot sends nothing.
    let r = book(
        &server,
        "itin-2",
        &booking_body(
            &flight,
            &date,
            json!({"confirm_booking": {"mode": "reject"}}),
        ),
    )
    .await;
    let rejected = r.body["booking_id"].as_str().unwrap().to_string();
    let done = wait_terminal(server.addr, &rejected).await;
    assert_eq!(done["status"], "compensated", "{done}");

    let m = admin_get(&server, "/api/admin/mailbox").await;
    assert_eq!(m.status, 200, "{}", m.text);
    assert_eq!(m.body["total"], 1, "{}", m.text);
    let msg = &m.body["messages"][0];
    assert_eq!(msg["saga_id"], id.as_str());
    assert_eq!(msg["booking_ref"], reference);
    assert_eq!(msg["to"], "ada@example.com");
    assert!(msg["body"].as_str().unwrap().contains(reference), "{msg}");
    assert!(!m.text.contains("4242 4242"), "{}", m.text);

    // Admin only; a bad limit is a 422 naming the field.
    let anon = request_from(local(), server.addr, "GET", "/api/admin/mailbox", &[], b"").await;
    assert_eq!(anon.status, 401, "{}", anon.text);
    let bad = admin_get(&server, "/api/admin/mailbox?limit=0").await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(bad.text.contains("limit"), "{}", bad.text);
    server.stop().await;
}
