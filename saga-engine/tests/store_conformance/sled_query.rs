//! The sled store's query indexes beyond the shared suite: they agree with
//! the records after a mixed workload and a reopen, an older store is
//! indexed at open, a create that never finished is not listed and is
//! uncounted once repaired.

use saga_engine::store::{conformance, SagaFilter};
use saga_engine::{SagaStatus, SledStore, Store};

use conformance::reopen_sled as reopen;

fn record(i: usize) -> saga_engine::SagaRecord {
    let mut r = conformance::sample_record(&format!("s{i:03}"), Some(&format!("k{i}")));
    r.created_at_ms = 1_000 + i as u64;
    r.attributes
        .insert("reference".into(), format!("R{}", i % 5));
    r
}

/// Creates 30 sagas, moves them through statuses, purges the finished
/// ones; returns how many are left.
async fn workload(store: &SledStore) -> usize {
    let mut finished = Vec::new();
    for i in 0..30 {
        let mut r = record(i);
        store.create(&r, &[]).await.unwrap();
        for status in [SagaStatus::Compensating, SagaStatus::Compensated]
            .into_iter()
            .take(i % 3)
        {
            r.revision += 1;
            r.state.status = status;
            store.update(&r, &[]).await.unwrap();
        }
        if r.status() == SagaStatus::Compensated && i % 2 == 0 {
            finished.push(r.id.clone());
        }
    }
    30 - store.purge(&finished, 5_000).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_and_counts_agree_with_the_records_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let left = {
        let store = SledStore::open(dir.path()).unwrap();
        let left = workload(&store).await;
        assert_eq!(store.check_query_indexes().unwrap(), Vec::<String>::new());
        left
    };
    let store = reopen(dir.path());
    assert_eq!(store.check_query_indexes().unwrap(), Vec::<String>::new());
    let counts = store.status_counts().await.unwrap();
    assert_eq!(counts.values().sum::<u64>() as usize, left);
    let page = store
        .list_page(&SagaFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(page.records.len(), left);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_before_the_indexes_is_indexed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let left = {
        let store = SledStore::open(dir.path()).unwrap();
        let left = workload(&store).await;
        // Take the store back to before the indexes: only records.
        let tree = store.db().open_tree("saga_engine").unwrap();
        for prefix in [&b"qc/"[..], b"qs/", b"qa/", b"qj/", b"qm/"] {
            for k in tree.scan_prefix(prefix).keys() {
                tree.remove(k.unwrap()).unwrap();
            }
        }
        store.db().flush().unwrap();
        left
    };
    let store = reopen(dir.path());
    assert_eq!(store.check_query_indexes().unwrap(), Vec::<String>::new());
    let counts = store.status_counts().await.unwrap();
    assert_eq!(counts.values().sum::<u64>() as usize, left);
    let by_ref = SagaFilter {
        attribute: Some(("reference".into(), "R1".into())),
        ..Default::default()
    };
    let page = store.list_page(&by_ref, None, 100).await.unwrap();
    assert!(!page.records.is_empty());
    assert!(page
        .records
        .iter()
        .all(|r| r.attributes["reference"] == "R1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_never_finished_is_not_listed_and_is_uncounted_when_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let done = record(1);
    let torn = record(2);
    store.create(&done, &[]).await.unwrap();
    store.create(&torn, &[]).await.unwrap();
    // A crash between the record and its idempotency key: the key was
    // never written.
    let tree = store.db().open_tree("saga_engine").unwrap();
    tree.remove(b"k/k2").unwrap();
    let page = store
        .list_page(&SagaFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(page.records, vec![done.clone()]);
    // What an engine does at open repairs it, and its count with it.
    store.list_resumable().await.unwrap();
    assert_eq!(store.get(&torn.id).await.unwrap(), None);
    assert_eq!(store.status_counts().await.unwrap()["running"], 1);
    assert_eq!(store.check_query_indexes().unwrap(), Vec::<String>::new());
}

/// Past a journal checkpoint (more than a thousand counted writes), the
/// counts and indexes still agree with the records after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_survive_reopen_across_journal_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        for i in 0..700 {
            let mut r = record(i);
            store.create(&r, &[]).await.unwrap();
            if i % 2 == 0 {
                r.revision += 1;
                r.state.status = SagaStatus::Completed;
                store.update(&r, &[]).await.unwrap();
            }
        }
        let done: Vec<_> = (0..700).step_by(4).map(|i| record(i).id).collect();
        assert_eq!(store.purge(&done, 9_000).await.unwrap(), done.len());
        assert_eq!(store.check_query_indexes().unwrap(), Vec::<String>::new());
    }
    let store = reopen(dir.path());
    assert_eq!(store.check_query_indexes().unwrap(), Vec::<String>::new());
    let counts = store.status_counts().await.unwrap();
    assert_eq!(counts["running"], 350);
    assert_eq!(counts["completed"], 175);
}
