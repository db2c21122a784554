//! Applying account and e-mail reservation events to the accounts read model.

use nexus_core::domain::account::{AccountEvent, EmailReservationEvent};
use nexus_core::log::RecordedEvent;

use super::*;
use crate::error::ApplyError;
use crate::projection::Projection;
use crate::staging::Staging;
use crate::stream::{self, Category};

/// The accounts projection.
#[derive(Debug, Default)]
pub struct AccountsProjection;

impl Projection for AccountsProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn format_version(&self) -> u32 {
        FORMAT_VERSION
    }

    fn apply(&mut self, record: &RecordedEvent, st: &mut Staging) -> Result<(), ApplyError> {
        match Category::of(record.stream.as_str()) {
            Some((Category::Account, rest)) => {
                if stream::known_and_ignored::<AccountEvent>(record, IGNORED_ACCOUNT_EVENTS) {
                    return Ok(());
                }
                let account = stream::account_of(record, rest)?;
                account_event(record, account, stream::decode(record)?, st)
            }
            Some((Category::Email, rest)) => {
                let hash = stream::email_hash_of(record, rest)?;
                email_event(hash, stream::decode(record)?, st)
            }
            _ => Ok(()),
        }
    }
}

/// Account events that change nothing here.
const IGNORED_ACCOUNT_EVENTS: &[&str] = &[
    "AccountVerificationIssued",
    "AccountPasswordChanged",
    "WebhookEndpointSet",
    "WebhookEndpointRemoved",
    "PasswordResetIssued",
    "AccountPasswordReset",
    "EmailChangeUndoIssued",
];

fn missing(record: &RecordedEvent, what: &'static str, id: impl std::fmt::Display) -> ApplyError {
    ApplyError::Missing {
        event_type: record.event_type.clone(),
        what,
        id: id.to_string(),
    }
}

fn account_event(
    record: &RecordedEvent,
    account: AccountId,
    event: AccountEvent,
    st: &mut Staging,
) -> Result<(), ApplyError> {
    let key = account_key(account);
    // API keys first: their rows are keyed by the key's hash.
    let keys_changed: i64 = match &event {
        AccountEvent::AccountRegistered(e) => {
            let row = AccountRow {
                registered_at: e.registered_at,
                verified: false,
                objection: false,
                deletion: None,
                email: StoredPii::of(record).map(SealedEmail::Registered),
                live_api_keys: 0,
            };
            st.put(key, row);
            return Ok(());
        }
        AccountEvent::AccountVerificationIssued(_)
        | AccountEvent::AccountPasswordChanged(_)
        | AccountEvent::WebhookEndpointSet(_)
        | AccountEvent::WebhookEndpointRemoved(_)
        | AccountEvent::PasswordResetIssued(_)
        | AccountEvent::AccountPasswordReset(_)
        | AccountEvent::EmailChangeUndoIssued(_)
        | AccountEvent::TwoFactorEnrolmentStarted(_)
        | AccountEvent::TwoFactorEnabled(_)
        | AccountEvent::TwoFactorStepUsed(_)
        | AccountEvent::RecoveryCodeUsed(_)
        | AccountEvent::TwoFactorDisabled(_) => return Ok(()),
        AccountEvent::ApiKeyCreated(e) => {
            let key_row = ApiKeyRow {
                account,
                key_id: e.key_id,
                prefix: e.prefix.clone(),
                created_at: e.at,
                revoked_at: None,
            };
            st.put(api_key_key(&e.key_hash), key_row);
            st.put(key_id_key(e.key_id), e.key_hash);
            1
        }
        AccountEvent::ApiKeyRevoked(e) => {
            let hash = *st
                .get::<[u8; 32]>(&key_id_key(e.key_id))?
                .ok_or_else(|| missing(record, "API key", e.key_id))?;
            let key_row = st
                .get_mut::<ApiKeyRow>(&api_key_key(&hash))?
                .ok_or_else(|| missing(record, "API key", e.key_id))?;
            if key_row.revoked_at.is_none() {
                key_row.revoked_at = Some(e.at);
                -1
            } else {
                0
            }
        }
        _ => 0,
    };
    let row = st
        .get_mut::<AccountRow>(&key)?
        .ok_or_else(|| missing(record, "account", account))?;
    let mut erased = None;
    match event {
        // The undo follows the change back to the old address, which its token
        // reached: verified again.
        AccountEvent::AccountEmailVerified(_) | AccountEvent::EmailChangeUndone(_) => {
            row.verified = true
        }
        AccountEvent::AccountEmailChanged(_) => {
            let sealed =
                StoredPii::of(record).ok_or_else(|| ApplyError::MissingPersonalSection {
                    event_type: record.event_type.clone(),
                })?;
            row.email = Some(SealedEmail::Changed(sealed));
            row.verified = false;
        }
        AccountEvent::AccountObjectionSet(e) => row.objection = e.object,
        AccountEvent::AccountDeletionRequested(e) => {
            row.deletion = Some(Deletion {
                requested_at: e.at,
                erase_due_at: e.erase_due_at,
            })
        }
        AccountEvent::AccountDeletionWithdrawn(_) => row.deletion = None,
        AccountEvent::ApiKeyCreated(_) | AccountEvent::ApiKeyRevoked(_) => {
            row.live_api_keys = row.live_api_keys.saturating_add_signed(keys_changed as i32);
        }
        AccountEvent::AccountErased(e) => {
            // The key is gone: the sealed address could only read `Erased`.
            row.email = None;
            erased = Some(ErasedRow { at: e.at });
        }
        AccountEvent::AccountRegistered(_)
        | AccountEvent::AccountVerificationIssued(_)
        | AccountEvent::AccountPasswordChanged(_)
        | AccountEvent::WebhookEndpointSet(_)
        | AccountEvent::WebhookEndpointRemoved(_)
        | AccountEvent::PasswordResetIssued(_)
        | AccountEvent::AccountPasswordReset(_)
        | AccountEvent::EmailChangeUndoIssued(_)
        | AccountEvent::TwoFactorEnrolmentStarted(_)
        | AccountEvent::TwoFactorEnabled(_)
        | AccountEvent::TwoFactorStepUsed(_)
        | AccountEvent::RecoveryCodeUsed(_)
        | AccountEvent::TwoFactorDisabled(_) => {}
    }
    if let Some(erased) = erased {
        st.put(erased_key(account), erased);
    }
    Ok(())
}

fn email_event(
    hash: [u8; 32],
    event: EmailReservationEvent,
    st: &mut Staging,
) -> Result<(), ApplyError> {
    let key = email_key(&hash);
    match event {
        EmailReservationEvent::EmailReserved(e) => st.put(key, e.account),
        EmailReservationEvent::EmailReleased(e) => {
            if st.get::<AccountId>(&key)? == Some(&e.account) {
                st.delete(&key);
            }
        }
    }
    Ok(())
}
