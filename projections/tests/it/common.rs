//! A real store (log and vault on sled in a temp dir), the command services
//! that write realistic events into it, and the read models beside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Duration;
use nexus_core::domain::codec::DomainEvent;
use nexus_core::domain::deposit::PaymentReport;
use nexus_core::domain::ids::OrderId;
use nexus_core::domain::ledger::{Balances, LedgerAccount, Owner};
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{CancelReason, DeliveryChannel};
use nexus_core::domain::wallet::{Payment, WalletEvent};
use nexus_core::log::{AnyLog, EventStore};
use nexus_projections::{rebuild, ReadModels, ReadModelsConfig, RebuildOptions, RebuildReport};

pub use nexus_testkit::{request_for, runtime, start, store_config};

pub fn projections_dir(dir: &Path) -> PathBuf {
    dir.join("projections")
}

/// The test kit's world, opened at a given dir, with the read models beside
/// the store.
pub struct World {
    kit: nexus_testkit::World,
    pub models: Arc<ReadModels>,
}

impl World {
    /// Opens (or creates) the store and read models under `dir`.
    pub fn open(dir: &Path) -> World {
        let kit = nexus_testkit::World::builder().at(dir).build();
        let models = ReadModels::open(
            &ReadModelsConfig::new(projections_dir(dir)),
            kit.store.vault.clone(),
        )
        .unwrap();
        World {
            kit,
            models: Arc::new(models),
        }
    }

    /// Rebuilds every read model from the log, with the default options.
    pub async fn rebuild_all(&self) -> RebuildReport {
        rebuild(
            &self.log(),
            &self.models,
            self.models.projections(),
            &RebuildOptions::default(),
            |_, _| {},
        )
        .await
        .unwrap()
    }
}

impl std::ops::Deref for World {
    type Target = nexus_testkit::World;

    fn deref(&self) -> &Self::Target {
        &self.kit
    }
}

/// A tiny deterministic random source (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SERVICES: [&str; 3] = ["tg", "wa", "go"];
const COUNTRIES: [&str; 3] = ["DE", "US", "FR"];
const PROVIDERS: [&str; 2] = ["sim-a", "sim-b"];

/// One customer's share of the workload: `orders` orders, each cancelled
/// early, delivered and completed, or left with a number (to expire later).
/// Returns the orders left open.
pub async fn customer_workload(world: &World, seed: u64, orders: usize) -> Vec<OrderId> {
    let mut rng = Rng::new(seed);
    let account = world.verified(&format!("customer{seed}@example.com")).await;
    let owner = Owner::Account(account);
    world.fund(owner, 50_000_000).await;
    let commerce = &world.commerce;
    let mut open = Vec::new();
    for i in 0..orders {
        let req = request_for(
            SERVICES[rng.below(3) as usize],
            COUNTRIES[rng.below(3) as usize],
            100_000 + 10_000 * rng.below(50) as i64,
        );
        let placed = commerce.place_order(owner, &req, None).await.unwrap();
        let id = placed.order;
        match rng.below(10) {
            0 | 1 => {
                commerce
                    .cancel(id, Some(owner), CancelReason::Customer)
                    .await
                    .unwrap();
            }
            2 => {
                assign(world, id, &mut rng, seed, i).await;
                open.push(id);
            }
            _ => {
                assign(world, id, &mut rng, seed, i).await;
                commerce
                    .receive_code(id, "12345", "Your code is 12345")
                    .await
                    .unwrap();
                commerce
                    .read_code(id, owner, DeliveryChannel::Api)
                    .await
                    .unwrap();
                if rng.below(2) == 0 {
                    commerce.complete(id, owner).await.unwrap();
                } else {
                    open.push(id);
                }
            }
        }
        if rng.below(8) == 0 {
            world.fund(owner, 1_000_000).await;
        }
    }
    if rng.below(2) == 0 {
        world
            .commerce
            .request_deposit(owner, Micros(5_000_000))
            .await
            .unwrap();
    }
    world
        .accounts
        .set_objection(account, rng.below(2) == 0)
        .await
        .unwrap();
    let key = world
        .accounts
        .create_api_key(
            account,
            &nexus_core::domain::account::ApiKeySettings::legacy(),
        )
        .await
        .unwrap();
    if rng.below(2) == 0 {
        world
            .accounts
            .revoke_api_key(account, key.id)
            .await
            .unwrap();
    }
    open
}

async fn assign(world: &World, id: OrderId, rng: &mut Rng, seed: u64, i: usize) {
    let provider = PROVIDERS[rng.below(2) as usize];
    world
        .commerce
        .assign_number(
            id,
            provider,
            &format!("act-{seed}-{i}"),
            Micros(50_000),
            &format!("49151{seed:04}{i:04}"),
        )
        .await
        .unwrap();
}

/// An anonymous buyer: invoice, payment (which starts the order), number, code,
/// delivery by tracking ID. Returns the order (delivered, not completed).
pub async fn anonymous_workload(world: &World, seed: u64) -> OrderId {
    let created = world
        .commerce
        .create_anonymous_order(&request_for("tg", "GB", 300_000))
        .await
        .unwrap();
    let tx = format!("0xa{}", uuid::Uuid::new_v4().simple());
    world
        .commerce
        .record_payment(
            created.invoice,
            PaymentReport::new(&tx, Payment::new("btc", &tx).unwrap(), Micros(300_000)).unwrap(),
        )
        .await
        .unwrap();
    let tracked = world.commerce.track(&created.tracking_id).await.unwrap();
    let (order, _) = tracked.orders.last().cloned().unwrap();
    world
        .commerce
        .assign_number(
            order,
            "sim-a",
            &format!("anon-{seed}"),
            Micros(100_000),
            &format!("44770{seed:06}"),
        )
        .await
        .unwrap();
    world
        .commerce
        .receive_code(order, "777", "code 777")
        .await
        .unwrap();
    world
        .commerce
        .read_code(
            order,
            Owner::Anonymous(created.anon),
            DeliveryChannel::Tracking,
        )
        .await
        .unwrap();
    order
}

/// Several concurrent tasks of customers and anonymous buyers, then the
/// deadline: open orders expire or complete. Some accounts ask for deletion.
pub async fn concurrent_workload(world: &Arc<World>, customers: u64, orders_each: usize) {
    let mut tasks = Vec::new();
    for seed in 0..customers {
        let world = world.clone();
        tasks.push(tokio::spawn(async move {
            let mut open = customer_workload(&world, seed, orders_each).await;
            open.push(anonymous_workload(&world, seed).await);
            open
        }));
    }
    let mut open = Vec::new();
    for task in tasks {
        open.extend(task.await.unwrap());
    }
    world.clock.advance(Duration::minutes(30));
    for id in open {
        world.commerce.process_deadline(id).await.unwrap();
    }
    // A deletion request and a withdrawal (no active orders are left).
    let first = world.verified("leaving@example.com").await;
    world.accounts.request_deletion(first, true).await.unwrap();
    let second = world.verified("staying@example.com").await;
    world.accounts.request_deletion(second, true).await.unwrap();
    world.accounts.withdraw_deletion(second).await.unwrap();
}

/// Ledger balances folded from the log's wallet events up to `until`, and
/// how many wallet events touched each owner.
pub async fn ledger_from_log(
    log: &AnyLog,
    until: u64,
) -> (Balances, std::collections::HashMap<Owner, u64>) {
    let mut balances = Balances::default();
    let mut rows = std::collections::HashMap::new();
    let mut next = 1;
    while next <= until {
        let batch = log.read_all(next, 1000).await.unwrap();
        let Some(last) = batch.last() else { break };
        next = last.position + 1;
        for record in batch.iter().filter(|r| r.position <= until) {
            if !record.stream.as_str().starts_with("wallet-") {
                continue;
            }
            let event =
                WalletEvent::decode(&record.event_type, record.schema_version, &record.payload)
                    .unwrap();
            let mut touched = std::collections::HashSet::new();
            for entry in event.entries() {
                balances.post(&entry).unwrap();
                for account in [entry.debit, entry.credit] {
                    if let LedgerAccount::Available(o) | LedgerAccount::Held(o) = account {
                        touched.insert(o);
                    }
                }
            }
            for owner in touched {
                *rows.entry(owner).or_default() += 1;
            }
        }
    }
    (balances, rows)
}
