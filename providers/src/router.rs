//! Routing: which upstream sells an order its number, with failover inside one
//! deadline (the promise: a number in under 3 seconds), a circuit breaker per
//! upstream, and reconciliation of buys whose outcome is unknown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{CountryCode, ServiceCode};
use tracing::{debug, info, warn};

use crate::upstream::{BuyRequest, CancelOutcome, Purchase, Upstream, UpstreamError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// The whole buy, all failovers included.
    pub deadline: Duration,
    /// One upstream's buy call; the deadline's remainder if shorter.
    pub attempt_timeout: Duration,
    /// Consecutive failures that open an upstream's breaker.
    pub failures_to_open: u32,
    /// How long an open breaker refuses calls before one probe is let through.
    pub open_for: Duration,
    /// Attempts to reconcile a buy whose outcome is unknown.
    pub reconcile_attempts: u32,
    pub reconcile_interval: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(2_900),
            attempt_timeout: Duration::from_millis(1_300),
            failures_to_open: 5,
            open_for: Duration::from_secs(10),
            reconcile_attempts: 10,
            reconcile_interval: Duration::from_secs(3),
        }
    }
}

/// A number and who sold it.
#[derive(Clone, Debug)]
pub struct Routed {
    pub provider: String,
    pub purchase: Purchase,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Every upstream said so: nothing was bought.
    #[error("no upstream has numbers for this service and country")]
    NoNumbers,
    /// The deadline passed, or every upstream failed; nothing was bought that
    /// will not be reconciled.
    #[error("no number within the deadline")]
    Unavailable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
struct Breaker {
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    probing: bool,
}

/// Health of one upstream, for the admin view and for ranking.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamHealth {
    pub name: String,
    pub breaker: BreakerState,
    pub consecutive_failures: u32,
    /// Exponentially weighted buy latency.
    pub latency_ms: f64,
    pub successes: u64,
    pub failures: u64,
    pub reconciled_cancelled: u64,
    pub unreconciled: u64,
}

struct Slot {
    upstream: Arc<dyn Upstream>,
    state: Mutex<SlotState>,
}

struct SlotState {
    breaker: Breaker,
    health: UpstreamHealth,
    /// Last known cost per (service, country), learnt from purchases.
    costs: std::collections::HashMap<(String, String), Micros>,
}

pub struct Router {
    slots: Vec<Arc<Slot>>,
    config: RouterConfig,
    quotes: Mutex<QuoteCache>,
}

/// (service, country) → when asked, and the answer.
type QuoteCache = std::collections::HashMap<(String, String), (Instant, Option<Quote>)>;

/// The best current offer for a (service, country) over all healthy upstreams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    /// The lowest upstream cost with stock.
    pub cost: Micros,
    /// Stock over all upstreams.
    pub stock: u64,
}

/// How long a quote is reused.
const QUOTE_TTL: Duration = Duration::from_secs(60);
/// How long asking the upstreams for offers may take.
const QUOTE_TIMEOUT: Duration = Duration::from_millis(1_500);
/// Quotes kept; the cache is cleared when it grows past this.
const MAX_QUOTES: usize = 10_000;

impl Router {
    pub fn new(upstreams: Vec<Arc<dyn Upstream>>, config: RouterConfig) -> Self {
        let slots = upstreams
            .into_iter()
            .map(|upstream| {
                let name = upstream.name().to_owned();
                Arc::new(Slot {
                    upstream,
                    state: Mutex::new(SlotState {
                        breaker: Breaker {
                            consecutive_failures: 0,
                            opened_at: None,
                            probing: false,
                        },
                        health: UpstreamHealth {
                            name,
                            breaker: BreakerState::Closed,
                            consecutive_failures: 0,
                            latency_ms: 0.0,
                            successes: 0,
                            failures: 0,
                            reconciled_cancelled: 0,
                            unreconciled: 0,
                        },
                        costs: Default::default(),
                    }),
                })
            })
            .collect();
        Self {
            slots,
            config,
            quotes: Mutex::default(),
        }
    }

    /// The best offer for a (service, country): asks every upstream whose breaker
    /// is not open, in parallel and bounded in time, and caches the answer.
    /// `None` when nobody has stock.
    pub async fn quote(&self, service: &ServiceCode, country: CountryCode) -> Option<Quote> {
        let key = (service.as_str().to_owned(), country.as_str().to_owned());
        if let Some((at, quote)) = self
            .quotes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if at.elapsed() < QUOTE_TTL {
                return *quote;
            }
        }
        let asks = self.slots.iter().filter(|slot| {
            let state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            breaker_state(&state.breaker, &self.config) != BreakerState::Open
        });
        let mut tasks = tokio::task::JoinSet::new();
        for slot in asks {
            let (slot, service) = (slot.clone(), service.clone());
            tasks.spawn(async move {
                tokio::time::timeout(
                    QUOTE_TIMEOUT,
                    slot.upstream.offers(Some(&service), Some(country)),
                )
                .await
            });
        }
        let mut best: Option<Quote> = None;
        while let Some(answer) = tasks.join_next().await {
            let Ok(Ok(Ok(offers))) = answer else { continue };
            for offer in offers
                .into_iter()
                .filter(|o| o.stock > 0 && o.service == *service && o.country == country)
            {
                best = Some(match best {
                    None => Quote {
                        cost: offer.cost,
                        stock: offer.stock,
                    },
                    Some(q) => Quote {
                        cost: q.cost.min(offer.cost),
                        stock: q.stock.saturating_add(offer.stock),
                    },
                });
            }
        }
        let mut quotes = self.quotes.lock().unwrap_or_else(|p| p.into_inner());
        if quotes.len() >= MAX_QUOTES {
            quotes.clear();
        }
        quotes.insert(key, (Instant::now(), best));
        best
    }

    /// Every upstream, in configuration order.
    pub fn upstreams(&self) -> Vec<Arc<dyn Upstream>> {
        self.slots.iter().map(|s| s.upstream.clone()).collect()
    }

    pub fn upstream(&self, name: &str) -> Option<Arc<dyn Upstream>> {
        self.slots
            .iter()
            .find(|s| s.upstream.name() == name)
            .map(|s| s.upstream.clone())
    }

    pub fn health(&self) -> Vec<UpstreamHealth> {
        self.slots
            .iter()
            .map(|s| {
                let state = s.state.lock().unwrap_or_else(|p| p.into_inner());
                let mut health = state.health.clone();
                health.breaker = breaker_state(&state.breaker, &self.config);
                health
            })
            .collect()
    }

    /// Candidates in order: closed breakers before half-open ones (open ones are
    /// skipped), then the cheapest known cost, then the fastest.
    fn ranked(&self, request: &BuyRequest) -> Vec<Arc<Slot>> {
        let key = (
            request.service.as_str().to_owned(),
            request.country.as_str().to_owned(),
        );
        let mut ranked: Vec<(u8, i64, u64, Arc<Slot>)> = self
            .slots
            .iter()
            .filter_map(|slot| {
                let state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
                let class = match breaker_state(&state.breaker, &self.config) {
                    BreakerState::Closed => 0,
                    BreakerState::HalfOpen if !state.breaker.probing => 1,
                    _ => return None,
                };
                let cost = state.costs.get(&key).map_or(i64::MAX / 2, |c| c.0);
                Some((class, cost, state.health.latency_ms as u64, slot.clone()))
            })
            .collect();
        ranked.sort_by_key(|(class, cost, latency, _)| (*class, *cost, *latency));
        ranked.into_iter().map(|(_, _, _, slot)| slot).collect()
    }

    /// Buys a number, failing over from one upstream to the next until one sells
    /// or the deadline passes. A buy whose outcome is unknown is reconciled in the
    /// background: the number it may have bought is found and cancelled.
    pub async fn buy(&self, request: &BuyRequest) -> Result<Routed, RouteError> {
        let started = Instant::now();
        // NoNumbers only when some upstream answered so and none failed otherwise.
        let mut only_no_numbers = true;
        let mut answered = false;
        // Bounded: each upstream is tried at most once per buy.
        for slot in self.ranked(request) {
            let Some(remaining) = self.config.deadline.checked_sub(started.elapsed()) else {
                break;
            };
            if remaining < Duration::from_millis(50) {
                break;
            }
            if !self.begin_call(&slot) {
                continue;
            }
            let timeout = remaining.min(self.config.attempt_timeout);
            let call_started = Instant::now();
            let result = match tokio::time::timeout(timeout, slot.upstream.buy(request)).await {
                Ok(result) => result,
                Err(_) => Err(UpstreamError::Unavailable("timed out".into())),
            };
            let elapsed = call_started.elapsed();
            match result {
                Ok(purchase) => {
                    self.record(&slot, true, elapsed, Some((request, purchase.cost)));
                    return Ok(Routed {
                        provider: slot.upstream.name().to_owned(),
                        purchase,
                    });
                }
                Err(e) if e.is_definite() => {
                    // No numbers or a refusal: the upstream is healthy, nothing bought.
                    self.record(
                        &slot,
                        !matches!(e, UpstreamError::BadKey | UpstreamError::NoBalance),
                        elapsed,
                        None,
                    );
                    answered = true;
                    only_no_numbers &= matches!(
                        e,
                        UpstreamError::NoNumbers | UpstreamError::PriceTooHigh { .. }
                    );
                    debug!(upstream = slot.upstream.name(), error = %e, "buy refused; failing over");
                }
                Err(e) => {
                    self.record(&slot, false, elapsed, None);
                    only_no_numbers = false;
                    warn!(upstream = slot.upstream.name(), error = %e, "buy outcome unknown; reconciling, failing over");
                    self.reconcile_later(slot.clone(), request.clone());
                }
            }
        }
        Err(if answered && only_no_numbers {
            RouteError::NoNumbers
        } else {
            RouteError::Unavailable
        })
    }

    /// Whether a call may go to this upstream now; takes the half-open probe.
    fn begin_call(&self, slot: &Slot) -> bool {
        let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        match breaker_state(&state.breaker, &self.config) {
            BreakerState::Closed => true,
            BreakerState::HalfOpen if !state.breaker.probing => {
                state.breaker.probing = true;
                true
            }
            _ => false,
        }
    }

    fn record(
        &self,
        slot: &Slot,
        healthy: bool,
        elapsed: Duration,
        cost: Option<(&BuyRequest, Micros)>,
    ) {
        let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        let ms = elapsed.as_secs_f64() * 1000.0;
        state.health.latency_ms = if state.health.latency_ms == 0.0 {
            ms
        } else {
            0.8 * state.health.latency_ms + 0.2 * ms
        };
        state.breaker.probing = false;
        if healthy {
            state.health.successes += 1;
            state.breaker.consecutive_failures = 0;
            state.breaker.opened_at = None;
        } else {
            state.health.failures += 1;
            state.breaker.consecutive_failures += 1;
            if state.breaker.consecutive_failures >= self.config.failures_to_open {
                if state.breaker.opened_at.is_none() {
                    info!(upstream = slot.upstream.name(), "circuit breaker opens");
                }
                state.breaker.opened_at = Some(Instant::now());
            }
        }
        state.health.consecutive_failures = state.breaker.consecutive_failures;
        if let Some((request, cost)) = cost {
            let key = (
                request.service.as_str().to_owned(),
                request.country.as_str().to_owned(),
            );
            state.costs.insert(key, cost);
        }
    }

    /// Finds what an unknown buy did and cancels it, retrying a bounded number of
    /// times. Never leaves a number charged without an order.
    fn reconcile_later(&self, slot: Arc<Slot>, request: BuyRequest) {
        let attempts = self.config.reconcile_attempts;
        let interval = self.config.reconcile_interval;
        tokio::spawn(async move {
            for attempt in 1..=attempts {
                match slot.upstream.find_purchase(&request).await {
                    Ok(None) => return,
                    Ok(Some(purchase)) => {
                        if cancel_until_done(&*slot.upstream, &purchase, attempts, interval).await {
                            let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
                            state.health.reconciled_cancelled += 1;
                            info!(
                                upstream = slot.upstream.name(),
                                "reconciled: a timed-out purchase was cancelled"
                            );
                            return;
                        }
                    }
                    Err(e) => {
                        debug!(upstream = slot.upstream.name(), attempt, error = %e, "reconciliation failed; retrying")
                    }
                }
                tokio::time::sleep(interval).await;
            }
            let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            state.health.unreconciled += 1;
            warn!(
                upstream = slot.upstream.name(),
                "a purchase with an unknown outcome could not be reconciled"
            );
        });
    }
}

/// Cancels a purchase, waiting out "too early" answers; false if it never went.
pub async fn cancel_until_done(
    upstream: &dyn Upstream,
    purchase: &Purchase,
    attempts: u32,
    interval: Duration,
) -> bool {
    for _ in 0..attempts {
        match upstream.cancel(&purchase.handle).await {
            Ok(CancelOutcome::Cancelled | CancelOutcome::AlreadyClosed) => return true,
            Ok(CancelOutcome::AlreadyHasCode) => {
                // A code came for a number nobody ordered: close it.
                return upstream.finish(&purchase.handle).await.is_ok();
            }
            Ok(CancelOutcome::TooEarly { retry_after }) => {
                tokio::time::sleep(
                    retry_after
                        .unwrap_or(interval)
                        .min(Duration::from_secs(180)),
                )
                .await;
            }
            Err(_) => tokio::time::sleep(interval).await,
        }
    }
    false
}

fn breaker_state(breaker: &Breaker, config: &RouterConfig) -> BreakerState {
    match breaker.opened_at {
        None => BreakerState::Closed,
        Some(at) if at.elapsed() < config.open_for => BreakerState::Open,
        Some(_) => BreakerState::HalfOpen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::{Simulator, SimulatorConfig};
    use crate::upstream::UpstreamState;
    use nexus_core::domain::order::Channel;

    fn request(key: &str) -> BuyRequest {
        BuyRequest {
            service: ServiceCode::new("wa").unwrap(),
            country: CountryCode::new("GB").unwrap(),
            channel: Channel::Sms,
            max_cost: None,
            idempotency_key: key.into(),
        }
    }

    fn sim(name: &str, f: impl FnOnce(&mut SimulatorConfig)) -> Arc<Simulator> {
        let mut config = SimulatorConfig {
            latency_ms: 5,
            jitter_ms: 0,
            code_delay_ms: 60_000,
            ..SimulatorConfig::healthy(name)
        };
        f(&mut config);
        Arc::new(Simulator::with_seed(config, 7))
    }

    fn quick() -> RouterConfig {
        RouterConfig {
            deadline: Duration::from_millis(500),
            attempt_timeout: Duration::from_millis(100),
            reconcile_interval: Duration::from_millis(10),
            ..RouterConfig::default()
        }
    }

    #[tokio::test]
    async fn quotes_the_cheapest_upstream_with_stock() {
        let router = Router::new(
            vec![
                sim("dear", |c| c.base_cost = Micros(300_000)),
                sim("cheap", |c| c.base_cost = Micros(100_000)),
                sim("empty", |c| {
                    c.base_cost = Micros(1);
                    c.stock = 0
                }),
            ],
            quick(),
        );
        let service = ServiceCode::new("wa").unwrap();
        let quote = router
            .quote(&service, CountryCode::new("GB").unwrap())
            .await
            .unwrap();
        assert!(
            quote.cost >= Micros(100_000) && quote.cost < Micros(300_000),
            "{quote:?}"
        );
        assert_eq!(quote.stock, 2 * 1_000_000);
        let none = Router::new(vec![sim("empty", |c| c.stock = 0)], quick());
        assert_eq!(
            none.quote(&service, CountryCode::new("GB").unwrap()).await,
            None
        );
    }

    #[tokio::test]
    async fn fails_over_from_an_upstream_without_numbers() {
        let empty = sim("empty", |c| c.stock = 0);
        let full = sim("full", |_| {});
        let router = Router::new(vec![empty, full], quick());
        let routed = router.buy(&request("o1")).await.unwrap();
        assert_eq!(routed.provider, "full");
    }

    #[tokio::test]
    async fn says_no_numbers_only_when_every_upstream_said_so() {
        let router = Router::new(
            vec![sim("a", |c| c.stock = 0), sim("b", |c| c.stock = 0)],
            quick(),
        );
        assert_eq!(
            router.buy(&request("o1")).await.unwrap_err(),
            RouteError::NoNumbers
        );
        let router = Router::new(
            vec![
                sim("a", |c| c.stock = 0),
                sim("b", |c| c.server_error_per_mille = 1000),
            ],
            quick(),
        );
        assert_eq!(
            router.buy(&request("o2")).await.unwrap_err(),
            RouteError::Unavailable
        );
    }

    #[tokio::test]
    async fn a_timed_out_purchase_is_found_and_cancelled() {
        // Every buy hangs past the attempt timeout, and half of them bought.
        let slow = sim("slow", |c| {
            c.timeout_per_mille = 1000;
            c.timeout_ms = 300;
        });
        let good = sim("good", |_| {});
        let router = Router::new(vec![slow.clone(), good], quick());
        for i in 0..6 {
            let routed = router.buy(&request(&format!("o{i}"))).await.unwrap();
            assert_eq!(routed.provider, "good");
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Whatever the slow upstream sold is cancelled, none left active.
        for i in 0..6 {
            if let Some(p) = slow
                .find_purchase(&request(&format!("o{i}")))
                .await
                .unwrap()
            {
                assert_eq!(
                    slow.poll(&p.handle).await.unwrap().state,
                    UpstreamState::Cancelled
                );
            }
        }
        let health = router.health();
        assert_eq!(health[0].unreconciled, 0);
    }

    #[tokio::test]
    async fn the_breaker_opens_after_repeated_failures_and_probes_later() {
        let broken = sim("broken", |c| c.server_error_per_mille = 1000);
        let config = RouterConfig {
            failures_to_open: 3,
            open_for: Duration::from_millis(100),
            ..quick()
        };
        let router = Router::new(vec![broken], config);
        for i in 0..3 {
            assert_eq!(
                router.buy(&request(&format!("o{i}"))).await.unwrap_err(),
                RouteError::Unavailable
            );
        }
        assert_eq!(router.health()[0].breaker, BreakerState::Open);
        let failures = router.health()[0].failures;
        assert_eq!(
            router.buy(&request("o9")).await.unwrap_err(),
            RouteError::Unavailable
        );
        assert_eq!(
            router.health()[0].failures,
            failures,
            "an open breaker takes no calls"
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(router.health()[0].breaker, BreakerState::HalfOpen);
        // The probe fails: open again.
        router.buy(&request("o10")).await.unwrap_err();
        assert_eq!(router.health()[0].failures, failures + 1);
        assert_eq!(router.health()[0].breaker, BreakerState::Open);
    }
}
