//! A real sled store in a temp dir with the commerce and accounts services over
//! it, for the tests that run the fulfilment worker; and customers with funded
//! wallets.

#![allow(dead_code)]

use std::sync::Arc;

use nexus_core::domain::account::LookupKey;
use nexus_core::domain::clock::SystemClock;
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::OrderPolicy;
use nexus_core::domain::wallet::Payment;
use nexus_core::log::SledLog;
use nexus_core::service::account_service::{Accounts, AccountsConfig};
use nexus_core::service::commerce_service::Commerce;
use nexus_core::vault::MasterKeySource;
use nexus_core::{Store, StoreConfig};

pub struct World {
    _dir: tempfile::TempDir,
    pub store: Store,
    pub commerce: Arc<Commerce<SledLog>>,
    pub accounts: Accounts<SledLog>,
}

pub fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreConfig {
        dir: dir.path().join("store"),
        master_key: MasterKeySource::GenerateAt(dir.path().join("master.key")),
        cache_capacity_bytes: 64 << 20,
    })
    .unwrap();
    let commerce = Arc::new(Commerce::new(
        store.log.clone(),
        store.vault.clone(),
        OrderPolicy::default(),
        Arc::new(SystemClock),
    ));
    let accounts = Accounts::new(
        store.log.clone(),
        store.vault.clone(),
        LookupKey::new([3; 32]),
        AccountsConfig::default(),
    )
    .unwrap()
    .with_insecure_cost_for_tests(4);
    World {
        _dir: dir,
        store,
        commerce,
        accounts,
    }
}

/// A new registered customer whose wallet was paid `micros` by a deposit.
pub async fn funded_customer(w: &World, micros: i64) -> Owner {
    let email = format!("c-{}@example.com", uuid::Uuid::new_v4().simple());
    let account = w
        .accounts
        .register(&email, "correct horse battery")
        .await
        .unwrap()
        .account;
    let owner = Owner::Account(account);
    let deposit = w
        .commerce
        .request_deposit(owner, Micros(micros))
        .await
        .unwrap();
    let tx = format!("tx-{}", uuid::Uuid::new_v4().simple());
    w.commerce
        .record_payment(deposit, Payment::new("btc", &tx).unwrap(), Micros(micros))
        .await
        .unwrap();
    owner
}
