//! The body of the booking crash tests (`tests/booking_crash.rs`,
//! `tests/booking_crash_shared.rs`): the same parent, child and verdict,
//! with the test's name, its default number of kills and the participants'
//! layout its children inherit.

use super::{child_main, run, Layout, MIN_KILLS};
use crate::verdict;
use std::time::Instant;

/// Runs a booking crash test binary (`harness = false`): as the child with
/// `--child`, otherwise as the parent killing it `CRASH_KILLS` times
/// (`default_kills` unless set; below [`MIN_KILLS`] is refused). `layout`,
/// when given and `TORTURE_PARTICIPANTS` is not set, is set for the
/// children. Exits the process with the verdict's code.
pub fn test_main(name: &str, default_kills: usize, layout: Option<&str>) -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child_main(args.get(1).map(String::as_str).unwrap_or(""));
        std::process::exit(0);
    }
    if args.iter().any(|a| a == "--list") {
        println!("{name}: test");
        std::process::exit(0);
    }
    if let Some(layout) = layout {
        if std::env::var_os(Layout::VAR).is_none() {
            // The children inherit it.
            std::env::set_var(Layout::VAR, layout);
        }
    }
    let kills = match verdict::knob("CRASH_KILLS", default_kills, MIN_KILLS) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{name} REFUSED: {e}");
            std::process::exit(2);
        }
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("own path");
    let started = Instant::now();
    let r = match run(&exe, tmp.path(), kills, 60..300) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name} FAILED: {e}");
            std::process::exit(1);
        }
    };
    let f = &r.figures;
    let shown_layout = std::env::var(Layout::VAR)
        .map(|l| format!(" ({l})"))
        .unwrap_or_default();
    eprintln!(
        "{name}{shown_layout}: {} kills ({} in flight, {} recovering), {} checks, {} sagas, {} acknowledged, {} start / {} wait errors, recovery p50 {} us, max {} us, {:.1}s ({:.1}s of kills, {:.1}s final child)",
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
    let code = verdict::conclude(name, f, &r.violations, &r.problems);
    if code == 0 {
        eprintln!("{name} ... ok");
    }
    std::process::exit(code);
}
