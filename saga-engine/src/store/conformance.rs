//! One test suite every [`Store`] backend must pass.
//!
//! Backends call [`run_all`] from their tests with a factory for fresh,
//! empty stores. Each check panics with a message naming what broke.

use super::{CreateOutcome, SagaRecord, Store, StoreError, RECORD_FORMAT};
use crate::events::{EventKind, SagaEvent};
use crate::machine::{SagaState, SagaStatus};
use crate::SagaId;
use std::future::Future;
use std::sync::Arc;

/// A record for `id` with an optional idempotency key, at revision 0.
pub fn sample_record(id: &str, key: Option<&str>) -> SagaRecord {
    SagaRecord {
        revision: 0,
        v: RECORD_FORMAT,
        id: SagaId::from_raw(id.to_string()),
        definition: "conformance".into(),
        version: 1,
        idempotency_key: key.map(str::to_string),
        input_fingerprint: 42,
        next_seq: 1,
        created_at_ms: 1,
        updated_at_ms: 1,
        state: SagaState::new(["a", "b"]),
        data: serde_json::json!({"n": 1}),
    }
}

fn event(id: &SagaId, seq: u64) -> SagaEvent {
    SagaEvent {
        saga_id: id.clone(),
        seq,
        at_ms: seq,
        kind: EventKind::Resumed,
    }
}

/// Runs every check, each on a fresh store from `make`.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    create_get_round_trip(make().await).await;
    idempotency_key_returns_existing(make().await).await;
    concurrent_creates_with_one_key_make_one_saga(Arc::new(make().await)).await;
    updates_need_the_next_revision(make().await).await;
    history_is_ordered_and_appended(make().await).await;
    active_list_and_status_filter(make().await).await;
}

/// A created record reads back equal; a second create of the id fails.
pub async fn create_get_round_trip<S: Store>(store: S) {
    let r = sample_record("r1", None);
    assert_eq!(
        store.create(&r, &[event(&r.id, 0)]).await.unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(store.get(&r.id).await.unwrap(), Some(r.clone()));
    assert_eq!(
        store.get(&SagaId::from_raw("nope".into())).await.unwrap(),
        None
    );
    assert!(matches!(
        store.create(&r, &[]).await,
        Err(StoreError::AlreadyExists(_))
    ));
}

/// A key already used returns the existing saga and writes nothing.
pub async fn idempotency_key_returns_existing<S: Store>(store: S) {
    let a = sample_record("a", Some("key-1"));
    let b = sample_record("b", Some("key-1"));
    assert_eq!(store.create(&a, &[]).await.unwrap(), CreateOutcome::Created);
    match store.create(&b, &[event(&b.id, 0)]).await.unwrap() {
        CreateOutcome::Existing(r) => assert_eq!(r.id, a.id),
        other => panic!("second create with the same key gave {other:?}"),
    }
    assert_eq!(
        store.get(&b.id).await.unwrap(),
        None,
        "nothing written for b"
    );
    assert!(store.history(&b.id).await.unwrap().is_empty());
    assert_eq!(
        store.find_by_key("key-1").await.unwrap(),
        Some(a.id.clone())
    );
    assert_eq!(store.find_by_key("key-2").await.unwrap(), None);
}

/// Racing creates with one key: exactly one wins, all see the winner.
pub async fn concurrent_creates_with_one_key_make_one_saga<S: Store>(store: Arc<S>) {
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let r = sample_record(&format!("race-{i}"), Some("shared"));
            match store.create(&r, &[]).await.unwrap() {
                CreateOutcome::Created => r.id,
                CreateOutcome::Existing(e) => e.id,
            }
        }));
    }
    let mut winners = std::collections::HashSet::new();
    for t in tasks {
        winners.insert(t.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "all racers must agree on one saga");
    let all = store.list(None, 100).await.unwrap();
    assert_eq!(
        all.len(),
        1,
        "exactly one record written, found {}",
        all.len()
    );
}

/// Updates must carry the stored revision plus one.
pub async fn updates_need_the_next_revision<S: Store>(store: S) {
    let mut r = sample_record("u", None);
    store.create(&r, &[]).await.unwrap();
    r.revision = 2;
    assert!(matches!(
        store.update(&r, &[]).await,
        Err(StoreError::Conflict { found: Some(0), .. })
    ));
    r.revision = 1;
    r.data = serde_json::json!({"n": 2});
    store.update(&r, &[]).await.unwrap();
    assert_eq!(store.get(&r.id).await.unwrap().unwrap().data["n"], 2);
    assert!(matches!(
        store.update(&r, &[]).await,
        Err(StoreError::Conflict { .. })
    ));
    let ghost = sample_record("ghost", None);
    assert!(matches!(
        store
            .update(
                &SagaRecord {
                    revision: 1,
                    ..ghost
                },
                &[]
            )
            .await,
        Err(StoreError::Conflict { found: None, .. })
    ));
}

/// History comes back in sequence order, across several appends.
pub async fn history_is_ordered_and_appended<S: Store>(store: S) {
    let mut r = sample_record("h", None);
    store.create(&r, &[event(&r.id, 0)]).await.unwrap();
    for rev in 1..=300u64 {
        r.revision = rev;
        store.update(&r, &[event(&r.id, rev)]).await.unwrap();
    }
    let seqs: Vec<u64> = store
        .history(&r.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (0..=300).collect::<Vec<_>>());
    let other = sample_record("h2", None);
    store.create(&other, &[]).await.unwrap();
    assert!(store.history(&other.id).await.unwrap().is_empty());
}

/// Terminal sagas leave the active list; `list` filters by status.
pub async fn active_list_and_status_filter<S: Store>(store: S) {
    for id in ["x1", "x2", "x3"] {
        store.create(&sample_record(id, None), &[]).await.unwrap();
    }
    let mut done = store
        .get(&SagaId::from_raw("x2".into()))
        .await
        .unwrap()
        .unwrap();
    done.revision += 1;
    done.state.status = SagaStatus::Completed;
    store.update(&done, &[]).await.unwrap();
    let mut active: Vec<String> = store
        .list_active()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id.to_string())
        .collect();
    active.sort();
    assert_eq!(active, vec!["x1", "x3"]);
    let completed = store.list(Some(SagaStatus::Completed), 10).await.unwrap();
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0].id.as_str(), "x2");
    assert_eq!(store.list(None, 2).await.unwrap().len(), 2);
    assert_eq!(
        store.list(Some(SagaStatus::Stuck), 10).await.unwrap().len(),
        0
    );
}
