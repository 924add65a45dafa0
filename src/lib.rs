//! Workspace root package: it exists to own the top-level `examples/`, `benches/` and `tests/`.
