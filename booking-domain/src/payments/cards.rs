//! The card rules of the simulated processor: brands told from the
//! number, the Luhn check, expiry and CVC checks, and the test cards that
//! decline with a known reason. Pure functions of the card and the date.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A card network, told from the number's leading digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardBrand {
    /// Starts with 4.
    Visa,
    /// Starts with 51–55 or 2221–2720.
    Mastercard,
    /// Starts with 34 or 37.
    Amex,
    /// Anything else.
    Other,
}

impl CardBrand {
    /// The brand of a number given as digits only.
    pub fn detect(digits: &str) -> CardBrand {
        let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok());
        if digits.starts_with('4') {
            CardBrand::Visa
        } else if matches!(prefix(2), Some(51..=55)) || matches!(prefix(4), Some(2221..=2720)) {
            CardBrand::Mastercard
        } else if matches!(prefix(2), Some(34 | 37)) {
            CardBrand::Amex
        } else {
            CardBrand::Other
        }
    }

    /// A display name.
    pub fn as_str(self) -> &'static str {
        match self {
            CardBrand::Visa => "Visa",
            CardBrand::Mastercard => "Mastercard",
            CardBrand::Amex => "American Express",
            CardBrand::Other => "Other",
        }
    }
}

impl fmt::Display for CardBrand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the (simulated) issuer said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    /// Not enough money on the account.
    InsufficientFunds,
    /// The issuer refused the card (blocked, generic decline).
    CardDeclined,
    /// The issuer says the card has expired, whatever date was typed.
    ExpiredCard,
}

impl DeclineReason {
    /// A sentence for the customer.
    pub fn message(self) -> &'static str {
        match self {
            DeclineReason::InsufficientFunds => "insufficient funds",
            DeclineReason::CardDeclined => "card declined by the issuer",
            DeclineReason::ExpiredCard => "card expired",
        }
    }
}

impl fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A card number with a known outcome, for the demo page and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TestCard {
    /// The number as printed, in groups.
    pub number: &'static str,
    /// Its brand.
    pub brand: CardBrand,
    /// What happens when it is used.
    pub outcome: &'static str,
    /// `None` when it approves; the reason when it declines.
    pub decline: Option<DeclineReason>,
    /// Set when its authorization needs the customer's confirmation
    /// (strong customer authentication) before it can be captured.
    pub needs_confirmation: bool,
}

/// Test cards. Any other valid card approves; these decline with the reason
/// given (any future expiry date and any 3–4 digit CVC will do).
pub const TEST_CARDS: &[TestCard] = &[
    TestCard {
        number: "4242 4242 4242 4242",
        brand: CardBrand::Visa,
        outcome: "approved",
        decline: None,
        needs_confirmation: false,
    },
    TestCard {
        number: "5555 5555 5555 4444",
        brand: CardBrand::Mastercard,
        outcome: "approved",
        decline: None,
        needs_confirmation: false,
    },
    TestCard {
        number: "3782 822463 10005",
        brand: CardBrand::Amex,
        outcome: "approved",
        decline: None,
        needs_confirmation: false,
    },
    TestCard {
        number: "4000 0000 0000 9995",
        brand: CardBrand::Visa,
        outcome: "declined: insufficient funds",
        decline: Some(DeclineReason::InsufficientFunds),
        needs_confirmation: false,
    },
    TestCard {
        number: "4000 0000 0000 0002",
        brand: CardBrand::Visa,
        outcome: "declined: card blocked by the issuer",
        decline: Some(DeclineReason::CardDeclined),
        needs_confirmation: false,
    },
    TestCard {
        number: "4000 0000 0000 0069",
        brand: CardBrand::Visa,
        outcome: "declined: expired card (even with a future expiry date)",
        decline: Some(DeclineReason::ExpiredCard),
        needs_confirmation: false,
    },
    TestCard {
        number: "4000 0000 0000 3220",
        brand: CardBrand::Visa,
        outcome: "requires confirmation (strong customer authentication)",
        decline: None,
        needs_confirmation: true,
    },
];

/// Card data as the customer typed it. Sent to the participant, checked, and
/// reduced to brand and last four digits; never stored. `Debug` masks the
/// number and the CVC so they cannot leak into logs.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardDetails {
    /// The card number; spaces and dashes are allowed.
    pub number: String,
    /// Expiry month, 1–12.
    pub exp_month: u32,
    /// Expiry year: four digits, or two (read as 20YY).
    pub exp_year: u32,
    /// The 3–4 digit security code.
    pub cvc: String,
    /// Name on the card.
    pub holder_name: String,
}

impl fmt::Debug for CardDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits: String = self.number.chars().filter(char::is_ascii_digit).collect();
        let last4 = digits.get(digits.len().saturating_sub(4)..).unwrap_or("");
        f.debug_struct("CardDetails")
            .field("number", &format_args!("**** {last4}"))
            .field("exp_month", &self.exp_month)
            .field("exp_year", &self.exp_year)
            .field("cvc", &"***")
            .field("holder_name", &self.holder_name)
            .finish()
    }
}

/// What was wrong with the card data. Always bad input, never a decline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardProblem {
    /// Characters other than digits, spaces and dashes.
    #[error("card number may contain only digits, spaces and dashes")]
    NumberNotDigits,
    /// Not 12–19 digits.
    #[error("card number must have 12 to 19 digits, has {digits}")]
    NumberLength {
        /// Digits found.
        digits: usize,
    },
    /// The Luhn check digit is wrong (a typo).
    #[error("card number is not valid (check digit)")]
    LuhnCheckFailed,
    /// Month not 1–12.
    #[error("expiry month must be 1 to 12, got {month}")]
    ExpiryMonth {
        /// The month given.
        month: u32,
    },
    /// The expiry year is not a plausible year.
    #[error("expiry year {year} is not valid")]
    ExpiryYear {
        /// The year given.
        year: u32,
    },
    /// The card expired before the current month.
    #[error("card expired at the end of {month:02}/{year}")]
    Expired {
        /// Expiry month.
        month: u32,
        /// Expiry year (four digits).
        year: u32,
    },
    /// CVC not 3–4 digits.
    #[error("security code must be 3 or 4 digits")]
    Cvc,
    /// Empty or overlong holder name.
    #[error("name on card must be 1 to 100 characters")]
    HolderName,
}

/// The part of a card that may be kept: checked, reduced to brand and last
/// four digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedCard {
    /// Card network.
    pub brand: CardBrand,
    /// Last four digits.
    pub last4: String,
    /// Name on card, trimmed.
    pub holder_name: String,
    /// Set when the number is a declining [`TEST_CARDS`] entry.
    pub decline: Option<DeclineReason>,
    /// Set when its authorization needs the customer's confirmation.
    #[serde(default)]
    pub needs_confirmation: bool,
}

/// True when `digits` (ASCII digits only) passes the Luhn check.
// `u32::is_multiple_of` needs Rust 1.87; the workspace supports 1.75.
#[allow(unknown_lints, clippy::manual_is_multiple_of)]
pub fn luhn_valid(digits: &str) -> bool {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let dd = d * 2;
                if dd > 9 {
                    dd - 9
                } else {
                    dd
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

fn digits_only(number: &str) -> Result<String, CardProblem> {
    let mut out = String::with_capacity(number.len());
    for c in number.trim().chars() {
        match c {
            '0'..='9' => out.push(c),
            ' ' | '-' => {}
            _ => return Err(CardProblem::NumberNotDigits),
        }
    }
    Ok(out)
}

/// Checks `card` as of `today` (UTC): number (digits, 12–19 long, Luhn),
/// expiry (month 1–12; valid through the last day of its month), CVC (3–4
/// digits) and holder name. Returns what may be stored.
pub fn check_card(card: &CardDetails, today: NaiveDate) -> Result<CheckedCard, CardProblem> {
    let digits = digits_only(&card.number)?;
    if !(12..=19).contains(&digits.len()) {
        return Err(CardProblem::NumberLength {
            digits: digits.len(),
        });
    }
    if !luhn_valid(&digits) {
        return Err(CardProblem::LuhnCheckFailed);
    }
    if !(1..=12).contains(&card.exp_month) {
        return Err(CardProblem::ExpiryMonth {
            month: card.exp_month,
        });
    }
    let year = match card.exp_year {
        y @ 0..=99 => 2000 + y,
        y @ 2000..=2199 => y,
        y => return Err(CardProblem::ExpiryYear { year: y }),
    };
    let now = (u32::try_from(today.year()).unwrap_or(0), today.month());
    if (year, card.exp_month) < now {
        return Err(CardProblem::Expired {
            month: card.exp_month,
            year,
        });
    }
    let cvc = card.cvc.trim();
    if !(3..=4).contains(&cvc.len()) || !cvc.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CardProblem::Cvc);
    }
    let holder_name = card.holder_name.trim();
    if holder_name.is_empty() || holder_name.chars().count() > 100 {
        return Err(CardProblem::HolderName);
    }
    let test = TEST_CARDS.iter().find(|t| {
        t.number
            .chars()
            .filter(char::is_ascii_digit)
            .eq(digits.chars())
    });
    Ok(CheckedCard {
        brand: CardBrand::detect(&digits),
        last4: digits[digits.len() - 4..].to_string(),
        holder_name: holder_name.to_string(),
        decline: test.and_then(|t| t.decline),
        needs_confirmation: test.is_some_and(|t| t.needs_confirmation),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(number: &str) -> CardDetails {
        CardDetails {
            number: number.into(),
            exp_month: 12,
            exp_year: 2030,
            cvc: "123".into(),
            holder_name: "Ada Lovelace".into(),
        }
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 15).unwrap()
    }

    #[test]
    fn every_test_card_is_valid_and_branded() {
        for t in TEST_CARDS {
            let c = check_card(&card(t.number), today()).unwrap();
            assert_eq!(c.brand, t.brand, "{}", t.number);
            assert_eq!(c.decline, t.decline, "{}", t.number);
        }
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid("4242424242424242"));
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("4242424242424241"));
        assert!(!luhn_valid(""));
        assert!(!luhn_valid("12a4"));
    }

    #[test]
    fn brands() {
        assert_eq!(CardBrand::detect("4111111111111111"), CardBrand::Visa);
        assert_eq!(CardBrand::detect("5105105105105100"), CardBrand::Mastercard);
        assert_eq!(CardBrand::detect("2221000000000009"), CardBrand::Mastercard);
        assert_eq!(CardBrand::detect("2720990000000000"), CardBrand::Mastercard);
        assert_eq!(CardBrand::detect("2721000000000000"), CardBrand::Other);
        assert_eq!(CardBrand::detect("5605105105105100"), CardBrand::Other);
        assert_eq!(CardBrand::detect("371449635398431"), CardBrand::Amex);
        assert_eq!(CardBrand::detect("341111111111111"), CardBrand::Amex);
        assert_eq!(CardBrand::detect("6011111111111117"), CardBrand::Other);
        assert_eq!(CardBrand::detect(""), CardBrand::Other);
    }

    #[test]
    fn expiry_is_valid_through_its_month() {
        let mut c = card("4242424242424242");
        c.exp_year = 2026;
        c.exp_month = 3;
        assert!(check_card(&c, today()).is_ok());
        c.exp_month = 2;
        assert_eq!(
            check_card(&c, today()),
            Err(CardProblem::Expired {
                month: 2,
                year: 2026
            })
        );
        c.exp_year = 27;
        assert!(check_card(&c, today()).is_ok());
        c.exp_year = 1999;
        assert_eq!(
            check_card(&c, today()),
            Err(CardProblem::ExpiryYear { year: 1999 })
        );
        c.exp_year = 2030;
        c.exp_month = 13;
        assert_eq!(
            check_card(&c, today()),
            Err(CardProblem::ExpiryMonth { month: 13 })
        );
    }

    #[test]
    fn debug_masks_the_number_and_cvc() {
        let s = format!("{:?}", card("4242 4242 4242 4242"));
        assert!(!s.contains("4242 4242"));
        assert!(!s.contains("123"));
        assert!(s.contains("**** 4242"));
    }
}
