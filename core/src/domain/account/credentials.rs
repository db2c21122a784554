//! E-mail addresses, passwords and what bcrypt is given for them, the key of the
//! e-mail lookup hash, and the secrets handed out: verification tokens, API keys
//! and webhook signing secrets.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::{
    AccountError, Sha256Hash, API_KEY_PREFIX, API_KEY_PUBLIC_CHARS, API_KEY_SECRET_CHARS,
    MAX_EMAIL_BYTES, MAX_EMAIL_LOCAL_BYTES, MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES,
    VERIFICATION_SECRET_BYTES, WEBHOOK_SECRET_BYTES, WEBHOOK_SECRET_PREFIX,
};
use crate::domain::ids::AccountId;
use crate::log::StreamName;

/// A secret string shown once to its owner (a verification token, an API key).
/// Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub(super) fn new(secret: String) -> Secret {
        Secret(secret)
    }

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

/// A new webhook signing secret from 32 random bytes: `whsec_` and 43 URL-safe
/// base64 characters. Receivers use the whole string as the HMAC key.
pub fn make_webhook_secret(random: &[u8; WEBHOOK_SECRET_BYTES]) -> Secret {
    Secret(format!(
        "{WEBHOOK_SECRET_PREFIX}{}",
        base64(random, URL_SAFE_ALPHABET, false)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::account::fixtures::*;

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
    fn webhook_secrets_are_prefixed_url_safe_and_random() {
        let secret = make_webhook_secret(&[0xfb; 32]);
        let text = secret.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(text.len(), 6 + 43);
        assert!(text[6..].bytes().all(|b| URL_SAFE_ALPHABET.contains(&b)));
        assert_ne!(make_webhook_secret(&[1; 32]), secret);
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }
}
