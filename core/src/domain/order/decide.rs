//! The order policy and the pure decisions over an order:
//! `(&Order, …, now) -> Result<Vec<OrderEvent>, OrderError>`, the deadlines and
//! the code keys due for erasure.

use chrono::{DateTime, Duration, Utc};

use super::events::*;
use super::state::{Order, OrderStatus};
use super::OrderError;
use crate::domain::codec::Personal;
use crate::domain::ids::OrderId;
use crate::domain::ledger::Owner;
use crate::domain::money::Micros;

/// Settings the order decisions need (from configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderPolicy {
    /// Expiry without a code (default 20 minutes).
    pub ttl: Duration,
    /// Earliest cancel after the number is assigned (default 2 minutes).
    pub cancel_guard: Duration,
    /// How long a delivered code stays readable (default 10 minutes).
    pub delivery_window: Duration,
    /// Cashback on captured orders, in basis points (default 200 = 2%).
    pub cashback_bp: u32,
}

impl Default for OrderPolicy {
    fn default() -> Self {
        Self {
            ttl: Duration::minutes(20),
            cancel_guard: Duration::minutes(2),
            delivery_window: Duration::minutes(10),
            cashback_bp: 200,
        }
    }
}

impl Order {
    fn require(&self) -> Result<(&OrderPlaced, OrderStatus), OrderError> {
        match (&self.placed, self.status) {
            (Some(placed), Some(status)) => Ok((placed, status)),
            _ => Err(OrderError::NotFound),
        }
    }

    /// Whether the order is active: placed and not final.
    pub fn is_active(&self) -> bool {
        self.status.is_some_and(|s| !s.is_final())
    }

    /// When the customer may cancel (None before a number is assigned: at once).
    pub fn cancel_available_at(&self, policy: &OrderPolicy) -> Option<DateTime<Utc>> {
        self.assigned.as_ref().map(|a| a.at + policy.cancel_guard)
    }

    /// When a delivered code stops being readable.
    pub fn delivery_window_ends_at(&self, policy: &OrderPolicy) -> Option<DateTime<Utc>> {
        self.delivered_at.map(|at| at + policy.delivery_window)
    }
}

/// Places a new order (the caller places the hold in the same append).
#[allow(clippy::too_many_arguments)]
pub fn place(
    order: &Order,
    id: OrderId,
    owner: Owner,
    service: ServiceCode,
    country: CountryCode,
    channel: Channel,
    price: Micros,
    policy: &OrderPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    if order.placed.is_some() {
        return Err(OrderError::AlreadyPlaced);
    }
    Ok(vec![OrderEvent::OrderPlaced(OrderPlaced {
        order: id,
        owner,
        price,
        placed_at: now,
        expires_at: now + policy.ttl,
        details: Personal::Plain(OrderDetails {
            service,
            country,
            channel,
        }),
    })])
}

/// Records the number an upstream gave.
pub fn assign_number(
    order: &Order,
    provider: String,
    activation_id: String,
    provider_cost: Micros,
    phone: String,
    now: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    let (placed, status) = order.require()?;
    if status != OrderStatus::Placed {
        return Err(OrderError::WrongStatus(status));
    }
    Ok(vec![OrderEvent::OrderNumberAssigned(OrderNumberAssigned {
        order: placed.order,
        owner: placed.owner,
        provider,
        provider_cost,
        at: now,
        phone: Personal::Plain(PhonePii {
            phone,
            activation_id,
        }),
    })])
}

/// Records a code from the upstream (first, or after a resend).
pub fn receive_code(
    order: &Order,
    code: String,
    text: String,
    now: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    let (placed, status) = order.require()?;
    match status {
        OrderStatus::NumberAssigned | OrderStatus::CodeReceived => {}
        OrderStatus::CodeDelivered if order.resend_requested => {}
        other => return Err(OrderError::WrongStatus(other)),
    }
    let sequence = order.code.as_ref().map_or(1, |c| c.sequence + 1);
    Ok(vec![OrderEvent::OrderCodeReceived(OrderCodeReceived {
        order: placed.order,
        sequence,
        at: now,
        code: Personal::Plain(CodePii { code, text }),
    })])
}

/// A read of the code by its owner. The first read of each code is its delivery:
/// `Ok(events)` with `OrderCodeDelivered` then (the caller captures the hold on the
/// first delivery of the order); later reads within the window decide nothing.
pub fn read_code(
    order: &Order,
    via: DeliveryChannel,
    policy: &OrderPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    let (placed, status) = order.require()?;
    let code = order.code.as_ref().ok_or(OrderError::NoCodeYet)?;
    if order.erased_codes.contains(&code.sequence) {
        return Err(OrderError::CodeErased);
    }
    match status {
        OrderStatus::CodeReceived => Ok(vec![OrderEvent::OrderCodeDelivered(OrderCodeDelivered {
            order: placed.order,
            sequence: code.sequence,
            via,
            at: now,
        })]),
        OrderStatus::CodeDelivered | OrderStatus::Completed => {
            match order.delivery_window_ends_at(policy) {
                Some(end) if now < end => Ok(vec![]),
                _ => Err(OrderError::CodeErased),
            }
        }
        other => Err(OrderError::WrongStatus(other)),
    }
}

/// Asks the upstream for another SMS.
pub fn request_resend(order: &Order, now: DateTime<Utc>) -> Result<Vec<OrderEvent>, OrderError> {
    let (placed, status) = order.require()?;
    match status {
        OrderStatus::NumberAssigned | OrderStatus::CodeReceived | OrderStatus::CodeDelivered => Ok(
            vec![OrderEvent::OrderResendRequested(OrderResendRequested {
                order: placed.order,
                at: now,
            })],
        ),
        other => Err(OrderError::WrongStatus(other)),
    }
}

/// Cancels (the caller voids the hold in the same append). Refused once a code
/// was received upstream (the upstream has charged) and, after a number was
/// assigned, before the cancel guard has passed.
pub fn cancel(
    order: &Order,
    reason: CancelReason,
    policy: &OrderPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    let (placed, status) = order.require()?;
    match status {
        OrderStatus::Placed => {}
        OrderStatus::NumberAssigned => {
            let from = order
                .cancel_available_at(policy)
                .expect("a number was assigned");
            if reason == CancelReason::Customer && now < from {
                return Err(OrderError::CancelTooEarly(from));
            }
        }
        OrderStatus::CodeReceived | OrderStatus::CodeDelivered => {
            return Err(OrderError::CodeAlreadyReceived)
        }
        other => return Err(OrderError::WrongStatus(other)),
    }
    Ok(vec![OrderEvent::OrderCancelled(OrderCancelled {
        order: placed.order,
        reason,
        at: now,
    })])
}

/// Completes on the owner's word: only after the code was delivered.
pub fn complete(order: &Order, now: DateTime<Utc>) -> Result<Vec<OrderEvent>, OrderError> {
    let (placed, status) = order.require()?;
    match status {
        OrderStatus::CodeDelivered => Ok(vec![OrderEvent::OrderCompleted(OrderCompleted {
            order: placed.order,
            automatic: false,
            at: now,
        })]),
        OrderStatus::Placed | OrderStatus::NumberAssigned | OrderStatus::CodeReceived => {
            Err(OrderError::NoCodeYet)
        }
        other => Err(OrderError::WrongStatus(other)),
    }
}

/// What the deadline does to an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// No code came: expired, the hold is voided.
    ExpiredWithoutCode(Vec<OrderEvent>),
    /// A code came but was never read: completed, the hold is captured.
    CompletedUnread(Vec<OrderEvent>),
    /// The delivery window after the first read is over: completed (already captured).
    CompletedAfterDelivery(Vec<OrderEvent>),
    /// Nothing is due yet.
    NotDue,
}

/// Applies the deadlines at `now`: expiry without a code, or the end of the
/// delivery window. Final orders have nothing due.
pub fn on_deadline(
    order: &Order,
    policy: &OrderPolicy,
    now: DateTime<Utc>,
) -> Result<Timeout, OrderError> {
    let (placed, status) = order.require()?;
    let id = placed.order;
    let completed = |automatic| {
        vec![OrderEvent::OrderCompleted(OrderCompleted {
            order: id,
            automatic,
            at: now,
        })]
    };
    Ok(match status {
        OrderStatus::Placed | OrderStatus::NumberAssigned if now >= placed.expires_at => {
            Timeout::ExpiredWithoutCode(vec![OrderEvent::OrderExpired(OrderExpired {
                order: id,
                at: now,
            })])
        }
        OrderStatus::CodeReceived if now >= placed.expires_at => {
            Timeout::CompletedUnread(completed(true))
        }
        OrderStatus::CodeDelivered => match order.delivery_window_ends_at(policy) {
            Some(end) if now >= end => Timeout::CompletedAfterDelivery(completed(true)),
            _ => Timeout::NotDue,
        },
        _ => Timeout::NotDue,
    })
}

/// The code keys to erase now: every received code once the order is final, or
/// once the delivery window after the first read is over.
pub fn codes_to_erase(order: &Order, policy: &OrderPolicy, now: DateTime<Utc>) -> Vec<OrderEvent> {
    let Ok((placed, status)) = order.require() else {
        return vec![];
    };
    let window_over = order
        .delivery_window_ends_at(policy)
        .is_some_and(|end| now >= end);
    if !(status.is_final() || window_over) {
        return vec![];
    }
    let received = order.code.as_ref().map_or(0, |c| c.sequence);
    (1..=received)
        .filter(|s| !order.erased_codes.contains(s))
        .map(|sequence| {
            OrderEvent::OrderCodeErased(OrderCodeErased {
                order: placed.order,
                sequence,
                at: now,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::aggregate::{given, Aggregate};
    use crate::domain::ids::AccountId;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_000_000, 0).unwrap() + Duration::minutes(minutes)
    }

    fn id() -> OrderId {
        OrderId(uuid::Uuid::from_u128(42))
    }

    fn placed() -> Vec<OrderEvent> {
        place(
            &Order::default(),
            id(),
            Owner::Account(AccountId(uuid::Uuid::from_u128(1))),
            ServiceCode::new("tg").unwrap(),
            CountryCode::new("de").unwrap(),
            Channel::Sms,
            Micros(500_000),
            &OrderPolicy::default(),
            t(0),
        )
        .unwrap()
    }

    fn assigned() -> Vec<OrderEvent> {
        let mut events = placed();
        let order = Order::from_events(&events);
        events.extend(
            assign_number(
                &order,
                "sim-a".into(),
                "123".into(),
                Micros(300_000),
                "4915112345678".into(),
                t(0),
            )
            .unwrap(),
        );
        events
    }

    fn with_code() -> Vec<OrderEvent> {
        let mut events = assigned();
        events.extend(
            receive_code(
                &Order::from_events(&events),
                "12345".into(),
                "Your code is 12345".into(),
                t(1),
            )
            .unwrap(),
        );
        events
    }

    fn delivered() -> Vec<OrderEvent> {
        let mut events = with_code();
        events.extend(
            read_code(
                &Order::from_events(&events),
                DeliveryChannel::Api,
                &OrderPolicy::default(),
                t(2),
            )
            .unwrap(),
        );
        events
    }

    #[test]
    fn the_happy_path_moves_through_every_state() {
        let policy = OrderPolicy::default();
        let order = Order::from_events(&delivered());
        assert_eq!(order.status, Some(OrderStatus::CodeDelivered));
        let order = given::<Order>(delivered())
            .when(|o| complete(o, t(3)))
            .then(vec![OrderEvent::OrderCompleted(OrderCompleted {
                order: id(),
                automatic: false,
                at: t(3),
            })]);
        assert_eq!(order.status, Some(OrderStatus::Completed));
        // A retried read within the delivery window works and decides nothing.
        given::<Order>(delivered())
            .when(|o| read_code(o, DeliveryChannel::Api, &policy, t(5)))
            .then(vec![]);
        // After the window the code is gone.
        given::<Order>(delivered())
            .when(|o| read_code(o, DeliveryChannel::Api, &policy, t(12)))
            .then_err(OrderError::CodeErased);
    }

    #[test]
    fn illegal_transitions_are_typed_errors() {
        let policy = OrderPolicy::default();
        given::<Order>(with_code())
            .when(|o| cancel(o, CancelReason::Customer, &policy, t(5)))
            .then_err(OrderError::CodeAlreadyReceived);
        given::<Order>(delivered())
            .when(|o| cancel(o, CancelReason::Customer, &policy, t(5)))
            .then_err(OrderError::CodeAlreadyReceived);
        given::<Order>(assigned())
            .when(|o| complete(o, t(5)))
            .then_err(OrderError::NoCodeYet);
        given::<Order>(with_code())
            .when(|o| complete(o, t(5)))
            .then_err(OrderError::NoCodeYet);
        given::<Order>(placed())
            .when(|o| read_code(o, DeliveryChannel::Api, &policy, t(1)))
            .then_err(OrderError::NoCodeYet);
        given::<Order>(placed())
            .when(|o| receive_code(o, "1".into(), "1".into(), t(1)))
            .then_err(OrderError::WrongStatus(OrderStatus::Placed));
        given::<Order>(vec![])
            .when(|o| complete(o, t(1)))
            .then_err(OrderError::NotFound);
        given::<Order>(placed())
            .when(|o| {
                place(
                    o,
                    id(),
                    Owner::Account(AccountId::new()),
                    ServiceCode::new("wa").unwrap(),
                    CountryCode::new("us").unwrap(),
                    Channel::Voice,
                    Micros(1),
                    &policy,
                    t(0),
                )
            })
            .then_err(OrderError::AlreadyPlaced);
        let mut completed = delivered();
        completed.extend(complete(&Order::from_events(&completed), t(3)).unwrap());
        given::<Order>(completed)
            .when(|o| complete(o, t(4)))
            .then_err(OrderError::WrongStatus(OrderStatus::Completed));
    }

    #[test]
    fn cancel_waits_for_the_guard_after_a_number_is_assigned() {
        let policy = OrderPolicy::default();
        given::<Order>(placed())
            .when(|o| cancel(o, CancelReason::Customer, &policy, t(0)))
            .then(vec![OrderEvent::OrderCancelled(OrderCancelled {
                order: id(),
                reason: CancelReason::Customer,
                at: t(0),
            })]);
        given::<Order>(assigned())
            .when(|o| cancel(o, CancelReason::Customer, &policy, t(1)))
            .then_err(OrderError::CancelTooEarly(t(2)));
        given::<Order>(assigned())
            .when(|o| cancel(o, CancelReason::Customer, &policy, t(2)))
            .then(vec![OrderEvent::OrderCancelled(OrderCancelled {
                order: id(),
                reason: CancelReason::Customer,
                at: t(2),
            })]);
    }

    #[test]
    fn deadlines_expire_or_complete() {
        let policy = OrderPolicy::default();
        assert_eq!(
            on_deadline(&Order::from_events(&assigned()), &policy, t(19)),
            Ok(Timeout::NotDue)
        );
        assert!(matches!(
            on_deadline(&Order::from_events(&assigned()), &policy, t(20)),
            Ok(Timeout::ExpiredWithoutCode(_))
        ));
        assert!(matches!(
            on_deadline(&Order::from_events(&with_code()), &policy, t(20)),
            Ok(Timeout::CompletedUnread(_))
        ));
        assert_eq!(
            on_deadline(&Order::from_events(&delivered()), &policy, t(11)),
            Ok(Timeout::NotDue)
        );
        assert!(matches!(
            on_deadline(&Order::from_events(&delivered()), &policy, t(12)),
            Ok(Timeout::CompletedAfterDelivery(_))
        ));
    }

    #[test]
    fn codes_are_erased_when_the_order_closes_or_the_window_ends() {
        let policy = OrderPolicy::default();
        assert!(codes_to_erase(&Order::from_events(&with_code()), &policy, t(3)).is_empty());
        assert!(codes_to_erase(&Order::from_events(&delivered()), &policy, t(5)).is_empty());
        let due = codes_to_erase(&Order::from_events(&delivered()), &policy, t(12));
        assert_eq!(
            due,
            vec![OrderEvent::OrderCodeErased(OrderCodeErased {
                order: id(),
                sequence: 1,
                at: t(12)
            })]
        );
        let mut erased = delivered();
        erased.extend(due);
        assert!(
            codes_to_erase(&Order::from_events(&erased), &policy, t(13)).is_empty(),
            "once per code"
        );
    }

    #[test]
    fn a_resend_brings_a_second_code_with_its_own_key() {
        let mut events = delivered();
        events.extend(request_resend(&Order::from_events(&events), t(3)).unwrap());
        events.extend(
            receive_code(
                &Order::from_events(&events),
                "999".into(),
                "again".into(),
                t(4),
            )
            .unwrap(),
        );
        let order = Order::from_events(&events);
        assert_eq!(order.code.as_ref().map(|c| c.sequence), Some(2));
        assert_ne!(code_subject(id(), 1), code_subject(id(), 2));
        assert_eq!(
            order.status,
            Some(OrderStatus::CodeDelivered),
            "delivery (and capture) happened once"
        );
    }
}
