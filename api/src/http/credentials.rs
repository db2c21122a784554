//! What a caller presents: the `Authorization: Bearer` credentials every
//! extractor and the gate read, and the configured admin token they are held
//! against. Knows nothing of routes or state, so everything above may use it.

use sha2::{Digest, Sha256};

/// Shortest admin token accepted in the configuration.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;
/// Longest Authorization header value the admin routes consider (and so the
/// longest admin token).
pub const MAX_ADMIN_AUTHORIZATION_BYTES: usize = 512;

/// The credentials of an `Authorization: Bearer <token>` value; the scheme's
/// name is case-insensitive (RFC 9110 11.1). None for another scheme or an
/// empty token. Callers bound the value's length first.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The configured admin token, kept as its SHA-256 digest. Never printed.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Why a configured admin token is refused (the message never holds the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminTokenError {
    #[error("NEXUS_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_BYTES} printable ASCII characters without spaces")]
    Weak,
}

impl AdminToken {
    pub fn new(token: &str) -> Result<AdminToken, AdminTokenError> {
        let ok = token.len() >= MIN_ADMIN_TOKEN_BYTES
            && token.len() <= MAX_ADMIN_AUTHORIZATION_BYTES
            && token.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(AdminTokenError::Weak);
        }
        Ok(AdminToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether `presented` is the token, in time independent of both.
    pub fn matches(&self, presented: &str) -> bool {
        let other: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let difference = self
            .digest
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_required() {
        assert_eq!(bearer_token("Bearer nx_abc"), Some("nx_abc"));
        assert_eq!(bearer_token("bearer nx_abc"), Some("nx_abc"));
        assert_eq!(bearer_token("BEARER  nx_abc"), Some("nx_abc"));
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token("Bearernx_abc"), None);
    }

    #[test]
    fn the_token_matches_itself_only() {
        let token = AdminToken::new("s3cret-admin-token-0123").unwrap();
        assert!(token.matches("s3cret-admin-token-0123"));
        assert!(!token.matches("s3cret-admin-token-0124"));
        assert!(!token.matches("s3cret-admin-token-012"));
        assert!(!token.matches(""));
    }

    #[test]
    fn weak_tokens_are_refused_and_never_shown() {
        assert_eq!(AdminToken::new("short").unwrap_err(), AdminTokenError::Weak);
        assert!(AdminToken::new("has a space in the middle").is_err());
        let token = AdminToken::new("s3cret-admin-token-0123").unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(!AdminTokenError::Weak.to_string().contains("s3cret"));
    }
}
