//! Accounts: by id (status, verification, objection, the sealed e-mail), the
//! account holding an e-mail address (by its keyed hash), API keys by the
//! SHA-256 of the key.
//!
//! # Tree `accounts`
//!
//! | key | value |
//! |---|---|
//! | `a` account(16) | `AccountRow` |
//! | `e` hmac(32) | account(16): the holder of the address whose lookup hash this is |
//! | `k` sha256(32) | `ApiKeyRow` |
//! | `i` key id(16) | sha256(32) of that key (to revoke by id) |
//! | `x` account(16) | `ErasedRow`: the erasure of the account's personal data was recorded |
//!
//! The address is kept only as the event's sealed section; the e-mail index
//! key is the HMAC already in the `email-<hmac>` stream name, meaningless
//! without the lookup key. The password hash is never used here (it is inside
//! the sealed registration section, which is opened only for the address).
//! `AccountErased` drops the sealed address from the account's row (its key
//! is gone from the vault already) and records the erasure under `x`, so the
//! account reads `Erased` from the read model alone, incrementally and after a
//! rebuild alike.

mod apply;
mod query;

use chrono::{DateTime, Utc};
use nexus_core::domain::ids::{AccountId, ApiKeyId};
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::sealed::StoredPii;

pub use apply::AccountsProjection;
pub use query::{AccountStatusView, AccountSummary, AccountsView, ApiKeyView};

/// The projection's (and its tree's) name.
pub const NAME: &str = "accounts";
/// The format of this tree's rows (see [`crate::Projection::format_version`]).
pub const FORMAT_VERSION: u32 = 1;

/// Where the current address is sealed: which personal struct it is in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SealedEmail {
    /// `RegisteredPii` of `AccountRegistered`.
    Registered(StoredPii),
    /// `EmailPii` of `AccountEmailChanged`.
    Changed(StoredPii),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Deletion {
    #[serde(with = "crate::keys::ts")]
    pub requested_at: DateTime<Utc>,
    #[serde(with = "crate::keys::ts")]
    pub erase_due_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AccountRow {
    #[serde(with = "crate::keys::ts")]
    pub registered_at: DateTime<Utc>,
    pub verified: bool,
    pub objection: bool,
    pub deletion: Option<Deletion>,
    pub email: Option<SealedEmail>,
    pub live_api_keys: u32,
}

/// When the erasure of an account's personal data was recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ErasedRow {
    #[serde(with = "crate::keys::ts")]
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ApiKeyRow {
    pub account: AccountId,
    pub key_id: ApiKeyId,
    pub prefix: String,
    #[serde(with = "crate::keys::ts")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::keys::ts::option")]
    pub revoked_at: Option<DateTime<Utc>>,
}

fn account_key(account: AccountId) -> Vec<u8> {
    keys::key(b'a', &[account.0.as_bytes()])
}

fn email_key(hash: &[u8; 32]) -> Vec<u8> {
    keys::key(b'e', &[hash])
}

fn api_key_key(hash: &[u8; 32]) -> Vec<u8> {
    keys::key(b'k', &[hash])
}

fn key_id_key(id: ApiKeyId) -> Vec<u8> {
    keys::key(b'i', &[id.0.as_bytes()])
}

fn erased_key(account: AccountId) -> Vec<u8> {
    keys::key(b'x', &[account.0.as_bytes()])
}
