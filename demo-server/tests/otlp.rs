//! `--otlp-endpoint`: the server exports its spans over OTLP/HTTP. A fake
//! collector on loopback takes the export requests; after one booking and
//! a SIGTERM (which flushes the exporter) they hold the saga's span with its
//! `saga_id` and the steps' spans (protobuf keeps strings as plain UTF-8,
//! so the test looks for them without decoding).
//!
//! ```text
//! cargo test -p demo-server --features otlp --test otlp
//! ```

#![cfg(feature = "otlp")]

mod support;

use serde_json::json;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{booking_body, find_flight, local, request_from, wait_terminal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_demo-server");

/// Accepts OTLP/HTTP export requests, keeps (path, content type, body).
async fn collector() -> (SocketAddr, Arc<Mutex<Vec<(String, String, Vec<u8>)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let ctype = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-type:"))
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    let body = buf[end + 4..end + 4 + len].to_vec();
                    keep.lock().unwrap().push((path, ctype, body));
                    buf.drain(..end + 4 + len);
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_booking_reach_the_collector() {
    let (collector, got) = collector().await;
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{collector}/v1/traces");
    let mut child = Command::new(BIN)
        .args(["--addr", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .args(["--otlp-endpoint", &endpoint])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("address line").unwrap();
        if let Some(a) = line.strip_prefix("demo-server: listening on http://") {
            break a.trim().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let (flight, date) = find_flight(addr).await;
    let body = serde_json::to_vec(&booking_body(&flight, &date, json!({}))).unwrap();
    let r = request_from(
        local(),
        addr,
        "POST",
        "/api/bookings",
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "otlp-1"),
        ],
        &body,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["booking_id"].as_str().unwrap().to_string();
    assert_eq!(wait_terminal(addr, &id).await["status"], "confirmed");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = got.lock().unwrap();
    assert!(!got.is_empty(), "the collector got no export request");
    let all: Vec<u8> = got.iter().flat_map(|(_, _, b)| b.clone()).collect();
    let has = |s: &str| all.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(
        got.iter()
            .all(|(p, c, _)| p == "/v1/traces" && c == "application/x-protobuf"),
        "{:?}",
        got.iter().map(|(p, c, _)| (p, c)).collect::<Vec<_>>()
    );
    for s in [
        "demo-server",
        "saga",
        "saga_id",
        id.as_str(),
        "step",
        "reserve_seat",
        "attempt",
    ] {
        assert!(has(s), "the exported spans mention {s:?}");
    }
}
