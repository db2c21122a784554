//! The finance audit: the ledger replayed from the log, independently of the
//! read models, then checked.
//!
//! - [`trial_balance`]: every ledger entry recorded up to a time (all of them
//!   without one), posted to its two accounts: the balances of every customer
//!   wallet and system account at that time. Double entry means the accounts
//!   sum to zero; a wallet below zero breaks the ledger's other invariant. Both
//!   are reported as findings, never assumed.
//! - [`compare_with_read_model`]: the replayed balances at the head against the
//!   wallets read model's (what customers and operators see).
//! - [`export_entries`]: every ledger entry of a time range, one line each, for
//!   finance's own tools.
//!
//! The log's hash chain (that no record was altered) is checked by the log
//! itself (`EventStore::verify`); the audit command runs both.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use nexus_core::domain::codec::DomainEvent;
use nexus_core::domain::ledger::{Balances, Entry, LedgerAccount, LedgerError, Owner};
use nexus_core::domain::money::Micros;
use nexus_core::domain::wallet::WalletEvent;
use nexus_core::log::{EventStore, LogError, RecordedEvent};

use crate::wallets::WalletsView;
use crate::QueryError;

/// Events read per batch.
const BATCH: usize = 10_000;
/// Findings listed at most (their count is exact).
pub const MAX_FINDINGS: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the wallet event at position {position} does not decode: {reason}")]
    Undecodable { position: u64, reason: String },
    #[error("posting the entry at position {position} overflows its account")]
    Overflow { position: u64 },
    #[error("the entry at position {position} is not a valid entry: {reason}")]
    InvalidEntry { position: u64, reason: String },
    #[error(transparent)]
    ReadModel(#[from] QueryError),
    #[error("writing the export: {0}")]
    Write(#[from] std::io::Error),
}

/// The ledger at a point in time.
#[derive(Clone, Debug, Default)]
pub struct TrialBalance {
    /// The last position included.
    pub position: u64,
    pub events_read: u64,
    pub entries_posted: u64,
    pub balances: Balances,
    /// Wallet accounts (available or held) below zero: `(account, balance)`.
    pub negative_wallets: Vec<(LedgerAccount, Micros)>,
    pub negative_wallets_count: u64,
}

impl TrialBalance {
    /// The sum over every account: zero for a sound ledger.
    pub fn total(&self) -> i128 {
        self.balances.total()
    }

    pub fn ok(&self) -> bool {
        self.total() == 0 && self.negative_wallets_count == 0
    }

    /// The balances of the system accounts (every wallet summed apart).
    pub fn summary(&self) -> BTreeMap<String, i128> {
        let mut out = BTreeMap::new();
        for (account, balance) in self.balances.iter() {
            let name = match account {
                LedgerAccount::Available(_) => "customer_available".to_owned(),
                LedgerAccount::Held(_) => "customer_held".to_owned(),
                other => account_name(other),
            };
            *out.entry(name).or_insert(0) += i128::from(balance.0);
        }
        out
    }
}

/// A replayed wallet that disagrees with the read model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub account: String,
    pub replayed: Micros,
    pub read_model: Micros,
}

/// The ledger replayed from the log up to `until` (inclusive; the whole log
/// without it).
pub async fn trial_balance<S: EventStore>(
    log: &S,
    until: Option<DateTime<Utc>>,
) -> Result<TrialBalance, AuditError> {
    let mut trial = TrialBalance::default();
    for_each_entry(
        log,
        |record, entry| {
            if until.is_some_and(|until| record.recorded_at > until) {
                return Ok(());
            }
            trial.position = record.position;
            trial.balances.post(entry).map_err(|e| match e {
                LedgerError::Money(_) => AuditError::Overflow {
                    position: record.position,
                },
                LedgerError::NotPositive | LedgerError::SameAccount => AuditError::InvalidEntry {
                    position: record.position,
                    reason: e.to_string(),
                },
            })?;
            trial.entries_posted += 1;
            Ok(())
        },
        &mut trial.events_read,
    )
    .await?;
    for (account, balance) in trial.balances.iter() {
        if matches!(
            account,
            LedgerAccount::Available(_) | LedgerAccount::Held(_)
        ) && balance.0 < 0
        {
            trial.negative_wallets_count += 1;
            if trial.negative_wallets.len() < MAX_FINDINGS {
                trial.negative_wallets.push((*account, *balance));
            }
        }
    }
    Ok(trial)
}

/// Every replayed wallet and system account against the wallets read model;
/// `trial` must be the whole log's (no `until`) and the read model caught up
/// to its position. At most [`MAX_FINDINGS`] mismatches are listed.
pub fn compare_with_read_model(
    trial: &TrialBalance,
    wallets: &WalletsView,
) -> Result<(Vec<Mismatch>, u64), AuditError> {
    let mut mismatches = Vec::new();
    let mut count = 0u64;
    let mut note = |account: LedgerAccount, replayed: Micros, read_model: Micros| {
        if replayed != read_model {
            count += 1;
            if mismatches.len() < MAX_FINDINGS {
                mismatches.push(Mismatch {
                    account: account_name(&account),
                    replayed,
                    read_model,
                });
            }
        }
    };
    // Every wallet either side knows.
    let mut owners: Vec<Owner> = Vec::new();
    for (account, _) in trial.balances.iter() {
        if let LedgerAccount::Available(owner) | LedgerAccount::Held(owner) = account {
            owners.push(*owner);
        }
    }
    for wallet in wallets.all_wallets() {
        owners.push(wallet?.0);
    }
    owners.sort();
    owners.dedup();
    for owner in owners {
        let seen = wallets.balance(&owner)?;
        note(
            LedgerAccount::Available(owner),
            trial.balances.get(LedgerAccount::Available(owner)),
            seen.available,
        );
        note(
            LedgerAccount::Held(owner),
            trial.balances.get(LedgerAccount::Held(owner)),
            seen.held,
        );
    }
    for (account, seen) in wallets.system_balances()? {
        note(account, trial.balances.get(account), seen);
    }
    Ok((mismatches, count))
}

/// Writes every ledger entry recorded in `[from, to]` as one JSON object per
/// line: position, time, stream, event, debit, credit, amount (a decimal
/// string in USD), reason. Returns how many were written.
pub async fn export_entries<S: EventStore>(
    log: &S,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    out: &mut dyn std::io::Write,
) -> Result<u64, AuditError> {
    let mut written = 0u64;
    let mut events = 0u64;
    for_each_entry(
        log,
        |record, entry| {
            if from.is_some_and(|from| record.recorded_at < from)
                || to.is_some_and(|to| record.recorded_at > to)
            {
                return Ok(());
            }
            let line = serde_json::json!({
                "position": record.position,
                "recorded_at": record.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                "stream": record.stream.as_str(),
                "event": record.event_type,
                "debit": account_name(&entry.debit),
                "credit": account_name(&entry.credit),
                "amount": entry.amount.to_string(),
                "reason": entry.reason.as_str(),
            });
            writeln!(out, "{line}")?;
            written += 1;
            Ok(())
        },
        &mut events,
    )
    .await?;
    Ok(written)
}

/// Calls `each` with every ledger entry of the log, in log order.
async fn for_each_entry<S: EventStore>(
    log: &S,
    mut each: impl FnMut(&RecordedEvent, &Entry) -> Result<(), AuditError>,
    events_read: &mut u64,
) -> Result<(), AuditError> {
    let head = log.head();
    let mut from = 0;
    while from <= head {
        let batch = log.read_all(from, BATCH).await?;
        let Some(last) = batch.last() else { break };
        from = last.position + 1;
        for record in &batch {
            *events_read += 1;
            if !record.stream.as_str().starts_with("wallet-") {
                continue;
            }
            let event =
                WalletEvent::decode(&record.event_type, record.schema_version, &record.payload)
                    .map_err(|e| AuditError::Undecodable {
                        position: record.position,
                        reason: e.to_string(),
                    })?;
            for entry in event.entries() {
                each(record, &entry)?;
            }
        }
    }
    Ok(())
}

/// A ledger account's name in reports: `available:account-<id>`,
/// `held:anon-<id>`, `crypto_clearing`, … (ids only, no personal data).
pub fn account_name(account: &LedgerAccount) -> String {
    let owner = |owner: &Owner| owner.subject().as_str().to_owned();
    match account {
        LedgerAccount::Available(o) => format!("available:{}", owner(o)),
        LedgerAccount::Held(o) => format!("held:{}", owner(o)),
        LedgerAccount::CryptoClearing => "crypto_clearing".into(),
        LedgerAccount::Revenue => "revenue".into(),
        LedgerAccount::ProviderCost => "provider_cost".into(),
        LedgerAccount::CashbackExpense => "cashback_expense".into(),
        LedgerAccount::Unclaimed => "unclaimed".into(),
    }
}
