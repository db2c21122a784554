//! The 30-day and 90-day sweeps over a real store (log and vault on sled in a
//! temp dir) and the real retention schedule, caught up by the projection
//! runner: what is due is erased, nothing early, held subjects are kept, and
//! `verify` proves it (and catches a broken promise).

use std::time::Duration as StdDuration;

use chrono::Duration;
use nexus_core::domain::account::AccountViewStatus;
use nexus_core::domain::anonymous::{AnonymousError, TrackingId, RETENTION_DAYS};
use nexus_core::domain::commerce::CommerceError;
use nexus_core::domain::commerce::PlaceOrder;
use nexus_core::domain::deposit::PaymentReport;
use nexus_core::domain::ids::{AccountId, AnonymousId, OrderId};
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::legal_hold::{CaseReference, HoldReason, HoldSubject};
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{Channel, CountryCode, ServiceCode};
use nexus_core::domain::wallet::Payment;
use nexus_core::log::{AnyLog, EventStore};
use nexus_core::service::commerce_service::CommandError;
use nexus_projections::retention::DueSubject;
use nexus_projections::{ReadModels, ReadModelsConfig, Runner, RunnerConfig};
use nexus_retention::{SweepReport, Sweeper};

use nexus_testkit::{runtime, PASSWORD};

const DELETION_GRACE_DAYS: i64 = 30;

/// The test kit's world with the projections' runner keeping the retention
/// schedule caught up, and the sweeper over both.
struct World {
    kit: nexus_testkit::World,
    runner: Runner<AnyLog>,
    sweeper: Sweeper<AnyLog>,
}

impl std::ops::Deref for World {
    type Target = nexus_testkit::World;

    fn deref(&self) -> &Self::Target {
        &self.kit
    }
}

fn world() -> World {
    let kit = nexus_testkit::World::new();
    let models = ReadModels::open(
        &ReadModelsConfig::new(kit.dir().join("projections")),
        kit.store.vault.clone(),
    )
    .unwrap();
    let runner = Runner::start(kit.store.log.clone(), &models, RunnerConfig::default()).unwrap();
    let sweeper = Sweeper::new(
        kit.store.log.clone(),
        kit.store.vault.clone(),
        kit.accounts.clone(),
        kit.commerce.clone(),
        kit.holds.clone(),
        models.retention().unwrap(),
        kit.clock.clone(),
    );
    World {
        kit,
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
        let account = self.verified(email).await;
        self.accounts.request_deletion(account, true).await.unwrap();
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
                PaymentReport::new(
                    &created.anon.0.simple().to_string(),
                    Payment::new("btc", &format!("0x{}", created.anon.0.simple())).unwrap(),
                    Micros(300_000),
                )
                .unwrap(),
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

#[test]
fn due_accounts_and_anonymous_buyers_are_erased_and_nothing_early() {
    let rt = runtime();
    let _entered = rt.enter();
    let w = world();
    rt.block_on(async {
        let leaving = w.customer_asking_deletion("leaving@example.com").await;
        let staying = w.verified("staying@example.com").await;
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
        // The expired order's price is credit the buyer could still reorder with.
        let credit = || w.commerce.wallet(Owner::Anonymous(anon));
        assert_eq!(credit().await.unwrap().available, Micros(300_000));
        let report = w.sweep().await;
        assert_eq!(report.anonymous_erased, 1, "{report:?}");
        assert!(w.erased(DueSubject::Anonymous(anon)));
        assert_eq!(w.sweep().await, SweepReport::default());
        // Erased, that credit moved to unclaimed balances, once.
        assert_eq!(credit().await.unwrap().available, Micros(0));
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

/// Given registrations never verified, when a day has passed, then the sweep
/// erases them and frees their addresses; one verified in time is kept, and
/// so is one verified after asking for deletion until its deletion is due.
#[test]
fn registrations_never_verified_lapse_after_a_day() {
    let rt = runtime();
    let _entered = rt.enter();
    let w = world();
    rt.block_on(async {
        let lapsing = w.registered("lapsing@example.com").await;
        let verified_late = w.registered("late@example.com").await;
        let deleting = w.registered("deleting@example.com").await;
        w.accounts.request_deletion(deleting, true).await.unwrap();
        w.clock.advance(Duration::hours(23));
        let token = w.accounts.issue_verification(verified_late).await.unwrap();
        w.accounts.verify_email(token.expose()).await.unwrap();
        assert_eq!(w.sweep().await, SweepReport::default());

        w.clock.advance(Duration::hours(1));
        let report = w.sweep().await;
        assert_eq!(
            (report.examined, report.accounts_erased),
            (2, 2),
            "{report:?}"
        );
        assert!(w.erased(DueSubject::Account(lapsing)));
        assert!(w.erased(DueSubject::Account(deleting)));
        assert!(!w.erased(DueSubject::Account(verified_late)));
        // Off the schedule; the addresses can be registered again.
        assert_eq!(w.sweep().await, SweepReport::default());
        let again = w.registered("lapsing@example.com").await;
        assert_ne!(again, lapsing);
        w.accounts
            .register("deleting@example.com", PASSWORD)
            .await
            .unwrap();
        w.caught_up().await;
        let proof = w.sweeper.verify().await.unwrap();
        assert!(proof.ok(), "{proof:?}");
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

/// Given a customer who confirmed the forfeit of $9.61 and one under a legal
/// hold with $2, when the deletion falls due, then the sweep's erasure moves
/// the $9.61 to unclaimed balances, once however often it sweeps, and the
/// held account keeps its money with its data.
#[test]
fn the_sweep_moves_an_erased_accounts_balance_to_unclaimed_once() {
    let rt = runtime();
    let _entered = rt.enter();
    let w = world();
    rt.block_on(async {
        let owner = w.funded_customer(9_610_000).await;
        let Owner::Account(leaving) = owner else {
            unreachable!()
        };
        w.accounts.request_deletion(leaving, true).await.unwrap();
        let kept_owner = w.funded_customer(2_000_000).await;
        let Owner::Account(kept) = kept_owner else {
            unreachable!()
        };
        w.accounts.request_deletion(kept, true).await.unwrap();
        w.holds
            .place(
                HoldSubject::Account(kept),
                HoldReason::Litigation,
                CaseReference::new("CASE-2026-21").unwrap(),
            )
            .await
            .unwrap();

        w.clock.advance(Duration::days(DELETION_GRACE_DAYS));
        let report = w.sweep().await;
        assert_eq!(report.accounts_erased, 1, "{report:?}");
        w.sweep().await;
        let moved: Vec<_> = w
            .store
            .log
            .read_all(1, 10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.event_type == "WalletBalanceUnclaimed")
            .collect();
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].stream, owner.wallet_stream());
        let wallet = |o| w.commerce.wallet(o);
        assert_eq!(wallet(owner).await.unwrap().available, Micros(0));
        assert_eq!(
            wallet(kept_owner).await.unwrap().available,
            Micros(2_000_000)
        );
    });
}
