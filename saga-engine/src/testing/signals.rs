//! The signals [`super::simulate`] sends to a user's signal waits: for each
//! saga and each wait the target gives a payload for
//! ([`super::SimTarget::signal`]), a seeded plan: on time (once the saga
//! waits), early (before the wait begins), twice under the same id, twice
//! under two ids (a sender that retries with a fresh id), late (after the
//! wait timed out or the saga ended), or never. Sends go on across the
//! simulated crashes (a send whose answer was lost is sent again, under
//! the same id), and every answer is judged: a late signal must be
//! refused, a repeated id must change nothing, and a wait whose signal
//! was accepted must not time out.

use crate::engine::{Engine, SignalOutcome};
use crate::machine::{StepKind, StepState};
use crate::store::{MemoryStore, SagaRecord, Store};
use crate::{Error, SagaId};
use rand::rngs::StdRng;
use rand::Rng;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How one wait is signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    OnTime,
    Early,
    SameIdTwice,
    NewIdTwice,
    Late,
    Never,
}

/// When a send goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// At once.
    Now,
    /// Once the wait has begun (or is over, or the saga ended).
    Waiting,
    /// Once the wait is over or the saga ended.
    Over,
}

impl Plan {
    fn draw(rng: &mut StdRng) -> Plan {
        match rng.gen_range(0..6u32) {
            0 => Plan::OnTime,
            1 => Plan::Early,
            2 => Plan::SameIdTwice,
            3 => Plan::NewIdTwice,
            4 => Plan::Late,
            _ => Plan::Never,
        }
    }

    /// The sends: (signal id number, when).
    fn sends(self) -> &'static [(u32, When)] {
        match self {
            Plan::OnTime => &[(1, When::Waiting)],
            Plan::Early => &[(1, When::Now)],
            Plan::SameIdTwice => &[(1, When::Waiting), (1, When::Now)],
            Plan::NewIdTwice => &[(1, When::Waiting), (2, When::Now)],
            Plan::Late => &[(1, When::Over)],
            Plan::Never => &[],
        }
    }
}

/// One wait's signals, across the rounds of a seed.
#[derive(Debug, Clone)]
pub(super) struct Sender {
    /// Which saga of the seed.
    pub n: usize,
    /// The wait step's index and the signal's name.
    step: usize,
    name: String,
    payload: serde_json::Value,
    plan: Plan,
    /// The engine's answers so far, one per send.
    answers: Vec<Result<SignalOutcome, String>>,
}

impl Sender {
    /// True once every send of the plan was answered.
    pub fn done(&self) -> bool {
        self.answers.len() >= self.plan.sends().len()
    }

    /// How many sends were answered.
    pub fn answers_len(&self) -> usize {
        self.answers.len()
    }
}

/// The senders of a seed: every wait of every saga the target signals.
pub(super) fn plan<F>(
    kinds: &[StepKind],
    names: &[String],
    sagas: usize,
    payload: F,
    rng: &mut StdRng,
) -> Vec<Sender>
where
    F: Fn(usize, &str) -> Option<serde_json::Value>,
{
    let mut out = Vec::new();
    for n in 0..sagas {
        for (step, kind) in kinds.iter().enumerate() {
            let StepKind::Signal { name, .. } = kind else {
                continue;
            };
            let Some(payload) = payload(n, &names[step]) else {
                continue;
            };
            out.push(Sender {
                n,
                step,
                name: name.clone(),
                payload,
                plan: Plan::draw(rng),
                answers: Vec::new(),
            });
        }
    }
    out
}

/// Is `when` here for the wait `step` of `rec`?
fn ready(rec: &SagaRecord, step: usize, when: When) -> bool {
    let ended = rec.status().is_terminal();
    let state = rec.state.steps.get(step).map(|s| s.state);
    match when {
        When::Now => true,
        When::Waiting => ended || state != Some(StepState::Pending),
        When::Over => ended || !matches!(state, Some(StepState::Pending | StepState::Waiting)),
    }
}

/// Carries out what is left of sender `i`'s plan on this process's
/// engine, until it is done or the process dies (the next round goes on).
pub(super) async fn drive(
    engine: Engine,
    durable: Arc<MemoryStore>,
    senders: Arc<Mutex<Vec<Sender>>>,
    i: usize,
    id: SagaId,
    key: String,
) {
    loop {
        let (sid, when, name, payload, step) = {
            let s = senders.lock().unwrap_or_else(|e| e.into_inner());
            let Some(&(k, when)) = s[i].plan.sends().get(s[i].answers.len()) else {
                return;
            };
            let name = s[i].name.clone();
            (
                format!("{key}:{name}:{k}"),
                when,
                name,
                s[i].payload.clone(),
                s[i].step,
            )
        };
        loop {
            match durable.get(&id).await {
                Ok(Some(rec)) if ready(&rec, step, when) => break,
                Ok(_) => {}
                Err(_) => return,
            }
            // Coarse on purpose: a wait lasts minutes of virtual time.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let answer = match engine.signal(&id, &name, &sid, &payload).await {
            Ok(o) => Ok(o),
            Err(Error::SignalRefused { reason, .. }) => Err(reason),
            // The process died (or its store failed): the next round
            // sends it again, under the same id.
            Err(_) => return,
        };
        senders.lock().unwrap_or_else(|e| e.into_inner())[i]
            .answers
            .push(answer);
    }
}

/// Judges the answers one saga's senders got, against its final record.
pub(super) fn check(senders: &[Sender], rec: &SagaRecord) -> Result<(), String> {
    for s in senders {
        let accepted = |a: &Result<SignalOutcome, String>| {
            matches!(a, Ok(SignalOutcome::Delivered | SignalOutcome::Kept))
        };
        let wait = &rec.state.steps[s.step];
        let timed_out = wait
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("timed out"));
        if s.plan == Plan::Late && s.answers.iter().any(accepted) {
            return Err(format!(
                "a late signal {:?} for {} was accepted: {:?}",
                s.name, wait.name, s.answers
            ));
        }
        if s.plan == Plan::SameIdTwice && s.answers.get(1).is_some_and(accepted) {
            return Err(format!(
                "a repeated signal id for {} was taken again: {:?}",
                wait.name, s.answers
            ));
        }
        if timed_out && s.answers.iter().any(accepted) {
            return Err(format!(
                "{} timed out after its signal was accepted: {:?}",
                wait.name, s.answers
            ));
        }
    }
    let mut ids = std::collections::HashSet::new();
    for g in &rec.state.signals {
        if !ids.insert(g.id.as_str()) {
            return Err(format!("signal id {} recorded twice", g.id));
        }
    }
    Ok(())
}
