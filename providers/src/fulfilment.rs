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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nexus_core::domain::codec::DomainEvent;
use nexus_core::domain::commerce::{CommandError, Commerce};
use nexus_core::domain::ids::OrderId;
use nexus_core::domain::order::{
    CancelReason, OrderCancelled, OrderError, OrderEvent, OrderExpired,
};
use nexus_core::log::{AllSubscription, EventStore, RecordedEvent};
use nexus_core::vault::Vault;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info, warn};

use crate::code_extract::extract_code;
use crate::router::{cancel_until_done, RouteError, Router};
use crate::upstream::{BuyRequest, Handle, Purchase, UpstreamState};

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
}

impl Default for FulfilmentConfig {
    fn default() -> Self {
        Self {
            first_poll: Duration::from_secs(1),
            max_poll_interval: Duration::from_secs(5),
            tick: Duration::from_millis(200),
            max_in_flight: 512,
            batch: 1_000,
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
        Self {
            store,
            vault,
            commerce,
            router,
            config,
            buy_slots,
            call_slots,
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), FulfilmentError> {
        let mut orders: HashMap<OrderId, Tracked> = HashMap::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut subscription = AllSubscription::new(self.store.clone(), 1, self.config.batch);
        // Replay what happened before this start without acting on it.
        let start_head = self.store.head();
        while subscription.next_position() <= start_head {
            for record in subscription.next_batch().await? {
                self.observe(&mut orders, &record, false, &done_tx);
            }
        }
        self.resume(&mut orders, &done_tx);
        info!(open_orders = orders.len(), "fulfilment caught up");
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = subscription.next_batch() => {
                    for record in batch? {
                        self.observe(&mut orders, &record, true, &done_tx);
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
                _ = tick.tick() => self.on_tick(&mut orders, &done_tx),
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

    fn observe(
        &self,
        orders: &mut HashMap<OrderId, Tracked>,
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
                    if live {
                        self.spawn_upstream(provider, handle, UpstreamCall::Finish);
                    }
                }
            }
            OrderEvent::OrderCancelled(OrderCancelled { order, .. })
            | OrderEvent::OrderExpired(OrderExpired { order, .. }) => {
                if let Some((provider, handle)) = orders.remove(&order).and_then(|t| t.assigned) {
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
                        Ok(_) | Err(CommandError::Order(OrderError::NotFound)) => {}
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
                        Ok(_) | Err(CommandError::Order(_)) => {}
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
            if let Some(upstream) = router.upstream(&provider) {
                match upstream.poll(&handle).await {
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
            return Some((health.name, purchase));
        }
    }
    None
}
