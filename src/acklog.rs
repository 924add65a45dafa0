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

/// The `(key, id)` pairs in the log at `path`, oldest first; a torn last
/// line (a kill in the middle of the write) is not an acknowledgement.
pub fn read(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| {
            let (k, id) = l.trim_end().split_once(' ')?;
            Some((k.to_string(), id.to_string()))
        })
        .collect()
}
