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
            "--kills" => match it.next().and_then(|v| v.parse().ok()) {
                Some(k) => kills = k,
                None => {
                    eprintln!("--kills needs a number");
                    std::process::exit(2);
                }
            },
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
        Ok(r) => {
            let f = &r.figures;
            println!(
                "{{\"kills\":{},\"killed_in_flight\":{},\"checks\":{},\"sagas\":{},\"acknowledged\":{},\"violations\":{},\"kinds\":{:?},\"problems\":{},\"recovery_p50_ms\":{:.2},\"recovery_max_ms\":{:.2},\"seconds\":{secs:.1}}}",
                f.kills,
                f.in_flight,
                f.checks,
                f.sagas,
                f.acked,
                r.violations.len(),
                r.violations.summary(),
                r.problems.len(),
                r.recovery_p50_us as f64 / 1000.0,
                r.recovery_max_us as f64 / 1000.0
            );
            let code = saga_workspace::verdict::conclude("torture", f, &r.violations, &r.problems);
            std::process::exit(code);
        }
        Err(e) => {
            println!("{{\"kills\":{kills},\"violations\":0,\"error\":{:?}}}", e);
            std::process::exit(2);
        }
    }
}
