//! All projections built incrementally while a concurrent workload writes,
//! then rebuilt from scratch: every tree equal byte for byte, and the read
//! models agree with the aggregates folded from the log.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use nexus_core::domain::ledger::{LedgerAccount, Owner};
use nexus_core::log::EventStore;
use nexus_projections::{
    rebuild, RebuildOptions, RunState, Runner, RunnerConfig, PROJECTION_NAMES,
};

fn dumps(world: &World) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    PROJECTION_NAMES
        .iter()
        .map(|n| world.models.dump(n).unwrap())
        .collect()
}

fn assert_same(a: &[Vec<(Vec<u8>, Vec<u8>)>], b: &[Vec<(Vec<u8>, Vec<u8>)>], what: &str) {
    for ((name, x), y) in PROJECTION_NAMES.iter().zip(a).zip(b) {
        assert_eq!(x.len(), y.len(), "{what}: {name} has as many keys");
        for (i, (kx, ky)) in x.iter().zip(y).enumerate() {
            assert_eq!(kx, ky, "{what}: {name}, entry {i} equal byte for byte");
        }
    }
}

#[test]
fn incremental_build_during_a_workload_equals_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()));
    runtime().block_on(async {
        // Small batches: many commits, at other boundaries than the rebuild's.
        let runner = Runner::start(
            world.log(),
            &world.models,
            RunnerConfig {
                batch_size: 7,
                ..RunnerConfig::default()
            },
        )
        .unwrap();
        concurrent_workload(&world, 6, 12).await;
        let head = world.store.log.head();
        runner
            .wait_for(None, head, Duration::from_secs(20))
            .await
            .unwrap();
        for status in runner.status().await {
            assert_eq!(status.state, RunState::Running, "{}", status.name);
            assert_eq!((status.position, status.lag_events), (head, 0));
            assert_eq!(status.lag_seconds, Some(0.0));
        }
        runner.stop().await;
        let incremental = dumps(&world);
        assert!(
            incremental.iter().all(|d| d.len() > 1),
            "every read model has content"
        );

        let report = world.rebuild_all().await;
        assert_eq!(report.head, head);
        assert_eq!(report.failures().count(), 0);
        assert_same(&incremental, &dumps(&world), "one-window rebuild");

        // Windows and reads of odd sizes write the same bytes.
        let options = RebuildOptions {
            read_batch: 13,
            window_events: 29,
            max_staged_keys: 50,
            max_cached_rows: 40,
        };
        rebuild(
            &world.log(),
            &world.models,
            world.models.projections(),
            &options,
            |_, _| {},
        )
        .await
        .unwrap();
        assert_same(&incremental, &dumps(&world), "small-window rebuild");

        // The read models agree with the log.
        let (balances, _) = ledger_from_log(&world.store.log, head).await;
        let wallets = world.models.wallets().unwrap();
        assert_eq!(
            wallets.trial_balance().unwrap(),
            0,
            "the read model's trial balance is zero"
        );
        let mut owners = 0;
        for wallet in wallets.all_wallets() {
            let (owner, balance) = wallet.unwrap();
            assert_eq!(
                balance.available,
                balances.get(LedgerAccount::Available(owner))
            );
            assert_eq!(balance.held, balances.get(LedgerAccount::Held(owner)));
            let folded = world.commerce.wallet(owner).await.unwrap();
            assert_eq!(
                (balance.available, balance.held),
                (folded.available, folded.held())
            );
            owners += 1;
        }
        assert!(owners >= 12, "customers and anonymous buyers have wallets");
        for (account, balance) in wallets.system_balances().unwrap() {
            assert_eq!(balance, balances.get(account), "{account:?}");
        }
        let orders = world.models.orders().unwrap();
        assert!(
            orders.active(None, 100).unwrap().is_empty(),
            "every order settled"
        );
        for seed in 0..6u64 {
            let account = world
                .models
                .accounts()
                .unwrap()
                .account_by_email_hash(
                    &world
                        .accounts
                        .email_lookup_hash(&format!("customer{seed}@example.com"))
                        .unwrap(),
                )
                .unwrap()
                .expect("the address's holder");
            let page = orders
                .by_owner(&Owner::Account(account), None, 100)
                .unwrap();
            assert_eq!(page.items.len(), 12);
            for order in page.items {
                let folded = world.commerce.order(order.order).await.unwrap();
                assert_eq!(Some(order.status), folded.status);
            }
        }
        let routes = world.models.catalog().unwrap().routes().unwrap();
        let settled: u64 = routes.iter().map(|r| r.orders).sum();
        assert_eq!(
            settled,
            6 * 12 + 6,
            "every order settled once in the catalog"
        );
    });
}
