//! Shared by the crash tests' binaries (the SIGKILL loop itself lives in
//! the root package, `saga_workspace::kill_loop`).

pub mod ledger;
