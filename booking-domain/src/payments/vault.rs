//! The card vault of the payments participant, as a processor keeps one:
//! a card is tokenized when its booking is accepted, kept encrypted at rest
//! (XChaCha20-Poly1305 under a 256-bit key read from a key file of the
//! participant's own data directory) until its authorization is done, and
//! the saga keeps only the token. A restart between the start of a booking
//! and its authorization therefore finds the card again.
//!
//! On disk (sled tree `payments_vault`) there is never a card number, CVC
//! or holder name in clear: `t/{token}` holds the sealed card (nonce,
//! ciphertext bound to the token as associated data, brand and last four
//! digits), `k/{key}` the token a tokenization key was answered with, so a
//! repeated call returns the same token. The key file is created `0600` on
//! first use; one with group or other permission bits, or of the wrong
//! length, is refused.

use super::{CardBrand, CardDetails, CheckedCard, PaymentError};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write;
use std::path::Path;
use zeroize::Zeroize;

/// The key file's name inside the participant's data directory.
pub const VAULT_KEY_FILE: &str = "card-vault.key";

/// How long a tokenized card is kept when nothing uses it: a booking
/// authorizes within seconds, so an older card belongs to a booking that
/// will never need it (purged by a later tokenization: the first one
/// [`PURGE_EVERY`] or more after the previous purge).
pub const CARD_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// How often at most a tokenization looks for cards older than
/// [`CARD_TTL`]. The look reads every card held (one per booking in
/// flight), so running it on each tokenization made a booking's cost grow
/// with the bookings in flight.
pub const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

const VAULT_TREE: &str = "payments_vault";
const KEY_LEN: usize = 32;

/// The vault's encryption key; zeroed when dropped, never printed.
pub struct VaultKey([u8; KEY_LEN]);

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VaultKey(..)")
    }
}

impl Drop for VaultKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Why the vault key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum VaultKeyError {
    /// Reading or creating the file failed.
    #[error("card vault key {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a key this vault wrote.
    #[error("card vault key {path}: {reason}")]
    Unusable {
        /// The key file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl VaultKey {
    /// Reads `dir/card-vault.key`, or creates it (`0600`, 32 random bytes,
    /// synced with its directory) when it does not exist yet.
    pub fn load_or_create(dir: &Path) -> Result<VaultKey, VaultKeyError> {
        Self::load_or_create_file(dir, VAULT_KEY_FILE)
    }

    /// [`load_or_create`](Self::load_or_create) for a sibling key file
    /// named `file` in `dir` (the booking's personal data has its own,
    /// [`crate::personal::PERSONAL_KEY_FILE`]).
    pub fn load_or_create_file(dir: &Path, file: &str) -> Result<VaultKey, VaultKeyError> {
        let path = dir.join(file);
        let shown = path.display().to_string();
        let io = |source| VaultKeyError::Io {
            path: shown.clone(),
            source,
        };
        match std::fs::read(&path) {
            Ok(mut bytes) => {
                let key = Self::check(&path, &bytes);
                bytes.zeroize();
                key
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(io)?;
                let mut key = [0u8; KEY_LEN];
                rand::Rng::fill(&mut rand::thread_rng(), &mut key[..]);
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(&path) {
                    Ok(mut f) => {
                        f.write_all(&key).map_err(io)?;
                        f.sync_all().map_err(io)?;
                        std::fs::File::open(dir)
                            .and_then(|d| d.sync_all())
                            .map_err(io)?;
                        Ok(VaultKey(key))
                    }
                    // Another opener created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        key.zeroize();
                        Self::load_or_create_file(dir, file)
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    fn check(path: &Path, bytes: &[u8]) -> Result<VaultKey, VaultKeyError> {
        let unusable = |reason: String| VaultKeyError::Unusable {
            path: path.display().to_string(),
            reason,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|source| VaultKeyError::Io {
                    path: path.display().to_string(),
                    source,
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(unusable(format!(
                    "readable by others (mode {:o}); chmod 600 it",
                    mode & 0o777
                )));
            }
        }
        if bytes.len() != KEY_LEN {
            return Err(unusable(format!(
                "{} bytes, a key is {KEY_LEN}",
                bytes.len()
            )));
        }
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(bytes);
        Ok(VaultKey(key))
    }

    /// The key's bytes, for another AEAD of this crate under the same
    /// scheme (the personal data's).
    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A key that lives only in this process: cards tokenized under it
    /// cannot be read after a restart. For databases that do not outlive
    /// the process (tests on temporary sled databases).
    pub fn ephemeral() -> VaultKey {
        let mut key = [0u8; KEY_LEN];
        rand::Rng::fill(&mut rand::thread_rng(), &mut key[..]);
        VaultKey(key)
    }
}

/// What tokenizing a card gives back: the token to authorize with later,
/// and what may be shown of the card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardToken {
    /// `tok_` and 32 hex digits; names the card at this participant only.
    pub token: String,
    /// Card network.
    pub brand: CardBrand,
    /// Last four digits.
    pub last4: String,
}

/// A card that zeroes its secrets when dropped.
pub struct HeldCard(CardDetails);

impl HeldCard {
    /// Takes `card`; its secrets are zeroed when this value drops.
    pub fn new(card: CardDetails) -> Self {
        HeldCard(card)
    }
    /// The card.
    pub fn card(&self) -> &CardDetails {
        &self.0
    }
}

impl Drop for HeldCard {
    fn drop(&mut self) {
        wipe_card(&mut self.0);
    }
}

impl fmt::Debug for HeldCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Overwrites the card's number, CVC and holder name with zeros (the
/// strings end empty) and its expiry with 0.
pub fn wipe_card(card: &mut CardDetails) {
    card.number.zeroize();
    card.cvc.zeroize();
    card.holder_name.zeroize();
    card.exp_month.zeroize();
    card.exp_year.zeroize();
}

/// A sealed card as stored under `t/{token}`.
#[derive(Serialize, Deserialize)]
struct Sealed {
    v: u32,
    brand: CardBrand,
    last4: String,
    created_at: DateTime<Utc>,
    /// SHA-256 of the tokenization key and the card, to tell a repeated
    /// call from another card under the same key.
    digest: String,
    nonce: String,
    sealed: String,
}

/// The vault over the participant's database.
pub(crate) struct Vault {
    tree: sled::Tree,
    cipher: XChaCha20Poly1305,
    /// When the last purge ran (ms since the epoch, by the clock given to
    /// `put`); `i64::MIN` before the first.
    purged_at_ms: std::sync::atomic::AtomicI64,
}

/// Lower-case hex of `bytes` (how sealed values are stored as text).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of [`hex`]'s text; `None` for anything else.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn storage(e: impl fmt::Display) -> PaymentError {
    PaymentError::Storage {
        message: format!("card vault: {e}"),
    }
}

impl Vault {
    pub(crate) fn open(db: &sled::Db, key: &VaultKey) -> Result<Vault, PaymentError> {
        Ok(Vault {
            tree: db.open_tree(VAULT_TREE).map_err(storage)?,
            cipher: XChaCha20Poly1305::new((&key.0).into()),
            purged_at_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
        })
    }

    fn digest(key: &str, card: &CardDetails) -> String {
        let mut h = Sha256::new();
        for part in [
            key,
            card.number.as_str(),
            card.cvc.as_str(),
            card.holder_name.as_str(),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(card.exp_month.to_le_bytes());
        h.update(card.exp_year.to_le_bytes());
        hex(&h.finalize())
    }

    /// Seals `card` under a new token, or returns the token `key` was
    /// answered with before (the same card; another card is a reuse).
    /// Not durable until the caller flushes.
    pub(crate) fn put(
        &self,
        key: &str,
        card: &CardDetails,
        checked: &CheckedCard,
        now: DateTime<Utc>,
    ) -> Result<CardToken, PaymentError> {
        let digest = Self::digest(key, card);
        let key_entry = format!("k/{key}");
        if let Some(token) = self.tree.get(key_entry.as_bytes()).map_err(storage)? {
            let token = String::from_utf8_lossy(&token).to_string();
            if let Some(s) = self.sealed(&token)? {
                if s.digest != digest {
                    return Err(PaymentError::KeyReused { key: key.into() });
                }
                return Ok(CardToken {
                    token,
                    brand: s.brand,
                    last4: s.last4,
                });
            }
            // Used and forgotten: a repeat of a finished tokenization.
            return Err(PaymentError::UnknownToken);
        }
        self.purge_if_due(now)?;
        let token = format!("tok_{:032x}", rand::random::<u128>());
        let mut nonce = [0u8; 24];
        rand::Rng::fill(&mut rand::thread_rng(), &mut nonce[..]);
        let mut plain = serde_json::to_vec(card).map_err(storage)?;
        let sealed = self.cipher.encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: token.as_bytes(),
            },
        );
        plain.zeroize();
        let sealed = sealed.map_err(|_| storage("encryption failed"))?;
        let record = Sealed {
            v: 1,
            brand: checked.brand,
            last4: checked.last4.clone(),
            created_at: now,
            digest,
            nonce: hex(&nonce),
            sealed: hex(&sealed),
        };
        let bytes = serde_json::to_vec(&record).map_err(storage)?;
        self.tree
            .insert(format!("t/{token}").as_bytes(), bytes)
            .map_err(storage)?;
        self.tree
            .insert(key_entry.as_bytes(), token.as_bytes())
            .map_err(storage)?;
        Ok(CardToken {
            token,
            brand: checked.brand,
            last4: checked.last4.clone(),
        })
    }

    fn sealed(&self, token: &str) -> Result<Option<Sealed>, PaymentError> {
        match self
            .tree
            .get(format!("t/{token}").as_bytes())
            .map_err(storage)?
        {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(storage),
        }
    }

    /// The card under `token`, opened; it zeroes itself when dropped. A
    /// sealed card that does not open under this key (another key file, a
    /// damaged record) is [`PaymentError::CardUnreadable`], never a
    /// different card.
    pub(crate) fn get(&self, token: &str) -> Result<Option<HeldCard>, PaymentError> {
        let Some(s) = self.sealed(token)? else {
            return Ok(None);
        };
        let nonce = unhex(&s.nonce).filter(|n| n.len() == 24);
        let sealed = unhex(&s.sealed);
        let unreadable = |reason: &str| {
            tracing::error!(reason, "card vault: a sealed card cannot be read");
            PaymentError::CardUnreadable {
                reason: reason.into(),
            }
        };
        let (Some(nonce), Some(sealed)) = (nonce, sealed) else {
            return Err(unreadable("the sealed record is damaged"));
        };
        let mut plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &sealed,
                    aad: token.as_bytes(),
                },
            )
            .map_err(|_| unreadable("it does not open under this key file"))?;
        let card = serde_json::from_slice::<CardDetails>(&plain).map_err(storage);
        plain.zeroize();
        Ok(Some(HeldCard::new(card?)))
    }

    /// Forgets the card under `token` (nothing when it is not held). Not
    /// durable until the caller flushes.
    pub(crate) fn remove(&self, token: &str) -> Result<bool, PaymentError> {
        Ok(self
            .tree
            .remove(format!("t/{token}").as_bytes())
            .map_err(storage)?
            .is_some())
    }

    /// Cards held now.
    pub(crate) fn len(&self) -> u64 {
        self.tree.scan_prefix(b"t/").count() as u64
    }

    /// Purges the cards older than [`CARD_TTL`] when the last purge is
    /// [`PURGE_EVERY`] or more before `now` (or there was none).
    fn purge_if_due(&self, now: DateTime<Utc>) -> Result<(), PaymentError> {
        use std::sync::atomic::Ordering;
        let now_ms = now.timestamp_millis();
        let last = self.purged_at_ms.load(Ordering::Relaxed);
        let due = last == i64::MIN || now_ms.saturating_sub(last) >= PURGE_EVERY.as_millis() as i64;
        // One caller wins the turn; the others go on without purging.
        if !due
            || self
                .purged_at_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Ok(());
        }
        self.purge_older_than(now - chrono::Duration::from_std(CARD_TTL).unwrap_or_default())
    }

    fn purge_older_than(&self, cutoff: DateTime<Utc>) -> Result<(), PaymentError> {
        for item in self.tree.scan_prefix(b"t/") {
            let (k, v) = item.map_err(storage)?;
            let old = serde_json::from_slice::<Sealed>(&v)
                .map(|s| s.created_at < cutoff)
                .unwrap_or(false);
            if old {
                self.tree.remove(k).map_err(storage)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payments::check_card;

    fn card() -> CardDetails {
        CardDetails {
            number: "4242 4242 4242 4242".into(),
            exp_month: 12,
            exp_year: 2035,
            cvc: "123".into(),
            holder_name: "Ada Lovelace".into(),
        }
    }

    fn vault(key: &VaultKey) -> (sled::Db, Vault) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let v = Vault::open(&db, key).unwrap();
        (db, v)
    }

    #[test]
    fn wiping_a_card_leaves_no_secret() {
        let mut c = card();
        wipe_card(&mut c);
        assert!(c.number.is_empty() && c.cvc.is_empty() && c.holder_name.is_empty());
        assert_eq!((c.exp_month, c.exp_year), (0, 0));
    }

    #[test]
    fn a_sealed_card_opens_under_its_key_only_and_never_in_clear() {
        let key = VaultKey::ephemeral();
        let (db, v) = vault(&key);
        let checked = check_card(&card(), Utc::now().date_naive()).unwrap();
        let t = v.put("k1", &card(), &checked, Utc::now()).unwrap();
        assert_eq!(v.put("k1", &card(), &checked, Utc::now()).unwrap(), t);
        let other = CardDetails {
            cvc: "999".into(),
            ..card()
        };
        assert!(matches!(
            v.put("k1", &other, &checked, Utc::now()),
            Err(PaymentError::KeyReused { .. })
        ));
        assert_eq!(v.get(&t.token).unwrap().unwrap().card(), &card());
        for (_, value) in v.tree.iter().flatten() {
            let text = String::from_utf8_lossy(&value);
            assert!(!text.contains("4242 4242") && !text.contains("\"cvc\""));
            assert!(!text.contains("Lovelace"), "{text}");
        }
        // Another key does not open it: an error, never another card.
        let v2 = Vault::open(&db, &VaultKey::ephemeral()).unwrap();
        assert!(matches!(
            v2.get(&t.token),
            Err(PaymentError::CardUnreadable { .. })
        ));
        // Nor does the sealed card moved under another token.
        let sealed = v.tree.get(format!("t/{}", t.token)).unwrap().unwrap();
        v.tree.insert("t/tok_moved", sealed).unwrap();
        assert!(v.get("tok_moved").is_err());
        assert!(v.remove(&t.token).unwrap());
        assert!(v.get(&t.token).unwrap().is_none());
        assert!(matches!(
            v.put("k1", &card(), &checked, Utc::now()),
            Err(PaymentError::UnknownToken)
        ));
    }

    #[test]
    fn old_cards_are_purged_at_the_next_tokenization() {
        let key = VaultKey::ephemeral();
        let (_db, v) = vault(&key);
        let checked = check_card(&card(), Utc::now().date_naive()).unwrap();
        let long_ago = Utc::now() - chrono::Duration::days(2);
        let old = v.put("old", &card(), &checked, long_ago).unwrap();
        let new = v.put("new", &card(), &checked, Utc::now()).unwrap();
        assert!(v.get(&old.token).unwrap().is_none());
        assert!(v.get(&new.token).unwrap().is_some());
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn the_purge_runs_once_a_minute_at_most() {
        let key = VaultKey::ephemeral();
        let (_db, v) = vault(&key);
        let checked = check_card(&card(), Utc::now().date_naive()).unwrap();
        let t0 = Utc::now();
        v.put("first", &card(), &checked, t0).unwrap();
        // A card that is old by the time of the next tokenizations.
        let old = v
            .put("old", &card(), &checked, t0 - chrono::Duration::days(2))
            .unwrap();
        // Within a minute of the first purge: not looked for yet.
        v.put(
            "soon",
            &card(),
            &checked,
            t0 + chrono::Duration::seconds(30),
        )
        .unwrap();
        assert!(v.get(&old.token).unwrap().is_some());
        // A minute after it: purged.
        v.put(
            "later",
            &card(),
            &checked,
            t0 + chrono::Duration::seconds(61),
        )
        .unwrap();
        assert!(v.get(&old.token).unwrap().is_none());
        assert_eq!(v.len(), 3);
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_is_created_private_and_refused_when_not() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let k1 = VaultKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(VAULT_KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let k2 = VaultKey::load_or_create(dir.path()).unwrap();
        assert_eq!(k1.0, k2.0, "the same key is read back");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = VaultKey::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("readable by others"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, b"short").unwrap();
        let e = VaultKey::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("5 bytes"), "{e}");
        assert_eq!(format!("{k1:?}"), "VaultKey(..)");
    }
}
