//! Where everything lives in the sled tree; how a saga's value is encoded
//! is `value`'s.

mod value;

pub(super) use value::*;

use crate::machine::SagaStatus;
use crate::store::StoreError;
use crate::SagaId;

/// Finished for retention: ended for good (a stuck saga is not).
pub(super) fn is_finished(status: SagaStatus) -> bool {
    matches!(status, SagaStatus::Completed | SagaStatus::Compensated)
}

/// `f/{finished at, ms, BE}{id}`: finished sagas in the order they ended.
pub(super) fn finished_key(at_ms: u64, id: &SagaId) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + id.as_str().len());
    k.extend_from_slice(b"f/");
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

pub(super) fn parse_finished_key(k: &[u8]) -> Option<(u64, SagaId)> {
    let at = u64::from_be_bytes(k.get(2..10)?.try_into().ok()?);
    let id = std::str::from_utf8(k.get(10..)?).ok()?;
    Some((at, SagaId::from_raw(id.to_string())))
}

/// `r/{retired at, ms, BE}{key}`: retired idempotency keys, oldest first.
pub(super) fn retired_key(at_ms: u64, k: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + k.len());
    out.extend_from_slice(b"r/");
    out.extend_from_slice(&at_ms.to_be_bytes());
    out.extend_from_slice(k.as_bytes());
    out
}

/// The value of `k/{key}` once its saga is purged: a zero byte (no saga id
/// starts with one) and the purge time.
pub(super) fn retired_marker(at_ms: u64) -> [u8; 9] {
    let mut v = [0u8; 9];
    v[1..].copy_from_slice(&at_ms.to_be_bytes());
    v
}

pub(super) fn retired_at(v: &[u8]) -> Option<u64> {
    (v.len() == 9 && v[0] == 0).then(|| u64::from_be_bytes(v[1..].try_into().expect("8 bytes")))
}

pub(super) const PURGED_KEY: &[u8] = b"m/purged";

pub(super) fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

pub(super) fn key(prefix: &[u8], id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + id.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(id.as_bytes());
    k
}

pub(super) fn corrupt(key: &[u8], reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}

/// `h/{id len u8}{id}`: the prefix of a saga's history chunks.
pub(super) fn chunk_prefix(id: &SagaId) -> Vec<u8> {
    let id = id.as_str().as_bytes();
    let mut k = Vec::with_capacity(3 + id.len() + 8);
    k.extend_from_slice(b"h/");
    k.push(id.len().min(255) as u8);
    k.extend_from_slice(id);
    k
}

/// The chunk whose first event has sequence number `first_seq`.
pub(super) fn chunk_key(id: &SagaId, first_seq: u64) -> Vec<u8> {
    let mut k = chunk_prefix(id);
    k.extend_from_slice(&first_seq.to_be_bytes());
    k
}
