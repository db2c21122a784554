//! What the HTTP upstream adapters share about the wire: reading amounts,
//! naming transport failures without the URL (it can carry a key), `Retry-After`,
//! and redacting answers before they are logged.

use std::time::Duration;

use chrono::{DateTime, Utc};
use nexus_core::domain::money::Micros;
use serde_json::Value;

use crate::herosms::decimal_to_micros;
use crate::upstream::UpstreamError;

/// Most characters of an unexpected answer that are logged.
const REDACTED_MAX_CHARS: usize = 200;

/// Letters and digits blanked (codes can be alphanumeric, and a phone number
/// can be spelled in any script's digits), control characters turned to
/// spaces, bounded: an unexpected answer is logged for its shape (its
/// punctuation and lengths) without a phone number, code or name in it.
pub(crate) fn redact(body: &str) -> String {
    body.chars()
        .take(REDACTED_MAX_CHARS)
        .map(|c| match c {
            c if c.is_alphanumeric() => '#',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// A JSON amount of dollars (a number or a decimal string), read exactly by
/// [`decimal_to_micros`] (more than 6 decimals round up).
pub(crate) fn json_usd(value: &Value) -> Option<Micros> {
    match value {
        Value::Number(n) => decimal_to_micros(&n.to_string()),
        Value::String(s) => decimal_to_micros(s.trim()),
        _ => None,
    }
}

/// A failed request to `upstream` (its display name) as an outage, saying only
/// what kind of failure it was: never the URL, which may carry the key.
pub(crate) fn transport_error(upstream: &str, error: &reqwest::Error) -> UpstreamError {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "answer cut off"
    } else {
        "request failed"
    };
    UpstreamError::Unavailable(format!("{upstream} {what}"))
}

/// `Retry-After`: delay seconds or an HTTP date (RFC 9110 10.2.3); a date in
/// the past is no wait.
pub(crate) fn retry_after(
    headers: &reqwest::header::HeaderMap,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let text = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(text).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn redact_blanks_letters_and_digits_and_bounds_the_length() {
        assert_eq!(redact("code 482913 for +1386"), "#### ###### ### +####");
        // An alphanumeric code, in JSON, with non-ASCII letters and digits.
        assert_eq!(
            redact(r#"{"code":"G-7QX2B","msg":"Код ٤٢"}"#),
            "{\"####\":\"#-#####\",\"###\":\"### ##\"}"
        );
        assert_eq!(redact("a\nb\tc"), "# # #");
        assert_eq!(redact(&"a".repeat(1000)), "#".repeat(REDACTED_MAX_CHARS));
    }

    #[test]
    fn json_usd_reads_numbers_and_strings_exactly() {
        assert_eq!(json_usd(&serde_json::json!(0.15)), Some(Micros(150_000)));
        assert_eq!(
            json_usd(&serde_json::json!(" 1.5 ")),
            Some(Micros(1_500_000))
        );
        assert_eq!(json_usd(&serde_json::json!(null)), None);
        assert_eq!(json_usd(&serde_json::json!("abc")), None);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = DateTime::parse_from_rfc3339("2026-05-11T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            retry_after(&headers("7"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers("Mon, 11 May 2026 10:00:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(&headers("Mon, 11 May 2026 09:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
