//! The commerce service: orders, wallets, deposits and anonymous orders. Each
//! command is one step of the [`Runner`]: load what the decision reads, call the
//! pure decision (`domain::commerce`, `domain::order`, …), emit its events; the
//! runner appends them atomically and decides again on a conflict. No read
//! model is consulted.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::repo::AggregateCache;
use super::runner::{Committed, Runner, ServiceError, StoreFault, Tx};
use crate::domain::account::Account;
use crate::domain::anonymous::{self, Anonymous, AnonymousError, TrackingId};
use crate::domain::clock::Clock;
use crate::domain::codec::Personal;
use crate::domain::commerce::{self as decide, CommerceError, PaymentDecision, PlaceOrder};
use crate::domain::deposit::{self, Deposit, PaymentGuard, PaymentReport};
use crate::domain::idempotency::{
    self, fingerprint, IdempotencyKey, IdempotencyKeyUsed, IdempotencyRecord, IdempotentResult,
};
use crate::domain::ids::{AnonymousId, DepositId, OrderId};
use crate::domain::ledger::Owner;
use crate::domain::money::Micros;
use crate::domain::order::{
    self, CancelReason, CodePii, DeliveryChannel, Order, OrderError, OrderEvent, OrderPolicy,
    OrderStatus, Timeout,
};
use crate::domain::wallet::{self, VoidReason, Wallet, WalletError};
use crate::log::{EventStore, StreamName};
use crate::vault::Vault;

/// Why a commerce command did not happen.
pub type CommandError = ServiceError<CommerceError>;

macro_rules! refusal_from {
    ($($source:ty),+) => {$(
        impl From<$source> for CommandError {
            fn from(e: $source) -> Self {
                ServiceError::Refused(e.into())
            }
        }
    )+};
}
refusal_from!(
    CommerceError,
    OrderError,
    WalletError,
    deposit::DepositError,
    AnonymousError,
    crate::domain::account::AccountError,
    idempotency::KeyReused
);

/// The answer to a placed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    pub order: OrderId,
    /// True when the idempotency key had been used for this same request: the
    /// first result, nothing new was done.
    pub replayed: bool,
    /// The log position to wait for before reading the order from a projection.
    pub position: u64,
}

/// A code read by its owner.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeRead {
    pub code: String,
    pub text: String,
    pub received_at: DateTime<Utc>,
}

impl std::fmt::Debug for CodeRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeRead")
            .field("received_at", &self.received_at)
            .finish_non_exhaustive()
    }
}

/// A new anonymous order: the tracking ID is shown once and stored nowhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnonymousCreated {
    pub tracking_id: TrackingId,
    pub anon: AnonymousId,
    /// The invoice to pay; paying it starts the order.
    pub invoice: DepositId,
}

/// What a tracking ID shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracked {
    pub anon: AnonymousId,
    pub state: Anonymous,
    /// The orders started with it, oldest first.
    pub orders: Vec<(OrderId, Order)>,
    /// The buyer's credit: paid and not spent.
    pub wallet: Wallet,
}

/// What a payment did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentOutcome {
    Credited {
        amount: Micros,
        position: u64,
    },
    /// The report added nothing to what was credited (a re-sent or reordered
    /// notification): nothing changed.
    AlreadyCredited,
}

/// What a repeat of a purchase finds (see [`decide::repeat_answer`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EarlierPurchase {
    /// A purchase of the same request within the window whose activation is live.
    Live(OrderId),
    /// None; the key a new purchase claims (none when the window is full).
    None { free_key: Option<IdempotencyKey> },
}

/// The command side for orders, wallets and deposits.
pub struct Commerce<S: EventStore> {
    store: Arc<S>,
    vault: Arc<Vault>,
    policy: OrderPolicy,
    clock: Arc<dyn Clock>,
    /// Folded orders, wallets, … at their last version.
    folded: AggregateCache,
    /// Orders placed on one wallet queue here instead of racing for its next
    /// version (a burst from one customer would otherwise end in `Contention`).
    placing: WalletStripes,
}

/// Striped locks by wallet stream: bounded memory, one stripe held at a time.
struct WalletStripes {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

/// Stripes for [`WalletStripes`]: unrelated wallets rarely share one.
const WALLET_STRIPES: usize = 1_024;

impl WalletStripes {
    fn new() -> Self {
        Self {
            stripes: (0..WALLET_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    async fn lock(&self, wallet: &StreamName) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        wallet.as_str().hash(&mut hasher);
        let stripe = (hasher.finish() % WALLET_STRIPES as u64) as usize;
        self.stripes[stripe].lock().await
    }
}

/// The order, if `owner` owns it; another owner's order does not exist for them.
async fn owned_order<S: EventStore>(
    tx: &Tx<'_, S>,
    id: OrderId,
    owner: Owner,
) -> Result<Order, CommandError> {
    let order = tx.load::<Order>(&id.stream()).await?;
    match &order.placed {
        Some(placed) if placed.owner == owner => Ok(order),
        _ => Err(OrderError::NotFound.into()),
    }
}

/// With a key: the first result if it was used for this same request, nothing
/// if unused; refused if it was used for another request.
async fn replayed<S: EventStore>(
    tx: &Tx<'_, S>,
    key: Option<&IdempotencyKey>,
    fingerprint: &[u8; 32],
) -> Result<Option<IdempotentResult>, CommandError> {
    let Some(key) = key else { return Ok(None) };
    let record = tx.load::<IdempotencyRecord>(key.stream()).await?;
    Ok(idempotency::replay(&record, fingerprint)?)
}

/// Records the key's first use beside the command's events.
fn emit_key_use<S: EventStore>(
    tx: &Tx<'_, S>,
    key: Option<&IdempotencyKey>,
    fingerprint: [u8; 32],
    result: IdempotentResult,
    at: DateTime<Utc>,
) -> Result<(), StoreFault> {
    match key {
        Some(key) => tx.emit(
            key.stream(),
            &idempotency::record_use(fingerprint, result, at),
        ),
        None => Ok(()),
    }
}

/// Captures the order's hold (and credits cashback) on the owner's wallet.
async fn emit_capture<S: EventStore>(
    tx: &Tx<'_, S>,
    order: &Order,
    owner: Owner,
    id: OrderId,
    policy: &OrderPolicy,
    now: DateTime<Utc>,
) -> Result<(), CommandError> {
    let stream = owner.wallet_stream();
    let wallet = tx.load::<Wallet>(&stream).await?;
    let cost = order
        .assigned
        .as_ref()
        .map_or(Micros::ZERO, |a| a.provider_cost);
    let events = wallet::capture(&wallet, owner, id, cost, policy.cashback_bp, now)?;
    Ok(tx.emit(&stream, &events)?)
}

/// Voids the order's hold: the full price back to the owner's wallet.
async fn emit_void<S: EventStore>(
    tx: &Tx<'_, S>,
    owner: Owner,
    id: OrderId,
    reason: VoidReason,
    now: DateTime<Utc>,
) -> Result<(), CommandError> {
    let stream = owner.wallet_stream();
    let wallet = tx.load::<Wallet>(&stream).await?;
    let events = wallet::void(&wallet, owner, id, reason, now)?;
    Ok(tx.emit(&stream, &events)?)
}

/// The state of the buyer's last order (the default when none was started).
async fn current_order<S: EventStore>(
    tx: &Tx<'_, S>,
    record: &Anonymous,
) -> Result<Order, StoreFault> {
    match record.orders.last() {
        Some(last) => tx.load::<Order>(&last.stream()).await,
        None => Ok(Order::default()),
    }
}

impl<S: EventStore> Commerce<S> {
    pub fn new(
        store: Arc<S>,
        vault: Arc<Vault>,
        policy: OrderPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            vault,
            policy,
            clock,
            folded: AggregateCache::default(),
            placing: WalletStripes::new(),
        }
    }

    pub fn policy(&self) -> &OrderPolicy {
        &self.policy
    }

    fn runner(&self) -> Runner<'_, S> {
        Runner::cached(&*self.store, &self.vault, &self.folded)
    }

    /// Reads one aggregate outside any command.
    async fn read<A>(&self, stream: &StreamName) -> Result<A, CommandError>
    where
        A: crate::domain::aggregate::Aggregate + Clone + Send + Sync + 'static,
        A::Event: crate::domain::codec::DomainEvent,
    {
        let loaded = super::repo::load_cached(&*self.store, &self.vault, stream, &self.folded);
        Ok(loaded.await?.state)
    }

    pub async fn wallet(&self, owner: Owner) -> Result<Wallet, CommandError> {
        self.read(&owner.wallet_stream()).await
    }

    pub async fn order(&self, order: OrderId) -> Result<Order, CommandError> {
        self.read(&order.stream()).await
    }

    /// The first use of an idempotency key, if it was used: for callers that
    /// derive keys themselves and must know whether one is taken.
    pub async fn idempotency_key_use(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyKeyUsed>, CommandError> {
        Ok(self.read::<IdempotencyRecord>(key.stream()).await?.used)
    }

    /// The service's time (the clock decisions are made with).
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The orders of `owner` that are active now, in the order of
    /// [`decide::active_order_candidates`].
    pub async fn active_orders(&self, owner: Owner) -> Result<Vec<(OrderId, Order)>, CommandError> {
        let wallet = self.wallet(owner).await?;
        let mut active = Vec::new();
        for id in decide::active_order_candidates(&wallet) {
            let order = self.order(id).await?;
            if order.is_active() {
                active.push((id, order));
            }
        }
        Ok(active)
    }

    /// An earlier purchase of the same request (`request_print`) by `owner`
    /// that a repeat answers again: looks through this window's keys and the
    /// previous window's, in order of use ([`decide::repeat_windows`]).
    pub async fn earlier_purchase(
        &self,
        owner: Owner,
        request_print: &[u8; 32],
    ) -> Result<EarlierPurchase, CommandError> {
        let now = self.clock.now();
        let scope = owner.wallet_stream();
        let mut free_key = None;
        for window in decide::repeat_windows(now) {
            free_key = None;
            for n in 0..decide::MAX_PURCHASES_PER_WINDOW {
                let key = decide::repeat_key(scope.as_str(), request_print, window, n);
                let Some(used) = self.read::<IdempotencyRecord>(key.stream()).await?.used else {
                    free_key = Some(key);
                    break;
                };
                let IdempotentResult::Order(order) = used.result else {
                    continue;
                };
                if let Some(live) = decide::repeat_answer(&used, &self.order(order).await?, now) {
                    return Ok(EarlierPurchase::Live(live));
                }
            }
        }
        // The free key found last is the current window's (or none if it is full).
        Ok(EarlierPurchase::None { free_key })
    }

    /// Places an order and holds its price on the owner's wallet, atomically. With
    /// an idempotency key, a repeat of the same request returns the first order;
    /// the same key for another request is refused.
    pub async fn place_order(
        &self,
        owner: Owner,
        request: &PlaceOrder,
        key: Option<&IdempotencyKey>,
    ) -> Result<Placed, CommandError> {
        let fingerprint = request.fingerprint(owner);
        // Held until the append is decided; nothing called below takes a stripe.
        let _placing = self.placing.lock(&owner.wallet_stream()).await;
        let (policy, clock) = (&self.policy, &self.clock);
        let committed = self
            .runner()
            .run(|tx| {
                Box::pin(async move {
                    if let Some(first) = replayed(&tx, key, &fingerprint).await? {
                        return match first {
                            IdempotentResult::Order(order) => Ok((order, true)),
                            IdempotentResult::Deposit(_) => {
                                Err(CommerceError::from(idempotency::KeyReused).into())
                            }
                        };
                    }
                    let now = clock.now();
                    let id = OrderId::new();
                    let account = match owner {
                        Owner::Account(account) => {
                            Some(tx.load::<Account>(&account.stream()).await?)
                        }
                        Owner::Anonymous(_) => None,
                    };
                    let wallet = tx.load::<Wallet>(&owner.wallet_stream()).await?;
                    let placement = decide::place_order(
                        account.as_ref(),
                        &wallet,
                        id,
                        owner,
                        request,
                        policy,
                        now,
                    )?;
                    tx.emit(&id.stream(), &placement.order)?;
                    tx.emit(&owner.wallet_stream(), &placement.wallet)?;
                    emit_key_use(&tx, key, fingerprint, IdempotentResult::Order(id), now)?;
                    Ok((id, false))
                })
            })
            .await?;
        let Committed {
            value: (order, replayed),
            position,
        } = committed;
        Ok(Placed {
            order,
            replayed,
            position,
        })
    }

    /// Records the number an upstream gave (the fulfilment worker).
    pub async fn assign_number(
        &self,
        id: OrderId,
        provider: &str,
        activation_id: &str,
        provider_cost: Micros,
        phone: &str,
    ) -> Result<u64, CommandError> {
        self.order_only(id, |order, now| {
            order::assign_number(
                order,
                provider.to_owned(),
                activation_id.to_owned(),
                provider_cost,
                phone.to_owned(),
                now,
            )
        })
        .await
    }

    /// Records a code from the upstream (the fulfilment worker).
    pub async fn receive_code(
        &self,
        id: OrderId,
        code: &str,
        text: &str,
    ) -> Result<u64, CommandError> {
        self.order_only(id, |order, now| {
            order::receive_code(order, code.to_owned(), text.to_owned(), now)
        })
        .await
    }

    pub async fn request_resend(&self, id: OrderId, owner: Owner) -> Result<u64, CommandError> {
        let clock = &self.clock;
        let committed = self
            .runner()
            .run(|tx| {
                Box::pin(async move {
                    let order = owned_order(&tx, id, owner).await?;
                    let events = order::request_resend(&order, clock.now())?;
                    Ok(tx.emit(&id.stream(), &events)?)
                })
            })
            .await?;
        Ok(committed.position)
    }

    /// A decision that touches the order's stream only.
    async fn order_only(
        &self,
        id: OrderId,
        decide: impl Fn(&Order, DateTime<Utc>) -> Result<Vec<OrderEvent>, OrderError> + Sync,
    ) -> Result<u64, CommandError> {
        let (clock, decide) = (&self.clock, &decide);
        let committed = self
            .runner()
            .run(|tx| {
                Box::pin(async move {
                    let order = tx.load::<Order>(&id.stream()).await?;
                    let events = decide(&order, clock.now())?;
                    Ok(tx.emit(&id.stream(), &events)?)
                })
            })
            .await?;
        Ok(committed.position)
    }

    /// The owner reads the code. The first read is the delivery: the hold is
    /// captured (and cashback credited) in the same append.
    pub async fn read_code(
        &self,
        id: OrderId,
        owner: Owner,
        via: DeliveryChannel,
    ) -> Result<CodeRead, CommandError> {
        let (policy, clock) = (&self.policy, &self.clock);
        let committed = self
            .runner()
            .run(|tx| {
                Box::pin(async move {
                    let now = clock.now();
                    let order = owned_order(&tx, id, owner).await?;
                    let events = order::read_code(&order, via, policy, now)?;
                    tx.emit(&id.stream(), &events)?;
                    if !events.is_empty() && order.delivered_at.is_none() {
                        emit_capture(&tx, &order, owner, id, policy, now).await?;
                    }
                    // What the owner reads, once the read is recorded.
                    let code = order.code.as_ref().ok_or(OrderError::NoCodeYet);
                    Ok(code.map(|code| match &code.code {
                        Personal::Plain(CodePii { code: value, text }) => Ok(CodeRead {
                            code: value.clone(),
                            text: text.clone(),
                            received_at: code.at,
                        }),
                        _ => Err(OrderError::CodeErased),
                    }))
                })
            })
            .await?;
        Ok(committed.value??)
    }

    /// Cancels and refunds in full, atomically. `owner` is `None` for the system
    /// (no upstream had a number).
    pub async fn cancel(
        &self,
        id: OrderId,
        owner: Option<Owner>,
        reason: CancelReason,
    ) -> Result<u64, CommandError> {
        self.cancel_keyed(id, owner, reason, None).await
    }

    /// [`Self::cancel`] with an idempotency key: a repeat of the same cancel
    /// answers as the first did; the key on another request is refused.
    pub async fn cancel_keyed(
        &self,
        id: OrderId,
        owner: Option<Owner>,
        reason: CancelReason,
        key: Option<&IdempotencyKey>,
    ) -> Result<u64, CommandError> {
        let reason_tag: &[u8] = match reason {
            CancelReason::Customer => b"customer",
            CancelReason::NoNumbers => b"no-numbers",
        };
        let fingerprint = fingerprint(&[b"cancel-order", id.0.as_bytes(), reason_tag]);
        let (policy, clock) = (&self.policy, &self.clock);
        let committed = self
            .runner()
            .run(|tx| {
                Box::pin(async move {
                    if replayed(&tx, key, &fingerprint).await?.is_some() {
                        return Ok(false);
                    }
                    let now = clock.now();
                    let order = match owner {
                        Some(owner) => owned_order(&tx, id, owner).await?,
                        None => tx.load::<Order>(&id.stream()).await?,
                    };
                    let placed = order.placed.as_ref().ok_or(OrderError::NotFound)?;
                    let events = order::cancel(&order, reason, policy, now)?;
                    let void_reason = match reason {
                        CancelReason::Customer => VoidReason::Cancelled,
                        CancelReason::NoNumbers => VoidReason::NoNumbers,
                    };
                    tx.emit(&id.stream(), &events)?;
                    emit_void(&tx, placed.owner, id, void_reason, now).await?;
                    emit_key_use(&tx, key, fingerprint, IdempotentResult::Order(id), now)?;
                    Ok(true)
                })
            })
            .await?;
        if committed.value {
            self.erase_due_codes(id).await?;
        }
        Ok(committed.position)
    }

    /// The owner completes a delivered order.
    pub async fn complete(&self, id: OrderId, owner: Owner) -> Result<u64, CommandError> {
        self.complete_keyed(id, owner, None).await
    }

    /// The owner is done with an order whose code came: a code not read yet is
    /// delivered first through `via` (it was used, so the hold is captured),
    /// then the order is completed. Errors as [`Self::complete`].
    pub async fn deliver_and_complete(
        &self,
        id: OrderId,
        owner: Owner,
        via: DeliveryChannel,
    ) -> Result<u64, CommandError> {
        if self.order(id).await?.status == Some(OrderStatus::CodeReceived) {
            match self.read_code(id, owner, via).await {
                // Delivered, completed or expired meanwhile: completing decides.
                Ok(_)
                | Err(ServiceError::Refused(CommerceError::Order(OrderError::CodeErased))) => {}
                Err(e) => return Err(e),
            }
        }
        self.complete(id, owner).await
    }

    /// [`Self::complete`] with an idempotency key.
    pub async fn complete_keyed(
        &self,
        id: OrderId,
        owner: Owner,
        key: Option<&IdempotencyKey>,
    ) -> Result<u64, CommandError> {
        let fingerprint = fingerprint(&[b"complete-order", id.0.as_bytes()]);
        let clock = &self.clock;
        let committed = self
            .runner()
            .run(|tx| {
                Box::pin(async move {
                    if replayed(&tx, key, &fingerprint).await?.is_some() {
                        return Ok(false);
                    }
                    let now = clock.now();
                    let order = owned_order(&tx, id, owner).await?;
                    let events = order::complete(&order, now)?;
                    tx.emit(&id.stream(), &events)?;
                    emit_key_use(&tx, key, fingerprint, IdempotentResult::Order(id), now)?;
                    Ok(true)
                })
            })
            .await?;
        if committed.value {
            self.erase_due_codes(id).await?;
        }
        Ok(committed.position)
    }

    /// Applies the order's deadlines now: expiry with a refund, completion of an
    /// unread code with a capture, completion after the delivery window; then
    /// erases the code keys that are due. Returns what happened.
    pub async fn process_deadline(&self, id: OrderId) -> Result<Timeout, CommandError> {
        let (policy, clock) = (&self.policy, &self.clock);
        let committed = self
            .runner()
            .run(|tx| {
                Box::pin(async move {
                    let now = clock.now();
                    let order = tx.load::<Order>(&id.stream()).await?;
                    let owner = order.placed.as_ref().ok_or(OrderError::NotFound)?.owner;
                    let timeout = order::on_deadline(&order, policy, now)?;
                    match &timeout {
                        Timeout::NotDue => {}
                        Timeout::ExpiredWithoutCode(events)
                        | Timeout::CompletedUnread(events)
                        | Timeout::CompletedAfterDelivery(events) => {
                            tx.emit(&id.stream(), events)?
                        }
                    }
                    match &timeout {
                        Timeout::ExpiredWithoutCode(_) => {
                            emit_void(&tx, owner, id, VoidReason::Expired, now).await?
                        }
                        Timeout::CompletedUnread(_) => {
                            emit_capture(&tx, &order, owner, id, policy, now).await?
                        }
                        Timeout::CompletedAfterDelivery(_) | Timeout::NotDue => {}
                    }
                    Ok(timeout)
                })
            })
            .await?;
        self.erase_due_codes(id).await?;
        Ok(committed.value)
    }

    /// Erases the keys of codes that are due (order final, or delivery window
    /// over), then records each erasure. The key goes first: a crash between the
    /// two leaves a code that is unreadable and is recorded on the next run.
    pub async fn erase_due_codes(&self, id: OrderId) -> Result<(), CommandError> {
        let (policy, clock, vault) = (&self.policy, &self.clock, &self.vault);
        self.runner()
            .run(|tx| {
                Box::pin(async move {
                    let order = tx.load::<Order>(&id.stream()).await?;
                    let events = order::codes_to_erase(&order, policy, clock.now());
                    for event in &events {
                        if let OrderEvent::OrderCodeErased(e) = event {
                            vault.erase(&order::code_subject(e.order, e.sequence))?;
                        }
                    }
                    Ok(tx.emit(&id.stream(), &events)?)
                })
            })
            .await?;
        Ok(())
    }

    /// Opens an invoice for a crypto deposit of `amount`.
    pub async fn request_deposit(
        &self,
        owner: Owner,
        amount: Micros,
    ) -> Result<DepositId, CommandError> {
        self.request_deposit_keyed(owner, amount, None).await
    }

    /// [`Self::request_deposit`] with an idempotency key: a repeat returns the
    /// first invoice's deposit.
    pub async fn request_deposit_keyed(
        &self,
        owner: Owner,
        amount: Micros,
        key: Option<&IdempotencyKey>,
    ) -> Result<DepositId, CommandError> {
        let owner_stream = owner.wallet_stream();
        let fingerprint = fingerprint(&[
            b"request-deposit",
            owner_stream.as_str().as_bytes(),
            &amount.0.to_be_bytes(),
        ]);
        let clock = &self.clock;
        let committed = self
            .runner()
            .run(|tx| {
                Box::pin(async move {
                    match replayed(&tx, key, &fingerprint).await? {
                        Some(IdempotentResult::Deposit(id)) => return Ok(id),
                        Some(IdempotentResult::Order(_)) => {
                            return Err(CommerceError::IdempotencyKeyReused.into())
                        }
                        None => {}
                    }
                    let id = DepositId::new();
                    let now = clock.now();
                    let account = match owner {
                        Owner::Account(account) => {
                            Some(tx.load::<Account>(&account.stream()).await?)
                        }
                        Owner::Anonymous(_) => None,
                    };
                    let events = decide::request_deposit(account.as_ref(), id, owner, amount, now)?;
                    tx.emit(&id.stream(), &events)?;
                    emit_key_use(&tx, key, fingerprint, IdempotentResult::Deposit(id), now)?;
                    Ok(id)
                })
            })
            .await?;
        Ok(committed.value)
    }

    pub async fn deposit(&self, id: DepositId) -> Result<Deposit, CommandError> {
        self.read(&id.stream()).await
    }

    /// Credits what the gateway's `report` adds for deposit `id` to the deposit's
    /// owner (see [`decide::record_payment`]): per gateway payment, never more
    /// than the greatest total reported for it. The deposit stream is read and
    /// written by every credit, so concurrent reports of one payment are
    /// decided one after the other.
    pub async fn record_payment(
        &self,
        id: DepositId,
        report: PaymentReport,
    ) -> Result<PaymentOutcome, CommandError> {
        let (clock, report) = (&self.clock, &report);
        let committed = self
            .runner()
            .run(|tx| {
                Box::pin(async move {
                    let guard_stream = report.transaction.stream();
                    let guard = tx.load::<PaymentGuard>(&guard_stream).await?;
                    let deposit = tx.load::<Deposit>(&id.stream()).await?;
                    let owner = deposit.requested.as_ref().map(|r| r.owner);
                    let wallet = match owner {
                        Some(owner) => tx.load::<Wallet>(&owner.wallet_stream()).await?,
                        None => Wallet::default(),
                    };
                    // A credit to an erased owner moves on to unclaimed
                    // balances; the owner is a condition, so an erasure
                    // recorded meanwhile makes this decide again.
                    let owner_erased = match owner {
                        Some(Owner::Account(account)) => {
                            let account = tx.load::<Account>(&account.stream()).await?;
                            account.erased_at.is_some()
                        }
                        Some(Owner::Anonymous(anon)) => {
                            let anon = tx.load::<Anonymous>(&anon.stream()).await?;
                            anon.erased_at.is_some()
                        }
                        None => false,
                    };
                    let decision = decide::record_payment_of(
                        owner_erased,
                        &guard,
                        &deposit,
                        &wallet,
                        id,
                        report,
                        clock.now(),
                    )?;
                    if let PaymentDecision::Credit {
                        owner,
                        guard,
                        deposit,
                        wallet,
                        ..
                    } = &decision
                    {
                        tx.emit(&guard_stream, guard)?;
                        tx.emit(&id.stream(), deposit)?;
                        tx.emit(&owner.wallet_stream(), wallet)?;
                    }
                    Ok(decision)
                })
            })
            .await?;
        match committed.value {
            PaymentDecision::AlreadyCredited => Ok(PaymentOutcome::AlreadyCredited),
            PaymentDecision::Credit { owner, amount, .. } => {
                if let Owner::Anonymous(anon) = owner {
                    self.start_after_payment(anon).await?;
                }
                Ok(PaymentOutcome::Credited {
                    amount,
                    position: committed.position,
                })
            }
        }
    }

    /// A paid anonymous invoice starts its order; a payment too small for it, or
    /// one for a buyer whose order is running, stays as credit.
    async fn start_after_payment(&self, anon: AnonymousId) -> Result<(), CommandError> {
        match self.start_anonymous_order(anon).await {
            Ok(_) => Ok(()),
            Err(ServiceError::Refused(
                CommerceError::Wallet(WalletError::InsufficientFunds { .. })
                | CommerceError::Anonymous(AnonymousError::OrderActive),
            )) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates an anonymous order: a tracking ID, and an invoice for the price.
    pub async fn create_anonymous_order(
        &self,
        request: &PlaceOrder,
    ) -> Result<AnonymousCreated, CommandError> {
        let tracking_id = TrackingId::generate().map_err(|_| StoreFault::Random)?;
        let anon = tracking_id.anonymous_id();
        let invoice = DepositId::new();
        let clock = &self.clock;
        self.runner()
            .run(|tx| {
                Box::pin(async move {
                    let now = clock.now();
                    let record = tx.load::<Anonymous>(&anon.stream()).await?;
                    let owner = Owner::Anonymous(anon);
                    let anon_events = anonymous::create(
                        &record,
                        anon,
                        invoice,
                        request.details(),
                        request.price,
                        now,
                    )?;
                    let deposit_events =
                        deposit::request(&Deposit::default(), invoice, owner, request.price, now)?;
                    tx.emit(&anon.stream(), &anon_events)?;
                    tx.emit(&invoice.stream(), &deposit_events)?;
                    Ok(())
                })
            })
            .await?;
        Ok(AnonymousCreated {
            tracking_id,
            anon,
            invoice,
        })
    }

    /// Starts an order with the buyer's credit: after the payment, or as a
    /// replacement once the last order failed (`reorder`).
    pub async fn start_anonymous_order(&self, anon: AnonymousId) -> Result<OrderId, CommandError> {
        let owner = Owner::Anonymous(anon);
        let (policy, clock) = (&self.policy, &self.clock);
        let committed = self
            .runner()
            .run(|tx| {
                Box::pin(async move {
                    let now = clock.now();
                    let record = tx.load::<Anonymous>(&anon.stream()).await?;
                    let current = current_order(&tx, &record).await?;
                    let wallet = tx.load::<Wallet>(&owner.wallet_stream()).await?;
                    let id = OrderId::new();
                    let (anon_events, placement) =
                        decide::start_anonymous_order(&record, &current, &wallet, id, policy, now)?;
                    tx.emit(&id.stream(), &placement.order)?;
                    tx.emit(&owner.wallet_stream(), &placement.wallet)?;
                    tx.emit(&anon.stream(), &anon_events)?;
                    Ok(id)
                })
            })
            .await?;
        Ok(committed.value)
    }

    /// Erases an anonymous buyer's personal data once it is due
    /// ([`anonymous::RETENTION_DAYS`] after creation, its last order over): the
    /// vault subject first (the order's details, the phone numbers), then the
    /// record of it. A crash between the two leaves data that is unreadable and
    /// is recorded on the next run. The buyer's money is not touched.
    pub async fn erase_anonymous(&self, anon: AnonymousId) -> Result<(), CommandError> {
        let (clock, vault) = (&self.clock, &self.vault);
        self.runner()
            .run(|tx| {
                Box::pin(async move {
                    let record = tx.load::<Anonymous>(&anon.stream()).await?;
                    let current = current_order(&tx, &record).await?;
                    let wallet_stream = Owner::Anonymous(anon).wallet_stream();
                    let wallet = tx.load::<Wallet>(&wallet_stream).await?;
                    let erasure = decide::erase_anonymous(&record, &current, &wallet, clock.now())?;
                    vault.erase(&anon.subject())?;
                    tx.emit(&wallet_stream, &erasure.wallet)?;
                    Ok(tx.emit(&anon.stream(), &erasure.record)?)
                })
            })
            .await?;
        tracing::info!(anon = %anon, "anonymous order data erased");
        Ok(())
    }

    /// Everything a tracking ID may see; nothing once its data was erased.
    pub async fn track(&self, tracking_id: &TrackingId) -> Result<Tracked, CommandError> {
        let anon = tracking_id.anonymous_id();
        let state = self.read::<Anonymous>(&anon.stream()).await?;
        if state.created.is_none() || state.erased_at.is_some() {
            return Err(AnonymousError::NotFound.into());
        }
        let mut orders = Vec::with_capacity(state.orders.len());
        for id in &state.orders {
            orders.push((*id, self.order(*id).await?));
        }
        let wallet = self.wallet(Owner::Anonymous(anon)).await?;
        Ok(Tracked {
            anon,
            state,
            orders,
            wallet,
        })
    }

    /// Records the gateway's final failure of an unpaid invoice.
    pub async fn fail_deposit(&self, id: DepositId, status: &str) -> Result<(), CommandError> {
        let clock = &self.clock;
        self.runner()
            .run(|tx| {
                Box::pin(async move {
                    let deposit = tx.load::<Deposit>(&id.stream()).await?;
                    let events = deposit::fail(&deposit, status, clock.now())?;
                    Ok(tx.emit(&id.stream(), &events)?)
                })
            })
            .await?;
        Ok(())
    }
}
