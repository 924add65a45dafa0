//! The traveller's features over loopback HTTP: cancelling a confirmed
//! booking with a refund (start, repeat, status, live events, refusals,
//! the admin list).

mod support;

use demo_server::{RemoteParticipants, ServerConfig};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{booking_body, find_flight, local, request_from, wait_terminal, Raw, Server, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Raw {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(body).unwrap()
    };
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    request_from(local(), addr, method, path, &h, &bytes).await
}

/// Books and waits for confirmation: (booking id, reference, total minor).
async fn confirmed_booking(addr: SocketAddr, key: &str) -> (String, String, i64) {
    let (flight, date) = find_flight(addr).await;
    let r = call(
        addr,
        "POST",
        "/api/bookings",
        &[("idempotency-key", key)],
        &booking_body(&flight, &date, json!({})),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["booking_id"].as_str().unwrap().to_string();
    let b = wait_terminal(addr, &id).await;
    assert_eq!(b["status"], "confirmed", "{b}");
    (
        id,
        b["booking_ref"].as_str().unwrap().to_string(),
        b["total"]["minor"].as_i64().unwrap(),
    )
}

async fn wait_cancellation(addr: SocketAddr, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = call(
            addr,
            "GET",
            &format!("/api/cancellations/{id}"),
            &[],
            &Value::Null,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        if r.body["status"] != "in_progress" {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "cancellation {id} never ended: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the saga's event stream until `until` appears (30 s deadline).
async fn events_until(addr: SocketAddr, id: &str, until: &str) -> String {
    let mut s = support::connect_from(local(), addr).await.unwrap();
    let req = format!(
        "GET /api/sagas/{id}/events HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while !text.contains(until) {
        assert!(Instant::now() < deadline, "no {until:?} in {text}");
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "stream closed before {until:?}: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_booking_is_cancelled_with_a_refund_once_and_watched_live() {
    let s = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let addr = s.addr;
    let (booking_id, reference, total) = confirmed_booking(addr, "k-cancel-1").await;

    // Wrong last name: the same 404 as an unknown reference.
    let wrong = call(
        addr,
        "POST",
        "/api/cancellations",
        &[],
        &json!({"reference": reference, "last_name": "Nobody"}),
    )
    .await;
    assert_eq!(wrong.status, 404, "{}", wrong.text);
    let unknown = call(
        addr,
        "POST",
        "/api/cancellations",
        &[],
        &json!({"reference": "ZZZZZZ", "last_name": "Lovelace"}),
    )
    .await;
    assert_eq!(
        (unknown.status, &unknown.body["error"]),
        (404, &wrong.body["error"])
    );
    let bad = call(
        addr,
        "POST",
        "/api/cancellations",
        &[],
        &json!({"reference": 7}),
    )
    .await;
    assert_eq!(bad.status, 422, "{}", bad.text);

    let body = json!({"reference": reference.to_lowercase(), "last_name": "babbage"});
    let first = call(addr, "POST", "/api/cancellations", &[], &body).await;
    assert_eq!(first.status, 202, "{}", first.text);
    let id = first.body["cancellation_id"].as_str().unwrap().to_string();
    assert_eq!(first.body["events_url"], format!("/api/sagas/{id}/events"));
    let again = call(addr, "POST", "/api/cancellations", &[], &body).await;
    assert_eq!(
        (again.status, again.body["cancellation_id"].as_str()),
        (202, Some(id.as_str()))
    );

    let stream = events_until(addr, &id, "saga_finished").await;
    for step in [
        "verify_booking",
        "refund_payment",
        "release_seats",
        "reverse_miles",
        "mark_cancelled",
    ] {
        assert!(stream.contains(step), "{step} not in the stream: {stream}");
    }
    let done = wait_cancellation(addr, &id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(
        done["refund"]["minor"].as_i64(),
        Some(total),
        "full refund within a day"
    );
    assert_eq!(done["fee"]["minor"].as_i64(), Some(0));
    assert_eq!(done["seats_released"], 2);

    // The booking now reads cancelled; asking again after the end: same id.
    let look = call(
        addr,
        "GET",
        &format!("/api/bookings/lookup?reference={reference}&last_name=Lovelace"),
        &[],
        &Value::Null,
    )
    .await;
    assert_eq!(look.body["booking"]["status"], "cancelled", "{}", look.text);
    let later = call(addr, "POST", "/api/cancellations", &[], &body).await;
    assert_eq!(
        (later.status, later.body["cancellation_id"].as_str()),
        (202, Some(id.as_str()))
    );

    // A booking id is not a cancellation id.
    let not = call(
        addr,
        "GET",
        &format!("/api/cancellations/{booking_id}"),
        &[],
        &Value::Null,
    )
    .await;
    assert_eq!(not.status, 404);

    // The admin page's list: token required, one cancellation.
    let anon = call(addr, "GET", "/api/admin/cancellations", &[], &Value::Null).await;
    assert_eq!(anon.status, 401);
    let auth = format!("Bearer {TOKEN}");
    let list = call(
        addr,
        "GET",
        "/api/admin/cancellations",
        &[("authorization", &auth)],
        &Value::Null,
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.body["total"], 1);
    assert_eq!(
        list.body["cancellations"][0]["cancellation_id"],
        id.as_str()
    );
    assert_eq!(
        list.body["cancellations"][0]["reference"],
        reference.as_str()
    );

    let problems =
        booking_domain::booking_saga::check_consistency(&s.state.engine, &s.state.services)
            .await
            .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_cancelled_otherwise_is_refused_with_a_typed_reason() {
    let s = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let addr = s.addr;
    let (booking_id, reference, _) = confirmed_booking(addr, "k-cancel-2").await;
    let saga = saga_engine::SagaId::parse(&booking_id).unwrap();
    s.state.services.bookings.cancel(&saga).await.unwrap();
    let r = call(
        addr,
        "POST",
        "/api/cancellations",
        &[],
        &json!({"reference": reference, "last_name": "Lovelace"}),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["reason"], "already_cancelled");
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("already cancelled"),
        "{}",
        r.text
    );
    s.stop().await;
}
