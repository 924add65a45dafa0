//! Backup and restore over loopback HTTP and the real binary.
//!
//! A backup taken while bookings run (some of them parked inside their
//! confirm step by a delay fault, so the snapshot certainly holds sagas
//! under way) restores record for record; a server started on the restored
//! directory finishes those sagas and passes the booking consistency check
//! (seats, payments, miles, promo uses agree with the sagas). A backup
//! taken once everything is quiet restores to exactly the live database,
//! tree by tree. No backup holds a card number. The binary's `backup` and
//! `restore` round-trip a file, and `restore` refuses a non-empty
//! directory and a truncated, damaged or newer file with a clear message.

mod support;

use demo_server::auth::AdminToken;
use demo_server::backup::{decode, restore, TreeDump, MAGIC};
use demo_server::{AppState, RemoteParticipants, ServerConfig};
use saga_engine::EventKind;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{booking_body, find_flight, local, request_from, wait_terminal, Server, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Trees = BTreeMap<Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>>;

fn trees_of(dump: Vec<TreeDump>) -> Trees {
    dump.into_iter().map(|t| (t.name, t.records)).collect()
}

fn live_trees(db: &sled::Db) -> Trees {
    trees_of(demo_server::backup::dump(db).expect("dump"))
}

/// `POST /api/admin/backup`, the file's bytes.
async fn take_backup(addr: SocketAddr) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "POST /api/admin/backup HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf))
        .await
        .expect("backup in time")
        .unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
    buf[split + 4..].to_vec()
}

async fn book(addr: SocketAddr, key: &str, body: &Value) -> String {
    let r = request_from(
        local(),
        addr,
        "POST",
        "/api/bookings",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ],
        &serde_json::to_vec(body).unwrap(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.body["booking_id"].as_str().unwrap().to_string()
}

/// Waits until no saga of `state` is under way.
async fn quiet(state: &AppState) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = state.engine.list(None, usize::MAX).await.unwrap();
        if all.iter().all(|r| r.status().is_terminal()) {
            return;
        }
        assert!(Instant::now() < deadline, "sagas never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_no_card_data(file: &[u8]) {
    for card in [&b"4242424242424242"[..], b"4242 4242 4242 4242"] {
        assert!(
            !file.windows(card.len()).any(|w| w == card),
            "a card number in the backup"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_bookings_run_restores_every_record_and_a_consistent_server() {
    let config = ServerConfig {
        rate_per_minute: 100_000,
        rate_burst: 10_000,
        ..ServerConfig::default()
    };
    let server = Server::start(config, RemoteParticipants::default()).await;
    let addr = server.addr;
    let (flight, date) = find_flight(addr).await;
    // Something in every kind of tree: an account, a loyalty member.
    let r = request_from(local(), addr, "POST", "/api/accounts", &[("content-type", "application/json")],
        &serde_json::to_vec(&json!({"name": "Ada", "email": "ada@example.com", "password": "correct horse battery"})).unwrap()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = request_from(
        local(),
        addr,
        "POST",
        "/api/loyalty",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "enroll-1"),
        ],
        &serde_json::to_vec(
            &json!({"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}),
        )
        .unwrap(),
    )
    .await;
    assert!(r.status == 201 || r.status == 200, "{}", r.text);
    let member = r.body["account"]["id"].as_str().unwrap().to_string();

    // Three bookings parked in their confirm step (3 s delay) ...
    let mut parked = Vec::new();
    for i in 0..3 {
        let mut body = booking_body(
            &flight,
            &date,
            json!({"confirm_booking": {"mode": "delay", "ms": 3000}}),
        );
        body["loyalty_id"] = json!(member);
        parked.push(book(addr, &format!("parked-{i}"), &body).await);
    }
    for id in &parked {
        let id = saga_engine::SagaId::parse(id).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let h = server.state.engine.history(&id).await.unwrap();
            if h.iter().any(|e| matches!(&e.kind, EventKind::StepStarted { step, .. } if step == "confirm_booking")) {
                break;
            }
            assert!(Instant::now() < deadline, "never reached confirm_booking");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // ... and three clients booking in a loop while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..3 {
        let (flight, date, stop) = (flight.clone(), date.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) || n < 2 {
                ids.push(
                    book(
                        addr,
                        &format!("loop-{c}-{n}"),
                        &booking_body(&flight, &date, json!({})),
                    )
                    .await,
                );
                n += 1;
            }
            ids
        }));
    }
    let during = take_backup(addr).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        for id in c.await.unwrap() {
            wait_terminal(addr, &id).await;
        }
    }
    quiet(&server.state).await;
    assert_no_card_data(&during);

    // Quiet now: a backup is the live database, tree by tree.
    let after = take_backup(addr).await;
    assert_no_card_data(&after);
    let dir = tempfile::tempdir().unwrap();
    let quiet_dir = dir.path().join("quiet");
    restore(&after, "after", &quiet_dir).unwrap();
    {
        let restored = sled::open(quiet_dir.join("db")).unwrap();
        let live = live_trees(&server.state.db);
        assert!(live.len() > 10, "trees: {}", live.len());
        assert_eq!(
            live_trees(&restored),
            live,
            "the restored database is the live one"
        );
    }

    // The backup taken mid-flight: every record as in the file ...
    let (_, file_trees) = decode(&during, "during").unwrap();
    let file_trees = trees_of(file_trees);
    let mid_dir = dir.path().join("mid");
    restore(&during, "during", &mid_dir).unwrap();
    {
        let restored = sled::open(mid_dir.join("db")).unwrap();
        assert_eq!(
            live_trees(&restored),
            file_trees,
            "restored record for record"
        );
        let store = saga_engine::SledStore::with_db(restored.clone()).unwrap();
        let active = saga_engine::Store::list_active(&store).await.unwrap();
        for id in &parked {
            assert!(
                active.iter().any(|r| r.id.as_str() == id),
                "{id} under way in the snapshot"
            );
        }
    }
    // ... and a server on it finishes what was under way, consistently.
    let state = open_when_unlocked(&mid_dir).await;
    quiet(&state).await;
    let problems = booking_domain::booking_saga::check_consistency(&state.engine, &state.services)
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    for id in &parked {
        let id = saga_engine::SagaId::parse(id).unwrap();
        let b = state.services.bookings.by_saga(&id).unwrap();
        let live = server.state.services.bookings.by_saga(&id).unwrap();
        assert!(
            b.is_some() && live.is_some(),
            "parked booking confirmed on both sides"
        );
        assert_eq!(b.unwrap().passengers, live.unwrap().passengers);
    }
    assert!(
        state
            .accounts
            .by_email("ada@example.com")
            .unwrap()
            .is_some(),
        "the account came back"
    );
    state.begin_shutdown();
    state.engine.shutdown(Duration::from_secs(5)).await;
    server.stop().await;
}

/// A server on `dir`, opened as soon as sled lets go of the directory:
/// the database this test opened and dropped just before may still hold
/// its file lock for a moment after the last handle is gone (sled's I/O
/// threads finish their writes first), as `reopen_sled` in the engine's
/// conformance tests waits for. Any other error fails at once; a lock
/// held for 30 s fails too.
async fn open_when_unlocked(dir: &std::path::Path) -> Arc<AppState> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match AppState::builder(dir)
            .admin_token(AdminToken::new(TOKEN).unwrap())
            .open()
            .await
        {
            Ok((state, _)) => return state,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    || e.to_string().contains("its lock is held") =>
            {
                assert!(
                    Instant::now() < deadline,
                    "the restored directory stays locked: {e}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("a server opens on the restored directory: {e}"),
        }
    }
}

fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_demo-server"));
    c.env("DEMO_ADMIN_TOKEN", TOKEN).env("NO_COLOR", "1");
    c
}

fn run(c: &mut std::process::Command) -> (bool, String) {
    let out = c.output().expect("run demo-server");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_backs_up_and_restores_and_refuses_bad_files_and_full_directories() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let (flight, date) = find_flight(server.addr).await;
    let id = book(
        server.addr,
        "bin-1",
        &booking_body(&flight, &date, json!({})),
    )
    .await;
    wait_terminal(server.addr, &id).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("skysaga.backup");
    let url = format!("http://{}", server.addr);
    let (ok, out) = tokio::task::block_in_place(|| {
        run(bin()
            .args(["backup", "--out"])
            .arg(&file)
            .args(["--server", &url]))
    });
    assert!(ok, "{out}");
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(MAGIC));
    let target = dir.path().join("restored");
    let (ok, out) = run(bin()
        .args(["restore", "--from"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&target));
    assert!(ok, "{out}");
    assert!(out.contains("restored"), "{out}");
    // It says which keys to carry over (a backup holds none).
    assert!(
        out.contains("card-vault.key") && out.contains("personal-data.key"),
        "{out}"
    );
    // Again into the same, now full, directory: refused.
    let (ok, out) = run(bin()
        .args(["restore", "--from"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&target));
    assert!(!ok && out.contains("not empty"), "{out}");
    // Truncated, damaged, newer: refused, nothing written.
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "truncated",
            bytes[..bytes.len() / 2].to_vec(),
            "damaged or truncated",
        ),
        (
            "damaged",
            {
                let mut b = bytes.clone();
                let mid = b.len() / 2;
                b[mid] ^= 0x40;
                b
            },
            "checksum does not match",
        ),
        (
            "newer",
            {
                let mut b = bytes.clone();
                b[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&9u32.to_be_bytes());
                b
            },
            "newer than this demo-server reads",
        ),
    ];
    for (name, content, message) in cases {
        let bad = dir.path().join(format!("{name}.backup"));
        std::fs::write(&bad, content).unwrap();
        let into = dir.path().join(format!("into-{name}"));
        let (ok, out) = run(bin()
            .args(["restore", "--from"])
            .arg(&bad)
            .arg("--data-dir")
            .arg(&into));
        assert!(!ok && out.contains(message), "{name}: {out}");
        assert!(!into.exists(), "{name}: nothing written");
    }
    // The restored directory serves the booking.
    let (state, _) = AppState::builder(&target)
        .admin_token(AdminToken::new(TOKEN).unwrap())
        .open()
        .await
        .expect("open restored");
    let sid = saga_engine::SagaId::parse(&id).unwrap();
    assert!(state.services.bookings.by_saga(&sid).unwrap().is_some());
    state.engine.shutdown(Duration::from_secs(5)).await;
    server.stop().await;
}

/// The barrier itself: while a snapshot holds it, bookings and a
/// registration wait at it and not one record changes; let go, they finish.
/// (Under `SAGA_SABOTAGE=backup-no-barrier` no writer ever waits: red.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_snapshot_holds_the_barrier_no_write_lands() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let addr = server.addr;
    let (flight, date) = find_flight(addr).await;
    let held = server.state.barrier.exclusive().await;
    let before = live_trees(&server.state.db);
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (flight, date) = (flight.clone(), date.clone());
        tasks.push(tokio::spawn(async move {
            book(
                addr,
                &format!("held-{i}"),
                &booking_body(&flight, &date, json!({})),
            )
            .await
        }));
    }
    let register = tokio::spawn(async move {
        request_from(local(), addr, "POST", "/api/accounts", &[("content-type", "application/json")],
            &serde_json::to_vec(&json!({"name": "Ada", "email": "ada@example.com", "password": "correct horse battery"})).unwrap()).await.status
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.state.barrier.waiting() < 4 {
        assert!(
            Instant::now() < deadline,
            "writers never waited at the barrier (waiting: {})",
            server.state.barrier.waiting()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        live_trees(&server.state.db),
        before,
        "a write landed under the barrier"
    );
    drop(held);
    for t in tasks {
        let id = t.await.unwrap();
        assert_eq!(wait_terminal(addr, &id).await["status"], "confirmed");
    }
    assert_eq!(register.await.unwrap(), 201);
    server.stop().await;
}
