//! Crypto deposits (stream `deposit-<hex>`: the invoice, what each gateway
//! payment has credited to it, and its fate) and the guard that ties a crypto
//! transaction to one deposit (stream `payment-<digest>`).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::aggregate::Aggregate;
use super::codec::{upcast, EventBody};
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
/// Longest id of a payment at the gateway, in bytes.
pub const MAX_GATEWAY_PAYMENT_BYTES: usize = 64;

/// The gateway's id of one payment (NOWPayments' `payment_id`): what the
/// gateway's cumulative amounts are counted against. 1-64 printable ASCII.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GatewayPaymentId(String);

impl GatewayPaymentId {
    pub fn new(text: &str) -> Result<GatewayPaymentId, DepositError> {
        let ok = (1..=MAX_GATEWAY_PAYMENT_BYTES).contains(&text.len())
            && text.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(DepositError::InvalidPayment);
        }
        Ok(GatewayPaymentId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the gateway reports of one of its payments: the payment, the
/// transaction it names (the last one seen), and the total paid so far. The
/// total is cumulative: a later report of the same payment replaces, never
/// adds to, an earlier one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentReport {
    pub gateway_payment: GatewayPaymentId,
    pub transaction: Payment,
    /// USD, as the gateway reports it.
    pub paid_total: Micros,
}

impl PaymentReport {
    pub fn new(
        gateway_payment: &str,
        transaction: Payment,
        paid_total: Micros,
    ) -> Result<PaymentReport, DepositError> {
        Ok(PaymentReport {
            gateway_payment: GatewayPaymentId::new(gateway_payment)?,
            transaction,
            paid_total,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositRequested {
    pub deposit: DepositId,
    pub owner: Owner,
    pub amount: Micros,
    pub at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A credit to the deposit: `paid` is what this event credits, the increase
/// over what `gateway_payment` had credited before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositPaid {
    pub deposit: DepositId,
    pub payment: Payment,
    pub paid: Micros,
    /// `None` on credits recorded before payments were counted per gateway
    /// payment (schema version 1).
    pub gateway_payment: Option<GatewayPaymentId>,
    pub at: DateTime<Utc>,
}

/// [`DepositPaid`] as schema version 1 wrote it: one transaction, no gateway
/// payment. Frozen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositPaidV1 {
    pub deposit: DepositId,
    pub payment: Payment,
    pub paid: Micros,
    pub at: DateTime<Utc>,
}

impl From<DepositPaidV1> for DepositPaid {
    fn from(v1: DepositPaidV1) -> DepositPaid {
        DepositPaid {
            deposit: v1.deposit,
            payment: v1.payment,
            paid: v1.paid,
            gateway_payment: None,
            at: v1.at,
        }
    }
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
        DepositPaid(DepositPaid) = 2 { 1 => upcast::<DepositPaidV1, DepositPaid> },
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
    /// Everything credited to this deposit.
    pub paid: Micros,
    /// What each gateway payment has credited (its greatest reported total).
    pub credited: BTreeMap<GatewayPaymentId, Micros>,
    /// What credits recorded without a gateway payment (schema version 1) add up to.
    pub unattributed: Micros,
}

impl Deposit {
    /// What counts as credited already for `gateway_payment`: its own credits,
    /// plus every credit recorded before payments were told apart. Nexus opens
    /// one gateway payment per invoice, so those were this payment's; counting
    /// them for every payment can hold back money, never credit it twice.
    pub fn credited_for(&self, gateway_payment: &GatewayPaymentId) -> Micros {
        let own = self
            .credited
            .get(gateway_payment)
            .copied()
            .unwrap_or(Micros::ZERO);
        own.strict_add(self.unattributed)
    }
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
                let counted = match &e.gateway_payment {
                    Some(id) => self.credited.entry(id.clone()).or_default(),
                    None => &mut self.unattributed,
                };
                *counted = counted.strict_add(e.paid);
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
    #[error("a network name is 1-16 lowercase letters or digits, a transaction hash 1-128 printable characters, a gateway payment id 1-64")]
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

/// Records what `report` adds to the invoice: the increase of the reported
/// total over what its gateway payment credited before. A report that adds
/// nothing (re-sent, out of order, or of a smaller total) records nothing. The
/// caller credits the wallet with the event's `paid` in the same append.
pub fn pay(
    deposit: &Deposit,
    report: &PaymentReport,
    now: DateTime<Utc>,
) -> Result<Vec<DepositEvent>, DepositError> {
    let requested = deposit.requested.as_ref().ok_or(DepositError::NotFound)?;
    if !report.paid_total.is_positive() {
        return Err(DepositError::NothingPaid);
    }
    let before = deposit.credited_for(&report.gateway_payment);
    let increase = report
        .paid_total
        .checked_sub(before)
        .map_err(|_| DepositError::PaidOverflow)?;
    if !increase.is_positive() {
        return Ok(vec![]);
    }
    // Applying the payment cannot fail: refuse here what would overflow.
    if deposit.paid.checked_add(increase).is_err() {
        return Err(DepositError::PaidOverflow);
    }
    Ok(vec![DepositEvent::DepositPaid(DepositPaid {
        deposit: requested.deposit,
        payment: report.transaction.clone(),
        paid: increase,
        gateway_payment: Some(report.gateway_payment.clone()),
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
