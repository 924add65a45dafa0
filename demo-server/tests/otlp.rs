//! `--otlp-endpoint`: the server exports its spans over OTLP/HTTP. A fake
//! collector on loopback takes the export requests; after one booking and
//! a SIGTERM (which flushes the exporter) they hold the saga's span with its
//! `saga_id` and the steps' spans (protobuf keeps strings as plain UTF-8,
//! so the first test looks for them without decoding). In services mode
//! the trace context crosses HTTP: the inventory participant's request
//! spans (its own collector) are in the booking's trace, children of the
//! booking server's step spans (decoded by [`otlp_spans`], a small reader
//! of the OTLP protobuf's few fields used here).
//!
//! ```text
//! cargo test -p demo-server --features otlp --test otlp
//! ```

#![cfg(feature = "otlp")]

mod support;

use serde_json::json;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{booking_body, find_flight, local, request_from, wait_terminal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_demo-server");

/// Accepts OTLP/HTTP export requests, keeps (path, content type, body).
async fn collector() -> (SocketAddr, Exports) {
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

/// A collector's export bodies, one after another.
type Exports = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// Starts the binary with `args` exporting to `collector`; returns it and
/// the address from its first stdout line starting with `prefix`.
fn spawn(args: &[&str], collector: SocketAddr, prefix: &str) -> (Child, SocketAddr) {
    let endpoint = format!("http://{collector}/v1/traces");
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--otlp-endpoint", &endpoint])
        .env("RUST_LOG", "info")
        .env("DEMO_SERVICE_TOKEN", "otlp-service-token-0123456789")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("address line").unwrap();
        if let Some(a) = line.strip_prefix(prefix) {
            break a.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// SIGTERM (which flushes the exporter), and waits for the exit.
async fn stop(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Books on the server at `addr`, waits until confirmed; the saga id.
async fn book(addr: SocketAddr, key: &str) -> String {
    let (flight, date) = find_flight(addr).await;
    let body = serde_json::to_vec(&booking_body(&flight, &date, json!({}))).unwrap();
    let r = request_from(
        local(),
        addr,
        "POST",
        "/api/bookings",
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", key),
        ],
        &body,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["booking_id"].as_str().unwrap().to_string();
    assert_eq!(wait_terminal(addr, &id).await["status"], "confirmed");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_booking_reach_the_collector() {
    let (collector, got) = collector().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().display().to_string();
    let (mut child, addr) = spawn(
        &["--addr", "127.0.0.1:0", "--data-dir", &dir],
        collector,
        "demo-server: listening on http://",
    );
    let id = book(addr, "otlp-1").await;
    stop(&mut child).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_services_mode_a_booking_is_one_trace_across_the_processes() {
    let (booking_collector, booking_got) = collector().await;
    let (inventory_collector, inventory_got) = collector().await;
    let tmp = tempfile::tempdir().unwrap();
    let inventory_dir = tmp.path().join("inventory").display().to_string();
    let booking_dir = tmp.path().join("booking").display().to_string();
    let (mut inventory, inventory_addr) = spawn(
        &[
            "--role",
            "inventory",
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            &inventory_dir,
        ],
        inventory_collector,
        "demo-server: inventory participant listening on http://",
    );
    let inventory_url = format!("http://{inventory_addr}");
    let (mut booking, addr) = spawn(
        &[
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            &booking_dir,
            "--inventory-url",
            &inventory_url,
        ],
        booking_collector,
        "demo-server: listening on http://",
    );
    let id = book(addr, "otlp-services-1").await;
    stop(&mut booking).await;
    stop(&mut inventory).await;

    let booking_spans = otlp_spans(&booking_got);
    let saga = booking_spans
        .iter()
        .find(|s| s.name == "saga" && s.has(&id))
        .unwrap_or_else(|| panic!("no saga span of {id}: {booking_spans:?}"));
    let steps: Vec<&Span> = booking_spans
        .iter()
        .filter(|s| s.name == "step" && s.trace_id == saga.trace_id)
        .collect();
    assert!(
        steps.iter().any(|s| s.has("reserve_seat")),
        "the saga's trace holds its steps: {booking_spans:?}"
    );
    let calls: Vec<Span> = otlp_spans(&inventory_got)
        .into_iter()
        .filter(|s| s.name == "participant_call")
        .collect();
    // The seat hold (and its confirmation) ran inside the saga's steps.
    let in_trace: Vec<&Span> = calls
        .iter()
        .filter(|c| c.trace_id == saga.trace_id)
        .collect();
    assert!(
        !in_trace.is_empty(),
        "no inventory call in the booking's trace {}: {calls:?}",
        hex(&saga.trace_id)
    );
    for c in &in_trace {
        assert!(
            steps.iter().any(|s| s.span_id == c.parent_span_id),
            "the inventory call {c:?} is a child of one of the saga's steps {steps:?}"
        );
    }
}

/// One exported span: the few fields the test reads.
struct Span {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    name: String,
    /// The attributes' raw bytes (keys and string values in UTF-8).
    attributes: Vec<u8>,
}

impl Span {
    fn has(&self, text: &str) -> bool {
        self.attributes
            .windows(text.len())
            .any(|w| w == text.as_bytes())
    }
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}(trace {} span {} parent {})",
            self.name,
            hex(&self.trace_id),
            hex(&self.span_id),
            hex(&self.parent_span_id)
        )
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The spans of every export request a collector got: the protobuf
/// `ExportTraceServiceRequest` walked down `resource_spans` (1) ->
/// `scope_spans` (2) -> `spans` (2), reading a span's `trace_id` (1),
/// `span_id` (2), `parent_span_id` (4), `name` (5) and `attributes` (9).
fn otlp_spans(got: &Exports) -> Vec<Span> {
    let mut out = Vec::new();
    for (_, _, body) in got.lock().unwrap().iter() {
        for resource in fields(body, 1) {
            for scope in fields(resource, 2) {
                for span in fields(scope, 2) {
                    let one = |n| fields(span, n).next().unwrap_or_default().to_vec();
                    out.push(Span {
                        trace_id: one(1),
                        span_id: one(2),
                        parent_span_id: one(4),
                        name: String::from_utf8(one(5)).unwrap(),
                        attributes: fields(span, 9).flatten().copied().collect(),
                    });
                }
            }
        }
    }
    out
}

/// The length-delimited fields numbered `want` of one protobuf message.
fn fields(mut buf: &[u8], want: u64) -> impl Iterator<Item = &[u8]> {
    fn varint(buf: &mut &[u8]) -> u64 {
        let mut v = 0;
        for shift in (0..64).step_by(7) {
            let (b, rest) = buf.split_first().expect("truncated varint");
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let tag = varint(&mut buf);
        let skip = match tag & 7 {
            0 => {
                varint(&mut buf);
                0
            }
            1 => 8,
            2 => varint(&mut buf) as usize,
            5 => 4,
            t => panic!("protobuf wire type {t}"),
        };
        let (field, rest) = buf.split_at(skip);
        if tag & 7 == 2 && tag >> 3 == want {
            out.push(field);
        }
        buf = rest;
    }
    out.into_iter()
}
