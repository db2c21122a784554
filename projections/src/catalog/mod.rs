//! Catalog statistics: per (service, country, provider), how many orders were
//! settled, how many succeeded (a code came: the order completed) or failed
//! (cancelled or expired), and how long codes took to come, for routing and for
//! the price list.
//!
//! What was ordered is personal (sealed under the owner's subject in the
//! order's events). The projection opens it with the vault when an order is
//! settled and keeps only aggregate counts keyed by (service, country,
//! provider), which are not personal data. While an order is open it keeps the
//! order's sealed section (never the plain details). An order whose details
//! cannot be opened (erased before it settled, or not in the log) is counted
//! under an unknown service and country. Because of that vault read, a rebuild
//! after an erasure can count some orders under "unknown" that the incremental
//! build counted under their service: the one place where a rebuild may
//! differ from the incremental build (see docs/PROJECTIONS.md).
//!
//! # Tree `catalog`
//!
//! | key | value |
//! |---|---|
//! | `p` order(16) | `Pending`: an open order's sealed details, provider and times |
//! | `n` anon(16) | an anonymous buyer's sealed details ([`StoredPii`]) |
//! | `s` len service len country len provider | `Stats` |

mod apply;
mod query;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::sealed::StoredPii;

pub use apply::CatalogProjection;
pub use query::{CatalogView, RouteKey, RouteStats};

/// The projection's (and its tree's) name.
pub const NAME: &str = "catalog";
/// The format of this tree's rows (see [`crate::Projection::format_version`]).
pub const FORMAT_VERSION: u32 = 1;

/// Time-to-code histogram buckets: upper bounds in seconds (exclusive); the
/// last bucket takes everything slower. 1 s steps up to a minute, 10 s to five
/// minutes, 60 s to twenty minutes.
pub fn bucket_of(seconds: i64) -> usize {
    let s = seconds.max(0);
    let bucket = if s < 60 {
        s
    } else if s < 300 {
        60 + (s - 60) / 10
    } else if s < 1200 {
        84 + (s - 300) / 60
    } else {
        99
    };
    bucket as usize
}

/// The lowest number of seconds that falls into `bucket`.
pub fn bucket_floor(bucket: usize) -> i64 {
    let b = bucket as i64;
    if b < 60 {
        b
    } else if b < 84 {
        60 + (b - 60) * 10
    } else if b < 99 {
        300 + (b - 84) * 60
    } else {
        1200
    }
}

/// Buckets of the time-to-code histogram.
pub const BUCKETS: usize = 100;

/// An open order, until it settles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    pub details: Option<StoredPii>,
    pub provider: Option<String>,
    #[serde(with = "crate::keys::ts::option")]
    pub assigned_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::keys::ts::option")]
    pub first_code_at: Option<DateTime<Utc>>,
}

/// The counts of one (service, country, provider).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stats {
    pub orders: u64,
    pub successes: u64,
    pub failures: u64,
    /// Orders per time-to-code bucket (successes with a number and a code).
    pub time_to_code: Vec<u32>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            orders: 0,
            successes: 0,
            failures: 0,
            time_to_code: vec![0; BUCKETS],
        }
    }
}

fn pending_key(order: nexus_core::domain::ids::OrderId) -> Vec<u8> {
    keys::key(b'p', &[order.0.as_bytes()])
}

fn anon_key(anon: nexus_core::domain::ids::AnonymousId) -> Vec<u8> {
    keys::key(b'n', &[anon.0.as_bytes()])
}

/// `s`, then service, country and provider, each prefixed by its length
/// (empty: unknown), all at most 255 bytes.
fn stats_key(service: &str, country: &str, provider: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + service.len() + country.len() + provider.len());
    key.push(b's');
    for part in [service, country, provider] {
        let bytes = &part.as_bytes()[..part.len().min(255)];
        key.push(bytes.len() as u8);
        key.extend_from_slice(bytes);
    }
    key
}

fn parse_stats_key(key: &[u8]) -> Option<(String, String, String)> {
    let mut rest = key.strip_prefix(b"s")?;
    let mut parts = Vec::with_capacity(3);
    for _ in 0..3 {
        let (len, tail) = rest.split_first()?;
        let len = usize::from(*len);
        if tail.len() < len {
            return None;
        }
        parts.push(String::from_utf8(tail[..len].to_vec()).ok()?);
        rest = &tail[len..];
    }
    let provider = parts.pop()?;
    let country = parts.pop()?;
    let service = parts.pop()?;
    rest.is_empty().then_some((service, country, provider))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_second_in_order() {
        let mut last = 0;
        for s in 0..1500 {
            let b = bucket_of(s);
            assert!(b >= last && b < BUCKETS);
            assert!(bucket_floor(b) <= s);
            last = b;
        }
        assert_eq!(bucket_of(-5), 0);
    }

    #[test]
    fn stats_keys_round_trip() {
        let key = stats_key("tg", "DE", "sim-a");
        assert_eq!(
            parse_stats_key(&key),
            Some(("tg".into(), "DE".into(), "sim-a".into()))
        );
        assert_eq!(
            parse_stats_key(&stats_key("", "", "")),
            Some(Default::default())
        );
        assert_eq!(parse_stats_key(b"s\x05ab"), None);
    }
}
