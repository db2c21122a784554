//! Stream categories and decoding: a record's stream name prefix says which
//! event enum its payload belongs to.

use nexus_core::domain::codec::DomainEvent;
use nexus_core::domain::ids::{AccountId, AnonymousId, DepositId, OrderId};
use nexus_core::domain::ledger::Owner;
use nexus_core::log::RecordedEvent;

use crate::error::ApplyError;

/// The stream categories Nexus writes. Streams of any other category are
/// skipped by every projection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// `account-<hex>`: `AccountEvent`.
    Account,
    /// `email-<hmac hex>`: `EmailReservationEvent`.
    Email,
    /// `wallet-account-<hex>`, `wallet-anon-<hex>`: `WalletEvent`.
    Wallet,
    /// `order-<hex>`: `OrderEvent`.
    Order,
    /// `deposit-<hex>`: `DepositEvent`.
    Deposit,
    /// `payment-<sha256 hex>`: `PaymentEvent`.
    Payment,
    /// `anon-<hex>`: `AnonymousEvent`.
    Anonymous,
    /// `idem-<sha256 hex>`: `IdempotencyEvent`.
    Idempotency,
}

const PREFIXES: [(&str, Category); 8] = [
    ("account-", Category::Account),
    ("email-", Category::Email),
    ("wallet-", Category::Wallet),
    ("order-", Category::Order),
    ("deposit-", Category::Deposit),
    ("payment-", Category::Payment),
    ("anon-", Category::Anonymous),
    ("idem-", Category::Idempotency),
];

impl Category {
    /// The category of a stream and the rest of its name (the id part).
    pub fn of(stream: &str) -> Option<(Category, &str)> {
        // Every record passes here once per projection: dispatch on the first
        // byte, compare one prefix.
        let (prefix, category) = match stream.as_bytes().first()? {
            b'a' if stream.as_bytes().get(1) == Some(&b'c') => PREFIXES[0],
            b'a' => PREFIXES[6],
            b'e' => PREFIXES[1],
            b'w' => PREFIXES[2],
            b'o' => PREFIXES[3],
            b'd' => PREFIXES[4],
            b'p' => PREFIXES[5],
            b'i' => PREFIXES[7],
            _ => return None,
        };
        stream.strip_prefix(prefix).map(|rest| (category, rest))
    }

    pub fn name(self) -> &'static str {
        match self {
            Category::Account => "account",
            Category::Email => "email",
            Category::Wallet => "wallet",
            Category::Order => "order",
            Category::Deposit => "deposit",
            Category::Payment => "payment",
            Category::Anonymous => "anon",
            Category::Idempotency => "idem",
        }
    }

    /// True for the categories whose records are financial (kept 7 years).
    pub fn is_financial(self) -> bool {
        matches!(
            self,
            Category::Wallet | Category::Deposit | Category::Payment
        )
    }
}

/// The record's payload as the domain event enum `E`.
pub fn decode<E: DomainEvent>(record: &RecordedEvent) -> Result<E, ApplyError> {
    E::decode(&record.event_type, record.schema_version, &record.payload).map_err(|source| {
        ApplyError::Decode {
            event_type: record.event_type.clone(),
            source,
        }
    })
}

/// Whether the record is one of the `ignored` types of `E` at the schema
/// version this build knows: a projection that does nothing with it need not
/// decode it (most of a projection's cost per event is the decoding). A type or
/// version this build does not know still goes to the decoder, and fails.
pub fn known_and_ignored<E: DomainEvent>(record: &RecordedEvent, ignored: &[&str]) -> bool {
    known_as::<E>(record, ignored)
}

/// Whether the record is one of `types` of `E`, at the schema version this
/// build knows: a projection that needs only the type (not the payload) of such
/// a record need not decode it. A type or version this build does not know is
/// never one of them (it goes to the decoder, and fails).
pub fn known_as<E: DomainEvent>(record: &RecordedEvent, types: &[&str]) -> bool {
    let event_type = record.event_type.as_str();
    types.contains(&event_type)
        && E::TYPES
            .iter()
            .any(|(t, v)| *t == event_type && *v == record.schema_version)
}

fn bad(record: &RecordedEvent, category: Category, reason: &'static str) -> ApplyError {
    ApplyError::BadStream {
        stream: record.stream.as_str().to_owned(),
        category: category.name(),
        reason,
    }
}

/// 32 hex digits, as the id types print them (every projection parses the id
/// of nearly every record: a plain hex decode, no format detection).
fn uuid_hex(text: &str) -> Option<uuid::Uuid> {
    let mut bytes = [0u8; 16];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(uuid::Uuid::from_bytes(bytes))
}

/// The account of an `account-<hex>` record.
pub fn account_of(record: &RecordedEvent, rest: &str) -> Result<AccountId, ApplyError> {
    uuid_hex(rest)
        .map(AccountId)
        .ok_or_else(|| bad(record, Category::Account, "expected 32 hex digits"))
}

/// The order of an `order-<hex>` record.
pub fn order_of(record: &RecordedEvent, rest: &str) -> Result<OrderId, ApplyError> {
    uuid_hex(rest)
        .map(OrderId)
        .ok_or_else(|| bad(record, Category::Order, "expected 32 hex digits"))
}

/// The deposit of a `deposit-<hex>` record.
pub fn deposit_of(record: &RecordedEvent, rest: &str) -> Result<DepositId, ApplyError> {
    uuid_hex(rest)
        .map(DepositId)
        .ok_or_else(|| bad(record, Category::Deposit, "expected 32 hex digits"))
}

/// The owner of a `wallet-account-<hex>` or `wallet-anon-<hex>` record.
pub fn wallet_owner(record: &RecordedEvent, rest: &str) -> Result<Owner, ApplyError> {
    let owner = if let Some(hex) = rest.strip_prefix("account-") {
        uuid_hex(hex).map(|id| Owner::Account(AccountId(id)))
    } else if let Some(hex) = rest.strip_prefix("anon-") {
        uuid_hex(hex).map(|id| Owner::Anonymous(AnonymousId(id)))
    } else {
        None
    };
    owner.ok_or_else(|| {
        bad(
            record,
            Category::Wallet,
            "expected account-<hex> or anon-<hex>",
        )
    })
}

/// The keyed hash naming an `email-<64 hex>` record.
pub fn email_hash_of(record: &RecordedEvent, rest: &str) -> Result<[u8; 32], ApplyError> {
    let mut hash = [0u8; 32];
    match hex::decode_to_slice(rest, &mut hash) {
        Ok(()) => Ok(hash),
        Err(_) => Err(bad(record, Category::Email, "expected 64 hex digits")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_types_at_known_versions_are_ignored_without_decoding() {
        use nexus_core::domain::order::OrderEvent;
        let mut record = RecordedEvent {
            position: 1,
            stream: nexus_core::log::StreamName::new("order-1").unwrap(),
            version: 1,
            id: nexus_core::log::EventId::new(),
            event_type: "OrderCodeErased".into(),
            schema_version: 1,
            recorded_at: chrono::Utc::now(),
            correlation_id: None,
            causation_id: None,
            payload: Vec::new(),
            pii: None,
            prev_hash: [0; 32],
            hash: [0; 32],
        };
        assert!(known_and_ignored::<OrderEvent>(
            &record,
            &["OrderCodeErased"]
        ));
        assert!(!known_and_ignored::<OrderEvent>(
            &record,
            &["OrderCompleted"]
        ));
        record.schema_version = 2;
        assert!(!known_and_ignored::<OrderEvent>(
            &record,
            &["OrderCodeErased"]
        ));
        record.event_type = "OrderTeleported".into();
        record.schema_version = 1;
        assert!(!known_and_ignored::<OrderEvent>(
            &record,
            &["OrderTeleported"]
        ));
    }

    #[test]
    fn ids_are_exactly_32_hex_digits() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(uuid_hex(&id.simple().to_string()), Some(id));
        assert_eq!(uuid_hex(&id.simple().to_string().to_uppercase()), Some(id));
        assert_eq!(uuid_hex(&id.hyphenated().to_string()), None);
        assert_eq!(uuid_hex(&id.simple().to_string()[1..]), None);
        assert_eq!(uuid_hex(&format!("{}0", id.simple())), None);
        assert_eq!(uuid_hex(&"g".repeat(32)), None);
        assert_eq!(uuid_hex(""), None);
    }

    #[test]
    fn categories_by_prefix() {
        assert_eq!(Category::of("account-ab").unwrap().0, Category::Account);
        assert_eq!(
            Category::of("wallet-account-ab").unwrap(),
            (Category::Wallet, "account-ab")
        );
        assert_eq!(Category::of("idem-00").unwrap().0, Category::Idempotency);
        assert_eq!(Category::of("audit-1"), None);
        assert_eq!(Category::of("accounts"), None);
        assert_eq!(Category::of("anon-1").unwrap(), (Category::Anonymous, "1"));
        assert_eq!(Category::of("a"), None);
        assert_eq!(Category::of(""), None);
        for (prefix, category) in PREFIXES {
            assert_eq!(Category::of(&format!("{prefix}x")), Some((category, "x")));
        }
    }
}
