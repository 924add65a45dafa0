//! An in-memory store for tests and for runs where losing everything on exit
//! is fine. Nothing here survives the process.

use super::query::{bump, PageCursor, SagaFilter, SagaPage, StatusCounts};
use super::{CreateOutcome, Lease, SagaRecord, Store, StoreError};
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
    /// Finished sagas by finish time, for retention.
    finished: std::collections::BTreeSet<(u64, SagaId)>,
    /// Keys of purged sagas, with when they were retired.
    retired: HashMap<String, u64>,
    retired_order: std::collections::BTreeSet<(u64, String)>,
    purged: u64,
    /// Every saga by (creation time, id), for paged listing.
    by_created: std::collections::BTreeSet<(u64, SagaId)>,
    /// Search attribute (name, value) -> sagas by (creation time, id).
    by_attribute: BTreeMap<(String, String), std::collections::BTreeSet<(u64, SagaId)>>,
    /// Sagas by status name.
    counts: StatusCounts,
    /// Overdue sagas ([`SagaRecord::is_overdue`]) by (creation time, id).
    overdue: std::collections::BTreeSet<(u64, SagaId)>,
    /// Definitions paused as a whole.
    definition_pauses: BTreeMap<String, crate::machine::PauseMark>,
}

impl Inner {
    /// Indexes a new record (with its own status counted).
    fn index(&mut self, r: &SagaRecord) {
        let at = (r.created_at_ms, r.id.clone());
        self.by_created.insert(at.clone());
        for (n, v) in &r.attributes {
            self.by_attribute
                .entry((n.clone(), v.clone()))
                .or_default()
                .insert(at.clone());
        }
        bump(&mut self.counts, r.status().as_str(), 1);
    }

    /// Removes a deleted record's index entries and count.
    fn unindex(&mut self, r: &SagaRecord) {
        let at = (r.created_at_ms, r.id.clone());
        self.by_created.remove(&at);
        for (n, v) in &r.attributes {
            let k = (n.clone(), v.clone());
            if let Some(set) = self.by_attribute.get_mut(&k) {
                set.remove(&at);
                if set.is_empty() {
                    self.by_attribute.remove(&k);
                }
            }
        }
        bump(&mut self.counts, r.status().as_str(), -1);
        self.overdue.remove(&at);
    }

    /// Puts `r` in the overdue index or takes it out, as it is now.
    fn index_overdue(&mut self, r: &SagaRecord) {
        let at = (r.created_at_ms, r.id.clone());
        if r.is_overdue() {
            self.overdue.insert(at);
        } else {
            self.overdue.remove(&at);
        }
    }
}

/// The in-memory backend. [`MemoryStore::shared`] makes one that behaves
/// like a store shared by several engine processes (leases, fencing), for
/// testing several engines in one process.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    shared: bool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with lease semantics, as a shared database has.
    pub fn shared() -> Self {
        MemoryStore {
            shared: true,
            ..Self::default()
        }
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
            if let Some(&purged_at_ms) = g.retired.get(key) {
                return Ok(CreateOutcome::Retired { purged_at_ms });
            }
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
        g.index(record);
        g.index_overdue(record);
        Ok(CreateOutcome::Created)
    }

    async fn update(&self, record: &SagaRecord, events: &[SagaEvent]) -> Result<(), StoreError> {
        let mut g = self.lock();
        let stored = g.records.get(&record.id);
        let found = stored.map(|r| r.revision);
        let lease_ok = !self.shared || stored.is_some_and(|r| same_holder(&r.lease, &record.lease));
        if found != Some(record.revision.wrapping_sub(1)) || !lease_ok {
            return Err(StoreError::Conflict {
                id: record.id.clone(),
                expected: record.revision.wrapping_sub(1),
                found,
            });
        }
        let mut record = record.clone();
        if let (Some(new), Some(old)) =
            (record.lease.as_mut(), stored.and_then(|r| r.lease.as_ref()))
        {
            // The expiry is the store's to keep (renewals move it); the
            // record's copy may be older.
            new.expires_at_ms = new.expires_at_ms.max(old.expires_at_ms);
        }
        let id = record.id.clone();
        let old = stored.filter(|r| r.status() != record.status()).cloned();
        if let Some(old) = old {
            // A status change: its count moves and its attributes are
            // re-indexed, as on the other backends.
            g.unindex(&old);
            g.index(&record);
        }
        if matches!(
            record.status(),
            SagaStatus::Completed | SagaStatus::Compensated
        ) {
            g.finished.insert((record.updated_at_ms, id.clone()));
        }
        g.index_overdue(&record);
        g.records.insert(id.clone(), record);
        g.history.entry(id).or_default().extend_from_slice(events);
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

    async fn finished_before(
        &self,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        let g = self.lock();
        Ok(g.finished
            .iter()
            .take_while(|(at, _)| *at < before_ms)
            .filter_map(|(_, id)| g.records.get(id).cloned())
            .take(limit)
            .collect())
    }

    async fn purge(&self, ids: &[SagaId], now_ms: u64) -> Result<usize, StoreError> {
        let mut g = self.lock();
        let mut n = 0;
        for id in ids {
            let Some(r) = g.records.get(id) else { continue };
            if !matches!(r.status(), SagaStatus::Completed | SagaStatus::Compensated) {
                continue;
            }
            let (at, key) = (r.updated_at_ms, r.idempotency_key.clone());
            if let Some(r) = g.records.remove(id) {
                g.unindex(&r);
            }
            g.history.remove(id);
            g.finished.remove(&(at, id.clone()));
            if let Some(k) = key {
                if g.keys.get(&k) == Some(id) {
                    g.keys.remove(&k);
                    g.retired.insert(k.clone(), now_ms);
                    g.retired_order.insert((now_ms, k));
                }
            }
            n += 1;
        }
        g.purged += n as u64;
        Ok(n)
    }

    async fn forget_keys(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let mut g = self.lock();
        let old: Vec<(u64, String)> = g
            .retired_order
            .iter()
            .take_while(|(at, _)| *at < before_ms)
            .take(limit)
            .cloned()
            .collect();
        for entry in &old {
            g.retired_order.remove(entry);
            g.retired.remove(&entry.1);
        }
        Ok(old.len())
    }

    fn saga_count(&self) -> Option<u64> {
        Some(self.lock().records.len() as u64)
    }

    fn is_shared(&self) -> bool {
        self.shared
    }

    async fn claim(
        &self,
        owner: &str,
        now_ms: u64,
        ttl_ms: u64,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        if !self.shared {
            return Ok(Vec::new());
        }
        let mut g = self.lock();
        let mut out = Vec::new();
        for r in g.records.values_mut() {
            if out.len() >= limit {
                break;
            }
            let free = r.lease.as_ref().is_none_or(|l| l.expires_at_ms < now_ms);
            if r.status().is_terminal() || !free {
                continue;
            }
            let generation = r.lease.as_ref().map_or(0, |l| l.generation) + 1;
            r.lease = Some(Lease {
                owner: owner.to_string(),
                generation,
                expires_at_ms: now_ms + ttl_ms,
            });
            out.push(r.clone());
        }
        Ok(out)
    }

    async fn renew(
        &self,
        owner: &str,
        leases: &[(SagaId, u64)],
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Vec<SagaId>, StoreError> {
        let mut g = self.lock();
        let mut lost = Vec::new();
        for (id, generation) in leases {
            match g.records.get_mut(id).and_then(|r| r.lease.as_mut()) {
                Some(l) if l.owner == owner && l.generation == *generation => {
                    l.expires_at_ms = l.expires_at_ms.max(now_ms + ttl_ms);
                }
                _ => lost.push(id.clone()),
            }
        }
        Ok(lost)
    }

    async fn release(&self, owner: &str, ids: &[SagaId]) -> Result<(), StoreError> {
        let mut g = self.lock();
        for id in ids {
            if let Some(l) = g.records.get_mut(id).and_then(|r| r.lease.as_mut()) {
                if l.owner == owner {
                    l.expires_at_ms = 0;
                }
            }
        }
        Ok(())
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

    async fn list_page(
        &self,
        filter: &SagaFilter,
        cursor: Option<&PageCursor>,
        limit: usize,
    ) -> Result<SagaPage, StoreError> {
        let g = self.lock();
        let mut upper = (
            filter.created_before_ms.unwrap_or(u64::MAX),
            SagaId::from_raw(String::new()),
        );
        if let Some(c) = cursor {
            upper = upper.min((c.created_ms, c.id.clone()));
        }
        let candidates: Box<dyn Iterator<Item = &(u64, SagaId)>> = match &filter.attribute {
            _ if filter.overdue => Box::new(g.overdue.range(..upper).rev()),
            Some((n, v)) => match g.by_attribute.get(&(n.clone(), v.clone())) {
                Some(set) => Box::new(set.range(..upper).rev()),
                None => Box::new(std::iter::empty()),
            },
            None => Box::new(g.by_created.range(..upper).rev()),
        };
        let lower = filter.created_after_ms.unwrap_or(0);
        let matches = candidates
            .take_while(|(at, _)| *at >= lower)
            .filter_map(|(_, id)| g.records.get(id))
            .filter(|r| filter.matches(r))
            .take(limit.saturating_add(1))
            .cloned()
            .collect();
        Ok(SagaPage::from_matches(matches, limit))
    }

    async fn status_counts(&self) -> Result<StatusCounts, StoreError> {
        Ok(self.lock().counts.clone())
    }

    async fn definition_pauses(
        &self,
    ) -> Result<BTreeMap<String, crate::machine::PauseMark>, StoreError> {
        Ok(self.lock().definition_pauses.clone())
    }

    async fn set_definition_pause(
        &self,
        definition: &str,
        mark: Option<&crate::machine::PauseMark>,
    ) -> Result<(), StoreError> {
        let mut g = self.lock();
        match mark {
            Some(m) => g
                .definition_pauses
                .insert(definition.to_string(), m.clone()),
            None => g.definition_pauses.remove(definition),
        };
        Ok(())
    }
}

/// Same owner and generation (the expiry may differ).
fn same_holder(a: &Option<Lease>, b: &Option<Lease>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.owner == b.owner && a.generation == b.generation,
        _ => false,
    }
}
