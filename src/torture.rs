//! The booking torture: bookings run in a child process that is killed
//! with SIGKILL at random moments and restarted, again and again (see
//! [`crate::kill_loop`]). Each restart checks that every acknowledged
//! start survived, that no participant holds an effect of a saga the store
//! lost, and the invariants of every saga that has ended; a last child
//! finishes every saga and checks the totals (`checks.rs`), and the parent
//! itself checks the acknowledgement log against the store.
//!
//! The participants keep their ledger on a sled database of their own
//! (`child.rs`), so that a defect in the engine's flushing cannot also roll
//! their effects back and hide itself.
//!
//! Used by `tests/booking_crash.rs` (100 kills) and `examples/torture.rs`
//! (any number). The same binary is parent and child (`--child`).

mod cards;
mod checks;
mod child;
mod round_trip_mix;
mod test_main;
mod traveller_mix;
mod waits_mix;
pub use test_main::test_main;

pub use child::{child_main, Layout};

use crate::kill_loop::{self, Plan};
use crate::verdict::{Figures, Violations};
use std::path::Path;
use std::time::Duration;

/// Fewest kills a run may ask for: fewer would not prove much.
pub const MIN_KILLS: usize = 20;

/// What a torture run did and found.
#[derive(Debug, Default)]
pub struct Report {
    /// Sagas, acknowledgements, kills, kills in flight, checks, errors.
    pub figures: Figures,
    /// Kills that landed before the child's first heartbeat (recovering).
    pub killed_recovering: usize,
    /// Restarts that reported their recovery.
    pub recoveries: usize,
    /// Slowest recovery (engine open and resume), microseconds.
    pub recovery_max_us: u64,
    /// Median recovery.
    pub recovery_p50_us: u64,
    /// Errors with an explanation, e.g. `wait raced its start: ...`.
    pub expected: Vec<String>,
    /// Time in the kill rounds and in the final child.
    pub times: (Duration, Duration),
    /// Broken promises.
    pub violations: Violations,
    /// Reasons the run itself proves too little (too few kills in flight,
    /// too few checks); empty when the run stopped early on a violation.
    pub problems: Vec<String>,
}

/// Runs `kills` rounds of spawn / random wait / SIGKILL (one in four
/// blind, at a random time in `window_ms` from the spawn; the others
/// within 80 ms of the child's first heartbeat), then the finishing child. `Err` when `kills` is below [`MIN_KILLS`] or
/// the harness cannot run; violations are in the report.
pub fn run(
    exe: &Path,
    dir: &Path,
    kills: usize,
    window_ms: std::ops::Range<u64>,
) -> Result<Report, String> {
    if kills < MIN_KILLS {
        return Err(format!(
            "{kills} kills is below the floor of {MIN_KILLS}: refusing a run that proves too little"
        ));
    }
    let out = kill_loop::run(&Plan {
        exe: exe.to_path_buf(),
        dir: dir.to_path_buf(),
        kills,
        window_ms,
        aimed_ms: 0..80,
        blind_every: 4,
        ack_log: dir.join(child::ACKS),
        finish_timeout: Duration::from_secs(180),
    })?;
    let mut violations = out.violations;
    parent_ack_check(dir, &mut violations);
    let mut report = Report {
        figures: Figures {
            sagas: out
                .finish_lines
                .iter()
                .find_map(|l| l.strip_prefix("sagas="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            acked: crate::acklog::read(&dir.join(child::ACKS)).len(),
            kills: out.kills,
            in_flight: out.in_flight,
            checks: out.checks,
            start_errors: out.start_errors,
            wait_errors: out.wait_errors,
            expected_errors: out.expected.len(),
        },
        expected: out.expected,
        times: (out.loop_time, out.finish_time),
        killed_recovering: out.recovering,
        recoveries: out.recoveries_us.len(),
        violations,
        ..Report::default()
    };
    let mut rec = out.recoveries_us;
    rec.sort_unstable();
    report.recovery_max_us = rec.last().copied().unwrap_or(0);
    report.recovery_p50_us = rec.get(rec.len() / 2).copied().unwrap_or(0);
    if out.stopped_early.is_none() {
        let f = &report.figures;
        // Most kills must land on running sagas, most restarts must finish
        // their check: otherwise the run tested an idle or a dying child.
        if f.in_flight * 2 < kills {
            report.problems.push(format!(
                "only {} of {kills} kills landed while sagas were in flight (need half)",
                f.in_flight
            ));
        }
        if f.checks * 2 < kills {
            report.problems.push(format!(
                "only {} post-restart checks completed for {kills} kills (need half)",
                f.checks
            ));
        }
        if f.acked < kills {
            report.problems.push(format!(
                "only {} starts were acknowledged in {kills} rounds",
                f.acked
            ));
        }
    }
    Ok(report)
}

/// The parent's own look at the store after the last child: every start in
/// the acknowledgement log names its saga (the children check this at each
/// restart; this check does not rely on their code). A store that refuses
/// to open is a violation too.
fn parent_ack_check(dir: &Path, v: &mut Violations) {
    use saga_engine::Store;
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => return v.push("parent check failed", format!("runtime: {e}")),
    };
    let store = match saga_engine::SledStore::open(dir.join("engine")) {
        Ok(s) => s,
        Err(e) => return v.push("store refused to open", format!("at the final check: {e}")),
    };
    let records = match rt.block_on(store.list(None, usize::MAX)) {
        Ok(r) => r,
        Err(e) => return v.push("store read failed", format!("at the final check: {e}")),
    };
    let by_key: std::collections::HashMap<&str, &str> = records
        .iter()
        .filter_map(|r| Some((r.idempotency_key.as_deref()?, r.id.as_str())))
        .collect();
    for (key, id) in crate::acklog::read(&dir.join(child::ACKS)) {
        if let Some(d) = crate::acklog::lost(&key, &id, by_key.get(key.as_str()).copied()) {
            v.push("lost acknowledged start", d);
        }
    }
}
