//! Passengers' dates of birth and the contact phone (issue 14) over real
//! loopback HTTP. Against the real binary, logging at TRACE into a file: a
//! booking with both is confirmed; its HTML and PDF e-tickets (the PDF
//! parsed back with lopdf) print each passenger's date of birth, the
//! manage-booking lookup shows the phone masked but its last three digits;
//! no other answer (status, admin saga view), no byte of the data
//! directory, of the log or of a backup holds either in clear; the backup
//! restored elsewhere holds them only sealed too, and a server started on
//! it with the key file copied across prints them again. In process: bad
//! dates of birth and phones get a `422` naming each field, never quoting
//! the value.

mod support;

use demo_server::{RemoteParticipants, ServerConfig};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{booking_body, find_flight, local, request_from, wait_terminal, Raw, Server, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_demo-server");
const DOB_ADA: &str = "1987-03-14";
const DOB_CHARLES: &str = "1991-11-23";
const PHONE: &str = "+44 20-7946 0958";
const KEY_FILE: &str = booking_domain::personal::PERSONAL_KEY_FILE;

/// The details in every form they could be written in clear.
const IN_CLEAR: &[&str] = &[
    "1987-03-14",
    "19870314",
    "1991-11-23",
    "19911123",
    "442079460958",
    "2079460958",
    "20-7946 0958",
    "7946 0958",
];

fn holds_in_clear(bytes: &[u8]) -> Option<&'static str> {
    IN_CLEAR.iter().copied().find(|s| {
        let s = s.as_bytes();
        bytes.windows(s.len()).any(|w| w == s)
    })
}

fn assert_sealed(what: &str, bytes: &[u8]) {
    if let Some(s) = holds_in_clear(bytes) {
        panic!("{what} holds {s} in clear");
    }
}

/// Every file under `dir`, each scanned; the bytes scanned.
fn assert_dir_sealed(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            n += assert_dir_sealed(&entry.path());
        } else {
            let bytes = std::fs::read(entry.path()).unwrap();
            n += bytes.len();
            assert_sealed(&entry.path().display().to_string(), &bytes);
        }
    }
    n
}

fn body_with_details(flight: &str, date: &str) -> Value {
    let mut body = booking_body(flight, date, json!({}));
    body["passengers"][0]["date_of_birth"] = json!(DOB_ADA);
    body["passengers"][1]["date_of_birth"] = json!(DOB_CHARLES);
    body["phone"] = json!(PHONE);
    body
}

/// The server binary on `data`, its standard error (TRACE) into `log`.
fn spawn(data: &Path, log: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("DEMO_ADMIN_TOKEN", TOKEN)
        .env(
            "RUST_LOG",
            "debug,booking_domain=trace,saga_engine=trace,demo_server=trace",
        )
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("address line").unwrap();
        if let Some(a) = line.strip_prefix("demo-server: listening on http://") {
            break a.trim().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn stop(mut child: Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Raw {
    request_from(local(), addr, "GET", path, headers, b"").await
}

/// A request's reply as raw bytes (the PDF, the backup).
async fn raw_bytes(addr: SocketAddr, method: &str, path: &str) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf))
        .await
        .expect("reply in time")
        .unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{method} {path}: {head}");
    assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
    buf[split + 4..].to_vec()
}

fn pdf_text(bytes: &[u8]) -> String {
    let doc = lopdf::Document::load_mem(bytes).expect("the PDF parses");
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    doc.extract_text(&pages).expect("its text extracts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn details_are_sealed_on_disk_in_logs_and_backups_and_shown_on_the_ticket_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, log) = (tmp.path().join("data"), tmp.path().join("server.log"));
    let (child, addr) = spawn(&data, &log);
    let (flight, date) = find_flight(addr).await;
    let r = request_from(
        local(),
        addr,
        "POST",
        "/api/bookings",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "personal-1"),
        ],
        &serde_json::to_vec(&body_with_details(&flight, &date)).unwrap(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["booking_id"].as_str().unwrap().to_string();
    let done = wait_terminal(addr, &id).await;
    assert_eq!(done["status"], "confirmed", "{done}");
    assert_sealed("the booking's status", done.to_string().as_bytes());
    let reference = done["booking_ref"].as_str().unwrap().to_string();

    // Shown: the tickets, with every passenger's date of birth.
    let html = get(
        addr,
        &format!("/api/tickets/{reference}?last_name=Lovelace"),
        &[],
    )
    .await;
    assert_eq!(html.status, 200, "{}", html.text);
    for dob in [DOB_ADA, DOB_CHARLES] {
        assert!(html.text.contains(dob), "HTML ticket without {dob}");
    }
    let pdf = raw_bytes(
        addr,
        "GET",
        &format!("/api/bookings/{id}/ticket.pdf?last_name=Babbage"),
    )
    .await;
    let text = pdf_text(&pdf);
    for line in [
        format!("Ada LOVELACE, born {DOB_ADA}"),
        format!("Charles BABBAGE, born {DOB_CHARLES}"),
    ] {
        assert!(text.contains(&line), "PDF text without {line:?}: {text}");
    }
    // The holder's manage page: the phone masked, no date of birth, no seal.
    let lookup = get(
        addr,
        &format!("/api/bookings/lookup?reference={reference}&last_name=Lovelace"),
        &[],
    )
    .await;
    assert_eq!(lookup.status, 200, "{}", lookup.text);
    assert_eq!(lookup.body["booking"]["contact_phone"], "+•••••••••958");
    assert!(
        lookup.body["booking"].get("personal").is_none(),
        "{}",
        lookup.text
    );
    assert_sealed("the lookup", lookup.text.as_bytes());
    // The operator's view of the saga holds the sealed form only.
    let admin = get(
        addr,
        &format!("/api/admin/sagas/{id}"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    )
    .await;
    assert_eq!(admin.status, 200, "{}", admin.text);
    assert!(
        admin.text.contains("\"personal\""),
        "the seal is there: {}",
        admin.text
    );
    assert_sealed("the admin saga view", admin.text.as_bytes());

    let backup = raw_bytes(addr, "POST", "/api/admin/backup").await;
    assert!(backup.starts_with(demo_server::backup::MAGIC));
    assert_sealed("the backup", &backup);
    stop(child);
    let logged = std::fs::read(&log).unwrap();
    assert!(
        String::from_utf8_lossy(&logged).contains(&id),
        "the log saw the booking"
    );
    assert_sealed("the log", &logged);
    assert!(assert_dir_sealed(&data) > 0);

    // Restored elsewhere: sealed there too; with the key file copied
    // across (a backup never holds a key), the ticket prints them again.
    let file = tmp.path().join("backup.bin");
    std::fs::write(&file, &backup).unwrap();
    let restored = tmp.path().join("restored");
    let out = Command::new(BIN)
        .args(["restore", "--from"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_dir_sealed(&restored);
    std::fs::copy(data.join(KEY_FILE), restored.join(KEY_FILE)).unwrap();
    let (child, addr) = spawn(&restored, &tmp.path().join("restored.log"));
    let html = get(
        addr,
        &format!("/api/tickets/{reference}?last_name=Babbage"),
        &[],
    )
    .await;
    assert_eq!(html.status, 200, "{}", html.text);
    assert!(
        html.text.contains(DOB_CHARLES),
        "restored ticket: {}",
        html.text
    );
    stop(child);
}

async fn book(server: &Server, key: &str, body: &Value) -> Raw {
    request_from(
        local(),
        server.addr,
        "POST",
        "/api/bookings",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ],
        &serde_json::to_vec(body).unwrap(),
    )
    .await
}

fn fields(r: &Raw) -> Vec<(String, String)> {
    r.body["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no fields: {}", r.text))
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap().to_string(),
                f["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn bad_dates_of_birth_and_phones_get_422_naming_the_field_without_echo() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let (flight, date) = find_flight(server.addr).await;
    let tomorrow = (chrono::Utc::now().date_naive() + chrono::Days::new(1))
        .format("%Y-%m-%d")
        .to_string();
    // (date of birth of the second passenger, phone, (field, message) expected)
    type Case = (Value, Value, Vec<(&'static str, &'static str)>);
    let cases: Vec<Case> = vec![
        (
            json!("2023-02-29"),
            json!("+44 (20) 7946 0958"),
            vec![
                ("passengers[1].date_of_birth", "not a real date"),
                ("phone", "+ and the country code"),
            ],
        ),
        (
            json!(tomorrow),
            json!("+44 7946"),
            vec![
                ("passengers[1].date_of_birth", "in the future"),
                ("phone", "8 to 15 digits"),
            ],
        ),
        (
            json!("1899-12-31"),
            json!(PHONE),
            vec![("passengers[1].date_of_birth", "1900 or later")],
        ),
        (
            json!("14/03/1987"),
            json!(PHONE),
            vec![("passengers[1].date_of_birth", "YYYY-MM-DD")],
        ),
        // Of the wrong type: refused by field, the value not quoted.
        (
            json!(19870314),
            json!(PHONE),
            vec![("passengers", "must be a string")],
        ),
        (
            json!(DOB_CHARLES),
            json!(442079460958u64),
            vec![("phone", "must be a string")],
        ),
    ];
    for (i, (dob, phone, want)) in cases.into_iter().enumerate() {
        let mut body = body_with_details(&flight, &date);
        body["passengers"][1]["date_of_birth"] = dob.clone();
        body["phone"] = phone.clone();
        let r = book(&server, &format!("bad-{i}"), &body).await;
        assert_eq!(r.status, 422, "{dob} {phone}: {}", r.text);
        assert_eq!(r.body["code"], "validation_failed", "{}", r.text);
        let got = fields(&r);
        assert_eq!(got.len(), want.len(), "{dob} {phone}: {}", r.text);
        for ((field, message), (want_field, want_message)) in got.iter().zip(&want) {
            assert_eq!(field, want_field, "{}", r.text);
            assert!(message.contains(want_message), "{}", r.text);
        }
        for secret in [
            dob.to_string(),
            phone.to_string(),
            "7946".into(),
            "1987".into(),
        ] {
            let secret = secret.trim_matches('"');
            assert!(!r.text.contains(secret), "{secret} echoed: {}", r.text);
        }
    }
    assert_eq!(
        server.state.services.payments.cards_held().await.unwrap(),
        0,
        "nothing kept"
    );
    // Without them the JSON API still books (they are optional here).
    let r = book(&server, "plain", &booking_body(&flight, &date, json!({}))).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let done = wait_terminal(server.addr, r.body["booking_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "confirmed", "{done}");
    server.stop().await;
}
