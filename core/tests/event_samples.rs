//! Stored bytes of one sample of every event type. A change to an event struct
//! that would make old events unreadable changes these bytes and fails here: bump
//! the event's schema version and keep a decoder for the old one instead.
//!
//! A new event type has no stored sample yet; record it with
//! `NEXUS_BLESS_EVENT_SAMPLES=1 cargo test -p nexus-core --test event_samples`,
//! which appends missing samples and never rewrites an existing one.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use nexus_core::domain::account::*;
use nexus_core::domain::anonymous::{
    AnonymousDataErased, AnonymousEvent, AnonymousOrderCreated, AnonymousOrderStarted,
};
use nexus_core::domain::codec::{DomainEvent, Personal};
use nexus_core::domain::deposit::{
    DepositEvent, DepositFailed, DepositPaid, DepositRequested, PaymentEvent, PaymentRecorded,
};
use nexus_core::domain::idempotency::{IdempotencyEvent, IdempotencyKeyUsed, IdempotentResult};
use nexus_core::domain::ids::{AccountId, AnonymousId, ApiKeyId, DepositId, OrderId};
use nexus_core::domain::ledger::{Entry, LedgerAccount, Owner, Reason};
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::*;
use nexus_core::domain::wallet::*;
use uuid::Uuid;

const SAMPLES_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/samples/events.txt");

fn at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_764_000_000, 123_456_000).unwrap()
}

fn account() -> Owner {
    Owner::Account(AccountId(Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0001,
    )))
}

fn order_id() -> OrderId {
    OrderId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002))
}

fn deposit_id() -> DepositId {
    DepositId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0003))
}

fn anon_id() -> AnonymousId {
    AnonymousId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0004))
}

fn entry(debit: LedgerAccount, credit: LedgerAccount, reason: Reason) -> Entry {
    Entry {
        debit,
        credit,
        amount: Micros(1_250_000),
        reason,
    }
}

fn payment() -> Payment {
    Payment {
        network: "btc".into(),
        tx_hash: "9f86d081884c7d65".into(),
    }
}

fn details() -> OrderDetails {
    OrderDetails {
        service: ServiceCode::new("tg").unwrap(),
        country: CountryCode::new("DE").unwrap(),
        channel: Channel::Voice,
    }
}

fn wallet_samples() -> Vec<WalletEvent> {
    let o = account();
    vec![
        WalletEvent::WalletDepositCredited(WalletDepositCredited {
            deposit: deposit_id(),
            payment: payment(),
            outcome: DepositOutcome::Over,
            entry: entry(
                LedgerAccount::CryptoClearing,
                LedgerAccount::Available(o),
                Reason::Deposit,
            ),
            late: true,
            at: at(),
        }),
        WalletEvent::WalletHoldPlaced(WalletHoldPlaced {
            order: order_id(),
            entry: entry(
                LedgerAccount::Available(o),
                LedgerAccount::Held(o),
                Reason::Hold,
            ),
            at: at(),
        }),
        WalletEvent::WalletHoldCaptured(WalletHoldCaptured {
            order: order_id(),
            entry: entry(
                LedgerAccount::Held(o),
                LedgerAccount::Revenue,
                Reason::Capture,
            ),
            cost: Some(entry(
                LedgerAccount::ProviderCost,
                LedgerAccount::CryptoClearing,
                Reason::ProviderCost,
            )),
            at: at(),
        }),
        WalletEvent::WalletHoldVoided(WalletHoldVoided {
            order: order_id(),
            entry: entry(
                LedgerAccount::Held(o),
                LedgerAccount::Available(o),
                Reason::Void,
            ),
            reason: VoidReason::NoNumbers,
            at: at(),
        }),
        WalletEvent::WalletCashbackCredited(WalletCashbackCredited {
            order: order_id(),
            entry: entry(
                LedgerAccount::CashbackExpense,
                LedgerAccount::Available(o),
                Reason::Cashback,
            ),
            at: at(),
        }),
    ]
}

fn order_samples() -> Vec<OrderEvent> {
    let order = order_id();
    vec![
        OrderEvent::OrderPlaced(OrderPlaced {
            order,
            owner: account(),
            price: Micros(500_000),
            placed_at: at(),
            expires_at: at(),
            details: Personal::Plain(details()),
        }),
        OrderEvent::OrderNumberAssigned(OrderNumberAssigned {
            order,
            owner: account(),
            provider: "herosms".into(),
            provider_cost: Micros(300_000),
            at: at(),
            phone: Personal::Plain(PhonePii {
                phone: "4915112345678".into(),
                activation_id: "635468024".into(),
            }),
        }),
        OrderEvent::OrderCodeReceived(OrderCodeReceived {
            order,
            sequence: 2,
            at: at(),
            code: Personal::Plain(CodePii {
                code: "48213".into(),
                text: "Telegram code 48213".into(),
            }),
        }),
        OrderEvent::OrderCodeDelivered(OrderCodeDelivered {
            order,
            sequence: 2,
            via: DeliveryChannel::CompatibleApi,
            at: at(),
        }),
        OrderEvent::OrderResendRequested(OrderResendRequested { order, at: at() }),
        OrderEvent::OrderCompleted(OrderCompleted {
            order,
            automatic: true,
            at: at(),
        }),
        OrderEvent::OrderCancelled(OrderCancelled {
            order,
            reason: CancelReason::NoNumbers,
            at: at(),
        }),
        OrderEvent::OrderExpired(OrderExpired { order, at: at() }),
        OrderEvent::OrderCodeErased(OrderCodeErased {
            order,
            sequence: 2,
            at: at(),
        }),
    ]
}

fn deposit_samples() -> Vec<DepositEvent> {
    vec![
        DepositEvent::DepositRequested(DepositRequested {
            deposit: deposit_id(),
            owner: Owner::Anonymous(anon_id()),
            amount: Micros(10_000_000),
            at: at(),
            expires_at: at(),
        }),
        DepositEvent::DepositPaid(DepositPaid {
            deposit: deposit_id(),
            payment: payment(),
            paid: Micros(9_000_000),
            at: at(),
        }),
        DepositEvent::DepositFailed(DepositFailed {
            deposit: deposit_id(),
            status: "expired".into(),
            at: at(),
        }),
    ]
}

fn payment_samples() -> Vec<PaymentEvent> {
    vec![PaymentEvent::PaymentRecorded(PaymentRecorded {
        payment: payment(),
        deposit: deposit_id(),
        at: at(),
    })]
}

fn idempotency_samples() -> Vec<IdempotencyEvent> {
    vec![IdempotencyEvent::IdempotencyKeyUsed(IdempotencyKeyUsed {
        fingerprint: [7; 32],
        result: IdempotentResult::Order(order_id()),
        at: at(),
    })]
}

fn anonymous_samples() -> Vec<AnonymousEvent> {
    vec![
        AnonymousEvent::AnonymousOrderCreated(AnonymousOrderCreated {
            anon: anon_id(),
            invoice: deposit_id(),
            price: Micros(700_000),
            at: at(),
            details: Personal::Plain(details()),
        }),
        AnonymousEvent::AnonymousOrderStarted(AnonymousOrderStarted {
            anon: anon_id(),
            order: order_id(),
            at: at(),
        }),
        AnonymousEvent::AnonymousDataErased(AnonymousDataErased {
            anon: anon_id(),
            at: at(),
        }),
    ]
}

fn account_samples() -> Vec<AccountEvent> {
    let Owner::Account(account) = account() else {
        unreachable!()
    };
    vec![
        AccountEvent::AccountRegistered(AccountRegistered {
            account,
            registered_at: at(),
            pii: Personal::Plain(RegisteredPii {
                email: "alice@example.com".into(),
                password_hash: "$2b$12$abcdefghijklmnopqrstuv".into(),
            }),
        }),
        AccountEvent::AccountVerificationIssued(AccountVerificationIssued {
            token_hash: [1; 32],
            issued_at: at(),
            expires_at: at(),
        }),
        AccountEvent::AccountEmailVerified(AccountEmailVerified {
            token_hash: [1; 32],
            at: at(),
        }),
        AccountEvent::AccountPasswordChanged(AccountPasswordChanged {
            account,
            at: at(),
            pii: Personal::Plain(PasswordPii {
                password_hash: "$2b$12$zyxwvutsrqponmlkjihgfe".into(),
            }),
        }),
        AccountEvent::AccountEmailChanged(AccountEmailChanged {
            account,
            at: at(),
            pii: Personal::Plain(EmailPii {
                email: "alice@example.org".into(),
            }),
        }),
        AccountEvent::AccountObjectionSet(AccountObjectionSet {
            object: true,
            at: at(),
        }),
        AccountEvent::AccountDeletionRequested(AccountDeletionRequested {
            at: at(),
            erase_due_at: at(),
        }),
        AccountEvent::AccountDeletionWithdrawn(AccountDeletionWithdrawn { at: at() }),
        AccountEvent::ApiKeyCreated(ApiKeyCreated {
            key_id: ApiKeyId(Uuid::from_u128(5)),
            key_hash: [0xab; 32],
            prefix: "AbCd_-12".into(),
            at: at(),
        }),
        AccountEvent::ApiKeyRevoked(ApiKeyRevoked {
            key_id: ApiKeyId(Uuid::from_u128(5)),
            at: at(),
        }),
        AccountEvent::WebhookEndpointSet(WebhookEndpointSet {
            account,
            at: at(),
            pii: Personal::Plain(WebhookEndpointPii {
                url: "https://hooks.example.com/nexus".into(),
                secret: "whsec_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCd".into(),
            }),
        }),
        AccountEvent::WebhookEndpointRemoved(WebhookEndpointRemoved { at: at() }),
        AccountEvent::AccountErased(AccountErased { at: at() }),
    ]
}

fn email_samples() -> Vec<EmailReservationEvent> {
    let Owner::Account(account) = account() else {
        unreachable!()
    };
    vec![
        EmailReservationEvent::EmailReserved(EmailReserved { account, at: at() }),
        EmailReservationEvent::EmailReleased(EmailReleased { account, at: at() }),
    ]
}

fn legal_hold_samples() -> Vec<nexus_core::domain::legal_hold::LegalHoldEvent> {
    use nexus_core::domain::legal_hold::*;
    let subject = HoldSubject::Order(order_id());
    vec![
        LegalHoldEvent::LegalHoldPlaced(LegalHoldPlaced {
            subject,
            reason_code: HoldReason::Regulator,
            reference: CaseReference::new("CASE-2026/114").unwrap(),
            placed_at: at(),
        }),
        LegalHoldEvent::LegalHoldReleased(LegalHoldReleased {
            subject,
            released_at: at(),
        }),
    ]
}

fn policy_samples() -> Vec<nexus_core::domain::policy::PolicyEvent> {
    use nexus_core::domain::policy::*;
    vec![PolicyEvent::PolicyChangeAnnounced(PolicyChangeAnnounced {
        id: PolicyChangeId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0005)),
        title: "New retention periods".into(),
        summary: "Anonymous order data is kept 60 days.".into(),
        effective_at: at() + chrono::Duration::days(30),
        url: Some("https://nexus.example/privacy".into()),
        announced_at: at(),
        key: AnnouncementKey::new("announce-1"),
        fingerprint: [7; 32],
    })]
}

/// (type, schema, payload hex, personal part hex or "-") for each sample, plus
/// the check that every type of the enum has a sample.
fn rows<E: DomainEvent>(samples: Vec<E>) -> Vec<(String, String)> {
    let covered: BTreeSet<&str> = samples.iter().map(|e| e.event_type()).collect();
    let known: BTreeSet<&str> = E::TYPES.iter().map(|(t, _)| *t).collect();
    assert_eq!(covered, known, "every event type needs a sample here");
    samples
        .iter()
        .map(|e| {
            let personal = match e.personal_part().unwrap() {
                Some((_, bytes)) => hex::encode(bytes),
                None => "-".into(),
            };
            // The stored payload decodes, and re-encodes to the same bytes.
            let decoded = E::decode(e.event_type(), e.schema_version(), &e.payload()).unwrap();
            assert_eq!(decoded.payload(), e.payload());
            (
                format!("{}/{}", e.event_type(), e.schema_version()),
                format!("{} {}", hex::encode(e.payload()), personal),
            )
        })
        .collect()
}

#[test]
fn every_event_type_keeps_its_stored_bytes() {
    let mut current = Vec::new();
    current.extend(rows(wallet_samples()));
    current.extend(rows(order_samples()));
    current.extend(rows(deposit_samples()));
    current.extend(rows(payment_samples()));
    current.extend(rows(idempotency_samples()));
    current.extend(rows(anonymous_samples()));
    current.extend(rows(account_samples()));
    current.extend(rows(email_samples()));
    current.extend(rows(legal_hold_samples()));
    current.extend(rows(policy_samples()));

    let text = std::fs::read_to_string(SAMPLES_FILE).unwrap_or_default();
    let stored: BTreeMap<String, String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once(' ').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let bless = std::env::var_os("NEXUS_BLESS_EVENT_SAMPLES").is_some();
    let mut missing = Vec::new();
    for (key, bytes) in &current {
        match stored.get(key) {
            Some(old) => assert_eq!(
                old, bytes,
                "{key}: stored bytes changed; bump its schema version and keep the old decoder"
            ),
            None => missing.push(format!("{key} {bytes}")),
        }
    }
    if !missing.is_empty() {
        assert!(
            bless,
            "no stored sample for: {missing:?}; record with NEXUS_BLESS_EVENT_SAMPLES=1"
        );
        let mut text = text;
        if text.is_empty() {
            text.push_str(
                "# type/schema payload-hex personal-part-hex (see core/tests/event_samples.rs)\n",
            );
        }
        for line in missing {
            text.push_str(&line);
            text.push('\n');
        }
        std::fs::write(SAMPLES_FILE, text).unwrap();
    }
}
