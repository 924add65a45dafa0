//! Failure injection for the booking saga, per step and switchable at run
//! time: reject, fail transiently N times, delay, or apply the effect and
//! lose the reply (the in-doubt case).
//!
//! Faults come from two places: global switches ([`Faults`], set by an
//! operator) and per-booking switches carried in the booking's own data; a
//! per-booking switch wins. Injection is keyed on the call's attempt number,
//! so a saga replays the same way after a crash.

use saga_engine::{StepContext, StepError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::RwLock;
use std::time::Duration;

/// The steps of the booking saga, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BookingStep {
    /// Hold seats (compensation: release them); the outbound leg.
    ReserveSeat,
    /// Hold the return leg's seats (a round trip; beside `reserve_seat` in
    /// one parallel group), compensation: release them.
    ReserveReturnSeat,
    /// Authorize the card (compensation: void or refund).
    AuthorizePayment,
    /// Award loyalty miles (compensation: reverse them).
    AwardMiles,
    /// Capture, confirm the seats, issue the reference.
    ConfirmBooking,
}

impl BookingStep {
    /// All steps in saga order.
    pub const ALL: [BookingStep; 5] = [
        BookingStep::ReserveSeat,
        BookingStep::ReserveReturnSeat,
        BookingStep::AuthorizePayment,
        BookingStep::AwardMiles,
        BookingStep::ConfirmBooking,
    ];

    /// The step's name in the saga definition and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStep::ReserveSeat => "reserve_seat",
            BookingStep::ReserveReturnSeat => "reserve_return_seat",
            BookingStep::AuthorizePayment => "authorize_payment",
            BookingStep::AwardMiles => "award_miles",
            BookingStep::ConfirmBooking => "confirm_booking",
        }
    }
}

impl fmt::Display for BookingStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BookingStep {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BookingStep::ALL
            .into_iter()
            .find(|step| step.as_str() == s)
            .ok_or_else(|| format!("unknown step {s:?}: expected one of reserve_seat, reserve_return_seat, authorize_payment, award_miles, confirm_booking"))
    }
}

/// Longest delay a fault may inject.
pub const MAX_DELAY_MS: u64 = 60_000;
/// Most transient failures a fault may inject.
pub const MAX_TRANSIENT: u32 = 100;

/// What to inject into one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Fault {
    /// Nothing: the step runs normally.
    #[default]
    None,
    /// The participant says no: the saga compensates.
    Reject,
    /// The first `times` attempts fail retryably, then the step runs.
    Transient {
        /// Failing attempts before success.
        times: u32,
    },
    /// Wait `ms` before calling the participant.
    Delay {
        /// Milliseconds.
        ms: u64,
    },
    /// Call the participant (the effect happens), then report a lost reply
    /// on the first attempt: the step is in doubt and is retried with the
    /// same key.
    LoseReply,
}

impl Fault {
    /// Checks the bounds; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Fault::Transient { times } if times > MAX_TRANSIENT => {
                Err(format!("transient times must be at most {MAX_TRANSIENT}"))
            }
            Fault::Delay { ms } if ms > MAX_DELAY_MS => {
                Err(format!("delay must be at most {MAX_DELAY_MS} ms"))
            }
            _ => Ok(()),
        }
    }

    /// Runs `call` (the participant call) under this fault.
    pub async fn apply<F, T>(
        &self,
        step: BookingStep,
        ctx: &StepContext,
        call: F,
    ) -> Result<T, StepError>
    where
        F: Future<Output = Result<T, StepError>>,
    {
        match *self {
            Fault::None => call.await,
            Fault::Reject => Err(StepError::rejected(format!("injected rejection at {step}"))),
            Fault::Transient { times } => {
                if ctx.attempt <= times {
                    Err(StepError::retryable(format!(
                        "injected transient failure {} of {times} at {step}",
                        ctx.attempt
                    )))
                } else {
                    call.await
                }
            }
            Fault::Delay { ms } => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                call.await
            }
            Fault::LoseReply => {
                let result = call.await;
                if ctx.attempt == 1 && result.is_ok() {
                    Err(StepError::retryable(format!(
                        "injected lost reply at {step} (the effect was applied)"
                    )))
                } else {
                    result
                }
            }
        }
    }
}

/// The global fault switches, shared by every booking.
#[derive(Debug, Default)]
pub struct Faults {
    switches: RwLock<BTreeMap<BookingStep, Fault>>,
}

impl Faults {
    /// No faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every step's switch (steps without one are `None`).
    pub fn get_all(&self) -> BTreeMap<BookingStep, Fault> {
        let map = self.switches.read().unwrap_or_else(|e| e.into_inner());
        BookingStep::ALL
            .into_iter()
            .map(|s| (s, map.get(&s).copied().unwrap_or_default()))
            .collect()
    }

    /// One step's switch.
    pub fn get(&self, step: BookingStep) -> Fault {
        self.switches
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&step)
            .copied()
            .unwrap_or_default()
    }

    /// Sets one step's switch, after checking it.
    pub fn set(&self, step: BookingStep, fault: Fault) -> Result<(), String> {
        fault.validate()?;
        self.switches
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(step, fault);
        Ok(())
    }

    /// Replaces every switch at once: all are checked before any is applied.
    pub fn set_all(&self, faults: &BTreeMap<BookingStep, Fault>) -> Result<(), String> {
        for (step, f) in faults {
            f.validate().map_err(|e| format!("{step}: {e}"))?;
        }
        *self.switches.write().unwrap_or_else(|e| e.into_inner()) = faults.clone();
        Ok(())
    }

    /// Turns every switch off.
    pub fn clear(&self) {
        self.switches
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(attempt: u32) -> StepContext {
        StepContext {
            saga_id: saga_engine::SagaId::parse("s1").unwrap(),
            step: "reserve_seat".into(),
            attempt,
            idempotency_key: "s1:reserve_seat".into(),
            fencing_token: 0,
        }
    }

    #[tokio::test]
    async fn each_fault_does_what_it_says() {
        let step = BookingStep::ReserveSeat;
        let ok = || async { Ok::<_, StepError>(7) };
        assert_eq!(Fault::None.apply(step, &ctx(1), ok()).await, Ok(7));
        assert!(matches!(
            Fault::Reject.apply(step, &ctx(1), ok()).await,
            Err(StepError::Rejected(_))
        ));
        let t = Fault::Transient { times: 2 };
        assert!(matches!(
            t.apply(step, &ctx(1), ok()).await,
            Err(StepError::Retryable(_))
        ));
        assert!(matches!(
            t.apply(step, &ctx(2), ok()).await,
            Err(StepError::Retryable(_))
        ));
        assert_eq!(t.apply(step, &ctx(3), ok()).await, Ok(7));
        let called = std::sync::atomic::AtomicU32::new(0);
        let counted = || async {
            called.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, StepError>(1)
        };
        assert!(matches!(
            Fault::LoseReply.apply(step, &ctx(1), counted()).await,
            Err(StepError::Retryable(_))
        ));
        assert_eq!(
            called.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the effect ran"
        );
        assert_eq!(
            Fault::LoseReply.apply(step, &ctx(2), counted()).await,
            Ok(1)
        );
    }

    #[test]
    fn switches_are_checked_and_serialize_as_documented() {
        let f = Faults::new();
        assert!(f
            .set(
                BookingStep::AwardMiles,
                Fault::Delay {
                    ms: MAX_DELAY_MS + 1
                }
            )
            .is_err());
        assert_eq!(f.get(BookingStep::AwardMiles), Fault::None);
        f.set(BookingStep::AwardMiles, Fault::Transient { times: 2 })
            .unwrap();
        assert_eq!(
            f.get_all()[&BookingStep::AwardMiles],
            Fault::Transient { times: 2 }
        );
        let json = serde_json::to_value(f.get_all()).unwrap();
        assert_eq!(
            json["award_miles"],
            serde_json::json!({"mode": "transient", "times": 2})
        );
        assert_eq!(json["reserve_seat"], serde_json::json!({"mode": "none"}));
        f.clear();
        assert_eq!(f.get(BookingStep::AwardMiles), Fault::None);
        assert_eq!(
            "award_miles".parse::<BookingStep>(),
            Ok(BookingStep::AwardMiles)
        );
        assert!("x".parse::<BookingStep>().is_err());
    }
}
