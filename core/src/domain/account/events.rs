//! The events of an account stream and of an e-mail reservation stream.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::totp::TotpSecretPii;
use super::{ApiKeyScope, ApiKeySettings, IpRange, Sha256Hash};
use crate::domain::codec::{upcast, EventBody, Personal};
use crate::domain::ids::{AccountId, ApiKeyId};
use crate::domain::money::Micros;
use crate::{domain_events, personal_event_body};

/// The personal part of [`AccountRegistered`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredPii {
    /// The normalized address.
    pub email: String,
    /// bcrypt (`$2b$…`) of [`bcrypt_input`] of the password.
    ///
    /// [`bcrypt_input`]: super::bcrypt_input
    pub password_hash: String,
}

impl fmt::Debug for RegisteredPii {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RegisteredPii(<redacted>)")
    }
}

/// The personal part of [`AccountPasswordChanged`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordPii {
    pub password_hash: String,
}

impl fmt::Debug for PasswordPii {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordPii(<redacted>)")
    }
}

/// The personal part of [`AccountEmailChanged`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailPii {
    pub email: String,
}

impl fmt::Debug for EmailPii {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EmailPii(<redacted>)")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRegistered {
    pub account: AccountId,
    pub registered_at: DateTime<Utc>,
    #[serde(skip)]
    pub pii: Personal<RegisteredPii>,
}
personal_event_body!(AccountRegistered, pii, |e: &AccountRegistered| e
    .account
    .subject());

/// A verification token was issued (at registration, on request, or after an
/// e-mail change); it replaces any earlier one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountVerificationIssued {
    /// SHA-256 of the token.
    pub token_hash: Sha256Hash,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}
impl EventBody for AccountVerificationIssued {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEmailVerified {
    pub token_hash: Sha256Hash,
    pub at: DateTime<Utc>,
}
impl EventBody for AccountEmailVerified {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountPasswordChanged {
    pub account: AccountId,
    pub at: DateTime<Utc>,
    #[serde(skip)]
    pub pii: Personal<PasswordPii>,
}
personal_event_body!(AccountPasswordChanged, pii, |e: &AccountPasswordChanged| e
    .account
    .subject());

/// The address was corrected; it must be verified again (the new token is
/// issued in the same append).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEmailChanged {
    pub account: AccountId,
    pub at: DateTime<Utc>,
    #[serde(skip)]
    pub pii: Personal<EmailPii>,
}
personal_event_body!(AccountEmailChanged, pii, |e: &AccountEmailChanged| e
    .account
    .subject());

/// The customer objects (true) to non-essential processing of their data, or
/// lifts the objection (false).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountObjectionSet {
    pub object: bool,
    pub at: DateTime<Utc>,
}
impl EventBody for AccountObjectionSet {}

/// The account is disabled from `at`; its personal data is due for erasure at
/// `erase_due_at` unless the request is withdrawn before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountDeletionRequested {
    pub at: DateTime<Utc>,
    pub erase_due_at: DateTime<Utc>,
    /// The wallet's available balance when the deletion was requested: what
    /// moves to unclaimed balances at the erasure if nothing arrives
    /// meanwhile. A balance above zero was confirmed as forfeited by the
    /// customer. `None` in requests recorded before the balance was asked
    /// about (version 1).
    pub forfeit_balance: Option<Micros>,
}
impl EventBody for AccountDeletionRequested {}

/// [`AccountDeletionRequested`] version 1, frozen: requests from before the
/// balance was asked about. They read with no `forfeit_balance`.
#[derive(Deserialize)]
pub struct AccountDeletionRequestedV1 {
    pub at: DateTime<Utc>,
    pub erase_due_at: DateTime<Utc>,
}

impl From<AccountDeletionRequestedV1> for AccountDeletionRequested {
    fn from(v1: AccountDeletionRequestedV1) -> AccountDeletionRequested {
        AccountDeletionRequested {
            at: v1.at,
            erase_due_at: v1.erase_due_at,
            forfeit_balance: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountDeletionWithdrawn {
    pub at: DateTime<Utc>,
}
impl EventBody for AccountDeletionWithdrawn {}

/// The account's personal data was erased at `at`: its deletion had fallen due
/// and its vault subject's key is deleted (e-mail, password hash and webhook
/// endpoint read back as erased). Final: nothing follows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountErased {
    pub at: DateTime<Utc>,
}
impl EventBody for AccountErased {}

/// An API key was created (schema version 2: with its scope, label and
/// address allow-list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    pub key_id: ApiKeyId,
    /// SHA-256 of the whole key.
    pub key_hash: Sha256Hash,
    /// The first characters of the key's secret part, public (for lists).
    pub prefix: String,
    pub scope: ApiKeyScope,
    /// The owner's name for the key (not personal data: the owner's own note,
    /// at most 64 characters).
    pub label: Option<String>,
    /// Empty: any address.
    pub allowed_ips: Vec<IpRange>,
    pub at: DateTime<Utc>,
}
impl EventBody for ApiKeyCreated {}

/// [`ApiKeyCreated`] version 1, frozen: keys before scopes. They read as
/// scope `orders`, no label, any address.
#[derive(Deserialize)]
pub struct ApiKeyCreatedV1 {
    pub key_id: ApiKeyId,
    pub key_hash: Sha256Hash,
    pub prefix: String,
    pub at: DateTime<Utc>,
}

impl From<ApiKeyCreatedV1> for ApiKeyCreated {
    fn from(v1: ApiKeyCreatedV1) -> ApiKeyCreated {
        let legacy = ApiKeySettings::legacy();
        ApiKeyCreated {
            key_id: v1.key_id,
            key_hash: v1.key_hash,
            prefix: v1.prefix,
            scope: legacy.scope,
            label: legacy.label,
            allowed_ips: legacy.allowed_ips,
            at: v1.at,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRevoked {
    pub key_id: ApiKeyId,
    pub at: DateTime<Utc>,
}
impl EventBody for ApiKeyRevoked {}

/// The personal part of [`WebhookEndpointSet`]: where deliveries go and the
/// secret they are signed with.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointPii {
    /// The normalized URL ([`WebhookUrl`]).
    ///
    /// [`WebhookUrl`]: super::WebhookUrl
    pub url: String,
    /// `whsec_…` ([`make_webhook_secret`]).
    ///
    /// [`make_webhook_secret`]: super::make_webhook_secret
    pub secret: String,
}

impl fmt::Debug for WebhookEndpointPii {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookEndpointPii(<redacted>)")
    }
}

/// The account's webhook endpoint was set, or replaced with a new URL and a new
/// signing secret (a rotation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointSet {
    pub account: AccountId,
    pub at: DateTime<Utc>,
    #[serde(skip)]
    pub pii: Personal<WebhookEndpointPii>,
}
personal_event_body!(WebhookEndpointSet, pii, |e: &WebhookEndpointSet| e
    .account
    .subject());

/// The account's webhook endpoint was removed: nothing is sent any more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointRemoved {
    pub at: DateTime<Utc>,
}
impl EventBody for WebhookEndpointRemoved {}

/// A password-reset token was issued and mailed to the account's address; it
/// replaces any earlier one. Only its hash is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordResetIssued {
    /// SHA-256 of the token.
    pub token_hash: Sha256Hash,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}
impl EventBody for PasswordResetIssued {}

/// The password was set anew with the reset token whose hash is `token_hash`
/// (the password change of a reset; the token is spent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountPasswordReset {
    pub account: AccountId,
    pub token_hash: Sha256Hash,
    pub at: DateTime<Utc>,
    #[serde(skip)]
    pub pii: Personal<PasswordPii>,
}
personal_event_body!(AccountPasswordReset, pii, |e: &AccountPasswordReset| e
    .account
    .subject());

/// The address was changed away from `pii.email` (appended with the
/// [`AccountEmailChanged`]): a token mailed to that old address can undo the
/// change until `expires_at`. The old address stays sealed under the account's
/// subject, erased with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailChangeUndoIssued {
    pub account: AccountId,
    /// SHA-256 of the token.
    pub token_hash: Sha256Hash,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(skip)]
    pub pii: Personal<EmailPii>,
}
personal_event_body!(EmailChangeUndoIssued, pii, |e: &EmailChangeUndoIssued| e
    .account
    .subject());

/// An e-mail change was undone with the token mailed to the old address. It
/// follows, in the same append, the [`AccountEmailChanged`] back to that
/// address: the address counts as verified again (the token reached it), the
/// password is the one given with the undo, and every other pending token ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailChangeUndone {
    pub account: AccountId,
    pub token_hash: Sha256Hash,
    pub at: DateTime<Utc>,
    #[serde(skip)]
    pub pii: Personal<PasswordPii>,
}
personal_event_body!(EmailChangeUndone, pii, |e: &EmailChangeUndone| e
    .account
    .subject());

/// Two-factor enrolment began: a new TOTP secret, sealed under the account's
/// subject, waits for its first code. It replaces any earlier pending one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoFactorEnrolmentStarted {
    pub account: AccountId,
    pub at: DateTime<Utc>,
    #[serde(skip)]
    pub pii: Personal<TotpSecretPii>,
}
personal_event_body!(
    TwoFactorEnrolmentStarted,
    pii,
    |e: &TwoFactorEnrolmentStarted| e.account.subject()
);

/// The pending secret's first code was right: a login now needs a code.
/// `step` is the time step of that code (it cannot be used again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoFactorEnabled {
    pub at: DateTime<Utc>,
    pub step: u64,
    /// SHA-256 of each recovery code (as [`recovery_code_hash`] reads it).
    ///
    /// [`recovery_code_hash`]: super::recovery_code_hash
    pub recovery_code_hashes: Vec<Sha256Hash>,
}
impl EventBody for TwoFactorEnabled {}

/// A TOTP code of time step `step` was accepted: no code of that step or an
/// earlier one is accepted again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoFactorStepUsed {
    pub at: DateTime<Utc>,
    pub step: u64,
}
impl EventBody for TwoFactorStepUsed {}

/// A recovery code (by its hash) was accepted: it is spent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryCodeUsed {
    pub at: DateTime<Utc>,
    pub code_hash: Sha256Hash,
}
impl EventBody for RecoveryCodeUsed {}

/// Two-factor authentication was turned off: the secret and the recovery
/// codes are forgotten.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoFactorDisabled {
    pub at: DateTime<Utc>,
}
impl EventBody for TwoFactorDisabled {}

domain_events! {
    /// The events of an account stream.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum AccountEvent {
        AccountRegistered(AccountRegistered) = 1,
        AccountVerificationIssued(AccountVerificationIssued) = 1,
        AccountEmailVerified(AccountEmailVerified) = 1,
        AccountPasswordChanged(AccountPasswordChanged) = 1,
        AccountEmailChanged(AccountEmailChanged) = 1,
        AccountObjectionSet(AccountObjectionSet) = 1,
        AccountDeletionRequested(AccountDeletionRequested) = 2 {
            1 => upcast::<AccountDeletionRequestedV1, AccountDeletionRequested>
        },
        AccountDeletionWithdrawn(AccountDeletionWithdrawn) = 1,
        ApiKeyCreated(ApiKeyCreated) = 2 { 1 => upcast::<ApiKeyCreatedV1, ApiKeyCreated> },
        ApiKeyRevoked(ApiKeyRevoked) = 1,
        WebhookEndpointSet(WebhookEndpointSet) = 1,
        WebhookEndpointRemoved(WebhookEndpointRemoved) = 1,
        AccountErased(AccountErased) = 1,
        PasswordResetIssued(PasswordResetIssued) = 1,
        AccountPasswordReset(AccountPasswordReset) = 1,
        EmailChangeUndoIssued(EmailChangeUndoIssued) = 1,
        EmailChangeUndone(EmailChangeUndone) = 1,
        TwoFactorEnrolmentStarted(TwoFactorEnrolmentStarted) = 1,
        TwoFactorEnabled(TwoFactorEnabled) = 1,
        TwoFactorStepUsed(TwoFactorStepUsed) = 1,
        RecoveryCodeUsed(RecoveryCodeUsed) = 1,
        TwoFactorDisabled(TwoFactorDisabled) = 1,
    }
}

/// The address (by its stream) now belongs to `account`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailReserved {
    pub account: AccountId,
    pub at: DateTime<Utc>,
}
impl EventBody for EmailReserved {}

/// `account` gave the address up (an e-mail change, or before erasure); it can
/// be registered again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailReleased {
    pub account: AccountId,
    pub at: DateTime<Utc>,
}
impl EventBody for EmailReleased {}

domain_events! {
    /// The events of an e-mail reservation stream.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum EmailReservationEvent {
        EmailReserved(EmailReserved) = 1,
        EmailReleased(EmailReleased) = 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::account::fixtures::*;
    use crate::domain::account::*;
    use crate::domain::aggregate::given;
    use crate::domain::codec::DomainEvent;

    #[test]
    fn debug_output_shows_no_personal_data() {
        let state = given::<Account>(verified()).state().clone();
        let shown = format!("{state:?} {:?}", verified());
        assert!(!shown.contains("alice"), "{shown}");
        assert!(!shown.contains(HASH), "{shown}");
        let pii = RegisteredPii {
            email: "alice@example.com".into(),
            password_hash: HASH.into(),
        };
        assert_eq!(format!("{pii:?}"), "RegisteredPii(<redacted>)");
        for err in [
            AccountError::InvalidEmail { reason: "no '@'" },
            AccountError::InvalidCredentials,
        ] {
            assert!(!err.to_string().contains("alice"));
        }
    }

    #[test]
    fn a_newer_schema_version_is_refused() {
        assert!(EmailReservationEvent::decode("EmailReserved", 2, &[]).is_err());
    }
}
