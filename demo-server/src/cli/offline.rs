//! The data directory of a stopped server, read without an engine: no saga
//! is resumed, no timer fires, nothing is written through the store. sled
//! lets one process at a time open a directory, so this fails (and the
//! command line says so) while a server runs on it.

use super::CliError;
use crate::api::SagaSummary;
use crate::saga_pages::{Page, PageQuery};
use saga_engine::{SagaId, SledStore, Store};
use serde_json::{json, Value};
use std::path::Path;

/// A stopped server's saga store, open for reading.
pub struct Offline {
    store: SledStore,
}

impl std::fmt::Debug for Offline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offline").finish_non_exhaustive()
    }
}

fn store_err(e: saga_engine::StoreError) -> CliError {
    CliError::Server(format!("reading the saga store: {e}"))
}

impl Offline {
    /// Opens the database of `data_dir`; `server` names the server that
    /// did not answer, for the message when the directory is in use.
    pub fn open(data_dir: &Path, server: &str) -> Result<Offline, CliError> {
        let path = data_dir.join(crate::state::DB_DIR);
        if !path.exists() {
            return Err(CliError::Unreachable(format!(
                "no server answers at {server} and {} holds no database: start the server, \
                 or pass --server URL or --data-dir DIR",
                data_dir.display()
            )));
        }
        let db = saga_engine::store::open_sled_db(&path).map_err(|e| {
            CliError::Unreachable(format!(
                "no server answers at {server}, and the data directory {} cannot be opened ({e}): \
                 another process holds it, likely a server on another address (pass --server URL)",
                data_dir.display()
            ))
        })?;
        let store = SledStore::with_db(db).map_err(store_err)?;
        Ok(Offline { store })
    }

    /// A page of sagas, newest first, as the admin API answers it.
    pub async fn list(&self, q: &PageQuery) -> Result<Value, CliError> {
        let Page {
            sagas,
            next_cursor,
            scanned,
            partial,
        } = crate::saga_pages::page(&self.store, q)
            .await
            .map_err(store_err)?;
        let sagas: Vec<SagaSummary> = sagas.iter().map(SagaSummary::from).collect();
        Ok(json!({
            "sagas": sagas,
            "next_cursor": next_cursor,
            "scanned": scanned,
            "partial": partial,
        }))
    }

    fn id(raw: &str) -> Result<SagaId, CliError> {
        SagaId::parse(raw).ok_or_else(|| CliError::NotFound(format!("saga {raw:?} not found")))
    }

    /// One saga, as `GET /api/admin/sagas/{id}` answers it.
    pub async fn show(&self, raw: &str) -> Result<Value, CliError> {
        let id = Self::id(raw)?;
        let rec = self
            .store
            .get(&id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| CliError::NotFound(format!("saga {id} not found")))?;
        Ok(json!({
            "saga": SagaSummary::from(&rec),
            "idempotency_key": rec.idempotency_key,
            "revision": rec.revision,
            "data": rec.data,
        }))
    }

    /// One saga's history, as `GET /api/admin/sagas/{id}/history` answers it.
    pub async fn history(&self, raw: &str) -> Result<Value, CliError> {
        let id = Self::id(raw)?;
        let events = self.store.history(&id).await.map_err(store_err)?;
        if events.is_empty() && self.store.get(&id).await.map_err(store_err)?.is_none() {
            return Err(CliError::NotFound(format!("saga {id} not found")));
        }
        Ok(json!({ "id": id, "events": events }))
    }
}
