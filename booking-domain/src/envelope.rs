//! The versioned envelope every participant record is stored in:
//! `{"v": FORMAT_VERSION, "record": ...}`. One place decides the format, so
//! a change of shape comes with one reader for the old one.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The record format the participants write.
pub(crate) const FORMAT_VERSION: u32 = 1;

#[derive(Serialize)]
struct Out<'a, T> {
    v: u32,
    record: &'a T,
}

#[derive(Deserialize)]
struct In {
    v: u32,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    origin: u64,
    record: serde_json::Value,
}

#[derive(Serialize)]
struct OutVersioned<'a, T> {
    v: u32,
    seq: u64,
    origin: u64,
    record: &'a T,
}

/// Wraps `record` in the current envelope.
pub(crate) fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(&Out {
        v: FORMAT_VERSION,
        record,
    })
    .map_err(|e| e.to_string())
}

/// Reads a record written by [`encode`], refusing another format version.
/// The bytes are parsed once.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let env: In = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if env.v != FORMAT_VERSION {
        return Err(format!("unsupported record format version {}", env.v));
    }
    T::deserialize(env.record).map_err(|e| e.to_string())
}

/// Wraps `record` in the current envelope with the ledger's write sequence
/// numbers: `seq` of the write that stored it, `origin` of the write that
/// created its key (see [`crate::ledger`]).
pub(crate) fn encode_versioned<T: Serialize>(
    seq: u64,
    origin: u64,
    record: &T,
) -> Result<Vec<u8>, String> {
    serde_json::to_vec(&OutVersioned {
        v: FORMAT_VERSION,
        seq,
        origin,
        record,
    })
    .map_err(|e| e.to_string())
}

/// Reads a record written by [`encode_versioned`] (or by [`encode`]: a record
/// written before the ledger numbered its writes reads as `seq` and `origin`
/// 0). Returns `(seq, origin, record)`.
pub(crate) fn decode_versioned<T: DeserializeOwned>(bytes: &[u8]) -> Result<(u64, u64, T), String> {
    let env: In = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if env.v != FORMAT_VERSION {
        return Err(format!("unsupported record format version {}", env.v));
    }
    let record = T::deserialize(env.record).map_err(|e| e.to_string())?;
    Ok((env.seq, env.origin, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_versions() {
        let bytes = encode(&vec![1u32, 2]).unwrap();
        assert_eq!(decode::<Vec<u32>>(&bytes).unwrap(), vec![1, 2]);
        let future = br#"{"v":2,"record":[1,2]}"#;
        assert!(decode::<Vec<u32>>(future)
            .unwrap_err()
            .contains("version 2"));
        assert!(decode::<Vec<u32>>(b"{").is_err());
    }

    #[test]
    fn versioned_records_read_the_unnumbered_format() {
        let bytes = encode_versioned(7, 3, &"x").unwrap();
        assert_eq!(
            decode_versioned::<String>(&bytes).unwrap(),
            (7, 3, "x".into())
        );
        // What the participants wrote before the ledger: no numbers.
        let old = encode(&"x").unwrap();
        assert_eq!(
            decode_versioned::<String>(&old).unwrap(),
            (0, 0, "x".into())
        );
        // And what the ledger writes still reads with the plain reader.
        assert_eq!(decode::<String>(&bytes).unwrap(), "x");
        assert!(decode_versioned::<String>(br#"{"v":2,"seq":1,"record":"x"}"#).is_err());
    }
}
