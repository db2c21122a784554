//! The values and events the account tests start from.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::*;
use crate::domain::ids::AccountId;

pub(super) fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_764_000_000, 0).unwrap()
}

pub(super) fn id() -> AccountId {
    AccountId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001))
}

pub(super) fn email(text: &str) -> Email {
    Email::parse(text).unwrap()
}

pub(super) const HASH: &str = "$2b$04$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234";

pub(super) fn token(n: u8) -> NewVerification {
    NewVerification {
        token_hash: [n; 32],
        ttl: Duration::hours(DEFAULT_VERIFICATION_TTL_HOURS),
    }
}

pub(super) fn registered() -> Vec<AccountEvent> {
    decide_register(
        &Account::default(),
        id(),
        &email("alice@example.com"),
        HASH,
        token(1),
        t0(),
    )
    .unwrap()
}

pub(super) fn verified() -> Vec<AccountEvent> {
    let mut events = registered();
    events.push(AccountEvent::AccountEmailVerified(AccountEmailVerified {
        token_hash: [1; 32],
        at: t0(),
    }));
    events
}

pub(super) fn deletion_requested(at: DateTime<Utc>) -> AccountEvent {
    AccountEvent::AccountDeletionRequested(AccountDeletionRequested {
        at,
        erase_due_at: at + Duration::days(30),
        forfeit_balance: Some(Micros(0)),
    })
}

pub(super) const STRICT: WebhookUrlPolicy = WebhookUrlPolicy {
    allow_insecure: false,
};

pub(super) fn hook(url: &str) -> WebhookUrl {
    WebhookUrl::parse(url, STRICT).unwrap()
}
