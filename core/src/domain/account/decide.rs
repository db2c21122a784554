//! The pure decisions over an account and an e-mail reservation:
//! `(&state, …, now) -> Result<Vec<Event>, AccountError>`, and the checks of a
//! presented API key and of a login.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};

use super::api_key::{ip_allowed, ApiKeySettings};
use super::credentials::{digests_equal, Email, Secret};
use super::events::*;
use super::state::{
    Account, AccountStatus, ApiKey, EmailReservation, PendingEmailUndo, PendingVerification,
    TwoFactor,
};
use super::webhook_url::WebhookUrl;
use super::{
    AccountError, Sha256Hash, DELETION_GRACE_DAYS, EMAIL_UNDO_TTL_DAYS, MAX_LIVE_API_KEYS,
    MAX_PENDING_EMAIL_UNDOS, PASSWORD_RESET_TTL_MINUTES, VERIFICATION_RESEND_MINUTES,
};
use crate::domain::codec::Personal;
use crate::domain::ids::{AccountId, ApiKeyId};
use crate::domain::money::Micros;

/// A new verification token, by its hash, and how long it is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewVerification {
    pub token_hash: Sha256Hash,
    pub ttl: Duration,
}

impl NewVerification {
    fn issued(&self, now: DateTime<Utc>) -> AccountEvent {
        AccountEvent::AccountVerificationIssued(AccountVerificationIssued {
            token_hash: self.token_hash,
            issued_at: now,
            expires_at: now + self.ttl,
        })
    }
}

/// Moves `account`'s reservation of its address to the newest lookup key:
/// `newest` is the reservation under it, `older` those under the keys a
/// rotation is about to destroy. Nothing to do for an erased account, one that
/// holds the newest reservation already, or one whose address no older key
/// reserves for it (it gave the address up); [`AccountError::EmailTaken`] if
/// another account holds the newest one.
pub fn decide_move_reservation(
    state: &Account,
    account: AccountId,
    newest: &EmailReservation,
    older: &[EmailReservation],
    now: DateTime<Utc>,
) -> Result<Vec<EmailReservationEvent>, AccountError> {
    let holds_older = older.iter().any(|r| r.holder == Some(account));
    if state.is_erased() || !holds_older {
        return Ok(vec![]);
    }
    decide_reserve_email(newest, account, now)
}

/// Reserves an address for `account` (nothing to do if it already holds it).
pub fn decide_reserve_email(
    state: &EmailReservation,
    account: AccountId,
    now: DateTime<Utc>,
) -> Result<Vec<EmailReservationEvent>, AccountError> {
    match state.holder {
        Some(holder) if holder == account => Ok(vec![]),
        Some(_) => Err(AccountError::EmailTaken),
        None => Ok(vec![EmailReservationEvent::EmailReserved(EmailReserved {
            account,
            at: now,
        })]),
    }
}

/// Releases an address `account` holds (nothing to do if it does not hold it).
pub fn decide_release_email(
    state: &EmailReservation,
    account: AccountId,
    now: DateTime<Utc>,
) -> Result<Vec<EmailReservationEvent>, AccountError> {
    if state.holder == Some(account) {
        Ok(vec![EmailReservationEvent::EmailReleased(EmailReleased {
            account,
            at: now,
        })])
    } else {
        Ok(vec![])
    }
}

/// Registers a new account with a normalized address and the bcrypt hash of its
/// password (computed beforehand, off the async runtime), and issues the first
/// verification token. The address's reservation is decided separately
/// ([`decide_reserve_email`]) and appended atomically with these events.
pub fn decide_register(
    state: &Account,
    account: AccountId,
    email: &Email,
    password_hash: &str,
    verification: NewVerification,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    if state.id.is_some() {
        return Err(AccountError::AlreadyRegistered);
    }
    Ok(vec![
        AccountEvent::AccountRegistered(AccountRegistered {
            account,
            registered_at: now,
            pii: Personal::Plain(RegisteredPii {
                email: email.as_str().to_owned(),
                password_hash: password_hash.to_owned(),
            }),
        }),
        verification.issued(now),
    ])
}

/// Issues a new verification token; earlier ones stop working.
pub fn decide_issue_verification(
    state: &Account,
    verification: NewVerification,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    state.enabled()?;
    if state.verified {
        return Err(AccountError::AlreadyVerified);
    }
    Ok(vec![verification.issued(now)])
}

/// Issues a new verification token because someone asked for the mail again
/// (the first was lost): as [`decide_issue_verification`], at most one per
/// [`VERIFICATION_RESEND_MINUTES`], which bounds what anyone can make the
/// address receive.
pub fn decide_resend_verification(
    state: &Account,
    verification: NewVerification,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let resend_from = state
        .verification_issued_at
        .map(|at| at + Duration::minutes(VERIFICATION_RESEND_MINUTES));
    if state.enabled().is_ok() && !state.verified && resend_from.is_some_and(|from| now < from) {
        return Err(AccountError::VerificationRecentlySent);
    }
    decide_issue_verification(state, verification, now)
}

/// Verifies the address with the token whose hash is `token_hash`: only the
/// latest token issued, once, before it expires.
pub fn decide_verify_email(
    state: &Account,
    token_hash: &Sha256Hash,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    state.enabled()?;
    match state.verification {
        Some(pending) if digests_equal(&pending.token_hash, token_hash) => {
            if now >= pending.expires_at {
                Err(AccountError::VerificationTokenExpired)
            } else {
                Ok(vec![AccountEvent::AccountEmailVerified(
                    AccountEmailVerified {
                        token_hash: *token_hash,
                        at: now,
                    },
                )])
            }
        }
        _ => match state.used_token {
            Some(used) if digests_equal(&used, token_hash) => {
                Err(AccountError::VerificationTokenUsed)
            }
            _ => Err(AccountError::VerificationTokenInvalid),
        },
    }
}

/// Changes the password hash. The service checked the old password against
/// `state.password_hash` and hashed the new one, both off the async runtime.
pub fn decide_change_password(
    state: &Account,
    new_password_hash: &str,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let account = state.enabled()?;
    Ok(vec![AccountEvent::AccountPasswordChanged(
        AccountPasswordChanged {
            account,
            at: now,
            pii: Personal::Plain(PasswordPii {
                password_hash: new_password_hash.to_owned(),
            }),
        },
    )])
}

/// Corrects the address: it must be verified again, so a new token is issued
/// with the change. The reservations move in the same append
/// ([`decide_release_email`] on the old address's stream, [`decide_reserve_email`]
/// on the new one's), unless both have one lookup form (a change of case only).
pub fn decide_change_email(
    state: &Account,
    new_email: &Email,
    verification: NewVerification,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let account = state.enabled()?;
    if state.email.plain().map(String::as_str) == Some(new_email.as_str()) {
        return Err(AccountError::EmailUnchanged);
    }
    Ok(vec![
        AccountEvent::AccountEmailChanged(AccountEmailChanged {
            account,
            at: now,
            pii: Personal::Plain(EmailPii {
                email: new_email.as_str().to_owned(),
            }),
        }),
        verification.issued(now),
    ])
}

/// Opens the undo of an e-mail change, decided on the state before the change
/// and appended with it: a token for the old address, valid
/// [`EMAIL_UNDO_TTL_DAYS`] days, that carries the old address (sealed). At
/// most [`MAX_PENDING_EMAIL_UNDOS`] undos may be open at once
/// ([`AccountError::TooManyEmailChanges`]), so that a run of changes cannot
/// push the owner's undo out.
pub fn decide_issue_email_undo(
    state: &Account,
    token_hash: Sha256Hash,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let account = state.enabled()?;
    let old_email = state.email.plain().ok_or(AccountError::AccountErased)?;
    let open = state
        .email_undos
        .iter()
        .filter(|u| u.expires_at > now)
        .count();
    if open >= MAX_PENDING_EMAIL_UNDOS {
        return Err(AccountError::TooManyEmailChanges);
    }
    Ok(vec![AccountEvent::EmailChangeUndoIssued(
        EmailChangeUndoIssued {
            account,
            token_hash,
            issued_at: now,
            expires_at: now + Duration::days(EMAIL_UNDO_TTL_DAYS),
            pii: Personal::Plain(EmailPii {
                email: old_email.clone(),
            }),
        },
    )])
}

/// The address an e-mail undo token restores: a token of an open undo, before
/// it expires. Every open undo is compared, in constant time each. The account
/// may be disabled (a deletion requested by whoever took it over) but not
/// erased.
pub fn email_undo_target(
    state: &Account,
    token_hash: &Sha256Hash,
    now: DateTime<Utc>,
) -> Result<String, AccountError> {
    let undo = pending_undo(state, token_hash, now)?;
    Ok(undo
        .email
        .plain()
        .ok_or(AccountError::AccountErased)?
        .clone())
}

/// The undo a token names, while it can still be used.
fn pending_undo<'a>(
    state: &'a Account,
    token_hash: &Sha256Hash,
    now: DateTime<Utc>,
) -> Result<&'a PendingEmailUndo, AccountError> {
    state.existing()?;
    let mut found = None;
    for undo in &state.email_undos {
        if digests_equal(&undo.token_hash, token_hash) {
            found = Some(undo);
        }
    }
    match found {
        Some(undo) if now >= undo.expires_at => Err(AccountError::RecoveryTokenExpired),
        Some(undo) => Ok(undo),
        None => Err(spent_or_invalid(state, token_hash)),
    }
}

/// Undoes an e-mail change with the token mailed to the old address: the
/// address is that one again and counts as verified, the password is the new
/// one given with the undo (whoever changed the address may know the old
/// one), and every other open undo and reset ends; the reservations move in
/// the same append, as for a change. What whoever changed it may have set up
/// since to keep a hold on the account goes too: API keys created since the change are revoked, a webhook
/// set since is removed, and two-factor authentication turned on since is
/// turned off (its codes would lock the owner out).
pub fn decide_undo_email_change(
    state: &Account,
    token_hash: &Sha256Hash,
    new_password_hash: &str,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let undo = pending_undo(state, token_hash, now)?;
    let (since, old_email) = (undo.issued_at, email_undo_target(state, token_hash, now)?);
    let account = state.existing()?;
    let mut events = Vec::with_capacity(4);
    if state.email.plain() != Some(&old_email) {
        events.push(AccountEvent::AccountEmailChanged(AccountEmailChanged {
            account,
            at: now,
            pii: Personal::Plain(EmailPii { email: old_email }),
        }));
    }
    let keys_since = state
        .api_keys
        .iter()
        .filter(|k| k.revoked_at.is_none() && k.created_at >= since);
    events.extend(keys_since.map(|k| {
        AccountEvent::ApiKeyRevoked(ApiKeyRevoked {
            key_id: k.id,
            at: now,
        })
    }));
    if state.webhook.as_ref().is_some_and(|w| w.set_at >= since) {
        events.push(AccountEvent::WebhookEndpointRemoved(
            WebhookEndpointRemoved { at: now },
        ));
    }
    if matches!(state.two_factor, TwoFactor::On { enabled_at, .. } if enabled_at >= since) {
        events.push(AccountEvent::TwoFactorDisabled(TwoFactorDisabled {
            at: now,
        }));
    }
    events.push(AccountEvent::EmailChangeUndone(EmailChangeUndone {
        account,
        token_hash: *token_hash,
        at: now,
        pii: Personal::Plain(PasswordPii {
            password_hash: new_password_hash.to_owned(),
        }),
    }));
    Ok(events)
}

/// Issues a password-reset token for the account's address, valid
/// [`PASSWORD_RESET_TTL_MINUTES`] minutes; an earlier one stops working. Only
/// an enabled account gets one (the caller answers every request alike).
pub fn decide_issue_password_reset(
    state: &Account,
    token_hash: Sha256Hash,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    state.enabled()?;
    Ok(vec![AccountEvent::PasswordResetIssued(
        PasswordResetIssued {
            token_hash,
            issued_at: now,
            expires_at: now + Duration::minutes(PASSWORD_RESET_TTL_MINUTES),
        },
    )])
}

/// Checks a reset token: the latest issued, once, before it expires.
pub fn check_password_reset(
    state: &Account,
    token_hash: &Sha256Hash,
    now: DateTime<Utc>,
) -> Result<AccountId, AccountError> {
    let account = state.enabled()?;
    match state.password_reset {
        Some(PendingVerification {
            token_hash: pending,
            expires_at,
        }) if digests_equal(&pending, token_hash) => {
            if now >= expires_at {
                Err(AccountError::RecoveryTokenExpired)
            } else {
                Ok(account)
            }
        }
        _ => Err(spent_or_invalid(state, token_hash)),
    }
}

/// Sets the password with a reset token ([`check_password_reset`]); the new
/// password was hashed beforehand, off the async runtime. The token is spent.
pub fn decide_reset_password(
    state: &Account,
    token_hash: &Sha256Hash,
    new_password_hash: &str,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let account = check_password_reset(state, token_hash, now)?;
    Ok(vec![AccountEvent::AccountPasswordReset(
        AccountPasswordReset {
            account,
            token_hash: *token_hash,
            at: now,
            pii: Personal::Plain(PasswordPii {
                password_hash: new_password_hash.to_owned(),
            }),
        },
    )])
}

fn spent_or_invalid(state: &Account, token_hash: &Sha256Hash) -> AccountError {
    match state.used_recovery_token {
        Some(used) if digests_equal(&used, token_hash) => AccountError::RecoveryTokenUsed,
        _ => AccountError::RecoveryTokenInvalid,
    }
}

/// Sets or lifts the objection to non-essential processing; nothing to do if it
/// is already so.
pub fn decide_set_objection(
    state: &Account,
    object: bool,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    state.enabled()?;
    if state.objection == object {
        return Ok(vec![]);
    }
    Ok(vec![AccountEvent::AccountObjectionSet(
        AccountObjectionSet { object, at: now },
    )])
}

/// Requests the deletion: the account is disabled at once and its data is due
/// for erasure [`DELETION_GRACE_DAYS`] days later. Refused while the account has
/// active orders (`has_active_orders`, as the order side reports it), and while
/// the wallet has money `available` that the customer did not confirm as
/// forfeited (`confirm_forfeit`): at the erasure it moves to unclaimed
/// balances. The amount is recorded with the request.
pub fn decide_request_deletion(
    state: &Account,
    has_active_orders: bool,
    available: Micros,
    confirm_forfeit: bool,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    state.existing()?;
    if matches!(state.status, AccountStatus::DeletionPending { .. }) {
        return Err(AccountError::DeletionAlreadyRequested);
    }
    if has_active_orders {
        return Err(AccountError::ActiveOrders);
    }
    if available.is_positive() && !confirm_forfeit {
        return Err(AccountError::BalanceNotForfeited { available });
    }
    Ok(vec![AccountEvent::AccountDeletionRequested(
        AccountDeletionRequested {
            at: now,
            erase_due_at: now + Duration::days(DELETION_GRACE_DAYS),
            forfeit_balance: Some(available),
        },
    )])
}

/// Withdraws a pending deletion, strictly before its erasure is due.
pub fn decide_withdraw_deletion(
    state: &Account,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    state.existing()?;
    match state.status {
        AccountStatus::DeletionPending { erase_due_at, .. } if now < erase_due_at => {
            Ok(vec![AccountEvent::AccountDeletionWithdrawn(
                AccountDeletionWithdrawn { at: now },
            )])
        }
        AccountStatus::DeletionPending { .. } => Err(AccountError::DeletionWindowOver),
        _ => Err(AccountError::NoDeletionPending),
    }
}

/// Records the erasure of the account's personal data, once: due when its
/// deletion is pending and `now` is at or after `erase_due_at`, or when its
/// address was never verified and `now` is at or after
/// [`Account::lapses_at`] (nothing of it can be financial: it could not
/// deposit or order). The caller erases the account's vault subject before
/// appending; an account whose subject is already erased but whose erasure is
/// not recorded yet (the append did not land) is recorded now.
pub fn decide_erase_account(
    state: &Account,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    if state.id.is_none() {
        return Err(AccountError::AccountNotFound);
    }
    if state.erased_at.is_some() {
        return Err(AccountError::AccountErased);
    }
    let lapsed = state.lapses_at().is_some_and(|at| now >= at);
    match state.status {
        AccountStatus::DeletionPending { erase_due_at, .. } if now >= erase_due_at => {
            Ok(vec![AccountEvent::AccountErased(AccountErased { at: now })])
        }
        _ if lapsed => Ok(vec![AccountEvent::AccountErased(AccountErased { at: now })]),
        AccountStatus::DeletionPending { .. } => Err(AccountError::ErasureNotDue),
        _ if state.lapses_at().is_some() => Err(AccountError::ErasureNotDue),
        _ => Err(AccountError::NoDeletionPending),
    }
}

/// Creates an API key (made by [`make_api_key`]); at most [`MAX_LIVE_API_KEYS`]
/// unrevoked keys at once.
///
/// [`make_api_key`]: super::make_api_key
pub fn decide_create_api_key(
    state: &Account,
    key_id: ApiKeyId,
    key_hash: Sha256Hash,
    prefix: &str,
    settings: &ApiKeySettings,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    state.enabled()?;
    if state.live_api_keys() >= MAX_LIVE_API_KEYS {
        return Err(AccountError::TooManyApiKeys);
    }
    Ok(vec![AccountEvent::ApiKeyCreated(ApiKeyCreated {
        key_id,
        key_hash,
        prefix: prefix.to_owned(),
        scope: settings.scope,
        label: settings.label.clone(),
        allowed_ips: settings.allowed_ips.clone(),
        at: now,
    })])
}

/// Revokes a key. Revoking a key that is unknown or already revoked is
/// [`AccountError::ApiKeyNotFound`] (and changes nothing), so a caller learns
/// the key was already gone. Allowed on a disabled account: it only takes
/// access away.
pub fn decide_revoke_api_key(
    state: &Account,
    key_id: ApiKeyId,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    state.existing()?;
    match state.api_keys.iter().find(|k| k.id == key_id) {
        Some(key) if key.revoked_at.is_none() => {
            Ok(vec![AccountEvent::ApiKeyRevoked(ApiKeyRevoked {
                key_id,
                at: now,
            })])
        }
        _ => Err(AccountError::ApiKeyNotFound),
    }
}

/// Sets the webhook endpoint, or replaces it (a new URL, or the same one with a
/// new secret: a rotation). The secret is made by [`make_webhook_secret`].
///
/// [`make_webhook_secret`]: super::make_webhook_secret
pub fn decide_set_webhook(
    state: &Account,
    url: &WebhookUrl,
    secret: &Secret,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let account = state.trusted()?;
    Ok(vec![AccountEvent::WebhookEndpointSet(WebhookEndpointSet {
        account,
        at: now,
        pii: Personal::Plain(WebhookEndpointPii {
            url: url.as_str().to_owned(),
            secret: secret.expose().to_owned(),
        }),
    })])
}

/// Removes the webhook endpoint; nothing to do if there is none. Allowed on a
/// disabled account: it only stops deliveries.
pub fn decide_remove_webhook(
    state: &Account,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    state.existing()?;
    if state.webhook.is_none() {
        return Ok(vec![]);
    }
    Ok(vec![AccountEvent::WebhookEndpointRemoved(
        WebhookEndpointRemoved { at: now },
    )])
}

/// The live key whose hash is `key_hash`, on an enabled account, used from
/// `client_ip`. Unknown and revoked keys are [`AccountError::InvalidCredentials`];
/// a live key used from outside its allow-list is
/// [`AccountError::ApiKeyIpNotAllowed`]; a valid key of a disabled (or erased)
/// account is [`AccountError::AccountDisabled`]. Every stored hash is
/// compared, in constant time each.
pub fn check_api_key<'a>(
    state: &'a Account,
    key_hash: &Sha256Hash,
    client_ip: IpAddr,
) -> Result<&'a ApiKey, AccountError> {
    let mut found = None;
    for key in &state.api_keys {
        if digests_equal(&key.hash, key_hash) && key.revoked_at.is_none() {
            found = Some(key);
        }
    }
    let key = found.ok_or(AccountError::InvalidCredentials)?;
    // Before the account's status: a caller outside the list learns nothing
    // more about the account.
    if !ip_allowed(&key.allowed_ips, client_ip) {
        return Err(AccountError::ApiKeyIpNotAllowed);
    }
    match state.enabled() {
        Ok(_) => Ok(key),
        // A deletion pending: the key is right but stops working until the
        // request is withdrawn, and its holder is told so.
        Err(AccountError::AccountDisabled) => Err(AccountError::AccountDisabled),
        Err(_) => Err(AccountError::InvalidCredentials),
    }
}

/// After the password was checked: whether the account may log in. A disabled
/// (or erased) account is [`AccountError::AccountDisabled`]. Login is allowed
/// before the address is verified; the caller sees [`Account::verified`].
pub fn check_login(state: &Account) -> Result<AccountId, AccountError> {
    match state.enabled() {
        Ok(id) => Ok(id),
        Err(AccountError::AccountNotFound) => Err(AccountError::InvalidCredentials),
        Err(_) => Err(AccountError::AccountDisabled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::account::fixtures::*;
    use crate::domain::account::*;
    use crate::domain::aggregate::{given, Aggregate};
    use uuid::Uuid;

    fn key_created(n: u128) -> AccountEvent {
        AccountEvent::ApiKeyCreated(ApiKeyCreated {
            key_id: ApiKeyId(Uuid::from_u128(n)),
            key_hash: [n as u8; 32],
            prefix: format!("pfx{n}"),
            scope: ApiKeyScope::Orders,
            label: None,
            allowed_ips: vec![],
            at: t0(),
        })
    }

    fn webhook_set(url: &str, secret: &str) -> AccountEvent {
        AccountEvent::WebhookEndpointSet(WebhookEndpointSet {
            account: id(),
            at: t0(),
            pii: Personal::Plain(WebhookEndpointPii {
                url: url.into(),
                secret: secret.into(),
            }),
        })
    }

    #[test]
    fn register_issues_a_token_and_a_second_registration_is_refused() {
        let state = given::<Account>(vec![])
            .when(|s| decide_register(s, id(), &email("alice@example.com"), HASH, token(1), t0()))
            .then(vec![
                AccountEvent::AccountRegistered(AccountRegistered {
                    account: id(),
                    registered_at: t0(),
                    pii: Personal::Plain(RegisteredPii {
                        email: "alice@example.com".into(),
                        password_hash: HASH.into(),
                    }),
                }),
                AccountEvent::AccountVerificationIssued(AccountVerificationIssued {
                    token_hash: [1; 32],
                    issued_at: t0(),
                    expires_at: t0() + Duration::hours(24),
                }),
            ]);
        assert_eq!(state.status, AccountStatus::Active);
        assert!(!state.verified);
        assert_eq!(state.email.plain().unwrap(), "alice@example.com");
        assert_eq!(check_login(&state), Ok(id()));

        given::<Account>(registered())
            .when(|s| decide_register(s, id(), &email("bob@example.com"), HASH, token(2), t0()))
            .then_err(AccountError::AlreadyRegistered);
    }

    #[test]
    fn verification_token_right_wrong_expired_reused() {
        let at = t0() + Duration::hours(23);
        let state = given::<Account>(registered())
            .when(|s| decide_verify_email(s, &[1; 32], at))
            .then(vec![AccountEvent::AccountEmailVerified(
                AccountEmailVerified {
                    token_hash: [1; 32],
                    at,
                },
            )]);
        assert!(state.verified);

        // Used twice.
        given::<Account>(verified())
            .when(|s| decide_verify_email(s, &[1; 32], at))
            .then_err(AccountError::VerificationTokenUsed);
        // Wrong.
        given::<Account>(registered())
            .when(|s| decide_verify_email(s, &[2; 32], at))
            .then_err(AccountError::VerificationTokenInvalid);
        // Expired: at exactly 24 hours.
        given::<Account>(registered())
            .when(|s| decide_verify_email(s, &[1; 32], t0() + Duration::hours(24)))
            .then_err(AccountError::VerificationTokenExpired);
        // Superseded by a newer token.
        let mut events = registered();
        let reissued =
            decide_issue_verification(&Account::from_events(&registered()), token(3), at);
        events.extend(reissued.unwrap());
        given::<Account>(events.clone())
            .when(|s| decide_verify_email(s, &[1; 32], at))
            .then_err(AccountError::VerificationTokenInvalid);
        given::<Account>(events)
            .when(|s| decide_verify_email(s, &[3; 32], at + Duration::hours(23)))
            .result()
            .unwrap();
        // No account.
        given::<Account>(vec![])
            .when(|s| decide_verify_email(s, &[1; 32], at))
            .then_err(AccountError::AccountNotFound);
        // Disabled.
        let mut events = registered();
        events.push(deletion_requested(t0()));
        given::<Account>(events)
            .when(|s| decide_verify_email(s, &[1; 32], at))
            .then_err(AccountError::AccountDisabled);
    }

    #[test]
    fn issue_verification() {
        let at = t0() + Duration::hours(30);
        given::<Account>(registered())
            .when(|s| decide_issue_verification(s, token(2), at))
            .then(vec![AccountEvent::AccountVerificationIssued(
                AccountVerificationIssued {
                    token_hash: [2; 32],
                    issued_at: at,
                    expires_at: at + Duration::hours(24),
                },
            )]);
        given::<Account>(verified())
            .when(|s| decide_issue_verification(s, token(2), at))
            .then_err(AccountError::AlreadyVerified);
        given::<Account>(vec![])
            .when(|s| decide_issue_verification(s, token(2), at))
            .then_err(AccountError::AccountNotFound);
    }

    #[test]
    fn change_password() {
        let new_hash = "$2b$04$0000000000000000000000000000000000000000000000000000";
        let state = given::<Account>(verified())
            .when(|s| decide_change_password(s, new_hash, t0()))
            .then(vec![AccountEvent::AccountPasswordChanged(
                AccountPasswordChanged {
                    account: id(),
                    at: t0(),
                    pii: Personal::Plain(PasswordPii {
                        password_hash: new_hash.into(),
                    }),
                },
            )]);
        assert_eq!(state.password_hash.plain().unwrap(), new_hash);
        assert!(state.verified, "a password change keeps the verification");
        let mut events = verified();
        events.push(deletion_requested(t0()));
        given::<Account>(events)
            .when(|s| decide_change_password(s, new_hash, t0()))
            .then_err(AccountError::AccountDisabled);
    }

    #[test]
    fn change_email_needs_reverification_and_old_tokens_stop_working() {
        let state = given::<Account>(verified())
            .when(|s| decide_change_email(s, &email("alice@new.example"), token(5), t0()))
            .then(vec![
                AccountEvent::AccountEmailChanged(AccountEmailChanged {
                    account: id(),
                    at: t0(),
                    pii: Personal::Plain(EmailPii {
                        email: "alice@new.example".into(),
                    }),
                }),
                AccountEvent::AccountVerificationIssued(AccountVerificationIssued {
                    token_hash: [5; 32],
                    issued_at: t0(),
                    expires_at: t0() + Duration::hours(24),
                }),
            ]);
        assert!(!state.verified);
        assert_eq!(state.email.plain().unwrap(), "alice@new.example");
        assert_eq!(
            decide_verify_email(&state, &[1; 32], t0()),
            Err(AccountError::VerificationTokenInvalid)
        );
        decide_verify_email(&state, &[5; 32], t0()).unwrap();

        given::<Account>(verified())
            .when(|s| decide_change_email(s, &email("alice@EXAMPLE.com"), token(5), t0()))
            .then_err(AccountError::EmailUnchanged);
        // A change of case in the local part is a correction.
        given::<Account>(verified())
            .when(|s| decide_change_email(s, &email("Alice@example.com"), token(5), t0()))
            .result()
            .unwrap();
    }

    #[test]
    fn reservations() {
        let other = AccountId(Uuid::from_u128(99));
        let reserved = given::<EmailReservation>(vec![])
            .when(|s| decide_reserve_email(s, id(), t0()))
            .then(vec![EmailReservationEvent::EmailReserved(EmailReserved {
                account: id(),
                at: t0(),
            })]);
        assert_eq!(reserved.holder, Some(id()));
        let held = vec![EmailReservationEvent::EmailReserved(EmailReserved {
            account: id(),
            at: t0(),
        })];
        given::<EmailReservation>(held.clone())
            .when(|s| decide_reserve_email(s, other, t0()))
            .then_err(AccountError::EmailTaken);
        given::<EmailReservation>(held.clone())
            .when(|s| decide_reserve_email(s, id(), t0()))
            .then(vec![]);
        given::<EmailReservation>(held.clone())
            .when(|s| decide_release_email(s, other, t0()))
            .then(vec![]);
        let released = given::<EmailReservation>(held.clone())
            .when(|s| decide_release_email(s, id(), t0()))
            .then(vec![EmailReservationEvent::EmailReleased(EmailReleased {
                account: id(),
                at: t0(),
            })]);
        assert_eq!(released.holder, None);
        let mut events = held;
        events.push(EmailReservationEvent::EmailReleased(EmailReleased {
            account: id(),
            at: t0(),
        }));
        given::<EmailReservation>(events)
            .when(|s| decide_reserve_email(s, other, t0()))
            .then(vec![EmailReservationEvent::EmailReserved(EmailReserved {
                account: other,
                at: t0(),
            })]);
    }

    #[test]
    fn a_rotation_moves_a_live_reservation_to_the_newest_key() {
        let other = AccountId(Uuid::from_u128(99));
        let held = |account| {
            given::<EmailReservation>(vec![EmailReservationEvent::EmailReserved(EmailReserved {
                account,
                at: t0(),
            })])
            .state()
            .clone()
        };
        let free = EmailReservation::default();
        let live = given::<Account>(verified()).state().clone();
        // Given a live account holding its address under the older key only,
        // when the rotation moves it, then the newest key reserves it.
        assert_eq!(
            decide_move_reservation(&live, id(), &free, &[held(id())], t0()),
            Ok(vec![EmailReservationEvent::EmailReserved(EmailReserved {
                account: id(),
                at: t0(),
            })])
        );
        // Already moved: nothing to do.
        assert_eq!(
            decide_move_reservation(&live, id(), &held(id()), &[held(id())], t0()),
            Ok(vec![])
        );
        // An address it gave up stays free.
        assert_eq!(
            decide_move_reservation(&live, id(), &free, std::slice::from_ref(&free), t0()),
            Ok(vec![])
        );
        // Another account holds the newest reservation.
        assert_eq!(
            decide_move_reservation(&live, id(), &held(other), &[held(id())], t0()),
            Err(AccountError::EmailTaken)
        );
        // An erased account's address is never carried over.
        let mut erased_events = verified();
        erased_events.push(AccountEvent::AccountErased(AccountErased { at: t0() }));
        let erased = given::<Account>(erased_events).state().clone();
        assert!(erased.is_erased());
        assert_eq!(
            decide_move_reservation(&erased, id(), &free, &[held(id())], t0()),
            Ok(vec![])
        );
    }

    #[test]
    fn objection() {
        let state = given::<Account>(registered())
            .when(|s| decide_set_objection(s, true, t0()))
            .then(vec![AccountEvent::AccountObjectionSet(
                AccountObjectionSet {
                    object: true,
                    at: t0(),
                },
            )]);
        assert!(state.objection);
        given::<Account>(registered())
            .when(|s| decide_set_objection(s, false, t0()))
            .then(vec![]);
        given::<Account>(vec![])
            .when(|s| decide_set_objection(s, true, t0()))
            .then_err(AccountError::AccountNotFound);
    }

    #[test]
    fn deletion_disables_at_once_and_is_refused_with_active_orders() {
        let state = given::<Account>(verified())
            .when(|s| decide_request_deletion(s, false, Micros(0), false, t0()))
            .then(vec![deletion_requested(t0())]);
        assert_eq!(
            state.status,
            AccountStatus::DeletionPending {
                requested_at: t0(),
                erase_due_at: t0() + Duration::days(30)
            }
        );
        assert_eq!(check_login(&state), Err(AccountError::AccountDisabled));
        assert_eq!(
            state.view().unwrap().deletion_due_at,
            Some(t0() + Duration::days(30))
        );

        given::<Account>(verified())
            .when(|s| decide_request_deletion(s, true, Micros(0), false, t0()))
            .then_err(AccountError::ActiveOrders);
        let mut events = verified();
        events.push(deletion_requested(t0()));
        given::<Account>(events)
            .when(|s| decide_request_deletion(s, false, Micros(0), false, t0()))
            .then_err(AccountError::DeletionAlreadyRequested);
        given::<Account>(vec![])
            .when(|s| decide_request_deletion(s, false, Micros(0), false, t0()))
            .then_err(AccountError::AccountNotFound);
    }

    fn deletion_with(balance: Micros) -> AccountEvent {
        AccountEvent::AccountDeletionRequested(AccountDeletionRequested {
            at: t0(),
            erase_due_at: t0() + Duration::days(30),
            forfeit_balance: Some(balance),
        })
    }

    #[test]
    fn money_on_the_wallet_needs_the_confirmation_that_it_is_forfeited() {
        let balance = Micros(9_610_000);
        // Given $9.61 available, when asked without confirmation: refused,
        // with the amount, and nothing recorded.
        given::<Account>(verified())
            .when(|s| decide_request_deletion(s, false, balance, false, t0()))
            .then_err(AccountError::BalanceNotForfeited { available: balance });
        // With the confirmation: requested, and the amount is recorded.
        let state = given::<Account>(verified())
            .when(|s| decide_request_deletion(s, false, balance, true, t0()))
            .then(vec![deletion_with(balance)]);
        assert!(matches!(
            state.status,
            AccountStatus::DeletionPending { .. }
        ));
        // An empty wallet needs no confirmation; it is recorded as zero.
        given::<Account>(verified())
            .when(|s| decide_request_deletion(s, false, Micros(0), false, t0()))
            .then(vec![deletion_with(Micros(0))]);
        // Active orders are refused first, whatever the confirmation.
        given::<Account>(verified())
            .when(|s| decide_request_deletion(s, true, balance, true, t0()))
            .then_err(AccountError::ActiveOrders);
        // A request sent again changes nothing, confirmed or not.
        let mut pending = verified();
        pending.push(deletion_with(balance));
        given::<Account>(pending)
            .when(|s| decide_request_deletion(s, false, balance, true, t0()))
            .then_err(AccountError::DeletionAlreadyRequested);
    }

    #[test]
    fn withdraw_within_30_days_only() {
        let mut events = verified();
        events.push(deletion_requested(t0()));
        let last_moment = t0() + Duration::days(30) - Duration::seconds(1);
        let state = given::<Account>(events.clone())
            .when(|s| decide_withdraw_deletion(s, last_moment))
            .then(vec![AccountEvent::AccountDeletionWithdrawn(
                AccountDeletionWithdrawn { at: last_moment },
            )]);
        assert_eq!(state.status, AccountStatus::Active);
        assert_eq!(check_login(&state), Ok(id()));

        given::<Account>(events.clone())
            .when(|s| decide_withdraw_deletion(s, t0() + Duration::days(30)))
            .then_err(AccountError::DeletionWindowOver);
        given::<Account>(events)
            .when(|s| decide_withdraw_deletion(s, t0() + Duration::days(45)))
            .then_err(AccountError::DeletionWindowOver);
        given::<Account>(verified())
            .when(|s| decide_withdraw_deletion(s, t0()))
            .then_err(AccountError::NoDeletionPending);
    }

    #[test]
    fn api_keys_create_limit_revoke_and_check() {
        let (key, hash, prefix) = make_api_key(id(), &[3; 40]);
        let key_id = ApiKeyId(Uuid::from_u128(1000));
        let settings = ApiKeySettings::new(ApiKeyScope::Read, Some("ci"), &[]).unwrap();
        let state = given::<Account>(registered())
            .when(|s| decide_create_api_key(s, key_id, hash, &prefix, &settings, t0()))
            .then(vec![AccountEvent::ApiKeyCreated(ApiKeyCreated {
                key_id,
                key_hash: hash,
                prefix: prefix.clone(),
                scope: ApiKeyScope::Read,
                label: Some("ci".into()),
                allowed_ips: vec![],
                at: t0(),
            })]);
        let (_, presented) = parse_api_key(key.expose()).unwrap();
        let checked = check_api_key(&state, &presented, loopback()).unwrap();
        assert_eq!((checked.id, checked.scope), (key_id, ApiKeyScope::Read));
        assert_eq!(
            check_api_key(&state, &[0; 32], loopback()),
            Err(AccountError::InvalidCredentials)
        );
        assert_eq!(state.api_key_summaries().len(), 1);
        assert!(!format!("{state:?}").contains(&hex::encode(hash)));

        // The limit counts live keys only.
        let mut events = registered();
        events.extend((1..=20).map(key_created));
        given::<Account>(events.clone())
            .when(|s| decide_create_api_key(s, key_id, hash, &prefix, &settings, t0()))
            .then_err(AccountError::TooManyApiKeys);
        events.push(AccountEvent::ApiKeyRevoked(ApiKeyRevoked {
            key_id: ApiKeyId(Uuid::from_u128(7)),
            at: t0(),
        }));
        given::<Account>(events)
            .when(|s| decide_create_api_key(s, key_id, hash, &prefix, &settings, t0()))
            .result()
            .unwrap();

        // Revoke, then revoke again.
        let mut events = registered();
        events.push(key_created(1));
        let revoked = given::<Account>(events.clone())
            .when(|s| decide_revoke_api_key(s, ApiKeyId(Uuid::from_u128(1)), t0()))
            .then(vec![AccountEvent::ApiKeyRevoked(ApiKeyRevoked {
                key_id: ApiKeyId(Uuid::from_u128(1)),
                at: t0(),
            })]);
        assert_eq!(
            check_api_key(&revoked, &[1; 32], loopback()),
            Err(AccountError::InvalidCredentials)
        );
        assert_eq!(
            decide_revoke_api_key(&revoked, ApiKeyId(Uuid::from_u128(1)), t0()),
            Err(AccountError::ApiKeyNotFound)
        );
        given::<Account>(events.clone())
            .when(|s| decide_revoke_api_key(s, ApiKeyId(Uuid::from_u128(2)), t0()))
            .then_err(AccountError::ApiKeyNotFound);

        // A disabled account's keys stop working; creating one is refused.
        events.push(deletion_requested(t0()));
        let disabled = given::<Account>(events.clone()).state().clone();
        assert_eq!(
            check_api_key(&disabled, &[1; 32], loopback()),
            Err(AccountError::AccountDisabled)
        );
        given::<Account>(events.clone())
            .when(|s| decide_create_api_key(s, key_id, hash, &prefix, &settings, t0()))
            .then_err(AccountError::AccountDisabled);
        // Revoking still works there.
        given::<Account>(events)
            .when(|s| decide_revoke_api_key(s, ApiKeyId(Uuid::from_u128(1)), t0()))
            .result()
            .unwrap();
    }

    fn loopback() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    #[test]
    fn a_key_with_an_allow_list_works_from_its_ranges_only() {
        let (key, hash, prefix) = make_api_key(id(), &[4; 40]);
        let key_id = ApiKeyId(Uuid::from_u128(1001));
        let settings =
            ApiKeySettings::new(ApiKeyScope::Full, None, &["203.0.113.0/24".into()]).unwrap();
        let mut events = registered();
        events.extend(
            decide_create_api_key(
                &given::<Account>(registered()).state().clone(),
                key_id,
                hash,
                &prefix,
                &settings,
                t0(),
            )
            .unwrap(),
        );
        let mut state = given::<Account>(events).state().clone();
        let (_, presented) = parse_api_key(key.expose()).unwrap();
        let inside = IpAddr::from([203, 0, 113, 9]);
        assert_eq!(
            check_api_key(&state, &presented, inside).unwrap().id,
            key_id
        );
        assert_eq!(
            check_api_key(&state, &presented, loopback()),
            Err(AccountError::ApiKeyIpNotAllowed)
        );
        // A wrong key from outside is still just a wrong key.
        assert_eq!(
            check_api_key(&state, &[0; 32], loopback()),
            Err(AccountError::InvalidCredentials)
        );
        state.apply(&deletion_requested(t0()));
        assert_eq!(
            check_api_key(&state, &presented, inside),
            Err(AccountError::AccountDisabled)
        );
    }

    #[test]
    fn set_rotate_and_remove_a_webhook() {
        let first = make_webhook_secret(&[1; 32]);
        let state = given::<Account>(verified())
            .when(|s| decide_set_webhook(s, &hook("https://a.example/h"), &first, t0()))
            .then(vec![webhook_set("https://a.example/h", first.expose())]);
        let endpoint = state.webhook.as_ref().unwrap();
        assert_eq!(endpoint.pii.plain().unwrap().url, "https://a.example/h");
        assert_eq!(endpoint.set_at, t0());
        assert!(!format!("{state:?}").contains(first.expose()));

        // Setting again replaces the URL and the secret (a rotation).
        let mut events = verified();
        events.push(webhook_set("https://a.example/h", first.expose()));
        let second = make_webhook_secret(&[2; 32]);
        let rotated = given::<Account>(events.clone())
            .when(|s| decide_set_webhook(s, &hook("https://b.example/h"), &second, t0()))
            .then(vec![webhook_set("https://b.example/h", second.expose())]);
        assert_eq!(
            rotated.webhook.unwrap().pii.plain().unwrap().secret,
            second.expose()
        );

        let removed = given::<Account>(events.clone())
            .when(|s| decide_remove_webhook(s, t0()))
            .then(vec![AccountEvent::WebhookEndpointRemoved(
                WebhookEndpointRemoved { at: t0() },
            )]);
        assert_eq!(removed.webhook, None);
        // Nothing to remove: nothing happens.
        given::<Account>(verified())
            .when(|s| decide_remove_webhook(s, t0()))
            .then(vec![]);
        given::<Account>(vec![])
            .when(|s| decide_remove_webhook(s, t0()))
            .then_err(AccountError::AccountNotFound);

        // A disabled account cannot set one, but can still remove it.
        events.push(deletion_requested(t0()));
        given::<Account>(events.clone())
            .when(|s| decide_set_webhook(s, &hook("https://c.example/"), &second, t0()))
            .then_err(AccountError::AccountDisabled);
        given::<Account>(events)
            .when(|s| decide_remove_webhook(s, t0()))
            .result()
            .unwrap();
        given::<Account>(vec![])
            .when(|s| decide_set_webhook(s, &hook("https://c.example/"), &second, t0()))
            .then_err(AccountError::AccountNotFound);
    }

    fn reset_issued(n: u8) -> AccountEvent {
        decide_issue_password_reset(&given::<Account>(verified()).state().clone(), [n; 32], t0())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn a_reset_token_works_once_before_it_expires() {
        let mut events = verified();
        events.push(reset_issued(7));
        let state = given::<Account>(events.clone())
            .when(|s| decide_reset_password(s, &[7; 32], "$2b$new", t0()))
            .then(vec![AccountEvent::AccountPasswordReset(
                AccountPasswordReset {
                    account: id(),
                    token_hash: [7; 32],
                    at: t0(),
                    pii: Personal::Plain(PasswordPii {
                        password_hash: "$2b$new".into(),
                    }),
                },
            )]);
        assert_eq!(state.password_hash.plain().unwrap(), "$2b$new");
        assert_eq!(
            decide_reset_password(&state, &[7; 32], "$2b$again", t0()),
            Err(AccountError::RecoveryTokenUsed)
        );
        let expiry = t0() + Duration::minutes(PASSWORD_RESET_TTL_MINUTES);
        given::<Account>(events.clone())
            .when(|s| decide_reset_password(s, &[7; 32], "$2b$new", expiry))
            .then_err(AccountError::RecoveryTokenExpired);
        given::<Account>(events.clone())
            .when(|s| decide_reset_password(s, &[8; 32], "$2b$new", t0()))
            .then_err(AccountError::RecoveryTokenInvalid);
        // A password change or an e-mail change ends a pending reset.
        let mut changed = events.clone();
        changed.extend(
            decide_change_password(&given::<Account>(events).state().clone(), HASH, t0()).unwrap(),
        );
        given::<Account>(changed)
            .when(|s| decide_reset_password(s, &[7; 32], "$2b$new", t0()))
            .then_err(AccountError::RecoveryTokenInvalid);
    }

    #[test]
    fn no_reset_for_a_disabled_account() {
        let mut events = verified();
        events.push(reset_issued(7));
        events.push(deletion_requested(t0()));
        given::<Account>(events.clone())
            .when(|s| decide_issue_password_reset(s, [9; 32], t0()))
            .then_err(AccountError::AccountDisabled);
        given::<Account>(events)
            .when(|s| decide_reset_password(s, &[7; 32], "$2b$new", t0()))
            .then_err(AccountError::AccountDisabled);
    }

    #[test]
    fn an_undo_restores_the_old_address_and_sets_the_password() {
        let mut events = verified();
        let state = given::<Account>(events.clone()).state().clone();
        events.extend(
            decide_change_email(&state, &email("eve@evil.example"), token(2), t0()).unwrap(),
        );
        events.extend(decide_issue_email_undo(&state, [5; 32], t0()).unwrap());
        let later = t0() + Duration::days(EMAIL_UNDO_TTL_DAYS) - Duration::seconds(1);
        let state = given::<Account>(events.clone())
            .when(|s| decide_undo_email_change(s, &[5; 32], "$2b$mine", later))
            .then(vec![
                AccountEvent::AccountEmailChanged(AccountEmailChanged {
                    account: id(),
                    at: later,
                    pii: Personal::Plain(EmailPii {
                        email: "alice@example.com".into(),
                    }),
                }),
                AccountEvent::EmailChangeUndone(EmailChangeUndone {
                    account: id(),
                    token_hash: [5; 32],
                    at: later,
                    pii: Personal::Plain(PasswordPii {
                        password_hash: "$2b$mine".into(),
                    }),
                }),
            ]);
        assert_eq!(state.email.plain().unwrap(), "alice@example.com");
        assert!(state.verified);
        assert!(state.email_undos.is_empty());
        assert_eq!(
            email_undo_target(&state, &[5; 32], later),
            Err(AccountError::RecoveryTokenUsed)
        );
        given::<Account>(events)
            .when(|s| {
                decide_undo_email_change(s, &[5; 32], "$2b$mine", later + Duration::seconds(1))
            })
            .then_err(AccountError::RecoveryTokenExpired);
    }
}
