//! Participant services authenticate their callers (issue 13): over real
//! loopback, a payments service started with a token refuses an
//! unauthenticated or wrongly authenticated `POST /payments/void` and the
//! listing of every payment with `401` and a JSON body, still answers
//! `/healthz`, and refuses to start on a non-loopback address without a
//! token; an orchestrator holding the right tokens books end to end against
//! three such services, and one holding a wrong token books nothing.
//! Participant servers also keep the main server's limits: a body sent too
//! slowly is cut off with `408`, a connection over the per-client cap gets
//! `429` with `Retry-After`.

mod support;

use demo_server::connections::ConnLimits;
use demo_server::roles::{serve_role_with, Role, RoleConfig};
use demo_server::{RemoteParticipants, ServerConfig, ServiceToken};
use std::net::SocketAddr;
use std::time::Duration;
use support::{booking_body, find_flight, local, request_from, wait_terminal, Server};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SECRET: &str = "payments-service-secret-0123456789";

struct Participant {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Participant {
    async fn start(config: RoleConfig) -> Participant {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_role_with(config, listener, db, async move {
            let _ = stopped.await;
        }));
        Participant {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn token(s: &str) -> ServiceToken {
    ServiceToken::new(s).unwrap()
}

#[tokio::test]
async fn a_participant_refuses_calls_without_its_token() {
    let p =
        Participant::start(RoleConfig::new(Role::Payments).with_token(Some(token(SECRET)))).await;
    let bearer = format!("Bearer {SECRET}");
    let wrong = "Bearer payments-service-secret-0123456788".to_string();
    for (what, headers) in [
        ("no token", vec![("idempotency-key", "booking-1:charge")]),
        (
            "a wrong token",
            vec![
                ("idempotency-key", "booking-1:charge"),
                ("authorization", wrong.as_str()),
            ],
        ),
        (
            "another scheme",
            vec![
                ("idempotency-key", "booking-1:charge"),
                ("authorization", "Basic cGF5bWVudHM6c2VjcmV0"),
            ],
        ),
    ] {
        let r = request_from(local(), p.addr, "POST", "/payments/void", &headers, b"").await;
        assert_eq!(r.status, 401, "void with {what}: {}", r.text);
        assert_eq!(
            r.body["code"], "unauthorized",
            "{what}: JSON body {}",
            r.text
        );
        assert!(!r.text.contains(SECRET));
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
        let r = request_from(local(), p.addr, "GET", "/payments", &headers[1..], b"").await;
        assert_eq!(r.status, 401, "listing with {what}: {}", r.text);
        let r = request_from(
            local(),
            p.addr,
            "GET",
            "/customers/ada%40example.com/payments",
            &headers[1..],
            b"",
        )
        .await;
        assert_eq!(r.status, 401, "history with {what}: {}", r.text);
    }
    // The right token is let through (nothing to void for this key).
    let r = request_from(
        local(),
        p.addr,
        "POST",
        "/payments/void",
        &[
            ("idempotency-key", "booking-1:charge"),
            ("authorization", &bearer),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = request_from(
        local(),
        p.addr,
        "GET",
        "/payments",
        &[("authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Liveness needs no token and tells nothing.
    let r = request_from(local(), p.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text);
    p.stop().await;
}

#[tokio::test]
async fn a_participant_without_a_token_serves_only_on_loopback() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let e = serve_role_with(RoleConfig::new(Role::Payments), listener, db, async {})
        .await
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("service token"), "{e}");
}

#[tokio::test]
async fn participants_keep_the_main_servers_limits() {
    let mut config = RoleConfig::new(Role::Inventory).with_token(Some(token(SECRET)));
    config.body_read_timeout = Duration::from_millis(300);
    config.limits = ConnLimits {
        max_per_client: 4,
        ..config.limits
    };
    let p = Participant::start(config).await;
    // A body that never arrives: 408 after the body deadline.
    let mut s = support::connect_from(local(), p.addr).await.unwrap();
    let head = format!(
        "POST /holds HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {SECRET}\r\nidempotency-key: k\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let r = support::read_reply(&mut s).await;
    assert_eq!(r.status, 408, "{}", r.text);
    // Over the per-client connection cap: 429 with Retry-After.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(support::connect_from(local(), p.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = support::connect_from(local(), p.addr).await.unwrap();
    let r = support::read_reply(&mut extra).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(r.body["code"], "too_many_connections");
    drop(held);
    p.stop().await;
}

async fn cluster(tokens: [&str; 3], given: [&str; 3]) -> (Vec<Participant>, Server) {
    let mut ps = Vec::new();
    for (role, t) in [Role::Inventory, Role::Payments, Role::Loyalty]
        .into_iter()
        .zip(tokens)
    {
        ps.push(Participant::start(RoleConfig::new(role).with_token(Some(token(t)))).await);
    }
    let remote = RemoteParticipants {
        inventory: Some(ps[0].url()),
        payments: Some(ps[1].url()),
        loyalty: Some(ps[2].url()),
        inventory_token: Some(token(given[0])),
        payments_token: Some(token(given[1])),
        loyalty_token: Some(token(given[2])),
        tls: None,
    };
    let server = Server::start(ServerConfig::default(), remote).await;
    (ps, server)
}

const TOKENS: [&str; 3] = [
    "inventory-secret-0123456789",
    "payments-secret-0123456789",
    "loyalty-secret-0123456789",
];

#[tokio::test]
async fn the_orchestrator_with_the_right_tokens_books_end_to_end() {
    let (ps, server) = cluster(TOKENS, TOKENS).await;
    let (flight, date) = find_flight(server.addr).await;
    let body = serde_json::to_vec(&booking_body(&flight, &date, serde_json::json!({}))).unwrap();
    let r = request_from(
        local(),
        server.addr,
        "POST",
        "/api/bookings",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "auth-e2e-1"),
        ],
        &body,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["booking_id"].as_str().unwrap().to_string();
    let done = wait_terminal(server.addr, &id).await;
    assert_eq!(done["status"], "confirmed", "{done}");
    server.stop().await;
    for p in ps {
        p.stop().await;
    }
}

#[tokio::test]
async fn the_orchestrator_with_a_wrong_token_gets_nothing_done() {
    // Payments expects another token than the orchestrator sends.
    let given = [TOKENS[0], "not-the-payments-secret-0", TOKENS[2]];
    let (ps, server) = cluster(TOKENS, given).await;
    let (flight, date) = find_flight(server.addr).await;
    let body = serde_json::to_vec(&booking_body(&flight, &date, serde_json::json!({}))).unwrap();
    let r = request_from(
        local(),
        server.addr,
        "POST",
        "/api/bookings",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "auth-e2e-2"),
        ],
        &body,
    )
    .await;
    // The card is tokenized at payments when the booking is accepted:
    // refused there, the booking is not accepted (nothing started).
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["code"], "unavailable", "{}", r.text);
    assert!(server.state.engine.list(None, 10).await.unwrap().is_empty());
    let bearer = format!("Bearer {}", TOKENS[1]);
    let listing = request_from(
        local(),
        ps[1].addr,
        "GET",
        "/payments",
        &[("authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(
        listing.body,
        serde_json::json!([]),
        "no payment was made: {}",
        listing.text
    );
    drop(server);
    for p in ps {
        p.stop().await;
    }
}
