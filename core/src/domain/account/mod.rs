//! The account aggregate (stream `account-<hex>`) and the e-mail reservation
//! aggregate (stream `email-<hex>`): pure state, events and decisions. The
//! command service that runs them over the log is [`super::accounts`].
//!
//! # Personal data
//!
//! The e-mail address and the bcrypt hash of the password are personal data: they
//! travel in [`Personal`] fields, sealed in the log under the account's vault
//! subject ([`AccountId::subject`]), and read back as [`Personal::Erased`] once
//! that subject is erased. The state then reports [`Account::is_erased`].
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
//! - API key: `nx_<account: 32 hex>_<secret: 40 chars of the URL-safe base64
//!   alphabet (240 random bits)>`. Its public `prefix` (for lists) is the first 8
//!   characters of the secret part, leaving 192 secret bits.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::aggregate::Aggregate;
use super::codec::{EventBody, Personal};
use super::ids::{AccountId, ApiKeyId};
use crate::log::StreamName;
use crate::{domain_events, personal_event_body};

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
/// The prefix of every API key.
pub const API_KEY_PREFIX: &str = "nx_";
/// Random characters in an API key's secret part.
pub const API_KEY_SECRET_CHARS: usize = 40;
/// Characters of the secret part shown publicly as the key's `prefix`.
pub const API_KEY_PUBLIC_CHARS: usize = 8;
/// Random bytes in a verification token's secret part.
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
    #[error(
        "the account still has active orders; wait until they are completed, cancelled or expired"
    )]
    ActiveOrders,
    #[error("the deletion of this account was already requested")]
    DeletionAlreadyRequested,
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
    /// The reason names the rule broken, never the URL.
    #[error("invalid webhook URL: {reason}")]
    InvalidWebhookUrl { reason: &'static str },
}

// ---------------------------------------------------------------------------
// Secrets, e-mail addresses, passwords
// ---------------------------------------------------------------------------

/// A secret string shown once to its owner (a verification token, an API key).
/// Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// An e-mail address in normal form. Debug never prints it.
///
/// Normalization ([`Email::parse`]):
/// - surrounding whitespace is trimmed;
/// - at most [`MAX_EMAIL_BYTES`] (254) bytes remain, none of them a space, other
///   whitespace or a control character;
/// - exactly one `@`, with a non-empty local part of at most 64 bytes (so quoted
///   local parts containing `@` are not accepted);
/// - the local part is a dot-atom: letters, digits, ``!#$%&'*+-/=?^_`{|}~`` and
///   non-ASCII characters, with `.` only between them (no quoted local parts, no
///   comments);
/// - the domain is a host name with at least one `.`: labels of 1–63 bytes of
///   letters, digits and `-`, never at a label's start or end (`a@b..c`, `a@.b`,
///   `a@b.`, `a@-b.com` and address literals like `a@[1.2.3.4]` are refused);
/// - the domain is lowercased; the local part keeps its case, as typed, and is
///   where mail is sent.
///
/// Uniqueness and login use the *lookup form*, the whole address lowercased
/// ([`Email::lookup_form`]): `Alice@Example.com` and `alice@example.com` are one
/// account, as every mainstream mail provider treats them.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

/// Longest label of a domain name (RFC 1035).
const MAX_DOMAIN_LABEL_BYTES: usize = 63;

/// A character of an unquoted local part: RFC 5322 `atext`, `.`, or any
/// non-ASCII character (RFC 6531). Quoted local parts are not taken: every
/// address accepted here can be mailed as typed.
fn local_part_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || !c.is_ascii() || ".!#$%&'*+-/=?^_`{|}~".contains(c)
}

impl Email {
    pub fn parse(raw: &str) -> Result<Email, AccountError> {
        let invalid = |reason| Err(AccountError::InvalidEmail { reason });
        let text = raw.trim();
        if text.is_empty() {
            return invalid("empty");
        }
        if text.len() > MAX_EMAIL_BYTES {
            return invalid("longer than 254 bytes");
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid("contains a space or a control character");
        }
        let Some((local, domain)) = text.split_once('@') else {
            return invalid("no '@'");
        };
        if domain.contains('@') {
            return invalid("more than one '@'");
        }
        if local.is_empty() {
            return invalid("empty local part");
        }
        if local.len() > MAX_EMAIL_LOCAL_BYTES {
            return invalid("local part longer than 64 bytes");
        }
        if !local.chars().all(local_part_char) {
            return invalid("the local part has a character mail does not take unquoted");
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return invalid("the local part starts or ends with '.', or has '..'");
        }
        if !domain.contains('.') {
            return invalid("the domain has no '.'");
        }
        for label in domain.split('.') {
            if label.is_empty() {
                return invalid("the domain has an empty label");
            }
            if label.len() > MAX_DOMAIN_LABEL_BYTES {
                return invalid("a domain label is longer than 63 bytes");
            }
            if !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
                return invalid("the domain has a character a host name cannot have");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return invalid("a domain label starts or ends with '-'");
            }
        }
        Ok(Email(format!("{local}@{}", domain.to_lowercase())))
    }

    /// The normalized address, as mail is sent to it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An address read back from an event, normalized when it was written.
    pub(crate) fn from_stored(normalized: String) -> Email {
        Email(normalized)
    }

    /// The form uniqueness and login compare: the whole address lowercased.
    pub fn lookup_form(&self) -> String {
        self.0.to_lowercase()
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

/// The secret key of the e-mail lookup hash (32 bytes). Debug never prints it.
pub struct LookupKey([u8; 32]);

impl LookupKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// HMAC-SHA256(key, lookup form of the address).
    pub fn email_hash(&self, email: &Email) -> Sha256Hash {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(email.lookup_form().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The reservation stream of an address: `email-<64 hex digits>`.
    pub fn email_stream(&self, email: &Email) -> StreamName {
        StreamName::new(format!("email-{}", hex::encode(self.email_hash(email))))
            .expect("a prefix and hex digits make a valid stream name")
    }
}

impl Clone for LookupKey {
    fn clone(&self) -> Self {
        Self(self.0)
    }
}

impl fmt::Debug for LookupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LookupKey(..)")
    }
}

impl Drop for LookupKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl zeroize::ZeroizeOnDrop for LookupKey {}

/// Checks a new password's length: [`MIN_PASSWORD_BYTES`] to
/// [`MAX_PASSWORD_BYTES`] bytes of UTF-8, counted as given (no trimming, no
/// Unicode normalization).
pub fn check_password(password: &str) -> Result<(), AccountError> {
    match password.len() {
        n if n < MIN_PASSWORD_BYTES => Err(AccountError::PasswordTooShort),
        n if n > MAX_PASSWORD_BYTES => Err(AccountError::PasswordTooLong),
        _ => Ok(()),
    }
}

/// What bcrypt is given for a password: the standard base64 (with padding, no
/// newline) of SHA-256 of the password's bytes, 44 ASCII bytes.
///
/// bcrypt reads at most 72 bytes and stops at a NUL; this pre-hash makes every
/// byte of a password up to 128 bytes count and never contains a NUL. The stored
/// hash is the usual `$2b$<cost>$…` string of bcrypt over these 44 bytes.
pub fn bcrypt_input(password: &str) -> String {
    base64(
        &Sha256::digest(password.as_bytes()),
        STANDARD_ALPHABET,
        true,
    )
}

pub(crate) const STANDARD_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub(crate) const URL_SAFE_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 (RFC 4648) of `bytes` in `alphabet`, with or without `=` padding.
pub(crate) fn base64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let symbols = chunk.len() + 1;
        for i in 0..4 {
            if i < symbols {
                out.push(char::from(alphabet[(n >> (18 - 6 * i)) as usize & 63]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// SHA-256 of a token or key string.
pub fn secret_hash(secret: &str) -> Sha256Hash {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two digests in time independent of where they differ.
pub fn digests_equal(a: &Sha256Hash, b: &Sha256Hash) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Parses the 32-hex-digit account id at the start of a token or key.
fn parse_account_hex(text: &str) -> Option<AccountId> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    AccountId::parse(text)
}

/// A verification token made from 32 random bytes: the token (to be mailed) and
/// the hash that is stored.
pub fn make_verification_token(
    account: AccountId,
    random: &[u8; VERIFICATION_SECRET_BYTES],
) -> (Secret, Sha256Hash) {
    let token = format!("{}.{}", account, base64(random, URL_SAFE_ALPHABET, false));
    let hash = secret_hash(&token);
    (Secret(token), hash)
}

/// The account a verification token names and the token's hash; `None` if it is
/// not shaped like one.
pub fn parse_verification_token(token: &str) -> Option<(AccountId, Sha256Hash)> {
    let (account, secret) = token.split_once('.')?;
    let account = parse_account_hex(account)?;
    let shaped = secret.len() == 43 && secret.bytes().all(|b| URL_SAFE_ALPHABET.contains(&b));
    shaped.then(|| (account, secret_hash(token)))
}

/// A new API key made from 40 random bytes: the key (shown once), its hash and
/// its public prefix.
pub fn make_api_key(
    account: AccountId,
    random: &[u8; API_KEY_SECRET_CHARS],
) -> (Secret, Sha256Hash, String) {
    // 256 is a multiple of 64: the low 6 bits of a uniform byte are uniform.
    let secret: String = random
        .iter()
        .map(|b| char::from(URL_SAFE_ALPHABET[usize::from(b & 63)]))
        .collect();
    let key = format!("{API_KEY_PREFIX}{account}_{secret}");
    let hash = secret_hash(&key);
    (Secret(key), hash, secret[..API_KEY_PUBLIC_CHARS].to_owned())
}

/// The account an API key names and the key's hash; `None` if it is not shaped
/// like one.
pub fn parse_api_key(key: &str) -> Option<(AccountId, Sha256Hash)> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    if rest.len() != 32 + 1 + API_KEY_SECRET_CHARS || !rest.is_ascii() {
        return None;
    }
    let (account, secret) = rest.split_at(32);
    let account = parse_account_hex(account)?;
    let secret = secret.strip_prefix('_')?;
    secret
        .bytes()
        .all(|b| URL_SAFE_ALPHABET.contains(&b))
        .then(|| (account, secret_hash(key)))
}

// ---------------------------------------------------------------------------
// Webhook endpoints
// ---------------------------------------------------------------------------

/// Which webhook URLs are accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookUrlPolicy {
    /// Also accept `http://` and hosts that are loopback, private, link-local or
    /// otherwise internal addresses (`localhost`, `127.0.0.1`, `10.…`, `[::1]`):
    /// for development only. Off by default.
    pub allow_insecure: bool,
}

/// A customer's webhook URL in normal form. Debug never prints it (a path or
/// query may carry the receiver's own token).
///
/// Accepted ([`WebhookUrl::parse`]):
/// - surrounding whitespace is trimmed; at most [`MAX_WEBHOOK_URL_BYTES`] bytes of
///   printable ASCII remain (no spaces; non-ASCII must be percent-encoded or
///   punycode);
/// - the scheme is `https` (or `http` under [`WebhookUrlPolicy::allow_insecure`]);
/// - no user name or password (`user:pass@host`) and no fragment (`#…`);
/// - a host name of letters, digits, `-` and `.` without empty labels, an IPv4
///   address in dotted-quad form or a bracketed IPv6 address, and an optional
///   port 1–65535; a host whose last label is numeric must be a dotted quad
///   (`127.1` or `2130706433` are refused, since resolvers read them as
///   addresses);
/// - unless insecure URLs are allowed, the host is not `localhost` (or under
///   `.localhost`) nor a loopback, private, link-local, shared, unspecified,
///   broadcast, multicast or documentation address.
///
/// The scheme and host are lowercased; path and query are kept as given.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    pub fn parse(raw: &str, policy: WebhookUrlPolicy) -> Result<WebhookUrl, AccountError> {
        let invalid = |reason| Err(AccountError::InvalidWebhookUrl { reason });
        let text = raw.trim();
        if text.is_empty() {
            return invalid("empty");
        }
        if text.len() > MAX_WEBHOOK_URL_BYTES {
            return invalid("longer than 2048 bytes");
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return invalid("only printable ASCII without spaces is allowed");
        }
        if text.contains('#') {
            return invalid("a fragment (#) is not allowed");
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return invalid("no scheme (https://)");
        };
        let scheme = scheme.to_ascii_lowercase();
        match scheme.as_str() {
            "https" => {}
            "http" if policy.allow_insecure => {}
            "http" => return invalid("https is required"),
            _ => return invalid("the scheme must be https"),
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        if authority.contains('@') {
            return invalid("credentials in the URL are not allowed");
        }
        let (host, port) = split_host_port(authority)?;
        if let Some(port) = port {
            match port.parse::<u16>() {
                Ok(p) if p > 0 && !port.starts_with('0') => {}
                _ => return invalid("the port must be a number from 1 to 65535"),
            }
        }
        let host = host.to_ascii_lowercase();
        let internal = host_is_internal(&host)?;
        if internal && !policy.allow_insecure {
            return invalid("the host is a local or private address");
        }
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        Ok(WebhookUrl(format!("{scheme}://{host}{port}{path}")))
    }

    /// The normalized URL, where deliveries are sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookUrl(<redacted>)")
    }
}

/// Splits `host[:port]` or `[v6][:port]`.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), AccountError> {
    let invalid = |reason| Err(AccountError::InvalidWebhookUrl { reason });
    if authority.is_empty() {
        return invalid("no host");
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return invalid("an IPv6 address must end with ']'");
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return invalid("unexpected text after the IPv6 address"),
            },
        };
        return Ok((&authority[..v6.len() + 2], port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((authority, None)),
    }
}

/// Whether a (lowercased) host names this machine or an internal network;
/// refuses hosts that are not shaped like a name or an address.
fn host_is_internal(host: &str) -> Result<bool, AccountError> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let invalid = |reason| Err(AccountError::InvalidWebhookUrl { reason });
    if let Some(inner) = host.strip_prefix('[') {
        let Ok(ip) = inner.trim_end_matches(']').parse::<Ipv6Addr>() else {
            return invalid("not a valid IPv6 address");
        };
        return Ok(ip_is_internal(std::net::IpAddr::V6(ip)));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return invalid("not a valid host name");
    }
    let labels: Vec<&str> = name.split('.').collect();
    let well_formed = labels.iter().all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    });
    if !well_formed {
        return invalid("not a valid host name");
    }
    let last = labels.last().copied().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") {
        let Ok(ip) = name.parse::<Ipv4Addr>() else {
            return invalid("a numeric host must be a dotted-quad IPv4 address");
        };
        return Ok(ipv4_is_internal(ip));
    }
    Ok(name == "localhost" || name.ends_with(".localhost"))
}

/// Whether an address is loopback, private, link-local or otherwise not a
/// public internet host: webhooks never go there (checked on the URL, and again
/// on every address its host name resolves to when delivering).
pub fn ip_is_internal(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => ipv4_is_internal(v4),
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return ipv4_is_internal(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
        }
    }
}

fn ipv4_is_internal(ip: std::net::Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240
}

/// A new webhook signing secret from 32 random bytes: `whsec_` and 43 URL-safe
/// base64 characters. Receivers use the whole string as the HMAC key.
pub fn make_webhook_secret(random: &[u8; WEBHOOK_SECRET_BYTES]) -> Secret {
    Secret(format!(
        "{WEBHOOK_SECRET_PREFIX}{}",
        base64(random, URL_SAFE_ALPHABET, false)
    ))
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/// The personal part of [`AccountRegistered`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredPii {
    /// The normalized address.
    pub email: String,
    /// bcrypt (`$2b$…`) of [`bcrypt_input`] of the password.
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
}
impl EventBody for AccountDeletionRequested {}

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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    pub key_id: ApiKeyId,
    /// SHA-256 of the whole key.
    pub key_hash: Sha256Hash,
    /// The first characters of the key's secret part, public (for lists).
    pub prefix: String,
    pub at: DateTime<Utc>,
}
impl EventBody for ApiKeyCreated {}

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
    pub url: String,
    /// `whsec_…` ([`make_webhook_secret`]).
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
        AccountDeletionRequested(AccountDeletionRequested) = 1,
        AccountDeletionWithdrawn(AccountDeletionWithdrawn) = 1,
        ApiKeyCreated(ApiKeyCreated) = 1,
        ApiKeyRevoked(ApiKeyRevoked) = 1,
        WebhookEndpointSet(WebhookEndpointSet) = 1,
        WebhookEndpointRemoved(WebhookEndpointRemoved) = 1,
        AccountErased(AccountErased) = 1,
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

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

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

/// An API key of the account.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub hash: Sha256Hash,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("prefix", &self.prefix)
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
    pub password_hash: Personal<String>,
    pub verified: bool,
    pub verified_at: Option<DateTime<Utc>>,
    pub verification: Option<PendingVerification>,
    /// The hash of the token that verified the current address, to tell a reused
    /// token from a wrong one.
    pub used_token: Option<Sha256Hash>,
    pub objection: bool,
    /// Every key ever created, revoked ones included, oldest first.
    pub api_keys: Vec<ApiKey>,
    /// Where order events are posted, if anywhere.
    pub webhook: Option<WebhookEndpoint>,
    /// When the erasure of the personal data was recorded ([`AccountErased`]).
    pub erased_at: Option<DateTime<Utc>>,
}

impl Account {
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
                created_at: k.created_at,
                revoked_at: k.revoked_at,
            })
            .collect()
    }

    /// The account, if it exists and its data is not erased.
    fn existing(&self) -> Result<AccountId, AccountError> {
        match self.id {
            None => Err(AccountError::AccountNotFound),
            Some(_) if self.is_erased() => Err(AccountError::AccountErased),
            Some(id) => Ok(id),
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
            }
            AccountEvent::AccountEmailVerified(e) => {
                self.verified = true;
                self.verified_at = Some(e.at);
                self.verification = None;
                self.used_token = Some(e.token_hash);
            }
            AccountEvent::AccountPasswordChanged(e) => {
                self.password_hash = map_personal(&e.pii, |p| p.password_hash.clone());
            }
            AccountEvent::AccountEmailChanged(e) => {
                self.email = map_personal(&e.pii, |p| p.email.clone());
                self.verified = false;
                self.verified_at = None;
                self.verification = None;
                self.used_token = None;
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
                self.email = Personal::Erased;
                self.password_hash = Personal::Erased;
                self.webhook = None;
                self.verification = None;
            }
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

// ---------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------

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
/// active orders (`has_active_orders`, as the order side reports it).
pub fn decide_request_deletion(
    state: &Account,
    has_active_orders: bool,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    state.existing()?;
    if matches!(state.status, AccountStatus::DeletionPending { .. }) {
        return Err(AccountError::DeletionAlreadyRequested);
    }
    if has_active_orders {
        return Err(AccountError::ActiveOrders);
    }
    Ok(vec![AccountEvent::AccountDeletionRequested(
        AccountDeletionRequested {
            at: now,
            erase_due_at: now + Duration::days(DELETION_GRACE_DAYS),
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

/// Records the erasure of the account's personal data: only an account whose
/// deletion is pending and due (`now` at or after `erase_due_at`) can be erased,
/// and only once. The caller erases the account's vault subject before
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
    match state.status {
        AccountStatus::DeletionPending { erase_due_at, .. } if now >= erase_due_at => {
            Ok(vec![AccountEvent::AccountErased(AccountErased { at: now })])
        }
        AccountStatus::DeletionPending { .. } => Err(AccountError::ErasureNotDue),
        _ => Err(AccountError::NoDeletionPending),
    }
}

/// Creates an API key (made by [`make_api_key`]); at most [`MAX_LIVE_API_KEYS`]
/// unrevoked keys at once.
pub fn decide_create_api_key(
    state: &Account,
    key_id: ApiKeyId,
    key_hash: Sha256Hash,
    prefix: &str,
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
pub fn decide_set_webhook(
    state: &Account,
    url: &WebhookUrl,
    secret: &Secret,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let account = state.enabled()?;
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

/// The live key whose hash is `key_hash`, on an enabled account. Unknown and
/// revoked keys are [`AccountError::InvalidCredentials`]; a valid key of a
/// disabled (or erased) account is [`AccountError::AccountDisabled`]. Every
/// stored hash is compared, in constant time each.
pub fn check_api_key(state: &Account, key_hash: &Sha256Hash) -> Result<ApiKeyId, AccountError> {
    let mut found = None;
    for key in &state.api_keys {
        if digests_equal(&key.hash, key_hash) && key.revoked_at.is_none() {
            found = Some(key.id);
        }
    }
    let key = found.ok_or(AccountError::InvalidCredentials)?;
    match state.enabled() {
        Ok(_) => Ok(key),
        Err(AccountError::AccountNotFound) => Err(AccountError::InvalidCredentials),
        Err(_) => Err(AccountError::AccountDisabled),
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
    use crate::domain::aggregate::given;
    use crate::domain::codec::DomainEvent;
    use uuid::Uuid;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_000_000, 0).unwrap()
    }

    fn id() -> AccountId {
        AccountId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001))
    }

    fn email(text: &str) -> Email {
        Email::parse(text).unwrap()
    }

    const HASH: &str = "$2b$04$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234";

    fn token(n: u8) -> NewVerification {
        NewVerification {
            token_hash: [n; 32],
            ttl: Duration::hours(DEFAULT_VERIFICATION_TTL_HOURS),
        }
    }

    fn registered() -> Vec<AccountEvent> {
        decide_register(
            &Account::default(),
            id(),
            &email("alice@example.com"),
            HASH,
            token(1),
            t0(),
        )
        .unwrap()
    }

    fn verified() -> Vec<AccountEvent> {
        let mut events = registered();
        events.push(AccountEvent::AccountEmailVerified(AccountEmailVerified {
            token_hash: [1; 32],
            at: t0(),
        }));
        events
    }

    fn deletion_requested(at: DateTime<Utc>) -> AccountEvent {
        AccountEvent::AccountDeletionRequested(AccountDeletionRequested {
            at,
            erase_due_at: at + Duration::days(30),
        })
    }

    fn key_created(n: u128) -> AccountEvent {
        AccountEvent::ApiKeyCreated(ApiKeyCreated {
            key_id: ApiKeyId(Uuid::from_u128(n)),
            key_hash: [n as u8; 32],
            prefix: format!("pfx{n}"),
            at: t0(),
        })
    }

    #[test]
    fn email_normalization_table() {
        let good = [
            ("alice@example.com", "alice@example.com"),
            ("  Alice@Example.COM \t\n", "Alice@example.com"),
            ("a.b+tag@sub.EXAMPLE.co.uk", "a.b+tag@sub.example.co.uk"),
            ("ÉLodie@Exämple.DE", "ÉLodie@exämple.de"),
            (
                "o'brien+x-y_z@mail-1.example.org",
                "o'brien+x-y_z@mail-1.example.org",
            ),
        ];
        for (raw, normal) in good {
            assert_eq!(Email::parse(raw).unwrap().as_str(), normal, "{raw:?}");
        }
        // Labels of at most 63 bytes: three of 61 and `com`.
        let label = "d".repeat(61);
        let at_limit = format!("{}@{label}.{label}.{label}.com", "l".repeat(64));
        assert_eq!(at_limit.len(), 254);
        Email::parse(&at_limit).unwrap();

        let over = format!("{}@d{label}.{label}.{label}.com", "l".repeat(64));
        assert_eq!(over.len(), 255);
        let long_label = format!("a@{}.com", "d".repeat(64));
        let long_local = format!("{}@example.com", "l".repeat(65));
        let bad = [
            "",
            "   ",
            "alice",
            "alice@",
            "@example.com",
            "alice@example",
            "alice@@example.com",
            "a@b@example.com",
            "alice@example..com",
            "alice@.example.com",
            "alice@example.com.",
            "ali ce@example.com",
            "alice@exa mple.com",
            "alice\u{0}@example.com",
            "alice\u{7f}@example.com",
            "alice@example.com\u{85}x",
            "ali\tce@example.com",
            "x2.@b.com",
            ".x3@b.com",
            "x..y@b.com",
            "a@-b.com",
            "x6@b-.com",
            "x7(c)@b.com",
            "x8<@b.com",
            "x9\"q\"@b.com",
            "x10@[1.2.3.4]",
            "x11@b_c.com",
            "x12,y@b.com",
            over.as_str(),
            long_local.as_str(),
            long_label.as_str(),
        ];
        for raw in bad {
            assert!(
                matches!(Email::parse(raw), Err(AccountError::InvalidEmail { .. })),
                "{raw:?} should be refused"
            );
        }
    }

    #[test]
    fn lookup_form_ignores_case_and_the_stream_hides_the_address() {
        let key = LookupKey::new([7; 32]);
        let a = email("Alice@Example.com");
        let b = email("alice@example.com");
        assert_ne!(a, b);
        assert_eq!(key.email_stream(&a), key.email_stream(&b));
        assert_ne!(
            key.email_stream(&a),
            key.email_stream(&email("bob@example.com"))
        );
        let other_key = LookupKey::new([8; 32]);
        assert_ne!(key.email_stream(&a), other_key.email_stream(&a));
        let stream = key.email_stream(&a);
        assert!(stream.as_str().starts_with("email-"));
        assert_eq!(stream.as_str().len(), 6 + 64);
        assert!(!stream.as_str().contains("alice"));
        assert_eq!(format!("{key:?}"), "LookupKey(..)");
        assert_eq!(format!("{a:?}"), "Email(<redacted>)");
    }

    #[test]
    fn password_limits() {
        assert_eq!(
            check_password("123456789"),
            Err(AccountError::PasswordTooShort)
        );
        assert_eq!(check_password(""), Err(AccountError::PasswordTooShort));
        assert_eq!(check_password("1234567890"), Ok(()));
        assert_eq!(check_password(&"x".repeat(128)), Ok(()));
        assert_eq!(
            check_password(&"x".repeat(129)),
            Err(AccountError::PasswordTooLong)
        );
        // Bytes, not characters: 5 two-byte characters are 10 bytes.
        assert_eq!(check_password("ééééé"), Ok(()));
        assert_eq!(check_password("éééé"), Err(AccountError::PasswordTooShort));
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes(), STANDARD_ALPHABET, true), expected);
        }
        assert_eq!(base64(&[0xfb, 0xff], STANDARD_ALPHABET, false), "+/8");
        assert_eq!(base64(&[0xfb, 0xff], URL_SAFE_ALPHABET, false), "-_8");
    }

    #[test]
    fn bcrypt_input_is_44_bytes_and_every_password_byte_counts() {
        let a = "x".repeat(128);
        let mut b = a.clone();
        b.replace_range(127.., "y");
        let (ia, ib) = (bcrypt_input(&a), bcrypt_input(&b));
        assert_eq!(ia.len(), 44);
        assert!(ia.ends_with('='));
        assert_ne!(ia, ib, "a difference past byte 72 changes the input");
        assert!(!ia.contains('\0'));
        // SHA-256("abc") in standard base64.
        assert_eq!(
            bcrypt_input("abc"),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }

    #[test]
    fn tokens_and_keys_round_trip_and_malformed_ones_do_not_parse() {
        let (token, hash) = make_verification_token(id(), &[9; 32]);
        assert_eq!(parse_verification_token(token.expose()), Some((id(), hash)));
        assert_eq!(token.expose().len(), 32 + 1 + 43);
        assert_eq!(format!("{token:?}"), "Secret(<redacted>)");
        let text = token.expose();
        for bad in [
            "",
            ".",
            &text[..text.len() - 1],
            &format!("{text}x"),
            &text.replacen('.', "-", 1),
            &format!("{}+{}", &text[..40], &text[41..]),
        ] {
            assert_eq!(parse_verification_token(bad), None, "{bad:?}");
        }

        let (key, hash, prefix) = make_api_key(id(), &[0xfe; 40]);
        let text = key.expose();
        assert!(text.starts_with("nx_"));
        assert_eq!(text.len(), 3 + 32 + 1 + 40);
        assert_eq!(prefix.len(), 8);
        assert_eq!(&text[36..44], prefix);
        assert_eq!(parse_api_key(text), Some((id(), hash)));
        for bad in [
            "",
            "nx_",
            &text[..text.len() - 1],
            &format!("{text}A"),
            &text.replacen("nx_", "xx_", 1),
            &format!("{}.{}", &text[..35], &text[36..]),
            &format!("{}=", &text[..text.len() - 1]),
            &format!("{}é", &text[..text.len() - 2]),
        ] {
            assert_eq!(parse_api_key(bad), None, "{bad:?}");
        }
        // Different randomness, different keys.
        assert_ne!(make_api_key(id(), &[1; 40]).1, hash);
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
            .when(|s| decide_request_deletion(s, false, t0()))
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
            .when(|s| decide_request_deletion(s, true, t0()))
            .then_err(AccountError::ActiveOrders);
        let mut events = verified();
        events.push(deletion_requested(t0()));
        given::<Account>(events)
            .when(|s| decide_request_deletion(s, false, t0()))
            .then_err(AccountError::DeletionAlreadyRequested);
        given::<Account>(vec![])
            .when(|s| decide_request_deletion(s, false, t0()))
            .then_err(AccountError::AccountNotFound);
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
        let state = given::<Account>(registered())
            .when(|s| decide_create_api_key(s, key_id, hash, &prefix, t0()))
            .then(vec![AccountEvent::ApiKeyCreated(ApiKeyCreated {
                key_id,
                key_hash: hash,
                prefix: prefix.clone(),
                at: t0(),
            })]);
        let (_, presented) = parse_api_key(key.expose()).unwrap();
        assert_eq!(check_api_key(&state, &presented), Ok(key_id));
        assert_eq!(
            check_api_key(&state, &[0; 32]),
            Err(AccountError::InvalidCredentials)
        );
        assert_eq!(state.api_key_summaries().len(), 1);
        assert!(!format!("{state:?}").contains(&hex::encode(hash)));

        // The limit counts live keys only.
        let mut events = registered();
        events.extend((1..=20).map(key_created));
        given::<Account>(events.clone())
            .when(|s| decide_create_api_key(s, key_id, hash, &prefix, t0()))
            .then_err(AccountError::TooManyApiKeys);
        events.push(AccountEvent::ApiKeyRevoked(ApiKeyRevoked {
            key_id: ApiKeyId(Uuid::from_u128(7)),
            at: t0(),
        }));
        given::<Account>(events)
            .when(|s| decide_create_api_key(s, key_id, hash, &prefix, t0()))
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
            check_api_key(&revoked, &[1; 32]),
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
            check_api_key(&disabled, &[1; 32]),
            Err(AccountError::AccountDisabled)
        );
        given::<Account>(events.clone())
            .when(|s| decide_create_api_key(s, key_id, hash, &prefix, t0()))
            .then_err(AccountError::AccountDisabled);
        // Revoking still works there.
        given::<Account>(events)
            .when(|s| decide_revoke_api_key(s, ApiKeyId(Uuid::from_u128(1)), t0()))
            .result()
            .unwrap();
    }

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

    const STRICT: WebhookUrlPolicy = WebhookUrlPolicy {
        allow_insecure: false,
    };
    const INSECURE: WebhookUrlPolicy = WebhookUrlPolicy {
        allow_insecure: true,
    };

    fn hook(url: &str) -> WebhookUrl {
        WebhookUrl::parse(url, STRICT).unwrap()
    }

    #[test]
    fn webhook_url_table() {
        let good = [
            (
                "https://hooks.example.com/nexus",
                "https://hooks.example.com/nexus",
            ),
            (
                "  HTTPS://Hooks.Example.COM:8443/In?Token=AbC  ",
                "https://hooks.example.com:8443/In?Token=AbC",
            ),
            ("https://example.com", "https://example.com"),
            ("https://example.com?x=1", "https://example.com?x=1"),
            ("https://93.184.216.34/h", "https://93.184.216.34/h"),
            (
                "https://[2606:2800:220:1::1]:443/h",
                "https://[2606:2800:220:1::1]:443/h",
            ),
            ("https://xn--exmple-cua.de/h", "https://xn--exmple-cua.de/h"),
        ];
        for (raw, normal) in good {
            assert_eq!(
                WebhookUrl::parse(raw, STRICT).unwrap().as_str(),
                normal,
                "{raw:?}"
            );
        }
        let at_limit = format!("https://example.com/{}", "p".repeat(2048 - 20));
        assert_eq!(at_limit.len(), 2048);
        WebhookUrl::parse(&at_limit, STRICT).unwrap();
        let over = format!("{at_limit}p");
        let bad = [
            ("", "empty"),
            ("example.com/hook", "no scheme"),
            ("ftp://example.com/", "the scheme"),
            ("http://example.com/", "https is required"),
            ("https://user:pass@example.com/", "credentials"),
            ("https://token@example.com/", "credentials"),
            ("https://example.com/#frag", "fragment"),
            ("https://exa mple.com/", "printable ASCII"),
            ("https://exämple.com/", "printable ASCII"),
            ("https:///path", "no host"),
            ("https://example.com:0/", "port"),
            ("https://example.com:65536/", "port"),
            ("https://example.com:/", "port"),
            ("https://example.com:08/", "port"),
            ("https://exa_mple.com/", "host name"),
            ("https://example..com/", "host name"),
            ("https://-example.com/", "host name"),
            ("https://[::1/", "IPv6"),
            ("https://[zz::1]/", "IPv6"),
            ("https://127.1/", "dotted-quad"),
            ("https://2130706433/", "dotted-quad"),
            ("https://0x7f.0x0.0x0.0x1/", "dotted-quad"),
            ("https://localhost/", "local or private"),
            ("https://api.localhost/", "local or private"),
            ("https://127.0.0.1:8080/", "local or private"),
            ("https://10.1.2.3/", "local or private"),
            ("https://172.16.0.1/", "local or private"),
            ("https://192.168.1.1/", "local or private"),
            (
                "https://169.254.169.254/latest/meta-data",
                "local or private",
            ),
            ("https://100.64.0.1/", "local or private"),
            ("https://0.0.0.0/", "local or private"),
            ("https://[::1]/", "local or private"),
            ("https://[fd00::1]/", "local or private"),
            ("https://[fe80::1]/", "local or private"),
            ("https://[::ffff:127.0.0.1]/", "local or private"),
            (over.as_str(), "2048"),
        ];
        for (raw, why) in bad {
            match WebhookUrl::parse(raw, STRICT) {
                Err(AccountError::InvalidWebhookUrl { reason }) => {
                    assert!(reason.contains(why), "{raw:?}: {reason}")
                }
                other => panic!("{raw:?} should be refused, got {other:?}"),
            }
        }
        // Development: plain HTTP and this machine are allowed; the rest holds.
        for raw in [
            "http://127.0.0.1:8080/hook",
            "http://localhost:3000/",
            "https://[::1]:9000/",
            "http://10.0.0.5/",
        ] {
            WebhookUrl::parse(raw, INSECURE).unwrap();
        }
        for raw in [
            "http://u:p@127.0.0.1/",
            "ftp://127.0.0.1/",
            "http://127.1/",
            "http://127.0.0.1/#x",
        ] {
            assert!(WebhookUrl::parse(raw, INSECURE).is_err(), "{raw:?}");
        }
        // Reasons never echo the URL.
        let err = WebhookUrl::parse("https://user:hunter2@example.com/", STRICT).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        assert_eq!(
            format!("{:?}", hook("https://example.com/t?k=s3cret")),
            "WebhookUrl(<redacted>)"
        );
    }

    #[test]
    fn webhook_secrets_are_prefixed_url_safe_and_random() {
        let secret = make_webhook_secret(&[0xfb; 32]);
        let text = secret.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(text.len(), 6 + 43);
        assert!(text[6..].bytes().all(|b| URL_SAFE_ALPHABET.contains(&b)));
        assert_ne!(make_webhook_secret(&[1; 32]), secret);
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
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

    #[test]
    fn a_newer_schema_version_is_refused() {
        assert!(EmailReservationEvent::decode("EmailReserved", 2, &[]).is_err());
    }
}
