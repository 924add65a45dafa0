//! Booking crash test with the participants on the engine's database: the
//! torture harness (`src/torture.rs`) with [`torture::Layout::EngineDb`],
//! as the demo server runs them. The participants do not flush a step's
//! effect themselves; the engine's flush after the step covers it, and a
//! kill before that flush leaves the step in doubt, retried under its key.
//! 40 SIGKILLs (`CRASH_KILLS` to change it; below 20 is refused); the same
//! checks as `booking_crash`: every acknowledged start survived, no
//! participant holds an effect of a lost saga, and at the end seats,
//! payments, miles and bookings match every saga's outcome.
//!
//! `TORTURE_PARTICIPANTS=own-db-covered` with `SAGA_SABOTAGE=cover-foreign-db`
//! (in `scripts/sabotage-engine-checks`) puts the participants on a database
//! of their own while they still count on the engine's flushes: their
//! effects are acknowledged unflushed, and this test must fail.
//!
//! `harness = false`: this binary is the parent and, with `--child`, the child.

use saga_workspace::{torture, verdict};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        torture::child_main(args.get(1).map(String::as_str).unwrap_or(""));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("booking_crash_shared: test");
        return;
    }
    if std::env::var_os(torture::Layout::VAR).is_none() {
        // The children inherit it.
        std::env::set_var(torture::Layout::VAR, "engine-db");
    }
    let kills = match verdict::knob("CRASH_KILLS", 40, torture::MIN_KILLS) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("booking_crash_shared REFUSED: {e}");
            std::process::exit(2);
        }
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("own path");
    let started = Instant::now();
    let r = match torture::run(&exe, tmp.path(), kills, 60..300) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("booking_crash_shared FAILED: {e}");
            std::process::exit(1);
        }
    };
    let f = &r.figures;
    eprintln!(
        "booking_crash_shared ({}): {} kills ({} in flight, {} recovering), {} checks, {} sagas, {} acknowledged, {} start / {} wait errors, {:.1}s",
        std::env::var(torture::Layout::VAR).unwrap_or_default(),
        f.kills,
        f.in_flight,
        r.killed_recovering,
        f.checks,
        f.sagas,
        f.acked,
        f.start_errors,
        f.wait_errors,
        started.elapsed().as_secs_f64(),
    );
    for e in r.expected.iter().take(3) {
        eprintln!("  expected error (explained): {e}");
    }
    let code = verdict::conclude("booking_crash_shared", f, &r.violations, &r.problems);
    if code == 0 {
        eprintln!("booking_crash_shared ... ok");
    }
    std::process::exit(code);
}
