//! `demo-server sagas list --attr name=value` against a real server
//! process on loopback, then offline on its stopped directory: a booking
//! found by its reference, by its contact address (hashed before it leaves
//! the command line) and by its departure date; a malformed `--attr`
//! refused with a usage message.

mod support;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{booking_body, find_flight, local, request_from, wait_terminal};

const BIN: &str = env!("CARGO_BIN_EXE_demo-server");
/// Nothing listens on port 1: the "no server" case.
const NO_SERVER: &str = "http://127.0.0.1:1";

struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on `127.0.0.1:0` over `data`; returns once it listens.
fn spawn_server(data: &Path, extra: &[&str]) -> Proc {
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

fn stop(mut p: Proc) {
    unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sagas(data: &Path, server: &str, args: &[&str]) -> Output {
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

fn ok(o: &Output) -> String {
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "failed: {stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

fn json_of(o: &Output) -> Value {
    let text = ok(o);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn ids(page: &Value) -> Vec<String> {
    page["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

async fn book(addr: SocketAddr, flight: &str, date: &str, faults: Value) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_search_attribute_online_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let server = spawn_server(data, &[]);
    let url = format!("http://{}", server.addr);
    let (flight, date) = find_flight(server.addr).await;
    let first = book(server.addr, &flight, &date, json!({})).await;
    let second = book(server.addr, &flight, &date, json!({})).await;
    let done = wait_terminal(server.addr, &first).await;
    wait_terminal(server.addr, &second).await;
    let reference = done["booking_ref"].as_str().unwrap().to_string();

    let by_ref = format!("reference={reference}");
    let by_date = format!("departure={date}");
    let page = json_of(&sagas(data, &url, &["list", "--json", "--attr", &by_ref]));
    assert_eq!(ids(&page), vec![first.clone()], "{page}");
    // booking_body's contact address, in another case.
    let page = json_of(&sagas(
        data,
        &url,
        &["list", "--json", "--attr", "email=ADA@example.com"],
    ));
    assert_eq!(ids(&page), [second.clone(), first.clone()], "{page}");
    let table = ok(&sagas(data, &url, &["list", "--attr", &by_date]));
    assert!(table.contains(&first) && table.contains(&second), "{table}");
    let bad = sagas(data, &url, &["list", "--attr", "reference"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--attr"), "{err}");

    stop(server);
    let page = json_of(&sagas(
        data,
        NO_SERVER,
        &["list", "--json", "--attr", &by_ref],
    ));
    assert_eq!(ids(&page), vec![first.clone()], "offline: {page}");
    let page = json_of(&sagas(
        data,
        NO_SERVER,
        &["list", "--json", "--attr", &by_date, "--limit", "1"],
    ));
    assert_eq!(ids(&page), vec![second.clone()], "offline: {page}");
}
