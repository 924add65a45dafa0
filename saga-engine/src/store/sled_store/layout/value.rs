//! A saga's value, `s/{id}`: its revision, its record and the newest part
//! of its history, in the format written now (3: compressed) or either
//! older one (read, and rewritten in format 3 at the saga's next update).
//!
//! Every format starts `[format u8][revision u64 BE]`, so the revision
//! check of an update needs no decoding.
//!
//! - Format 1: `[record len u32 BE][record JSON]`, then each event as
//!   `[len u32 BE][SagaEvent JSON]`.
//! - Format 2: the same, each event as `[len u32 BE][[seq, at_ms, kind]
//!   JSON]` (the saga id is the key's).
//! - Format 3 (written now): `[parked u8][status len u8][status]` (what
//!   an update must know of the stored record to keep the indexes, read
//!   without decoding it: its status, and whether it is parked in a
//!   durable wait), `[record len u32 BE][body len u32 BE]`, then the body
//!   (the record JSON followed by the format-2 framed events) as one LZ4
//!   block compressed against [`DICTIONARY`]. The dictionary holds the
//!   field names and words every record and event repeats, so even a
//!   short value compresses: the record JSON and ten events of loadgen's
//!   four-step saga, 1,786 bytes, become 464 (728 without the
//!   dictionary), in 1.9 us (0.3 us to decompress; release, one core). A
//!   format-3 value is only readable with these exact dictionary bytes:
//!   they never change (a new dictionary is a new format).
//!
//! Once the embedded history passes [`SPILL_BYTES`] (uncompressed), an
//! update moves it to a chunk of its own, `h/{id len u8}{id}{first seq u64
//! BE}` (format-2 framing, uncompressed), and the value starts a new one: a
//! transition writes at most the record, one chunk's worth of events and
//! its own events, however long the saga has run.

use super::corrupt;
use crate::events::SagaEvent;
use crate::store::{SagaRecord, StoreError};
use crate::SagaId;
use std::borrow::Cow;

/// The value format written now.
pub(in crate::store::sled_store) const VALUE_FORMAT: u8 = 3;
/// Uncompressed, events as `[seq, at_ms, kind]` arrays.
pub(in crate::store::sled_store) const VALUE_FORMAT_V2: u8 = 2;
/// Uncompressed, events as whole `SagaEvent` objects.
pub(in crate::store::sled_store) const VALUE_FORMAT_V1: u8 = 1;
/// The event framing of history chunks (and inside a format-3 body).
pub(in crate::store::sled_store) const CHUNK_FORMAT: u8 = VALUE_FORMAT_V2;
/// Embedded history size (uncompressed) past which an update spills it
/// into a chunk.
pub(in crate::store::sled_store) const SPILL_BYTES: usize = 8 * 1024;

/// The LZ4 dictionary of format 3: what a record and its events are made
/// of, minus the values that differ between sagas. Frozen with the format.
pub(in crate::store::sled_store) const DICTIONARY: &[u8] = concat!(
    r#"{"revision":1,"v":1,"id":"","definition":"","version":1,"idempotency_key":null,"#,
    r#""input_fingerprint":1,"next_seq":1,"created_at_ms":17,"updated_at_ms":17,"#,
    r#""state":{"status":"running","steps":[{"name":"","state":"pending","attempts":0,"#,
    r#""compensation_attempts":0,"in_doubt":false,"last_error":null,"wake_at_ms":null,"#,
    r#""group":"","wrote":[""]},{"name":"","state":"succeeded","attempts":1,"#,
    r#""compensation_attempts":0,"in_doubt":false,"last_error":null,"wake_at_ms":null}],"#,
    r#""cancel_requested":false,"failure":null,"signals":[{"id":"","name":"","payload":null,"#,
    r#""consumed_by":null}],"deadline_ms":17,"deadline_passed":true,"overdue":true,"#,
    r#""paused":{"operator":"","reason":"","at_ms":17},"operations":[{"id":"","operation":"","#,
    r#""fingerprint":1,"operator":"","at_ms":17}],"rerun_of":"","reruns":[""]},"#,
    r#""data":{},"lease":null,"attributes":{}}"#,
    r#""compensating""completed""compensated""stuck""paused""retry_wait""rejected""#,
    r#""in_doubt""compensation_wait""compensation_failed""waiting""stuck_forward""#,
    r#"{"event":"compensation_started","step":"","attempt":1}]"#,
    r#"{"event":"step_compensated","step":"","attempt":1}]"#,
    r#"{"event":"compensation_failed","step":"","attempt":1,"error":"","retry_at_ms":null}]"#,
    r#"{"event":"step_failed","step":"","attempt":1,"error":"","kind":"retryable","retry_at_ms":null}]"#,
    r#"{"event":"wait_started","step":"","signal":null,"until_ms":17}]"#,
    r#"{"event":"signal_received","name":"","signal_id":"","step":null}]"#,
    r#"{"event":"saga_finished","status":"compensated","reason":null}]"#,
    r#"[0,17,{"event":"saga_started","definition":"","version":1}]"#,
    r#"[1,17,{"event":"step_started","step":"","attempt":1}]"#,
    r#"[2,17,{"event":"step_succeeded","step":"","attempt":1,"duration_us":1}]"#,
    r#"[9,17,{"event":"saga_finished","status":"completed","reason":null}]"#,
)
.as_bytes();

/// A parsed value: its revision, and its record and events in plain bytes
/// (borrowed from an uncompressed value, decompressed from a format-3 one).
pub(in crate::store::sled_store) struct Value<'a> {
    pub(in crate::store::sled_store) format: u8,
    pub(in crate::store::sled_store) revision: u64,
    /// The stored record's status and whether it is parked (format 3;
    /// older formats only say so once the record is decoded).
    pub(in crate::store::sled_store) head: Option<Head>,
    body: Cow<'a, [u8]>,
    /// Where the record ends and the events begin in `body`.
    split: usize,
}

/// What format 3 says of its record in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::store::sled_store) struct Head {
    /// [`SagaRecord::status`], by name.
    pub(in crate::store::sled_store) status: String,
    /// The record is in a durable wait (its state's `parked_until`).
    pub(in crate::store::sled_store) parked: bool,
}

fn be_u32(b: &[u8]) -> usize {
    u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize
}

impl<'a> Value<'a> {
    pub(in crate::store::sled_store) fn parse(
        key: &[u8],
        bytes: &'a [u8],
    ) -> Result<Value<'a>, StoreError> {
        if bytes.first().is_some_and(|f| *f > VALUE_FORMAT) {
            return Err(corrupt(
                key,
                format!(
                    "value format {} is newer than this build reads (1 to {VALUE_FORMAT}): \
                     the store was written by a later version",
                    bytes[0]
                ),
            ));
        }
        if bytes.len() < 13 || !matches!(bytes[0], 1..=VALUE_FORMAT) {
            return Err(corrupt(key, "unknown value format"));
        }
        let revision = u64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes"));
        let mut head = None;
        let (body, split) = if bytes[0] == VALUE_FORMAT {
            let truncated = || corrupt(key, "truncated value header");
            let status_len = *bytes.get(10).ok_or_else(truncated)? as usize;
            let status = bytes.get(11..11 + status_len).ok_or_else(truncated)?;
            let at = 11 + status_len;
            let (record_len, body_len) = match bytes.get(at..at + 8) {
                Some(b) => (be_u32(&b[..4]), be_u32(&b[4..])),
                None => return Err(truncated()),
            };
            head = Some(Head {
                status: std::str::from_utf8(status)
                    .map_err(|_| corrupt(key, "bad status in value header"))?
                    .to_string(),
                parked: bytes[9] != 0,
            });
            let packed = &bytes[at + 8..];
            // LZ4 expands at most about 255 times: a larger claim is
            // damage, not a reason to allocate it.
            if record_len > body_len || body_len > packed.len().saturating_mul(255) + 64 {
                return Err(corrupt(key, "bad compressed value lengths"));
            }
            let body = lz4_flex::block::decompress_with_dict(packed, body_len, DICTIONARY)
                .map_err(|e| corrupt(key, format!("undecodable value: {e}")))?;
            if body.len() != body_len {
                return Err(corrupt(key, "truncated compressed value"));
            }
            (Cow::Owned(body), record_len)
        } else {
            let record_len = be_u32(&bytes[9..13]);
            if bytes.len() < 13 + record_len {
                return Err(corrupt(key, "truncated record"));
            }
            (Cow::Borrowed(&bytes[13..]), record_len)
        };
        Ok(Value {
            format: bytes[0],
            revision,
            head,
            body,
            split,
        })
    }

    pub(in crate::store::sled_store) fn record(
        &self,
        key: &[u8],
    ) -> Result<SagaRecord, StoreError> {
        serde_json::from_slice(&self.body[..self.split]).map_err(|e| corrupt(key, e))
    }

    /// The embedded events' framing.
    fn events_format(&self) -> u8 {
        if self.format == VALUE_FORMAT_V1 {
            VALUE_FORMAT_V1
        } else {
            CHUNK_FORMAT
        }
    }

    pub(in crate::store::sled_store) fn events(
        &self,
        id: &SagaId,
        key: &[u8],
    ) -> Result<Vec<SagaEvent>, StoreError> {
        decode_events(self.events_format(), id, key, &self.body[self.split..])
    }

    /// The embedded events in [`CHUNK_FORMAT`] framing, as the next value
    /// (or a chunk) carries them.
    pub(in crate::store::sled_store) fn events_bytes(
        self,
        id: &SagaId,
        key: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        if self.events_format() == VALUE_FORMAT_V1 {
            return Ok(encode_events(&self.events(id, key)?));
        }
        let split = self.split;
        Ok(match self.body {
            Cow::Borrowed(b) => b[split..].to_vec(),
            Cow::Owned(mut b) => {
                b.drain(..split);
                b
            }
        })
    }
}

/// Decodes events framed in `format` (1, or 2 = [`CHUNK_FORMAT`]).
pub(in crate::store::sled_store) fn decode_events(
    format: u8,
    id: &SagaId,
    key: &[u8],
    mut rest: &[u8],
) -> Result<Vec<SagaEvent>, StoreError> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = rest
            .get(..4)
            .map(be_u32)
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

/// Frames events in [`CHUNK_FORMAT`].
pub(in crate::store::sled_store) fn encode_events(events: &[SagaEvent]) -> Vec<u8> {
    let mut v = Vec::with_capacity(100 * events.len());
    append_events(&mut v, events);
    v
}

fn append_events(v: &mut Vec<u8>, events: &[SagaEvent]) {
    for e in events {
        let at = v.len();
        v.extend_from_slice(&[0; 4]);
        // Our event types contain only strings and numbers: serializing
        // them cannot fail.
        serde_json::to_writer(&mut *v, &(e.seq, e.at_ms, &e.kind))
            .expect("saga events always serialize");
        let len = (v.len() - at - 4) as u32;
        v[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// A value in the current format: the record, then `old_events` (in
/// [`CHUNK_FORMAT`] framing), then `new_events`.
pub(in crate::store::sled_store) fn encode_value(
    record: &SagaRecord,
    old_events: &[u8],
    new_events: &[SagaEvent],
) -> Vec<u8> {
    let mut body = Vec::with_capacity(1024 + old_events.len() + 100 * new_events.len());
    // Our record types contain only strings, numbers and JSON values:
    // serializing them cannot fail.
    serde_json::to_writer(&mut body, record).expect("saga records always serialize");
    let record_len = body.len() as u32;
    body.extend_from_slice(old_events);
    append_events(&mut body, new_events);
    let packed = lz4_flex::block::compress_with_dict(&body, DICTIONARY);
    let status = record.status().as_str().as_bytes();
    let mut v = Vec::with_capacity(19 + status.len() + packed.len());
    v.push(VALUE_FORMAT);
    v.extend_from_slice(&record.revision.to_be_bytes());
    v.push(record.state.parked_until().is_some() as u8);
    // Status names are short words (`SagaStatus::as_str`).
    v.push(status.len() as u8);
    v.extend_from_slice(status);
    v.extend_from_slice(&record_len.to_be_bytes());
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(&packed);
    v
}

/// A value in an uncompressed format (1 or 2), as stores written before
/// format 3 hold them (for the tests that read the old formats).
#[cfg(test)]
pub(in crate::store::sled_store) fn encode_value_uncompressed(
    format: u8,
    record: &SagaRecord,
    events: &[SagaEvent],
) -> Vec<u8> {
    let rec = serde_json::to_vec(record).expect("saga records always serialize");
    let mut v = vec![format];
    v.extend_from_slice(&record.revision.to_be_bytes());
    v.extend_from_slice(&(rec.len() as u32).to_be_bytes());
    v.extend_from_slice(&rec);
    if format == VALUE_FORMAT_V2 {
        append_events(&mut v, events);
        return v;
    }
    for e in events {
        let body = serde_json::to_vec(e).expect("saga events always serialize");
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(&body);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;
    use crate::store::conformance::sample_record;

    fn events(id: &SagaId) -> Vec<SagaEvent> {
        (0..3)
            .map(|seq| SagaEvent {
                saga_id: id.clone(),
                seq,
                at_ms: 1_700_000_000_000 + seq,
                kind: EventKind::StepStarted {
                    step: "a".into(),
                    attempt: seq as u32 + 1,
                },
            })
            .collect()
    }

    /// A format-3 value as this code wrote it when the format was made:
    /// it must decode for as long as format 3 is read, so the dictionary
    /// (and the framing) can never change under stored data.
    const WRITTEN: &str = concat!(
        "030000000000000007000772756e6e696e670000021f000002ee089d0619379d06f00e303139306131623263",
        "33643465356636303731383239336134623563228e04006900008e0001a802506e666f726d1c050fc4062628",
        "3432c5061e33c5060ec40602e2000fc30616116190010131000fc4065207ac061f627b005d0fab0616069505",
        "102276080a9a05517d000000411d03163001000db8020ced02006801064e04217d5d4500193145001f314500",
        "1b13324500193245001f324500186074223a337d5d",
    );

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn a_value_written_in_format_3_reads_back_with_the_frozen_dictionary() {
        let mut r = sample_record("0190a1b2c3d4e5f60718293a4b5c", None);
        r.revision = 7;
        r.next_seq = 3;
        let id = r.id.clone();
        let encoded = encode_value(&r, &[], &events(&id));
        let bytes = unhex(WRITTEN);
        let v = Value::parse(b"s/golden", &bytes).unwrap();
        assert_eq!((v.format, v.revision), (VALUE_FORMAT, 7));
        let head = Head {
            status: "running".into(),
            parked: false,
        };
        assert_eq!(v.head, Some(head));
        assert_eq!(v.record(b"s/golden").unwrap(), r);
        assert_eq!(v.events(&id, b"s/golden").unwrap(), events(&id));
        // And what is written now reads back the same.
        let now = Value::parse(b"s/now", &encoded).unwrap();
        assert_eq!(now.record(b"s/now").unwrap(), r);
        assert_eq!(now.events(&id, b"s/now").unwrap(), events(&id));
    }

    #[test]
    fn appended_events_read_back_after_the_old_ones() {
        let r = sample_record("x", None);
        let first = events(&r.id);
        let v = encode_value(&r, &[], &first[..2]);
        let old = Value::parse(b"s/x", &v)
            .unwrap()
            .events_bytes(&r.id, b"s/x")
            .unwrap();
        let v = encode_value(&r, &old, &first[2..]);
        assert_eq!(
            Value::parse(b"s/x", &v)
                .unwrap()
                .events(&r.id, b"s/x")
                .unwrap(),
            first
        );
    }
}
