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
//! is acknowledged. The entries, each account's counters and its history
//! are a [`crate::ledger`], so opening reads no entry, and histories are
//! read a page at a time.

use crate::ledger::{Counter, Ledger, LedgerEntry, LedgerError, Registry, Trees, Versioned};
use crate::payments::{Clock, SystemClock};
use crate::pricing::to_usd_minor;
use crate::types::Money;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// Miles earned per US dollar before the tier multiplier.
pub const BASE_MILES_PER_USD: u64 = 5;
/// Longest idempotency key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Most miles one redemption may spend.
pub const MAX_REDEEM_MILES: u64 = 10_000_000;

const ACCOUNTS_TREE: &str = "loyalty_accounts";
const ENTRIES_TREE: &str = "loyalty_entries";
const COUNTERS_TREE: &str = "loyalty_counters";
const HISTORY_TREE: &str = "loyalty_history";
const META_TREE: &str = "loyalty_meta";
/// Where account creation keys were kept before the account record held them.
const LEGACY_CREATE_KEYS_TREE: &str = "loyalty_create_keys";

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
    /// Nothing was applied under the key: no award or redemption had
    /// arrived (a tombstone now stands in its place, so one arriving later is
    /// refused), or the redemption was refused.
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
    /// A redemption under this key was refused; repeating it repeats
    /// `error`.
    Refused {
        /// Why it was refused.
        error: LoyaltyError,
    },
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
    /// untouched. Refused with [`LoyaltyError::InsufficientMiles`]; the
    /// refusal is remembered, so a repeat returns it unchanged.
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

/// What the `loyalty_accounts` tree stores: who the member is. Balances are
/// not stored here; they follow from the entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AccountRecord {
    id: AccountId,
    first_name: String,
    last_name: String,
    email: String,
    created_at: DateTime<Utc>,
    /// The idempotency key that created the account (absent in records
    /// written before it was kept here).
    #[serde(default)]
    create_key: Option<String>,
}

/// An account's counters: a projection of its entries. Signed, so that
/// adding and removing entries in any order (as a rebuild does, in key
/// order) gives the same sums; the true values are never negative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    balance: i64,
    qualifying_miles: i64,
}

impl Counters {
    /// What `entry`, as it stands, contributes to (balance, qualifying).
    /// A reversed award contributes the miles its reversal could not take
    /// back (`clamped_miles`), which is what stayed on the balance.
    fn contribution(entry: &LoyaltyEntry) -> (i64, i64) {
        let miles = i64::try_from(entry.miles).unwrap_or(i64::MAX);
        match (&entry.kind, entry.state) {
            (EntryKind::Award { .. }, EntryState::Applied) => (miles, miles),
            (EntryKind::Award { .. }, EntryState::Reversed) => {
                (i64::try_from(entry.clamped_miles).unwrap_or(i64::MAX), 0)
            }
            (EntryKind::Redemption, EntryState::Applied) => (-miles, 0),
            (EntryKind::Redemption, EntryState::Reversed) => (0, 0),
        }
    }

    #[cfg(test)]
    fn add(&mut self, entry: &LoyaltyEntry) {
        let (b, q) = Self::contribution(entry);
        self.balance = self.balance.saturating_add(b);
        self.qualifying_miles = self.qualifying_miles.saturating_add(q);
    }

    #[cfg(test)]
    fn remove(&mut self, entry: &LoyaltyEntry) {
        let (b, q) = Self::contribution(entry);
        self.balance = self.balance.saturating_sub(b);
        self.qualifying_miles = self.qualifying_miles.saturating_sub(q);
    }

    fn balance(&self) -> u64 {
        u64::try_from(self.balance).unwrap_or(0)
    }

    fn qualifying_miles(&self) -> u64 {
        u64::try_from(self.qualifying_miles).unwrap_or(0)
    }
}

fn view(record: &AccountRecord, counters: Counters) -> LoyaltyAccount {
    LoyaltyAccount {
        id: record.id.clone(),
        first_name: record.first_name.clone(),
        last_name: record.last_name.clone(),
        email: record.email.clone(),
        balance: counters.balance(),
        qualifying_miles: counters.qualifying_miles(),
        tier: Tier::for_qualifying_miles(counters.qualifying_miles()),
        created_at: record.created_at,
    }
}

/// What the `loyalty_entries` tree stores under a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum EntryRecord {
    Entry(LoyaltyEntry),
    Tombstone {
        at: DateTime<Utc>,
    },
    /// A business refusal, remembered so a retry gets the same answer.
    Refused {
        account_id: AccountId,
        miles: u64,
        error: LoyaltyError,
        at: DateTime<Utc>,
    },
}

/// What an award or redemption computes from the account as it stands.
enum Made {
    Applied(LoyaltyEntry),
    Refused { miles: u64, error: LoyaltyError },
}

/// What is stored under a key after [`LocalLoyalty::apply_entry`].
enum Stored {
    Entry(LoyaltyEntry),
    Refused {
        account_id: AccountId,
        miles: u64,
        error: LoyaltyError,
    },
}

fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, LoyaltyError> {
    crate::envelope::encode(record).map_err(LoyaltyError::storage)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, LoyaltyError> {
    crate::envelope::decode(bytes).map_err(LoyaltyError::storage)
}

fn applied(record: EntryRecord) -> Option<LoyaltyEntry> {
    match record {
        EntryRecord::Entry(e) => Some(e),
        _ => None,
    }
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

impl Counters {
    fn from_counter(c: Counter) -> Self {
        Counters {
            balance: c[0],
            qualifying_miles: c[1],
        }
    }
}

impl LedgerEntry for EntryRecord {
    /// An entry adds its [`Counters::contribution`] to its account's
    /// counters `[balance, qualifying miles]`, and is listed in its history.
    fn contributions(&self) -> Vec<(Vec<u8>, Counter)> {
        match self {
            EntryRecord::Entry(e) => {
                let (b, q) = Counters::contribution(e);
                vec![(e.account_id.0.as_bytes().to_vec(), [b, q])]
            }
            _ => Vec::new(),
        }
    }

    fn owner(&self) -> Option<Vec<u8>> {
        match self {
            EntryRecord::Entry(e) => Some(e.account_id.0.as_bytes().to_vec()),
            _ => None,
        }
    }

    fn listed_at(&self) -> i64 {
        match self {
            EntryRecord::Entry(e) => e.created_at.timestamp_micros(),
            EntryRecord::Tombstone { at } | EntryRecord::Refused { at, .. } => {
                at.timestamp_micros()
            }
        }
    }
}

impl From<LedgerError> for LoyaltyError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::BadCursor => invalid(e.to_string()),
            LedgerError::Storage(m) => LoyaltyError::Storage { message: m },
        }
    }
}

/// What loyalty keeps in memory: indexes of the accounts (not of the
/// entries), built from the accounts tree on open.
#[derive(Default)]
struct State {
    accounts: HashSet<AccountId>,
    by_email: HashMap<String, AccountId>,
    create_keys: HashMap<String, AccountId>,
}

/// Open local loyalty participants in this process, one per database.
static OPEN: Registry<Inner> = Registry::new();

struct Inner {
    /// Truth: one [`AccountRecord`] per account number.
    accounts: sled::Tree,
    /// One [`EntryRecord`] per idempotency key, counters and history per
    /// account. Its lock (over [`State`]) serialises mutations; no `.await`
    /// happens while it is held.
    ledger: Ledger<EntryRecord, State>,
    meta: sled::Tree,
    clock: Arc<dyn Clock>,
}

type Locked<'a> = std::sync::MutexGuard<'a, State>;

impl Inner {
    fn load(db: &sled::Db, meta: sled::Tree, clock: Arc<dyn Clock>) -> Result<Self, LoyaltyError> {
        let accounts = db.open_tree(ACCOUNTS_TREE).map_err(LoyaltyError::storage)?;
        let mut state = State::default();
        for item in accounts.iter() {
            let (_, raw) = item.map_err(LoyaltyError::storage)?;
            let acc: AccountRecord = decode(&raw)?;
            state.accounts.insert(acc.id.clone());
            state.by_email.insert(acc.email.clone(), acc.id.clone());
            if let Some(key) = acc.create_key {
                state.create_keys.insert(key, acc.id);
            }
        }
        // Accounts written before their record kept the creating key had it
        // in a tree of its own.
        if db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == LEGACY_CREATE_KEYS_TREE.as_bytes())
        {
            let legacy = db
                .open_tree(LEGACY_CREATE_KEYS_TREE)
                .map_err(LoyaltyError::storage)?;
            for item in legacy.iter() {
                let (key, id) = item.map_err(LoyaltyError::storage)?;
                state.create_keys.insert(
                    String::from_utf8_lossy(&key).into_owned(),
                    AccountId(String::from_utf8_lossy(&id).into_owned()),
                );
            }
        }
        let accounts_known = state.accounts.len();
        let trees = Trees {
            entries: ENTRIES_TREE,
            buckets: COUNTERS_TREE,
            index: HISTORY_TREE,
        };
        let ledger = Ledger::open(db, meta.clone(), trees, state)?;
        tracing::debug!(
            accounts = accounts_known,
            records_read = ledger.read_at_open(),
            "loyalty opened"
        );
        Ok(Inner {
            accounts,
            ledger,
            meta,
            clock,
        })
    }

    fn lock(&self) -> Locked<'_> {
        self.ledger.lock()
    }

    fn counters(&self, id: &AccountId) -> Result<Counters, LoyaltyError> {
        Ok(Counters::from_counter(
            self.ledger.counter(id.0.as_bytes())?,
        ))
    }

    fn account_record(&self, id: &AccountId) -> Result<Option<AccountRecord>, LoyaltyError> {
        match self
            .accounts
            .get(id.0.as_bytes())
            .map_err(LoyaltyError::storage)?
        {
            Some(raw) => Ok(Some(decode(&raw)?)),
            None => Ok(None),
        }
    }

    fn entry_record(&self, key: &str) -> Result<Option<Versioned<EntryRecord>>, LoyaltyError> {
        Ok(self.ledger.get(key)?)
    }

    fn put_entry(
        &self,
        locked: &Locked<'_>,
        key: &str,
        old: Option<&Versioned<EntryRecord>>,
        record: &EntryRecord,
    ) -> Result<(), LoyaltyError> {
        Ok(self.ledger.put(locked, key, old, record)?)
    }

    fn view_of(&self, id: &AccountId) -> Result<Option<LoyaltyAccount>, LoyaltyError> {
        let Some(record) = self.account_record(id)? else {
            return Ok(None);
        };
        let counters = self.counters(id)?;
        Ok(Some(view(&record, counters)))
    }
}

/// [`Loyalty`] on sled trees `loyalty_accounts` (one record per account),
/// `loyalty_entries` (one record per idempotency key) and `loyalty_meta`.
///
/// Balances, qualifying miles and histories are kept on disk beside the
/// entries (`loyalty_counters`, `loyalty_history`), so opening reads no
/// entry; the email and creating-key indexes of the accounts are kept in
/// memory, built from the accounts when loyalty is opened. Opening it again on the same database while an
/// instance is alive returns that instance, with the clock it was opened
/// with. Cheap to clone.
#[derive(Clone)]
pub struct LocalLoyalty {
    inner: Arc<Inner>,
    cover: crate::ledger::Cover,
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
        let meta = db.open_tree(META_TREE).map_err(LoyaltyError::storage)?;
        let inner = OPEN.open_or_build(
            &meta,
            |inner| &inner.meta,
            || Inner::load(db, meta.clone(), clock),
            LoyaltyError::storage,
        )?;
        Ok(LocalLoyalty {
            inner,
            cover: crate::ledger::Cover::default(),
        })
    }

    /// The same participant, with its saga steps' writes made durable by
    /// the engine's flushes (see `ledger::Cover`): refused unless `engine`
    /// is the group commit of this participant's own database.
    pub fn covered_by(self, engine: &saga_engine::store::Durability) -> Result<Self, LoyaltyError> {
        let cover = crate::ledger::Cover::engine(self.inner.ledger.db(), engine)?;
        Ok(LocalLoyalty { cover, ..self })
    }

    /// Returns once every write committed so far is durable.
    async fn flush(&self) -> Result<(), LoyaltyError> {
        self.cover
            .direct(async { Ok(self.inner.ledger.durable().await?) })
            .await
    }

    /// Makes a saga step's write durable before the reply, unless the
    /// engine's next flush covers it.
    async fn step_flush(&self) -> Result<(), LoyaltyError> {
        self.cover
            .step(async { Ok(self.inner.ledger.durable().await?) })
            .await
    }

    /// Entries read while loyalty was opened: at most one, or every entry
    /// once when a database written before the counters were kept on disk
    /// is upgraded. (The accounts themselves are read at open.)
    pub fn entries_read_at_open(&self) -> u64 {
        self.inner.ledger.read_at_open()
    }

    /// An account's entries, oldest first, `limit` at a time (clamped to
    /// `1..=`[`crate::ledger::MAX_PAGE_LIMIT`]), starting after `cursor`
    /// (`None`: the first page). Returns the entries and the cursor of the
    /// next page, `None` after the last. Entries made while paging come
    /// after the pages already read: none is returned twice.
    pub fn history_page(
        &self,
        account_id: &AccountId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<LoyaltyEntry>, Option<String>), LoyaltyError> {
        if !self.inner.lock().accounts.contains(account_id) {
            return Err(unknown(account_id));
        }
        let (records, next) =
            self.inner
                .ledger
                .owner_page(account_id.0.as_bytes(), cursor, limit)?;
        Ok((records.into_iter().filter_map(applied).collect(), next))
    }

    /// Applies a new entry (award or redemption) under `key`, or returns
    /// what is already there, then makes it durable. `make` computes the
    /// entry (or a refusal) from the account's counters as they stand, under
    /// the lock.
    async fn apply_entry<F>(
        &self,
        key: &str,
        account_id: &AccountId,
        make: F,
    ) -> Result<Stored, LoyaltyError>
    where
        F: FnOnce(&AccountId, Counters, DateTime<Utc>) -> Made,
    {
        let now = self.inner.clock.now();
        let (stored, fresh) = self.apply_entry_now(key, account_id, make, now)?;
        self.step_flush().await?;
        match &stored {
            Stored::Entry(e) => {
                tracing::debug!(key, account_id = %e.account_id, miles = e.miles, kind = ?e.kind, fresh, "loyalty entry")
            }
            Stored::Refused { error, .. } => {
                tracing::debug!(key, account_id = %account_id, error = %error, fresh, "loyalty entry refused")
            }
        }
        Ok(stored)
    }

    fn apply_entry_now<F>(
        &self,
        key: &str,
        account_id: &AccountId,
        make: F,
        now: DateTime<Utc>,
    ) -> Result<(Stored, bool), LoyaltyError>
    where
        F: FnOnce(&AccountId, Counters, DateTime<Utc>) -> Made,
    {
        let inner = &self.inner;
        let state = inner.lock();
        match inner.entry_record(key)?.map(|v| v.entry) {
            Some(EntryRecord::Tombstone { .. }) => {
                return Err(LoyaltyError::AlreadyCompensated { key: key.into() })
            }
            Some(EntryRecord::Entry(e)) => return Ok((Stored::Entry(e), false)),
            Some(EntryRecord::Refused {
                account_id,
                miles,
                error,
                ..
            }) => {
                let stored = Stored::Refused {
                    account_id,
                    miles,
                    error,
                };
                return Ok((stored, false));
            }
            None => {}
        }
        if !state.accounts.contains(account_id) {
            return Err(unknown(account_id));
        }
        let counters = inner.counters(account_id)?;
        match make(account_id, counters, now) {
            Made::Applied(entry) => {
                inner.put_entry(&state, key, None, &EntryRecord::Entry(entry.clone()))?;
                Ok((Stored::Entry(entry), true))
            }
            Made::Refused { miles, error } => {
                let record = EntryRecord::Refused {
                    account_id: account_id.clone(),
                    miles,
                    error: error.clone(),
                    at: now,
                };
                inner.put_entry(&state, key, None, &record)?;
                let stored = Stored::Refused {
                    account_id: account_id.clone(),
                    miles,
                    error,
                };
                Ok((stored, true))
            }
        }
    }

    /// The synchronous part of [`Loyalty::create_account`], under the lock.
    fn create_now(
        &self,
        key: &str,
        first_name: String,
        last_name: String,
        email: String,
        now: DateTime<Utc>,
    ) -> Result<(LoyaltyAccount, bool), LoyaltyError> {
        let inner = &self.inner;
        let mut state = inner.lock();
        if let Some(id) = state.create_keys.get(key).cloned() {
            let Some(acc) = inner.account_record(&id)? else {
                return Err(LoyaltyError::storage(format!(
                    "account {id} of key {key:?} is missing"
                )));
            };
            if acc.email != email || acc.first_name != first_name || acc.last_name != last_name {
                return Err(LoyaltyError::KeyReused { key: key.into() });
            }
            let counters = inner.counters(&id)?;
            return Ok((view(&acc, counters), false));
        }
        if let Some(owner) = state.by_email.get(&email) {
            return Err(LoyaltyError::EmailInUse {
                account_id: owner.clone(),
            });
        }
        // A random number may be taken already; try another.
        let mut id = new_account_id();
        let mut tries = 0;
        while state.accounts.contains(&id)
            || inner
                .accounts
                .contains_key(id.0.as_bytes())
                .map_err(LoyaltyError::storage)?
        {
            tries += 1;
            if tries > 64 {
                return Err(LoyaltyError::storage(
                    "could not find a free account number",
                ));
            }
            id = new_account_id();
        }
        let record = AccountRecord {
            id: id.clone(),
            first_name,
            last_name,
            email: email.clone(),
            created_at: now,
            create_key: Some(key.to_string()),
        };
        inner
            .accounts
            .insert(id.0.as_bytes(), encode(&record)?)
            .map_err(LoyaltyError::storage)?;
        state.accounts.insert(id.clone());
        state.by_email.insert(email, id.clone());
        state.create_keys.insert(key.to_string(), id);
        Ok((view(&record, Counters::default()), true))
    }

    /// The synchronous part of [`Loyalty::reverse`], under the lock.
    fn reverse_now(&self, key: &str, now: DateTime<Utc>) -> Result<ReverseOutcome, LoyaltyError> {
        let inner = &self.inner;
        let state = inner.lock();
        let Some(current) = inner.entry_record(key)? else {
            inner.put_entry(&state, key, None, &EntryRecord::Tombstone { at: now })?;
            return Ok(ReverseOutcome::NothingToReverse);
        };
        let entry = match current.entry.clone() {
            EntryRecord::Tombstone { .. } | EntryRecord::Refused { .. } => {
                return Ok(ReverseOutcome::NothingToReverse)
            }
            EntryRecord::Entry(e) if e.state == EntryState::Reversed => {
                return Ok(ReverseOutcome::Reversed(e))
            }
            EntryRecord::Entry(e) => e,
        };
        let before = inner.counters(&entry.account_id)?;
        let clamped_miles = match entry.kind {
            // What was spent already cannot be taken back: the balance stops
            // at zero and the shortfall is recorded.
            EntryKind::Award { .. } => entry.miles.saturating_sub(before.balance()),
            EntryKind::Redemption => 0,
        };
        let reversed = LoyaltyEntry {
            state: EntryState::Reversed,
            clamped_miles,
            reversed_at: Some(now),
            ..entry.clone()
        };
        // The ledger replaces the entry's contribution as applied with its
        // contribution as reversed.
        inner.put_entry(
            &state,
            key,
            Some(&current),
            &EntryRecord::Entry(reversed.clone()),
        )?;
        Ok(ReverseOutcome::Reversed(reversed))
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
        let (account, fresh) = self.create_now(key, first_name, last_name, email, now)?;
        self.flush().await?;
        tracing::debug!(key, account_id = %account.id, fresh, "loyalty account");
        Ok(account)
    }

    async fn account(&self, id: &AccountId) -> Result<LoyaltyAccount, LoyaltyError> {
        self.inner.view_of(id)?.ok_or_else(|| unknown(id))
    }

    async fn account_by_email(&self, email: &str) -> Result<Option<LoyaltyAccount>, LoyaltyError> {
        let email = normalize_email(email)?;
        let id = self.inner.lock().by_email.get(&email).cloned();
        match id {
            Some(id) => self.inner.view_of(&id),
            None => Ok(None),
        }
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
        let stored = self
            .apply_entry(key, account_id, |id, counters, now| {
                let tier = Tier::for_qualifying_miles(counters.qualifying_miles());
                let miles = miles_for_usd_minor(usd_minor, tier);
                Made::Applied(LoyaltyEntry {
                    key: key.to_string(),
                    account_id: id.clone(),
                    kind: EntryKind::Award {
                        amount: amount.clone(),
                        usd_minor,
                    },
                    miles,
                    tier,
                    balance_after: counters.balance().saturating_add(miles),
                    state: EntryState::Applied,
                    clamped_miles: 0,
                    created_at: now,
                    reversed_at: None,
                })
            })
            .await?;
        let Stored::Entry(entry) = stored else {
            return Err(LoyaltyError::KeyReused { key: key.into() });
        };
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
        let stored = self
            .apply_entry(key, account_id, |id, counters, now| {
                if counters.balance() < miles {
                    let error = LoyaltyError::InsufficientMiles {
                        balance: counters.balance(),
                        requested: miles,
                    };
                    return Made::Refused { miles, error };
                }
                Made::Applied(LoyaltyEntry {
                    key: key.to_string(),
                    account_id: id.clone(),
                    kind: EntryKind::Redemption,
                    miles,
                    tier: Tier::for_qualifying_miles(counters.qualifying_miles()),
                    balance_after: counters.balance() - miles,
                    state: EntryState::Applied,
                    clamped_miles: 0,
                    created_at: now,
                    reversed_at: None,
                })
            })
            .await?;
        let entry = match stored {
            Stored::Entry(entry) => entry,
            Stored::Refused {
                account_id: a,
                miles: m,
                error,
            } => {
                if a != *account_id || m != miles {
                    return Err(LoyaltyError::KeyReused { key: key.into() });
                }
                return Err(error);
            }
        };
        let matches = entry.kind == EntryKind::Redemption && entry.miles == miles;
        same_request(&entry, account_id, key, matches)?;
        Ok(entry)
    }

    async fn reverse(&self, key: &str) -> Result<ReverseOutcome, LoyaltyError> {
        check_key(key)?;
        let now = self.inner.clock.now();
        let result = self.reverse_now(key, now);
        match &result {
            Ok(ReverseOutcome::Reversed(e)) => {
                tracing::debug!(key, account_id = %e.account_id, miles = e.miles, clamped = e.clamped_miles, "loyalty entry reversed")
            }
            Ok(ReverseOutcome::NothingToReverse) => {
                tracing::debug!(key, "reverse with nothing applied: tombstone or refusal")
            }
            Err(e) => tracing::warn!(key, error = %e, "reverse failed"),
        }
        let outcome = result?;
        self.step_flush().await?;
        Ok(outcome)
    }

    async fn entry(&self, key: &str) -> Result<EntryLookup, LoyaltyError> {
        check_key(key)?;
        Ok(match self.inner.entry_record(key)?.map(|v| v.entry) {
            None => EntryLookup::Unknown,
            Some(EntryRecord::Entry(e)) => EntryLookup::Entry(e),
            Some(EntryRecord::Tombstone { .. }) => EntryLookup::Tombstone,
            Some(EntryRecord::Refused { error, .. }) => EntryLookup::Refused { error },
        })
    }

    async fn history(&self, account_id: &AccountId) -> Result<Vec<LoyaltyEntry>, LoyaltyError> {
        if !self.inner.lock().accounts.contains(account_id) {
            return Err(unknown(account_id));
        }
        let records = self.inner.ledger.owned(account_id.0.as_bytes())?;
        Ok(records.into_iter().filter_map(applied).collect())
    }

    async fn all_accounts(&self) -> Result<Vec<LoyaltyAccount>, LoyaltyError> {
        let mut records = Vec::new();
        for item in self.inner.accounts.iter() {
            let (_, raw) = item.map_err(LoyaltyError::storage)?;
            records.push(decode::<AccountRecord>(&raw)?);
        }
        records
            .iter()
            .map(|r| Ok(view(r, self.inner.counters(&r.id)?)))
            .collect()
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
        // The first shape kept balances in the account record; they are now
        // derived from the entries, and the old fields are ignored.
        let acc: AccountRecord = decode(raw).unwrap();
        assert_eq!(acc.email, "a@b.c");
        assert_eq!(acc.create_key, None);
        let raw = br#"{"v":1,"record":{"id":"12345678","first_name":"Ada","last_name":"L","email":"a@b.c","created_at":"2026-01-01T00:00:00Z","create_key":"signup"}}"#;
        let acc: AccountRecord = decode(raw).unwrap();
        assert_eq!(acc.create_key.as_deref(), Some("signup"));
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

    fn entry(kind: EntryKind, miles: u64, state: EntryState, clamped_miles: u64) -> LoyaltyEntry {
        LoyaltyEntry {
            key: format!("{kind:?}{miles}{state:?}"),
            account_id: AccountId("12345678".into()),
            kind,
            miles,
            tier: Tier::Regular,
            balance_after: 0,
            state,
            clamped_miles,
            created_at: DateTime::<Utc>::default(),
            reversed_at: None,
        }
    }

    #[test]
    fn counters_do_not_depend_on_the_order_of_entries() {
        let award = || EntryKind::Award {
            amount: Money::new(10_000, Currency::usd()),
            usd_minor: 10_000,
        };
        // Earn 500, spend 400, reverse the award (400 already spent stay),
        // earn 300, spend 100 and give that back.
        let entries = [
            entry(award(), 500, EntryState::Reversed, 400),
            entry(EntryKind::Redemption, 400, EntryState::Applied, 0),
            entry(award(), 300, EntryState::Applied, 0),
            entry(EntryKind::Redemption, 100, EntryState::Reversed, 0),
        ];
        let expected = (300, 300);
        for rotation in 0..entries.len() {
            let mut c = Counters::default();
            for e in entries.iter().cycle().skip(rotation).take(entries.len()) {
                c.add(e);
            }
            assert_eq!((c.balance(), c.qualifying_miles()), expected);
        }
        // Removing what was added leaves nothing.
        let mut c = Counters::default();
        entries.iter().for_each(|e| c.add(e));
        entries.iter().rev().for_each(|e| c.remove(e));
        assert_eq!(c, Counters::default());
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
