//! The Nexus core: the append-only event log, its envelope and hash chain, and the
//! PII vault. It depends on no other Nexus crate.
pub mod domain;
mod durable;
pub mod log;
pub mod postgres;
pub mod service;
mod store;
pub mod vault;

pub use store::{Store, StoreConfig, StoreError};
