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
    record: serde_json::Value,
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
}
