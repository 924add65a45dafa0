//! The embedded backend: one sled tree, made durable by group commit.
//!
//! Keys are prefixed by kind so that a record, its new history events and
//! its index entries go to disk in one atomic batch:
//! `s/{id}` the record, `h/{id}/{seq:be}` a history event, `a/{id}` the
//! active (non-terminal) index, `k/{key}` the idempotency index.
//!
//! sled 0.34 keeps only what was flushed across a `kill -9`, so no write is
//! reported done before a flush that started after it has finished. A
//! writer applies its batch, takes a ticket and waits until a flush covering
//! its ticket is done; writers that arrive during a flush share the next one
//! (group commit, led by one of the waiting writers).

use super::{CreateOutcome, SagaRecord, Store, StoreError};
use crate::events::SagaEvent;
use crate::machine::SagaStatus;
use crate::SagaId;
use async_trait::async_trait;
use serde::Deserialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

const TREE: &str = "saga_engine";

/// The sled backend (default).
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    commit: Arc<GroupCommit>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("flushes", &self.commit.flushes.load(Ordering::Relaxed))
            .finish()
    }
}

#[derive(Clone, Default)]
struct Mark {
    flushed: u64,
    error: Option<Arc<str>>,
}

/// Group commit without a thread of its own: the first writer that finds
/// no flush under way becomes the leader and flushes for everyone whose
/// write was applied before the flush began; the others wait for it, and
/// the first of them not covered leads the next flush. A lone writer
/// flushes at once, with no hand-off between threads.
struct GroupCommit {
    db: sled::Db,
    tickets: AtomicU64,
    leader: AtomicBool,
    done: watch::Sender<Mark>,
    flushes: AtomicU64,
}

impl GroupCommit {
    fn new(db: sled::Db) -> GroupCommit {
        GroupCommit {
            db,
            tickets: AtomicU64::new(0),
            leader: AtomicBool::new(false),
            done: watch::Sender::new(Mark::default()),
            flushes: AtomicU64::new(0),
        }
    }

    /// Flushes sled, blocking this thread, in the way the runtime allows.
    async fn flush_now(&self) -> sled::Result<usize> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| self.db.flush()),
            Ok(_) => {
                let db = self.db.clone();
                tokio::task::spawn_blocking(move || db.flush())
                    .await
                    .unwrap_or_else(|e| Err(sled::Error::ReportableBug(e.to_string())))
            }
            Err(_) => self.db.flush(),
        }
    }

    /// Returns once everything written before the call is durable.
    async fn durable(&self) -> Result<(), StoreError> {
        let mut rx = self.done.subscribe();
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        loop {
            {
                let m = rx.borrow_and_update();
                if m.flushed >= ticket {
                    return Ok(());
                }
                if let Some(e) = &m.error {
                    return Err(StoreError::Io(e.to_string()));
                }
            }
            if !self.leader.swap(true, Ordering::AcqRel) {
                // Every ticket issued so far belongs to a write already
                // applied to sled's memory, so this flush covers it.
                let target = self.tickets.load(Ordering::SeqCst);
                let result = self.flush_now().await;
                self.flushes.fetch_add(1, Ordering::Relaxed);
                // Step down before announcing, so that a waiter who saw a
                // flush under way is sure to see this announcement.
                self.leader.store(false, Ordering::Release);
                self.done.send_modify(|m| match &result {
                    Ok(_) => m.flushed = m.flushed.max(target),
                    Err(e) => {
                        tracing::error!(error = %e, "sled flush failed; the store must be reopened");
                        m.error = Some(Arc::from(e.to_string()));
                    }
                });
                continue;
            }
            if rx.changed().await.is_err() {
                return Err(StoreError::Io("the store was dropped".into()));
            }
        }
    }
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

fn record_key(id: &SagaId) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + id.as_str().len());
    k.extend_from_slice(b"s/");
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

fn active_key(id: &SagaId) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + id.as_str().len());
    k.extend_from_slice(b"a/");
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

fn history_prefix(id: &SagaId) -> Vec<u8> {
    let mut k = Vec::with_capacity(11 + id.as_str().len());
    k.extend_from_slice(b"h/");
    k.extend_from_slice(id.as_str().as_bytes());
    k.push(b'/');
    k
}

fn history_key(id: &SagaId, seq: u64) -> Vec<u8> {
    let mut k = history_prefix(id);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn idem_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + key.len());
    k.extend_from_slice(b"k/");
    k.extend_from_slice(key.as_bytes());
    k
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Our record types contain only strings, numbers and JSON values:
    // serializing them cannot fail.
    serde_json::to_vec(v).expect("saga records always serialize")
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

impl SledStore {
    /// Opens (or creates) a sled database in `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(path.as_ref())
            .open()
            .map_err(|e| StoreError::Io(format!("opening {}: {e}", path.as_ref().display())))?;
        SledStore::with_db(db)
    }

    /// Uses a tree of an already open database, so that participants can
    /// keep their own trees in the same data directory.
    pub fn with_db(db: sled::Db) -> Result<SledStore, StoreError> {
        let tree = db.open_tree(TREE).map_err(io)?;
        let commit = Arc::new(GroupCommit::new(db.clone()));
        Ok(SledStore { db, tree, commit })
    }

    /// The underlying database.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    fn scan_records(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<SagaRecord, StoreError>> + '_ {
        let is_index = prefix == b"a/";
        self.tree.scan_prefix(prefix).map(move |kv| {
            let (k, v) = kv.map_err(io)?;
            if is_index {
                let id = SagaId::from_raw(String::from_utf8_lossy(&k[2..]).into_owned());
                let rk = record_key(&id);
                let bytes = self
                    .tree
                    .get(&rk)
                    .map_err(io)?
                    .ok_or_else(|| StoreError::Corrupt {
                        key: String::from_utf8_lossy(&k).into_owned(),
                        reason: "active index names a missing record".into(),
                    })?;
                decode(&rk, &bytes)
            } else {
                decode(&k, &v)
            }
        })
    }
}

#[async_trait]
impl Store for SledStore {
    async fn create(
        &self,
        record: &SagaRecord,
        events: &[SagaEvent],
    ) -> Result<CreateOutcome, StoreError> {
        let rk = record_key(&record.id);
        let rv = encode(record);
        let ik = record.idempotency_key.as_deref().map(idem_key);
        let evs: Vec<(Vec<u8>, Vec<u8>)> = events
            .iter()
            .map(|e| (history_key(&record.id, e.seq), encode(e)))
            .collect();
        let active = !record.status().is_terminal();
        let result = self.tree.transaction(|tx| {
            if let Some(ik) = &ik {
                if let Some(existing) = tx.get(ik)? {
                    return Err(ConflictableTransactionError::Abort(Some(existing)));
                }
                tx.insert(ik.as_slice(), record.id.as_str().as_bytes())?;
            }
            if tx.get(&rk)?.is_some() {
                return Err(ConflictableTransactionError::Abort(None));
            }
            tx.insert(rk.as_slice(), rv.as_slice())?;
            if active {
                tx.insert(active_key(&record.id), &[][..])?;
            }
            for (k, v) in &evs {
                tx.insert(k.as_slice(), v.as_slice())?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                self.commit.durable().await?;
                Ok(CreateOutcome::Created)
            }
            Err(TransactionError::Abort(Some(existing))) => {
                let id = SagaId::from_raw(String::from_utf8_lossy(&existing).into_owned());
                let rec = self.get(&id).await?.ok_or_else(|| StoreError::Corrupt {
                    key: format!("idempotency key {:?}", record.idempotency_key),
                    reason: format!("names missing saga {id}"),
                })?;
                // The existing saga may have been created by a write that is
                // not flushed yet: make it durable before reporting it.
                self.commit.durable().await?;
                Ok(CreateOutcome::Existing(Box::new(rec)))
            }
            Err(TransactionError::Abort(None)) => Err(StoreError::AlreadyExists(record.id.clone())),
            Err(TransactionError::Storage(e)) => Err(io(e)),
        }
    }

    async fn update(&self, record: &SagaRecord, events: &[SagaEvent]) -> Result<(), StoreError> {
        #[derive(Deserialize)]
        struct Rev {
            revision: u64,
        }
        let rk = record_key(&record.id);
        let found = match self.tree.get(&rk).map_err(io)? {
            Some(bytes) => Some(decode::<Rev>(&rk, &bytes)?.revision),
            None => None,
        };
        if found != Some(record.revision.wrapping_sub(1)) {
            return Err(StoreError::Conflict {
                id: record.id.clone(),
                expected: record.revision.wrapping_sub(1),
                found,
            });
        }
        let mut batch = sled::Batch::default();
        batch.insert(rk, encode(record));
        for e in events {
            batch.insert(history_key(&record.id, e.seq), encode(e));
        }
        if record.status().is_terminal() {
            batch.remove(active_key(&record.id));
        } else {
            batch.insert(active_key(&record.id), &[][..]);
        }
        self.tree.apply_batch(batch).map_err(io)?;
        self.commit.durable().await
    }

    async fn get(&self, id: &SagaId) -> Result<Option<SagaRecord>, StoreError> {
        let rk = record_key(id);
        match self.tree.get(&rk).map_err(io)? {
            Some(bytes) => Ok(Some(decode(&rk, &bytes)?)),
            None => Ok(None),
        }
    }

    async fn find_by_key(&self, key: &str) -> Result<Option<SagaId>, StoreError> {
        Ok(self
            .tree
            .get(idem_key(key))
            .map_err(io)?
            .map(|v| SagaId::from_raw(String::from_utf8_lossy(&v).into_owned())))
    }

    async fn history(&self, id: &SagaId) -> Result<Vec<SagaEvent>, StoreError> {
        self.tree
            .scan_prefix(history_prefix(id))
            .map(|kv| {
                let (k, v) = kv.map_err(io)?;
                decode(&k, &v)
            })
            .collect()
    }

    async fn list_active(&self) -> Result<Vec<SagaRecord>, StoreError> {
        self.scan_records(b"a/").collect()
    }

    async fn list(
        &self,
        status: Option<SagaStatus>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        let mut out = Vec::new();
        for r in self.scan_records(b"s/") {
            let r = r?;
            if status.is_none_or(|s| r.status() == s) {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn flush_count(&self) -> u64 {
        self.commit.flushes.load(Ordering::Relaxed)
    }
}
