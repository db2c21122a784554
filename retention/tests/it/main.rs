//! nexus-retention's integration tests, one binary: a module per subject.

mod sweeps;
