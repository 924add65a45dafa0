//! TLS over real loopback sockets: the three participants serve HTTPS with
//! a certificate made for the test, the orchestrator reaches them at
//! `https://` URLs trusting only that certificate, and a booking goes
//! through end to end; the main server serves HTTPS too. A plain-HTTP
//! client gets nothing from a TLS port, and an orchestrator that does not
//! trust the certificate books nothing.

mod support;

use demo_server::roles::{serve_role_with, Role, RoleConfig};
use demo_server::tls::{TlsClient, TlsServer};
use demo_server::{RemoteParticipants, ServerConfig, ServiceToken};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use support::{booking_body, find_flight, local, request_from, wait_terminal, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "tls-test-service-secret-0123456789";

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM files.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("a test certificate");
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c, k)
}

/// Starts one participant serving HTTPS; returns its `https://` URL.
async fn participant(role: Role, tls: &TlsServer, dir: &Path) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let db = sled::open(dir.join(format!("{role}"))).unwrap();
    let mut config = RoleConfig::new(role).with_token(Some(ServiceToken::new(SECRET).unwrap()));
    config.limits.tls = Some(tls.clone());
    tokio::spawn(serve_role_with(
        config,
        listener,
        db,
        std::future::pending(),
    ));
    format!("https://{addr}")
}

fn remote(urls: &[String; 3], tls: Option<TlsClient>) -> RemoteParticipants {
    let token = || Some(ServiceToken::new(SECRET).unwrap());
    RemoteParticipants {
        inventory: Some(urls[0].clone()),
        payments: Some(urls[1].clone()),
        loyalty: Some(urls[2].clone()),
        inventory_token: token(),
        payments_token: token(),
        loyalty_token: token(),
        tls,
    }
}

/// `GET path` over TLS, trusting `client`'s roots; the status.
async fn https_get(addr: SocketAddr, client: &TlsClient, path: &str) -> u16 {
    let connector = tokio_rustls::TlsConnector::from(client_config(client));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "127.0.0.1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await;
    status
}

fn client_config(client: &TlsClient) -> Arc<rustls::ClientConfig> {
    client.config()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_over_tls_book_end_to_end_and_plain_http_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let server_tls = TlsServer::from_pem_files(&cert, &key).unwrap();
    let trust = TlsClient::trusting_pem_file(&cert).unwrap();
    let urls = [
        participant(Role::Inventory, &server_tls, dir.path()).await,
        participant(Role::Payments, &server_tls, dir.path()).await,
        participant(Role::Loyalty, &server_tls, dir.path()).await,
    ];

    // A plain-HTTP request to a TLS port gets no HTTP answer.
    let payments: SocketAddr = urls[1].trim_start_matches("https://").parse().unwrap();
    let mut plain = TcpStream::connect(payments).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "a TLS port answered plain HTTP: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(https_get(payments, &trust, "/healthz").await, 200);

    // The orchestrator books through all three over TLS.
    let server = Server::start(ServerConfig::default(), remote(&urls, Some(trust.clone()))).await;
    let (flight, date) = find_flight(server.addr).await;
    let body = serde_json::to_vec(&booking_body(&flight, &date, serde_json::json!({}))).unwrap();
    let r = request_from(
        local(),
        server.addr,
        "POST",
        "/api/bookings",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "tls-1"),
        ],
        &body,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["booking_id"].as_str().unwrap().to_string();
    let done = wait_terminal(server.addr, &id).await;
    assert_eq!(done["status"], "confirmed", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_that_does_not_trust_the_certificate_books_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let server_tls = TlsServer::from_pem_files(&cert, &key).unwrap();
    let urls = [
        participant(Role::Inventory, &server_tls, dir.path()).await,
        participant(Role::Payments, &server_tls, dir.path()).await,
        participant(Role::Loyalty, &server_tls, dir.path()).await,
    ];
    // Another certificate: the participants' one is not trusted.
    let other = tempfile::tempdir().unwrap();
    let (other_cert, _) = certificate(other.path());
    let distrust = TlsClient::trusting_pem_file(&other_cert).unwrap();
    let server = Server::start(ServerConfig::default(), remote(&urls, Some(distrust))).await;
    // Even a search needs the inventory (seats left): it cannot be reached.
    let date = chrono::Utc::now().date_naive() + chrono::Days::new(30);
    let r = request_from(
        local(),
        server.addr,
        "GET",
        &format!("/api/flights/search?from=JFK&to=LAX&date={date}&passengers=1"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["code"], "unavailable", "{}", r.text);
    // And a booking is refused before anything starts.
    let body = serde_json::to_vec(&booking_body(
        "AA100",
        &date.to_string(),
        serde_json::json!({}),
    ))
    .unwrap();
    let r = request_from(
        local(),
        server.addr,
        "POST",
        "/api/bookings",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "tls-2"),
        ],
        &body,
    )
    .await;
    assert_ne!(r.status, 202, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_server_serves_https_with_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let config = ServerConfig {
        tls: Some(TlsServer::from_pem_files(&cert, &key).unwrap()),
        ..ServerConfig::default()
    };
    let server = Server::start(config, RemoteParticipants::default()).await;
    let trust = TlsClient::trusting_pem_file(&cert).unwrap();
    assert_eq!(https_get(server.addr, &trust, "/healthz").await, 200);
    // And plain HTTP gets no answer.
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        request_from(local(), server.addr, "GET", "/healthz", &[], b""),
    )
    .await;
    if let Ok(r) = r {
        assert_ne!(r.status, 200, "the TLS port answered plain HTTP");
    }
}

#[test]
fn a_key_that_does_not_match_or_a_missing_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = certificate(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (_, other_key) = certificate(other.path());
    assert!(TlsServer::from_pem_files(&cert, &other_key).is_err());
    let missing = dir.path().join("nope.pem");
    let e = TlsServer::from_pem_files(&missing, &other_key).unwrap_err();
    assert!(e.to_string().contains("nope.pem"), "{e}");
    assert!(TlsClient::trusting_pem_file(&missing).is_err());
}
