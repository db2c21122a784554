//! The fulfilment worker: a process manager driven by the log.
//!
//! It follows every order event: a placed order is bought through the router and
//! its number recorded; an assigned one is polled with back-off until its code
//! comes, which is recorded; resends, cancels and completions are passed on to the
//! upstream; deadlines are applied through the order commands. Its state is
//! rebuilt from the log on start: orders bought before a restart keep being
//! polled, and an order that was placed but not assigned is first reconciled
//! with every upstream (a buy in flight at the crash may have gone through) and
//! only then bought — never twice where the upstream can tell.
//!
//! Before it buys anything after a start, the worker seeds the router's set of
//! known activations with every activation the log assigns to an order within
//! [`KNOWN_ACTIVATION_TTL`] and every one an open order holds (see
//! [`Router::seed_known`]), so that reconciling a lost buy by listing never
//! claims an order's number, also right after a restart.
//!
//! Pushes from upstreams ([`crate::inbound`]) arrive as hints through
//! [`Fulfilment::hints`]: the worker finds the order that holds the pushed
//! handle and handles it like a poll that is due now — with the push's own
//! snapshot when it was signed, else by reading the upstream. Either way the
//! revision check of polling applies, so a code is recorded once however many
//! times and ways it arrives. Periodically, the [`OrphanSweep`] closes
//! activations that no open order holds.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nexus_core::domain::codec::DomainEvent;
use nexus_core::domain::commerce::CommerceError;
use nexus_core::domain::ids::OrderId;
use nexus_core::domain::order::{
    CancelReason, OrderCancelled, OrderError, OrderEvent, OrderExpired,
};
use nexus_core::log::{AllSubscription, EventStore, RecordedEvent};
use nexus_core::service::commerce_service::{CommandError, Commerce};
use nexus_core::vault::Vault;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info, warn};

use crate::code_extract::extract_code;
use crate::inbound::{Hint, HintSender, HINT_QUEUE_CAPACITY};
use crate::router::{
    cancel_until_done, RouteError, Router, KNOWN_ACTIVATION_TTL, MAX_KNOWN_ACTIVATIONS,
};
use crate::sweep::{OrphanSweep, SweepConfig};
use crate::upstream::{BuyRequest, Handle, Purchase, Snapshot, UpstreamState};

#[derive(Clone, Debug)]
pub struct FulfilmentConfig {
    /// First poll after a number is assigned, and the back-off's floor.
    pub first_poll: Duration,
    /// The back-off's ceiling.
    pub max_poll_interval: Duration,
    /// How often due polls and deadlines are looked at.
    pub tick: Duration,
    /// Buys in flight at once; polls, resends and cancels have as many slots of
    /// their own, so polling never delays a buy.
    pub max_in_flight: usize,
    /// Events read from the log per batch.
    pub batch: usize,
    /// The orphan sweep; `None`: no sweep.
    pub orphan_sweep: Option<SweepConfig>,
}

impl Default for FulfilmentConfig {
    fn default() -> Self {
        Self {
            first_poll: Duration::from_secs(1),
            max_poll_interval: Duration::from_secs(5),
            tick: Duration::from_millis(200),
            max_in_flight: 512,
            batch: 1_000,
            orphan_sweep: Some(SweepConfig::default()),
        }
    }
}

/// What the worker knows of one open order.
struct Tracked {
    request: Option<BuyRequest>,
    assigned: Option<(String, Handle)>,
    /// Codes recorded so far for this order.
    codes: u32,
    /// The upstream revision last recorded (None: unknown after a restart).
    last_revision: Option<u64>,
    resend_pending: bool,
    next_poll: Instant,
    interval: Duration,
    polling: bool,
    /// A snapshot pushed by the upstream, handled at the next due poll
    /// instead of reading the upstream.
    hinted: Option<Snapshot>,
    /// When the order's next deadline falls due (expiry, or the end of the
    /// delivery window); checked again every second until the order is final.
    deadline: DateTime<Utc>,
    buying: bool,
}

/// Results of spawned upstream calls, back to the worker's loop.
enum Done {
    Polled(OrderId, Option<u64>),
    Bought(OrderId),
}

pub struct Fulfilment<S: EventStore> {
    store: Arc<S>,
    vault: Arc<Vault>,
    commerce: Arc<Commerce<S>>,
    router: Arc<Router>,
    config: FulfilmentConfig,
    buy_slots: Arc<Semaphore>,
    call_slots: Arc<Semaphore>,
    hint_tx: mpsc::Sender<Hint>,
    /// Taken by `run`.
    hint_rx: std::sync::Mutex<Option<mpsc::Receiver<Hint>>>,
    sweep: Option<Arc<OrphanSweep>>,
    sweeping: Arc<AtomicBool>,
}

/// Open orders by the (upstream, handle) they hold.
type HandleIndex = HashMap<(String, Handle), OrderId>;

/// The activations the start-up replay found assigned to orders recently
/// enough that an upstream may still list them, for [`Router::seed_known`].
struct Seeds {
    /// Assignments recorded at or after this are collected.
    since: DateTime<Utc>,
    /// (upstream, handle); at most `MAX_KNOWN_ACTIVATIONS + 1` (one more than
    /// the router keeps, so an overflow still shows there).
    held: Vec<(String, Handle)>,
    /// False when a recent assignment could not be read (or was left out):
    /// the router must then keep its start bound.
    complete: bool,
}

impl Seeds {
    fn new(now: DateTime<Utc>) -> Seeds {
        let ttl = chrono::Duration::from_std(KNOWN_ACTIVATION_TTL).unwrap_or(chrono::Duration::MAX);
        Seeds {
            since: now
                .checked_sub_signed(ttl)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            held: Vec::new(),
            complete: true,
        }
    }

    fn is_recent(&self, record: &RecordedEvent) -> bool {
        record.recorded_at >= self.since
    }

    fn add(&mut self, held: (String, Handle)) {
        if self.held.len() > MAX_KNOWN_ACTIVATIONS {
            self.complete = false;
        } else {
            self.held.push(held);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FulfilmentError {
    #[error(transparent)]
    Log(#[from] nexus_core::log::LogError),
}

impl<S: EventStore> Fulfilment<S> {
    pub fn new(
        store: Arc<S>,
        vault: Arc<Vault>,
        commerce: Arc<Commerce<S>>,
        router: Arc<Router>,
        config: FulfilmentConfig,
    ) -> Self {
        let buy_slots = Arc::new(Semaphore::new(config.max_in_flight));
        let call_slots = Arc::new(Semaphore::new(config.max_in_flight));
        let (hint_tx, hint_rx) = mpsc::channel(HINT_QUEUE_CAPACITY);
        let sweep = config
            .orphan_sweep
            .clone()
            .map(|c| Arc::new(OrphanSweep::new(c)));
        Self {
            store,
            vault,
            commerce,
            router,
            config,
            buy_slots,
            call_slots,
            hint_tx,
            hint_rx: std::sync::Mutex::new(Some(hint_rx)),
            sweep,
            sweeping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Where verified upstream pushes go (bounded; see [`crate::inbound`]).
    pub fn hints(&self) -> HintSender {
        HintSender(self.hint_tx.clone())
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), FulfilmentError> {
        let mut orders: HashMap<OrderId, Tracked> = HashMap::new();
        let mut by_handle: HandleIndex = HashMap::new();
        let mut hint_rx = self
            .hint_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| mpsc::channel(1).1);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut subscription = AllSubscription::new(self.store.clone(), 1, self.config.batch);
        // Replay what happened before this start without acting on it.
        let start_head = self.store.head();
        let mut seeds = Seeds::new(Utc::now());
        while subscription.next_position() <= start_head {
            for record in subscription.next_batch().await? {
                self.replay(&mut orders, &mut by_handle, &record, &mut seeds, &done_tx);
            }
        }
        // Every open order's number too, however old its assignment.
        for held in orders.values().filter_map(|t| t.assigned.clone()) {
            seeds.add(held);
        }
        let seeded = self.router.seed_known(
            seeds
                .held
                .iter()
                .map(|(provider, handle)| (provider.as_str(), handle)),
            seeds.complete,
        );
        if seeds.complete {
            info!(
                activations = seeded,
                "known activations seeded from the log"
            );
        } else {
            warn!(
                activations = seeded,
                "not every recent assignment could be read: lost buys are reconciled by listing only past the start bound"
            );
        }
        drop(seeds);
        self.resume(&mut orders, &done_tx);
        info!(open_orders = orders.len(), "fulfilment caught up");
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sweep_every = self
            .sweep
            .as_ref()
            .map_or(Duration::from_secs(3_600), |s| s.config().interval);
        let mut sweep_tick = tokio::time::interval(sweep_every);
        sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = subscription.next_batch() => {
                    for record in batch? {
                        self.observe(&mut orders, &mut by_handle, &record, true, &done_tx);
                    }
                }
                Some(done) = done_rx.recv() => match done {
                    Done::Polled(id, revision) => {
                        if let Some(t) = orders.get_mut(&id) {
                            t.polling = false;
                            if revision.is_some() {
                                t.last_revision = revision;
                            }
                        }
                    }
                    Done::Bought(id) => {
                        if let Some(t) = orders.get_mut(&id) {
                            t.buying = false;
                        }
                    }
                },
                Some(hint) = hint_rx.recv() => self.on_hint(&mut orders, &by_handle, hint),
                _ = tick.tick() => self.on_tick(&mut orders, &done_tx),
                _ = sweep_tick.tick() => self.start_sweep(&orders),
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// After the replay: buy what was placed and not assigned (reconciling
    /// first), poll what was assigned.
    fn resume(&self, orders: &mut HashMap<OrderId, Tracked>, done: &mpsc::UnboundedSender<Done>) {
        for (id, t) in orders.iter_mut() {
            if t.assigned.is_none() {
                if let Some(request) = t.request.clone() {
                    t.buying = true;
                    self.spawn_buy(*id, request, true, done.clone());
                }
            }
        }
    }

    /// A verified push: the order holding the handle is polled now, with the
    /// pushed snapshot if there is one.
    fn on_hint(&self, orders: &mut HashMap<OrderId, Tracked>, by_handle: &HandleIndex, hint: Hint) {
        let Some(id) = by_handle.get(&(hint.provider.clone(), hint.handle)) else {
            debug!(upstream = %hint.provider, "a push for an activation no open order holds");
            return;
        };
        let Some(t) = orders.get_mut(id) else {
            return;
        };
        match hint.snapshot {
            Some(snapshot) => {
                if t.hinted
                    .as_ref()
                    .is_none_or(|held| held.revision < snapshot.revision)
                {
                    t.hinted = Some(snapshot);
                }
            }
            // Read the upstream: its answer covers any snapshot pushed before.
            None => t.hinted = None,
        }
        t.next_poll = Instant::now();
        t.interval = self.config.first_poll;
    }

    /// Starts a sweep unless one is running; it sees the purchases open orders
    /// hold now.
    fn start_sweep(&self, orders: &HashMap<OrderId, Tracked>) {
        let Some(sweep) = self.sweep.clone() else {
            return;
        };
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let held: HashSet<(String, Handle)> =
            orders.values().filter_map(|t| t.assigned.clone()).collect();
        let (router, sweeping) = (self.router.clone(), self.sweeping.clone());
        tokio::spawn(async move {
            let report = sweep.sweep(&router, &held).await;
            if report.cancelled > 0 || report.failed > 0 {
                info!(
                    listed = report.listed,
                    unheld = report.unheld,
                    cancelled = report.cancelled,
                    failed = report.failed,
                    "orphan sweep"
                );
            }
            sweeping.store(false, Ordering::Release);
        });
    }

    /// One record of the start-up replay: observed without acting on it, and
    /// a recent assignment collected for the router's known set.
    fn replay(
        &self,
        orders: &mut HashMap<OrderId, Tracked>,
        by_handle: &mut HandleIndex,
        record: &RecordedEvent,
        seeds: &mut Seeds,
        done: &mpsc::UnboundedSender<Done>,
    ) {
        if record.stream.as_str().starts_with("order-") && seeds.is_recent(record) {
            match OrderEvent::from_recorded(record, &self.vault) {
                Ok(OrderEvent::OrderNumberAssigned(e)) => match e.phone.plain() {
                    Some(p) => seeds.add((e.provider.clone(), Handle(p.activation_id.clone()))),
                    None => seeds.complete = false,
                },
                Ok(_) => {}
                Err(_) => seeds.complete = false,
            }
        }
        self.observe(orders, by_handle, record, false, done);
    }

    fn observe(
        &self,
        orders: &mut HashMap<OrderId, Tracked>,
        by_handle: &mut HandleIndex,
        record: &RecordedEvent,
        live: bool,
        done: &mpsc::UnboundedSender<Done>,
    ) {
        if !record.stream.as_str().starts_with("order-") {
            return;
        }
        let event = match OrderEvent::from_recorded(record, &self.vault) {
            Ok(event) => event,
            Err(e) => {
                warn!(position = record.position, error = %e, "an order event does not decode; skipped");
                return;
            }
        };
        let now = Instant::now();
        match event {
            OrderEvent::OrderPlaced(e) => {
                let request = e.details.plain().map(|d| BuyRequest {
                    service: d.service.clone(),
                    country: d.country,
                    channel: d.channel,
                    max_cost: None,
                    idempotency_key: e.order.to_string(),
                });
                let buying = live && request.is_some();
                if let (true, Some(request)) = (live, request.clone()) {
                    self.spawn_buy(e.order, request, false, done.clone());
                }
                orders.insert(
                    e.order,
                    Tracked {
                        request,
                        assigned: None,
                        codes: 0,
                        last_revision: Some(0),
                        resend_pending: false,
                        hinted: None,
                        next_poll: now,
                        interval: self.config.first_poll,
                        polling: false,
                        deadline: e.expires_at,
                        buying,
                    },
                );
            }
            OrderEvent::OrderNumberAssigned(e) => {
                if let Some(t) = orders.get_mut(&e.order) {
                    // The handle is sealed with the number; erased with its owner.
                    t.assigned = e
                        .phone
                        .plain()
                        .map(|p| (e.provider.clone(), Handle(p.activation_id.clone())));
                    if let Some(held) = t.assigned.clone() {
                        by_handle.insert(held, e.order);
                    }
                    t.next_poll = now + self.config.first_poll;
                    t.interval = self.config.first_poll;
                    t.buying = false;
                }
            }
            OrderEvent::OrderCodeReceived(e) => {
                if let Some(t) = orders.get_mut(&e.order) {
                    t.codes = e.sequence;
                    t.resend_pending = false;
                    if !live {
                        // The upstream revision behind it is not in the log.
                        t.last_revision = None;
                    }
                }
            }
            OrderEvent::OrderResendRequested(e) => {
                if let Some(t) = orders.get_mut(&e.order) {
                    t.resend_pending = true;
                    t.next_poll = now + self.config.first_poll;
                    t.interval = self.config.first_poll;
                    if let (true, Some((provider, handle))) = (live, t.assigned.clone()) {
                        self.spawn_upstream(provider, handle, UpstreamCall::Resend);
                    }
                }
            }
            OrderEvent::OrderCompleted(e) => {
                if let Some((provider, handle)) = orders.remove(&e.order).and_then(|t| t.assigned) {
                    by_handle.remove(&(provider.clone(), handle.clone()));
                    if live {
                        self.spawn_upstream(provider, handle, UpstreamCall::Finish);
                    }
                }
            }
            OrderEvent::OrderCancelled(OrderCancelled { order, .. })
            | OrderEvent::OrderExpired(OrderExpired { order, .. }) => {
                if let Some((provider, handle)) = orders.remove(&order).and_then(|t| t.assigned) {
                    by_handle.remove(&(provider.clone(), handle.clone()));
                    if live {
                        self.spawn_upstream(provider, handle, UpstreamCall::Cancel);
                    }
                }
            }
            OrderEvent::OrderCodeDelivered(e) => {
                if let Some(t) = orders.get_mut(&e.order) {
                    t.deadline = e.at + self.commerce.policy().delivery_window;
                }
            }
            OrderEvent::OrderCodeErased(_) => {}
        }
    }

    fn on_tick(&self, orders: &mut HashMap<OrderId, Tracked>, done: &mpsc::UnboundedSender<Done>) {
        let now = Instant::now();
        for (id, t) in orders.iter_mut() {
            if Utc::now() >= t.deadline {
                t.deadline = Utc::now() + chrono::Duration::seconds(1);
                let commerce = self.commerce.clone();
                let id = *id;
                tokio::spawn(async move {
                    match commerce.process_deadline(id).await {
                        Ok(_)
                        | Err(CommandError::Refused(CommerceError::Order(OrderError::NotFound))) => {
                        }
                        Err(e) => {
                            debug!(order = %id, error = %e, "deadline check failed; next tick")
                        }
                    }
                });
            }
            if t.polling || t.assigned.is_none() || now < t.next_poll {
                continue;
            }
            t.polling = true;
            t.next_poll = now + t.interval;
            t.interval = (t.interval * 3 / 2).min(self.config.max_poll_interval);
            let (provider, handle) = t.assigned.clone().expect("checked above");
            self.spawn_poll(
                *id,
                provider,
                handle,
                t.last_revision,
                t.codes,
                t.hinted.take(),
                done.clone(),
            );
        }
    }

    fn spawn_buy(
        &self,
        id: OrderId,
        request: BuyRequest,
        reconcile_first: bool,
        done: mpsc::UnboundedSender<Done>,
    ) {
        let (router, commerce, slots) = (
            self.router.clone(),
            self.commerce.clone(),
            self.buy_slots.clone(),
        );
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            let found = if reconcile_first {
                reconcile(&router, &request).await
            } else {
                None
            };
            let routed = match found {
                Some(found) => Ok(found),
                None => router.buy(&request).await.map(|r| (r.provider, r.purchase)),
            };
            match routed {
                Ok((provider, purchase)) => {
                    let assigned = commerce
                        .assign_number(
                            id,
                            &provider,
                            &purchase.handle.0,
                            purchase.cost,
                            &purchase.phone,
                        )
                        .await;
                    if let Err(e) = assigned {
                        // The order moved on (cancelled meanwhile): the number is not needed.
                        debug!(order = %id, error = %e, "number not recorded; cancelling it upstream");
                        if let Some(upstream) = router.upstream(&provider) {
                            cancel_until_done(&*upstream, &purchase, 10, Duration::from_secs(3))
                                .await;
                        }
                    }
                }
                Err(RouteError::NoNumbers) | Err(RouteError::Unavailable) => {
                    match commerce.cancel(id, None, CancelReason::NoNumbers).await {
                        Ok(_) | Err(CommandError::Refused(CommerceError::Order(_))) => {}
                        Err(e) => {
                            warn!(order = %id, error = %e, "could not cancel an order without a number")
                        }
                    }
                }
            }
            let _ = done.send(Done::Bought(id));
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_poll(
        &self,
        id: OrderId,
        provider: String,
        handle: Handle,
        last_revision: Option<u64>,
        codes: u32,
        pushed: Option<Snapshot>,
        done: mpsc::UnboundedSender<Done>,
    ) {
        let (router, commerce, slots) = (
            self.router.clone(),
            self.commerce.clone(),
            self.call_slots.clone(),
        );
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            let mut seen = None;
            // A pushed snapshot stands for the poll's answer.
            let answer = match (pushed, router.upstream(&provider)) {
                (Some(snapshot), _) => Some(Ok(snapshot)),
                (None, Some(upstream)) => Some(upstream.poll(&handle).await),
                (None, None) => None,
            };
            if let Some(answer) = answer {
                match answer {
                    Ok(snapshot) => {
                        seen = Some(snapshot.revision);
                        let new = match last_revision {
                            Some(last) => snapshot.revision > last,
                            // After a restart: a code already recorded is not new.
                            None => codes == 0,
                        };
                        let code = snapshot
                            .code
                            .clone()
                            .or_else(|| snapshot.text.as_deref().and_then(extract_code));
                        match (snapshot.state, code) {
                            (
                                UpstreamState::CodeReceived | UpstreamState::Completed,
                                Some(code),
                            ) if new => {
                                let text = snapshot.text.clone().unwrap_or_default();
                                if let Err(e) = commerce.receive_code(id, &code, &text).await {
                                    debug!(order = %id, error = %e, "code not recorded");
                                    seen = None;
                                }
                            }
                            (UpstreamState::Cancelled | UpstreamState::Expired, _)
                                if codes == 0 =>
                            {
                                // The upstream gave up on the number: refund the customer.
                                let _ = commerce.cancel(id, None, CancelReason::NoNumbers).await;
                            }
                            _ => {}
                        }
                    }
                    Err(e) => {
                        debug!(order = %id, upstream = %provider, error = %e, "poll failed; backing off")
                    }
                }
            }
            let _ = done.send(Done::Polled(id, seen));
        });
    }

    fn spawn_upstream(&self, provider: String, handle: Handle, call: UpstreamCall) {
        let (router, slots) = (self.router.clone(), self.call_slots.clone());
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            let Some(upstream) = router.upstream(&provider) else {
                return;
            };
            let result = match call {
                UpstreamCall::Resend => upstream.resend(&handle).await.map(|_| ()),
                UpstreamCall::Finish => upstream.finish(&handle).await,
                UpstreamCall::Cancel => {
                    let purchase = Purchase {
                        handle: handle.clone(),
                        phone: String::new(),
                        cost: Default::default(),
                        expires_at: None,
                    };
                    let cancelled =
                        cancel_until_done(&*upstream, &purchase, 10, Duration::from_secs(3)).await;
                    if !cancelled {
                        warn!(upstream = %provider, "an activation could not be closed upstream");
                    }
                    Ok(())
                }
            };
            if let Err(e) = result {
                debug!(upstream = %provider, error = %e, "upstream call failed");
            }
        });
    }
}

enum UpstreamCall {
    Resend,
    Finish,
    Cancel,
}

/// A purchase an upstream made for this order before a restart, if any can tell.
async fn reconcile(router: &Router, request: &BuyRequest) -> Option<(String, Purchase)> {
    for health in router.health() {
        let Some(upstream) = router.upstream(&health.name) else {
            continue;
        };
        if let Ok(Some(purchase)) = upstream.find_purchase(request).await {
            info!(upstream = %health.name, "resumed a purchase made before the restart");
            // Known before it is assigned: no lost buy may claim it.
            router.seed_known([(health.name.as_str(), &purchase.handle)], false);
            return Some((health.name, purchase));
        }
    }
    None
}
