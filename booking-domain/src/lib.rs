//! Flight booking built on the saga engine.
//!
//! The catalog (airports, a weekly schedule, search, CSV import and export),
//! the participants of a booking (inventory, payments, loyalty), the one
//! pricing function every part uses, and the booking saga that ties them.
//! Each participant is a trait with a local implementation on its own sled
//! trees, so the same saga can also run across HTTP services.

pub mod booking_saga;
pub mod cancellation;
pub mod catalog;
mod envelope;
pub mod faults;
pub mod import;
pub mod inventory;
pub mod ledger;
pub mod live_catalog;
pub mod loyalty;
pub mod payments;
pub mod personal;
pub mod pricing;
pub mod promo;
pub mod search;
pub mod types;

pub use types::{BookingRef, Cabin, Currency, FlightId, Money};
