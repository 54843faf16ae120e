//! The event store's integration tests: one binary, one conformance suite run
//! against every backend, and the PostgreSQL gap-safety stress test.

mod conformance;
mod gap_safety;
mod migration;
mod sqlite_wal;
mod support;
mod wakeups;
