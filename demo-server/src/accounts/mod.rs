//! Traveller accounts: registration and login (passwords hashed with
//! Argon2id, [`password`]), sessions in cookies with a CSRF token
//! ([`session`]), login throttling ([`throttle`]), the index of an
//! account's bookings ("my trips", [`trips`]) and the loyalty account linked
//! to it.
//!
//! Everything lives on sled trees of the server's database: `accounts` (id
//! -> record), `accounts_by_email` (lower-case email -> id), `sessions`,
//! `account_trips` and `trip_owners`. A booking without an account works
//! as before; one made with a session is indexed under its account.
//!
//! Registration is safe under concurrency without a transaction: the record
//! is written under a fresh random id, then the email is claimed with
//! compare-and-swap; the loser of a race deletes its record and answers
//! "already registered". A crash between the two leaves an unreachable
//! record, never two accounts for one email.

pub mod password;
pub mod session;
pub mod throttle;
pub mod trips;

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};

pub use session::{Session, SessionStore, SESSION_COOKIE};
pub use throttle::LoginThrottle;
pub use trips::TripIndex;

/// An account as stored (the password only as its Argon2id hash).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Format version.
    pub v: u32,
    /// `AC` and 16 hex digits, random.
    pub id: String,
    /// The traveller's name.
    pub name: String,
    /// Email, trimmed and lower case; unique.
    pub email: String,
    /// PHC string of the Argon2id hash.
    pub password_hash: String,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// The loyalty account proven to belong to this traveller.
    #[serde(default)]
    pub loyalty_id: Option<String>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What the account's owner sees of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    /// Account id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Linked loyalty account.
    pub loyalty_id: Option<String>,
    /// Registration time.
    pub created_at: DateTime<Utc>,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        AccountView {
            id: a.id.clone(),
            name: a.name.clone(),
            email: a.email.clone(),
            loyalty_id: a.loyalty_id.clone(),
            created_at: a.created_at,
        }
    }
}

/// Why an account operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// The email already has an account.
    #[error("this email is already registered")]
    EmailTaken,
    /// Storage failed.
    #[error("account store: {0}")]
    Store(String),
}

impl From<sled::Error> for AccountError {
    fn from(e: sled::Error) -> Self {
        AccountError::Store(e.to_string())
    }
}

/// Accounts, sessions and trips on the server's database.
pub struct Accounts {
    db: sled::Db,
    by_id: sled::Tree,
    by_email: sled::Tree,
    /// Sessions.
    pub sessions: SessionStore,
    /// "My trips".
    pub trips: TripIndex,
    /// Login attempt limits.
    pub throttle: LoginThrottle,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").finish_non_exhaustive()
    }
}

/// A random id: `prefix` and 16 hex digits.
fn random_id(prefix: &str) -> String {
    let mut b = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{}", hex.to_ascii_uppercase())
}

/// The normal form of an email: trimmed, lower case.
pub fn normal_email(email: &str) -> String {
    email.trim().to_lowercase()
}

impl Accounts {
    /// Opens the trees in `db`; sessions last `session_ttl`, logins are
    /// throttled by `throttle`.
    pub fn open(
        db: &sled::Db,
        session_ttl: std::time::Duration,
        throttle: LoginThrottle,
    ) -> Result<Self, AccountError> {
        Ok(Accounts {
            db: db.clone(),
            by_id: db.open_tree("accounts")?,
            by_email: db.open_tree("accounts_by_email")?,
            sessions: SessionStore::open(db, session_ttl)?,
            trips: TripIndex::open(db)?,
            throttle,
        })
    }

    /// Makes what was written durable.
    pub async fn flush(&self) -> Result<(), AccountError> {
        saga_engine::store::flush_sled(&self.db).await?;
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Account, AccountError> {
        serde_json::from_slice(bytes)
            .map_err(|e| AccountError::Store(format!("corrupt account: {e}")))
    }

    fn put(&self, a: &Account) -> Result<(), AccountError> {
        let bytes = serde_json::to_vec(a).map_err(|e| AccountError::Store(e.to_string()))?;
        self.by_id.insert(a.id.as_bytes(), bytes)?;
        Ok(())
    }

    /// Registers `name` and `email` with the already hashed password.
    /// Durable on return.
    pub async fn register(
        &self,
        name: &str,
        email: &str,
        password_hash: String,
    ) -> Result<Account, AccountError> {
        let email = normal_email(email);
        if self.by_email.contains_key(email.as_bytes())? {
            return Err(AccountError::EmailTaken);
        }
        let account = Account {
            v: 1,
            id: random_id("AC"),
            name: name.trim().to_string(),
            email: email.clone(),
            password_hash,
            created_at: Utc::now(),
            loyalty_id: None,
        };
        self.put(&account)?;
        let claimed = self.by_email.compare_and_swap(
            email.as_bytes(),
            None as Option<&[u8]>,
            Some(account.id.as_bytes()),
        )?;
        if claimed.is_err() {
            self.by_id.remove(account.id.as_bytes())?;
            return Err(AccountError::EmailTaken);
        }
        self.flush().await?;
        Ok(account)
    }

    /// The account with `id`.
    pub fn get(&self, id: &str) -> Result<Option<Account>, AccountError> {
        match self.by_id.get(id.as_bytes())? {
            Some(b) => Ok(Some(Self::decode(&b)?)),
            None => Ok(None),
        }
    }

    /// The account registered with `email`.
    pub fn by_email(&self, email: &str) -> Result<Option<Account>, AccountError> {
        match self.by_email.get(normal_email(email).as_bytes())? {
            Some(id) => self.get(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// Links loyalty account `loyalty_id` to account `id` (the caller has
    /// proven it). Durable on return.
    pub async fn link_loyalty(
        &self,
        id: &str,
        loyalty_id: &str,
    ) -> Result<Option<Account>, AccountError> {
        let Some(mut a) = self.get(id)? else {
            return Ok(None);
        };
        a.loyalty_id = Some(loyalty_id.to_string());
        self.put(&a)?;
        self.flush().await?;
        Ok(Some(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Accounts) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let a = Accounts::open(
            &db,
            std::time::Duration::from_secs(60),
            LoginThrottle::new(10, 5),
        )
        .unwrap();
        (dir, a)
    }

    #[tokio::test]
    async fn one_account_per_email_under_a_race() {
        let (_d, a) = open();
        let a = std::sync::Arc::new(a);
        let mut tasks = Vec::new();
        for i in 0..16 {
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                a.register(&format!("Ada {i}"), " Ada@Example.com ", "h".into())
                    .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => assert_eq!(e, AccountError::EmailTaken),
            }
        }
        assert_eq!(ok, 1);
        let found = a.by_email("ada@example.com").unwrap().unwrap();
        assert_eq!(found.email, "ada@example.com");
        assert_eq!(a.by_id.len(), 1, "the losers' records are removed");
    }
}
