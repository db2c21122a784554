//! nexus-core's integration tests, one binary: a module per subject.

mod accounts;
mod aggregate_cache;
mod commerce;
mod event_samples;
mod log;
mod two_factor;
