//! Where everything lives in the sled tree, and how values are encoded.

use crate::events::SagaEvent;
use crate::machine::SagaStatus;
use crate::store::{SagaRecord, StoreError};
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

/// A saga's value: `[format u8][revision u64 BE][record len u32 BE][record
/// JSON]` then the newest part of its history, each event as `[len u32
/// BE][event]`. New events are appended to the old bytes without decoding
/// them. Format 2 (written now) encodes an event as the JSON array
/// `[seq, at_ms, kind]` (the saga id is the key's); format 1 (read, and
/// re-encoded at the saga's next update) as a whole `SagaEvent` object.
///
/// Once the embedded history passes [`SPILL_BYTES`], an update moves it to
/// a chunk of its own, `h/{id len u8}{id}{first seq u64 BE}` (same
/// framing), and the value starts a new one: a transition writes at most
/// the record, one chunk's worth of events and its own events, however
/// long the saga has run.
pub(super) struct Value<'a> {
    pub(super) format: u8,
    pub(super) revision: u64,
    pub(super) record: &'a [u8],
    pub(super) events: &'a [u8],
}

/// The value format written now.
pub(super) const VALUE_FORMAT: u8 = 2;
/// Events as whole `SagaEvent` objects.
pub(super) const VALUE_FORMAT_V1: u8 = 1;
/// Embedded history size past which an update spills it into a chunk.
pub(super) const SPILL_BYTES: usize = 8 * 1024;

impl<'a> Value<'a> {
    pub(super) fn parse(key: &[u8], bytes: &'a [u8]) -> Result<Value<'a>, StoreError> {
        if bytes.len() < 13 || !matches!(bytes[0], VALUE_FORMAT | VALUE_FORMAT_V1) {
            return Err(corrupt(key, "unknown value format"));
        }
        let revision = u64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(bytes[9..13].try_into().expect("4 bytes")) as usize;
        let record = bytes
            .get(13..13 + len)
            .ok_or_else(|| corrupt(key, "truncated record"))?;
        Ok(Value {
            format: bytes[0],
            revision,
            record,
            events: &bytes[13 + len..],
        })
    }

    pub(super) fn record(&self, key: &[u8]) -> Result<SagaRecord, StoreError> {
        serde_json::from_slice(self.record).map_err(|e| corrupt(key, e))
    }

    pub(super) fn events(&self, id: &SagaId, key: &[u8]) -> Result<Vec<SagaEvent>, StoreError> {
        decode_events(self.format, id, key, self.events)
    }

    /// The embedded events in the current encoding.
    pub(super) fn events_bytes(&self, id: &SagaId, key: &[u8]) -> Result<Vec<u8>, StoreError> {
        if self.format == VALUE_FORMAT {
            return Ok(self.events.to_vec());
        }
        Ok(encode_events(&self.events(id, key)?))
    }
}

/// Decodes framed events of `format`.
pub(super) fn decode_events(
    format: u8,
    id: &SagaId,
    key: &[u8],
    mut rest: &[u8],
) -> Result<Vec<SagaEvent>, StoreError> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = rest
            .get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| corrupt(key, "truncated event length"))?;
        let body = rest
            .get(4..4 + len)
            .ok_or_else(|| corrupt(key, "truncated event"))?;
        out.push(if format == VALUE_FORMAT_V1 {
            serde_json::from_slice(body).map_err(|e| corrupt(key, e))?
        } else {
            let (seq, at_ms, kind) = serde_json::from_slice(body).map_err(|e| corrupt(key, e))?;
            SagaEvent {
                saga_id: id.clone(),
                seq,
                at_ms,
                kind,
            }
        });
        rest = &rest[4 + len..];
    }
    Ok(out)
}

/// Frames events in the current encoding.
pub(super) fn encode_events(events: &[SagaEvent]) -> Vec<u8> {
    let mut v = Vec::with_capacity(100 * events.len());
    for e in events {
        // Our event types contain only strings and numbers: serializing
        // them cannot fail.
        let body =
            serde_json::to_vec(&(e.seq, e.at_ms, &e.kind)).expect("saga events always serialize");
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(&body);
    }
    v
}

/// A value in the current format: the record, then `old_events` (already
/// encoded), then `new_events`.
pub(super) fn encode_value(
    record: &SagaRecord,
    old_events: &[u8],
    new_events: &[SagaEvent],
) -> Vec<u8> {
    // Our record types contain only strings, numbers and JSON values:
    // serializing them cannot fail.
    let rec = serde_json::to_vec(record).expect("saga records always serialize");
    let new = encode_events(new_events);
    let mut v = Vec::with_capacity(13 + rec.len() + old_events.len() + new.len());
    v.push(VALUE_FORMAT);
    v.extend_from_slice(&record.revision.to_be_bytes());
    v.extend_from_slice(&(rec.len() as u32).to_be_bytes());
    v.extend_from_slice(&rec);
    v.extend_from_slice(old_events);
    v.extend_from_slice(&new);
    v
}

/// A value in format 1, as stores written before format 2 hold them (for
/// the tests that read the old format).
#[cfg(test)]
pub(super) fn encode_value_v1(record: &SagaRecord, events: &[SagaEvent]) -> Vec<u8> {
    let rec = serde_json::to_vec(record).expect("saga records always serialize");
    let mut v = vec![VALUE_FORMAT_V1];
    v.extend_from_slice(&record.revision.to_be_bytes());
    v.extend_from_slice(&(rec.len() as u32).to_be_bytes());
    v.extend_from_slice(&rec);
    for e in events {
        let body = serde_json::to_vec(e).expect("saga events always serialize");
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(&body);
    }
    v
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
