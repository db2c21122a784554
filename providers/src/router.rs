//! Routing: which upstream sells an order its number, with failover inside one
//! deadline (the promise: a number in under 3 seconds), a circuit breaker per
//! upstream, and reconciliation of buys whose outcome is unknown.
//!
//! # No double purchase
//!
//! A buy that times out (or gets a 5xx or an unreadable answer) may still have
//! bought a number upstream. The router fails over at once, and the lost buy is
//! settled in the background, in this order:
//!
//! 1. **The late answer.** Each buy runs in its own task; when the router
//!    stops waiting for it, the call is not dropped but awaited for up to
//!    [`RouterConfig::late_answer_wait`] (the adapter's own HTTP timeout
//!    normally ends it sooner). A number it brings is cancelled; a definite
//!    refusal proves nothing was bought.
//! 2. **By idempotency key** (SMSCode, the simulator):
//!    [`Upstream::find_purchase`] replays the buy under the same key.
//! 3. **By listing** (HeroSMS, Proxnum): [`Upstream::open_purchases_like`]
//!    lists the open activations for the same service and country, and the
//!    router claims one that is safe to close, then cancels it.
//! 4. Otherwise (PVAPins, or nothing conclusive within the attempts) it is
//!    counted in [`UpstreamHealth::unreconciled`], and the orphan sweep
//!    (`sweep.rs`) closes what it can list later.
//!
//! ## Why claiming from a listing is safe
//!
//! The listing shows every open activation of the account, including numbers
//! that orders hold. An activation is claimed for a lost buy only if:
//!
//! - **no order can hold it**: its activation id is not among those this
//!   process knows at that upstream, meaning every purchase a buy returned
//!   (recorded under the slot's lock *before* the buy returns it to anyone) and
//!   every activation already claimed by another reconciler. These are kept
//!   for [`KNOWN_ACTIVATION_TTL`] (longer than any upstream keeps an
//!   activation open), at most [`MAX_KNOWN_ACTIVATIONS`] per upstream; if that
//!   many are fresh, the oldest is forgotten and listing-based claims stop for
//!   one TTL, because the set would no longer be complete;
//! - **no answer still on its way could name it**: a buy for the same service
//!   and country that was sent before the listing finished and has not
//!   settled yet (its answer, or its late answer, may still bring exactly this
//!   activation) makes the reconciler wait and list again. A buy sent after
//!   the listing finished cannot have made anything in it;
//! - **it is recent**: the upstream says it was bought no earlier than the
//!   lost buy was sent, less [`RouterConfig::reconcile_clock_skew`]. Until
//!   the known set is seeded (below), also no earlier than this router
//!   started, *plus* that skew: that bound keeps out activations bought
//!   before a restart, which orders may hold although this router has never
//!   seen them. An unseeded router therefore cannot reconcile by listing a
//!   buy lost within one skew of its start when the listing shows an unknown
//!   activation inside that blind spot: it is counted unreconciled (never
//!   "absent": the activation may be its own) and left to the orphan sweep.
//!   An activation whose time cannot be placed in UTC is never claimed;
//! - it costs no more than the buy's cap, if it had one.
//!
//! Among those, the one bought earliest is claimed (recorded as known before
//! the lock is released), then cancelled. When two lost buys for the same
//! service and country race, each claims a different activation (a claim is
//! exclusive), and each claimed one is an activation that no order holds:
//! whichever lost buy made it, cancelling it is right, and the two together
//! close both numbers. A listing that shows nothing claimable proves that
//! nothing was bought only once it started at least
//! [`RouterConfig::absent_after`] after the buy was sent (an upstream may
//! still be completing a purchase whose connection was dropped).
//!
//! This relies on one assumption, shared with the orphan sweep: the upstream
//! account is used by this process alone.
//!
//! ## After a restart: seeding the known set
//!
//! A new process starts with an empty known set, yet orders placed before the
//! restart hold activations at the upstream. The fulfilment worker replays the
//! log before it buys anything and hands the router, through
//! [`Router::seed_known`], every activation the log assigns to an order within
//! [`KNOWN_ACTIVATION_TTL`] (final orders included: an upstream may still list
//! a just-cancelled number) and every activation an open order holds. Once a
//! complete seeding is done, the start bound is dropped, and claiming is safe
//! again, because an unknown activation bought no earlier than a lost buy's
//! send time, less the skew, is one of:
//!
//! - the number of a lost buy of this process: the one to cancel;
//! - the number of a buy of the previous process whose order never recorded
//!   it (lost at the crash, or answered while the process went down): no
//!   order holds it, and none will adopt it — an order resumed after a
//!   restart adopts a purchase only by idempotency key (never at an upstream
//!   reconciled by listing), and what it adopts is made known before it is
//!   assigned. Cancelling such an orphan is right: nobody uses it.
//!
//! It cannot be an order's number: an assignment written before the restart
//! is in the log, so it was seeded (an older one holds an activation bought
//! more than one TTL ago, outside the bound); one written since was bought by
//! this router or adopted as above, and so is known. A seeding that could not
//! read every assignment within the TTL (a record that does not decode, a
//! handle that cannot be opened) is marked incomplete and the start bound
//! stays. A buy sent before the seeding finished keeps the start bound too.
//! A router used without a fulfilment worker (tests, the bench) is never
//! seeded and keeps the start bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{CountryCode, ServiceCode};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::upstream::{
    BuyRequest, CancelOutcome, Handle, ListedPurchase, Purchase, Upstream, UpstreamError,
};

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
    /// How long a buy the router stopped waiting for is still awaited for its
    /// answer (a number it brings is then cancelled). The adapter's own HTTP
    /// timeout normally ends the call sooner.
    pub late_answer_wait: Duration,
    /// How far an upstream's clock may be from Nexus's when a listed
    /// activation's purchase time is compared with the time a lost buy was
    /// sent.
    pub reconcile_clock_skew: Duration,
    /// A listing with nothing claimable proves that a lost buy bought nothing
    /// only when it starts at least this long after the buy was sent.
    pub absent_after: Duration,
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
            late_answer_wait: Duration::from_secs(60),
            reconcile_clock_skew: Duration::from_secs(120),
            absent_after: Duration::from_secs(20),
        }
    }
}

/// How long the router remembers an activation it knows (bought, or claimed by
/// a reconciler): longer than any upstream keeps an activation open (about 20
/// minutes), so a listing never shows a known activation it has forgotten.
pub const KNOWN_ACTIVATION_TTL: Duration = Duration::from_secs(60 * 60);
/// The most activations remembered per upstream (about 55 purchases a second
/// for a whole TTL). Past it, the oldest is forgotten and listing-based
/// reconciliation at that upstream pauses for one TTL.
pub const MAX_KNOWN_ACTIVATIONS: usize = 200_000;

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
    /// Buys with an unknown outcome whose number was found (late answer, key
    /// or listing) and cancelled.
    pub reconciled_cancelled: u64,
    /// Buys with an unknown outcome proven to have bought nothing.
    pub reconciled_absent: u64,
    /// Buys with an unknown outcome that could not be settled.
    pub unreconciled: u64,
}

struct Slot {
    upstream: Arc<dyn Upstream>,
    state: Mutex<SlotState>,
}

struct SlotState {
    breaker: Breaker,
    health: UpstreamHealth,
    /// Last known cost per (service, country), learnt from quotes and purchases.
    costs: HashMap<(String, String), Micros>,
    /// Activations this process knows at this upstream (by
    /// [`Upstream::activation_key`]) → when learnt: bought, or claimed by a
    /// reconciler. Bounded by [`MAX_KNOWN_ACTIVATIONS`].
    known: HashMap<String, Instant>,
    /// Set when a fresh known activation had to be forgotten: until then, the
    /// known set is incomplete and no listed activation is claimed.
    known_incomplete_until: Option<Instant>,
    /// Buys sent to this upstream that have not settled (answer, late answer
    /// or given up): buy number → (service, country) and when sent. At most
    /// one per buy task, each bounded in time by `late_answer_wait`.
    in_flight: HashMap<u64, InFlight>,
}

struct InFlight {
    key: (String, String),
    sent: Instant,
}

impl SlotState {
    fn new(name: String) -> SlotState {
        SlotState {
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
                reconciled_absent: 0,
                unreconciled: 0,
            },
            costs: Default::default(),
            known: HashMap::new(),
            known_incomplete_until: None,
            in_flight: HashMap::new(),
        }
    }

    /// Records an activation as known; forgets the oldest past the bound.
    fn remember(&mut self, activation: String) {
        let now = Instant::now();
        if self.known.len() >= MAX_KNOWN_ACTIVATIONS {
            self.known
                .retain(|_, at| now.duration_since(*at) < KNOWN_ACTIVATION_TTL);
        }
        if self.known.len() >= MAX_KNOWN_ACTIVATIONS {
            if let Some(oldest) = self
                .known
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(key, _)| key.clone())
            {
                self.known.remove(&oldest);
                self.known_incomplete_until = Some(now + KNOWN_ACTIVATION_TTL);
                warn!(
                    upstream = %self.health.name,
                    "too many known activations: reconciliation by listing pauses"
                );
            }
        }
        self.known.insert(activation, now);
    }

    /// A buy settled: it leaves the in-flight set, and the activation it
    /// bought (if any) joins the known set, in one step.
    fn settle(&mut self, buy: u64, bought: Option<String>) {
        if let Some(activation) = bought {
            self.remember(activation);
        }
        self.in_flight.remove(&buy);
    }
}

/// The outcome of one buy, when the router stopped waiting for its answer.
enum LostOutcome {
    /// The answer came late, or to a caller who had gone: this number.
    Bought(Purchase),
    /// A definite refusal came late: nothing was bought.
    NothingBought,
    /// No answer that tells: search.
    Unknown,
}

/// What a listing offers a lost buy.
#[derive(Debug)]
enum Claim {
    Found(Purchase),
    /// An unsettled buy may still name one of the listed activations.
    Wait,
    Nothing,
    /// Only activations whose purchase time cannot be placed in UTC: they may
    /// be this buy's, so nothing is proven, and none is claimed.
    Unplaced,
    /// The known set is incomplete: nothing can be claimed safely.
    Unsafe,
    /// An unknown activation was bought after the lost buy was sent (less the
    /// skew) but before this unseeded router started (plus the skew): it may
    /// be this buy's or an order's from before a restart. Nothing is claimed
    /// and nothing is proven.
    BeforeStart,
}

pub struct Router {
    slots: Vec<Arc<Slot>>,
    config: RouterConfig,
    quotes: Mutex<QuoteCache>,
    /// Numbers buys, for the in-flight sets.
    next_buy: AtomicU64,
    /// When this router started: activations bought before it (plus the
    /// clock skew) may be held by orders it has never seen.
    started_at: DateTime<Utc>,
    /// Set by a complete [`Router::seed_known`]: the known set holds every
    /// activation an order may hold, and `started_at` no longer bounds claims.
    seeded: AtomicBool,
}

/// (service, country) → when asked, and the answer.
type QuoteCache = HashMap<(String, String), (Instant, Option<Quote>)>;

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
                    state: Mutex::new(SlotState::new(name)),
                })
            })
            .collect();
        Self {
            slots,
            config,
            quotes: Mutex::default(),
            next_buy: AtomicU64::new(1),
            started_at: Utc::now(),
            seeded: AtomicBool::new(false),
        }
    }

    /// Records activations that orders hold, as (upstream name, handle), in
    /// the known set of their upstream (by [`Upstream::activation_key`]), for
    /// one [`KNOWN_ACTIVATION_TTL`] from now; handles of upstreams this router
    /// does not have are skipped. With `complete` (the caller read every
    /// assignment within the TTL), the router counts as seeded: claims from a
    /// listing are no longer bounded by its start (see the module's
    /// documentation). Returns how many activations were recorded.
    pub fn seed_known<'a>(
        &self,
        held: impl IntoIterator<Item = (&'a str, &'a Handle)>,
        complete: bool,
    ) -> usize {
        let mut recorded = 0;
        for (provider, handle) in held {
            let Some(slot) = self.slots.iter().find(|s| s.upstream.name() == provider) else {
                continue;
            };
            let activation = slot.upstream.activation_key(handle);
            slot.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remember(activation);
            recorded += 1;
        }
        if complete {
            self.seeded.store(true, Ordering::Release);
        }
        recorded
    }

    /// Whether a complete seeding of the known set was done.
    pub fn is_seeded(&self) -> bool {
        self.seeded.load(Ordering::Acquire)
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
                let offers = tokio::time::timeout(
                    QUOTE_TIMEOUT,
                    slot.upstream.offers(Some(&service), Some(country)),
                )
                .await;
                (slot, offers)
            });
        }
        let mut best: Option<Quote> = None;
        while let Some(answer) = tasks.join_next().await {
            let Ok((slot, Ok(Ok(offers)))) = answer else {
                continue;
            };
            let mut cheapest: Option<Micros> = None;
            for offer in offers
                .into_iter()
                .filter(|o| o.stock > 0 && o.service == *service && o.country == country)
            {
                cheapest = Some(cheapest.map_or(offer.cost, |c| c.min(offer.cost)));
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
            // What the upstream asks now ranks it for the buys that follow, so
            // an order priced on the cheapest upstream is bought there first
            // (the price was its cost plus the markup). One with no stock
            // falls back to unknown: tried after those that quoted.
            let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            match cheapest {
                Some(cost) => {
                    state.costs.insert(key.clone(), cost);
                }
                None => {
                    state.costs.remove(&key);
                }
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
            // An unknown outcome is settled by the attempt's own task.
            let result = self
                .attempt(slot.clone(), request.clone(), timeout)
                .await
                .unwrap_or_else(|_| Err(UpstreamError::Unavailable("buy task ended".into())));
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

    /// One buy at one upstream, in a task of its own: answers within
    /// `timeout` (a timeout is `Unavailable`), and when the outcome is unknown
    /// (a timeout, a 5xx, garbage, or a caller that has gone), settles it in
    /// the background: see the module's documentation.
    fn attempt(
        &self,
        slot: Arc<Slot>,
        request: BuyRequest,
        timeout: Duration,
    ) -> oneshot::Receiver<Result<Purchase, UpstreamError>> {
        let (answer, receiver) = oneshot::channel();
        let buy = self.next_buy.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        // A listed activation is claimable only if bought after this buy was
        // sent and, until the known set is seeded, after this router started,
        // give or take the clock skew.
        let skew = chrono::Duration::from_std(self.config.reconcile_clock_skew).unwrap_or_default();
        let since_send = Utc::now() - skew;
        let not_before = if self.is_seeded() {
            since_send
        } else {
            since_send.max(self.started_at + skew)
        };
        slot.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .in_flight
            .insert(
                buy,
                InFlight {
                    key: key_of(&request),
                    sent,
                },
            );
        let config = self.config.clone();
        let mut unsettled = Unsettled {
            slot: slot.clone(),
            buy,
            settled: false,
        };
        tokio::spawn(async move {
            let mut call = slot.upstream.buy(&request);
            let outcome = match tokio::time::timeout(timeout, &mut call).await {
                Ok(result) => {
                    unsettled.settle(result.as_ref().ok());
                    match result {
                        Ok(purchase) => match answer.send(Ok(purchase)) {
                            Ok(()) => return,
                            // Nobody waits for it any more: not needed.
                            Err(Ok(purchase)) => LostOutcome::Bought(purchase),
                            Err(Err(_)) => return,
                        },
                        Err(e) if e.is_definite() => {
                            let _ = answer.send(Err(e));
                            return;
                        }
                        Err(e) => {
                            let _ = answer.send(Err(e));
                            LostOutcome::Unknown
                        }
                    }
                }
                Err(_) => {
                    let _ = answer.send(Err(UpstreamError::Unavailable("timed out".into())));
                    // The call goes on: its answer tells what it did.
                    let late = tokio::time::timeout(config.late_answer_wait, &mut call).await;
                    drop(call);
                    let late = late.unwrap_or_else(|_| {
                        Err(UpstreamError::Unavailable("no late answer".into()))
                    });
                    unsettled.settle(late.as_ref().ok());
                    match late {
                        Ok(purchase) => LostOutcome::Bought(purchase),
                        Err(e) if e.is_definite() => LostOutcome::NothingBought,
                        Err(_) => LostOutcome::Unknown,
                    }
                }
            };
            let bounds = Bounds {
                since_send,
                not_before,
            };
            reconcile(&slot, &config, &request, sent, bounds, outcome).await;
        });
        receiver
    }
}

/// A buy in its upstream's in-flight set until it settles. A buy task that
/// ends without settling (a panic, or the runtime shutting down) leaves the
/// set all the same, and is counted unreconciled.
struct Unsettled {
    slot: Arc<Slot>,
    buy: u64,
    settled: bool,
}

impl Unsettled {
    fn settle(&mut self, bought: Option<&Purchase>) {
        let activation = bought.map(|p| self.slot.upstream.activation_key(&p.handle));
        self.slot
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .settle(self.buy, activation);
        self.settled = true;
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        if !self.settled {
            let mut state = self.slot.state.lock().unwrap_or_else(|p| p.into_inner());
            state.in_flight.remove(&self.buy);
            state.health.unreconciled += 1;
        }
    }
}

/// The earliest purchase times for a lost buy's claim.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    /// When the buy was sent, less the clock skew.
    since_send: DateTime<Utc>,
    /// The earliest a claimable activation may be bought: `since_send`, or
    /// later for an unseeded router (its start plus the skew).
    not_before: DateTime<Utc>,
}

/// (service, country) of a buy.
fn key_of(request: &BuyRequest) -> (String, String) {
    (
        request.service.as_str().to_owned(),
        request.country.as_str().to_owned(),
    )
}

/// Settles a buy whose outcome is unknown: cancels the number it bought, or
/// proves it bought none, retrying a bounded number of times; otherwise counts
/// it unreconciled.
async fn reconcile(
    slot: &Slot,
    config: &RouterConfig,
    request: &BuyRequest,
    sent: Instant,
    bounds: Bounds,
    outcome: LostOutcome,
) {
    let name = slot.upstream.name();
    let count = |field: fn(&mut UpstreamHealth) -> &mut u64| {
        let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        *field(&mut state.health) += 1;
    };
    let (attempts, interval) = (config.reconcile_attempts, config.reconcile_interval);
    let close = |purchase: Purchase, how: &'static str| async move {
        if cancel_until_done(&*slot.upstream, &purchase, attempts, interval).await {
            count(|h| &mut h.reconciled_cancelled);
            info!(
                upstream = name,
                how, "reconciled: a purchase with an unknown outcome was cancelled"
            );
        } else {
            count(|h| &mut h.unreconciled);
            warn!(
                upstream = name,
                how, "a purchase with an unknown outcome was found but could not be cancelled"
            );
        }
    };
    match outcome {
        LostOutcome::Bought(purchase) => return close(purchase, "late answer").await,
        LostOutcome::NothingBought => {
            count(|h| &mut h.reconciled_absent);
            debug!(upstream = name, "a late answer says nothing was bought");
            return;
        }
        LostOutcome::Unknown => {}
    }
    // Waiting for other buys to settle does not use up attempts; it is
    // bounded by how long a buy can stay unsettled.
    let wait_until = Instant::now() + config.attempt_timeout + config.late_answer_wait + interval;
    let mut attempt = 0;
    while attempt < attempts {
        attempt += 1;
        let listing_started = Instant::now();
        match slot.upstream.open_purchases_like(request).await {
            Ok(Some(listed)) => {
                let listed_by = Instant::now();
                let claim = {
                    let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
                    claim(
                        &mut state,
                        &*slot.upstream,
                        &listed,
                        request,
                        bounds,
                        listed_by,
                    )
                };
                match claim {
                    Claim::Found(purchase) => return close(purchase, "listing").await,
                    Claim::Nothing
                        if listing_started.duration_since(sent) >= config.absent_after =>
                    {
                        count(|h| &mut h.reconciled_absent);
                        debug!(
                            upstream = name,
                            "a lost buy bought nothing: no activation to claim"
                        );
                        return;
                    }
                    Claim::Nothing => {
                        // Too soon to conclude: list again once it is not.
                        tokio::time::sleep_until((sent + config.absent_after).into()).await;
                        continue;
                    }
                    Claim::Wait => {
                        if Instant::now() < wait_until {
                            attempt -= 1;
                        }
                        debug!(
                            upstream = name,
                            attempt, "a buy in flight may name a listed activation; listing again"
                        );
                    }
                    Claim::Unplaced => {
                        debug!(
                            upstream = name,
                            attempt,
                            "listed activations without a usable purchase time; listing again"
                        );
                    }
                    Claim::Unsafe => break,
                    Claim::BeforeStart
                        if listing_started.duration_since(sent) < config.absent_after =>
                    {
                        // The lost buy's own number may not be listed yet.
                        tokio::time::sleep_until((sent + config.absent_after).into()).await;
                        continue;
                    }
                    Claim::BeforeStart => {
                        debug!(
                            upstream = name,
                            "an unknown activation from before this start may be the lost buy's"
                        );
                        break;
                    }
                }
            }
            Ok(None) => match slot.upstream.find_purchase(request).await {
                Ok(None) => {
                    count(|h| &mut h.reconciled_absent);
                    return;
                }
                Ok(Some(purchase)) => {
                    slot.state
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remember(slot.upstream.activation_key(&purchase.handle));
                    return close(purchase, "idempotency key").await;
                }
                Err(e) => {
                    debug!(upstream = name, attempt, error = %e, "reconciliation failed; retrying")
                }
            },
            Err(e) => {
                debug!(upstream = name, attempt, error = %e, "listing for reconciliation failed; retrying")
            }
        }
        tokio::time::sleep(interval).await;
    }
    count(|h| &mut h.unreconciled);
    warn!(
        upstream = name,
        "a purchase with an unknown outcome could not be reconciled"
    );
}

/// Picks the listed activation a lost buy may close, and records it as known
/// (see the module's documentation for why this is safe). `bounds`: the
/// earliest purchase times; `listed_by`: when the listing had been read
/// completely.
fn claim(
    state: &mut SlotState,
    upstream: &dyn Upstream,
    listed: &[ListedPurchase],
    request: &BuyRequest,
    bounds: Bounds,
    listed_by: Instant,
) -> Claim {
    let not_before = bounds.not_before;
    let now = Instant::now();
    if state
        .known_incomplete_until
        .is_some_and(|until| now < until)
    {
        return Claim::Unsafe;
    }
    let key = key_of(request);
    if state
        .in_flight
        .values()
        .any(|f| f.key == key && f.sent <= listed_by)
    {
        return Claim::Wait;
    }
    let unknown: Vec<&ListedPurchase> = listed
        .iter()
        .filter(|l| request.max_cost.is_none_or(|cap| l.purchase.cost <= cap))
        .filter(|l| {
            let activation = upstream.activation_key(&l.purchase.handle);
            state
                .known
                .get(&activation)
                .is_none_or(|at| now.duration_since(*at) >= KNOWN_ACTIVATION_TTL)
        })
        .collect();
    let best = unknown
        .iter()
        .filter(|l| l.bought_at.is_some_and(|at| at >= not_before))
        .min_by_key(|l| l.bought_at);
    match best {
        Some(listed) => {
            state.remember(upstream.activation_key(&listed.purchase.handle));
            Claim::Found(listed.purchase.clone())
        }
        None if unknown.iter().any(|l| l.bought_at.is_none()) => Claim::Unplaced,
        None if unknown
            .iter()
            .any(|l| l.bought_at.is_some_and(|at| at >= bounds.since_send)) =>
        {
            Claim::BeforeStart
        }
        None => Claim::Nothing,
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
    use crate::simulator::{CodeTiming, Simulator, SimulatorConfig};
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
            code_timing: CodeTiming::Fixed { delay_ms: 60_000 },
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
    async fn a_quoted_pair_is_bought_where_it_was_priced_even_when_slower() {
        // Listed first and faster: it wins every tie on an unknown cost.
        let router = Router::new(
            vec![
                sim("dear-fast", |c| {
                    c.base_cost = Micros(300_000);
                    c.latency_ms = 1;
                }),
                sim("cheap-slow", |c| {
                    c.base_cost = Micros(100_000);
                    c.latency_ms = 30;
                }),
            ],
            quick(),
        );
        let service = ServiceCode::new("wa").unwrap();
        let quote = router
            .quote(&service, CountryCode::new("GB").unwrap())
            .await
            .unwrap();
        assert!(quote.cost < Micros(300_000), "{quote:?}");
        for key in ["o1", "o2", "o3"] {
            let routed = router.buy(&request(key)).await.unwrap();
            assert_eq!(routed.provider, "cheap-slow", "{key}");
        }
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

    fn listed(handle: &str, bought_at: Option<DateTime<Utc>>, cost: i64) -> ListedPurchase {
        ListedPurchase {
            purchase: Purchase {
                handle: Handle(handle.into()),
                phone: "6281200000000".into(),
                cost: Micros(cost),
                expires_at: None,
            },
            bought_at,
        }
    }

    /// Claim bounds of a seeded router: only the send time counts.
    fn bounds(since_send: DateTime<Utc>) -> Bounds {
        Bounds {
            since_send,
            not_before: since_send,
        }
    }

    fn empty_state() -> SlotState {
        SlotState::new("s".into())
    }

    fn claimed(outcome: Claim) -> Option<String> {
        match outcome {
            Claim::Found(p) => Some(p.handle.0),
            _ => None,
        }
    }

    #[test]
    fn a_claim_takes_the_earliest_recent_unknown_activation_once() {
        let upstream = sim("s", |_| {});
        let mut state = empty_state();
        let sent_at = Utc::now();
        let not_before = sent_at - chrono::Duration::seconds(60);
        let at = |seconds: i64| Some(sent_at + chrono::Duration::seconds(seconds));
        state.remember("held".into());
        let list = vec![
            listed("old", at(-600), 100),
            listed("held", at(1), 100),
            listed("second", at(5), 100),
            listed("first", at(-30), 100),
            listed("dear", at(0), 900),
        ];
        let mut capped = request("o1");
        capped.max_cost = Some(Micros(500));
        let now = Instant::now();
        let first = claim(
            &mut state,
            &*upstream,
            &list,
            &capped,
            bounds(not_before),
            now,
        );
        assert_eq!(claimed(first).as_deref(), Some("first"));
        // A claim is exclusive: the next lost buy gets the next one, then none.
        let second = claim(
            &mut state,
            &*upstream,
            &list,
            &capped,
            bounds(not_before),
            now,
        );
        assert_eq!(claimed(second).as_deref(), Some("second"));
        assert!(matches!(
            claim(
                &mut state,
                &*upstream,
                &list,
                &capped,
                bounds(not_before),
                now
            ),
            Claim::Nothing
        ));
        // Without the cap, the dear one is a candidate too.
        let uncapped = claim(
            &mut state,
            &*upstream,
            &list,
            &request("o2"),
            bounds(not_before),
            now,
        );
        assert_eq!(claimed(uncapped).as_deref(), Some("dear"));
    }

    #[test]
    fn no_claim_while_a_buy_may_still_name_an_activation_or_times_are_unplaced() {
        let upstream = sim("s", |_| {});
        let mut state = empty_state();
        let sent_at = Utc::now();
        let not_before = sent_at - chrono::Duration::seconds(60);
        let list = vec![listed("a", Some(sent_at), 100)];
        // A buy for the same service and country, sent before the listing
        // was read and not settled: its answer may be exactly "a".
        state.in_flight.insert(
            7,
            InFlight {
                key: key_of(&request("o1")),
                sent: Instant::now(),
            },
        );
        let listed_by = Instant::now();
        assert!(matches!(
            claim(
                &mut state,
                &*upstream,
                &list,
                &request("o2"),
                bounds(not_before),
                listed_by
            ),
            Claim::Wait
        ));
        // It settles with "a": "a" is known, nothing is left to claim.
        state.settle(7, Some("a".into()));
        assert!(matches!(
            claim(
                &mut state,
                &*upstream,
                &list,
                &request("o2"),
                bounds(not_before),
                listed_by
            ),
            Claim::Nothing
        ));
        // A buy sent after the listing was read cannot be in it.
        state.in_flight.insert(
            8,
            InFlight {
                key: key_of(&request("o1")),
                sent: Instant::now() + Duration::from_millis(5),
            },
        );
        let fresh = vec![listed("b", Some(sent_at), 100)];
        assert_eq!(
            claimed(claim(
                &mut state,
                &*upstream,
                &fresh,
                &request("o2"),
                bounds(not_before),
                listed_by
            ))
            .as_deref(),
            Some("b")
        );
        // An activation whose time cannot be placed is never claimed, and
        // proves nothing.
        let unplaced = vec![listed("c", None, 100)];
        assert!(matches!(
            claim(
                &mut state,
                &*upstream,
                &unplaced,
                &request("o2"),
                bounds(not_before),
                listed_by
            ),
            Claim::Unplaced
        ));
    }

    #[test]
    fn an_unknown_activation_before_an_unseeded_start_proves_nothing() {
        let upstream = sim("s", |_| {});
        let mut state = empty_state();
        let sent_at = Utc::now();
        let start_bound = Bounds {
            since_send: sent_at - chrono::Duration::seconds(60),
            not_before: sent_at + chrono::Duration::seconds(60),
        };
        let list = vec![listed("maybe-ours", Some(sent_at), 100)];
        let outcome = claim(
            &mut state,
            &*upstream,
            &list,
            &request("o1"),
            start_bound,
            Instant::now(),
        );
        assert!(matches!(outcome, Claim::BeforeStart), "{outcome:?}");
        // Older than the send time less the skew: not a candidate at all.
        let old = vec![listed(
            "old",
            Some(sent_at - chrono::Duration::hours(1)),
            100,
        )];
        assert!(matches!(
            claim(
                &mut state,
                &*upstream,
                &old,
                &request("o1"),
                start_bound,
                Instant::now()
            ),
            Claim::Nothing
        ));
    }

    #[test]
    fn seeding_records_known_activations_and_only_a_complete_one_counts() {
        let router = Router::new(vec![sim("s", |_| {})], quick());
        let handle = Handle("held".into());
        let elsewhere = Handle("other".into());
        let recorded = router.seed_known([("s", &handle), ("gone", &elsewhere)], false);
        assert_eq!(recorded, 1, "an upstream this router lacks is skipped");
        assert!(!router.is_seeded());
        {
            let state = router.slots[0].state.lock().unwrap();
            assert!(state.known.contains_key("held"));
            assert!(!state.known.contains_key("other"));
        }
        router.seed_known(std::iter::empty(), true);
        assert!(router.is_seeded());
    }

    /// An upstream whose buy panics (a bug): nothing else is needed here.
    struct Panicking;

    impl Upstream for Panicking {
        fn name(&self) -> &str {
            "panicking"
        }
        fn offers<'a>(
            &'a self,
            _: Option<&'a ServiceCode>,
            _: Option<CountryCode>,
        ) -> crate::upstream::UpstreamFuture<'a, Vec<crate::upstream::Offer>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn balance(&self) -> crate::upstream::UpstreamFuture<'_, Micros> {
            Box::pin(async { Ok(Micros(0)) })
        }
        fn buy<'a>(&'a self, _: &'a BuyRequest) -> crate::upstream::UpstreamFuture<'a, Purchase> {
            Box::pin(async { panic!("a bug in an adapter") })
        }
        fn poll<'a>(
            &'a self,
            _: &'a Handle,
        ) -> crate::upstream::UpstreamFuture<'a, crate::upstream::Snapshot> {
            Box::pin(async { Err(UpstreamError::NotFound) })
        }
        fn resend<'a>(&'a self, _: &'a Handle) -> crate::upstream::UpstreamFuture<'a, Handle> {
            Box::pin(async { Err(UpstreamError::NotFound) })
        }
        fn finish<'a>(&'a self, _: &'a Handle) -> crate::upstream::UpstreamFuture<'a, ()> {
            Box::pin(async { Ok(()) })
        }
        fn cancel<'a>(
            &'a self,
            _: &'a Handle,
        ) -> crate::upstream::UpstreamFuture<'a, CancelOutcome> {
            Box::pin(async { Ok(CancelOutcome::AlreadyClosed) })
        }
    }

    #[tokio::test]
    async fn a_buy_task_that_dies_leaves_the_in_flight_set_and_is_counted() {
        let patient = RouterConfig {
            deadline: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(2),
            ..quick()
        };
        let router = Router::new(vec![Arc::new(Panicking), sim("good", |_| {})], patient);
        let routed = router.buy(&request("o1")).await.unwrap();
        assert_eq!(routed.provider, "good");
        // The dying task's guard may run just after the caller moved on.
        for _ in 0..100 {
            if router.health()[0].unreconciled > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let state = router.slots[0].state.lock().unwrap();
        assert!(state.in_flight.is_empty());
        assert_eq!(state.health.unreconciled, 1);
    }

    #[test]
    fn an_overfull_known_set_stops_claims() {
        let upstream = sim("s", |_| {});
        let mut state = empty_state();
        for i in 0..=MAX_KNOWN_ACTIVATIONS {
            state.remember(format!("a{i}"));
        }
        assert_eq!(state.known.len(), MAX_KNOWN_ACTIVATIONS);
        let sent_at = Utc::now();
        let list = vec![listed("new", Some(sent_at), 1)];
        assert!(matches!(
            claim(
                &mut state,
                &*upstream,
                &list,
                &request("o1"),
                bounds(sent_at),
                Instant::now()
            ),
            Claim::Unsafe
        ));
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
