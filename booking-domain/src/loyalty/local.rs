//! [`LocalLoyalty`]: the [`Loyalty`] trait on sled trees named `loyalty_*`,
//! through the keyed [`crate::ledger`] (entries, per-account counters,
//! histories read a page at a time).

use super::*;

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
#[path = "tests.rs"]
mod tests;
