//! The booking saga's search attributes: what an operator finds a booking
//! by, through the saga store's attribute index.
//!
//! - `reference`: the booking reference (record locator), set when the
//!   booking is confirmed, so indexed once the saga has ended;
//! - `email`: the SHA-256 (hex) of the contact address in lower case,
//!   never the address itself: the index is on disk and the address is
//!   personal data. [`email_attribute`] gives the same hash to a caller
//!   looking a booking up by address;
//! - `departure`: the flight's date, `YYYY-MM-DD`.

use crate::booking_saga::BookingData;
use saga_engine::SagaDefinitionBuilder;
use sha2::{Digest, Sha256};

/// The `reference` attribute's name.
pub const REFERENCE: &str = "reference";
/// The `email` attribute's name.
pub const EMAIL: &str = "email";
/// The `departure` attribute's name.
pub const DEPARTURE: &str = "departure";

/// The value of the `email` attribute for `address`: SHA-256 of its
/// trimmed, lower-case form, in hex.
///
/// ```
/// let a = booking_domain::search::email_attribute(" Ann@Example.com");
/// assert_eq!(a, booking_domain::search::email_attribute("ann@example.com"));
/// assert_eq!(a.len(), 64);
/// assert!(!a.contains("ann"));
/// ```
pub fn email_attribute(address: &str) -> String {
    Sha256::digest(address.trim().to_lowercase().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Declares the booking's search attributes on its definition.
pub fn declare(b: SagaDefinitionBuilder<BookingData>) -> SagaDefinitionBuilder<BookingData> {
    b.search_attribute_typed(REFERENCE, |d: &BookingData| {
        d.booking_ref.as_ref().map(|r| r.to_string())
    })
    .search_attribute_typed(EMAIL, |d: &BookingData| {
        (!d.email.is_empty()).then(|| email_attribute(&d.email))
    })
    .search_attribute_typed(DEPARTURE, |d: &BookingData| Some(d.date.to_string()))
}
