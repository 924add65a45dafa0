//! The crash test's participant ledger: an append-only file outside the
//! engine's store, in the order things happened.
//!
//! | line | written |
//! | --- | --- |
//! | `S key` | when an attempt of the step with idempotency key `key` begins |
//! | `E key ok\|no\|busy` | when that attempt answers |
//! | `A key` | the effect is applied (once per key), synced before the reply |
//! | `C key` | the effect is compensated (once per key), synced before the reply |
//!
//! `A` and `C` are the participant's durable promises and are synced; `S`
//! and `E` only order the story (a SIGKILL keeps whatever reached the
//! kernel), so they are written without a sync. A torn last line is
//! ignored.

use saga_engine::StepError;
use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An attempt began.
    Start(String),
    /// An attempt answered (`ok`, `no` or `busy`).
    End(String, String),
    /// The effect was applied.
    Applied(String),
    /// The effect was compensated.
    Compensated(String),
}

impl Entry {
    /// The step's idempotency key (`SAGA:STEP`).
    pub fn key(&self) -> &str {
        match self {
            Entry::Start(k) | Entry::End(k, _) | Entry::Applied(k) | Entry::Compensated(k) => k,
        }
    }
}

/// The open ledger of a child.
pub struct Ledger {
    file: Mutex<std::fs::File>,
    /// Keys applied and keys compensated so far.
    state: Mutex<(HashSet<String>, HashSet<String>)>,
}

impl Ledger {
    /// Opens the ledger at `path` of a saga with these `steps`, loading
    /// what earlier children wrote.
    pub fn open(path: &Path, steps: &[&str]) -> std::io::Result<Ledger> {
        let mut applied = HashSet::new();
        let mut compensated = HashSet::new();
        for e in read(path, steps).0 {
            match e {
                Entry::Applied(k) => {
                    applied.insert(k);
                }
                Entry::Compensated(k) => {
                    compensated.insert(k);
                }
                _ => {}
            }
        }
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        saga_workspace::acklog::end_torn_line(path, &mut file)?;
        Ok(Ledger {
            file: Mutex::new(file),
            state: Mutex::new((applied, compensated)),
        })
    }

    fn append(&self, line: &str, sync: bool) {
        let mut f = self.file.lock().unwrap();
        f.write_all(line.as_bytes()).expect("ledger write");
        if sync {
            f.sync_data().expect("ledger sync");
        }
    }

    /// An attempt of `key` begins.
    pub fn attempt(&self, key: &str) {
        self.append(&format!("S {key}\n"), false);
    }

    /// The attempt of `key` answered with `outcome`.
    pub fn answered(&self, key: &str, outcome: &str) {
        self.append(&format!("E {key} {outcome}\n"), false);
    }

    /// Applies the effect once per key; refuses a key already compensated.
    pub fn apply(&self, key: &str) -> Result<(), StepError> {
        let mut st = self.state.lock().unwrap();
        if st.1.contains(key) {
            return Err(StepError::rejected("already compensated"));
        }
        if st.0.insert(key.to_string()) {
            self.append(&format!("A {key}\n"), true);
        }
        Ok(())
    }

    /// Compensates the effect once per key.
    pub fn compensate(&self, key: &str) {
        let mut st = self.state.lock().unwrap();
        if st.1.insert(key.to_string()) {
            self.append(&format!("C {key}\n"), true);
        }
    }
}

/// Every whole line of the ledger at `path`, in order, and how many lines
/// were skipped as torn: a key that is not `SAGA:STEP`, with a saga id of
/// 28 hex digits and one of `steps`, is what is left of a write a kill
/// interrupted (the next child ends such a line before appending).
pub fn read(path: &Path, steps: &[&str]) -> (Vec<Entry>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole_key = |k: &str| {
        k.split_once(':').is_some_and(|(id, step)| {
            id.len() == 28 && id.bytes().all(|b| b.is_ascii_hexdigit()) && steps.contains(&step)
        })
    };
    let mut out = Vec::new();
    let mut torn = 0;
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let line = line.trim_end();
        let e = match line.split_once(' ') {
            Some(("S", k)) => Some(Entry::Start(k.to_string())),
            Some(("E", rest)) => match rest.split_once(' ') {
                Some((k, o)) if ["ok", "no", "busy"].contains(&o) => {
                    Some(Entry::End(k.to_string(), o.to_string()))
                }
                _ => None,
            },
            Some(("A", k)) => Some(Entry::Applied(k.to_string())),
            Some(("C", k)) => Some(Entry::Compensated(k.to_string())),
            _ => None,
        };
        match e {
            Some(e) if whole_key(e.key()) => out.push(e),
            _ => torn += 1,
        }
    }
    (out, torn)
}
