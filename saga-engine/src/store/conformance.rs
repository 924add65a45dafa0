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

mod overdue;
mod query;
pub use overdue::*;
pub use query::*;

/// Opens the sled store in `dir` again once the previous handle in this
/// process has let go of sled's directory lock: sled's background threads
/// may still be finishing a write for a moment after the last handle is
/// dropped. Waits for that condition (up to 30 s, then panics); any other
/// error panics at once.
pub fn reopen_sled(dir: &std::path::Path) -> super::SledStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match super::SledStore::open(dir) {
            Ok(s) => return s,
            Err(e) if e.to_string().contains("could not acquire lock") => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the store stays locked: {e}"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("reopen {}: {e}", dir.display()),
        }
    }
}

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
        lease: None,
        attributes: Default::default(),
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
    a_retried_stuck_saga_is_active_again(make().await).await;
    overdue::a_paused_saga_is_active(make().await).await;
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
                CreateOutcome::Retired { .. } => panic!("no key was retired"),
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

/// A saga that went `Stuck` (not active: nothing runs it) and was then
/// moved back to `Compensating` by an operator's retry is active again:
/// a reopened engine must resume it. Then it ends and leaves the list.
pub async fn a_retried_stuck_saga_is_active_again<S: Store>(store: S) {
    let mut r = sample_record("st1", Some("stuck-key"));
    store.create(&r, &[]).await.unwrap();
    for status in [SagaStatus::Compensating, SagaStatus::Stuck] {
        r.revision += 1;
        r.state.status = status;
        store.update(&r, &[]).await.unwrap();
    }
    assert!(
        store.list_active().await.unwrap().is_empty(),
        "a stuck saga is not active"
    );
    r.revision += 1;
    r.state.status = SagaStatus::Compensating;
    store.update(&r, &[]).await.unwrap();
    let active: Vec<SagaId> = store
        .list_active()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(
        active,
        vec![r.id.clone()],
        "a stuck saga retried by an operator (Stuck -> Compensating) must be active again"
    );
    r.revision += 1;
    r.state.status = SagaStatus::Compensated;
    store.update(&r, &[]).await.unwrap();
    assert!(store.list_active().await.unwrap().is_empty());
    assert_eq!(store.find_by_key("stuck-key").await.unwrap(), Some(r.id));
}

/// Retention checks, for backends that support it ([`Store::purge`]),
/// each on a fresh store from `make`.
pub async fn run_retention<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    purge_takes_only_finished_sagas_and_retires_their_keys(make().await).await;
}

async fn at_status<S: Store>(
    store: &S,
    id: &str,
    key: Option<&str>,
    status: SagaStatus,
    at: u64,
) -> SagaRecord {
    let mut r = sample_record(id, key);
    store.create(&r, &[event(&r.id, 0)]).await.unwrap();
    if status != SagaStatus::Running {
        r.revision += 1;
        r.state.status = status;
        r.updated_at_ms = at;
        store.update(&r, &[event(&r.id, 1)]).await.unwrap();
    }
    r
}

/// Only `Completed` and `Compensated` sagas are purge candidates, oldest
/// first; a purged saga's record, history and key are gone, the key is
/// retired (a create with it is refused) until it is forgotten.
pub async fn purge_takes_only_finished_sagas_and_retires_their_keys<S: Store>(store: S) {
    let a = at_status(&store, "pa", Some("ka"), SagaStatus::Completed, 100).await;
    let b = at_status(&store, "pb", Some("kb"), SagaStatus::Compensated, 200).await;
    let c = at_status(&store, "pc", Some("kc"), SagaStatus::Stuck, 50).await;
    let d = at_status(&store, "pd", Some("kd"), SagaStatus::Running, 10).await;
    let ids = |v: Vec<SagaRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.finished_before(150, 10).await.unwrap()),
        vec![a.id.clone()]
    );
    assert_eq!(
        ids(store.finished_before(1_000, 10).await.unwrap()),
        vec![a.id.clone(), b.id.clone()]
    );
    assert_eq!(
        ids(store.finished_before(1_000, 1).await.unwrap()),
        vec![a.id.clone()]
    );
    let before = store.saga_count();
    // Not finished (stuck, running) or unknown: left alone.
    let n = store
        .purge(
            &[
                a.id.clone(),
                c.id.clone(),
                d.id.clone(),
                SagaId::from_raw("none".into()),
            ],
            300,
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(store.get(&a.id).await.unwrap(), None);
    assert!(store.history(&a.id).await.unwrap().is_empty());
    assert_eq!(store.find_by_key("ka").await.unwrap(), None);
    assert!(store.get(&c.id).await.unwrap().is_some());
    assert_eq!(store.find_by_key("kc").await.unwrap(), Some(c.id.clone()));
    assert_eq!(ids(store.list_active().await.unwrap()), vec![d.id.clone()]);
    if let Some(before) = before {
        assert_eq!(store.saga_count(), Some(before - 1));
    }
    let reuse = sample_record("pa2", Some("ka"));
    assert_eq!(
        store.create(&reuse, &[]).await.unwrap(),
        CreateOutcome::Retired { purged_at_ms: 300 },
        "a retired key must not start a new saga"
    );
    assert_eq!(store.get(&reuse.id).await.unwrap(), None, "nothing written");
    // Keys retired at 300 are kept by a cut-off at 300, forgotten after.
    assert_eq!(store.forget_keys(300, 10).await.unwrap(), 0);
    assert_eq!(store.forget_keys(301, 10).await.unwrap(), 1);
    assert_eq!(
        store.create(&reuse, &[]).await.unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(
        store.find_by_key("ka").await.unwrap(),
        Some(reuse.id.clone())
    );
    // The other finished saga is still there until purged.
    assert_eq!(
        ids(store.finished_before(1_000, 10).await.unwrap()),
        vec![b.id.clone()]
    );
    assert_eq!(
        store.purge(std::slice::from_ref(&b.id), 400).await.unwrap(),
        1
    );
    assert!(store
        .finished_before(u64::MAX, 10)
        .await
        .unwrap()
        .is_empty());
}

/// Lease checks for stores shared by several engine processes
/// ([`Store::is_shared`]), each on a fresh store from `make`.
pub async fn run_shared<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    claims_are_exclusive_until_expiry(make().await).await;
    stale_owners_are_fenced(make().await).await;
    racing_claimers_split_the_work(Arc::new(make().await)).await;
}

fn unleased(id: &str) -> SagaRecord {
    sample_record(id, None)
}

/// A claim holds a saga until its lease expires; the next claim bumps the
/// generation; terminal sagas are never claimed; release frees at once.
pub async fn claims_are_exclusive_until_expiry<S: Store>(store: S) {
    assert!(store.is_shared());
    store.create(&unleased("c1"), &[]).await.unwrap();
    let mut done = unleased("c2");
    done.state.status = SagaStatus::Completed;
    store.create(&done, &[]).await.unwrap();

    let got = store.claim("x", 1_000, 500, 10).await.unwrap();
    assert_eq!(got.len(), 1, "only the active saga is claimed");
    let lease = got[0].lease.clone().expect("claimed with a lease");
    assert_eq!(
        (lease.owner.as_str(), lease.generation, lease.expires_at_ms),
        ("x", 1, 1_500)
    );
    assert!(
        store.claim("y", 1_200, 500, 10).await.unwrap().is_empty(),
        "held by x"
    );
    assert!(store
        .renew("x", &[(got[0].id.clone(), 1)], 1_400, 500)
        .await
        .unwrap()
        .is_empty());
    assert!(
        store.claim("y", 1_600, 500, 10).await.unwrap().is_empty(),
        "renewed to 1,900"
    );
    let taken = store.claim("y", 2_000, 500, 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].lease.as_ref().unwrap().generation, 2);
    assert_eq!(
        store
            .renew("x", &[(got[0].id.clone(), 1)], 2_100, 500)
            .await
            .unwrap(),
        vec![got[0].id.clone()],
        "x learns it lost the saga"
    );
    store.release("y", &[taken[0].id.clone()]).await.unwrap();
    let again = store.claim("z", 2_200, 500, 10).await.unwrap();
    assert_eq!(again.len(), 1, "released sagas are claimable at once");
    assert_eq!(again[0].lease.as_ref().unwrap().generation, 3);
}

/// An update carrying an old lease generation is refused.
pub async fn stale_owners_are_fenced<S: Store>(store: S) {
    store.create(&unleased("f1"), &[]).await.unwrap();
    let mine = store.claim("old", 0, 100, 10).await.unwrap().remove(0);
    let theirs = store.claim("new", 500, 100, 10).await.unwrap().remove(0);
    let mut stale = mine.clone();
    stale.revision += 1;
    stale.data = serde_json::json!({"stale": true});
    assert!(
        matches!(
            store.update(&stale, &[]).await,
            Err(StoreError::Conflict { .. })
        ),
        "the stale owner must be fenced off"
    );
    let mut current = theirs.clone();
    current.revision += 1;
    store.update(&current, &[]).await.unwrap();
    let stored = store.get(&current.id).await.unwrap().unwrap();
    assert_eq!(stored.data, serde_json::json!({"n": 1}));
    assert_eq!(stored.lease.as_ref().unwrap().owner, "new");
}

/// Claimers racing for many sagas each get a disjoint share.
pub async fn racing_claimers_split_the_work<S: Store>(store: Arc<S>) {
    for i in 0..40 {
        store
            .create(&unleased(&format!("w{i:02}")), &[])
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for c in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..10 {
                let got = store
                    .claim(&format!("c{c}"), 1_000, 10_000, 3)
                    .await
                    .unwrap();
                mine.extend(got.into_iter().map(|r| r.id));
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: std::collections::HashSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), unique.len(), "a saga was claimed twice");
    assert_eq!(unique.len(), 40, "every saga claimed once");
}
