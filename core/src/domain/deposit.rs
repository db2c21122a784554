//! Crypto deposits (stream `deposit-<hex>`: the invoice and its fate) and the
//! exactly-once guard per crypto transaction (stream `payment-<digest>`).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::aggregate::Aggregate;
use super::codec::EventBody;
use super::ids::DepositId;
use super::ledger::Owner;
use super::money::Micros;
use super::wallet::Payment;
use crate::domain_events;
use crate::log::StreamName;

/// How long an invoice waits for payment.
pub const INVOICE_TTL_MINUTES: i64 = 60;
/// Longest network name and transaction hash, in bytes.
pub const MAX_NETWORK_BYTES: usize = 16;
pub const MAX_TX_HASH_BYTES: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositRequested {
    pub deposit: DepositId,
    pub owner: Owner,
    pub amount: Micros,
    pub at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositPaid {
    pub deposit: DepositId,
    pub payment: Payment,
    pub paid: Micros,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositFailed {
    pub deposit: DepositId,
    /// The gateway's final status word (`failed`, `expired`, …).
    pub status: String,
    pub at: DateTime<Utc>,
}

/// The guard event: this transaction was credited, to this deposit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecorded {
    pub payment: Payment,
    pub deposit: DepositId,
    pub at: DateTime<Utc>,
}

impl EventBody for DepositRequested {}
impl EventBody for DepositPaid {}
impl EventBody for DepositFailed {}
impl EventBody for PaymentRecorded {}

domain_events! {
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum DepositEvent {
        DepositRequested(DepositRequested) = 1,
        DepositPaid(DepositPaid) = 1,
        DepositFailed(DepositFailed) = 1,
    }
}

domain_events! {
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum PaymentEvent {
        PaymentRecorded(PaymentRecorded) = 1,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DepositStatus {
    Waiting,
    Paid,
    Failed,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deposit {
    pub requested: Option<DepositRequested>,
    pub status: Option<DepositStatus>,
    pub paid: Micros,
}

impl Aggregate for Deposit {
    type Event = DepositEvent;

    fn apply(&mut self, event: &DepositEvent) {
        match event {
            DepositEvent::DepositRequested(e) => {
                self.requested = Some(e.clone());
                self.status = Some(DepositStatus::Waiting);
            }
            DepositEvent::DepositPaid(e) => {
                self.status = Some(DepositStatus::Paid);
                self.paid = self.paid.strict_add(e.paid);
            }
            DepositEvent::DepositFailed(_) => {
                // A payment that arrives after a failure still counts (late).
                if self.status == Some(DepositStatus::Waiting) {
                    self.status = Some(DepositStatus::Failed);
                }
            }
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaymentGuard {
    pub recorded: Option<PaymentRecorded>,
}

impl Aggregate for PaymentGuard {
    type Event = PaymentEvent;

    fn apply(&mut self, event: &PaymentEvent) {
        let PaymentEvent::PaymentRecorded(e) = event;
        self.recorded = Some(e.clone());
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepositError {
    #[error("no such deposit")]
    NotFound,
    #[error("the deposit exists already")]
    AlreadyRequested,
    #[error("a network name is 1-16 lowercase letters or digits, a transaction hash 1-128 printable characters")]
    InvalidPayment,
    #[error("the paid amount must be more than zero")]
    NothingPaid,
    #[error("the payments of this deposit add up to more than can be counted")]
    PaidOverflow,
}

impl Payment {
    /// Checks the shape of gateway-supplied identifiers.
    pub fn new(network: &str, tx_hash: &str) -> Result<Payment, DepositError> {
        let network_ok = (1..=MAX_NETWORK_BYTES).contains(&network.len())
            && network
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let hash_ok = (1..=MAX_TX_HASH_BYTES).contains(&tx_hash.len())
            && tx_hash.bytes().all(|b| b.is_ascii_graphic());
        if !(network_ok && hash_ok) {
            return Err(DepositError::InvalidPayment);
        }
        Ok(Payment {
            network: network.to_owned(),
            tx_hash: tx_hash.to_owned(),
        })
    }

    /// The guard stream of this transaction: `payment-<SHA-256 of network:hash>`.
    pub fn stream(&self) -> StreamName {
        let digest = Sha256::digest(format!("{}:{}", self.network, self.tx_hash).as_bytes());
        StreamName::new(format!("payment-{}", hex::encode(digest)))
            .expect("hex digits make a valid stream name")
    }
}

pub fn request(
    deposit: &Deposit,
    id: DepositId,
    owner: Owner,
    amount: Micros,
    now: DateTime<Utc>,
) -> Result<Vec<DepositEvent>, DepositError> {
    if deposit.requested.is_some() {
        return Err(DepositError::AlreadyRequested);
    }
    Ok(vec![DepositEvent::DepositRequested(DepositRequested {
        deposit: id,
        owner,
        amount,
        at: now,
        expires_at: now + Duration::minutes(INVOICE_TTL_MINUTES),
    })])
}

/// Records a payment against the invoice (the caller credits the wallet and writes
/// the payment guard in the same append).
pub fn pay(
    deposit: &Deposit,
    payment: Payment,
    paid: Micros,
    now: DateTime<Utc>,
) -> Result<Vec<DepositEvent>, DepositError> {
    let requested = deposit.requested.as_ref().ok_or(DepositError::NotFound)?;
    if !paid.is_positive() {
        return Err(DepositError::NothingPaid);
    }
    // Applying the payment cannot fail: refuse here what would overflow.
    if deposit.paid.checked_add(paid).is_err() {
        return Err(DepositError::PaidOverflow);
    }
    Ok(vec![DepositEvent::DepositPaid(DepositPaid {
        deposit: requested.deposit,
        payment,
        paid,
        at: now,
    })])
}

/// Records a final failure status from the gateway; once paid, nothing changes.
pub fn fail(
    deposit: &Deposit,
    status: &str,
    now: DateTime<Utc>,
) -> Result<Vec<DepositEvent>, DepositError> {
    let requested = deposit.requested.as_ref().ok_or(DepositError::NotFound)?;
    if deposit.status != Some(DepositStatus::Waiting) {
        return Ok(vec![]);
    }
    Ok(vec![DepositEvent::DepositFailed(DepositFailed {
        deposit: requested.deposit,
        status: status
            .chars()
            .filter(char::is_ascii_graphic)
            .take(32)
            .collect(),
        at: now,
    })])
}
