//! Booking crash test: the torture harness (`src/torture.rs`) with 100
//! SIGKILLs (`CRASH_KILLS` to raise it; below 20 is refused). Bookings run
//! in a child process killed at random points, the participants on a sled
//! database apart from the engine's; each restart checks that every
//! acknowledged start survived, that no participant holds an effect of a
//! lost saga, and the sagas that ended; a final child checks seats,
//! payments, miles and bookings against every saga's outcome. Violations
//! are listed and fail the test; so does a run with too few kills in
//! flight or too few completed checks.
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
        println!("booking_crash: test");
        return;
    }
    let kills = match verdict::knob("CRASH_KILLS", 100, torture::MIN_KILLS) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("booking_crash REFUSED: {e}");
            std::process::exit(2);
        }
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("own path");
    let started = Instant::now();
    let r = match torture::run(&exe, tmp.path(), kills, 60..300) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("booking_crash FAILED: {e}");
            std::process::exit(1);
        }
    };
    let f = &r.figures;
    eprintln!(
        "booking_crash: {} kills ({} in flight, {} recovering), {} checks, {} sagas, {} acknowledged, {} start / {} wait errors, recovery p50 {} us, max {} us, {:.1}s ({:.1}s of kills, {:.1}s final child)",
        f.kills,
        f.in_flight,
        r.killed_recovering,
        f.checks,
        f.sagas,
        f.acked,
        f.start_errors,
        f.wait_errors,
        r.recovery_p50_us,
        r.recovery_max_us,
        started.elapsed().as_secs_f64(),
        r.times.0.as_secs_f64(),
        r.times.1.as_secs_f64(),
    );
    let mut shown = std::collections::BTreeMap::<&str, usize>::new();
    for e in &r.expected {
        let what = e.split(": ").next().unwrap_or(e);
        let n = shown.entry(what).or_default();
        *n += 1;
        if *n == 1 {
            eprintln!("  expected error (explained): {e}");
        }
    }
    for (what, n) in &shown {
        eprintln!("  {n} x expected error: {what}");
    }
    let code = verdict::conclude("booking_crash", f, &r.violations, &r.problems);
    if code == 0 {
        eprintln!("booking_crash ... ok");
    }
    std::process::exit(code);
}
