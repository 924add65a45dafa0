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
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        end_torn_line(path, &mut file)?;
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

/// Ends a line a kill left torn in the file at `path` (open for append as
/// `file`), so that the next line is not glued to it; [`read`] then skips
/// the torn fragment as a line of its own.
pub fn end_torn_line(path: &Path, file: &mut File) -> std::io::Result<()> {
    let text = std::fs::read(path)?;
    if text.last().is_some_and(|b| *b != b'\n') {
        file.write_all(b"\n")?;
        file.sync_data()?;
    }
    Ok(())
}

/// The distinct `(key, id)` pairs in the log at `path`, oldest first (a
/// repeated start under the same key acknowledges the same pair again); a
/// torn line (a kill in the middle of the write) is not an
/// acknowledgement.
pub fn read(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| {
            let (k, id) = l.trim_end().split_once(' ')?;
            // A saga id is 28 hex digits: a torn fragment is not one.
            let whole = id.len() == 28 && id.bytes().all(|b| b.is_ascii_hexdigit());
            whole.then(|| (k.to_string(), id.to_string()))
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

/// Checks, after an engine opened, that every start acknowledged in the
/// log at `path` is still the saga its key names, pushing a `lost
/// acknowledged start` (or `store read failed`) per miss; returns how many
/// acknowledged starts it checked. The engine crash tests' check at open.
pub async fn check_survived(
    engine: &saga_engine::Engine,
    path: &Path,
    v: &mut crate::verdict::Violations,
) -> usize {
    let acks = read(path);
    for (key, id) in &acks {
        match engine.find_by_key(key).await {
            Ok(found) => {
                if let Some(d) = lost(key, id, found.as_ref().map(|f| f.as_str())) {
                    v.push("lost acknowledged start", d);
                }
            }
            Err(e) => v.push("store read failed", format!("{key}: {e}")),
        }
    }
    acks.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_line_is_not_an_ack_and_does_not_swallow_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acks.log");
        let id = "01a230c330f999483762f3fd560d";
        std::fs::write(&path, format!("b-1 {id}\nb-2 01a2")).unwrap();
        let log = AckLog::open(&path).unwrap();
        log.ack("b-3", id).unwrap();
        log.ack("b-3", id).unwrap(); // a repeated start: the same pair
        let got = read(&path);
        assert_eq!(
            got,
            vec![("b-1".into(), id.into()), ("b-3".into(), id.into())]
        );
        assert_eq!(lost("b-1", id, Some(id)), None);
        assert!(lost("b-1", id, None).is_some());
        assert!(lost("b-1", id, Some("other")).unwrap().contains("other"));
    }
}
