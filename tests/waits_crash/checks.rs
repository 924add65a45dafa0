//! The parent side of the waits-and-groups crash test: runs the kill loop,
//! then judges the store, the effect ledger, the signal log and the
//! acknowledgement log against the promises listed in `waits_crash.rs`.

use super::{
    leg_rejected, payload_of, plan_of, read_signals, Answer, SignalPlan, Trip, EFFECTS, SIGNAL,
};
use saga_engine::{EventKind, SagaEvent, SagaRecord, SagaStatus, SledStore, Store};
use saga_workspace::acklog;
use saga_workspace::kill_loop::{self, Plan};
use saga_workspace::verdict::{self, Figures, Violations};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use crate::support::ledger::{self, Entry};

/// What the ledger says about one saga: effects applied and compensated.
#[derive(Default)]
struct Effects {
    applied: HashSet<String>,
    compensated: HashSet<String>,
}

/// Effects per saga id; a key applied or compensated twice is a violation.
fn effects(entries: &[Entry], v: &mut Violations) -> HashMap<String, Effects> {
    let mut out: HashMap<String, Effects> = HashMap::new();
    for e in entries {
        let Some((saga, step)) = e.key().split_once(':') else {
            continue;
        };
        let log = out.entry(saga.to_string()).or_default();
        match e {
            Entry::Applied(k) if !log.applied.insert(step.to_string()) => {
                v.push("effect applied twice", k.clone());
            }
            Entry::Compensated(k) if !log.compensated.insert(step.to_string()) => {
                v.push("effect compensated twice", k.clone());
            }
            _ => {}
        }
    }
    out
}

/// Figures of what the kills interrupted, for the coverage floors.
#[derive(Default, Debug)]
struct Coverage {
    /// Signal waits begun in one process and ended (signalled or timed
    /// out) in a later one.
    waits_across_restart: usize,
    /// Of those, timeouts.
    timeouts_across_restart: usize,
    /// Sleeps begun in one process and ended in a later one.
    sleeps_across_restart: usize,
    /// Sagas with a group member started again after a kill (attempt 2 or more).
    members_rerun: usize,
    completed: usize,
    compensated: usize,
    timed_out: usize,
}

/// True when a process opened between `from` and `to` (ms).
fn restart_between(opens: &[u64], from: u64, to: u64) -> bool {
    opens.iter().any(|&o| o > from && o <= to)
}

/// When the wait `step` began and ended (signalled or timed out; a sleep
/// ends with the saga's next event other than an early signal).
fn wait_span(history: &[SagaEvent], step: &str) -> Option<(u64, u64)> {
    let at = history.iter().position(|e| {
        matches!(&e.kind, EventKind::WaitStarted { step: s, signal, .. } if s == step && signal.is_none())
    });
    if let Some(at) = at {
        let begun = history[at].at_ms;
        let next = history[at + 1..].iter().find(|e| {
            !matches!(
                e.kind,
                EventKind::SignalReceived { .. } | EventKind::Resumed
            )
        })?;
        return Some((begun, next.at_ms));
    }
    let begun = history.iter().find_map(|e| match &e.kind {
        EventKind::WaitStarted { step: s, .. } if s == step => Some(e.at_ms),
        _ => None,
    })?;
    let ended = history.iter().rev().find_map(|e| match &e.kind {
        EventKind::StepSucceeded { step: s, .. } if s == step => Some(e.at_ms),
        EventKind::WaitTimedOut { step: s } if s == step => Some(e.at_ms),
        EventKind::SignalReceived { step: Some(s), .. } if s == step => Some(e.at_ms),
        _ => None,
    })?;
    Some((begun, ended))
}

/// What is known of one acknowledged saga.
struct Saga<'a> {
    key: &'a str,
    rec: &'a SagaRecord,
    history: &'a [SagaEvent],
    fx: Option<&'a Effects>,
    /// The engine's answers to its signals, in order.
    answers: &'a [Answer],
}

/// Judges one acknowledged saga.
fn check_saga(saga: &Saga, opens: &[u64], cov: &mut Coverage, v: &mut Violations) {
    let Saga {
        key,
        rec,
        history,
        fx,
        answers,
    } = *saga;
    let id = rec.id.as_str();
    let trip: Trip = match rec.data_as() {
        Ok(t) => t,
        Err(e) => return v.push("saga data unreadable", format!("{key} ({id}): {e}")),
    };
    let n = trip.n;
    let none = Effects::default();
    let fx = fx.unwrap_or(&none);
    let failure = rec.state.failure.clone().unwrap_or_default();
    let timed_out = failure.contains("timed out");
    let accepted: Vec<&Answer> = answers
        .iter()
        .filter(|a| ["delivered", "kept"].contains(&a.outcome.as_str()))
        .collect();
    match rec.status() {
        SagaStatus::Completed => {
            cov.completed += 1;
            for step in EFFECTS {
                if !fx.applied.contains(step) {
                    v.push(
                        "completed saga lacks effect",
                        format!("{key} ({id}): {step}"),
                    );
                }
                if fx.compensated.contains(step) {
                    v.push(
                        "completed saga has compensation",
                        format!("{key} ({id}): {step}"),
                    );
                }
            }
            if trip.received != vec![payload_of(n)] {
                v.push(
                    "signal not applied exactly once",
                    format!(
                        "{key} ({id}): completed with received = {:?}",
                        trip.received
                    ),
                );
            }
            if leg_rejected(n) {
                v.push("rejected saga completed", format!("{key} ({id})"));
            }
            if matches!(plan_of(n), SignalPlan::None | SignalPlan::Late) {
                v.push(
                    "completed without a signal",
                    format!("{key} ({id}): plan {:?}", plan_of(n)),
                );
            }
        }
        SagaStatus::Compensated => {
            cov.compensated += 1;
            cov.timed_out += usize::from(timed_out);
            for step in &fx.applied {
                if !fx.compensated.contains(step) {
                    v.push(
                        "compensated saga left effect",
                        format!("{key} ({id}): {step} took effect and was not compensated"),
                    );
                }
            }
            if !trip.received.is_empty() {
                v.push(
                    "signal applied to a compensated saga",
                    format!("{key} ({id}): received = {:?}", trip.received),
                );
            }
            let why_ok = (leg_rejected(n) && failure.contains("leg_back rejected")) || timed_out;
            if !why_ok {
                v.push(
                    "waiting saga resumed as failed",
                    format!("{key} ({id}): compensated because {failure:?}"),
                );
            }
            if timed_out && !accepted.is_empty() {
                v.push(
                    "acknowledged signal then timed out",
                    format!(
                        "{key} ({id}): {} accepted, then {failure:?}",
                        accepted[0].signal_id
                    ),
                );
            }
            if !leg_rejected(n)
                && matches!(plan_of(n), SignalPlan::None | SignalPlan::Late)
                && !timed_out
            {
                v.push(
                    "timeout did not fire",
                    format!("{key} ({id}): compensated because {failure:?}"),
                );
            }
        }
        other => v.push(
            "saga not ended",
            format!(
                "{key} ({id}) is {other} (step states {:?})",
                rec.state
                    .steps
                    .iter()
                    .map(|s| (s.name.as_str(), s.state))
                    .collect::<Vec<_>>()
            ),
        ),
    }
    // Each answer the engine gave, judged by the plan.
    for (i, a) in answers.iter().enumerate() {
        let late = plan_of(n) == SignalPlan::Late;
        let second_id = a.signal_id.ends_with("-s2");
        let repeat = plan_of(n) == SignalPlan::Duplicate && i == 1;
        let took = ["delivered", "kept"].contains(&a.outcome.as_str());
        if late && took {
            v.push(
                "late signal accepted",
                format!("{key} ({id}): {}", a.outcome),
            );
        }
        if second_id && took {
            v.push(
                "second signal accepted",
                format!(
                    "{key} ({id}): {} was {} after the first",
                    a.signal_id, a.outcome
                ),
            );
        }
        if repeat && took {
            v.push(
                "duplicate signal applied twice",
                format!("{key} ({id}): the repeat was {}", a.outcome),
            );
        }
        if late && a.outcome.starts_with("refused") && !a.outcome.contains("finished") {
            v.push(
                "late signal refused without reason",
                format!("{key} ({id}): {}", a.outcome),
            );
        }
    }
    let received = history
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::SignalReceived { name, .. } if name == SIGNAL))
        .count();
    if received > 1 {
        v.push(
            "signal received twice",
            format!("{key} ({id}): {received} SignalReceived events"),
        );
    }
    if let Some((from, to)) = wait_span(history, "approval") {
        if restart_between(opens, from, to) {
            cov.waits_across_restart += 1;
            cov.timeouts_across_restart += usize::from(timed_out);
        }
    }
    if let Some((from, to)) = wait_span(history, "nap") {
        if restart_between(opens, from, to) {
            cov.sleeps_across_restart += 1;
        }
    }
    let rerun = history.iter().any(|e| {
        matches!(&e.kind, EventKind::StepStarted { step, attempt }
            if (step == "leg_out" || step == "leg_back") && *attempt >= 2)
    });
    cov.members_rerun += usize::from(rerun);
}

fn read_opens(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Runs the test; returns the exit code.
pub fn parent(plan: &Plan, kills: usize) -> i32 {
    let started = Instant::now();
    let dir = &plan.dir;
    let out = match kill_loop::run(plan) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("waits_crash FAILED: {e}");
            return 1;
        }
    };
    let mut v = out.violations;
    let acked = acklog::read(&dir.join("acks.log"));
    let signals = read_signals(&dir.join("signals.log"));
    let opens = read_opens(&dir.join("opens.log"));
    let (entries, torn) = ledger::read(&dir.join("ledger.log"), &EFFECTS);
    let fx = effects(&entries, &mut v);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut cov = Coverage::default();
    let mut sagas = 0;
    match SledStore::open(dir.join("engine")) {
        Ok(store) => rt.block_on(async {
            let records = match store.list(None, usize::MAX).await {
                Ok(r) => r,
                Err(e) => return v.push("store read failed", e.to_string()),
            };
            sagas = records.len();
            let by_key: BTreeMap<&str, &SagaRecord> = records
                .iter()
                .filter_map(|r| Some((r.idempotency_key.as_deref()?, r)))
                .collect();
            for (key, id) in &acked {
                let found = by_key.get(key.as_str()).copied();
                if let Some(d) = acklog::lost(key, id, found.map(|r| r.id.as_str())) {
                    v.push("lost acknowledged start", d);
                    continue;
                }
                let Some(rec) = found else { continue };
                let history = match store.history(&rec.id).await {
                    Ok(h) => h,
                    Err(e) => {
                        v.push("store read failed", format!("history of {id}: {e}"));
                        continue;
                    }
                };
                let answers = signals.get(key).map_or(&[][..], Vec::as_slice);
                let saga = Saga {
                    key,
                    rec,
                    history: &history,
                    fx: fx.get(id.as_str()),
                    answers,
                };
                check_saga(&saga, &opens, &mut cov, &mut v);
            }
            // Effects of sagas the store does not hold: a loss if acknowledged.
            let in_store: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
            let acked_ids: HashSet<&str> = acked.iter().map(|(_, id)| id.as_str()).collect();
            for (saga, e) in &fx {
                if !in_store.contains(saga.as_str()) && acked_ids.contains(saga.as_str()) {
                    v.push(
                        "effect without saga",
                        format!(
                            "{saga}: {:?} of an acknowledged saga the store lost",
                            e.applied
                        ),
                    );
                }
            }
        }),
        Err(e) => v.push("store refused to open", format!("at the final check: {e}")),
    }
    let answers: usize = signals.values().map(Vec::len).sum();
    eprintln!(
        "waits_crash: {} kills ({} in flight, {} recovering, {} idle), {} checks, {sagas} sagas, {} acknowledged: {} completed, {} compensated ({} timed out); {answers} signal answers; across a restart: {} waits ({} timed out, the others signalled), {} sleeps, {} sagas with a group member re-run; {torn} torn ledger lines; {:.1}s",
        out.kills,
        out.in_flight,
        out.recovering,
        out.idle,
        out.checks,
        acked.len(),
        cov.completed,
        cov.compensated,
        cov.timed_out,
        cov.waits_across_restart,
        cov.timeouts_across_restart,
        cov.sleeps_across_restart,
        cov.members_rerun,
        started.elapsed().as_secs_f64()
    );
    for e in &out.expected {
        eprintln!("  expected error (explained): {e}");
    }
    let mut problems = Vec::new();
    if out.stopped_early.is_none() && v.is_empty() {
        let floors = [
            (out.in_flight * 2 >= kills, "half the kills in flight"),
            (
                out.checks * 2 >= kills,
                "half the kills followed by a check",
            ),
            (
                cov.waits_across_restart > 0,
                "a signal wait across a restart",
            ),
            (
                cov.timeouts_across_restart > 0,
                "a timeout fired after a restart",
            ),
            (
                cov.waits_across_restart > cov.timeouts_across_restart,
                "a wait signalled after a restart",
            ),
            (cov.sleeps_across_restart > 0, "a sleep across a restart"),
            (cov.members_rerun > 0, "a group member re-run after a kill"),
            (cov.completed > 0 && cov.compensated > 0, "both outcomes"),
        ];
        for (met, what) in floors {
            if !met {
                problems.push(format!("coverage: needed {what}; saw {cov:?}"));
            }
        }
    }
    let figures = Figures {
        sagas,
        acked: acked.len(),
        kills: out.kills,
        in_flight: out.in_flight,
        checks: out.checks,
        start_errors: out.start_errors,
        wait_errors: out.wait_errors,
        expected_errors: out.expected.len(),
    };
    verdict::conclude("waits_crash", &figures, &v, &problems)
}
