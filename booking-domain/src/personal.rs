//! Passenger details a carrier needs, and how they are kept: each
//! passenger's date of birth and the booking's contact phone are checked
//! here ([`DateOfBirth::parse`], [`Phone::parse`]: typed errors that never
//! quote the value) and then sealed, all of a booking's together, into one
//! [`SealedPersonal`] with the card vault's AEAD (XChaCha20-Poly1305, see
//! [`crate::payments::VaultKey`]) under a sibling key file of the data
//! directory, [`PERSONAL_KEY_FILE`]. The saga's data and the confirmed
//! booking carry only the sealed form, so no sled tree, saga record,
//! event, log line or backup holds them in clear; they are opened only to
//! print the e-ticket and to show the holder a masked phone.
//!
//! `Debug` of every type here is redacted; none implements `Display` of
//! its value (the e-ticket asks for it by name: [`DateOfBirth::iso`]).

use crate::payments::VaultKey;
use crate::payments::{hex, unhex};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroize;

/// The key file's name inside the data directory (beside the card vault's
/// `card-vault.key`, created and checked the same way: `0600`, 32 bytes).
pub const PERSONAL_KEY_FILE: &str = "personal-data.key";
/// The earliest year of birth accepted.
pub const MIN_BIRTH_YEAR: i32 = 1900;
/// Digits of a phone number, country code included (E.164 allows 15).
pub const PHONE_DIGITS: std::ops::RangeInclusive<usize> = 8..=15;
/// The longest input accepted for a field here, in characters.
pub const MAX_INPUT_CHARS: usize = 32;
/// Bound into every seal as associated data: a sealed value opens only as
/// what it was sealed as.
const AAD: &[u8] = b"booking-personal-v1";

/// What is wrong with a date of birth or phone (never the value itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersonalError {
    /// Not `YYYY-MM-DD`.
    #[error("date of birth must be written YYYY-MM-DD")]
    DateFormat,
    /// `YYYY-MM-DD` but no such day (a 29 February outside a leap year).
    #[error("date of birth is not a real date")]
    NoSuchDate,
    /// After today.
    #[error("date of birth is in the future")]
    DateInFuture,
    /// Before [`MIN_BIRTH_YEAR`].
    #[error("date of birth must be in 1900 or later")]
    DateTooEarly,
    /// Not `+` then digits, spaces and dashes.
    #[error("phone must be + and the country code, then digits (spaces and dashes allowed)")]
    PhoneFormat,
    /// Too few or too many digits.
    #[error("phone must have 8 to 15 digits, country code included; it has {digits}")]
    PhoneLength {
        /// Digits found.
        digits: usize,
    },
    /// A sealed value that does not open under this key (another key file,
    /// a damaged record): an error, never another person's details.
    #[error("personal details cannot be read: {reason}")]
    Unreadable {
        /// Why.
        reason: String,
    },
    /// Sealing failed (encoding).
    #[error("personal details could not be sealed: {0}")]
    Seal(String),
}

/// Text a client sent for a personal field, before it is checked: zeroed
/// when dropped, redacted in `Debug`, and decoded from a JSON string only
/// (a value of another type is refused without quoting it).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PersonalText(String);

impl PersonalText {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Self {
        PersonalText(text.into())
    }
    /// The text as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for PersonalText {
    fn from(s: &str) -> Self {
        PersonalText(s.to_string())
    }
}

impl fmt::Debug for PersonalText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonalText(..)")
    }
}

impl Drop for PersonalText {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<'de> Deserialize<'de> for PersonalText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        // serde's own type error quotes the value: this one does not.
        fn refuse<E: serde::de::Error>() -> E {
            E::custom("must be a string")
        }
        impl<'v> serde::de::Visitor<'v> for Text {
            type Value = PersonalText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PersonalText, E> {
                Ok(PersonalText(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<PersonalText, E> {
                Err(refuse())
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<PersonalText, E> {
                Err(refuse())
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<PersonalText, E> {
                Err(refuse())
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<PersonalText, E> {
                Err(refuse())
            }
            fn visit_seq<A: serde::de::SeqAccess<'v>>(
                self,
                _: A,
            ) -> Result<PersonalText, A::Error> {
                Err(refuse())
            }
            fn visit_map<A: serde::de::MapAccess<'v>>(
                self,
                _: A,
            ) -> Result<PersonalText, A::Error> {
                Err(refuse())
            }
        }
        d.deserialize_any(Text)
    }
}

/// A checked date of birth: a real day, 1900 or later, not after today.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DateOfBirth(NaiveDate);

impl fmt::Debug for DateOfBirth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DateOfBirth(..)")
    }
}

impl DateOfBirth {
    /// Checks `text` (`YYYY-MM-DD`, surrounding spaces ignored) as of `today`.
    pub fn parse(text: &str, today: NaiveDate) -> Result<DateOfBirth, PersonalError> {
        let t = text.trim();
        let b = t.as_bytes();
        let shape = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shape {
            return Err(PersonalError::DateFormat);
        }
        let num = |r: std::ops::Range<usize>| t[r].parse::<u32>().unwrap_or(0);
        let date = NaiveDate::from_ymd_opt(num(0..4) as i32, num(5..7), num(8..10))
            .ok_or(PersonalError::NoSuchDate)?;
        if date > today {
            return Err(PersonalError::DateInFuture);
        }
        if date.year() < MIN_BIRTH_YEAR {
            return Err(PersonalError::DateTooEarly);
        }
        Ok(DateOfBirth(date))
    }

    /// The date, `YYYY-MM-DD`, for the e-ticket.
    pub fn iso(&self) -> String {
        self.0.format("%Y-%m-%d").to_string()
    }

    /// The date.
    pub fn date(&self) -> NaiveDate {
        self.0
    }
}

/// A checked contact phone, normalized to `+` and its digits.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Phone(String);

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Phone(..)")
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Phone {
    /// Checks `text`: `+`, then 8 to 15 digits (the first not 0), with
    /// spaces and dashes between them allowed and dropped.
    pub fn parse(text: &str) -> Result<Phone, PersonalError> {
        let t = text.trim();
        if t.chars().count() > MAX_INPUT_CHARS {
            return Err(PersonalError::PhoneFormat);
        }
        let Some(rest) = t.strip_prefix('+') else {
            return Err(PersonalError::PhoneFormat);
        };
        if !rest
            .chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
        {
            return Err(PersonalError::PhoneFormat);
        }
        let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
        if digits.starts_with('0') {
            return Err(PersonalError::PhoneFormat);
        }
        if !PHONE_DIGITS.contains(&digits.len()) {
            return Err(PersonalError::PhoneLength {
                digits: digits.len(),
            });
        }
        Ok(Phone(format!("+{digits}")))
    }

    /// The number, `+` and digits.
    pub fn e164(&self) -> &str {
        &self.0
    }

    /// The number with every digit but the last three hidden, for the
    /// manage-booking page: `+•••••••••678`.
    pub fn masked(&self) -> String {
        let digits = self.0.len() - 1;
        let shown = &self.0[self.0.len() - 3.min(digits)..];
        format!("+{}{shown}", "•".repeat(digits.saturating_sub(3)))
    }
}

/// A booking's personal details, in the clear: one date of birth per
/// passenger (in passenger order, `None` where not given) and the contact
/// phone. Exists only while being checked, sealed or printed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalDetails {
    /// Per passenger, in order.
    pub dates_of_birth: Vec<Option<DateOfBirth>>,
    /// The contact phone.
    pub phone: Option<Phone>,
}

impl PersonalDetails {
    /// Whether nothing was given.
    pub fn is_empty(&self) -> bool {
        self.phone.is_none() && self.dates_of_birth.iter().all(Option::is_none)
    }

    /// The `i`th passenger's date of birth, if given.
    pub fn date_of_birth(&self, i: usize) -> Option<DateOfBirth> {
        self.dates_of_birth.get(i).copied().flatten()
    }
}

/// A booking's personal details sealed: what the saga's data, the
/// confirmed booking and a backup hold. Opaque without the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedPersonal {
    /// Format version.
    pub v: u32,
    nonce: String,
    sealed: String,
}

impl fmt::Debug for SealedPersonal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedPersonal(..)")
    }
}

/// Seals and opens [`PersonalDetails`] under one key.
pub struct PersonalVault {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for PersonalVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonalVault(..)")
    }
}

impl PersonalVault {
    /// A vault under `key`.
    pub fn new(key: &VaultKey) -> Self {
        PersonalVault {
            cipher: XChaCha20Poly1305::new(key.bytes().into()),
        }
    }

    /// A vault under the key file [`PERSONAL_KEY_FILE`] of `dir` (created
    /// `0600` on first use, refused when others may read it).
    pub fn load_or_create(dir: &std::path::Path) -> Result<Self, crate::payments::VaultKeyError> {
        Ok(Self::new(&VaultKey::load_or_create_file(
            dir,
            PERSONAL_KEY_FILE,
        )?))
    }

    /// A vault whose key lives only in this process (temporary databases).
    pub fn ephemeral() -> Self {
        Self::new(&VaultKey::ephemeral())
    }

    /// `details` sealed under a fresh random nonce.
    pub fn seal(&self, details: &PersonalDetails) -> Result<SealedPersonal, PersonalError> {
        let mut plain =
            serde_json::to_vec(details).map_err(|e| PersonalError::Seal(e.to_string()))?;
        let mut nonce = [0u8; 24];
        rand::Rng::fill(&mut rand::thread_rng(), &mut nonce[..]);
        let sealed = self.cipher.encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: AAD,
            },
        );
        plain.zeroize();
        let sealed = sealed.map_err(|_| PersonalError::Seal("encryption failed".into()))?;
        Ok(SealedPersonal {
            v: 1,
            nonce: hex(&nonce),
            sealed: hex(&sealed),
        })
    }

    /// The details `sealed` holds.
    pub fn open(&self, sealed: &SealedPersonal) -> Result<PersonalDetails, PersonalError> {
        let unreadable = |reason: &str| {
            tracing::error!(reason, "sealed personal details cannot be read");
            PersonalError::Unreadable {
                reason: reason.into(),
            }
        };
        let nonce = unhex(&sealed.nonce).filter(|n| n.len() == 24);
        let (Some(nonce), Some(bytes)) = (nonce, unhex(&sealed.sealed)) else {
            return Err(unreadable("the sealed record is damaged"));
        };
        let mut plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &bytes,
                    aad: AAD,
                },
            )
            .map_err(|_| unreadable("it does not open under this key file"))?;
        let details = serde_json::from_slice::<PersonalDetails>(&plain)
            .map_err(|_| unreadable("the opened record does not decode"));
        plain.zeroize();
        details
    }
}

#[cfg(test)]
#[path = "personal_tests.rs"]
mod tests;
