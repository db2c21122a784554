//! A simulated upstream: the embedded default, and the load generator's peer.
//!
//! Configurable latency, stock, failure rates (no numbers, timeouts, 5xx,
//! garbage), and codes by SMS or voice call arriving after a delay. A timed-out
//! buy may have gone through (as with a real upstream): [`Upstream::find_purchase`]
//! replays the idempotency key and finds it, so the router can cancel it.
//!
//! With [`Market::Realistic`] each (service, country) has its own price tier and
//! stock, and with [`CodeTiming::Realistic`] its own spread of code arrivals
//! ([`profile`], docs/SIMULATOR.md); numbers carry the country's calling code.

pub mod profile;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{Channel, CountryCode, ServiceCode};

use self::profile::Profile;
use crate::upstream::{
    BuyRequest, CancelOutcome, Handle, Offer, Purchase, Snapshot, Upstream, UpstreamError,
    UpstreamFuture, UpstreamState,
};

/// Rates are in parts per thousand of calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimulatorConfig {
    pub name: String,
    /// Each call takes `latency_ms ± jitter_ms` (uniform).
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// Buys answered `NoNumbers`.
    pub no_numbers_per_mille: u32,
    /// Buys that hang for `timeout_ms`, then fail `Unavailable`; half of them
    /// bought a number all the same.
    pub timeout_per_mille: u32,
    pub timeout_ms: u64,
    /// Calls answered like a 5xx (`Unavailable`, nothing done).
    pub server_error_per_mille: u32,
    /// Calls answered with garbage (`Malformed`, nothing done).
    pub garbage_per_mille: u32,
    /// When the code arrives after the purchase (or a resend).
    pub code_timing: CodeTiming,
    /// How prices and stock vary by (service, country).
    pub market: Market,
    /// The upstream's cost per number, before any per-pair variation.
    pub base_cost: Micros,
    /// Most numbers in stock per (service, country) (the pair's own stock
    /// under [`Market::Realistic`] can be lower); bought ones are not returned.
    pub stock: u64,
    /// Cancel is refused this long after the purchase.
    pub min_cancel_ms: u64,
}

/// When a purchase's code arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeTiming {
    /// Every code after exactly this delay (tests and benches pin it).
    Fixed { delay_ms: u64 },
    /// Each activation draws its delay from its pair's spread: most within a
    /// minute, some after minutes, a few never ([`profile::Arrival`]).
    Realistic,
}

/// How price and stock vary by (service, country).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Market {
    /// Every pair alike: the base cost plus up to 49 thousandths of a dollar
    /// (a stable hash of the pair), `stock` numbers each.
    Uniform,
    /// Each pair's price tier and stock from its profile
    /// ([`profile::Profile`]), capped at `stock`.
    Realistic,
}

impl SimulatorConfig {
    /// A healthy upstream (for deterministic tests and demos).
    pub fn healthy(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            latency_ms: 50,
            jitter_ms: 20,
            no_numbers_per_mille: 0,
            timeout_per_mille: 0,
            timeout_ms: 2_000,
            server_error_per_mille: 0,
            garbage_per_mille: 0,
            code_timing: CodeTiming::Fixed { delay_ms: 5_000 },
            market: Market::Uniform,
            base_cost: Micros(100_000),
            stock: 1_000_000,
            min_cancel_ms: 0,
        }
    }

    /// The embedded default's three upstreams on the realistic market:
    /// different prices, latencies and failure rates, so routing and failover
    /// show from the first run. With `faults` off all three are healthy.
    pub fn embedded_defaults(faults: bool, code_timing: CodeTiming) -> Vec<SimulatorConfig> {
        let mut cheap = Self::healthy("sim-budget");
        let mut fast = Self::healthy("sim-express");
        let mut steady = Self::healthy("sim-steady");
        for c in [&mut cheap, &mut fast, &mut steady] {
            c.code_timing = code_timing;
            c.market = Market::Realistic;
        }
        cheap.base_cost = Micros(60_000);
        fast.base_cost = Micros(150_000);
        steady.base_cost = Micros(100_000);
        if faults {
            cheap.latency_ms = 700;
            cheap.jitter_ms = 300;
            cheap.no_numbers_per_mille = 150;
            cheap.timeout_per_mille = 50;
            cheap.timeout_ms = 1_500;
            cheap.server_error_per_mille = 20;
            cheap.garbage_per_mille = 10;
            fast.latency_ms = 150;
            fast.jitter_ms = 50;
            fast.no_numbers_per_mille = 20;
            steady.latency_ms = 400;
            steady.jitter_ms = 150;
            steady.no_numbers_per_mille = 50;
            steady.timeout_per_mille = 10;
        }
        vec![cheap, fast, steady]
    }
}

struct Activation {
    request: BuyRequest,
    bought_at: Instant,
    /// When the code arrives after the purchase (or a resend); `None`: never.
    code_after: Option<Duration>,
    phone: String,
    code: String,
    /// Messages sent so far (0 until the code arrives; +1 per resend).
    revision: u64,
    resend_at: Option<Instant>,
    state: UpstreamState,
}

/// Most activations the simulator remembers; the oldest closed ones go first.
const MAX_ACTIVATIONS: usize = 200_000;

/// An activation without its code expires this long after the purchase.
const ACTIVATION_TTL: Duration = Duration::from_secs(20 * 60);

/// What `offers` names without a filter: services and countries across the
/// tiers (12 × 25 = 300 offers).
const LISTED_SERVICES: [&str; 12] = [
    "tg", "wa", "go", "fb", "ig", "tw", "vi", "ds", "am", "oi", "ub", "mt",
];
const LISTED_COUNTRIES: [&str; 25] = [
    "ID", "IN", "PH", "VN", "RU", "NG", "KE", "BR", "MX", "PL", "TR", "TH", "AR", "US", "GB", "DE",
    "FR", "JP", "CA", "SN", "BO", "LB", "AQ", "VA", "FK",
];

pub struct Simulator {
    config: SimulatorConfig,
    rng: Mutex<SplitMix64>,
    next_id: AtomicU64,
    activations: Mutex<HashMap<Handle, Activation>>,
    by_key: Mutex<HashMap<String, Handle>>,
    sold: Mutex<HashMap<(ServiceCode, CountryCode), u64>>,
    /// How far the simulator's clock runs ahead of the real one (moved by
    /// tests only, so that minutes pass without waiting for them).
    skew_ms: AtomicU64,
}

/// What a call drew from the failure rates.
enum Fault {
    None,
    NoNumbers,
    Timeout,
    ServerError,
    Garbage,
}

impl Simulator {
    pub fn new(config: SimulatorConfig) -> Self {
        let mut seed = [0u8; 8];
        // A fixed seed if the system has no randomness: the simulator still works.
        let _ = getrandom::fill(&mut seed);
        Self::with_seed(config, u64::from_le_bytes(seed))
    }

    /// Deterministic draws, for tests.
    pub fn with_seed(config: SimulatorConfig, seed: u64) -> Self {
        Self {
            config,
            rng: Mutex::new(SplitMix64(seed)),
            next_id: AtomicU64::new(1),
            activations: Mutex::new(HashMap::new()),
            by_key: Mutex::new(HashMap::new()),
            sold: Mutex::new(HashMap::new()),
            skew_ms: AtomicU64::new(0),
        }
    }

    /// The simulator's clock: the real one, plus what tests skipped.
    fn now(&self) -> Instant {
        let real = Instant::now();
        real.checked_add(Duration::from_millis(self.skew_ms.load(Ordering::Relaxed)))
            .unwrap_or(real)
    }

    /// Moves the simulator's clock forward.
    #[cfg(test)]
    fn skip(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.skew_ms.fetch_add(ms, Ordering::Relaxed);
    }

    fn draw(&self, below: u64) -> u64 {
        self.rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .below(below)
    }

    async fn latency(&self) {
        let jitter = self.draw(2 * self.config.jitter_ms + 1);
        let ms = (self.config.latency_ms + jitter).saturating_sub(self.config.jitter_ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Draws this call's fault (buys can also draw `NoNumbers` and `Timeout`).
    fn fault(&self, buying: bool) -> Fault {
        let c = &self.config;
        let roll = self.draw(1000) as u32;
        let mut edge = c.server_error_per_mille;
        if roll < edge {
            return Fault::ServerError;
        }
        edge += c.garbage_per_mille;
        if roll < edge {
            return Fault::Garbage;
        }
        if buying {
            edge += c.no_numbers_per_mille;
            if roll < edge {
                return Fault::NoNumbers;
            }
            edge += c.timeout_per_mille;
            if roll < edge {
                return Fault::Timeout;
            }
        }
        Fault::None
    }

    /// The cost for a (service, country): the base, varied by the market.
    fn cost(&self, service: &ServiceCode, country: CountryCode) -> Micros {
        match self.config.market {
            Market::Uniform => {
                let h =
                    profile::fnv1a(format!("{}{}", service.as_str(), country.as_str()).as_bytes());
                Micros(self.config.base_cost.0 + (h % 50) as i64 * 1_000)
            }
            Market::Realistic => {
                Micros(Profile::of(service, country).cost_micros(self.config.base_cost.0))
            }
        }
    }

    /// Numbers a (service, country) had before any was sold.
    fn stock(&self, service: &ServiceCode, country: CountryCode) -> u64 {
        match self.config.market {
            Market::Uniform => self.config.stock,
            Market::Realistic => Profile::of(service, country).stock.min(self.config.stock),
        }
    }

    /// When this purchase's code arrives; `None`: never.
    fn draw_code_after(&self, service: &ServiceCode, country: CountryCode) -> Option<Duration> {
        match self.config.code_timing {
            CodeTiming::Fixed { delay_ms } => Some(Duration::from_millis(delay_ms)),
            CodeTiming::Realistic => Profile::of(service, country)
                .arrival
                .draw(|below| self.draw(below)),
        }
    }

    fn purchase_of(handle: &Handle, activation: &Activation, cost: Micros) -> Purchase {
        Purchase {
            handle: handle.clone(),
            phone: activation.phone.clone(),
            cost,
            expires_at: Some(Utc::now() + chrono::Duration::minutes(20)),
        }
    }

    fn record(&self, request: &BuyRequest) -> Result<Purchase, UpstreamError> {
        let known = self
            .by_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&request.idempotency_key)
            .cloned();
        if let Some(handle) = &known {
            let activations = self.activations.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(a) = activations.get(handle) {
                return Ok(Self::purchase_of(
                    handle,
                    a,
                    self.cost(&request.service, request.country),
                ));
            }
        }
        let cost = self.cost(&request.service, request.country);
        if request.max_cost.is_some_and(|max| cost > max) {
            return Err(UpstreamError::PriceTooHigh { min: Some(cost) });
        }
        {
            let stock = self.stock(&request.service, request.country);
            let mut sold = self.sold.lock().unwrap_or_else(|p| p.into_inner());
            let n = sold
                .entry((request.service.clone(), request.country))
                .or_default();
            if *n >= stock {
                return Err(UpstreamError::NoNumbers);
            }
            *n += 1;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = Handle(format!("{}-{id}", self.config.name));
        let activation = Activation {
            request: request.clone(),
            bought_at: self.now(),
            code_after: self.draw_code_after(&request.service, request.country),
            phone: profile::phone_number(request.country, |below| self.draw(below)),
            code: format!("{:06}", self.draw(1_000_000)),
            revision: 0,
            resend_at: None,
            state: UpstreamState::Waiting,
        };
        let purchase = Self::purchase_of(&handle, &activation, cost);
        let mut activations = self.activations.lock().unwrap_or_else(|p| p.into_inner());
        if activations.len() >= MAX_ACTIVATIONS {
            activations.retain(|_, a| {
                matches!(
                    a.state,
                    UpstreamState::Waiting | UpstreamState::CodeReceived
                )
            });
        }
        activations.insert(handle.clone(), activation);
        drop(activations);
        // Lock order everywhere: `by_key`, then `activations`.
        let mut by_key = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        if by_key.len() >= MAX_ACTIVATIONS {
            // Keys of pruned activations go too (bounded like the activations).
            let activations = self.activations.lock().unwrap_or_else(|p| p.into_inner());
            by_key.retain(|_, h| activations.contains_key(h));
        }
        by_key.insert(request.idempotency_key.clone(), handle);
        Ok(purchase)
    }

    fn with_activation<T>(
        &self,
        handle: &Handle,
        f: impl FnOnce(&mut Activation) -> T,
    ) -> Result<T, UpstreamError> {
        let mut activations = self.activations.lock().unwrap_or_else(|p| p.into_inner());
        activations
            .get_mut(handle)
            .map(f)
            .ok_or(UpstreamError::NotFound)
    }

    /// Moves an activation's clock: the code arrives its drawn delay after the
    /// purchase (or after a resend), if ever.
    fn advance(&self, a: &mut Activation) {
        let now = self.now();
        // A delay past the clock's range (a huge fixed one) never comes.
        let due = a
            .code_after
            .and_then(|delay| a.resend_at.unwrap_or(a.bought_at).checked_add(delay));
        if matches!(
            a.state,
            UpstreamState::Waiting | UpstreamState::CodeReceived
        ) && due.is_some_and(|due| now >= due)
        {
            let expected = if a.resend_at.is_some() { 2 } else { 1 };
            if a.revision < expected {
                a.revision = expected;
                a.state = UpstreamState::CodeReceived;
            }
        }
        if a.state == UpstreamState::Waiting
            && now.saturating_duration_since(a.bought_at) >= ACTIVATION_TTL
        {
            a.state = UpstreamState::Expired;
        }
    }

    fn snapshot(a: &Activation) -> Snapshot {
        let received = a.revision > 0;
        let by_call = a.request.channel == Channel::Voice;
        let text = received.then(|| {
            if by_call {
                let spelled: Vec<String> = a.code.chars().map(String::from).collect();
                format!(
                    "Your {} code is {}",
                    a.request.service.as_str(),
                    spelled.join(" ")
                )
            } else {
                format!(
                    "Your {} verification code is {}",
                    a.request.service.as_str(),
                    a.code
                )
            }
        });
        Snapshot {
            state: a.state,
            code: received.then(|| a.code.clone()),
            text,
            revision: a.revision,
            by_call,
        }
    }

    /// The pairs `offers` answers for: the asked pair; an asked service in
    /// every catalog country; every catalog service in an asked country; or,
    /// without a filter, a representative set (at most 300 pairs).
    fn listed(
        service: Option<&ServiceCode>,
        country: Option<CountryCode>,
    ) -> (Vec<ServiceCode>, Vec<CountryCode>) {
        let catalog = crate::catalog::Catalog::shipped();
        let services: Vec<ServiceCode> = match (service, country) {
            (Some(s), _) => vec![s.clone()],
            (None, Some(_)) => catalog.services().iter().map(|s| s.code.clone()).collect(),
            (None, None) => LISTED_SERVICES
                .iter()
                .filter_map(|s| ServiceCode::new(s).ok())
                .collect(),
        };
        let countries: Vec<CountryCode> = match (service, country) {
            (_, Some(c)) => vec![c],
            (Some(_), None) => catalog.countries().iter().map(|c| c.iso2).collect(),
            (None, None) => LISTED_COUNTRIES
                .iter()
                .filter_map(|c| CountryCode::new(c).ok())
                .collect(),
        };
        (services, countries)
    }

    async fn answer(&self, buying: bool) -> Result<(), UpstreamError> {
        self.latency().await;
        match self.fault(buying) {
            Fault::None | Fault::NoNumbers | Fault::Timeout => Ok(()),
            Fault::ServerError => Err(UpstreamError::Unavailable("simulated 503".into())),
            Fault::Garbage => Err(UpstreamError::Malformed("simulated garbage".into())),
        }
    }
}

impl Upstream for Simulator {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn offers<'a>(
        &'a self,
        service: Option<&'a ServiceCode>,
        country: Option<CountryCode>,
    ) -> UpstreamFuture<'a, Vec<Offer>> {
        Box::pin(async move {
            self.answer(false).await?;
            let (services, countries) = Self::listed(service, country);
            let sold = self.sold.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut offers = Vec::with_capacity(services.len() * countries.len());
            for s in &services {
                for c in &countries {
                    let used = sold.get(&(s.clone(), *c)).copied().unwrap_or(0);
                    offers.push(Offer {
                        service: s.clone(),
                        country: *c,
                        cost: self.cost(s, *c),
                        stock: self.stock(s, *c).saturating_sub(used),
                    });
                }
            }
            Ok(offers)
        })
    }

    fn balance(&self) -> UpstreamFuture<'_, Micros> {
        Box::pin(async move {
            self.answer(false).await?;
            Ok(Micros::from_usd(1_000_000))
        })
    }

    fn buy<'a>(&'a self, request: &'a BuyRequest) -> UpstreamFuture<'a, Purchase> {
        Box::pin(async move {
            self.latency().await;
            match self.fault(true) {
                Fault::None => self.record(request),
                Fault::NoNumbers => Err(UpstreamError::NoNumbers),
                Fault::ServerError => Err(UpstreamError::Unavailable("simulated 503".into())),
                Fault::Garbage => Err(UpstreamError::Malformed("simulated garbage".into())),
                Fault::Timeout => {
                    // Half the time the number was bought before the line went dead.
                    if self.draw(2) == 0 {
                        let _ = self.record(request);
                    }
                    tokio::time::sleep(Duration::from_millis(self.config.timeout_ms)).await;
                    Err(UpstreamError::Unavailable("simulated timeout".into()))
                }
            }
        })
    }

    fn poll<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, Snapshot> {
        Box::pin(async move {
            self.answer(false).await?;
            self.with_activation(handle, |a| {
                self.advance(a);
                Self::snapshot(a)
            })
        })
    }

    fn resend<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, Handle> {
        Box::pin(async move {
            self.answer(false).await?;
            let now = self.now();
            self.with_activation(handle, |a| {
                if matches!(
                    a.state,
                    UpstreamState::Waiting | UpstreamState::CodeReceived
                ) {
                    a.resend_at = Some(now);
                }
            })?;
            Ok(handle.clone())
        })
    }

    fn finish<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, ()> {
        Box::pin(async move {
            self.answer(false).await?;
            self.with_activation(handle, |a| {
                if a.state != UpstreamState::Cancelled {
                    a.state = UpstreamState::Completed;
                }
            })
        })
    }

    fn cancel<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, CancelOutcome> {
        Box::pin(async move {
            self.answer(false).await?;
            let min_cancel = Duration::from_millis(self.config.min_cancel_ms);
            self.with_activation(handle, |a| {
                self.advance(a);
                let age = self.now().saturating_duration_since(a.bought_at);
                match a.state {
                    UpstreamState::Waiting if age < min_cancel => CancelOutcome::TooEarly {
                        retry_after: Some(min_cancel - age),
                    },
                    UpstreamState::Waiting => {
                        a.state = UpstreamState::Cancelled;
                        CancelOutcome::Cancelled
                    }
                    UpstreamState::CodeReceived => CancelOutcome::AlreadyHasCode,
                    _ => CancelOutcome::AlreadyClosed,
                }
            })
        })
    }

    fn find_purchase<'a>(
        &'a self,
        request: &'a BuyRequest,
    ) -> UpstreamFuture<'a, Option<Purchase>> {
        Box::pin(async move {
            self.answer(false).await?;
            let handle = {
                let by_key = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
                match by_key.get(&request.idempotency_key) {
                    Some(handle) => handle.clone(),
                    None => return Ok(None),
                }
            };
            let activations = self.activations.lock().unwrap_or_else(|p| p.into_inner());
            Ok(activations.get(&handle).map(|a| {
                Self::purchase_of(&handle, a, self.cost(&request.service, request.country))
            }))
        })
    }
}

/// SplitMix64's finalizer: every output bit depends on every input bit.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small, fast PRNG (SplitMix64); the simulator needs no cryptographic quality.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform in `0..below` (`below` > 0), bias negligible for small ranges.
    fn below(&mut self, below: u64) -> u64 {
        self.next() % below.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: &str) -> BuyRequest {
        BuyRequest {
            service: ServiceCode::new("tg").unwrap(),
            country: CountryCode::new("DE").unwrap(),
            channel: Channel::Sms,
            max_cost: None,
            idempotency_key: key.into(),
        }
    }

    fn fast(name: &str) -> SimulatorConfig {
        SimulatorConfig {
            latency_ms: 1,
            jitter_ms: 0,
            code_timing: CodeTiming::Fixed { delay_ms: 30 },
            ..SimulatorConfig::healthy(name)
        }
    }

    #[tokio::test]
    async fn a_purchase_gets_its_code_after_the_delay_and_a_resend_a_new_revision() {
        let sim = Simulator::with_seed(fast("s"), 1);
        let p = sim.buy(&request("o1")).await.unwrap();
        assert_eq!(
            sim.poll(&p.handle).await.unwrap().state,
            UpstreamState::Waiting
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
        let s = sim.poll(&p.handle).await.unwrap();
        assert_eq!((s.state, s.revision), (UpstreamState::CodeReceived, 1));
        assert!(s.text.unwrap().contains(&s.code.unwrap()));
        assert_eq!(
            sim.cancel(&p.handle).await.unwrap(),
            CancelOutcome::AlreadyHasCode
        );
        sim.resend(&p.handle).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(sim.poll(&p.handle).await.unwrap().revision, 2);
        sim.finish(&p.handle).await.unwrap();
        assert_eq!(
            sim.poll(&p.handle).await.unwrap().state,
            UpstreamState::Completed
        );
    }

    /// Buys and reconciliation lookups racing on two threads never deadlock
    /// (they once took the simulator's two locks in opposite orders).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn buys_and_lookups_racing_finish() {
        let sim = std::sync::Arc::new(Simulator::with_seed(fast("s"), 3));
        let mut tasks = Vec::new();
        for i in 0..2_000 {
            let sim = sim.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("o{}", i % 500);
                if i % 2 == 0 {
                    sim.buy(&request(&key)).await.map(|_| ())
                } else {
                    sim.find_purchase(&request(&key)).await.map(|_| ())
                }
            }));
        }
        let all = async {
            for task in tasks {
                task.await.unwrap().unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("no deadlock");
    }

    #[tokio::test]
    async fn the_same_key_buys_once_and_reconciliation_finds_it() {
        let sim = Simulator::with_seed(fast("s"), 2);
        let a = sim.buy(&request("o1")).await.unwrap();
        let b = sim.buy(&request("o1")).await.unwrap();
        assert_eq!(a.handle, b.handle);
        assert_eq!(
            sim.find_purchase(&request("o1"))
                .await
                .unwrap()
                .map(|p| p.handle),
            Some(a.handle)
        );
        assert_eq!(sim.find_purchase(&request("o2")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn cancel_is_refused_early_and_works_later() {
        let sim = Simulator::with_seed(
            SimulatorConfig {
                min_cancel_ms: 30,
                code_timing: CodeTiming::Fixed { delay_ms: 60_000 },
                ..fast("s")
            },
            3,
        );
        let p = sim.buy(&request("o1")).await.unwrap();
        assert!(matches!(
            sim.cancel(&p.handle).await.unwrap(),
            CancelOutcome::TooEarly { .. }
        ));
        tokio::time::sleep(Duration::from_millis(35)).await;
        assert_eq!(
            sim.cancel(&p.handle).await.unwrap(),
            CancelOutcome::Cancelled
        );
        assert_eq!(
            sim.cancel(&p.handle).await.unwrap(),
            CancelOutcome::AlreadyClosed
        );
    }

    #[tokio::test]
    async fn failure_rates_show_in_the_answers() {
        let config = SimulatorConfig {
            no_numbers_per_mille: 300,
            server_error_per_mille: 100,
            timeout_per_mille: 100,
            timeout_ms: 1,
            ..fast("s")
        };
        let sim = Simulator::with_seed(config, 4);
        let (mut ok, mut none, mut down) = (0, 0, 0);
        for i in 0..1000 {
            match sim.buy(&request(&format!("k{i}"))).await {
                Ok(_) => ok += 1,
                Err(UpstreamError::NoNumbers) => none += 1,
                Err(UpstreamError::Unavailable(_)) => down += 1,
                Err(other) => panic!("{other}"),
            }
        }
        // 30% no numbers, 10% 5xx + 10% timeouts; wide bounds, deterministic seed.
        assert!((200..400).contains(&none), "{none}");
        assert!((120..280).contains(&down), "{down}");
        assert!((400..650).contains(&ok), "{ok}");
    }

    #[tokio::test]
    async fn stock_runs_out() {
        let sim = Simulator::with_seed(
            SimulatorConfig {
                stock: 2,
                ..fast("s")
            },
            5,
        );
        sim.buy(&request("a")).await.unwrap();
        sim.buy(&request("b")).await.unwrap();
        assert_eq!(
            sim.buy(&request("c")).await.unwrap_err(),
            UpstreamError::NoNumbers
        );
        let offers = sim.offers(None, None).await.unwrap();
        let tg_de = offers
            .iter()
            .find(|o| o.service.as_str() == "tg" && o.country.as_str() == "DE")
            .unwrap();
        assert_eq!(tg_de.stock, 0);
    }

    /// The embedded default's three upstreams, healthy and without latency.
    fn embedded(code_timing: CodeTiming) -> Vec<SimulatorConfig> {
        SimulatorConfig::embedded_defaults(false, code_timing)
            .into_iter()
            .map(|c| SimulatorConfig {
                latency_ms: 0,
                jitter_ms: 0,
                ..c
            })
            .collect()
    }

    fn pair(service: &str, country: &str, key: &str) -> BuyRequest {
        BuyRequest {
            service: ServiceCode::new(service).unwrap(),
            country: CountryCode::new(country).unwrap(),
            ..request(key)
        }
    }

    async fn state(sim: &Simulator, p: &Purchase) -> (UpstreamState, bool) {
        let s = sim.poll(&p.handle).await.unwrap();
        (s.state, s.code.is_some())
    }

    const WAITING: (UpstreamState, bool) = (UpstreamState::Waiting, false);
    const RECEIVED: (UpstreamState, bool) = (UpstreamState::CodeReceived, true);

    /// Given Telegram in Indonesia on any embedded upstream and any seed, when
    /// 15 s pass, then its code is there, and not before 5 s.
    #[tokio::test]
    async fn the_fast_pair_gets_its_code_within_15_s_on_every_upstream() {
        for config in embedded(CodeTiming::Realistic) {
            for seed in 0..100 {
                let sim = Simulator::with_seed(config.clone(), seed);
                let p = sim.buy(&pair("tg", "ID", "o1")).await.unwrap();
                // Margins of a second: real time passes between the calls too.
                sim.skip(Duration::from_secs(4));
                assert_eq!(state(&sim, &p).await, WAITING, "{} {seed}", config.name);
                sim.skip(Duration::from_millis(11_001));
                assert_eq!(state(&sim, &p).await, RECEIVED, "{} {seed}", config.name);
            }
        }
    }

    /// Given WhatsApp in the UK, when the 120-second cancel guard has passed,
    /// then a cancel goes through (no code yet); an uncancelled one gets its
    /// code after 4 minutes at the earliest and 10 at the latest.
    #[tokio::test]
    async fn the_slow_pair_has_no_code_before_4_minutes_so_a_cancel_after_the_guard_works() {
        for config in embedded(CodeTiming::Realistic) {
            for seed in 0..100 {
                let sim = Simulator::with_seed(config.clone(), seed);
                let cancelled = sim.buy(&pair("wa", "GB", "o1")).await.unwrap();
                let kept = sim.buy(&pair("wa", "GB", "o2")).await.unwrap();
                sim.skip(Duration::from_secs(121));
                assert_eq!(
                    sim.cancel(&cancelled.handle).await.unwrap(),
                    CancelOutcome::Cancelled,
                    "{} {seed}",
                    config.name
                );
                sim.skip(Duration::from_secs(115));
                assert_eq!(state(&sim, &kept).await, WAITING, "{} {seed}", config.name);
                sim.skip(Duration::from_millis(364_001));
                assert_eq!(state(&sim, &kept).await, RECEIVED, "{} {seed}", config.name);
            }
        }
    }

    /// Given Instagram in Brazil, no code ever comes: the number expires after
    /// 20 minutes (and the order is refunded by its own expiry).
    #[tokio::test]
    async fn the_never_pair_gets_no_code_and_expires_after_20_minutes() {
        for config in embedded(CodeTiming::Realistic) {
            for seed in 0..50 {
                let sim = Simulator::with_seed(config.clone(), seed);
                let p = sim.buy(&pair("ig", "BR", "o1")).await.unwrap();
                sim.skip(Duration::from_secs(20 * 60 - 2));
                assert_eq!(state(&sim, &p).await, WAITING, "{} {seed}", config.name);
                sim.skip(Duration::from_secs(3));
                assert_eq!(
                    state(&sim, &p).await,
                    (UpstreamState::Expired, false),
                    "{} {seed}",
                    config.name
                );
            }
        }
    }

    #[tokio::test]
    async fn the_out_of_stock_pair_is_refused_on_every_upstream() {
        for config in embedded(CodeTiming::Realistic) {
            let sim = Simulator::with_seed(config.clone(), 1);
            assert_eq!(
                sim.buy(&pair("tg", "AQ", "o1")).await.unwrap_err(),
                UpstreamError::NoNumbers,
                "{}",
                config.name
            );
            let tg = ServiceCode::new("tg").unwrap();
            let offers = sim
                .offers(Some(&tg), Some(CountryCode::new("AQ").unwrap()))
                .await
                .unwrap();
            assert_eq!(offers.len(), 1);
            assert_eq!(offers[0].stock, 0);
        }
    }

    /// The test and bench override: with a fixed delay every pair, even the
    /// slow and the never pair, gets its code after exactly that delay.
    #[tokio::test]
    async fn a_fixed_delay_overrides_every_pairs_spread() {
        for config in embedded(CodeTiming::Fixed { delay_ms: 10_000 }) {
            let sim = Simulator::with_seed(config.clone(), 1);
            for (service, country) in [("ig", "BR"), ("wa", "GB"), ("tg", "ID"), ("go", "VN")] {
                let p = sim.buy(&pair(service, country, service)).await.unwrap();
                sim.skip(Duration::from_secs(9));
                assert_eq!(state(&sim, &p).await, WAITING, "{service} {country}");
                sim.skip(Duration::from_millis(1_001));
                assert_eq!(state(&sim, &p).await, RECEIVED, "{service} {country}");
            }
        }
    }

    /// A delay past what the clock can add (any `NEXUS_SIM_CODE_DELAY_MS` is
    /// accepted) means no code, not a panic.
    #[tokio::test]
    async fn a_huge_fixed_delay_means_no_code() {
        let config = embedded(CodeTiming::Fixed { delay_ms: u64::MAX }).remove(0);
        let sim = Simulator::with_seed(config, 1);
        let p = sim.buy(&pair("tg", "ID", "o1")).await.unwrap();
        sim.skip(Duration::from_secs(60));
        assert_eq!(state(&sim, &p).await, WAITING);
    }

    /// A pair with a few numbers in its profile sells them, then none; sold
    /// numbers are not returned.
    #[tokio::test]
    async fn a_pair_with_a_few_numbers_runs_out_after_them() {
        let catalog = crate::catalog::Catalog::shipped();
        let (service, country, stock) = catalog
            .countries()
            .iter()
            .flat_map(|c| {
                catalog
                    .services()
                    .iter()
                    .map(move |s| (s.code.clone(), c.iso2))
            })
            .map(|(s, c)| {
                let stock = Profile::of(&s, c).stock;
                (s, c, stock)
            })
            .find(|(_, _, stock)| (2..=5).contains(stock))
            .expect("a pair with a few numbers");
        let sim = Simulator::with_seed(embedded(CodeTiming::Realistic).remove(0), 1);
        let request = |key: &str| BuyRequest {
            service: service.clone(),
            country,
            ..request(key)
        };
        for n in 0..stock {
            sim.buy(&request(&format!("k{n}"))).await.unwrap();
        }
        assert_eq!(
            sim.buy(&request("one more")).await.unwrap_err(),
            UpstreamError::NoNumbers
        );
        let offers = sim.offers(Some(&service), Some(country)).await.unwrap();
        assert_eq!(offers[0].stock, 0);
    }

    #[tokio::test]
    async fn a_bought_number_starts_with_its_countrys_dial_code() {
        let catalog = crate::catalog::Catalog::shipped();
        let sim = Simulator::with_seed(embedded(CodeTiming::Realistic).remove(2), 9);
        for country in ["GB", "US", "DE", "ID", "KZ", "JP", "NG", "BR"] {
            let p = sim.buy(&pair("tg", country, country)).await.unwrap();
            let dial = catalog
                .country(CountryCode::new(country).unwrap())
                .unwrap()
                .dial_code
                .to_string();
            assert!(p.phone.starts_with(&dial), "{country}: {}", p.phone);
            assert!((10..=13).contains(&p.phone.len()), "{}", p.phone);
            assert!(p.phone.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    /// Prices and stock are the pair's, not the seed's: two simulators with
    /// different seeds offer the same; the three embedded upstreams keep
    /// sim-budget < sim-steady < sim-express on every pair.
    #[tokio::test]
    async fn the_same_pair_has_the_same_profile_on_simulators_with_different_seeds() {
        let mut listed = Vec::new();
        for config in embedded(CodeTiming::Realistic) {
            let one = Simulator::with_seed(config.clone(), 1);
            let two = Simulator::with_seed(config.clone(), 2);
            let offers = one.offers(None, None).await.unwrap();
            assert_eq!(offers, two.offers(None, None).await.unwrap());
            assert_eq!(offers.len(), 300);
            listed.push(offers);
        }
        let (budget, express, steady) = (&listed[0], &listed[1], &listed[2]);
        for ((b, e), s) in budget.iter().zip(express).zip(steady) {
            assert_eq!((&b.service, b.country), (&s.service, s.country));
            assert!(b.cost < s.cost && s.cost < e.cost, "{b:?} {s:?} {e:?}");
        }
        let find = |service: &str, country: &str| {
            steady
                .iter()
                .find(|o| o.service.as_str() == service && o.country.as_str() == country)
                .unwrap()
                .clone()
        };
        assert_eq!(find("tg", "AQ").stock, 0);
        assert!(find("tg", "ID").stock > 0);
        assert!(find("tg", "AQ").cost >= find("tg", "ID").cost);
        assert!(find("tg", "GB").cost >= find("ub", "GB").cost);
    }

    #[tokio::test]
    async fn offers_with_a_filter_name_the_asked_pairs_only() {
        let sim = Simulator::with_seed(embedded(CodeTiming::Realistic).remove(2), 1);
        let tg = ServiceCode::new("tg").unwrap();
        let gb = CountryCode::new("GB").unwrap();
        let one = sim.offers(Some(&tg), Some(gb)).await.unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!((&one[0].service, one[0].country), (&tg, gb));
        let telegram = sim.offers(Some(&tg), None).await.unwrap();
        assert_eq!(telegram.len(), 249);
        assert!(telegram.iter().all(|o| o.service == tg));
        let british = sim.offers(None, Some(gb)).await.unwrap();
        assert_eq!(
            british.len(),
            crate::catalog::Catalog::shipped().services().len()
        );
        assert!(british.iter().all(|o| o.country == gb));
    }
}
