//! No internal URLs, file paths or storage errors in public answers
//! (issue 13), over real loopback in services mode: the payments
//! participant (up when the booking is accepted, to tokenize its card)
//! goes down before the booking authorizes, so every attempt meets
//! "connection refused" at an internal `http://127.0.0.1:port/...` URL. The
//! booking's status and its own event stream show a generic reason per
//! step ("the payment service could not be reached; nothing was charged");
//! the admin view (`/api/admin/sagas`, the all-sagas stream) keeps the full
//! text. A `503` from a participant that is down is generic too.

mod support;

use demo_server::roles::{serve_role_with, Role, RoleConfig};
use demo_server::{RemoteParticipants, ServerConfig};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{booking_body, find_flight, local, request_from, wait_terminal, Raw, Server, TOKEN};
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// An in-process participant on `listener`, served until the test ends.
fn participant(role: Role, listener: TcpListener) {
    let db = sled::Config::new().temporary(true).open().unwrap();
    tokio::spawn(serve_role_with(
        RoleConfig::new(role),
        listener,
        db,
        std::future::pending(),
    ));
}

/// [`participant`] until `stop` completes; the task ends once it has
/// stopped listening.
fn participant_until(
    role: Role,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let db = sled::Config::new().temporary(true).open().unwrap();
    tokio::spawn(serve_role_with(RoleConfig::new(role), listener, db, stop))
}

/// A loopback address with nothing listening (bound, then released).
fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// What must never be in a public answer.
fn assert_public(what: &str, text: &str) {
    for needle in [
        "http://",
        "https://",
        "127.0.0.1",
        "/payments/",
        "/tmp/",
        "refused",
        "os error",
    ] {
        assert!(!text.contains(needle), "{what} contains {needle:?}: {text}");
    }
}

/// Reads the booking's public event stream to its end (30 s deadline).
async fn public_stream(addr: SocketAddr, id: String) -> String {
    let mut s = support::connect_from(local(), addr).await.unwrap();
    let req =
        format!("GET /api/sagas/{id}/events HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf))
        .await
        .expect("the stream ends with the saga")
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_down_shows_the_public_a_generic_reason() {
    let inventory = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let inventory_url = format!("http://{}", inventory.local_addr().unwrap());
    participant(Role::Inventory, inventory);
    let payments = dead_addr();
    let (stop_payments, stopped) = tokio::sync::oneshot::channel::<()>();
    let payments_task = participant_until(
        Role::Payments,
        TcpListener::bind(payments).await.unwrap(),
        async {
            let _ = stopped.await;
        },
    );
    let loyalty = dead_addr();
    let remote = RemoteParticipants {
        inventory: Some(inventory_url),
        payments: Some(format!("http://{payments}")),
        loyalty: Some(format!("http://{loyalty}")),
        ..RemoteParticipants::default()
    };
    let server = Server::start(ServerConfig::default(), remote).await;

    // A participant that is down: 503, without its URL.
    let r = request_from(
        local(),
        server.addr,
        "GET",
        "/api/loyalty/LY0000001?last_name=Lovelace",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["code"], "unavailable");
    assert_public("503 body", &r.text);

    let (flight, date) = find_flight(server.addr).await;
    // The seat step waits 3 s: payments goes down in the meantime (its
    // graceful stop takes milliseconds; it is awaited below).
    let faults = json!({"reserve_seat": {"mode": "delay", "ms": 3000}});
    let body = serde_json::to_vec(&booking_body(&flight, &date, faults)).unwrap();
    let r = request_from(
        local(),
        server.addr,
        "POST",
        "/api/bookings",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "down-1"),
        ],
        &body,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["booking_id"].as_str().unwrap().to_string();
    let _ = stop_payments.send(());
    payments_task.await.unwrap().unwrap();
    let stream = tokio::spawn(public_stream(server.addr, id.clone()));

    // Wait until the payment step has given up (the saga compensates),
    // checking the public status on the way.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_error = false;
    loop {
        let r = request_from(
            local(),
            server.addr,
            "GET",
            &format!("/api/bookings/{id}"),
            &[],
            b"",
        )
        .await;
        assert_public("booking status", &r.text);
        seen_error |= r.body["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["name"] == "authorize_payment" && s["last_error"].is_string());
        if r.body["saga_status"] != "running" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the payment step never gave up: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_error, "the public saw the step's errors");
    // The payments service comes up: the void goes through, the saga ends.
    participant(Role::Payments, TcpListener::bind(payments).await.unwrap());
    let done = wait_terminal(server.addr, &id).await;
    assert_eq!(done["status"], "compensated", "{done}");
    let text = done.to_string();
    assert_public("final booking status", &text);
    let reason = done["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains("the payment service could not be reached; nothing was charged"),
        "{reason}"
    );
    // steps[2]: authorize_payment, after redeem_miles (booking saga v2).
    assert_eq!(
        step(&done, "authorize_payment")["last_error"],
        "the payment service could not be reached; nothing was charged"
    );

    let events = stream.await.unwrap();
    assert!(events.contains("event: step_failed"), "{events}");
    assert!(events.contains("event: saga_finished"), "{events}");
    assert_public("public event stream", &events);

    // The admin view keeps the whole story.
    let bearer = format!("Bearer {TOKEN}");
    let r: Raw = request_from(
        local(),
        server.addr,
        "GET",
        "/api/admin/sagas?limit=10",
        &[("authorization", bearer.as_str())],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let saga: &Value = r.body["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .expect("the saga in the admin list");
    let full = saga.to_string();
    assert!(
        full.contains(&format!("127.0.0.1:{}", payments.port())),
        "{full}"
    );
    server.stop().await;
}

/// The step named `name` in a booking view.
fn step<'a>(view: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    view["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}
