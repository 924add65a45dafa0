//! [`LocalPayments`]: the payments participant on sled, its ledger
//! operations (authorize, capture, void or refund, refund) each keyed by
//! an idempotency key, remembered, tombstoned when compensated first, and
//! flushed before they are acknowledged.

use super::vault::Vault;
use super::*;
use crate::ledger::{Ledger, LedgerEntry, LedgerError, Trees};
use rand::Rng;
use std::path::Path;
use std::sync::Arc;

const RECORDS_TREE: &str = "payments_records";
const COUNTS_TREE: &str = "payments_counts";
const BY_EMAIL_TREE: &str = "payments_by_email";
const META_TREE: &str = "payments_meta";

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
    /// Tokenized cards, sealed.
    vault: Vault,
}

impl Inner {
    fn load(
        db: &sled::Db,
        meta: sled::Tree,
        clock: Arc<dyn Clock>,
        key: &VaultKey,
    ) -> Result<Self, PaymentError> {
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
            vault: Vault::open(db, key)?,
        })
    }
}

/// [`Payments`] with a simulated processor, on sled trees
/// `payments_records` (one record per idempotency key) and `payments_meta`.
///
/// Each customer's history is an index on disk (`payments_by_email`), so
/// opening reads no record. Opening them again on
/// the same database while an instance is alive returns that instance, with
/// the clock and vault key it was opened with. Cheap to clone.
///
/// Tokenized cards are sealed under a [`VaultKey`]: [`open_in`](Self::open_in)
/// reads it from (or creates it in) the participant's data directory, so
/// they survive a restart; [`open`](Self::open) uses a key of this process
/// only, for databases that do not outlive it.
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
    /// Opens payments on `db`, reading time from the system clock, with a
    /// vault key of this process only (tokenized cards do not survive a
    /// restart: use [`open_in`](Self::open_in) for a lasting database).
    pub fn open(db: &sled::Db) -> Result<Self, PaymentError> {
        Self::open_with_clock(db, Arc::new(SystemClock))
    }

    /// Opens payments on `db` with the vault key of `data_dir` (the file
    /// [`super::VAULT_KEY_FILE`], created `0600` on first use).
    pub fn open_in(db: &sled::Db, data_dir: &Path) -> Result<Self, PaymentError> {
        let key = VaultKey::load_or_create(data_dir).map_err(PaymentError::storage)?;
        Self::open_with(db, Arc::new(SystemClock), &key)
    }

    /// Opens payments on `db`, reading time (card expiry, timestamps) from
    /// `clock`, with a vault key of this process only.
    pub fn open_with_clock(db: &sled::Db, clock: Arc<dyn Clock>) -> Result<Self, PaymentError> {
        Self::open_with(db, clock, &VaultKey::ephemeral())
    }

    /// Opens payments on `db` with `clock` and the vault key `key`.
    pub fn open_with(
        db: &sled::Db,
        clock: Arc<dyn Clock>,
        key: &VaultKey,
    ) -> Result<Self, PaymentError> {
        let meta = db.open_tree(META_TREE).map_err(PaymentError::storage)?;
        let inner = OPEN.open_or_build(
            &meta,
            |inner| &inner.meta,
            || Inner::load(db, meta.clone(), clock, key),
            PaymentError::storage,
        )?;
        Ok(LocalPayments {
            inner,
            cover: crate::ledger::Cover::default(),
        })
    }

    /// The same participant, with its saga steps' writes made durable by
    /// the engine's flushes (see `ledger::Cover`): refused unless `engine`
    /// is the group commit of this participant's own database. A
    /// tokenization still waits for a flush before it answers (a token is
    /// answered before any saga step exists to cover it), but the
    /// engine's: it joins its group commit instead of running a flush of
    /// its own beside it; so does forgetting a card.
    pub fn covered_by(self, engine: &saga_engine::store::Durability) -> Result<Self, PaymentError> {
        let cover = crate::ledger::Cover::engine(self.inner.ledger.db(), engine)?;
        Ok(LocalPayments { cover, ..self })
    }

    /// Makes a write durable before it is answered (a tokenization, a
    /// card forgotten): through the engine's group commit when it covers
    /// this database, else with the participant's own flush. A step may
    /// wait here too: the engine keeps polling a running step while it
    /// records a control that arrived meanwhile (waiting for the group
    /// commit inside a step once hung every write when a booking was
    /// cancelled; `saga-engine/tests/trust.rs`).
    async fn direct_flush(&self) -> Result<(), PaymentError> {
        self.cover
            .direct(async { Ok(self.inner.ledger.durable().await?) })
            .await
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
            PaymentStatus::Authorized
            | PaymentStatus::RequiresConfirmation
            | PaymentStatus::Declined => {
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
            None if card.needs_confirmation => (PaymentStatus::RequiresConfirmation, None),
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
            PaymentStatus::Authorized
            | PaymentStatus::RequiresConfirmation
            | PaymentStatus::Captured => Ok(record),
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
                    // No capture without the customer's confirmation.
                    PaymentStatus::RequiresConfirmation => Err(PaymentError::InvalidRequest {
                        reason:
                            "the payment awaits the customer's confirmation; nothing was captured"
                                .into(),
                    }),
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
                        PaymentStatus::Authorized | PaymentStatus::RequiresConfirmation => {
                            PaymentStatus::Voided
                        }
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

    async fn tokenize(
        &self,
        key: &str,
        request: &TokenizeRequest,
    ) -> Result<CardToken, PaymentError> {
        check_key(key)?;
        let now = self.inner.clock.now();
        let checked = check_card(&request.card, now.date_naive())
            .map_err(|problem| PaymentError::InvalidCard { problem })?;
        let token = {
            // Under the ledger's lock: two calls with one key get one token.
            let _locked = self.inner.ledger.lock();
            self.inner.vault.put(key, &request.card, &checked, now)?
        };
        // The token is answered only once the sealed card is on disk: a
        // restart right after must still find it.
        if !saga_engine::sabotage::active(saga_engine::sabotage::VAULT_NO_FLUSH) {
            self.direct_flush().await?;
        }
        tracing::debug!(brand = %token.brand, "card tokenized");
        Ok(token)
    }

    async fn authorize_token(
        &self,
        key: &str,
        request: &TokenAuthorizeRequest,
    ) -> Result<PaymentRecord, PaymentError> {
        check_key(key)?;
        if let Some(PaymentEntry::Payment(p)) = self.inner.ledger.entry(key)? {
            // A repeat: answered from the record, the card may be gone.
            let email = normalize_email(&request.customer_email)?;
            if p.customer_email != email || p.amount != request.amount {
                return Err(PaymentError::KeyReused { key: key.into() });
            }
            self.step_flush().await?;
            return match p.status {
                PaymentStatus::Declined => Err(PaymentError::Declined {
                    reason: p.decline_reason.unwrap_or(DeclineReason::CardDeclined),
                }),
                PaymentStatus::Voided | PaymentStatus::Refunded => {
                    Err(PaymentError::AlreadyCompensated { key: key.into() })
                }
                PaymentStatus::Authorized
                | PaymentStatus::RequiresConfirmation
                | PaymentStatus::Captured => Ok(p),
            };
        }
        let Some(card) = self.inner.vault.get(&request.token)? else {
            return Err(PaymentError::UnknownToken);
        };
        let mut plain = AuthorizeRequest {
            customer_email: request.customer_email.clone(),
            card: card.card().clone(),
            amount: request.amount.clone(),
        };
        drop(card);
        let result = self.authorize(key, &plain).await;
        wipe_card(&mut plain.card);
        if matches!(result, Ok(_) | Err(PaymentError::Declined { .. })) {
            // Recorded first, forgotten after, both made durable with the
            // step (the engine's flush when it covers this database): a
            // crash in between leaves a sealed card for the purge, never a
            // payment without its record.
            self.inner.vault.remove(&request.token)?;
            self.step_flush().await?;
        }
        result
    }

    async fn confirm_authorization(&self, key: &str) -> Result<PaymentRecord, PaymentError> {
        self.change(key, |current, now| match current {
            None => Err(PaymentError::UnknownPayment { key: key.into() }),
            Some(PaymentEntry::Tombstone { .. }) => {
                Err(PaymentError::AlreadyCompensated { key: key.into() })
            }
            Some(PaymentEntry::Refund(_)) => Err(PaymentError::KeyReused { key: key.into() }),
            Some(PaymentEntry::Payment(p)) => match p.status {
                PaymentStatus::RequiresConfirmation => {
                    let p = PaymentRecord {
                        status: PaymentStatus::Authorized,
                        updated_at: now,
                        ..p
                    };
                    Ok((Some(PaymentEntry::Payment(p.clone())), p))
                }
                PaymentStatus::Authorized | PaymentStatus::Captured => Ok((None, p)),
                PaymentStatus::Declined => Err(PaymentError::Declined {
                    reason: p.decline_reason.unwrap_or(DeclineReason::CardDeclined),
                }),
                PaymentStatus::Voided | PaymentStatus::Refunded => {
                    Err(PaymentError::AlreadyCompensated { key: key.into() })
                }
            },
        })
        .await
    }

    async fn forget_card(&self, token: &str) -> Result<(), PaymentError> {
        if self.inner.vault.remove(token)? {
            self.direct_flush().await?;
        }
        Ok(())
    }

    async fn cards_held(&self) -> Result<u64, PaymentError> {
        Ok(self.inner.vault.len())
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
