//! Several engines on one shared store: ownership by lease, takeover of a
//! dead engine's sagas, and fencing of a stale owner. The shared store here
//! is `MemoryStore::shared()`; the PostgreSQL backend passes the same store
//! conformance checks.

use saga_engine::{
    Engine, MemoryStore, SagaDefinition, SagaStatus, Step, StepContext, StepError, Store,
    StoreError,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct Job {
    n: u32,
}

/// Records which engine ran each step call, and the fencing token it used.
#[derive(Clone, Default)]
struct Ledger(Arc<Mutex<Calls>>);

/// Per idempotency key: which engine called, with which fencing token.
type Calls = HashMap<String, Vec<(String, u64)>>;

struct Work {
    engine: &'static str,
    ledger: Ledger,
    /// When set, the step never returns (its engine is about to die).
    hang: bool,
    started: Arc<AtomicU32>,
}

#[saga_engine::async_trait]
impl Step<Job> for Work {
    async fn run(&self, ctx: &StepContext, _: &mut Job) -> Result<(), StepError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        if self.hang {
            std::future::pending::<()>().await;
        }
        self.ledger
            .0
            .lock()
            .unwrap()
            .entry(ctx.idempotency_key.clone())
            .or_default()
            .push((self.engine.to_string(), ctx.fencing_token));
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &Job) -> Result<(), StepError> {
        Ok(())
    }
}

fn def(
    engine: &'static str,
    ledger: &Ledger,
    hang: bool,
    started: &Arc<AtomicU32>,
) -> SagaDefinition<Job> {
    SagaDefinition::builder("job", 1)
        .step(
            "work",
            Work {
                engine,
                ledger: ledger.clone(),
                hang,
                started: started.clone(),
            },
        )
        .step(
            "finish",
            Work {
                engine,
                ledger: ledger.clone(),
                hang: false,
                started: started.clone(),
            },
        )
        .build()
        .unwrap()
}

#[test]
fn survivors_take_over_a_dead_engines_sagas_after_its_lease_runs_out() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::shared());
    let ledger = Ledger::default();
    let started = Arc::new(AtomicU32::new(0));

    // Engine A runs on its own runtime, starts 6 sagas that hang in their
    // first step, and then dies: its runtime is dropped, so nothing is
    // released and no lease is renewed any more.
    let ids = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store: Arc<dyn Store> = store.clone();
        let ledger = ledger.clone();
        let started = started.clone();
        rt.block_on(async move {
            let a = Engine::builder_arc(store)
                .register(def("a", &ledger, true, &started))
                .owner("a")
                .lease_ttl(Duration::from_millis(300))
                .open()
                .await
                .unwrap();
            let mut ids = Vec::new();
            for n in 0..6 {
                ids.push(a.start("job", &Job { n }, None).await.unwrap());
            }
            while started.load(Ordering::SeqCst) < 6 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ids
        })
        // rt dropped here: engine A is gone.
    };
    for id in &ids {
        let rec = futures_block(store.get(id)).unwrap().unwrap();
        assert_eq!(rec.lease.as_ref().unwrap().owner, "a");
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let b = Engine::builder_arc(store.clone())
            .register(def("b", &ledger, false, &started))
            .owner("b")
            .lease_ttl(Duration::from_millis(300))
            .open()
            .await
            .unwrap();
        for id in &ids {
            let rec = tokio::time::timeout(Duration::from_secs(10), b.wait(id))
                .await
                .expect("b takes over within the lease")
                .unwrap();
            assert_eq!(rec.status(), SagaStatus::Completed);
            let lease = rec.lease.unwrap();
            assert_eq!(lease.owner, "b");
            assert_eq!(lease.generation, 2, "claimed once by a, once by b");
        }
        let calls = ledger.0.lock().unwrap().clone();
        for id in &ids {
            let work = &calls[&format!("{id}:work")];
            assert_eq!(
                work,
                &vec![("b".to_string(), 2)],
                "a never finished; b ran with token 2"
            );
        }

        // Fencing: a stale write from A (generation 1) is refused.
        let mut stale = store.get(&ids[0]).await.unwrap().unwrap();
        stale.lease.as_mut().unwrap().owner = "a".into();
        stale.lease.as_mut().unwrap().generation = 1;
        stale.revision += 1;
        assert!(matches!(
            store.update(&stale, &[]).await,
            Err(StoreError::Conflict { .. })
        ));
        b.shutdown(Duration::from_secs(1)).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_engines_share_the_work_without_running_a_step_twice() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::shared());
    let ledger = Ledger::default();
    let started = Arc::new(AtomicU32::new(0));
    let a = Engine::builder_arc(store.clone())
        .register(def("a", &ledger, false, &started))
        .owner("a")
        .lease_ttl(Duration::from_secs(30))
        .open()
        .await
        .unwrap();
    let b = Engine::builder_arc(store.clone())
        .register(def("b", &ledger, false, &started))
        .owner("b")
        .lease_ttl(Duration::from_secs(30))
        .open()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..20 {
        let e = if n % 2 == 0 { &a } else { &b };
        ids.push(
            e.start("job", &Job { n }, Some(&format!("job-{n}")))
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        // Either engine can wait for any saga.
        assert_eq!(b.wait(id).await.unwrap().status(), SagaStatus::Completed);
    }
    let calls = ledger.0.lock().unwrap().clone();
    assert_eq!(calls.len(), 40, "every step ran");
    assert!(calls.values().all(|v| v.len() == 1), "no step ran twice");
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}
