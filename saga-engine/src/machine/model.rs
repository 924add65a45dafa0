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
    /// An operator paused it: no step starts and no timer fires until an
    /// operator resumes it (a step already under way finishes and its
    /// result is recorded). Not terminal. Only ever reported (by
    /// [`SagaState::visible_status`]): [`SagaState::status`] keeps where
    /// the saga stood (running or compensating), which it resumes.
    Paused,
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
            SagaStatus::Paused => "paused",
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
            "paused" => SagaStatus::Paused,
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
    /// For a parallel group's member that succeeded: the top-level data
    /// fields it changed (`""` for data that is not an object). The
    /// runtime keeps it, so that a sibling changing one of them is
    /// refused even after a restart (see `engine::group`); the machine
    /// never reads it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wrote: Vec<String>,
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
    /// Set while an operator has the saga paused. Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<PauseMark>,
    /// The operator operations applied to this saga, oldest first, by
    /// operation id (what makes an operation idempotent). Absent in older
    /// records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<AppliedOperation>,
    /// The saga this one re-runs, if it was started by a re-run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
    /// The sagas started to re-run this one, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reruns: Vec<String>,
}

/// Who paused a saga, why and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseMark {
    /// The operator's name, as the caller gave it.
    pub operator: String,
    /// Why.
    pub reason: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

/// An operator operation recorded in a saga's state (see
/// [`SagaState::operations`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedOperation {
    /// The caller's id for the operation.
    pub id: String,
    /// What it was (`pause`, `resume`, `retry_now`, `skip`,
    /// `force_compensate`, `rerun`).
    pub operation: String,
    /// A hash of the operation and its arguments: the same id with another
    /// operation (or other arguments) is refused.
    pub fingerprint: u64,
    /// Who.
    pub operator: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The saga a re-run started, if this was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_saga: Option<String>,
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
    /// An operator pauses the saga (see [`SagaStatus::Paused`]).
    Pause(PauseMark),
    /// An operator lifts a pause: the saga goes on from where it stood.
    Unpause,
    /// An operator wakes a saga waiting in backoff (a forward retry or a
    /// compensation retry) at once.
    RetryNow,
    /// An operator did `step` by hand: it counts as succeeded without
    /// running (the runtime merges the supplied result into the data).
    /// Only before the pivot, for a step that has not succeeded and is not
    /// running.
    Skip {
        /// Step index.
        step: usize,
    },
    /// An operator forces compensation: a cancel that also applies to a
    /// saga stuck forward on a pivot that never succeeded (the operator
    /// found that it took no effect).
    ForceCompensate {
        /// Why.
        reason: String,
    },
    /// A fresh saga starts at `step`, the steps before it counting as
    /// succeeded (a re-run of another saga from a step).
    StartAt {
        /// Step index.
        step: usize,
    },
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
    /// Paused by an operator, nothing under way: the saga needs no worker
    /// and no timer until it is resumed.
    Paused,
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
    /// An operator operation that does not apply to the saga as it stands.
    #[error("{0}")]
    Refused(Refusal),
    /// The policies do not match the steps.
    #[error("{policies} policies given for {steps} steps")]
    PolicyMismatch {
        /// Policies given.
        policies: usize,
        /// Steps in the state.
        steps: usize,
    },
}

/// Why an operator operation was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The saga has finished.
    #[error("the saga has finished as {0}")]
    Finished(SagaStatus),
    /// Pause of a saga already paused.
    #[error("the saga is already paused")]
    AlreadyPaused,
    /// Resume of a saga that is not paused.
    #[error("the saga is not paused")]
    NotPaused,
    /// The operation needs the saga to run: resume it first.
    #[error("the saga is paused: resume it first")]
    Paused,
    /// Retry-now of a saga that waits in no backoff.
    #[error("no step is waiting in backoff")]
    NotInBackoff,
    /// The saga is already compensating.
    #[error("the saga is already compensating")]
    Compensating,
    /// The saga is past its pivot (or on it, in doubt): it only moves forward.
    #[error("the saga is past its pivot ({pivot}): it only moves forward")]
    PastPivot {
        /// The pivot's name.
        pivot: String,
    },
    /// Skip of the pivot or of a step after it.
    #[error("step {step} is not before the pivot ({pivot}): only a step before the pivot can be skipped")]
    NotBeforePivot {
        /// The step's name.
        step: String,
        /// The pivot's name.
        pivot: String,
    },
    /// Skip of a step that already succeeded.
    #[error("step {0} has already succeeded")]
    AlreadySucceeded(String),
    /// Skip of a step whose attempt is under way.
    #[error("step {0} is running: pause the saga and let it return first")]
    StepRunning(String),
    /// Skip of a step in a state that cannot be skipped.
    #[error("step {step} is {state:?}: it cannot be skipped")]
    NotSkippable {
        /// The step's name.
        step: String,
        /// Its state.
        state: StepState,
    },
    /// Skip of a step the saga does not stand on.
    #[error("step {step} is not the step the saga stands on ({}): pause the saga and skip it once it waits before it", .current.as_deref().unwrap_or("none"))]
    NotCurrent {
        /// The step's name.
        step: String,
        /// The step it stands on, if any.
        current: Option<String>,
    },
    /// A step index out of range.
    #[error("there is no step {step} (the saga has {len})")]
    NoSuchStep {
        /// The index given.
        step: usize,
        /// Number of steps.
        len: usize,
    },
    /// A start inside a parallel group.
    #[error("step {0} is inside a parallel group: start at the group's first member")]
    InsideGroup(String),
    /// No step has this name.
    #[error("the saga has no step named {0:?}")]
    UnknownStep(String),
    /// A retry of a saga that is not stuck.
    #[error("only a stuck saga can be retried (this one is {0})")]
    NotStuck(SagaStatus),
    /// A re-run of a saga that did not end compensated or stuck.
    #[error("only a saga that ended compensated or stuck can be re-run (this one is {0})")]
    NotRerunnable(SagaStatus),
    /// A skip's supplied result does not fit the saga's data.
    #[error("the result supplied for step {step} does not fit the saga's data: {reason}")]
    InvalidResult {
        /// The step's name.
        step: String,
        /// What is wrong.
        reason: String,
    },
    /// An operation whose arguments are malformed.
    #[error("{0}")]
    BadRequest(String),
    /// A stuck saga that force-compensation cannot help.
    #[error("the saga is stuck compensating: retry it instead")]
    StuckCompensating,
}
