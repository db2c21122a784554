//! Personal data in the read models: sealed, opened on read, erased with its
//! subject (incrementally built and rebuilt alike), and never on disk in plain.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use nexus_core::domain::codec::Personal;
use nexus_core::domain::commerce::PlaceOrder;
use nexus_core::domain::deposit::PaymentReport;
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{Channel, CountryCode, DeliveryChannel, ServiceCode};
use nexus_core::domain::wallet::Payment;
use nexus_core::log::EventStore;
use nexus_projections::accounts::AccountStatusView;
use nexus_projections::{Runner, RunnerConfig};

const EMAIL: &str = "Erase.Me@Example.com";
const PHONE: &str = "4915550001234";
const ANON_PHONE: &str = "447700900123";

/// Every file under `dir`, searched for `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

struct Subjects {
    owner: Owner,
    anon: nexus_core::domain::ids::AnonymousId,
    order: nexus_core::domain::ids::OrderId,
    anon_order: nexus_core::domain::ids::OrderId,
}

async fn write_personal_data(world: &World) -> Subjects {
    let account = world.verified(EMAIL).await;
    let owner = Owner::Account(account);
    world.fund(owner, 10_000_000).await;
    let placed = world
        .commerce
        .place_order(owner, &request_for("tg", "DE", 500_000), None)
        .await
        .unwrap();
    world
        .commerce
        .assign_number(placed.order, "sim-a", "act-1", Micros(100_000), PHONE)
        .await
        .unwrap();
    world
        .commerce
        .receive_code(placed.order, "4242", "Your code: 4242")
        .await
        .unwrap();
    world
        .commerce
        .read_code(placed.order, owner, DeliveryChannel::Api)
        .await
        .unwrap();
    world.commerce.complete(placed.order, owner).await.unwrap();

    let anonymous = PlaceOrder {
        service: ServiceCode::new("wa").unwrap(),
        country: CountryCode::new("GB").unwrap(),
        channel: Channel::Voice,
        price: Micros(300_000),
    };
    let created = world
        .commerce
        .create_anonymous_order(&anonymous)
        .await
        .unwrap();
    world
        .commerce
        .record_payment(
            created.invoice,
            PaymentReport::new(
                "feed",
                Payment::new("btc", "0xfeed").unwrap(),
                Micros(300_000),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let tracked = world.commerce.track(&created.tracking_id).await.unwrap();
    let anon_order = tracked.orders[0].0;
    world
        .commerce
        .assign_number(anon_order, "sim-b", "act-2", Micros(100_000), ANON_PHONE)
        .await
        .unwrap();
    Subjects {
        owner,
        anon: created.anon,
        order: placed.order,
        anon_order,
    }
}

/// What the read models show of the subjects: plain before the erasure,
/// erased after.
fn assert_views(world: &World, s: &Subjects, erased: bool) {
    let Owner::Account(account) = s.owner else {
        unreachable!()
    };
    let summary = world
        .models
        .accounts()
        .unwrap()
        .account(account)
        .unwrap()
        .unwrap();
    let orders = world.models.orders().unwrap();
    let order = orders.order(s.order).unwrap().unwrap();
    let history = orders.history(account, None, 10).unwrap();
    let anon = orders.anonymous(s.anon).unwrap().unwrap();
    let anon_order = orders.order(s.anon_order).unwrap().unwrap();
    if erased {
        assert_eq!(summary.status, AccountStatusView::Erased);
        assert_eq!(summary.email, Personal::Erased);
        assert_eq!(order.phone, Personal::Erased);
        assert_eq!(order.details, Personal::Erased);
        assert_eq!(history.items[0].details, Personal::Erased);
        assert_eq!(anon.details, Personal::Erased);
        assert_eq!(anon_order.details, Personal::Erased);
        assert_eq!(anon_order.phone, Personal::Erased);
    } else {
        assert_eq!(summary.status, AccountStatusView::Active);
        assert_eq!(
            summary.email,
            Personal::Plain("Erase.Me@example.com".to_owned())
        );
        assert_eq!(order.phone, Personal::Plain(PHONE.to_owned()));
        let details = anon.details.plain().expect("the anonymous order's details");
        assert_eq!(
            (details.service.as_str(), details.country.as_str()),
            ("wa", "GB")
        );
        assert_eq!(
            anon_order.details, anon.details,
            "the started order shows them too"
        );
        assert_eq!(anon_order.phone, Personal::Plain(ANON_PHONE.to_owned()));
    }
    // Facts that are not personal stay.
    assert_eq!(order.price, Micros(500_000));
    assert_eq!(order.provider.as_deref(), Some("sim-a"));
}

#[test]
fn erased_subjects_read_as_erased_incrementally_and_after_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()));
    runtime().block_on(async {
        let runner = Runner::start(world.log(), &world.models, RunnerConfig::default()).unwrap();
        let s = write_personal_data(&world).await;
        let head = world.store.log.head();
        runner
            .wait_for(None, head, Duration::from_secs(10))
            .await
            .unwrap();
        assert_views(&world, &s, false);

        // The catalog opened what was ordered when the order settled and kept
        // only counts by route.
        world.clock.advance(chrono::Duration::minutes(30));
        world.commerce.process_deadline(s.anon_order).await.unwrap();
        let head = world.store.log.head();
        runner
            .wait_for(None, head, Duration::from_secs(10))
            .await
            .unwrap();
        let catalog = world.models.catalog().unwrap();
        let route = catalog
            .route("wa", "GB", "sim-b")
            .unwrap()
            .expect("the route");
        assert_eq!((route.orders, route.failures), (1, 1));

        world.store.vault.erase(&s.owner.subject()).unwrap();
        world
            .store
            .vault
            .erase(&Owner::Anonymous(s.anon).subject())
            .unwrap();
        assert_views(&world, &s, true);
        runner.stop().await;

        world.rebuild_all().await;
        assert_views(&world, &s, true);
        // Rebuilt after the erasure, the catalog can no longer tell the route of
        // that order: it counts it under an unknown service and country (the
        // one documented difference between a rebuild and the incremental build).
        let catalog = world.models.catalog().unwrap();
        assert!(catalog.route("wa", "GB", "sim-b").unwrap().is_none());
        let unknown = catalog
            .route("", "", "sim-b")
            .unwrap()
            .expect("the unknown route");
        assert_eq!((unknown.orders, unknown.failures), (1, 1));
    });
}

#[test]
fn no_plaintext_personal_data_in_the_projection_files() {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()));
    runtime().block_on(async {
        let runner = Runner::start(world.log(), &world.models, RunnerConfig::default()).unwrap();
        let s = write_personal_data(&world).await;
        concurrent_workload(&world, 2, 5).await;
        let head = world.store.log.head();
        runner
            .wait_for(None, head, Duration::from_secs(10))
            .await
            .unwrap();
        runner.stop().await;
        // Read back in plain through the vault, so the data is there to find.
        assert_views(&world, &s, false);
        world.rebuild_all().await;
        world.models.flush().unwrap();
    });
    let projections = projections_dir(dir.path());
    for needle in [
        EMAIL.as_bytes(),
        EMAIL.to_lowercase().as_bytes(),
        b"Erase.Me@example.com",
        PHONE.as_bytes(),
        ANON_PHONE.as_bytes(),
        b"customer0@example.com",
        b"Your code: 4242",
    ] {
        let found = files_containing(&projections, needle);
        assert!(
            found.is_empty(),
            "{:?} found in {found:?}",
            String::from_utf8_lossy(needle)
        );
    }
    // The search does find what is there: a provider name, in plain.
    assert!(!files_containing(&projections, b"sim-a").is_empty());
}

/// Whether any value of the tree holds `needle`.
fn tree_holds(world: &World, name: &str, needle: &[u8]) -> bool {
    world
        .models
        .dump(name)
        .unwrap()
        .iter()
        .any(|(_, value)| value.windows(needle.len()).any(|w| w == needle))
}

#[test]
fn an_erased_account_reads_erased_and_leaves_the_schedule_incrementally_and_after_a_rebuild() {
    use nexus_core::domain::account::DELETION_GRACE_DAYS;

    use nexus_core::log::Direction;
    use nexus_projections::retention::DueSubject;

    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()));
    runtime().block_on(async {
        let runner = Runner::start(world.log(), &world.models, RunnerConfig::default()).unwrap();
        let leaving = world.verified("leaving@example.com").await;
        let staying = world.verified("staying@example.com").await;
        world
            .accounts
            .request_deletion(leaving, true)
            .await
            .unwrap();
        let due = start() + chrono::Duration::days(DELETION_GRACE_DAYS);
        runner
            .wait_for(None, world.store.log.head(), Duration::from_secs(10))
            .await
            .unwrap();
        let retention = world.models.retention().unwrap();
        assert_eq!(
            retention.due_at(DueSubject::Account(leaving)).unwrap(),
            Some(due)
        );
        // The sealed address of the registration, as the read model keeps it.
        let registration = world
            .store
            .log
            .read_stream(&leaving.stream(), 1, Direction::Forwards, 1)
            .await
            .unwrap();
        let sealed = registration[0].pii.clone().expect("a sealed section");
        assert!(tree_holds(&world, "accounts", &sealed.ciphertext));

        world
            .clock
            .advance(chrono::Duration::days(DELETION_GRACE_DAYS));
        world.accounts.erase_account(leaving).await.unwrap();
        let head = world.store.log.head();
        runner
            .wait_for(None, head, Duration::from_secs(10))
            .await
            .unwrap();
        runner.stop().await;

        let check = |what: &str| {
            let accounts = world.models.accounts().unwrap();
            let summary = accounts.account(leaving).unwrap().expect("the account");
            assert_eq!(summary.status, AccountStatusView::Erased, "{what}");
            assert_eq!(summary.email, Personal::Erased, "{what}");
            assert_eq!(summary.erased_at, Some(due), "{what}");
            assert!(
                !tree_holds(&world, "accounts", &sealed.ciphertext),
                "{what}: the sealed address is gone from the row"
            );
            let retention = world.models.retention().unwrap();
            assert_eq!(
                retention.due_at(DueSubject::Account(leaving)).unwrap(),
                None,
                "{what}: off the schedule"
            );
            assert!(retention
                .schedule(None, 100)
                .unwrap()
                .iter()
                .all(|s| s.subject != DueSubject::Account(leaving)));
            let other = accounts.account(staying).unwrap().expect("the other");
            assert_eq!(other.status, AccountStatusView::Active, "{what}");
            assert_eq!(
                other.email,
                Personal::Plain("staying@example.com".to_owned())
            );
        };
        check("incremental");
        let incremental = (
            world.models.dump("accounts").unwrap(),
            world.models.dump("retention").unwrap(),
        );

        world.rebuild_all().await;
        check("rebuilt");
        assert_eq!(
            incremental,
            (
                world.models.dump("accounts").unwrap(),
                world.models.dump("retention").unwrap(),
            ),
            "the rebuild writes what the incremental build wrote"
        );
    });
}
