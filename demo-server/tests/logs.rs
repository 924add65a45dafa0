//! The server's logs as a file sees them: with standard error redirected
//! (not a terminal) the text format carries no colour codes, and
//! `--log-format json` writes one JSON object per line whose span fields
//! carry the saga's `saga_id`, so one booking can be filtered out.

mod support;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{booking_body, find_flight, local, request_from, wait_terminal};

const BIN: &str = env!("CARGO_BIN_EXE_demo-server");

/// Runs the server with stderr into `log`, books once, stops it; the
/// booking's id.
async fn run_and_book(data: &Path, log: &Path, extra: &[&str], filter: &str) -> String {
    let mut child: Child = Command::new(BIN)
        .args([
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .args(extra)
        .env("RUST_LOG", filter)
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
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
            ("Idempotency-Key", "logs-1"),
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
        std::thread::sleep(Duration::from_millis(50));
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_file_have_no_colour_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("server.log");
    run_and_book(&tmp.path().join("data"), &log, &[], "info").await;
    let bytes = std::fs::read(&log).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("INFO"), "something was logged: {text}");
    assert!(
        !bytes.contains(&0x1b),
        "no ESC byte in a log file: {:?}",
        text.lines().find(|l| l.contains('\u{1b}'))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_the_saga_id() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("server.jsonl");
    // A successful saga logs nothing at info inside its span (the engine
    // logs failures); the inventory's debug line "seats held" is logged in
    // the saga's and the step's spans.
    let id = run_and_book(
        &tmp.path().join("data"),
        &log,
        &["--log-format", "json"],
        "info,booking_domain=debug",
    )
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "no colour codes in JSON logs");
    let mut lines = 0;
    let mut of_the_saga = 0;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a line that is not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
        lines += 1;
        let in_span = v["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|s| s["saga_id"] == id.as_str()));
        if in_span {
            of_the_saga += 1;
        }
    }
    assert!(lines > 2, "{text}");
    assert!(
        of_the_saga > 0,
        "some line carries the saga span's saga_id {id}: {text}"
    );
}

/// Without the `otlp` feature, asking for OTLP export is refused up front
/// rather than silently ignored.
#[cfg(not(feature = "otlp"))]
#[test]
fn otlp_export_in_a_build_without_it_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args(["--addr", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .args(["--otlp-endpoint", "http://127.0.0.1:4318/v1/traces"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--features otlp"), "{err}");
}
