//! What each read model answers, checked against a scripted history.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use chrono::Duration as Span;
use nexus_core::domain::account::secret_hash;
use nexus_core::domain::clock::Clock;
use nexus_core::domain::codec::Personal;

use nexus_core::domain::ledger::{Owner, Reason};
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{CancelReason, DeliveryChannel, OrderPolicy, OrderStatus};
use nexus_core::log::EventStore;
use nexus_projections::accounts::AccountStatusView;
use nexus_projections::retention::DueSubject;
use nexus_projections::wallets::{DepositStatus, Reference};
use nexus_projections::{Cursor, Runner, RunnerConfig};

fn email_hash(world: &World, email: &str) -> [u8; 32] {
    world.accounts.email_lookup_hash(email).unwrap()
}

async fn caught_up(world: &World, runner: &Runner<nexus_core::log::AnyLog>) {
    let head = world.store.log.head();
    runner
        .wait_for(None, head, Duration::from_secs(10))
        .await
        .unwrap();
}

#[test]
fn accounts_by_id_by_email_and_api_keys() {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()));
    runtime().block_on(async {
        let runner = Runner::start(world.log(), &world.models, RunnerConfig::default()).unwrap();
        let account = world.verified("first@example.com").await;
        let key = world
            .accounts
            .create_api_key(
                account,
                &nexus_core::domain::account::ApiKeySettings::legacy(),
            )
            .await
            .unwrap();
        let other = world
            .accounts
            .create_api_key(
                account,
                &nexus_core::domain::account::ApiKeySettings::legacy(),
            )
            .await
            .unwrap();
        world
            .accounts
            .revoke_api_key(account, other.id)
            .await
            .unwrap();
        world.accounts.set_objection(account, true).await.unwrap();
        caught_up(&world, &runner).await;
        let accounts = world.models.accounts().unwrap();
        let summary = accounts.account(account).unwrap().unwrap();
        assert_eq!(summary.status, AccountStatusView::Active);
        assert_eq!(summary.email, Personal::Plain("first@example.com".into()));
        assert!(summary.verified && summary.objection);
        assert_eq!(summary.live_api_keys, 1);
        assert_eq!(
            accounts
                .account_by_email_hash(&email_hash(&world, "FIRST@example.com"))
                .unwrap(),
            Some(account)
        );
        let live = accounts
            .api_key(&secret_hash(key.key.expose()))
            .unwrap()
            .unwrap();
        assert_eq!(
            (live.account, live.key_id, live.revoked()),
            (account, key.id, false)
        );
        assert!(accounts
            .api_key(&secret_hash(other.key.expose()))
            .unwrap()
            .unwrap()
            .revoked());
        assert_eq!(accounts.api_key(&[0; 32]).unwrap(), None);

        world
            .accounts
            .change_email(account, "second@example.com")
            .await
            .unwrap();
        world
            .accounts
            .request_deletion(account, true)
            .await
            .unwrap();
        caught_up(&world, &runner).await;
        let summary = accounts.account(account).unwrap().unwrap();
        assert_eq!(summary.email, Personal::Plain("second@example.com".into()));
        let AccountStatusView::DeletionPending { erase_due_at } = summary.status else {
            panic!("deletion pending, not {:?}", summary.status)
        };
        assert_eq!(erase_due_at, start() + Span::days(30));
        assert_eq!(
            accounts
                .account_by_email_hash(&email_hash(&world, "first@example.com"))
                .unwrap(),
            None
        );
        assert_eq!(
            accounts
                .account_by_email_hash(&email_hash(&world, "second@example.com"))
                .unwrap(),
            Some(account)
        );
        let retention = world.models.retention().unwrap();
        assert_eq!(
            retention.due_at(DueSubject::Account(account)).unwrap(),
            Some(erase_due_at)
        );
        let due = retention.due(erase_due_at, None, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].subject, DueSubject::Account(account));
        assert!(retention
            .due(erase_due_at - Span::seconds(1), None, 10)
            .unwrap()
            .is_empty());

        world.accounts.withdraw_deletion(account).await.unwrap();
        caught_up(&world, &runner).await;
        assert_eq!(
            accounts.account(account).unwrap().unwrap().status,
            AccountStatusView::Active
        );
        assert_eq!(
            retention.due_at(DueSubject::Account(account)).unwrap(),
            None
        );
        assert!(retention.schedule(None, 10).unwrap().is_empty());
        runner.stop().await;
    });
}

#[test]
fn wallets_ledger_deposits_and_orders() {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()));
    runtime().block_on(async {
        let runner = Runner::start(world.log(), &world.models, RunnerConfig::default()).unwrap();
        let account = world.verified("buyer@example.com").await;
        let owner = Owner::Account(account);
        world.fund(owner, 10_000_000).await;
        let unpaid = world
            .commerce
            .request_deposit(owner, Micros(5_000_000))
            .await
            .unwrap();
        let failed = world
            .commerce
            .request_deposit(owner, Micros(7_000_000))
            .await
            .unwrap();
        world
            .commerce
            .fail_deposit(failed, "expired")
            .await
            .unwrap();
        let first = world
            .commerce
            .place_order(owner, &request_for("tg", "DE", 1_000_000), None)
            .await
            .unwrap();
        world.clock.advance(Span::seconds(10));
        let second = world
            .commerce
            .place_order(owner, &request_for("wa", "US", 2_000_000), None)
            .await
            .unwrap();
        world
            .commerce
            .cancel(first.order, Some(owner), CancelReason::Customer)
            .await
            .unwrap();
        world
            .commerce
            .assign_number(second.order, "sim-a", "a-1", Micros(500_000), "15550001111")
            .await
            .unwrap();
        caught_up(&world, &runner).await;

        let wallets = world.models.wallets().unwrap();
        let balance = wallets.balance(&owner).unwrap();
        assert_eq!(
            (balance.available, balance.held),
            (Micros(8_000_000), Micros(2_000_000))
        );
        let page = wallets.ledger(&owner, None, 100).unwrap();
        let reasons: Vec<Reason> = page.items.iter().map(|r| r.reason).collect();
        assert_eq!(
            reasons,
            [Reason::Void, Reason::Hold, Reason::Hold, Reason::Deposit],
            "newest first"
        );
        let running: Vec<i64> = page.items.iter().map(|r| r.balance().0).collect();
        assert_eq!(running, [10_000_000; 4], "holds and voids keep the balance");
        assert_eq!(page.items[0].reference, Reference::Order(first.order));
        assert_eq!(page.items[0].available, Micros(8_000_000));
        // Paged one at a time with the cursor: the same rows.
        let mut cursor: Option<Cursor> = None;
        let mut paged = Vec::new();
        loop {
            let page = wallets.ledger(&owner, cursor, 1).unwrap();
            paged.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(paged, page.items);

        let deposits = wallets.deposits(&owner, None, 10).unwrap().items;
        let statuses: Vec<_> = deposits.iter().map(|d| (d.deposit, d.status)).collect();
        assert_eq!(statuses[0], (failed, DepositStatus::Failed));
        assert_eq!(statuses[1], (unpaid, DepositStatus::Waiting));
        assert_eq!(statuses[2].1, DepositStatus::Paid);
        assert_eq!(deposits[2].paid, Micros(10_000_000));
        assert_eq!(deposits[2].payments.len(), 1);
        assert_eq!(deposits[0].failure.as_deref(), Some("expired"));
        let system: i64 = wallets
            .system_balances()
            .unwrap()
            .iter()
            .map(|(_, m)| m.0)
            .sum();
        assert_eq!(
            system, -10_000_000,
            "the crypto clearing account paid the deposit"
        );
        assert_eq!(wallets.trial_balance().unwrap(), 0);

        let orders = world.models.orders().unwrap();
        let mine = orders.by_owner(&owner, None, 10).unwrap().items;
        let ids: Vec<_> = mine.iter().map(|o| o.order).collect();
        assert_eq!(ids, [second.order, first.order], "newest first");
        let assigned = &mine[0];
        assert_eq!(assigned.status, OrderStatus::NumberAssigned);
        assert_eq!(assigned.phone, Personal::Plain("15550001111".into()));
        let details = assigned.details.plain().expect("what was ordered");
        assert_eq!(
            (details.service.as_str(), details.country.as_str()),
            ("wa", "US")
        );
        let policy = OrderPolicy::default();
        let now = world.clock.now();
        assert_eq!(
            assigned.cancel_available_at(&policy),
            Some(now + policy.cancel_guard)
        );
        assert!(!assigned.can_cancel(&policy, now));
        assert!(assigned.can_cancel(&policy, now + policy.cancel_guard));
        assert_eq!(mine[1].status, OrderStatus::Cancelled);
        let active = orders.active(None, 10).unwrap();
        assert_eq!(active, vec![(assigned.expires_at, second.order)]);
        assert!(orders.has_active_orders(&owner, 100).unwrap());
        assert!(orders
            .owned_order(second.order, &Owner::Account(Default::default()))
            .unwrap()
            .is_none());

        // The code comes and is read: captured, cashback, completed.
        world.clock.advance(Span::seconds(42));
        world
            .commerce
            .receive_code(second.order, "999", "code 999")
            .await
            .unwrap();
        world
            .commerce
            .read_code(second.order, owner, DeliveryChannel::Api)
            .await
            .unwrap();
        world.commerce.complete(second.order, owner).await.unwrap();
        caught_up(&world, &runner).await;
        let balance = wallets.balance(&owner).unwrap();
        assert_eq!(
            (balance.available, balance.held),
            (Micros(8_040_000), Micros(0)),
            "2% cashback"
        );
        assert!(orders.active(None, 10).unwrap().is_empty());
        let history = orders.history(account, None, 10).unwrap().items;
        assert_eq!(history[0].outcome, OrderStatus::Completed);
        assert_eq!(
            history[0].details.plain().map(|d| d.service.as_str()),
            Some("wa")
        );
        let route = world
            .models
            .catalog()
            .unwrap()
            .route("wa", "US", "sim-a")
            .unwrap()
            .unwrap();
        assert_eq!((route.orders, route.successes, route.failures), (1, 1, 0));
        assert_eq!(route.median_time_to_code_secs, Some(42));
        assert_eq!(route.success_rate(), 1.0);
        // The cancelled order had no number: its route has no provider.
        let none = world
            .models
            .catalog()
            .unwrap()
            .route("tg", "DE", "")
            .unwrap()
            .unwrap();
        assert_eq!((none.orders, none.failures), (1, 1));

        let months = world
            .models
            .retention()
            .unwrap()
            .financial_months()
            .unwrap();
        assert_eq!(months.len(), 1);
        let financial = {
            let events = world.store.log.read_all(1, 1000).await.unwrap();
            events
                .iter()
                .filter(|e| {
                    ["wallet-", "deposit-", "payment-"]
                        .iter()
                        .any(|p| e.stream.as_str().starts_with(p))
                })
                .count() as u64
        };
        assert_eq!(months[0].records, financial);
        assert!(months[0].due_at > chrono::Utc::now() + Span::days(7 * 365 - 31));
        runner.stop().await;
    });
}

#[test]
fn anonymous_buyers_are_scheduled_for_erasure_after_ninety_days() {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()));
    runtime().block_on(async {
        let runner = Runner::start(world.log(), &world.models, RunnerConfig::default()).unwrap();
        let order = anonymous_workload(&world, 1).await;
        caught_up(&world, &runner).await;
        let orders = world.models.orders().unwrap();
        let view = orders.order(order).unwrap().unwrap();
        let Owner::Anonymous(anon) = view.owner else {
            panic!("an anonymous order")
        };
        let buyer = orders.anonymous(anon).unwrap().unwrap();
        assert_eq!(buyer.orders_started, 1);
        assert_eq!(
            orders.by_anonymous(anon, None, 10).unwrap().items[0].order,
            order
        );
        let due = world
            .models
            .retention()
            .unwrap()
            .due_at(DueSubject::Anonymous(anon))
            .unwrap();
        assert_eq!(due, Some(buyer.created_at + Span::days(90)));
        runner.stop().await;
    });
}
