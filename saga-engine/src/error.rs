//! The errors a caller of the engine can match on.

use crate::machine::{MachineError, Refusal, SagaStatus};
use crate::store::StoreError;
use crate::SagaId;

/// Everything the engine's public API can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No definition with this name (and version) is registered.
    #[error("no saga definition named {name:?}{} is registered", .version.map(|v| format!(" at version {v}")).unwrap_or_default())]
    UnknownDefinition {
        /// The name asked for.
        name: String,
        /// The version asked for, if one was.
        version: Option<u32>,
    },
    /// A definition was registered twice, or is malformed.
    #[error("invalid saga definition {name:?}: {reason}")]
    InvalidDefinition {
        /// The definition's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The definition's steps break the model's order (see
    /// [`crate::SagaDefinitionBuilder`]): a second pivot, a compensatable
    /// step after the pivot, a retriable one before it, a policy set before
    /// any step.
    #[error("saga definition {name:?}, step {step:?}: {problem}")]
    StepOrder {
        /// The definition's name.
        name: String,
        /// The step at fault.
        step: String,
        /// What is wrong.
        problem: crate::definition::StepOrderProblem,
    },
    /// A signal could not be delivered: the saga does not wait for it, its
    /// wait is over (timed out, already received), the saga has finished,
    /// or the payload does not fit.
    #[error("saga {id}: signal {name:?} refused: {reason}")]
    SignalRefused {
        /// The saga.
        id: SagaId,
        /// The signal's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The saga input could not be serialized or deserialized.
    #[error("saga data of {definition:?} does not (de)serialize: {reason}")]
    InvalidInput {
        /// The definition's name.
        definition: String,
        /// The serde error.
        reason: String,
    },
    /// The idempotency key was already used to start a saga with different input.
    #[error("idempotency key {key:?} was already used by saga {existing} with different input")]
    IdempotencyConflict {
        /// The key.
        key: String,
        /// The saga that owns it.
        existing: SagaId,
    },
    /// The idempotency key named a saga that finished and was purged by
    /// retention. The key stays retired for the key window (see
    /// [`crate::Retention`]): the old result is gone, and starting a new
    /// saga under it could repeat an order, so the start is refused. Use a
    /// new key.
    #[error("idempotency key {key:?} belonged to a saga that finished and was purged (at {purged_at_ms} ms); it cannot be reused: use a new key")]
    KeyRetired {
        /// The key.
        key: String,
        /// When its saga was purged, ms since the Unix epoch.
        purged_at_ms: u64,
    },
    /// No saga with this id exists.
    #[error("saga {0} not found")]
    NotFound(SagaId),
    /// The operation does not apply to the saga's current status.
    #[error("saga {id} is {status}: cannot {operation}")]
    InvalidState {
        /// The saga.
        id: SagaId,
        /// Its status.
        status: SagaStatus,
        /// What was asked.
        operation: &'static str,
    },
    /// The saga was started by a definition version this engine has not registered;
    /// it is left untouched.
    #[error("saga {id} belongs to definition {name:?} version {version}, which is not registered in this engine")]
    UnregisteredVersion {
        /// The saga.
        id: SagaId,
        /// Its definition's name.
        name: String,
        /// Its definition's version.
        version: u32,
    },
    /// An operator operation (see [`crate::Operation`]) that does not
    /// apply to the saga as it stands: skip after the pivot, resume of a
    /// saga that is not paused, ... Nothing changed.
    #[error("saga {id}: {operation} refused: {refusal}")]
    Refused {
        /// The saga.
        id: SagaId,
        /// The operation (`pause`, `resume`, ...).
        operation: &'static str,
        /// Why.
        refusal: Refusal,
    },
    /// The operation id was already used on this saga for another
    /// operation (or the same one with other arguments). Nothing changed.
    #[error("saga {id}: operation id {operation_id:?} was already used for {first}")]
    OperationIdReused {
        /// The saga.
        id: SagaId,
        /// The id.
        operation_id: String,
        /// The operation it was first used for.
        first: String,
    },
    /// The engine is shutting down and accepts no new work.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The storage failed; nothing that was acknowledged is lost, but the
    /// operation did not happen.
    #[error("storage error: {0}")]
    Store(#[from] StoreError),
    /// The persisted state and an input disagree (a bug or a corrupted record).
    #[error("state machine refused an input: {0}")]
    Machine(#[from] MachineError),
}
