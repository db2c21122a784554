//! nexus-projections' integration tests, one binary: a module per subject; the
//! world they share is `common`.

mod audit;
mod common;
mod crash;
mod format_version;
mod privacy;
mod queries;
mod read_your_writes;
mod rebuild;
