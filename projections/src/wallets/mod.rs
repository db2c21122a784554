//! Wallets: balance, held and available per owner; the ledger entries of each
//! wallet with the running balance, newest first; deposit history; the
//! balances of the system accounts (so the read model's trial balance can be
//! checked to sum to zero).
//!
//! # Tree `wallets`
//!
//! | key | value |
//! |---|---|
//! | `w` owner(17) | `WalletRow`: available, held, the ledger's head page, the deposit list's head page |
//! | `l` owner(17) page(u64 BE) | an archived page of [`LedgerRow`]s ([`LEDGER_PAGE_ROWS`]) |
//! | `e` owner(17) page(u64 BE) | an archived page of deposit ids ([`DEPOSIT_PAGE_IDS`]) |
//! | `d` deposit(16) | [`DepositRecord`] |
//! | `s` tag(1) | a system account's balance (i64) |
//!
//! Nothing here is personal: amounts, ids, times, crypto transaction hashes.

mod apply;
mod query;

use chrono::{DateTime, Utc};
use nexus_core::domain::ids::{DepositId, OrderId};
use nexus_core::domain::ledger::{LedgerAccount, Owner, Reason};
use nexus_core::domain::money::Micros;
use nexus_core::domain::wallet::DepositOutcome;
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::list::ListHead;

pub use apply::WalletsProjection;
pub use query::{WalletBalance, WalletsView};

/// The projection's (and its tree's) name.
pub const NAME: &str = "wallets";
/// The format of this tree's rows (see [`crate::Projection::format_version`]).
pub const FORMAT_VERSION: u32 = 1;
/// Ledger rows per archived page (and at most in the head).
pub const LEDGER_PAGE_ROWS: usize = 32;
/// Deposit ids per archived page.
pub const DEPOSIT_PAGE_IDS: usize = 64;
/// Payments listed on one deposit (the totals count them all).
pub const MAX_LISTED_PAYMENTS: usize = 16;

/// One owner's wallet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WalletRow {
    pub available: Micros,
    pub held: Micros,
    pub ledger: ListHead<LedgerRow>,
    pub deposits: ListHead<DepositId>,
}

/// What a ledger row refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reference {
    Order(OrderId),
    Deposit(DepositId),
    /// The move of the balance to unclaimed balances (the account was
    /// erased). Last, so rows written before it keep their encoding.
    Unclaimed,
}

/// The effect of one event on one wallet, with the balances after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRow {
    /// The log position of the event.
    pub position: u64,
    #[serde(with = "crate::keys::ts")]
    pub at: DateTime<Utc>,
    pub reason: Reason,
    pub reference: Reference,
    pub available_change: Micros,
    pub held_change: Micros,
    /// Available after this row.
    pub available: Micros,
    /// Held after this row.
    pub held: Micros,
}

impl LedgerRow {
    /// The running balance: available plus held after this row.
    pub fn balance(&self) -> Micros {
        Micros(self.available.0.saturating_add(self.held.0))
    }
}

/// Where a deposit invoice stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DepositStatus {
    Waiting,
    Paid,
    /// The gateway reported a final failure and nothing was paid (yet: a late
    /// payment turns it into `Paid`).
    Failed,
}

/// A crypto payment credited against a deposit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub network: String,
    pub tx_hash: String,
    pub amount: Micros,
    pub outcome: DepositOutcome,
    pub late: bool,
    #[serde(with = "crate::keys::ts")]
    pub at: DateTime<Utc>,
}

/// A deposit invoice and what was paid against it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositRecord {
    pub deposit: DepositId,
    pub owner: Owner,
    pub invoiced: Micros,
    #[serde(with = "crate::keys::ts")]
    pub requested_at: DateTime<Utc>,
    #[serde(with = "crate::keys::ts")]
    pub expires_at: DateTime<Utc>,
    pub status: DepositStatus,
    /// The gateway's failure word, if it reported one.
    pub failure: Option<String>,
    /// Everything credited, over all payments.
    pub paid: Micros,
    pub payment_count: u32,
    /// The first [`MAX_LISTED_PAYMENTS`] payments.
    pub payments: Vec<PaymentRecord>,
}

fn wallet_key(owner: &Owner) -> Vec<u8> {
    keys::key(b'w', &[&keys::owner(owner)])
}

fn ledger_page_key(owner: &Owner, page: u64) -> Vec<u8> {
    keys::key(b'l', &[&keys::owner(owner), &page.to_be_bytes()])
}

fn deposit_page_key(owner: &Owner, page: u64) -> Vec<u8> {
    keys::key(b'e', &[&keys::owner(owner), &page.to_be_bytes()])
}

fn deposit_key(deposit: DepositId) -> Vec<u8> {
    keys::key(b'd', &[deposit.0.as_bytes()])
}

/// The system accounts, each with its one-byte tag.
const SYSTEM_ACCOUNTS: [(LedgerAccount, u8); 5] = [
    (LedgerAccount::CryptoClearing, b'c'),
    (LedgerAccount::Revenue, b'r'),
    (LedgerAccount::ProviderCost, b'p'),
    (LedgerAccount::CashbackExpense, b'b'),
    (LedgerAccount::Unclaimed, b'u'),
];

fn system_key(account: LedgerAccount) -> Option<Vec<u8>> {
    SYSTEM_ACCOUNTS
        .iter()
        .find(|(a, _)| *a == account)
        .map(|(_, tag)| vec![b's', *tag])
}
