//! Card data (issues 13 and 11), over real loopback: the card is tokenized
//! at the payments participant when the booking is accepted and leaves its
//! vault as soon as its authorization is done, not at the end of the
//! booking; a booking refused before authorization forgets it too; a
//! booking interrupted by a restart before its authorization resumes with
//! its token; no card number or CVC is ever in the data directory in
//! clear; and card input is trimmed and bounded before it is kept, with
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

/// Tokenized cards the payments participant holds now.
async fn held(server: &Server) -> u64 {
    server.state.services.payments.cards_held().await.unwrap()
}

/// Every file under `dir` holding `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files_holding(&entry.path(), needle));
        } else {
            let bytes = std::fs::read(entry.path()).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                out.push(entry.path().display().to_string());
            }
        }
    }
    out
}

/// No card number (spaced or not) and no CVC field anywhere under `dir`.
fn assert_no_card_in_clear(dir: &std::path::Path) {
    for secret in [
        &b"4242 4242 4242 4242"[..],
        &b"4242424242424242"[..],
        &b"\"cvc\""[..],
    ] {
        let found = files_holding(dir, secret);
        assert!(
            found.is_empty(),
            "{} in clear in {found:?}",
            String::from_utf8_lossy(secret)
        );
    }
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
    // reserve_seat waits 2 s: the booking is acknowledged (after its
    // automatic wait signals) before its authorization; award_miles waits
    // 3 s: the booking sits after its authorization.
    let body = booking_body(
        &flight,
        &date,
        json!({"reserve_seat": {"mode": "delay", "ms": 2000}, "award_miles": {"mode": "delay", "ms": 3000}}),
    );
    let r = book(&server, "card-1", &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["booking_id"].as_str().unwrap().to_string();
    assert_eq!(held(&server).await, 1, "held until authorization");

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
        held(&server).await,
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
    assert_eq!(held(&server).await, 0);
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
    assert_eq!(held(&server).await, 0, "nothing kept");

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

#[tokio::test]
async fn a_booking_interrupted_before_its_authorization_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        // The engine lets go of the saga at once when the server stops.
        shutdown_grace: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    let server = Server::start_in(dir.path(), config.clone(), RemoteParticipants::default()).await;
    let (flight, date) = find_flight(server.addr).await;
    // reserve_seat waits 2 s: the server stops before the authorization.
    let body = booking_body(
        &flight,
        &date,
        json!({"reserve_seat": {"mode": "delay", "ms": 2000}}),
    );
    let r = book(&server, "restart-1", &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["booking_id"].as_str().unwrap().to_string();
    assert_eq!(held(&server).await, 1, "tokenized when accepted");
    server.stop().await;
    assert_no_card_in_clear(dir.path());

    let server = Server::start_in(dir.path(), config, RemoteParticipants::default()).await;
    let done = wait_terminal(server.addr, &id).await;
    assert_eq!(
        done["status"], "confirmed",
        "resumed with its card, not compensated: {done}"
    );
    assert_eq!(step(&done, "authorize_payment")["state"], "succeeded");
    assert_eq!(held(&server).await, 0);
    let text = done.to_string();
    assert!(
        !text.contains("4242 4242") && !text.contains("tok_"),
        "{text}"
    );
    server.stop().await;
    assert_no_card_in_clear(dir.path());
    {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.path().join(booking_domain::payments::VAULT_KEY_FILE);
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{} is private", key.display());
    }
}

/// The step named `name` in a booking view.
fn step<'a>(view: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    view["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}
