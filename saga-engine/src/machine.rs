//! The pure saga state machine: persisted state + input -> new state + the
//! next decision.
//!
//! No IO, no clock, no tokio, no randomness: the runtime passes the current
//! time and a jitter sample in [`Ctx`], persists the new state, and only then
//! carries out the returned [`Decision`] (write before act). Because the new
//! state already records the intent of the decision (the step marked
//! `Running` with its attempt counted), a crash after the write and before
//! the act is recovered by feeding [`Input::Resume`].

use crate::retry::RetryPolicy;

mod decision;
mod group;
mod model;
mod ops;
mod plan;
pub use model::*;
pub use plan::{Plan, PlannedAction, PlannedStep};

impl SagaState {
    /// A fresh saga over the named steps, nothing started.
    pub fn new<S: Into<String>>(step_names: impl IntoIterator<Item = S>) -> SagaState {
        SagaState {
            status: SagaStatus::Running,
            steps: step_names
                .into_iter()
                .map(|n| StepProgress {
                    name: n.into(),
                    state: StepState::Pending,
                    attempts: 0,
                    compensation_attempts: 0,
                    in_doubt: false,
                    last_error: None,
                    wake_at_ms: None,
                    group: None,
                    wrote: Vec::new(),
                })
                .collect(),
            cancel_requested: false,
            failure: None,
            signals: Vec::new(),
            deadline_ms: None,
            deadline_passed: false,
            overdue: false,
            paused: None,
            operations: Vec::new(),
            rerun_of: None,
            reruns: Vec::new(),
        }
    }

    /// A fresh saga over `(name, group)` pairs: consecutive steps with the
    /// same group run as one parallel group.
    pub fn grouped<S: Into<String>>(
        steps: impl IntoIterator<Item = (S, Option<String>)>,
    ) -> SagaState {
        let (names, groups): (Vec<String>, Vec<Option<String>>) =
            steps.into_iter().map(|(n, g)| (n.into(), g)).unzip();
        let mut s = SagaState::new(names);
        for (p, g) in s.steps.iter_mut().zip(groups) {
            p.group = g;
        }
        s
    }

    /// The pivot's index, if the saga has one.
    fn pivot(p: &[StepPolicy]) -> Option<usize> {
        p.iter().position(|x| x.class == StepClass::Pivot)
    }

    /// True once the saga may only move forward: its pivot succeeded, or
    /// is in doubt (it may have taken effect, so undoing the steps before
    /// it could leave half a saga), or is stuck forward.
    pub fn forward_only(&self, p: &[StepPolicy]) -> bool {
        let Some(i) = Self::pivot(p) else {
            return false;
        };
        let s = &self.steps[i];
        match s.state {
            StepState::Succeeded | StepState::StuckForward => true,
            StepState::Running | StepState::RetryWait | StepState::InDoubt => s.in_doubt,
            _ => false,
        }
    }

    /// True when the pivot has succeeded.
    pub fn past_pivot(&self, p: &[StepPolicy]) -> bool {
        Self::pivot(p).is_some_and(|i| self.steps[i].state == StepState::Succeeded)
    }

    fn step_mut(&mut self, step: usize) -> Result<&mut StepProgress, MachineError> {
        let len = self.steps.len();
        self.steps
            .get_mut(step)
            .ok_or(MachineError::NoSuchStep { step, len })
    }

    fn unexpected(&self, input: &Input, step: Option<usize>) -> MachineError {
        MachineError::Unexpected {
            input: format!("{input:?}"),
            status: self.status,
            step_state: step.and_then(|i| self.steps.get(i)).map(|s| s.state),
        }
    }

    /// Starts `step`: the forward attempt of an action (intent recorded in
    /// the state), or the wait of a wait step, which an early signal may
    /// end at once.
    fn run(&mut self, step: usize, p: &[StepPolicy], ctx: Ctx) -> Decision {
        if self.paused.is_some() {
            // Held: the step stays pending until the saga is resumed.
            return Decision::Paused;
        }
        if self.steps[step].state == StepState::Succeeded && self.steps[step].group.is_none() {
            // Skipped ahead by an operator.
            return self.advance(step, p, ctx);
        }
        if self.steps[step].group.is_some() {
            return self.run_group(step, p, ctx);
        }
        match &p[step].kind {
            StepKind::Action => {
                let s = &mut self.steps[step];
                s.state = StepState::Running;
                s.attempts += 1;
                s.wake_at_ms = None;
                Decision::Run {
                    step,
                    attempt: s.attempts,
                }
            }
            StepKind::Signal { name, timeout_ms } => {
                let early = self
                    .signals
                    .iter_mut()
                    .find(|g| g.consumed_by.is_none() && &g.name == name);
                let s = &mut self.steps[step];
                s.attempts += 1;
                if let Some(g) = early {
                    g.consumed_by = Some(step);
                    s.state = StepState::Succeeded;
                    s.wake_at_ms = None;
                    return self.advance(step, p, ctx);
                }
                s.state = StepState::Waiting;
                s.wake_at_ms = Some(ctx.now_ms.saturating_add(*timeout_ms));
                self.decision()
            }
            StepKind::Sleep { for_ms } => {
                let s = &mut self.steps[step];
                s.attempts += 1;
                s.state = StepState::Waiting;
                s.wake_at_ms = Some(ctx.now_ms.saturating_add(*for_ms));
                self.decision()
            }
            StepKind::SleepUntil { at_ms } => {
                let s = &mut self.steps[step];
                s.attempts += 1;
                s.state = StepState::Waiting;
                s.wake_at_ms = Some(*at_ms);
                self.decision()
            }
        }
    }

    /// Moves forward past a succeeded `step`.
    fn advance(&mut self, step: usize, p: &[StepPolicy], ctx: Ctx) -> Decision {
        if self.cancel_requested {
            if self.forward_only(p) {
                // The pivot succeeded under a pending cancel (or deadline):
                // too late to undo; go on, flagged overdue if it was the deadline.
                self.cancel_requested = false;
                self.overdue |= self.deadline_passed;
                self.failure = None;
            } else {
                return self.begin_compensation(p);
            }
        }
        if step + 1 < self.steps.len() {
            self.run(step + 1, p, ctx)
        } else {
            self.status = SagaStatus::Completed;
            Decision::Finished(SagaStatus::Completed)
        }
    }

    /// Enters compensation and picks the newest step that needs undoing.
    fn begin_compensation(&mut self, p: &[StepPolicy]) -> Decision {
        self.status = SagaStatus::Compensating;
        self.cancel_requested = false;
        for s in &mut self.steps {
            if s.state == StepState::Waiting {
                // An abandoned wait: nothing to undo, and no signal is taken
                // for it any more.
                s.state = StepState::Rejected;
                s.wake_at_ms = None;
                s.last_error = Some("wait abandoned: the saga is compensating".into());
            }
        }
        self.compensate_next(self.steps.len(), p)
    }

    /// Compensates the newest compensatable step below `below` that took
    /// (or may have taken) effect; finishes as `Compensated` when none is left.
    fn compensate_next(&mut self, below: usize, p: &[StepPolicy]) -> Decision {
        for i in (0..below).rev() {
            let s = &mut self.steps[i];
            let needs = match s.state {
                StepState::Succeeded | StepState::InDoubt => true,
                // A cancel during a retry wait: an earlier attempt failed
                // without a clear answer, so the step is in doubt.
                StepState::RetryWait => true,
                StepState::Rejected => s.in_doubt,
                _ => false,
            };
            if s.state == StepState::RetryWait {
                s.in_doubt = true;
                s.state = StepState::InDoubt;
                s.wake_at_ms = None;
            }
            if needs && p[i].class == StepClass::Compensatable && p[i].kind == StepKind::Action {
                if self.paused.is_some() {
                    // Held: found again (newest first) when resumed.
                    return Decision::Paused;
                }
                s.state = StepState::Compensating;
                s.compensation_attempts += 1;
                s.wake_at_ms = None;
                return Decision::Compensate {
                    step: i,
                    attempt: s.compensation_attempts,
                };
            }
        }
        self.status = SagaStatus::Compensated;
        Decision::Finished(SagaStatus::Compensated)
    }

    /// Parks the saga on a step that may only move forward.
    fn stuck_forward(&mut self, step: usize) -> Decision {
        let s = &mut self.steps[step];
        s.state = StepState::StuckForward;
        s.wake_at_ms = None;
        self.status = SagaStatus::Stuck;
        Decision::Finished(SagaStatus::Stuck)
    }

    /// A forward attempt ended without a clear answer: retry, or give up:
    /// in doubt and compensated before the pivot, stuck forward at or after it.
    fn forward_unclear(&mut self, step: usize, p: &[StepPolicy], ctx: Ctx) -> Decision {
        let policy = &p[step].forward;
        let class = p[step].class;
        let s = &mut self.steps[step];
        s.in_doubt = true;
        if s.attempts < policy.max_attempts {
            let wake = ctx
                .now_ms
                .saturating_add(policy.delay(s.attempts, ctx.jitter).as_millis() as u64);
            s.state = StepState::RetryWait;
            s.wake_at_ms = Some(wake);
            if self.cancel_requested && !self.forward_only(p) {
                return self.begin_compensation(p);
            }
            self.decision()
        } else if matches!(class, StepClass::Pivot | StepClass::Retriable) {
            self.stuck_forward(step)
        } else {
            s.state = StepState::InDoubt;
            if self.failure.is_none() {
                self.failure = Some(format!(
                    "step {} gave no clear answer after {} attempts: {}",
                    s.name,
                    s.attempts,
                    s.last_error.as_deref().unwrap_or("unknown error")
                ));
            }
            self.begin_compensation(p)
        }
    }

    /// A compensation attempt ended without success: retry or park as stuck.
    fn compensation_unclear(&mut self, step: usize, policy: &RetryPolicy, ctx: Ctx) -> Decision {
        let s = &mut self.steps[step];
        if s.compensation_attempts < policy.max_attempts {
            let wake = ctx.now_ms.saturating_add(
                policy
                    .delay(s.compensation_attempts, ctx.jitter)
                    .as_millis() as u64,
            );
            s.state = StepState::CompensationWait;
            s.wake_at_ms = Some(wake);
            Decision::Sleep {
                step,
                until_ms: wake,
            }
        } else {
            s.state = StepState::CompensationFailed;
            s.wake_at_ms = None;
            self.status = SagaStatus::Stuck;
            Decision::Finished(SagaStatus::Stuck)
        }
    }

    /// Notes a deadline that has passed: before the pivot the saga is to
    /// compensate (as if cancelled, once any running step returns); past it
    /// the saga is flagged overdue and goes on.
    fn note_deadline(&mut self, p: &[StepPolicy], now_ms: u64) {
        let due = self.deadline_ms.is_some_and(|d| d <= now_ms);
        if !due || self.deadline_passed || self.status != SagaStatus::Running {
            return;
        }
        self.deadline_passed = true;
        if self.past_pivot(p) {
            self.overdue = true;
            return;
        }
        self.cancel_requested = true;
        if self.failure.is_none() {
            let d = self.deadline_ms.unwrap_or(0);
            self.failure = Some(format!(
                "deadline passed (due at {d} ms, seen at {now_ms} ms)"
            ));
        }
    }

    /// A pending cancel (or passed deadline) takes effect at once when
    /// nothing is running: a wait or a retry wait before the pivot is
    /// abandoned and compensation begins.
    fn settle_cancel(&mut self, p: &[StepPolicy], d: Decision, ctx: Ctx) -> Decision {
        if !self.cancel_requested || self.status != SagaStatus::Running {
            return d;
        }
        match d {
            Decision::Wait { .. } | Decision::Sleep { .. } if !self.forward_only(p) => {
                self.begin_compensation(p)
            }
            Decision::RunGroup { first, end } => self.group_progress(first..end, p, ctx),
            _ => d,
        }
    }

    /// Applies `input`, mutating the state, and returns what to do next.
    /// On error the state is unchanged.
    pub fn apply(
        &mut self,
        policies: &[StepPolicy],
        input: Input,
        ctx: Ctx,
    ) -> Result<Decision, MachineError> {
        if policies.len() != self.steps.len() {
            return Err(MachineError::PolicyMismatch {
                policies: policies.len(),
                steps: self.steps.len(),
            });
        }
        match (&input, self.status) {
            (Input::OperatorRetry | Input::ForceCompensate { .. }, SagaStatus::Stuck) => {}
            (
                Input::Pause(_)
                | Input::Unpause
                | Input::RetryNow
                | Input::Skip { .. }
                | Input::ForceCompensate { .. },
                status,
            ) if status.is_terminal() => {
                return Err(MachineError::Refused(Refusal::Finished(status)))
            }
            (Input::Signal { name, .. }, status) if status.is_terminal() => {
                return Err(MachineError::SignalRefused {
                    name: name.clone(),
                    reason: format!("the saga has finished as {status}"),
                })
            }
            (_, status) if status.is_terminal() => return Err(MachineError::Finished(status)),
            _ => {}
        }
        let before = self.clone();
        let result = self.apply_inner(policies, input, ctx);
        match result {
            Err(_) => *self = before,
            Ok(_) if self.paused.is_some() && self.status.is_terminal() => {
                // Finished while paused (the last step returned, or nothing
                // was left to undo): the pause has nothing left to hold.
                self.paused = None;
            }
            Ok(_) if self.paused.is_some() => return Ok(self.decision()),
            Ok(_) => {}
        }
        result
    }

    fn apply_inner(
        &mut self,
        p: &[StepPolicy],
        input: Input,
        ctx: Ctx,
    ) -> Result<Decision, MachineError> {
        if !matches!(input, Input::Start) {
            self.note_deadline(p, ctx.now_ms);
        }
        let d = match input {
            Input::Start => {
                if self.steps.iter().any(|s| s.state != StepState::Pending) {
                    return Err(self.unexpected(&input, None));
                }
                if self.steps.is_empty() {
                    self.status = SagaStatus::Completed;
                    return Ok(Decision::Finished(SagaStatus::Completed));
                }
                self.run(0, p, ctx)
            }
            Input::Resume => {
                // An attempt that was under way when the process died may or
                // may not have taken effect: count it, and run it again if
                // the policy allows.
                match self.decision() {
                    Decision::RunGroup { first, end } => self.resume_group(first..end, p, ctx),
                    Decision::Run { step, .. } => {
                        let policy = &p[step].forward;
                        let s = &mut self.steps[step];
                        s.in_doubt = true;
                        if s.last_error.is_none() {
                            s.last_error = Some("interrupted by a restart".into());
                        }
                        if s.attempts < policy.max_attempts {
                            if self.cancel_requested && !self.forward_only(p) {
                                self.steps[step].state = StepState::InDoubt;
                                return Ok(self.begin_compensation(p));
                            }
                            let s = &mut self.steps[step];
                            if self.paused.is_some() {
                                // Paused: the next attempt waits, due at
                                // once, until the saga is resumed.
                                s.state = StepState::RetryWait;
                                s.wake_at_ms = Some(ctx.now_ms);
                                return Ok(Decision::Paused);
                            }
                            s.state = StepState::Pending;
                            self.run(step, p, ctx)
                        } else {
                            self.forward_unclear(step, p, ctx)
                        }
                    }
                    Decision::Compensate { step, .. } => {
                        let policy = &p[step].compensation;
                        let s = &mut self.steps[step];
                        if s.compensation_attempts < policy.max_attempts && self.paused.is_some() {
                            s.state = StepState::CompensationWait;
                            s.wake_at_ms = Some(ctx.now_ms);
                            Decision::Paused
                        } else if s.compensation_attempts < policy.max_attempts {
                            s.compensation_attempts += 1;
                            Decision::Compensate {
                                step,
                                attempt: s.compensation_attempts,
                            }
                        } else {
                            self.compensation_unclear(step, policy, ctx)
                        }
                    }
                    Decision::AwaitRunning => {
                        // Nothing running or waiting: a state written before
                        // its decision was chosen cannot happen, but if it
                        // does, the safe move is to undo what was done
                        // (or, past the pivot, to stop for an operator).
                        if self.forward_only(p) {
                            let i = Self::pivot(p).unwrap_or(0);
                            self.stuck_forward(i)
                        } else {
                            self.begin_compensation(p)
                        }
                    }
                    d => d,
                }
            }
            Input::StepSucceeded { step } => {
                let s = self.step_mut(step)?;
                if s.state != StepState::Running || self.status != SagaStatus::Running {
                    return Err(self.unexpected(&input, Some(step)));
                }
                if self.steps[step].group.is_some() {
                    return Ok(self.member_succeeded(step, p, ctx));
                }
                let s = &mut self.steps[step];
                s.state = StepState::Succeeded;
                s.last_error = None;
                self.advance(step, p, ctx)
            }
            Input::StepFailed {
                step,
                kind,
                ref error,
            } => {
                let s = self.step_mut(step)?;
                if s.state != StepState::Running || self.status != SagaStatus::Running {
                    return Err(self.unexpected(&input, Some(step)));
                }
                if self.steps[step].group.is_some() {
                    return Ok(self.member_failed(step, kind, error, p, ctx));
                }
                let s = &mut self.steps[step];
                s.last_error = Some(error.clone());
                match kind {
                    FailureKind::Rejected if p[step].class == StepClass::Retriable => {
                        // After the pivot a "no" cannot be undone by
                        // compensating: an operator must look.
                        self.stuck_forward(step)
                    }
                    FailureKind::Rejected => {
                        s.state = StepState::Rejected;
                        let name = s.name.clone();
                        if self.failure.is_none() {
                            self.failure = Some(format!("step {name} rejected: {error}"));
                        }
                        self.begin_compensation(p)
                    }
                    FailureKind::Retryable | FailureKind::Timeout => {
                        self.forward_unclear(step, p, ctx)
                    }
                }
            }
            Input::CompensationSucceeded { step } => {
                let s = self.step_mut(step)?;
                if s.state != StepState::Compensating {
                    return Err(self.unexpected(&input, Some(step)));
                }
                s.state = StepState::Compensated;
                s.wake_at_ms = None;
                self.compensate_next(step, p)
            }
            Input::CompensationFailed { step, ref error } => {
                let s = self.step_mut(step)?;
                if s.state != StepState::Compensating {
                    return Err(self.unexpected(&input, Some(step)));
                }
                s.last_error = Some(error.clone());
                self.compensation_unclear(step, &p[step].compensation, ctx)
            }
            Input::TimerFired { .. } if self.paused.is_some() => {
                // A timer that raced the pause: it fires again on resume.
                self.decision()
            }
            Input::TimerFired { step } => {
                let s = self.step_mut(step)?;
                let early = s.wake_at_ms.is_some_and(|w| ctx.now_ms < w);
                match s.state {
                    // Woken before its time (by the deadline): nothing
                    // changes but what the deadline did.
                    StepState::RetryWait | StepState::Waiting if early => self.decision(),
                    StepState::RetryWait if s.group.is_some() => self.retry_member(step),
                    StepState::RetryWait => {
                        self.steps[step].state = StepState::Pending;
                        self.run(step, p, ctx)
                    }
                    StepState::CompensationWait => {
                        s.state = StepState::Compensating;
                        s.compensation_attempts += 1;
                        s.wake_at_ms = None;
                        Decision::Compensate {
                            step,
                            attempt: s.compensation_attempts,
                        }
                    }
                    StepState::Waiting => match &p[step].kind {
                        StepKind::Signal { name, timeout_ms } => {
                            let error = format!(
                                "timed out after {timeout_ms} ms waiting for signal {name:?}"
                            );
                            let s = &mut self.steps[step];
                            s.wake_at_ms = None;
                            s.last_error = Some(error.clone());
                            if self.forward_only(p) {
                                self.stuck_forward(step)
                            } else {
                                self.steps[step].state = StepState::Rejected;
                                if self.failure.is_none() {
                                    self.failure =
                                        Some(format!("step {} {error}", self.steps[step].name));
                                }
                                self.begin_compensation(p)
                            }
                        }
                        _ => {
                            let s = &mut self.steps[step];
                            s.state = StepState::Succeeded;
                            s.wake_at_ms = None;
                            self.advance(step, p, ctx)
                        }
                    },
                    _ => return Err(self.unexpected(&input, Some(step))),
                }
            }
            Input::Signal {
                ref id,
                ref name,
                ref payload,
            } => {
                if self.signals.iter().any(|g| &g.id == id) {
                    // A repeated delivery: already taken.
                    return Ok(self.decision());
                }
                let waits: Vec<usize> = (0..p.len())
                    .filter(
                        |&i| matches!(&p[i].kind, StepKind::Signal { name: n, .. } if n == name),
                    )
                    .collect();
                let refuse = |reason: String| MachineError::SignalRefused {
                    name: name.clone(),
                    reason,
                };
                if waits.is_empty() {
                    return Err(refuse("no step of this saga waits for it".into()));
                }
                if let Some(&i) = waits
                    .iter()
                    .find(|&&i| self.steps[i].state == StepState::Waiting)
                {
                    self.signals.push(ReceivedSignal {
                        id: id.clone(),
                        name: name.clone(),
                        payload: payload.clone(),
                        consumed_by: Some(i),
                    });
                    let s = &mut self.steps[i];
                    s.state = StepState::Succeeded;
                    s.wake_at_ms = None;
                    self.advance(i, p, ctx)
                } else {
                    let pending = waits
                        .iter()
                        .filter(|&&i| self.steps[i].state == StepState::Pending)
                        .count();
                    let kept = self
                        .signals
                        .iter()
                        .filter(|g| g.consumed_by.is_none() && &g.name == name)
                        .count();
                    if kept >= pending {
                        let last = &self.steps[*waits.last().unwrap_or(&0)];
                        let why = match (&last.state, &last.last_error) {
                            (StepState::Rejected, Some(e)) => e.clone(),
                            (state, _) => {
                                format!("its wait is over (step {} is {state:?})", last.name)
                            }
                        };
                        return Err(refuse(why));
                    }
                    if self.status != SagaStatus::Running {
                        return Err(refuse(format!("the saga is {}", self.status)));
                    }
                    // Early: kept until its wait begins.
                    self.signals.push(ReceivedSignal {
                        id: id.clone(),
                        name: name.clone(),
                        payload: payload.clone(),
                        consumed_by: None,
                    });
                    self.decision()
                }
            }
            Input::DeadlineCheck => self.decision(),
            Input::Cancel { ref reason } => {
                if self.status == SagaStatus::Compensating {
                    // Already undoing: nothing more to do.
                    return Ok(self.decision());
                }
                if let Some(i) = Self::pivot(p).filter(|_| self.past_pivot(p)) {
                    return Err(MachineError::PastPivot {
                        pivot: self.steps[i].name.clone(),
                    });
                }
                if self.failure.is_none() {
                    self.failure = Some(format!("cancelled: {reason}"));
                }
                self.cancel_requested = true;
                match self.decision() {
                    Decision::Run { .. } => Decision::AwaitRunning,
                    Decision::RunGroup { first, end } => self.group_progress(first..end, p, ctx),
                    d => d,
                }
            }
            Input::OperatorRetry => {
                if self.status != SagaStatus::Stuck {
                    return Err(self.unexpected(&input, None));
                }
                if let Some(i) = self
                    .steps
                    .iter()
                    .position(|s| s.state == StepState::StuckForward)
                {
                    self.status = SagaStatus::Running;
                    let s = &mut self.steps[i];
                    s.state = StepState::Pending;
                    s.attempts = 0;
                    return Ok(self.run(i, p, ctx));
                }
                let Some(i) = self
                    .steps
                    .iter()
                    .position(|s| s.state == StepState::CompensationFailed)
                else {
                    return Err(self.unexpected(&input, None));
                };
                self.status = SagaStatus::Compensating;
                let s = &mut self.steps[i];
                s.state = StepState::Compensating;
                s.compensation_attempts = 1;
                Decision::Compensate {
                    step: i,
                    attempt: 1,
                }
            }
            Input::Pause(ref mark) => self.pause(mark.clone())?,
            Input::Unpause => self.unpause(p, ctx)?,
            Input::RetryNow => self.retry_now(ctx)?,
            Input::Skip { step } => self.skip(step, p, ctx)?,
            Input::ForceCompensate { ref reason } => self.force_compensate(reason, p, ctx)?,
            Input::StartAt { step } => self.start_at(step, p, ctx)?,
        };
        Ok(self.settle_cancel(p, d, ctx))
    }
}

#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod ops_tests;
#[cfg(test)]
mod tests;
