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
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a saga stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Running steps forward.
    Running,
    /// A step failed (or cancel was asked): undoing completed steps, newest first.
    Compensating,
    /// Terminal: every step succeeded.
    Completed,
    /// Terminal: a step failed and every completed or in-doubt step was compensated.
    Compensated,
    /// A compensation kept failing past its policy: parked until an operator retries it.
    Stuck,
}

impl SagaStatus {
    /// True for `Completed`, `Compensated` and `Stuck`: no worker runs the saga.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Stuck
        )
    }

    /// The snake_case name used in JSON and URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Stuck => "stuck",
        }
    }

    /// Parses a name produced by [`SagaStatus::as_str`].
    pub fn parse(s: &str) -> Option<SagaStatus> {
        Some(match s {
            "running" => SagaStatus::Running,
            "compensating" => SagaStatus::Compensating,
            "completed" => SagaStatus::Completed,
            "compensated" => SagaStatus::Compensated,
            "stuck" => SagaStatus::Stuck,
            _ => return None,
        })
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started.
    Pending,
    /// An attempt is (or may be) under way.
    Running,
    /// An attempt failed retryably; the next one waits for `wake_at_ms`.
    RetryWait,
    /// The step took effect.
    Succeeded,
    /// The participant said no; the step took no effect.
    Rejected,
    /// Retries ran out without an answer: it may or may not have taken effect.
    InDoubt,
    /// A compensation attempt is (or may be) under way.
    Compensating,
    /// A compensation attempt failed; the next one waits for `wake_at_ms`.
    CompensationWait,
    /// The step's effect was undone.
    Compensated,
    /// Compensation failed past its policy: the saga is stuck on this step.
    CompensationFailed,
}

/// The persisted progress of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepProgress {
    /// The step's name.
    pub name: String,
    /// Its state.
    pub state: StepState,
    /// Forward attempts started so far.
    pub attempts: u32,
    /// Compensation attempts started so far (reset by an operator retry).
    pub compensation_attempts: u32,
    /// True once any attempt ended without a clear answer (timeout, retryable
    /// error, crash): such a step is compensated even if a later attempt is
    /// rejected.
    pub in_doubt: bool,
    /// The last error seen, forward or compensating.
    pub last_error: Option<String>,
    /// When a waiting step wakes, in milliseconds since the Unix epoch.
    pub wake_at_ms: Option<u64>,
}

/// The persisted state of a saga, as the machine sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaState {
    /// Overall status.
    pub status: SagaStatus,
    /// One entry per step, in definition order.
    pub steps: Vec<StepProgress>,
    /// A cancel arrived while a step was running; compensation begins when it returns.
    pub cancel_requested: bool,
    /// Why compensation began (the failing step's error or the cancel reason).
    pub failure: Option<String>,
}

/// The retry policies the machine needs for one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPolicy {
    /// Policy of the forward action.
    pub forward: RetryPolicy,
    /// Policy of the compensation.
    pub compensation: RetryPolicy,
}

/// How a forward attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Transient (network, busy): retry with backoff.
    Retryable,
    /// The attempt ran past its timeout: in doubt, retried like `Retryable`.
    Timeout,
    /// A business "no": compensate at once.
    Rejected,
}

/// Something that happened to a saga.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The saga was created: begin with the first step.
    Start,
    /// The engine reopened the store and finds the saga as persisted.
    Resume,
    /// The running attempt of `step` succeeded.
    StepSucceeded {
        /// Step index.
        step: usize,
    },
    /// The running attempt of `step` failed.
    StepFailed {
        /// Step index.
        step: usize,
        /// How.
        kind: FailureKind,
        /// What went wrong.
        error: String,
    },
    /// The running compensation of `step` succeeded.
    CompensationSucceeded {
        /// Step index.
        step: usize,
    },
    /// The running compensation of `step` failed.
    CompensationFailed {
        /// Step index.
        step: usize,
        /// What went wrong.
        error: String,
    },
    /// The wait of `step` is over.
    TimerFired {
        /// Step index.
        step: usize,
    },
    /// A caller asked to abandon the saga and undo what was done.
    Cancel {
        /// Why.
        reason: String,
    },
    /// An operator asks a stuck saga to try its compensation again.
    OperatorRetry,
}

/// Inputs from the outside world that the machine may not fetch itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ctx {
    /// Current time, milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// A random sample in `[0, 1)` for backoff jitter.
    pub jitter: f64,
}

/// What the runtime must do next. Carry it out only after the state that
/// produced it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run attempt `attempt` of step `step`.
    Run {
        /// Step index.
        step: usize,
        /// 1-based attempt number.
        attempt: u32,
    },
    /// Run attempt `attempt` of step `step`'s compensation.
    Compensate {
        /// Step index.
        step: usize,
        /// 1-based attempt number.
        attempt: u32,
    },
    /// Sleep until `until_ms`, then feed [`Input::TimerFired`] for `step`.
    Sleep {
        /// Step index.
        step: usize,
        /// Wake time, milliseconds since the Unix epoch.
        until_ms: u64,
    },
    /// Nothing to do until the running attempt reports (used after a cancel
    /// recorded while a step runs).
    AwaitRunning,
    /// The saga reached a terminal status.
    Finished(SagaStatus),
}

/// An input that does not fit the state it was applied to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    /// The input names a step that does not exist.
    #[error("step index {step} out of range (saga has {len} steps)")]
    NoSuchStep {
        /// The index given.
        step: usize,
        /// Number of steps.
        len: usize,
    },
    /// The input does not apply in the current state (e.g. a step result for
    /// a step that is not running).
    #[error("input {input} does not apply to a saga that is {status} (step state {step_state:?})")]
    Unexpected {
        /// The input, debug-printed.
        input: String,
        /// The saga's status.
        status: SagaStatus,
        /// The relevant step's state, if any.
        step_state: Option<StepState>,
    },
    /// The saga already finished; nothing more can happen to it.
    #[error("saga already finished as {0}")]
    Finished(SagaStatus),
    /// The policies do not match the steps.
    #[error("{policies} policies given for {steps} steps")]
    PolicyMismatch {
        /// Policies given.
        policies: usize,
        /// Steps in the state.
        steps: usize,
    },
}

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
                })
                .collect(),
            cancel_requested: false,
            failure: None,
        }
    }

    /// What the runtime should be doing in this state (read-only).
    pub fn decision(&self) -> Decision {
        if self.status.is_terminal() {
            return Decision::Finished(self.status);
        }
        for (i, s) in self.steps.iter().enumerate() {
            match s.state {
                StepState::Running => {
                    return Decision::Run {
                        step: i,
                        attempt: s.attempts,
                    }
                }
                StepState::Compensating => {
                    return Decision::Compensate {
                        step: i,
                        attempt: s.compensation_attempts,
                    }
                }
                StepState::RetryWait | StepState::CompensationWait => {
                    return Decision::Sleep {
                        step: i,
                        until_ms: s.wake_at_ms.unwrap_or(0),
                    }
                }
                _ => {}
            }
        }
        Decision::AwaitRunning
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

    /// Starts the forward attempt of `step` (intent recorded in the state).
    fn run(&mut self, step: usize) -> Decision {
        let s = &mut self.steps[step];
        s.state = StepState::Running;
        s.attempts += 1;
        s.wake_at_ms = None;
        Decision::Run {
            step,
            attempt: s.attempts,
        }
    }

    /// Moves forward past a succeeded `step`.
    fn advance(&mut self, step: usize) -> Decision {
        if self.cancel_requested {
            return self.begin_compensation();
        }
        if step + 1 < self.steps.len() {
            self.run(step + 1)
        } else {
            self.status = SagaStatus::Completed;
            Decision::Finished(SagaStatus::Completed)
        }
    }

    /// Enters compensation and picks the newest step that needs undoing.
    fn begin_compensation(&mut self) -> Decision {
        self.status = SagaStatus::Compensating;
        self.cancel_requested = false;
        self.compensate_next(self.steps.len())
    }

    /// Compensates the newest step below `below` that took (or may have
    /// taken) effect; finishes as `Compensated` when none is left.
    fn compensate_next(&mut self, below: usize) -> Decision {
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
            if needs {
                if s.state == StepState::RetryWait {
                    s.in_doubt = true;
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

    /// A forward attempt ended without a clear answer: retry or give up (in doubt).
    fn forward_unclear(&mut self, step: usize, policy: &RetryPolicy, ctx: Ctx) -> Decision {
        let s = &mut self.steps[step];
        s.in_doubt = true;
        if s.attempts < policy.max_attempts {
            let wake = ctx
                .now_ms
                .saturating_add(policy.delay(s.attempts, ctx.jitter).as_millis() as u64);
            s.state = StepState::RetryWait;
            s.wake_at_ms = Some(wake);
            if self.cancel_requested {
                return self.begin_compensation();
            }
            Decision::Sleep {
                step,
                until_ms: wake,
            }
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
            self.begin_compensation()
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
            (Input::OperatorRetry, SagaStatus::Stuck) => {}
            (_, status) if status.is_terminal() => return Err(MachineError::Finished(status)),
            _ => {}
        }
        match input {
            Input::Start => {
                if self.steps.iter().any(|s| s.state != StepState::Pending) {
                    return Err(self.unexpected(&input, None));
                }
                if self.steps.is_empty() {
                    self.status = SagaStatus::Completed;
                    return Ok(Decision::Finished(SagaStatus::Completed));
                }
                Ok(self.run(0))
            }
            Input::Resume => {
                // An attempt that was under way when the process died may or
                // may not have taken effect: count it, and run it again if
                // the policy allows.
                match self.decision() {
                    Decision::Run { step, .. } => {
                        let policy = &policies[step].forward;
                        let s = &mut self.steps[step];
                        s.in_doubt = true;
                        if s.last_error.is_none() {
                            s.last_error = Some("interrupted by a restart".into());
                        }
                        if s.attempts < policy.max_attempts {
                            if self.cancel_requested {
                                s.state = StepState::InDoubt;
                                return Ok(self.begin_compensation());
                            }
                            Ok(self.run(step))
                        } else {
                            Ok(self.forward_unclear(step, policy, ctx))
                        }
                    }
                    Decision::Compensate { step, .. } => {
                        let policy = &policies[step].compensation;
                        let s = &mut self.steps[step];
                        if s.compensation_attempts < policy.max_attempts {
                            s.compensation_attempts += 1;
                            Ok(Decision::Compensate {
                                step,
                                attempt: s.compensation_attempts,
                            })
                        } else {
                            Ok(self.compensation_unclear(step, policy, ctx))
                        }
                    }
                    Decision::AwaitRunning => {
                        // Nothing running or waiting: a state written before
                        // its decision was chosen cannot happen, but if it
                        // does, the safe move is to undo what was done.
                        Ok(self.begin_compensation())
                    }
                    d => Ok(d),
                }
            }
            Input::StepSucceeded { step } => {
                let s = self.step_mut(step)?;
                if s.state != StepState::Running || self.status != SagaStatus::Running {
                    return Err(self.unexpected(&input, Some(step)));
                }
                let s = &mut self.steps[step];
                s.state = StepState::Succeeded;
                s.last_error = None;
                Ok(self.advance(step))
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
                let s = &mut self.steps[step];
                s.last_error = Some(error.clone());
                match kind {
                    FailureKind::Rejected => {
                        s.state = StepState::Rejected;
                        let name = s.name.clone();
                        if self.failure.is_none() {
                            self.failure = Some(format!("step {name} rejected: {error}"));
                        }
                        Ok(self.begin_compensation())
                    }
                    FailureKind::Retryable | FailureKind::Timeout => {
                        Ok(self.forward_unclear(step, &policies[step].forward, ctx))
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
                Ok(self.compensate_next(step))
            }
            Input::CompensationFailed { step, ref error } => {
                let s = self.step_mut(step)?;
                if s.state != StepState::Compensating {
                    return Err(self.unexpected(&input, Some(step)));
                }
                s.last_error = Some(error.clone());
                Ok(self.compensation_unclear(step, &policies[step].compensation, ctx))
            }
            Input::TimerFired { step } => {
                let s = self.step_mut(step)?;
                match s.state {
                    StepState::RetryWait => Ok(self.run(step)),
                    StepState::CompensationWait => {
                        s.state = StepState::Compensating;
                        s.compensation_attempts += 1;
                        s.wake_at_ms = None;
                        Ok(Decision::Compensate {
                            step,
                            attempt: s.compensation_attempts,
                        })
                    }
                    _ => Err(self.unexpected(&input, Some(step))),
                }
            }
            Input::Cancel { reason } => {
                if self.status == SagaStatus::Compensating {
                    // Already undoing: nothing more to do.
                    return Ok(self.decision());
                }
                if self.failure.is_none() {
                    self.failure = Some(format!("cancelled: {reason}"));
                }
                match self.decision() {
                    Decision::Run { .. } => {
                        self.cancel_requested = true;
                        Ok(Decision::AwaitRunning)
                    }
                    _ => Ok(self.begin_compensation()),
                }
            }
            Input::OperatorRetry => {
                if self.status != SagaStatus::Stuck {
                    return Err(self.unexpected(&input, None));
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
                Ok(Decision::Compensate {
                    step: i,
                    attempt: 1,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
