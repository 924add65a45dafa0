//! Retention on PostgreSQL: finding finished sagas by finish time, purging
//! them, and forgetting their retired idempotency keys.
//!
//! Candidates come from the partial index `sagas_finished` (`finished_ms`
//! of `completed`/`compensated` sagas), never a scan. A purge is one
//! statement, so one transaction per batch: it locks the given sagas that
//! are *still* finished when it gets to them (`FOR UPDATE SKIP LOCKED`,
//! re-checked on the row version it locks, so a saga another process is
//! writing or purging at that moment is left for the next pass, and two
//! processes purging one batch count each saga once), deletes their
//! history, deletes the rows of sagas without a key, and turns the rows of
//! sagas with one into tombstones (`status = 'purged'`, `purged_ms` set,
//! record emptied, lease cleared). The tombstone keeps the key in the
//! `idempotency_key` unique index, so a create with it, even one racing
//! with the purge, conflicts with it and reports the key retired instead
//! of starting the saga again; `forget_keys` deletes tombstones by
//! `purged_ms` (index `sagas_retired`), after which the key is free.
//! The same statement deletes the sagas' search attributes, and the count
//! trigger (see `schema`) takes them off their status's count.

use super::{big, limit, pg, records_of, unbig, Conn, COLUMNS};
use crate::machine::SagaStatus;
use crate::store::{SagaRecord, StoreError};
use crate::SagaId;
use tokio_postgres::{Client, Statement};

/// Retention's statements, prepared with the others on each connection.
pub(super) struct Statements {
    finished_before: Statement,
    purge: Statement,
    forget_keys: Statement,
}

impl Statements {
    pub(super) async fn prepare(c: &Client) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            // The predicate is the index's, so the planner can read
            // `sagas_finished` in order and stop at the limit.
            finished_before: c
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM sagas
                     WHERE status IN ('completed', 'compensated') AND finished_ms < $1::bigint
                     ORDER BY finished_ms, id
                     LIMIT $2::bigint"
                ))
                .await?,
            // $3: retire keys (always, unless the `purge-forgets-keys`
            // sabotage is planted).
            purge: c
                .prepare(
                    "WITH victims AS (
                         SELECT id, idempotency_key FROM sagas
                         WHERE id = ANY($1::text[])
                           AND status IN ('completed', 'compensated') AND purged_ms IS NULL
                         FOR UPDATE SKIP LOCKED),
                     tomb AS (
                         UPDATE sagas s SET status = 'purged', record = '',
                             purged_ms = $2::bigint, finished_ms = NULL,
                             lease_owner = NULL, lease_expires_ms = 0
                         FROM victims v
                         WHERE s.id = v.id AND v.idempotency_key IS NOT NULL AND $3::bool
                         RETURNING 1),
                     del AS (
                         DELETE FROM sagas s USING victims v
                         WHERE s.id = v.id AND (v.idempotency_key IS NULL OR NOT $3::bool)
                         RETURNING 1),
                     ev AS (
                         DELETE FROM saga_events e USING victims v
                         WHERE e.saga_id = v.id
                         RETURNING 1),
                     att AS (
                         DELETE FROM saga_attributes a USING victims v
                         WHERE a.saga_id = v.id
                         RETURNING 1)
                     SELECT count(*) FROM victims",
                )
                .await?,
            forget_keys: c
                .prepare(
                    "DELETE FROM sagas WHERE id IN (
                         SELECT id FROM sagas
                         WHERE purged_ms IS NOT NULL AND purged_ms < $1::bigint
                         ORDER BY purged_ms, id
                         LIMIT $2::bigint
                         FOR UPDATE SKIP LOCKED)
                       AND purged_ms IS NOT NULL",
                )
                .await?,
        })
    }
}

/// The `finished_ms` column of `record`: its last update if it finished
/// (`Completed`, `Compensated`), else NULL (running, stuck).
pub(super) fn finished_ms(record: &SagaRecord) -> Option<i64> {
    matches!(
        record.status(),
        SagaStatus::Completed | SagaStatus::Compensated
    )
    .then(|| big(record.updated_at_ms))
}

pub(super) async fn finished_before(
    c: &Conn,
    before_ms: u64,
    limit_n: usize,
) -> Result<Vec<SagaRecord>, StoreError> {
    let rows = c
        .client
        .query(
            &c.st.ret.finished_before,
            &[&big(before_ms), &limit(limit_n)],
        )
        .await
        .map_err(pg)?;
    records_of(&rows)
}

pub(super) async fn purge(c: &Conn, ids: &[SagaId], now_ms: u64) -> Result<usize, StoreError> {
    let ids: Vec<&str> = ids.iter().map(SagaId::as_str).collect();
    let retire = !crate::sabotage::active(crate::sabotage::PURGE_FORGETS_KEYS);
    let row = c
        .client
        .query_one(&c.st.ret.purge, &[&ids, &big(now_ms), &retire])
        .await
        .map_err(pg)?;
    Ok(usize::try_from(unbig(row.get(0))).unwrap_or(usize::MAX))
}

pub(super) async fn forget_keys(
    c: &Conn,
    before_ms: u64,
    limit_n: usize,
) -> Result<usize, StoreError> {
    let n = c
        .client
        .execute(&c.st.ret.forget_keys, &[&big(before_ms), &limit(limit_n)])
        .await
        .map_err(pg)?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}
