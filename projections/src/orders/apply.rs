//! Applying order and anonymous-buyer events to the orders read model.

use nexus_core::domain::anonymous::AnonymousEvent;
use nexus_core::domain::order::{OrderEvent, OrderStatus};
use nexus_core::log::RecordedEvent;

use super::*;
use crate::error::ApplyError;
use crate::list::ListHead;
use crate::projection::Projection;
use crate::staging::Staging;
use crate::stream::{self, Category};

/// The orders projection.
#[derive(Debug, Default)]
pub struct OrdersProjection;

impl Projection for OrdersProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn format_version(&self) -> u32 {
        FORMAT_VERSION
    }

    fn apply(&mut self, record: &RecordedEvent, st: &mut Staging) -> Result<(), ApplyError> {
        match Category::of(record.stream.as_str()) {
            Some((Category::Order, rest)) => {
                // Codes are never kept here: nothing to erase.
                if stream::known_and_ignored::<OrderEvent>(record, &["OrderCodeErased"]) {
                    return Ok(());
                }
                let order = stream::order_of(record, rest)?;
                order_event(record, order, stream::decode(record)?, st)
            }
            Some((Category::Anonymous, _)) => anon_event(record, stream::decode(record)?, st),
            _ => Ok(()),
        }
    }
}

fn missing(record: &RecordedEvent, what: &'static str, id: impl std::fmt::Display) -> ApplyError {
    ApplyError::Missing {
        event_type: record.event_type.clone(),
        what,
        id: id.to_string(),
    }
}

/// Where the order rows are (none yet: one empty bucket).
fn bucket_state(st: &mut Staging) -> Result<BucketState, ApplyError> {
    Ok(st
        .get::<BucketState>(BUCKET_STATE_KEY)?
        .copied()
        .unwrap_or_default())
}

/// The row of `order`, to change in place.
fn order_row_mut(st: &mut Staging, order: OrderId) -> Result<Option<&mut OrderRow>, ApplyError> {
    let state = bucket_state(st)?;
    Ok(st
        .get_mut::<OrderBucket>(&bucket_key(state.bucket_of(order)))?
        .and_then(|bucket| bucket.get_mut(order)))
}

/// Splits `bucket` after `state` counted it as split: its rows that now hash
/// to the new bucket move there.
fn split_bucket(st: &mut Staging, state: &BucketState, bucket: u32) -> Result<(), ApplyError> {
    let Some(old) = st.take::<OrderBucket>(&bucket_key(bucket))? else {
        return Ok(());
    };
    let (mut stay, mut moved) = (OrderBucket::with_room(), OrderBucket::with_room());
    for row in old.rows {
        if state.bucket_of(row.order) == bucket {
            stay.rows.push(row);
        } else {
            moved.rows.push(row);
        }
    }
    if let Some(first) = moved.rows.first() {
        let to = state.bucket_of(first.order);
        st.put(bucket_key(to).to_vec(), moved);
    }
    if !stay.rows.is_empty() {
        st.put(bucket_key(bucket).to_vec(), stay);
    }
    Ok(())
}

fn placed(
    record: &RecordedEvent,
    order: OrderId,
    e: &nexus_core::domain::order::OrderPlaced,
    st: &mut Staging,
) -> Result<(), ApplyError> {
    let row = OrderRow {
        order,
        owner: e.owner,
        status: OrderStatus::Placed,
        price: e.price,
        placed_at: e.placed_at,
        expires_at: e.expires_at,
        assigned_at: None,
        provider: None,
        provider_cost: None,
        codes_received: 0,
        first_code_at: None,
        delivered_at: None,
        delivered_via: None,
        resend_requested: false,
        closed_at: None,
        cancel_reason: None,
        completed_automatically: false,
        details: StoredPii::of(record),
        phone: None,
    };
    let state = bucket_state(st)?;
    let bucket =
        st.get_or_insert_with(&bucket_key(state.bucket_of(order)), OrderBucket::with_room)?;
    if bucket.upsert(row) {
        let mut state = state;
        let split = state.add_order();
        st.put(BUCKET_STATE_KEY.to_vec(), state);
        if let Some(bucket) = split {
            split_bucket(st, &state, bucket)?;
        }
    }
    st.put(active_key(e.expires_at, order), ());
    let list = st.get_or_insert_with(&owner_key(&e.owner), ListHead::<OrderId>::default)?;
    if let Some((page, ids)) = list.push(order, OWNER_PAGE_IDS) {
        st.put(owner_page_key(&e.owner, page), ids);
    }
    Ok(())
}

fn order_event(
    record: &RecordedEvent,
    order: OrderId,
    event: OrderEvent,
    st: &mut Staging,
) -> Result<(), ApplyError> {
    match &event {
        OrderEvent::OrderPlaced(e) => return placed(record, order, e, st),
        // Codes are never kept here: nothing to erase.
        OrderEvent::OrderCodeErased(_) => return Ok(()),
        _ => {}
    }
    let row = order_row_mut(st, order)?.ok_or_else(|| missing(record, "order", order))?;
    let was_final = row.status.is_final();
    match event {
        OrderEvent::OrderPlaced(_) | OrderEvent::OrderCodeErased(_) => {}
        OrderEvent::OrderNumberAssigned(e) => {
            row.status = OrderStatus::NumberAssigned;
            row.assigned_at = Some(e.at);
            row.provider = Some(e.provider);
            row.provider_cost = Some(e.provider_cost);
            row.phone = StoredPii::of(record);
        }
        OrderEvent::OrderCodeReceived(e) => {
            // The code itself lives only in the log, sealed under a key of its
            // own that is erased after delivery.
            row.codes_received = row.codes_received.saturating_add(1);
            row.first_code_at.get_or_insert(e.at);
            row.resend_requested = false;
            if row.status != OrderStatus::CodeDelivered {
                row.status = OrderStatus::CodeReceived;
            }
        }
        OrderEvent::OrderCodeDelivered(e) => {
            if row.delivered_at.is_none() {
                row.delivered_at = Some(e.at);
                row.delivered_via = Some(e.via);
            }
            row.status = OrderStatus::CodeDelivered;
        }
        OrderEvent::OrderResendRequested(_) => row.resend_requested = true,
        OrderEvent::OrderCompleted(e) => {
            row.status = OrderStatus::Completed;
            row.closed_at = Some(e.at);
            row.completed_automatically = e.automatic;
        }
        OrderEvent::OrderCancelled(e) => {
            row.status = OrderStatus::Cancelled;
            row.closed_at = Some(e.at);
            row.cancel_reason = Some(e.reason);
        }
        OrderEvent::OrderExpired(e) => {
            row.status = OrderStatus::Expired;
            row.closed_at = Some(e.at);
        }
    }
    if row.status.is_final() && !was_final {
        let expires_at = row.expires_at;
        st.delete(&active_key(expires_at, order));
    }
    Ok(())
}

fn anon_event(
    record: &RecordedEvent,
    event: AnonymousEvent,
    st: &mut Staging,
) -> Result<(), ApplyError> {
    match event {
        AnonymousEvent::AnonymousOrderCreated(e) => {
            let row = AnonRow {
                created_at: e.at,
                invoice: e.invoice,
                price: e.price,
                details: StoredPii::of(record),
                orders_started: 0,
            };
            st.put(anon_key(e.anon), row);
        }
        AnonymousEvent::AnonymousOrderStarted(e) => {
            let anon = st
                .get_mut::<AnonRow>(&anon_key(e.anon))?
                .ok_or_else(|| missing(record, "anonymous buyer", e.anon))?;
            anon.orders_started = anon.orders_started.saturating_add(1);
            let details = anon.details.clone();
            let order =
                order_row_mut(st, e.order)?.ok_or_else(|| missing(record, "order", e.order))?;
            // Orders placed before `OrderPlaced` sealed its details.
            if order.details.is_none() {
                order.details = details;
            }
        }
        // The tracking ID no longer finds anything (its sealed copy is unreadable
        // anyway); the orders themselves stay, as financial records.
        AnonymousEvent::AnonymousDataErased(e) => st.delete(&anon_key(e.anon)),
    }
    Ok(())
}
