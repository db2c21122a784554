//! The retention schedule: which subjects' personal data is due for erasure
//! when, and which months of financial records are due for pruning. Only the
//! schedule: the sweeps that act on it are the retention crate's.
//!
//! - An account is due at the `erase_due_at` of its `AccountDeletionRequested`
//!   (30 days after the request), or, while no address of it was verified,
//!   [`UNVERIFIED_LAPSE_HOURS`] after its registration, whichever is earlier.
//!   A verification takes the lapse off, a withdrawal the deletion; the
//!   account leaves the schedule when neither is left or when its erasure is
//!   recorded (`AccountErased`).
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
//! | `x` id(16) | `AccountDues` of an account: its lapse and its deletion, each while it stands |
//! | `f` year(u16 BE) month(u8) | `FinancialMonth` of the records recorded in that month |

mod apply;
mod query;

use serde::{Deserialize, Serialize};

pub use apply::RetentionProjection;
pub use query::{DueMonth, DueSubject, RetentionView, ScheduledSubject};

/// The projection's (and its tree's) name.
pub const NAME: &str = "retention";
/// The format of this tree's rows (see [`crate::Projection::format_version`]).
pub const FORMAT_VERSION: u32 = 2;
/// Anonymous order data is erased this many days after the order's creation.
pub const ANONYMOUS_RETENTION_DAYS: i64 = nexus_core::domain::anonymous::RETENTION_DAYS;
/// An account with no verified address lapses this many hours after
/// registration.
pub const UNVERIFIED_LAPSE_HOURS: i64 = nexus_core::domain::account::UNVERIFIED_LAPSE_HOURS;
/// Financial records are kept this many years.
pub const FINANCIAL_RETENTION_YEARS: i32 = 7;

/// Financial records of one calendar month (UTC).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FinancialMonth {
    pub records: u64,
    pub first_position: u64,
    pub last_position: u64,
}

/// What may make an account due, each while it stands (big-endian
/// [`crate::keys::time`]s); the schedule holds the earlier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AccountDues {
    /// Its registration lapses then unless an address is verified first.
    pub lapse: Option<[u8; 8]>,
    /// Its deletion is due then unless withdrawn first.
    pub deletion: Option<[u8; 8]>,
}

impl AccountDues {
    fn earliest(&self) -> Option<[u8; 8]> {
        match (self.lapse, self.deletion) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

const ACCOUNT: u8 = b'a';
const ANONYMOUS: u8 = b'n';

fn due_key(due: &[u8; 8], kind: u8, id: &uuid::Uuid) -> Vec<u8> {
    crate::keys::key(b'd', &[due, &[kind], id.as_bytes()])
}

fn dues_key(id: &uuid::Uuid) -> Vec<u8> {
    crate::keys::key(b'x', &[id.as_bytes()])
}

fn subject_key(kind: u8, id: &uuid::Uuid) -> Vec<u8> {
    crate::keys::key(b's', &[&[kind], id.as_bytes()])
}

fn month_key(year: i32, month: u32) -> Vec<u8> {
    let year = year.clamp(0, i32::from(u16::MAX)) as u16;
    crate::keys::key(b'f', &[&year.to_be_bytes(), &[month as u8]])
}
