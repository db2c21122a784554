//! Read-your-writes: waiting until projections reach a position, bounded; and
//! a failing projection stops at its position while the others go on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use nexus_core::domain::ledger::Owner;
use nexus_core::log::{EventStore, RecordedEvent};
use nexus_projections::{
    ApplyError, Projection, RunState, Runner, RunnerConfig, Staging, WaitError,
};

#[test]
fn an_order_can_be_read_as_soon_as_its_position_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()));
    runtime().block_on(async {
        let runner = Runner::start(world.log(), &world.models, RunnerConfig::default()).unwrap();
        let account = world.verified("reader@example.com").await;
        let owner = Owner::Account(account);
        world.fund(owner, 5_000_000).await;
        for _ in 0..20 {
            let placed = world
                .commerce
                .place_order(owner, &request_for("tg", "DE", 100_000), None)
                .await
                .unwrap();
            runner
                .wait_for(None, placed.position, Duration::from_secs(2))
                .await
                .unwrap();
            let order = world.models.orders().unwrap().order(placed.order).unwrap();
            assert!(order.is_some(), "the order is readable at once");
            let balance = world.models.wallets().unwrap().balance(&owner).unwrap();
            assert!(balance.held.0 > 0);
        }
        runner.stop().await;
    });
}

#[test]
fn waiting_for_a_position_not_reached_times_out_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()));
    runtime().block_on(async {
        let runner = Runner::start(world.log(), &world.models, RunnerConfig::default()).unwrap();
        world.verified("waiter@example.com").await;
        let head = world.store.log.head();
        let started = Instant::now();
        let err = runner
            .wait_for(Some("orders"), head + 1_000, Duration::from_millis(300))
            .await
            .unwrap_err();
        let waited = started.elapsed();
        assert_eq!(
            err,
            WaitError::Timeout {
                projection: "orders",
                reached: head,
                wanted: head + 1_000
            }
        );
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        // Capped: an hour is 30 seconds at most (not waited here: a position
        // already reached answers at once).
        runner
            .wait_for(None, head, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(
            runner
                .wait_for(Some("nope"), 1, Duration::from_secs(1))
                .await,
            Err(WaitError::UnknownProjection("nope".into()))
        );
        runner.stop().await;
    });
}

/// Fails on the first wallet hold it sees.
struct Picky;

impl Projection for Picky {
    fn name(&self) -> &'static str {
        "picky"
    }

    fn apply(&mut self, event: &RecordedEvent, staging: &mut Staging) -> Result<(), ApplyError> {
        if event.event_type == "WalletHoldPlaced" {
            return Err(ApplyError::Missing {
                event_type: event.event_type.clone(),
                what: "patience",
                id: "0".into(),
            });
        }
        staging.put(event.position.to_be_bytes().to_vec(), ());
        Ok(())
    }
}

#[test]
fn a_failing_projection_stops_at_its_position_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()));
    runtime().block_on(async {
        let mut projections = world.models.projections();
        projections.push(Box::new(Picky));
        let config = RunnerConfig {
            batch_size: 100,
            ..RunnerConfig::default()
        };
        let runner = Runner::start_with(world.log(), &world.models, projections, config).unwrap();
        let account = world.verified("picky@example.com").await;
        let owner = Owner::Account(account);
        world.fund(owner, 5_000_000).await;
        let placed = world
            .commerce
            .place_order(owner, &request_for("tg", "DE", 100_000), None)
            .await
            .unwrap();
        let hold = {
            let events = world.store.log.read_all(1, 1000).await.unwrap();
            events
                .iter()
                .find(|e| e.event_type == "WalletHoldPlaced")
                .unwrap()
                .position
        };
        let err = runner
            .wait_for(Some("picky"), placed.position, Duration::from_secs(5))
            .await
            .unwrap_err();
        let WaitError::Failed {
            projection,
            failure,
        } = err
        else {
            panic!("expected a failure, got {err:?}")
        };
        assert_eq!((projection, failure.position), ("picky", hold));
        assert!(failure.reason.contains("patience"), "{}", failure.reason);
        // The events before the failing one were committed with their checkpoint.
        assert_eq!(world.models.checkpoint("picky").unwrap(), hold - 1);

        runner
            .wait_for(Some("orders"), placed.position, Duration::from_secs(5))
            .await
            .unwrap();
        world
            .commerce
            .cancel(
                placed.order,
                Some(owner),
                nexus_core::domain::order::CancelReason::Customer,
            )
            .await
            .unwrap();
        let head = world.store.log.head();
        for name in ["accounts", "wallets", "orders", "catalog", "retention"] {
            runner
                .wait_for(Some(name), head, Duration::from_secs(5))
                .await
                .unwrap();
        }
        let status = runner.status().await;
        let picky = status.iter().find(|s| s.name == "picky").unwrap();
        assert!(matches!(&picky.state, RunState::Failed(f) if f.position == hold));
        assert_eq!(picky.position, hold - 1);
        assert_eq!(picky.lag_events, head - (hold - 1));
        assert!(picky.lag_seconds.is_some());
        assert!(status
            .iter()
            .filter(|s| s.name != "picky")
            .all(|s| s.state == RunState::Running && s.lag_events == 0));
        runner.stop().await;
    });
}

#[test]
fn a_malformed_event_stops_the_projections_that_read_it_with_a_typed_reason() {
    use nexus_core::log::{AppendRequest, EventId, ExpectedVersion, NewEvent, StreamName};
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()));
    runtime().block_on(async {
        let runner = Runner::start(world.log(), &world.models, RunnerConfig::default()).unwrap();
        let stream = StreamName::new(format!("order-{}", uuid::Uuid::now_v7().simple())).unwrap();
        // A type whose payload both orders and catalog read (each projection
        // decodes only the payloads it reads).
        let bad = NewEvent {
            id: EventId::new(),
            event_type: "OrderNumberAssigned".into(),
            schema_version: 1,
            payload: vec![0xff; 3],
            pii: None,
        };
        let outcome = world
            .store
            .log
            .append(AppendRequest::single(
                stream,
                ExpectedVersion::NoStream,
                vec![bad],
            ))
            .await
            .unwrap();
        let position = outcome.last_position();
        for name in ["orders", "catalog"] {
            let err = runner
                .wait_for(Some(name), position, Duration::from_secs(5))
                .await
                .unwrap_err();
            let WaitError::Failed { failure, .. } = err else {
                panic!("{name}: expected a failure, got {err:?}")
            };
            assert_eq!(failure.position, position);
            assert!(
                failure.reason.contains("does not decode"),
                "{}",
                failure.reason
            );
        }
        for name in ["accounts", "wallets", "retention"] {
            runner
                .wait_for(Some(name), position, Duration::from_secs(5))
                .await
                .unwrap();
        }
        runner.stop().await;
    });
}
