//! The retention schedule: which subjects' personal data is due for erasure
//! when, and which months of financial records are due for pruning. Only the
//! schedule: the sweeps that act on it are the retention crate's.
//!
//! - An account is due at the `erase_due_at` of its `AccountDeletionRequested`
//!   (30 days after the request), and leaves the schedule when the request is
//!   withdrawn or when its erasure is recorded (`AccountErased`).
//! - An anonymous buyer is due [`ANONYMOUS_RETENTION_DAYS`] after its order
//!   was created.
//! - Financial records (the records of `wallet-`, `deposit-` and `payment-`
//!   streams) are counted per month of their recording; a month is due
//!   [`FINANCIAL_RETENTION_YEARS`] years after its end, so no record is due
//!   before its 7 years are over.
//!
//! # Tree `retention`
//!
//! | key | value |
//! |---|---|
//! | `d` due(8) kind(1) id(16) | empty: a subject due at that time (`a` account, `n` anonymous) |
//! | `s` kind(1) id(16) | due(8): the subject's entry, to move or remove it |
//! | `f` year(u16 BE) month(u8) | `FinancialMonth` of the records recorded in that month |

mod apply;
mod query;

use serde::{Deserialize, Serialize};

pub use apply::RetentionProjection;
pub use query::{DueMonth, DueSubject, RetentionView, ScheduledSubject};

/// The projection's (and its tree's) name.
pub const NAME: &str = "retention";
/// The format of this tree's rows (see [`crate::Projection::format_version`]).
pub const FORMAT_VERSION: u32 = 1;
/// Anonymous order data is erased this many days after the order's creation.
pub const ANONYMOUS_RETENTION_DAYS: i64 = nexus_core::domain::anonymous::RETENTION_DAYS;
/// Financial records are kept this many years.
pub const FINANCIAL_RETENTION_YEARS: i32 = 7;

/// Financial records of one calendar month (UTC).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FinancialMonth {
    pub records: u64,
    pub first_position: u64,
    pub last_position: u64,
}

const ACCOUNT: u8 = b'a';
const ANONYMOUS: u8 = b'n';

fn due_key(due: &[u8; 8], kind: u8, id: &uuid::Uuid) -> Vec<u8> {
    crate::keys::key(b'd', &[due, &[kind], id.as_bytes()])
}

fn subject_key(kind: u8, id: &uuid::Uuid) -> Vec<u8> {
    crate::keys::key(b's', &[&[kind], id.as_bytes()])
}

fn month_key(year: i32, month: u32) -> Vec<u8> {
    let year = year.clamp(0, i32::from(u16::MAX)) as u16;
    crate::keys::key(b'f', &[&year.to_be_bytes(), &[month as u8]])
}
