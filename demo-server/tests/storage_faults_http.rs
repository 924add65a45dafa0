//! Storage faults through the server (feature `strace`), with faults that
//! really lose data. The demo server starts without any fault; once it
//! answers, strace is attached to it and makes sled's `pwrite64` (the
//! write then never happens) or its flush `sync_file_range` fail with EIO,
//! from the K-th call on or at the K-th call only, while clients post
//! bookings. Then the server is SIGKILLed (no graceful shutdown, which
//! would flush), restarted without the fault, and judged:
//!
//! - every `POST /api/bookings` is answered 202 or 503 with `Retry-After`
//!   and a JSON error (never another status, never no answer);
//! - no booking posted after the first 503 had been answered gets a 202
//!   (the store fails until reopened);
//! - after the restart every booking answered 202 is there and reaches
//!   `confirmed` or `compensated`; or the server refuses to start because
//!   its store is damaged (never a silent loss);
//! - a server that fails to start for a trial is a failed trial; at least
//!   [`REACHED_FLOOR`] of the trials must have reached the fault, and at
//!   least [`REOPENED_FLOOR`] must have restarted without damage.
//!
//! `cargo test -p demo-server --features strace --test storage_faults_http`
//! (fails, not skips, without strace). Shown to fail with
//! `SAGA_SABOTAGE=ack-before-flush cargo test -p demo-server --features
//! strace,saga-engine/sabotage --test storage_faults_http`.
#![cfg(feature = "strace")]

#[path = "storage_faults_http/server.rs"]
mod server;
// One strace helper for both storage-fault tests (the crates are tested
// apart, so the file is included by path rather than shared as a crate).
#[path = "../../tests/storage_faults/strace.rs"]
mod strace;

use saga_engine::store::HWM_FILE;
use serde_json::{json, Value};
use server::{Server, Started};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strace::{Fault, Tracer};

/// Share of the trials that must reach the fault (a 503).
const REACHED_FLOOR: f64 = 0.75;
/// Share of the trials whose server must restart and be checked. A
/// refusal as damaged is no silent loss, but it is a loss the store
/// detected, and a trial that ends in one vouches for nothing.
const REOPENED_FLOOR: f64 = 0.9;
/// Concurrent clients per trial.
const CLIENTS: usize = 3;
/// Bookings each client posts at most.
const POSTS_PER_CLIENT: usize = 25;
/// A client stops after this many 503s in a row.
const GIVE_UP_AFTER: usize = 3;

fn booking(flight: &str, date: &str, n: usize) -> Value {
    json!({
        "flight_id": flight, "date": date, "cabin": "economy",
        "passengers": [{"first_name": "Ada", "last_name": "Lovelace"}],
        "email": format!("ada{n}@example.com"),
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2035, "cvc": "123", "holder_name": "Ada Lovelace"}
    })
}

/// One answer as the client saw it: the acknowledgement log's entry.
struct Post {
    key: String,
    /// 202 with this booking id, or `None` for a 503.
    booking: Option<String>,
    begin: u64,
    end: u64,
}

#[derive(Default)]
struct Tally {
    trials: usize,
    reached: usize,
    failed_trials: usize,
    acked: usize,
    recovered: usize,
    damaged: usize,
    answered_503: usize,
    after_failure: usize,
    acked_after_failure: usize,
    problems: Vec<String>,
}

/// Posts bookings from [`CLIENTS`] threads; every answer is logged the
/// moment it arrives, with begin/end stamps from one logical clock.
fn post_bookings(port: u16, flight: &str, date: &str, fault: Fault) -> (Vec<Post>, Vec<String>) {
    let clock = Arc::new(AtomicU64::new(0));
    let log = Arc::new(Mutex::new(Vec::new()));
    let problems = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let (clock, log, problems) = (clock.clone(), log.clone(), problems.clone());
            s.spawn(move || {
                let mut failed_in_a_row = 0;
                for i in 0..POSTS_PER_CLIENT {
                    let key = format!("c{c}-b{i}");
                    let body = booking(flight, date, c * POSTS_PER_CLIENT + i);
                    let begin = clock.fetch_add(1, Ordering::SeqCst);
                    let answer =
                        server::http(port, "POST", "/api/bookings", Some(&key), Some(&body));
                    let end = clock.fetch_add(1, Ordering::SeqCst);
                    let problem =
                        |p: String| problems.lock().unwrap().push(format!("{fault}: {p}"));
                    let a = match answer {
                        Ok(a) => a,
                        Err(e) => {
                            problem(format!("POST {key} got no answer: {e}"));
                            return;
                        }
                    };
                    match a.status {
                        202 => {
                            failed_in_a_row = 0;
                            let Some(id) = a.body["booking_id"].as_str() else {
                                problem(format!("202 for {key} without a booking_id: {}", a.body));
                                continue;
                            };
                            log.lock().unwrap().push(Post {
                                key,
                                booking: Some(id.to_string()),
                                begin,
                                end,
                            });
                        }
                        503 => {
                            if !a.head.contains("\r\nretry-after:") {
                                problem(format!("503 for {key} without Retry-After: {}", a.head));
                            }
                            if !a.body["error"].is_string() {
                                problem(format!("503 for {key} without a JSON error: {}", a.body));
                            }
                            log.lock().unwrap().push(Post {
                                key,
                                booking: None,
                                begin,
                                end,
                            });
                            failed_in_a_row += 1;
                            if failed_in_a_row >= GIVE_UP_AFTER {
                                return;
                            }
                        }
                        other => problem(format!(
                            "POST {key} answered {other} (only 202 or 503 allowed): {}",
                            a.body
                        )),
                    }
                }
            });
        }
    });
    let log = std::mem::take(&mut *log.lock().unwrap());
    let problems = std::mem::take(&mut *problems.lock().unwrap());
    (log, problems)
}

/// One trial on a fresh copy of the seeded directory.
fn trial(root: &Path, seeded: &Path, flight: &str, date: &str, fault: Fault, tally: &mut Tally) {
    tally.trials += 1;
    let name = format!(
        "{}-{}-{}{}",
        fault.syscall,
        fault.errno,
        fault.from,
        if fault.once { "once" } else { "" }
    );
    let dir = root.join(name);
    if let Err(e) = server::copy_dir(seeded, &dir) {
        tally.failed_trials += 1;
        tally
            .problems
            .push(format!("{fault}: copying the seeded directory: {e}"));
        return;
    }
    // 1. The server starts without a fault: anything else is a failed trial.
    let server = match Server::start(&dir) {
        Ok(Started::Up(s)) => s,
        Ok(Started::Exited(log)) => {
            tally.failed_trials += 1;
            tally.problems.push(format!(
                "failed trial: {fault}: the server did not start: {log}"
            ));
            return;
        }
        Err(e) => {
            tally.failed_trials += 1;
            tally.problems.push(format!("failed trial: {fault}: {e}"));
            return;
        }
    };
    // 2. The fault is armed, then the clients post.
    let tracer = match Tracer::attach(server.pid(), fault, &dir.join("db")) {
        Ok(t) => t,
        Err(e) => {
            tally.failed_trials += 1;
            tally.problems.push(format!("failed trial: {fault}: {e}"));
            return;
        }
    };
    let (log, problems) = post_bookings(server.port, flight, date, fault);
    tally.problems.extend(problems);
    // 3. SIGKILL: what no flush saved is gone.
    let server_log = server.log(&dir);
    if server_log.contains("panicked") {
        tally
            .problems
            .push(format!("{fault}: the server panicked: {server_log}"));
    }
    if let Err(e) = server.kill().map(drop).and_then(|()| tracer.wait()) {
        tally.failed_trials += 1;
        tally.problems.push(format!("failed trial: {fault}: {e}"));
        return;
    }
    // 4. Nothing posted after the first 503 was answered is acknowledged.
    let first_503 = log
        .iter()
        .filter(|p| p.booking.is_none())
        .map(|p| p.end)
        .min();
    let acked: Vec<&Post> = log.iter().filter(|p| p.booking.is_some()).collect();
    tally.acked += acked.len();
    tally.answered_503 += log.len() - acked.len();
    if let Some(f) = first_503 {
        tally.reached += 1;
        tally.after_failure += log.iter().filter(|p| p.begin > f).count();
        for p in acked.iter().filter(|p| p.begin > f) {
            tally.acked_after_failure += 1;
            tally.problems.push(format!(
                "{fault}: {} got 202 although it was posted after the first 503",
                p.key
            ));
        }
    }
    // 5. Restarted without the fault: every 202 is there and ends.
    let server = match Server::start(&dir) {
        Ok(Started::Up(s)) => s,
        Ok(Started::Exited(log)) if log.contains("is damaged") => {
            tally.damaged += 1;
            return;
        }
        Ok(Started::Exited(log)) => {
            tally.failed_trials += 1;
            tally.problems.push(format!(
                "failed trial: {fault}: after the SIGKILL the server neither started nor reported damage: {log}"
            ));
            return;
        }
        Err(e) => {
            tally.failed_trials += 1;
            tally
                .problems
                .push(format!("failed trial: {fault}: restart: {e}"));
            return;
        }
    };
    for p in acked {
        let id = p.booking.as_deref().expect("acknowledged");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match server::http(
                server.port,
                "GET",
                &format!("/api/bookings/{id}"),
                None,
                None,
            ) {
                Ok(a) if a.status == 200 => {
                    let st = a.body["status"].as_str().unwrap_or_default();
                    if st == "confirmed" || st == "compensated" {
                        tally.recovered += 1;
                        break;
                    }
                    if Instant::now() > deadline {
                        tally
                            .problems
                            .push(format!("{fault}: {} ({id}) still {st} after 60 s", p.key));
                        break;
                    }
                }
                Ok(a) => {
                    tally.problems.push(format!(
                        "{fault}: acknowledged booking {} ({id}) lost after the SIGKILL: {} {}",
                        p.key, a.status, a.body
                    ));
                    break;
                }
                Err(e) => {
                    tally
                        .problems
                        .push(format!("{fault}: GET {id} after the restart: {e}"));
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = server.kill();
}

fn faults() -> Vec<Fault> {
    let mut out = Vec::new();
    for syscall in ["pwrite64", "sync_file_range"] {
        for (from, once) in [
            (1u32, false),
            (3, false),
            (8, false),
            (20, false),
            (50, false),
            (3, true),
            (20, true),
        ] {
            out.push(Fault {
                syscall,
                errno: "EIO",
                from,
                once,
                file: None,
            });
        }
    }
    // The store's own file: sled stays healthy, only the engine's flush
    // fails, so only the store can refuse what follows.
    for (from, once) in [(1u32, true), (4, true), (2, false)] {
        out.push(Fault {
            syscall: "pwrite64",
            errno: "EIO",
            from,
            once,
            file: Some(HWM_FILE),
        });
    }
    out
}

#[test]
fn a_failing_disk_gets_503_and_loses_no_acknowledged_booking() {
    strace::require_strace().unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let seeded = root.path().join("seeded");
    // The first start seeds the catalog; find a flight.
    let (flight, date) = {
        let s = Server::must_start(&seeded);
        let today = chrono::Utc::now().date_naive();
        let mut found = None;
        for d in 20..34 {
            let date = today + chrono::Days::new(d);
            let path = format!("/api/flights/search?from=JFK&to=LAX&date={date}");
            let a = server::http(s.port, "GET", &path, None, None).unwrap();
            if let Some(id) = a.body["results"][0]["flight"]["id"].as_str() {
                found = Some((id.to_string(), date.to_string()));
                break;
            }
        }
        s.kill().unwrap();
        found.expect("a JFK-LAX flight")
    };
    let mut tally = Tally::default();
    for fault in faults() {
        trial(root.path(), &seeded, &flight, &date, fault, &mut tally);
    }
    let t = &tally;
    eprintln!(
        "storage_faults_http: {} injection points, {} reached the fault, {} failed trials, {} acknowledged, \
         {} recovered, {} refused as damaged, {} answers 503 + Retry-After, {} posts after a 503 ({} acknowledged), \
         {} problems, {:.1} s",
        t.trials,
        t.reached,
        t.failed_trials,
        t.acked,
        t.recovered,
        t.damaged,
        t.answered_503,
        t.after_failure,
        t.acked_after_failure,
        t.problems.len(),
        started.elapsed().as_secs_f64()
    );
    let mut problems = tally.problems;
    if (tally.reached as f64) < REACHED_FLOOR * tally.trials as f64 {
        problems.push(format!(
            "only {} of {} trials reached the fault (floor {REACHED_FLOOR})",
            tally.reached, tally.trials
        ));
    }
    let reopened = tally.trials - tally.failed_trials - tally.damaged;
    if (reopened as f64) < REOPENED_FLOOR * tally.trials as f64 {
        problems.push(format!(
            "only {reopened} of {} trials restarted without damage (floor {REOPENED_FLOOR})",
            tally.trials
        ));
    }
    let shown: Vec<_> = problems.iter().take(30).map(String::as_str).collect();
    assert!(
        problems.is_empty(),
        "{} problems, first {}:\n{}",
        problems.len(),
        shown.len(),
        shown.join("\n")
    );
}
