//! Orders, wallets and deposits through the command service, on a real sled store,
//! with concurrent races against the real log.

use chrono::Duration;
use nexus_core::domain::account::AccountError;
use nexus_core::domain::codec::DomainEvent;

use nexus_core::domain::commerce::CommerceError;
use nexus_core::domain::deposit::PaymentReport;
use nexus_core::domain::idempotency::IdempotencyKey;
use nexus_core::domain::ids::OrderId;
use nexus_core::domain::ledger::{Balances, LedgerAccount, Owner};
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{
    CancelReason, Channel, CountryCode, DeliveryChannel, OrderError, OrderStatus, ServiceCode,
    Timeout,
};
use nexus_core::domain::wallet::{Payment, WalletError, WalletEvent};
use nexus_core::log::{AnyLog, EventStore};
use nexus_core::service::commerce_service::{CommandError, PaymentOutcome};
use nexus_testkit::{request, runtime, unique_report, World};

/// Replays every wallet event in the log: all accounts sum to zero at every
/// position, no customer wallet is ever negative. Returns the final balances.
async fn audit(log: &AnyLog) -> Balances {
    let mut balances = Balances::default();
    let mut next = 1;
    loop {
        let batch = log.read_all(next, 1000).await.unwrap();
        let Some(last) = batch.last() else { break };
        next = last.position + 1;
        for record in &batch {
            if !record.stream.as_str().starts_with("wallet-") {
                continue;
            }
            let event =
                WalletEvent::decode(&record.event_type, record.schema_version, &record.payload)
                    .unwrap();
            for entry in event.entries() {
                balances.post(&entry).unwrap();
                assert_eq!(
                    balances.total(),
                    0,
                    "accounts sum to zero at position {}",
                    record.position
                );
                for (account, balance) in balances.iter() {
                    if matches!(
                        account,
                        LedgerAccount::Available(_) | LedgerAccount::Held(_)
                    ) {
                        assert!(
                            balance.0 >= 0,
                            "{account:?} negative at position {}",
                            record.position
                        );
                    }
                }
            }
        }
    }
    balances
}

#[test]
fn an_order_from_deposit_to_capture_and_cashback() {
    let w = World::new();
    runtime().block_on(async {
        let owner = w.funded_customer(10_000_000).await;
        assert_eq!(
            w.commerce.wallet(owner).await.unwrap().available,
            Micros(10_000_000),
            "the deposit is credited"
        );
        let id = w.placed_order(owner, 500_000).await;
        let wallet = w.commerce.wallet(owner).await.unwrap();
        assert_eq!(
            (wallet.available, wallet.held()),
            (Micros(9_500_000), Micros(500_000))
        );

        w.number_assigned(id).await;
        assert!(matches!(
            w.commerce.read_code(id, owner, DeliveryChannel::Api).await,
            Err(CommandError::Refused(CommerceError::Order(
                OrderError::NoCodeYet
            )))
        ));
        w.code_received(id).await;
        let read = w
            .commerce
            .read_code(id, owner, DeliveryChannel::Api)
            .await
            .unwrap();
        assert_eq!(read.code, "48213");
        let wallet = w.commerce.wallet(owner).await.unwrap();
        // Captured, plus 2% cashback of 0.50.
        assert_eq!(
            (wallet.available, wallet.held()),
            (Micros(9_510_000), Micros(0))
        );
        // A retried read within the delivery window gives the same code, charges nothing.
        assert_eq!(
            w.commerce
                .read_code(id, owner, DeliveryChannel::Api)
                .await
                .unwrap()
                .code,
            "48213"
        );
        assert_eq!(
            w.commerce.wallet(owner).await.unwrap().available,
            Micros(9_510_000)
        );

        w.commerce.complete(id, owner).await.unwrap();
        let order = w.commerce.order(id).await.unwrap();
        assert_eq!(order.status, Some(OrderStatus::Completed));
        assert_eq!(
            order.erased_codes,
            vec![1],
            "the code's key is erased on completion"
        );
        assert!(matches!(
            w.commerce.read_code(id, owner, DeliveryChannel::Api).await,
            Err(CommandError::Refused(CommerceError::Order(
                OrderError::CodeErased
            )))
        ));

        let balances = audit(&w.store.log).await;
        assert_eq!(balances.get(LedgerAccount::Revenue), Micros(500_000));
        assert_eq!(balances.get(LedgerAccount::ProviderCost), Micros(-300_000));
        assert_eq!(
            balances.get(LedgerAccount::CashbackExpense),
            Micros(-10_000)
        );
        assert_eq!(w.store.log.verify().await.unwrap().first_broken, None);
    });
}

#[test]
fn another_customer_cannot_touch_an_order() {
    let w = World::new();
    runtime().block_on(async {
        let (alice, mallory) = (w.customer().await, w.customer().await);
        w.fund(alice, 1_000_000).await;
        let id = w.placed_order(alice, 500_000).await;
        for result in [
            w.commerce
                .cancel(id, Some(mallory), CancelReason::Customer)
                .await
                .err(),
            w.commerce.complete(id, mallory).await.err(),
            w.commerce
                .read_code(id, mallory, DeliveryChannel::Api)
                .await
                .err(),
        ] {
            assert!(
                matches!(
                    result,
                    Some(CommandError::Refused(CommerceError::Order(
                        OrderError::NotFound
                    )))
                ),
                "{result:?}"
            );
        }
    });
}

#[test]
fn completing_an_unread_code_delivers_it_once_and_only_for_its_owner() {
    let w = World::new();
    runtime().block_on(async {
        let (owner, mallory) = (w.customer().await, w.customer().await);
        w.fund(owner, 10_000_000).await;
        let id = w.placed_order(owner, 500_000).await;
        w.number_assigned(id).await;
        w.code_received(id).await;

        // Another customer: not found, and nothing was delivered.
        assert!(matches!(
            w.commerce
                .deliver_and_complete(id, mallory, DeliveryChannel::Api)
                .await,
            Err(CommandError::Refused(CommerceError::Order(
                OrderError::NotFound
            )))
        ));
        let order = w.commerce.order(id).await.unwrap();
        assert_eq!(order.status, Some(OrderStatus::CodeReceived));

        w.commerce
            .deliver_and_complete(id, owner, DeliveryChannel::CompatibleApi)
            .await
            .unwrap();
        let order = w.commerce.order(id).await.unwrap();
        assert_eq!(order.status, Some(OrderStatus::Completed));
        // Captured once, plus 2% cashback of 0.50.
        let wallet = w.commerce.wallet(owner).await.unwrap();
        assert_eq!(
            (wallet.available, wallet.held()),
            (Micros(9_510_000), Micros(0))
        );
        assert!(matches!(
            w.commerce
                .deliver_and_complete(id, owner, DeliveryChannel::Api)
                .await,
            Err(CommandError::Refused(CommerceError::Order(
                OrderError::WrongStatus(OrderStatus::Completed)
            )))
        ));
        let balances = audit(&w.store.log).await;
        assert_eq!(balances.get(LedgerAccount::Revenue), Micros(500_000));
    });
}

#[test]
fn many_tasks_racing_on_one_wallet_never_overdraw_it() {
    let w = World::new();
    runtime().block_on(async {
        let owner = w.funded_customer(10_000_000).await;
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let commerce = w.commerce.clone();
                tokio::spawn(
                    async move { commerce.place_order(owner, &request(500_000), None).await },
                )
            })
            .collect();
        let mut placed = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => placed += 1,
                Err(CommandError::Refused(CommerceError::Wallet(
                    WalletError::InsufficientFunds { .. },
                ))) => {}
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert_eq!(placed, 20, "exactly as many orders as the money covers");
        let wallet = w.commerce.wallet(owner).await.unwrap();
        assert_eq!(
            (wallet.available, wallet.held()),
            (Micros(0), Micros(10_000_000))
        );
        audit(&w.store.log).await;
    });
}

#[test]
fn a_payment_is_credited_once_however_often_the_webhook_comes() {
    let w = World::new();
    runtime().block_on(async {
        let owner = w.customer().await;
        let deposit = w
            .commerce
            .request_deposit(owner, Micros(5_000_000))
            .await
            .unwrap();
        // The same payment at the gateway, half of the calls naming it by its
        // transaction hash and half (no hash sent) by its gateway id: each
        // pair loads other guard streams, and the deposit stream serialises them.
        let payment = Payment::new("btc", "f4b1c0ffee").unwrap();
        let by_id = Payment::new("btc", "5077125051").unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let tx = if i % 2 == 0 { &payment } else { &by_id };
                let report = PaymentReport::new("5077125051", tx.clone(), Micros(5_000_000));
                let commerce = w.commerce.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let outcome = commerce
                        .record_payment(deposit, report.unwrap())
                        .await
                        .unwrap();
                    (tx, outcome)
                })
            })
            .collect();
        let mut credited = Vec::new();
        for task in tasks {
            let (tx, outcome) = task.await.unwrap();
            if matches!(outcome, PaymentOutcome::Credited { .. }) {
                credited.push(tx);
            }
        }
        assert_eq!(credited.len(), 1);
        // The transaction that credited, named against another invoice, credits
        // nothing (whichever of the two names won the race).
        let payment = credited.remove(0);
        let other = w
            .commerce
            .request_deposit(owner, Micros(5_000_000))
            .await
            .unwrap();
        assert_eq!(
            w.commerce
                .record_payment(
                    other,
                    PaymentReport::new("77", payment, Micros(5_000_000)).unwrap()
                )
                .await
                .unwrap(),
            PaymentOutcome::AlreadyCredited
        );
        assert_eq!(
            w.commerce.wallet(owner).await.unwrap().available,
            Micros(5_000_000)
        );
        audit(&w.store.log).await;
    });
}

#[test]
fn an_idempotency_key_returns_the_first_order_and_refuses_another_request() {
    let w = World::new();
    runtime().block_on(async {
        let owner = w.funded_customer(10_000_000).await;
        let scope = owner.wallet_stream();
        let key = IdempotencyKey::new(scope.as_str(), "order-7f3a").unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (commerce, key) = (w.commerce.clone(), key.clone());
                tokio::spawn(async move {
                    commerce
                        .place_order(owner, &request(500_000), Some(&key))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut orders = Vec::new();
        for task in tasks {
            orders.push(task.await.unwrap());
        }
        assert!(
            orders.iter().all(|p| p.order == orders[0].order),
            "one order for one key"
        );
        assert_eq!(orders.iter().filter(|p| !p.replayed).count(), 1);
        assert_eq!(
            w.commerce.wallet(owner).await.unwrap().held(),
            Micros(500_000),
            "charged once"
        );
        assert!(matches!(
            w.commerce
                .place_order(owner, &request(600_000), Some(&key))
                .await,
            Err(CommandError::Refused(CommerceError::IdempotencyKeyReused))
        ));
        assert!(IdempotencyKey::new(scope.as_str(), "").is_none());
        assert!(IdempotencyKey::new(scope.as_str(), &"k".repeat(256)).is_none());
    });
}

#[test]
fn cancel_and_expiry_refund_in_full_and_a_code_blocks_cancel() {
    let w = World::new();
    runtime().block_on(async {
        let owner = w.funded_customer(3_000_000).await;
        // Cancel before a number: at once.
        let a = w.placed_order(owner, 1_000_000).await;
        w.commerce
            .cancel(a, Some(owner), CancelReason::Customer)
            .await
            .unwrap();
        // After a number: only after the guard.
        let b = w.placed_order(owner, 1_000_000).await;
        w.commerce
            .assign_number(b, "sim", "1", Micros(1), "15550001")
            .await
            .unwrap();
        assert!(matches!(
            w.commerce
                .cancel(b, Some(owner), CancelReason::Customer)
                .await,
            Err(CommandError::Refused(CommerceError::Order(
                OrderError::CancelTooEarly(_)
            )))
        ));
        w.clock.advance(Duration::minutes(2));
        w.commerce
            .cancel(b, Some(owner), CancelReason::Customer)
            .await
            .unwrap();
        // A code was received: no cancel, no refund.
        let c = w.placed_order(owner, 1_000_000).await;
        w.commerce
            .assign_number(c, "sim", "2", Micros(1), "15550002")
            .await
            .unwrap();
        w.commerce
            .receive_code(c, "1111", "code 1111")
            .await
            .unwrap();
        w.clock.advance(Duration::minutes(2));
        assert!(matches!(
            w.commerce
                .cancel(c, Some(owner), CancelReason::Customer)
                .await,
            Err(CommandError::Refused(CommerceError::Order(
                OrderError::CodeAlreadyReceived
            )))
        ));
        // Expiry without a code refunds.
        let d = w.placed_order(owner, 1_000_000).await;
        let wallet = w.commerce.wallet(owner).await.unwrap();
        assert_eq!(
            (wallet.available, wallet.held()),
            (Micros(1_000_000), Micros(2_000_000))
        );
        w.clock.advance(Duration::minutes(21));
        assert!(matches!(
            w.commerce.process_deadline(d).await.unwrap(),
            Timeout::ExpiredWithoutCode(_)
        ));
        // The unread code at the deadline completes and captures.
        assert!(matches!(
            w.commerce.process_deadline(c).await.unwrap(),
            Timeout::CompletedUnread(_)
        ));
        assert_eq!(w.commerce.order(c).await.unwrap().erased_codes, vec![1]);
        let wallet = w.commerce.wallet(owner).await.unwrap();
        assert_eq!(
            (wallet.available, wallet.held()),
            (Micros(2_000_000 + 20_000), Micros(0))
        );
        assert_eq!(
            w.commerce.process_deadline(d).await.unwrap(),
            Timeout::NotDue,
            "final orders have nothing due"
        );
        audit(&w.store.log).await;
    });
}

#[test]
fn concurrent_reads_capture_once() {
    let w = World::new();
    runtime().block_on(async {
        let owner = w.funded_customer(1_000_000).await;
        let order: OrderId = w.placed_order(owner, 1_000_000).await;
        w.commerce
            .assign_number(order, "sim", "9", Micros(0), "15550009")
            .await
            .unwrap();
        w.commerce
            .receive_code(order, "777", "code 777")
            .await
            .unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let commerce = w.commerce.clone();
                tokio::spawn(async move {
                    commerce
                        .read_code(order, owner, DeliveryChannel::Api)
                        .await
                        .unwrap()
                        .code
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), "777");
        }
        let balances = audit(&w.store.log).await;
        assert_eq!(
            balances.get(LedgerAccount::Revenue),
            Micros(1_000_000),
            "captured exactly once"
        );
        assert_eq!(
            balances.get(LedgerAccount::CashbackExpense),
            Micros(-20_000)
        );
    });
}

#[test]
fn an_anonymous_order_is_paid_started_refunded_and_reordered_by_tracking_id() {
    use nexus_core::domain::anonymous::TrackingId;
    let w = World::new();
    let tracking_id = runtime().block_on(async {
        let created = w
            .commerce
            .create_anonymous_order(&request(700_000))
            .await
            .unwrap();
        let tracking =
            TrackingId::parse(created.tracking_id.as_str()).expect("a well-formed tracking ID");
        let tracked = w.commerce.track(&tracking).await.unwrap();
        assert!(
            tracked.orders.is_empty(),
            "nothing starts before the payment"
        );

        // A partial payment stays as credit; the rest starts the order.
        let first = Payment::new("btc", "anon-tx-1").unwrap();
        let first = PaymentReport::new("anon-pay", first, Micros(300_000)).unwrap();
        w.commerce
            .record_payment(created.invoice, first)
            .await
            .unwrap();
        let tracked = w.commerce.track(&tracking).await.unwrap();
        assert!(tracked.orders.is_empty());
        assert_eq!(tracked.wallet.available, Micros(300_000));
        // The gateway reports the same payment again, $0.70 in all.
        let second = Payment::new("btc", "anon-tx-2").unwrap();
        let second = PaymentReport::new("anon-pay", second, Micros(700_000)).unwrap();
        w.commerce
            .record_payment(created.invoice, second)
            .await
            .unwrap();
        let tracked = w.commerce.track(&tracking).await.unwrap();
        assert_eq!(tracked.orders.len(), 1);
        assert_eq!(
            (tracked.wallet.available, tracked.wallet.held()),
            (Micros(0), Micros(700_000))
        );

        // No number comes: the order is cancelled, the money returns as credit.
        let (first_order, _) = tracked.orders[0];
        w.commerce
            .cancel(first_order, None, CancelReason::NoNumbers)
            .await
            .unwrap();
        assert_eq!(
            w.commerce.track(&tracking).await.unwrap().wallet.available,
            Micros(700_000)
        );

        // The credit buys a replacement with the same tracking ID.
        let replacement = w
            .commerce
            .start_anonymous_order(tracking.anonymous_id())
            .await
            .unwrap();
        assert!(matches!(
            w.commerce
                .start_anonymous_order(tracking.anonymous_id())
                .await,
            Err(CommandError::Refused(CommerceError::Anonymous(
                nexus_core::domain::anonymous::AnonymousError::OrderActive
            )))
        ));
        w.commerce
            .assign_number(replacement, "sim", "5", Micros(100_000), "447700900123")
            .await
            .unwrap();
        w.commerce
            .receive_code(replacement, "5150", "code 5150")
            .await
            .unwrap();
        let owner = Owner::Anonymous(tracking.anonymous_id());
        let read = w
            .commerce
            .read_code(replacement, owner, DeliveryChannel::Tracking)
            .await
            .unwrap();
        assert_eq!(read.code, "5150");
        let tracked = w.commerce.track(&tracking).await.unwrap();
        assert_eq!(tracked.orders.len(), 2);
        assert_eq!(
            (tracked.wallet.available, tracked.wallet.held()),
            (Micros(0), Micros(0)),
            "no cashback for anonymous buyers"
        );

        // An unknown (well-formed) tracking ID finds nothing.
        let stranger = TrackingId::generate().unwrap();
        assert!(matches!(
            w.commerce.track(&stranger).await,
            Err(CommandError::Refused(CommerceError::Anonymous(
                nexus_core::domain::anonymous::AnonymousError::NotFound
            )))
        ));
        audit(&w.store.log).await;
        tracking.as_str().to_owned()
    });
    // The tracking ID is stored nowhere; the check can see stored bytes (the
    // transaction hash, a financial fact, is there in plain).
    let raw = raw_bytes_under(&w.dir().join("store"));
    assert!(contains(&raw, b"anon-tx-1"));
    assert!(!contains(&raw, tracking_id.as_bytes()));
}

fn raw_bytes_under(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(raw_bytes_under(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The amounts of every move to unclaimed balances in the log, in order.
async fn unclaimed_moves(log: &AnyLog) -> Vec<Micros> {
    let mut moves = Vec::new();
    for record in log.read_all(1, 10_000).await.unwrap() {
        if record.event_type == "WalletBalanceUnclaimed" {
            let event =
                WalletEvent::decode(&record.event_type, record.schema_version, &record.payload)
                    .unwrap();
            moves.extend(event.entries().iter().map(|e| e.amount));
        }
    }
    moves
}

#[test]
fn a_balance_is_forfeited_only_when_confirmed_and_moves_to_unclaimed_once_at_erasure() {
    let w = World::new();
    runtime().block_on(async {
        let owner = w.funded_customer(9_610_000).await;
        let Owner::Account(account) = owner else {
            unreachable!()
        };
        // An invoice opened before the request, paid while it is pending.
        let late = w
            .commerce
            .request_deposit(owner, Micros(1_000_000))
            .await
            .unwrap();
        let version = w.log().stream_version(&account.stream()).await.unwrap();
        // Given $9.61 available, when the deletion is asked without
        // confirmation: refused with the amount, and nothing is recorded.
        let refused = w
            .accounts
            .request_deletion(account, false)
            .await
            .unwrap_err();
        assert_eq!(
            refused.refusal(),
            Some(&AccountError::BalanceNotForfeited {
                available: Micros(9_610_000)
            })
        );
        assert_eq!(
            w.log().stream_version(&account.stream()).await.unwrap(),
            version
        );
        // Confirmed: requested, answering the balance that will move.
        let forfeited = w.accounts.request_deletion(account, true).await.unwrap();
        assert_eq!(forfeited, Micros(9_610_000));
        // Sent again: refused, nothing changes.
        let again = w
            .accounts
            .request_deletion(account, true)
            .await
            .unwrap_err();
        assert_eq!(
            again.refusal(),
            Some(&AccountError::DeletionAlreadyRequested)
        );
        // Money arriving while the deletion is pending is kept until the erasure.
        w.commerce
            .record_payment(late, unique_report("eth", 1_000_000))
            .await
            .unwrap();
        assert_eq!(
            w.commerce.wallet(owner).await.unwrap().available,
            Micros(10_610_000)
        );
        assert_eq!(unclaimed_moves(&w.log()).await, vec![]);

        w.clock.advance(Duration::days(30));
        w.accounts.erase_account(account).await.unwrap();
        // Erased twice: refused, and the money moved once, all of it.
        let twice = w.accounts.erase_account(account).await.unwrap_err();
        assert_eq!(twice.refusal(), Some(&AccountError::AccountErased));
        assert_eq!(unclaimed_moves(&w.log()).await, vec![Micros(10_610_000)]);
        assert_eq!(w.commerce.wallet(owner).await.unwrap().available, Micros(0));
        let balances = audit(&w.log()).await;
        assert_eq!(balances.get(LedgerAccount::Unclaimed), Micros(10_610_000));
        assert_eq!(balances.get(LedgerAccount::Available(owner)), Micros(0));
    });
}

#[test]
fn a_payment_confirmed_after_the_erasure_ends_in_unclaimed() {
    let w = World::new();
    runtime().block_on(async {
        let owner = w.customer().await;
        let Owner::Account(account) = owner else {
            unreachable!()
        };
        let invoice = w.commerce.request_deposit(owner, Micros(5_000_000)).await.unwrap();
        w.accounts.request_deletion(account, false).await.unwrap();
        w.clock.advance(Duration::days(30));
        w.accounts.erase_account(account).await.unwrap();
        assert_eq!(unclaimed_moves(&w.log()).await, vec![]);
        // Given the account erased, when the gateway confirms the old invoice:
        // credited (the money arrived) and moved on to unclaimed at once.
        let outcome = w
            .commerce
            .record_payment(invoice, unique_report("eth", 5_000_000))
            .await
            .unwrap();
        assert!(matches!(outcome, PaymentOutcome::Credited { amount, .. } if amount == Micros(5_000_000)));
        assert_eq!(w.commerce.wallet(owner).await.unwrap().available, Micros(0));
        assert_eq!(unclaimed_moves(&w.log()).await, vec![Micros(5_000_000)]);
        let balances = audit(&w.log()).await;
        assert_eq!(balances.get(LedgerAccount::Unclaimed), Micros(5_000_000));
    });
}

#[test]
fn deletion_is_refused_while_orders_are_active_and_stops_new_orders() {
    let w = World::new();
    runtime().block_on(async {
        let owner = w.customer().await;
        let Owner::Account(account) = owner else {
            unreachable!()
        };
        w.fund(owner, 2_000_000).await;
        let order = w.placed_order(owner, 500_000).await;
        let refused = w
            .accounts
            .request_deletion(account, true)
            .await
            .unwrap_err();
        assert_eq!(refused.refusal(), Some(&AccountError::ActiveOrders));
        // Delivered but not completed is still active.
        w.commerce
            .assign_number(order, "sim", "1", Micros(0), "15550001")
            .await
            .unwrap();
        w.commerce.receive_code(order, "1", "code 1").await.unwrap();
        w.commerce
            .read_code(order, owner, DeliveryChannel::Api)
            .await
            .unwrap();
        let refused = w
            .accounts
            .request_deletion(account, true)
            .await
            .unwrap_err();
        assert_eq!(refused.refusal(), Some(&AccountError::ActiveOrders));
        w.commerce.complete(order, owner).await.unwrap();
        w.accounts.request_deletion(account, true).await.unwrap();
        // Disabled at once: no new orders.
        assert!(matches!(
            w.commerce.place_order(owner, &request(500_000), None).await,
            Err(CommandError::Refused(CommerceError::Account(
                AccountError::AccountDisabled
            )))
        ));
    });
}

#[test]
fn a_deletion_racing_new_orders_never_leaves_an_active_order_behind() {
    let w = World::new();
    runtime().block_on(async {
        for _ in 0..8 {
            let owner = w.customer().await;
            let Owner::Account(account) = owner else {
                unreachable!()
            };
            w.fund(owner, 5_000_000).await;
            let orders: Vec<_> = (0..4)
                .map(|_| {
                    let commerce = w.commerce.clone();
                    tokio::spawn(async move {
                        commerce.place_order(owner, &request(500_000), None).await
                    })
                })
                .collect();
            let deleted = w.accounts.request_deletion(account, true).await;
            let mut placed = 0;
            for o in orders {
                if o.await.unwrap().is_ok() {
                    placed += 1;
                }
            }
            // Either the deletion went first (and every later order was refused),
            // or it saw an active order and was refused.
            match deleted {
                Ok(_) => {
                    let wallet = w.commerce.wallet(owner).await.unwrap();
                    assert_eq!(
                        wallet.held(),
                        Micros(0),
                        "no order was placed after the deletion"
                    );
                    assert_eq!(placed, 0);
                }
                Err(e) => assert_eq!(e.refusal(), Some(&AccountError::ActiveOrders)),
            }
        }
    });
}

#[test]
fn order_details_and_phone_survive_a_reload_and_go_with_the_owner() {
    use nexus_core::domain::codec::Personal;
    use nexus_core::domain::order::{OrderDetails, PhonePii};
    let w = World::new();
    runtime().block_on(async {
        let owner = w.funded_customer(1_000_000).await;
        let order = w.placed_order(owner, 500_000).await;
        w.commerce
            .assign_number(order, "sim", "7", Micros(1), "4915112345678")
            .await
            .unwrap();
        let loaded = w.commerce.order(order).await.unwrap();
        let details = OrderDetails {
            service: ServiceCode::new("tg").unwrap(),
            country: CountryCode::new("DE").unwrap(),
            channel: Channel::Sms,
        };
        assert_eq!(loaded.placed.unwrap().details, Personal::Plain(details));
        assert_eq!(
            loaded.assigned.unwrap().phone,
            Personal::Plain(PhonePii {
                phone: "4915112345678".into(),
                activation_id: "7".into()
            })
        );
        // Erasing the owner's key takes what was ordered and the number with it.
        w.store.vault.erase(&owner.subject()).unwrap();
        let erased = w.commerce.order(order).await.unwrap();
        assert_eq!(erased.placed.unwrap().details, Personal::Erased);
        assert_eq!(erased.assigned.unwrap().phone, Personal::Erased);
    });
}

#[test]
fn cancel_complete_and_deposit_requests_are_idempotent_by_key() {
    let w = World::new();
    runtime().block_on(async {
        let owner = w.customer().await;
        let scope = owner.wallet_stream();
        let key = |k: &str| IdempotencyKey::new(scope.as_str(), k).unwrap();
        // A deposit request repeated with its key returns the first deposit.
        let first = w
            .commerce
            .request_deposit_keyed(owner, Micros(3_000_000), Some(&key("dep-1")))
            .await
            .unwrap();
        let again = w
            .commerce
            .request_deposit_keyed(owner, Micros(3_000_000), Some(&key("dep-1")))
            .await
            .unwrap();
        assert_eq!(first, again);
        assert!(matches!(
            w.commerce
                .request_deposit_keyed(owner, Micros(1), Some(&key("dep-1")))
                .await,
            Err(CommandError::Refused(CommerceError::IdempotencyKeyReused))
        ));
        w.commerce
            .record_payment(
                first,
                PaymentReport::new(
                    "idem-pay",
                    Payment::new("btc", "idem-tx").unwrap(),
                    Micros(3_000_000),
                )
                .unwrap(),
            )
            .await
            .unwrap();

        // A cancel repeated with its key answers as the first did; refunded once.
        let a = w.placed_order(owner, 1_000_000).await;
        w.commerce
            .cancel_keyed(
                a,
                Some(owner),
                CancelReason::Customer,
                Some(&key("cancel-a")),
            )
            .await
            .unwrap();
        w.commerce
            .cancel_keyed(
                a,
                Some(owner),
                CancelReason::Customer,
                Some(&key("cancel-a")),
            )
            .await
            .unwrap();
        assert!(
            matches!(
                w.commerce
                    .cancel(a, Some(owner), CancelReason::Customer)
                    .await,
                Err(CommandError::Refused(CommerceError::Order(
                    OrderError::WrongStatus(OrderStatus::Cancelled)
                )))
            ),
            "without the key a second cancel is refused"
        );
        assert_eq!(
            w.commerce.wallet(owner).await.unwrap().available,
            Micros(3_000_000)
        );

        // A complete repeated with its key, likewise; the key on another order is refused.
        let b = w.placed_order(owner, 1_000_000).await;
        w.commerce
            .assign_number(b, "sim", "b", Micros(0), "15550100")
            .await
            .unwrap();
        w.commerce
            .receive_code(b, "2468", "code 2468")
            .await
            .unwrap();
        w.commerce
            .read_code(b, owner, DeliveryChannel::Api)
            .await
            .unwrap();
        w.commerce
            .complete_keyed(b, owner, Some(&key("complete-b")))
            .await
            .unwrap();
        w.commerce
            .complete_keyed(b, owner, Some(&key("complete-b")))
            .await
            .unwrap();
        assert!(matches!(
            w.commerce
                .cancel_keyed(
                    b,
                    Some(owner),
                    CancelReason::Customer,
                    Some(&key("complete-b"))
                )
                .await,
            Err(CommandError::Refused(CommerceError::IdempotencyKeyReused))
        ));
        audit(&w.store.log).await;
    });
}
