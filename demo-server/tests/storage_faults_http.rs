//! Storage faults through the server (feature `strace`): the demo server
//! runs under strace with EIO injected into sled's flush
//! (`sync_file_range`) from its K-th call. Bookings acknowledged with 202
//! before the fault must all be there after a restart without the fault
//! and reach a terminal state; once the fault hits, `POST /api/bookings`
//! answers 503 with `Retry-After` (never another 5xx) and starts nothing.
//!
//! `cargo test -p demo-server --features strace --test storage_faults_http`
//! (fails, not skips, without strace).
#![cfg(feature = "strace")]

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_demo-server");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 exchange with `Connection: close`: status, headers, JSON body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Option<(u16, String, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(k) = key {
        req.push_str(&format!("Idempotency-Key: {k}\r\n"));
    }
    if body.is_some() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&payload);
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    // Bodies may be chunked: take the JSON object inside.
    let json = rest
        .find('{')
        .and_then(|a| rest.rfind('}').map(|b| &rest[a..=b]))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(Value::Null);
    Some((status, head.to_ascii_lowercase(), json))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // Under strace the server is strace's child: kill it first and wait
        // until it is gone (it holds the database lock), then strace.
        let pid = self.0.id();
        let mut children = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok());
                if ppid == Some(pid) {
                    if let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() {
                        children.push(child);
                    }
                }
            }
        }
        for c in &children {
            let _ = Command::new("kill").arg("-9").arg(c.to_string()).status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while children
            .iter()
            .any(|c| std::path::Path::new(&format!("/proc/{c}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts the server; `None` if it exited before answering (a store that
/// fails at startup refuses to start, which is allowed under a fault).
fn start(dir: &std::path::Path, port: u16, inject_from: Option<u32>) -> Option<Server> {
    let mut cmd = match inject_from {
        Some(k) => {
            let mut c = Command::new("strace");
            c.args([
                "-f",
                "-qq",
                "-o",
                "/dev/null",
                "-e",
                "trace=sync_file_range",
                "-e",
                &format!("inject=sync_file_range:error=EIO:when={k}+"),
                BIN,
            ]);
            c
        }
        None => Command::new(BIN),
    };
    let child = cmd
        .args(["--addr", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .env("DEMO_ADMIN_TOKEN", "test-token-0123456789")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(dir.with_extension(format!("{port}.log")))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .unwrap_or_else(|e| panic!("starting the server (is strace installed?): {e}"));
    let mut server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/healthz", None, None).map(|r| r.0) != Some(200) {
        if server.0.try_wait().ok().flatten().is_some() {
            let log = std::fs::read_to_string(dir.with_extension(format!("{port}.log")))
                .unwrap_or_default();
            eprintln!("server exited before answering:\n{log}");
            return None;
        }
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(server)
}

fn booking(flight: &str, date: &str, n: usize) -> Value {
    json!({
        "flight_id": flight, "date": date, "cabin": "economy",
        "passengers": [{"first_name": "Ada", "last_name": "Lovelace"}],
        "email": format!("ada{n}@example.com"),
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2035, "cvc": "123", "holder_name": "Ada Lovelace"}
    })
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

#[test]
fn a_failing_disk_gets_503_and_loses_no_acknowledged_booking() {
    assert!(
        Command::new("strace").arg("-V").output().is_ok(),
        "this test needs strace (Debian package strace)"
    );
    let root = tempfile::tempdir().unwrap();
    let seeded = root.path().join("seeded");
    // First start seeds the catalog; find a flight.
    let (flight, date) = {
        let port = free_port();
        let _s = start(&seeded, port, None).expect("the server starts");
        let today = chrono::Utc::now().date_naive();
        let mut found = None;
        for d in 20..34 {
            let date = today + chrono::Days::new(d);
            let (_, _, v) = http(
                port,
                "GET",
                &format!("/api/flights/search?from=JFK&to=LAX&date={date}"),
                None,
                None,
            )
            .unwrap();
            if let Some(id) = v["results"][0]["flight"]["id"].as_str() {
                found = Some((id.to_string(), date.to_string()));
                break;
            }
        }
        found.expect("a JFK-LAX flight")
    };

    let mut saw_503 = 0;
    let mut acked_total = 0;
    for k in [2u32, 5, 12, 30] {
        let dir = root.path().join(format!("k{k}"));
        copy_dir(&seeded, &dir);
        let port = free_port();
        let mut acked = Vec::new();
        if let Some(_s) = start(&dir, port, Some(k)) {
            let mut fails = 0;
            for n in 0..60 {
                let key = format!("k{k}-b{n}");
                let Some((status, head, body)) = http(
                    port,
                    "POST",
                    "/api/bookings",
                    Some(&key),
                    Some(&booking(&flight, &date, n)),
                ) else {
                    break;
                };
                match status {
                    202 => {
                        fails = 0;
                        acked.push((key, body["booking_id"].as_str().unwrap().to_string()));
                    }
                    503 => {
                        assert!(
                            head.contains("retry-after:"),
                            "503 without Retry-After: {head}"
                        );
                        assert!(
                            body["error"].is_string(),
                            "503 without a JSON error: {body}"
                        );
                        saw_503 += 1;
                        fails += 1;
                        if fails >= 3 {
                            break;
                        }
                    }
                    other => panic!(
                        "K={k}: booking {n} answered {other} (only 202 or 503 allowed): {body}"
                    ),
                }
            }
        }
        // Restart without the fault: every acknowledged booking ends.
        let port = free_port();
        let _s = start(&dir, port, None).expect("the server starts without the fault");
        for (key, id) in &acked {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let (status, _, v) =
                    http(port, "GET", &format!("/api/bookings/{id}"), None, None).unwrap();
                assert_eq!(
                    status, 200,
                    "K={k}: acknowledged booking {key} ({id}) lost: {v}"
                );
                let st = v["status"].as_str().unwrap_or_default().to_string();
                if st == "confirmed" || st == "compensated" {
                    break;
                }
                assert!(Instant::now() < deadline, "K={k}: {key} stuck in {st}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        acked_total += acked.len();
    }
    eprintln!("storage_faults_http: {acked_total} acknowledged bookings recovered, {saw_503} answers were 503 + Retry-After");
    assert!(saw_503 > 0, "the fault never reached a booking");
}
