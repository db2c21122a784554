//! Upstream pushes and the orphan sweep, with the fulfilment worker on a real
//! sled store and the fake upstreams over loopback HTTP: a signed SMSCode push
//! records its code once even when polls see the same code; a HeroSMS push makes
//! the worker read the activation at once; refused pushes change nothing; an
//! activation left by a timed-out buy is cancelled while one held by a live
//! order is not touched.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::fake_herosms::{ActivationState, Behaviour, FakeHeroSms, KEY};
use crate::fake_smscode::FakeSmsCode;
use crate::store_world::{world, World};
use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use nexus_core::domain::commerce::PlaceOrder;
use nexus_core::domain::ids::OrderId;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{Channel, CountryCode, OrderStatus, ServiceCode};
use nexus_core::log::AnyLog;
use nexus_providers::catalog::Catalog;
use nexus_providers::fulfilment::{Fulfilment, FulfilmentConfig};
use nexus_providers::herosms::HeroSms;
use nexus_providers::inbound::Hint;
use nexus_providers::router::{RouteError, Router, RouterConfig};
use nexus_providers::smscode::{SmsCode, SmsCodeConfig};
use nexus_providers::sweep::{OrphanSweep, SweepConfig};
use nexus_providers::upstream::{BuyRequest, Handle, Upstream};
use nexus_providers::upstream::{InboundError, InboundRequest};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::watch;

const SECRET: &str = "whsec-test-5b1d";

fn order_request(service: &str) -> PlaceOrder {
    PlaceOrder {
        service: ServiceCode::new(service).unwrap(),
        country: CountryCode::new("ID").unwrap(),
        channel: Channel::Sms,
        price: Micros(900_000),
    }
}

/// A worker that polls rarely (every 30 s): a code that comes quickly came by
/// the push.
fn slow_polling(sweep: Option<SweepConfig>) -> FulfilmentConfig {
    FulfilmentConfig {
        first_poll: Duration::from_secs(30),
        max_poll_interval: Duration::from_secs(30),
        tick: Duration::from_millis(20),
        orphan_sweep: sweep,
        ..FulfilmentConfig::default()
    }
}

fn quick_router() -> RouterConfig {
    RouterConfig {
        deadline: Duration::from_millis(1_500),
        attempt_timeout: Duration::from_millis(300),
        ..RouterConfig::default()
    }
}

type Running = (
    Arc<Fulfilment<AnyLog>>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
);

fn start_worker(w: &World, router: Arc<Router>, config: FulfilmentConfig) -> Running {
    let worker = Arc::new(Fulfilment::new(
        w.store.log.clone(),
        w.store.vault.clone(),
        w.commerce.clone(),
        router,
        config,
    ));
    let (stop, stopped) = watch::channel(false);
    let running = worker.clone();
    let task = tokio::spawn(async move { running.run(stopped).await.unwrap() });
    (worker, stop, task)
}

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

async fn handle_of(w: &World, order: OrderId) -> Handle {
    let assigned = w.commerce.order(order).await.unwrap().assigned.unwrap();
    Handle(assigned.phone.plain().unwrap().activation_id.clone())
}

async fn codes_recorded(w: &World, order: OrderId) -> u32 {
    w.commerce
        .order(order)
        .await
        .unwrap()
        .code
        .map_or(0, |c| c.sequence)
}

fn smscode(fake: &FakeSmsCode, secret: Option<&str>) -> Arc<SmsCode> {
    let mut config = SmsCodeConfig::new(
        "smscode",
        fake.base.parse().unwrap(),
        "S",
        16_000,
        HashMap::from([(CountryCode::new("ID").unwrap(), 6)]),
        HashMap::from([
            (ServiceCode::new("wa").unwrap(), 3),
            (ServiceCode::new("tg").unwrap(), 4),
        ]),
    );
    config.webhook_secret = secret.map(str::to_owned);
    Arc::new(SmsCode::new(config).unwrap())
}

fn sign(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn otp_event(order_id: u64, revision: u64, at: chrono::DateTime<Utc>) -> Vec<u8> {
    json!({
        "event": "order.otp_received",
        "timestamp": at.to_rfc3339(),
        "data": {
            "order_id": order_id, "phone_number": "+6281234560001",
            "otp_code": "731904", "otp_message": "Your code is 731904",
            "sms_revision": revision, "product_id": 2001, "catalog_product_id": 91,
            "country": "Indonesia", "platform": "Telegram",
            "operator_id": null, "operator_name": null,
            "can_finish": true, "can_resend": true, "can_cancel": false,
            "can_replace": false, "can_reactivate": false,
            "resend_available_at": null, "cancel_available_at": null,
            "replace_available_at": null
        }
    })
    .to_string()
    .into_bytes()
}

/// Verifies a push with the adapter and, if it is accepted, hands it to the
/// worker, as the HTTP route does.
fn push(
    upstream: &dyn Upstream,
    worker: &Fulfilment<AnyLog>,
    signature: Option<&str>,
    peer: Option<IpAddr>,
    body: &[u8],
) -> Result<(), InboundError> {
    let request = InboundRequest {
        signature,
        peer,
        body,
        now: Utc::now(),
    };
    if let Some(hint) = upstream.inbound(&request)? {
        worker.hints().send(Hint {
            provider: upstream.name().to_owned(),
            handle: hint.handle,
            snapshot: hint.snapshot,
        })?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_smscode_push_records_its_code_once_even_when_polls_see_it_too() {
    let w = world();
    let fake = FakeSmsCode::start();
    // The fake would show the code only after many polls: it comes by push.
    fake.state().code_after_polls = 1_000;
    let upstream = smscode(&fake, Some(SECRET));
    let router = Arc::new(Router::new(vec![upstream.clone()], quick_router()));
    let (worker, stop, task) = start_worker(&w, router, slow_polling(None));
    let owner = w.funded_customer(5_000_000).await;
    let order = w
        .commerce
        .place_order(owner, &order_request("tg"), None)
        .await
        .unwrap()
        .order;
    wait_for(&w, order, OrderStatus::NumberAssigned).await;
    let handle = handle_of(&w, order).await;
    let order_id: u64 = handle.0.parse().unwrap();

    // Refused pushes: unsigned, mis-signed, stale, signed with another secret.
    let body = otp_event(order_id, 1, Utc::now());
    assert_eq!(
        push(&*upstream, &worker, None, None, &body),
        Err(InboundError::Unsigned)
    );
    let mut tampered = body.clone();
    let at = tampered.len() - 3;
    tampered[at] ^= 1;
    assert_eq!(
        push(&*upstream, &worker, Some(&sign(&body)), None, &tampered),
        Err(InboundError::BadSignature)
    );
    let stale = otp_event(order_id, 1, Utc::now() - chrono::Duration::minutes(30));
    assert_eq!(
        push(&*upstream, &worker, Some(&sign(&stale)), None, &stale),
        Err(InboundError::Stale)
    );
    let unconfigured = smscode(&fake, None);
    assert_eq!(
        push(&*unconfigured, &worker, Some(&sign(&body)), None, &body),
        Err(InboundError::NotConfigured)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        w.commerce.order(order).await.unwrap().status,
        Some(OrderStatus::NumberAssigned),
        "a refused push changes nothing"
    );

    // The signed push: its code is recorded without waiting for a poll.
    push(&*upstream, &worker, Some(&sign(&body)), None, &body).unwrap();
    wait_for(&w, order, OrderStatus::CodeReceived).await;
    assert_eq!(codes_recorded(&w, order).await, 1);
    // The same push again (upstreams retry), and the order upstream now shows
    // the same message at the same revision to the polls.
    push(&*upstream, &worker, Some(&sign(&body)), None, &body).unwrap();
    {
        let mut state = fake.state();
        let o = state.orders.get_mut(&order_id).unwrap();
        o.status = "OTP_RECEIVED";
        o.sms_revision = 1;
        o.otp_code = Some("731904".into());
        o.otp_message = Some("Your code is 731904".into());
        o.scheduled.clear();
    }
    // A push for another order's revision-less event makes the worker poll now.
    let completed = json!({
        "event": "order.completed", "timestamp": Utc::now().to_rfc3339(),
        "data": {"order_id": order_id, "sms_revision": null}
    })
    .to_string()
    .into_bytes();
    let polls_before = fake.state().calls("GET", &format!("/v1/orders/{order_id}"));
    push(
        &*upstream,
        &worker,
        Some(&sign(&completed)),
        None,
        &completed,
    )
    .unwrap();
    for _ in 0..100 {
        if fake.state().calls("GET", &format!("/v1/orders/{order_id}")) > polls_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        fake.state().calls("GET", &format!("/v1/orders/{order_id}")) > polls_before,
        "a push without a message makes the worker read the order"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        codes_recorded(&w, order).await,
        1,
        "one code, whether it came by push, by a repeated push or by a poll"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herosms_push_from_an_allowed_source_makes_the_worker_read_the_activation() {
    let w = world();
    let fake = FakeHeroSms::start(Behaviour::default());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let upstream = Arc::new(
        HeroSms::new(
            "herosms",
            &fake.url,
            KEY,
            Duration::from_secs(5),
            Catalog::shipped(),
        )
        .unwrap()
        .with_webhook_sources(vec![loopback], Duration::from_secs(600)),
    );
    let router = Arc::new(Router::new(vec![upstream.clone()], quick_router()));
    let (worker, stop, task) = start_worker(&w, router, slow_polling(None));
    let owner = w.funded_customer(5_000_000).await;
    let order = w
        .commerce
        .place_order(owner, &order_request("tg"), None)
        .await
        .unwrap()
        .order;
    wait_for(&w, order, OrderStatus::NumberAssigned).await;
    let handle = handle_of(&w, order).await;
    let body = json!({
        "activationId": handle.0.parse::<u64>().unwrap(), "service": "tg",
        "text": "Telegram code: 482913", "code": "482913", "country": 6,
        "receivedAt": Utc::now().to_rfc3339()
    })
    .to_string()
    .into_bytes();

    // From elsewhere, stale, or not an smsIncoming body: refused.
    let elsewhere: IpAddr = "198.51.100.4".parse().unwrap();
    assert_eq!(
        push(&*upstream, &worker, None, Some(elsewhere), &body),
        Err(InboundError::SourceNotAllowed)
    );
    let stale = json!({"activationId": handle.0, "receivedAt": "2020-01-01T00:00:00+00:00"})
        .to_string()
        .into_bytes();
    assert_eq!(
        push(&*upstream, &worker, None, Some(loopback), &stale),
        Err(InboundError::Stale)
    );
    assert_eq!(
        push(&*upstream, &worker, None, Some(loopback), b"{\"id\":1}"),
        Err(InboundError::Malformed)
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let statuses = fake
        .seen()
        .iter()
        .filter(|s| s.action() == "getStatusV2")
        .count();
    assert_eq!(statuses, 0, "refused pushes read nothing");

    // Accepted: the worker confirms with a status read, long before its poll.
    push(&*upstream, &worker, None, Some(loopback), &body).unwrap();
    wait_for(&w, order, OrderStatus::CodeReceived).await;
    assert_eq!(codes_recorded(&w, order).await, 1);
    // Retried deliveries of the same push record nothing more.
    for _ in 0..3 {
        push(&*upstream, &worker, None, Some(loopback), &body).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        fake.seen()
            .iter()
            .filter(|s| s.action() == "getStatusV2")
            .count()
            >= 2,
        "each push is confirmed by a status read"
    );
    assert_eq!(codes_recorded(&w, order).await, 1);
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_of_a_timed_out_buy_is_cancelled_and_a_live_orders_activation_is_not() {
    let w = world();
    // HeroSMS sells, but answers after the router has given up.
    let fake = FakeHeroSms::start(Behaviour {
        late_answer: Some(Duration::from_millis(800)),
        code_after_polls: 1_000,
        ..Behaviour::default()
    });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let upstream: Arc<dyn Upstream> = Arc::new(
        HeroSms::new(
            "herosms",
            &fake.url,
            KEY,
            Duration::from_secs(5),
            Catalog::shipped(),
        )
        .unwrap(),
    );
    let router = Arc::new(Router::new(vec![upstream.clone()], quick_router()));
    let request = BuyRequest {
        service: ServiceCode::new("tg").unwrap(),
        country: CountryCode::new("ID").unwrap(),
        channel: Channel::Sms,
        max_cost: None,
        idempotency_key: "lost-buy".into(),
    };
    assert_eq!(
        router.buy(&request).await.unwrap_err(),
        RouteError::Unavailable
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    let orphan = {
        let state = fake.state();
        assert_eq!(state.activations.len(), 1, "the timed-out buy did buy");
        state.activations[0].id.clone()
    };
    fake.set(|b| b.late_answer = None);

    let sweep = SweepConfig {
        interval: Duration::from_millis(100),
        grace: Duration::from_millis(400),
        cancel_interval: Duration::from_millis(50),
        ..SweepConfig::default()
    };
    let (_worker, stop, task) = start_worker(&w, router, slow_polling(Some(sweep)));
    let owner = w.funded_customer(5_000_000).await;
    let order = w
        .commerce
        .place_order(owner, &order_request("tg"), None)
        .await
        .unwrap()
        .order;
    wait_for(&w, order, OrderStatus::NumberAssigned).await;
    let held = handle_of(&w, order).await;
    assert_ne!(held.0, orphan);

    let state_of = |id: &str| {
        fake.state()
            .activations
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.state)
            .unwrap()
    };
    for _ in 0..150 {
        if state_of(&orphan) == ActivationState::Cancelled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state_of(&orphan), ActivationState::Cancelled);
    // Several more sweeps: the live order's activation stays.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(state_of(&held.0), ActivationState::Active);
    assert_eq!(
        w.commerce.order(order).await.unwrap().status,
        Some(OrderStatus::NumberAssigned)
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_waits_out_its_grace_and_is_bounded() {
    let fake = FakeHeroSms::start(Behaviour::default());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let upstream: Arc<dyn Upstream> = Arc::new(
        HeroSms::new(
            "herosms",
            &fake.url,
            KEY,
            Duration::from_secs(5),
            Catalog::shipped(),
        )
        .unwrap(),
    );
    let router = Router::new(vec![upstream], quick_router());
    let ids: Vec<String> = (0..5).map(|_| fake.state().seed("tg")).collect();
    let held: HashSet<(String, Handle)> =
        HashSet::from([("herosms".to_owned(), Handle(ids[0].clone()))]);
    let sweep = OrphanSweep::new(SweepConfig {
        grace: Duration::from_millis(300),
        max_cancels: 3,
        cancel_interval: Duration::from_millis(10),
        ..SweepConfig::default()
    });
    let first = sweep.sweep(&router, &held).await;
    assert_eq!((first.listed, first.unheld, first.cancelled), (5, 4, 0));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let second = sweep.sweep(&router, &held).await;
    assert_eq!(
        (second.cancelled, second.failed),
        (3, 0),
        "at most 3 per sweep"
    );
    let third = sweep.sweep(&router, &held).await;
    assert_eq!((third.listed, third.unheld, third.cancelled), (2, 1, 1));
    let states: Vec<ActivationState> = fake.state().activations.iter().map(|a| a.state).collect();
    assert_eq!(
        states[0],
        ActivationState::Active,
        "the held one is untouched"
    );
    assert!(states[1..].iter().all(|s| *s == ActivationState::Cancelled));
}
