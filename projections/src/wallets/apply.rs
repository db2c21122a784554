//! Applying wallet and deposit events to the wallets read model.

use nexus_core::domain::deposit::DepositEvent;
use nexus_core::domain::ledger::{Entry, LedgerAccount, Owner};
use nexus_core::domain::money::Micros;
use nexus_core::domain::wallet::WalletEvent;
use nexus_core::log::RecordedEvent;

use super::*;
use crate::error::ApplyError;
use crate::projection::Projection;
use crate::staging::Staging;
use crate::stream::{self, Category};

/// The wallets projection.
#[derive(Debug, Default)]
pub struct WalletsProjection;

impl Projection for WalletsProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn format_version(&self) -> u32 {
        FORMAT_VERSION
    }

    fn apply(&mut self, record: &RecordedEvent, st: &mut Staging) -> Result<(), ApplyError> {
        match Category::of(record.stream.as_str()) {
            Some((Category::Wallet, rest)) => {
                stream::wallet_owner(record, rest)?;
                wallet_event(record, &stream::decode(record)?, st)
            }
            Some((Category::Deposit, _)) => deposit_event(record, &stream::decode(record)?, st),
            _ => Ok(()),
        }
    }
}

/// The change one event makes to one owner's wallet.
struct Change {
    owner: Owner,
    available: i64,
    held: i64,
    reason: Reason,
}

fn overflow(record: &RecordedEvent) -> ApplyError {
    ApplyError::Overflow {
        event_type: record.event_type.clone(),
    }
}

fn missing_deposit(record: &RecordedEvent, deposit: DepositId) -> ApplyError {
    ApplyError::Missing {
        event_type: record.event_type.clone(),
        what: "deposit",
        id: deposit.to_string(),
    }
}

fn add(record: &RecordedEvent, a: Micros, b: i64) -> Result<Micros, ApplyError> {
    a.0.checked_add(b)
        .map(Micros)
        .ok_or_else(|| overflow(record))
}

fn wallet_event(
    record: &RecordedEvent,
    event: &WalletEvent,
    st: &mut Staging,
) -> Result<(), ApplyError> {
    let (reference, at) = match event {
        WalletEvent::WalletDepositCredited(e) => (Reference::Deposit(e.deposit), e.at),
        WalletEvent::WalletHoldPlaced(e) => (Reference::Order(e.order), e.at),
        WalletEvent::WalletHoldCaptured(e) => (Reference::Order(e.order), e.at),
        WalletEvent::WalletHoldVoided(e) => (Reference::Order(e.order), e.at),
        WalletEvent::WalletCashbackCredited(e) => (Reference::Order(e.order), e.at),
        WalletEvent::WalletBalanceUnclaimed(e) => (Reference::Unclaimed, e.at),
    };
    let mut changes: Vec<Change> = Vec::with_capacity(1);
    for entry in event.entries() {
        post(record, &entry, &mut changes, st)?;
    }
    for change in changes {
        let row = st.get_or_insert_with(&wallet_key(&change.owner), WalletRow::default)?;
        row.available = add(record, row.available, change.available)?;
        row.held = add(record, row.held, change.held)?;
        let line = LedgerRow {
            position: record.position,
            at,
            reason: change.reason,
            reference,
            available_change: Micros(change.available),
            held_change: Micros(change.held),
            available: row.available,
            held: row.held,
        };
        if let Some((page, items)) = row.ledger.push(line, LEDGER_PAGE_ROWS) {
            st.put(ledger_page_key(&change.owner, page), items);
        }
    }
    if let WalletEvent::WalletDepositCredited(e) = event {
        let deposit = st
            .get_mut::<DepositRecord>(&deposit_key(e.deposit))?
            .ok_or_else(|| missing_deposit(record, e.deposit))?;
        deposit.status = DepositStatus::Paid;
        deposit.paid = add(record, deposit.paid, e.entry.amount.0)?;
        deposit.payment_count = deposit.payment_count.saturating_add(1);
        if deposit.payments.len() < MAX_LISTED_PAYMENTS {
            deposit.payments.push(PaymentRecord {
                network: e.payment.network.clone(),
                tx_hash: e.payment.tx_hash.clone(),
                amount: e.entry.amount,
                outcome: e.outcome,
                late: e.late,
                at: e.at,
            });
        }
    }
    Ok(())
}

/// Posts both sides of an entry: to the changes of the owners' wallets, or to
/// the system accounts' balances.
fn post(
    record: &RecordedEvent,
    entry: &Entry,
    changes: &mut Vec<Change>,
    st: &mut Staging,
) -> Result<(), ApplyError> {
    let amount = entry.amount.0;
    for (account, signed) in [
        (entry.debit, amount.checked_neg()),
        (entry.credit, Some(amount)),
    ] {
        let signed = signed.ok_or_else(|| overflow(record))?;
        let (owner, available, held) = match account {
            LedgerAccount::Available(owner) => (owner, signed, 0),
            LedgerAccount::Held(owner) => (owner, 0, signed),
            system => {
                if let Some(key) = system_key(system) {
                    let balance = st.get_or_insert_with::<i64>(&key, || 0)?;
                    *balance = balance
                        .checked_add(signed)
                        .ok_or_else(|| overflow(record))?;
                }
                continue;
            }
        };
        match changes.iter_mut().find(|c| c.owner == owner) {
            Some(c) => {
                c.available = c
                    .available
                    .checked_add(available)
                    .ok_or_else(|| overflow(record))?;
                c.held = c.held.checked_add(held).ok_or_else(|| overflow(record))?;
            }
            None => changes.push(Change {
                owner,
                available,
                held,
                reason: entry.reason,
            }),
        }
    }
    Ok(())
}

fn deposit_event(
    record: &RecordedEvent,
    event: &DepositEvent,
    st: &mut Staging,
) -> Result<(), ApplyError> {
    match event {
        DepositEvent::DepositRequested(e) => {
            let deposit = DepositRecord {
                deposit: e.deposit,
                owner: e.owner,
                invoiced: e.amount,
                requested_at: e.at,
                expires_at: e.expires_at,
                status: DepositStatus::Waiting,
                failure: None,
                paid: Micros::ZERO,
                payment_count: 0,
                payments: Vec::new(),
            };
            st.put(deposit_key(e.deposit), deposit);
            let row = st.get_or_insert_with(&wallet_key(&e.owner), WalletRow::default)?;
            if let Some((page, items)) = row.deposits.push(e.deposit, DEPOSIT_PAGE_IDS) {
                st.put(deposit_page_key(&e.owner, page), items);
            }
        }
        // The wallet's credit, in the same append, carries the same facts and
        // more (outcome, late): the deposit row is updated from it.
        DepositEvent::DepositPaid(_) => {}
        DepositEvent::DepositFailed(e) => {
            let deposit = st
                .get_mut::<DepositRecord>(&deposit_key(e.deposit))?
                .ok_or_else(|| missing_deposit(record, e.deposit))?;
            if deposit.status == DepositStatus::Waiting {
                deposit.status = DepositStatus::Failed;
                deposit.failure = Some(e.status.clone());
            }
        }
    }
    Ok(())
}
