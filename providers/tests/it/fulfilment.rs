//! The fulfilment worker against simulated upstreams, on a real sled store: buy,
//! poll, code, finish; failover; no numbers → refund; resuming after a restart;
//! a buy lost at a real-protocol upstream (a fake HeroSMS over loopback HTTP)
//! is bought elsewhere and its number cancelled.

use crate::fake_herosms;
use std::sync::Arc;
use std::time::Duration;

use crate::store_world::{world, World};
use nexus_core::domain::commerce::PlaceOrder;
use nexus_core::domain::ids::OrderId;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{
    CancelReason, Channel, CountryCode, DeliveryChannel, OrderStatus, ServiceCode,
};
use nexus_providers::fulfilment::{Fulfilment, FulfilmentConfig};
use nexus_providers::router::{Router, RouterConfig};
use nexus_providers::simulator::{CodeTiming, Simulator, SimulatorConfig};
use nexus_providers::upstream::{Upstream, UpstreamState};
use tokio::sync::watch;

fn sim(name: &str, f: impl FnOnce(&mut SimulatorConfig)) -> Arc<Simulator> {
    let mut config = SimulatorConfig {
        latency_ms: 5,
        jitter_ms: 2,
        code_timing: CodeTiming::Fixed { delay_ms: 150 },
        ..SimulatorConfig::healthy(name)
    };
    f(&mut config);
    Arc::new(Simulator::with_seed(config, 11))
}

fn quick_worker() -> FulfilmentConfig {
    FulfilmentConfig {
        first_poll: Duration::from_millis(50),
        max_poll_interval: Duration::from_millis(100),
        tick: Duration::from_millis(20),
        ..FulfilmentConfig::default()
    }
}

fn order_request() -> PlaceOrder {
    PlaceOrder {
        service: ServiceCode::new("tg").unwrap(),
        country: CountryCode::new("ID").unwrap(),
        channel: Channel::Sms,
        price: Micros(500_000),
    }
}

fn start_worker(
    w: &World,
    upstreams: Vec<Arc<dyn Upstream>>,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let router = Arc::new(Router::new(upstreams, RouterConfig::default()));
    start_worker_with(w, router)
}

fn start_worker_with(
    w: &World,
    router: Arc<Router>,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let worker = Arc::new(Fulfilment::new(
        w.store.log.clone(),
        w.store.vault.clone(),
        w.commerce.clone(),
        router,
        quick_worker(),
    ));
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(async move { worker.run(stopped).await.unwrap() });
    (stop, task)
}

/// Waits (bounded) until the order reaches `status`.
async fn wait_for(w: &World, order: OrderId, status: OrderStatus) {
    for _ in 0..200 {
        if w.commerce.order(order).await.unwrap().status == Some(status) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "order did not reach {status:?}: {:?}",
        w.commerce.order(order).await.unwrap().status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_bought_polled_and_finished_upstream() {
    let w = world();
    let upstream = sim("sim-a", |_| {});
    let (stop, task) = start_worker(&w, vec![upstream.clone()]);
    let owner = w.funded_customer(2_000_000).await;
    let order = w
        .commerce
        .place_order(owner, &order_request(), None)
        .await
        .unwrap()
        .order;
    wait_for(&w, order, OrderStatus::NumberAssigned).await;
    wait_for(&w, order, OrderStatus::CodeReceived).await;
    let code = w
        .commerce
        .read_code(order, owner, DeliveryChannel::Api)
        .await
        .unwrap();
    assert_eq!(code.code.len(), 6);
    w.commerce.complete(order, owner).await.unwrap();
    let handle = w
        .commerce
        .order(order)
        .await
        .unwrap()
        .assigned
        .unwrap()
        .phone
        .plain()
        .unwrap()
        .activation_id
        .clone();
    // The worker closes the activation upstream.
    for _ in 0..100 {
        if upstream
            .poll(&nexus_providers::upstream::Handle(handle.clone()))
            .await
            .unwrap()
            .state
            == UpstreamState::Completed
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        upstream
            .poll(&nexus_providers::upstream::Handle(handle))
            .await
            .unwrap()
            .state,
        UpstreamState::Completed
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_and_refunds_when_no_upstream_has_numbers() {
    let w = world();
    let (stop, task) = start_worker(
        &w,
        vec![sim("empty", |c| c.stock = 0), sim("full", |c| c.stock = 1)],
    );
    let owner = w.funded_customer(2_000_000).await;
    let first = w
        .commerce
        .place_order(owner, &order_request(), None)
        .await
        .unwrap()
        .order;
    wait_for(&w, first, OrderStatus::NumberAssigned).await;
    assert_eq!(
        w.commerce
            .order(first)
            .await
            .unwrap()
            .assigned
            .unwrap()
            .provider,
        "full"
    );
    // Now both are out of stock: the order is cancelled and refunded.
    let second = w
        .commerce
        .place_order(owner, &order_request(), None)
        .await
        .unwrap()
        .order;
    wait_for(&w, second, OrderStatus::Cancelled).await;
    let wallet = w.commerce.wallet(owner).await.unwrap();
    assert_eq!(
        (wallet.available, wallet.held()),
        (Micros(1_500_000), Micros(500_000))
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_a_restart_without_buying_twice() {
    let w = world();
    let upstream = sim("sim-a", |c| {
        c.code_timing = CodeTiming::Fixed { delay_ms: 400 }
    });
    let owner = w.funded_customer(5_000_000).await;
    // Orders placed while no worker runs.
    let a = w
        .commerce
        .place_order(owner, &order_request(), None)
        .await
        .unwrap()
        .order;
    let (stop, task) = start_worker(&w, vec![upstream.clone()]);
    wait_for(&w, a, OrderStatus::NumberAssigned).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let b = w
        .commerce
        .place_order(owner, &order_request(), None)
        .await
        .unwrap()
        .order;
    // A second worker picks up both: b gets bought, a keeps being polled.
    let (stop, task) = start_worker(&w, vec![upstream.clone()]);
    wait_for(&w, b, OrderStatus::NumberAssigned).await;
    wait_for(&w, a, OrderStatus::CodeReceived).await;
    wait_for(&w, b, OrderStatus::CodeReceived).await;
    // Each order bought once upstream: the same idempotency key finds one purchase.
    let offers = upstream
        .offers(
            Some(&ServiceCode::new("tg").unwrap()),
            Some(CountryCode::new("ID").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        SimulatorConfig::healthy("x").stock - offers[0].stock,
        2,
        "two numbers sold for two orders"
    );
    // Cancelling a fresh order closes it upstream too.
    let c = w
        .commerce
        .place_order(owner, &order_request(), None)
        .await
        .unwrap()
        .order;
    wait_for(&w, c, OrderStatus::NumberAssigned).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let _ = w
        .commerce
        .cancel(c, Some(owner), CancelReason::Customer)
        .await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buy_lost_at_herosms_is_bought_elsewhere_and_its_number_cancelled() {
    use fake_herosms::{ActivationState, Behaviour, FakeHeroSms, KEY};
    let w = world();
    let fake = FakeHeroSms::start(Behaviour {
        // HeroSMS writes times in its own zone, without saying which.
        zone_offset_minutes: Some(180),
        ..Behaviour::default()
    });
    let hero = nexus_providers::herosms::HeroSms::new(
        "herosms",
        &fake.url,
        KEY,
        Duration::from_secs(1),
        nexus_providers::catalog::Catalog::shipped(),
    )
    .unwrap();
    let router = Arc::new(Router::new(
        vec![Arc::new(hero), sim("sim-b", |_| {})],
        RouterConfig {
            attempt_timeout: Duration::from_millis(700),
            reconcile_interval: Duration::from_millis(50),
            reconcile_attempts: 40,
            absent_after: Duration::from_millis(800),
            reconcile_clock_skew: Duration::from_secs(1),
            ..RouterConfig::default()
        },
    ));
    let (stop, task) = start_worker_with(&w, router.clone());
    // Nothing bought within one clock skew of the router's start is claimed
    // (an order from before a restart may hold it; HeroSMS writes seconds).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let owner = w.funded_customer(5_000_000).await;
    let provider = |order: OrderId| {
        let commerce = w.commerce.clone();
        async move {
            commerce
                .order(order)
                .await
                .unwrap()
                .assigned
                .unwrap()
                .provider
        }
    };
    let first = w
        .commerce
        .place_order(owner, &order_request(), None)
        .await
        .unwrap()
        .order;
    wait_for(&w, first, OrderStatus::NumberAssigned).await;
    assert_eq!(provider(first).await, "herosms");
    // HeroSMS now sells, but answers too late: the order is bought elsewhere.
    fake.set(|b| b.hang_buys = Some(Duration::from_millis(2_500)));
    let second = w
        .commerce
        .place_order(owner, &order_request(), None)
        .await
        .unwrap()
        .order;
    wait_for(&w, second, OrderStatus::NumberAssigned).await;
    assert_eq!(provider(second).await, "sim-b");
    // The number HeroSMS sold for it is found and cancelled; the first
    // order's number is left alone.
    for _ in 0..200 {
        if router.health()[0].reconciled_cancelled > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = router.health();
    assert_eq!(
        (health[0].reconciled_cancelled, health[0].unreconciled),
        (1, 0)
    );
    let states: Vec<ActivationState> = fake.state().activations.iter().map(|a| a.state).collect();
    assert_eq!(states.len(), 2);
    assert_ne!(states[0], ActivationState::Cancelled);
    assert_eq!(states[1], ActivationState::Cancelled);
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_buy_lost_at_once_is_reconciled_and_older_numbers_kept() {
    use fake_herosms::{ActivationState, Behaviour, FakeHeroSms, KEY};
    let w = world();
    let fake = FakeHeroSms::start(Behaviour {
        zone_offset_minutes: Some(180),
        ..Behaviour::default()
    });
    // Each start gets a new router (and adapter) over the same upstreams; the
    // clock skew spans the whole test, so without the seeding from the log
    // nothing bought here could be claimed.
    let fresh_router = || {
        let hero = nexus_providers::herosms::HeroSms::new(
            "herosms",
            &fake.url,
            KEY,
            Duration::from_secs(1),
            nexus_providers::catalog::Catalog::shipped(),
        )
        .unwrap();
        Arc::new(Router::new(
            vec![Arc::new(hero), sim("sim-b", |_| {})],
            RouterConfig {
                attempt_timeout: Duration::from_millis(700),
                reconcile_interval: Duration::from_millis(50),
                reconcile_attempts: 40,
                absent_after: Duration::from_millis(800),
                reconcile_clock_skew: Duration::from_secs(60),
                ..RouterConfig::default()
            },
        ))
    };
    let provider = |order: OrderId| {
        let commerce = w.commerce.clone();
        async move {
            commerce
                .order(order)
                .await
                .unwrap()
                .assigned
                .unwrap()
                .provider
        }
    };
    let owner = w.funded_customer(5_000_000).await;
    let place = || async {
        w.commerce
            .place_order(owner, &order_request(), None)
            .await
            .unwrap()
            .order
    };
    // Before the restart: an order holds a HeroSMS number.
    let (stop, task) = start_worker_with(&w, fresh_router());
    let before = place().await;
    wait_for(&w, before, OrderStatus::NumberAssigned).await;
    assert_eq!(provider(before).await, "herosms");
    stop.send(true).unwrap();
    task.await.unwrap();

    // The restart: the new worker seeds its router from the log.
    let router = fresh_router();
    assert!(!router.is_seeded());
    let (stop, task) = start_worker_with(&w, router.clone());
    for _ in 0..200 {
        if router.is_seeded() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(router.is_seeded(), "the worker seeds the router on start");
    // Right away: one order bought normally, then one whose HeroSMS buy is
    // answered too late and which is bought elsewhere.
    let after = place().await;
    wait_for(&w, after, OrderStatus::NumberAssigned).await;
    assert_eq!(provider(after).await, "herosms");
    fake.set(|b| b.hang_buys = Some(Duration::from_millis(2_500)));
    let lost = place().await;
    wait_for(&w, lost, OrderStatus::NumberAssigned).await;
    assert_eq!(provider(lost).await, "sim-b");
    for _ in 0..200 {
        let health = &router.health()[0];
        if health.reconciled_cancelled + health.reconciled_absent + health.unreconciled > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = &router.health()[0];
    assert_eq!(
        (
            health.reconciled_cancelled,
            health.reconciled_absent,
            health.unreconciled
        ),
        (1, 0, 0)
    );
    // The number of the order from before the restart and the one bought
    // after it are kept; only the lost buy's number is cancelled.
    let states: Vec<ActivationState> = fake.state().activations.iter().map(|a| a.state).collect();
    assert_eq!(
        states,
        vec![
            ActivationState::Active,
            ActivationState::Active,
            ActivationState::Cancelled
        ]
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}
