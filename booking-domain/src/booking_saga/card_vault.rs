//! The card vault: card details kept in memory only, under random
//! tokens, until the payment step no longer needs them, and zeroed when
//! let go. The card never enters the saga's persisted data.

use super::*;

/// Card details held in memory only, under random tokens, until the
/// payment step no longer needs them.
///
/// A card is forgotten as soon as its authorization is done (or refused),
/// when its booking compensates or fails to start, and in any case after
/// [`CARD_TTL`]; a forgotten card's number, CVC and holder name are
/// overwritten with zeros ([`zeroize`]) before the memory is freed, and so
/// is every copy handed out by [`CardVault::get`] once its caller drops it.
#[derive(Default)]
pub struct CardVault {
    cards: Mutex<HashMap<String, (HeldCard, std::time::Instant)>>,
}

/// How long a card may wait in the vault.
pub const CARD_TTL: Duration = Duration::from_secs(30 * 60);

/// Card input bounds, checked (after trimming) before a card is kept.
pub const MAX_CARD_NUMBER_CHARS: usize = 23;
/// The longest CVC accepted, in characters.
pub const MAX_CVC_CHARS: usize = 4;
/// The longest name on card accepted, in characters.
pub const MAX_HOLDER_NAME_CHARS: usize = 100;

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
    use zeroize::Zeroize;
    card.number.zeroize();
    card.cvc.zeroize();
    card.holder_name.zeroize();
    card.exp_month.zeroize();
    card.exp_year.zeroize();
}

impl fmt::Debug for CardVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardVault").finish_non_exhaustive()
    }
}

impl CardVault {
    /// An empty vault.
    pub fn new() -> Self {
        Self::default()
    }
    /// Keeps `card`; returns its token.
    pub fn put(&self, card: CardDetails) -> String {
        let token = format!("tok_{:032x}", rand::random::<u128>());
        let mut cards = self.lock();
        cards.retain(|_, (_, at)| at.elapsed() < CARD_TTL);
        cards.insert(
            token.clone(),
            (HeldCard::new(card), std::time::Instant::now()),
        );
        token
    }
    /// A copy of the card under `token`, if still held; it zeroes itself
    /// when dropped.
    pub fn get(&self, token: &str) -> Option<HeldCard> {
        self.lock()
            .get(token)
            .filter(|(_, at)| at.elapsed() < CARD_TTL)
            .map(|(c, _)| HeldCard::new(c.card().clone()))
    }
    /// Forgets the card, zeroing it.
    pub fn remove(&self, token: &str) {
        let removed = self.lock().remove(token);
        drop(removed);
    }
    /// True while the card under `token` is held (for tests and metrics).
    pub fn holds(&self, token: &str) -> bool {
        self.lock().contains_key(token)
    }
    /// Cards held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }
    /// True when no card is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (HeldCard, std::time::Instant)>> {
        self.cards.lock().unwrap_or_else(|e| e.into_inner())
    }
}
