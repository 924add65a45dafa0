//! Defects planted on purpose, to prove that the tests catch them.
//!
//! Compiled in only with the cargo feature `sabotage` (never on by
//! default); even then nothing changes unless the environment variable
//! `SAGA_SABOTAGE` names a mode (several may be given, separated by
//! commas). `.ci/run` builds the crash tests with each mode and requires
//! every one of them to be caught: a sabotaged build that passes fails CI.
//!
//! | mode | the defect |
//! | --- | --- |
//! | `no-flush` | the store never flushes sled: nothing is made durable by us |
//! | `ack-before-flush` | a write returns before the flush that covers it |
//! | `no-damage-check` | the high-water-mark check at open is skipped |
//! | `stuck-leaves-index` | a stuck saga retried by an operator is not put back in the active index |
//! | `flush-leader-sticks` | a flush leader cancelled or panicking mid-flush never steps down |
//! | `start-inline` | `Engine::start` writes and spawns in the caller's future (not cancel-safe) |
//! | `replay-before-durable` | a replayed booking key is acknowledged without a durability barrier |
//! | `purge-forgets-keys` | retention deletes a saga without retiring its idempotency key |
//! | `pause-not-durable` | an operator's pause is acknowledged without being written |
//! | `group-member-not-persisted` | a group member's success is acted on but written as never started for as long as its group runs |
//! | `wait-not-indexed` | a saga entering a durable wait is left out of sled's active (timer) index |
//! | `backup-no-barrier` | (demo-server) a backup snapshot does not hold writes back |
//! | `catalog-clear-then-load` | (booking-domain) a live catalog import empties the served catalog, then loads |
//! | `vault-no-flush` | the payments participant answers a card token before the sealed card is durable |
//! | `cover-foreign-db` | a participant counts on the engine's flush although it lives in another sled database |
//! | `flush-unwatched` | the store's flush watchdog never pokes a stalled sled flush |
//! | `overdue-not-indexed` | sled flags a saga overdue without putting it in the overdue index |
//! | `personal-in-clear` | (booking-domain) a booking's dates of birth are kept in the saga's passengers in clear, besides the seal |
//! | `control-freezes-step` | a control (signal, cancel, operation) arriving while a step runs is recorded with the step left unpolled |
//! | `index-unjournaled` | sled changes a record's query index entries and status count without journaling the change first |

/// The store never flushes sled.
pub const NO_FLUSH: &str = "no-flush";
/// A write returns before a flush covers it.
pub const ACK_BEFORE_FLUSH: &str = "ack-before-flush";
/// The damage check at open is skipped.
pub const NO_DAMAGE_CHECK: &str = "no-damage-check";
/// A saga leaving `Stuck` is not re-entered in the active index.
pub const STUCK_LEAVES_INDEX: &str = "stuck-leaves-index";

/// A cancelled or panicking flush leader does not step down.
pub const FLUSH_LEADER_STICKS: &str = "flush-leader-sticks";
/// `Engine::start` is not cancel-safe.
pub const START_INLINE: &str = "start-inline";
/// A replayed idempotency key is acknowledged before it is durable.
pub const REPLAY_BEFORE_DURABLE: &str = "replay-before-durable";

/// Retention deletes a saga without retiring its key.
pub const PURGE_FORGETS_KEYS: &str = "purge-forgets-keys";

/// An operator's pause is acknowledged without being written.
pub const PAUSE_NOT_DURABLE: &str = "pause-not-durable";

/// Sled changes query index entries and counts without journaling them.
pub const INDEX_UNJOURNALED: &str = "index-unjournaled";

/// A group member's success is acted on but written as never started.
pub const GROUP_MEMBER_NOT_PERSISTED: &str = "group-member-not-persisted";
/// A saga entering a durable wait is left out of the active index.
pub const WAIT_NOT_INDEXED: &str = "wait-not-indexed";

/// A backup snapshot does not hold the server's writes back.
pub const BACKUP_NO_BARRIER: &str = "backup-no-barrier";

/// A live catalog import serves an empty catalog while it loads.
pub const CATALOG_CLEAR_THEN_LOAD: &str = "catalog-clear-then-load";

/// A card token is answered before the sealed card is flushed.
pub const VAULT_NO_FLUSH: &str = "vault-no-flush";

/// A participant skips its own flush although the engine's flushes are on
/// another database.
pub const COVER_FOREIGN_DB: &str = "cover-foreign-db";

/// The flush watchdog never pokes a stalled flush.
pub const FLUSH_UNWATCHED: &str = "flush-unwatched";

/// Sled flags a saga overdue without indexing it as overdue.
pub const OVERDUE_NOT_INDEXED: &str = "overdue-not-indexed";

/// A booking's dates of birth stay in clear in the saga's data.
pub const PERSONAL_IN_CLEAR: &str = "personal-in-clear";

/// A control arriving while a step runs is recorded while the step's
/// future is left unpolled.
pub const CONTROL_FREEZES_STEP: &str = "control-freezes-step";

/// Every mode there is.
pub const ALL: &[&str] = &[
    CONTROL_FREEZES_STEP,
    FLUSH_UNWATCHED,
    OVERDUE_NOT_INDEXED,
    PERSONAL_IN_CLEAR,
    COVER_FOREIGN_DB,
    VAULT_NO_FLUSH,
    PAUSE_NOT_DURABLE,
    INDEX_UNJOURNALED,
    GROUP_MEMBER_NOT_PERSISTED,
    WAIT_NOT_INDEXED,
    BACKUP_NO_BARRIER,
    CATALOG_CLEAR_THEN_LOAD,
    PURGE_FORGETS_KEYS,
    NO_FLUSH,
    ACK_BEFORE_FLUSH,
    NO_DAMAGE_CHECK,
    STUCK_LEAVES_INDEX,
    FLUSH_LEADER_STICKS,
    START_INLINE,
    REPLAY_BEFORE_DURABLE,
];

/// True when `mode` is planted in this process.
#[cfg(feature = "sabotage")]
pub fn active(mode: &str) -> bool {
    use std::sync::OnceLock;
    static MODES: OnceLock<Vec<String>> = OnceLock::new();
    let modes = MODES.get_or_init(|| {
        let modes: Vec<String> = std::env::var("SAGA_SABOTAGE")
            .unwrap_or_default()
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        for m in &modes {
            assert!(
                ALL.contains(&m.as_str()),
                "unknown SAGA_SABOTAGE mode {m:?}; known: {ALL:?}"
            );
            tracing::warn!(mode = %m, "SABOTAGE: a defect is planted on purpose");
        }
        modes
    });
    modes.iter().any(|m| m == mode)
}

/// Without the `sabotage` feature nothing is ever planted.
#[cfg(not(feature = "sabotage"))]
#[inline(always)]
pub fn active(_mode: &str) -> bool {
    false
}
