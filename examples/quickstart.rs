//! Quickstart: a trip saga on the embedded sled store.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Books a trip: reserve a flight and a hotel (both compensatable), charge
//! the card (the pivot: past it the saga only moves forward), then email the
//! itinerary (retriable, never compensated). The first run completes; the
//! second, whose card is declined at the pivot, compensates the hotel and
//! the flight, newest first.

use saga_engine::{Engine, SagaDefinition, SagaStatus, SledStore, StepError};
use serde::{Deserialize, Serialize};

/// The saga's data: what each step reads and writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Trip {
    traveller: String,
    card_ok: bool,
    flight: Option<String>,
    hotel: Option<String>,
    charged: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let trip = SagaDefinition::<Trip>::builder("trip", 1)
        .action(
            "book_flight",
            // A real participant is called with ctx.idempotency_key, so a
            // retried call books once.
            |ctx, mut t| async move {
                t.flight = Some(format!("FL-{}", &ctx.saga_id.as_str()[20..]));
                Ok(t)
            },
            |_, t| async move {
                println!("  cancelling flight {:?}", t.flight);
                Ok(())
            },
        )
        .action(
            "book_hotel",
            |_, mut t| async move {
                t.hotel = Some(format!("room for {}", t.traveller));
                Ok(t)
            },
            |_, t| async move {
                println!("  cancelling hotel {:?}", t.hotel);
                Ok(())
            },
        )
        .pivot("charge_card", |_, mut t| async move {
            if !t.card_ok {
                return Err(StepError::rejected("card declined"));
            }
            t.charged = true;
            Ok(t)
        })
        .retriable("email_itinerary", |_, t| async move {
            println!("  itinerary sent to {}", t.traveller);
            Ok(t)
        })
        .build()?;
    let (builder, trips) = Engine::builder(SledStore::open(dir.path())?).register_typed(trip);
    let engine = builder.open().await?;

    for (who, card_ok) in [("Ada", true), ("Grace", false)] {
        println!("{who}:");
        let input = Trip {
            traveller: who.into(),
            card_ok,
            ..Trip::default()
        };
        let done = trips.run(&engine, &input, None).await?;
        match done.status {
            SagaStatus::Completed => println!(
                "  completed: {:?}, {:?}, charged {}",
                done.data.flight, done.data.hotel, done.data.charged
            ),
            status => println!("  {status}: {}", done.failure.unwrap_or_default()),
        }
    }
    engine.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}
