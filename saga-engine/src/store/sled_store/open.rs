//! Opening sled's directory: the workaround for half-written snapshots,
//! under the directory's lock.

use crate::store::StoreError;
use std::path::Path;

/// Opens a sled database for the engine (and anything sharing its
/// directory), working around a sled 0.34 recovery bug, and turning sled's
/// failures (and its panics on some damaged files) into an error that
/// names the directory.
///
/// sled writes a snapshot to `snap.<lsn>.generating`, syncs it and renames
/// it; a process killed before the rename leaves a partial file that sled
/// 0.34.7 then picks as its newest snapshot and refuses to open with
/// `Corruption { at: None }` (sled issues #1527, #1533; seen here about
/// once per 600 SIGKILLs). Such a file is incomplete by construction and
/// sled recovers from the previous snapshot and its log, so it is removed.
///
/// The files are removed only while holding sled's own lock on the
/// directory (an exclusive `flock` on its `db` file), so that opening the
/// directory of a live process fails instead of deleting the snapshot that
/// process is writing.
pub fn open_sled_db(path: &Path) -> Result<sled::Db, StoreError> {
    open_sled_db_with_cache(path, DEFAULT_CACHE_BYTES)
}

/// sled's page cache unless told otherwise: what the process's memory
/// levels off at however many sagas the store holds (sled's own default,
/// 1 GiB, lets a long-lived store grow the process to that).
pub const DEFAULT_CACHE_BYTES: u64 = 128 * 1024 * 1024;

/// How often sled's own background thread runs, in ms (sled's default:
/// 500). Our writes do not wait for it (group commit flushes them, see
/// `commit`), but it is the only thread that cleans sled's log: each tick
/// it relocates the live pages of mostly-dead segments, for at most half
/// a tick. Every transition rewrites its saga's value, so most of what
/// sled writes is dead soon after; at 500 ms the cleaning fell behind and
/// the log held about 4 times the live data. Measured with `loadgen
/// --sagas 20000 --concurrency 128 --data-dir D` (value format 3, same
/// session, 3 rounds alternating): 500 ms left 50.1-51.3 MB, 20 ms
/// 36.8-38.3 MB, 10 ms 26.2-27.3 MB, 5 ms 24.1-25.7 MB, at the same
/// throughput (4,129-4,638, 5,084-5,453, 5,179-5,438 and 4,925-5,626
/// sagas/s) and CPU time. The cost is 100 wake-ups a second, each with
/// sled's `fsync` of its file (of nothing new when idle).
const SLED_TICK_MS: u64 = 10;

/// Like [`open_sled_db`], with sled's page cache limited to `cache_bytes`.
pub fn open_sled_db_with_cache(path: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    remove_half_written_snapshots(path)?;
    let mut config = sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .flush_every_ms(Some(SLED_TICK_MS));
    if crate::sabotage::active(crate::sabotage::NO_FLUSH) {
        // Nor may sled's own periodic flush save what we do not.
        config = config.flush_every_ms(None);
    }
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || config.open()));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(StoreError::Io(format!("opening {}: {e}", path.display()))),
        Err(_) => Err(StoreError::Damaged {
            path: path.display().to_string(),
            detail: "sled could not read its files".into(),
        }),
    }
}

/// See [`open_sled_db`]: under the directory's lock, or not at all.
fn remove_half_written_snapshots(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::io::AsRawFd;
    let Ok(entries) = std::fs::read_dir(path) else {
        return Ok(()); // A new directory: nothing to repair.
    };
    let half_written: Vec<_> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("snap.") && name.ends_with(".generating")
        })
        .map(|e| e.path())
        .collect();
    if half_written.is_empty() {
        return Ok(());
    }
    let lock_path = path.join("db");
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| StoreError::Io(format!("opening {}: {e}", lock_path.display())))?;
    // SAFETY: flock on a descriptor we own; it takes no pointers.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(StoreError::Io(format!(
            "{} is in use by another process (its lock is held); not touching its files",
            path.display()
        )));
    }
    for p in half_written {
        tracing::warn!(file = %p.display(), "removing a snapshot that a crash left half-written");
        std::fs::remove_file(&p)
            .map_err(|err| StoreError::Io(format!("removing {}: {err}", p.display())))?;
    }
    // Closing the file releases the lock, for sled to take at once (flock
    // locks are per open file, so sled could not take it while we hold it).
    drop(lock);
    Ok(())
}
