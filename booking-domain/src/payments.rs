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

use crate::ledger::{Ledger, LedgerEntry, LedgerError, Trees};
use crate::types::Money;
use async_trait::async_trait;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Longest idempotency key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 256;

const RECORDS_TREE: &str = "payments_records";
const COUNTS_TREE: &str = "payments_counts";
const BY_EMAIL_TREE: &str = "payments_by_email";
const META_TREE: &str = "payments_meta";

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
}

/// Test cards. Any other valid card approves; these decline with the reason
/// given (any future expiry date and any 3–4 digit CVC will do).
pub const TEST_CARDS: &[TestCard] = &[
    TestCard {
        number: "4242 4242 4242 4242",
        brand: CardBrand::Visa,
        outcome: "approved",
        decline: None,
    },
    TestCard {
        number: "5555 5555 5555 4444",
        brand: CardBrand::Mastercard,
        outcome: "approved",
        decline: None,
    },
    TestCard {
        number: "3782 822463 10005",
        brand: CardBrand::Amex,
        outcome: "approved",
        decline: None,
    },
    TestCard {
        number: "4000 0000 0000 9995",
        brand: CardBrand::Visa,
        outcome: "declined: insufficient funds",
        decline: Some(DeclineReason::InsufficientFunds),
    },
    TestCard {
        number: "4000 0000 0000 0002",
        brand: CardBrand::Visa,
        outcome: "declined: card blocked by the issuer",
        decline: Some(DeclineReason::CardDeclined),
    },
    TestCard {
        number: "4000 0000 0000 0069",
        brand: CardBrand::Visa,
        outcome: "declined: expired card (even with a future expiry date)",
        decline: Some(DeclineReason::ExpiredCard),
    },
];

/// Card data as the customer typed it. Sent to the participant, checked, and
/// reduced to brand and last four digits; never stored. `Debug` masks the
/// number and the CVC so they cannot leak into logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    let decline = TEST_CARDS
        .iter()
        .find(|t| {
            t.number
                .chars()
                .filter(char::is_ascii_digit)
                .eq(digits.chars())
        })
        .and_then(|t| t.decline);
    Ok(CheckedCard {
        brand: CardBrand::detect(&digits),
        last4: digits[digits.len() - 4..].to_string(),
        holder_name: holder_name.to_string(),
        decline,
    })
}

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

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Money is reserved on the card.
    Authorized,
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

/// What the `payments_records` tree stores under a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PaymentEntry {
    Payment(PaymentRecord),
    Tombstone {
        at: DateTime<Utc>,
    },
    /// A refund under its own key (the refunded payment names it).
    Refund(RefundRecord),
}

fn payment(entry: PaymentEntry) -> Option<PaymentRecord> {
    match entry {
        PaymentEntry::Payment(p) => Some(p),
        PaymentEntry::Tombstone { .. } | PaymentEntry::Refund(_) => None,
    }
}

#[cfg(test)]
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, PaymentError> {
    crate::envelope::decode(bytes).map_err(PaymentError::storage)
}

fn check_key(key: &str) -> Result<(), PaymentError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(PaymentError::InvalidRequest {
            reason: format!("idempotency key must be 1..={MAX_KEY_LEN} bytes"),
        });
    }
    Ok(())
}

/// Lower-cased, trimmed email, or an error when it does not look like one.
fn normalize_email(email: &str) -> Result<String, PaymentError> {
    let email = email.trim().to_lowercase();
    let ok = email.len() <= 254
        && !email.contains(char::is_whitespace)
        && !email.contains('\0')
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if ok {
        Ok(email)
    } else {
        Err(PaymentError::InvalidRequest {
            reason: "customer email is not valid".into(),
        })
    }
}

fn new_authorization_id() -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("auth_{n:016x}")
}

impl LedgerEntry for PaymentEntry {
    /// A payment is listed in its customer's history (declines included).
    fn owner(&self) -> Option<Vec<u8>> {
        match self {
            PaymentEntry::Payment(p) => Some(p.customer_email.as_bytes().to_vec()),
            PaymentEntry::Tombstone { .. } | PaymentEntry::Refund(_) => None,
        }
    }

    fn listed_at(&self) -> i64 {
        match self {
            PaymentEntry::Payment(p) => p.created_at.timestamp_micros(),
            PaymentEntry::Tombstone { at } => at.timestamp_micros(),
            PaymentEntry::Refund(r) => r.created_at.timestamp_micros(),
        }
    }
}

impl From<LedgerError> for PaymentError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::BadCursor => PaymentError::InvalidRequest {
                reason: e.to_string(),
            },
            LedgerError::Storage(m) => PaymentError::Storage { message: m },
        }
    }
}

/// Open local payments in this process, one per database.
static OPEN: Registry<Inner> = Registry::new();

struct Inner {
    /// One [`PaymentEntry`] per idempotency key, listed per customer. Its
    /// lock serialises mutations; no `.await` happens while it is held.
    ledger: Ledger<PaymentEntry>,
    meta: sled::Tree,
    clock: Arc<dyn Clock>,
}

impl Inner {
    fn load(db: &sled::Db, meta: sled::Tree, clock: Arc<dyn Clock>) -> Result<Self, PaymentError> {
        let trees = Trees {
            entries: RECORDS_TREE,
            buckets: COUNTS_TREE,
            index: BY_EMAIL_TREE,
        };
        let ledger = Ledger::open(db, meta.clone(), trees, ())?;
        tracing::debug!(records_read = ledger.read_at_open(), "payments opened");
        Ok(Inner {
            ledger,
            meta,
            clock,
        })
    }
}

/// [`Payments`] with a simulated processor, on sled trees
/// `payments_records` (one record per idempotency key) and `payments_meta`.
///
/// Each customer's history is an index on disk (`payments_by_email`), so
/// opening reads no record. Opening them again on
/// the same database while an instance is alive returns that instance, with
/// the clock it was opened with. Cheap to clone.
#[derive(Clone)]
pub struct LocalPayments {
    inner: Arc<Inner>,
    cover: crate::ledger::Cover,
}

impl fmt::Debug for LocalPayments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalPayments").finish_non_exhaustive()
    }
}

impl LocalPayments {
    /// Opens payments on `db`, reading time from the system clock.
    pub fn open(db: &sled::Db) -> Result<Self, PaymentError> {
        Self::open_with_clock(db, Arc::new(SystemClock))
    }

    /// Opens payments on `db`, reading time (card expiry, timestamps) from
    /// `clock`.
    pub fn open_with_clock(db: &sled::Db, clock: Arc<dyn Clock>) -> Result<Self, PaymentError> {
        let meta = db.open_tree(META_TREE).map_err(PaymentError::storage)?;
        let inner = OPEN.open_or_build(
            &meta,
            |inner| &inner.meta,
            || Inner::load(db, meta.clone(), clock),
            PaymentError::storage,
        )?;
        Ok(LocalPayments {
            inner,
            cover: crate::ledger::Cover::default(),
        })
    }

    /// The same participant, with its saga steps' writes made durable by
    /// the engine's flushes (see `ledger::Cover`): refused unless `engine`
    /// is the group commit of this participant's own database.
    pub fn covered_by(self, engine: &saga_engine::store::Durability) -> Result<Self, PaymentError> {
        let cover = crate::ledger::Cover::engine(self.inner.ledger.db(), engine)?;
        Ok(LocalPayments { cover, ..self })
    }

    /// Makes a saga step's write durable before the reply, unless the
    /// engine's next flush covers it.
    async fn step_flush(&self) -> Result<(), PaymentError> {
        self.cover
            .step(async { Ok(self.inner.ledger.durable().await?) })
            .await
    }

    /// Records read while these payments were opened: at most one, or every
    /// record once when a database written before the histories were kept
    /// on disk is upgraded.
    pub fn entries_read_at_open(&self) -> u64 {
        self.inner.ledger.read_at_open()
    }

    /// A customer's payments, oldest first (declines included), `limit` at
    /// a time (clamped to `1..=`[`crate::ledger::MAX_PAGE_LIMIT`]), starting
    /// after `cursor` (`None`: the first page). Returns the payments and the
    /// cursor of the next page, `None` after the last. Payments made while
    /// paging come after the pages already read: none is returned twice.
    pub fn history_page(
        &self,
        customer_email: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<PaymentRecord>, Option<String>), PaymentError> {
        let email = normalize_email(customer_email)?;
        let (entries, next) = self
            .inner
            .ledger
            .owner_page(email.as_bytes(), cursor, limit)?;
        Ok((entries.into_iter().filter_map(payment).collect(), next))
    }

    /// Every payment in key order, `limit` at a time, starting after
    /// `cursor`; see [`history_page`](Self::history_page).
    pub fn all_payments_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<PaymentRecord>, Option<String>), PaymentError> {
        Ok(self.inner.ledger.page(cursor, limit, payment)?)
    }

    /// Runs `f` on the entry under `key` under the lock and stores what it
    /// returns, then makes it durable: the shape of capture and
    /// void_or_refund.
    async fn change<T, F>(&self, key: &str, f: F) -> Result<T, PaymentError>
    where
        F: FnOnce(
            Option<PaymentEntry>,
            DateTime<Utc>,
        ) -> Result<(Option<PaymentEntry>, T), PaymentError>,
    {
        check_key(key)?;
        let now = self.inner.clock.now();
        let out = {
            let ledger = &self.inner.ledger;
            let locked = ledger.lock();
            let current = ledger.get(key)?;
            let (write, out) = f(current.as_ref().map(|v| v.entry.clone()), now)?;
            if let Some(entry) = write {
                ledger.put(&locked, key, current.as_ref(), &entry)?;
            }
            out
        };
        self.step_flush().await?;
        Ok(out)
    }

    /// The synchronous part of [`Payments::refund`], under the lock.
    ///
    /// Three single-key writes, in this order: a marker naming the refund
    /// key that claims the payment (`refund-of:{payment_key}` in the meta
    /// tree), the payment (`Refunded`), the refund record. After a crash
    /// between them, the retry under the same key finds either the payment
    /// still captured (and starts again) or refunded with its own marker
    /// (and writes the missing record); another key finds it refunded and
    /// is refused.
    fn refund_now(
        &self,
        key: &str,
        request: &RefundRequest,
        now: DateTime<Utc>,
    ) -> Result<RefundRecord, PaymentError> {
        let ledger = &self.inner.ledger;
        let locked = ledger.lock();
        let marker = format!("refund-of:{}", request.payment_key);
        match ledger.entry(key)? {
            Some(PaymentEntry::Refund(r)) => {
                if r.payment_key != request.payment_key || r.amount != request.amount {
                    return Err(PaymentError::KeyReused { key: key.into() });
                }
                return Ok(r);
            }
            Some(PaymentEntry::Tombstone { .. }) => {
                return Err(PaymentError::AlreadyCompensated { key: key.into() })
            }
            Some(PaymentEntry::Payment(_)) => {
                return Err(PaymentError::KeyReused { key: key.into() })
            }
            None => {}
        }
        let current = ledger.get(&request.payment_key)?;
        let p = match current.as_ref().map(|v| v.entry.clone()) {
            Some(PaymentEntry::Payment(p)) => p,
            _ => {
                return Err(PaymentError::UnknownPayment {
                    key: request.payment_key.clone(),
                })
            }
        };
        let claimed_by = self
            .inner
            .meta
            .get(marker.as_bytes())
            .map_err(PaymentError::storage)?;
        match p.status {
            PaymentStatus::Captured => {}
            // Refunded by this very key before a crash: finish the record.
            PaymentStatus::Refunded if claimed_by.as_deref() == Some(key.as_bytes()) => {}
            PaymentStatus::Refunded | PaymentStatus::Voided => {
                return Err(PaymentError::AlreadyCompensated {
                    key: request.payment_key.clone(),
                })
            }
            PaymentStatus::Authorized | PaymentStatus::Declined => {
                return Err(PaymentError::InvalidRequest {
                    reason: format!("payment {:?} was not captured", request.payment_key),
                })
            }
        }
        if request.amount.currency != p.amount.currency
            || request.amount.minor <= 0
            || request.amount.minor > p.amount.minor
        {
            return Err(PaymentError::InvalidRequest {
                reason: format!(
                    "refund must be positive and at most the captured {}, got {}",
                    p.amount, request.amount
                ),
            });
        }
        let record = RefundRecord {
            key: key.to_string(),
            payment_key: request.payment_key.clone(),
            amount: request.amount.clone(),
            captured: p.amount.clone(),
            created_at: now,
        };
        if p.status == PaymentStatus::Captured {
            self.inner
                .meta
                .insert(marker.as_bytes(), key.as_bytes())
                .map_err(PaymentError::storage)?;
            let refunded = PaymentRecord {
                status: PaymentStatus::Refunded,
                updated_at: now,
                ..p
            };
            ledger.put(
                &locked,
                &request.payment_key,
                current.as_ref(),
                &PaymentEntry::Payment(refunded),
            )?;
        }
        ledger.put(&locked, key, None, &PaymentEntry::Refund(record.clone()))?;
        Ok(record)
    }

    /// The synchronous part of [`Payments::authorize`], under the lock.
    fn authorize_now(
        &self,
        key: &str,
        email: &str,
        request: &AuthorizeRequest,
        checked: &Result<CheckedCard, CardProblem>,
        now: DateTime<Utc>,
    ) -> Result<(PaymentRecord, bool), PaymentError> {
        let ledger = &self.inner.ledger;
        let locked = ledger.lock();
        match ledger.entry(key)? {
            Some(PaymentEntry::Tombstone { .. }) => {
                return Err(PaymentError::AlreadyCompensated { key: key.into() })
            }
            Some(PaymentEntry::Refund(_)) => {
                return Err(PaymentError::KeyReused { key: key.into() })
            }
            Some(PaymentEntry::Payment(p)) => {
                let same_card = match checked {
                    Ok(card) => p.last4 == card.last4 && p.brand == card.brand,
                    Err(_) => true,
                };
                if p.customer_email != email || p.amount != request.amount || !same_card {
                    return Err(PaymentError::KeyReused { key: key.into() });
                }
                return Ok((p, false));
            }
            None => {}
        }
        let card = match checked {
            Ok(card) => card,
            Err(problem) => {
                return Err(PaymentError::InvalidCard {
                    problem: problem.clone(),
                })
            }
        };
        let (status, decline_reason) = match card.decline {
            Some(reason) => (PaymentStatus::Declined, Some(reason)),
            None => (PaymentStatus::Authorized, None),
        };
        let record = PaymentRecord {
            key: key.to_string(),
            authorization_id: new_authorization_id(),
            customer_email: email.to_string(),
            holder_name: card.holder_name.clone(),
            brand: card.brand,
            last4: card.last4.clone(),
            amount: request.amount.clone(),
            status,
            decline_reason,
            created_at: now,
            updated_at: now,
        };
        ledger.put(&locked, key, None, &PaymentEntry::Payment(record.clone()))?;
        Ok((record, true))
    }
}

#[async_trait]
impl Payments for LocalPayments {
    async fn authorize(
        &self,
        key: &str,
        request: &AuthorizeRequest,
    ) -> Result<PaymentRecord, PaymentError> {
        check_key(key)?;
        let email = normalize_email(&request.customer_email)?;
        if request.amount.minor <= 0 {
            return Err(PaymentError::InvalidRequest {
                reason: format!("amount must be positive, got {}", request.amount),
            });
        }
        let now = self.inner.clock.now();
        // Checked now but judged under the lock: a replay of a stored
        // payment returns it even if the card has expired since.
        let checked = check_card(&request.card, now.date_naive());
        let (record, fresh) = self.authorize_now(key, &email, request, &checked, now)?;
        // Declines are remembered and flushed too: a retry must see the same
        // answer, and the customer's history shows it.
        self.step_flush().await?;
        tracing::debug!(key, authorization_id = %record.authorization_id, status = ?record.status, fresh, "authorize");
        match record.status {
            PaymentStatus::Declined => Err(PaymentError::Declined {
                reason: record.decline_reason.unwrap_or(DeclineReason::CardDeclined),
            }),
            PaymentStatus::Voided | PaymentStatus::Refunded => {
                Err(PaymentError::AlreadyCompensated { key: key.into() })
            }
            PaymentStatus::Authorized | PaymentStatus::Captured => Ok(record),
        }
    }

    async fn capture(&self, key: &str) -> Result<PaymentRecord, PaymentError> {
        let record = self
            .change(key, |current, now| match current {
                None => Err(PaymentError::UnknownPayment { key: key.into() }),
                Some(PaymentEntry::Tombstone { .. }) => {
                    Err(PaymentError::AlreadyCompensated { key: key.into() })
                }
                Some(PaymentEntry::Refund(_)) => Err(PaymentError::KeyReused { key: key.into() }),
                Some(PaymentEntry::Payment(p)) => match p.status {
                    PaymentStatus::Captured => Ok((None, p)),
                    PaymentStatus::Authorized => {
                        let p = PaymentRecord {
                            status: PaymentStatus::Captured,
                            updated_at: now,
                            ..p
                        };
                        Ok((Some(PaymentEntry::Payment(p.clone())), p))
                    }
                    PaymentStatus::Declined => Err(PaymentError::Declined {
                        reason: p.decline_reason.unwrap_or(DeclineReason::CardDeclined),
                    }),
                    PaymentStatus::Voided | PaymentStatus::Refunded => {
                        Err(PaymentError::AlreadyCompensated { key: key.into() })
                    }
                },
            })
            .await;
        match &record {
            Ok(p) => tracing::debug!(key, authorization_id = %p.authorization_id, "captured"),
            Err(e) => tracing::debug!(key, error = %e, "capture refused"),
        }
        record
    }

    async fn void_or_refund(&self, key: &str) -> Result<VoidOutcome, PaymentError> {
        let outcome = self
            .change(key, |current, now| match current {
                None => Ok((
                    Some(PaymentEntry::Tombstone { at: now }),
                    VoidOutcome::NothingToUndo,
                )),
                Some(PaymentEntry::Tombstone { .. }) => Ok((None, VoidOutcome::NothingToUndo)),
                // Money given back is not taken again: a refund has no undo.
                Some(PaymentEntry::Refund(_)) => Err(PaymentError::InvalidRequest {
                    reason: format!("{key:?} is a refund, which cannot be voided"),
                }),
                Some(PaymentEntry::Payment(p)) => {
                    let to = match p.status {
                        PaymentStatus::Declined => return Ok((None, VoidOutcome::NothingToUndo)),
                        PaymentStatus::Voided => return Ok((None, VoidOutcome::Voided(p))),
                        PaymentStatus::Refunded => return Ok((None, VoidOutcome::Refunded(p))),
                        PaymentStatus::Authorized => PaymentStatus::Voided,
                        PaymentStatus::Captured => PaymentStatus::Refunded,
                    };
                    let p = PaymentRecord {
                        status: to,
                        updated_at: now,
                        ..p
                    };
                    let out = if to == PaymentStatus::Voided {
                        VoidOutcome::Voided(p.clone())
                    } else {
                        VoidOutcome::Refunded(p.clone())
                    };
                    Ok((Some(PaymentEntry::Payment(p)), out))
                }
            })
            .await;
        match &outcome {
            Ok(VoidOutcome::NothingToUndo) => {
                tracing::debug!(key, "nothing to void: tombstone or decline")
            }
            Ok(VoidOutcome::Voided(_)) => tracing::debug!(key, "voided"),
            Ok(VoidOutcome::Refunded(_)) => tracing::debug!(key, "refunded"),
            Err(e) => tracing::warn!(key, error = %e, "void or refund failed"),
        }
        outcome
    }

    async fn get(&self, key: &str) -> Result<PaymentLookup, PaymentError> {
        check_key(key)?;
        Ok(match self.inner.ledger.entry(key)? {
            None => PaymentLookup::Unknown,
            Some(PaymentEntry::Payment(p)) => PaymentLookup::Payment(p),
            Some(PaymentEntry::Tombstone { .. }) => PaymentLookup::Tombstone,
            Some(PaymentEntry::Refund(r)) => PaymentLookup::Refund(r),
        })
    }

    async fn history(&self, customer_email: &str) -> Result<Vec<PaymentRecord>, PaymentError> {
        let email = normalize_email(customer_email)?;
        let entries = self.inner.ledger.owned(email.as_bytes())?;
        Ok(entries.into_iter().filter_map(payment).collect())
    }

    async fn refund(
        &self,
        key: &str,
        request: &RefundRequest,
    ) -> Result<RefundRecord, PaymentError> {
        check_key(key)?;
        check_key(&request.payment_key)?;
        if key == request.payment_key {
            return Err(PaymentError::InvalidRequest {
                reason: "a refund needs its own key".into(),
            });
        }
        let now = self.inner.clock.now();
        let record = self.refund_now(key, request, now);
        if let Ok(r) = &record {
            self.step_flush().await?;
            tracing::debug!(key, payment_key = %r.payment_key, amount = %r.amount, "refunded");
        } else if let Err(e) = &record {
            tracing::debug!(key, error = %e, "refund refused");
        }
        record
    }

    async fn all_payments(&self) -> Result<Vec<PaymentRecord>, PaymentError> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) =
                self.all_payments_page(cursor.as_deref(), crate::ledger::MAX_PAGE_LIMIT)?;
            out.extend(page);
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok(out),
            }
        }
    }
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

    #[test]
    fn reads_the_v1_record_format() {
        let raw = br#"{"v":1,"record":{"payment":{"key":"k","authorization_id":"auth_1","customer_email":"a@b.c","holder_name":"A B","brand":"visa","last4":"4242","amount":{"minor":100,"currency":"USD"},"status":"captured","decline_reason":null,"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}}}"#;
        match decode::<PaymentEntry>(raw).unwrap() {
            PaymentEntry::Payment(p) => {
                assert_eq!(p.status, PaymentStatus::Captured);
                assert_eq!(p.brand, CardBrand::Visa);
            }
            PaymentEntry::Tombstone { .. } | PaymentEntry::Refund(_) => {
                panic!("expected a payment")
            }
        }
        let raw = br#"{"v":1,"record":{"tombstone":{"at":"2026-01-01T00:00:00Z"}}}"#;
        assert!(matches!(
            decode::<PaymentEntry>(raw).unwrap(),
            PaymentEntry::Tombstone { .. }
        ));
        assert!(decode::<PaymentEntry>(br#"{"v":9,"record":null}"#).is_err());
    }

    #[test]
    fn emails_are_normalized() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        assert!(normalize_email("nope").is_err());
        assert!(normalize_email("@x").is_err());
        assert!(normalize_email("a@").is_err());
        assert!(normalize_email("a b@c").is_err());
    }
}
