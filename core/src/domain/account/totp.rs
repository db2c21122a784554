//! The second factor's values: one-time passwords (HOTP, RFC 4226; TOTP, RFC
//! 6238, over HMAC-SHA-1, which is what authenticator apps compute unless told
//! otherwise), the secret and its `otpauth://` URI, and the recovery codes.
//! Pure: the caller brings the random bytes and the time.

use std::fmt;

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;

use super::credentials::{digests_equal, secret_hash, Secret};
use super::Sha256Hash;
use crate::domain::ids::AccountId;

/// Bytes of a TOTP secret (160 bits, the HMAC-SHA-1 block RFC 4226 recommends).
pub const TOTP_SECRET_BYTES: usize = 20;
/// Length of a time step.
pub const TOTP_STEP_S: i64 = 30;
/// Digits of a code.
pub const TOTP_DIGITS: u32 = 6;
/// Steps accepted either side of the current one, for clocks that drift and
/// codes typed near a step's end.
pub const TOTP_SKEW_STEPS: u64 = 1;
/// Recovery codes handed out when two-factor authentication is turned on.
pub const RECOVERY_CODES: usize = 10;
/// Random bytes in a recovery code (80 bits: 16 base32 characters).
pub const RECOVERY_CODE_BYTES: usize = 10;
/// The issuer named in the `otpauth://` URI (what authenticator apps show).
pub const TOTP_ISSUER: &str = "Nexus";

/// A TOTP secret. Debug never prints it; the bytes are wiped on drop.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpSecretPii {
    pub secret: Vec<u8>,
}

impl fmt::Debug for TotpSecretPii {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecretPii(<redacted>)")
    }
}

impl Drop for TotpSecretPii {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

/// HOTP (RFC 4226 §5.3): HMAC-SHA-1 of the big-endian counter, dynamically
/// truncated to 31 bits, modulo 10^`digits`.
pub fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    // The low 4 bits of the last byte pick where the 4 bytes are read.
    let offset = usize::from(hash[hash.len() - 1] & 0x0f);
    let word = u32::from_be_bytes([
        hash[offset],
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    (word & 0x7fff_ffff) % 10u32.pow(digits)
}

/// The TOTP time step `at` falls in (RFC 6238 §4: T0 = 0, X = 30 s); `None`
/// before 1970.
pub fn totp_step(at: DateTime<Utc>) -> Option<u64> {
    u64::try_from(at.timestamp().div_euclid(TOTP_STEP_S)).ok()
}

/// The code of a step, as typed: [`TOTP_DIGITS`] digits, zero-padded.
pub fn totp_code(key: &[u8], step: u64) -> String {
    format!(
        "{:0width$}",
        hotp(key, step, TOTP_DIGITS),
        width = TOTP_DIGITS as usize
    )
}

/// The step whose code `code` is, among the current step ± [`TOTP_SKEW_STEPS`]
/// and after `last_used` (a step accepted once is never accepted again, nor any
/// before it); `None` if it is none of them or not [`TOTP_DIGITS`] digits.
/// Every candidate is compared, in constant time each.
pub fn check_totp(
    key: &[u8],
    code: &str,
    now: DateTime<Utc>,
    last_used: Option<u64>,
) -> Option<u64> {
    let shaped = code.len() == TOTP_DIGITS as usize && code.bytes().all(|b| b.is_ascii_digit());
    let current = totp_step(now)?;
    if !shaped {
        return None;
    }
    let typed = secret_hash(code);
    let mut found = None;
    for step in current.saturating_sub(TOTP_SKEW_STEPS)..=current + TOTP_SKEW_STEPS {
        let fresh = last_used.is_none_or(|used| step > used);
        if digests_equal(&secret_hash(&totp_code(key, step)), &typed) && fresh {
            found = found.or(Some(step));
        }
    }
    found
}

/// RFC 4648 base32 (upper case, no padding): how authenticator apps take a
/// secret.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u16, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u16::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[usize::from((buffer >> bits) & 31)]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            ALPHABET[usize::from((buffer << (5 - bits)) & 31)],
        ));
    }
    out
}

/// The secret as a person types it into an authenticator app (base32).
pub fn totp_secret_text(key: &[u8]) -> Secret {
    Secret::new(base32(key))
}

/// The `otpauth://` URI an authenticator app scans. Its label names the
/// account by its id, never by its e-mail address: the URI sits in a phone's
/// app, its backups and screenshots.
pub fn otpauth_uri(key: &[u8], account: AccountId) -> Secret {
    Secret::new(format!(
        "otpauth://totp/{TOTP_ISSUER}:{account}?secret={}&issuer={TOTP_ISSUER}\
         &algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP_S}",
        base32(key)
    ))
}

/// Recovery codes from random bytes: the codes (shown once, as
/// `XXXX-XXXX-XXXX-XXXX`) and the hashes that are stored.
pub fn make_recovery_codes(
    random: &[[u8; RECOVERY_CODE_BYTES]; RECOVERY_CODES],
) -> (Vec<Secret>, Vec<Sha256Hash>) {
    random
        .iter()
        .map(|bytes| {
            let plain = base32(bytes);
            let hash = secret_hash(&plain);
            let groups: Vec<&str> = (0..plain.len())
                .step_by(4)
                .map(|i| &plain[i..i + 4])
                .collect();
            (Secret::new(groups.join("-")), hash)
        })
        .unzip()
}

/// The hash of a recovery code as typed (any case, with or without dashes and
/// spaces); `None` if it cannot be one.
pub fn recovery_code_hash(typed: &str) -> Option<Sha256Hash> {
    let plain: String = typed
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let shaped = plain.len() == RECOVERY_CODE_BYTES * 8 / 5
        && plain
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
    shaped.then(|| secret_hash(&plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_KEY: &[u8] = b"12345678901234567890";

    #[test]
    fn hotp_matches_rfc_4226_appendix_d() {
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, code) in expected.into_iter().enumerate() {
            assert_eq!(hotp(RFC_KEY, counter as u64, 6), code, "counter {counter}");
        }
    }

    #[test]
    fn totp_matches_rfc_6238_appendix_b_sha1() {
        let rows: [(i64, u32); 6] = [
            (59, 94287082),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ];
        for (unix_s, code) in rows {
            let step = totp_step(DateTime::from_timestamp(unix_s, 0).unwrap()).unwrap();
            assert_eq!(hotp(RFC_KEY, step, 8), code, "T = {unix_s}");
        }
    }

    #[test]
    fn a_code_is_six_digits_zero_padded() {
        // RFC 6238's T = 1111111109 row: 07081804, whose 6 low digits are 081804.
        let step = totp_step(DateTime::from_timestamp(1111111109, 0).unwrap()).unwrap();
        assert_eq!(totp_code(RFC_KEY, step), "081804");
    }

    #[test]
    fn the_current_step_and_one_either_side_are_accepted_once() {
        let now = DateTime::from_timestamp(1_764_000_015, 0).unwrap();
        let current = totp_step(now).unwrap();
        for step in [current - 1, current, current + 1] {
            let code = totp_code(RFC_KEY, step);
            assert_eq!(check_totp(RFC_KEY, &code, now, None), Some(step));
            assert_eq!(check_totp(RFC_KEY, &code, now, Some(step)), None);
            assert_eq!(check_totp(RFC_KEY, &code, now, Some(current + 1)), None);
        }
        for step in [current - 2, current + 2] {
            let code = totp_code(RFC_KEY, step);
            assert_eq!(check_totp(RFC_KEY, &code, now, None), None, "step {step}");
        }
        for bad in ["", "12345", "1234567", "12a456", " 12345"] {
            assert_eq!(check_totp(RFC_KEY, bad, now, None), None, "{bad:?}");
        }
    }

    #[test]
    fn base32_matches_rfc_4648_without_padding() {
        let table = [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ];
        for (plain, encoded) in table {
            assert_eq!(base32(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base32(RFC_KEY), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    }

    #[test]
    fn the_uri_names_the_account_id_and_the_secret_in_base32() {
        let account = AccountId(uuid::Uuid::from_u128(1));
        let uri = otpauth_uri(RFC_KEY, account);
        assert_eq!(
            uri.expose(),
            format!(
                "otpauth://totp/Nexus:{account}?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
                 &issuer=Nexus&algorithm=SHA1&digits=6&period=30"
            )
        );
        assert_eq!(format!("{uri:?}"), "Secret(<redacted>)");
        let pii = TotpSecretPii {
            secret: RFC_KEY.to_vec(),
        };
        assert_eq!(format!("{pii:?}"), "TotpSecretPii(<redacted>)");
    }

    #[test]
    fn recovery_codes_are_grouped_and_read_back_in_any_case() {
        let random: [[u8; RECOVERY_CODE_BYTES]; RECOVERY_CODES] =
            std::array::from_fn(|i| [i as u8; RECOVERY_CODE_BYTES]);
        let (codes, hashes) = make_recovery_codes(&random);
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert_eq!(codes[0].expose(), "AAAA-AAAA-AAAA-AAAA");
        for (code, hash) in codes.iter().zip(&hashes) {
            assert_eq!(code.expose().len(), 19);
            assert_eq!(recovery_code_hash(code.expose()), Some(*hash));
            let sloppy = code.expose().to_lowercase().replace('-', " ");
            assert_eq!(recovery_code_hash(&sloppy), Some(*hash));
        }
        assert_eq!(recovery_code_hash("AAAA-AAAA-AAAA-AAA"), None);
        assert_eq!(recovery_code_hash("AAAA-AAAA-AAAA-AAA1"), None);
        assert_eq!(recovery_code_hash("123456"), None);
    }
}
