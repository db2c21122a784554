//! Rate limits (GCRA, `governor`): per credential (API key or session) on
//! authenticated calls, per client IP on unauthenticated ones, and a much lower
//! per-IP budget for the routes that run bcrypt or spend tokens (register, log in,
//! verify). Over the limit: 429 `rate_limited` with `Retry-After`.
//!
//! Credentials are keyed by a truncated SHA-256, so the limiter's map holds no
//! usable secret. The maps are swept of idle keys periodically; their size is
//! bounded by [`MAX_TRACKED_KEYS`].

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};

use super::error::{ApiError, Problem};

/// Requests per second and per minute, `0` = that limit is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSettings {
    /// Per API key or session; the burst is twice the rate.
    pub key_per_s: u32,
    /// Per client IP on unauthenticated routes; the burst is twice the rate.
    pub ip_per_s: u32,
    /// Register, log-in and verify attempts per IP per minute (burst: the same).
    pub auth_per_min: u32,
}

impl Default for RateSettings {
    fn default() -> Self {
        Self {
            key_per_s: 20,
            ip_per_s: 20,
            auth_per_min: 10,
        }
    }
}

/// Above this many tracked keys in one limiter, new keys are refused (429) until
/// the sweep frees room: the limiter's memory is bounded under a flood of
/// distinct credentials or addresses.
pub const MAX_TRACKED_KEYS: usize = 1_000_000;

/// How often idle keys are dropped from the maps.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

type Credential = [u8; 16];
type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

pub struct RateLimits {
    clock: DefaultClock,
    by_credential: Option<Keyed<Credential>>,
    by_ip: Option<Keyed<IpAddr>>,
    auth_by_ip: Option<Keyed<IpAddr>>,
}

/// Which budget a request is charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget<'a> {
    Credential(&'a [u8]),
    Ip(IpAddr),
    Auth(IpAddr),
}

impl RateLimits {
    pub fn new(settings: RateSettings) -> Self {
        Self {
            clock: DefaultClock::default(),
            by_credential: per_second(settings.key_per_s),
            by_ip: per_second(settings.ip_per_s),
            auth_by_ip: NonZeroU32::new(settings.auth_per_min)
                .map(|r| RateLimiter::keyed(Quota::per_minute(r))),
        }
    }

    /// Charges one request to `budget`; `Err` is the 429 to answer.
    pub fn check(&self, budget: Budget<'_>) -> Result<(), ApiError> {
        match budget {
            Budget::Credential(secret) => match &self.by_credential {
                Some(limiter) => self.charge(limiter, &credential_key(secret)),
                None => Ok(()),
            },
            Budget::Ip(ip) => match &self.by_ip {
                Some(limiter) => self.charge(limiter, &ip),
                None => Ok(()),
            },
            Budget::Auth(ip) => match &self.auth_by_ip {
                Some(limiter) => self.charge(limiter, &ip),
                None => Ok(()),
            },
        }
    }

    fn charge<K>(&self, limiter: &Keyed<K>, key: &K) -> Result<(), ApiError>
    where
        K: Clone + std::hash::Hash + Eq,
    {
        if limiter.len() >= MAX_TRACKED_KEYS {
            // Full: only keys already tracked are served until the sweep.
            limiter.retain_recent();
            if limiter.len() >= MAX_TRACKED_KEYS {
                return Err(rate_limited(SWEEP_INTERVAL));
            }
        }
        limiter
            .check_key(key)
            .map_err(|not_until| rate_limited(not_until.wait_time_from(self.clock.now())))
    }

    /// Drops keys whose budget is full again (they carry no state worth keeping).
    pub fn sweep(&self) {
        for limiter in [&self.by_ip, &self.auth_by_ip].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.by_credential {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys tracked now, across the limiters.
    #[cfg(test)]
    fn tracked_keys(&self) -> usize {
        self.by_credential.as_ref().map_or(0, |l| l.len())
            + self.by_ip.as_ref().map_or(0, |l| l.len())
            + self.auth_by_ip.as_ref().map_or(0, |l| l.len())
    }
}

/// `rate` per second with a burst of twice the rate; `None` when `rate` is 0.
fn per_second<K: Clone + std::hash::Hash + Eq>(rate: u32) -> Option<Keyed<K>> {
    NonZeroU32::new(rate).map(|r| {
        let burst = r.saturating_mul(NonZeroU32::MIN.saturating_add(1));
        RateLimiter::keyed(Quota::per_second(r).allow_burst(burst))
    })
}

fn credential_key(secret: &[u8]) -> Credential {
    let digest = Sha256::digest(secret);
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

fn rate_limited(wait: Duration) -> ApiError {
    // Whole seconds, at least one: `Retry-After` has no finer unit.
    let retry_after_s = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::new(
        Problem::RateLimited,
        format!("too many requests; retry after {} s", retry_after_s.max(1)),
    )
    .with_retry_after(retry_after_s.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;

    fn settings(key_per_s: u32, ip_per_s: u32, auth_per_min: u32) -> RateSettings {
        RateSettings {
            key_per_s,
            ip_per_s,
            auth_per_min,
        }
    }

    #[test]
    fn a_credential_gets_twice_its_rate_as_burst_then_429_with_retry_after() {
        let limits = RateLimits::new(settings(5, 0, 0));
        for _ in 0..10 {
            limits.check(Budget::Credential(b"key-a")).unwrap();
        }
        let refused = limits.check(Budget::Credential(b"key-a")).unwrap_err();
        assert_eq!(refused.problem.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.problem.code(), "rate_limited");
        assert_eq!(refused.retry_after_s, Some(1));
        // Another key has its own budget.
        limits.check(Budget::Credential(b"key-b")).unwrap();
    }

    #[test]
    fn auth_budget_is_per_minute_and_separate_from_the_ip_budget() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let limits = RateLimits::new(settings(0, 100, 3));
        for _ in 0..3 {
            limits.check(Budget::Auth(ip)).unwrap();
        }
        let refused = limits.check(Budget::Auth(ip)).unwrap_err();
        // The next token comes in 20 s (3 per minute).
        let wait = refused.retry_after_s.unwrap();
        assert!((19..=20).contains(&wait), "retry after {wait} s");
        limits.check(Budget::Ip(ip)).unwrap();
        limits
            .check(Budget::Auth("192.0.2.8".parse().unwrap()))
            .unwrap();
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limits = RateLimits::new(settings(0, 0, 0));
        let ip: IpAddr = "::1".parse().unwrap();
        for _ in 0..10_000 {
            limits.check(Budget::Credential(b"k")).unwrap();
            limits.check(Budget::Ip(ip)).unwrap();
            limits.check(Budget::Auth(ip)).unwrap();
        }
        assert_eq!(limits.tracked_keys(), 0);
    }

    #[test]
    fn the_sweep_forgets_idle_keys() {
        let limits = RateLimits::new(settings(1_000_000, 0, 0));
        for i in 0..1_000u32 {
            limits.check(Budget::Credential(&i.to_le_bytes())).unwrap();
        }
        assert_eq!(limits.tracked_keys(), 1_000);
        // A 1,000,000/s budget is full again within microseconds.
        std::thread::sleep(Duration::from_millis(5));
        limits.sweep();
        assert_eq!(limits.tracked_keys(), 0);
    }
}
