//! Quickstart: a three-step saga on the embedded sled store.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Books a trip (flight, hotel, car). The first run completes; the second,
//! with a car rental that says no, compensates the hotel and the flight in
//! reverse order.

use saga_engine::{Engine, SagaDefinition, SagaStatus, SledStore, Step, StepContext, StepError};
use serde::{Deserialize, Serialize};

/// The saga's data: what each step reads and writes.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Trip {
    traveller: String,
    car_available: bool,
    flight: Option<String>,
    hotel: Option<String>,
    car: Option<String>,
}

struct BookFlight;
#[saga_engine::async_trait]
impl Step<Trip> for BookFlight {
    async fn run(&self, ctx: &StepContext, trip: &mut Trip) -> Result<(), StepError> {
        // A real participant would be called with ctx.idempotency_key so a
        // retried call books once.
        trip.flight = Some(format!("FL-{}", &ctx.saga_id.as_str()[20..]));
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, trip: &Trip) -> Result<(), StepError> {
        println!("  cancelling flight {:?}", trip.flight);
        Ok(())
    }
}

struct BookHotel;
#[saga_engine::async_trait]
impl Step<Trip> for BookHotel {
    async fn run(&self, _: &StepContext, trip: &mut Trip) -> Result<(), StepError> {
        trip.hotel = Some(format!("room for {}", trip.traveller));
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, trip: &Trip) -> Result<(), StepError> {
        println!("  cancelling hotel {:?}", trip.hotel);
        Ok(())
    }
}

struct RentCar;
#[saga_engine::async_trait]
impl Step<Trip> for RentCar {
    async fn run(&self, _: &StepContext, trip: &mut Trip) -> Result<(), StepError> {
        if !trip.car_available {
            return Err(StepError::rejected("no cars left"));
        }
        trip.car = Some("compact".into());
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &Trip) -> Result<(), StepError> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let trip = SagaDefinition::builder("trip", 1)
        .step("book_flight", BookFlight)
        .step("book_hotel", BookHotel)
        .step("rent_car", RentCar)
        .build()?;
    let engine = Engine::builder(SledStore::open(dir.path())?)
        .register(trip)
        .open()
        .await?;

    for (who, car) in [("Ada", true), ("Grace", false)] {
        let input = Trip {
            traveller: who.into(),
            car_available: car,
            ..Trip::default()
        };
        let id = engine
            .start("trip", &input, Some(&format!("trip-{who}")))
            .await?;
        println!("saga {id} for {who}:");
        let done = engine.wait(&id).await?;
        let trip: Trip = done.data_as()?;
        match done.status() {
            SagaStatus::Completed => println!("  completed: {trip:?}"),
            other => println!(
                "  {other}: {}",
                done.state.failure.as_deref().unwrap_or("no reason")
            ),
        }
        for e in engine.history(&id).await? {
            println!("    #{} {}", e.seq, serde_json::to_string(&e.kind)?);
        }
    }
    engine.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}
