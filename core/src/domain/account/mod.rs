//! The account aggregate (stream `account-<hex>`) and the e-mail reservation
//! aggregate (stream `email-<hex>`): pure state, events and decisions. The
//! command service that runs them over the log is [`account_service`].
//!
//! # Personal data
//!
//! The e-mail address and the bcrypt hash of the password are personal data: they
//! travel in [`Personal`] fields, sealed in the log under the account's vault
//! subject ([`AccountId::subject`]), and read back as [`Personal::Erased`] once
//! that subject is erased. The state then reports [`Account::is_erased`].
//!
//! [`account_service`]: crate::service::account_service
//! [`Personal`]: crate::domain::codec::Personal
//! [`Personal::Erased`]: crate::domain::codec::Personal::Erased
//! [`AccountId::subject`]: crate::domain::ids::AccountId::subject
//!
//! # E-mail uniqueness
//!
//! An address is reserved by the stream `email-<hex of HMAC-SHA256(lookup key,
//! lookup form)>` ([`LookupKey::email_stream`]): a keyed hash, so the stream name
//! tells nothing about the address without the key. Its events ([`EmailReserved`],
//! [`EmailReleased`]) carry only the account id. Registering appends to that
//! stream with `NoStream` (or the exact version of a released reservation) in the
//! same atomic append as the account's first events, so two registrations of one
//! address cannot both succeed.
//!
//! # Secrets handed out
//!
//! Verification tokens and API keys are random, shown once, and stored only as
//! the SHA-256 of the whole string. Both name their account, so the service can
//! load the one stream that can hold their hash without any read model:
//!
//! - verification token: `<account: 32 hex>.<secret: 43 URL-safe base64 chars
//!   (32 random bytes)>`;
//! - password-reset and e-mail undo tokens: the verification token's shape;
//! - API key: `nx_<account: 32 hex>_<secret: 40 chars of the URL-safe base64
//!   alphabet (240 random bits)>`. Its public `prefix` (for lists) is the first 8
//!   characters of the secret part, leaving 192 secret bits.
//!
//! # Two-factor authentication
//!
//! A TOTP secret (20 random bytes) is personal data like the e-mail: sealed in
//! [`TwoFactorEnrolmentStarted`] under the account's subject, so it is erased
//! with the account. Recovery codes are stored only as SHA-256 hashes (80
//! random bits each). The last TOTP step accepted is part of the state, so a
//! code works once.
//!
//! # Map
//!
//! - this file: the limits of the rules and [`AccountError`], every refusal;
//! - `credentials.rs`: e-mail addresses, passwords and their bcrypt input, the
//!   lookup key, and the secrets handed out (verification tokens, API keys,
//!   webhook signing secrets);
//! - `api_key.rs`: what an API key may do (its scope) and from where (its
//!   address allow-list), and its label;
//! - `webhook_url.rs`: which webhook URLs are accepted, and the address checks
//!   that keep deliveries off internal networks;
//! - `events.rs`: the event types of both streams;
//! - `state.rs`: [`Account`] and [`EmailReservation`], folded from their events;
//! - `decide.rs`: the pure decisions and checks;
//! - `totp.rs`: one-time passwords (HOTP, TOTP), the secret's `otpauth://`
//!   URI, recovery codes;
//! - `two_factor.rs`: the decisions of two-factor authentication.
//!
//! Each file's tests sit at its bottom.

mod api_key;
mod credentials;
mod decide;
mod events;
#[cfg(test)]
mod fixtures;
mod state;
mod totp;
mod two_factor;
mod webhook_url;

pub use api_key::*;
pub use credentials::*;
pub use decide::*;
pub use events::*;
pub use state::*;
pub use totp::*;
pub use two_factor::*;
pub use webhook_url::*;

use crate::domain::money::Micros;

/// Longest accepted e-mail address, in bytes (after trimming).
pub const MAX_EMAIL_BYTES: usize = 254;
/// Longest local part (before the `@`), in bytes (RFC 5321).
pub const MAX_EMAIL_LOCAL_BYTES: usize = 64;
/// Shortest accepted password, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 10;
/// Longest accepted password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 128;
/// Most API keys an account may have that are not revoked.
pub const MAX_LIVE_API_KEYS: usize = 20;
/// How long after a deletion request the account's data is erased, and so how
/// long the request can be withdrawn.
pub const DELETION_GRACE_DAYS: i64 = 30;
/// How long a verification token is valid unless configured otherwise.
pub const DEFAULT_VERIFICATION_TTL_HOURS: i64 = 24;
/// The least time between two verification mails of an account asked for
/// again (a lost mail): bounds what anyone can make the address receive.
pub const VERIFICATION_RESEND_MINUTES: i64 = 5;
/// An account whose address was never verified is erased, and its address
/// released, this many hours after registration (the retention sweep does it).
pub const UNVERIFIED_LAPSE_HOURS: i64 = 24;
/// The prefix of every API key.
pub const API_KEY_PREFIX: &str = "nx_";
/// Random characters in an API key's secret part.
pub const API_KEY_SECRET_CHARS: usize = 40;
/// Characters of the secret part shown publicly as the key's `prefix`.
pub const API_KEY_PUBLIC_CHARS: usize = 8;
/// How long a password-reset token is valid.
pub const PASSWORD_RESET_TTL_MINUTES: i64 = 30;
/// How long the old address can undo an e-mail change.
pub const EMAIL_UNDO_TTL_DAYS: i64 = 7;
/// Most e-mail changes whose undo is still open: past it a change is refused,
/// so that changes made in a row cannot push the first undo out.
pub const MAX_PENDING_EMAIL_UNDOS: usize = 5;
/// Random bytes in a verification token's secret part (and in a password-reset
/// or e-mail undo token's, which have the same shape).
pub const VERIFICATION_SECRET_BYTES: usize = 32;

/// Longest accepted webhook URL, in bytes.
pub const MAX_WEBHOOK_URL_BYTES: usize = 2048;
/// The prefix of every webhook signing secret.
pub const WEBHOOK_SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a webhook signing secret.
pub const WEBHOOK_SECRET_BYTES: usize = 32;

/// SHA-256 digest of a token or key.
pub type Sha256Hash = [u8; 32];

/// Why an account command is refused. Stable variants: the API maps them to
/// status codes. No message carries a password, token, key or e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("invalid e-mail address: {reason}")]
    InvalidEmail { reason: &'static str },
    #[error("the password must be at least {MIN_PASSWORD_BYTES} bytes long")]
    PasswordTooShort,
    #[error("the password must be at most {MAX_PASSWORD_BYTES} bytes long")]
    PasswordTooLong,
    #[error("this e-mail address is already registered")]
    EmailTaken,
    #[error("the new e-mail address is the current one")]
    EmailUnchanged,
    #[error("no such account")]
    AccountNotFound,
    #[error("the account already exists")]
    AlreadyRegistered,
    /// Wrong e-mail, wrong password, unknown or revoked API key: one error for
    /// all, so that nobody learns which accounts exist.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("the account is disabled (its deletion was requested)")]
    AccountDisabled,
    /// Depositing, ordering and setting a webhook wait for the first
    /// verification of the account's address.
    #[error("verify the e-mail address first (the link in the registration mail)")]
    EmailNotVerified,
    #[error("the account's personal data was erased")]
    AccountErased,
    #[error("the e-mail address is already verified")]
    AlreadyVerified,
    #[error("invalid verification token")]
    VerificationTokenInvalid,
    #[error("the verification token has expired; ask for a new one")]
    VerificationTokenExpired,
    #[error("the verification token was already used")]
    VerificationTokenUsed,
    /// A verification mail was sent less than [`VERIFICATION_RESEND_MINUTES`]
    /// ago.
    #[error("a verification mail was sent moments ago; wait for it")]
    VerificationRecentlySent,
    #[error(
        "the account still has active orders; wait until they are completed, cancelled or expired"
    )]
    ActiveOrders,
    #[error("the deletion of this account was already requested")]
    DeletionAlreadyRequested,
    /// The wallet has money on it and the customer did not confirm that it
    /// moves to unclaimed balances at the erasure.
    #[error(
        "the wallet has {available} USD available, which would move to unclaimed balances \
         at the erasure; spend it, or confirm that it is forfeited"
    )]
    BalanceNotForfeited { available: Micros },
    #[error("no deletion of this account is pending")]
    NoDeletionPending,
    #[error("the {DELETION_GRACE_DAYS}-day window to withdraw the deletion is over")]
    DeletionWindowOver,
    #[error("the account's erasure is not due yet")]
    ErasureNotDue,
    #[error("at most {MAX_LIVE_API_KEYS} API keys may be active at once; revoke one first")]
    TooManyApiKeys,
    #[error("no such API key (or it is already revoked)")]
    ApiKeyNotFound,
    /// A live key used from an address outside its allow-list.
    #[error("this API key is not accepted from this address")]
    ApiKeyIpNotAllowed,
    #[error("invalid API key label: {reason}")]
    InvalidApiKeyLabel { reason: &'static str },
    #[error("invalid address allow-list: {reason}")]
    InvalidAllowedIps { reason: &'static str },
    /// The reason names the rule broken, never the URL.
    #[error("invalid webhook URL: {reason}")]
    InvalidWebhookUrl { reason: &'static str },
    /// A password-reset or e-mail undo token that is malformed, unknown,
    /// superseded or of an unknown account.
    #[error("invalid recovery token")]
    RecoveryTokenInvalid,
    #[error("the recovery token has expired")]
    RecoveryTokenExpired,
    #[error("the recovery token was already used")]
    RecoveryTokenUsed,
    #[error(
        "the old address was registered by another account since; the change cannot be undone"
    )]
    EmailUndoAddressTaken,
    #[error("at most {MAX_PENDING_EMAIL_UNDOS} e-mail changes within {EMAIL_UNDO_TTL_DAYS} days")]
    TooManyEmailChanges,
    /// The password was right; the account also needs a TOTP or recovery code.
    #[error("two-factor authentication is on: a code from the authenticator app or a recovery code is needed")]
    TwoFactorRequired,
    /// A wrong, reused or expired TOTP code, or an unknown or spent recovery
    /// code: one error for all.
    #[error("invalid two-factor code")]
    TwoFactorCodeInvalid,
    #[error("two-factor authentication is already on")]
    TwoFactorAlreadyEnabled,
    #[error("no two-factor enrolment is pending; start one first")]
    TwoFactorNotPending,
    #[error("two-factor authentication is not on")]
    TwoFactorNotEnabled,
}
