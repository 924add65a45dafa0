//! Booking crash test: the torture harness (`src/torture.rs`) with 100
//! SIGKILLs (`CRASH_KILLS` to change it). Bookings run in a child process
//! killed at random points; each restart checks the sagas that ended, and a
//! final child checks seats, payments, miles and bookings against every
//! saga's outcome.
//!
//! `harness = false`: this binary is the parent and, with `--child`, the child.

use saga_workspace::torture;

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
    let kills = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let tmp = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("own path");
    match torture::run(&exe, tmp.path(), kills, 60..300) {
        Ok(r) => eprintln!(
            "booking_crash ... ok ({} kills, {} mid-run, {} sagas, recovery p50 {} us, max {} us)",
            r.kills, r.killed_alive, r.sagas, r.recovery_p50_us, r.recovery_max_us
        ),
        Err(e) => {
            eprintln!("booking_crash FAILED: {e}");
            std::process::exit(1);
        }
    }
}
