//! Workspace root package: it owns the top-level `examples/`, `benches/`
//! and `tests/`, and the crash-test harness they share: the SIGKILL loop
//! and its line protocol (`kill_loop`), the acknowledgement log
//! (`acklog`), violation lists and the `RESULT` line (`verdict`), and the
//! booking torture (`torture`).
//!
//! A test harness: children talk to their parent on stdout, so this crate
//! prints where a library would log.

pub mod acklog;
pub mod kill_loop;
pub mod torture;
pub mod verdict;
