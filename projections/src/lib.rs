//! Read models fed by catch-up subscriptions to the log (see docs/PROJECTIONS.md).
//!
//! - [`Projection`]: a handler of log records that writes only to its own sled
//!   tree, through a [`Staging`] that commits its changes and its checkpoint in
//!   one atomic sled batch.
//! - [`Runner`]: keeps projections caught up, each in its own task; reports
//!   position, lag and failures; [`Runner::wait_for`] gives read-your-writes.
//! - [`rebuild()`]: drops projections' trees and replays the log.
//! - The read models, each a projection with a typed query view:
//!   [`accounts`], [`wallets`], [`orders`], [`catalog`], [`retention`].
//!
//! Personal data is never stored in plain: read models keep the events' sealed
//! sections and open them with the vault on read ([`sealed`]), or keyed hashes.

pub mod accounts;
pub mod audit;
pub mod catalog;
mod error;
pub mod keys;
pub mod list;
mod models;
pub mod orders;
mod projection;
pub mod rebuild;
pub mod retention;
mod runner;
pub mod sealed;
mod staging;
pub mod stream;
pub mod value;
pub mod wallets;

pub use error::{ApplyError, QueryError, StorageError, StoredValueError};
pub use list::{Cursor, Page, MAX_PAGE_SIZE};
pub use models::{ReadModels, ReadModelsConfig, TreeDump, DIR_IN_DATA_DIR, PROJECTION_NAMES};
pub use projection::{apply_events, Applier, Failure, Projection};
pub use rebuild::{rebuild, RebuildError, RebuildOptions, RebuildOutcome, RebuildReport};
pub use runner::{
    Progress, ProjectionStatus, RunState, Runner, RunnerConfig, WaitError, DEFAULT_BATCH_EVENTS,
    MAX_BATCH_EVENTS, MAX_WAIT,
};
pub use staging::{Row, Staging};
