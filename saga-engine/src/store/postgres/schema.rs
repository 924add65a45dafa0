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
//! Version 3 adds paged listing, search attributes and status counts:
//! indexes `sagas_created` and `sagas_status_created` (live sagas by
//! creation time, newest first), the table `saga_attributes` (one row per
//! saga and attribute, written by the create statement, deleted by the
//! purge statement, indexed by name, value and creation time), and
//! `saga_status_counts` (sagas by status, in 16 shards per status so that
//! concurrent commits rarely wait on one row), kept by the trigger
//! `saga_engine_count` in the transaction of every insert, status change,
//! purge or delete of a saga row, so the counts are exactly those of the
//! committed rows. An upgraded database gets its counts from its rows.
//!
//! Version 4 adds the overdue listing and paused sagas to the active
//! ones: `sagas.overdue` (true while the saga is overdue, i.e.
//! [`SagaRecord::is_overdue`](crate::store::SagaRecord::is_overdue),
//! written by every create and update from the record), the partial index
//! `sagas_overdue` on the overdue rows alone (newest first), and
//! `sagas_live` (running, compensating and paused rows: what
//! `list_active` reads), and the table `saga_definition_pauses` (the
//! definitions an operator paused as a whole). An upgraded database gets the flag from its
//! records, decoded by this code (not by pattern: saga data may hold the
//! same text).
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
pub(super) const SCHEMA_VERSION: i32 = 4;

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

/// Version 3: paged listing, search attributes, status counts. The count
/// trigger fires on an update only when the status or the tombstone mark
/// changes, so the updates of running sagas stay HOT and trigger-free.
const V3: &str = "
CREATE INDEX IF NOT EXISTS sagas_created ON sagas (created_ms DESC, id DESC)
    WHERE purged_ms IS NULL;
CREATE INDEX IF NOT EXISTS sagas_status_created ON sagas (status, created_ms DESC, id DESC)
    WHERE purged_ms IS NULL;
CREATE TABLE IF NOT EXISTS saga_attributes (
    saga_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (saga_id, name)
);
CREATE INDEX IF NOT EXISTS saga_attributes_lookup
    ON saga_attributes (name, value, created_ms DESC, saga_id DESC);
CREATE TABLE IF NOT EXISTS saga_status_counts (
    status TEXT NOT NULL,
    shard  INT NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (status, shard)
);
CREATE OR REPLACE FUNCTION saga_engine_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.purged_ms IS NULL THEN
        INSERT INTO saga_status_counts AS c VALUES (OLD.status, hashtext(OLD.id) & 15, -1)
            ON CONFLICT (status, shard) DO UPDATE SET n = c.n - 1;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.purged_ms IS NULL THEN
        INSERT INTO saga_status_counts AS c VALUES (NEW.status, hashtext(NEW.id) & 15, 1)
            ON CONFLICT (status, shard) DO UPDATE SET n = c.n + 1;
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS saga_engine_count_rows ON sagas;
CREATE TRIGGER saga_engine_count_rows AFTER INSERT OR DELETE ON sagas
    FOR EACH ROW EXECUTE FUNCTION saga_engine_count();
DROP TRIGGER IF EXISTS saga_engine_count_status ON sagas;
CREATE TRIGGER saga_engine_count_status AFTER UPDATE OF status, purged_ms ON sagas
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.purged_ms IS DISTINCT FROM NEW.purged_ms)
    EXECUTE FUNCTION saga_engine_count();
";

/// Version 4: the overdue flag and its index, and the index of live rows
/// (paused ones included). The flag changes once or twice in a saga's
/// life, so the updates of running sagas stay HOT.
const V4: &str = "
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS overdue BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS sagas_overdue ON sagas (created_ms DESC, id DESC)
    WHERE overdue AND purged_ms IS NULL;
CREATE INDEX IF NOT EXISTS sagas_live ON sagas (id)
    WHERE status IN ('running', 'compensating', 'paused');
CREATE TABLE IF NOT EXISTS saga_definition_pauses (
    definition TEXT PRIMARY KEY,
    mark       TEXT NOT NULL
);
";

/// Sets `overdue` on the rows of a database upgraded to version 4 whose
/// record says so. Only rows that may be overdue (not finished, the word
/// in their record) are decoded.
async fn backfill_v4(tx: &tokio_postgres::Transaction<'_>) -> Result<(), StoreError> {
    let rows = tx
        .query(
            "SELECT id, record FROM sagas
             WHERE purged_ms IS NULL AND status IN ('running', 'paused')
               AND record LIKE '%\"overdue\":true%'",
            &[],
        )
        .await
        .map_err(pg)?;
    for row in rows {
        let (id, body): (String, String) = (row.get(0), row.get(1));
        let r: crate::store::SagaRecord =
            serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                key: format!("saga {id}"),
                reason: e.to_string(),
            })?;
        if r.is_overdue() {
            tx.execute("UPDATE sagas SET overdue = true WHERE id = $1", &[&id])
                .await
                .map_err(pg)?;
        }
    }
    Ok(())
}

/// The counts of a database upgraded to version 3, from its rows.
const BACKFILL_V3: &str = "
DELETE FROM saga_status_counts;
INSERT INTO saga_status_counts (status, shard, n)
    SELECT status, hashtext(id) & 15, count(*) FROM sagas WHERE purged_ms IS NULL GROUP BY 1, 2;
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
            let counts = if v < 3 { BACKFILL_V3 } else { "" };
            let finish = if v < 2 { BACKFILL_V2 } else { "" };
            tx.batch_execute(&format!(
                "LOCK TABLE sagas IN ACCESS EXCLUSIVE MODE; {V1}{V2}{finish}{V3}{counts}{V4}"
            ))
            .await
            .map_err(pg)?;
            backfill_v4(&tx).await?;
            tracing::info!(from = v, to = SCHEMA_VERSION, "PostgreSQL schema upgraded");
        }
        // A new database: nobody uses its tables before the version row
        // exists, and connectors are serialised by the advisory lock.
        None => {
            tx.batch_execute(&format!("{V1}{V2}{V3}{V4}"))
                .await
                .map_err(pg)?;
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
