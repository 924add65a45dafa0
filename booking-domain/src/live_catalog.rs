//! The catalog a running server serves, replaceable whole while it runs.
//!
//! Readers take [`LiveCatalog::current`] once per request (a cheap
//! `Arc` clone) and use that one catalog for everything they do, so a
//! search under way keeps the catalog it started with. An import
//! ([`LiveCatalog::import`]) works on a private copy loaded from sled,
//! applies its rows there (to sled in one transaction, then to the copy's
//! memory) and only then swaps the copy in: a reader sees the old catalog
//! or the new one, never a half-imported one. Imports run one at a time.

use crate::catalog::{Catalog, CatalogError};
use crate::import::{Import, ImportError, ImportReport};
use std::sync::{Arc, Mutex, RwLock};

/// A catalog that can be replaced whole while it is read.
pub struct LiveCatalog {
    current: RwLock<Arc<Catalog>>,
    /// Held by the import under way: one at a time.
    importing: Mutex<()>,
}

impl std::fmt::Debug for LiveCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCatalog")
            .field("current", &*self.current())
            .finish()
    }
}

/// Why a live import failed; the catalog served is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum LiveImportError {
    /// The served catalog is in memory only: nothing to import into.
    #[error("the catalog is not kept in a database: a live import needs one")]
    NotPersistent,
    /// The copy could not be loaded.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The files were refused.
    #[error(transparent)]
    Import(#[from] ImportError),
}

impl LiveCatalog {
    /// Serves `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> LiveCatalog {
        LiveCatalog {
            current: RwLock::new(catalog),
            importing: Mutex::new(()),
        }
    }

    /// The catalog now; keep it for the whole request.
    pub fn current(&self) -> Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serves `catalog` from now on.
    pub fn replace(&self, catalog: Arc<Catalog>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = catalog;
    }

    /// Runs `import` against a copy of the catalog stored in `db` and, if
    /// it succeeds, serves the copy. Blocking (file reading, sled): call it
    /// off the async threads. On error the served catalog is unchanged
    /// (and, the rows being applied in one transaction, so is sled).
    pub fn import(
        &self,
        db: &sled::Db,
        import: Import<'_>,
    ) -> Result<ImportReport, LiveImportError> {
        let _one = self.importing.lock().unwrap_or_else(|e| e.into_inner());
        if !self.current().is_persistent() {
            return Err(LiveImportError::NotPersistent);
        }
        if saga_engine::sabotage::active(saga_engine::sabotage::CATALOG_CLEAR_THEN_LOAD) {
            // Planted defect (tests only): the reload that empties the
            // catalog, then loads the new one.
            self.replace(Arc::new(Catalog::empty()));
        }
        let mut next = Catalog::open_empty(db)?;
        let report = import.run(&mut next, &mut |_| {})?;
        self.replace(Arc::new(next));
        tracing::info!(
            airports = self.current().airport_count(),
            flights = self.current().flight_count(),
            imported = report.imported,
            "catalog replaced by a live import"
        );
        Ok(report)
    }
}
