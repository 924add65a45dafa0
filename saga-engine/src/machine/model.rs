//! The machine's vocabulary: statuses, step states, inputs, decisions,
//! step classes and kinds, and the errors of a refused input. Persisted
//! types keep their old shape readable (new fields default when absent).

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
    /// A durable wait (for a signal, or a sleep) is under way until
    /// `wake_at_ms`; no worker holds the saga meanwhile.
    Waiting,
    /// A step that may only move forward (the pivot in doubt, or a
    /// retriable step after it) failed past its policy: the saga is stuck
    /// on it, and an operator retry runs it again (never compensates).
    StuckForward,
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
    /// The parallel group the step belongs to, if any: consecutive steps
    /// with the same group run concurrently as one position of the saga.
    /// Absent in records written before groups (and for ungrouped steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
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
    /// Signals received, in arrival order: kept before their wait begins
    /// (early signals), and remembered by id afterwards so that a repeated
    /// delivery is recognised. Absent in records written before waits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<ReceivedSignal>,
    /// The saga's overall deadline, ms since the Unix epoch, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// True once the deadline has been seen to pass (either compensation
    /// began because of it, or, past the pivot, the saga was flagged overdue).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deadline_passed: bool,
    /// The deadline passed after the pivot: the saga keeps going forward
    /// but is late.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overdue: bool,
}

/// A signal delivered to a saga ([`Input::Signal`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedSignal {
    /// The sender's id for this signal: a second delivery with the same id
    /// is a duplicate and changes nothing.
    pub id: String,
    /// The signal's name (what a wait step waits for).
    pub name: String,
    /// The payload; the runtime moves it into the saga's data when a wait
    /// consumes the signal, and leaves `null` here.
    pub payload: serde_json::Value,
    /// The wait step that consumed it, once one has.
    pub consumed_by: Option<usize>,
}

/// What a step is, for the rules of the saga model (enforced by the
/// definition builder; the machine trusts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepClass {
    /// Has a compensation, runs before the pivot (the default).
    Compensatable,
    /// Before the pivot, with nothing to undo (reads, checks, waits).
    ReadOnly,
    /// The point of no return: once it has succeeded the saga only moves
    /// forward. It has no compensation; if it is rejected, the steps before
    /// it are compensated.
    Pivot,
    /// After the pivot: no compensation, retried until it succeeds, and
    /// parked as stuck-forward past its policy.
    Retriable,
}

/// What running a step means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// Calls the step's code.
    Action,
    /// Waits for the signal `name`; rejected (timed out) after `timeout_ms`.
    Signal {
        /// The signal's name.
        name: String,
        /// How long to wait, in milliseconds.
        timeout_ms: u64,
    },
    /// Sleeps for `for_ms`.
    Sleep {
        /// How long, in milliseconds.
        for_ms: u64,
    },
    /// Sleeps until the instant `at_ms` (ms since the Unix epoch; one in
    /// the past wakes at once). The definition computes it from the
    /// saga's data and the runtime passes it in the policy of every
    /// transition; the wake time is fixed in the state when the sleep
    /// begins, so later changes of the data do not move it.
    SleepUntil {
        /// When to wake, ms since the Unix epoch.
        at_ms: u64,
    },
}

/// What the machine needs to know of one step: its retry policies, its
/// class and its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPolicy {
    /// Policy of the forward action.
    pub forward: RetryPolicy,
    /// Policy of the compensation.
    pub compensation: RetryPolicy,
    /// Compensatable, read-only, pivot or retriable.
    pub class: StepClass,
    /// An action, a wait for a signal, or a sleep.
    pub kind: StepKind,
}

impl StepPolicy {
    /// An action step of class `Compensatable` with these policies.
    pub fn action(forward: RetryPolicy, compensation: RetryPolicy) -> StepPolicy {
        StepPolicy {
            forward,
            compensation,
            class: StepClass::Compensatable,
            kind: StepKind::Action,
        }
    }
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
    /// A signal arrived from outside ([`ReceivedSignal`]).
    Signal {
        /// The sender's id for it (deduplication).
        id: String,
        /// Its name.
        name: String,
        /// Its payload.
        payload: serde_json::Value,
    },
    /// The saga's deadline may have passed (the runtime's timer for it
    /// fired). Every input checks the deadline; this one only wakes the saga.
    DeadlineCheck,
    /// A caller asked to abandon the saga and undo what was done.
    Cancel {
        /// Why.
        reason: String,
    },
    /// An operator asks a stuck saga to try again: its compensation, or
    /// (stuck forward) its forward step.
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
    /// A durable wait: the saga needs no worker until `until_ms` (then feed
    /// [`Input::TimerFired`] for `step`) or until a signal arrives.
    Wait {
        /// Step index.
        step: usize,
        /// Wake time, milliseconds since the Unix epoch.
        until_ms: u64,
    },
    /// Run the members `first..end` of a parallel group concurrently: every
    /// member whose state is `Running` (its attempt is counted in the
    /// state), and a member in `RetryWait` once its `wake_at_ms` has come
    /// (feed [`Input::TimerFired`] for it, then run it). Each member's
    /// result is fed back as it arrives; members still running when
    /// [`SagaState::cancel_requested`] is set should be told to stop.
    RunGroup {
        /// The group's first step index.
        first: usize,
        /// One past its last step index.
        end: usize,
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
    /// A signal that cannot be accepted: no step waits for it, its wait is
    /// over (timed out or already received), or the saga is compensating.
    #[error("signal {name:?} refused: {reason}")]
    SignalRefused {
        /// The signal's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The saga has passed its pivot: it can no longer be cancelled.
    #[error("the saga is past its pivot ({pivot}): it only moves forward and cannot be cancelled")]
    PastPivot {
        /// The pivot step's name.
        pivot: String,
    },
    /// The policies do not match the steps.
    #[error("{policies} policies given for {steps} steps")]
    PolicyMismatch {
        /// Policies given.
        policies: usize,
        /// Steps in the state.
        steps: usize,
    },
}
