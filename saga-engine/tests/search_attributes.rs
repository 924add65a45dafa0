//! Search attributes through the engine, on sled: declared by the
//! definition, computed from the input at start and from the final data
//! when the saga ends, found with `Store::list_page`; counted by status.

use saga_engine::store::SagaFilter;
use saga_engine::{Engine, SagaDefinition, SagaStatus, SledStore, Step, StepContext, StepError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct Order {
    customer: String,
    reference: Option<String>,
}

/// Sets the reference, as a booking's last step does.
struct Confirm;

#[saga_engine::async_trait]
impl Step<Order> for Confirm {
    async fn run(&self, _: &StepContext, o: &mut Order) -> Result<(), StepError> {
        o.reference = Some(format!("REF-{}", o.customer.to_uppercase()));
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &Order) -> Result<(), StepError> {
        Ok(())
    }
}

fn definition() -> SagaDefinition<Order> {
    SagaDefinition::builder("order", 1)
        .step("confirm", Confirm)
        .search_attribute("customer", |d| {
            d.get("customer")?.as_str().map(str::to_string)
        })
        .search_attribute_typed("reference", |o: &Order| o.reference.clone())
        .build()
        .unwrap()
}

fn by(name: &str, value: &str) -> SagaFilter {
    SagaFilter {
        attribute: Some((name.to_string(), value.to_string())),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_from_the_input_and_from_the_final_data_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    let engine = Engine::builder(SledStore::open(dir.path()).unwrap())
        .register(definition())
        .open()
        .await
        .unwrap();
    for customer in ["ann", "bob", "ann"] {
        let input = Order {
            customer: customer.into(),
            reference: None,
        };
        let id = engine.start("order", &input, None).await.unwrap();
        assert_eq!(
            engine.wait(&id).await.unwrap().status(),
            SagaStatus::Completed
        );
        ids.push(id);
    }
    let store = engine.store();
    let found = |f: SagaFilter| {
        let store = &store;
        async move {
            store
                .list_page(&f, None, 10)
                .await
                .unwrap()
                .records
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    // Newest first.
    assert_eq!(
        found(by("customer", "ann")).await,
        vec![ids[2].clone(), ids[0].clone()]
    );
    assert_eq!(
        found(by("reference", "REF-BOB")).await,
        vec![ids[1].clone()]
    );
    assert!(found(by("customer", "carl")).await.is_empty());
    assert_eq!(store.status_counts().await.unwrap()["completed"], 3);
}
