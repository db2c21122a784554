//! The events of an order stream and the values they carry.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::OrderError;
use crate::domain::codec::{EventBody, Personal};
use crate::domain::ids::OrderId;
use crate::domain::ledger::Owner;
use crate::domain::money::Micros;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
