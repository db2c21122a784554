//! Decisions that read several aggregates: an order and the wallet that pays
//! for it, a payment and the deposit and wallet it credits, an anonymous
//! buyer's next order, whether a customer's orders allow a deletion. Pure like
//! every decision: states in, events per stream out; the commerce service loads
//! the states and appends the events in one atomic append.

use chrono::{DateTime, Utc};

use super::account::{decide_erase_account, Account, AccountError, AccountEvent};
use super::aggregate::Aggregate;
use super::anonymous::{self, Anonymous, AnonymousError, AnonymousEvent};
use super::deposit::{
    self, Deposit, DepositError, DepositEvent, PaymentEvent, PaymentGuard, PaymentRecorded,
    PaymentReport,
};
use super::idempotency::{
    fingerprint, IdempotencyKey, IdempotencyKeyUsed, IdempotentResult, KeyReused,
};
use super::ids::{DepositId, OrderId};
use super::ledger::Owner;
use super::money::Micros;
use super::order::{
    self, Channel, CountryCode, Order, OrderDetails, OrderError, OrderEvent, OrderPolicy,
    ServiceCode,
};
use super::wallet::{self, Wallet, WalletError, WalletEvent};

/// Captured orders a deletion check looks at, newest first: older ones were
/// completed by their deadline long ago.
pub const MAX_CAPTURED_ORDERS_CHECKED: usize = 1000;

/// Why a commerce decision was refused: the refusal of the aggregate that
/// refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommerceError {
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
    #[error("this idempotency key was used for another request")]
    IdempotencyKeyReused,
}

impl From<KeyReused> for CommerceError {
    fn from(_: KeyReused) -> Self {
        CommerceError::IdempotencyKeyReused
    }
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
    pub fn details(&self) -> OrderDetails {
        OrderDetails {
            service: self.service.clone(),
            country: self.country,
            channel: self.channel,
        }
    }

    /// What an idempotency key remembers of this request by `owner`.
    pub fn fingerprint(&self, owner: Owner) -> [u8; 32] {
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

/// A new order and the hold of its price: two streams, one append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub order: Vec<OrderEvent>,
    pub wallet: Vec<WalletEvent>,
}

/// Places order `id` for `owner` and holds its price on the owner's wallet.
/// `account` is the owner's account, for a registered customer.
pub fn place_order(
    account: Option<&Account>,
    wallet: &Wallet,
    id: OrderId,
    owner: Owner,
    request: &PlaceOrder,
    policy: &OrderPolicy,
    now: DateTime<Utc>,
) -> Result<Placement, CommerceError> {
    if let Some(account) = account {
        account.trusted()?;
    }
    let details = request.details();
    let order = order::place(
        &Order::default(),
        id,
        owner,
        details.service,
        details.country,
        details.channel,
        request.price,
        policy,
        now,
    )?;
    let wallet = wallet::place_hold(wallet, owner, id, request.price, now)?;
    Ok(Placement { order, wallet })
}

/// Opens invoice `id` for `amount` into `owner`'s wallet. `account` is the
/// owner's account, for a registered customer: it must be enabled and have
/// verified an address.
pub fn request_deposit(
    account: Option<&Account>,
    id: DepositId,
    owner: Owner,
    amount: Micros,
    now: DateTime<Utc>,
) -> Result<Vec<DepositEvent>, CommerceError> {
    if let Some(account) = account {
        account.trusted()?;
    }
    Ok(deposit::request(
        &Deposit::default(),
        id,
        owner,
        amount,
        now,
    )?)
}

/// An anonymous buyer's next order, paid from their credit: the record of it,
/// the order and its hold. `current` is the buyer's last order (the default
/// when there is none).
pub fn start_anonymous_order(
    record: &Anonymous,
    current: &Order,
    wallet: &Wallet,
    id: OrderId,
    policy: &OrderPolicy,
    now: DateTime<Utc>,
) -> Result<(Vec<AnonymousEvent>, Placement), CommerceError> {
    let created = record.created.as_ref().ok_or(AnonymousError::NotFound)?;
    let details = created
        .details
        .plain()
        .ok_or(AnonymousError::Erased)?
        .clone();
    let anon = anonymous::start(record, id, current, now)?;
    let owner = Owner::Anonymous(created.anon);
    let request = PlaceOrder {
        service: details.service,
        country: details.country,
        channel: details.channel,
        price: created.price,
    };
    let placement = place_order(None, wallet, id, owner, &request, policy, now)?;
    Ok((anon, placement))
}

/// What a confirmed payment does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentDecision {
    /// The report adds nothing to what was credited (a re-sent or reordered
    /// notification), or its transaction was credited to another deposit.
    AlreadyCredited,
    /// The credit of `amount`: the transaction's guard (when it is new), the
    /// deposit and the owner's wallet.
    Credit {
        owner: Owner,
        amount: Micros,
        guard: Vec<PaymentEvent>,
        deposit: Vec<DepositEvent>,
        wallet: Vec<WalletEvent>,
    },
}

/// Credits what `report` adds for deposit `id` to its owner's `wallet`: per
/// gateway payment, the total credited is the greatest total the gateway
/// reported for it, so each report credits only its increase and one that adds
/// nothing credits nothing, in whatever order and however often reports come.
/// `guard` is the report's transaction: one credited to another deposit
/// credits nothing here. A payment after the invoice expired is credited all
/// the same, marked late.
pub fn record_payment(
    guard: &PaymentGuard,
    deposit: &Deposit,
    wallet: &Wallet,
    id: DepositId,
    report: &PaymentReport,
    now: DateTime<Utc>,
) -> Result<PaymentDecision, CommerceError> {
    if guard.recorded.as_ref().is_some_and(|r| r.deposit != id) {
        return Ok(PaymentDecision::AlreadyCredited);
    }
    let requested = deposit.requested.as_ref().ok_or(DepositError::NotFound)?;
    let due = requested
        .amount
        .strict_sub(deposit.credited_for(&report.gateway_payment));
    let deposit_events = deposit::pay(deposit, report, now)?;
    let Some(DepositEvent::DepositPaid(paid)) = deposit_events.first() else {
        return Ok(PaymentDecision::AlreadyCredited);
    };
    let amount = paid.paid;
    let late = now > requested.expires_at;
    let wallet_events = wallet::credit_deposit(
        wallet,
        requested.owner,
        id,
        report.transaction.clone(),
        due,
        amount,
        late,
        now,
    )?;
    let guard_events = match guard.recorded {
        Some(_) => vec![],
        None => vec![PaymentEvent::PaymentRecorded(PaymentRecorded {
            payment: report.transaction.clone(),
            deposit: id,
            at: now,
        })],
    };
    Ok(PaymentDecision::Credit {
        owner: requested.owner,
        amount,
        guard: guard_events,
        deposit: deposit_events,
        wallet: wallet_events,
    })
}

/// Like [`record_payment`], knowing whether the deposit's owner (an account
/// or an anonymous buyer) was erased: a credit that reaches an erased owner
/// moves on to unclaimed balances in the same append, since nobody can spend
/// it any more.
#[allow(clippy::too_many_arguments)]
pub fn record_payment_of(
    owner_erased: bool,
    guard: &PaymentGuard,
    deposit: &Deposit,
    wallet: &Wallet,
    id: DepositId,
    report: &PaymentReport,
    now: DateTime<Utc>,
) -> Result<PaymentDecision, CommerceError> {
    let mut decision = record_payment(guard, deposit, wallet, id, report, now)?;
    if let (
        true,
        PaymentDecision::Credit {
            owner,
            wallet: events,
            ..
        },
    ) = (owner_erased, &mut decision)
    {
        let mut after = wallet.clone();
        events.iter().for_each(|e| after.apply(e));
        events.extend(wallet::unclaim_available(&after, *owner, now));
    }
    Ok(decision)
}

/// A subject's erasure (an account's, or an anonymous buyer's): its record,
/// and the move of its wallet's available balance to unclaimed balances. One
/// append, so the money moves exactly when the erasure is recorded: once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erasure<E> {
    /// The subject's events (`AccountErased`, `AnonymousDataErased`).
    pub record: Vec<E>,
    pub wallet: Vec<WalletEvent>,
}

/// Erases `account` (see [`decide_erase_account`]) and moves what its
/// `wallet` has available to unclaimed balances: whatever is there at the
/// erasure, including money that arrived after the deletion was requested.
pub fn erase_account(
    account: &Account,
    wallet: &Wallet,
    now: DateTime<Utc>,
) -> Result<Erasure<AccountEvent>, AccountError> {
    let account_events = decide_erase_account(account, now)?;
    let owner = Owner::Account(account.id.ok_or(AccountError::AccountNotFound)?);
    Ok(Erasure {
        record: account_events,
        wallet: wallet::unclaim_available(wallet, owner, now),
    })
}

/// Erases an anonymous buyer's data once due (see [`anonymous::decide_erase`])
/// and moves what its `wallet` has available to unclaimed balances: nobody can
/// spend that credit once the tracking ID finds nothing.
pub fn erase_anonymous(
    state: &Anonymous,
    current: &Order,
    wallet: &Wallet,
    now: DateTime<Utc>,
) -> Result<Erasure<AnonymousEvent>, AnonymousError> {
    let anonymous = anonymous::decide_erase(state, current, now)?;
    let owner = Owner::Anonymous(state.created.as_ref().ok_or(AnonymousError::NotFound)?.anon);
    Ok(Erasure {
        record: anonymous,
        wallet: wallet::unclaim_available(wallet, owner, now),
    })
}

/// The captured orders of a wallet that may still be active, newest first: a
/// delivered order completes by itself at the end of the delivery window, so
/// only the newest ones can be.
pub fn captured_to_check(wallet: &Wallet) -> impl Iterator<Item = OrderId> + '_ {
    wallet
        .captured
        .iter()
        .rev()
        .take(MAX_CAPTURED_ORDERS_CHECKED)
        .copied()
}

/// Every order of a wallet that may be active: each open hold's, then the
/// captured ones of [`captured_to_check`]. The one list a deletion check and an
/// active-orders listing read.
pub fn active_order_candidates(wallet: &Wallet) -> impl Iterator<Item = OrderId> + '_ {
    wallet
        .holds
        .keys()
        .copied()
        .chain(captured_to_check(wallet))
}

/// Whether a customer has active orders: an open hold on the wallet, or one of
/// its recent captured orders (read from [`captured_to_check`]) not final yet
/// (delivered, not completed).
pub fn has_active_orders(wallet: &Wallet, recent_captured: &[Order]) -> bool {
    !wallet.holds.is_empty() || recent_captured.iter().any(Order::is_active)
}

/// How long a repeat of a purchase answers the earlier activation, in seconds
/// (the SMS-Activate-compatible `getNumber`: clients retry and fall back between
/// its two forms with the same parameters).
pub const REPEAT_WINDOW_SECS: i64 = 60;
/// Purchases with the same parameters one window keeps apart; past that (only a
/// client buying and closing dozens a minute gets there) a purchase is not
/// deduplicated.
pub const MAX_PURCHASES_PER_WINDOW: u32 = 32;

/// The windows a repeat at `now` looks in, in order: the previous one and the
/// current one, so the window slides.
pub fn repeat_windows(now: DateTime<Utc>) -> [i64; 2] {
    let window = now.timestamp().div_euclid(REPEAT_WINDOW_SECS);
    [window - 1, window]
}

/// The idempotency key of purchase slot `n` of `window` for the request
/// `request_print` of the customer whose scope is `scope`.
pub fn repeat_key(scope: &str, request_print: &[u8; 32], window: i64, n: u32) -> IdempotencyKey {
    let text = format!("sms-activate:{}:{window}:{n}", hex::encode(request_print));
    IdempotencyKey::new(scope, &text).expect("a derived key is printable and short")
}

/// The order a repeat at `now` answers again, if the purchase recorded by `used`
/// (whose order is `order`) was made less than [`REPEAT_WINDOW_SECS`] ago and
/// its activation is still active.
pub fn repeat_answer(
    used: &IdempotencyKeyUsed,
    order: &Order,
    now: DateTime<Utc>,
) -> Option<OrderId> {
    let IdempotentResult::Order(id) = used.result else {
        return None;
    };
    let recent = (now - used.at).num_seconds() < REPEAT_WINDOW_SECS;
    (recent && order.is_active()).then_some(id)
}

#[cfg(test)]
mod payment_tests;
#[cfg(test)]
mod tests;
