//! The shapes a simulated saga takes besides a plain chain of steps: a
//! parallel group (steps 1 and 2 run as members of one group) and a
//! durable signal wait (after step 0, with a timeout), and the client that
//! sends the wait's signal: on time, early, twice (the same id, then a
//! fresh one), late, or never, carrying on across crashes. Also the
//! layout facts the participants check calls against (which steps must
//! have taken effect before a call, what the saga data must hold).

use super::participant::{step_name, SimData};
use super::world::World;
use saga_engine::{Engine, Error, SagaRecord, SagaStatus, SignalOutcome, StepState};
use std::sync::Arc;
use std::time::Duration;

/// The signal every wait takes.
pub const SIGNAL: &str = "go";
/// How long a wait lasts before it times out (virtual ms).
pub const WAIT_MS: u64 = 400;
/// The wait's position in a `Wait` saga.
pub const WAIT_AT: usize = 1;

/// How one saga's steps are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// s0, s1, ... one after the other.
    Chain,
    /// s0, then s1 and s2 as one parallel group, then s3, ...
    Group,
    /// s0, a signal wait, then s1, ...
    Wait(SignalPlan),
}

/// How the wait's signal is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalPlan {
    /// Once the saga waits.
    OnTime,
    /// Right after the start is acknowledged (usually before the wait).
    Early,
    /// On time, then again under the same id, then under a fresh id.
    Duplicate,
    /// After the wait timed out (or the saga ended): must be refused.
    Late,
    /// Never: the wait must time out.
    Never,
}

impl Shape {
    /// The definition that runs a saga of this shape with `steps` steps.
    pub fn definition(self, steps: usize) -> String {
        match self {
            Shape::Chain => format!("sim{steps}"),
            Shape::Group => format!("simg{steps}"),
            Shape::Wait(_) => format!("simw{steps}"),
        }
    }

    /// True for the members of the group.
    pub fn in_group(self, i: usize) -> bool {
        self == Shape::Group && (i == 1 || i == 2)
    }

    /// The position of step `i` in the saga's order (group members share one).
    pub fn position(self, i: usize) -> usize {
        match self {
            Shape::Group if i >= 2 => i - 1,
            _ => i,
        }
    }

    /// Where step `i` is in the saga's state.
    pub fn state_index(self, i: usize) -> usize {
        match self {
            Shape::Wait(_) if i >= WAIT_AT => i + 1,
            _ => i,
        }
    }

    /// The steps that must have taken effect before step `i` is called.
    pub fn before(self, i: usize) -> Vec<usize> {
        match (self, i) {
            (_, 0) => vec![],
            (Shape::Group, 1 | 2) => vec![0],
            (Shape::Group, 3) => vec![1, 2],
            (_, i) => vec![i - 1],
        }
    }

    /// The steps that push to the data's trail, in order, of `n` steps
    /// (group members mark their own fields instead: members' changes are
    /// merged field by field, so two members pushing to one list would
    /// keep only one push).
    pub fn trail_order(self, n: usize) -> Vec<String> {
        (0..n)
            .filter(|&i| !self.in_group(i))
            .map(step_name)
            .collect()
    }

    /// What the data must hold when step `i` (of `n`) is called forward:
    /// `None` if it does.
    pub fn check_data(self, i: usize, n: usize, data: &SimData, no: usize) -> Option<String> {
        let trail: Vec<String> = self
            .trail_order(n)
            .into_iter()
            .filter(|s| {
                s.trim_start_matches('s')
                    .parse::<usize>()
                    .is_ok_and(|k| k < i)
            })
            .filter(|s| !(self == Shape::Group && i <= 2 && s != "s0"))
            .collect();
        if data.trail != trail {
            return Some(format!(
                "step {i} saw trail {:?}, expected {trail:?} (a step's output was not persisted)",
                data.trail
            ));
        }
        if self == Shape::Group && i >= 3 && !(data.g1 && data.g2) {
            return Some(format!(
                "step {i} saw group marks g1={} g2={} (a member's output was not merged)",
                data.g1, data.g2
            ));
        }
        if matches!(self, Shape::Wait(_)) && i >= WAIT_AT && data.signal != [payload(no)] {
            return Some(format!(
                "step {i} saw signals {:?} (the signal must reach the data exactly once)",
                data.signal
            ));
        }
        None
    }
}

/// The payload of request `no`'s signal.
pub fn payload(no: usize) -> String {
    format!("go-{no}")
}

/// When a send goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Now,
    Waiting,
    Over,
}

fn sends(plan: SignalPlan) -> &'static [(&'static str, When)] {
    match plan {
        SignalPlan::OnTime => &[("s1", When::Waiting)],
        SignalPlan::Early => &[("s1", When::Now)],
        SignalPlan::Duplicate => &[("s1", When::Waiting), ("s1", When::Now), ("s2", When::Now)],
        SignalPlan::Late => &[("s1", When::Over)],
        SignalPlan::Never => &[],
    }
}

fn ready(rec: &SagaRecord, when: When) -> bool {
    let ended = rec.status().is_terminal();
    let state = rec.state.steps[WAIT_AT].state;
    match when {
        When::Now => true,
        When::Waiting => ended || state != StepState::Pending,
        When::Over => ended || !matches!(state, StepState::Pending | StepState::Waiting),
    }
}

/// The sender of request `no`'s signal, for one engine process: goes on
/// with the sends not yet answered (an answer lost in a crash is sent
/// again, under the same id).
pub async fn sender(world: Arc<World>, engine: Engine, no: usize) {
    let Shape::Wait(plan) = world.plans[no].shape else {
        return;
    };
    let id = loop {
        if let Some(id) = world.acked(no) {
            break id;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let key = world.plans[no].key.clone();
    loop {
        let done = world.ledger().signal_answers.get(&no).map_or(0, Vec::len);
        let Some(&(sid, when)) = sends(plan).get(done) else {
            return;
        };
        loop {
            match engine.status(&id).await {
                Ok(rec) if ready(&rec, when) => break,
                Ok(_) => {}
                Err(e) => return world.violation(format!("req-{no}: status failed: {e}")),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if when == When::Waiting {
            let pause = world.range(0..=WAIT_MS / 2);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let sid = format!("{key}-{sid}");
        world.log(format!("client signal req-{no} {sid}"));
        let answer = match engine.signal(&id, SIGNAL, &sid, &payload(no)).await {
            Ok(o) => format!("{o:?}"),
            Err(Error::SignalRefused { reason, .. }) => format!("refused: {reason}"),
            Err(e) => return world.violation(format!("req-{no}: signal {sid} failed: {e}")),
        };
        world.log(format!("client signal req-{no} {sid}: {answer}"));
        let mut l = world.ledger();
        l.stats.signals += 1;
        l.signal_answers.entry(no).or_default().push(answer);
    }
}

/// The checks of a wait saga's signals once it ended: `problems` grows.
pub fn check_wait(
    plan: SignalPlan,
    no: usize,
    rec: &SagaRecord,
    answers: &[String],
    problems: &mut Vec<String>,
) {
    let took = |a: &String| {
        a == &format!("{:?}", SignalOutcome::Delivered)
            || a == &format!("{:?}", SignalOutcome::Kept)
    };
    let data: SimData = match rec.data_as() {
        Ok(d) => d,
        Err(e) => return problems.push(format!("req-{no}: data unreadable: {e}")),
    };
    let timed_out = rec.state.steps[WAIT_AT]
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("timed out"));
    match rec.status() {
        SagaStatus::Completed if data.signal != [payload(no)] => problems.push(format!(
            "req-{no}: completed with signals {:?} (exactly one expected)",
            data.signal
        )),
        SagaStatus::Completed if matches!(plan, SignalPlan::Never | SignalPlan::Late) => {
            problems.push(format!("req-{no}: completed without a signal ({plan:?})"))
        }
        _ => {}
    }
    if timed_out && answers.iter().any(took) {
        problems.push(format!(
            "req-{no}: the wait timed out after its signal was accepted: {answers:?}"
        ));
    }
    for (i, a) in answers.iter().enumerate() {
        let late = plan == SignalPlan::Late;
        let again = plan == SignalPlan::Duplicate && i >= 1;
        if (late || again) && took(a) {
            problems.push(format!(
                "req-{no}: signal answer {i} of {plan:?} was {a}: {answers:?}"
            ));
        }
    }
    if plan == SignalPlan::Never && rec.status() == SagaStatus::Compensated && !timed_out {
        // Compensated for another reason (a rejection, a cancel) before
        // the wait: fine, but then the wait never began.
        if rec.state.steps[WAIT_AT].state == StepState::Waiting {
            problems.push(format!("req-{no}: compensated while still waiting"));
        }
    }
}
