//! Starting a saga: the first record and its events written in one durable
//! create, deduplicated by idempotency key, and the saga's worker spawned.

use super::{events_for, Engine};
use crate::events::EventKind;
use crate::machine::{Input, SagaState};
use crate::store::{fingerprint, CreateOutcome, Lease, SagaRecord, StoreError, RECORD_FORMAT};
use crate::{Error, SagaId};
use serde::Serialize;
use std::sync::atomic::Ordering;

impl Engine {
    /// Starts a saga of the latest registered version of `definition` with
    /// `input` as its data. Returns once the saga is durably recorded.
    ///
    /// With an idempotency key that already started a saga, returns that
    /// saga's id and starts nothing; if the earlier input differs, fails with
    /// [`Error::IdempotencyConflict`].
    pub async fn start<I: Serialize>(
        &self,
        definition: &str,
        input: &I,
        idempotency_key: Option<&str>,
    ) -> Result<SagaId, Error> {
        let inner = &self.inner;
        if inner.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let version = *inner
            .latest
            .get(definition)
            .ok_or_else(|| Error::UnknownDefinition {
                name: definition.to_string(),
                version: None,
            })?;
        let def = inner.defs[&(definition.to_string(), version)].clone();
        let data = serde_json::to_value(input).map_err(|e| Error::InvalidInput {
            definition: definition.to_string(),
            reason: e.to_string(),
        })?;
        let fp = fingerprint(&serde_json::to_vec(&data).unwrap_or_default());
        let now = inner.clock.now_ms();
        let id = SagaId::from_parts(now, inner.random_u64());
        let mut rec = SagaRecord {
            revision: 0,
            v: RECORD_FORMAT,
            id: id.clone(),
            definition: def.name().to_string(),
            version,
            idempotency_key: idempotency_key.map(str::to_string),
            input_fingerprint: fp,
            next_seq: 0,
            created_at_ms: now,
            updated_at_ms: now,
            state: SagaState::grouped(def.step_names().into_iter().zip(def.groups())),
            data,
            lease: inner.store.is_shared().then(|| Lease {
                owner: inner.owner.clone(),
                generation: 1,
                expires_at_ms: now + inner.lease_ttl_ms,
            }),
            attributes: Default::default(),
        };
        rec.attributes = def.search_attributes(&rec.data);
        rec.state.deadline_ms = def
            .deadline()
            .map(|d| now.saturating_add(d.as_millis() as u64));
        // Held until the create is written (see `Inner::definition_pauses`).
        let pauses = inner.definition_pauses.clone().read_owned().await;
        let held = pauses.get(definition).cloned();
        rec.state.paused = held.clone();
        let (decision, model) = inner.step(&*def, &mut rec, Input::Start, now)?;
        let paused = held.map(|m| EventKind::SagaPaused {
            operator: m.operator,
            reason: format!("definition {definition} paused: {}", m.reason),
        });
        let events = events_for(
            &mut rec,
            Some(EventKind::SagaStarted {
                definition: def.name().to_string(),
                version,
            })
            .into_iter()
            .chain(paused)
            .chain(model),
            decision,
            now,
        );
        // The write and the worker's spawn run in a task of their own, so
        // that a caller that goes away (a timeout around `start`, a dropped
        // request) cannot leave a record written without its worker: once
        // the record may be in the store, its worker is sure to follow.
        let inner = self.inner.clone();
        let key = idempotency_key.map(str::to_string);
        let definition = definition.to_string();
        let create = async move {
            let _pauses = pauses;
            let _guard = match &key {
                Some(k) => Some(inner.start_lock(k).await),
                None => None,
            };
            match inner.store.create(&rec, &events).await? {
                CreateOutcome::Created => {
                    tracing::debug!(saga_id = %id, definition, "saga started");
                    inner.publish(events);
                    if rec.state.paused.is_none() {
                        inner.spawn(def, rec, None);
                    }
                    Ok(id)
                }
                CreateOutcome::Existing(existing) => {
                    if existing.input_fingerprint != fp || existing.definition != definition {
                        return Err(Error::IdempotencyConflict {
                            key: key.unwrap_or_default(),
                            existing: existing.id.clone(),
                        });
                    }
                    Ok(existing.id.clone())
                }
                CreateOutcome::Retired { purged_at_ms } => Err(Error::KeyRetired {
                    key: key.unwrap_or_default(),
                    purged_at_ms,
                }),
            }
        };
        if crate::sabotage::active(crate::sabotage::START_INLINE) {
            return create.await;
        }
        match tokio::spawn(create).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::Store(StoreError::Io(format!(
                "the start was interrupted: {e}"
            )))),
        }
    }
}
