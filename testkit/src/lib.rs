//! The world the integration tests run in, and the steps their scenarios repeat.
//!
//! A [`World`] is a real store (log and vault on sled in a temp dir, or in a
//! given dir to reopen after a crash), a [`ManualClock`], and the command
//! services over them, with bcrypt at the insecure test cost. Steps are methods:
//! `w.customer()`, `w.fund(owner, micros)`, `w.placed_order(owner, micros)`,
//! `w.number_assigned(order)`, `w.code_received(order)`; each unwraps, so a
//! scenario reads as the steps it takes and asserts only what it is about.

pub mod postgres;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use nexus_core::domain::clock::{Clock, ManualClock, SystemClock};
use nexus_core::domain::commerce::PlaceOrder;
use nexus_core::domain::deposit::PaymentReport;
use nexus_core::domain::ids::{AccountId, OrderId};
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{Channel, CountryCode, OrderPolicy, ServiceCode};
use nexus_core::domain::wallet::Payment;
use nexus_core::log::AnyLog;
use nexus_core::service::account_service::{Accounts, AccountsConfig};
use nexus_core::service::commerce_service::{Commerce, PaymentOutcome};
use nexus_core::service::legal_hold_service::LegalHoldService;
use nexus_core::service::policy_service::PolicyService;
use nexus_core::vault::MasterKeySource;
use nexus_core::{Store, StoreConfig};

/// The password every test customer registers with.
pub const PASSWORD: &str = "correct horse battery";
/// bcrypt's minimum: a test does not spend a quarter second per hash.
pub const TEST_BCRYPT_COST: u32 = 4;

/// The instant every manual clock starts at (2025-11-24T16:00:00Z).
pub fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_764_000_000, 0).expect("a valid timestamp")
}

/// The store's files under `dir`: `store/` and `master.key`.
pub fn store_config(dir: &Path) -> StoreConfig {
    StoreConfig {
        dir: dir.join("store"),
        master_key: MasterKeySource::GenerateAt(dir.join("master.key")),
        cache_capacity_bytes: 64 << 20,
    }
}

/// A multi-threaded runtime of two workers, as the services run in.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// An order of `service` in `country` by SMS at `price_micros`.
pub fn request_for(service: &str, country: &str, price_micros: i64) -> PlaceOrder {
    PlaceOrder {
        service: ServiceCode::new(service).expect("a valid service code"),
        country: CountryCode::new(country).expect("a valid country code"),
        channel: Channel::Sms,
        price: Micros(price_micros),
    }
}

/// A Telegram number in Germany by SMS at `price_micros`.
pub fn request(price_micros: i64) -> PlaceOrder {
    request_for("tg", "DE", price_micros)
}

/// The name the test harness knows the test `name` of module `module_path`
/// by (`module_path!()` of the caller): its path without the crate's name, as a
/// test that re-runs its own binary as a child passes to `--exact`.
pub fn test_name(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_, module)) => format!("{module}::{name}"),
        None => name.to_owned(),
    }
}

/// A fresh, unique e-mail address.
pub fn unique_email() -> String {
    format!("c-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// A fresh, unique payment (its transaction id is new).
pub fn unique_payment(currency: &str) -> Payment {
    let tx = format!("0x{}", uuid::Uuid::new_v4().simple());
    Payment::new(currency, &tx).expect("a valid payment")
}

/// The gateway's report of a fresh payment (its gateway id and transaction are
/// new) of `micros` in all.
pub fn unique_report(currency: &str, micros: i64) -> PaymentReport {
    let gateway_payment = uuid::Uuid::new_v4().simple().to_string();
    PaymentReport::new(&gateway_payment, unique_payment(currency), Micros(micros))
        .expect("a valid report")
}

/// How a [`World`] is built: where, and which clock the services read.
pub struct WorldBuilder {
    dir: Option<PathBuf>,
    system_clock: bool,
    accounts_config: AccountsConfig,
}

impl WorldBuilder {
    /// Opens (or reopens) the store under `dir` instead of a new temp dir.
    pub fn at(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    /// The services read the system's clock (for workers that wait in real
    /// time); [`World::clock`] then moves nothing.
    pub fn system_clock(mut self) -> Self {
        self.system_clock = true;
        self
    }

    /// The accounts service's configuration (the default otherwise); its bcrypt
    /// cost is replaced by [`TEST_BCRYPT_COST`].
    pub fn accounts_config(mut self, config: AccountsConfig) -> Self {
        self.accounts_config = config;
        self
    }

    pub fn build(self) -> World {
        let (dir, temp) = match self.dir {
            Some(dir) => (dir, None),
            None => {
                let temp = tempfile::tempdir().expect("a temp dir");
                (temp.path().to_owned(), Some(temp))
            }
        };
        let store = Store::open(&store_config(&dir)).expect("the store opens");
        let clock = Arc::new(ManualClock::new(start()));
        let services_clock: Arc<dyn Clock> = if self.system_clock {
            Arc::new(SystemClock)
        } else {
            clock.clone()
        };
        let (log, vault) = (store.log.clone(), store.vault.clone());
        let accounts = Accounts::new(log.clone(), vault.clone(), self.accounts_config)
            .expect("a valid accounts configuration")
            .with_insecure_cost_for_tests(TEST_BCRYPT_COST)
            .with_clock(services_clock.clone());
        World {
            commerce: Arc::new(Commerce::new(
                log.clone(),
                vault.clone(),
                OrderPolicy::default(),
                services_clock.clone(),
            )),
            accounts: Arc::new(accounts),
            holds: Arc::new(LegalHoldService::new(
                log.clone(),
                vault.clone(),
                services_clock.clone(),
            )),
            policy: Arc::new(PolicyService::new(log, vault, services_clock)),
            store,
            clock,
            dir,
            _temp: temp,
        }
    }
}

/// A real store with the command services over it.
pub struct World {
    pub store: Store,
    pub clock: Arc<ManualClock>,
    pub accounts: Arc<Accounts<AnyLog>>,
    pub commerce: Arc<Commerce<AnyLog>>,
    pub holds: Arc<LegalHoldService<AnyLog>>,
    pub policy: Arc<PolicyService<AnyLog>>,
    dir: PathBuf,
    // Declared last: the store closes before its directory is removed.
    _temp: Option<tempfile::TempDir>,
}

impl World {
    /// A new world in its own temp dir, on the manual clock.
    pub fn new() -> World {
        World::builder().build()
    }

    pub fn builder() -> WorldBuilder {
        WorldBuilder {
            dir: None,
            system_clock: false,
            accounts_config: AccountsConfig::default(),
        }
    }

    /// The directory the store's files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Drops the services, then the store (closing the database), and keeps
    /// the files: the temp dir is returned (none for a world built `at` a dir).
    pub fn close(self) -> Option<tempfile::TempDir> {
        let World {
            store,
            accounts,
            commerce,
            holds,
            policy,
            _temp,
            ..
        } = self;
        drop((accounts, commerce, holds, policy));
        drop(store);
        _temp
    }

    pub fn log(&self) -> Arc<AnyLog> {
        self.store.log.clone()
    }

    /// Step: a customer registered as `email` (not verified).
    pub async fn registered(&self, email: &str) -> AccountId {
        self.accounts
            .register(email, PASSWORD)
            .await
            .expect("registration")
            .account
    }

    /// Step: a registered customer with a fresh, verified e-mail address (only
    /// a verified account deposits and orders).
    pub async fn customer(&self) -> Owner {
        Owner::Account(self.verified_customer().await)
    }

    /// Step: a registered customer whose e-mail address is verified.
    pub async fn verified_customer(&self) -> AccountId {
        self.verified(&unique_email()).await
    }

    /// Step: a customer registered as `email`, the address verified.
    pub async fn verified(&self, email: &str) -> AccountId {
        let account = self.registered(email).await;
        let token = self
            .accounts
            .issue_verification(account)
            .await
            .expect("a verification token");
        self.accounts
            .verify_email(token.expose())
            .await
            .expect("verification");
        account
    }

    /// Step: `micros` paid into `owner`'s wallet through a deposit and a
    /// recorded payment in ETH; the payment is credited.
    pub async fn fund(&self, owner: Owner, micros: i64) {
        self.fund_in(owner, micros, "eth").await;
    }

    /// [`Self::fund`] paid in `currency`.
    pub async fn fund_in(&self, owner: Owner, micros: i64, currency: &str) {
        let deposit = self
            .commerce
            .request_deposit(owner, Micros(micros))
            .await
            .expect("a deposit");
        let outcome = self
            .commerce
            .record_payment(deposit, unique_report(currency, micros))
            .await
            .expect("a recorded payment");
        assert!(
            matches!(outcome, PaymentOutcome::Credited { .. }),
            "a new payment is credited: {outcome:?}"
        );
    }

    /// Step: a new customer whose wallet holds `micros`.
    pub async fn funded_customer(&self, micros: i64) -> Owner {
        let owner = self.customer().await;
        self.fund(owner, micros).await;
        owner
    }

    /// Step: an order placed by `owner` for [`request`]`(price_micros)`.
    pub async fn placed_order(&self, owner: Owner, price_micros: i64) -> OrderId {
        self.commerce
            .place_order(owner, &request(price_micros), None)
            .await
            .expect("the order is placed")
            .order
    }

    /// Step: a number from provider `sim-a` (cost 0.30) assigned to `order`.
    pub async fn number_assigned(&self, order: OrderId) {
        self.commerce
            .assign_number(order, "sim-a", "act-1", Micros(300_000), "4915112345678")
            .await
            .expect("a number is assigned");
    }

    /// Step: the code `48213` received for `order`.
    pub async fn code_received(&self, order: OrderId) {
        self.commerce
            .receive_code(order, "48213", "Your Telegram code is 48213")
            .await
            .expect("a code is received");
    }

    /// Step: an order placed by `owner`, a number assigned, the code received.
    pub async fn order_with_code(&self, owner: Owner, price_micros: i64) -> OrderId {
        let order = self.placed_order(owner, price_micros).await;
        self.number_assigned(order).await;
        self.code_received(order).await;
        order
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_core::domain::order::OrderStatus;
    use nexus_core::log::EventStore;

    #[test]
    fn a_test_is_named_by_its_path_without_the_crate() {
        assert_eq!(test_name("it::log", "crash_child"), "log::crash_child");
        assert_eq!(test_name("it::a::b", "child"), "a::b::child");
        assert_eq!(test_name("crash", "child"), "child");
    }

    #[test]
    fn steps_build_a_funded_customer_with_an_order_and_its_code() {
        let w = World::new();
        runtime().block_on(async {
            let owner = w.funded_customer(1_000_000).await;
            let order = w.order_with_code(owner, 500_000).await;
            let wallet = w.commerce.wallet(owner).await.unwrap();
            assert_eq!(wallet.held(), Micros(500_000));
            let view = w.commerce.order(order).await.unwrap();
            assert_eq!(view.status, Some(OrderStatus::CodeReceived));
            let verified = w.verified_customer().await;
            assert!(w.accounts.account(verified).await.unwrap().verified);
        });
    }

    #[test]
    fn a_closed_world_keeps_its_files_and_reopens_at_them() {
        let w = World::new();
        let dir = w.dir().to_owned();
        runtime().block_on(w.customer());
        let position = w.store.log.head();
        assert!(position > 0);
        let temp = w.close();
        assert!(temp.is_some());
        let again = World::builder().at(&dir).build();
        assert_eq!(again.store.log.head(), position);
    }
}
