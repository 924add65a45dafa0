//! What a crash test found: its violations, each of a named kind, and the
//! one `RESULT` line that `scripts/sabotage-meta-test` reads.
//!
//! A child reports a violation as a `violation: KIND: detail` line on its
//! stdout; the parent parses those lines back into a [`Violations`] list,
//! adds what it finds itself, and fails the test listing them. Violations
//! of the engine's or the participants' promises are kept apart from
//! problems of the run itself (too few kills in flight, a knob below its
//! floor): only the former prove that a planted defect was caught.

use std::collections::BTreeMap;
use std::fmt;

/// The prefix of a violation line in a child's output.
pub const LINE_PREFIX: &str = "violation: ";

/// One broken promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// What kind of promise broke, e.g. `lost acknowledged start`.
    pub kind: String,
    /// Which saga, key or figure, and how.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

/// Violations in the order they were found.
#[derive(Debug, Clone, Default)]
pub struct Violations {
    list: Vec<Violation>,
}

impl Violations {
    /// No violation yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one violation of `kind` (which must not contain `:`); the
    /// same finding reported twice (by a child and again by the parent) is
    /// kept once.
    pub fn push(&mut self, kind: &str, detail: impl Into<String>) {
        debug_assert!(!kind.contains(':'), "a kind has no colon: {kind}");
        let v = Violation {
            kind: kind.to_string(),
            detail: detail.into(),
        };
        if !self.list.contains(&v) {
            self.list.push(v);
        }
    }

    /// Appends another list (without repeating a finding).
    pub fn extend(&mut self, other: Violations) {
        for v in other.list {
            self.push(&v.kind, v.detail);
        }
    }

    /// True when nothing broke.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// How many were found.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Every violation, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Violation> {
        self.list.iter()
    }

    /// How many of each kind.
    pub fn by_kind(&self) -> BTreeMap<&str, usize> {
        let mut m = BTreeMap::new();
        for v in &self.list {
            *m.entry(v.kind.as_str()).or_default() += 1;
        }
        m
    }

    /// `kind=count` pairs, comma-separated (empty when clean).
    pub fn summary(&self) -> String {
        self.by_kind()
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parses a child's `violation: KIND: detail` line.
    pub fn parse_line(line: &str) -> Option<Violation> {
        let rest = line.strip_prefix(LINE_PREFIX)?;
        let (kind, detail) = rest.split_once(": ").unwrap_or((rest, ""));
        Some(Violation {
            kind: kind.to_string(),
            detail: detail.to_string(),
        })
    }

    /// Prints every violation as a line a parent can parse (children only).
    pub fn print_lines(&self) {
        for v in &self.list {
            println!("{LINE_PREFIX}{v}");
        }
    }
}

/// The figures of one crash-test run, printed as its `RESULT` line.
#[derive(Debug, Default)]
pub struct Figures {
    /// Sagas in the store at the end.
    pub sagas: usize,
    /// Starts the children acknowledged (lines of the acknowledgement log).
    pub acked: usize,
    /// SIGKILLs sent.
    pub kills: usize,
    /// Of those, kills that landed while the child's last heartbeat showed
    /// sagas running.
    pub in_flight: usize,
    /// Post-restart checks that children completed and reported.
    pub checks: usize,
    /// Start errors the children reported.
    pub start_errors: usize,
    /// Wait errors the children reported.
    pub wait_errors: usize,
    /// Errors with an explanation (not violations).
    pub expected_errors: usize,
}

/// Prints the list (up to 40 lines) and the `RESULT` line; returns the
/// process exit code: 0 only when there are no violations and no problems.
pub fn conclude(
    test: &str,
    figures: &Figures,
    violations: &Violations,
    problems: &[String],
) -> i32 {
    let ok = violations.is_empty() && problems.is_empty();
    if !ok {
        eprintln!(
            "{test} FAILED: {} violations, {} run problems",
            violations.len(),
            problems.len()
        );
        for v in violations.iter().take(40) {
            eprintln!("  violation: {v}");
        }
        if violations.len() > 40 {
            eprintln!("  ... and {} more", violations.len() - 40);
        }
        for p in problems {
            eprintln!("  run problem: {p}");
        }
    }
    eprintln!(
        "RESULT test={test} outcome={} violations={} kinds=\"{}\" problems={} sagas={} acked={} kills={} in_flight={} checks={} start_errors={} wait_errors={} expected_errors={}",
        if ok { "pass" } else { "fail" },
        violations.len(),
        violations.summary(),
        problems.len(),
        figures.sagas,
        figures.acked,
        figures.kills,
        figures.in_flight,
        figures.checks,
        figures.start_errors,
        figures.wait_errors,
        figures.expected_errors,
    );
    if ok {
        0
    } else {
        1
    }
}

/// Reads a knob that may only grow a test: unset means `default`; a value
/// that is not a number, or below `floor`, is refused with a message (the
/// caller exits non-zero instead of running a weaker test).
pub fn knob(name: &str, default: usize, floor: usize) -> Result<usize, String> {
    let Ok(raw) = std::env::var(name) else {
        return Ok(default);
    };
    let v: usize = raw.trim().parse().map_err(|_| {
        format!("{name}={raw:?} is not a number (default {default}, at least {floor})")
    })?;
    if v < floor {
        return Err(format!(
            "{name}={v} is below its floor of {floor}: a smaller run would not prove the promise; \
             use {floor} or more (default {default})"
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_round_trips() {
        let mut v = Violations::new();
        v.push("lost acknowledged start", "b-1 -> s1: missing");
        let line = format!("{LINE_PREFIX}{}", v.iter().next().unwrap());
        let back = Violations::parse_line(&line).unwrap();
        assert_eq!(back.kind, "lost acknowledged start");
        assert_eq!(back.detail, "b-1 -> s1: missing");
        assert_eq!(v.summary(), "lost acknowledged start=1");
    }

    #[test]
    fn knobs_have_floors() {
        std::env::set_var("VERDICT_TEST_KNOB", "0");
        assert!(knob("VERDICT_TEST_KNOB", 60, 20).is_err());
        std::env::set_var("VERDICT_TEST_KNOB", "abc");
        assert!(knob("VERDICT_TEST_KNOB", 60, 20).is_err());
        std::env::set_var("VERDICT_TEST_KNOB", "500");
        assert_eq!(knob("VERDICT_TEST_KNOB", 60, 20), Ok(500));
        std::env::remove_var("VERDICT_TEST_KNOB");
        assert_eq!(knob("VERDICT_TEST_KNOB", 60, 20), Ok(60));
    }
}
