//! Loyalty's domain: account ids, tiers and the miles an amount earns,
//! accounts and entries as callers see them, the errors, and the
//! [`Loyalty`] trait the saga calls. No storage here (see `local`).

use super::*;

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

    pub(super) fn storage(e: impl fmt::Display) -> Self {
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
