//! The account and the e-mail reservation, folded from their streams.

use std::fmt;

use chrono::{DateTime, Duration, Utc};

use super::events::{AccountEvent, EmailReservationEvent, WebhookEndpointPii};
use super::totp::TotpSecretPii;
use super::{AccountError, ApiKeyScope, IpRange, Sha256Hash};
use crate::domain::aggregate::Aggregate;
use crate::domain::codec::Personal;
use crate::domain::ids::{AccountId, ApiKeyId};

/// The lifecycle of an account as its events tell it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccountStatus {
    /// No `AccountRegistered` yet: the account does not exist.
    #[default]
    Unregistered,
    Active,
    /// Disabled: login and API keys are refused until the request is withdrawn.
    DeletionPending {
        requested_at: DateTime<Utc>,
        erase_due_at: DateTime<Utc>,
    },
}

/// The verification token currently valid, by its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingVerification {
    pub token_hash: Sha256Hash,
    pub expires_at: DateTime<Utc>,
}

/// An e-mail change that the old address can still undo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingEmailUndo {
    pub token_hash: Sha256Hash,
    /// When the change it undoes was made.
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The address the undo restores, opened from the vault (or `Erased`).
    pub email: Personal<String>,
}

/// An API key of the account.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub hash: Sha256Hash,
    pub prefix: String,
    pub scope: ApiKeyScope,
    pub label: Option<String>,
    pub allowed_ips: Vec<IpRange>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("prefix", &self.prefix)
            .field("scope", &self.scope)
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// An API key as listed to its owner (never the key itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeySummary {
    pub id: ApiKeyId,
    pub prefix: String,
    pub scope: ApiKeyScope,
    pub label: Option<String>,
    pub allowed_ips: Vec<IpRange>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The account's webhook endpoint, as its events tell it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// URL and secret, opened from the vault (or `Erased`).
    pub pii: Personal<WebhookEndpointPii>,
    pub set_at: DateTime<Utc>,
}

/// Whether a login needs a second factor, as the account's events tell it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TwoFactor {
    #[default]
    Off,
    /// Enrolment started: the secret waits for its first code.
    Pending {
        /// Opened from the vault (or `Erased`).
        secret: Personal<TotpSecretPii>,
        started_at: DateTime<Utc>,
    },
    /// A login needs a TOTP code or a recovery code.
    On {
        secret: Personal<TotpSecretPii>,
        recovery_codes: Vec<RecoveryCode>,
        enabled_at: DateTime<Utc>,
    },
}

/// A recovery code, by its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryCode {
    pub hash: Sha256Hash,
    pub used_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveryCode")
            .field("used_at", &self.used_at)
            .finish_non_exhaustive()
    }
}

/// What the owner (and the API) sees of an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountView {
    pub id: AccountId,
    pub status: AccountViewStatus,
    pub verified: bool,
    pub objection: bool,
    /// The address, opened from the vault (or `Erased`).
    pub email: Personal<String>,
    pub created_at: DateTime<Utc>,
    /// When the data will be erased, while a deletion is pending.
    pub deletion_due_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountViewStatus {
    Active,
    DeletionPending,
    /// The personal data is gone (the vault subject was erased).
    Erased,
}

/// An account folded from its stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub id: Option<AccountId>,
    pub registered_at: Option<DateTime<Utc>>,
    pub status: AccountStatus,
    /// The current address (normalized).
    pub email: Personal<String>,
    /// bcrypt of [`bcrypt_input`] of the current password.
    ///
    /// [`bcrypt_input`]: super::bcrypt_input
    pub password_hash: Personal<String>,
    pub verified: bool,
    pub verified_at: Option<DateTime<Utc>>,
    /// When an address of the account was first verified (kept across e-mail
    /// changes): until then the account cannot spend, and lapses
    /// [`UNVERIFIED_LAPSE_HOURS`] after registration.
    ///
    /// [`UNVERIFIED_LAPSE_HOURS`]: super::UNVERIFIED_LAPSE_HOURS
    pub first_verified_at: Option<DateTime<Utc>>,
    pub verification: Option<PendingVerification>,
    /// When the latest verification token was issued (and mailed).
    pub verification_issued_at: Option<DateTime<Utc>>,
    /// The hash of the token that verified the current address, to tell a reused
    /// token from a wrong one.
    pub used_token: Option<Sha256Hash>,
    pub objection: bool,
    /// Every key ever created, revoked ones included, oldest first.
    pub api_keys: Vec<ApiKey>,
    /// Where order events are posted, if anywhere.
    pub webhook: Option<WebhookEndpoint>,
    /// The password-reset token currently valid, by its hash.
    pub password_reset: Option<PendingVerification>,
    /// The e-mail changes the old address can undo, oldest first (those expired
    /// when a newer one was issued are dropped).
    pub email_undos: Vec<PendingEmailUndo>,
    /// The last reset or undo token spent, to tell a reused token from a wrong
    /// one.
    pub used_recovery_token: Option<Sha256Hash>,
    /// When the erasure of the personal data was recorded ([`AccountErased`]).
    ///
    /// [`AccountErased`]: super::AccountErased
    pub erased_at: Option<DateTime<Utc>>,
    pub two_factor: TwoFactor,
    /// The latest TOTP time step accepted: no code of it or an earlier step is
    /// accepted again (kept across a disable, so a code cannot come back).
    pub last_totp_step: Option<u64>,
}

impl Account {
    /// Whether a login needs a second factor.
    pub fn two_factor_on(&self) -> bool {
        matches!(self.two_factor, TwoFactor::On { .. })
    }

    /// Whether the personal data of the account was erased (it reads back so).
    pub fn is_erased(&self) -> bool {
        self.erased_at.is_some()
            || matches!(self.email, Personal::Erased)
            || matches!(self.password_hash, Personal::Erased)
    }

    pub fn live_api_keys(&self) -> usize {
        self.api_keys
            .iter()
            .filter(|k| k.revoked_at.is_none())
            .count()
    }

    /// The account as its owner sees it; `None` if it does not exist.
    pub fn view(&self) -> Option<AccountView> {
        let (id, created_at) = (self.id?, self.registered_at?);
        let (status, deletion_due_at) = match self.status {
            _ if self.is_erased() => (AccountViewStatus::Erased, None),
            AccountStatus::DeletionPending { erase_due_at, .. } => {
                (AccountViewStatus::DeletionPending, Some(erase_due_at))
            }
            _ => (AccountViewStatus::Active, None),
        };
        Some(AccountView {
            id,
            status,
            verified: self.verified,
            objection: self.objection,
            email: self.email.clone(),
            created_at,
            deletion_due_at,
        })
    }

    pub fn api_key_summaries(&self) -> Vec<ApiKeySummary> {
        self.api_keys
            .iter()
            .map(|k| ApiKeySummary {
                id: k.id,
                prefix: k.prefix.clone(),
                scope: k.scope,
                label: k.label.clone(),
                allowed_ips: k.allowed_ips.clone(),
                created_at: k.created_at,
                revoked_at: k.revoked_at,
            })
            .collect()
    }

    /// The account, if it exists and its data is not erased.
    pub(super) fn existing(&self) -> Result<AccountId, AccountError> {
        match self.id {
            None => Err(AccountError::AccountNotFound),
            Some(_) if self.is_erased() => Err(AccountError::AccountErased),
            Some(id) => Ok(id),
        }
    }

    /// When the account lapses if its address is still not verified then:
    /// `None` once an address of it was verified.
    pub fn lapses_at(&self) -> Option<DateTime<Utc>> {
        match self.first_verified_at {
            Some(_) => None,
            None => Some(self.registered_at? + Duration::hours(super::UNVERIFIED_LAPSE_HOURS)),
        }
    }

    /// [`Account::enabled`], and an address of it verified at least once
    /// (else `EmailNotVerified`): what depositing, ordering and setting a
    /// webhook need.
    pub fn trusted(&self) -> Result<AccountId, AccountError> {
        let id = self.enabled()?;
        match self.first_verified_at {
            Some(_) => Ok(id),
            None => Err(AccountError::EmailNotVerified),
        }
    }

    /// The account, if it exists, is not erased and is not disabled (else
    /// `AccountNotFound`, `AccountErased` or `AccountDisabled`).
    pub fn enabled(&self) -> Result<AccountId, AccountError> {
        let id = self.existing()?;
        match self.status {
            AccountStatus::DeletionPending { .. } => Err(AccountError::AccountDisabled),
            _ => Ok(id),
        }
    }
}

impl Aggregate for Account {
    type Event = AccountEvent;

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::AccountRegistered(e) => {
                self.id = Some(e.account);
                self.registered_at = Some(e.registered_at);
                self.status = AccountStatus::Active;
                let (email, hash) = match &e.pii {
                    Personal::Plain(p) => (
                        Personal::Plain(p.email.clone()),
                        Personal::Plain(p.password_hash.clone()),
                    ),
                    Personal::Erased => (Personal::Erased, Personal::Erased),
                    Personal::Unopened => (Personal::Unopened, Personal::Unopened),
                };
                self.email = email;
                self.password_hash = hash;
            }
            AccountEvent::AccountVerificationIssued(e) => {
                self.verification = Some(PendingVerification {
                    token_hash: e.token_hash,
                    expires_at: e.expires_at,
                });
                self.verification_issued_at = Some(e.issued_at);
            }
            AccountEvent::AccountEmailVerified(e) => {
                self.verified = true;
                self.verified_at = Some(e.at);
                self.first_verified_at.get_or_insert(e.at);
                self.verification = None;
                self.used_token = Some(e.token_hash);
            }
            AccountEvent::AccountPasswordChanged(e) => {
                self.password_hash = map_personal(&e.pii, |p| p.password_hash.clone());
                self.password_reset = None;
            }
            AccountEvent::AccountEmailChanged(e) => {
                self.email = map_personal(&e.pii, |p| p.email.clone());
                self.verified = false;
                self.verified_at = None;
                self.verification = None;
                self.used_token = None;
                // A reset link went to the address that is no longer the account's.
                self.password_reset = None;
            }
            AccountEvent::AccountObjectionSet(e) => self.objection = e.object,
            AccountEvent::AccountDeletionRequested(e) => {
                self.status = AccountStatus::DeletionPending {
                    requested_at: e.at,
                    erase_due_at: e.erase_due_at,
                };
            }
            AccountEvent::AccountDeletionWithdrawn(_) => self.status = AccountStatus::Active,
            AccountEvent::ApiKeyCreated(e) => self.api_keys.push(ApiKey {
                id: e.key_id,
                hash: e.key_hash,
                prefix: e.prefix.clone(),
                scope: e.scope,
                label: e.label.clone(),
                allowed_ips: e.allowed_ips.clone(),
                created_at: e.at,
                revoked_at: None,
            }),
            AccountEvent::ApiKeyRevoked(e) => {
                if let Some(key) = self.api_keys.iter_mut().find(|k| k.id == e.key_id) {
                    key.revoked_at.get_or_insert(e.at);
                }
            }
            AccountEvent::WebhookEndpointSet(e) => {
                self.webhook = Some(WebhookEndpoint {
                    pii: e.pii.clone(),
                    set_at: e.at,
                })
            }
            AccountEvent::WebhookEndpointRemoved(_) => self.webhook = None,
            AccountEvent::AccountErased(e) => {
                self.erased_at = Some(e.at);
                self.two_factor = TwoFactor::Off;
                self.email = Personal::Erased;
                self.password_hash = Personal::Erased;
                self.webhook = None;
                self.verification = None;
                self.password_reset = None;
                self.email_undos.clear();
            }
            AccountEvent::PasswordResetIssued(e) => {
                self.password_reset = Some(PendingVerification {
                    token_hash: e.token_hash,
                    expires_at: e.expires_at,
                });
            }
            AccountEvent::AccountPasswordReset(e) => {
                self.password_hash = map_personal(&e.pii, |p| p.password_hash.clone());
                self.password_reset = None;
                self.used_recovery_token = Some(e.token_hash);
            }
            AccountEvent::EmailChangeUndoIssued(e) => {
                self.email_undos.retain(|u| u.expires_at > e.issued_at);
                self.email_undos.push(PendingEmailUndo {
                    token_hash: e.token_hash,
                    issued_at: e.issued_at,
                    expires_at: e.expires_at,
                    email: map_personal(&e.pii, |p| p.email.clone()),
                });
            }
            AccountEvent::EmailChangeUndone(e) => {
                // The address was set back by the change appended just before.
                self.password_hash = map_personal(&e.pii, |p| p.password_hash.clone());
                self.verified = true;
                self.verified_at = Some(e.at);
                self.first_verified_at.get_or_insert(e.at);
                self.email_undos.clear();
                self.password_reset = None;
                self.used_recovery_token = Some(e.token_hash);
            }
            AccountEvent::TwoFactorEnrolmentStarted(e) => {
                self.two_factor = TwoFactor::Pending {
                    secret: e.pii.clone(),
                    started_at: e.at,
                };
            }
            AccountEvent::TwoFactorEnabled(e) => {
                let secret = match std::mem::take(&mut self.two_factor) {
                    TwoFactor::Pending { secret, .. } | TwoFactor::On { secret, .. } => secret,
                    TwoFactor::Off => Personal::Erased,
                };
                self.two_factor = TwoFactor::On {
                    secret,
                    recovery_codes: e
                        .recovery_code_hashes
                        .iter()
                        .map(|hash| RecoveryCode {
                            hash: *hash,
                            used_at: None,
                        })
                        .collect(),
                    enabled_at: e.at,
                };
                self.last_totp_step = self.last_totp_step.max(Some(e.step));
            }
            AccountEvent::TwoFactorStepUsed(e) => {
                self.last_totp_step = self.last_totp_step.max(Some(e.step));
            }
            AccountEvent::RecoveryCodeUsed(e) => {
                if let TwoFactor::On { recovery_codes, .. } = &mut self.two_factor {
                    for code in recovery_codes.iter_mut().filter(|c| c.hash == e.code_hash) {
                        code.used_at.get_or_insert(e.at);
                    }
                }
            }
            AccountEvent::TwoFactorDisabled(_) => self.two_factor = TwoFactor::Off,
        }
    }
}

fn map_personal<T, U>(p: &Personal<T>, f: impl FnOnce(&T) -> U) -> Personal<U> {
    match p {
        Personal::Plain(t) => Personal::Plain(f(t)),
        Personal::Erased => Personal::Erased,
        Personal::Unopened => Personal::Unopened,
    }
}

/// Who holds an e-mail address, folded from its reservation stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmailReservation {
    pub holder: Option<AccountId>,
}

impl Aggregate for EmailReservation {
    type Event = EmailReservationEvent;

    fn apply(&mut self, event: &EmailReservationEvent) {
        match event {
            EmailReservationEvent::EmailReserved(e) => self.holder = Some(e.account),
            EmailReservationEvent::EmailReleased(e) => {
                if self.holder == Some(e.account) {
                    self.holder = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::account::fixtures::*;
    use crate::domain::account::*;
    use crate::domain::aggregate::given;

    #[test]
    fn erased_personal_data_reads_as_erased() {
        let mut events = registered();
        if let AccountEvent::AccountRegistered(e) = &mut events[0] {
            e.pii = Personal::Erased;
        }
        events.push(deletion_requested(t0()));
        let state = given::<Account>(events.clone()).state().clone();
        assert!(state.is_erased());
        assert_eq!(state.view().unwrap().status, AccountViewStatus::Erased);
        assert_eq!(state.view().unwrap().email, Personal::Erased);
        assert_eq!(check_login(&state), Err(AccountError::AccountDisabled));
        given::<Account>(events.clone())
            .when(|s| decide_withdraw_deletion(s, t0()))
            .then_err(AccountError::AccountErased);
        given::<Account>(events)
            .when(|s| decide_change_password(s, HASH, t0()))
            .then_err(AccountError::AccountErased);
    }

    #[test]
    fn an_erased_webhook_reads_as_erased() {
        let mut events = verified();
        events.push(AccountEvent::WebhookEndpointSet(WebhookEndpointSet {
            account: id(),
            at: t0(),
            pii: Personal::Erased,
        }));
        let state = given::<Account>(events).state().clone();
        assert_eq!(state.webhook.unwrap().pii, Personal::Erased);
    }
}
