//! The finance audit over a real log: the replayed ledger sums to zero, equals
//! the wallets read model once it is caught up (and differs, visibly, from one
//! that is behind), stops at a time, and exports every entry.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use nexus_core::domain::ledger::{LedgerAccount, Owner, Reason};
use nexus_core::domain::money::Micros;
use nexus_core::log::EventStore;
use nexus_projections::audit::{compare_with_read_model, export_entries, trial_balance};
use nexus_projections::wallets::Reference;
use nexus_projections::{Runner, RunnerConfig};

#[test]
fn the_replayed_ledger_balances_and_matches_the_read_model() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let _entered = rt.enter();
    let world = Arc::new(World::open(dir.path()));
    rt.block_on(async {
        customer_workload(&world, 1, 20).await;
        // The trial balance's time is the log's recording time.
        let first_half = world.log().head();
        let first_half_ends = world.log().read_all(first_half, 1).await.unwrap()[0].recorded_at;
        tokio::time::sleep(Duration::from_millis(5)).await;
        customer_workload(&world, 2, 20).await;
        anonymous_workload(&world, 3).await;
        let head = world.log().head();

        let whole = trial_balance(world.log().as_ref(), None).await.unwrap();
        assert!(whole.ok(), "{whole:?}");
        assert_eq!(whole.total(), 0);
        assert_eq!(whole.position, head);
        let (expected, _) = ledger_from_log(&world.log(), head).await;
        assert_eq!(whole.balances, expected);

        // At a time: only what was recorded by then.
        let early = trial_balance(world.log().as_ref(), Some(first_half_ends))
            .await
            .unwrap();
        let (expected, _) = ledger_from_log(&world.log(), first_half).await;
        assert_eq!(early.balances, expected);
        assert!(early.entries_posted < whole.entries_posted);
        assert_eq!(early.total(), 0);

        // The read model caught up agrees with the replay, account by account.
        let runner = Runner::start(world.log(), &world.models, RunnerConfig::default()).unwrap();
        runner
            .wait_for(Some("wallets"), head, Duration::from_secs(30))
            .await
            .unwrap();
        let wallets = world.models.wallets().unwrap();
        let (mismatches, count) = compare_with_read_model(&whole, &wallets).unwrap();
        assert_eq!(count, 0, "{mismatches:?}");

        // One more deposit the read model has not applied yet: the audit sees it.
        runner.stop().await;
        let owner = Owner::Account(world.verified("late@example.com").await);
        world.fund(owner, 1_000_000).await;
        let now = trial_balance(world.log().as_ref(), None).await.unwrap();
        let (mismatches, count) = compare_with_read_model(&now, &wallets).unwrap();
        assert!(count >= 2, "{mismatches:?}");
        assert!(mismatches
            .iter()
            .any(|m| m.account == "crypto_clearing" && m.replayed.0 == m.read_model.0 - 1_000_000));
        assert!(mismatches
            .iter()
            .any(|m| m.account.starts_with("available:account-") && m.replayed.0 == 1_000_000));

        // The export: one line per entry, in the range asked for.
        let mut out = Vec::new();
        let written = export_entries(world.log().as_ref(), None, Some(first_half_ends), &mut out)
            .await
            .unwrap();
        assert_eq!(written, early.entries_posted);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count() as u64, written);
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["amount"].as_str().unwrap().contains('.'));
            if v["debit"] == "crypto_clearing" {
                assert_eq!(v["reason"], "deposit");
            }
        }
        assert!(!text.contains("@example.com"));
        let cleared = early.balances.get(LedgerAccount::CryptoClearing);
        assert!(cleared.0 < 0, "deposits came in: {cleared:?}");
    });
}

#[test]
fn an_erased_balance_shows_on_unclaimed_in_the_read_model_the_audit_and_the_export() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let _entered = rt.enter();
    let world = World::open(dir.path());
    rt.block_on(async {
        // Given a customer with $9.61 who confirmed its forfeit, when the
        // account is erased 30 days later:
        let owner = world.funded_customer(9_610_000).await;
        let Owner::Account(account) = owner else {
            unreachable!()
        };
        world
            .accounts
            .request_deletion(account, true)
            .await
            .unwrap();
        world.clock.advance(chrono::Duration::days(30));
        world.accounts.erase_account(account).await.unwrap();
        let head = world.log().head();

        // the replayed ledger sums to zero and shows the amount on unclaimed,
        let audit = trial_balance(world.log().as_ref(), None).await.unwrap();
        assert!(audit.ok(), "{audit:?}");
        assert_eq!(audit.total(), 0);
        assert_eq!(
            audit.balances.get(LedgerAccount::Unclaimed),
            Micros(9_610_000)
        );
        assert_eq!(
            audit.balances.get(LedgerAccount::Available(owner)),
            Micros(0)
        );

        // the wallets read model agrees, with a ledger row of its own,
        let runner = Runner::start(world.log(), &world.models, RunnerConfig::default()).unwrap();
        runner
            .wait_for(None, head, Duration::from_secs(30))
            .await
            .unwrap();
        runner.stop().await;
        let wallets = world.models.wallets().unwrap();
        let (mismatches, count) = compare_with_read_model(&audit, &wallets).unwrap();
        assert_eq!(count, 0, "{mismatches:?}");
        assert_eq!(wallets.balance(&owner).unwrap().available, Micros(0));
        let system = wallets.system_balances().unwrap();
        assert!(system.contains(&(LedgerAccount::Unclaimed, Micros(9_610_000))));
        let newest = &wallets.ledger(&owner, None, 1).unwrap().items[0];
        assert_eq!(newest.reason, Reason::Unclaimed);
        assert_eq!(newest.reference, Reference::Unclaimed);
        assert_eq!(newest.available_change, Micros(-9_610_000));

        // the export has the entry,
        let mut out = Vec::new();
        export_entries(world.log().as_ref(), None, None, &mut out)
            .await
            .unwrap();
        let moved: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["credit"] == "unclaimed")
            .collect();
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(moved[0]["reason"], "unclaimed");
        assert_eq!(moved[0]["amount"], "9.610000");
        assert_eq!(moved[0]["event"], "WalletBalanceUnclaimed");

        // and a rebuild of the wallets writes the same bytes.
        let incremental = world.models.dump("wallets").unwrap();
        world.rebuild_all().await;
        assert_eq!(world.models.dump("wallets").unwrap(), incremental);
    });
}
