//! # saga-engine: durable sagas on sled
//!
//! Declare a saga as ordered steps, each with a compensation; the engine
//! runs it, writes every transition to the store before acting on it, and
//! after a crash or `kill -9` resumes every saga that was in flight.
//!
//! ## The promises
//!
//! 1. **Write before act.** A step's intent is durable before its action
//!    runs; its result is durable before the next step starts. Nothing
//!    acknowledged is lost in a crash.
//! 2. **At-least-once steps, effectively-once effects.** A step may run again
//!    after a crash or timeout. Every call carries a stable idempotency key
//!    (`"{saga_id}:{step}"`) so a participant applies its effect once.
//! 3. **Every saga ends** in exactly one terminal status: `Completed`,
//!    `Compensated` (every completed or in-doubt step compensated, newest
//!    first) or `Stuck` (a compensation kept failing: parked, visible,
//!    retryable with [`Engine::retry`]).
//! 4. **Resume after crash.** Opening the engine on a store resumes every
//!    non-terminal saga, including pending retry timers.
//! 5. **Idempotent start.** Starting with a key that already exists returns
//!    the existing saga.
//! 6. **Versioned definitions.** A saga records its definition's name and
//!    version; one whose definition is not registered is reported by
//!    [`Engine::unregistered`] and left untouched.
//! 7. **Bad input is refused, never half-applied**, with a typed [`Error`].
//!
//! Scope of durability: sled 0.34 keeps what was flushed across a process
//! crash (`kill -9`, panic, OOM kill). Its flush uses `sync_file_range`,
//! which does not promise survival of a power loss.
//!
//! ## Lifecycle: retention and idempotency keys
//!
//! By default every saga is kept. With [`EngineBuilder::retention`] and a
//! [`Retention`] policy, a background task purges sagas that ended
//! `Completed` or `Compensated` more than [`Retention::sagas`] ago, record
//! and history, in small batches between which running sagas' writes go
//! first; `Stuck` and running sagas are never purged. A purged saga's
//! idempotency key is *retired*, not forgotten: until [`Retention::keys`]
//! after the saga finished, a start with it fails with
//! [`Error::KeyRetired`], rather than replaying a result that is gone or
//! starting the order a second time. After the key window the key is
//! forgotten and a start with it starts a new saga, so choose the key
//! window longer than any client retries a request. A purge interrupted by
//! a crash leaves each saga whole or gone, and its key naming it or
//! retired, never naming nothing (`tests/purge_crash.rs` kills it to
//! check). [`Engine::wait`] on a saga that ended and was purged answers
//! [`Error::NotFound`]. [`Retention::export_to`] appends each purged saga
//! to a JSON Lines file, synced before it is deleted (at least once).
//!
//! Opening the engine reads the running sagas and one high-water mark, not
//! every record: its cost follows what is in flight, not what has ever run.
//!
//! ## Example
//!
//! ```
//! use saga_engine::{Engine, MemoryStore, SagaDefinition, SagaStatus, Step, StepContext, StepError};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Trip { hotel: Option<String> }
//!
//! struct BookHotel;
//! #[saga_engine::async_trait]
//! impl Step<Trip> for BookHotel {
//!     async fn run(&self, ctx: &StepContext, trip: &mut Trip) -> Result<(), StepError> {
//!         trip.hotel = Some(format!("room for {}", ctx.idempotency_key));
//!         Ok(())
//!     }
//!     async fn compensate(&self, _: &StepContext, _: &Trip) -> Result<(), StepError> {
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let def = SagaDefinition::builder("trip", 1).step("hotel", BookHotel).build().unwrap();
//! let engine = Engine::builder(MemoryStore::new()).register(def).open().await.unwrap();
//! let id = engine.start("trip", &Trip { hotel: None }, Some("trip-1")).await.unwrap();
//! let done = engine.wait(&id).await.unwrap();
//! assert_eq!(done.status(), SagaStatus::Completed);
//! assert!(done.data_as::<Trip>().unwrap().hotel.is_some());
//! # });
//! ```

pub mod clock;
mod definition;
mod engine;
mod error;
pub mod events;
pub mod machine;
mod retention;
pub mod retry;
#[doc(hidden)]
pub mod sabotage;
mod search;
mod step_fn;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod typed;

pub use async_trait::async_trait;
pub use clock::{Clock, ManualClock, SystemClock, TokioClock};
pub use definition::{
    SagaDefinition, SagaDefinitionBuilder, Step, StepContext, StepError, StepOrderProblem,
};
pub use engine::{
    BulkOutcome, Engine, EngineBuilder, Operation, OperationOutcome, OperationRequest,
    SignalOutcome, UnregisteredSaga,
};
pub use error::Error;
pub use events::{EventKind, SagaEvent};
pub use machine::{SagaStatus, StepClass, StepState};
pub use retention::{PurgeReport, Retention};
pub use retry::RetryPolicy;
pub use search::MAX_ATTRIBUTE_BYTES;
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
pub use store::{MemoryStore, Resumable, SagaRecord, SledStore, Store, StoreError};
pub use typed::{Outcome, SagaType};

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies a saga. Generated ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SagaId(String);

impl SagaId {
    /// A new id for a saga created at `now_ms`: 12 hex digits of time, then
    /// 16 random ones.
    pub fn generate(now_ms: u64) -> SagaId {
        SagaId::from_parts(now_ms, rand::random())
    }

    /// The id made of a creation time and 64 random bits.
    pub fn from_parts(now_ms: u64, random: u64) -> SagaId {
        SagaId(format!("{:012x}{:016x}", now_ms & 0xffff_ffff_ffff, random))
    }

    /// Parses an id from text (e.g. a URL): 1 to 64 ASCII letters, digits,
    /// `-` or `_`.
    pub fn parse(s: &str) -> Option<SagaId> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| SagaId(s.to_string()))
    }

    /// Wraps a string without checking it (stores reading their own keys).
    pub fn from_raw(s: String) -> SagaId {
        SagaId(s)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
