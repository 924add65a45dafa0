//! Loyalty: member accounts, tiers, and the miles a booking earns or spends.
//!
//! The [`Loyalty`] trait is what the saga calls; [`LocalLoyalty`] keeps it on
//! sled trees named `loyalty_*`, and a remote client can implement the same
//! trait over HTTP. An account has two counters: a redeemable **balance** and
//! **qualifying miles**, which only awards raise and which alone decide the
//! [`Tier`]; spending miles never lowers a tier. Awards earn
//! [`BASE_MILES_PER_USD`] per US dollar (at the fixed rates of
//! [`crate::pricing::to_usd_minor`]) times the tier's multiplier. Every
//! mutation is keyed by the saga's idempotency key, reversible by that key,
//! tombstoned when reversed before it arrived, and flushed to disk before it
//! is acknowledged.

use crate::payments::{Clock, SystemClock};
use crate::pricing::to_usd_minor;
use crate::types::Money;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use std::fmt;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Miles earned per US dollar before the tier multiplier.
pub const BASE_MILES_PER_USD: u64 = 5;
/// Longest idempotency key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Most miles one redemption may spend.
pub const MAX_REDEEM_MILES: u64 = 10_000_000;

const FORMAT_VERSION: u32 = 1;
const ACCOUNTS_TREE: &str = "loyalty_accounts";
const ENTRIES_TREE: &str = "loyalty_entries";
const BY_ACCOUNT_TREE: &str = "loyalty_by_account";
const BY_EMAIL_TREE: &str = "loyalty_by_email";
const CREATE_KEYS_TREE: &str = "loyalty_create_keys";

/// A loyalty account number: eight digits, e.g. `48213377`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccountId(pub String);

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A membership tier, from qualifying miles. Ordered lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// From 0 qualifying miles; earns ×1.0.
    Regular,
    /// From 25,000; earns ×1.4.
    Gold,
    /// From 50,000; earns ×1.6.
    Platinum,
    /// From 75,000; earns ×1.8.
    PlatinumPro,
    /// From 100,000; earns ×2.2.
    ExecutivePlatinum,
    /// From 125,000; earns ×2.2.
    ConciergeKey,
}

impl Tier {
    /// All tiers, lowest first.
    pub const ALL: [Tier; 6] = [
        Tier::Regular,
        Tier::Gold,
        Tier::Platinum,
        Tier::PlatinumPro,
        Tier::ExecutivePlatinum,
        Tier::ConciergeKey,
    ];

    /// Qualifying miles needed to reach this tier.
    pub fn threshold(self) -> u64 {
        match self {
            Tier::Regular => 0,
            Tier::Gold => 25_000,
            Tier::Platinum => 50_000,
            Tier::PlatinumPro => 75_000,
            Tier::ExecutivePlatinum => 100_000,
            Tier::ConciergeKey => 125_000,
        }
    }

    /// The earning multiplier in tenths (14 = ×1.4), so miles stay integers.
    pub fn multiplier_tenths(self) -> u64 {
        match self {
            Tier::Regular => 10,
            Tier::Gold => 14,
            Tier::Platinum => 16,
            Tier::PlatinumPro => 18,
            Tier::ExecutivePlatinum | Tier::ConciergeKey => 22,
        }
    }

    /// The tier an account with `qualifying_miles` is in.
    pub fn for_qualifying_miles(qualifying_miles: u64) -> Tier {
        Tier::ALL
            .iter()
            .rev()
            .copied()
            .find(|t| qualifying_miles >= t.threshold())
            .unwrap_or(Tier::Regular)
    }

    /// A display name, e.g. `Platinum Pro`.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Regular => "Regular",
            Tier::Gold => "Gold",
            Tier::Platinum => "Platinum",
            Tier::PlatinumPro => "Platinum Pro",
            Tier::ExecutivePlatinum => "Executive Platinum",
            Tier::ConciergeKey => "ConciergeKey",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Miles earned for `usd_minor` US cents at `tier`:
/// `floor(cents × 5 / 100 × multiplier)`, in integer math. Zero for a
/// non-positive amount.
pub fn miles_for_usd_minor(usd_minor: i64, tier: Tier) -> u64 {
    let cents = u128::try_from(usd_minor).unwrap_or(0);
    let miles =
        cents * u128::from(BASE_MILES_PER_USD) * u128::from(tier.multiplier_tenths()) / 1000;
    u64::try_from(miles).unwrap_or(u64::MAX)
}

/// A request to open an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAccount {
    /// Member's first name.
    pub first_name: String,
    /// Member's last name.
    pub last_name: String,
    /// Member's email; one account per email.
    pub email: String,
}

/// A loyalty account as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoyaltyAccount {
    /// The account number.
    pub id: AccountId,
    /// Member's first name.
    pub first_name: String,
    /// Member's last name.
    pub last_name: String,
    /// Member's email, lower case.
    pub email: String,
    /// Miles that can be redeemed.
    pub balance: u64,
    /// Miles earned (minus reversed awards); decides the tier.
    pub qualifying_miles: u64,
    /// The tier `qualifying_miles` reaches.
    pub tier: Tier,
    /// When the account was opened.
    pub created_at: DateTime<Utc>,
}

/// What kind of movement an entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Miles earned for a payment.
    Award {
        /// What was paid.
        amount: Money,
        /// `amount` in US cents at the fixed rates.
        usd_minor: i64,
    },
    /// Miles spent.
    Redemption,
}

/// Whether an entry still counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// In effect.
    Applied,
    /// Undone by [`Loyalty::reverse`].
    Reversed,
}

/// One award or redemption, keyed by the idempotency key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoyaltyEntry {
    /// The idempotency key.
    pub key: String,
    /// The account.
    pub account_id: AccountId,
    /// Award or redemption.
    pub kind: EntryKind,
    /// Miles added (award) or spent (redemption).
    pub miles: u64,
    /// The account's tier when the entry was made (awards earn at it).
    pub tier: Tier,
    /// The redeemable balance right after the entry was applied.
    pub balance_after: u64,
    /// Applied or reversed.
    pub state: EntryState,
    /// When reversing an award found some of its miles already redeemed, the
    /// balance was clamped at zero and this many miles could not be taken
    /// back. Zero otherwise.
    pub clamped_miles: u64,
    /// When the entry was applied.
    pub created_at: DateTime<Utc>,
    /// When it was reversed, if it was.
    pub reversed_at: Option<DateTime<Utc>>,
}

/// What [`Loyalty::reverse`] did. Repeating it returns the same outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReverseOutcome {
    /// The entry is undone (now or by an earlier call).
    Reversed(LoyaltyEntry),
    /// No award or redemption had arrived under the key. A tombstone now
    /// stands in its place, so one arriving later is refused.
    NothingToReverse,
}

/// What is known about an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryLookup {
    /// Nothing has happened under this key.
    Unknown,
    /// The key was reversed before anything arrived.
    Tombstone,
    /// An award or redemption was made under this key.
    Entry(LoyaltyEntry),
}

/// Why a loyalty operation failed.
///
/// [`is_rejection`](LoyaltyError::is_rejection) separates a definite "no"
/// (a retry gives the same answer) from a failure to reach or use storage
/// (worth retrying with the same key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoyaltyError {
    /// No account with this number.
    #[error("no loyalty account {account_id}")]
    UnknownAccount {
        /// The number asked for.
        account_id: AccountId,
    },
    /// The balance is below the miles asked for.
    #[error("insufficient miles: {requested} requested, balance {balance}")]
    InsufficientMiles {
        /// Redeemable balance.
        balance: u64,
        /// Miles asked for.
        requested: u64,
    },
    /// An amount that cannot earn miles (negative, or a currency without a
    /// fixed rate).
    #[error("invalid amount: {reason}")]
    InvalidAmount {
        /// What was wrong.
        reason: String,
    },
    /// A malformed request (name, email, key, miles).
    #[error("invalid loyalty request: {reason}")]
    InvalidRequest {
        /// What was wrong.
        reason: String,
    },
    /// Another account already uses this email.
    #[error("email already belongs to account {account_id}")]
    EmailInUse {
        /// The account that has it.
        account_id: AccountId,
    },
    /// The key was already reversed (or tombstoned), so the operation is
    /// refused rather than applied after its compensation.
    #[error("loyalty entry {key:?} was already reversed")]
    AlreadyCompensated {
        /// The key.
        key: String,
    },
    /// The key was used before for a different request.
    #[error("idempotency key {key:?} was used for a different request")]
    KeyReused {
        /// The key.
        key: String,
    },
    /// The store failed or holds a record it cannot read.
    #[error("loyalty storage failed: {message}")]
    Storage {
        /// What failed.
        message: String,
    },
    /// The participant could not be reached (remote implementations).
    #[error("loyalty unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
    },
}

impl LoyaltyError {
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

    fn storage(e: impl fmt::Display) -> Self {
        LoyaltyError::Storage {
            message: e.to_string(),
        }
    }
}

/// Loyalty accounts and miles by idempotency key.
///
/// Implementations must be usable as `Arc<dyn Loyalty>` and return only once
/// the effect is durable.
#[async_trait]
pub trait Loyalty: Send + Sync {
    /// Opens an account with a new eight-digit number. Idempotent by `key`;
    /// refused with [`LoyaltyError::EmailInUse`] when another account has the
    /// email.
    async fn create_account(
        &self,
        key: &str,
        request: &CreateAccount,
    ) -> Result<LoyaltyAccount, LoyaltyError>;

    /// The account `id`.
    async fn account(&self, id: &AccountId) -> Result<LoyaltyAccount, LoyaltyError>;

    /// The account with `email`, if any.
    async fn account_by_email(&self, email: &str) -> Result<Option<LoyaltyAccount>, LoyaltyError>;

    /// Awards the miles `amount` earns at the account's current tier, to both
    /// balance and qualifying miles. Repeating it returns the same entry.
    async fn award(
        &self,
        key: &str,
        account_id: &AccountId,
        amount: &Money,
    ) -> Result<LoyaltyEntry, LoyaltyError>;

    /// Spends `miles` from the balance; qualifying miles and the tier are
    /// untouched. Refused with [`LoyaltyError::InsufficientMiles`].
    async fn redeem(
        &self,
        key: &str,
        account_id: &AccountId,
        miles: u64,
    ) -> Result<LoyaltyEntry, LoyaltyError>;

    /// Undoes the award or redemption made under `key`. An award's miles come
    /// off qualifying miles and the balance, the balance clamped at zero (the
    /// shortfall is recorded in [`LoyaltyEntry::clamped_miles`]); a
    /// redemption's miles go back to the balance. For an unknown key it
    /// records a tombstone and returns [`ReverseOutcome::NothingToReverse`].
    async fn reverse(&self, key: &str) -> Result<ReverseOutcome, LoyaltyError>;

    /// What is known about `key`.
    async fn entry(&self, key: &str) -> Result<EntryLookup, LoyaltyError>;

    /// An account's awards and redemptions, oldest first.
    async fn history(&self, account_id: &AccountId) -> Result<Vec<LoyaltyEntry>, LoyaltyError>;

    /// Every account, by number. For consistency checks and admin.
    async fn all_accounts(&self) -> Result<Vec<LoyaltyAccount>, LoyaltyError>;
}

/// What the `loyalty_accounts` tree stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AccountRecord {
    id: AccountId,
    first_name: String,
    last_name: String,
    email: String,
    balance: u64,
    qualifying_miles: u64,
    created_at: DateTime<Utc>,
}

impl AccountRecord {
    fn view(&self) -> LoyaltyAccount {
        LoyaltyAccount {
            id: self.id.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            email: self.email.clone(),
            balance: self.balance,
            qualifying_miles: self.qualifying_miles,
            tier: Tier::for_qualifying_miles(self.qualifying_miles),
            created_at: self.created_at,
        }
    }
}

/// What the `loyalty_entries` tree stores under a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum EntryRecord {
    Entry(LoyaltyEntry),
    Tombstone { at: DateTime<Utc> },
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    v: u32,
    record: &'a T,
}

#[derive(Deserialize)]
struct EnvelopeIn<T> {
    record: T,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u32,
}

fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, LoyaltyError> {
    serde_json::to_vec(&EnvelopeOut {
        v: FORMAT_VERSION,
        record,
    })
    .map_err(LoyaltyError::storage)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, LoyaltyError> {
    let version: VersionOnly = serde_json::from_slice(bytes).map_err(LoyaltyError::storage)?;
    if version.v != FORMAT_VERSION {
        return Err(LoyaltyError::storage(format!(
            "unsupported record format version {}",
            version.v
        )));
    }
    let env: EnvelopeIn<T> = serde_json::from_slice(bytes).map_err(LoyaltyError::storage)?;
    Ok(env.record)
}

type TxResult<T> = Result<T, ConflictableTransactionError<LoyaltyError>>;

fn abort<T>(e: LoyaltyError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn tx_get<T: DeserializeOwned>(tree: &TransactionalTree, key: &[u8]) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(raw) => match decode(&raw) {
            Ok(v) => Ok(Some(v)),
            Err(e) => abort(e),
        },
        None => Ok(None),
    }
}

fn tx_put<T: Serialize>(tree: &TransactionalTree, key: &[u8], record: &T) -> TxResult<()> {
    match encode(record) {
        Ok(bytes) => {
            tree.insert(key, bytes)?;
            Ok(())
        }
        Err(e) => abort(e),
    }
}

fn from_tx<T>(r: Result<T, TransactionError<LoyaltyError>>) -> Result<T, LoyaltyError> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => LoyaltyError::storage(e),
    })
}

fn invalid(reason: impl Into<String>) -> LoyaltyError {
    LoyaltyError::InvalidRequest {
        reason: reason.into(),
    }
}

fn check_key(key: &str) -> Result<(), LoyaltyError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(invalid(format!(
            "idempotency key must be 1..={MAX_KEY_LEN} bytes"
        )));
    }
    Ok(())
}

fn check_name(field: &str, value: &str) -> Result<String, LoyaltyError> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > 100 || v.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} must be 1 to 100 printable characters"
        )));
    }
    Ok(v.to_string())
}

fn normalize_email(email: &str) -> Result<String, LoyaltyError> {
    let email = email.trim().to_lowercase();
    let ok = email.len() <= 254
        && !email.contains(char::is_whitespace)
        && !email.chars().any(char::is_control)
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if ok {
        Ok(email)
    } else {
        Err(invalid("email is not valid"))
    }
}

fn history_prefix(id: &AccountId) -> Vec<u8> {
    let mut k = id.0.as_bytes().to_vec();
    k.push(0);
    k
}

fn new_account_id() -> AccountId {
    AccountId(
        rand::thread_rng()
            .gen_range(10_000_000u32..=99_999_999)
            .to_string(),
    )
}

fn unknown(id: &AccountId) -> LoyaltyError {
    LoyaltyError::UnknownAccount {
        account_id: id.clone(),
    }
}

struct Inner {
    db: sled::Db,
    accounts: sled::Tree,
    entries: sled::Tree,
    by_account: sled::Tree,
    by_email: sled::Tree,
    create_keys: sled::Tree,
    clock: Arc<dyn Clock>,
    /// Serialises this participant's mutations; each is one sled transaction.
    write_lock: Mutex<()>,
}

/// [`Loyalty`] on sled trees `loyalty_accounts`, `loyalty_entries`,
/// `loyalty_by_account`, `loyalty_by_email` and `loyalty_create_keys`.
///
/// Cheap to clone; open it once per database and share the clones.
#[derive(Clone)]
pub struct LocalLoyalty {
    inner: Arc<Inner>,
}

impl fmt::Debug for LocalLoyalty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLoyalty").finish_non_exhaustive()
    }
}

impl LocalLoyalty {
    /// Opens loyalty on `db`, timestamping with the system clock.
    pub fn open(db: &sled::Db) -> Result<Self, LoyaltyError> {
        Self::open_with_clock(db, Arc::new(SystemClock))
    }

    /// Opens loyalty on `db`, timestamping with `clock`.
    pub fn open_with_clock(db: &sled::Db, clock: Arc<dyn Clock>) -> Result<Self, LoyaltyError> {
        let tree = |name: &str| db.open_tree(name).map_err(LoyaltyError::storage);
        Ok(LocalLoyalty {
            inner: Arc::new(Inner {
                db: db.clone(),
                accounts: tree(ACCOUNTS_TREE)?,
                entries: tree(ENTRIES_TREE)?,
                by_account: tree(BY_ACCOUNT_TREE)?,
                by_email: tree(BY_EMAIL_TREE)?,
                create_keys: tree(CREATE_KEYS_TREE)?,
                clock,
                write_lock: Mutex::new(()),
            }),
        })
    }

    async fn flush(&self) -> Result<(), LoyaltyError> {
        self.inner
            .db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(LoyaltyError::storage)
    }

    fn read_account(&self, id: &AccountId) -> Result<Option<AccountRecord>, LoyaltyError> {
        match self
            .inner
            .accounts
            .get(id.0.as_bytes())
            .map_err(LoyaltyError::storage)?
        {
            Some(raw) => Ok(Some(decode(&raw)?)),
            None => Ok(None),
        }
    }

    /// Applies a new entry (award or redemption) under `key`, or returns the
    /// one already there. `make` computes the entry and the updated account
    /// from the account as it stands inside the transaction.
    async fn apply_entry<F>(
        &self,
        key: &str,
        account_id: &AccountId,
        make: F,
    ) -> Result<LoyaltyEntry, LoyaltyError>
    where
        F: Fn(&AccountRecord, DateTime<Utc>) -> Result<(LoyaltyEntry, AccountRecord), LoyaltyError>,
        F: Send + Sync,
    {
        let now = self.inner.clock.now();
        let guard = self.inner.write_lock.lock().await;
        let seq = self.inner.db.generate_id().map_err(LoyaltyError::storage)?;
        let i = &self.inner;
        let result = from_tx((&i.accounts, &i.entries, &i.by_account).transaction(
            |(accounts, entries, by_account)| {
                match tx_get::<EntryRecord>(entries, key.as_bytes())? {
                    Some(EntryRecord::Tombstone { .. }) => {
                        return abort(LoyaltyError::AlreadyCompensated { key: key.into() })
                    }
                    Some(EntryRecord::Entry(e)) => return Ok((e, false)),
                    None => {}
                }
                let Some(account) = tx_get::<AccountRecord>(accounts, account_id.0.as_bytes())?
                else {
                    return abort(unknown(account_id));
                };
                let (entry, account) = match make(&account, now) {
                    Ok(x) => x,
                    Err(e) => return abort(e),
                };
                tx_put(accounts, account.id.0.as_bytes(), &account)?;
                tx_put(entries, key.as_bytes(), &EntryRecord::Entry(entry.clone()))?;
                let mut idx = history_prefix(account_id);
                idx.extend_from_slice(&seq.to_be_bytes());
                by_account.insert(idx, key.as_bytes())?;
                Ok((entry, true))
            },
        ));
        drop(guard);
        let (entry, fresh) = result?;
        self.flush().await?;
        tracing::debug!(key, account_id = %entry.account_id, miles = entry.miles, kind = ?entry.kind, fresh, "loyalty entry");
        Ok(entry)
    }
}

/// Checks that a stored entry is the replay of the request now made.
fn same_request(
    entry: &LoyaltyEntry,
    account_id: &AccountId,
    key: &str,
    matches: bool,
) -> Result<(), LoyaltyError> {
    if entry.account_id != *account_id || !matches {
        return Err(LoyaltyError::KeyReused { key: key.into() });
    }
    if entry.state == EntryState::Reversed {
        return Err(LoyaltyError::AlreadyCompensated { key: key.into() });
    }
    Ok(())
}

#[async_trait]
impl Loyalty for LocalLoyalty {
    async fn create_account(
        &self,
        key: &str,
        request: &CreateAccount,
    ) -> Result<LoyaltyAccount, LoyaltyError> {
        check_key(key)?;
        let first_name = check_name("first name", &request.first_name)?;
        let last_name = check_name("last name", &request.last_name)?;
        let email = normalize_email(&request.email)?;
        let now = self.inner.clock.now();
        let i = &self.inner;
        let guard = i.write_lock.lock().await;
        // A random number may collide with an existing account; try again.
        let mut outcome = None;
        for _ in 0..32 {
            let id = new_account_id();
            let result = (&i.accounts, &i.by_email, &i.create_keys).transaction(
                |(accounts, by_email, create_keys)| {
                    if let Some(existing) = create_keys.get(key.as_bytes())? {
                        let id = AccountId(String::from_utf8_lossy(&existing).into_owned());
                        let Some(acc) = tx_get::<AccountRecord>(accounts, id.0.as_bytes())? else {
                            return abort(LoyaltyError::storage(format!(
                                "account {id} of key {key:?} is missing"
                            )));
                        };
                        if acc.email != email
                            || acc.first_name != first_name
                            || acc.last_name != last_name
                        {
                            return abort(LoyaltyError::KeyReused { key: key.into() });
                        }
                        return Ok(Some((acc, false)));
                    }
                    if let Some(owner) = by_email.get(email.as_bytes())? {
                        return abort(LoyaltyError::EmailInUse {
                            account_id: AccountId(String::from_utf8_lossy(&owner).into_owned()),
                        });
                    }
                    if accounts.get(id.0.as_bytes())?.is_some() {
                        return Ok(None);
                    }
                    let acc = AccountRecord {
                        id: id.clone(),
                        first_name: first_name.clone(),
                        last_name: last_name.clone(),
                        email: email.clone(),
                        balance: 0,
                        qualifying_miles: 0,
                        created_at: now,
                    };
                    tx_put(accounts, id.0.as_bytes(), &acc)?;
                    by_email.insert(email.as_bytes(), id.0.as_bytes())?;
                    create_keys.insert(key.as_bytes(), id.0.as_bytes())?;
                    Ok(Some((acc, true)))
                },
            );
            match from_tx(result) {
                Ok(Some(done)) => {
                    outcome = Some(Ok(done));
                    break;
                }
                Ok(None) => continue,
                Err(e) => {
                    outcome = Some(Err(e));
                    break;
                }
            }
        }
        drop(guard);
        let (account, fresh) = outcome.unwrap_or_else(|| {
            Err(LoyaltyError::storage(
                "could not find a free account number",
            ))
        })?;
        self.flush().await?;
        tracing::debug!(key, account_id = %account.id, fresh, "loyalty account");
        Ok(account.view())
    }

    async fn account(&self, id: &AccountId) -> Result<LoyaltyAccount, LoyaltyError> {
        self.read_account(id)?
            .map(|a| a.view())
            .ok_or_else(|| unknown(id))
    }

    async fn account_by_email(&self, email: &str) -> Result<Option<LoyaltyAccount>, LoyaltyError> {
        let email = normalize_email(email)?;
        let Some(id) = self
            .inner
            .by_email
            .get(email.as_bytes())
            .map_err(LoyaltyError::storage)?
        else {
            return Ok(None);
        };
        let id = AccountId(String::from_utf8_lossy(&id).into_owned());
        Ok(self.read_account(&id)?.map(|a| a.view()))
    }

    async fn award(
        &self,
        key: &str,
        account_id: &AccountId,
        amount: &Money,
    ) -> Result<LoyaltyEntry, LoyaltyError> {
        check_key(key)?;
        if amount.minor < 0 {
            return Err(LoyaltyError::InvalidAmount {
                reason: format!("amount must not be negative, got {amount}"),
            });
        }
        let usd_minor = to_usd_minor(amount).map_err(|e| LoyaltyError::InvalidAmount {
            reason: e.to_string(),
        })?;
        let entry = self
            .apply_entry(key, account_id, |acc, now| {
                let tier = Tier::for_qualifying_miles(acc.qualifying_miles);
                let miles = miles_for_usd_minor(usd_minor, tier);
                let account = AccountRecord {
                    balance: acc.balance.saturating_add(miles),
                    qualifying_miles: acc.qualifying_miles.saturating_add(miles),
                    ..acc.clone()
                };
                let entry = LoyaltyEntry {
                    key: key.to_string(),
                    account_id: acc.id.clone(),
                    kind: EntryKind::Award {
                        amount: amount.clone(),
                        usd_minor,
                    },
                    miles,
                    tier,
                    balance_after: account.balance,
                    state: EntryState::Applied,
                    clamped_miles: 0,
                    created_at: now,
                    reversed_at: None,
                };
                Ok((entry, account))
            })
            .await?;
        let matches = matches!(&entry.kind, EntryKind::Award { amount: a, .. } if a == amount);
        same_request(&entry, account_id, key, matches)?;
        Ok(entry)
    }

    async fn redeem(
        &self,
        key: &str,
        account_id: &AccountId,
        miles: u64,
    ) -> Result<LoyaltyEntry, LoyaltyError> {
        check_key(key)?;
        if miles == 0 || miles > MAX_REDEEM_MILES {
            return Err(invalid(format!(
                "miles to redeem must be 1..={MAX_REDEEM_MILES}, got {miles}"
            )));
        }
        let entry = self
            .apply_entry(key, account_id, |acc, now| {
                if acc.balance < miles {
                    return Err(LoyaltyError::InsufficientMiles {
                        balance: acc.balance,
                        requested: miles,
                    });
                }
                let account = AccountRecord {
                    balance: acc.balance - miles,
                    ..acc.clone()
                };
                let entry = LoyaltyEntry {
                    key: key.to_string(),
                    account_id: acc.id.clone(),
                    kind: EntryKind::Redemption,
                    miles,
                    tier: Tier::for_qualifying_miles(acc.qualifying_miles),
                    balance_after: account.balance,
                    state: EntryState::Applied,
                    clamped_miles: 0,
                    created_at: now,
                    reversed_at: None,
                };
                Ok((entry, account))
            })
            .await?;
        let matches = entry.kind == EntryKind::Redemption && entry.miles == miles;
        same_request(&entry, account_id, key, matches)?;
        Ok(entry)
    }

    async fn reverse(&self, key: &str) -> Result<ReverseOutcome, LoyaltyError> {
        check_key(key)?;
        let now = self.inner.clock.now();
        let i = &self.inner;
        let guard = i.write_lock.lock().await;
        let result = from_tx(
            (&i.accounts, &i.entries).transaction(|(accounts, entries)| {
                let entry = match tx_get::<EntryRecord>(entries, key.as_bytes())? {
                    None => {
                        tx_put(entries, key.as_bytes(), &EntryRecord::Tombstone { at: now })?;
                        return Ok(ReverseOutcome::NothingToReverse);
                    }
                    Some(EntryRecord::Tombstone { .. }) => {
                        return Ok(ReverseOutcome::NothingToReverse)
                    }
                    Some(EntryRecord::Entry(e)) if e.state == EntryState::Reversed => {
                        return Ok(ReverseOutcome::Reversed(e))
                    }
                    Some(EntryRecord::Entry(e)) => e,
                };
                let Some(mut account) =
                    tx_get::<AccountRecord>(accounts, entry.account_id.0.as_bytes())?
                else {
                    return abort(LoyaltyError::storage(format!(
                        "account {} of entry {key:?} is missing",
                        entry.account_id
                    )));
                };
                let mut clamped_miles = 0;
                match entry.kind {
                    EntryKind::Award { .. } => {
                        account.qualifying_miles =
                            account.qualifying_miles.saturating_sub(entry.miles);
                        let taken = account.balance.min(entry.miles);
                        clamped_miles = entry.miles - taken;
                        account.balance -= taken;
                    }
                    EntryKind::Redemption => {
                        account.balance = account.balance.saturating_add(entry.miles);
                    }
                }
                let reversed = LoyaltyEntry {
                    state: EntryState::Reversed,
                    clamped_miles,
                    reversed_at: Some(now),
                    ..entry
                };
                tx_put(accounts, account.id.0.as_bytes(), &account)?;
                tx_put(
                    entries,
                    key.as_bytes(),
                    &EntryRecord::Entry(reversed.clone()),
                )?;
                Ok(ReverseOutcome::Reversed(reversed))
            }),
        );
        drop(guard);
        match &result {
            Ok(ReverseOutcome::Reversed(e)) => {
                tracing::debug!(key, account_id = %e.account_id, miles = e.miles, clamped = e.clamped_miles, "loyalty entry reversed")
            }
            Ok(ReverseOutcome::NothingToReverse) => {
                tracing::debug!(key, "reverse of unknown entry: tombstone")
            }
            Err(e) => tracing::warn!(key, error = %e, "reverse failed"),
        }
        let outcome = result?;
        self.flush().await?;
        Ok(outcome)
    }

    async fn entry(&self, key: &str) -> Result<EntryLookup, LoyaltyError> {
        check_key(key)?;
        match self
            .inner
            .entries
            .get(key.as_bytes())
            .map_err(LoyaltyError::storage)?
        {
            None => Ok(EntryLookup::Unknown),
            Some(raw) => Ok(match decode::<EntryRecord>(&raw)? {
                EntryRecord::Entry(e) => EntryLookup::Entry(e),
                EntryRecord::Tombstone { .. } => EntryLookup::Tombstone,
            }),
        }
    }

    async fn history(&self, account_id: &AccountId) -> Result<Vec<LoyaltyEntry>, LoyaltyError> {
        if self.read_account(account_id)?.is_none() {
            return Err(unknown(account_id));
        }
        let mut out = Vec::new();
        for item in self
            .inner
            .by_account
            .scan_prefix(history_prefix(account_id))
        {
            let (_, key) = item.map_err(LoyaltyError::storage)?;
            if let Some(raw) = self
                .inner
                .entries
                .get(&key)
                .map_err(LoyaltyError::storage)?
            {
                if let EntryRecord::Entry(e) = decode::<EntryRecord>(&raw)? {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    async fn all_accounts(&self) -> Result<Vec<LoyaltyAccount>, LoyaltyError> {
        let mut out = Vec::new();
        for item in self.inner.accounts.iter() {
            let (_, raw) = item.map_err(LoyaltyError::storage)?;
            out.push(decode::<AccountRecord>(&raw)?.view());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Currency;

    #[test]
    fn tiers_follow_thresholds() {
        assert_eq!(Tier::for_qualifying_miles(0), Tier::Regular);
        assert_eq!(Tier::for_qualifying_miles(24_999), Tier::Regular);
        assert_eq!(Tier::for_qualifying_miles(25_000), Tier::Gold);
        assert_eq!(Tier::for_qualifying_miles(49_999), Tier::Gold);
        assert_eq!(Tier::for_qualifying_miles(50_000), Tier::Platinum);
        assert_eq!(Tier::for_qualifying_miles(75_000), Tier::PlatinumPro);
        assert_eq!(Tier::for_qualifying_miles(100_000), Tier::ExecutivePlatinum);
        assert_eq!(Tier::for_qualifying_miles(124_999), Tier::ExecutivePlatinum);
        assert_eq!(Tier::for_qualifying_miles(125_000), Tier::ConciergeKey);
        assert_eq!(Tier::for_qualifying_miles(u64::MAX), Tier::ConciergeKey);
        for t in Tier::ALL {
            assert_eq!(Tier::for_qualifying_miles(t.threshold()), t);
        }
    }

    #[test]
    fn miles_per_tier() {
        // $100.00 = 500 base miles
        let expect = [500, 700, 800, 900, 1100, 1100];
        for (t, m) in Tier::ALL.iter().zip(expect) {
            assert_eq!(miles_for_usd_minor(10_000, *t), m, "{t}");
        }
        assert_eq!(miles_for_usd_minor(19, Tier::Regular), 0);
        assert_eq!(miles_for_usd_minor(20, Tier::Regular), 1);
        assert_eq!(miles_for_usd_minor(-500, Tier::Gold), 0);
        // INR 8300.00 = $100
        let usd = to_usd_minor(&Money::new(830_000, Currency::inr())).unwrap();
        assert_eq!(miles_for_usd_minor(usd, Tier::Regular), 500);
    }

    #[test]
    fn reads_the_v1_record_format() {
        let raw = br#"{"v":1,"record":{"id":"12345678","first_name":"Ada","last_name":"L","email":"a@b.c","balance":5,"qualifying_miles":30000,"created_at":"2026-01-01T00:00:00Z"}}"#;
        let acc: AccountRecord = decode(raw).unwrap();
        assert_eq!(acc.view().tier, Tier::Gold);
        let raw = br#"{"v":1,"record":{"entry":{"key":"k","account_id":"12345678","kind":{"award":{"amount":{"minor":100,"currency":"USD"},"usd_minor":100}},"miles":5,"tier":"platinum_pro","balance_after":5,"state":"applied","clamped_miles":0,"created_at":"2026-01-01T00:00:00Z","reversed_at":null}}}"#;
        assert!(
            matches!(decode::<EntryRecord>(raw).unwrap(), EntryRecord::Entry(e) if e.tier == Tier::PlatinumPro)
        );
        let raw = br#"{"v":1,"record":{"entry":{"key":"k","account_id":"1","kind":"redemption","miles":5,"tier":"regular","balance_after":0,"state":"reversed","clamped_miles":0,"created_at":"2026-01-01T00:00:00Z","reversed_at":"2026-01-02T00:00:00Z"}}}"#;
        assert!(
            matches!(decode::<EntryRecord>(raw).unwrap(), EntryRecord::Entry(e) if e.kind == EntryKind::Redemption)
        );
        assert!(decode::<EntryRecord>(br#"{"v":0,"record":null}"#).is_err());
    }

    #[test]
    fn names_and_emails_are_checked() {
        assert_eq!(check_name("first name", "  Ada ").unwrap(), "Ada");
        assert!(check_name("first name", " ").is_err());
        assert!(check_name("first name", &"x".repeat(101)).is_err());
        assert!(normalize_email("x@y").is_ok());
        assert!(normalize_email("xy").is_err());
    }
}
