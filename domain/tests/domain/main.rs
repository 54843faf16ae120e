//! The domain's tests, in one binary: given/when/then per command, value
//! parsing, event encoding, and property tests of the invariants.

mod events;
mod file;
mod fixtures;
mod harness;
mod identity;
mod node;
mod notification;
mod properties;
mod render_job;
mod tenant;
mod values;
