//! The acknowledgement log a crash-test child keeps beside the store: one
//! `KEY ID` line per saga start the engine acknowledged, appended and
//! synced before the child counts the start as acknowledged. Whatever a
//! SIGKILL interrupts, every line in it names a saga that must exist after
//! the restart, under that key and with that id.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// An open acknowledgement log (append only).
pub struct AckLog {
    file: Mutex<File>,
}

impl AckLog {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> std::io::Result<AckLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(AckLog {
            file: Mutex::new(file),
        })
    }

    /// Records that the start of saga `id` under `key` was acknowledged;
    /// on return the line is on disk.
    pub fn ack(&self, key: &str, id: &str) -> std::io::Result<()> {
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(format!("{key} {id}\n").as_bytes())?;
        f.sync_data()
    }
}

/// The distinct `(key, id)` pairs in the log at `path`, oldest first (a
/// repeated start under the same key acknowledges the same pair again); a
/// torn last line (a kill in the middle of the write) is not an
/// acknowledgement.
pub fn read(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| {
            let (k, id) = l.trim_end().split_once(' ')?;
            Some((k.to_string(), id.to_string()))
        })
        .filter(|pair| seen.insert(pair.clone()))
        .collect()
}

/// The detail of a `lost acknowledged start` violation for the start of
/// `id` under `key`, given the saga the store now has under that key; `None`
/// when it is the acknowledged one. The same text wherever it is checked,
/// so that one loss found twice is listed once.
pub fn lost(key: &str, id: &str, found: Option<&str>) -> Option<String> {
    match found {
        Some(f) if f == id => None,
        Some(other) => Some(format!("{key} -> {id} (the key now names saga {other})")),
        None => Some(format!("{key} -> {id}")),
    }
}
