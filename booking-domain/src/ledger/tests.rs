//! Unit tests of the ledger on a toy record: projections, crash repair at
//! open, the upgrade of an unnumbered database, listings and their pages.

use super::*;
use std::cell::Cell;
use std::path::Path;

thread_local! {
    static CRASH_AFTER_ENTRY: Cell<bool> = const { Cell::new(false) };
}

/// True (once) when a test asked [`Ledger::put`] to stop right after the
/// record write, as a crash there would.
pub(super) fn crash_after_entry() -> bool {
    CRASH_AFTER_ENTRY.with(|c| c.replace(false))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Toy {
    Add {
        bucket: String,
        n: i64,
        owner: Option<String>,
        at: i64,
    },
    Gone,
}

impl LedgerEntry for Toy {
    fn contributions(&self) -> Vec<(Vec<u8>, Counter)> {
        match self {
            Toy::Add { bucket, n, .. } => vec![(bucket.as_bytes().to_vec(), [*n, 1])],
            Toy::Gone => Vec::new(),
        }
    }
    fn owner(&self) -> Option<Vec<u8>> {
        match self {
            Toy::Add { owner, .. } => owner.as_ref().map(|o| o.as_bytes().to_vec()),
            Toy::Gone => None,
        }
    }
    fn listed_at(&self) -> i64 {
        match self {
            Toy::Add { at, .. } => *at,
            Toy::Gone => 0,
        }
    }
}

fn add(bucket: &str, n: i64, owner: Option<&str>) -> Toy {
    Toy::Add {
        bucket: bucket.into(),
        n,
        owner: owner.map(Into::into),
        at: 0,
    }
}

const TREES: fn() -> Trees = || Trees {
    entries: "toy_entries",
    buckets: "toy_buckets",
    index: "toy_index",
};

fn open(db: &sled::Db) -> Ledger<Toy> {
    Ledger::open(db, db.open_tree("toy_meta").unwrap(), TREES(), ()).unwrap()
}

fn reopen(path: &Path) -> sled::Db {
    for _ in 0..100 {
        if let Ok(db) = sled::open(path) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    sled::open(path).unwrap()
}

fn put(l: &Ledger<Toy>, key: &str, new: &Toy) {
    let g = l.lock();
    let old = l.get(key).unwrap();
    l.put(&g, key, old.as_ref(), new).unwrap();
}

#[test]
fn projections_follow_the_records_and_survive_reopen_without_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let l = open(&db);
    for i in 0..300 {
        put(
            &l,
            &format!("k{i:03}"),
            &add(if i % 2 == 0 { "a" } else { "b" }, 2, None),
        );
    }
    put(&l, "k000", &Toy::Gone);
    put(&l, "k001", &add("a", 5, None)); // moves from b to a
    assert_eq!(l.counter(b"a").unwrap(), [149 * 2 + 5, 150]);
    assert_eq!(l.counter(b"b").unwrap(), [149 * 2, 149]);
    assert_eq!(l.counter(b"none").unwrap(), [0, 0]);
    drop(l);
    db.flush().unwrap();
    drop(db);
    let db = reopen(dir.path());
    let l = open(&db);
    assert_eq!(l.read_at_open(), 1, "open reads the tail's record only");
    assert_eq!(l.counter(b"a").unwrap(), [149 * 2 + 5, 150]);
    assert_eq!(l.counter(b"b").unwrap(), [149 * 2, 149]);
}

#[test]
fn a_crash_between_the_record_and_its_projection_is_rolled_forward_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let l = open(&db);
    put(&l, "k1", &add("a", 3, None));
    CRASH_AFTER_ENTRY.with(|c| c.set(true));
    put(&l, "k2", &add("a", 4, None));
    // The half-done state: the record is there, the bucket misses it.
    assert_eq!(l.counter(b"a").unwrap(), [3, 1]);
    assert!(l.entry("k2").unwrap().is_some());
    drop(l);
    db.flush().unwrap();
    drop(db);
    let db = reopen(dir.path());
    let l = open(&db);
    assert_eq!(l.counter(b"a").unwrap(), [7, 2], "repaired at open");
    drop(l);
    // Repairing twice (a crash right after the repair) adds nothing more.
    let l = open(&db);
    assert_eq!(l.counter(b"a").unwrap(), [7, 2]);
    // A tail whose record never made it (the crash came before it) leaves
    // the buckets alone.
    let g = l.lock();
    let tail = Tail {
        seq: u64::MAX - 1,
        key: "never-written".into(),
        deltas: vec![(hex(b"a"), [100, 1])],
    };
    l.meta
        .insert(TAIL_KEY, crate::envelope::encode(&tail).unwrap())
        .unwrap();
    drop(g);
    drop(l);
    let l = open(&db);
    assert_eq!(l.counter(b"a").unwrap(), [7, 2]);
}

#[test]
fn a_database_written_before_the_ledger_is_upgraded_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    // The previous format: plain envelopes, no numbers, no projections.
    let entries = db.open_tree("toy_entries").unwrap();
    for (i, at) in [(0, 30), (1, 10), (2, 20)] {
        let rec = Toy::Add {
            bucket: "a".into(),
            n: 1,
            owner: Some("ada".into()),
            at,
        };
        entries
            .insert(format!("k{i}"), crate::envelope::encode(&rec).unwrap())
            .unwrap();
    }
    let l = open(&db);
    assert_eq!(l.read_at_open(), 3, "the upgrade reads every record once");
    assert_eq!(l.counter(b"a").unwrap(), [3, 3]);
    let keys: Vec<i64> = l
        .owned(b"ada")
        .unwrap()
        .into_iter()
        .map(|t| t.listed_at())
        .collect();
    assert_eq!(keys, vec![10, 20, 30], "oldest first");
    // Changing an upgraded record keeps it listed once.
    put(&l, "k1", &add("b", 1, Some("ada")));
    assert_eq!(l.owned(b"ada").unwrap().len(), 3);
    assert_eq!(l.counter(b"a").unwrap(), [2, 2]);
    drop(l);
    let l = open(&db);
    assert!(l.read_at_open() <= 1);
    assert_eq!(l.counter(b"b").unwrap(), [1, 1]);
}

#[test]
fn a_listing_skips_what_a_crash_left_pointing_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let l = open(&db);
    put(&l, "k1", &add("a", 1, Some("ada")));
    // An index entry written just before a crash, its record never stored.
    let s = l.next_seq().unwrap();
    l.index.insert(index_key(b"ada", s), &b"ghost"[..]).unwrap();
    // One that names a key created later by another write.
    let s = l.next_seq().unwrap();
    l.index.insert(index_key(b"ada", s), &b"k2"[..]).unwrap();
    put(&l, "k2", &add("a", 1, Some("ada")));
    let listed = l.owned(b"ada").unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
}

#[test]
fn pages_cover_the_listing_once_while_records_are_added() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let l = open(&db);
    for i in 0..25 {
        put(&l, &format!("k{i:02}"), &add("a", 1, Some("ada")));
        put(&l, &format!("o{i:02}"), &add("a", 1, Some("bob")));
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut round = 0;
    loop {
        let (items, next) = l.owner_page(b"ada", cursor.as_deref(), 4).unwrap();
        assert!(items.len() <= 4);
        seen.extend(items);
        // Inserts between pages: new keys come after what was read.
        if round < 3 {
            put(&l, &format!("late{round}"), &add("a", 1, Some("ada")));
        }
        round += 1;
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 28);
    assert_eq!(seen, l.owned(b"ada").unwrap(), "pages = the whole listing");
    // By key, with a filter.
    let mut by_key = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (items, next) = l
            .page(cursor.as_deref(), 7, |t| t.owner().filter(|o| o == b"bob"))
            .unwrap();
        by_key.extend(items);
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(by_key.len(), 25);
    assert!(matches!(
        l.owner_page(b"ada", Some("not a cursor"), 4),
        Err(LedgerError::BadCursor)
    ));
    assert!(matches!(
        l.page(Some("zz"), 4, Some),
        Err(LedgerError::BadCursor)
    ));
}
