//! Queries over the catalog statistics.

use super::*;
use crate::error::{QueryError, StoredValueError};

/// What the statistics are grouped by. `None` is unknown: the order's details
/// were erased before it settled or are not in the log, or no number was
/// assigned (provider).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    pub service: Option<String>,
    pub country: Option<String>,
    pub provider: Option<String>,
}

/// Settled orders of one route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteStats {
    pub key: RouteKey,
    pub orders: u64,
    pub successes: u64,
    pub failures: u64,
    /// The median time from the number to the first code, rounded down to its
    /// histogram bucket (1 s under a minute, 10 s under five, then 60 s).
    pub median_time_to_code_secs: Option<i64>,
}

impl RouteStats {
    /// Successes per settled order, 0 to 1.
    pub fn success_rate(&self) -> f64 {
        if self.orders == 0 {
            0.0
        } else {
            self.successes as f64 / self.orders as f64
        }
    }
}

/// Read access to the catalog statistics.
#[derive(Clone)]
pub struct CatalogView {
    tree: sled::Tree,
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn median(histogram: &[u32]) -> Option<i64> {
    let total: u64 = histogram.iter().map(|c| u64::from(*c)).sum();
    if total == 0 {
        return None;
    }
    let half = total.div_ceil(2);
    let mut seen = 0u64;
    for (bucket, count) in histogram.iter().enumerate() {
        seen = seen.saturating_add(u64::from(*count));
        if seen >= half {
            return Some(bucket_floor(bucket));
        }
    }
    None
}

impl CatalogView {
    pub(crate) fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }

    fn parse(key: &[u8], value: &[u8]) -> Result<RouteStats, QueryError> {
        let (service, country, provider) =
            parse_stats_key(key).ok_or_else(|| StoredValueError::new(key, "not a route key"))?;
        let stats: Stats = crate::value::decode(key, value)?;
        Ok(RouteStats {
            key: RouteKey {
                service: non_empty(service),
                country: non_empty(country),
                provider: non_empty(provider),
            },
            orders: stats.orders,
            successes: stats.successes,
            failures: stats.failures,
            median_time_to_code_secs: median(&stats.time_to_code),
        })
    }

    /// One route's statistics.
    pub fn route(
        &self,
        service: &str,
        country: &str,
        provider: &str,
    ) -> Result<Option<RouteStats>, QueryError> {
        let key = stats_key(service, country, provider);
        match self.tree.get(&key)? {
            None => Ok(None),
            Some(value) => Self::parse(&key, &value).map(Some),
        }
    }

    /// Every route, in key order (service, then country, then provider). The
    /// number of routes is bounded by the catalog (services × countries ×
    /// providers), not by the number of orders.
    pub fn routes(&self) -> Result<Vec<RouteStats>, QueryError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([b's']) {
            let (key, value) = item?;
            out.push(Self::parse(&key, &value)?);
        }
        Ok(out)
    }

    /// The routes of one service and country (every provider), e.g. to rank
    /// providers.
    pub fn providers_for(
        &self,
        service: &str,
        country: &str,
    ) -> Result<Vec<RouteStats>, QueryError> {
        let mut prefix = stats_key(service, country, "");
        prefix.pop();
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (key, value) = item?;
            out.push(Self::parse(&key, &value)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_a_histogram() {
        let mut h = vec![0u32; BUCKETS];
        assert_eq!(median(&h), None);
        h[bucket_of(5)] = 1;
        h[bucket_of(20)] = 1;
        h[bucket_of(400)] = 1;
        assert_eq!(median(&h), Some(20));
    }
}
