//! Points the deterministic simulation at your own saga: implement
//! `SimTarget` (the definition over your participants, an input, and the
//! promises your participants must keep), then `simulate` seeds on a
//! virtual clock with crashes at durable writes and faults at participant
//! calls. Run: `cargo run -p saga-engine --example simulate_my_saga [SEEDS]`.
//! A failure names the seed; `simulate(target, seed..seed + 1, options)`
//! replays it.

use saga_engine::testing::{simulate, SimOptions, SimTarget};
use saga_engine::{SagaDefinition, SagaRecord, SagaStatus, StepContext, StepError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Order {
    item: String,
}

/// A participant that applies each effect once per idempotency key.
#[derive(Default)]
struct Warehouse {
    /// Key -> effect standing?
    holds: HashMap<String, bool>,
}

struct MySaga {
    warehouse: Arc<Mutex<Warehouse>>,
}

impl SimTarget for MySaga {
    type Data = Order;

    fn definition(&self) -> SagaDefinition<Order> {
        let (w1, w2) = (self.warehouse.clone(), self.warehouse.clone());
        SagaDefinition::<Order>::builder("order", 1)
            .action(
                "hold_stock",
                move |ctx: StepContext, o: Order| {
                    w1.lock()
                        .unwrap()
                        .holds
                        .entry(ctx.idempotency_key)
                        .or_insert(true);
                    async move { Ok(o) }
                },
                move |ctx: StepContext, _o: Order| {
                    w2.lock().unwrap().holds.insert(ctx.idempotency_key, false);
                    async move { Ok::<(), StepError>(()) }
                },
            )
            .pivot("ship", |_ctx, o: Order| async move { Ok(o) })
            .build()
            .expect("a valid definition")
    }

    fn input(&self, n: usize) -> Order {
        Order {
            item: format!("item-{n}"),
        }
    }

    fn check(&self, rec: &SagaRecord) -> Result<(), String> {
        let key = format!("{}:hold_stock", rec.id);
        let standing = self
            .warehouse
            .lock()
            .unwrap()
            .holds
            .get(&key)
            .copied()
            .unwrap_or(false);
        match rec.status() {
            SagaStatus::Compensated if standing => Err("stock still held".into()),
            SagaStatus::Completed if !standing => Err("stock not held".into()),
            _ => Ok(()),
        }
    }
}

fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let report = simulate(
        |_seed| MySaga {
            warehouse: Arc::default(),
        },
        0..seeds,
        &SimOptions::default(),
    );
    println!(
        "{} seeds: {} completed, {} compensated, {} stuck; {} crashes, {} of {} calls disturbed",
        report.seeds,
        report.completed,
        report.compensated,
        report.stuck,
        report.crashes,
        report.faults,
        report.calls
    );
    report.assert_passed();
}
