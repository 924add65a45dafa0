//! Workspace root package: it owns the top-level `examples/`, `benches/`
//! and `tests/`, and the torture harness they share.

pub mod torture;
