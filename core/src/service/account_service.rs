//! The account command service: loads the account (and e-mail reservation)
//! streams from the log, runs the pure decisions of [`crate::domain::account`],
//! and appends through the [`Runner`]. No read model is consulted.
//!
//! - **Optimistic concurrency.** Every command appends with the exact versions it
//!   read; on a conflict it reloads and decides again, at most
//!   [`super::runner::MAX_ATTEMPTS`] times ([`ServiceError::Contention`] after that).
//! - **Atomic uniqueness.** Registering appends the reservation of the address and
//!   the account's first events in one multi-stream append; an e-mail change
//!   releases the old reservation, reserves the new one and records the change in
//!   one append too. Of two concurrent registrations of one address exactly one
//!   lands; the other re-reads the reservation and gets
//!   [`AccountError::EmailTaken`].
//! - **bcrypt off the runtime.** Hashing and checking passwords run on tokio's
//!   blocking pool, at most [`AccountsConfig::hashing_concurrency`] at once (a
//!   semaphore, one slot per core by default): a login storm queues instead of
//!   starving the async workers. The cost is 12 or more; a lower one is refused
//!   when the service is built.
//! - **No user enumeration at login.** An unknown address and a wrong password are
//!   the same [`AccountError::InvalidCredentials`], and an unknown address still
//!   spends one bcrypt check (against a dummy hash of the configured cost), so
//!   both take about the same time. A disabled account is reported as such only
//!   to someone who gave its right password.
//! - **No user enumeration at registration.** A taken address is refused only
//!   after the password is hashed, as a new registration's is; the caller
//!   answers both alike and tells the holder ([`Accounts::holder_of`]).
//! - **Account recovery.** A password reset ([`Accounts::request_password_reset`],
//!   [`Accounts::reset_password`]) and the undo of an e-mail change by the old
//!   address ([`Accounts::undo_email_change`]) go by single-use tokens of the
//!   verification token's shape, stored as their hash.
//! - **Logins before verification** are allowed; [`Login::verified`] tells the
//!   caller, which decides what an unverified account may do.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use tokio::sync::{OnceCell, Semaphore};

use super::repo::{load_cached, AggregateCache, Loaded};
use super::runner::{Runner, ServiceError, StoreFault, Tx};
use crate::domain::account::{
    bcrypt_input, check_api_key, check_login, check_password, check_password_reset,
    decide_change_email, decide_change_password, decide_create_api_key, decide_erase_account,
    decide_issue_email_undo, decide_issue_password_reset, decide_issue_verification,
    decide_register, decide_release_email, decide_remove_webhook, decide_request_deletion,
    decide_resend_verification, decide_reserve_email, decide_reset_password, decide_revoke_api_key,
    decide_set_objection, decide_set_webhook, decide_undo_email_change, decide_verify_email,
    decide_withdraw_deletion, email_undo_target, make_api_key, make_verification_token,
    make_webhook_secret, parse_api_key, parse_verification_token, Account, AccountError,
    AccountEvent, AccountView, ApiKeyScope, ApiKeySettings, ApiKeySummary, Email, EmailReservation,
    LookupKey, NewVerification, Secret, Sha256Hash, WebhookUrl, WebhookUrlPolicy,
    API_KEY_SECRET_CHARS, DEFAULT_VERIFICATION_TTL_HOURS, EMAIL_UNDO_TTL_DAYS,
    PASSWORD_RESET_TTL_MINUTES, VERIFICATION_SECRET_BYTES, WEBHOOK_SECRET_BYTES,
};
use crate::domain::account::{
    decide_confirm_two_factor, decide_disable_two_factor, decide_second_factor,
    decide_start_two_factor, make_recovery_codes, otpauth_uri, totp_secret_text, SecondFactor,
    RECOVERY_CODES, RECOVERY_CODE_BYTES, TOTP_SECRET_BYTES,
};
use crate::domain::clock::{Clock, SystemClock};
use crate::domain::codec::DomainEvent;
use crate::domain::commerce::{
    captured_to_check, erase_account as erase_with_balance, has_active_orders,
};
use crate::domain::ids::{AccountId, ApiKeyId};
use crate::domain::ledger::Owner;
use crate::domain::money::Micros;
use crate::domain::order::Order;
use crate::domain::wallet::Wallet;
use crate::log::{EventStore, StreamName};
use crate::vault::Vault;

/// The lowest bcrypt cost the service accepts (the privacy policy's promise).
pub const MIN_BCRYPT_COST: u32 = 12;
/// bcrypt's highest cost.
pub const MAX_BCRYPT_COST: u32 = 31;
/// Lanes of password checks kept before those nobody uses are dropped (a lane
/// is normally dropped when its last check ends).
const MAX_CHECK_LANES: usize = 4_096;

/// How the service hashes passwords and how long verification tokens live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountsConfig {
    /// bcrypt cost, [`MIN_BCRYPT_COST`] to [`MAX_BCRYPT_COST`]; default 12.
    pub bcrypt_cost: u32,
    /// Lifetime of a verification token; default 24 hours.
    pub verification_ttl: Duration,
    /// Most bcrypt computations at once; default: the number of cores.
    pub hashing_concurrency: usize,
    /// Which webhook URLs are accepted; default: public `https` only.
    pub webhook_urls: WebhookUrlPolicy,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            bcrypt_cost: MIN_BCRYPT_COST,
            verification_ttl: Duration::hours(DEFAULT_VERIFICATION_TTL_HOURS),
            hashing_concurrency: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            webhook_urls: WebhookUrlPolicy::default(),
        }
    }
}

/// A configuration the service refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountsConfigError {
    #[error("bcrypt cost {cost} is below the minimum of {MIN_BCRYPT_COST}")]
    CostTooLow { cost: u32 },
    #[error("bcrypt cost {cost} is above bcrypt's maximum of {MAX_BCRYPT_COST}")]
    CostTooHigh { cost: u32 },
    #[error("the verification token lifetime must be positive")]
    NonPositiveVerificationTtl,
    #[error("password hashing needs at least one concurrent slot")]
    NoHashingConcurrency,
}

/// Why an account command failed: refused by the domain, contention, or the
/// machinery.
pub type AccountServiceError = ServiceError<AccountError>;

impl From<AccountError> for AccountServiceError {
    fn from(e: AccountError) -> Self {
        ServiceError::Refused(e)
    }
}

type Result<T, E = AccountServiceError> = std::result::Result<T, E>;

mod lookup;
use lookup::{move_reservation, release_under_every_key, reserve_under_every_key};
pub use lookup::{KeyRotation, EMAIL_LOOKUP};

/// A new account and the token to mail for its verification.
#[derive(Debug)]
pub struct Registration {
    pub account: AccountId,
    pub verification_token: Secret,
}

/// A recovery token to mail: a password reset (to the account's address) or the
/// undo of an e-mail change (to the old address).
#[derive(Debug)]
pub struct RecoveryMail {
    pub account: AccountId,
    /// Where the mail goes (normalized). Never logged.
    pub email: String,
    pub token: Secret,
    pub expires_at: DateTime<Utc>,
}

/// An e-mail change made: the verification token for the new address and the
/// undo for the old one.
#[derive(Debug)]
pub struct EmailChange {
    pub verification_token: Secret,
    pub undo: RecoveryMail,
}

/// The account that holds an address, and the address as it registered it.
#[derive(Debug)]
pub struct AddressHolder {
    pub account: AccountId,
    pub email: String,
}

/// A successful login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Login {
    pub account: AccountId,
    /// Whether the account's address is verified.
    pub verified: bool,
}

/// A new API key: shown once, never stored.
#[derive(Debug)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    pub key: Secret,
    /// Public; what lists show.
    pub prefix: String,
}

/// A webhook endpoint just set: the signing secret is shown once, here.
#[derive(Debug)]
pub struct NewWebhookEndpoint {
    /// The normalized URL.
    pub url: String,
    pub secret: Secret,
    pub set_at: DateTime<Utc>,
}

/// The webhook endpoint as its owner sees it (never the secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEndpointView {
    pub url: String,
    pub set_at: DateTime<Utc>,
}

/// A two-factor enrolment just started: the secret, shown once, as text and
/// as the URI an authenticator app scans.
#[derive(Debug)]
pub struct TwoFactorEnrolment {
    /// base32 (RFC 4648, no padding).
    pub secret: Secret,
    /// `otpauth://totp/Nexus:<account id>?secret=…&issuer=Nexus…`
    pub uri: Secret,
}

/// A request authenticated by an API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiKeyLogin {
    pub account: AccountId,
    pub key_id: ApiKeyId,
    /// What the key may do.
    pub scope: ApiKeyScope,
}

/// The account commands over an event store.
pub struct Accounts<S: EventStore> {
    store: Arc<S>,
    vault: Arc<Vault>,
    bcrypt_cost: u32,
    verification_ttl: Duration,
    hashing: Arc<Semaphore>,
    webhook_urls: WebhookUrlPolicy,
    clock: Arc<dyn Clock>,
    /// A hash of a random password at the configured cost, made on first need:
    /// what a login with an unknown address is checked against.
    dummy_hash: OnceCell<String>,
    /// Folded accounts at their last version: every authenticated call loads one.
    folded: AggregateCache,
    /// Held (read) by every command that computes address stream names, and
    /// (write) while a rotation begins a new lookup key: see [`lookup`].
    lookup_lock: tokio::sync::RwLock<()>,
    /// bcrypt hashes and checks run so far (both kinds).
    bcrypt_runs: AtomicU64,
    /// One password check at a time per account (or, for an address no
    /// account holds, per address): the rest of that account's checks wait
    /// here, so that one account on many connections holds at most one
    /// hashing slot and everyone else keeps the others. An entry lives while
    /// a check of its key runs or waits.
    check_lanes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl<S: EventStore> fmt::Debug for Accounts<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounts")
            .field("bcrypt_cost", &self.bcrypt_cost)
            .field("verification_ttl", &self.verification_ttl)
            .finish_non_exhaustive()
    }
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| StoreFault::Random)?;
    Ok(bytes)
}

impl<S: EventStore> Accounts<S> {
    /// The service with the system clock. Refuses a bcrypt cost below
    /// [`MIN_BCRYPT_COST`].
    pub fn new(
        store: Arc<S>,
        vault: Arc<Vault>,
        config: AccountsConfig,
    ) -> Result<Self, AccountsConfigError> {
        let cost = config.bcrypt_cost;
        if cost < MIN_BCRYPT_COST {
            return Err(AccountsConfigError::CostTooLow { cost });
        }
        if cost > MAX_BCRYPT_COST {
            return Err(AccountsConfigError::CostTooHigh { cost });
        }
        if config.verification_ttl <= Duration::zero() {
            return Err(AccountsConfigError::NonPositiveVerificationTtl);
        }
        if config.hashing_concurrency == 0 {
            return Err(AccountsConfigError::NoHashingConcurrency);
        }
        Ok(Self {
            store,
            vault,
            bcrypt_cost: cost,
            verification_ttl: config.verification_ttl,
            hashing: Arc::new(Semaphore::new(config.hashing_concurrency)),
            webhook_urls: config.webhook_urls,
            clock: Arc::new(SystemClock),
            dummy_hash: OnceCell::new(),
            folded: AggregateCache::default(),
            lookup_lock: tokio::sync::RwLock::new(()),
            bcrypt_runs: AtomicU64::new(0),
            check_lanes: Mutex::new(HashMap::new()),
        })
    }

    /// Replaces the clock (tests, simulations).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// FOR TESTS ONLY: a bcrypt cost below 12 (bcrypt's minimum is 4), so test
    /// suites do not spend a quarter second per hash. No configuration reaches
    /// this; production code must never call it.
    #[doc(hidden)]
    pub fn with_insecure_cost_for_tests(mut self, cost: u32) -> Self {
        assert!((4..=MAX_BCRYPT_COST).contains(&cost), "bcrypt cost 4 to 31");
        tracing::warn!(cost, "accounts: insecure bcrypt cost (tests only)");
        self.bcrypt_cost = cost;
        self.dummy_hash = OnceCell::new();
        self
    }

    pub fn bcrypt_cost(&self) -> u32 {
        self.bcrypt_cost
    }

    /// bcrypt hashes and checks run since the service was built: what shows
    /// that the paths that must not be told apart by their timing do the same
    /// work.
    pub fn bcrypt_runs(&self) -> u64 {
        self.bcrypt_runs.load(Ordering::Relaxed)
    }

    // -- commands ------------------------------------------------------------

    /// Registers an account; returns it with the first verification token (to be
    /// mailed). [`AccountError::EmailTaken`] if the address is registered, found
    /// only after the password is hashed, as for a new address, so that the
    /// time taken does not tell the two apart.
    pub async fn register(&self, email: &str, password: &str) -> Result<Registration> {
        let email = Email::parse(email)?;
        check_password(password)?;
        let _lookups = self.lookup_lock.read().await;
        let email_streams = self.email_streams(&email)?;
        let password_hash = self.hash_password(password).await?;
        let account = AccountId::new();
        let (token, token_hash) = self.new_verification_token(account)?;
        let verification = self.verification(token_hash);
        let (clock, email, email_streams) = (&self.clock, &email, &email_streams);
        let (password_hash, verification) = (&password_hash, &verification);
        self.runner()
            .run(|tx| {
                Box::pin(async move {
                    let now = clock.now();
                    let reserve = reserve_under_every_key(&tx, email_streams, account, now).await?;
                    let events = decide_register(
                        &Account::default(),
                        account,
                        email,
                        password_hash,
                        *verification,
                        now,
                    )?;
                    tx.emit(&email_streams[0], &reserve)?;
                    Ok(tx.emit(&account.stream(), &events)?)
                })
            })
            .await?;
        tracing::info!(account = %account, "account registered");
        Ok(Registration {
            account,
            verification_token: token,
        })
    }

    /// Issues a new verification token (earlier ones stop working) and returns it
    /// to be mailed. [`AccountError::AlreadyVerified`] once verified.
    pub async fn issue_verification(&self, account: AccountId) -> Result<Secret> {
        let (token, token_hash) = self.new_verification_token(account)?;
        let verification = self.verification(token_hash);
        self.update(account, |state, now| {
            decide_issue_verification(state, verification, now)
        })
        .await?;
        Ok(token)
    }

    /// A new verification token for the enabled, unverified account holding
    /// `email` (its first mail was lost), with the holder to mail it to;
    /// `None` when no such account holds the address. At most one per
    /// [`crate::domain::account::VERIFICATION_RESEND_MINUTES`]
    /// ([`AccountError::VerificationRecentlySent`]).
    pub async fn resend_verification(
        &self,
        email: &str,
    ) -> Result<Option<(AddressHolder, Secret)>> {
        let Some(holder) = self.holder_of(email).await? else {
            return Ok(None);
        };
        let (token, token_hash) = self.new_verification_token(holder.account)?;
        let verification = self.verification(token_hash);
        let issued = self
            .update(holder.account, |state, now| {
                decide_resend_verification(state, verification, now)
            })
            .await;
        match issued {
            Ok(_) => Ok(Some((holder, token))),
            Err(ServiceError::Refused(
                AccountError::AlreadyVerified | AccountError::AccountDisabled,
            )) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Verifies the address of the account the token names; returns that account.
    /// A token that is malformed, unknown, superseded or of an unknown account is
    /// [`AccountError::VerificationTokenInvalid`].
    pub async fn verify_email(&self, token: &str) -> Result<AccountId> {
        let (account, token_hash) =
            parse_verification_token(token).ok_or(AccountError::VerificationTokenInvalid)?;
        let result = self
            .update(account, |state, now| {
                decide_verify_email(state, &token_hash, now)
            })
            .await;
        match result {
            Err(ServiceError::Refused(AccountError::AccountNotFound)) => {
                Err(AccountError::VerificationTokenInvalid.into())
            }
            other => other.map(|_| account),
        }
    }

    /// Changes the password, given the current one (else
    /// [`AccountError::InvalidCredentials`]).
    pub async fn change_password(
        &self,
        account: AccountId,
        old_password: &str,
        new_password: &str,
    ) -> Result<()> {
        check_password(new_password)?;
        // Across attempts: the hash the old password was checked against (checked
        // again only if it changed), and the new hash (computed once).
        let checked_against: Mutex<Option<String>> = Mutex::new(None);
        let new_hash: OnceCell<String> = OnceCell::new();
        let (checked_against, new_hash) = (&checked_against, &new_hash);
        self.runner()
            .run(|tx| {
                Box::pin(async move {
                    let state = tx.load::<Account>(&account.stream()).await?;
                    state.enabled()?;
                    let current = state
                        .password_hash
                        .plain()
                        .ok_or(AccountError::AccountErased)?
                        .clone();
                    let checked = checked_against.lock().map(|c| c.clone()).unwrap_or(None);
                    if checked.as_ref() != Some(&current) {
                        let lane = account.stream();
                        let old =
                            self.verify_password(lane.as_str(), old_password, current.clone());
                        if !old.await? {
                            return Err(AccountError::InvalidCredentials.into());
                        }
                        if let Ok(mut checked) = checked_against.lock() {
                            *checked = Some(current);
                        }
                    }
                    let hash = new_hash
                        .get_or_try_init(|| self.hash_password(new_password))
                        .await?;
                    let events = decide_change_password(&state, hash, self.clock.now())?;
                    Ok(tx.emit(&account.stream(), &events)?)
                })
            })
            .await?;
        tracing::info!(account = %account, "account password changed");
        Ok(())
    }

    /// Checks the password of an account (its holder re-entering it on a
    /// live session): [`AccountError::InvalidCredentials`] when wrong. A
    /// bcrypt check; records nothing.
    pub async fn confirm_password(&self, account: AccountId, password: &str) -> Result<()> {
        let loaded = self.load_account(account).await?;
        if loaded.state.id.is_none() {
            return Err(AccountError::AccountNotFound.into());
        }
        let current = loaded
            .state
            .password_hash
            .plain()
            .ok_or(AccountError::AccountErased)?
            .clone();
        let lane = account.stream();
        if !self
            .verify_password(lane.as_str(), password, current)
            .await?
        {
            return Err(AccountError::InvalidCredentials.into());
        }
        Ok(())
    }

    /// Corrects the address: the new one must be free, is unverified, and gets a
    /// verification token (to be mailed to the new address); the old address gets
    /// a token that undoes the change for [`EMAIL_UNDO_TTL_DAYS`] days
    /// ([`Accounts::undo_email_change`]). The old reservation is released, the
    /// new one taken and the change recorded in one append.
    pub async fn change_email(&self, account: AccountId, new_email: &str) -> Result<EmailChange> {
        let new_email = Email::parse(new_email)?;
        let _lookups = self.lookup_lock.read().await;
        let new_streams = self.email_streams(&new_email)?;
        let (token, token_hash) = self.new_verification_token(account)?;
        let (undo_token, undo_hash) = self.new_verification_token(account)?;
        let verification = self.verification(token_hash);
        let (new_email, new_streams, verification) = (&new_email, &new_streams, &verification);
        let committed = self
            .runner()
            .run(|tx| {
                Box::pin(async move {
                    let state = tx.load::<Account>(&account.stream()).await?;
                    state.enabled()?;
                    let old_email = state
                        .email
                        .plain()
                        .ok_or(AccountError::AccountErased)?
                        .clone();
                    let old_streams = self.email_streams(&Email::from_stored(old_email.clone()))?;
                    let now = self.clock.now();
                    let mut events = decide_change_email(&state, new_email, *verification, now)?;
                    events.extend(decide_issue_email_undo(&state, undo_hash, now)?);
                    // A change of case only keeps the same reservation.
                    if old_streams[0] != new_streams[0] {
                        move_reservation(&tx, account, &old_streams, new_streams, now).await?;
                    }
                    tx.emit(&account.stream(), &events)?;
                    Ok((old_email, now))
                })
            })
            .await?;
        let (old_email, now) = committed.value;
        tracing::info!(account = %account, "account e-mail changed");
        Ok(EmailChange {
            verification_token: token,
            undo: RecoveryMail {
                account,
                email: old_email,
                token: undo_token,
                expires_at: now + Duration::days(EMAIL_UNDO_TTL_DAYS),
            },
        })
    }

    /// Undoes an e-mail change with the token mailed to the old address (valid
    /// [`EMAIL_UNDO_TTL_DAYS`] days, once): the old address is the account's
    /// again, verified, and `new_password` its password. The caller ends every
    /// session. [`AccountError::EmailUndoAddressTaken`] if another account
    /// registered the old address since; a token malformed, unknown or of an
    /// unknown account is [`AccountError::RecoveryTokenInvalid`].
    pub async fn undo_email_change(&self, token: &str, new_password: &str) -> Result<AccountId> {
        check_password(new_password)?;
        let (account, token_hash) =
            parse_verification_token(token).ok_or(AccountError::RecoveryTokenInvalid)?;
        let new_hash: OnceCell<String> = OnceCell::new();
        let (new_hash, token_hash) = (&new_hash, &token_hash);
        let _lookups = self.lookup_lock.read().await;
        let result = self
            .runner()
            .run(|tx| {
                Box::pin(async move {
                    let state = tx.load::<Account>(&account.stream()).await?;
                    let now = self.clock.now();
                    let old_email = email_undo_target(&state, token_hash, now)?;
                    let hash = new_hash
                        .get_or_try_init(|| self.hash_password(new_password))
                        .await?;
                    let events = decide_undo_email_change(&state, token_hash, hash, now)?;
                    let current = state.email.plain().ok_or(AccountError::AccountErased)?;
                    let old_streams = self.email_streams(&Email::from_stored(old_email))?;
                    let current_streams =
                        self.email_streams(&Email::from_stored(current.clone()))?;
                    if old_streams[0] != current_streams[0] {
                        move_reservation(&tx, account, &current_streams, &old_streams, now)
                            .await
                            .map_err(|e| match e {
                                ServiceError::Refused(AccountError::EmailTaken) => {
                                    AccountError::EmailUndoAddressTaken.into()
                                }
                                other => other,
                            })?;
                    }
                    Ok(tx.emit(&account.stream(), &events)?)
                })
            })
            .await;
        match result {
            Err(ServiceError::Refused(AccountError::AccountNotFound)) => {
                Err(AccountError::RecoveryTokenInvalid.into())
            }
            Err(e) => Err(e),
            Ok(_) => {
                tracing::info!(account = %account, "account e-mail change undone");
                Ok(account)
            }
        }
    }

    /// Starts a password reset for the account of `email`: a token valid
    /// [`PASSWORD_RESET_TTL_MINUTES`] minutes, to be mailed to the account's
    /// address. `None`, with nothing recorded, when no enabled account has the
    /// address (unknown, malformed, deletion pending, erased): the caller must
    /// answer every request alike and do this work after answering, so that
    /// neither the answer nor its timing tells who has an account.
    pub async fn request_password_reset(&self, email: &str) -> Result<Option<RecoveryMail>> {
        let Some(holder) = self.holder_of(email).await? else {
            return Ok(None);
        };
        let account = holder.account;
        let (token, token_hash) = self.new_verification_token(account)?;
        let result = self
            .update(account, |state, now| {
                decide_issue_password_reset(state, token_hash, now)
            })
            .await;
        let issued_at = match result {
            Ok(at) => at,
            Err(ServiceError::Refused(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        tracing::info!(account = %account, "password reset issued");
        Ok(Some(RecoveryMail {
            account,
            email: holder.email,
            token,
            expires_at: issued_at + Duration::minutes(PASSWORD_RESET_TTL_MINUTES),
        }))
    }

    /// Sets a new password with a reset token (valid
    /// [`PASSWORD_RESET_TTL_MINUTES`] minutes, once, the latest issued); the
    /// caller ends every session. A token malformed, unknown, superseded or of
    /// an unknown account is [`AccountError::RecoveryTokenInvalid`].
    pub async fn reset_password(&self, token: &str, new_password: &str) -> Result<AccountId> {
        check_password(new_password)?;
        let (account, token_hash) =
            parse_verification_token(token).ok_or(AccountError::RecoveryTokenInvalid)?;
        let new_hash: OnceCell<String> = OnceCell::new();
        let (new_hash, token_hash) = (&new_hash, &token_hash);
        let result = self
            .runner()
            .run(|tx| {
                Box::pin(async move {
                    let state = tx.load::<Account>(&account.stream()).await?;
                    // A wrong token spends no bcrypt.
                    check_password_reset(&state, token_hash, self.clock.now())?;
                    let hash = new_hash
                        .get_or_try_init(|| self.hash_password(new_password))
                        .await?;
                    let events = decide_reset_password(&state, token_hash, hash, self.clock.now())?;
                    Ok(tx.emit(&account.stream(), &events)?)
                })
            })
            .await;
        match result {
            Err(ServiceError::Refused(AccountError::AccountNotFound)) => {
                Err(AccountError::RecoveryTokenInvalid.into())
            }
            Err(e) => Err(e),
            Ok(_) => {
                tracing::info!(account = %account, "account password reset");
                Ok(account)
            }
        }
    }

    /// Sets (true) or lifts (false) the objection to non-essential processing.
    pub async fn set_objection(&self, account: AccountId, object: bool) -> Result<()> {
        self.update(account, |state, now| {
            decide_set_objection(state, object, now)
        })
        .await?;
        Ok(())
    }

    /// Requests the account's deletion: disabled at once, erasure due in 30 days;
    /// refused ([`AccountError::ActiveOrders`]) while orders are active (an open
    /// hold, or a recent captured order not final yet), and
    /// ([`AccountError::BalanceNotForfeited`]) while the wallet has money
    /// available unless `confirm_forfeit`: at the erasure it moves to
    /// unclaimed balances. Returns that available balance. The wallet is a
    /// condition of the append, so an order placed or a deposit credited
    /// meanwhile makes the decision run again.
    pub async fn request_deletion(
        &self,
        account: AccountId,
        confirm_forfeit: bool,
    ) -> Result<Micros> {
        let clock = &self.clock;
        let committed = self
            .runner()
            .run(|tx| {
                Box::pin(async move {
                    let state = tx.load::<Account>(&account.stream()).await?;
                    let wallet = tx
                        .load::<Wallet>(&Owner::Account(account).wallet_stream())
                        .await?;
                    let mut recent = Vec::new();
                    let ids = captured_to_check(&wallet).take_while(|_| wallet.holds.is_empty());
                    for id in ids {
                        let order = tx.peek::<Order>(&id.stream()).await?;
                        let over = order.status.is_some_and(|s| s.is_final());
                        recent.push(order);
                        if !over {
                            break;
                        }
                    }
                    let active = has_active_orders(&wallet, &recent);
                    let available = wallet.available;
                    let events = decide_request_deletion(
                        &state,
                        active,
                        available,
                        confirm_forfeit,
                        clock.now(),
                    )?;
                    tx.emit(&account.stream(), &events)?;
                    Ok(available)
                })
            })
            .await?;
        tracing::info!(account = %account, "account deletion requested");
        Ok(committed.value)
    }

    /// Withdraws a pending deletion, before its erasure is due.
    pub async fn withdraw_deletion(&self, account: AccountId) -> Result<()> {
        self.update(account, decide_withdraw_deletion).await?;
        tracing::info!(account = %account, "account deletion withdrawn");
        Ok(())
    }

    /// Erases the account's personal data once its deletion is due, or once
    /// its registration lapsed unverified (what the retention sweep calls):
    /// releases its address, erases the account's vault subject, then records
    /// `AccountErased`, with the move of the wallet's available balance to
    /// unclaimed balances in the same append. Refused unless one of the two is due
    /// ([`AccountError::ErasureNotDue`], [`AccountError::NoDeletionPending`]); [`AccountError::AccountErased`] once
    /// recorded. The key goes first, so a crash between the two leaves the data
    /// erased and the account still on the schedule: the next call records the
    /// erasure.
    pub async fn erase_account(&self, account: AccountId) -> Result<()> {
        let state = self.load_account(account).await?.state;
        decide_erase_account(&state, self.clock.now())?;
        // The address goes free first, in its own append: its reservation
        // stream is named by a hash of the address, which cannot be computed
        // once the vault subject is gone. A crash after this append leaves a
        // disabled account without its reservation (a retry erases it); a
        // crash after the vault erase finds the reservation already released.
        if let Some(email) = state.email.plain() {
            self.release_email(account, email).await?;
        }
        let (clock, vault) = (&self.clock, &self.vault);
        self.runner()
            .run(|tx| {
                Box::pin(async move {
                    let state = tx.load::<Account>(&account.stream()).await?;
                    let wallet_stream = Owner::Account(account).wallet_stream();
                    let wallet = tx.load::<Wallet>(&wallet_stream).await?;
                    let erasure = erase_with_balance(&state, &wallet, clock.now())?;
                    vault.erase(&account.subject())?;
                    tx.emit(&wallet_stream, &erasure.wallet)?;
                    Ok(tx.emit(&account.stream(), &erasure.record)?)
                })
            })
            .await?;
        tracing::info!(account = %account, "account erased");
        Ok(())
    }

    /// Releases `account`'s reservation of `email` if it still holds it.
    async fn release_email(&self, account: AccountId, email: &str) -> Result<()> {
        let _lookups = self.lookup_lock.read().await;
        let email_streams = self.email_streams(&Email::from_stored(email.to_owned()))?;
        let (clock, email_streams) = (&self.clock, &email_streams);
        self.runner()
            .run(|tx| {
                Box::pin(async move {
                    release_under_every_key(&tx, email_streams, account, clock.now()).await
                })
            })
            .await?;
        Ok(())
    }

    /// Creates an API key; the key is in the answer and nowhere else.
    pub async fn create_api_key(
        &self,
        account: AccountId,
        settings: &ApiKeySettings,
    ) -> Result<NewApiKey> {
        let id = ApiKeyId::new();
        let (key, key_hash, prefix) = make_api_key(account, &random::<API_KEY_SECRET_CHARS>()?);
        self.update(account, |state, now| {
            decide_create_api_key(state, id, key_hash, &prefix, settings, now)
        })
        .await?;
        Ok(NewApiKey { id, key, prefix })
    }

    /// Revokes an API key: [`AccountError::ApiKeyNotFound`] if it is unknown or
    /// already revoked.
    pub async fn revoke_api_key(&self, account: AccountId, key_id: ApiKeyId) -> Result<()> {
        self.update(account, |state, now| {
            decide_revoke_api_key(state, key_id, now)
        })
        .await?;
        Ok(())
    }

    /// Sets the account's webhook endpoint, or replaces it: every call makes a new
    /// signing secret (the answer is the only place it is shown), so setting the
    /// same URL again rotates the secret.
    pub async fn set_webhook(&self, account: AccountId, url: &str) -> Result<NewWebhookEndpoint> {
        let url = WebhookUrl::parse(url, self.webhook_urls)?;
        let secret = make_webhook_secret(&random::<WEBHOOK_SECRET_BYTES>()?);
        let set_at = self
            .update(account, |state, now| {
                decide_set_webhook(state, &url, &secret, now)
            })
            .await?;
        tracing::info!(account = %account, "webhook endpoint set");
        Ok(NewWebhookEndpoint {
            url: url.as_str().to_owned(),
            secret,
            set_at,
        })
    }

    /// Removes the account's webhook endpoint (nothing to do if there is none).
    pub async fn remove_webhook(&self, account: AccountId) -> Result<()> {
        self.update(account, decide_remove_webhook).await?;
        tracing::info!(account = %account, "webhook endpoint removed");
        Ok(())
    }

    /// Starts a two-factor enrolment with a new random secret (replacing a
    /// pending one); it takes effect once [`Accounts::confirm_two_factor`] sees
    /// its first code. The secret is in the answer and, sealed, in the log.
    pub async fn start_two_factor(&self, account: AccountId) -> Result<TwoFactorEnrolment> {
        let key = zeroize::Zeroizing::new(random::<TOTP_SECRET_BYTES>()?);
        self.update(account, |state, now| {
            decide_start_two_factor(state, &key, now)
        })
        .await?;
        tracing::info!(account = %account, "two-factor enrolment started");
        Ok(TwoFactorEnrolment {
            secret: totp_secret_text(&*key),
            uri: otpauth_uri(&*key, account),
        })
    }

    /// Turns two-factor on with a first code of the pending secret; answers the
    /// recovery codes (shown once; only their hashes are kept).
    pub async fn confirm_two_factor(&self, account: AccountId, code: &str) -> Result<Vec<Secret>> {
        let mut random_codes = [[0u8; RECOVERY_CODE_BYTES]; RECOVERY_CODES];
        for bytes in &mut random_codes {
            *bytes = random()?;
        }
        let (codes, hashes) = make_recovery_codes(&random_codes);
        self.update(account, |state, now| {
            decide_confirm_two_factor(state, code, &hashes, now)
        })
        .await?;
        tracing::info!(account = %account, "two-factor authentication enabled");
        Ok(codes)
    }

    /// Turns two-factor off, given the password and a code (TOTP or recovery):
    /// [`AccountError::InvalidCredentials`] for a wrong password,
    /// [`AccountError::TwoFactorCodeInvalid`] for a wrong code.
    pub async fn disable_two_factor(
        &self,
        account: AccountId,
        password: &str,
        code: &SecondFactor,
    ) -> Result<()> {
        let state = self.load_account(account).await?.state;
        state.enabled()?;
        let checked = state
            .password_hash
            .plain()
            .ok_or(AccountError::AccountErased)?
            .clone();
        let lane = account.stream();
        if !self
            .verify_password(lane.as_str(), password, checked.clone())
            .await?
        {
            return Err(AccountError::InvalidCredentials.into());
        }
        self.update(account, |state, now| {
            // A password changed since it was checked is not the one given.
            if state.password_hash.plain() != Some(&checked) {
                return Err(AccountError::InvalidCredentials);
            }
            decide_disable_two_factor(state, code, now)
        })
        .await?;
        tracing::info!(account = %account, "two-factor authentication disabled");
        Ok(())
    }

    // -- queries -------------------------------------------------------------

    /// Logs in with an address and a password; an account with two-factor on
    /// is refused ([`AccountError::TwoFactorRequired`]): see
    /// [`Accounts::sign_in`].
    pub async fn authenticate(&self, email: &str, password: &str) -> Result<Login> {
        self.sign_in(email, password, None).await
    }

    /// Logs in with an address, a password and, when the account has
    /// two-factor on, a code. The code is looked at only after the password
    /// verified, so [`AccountError::TwoFactorRequired`] tells nothing to
    /// someone without the password. An accepted code is recorded before the
    /// login is answered: the same TOTP step or recovery code cannot sign in
    /// twice, even concurrently (the second append conflicts and decides
    /// again).
    pub async fn sign_in(
        &self,
        email: &str,
        password: &str,
        second: Option<&SecondFactor>,
    ) -> Result<Login> {
        let state = self.check_password(email, password).await?;
        let account = check_login(&state)?;
        if state.two_factor_on() {
            self.update(account, |state, now| {
                decide_second_factor(state, second, now)
            })
            .await?;
        }
        Ok(Login {
            account,
            verified: state.verified,
        })
    }

    /// The account whose address and password these are, whatever its status;
    /// `InvalidCredentials` otherwise, after the same bcrypt work either way.
    async fn check_password(&self, email: &str, password: &str) -> Result<Account> {
        // No account can have a malformed address: nothing to hide by timing.
        let email = Email::parse(email).map_err(|_| AccountError::InvalidCredentials)?;
        let streams = self.email_streams(&email)?;
        let holder = self.holder(&streams).await?;
        // The lane is the account's, or the address's when none holds it: a
        // run of checks on one address waits the same whether it is held.
        let lane = match holder {
            Some(account) => account.stream().as_str().to_owned(),
            None => streams[0].as_str().to_owned(),
        };
        let state = match holder {
            Some(account) => Some(self.load_account(account).await?.state),
            None => None,
        };
        let stored = state
            .as_ref()
            .and_then(|s| s.password_hash.plain().cloned());
        match (state, stored) {
            (Some(state), Some(hash)) => {
                if self.verify_password(&lane, password, hash).await? {
                    return Ok(state);
                }
            }
            // Unknown address (or erased account): spend the same work anyway.
            _ => {
                let dummy = self.dummy_hash().await?.clone();
                self.verify_password(&lane, password, dummy).await?;
            }
        }
        Err(AccountError::InvalidCredentials.into())
    }

    /// The account holding `email` and the address as it holds it, unless there
    /// is none, the address is malformed or the account's data is erased; for
    /// telling the holder that someone tried to register their address.
    pub async fn holder_of(&self, email: &str) -> Result<Option<AddressHolder>> {
        let Ok(email) = Email::parse(email) else {
            return Ok(None);
        };
        let holder = {
            let _lookups = self.lookup_lock.read().await;
            self.holder(&self.email_streams(&email)?).await?
        };
        let Some(account) = holder else {
            return Ok(None);
        };
        let state = self.load_account(account).await?.state;
        if state.is_erased() {
            return Ok(None);
        }
        Ok(state.email.plain().map(|email| AddressHolder {
            account,
            email: email.clone(),
        }))
    }

    /// Checks an address and password like [`Accounts::authenticate`], but also
    /// admits an account whose deletion is pending: the way back in to withdraw
    /// the request once no session is left (a login refuses such an account).
    /// An unknown address, a wrong password and an erased account are all
    /// [`AccountError::InvalidCredentials`], at the cost of one bcrypt check.
    pub async fn authenticate_holder(&self, email: &str, password: &str) -> Result<AccountId> {
        self.authenticate_holder_with(email, password, None).await
    }

    /// [`Accounts::authenticate_holder`] with the second factor an account
    /// with two-factor on needs, spent as at [`Accounts::sign_in`].
    pub async fn authenticate_holder_with(
        &self,
        email: &str,
        password: &str,
        second: Option<&SecondFactor>,
    ) -> Result<AccountId> {
        let state = self.check_password(email, password).await?;
        let account = state.id.ok_or(AccountError::InvalidCredentials)?;
        if state.two_factor_on() {
            self.update(account, |state, now| {
                decide_second_factor(state, second, now)
            })
            .await?;
        }
        Ok(account)
    }

    /// The account an API key belongs to, if the key is live, accepted from
    /// `client_ip` and the account enabled. The key names its account
    /// (`nx_<account>_<secret>`), so this reads one stream and compares SHA-256
    /// of the key with its keys' hashes.
    pub async fn authenticate_api_key(&self, key: &str, client_ip: IpAddr) -> Result<ApiKeyLogin> {
        let (account, hash) = parse_api_key(key).ok_or(AccountError::InvalidCredentials)?;
        let loaded = self.load_account(account).await?;
        let key = check_api_key(&loaded.state, &hash, client_ip)?;
        Ok(ApiKeyLogin {
            account,
            key_id: key.id,
            scope: key.scope,
        })
    }

    /// The time by this service's clock (the one its decisions use), for
    /// callers that keep time-bound records beside the log (sessions).
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The account as its owner sees it (the address opened from the vault).
    pub async fn account(&self, account: AccountId) -> Result<AccountView> {
        let loaded = self.load_account(account).await?;
        Ok(loaded.state.view().ok_or(AccountError::AccountNotFound)?)
    }

    /// The account's webhook endpoint, if it has one (`None` once erased too).
    pub async fn webhook(&self, account: AccountId) -> Result<Option<WebhookEndpointView>> {
        let loaded = self.load_account(account).await?;
        loaded.state.enabled()?;
        Ok(loaded.state.webhook.and_then(|w| {
            w.pii.plain().map(|pii| WebhookEndpointView {
                url: pii.url.clone(),
                set_at: w.set_at,
            })
        }))
    }

    /// Every API key of the account, revoked ones included, oldest first.
    pub async fn list_api_keys(&self, account: AccountId) -> Result<Vec<ApiKeySummary>> {
        let loaded = self.load_account(account).await?;
        if loaded.state.id.is_none() {
            return Err(AccountError::AccountNotFound.into());
        }
        Ok(loaded.state.api_key_summaries())
    }

    /// The account folded from its stream, with the version it was read at (for
    /// other services that must check an account, e.g. that it is enabled).
    pub async fn load_account(&self, account: AccountId) -> Result<Loaded<Account>> {
        self.load(&account.stream()).await
    }

    // -- plumbing ------------------------------------------------------------

    async fn load<A>(&self, stream: &StreamName) -> Result<Loaded<A>>
    where
        A: crate::domain::aggregate::Aggregate + Clone + Send + Sync + 'static,
        A::Event: DomainEvent,
    {
        Ok(load_cached(&*self.store, &self.vault, stream, &self.folded).await?)
    }

    fn runner(&self) -> Runner<'_, S> {
        Runner::cached(&*self.store, &self.vault, &self.folded)
    }

    /// Load, decide, append on the account stream alone, through the runner;
    /// answers the time the decision was made at. A decision with no events
    /// appends nothing.
    async fn update(
        &self,
        account: AccountId,
        decide: impl Fn(&Account, DateTime<Utc>) -> Result<Vec<AccountEvent>, AccountError> + Sync,
    ) -> Result<DateTime<Utc>> {
        let (clock, decide) = (&self.clock, &decide);
        let committed = self
            .runner()
            .run(|tx: Tx<'_, S>| {
                Box::pin(async move {
                    let state = tx.load::<Account>(&account.stream()).await?;
                    let now = clock.now();
                    let events = decide(&state, now)?;
                    tx.emit(&account.stream(), &events)?;
                    Ok(now)
                })
            })
            .await?;
        Ok(committed.value)
    }

    fn verification(&self, token_hash: Sha256Hash) -> NewVerification {
        NewVerification {
            token_hash,
            ttl: self.verification_ttl,
        }
    }

    fn new_verification_token(&self, account: AccountId) -> Result<(Secret, Sha256Hash)> {
        Ok(make_verification_token(
            account,
            &random::<VERIFICATION_SECRET_BYTES>()?,
        ))
    }

    /// bcrypt of [`bcrypt_input`] of the password, off the runtime.
    async fn hash_password(&self, password: &str) -> Result<String> {
        let input = bcrypt_input(password);
        let cost = self.bcrypt_cost;
        self.off_runtime(move || bcrypt::hash(input, cost))
            .await?
            .map_err(|e| StoreFault::Hashing(e.to_string()).into())
    }

    /// Checks a password against a stored hash, off the runtime, after the
    /// checks of the same `lane` (an account's or an address's stream name)
    /// that came first.
    async fn verify_password(&self, lane: &str, password: &str, hash: String) -> Result<bool> {
        let input = bcrypt_input(password);
        let turn = self.lane(lane).lock_owned().await;
        let checked = self
            .off_runtime(move || {
                let _turn = turn;
                bcrypt::verify(input, &hash)
            })
            .await;
        self.leave_lane(lane);
        checked?.map_err(|e| StoreFault::Hashing(e.to_string()).into())
    }

    fn lane(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut lanes = self.check_lanes.lock().unwrap_or_else(|e| e.into_inner());
        if lanes.len() >= MAX_CHECK_LANES {
            // Lanes left by callers that gave up while waiting.
            lanes.retain(|_, lane| Arc::strong_count(lane) > 1);
        }
        Arc::clone(lanes.entry(key.to_owned()).or_default())
    }

    /// Drops the lane of `key` when nobody runs or waits in it.
    fn leave_lane(&self, key: &str) {
        let mut lanes = self.check_lanes.lock().unwrap_or_else(|e| e.into_inner());
        if lanes
            .get(key)
            .is_some_and(|lane| Arc::strong_count(lane) == 1)
        {
            lanes.remove(key);
        }
    }

    async fn dummy_hash(&self) -> Result<&String> {
        self.dummy_hash
            .get_or_try_init(|| async {
                let password = hex::encode(random::<16>()?);
                self.hash_password(&password).await
            })
            .await
    }

    /// Runs `f` on the blocking pool once a hashing slot is free. The slot is
    /// held by the blocking task itself, so a caller that gives up does not free
    /// it while the hash still runs.
    async fn off_runtime<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        self.bcrypt_runs.fetch_add(1, Ordering::Relaxed);
        let permit = Arc::clone(&self.hashing)
            .acquire_owned()
            .await
            .map_err(|_| StoreFault::Hashing("the hashing pool is closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|e| StoreFault::Hashing(format!("the hashing task failed: {e}")).into())
    }
}
