//! What happened to a saga: the events persisted as its history and pushed to
//! subscribers (server-sent events, metrics).

use crate::machine::SagaStatus;
use crate::SagaId;
use serde::{Deserialize, Serialize};

/// One entry of a saga's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaEvent {
    /// The saga.
    pub saga_id: SagaId,
    /// Position in the saga's history, from 0, without gaps.
    pub seq: u64,
    /// When it happened, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The kinds of saga events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The saga was created.
    SagaStarted {
        /// Definition name.
        definition: String,
        /// Definition version.
        version: u32,
    },
    /// An attempt of a step began.
    StepStarted {
        /// Step name.
        step: String,
        /// 1-based attempt.
        attempt: u32,
    },
    /// A step succeeded.
    StepSucceeded {
        /// Step name.
        step: String,
        /// The attempt that succeeded.
        attempt: u32,
        /// How long the attempt took, in microseconds.
        duration_us: u64,
    },
    /// An attempt of a step failed.
    StepFailed {
        /// Step name.
        step: String,
        /// The attempt that failed.
        attempt: u32,
        /// The error.
        error: String,
        /// `retryable`, `timeout` or `rejected`.
        kind: String,
        /// When the next attempt runs, if one will.
        retry_at_ms: Option<u64>,
    },
    /// A compensation attempt began.
    CompensationStarted {
        /// Step name.
        step: String,
        /// 1-based attempt.
        attempt: u32,
    },
    /// A step's effect was undone.
    StepCompensated {
        /// Step name.
        step: String,
        /// The attempt that succeeded.
        attempt: u32,
    },
    /// A compensation attempt failed.
    CompensationFailed {
        /// Step name.
        step: String,
        /// The attempt that failed.
        attempt: u32,
        /// The error.
        error: String,
        /// When the next attempt runs, if one will.
        retry_at_ms: Option<u64>,
    },
    /// A durable wait began (for a signal, or a sleep); the saga needs no
    /// worker until `until_ms` or the signal.
    WaitStarted {
        /// Step name.
        step: String,
        /// The signal waited for, if it is a signal wait.
        signal: Option<String>,
        /// When the wait times out (or the sleep ends), ms since the Unix epoch.
        until_ms: u64,
    },
    /// A signal was accepted: consumed by a waiting step, or kept for a
    /// wait still to come.
    SignalReceived {
        /// The signal's name.
        name: String,
        /// The sender's id for it.
        signal_id: String,
        /// The wait step that took it, if one did at once.
        step: Option<String>,
    },
    /// A wait ended without its signal.
    WaitTimedOut {
        /// Step name.
        step: String,
    },
    /// The saga's deadline passed: before the pivot it compensates, after
    /// it (`overdue`) it goes on, late.
    DeadlinePassed {
        /// True when the saga was past its pivot and goes on.
        overdue: bool,
    },
    /// Cancellation was requested.
    CancelRequested {
        /// Why.
        reason: String,
    },
    /// The engine picked the saga up again after a restart.
    Resumed,
    /// An operator asked a stuck saga to retry its compensation.
    OperatorRetry,
    /// An operator operation was applied (see [`crate::Operation`]); the
    /// events it caused follow it.
    OperationApplied {
        /// The caller's id for the operation.
        operation_id: String,
        /// Which (`pause`, `resume`, `retry_now`, `skip`,
        /// `force_compensate`, `rerun`).
        operation: String,
        /// Who.
        operator: String,
        /// Why.
        reason: String,
    },
    /// An operator paused the saga: nothing new starts, no timer fires.
    SagaPaused {
        /// Who.
        operator: String,
        /// Why.
        reason: String,
    },
    /// An operator resumed a paused saga (not to be confused with
    /// [`EventKind::Resumed`], the pick-up after a restart).
    SagaUnpaused {
        /// Who.
        operator: String,
    },
    /// An operator did a step by hand: it counts as succeeded.
    StepSkipped {
        /// Step name.
        step: String,
        /// Who.
        operator: String,
    },
    /// This saga was started to re-run another from a step.
    RerunStarted {
        /// The saga it re-runs.
        original: SagaId,
        /// The step it starts at.
        from_step: String,
    },
    /// A re-run of this saga was started.
    RerunCreated {
        /// The new saga.
        rerun: SagaId,
        /// The step it starts at.
        from_step: String,
    },
    /// The saga reached a terminal status.
    SagaFinished {
        /// The status.
        status: SagaStatus,
        /// Why it compensated or got stuck, if it did.
        reason: Option<String>,
    },
}

impl EventKind {
    /// True for the events an operator watches the saga's life by:
    /// paused, resumed (by an operator), stuck, overdue, re-run, an
    /// operation applied.
    pub fn is_lifecycle(&self) -> bool {
        match self {
            EventKind::SagaPaused { .. }
            | EventKind::SagaUnpaused { .. }
            | EventKind::RerunStarted { .. }
            | EventKind::RerunCreated { .. }
            | EventKind::OperationApplied { .. } => true,
            EventKind::SagaFinished { status, .. } => *status == SagaStatus::Stuck,
            EventKind::DeadlinePassed { overdue } => *overdue,
            _ => false,
        }
    }
}

impl SagaEvent {
    /// True when this event ends the saga (for now: `Stuck` may be retried).
    pub fn is_terminal(&self) -> bool {
        matches!(self.kind, EventKind::SagaFinished { .. })
    }
}
