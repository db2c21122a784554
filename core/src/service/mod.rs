//! The command services: each loads the aggregates a decision reads from the
//! log, calls the pure decision of `domain`, and appends what it decided, all
//! through the one [`runner::Runner`]. Reads for queries fold the same streams.

pub mod account_service;
pub mod commerce_service;
pub mod legal_hold_service;
pub mod policy_service;
pub mod repo;
pub mod runner;
