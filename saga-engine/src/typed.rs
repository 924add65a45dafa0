//! Typed handles: registering a definition gives back a [`SagaType`] that
//! starts sagas of its data type and waits for a typed [`Outcome`], so user
//! code never looks a definition up by name or digs into a record's state.

use crate::engine::{Engine, EngineBuilder};
use crate::machine::SagaStatus;
use crate::{Error, SagaDefinition, SagaId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;

/// A registered saga definition over data `D`.
#[derive(Debug)]
pub struct SagaType<D> {
    name: String,
    _data: PhantomData<fn() -> D>,
}

impl<D> Clone for SagaType<D> {
    fn clone(&self) -> Self {
        SagaType {
            name: self.name.clone(),
            _data: PhantomData,
        }
    }
}

/// How a saga ended, with its data decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<D> {
    /// The saga.
    pub id: SagaId,
    /// Its terminal status.
    pub status: SagaStatus,
    /// Its data as the last step left it.
    pub data: D,
    /// Why it compensated or got stuck, if it did.
    pub failure: Option<String>,
    /// Its deadline passed after the pivot: it completed late.
    pub overdue: bool,
}

impl EngineBuilder {
    /// Registers `def` and returns its typed handle.
    pub fn register_typed<D>(self, def: SagaDefinition<D>) -> (Self, SagaType<D>)
    where
        D: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let handle = SagaType {
            name: def.name().to_string(),
            _data: PhantomData,
        };
        (self.register(def), handle)
    }
}

impl<D: Serialize + DeserializeOwned> SagaType<D> {
    /// The definition's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts a saga of the latest registered version with `input` (see
    /// [`Engine::start`] for the idempotency key).
    pub async fn start(
        &self,
        engine: &Engine,
        input: &D,
        idempotency_key: Option<&str>,
    ) -> Result<SagaId, Error> {
        engine.start(&self.name, input, idempotency_key).await
    }

    /// Waits for the saga to end and returns its typed outcome.
    pub async fn wait(&self, engine: &Engine, id: &SagaId) -> Result<Outcome<D>, Error> {
        let rec = engine.wait(id).await?;
        let data = rec.data_as::<D>().map_err(|e| Error::InvalidInput {
            definition: self.name.clone(),
            reason: e.to_string(),
        })?;
        Ok(Outcome {
            id: rec.id.clone(),
            status: rec.status(),
            data,
            failure: rec.state.failure.clone(),
            overdue: rec.state.overdue,
        })
    }

    /// Starts a saga and waits for its outcome.
    pub async fn run(
        &self,
        engine: &Engine,
        input: &D,
        idempotency_key: Option<&str>,
    ) -> Result<Outcome<D>, Error> {
        let id = self.start(engine, input, idempotency_key).await?;
        self.wait(engine, &id).await
    }
}
