//! A simulated upstream: the embedded default, and the load generator's peer.
//!
//! Configurable latency, stock, failure rates (no numbers, timeouts, 5xx,
//! garbage), and codes by SMS or voice call arriving after a delay. A timed-out
//! buy may have gone through (as with a real upstream): [`Upstream::find_purchase`]
//! replays the idempotency key and finds it, so the router can cancel it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{Channel, CountryCode, ServiceCode};

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
    /// Time from purchase to the code.
    pub code_delay_ms: u64,
    /// The upstream's cost per number, before any per-country variation.
    pub base_cost: Micros,
    /// Numbers in stock per (service, country); bought ones are not returned.
    pub stock: u64,
    /// Cancel is refused this long after the purchase.
    pub min_cancel_ms: u64,
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
            code_delay_ms: 5_000,
            base_cost: Micros(100_000),
            stock: 1_000_000,
            min_cancel_ms: 0,
        }
    }

    /// The embedded default's three upstreams: different prices, latencies and
    /// failure rates, so routing and failover show from the first run. With
    /// `faults` off all three are healthy.
    pub fn embedded_defaults(faults: bool, code_delay_ms: u64) -> Vec<SimulatorConfig> {
        let mut cheap = Self::healthy("sim-budget");
        let mut fast = Self::healthy("sim-express");
        let mut steady = Self::healthy("sim-steady");
        for c in [&mut cheap, &mut fast, &mut steady] {
            c.code_delay_ms = code_delay_ms;
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
    phone: String,
    code: String,
    /// Messages sent so far (0 until the code arrives; +1 per resend).
    revision: u64,
    resend_at: Option<Instant>,
    state: UpstreamState,
}

/// Most activations the simulator remembers; the oldest closed ones go first.
const MAX_ACTIVATIONS: usize = 200_000;

pub struct Simulator {
    config: SimulatorConfig,
    rng: Mutex<SplitMix64>,
    next_id: AtomicU64,
    activations: Mutex<HashMap<Handle, Activation>>,
    by_key: Mutex<HashMap<String, Handle>>,
    sold: Mutex<HashMap<(ServiceCode, CountryCode), u64>>,
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
        }
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

    /// The cost for a (service, country): the base, varied by a stable hash.
    fn cost(&self, service: &ServiceCode, country: CountryCode) -> Micros {
        let h = fnv1a(format!("{}{}", service.as_str(), country.as_str()).as_bytes());
        Micros(self.config.base_cost.0 + (h % 50) as i64 * 1_000)
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
            let mut sold = self.sold.lock().unwrap_or_else(|p| p.into_inner());
            let n = sold
                .entry((request.service.clone(), request.country))
                .or_default();
            if *n >= self.config.stock {
                return Err(UpstreamError::NoNumbers);
            }
            *n += 1;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = Handle(format!("{}-{id}", self.config.name));
        let activation = Activation {
            request: request.clone(),
            bought_at: Instant::now(),
            phone: format!("999{:09}", self.draw(1_000_000_000)),
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

    /// Moves an activation's clock: the code arrives `code_delay_ms` after the
    /// purchase (or after a resend).
    fn advance(&self, a: &mut Activation) {
        let delay = Duration::from_millis(self.config.code_delay_ms);
        let due = a.resend_at.unwrap_or(a.bought_at) + delay;
        if matches!(
            a.state,
            UpstreamState::Waiting | UpstreamState::CodeReceived
        ) && Instant::now() >= due
        {
            let expected = if a.resend_at.is_some() { 2 } else { 1 };
            if a.revision < expected {
                a.revision = expected;
                a.state = UpstreamState::CodeReceived;
            }
        }
        if a.state == UpstreamState::Waiting
            && a.bought_at.elapsed() >= Duration::from_secs(20 * 60)
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
            // The simulator sells every service in every country it is asked for;
            // without a filter it names a few, as an example.
            let services: Vec<ServiceCode> = match service {
                Some(s) => vec![s.clone()],
                None => ["tg", "wa", "ig", "go", "fb"]
                    .iter()
                    .filter_map(|s| ServiceCode::new(s).ok())
                    .collect(),
            };
            let countries: Vec<CountryCode> = match country {
                Some(c) => vec![c],
                None => ["US", "GB", "DE", "IN", "ID", "BR"]
                    .iter()
                    .filter_map(|c| CountryCode::new(c).ok())
                    .collect(),
            };
            let sold = self.sold.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut offers = Vec::with_capacity(services.len() * countries.len());
            for s in &services {
                for c in &countries {
                    let used = sold.get(&(s.clone(), *c)).copied().unwrap_or(0);
                    offers.push(Offer {
                        service: s.clone(),
                        country: *c,
                        cost: self.cost(s, *c),
                        stock: self.config.stock.saturating_sub(used),
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
            self.with_activation(handle, |a| {
                if matches!(
                    a.state,
                    UpstreamState::Waiting | UpstreamState::CodeReceived
                ) {
                    a.resend_at = Some(Instant::now());
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
                match a.state {
                    UpstreamState::Waiting if a.bought_at.elapsed() < min_cancel => {
                        CancelOutcome::TooEarly {
                            retry_after: Some(min_cancel - a.bought_at.elapsed()),
                        }
                    }
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

/// A small, fast PRNG (SplitMix64); the simulator needs no cryptographic quality.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..below` (`below` > 0), bias negligible for small ranges.
    fn below(&mut self, below: u64) -> u64 {
        self.next() % below.max(1)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
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
            code_delay_ms: 30,
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
                code_delay_ms: 60_000,
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
}
