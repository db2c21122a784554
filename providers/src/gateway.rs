//! The crypto payment gateway: invoices for deposits, and the gateway's signed
//! payment notifications (IPN), NOWPayments-style.
//!
//! # Invoices
//!
//! [`PaymentGateway::create_invoice`] asks the gateway for a payment of a USD
//! amount in a chosen crypto currency; the invoice's id is our [`DepositId`]
//! (the gateway's `order_id`), so every notification names the deposit it pays.
//! [`NowPayments`] speaks NOWPayments' API (`POST /v1/payment`);
//! [`SimulatedGateway`] is the embedded default and the tests' gateway: it makes
//! invoices at made-up rates and can "pay" them by posting a correctly signed
//! notification to our IPN route.
//!
//! # Notifications
//!
//! The gateway POSTs JSON with the payment's status and amounts, signed with
//! HMAC-SHA512 (key: the IPN secret) over the body re-serialized with its keys
//! sorted recursively ([`json`]), hex in the `x-nowpayments-sig` header.
//! [`IpnHandler`] verifies in constant time (`verify_slice`) before it reads a
//! single field, and refuses unsigned, malformed or mis-signed calls with a
//! typed [`IpnError`] and no state change. A body that is not JSON cannot
//! carry the signature (it covers the canonical JSON), so it is refused as
//! mis-signed, not for its JSON; reading the body is linear in its size.
//! Amounts are parsed from the JSON number's text ([`decimal`]), never through
//! `f64`.
//!
//! What each status does:
//!
//! | status | effect |
//! |---|---|
//! | `waiting`, `confirming`, `confirmed`, `sending` | nothing (logged at debug) |
//! | `finished` | what the payment's total adds is credited (see below) |
//! | `partially_paid` | the same: what was actually paid so far is credited |
//! | `failed`, `expired`, `refunded` | the deposit is marked failed ([`Commerce::fail_deposit`]); a paid deposit stays paid |
//! | anything else | nothing (logged at warn) |
//!
//! **`partially_paid`, then more.** NOWPayments sends `partially_paid` when
//! the customer sent less than the quoted amount and the funds reached our
//! wallet. The money arrived, so it is credited at once as a `Partial` deposit
//! (DOMAIN.md: money that arrived is never kept back). If the customer then
//! sends the rest to the same payment, the gateway reports the payment again
//! (`partially_paid` or `finished`) with its new **total**: only the increase
//! is credited ($2 paid, then $5 in all: $2, then $3, outcome `Exact`). The
//! customer can also top up with a new deposit.
//!
//! **The amount reported** (USD micro-dollars, rounded down): the gateway's
//! `actually_paid_at_fiat` when present and positive; otherwise
//! `price_amount × actually_paid / pay_amount` in exact integer arithmetic;
//! otherwise, for `finished` only (the gateway's word that the invoice is paid
//! in full), `price_amount`. A non-USD `price_currency` is refused. These
//! amounts are cumulative: the total paid to the payment so far.
//!
//! **Credited once, for what was paid**, by the domain
//! ([`Commerce::record_payment`]): per gateway payment (`payment_id`), the
//! total credited is the greatest total reported for it. A notification
//! credits the increase over what its payment credited before; a re-sent,
//! reordered or smaller one credits nothing (`AlreadyCredited`), with or
//! without its `payin_hash` (NOWPayments does not always send one), and two
//! arriving at once are decided one after the other on the deposit's stream.
//! The transaction a notification names, [`Payment::new`]`(network, tx)` (the
//! network is `pay_currency` lowercased to 1-16 letters and digits,
//! `USDTTRC20` → `usdttrc20`; `tx` is `payin_hash`, else `payment_id`), is
//! recorded with the credit and is never credited to a second deposit.
//!
//! A `finished` after `expired` is still credited, marked late by the domain.
//!
//! [`Commerce::fail_deposit`]: nexus_core::service::commerce_service::Commerce::fail_deposit
//! [`Commerce::record_payment`]: nexus_core::service::commerce_service::Commerce::record_payment
//! [`Payment::new`]: nexus_core::domain::wallet::Payment::new

pub mod decimal;
pub mod ipn;
pub mod json;
pub mod nowpayments;
pub mod simulated;

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use nexus_core::domain::ids::DepositId;
use nexus_core::domain::money::Micros;

pub use ipn::{
    canonical_body, network_name, sign, verify, Ipn, IpnError, IpnHandler, IpnOutcome, IpnSecret,
    PaymentStatus, MAX_IPN_BYTES, SIGNATURE_HEADER,
};
pub use nowpayments::{NowPayments, NowPaymentsConfig};
pub use simulated::{IpnDelivery, SignedIpn, SimulatedGateway, SimulatedPayment};

/// The pay currency used when a customer names none.
pub const DEFAULT_PAY_CURRENCY: &str = "btc";

/// An invoice: what to pay, where, until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invoice {
    /// Our deposit id (simple form): the gateway's `order_id`.
    pub id: String,
    /// The gateway's own id of the payment (`payment_id`).
    pub gateway_id: String,
    /// The USD amount invoiced.
    pub amount: Micros,
    /// Lowercase, as the gateway names it (`btc`, `usdttrc20`).
    pub pay_currency: String,
    /// The crypto amount to send, as a plain decimal string.
    pub pay_amount: String,
    pub pay_address: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("the gateway does not accept {0:?}")]
    UnsupportedCurrency(String),
    #[error("an invoice needs a positive amount")]
    InvalidAmount,
    #[error("no such invoice")]
    UnknownInvoice,
    #[error("not configured: {0}")]
    NotConfigured(&'static str),
    #[error("the gateway is unavailable: {0}")]
    Unavailable(String),
    #[error("the gateway refused: {0}")]
    Rejected(String),
    #[error("the gateway's answer is malformed: {0}")]
    Malformed(String),
}

pub type GatewayFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, GatewayError>> + Send + 'a>>;

/// A crypto payment gateway.
pub trait PaymentGateway: Send + Sync {
    fn name(&self) -> &str;

    /// Whether an invoice in `pay_currency` can be asked for at all: checked
    /// before a deposit is written, so that a request that can never succeed
    /// is refused as bad input. The gateway may still refuse one it accepts.
    fn accepts_currency(&self, pay_currency: &str) -> bool;

    /// Creates the gateway's payment for deposit `deposit` of `amount` USD, to
    /// be paid in `pay_currency`.
    fn create_invoice<'a>(
        &'a self,
        deposit: DepositId,
        amount: Micros,
        pay_currency: &'a str,
    ) -> GatewayFuture<'a, Invoice>;
}
