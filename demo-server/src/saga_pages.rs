//! Newest-first pages of sagas with a cursor, filtered by status,
//! definition and age, without loading every saga.
//!
//! Saga ids start with 12 hex digits of their creation time, and the sled
//! store keys each record `s/{id}` in its tree, so a reverse range scan of
//! those keys walks the sagas newest first, and an age filter is a key
//! range. Only the keys are walked; each candidate's record is read through
//! the engine ([`saga_engine::Engine::status`]), so the record format stays
//! the engine's business. A status or definition filter reads records until
//! the page is full or [`SCAN_BUDGET`] records were looked at; the page then
//! carries a cursor to go on from, and `partial` says the budget ran out.
//!
//! This leans on the sled store's key layout (tree `saga_engine`, prefix
//! `s/`): what the engine should offer instead is a `list_page(filter,
//! cursor, newest_first)` on its `Store` trait. A shared store (PostgreSQL)
//! or a state whose database is not the store's falls back to the engine's
//! oldest-first `list`, reversed in memory (a full scan).

use saga_engine::{SagaId, SagaRecord, SagaStatus, Store, StoreError};

/// Records read at most for one page.
pub const SCAN_BUDGET: usize = 5_000;

/// The sled tree of the engine's store, and its record prefix.
const STORE_TREE: &str = "saga_engine";
const RECORD_PREFIX: &[u8] = b"s/";

/// What a page asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageQuery {
    /// Only sagas with this status.
    pub status: Option<SagaStatus>,
    /// Only sagas of this definition.
    pub definition: Option<String>,
    /// Only sagas created at or after this time (ms since the epoch).
    pub created_after_ms: Option<u64>,
    /// Only sagas created before this time (ms since the epoch).
    pub created_before_ms: Option<u64>,
    /// Go on after this saga (the previous page's `next_cursor`).
    pub cursor: Option<SagaId>,
    /// Sagas on the page, at most.
    pub limit: usize,
}

/// One page, newest first.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The sagas.
    pub sagas: Vec<SagaRecord>,
    /// Where the next page starts, if there may be one.
    pub next_cursor: Option<String>,
    /// Records read to fill the page.
    pub scanned: usize,
    /// True when the scan budget ran out before the page was full.
    pub partial: bool,
}

/// The first 12 hex digits of an id created at `ms` (as `SagaId::from_parts`).
fn time_prefix(ms: u64) -> String {
    format!("{:012x}", ms & 0xffff_ffff_ffff)
}

fn matches(q: &PageQuery, r: &SagaRecord) -> bool {
    q.status.is_none_or(|s| r.status() == s)
        && q.definition.as_deref().is_none_or(|d| r.definition == d)
        && q.created_after_ms.is_none_or(|t| r.created_at_ms >= t)
        && q.created_before_ms.is_none_or(|t| r.created_at_ms < t)
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

/// One page of sagas for `q`, newest first, from `store` (whose sled
/// database, if it has one, is `db`).
pub async fn page(store: &dyn Store, db: &sled::Db, q: &PageQuery) -> Result<Page, StoreError> {
    let has_tree = db
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == STORE_TREE.as_bytes());
    if store.is_shared() || !has_tree {
        return page_by_full_scan(store, q).await;
    }
    let tree = db.open_tree(STORE_TREE).map_err(io)?;
    let mut lo = RECORD_PREFIX.to_vec();
    if let Some(t) = q.created_after_ms {
        lo.extend_from_slice(time_prefix(t).as_bytes());
    }
    // Exclusive upper bound: the cursor, else the creation-time bound, else
    // the end of the prefix.
    let hi = match (&q.cursor, q.created_before_ms) {
        (Some(c), _) => [RECORD_PREFIX, c.as_str().as_bytes()].concat(),
        (None, Some(t)) => [RECORD_PREFIX, time_prefix(t).as_bytes()].concat(),
        (None, None) => b"s0".to_vec(), // '0' follows '/'
    };
    let mut out = Page::default();
    if lo >= hi {
        return Ok(out);
    }
    let mut last_seen: Option<String> = None;
    for kv in tree.range(lo..hi).rev() {
        let (k, _) = kv.map_err(io)?;
        let Some(raw) = k
            .get(RECORD_PREFIX.len()..)
            .and_then(|b| std::str::from_utf8(b).ok())
        else {
            continue;
        };
        let Some(id) = SagaId::parse(raw) else {
            continue;
        };
        if out.scanned >= SCAN_BUDGET {
            out.partial = true;
            out.next_cursor = last_seen;
            return Ok(out);
        }
        out.scanned += 1;
        last_seen = Some(raw.to_string());
        let Some(rec) = store.get(&id).await? else {
            continue; // purged meanwhile
        };
        if !matches(q, &rec) || !created_for_good(store, &rec).await? {
            continue;
        }
        out.sagas.push(rec);
        if out.sagas.len() >= q.limit {
            out.next_cursor = last_seen;
            return Ok(out);
        }
    }
    Ok(out)
}

/// False for the record of a create that never finished (its idempotency
/// key names no saga, or another one); the engine's own `list` skips those.
async fn created_for_good(store: &dyn Store, rec: &SagaRecord) -> Result<bool, StoreError> {
    match &rec.idempotency_key {
        Some(key) if !rec.status().is_terminal() => {
            Ok(store.find_by_key(key).await?.as_ref() == Some(&rec.id))
        }
        _ => Ok(true),
    }
}

async fn page_by_full_scan(store: &dyn Store, q: &PageQuery) -> Result<Page, StoreError> {
    let all = store.list(q.status, usize::MAX).await?;
    let scanned = all.len();
    let mut sagas: Vec<SagaRecord> = all
        .into_iter()
        .rev()
        .filter(|r| matches(q, r))
        .filter(|r| q.cursor.as_ref().is_none_or(|c| r.id.as_str() < c.as_str()))
        .take(q.limit + 1)
        .collect();
    let more = sagas.len() > q.limit;
    sagas.truncate(q.limit);
    let next_cursor = if more {
        sagas.last().map(|r| r.id.to_string())
    } else {
        None
    };
    Ok(Page {
        sagas,
        next_cursor,
        scanned,
        partial: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_prefix_is_the_ids() {
        let id = SagaId::from_parts(1_700_000_000_123, 42);
        assert!(id.as_str().starts_with(&time_prefix(1_700_000_000_123)));
        assert!(time_prefix(1) < time_prefix(2));
        assert!(
            time_prefix(0x0fff) < time_prefix(0xa000),
            "hex sorts as bytes"
        );
    }
}
