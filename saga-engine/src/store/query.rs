//! Paged listing and per-status counts: what an operator's saga list asks
//! of a store without reading every saga.
//!
//! [`Store::list_page`](super::Store::list_page) returns sagas newest first
//! (by creation time, then id), filtered by a [`SagaFilter`] (a set of
//! statuses, a definition, a creation-time window, one search attribute),
//! a page at a time: the [`PageCursor`] of a page says where the next one
//! starts. Backends answer from indexes ordered by creation time, reading
//! the records of the page only.
//! [`Store::status_counts`](super::Store::status_counts) answers from
//! counters that every status change moves crash-safely (in its atomic
//! write, or journaled with it), keyed by the status's name, so a status added to [`SagaStatus`] is counted
//! without any change here.
//!
//! Search attributes are a record's [`SagaRecord::attributes`]: a few
//! `name = value` pairs a definition derives from the saga's data when the
//! saga is created (see
//! [`SagaDefinitionBuilder::search_attribute`](crate::SagaDefinitionBuilder::search_attribute)).
//! Backends index them with the record, crash-safely, and remove them
//! with it.

use super::SagaRecord;
use crate::machine::SagaStatus;
use crate::SagaId;
use std::collections::BTreeMap;
use std::fmt;

/// Which sagas [`Store::list_page`](super::Store::list_page) returns; every
/// field left empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SagaFilter {
    /// Only sagas in one of these statuses (empty: any status).
    pub statuses: Vec<SagaStatus>,
    /// Only sagas of this definition.
    pub definition: Option<String>,
    /// Only sagas created at or after this time, ms since the Unix epoch.
    pub created_after_ms: Option<u64>,
    /// Only sagas created strictly before this time, ms since the Unix epoch.
    pub created_before_ms: Option<u64>,
    /// Only sagas whose search attribute `name` has exactly `value`.
    pub attribute: Option<(String, String)>,
    /// Only sagas that are overdue ([`SagaRecord::is_overdue`]: past their
    /// deadline after the pivot and not finished). Backends answer it
    /// from an index of those sagas alone, so listing them reads no other
    /// saga.
    pub overdue: bool,
}

impl SagaFilter {
    /// True when `record` passes every part of the filter (the definition
    /// of "matches" every backend's indexes implement).
    pub fn matches(&self, record: &SagaRecord) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&record.status()))
            && self
                .definition
                .as_ref()
                .is_none_or(|d| *d == record.definition)
            && self.in_window(record.created_at_ms)
            && self
                .attribute
                .as_ref()
                .is_none_or(|(n, v)| record.attributes.get(n) == Some(v))
            && (!self.overdue || record.is_overdue())
    }

    /// True when a creation time is inside the filter's window.
    pub fn in_window(&self, created_ms: u64) -> bool {
        self.created_after_ms.is_none_or(|a| created_ms >= a)
            && self.created_before_ms.is_none_or(|b| created_ms < b)
    }
}

/// Where the next page starts: after the saga created at `created_ms` with
/// id `id`, in newest-first order. Opaque to callers: its text form
/// ([`fmt::Display`], [`PageCursor::parse`]) is what an API hands out and
/// takes back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageCursor {
    pub(crate) created_ms: u64,
    pub(crate) id: SagaId,
}

/// A cursor text that no store handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a page cursor: {0}")]
pub struct BadCursor(pub String);

impl PageCursor {
    /// The cursor positioned just after `record` (the last of a page).
    pub fn after(record: &SagaRecord) -> PageCursor {
        PageCursor {
            created_ms: record.created_at_ms,
            id: record.id.clone(),
        }
    }

    /// The cursor positioned just after the saga created at `created_ms`
    /// with id `id` (for a caller that hands out saga ids as cursors and
    /// knows their creation times).
    pub fn at(created_ms: u64, id: SagaId) -> PageCursor {
        PageCursor { created_ms, id }
    }

    /// Reads a cursor from its text form.
    pub fn parse(s: &str) -> Result<PageCursor, BadCursor> {
        let bad = || BadCursor(s.chars().take(64).collect());
        if s.len() < 18 || !s.len().is_multiple_of(2) || !s.is_ascii() {
            return Err(bad());
        }
        let bytes: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let created_ms = u64::from_be_bytes(bytes[..8].try_into().map_err(|_| bad())?);
        let id = String::from_utf8(bytes[8..].to_vec()).map_err(|_| bad())?;
        Ok(PageCursor {
            created_ms,
            id: SagaId::from_raw(id),
        })
    }

    /// True when a saga at (`created_ms`, `id`) comes after the cursor in
    /// newest-first order (belongs to a later page).
    pub fn precedes(&self, created_ms: u64, id: &SagaId) -> bool {
        (created_ms, id) < (self.created_ms, &self.id)
    }
}

impl fmt::Display for PageCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.created_ms.to_be_bytes() {
            write!(f, "{b:02x}")?;
        }
        for b in self.id.as_str().as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One page of [`Store::list_page`](super::Store::list_page).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SagaPage {
    /// The sagas, newest first.
    pub records: Vec<SagaRecord>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<PageCursor>,
}

impl SagaPage {
    /// Builds a page from up to `limit + 1` matches in order: the extra one
    /// only says that there is a next page.
    pub fn from_matches(mut records: Vec<SagaRecord>, limit: usize) -> SagaPage {
        let next = if records.len() > limit {
            records.truncate(limit);
            records.last().map(PageCursor::after)
        } else {
            None
        };
        SagaPage { records, next }
    }
}

/// Sagas in the store by status name ([`SagaStatus::as_str`]); statuses
/// with no saga are absent.
pub type StatusCounts = BTreeMap<String, u64>;

/// Adds `delta` (+1 or -1) to `status`'s count, dropping a count that
/// reaches zero.
pub(crate) fn bump(counts: &mut StatusCounts, status: &str, delta: i64) {
    let n = counts.get(status).copied().unwrap_or(0);
    let n = n.saturating_add_signed(delta);
    if n == 0 {
        counts.remove(status);
    } else {
        counts.insert(status.to_string(), n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_text_is_refused() {
        let c = PageCursor {
            created_ms: 1_700_000_000_123,
            id: SagaId::from_raw("0123abc".into()),
        };
        assert_eq!(PageCursor::parse(&c.to_string()).unwrap(), c);
        for bad in [
            "",
            "zz",
            "00",
            "0000000000000000",
            "000000000000000g00",
            "é",
        ] {
            assert!(PageCursor::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
