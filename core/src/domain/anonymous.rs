//! Anonymous orders (stream `anon-<hex>`): a buyer with no account, known only by
//! a tracking ID. The stream is named by a hash of the tracking ID, so the ID
//! itself is stored nowhere; what was ordered is sealed under the buyer's own key,
//! erased after 90 days. The money (the invoice, the credit, the holds) lives in
//! the buyer's wallet stream as for any customer, and stays for 7 years.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::account::{base64, URL_SAFE_ALPHABET};
use super::aggregate::Aggregate;
use super::codec::{EventBody, Personal};
use super::ids::{AnonymousId, DepositId, OrderId};
use super::money::Micros;
use super::order::{Order, OrderDetails};
use crate::{domain_events, personal_event_body};

/// Random bytes in a tracking ID (256 bits).
const TRACKING_ID_BYTES: usize = 32;
const TRACKING_PREFIX: &str = "trk_";

/// The secret that follows an anonymous order: `trk_` and 43 URL-safe characters.
#[derive(Clone, PartialEq, Eq)]
pub struct TrackingId(String);

impl std::fmt::Debug for TrackingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrackingId(<redacted>)")
    }
}

impl TrackingId {
    pub fn generate() -> Result<TrackingId, getrandom::Error> {
        let mut bytes = [0u8; TRACKING_ID_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(TrackingId(format!(
            "{TRACKING_PREFIX}{}",
            base64(&bytes, URL_SAFE_ALPHABET, false)
        )))
    }

    /// Checks the shape only; an unknown but well-formed ID finds no stream.
    pub fn parse(text: &str) -> Option<TrackingId> {
        let body = text.strip_prefix(TRACKING_PREFIX)?;
        let ok = body.len() == 43
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| TrackingId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The buyer's id: the first 16 bytes of a SHA-256 of the tracking ID.
    pub fn anonymous_id(&self) -> AnonymousId {
        let digest = Sha256::digest(format!("nexus-tracking-v1\n{}", self.0).as_bytes());
        let bytes: [u8; 16] = digest[..16].try_into().expect("16 of 32 bytes");
        AnonymousId(Uuid::from_bytes(bytes))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnonymousOrderCreated {
    pub anon: AnonymousId,
    pub invoice: DepositId,
    pub price: Micros,
    pub at: DateTime<Utc>,
    #[serde(skip)]
    pub details: Personal<OrderDetails>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnonymousOrderStarted {
    pub anon: AnonymousId,
    pub order: OrderId,
    pub at: DateTime<Utc>,
}

personal_event_body!(AnonymousOrderCreated, details, |e| e.anon.subject());
/// The buyer's personal data (the order's details, the tracking ID's link to
/// its orders, the phone numbers) was erased: [`RETENTION_DAYS`] after the
/// order's creation, its vault subject is deleted. Money stays where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnonymousDataErased {
    pub anon: AnonymousId,
    pub at: DateTime<Utc>,
}

impl EventBody for AnonymousOrderStarted {}
impl EventBody for AnonymousDataErased {}

domain_events! {
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum AnonymousEvent {
        AnonymousOrderCreated(AnonymousOrderCreated) = 1,
        AnonymousOrderStarted(AnonymousOrderStarted) = 1,
        AnonymousDataErased(AnonymousDataErased) = 1,
    }
}

/// Anonymous order data is kept this many days after the order's creation,
/// then erased (the privacy policy's promise).
pub const RETENTION_DAYS: i64 = 90;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Anonymous {
    pub created: Option<AnonymousOrderCreated>,
    /// Every order started with this tracking ID, oldest first.
    pub orders: Vec<OrderId>,
    /// When the erasure of the personal data was recorded.
    pub erased_at: Option<DateTime<Utc>>,
}

impl Aggregate for Anonymous {
    type Event = AnonymousEvent;

    fn apply(&mut self, event: &AnonymousEvent) {
        match event {
            AnonymousEvent::AnonymousOrderCreated(e) => self.created = Some(e.clone()),
            AnonymousEvent::AnonymousOrderStarted(e) => self.orders.push(e.order),
            AnonymousEvent::AnonymousDataErased(e) => self.erased_at = Some(e.at),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnonymousError {
    #[error("no order has this tracking ID")]
    NotFound,
    #[error("the tracking ID's order is still active")]
    OrderActive,
    #[error("what this anonymous order was for has been erased")]
    Erased,
    #[error("the anonymous order's data is not due for erasure yet")]
    ErasureNotDue,
}

pub fn create(
    state: &Anonymous,
    anon: AnonymousId,
    invoice: DepositId,
    details: OrderDetails,
    price: Micros,
    now: DateTime<Utc>,
) -> Result<Vec<AnonymousEvent>, AnonymousError> {
    // 256 random bits: a collision is not a case to handle, but never overwrite.
    if state.created.is_some() {
        return Err(AnonymousError::OrderActive);
    }
    Ok(vec![AnonymousEvent::AnonymousOrderCreated(
        AnonymousOrderCreated {
            anon,
            invoice,
            price,
            at: now,
            details: Personal::Plain(details),
        },
    )])
}

/// Whether the buyer's current order is over: `current` is the state of the
/// last order started (the default when none was). The one rule for starting
/// another order and for erasing the buyer's data.
fn current_is_over(state: &Anonymous, current: &Order) -> bool {
    let Some(last) = state.orders.last() else {
        return true;
    };
    assert!(
        current.placed.as_ref().is_none_or(|p| p.order == *last),
        "the current order given is the buyer's last order"
    );
    current.status.is_none_or(|s| s.is_final())
}

/// Starts an order with the buyer's credit, once the last order (`current`)
/// is over.
pub fn start(
    state: &Anonymous,
    order: OrderId,
    current: &Order,
    now: DateTime<Utc>,
) -> Result<Vec<AnonymousEvent>, AnonymousError> {
    let created = state.created.as_ref().ok_or(AnonymousError::NotFound)?;
    if !current_is_over(state, current) {
        return Err(AnonymousError::OrderActive);
    }
    Ok(vec![AnonymousEvent::AnonymousOrderStarted(
        AnonymousOrderStarted {
            anon: created.anon,
            order,
            at: now,
        },
    )])
}

/// Records the erasure of the buyer's personal data once it is due
/// ([`RETENTION_DAYS`] after creation) and its last order (`current`) is over.
/// The caller erases the buyer's vault subject before appending.
pub fn decide_erase(
    state: &Anonymous,
    current: &Order,
    now: DateTime<Utc>,
) -> Result<Vec<AnonymousEvent>, AnonymousError> {
    let created = state.created.as_ref().ok_or(AnonymousError::NotFound)?;
    if state.erased_at.is_some() {
        return Err(AnonymousError::Erased);
    }
    if now < created.at + chrono::Duration::days(RETENTION_DAYS) {
        return Err(AnonymousError::ErasureNotDue);
    }
    if !current_is_over(state, current) {
        return Err(AnonymousError::OrderActive);
    }
    Ok(vec![AnonymousEvent::AnonymousDataErased(
        AnonymousDataErased {
            anon: created.anon,
            at: now,
        },
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::aggregate::given;
    use crate::domain::order::{Channel, CountryCode, ServiceCode};

    fn created(at: DateTime<Utc>) -> AnonymousEvent {
        AnonymousEvent::AnonymousOrderCreated(AnonymousOrderCreated {
            anon: AnonymousId(Uuid::from_u128(7)),
            invoice: DepositId(Uuid::from_u128(8)),
            price: Micros(500_000),
            at,
            details: Personal::Plain(OrderDetails {
                service: ServiceCode::new("tg").unwrap(),
                country: CountryCode::new("de").unwrap(),
                channel: Channel::Sms,
            }),
        })
    }

    const ORDER: OrderId = OrderId(Uuid::from_u128(9));

    fn started(at: DateTime<Utc>) -> AnonymousEvent {
        AnonymousEvent::AnonymousOrderStarted(AnonymousOrderStarted {
            anon: AnonymousId(Uuid::from_u128(7)),
            order: ORDER,
            at,
        })
    }

    /// The buyer's order [`ORDER`], placed at `at`, cancelled too if `over`.
    fn order(at: DateTime<Utc>, over: bool) -> Order {
        use crate::domain::order::{CancelReason, OrderCancelled, OrderEvent, OrderPlaced};
        let mut events = vec![OrderEvent::OrderPlaced(OrderPlaced {
            order: ORDER,
            owner: crate::domain::ledger::Owner::Anonymous(AnonymousId(Uuid::from_u128(7))),
            price: Micros(500_000),
            placed_at: at,
            expires_at: at + chrono::Duration::minutes(20),
            details: Personal::Erased,
        })];
        if over {
            events.push(OrderEvent::OrderCancelled(OrderCancelled {
                order: ORDER,
                reason: CancelReason::Customer,
                at,
            }));
        }
        given::<Order>(events).state().clone()
    }

    #[test]
    fn anonymous_data_is_erased_once_due_and_its_orders_are_over() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let due = t0 + chrono::Duration::days(RETENTION_DAYS);
        let none = Order::default();
        given::<Anonymous>(vec![])
            .when(|s| decide_erase(s, &none, due))
            .then_err(AnonymousError::NotFound);
        given::<Anonymous>(vec![created(t0)])
            .when(|s| decide_erase(s, &none, due - chrono::Duration::seconds(1)))
            .then_err(AnonymousError::ErasureNotDue);
        given::<Anonymous>(vec![created(t0), started(t0)])
            .when(|s| decide_erase(s, &order(t0, false), due))
            .then_err(AnonymousError::OrderActive);
        let erased = AnonymousEvent::AnonymousDataErased(AnonymousDataErased {
            anon: AnonymousId(Uuid::from_u128(7)),
            at: due,
        });
        let state = given::<Anonymous>(vec![created(t0)])
            .when(|s| decide_erase(s, &none, due))
            .then(vec![erased.clone()]);
        assert_eq!(state.erased_at, Some(due));
        given::<Anonymous>(vec![created(t0), started(t0)])
            .when(|s| decide_erase(s, &order(t0, true), due))
            .then(vec![erased.clone()]);
        given::<Anonymous>(vec![created(t0), erased])
            .when(|s| decide_erase(s, &none, due + chrono::Duration::days(1)))
            .then_err(AnonymousError::Erased);
    }

    #[test]
    fn another_order_starts_only_once_the_current_one_is_over() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let next = OrderId(Uuid::from_u128(10));
        let start_next = AnonymousEvent::AnonymousOrderStarted(AnonymousOrderStarted {
            anon: AnonymousId(Uuid::from_u128(7)),
            order: next,
            at: t0,
        });
        given::<Anonymous>(vec![])
            .when(|s| start(s, next, &Order::default(), t0))
            .then_err(AnonymousError::NotFound);
        given::<Anonymous>(vec![created(t0)])
            .when(|s| start(s, ORDER, &Order::default(), t0))
            .then(vec![started(t0)]);
        given::<Anonymous>(vec![created(t0), started(t0)])
            .when(|s| start(s, next, &order(t0, false), t0))
            .then_err(AnonymousError::OrderActive);
        given::<Anonymous>(vec![created(t0), started(t0)])
            .when(|s| start(s, next, &order(t0, true), t0))
            .then(vec![start_next]);
    }

    #[test]
    fn tracking_ids_are_long_random_and_url_safe() {
        let a = TrackingId::generate().unwrap();
        let b = TrackingId::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 4 + 43);
        assert_eq!(TrackingId::parse(a.as_str()), Some(a.clone()));
        assert_eq!(
            a.anonymous_id(),
            TrackingId::parse(a.as_str()).unwrap().anonymous_id()
        );
        assert_ne!(a.anonymous_id(), b.anonymous_id());
        for bad in [
            "",
            "trk_",
            "trk_short",
            &format!("xyz_{}", &a.as_str()[4..]),
            &format!("{}=", a.as_str()),
        ] {
            assert_eq!(TrackingId::parse(bad), None, "{bad}");
        }
        assert_eq!(format!("{a:?}"), "TrackingId(<redacted>)");
    }
}
