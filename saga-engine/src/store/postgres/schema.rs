//! The PostgreSQL backend's tables and their migrations, applied at connect.
//!
//! Version 1 is the original shape (sagas, their events, the version row).
//! Version 2 adds retention: `sagas.finished_ms` (the finish time of a
//! `completed`/`compensated` saga, indexed by the partial index
//! `sagas_finished`, so retention finds its candidates without a scan) and
//! `sagas.purged_ms` (set on a purged saga's *tombstone*: the row keeps its
//! id and idempotency key, loses its record, history and status, and
//! stays until the key is forgotten; index `sagas_retired`). Keeping the
//! key in the same unique index a create inserts into is what makes a
//! create racing with a purge see the key retired, never free.
//!
//! Every step is `CREATE ... IF NOT EXISTS` / `ADD COLUMN IF NOT EXISTS`,
//! run in one transaction under an advisory lock, so processes connecting
//! at once agree, and a version-1 database is upgraded in place (its
//! finished sagas get their finish time from their records). A database
//! of a newer version is refused, and so is this version by older builds:
//! they would finish sagas without a finish time, which retention would
//! never see.

use super::pg;
use crate::store::StoreError;
use tokio_postgres::Client;

/// Version of the tables this code reads and writes.
pub(super) const SCHEMA_VERSION: i32 = 2;

/// Key of the advisory lock that serialises schema changes between
/// processes connecting at the same moment (`CREATE TABLE IF NOT EXISTS`
/// alone races in the system catalogs).
const SCHEMA_LOCK: i64 = 0x5a6a_0001;

/// Version 1, as first released.
const V1: &str = "
CREATE TABLE IF NOT EXISTS sagas (
    id               TEXT PRIMARY KEY,
    definition       TEXT NOT NULL,
    version          INT NOT NULL,
    idempotency_key  TEXT UNIQUE,
    status           TEXT NOT NULL,
    revision         BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_generation BIGINT NOT NULL DEFAULT 0,
    lease_expires_ms BIGINT NOT NULL DEFAULT 0,
    created_ms       BIGINT NOT NULL,
    record           TEXT NOT NULL
) WITH (fillfactor = 70); -- room for in-page (HOT) updates: most touch no index
CREATE INDEX IF NOT EXISTS sagas_active ON sagas (id)
    WHERE status IN ('running', 'compensating');
CREATE INDEX IF NOT EXISTS sagas_status ON sagas (status, id);
CREATE TABLE IF NOT EXISTS saga_events (
    saga_id TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    event   TEXT NOT NULL,
    PRIMARY KEY (saga_id, seq)
);
";

/// Version 2: retention. `finished_ms` only changes when a saga finishes,
/// so the updates of running sagas stay HOT.
const V2: &str = "
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS finished_ms BIGINT;
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS purged_ms BIGINT;
CREATE INDEX IF NOT EXISTS sagas_finished ON sagas (finished_ms, id)
    WHERE status IN ('completed', 'compensated');
CREATE INDEX IF NOT EXISTS sagas_retired ON sagas (purged_ms, id)
    WHERE purged_ms IS NOT NULL;
";

/// Finished sagas written by version 1 get their finish time from the
/// record's `updated_at_ms` (a top-level field serialized before the
/// saga's data; inside JSON strings a quote is escaped, so the pattern
/// cannot match there). Not via `::jsonb`: it refuses a `\u0000`.
const BACKFILL_V2: &str = "
UPDATE sagas SET finished_ms =
    COALESCE(substring(record from '\"updated_at_ms\":([0-9]+)')::bigint, created_ms)
WHERE finished_ms IS NULL AND purged_ms IS NULL AND status IN ('completed', 'compensated');
";

/// Creates or upgrades the tables, in one transaction.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg)?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({SCHEMA_LOCK});
         CREATE TABLE IF NOT EXISTS saga_engine_schema (version INT NOT NULL);"
    ))
    .await
    .map_err(pg)?;
    let found = tx
        .query_opt("SELECT max(version) FROM saga_engine_schema", &[])
        .await
        .map_err(pg)?
        .and_then(|r| r.get::<_, Option<i32>>(0));
    match found {
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError::Corrupt {
                key: "saga_engine_schema".into(),
                reason: format!(
                    "the database holds schema version {v}; this build reads version {SCHEMA_VERSION}"
                ),
            });
        }
        // Up to date: no DDL at all. Even `ADD COLUMN IF NOT EXISTS` on an
        // existing column takes an ACCESS EXCLUSIVE lock, which would stall
        // (and could deadlock with) other processes' traffic at every connect.
        Some(SCHEMA_VERSION) => {}
        Some(v) => {
            // Other processes (older builds) may be writing: take the
            // strongest lock first, so the upgrade waits for them instead
            // of deadlocking when a later statement would strengthen it.
            tx.batch_execute(&format!(
                "LOCK TABLE sagas IN ACCESS EXCLUSIVE MODE; {V1}{V2}{BACKFILL_V2}"
            ))
            .await
            .map_err(pg)?;
            tracing::info!(from = v, to = SCHEMA_VERSION, "PostgreSQL schema upgraded");
        }
        // A new database: nobody uses its tables before the version row
        // exists, and connectors are serialised by the advisory lock.
        None => {
            tx.batch_execute(&format!("{V1}{V2}")).await.map_err(pg)?;
        }
    }
    tx.execute(
        "DELETE FROM saga_engine_schema WHERE version <> $1",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(pg)?;
    tx.execute(
        "INSERT INTO saga_engine_schema (version)
         SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM saga_engine_schema)",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    // synchronous_commit is ours to set, fsync is the server's: say so if
    // a commit does not reach the disk.
    let fsync = client.query_one("SHOW fsync", &[]).await.map_err(pg)?;
    if fsync.get::<_, &str>(0) != "on" {
        tracing::warn!(
            "PostgreSQL runs with fsync = off: a crash of its machine can lose committed sagas"
        );
    }
    Ok(())
}
