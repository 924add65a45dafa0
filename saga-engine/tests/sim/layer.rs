//! What the simulated store holds, shaped like the sled store's tree: the
//! saga records (`s/{id}`, each with its history), the active index
//! (`a/{id}`: not terminal, what an engine resumes at open) and the key
//! index (`k/{key}` -> id), written one entry at a time.
//!
//! Every store call is a short sequence of these single-entry writes
//! ([`Op`]), in the order `saga-engine/src/store/sled_store.rs` writes them;
//! each write is its own entry in the flush queue, so a crash can keep a
//! prefix that ends in the middle of a call. [`index_problems`] says what
//! no prefix of correct writes can ever show.

use saga_engine::store::SagaRecord;
use saga_engine::{SagaEvent, SagaId};
use std::collections::{BTreeMap, BTreeSet};

/// One copy of everything the store holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layer {
    pub records: BTreeMap<SagaId, SagaRecord>,
    pub history: BTreeMap<SagaId, Vec<SagaEvent>>,
    /// The active index.
    pub active: BTreeSet<SagaId>,
    /// The key index.
    pub keys: BTreeMap<String, SagaId>,
}

/// One single-entry write to the tree.
#[derive(Debug, Clone)]
pub enum Op {
    PutActive(SagaId),
    DelActive(SagaId),
    /// The record, with events for its history: the whole history when
    /// `fresh` (a create), else appended (sled rewrites the value with the
    /// old history bytes in front).
    PutRecord {
        rec: Box<SagaRecord>,
        events: Vec<SagaEvent>,
        fresh: bool,
    },
    DelRecord(SagaId),
    PutKey(String, SagaId),
}

impl Op {
    /// Short, for the trace.
    pub fn describe(&self) -> String {
        match self {
            Op::PutActive(id) => format!("+a/{id}"),
            Op::DelActive(id) => format!("-a/{id}"),
            Op::PutRecord { rec, fresh, .. } => format!(
                "{}s/{} rev {} {}",
                if *fresh { "new " } else { "" },
                rec.id,
                rec.revision,
                rec.status()
            ),
            Op::DelRecord(id) => format!("-s/{id}"),
            Op::PutKey(k, id) => format!("k/{k}={id}"),
        }
    }
}

/// The high-water mark: the flush ticket made durable and the records
/// created by then (sled keeps it in its tree and in a file beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub seq: u64,
    pub created: u64,
}

impl Layer {
    /// Applies one write.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::PutActive(id) => {
                self.active.insert(id.clone());
            }
            Op::DelActive(id) => {
                self.active.remove(id);
            }
            Op::PutRecord { rec, events, fresh } => {
                self.records.insert(rec.id.clone(), SagaRecord::clone(rec));
                let h = self.history.entry(rec.id.clone()).or_default();
                if *fresh {
                    h.clear();
                }
                h.extend_from_slice(events);
            }
            Op::DelRecord(id) => {
                self.records.remove(id);
                self.history.remove(id);
            }
            Op::PutKey(k, id) => {
                self.keys.insert(k.clone(), id.clone());
            }
        }
    }

    /// The record `key` names, if that record exists (a key whose record
    /// is missing names nothing, as in sled).
    pub fn by_key(&self, key: &str) -> Option<&SagaRecord> {
        self.keys.get(key).and_then(|id| self.records.get(id))
    }

    /// True when `rec` is a create that never wrote its key (or lost it):
    /// never acknowledged, so it must not run and `list` hides it.
    pub fn is_orphan(&self, rec: &SagaRecord) -> bool {
        rec.idempotency_key
            .as_ref()
            .is_some_and(|k| self.keys.get(k) != Some(&rec.id))
    }
}

/// What the sled store's write order rules out in any prefix of its
/// writes: a saga that is not terminal but has no active entry (an engine
/// opening on this would never resume it).
pub fn index_problems(layer: &Layer) -> Vec<String> {
    layer
        .records
        .values()
        .filter(|r| !r.status().is_terminal() && !layer.active.contains(&r.id))
        .map(|r| {
            format!(
                "saga {} is {} (rev {}) but has no active index entry: no engine opening on this store resumes it",
                r.id,
                r.status(),
                r.revision
            )
        })
        .collect()
}
