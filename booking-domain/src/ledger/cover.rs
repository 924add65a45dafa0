//! Who makes a local participant's writes durable: its own group flush, or
//! the engine's group commit when the participant keeps its trees in the
//! engine's sled database.
//!
//! One sled flush covers every write applied to the database before it,
//! whatever the tree. A participant on the engine's database therefore does
//! not flush a saga step's effect itself: the engine records the step's
//! result after the step returns and flushes before it acts on it, and that
//! flush covers the effect. A crash before it loses the effect and the
//! result together; the step is in doubt and is retried under the same
//! idempotency key, which the participant applies once. Writes acknowledged
//! to anyone but the engine (an account opened over the API, a capacity
//! change) still wait for a flush, the engine's, shared with its writers.

use super::LedgerError;
use saga_engine::store::Durability;
use std::future::Future;

/// How a local participant makes its writes durable.
#[derive(Clone, Default)]
pub(crate) struct Cover {
    /// The engine's group commit on the participant's own database.
    engine: Option<Durability>,
}

impl Cover {
    /// The participant's writes to `db` are covered by `engine`'s flushes.
    /// Refused unless `engine` makes `db` durable: an effect the engine's
    /// flush does not cover would be acknowledged and then lost.
    pub(crate) fn engine(db: &sled::Db, engine: &Durability) -> Result<Cover, LedgerError> {
        let same = super::plumbing::same_database(
            &db.open_tree(PROBE_TREE)?,
            &engine.db().open_tree(PROBE_TREE)?,
        )?;
        if !same && !saga_engine::sabotage::active(saga_engine::sabotage::COVER_FOREIGN_DB) {
            return Err(LedgerError::Storage(
                "the engine's store is on another sled database: its flushes do not cover this participant's writes"
                    .into(),
            ));
        }
        Ok(Cover {
            engine: Some(engine.clone()),
        })
    }

    /// Makes a saga step's write durable before the participant replies:
    /// `own` (the participant's own flush) unless the engine's next flush
    /// covers it.
    pub(crate) async fn step<E>(&self, own: impl Future<Output = Result<(), E>>) -> Result<(), E> {
        match &self.engine {
            Some(_) => Ok(()),
            None => own.await,
        }
    }

    /// Makes a write that is acknowledged to someone other than the engine
    /// durable: through the engine's group commit when there is one, else
    /// with `own`.
    pub(crate) async fn direct<E: From<LedgerError>>(
        &self,
        own: impl Future<Output = Result<(), E>>,
    ) -> Result<(), E> {
        match &self.engine {
            Some(d) => d
                .durable()
                .await
                .map_err(|e| E::from(LedgerError::Storage(e.to_string()))),
            None => own.await,
        }
    }
}

/// The tree the database identity check writes its probe to.
const PROBE_TREE: &str = "ledger_cover_probe";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_an_engine_on_another_database() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let db = sled::open(a.path()).unwrap();
        let store = saga_engine::SledStore::open(b.path()).unwrap();
        let e = Cover::engine(&db, &store.durability()).err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.to_string().contains("another sled database")),
            "a participant on another database must not count on the engine's flush: {e:?}"
        );
        let same = saga_engine::SledStore::with_db(db.clone()).unwrap();
        assert!(Cover::engine(&db, &same.durability())
            .unwrap()
            .engine
            .is_some());
    }
}
