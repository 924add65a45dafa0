//! The flush leader's gathering policy: how many writers the next flush
//! waits for, and for how long.
//!
//! When a flush ends, the writers it covered are answered, and those about
//! to write again (a saga moving on to its next step) do so within
//! microseconds. A leader that flushed at once would leave them the next
//! flush: at concurrency 8 with trivial steps, about one writer in six
//! missed the flush after the one that answered it. So the flush records
//! what it released ([`Batch::flushed`]): the tickets taken by then plus
//! the writers it covered that announced another write. The next leader
//! waits until that many tickets were taken, or for as long as the last
//! flush took ([`budget`], at most [`MAX_GATHER`]), whichever comes first.
//! It sleeps meanwhile (a spinning leader takes a core from the writers it
//! waits for): the writer taking the awaited ticket wakes it, and so does
//! the first writer to arrive after the budget is spent (the runtime's
//! timer, the last resort, ticks in milliseconds; like the engine, the
//! gathering needs a runtime with timers enabled, and outside a runtime a
//! leader flushes at once). A lone writer
//! never waits: the one writer the last flush released is the leader
//! itself, whose ticket is already taken.

use std::time::Duration;

/// The longest a leader waits, however slow the last flush was.
pub(super) const MAX_GATHER: Duration = Duration::from_millis(1);

/// What the last flush covered and released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Batch {
    /// The last ticket the last flush covered.
    target: u64,
    /// Final writes (no write announced after them) ticketed by then.
    finals: u64,
    /// The ticket count the next leader waits for.
    pub(super) expect: u64,
    /// How long the last flush took.
    last_flush: Duration,
}

impl Batch {
    /// Before any flush of a store whose tickets start at `seq`: nothing
    /// is expected.
    pub(super) fn new(seq: u64) -> Batch {
        Batch {
            target: seq,
            finals: 0,
            expect: 0,
            last_flush: Duration::ZERO,
        }
    }

    /// A flush covering tickets up to `target` (`finals` final writes
    /// counted by then) ended after `took`, with `tickets` taken by now.
    pub(super) fn flushed(&mut self, target: u64, finals: u64, tickets: u64, took: Duration) {
        let covered = target.saturating_sub(self.target);
        let final_writes = finals.saturating_sub(self.finals).min(covered);
        self.expect = tickets + (covered - final_writes);
        self.target = self.target.max(target);
        self.finals = self.finals.max(finals);
        self.last_flush = took;
    }

    /// How long the next leader may wait.
    pub(super) fn budget(&self) -> Duration {
        budget(self.last_flush)
    }
}

/// The last flush's duration, at most [`MAX_GATHER`]: long enough for the
/// released writers to come back while the machine is busy (half of it
/// left about a third of the gatherings short at concurrency 8), and at
/// worst one more flush's time of latency.
pub(super) fn budget(last_flush: Duration) -> Duration {
    last_flush.min(MAX_GATHER)
}

/// Whether a leader that has waited `waited` of its `budget`, with
/// `tickets` taken, waits on for the `expect`ed ones.
pub(super) fn keep_waiting(tickets: u64, expect: u64, waited: Duration, budget: Duration) -> bool {
    tickets < expect && waited < budget
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_lone_writer_that_writes_again_is_already_there() {
        // One writer, ticket 1, flushed; it comes back with ticket 2.
        let mut b = Batch::new(0);
        b.flushed(1, 0, 1, MS);
        assert_eq!(b.expect, 2);
        assert!(!keep_waiting(2, b.expect, Duration::ZERO, b.budget()));
        // Its last write: nobody is expected, its next saga's create
        // (ticket 3) does not wait either.
        b.flushed(2, 1, 2, MS);
        assert_eq!(b.expect, 2);
        assert!(!keep_waiting(3, b.expect, Duration::ZERO, b.budget()));
    }

    #[test]
    fn the_writers_a_flush_released_are_waited_for_until_the_budget_is_spent() {
        // Eight writers (tickets 1..=8) flushed, two of them final; two
        // more (9, 10) arrived during the flush.
        let mut b = Batch::new(0);
        b.flushed(8, 2, 10, 4 * MS);
        assert_eq!(
            b.expect, 16,
            "the two late ones and the six that write again"
        );
        assert_eq!(b.budget(), MAX_GATHER);
        assert!(keep_waiting(15, b.expect, Duration::ZERO, b.budget()));
        assert!(!keep_waiting(16, b.expect, Duration::ZERO, b.budget()));
        assert!(!keep_waiting(15, b.expect, b.budget(), b.budget()));
        // The next flush covers 9..=16: only what it covered is counted.
        b.flushed(16, 2, 16, MS / 2);
        assert_eq!(b.expect, 24);
        assert_eq!(b.budget(), MS / 2);
    }

    #[test]
    fn the_budget_is_the_last_flush_and_at_most_the_cap() {
        assert_eq!(budget(Duration::ZERO), Duration::ZERO);
        assert_eq!(budget(MS / 5), MS / 5);
        assert_eq!(budget(50 * MS), MAX_GATHER);
    }

    #[test]
    fn finals_counted_after_the_target_do_not_make_the_expectation_negative() {
        let mut b = Batch::new(10);
        // Covered 3, but 5 finals were counted (some after the target).
        b.flushed(13, 5, 14, MS);
        assert_eq!(b.expect, 14);
    }
}
