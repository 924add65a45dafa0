//! Backup and restore of everything a server keeps: the catalog, sagas and
//! their histories, bookings, payments, loyalty, accounts and sessions,
//! promo codes: every tree of the sled database, record for record.
//!
//! A snapshot is taken inside the running server (`POST /api/admin/backup`,
//! which `demo-server backup --out FILE` calls) under the [`gate`]'s write
//! barrier: it waits for the writes under way, holds new ones back while it
//! copies the trees, then lets them go. That is a point a crash could also
//! have left behind, so a server started on the restored copy resumes
//! whatever was under way, as after a crash. sled has no multi-tree
//! snapshot, and copying trees one by one while sagas run is not such a
//! point (a saga's record could say a seat is held that the seat tree read
//! earlier does not have); the barrier is what makes it one.
//!
//! Card numbers and CVCs are never in the database (they wait in memory,
//! [`booking_domain::booking_saga::CardVault`]), so no backup holds them;
//! a booking restored before its payment step fails that step for want of
//! the card and compensates. Passwords are there only as Argon2id hashes.
//!
//! The file ([`FORMAT_VERSION`] 1): the magic `SKYSAGA-BACKUP\n`, the
//! version (u32, big-endian), a JSON header line (creation time, tree and
//! record counts), then per tree `T`, name length (u32), name, record
//! count (u64) and each record as key length (u32), key, value length
//! (u32), value; then `E`, and the SHA-256 of everything before it. A file
//! whose checksum does not match (damaged or truncated), of a newer
//! version, or that does not parse to its end is refused before anything
//! is written; restore writes only into an empty or new directory.

pub mod client;
pub mod gate;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The file's first bytes.
pub const MAGIC: &[u8] = b"SKYSAGA-BACKUP\n";
/// The format this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
const DIGEST_LEN: usize = 32;

/// The saga store's tree and its high-water mark key, which
/// [`saga_engine::SledStore::with_db_at`] checks against the file
/// [`saga_engine::store::HWM_FILE`] beside the database: restore writes
/// that file from the restored mark.
const STORE_TREE: &[u8] = b"saga_engine";
const HWM_KEY: &[u8] = b"m/hwm";

/// What the header line says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// When the snapshot was taken.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Trees in the file.
    pub trees: u64,
    /// Records in the file, all trees together.
    pub records: u64,
}

/// One tree's records, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeDump {
    /// The tree's name.
    pub name: Vec<u8>,
    /// Its (key, value) pairs.
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file does not start like a backup.
    #[error("{0} is not a demo-server backup (no SKYSAGA-BACKUP header)")]
    NotABackup(String),
    /// Written by a newer demo-server.
    #[error("the backup is format {found}, newer than this demo-server reads (up to {supported}): restore it with a newer demo-server")]
    Newer {
        /// The file's version.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// Checksum mismatch or a structure that does not parse.
    #[error("the backup is damaged or truncated: {0}; nothing was restored")]
    Damaged(String),
    /// The target directory holds something.
    #[error("{0} is not empty: restore only into a new or empty directory")]
    NotEmpty(PathBuf),
    /// Reading or writing files.
    #[error("{0}")]
    Io(String),
    /// The database.
    #[error("database: {0}")]
    Db(String),
}

fn db_err(e: sled::Error) -> BackupError {
    BackupError::Db(e.to_string())
}

/// Every tree of `db`, in name order. Call it under the write barrier for
/// a consistent point.
pub fn dump(db: &sled::Db) -> Result<Vec<TreeDump>, BackupError> {
    let mut names = db.tree_names();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let tree = db.open_tree(&name).map_err(db_err)?;
        let mut records = Vec::new();
        for kv in tree.iter() {
            let (k, v) = kv.map_err(db_err)?;
            records.push((k.to_vec(), v.to_vec()));
        }
        out.push(TreeDump {
            name: name.to_vec(),
            records,
        });
    }
    Ok(out)
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_be_bytes());
}

/// The backup file of `trees`.
pub fn encode(trees: &[TreeDump], created_at: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    let header = Header {
        created_at,
        trees: trees.len() as u64,
        records: trees.iter().map(|t| t.records.len() as u64).sum(),
    };
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&serde_json::to_vec(&header).unwrap_or_default());
    out.push(b'\n');
    for t in trees {
        out.push(b'T');
        put_len(&mut out, t.name.len());
        out.extend_from_slice(&t.name);
        out.extend_from_slice(&(t.records.len() as u64).to_be_bytes());
        for (k, v) in &t.records {
            put_len(&mut out, k.len());
            out.extend_from_slice(k);
            put_len(&mut out, v.len());
            out.extend_from_slice(v);
        }
    }
    out.push(b'E');
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// A byte cursor whose every short read is [`BackupError::Damaged`].
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], BackupError> {
        if self.0.len() < n {
            return Err(BackupError::Damaged(format!("it ends inside {what}")));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self, what: &str) -> Result<u32, BackupError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, BackupError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

/// Checks and parses a backup file: its header and trees.
pub fn decode(file: &[u8], name: &str) -> Result<(Header, Vec<TreeDump>), BackupError> {
    if !file.starts_with(MAGIC) {
        return Err(BackupError::NotABackup(name.to_string()));
    }
    let mut c = Cursor(&file[MAGIC.len()..]);
    let version = c.u32("the format version")?;
    if version > FORMAT_VERSION {
        return Err(BackupError::Newer {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(BackupError::Damaged("format version 0".into()));
    }
    if file.len() < MAGIC.len() + 4 + 1 + DIGEST_LEN {
        return Err(BackupError::Damaged(format!(
            "{} bytes, shorter than any backup",
            file.len()
        )));
    }
    let (body, digest) = file.split_at(file.len() - DIGEST_LEN);
    if Sha256::digest(body).as_slice() != digest {
        return Err(BackupError::Damaged(
            "its SHA-256 checksum does not match".into(),
        ));
    }
    let mut c = Cursor(&body[MAGIC.len() + 4..]);
    let line_end =
        c.0.iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| BackupError::Damaged("no header line".into()))?;
    let header: Header = serde_json::from_slice(c.take(line_end, "the header")?)
        .map_err(|e| BackupError::Damaged(format!("header: {e}")))?;
    c.take(1, "the header")?;
    let mut trees = Vec::new();
    loop {
        match c.take(1, "a tree marker")?[0] {
            b'E' => break,
            b'T' => {}
            other => {
                return Err(BackupError::Damaged(format!(
                    "unexpected byte {other:#04x} where a tree starts"
                )))
            }
        }
        let n = c.u32("a tree name length")? as usize;
        let tree_name = c.take(n, "a tree name")?.to_vec();
        let count = c.u64("a record count")?;
        let mut records = Vec::new();
        for _ in 0..count {
            let k = c.u32("a key length")? as usize;
            let k = c.take(k, "a key")?.to_vec();
            let v = c.u32("a value length")? as usize;
            let v = c.take(v, "a value")?.to_vec();
            records.push((k, v));
        }
        trees.push(TreeDump {
            name: tree_name,
            records,
        });
    }
    if !c.0.is_empty() {
        return Err(BackupError::Damaged(format!(
            "{} bytes after the end marker",
            c.0.len()
        )));
    }
    let records: u64 = trees.iter().map(|t| t.records.len() as u64).sum();
    if header.trees != trees.len() as u64 || header.records != records {
        return Err(BackupError::Damaged(format!(
            "the header counts {} trees and {} records, the file holds {} and {records}",
            header.trees,
            header.records,
            trees.len()
        )));
    }
    Ok((header, trees))
}

/// Restores the backup `file` into `data_dir`, which must be missing or
/// empty: the database under `data_dir/db` with every tree of the file,
/// and the saga store's high-water mark file. Returns the file's header.
/// Nothing is written unless the file checks out whole.
pub fn restore(file: &[u8], name: &str, data_dir: &Path) -> Result<Header, BackupError> {
    let (header, trees) = decode(file, name)?;
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::NotEmpty(data_dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(BackupError::Io(format!(
                "cannot read {}: {e}",
                data_dir.display()
            )))
        }
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| BackupError::Io(format!("cannot create {}: {e}", data_dir.display())))?;
    let db_dir = data_dir.join(crate::state::DB_DIR);
    let db =
        saga_engine::store::open_sled_db(&db_dir).map_err(|e| BackupError::Db(e.to_string()))?;
    let mut mark = None;
    for t in &trees {
        let tree = db.open_tree(&t.name).map_err(db_err)?;
        let mut batch = sled::Batch::default();
        for (k, v) in &t.records {
            if t.name == STORE_TREE && k == HWM_KEY {
                mark = Some(v.clone());
            }
            batch.insert(k.as_slice(), v.as_slice());
        }
        tree.apply_batch(batch).map_err(db_err)?;
    }
    db.flush().map_err(db_err)?;
    drop(db);
    if let Some(mark) = mark {
        let path = db_dir.join(saga_engine::store::HWM_FILE);
        let tmp = db_dir.join(format!("{}.tmp", saga_engine::store::HWM_FILE));
        std::fs::write(&tmp, &mark)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| BackupError::Io(format!("writing {}: {e}", path.display())))?;
    }
    Ok(header)
}

/// A snapshot of `state`'s database as a backup file, taken under the
/// write barrier. Refused (`Unsupported`) with a shared saga store, whose
/// records live outside this server.
pub async fn snapshot(state: &crate::state::AppState) -> Result<(Vec<u8>, Header), BackupError> {
    if state.engine.store().is_shared() {
        return Err(BackupError::Io(
            "the sagas are in a shared store (--store): back that database up with its own tools"
                .into(),
        ));
    }
    let started = std::time::Instant::now();
    let trees = {
        let _held = state.barrier.exclusive().await;
        let waited = started.elapsed();
        let db = state.db.clone();
        let trees = tokio::task::spawn_blocking(move || dump(&db))
            .await
            .map_err(|e| BackupError::Io(format!("snapshot task: {e}")))??;
        tracing::info!(
            waited_ms = waited.as_millis() as u64,
            held_ms = (started.elapsed() - waited).as_millis() as u64,
            "backup snapshot taken under the write barrier"
        );
        trees
    };
    let file = encode(&trees, chrono::Utc::now());
    let (header, _) = decode(&file, "the snapshot")?;
    Ok((file, header))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let trees = vec![
            TreeDump {
                name: b"a".to_vec(),
                records: vec![(b"k1".to_vec(), b"v1".to_vec()), (vec![0, 255], vec![])],
            },
            TreeDump {
                name: b"b".to_vec(),
                records: vec![],
            },
        ];
        encode(&trees, chrono::Utc::now())
    }

    #[test]
    fn round_trips_and_refuses_every_damage() {
        let file = sample();
        let (h, trees) = decode(&file, "f").unwrap();
        assert_eq!((h.trees, h.records), (2, 2));
        assert_eq!(trees[0].records[1], (vec![0, 255], vec![]));
        // Every truncation and every flipped byte is refused.
        for n in 0..file.len() {
            assert!(decode(&file[..n], "f").is_err(), "truncated to {n}");
            let mut bad = file.clone();
            bad[n] ^= 0x01;
            assert!(decode(&bad, "f").is_err(), "byte {n} flipped");
        }
        let mut newer = file.clone();
        newer[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&2u32.to_be_bytes());
        assert!(matches!(
            decode(&newer, "f"),
            Err(BackupError::Newer { found: 2, .. })
        ));
        assert!(matches!(
            decode(b"hello", "f"),
            Err(BackupError::NotABackup(_))
        ));
    }

    #[test]
    fn restore_refuses_a_non_empty_directory_and_writes_nothing_from_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), b"x").unwrap();
        assert!(matches!(
            restore(&sample(), "f", dir.path()),
            Err(BackupError::NotEmpty(_))
        ));
        let empty = dir.path().join("new");
        let mut bad = sample();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(restore(&bad, "f", &empty).is_err());
        assert!(!empty.exists(), "nothing written for a damaged file");
        restore(&sample(), "f", &empty).unwrap();
        let db = sled::open(empty.join(crate::state::DB_DIR)).unwrap();
        assert_eq!(
            db.open_tree("a").unwrap().get(b"k1").unwrap().unwrap(),
            b"v1".as_slice()
        );
    }
}
