//! Retention: finished sagas leave the store after a window, and their
//! idempotency keys after a longer one.
//!
//! A saga that ended `Completed` or `Compensated` more than
//! [`Retention::sagas`] ago is purged (record and history) by a background
//! task, in small batches that yield between them so running sagas are not
//! held up. `Stuck` and running sagas are never purged. The idempotency key
//! of a purged saga is kept *retired* until [`Retention::keys`] after the
//! saga finished: a start with it fails with [`Error::KeyRetired`] instead
//! of replaying a result that is gone or starting the order a second time.
//! After that window the key is forgotten and may start a new saga: pick
//! the key window longer than any client retries a request.
//!
//! With [`Retention::export_to`], each purged saga (record and history) is
//! appended to a JSON Lines file, synced, before it is deleted; a crash in
//! between can export a saga twice, never lose one.

use crate::events::SagaEvent;
use crate::store::{SagaRecord, Store, StoreError};
use crate::Error;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// How long finished sagas and their idempotency keys are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Finished sagas older than this are purged.
    pub sagas: Duration,
    /// Idempotency keys are remembered this long after their saga finished
    /// (at least [`Retention::sagas`]).
    pub keys: Duration,
    /// Sagas purged per store call.
    pub batch: usize,
    /// How often the background task runs.
    pub every: Duration,
    /// JSON Lines file that purged sagas are appended to, if any.
    pub export: Option<PathBuf>,
}

impl Retention {
    /// Keeps finished sagas for `sagas`, their keys for twice that (at
    /// least a day longer), runs every minute (or more often for short
    /// windows) in batches of 256.
    pub fn new(sagas: Duration) -> Retention {
        Retention {
            sagas,
            keys: (sagas * 2).max(sagas + Duration::from_secs(86_400)),
            batch: 256,
            every: Duration::from_secs(60)
                .min(sagas / 4)
                .max(Duration::from_millis(10)),
            export: None,
        }
    }

    /// Keeps keys `keys` after their saga finished (raised to the saga window if shorter).
    pub fn keys(mut self, keys: Duration) -> Self {
        self.keys = keys.max(self.sagas);
        self
    }

    /// Runs the background task every `every`.
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every.max(Duration::from_millis(1));
        self
    }

    /// Purges at most `n` sagas per store call.
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// Appends each purged saga to `path` (JSON Lines) before deleting it.
    pub fn export_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.export = Some(path.into());
        self
    }
}

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Sagas deleted.
    pub purged: usize,
    /// Retired idempotency keys forgotten.
    pub keys_forgotten: usize,
}

/// One exported saga: a line of the export file.
#[derive(serde::Serialize)]
struct Exported<'a> {
    record: &'a SagaRecord,
    history: &'a [SagaEvent],
}

/// Runs one full pass at `now_ms`: every saga past the window, batch by
/// batch, then the keys past theirs.
pub(crate) async fn pass(
    store: &dyn Store,
    policy: &Retention,
    now_ms: u64,
) -> Result<PurgeReport, Error> {
    let mut report = PurgeReport::default();
    let before = now_ms.saturating_sub(policy.sagas.as_millis() as u64);
    loop {
        let batch = store.finished_before(before, policy.batch).await?;
        if batch.is_empty() {
            break;
        }
        if let Some(path) = &policy.export {
            export(store, path, &batch).await?;
        }
        let ids: Vec<_> = batch.iter().map(|r| r.id.clone()).collect();
        report.purged += store.purge(&ids, now_ms).await?;
        if batch.len() < policy.batch {
            break;
        }
        // Let running sagas' writes in between batches.
        tokio::task::yield_now().await;
    }
    // A key is retired when its saga is purged (about `sagas` after it
    // finished) and kept until `keys` after it finished.
    let extra = policy.keys.saturating_sub(policy.sagas).as_millis() as u64;
    let forget_before = now_ms.saturating_sub(extra);
    loop {
        let n = store.forget_keys(forget_before, policy.batch).await?;
        report.keys_forgotten += n;
        if n < policy.batch {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok(report)
}

async fn export(
    store: &dyn Store,
    path: &std::path::Path,
    batch: &[SagaRecord],
) -> Result<(), Error> {
    let mut lines = Vec::new();
    for r in batch {
        let history = store.history(&r.id).await?;
        serde_json::to_writer(
            &mut lines,
            &Exported {
                record: r,
                history: &history,
            },
        )
        .expect("records and events always serialize");
        lines.push(b'\n');
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        f.write_all(&lines)?;
        f.sync_data()
    })
    .await
    .map_err(|e| StoreError::Io(format!("retention export: {e}")))?
    .map_err(|e| StoreError::Io(format!("retention export: {e}")))?;
    Ok(())
}
