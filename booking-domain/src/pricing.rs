//! Pricing: the one function that turns a per-passenger fare into what a
//! customer pays, and the fixed exchange rates loyalty uses to earn miles.
//!
//! Every part of the system (search results, the booking saga, the payment
//! amount, the web page) prices through [`price`], so a quote and a charge can
//! never disagree. All arithmetic is on integer minor units and is checked for
//! overflow; nothing here is a float.

use crate::types::{Currency, Money};
use serde::{Deserialize, Serialize};

/// Fewest passengers on one booking.
pub const MIN_PASSENGERS: u32 = 1;
/// Most passengers on one booking.
pub const MAX_PASSENGERS: u32 = 9;
/// Taxes as parts per thousand of the base fare: 75 ‰ = 7.5 %.
pub const TAX_PER_MILLE: i64 = 75;
/// The fixed fee per passenger, in minor units of the fare's currency (5.60).
pub const FEE_PER_PASSENGER_MINOR: i64 = 560;

/// What a booking costs, split the way a receipt shows it. Every amount is in
/// the fare's currency and `total == base + taxes + fees`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceBreakdown {
    /// Fare per passenger times passengers.
    pub base: Money,
    /// 7.5 % of `base`, rounded half up to the minor unit.
    pub taxes: Money,
    /// [`FEE_PER_PASSENGER_MINOR`] per passenger.
    pub fees: Money,
    /// `base + taxes + fees`: the amount to charge.
    pub total: Money,
}

/// Why a price could not be computed. Every variant is bad input: retrying
/// with the same arguments gives the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum PricingError {
    /// Passengers outside `MIN_PASSENGERS..=MAX_PASSENGERS`.
    #[error("passengers must be between 1 and 9, got {passengers}")]
    InvalidPassengers {
        /// The number asked for.
        passengers: u32,
    },
    /// A fare below zero.
    #[error("fare must not be negative, got {minor} minor units")]
    NegativeFare {
        /// The fare asked for, in minor units.
        minor: i64,
    },
    /// The amounts do not fit in an `i64` of minor units.
    #[error("amount too large to price")]
    Overflow,
    /// Miles worth more than the base fare.
    #[error("at most {most_miles} miles can be redeemed (the base fare), asked for {miles}")]
    RedemptionOverBase {
        /// The miles asked for.
        miles: u64,
        /// The most that fit in the base fare.
        most_miles: u64,
    },
    /// Two legs priced in different currencies (a round trip is one charge).
    #[error(
        "the legs are priced in {first} and {second}; a round trip is charged in one currency"
    )]
    MixedCurrencies {
        /// The outbound leg's currency.
        first: String,
        /// The return leg's currency.
        second: String,
    },
    /// A currency with no fixed rate in [`USD_RATES`].
    #[error("no exchange rate for currency {currency}")]
    UnknownCurrency {
        /// The currency code that was asked for.
        currency: String,
    },
}

/// Prices `passengers` seats at `fare_per_passenger` each: base, 7.5 % taxes
/// (rounded half up), 5.60 per passenger in fees, and their total.
///
/// ```
/// use booking_domain::{pricing::price, Currency, Money};
/// let p = price(&Money::new(10_000, Currency::usd()), 2).unwrap();
/// assert_eq!(p.base.minor, 20_000);
/// assert_eq!(p.taxes.minor, 1_500);
/// assert_eq!(p.fees.minor, 1_120);
/// assert_eq!(p.total.minor, 22_620);
/// ```
pub fn price(fare_per_passenger: &Money, passengers: u32) -> Result<PriceBreakdown, PricingError> {
    if !(MIN_PASSENGERS..=MAX_PASSENGERS).contains(&passengers) {
        return Err(PricingError::InvalidPassengers { passengers });
    }
    if fare_per_passenger.minor < 0 {
        return Err(PricingError::NegativeFare {
            minor: fare_per_passenger.minor,
        });
    }
    let n = i64::from(passengers);
    let base = fare_per_passenger
        .minor
        .checked_mul(n)
        .ok_or(PricingError::Overflow)?;
    // Half up on a non-negative amount: add half the divisor before dividing.
    let taxes = base
        .checked_mul(TAX_PER_MILLE)
        .and_then(|t| t.checked_add(500))
        .map(|t| t / 1000)
        .ok_or(PricingError::Overflow)?;
    let fees = FEE_PER_PASSENGER_MINOR
        .checked_mul(n)
        .ok_or(PricingError::Overflow)?;
    let total = base
        .checked_add(taxes)
        .and_then(|t| t.checked_add(fees))
        .ok_or(PricingError::Overflow)?;
    let currency = &fare_per_passenger.currency;
    Ok(PriceBreakdown {
        base: Money::new(base, currency.clone()),
        taxes: Money::new(taxes, currency.clone()),
        fees: Money::new(fees, currency.clone()),
        total: Money::new(total, currency.clone()),
    })
}

/// A fixed exchange rate to US dollars: one unit of `code` is worth
/// `numerator / denominator` US dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UsdRate {
    /// ISO 4217 code, upper case.
    pub code: &'static str,
    /// Numerator of the rate.
    pub numerator: i64,
    /// Denominator of the rate (never zero).
    pub denominator: i64,
}

/// The fixed rates [`to_usd_minor`] uses. They are deliberately constant so
/// that the miles a booking earns do not depend on when it is replayed:
/// USD 1, INR 1/83, EUR 1.08, GBP 1.27.
pub const USD_RATES: &[UsdRate] = &[
    UsdRate {
        code: "USD",
        numerator: 1,
        denominator: 1,
    },
    UsdRate {
        code: "INR",
        numerator: 1,
        denominator: 83,
    },
    UsdRate {
        code: "EUR",
        numerator: 108,
        denominator: 100,
    },
    UsdRate {
        code: "GBP",
        numerator: 127,
        denominator: 100,
    },
];

/// The rate for `currency` (matched without regard to case), if it has one.
pub fn usd_rate(currency: &Currency) -> Option<UsdRate> {
    USD_RATES
        .iter()
        .copied()
        .find(|r| r.code.eq_ignore_ascii_case(currency.0.trim()))
}

/// Converts `amount` to US cents at the fixed [`USD_RATES`], rounding half
/// away from zero. A currency without a rate is an error, never a guess.
///
/// ```
/// use booking_domain::{pricing::to_usd_minor, Currency, Money};
/// assert_eq!(to_usd_minor(&Money::new(8_300, Currency::inr())).unwrap(), 100);
/// ```
pub fn to_usd_minor(amount: &Money) -> Result<i64, PricingError> {
    let rate = usd_rate(&amount.currency).ok_or_else(|| PricingError::UnknownCurrency {
        currency: amount.currency.0.clone(),
    })?;
    let num = i128::from(amount.minor) * i128::from(rate.numerator);
    let den = i128::from(rate.denominator);
    let half = den / 2;
    let rounded = if num >= 0 {
        (num + half) / den
    } else {
        (num - half) / den
    };
    i64::try_from(rounded).map_err(|_| PricingError::Overflow)
}

/// Miles per US dollar when paying with miles: 100 miles = 1 USD, so one
/// mile is worth one US cent.
pub const MILES_PER_USD: u64 = 100;

/// What is charged to the card when `miles` pay for part of `price`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MilesPayment {
    /// Miles redeemed.
    pub miles: u64,
    /// Their value in the fare's currency (rounded down to the minor unit).
    pub discount: Money,
    /// `price.total - discount`: what the card pays.
    pub charge: Money,
}

/// Prices a redemption of `miles` against `price`: their value at
/// [`MILES_PER_USD`], converted at the fixed [`USD_RATES`] and rounded
/// down, never more than the base fare (taxes and fees are paid by card).
pub fn pay_with_miles(price: &PriceBreakdown, miles: u64) -> Result<MilesPayment, PricingError> {
    let rate = usd_rate(&price.base.currency).ok_or_else(|| PricingError::UnknownCurrency {
        currency: price.base.currency.0.clone(),
    })?;
    let (num, den) = (i128::from(rate.numerator), i128::from(rate.denominator));
    // One mile is one US cent; a US cent is den/num minor units here.
    let usd_cents = i128::from(miles) * 100 / i128::from(MILES_PER_USD);
    let value = usd_cents * den / num;
    let base = i128::from(price.base.minor);
    if value > base {
        let most = base * num / den * i128::from(MILES_PER_USD) / 100;
        return Err(PricingError::RedemptionOverBase {
            miles,
            most_miles: u64::try_from(most).unwrap_or(0),
        });
    }
    let discount = i64::try_from(value).map_err(|_| PricingError::Overflow)?;
    let currency = price.total.currency.clone();
    Ok(MilesPayment {
        miles,
        discount: Money::new(discount, currency.clone()),
        charge: Money::new(price.total.minor - discount, currency),
    })
}

/// A promo code's rule: a percentage of the base fare, or a fixed amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PromoRule {
    /// `percent` % off the base fare (1 to 100), rounded down.
    Percent {
        /// Percent off.
        percent: u32,
    },
    /// A fixed amount off the base fare, in the fare's currency.
    Fixed {
        /// The amount off.
        amount: Money,
    },
}

/// What a promo code takes off `price`: never more than the base fare
/// (taxes and fees are always paid). A fixed amount in another currency
/// than the fare's is an error, never converted.
pub fn promo_discount(price: &PriceBreakdown, rule: &PromoRule) -> Result<Money, PricingError> {
    let base = price.base.minor.max(0);
    let off = match rule {
        PromoRule::Percent { percent } => {
            (i128::from(base) * i128::from((*percent).min(100)) / 100) as i64
        }
        PromoRule::Fixed { amount } => {
            if !amount
                .currency
                .0
                .eq_ignore_ascii_case(&price.base.currency.0)
            {
                return Err(PricingError::UnknownCurrency {
                    currency: amount.currency.0.clone(),
                });
            }
            amount.minor.clamp(0, base)
        }
    };
    Ok(Money::new(off, price.base.currency.clone()))
}

/// `price` with `discount` taken off the base fare and the total (taxes
/// and fees unchanged, as they are computed on the published fare), so
/// that miles are then redeemed against what is left.
pub fn after_discount(price: &PriceBreakdown, discount: &Money) -> PriceBreakdown {
    let mut p = price.clone();
    p.base.minor -= discount.minor;
    p.total.minor -= discount.minor;
    p
}

/// The price of two legs booked together (a round trip): each part the
/// sum of the legs' parts, so `total == base + taxes + fees` still holds.
/// Refused when the legs are priced in different currencies.
///
/// ```
/// use booking_domain::{pricing::{combine, price}, Currency, Money};
/// let out = price(&Money::new(10_000, Currency::usd()), 2).unwrap();
/// let back = price(&Money::new(8_000, Currency::usd()), 2).unwrap();
/// let both = combine(&out, &back).unwrap();
/// assert_eq!(both.total.minor, out.total.minor + back.total.minor);
/// ```
pub fn combine(a: &PriceBreakdown, b: &PriceBreakdown) -> Result<PriceBreakdown, PricingError> {
    if a.total.currency != b.total.currency {
        return Err(PricingError::MixedCurrencies {
            first: a.total.currency.0.clone(),
            second: b.total.currency.0.clone(),
        });
    }
    let add = |x: &Money, y: &Money| {
        x.minor
            .checked_add(y.minor)
            .map(|m| Money::new(m, x.currency.clone()))
            .ok_or(PricingError::Overflow)
    };
    Ok(PriceBreakdown {
        base: add(&a.base, &b.base)?,
        taxes: add(&a.taxes, &b.taxes)?,
        fees: add(&a.fees, &b.fees)?,
        total: add(&a.total, &b.total)?,
    })
}

/// Hours after booking during which a cancellation is refunded in full.
pub const FREE_CANCELLATION_HOURS: i64 = 24;

/// The fare rule's cancellation fee, in percent of the amount charged, once
/// the free window has passed: Economy 20 %, Business 10 %, First 5 %.
pub fn cancellation_fee_percent(cabin: crate::types::Cabin) -> i64 {
    match cabin {
        crate::types::Cabin::Economy => 20,
        crate::types::Cabin::Business => 10,
        crate::types::Cabin::First => 5,
    }
}

/// What cancelling gives back: `charged` in full within
/// [`FREE_CANCELLATION_HOURS`] of `booked_at`, then `charged` minus
/// [`cancellation_fee_percent`] of it (the fee rounded down, so the refund is
/// positive for any positive charge). Returns `(refund, fee)`, both in the
/// charge's currency.
pub fn cancellation_refund(
    charged: &Money,
    cabin: crate::types::Cabin,
    booked_at: chrono::DateTime<chrono::Utc>,
    requested_at: chrono::DateTime<chrono::Utc>,
) -> (Money, Money) {
    let free = requested_at - booked_at < chrono::Duration::hours(FREE_CANCELLATION_HOURS);
    let fee = if free || charged.minor <= 0 {
        0
    } else {
        // i128: a percent of any i64 cannot overflow.
        (i128::from(charged.minor) * i128::from(cancellation_fee_percent(cabin)) / 100) as i64
    };
    (
        Money::new(charged.minor - fee, charged.currency.clone()),
        Money::new(fee, charged.currency.clone()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::usd())
    }

    #[test]
    fn prices_a_known_fare() {
        let p = price(&usd(12_345), 3).unwrap();
        assert_eq!(p.base, usd(37_035));
        // 37_035 * 0.075 = 2777.625 -> 2778
        assert_eq!(p.taxes, usd(2_778));
        assert_eq!(p.fees, usd(1_680));
        assert_eq!(p.total, usd(37_035 + 2_778 + 1_680));
    }

    #[test]
    fn taxes_round_half_up() {
        // base 20 -> 1.5 -> 2; base 6 -> 0.45 -> 0; base 7 -> 0.525 -> 1
        assert_eq!(price(&usd(20), 1).unwrap().taxes.minor, 2);
        assert_eq!(price(&usd(6), 1).unwrap().taxes.minor, 0);
        assert_eq!(price(&usd(7), 1).unwrap().taxes.minor, 1);
    }

    #[test]
    fn keeps_the_fare_currency() {
        let p = price(&Money::new(500_000, Currency::inr()), 1).unwrap();
        assert_eq!(p.total.currency, Currency::inr());
        assert_eq!(p.fees.minor, 560);
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(
            price(&usd(100), 0),
            Err(PricingError::InvalidPassengers { passengers: 0 })
        );
        assert_eq!(
            price(&usd(100), 10),
            Err(PricingError::InvalidPassengers { passengers: 10 })
        );
        assert_eq!(
            price(&usd(-1), 1),
            Err(PricingError::NegativeFare { minor: -1 })
        );
        assert_eq!(price(&usd(i64::MAX / 2), 9), Err(PricingError::Overflow));
        assert_eq!(price(&usd(i64::MAX / 20), 1), Err(PricingError::Overflow));
    }

    #[test]
    fn converts_at_the_fixed_rates() {
        assert_eq!(to_usd_minor(&usd(1_234)).unwrap(), 1_234);
        assert_eq!(
            to_usd_minor(&Money::new(8_300, Currency::inr())).unwrap(),
            100
        );
        // 41.5 paise-cents rounds half away from zero.
        assert_eq!(
            to_usd_minor(&Money::new(83 * 41 + 42, Currency::inr())).unwrap(),
            42
        );
        assert_eq!(
            to_usd_minor(&Money::new(10_000, Currency("EUR".into()))).unwrap(),
            10_800
        );
        assert_eq!(
            to_usd_minor(&Money::new(10_000, Currency("gbp".into()))).unwrap(),
            12_700
        );
        assert_eq!(to_usd_minor(&usd(-250)).unwrap(), -250);
        assert_eq!(
            to_usd_minor(&Money::new(1, Currency("XYZ".into()))),
            Err(PricingError::UnknownCurrency {
                currency: "XYZ".into()
            })
        );
        assert_eq!(
            to_usd_minor(&Money::new(i64::MAX, Currency("GBP".into()))),
            Err(PricingError::Overflow)
        );
    }

    #[test]
    fn promo_discounts_are_bounded_by_the_base_fare() {
        let p = price(&usd(10_000), 2).unwrap();
        let pct = promo_discount(&p, &PromoRule::Percent { percent: 15 }).unwrap();
        assert_eq!(pct, usd(3_000));
        let all = promo_discount(&p, &PromoRule::Percent { percent: 250 }).unwrap();
        assert_eq!(all, usd(20_000));
        let fixed = promo_discount(
            &p,
            &PromoRule::Fixed {
                amount: usd(50_000),
            },
        )
        .unwrap();
        assert_eq!(fixed, usd(20_000), "never more than the base");
        assert!(promo_discount(
            &p,
            &PromoRule::Fixed {
                amount: Money::new(1, Currency::inr())
            }
        )
        .is_err());
        let after = after_discount(&p, &pct);
        assert_eq!(after.total.minor, p.total.minor - 3_000);
        assert_eq!(after.taxes, p.taxes);
        // Miles after a promo: at most what is left of the base.
        assert!(pay_with_miles(&after, 1_700_000).is_err());
        assert_eq!(
            pay_with_miles(&after, 1_000).unwrap().charge.minor,
            after.total.minor - 1_000
        );
    }

    proptest! {
        #[test]
        fn total_is_the_sum_of_its_parts(fare in 0i64..=10_000_000_000, n in 1u32..=9) {
            let p = price(&usd(fare), n).unwrap();
            prop_assert_eq!(p.total.minor, p.base.minor + p.taxes.minor + p.fees.minor);
            prop_assert_eq!(p.base.minor, fare * i64::from(n));
            prop_assert_eq!(p.fees.minor, 560 * i64::from(n));
            // taxes are within half a minor unit of the exact 7.5 %
            let exact_times_1000 = p.base.minor * 75;
            prop_assert!((p.taxes.minor * 1000 - exact_times_1000).abs() <= 500);
        }

        #[test]
        fn more_passengers_cost_more(fare in 0i64..=10_000_000_000, n in 1u32..=8) {
            let fewer = price(&usd(fare), n).unwrap();
            let more = price(&usd(fare), n + 1).unwrap();
            prop_assert!(more.total.minor > fewer.total.minor);
            prop_assert!(more.taxes.minor >= fewer.taxes.minor);
        }

        #[test]
        fn a_higher_fare_never_costs_less(fare in 0i64..=10_000_000_000, extra in 0i64..=1_000_000, n in 1u32..=9) {
            let low = price(&usd(fare), n).unwrap();
            let high = price(&usd(fare + extra), n).unwrap();
            prop_assert!(high.total.minor >= low.total.minor);
        }

        #[test]
        fn conversion_never_panics(minor in any::<i64>(), code in "[A-Z]{3}") {
            let _ = to_usd_minor(&Money::new(minor, Currency(code)));
        }
    }
}
