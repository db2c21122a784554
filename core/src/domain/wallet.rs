//! The wallet aggregate (stream `wallet-<owner>`): every money movement of one
//! customer or anonymous buyer, as balanced ledger entries.
//!
//! Available = credits − debits on the owner's `Available` account; held = the
//! open holds. The available balance never goes negative: a hold needs it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::aggregate::Aggregate;
use super::codec::EventBody;
use super::ids::{DepositId, OrderId};
use super::ledger::{Entry, LedgerAccount, LedgerError, Owner, Reason};
use super::money::Micros;
use crate::domain_events;

/// A crypto transaction, by network and hash: public facts, kept 7 years.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub network: String,
    pub tx_hash: String,
}

/// How a payment compared with its invoice (see [`credit_deposit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DepositOutcome {
    Exact,
    Partial,
    Over,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletDepositCredited {
    pub deposit: DepositId,
    pub payment: Payment,
    pub outcome: DepositOutcome,
    /// CryptoClearing → Available, reason Deposit or AnonymousPayment.
    pub entry: Entry,
    /// The gateway said the invoice had expired when the money came.
    pub late: bool,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletHoldPlaced {
    pub order: OrderId,
    /// Available → Held.
    pub entry: Entry,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletHoldCaptured {
    pub order: OrderId,
    /// Held → Revenue: the sale.
    pub entry: Entry,
    /// ProviderCost → CryptoClearing: what the upstream charges, if anything.
    pub cost: Option<Entry>,
    pub at: DateTime<Utc>,
}

/// Why a hold was released in full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoidReason {
    Cancelled,
    Expired,
    NoNumbers,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletHoldVoided {
    pub order: OrderId,
    /// Held → Available: the full refund.
    pub entry: Entry,
    pub reason: VoidReason,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletCashbackCredited {
    pub order: OrderId,
    /// CashbackExpense → Available.
    pub entry: Entry,
    pub at: DateTime<Utc>,
}

/// The owner's whole available balance moved to unclaimed balances: their
/// account was erased (or money reached it after the erasure), so nobody can
/// spend it any more. Nexus still owes it; finance sees it on `Unclaimed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletBalanceUnclaimed {
    /// Available → Unclaimed, reason Unclaimed.
    pub entry: Entry,
    pub at: DateTime<Utc>,
}

impl EventBody for WalletDepositCredited {}
impl EventBody for WalletBalanceUnclaimed {}
impl EventBody for WalletHoldPlaced {}
impl EventBody for WalletHoldCaptured {}
impl EventBody for WalletHoldVoided {}
impl EventBody for WalletCashbackCredited {}

domain_events! {
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum WalletEvent {
        WalletDepositCredited(WalletDepositCredited) = 1,
        WalletHoldPlaced(WalletHoldPlaced) = 1,
        WalletHoldCaptured(WalletHoldCaptured) = 1,
        WalletHoldVoided(WalletHoldVoided) = 1,
        WalletCashbackCredited(WalletCashbackCredited) = 1,
        WalletBalanceUnclaimed(WalletBalanceUnclaimed) = 1,
    }
}

impl WalletEvent {
    /// The ledger entries this event posts.
    pub fn entries(&self) -> Vec<Entry> {
        match self {
            WalletEvent::WalletDepositCredited(e) => vec![e.entry],
            WalletEvent::WalletHoldPlaced(e) => vec![e.entry],
            WalletEvent::WalletHoldCaptured(e) => std::iter::once(e.entry).chain(e.cost).collect(),
            WalletEvent::WalletHoldVoided(e) => vec![e.entry],
            WalletEvent::WalletCashbackCredited(e) => vec![e.entry],
            WalletEvent::WalletBalanceUnclaimed(e) => vec![e.entry],
        }
    }
}

/// A wallet's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wallet {
    pub available: Micros,
    /// Open holds by order.
    pub holds: BTreeMap<OrderId, Micros>,
    /// Every order that ever had a hold here: a hold is placed once per order.
    orders_seen: BTreeSet<OrderId>,
    /// Orders whose hold was captured, oldest first: they may still be active
    /// (delivered, not yet completed).
    pub captured: Vec<OrderId>,
}

impl Wallet {
    pub fn held(&self) -> Micros {
        Micros(self.holds.values().map(|m| m.0).sum())
    }

    /// Available plus held: what the owner has in all.
    pub fn balance(&self) -> Micros {
        Micros(self.available.0 + self.held().0)
    }
}

impl Aggregate for Wallet {
    type Event = WalletEvent;

    fn apply(&mut self, event: &WalletEvent) {
        match event {
            WalletEvent::WalletDepositCredited(e) => {
                self.available = self.available.strict_add(e.entry.amount);
            }
            WalletEvent::WalletHoldPlaced(e) => {
                self.available = self.available.strict_sub(e.entry.amount);
                self.holds.insert(e.order, e.entry.amount);
                self.orders_seen.insert(e.order);
            }
            WalletEvent::WalletHoldCaptured(e) => {
                self.holds.remove(&e.order);
                self.captured.push(e.order);
            }
            WalletEvent::WalletHoldVoided(e) => {
                self.holds.remove(&e.order);
                self.available = self.available.strict_add(e.entry.amount);
            }
            WalletEvent::WalletCashbackCredited(e) => {
                self.available = self.available.strict_add(e.entry.amount);
            }
            WalletEvent::WalletBalanceUnclaimed(e) => {
                self.available = self.available.strict_sub(e.entry.amount);
            }
        }
        assert!(self.available.0 >= 0, "a wallet never goes negative");
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    #[error("insufficient funds: {available} available, {needed} needed")]
    InsufficientFunds { available: Micros, needed: Micros },
    #[error("this order already had a hold on the wallet")]
    HoldExists,
    #[error("this order has no open hold (already captured or refunded)")]
    HoldNotOpen,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Holds `amount` for `order`.
pub fn place_hold(
    wallet: &Wallet,
    owner: Owner,
    order: OrderId,
    amount: Micros,
    at: DateTime<Utc>,
) -> Result<Vec<WalletEvent>, WalletError> {
    if wallet.orders_seen.contains(&order) {
        return Err(WalletError::HoldExists);
    }
    let entry = Entry::new(
        LedgerAccount::Available(owner),
        LedgerAccount::Held(owner),
        amount,
        Reason::Hold,
    )?;
    if wallet.available < amount {
        return Err(WalletError::InsufficientFunds {
            available: wallet.available,
            needed: amount,
        });
    }
    Ok(vec![WalletEvent::WalletHoldPlaced(WalletHoldPlaced {
        order,
        entry,
        at,
    })])
}

/// Captures `order`'s hold as revenue, records the upstream's cost, and credits
/// cashback: `cashback_bp` basis points of the price, rounded down to a whole
/// micro-dollar, to registered customers only (anonymous buyers have no wallet to
/// keep it in).
pub fn capture(
    wallet: &Wallet,
    owner: Owner,
    order: OrderId,
    provider_cost: Micros,
    cashback_bp: u32,
    at: DateTime<Utc>,
) -> Result<Vec<WalletEvent>, WalletError> {
    let amount = *wallet.holds.get(&order).ok_or(WalletError::HoldNotOpen)?;
    let entry = Entry::new(
        LedgerAccount::Held(owner),
        LedgerAccount::Revenue,
        amount,
        Reason::Capture,
    )?;
    let cost = if provider_cost.is_positive() {
        Some(Entry::new(
            LedgerAccount::ProviderCost,
            LedgerAccount::CryptoClearing,
            provider_cost,
            Reason::ProviderCost,
        )?)
    } else {
        None
    };
    let mut events = vec![WalletEvent::WalletHoldCaptured(WalletHoldCaptured {
        order,
        entry,
        cost,
        at,
    })];
    let cashback = amount.percent_bp_floor(cashback_bp);
    if matches!(owner, Owner::Account(_)) && cashback.is_positive() {
        // Applying the credit cannot fail: refuse here what would overflow.
        wallet
            .available
            .checked_add(cashback)
            .map_err(LedgerError::from)?;
        let entry = Entry::new(
            LedgerAccount::CashbackExpense,
            LedgerAccount::Available(owner),
            cashback,
            Reason::Cashback,
        )?;
        events.push(WalletEvent::WalletCashbackCredited(
            WalletCashbackCredited { order, entry, at },
        ));
    }
    Ok(events)
}

/// Releases `order`'s hold in full.
pub fn void(
    wallet: &Wallet,
    owner: Owner,
    order: OrderId,
    reason: VoidReason,
    at: DateTime<Utc>,
) -> Result<Vec<WalletEvent>, WalletError> {
    let amount = *wallet.holds.get(&order).ok_or(WalletError::HoldNotOpen)?;
    wallet
        .available
        .checked_add(amount)
        .map_err(LedgerError::from)?;
    let entry = Entry::new(
        LedgerAccount::Held(owner),
        LedgerAccount::Available(owner),
        amount,
        Reason::Void,
    )?;
    Ok(vec![WalletEvent::WalletHoldVoided(WalletHoldVoided {
        order,
        entry,
        reason,
        at,
    })])
}

/// Moves the whole available balance to unclaimed balances, when there is
/// one: at the erasure of the owner's account, and after any credit that
/// reaches an erased account. Nothing when the wallet is empty, so a second
/// move (an erasure decided again, a replay) moves nothing. Held money is not
/// touched: a hold is captured or voided by its order.
pub fn unclaim_available(wallet: &Wallet, owner: Owner, at: DateTime<Utc>) -> Vec<WalletEvent> {
    // `Entry::new` refuses a zero amount: an empty wallet has nothing to move.
    let Ok(entry) = Entry::new(
        LedgerAccount::Available(owner),
        LedgerAccount::Unclaimed,
        wallet.available,
        Reason::Unclaimed,
    ) else {
        return vec![];
    };
    vec![WalletEvent::WalletBalanceUnclaimed(
        WalletBalanceUnclaimed { entry, at },
    )]
}

/// Credits a confirmed crypto payment of `paid`. What is credited, and once,
/// is the caller's decision ([`crate::domain::commerce::record_payment`]).
///
/// Outcomes: `due` is what of the invoice this payment had still to pay
/// before this credit (the invoice less what the same gateway payment credited
/// before; zero or less once it was paid). `paid` is credited in full whether
/// it is less than that (`Partial`), equal (`Exact`) or more (`Over`); a
/// payment after the invoice expired is credited all the same and marked
/// `late`. Money that arrived is never kept back.
#[allow(clippy::too_many_arguments)]
pub fn credit_deposit(
    wallet: &Wallet,
    owner: Owner,
    deposit: DepositId,
    payment: Payment,
    due: Micros,
    paid: Micros,
    late: bool,
    at: DateTime<Utc>,
) -> Result<Vec<WalletEvent>, WalletError> {
    // Applying the credit cannot fail: refuse here what would overflow.
    wallet
        .available
        .checked_add(paid)
        .map_err(LedgerError::from)?;
    let reason = match owner {
        Owner::Account(_) => Reason::Deposit,
        Owner::Anonymous(_) => Reason::AnonymousPayment,
    };
    let entry = Entry::new(
        LedgerAccount::CryptoClearing,
        LedgerAccount::Available(owner),
        paid,
        reason,
    )?;
    let outcome = match paid.cmp(&due) {
        std::cmp::Ordering::Less => DepositOutcome::Partial,
        std::cmp::Ordering::Equal => DepositOutcome::Exact,
        std::cmp::Ordering::Greater => DepositOutcome::Over,
    };
    Ok(vec![WalletEvent::WalletDepositCredited(
        WalletDepositCredited {
            deposit,
            payment,
            outcome,
            entry,
            late,
            at,
        },
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::aggregate::given;
    use crate::domain::ids::AccountId;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_000_000, 0).unwrap()
    }

    fn owner() -> Owner {
        Owner::Account(AccountId(uuid::Uuid::from_u128(7)))
    }

    fn funded(amount: i64) -> Vec<WalletEvent> {
        credit_deposit(
            &Wallet::default(),
            owner(),
            DepositId(uuid::Uuid::from_u128(1)),
            Payment {
                network: "btc".into(),
                tx_hash: "ab".into(),
            },
            Micros(amount),
            Micros(amount),
            false,
            t0(),
        )
        .unwrap()
    }

    #[test]
    fn a_hold_needs_available_funds() {
        let order = OrderId::new();
        given::<Wallet>(funded(1_000_000))
            .when(|w| place_hold(w, owner(), order, Micros(1_000_001), t0()))
            .then_err(WalletError::InsufficientFunds {
                available: Micros(1_000_000),
                needed: Micros(1_000_001),
            });
        let wallet = given::<Wallet>(funded(1_000_000))
            .when(|w| place_hold(w, owner(), order, Micros(400_000), t0()))
            .then(vec![WalletEvent::WalletHoldPlaced(WalletHoldPlaced {
                order,
                entry: Entry {
                    debit: LedgerAccount::Available(owner()),
                    credit: LedgerAccount::Held(owner()),
                    amount: Micros(400_000),
                    reason: Reason::Hold,
                },
                at: t0(),
            })]);
        assert_eq!(
            (wallet.available, wallet.held(), wallet.balance()),
            (Micros(600_000), Micros(400_000), Micros(1_000_000))
        );
    }

    #[test]
    fn the_available_balance_moves_to_unclaimed_once_and_held_money_stays() {
        let order = OrderId::new();
        let mut history = funded(9_610_000);
        history.extend(
            place_hold(
                &Wallet::from_events(&history),
                owner(),
                order,
                Micros(610_000),
                t0(),
            )
            .unwrap(),
        );
        // Given $9.00 available and $0.61 held, the move takes the $9.00.
        let wallet = given::<Wallet>(history.clone())
            .when(|w| Ok::<_, WalletError>(unclaim_available(w, owner(), t0())))
            .then(vec![WalletEvent::WalletBalanceUnclaimed(
                WalletBalanceUnclaimed {
                    entry: Entry {
                        debit: LedgerAccount::Available(owner()),
                        credit: LedgerAccount::Unclaimed,
                        amount: Micros(9_000_000),
                        reason: Reason::Unclaimed,
                    },
                    at: t0(),
                },
            )]);
        assert_eq!(wallet.available, Micros(0));
        assert_eq!(wallet.held(), Micros(610_000));
        // A second move finds nothing to move.
        assert_eq!(unclaim_available(&wallet, owner(), t0()), vec![]);
        assert_eq!(unclaim_available(&Wallet::default(), owner(), t0()), vec![]);
    }

    #[test]
    fn capture_and_void_happen_once_per_hold() {
        let order = OrderId::new();
        let mut history = funded(1_000_000);
        history.extend(
            place_hold(
                &Wallet::from_events(&history),
                owner(),
                order,
                Micros(500_000),
                t0(),
            )
            .unwrap(),
        );
        let captured = capture(
            &Wallet::from_events(&history),
            owner(),
            order,
            Micros(300_000),
            200,
            t0(),
        )
        .unwrap();
        assert_eq!(captured.len(), 2, "capture and 2% cashback");
        let mut after = history.clone();
        after.extend(captured);
        let wallet = Wallet::from_events(&after);
        assert_eq!(wallet.available, Micros(500_000 + 10_000));
        assert_eq!(wallet.held(), Micros(0));
        given::<Wallet>(after.clone())
            .when(|w| capture(w, owner(), order, Micros(0), 200, t0()))
            .then_err(WalletError::HoldNotOpen);
        given::<Wallet>(after.clone())
            .when(|w| void(w, owner(), order, VoidReason::Cancelled, t0()))
            .then_err(WalletError::HoldNotOpen);
        given::<Wallet>(after)
            .when(|w| place_hold(w, owner(), order, Micros(1), t0()))
            .then_err(WalletError::HoldExists);
    }

    #[test]
    fn void_refunds_in_full() {
        let order = OrderId::new();
        let mut history = funded(2_000_000);
        history.extend(
            place_hold(
                &Wallet::from_events(&history),
                owner(),
                order,
                Micros(1_500_000),
                t0(),
            )
            .unwrap(),
        );
        let wallet = given::<Wallet>(history)
            .when(|w| void(w, owner(), order, VoidReason::Expired, t0()))
            .then(vec![WalletEvent::WalletHoldVoided(WalletHoldVoided {
                order,
                entry: Entry {
                    debit: LedgerAccount::Held(owner()),
                    credit: LedgerAccount::Available(owner()),
                    amount: Micros(1_500_000),
                    reason: Reason::Void,
                },
                reason: VoidReason::Expired,
                at: t0(),
            })]);
        assert_eq!(wallet.available, Micros(2_000_000));
    }

    #[test]
    fn deposits_credit_what_was_paid_once() {
        let deposit = DepositId::new();
        let payment = Payment {
            network: "eth".into(),
            tx_hash: "0x1".into(),
        };
        for (paid, outcome) in [
            (5, DepositOutcome::Partial),
            (10, DepositOutcome::Exact),
            (12, DepositOutcome::Over),
        ] {
            let events = credit_deposit(
                &Wallet::default(),
                owner(),
                deposit,
                payment.clone(),
                Micros(10),
                Micros(paid),
                false,
                t0(),
            )
            .unwrap();
            let WalletEvent::WalletDepositCredited(credited) = &events[0] else {
                panic!("a credit")
            };
            assert_eq!(
                (credited.outcome, credited.entry.amount),
                (outcome, Micros(paid))
            );
        }
        let history = credit_deposit(
            &Wallet::default(),
            owner(),
            deposit,
            payment.clone(),
            Micros(10),
            Micros(10),
            true,
            t0(),
        )
        .unwrap();
        // A second transaction for the same invoice is money that arrived: credited.
        let second = Payment {
            network: "eth".into(),
            tx_hash: "0x2".into(),
        };
        let wallet = given::<Wallet>(history)
            .when(|w| {
                credit_deposit(
                    w,
                    owner(),
                    deposit,
                    second.clone(),
                    Micros(10),
                    Micros(4),
                    false,
                    t0(),
                )
            })
            .then(vec![WalletEvent::WalletDepositCredited(
                WalletDepositCredited {
                    deposit,
                    payment: second.clone(),
                    outcome: DepositOutcome::Partial,
                    entry: Entry {
                        debit: LedgerAccount::CryptoClearing,
                        credit: LedgerAccount::Available(owner()),
                        amount: Micros(4),
                        reason: Reason::Deposit,
                    },
                    late: false,
                    at: t0(),
                },
            )]);
        assert_eq!(wallet.available, Micros(14));
    }

    #[test]
    fn anonymous_buyers_get_no_cashback() {
        let anon = Owner::Anonymous(crate::domain::ids::AnonymousId::new());
        let order = OrderId::new();
        let mut history = credit_deposit(
            &Wallet::default(),
            anon,
            DepositId::new(),
            Payment {
                network: "btc".into(),
                tx_hash: "c".into(),
            },
            Micros(100),
            Micros(100),
            false,
            t0(),
        )
        .unwrap();
        history.extend(
            place_hold(
                &Wallet::from_events(&history),
                anon,
                order,
                Micros(100),
                t0(),
            )
            .unwrap(),
        );
        let events = capture(
            &Wallet::from_events(&history),
            anon,
            order,
            Micros(0),
            200,
            t0(),
        )
        .unwrap();
        assert_eq!(events.len(), 1);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Deposit(i64),
        Hold(u8, i64),
        Capture(u8),
        Void(u8),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (1i64..5_000_000).prop_map(Op::Deposit),
            (0u8..8, 1i64..3_000_000).prop_map(|(o, a)| Op::Hold(o, a)),
            (0u8..8).prop_map(Op::Capture),
            (0u8..8).prop_map(Op::Void),
        ]
    }

    proptest::proptest! {
        /// Whatever the commands, in whatever order: the wallet never goes
        /// negative, every hold is settled at most once, the ledger balances, and
        /// money is conserved (what came in = available + held + captured − cashback).
        #[test]
        fn wallet_invariants_hold_under_any_command_sequence(ops in proptest::collection::vec(op(), 0..80)) {
            let order = |i: u8| OrderId(uuid::Uuid::from_u128(1000 + u128::from(i)));
            let mut wallet = Wallet::default();
            let mut balances = crate::domain::ledger::Balances::default();
            let (mut deposited, mut captured, mut cashback) = (0i64, 0i64, 0i64);
            let mut settled = BTreeSet::new();
            for op in ops {
                let decided = match op {
                    Op::Deposit(a) => credit_deposit(&wallet, owner(), DepositId::new(), Payment { network: "btc".into(), tx_hash: "t".into() }, Micros(a), Micros(a), false, t0()),
                    Op::Hold(o, a) => place_hold(&wallet, owner(), order(o), Micros(a), t0()),
                    Op::Capture(o) => capture(&wallet, owner(), order(o), Micros(1), 200, t0()),
                    Op::Void(o) => void(&wallet, owner(), order(o), VoidReason::Cancelled, t0()),
                };
                let Ok(events) = decided else { continue };
                for event in &events {
                    match event {
                        WalletEvent::WalletDepositCredited(e) => deposited += e.entry.amount.0,
                        WalletEvent::WalletHoldCaptured(e) => {
                            proptest::prop_assert!(settled.insert(e.order), "settled twice");
                            captured += e.entry.amount.0;
                        }
                        WalletEvent::WalletHoldVoided(e) => proptest::prop_assert!(settled.insert(e.order), "settled twice"),
                        WalletEvent::WalletCashbackCredited(e) => cashback += e.entry.amount.0,
                        WalletEvent::WalletHoldPlaced(_) | WalletEvent::WalletBalanceUnclaimed(_) => {}
                    }
                    for entry in event.entries() {
                        balances.post(&entry).unwrap();
                    }
                    wallet.apply(event);
                }
                proptest::prop_assert!(wallet.available.0 >= 0);
                proptest::prop_assert_eq!(balances.total(), 0);
                proptest::prop_assert_eq!(balances.get(LedgerAccount::Available(owner())), wallet.available);
                proptest::prop_assert_eq!(balances.get(LedgerAccount::Held(owner())), wallet.held());
                proptest::prop_assert_eq!(deposited + cashback, wallet.available.0 + wallet.held().0 + captured);
            }
        }
    }
}
