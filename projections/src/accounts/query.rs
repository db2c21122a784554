//! Queries over the accounts read model.

use crate::value::get;
use chrono::{DateTime, Utc};
use nexus_core::domain::account::{EmailPii, RegisteredPii};
use nexus_core::domain::codec::Personal;
use nexus_core::domain::ids::{AccountId, ApiKeyId};
use nexus_core::vault::Vault;

use super::*;
use crate::error::QueryError;
use crate::sealed::map_personal;

/// An account's lifecycle as the read model tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountStatusView {
    Active,
    /// Disabled; its personal data is erased at `erase_due_at` unless the
    /// request is withdrawn first.
    DeletionPending {
        erase_due_at: DateTime<Utc>,
    },
    /// The personal data is gone (the account's vault subject was erased).
    Erased,
}

/// An account as its owner (and the API) sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSummary {
    pub id: AccountId,
    pub status: AccountStatusView,
    pub verified: bool,
    pub objection: bool,
    pub registered_at: DateTime<Utc>,
    /// The address, opened from the vault.
    pub email: Personal<String>,
    pub live_api_keys: u32,
    /// When the erasure was recorded (`AccountErased`); the status is `Erased`
    /// from the vault's erasure on, even before it is recorded.
    pub erased_at: Option<DateTime<Utc>>,
}

/// An API key found by its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyView {
    pub account: AccountId,
    pub key_id: ApiKeyId,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKeyView {
    pub fn revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// Read access to the accounts read model.
#[derive(Clone)]
pub struct AccountsView {
    tree: sled::Tree,
    vault: std::sync::Arc<Vault>,
}

impl AccountsView {
    pub(crate) fn new(tree: sled::Tree, vault: std::sync::Arc<Vault>) -> Self {
        Self { tree, vault }
    }

    pub fn account(&self, id: AccountId) -> Result<Option<AccountSummary>, QueryError> {
        let Some(row) = get::<AccountRow>(&self.tree, &account_key(id))? else {
            return Ok(None);
        };
        let erased_at = get::<ErasedRow>(&self.tree, &erased_key(id))?.map(|e| e.at);
        let erased = erased_at.is_some() || self.vault.is_erased(&id.subject())?;
        let email = match (&row.email, erased) {
            (_, true) => Personal::Erased,
            (None, false) => Personal::Unopened,
            (Some(SealedEmail::Registered(s)), false) => {
                map_personal(s.open::<RegisteredPii>(&self.vault)?, |p| p.email)
            }
            (Some(SealedEmail::Changed(s)), false) => {
                map_personal(s.open::<EmailPii>(&self.vault)?, |p| p.email)
            }
        };
        let status = match (&row.deletion, erased || matches!(email, Personal::Erased)) {
            (_, true) => AccountStatusView::Erased,
            (Some(d), false) => AccountStatusView::DeletionPending {
                erase_due_at: d.erase_due_at,
            },
            (None, false) => AccountStatusView::Active,
        };
        Ok(Some(AccountSummary {
            id,
            status,
            verified: row.verified,
            objection: row.objection,
            registered_at: row.registered_at,
            email,
            live_api_keys: row.live_api_keys,
            erased_at,
        }))
    }

    /// The account holding the address whose lookup hash (HMAC-SHA256 with the
    /// lookup key, `LookupKey::email_hash`) is `hash`.
    pub fn account_by_email_hash(&self, hash: &[u8; 32]) -> Result<Option<AccountId>, QueryError> {
        get(&self.tree, &email_key(hash))
    }

    /// An API key by the SHA-256 of the whole key (`secret_hash`).
    pub fn api_key(&self, key_hash: &[u8; 32]) -> Result<Option<ApiKeyView>, QueryError> {
        Ok(
            get::<ApiKeyRow>(&self.tree, &api_key_key(key_hash))?.map(|row| ApiKeyView {
                account: row.account,
                key_id: row.key_id,
                prefix: row.prefix,
                created_at: row.created_at,
                revoked_at: row.revoked_at,
            }),
        )
    }
}
