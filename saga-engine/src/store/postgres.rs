//! The PostgreSQL backend: one database shared by several engine processes,
//! which own sagas by lease (feature `postgres`).
//!
//! Every operation is a single SQL statement, so it is one implicit
//! transaction and one round trip: data-modifying `WITH` clauses write the
//! saga row and its history events together, or neither. A statement that
//! returns has committed, and the store sets `synchronous_commit = on` on
//! every connection, so a commit has reached PostgreSQL's WAL on disk (with
//! the server's `fsync = on`, its default) before any call returns: that
//! is the durability the engine's "write before act" needs. Concurrent
//! commits from different connections share WAL flushes (PostgreSQL's own
//! group commit), so the store keeps a small pool of connections and runs
//! that many calls at once.
//!
//! ## Schema
//!
//! ```sql
//! sagas(id TEXT PRIMARY KEY, definition TEXT, version INT,
//!       idempotency_key TEXT UNIQUE, status TEXT, revision BIGINT,
//!       lease_owner TEXT, lease_generation BIGINT, lease_expires_ms BIGINT,
//!       created_ms BIGINT, record TEXT,
//!       finished_ms BIGINT, purged_ms BIGINT,           -- version 2
//!       overdue BOOLEAN)                                -- version 4
//! saga_events(saga_id TEXT, seq BIGINT, event TEXT, PRIMARY KEY (saga_id, seq))
//! saga_engine_schema(version INT)
//! ```
//!
//! Tables are created, and older versions upgraded, at connect (see
//! `schema.rs`). A saga purged by retention leaves a *tombstone* row while
//! its idempotency key is retired: `status = 'purged'`, `purged_ms` set,
//! record and history gone; every read skips tombstones (see
//! `retention.rs`).
//!
//! `record` and `event` hold the serde JSON of [`SagaRecord`] and
//! [`SagaEvent`] as written (TEXT rather than JSONB: the exact bytes come
//! back, and JSONB would refuse a `\u0000` in saga data); cast them to
//! `jsonb` to query them. The columns beside `record` are what queries
//! filter on. `revision` and the three `lease_*` columns are authoritative:
//! renewals move a lease's expiry without rewriting the record, so a read
//! takes the lease from the columns, never from the JSON.
//!
//! ## Leases and fencing
//!
//! [`Store::claim`] takes active sagas whose lease is absent or expired
//! (`FOR UPDATE SKIP LOCKED`, so concurrent claimers split the work instead
//! of queueing on each other) and increments their lease generation.
//! [`Store::update`] only applies when the stored revision is the new one
//! minus one *and* the stored lease owner and generation are the record's:
//! a process that lost its lease while paused cannot write over the new
//! owner's progress.
//!
//! Times are the caller's (`now_ms`, from the engine's [`Clock`](crate::Clock)),
//! never the database's, so that engines under a virtual clock and tests
//! with several processes agree on when a lease runs out. Engine processes
//! sharing a database therefore need clocks that agree to well within the
//! lease TTL (NTP does this).

use super::{
    CreateOutcome, Lease, PageCursor, SagaFilter, SagaPage, SagaRecord, StatusCounts, Store,
    StoreError,
};
use crate::events::SagaEvent;
use crate::machine::SagaStatus;
use crate::SagaId;
use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

mod query;
mod retention;
mod schema;

/// Default number of connections: enough for PostgreSQL to group commits
/// of many concurrent sagas, few enough for a small server.
const DEFAULT_POOL_SIZE: usize = 16;

/// What a read returns: the record and its authoritative columns.
const COLUMNS: &str = "record, revision, lease_owner, lease_generation, lease_expires_ms";

/// The statements, prepared once per connection.
struct Statements {
    create: Statement,
    update: Statement,
    get: Statement,
    find_by_key: Statement,
    history: Statement,
    list_active: Statement,
    list_all: Statement,
    list_status: Statement,
    claim: Statement,
    renew: Statement,
    release: Statement,
    /// The key's saga or tombstone, for a create that inserted nothing.
    key_owner: Statement,
    /// Retention's statements.
    ret: retention::Statements,
}

impl Statements {
    async fn prepare(c: &Client) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            // ON CONFLICT DO NOTHING covers both the id and the idempotency
            // key; a racing insert of the same key waits for the other to
            // commit, then does nothing. Events go in only with the row.
            create: c
                .prepare(
                    "WITH ins AS (
                         INSERT INTO sagas (id, definition, version, idempotency_key, status,
                             revision, lease_owner, lease_generation, lease_expires_ms,
                             created_ms, record, finished_ms, overdue)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $14, $17)
                         ON CONFLICT DO NOTHING
                         RETURNING id),
                     ev AS (
                         INSERT INTO saga_events (saga_id, seq, event)
                         SELECT $1, s, e FROM unnest($12::bigint[], $13::text[]) AS t(s, e)
                         WHERE EXISTS (SELECT 1 FROM ins)),
                     att AS (
                         INSERT INTO saga_attributes (saga_id, name, value, created_ms)
                         SELECT $1, n, v, $10 FROM unnest($15::text[], $16::text[]) AS a(n, v)
                         WHERE EXISTS (SELECT 1 FROM ins))
                     SELECT EXISTS (SELECT 1 FROM ins)",
                )
                .await?,
            // The lease check: no lease on either side, or the same owner
            // and generation. The expiry only moves forward (renewals may
            // have moved it past the record's copy). The outer SELECT sees
            // the statement's snapshot, i.e. the revision found before it.
            update: c
                .prepare(
                    "WITH u AS (
                         UPDATE sagas SET revision = $2::bigint, status = $3, record = $4,
                             lease_expires_ms = GREATEST(lease_expires_ms, $7::bigint),
                             finished_ms = $10::bigint, overdue = $13
                         WHERE id = $1 AND revision = $2::bigint - 1 AND purged_ms IS NULL
                           AND (($5::text IS NULL AND lease_owner IS NULL)
                                OR (lease_owner = $5 AND lease_generation = $6::bigint))
                         RETURNING 1),
                     ev AS (
                         INSERT INTO saga_events (saga_id, seq, event)
                         SELECT $1, s, e FROM unnest($8::bigint[], $9::text[]) AS t(s, e)
                         WHERE EXISTS (SELECT 1 FROM u)),
                     -- At a status change (the snapshot still holds the old
                     -- status), the attributes are re-taken from the record.
                     ad AS (
                         DELETE FROM saga_attributes a
                         WHERE a.saga_id = $1 AND NOT (a.name = ANY($11::text[]))
                           AND EXISTS (SELECT 1 FROM u)
                           AND (SELECT status FROM sagas WHERE id = $1) IS DISTINCT FROM $3),
                     ai AS (
                         INSERT INTO saga_attributes (saga_id, name, value, created_ms)
                         SELECT $1, n, v, (SELECT created_ms FROM sagas WHERE id = $1)
                         FROM unnest($11::text[], $12::text[]) AS t(n, v)
                         WHERE EXISTS (SELECT 1 FROM u)
                           AND (SELECT status FROM sagas WHERE id = $1) IS DISTINCT FROM $3
                         ON CONFLICT (saga_id, name) DO UPDATE SET value = EXCLUDED.value)
                     SELECT EXISTS (SELECT 1 FROM u),
                            (SELECT revision FROM sagas WHERE id = $1 AND purged_ms IS NULL)",
                )
                .await?,
            get: c
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM sagas WHERE id = $1 AND purged_ms IS NULL"
                ))
                .await?,
            find_by_key: c
                .prepare("SELECT id FROM sagas WHERE idempotency_key = $1 AND purged_ms IS NULL")
                .await?,
            history: c
                .prepare("SELECT event FROM saga_events WHERE saga_id = $1 ORDER BY seq")
                .await?,
            list_active: c
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM sagas
                     WHERE status IN ('running', 'compensating', 'paused') ORDER BY id"
                ))
                .await?,
            list_all: c
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM sagas WHERE purged_ms IS NULL
                     ORDER BY id LIMIT $1::bigint"
                ))
                .await?,
            list_status: c
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM sagas WHERE status = $1 ORDER BY id LIMIT $2::bigint"
                ))
                .await?,
            // Rows another transaction holds (a claimer, an update) are
            // skipped rather than waited for; the outer WHERE repeats the
            // test so that it holds on the row version actually locked.
            claim: c
                .prepare(&format!(
                    "UPDATE sagas SET lease_owner = $1,
                         lease_generation = lease_generation + 1,
                         lease_expires_ms = $3::bigint
                     WHERE id IN (
                         SELECT id FROM sagas
                         WHERE status IN ('running', 'compensating')
                           AND (lease_owner IS NULL OR lease_expires_ms < $2::bigint)
                         ORDER BY id
                         LIMIT $4::bigint
                         FOR UPDATE SKIP LOCKED)
                       AND status IN ('running', 'compensating')
                       AND (lease_owner IS NULL OR lease_expires_ms < $2::bigint)
                     RETURNING {COLUMNS}"
                ))
                .await?,
            renew: c
                .prepare(
                    "UPDATE sagas s SET lease_expires_ms = GREATEST(s.lease_expires_ms, $3::bigint)
                     FROM unnest($2::text[], $4::bigint[]) AS l(id, generation)
                     WHERE s.id = l.id AND s.lease_owner = $1
                       AND s.lease_generation = l.generation
                     RETURNING s.id",
                )
                .await?,
            release: c
                .prepare(
                    "UPDATE sagas SET lease_expires_ms = 0
                     WHERE lease_owner = $1 AND id = ANY($2::text[])",
                )
                .await?,
            key_owner: c
                .prepare(&format!(
                    "SELECT {COLUMNS}, purged_ms FROM sagas WHERE idempotency_key = $1"
                ))
                .await?,
            ret: retention::Statements::prepare(c).await?,
        })
    }
}

/// One connection and its prepared statements.
struct Conn {
    client: Client,
    st: Statements,
}

/// A small pool: at most `size` connections, opened on demand, each used
/// by one call at a time (so concurrent commits run on different backends
/// and PostgreSQL can group their WAL flushes).
struct Pool {
    config: Config,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Conn>>,
}

/// A connection checked out of the pool; returned to it on drop unless
/// its connection has closed.
struct PooledConn<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for PooledConn<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("a checked-out connection")
    }
}

impl Drop for PooledConn<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.client.is_closed() {
                self.pool.lock_idle().push(conn);
            }
        }
    }
}

impl Pool {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn get(&self) -> Result<PooledConn<'_>, StoreError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Io("the PostgreSQL pool is closed".into()))?;
        loop {
            let conn = self.lock_idle().pop();
            match conn {
                // A connection the server closed (restart, idle timeout) is
                // dropped here and replaced.
                Some(c) if c.client.is_closed() => continue,
                Some(c) => {
                    return Ok(PooledConn {
                        pool: self,
                        conn: Some(c),
                        _permit: permit,
                    })
                }
                None => {
                    let c = self.open().await?;
                    return Ok(PooledConn {
                        pool: self,
                        conn: Some(c),
                        _permit: permit,
                    });
                }
            }
        }
    }

    async fn open(&self) -> Result<Conn, StoreError> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(pg)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection ended");
            }
        });
        // Durability must not depend on the server's or the role's default.
        client
            .batch_execute("SET synchronous_commit = on")
            .await
            .map_err(pg)?;
        let st = Statements::prepare(&client).await.map_err(pg)?;
        Ok(Conn { client, st })
    }
}

/// The PostgreSQL backend. Shared ([`Store::is_shared`]): any number of
/// engine processes may use one database at once.
pub struct PostgresStore {
    pool: Pool,
    size: usize,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool_size", &self.size)
            .field("idle", &self.pool.lock_idle().len())
            .finish()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/database`,
    /// or a `key=value` connection string) and creates the tables if they
    /// are missing. The pool holds 16 connections unless the URL says
    /// `pool_size=N` (`postgres://host/db?pool_size=32`): how many calls run
    /// at once, and so how many sagas' commits can share one WAL flush.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let (url, size) = take_pool_size(url)?;
        Self::connect_with_pool(&url, size.unwrap_or(DEFAULT_POOL_SIZE)).await
    }

    /// Like [`PostgresStore::connect`], with at most `size` connections (at
    /// least 1).
    pub async fn connect_with_pool(url: &str, size: usize) -> Result<PostgresStore, StoreError> {
        let mut config: Config = url
            .parse()
            .map_err(|e| StoreError::Io(format!("bad PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            // A server that accepts no connection must not hang every call.
            config.connect_timeout(Duration::from_secs(10));
        }
        let size = size.max(1);
        let bootstrap = {
            let (mut client, connection) = config.connect(NoTls).await.map_err(pg)?;
            let task = tokio::spawn(connection);
            schema::migrate(&mut client).await?;
            drop(client);
            task
        };
        // The bootstrap connection ends once its client is dropped.
        let _ = bootstrap.await;
        let store = PostgresStore {
            pool: Pool {
                config,
                permits: Arc::new(Semaphore::new(size)),
                idle: Mutex::new(Vec::with_capacity(size)),
            },
            size,
        };
        // Open one pooled connection now, so a bad URL or server fails here.
        drop(store.pool.get().await?);
        Ok(store)
    }
}

/// Splits our own `pool_size` option off a connection string, which the
/// driver would refuse as unknown.
fn take_pool_size(url: &str) -> Result<(String, Option<usize>), StoreError> {
    let parse = |v: &str| {
        v.parse::<usize>()
            .map_err(|e| StoreError::Io(format!("bad pool_size {v:?}: {e}")))
    };
    let mut size = None;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), None));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.strip_prefix("pool_size=") {
                Some(v) => size = Some(parse(v)?),
                None => kept.push(pair),
            }
        }
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((url, size));
    }
    let mut kept = Vec::new();
    for word in url.split_whitespace() {
        match word.strip_prefix("pool_size=") {
            Some(v) => size = Some(parse(v)?),
            None => kept.push(word),
        }
    }
    Ok((kept.join(" "), size))
}

/// A PostgreSQL error as a store error, with the server's message if any.
fn pg(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Io(format!("PostgreSQL: {db}")),
        None => {
            let mut msg = format!("PostgreSQL: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            StoreError::Io(msg)
        }
    }
}

/// u64 counters and times as BIGINT. Values past `i64::MAX` (never stored)
/// saturate, so a comparison with them simply finds nothing.
fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unbig(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn encode<T: serde::Serialize>(what: &str, id: &SagaId, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt {
        key: format!("{what} of saga {id}"),
        reason: format!("does not encode: {e}"),
    })
}

/// The events' sequence numbers and JSON, as the two arrays the statements
/// unnest.
fn encode_events(id: &SagaId, events: &[SagaEvent]) -> Result<(Vec<i64>, Vec<String>), StoreError> {
    let mut seqs = Vec::with_capacity(events.len());
    let mut bodies = Vec::with_capacity(events.len());
    for e in events {
        if e.saga_id != *id {
            return Err(StoreError::Corrupt {
                key: format!("event {} of saga {id}", e.seq),
                reason: format!("names saga {}", e.saga_id),
            });
        }
        seqs.push(big(e.seq));
        bodies.push(encode("event", id, e)?);
    }
    Ok((seqs, bodies))
}

/// A row of [`COLUMNS`] as a record, its revision and lease from the columns.
fn record_of(row: &Row) -> Result<SagaRecord, StoreError> {
    let text: &str = row.get(0);
    let mut rec: SagaRecord = serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        key: format!("sagas row {}", text.chars().take(80).collect::<String>()),
        reason: e.to_string(),
    })?;
    rec.revision = unbig(row.get(1));
    rec.lease = row.get::<_, Option<String>>(2).map(|owner| Lease {
        owner,
        generation: unbig(row.get(3)),
        expires_at_ms: unbig(row.get(4)),
    });
    Ok(rec)
}

fn records_of(rows: &[Row]) -> Result<Vec<SagaRecord>, StoreError> {
    rows.iter().map(record_of).collect()
}

/// The record's search attributes as parallel arrays of names and values.
fn attribute_arrays(record: &SagaRecord) -> (Vec<&str>, Vec<&str>) {
    record
        .attributes
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .unzip()
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for PostgresStore {
    async fn create(
        &self,
        record: &SagaRecord,
        events: &[SagaEvent],
    ) -> Result<CreateOutcome, StoreError> {
        let body = encode("record", &record.id, record)?;
        let (seqs, bodies) = encode_events(&record.id, events)?;
        let lease = record.lease.as_ref();
        let version = i32::try_from(record.version).map_err(|_| StoreError::Corrupt {
            key: format!("saga {}", record.id),
            reason: format!("definition version {} exceeds INT", record.version),
        })?;
        let finished_ms = retention::finished_ms(record);
        let (names, values) = attribute_arrays(record);
        let c = self.pool.get().await?;
        // A key forgotten between our insert and our look-up leaves
        // nothing to return: insert again (twice at most, in practice).
        for _ in 0..3 {
            let row = c
                .client
                .query_one(
                    &c.st.create,
                    &[
                        &record.id.as_str(),
                        &record.definition,
                        &version,
                        &record.idempotency_key,
                        &record.status().as_str(),
                        &big(record.revision),
                        &lease.map(|l| l.owner.as_str()),
                        &lease.map_or(0, |l| big(l.generation)),
                        &lease.map_or(0, |l| big(l.expires_at_ms)),
                        &big(record.created_at_ms),
                        &body,
                        &seqs,
                        &bodies,
                        &finished_ms,
                        &names,
                        &values,
                        &record.is_overdue(),
                    ],
                )
                .await
                .map_err(pg)?;
            if row.get::<_, bool>(0) {
                return Ok(CreateOutcome::Created);
            }
            // Nothing was inserted: the key names a committed saga or a
            // purged saga's tombstone, or the id is taken. (A racing
            // create or purge of the same key had committed before ON
            // CONFLICT gave up, so this statement sees it.)
            let Some(key) = &record.idempotency_key else {
                break;
            };
            let owner = c
                .client
                .query_opt(&c.st.key_owner, &[key])
                .await
                .map_err(pg)?;
            match owner {
                Some(row) => {
                    if let Some(purged) = row.get::<_, Option<i64>>(5) {
                        return Ok(CreateOutcome::Retired {
                            purged_at_ms: unbig(purged),
                        });
                    }
                    return Ok(CreateOutcome::Existing(Box::new(record_of(&row)?)));
                }
                None => continue,
            }
        }
        Err(StoreError::AlreadyExists(record.id.clone()))
    }

    async fn update(&self, record: &SagaRecord, events: &[SagaEvent]) -> Result<(), StoreError> {
        let body = encode("record", &record.id, record)?;
        let (seqs, bodies) = encode_events(&record.id, events)?;
        let lease = record.lease.as_ref();
        let (names, values) = attribute_arrays(record);
        let c = self.pool.get().await?;
        let row = c
            .client
            .query_one(
                &c.st.update,
                &[
                    &record.id.as_str(),
                    &big(record.revision),
                    &record.status().as_str(),
                    &body,
                    &lease.map(|l| l.owner.as_str()),
                    &lease.map_or(0, |l| big(l.generation)),
                    &lease.map_or(0, |l| big(l.expires_at_ms)),
                    &seqs,
                    &bodies,
                    &retention::finished_ms(record),
                    &names,
                    &values,
                    &record.is_overdue(),
                ],
            )
            .await
            .map_err(pg)?;
        if row.get::<_, bool>(0) {
            return Ok(());
        }
        Err(StoreError::Conflict {
            id: record.id.clone(),
            expected: record.revision.wrapping_sub(1),
            found: row.get::<_, Option<i64>>(1).map(unbig),
        })
    }

    async fn get(&self, id: &SagaId) -> Result<Option<SagaRecord>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .client
            .query_opt(&c.st.get, &[&id.as_str()])
            .await
            .map_err(pg)?;
        row.as_ref().map(record_of).transpose()
    }

    async fn find_by_key(&self, key: &str) -> Result<Option<SagaId>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .client
            .query_opt(&c.st.find_by_key, &[&key])
            .await
            .map_err(pg)?;
        Ok(row.map(|r| SagaId::from_raw(r.get(0))))
    }

    async fn history(&self, id: &SagaId) -> Result<Vec<SagaEvent>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .client
            .query(&c.st.history, &[&id.as_str()])
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                serde_json::from_str(r.get(0)).map_err(|e| StoreError::Corrupt {
                    key: format!("history of saga {id}"),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    async fn list_active(&self) -> Result<Vec<SagaRecord>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c.client.query(&c.st.list_active, &[]).await.map_err(pg)?;
        records_of(&rows)
    }

    async fn list(
        &self,
        status: Option<SagaStatus>,
        limit_n: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        let c = self.pool.get().await?;
        let rows = match status {
            None => c.client.query(&c.st.list_all, &[&limit(limit_n)]).await,
            Some(s) => {
                c.client
                    .query(&c.st.list_status, &[&s.as_str(), &limit(limit_n)])
                    .await
            }
        }
        .map_err(pg)?;
        records_of(&rows)
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn claim(
        &self,
        owner: &str,
        now_ms: u64,
        ttl_ms: u64,
        limit_n: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        if limit_n == 0 {
            return Ok(Vec::new());
        }
        let c = self.pool.get().await?;
        let rows = c
            .client
            .query(
                &c.st.claim,
                &[
                    &owner,
                    &big(now_ms),
                    &big(now_ms.saturating_add(ttl_ms)),
                    &limit(limit_n),
                ],
            )
            .await
            .map_err(pg)?;
        let mut out = records_of(&rows)?;
        // RETURNING gives no order; hand them out oldest first (generated
        // ids sort by creation time).
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn renew(
        &self,
        owner: &str,
        leases: &[(SagaId, u64)],
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Vec<SagaId>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = leases.iter().map(|(id, _)| id.as_str()).collect();
        let gens: Vec<i64> = leases.iter().map(|(_, g)| big(*g)).collect();
        let c = self.pool.get().await?;
        let rows = c
            .client
            .query(
                &c.st.renew,
                &[&owner, &ids, &big(now_ms.saturating_add(ttl_ms)), &gens],
            )
            .await
            .map_err(pg)?;
        let kept: std::collections::HashSet<&str> = rows.iter().map(|r| r.get(0)).collect();
        Ok(leases
            .iter()
            .filter(|(id, _)| !kept.contains(id.as_str()))
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn release(&self, owner: &str, ids: &[SagaId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = ids.iter().map(SagaId::as_str).collect();
        let c = self.pool.get().await?;
        c.client
            .execute(&c.st.release, &[&owner, &ids])
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn finished_before(
        &self,
        before_ms: u64,
        limit_n: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        if limit_n == 0 {
            return Ok(Vec::new());
        }
        let c = self.pool.get().await?;
        retention::finished_before(&c, before_ms, limit_n).await
    }

    async fn purge(&self, ids: &[SagaId], now_ms: u64) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let c = self.pool.get().await?;
        retention::purge(&c, ids, now_ms).await
    }

    async fn forget_keys(&self, before_ms: u64, limit_n: usize) -> Result<usize, StoreError> {
        if limit_n == 0 {
            return Ok(0);
        }
        let c = self.pool.get().await?;
        retention::forget_keys(&c, before_ms, limit_n).await
    }

    async fn list_page(
        &self,
        filter: &SagaFilter,
        cursor: Option<&PageCursor>,
        limit_n: usize,
    ) -> Result<SagaPage, StoreError> {
        let c = self.pool.get().await?;
        query::list_page(&c, filter, cursor, limit_n).await
    }

    async fn definition_pauses(
        &self,
    ) -> Result<std::collections::BTreeMap<String, crate::machine::PauseMark>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .client
            .query("SELECT definition, mark FROM saga_definition_pauses", &[])
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                let name: String = r.get(0);
                let mark = serde_json::from_str(r.get(1)).map_err(|e| StoreError::Corrupt {
                    key: format!("pause of definition {name}"),
                    reason: e.to_string(),
                })?;
                Ok((name, mark))
            })
            .collect()
    }

    async fn set_definition_pause(
        &self,
        definition: &str,
        mark: Option<&crate::machine::PauseMark>,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        match mark {
            Some(m) => {
                let body = serde_json::to_string(m).expect("pause marks serialize");
                c.client
                    .execute(
                        "INSERT INTO saga_definition_pauses (definition, mark) VALUES ($1, $2)
                         ON CONFLICT (definition) DO UPDATE SET mark = EXCLUDED.mark",
                        &[&definition, &body],
                    )
                    .await
            }
            None => {
                c.client
                    .execute(
                        "DELETE FROM saga_definition_pauses WHERE definition = $1",
                        &[&definition],
                    )
                    .await
            }
        }
        .map_err(pg)?;
        Ok(())
    }

    async fn status_counts(&self) -> Result<StatusCounts, StoreError> {
        let c = self.pool.get().await?;
        query::status_counts(&c).await
    }

    /// Not kept: a count shared by several processes would need a query
    /// (or a counter row every create and purge contends on), and this is
    /// a synchronous call. `SELECT count(*) FROM sagas WHERE purged_ms IS
    /// NULL` gives it exactly; `pg_class.reltuples` roughly.
    fn saga_count(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::take_pool_size;

    #[test]
    fn pool_size_is_taken_off_the_url() {
        let t = |u: &str| take_pool_size(u).unwrap();
        assert_eq!(t("postgres://h/db"), ("postgres://h/db".into(), None));
        assert_eq!(
            t("postgres://h/db?pool_size=32"),
            ("postgres://h/db".into(), Some(32))
        );
        assert_eq!(
            t("postgresql://h/db?application_name=x&pool_size=4&connect_timeout=3"),
            (
                "postgresql://h/db?application_name=x&connect_timeout=3".into(),
                Some(4)
            )
        );
        assert_eq!(
            t("host=h pool_size=8 dbname=d"),
            ("host=h dbname=d".into(), Some(8))
        );
        assert!(take_pool_size("postgres://h/db?pool_size=many").is_err());
    }
}
