//! The PDF e-ticket over loopback HTTP: `GET /api/bookings/{id}/ticket.pdf`
//! for a confirmed booking is a real PDF (parsed back with lopdf) whose
//! page text has the reference and every passenger; the same access rule
//! as the HTML ticket (a passenger's last name, by booking id or
//! reference; anything else `404`); `409` once the booking is cancelled.

mod support;

use demo_server::{RemoteParticipants, ServerConfig};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{booking_body, find_flight, local, request_from, wait_terminal, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A GET answered with its status, head and raw body bytes.
async fn get_bytes(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("reply in time")
        .expect("read");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    assert!(
        !head.to_ascii_lowercase().contains("chunked"),
        "a whole body: {head}"
    );
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, buf[split + 4..].to_vec())
}

async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> Value {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    let r = request_from(
        local(),
        addr,
        "POST",
        path,
        &h,
        &serde_json::to_vec(body).unwrap(),
    )
    .await;
    assert!(r.status == 202, "{path}: {}", r.text);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pdf_ticket_is_a_real_pdf_with_the_reference_and_every_passenger() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let addr = server.addr;
    let (flight, date) = find_flight(addr).await;
    let accepted = post(
        addr,
        "/api/bookings",
        &[("idempotency-key", "pdf-1")],
        &booking_body(&flight, &date, json!({})),
    )
    .await;
    let id = accepted["booking_id"].as_str().unwrap().to_string();
    let booking = wait_terminal(addr, &id).await;
    assert_eq!(booking["status"], "confirmed", "{booking}");
    let reference = booking["booking_ref"].as_str().unwrap().to_string();

    for path in [
        format!("/api/bookings/{id}/ticket.pdf?last_name=Babbage"),
        format!("/api/bookings/{reference}/ticket.pdf?last_name=lovelace"),
    ] {
        let (status, head, body) = get_bytes(addr, &path).await;
        assert_eq!(status, 200, "{path}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/pdf"),
            "{head}"
        );
        assert!(body.starts_with(b"%PDF-"), "not a PDF: {:?}", &body[..16]);
        let doc = lopdf::Document::load_mem(&body).expect("the PDF parses");
        let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
        assert_eq!(pages, vec![1], "one page");
        let text = doc.extract_text(&pages).expect("its text extracts");
        for needle in [
            reference.as_str(),
            "Ada LOVELACE",
            "Charles BABBAGE",
            "economy",
            "Boarding code",
        ] {
            assert!(text.contains(needle), "PDF text without {needle}: {text}");
        }
    }

    // The HTML ticket's rule: without the last name, or with another, 404.
    for path in [
        format!("/api/bookings/{id}/ticket.pdf"),
        format!("/api/bookings/{id}/ticket.pdf?last_name=Hopper"),
        "/api/bookings/NOSUCH/ticket.pdf?last_name=Babbage".to_string(),
    ] {
        let (status, head, body) = get_bytes(addr, &path).await;
        assert_eq!(status, 404, "{path}: {head}");
        assert!(!body.starts_with(b"%PDF"), "{path}");
    }

    // Cancelled: no valid ticket.
    let c = post(
        addr,
        "/api/cancellations",
        &[],
        &json!({"reference": reference, "last_name": "Lovelace"}),
    )
    .await;
    let status_url = c["status_url"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = request_from(local(), addr, "GET", &status_url, &[], b"").await;
        if r.body["status"] == "cancelled" {
            break;
        }
        assert!(Instant::now() < deadline, "never cancelled: {}", r.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, head, _) = get_bytes(
        addr,
        &format!("/api/bookings/{id}/ticket.pdf?last_name=Babbage"),
    )
    .await;
    assert_eq!(status, 409, "{head}");
    server.stop().await;
}
