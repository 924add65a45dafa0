//! What a parallel group costs the engine, against the same steps run one
//! after the other, on the memory store (so that the store's flush does
//! not hide the engine's own work), measured in the same run:
//!
//! - **overhead**: four steps that do nothing, one saga at a time and 32
//!   at once; the ratio is the group's time per saga over the sequence's
//!   (above 1: what the members' tasks and per-member writes cost);
//! - **latency**: the same four steps each waiting 1 ms for a "participant"
//!   (a timer); the ratio shows what the group is for.
//!
//! Rounds alternate group and sequence (A/B/A/B...) and the medians are
//! compared, so a machine busy with something else shifts both alike.
//!
//! `CARGO_INCREMENTAL=0 cargo bench --bench group_overhead`

use saga_engine::{Engine, MemoryStore, SagaDefinition, StepContext, StepError};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

const MEMBERS: usize = 4;
const ROUNDS: usize = 7;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct D {
    n: u32,
}

fn run_step(
    latency: Duration,
) -> impl Fn(
    StepContext,
    D,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<D, StepError>> + Send>>
       + Send
       + Sync
       + Clone
       + 'static {
    move |_ctx, d| {
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            Ok(d)
        })
    }
}

fn undo(_ctx: StepContext, _d: D) -> std::future::Ready<Result<(), StepError>> {
    std::future::ready(Ok(()))
}

fn sequential(latency: Duration) -> SagaDefinition<D> {
    let mut b = SagaDefinition::builder("sequential", 1);
    for i in 0..MEMBERS {
        b = b.action(format!("s{i}"), run_step(latency), undo);
    }
    b.build().unwrap()
}

fn grouped(latency: Duration) -> SagaDefinition<D> {
    SagaDefinition::builder("grouped", 1)
        .group("all", |mut g| {
            for i in 0..MEMBERS {
                g = g.action(format!("s{i}"), run_step(latency), undo);
            }
            g
        })
        .build()
        .unwrap()
}

/// Runs `sagas` sagas of `name`, `concurrency` at a time; µs per saga.
async fn measure(engine: &Engine, name: &str, sagas: usize, concurrency: usize) -> f64 {
    let started = Instant::now();
    let per_task = sagas / concurrency;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (engine, name) = (engine.clone(), name.to_string());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_task {
                let id = engine.start(&name, &D { n: 0 }, None).await.unwrap();
                let rec = engine.wait(&id).await.unwrap();
                assert!(rec.status().is_terminal());
                assert_eq!(rec.status(), saga_engine::SagaStatus::Completed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed().as_secs_f64() * 1e6 / (per_task * concurrency) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

async fn compare(label: &str, latency: Duration, sagas: usize, concurrency: usize) {
    let engine = Engine::builder(MemoryStore::new())
        .register(sequential(latency))
        .register(grouped(latency))
        .open()
        .await
        .unwrap();
    // Warm up both.
    measure(&engine, "sequential", sagas / 10 + concurrency, concurrency).await;
    measure(&engine, "grouped", sagas / 10 + concurrency, concurrency).await;
    let (mut seq, mut grp) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        seq.push(measure(&engine, "sequential", sagas, concurrency).await);
        grp.push(measure(&engine, "grouped", sagas, concurrency).await);
    }
    let (s, g) = (median(seq), median(grp));
    println!(
        "{label:<10} c={concurrency:<3} {MEMBERS} steps: sequential {s:>9.1} us/saga, group {g:>9.1} us/saga, group/sequential = {:.2}",
        g / s
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        compare("overhead", Duration::ZERO, 4_000, 1).await;
        compare("overhead", Duration::ZERO, 8_000, 32).await;
        compare("latency", Duration::from_millis(1), 200, 1).await;
        compare("latency", Duration::from_millis(1), 3_200, 32).await;
    });
}
