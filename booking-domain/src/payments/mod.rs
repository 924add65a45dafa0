//! Payments: authorize a card for a booking's total, capture it when the
//! booking is confirmed, and void or refund it when the saga compensates.
//!
//! The [`Payments`] trait is what the saga calls; [`LocalPayments`] keeps it
//! on sled trees named `payments_*`, and a remote client can implement the
//! same trait over HTTP. Cards are checked (digits, length, Luhn, expiry, CVC)
//! before anything is stored, and only the brand and the last four digits are
//! ever stored: never the full number, never the CVC. A few well-known test
//! numbers ([`TEST_CARDS`]) decline with distinct reasons so a demo can show
//! compensation. Every mutation is keyed by the saga's idempotency key,
//! remembered (declines included), tombstoned when compensated before it
//! arrived, and flushed to disk before it is acknowledged. The records and
//! each customer's history are a [`crate::ledger`], so opening reads
//! neither, and histories are read a page at a time.

use crate::types::Money;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

mod cards;
mod local;
mod vault;
/// The hex text form sealed values are kept in (shared with `crate::personal`).
pub(crate) use vault::{hex, unhex};

pub use cards::*;
pub use local::LocalPayments;
pub use vault::{
    wipe_card, CardToken, HeldCard, VaultKey, VaultKeyError, CARD_TTL, PURGE_EVERY, VAULT_KEY_FILE,
};

/// Longest idempotency key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// Where a participant reads the current time. Injected so tests (card
/// expiry, timestamps) are deterministic.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// Today's date in UTC.
    fn today(&self) -> NaiveDate {
        self.now().date_naive()
    }
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that always reads the same instant (tests, demos).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub DateTime<Utc>);

impl FixedClock {
    /// A clock standing at midnight UTC of `date`.
    pub fn on(date: NaiveDate) -> Self {
        FixedClock(date.and_time(chrono::NaiveTime::MIN).and_utc())
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

// The plumbing every local participant shares (one instance per database,
// group flush) lives in the ledger module; these names stay reachable here.
pub(crate) use crate::ledger::{GroupFlush, Registry};

/// A request to authorize a card for an amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeRequest {
    /// Whose payment this is (history is kept per email).
    pub customer_email: String,
    /// The card.
    pub card: CardDetails,
    /// The amount; must be positive.
    pub amount: Money,
}

/// A request to authorize a tokenized card (see [`Payments::tokenize`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenAuthorizeRequest {
    /// Whose payment this is (history is kept per email).
    pub customer_email: String,
    /// The token [`Payments::tokenize`] returned.
    pub token: String,
    /// The amount; must be positive.
    pub amount: Money,
}

/// A request to tokenize a card, with the key that makes it idempotent.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizeRequest {
    /// The card.
    pub card: CardDetails,
}

impl fmt::Debug for TokenizeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenizeRequest")
            .field("card", &self.card)
            .finish()
    }
}

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Money is reserved on the card.
    Authorized,
    /// The issuer asks the customer to confirm (strong customer
    /// authentication): nothing can be captured until
    /// [`Payments::confirm_authorization`] makes it `Authorized`; it can be
    /// voided.
    RequiresConfirmation,
    /// Money was taken.
    Captured,
    /// The authorization was cancelled before capture.
    Voided,
    /// Captured money was given back.
    Refunded,
    /// The issuer said no; see `decline_reason`.
    Declined,
}

/// One payment, as stored and as reported: no card number, no CVC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// The idempotency key that created it.
    pub key: String,
    /// The authorization id the (simulated) processor issued, e.g.
    /// `auth_3f9c0a7d12be4e55`.
    pub authorization_id: String,
    /// Customer email, lower case.
    pub customer_email: String,
    /// Name on card.
    pub holder_name: String,
    /// Card network.
    pub brand: CardBrand,
    /// Last four digits of the card.
    pub last4: String,
    /// Amount authorized.
    pub amount: Money,
    /// Where it stands.
    pub status: PaymentStatus,
    /// Why it was declined, when `status` is `Declined`.
    pub decline_reason: Option<DeclineReason>,
    /// When it was authorized (or declined).
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
}

/// What [`Payments::void_or_refund`] did. Repeating it returns the same
/// outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoidOutcome {
    /// The authorization was cancelled; nothing was taken.
    Voided(PaymentRecord),
    /// Captured money was returned.
    Refunded(PaymentRecord),
    /// Nothing to undo: the payment was declined, or no authorization had
    /// arrived under the key (a tombstone now refuses a late one).
    NothingToUndo,
}

/// What is known about an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentLookup {
    /// Nothing has happened under this key.
    Unknown,
    /// The key was compensated before any authorization arrived.
    Tombstone,
    /// A payment was made (or declined) under this key.
    Payment(PaymentRecord),
    /// A refund of a captured payment was made under this key.
    Refund(RefundRecord),
}

/// A request to give back part or all of a captured payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    /// The idempotency key of the captured payment.
    pub payment_key: String,
    /// How much to give back: positive, at most the captured amount, in its
    /// currency.
    pub amount: Money,
}

/// One refund, keyed by the idempotency key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRecord {
    /// The refund's own idempotency key.
    pub key: String,
    /// The payment refunded.
    pub payment_key: String,
    /// Amount given back.
    pub amount: Money,
    /// What had been captured.
    pub captured: Money,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// Why a payment operation failed.
///
/// [`is_rejection`](PaymentError::is_rejection) separates a definite "no"
/// (decline, bad card data, wrong state: a retry gives the same answer) from
/// a failure to reach or use storage (worth retrying with the same key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentError {
    /// The issuer declined the card.
    #[error("payment declined: {reason}")]
    Declined {
        /// Why.
        reason: DeclineReason,
    },
    /// The card data is invalid.
    #[error("invalid card: {problem}")]
    InvalidCard {
        /// What was wrong.
        problem: CardProblem,
    },
    /// A malformed request (amount, email or key).
    #[error("invalid payment request: {reason}")]
    InvalidRequest {
        /// What was wrong.
        reason: String,
    },
    /// No payment under this key.
    #[error("no payment under key {key:?}")]
    UnknownPayment {
        /// The key.
        key: String,
    },
    /// The key was already voided, refunded or tombstoned, so the operation
    /// is refused rather than applied after its compensation.
    #[error("payment {key:?} was already voided or refunded")]
    AlreadyCompensated {
        /// The key.
        key: String,
    },
    /// The key was used before for a different payment.
    #[error("idempotency key {key:?} was used for a different payment")]
    KeyReused {
        /// The key.
        key: String,
    },
    /// No card is held under the token: it was used, forgotten, expired,
    /// or never issued here.
    #[error("card details are no longer held; please enter the card again")]
    UnknownToken,
    /// A card is held under the token but does not open: the vault's key
    /// file is not the one it was sealed under, or the record is damaged.
    /// Not retryable (a retry opens it no better); the operator is told in
    /// the log.
    #[error("the card held under this token cannot be read: {reason}")]
    CardUnreadable {
        /// What failed (never any card data).
        reason: String,
    },
    /// The store failed or holds a record it cannot read.
    #[error("payments storage failed: {message}")]
    Storage {
        /// What failed.
        message: String,
    },
    /// The participant could not be reached (remote implementations).
    #[error("payments unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
    },
}

impl PaymentError {
    /// True for a definite "no": everything except
    /// [`Storage`](Self::Storage) and [`Unavailable`](Self::Unavailable).
    pub fn is_rejection(&self) -> bool {
        !self.is_retryable()
    }

    /// True when the outcome is unknown and the call may be retried with the
    /// same key.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Storage { .. } | Self::Unavailable { .. })
    }

    /// True when the issuer declined (as opposed to bad input).
    pub fn is_decline(&self) -> bool {
        matches!(self, Self::Declined { .. })
    }

    fn storage(e: impl fmt::Display) -> Self {
        PaymentError::Storage {
            message: e.to_string(),
        }
    }
}

/// Card payments by idempotency key.
///
/// Implementations must be usable as `Arc<dyn Payments>` and return only once
/// the effect is durable.
#[async_trait]
pub trait Payments: Send + Sync {
    /// Authorizes `request.amount` on the card. Repeating it with the same key
    /// returns the same record (same authorization id), or the same decline.
    async fn authorize(
        &self,
        key: &str,
        request: &AuthorizeRequest,
    ) -> Result<PaymentRecord, PaymentError>;

    /// Captures the authorization made under `key`. Repeating it returns the
    /// captured record.
    async fn capture(&self, key: &str) -> Result<PaymentRecord, PaymentError>;

    /// Voids an authorization or refunds a capture. For an unknown key it
    /// records a tombstone and returns [`VoidOutcome::NothingToUndo`].
    async fn void_or_refund(&self, key: &str) -> Result<VoidOutcome, PaymentError>;

    /// What is known about `key`.
    async fn get(&self, key: &str) -> Result<PaymentLookup, PaymentError>;

    /// A customer's payments, oldest first (declines included).
    async fn history(&self, customer_email: &str) -> Result<Vec<PaymentRecord>, PaymentError>;

    /// Every payment, in key order. For consistency checks.
    async fn all_payments(&self) -> Result<Vec<PaymentRecord>, PaymentError>;

    /// Keeps `card` encrypted at rest and returns a token for it, once
    /// durable. The same `key` with the same card returns the same token;
    /// with another card, [`PaymentError::KeyReused`]. The card is checked
    /// first ([`PaymentError::InvalidCard`]).
    async fn tokenize(
        &self,
        key: &str,
        request: &TokenizeRequest,
    ) -> Result<CardToken, PaymentError>;

    /// [`authorize`](Self::authorize) with the card held under
    /// `request.token`, which is forgotten once the authorization (or the
    /// decline) is recorded. A repeat under the same key returns the
    /// recorded payment even after the card is forgotten; a first call for
    /// a token not held is [`PaymentError::UnknownToken`].
    async fn authorize_token(
        &self,
        key: &str,
        request: &TokenAuthorizeRequest,
    ) -> Result<PaymentRecord, PaymentError>;

    /// Records the customer's confirmation of the authorization under
    /// `key` (`RequiresConfirmation` becomes `Authorized`). Repeating it,
    /// or confirming one that needed none, returns the record; a voided
    /// one is [`PaymentError::AlreadyCompensated`].
    async fn confirm_authorization(&self, key: &str) -> Result<PaymentRecord, PaymentError>;

    /// Forgets the card under `token` (a booking that will not authorize
    /// it any more). Forgetting a token not held is not an error.
    async fn forget_card(&self, token: &str) -> Result<(), PaymentError>;

    /// How many tokenized cards are held now (a gauge).
    async fn cards_held(&self) -> Result<u64, PaymentError>;

    /// Gives back `request.amount` of the payment captured under
    /// `request.payment_key`, under the refund's own `key`. The payment
    /// becomes `Refunded` (a payment is refunded at most once, so never more
    /// than was captured). Repeating it returns the same record; the same
    /// key for another refund is [`PaymentError::KeyReused`]; a payment not
    /// captured (or refunded under another key) is refused.
    async fn refund(
        &self,
        key: &str,
        request: &RefundRequest,
    ) -> Result<RefundRecord, PaymentError>;
}
