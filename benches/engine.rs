//! Engine benchmarks: overhead per step on the memory store, and durable
//! sagas per second on sled at concurrency 64.
//!
//! `cargo bench --bench engine`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use saga_engine::{Engine, MemoryStore, SagaDefinition, SledStore, Step, StepContext, StepError};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Serialize, Deserialize)]
struct D {
    n: u32,
}

struct Noop;
#[saga_engine::async_trait]
impl Step<D> for Noop {
    async fn run(&self, _: &StepContext, d: &mut D) -> Result<(), StepError> {
        d.n += 1;
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &D) -> Result<(), StepError> {
        Ok(())
    }
}

fn definition(steps: usize) -> SagaDefinition<D> {
    let mut b = SagaDefinition::builder("bench", 1);
    for i in 0..steps {
        b = b.step(format!("s{i}"), Noop);
    }
    b.build().unwrap()
}

fn overhead_per_step(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let steps = 10;
    let engine = rt.block_on(async {
        Engine::builder(MemoryStore::new())
            .register(definition(steps))
            .open()
            .await
            .unwrap()
    });
    let mut g = c.benchmark_group("engine_overhead");
    g.throughput(Throughput::Elements(steps as u64));
    g.bench_function("memory_store_10_step_saga", |b| {
        b.to_async(&rt).iter(|| async {
            let id = engine.start("bench", &D { n: 0 }, None).await.unwrap();
            engine.wait(&id).await.unwrap();
        })
    });
    g.finish();
}

fn durable_sagas(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = rt.block_on(async {
        Engine::builder(SledStore::open(dir.path()).unwrap())
            .register(definition(4))
            .open()
            .await
            .unwrap()
    });
    let mut g = c.benchmark_group("durable_sled");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    for concurrency in [1usize, 64] {
        g.throughput(Throughput::Elements(concurrency as u64));
        g.bench_with_input(
            BenchmarkId::new("four_step_sagas", concurrency),
            &concurrency,
            |b, &concurrency| {
                b.to_async(&rt).iter_custom(|iters| {
                    let engine = engine.clone();
                    async move {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let mut tasks = Vec::with_capacity(concurrency);
                            for _ in 0..concurrency {
                                let engine = engine.clone();
                                tasks.push(tokio::spawn(async move {
                                    let id =
                                        engine.start("bench", &D { n: 0 }, None).await.unwrap();
                                    engine.wait(&id).await.unwrap();
                                }));
                            }
                            for t in tasks {
                                t.await.unwrap();
                            }
                        }
                        start.elapsed()
                    }
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, overhead_per_step, durable_sagas);
criterion_main!(benches);
