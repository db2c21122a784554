//! The order aggregate (stream `order-<hex>`).
//!
//! `Placed → NumberAssigned → CodeReceived → CodeDelivered → Completed`, plus
//! `Cancelled` and `Expired` (both refund in full) and resend requests. Money moves
//! in the owner's wallet stream, in the same atomic append as the order event that
//! causes it: the hold with `OrderPlaced`, the capture with `OrderCodeDelivered` (or
//! an expiry with a code that was never read), the void with a cancel or an expiry.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::aggregate::Aggregate;
use super::codec::{EventBody, Personal};
use super::ids::OrderId;
use super::ledger::Owner;
use super::money::Micros;
use crate::vault::SubjectId;
use crate::{domain_events, personal_event_body};

/// How the code comes: a text message, or a voice call that reads it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Channel {
    Sms,
    Voice,
}

/// A service code: 1–16 of `a-z`, `0-9`, `_` (the SMS-Activate short codes).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceCode(String);

impl ServiceCode {
    pub fn new(code: &str) -> Result<Self, OrderError> {
        let ok = (1..=16).contains(&code.len())
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        ok.then(|| Self(code.to_owned()))
            .ok_or(OrderError::InvalidService)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISO 3166-1 alpha-2 country code, upper case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Checks the shape (two letters, any case); whether the country exists is the
    /// catalog's business.
    pub fn new(code: &str) -> Result<Self, OrderError> {
        let bytes = code.as_bytes();
        if bytes.len() != 2 || !bytes.iter().all(u8::is_ascii_alphabetic) {
            return Err(OrderError::InvalidCountry);
        }
        Ok(Self([
            bytes[0].to_ascii_uppercase(),
            bytes[1].to_ascii_uppercase(),
        ]))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII letters")
    }
}

/// Who read the code first: that read is the delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryChannel {
    Api,
    CompatibleApi,
    Webhook,
    Tracking,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelReason {
    /// The customer cancelled.
    Customer,
    /// No upstream had a number within the provisioning deadline.
    NoNumbers,
}

/// What was ordered. Personal: sealed under the owner's subject, so it goes with
/// the account (30 days after a deletion request) or the anonymous buyer (90 days).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDetails {
    pub service: ServiceCode,
    pub country: CountryCode,
    pub channel: Channel,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order: OrderId,
    pub owner: Owner,
    pub price: Micros,
    pub placed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(skip)]
    pub details: Personal<OrderDetails>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhonePii {
    /// Digits only, with the country's dial code.
    pub phone: String,
    /// The upstream's handle on the activation: sealed too, because some
    /// upstreams address a number by the number itself.
    pub activation_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderNumberAssigned {
    pub order: OrderId,
    /// Whose subject seals the phone number.
    pub owner: Owner,
    /// The upstream's name, as configured.
    pub provider: String,
    pub provider_cost: Micros,
    pub at: DateTime<Utc>,
    #[serde(skip)]
    pub phone: Personal<PhonePii>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodePii {
    pub code: String,
    /// The SMS text, or the transcript of the voice call.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCodeReceived {
    pub order: OrderId,
    /// 1 for the first code, 2 after a resend, …: each code has its own key.
    pub sequence: u32,
    pub at: DateTime<Utc>,
    #[serde(skip)]
    pub code: Personal<CodePii>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCodeDelivered {
    pub order: OrderId,
    pub sequence: u32,
    pub via: DeliveryChannel,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderResendRequested {
    pub order: OrderId,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCompleted {
    pub order: OrderId,
    /// True when the order completed by itself (delivery window over, or a code
    /// that was never read at the deadline).
    pub automatic: bool,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order: OrderId,
    pub reason: CancelReason,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderExpired {
    pub order: OrderId,
    pub at: DateTime<Utc>,
}

/// A code's key was erased: from here on it reads as erased everywhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCodeErased {
    pub order: OrderId,
    pub sequence: u32,
    pub at: DateTime<Utc>,
}

/// The vault subject of one code of an order.
pub fn code_subject(order: OrderId, sequence: u32) -> SubjectId {
    SubjectId::new(format!("code-{}-{sequence}", order.0.simple()))
        .expect("prefix, hex digits and a number make a valid subject")
}

personal_event_body!(OrderPlaced, details, |e| e.owner.subject());
personal_event_body!(OrderNumberAssigned, phone, |e| e.owner.subject());
personal_event_body!(OrderCodeReceived, code, |e| code_subject(
    e.order, e.sequence
));
impl EventBody for OrderCodeDelivered {}
impl EventBody for OrderResendRequested {}
impl EventBody for OrderCompleted {}
impl EventBody for OrderCancelled {}
impl EventBody for OrderExpired {}
impl EventBody for OrderCodeErased {}

domain_events! {
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum OrderEvent {
        OrderPlaced(OrderPlaced) = 1,
        OrderNumberAssigned(OrderNumberAssigned) = 1,
        OrderCodeReceived(OrderCodeReceived) = 1,
        OrderCodeDelivered(OrderCodeDelivered) = 1,
        OrderResendRequested(OrderResendRequested) = 1,
        OrderCompleted(OrderCompleted) = 1,
        OrderCancelled(OrderCancelled) = 1,
        OrderExpired(OrderExpired) = 1,
        OrderCodeErased(OrderCodeErased) = 1,
    }
}

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("unknown service code")]
    InvalidService,
    #[error("a country is an ISO 3166-1 alpha-2 code")]
    InvalidCountry,
    #[error("no such order")]
    NotFound,
    #[error("the order exists already")]
    AlreadyPlaced,
    #[error("the order is {0:?}; this is not possible now")]
    WrongStatus(OrderStatus),
    #[error("a code was received upstream; the order can no longer be cancelled")]
    CodeAlreadyReceived,
    #[error("cancelling is possible from {0}")]
    CancelTooEarly(DateTime<Utc>),
    #[error("the order has no code yet")]
    NoCodeYet,
    #[error("the code was delivered and its delivery window is over")]
    CodeErased,
    #[error("the order is past its deadline")]
    PastDeadline,
}

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
    use crate::domain::aggregate::given;
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
    fn validates_service_and_country_codes() {
        assert!(ServiceCode::new("tg").is_ok() && ServiceCode::new("abc_1").is_ok());
        for bad in ["", "TG", "t g", "a".repeat(17).as_str(), "tg!"] {
            assert_eq!(
                ServiceCode::new(bad),
                Err(OrderError::InvalidService),
                "{bad}"
            );
        }
        assert_eq!(CountryCode::new("de").unwrap().as_str(), "DE");
        for bad in ["", "D", "DEU", "D1", "ü"] {
            assert_eq!(
                CountryCode::new(bad),
                Err(OrderError::InvalidCountry),
                "{bad}"
            );
        }
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
