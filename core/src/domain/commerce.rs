//! Commands over orders, wallets and deposits: load the aggregates from the log,
//! decide with the pure functions, append every stream the decision touches in one
//! atomic append with expected versions. A conflict reloads and decides again, a
//! bounded number of times. No read model is consulted.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::account::{Account, AccountError, AccountStatus};
use super::accounts::{AccountServiceError, Accounts};
use super::anonymous::{self, Anonymous, AnonymousError, AnonymousEvent, TrackingId};
use super::clock::Clock;
use super::codec::{CodecError, DomainEvent, Personal};
use super::deposit::{
    self, Deposit, DepositError, DepositEvent, PaymentEvent, PaymentGuard, PaymentRecorded,
};
use super::idempotency::{
    fingerprint, IdempotencyEvent, IdempotencyKey, IdempotencyKeyUsed, IdempotencyRecord,
    IdempotentResult,
};
use super::ids::{AnonymousId, DepositId, OrderId};
use super::ledger::Owner;
use super::money::Micros;
use super::order::{
    self, CancelReason, Channel, CodePii, CountryCode, DeliveryChannel, Order, OrderDetails,
    OrderError, OrderEvent, OrderPolicy, OrderStatus, ServiceCode, Timeout,
};
use super::repo::{encode, load_cached, AggregateCache, LoadError, Loaded};
use super::wallet::{self, Payment, VoidReason, Wallet, WalletError, WalletEvent};
use crate::log::{AppendRequest, EventStore, ExpectedVersion, LogError, StreamName, StreamWrite};
use crate::vault::{Vault, VaultError};

/// Attempts at a command whose streams keep changing under it.
const MAX_ATTEMPTS: usize = 16;
/// Captured orders a deletion check looks at, newest first: older ones were
/// completed by their deadline long ago.
const MAX_CAPTURED_ORDERS_CHECKED: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error(transparent)]
    Wallet(#[from] WalletError),
    #[error(transparent)]
    Deposit(#[from] DepositError),
    #[error(transparent)]
    Anonymous(#[from] AnonymousError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("the system's random source failed")]
    Random,
    #[error("this idempotency key was used for another request")]
    IdempotencyKeyReused,
    #[error("the streams of this command kept changing; try again")]
    Contention,
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// What a customer asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaceOrder {
    pub service: ServiceCode,
    pub country: CountryCode,
    pub channel: Channel,
    /// The sell price, from the catalog.
    pub price: Micros,
}

impl PlaceOrder {
    fn details(&self) -> OrderDetails {
        OrderDetails {
            service: self.service.clone(),
            country: self.country,
            channel: self.channel,
        }
    }

    fn fingerprint(&self, owner: Owner) -> [u8; 32] {
        let owner = owner.wallet_stream();
        let channel: &[u8] = match self.channel {
            Channel::Sms => b"sms",
            Channel::Voice => b"voice",
        };
        fingerprint(&[
            b"place-order",
            owner.as_str().as_bytes(),
            self.service.as_str().as_bytes(),
            self.country.as_str().as_bytes(),
            channel,
            &self.price.0.to_be_bytes(),
        ])
    }
}

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

/// Whether a customer has active orders, as of a wallet version: a deletion
/// request is decided on it and appended on condition that the wallet has not
/// moved since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletionGuard {
    active: bool,
    wallet: StreamName,
    version: u64,
}

impl DeletionGuard {
    pub fn has_active_orders(&self) -> bool {
        self.active
    }

    /// The condition write: the wallet is still at the version checked.
    pub(crate) fn condition(&self) -> StreamWrite {
        StreamWrite {
            stream: self.wallet.clone(),
            expected: ExpectedVersion::Exact(self.version),
            events: Vec::new(),
        }
    }

    pub(crate) async fn holds<S: EventStore>(&self, store: &S) -> Result<bool, LogError> {
        Ok(store.stream_version(&self.wallet).await? == self.version)
    }
}

/// Requests an account's deletion, refused while it has active orders, race-free
/// against orders placed meanwhile (see [`DeletionGuard`]).
pub async fn request_account_deletion<S: EventStore>(
    commerce: &Commerce<S>,
    accounts: &Accounts<S>,
    account: super::ids::AccountId,
) -> Result<(), AccountServiceError> {
    for _ in 0..MAX_ATTEMPTS {
        let guard = commerce
            .deletion_guard(Owner::Account(account))
            .await
            .map_err(|e| AccountServiceError::OrderCheck(Box::new(e)))?;
        match accounts.request_deletion(account, &guard).await {
            Err(AccountServiceError::StaleGuard) => continue,
            other => return other,
        }
    }
    Err(AccountServiceError::Contention {
        attempts: MAX_ATTEMPTS,
    })
}

/// What a payment did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentOutcome {
    Credited {
        amount: Micros,
        position: u64,
    },
    /// This transaction was credited before (a retried webhook): nothing changed.
    AlreadyCredited,
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

/// One stream's part of an append, before encoding.
struct Write {
    stream: StreamName,
    expected: ExpectedVersion,
    events: Vec<crate::log::NewEvent>,
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

    async fn load<A>(&self, stream: &StreamName) -> Result<Loaded<A>, CommandError>
    where
        A: super::aggregate::Aggregate + Clone + Send + Sync + 'static,
        A::Event: DomainEvent,
    {
        Ok(load_cached(&*self.store, &self.vault, stream, &self.folded).await?)
    }

    fn write<E: DomainEvent>(
        &self,
        stream: StreamName,
        expected: u64,
        events: &[E],
    ) -> Result<Write, CommandError> {
        Ok(Write {
            stream,
            expected: ExpectedVersion::Exact(expected),
            events: encode(events, &self.vault)?,
        })
    }

    /// Appends; `Ok(None)` on a version conflict (the caller decides again).
    async fn append(&self, writes: Vec<Write>) -> Result<Option<u64>, CommandError> {
        self.append_with(writes, Vec::new()).await
    }

    /// Appends the writes that have events, and the conditions (writes without
    /// events that only check a stream's version).
    async fn append_with(
        &self,
        writes: Vec<Write>,
        conditions: Vec<StreamWrite>,
    ) -> Result<Option<u64>, CommandError> {
        let mut writes: Vec<StreamWrite> = writes
            .into_iter()
            .filter(|w| !w.events.is_empty())
            .map(|w| StreamWrite {
                stream: w.stream,
                expected: w.expected,
                events: w.events,
            })
            .collect();
        if writes.is_empty() {
            return Ok(Some(self.store.head()));
        }
        writes.extend(conditions);
        let request = AppendRequest {
            writes,
            ..AppendRequest::default()
        };
        match self.store.append(request).await {
            Ok(outcome) => Ok(Some(outcome.last_position())),
            Err(LogError::WrongExpectedVersion { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `owner` has active orders: an open hold, or a captured order that
    /// is not final yet (delivered, not completed).
    pub async fn deletion_guard(&self, owner: Owner) -> Result<DeletionGuard, CommandError> {
        let wallet = self.load::<Wallet>(&owner.wallet_stream()).await?;
        let mut active = !wallet.state.holds.is_empty();
        for id in wallet
            .state
            .captured
            .iter()
            .rev()
            .take(MAX_CAPTURED_ORDERS_CHECKED)
        {
            if active {
                break;
            }
            active = !self.order(*id).await?.status.is_some_and(|s| s.is_final());
        }
        Ok(DeletionGuard {
            active,
            wallet: owner.wallet_stream(),
            version: wallet.version,
        })
    }

    /// For a registered customer, a condition on the account stream: it must be
    /// active now and still at this version when the order is appended.
    async fn account_condition(&self, owner: Owner) -> Result<Option<StreamWrite>, CommandError> {
        let Owner::Account(id) = owner else {
            return Ok(None);
        };
        let account = self.load::<Account>(&id.stream()).await?;
        match account.state.status {
            AccountStatus::Active => {}
            AccountStatus::Unregistered => return Err(AccountError::AccountNotFound.into()),
            AccountStatus::DeletionPending { .. } => {
                return Err(AccountError::AccountDisabled.into())
            }
        }
        Ok(Some(StreamWrite {
            stream: id.stream(),
            expected: ExpectedVersion::Exact(account.version),
            events: Vec::new(),
        }))
    }

    pub async fn wallet(&self, owner: Owner) -> Result<Wallet, CommandError> {
        Ok(self.load::<Wallet>(&owner.wallet_stream()).await?.state)
    }

    pub async fn order(&self, order: OrderId) -> Result<Order, CommandError> {
        Ok(self.load::<Order>(&order.stream()).await?.state)
    }

    /// The first use of an idempotency key, if it was used: for callers that
    /// derive keys themselves and must know whether one is taken.
    pub async fn idempotency_key_use(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyKeyUsed>, CommandError> {
        Ok(self
            .load::<IdempotencyRecord>(key.stream())
            .await?
            .state
            .used)
    }

    /// The order, if `owner` owns it; another owner's order does not exist for them.
    async fn owned_order(&self, id: OrderId, owner: Owner) -> Result<Loaded<Order>, CommandError> {
        let loaded = self.load::<Order>(&id.stream()).await?;
        match &loaded.state.placed {
            Some(placed) if placed.owner == owner => Ok(loaded),
            _ => Err(OrderError::NotFound.into()),
        }
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
        for _ in 0..MAX_ATTEMPTS {
            match self.replayed(key, &fingerprint).await? {
                Some(IdempotentResult::Order(order)) => {
                    return Ok(Placed {
                        order,
                        replayed: true,
                        position: self.store.head(),
                    });
                }
                Some(_) => return Err(CommandError::IdempotencyKeyReused),
                None => {}
            }
            let now = self.clock.now();
            let id = OrderId::new();
            let account = self.account_condition(owner).await?;
            let wallet = self.load::<Wallet>(&owner.wallet_stream()).await?;
            let order_events = order::place(
                &Order::default(),
                id,
                owner,
                request.service.clone(),
                request.country,
                request.channel,
                request.price,
                &self.policy,
                now,
            )?;
            let wallet_events = wallet::place_hold(&wallet.state, owner, id, request.price, now)?;
            let mut writes = vec![
                self.write(id.stream(), 0, &order_events)?,
                self.write(owner.wallet_stream(), wallet.version, &wallet_events)?,
            ];
            writes.extend(self.key_write(key, fingerprint, IdempotentResult::Order(id), now)?);
            if let Some(position) = self
                .append_with(writes, account.into_iter().collect())
                .await?
            {
                return Ok(Placed {
                    order: id,
                    replayed: false,
                    position,
                });
            }
        }
        Err(CommandError::Contention)
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
        self.owned_order(id, owner).await?;
        self.order_only(id, order::request_resend).await
    }

    /// A decision that touches the order's stream only.
    async fn order_only(
        &self,
        id: OrderId,
        decide: impl Fn(&Order, DateTime<Utc>) -> Result<Vec<OrderEvent>, OrderError>,
    ) -> Result<u64, CommandError> {
        for _ in 0..MAX_ATTEMPTS {
            let order = self.load::<Order>(&id.stream()).await?;
            let events = decide(&order.state, self.clock.now())?;
            if let Some(position) = self
                .append(vec![self.write(id.stream(), order.version, &events)?])
                .await?
            {
                return Ok(position);
            }
        }
        Err(CommandError::Contention)
    }

    /// The owner reads the code. The first read is the delivery: the hold is
    /// captured (and cashback credited) in the same append.
    pub async fn read_code(
        &self,
        id: OrderId,
        owner: Owner,
        via: DeliveryChannel,
    ) -> Result<CodeRead, CommandError> {
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now();
            let order = self.owned_order(id, owner).await?;
            let events = order::read_code(&order.state, via, &self.policy, now)?;
            let mut writes = vec![self.write(id.stream(), order.version, &events)?];
            if !events.is_empty() && order.state.delivered_at.is_none() {
                match self.capture_write(&order.state, owner, id, now).await {
                    Ok(write) => writes.push(write),
                    Err(e) if self.stale(&id.stream(), order.version).await? => {
                        tracing::debug!(error = %e, "order changed while deciding; again");
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            if self.append(writes).await?.is_some() {
                let code = order.state.code.as_ref().ok_or(OrderError::NoCodeYet)?;
                return match &code.code {
                    Personal::Plain(CodePii { code: value, text }) => Ok(CodeRead {
                        code: value.clone(),
                        text: text.clone(),
                        received_at: code.at,
                    }),
                    _ => Err(OrderError::CodeErased.into()),
                };
            }
        }
        Err(CommandError::Contention)
    }

    /// True when `stream` moved past `version`: a decision that failed against
    /// another stream may have used a stale snapshot of this one.
    async fn stale(&self, stream: &StreamName, version: u64) -> Result<bool, CommandError> {
        Ok(self.store.stream_version(stream).await? != version)
    }

    async fn capture_write(
        &self,
        order: &Order,
        owner: Owner,
        id: OrderId,
        now: DateTime<Utc>,
    ) -> Result<Write, CommandError> {
        let wallet = self.load::<Wallet>(&owner.wallet_stream()).await?;
        let cost = order
            .assigned
            .as_ref()
            .map_or(Micros::ZERO, |a| a.provider_cost);
        let events = wallet::capture(&wallet.state, owner, id, cost, self.policy.cashback_bp, now)?;
        self.write(owner.wallet_stream(), wallet.version, &events)
    }

    async fn void_write(
        &self,
        owner: Owner,
        id: OrderId,
        reason: VoidReason,
        now: DateTime<Utc>,
    ) -> Result<Write, CommandError> {
        let wallet = self.load::<Wallet>(&owner.wallet_stream()).await?;
        let events = wallet::void(&wallet.state, owner, id, reason, now)?;
        self.write(owner.wallet_stream(), wallet.version, &events)
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
        for _ in 0..MAX_ATTEMPTS {
            if self.replayed(key, &fingerprint).await?.is_some() {
                return Ok(self.store.head());
            }
            let now = self.clock.now();
            let order = match owner {
                Some(owner) => self.owned_order(id, owner).await?,
                None => self.load::<Order>(&id.stream()).await?,
            };
            let placed = order.state.placed.as_ref().ok_or(OrderError::NotFound)?;
            let events = order::cancel(&order.state, reason, &self.policy, now)?;
            let void_reason = match reason {
                CancelReason::Customer => VoidReason::Cancelled,
                CancelReason::NoNumbers => VoidReason::NoNumbers,
            };
            let void = match self.void_write(placed.owner, id, void_reason, now).await {
                Err(_) if self.stale(&id.stream(), order.version).await? => continue,
                other => other?,
            };
            let mut writes = vec![self.write(id.stream(), order.version, &events)?, void];
            writes.extend(self.key_write(key, fingerprint, IdempotentResult::Order(id), now)?);
            if let Some(position) = self.append(writes).await? {
                self.erase_due_codes(id).await?;
                return Ok(position);
            }
        }
        Err(CommandError::Contention)
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
                Ok(_) | Err(CommandError::Order(OrderError::CodeErased)) => {}
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
        for _ in 0..MAX_ATTEMPTS {
            if self.replayed(key, &fingerprint).await?.is_some() {
                return Ok(self.store.head());
            }
            let now = self.clock.now();
            let order = self.owned_order(id, owner).await?;
            let events = order::complete(&order.state, now)?;
            let mut writes = vec![self.write(id.stream(), order.version, &events)?];
            writes.extend(self.key_write(key, fingerprint, IdempotentResult::Order(id), now)?);
            if let Some(position) = self.append(writes).await? {
                self.erase_due_codes(id).await?;
                return Ok(position);
            }
        }
        Err(CommandError::Contention)
    }

    /// With a key: the result of its first use if that was this same request
    /// (`Some`), nothing if unused (`None`); the key on another request is an error.
    async fn replayed(
        &self,
        key: Option<&IdempotencyKey>,
        fingerprint: &[u8; 32],
    ) -> Result<Option<IdempotentResult>, CommandError> {
        let Some(key) = key else { return Ok(None) };
        let record = self.load::<IdempotencyRecord>(key.stream()).await?.state;
        match record.used {
            None => Ok(None),
            Some(used) if used.fingerprint == *fingerprint => Ok(Some(used.result)),
            Some(_) => Err(CommandError::IdempotencyKeyReused),
        }
    }

    /// The key's record, appended with `NoStream` beside the command's events.
    fn key_write(
        &self,
        key: Option<&IdempotencyKey>,
        fingerprint: [u8; 32],
        result: IdempotentResult,
        at: DateTime<Utc>,
    ) -> Result<Option<Write>, CommandError> {
        let Some(key) = key else { return Ok(None) };
        let used = IdempotencyEvent::IdempotencyKeyUsed(IdempotencyKeyUsed {
            fingerprint,
            result,
            at,
        });
        Ok(Some(self.write(key.stream().clone(), 0, &[used])?))
    }

    /// Applies the order's deadlines now: expiry with a refund, completion of an
    /// unread code with a capture, completion after the delivery window; then
    /// erases the code keys that are due. Returns what happened.
    pub async fn process_deadline(&self, id: OrderId) -> Result<Timeout, CommandError> {
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now();
            let order = self.load::<Order>(&id.stream()).await?;
            let placed = order.state.placed.as_ref().ok_or(OrderError::NotFound)?;
            let owner = placed.owner;
            let timeout = order::on_deadline(&order.state, &self.policy, now)?;
            let money = match &timeout {
                Timeout::ExpiredWithoutCode(_) => {
                    Some(self.void_write(owner, id, VoidReason::Expired, now).await)
                }
                Timeout::CompletedUnread(_) => {
                    Some(self.capture_write(&order.state, owner, id, now).await)
                }
                Timeout::CompletedAfterDelivery(_) | Timeout::NotDue => None,
            };
            let money = match money {
                Some(Err(_)) if self.stale(&id.stream(), order.version).await? => continue,
                other => other.transpose()?,
            };
            let writes = match &timeout {
                Timeout::NotDue => vec![],
                Timeout::ExpiredWithoutCode(events)
                | Timeout::CompletedUnread(events)
                | Timeout::CompletedAfterDelivery(events) => {
                    std::iter::once(self.write(id.stream(), order.version, events)?)
                        .chain(money)
                        .collect()
                }
            };
            if self.append(writes).await?.is_some() {
                self.erase_due_codes(id).await?;
                return Ok(timeout);
            }
        }
        Err(CommandError::Contention)
    }

    /// Erases the keys of codes that are due (order final, or delivery window
    /// over), then records each erasure. The key goes first: a crash between the
    /// two leaves a code that is unreadable and is recorded on the next run.
    pub async fn erase_due_codes(&self, id: OrderId) -> Result<(), CommandError> {
        for _ in 0..MAX_ATTEMPTS {
            let order = self.load::<Order>(&id.stream()).await?;
            let events = order::codes_to_erase(&order.state, &self.policy, self.clock.now());
            if events.is_empty() {
                return Ok(());
            }
            for event in &events {
                if let OrderEvent::OrderCodeErased(e) = event {
                    self.vault
                        .erase(&order::code_subject(e.order, e.sequence))?;
                }
            }
            if self
                .append(vec![self.write(id.stream(), order.version, &events)?])
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(CommandError::Contention)
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
        for _ in 0..MAX_ATTEMPTS {
            match self.replayed(key, &fingerprint).await? {
                Some(IdempotentResult::Deposit(id)) => return Ok(id),
                Some(_) => return Err(CommandError::IdempotencyKeyReused),
                None => {}
            }
            let id = DepositId::new();
            let now = self.clock.now();
            let events = deposit::request(&Deposit::default(), id, owner, amount, now)?;
            let mut writes = vec![self.write(id.stream(), 0, &events)?];
            writes.extend(self.key_write(key, fingerprint, IdempotentResult::Deposit(id), now)?);
            if self.append(writes).await?.is_some() {
                return Ok(id);
            }
        }
        Err(CommandError::Contention)
    }

    pub async fn deposit(&self, id: DepositId) -> Result<Deposit, CommandError> {
        Ok(self.load::<Deposit>(&id.stream()).await?.state)
    }

    /// Credits a confirmed payment of `paid` (USD, as the gateway reports it) to the
    /// deposit's owner, exactly once per (network, tx hash): the payment's guard
    /// stream is appended with `NoStream` in the same append as the credit.
    pub async fn record_payment(
        &self,
        id: DepositId,
        payment: Payment,
        paid: Micros,
    ) -> Result<PaymentOutcome, CommandError> {
        for _ in 0..MAX_ATTEMPTS {
            let guard = self.load::<PaymentGuard>(&payment.stream()).await?;
            if guard.state.recorded.is_some() {
                return Ok(PaymentOutcome::AlreadyCredited);
            }
            let now = self.clock.now();
            let deposit = self.load::<Deposit>(&id.stream()).await?;
            let requested = deposit
                .state
                .requested
                .clone()
                .ok_or(DepositError::NotFound)?;
            let wallet = self
                .load::<Wallet>(&requested.owner.wallet_stream())
                .await?;
            let deposit_events = deposit::pay(&deposit.state, payment.clone(), paid, now)?;
            let late = now > requested.expires_at;
            let wallet_events = wallet::credit_deposit(
                &wallet.state,
                requested.owner,
                id,
                payment.clone(),
                requested.amount,
                paid,
                late,
                now,
            )?;
            let guard_event = PaymentEvent::PaymentRecorded(PaymentRecorded {
                payment: payment.clone(),
                deposit: id,
                at: now,
            });
            let writes = vec![
                self.write(payment.stream(), 0, &[guard_event])?,
                self.write(id.stream(), deposit.version, &deposit_events)?,
                self.write(
                    requested.owner.wallet_stream(),
                    wallet.version,
                    &wallet_events,
                )?,
            ];
            if let Some(position) = self.append(writes).await? {
                if let Owner::Anonymous(anon) = requested.owner {
                    self.start_after_payment(anon).await?;
                }
                return Ok(PaymentOutcome::Credited {
                    amount: paid,
                    position,
                });
            }
        }
        Err(CommandError::Contention)
    }

    /// A paid anonymous invoice starts its order; a payment too small for it, or
    /// one for a buyer whose order is running, stays as credit.
    async fn start_after_payment(&self, anon: AnonymousId) -> Result<(), CommandError> {
        match self.start_anonymous_order(anon).await {
            Ok(_) => Ok(()),
            Err(CommandError::Wallet(WalletError::InsufficientFunds { .. }))
            | Err(CommandError::Anonymous(AnonymousError::OrderActive)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates an anonymous order: a tracking ID, and an invoice for the price.
    pub async fn create_anonymous_order(
        &self,
        request: &PlaceOrder,
    ) -> Result<AnonymousCreated, CommandError> {
        let tracking_id = TrackingId::generate().map_err(|_| CommandError::Random)?;
        let anon = tracking_id.anonymous_id();
        let invoice = DepositId::new();
        let now = self.clock.now();
        let anon_events = anonymous::create(
            &Anonymous::default(),
            anon,
            invoice,
            request.details(),
            request.price,
            now,
        )?;
        let deposit_events = deposit::request(
            &Deposit::default(),
            invoice,
            Owner::Anonymous(anon),
            request.price,
            now,
        )?;
        let writes = vec![
            self.write(anon.stream(), 0, &anon_events)?,
            self.write(invoice.stream(), 0, &deposit_events)?,
        ];
        match self.append(writes).await? {
            Some(_) => Ok(AnonymousCreated {
                tracking_id,
                anon,
                invoice,
            }),
            None => Err(CommandError::Contention),
        }
    }

    /// Starts an order with the buyer's credit: after the payment, or as a
    /// replacement once the last order failed (`reorder`).
    pub async fn start_anonymous_order(&self, anon: AnonymousId) -> Result<OrderId, CommandError> {
        let owner = Owner::Anonymous(anon);
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now();
            let record = self.load::<Anonymous>(&anon.stream()).await?;
            let created = record
                .state
                .created
                .as_ref()
                .ok_or(AnonymousError::NotFound)?;
            let details = created
                .details
                .plain()
                .ok_or(AnonymousError::Erased)?
                .clone();
            let current_is_final = match record.state.orders.last() {
                Some(last) => self
                    .order(*last)
                    .await?
                    .status
                    .is_some_and(|s| s.is_final()),
                None => true,
            };
            let id = OrderId::new();
            let anon_events: Vec<AnonymousEvent> =
                anonymous::start(&record.state, id, current_is_final, now)?;
            let wallet = self.load::<Wallet>(&owner.wallet_stream()).await?;
            let order_events = order::place(
                &Order::default(),
                id,
                owner,
                details.service,
                details.country,
                details.channel,
                created.price,
                &self.policy,
                now,
            )?;
            let wallet_events = wallet::place_hold(&wallet.state, owner, id, created.price, now)?;
            let writes = vec![
                self.write(id.stream(), 0, &order_events)?,
                self.write(owner.wallet_stream(), wallet.version, &wallet_events)?,
                self.write(anon.stream(), record.version, &anon_events)?,
            ];
            if self.append(writes).await?.is_some() {
                return Ok(id);
            }
        }
        Err(CommandError::Contention)
    }

    /// Erases an anonymous buyer's personal data once it is due
    /// ([`anonymous::RETENTION_DAYS`] after creation, its last order over): the
    /// vault subject first (the order's details, the phone numbers), then the
    /// record of it. A crash between the two leaves data that is unreadable and
    /// is recorded on the next run. The buyer's money is not touched.
    pub async fn erase_anonymous(&self, anon: AnonymousId) -> Result<(), CommandError> {
        for _ in 0..MAX_ATTEMPTS {
            let record = self.load::<Anonymous>(&anon.stream()).await?;
            let current_is_final = match record.state.orders.last() {
                Some(last) => self.order(*last).await?.status.is_none_or(|s| s.is_final()),
                None => true,
            };
            let events =
                anonymous::decide_erase(&record.state, current_is_final, self.clock.now())?;
            self.vault.erase(&anon.subject())?;
            if self
                .append(vec![self.write(anon.stream(), record.version, &events)?])
                .await?
                .is_some()
            {
                tracing::info!(anon = %anon, "anonymous order data erased");
                return Ok(());
            }
        }
        Err(CommandError::Contention)
    }

    /// Everything a tracking ID may see; nothing once its data was erased.
    pub async fn track(&self, tracking_id: &TrackingId) -> Result<Tracked, CommandError> {
        let anon = tracking_id.anonymous_id();
        let state = self.load::<Anonymous>(&anon.stream()).await?.state;
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
        for _ in 0..MAX_ATTEMPTS {
            let deposit = self.load::<Deposit>(&id.stream()).await?;
            let events: Vec<DepositEvent> =
                deposit::fail(&deposit.state, status, self.clock.now())?;
            if self
                .append(vec![self.write(id.stream(), deposit.version, &events)?])
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(CommandError::Contention)
    }
}

/// Every wallet event in a stream of the log posts balanced entries; this sums
/// them (tests and the audit use it).
pub fn post_all(
    balances: &mut super::ledger::Balances,
    events: &[WalletEvent],
) -> Result<(), super::money::MoneyError> {
    for event in events {
        for entry in event.entries() {
            balances.post(&entry)?;
        }
    }
    Ok(())
}
