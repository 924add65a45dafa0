//! The kill -9 loop at scale.
//!
//! ```text
//! cargo run --release --example torture -- --kills 1000
//! ```
//!
//! Runs bookings in a child process, kills it with SIGKILL at random
//! moments, restarts it, and checks the booking invariants (seats,
//! payments, miles, one terminal state per saga) after each restart and at
//! the end. Prints kills, sagas, violations and recovery time as one JSON
//! line; exits non-zero on any violation.

use saga_workspace::torture;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        torture::child_main(args.get(1).map(String::as_str).unwrap_or(""));
        return;
    }
    let mut kills = 1000usize;
    let mut dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--kills" => kills = it.next().and_then(|v| v.parse().ok()).unwrap_or(kills),
            "--data-dir" => dir = it.next().cloned(),
            other => {
                eprintln!("unknown argument {other}; usage: torture [--kills N] [--data-dir DIR]");
                std::process::exit(2);
            }
        }
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = dir
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let exe = std::env::current_exe().expect("own path");
    let started = Instant::now();
    let result = torture::run(&exe, &path, kills, 30..300);
    let secs = started.elapsed().as_secs_f64();
    match result {
        Ok(r) => println!(
            "{{\"kills\":{},\"killed_mid_run\":{},\"sagas\":{},\"violations\":0,\"recovery_p50_ms\":{:.2},\"recovery_max_ms\":{:.2},\"seconds\":{secs:.1}}}",
            r.kills,
            r.killed_alive,
            r.sagas,
            r.recovery_p50_us as f64 / 1000.0,
            r.recovery_max_us as f64 / 1000.0
        ),
        Err(e) => {
            println!("{{\"kills\":{kills},\"violations\":1,\"error\":{:?}}}", e);
            std::process::exit(1);
        }
    }
}
