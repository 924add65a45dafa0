//! Several engines on one shared store: ownership by lease, takeover of a
//! dead engine's sagas, and fencing of a stale owner. The shared store here
//! is `MemoryStore::shared()`; the PostgreSQL backend passes the same store
//! conformance checks.
//!
//! The zombie tests (at the end) take a saga from an owner that is still
//! alive but stalled: its step hangs past the lease and its lease renewals
//! hang in the store (a [`Probe`] around the shared store holds them), so
//! its lease runs out while it still believes it owns the saga. They run
//! on paused tokio time with [`TokioClock`]s, so lease expiry is virtual
//! and exact: no timing luck. Woken after the new owner finished, the
//! zombie's write is refused by the revision alone; woken between the new
//! owner's claim and its first write, it carries the stored revision and
//! only the lease check refuses it (with that check dropped from `update`
//! the checks fail: `the_zombie_checks_fail_when_update_ignores_the_lease`).

use saga_engine::{
    Engine, EventKind, MemoryStore, SagaDefinition, SagaEvent, SagaId, SagaRecord, SagaStatus,
    Step, StepContext, StepError, Store, StoreError, TokioClock,
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

// ---------------------------------------------------------------------------
// A zombie owner: alive, stalled past its lease, fenced off when it wakes.

/// Lease of both engines in the zombie tests: renewed every third of it.
const ZOMBIE_TTL: Duration = Duration::from_millis(240);
/// What both engines' clocks read when a zombie test begins.
const BASE_MS: u64 = 1_700_000_000_000;

/// Closed until opened; once open, stays open.
#[derive(Clone)]
struct Gate(Arc<tokio::sync::watch::Sender<bool>>);

impl Gate {
    fn closed() -> Gate {
        Gate(Arc::new(tokio::sync::watch::Sender::new(false)))
    }
    fn open() -> Gate {
        let g = Gate::closed();
        g.release();
        g
    }
    fn release(&self) {
        self.0.send_replace(true);
    }
    async fn pass(&self) {
        let _ = self.0.subscribe().wait_for(|open| *open).await;
    }
}

/// One engine's view of the shared store: holds its renewals and updates
/// behind gates (a stalled process), records what its updates got back,
/// and, to show that the checks bite, can drop the lease check from
/// `update` (`fencing_off`: the stored lease is copied into the record, as
/// a store that compared revisions only would behave).
struct Probe {
    inner: Arc<MemoryStore>,
    renew_gate: Gate,
    update_gate: Gate,
    fencing_off: bool,
    updates: Mutex<Vec<Result<(), StoreError>>>,
}

impl Probe {
    fn new(inner: &Arc<MemoryStore>, renew_gate: Gate, update_gate: Gate) -> Probe {
        Probe {
            inner: inner.clone(),
            renew_gate,
            update_gate,
            fencing_off: false,
            updates: Mutex::new(Vec::new()),
        }
    }
    fn updates(&self) -> Vec<Result<(), StoreError>> {
        self.updates.lock().unwrap().clone()
    }
}

#[saga_engine::async_trait]
impl Store for Probe {
    async fn create(
        &self,
        record: &SagaRecord,
        events: &[SagaEvent],
    ) -> Result<saga_engine::store::CreateOutcome, StoreError> {
        self.inner.create(record, events).await
    }
    async fn update(&self, record: &SagaRecord, events: &[SagaEvent]) -> Result<(), StoreError> {
        self.update_gate.pass().await;
        let mut record = record.clone();
        if self.fencing_off {
            if let Some(stored) = self.inner.get(&record.id).await? {
                record.lease = stored.lease;
            }
        }
        let r = self.inner.update(&record, events).await;
        self.updates.lock().unwrap().push(r.clone());
        r
    }
    async fn get(&self, id: &SagaId) -> Result<Option<SagaRecord>, StoreError> {
        self.inner.get(id).await
    }
    async fn find_by_key(&self, key: &str) -> Result<Option<SagaId>, StoreError> {
        self.inner.find_by_key(key).await
    }
    async fn history(&self, id: &SagaId) -> Result<Vec<SagaEvent>, StoreError> {
        self.inner.history(id).await
    }
    async fn list_active(&self) -> Result<Vec<SagaRecord>, StoreError> {
        self.inner.list_active().await
    }
    async fn list(
        &self,
        status: Option<SagaStatus>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        self.inner.list(status, limit).await
    }
    fn is_shared(&self) -> bool {
        true
    }
    async fn claim(
        &self,
        owner: &str,
        now_ms: u64,
        ttl_ms: u64,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        self.inner.claim(owner, now_ms, ttl_ms, limit).await
    }
    async fn renew(
        &self,
        owner: &str,
        leases: &[(SagaId, u64)],
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Vec<SagaId>, StoreError> {
        self.renew_gate.pass().await;
        self.inner.renew(owner, leases, now_ms, ttl_ms).await
    }
    async fn release(&self, owner: &str, ids: &[SagaId]) -> Result<(), StoreError> {
        self.inner.release(owner, ids).await
    }
}

/// A step whose effect (who, with which fencing token) lands in the
/// ledger when it completes; with `hold`, it first waits for the gate (a
/// call that hangs past the lease).
struct Held {
    engine: &'static str,
    ledger: Ledger,
    hold: Option<Gate>,
    entered: Arc<AtomicU32>,
}

#[saga_engine::async_trait]
impl Step<Job> for Held {
    async fn run(&self, ctx: &StepContext, _: &mut Job) -> Result<(), StepError> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        if let Some(g) = &self.hold {
            g.pass().await;
        }
        self.ledger
            .0
            .lock()
            .unwrap()
            .entry(ctx.step.clone())
            .or_default()
            .push((self.engine.to_string(), ctx.fencing_token));
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &Job) -> Result<(), StepError> {
        Ok(())
    }
}

fn held_def(
    engine: &'static str,
    ledger: &Ledger,
    hold: Option<Gate>,
    entered: &Arc<AtomicU32>,
) -> SagaDefinition<Job> {
    let step = |hold| Held {
        engine,
        ledger: ledger.clone(),
        hold,
        entered: entered.clone(),
    };
    SagaDefinition::builder("job", 1)
        .step("work", step(hold))
        .step("finish", step(None))
        .build()
        .unwrap()
}

async fn zombie_engine(
    probe: &Arc<Probe>,
    owner: &str,
    def: SagaDefinition<Job>,
    clock: &Arc<TokioClock>,
) -> Engine {
    Engine::builder_arc(probe.clone())
        .clock(clock.clone())
        .register(def)
        .owner(owner)
        .lease_ttl(ZOMBIE_TTL)
        .open()
        .await
        .unwrap()
}

/// Polls (in virtual time) until `done`, for at most a virtual minute.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// When the stalled owner wakes up.
#[derive(Clone, Copy, PartialEq)]
enum Wake {
    /// After the new owner finished the saga.
    AfterFinish,
    /// After the new owner claimed the saga, before it wrote anything: the
    /// revision the zombie expects is still the stored one, so only the
    /// lease (owner, generation) can refuse its write.
    MidTakeover,
}

/// What a zombie run left behind.
struct ZombieRun {
    /// What the zombie's updates got back, in order.
    zombie_updates: Vec<Result<(), StoreError>>,
    /// How many of them it made before it woke.
    zombie_updates_before: usize,
    /// The record and history the moment before the zombie woke, and at the end.
    before_wake: (SagaRecord, Vec<SagaEvent>),
    end: (SagaRecord, Vec<SagaEvent>),
    calls: Calls,
    wake: Wake,
}

/// Engine A starts a saga whose first step hangs and whose renewals hang:
/// its lease runs out while it lives. Engine B claims the saga (lease
/// generation 2) and runs it; A then wakes up, at `wake`.
async fn zombie_run(wake: Wake, fencing_off: bool) -> ZombieRun {
    let store = Arc::new(MemoryStore::shared());
    let ledger = Ledger::default();
    let entered = Arc::new(AtomicU32::new(0));
    let clock_a = Arc::new(TokioClock::new(BASE_MS));
    let clock_b = Arc::new(TokioClock::new(BASE_MS));
    let (step_gate, renew_gate) = (Gate::closed(), Gate::closed());
    let mut probe_a = Probe::new(&store, renew_gate.clone(), Gate::open());
    probe_a.fencing_off = fencing_off;
    let probe_a = Arc::new(probe_a);
    let b_writes = match wake {
        Wake::AfterFinish => Gate::open(),
        Wake::MidTakeover => Gate::closed(),
    };
    let probe_b = Arc::new(Probe::new(&store, Gate::open(), b_writes.clone()));

    let a = zombie_engine(
        &probe_a,
        "a",
        held_def("a", &ledger, Some(step_gate.clone()), &entered),
        &clock_a,
    )
    .await;
    let id = a.start("job", &Job { n: 0 }, None).await.unwrap();
    until("a enters its step", || entered.load(Ordering::SeqCst) == 1).await;
    let b = zombie_engine(
        &probe_b,
        "b",
        held_def("b", &ledger, None, &entered),
        &clock_b,
    )
    .await;
    let lease = |r: &SagaRecord| r.lease.clone().map(|l| (l.owner, l.generation));
    match wake {
        Wake::AfterFinish => {
            let rec = tokio::time::timeout(Duration::from_secs(60), b.wait(&id))
                .await
                .expect("b takes the saga over once a's lease runs out")
                .unwrap();
            assert_eq!(rec.status(), SagaStatus::Completed);
        }
        Wake::MidTakeover => {
            let mut claimed = false;
            while !claimed {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let rec = store.get(&id).await.unwrap().unwrap();
                claimed = lease(&rec) == Some(("b".into(), 2));
            }
        }
    }
    assert_eq!(a.running_count(), 1, "a still believes it runs the saga");
    let now = |store: &Arc<MemoryStore>| {
        let store = store.clone();
        let id = id.clone();
        async move {
            (
                store.get(&id).await.unwrap().unwrap(),
                store.history(&id).await.unwrap(),
            )
        }
    };
    let before_wake = now(&store).await;
    let zombie_updates_before = probe_a.updates().len();

    // The zombie wakes: its step returns and it records the result. Its
    // renewals stay stalled until that write is answered, so nothing but
    // the store can stop it.
    step_gate.release();
    until("the zombie writes its step's result", || {
        probe_a.updates().len() > zombie_updates_before
    })
    .await;
    renew_gate.release();
    b_writes.release();
    let rec = tokio::time::timeout(Duration::from_secs(60), b.wait(&id))
        .await
        .expect("the saga ends")
        .unwrap();
    assert!(rec.status().is_terminal());
    // Let both lease loops run a few more rounds.
    tokio::time::sleep(ZOMBIE_TTL * 3).await;
    assert_eq!(a.running_count(), 0, "the zombie's worker stopped");
    let end = now(&store).await;
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
    let calls = ledger.0.lock().unwrap().clone();
    ZombieRun {
        zombie_updates: probe_a.updates(),
        zombie_updates_before,
        before_wake,
        end,
        calls,
        wake,
    }
}

/// Every way the run broke the fencing promise.
fn fencing_violations(run: &ZombieRun) -> Vec<String> {
    let mut v = Vec::new();
    // The zombie's late writes (every one after it woke) are refused, as
    // a conflict.
    let late = &run.zombie_updates[run.zombie_updates_before..];
    if late.is_empty() {
        v.push("the zombie made no late write".into());
    }
    for r in late {
        if !matches!(r, Err(StoreError::Conflict { .. })) {
            v.push(format!(
                "a late write of the zombie got {r:?}, not a conflict"
            ));
        }
    }
    let (rec, history) = &run.end;
    let lease = rec.lease.clone().map(|l| (l.owner, l.generation));
    if lease != Some(("b".into(), 2)) {
        v.push(format!(
            "the saga ended under lease {lease:?}, not b's generation 2"
        ));
    }
    if rec.status() != SagaStatus::Completed {
        v.push(format!("the saga ended {}", rec.status()));
    }
    let finished = history
        .iter()
        .filter(|e| matches!(e.kind, EventKind::SagaFinished { .. }))
        .count();
    if finished != 1 {
        v.push(format!("the saga finished {finished} times"));
    }
    // The zombie's step result is not recorded: the one success of `work`
    // follows b's resumption.
    let resumed = history
        .iter()
        .position(|e| matches!(e.kind, EventKind::Resumed));
    let work_ok: Vec<usize> = history
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(&e.kind, EventKind::StepSucceeded { step, .. } if step == "work"))
        .map(|(i, _)| i)
        .collect();
    match (resumed, work_ok.as_slice()) {
        (Some(r), [w]) if *w > r => {}
        _ => v.push(format!(
            "work's success recorded at {work_ok:?}, b resumed at {resumed:?}: the zombie's result was recorded"
        )),
    }
    // Effects: at most one per step per generation; after the takeover,
    // only generation 2 acts (the zombie's hung call may land with 1).
    for (step, calls) in &run.calls {
        let mut seen = std::collections::BTreeSet::new();
        for c in calls {
            if !seen.insert(c.clone()) {
                v.push(format!("{step} ran twice as {c:?}"));
            }
        }
        let expected: &[(&str, u64)] = match step.as_str() {
            "work" => &[("a", 1), ("b", 2)],
            _ => &[("b", 2)],
        };
        let mut got: Vec<(&str, u64)> = calls.iter().map(|(e, t)| (e.as_str(), *t)).collect();
        got.sort();
        if got != expected {
            v.push(format!(
                "{step}'s effects were {got:?}, expected {expected:?}"
            ));
        }
    }
    if run.wake == Wake::AfterFinish && run.before_wake != run.end {
        v.push("the store changed after the zombie woke".into());
    }
    v
}

#[tokio::test(start_paused = true)]
async fn a_zombie_woken_after_the_takeover_is_fenced_off() {
    let run = zombie_run(Wake::AfterFinish, false).await;
    let v = fencing_violations(&run);
    assert!(v.is_empty(), "{v:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_zombie_woken_mid_takeover_is_fenced_off_by_the_lease_alone() {
    let run = zombie_run(Wake::MidTakeover, false).await;
    let (before, _) = &run.before_wake;
    assert_eq!(
        before.lease.as_ref().map(|l| l.generation),
        Some(2),
        "b had claimed"
    );
    // Its late write carried the stored revision: only the lease refused it.
    match &run.zombie_updates[run.zombie_updates_before] {
        Err(StoreError::Conflict {
            expected, found, ..
        }) => assert_eq!(
            Some(*expected),
            *found,
            "the revision matched; the lease alone refused the write"
        ),
        other => panic!("the zombie's late write got {other:?}"),
    }
    let v = fencing_violations(&run);
    assert!(v.is_empty(), "{v:#?}");
}

/// The zombie checks bite: with the lease check taken out of `update`,
/// the mid-takeover zombie's late result is recorded and it runs the next
/// step with its stale token, and the checks say so.
#[tokio::test(start_paused = true)]
async fn the_zombie_checks_fail_when_update_ignores_the_lease() {
    let run = zombie_run(Wake::MidTakeover, true).await;
    let v = fencing_violations(&run);
    println!("with fencing off: {v:#?}");
    assert!(
        v.iter().any(|v| v.contains("not a conflict")),
        "the accepted late write is seen: {v:#?}"
    );
    assert!(
        v.iter().any(|v| v.contains("zombie's result was recorded")),
        "{v:#?}"
    );
    assert!(v.iter().any(|v| v.contains("finish's effects")), "{v:#?}");
}
