//! The booking saga: reserve_seat -> redeem_miles -> authorize_payment ->
//! award_miles (compensatable: release seat, re-credit miles, void/refund,
//! reverse miles) -> confirm_booking (the pivot: capture and ticket; once
//! it succeeds the booking only moves forward) -> send_itinerary (retriable,
//! never compensated: the itinerary queued in the outbox). Version 4 adds
//! two durable waits (`waits`): `await_payment` after `reserve_seat` (a
//! held booking, paid later) and `await_confirmation` after
//! `authorize_payment` (a card whose issuer asks the customer to confirm).
//! Its parts: `prepare` (validation and the saga's data), `store`
//! (confirmed bookings), `outbox` and `consistency` (the participants
//! checked against ended sagas), `waits`.
//!
//! Input is validated before the saga starts (a message per field). The
//! card never enters the saga's persisted data: when the booking is
//! accepted it is tokenized at the payments participant
//! ([`Payments::tokenize`], kept encrypted at rest there), the saga keeps
//! only the token, and `authorize_payment` authorizes by token. A restart
//! between the start and the authorization resumes the booking.

use crate::catalog::Catalog;
use crate::faults::{BookingStep, Fault, Faults};
use crate::inventory::{HoldRequest, Inventory, InventoryError, LocalInventory};
use crate::loyalty::{AccountId, LocalLoyalty, Loyalty, LoyaltyError};
use crate::payments::{
    check_card, CardDetails, LocalPayments, PaymentError, Payments, TokenAuthorizeRequest,
    TokenizeRequest,
};
use crate::pricing::{price, PriceBreakdown};
use crate::types::{BookingRef, Cabin, FlightId, Money};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use saga_engine::{
    Engine, RetryPolicy, SagaDefinition, SagaId, Step, StepClass, StepContext, StepError,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

mod consistency;
mod outbox;
mod prepare;
mod round_trip;
mod store;
mod waits;

pub use crate::payments::{wipe_card, HeldCard};
pub use consistency::check_consistency;
pub use outbox::{itinerary, Outbox, OutboxError, OutboxMessage};
pub use prepare::*;
pub use round_trip::{
    return_key, ReturnLeg, ReturnSeat, OUTBOUND_FAILED, RESERVE_RETURN_SEAT_STEP,
    RETURN_LEG_PREFIX, SEAT_GROUP,
};
pub use store::*;
pub use waits::*;

/// The saga's definition name.
pub const BOOKING_SAGA: &str = "booking";
/// The saga's definition version. Version 2 added `redeem_miles` before
/// `authorize_payment`; version 3 made `confirm_booking` the pivot and
/// added `send_itinerary` after it; version 4 reserves the seats as a
/// parallel group of the outbound (`reserve_seat`) and the return leg
/// (`reserve_return_seat`, see [`SEAT_GROUP`]) and adds the waits
/// `await_payment` and `await_confirmation` ([`WAITS_VERSION`]). Earlier versions stay
/// registered (see [`booking_definitions`]) so that their sagas resume.
pub const BOOKING_SAGA_VERSION: u32 = 4;
/// The pay-with-miles step's name.
pub const REDEEM_MILES_STEP: &str = "redeem_miles";
/// The retriable step after the pivot that queues the itinerary.
pub const SEND_ITINERARY_STEP: &str = "send_itinerary";
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
    /// Date of birth, `YYYY-MM-DD`, as sent (optional in the JSON API).
    /// Only in a request: checked and sealed into
    /// [`BookingData::personal`] before the saga starts, so the saga's
    /// own passengers never carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<crate::personal::PersonalText>,
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
    /// Contact phone, `+` and 8 to 15 digits (spaces and dashes allowed),
    /// as sent (optional in the JSON API); sealed like the dates of birth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<crate::personal::PersonalText>,
    /// The card to charge (none for a hold).
    #[serde(default)]
    pub card: CardDetails,
    /// Hold the seats now and pay later ([`pay_held_booking`]) within the
    /// hold window; no card then. Left out of the JSON when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub hold: bool,
    /// Miles to pay part of the base fare with (needs `loyalty_id`); 0 for
    /// none. Left out of the JSON (and of the fingerprint) when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redeem_miles: u64,
    /// Failure injection for this booking only (wins over the global switches).
    #[serde(default)]
    pub faults: BTreeMap<BookingStep, Fault>,
    /// A round trip's return flight (with `return_date`); left out of the
    /// JSON (and of the fingerprint) for a one-way booking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_flight_id: Option<String>,
    /// The return flight's departure date (with `return_flight_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_date: Option<NaiveDate>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
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
    /// Token of the card at the payments participant.
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
    /// The passengers' dates of birth and the contact phone, sealed
    /// ([`crate::personal`]); `None` when none was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal: Option<crate::personal::SealedPersonal>,
    /// A round trip's return leg (`price` then covers both legs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_leg: Option<ReturnLeg>,
    /// Output of reserve_return_seat (version 4 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_seat: Option<ReturnSeat>,
    /// Held: the seats wait for a payment ([`AWAIT_PAYMENT_STEP`]).
    #[serde(default)]
    pub hold: bool,
    /// The customer confirmed the payment with their bank
    /// ([`AWAIT_CONFIRMATION_STEP`]): the pivot confirms the authorization
    /// before capturing it.
    #[serde(default)]
    pub customer_confirmed: bool,
    /// The paying card's issuer asks the customer to confirm (known from
    /// the card when it is given): without it, `await_confirmation` is
    /// passed by the automatic signal ([`resume_waits`] re-sends it).
    #[serde(default)]
    pub card_needs_confirmation: bool,
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

/// Everything the booking saga talks to.
#[derive(Clone)]
pub struct BookingServices {
    /// Flights and fares, replaceable whole while the server runs (take
    /// [`crate::live_catalog::LiveCatalog::current`] once per use).
    pub catalog: Arc<crate::live_catalog::LiveCatalog>,
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
    /// Promo codes and their uses.
    pub promos: Arc<crate::promo::PromoStore>,
    /// Messages to send (the itinerary after the pivot).
    pub outbox: Arc<Outbox>,
    /// How long the booking's waits last (version 4).
    pub waits: BookingWaits,
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
    /// Outbox tree.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

impl BookingServices {
    /// Every participant local, on its own trees of `db`; tokenized cards
    /// are sealed under a key of this process only (they do not survive a
    /// restart: use [`local_in`](Self::local_in) for a lasting database).
    pub fn local(db: &sled::Db, catalog: Arc<Catalog>) -> Result<Self, OpenError> {
        let personal = crate::personal::PersonalVault::ephemeral();
        Self::with_payments(db, catalog, LocalPayments::open(db)?, personal)
    }

    /// Every participant local, on its own trees of `db`, the card vault's
    /// key in `data_dir` (see [`LocalPayments::open_in`]), the personal
    /// details' key beside it ([`crate::personal::PERSONAL_KEY_FILE`]).
    pub fn local_in(
        db: &sled::Db,
        data_dir: &std::path::Path,
        catalog: Arc<Catalog>,
    ) -> Result<Self, OpenError> {
        let personal = crate::personal::PersonalVault::load_or_create(data_dir)
            .map_err(|e| BookingStoreError(e.to_string()))?;
        Self::with_payments(db, catalog, LocalPayments::open_in(db, data_dir)?, personal)
    }

    fn with_payments(
        db: &sled::Db,
        catalog: Arc<Catalog>,
        payments: LocalPayments,
        personal: crate::personal::PersonalVault,
    ) -> Result<Self, OpenError> {
        Ok(BookingServices {
            catalog: Arc::new(crate::live_catalog::LiveCatalog::new(catalog)),
            inventory: Arc::new(LocalInventory::open(db)?),
            payments: Arc::new(payments),
            loyalty: Arc::new(LocalLoyalty::open(db)?),
            bookings: Arc::new(BookingStore::open(db)?.sealing_with(personal)),
            faults: Arc::new(Faults::new()),
            promos: Arc::new(crate::promo::PromoStore::open(db)?),
            outbox: Arc::new(Outbox::open(db)?),
            waits: BookingWaits::default(),
        })
    }

    /// Every participant local, on its own trees of `db`, which is also the
    /// engine's database: the participants do not flush a step's effect
    /// themselves, the engine's flush after the step covers it (a crash
    /// before it leaves the step in doubt, retried under its key). Refused
    /// unless `engine` is the group commit of `db`
    /// ([`saga_engine::SledStore::durability`]).
    pub fn local_on_engine_db(
        db: &sled::Db,
        data_dir: &std::path::Path,
        catalog: Arc<Catalog>,
        engine: &saga_engine::store::Durability,
    ) -> Result<Self, OpenError> {
        Ok(BookingServices {
            catalog: Arc::new(crate::live_catalog::LiveCatalog::new(catalog)),
            inventory: Arc::new(LocalInventory::open(db)?.covered_by(engine)?),
            payments: Arc::new(LocalPayments::open_in(db, data_dir)?.covered_by(engine)?),
            loyalty: Arc::new(LocalLoyalty::open(db)?.covered_by(engine)?),
            bookings: Arc::new(BookingStore::open_in(db, data_dir)?.covered_by(engine)?),
            faults: Arc::new(Faults::new()),
            promos: Arc::new(crate::promo::PromoStore::open(db)?),
            outbox: Arc::new(Outbox::open(db)?.covered_by(engine)?),
            waits: BookingWaits::default(),
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
async fn forget_card_on_rejection<T>(
    s: &BookingServices,
    d: &BookingData,
    r: &Result<T, StepError>,
) {
    if let Err(StepError::Rejected(_)) = r {
        forget_card(s, d).await;
    }
}

/// Asks the payments participant to forget the booking's card. Best
/// effort: a card left behind is purged after [`crate::payments::CARD_TTL`].
async fn forget_card(s: &BookingServices, d: &BookingData) {
    if d.card_token.is_empty() {
        return;
    }
    if let Err(e) = s.payments.forget_card(&d.card_token).await {
        tracing::warn!(error = %e, "could not forget a card; it is purged later");
    }
}

/// The customer text of a booking whose card the participant does not
/// hold any more.
pub const CARD_NOT_HELD: &str =
    "card details are no longer held (the service restarted before payment); please book again";

/// Maps a participant error to a step error: retryable stays retryable,
/// anything else is a definite no.
/// Holds the booking's seats on one leg (`flight` on `date`) under the
/// step's key, through the step's fault injection; an error message starts
/// with `prefix`. A rejection forgets the card.
async fn hold_seats(
    s: &BookingServices,
    ctx: &StepContext,
    d: &BookingData,
    step: BookingStep,
    flight: FlightId,
    date: NaiveDate,
    prefix: &str,
) -> Result<crate::inventory::Hold, StepError> {
    let req = HoldRequest {
        flight,
        date,
        cabin: d.cabin,
        seats: d.passengers.len() as u32,
    };
    let inv = &s.inventory;
    let result = s
        .fault(d, step)
        .apply(step, ctx, async {
            inv.hold(&ctx.idempotency_key, &req)
                .await
                .map_err(|e| classify(e.is_retryable(), format!("{prefix}{e}")))
        })
        .await;
    forget_card_on_rejection(s, d, &result).await;
    result
}

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
struct SendItinerary(BookingServices);

#[async_trait::async_trait]
impl Step<BookingData> for ReserveSeat {
    async fn run(&self, ctx: &StepContext, d: &mut BookingData) -> Result<(), StepError> {
        let flight = d.flight_id.clone();
        hold_seats(
            &self.0,
            ctx,
            d,
            BookingStep::ReserveSeat,
            flight,
            d.date,
            "",
        )
        .await
        .map(|_| ())
    }
    async fn compensate(&self, ctx: &StepContext, d: &BookingData) -> Result<(), StepError> {
        self.0
            .inventory
            .release(&ctx.idempotency_key)
            .await
            .map_err(StepError::retryable)?;
        forget_card(&self.0, d).await;
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
            forget_card_on_rejection(&self.0, d, &taken).await;
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
        forget_card_on_rejection(&self.0, d, &result).await;
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
        let request = TokenAuthorizeRequest {
            customer_email: d.email.clone(),
            token: d.card_token.clone(),
            amount: d.charge(),
        };
        let payments = &self.0.payments;
        // The participant forgets the card once the authorization (or the
        // decline) is recorded; a retry after a lost reply finds the
        // payment by its key.
        let record = self
            .0
            .fault(d, BookingStep::AuthorizePayment)
            .apply(BookingStep::AuthorizePayment, ctx, async {
                let record = payments
                    .authorize_token(&ctx.idempotency_key, &request)
                    .await
                    .map_err(|e| match e {
                        PaymentError::UnknownToken | PaymentError::CardUnreadable { .. } => {
                            StepError::rejected(CARD_NOT_HELD)
                        }
                        e => classify(e.is_retryable(), e),
                    })?;
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
        forget_card_on_rejection(&self.0, d, &record).await;
        d.authorization_id = Some(record?.authorization_id);
        Ok(())
    }
    async fn compensate(&self, ctx: &StepContext, d: &BookingData) -> Result<(), StepError> {
        self.0
            .payments
            .void_or_refund(&ctx.idempotency_key)
            .await
            .map_err(StepError::retryable)?;
        forget_card(&self.0, d).await;
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
            personal: d.personal.clone(),
            return_leg: d.return_leg.clone(),
        };
        let confirmed = s
            .fault(d, BookingStep::ConfirmBooking)
            .apply(BookingStep::ConfirmBooking, ctx, async {
                if d.customer_confirmed {
                    // The customer's confirmation reaches the issuer first
                    // (idempotent: a retry finds it confirmed).
                    s.payments
                        .confirm_authorization(&key_of(ctx, BookingStep::AuthorizePayment))
                        .await
                        .map_err(|e| classify(e.is_retryable(), e))?;
                }
                s.payments
                    .capture(&key_of(ctx, BookingStep::AuthorizePayment))
                    .await
                    .map_err(|e| classify(e.is_retryable(), e))?;
                s.inventory
                    .confirm(&key_of(ctx, BookingStep::ReserveSeat))
                    .await
                    .map_err(|e| classify(e.is_retryable(), e))?;
                round_trip::confirm_return(s, ctx, d).await?;
                s.bookings
                    .confirm(record)
                    .await
                    .map_err(StepError::retryable)
            })
            .await?;
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

#[async_trait::async_trait]
impl Step<BookingData> for SendItinerary {
    /// Queues the itinerary once (a retry finds it queued).
    async fn run(&self, ctx: &StepContext, d: &mut BookingData) -> Result<(), StepError> {
        let Some(reference) = &d.booking_ref else {
            return Err(StepError::retryable("no booking reference yet"));
        };
        let message = itinerary(&ctx.saga_id, d, reference, &self.0.catalog.current());
        let queued = self
            .0
            .outbox
            .queue(message)
            .await
            .map_err(StepError::retryable)?;
        tracing::info!(booking_ref = %queued.booking_ref.0, "itinerary queued in the outbox");
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &BookingData) -> Result<(), StepError> {
        // Retriable: after the pivot, never compensated.
        Ok(())
    }
}

/// The booking saga over `services`: (reserve_seat | reserve_return_seat) -> redeem_miles ->
/// authorize_payment -> award_miles (compensatable) -> confirm_booking
/// (the pivot) -> send_itinerary (retriable).
pub fn booking_definition(services: &BookingServices) -> SagaDefinition<BookingData> {
    definition(services, BOOKING_SAGA_VERSION)
}

/// Every version of the booking saga, the current one first: register
/// them all so that sagas started by an earlier version resume with their
/// own steps.
pub fn booking_definitions(services: &BookingServices) -> Vec<SagaDefinition<BookingData>> {
    (1..=BOOKING_SAGA_VERSION)
        .rev()
        .map(|v| definition(services, v))
        .collect()
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
    let b = SagaDefinition::builder(BOOKING_SAGA, version)
        .default_retry(forward)
        .default_compensation_retry(compensation);
    let mut b = round_trip::seat_steps(b, services, version);
    if version >= WAITS_VERSION {
        b = waits::payment_wait(b, &services.waits);
    }
    if version >= 2 {
        b = b.step(REDEEM_MILES_STEP, RedeemMiles(services.clone()));
    }
    b = b.step(
        BookingStep::AuthorizePayment.as_str(),
        AuthorizePayment(services.clone()),
    );
    if version >= WAITS_VERSION {
        b = waits::confirmation_wait(b, &services.waits);
    }
    b = b.step(
        BookingStep::AwardMiles.as_str(),
        AwardMiles(services.clone()),
    );
    let confirm = ConfirmBooking(services.clone());
    if version >= 3 {
        // Past the capture there is no way back: an in-doubt capture is
        // parked for an operator, the itinerary is retried until queued.
        b = b
            .step_as(
                BookingStep::ConfirmBooking.as_str(),
                StepClass::Pivot,
                confirm,
            )
            // v4 on: a crash in the capture is retried 30 times, not 6,
            // before it is parked (each attempt a restart cut off counts).
            .retry(
                RetryPolicy::default()
                    .max_attempts(if version >= 4 { 30 } else { 6 })
                    .backoff(Duration::from_millis(100), Duration::from_secs(2))
                    .attempt_timeout(Some(Duration::from_secs(10))),
            )
            .step_as(
                SEND_ITINERARY_STEP,
                StepClass::Retriable,
                SendItinerary(services.clone()),
            )
            .retry(
                RetryPolicy::default()
                    .max_attempts(30)
                    .backoff(Duration::from_millis(200), Duration::from_secs(30))
                    .attempt_timeout(Some(Duration::from_secs(10))),
            );
    } else {
        b = b.step(BookingStep::ConfirmBooking.as_str(), confirm);
    }
    b.with(crate::search::declare)
        .build()
        .expect("the booking saga definition is valid")
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
            // A crash may have come between the start and its signals.
            waits::deliver_auto_signals(engine, &id, req.hold, &req.card).await?;
            Ok(id)
        } else {
            Err(BookingError::KeyReused { existing: id })
        };
    }
    let mut data = prepare_with(services, req, Utc::now().date_naive(), promo_code).await?;
    data.request_fingerprint = fp.clone();
    if !req.hold {
        data.card_token = tokenize(services, req, idempotency_key, &fp).await?;
    }
    let token = data.card_token.clone();
    let forget = || async {
        if let Err(e) = services.payments.forget_card(&token).await {
            tracing::warn!(error = %e, "could not forget a card; it is purged later");
        }
    };
    match engine
        .start(BOOKING_SAGA, &data, Some(idempotency_key))
        .await
    {
        Ok(id) => {
            waits::deliver_auto_signals(engine, &id, req.hold, &req.card).await?;
            Ok(id)
        }
        Err(saga_engine::Error::IdempotencyConflict { existing, .. }) => {
            // Raced with another start under the same key.
            forget().await;
            let rec = engine.status(&existing).await?;
            if same(&rec) {
                waits::deliver_auto_signals(engine, &existing, req.hold, &req.card).await?;
                Ok(existing)
            } else {
                Err(BookingError::KeyReused { existing })
            }
        }
        Err(e) => {
            forget().await;
            Err(e.into())
        }
    }
}

/// Tokenizes the request's card at the payments participant (durable
/// there before this returns), under a key derived from the booking's
/// idempotency key and request so that a repeat gets the same token.
async fn tokenize(
    services: &BookingServices,
    req: &BookingRequest,
    idempotency_key: &str,
    fingerprint: &str,
) -> Result<String, BookingError> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(idempotency_key.as_bytes());
    h.update([0]);
    h.update(fingerprint.as_bytes());
    let key: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let mut request = TokenizeRequest {
        card: bounded_card(&req.card),
    };
    let token = services
        .payments
        .tokenize(&format!("card:{key}"), &request)
        .await;
    wipe_card(&mut request.card);
    match token {
        Ok(t) => Ok(t.token),
        Err(PaymentError::InvalidCard { problem }) => Err(ValidationErrors(vec![FieldError {
            field: "card.number".into(),
            message: problem.to_string(),
        }])
        .into()),
        Err(e) => Err(BookingError::Unavailable(e.to_string())),
    }
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
