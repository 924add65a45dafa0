//! Small typed values shared across the domain: cabins, money in minor
//! units with an explicit currency, and typed ids.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A cabin class. Ordered from cheapest to most expensive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cabin {
    /// Economy class.
    Economy,
    /// Business class.
    Business,
    /// First class.
    First,
}

impl Cabin {
    /// All cabins, cheapest first.
    pub const ALL: [Cabin; 3] = [Cabin::Economy, Cabin::Business, Cabin::First];

    /// The lowercase name used in URLs, keys and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Cabin::Economy => "economy",
            Cabin::Business => "business",
            Cabin::First => "first",
        }
    }
}

impl fmt::Display for Cabin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a cabin name that is not `economy`, `business` or `first`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cabin {0:?}: expected economy, business or first")]
pub struct UnknownCabin(pub String);

impl FromStr for Cabin {
    type Err = UnknownCabin;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "economy" | "eco" | "y" => Ok(Cabin::Economy),
            "business" | "j" | "c" => Ok(Cabin::Business),
            "first" | "f" => Ok(Cabin::First),
            _ => Err(UnknownCabin(s.to_string())),
        }
    }
}

/// An ISO 4217 currency code, e.g. `USD` or `INR`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Currency(pub String);

impl Currency {
    /// US dollars.
    pub fn usd() -> Self {
        Currency("USD".into())
    }
    /// Indian rupees (the reference data's currency).
    pub fn inr() -> Self {
        Currency("INR".into())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount of money in integer minor units (cents, paise) with its currency.
/// Never a float.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Amount in minor units (1/100 of the currency unit).
    pub minor: i64,
    /// The currency of `minor`.
    pub currency: Currency,
}

impl Money {
    /// An amount of `minor` units of `currency`.
    pub fn new(minor: i64, currency: Currency) -> Self {
        Money { minor, currency }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        write!(f, "{sign}{}.{:02} {}", abs / 100, abs % 100, self.currency)
    }
}

/// Identifies one scheduled flight in the catalog (e.g. `AA100-3` for flight
/// AA100 on weekday 3). The catalog decides the format; others treat it as
/// opaque.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlightId(pub String);

impl fmt::Display for FlightId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A six-character booking reference (record locator), e.g. `K7QX2M`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BookingRef(pub String);

impl fmt::Display for BookingRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cabin_round_trips_through_its_name() {
        for c in Cabin::ALL {
            assert_eq!(c.as_str().parse::<Cabin>().unwrap(), c);
        }
        assert!("premium".parse::<Cabin>().is_err());
    }

    #[test]
    fn money_displays_minor_units() {
        assert_eq!(Money::new(12345, Currency::usd()).to_string(), "123.45 USD");
        assert_eq!(Money::new(-5, Currency::inr()).to_string(), "-0.05 INR");
    }
}
