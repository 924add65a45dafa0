//! An in-memory store for tests and for runs where losing everything on exit
//! is fine. Nothing here survives the process.

use super::{CreateOutcome, SagaRecord, Store, StoreError};
use crate::events::SagaEvent;
use crate::machine::SagaStatus;
use crate::SagaId;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

#[derive(Default)]
struct Inner {
    records: BTreeMap<SagaId, SagaRecord>,
    history: HashMap<SagaId, Vec<SagaEvent>>,
    keys: HashMap<String, SagaId>,
}

/// The in-memory backend.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves consistent data
        // (every mutation below is applied after its checks), so recover.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create(
        &self,
        record: &SagaRecord,
        events: &[SagaEvent],
    ) -> Result<CreateOutcome, StoreError> {
        let mut g = self.lock();
        if let Some(key) = &record.idempotency_key {
            if let Some(existing) = g.keys.get(key) {
                let rec = g
                    .records
                    .get(existing)
                    .cloned()
                    .ok_or_else(|| StoreError::Corrupt {
                        key: format!("idempotency key {key}"),
                        reason: format!("names missing saga {existing}"),
                    })?;
                return Ok(CreateOutcome::Existing(Box::new(rec)));
            }
        }
        if g.records.contains_key(&record.id) {
            return Err(StoreError::AlreadyExists(record.id.clone()));
        }
        if let Some(key) = &record.idempotency_key {
            g.keys.insert(key.clone(), record.id.clone());
        }
        g.records.insert(record.id.clone(), record.clone());
        g.history.insert(record.id.clone(), events.to_vec());
        Ok(CreateOutcome::Created)
    }

    async fn update(&self, record: &SagaRecord, events: &[SagaEvent]) -> Result<(), StoreError> {
        let mut g = self.lock();
        let found = g.records.get(&record.id).map(|r| r.revision);
        if found != Some(record.revision.wrapping_sub(1)) {
            return Err(StoreError::Conflict {
                id: record.id.clone(),
                expected: record.revision.wrapping_sub(1),
                found,
            });
        }
        g.records.insert(record.id.clone(), record.clone());
        g.history
            .entry(record.id.clone())
            .or_default()
            .extend_from_slice(events);
        Ok(())
    }

    async fn get(&self, id: &SagaId) -> Result<Option<SagaRecord>, StoreError> {
        Ok(self.lock().records.get(id).cloned())
    }

    async fn find_by_key(&self, key: &str) -> Result<Option<SagaId>, StoreError> {
        Ok(self.lock().keys.get(key).cloned())
    }

    async fn history(&self, id: &SagaId) -> Result<Vec<SagaEvent>, StoreError> {
        Ok(self.lock().history.get(id).cloned().unwrap_or_default())
    }

    async fn list_active(&self) -> Result<Vec<SagaRecord>, StoreError> {
        Ok(self
            .lock()
            .records
            .values()
            .filter(|r| !r.status().is_terminal())
            .cloned()
            .collect())
    }

    async fn list(
        &self,
        status: Option<SagaStatus>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        Ok(self
            .lock()
            .records
            .values()
            .filter(|r| status.is_none_or(|s| r.status() == s))
            .take(limit)
            .cloned()
            .collect())
    }
}
