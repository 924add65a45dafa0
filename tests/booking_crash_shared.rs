//! Booking crash test with the participants on the engine's database: the
//! torture harness (`src/torture.rs`) with [`torture::Layout::EngineDb`],
//! as the demo server runs them. The participants do not flush a step's
//! effect themselves; the engine's flush after the step covers it, and a
//! kill before that flush leaves the step in doubt, retried under its key.
//! 40 SIGKILLs (`CRASH_KILLS` to change it; below 20 is refused); the same
//! checks as `booking_crash`: every acknowledged start survived, no
//! participant holds an effect of a lost saga, and at the end seats,
//! payments, miles and bookings match every saga's outcome.
//!
//! `TORTURE_PARTICIPANTS=own-db-covered` with `SAGA_SABOTAGE=cover-foreign-db`
//! (in `scripts/sabotage-engine-checks`) puts the participants on a database
//! of their own while they still count on the engine's flushes: their
//! effects are acknowledged unflushed, and this test must fail.
//!
//! `harness = false`: this binary is the parent and, with `--child`, the child.

use saga_workspace::torture;

fn main() {
    torture::test_main("booking_crash_shared", 40, Some("engine-db"))
}
