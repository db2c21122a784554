//! Legal holds (stream `legal-holds`): a hold freezes the erasure of one subject
//! (an account, an order, or an anonymous buyer) until it is released. The
//! retention sweeps ask the legal-hold service (`service::legal_hold_service`) before erasing a subject and
//! skip it while it is held.
//!
//! Every hold of every subject is an event of the one `legal-holds` stream, and
//! each decision is made against the whole register at one version: placing and
//! releasing holds is rare (a few a year), and a single register keeps "is this
//! subject held?" and "which holds are active?" one short stream read, with no
//! read model. The register is bounded: at most [`MAX_ACTIVE_HOLDS`] active
//! holds, and the stream is folded up to [`crate::service::repo::MAX_STREAM_EVENTS`].
//!
//! A hold names its reason with a code and a short case reference (a docket or
//! ticket number, [`CaseReference`]): never free text, so no personal data ends
//! up in the log's plain payloads.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::aggregate::Aggregate;
use super::codec::EventBody;
use super::ids::{AccountId, AnonymousId, OrderId};
use crate::domain_events;
use crate::log::StreamName;
use crate::vault::SubjectId;

/// The stream of every legal hold.
pub const LEGAL_HOLDS_STREAM: &str = "legal-holds";
/// Active holds at most; placing one more is refused.
pub const MAX_ACTIVE_HOLDS: usize = 10_000;
/// Longest case reference, in bytes.
pub const MAX_REFERENCE_BYTES: usize = 64;

/// The register's stream.
pub fn register_stream() -> StreamName {
    StreamName::new(LEGAL_HOLDS_STREAM).expect("a valid stream name")
}

/// What a hold freezes: the personal data of one vault subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HoldSubject {
    Account(AccountId),
    Order(OrderId),
    Anonymous(AnonymousId),
}

impl HoldSubject {
    /// Parses `account-<id>`, `order-<id>` or `anon-<id>` (the id as 32 hex
    /// digits or hyphenated).
    pub fn parse(text: &str) -> Result<HoldSubject, LegalHoldError> {
        let (prefix, id) = text.split_once('-').ok_or(LegalHoldError::InvalidSubject)?;
        let subject = match prefix {
            AccountId::PREFIX => AccountId::parse(id).map(HoldSubject::Account),
            OrderId::PREFIX => OrderId::parse(id).map(HoldSubject::Order),
            AnonymousId::PREFIX => AnonymousId::parse(id).map(HoldSubject::Anonymous),
            _ => None,
        };
        subject.ok_or(LegalHoldError::InvalidSubject)
    }

    /// The vault subject whose erasure the hold freezes.
    pub fn vault_subject(&self) -> SubjectId {
        match self {
            HoldSubject::Account(id) => id.subject(),
            HoldSubject::Order(id) => id.subject(),
            HoldSubject::Anonymous(id) => id.subject(),
        }
    }
}

impl std::fmt::Display for HoldSubject {
    /// The same text as the vault subject: `account-<32 hex digits>`, ….
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.vault_subject().as_str())
    }
}

/// Why a hold is placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldReason {
    /// Litigation, pending or reasonably expected.
    Litigation,
    /// A regulator's request or investigation.
    Regulator,
    /// A law-enforcement request.
    LawEnforcement,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::Litigation => "litigation",
            HoldReason::Regulator => "regulator",
            HoldReason::LawEnforcement => "law_enforcement",
        }
    }

    pub fn parse(text: &str) -> Result<HoldReason, LegalHoldError> {
        match text {
            "litigation" => Ok(HoldReason::Litigation),
            "regulator" => Ok(HoldReason::Regulator),
            "law_enforcement" => Ok(HoldReason::LawEnforcement),
            _ => Err(LegalHoldError::InvalidReason),
        }
    }
}

/// A case reference: 1–64 characters among ASCII letters, digits and `-_./:#`.
/// A docket or ticket number, not a description: no spaces, no free text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseReference(String);

impl CaseReference {
    pub fn new(text: &str) -> Result<CaseReference, LegalHoldError> {
        let ok = (1..=MAX_REFERENCE_BYTES).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./:#".contains(&b));
        if ok {
            Ok(CaseReference(text.to_owned()))
        } else {
            Err(LegalHoldError::InvalidReference)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegalHoldPlaced {
    pub subject: HoldSubject,
    pub reason_code: HoldReason,
    pub reference: CaseReference,
    pub placed_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegalHoldReleased {
    pub subject: HoldSubject,
    pub released_at: DateTime<Utc>,
}

impl EventBody for LegalHoldPlaced {}
impl EventBody for LegalHoldReleased {}

domain_events! {
    /// The events of the `legal-holds` stream.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum LegalHoldEvent {
        LegalHoldPlaced(LegalHoldPlaced) = 1,
        LegalHoldReleased(LegalHoldReleased) = 1,
    }
}

/// An active hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegalHold {
    pub subject: HoldSubject,
    pub reason_code: HoldReason,
    pub reference: CaseReference,
    pub placed_at: DateTime<Utc>,
}

/// The register of active holds, folded from `legal-holds`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HoldRegister {
    active: BTreeMap<HoldSubject, LegalHold>,
}

impl HoldRegister {
    pub fn is_held(&self, subject: &HoldSubject) -> bool {
        self.active.contains_key(subject)
    }

    pub fn hold(&self, subject: &HoldSubject) -> Option<&LegalHold> {
        self.active.get(subject)
    }

    /// Active holds in subject order.
    pub fn active(&self) -> impl Iterator<Item = &LegalHold> {
        self.active.values()
    }

    pub fn active_count(&self) -> usize {
        self.active.len()
    }
}

impl Aggregate for HoldRegister {
    type Event = LegalHoldEvent;

    fn apply(&mut self, event: &LegalHoldEvent) {
        match event {
            LegalHoldEvent::LegalHoldPlaced(e) => {
                self.active.insert(
                    e.subject,
                    LegalHold {
                        subject: e.subject,
                        reason_code: e.reason_code,
                        reference: e.reference.clone(),
                        placed_at: e.placed_at,
                    },
                );
            }
            LegalHoldEvent::LegalHoldReleased(e) => {
                self.active.remove(&e.subject);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegalHoldError {
    #[error("a subject is account-<id>, order-<id> or anon-<id>")]
    InvalidSubject,
    #[error("a reason is litigation, regulator or law_enforcement")]
    InvalidReason,
    #[error("a case reference is 1-{MAX_REFERENCE_BYTES} letters, digits or -_./:#")]
    InvalidReference,
    #[error("the subject is already held")]
    AlreadyHeld,
    #[error("the subject is not held")]
    NotHeld,
    #[error("there are {MAX_ACTIVE_HOLDS} active holds already")]
    TooManyHolds,
}

/// Places a hold on a subject that is not held yet.
pub fn place(
    register: &HoldRegister,
    subject: HoldSubject,
    reason_code: HoldReason,
    reference: CaseReference,
    now: DateTime<Utc>,
) -> Result<Vec<LegalHoldEvent>, LegalHoldError> {
    if register.is_held(&subject) {
        return Err(LegalHoldError::AlreadyHeld);
    }
    if register.active_count() >= MAX_ACTIVE_HOLDS {
        return Err(LegalHoldError::TooManyHolds);
    }
    Ok(vec![LegalHoldEvent::LegalHoldPlaced(LegalHoldPlaced {
        subject,
        reason_code,
        reference,
        placed_at: now,
    })])
}

/// Releases the hold on a subject; its erasure is due again on its own schedule.
pub fn release(
    register: &HoldRegister,
    subject: HoldSubject,
    now: DateTime<Utc>,
) -> Result<Vec<LegalHoldEvent>, LegalHoldError> {
    if !register.is_held(&subject) {
        return Err(LegalHoldError::NotHeld);
    }
    Ok(vec![LegalHoldEvent::LegalHoldReleased(LegalHoldReleased {
        subject,
        released_at: now,
    })])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::aggregate::given;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_000_000, 0).unwrap()
    }

    fn account() -> HoldSubject {
        HoldSubject::Account(AccountId(uuid::Uuid::from_u128(7)))
    }

    fn order() -> HoldSubject {
        HoldSubject::Order(OrderId(uuid::Uuid::from_u128(8)))
    }

    fn reference() -> CaseReference {
        CaseReference::new("CASE-2026/114").unwrap()
    }

    fn placed(subject: HoldSubject) -> LegalHoldEvent {
        LegalHoldEvent::LegalHoldPlaced(LegalHoldPlaced {
            subject,
            reason_code: HoldReason::Litigation,
            reference: reference(),
            placed_at: t0(),
        })
    }

    #[test]
    fn a_hold_is_placed_on_a_subject_not_held() {
        let register = given::<HoldRegister>(vec![])
            .when(|r| place(r, account(), HoldReason::Litigation, reference(), t0()))
            .then(vec![placed(account())]);
        assert!(register.is_held(&account()));
        assert!(!register.is_held(&order()));
    }

    #[test]
    fn a_held_subject_cannot_be_held_twice() {
        given::<HoldRegister>(vec![placed(account())])
            .when(|r| place(r, account(), HoldReason::Regulator, reference(), t0()))
            .then_err(LegalHoldError::AlreadyHeld);
    }

    #[test]
    fn holds_of_other_subjects_are_independent() {
        let register = given::<HoldRegister>(vec![placed(account())])
            .when(|r| place(r, order(), HoldReason::Litigation, reference(), t0()))
            .then(vec![placed(order())]);
        assert_eq!(register.active_count(), 2);
    }

    #[test]
    fn a_release_ends_the_hold() {
        let later = t0() + chrono::Duration::days(30);
        let register = given::<HoldRegister>(vec![placed(account()), placed(order())])
            .when(|r| release(r, account(), later))
            .then(vec![LegalHoldEvent::LegalHoldReleased(LegalHoldReleased {
                subject: account(),
                released_at: later,
            })]);
        assert!(!register.is_held(&account()));
        assert!(register.is_held(&order()));
    }

    #[test]
    fn releasing_a_subject_not_held_is_refused() {
        given::<HoldRegister>(vec![])
            .when(|r| release(r, account(), t0()))
            .then_err(LegalHoldError::NotHeld);
        let released = LegalHoldEvent::LegalHoldReleased(LegalHoldReleased {
            subject: account(),
            released_at: t0(),
        });
        given::<HoldRegister>(vec![placed(account()), released])
            .when(|r| release(r, account(), t0()))
            .then_err(LegalHoldError::NotHeld);
    }

    #[test]
    fn a_released_subject_can_be_held_again() {
        let released = LegalHoldEvent::LegalHoldReleased(LegalHoldReleased {
            subject: account(),
            released_at: t0(),
        });
        given::<HoldRegister>(vec![placed(account()), released])
            .when(|r| place(r, account(), HoldReason::Litigation, reference(), t0()))
            .then(vec![placed(account())]);
    }

    #[test]
    fn the_number_of_active_holds_is_bounded() {
        let full: Vec<LegalHoldEvent> = (0..MAX_ACTIVE_HOLDS as u128)
            .map(|n| {
                placed(HoldSubject::Order(OrderId(uuid::Uuid::from_u128(
                    1_000 + n,
                ))))
            })
            .collect();
        given::<HoldRegister>(full)
            .when(|r| place(r, account(), HoldReason::Litigation, reference(), t0()))
            .then_err(LegalHoldError::TooManyHolds);
    }

    #[test]
    fn subjects_parse_from_their_vault_names_only() {
        let text = account().to_string();
        assert_eq!(text, "account-00000000000000000000000000000007");
        assert_eq!(HoldSubject::parse(&text), Ok(account()));
        assert_eq!(HoldSubject::parse(&order().to_string()), Ok(order()));
        for bad in [
            "",
            "account",
            "account-",
            "wallet-00000000000000000000000000000007",
            "account-xyz",
        ] {
            assert_eq!(
                HoldSubject::parse(bad),
                Err(LegalHoldError::InvalidSubject),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_case_reference_is_short_and_never_free_text() {
        assert!(CaseReference::new("LIT-2026-0042").is_ok());
        assert!(CaseReference::new(&"x".repeat(MAX_REFERENCE_BYTES)).is_ok());
        for bad in [
            "",
            "John Smith's complaint",
            "a\nb",
            &"x".repeat(MAX_REFERENCE_BYTES + 1),
        ] {
            assert_eq!(
                CaseReference::new(bad),
                Err(LegalHoldError::InvalidReference)
            );
        }
    }
}
