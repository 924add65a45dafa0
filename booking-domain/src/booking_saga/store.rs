//! The bookings the saga confirms: one record per booking, by reference
//! and by saga, written with single-key inserts and the shared group flush.

use super::*;

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
    /// The passengers' dates of birth and the contact phone, sealed as the
    /// saga's data held them ([`BookingStore::personal_of`] opens them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal: Option<crate::personal::SealedPersonal>,
    /// A round trip's return leg (its seats are held under
    /// [`return_key`] of the saga).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_leg: Option<ReturnLeg>,
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
    db: sled::Db,
    cover: crate::ledger::Cover,
    personal: Arc<crate::personal::PersonalVault>,
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
    /// Opens the store's trees in `db`; personal details are sealed under
    /// a key of this process only (for databases that do not outlive it:
    /// use [`open_in`](Self::open_in) for a lasting one).
    pub fn open(db: &sled::Db) -> Result<Self, BookingStoreError> {
        Ok(BookingStore {
            by_ref: db.open_tree("bookings")?,
            by_saga: db.open_tree("bookings_by_saga")?,
            flush: Arc::new(crate::payments::GroupFlush::new(db)),
            db: db.clone(),
            cover: crate::ledger::Cover::default(),
            personal: Arc::new(crate::personal::PersonalVault::ephemeral()),
        })
    }

    /// Opens the store's trees in `db`, sealing personal details under the
    /// key file [`crate::personal::PERSONAL_KEY_FILE`] of `data_dir`.
    pub fn open_in(db: &sled::Db, data_dir: &std::path::Path) -> Result<Self, BookingStoreError> {
        let vault = crate::personal::PersonalVault::load_or_create(data_dir)
            .map_err(|e| BookingStoreError(e.to_string()))?;
        Ok(Self::open(db)?.sealing_with(vault))
    }

    /// The same store, sealing personal details with `vault`.
    pub fn sealing_with(self, vault: crate::personal::PersonalVault) -> Self {
        BookingStore {
            personal: Arc::new(vault),
            ..self
        }
    }

    /// `details` sealed under this store's key.
    pub fn seal_personal(
        &self,
        details: &crate::personal::PersonalDetails,
    ) -> Result<crate::personal::SealedPersonal, crate::personal::PersonalError> {
        self.personal.seal(details)
    }

    /// The personal details a booking's saga data carries, opened (`None`
    /// when none were given).
    pub fn personal_of_data(
        &self,
        data: &BookingData,
    ) -> Result<Option<crate::personal::PersonalDetails>, crate::personal::PersonalError> {
        data.personal
            .as_ref()
            .map(|s| self.personal.open(s))
            .transpose()
    }

    /// The personal details of a confirmed booking, opened (`None` when
    /// none were given). Only for what must show them: the e-ticket, the
    /// holder's masked phone.
    pub fn personal_of(
        &self,
        record: &BookingRecord,
    ) -> Result<Option<crate::personal::PersonalDetails>, crate::personal::PersonalError> {
        record
            .personal
            .as_ref()
            .map(|s| self.personal.open(s))
            .transpose()
    }

    /// The same store, its writes (made by the booking saga's steps) made
    /// durable by the engine's flushes: refused unless `engine` is the group
    /// commit of this store's own database (see `ledger::Cover`).
    pub fn covered_by(
        self,
        engine: &saga_engine::store::Durability,
    ) -> Result<Self, BookingStoreError> {
        let cover = crate::ledger::Cover::engine(&self.db, engine)
            .map_err(|e| BookingStoreError(e.to_string()))?;
        Ok(BookingStore { cover, ..self })
    }

    /// Makes a step's write durable before the reply, unless the engine's
    /// next flush covers it.
    async fn step_flush(&self) -> Result<(), BookingStoreError> {
        self.cover
            .step(self.flush.durable())
            .await
            .map_err(BookingStoreError)
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
        self.step_flush().await?;
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
            self.step_flush().await?;
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
