//! Customer webhooks: a process manager that follows the log and POSTs order
//! events to the endpoint an account set (`PUT /v1/me/webhook`), signed with the
//! account's secret. The wire format is documented for customers in
//! `docs/WEBHOOKS.md`.
//!
//! - **Which events.** On an order stream of a registered customer whose
//!   account has an endpoint: `OrderCodeReceived` (`order.code_received`, with
//!   the code and the message text), `OrderCompleted`, `OrderCancelled`,
//!   `OrderExpired`. Anonymous orders have no account and no webhook.
//! - **Signature.** `Nexus-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//!   "<t>.<body>")>`, made at each attempt, so a receiver can refuse a timestamp
//!   outside its replay window. `Nexus-Event-Id` is the log event's id: the same
//!   on every attempt and after a restart, for de-duplication.
//! - **Revision.** The order stream's version at the event: a receiver keeps the
//!   highest revision it has seen per order and drops anything older.
//! - **Order and retries.** The events of one order are delivered one after the
//!   other, in log order; different orders go in parallel (at most
//!   [`CustomerWebhooksConfig::max_concurrent_requests`] requests at once). A
//!   non-2xx answer or a transport failure is retried with exponential back-off
//!   ([`CustomerWebhooksConfig::retry_delay`]) up to
//!   [`CustomerWebhooksConfig::max_attempts`]; then the delivery is given up,
//!   counted ([`DeliveryStats::failed`]) and logged as a warning. The endpoint and
//!   secret are read again before every attempt: a removed endpoint stops the
//!   retries, a rotated secret signs the next one.
//! - **Delivery of a code.** A 2xx for `order.code_received` is a read of the
//!   code by its owner: the dispatcher runs the same command as the HTTP read
//!   (`Commerce::read_code` with `DeliveryChannel::Webhook`), so the hold is
//!   captured then, exactly once, whichever read comes first.
//! - **One account cannot slow down another.** Each account has its own lane:
//!   at most [`CustomerWebhooksConfig::max_concurrent_per_account`] of its
//!   deliveries in flight (sending or waiting for a retry), fewer than the
//!   requests allowed at once, and at most
//!   [`CustomerWebhooksConfig::max_queued_per_account`] waiting to start. When
//!   its queue is full, the account's oldest waiting delivery is dropped,
//!   counted ([`DeliveryStats::dropped`]) and logged; other accounts' deliveries
//!   neither wait for it nor are dropped for it.
//! - **Bounded, at least once.** At most [`CustomerWebhooksConfig::max_pending`]
//!   deliveries are pending (queued, in flight or waiting for a retry), more
//!   than one account's lane can hold; the log is not read further until one
//!   finishes. The checkpoint file holds the position below which every
//!   delivery has finished (or was dropped), so a restart re-sends what was
//!   pending (same event id) and skips nothing else.
//! - **Where it connects.** Never through a proxy from the environment
//!   (`HTTP(S)_PROXY`): the address checks below must see the real target.
//!   Unless [`CustomerWebhooksConfig::allow_internal_addresses`], an internal
//!   address is refused at every attempt, whether the URL names it or its host
//!   name resolves to it ([`nexus_core::domain::account::ip_is_internal`]).
//! - **Privacy.** No log line carries a code, a message text, a secret or a URL;
//!   transport errors are logged without their URL.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, KeyInit, Mac};
use nexus_core::domain::aggregate::Aggregate;
use nexus_core::domain::codec::{DomainEvent, Personal};
use nexus_core::domain::ids::{AccountId, OrderId};
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::order::{Channel, DeliveryChannel, Order, OrderEvent, OrderStatus};
use nexus_core::log::{AllSubscription, Direction, EventStore, LogError, RecordedEvent};
use nexus_core::service::account_service::Accounts;
use nexus_core::service::commerce_service::Commerce;
use nexus_core::vault::Vault;
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, info, warn};

/// Events read from the log per batch.
const BATCH: usize = 500;
/// How often the checkpoint catches up with finished deliveries while the log
/// is quiet.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Most events of one order stream folded to describe an order (orders have a
/// handful; a longer stream is not described).
const MAX_ORDER_EVENTS: usize = 1_000;
/// The header with the signature.
pub const SIGNATURE_HEADER: &str = "Nexus-Signature";
/// The header with the event's id (stable across attempts).
pub const EVENT_ID_HEADER: &str = "Nexus-Event-Id";
/// The header with the event's type.
pub const EVENT_TYPE_HEADER: &str = "Nexus-Event-Type";
/// The header with the attempt number, from 1.
pub const ATTEMPT_HEADER: &str = "Nexus-Delivery-Attempt";

#[derive(Debug, thiserror::Error)]
pub enum CustomerWebhooksError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the webhook dispatcher's checkpoint: {0}")]
    Checkpoint(#[from] std::io::Error),
    #[error("the HTTP client: {0}")]
    Client(String),
    #[error("invalid webhook settings: {0}")]
    Config(&'static str),
}

/// Limits and timing of deliveries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerWebhooksConfig {
    /// Holds the position below which every delivery has finished (decimal text).
    pub checkpoint: PathBuf,
    /// Connecting to an endpoint; default 5 s.
    pub connect_timeout_ms: u64,
    /// One attempt, from connecting to the end of the answer's head; default 10 s.
    pub attempt_timeout_ms: u64,
    /// Attempts per event, the first included; default 10.
    pub max_attempts: u32,
    /// Wait before the first retry, doubled before each next one; default 1 s.
    pub first_retry_delay_ms: u64,
    /// Longest wait between attempts; default 10 minutes.
    pub max_retry_delay_ms: u64,
    /// Deliveries pending at once (in flight or waiting to retry); default 10 000.
    pub max_pending: usize,
    /// HTTP requests in flight at once; default 16.
    pub max_concurrent_requests: usize,
    /// Deliveries of one account in flight at once (sending or waiting for a
    /// retry); default 4. Fewer than `max_concurrent_requests`, so an account
    /// whose endpoint never answers cannot hold every request.
    pub max_concurrent_per_account: usize,
    /// Deliveries of one account waiting to start; one more drops the
    /// account's oldest waiting one; default 1 000. With the account's
    /// deliveries in flight, fewer than `max_pending`, so one account cannot
    /// stop the log from being read.
    pub max_queued_per_account: usize,
    /// Deliver to host names that resolve to loopback, private or link-local
    /// addresses too (development only); default false: such addresses are
    /// dropped from every resolution, so a public name pointed at an internal
    /// host (or re-pointed after the URL was accepted) is never reached.
    pub allow_internal_addresses: bool,
}

impl CustomerWebhooksConfig {
    /// The defaults, with the checkpoint at `checkpoint`.
    pub fn new(checkpoint: PathBuf) -> Self {
        Self {
            checkpoint,
            connect_timeout_ms: 5_000,
            attempt_timeout_ms: 10_000,
            max_attempts: 10,
            first_retry_delay_ms: 1_000,
            max_retry_delay_ms: 600_000,
            max_pending: 10_000,
            max_concurrent_requests: 16,
            max_concurrent_per_account: 4,
            max_queued_per_account: 1_000,
            allow_internal_addresses: false,
        }
    }

    /// The wait after failed attempt `attempt` (from 1): the first delay doubled
    /// `attempt - 1` times, at most the longest delay.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        let delay = self
            .first_retry_delay_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_retry_delay_ms);
        Duration::from_millis(delay)
    }

    fn check(&self) -> Result<(), CustomerWebhooksError> {
        let bad = |what| Err(CustomerWebhooksError::Config(what));
        if self.connect_timeout_ms == 0 || self.attempt_timeout_ms == 0 {
            return bad("timeouts must be positive");
        }
        if self.max_attempts == 0 {
            return bad("at least one attempt");
        }
        if self.max_pending == 0 || self.max_concurrent_requests == 0 {
            return bad("at least one pending delivery and one request at once");
        }
        if self.max_concurrent_per_account == 0 || self.max_queued_per_account == 0 {
            return bad("at least one delivery in flight and one queued per account");
        }
        if self.max_concurrent_per_account >= self.max_concurrent_requests {
            return bad("fewer deliveries in flight per account than requests at once");
        }
        let per_account = self
            .max_concurrent_per_account
            .saturating_add(self.max_queued_per_account);
        if per_account >= self.max_pending {
            return bad("fewer deliveries per account than pending at once");
        }
        Ok(())
    }
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Events acknowledged with a 2xx.
    pub delivered: AtomicU64,
    /// Failed attempts that were retried.
    pub retried: AtomicU64,
    /// Events given up after the last attempt.
    pub failed: AtomicU64,
    /// Events dropped unsent because their account's queue was full.
    pub dropped: AtomicU64,
    /// Codes captured because their webhook was acknowledged first.
    pub codes_captured: AtomicU64,
}

impl DeliveryStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<unix>.<body>")>`: the value of
/// [`SIGNATURE_HEADER`]. The key is the whole secret string, `whsec_` included.
pub fn signature(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The order events a webhook is sent for, by their wire name.
fn webhook_type(event: &OrderEvent) -> Option<&'static str> {
    match event {
        OrderEvent::OrderCodeReceived(_) => Some("order.code_received"),
        OrderEvent::OrderCompleted(_) => Some("order.completed"),
        OrderEvent::OrderCancelled(_) => Some("order.cancelled"),
        OrderEvent::OrderExpired(_) => Some("order.expired"),
        _ => None,
    }
}

/// One event to deliver.
#[derive(Clone, Debug)]
struct Job {
    position: u64,
    order: OrderId,
    revision: u64,
    event_id: uuid::Uuid,
    event_type: &'static str,
    occurred_at: DateTime<Utc>,
    /// The sequence of the code, for `order.code_received`.
    code_sequence: Option<u32>,
}

#[derive(Serialize)]
struct Body<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'a str,
    order_id: String,
    revision: u64,
    occurred_at: String,
    order: OrderBody,
}

#[derive(Serialize)]
struct OrderBody {
    id: String,
    status: &'static str,
    service: Option<String>,
    country: Option<String>,
    channel: Option<&'static str>,
    phone: Option<String>,
    price: String,
    created_at: String,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<CodeBody>,
}

#[derive(Serialize)]
struct CodeBody {
    sequence: u32,
    /// `None` once the code's key is erased (it came too late to be sent).
    code: Option<String>,
    text: Option<String>,
    received_at: String,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn status_name(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Placed => "placed",
        OrderStatus::NumberAssigned => "number_assigned",
        OrderStatus::CodeReceived => "code_received",
        OrderStatus::CodeDelivered => "code_delivered",
        OrderStatus::Completed => "completed",
        OrderStatus::Cancelled => "cancelled",
        OrderStatus::Expired => "expired",
    }
}

/// A message ready to send: its owner and its body.
struct Message {
    account: AccountId,
    body: Vec<u8>,
    /// True when the body carries a readable code (its ack is a delivery).
    carries_code: bool,
}

/// Resolves host names with the system resolver and keeps only public
/// addresses: a webhook URL is checked when it is set, but the name's records
/// can point anywhere at delivery time. (An IP literal is never resolved:
/// [`internal_literal`] checks it at each attempt.)
struct PublicAddressesOnly;

/// Whether `url`'s host is an IP address that is not public. The URL was
/// checked when it was set, by the rules of that time: the check runs again
/// before each attempt, under today's rules. A URL that does not parse is left
/// to the client, which refuses it.
fn internal_literal(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    // The parser writes an IPv4 host as a dotted quad (whatever form it was
    // given in) and an IPv6 one in brackets; a name does not parse as an IP.
    let host = url.host_str().unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse::<std::net::IpAddr>()
        .is_ok_and(nexus_core::domain::account::ip_is_internal)
}

/// Why a webhook host was not connected to. Names no address: the customer's
/// host name is not logged either.
#[derive(Debug, thiserror::Error)]
#[error("the webhook host resolves to no public address")]
struct NoPublicAddress;

impl reqwest::dns::Resolve for PublicAddressesOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<std::net::SocketAddr> = resolved
                .filter(|addr| !nexus_core::domain::account::ip_is_internal(addr.ip()))
                .collect();
            if public.is_empty() {
                return Err(Box::new(NoPublicAddress) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// One account's deliveries: those in flight hold one of its permits, those
/// waiting to start are queued, oldest first.
struct Lane {
    permits: Arc<Semaphore>,
    /// The position and task of each delivery that has not started.
    waiting: VecDeque<(u64, AbortHandle)>,
    /// Deliveries waiting or in flight; the lane is removed at zero.
    deliveries: usize,
}

/// What every delivery task shares.
struct Shared<S: EventStore> {
    store: Arc<S>,
    vault: Arc<Vault>,
    accounts: Arc<Accounts<S>>,
    commerce: Arc<Commerce<S>>,
    http: reqwest::Client,
    config: CustomerWebhooksConfig,
    requests: Semaphore,
    stats: Arc<DeliveryStats>,
    /// Positions whose delivery has not finished.
    pending: Mutex<BTreeSet<u64>>,
    /// The lanes of the accounts with deliveries waiting or in flight.
    lanes: Mutex<HashMap<AccountId, Lane>>,
}

/// The dispatcher; [`CustomerWebhooks::run`] drives it.
pub struct CustomerWebhooks<S: EventStore> {
    shared: Arc<Shared<S>>,
}

impl<S: EventStore> CustomerWebhooks<S> {
    pub fn new(
        store: Arc<S>,
        vault: Arc<Vault>,
        accounts: Arc<Accounts<S>>,
        commerce: Arc<Commerce<S>>,
        config: CustomerWebhooksConfig,
    ) -> Result<Self, CustomerWebhooksError> {
        config.check()?;
        // reqwest brings no TLS crypto provider of its own; ring is the one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // No proxy: through one, the resolver below would check the proxy's
        // address, not the customer's host.
        let mut http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.attempt_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("Nexus-Webhooks/1");
        if !config.allow_internal_addresses {
            http = http.dns_resolver(Arc::new(PublicAddressesOnly));
        }
        let http = http
            .build()
            .map_err(|e| CustomerWebhooksError::Client(e.without_url().to_string()))?;
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                vault,
                accounts,
                commerce,
                http,
                requests: Semaphore::new(config.max_concurrent_requests),
                config,
                stats: Arc::new(DeliveryStats::default()),
                pending: Mutex::new(BTreeSet::new()),
                lanes: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The counters, shared with the running dispatcher.
    pub fn stats(&self) -> Arc<DeliveryStats> {
        self.shared.stats.clone()
    }

    /// Runs until `shutdown` turns true. A first start begins at the head:
    /// webhooks are for what happens from now on. Deliveries still pending at
    /// shutdown are abandoned and sent again after the next start.
    pub async fn run(
        self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), CustomerWebhooksError> {
        let shared = self.shared;
        let from = match read_checkpoint(&shared.config.checkpoint)? {
            Some(position) => position + 1,
            None => {
                let head = shared.store.head();
                write_checkpoint(&shared.config.checkpoint, head)?;
                head + 1
            }
        };
        let slots = Arc::new(Semaphore::new(shared.config.max_pending));
        let mut subscription = AllSubscription::new(shared.store.clone(), from, BATCH);
        let mut tasks = JoinSet::new();
        // The completion signal of the last delivery queued per order: the next
        // one of that order waits for it.
        let mut last_of_order: HashMap<OrderId, oneshot::Receiver<()>> = HashMap::new();
        let mut read_up_to = from - 1;
        let mut written = read_up_to;
        // Moves the checkpoint past deliveries that finished while the log was quiet.
        let mut checkpoint_tick = tokio::time::interval(CHECKPOINT_EVERY);
        checkpoint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = 'run: loop {
            // `next_batch` is cancel-safe: a tick loses no event.
            let batch = tokio::select! {
                batch = subscription.next_batch() => match batch {
                    Ok(batch) => batch,
                    Err(e) => break 'run Err(e.into()),
                },
                _ = checkpoint_tick.tick() => {
                    let finished = shared.finished_below(read_up_to);
                    if finished != written {
                        if let Err(e) = write_checkpoint(&shared.config.checkpoint, finished) {
                            break 'run Err(e.into());
                        }
                        written = finished;
                    }
                    continue;
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break 'run Ok(());
                    }
                    continue;
                }
            };
            while tasks.try_join_next().is_some() {}
            last_of_order.retain(|_, done| {
                matches!(done.try_recv(), Err(oneshot::error::TryRecvError::Empty))
            });
            for record in &batch {
                let Some(job) = job_of(record) else { continue };
                let Some(account) = shared.account_of(&job).await else {
                    continue;
                };
                // Waits for a free slot (back-pressure), or for the stop signal.
                let slot = loop {
                    tokio::select! {
                        slot = slots.clone().acquire_owned() => break slot.expect("never closed"),
                        changed = shutdown.changed() => {
                            if changed.is_err() || *shutdown.borrow() {
                                break 'run Ok(());
                            }
                        }
                    }
                };
                shared.pending_add(job.position);
                let previous = last_of_order.remove(&job.order);
                let (done, done_rx) = oneshot::channel();
                last_of_order.insert(job.order, done_rx);
                let queued = Queued {
                    job,
                    account,
                    slot,
                    previous,
                    done,
                };
                shared.enqueue(&mut tasks, queued);
            }
            if let Some(last) = batch.last() {
                read_up_to = last.position;
            }
            let finished = shared.finished_below(read_up_to);
            if finished != written {
                if let Err(e) = write_checkpoint(&shared.config.checkpoint, finished) {
                    break 'run Err(e.into());
                }
                written = finished;
            }
        };
        tasks.shutdown().await;
        let finished = shared.finished_below(read_up_to);
        if finished != written {
            write_checkpoint(&shared.config.checkpoint, finished)?;
        }
        result
    }
}

/// A delivery on its way into its account's lane.
struct Queued {
    job: Job,
    account: AccountId,
    /// Its place among the pending deliveries.
    slot: OwnedSemaphorePermit,
    /// Done when the previous event of the same order is.
    previous: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
}

/// The delivery an order event calls for, if any.
fn job_of(record: &RecordedEvent) -> Option<Job> {
    let hex = record.stream.as_str().strip_prefix("order-")?;
    let event =
        OrderEvent::decode(&record.event_type, record.schema_version, &record.payload).ok()?;
    let event_type = webhook_type(&event)?;
    let code_sequence = match &event {
        OrderEvent::OrderCodeReceived(e) => Some(e.sequence),
        _ => None,
    };
    Some(Job {
        position: record.position,
        order: OrderId::parse(hex)?,
        revision: record.version,
        event_id: record.id.0,
        event_type,
        occurred_at: record.recorded_at,
        code_sequence,
    })
}

fn read_checkpoint(path: &std::path::Path) -> Result<Option<u64>, std::io::Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_checkpoint(path: &std::path::Path, position: u64) -> Result<(), std::io::Error> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, position.to_string())?;
    std::fs::rename(&tmp, path)
}

impl<S: EventStore> Shared<S> {
    /// The account that placed the job's order; `None` for an anonymous order
    /// (no webhook) or an order that cannot be read (logged).
    async fn account_of(&self, job: &Job) -> Option<AccountId> {
        let first = self
            .store
            .read_stream(&job.order.stream(), 1, Direction::Forwards, 1)
            .await;
        let placed = match first.as_deref() {
            Ok([record]) => {
                OrderEvent::decode(&record.event_type, record.schema_version, &record.payload)
            }
            Ok(_) => return None,
            Err(e) => {
                warn!(order = %job.order, error = %e, "webhook: the order cannot be read");
                return None;
            }
        };
        match placed {
            Ok(OrderEvent::OrderPlaced(placed)) => match placed.owner {
                Owner::Account(account) => Some(account),
                _ => None,
            },
            _ => None,
        }
    }

    /// Puts a delivery in its account's lane: it starts once the previous
    /// event of its order is done and the account has a delivery permit free.
    /// A full queue drops the account's oldest waiting delivery first.
    fn enqueue(self: &Arc<Self>, tasks: &mut JoinSet<()>, queued: Queued) {
        let Queued {
            job,
            account,
            slot,
            previous,
            done,
        } = queued;
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let lane = lanes.entry(account).or_insert_with(|| Lane {
            permits: Arc::new(Semaphore::new(self.config.max_concurrent_per_account)),
            waiting: VecDeque::new(),
            deliveries: 0,
        });
        if lane.waiting.len() >= self.config.max_queued_per_account {
            if let Some((position, task)) = lane.waiting.pop_front() {
                // Not started (it would have left the queue): nothing was sent.
                task.abort();
                lane.deliveries -= 1;
                self.pending_remove(position);
                DeliveryStats::bump(&self.stats.dropped);
                warn!(account = %account, position, "webhook: the account's queue is full; its oldest waiting event is dropped");
            }
        }
        // In flight at once when a permit is free and no earlier event of the
        // order comes first; else queued. (A released permit goes to a
        // delivery already waiting for one: a new one cannot overtake it.)
        let ready = match previous {
            None => lane.permits.clone().try_acquire_owned().ok(),
            Some(_) => None,
        };
        let queued = ready.is_none();
        let permits = lane.permits.clone();
        let shared = self.clone();
        let position = job.position;
        // The lanes stay locked until the task is queued: it cannot start before.
        let task = tasks.spawn(async move {
            let _permit = match ready {
                Some(permit) => permit,
                None => {
                    if let Some(previous) = previous {
                        let _ = previous.await;
                    }
                    let permit = permits.acquire_owned().await.expect("never closed");
                    if !shared.start(account, position) {
                        return;
                    }
                    permit
                }
            };
            shared.deliver(&job).await;
            shared.pending_remove(position);
            shared.finish(account);
            drop(slot);
            let _ = done.send(());
        });
        if queued {
            lane.waiting.push_back((position, task));
        }
        lane.deliveries += 1;
    }

    /// Takes a delivery out of its account's queue as it starts; false when it
    /// was dropped meanwhile.
    fn start(&self, account: AccountId, position: u64) -> bool {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(lane) = lanes.get_mut(&account) else {
            return false;
        };
        match lane.waiting.iter().position(|(p, _)| *p == position) {
            Some(index) => lane.waiting.remove(index).is_some(),
            None => false,
        }
    }

    /// Counts a started delivery out of its account's lane.
    fn finish(&self, account: AccountId) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lane) = lanes.get_mut(&account) {
            lane.deliveries -= 1;
            if lane.deliveries == 0 {
                lanes.remove(&account);
            }
        }
    }

    fn pending_add(&self, position: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(position);
    }

    fn pending_remove(&self, position: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&position);
    }

    /// The highest position up to which every delivery has finished, given
    /// that the log was read up to `read_up_to`.
    fn finished_below(&self, read_up_to: u64) -> u64 {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.first() {
            Some(first) => first - 1,
            None => read_up_to,
        }
    }

    /// Sends one event until it is acknowledged, given up, or no longer wanted.
    async fn deliver(&self, job: &Job) {
        let mut message = match self.message(job).await {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(e) => {
                warn!(order = %job.order, error = %e, "webhook: the order cannot be read");
                return;
            }
        };
        let max_attempts = self.config.max_attempts;
        let mut last_failure = String::new();
        for attempt in 1..=max_attempts {
            // A code is sent only while its key lives: a retry builds the body
            // anew, so a code erased since the last attempt is not in it.
            if attempt > 1 && message.carries_code {
                message = match self.message(job).await {
                    Ok(Some(message)) => message,
                    Ok(None) => return,
                    Err(e) => {
                        warn!(order = %job.order, error = %e, "webhook: the order cannot be read");
                        return;
                    }
                };
            }
            // The endpoint as it is now: removed stops, rotated signs anew.
            let Some((url, secret)) = self.endpoint(message.account).await else {
                debug!(order = %job.order, "webhook: no endpoint any more");
                return;
            };
            let outcome = if !self.config.allow_internal_addresses && internal_literal(&url) {
                Err("the webhook host is not a public address".to_owned())
            } else {
                self.post(job, &message, &url, &secret, attempt).await
            };
            match outcome {
                Ok(()) => {
                    DeliveryStats::bump(&self.stats.delivered);
                    debug!(order = %job.order, event = job.event_type, attempt, "webhook delivered");
                    if message.carries_code {
                        self.count_as_read(job, message.account).await;
                    }
                    return;
                }
                Err(failure) => last_failure = failure,
            }
            if attempt < max_attempts {
                DeliveryStats::bump(&self.stats.retried);
                tokio::time::sleep(self.config.retry_delay(attempt)).await;
            }
        }
        DeliveryStats::bump(&self.stats.failed);
        warn!(
            account = %message.account,
            order = %job.order,
            event_id = %job.event_id,
            event = job.event_type,
            attempts = max_attempts,
            last_failure = %last_failure,
            "webhook given up"
        );
    }

    /// One attempt; `Err` names the failure without the URL.
    async fn post(
        &self,
        job: &Job,
        message: &Message,
        url: &str,
        secret: &str,
        attempt: u32,
    ) -> Result<(), String> {
        let _permit = self.requests.acquire().await.map_err(|e| e.to_string())?;
        let signed = signature(secret, Utc::now().timestamp(), &message.body);
        let sent = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signed)
            .header(EVENT_ID_HEADER, job.event_id.to_string())
            .header(EVENT_TYPE_HEADER, job.event_type)
            .header(ATTEMPT_HEADER, attempt.to_string())
            .body(message.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("status {}", response.status().as_u16())),
            Err(e) => Err(e.without_url().to_string()),
        }
    }

    /// The account's endpoint URL and secret, if it has a readable one.
    async fn endpoint(&self, account: AccountId) -> Option<(String, String)> {
        let loaded = match self.accounts.load_account(account).await {
            Ok(loaded) => loaded,
            Err(e) => {
                warn!(account = %account, error = %e, "webhook: the account cannot be read");
                return None;
            }
        };
        let endpoint = loaded.state.webhook?;
        let pii = endpoint.pii.plain()?;
        Some((pii.url.clone(), pii.secret.clone()))
    }

    /// An acknowledged code is a read by its owner: the same command as the
    /// HTTP read, so the hold is captured once, whoever reads first. Only the
    /// order's newest code counts (an older one was superseded by a resend).
    async fn count_as_read(&self, job: &Job, account: AccountId) {
        let order = match self.commerce.order(job.order).await {
            Ok(order) => order,
            Err(e) => return warn!(order = %job.order, error = %e, "webhook: order unreadable"),
        };
        if order.code.as_ref().map(|c| c.sequence) != job.code_sequence {
            return;
        }
        let first_read = order.delivered_at.is_none();
        match self
            .commerce
            .read_code(job.order, Owner::Account(account), DeliveryChannel::Webhook)
            .await
        {
            Ok(_) => {
                if first_read {
                    DeliveryStats::bump(&self.stats.codes_captured);
                }
                info!(order = %job.order, "code delivered by webhook");
            }
            // Too late (the order completed or the code was erased meanwhile).
            Err(e) => debug!(order = %job.order, error = %e, "webhook: code not marked read"),
        }
    }

    /// The body for a job: the order as it was at the event's revision. `None`
    /// when no webhook applies (an anonymous order, no endpoint).
    async fn message(&self, job: &Job) -> Result<Option<Message>, String> {
        let records = self
            .store
            .read_stream(
                &job.order.stream(),
                1,
                Direction::Forwards,
                (job.revision as usize).min(MAX_ORDER_EVENTS),
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut events = Vec::with_capacity(records.len());
        for record in records.iter().filter(|r| r.version <= job.revision) {
            events.push(OrderEvent::from_recorded(record, &self.vault).map_err(|e| e.to_string())?);
        }
        let order = Order::from_events(&events);
        let Some(placed) = &order.placed else {
            return Ok(None);
        };
        let Owner::Account(account) = placed.owner else {
            return Ok(None);
        };
        if self.endpoint(account).await.is_none() {
            return Ok(None);
        }
        let code = match (job.code_sequence, &order.code) {
            (Some(sequence), Some(received)) if received.sequence == sequence => {
                let plain = received.code.plain();
                Some(CodeBody {
                    sequence,
                    code: plain.map(|c| c.code.clone()),
                    text: plain.map(|c| c.text.clone()),
                    received_at: rfc3339(received.at),
                })
            }
            _ => None,
        };
        let carries_code = code.as_ref().is_some_and(|c| c.code.is_some());
        let details = placed.details.plain();
        let body = Body {
            id: job.event_id.to_string(),
            kind: job.event_type,
            order_id: job.order.to_string(),
            revision: job.revision,
            occurred_at: rfc3339(job.occurred_at),
            order: OrderBody {
                id: job.order.to_string(),
                status: order.status.map_or("placed", status_name),
                service: details.map(|d| d.service.as_str().to_owned()),
                country: details.map(|d| d.country.as_str().to_owned()),
                channel: details.map(|d| match d.channel {
                    Channel::Sms => "sms",
                    Channel::Voice => "voice",
                }),
                phone: order.assigned.as_ref().and_then(|a| match &a.phone {
                    Personal::Plain(p) => Some(p.phone.clone()),
                    _ => None,
                }),
                price: placed.price.to_string(),
                created_at: rfc3339(placed.placed_at),
                expires_at: rfc3339(placed.expires_at),
                code,
            },
        };
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        Ok(Some(Message {
            account,
            body,
            carries_code,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently (Python's hmac module) over "1764000000.{"a":1}".
        assert_eq!(
            signature("whsec_test", 1_764_000_000, br#"{"a":1}"#),
            "t=1764000000,v1=c862972147a4361237a5bcb4f74195e2e5d448641115622fe658a65985c5ae8c"
        );
        assert_ne!(signature("k", 2, b"x"), signature("k", 1, b"x"));
        assert_ne!(signature("other", 1, b"x"), signature("k", 1, b"x"));
    }

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let config = CustomerWebhooksConfig::new("x".into());
        let delays: Vec<u64> = (1..=12)
            .map(|n| config.retry_delay(n).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [
                1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 512_000,
                600_000, 600_000
            ]
        );
        assert_eq!(config.retry_delay(u32::MAX), Duration::from_millis(600_000));
        let mut bad = config.clone();
        bad.max_attempts = 0;
        assert!(bad.check().is_err());
        config.check().unwrap();
    }

    #[test]
    fn one_account_can_hold_neither_every_request_nor_every_pending_slot() {
        let config = CustomerWebhooksConfig::new("x".into());
        config.check().unwrap();
        let refused = [
            CustomerWebhooksConfig {
                max_concurrent_per_account: config.max_concurrent_requests,
                ..config.clone()
            },
            CustomerWebhooksConfig {
                max_queued_per_account: config.max_pending - config.max_concurrent_per_account,
                ..config.clone()
            },
            CustomerWebhooksConfig {
                max_concurrent_per_account: 0,
                ..config.clone()
            },
            CustomerWebhooksConfig {
                max_queued_per_account: 0,
                ..config.clone()
            },
        ];
        for bad in refused {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ip_literals_are_checked_at_delivery() {
        for internal in [
            "http://127.0.0.1:8080/hook",
            "https://10.1.2.3/",
            "https://0x7f.1/",
            "https://[::1]/",
            "https://[fec0::1]/",
            "https://[::a00:1]/",
            "https://[64:ff9b::a9fe:a9fe]/",
            "https://[2002:a00:1::1]:8443/h",
            "https://[::ffff:169.254.169.254]/",
        ] {
            assert!(internal_literal(internal), "{internal}");
        }
        for other in [
            "https://93.184.216.34/h",
            "https://[2606:2800:220:1::1]/",
            "https://hooks.example.com/",
            "https://localhost/",
            "not a url",
        ] {
            assert!(!internal_literal(other), "{other}");
        }
    }
}
