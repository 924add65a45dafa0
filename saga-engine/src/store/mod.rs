//! What the engine needs from storage, and its backends.
//!
//! The engine keeps one [`SagaRecord`] per saga (its state machine state,
//! its data, its definition and version) and an append-only history of
//! [`SagaEvent`]s. Every write returns only once it is durable: the engine
//! acknowledges nothing and acts on nothing before that.
//!
//! Updates are conditional on the record's `revision` (the stored revision
//! must be the new one minus one). In one process the engine runs one worker
//! per saga, so this only guards against bugs; a shared-database backend
//! (several engine processes, PostgreSQL) makes the same check the fencing
//! test of its leases, without any change to the state machine.

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod sled_store;

pub mod conformance;
mod query;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
pub use sled_store::Durability;
pub use sled_store::{
    flush_sled, open_sled_db, open_sled_db_with_cache, FlushGate, FlushHook, SledStore,
    DEFAULT_CACHE_BYTES, HWM_FILE,
};

pub use query::{BadCursor, PageCursor, SagaFilter, SagaPage, StatusCounts};

use crate::events::SagaEvent;
use crate::machine::{SagaState, SagaStatus};
use crate::SagaId;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Format version written in every record; bump it with a reader for the old shape.
pub const RECORD_FORMAT: u32 = 1;

/// The persisted form of one saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRecord {
    /// Revision, incremented by every update; a backend refuses an update
    /// whose revision is not the stored one plus one.
    pub revision: u64,
    /// Format version of this record ([`RECORD_FORMAT`]).
    pub v: u32,
    /// The saga.
    pub id: SagaId,
    /// The definition's name.
    pub definition: String,
    /// The definition's version.
    pub version: u32,
    /// The key the saga was started with, if any.
    pub idempotency_key: Option<String>,
    /// Hash of the input the saga was started with (to tell a replay of
    /// the same start from a conflicting reuse of its key).
    pub input_fingerprint: u64,
    /// Sequence number the next history event gets.
    pub next_seq: u64,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Last update time, ms since the Unix epoch.
    pub updated_at_ms: u64,
    /// The state machine's state.
    pub state: SagaState,
    /// The saga's data, as JSON.
    pub data: serde_json::Value,
    /// Who owns the saga, in a store shared by several engine processes
    /// ([`Store::is_shared`]); `None` in a single-process store.
    #[serde(default)]
    pub lease: Option<Lease>,
    /// Search attributes (`name -> value`) the definition derived from the
    /// data at creation; backends index them for [`Store::list_page`].
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// Ownership of a saga by one engine process, for a bounded time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The owning engine process.
    pub owner: String,
    /// The fencing token: every claim increments it, and a shared store
    /// refuses an update carrying an older one, so a stale owner that wakes
    /// up late cannot record a step a new owner has moved past.
    pub generation: u64,
    /// When the lease runs out unless renewed, ms since the Unix epoch.
    pub expires_at_ms: u64,
}

impl SagaRecord {
    /// The saga's status, [`SagaStatus::Paused`] while an operator has it
    /// paused (what stores index and list by).
    pub fn status(&self) -> SagaStatus {
        self.state.visible_status()
    }

    /// True while the saga is overdue: its deadline passed after the pivot
    /// (so it goes on, late) and it has not finished yet (it is running or
    /// paused). What [`SagaFilter::overdue`] lists; a stuck saga is listed
    /// as stuck instead. The flag never clears, so a saga leaves this set
    /// only by finishing.
    pub fn is_overdue(&self) -> bool {
        self.state.overdue && !self.status().is_terminal()
    }

    /// The data decoded as `D`.
    pub fn data_as<D: serde::de::DeserializeOwned>(&self) -> Result<D, serde_json::Error> {
        D::deserialize(&self.data)
    }
}

/// Result of [`Store::list_resumable`].
#[derive(Debug, Clone, Default)]
pub struct Resumable {
    /// Sagas to resume at once.
    pub now: Vec<SagaRecord>,
    /// Sagas in a durable wait: their id and when to wake them.
    pub parked: Vec<(SagaId, u64)>,
}

/// Result of [`Store::create`].
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    /// The record was written.
    Created,
    /// The idempotency key already names this saga; nothing was written.
    Existing(Box<SagaRecord>),
    /// The idempotency key named a saga that finished and was purged by
    /// retention; the key is retired until its own window ends. Nothing
    /// was written.
    Retired {
        /// When the saga it named was purged, ms since the Unix epoch.
        purged_at_ms: u64,
    },
}

/// A storage failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend's IO failed (disk full, write error). The operation did
    /// not happen durably; sled needs a restart after this.
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// A stored record does not decode.
    #[error("stored record {key} is corrupt: {reason}")]
    Corrupt {
        /// Which record.
        key: String,
        /// The decode error.
        reason: String,
    },
    /// An update's revision does not follow the stored one, or (shared
    /// stores) its lease is no longer the stored one: someone else moved
    /// the saga, or it does not exist.
    #[error("saga {id}: expected stored revision {expected}, found {found:?}")]
    Conflict {
        /// The saga.
        id: SagaId,
        /// Revision the update expected to replace.
        expected: u64,
        /// Revision found, if the saga exists.
        found: Option<u64>,
    },
    /// The store lost data it had acknowledged (a damaged file): it refuses
    /// to run on it.
    #[error("the saga store in {path} is damaged: {detail}")]
    Damaged {
        /// The data directory.
        path: String,
        /// What was found.
        detail: String,
    },
    /// A record with this id already exists.
    #[error("saga {0} already exists")]
    AlreadyExists(SagaId),
    /// The backend does not offer this operation.
    #[error("this store does not support {0}")]
    Unsupported(&'static str),
}

/// Storage of saga records and their histories. Every mutating call returns
/// only after its effect is durable.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes a new record and its first events, unless its idempotency key
    /// already names a saga, in which case nothing is written and that saga
    /// is returned. Atomic against concurrent creates with the same key.
    async fn create(
        &self,
        record: &SagaRecord,
        events: &[SagaEvent],
    ) -> Result<CreateOutcome, StoreError>;

    /// Replaces a record (whose `revision` must be the stored one plus one)
    /// and appends `events` to its history, atomically. When the status
    /// changes, the saga's status count moves and its search attributes
    /// (`record.attributes`) are re-indexed, crash-safely with it; an update
    /// that keeps the status leaves the attribute index as it was.
    async fn update(&self, record: &SagaRecord, events: &[SagaEvent]) -> Result<(), StoreError>;

    /// Reads one record.
    async fn get(&self, id: &SagaId) -> Result<Option<SagaRecord>, StoreError>;

    /// The saga an idempotency key names, if any.
    async fn find_by_key(&self, key: &str) -> Result<Option<SagaId>, StoreError>;

    /// A saga's history, in order.
    async fn history(&self, id: &SagaId) -> Result<Vec<SagaEvent>, StoreError>;

    /// Every saga that is not terminal (`Running`, `Compensating`,
    /// `Paused`): what a reopened engine must resume (a paused one is
    /// loaded and stays parked until an operator resumes it).
    async fn list_active(&self) -> Result<Vec<SagaRecord>, StoreError>;

    /// What a reopened engine must do: the non-terminal sagas to resume
    /// now, and those parked in a durable wait, as (id, wake time) only, so
    /// that a store full of waiting sagas opens without loading them. The
    /// default derives both from [`Store::list_active`].
    async fn list_resumable(&self) -> Result<Resumable, StoreError> {
        let mut out = Resumable::default();
        for r in self.list_active().await? {
            match r.state.parked_until() {
                Some(t) => out.parked.push((r.id.clone(), t)),
                None => out.now.push(r),
            }
        }
        Ok(out)
    }

    /// Sagas, oldest first, optionally only those with `status`, at most `limit`.
    async fn list(
        &self,
        status: Option<SagaStatus>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError>;

    /// One page of sagas matching `filter`, newest first (by creation
    /// time, then id), starting after `cursor` (from the previous page's
    /// [`SagaPage::next`]), at most `limit`. A record whose create never
    /// finished (its idempotency key does not name it) is not listed.
    ///
    /// Backends answer from indexes, reading index entries and the page's
    /// records, never every saga. The default (for a backend without such
    /// indexes) reads every record through [`Store::list`].
    async fn list_page(
        &self,
        filter: &SagaFilter,
        cursor: Option<&PageCursor>,
        limit: usize,
    ) -> Result<SagaPage, StoreError> {
        let mut all: Vec<SagaRecord> = self
            .list(None, usize::MAX)
            .await?
            .into_iter()
            .filter(|r| filter.matches(r))
            .filter(|r| cursor.is_none_or(|c| c.precedes(r.created_at_ms, &r.id)))
            .collect();
        all.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
        all.truncate(limit.saturating_add(1));
        Ok(SagaPage::from_matches(all, limit))
    }

    /// Sagas in the store by status name. Backends keep counters that are
    /// exact after a crash (changed in the same atomic write as the status,
    /// or journaled with it and replayed at open) and answer without
    /// reading records; the default (for a backend
    /// without them) counts every record through [`Store::list`].
    async fn status_counts(&self) -> Result<StatusCounts, StoreError> {
        let mut counts = StatusCounts::new();
        for r in self.list(None, usize::MAX).await? {
            *counts.entry(r.status().as_str().to_string()).or_default() += 1;
        }
        Ok(counts)
    }

    /// The definitions an operator has paused as a whole, with who paused
    /// each, why and when: sagas of such a definition started later are
    /// created paused. The default (a backend without the flag) holds none.
    async fn definition_pauses(
        &self,
    ) -> Result<std::collections::BTreeMap<String, crate::machine::PauseMark>, StoreError> {
        Ok(Default::default())
    }

    /// Sets (`Some`) or clears (`None`) the pause flag of `definition`,
    /// durably before it returns.
    async fn set_definition_pause(
        &self,
        _definition: &str,
        _mark: Option<&crate::machine::PauseMark>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("a persisted definition pause"))
    }

    /// True when several engine processes share this store: the engine
    /// then owns sagas by lease ([`Store::claim`], [`Store::renew`]) and
    /// `update` also checks the record's lease (owner and generation).
    fn is_shared(&self) -> bool {
        false
    }

    /// Claims up to `limit` non-terminal sagas whose lease is absent or
    /// expired at `now_ms`, for `owner` until `now_ms + ttl_ms`, each with
    /// its lease generation incremented; returns them with their new lease.
    /// Sagas another claimer is claiming at the same moment are skipped.
    /// Single-process stores have no leases and return nothing.
    async fn claim(
        &self,
        _owner: &str,
        _now_ms: u64,
        _ttl_ms: u64,
        _limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        Ok(Vec::new())
    }

    /// Extends to `now_ms + ttl_ms` the leases `owner` still holds at the
    /// given generations; returns the sagas whose lease it lost.
    async fn renew(
        &self,
        _owner: &str,
        _leases: &[(SagaId, u64)],
        _now_ms: u64,
        _ttl_ms: u64,
    ) -> Result<Vec<SagaId>, StoreError> {
        Ok(Vec::new())
    }

    /// Gives up `owner`'s leases on `ids` at once (graceful shutdown), so
    /// other processes can claim them without waiting for expiry.
    async fn release(&self, _owner: &str, _ids: &[SagaId]) -> Result<(), StoreError> {
        Ok(())
    }

    /// Finished sagas (`Completed`, `Compensated`; never `Stuck` or
    /// running ones) whose last update is before `before_ms`, oldest
    /// first, at most `limit`: what retention may purge. Reads an index of
    /// finish times, not every record.
    async fn finished_before(
        &self,
        _before_ms: u64,
        _limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        Err(StoreError::Unsupported("retention"))
    }

    /// Deletes the given sagas, record and history, if they are finished
    /// (others are left alone), retiring their idempotency keys as of
    /// `now_ms`: a create with a retired key gets
    /// [`CreateOutcome::Retired`] until [`Store::forget_keys`] forgets it.
    /// A crash part-way leaves each saga whole or gone (its key retired
    /// first), never a key naming a missing saga. Returns how many it
    /// deleted.
    async fn purge(&self, _ids: &[SagaId], _now_ms: u64) -> Result<usize, StoreError> {
        Err(StoreError::Unsupported("retention"))
    }

    /// Forgets up to `limit` keys retired before `before_ms`; after that a
    /// create with such a key starts a new saga. Returns how many.
    async fn forget_keys(&self, _before_ms: u64, _limit: usize) -> Result<usize, StoreError> {
        Err(StoreError::Unsupported("retention"))
    }

    /// Sagas in the store now (created and not purged), if the backend
    /// keeps the count without scanning.
    fn saga_count(&self) -> Option<u64> {
        None
    }

    /// A durability barrier: returns once every write this store has
    /// applied so far (including other callers' writes still waiting for
    /// their flush) is durable, or fails if it cannot be made so. Call it
    /// before acknowledging anything read from the store (a replayed
    /// idempotency key found with [`Store::find_by_key`]): a read may see a
    /// write that a crash would still lose. Backends whose every write is
    /// durable on return (memory, PostgreSQL) need nothing.
    async fn durable(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// How many times the backend made its writes durable (group commit
    /// shares one among many writes). 0 for backends without flushes.
    fn flush_count(&self) -> u64 {
        0
    }
}

/// 64-bit FNV-1a: a stable hash (unlike `std`'s) for input fingerprints.
pub(crate) fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
