//! The booking saga: reserve_seat -> authorize_payment -> award_miles ->
//! confirm_booking, compensated by release seat, void/refund, reverse miles.
//!
//! Input is validated before the saga starts (a message per field). The
//! card number never enters the saga's persisted data: it waits in an
//! in-memory [`CardVault`] under a random token until authorization, so a
//! restart before authorization fails that booking (and compensates it)
//! instead of writing the card to disk.

use crate::catalog::Catalog;
use crate::faults::{BookingStep, Fault, Faults};
use crate::inventory::{HoldRequest, Inventory, InventoryError, LocalInventory};
use crate::loyalty::{AccountId, LocalLoyalty, Loyalty, LoyaltyError};
use crate::payments::{check_card, CardDetails, LocalPayments, PaymentError, Payments};
use crate::pricing::{price, PriceBreakdown};
use crate::types::{BookingRef, Cabin, FlightId, Money};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use saga_engine::{Engine, RetryPolicy, SagaDefinition, SagaId, Step, StepContext, StepError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The saga's definition name.
pub const BOOKING_SAGA: &str = "booking";
/// The saga's definition version. Version 2 added `redeem_miles` before
/// `authorize_payment`; version 1 stays registered (see
/// [`booking_definition_v1`]) so that its sagas resume.
pub const BOOKING_SAGA_VERSION: u32 = 2;
/// The pay-with-miles step's name.
pub const REDEEM_MILES_STEP: &str = "redeem_miles";
/// Most passengers on one booking.
pub const MAX_PASSENGERS: usize = 9;
/// How far ahead a flight can be booked.
pub const MAX_DAYS_AHEAD: i64 = 365;

/// A traveller on the booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passenger {
    /// Given name.
    pub first_name: String,
    /// Family name (used with the reference to find the booking).
    pub last_name: String,
}

/// What a customer asks to book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingRequest {
    /// The scheduled flight's id from the catalog.
    pub flight_id: String,
    /// Departure date; must fall on the flight's weekday.
    pub date: NaiveDate,
    /// Cabin; must be sold on the flight.
    pub cabin: Cabin,
    /// 1 to 9 passengers.
    pub passengers: Vec<Passenger>,
    /// Contact email (payment history is kept per email).
    pub email: String,
    /// Loyalty account number to credit, if any.
    #[serde(default)]
    pub loyalty_id: Option<String>,
    /// The card to charge.
    pub card: CardDetails,
    /// Miles to pay part of the base fare with (needs `loyalty_id`); 0 for
    /// none. Left out of the JSON (and of the fingerprint) when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redeem_miles: u64,
    /// Failure injection for this booking only (wins over the global switches).
    #[serde(default)]
    pub faults: BTreeMap<BookingStep, Fault>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One field's problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// JSON path of the field, e.g. `passengers[1].last_name`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Everything wrong with a request, one entry per field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("invalid booking: {}", .0.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; "))]
pub struct ValidationErrors(pub Vec<FieldError>);

/// Why a booking could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    /// The request is invalid; nothing was started.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// The idempotency key already started a booking with a different request.
    #[error("idempotency key already used by booking {existing} with a different request")]
    KeyReused {
        /// The booking that owns the key.
        existing: SagaId,
    },
    /// A participant could not be reached while validating (retry later).
    #[error("could not validate the booking now: {0}")]
    Unavailable(String),
    /// The engine refused (shutting down, storage failure).
    #[error(transparent)]
    Engine(#[from] saga_engine::Error),
}

/// The saga's data: the validated request (without the card number), the
/// price, and what each step produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingData {
    /// Format version.
    pub v: u32,
    /// SHA-256 (hex) of the whole request, card number and CVC included
    /// (hashed, never kept), to tell a replay from a conflicting reuse of
    /// the idempotency key. Records written before it was a hash hold a
    /// number, read as its decimal text (a replay of those is a reuse).
    #[serde(deserialize_with = "fingerprint_text")]
    pub request_fingerprint: String,
    /// The flight.
    pub flight_id: FlightId,
    /// Departure date.
    pub date: NaiveDate,
    /// Cabin.
    pub cabin: Cabin,
    /// Travellers.
    pub passengers: Vec<Passenger>,
    /// Contact email, lower case.
    pub email: String,
    /// Loyalty account to credit.
    pub loyalty_id: Option<AccountId>,
    /// Token of the card in the [`CardVault`].
    pub card_token: String,
    /// Card brand, for display.
    pub card_brand: String,
    /// Last four digits, for display.
    pub card_last4: String,
    /// The price; `price.total` is charged.
    pub price: PriceBreakdown,
    /// Per-booking failure injection.
    pub faults: BTreeMap<BookingStep, Fault>,
    /// Output of authorize_payment.
    pub authorization_id: Option<String>,
    /// Output of award_miles.
    pub miles_awarded: Option<u64>,
    /// Output of confirm_booking.
    pub booking_ref: Option<BookingRef>,
    /// Miles paying for part of the fare, priced when the booking was
    /// prepared; the card is charged `charge`.
    #[serde(default)]
    pub miles_payment: Option<crate::pricing::MilesPayment>,
    /// The promo code applied, priced when the booking was prepared; its
    /// use is taken by the `redeem_miles` step (the discounts step).
    #[serde(default)]
    pub promo: Option<crate::promo::PromoApplied>,
}

impl BookingData {
    /// What the card pays: the total, less the promo code's discount and
    /// the miles' value (miles are priced on what the code left).
    pub fn charge(&self) -> Money {
        match (&self.miles_payment, &self.promo) {
            (Some(m), _) => m.charge.clone(),
            (None, Some(p)) => crate::pricing::after_discount(&self.price, &p.discount).total,
            (None, None) => self.price.total.clone(),
        }
    }
}

/// Card details held in memory only, under random tokens, until the
/// payment step no longer needs them.
///
/// A card is forgotten as soon as its authorization is done (or refused),
/// when its booking compensates or fails to start, and in any case after
/// [`CARD_TTL`]; a forgotten card's number, CVC and holder name are
/// overwritten with zeros ([`zeroize`]) before the memory is freed, and so
/// is every copy handed out by [`CardVault::get`] once its caller drops it.
#[derive(Default)]
pub struct CardVault {
    cards: Mutex<HashMap<String, (HeldCard, std::time::Instant)>>,
}

/// How long a card may wait in the vault.
pub const CARD_TTL: Duration = Duration::from_secs(30 * 60);

/// Card input bounds, checked (after trimming) before a card is kept.
pub const MAX_CARD_NUMBER_CHARS: usize = 23;
/// The longest CVC accepted, in characters.
pub const MAX_CVC_CHARS: usize = 4;
/// The longest name on card accepted, in characters.
pub const MAX_HOLDER_NAME_CHARS: usize = 100;

/// A card that zeroes its secrets when dropped.
pub struct HeldCard(CardDetails);

impl HeldCard {
    /// Takes `card`; its secrets are zeroed when this value drops.
    pub fn new(card: CardDetails) -> Self {
        HeldCard(card)
    }
    /// The card.
    pub fn card(&self) -> &CardDetails {
        &self.0
    }
}

impl Drop for HeldCard {
    fn drop(&mut self) {
        wipe_card(&mut self.0);
    }
}

impl fmt::Debug for HeldCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Overwrites the card's number, CVC and holder name with zeros (the
/// strings end empty) and its expiry with 0.
pub fn wipe_card(card: &mut CardDetails) {
    use zeroize::Zeroize;
    card.number.zeroize();
    card.cvc.zeroize();
    card.holder_name.zeroize();
    card.exp_month.zeroize();
    card.exp_year.zeroize();
}

impl fmt::Debug for CardVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardVault").finish_non_exhaustive()
    }
}

impl CardVault {
    /// An empty vault.
    pub fn new() -> Self {
        Self::default()
    }
    /// Keeps `card`; returns its token.
    pub fn put(&self, card: CardDetails) -> String {
        let token = format!("tok_{:032x}", rand::random::<u128>());
        let mut cards = self.lock();
        cards.retain(|_, (_, at)| at.elapsed() < CARD_TTL);
        cards.insert(
            token.clone(),
            (HeldCard::new(card), std::time::Instant::now()),
        );
        token
    }
    /// A copy of the card under `token`, if still held; it zeroes itself
    /// when dropped.
    pub fn get(&self, token: &str) -> Option<HeldCard> {
        self.lock()
            .get(token)
            .filter(|(_, at)| at.elapsed() < CARD_TTL)
            .map(|(c, _)| HeldCard::new(c.card().clone()))
    }
    /// Forgets the card, zeroing it.
    pub fn remove(&self, token: &str) {
        let removed = self.lock().remove(token);
        drop(removed);
    }
    /// True while the card under `token` is held (for tests and metrics).
    pub fn holds(&self, token: &str) -> bool {
        self.lock().contains_key(token)
    }
    /// Cards held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }
    /// True when no card is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (HeldCard, std::time::Instant)>> {
        self.cards.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a confirmed booking stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    /// Ticketed.
    Confirmed,
    /// Undone after confirmation (the confirm step was in doubt and compensated).
    Cancelled,
}

/// A confirmed booking, found by its reference and a passenger's last name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingRecord {
    /// Format version.
    pub v: u32,
    /// The six-character reference.
    pub reference: BookingRef,
    /// The saga that made it.
    pub saga_id: SagaId,
    /// The flight.
    pub flight_id: FlightId,
    /// Departure date.
    pub date: NaiveDate,
    /// Cabin.
    pub cabin: Cabin,
    /// Travellers.
    pub passengers: Vec<Passenger>,
    /// Contact email.
    pub email: String,
    /// Amount charged.
    pub total: Money,
    /// Loyalty account credited.
    pub loyalty_id: Option<AccountId>,
    /// Miles awarded.
    pub miles: Option<u64>,
    /// Status.
    pub status: BookingStatus,
    /// When it was confirmed.
    pub created_at: DateTime<Utc>,
}

/// A storage failure of the booking store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("booking store: {0}")]
pub struct BookingStoreError(pub String);

impl From<sled::Error> for BookingStoreError {
    fn from(e: sled::Error) -> Self {
        BookingStoreError(e.to_string())
    }
}

/// Confirmed bookings, on the trees `bookings` (reference -> record) and
/// `bookings_by_saga` (saga id -> reference).
#[derive(Clone)]
pub struct BookingStore {
    by_ref: sled::Tree,
    by_saga: sled::Tree,
    flush: Arc<crate::payments::GroupFlush>,
}

impl fmt::Debug for BookingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BookingStore").finish_non_exhaustive()
    }
}

const REF_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

fn reference_for(saga: &SagaId, salt: u32) -> BookingRef {
    // FNV-1a of the saga id and a salt: the same saga gets the same
    // reference on every retry; a collision moves to the next salt.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in saga.as_str().bytes().chain(salt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let s = (0..6)
        .map(|i| REF_ALPHABET[((h >> (i * 5)) & 31) as usize] as char)
        .collect();
    BookingRef(s)
}

impl BookingStore {
    /// Opens the store's trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, BookingStoreError> {
        Ok(BookingStore {
            by_ref: db.open_tree("bookings")?,
            by_saga: db.open_tree("bookings_by_saga")?,
            flush: Arc::new(crate::payments::GroupFlush::new(db)),
        })
    }

    /// Records a confirmed booking for `record.saga_id` (its `reference` is
    /// chosen here) and returns it; a second call for the same saga returns
    /// the first record. Durable on return.
    ///
    /// Single-key writes only (sled's transactions take a process-wide lock
    /// once used): the reference is claimed with compare-and-swap, then the
    /// saga index is written. A crash between the two is repaired by the
    /// retry, which finds its own saga under the first candidate reference.
    pub async fn confirm(&self, record: BookingRecord) -> Result<BookingRecord, BookingStoreError> {
        if let Some(existing) = self.by_saga(&record.saga_id)? {
            return Ok(existing);
        }
        let mut record = record;
        let mut salt = 0;
        loop {
            record.reference = reference_for(&record.saga_id, salt);
            let bytes =
                serde_json::to_vec(&record).map_err(|e| BookingStoreError(e.to_string()))?;
            match self.by_ref.compare_and_swap(
                record.reference.0.as_bytes(),
                None as Option<&[u8]>,
                Some(bytes),
            )? {
                Ok(()) => break,
                Err(cas) => {
                    let current = cas.current.expect("a failed swap from nothing has a value");
                    let theirs = Self::decode(&current)?;
                    if theirs.saga_id == record.saga_id {
                        record = theirs;
                        break;
                    }
                    salt += 1;
                }
            }
        }
        self.by_saga
            .insert(record.saga_id.as_str(), record.reference.0.as_bytes())?;
        self.flush.durable().await.map_err(BookingStoreError)?;
        Ok(record)
    }

    /// Marks the saga's booking cancelled, if it has one. Durable on return.
    pub async fn cancel(&self, saga: &SagaId) -> Result<Option<BookingRecord>, BookingStoreError> {
        let Some(mut rec) = self.by_saga(saga)? else {
            return Ok(None);
        };
        if rec.status != BookingStatus::Cancelled {
            rec.status = BookingStatus::Cancelled;
            let bytes = serde_json::to_vec(&rec).map_err(|e| BookingStoreError(e.to_string()))?;
            self.by_ref.insert(rec.reference.0.as_bytes(), bytes)?;
            self.flush.durable().await.map_err(BookingStoreError)?;
        }
        Ok(Some(rec))
    }

    fn decode(bytes: &[u8]) -> Result<BookingRecord, BookingStoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| BookingStoreError(format!("corrupt booking: {e}")))
    }

    /// The booking with `reference` if one of its passengers has `last_name`
    /// (case-insensitive). Either wrong gives `None`: no hint which.
    pub fn get(
        &self,
        reference: &str,
        last_name: &str,
    ) -> Result<Option<BookingRecord>, BookingStoreError> {
        let Some(bytes) = self
            .by_ref
            .get(reference.trim().to_ascii_uppercase().as_bytes())?
        else {
            return Ok(None);
        };
        let rec = Self::decode(&bytes)?;
        let wanted = last_name.trim().to_lowercase();
        Ok(rec
            .passengers
            .iter()
            .any(|p| !wanted.is_empty() && p.last_name.trim().to_lowercase() == wanted)
            .then_some(rec))
    }

    /// The booking with `reference`, whoever asks: for callers that have
    /// authorised the request another way (the owning account).
    pub fn by_reference(
        &self,
        reference: &str,
    ) -> Result<Option<BookingRecord>, BookingStoreError> {
        match self
            .by_ref
            .get(reference.trim().to_ascii_uppercase().as_bytes())?
        {
            Some(bytes) => Ok(Some(Self::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The booking a saga made, if any.
    pub fn by_saga(&self, saga: &SagaId) -> Result<Option<BookingRecord>, BookingStoreError> {
        let Some(r) = self.by_saga.get(saga.as_str())? else {
            return Ok(None);
        };
        match self.by_ref.get(&r)? {
            Some(bytes) => Ok(Some(Self::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every booking (admin and consistency checks).
    pub fn all(&self) -> Result<Vec<BookingRecord>, BookingStoreError> {
        self.by_ref.iter().map(|kv| Self::decode(&kv?.1)).collect()
    }
}

/// Everything the booking saga talks to.
#[derive(Clone)]
pub struct BookingServices {
    /// Flights and fares.
    pub catalog: Arc<Catalog>,
    /// Seats.
    pub inventory: Arc<dyn Inventory>,
    /// Cards.
    pub payments: Arc<dyn Payments>,
    /// Miles.
    pub loyalty: Arc<dyn Loyalty>,
    /// Confirmed bookings.
    pub bookings: Arc<BookingStore>,
    /// Global failure injection.
    pub faults: Arc<Faults>,
    /// Cards awaiting authorization.
    pub cards: Arc<CardVault>,
    /// Promo codes and their uses.
    pub promos: Arc<crate::promo::PromoStore>,
}

impl fmt::Debug for BookingServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BookingServices").finish_non_exhaustive()
    }
}

/// Why local services could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Inventory trees.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// Payments trees.
    #[error(transparent)]
    Payments(#[from] PaymentError),
    /// Loyalty trees.
    #[error(transparent)]
    Loyalty(#[from] LoyaltyError),
    /// Booking trees.
    #[error(transparent)]
    Bookings(#[from] BookingStoreError),
    /// Promo code trees.
    #[error(transparent)]
    Promos(#[from] crate::promo::PromoError),
}

impl BookingServices {
    /// Every participant local, on its own trees of `db`.
    pub fn local(db: &sled::Db, catalog: Arc<Catalog>) -> Result<Self, OpenError> {
        Ok(BookingServices {
            catalog,
            inventory: Arc::new(LocalInventory::open(db)?),
            payments: Arc::new(LocalPayments::open(db)?),
            loyalty: Arc::new(LocalLoyalty::open(db)?),
            bookings: Arc::new(BookingStore::open(db)?),
            faults: Arc::new(Faults::new()),
            cards: Arc::new(CardVault::new()),
            promos: Arc::new(crate::promo::PromoStore::open(db)?),
        })
    }

    fn fault(&self, data: &BookingData, step: BookingStep) -> Fault {
        data.faults
            .get(&step)
            .copied()
            .filter(|f| *f != Fault::None)
            .unwrap_or_else(|| self.faults.get(step))
    }
}

/// Once a step before the capture says no, the saga only compensates from
/// there: the card is not needed any more.
fn forget_card_on_rejection<T>(s: &BookingServices, d: &BookingData, r: &Result<T, StepError>) {
    if let Err(StepError::Rejected(_)) = r {
        s.cards.remove(&d.card_token);
    }
}

/// Maps a participant error to a step error: retryable stays retryable,
/// anything else is a definite no.
fn classify(retryable: bool, message: impl fmt::Display) -> StepError {
    if retryable {
        StepError::retryable(message)
    } else {
        StepError::rejected(message)
    }
}

fn key_of(ctx: &StepContext, step: BookingStep) -> String {
    format!("{}:{}", ctx.saga_id, step.as_str())
}

struct ReserveSeat(BookingServices);
struct RedeemMiles(BookingServices);
struct AuthorizePayment(BookingServices);
struct AwardMiles(BookingServices);
struct ConfirmBooking(BookingServices);

#[async_trait::async_trait]
impl Step<BookingData> for ReserveSeat {
    async fn run(&self, ctx: &StepContext, d: &mut BookingData) -> Result<(), StepError> {
        let req = HoldRequest {
            flight: d.flight_id.clone(),
            date: d.date,
            cabin: d.cabin,
            seats: d.passengers.len() as u32,
        };
        let inv = &self.0.inventory;
        let result = self
            .0
            .fault(d, BookingStep::ReserveSeat)
            .apply(BookingStep::ReserveSeat, ctx, async {
                inv.hold(&ctx.idempotency_key, &req)
                    .await
                    .map_err(|e| classify(e.is_retryable(), e))
            })
            .await;
        forget_card_on_rejection(&self.0, d, &result);
        result.map(|_| ())
    }
    async fn compensate(&self, ctx: &StepContext, d: &BookingData) -> Result<(), StepError> {
        self.0
            .inventory
            .release(&ctx.idempotency_key)
            .await
            .map_err(StepError::retryable)?;
        self.0.cards.remove(&d.card_token);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Step<BookingData> for RedeemMiles {
    /// The discounts before authorization: the promo code's use (under
    /// `{key}:promo`), then the miles.
    async fn run(&self, ctx: &StepContext, d: &mut BookingData) -> Result<(), StepError> {
        let promo_key = format!("{}:promo", ctx.idempotency_key);
        if let Some(p) = &d.promo {
            let taken = self
                .0
                .promos
                .take(&promo_key, &p.code, Utc::now())
                .await
                .map_err(|e| classify(e.is_retryable(), e));
            forget_card_on_rejection(&self.0, d, &taken);
            taken?;
        }
        let (Some(m), Some(account)) = (&d.miles_payment, &d.loyalty_id) else {
            return Ok(());
        };
        let result = self
            .0
            .loyalty
            .redeem(&ctx.idempotency_key, account, m.miles)
            .await
            .map_err(|e| classify(e.is_retryable(), e));
        if let (Err(StepError::Rejected(_)), Some(p)) = (&result, &d.promo) {
            // A rejected step is not compensated: give the code's use back here.
            self.0
                .promos
                .release(&promo_key, &p.code)
                .await
                .map_err(StepError::retryable)?;
        }
        forget_card_on_rejection(&self.0, d, &result);
        result.map(|_| ())
    }
    /// Credits the miles back (a redemption's reverse adds them to the
    /// balance; qualifying miles, and so the tier, were never touched).
    async fn compensate(&self, ctx: &StepContext, d: &BookingData) -> Result<(), StepError> {
        if d.miles_payment.is_some() {
            self.0
                .loyalty
                .reverse(&ctx.idempotency_key)
                .await
                .map_err(StepError::retryable)?;
        }
        if let Some(p) = &d.promo {
            self.0
                .promos
                .release(&format!("{}:promo", ctx.idempotency_key), &p.code)
                .await
                .map_err(StepError::retryable)?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Step<BookingData> for AuthorizePayment {
    async fn run(&self, ctx: &StepContext, d: &mut BookingData) -> Result<(), StepError> {
        let Some(card) = self.0.cards.get(&d.card_token) else {
            // The card is kept in memory only; after a restart it is gone.
            // If an earlier attempt got through, the payment exists: use it.
            if let Ok(crate::payments::PaymentLookup::Payment(p)) =
                self.0.payments.get(&ctx.idempotency_key).await
            {
                if p.status == crate::payments::PaymentStatus::Authorized {
                    d.authorization_id = Some(p.authorization_id);
                    return Ok(());
                }
            }
            return Err(StepError::rejected(
                "card details are no longer held (the service restarted before payment); please book again",
            ));
        };
        let mut request = crate::payments::AuthorizeRequest {
            customer_email: d.email.clone(),
            card: card.card().clone(),
            amount: d.charge(),
        };
        drop(card);
        let payments = &self.0.payments;
        let result = self
            .0
            .fault(d, BookingStep::AuthorizePayment)
            .apply(BookingStep::AuthorizePayment, ctx, async {
                let record = payments
                    .authorize(&ctx.idempotency_key, &request)
                    .await
                    .map_err(|e| classify(e.is_retryable(), e))?;
                if record.status == crate::payments::PaymentStatus::Declined {
                    let reason = record
                        .decline_reason
                        .map(|r| r.message().to_string())
                        .unwrap_or_else(|| "declined".into());
                    return Err(StepError::rejected(format!("payment declined: {reason}")));
                }
                Ok(record)
            })
            .await;
        wipe_card(&mut request.card);
        // Authorized (or refused): the card is not needed any more. A retry
        // after a lost reply finds the payment by its key instead.
        if matches!(result, Ok(_) | Err(StepError::Rejected(_))) {
            self.0.cards.remove(&d.card_token);
        }
        d.authorization_id = Some(result?.authorization_id);
        Ok(())
    }
    async fn compensate(&self, ctx: &StepContext, d: &BookingData) -> Result<(), StepError> {
        self.0
            .payments
            .void_or_refund(&ctx.idempotency_key)
            .await
            .map_err(StepError::retryable)?;
        self.0.cards.remove(&d.card_token);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Step<BookingData> for AwardMiles {
    async fn run(&self, ctx: &StepContext, d: &mut BookingData) -> Result<(), StepError> {
        let loyalty = &self.0.loyalty;
        let account = d.loyalty_id.clone();
        // Miles are earned on what the card paid.
        let total = d.charge();
        let miles = self
            .0
            .fault(d, BookingStep::AwardMiles)
            .apply(BookingStep::AwardMiles, ctx, async {
                match &account {
                    None => Ok(None),
                    Some(id) => loyalty
                        .award(&ctx.idempotency_key, id, &total)
                        .await
                        .map(|e| Some(e.miles))
                        .map_err(|e| classify(e.is_retryable(), e)),
                }
            })
            .await?;
        d.miles_awarded = miles;
        Ok(())
    }
    async fn compensate(&self, ctx: &StepContext, d: &BookingData) -> Result<(), StepError> {
        if d.loyalty_id.is_some() {
            self.0
                .loyalty
                .reverse(&ctx.idempotency_key)
                .await
                .map_err(StepError::retryable)?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Step<BookingData> for ConfirmBooking {
    async fn run(&self, ctx: &StepContext, d: &mut BookingData) -> Result<(), StepError> {
        let s = &self.0;
        let record = BookingRecord {
            v: 1,
            reference: BookingRef(String::new()),
            saga_id: ctx.saga_id.clone(),
            flight_id: d.flight_id.clone(),
            date: d.date,
            cabin: d.cabin,
            passengers: d.passengers.clone(),
            email: d.email.clone(),
            total: d.charge(),
            loyalty_id: d.loyalty_id.clone(),
            miles: d.miles_awarded,
            status: BookingStatus::Confirmed,
            created_at: Utc::now(),
        };
        let confirmed = s
            .fault(d, BookingStep::ConfirmBooking)
            .apply(BookingStep::ConfirmBooking, ctx, async {
                s.payments
                    .capture(&key_of(ctx, BookingStep::AuthorizePayment))
                    .await
                    .map_err(|e| classify(e.is_retryable(), e))?;
                s.inventory
                    .confirm(&key_of(ctx, BookingStep::ReserveSeat))
                    .await
                    .map_err(|e| classify(e.is_retryable(), e))?;
                s.bookings
                    .confirm(record)
                    .await
                    .map_err(StepError::retryable)
            })
            .await?;
        s.cards.remove(&d.card_token);
        d.booking_ref = Some(confirmed.reference);
        Ok(())
    }
    async fn compensate(&self, ctx: &StepContext, _: &BookingData) -> Result<(), StepError> {
        // Seats and payment are undone by their own steps' compensations
        // (release works on confirmed seats, refund on captured payments);
        // here only the booking record is withdrawn.
        self.0
            .bookings
            .cancel(&ctx.saga_id)
            .await
            .map_err(StepError::retryable)?;
        Ok(())
    }
}

/// The booking saga over `services`: reserve_seat -> redeem_miles ->
/// authorize_payment -> award_miles -> confirm_booking.
pub fn booking_definition(services: &BookingServices) -> SagaDefinition<BookingData> {
    definition(services, BOOKING_SAGA_VERSION)
}

/// Version 1 of the booking saga (no `redeem_miles`), registered beside the
/// current one so that sagas it started resume with their own steps.
pub fn booking_definition_v1(services: &BookingServices) -> SagaDefinition<BookingData> {
    definition(services, 1)
}

fn definition(services: &BookingServices, version: u32) -> SagaDefinition<BookingData> {
    let forward = RetryPolicy::default()
        .max_attempts(6)
        .backoff(Duration::from_millis(100), Duration::from_secs(2))
        .attempt_timeout(Some(Duration::from_secs(10)));
    let compensation = RetryPolicy::default()
        .max_attempts(20)
        .backoff(Duration::from_millis(200), Duration::from_secs(10))
        .attempt_timeout(Some(Duration::from_secs(10)));
    let mut b = SagaDefinition::builder(BOOKING_SAGA, version)
        .default_retry(forward)
        .default_compensation_retry(compensation)
        .step(
            BookingStep::ReserveSeat.as_str(),
            ReserveSeat(services.clone()),
        );
    if version >= 2 {
        b = b.step(REDEEM_MILES_STEP, RedeemMiles(services.clone()));
    }
    b.step(
        BookingStep::AuthorizePayment.as_str(),
        AuthorizePayment(services.clone()),
    )
    .step(
        BookingStep::AwardMiles.as_str(),
        AwardMiles(services.clone()),
    )
    .step(
        BookingStep::ConfirmBooking.as_str(),
        ConfirmBooking(services.clone()),
    )
    .build()
    .expect("the booking saga definition is valid")
}

/// The card as it will be kept: number, CVC and holder name trimmed.
fn bounded_card(card: &CardDetails) -> CardDetails {
    CardDetails {
        number: card.number.trim().to_string(),
        exp_month: card.exp_month,
        exp_year: card.exp_year,
        cvc: card.cvc.trim().to_string(),
        holder_name: card.holder_name.trim().to_string(),
    }
}

/// The length and character bounds of a trimmed card, one problem per
/// field at most; the messages never quote the value.
fn card_bounds_problems(card: &CardDetails) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if card.number.is_empty() || card.number.chars().count() > MAX_CARD_NUMBER_CHARS {
        out.push((
            "card.number",
            "card number must be 12 to 19 digits (at most 23 characters with spaces or dashes)",
        ));
    }
    if card.cvc.chars().count() > MAX_CVC_CHARS {
        out.push(("card.cvc", "security code must be 3 or 4 digits"));
    }
    if card.holder_name.is_empty()
        || card.holder_name.chars().count() > MAX_HOLDER_NAME_CHARS
        || card.holder_name.chars().any(char::is_control)
    {
        out.push((
            "card.holder_name",
            "name on card must be 1 to 100 characters, without control characters",
        ));
    }
    out
}

fn name_ok(s: &str) -> bool {
    let t = s.trim();
    !t.is_empty()
        && t.chars().count() <= 50
        && t.chars()
            .all(|c| c.is_alphabetic() || c == ' ' || c == '-' || c == '\'' || c == '.')
}

fn email_ok(s: &str) -> bool {
    let s = s.trim();
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
}

/// The SHA-256, in hex, of the whole request (keys in a fixed order), the
/// card's number and CVC included: a different card with the same last four
/// digits is a different request. Only the hash is kept.
pub fn request_fingerprint(req: &BookingRequest) -> String {
    use sha2::{Digest, Sha256};
    // Through `Value`, whose maps are sorted, so that the bytes are stable.
    let v = serde_json::to_value(req).unwrap_or_default();
    let bytes = serde_json::to_vec(&v).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(b"booking-request-v2\0");
    h.update(&bytes);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a fingerprint written as text, or as a number by older versions.
fn fingerprint_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Text(String),
        Number(u64),
    }
    Ok(match Stored::deserialize(d)? {
        Stored::Text(t) => t,
        Stored::Number(n) => n.to_string(),
    })
}

/// Validates `req` against the catalog and participants (as of `today`) and
/// prices it. Every problem is reported, one per field; on success the card
/// is put in the vault and the saga's data is returned.
pub async fn prepare(
    services: &BookingServices,
    req: &BookingRequest,
    today: NaiveDate,
) -> Result<BookingData, BookingError> {
    prepare_with(services, req, today, None).await
}

/// [`prepare`] with a promo code: its discount comes off the base fare
/// first, then miles are priced on what is left (field `promo_code` when
/// it cannot be used).
pub async fn prepare_with(
    services: &BookingServices,
    req: &BookingRequest,
    today: NaiveDate,
    promo_code: Option<&str>,
) -> Result<BookingData, BookingError> {
    let mut errors = Vec::new();
    let mut err = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.to_string(),
            message,
        })
    };
    let flight_id = FlightId(req.flight_id.trim().to_string());
    let flight = services.catalog.flight(&flight_id);
    let mut fare = None;
    match flight {
        None => err(
            "flight_id",
            format!("no flight {:?} in the schedule", req.flight_id),
        ),
        Some(f) => {
            if req.date.weekday() != f.weekday {
                err(
                    "date",
                    format!(
                        "flight {} operates on {:?}s, {} is a {:?}",
                        f.flight_no,
                        f.weekday,
                        req.date,
                        req.date.weekday()
                    ),
                );
            }
            match f.fare(req.cabin) {
                None => err(
                    "cabin",
                    format!("{} is not sold on flight {}", req.cabin, f.flight_no),
                ),
                Some(m) => fare = Some(m.clone()),
            }
        }
    }
    if req.date < today {
        err("date", format!("{} is in the past", req.date));
    } else if (req.date - today).num_days() > MAX_DAYS_AHEAD {
        err("date", format!("bookings open {MAX_DAYS_AHEAD} days ahead"));
    }
    if req.passengers.is_empty() || req.passengers.len() > MAX_PASSENGERS {
        err(
            "passengers",
            format!(
                "1 to {MAX_PASSENGERS} passengers, got {}",
                req.passengers.len()
            ),
        );
    }
    for (i, p) in req.passengers.iter().enumerate().take(MAX_PASSENGERS) {
        if !name_ok(&p.first_name) {
            err(
                &format!("passengers[{i}].first_name"),
                "1 to 50 letters, spaces, hyphens or apostrophes".into(),
            );
        }
        if !name_ok(&p.last_name) {
            err(
                &format!("passengers[{i}].last_name"),
                "1 to 50 letters, spaces, hyphens or apostrophes".into(),
            );
        }
    }
    if !email_ok(&req.email) {
        err("email", "not a valid email address".into());
    }
    // Bounded and trimmed before anything else looks at it; the messages
    // never quote what was sent.
    let held = HeldCard::new(bounded_card(&req.card));
    let mut card_ok = true;
    for (field, message) in card_bounds_problems(held.card()) {
        card_ok = false;
        err(field, message.to_string());
    }
    let checked = match check_card(held.card(), today) {
        _ if !card_ok => None,
        Ok(c) => Some(c),
        Err(problem) => {
            let field = match problem {
                crate::payments::CardProblem::ExpiryMonth { .. }
                | crate::payments::CardProblem::ExpiryYear { .. }
                | crate::payments::CardProblem::Expired { .. } => "card.expiry",
                crate::payments::CardProblem::Cvc => "card.cvc",
                crate::payments::CardProblem::HolderName => "card.holder_name",
                _ => "card.number",
            };
            err(field, problem.to_string());
            None
        }
    };
    for (step, f) in &req.faults {
        if let Err(e) = f.validate() {
            err(&format!("faults.{step}"), e);
        }
    }
    let mut loyalty_id = None;
    if let Some(id) = req
        .loyalty_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match services.loyalty.account(&AccountId(id.to_string())).await {
            Ok(a) => loyalty_id = Some(a.id),
            Err(e) if e.is_retryable() => return Err(BookingError::Unavailable(e.to_string())),
            Err(_) => err("loyalty_id", format!("no loyalty account {id}")),
        }
    }
    let loyalty_balance = match &loyalty_id {
        Some(id) if req.redeem_miles > 0 => match services.loyalty.account(id).await {
            Ok(a) => Some(a.balance),
            Err(e) if e.is_retryable() => return Err(BookingError::Unavailable(e.to_string())),
            Err(_) => None,
        },
        _ => None,
    };
    if req.redeem_miles > 0 {
        match (&loyalty_id, loyalty_balance) {
            (None, _) => err(
                "redeem_miles",
                "paying with miles needs a loyalty_id".into(),
            ),
            (Some(_), Some(balance)) if balance < req.redeem_miles => err(
                "redeem_miles",
                format!(
                    "the account has {balance} miles, {} asked",
                    req.redeem_miles
                ),
            ),
            _ => {}
        }
    }
    let price = match fare {
        Some(fare) if !req.passengers.is_empty() && req.passengers.len() <= MAX_PASSENGERS => {
            match price(&fare, req.passengers.len() as u32) {
                Ok(p) => Some(p),
                Err(e) => {
                    err("passengers", e.to_string());
                    None
                }
            }
        }
        _ => None,
    };
    let promo = match (&price, promo_code.map(str::trim).filter(|c| !c.is_empty())) {
        (Some(p), Some(code)) => match services.promos.quote(code, p, Utc::now()) {
            Ok(applied) => Some(applied),
            Err(e) if e.is_retryable() => return Err(BookingError::Unavailable(e.to_string())),
            Err(e) => {
                err("promo_code", e.to_string());
                None
            }
        },
        _ => None,
    };
    let after_promo = match (&price, &promo) {
        (Some(p), Some(applied)) => Some(crate::pricing::after_discount(p, &applied.discount)),
        (p, _) => p.clone(),
    };
    let miles_payment = match (&after_promo, req.redeem_miles) {
        (Some(p), miles) if miles > 0 => match crate::pricing::pay_with_miles(p, miles) {
            Ok(m) => Some(m),
            Err(e) => {
                err("redeem_miles", e.to_string());
                None
            }
        },
        _ => None,
    };
    match (errors.is_empty(), price, checked) {
        (true, Some(price), Some(card)) => Ok(BookingData {
            v: 1,
            request_fingerprint: request_fingerprint(req),
            flight_id,
            date: req.date,
            cabin: req.cabin,
            passengers: req
                .passengers
                .iter()
                .map(|p| Passenger {
                    first_name: p.first_name.trim().to_string(),
                    last_name: p.last_name.trim().to_string(),
                })
                .collect(),
            email: req.email.trim().to_lowercase(),
            loyalty_id,
            card_token: services.cards.put(held.card().clone()),
            card_brand: card.brand.as_str().to_string(),
            card_last4: card.last4,
            price,
            faults: req.faults.clone(),
            authorization_id: None,
            miles_awarded: None,
            booking_ref: None,
            miles_payment,
            promo,
        }),
        _ => Err(ValidationErrors(errors).into()),
    }
}

/// Validates and starts a booking under `idempotency_key`. The same key
/// with the same request returns the same booking; with a different
/// request, [`BookingError::KeyReused`].
pub async fn start_booking(
    engine: &Engine,
    services: &BookingServices,
    req: &BookingRequest,
    idempotency_key: &str,
) -> Result<SagaId, BookingError> {
    start_booking_with(engine, services, req, idempotency_key, None).await
}

/// [`start_booking`] with a promo code (part of the request: the same key
/// with another code is a reuse).
pub async fn start_booking_with(
    engine: &Engine,
    services: &BookingServices,
    req: &BookingRequest,
    idempotency_key: &str,
    promo_code: Option<&str>,
) -> Result<SagaId, BookingError> {
    let promo_code = promo_code.map(str::trim).filter(|c| !c.is_empty());
    let fp = match promo_code {
        None => request_fingerprint(req),
        Some(code) => {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(request_fingerprint(req).as_bytes());
            h.update(b"\0promo:");
            h.update(crate::promo::normal_code(code).as_bytes());
            h.finalize().iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    let same = |rec: &saga_engine::SagaRecord| {
        rec.data_as::<BookingData>()
            .map(|d| d.request_fingerprint == fp)
            .unwrap_or(false)
    };
    if let Some(id) = engine.find_by_key(idempotency_key).await? {
        let rec = engine.status(&id).await?;
        return if same(&rec) {
            // The read may see a start whose flush is under way, or failed:
            // acknowledge it only once it is durable.
            if !saga_engine::sabotage::active(saga_engine::sabotage::REPLAY_BEFORE_DURABLE) {
                engine.durable().await?;
            }
            Ok(id)
        } else {
            Err(BookingError::KeyReused { existing: id })
        };
    }
    let mut data = prepare_with(services, req, Utc::now().date_naive(), promo_code).await?;
    data.request_fingerprint = fp.clone();
    let token = data.card_token.clone();
    match engine
        .start(BOOKING_SAGA, &data, Some(idempotency_key))
        .await
    {
        Ok(id) => Ok(id),
        Err(saga_engine::Error::IdempotencyConflict { existing, .. }) => {
            // Raced with another start under the same key.
            services.cards.remove(&token);
            let rec = engine.status(&existing).await?;
            if same(&rec) {
                Ok(existing)
            } else {
                Err(BookingError::KeyReused { existing })
            }
        }
        Err(e) => {
            services.cards.remove(&token);
            Err(e.into())
        }
    }
}

/// Checks the participants against the sagas that ended: for each, seats,
/// payment and miles must match its outcome. Returns the violations found.
pub async fn check_consistency(
    engine: &Engine,
    services: &BookingServices,
) -> Result<Vec<String>, BookingError> {
    use crate::inventory::{HoldLookup, HoldState};
    use crate::loyalty::{EntryLookup, EntryState};
    use crate::payments::{PaymentLookup, PaymentStatus};
    use saga_engine::SagaStatus;
    let mut problems = Vec::new();
    for rec in engine.list(None, usize::MAX).await? {
        if rec.definition != BOOKING_SAGA {
            continue;
        }
        let Ok(d) = rec.data_as::<BookingData>() else {
            problems.push(format!("saga {}: data does not decode", rec.id));
            continue;
        };
        let key = |s: BookingStep| format!("{}:{}", rec.id, s.as_str());
        let hold = services
            .inventory
            .hold_status(&key(BookingStep::ReserveSeat))
            .await;
        let pay = services
            .payments
            .get(&key(BookingStep::AuthorizePayment))
            .await;
        let booking = services.bookings.by_saga(&rec.id).ok().flatten();
        let cancelled = matches!(&booking, Some(b) if b.status == BookingStatus::Cancelled);
        let miles = services.loyalty.entry(&key(BookingStep::AwardMiles)).await;
        let redeemed = services
            .loyalty
            .entry(&format!("{}:{REDEEM_MILES_STEP}", rec.id))
            .await;
        let redeemed_applied =
            matches!(&redeemed, Ok(EntryLookup::Entry(e)) if e.state == EntryState::Applied);
        let wants_redemption = d.miles_payment.is_some();
        let promo_applied = services
            .promos
            .applied(&format!("{}:{REDEEM_MILES_STEP}:promo", rec.id))
            .unwrap_or(false);
        if rec.status() == SagaStatus::Completed && d.promo.is_some() != promo_applied {
            problems.push(format!(
                "saga {} completed but its promo use is {promo_applied}",
                rec.id
            ));
        }
        if rec.status() == SagaStatus::Compensated && promo_applied {
            problems.push(format!(
                "saga {} compensated but its promo code use was not released",
                rec.id
            ));
        }
        if rec.status() == SagaStatus::Completed
            && !cancelled
            && wants_redemption != redeemed_applied
        {
            problems.push(format!(
                "saga {} completed but redemption is {redeemed:?}",
                rec.id
            ));
        }
        if (rec.status() == SagaStatus::Compensated
            || (rec.status() == SagaStatus::Completed && cancelled))
            && redeemed_applied
        {
            problems.push(format!(
                "saga {} undone but its miles were not credited back",
                rec.id
            ));
        }
        let seats = d.passengers.len() as u32;
        match rec.status() {
            // Cancelled after confirmation by a cancellation saga: seats
            // back, the payment refunded (the refund's amount is checked by
            // `check_cancellations`), miles reversed.
            SagaStatus::Completed if cancelled => {
                if !matches!(&hold, Ok(HoldLookup::Hold(h)) if h.state == HoldState::Released) {
                    problems.push(format!("saga {} cancelled but hold is {hold:?}", rec.id));
                }
                if !matches!(&pay, Ok(PaymentLookup::Payment(p)) if p.status == PaymentStatus::Refunded)
                {
                    problems.push(format!("saga {} cancelled but payment is {pay:?}", rec.id));
                }
                if matches!(&miles, Ok(EntryLookup::Entry(e)) if e.state == EntryState::Applied) {
                    problems.push(format!("saga {} cancelled but miles are {miles:?}", rec.id));
                }
            }
            SagaStatus::Completed => {
                if !matches!(&hold, Ok(HoldLookup::Hold(h)) if h.state == HoldState::Confirmed && h.seats == seats)
                {
                    problems.push(format!("saga {} completed but hold is {hold:?}", rec.id));
                }
                if !matches!(&pay, Ok(PaymentLookup::Payment(p)) if p.status == PaymentStatus::Captured && p.amount == d.charge())
                {
                    problems.push(format!("saga {} completed but payment is {pay:?}", rec.id));
                }
                if d.loyalty_id.is_some()
                    && !matches!(&miles, Ok(EntryLookup::Entry(e)) if e.state == EntryState::Applied)
                {
                    problems.push(format!("saga {} completed but miles are {miles:?}", rec.id));
                }
                if !matches!(&booking, Some(b) if b.status == BookingStatus::Confirmed) {
                    problems.push(format!(
                        "saga {} completed but booking is {booking:?}",
                        rec.id
                    ));
                }
            }
            SagaStatus::Compensated => {
                if matches!(&hold, Ok(HoldLookup::Hold(h)) if h.state != HoldState::Released) {
                    problems.push(format!("saga {} compensated but hold is {hold:?}", rec.id));
                }
                if matches!(&pay, Ok(PaymentLookup::Payment(p)) if matches!(p.status, PaymentStatus::Authorized | PaymentStatus::Captured))
                {
                    problems.push(format!(
                        "saga {} compensated but payment is {pay:?}",
                        rec.id
                    ));
                }
                if matches!(&miles, Ok(EntryLookup::Entry(e)) if e.state == EntryState::Applied) {
                    problems.push(format!(
                        "saga {} compensated but miles are {miles:?}",
                        rec.id
                    ));
                }
                if matches!(&booking, Some(b) if b.status == BookingStatus::Confirmed) {
                    problems.push(format!(
                        "saga {} compensated but booking is confirmed",
                        rec.id
                    ));
                }
            }
            _ => {}
        }
    }
    problems.extend(crate::cancellation::check_cancellations(engine, services).await?);
    Ok(problems)
}

#[cfg(test)]
mod card_tests {
    use super::*;

    fn card() -> CardDetails {
        CardDetails {
            number: "4242 4242 4242 4242".into(),
            exp_month: 12,
            exp_year: 2035,
            cvc: "123".into(),
            holder_name: "Ada Lovelace".into(),
        }
    }

    #[test]
    fn wiping_a_card_leaves_no_secret() {
        let mut c = card();
        wipe_card(&mut c);
        assert!(c.number.is_empty() && c.cvc.is_empty() && c.holder_name.is_empty());
        assert_eq!((c.exp_month, c.exp_year), (0, 0));
    }

    #[test]
    fn the_vault_forgets_on_remove() {
        let vault = CardVault::new();
        let token = vault.put(card());
        assert!(vault.holds(&token));
        assert_eq!(vault.get(&token).unwrap().card().cvc, "123");
        vault.remove(&token);
        assert!(!vault.holds(&token) && vault.is_empty());
        assert!(vault.get(&token).is_none());
    }

    #[test]
    fn card_bounds_name_each_field_once() {
        let mut c = bounded_card(&CardDetails {
            number: format!("  {}  ", "4".repeat(40)),
            cvc: " 12345 ".into(),
            holder_name: "x".repeat(101),
            ..card()
        });
        let fields: Vec<_> = card_bounds_problems(&c).into_iter().map(|p| p.0).collect();
        assert_eq!(fields, ["card.number", "card.cvc", "card.holder_name"]);
        c = bounded_card(&CardDetails {
            cvc: " 123 ".into(),
            ..card()
        });
        assert_eq!(c.cvc, "123");
        assert!(card_bounds_problems(&c).is_empty());
    }
}
