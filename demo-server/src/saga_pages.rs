//! Newest-first pages of sagas with a cursor, filtered by status,
//! definition, age and one search attribute, without loading every saga.
//!
//! A page is one [`Store::list_page`] call: the store walks its indexes by
//! creation time (by status, by search attribute) and reads the records of
//! the page only, on every backend (sled, PostgreSQL). The cursor handed
//! out is the id of the page's last saga, as before; the next request turns
//! it back into the store's position by reading that one record (or, if it
//! was purged meanwhile, from the creation time every engine-made id starts
//! with).
//!
//! Search attributes are given as `name:value` (the API's `attr=`) or
//! `name=value` (the command line's `--attr`); the booking's `email`
//! attribute is a hash, so a plain address given for it is hashed here
//! ([`booking_domain::search::email_attribute`]) and never stored or logged.

use saga_engine::store::{PageCursor, SagaFilter};
use saga_engine::{SagaId, SagaRecord, SagaStatus, Store, StoreError};

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
    /// Only sagas whose search attribute `name` is `value` (see [`attribute`]).
    pub attribute: Option<(String, String)>,
    /// Only overdue sagas (past their deadline after the pivot, not
    /// finished), from the store's overdue index.
    pub overdue: bool,
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
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<String>,
    /// Records on the page (the store reads one more, to know whether a
    /// next page exists, and index entries, never every record).
    pub scanned: usize,
    /// Always false: a page is never cut short (kept for API clients).
    pub partial: bool,
}

/// Reads a search attribute filter, `name` and `value` split at the first
/// `sep` (`:` in the API, `=` on the command line). An `email` given as an
/// address is replaced by its hash, as the booking indexes it.
pub fn attribute(raw: &str, sep: char) -> Result<(String, String), String> {
    let Some((name, value)) = raw.split_once(sep) else {
        return Err(format!(
            "expected name{sep}value, e.g. reference{sep}ABC123"
        ));
    };
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty() || value.is_empty() {
        return Err(format!("expected name{sep}value, both non-empty"));
    }
    if name.len() > saga_engine::MAX_ATTRIBUTE_BYTES
        || value.len() > saga_engine::MAX_ATTRIBUTE_BYTES
    {
        return Err(format!(
            "name and value are at most {} bytes",
            saga_engine::MAX_ATTRIBUTE_BYTES
        ));
    }
    let value = if name == booking_domain::search::EMAIL && value.contains('@') {
        booking_domain::search::email_attribute(value)
    } else {
        value.to_string()
    };
    Ok((name.to_string(), value))
}

/// The store position after saga `id`: its creation time from its record,
/// or (purged meanwhile) from the time prefix of an engine-made id.
async fn position(store: &dyn Store, id: &SagaId) -> Result<PageCursor, StoreError> {
    if let Some(r) = store.get(id).await? {
        return Ok(PageCursor::after(&r));
    }
    let created = id
        .as_str()
        .get(..12)
        .and_then(|p| u64::from_str_radix(p, 16).ok())
        .unwrap_or(0);
    Ok(PageCursor::at(created, id.clone()))
}

/// Sagas in the store, from its status counters.
pub async fn total(store: &dyn Store) -> Result<u64, StoreError> {
    Ok(store.status_counts().await?.values().sum())
}

/// One page of sagas for `q`, newest first, from `store`.
pub async fn page(store: &dyn Store, q: &PageQuery) -> Result<Page, StoreError> {
    let filter = SagaFilter {
        statuses: q.status.into_iter().collect(),
        definition: q.definition.clone(),
        created_after_ms: q.created_after_ms,
        created_before_ms: q.created_before_ms,
        attribute: q.attribute.clone(),
        overdue: q.overdue,
    };
    let cursor = match &q.cursor {
        Some(id) => Some(position(store, id).await?),
        None => None,
    };
    let page = store.list_page(&filter, cursor.as_ref(), q.limit).await?;
    let next_cursor = page
        .next
        .is_some()
        .then(|| page.records.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Page {
        scanned: page.records.len(),
        sagas: page.records,
        next_cursor,
        partial: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_split_checked_and_addresses_hashed() {
        assert_eq!(
            attribute("reference:ABC123", ':').unwrap(),
            ("reference".into(), "ABC123".into())
        );
        assert_eq!(
            attribute("departure=2026-12-24", '=').unwrap(),
            ("departure".into(), "2026-12-24".into())
        );
        let (n, v) = attribute("email:Ada@Example.com", ':').unwrap();
        assert_eq!(n, "email");
        assert_eq!(
            v,
            booking_domain::search::email_attribute("ada@example.com")
        );
        assert!(!v.contains("ada"));
        for bad in ["reference", ":x", "reference:", " : "] {
            assert!(attribute(bad, ':').is_err(), "{bad:?} accepted");
        }
        let long = format!(
            "reference:{}",
            "x".repeat(saga_engine::MAX_ATTRIBUTE_BYTES + 1)
        );
        assert!(attribute(&long, ':').is_err());
    }
}
