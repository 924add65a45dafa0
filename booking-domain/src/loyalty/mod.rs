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
//!
//! Split by concept: [`rules`] holds the domain (ids, tiers and the miles an
//! amount earns, accounts and entries as callers see them, errors, the
//! [`Loyalty`] trait); `local` holds [`LocalLoyalty`], the sled-backed
//! implementation (records, counters, the ledger plumbing). Every public
//! name is re-exported here, so paths stay `booking_domain::loyalty::*`.

mod local;
pub mod rules;

pub use local::LocalLoyalty;
pub use rules::*;

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
