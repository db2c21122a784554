//! Rate limits (GCRA, `governor`), charged by the gate once the request's
//! credential is verified (see [`super::principal`]):
//!
//! - a verified principal pays from its own budget: an account (all its API
//!   keys and sessions together) or the operator;
//! - a request without a credential, or whose credential does not verify,
//!   pays from its client IP's budget (IPv6 clients by /64: one host holds a
//!   whole /64);
//! - a bearer credential (API key, admin token) that does not verify also pays
//!   from the IP's failed-credential budget; while that is spent, every bearer
//!   request from the IP is refused, right ones too, so that a guesser learns
//!   nothing;
//! - the routes that run bcrypt or spend tokens (register, log in, verify,
//!   change the password, withdraw a deletion with the password, turn
//!   two-factor off) pay from the much lower sign-in budget, per IP and per
//!   account; a wrong two-factor code at sign-in pays a second time.
//!
//! Over a limit: 429 `rate_limited` with `Retry-After`. The maps are swept of
//! idle keys periodically; their size is bounded by [`MAX_TRACKED_KEYS`].

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use nexus_core::domain::ids::AccountId;
use sha2::{Digest, Sha256};

use super::error::{ApiError, Problem};
use super::principal::{Principal, Resolution};

/// Requests per second and per minute, `0` = that limit is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSettings {
    /// Per verified account (or the operator); the burst is twice the rate.
    pub key_per_s: u32,
    /// Per client IP without a verified credential; the burst is twice the rate.
    pub ip_per_s: u32,
    /// Sign-in attempts per IP and per account per minute, and failed API keys
    /// and admin tokens per IP per minute (burst: the same).
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
/// distinct addresses.
pub const MAX_TRACKED_KEYS: usize = 1_000_000;

/// How often idle keys are dropped from the maps.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// Whose own budget a verified principal pays from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrincipalKey {
    Account(AccountId),
    Admin,
}

impl PrincipalKey {
    pub fn of(principal: &Principal) -> PrincipalKey {
        principal
            .account()
            .map_or(PrincipalKey::Admin, PrincipalKey::Account)
    }
}

/// Whose sign-in budget an attempt pays from besides its IP's: the account
/// signed in to, known by its id or, before it is looked up, by its address
/// (a truncated SHA-256, so the map holds no address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignInKey([u8; 16]);

impl SignInKey {
    pub fn account(account: AccountId) -> SignInKey {
        SignInKey(account.0.into_bytes())
    }

    pub fn email(email: &str) -> SignInKey {
        let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        SignInKey(key)
    }
}

pub struct RateLimits {
    clock: DefaultClock,
    by_principal: Option<Keyed<PrincipalKey>>,
    by_ip: Option<Keyed<IpAddr>>,
    auth_by_ip: Option<Keyed<IpAddr>>,
    auth_by_account: Option<Keyed<SignInKey>>,
    failed_by_ip: Option<Keyed<IpAddr>>,
    /// Addresses whose failed-credential budget is spent, until when.
    failing: DashMap<IpAddr, Instant>,
}

/// Which budget a request is charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    Principal(PrincipalKey),
    Ip(IpAddr),
    Auth(IpAddr),
    AuthAccount(SignInKey),
}

impl RateLimits {
    pub fn new(settings: RateSettings) -> Self {
        Self {
            clock: DefaultClock::default(),
            by_principal: per_second(settings.key_per_s),
            by_ip: per_second(settings.ip_per_s),
            auth_by_ip: per_minute(settings.auth_per_min),
            auth_by_account: per_minute(settings.auth_per_min),
            failed_by_ip: per_minute(settings.auth_per_min),
            failing: DashMap::new(),
        }
    }

    /// Charges one request to `budget`; `Err` is the 429 to answer.
    pub fn check(&self, budget: Budget) -> Result<(), ApiError> {
        match budget {
            Budget::Principal(key) => charge_opt(self, &self.by_principal, &key),
            Budget::Ip(ip) => charge_opt(self, &self.by_ip, &ip_key(ip)),
            Budget::Auth(ip) => charge_opt(self, &self.auth_by_ip, &ip_key(ip)),
            Budget::AuthAccount(key) => charge_opt(self, &self.auth_by_account, &key),
        }
    }

    /// Charges a request from `ip` whose credential came to `resolution`: the
    /// principal's budget when it verified, else the IP's (and, for a bearer
    /// that failed, the IP's failed-credential budget).
    pub fn check_resolved(&self, ip: IpAddr, resolution: Resolution) -> Result<(), ApiError> {
        match resolution {
            Resolution::Verified(principal) => {
                if principal.by_bearer() {
                    self.not_failing(ip)?;
                }
                self.check(Budget::Principal(PrincipalKey::of(&principal)))
            }
            Resolution::Failed { bearer: true } | Resolution::IpRefused => {
                self.fail(ip)?;
                self.check(Budget::Ip(ip))
            }
            Resolution::Anonymous
            | Resolution::Failed { bearer: false }
            | Resolution::DeletionPending
            | Resolution::Unavailable => self.check(Budget::Ip(ip)),
        }
    }

    /// One failed bearer credential from `ip`; `Err` once its budget is spent
    /// (and until it refills, [`Self::not_failing`] refuses the address).
    fn fail(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.not_failing(ip)?;
        let Some(limiter) = &self.failed_by_ip else {
            return Ok(());
        };
        let ip = ip_key(ip);
        self.charge(limiter, &ip).inspect_err(|refusal| {
            let wait_s = refusal.retry_after_s.unwrap_or(1);
            self.failing
                .insert(ip, Instant::now() + Duration::from_secs(wait_s));
        })
    }

    /// `Err` while `ip`'s failed-credential budget is spent.
    fn not_failing(&self, ip: IpAddr) -> Result<(), ApiError> {
        if self.failing.is_empty() {
            return Ok(());
        }
        let until = self.failing.get(&ip_key(ip)).map(|until| *until);
        match until {
            Some(until) => match until.checked_duration_since(Instant::now()) {
                Some(wait) if !wait.is_zero() => Err(rate_limited(wait)),
                _ => Ok(()),
            },
            None => Ok(()),
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
        for limiter in [&self.by_ip, &self.auth_by_ip, &self.failed_by_ip]
            .into_iter()
            .flatten()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.by_principal {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.auth_by_account {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let now = Instant::now();
        self.failing.retain(|_, until| *until > now);
        self.failing.shrink_to_fit();
    }

    /// Keys tracked now, across the limiters.
    #[cfg(test)]
    fn tracked_keys(&self) -> usize {
        self.by_principal.as_ref().map_or(0, |l| l.len())
            + [&self.by_ip, &self.auth_by_ip, &self.failed_by_ip]
                .into_iter()
                .flatten()
                .map(|l| l.len())
                .sum::<usize>()
            + self.auth_by_account.as_ref().map_or(0, |l| l.len())
            + self.failing.len()
    }
}

fn charge_opt<K>(limits: &RateLimits, limiter: &Option<Keyed<K>>, key: &K) -> Result<(), ApiError>
where
    K: Clone + std::hash::Hash + Eq,
{
    match limiter {
        Some(limiter) => limits.charge(limiter, key),
        None => Ok(()),
    }
}

/// The key of a client address: IPv4 as is, IPv6 by its /64 (the smallest
/// prefix a host is given; it holds 2^64 addresses).
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// `rate` per second with a burst of twice the rate; `None` when `rate` is 0.
fn per_second<K: Clone + std::hash::Hash + Eq>(rate: u32) -> Option<Keyed<K>> {
    NonZeroU32::new(rate).map(|r| {
        let burst = r.saturating_mul(NonZeroU32::MIN.saturating_add(1));
        RateLimiter::keyed(Quota::per_second(r).allow_burst(burst))
    })
}

/// `rate` per minute with a burst of the same; `None` when `rate` is 0.
fn per_minute<K: Clone + std::hash::Hash + Eq>(rate: u32) -> Option<Keyed<K>> {
    NonZeroU32::new(rate).map(|r| RateLimiter::keyed(Quota::per_minute(r)))
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

    fn account() -> Budget {
        Budget::Principal(PrincipalKey::Account(AccountId::new()))
    }

    fn settings(key_per_s: u32, ip_per_s: u32, auth_per_min: u32) -> RateSettings {
        RateSettings {
            key_per_s,
            ip_per_s,
            auth_per_min,
        }
    }

    #[test]
    fn an_account_gets_twice_its_rate_as_burst_then_429_with_retry_after() {
        let limits = RateLimits::new(settings(5, 0, 0));
        let (a, b) = (account(), account());
        for _ in 0..10 {
            limits.check(a).unwrap();
        }
        let refused = limits.check(a).unwrap_err();
        assert_eq!(refused.problem.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.problem.code(), "rate_limited");
        assert_eq!(refused.retry_after_s, Some(1));
        // Another account has its own budget.
        limits.check(b).unwrap();
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
            limits.check(account()).unwrap();
            limits.check(Budget::Ip(ip)).unwrap();
            limits.check(Budget::Auth(ip)).unwrap();
        }
        assert_eq!(limits.tracked_keys(), 0);
    }

    #[test]
    fn the_sweep_forgets_idle_keys() {
        let limits = RateLimits::new(settings(1_000_000, 0, 0));
        for _ in 0..1_000u32 {
            limits.check(account()).unwrap();
        }
        assert_eq!(limits.tracked_keys(), 1_000);
        // A 1,000,000/s budget is full again within microseconds.
        std::thread::sleep(Duration::from_millis(5));
        limits.sweep();
        assert_eq!(limits.tracked_keys(), 0);
    }

    fn key_login(account: AccountId) -> Resolution {
        Resolution::Verified(Principal::ApiKey(
            nexus_core::service::account_service::ApiKeyLogin {
                account,
                key_id: nexus_core::domain::ids::ApiKeyId::new(),
                scope: nexus_core::domain::account::ApiKeyScope::Orders,
            },
        ))
    }

    #[test]
    fn a_credential_that_does_not_verify_pays_from_the_ip_budget() {
        let limits = RateLimits::new(settings(1_000, 2, 1_000));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        // Each made-up credential is the same client: four in a row spend its
        // burst of four, whatever they said.
        let made_up = [
            Resolution::Failed { bearer: true },
            Resolution::Failed { bearer: false },
            Resolution::Anonymous,
            Resolution::Failed { bearer: true },
        ];
        for resolution in made_up {
            limits.check_resolved(ip, resolution).unwrap();
        }
        let refused = limits
            .check_resolved(ip, Resolution::Failed { bearer: false })
            .unwrap_err();
        assert_eq!(refused.problem.code(), "rate_limited");
        // A verified principal from the same address has its own budget.
        limits
            .check_resolved(ip, key_login(AccountId::new()))
            .unwrap();
    }

    #[test]
    fn a_key_used_outside_its_allow_list_spends_the_failure_budget() {
        let limits = RateLimits::new(settings(1_000, 1_000, 2));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..2 {
            limits.check_resolved(ip, Resolution::IpRefused).unwrap();
        }
        assert!(limits.check_resolved(ip, Resolution::IpRefused).is_err());
        assert!(
            limits
                .check_resolved(ip, key_login(AccountId::new()))
                .is_err(),
            "the address is failing: every bearer from it waits"
        );
    }

    #[test]
    fn failed_bearers_spend_the_failure_budget_and_then_every_bearer_is_refused() {
        let limits = RateLimits::new(settings(1_000, 1_000, 3));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let customer = AccountId::new();
        for _ in 0..3 {
            limits
                .check_resolved(ip, Resolution::Failed { bearer: true })
                .unwrap();
        }
        let refused = limits
            .check_resolved(ip, Resolution::Failed { bearer: true })
            .unwrap_err();
        let wait = refused.retry_after_s.unwrap();
        assert!((19..=20).contains(&wait), "retry after {wait} s");
        // A right key from that address is refused alike; a session (no
        // bearer) and another address are not.
        assert!(limits.check_resolved(ip, key_login(customer)).is_err());
        let session = Resolution::Verified(Principal::Session {
            account: customer,
            deletion_pending: false,
            fresh: true,
        });
        limits.check_resolved(ip, session).unwrap();
        limits.check_resolved(other, key_login(customer)).unwrap();
        // Failed session cookies cost only the IP budget.
        for _ in 0..10 {
            limits
                .check_resolved(other, Resolution::Failed { bearer: false })
                .unwrap();
        }
        limits.check_resolved(other, key_login(customer)).unwrap();
    }

    #[test]
    fn an_ipv6_client_is_one_client_across_its_64() {
        let limits = RateLimits::new(settings(0, 1, 0));
        for ip in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9"] {
            let _ = limits.check(Budget::Ip(ip.parse().unwrap()));
        }
        assert!(limits
            .check(Budget::Ip("2001:db8:1:2::77".parse().unwrap()))
            .is_err());
        limits
            .check(Budget::Ip("2001:db8:1:3::1".parse().unwrap()))
            .unwrap();
        // IPv4-mapped addresses are the IPv4 client.
        let limits = RateLimits::new(settings(0, 1, 0));
        limits
            .check(Budget::Ip("::ffff:192.0.2.1".parse().unwrap()))
            .unwrap();
        limits
            .check(Budget::Ip("192.0.2.1".parse().unwrap()))
            .unwrap();
        assert!(limits
            .check(Budget::Ip("192.0.2.1".parse().unwrap()))
            .is_err());
    }

    #[test]
    fn the_sign_in_budget_of_an_account_is_shared_by_its_addresses() {
        let limits = RateLimits::new(settings(0, 0, 2));
        let key = SignInKey::email("Someone@Example.com ");
        limits.check(Budget::AuthAccount(key)).unwrap();
        limits
            .check(Budget::AuthAccount(SignInKey::email("someone@example.com")))
            .unwrap();
        assert!(limits.check(Budget::AuthAccount(key)).is_err());
        limits
            .check(Budget::AuthAccount(SignInKey::account(AccountId::new())))
            .unwrap();
    }
}
