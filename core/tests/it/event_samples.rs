//! Stored bytes of one sample of every event type. A change to an event struct
//! that would make old events unreadable changes these bytes and fails here: bump
//! the event's schema version and declare an upcaster from the old one instead
//! (see `domain_events!`). Every stored sample, of every version, must keep
//! decoding.
//!
//! A new event type has no stored sample yet; record it with
//! `NEXUS_BLESS_EVENT_SAMPLES=1 cargo test -p nexus-core --test it event_samples`,
//! which appends missing samples and never rewrites an existing one.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use nexus_core::domain::account::*;
use nexus_core::domain::anonymous::{
    AnonymousDataErased, AnonymousEvent, AnonymousOrderCreated, AnonymousOrderStarted,
};
use nexus_core::domain::codec::{CodecError, DomainEvent, Personal};
use nexus_core::domain::deposit::{
    DepositEvent, DepositFailed, DepositPaid, DepositRequested, GatewayPaymentId, PaymentEvent,
    PaymentRecorded,
};
use nexus_core::domain::idempotency::{IdempotencyEvent, IdempotencyKeyUsed, IdempotentResult};
use nexus_core::domain::ids::{AccountId, AnonymousId, ApiKeyId, DepositId, OrderId};
use nexus_core::domain::ledger::{Entry, LedgerAccount, Owner, Reason};
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::*;
use nexus_core::domain::wallet::*;
use nexus_core::vault::Opened;
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
        WalletEvent::WalletBalanceUnclaimed(WalletBalanceUnclaimed {
            entry: entry(
                LedgerAccount::Available(o),
                LedgerAccount::Unclaimed,
                Reason::Unclaimed,
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
            gateway_payment: Some(GatewayPaymentId::new("5077125051").unwrap()),
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
            forfeit_balance: Some(Micros(9_610_000)),
        }),
        AccountEvent::AccountDeletionWithdrawn(AccountDeletionWithdrawn { at: at() }),
        AccountEvent::ApiKeyCreated(ApiKeyCreated {
            key_id: ApiKeyId(Uuid::from_u128(5)),
            key_hash: [0xab; 32],
            prefix: "AbCd_-12".into(),
            scope: ApiKeyScope::Full,
            label: Some("ci runner".into()),
            allowed_ips: vec![
                IpRange::parse("198.51.100.0/24").unwrap(),
                IpRange::parse("2001:db8::1").unwrap(),
            ],
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
        AccountEvent::PasswordResetIssued(PasswordResetIssued {
            token_hash: [13; 32],
            issued_at: at(),
            expires_at: at() + chrono::Duration::minutes(30),
        }),
        AccountEvent::AccountPasswordReset(AccountPasswordReset {
            account,
            token_hash: [13; 32],
            at: at(),
            pii: Personal::Plain(PasswordPii {
                password_hash: "$2b$12$resetresetresetresetre".into(),
            }),
        }),
        AccountEvent::EmailChangeUndoIssued(EmailChangeUndoIssued {
            account,
            token_hash: [14; 32],
            issued_at: at(),
            expires_at: at() + chrono::Duration::days(7),
            pii: Personal::Plain(EmailPii {
                email: "old@example.com".into(),
            }),
        }),
        AccountEvent::EmailChangeUndone(EmailChangeUndone {
            account,
            token_hash: [14; 32],
            at: at(),
            pii: Personal::Plain(PasswordPii {
                password_hash: "$2b$12$undoneundoneundoneundo".into(),
            }),
        }),
        AccountEvent::TwoFactorEnrolmentStarted(TwoFactorEnrolmentStarted {
            account,
            at: at(),
            pii: Personal::Plain(TotpSecretPii {
                secret: b"12345678901234567890".to_vec(),
            }),
        }),
        AccountEvent::TwoFactorEnabled(TwoFactorEnabled {
            at: at(),
            step: 58_800_000,
            recovery_code_hashes: vec![[0xc1; 32], [0xc2; 32]],
        }),
        AccountEvent::TwoFactorStepUsed(TwoFactorStepUsed {
            at: at(),
            step: 58_800_001,
        }),
        AccountEvent::RecoveryCodeUsed(RecoveryCodeUsed {
            at: at(),
            code_hash: [0xc1; 32],
        }),
        AccountEvent::TwoFactorDisabled(TwoFactorDisabled { at: at() }),
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
    let stored = stored_samples(&text);
    let bless = std::env::var_os("NEXUS_BLESS_EVENT_SAMPLES").is_some();
    let mut missing = Vec::new();
    for (key, bytes) in &current {
        match stored.get(key) {
            Some(old) => assert_eq!(
                old, bytes,
                "{key}: stored bytes changed; bump its schema version and upcast the old one"
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

/// `Type/schema` → `payload-hex personal-hex` of each line of the samples file.
fn stored_samples(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once(' ').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// The stored payload of `key` (`Type/schema`) in the samples file.
fn stored_payload(key: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(SAMPLES_FILE).unwrap();
    let stored = stored_samples(&text);
    let line = stored
        .get(key)
        .unwrap_or_else(|| panic!("no stored sample {key}"));
    hex::decode(line.split(' ').next().unwrap()).unwrap()
}

/// Decodes a stored sample with `E` if `E` knows its type: its payload at its
/// version (through an upcaster when older), and its personal part.
fn decode_with<E: DomainEvent>(
    event_type: &str,
    schema_version: u16,
    payload: &[u8],
    personal: Option<Vec<u8>>,
) -> Option<Result<(), CodecError>> {
    E::TYPES.iter().any(|(t, _)| *t == event_type).then(|| {
        let mut event = E::decode(event_type, schema_version, payload)?;
        match personal {
            Some(bytes) => event.restore_personal(Opened::Plain(bytes)),
            None => Ok(()),
        }
    })
}

type Decoder = fn(&str, u16, &[u8], Option<Vec<u8>>) -> Option<Result<(), CodecError>>;

/// Every event enum of the domain.
const DECODERS: &[Decoder] = &[
    decode_with::<WalletEvent>,
    decode_with::<OrderEvent>,
    decode_with::<DepositEvent>,
    decode_with::<PaymentEvent>,
    decode_with::<IdempotencyEvent>,
    decode_with::<AnonymousEvent>,
    decode_with::<AccountEvent>,
    decode_with::<EmailReservationEvent>,
    decode_with::<nexus_core::domain::legal_hold::LegalHoldEvent>,
    decode_with::<nexus_core::domain::policy::PolicyEvent>,
];

#[test]
fn every_stored_sample_still_decodes() {
    let text = std::fs::read_to_string(SAMPLES_FILE).unwrap();
    let stored = stored_samples(&text);
    assert!(stored.len() >= 40, "the samples file lost lines");
    for (key, value) in &stored {
        let (event_type, version) = key.split_once('/').unwrap();
        let version: u16 = version.parse().unwrap();
        let (payload, personal) = value.split_once(' ').unwrap();
        let payload = hex::decode(payload).unwrap();
        let personal = (personal != "-").then(|| hex::decode(personal).unwrap());
        let decoded: Vec<_> = DECODERS
            .iter()
            .filter_map(|decode| decode(event_type, version, &payload, personal.clone()))
            .collect();
        match decoded.as_slice() {
            [Ok(())] => {}
            [Err(e)] => panic!("{key} no longer decodes: {e}"),
            [] => panic!("{key}: no event enum knows this type"),
            _ => panic!("{key}: more than one event enum knows this type"),
        }
    }
}

/// Upcasting on the stored bytes of a real version-1 event: `OrderCompleted` as
/// it would read if it gained a field (version 2), then replaced its flag by an
/// enum (version 3). Test-only event enums: no real event changes here.
mod upcasting {
    use super::*;
    use nexus_core::domain::codec::{to_bytes, upcast, EventBody};
    use serde::{Deserialize, Serialize};

    /// Version 1, frozen: the shape of the stored sample.
    #[derive(Serialize, Deserialize)]
    pub struct CompletedV1 {
        order: OrderId,
        automatic: bool,
        at: DateTime<Utc>,
    }

    /// Version 2 adds who completed the order by hand, if staff did.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CompletedV2 {
        order: OrderId,
        automatic: bool,
        at: DateTime<Utc>,
        operator: Option<String>,
    }

    impl From<CompletedV1> for CompletedV2 {
        fn from(v1: CompletedV1) -> Self {
            CompletedV2 {
                order: v1.order,
                automatic: v1.automatic,
                at: v1.at,
                operator: None,
            }
        }
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Completion {
        Automatic,
        ByCustomer,
        ByOperator(String),
    }

    /// Version 3 says how, in one field.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CompletedV3 {
        order: OrderId,
        how: Completion,
        at: DateTime<Utc>,
    }

    impl From<CompletedV2> for CompletedV3 {
        fn from(v2: CompletedV2) -> Self {
            let how = match (v2.automatic, v2.operator) {
                (true, _) => Completion::Automatic,
                (false, Some(operator)) => Completion::ByOperator(operator),
                (false, None) => Completion::ByCustomer,
            };
            CompletedV3 {
                order: v2.order,
                how,
                at: v2.at,
            }
        }
    }

    /// `OrderExpired` at a version 2 that declares no upcaster.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ExpiredV2 {
        order: OrderId,
        at: DateTime<Utc>,
        late_by_secs: u32,
    }

    impl EventBody for CompletedV2 {}
    impl EventBody for CompletedV3 {}
    impl EventBody for ExpiredV2 {}

    mod v2 {
        use super::*;
        nexus_core::domain_events! {
            #[derive(Clone, Debug, PartialEq, Eq)]
            pub enum OrderEventV2 {
                OrderCompleted(CompletedV2) = 2 { 1 => upcast::<CompletedV1, CompletedV2> },
                OrderExpired(ExpiredV2) = 2,
            }
        }
    }

    mod v3 {
        use super::*;
        nexus_core::domain_events! {
            #[derive(Clone, Debug, PartialEq, Eq)]
            pub enum OrderEventV3 {
                OrderCompleted(CompletedV3) = 3 {
                    2 => upcast::<CompletedV2, CompletedV3>,
                    1 => |event_type, payload| {
                        upcast::<CompletedV1, CompletedV2>(event_type, payload).map(CompletedV3::from)
                    },
                },
            }
        }
    }

    use v2::OrderEventV2;
    use v3::OrderEventV3;

    #[test]
    fn a_stored_version_1_event_reads_as_version_2() {
        let v1 = stored_payload("OrderCompleted/1");
        // The frozen struct is the real version 1: the real enum reads the same.
        let OrderEvent::OrderCompleted(real) =
            OrderEvent::decode("OrderCompleted", 1, &v1).unwrap()
        else {
            panic!("not OrderCompleted")
        };
        assert_eq!(
            (real.order, real.automatic, real.at),
            (order_id(), true, at())
        );

        let event = OrderEventV2::decode("OrderCompleted", 1, &v1).unwrap();
        let expected = CompletedV2 {
            order: order_id(),
            automatic: true,
            at: at(),
            operator: None,
        };
        assert_eq!(event, OrderEventV2::OrderCompleted(expected.clone()));

        // It is written back at the current version only.
        assert_eq!(event.schema_version(), 2);
        assert_eq!(event.payload(), to_bytes(&expected));
        assert_ne!(event.payload(), v1);
        assert_eq!(
            OrderEventV2::decode("OrderCompleted", 2, &event.payload()).unwrap(),
            event
        );
        assert_eq!(
            OrderEventV2::TYPES,
            &[("OrderCompleted", 2), ("OrderExpired", 2)]
        );
    }

    #[test]
    fn a_version_without_an_upcaster_is_refused() {
        // Older, with no upcaster declared.
        let expired_v1 = stored_payload("OrderExpired/1");
        let err = OrderEventV2::decode("OrderExpired", 1, &expired_v1).unwrap_err();
        assert!(
            matches!(
                &err,
                CodecError::UnknownSchemaVersion { event_type, found: 1, current: 2, upcast_from: [] }
                    if event_type == "OrderExpired"
            ),
            "{err:?}"
        );
        // Newer than this build, and zero.
        let completed_v1 = stored_payload("OrderCompleted/1");
        for found in [0, 3, u16::MAX] {
            let err = OrderEventV2::decode("OrderCompleted", found, &completed_v1).unwrap_err();
            assert!(
                matches!(
                    &err,
                    CodecError::UnknownSchemaVersion { found: f, current: 2, upcast_from: [1], .. }
                        if *f == found
                ),
                "{err:?}"
            );
        }
        // An unknown type stays unknown.
        assert!(matches!(
            OrderEventV2::decode("OrderPlaced", 1, &completed_v1),
            Err(CodecError::UnknownEventType(t)) if t == "OrderPlaced"
        ));
    }

    #[test]
    fn old_bytes_that_do_not_decode_are_malformed() {
        let v1 = stored_payload("OrderCompleted/1");
        let err = OrderEventV2::decode("OrderCompleted", 1, &v1[..v1.len() - 1]).unwrap_err();
        assert!(
            matches!(&err, CodecError::Malformed { event_type, .. } if event_type == "OrderCompleted"),
            "{err:?}"
        );
    }

    #[test]
    fn upcasters_chain_from_version_1_and_2_to_3() {
        let v1 = stored_payload("OrderCompleted/1");
        assert_eq!(
            OrderEventV3::decode("OrderCompleted", 1, &v1).unwrap(),
            OrderEventV3::OrderCompleted(CompletedV3 {
                order: order_id(),
                how: Completion::Automatic,
                at: at(),
            })
        );
        for (operator, how) in [
            (
                Some("ops-7".to_owned()),
                Completion::ByOperator("ops-7".into()),
            ),
            (None, Completion::ByCustomer),
        ] {
            let v2 = to_bytes(&CompletedV2 {
                order: order_id(),
                automatic: false,
                at: at(),
                operator,
            });
            let event = OrderEventV3::decode("OrderCompleted", 2, &v2).unwrap();
            assert_eq!(
                event,
                OrderEventV3::OrderCompleted(CompletedV3 {
                    order: order_id(),
                    how,
                    at: at(),
                })
            );
            assert_eq!(event.schema_version(), 3);
        }
        assert_eq!(
            OrderEventV3::decode("OrderCompleted", 4, &v1)
                .unwrap_err()
                .to_string(),
            "unknown schema version 4 of OrderCompleted (this build writes 3 and upcasts from [2, 1])"
        );
    }
}

/// `DepositPaid` version 1 (one transaction, before credits were counted per
/// gateway payment) reads as a credit of no gateway payment.
#[test]
fn a_deposit_paid_of_version_1_reads_as_a_credit_of_no_gateway_payment() {
    let payload = stored_payload("DepositPaid/1");
    let decoded = DepositEvent::decode("DepositPaid", 1, &payload).unwrap();
    assert_eq!(
        decoded,
        DepositEvent::DepositPaid(DepositPaid {
            deposit: deposit_id(),
            payment: payment(),
            paid: Micros(9_000_000),
            gateway_payment: None,
            at: at(),
        })
    );
}

/// `ApiKeyCreated` version 1 (keys before scopes) reads as a key of scope
/// `orders`, without a label, accepted from any address.
#[test]
fn an_api_key_created_of_version_1_reads_as_an_orders_key_for_any_address() {
    let payload = stored_payload("ApiKeyCreated/1");
    let decoded = AccountEvent::decode("ApiKeyCreated", 1, &payload).unwrap();
    assert_eq!(
        decoded,
        AccountEvent::ApiKeyCreated(ApiKeyCreated {
            key_id: ApiKeyId(Uuid::from_u128(5)),
            key_hash: [0xab; 32],
            prefix: "AbCd_-12".into(),
            scope: ApiKeyScope::Orders,
            label: None,
            allowed_ips: vec![],
            at: at(),
        })
    );
}

/// `AccountDeletionRequested` version 1 (before the balance was asked about)
/// reads with no forfeited balance recorded.
#[test]
fn an_account_deletion_requested_of_version_1_reads_with_no_balance_recorded() {
    let payload = stored_payload("AccountDeletionRequested/1");
    let decoded = AccountEvent::decode("AccountDeletionRequested", 1, &payload).unwrap();
    assert_eq!(
        decoded,
        AccountEvent::AccountDeletionRequested(AccountDeletionRequested {
            at: at(),
            erase_due_at: at(),
            forfeit_balance: None,
        })
    );
}
