//! nexus-core's integration tests, one binary: a module per subject.

mod accounts;
mod aggregate_cache;
mod commerce;
mod email_lookup;
mod event_samples;
mod lease;
mod log;
mod log_backend;
mod recovery;
mod two_factor;
