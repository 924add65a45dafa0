//! The shared store conformance suite, run against every backend.

use saga_engine::store::conformance;
use saga_engine::{MemoryStore, SledStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    conformance::run_all(|| async { MemoryStore::new() }).await;
    conformance::run_retention(|| async { MemoryStore::new() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_conforms_with_retention() {
    let dirs = std::sync::Mutex::new(Vec::new());
    conformance::run_retention(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        dirs.lock().unwrap().push(dir);
        async move { store }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_conforms() {
    let dirs = std::sync::Mutex::new(Vec::new());
    conformance::run_all(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        dirs.lock().unwrap().push(dir);
        async move { store }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_keeps_records_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let rec = conformance::sample_record("persist", Some("k"));
    {
        let store = SledStore::open(dir.path()).unwrap();
        store.create(&rec, &[]).await.unwrap();
        assert!(
            store.flush_count() >= 1,
            "create must flush before returning"
        );
    }
    let store = conformance::reopen_sled(dir.path());
    assert_eq!(store.get(&rec.id).await.unwrap(), Some(rec.clone()));
    assert_eq!(store.find_by_key("k").await.unwrap(), Some(rec.id.clone()));
    assert_eq!(store.list_active().await.unwrap().len(), 1);
}

/// The defect an outside review found: the active index lost a stuck saga
/// retried by an operator, so a reopened store did not resume it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_resumes_a_retried_stuck_saga_after_reopen() {
    use saga_engine::SagaStatus;
    let dir = tempfile::tempdir().unwrap();
    let mut rec = conformance::sample_record("retried", Some("rk"));
    {
        let store = SledStore::open(dir.path()).unwrap();
        store.create(&rec, &[]).await.unwrap();
        for status in [SagaStatus::Stuck, SagaStatus::Compensating] {
            rec.revision += 1;
            rec.state.status = status;
            store.update(&rec, &[]).await.unwrap();
        }
    }
    let store = conformance::reopen_sled(dir.path());
    let active = store.list_active().await.unwrap();
    assert_eq!(
        active.len(),
        1,
        "the retried saga must be resumed: {active:?}"
    );
    assert_eq!(active[0], rec);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SledStore::open(dir.path()).unwrap());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let rec = conformance::sample_record(&format!("g{i}"), None);
            store.create(&rec, &[]).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let flushes = store.flush_count();
    assert_eq!(store.list(None, 1000).await.unwrap().len(), 200);
    assert!(
        flushes < 200,
        "200 concurrent creates took {flushes} flushes: group commit is not sharing them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_memory_store_conforms_with_leases() {
    conformance::run_all(|| async { MemoryStore::shared() }).await;
    conformance::run_shared(|| async { MemoryStore::shared() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms_with_queries() {
    conformance::run_query(|| async { MemoryStore::new() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_conforms_with_queries() {
    let dirs = std::sync::Mutex::new(Vec::new());
    conformance::run_query(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        dirs.lock().unwrap().push(dir);
        async move { store }
    })
    .await;
}

#[path = "store_conformance/sled_query.rs"]
mod sled_query;

/// A backend without query indexes of its own: the trait's defaults.
struct NoIndexes(MemoryStore);

#[saga_engine::async_trait]
impl Store for NoIndexes {
    async fn create(
        &self,
        r: &saga_engine::SagaRecord,
        e: &[saga_engine::SagaEvent],
    ) -> Result<saga_engine::store::CreateOutcome, saga_engine::StoreError> {
        self.0.create(r, e).await
    }
    async fn update(
        &self,
        r: &saga_engine::SagaRecord,
        e: &[saga_engine::SagaEvent],
    ) -> Result<(), saga_engine::StoreError> {
        self.0.update(r, e).await
    }
    async fn get(
        &self,
        id: &saga_engine::SagaId,
    ) -> Result<Option<saga_engine::SagaRecord>, saga_engine::StoreError> {
        self.0.get(id).await
    }
    async fn find_by_key(
        &self,
        k: &str,
    ) -> Result<Option<saga_engine::SagaId>, saga_engine::StoreError> {
        self.0.find_by_key(k).await
    }
    async fn history(
        &self,
        id: &saga_engine::SagaId,
    ) -> Result<Vec<saga_engine::SagaEvent>, saga_engine::StoreError> {
        self.0.history(id).await
    }
    async fn list_active(&self) -> Result<Vec<saga_engine::SagaRecord>, saga_engine::StoreError> {
        self.0.list_active().await
    }
    async fn list(
        &self,
        s: Option<saga_engine::SagaStatus>,
        n: usize,
    ) -> Result<Vec<saga_engine::SagaRecord>, saga_engine::StoreError> {
        self.0.list(s, n).await
    }
    async fn finished_before(
        &self,
        before: u64,
        n: usize,
    ) -> Result<Vec<saga_engine::SagaRecord>, saga_engine::StoreError> {
        self.0.finished_before(before, n).await
    }
    async fn purge(
        &self,
        ids: &[saga_engine::SagaId],
        now: u64,
    ) -> Result<usize, saga_engine::StoreError> {
        self.0.purge(ids, now).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_listing_and_counts_conform() {
    conformance::run_query(|| async { NoIndexes(MemoryStore::new()) }).await;
}
