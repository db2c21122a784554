//! Orders: by id; each owner's orders newest first (which is also the
//! verification history of an account, and the orders of an anonymous buyer);
//! the active (non-final) orders by deadline.
//!
//! # Tree `orders`
//!
//! | key | value |
//! |---|---|
//! | `o` order(16) | `OrderRow` |
//! | `w` owner(17) | the head page of the owner's order ids ([`crate::list::ListHead`]) |
//! | `p` owner(17) page(u64 BE) | an archived page of order ids ([`OWNER_PAGE_IDS`]) |
//! | `a` expires_at(8) order(16) | empty: the order is active |
//! | `n` anon(16) | `AnonRow`: an anonymous buyer's invoice and sealed order details |
//!
//! What was ordered (service, country, channel) and the phone number are kept
//! as the events' sealed sections ([`StoredPii`]) and opened on read.

mod apply;
mod query;

use chrono::{DateTime, Utc};
use nexus_core::domain::ids::{AnonymousId, DepositId, OrderId};
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{CancelReason, DeliveryChannel, OrderStatus};
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::sealed::StoredPii;

pub use apply::OrdersProjection;
pub use query::{AnonymousView, HistoryItem, OrderView, OrdersView};

/// The projection's (and its tree's) name.
pub const NAME: &str = "orders";
/// Order ids per archived page of an owner's list.
pub const OWNER_PAGE_IDS: usize = 128;

/// An order as the read model keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OrderRow {
    pub order: OrderId,
    pub owner: Owner,
    pub status: OrderStatus,
    pub price: Micros,
    #[serde(with = "crate::keys::ts")]
    pub placed_at: DateTime<Utc>,
    #[serde(with = "crate::keys::ts")]
    pub expires_at: DateTime<Utc>,
    #[serde(with = "crate::keys::ts::option")]
    pub assigned_at: Option<DateTime<Utc>>,
    pub provider: Option<String>,
    pub provider_cost: Option<Micros>,
    pub codes_received: u32,
    #[serde(with = "crate::keys::ts::option")]
    pub first_code_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::keys::ts::option")]
    pub delivered_at: Option<DateTime<Utc>>,
    pub delivered_via: Option<DeliveryChannel>,
    pub resend_requested: bool,
    #[serde(with = "crate::keys::ts::option")]
    pub closed_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<CancelReason>,
    pub completed_automatically: bool,
    /// Sealed `OrderDetails` (from `OrderPlaced`, or from the anonymous
    /// buyer's `AnonymousOrderCreated`).
    pub details: Option<StoredPii>,
    /// Sealed `PhonePii` from `OrderNumberAssigned`.
    pub phone: Option<StoredPii>,
}

/// An anonymous buyer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AnonRow {
    #[serde(with = "crate::keys::ts")]
    pub created_at: DateTime<Utc>,
    pub invoice: DepositId,
    pub price: Micros,
    /// Sealed `OrderDetails`, under the buyer's subject.
    pub details: Option<StoredPii>,
    pub orders_started: u32,
}

fn order_key(order: OrderId) -> Vec<u8> {
    keys::key(b'o', &[order.0.as_bytes()])
}

fn owner_key(owner: &Owner) -> Vec<u8> {
    keys::key(b'w', &[&keys::owner(owner)])
}

fn owner_page_key(owner: &Owner, page: u64) -> Vec<u8> {
    keys::key(b'p', &[&keys::owner(owner), &page.to_be_bytes()])
}

fn active_key(expires_at: DateTime<Utc>, order: OrderId) -> Vec<u8> {
    keys::key(b'a', &[&keys::time(expires_at), order.0.as_bytes()])
}

fn anon_key(anon: AnonymousId) -> Vec<u8> {
    keys::key(b'n', &[anon.0.as_bytes()])
}
