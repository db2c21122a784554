//! Given the states of every stream a decision reads, when it decides, then
//! these events per stream (or this refusal).

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::*;
use crate::domain::account::{
    decide_register, decide_request_deletion, decide_verify_email, make_verification_token,
    AccountEvent, Email, NewVerification,
};
use crate::domain::aggregate::Aggregate;
use crate::domain::anonymous::{AnonymousOrderStarted, TrackingId};
use crate::domain::idempotency::{replay, IdempotencyRecord};
use crate::domain::ids::AccountId;
use crate::domain::order::{CancelReason, OrderCancelled, OrderStatus};
use crate::domain::wallet::Payment;

fn t0() -> DateTime<Utc> {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

fn customer() -> AccountId {
    AccountId(Uuid::from_u128(1))
}

fn request(price_micros: i64) -> PlaceOrder {
    PlaceOrder {
        service: ServiceCode::new("tg").unwrap(),
        country: CountryCode::new("de").unwrap(),
        channel: Channel::Sms,
        price: Micros(price_micros),
    }
}

fn payment(tx: &str) -> Payment {
    Payment::new("trx", tx).unwrap()
}

/// The gateway's report of its payment `gateway_payment`: transaction `tx`,
/// `total_micros` paid so far.
fn report(gateway_payment: &str, tx: &str, total_micros: i64) -> PaymentReport {
    PaymentReport::new(gateway_payment, payment(tx), Micros(total_micros)).unwrap()
}

/// An account registered and verified at t0, with a deletion pending if
/// `leaving`.
fn account(leaving: bool) -> Account {
    let mut state = unverified_account();
    let (_, token_hash) = make_verification_token(customer(), &[7; 32]);
    for event in decide_verify_email(&state, &token_hash, t0()).unwrap() {
        state.apply(&event);
    }
    if leaving {
        for event in decide_request_deletion(&state, false, Micros(0), false, t0()).unwrap() {
            state.apply(&event);
        }
    }
    state
}

/// An account registered at t0 whose address is not verified.
fn unverified_account() -> Account {
    let (_, token_hash) = make_verification_token(customer(), &[7; 32]);
    let verification = NewVerification {
        token_hash,
        ttl: Duration::hours(24),
    };
    let email = Email::parse("buyer@example.com").unwrap();
    let events: Vec<AccountEvent> = decide_register(
        &Account::default(),
        customer(),
        &email,
        "hash",
        verification,
        t0(),
    )
    .unwrap();
    Account::from_events(&events)
}

/// A wallet of `owner` credited with `micros` by a deposit.
fn funded(owner: Owner, micros: i64) -> Wallet {
    let deposit = DepositId(Uuid::from_u128(50));
    let events = wallet::credit_deposit(
        &Wallet::default(),
        owner,
        deposit,
        payment("funding"),
        Micros(micros),
        Micros(micros),
        false,
        t0(),
    )
    .unwrap();
    Wallet::from_events(&events)
}

#[test]
fn an_order_holds_its_price_on_the_wallet_in_the_same_decision() {
    let owner = Owner::Account(customer());
    let id = OrderId(Uuid::from_u128(2));
    let placement = place_order(
        Some(&account(false)),
        &funded(owner, 1_000_000),
        id,
        owner,
        &request(250_000),
        &OrderPolicy::default(),
        t0(),
    )
    .unwrap();
    let order = Order::from_events(&placement.order);
    assert_eq!(order.status, Some(OrderStatus::Placed));
    assert_eq!(order.placed.as_ref().unwrap().price, Micros(250_000));
    let mut wallet = funded(owner, 1_000_000);
    for event in &placement.wallet {
        wallet.apply(event);
    }
    assert_eq!(wallet.holds.get(&id), Some(&Micros(250_000)));
    assert_eq!(wallet.available, Micros(750_000));
}

#[test]
fn an_order_is_refused_without_funds_or_with_a_deletion_pending() {
    let owner = Owner::Account(customer());
    let id = OrderId(Uuid::from_u128(2));
    let policy = OrderPolicy::default();
    let poor = place_order(
        Some(&account(false)),
        &funded(owner, 100_000),
        id,
        owner,
        &request(250_000),
        &policy,
        t0(),
    );
    assert!(matches!(
        poor,
        Err(CommerceError::Wallet(WalletError::InsufficientFunds { .. }))
    ));
    let leaving = place_order(
        Some(&account(true)),
        &funded(owner, 1_000_000),
        id,
        owner,
        &request(250_000),
        &policy,
        t0(),
    );
    assert_eq!(
        leaving,
        Err(CommerceError::Account(AccountError::AccountDisabled))
    );
    let unknown = place_order(
        Some(&Account::default()),
        &funded(owner, 1_000_000),
        id,
        owner,
        &request(250_000),
        &policy,
        t0(),
    );
    assert_eq!(
        unknown,
        Err(CommerceError::Account(AccountError::AccountNotFound))
    );
    let unverified = place_order(
        Some(&unverified_account()),
        &funded(owner, 1_000_000),
        id,
        owner,
        &request(250_000),
        &policy,
        t0(),
    );
    assert_eq!(
        unverified,
        Err(CommerceError::Account(AccountError::EmailNotVerified))
    );
}

#[test]
fn an_invoice_is_opened_only_for_a_verified_enabled_account() {
    let owner = Owner::Account(customer());
    let id = DepositId(Uuid::from_u128(60));
    let amount = Micros(5_000_000);
    let opened = request_deposit(Some(&account(false)), id, owner, amount, t0()).unwrap();
    assert!(matches!(&opened[..], [DepositEvent::DepositRequested(r)] if r.amount == amount));
    for (state, refusal) in [
        (unverified_account(), AccountError::EmailNotVerified),
        (account(true), AccountError::AccountDisabled),
        (Account::default(), AccountError::AccountNotFound),
    ] {
        assert_eq!(
            request_deposit(Some(&state), id, owner, amount, t0()),
            Err(CommerceError::Account(refusal))
        );
    }
}

fn invoice(owner: Owner, amount_micros: i64) -> (DepositId, Deposit) {
    let id = DepositId(Uuid::from_u128(60));
    let events = deposit::request(&Deposit::default(), id, owner, Micros(amount_micros), t0());
    (id, Deposit::from_events(&events.unwrap()))
}

#[test]
fn a_payment_credits_its_deposit_and_wallet_once() {
    let owner = Owner::Account(customer());
    let (id, deposit) = invoice(owner, 5_000_000);
    let tx = report("5077125051", "0xabc", 5_000_000);
    let decision = record_payment(
        &PaymentGuard::default(),
        &deposit,
        &Wallet::default(),
        id,
        &tx,
        t0() + Duration::minutes(5),
    )
    .unwrap();
    let PaymentDecision::Credit {
        owner: credited,
        amount,
        guard,
        deposit: deposit_events,
        wallet: wallet_events,
    } = decision
    else {
        panic!("a first payment is credited");
    };
    assert_eq!((credited, amount), (owner, Micros(5_000_000)));
    assert_eq!(deposit_events.len(), 1);
    let deposit = Deposit::from_events(
        &[
            deposit::request(&Deposit::default(), id, owner, Micros(5_000_000), t0()).unwrap(),
            deposit_events,
        ]
        .concat(),
    );
    let wallet = Wallet::from_events(&wallet_events);
    assert_eq!(wallet.available, Micros(5_000_000));
    match &wallet_events[..] {
        [WalletEvent::WalletDepositCredited(e)] => assert!(!e.late),
        other => panic!("one credit, got {other:?}"),
    }
    // Given the guard recorded, when the same transaction comes again, then nothing.
    let recorded = PaymentGuard::from_events(&guard);
    let again = record_payment(
        &recorded,
        &deposit,
        &wallet,
        id,
        &tx,
        t0() + Duration::minutes(6),
    );
    assert_eq!(again, Ok(PaymentDecision::AlreadyCredited));
}

#[test]
fn a_late_payment_is_credited_and_marked_late_and_an_unknown_deposit_refused() {
    let owner = Owner::Account(customer());
    let (id, deposit) = invoice(owner, 5_000_000);
    let expires_at = deposit.requested.as_ref().unwrap().expires_at;
    let decision = record_payment(
        &PaymentGuard::default(),
        &deposit,
        &Wallet::default(),
        id,
        &report("1", "0xdef", 4_000_000),
        expires_at + Duration::seconds(1),
    )
    .unwrap();
    match decision {
        PaymentDecision::Credit { wallet, .. } => match &wallet[..] {
            [WalletEvent::WalletDepositCredited(e)] => assert!(e.late),
            other => panic!("one credit, got {other:?}"),
        },
        other => panic!("credited, got {other:?}"),
    }
    let unknown = record_payment(
        &PaymentGuard::default(),
        &Deposit::default(),
        &Wallet::default(),
        id,
        &report("1", "0xdef", 4_000_000),
        t0(),
    );
    assert_eq!(unknown, Err(CommerceError::Deposit(DepositError::NotFound)));
}

/// The account of [`account`]`(true)`, erased once its deletion fell due.
fn erased_account() -> (Account, DateTime<Utc>) {
    let mut state = account(true);
    let due = t0() + Duration::days(30);
    for event in erase_account(&state, &Wallet::default(), due)
        .unwrap()
        .record
    {
        state.apply(&event);
    }
    (state, due)
}

fn unclaimed(amount_micros: i64, at: DateTime<Utc>) -> WalletEvent {
    WalletEvent::WalletBalanceUnclaimed(wallet::WalletBalanceUnclaimed {
        entry: crate::domain::ledger::Entry {
            debit: crate::domain::ledger::LedgerAccount::Available(Owner::Account(customer())),
            credit: crate::domain::ledger::LedgerAccount::Unclaimed,
            amount: Micros(amount_micros),
            reason: crate::domain::ledger::Reason::Unclaimed,
        },
        at,
    })
}

#[test]
fn an_erasure_moves_the_available_balance_to_unclaimed_once() {
    let owner = Owner::Account(customer());
    let (id, deposit) = invoice(owner, 9_610_000);
    let Ok(PaymentDecision::Credit { wallet: credit, .. }) = record_payment(
        &PaymentGuard::default(),
        &deposit,
        &Wallet::default(),
        id,
        &report("1", "0x961", 9_610_000),
        t0(),
    ) else {
        panic!("credited");
    };
    let mut wallet = Wallet::from_events(&credit);
    let mut state = account(true);
    let due = t0() + Duration::days(30);
    // Given $9.61 available and the deletion due, when erased: the account's
    // record and the move of exactly $9.61, decided together.
    let erasure = erase_account(&state, &wallet, due).unwrap();
    assert_eq!(erasure.wallet, vec![unclaimed(9_610_000, due)]);
    assert!(matches!(
        erasure.record[..],
        [AccountEvent::AccountErased(_)]
    ));
    erasure.record.iter().for_each(|e| state.apply(e));
    erasure.wallet.iter().for_each(|e| wallet.apply(e));
    assert_eq!(wallet.available, Micros(0));
    // Erased again: refused, so nothing moves twice.
    assert_eq!(
        erase_account(&state, &wallet, due),
        Err(AccountError::AccountErased)
    );
    // Not due yet: refused, and nothing moves.
    assert_eq!(
        erase_account(&account(true), &Wallet::from_events(&credit), t0()),
        Err(AccountError::ErasureNotDue)
    );
}

#[test]
fn a_payment_that_reaches_an_erased_account_ends_in_unclaimed() {
    let owner = Owner::Account(customer());
    let (id, deposit) = invoice(owner, 5_000_000);
    let (erased, due) = erased_account();
    let later = due + Duration::hours(1);
    let tx = report("7", "0x777", 5_000_000);
    let decision = record_payment_of(
        erased.erased_at.is_some(),
        &PaymentGuard::default(),
        &deposit,
        &Wallet::default(),
        id,
        &tx,
        later,
    )
    .unwrap();
    let PaymentDecision::Credit { wallet: events, .. } = decision else {
        panic!("credited");
    };
    match &events[..] {
        [WalletEvent::WalletDepositCredited(e), moved] => {
            assert_eq!(e.entry.amount, Micros(5_000_000));
            assert_eq!(moved, &unclaimed(5_000_000, later));
        }
        other => panic!("a credit and its move, got {other:?}"),
    }
    assert_eq!(Wallet::from_events(&events).available, Micros(0));
    // An account not erased (a deletion pending) keeps the credit until then.
    let pending = record_payment_of(
        account(true).erased_at.is_some(),
        &PaymentGuard::default(),
        &deposit,
        &Wallet::default(),
        id,
        &tx,
        t0(),
    );
    let Ok(PaymentDecision::Credit { wallet: kept, .. }) = pending else {
        panic!("credited");
    };
    assert!(matches!(kept[..], [WalletEvent::WalletDepositCredited(_)]));
}

/// An anonymous buyer created at t0, with one order started if `started`.
fn buyer(started: Option<OrderId>) -> (Anonymous, Owner) {
    let tracking = TrackingId::generate().unwrap();
    let anon = tracking.anonymous_id();
    let (_, deposit) = invoice(Owner::Anonymous(anon), 250_000);
    let invoice_id = deposit.requested.unwrap().deposit;
    let mut events = anonymous::create(
        &Anonymous::default(),
        anon,
        invoice_id,
        request(250_000).details(),
        Micros(250_000),
        t0(),
    )
    .unwrap();
    if let Some(order) = started {
        events.push(AnonymousEvent::AnonymousOrderStarted(
            AnonymousOrderStarted {
                anon,
                order,
                at: t0(),
            },
        ));
    }
    (Anonymous::from_events(&events), Owner::Anonymous(anon))
}

/// Order `id` of `owner`, placed at t0; cancelled if `over`.
fn placed(id: OrderId, owner: Owner, over: bool) -> Order {
    let mut events = order::place(
        &Order::default(),
        id,
        owner,
        ServiceCode::new("tg").unwrap(),
        CountryCode::new("de").unwrap(),
        Channel::Sms,
        Micros(250_000),
        &OrderPolicy::default(),
        t0(),
    )
    .unwrap();
    if over {
        events.push(OrderEvent::OrderCancelled(OrderCancelled {
            order: id,
            reason: CancelReason::Customer,
            at: t0(),
        }));
    }
    Order::from_events(&events)
}

#[test]
fn an_anonymous_buyer_starts_another_order_only_once_the_current_one_is_over() {
    let first = OrderId(Uuid::from_u128(3));
    let next = OrderId(Uuid::from_u128(4));
    let policy = OrderPolicy::default();
    let (fresh, owner) = buyer(None);
    let (anon_events, placement) = start_anonymous_order(
        &fresh,
        &Order::default(),
        &funded(owner, 250_000),
        first,
        &policy,
        t0(),
    )
    .unwrap();
    assert_eq!(anon_events.len(), 1);
    assert_eq!(
        Order::from_events(&placement.order).status,
        Some(OrderStatus::Placed)
    );

    let (running, owner) = buyer(Some(first));
    let refused = start_anonymous_order(
        &running,
        &placed(first, owner, false),
        &funded(owner, 250_000),
        next,
        &policy,
        t0(),
    );
    assert_eq!(
        refused,
        Err(CommerceError::Anonymous(AnonymousError::OrderActive))
    );
    let again = start_anonymous_order(
        &running,
        &placed(first, owner, true),
        &funded(owner, 250_000),
        next,
        &policy,
        t0(),
    );
    assert!(again.is_ok());
    let unknown = start_anonymous_order(
        &Anonymous::default(),
        &Order::default(),
        &Wallet::default(),
        next,
        &policy,
        t0(),
    );
    assert_eq!(
        unknown,
        Err(CommerceError::Anonymous(AnonymousError::NotFound))
    );
}

#[test]
fn orders_are_active_while_held_or_captured_and_not_final() {
    let owner = Owner::Account(customer());
    let id = OrderId(Uuid::from_u128(5));
    let wallet = funded(owner, 1_000_000);
    assert!(!has_active_orders(&wallet, &[]));
    let mut holding = wallet.clone();
    for event in wallet::place_hold(&wallet, owner, id, Micros(250_000), t0()).unwrap() {
        holding.apply(&event);
    }
    assert!(has_active_orders(&holding, &[]));
    assert!(has_active_orders(&wallet, &[placed(id, owner, false)]));
    assert!(!has_active_orders(&wallet, &[placed(id, owner, true)]));
}

#[test]
fn an_idempotency_key_replays_its_request_and_refuses_another() {
    let record = IdempotencyRecord::from_events(&crate::domain::idempotency::record_use(
        [1; 32],
        IdempotentResult::Order(OrderId(Uuid::from_u128(6))),
        t0(),
    ));
    assert_eq!(replay(&IdempotencyRecord::default(), &[1; 32]), Ok(None));
    assert_eq!(
        replay(&record, &[1; 32]),
        Ok(Some(IdempotentResult::Order(OrderId(Uuid::from_u128(6)))))
    );
    assert_eq!(
        replay(&record, &[2; 32]).map_err(CommerceError::from),
        Err(CommerceError::IdempotencyKeyReused)
    );
}

#[test]
fn a_repeat_within_the_window_answers_the_live_earlier_purchase() {
    let owner = Owner::Account(customer());
    let id = OrderId(Uuid::from_u128(7));
    let used = |at| IdempotencyKeyUsed {
        fingerprint: [3; 32],
        result: IdempotentResult::Order(id),
        at,
    };
    let live = placed(id, owner, false);
    let over = placed(id, owner, true);
    let window = Duration::seconds(REPEAT_WINDOW_SECS);
    // Given a purchase at t0, when the same request comes 59 s later, then its order.
    let just_in = t0() + window - Duration::seconds(1);
    assert_eq!(repeat_answer(&used(t0()), &live, just_in), Some(id));
    // ... but not once the window has passed, nor once the activation is over.
    assert_eq!(repeat_answer(&used(t0()), &live, t0() + window), None);
    assert_eq!(repeat_answer(&used(t0()), &over, t0()), None);
    // A key used for a deposit is never a purchase to answer.
    let deposit = IdempotencyKeyUsed {
        result: IdempotentResult::Deposit(DepositId(Uuid::from_u128(8))),
        ..used(t0())
    };
    assert_eq!(repeat_answer(&deposit, &live, t0()), None);
}

#[test]
fn repeat_windows_slide_and_keys_differ_by_window_and_slot() {
    let at = t0();
    let [previous, current] = repeat_windows(at);
    assert_eq!(current, at.timestamp().div_euclid(REPEAT_WINDOW_SECS));
    assert_eq!(previous + 1, current);
    let later = repeat_windows(at + Duration::seconds(REPEAT_WINDOW_SECS));
    assert_eq!(later[0], current);
    let scope = Owner::Account(customer()).wallet_stream();
    let key = |window, n| repeat_key(scope.as_str(), &[1; 32], window, n);
    assert_eq!(key(current, 0), key(current, 0));
    assert_ne!(key(current, 0), key(current, 1));
    assert_ne!(key(current, 0), key(previous, 0));
    assert_ne!(
        key(current, 0),
        repeat_key(scope.as_str(), &[2; 32], current, 0)
    );
}

#[test]
fn active_order_candidates_are_the_holds_then_the_newest_captured() {
    let owner = Owner::Account(customer());
    let mut wallet = funded(owner, 100_000_000);
    let policy = OrderPolicy::default();
    let ids: Vec<OrderId> = (0..(MAX_CAPTURED_ORDERS_CHECKED as u128 + 3))
        .map(|n| OrderId(Uuid::from_u128(1_000 + n)))
        .collect();
    for id in &ids {
        for event in wallet::place_hold(&wallet, owner, *id, Micros(10_000), t0()).unwrap() {
            wallet.apply(&event);
        }
    }
    let (held, captured) = ids.split_at(1);
    for id in captured {
        let events = wallet::capture(&wallet, owner, *id, Micros::ZERO, policy.cashback_bp, t0());
        for event in events.unwrap() {
            wallet.apply(&event);
        }
    }
    let candidates: Vec<OrderId> = active_order_candidates(&wallet).collect();
    assert_eq!(candidates.len(), 1 + MAX_CAPTURED_ORDERS_CHECKED);
    assert_eq!(candidates[0], held[0]);
    assert_eq!(candidates[1], *ids.last().unwrap());
    assert!(
        !candidates.contains(&captured[0]),
        "the oldest captured are not read"
    );
}

#[test]
fn a_credit_the_ledger_cannot_count_is_refused_before_any_event() {
    use crate::domain::ledger::LedgerError;
    use crate::domain::money::MoneyError;
    let owner = Owner::Account(customer());
    let (id, deposit) = invoice(owner, 5_000_000);
    let nearly_full = funded(owner, i64::MAX - 10);
    let refused = record_payment(
        &PaymentGuard::default(),
        &deposit,
        &nearly_full,
        id,
        &report("1", "0xbig", 100),
        t0(),
    );
    assert_eq!(
        refused,
        Err(CommerceError::Wallet(WalletError::Ledger(
            LedgerError::Money(MoneyError::Overflow)
        )))
    );
    // The deposit's own running total is checked too.
    let paid = deposit::pay(&deposit, &report("1", "0x1", i64::MAX - 1), t0()).unwrap();
    let mut full = deposit.clone();
    for event in &paid {
        full.apply(event);
    }
    assert_eq!(
        deposit::pay(&full, &report("2", "0x2", 2), t0()),
        Err(DepositError::PaidOverflow)
    );
}

#[test]
fn an_anonymous_erasure_moves_the_credit_left_to_unclaimed_once() {
    let (mut state, owner) = buyer(None);
    let (id, deposit) = invoice(owner, 250_000);
    let Ok(PaymentDecision::Credit { wallet: credit, .. }) = record_payment(
        &PaymentGuard::default(),
        &deposit,
        &Wallet::default(),
        id,
        &report("2", "0x250", 250_000),
        t0(),
    ) else {
        panic!("credited");
    };
    let mut wallet = Wallet::from_events(&credit);
    let due = t0() + Duration::days(anonymous::RETENTION_DAYS);
    let none = Order::default();
    // Not due yet: refused, and nothing moves.
    assert_eq!(
        erase_anonymous(&state, &none, &wallet, due - Duration::seconds(1)),
        Err(AnonymousError::ErasureNotDue)
    );
    // Given $0.25 of credit left and the erasure due, when erased: the record
    // and the move of exactly that credit, decided together.
    let erasure = erase_anonymous(&state, &none, &wallet, due).unwrap();
    let [WalletEvent::WalletBalanceUnclaimed(moved)] = &erasure.wallet[..] else {
        panic!("one move, got {:?}", erasure.wallet);
    };
    assert_eq!(
        moved.entry.debit,
        crate::domain::ledger::LedgerAccount::Available(owner)
    );
    assert_eq!(
        moved.entry.credit,
        crate::domain::ledger::LedgerAccount::Unclaimed
    );
    assert_eq!(moved.entry.amount, Micros(250_000));
    erasure.record.iter().for_each(|e| state.apply(e));
    erasure.wallet.iter().for_each(|e| wallet.apply(e));
    assert_eq!(wallet.available, Micros(0));
    // Erased again: refused, so nothing moves twice.
    assert_eq!(
        erase_anonymous(&state, &none, &wallet, due),
        Err(AnonymousError::Erased)
    );
    // A payment that reaches the erased buyer afterwards ends in unclaimed too.
    let late = record_payment_of(
        state.erased_at.is_some(),
        &PaymentGuard::default(),
        &deposit,
        &wallet,
        id,
        &report("3", "0x251", 250_000),
        due,
    );
    let Ok(PaymentDecision::Credit { wallet: events, .. }) = late else {
        panic!("credited");
    };
    assert_eq!(events.len(), 2, "{events:?}");
    events.iter().for_each(|e| wallet.apply(e));
    assert_eq!(wallet.available, Micros(0));
}
