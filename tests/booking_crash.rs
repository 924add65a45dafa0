//! Booking crash test: the torture harness (`src/torture.rs`) with 100
//! SIGKILLs (`CRASH_KILLS` to raise it; below 20 is refused). Bookings run
//! in a child process killed at random points, the participants on a sled
//! database apart from the engine's; each restart checks that every
//! acknowledged start survived, that no participant holds an effect of a
//! lost saga, and the sagas that ended; a final child checks seats,
//! payments, miles and bookings against every saga's outcome. Violations
//! are listed and fail the test; so does a run with too few kills in
//! flight or too few completed checks.
//!
//! `harness = false`: this binary is the parent and, with `--child`, the child.

use saga_workspace::torture;

fn main() {
    torture::test_main("booking_crash", 100, None)
}
