//! Identifiers of domain objects: opaque, random (UUIDv7, time-ordered) ids.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::log::StreamName;
use crate::vault::SubjectId;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The stream and subject prefix, e.g. `account`.
            pub const PREFIX: &'static str = $prefix;

            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the simple (32 hex digits) or hyphenated form.
            pub fn parse(text: &str) -> Option<Self> {
                Uuid::try_parse(text).ok().map(Self)
            }

            /// The stream of this object's events: `<prefix>-<32 hex digits>`.
            pub fn stream(&self) -> StreamName {
                StreamName::new(format!("{}-{}", $prefix, self.0.simple()))
                    .expect("prefix and hex digits make a valid stream name")
            }

            /// The vault subject of this object's personal data.
            pub fn subject(&self) -> SubjectId {
                SubjectId::new(format!("{}-{}", $prefix, self.0.simple()))
                    .expect("prefix and hex digits make a valid subject")
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0.simple())
            }
        }
    };
}

id_type!(
    /// A registered customer.
    AccountId,
    "account"
);
id_type!(
    /// An order for a number (an account's or an anonymous one).
    OrderId,
    "order"
);
id_type!(
    /// An anonymous buyer, known only by the hash of its tracking ID.
    AnonymousId,
    "anon"
);
id_type!(
    /// A crypto deposit invoice.
    DepositId,
    "deposit"
);
id_type!(
    /// An API key (the id is public; the key itself is shown once).
    ApiKeyId,
    "apikey"
);
