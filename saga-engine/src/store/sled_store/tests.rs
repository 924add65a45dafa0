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
    // A later version's format is refused as such, not misread.
    assert!(err.to_string().contains("newer than this build"), "{err}");
    let r = sample_record("trunc", None);
    let mut v = encode_value(&r, &[], &[]);
    v.truncate(v.len() - 3);
    s.tree.insert(key(b"s/", "trunc"), v).unwrap();
    assert!(matches!(
        s.get(&r.id).await,
        Err(StoreError::Corrupt { .. })
    ));
    // Format 3's own damage: lengths that lie (a huge body, a record
    // longer than the body), a block that does not decode.
    let good = encode_value(&r, &[], &[ev(&r.id, 0)]);
    // [3][revision][parked][status len][status][record len][body len][block]
    let at = 11 + good[10] as usize;
    let mut huge = good.clone();
    huge[at + 4..at + 8].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut long_record = good.clone();
    long_record[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut scrambled = good.clone();
    for b in &mut scrambled[at + 8..] {
        *b = 0xff;
    }
    let mut short_head = good.clone();
    short_head.truncate(at + 2);
    for (what, v) in [
        ("huge", huge),
        ("long record", long_record),
        ("scrambled", scrambled),
        ("short header", short_head),
    ] {
        s.tree.insert(key(b"s/", "trunc"), v).unwrap();
        let got = s.get(&r.id).await;
        assert!(
            matches!(got, Err(StoreError::Corrupt { .. })),
            "{what}: {got:?}"
        );
    }
}

fn ev(id: &SagaId, seq: u64) -> SagaEvent {
    SagaEvent {
        saga_id: id.clone(),
        seq,
        at_ms: 1_000 + seq,
        kind: crate::events::EventKind::StepFailed {
            step: "authorize_payment".into(),
            attempt: seq as u32,
            error: "the bank is busy".into(),
            kind: "retryable".into(),
            retry_at_ms: Some(2_000 + seq),
        },
    }
}

#[tokio::test]
async fn stores_written_in_formats_1_and_2_are_read_and_re_encoded_at_the_next_update() {
    for format in [VALUE_FORMAT_V1, VALUE_FORMAT_V2] {
        let (_d, s) = store();
        let mut r = sample_record("old", None);
        r.next_seq = 2;
        let old_events = vec![ev(&r.id, 0), ev(&r.id, 1)];
        // What a store written before format 3 holds.
        s.tree.insert(key(b"a/", "old"), &[][..]).unwrap();
        s.tree
            .insert(
                key(b"s/", "old"),
                encode_value_uncompressed(format, &r, &old_events),
            )
            .unwrap();
        assert_eq!(
            s.get(&r.id).await.unwrap(),
            Some(r.clone()),
            "format {format}"
        );
        assert_eq!(
            s.history(&r.id).await.unwrap(),
            old_events,
            "format {format}"
        );
        assert_eq!(s.list_active().await.unwrap(), vec![r.clone()]);
        r.revision += 1;
        r.next_seq = 3;
        r.state.status = SagaStatus::Completed;
        s.update(&r, &[ev(&r.id, 2)]).await.unwrap();
        let v = s.tree.get(key(b"s/", "old")).unwrap().unwrap();
        assert_eq!(
            v[0], VALUE_FORMAT,
            "format {format} rewritten in the current one"
        );
        let mut all = old_events.clone();
        all.push(ev(&r.id, 2));
        assert_eq!(s.history(&r.id).await.unwrap(), all, "format {format}");
        assert_eq!(
            s.get(&r.id).await.unwrap(),
            Some(r.clone()),
            "format {format}"
        );
        assert!(s.list_active().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_long_history_spills_into_chunks_so_a_transition_writes_a_bounded_value() {
    let (_d, s) = store();
    let mut r = sample_record("long", None);
    r.next_seq = 0;
    s.create(&r, &[]).await.unwrap();
    let mut biggest = 0;
    for i in 0..2_000u64 {
        r.revision += 1;
        r.next_seq = i + 1;
        s.update(&r, &[ev(&r.id, i)]).await.unwrap();
        biggest = biggest.max(s.tree.get(key(b"s/", "long")).unwrap().unwrap().len());
    }
    let history = s.history(&r.id).await.unwrap();
    assert_eq!(history.len(), 2_000);
    assert!(history
        .iter()
        .enumerate()
        .all(|(i, e)| e.seq == i as u64 && *e == ev(&r.id, i as u64)));
    let chunks = s.tree.scan_prefix(chunk_prefix(&r.id)).count();
    assert!(chunks >= 10, "{chunks} chunks");
    assert!(
        biggest < 2 * SPILL_BYTES,
        "the value grew to {biggest} bytes: its size must not follow the history's"
    );
    // Retention takes the chunks with the record.
    r.revision += 1;
    r.state.status = SagaStatus::Completed;
    r.updated_at_ms = 5;
    s.update(&r, &[]).await.unwrap();
    assert_eq!(s.purge(std::slice::from_ref(&r.id), 10).await.unwrap(), 1);
    assert_eq!(s.tree.scan_prefix(chunk_prefix(&r.id)).count(), 0);
}

#[tokio::test]
async fn a_crash_between_a_spill_and_its_record_reads_each_event_once() {
    let (_d, s) = store();
    let mut r = sample_record("mid", None);
    let events: Vec<_> = (0..3).map(|i| ev(&r.id, i)).collect();
    r.next_seq = 3;
    s.create(&r, &events).await.unwrap();
    // The chunk was written, the record that drops its embedded copy not.
    s.tree
        .insert(chunk_key(&r.id, 0), encode_events(&events))
        .unwrap();
    assert_eq!(s.history(&r.id).await.unwrap(), events);
}

#[tokio::test]
async fn a_purge_that_died_after_deleting_the_record_is_finished_by_the_next_pass() {
    let (_d, s) = store();
    let mut r = sample_record("gone", None);
    s.create(&r, &[ev(&r.id, 0)]).await.unwrap();
    r.revision += 1;
    r.updated_at_ms = 50;
    r.state.status = SagaStatus::Completed;
    s.update(&r, &[]).await.unwrap();
    s.tree
        .insert(chunk_key(&r.id, 0), encode_events(&[ev(&r.id, 0)]))
        .unwrap();
    // The purge died right after deleting the record.
    s.tree.remove(key(b"s/", "gone")).unwrap();
    assert!(s.finished_before(100, 10).await.unwrap().is_empty());
    assert_eq!(s.tree.scan_prefix(chunk_prefix(&r.id)).count(), 0);
    assert_eq!(s.tree.scan_prefix(b"f/").count(), 0);
}

#[tokio::test]
async fn a_saga_leaving_a_durable_wait_is_resumed_now_after_a_restart() {
    // The update path learns "parked" from the stored value's header
    // (format 3) instead of the active index: a wrong header would leave
    // the wake time in the index of a saga that runs again.
    use crate::machine::StepState;
    let dir = tempfile::tempdir().unwrap();
    let mut r = sample_record("waiter", None);
    {
        let s = SledStore::open(dir.path()).unwrap();
        r.state.steps[0].state = StepState::Waiting;
        r.state.steps[0].wake_at_ms = Some(9_000_000);
        s.create(&r, &[]).await.unwrap();
        let parked = s.list_resumable().await.unwrap();
        assert_eq!(parked.parked, vec![(r.id.clone(), 9_000_000)]);
        // The signal came: the step runs again, then a second update.
        for _ in 0..2 {
            r.revision += 1;
            r.state.steps[0].state = StepState::Running;
            r.state.steps[0].wake_at_ms = None;
            s.update(&r, &[]).await.unwrap();
        }
    }
    let s = SledStore::open(dir.path()).unwrap();
    let resumable = s.list_resumable().await.unwrap();
    assert!(resumable.parked.is_empty(), "{:?}", resumable.parked);
    assert_eq!(resumable.now, vec![r]);
}
