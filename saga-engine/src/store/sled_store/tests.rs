//! Crash-in-the-middle states of a create or update, built by hand,
//! and how the store repairs them.

use super::*;
use crate::store::conformance::sample_record;

fn store() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    (dir, s)
}

#[tokio::test]
async fn a_record_whose_key_was_never_written_is_not_resumed_and_is_removed() {
    let (_d, s) = store();
    let r = sample_record("orphan", Some("k1"));
    // The create died after writing index and record, before the key.
    s.tree.insert(key(b"a/", "orphan"), &[][..]).unwrap();
    s.tree
        .insert(key(b"s/", "orphan"), encode_value(&r, &[], &[]))
        .unwrap();
    assert!(s.list_active().await.unwrap().is_empty());
    assert_eq!(s.get(&r.id).await.unwrap(), None, "orphan removed");
    assert_eq!(s.find_by_key("k1").await.unwrap(), None);
    // The caller retries the start: it creates a saga normally.
    let again = sample_record("second", Some("k1"));
    assert_eq!(s.create(&again, &[]).await.unwrap(), CreateOutcome::Created);
    assert_eq!(s.find_by_key("k1").await.unwrap(), Some(again.id.clone()));
    assert_eq!(s.list_active().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_key_naming_a_missing_record_is_taken_over() {
    let (_d, s) = store();
    s.tree.insert(key(b"k/", "k2"), "ghost").unwrap();
    assert_eq!(s.find_by_key("k2").await.unwrap(), None);
    let r = sample_record("real", Some("k2"));
    assert_eq!(s.create(&r, &[]).await.unwrap(), CreateOutcome::Created);
    assert_eq!(s.find_by_key("k2").await.unwrap(), Some(r.id.clone()));
}

#[tokio::test]
async fn index_entries_of_missing_or_terminal_records_are_skipped_and_removed() {
    let (_d, s) = store();
    s.tree.insert(key(b"a/", "missing"), &[][..]).unwrap();
    let mut done = sample_record("done", None);
    done.state.status = SagaStatus::Compensated;
    s.tree.insert(key(b"a/", "done"), &[][..]).unwrap();
    s.tree
        .insert(key(b"s/", "done"), encode_value(&done, &[], &[]))
        .unwrap();
    let live = sample_record("live", None);
    s.create(&live, &[]).await.unwrap();
    let active = s.list_active().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, live.id);
    assert!(!s.tree.contains_key(key(b"a/", "missing")).unwrap());
    assert!(!s.tree.contains_key(key(b"a/", "done")).unwrap());
}

#[tokio::test]
async fn a_half_written_snapshot_left_by_a_crash_does_not_block_opening() {
    let dir = tempfile::tempdir().unwrap();
    let r = sample_record("kept", None);
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.create(&r, &[]).await.unwrap();
    }
    // What a process killed while sled wrote a snapshot leaves behind.
    std::fs::write(
        dir.path().join("snap.7FFFFFFFFFFFFFFF.generating"),
        b"partial",
    )
    .unwrap();
    assert!(
        sled::open(dir.path()).is_err(),
        "sled alone refuses such a directory (the bug worked around)"
    );
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.get(&r.id).await.unwrap(), Some(r));
}

#[tokio::test]
async fn a_damaged_value_is_reported_as_corrupt_not_a_panic() {
    let (_d, s) = store();
    s.tree.insert(key(b"s/", "bad"), &[9u8, 1, 2][..]).unwrap();
    let err = s.get(&SagaId::from_raw("bad".into())).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let r = sample_record("trunc", None);
    let mut v = encode_value(&r, &[], &[]);
    v.truncate(v.len() - 3);
    s.tree.insert(key(b"s/", "trunc"), v).unwrap();
    assert!(matches!(
        s.get(&r.id).await,
        Err(StoreError::Corrupt { .. })
    ));
}
