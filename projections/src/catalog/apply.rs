//! Applying order events to the catalog statistics.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use nexus_core::domain::anonymous::AnonymousEvent;
use nexus_core::domain::codec::Personal;
use nexus_core::domain::ids::OrderId;
use nexus_core::domain::order::{OrderDetails, OrderEvent};
use nexus_core::log::RecordedEvent;
use nexus_core::vault::{Vault, VaultError};

use super::*;
use crate::error::{ApplyError, QueryError};
use crate::projection::Projection;
use crate::staging::Staging;
use crate::stream::{self, Category};

/// The catalog projection. It holds the vault to open what was ordered when
/// an order settles.
pub struct CatalogProjection {
    vault: Arc<Vault>,
}

impl CatalogProjection {
    pub fn new(vault: Arc<Vault>) -> Self {
        Self { vault }
    }
}

impl Projection for CatalogProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn format_version(&self) -> u32 {
        FORMAT_VERSION
    }

    fn apply(&mut self, record: &RecordedEvent, st: &mut Staging) -> Result<(), ApplyError> {
        match Category::of(record.stream.as_str()) {
            Some((Category::Order, rest)) => {
                let change = order_change(record)?;
                if let OrderChange::Nothing = change {
                    return Ok(());
                }
                let order = stream::order_of(record, rest)?;
                self.order_event(record, order, change, st)
            }
            Some((Category::Anonymous, _)) => anon_event(record, stream::decode(record)?, st),
            _ => Ok(()),
        }
    }
}

/// Order events that change no count.
const IGNORED_ORDER_EVENTS: &[&str] = &[
    "OrderCodeDelivered",
    "OrderResendRequested",
    "OrderCodeErased",
];

fn missing(record: &RecordedEvent, what: &'static str, id: impl std::fmt::Display) -> ApplyError {
    ApplyError::Missing {
        event_type: record.event_type.clone(),
        what,
        id: id.to_string(),
    }
}

/// How an order settled.
enum Outcome {
    Success,
    Failure,
}

/// What the catalog takes from an order event.
enum OrderChange {
    Placed,
    Assigned { provider: String, at: DateTime<Utc> },
    CodeReceived { at: DateTime<Utc> },
    Settled(Outcome),
    Nothing,
}

/// What an order event changes here. Only the types whose payload is read
/// (the number and the first code: provider and times) are decoded; of the
/// others the type is enough (most of the cost per event is the decoding, and
/// the orders projection decodes every one of them anyway). A type or schema
/// version this build does not know goes to the decoder, and fails.
fn order_change(record: &RecordedEvent) -> Result<OrderChange, ApplyError> {
    if stream::known_and_ignored::<OrderEvent>(record, IGNORED_ORDER_EVENTS) {
        return Ok(OrderChange::Nothing);
    }
    if stream::known_as::<OrderEvent>(record, &["OrderPlaced"]) {
        return Ok(OrderChange::Placed);
    }
    if stream::known_as::<OrderEvent>(record, &["OrderCompleted"]) {
        return Ok(OrderChange::Settled(Outcome::Success));
    }
    if stream::known_as::<OrderEvent>(record, &["OrderCancelled", "OrderExpired"]) {
        return Ok(OrderChange::Settled(Outcome::Failure));
    }
    Ok(match stream::decode::<OrderEvent>(record)? {
        OrderEvent::OrderPlaced(_) => OrderChange::Placed,
        OrderEvent::OrderNumberAssigned(e) => OrderChange::Assigned {
            provider: e.provider,
            at: e.at,
        },
        OrderEvent::OrderCodeReceived(e) => OrderChange::CodeReceived { at: e.at },
        OrderEvent::OrderCompleted(_) => OrderChange::Settled(Outcome::Success),
        OrderEvent::OrderCancelled(_) | OrderEvent::OrderExpired(_) => {
            OrderChange::Settled(Outcome::Failure)
        }
        OrderEvent::OrderCodeDelivered(_)
        | OrderEvent::OrderResendRequested(_)
        | OrderEvent::OrderCodeErased(_) => OrderChange::Nothing,
    })
}

impl CatalogProjection {
    fn order_event(
        &self,
        record: &RecordedEvent,
        order: OrderId,
        change: OrderChange,
        st: &mut Staging,
    ) -> Result<(), ApplyError> {
        let key = pending_key(order);
        let outcome = match change {
            OrderChange::Placed => {
                let pending = Pending {
                    details: StoredPii::of(record),
                    provider: None,
                    assigned_at: None,
                    first_code_at: None,
                };
                st.put(key, pending);
                return Ok(());
            }
            OrderChange::Assigned { provider, at } => {
                let pending = st
                    .get_mut::<Pending>(&key)?
                    .ok_or_else(|| missing(record, "order", order))?;
                pending.provider = Some(provider);
                pending.assigned_at = Some(at);
                return Ok(());
            }
            OrderChange::CodeReceived { at } => {
                // After the order settled (none in practice) there is nothing to do.
                if let Some(pending) = st.get_mut::<Pending>(&key)? {
                    pending.first_code_at.get_or_insert(at);
                }
                return Ok(());
            }
            OrderChange::Settled(outcome) => outcome,
            OrderChange::Nothing => return Ok(()),
        };
        let pending = st
            .take::<Pending>(&key)?
            .ok_or_else(|| missing(record, "order", order))?;
        let (service, country) = self.open_details(pending.details.as_ref())?;
        let provider = pending.provider.as_deref().unwrap_or("");
        let stats =
            st.get_or_insert_with(&stats_key(&service, &country, provider), Stats::default)?;
        stats.orders = stats.orders.saturating_add(1);
        match outcome {
            Outcome::Success => {
                stats.successes = stats.successes.saturating_add(1);
                if let (Some(assigned), Some(code)) = (pending.assigned_at, pending.first_code_at) {
                    let bucket = bucket_of((code - assigned).num_seconds());
                    if let Some(count) = stats.time_to_code.get_mut(bucket) {
                        *count = count.saturating_add(1);
                    }
                }
            }
            Outcome::Failure => stats.failures = stats.failures.saturating_add(1),
        }
        Ok(())
    }

    /// Service and country of an order ("" for unknown: erased, or not sealed
    /// in the log).
    fn open_details(&self, details: Option<&StoredPii>) -> Result<(String, String), ApplyError> {
        let Some(details) = details else {
            return Ok(Default::default());
        };
        let opened = details
            .open::<OrderDetails>(&self.vault)
            .map_err(|e| match e {
                QueryError::Vault(v) => ApplyError::Vault(v),
                other => ApplyError::Vault(VaultError::Corrupt {
                    what: other.to_string(),
                }),
            })?;
        Ok(match opened {
            Personal::Plain(d) => (d.service.as_str().to_owned(), d.country.as_str().to_owned()),
            Personal::Erased | Personal::Unopened => Default::default(),
        })
    }
}

fn anon_event(
    record: &RecordedEvent,
    event: AnonymousEvent,
    st: &mut Staging,
) -> Result<(), ApplyError> {
    match event {
        AnonymousEvent::AnonymousOrderCreated(e) => {
            if let Some(sealed) = StoredPii::of(record) {
                st.put(anon_key(e.anon), sealed);
            }
        }
        AnonymousEvent::AnonymousOrderStarted(e) => {
            // Orders placed before `OrderPlaced` sealed its details.
            let key = pending_key(e.order);
            let has_details = st
                .get::<Pending>(&key)?
                .ok_or_else(|| missing(record, "order", e.order))?
                .details
                .is_some();
            if !has_details {
                let details = st.get::<StoredPii>(&anon_key(e.anon))?.cloned();
                if let Some(pending) = st.get_mut::<Pending>(&key)? {
                    pending.details = details;
                }
            }
        }
        AnonymousEvent::AnonymousDataErased(e) => st.delete(&anon_key(e.anon)),
    }
    Ok(())
}
