//! The four-step trivial saga that `loadgen` and `sled_floor` run (and
//! that the peer benchmark runs on Restate and DBOS): each step adds one
//! to a counter, and may be told to reject instead.

use saga_engine::{Step, StepContext, StepError};
use serde::{Deserialize, Serialize};

/// The steps, in order.
pub const STEPS: [&str; 4] = [
    "reserve_seat",
    "authorize_payment",
    "award_miles",
    "confirm_booking",
];

/// The saga's data: which saga it is, and how many steps ran.
#[derive(Serialize, Deserialize)]
pub struct Booking {
    pub n: u64,
    pub done: u8,
}

/// A step that does nothing but count, or rejects when `reject` is set.
pub struct Trivial {
    pub reject: bool,
}

#[saga_engine::async_trait]
impl Step<Booking> for Trivial {
    async fn run(&self, _: &StepContext, b: &mut Booking) -> Result<(), StepError> {
        if self.reject {
            return Err(StepError::rejected("injected failure"));
        }
        b.done += 1;
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &Booking) -> Result<(), StepError> {
        Ok(())
    }
}
