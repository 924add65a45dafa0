//! Seat inventory: how many seats each flight has per date and cabin, and
//! the holds the booking saga places, confirms and releases on them.
//!
//! The [`Inventory`] trait is what the saga calls; [`LocalInventory`] keeps
//! it on sled trees named `inventory_*`, and a remote client can implement the
//! same trait over HTTP. Every mutation is keyed by the saga's idempotency
//! key: repeating it returns the first result (refusals included), releasing
//! a key whose hold never arrived leaves a tombstone so that the late hold is
//! refused, and nothing is acknowledged before it is flushed to disk. Seats
//! are never oversold: the local implementation checks and takes seats under
//! one lock. The holds and the seat counts per flight, date and cabin are a
//! [`crate::ledger`]: the counts are kept on disk beside the holds, so
//! opening reads neither every hold nor every count.

use crate::ledger::{Counter, Ledger, LedgerEntry, LedgerError, Registry, Trees, Versioned};
use crate::types::{Cabin, FlightId};
use async_trait::async_trait;
use chrono::NaiveDate;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Most seats one hold may take (the largest party one booking may carry).
pub const MAX_SEATS_PER_HOLD: u32 = 9;
/// Largest capacity [`Inventory::set_capacity`] accepts for one cabin.
pub const MAX_CABIN_SEATS: u32 = 10_000;
/// Longest idempotency key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 256;

const HOLDS_TREE: &str = "inventory_holds";
const COUNTS_TREE: &str = "inventory_counts";
const INDEX_TREE: &str = "inventory_index";
const META_TREE: &str = "inventory_meta";
const CAPACITY_TREE: &str = "inventory_capacity";

/// Seats per cabin of an aircraft: the capacity every flight, date and cabin
/// starts with unless [`Inventory::set_capacity`] overrides it.
///
/// The default is a narrow-body-like layout of 12 first, 24 business and 144
/// economy seats (180 in all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatLayout {
    /// First class seats.
    pub first: u32,
    /// Business class seats.
    pub business: u32,
    /// Economy class seats.
    pub economy: u32,
}

impl SeatLayout {
    /// 12 first, 24 business, 144 economy.
    pub const DEFAULT: SeatLayout = SeatLayout {
        first: 12,
        business: 24,
        economy: 144,
    };

    /// Seats in `cabin`.
    pub fn seats(&self, cabin: Cabin) -> u32 {
        match cabin {
            Cabin::First => self.first,
            Cabin::Business => self.business,
            Cabin::Economy => self.economy,
        }
    }
}

impl Default for SeatLayout {
    fn default() -> Self {
        SeatLayout::DEFAULT
    }
}

/// A request to hold seats on one flight, date and cabin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRequest {
    /// The scheduled flight.
    pub flight: FlightId,
    /// The date of departure.
    pub date: NaiveDate,
    /// The cabin.
    pub cabin: Cabin,
    /// Seats to hold, `1..=MAX_SEATS_PER_HOLD`.
    pub seats: u32,
}

/// Where a hold stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    /// Seats are taken, awaiting confirmation.
    Held,
    /// Seats are sold.
    Confirmed,
    /// Seats were given back.
    Released,
}

/// Seats held under one idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The idempotency key that placed the hold.
    pub key: String,
    /// The scheduled flight.
    pub flight: FlightId,
    /// The date of departure.
    pub date: NaiveDate,
    /// The cabin.
    pub cabin: Cabin,
    /// Seats held.
    pub seats: u32,
    /// Where the hold stands.
    pub state: HoldState,
}

impl Hold {
    fn matches(&self, r: &HoldRequest) -> bool {
        self.flight == r.flight
            && self.date == r.date
            && self.cabin == r.cabin
            && self.seats == r.seats
    }
}

/// What [`Inventory::release`] did. Repeating a release returns the same
/// outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseOutcome {
    /// The hold's seats are back on sale (now or by an earlier call).
    Released(Hold),
    /// No seats were held under this key: the hold never arrived (a
    /// tombstone now stands in its place, so a hold that arrives later is
    /// refused) or it was refused.
    NothingHeld,
}

/// What is known about an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldLookup {
    /// Nothing has happened under this key.
    Unknown,
    /// The key was released before any hold arrived.
    Tombstone,
    /// A hold was placed under this key.
    Hold(Hold),
    /// A hold under this key was refused; repeating it repeats `error`.
    Refused {
        /// Why it was refused.
        error: InventoryError,
    },
}

/// Seat counts of one flight, date and cabin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatTotals {
    /// Seats the cabin has.
    pub capacity: u32,
    /// Seats held and not yet confirmed.
    pub held: u32,
    /// Seats confirmed (sold).
    pub confirmed: u32,
}

impl SeatTotals {
    /// Seats still for sale.
    pub fn available(&self) -> u32 {
        self.capacity
            .saturating_sub(self.held.saturating_add(self.confirmed))
    }
}

/// Why an inventory operation failed.
///
/// [`is_rejection`](InventoryError::is_rejection) separates a definite "no"
/// (retrying gives the same answer; the saga compensates at once) from a
/// failure to reach or use storage (worth retrying with the same key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryError {
    /// Fewer seats are left than were asked for.
    #[error("not enough seats: {requested} requested, {available} available")]
    NotEnoughSeats {
        /// Seats asked for.
        requested: u32,
        /// Seats left.
        available: u32,
    },
    /// Seats asked for outside `1..=MAX_SEATS_PER_HOLD`.
    #[error("seats must be between 1 and {MAX_SEATS_PER_HOLD}, got {seats}")]
    InvalidSeats {
        /// Seats asked for.
        seats: u32,
    },
    /// A malformed request (empty key or flight id, capacity out of range).
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What was wrong.
        reason: String,
    },
    /// No hold was placed under this key.
    #[error("no hold under key {key:?}")]
    UnknownHold {
        /// The key.
        key: String,
    },
    /// The key was already released (or tombstoned), so the operation is
    /// refused rather than applied after its compensation.
    #[error("hold {key:?} was already released")]
    AlreadyCompensated {
        /// The key.
        key: String,
    },
    /// The key was used before for a different request.
    #[error("idempotency key {key:?} was used for a different hold")]
    KeyReused {
        /// The key.
        key: String,
    },
    /// A capacity below the seats already held and confirmed.
    #[error("capacity {capacity} is below the {booked} seats already held or sold")]
    CapacityBelowBooked {
        /// The capacity asked for.
        capacity: u32,
        /// Seats held plus confirmed.
        booked: u32,
    },
    /// The store failed or holds a record it cannot read.
    #[error("inventory storage failed: {message}")]
    Storage {
        /// What failed.
        message: String,
    },
    /// The participant could not be reached (remote implementations).
    #[error("inventory unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
    },
}

impl InventoryError {
    /// True for a definite "no" that a retry with the same key and input would
    /// repeat: everything except [`Storage`](Self::Storage) and
    /// [`Unavailable`](Self::Unavailable).
    pub fn is_rejection(&self) -> bool {
        !self.is_retryable()
    }

    /// True when the outcome is unknown and the call may be retried with the
    /// same key.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Storage { .. } | Self::Unavailable { .. })
    }

    fn storage(e: impl std::fmt::Display) -> Self {
        InventoryError::Storage {
            message: e.to_string(),
        }
    }
}

/// Seats per flight, date and cabin; holds on them by idempotency key.
///
/// Every mutation is idempotent by `key`. Implementations must be usable as
/// `Arc<dyn Inventory>` and return only once the effect is durable.
#[async_trait]
pub trait Inventory: Send + Sync {
    /// Holds `request.seats` seats. Repeating it with the same key and request
    /// returns the same hold without taking more seats. Refused with
    /// [`InventoryError::NotEnoughSeats`] when too few are left (the refusal
    /// is remembered: a repeat returns it unchanged even if seats have freed
    /// up since) and with [`InventoryError::AlreadyCompensated`] after the key
    /// was released.
    async fn hold(&self, key: &str, request: &HoldRequest) -> Result<Hold, InventoryError>;

    /// Confirms (sells) the seats held under `key`. Repeating it returns the
    /// confirmed hold.
    async fn confirm(&self, key: &str) -> Result<Hold, InventoryError>;

    /// Gives back the seats held or confirmed under `key`. For an unknown key
    /// it records a tombstone and returns [`ReleaseOutcome::NothingHeld`].
    async fn release(&self, key: &str) -> Result<ReleaseOutcome, InventoryError>;

    /// Seats still for sale.
    async fn seats_left(
        &self,
        flight: &FlightId,
        date: NaiveDate,
        cabin: Cabin,
    ) -> Result<u32, InventoryError>;

    /// Capacity, held and confirmed seats (for consistency checks and admin).
    async fn totals(
        &self,
        flight: &FlightId,
        date: NaiveDate,
        cabin: Cabin,
    ) -> Result<SeatTotals, InventoryError>;

    /// What is known about `key`.
    async fn hold_status(&self, key: &str) -> Result<HoldLookup, InventoryError>;

    /// Overrides the capacity of one flight, date and cabin (admin, tests).
    /// Refused below the seats already held plus confirmed.
    async fn set_capacity(
        &self,
        flight: &FlightId,
        date: NaiveDate,
        cabin: Cabin,
        seats: u32,
    ) -> Result<SeatTotals, InventoryError>;

    /// Every hold ever placed, in any state (tombstones excluded), in key
    /// order. For consistency checks.
    async fn all_holds(&self) -> Result<Vec<Hold>, InventoryError>;
}

/// What the `inventory_holds` tree stores under a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum HoldRecord {
    Hold(Hold),
    Tombstone,
    /// A business refusal, remembered so a retry gets the same answer.
    Refused {
        request: HoldRequest,
        error: InventoryError,
    },
}

/// What the `inventory_capacity` tree stores per flight, date and cabin.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct CapacityRecord {
    seats: u32,
}

fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, InventoryError> {
    crate::envelope::encode(record).map_err(InventoryError::storage)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, InventoryError> {
    crate::envelope::decode(bytes).map_err(InventoryError::storage)
}

/// The key of one flight, date and cabin in the capacity tree and counts.
/// JSON keeps it unambiguous whatever characters the flight id holds.
fn bucket_key(flight: &FlightId, date: NaiveDate, cabin: Cabin) -> Vec<u8> {
    serde_json::to_vec(&(&flight.0, date.to_string(), cabin.as_str())).unwrap_or_default()
}

fn check_key(key: &str) -> Result<(), InventoryError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(InventoryError::InvalidRequest {
            reason: format!("idempotency key must be 1..={MAX_KEY_LEN} bytes"),
        });
    }
    Ok(())
}

fn check_flight(flight: &FlightId) -> Result<(), InventoryError> {
    if flight.0.trim().is_empty() {
        return Err(InventoryError::InvalidRequest {
            reason: "flight id must not be empty".into(),
        });
    }
    Ok(())
}

impl LedgerEntry for HoldRecord {
    /// A hold adds its seats to its flight, date and cabin: held `[seats, 0]`,
    /// confirmed `[0, seats]`, released nothing.
    fn contributions(&self) -> Vec<(Vec<u8>, Counter)> {
        let HoldRecord::Hold(h) = self else {
            return Vec::new();
        };
        let seats = i64::from(h.seats);
        let counter = match h.state {
            HoldState::Held => [seats, 0],
            HoldState::Confirmed => [0, seats],
            HoldState::Released => return Vec::new(),
        };
        vec![(bucket_key(&h.flight, h.date, h.cabin), counter)]
    }
}

impl From<LedgerError> for InventoryError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::BadCursor => InventoryError::InvalidRequest {
                reason: e.to_string(),
            },
            LedgerError::Storage(m) => InventoryError::Storage { message: m },
        }
    }
}

/// Seats taken in one flight, date and cabin: `(held, confirmed)`.
fn counts(counter: Counter) -> (u32, u32) {
    let clamp = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    (clamp(counter[0]), clamp(counter[1]))
}

/// Open local inventories in this process, one per database.
static OPEN: Registry<Inner> = Registry::new();

struct Inner {
    /// One [`HoldRecord`] per idempotency key; seat counts per flight,
    /// date and cabin. Its lock serialises mutations, so a check-then-take
    /// is never interleaved.
    ledger: Ledger<HoldRecord>,
    /// Truth: capacity overrides per flight, date and cabin.
    capacity: sled::Tree,
    meta: sled::Tree,
    layout: SeatLayout,
}

impl Inner {
    fn load(db: &sled::Db, meta: sled::Tree, layout: SeatLayout) -> Result<Self, InventoryError> {
        let capacity = db
            .open_tree(CAPACITY_TREE)
            .map_err(InventoryError::storage)?;
        let trees = Trees {
            entries: HOLDS_TREE,
            buckets: COUNTS_TREE,
            index: INDEX_TREE,
        };
        let ledger = Ledger::open(db, meta.clone(), trees, ())?;
        tracing::debug!(records_read = ledger.read_at_open(), "inventory opened");
        Ok(Inner {
            ledger,
            capacity,
            meta,
            layout,
        })
    }

    fn record(&self, key: &str) -> Result<Option<Versioned<HoldRecord>>, InventoryError> {
        Ok(self.ledger.get(key)?)
    }

    fn put(
        &self,
        locked: &std::sync::MutexGuard<'_, ()>,
        key: &str,
        old: Option<&Versioned<HoldRecord>>,
        record: &HoldRecord,
    ) -> Result<(), InventoryError> {
        Ok(self.ledger.put(locked, key, old, record)?)
    }

    fn capacity_of(&self, bucket: &[u8], cabin: Cabin) -> Result<u32, InventoryError> {
        match self.capacity.get(bucket).map_err(InventoryError::storage)? {
            Some(raw) => Ok(decode::<CapacityRecord>(&raw)?.seats),
            None => Ok(self.layout.seats(cabin)),
        }
    }

    /// Stores the hold of `old` moved to state `to` (its seats move in the
    /// counts).
    fn transition(
        &self,
        locked: &std::sync::MutexGuard<'_, ()>,
        old: &Versioned<HoldRecord>,
        hold: Hold,
        to: HoldState,
    ) -> Result<Hold, InventoryError> {
        let updated = Hold { state: to, ..hold };
        self.put(
            locked,
            &updated.key,
            Some(old),
            &HoldRecord::Hold(updated.clone()),
        )?;
        Ok(updated)
    }
}

/// [`Inventory`] on sled trees `inventory_holds` (one record per
/// idempotency key), `inventory_counts` (seats held and sold per flight,
/// date and cabin), `inventory_capacity` (overrides) and `inventory_meta` of
/// a shared [`sled::Db`].
///
/// Opening reads no hold beyond the one a crash may have left half counted
/// (see [`crate::ledger`]). Opening it again on the same database
/// while an instance is alive returns that instance, with the layout it was
/// opened with. Cheap to clone.
#[derive(Clone)]
pub struct LocalInventory {
    inner: Arc<Inner>,
    cover: crate::ledger::Cover,
}

impl std::fmt::Debug for LocalInventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalInventory")
            .field("layout", &self.inner.layout)
            .finish_non_exhaustive()
    }
}

impl LocalInventory {
    /// Opens the inventory on `db` with the [`SeatLayout::DEFAULT`] layout.
    pub fn open(db: &sled::Db) -> Result<Self, InventoryError> {
        Self::open_with_layout(db, SeatLayout::DEFAULT)
    }

    /// Opens the inventory on `db`; flights without a capacity override have
    /// `layout`'s seats.
    pub fn open_with_layout(db: &sled::Db, layout: SeatLayout) -> Result<Self, InventoryError> {
        let meta = db.open_tree(META_TREE).map_err(InventoryError::storage)?;
        let inner = OPEN.open_or_build(
            &meta,
            |inner| &inner.meta,
            || Inner::load(db, meta.clone(), layout),
            InventoryError::storage,
        )?;
        if inner.layout != layout {
            tracing::warn!(?layout, open = ?inner.layout, "inventory already open with another layout; sharing it");
        }
        Ok(LocalInventory {
            inner,
            cover: crate::ledger::Cover::default(),
        })
    }

    /// The layout used where no capacity override exists.
    pub fn layout(&self) -> SeatLayout {
        self.inner.layout
    }

    /// The same participant, with its saga steps' writes made durable by
    /// the engine's flushes (see `ledger::Cover`): refused unless `engine`
    /// is the group commit of this participant's own database.
    pub fn covered_by(
        self,
        engine: &saga_engine::store::Durability,
    ) -> Result<Self, InventoryError> {
        let cover = crate::ledger::Cover::engine(self.inner.ledger.db(), engine)?;
        Ok(LocalInventory { cover, ..self })
    }

    /// Returns once every write committed so far is durable.
    async fn flush(&self) -> Result<(), InventoryError> {
        self.cover
            .direct(async { Ok(self.inner.ledger.durable().await?) })
            .await
    }

    /// Makes a saga step's write durable before the reply, unless the
    /// engine's next flush covers it.
    async fn step_flush(&self) -> Result<(), InventoryError> {
        self.cover
            .step(async { Ok(self.inner.ledger.durable().await?) })
            .await
    }

    /// Holds read while this inventory was opened: at most one, or every
    /// hold once when a database written before the counts were kept on
    /// disk is upgraded.
    pub fn entries_read_at_open(&self) -> u64 {
        self.inner.ledger.read_at_open()
    }

    /// Every hold in key order (tombstones and refusals excluded), `limit`
    /// at a time (clamped to `1..=`[`crate::ledger::MAX_PAGE_LIMIT`]),
    /// starting after `cursor` (`None`: the first page). Returns the holds
    /// and the cursor of the next page, `None` after the last. Holds placed
    /// while paging appear in their key order.
    pub fn all_holds_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Hold>, Option<String>), InventoryError> {
        Ok(self.inner.ledger.page(cursor, limit, |r| match r {
            HoldRecord::Hold(h) => Some(h),
            _ => None,
        })?)
    }

    fn totals_now(
        &self,
        flight: &FlightId,
        date: NaiveDate,
        cabin: Cabin,
    ) -> Result<SeatTotals, InventoryError> {
        let bucket = bucket_key(flight, date, cabin);
        let capacity = self.inner.capacity_of(&bucket, cabin)?;
        let (held, confirmed) = counts(self.inner.ledger.counter(&bucket)?);
        Ok(SeatTotals {
            capacity,
            held,
            confirmed,
        })
    }

    /// The synchronous part of [`Inventory::hold`]: check and take, under
    /// the lock. The outer error means nothing was written; the inner one is
    /// a refusal that was remembered.
    fn hold_now(
        &self,
        key: &str,
        request: &HoldRequest,
    ) -> Result<Result<(Hold, bool), InventoryError>, InventoryError> {
        let inner = &self.inner;
        let locked = inner.ledger.lock();
        let current = inner.record(key)?;
        match current.as_ref().map(|v| v.entry.clone()) {
            Some(HoldRecord::Refused { request: r, .. }) if r != *request => {
                return Err(InventoryError::KeyReused { key: key.into() })
            }
            Some(HoldRecord::Refused { error, .. }) => return Ok(Err(error)),
            Some(HoldRecord::Hold(h)) if !h.matches(request) => {
                return Err(InventoryError::KeyReused { key: key.into() })
            }
            Some(HoldRecord::Hold(h)) if h.state == HoldState::Released => {
                return Err(InventoryError::AlreadyCompensated { key: key.into() })
            }
            Some(HoldRecord::Hold(h)) => return Ok(Ok((h, false))),
            Some(HoldRecord::Tombstone) => {
                return Err(InventoryError::AlreadyCompensated { key: key.into() })
            }
            None => {}
        }
        let bucket = bucket_key(&request.flight, request.date, request.cabin);
        let capacity = inner.capacity_of(&bucket, request.cabin)?;
        let (held, confirmed) = counts(inner.ledger.counter(&bucket)?);
        let available = capacity.saturating_sub(held.saturating_add(confirmed));
        if available < request.seats {
            let error = InventoryError::NotEnoughSeats {
                requested: request.seats,
                available,
            };
            let refused = HoldRecord::Refused {
                request: request.clone(),
                error: error.clone(),
            };
            inner.put(&locked, key, None, &refused)?;
            return Ok(Err(error));
        }
        let hold = Hold {
            key: key.to_string(),
            flight: request.flight.clone(),
            date: request.date,
            cabin: request.cabin,
            seats: request.seats,
            state: HoldState::Held,
        };
        inner.put(&locked, key, None, &HoldRecord::Hold(hold.clone()))?;
        Ok(Ok((hold, true)))
    }

    fn confirm_now(&self, key: &str) -> Result<Hold, InventoryError> {
        let inner = &self.inner;
        let locked = inner.ledger.lock();
        let Some(current) = inner.record(key)? else {
            return Err(InventoryError::UnknownHold { key: key.into() });
        };
        match current.entry.clone() {
            HoldRecord::Tombstone => Err(InventoryError::AlreadyCompensated { key: key.into() }),
            HoldRecord::Refused { error, .. } => Err(error),
            HoldRecord::Hold(h) => match h.state {
                HoldState::Confirmed => Ok(h),
                HoldState::Released => Err(InventoryError::AlreadyCompensated { key: key.into() }),
                HoldState::Held => inner.transition(&locked, &current, h, HoldState::Confirmed),
            },
        }
    }

    fn release_now(&self, key: &str) -> Result<ReleaseOutcome, InventoryError> {
        let inner = &self.inner;
        let locked = inner.ledger.lock();
        let Some(current) = inner.record(key)? else {
            inner.put(&locked, key, None, &HoldRecord::Tombstone)?;
            return Ok(ReleaseOutcome::NothingHeld);
        };
        match current.entry.clone() {
            HoldRecord::Tombstone | HoldRecord::Refused { .. } => Ok(ReleaseOutcome::NothingHeld),
            HoldRecord::Hold(h) if h.state == HoldState::Released => {
                Ok(ReleaseOutcome::Released(h))
            }
            HoldRecord::Hold(h) => inner
                .transition(&locked, &current, h, HoldState::Released)
                .map(ReleaseOutcome::Released),
        }
    }
}

#[async_trait]
impl Inventory for LocalInventory {
    async fn hold(&self, key: &str, request: &HoldRequest) -> Result<Hold, InventoryError> {
        check_key(key)?;
        check_flight(&request.flight)?;
        if !(1..=MAX_SEATS_PER_HOLD).contains(&request.seats) {
            return Err(InventoryError::InvalidSeats {
                seats: request.seats,
            });
        }
        let result = self.hold_now(key, request);
        match &result {
            Ok(Ok((h, fresh))) => {
                tracing::debug!(key, flight = %h.flight, date = %h.date, cabin = %h.cabin, seats = h.seats, fresh, "seats held")
            }
            Ok(Err(e)) | Err(e) => tracing::debug!(key, error = %e, "hold refused"),
        }
        // A remembered refusal is made durable before it is reported, like a
        // hold. A replay flushes too: the first call may not have reached
        // disk yet.
        let outcome = result?;
        self.step_flush().await?;
        outcome.map(|(hold, _)| hold)
    }

    async fn confirm(&self, key: &str) -> Result<Hold, InventoryError> {
        check_key(key)?;
        let result = self.confirm_now(key);
        match &result {
            Ok(h) => tracing::debug!(key, seats = h.seats, "hold confirmed"),
            Err(e) => tracing::debug!(key, error = %e, "confirm refused"),
        }
        let hold = result?;
        self.step_flush().await?;
        Ok(hold)
    }

    async fn release(&self, key: &str) -> Result<ReleaseOutcome, InventoryError> {
        check_key(key)?;
        let result = self.release_now(key);
        match &result {
            Ok(ReleaseOutcome::Released(h)) => {
                tracing::debug!(key, seats = h.seats, "hold released")
            }
            Ok(ReleaseOutcome::NothingHeld) => {
                tracing::debug!(key, "release with nothing held: tombstone or refusal")
            }
            Err(e) => tracing::warn!(key, error = %e, "release failed"),
        }
        let outcome = result?;
        self.step_flush().await?;
        Ok(outcome)
    }

    async fn seats_left(
        &self,
        flight: &FlightId,
        date: NaiveDate,
        cabin: Cabin,
    ) -> Result<u32, InventoryError> {
        Ok(self.totals_now(flight, date, cabin)?.available())
    }

    async fn totals(
        &self,
        flight: &FlightId,
        date: NaiveDate,
        cabin: Cabin,
    ) -> Result<SeatTotals, InventoryError> {
        self.totals_now(flight, date, cabin)
    }

    async fn hold_status(&self, key: &str) -> Result<HoldLookup, InventoryError> {
        check_key(key)?;
        Ok(match self.inner.record(key)?.map(|v| v.entry) {
            None => HoldLookup::Unknown,
            Some(HoldRecord::Hold(h)) => HoldLookup::Hold(h),
            Some(HoldRecord::Tombstone) => HoldLookup::Tombstone,
            Some(HoldRecord::Refused { error, .. }) => HoldLookup::Refused { error },
        })
    }

    async fn set_capacity(
        &self,
        flight: &FlightId,
        date: NaiveDate,
        cabin: Cabin,
        seats: u32,
    ) -> Result<SeatTotals, InventoryError> {
        check_flight(flight)?;
        if seats > MAX_CABIN_SEATS {
            return Err(InventoryError::InvalidRequest {
                reason: format!("capacity must be at most {MAX_CABIN_SEATS}, got {seats}"),
            });
        }
        let bucket = bucket_key(flight, date, cabin);
        let totals = {
            let _locked = self.inner.ledger.lock();
            let (held, confirmed) = counts(self.inner.ledger.counter(&bucket)?);
            let booked = held.saturating_add(confirmed);
            if seats < booked {
                return Err(InventoryError::CapacityBelowBooked {
                    capacity: seats,
                    booked,
                });
            }
            self.inner
                .capacity
                .insert(&bucket, encode(&CapacityRecord { seats })?)
                .map_err(InventoryError::storage)?;
            SeatTotals {
                capacity: seats,
                held,
                confirmed,
            }
        };
        tracing::info!(flight = %flight, date = %date, cabin = %cabin, seats, "capacity set");
        self.flush().await?;
        Ok(totals)
    }

    async fn all_holds(&self) -> Result<Vec<Hold>, InventoryError> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let (holds, next) =
                self.all_holds_page(cursor.as_deref(), crate::ledger::MAX_PAGE_LIMIT)?;
            out.extend(holds);
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

    fn db() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        (dir, db)
    }

    fn req(seats: u32) -> HoldRequest {
        HoldRequest {
            flight: FlightId("AA100-1".into()),
            date: NaiveDate::from_ymd_opt(2030, 5, 6).unwrap(),
            cabin: Cabin::First,
            seats,
        }
    }

    #[test]
    fn reads_the_v1_record_format() {
        let raw = br#"{"v":1,"record":{"hold":{"key":"k","flight":"AA1","date":"2030-01-02","cabin":"business","seats":2,"state":"confirmed"}}}"#;
        let rec: HoldRecord = decode(raw).unwrap();
        match rec {
            HoldRecord::Hold(h) => {
                assert_eq!(h.seats, 2);
                assert_eq!(h.state, HoldState::Confirmed);
                assert_eq!(h.cabin, Cabin::Business);
            }
            other => panic!("expected a hold, got {other:?}"),
        }
        let tomb: HoldRecord = decode(br#"{"v":1,"record":"tombstone"}"#).unwrap();
        assert!(matches!(tomb, HoldRecord::Tombstone));
        assert!(decode::<HoldRecord>(br#"{"v":2,"record":"tombstone"}"#).is_err());
        assert!(decode::<HoldRecord>(b"not json").is_err());
    }

    #[test]
    fn default_layout_is_documented() {
        let l = SeatLayout::default();
        assert_eq!((l.first, l.business, l.economy), (12, 24, 144));
    }

    #[tokio::test]
    async fn refuses_bad_input_without_effect() {
        let (_d, db) = db();
        let inv = LocalInventory::open(&db).unwrap();
        assert_eq!(
            inv.hold("k", &req(0)).await,
            Err(InventoryError::InvalidSeats { seats: 0 })
        );
        assert_eq!(
            inv.hold("k", &req(10)).await,
            Err(InventoryError::InvalidSeats { seats: 10 })
        );
        assert!(matches!(
            inv.hold("", &req(1)).await,
            Err(InventoryError::InvalidRequest { .. })
        ));
        let mut r = req(1);
        r.flight = FlightId("  ".into());
        assert!(inv.hold("k", &r).await.unwrap_err().is_rejection());
        assert_eq!(inv.hold_status("k").await.unwrap(), HoldLookup::Unknown);
        let r = req(1);
        assert!(matches!(
            inv.set_capacity(&r.flight, r.date, r.cabin, MAX_CABIN_SEATS + 1)
                .await,
            Err(InventoryError::InvalidRequest { .. })
        ));
    }

    #[tokio::test]
    async fn key_reuse_for_another_request_is_refused() {
        let (_d, db) = db();
        let inv = LocalInventory::open(&db).unwrap();
        inv.hold("k", &req(2)).await.unwrap();
        assert_eq!(
            inv.hold("k", &req(3)).await,
            Err(InventoryError::KeyReused { key: "k".into() })
        );
        let r = req(1);
        assert_eq!(
            inv.seats_left(&r.flight, r.date, r.cabin).await.unwrap(),
            10
        );
    }

    #[tokio::test]
    async fn capacity_cannot_drop_below_booked() {
        let (_d, db) = db();
        let inv = LocalInventory::open(&db).unwrap();
        inv.hold("k", &req(5)).await.unwrap();
        let r = req(1);
        let err = inv
            .set_capacity(&r.flight, r.date, r.cabin, 4)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            InventoryError::CapacityBelowBooked {
                capacity: 4,
                booked: 5
            }
        );
        assert!(err.is_rejection());
        let t = inv
            .set_capacity(&r.flight, r.date, r.cabin, 5)
            .await
            .unwrap();
        assert_eq!(t.available(), 0);
    }

    #[test]
    fn classifies_errors() {
        assert!(InventoryError::NotEnoughSeats {
            requested: 1,
            available: 0
        }
        .is_rejection());
        assert!(InventoryError::Storage {
            message: "io".into()
        }
        .is_retryable());
        assert!(!InventoryError::Unavailable {
            message: "down".into()
        }
        .is_rejection());
    }
}
