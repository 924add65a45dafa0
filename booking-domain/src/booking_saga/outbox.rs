//! The itinerary outbox: after the pivot (the capture), the booking saga's
//! retriable `send_itinerary` step writes the message to send (to, subject,
//! the itinerary) as a durable record, once per saga, flushed before the
//! step succeeds (on the engine's database, by the engine's flush of the
//! step's result: a crash before it leaves the step in doubt, and its retry
//! finds the message queued or queues it). A mail sender would deliver from here; the demo shows the
//! outbox as a mailbox (`GET /api/admin/mailbox`) and logs each message's
//! booking reference. The message carries no card data.

use super::*;

const OUTBOX_TREE: &str = "booking_outbox";

/// One message in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxMessage {
    /// Format version.
    pub v: u32,
    /// The booking saga that queued it (one message per saga).
    pub saga_id: SagaId,
    /// The booking's reference.
    pub booking_ref: BookingRef,
    /// Recipient (the booking's contact email).
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text itinerary.
    pub body: String,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
}

/// Why the outbox failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("outbox storage failed: {0}")]
pub struct OutboxError(pub String);

/// The outbox on the participants' database (tree `booking_outbox`).
pub struct Outbox {
    db: sled::Db,
    tree: sled::Tree,
    cover: crate::ledger::Cover,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

fn err(e: impl fmt::Display) -> OutboxError {
    OutboxError(e.to_string())
}

impl Outbox {
    /// Opens the outbox on `db`.
    pub fn open(db: &sled::Db) -> Result<Outbox, OutboxError> {
        Ok(Outbox {
            db: db.clone(),
            tree: db.open_tree(OUTBOX_TREE).map_err(err)?,
            cover: crate::ledger::Cover::default(),
        })
    }

    /// The same outbox, with a queued message made durable by the engine's
    /// flush of the `send_itinerary` step's result instead of a flush of
    /// its own (see `ledger::Cover`): refused unless `engine` is the group
    /// commit of the outbox's own database.
    pub fn covered_by(self, engine: &saga_engine::store::Durability) -> Result<Self, OutboxError> {
        let cover = crate::ledger::Cover::engine(&self.db, engine).map_err(err)?;
        Ok(Outbox { cover, ..self })
    }

    /// Queues `message` under its saga, durably; a message already queued
    /// for the saga is kept and returned (a retry queues nothing twice).
    pub async fn queue(&self, message: OutboxMessage) -> Result<OutboxMessage, OutboxError> {
        let bytes = serde_json::to_vec(&message).map_err(err)?;
        let key = message.saga_id.as_str().as_bytes().to_vec();
        let kept = match self
            .tree
            .compare_and_swap(&key, None as Option<&[u8]>, Some(bytes))
            .map_err(err)?
        {
            Ok(()) => message,
            Err(current) => match current.current {
                Some(b) => serde_json::from_slice(&b).map_err(err)?,
                None => message,
            },
        };
        self.cover
            .step(async {
                saga_engine::store::flush_sled(&self.db)
                    .await
                    .map(|_| ())
                    .map_err(err)
            })
            .await?;
        Ok(kept)
    }

    /// The message queued for `saga`, if any.
    pub fn get(&self, saga: &SagaId) -> Result<Option<OutboxMessage>, OutboxError> {
        match self.tree.get(saga.as_str().as_bytes()).map_err(err)? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b).map(Some).map_err(err),
        }
    }

    /// The newest `limit` messages, newest first (saga ids sort by time).
    pub fn recent(&self, limit: usize) -> Result<Vec<OutboxMessage>, OutboxError> {
        self.tree
            .iter()
            .rev()
            .take(limit)
            .map(|item| {
                let (_, v) = item.map_err(err)?;
                serde_json::from_slice(&v).map_err(err)
            })
            .collect()
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

/// The itinerary message of a confirmed booking.
pub fn itinerary(
    saga_id: &SagaId,
    d: &BookingData,
    reference: &BookingRef,
    catalog: &Catalog,
) -> OutboxMessage {
    let flight = catalog.flight(&d.flight_id);
    let route = flight
        .map(|f| format!("{} {} -> {}", f.flight_no, f.origin, f.destination))
        .unwrap_or_else(|| d.flight_id.0.clone());
    let names: Vec<String> = d
        .passengers
        .iter()
        .map(|p| format!("  {} {}", p.first_name, p.last_name))
        .collect();
    OutboxMessage {
        v: 1,
        saga_id: saga_id.clone(),
        booking_ref: reference.clone(),
        to: d.email.clone(),
        subject: format!("Your itinerary, booking {}", reference.0),
        body: format!(
            "Booking {}\nFlight {route} on {} ({})\n{}Passengers:\n{}\nPaid {}\n",
            reference.0,
            d.date,
            d.cabin,
            super::round_trip::itinerary_line(d, catalog),
            names.join("\n"),
            d.charge(),
        ),
        queued_at: Utc::now(),
    }
}
