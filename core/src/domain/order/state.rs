//! The order, folded from its stream.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::events::*;
use crate::domain::aggregate::Aggregate;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    Placed,
    NumberAssigned,
    /// A code waits to be read.
    CodeReceived,
    CodeDelivered,
    Completed,
    Cancelled,
    Expired,
}

impl OrderStatus {
    /// Only these are final; any other order is active.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Completed | OrderStatus::Cancelled | OrderStatus::Expired
        )
    }
}

/// An order's state. `None` before `OrderPlaced`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Order {
    pub placed: Option<OrderPlaced>,
    pub status: Option<OrderStatus>,
    pub assigned: Option<OrderNumberAssigned>,
    /// The newest code (sequence, event); earlier codes are superseded.
    pub code: Option<OrderCodeReceived>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub resend_requested: bool,
    /// Codes whose keys were erased.
    pub erased_codes: Vec<u32>,
    pub closed_at: Option<DateTime<Utc>>,
}

impl Aggregate for Order {
    type Event = OrderEvent;

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::OrderPlaced(e) => {
                self.placed = Some(e.clone());
                self.status = Some(OrderStatus::Placed);
            }
            OrderEvent::OrderNumberAssigned(e) => {
                self.assigned = Some(e.clone());
                self.status = Some(OrderStatus::NumberAssigned);
            }
            OrderEvent::OrderCodeReceived(e) => {
                self.code = Some(e.clone());
                self.resend_requested = false;
                if self.status != Some(OrderStatus::CodeDelivered) {
                    self.status = Some(OrderStatus::CodeReceived);
                }
            }
            OrderEvent::OrderCodeDelivered(e) => {
                self.delivered_at.get_or_insert(e.at);
                self.status = Some(OrderStatus::CodeDelivered);
            }
            OrderEvent::OrderResendRequested(_) => self.resend_requested = true,
            OrderEvent::OrderCompleted(e) => {
                self.status = Some(OrderStatus::Completed);
                self.closed_at = Some(e.at);
            }
            OrderEvent::OrderCancelled(e) => {
                self.status = Some(OrderStatus::Cancelled);
                self.closed_at = Some(e.at);
            }
            OrderEvent::OrderExpired(e) => {
                self.status = Some(OrderStatus::Expired);
                self.closed_at = Some(e.at);
            }
            OrderEvent::OrderCodeErased(e) => self.erased_codes.push(e.sequence),
        }
    }
}
