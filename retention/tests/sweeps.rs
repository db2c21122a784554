//! The 30-day and 90-day sweeps over a real store (log and vault on sled in a
//! temp dir) and the real retention schedule, caught up by the projection
//! runner: what is due is erased, nothing early, held subjects are kept, and
//! `verify` proves it (and catches a broken promise).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use nexus_core::domain::account::{AccountViewStatus, LookupKey};
use nexus_core::domain::anonymous::{AnonymousError, TrackingId, RETENTION_DAYS};
use nexus_core::domain::clock::ManualClock;
use nexus_core::domain::commerce::CommerceError;
use nexus_core::domain::commerce::PlaceOrder;
use nexus_core::domain::ids::{AccountId, AnonymousId, OrderId};
use nexus_core::domain::legal_hold::{CaseReference, HoldReason, HoldSubject};
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{Channel, CountryCode, OrderPolicy, ServiceCode};
use nexus_core::domain::wallet::Payment;
use nexus_core::log::{EventStore, SledLog};
use nexus_core::service::account_service::{Accounts, AccountsConfig};
use nexus_core::service::commerce_service::{CommandError, Commerce};
use nexus_core::service::legal_hold_service::LegalHoldService;
use nexus_core::vault::MasterKeySource;
use nexus_core::{Store, StoreConfig};
use nexus_projections::retention::DueSubject;
use nexus_projections::{ReadModels, ReadModelsConfig, Runner, RunnerConfig};
use nexus_retention::{SweepReport, Sweeper};

const PASSWORD: &str = "correct horse battery";
const DELETION_GRACE_DAYS: i64 = 30;

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    clock: Arc<ManualClock>,
    commerce: Arc<Commerce<SledLog>>,
    accounts: Arc<Accounts<SledLog>>,
    holds: Arc<LegalHoldService<SledLog>>,
    runner: Runner<SledLog>,
    sweeper: Sweeper<SledLog>,
}

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_764_000_000, 0).unwrap()
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreConfig {
        dir: dir.path().join("store"),
        master_key: MasterKeySource::GenerateAt(dir.path().join("master.key")),
        cache_capacity_bytes: 16 << 20,
    })
    .unwrap();
    let clock = Arc::new(ManualClock::new(start()));
    let commerce = Arc::new(Commerce::new(
        store.log.clone(),
        store.vault.clone(),
        OrderPolicy::default(),
        clock.clone(),
    ));
    let accounts = Arc::new(
        Accounts::new(
            store.log.clone(),
            store.vault.clone(),
            LookupKey::new([7; 32]),
            AccountsConfig::default(),
        )
        .unwrap()
        .with_insecure_cost_for_tests(4)
        .with_clock(clock.clone()),
    );
    let holds = Arc::new(LegalHoldService::new(
        store.log.clone(),
        store.vault.clone(),
        clock.clone(),
    ));
    let models = ReadModels::open(
        &ReadModelsConfig::new(dir.path().join("projections")),
        store.vault.clone(),
    )
    .unwrap();
    let runner = Runner::start(store.log.clone(), &models, RunnerConfig::default()).unwrap();
    let sweeper = Sweeper::new(
        store.log.clone(),
        store.vault.clone(),
        accounts.clone(),
        commerce.clone(),
        holds.clone(),
        models.retention().unwrap(),
        clock.clone(),
    );
    World {
        _dir: dir,
        store,
        clock,
        commerce,
        accounts,
        holds,
        runner,
        sweeper,
    }
}

impl World {
    /// The schedule has applied everything in the log.
    async fn caught_up(&self) {
        let head = self.store.log.head();
        self.runner
            .wait_for(Some("retention"), head, StdDuration::from_secs(10))
            .await
            .unwrap();
    }

    async fn sweep(&self) -> SweepReport {
        self.caught_up().await;
        self.sweeper.sweep().await.unwrap()
    }

    async fn customer_asking_deletion(&self, email: &str) -> AccountId {
        let account = self
            .accounts
            .register(email, PASSWORD)
            .await
            .unwrap()
            .account;
        self.accounts.request_deletion(account).await.unwrap();
        account
    }

    /// A paid anonymous order: its buyer, the order its payment started, and
    /// its tracking ID.
    async fn anonymous_buyer(&self) -> (AnonymousId, OrderId, TrackingId) {
        let created = self
            .commerce
            .create_anonymous_order(&PlaceOrder {
                service: ServiceCode::new("wa").unwrap(),
                country: CountryCode::new("GB").unwrap(),
                channel: Channel::Sms,
                price: Micros(300_000),
            })
            .await
            .unwrap();
        self.commerce
            .record_payment(
                created.invoice,
                Payment::new("btc", &format!("0x{}", created.anon.0.simple())).unwrap(),
                Micros(300_000),
            )
            .await
            .unwrap();
        let tracked = self.commerce.track(&created.tracking_id).await.unwrap();
        (created.anon, tracked.orders[0].0, created.tracking_id)
    }

    fn erased(&self, subject: DueSubject) -> bool {
        self.store.vault.is_erased(&subject.subject()).unwrap()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn due_accounts_and_anonymous_buyers_are_erased_and_nothing_early() {
    let rt = runtime();
    let _entered = rt.enter();
    let w = world();
    rt.block_on(async {
        let leaving = w.customer_asking_deletion("leaving@example.com").await;
        let staying = w
            .accounts
            .register("staying@example.com", PASSWORD)
            .await
            .unwrap()
            .account;
        let (anon, anon_order, tracking_id) = w.anonymous_buyer().await;

        // Nothing is due yet.
        assert_eq!(w.sweep().await, SweepReport::default());
        w.clock
            .advance(Duration::days(DELETION_GRACE_DAYS) - Duration::seconds(1));
        assert_eq!(w.sweep().await, SweepReport::default());
        assert!(!w.erased(DueSubject::Account(leaving)));

        // Day 30: the account that asked is erased, the other is not.
        w.clock.advance(Duration::seconds(1));
        let report = w.sweep().await;
        assert_eq!(
            report,
            SweepReport {
                examined: 1,
                accounts_erased: 1,
                ..SweepReport::default()
            }
        );
        assert!(w.erased(DueSubject::Account(leaving)));
        assert!(!w.erased(DueSubject::Account(staying)));
        let view = w.accounts.account(leaving).await.unwrap();
        assert_eq!(view.status, AccountViewStatus::Erased);
        // Erased once: the schedule no longer lists it.
        assert_eq!(w.sweep().await, SweepReport::default());

        // Day 90: the anonymous buyer's data goes, once its order is over.
        w.clock
            .advance(Duration::days(RETENTION_DAYS - DELETION_GRACE_DAYS));
        let report = w.sweep().await;
        assert_eq!((report.examined, report.skipped), (1, 1), "{report:?}");
        assert!(!w.erased(DueSubject::Anonymous(anon)));
        w.commerce.process_deadline(anon_order).await.unwrap();
        let report = w.sweep().await;
        assert_eq!(report.anonymous_erased, 1, "{report:?}");
        assert!(w.erased(DueSubject::Anonymous(anon)));
        assert_eq!(w.sweep().await, SweepReport::default());
        // Its tracking ID finds nothing any more.
        assert!(matches!(
            w.commerce.track(&tracking_id).await,
            Err(CommandError::Refused(CommerceError::Anonymous(
                AnonymousError::NotFound
            )))
        ));

        w.caught_up().await;
        let proof = w.sweeper.verify().await.unwrap();
        assert!(proof.ok(), "{proof:?}");
        assert_eq!(proof.erasures_recorded, 2);
        assert!(proof.events_checked > 5);
    });
}

#[test]
fn held_and_withdrawn_subjects_are_kept_and_verify_reports_what_is_overdue() {
    let rt = runtime();
    let _entered = rt.enter();
    let w = world();
    rt.block_on(async {
        let held = w.customer_asking_deletion("held@example.com").await;
        let withdrawn = w.customer_asking_deletion("changed.mind@example.com").await;
        w.accounts.withdraw_deletion(withdrawn).await.unwrap();
        let (anon, anon_order, _) = w.anonymous_buyer().await;
        w.holds
            .place(
                HoldSubject::Account(held),
                HoldReason::Litigation,
                CaseReference::new("CASE-2026-17").unwrap(),
            )
            .await
            .unwrap();
        // A hold on an order freezes its owner: the owner's key seals its phone.
        w.holds
            .place(
                HoldSubject::Order(anon_order),
                HoldReason::Regulator,
                CaseReference::new("REG-4").unwrap(),
            )
            .await
            .unwrap();

        w.clock.advance(Duration::days(RETENTION_DAYS + 1));
        w.commerce.process_deadline(anon_order).await.unwrap();
        let report = w.sweep().await;
        assert_eq!(
            report,
            SweepReport {
                examined: 2,
                held: 2,
                ..SweepReport::default()
            }
        );
        assert!(!w.erased(DueSubject::Account(held)));
        assert!(!w.erased(DueSubject::Account(withdrawn)));
        assert!(!w.erased(DueSubject::Anonymous(anon)));
        let status = w.sweeper.status().await.unwrap();
        assert_eq!((status.due_now, status.scheduled, status.held), (2, 2, 2));
        assert!(!status.financial_months.is_empty());
        // Held subjects are not overdue.
        let proof = w.sweeper.verify().await.unwrap();
        assert!(proof.ok(), "{proof:?}");

        // Released, the account is erased by the next sweep; until then it is
        // overdue, and verify says so (ids only).
        w.holds.release(HoldSubject::Account(held)).await.unwrap();
        let proof = w.sweeper.verify().await.unwrap();
        assert!(!proof.ok());
        assert_eq!(proof.overdue, vec![format!("account-{}", held.0.simple())]);
        let report = w.sweep().await;
        assert_eq!((report.accounts_erased, report.held), (1, 1), "{report:?}");
        assert!(w.erased(DueSubject::Account(held)));
        w.caught_up().await;
        assert!(w.sweeper.verify().await.unwrap().ok());
    });
}
