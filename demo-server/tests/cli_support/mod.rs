//! The harness the command-line tests share: the real `demo-server` binary
//! started on loopback with its own data directory, `demo-server sagas ...`
//! run against it (or its stopped directory), and a booking made over HTTP.
//! Declared with `#[path]` next to `mod support;` by each CLI test.

#![allow(dead_code)]

use super::support::{booking_body, local, request_from};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_demo-server");
/// Nothing listens on port 1: the "no server" case.
pub const NO_SERVER: &str = "http://127.0.0.1:1";

pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on `127.0.0.1:0` over `data`; returns once it listens.
pub fn spawn_server(data: &Path, extra: &[&str]) -> Proc {
    let mut child = Command::new(BIN)
        .args([
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .env_remove("DEMO_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("server printed its address").unwrap();
        if let Some(a) = line.strip_prefix("demo-server: listening on http://") {
            break a.trim().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Proc { child, addr }
}

pub fn stop(mut p: Proc) {
    unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn sagas(data: &Path, server: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "sagas",
            "--server",
            server,
        ])
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("DEMO_ADMIN_TOKEN")
        .output()
        .expect("run sagas")
}

pub fn ok(o: &Output) -> String {
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "failed: {stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

pub fn json_of(o: &Output) -> Value {
    let text = ok(o);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

pub fn ids(page: &Value) -> Vec<String> {
    page["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

pub async fn book(addr: SocketAddr, flight: &str, date: &str, faults: Value) -> String {
    let body = serde_json::to_vec(&booking_body(flight, date, faults)).unwrap();
    let key = format!("cli-{}", rand::random::<u64>());
    let r = request_from(
        local(),
        addr,
        "POST",
        "/api/bookings",
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", &key),
        ],
        &body,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.body["booking_id"].as_str().unwrap().to_string()
}
