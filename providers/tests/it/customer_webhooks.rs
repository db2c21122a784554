//! Customer webhooks over real loopback HTTP, on a real sled store: a receiver
//! that checks every signature, fails on purpose to exercise the retries, and
//! sees the revisions of an order in order; an acknowledged code captures the
//! hold once, also against a concurrent read over the API; an endpoint that
//! never answers delays no other account; internal addresses and proxies from
//! the environment are never used.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use nexus_core::domain::account::WebhookUrlPolicy;
use nexus_core::domain::codec::DomainEvent;
use nexus_core::domain::commerce::PlaceOrder;
use nexus_core::domain::deposit::PaymentReport;
use nexus_core::domain::ids::{AccountId, OrderId};
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{
    code_subject, CancelReason, Channel, CountryCode, DeliveryChannel, OrderEvent, ServiceCode,
};
use nexus_core::domain::wallet::{Payment, WalletEvent};
use nexus_core::log::{Direction, EventStore};
use nexus_core::service::account_service::{Accounts, AccountsConfig};
use nexus_providers::customer_webhooks::{
    CustomerWebhooks, CustomerWebhooksConfig, DeliveryStats, ATTEMPT_HEADER, EVENT_ID_HEADER,
    SIGNATURE_HEADER,
};
use nexus_tests::loopback::LoopbackServer;
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::watch;

/// Accepted age of a signature's timestamp, as a receiver would check it.
const REPLAY_WINDOW_SECS: i64 = 300;
const PRICE: Micros = Micros(1_500_000);

/// What the receiver saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    event_id: String,
    attempt: u32,
    body: Value,
    /// The signature matched the secret and its timestamp was fresh.
    verified: bool,
}

/// The receiver's state: the secret it checks against, how many requests to
/// refuse with a 500 first, a delay before answering, and what it saw.
#[derive(Default)]
struct Receiver {
    secret: String,
    fail_first: usize,
    answer_delay_ms: u64,
    seen: Vec<Seen>,
}

/// Checks `t=<unix>,v1=<hex>` as the customer documentation says.
fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (Utc::now().timestamp() - t).abs() > REPLAY_WINDOW_SECS {
        return false;
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

/// Serves `POST /hook` on loopback.
fn serve_receiver(state: Arc<Mutex<Receiver>>) -> LoopbackServer {
    async fn hook(
        request: HttpRequest,
        body: web::Bytes,
        state: web::Data<Mutex<Receiver>>,
    ) -> HttpResponse {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (status, delay) = {
            let mut state = state.lock().unwrap();
            let verified = verify(&state.secret, &header(SIGNATURE_HEADER), &body);
            state.seen.push(Seen {
                event_id: header(EVENT_ID_HEADER),
                attempt: header(ATTEMPT_HEADER).parse().unwrap_or(0),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                verified,
            });
            let failing = state.seen.len() <= state.fail_first;
            (if failing { 500 } else { 204 }, state.answer_delay_ms)
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
    }

    let data = web::Data::from(state);
    LoopbackServer::start(1, move |cfg| {
        cfg.app_data(data.clone())
            .route("/hook", web::post().to(hook));
    })
}

/// The test kit's world, on the system clock (the worker retries in real
/// time), with accounts that accept a plain-HTTP webhook, and the receiver
/// served on loopback.
struct World {
    kit: nexus_testkit::World,
    receiver: Arc<Mutex<Receiver>>,
    url: String,
    _server: LoopbackServer,
}

impl std::ops::Deref for World {
    type Target = nexus_testkit::World;

    fn deref(&self) -> &Self::Target {
        &self.kit
    }
}

fn world() -> World {
    let kit = nexus_testkit::World::builder()
        .system_clock()
        .accounts_config(AccountsConfig {
            // The receiver listens on loopback over plain HTTP.
            webhook_urls: WebhookUrlPolicy {
                allow_insecure: true,
            },
            ..AccountsConfig::default()
        })
        .build();
    let receiver = Arc::new(Mutex::new(Receiver::default()));
    let server = serve_receiver(receiver.clone());
    let url = server.url("/hook");
    World {
        kit,
        receiver,
        url,
        _server: server,
    }
}

/// Short retries; the receiver is on loopback, so internal addresses are allowed.
fn quick_config(world: &World) -> CustomerWebhooksConfig {
    CustomerWebhooksConfig {
        first_retry_delay_ms: 20,
        max_retry_delay_ms: 80,
        max_attempts: 5,
        attempt_timeout_ms: 2_000,
        allow_internal_addresses: true,
        ..CustomerWebhooksConfig::new(world.dir().join("webhooks.position"))
    }
}

impl World {
    /// A funded customer with its webhook pointing at the receiver.
    async fn customer(&self, email: &str) -> AccountId {
        self.customer_at(email, &self.url, &self.receiver).await
    }

    /// A funded customer with its webhook at `url`, served by `receiver`.
    async fn customer_at(&self, email: &str, url: &str, receiver: &Mutex<Receiver>) -> AccountId {
        let registration = self
            .accounts
            .register(email, "correct horse battery")
            .await
            .unwrap();
        // Only a verified account sets a webhook and deposits.
        let token = registration.verification_token.expose();
        self.accounts.verify_email(token).await.unwrap();
        let account = registration.account;
        let endpoint = self.accounts.set_webhook(account, url).await.unwrap();
        assert!(endpoint.secret.expose().starts_with("whsec_"));
        receiver.lock().unwrap().secret = endpoint.secret.expose().to_owned();
        let owner = Owner::Account(account);
        let deposit = self
            .commerce
            .request_deposit(owner, Micros(10_000_000))
            .await
            .unwrap();
        self.commerce
            .record_payment(
                deposit,
                PaymentReport::new(
                    &format!("{}", account.0.simple()),
                    Payment::new("btc", &format!("tx-{account}")).unwrap(),
                    Micros(10_000_000),
                )
                .unwrap(),
            )
            .await
            .unwrap();
        account
    }

    fn start(
        &self,
        config: CustomerWebhooksConfig,
    ) -> (
        watch::Sender<bool>,
        Arc<DeliveryStats>,
        tokio::task::JoinHandle<
            Result<(), nexus_providers::customer_webhooks::CustomerWebhooksError>,
        >,
    ) {
        let dispatcher = CustomerWebhooks::new(
            self.store.log.clone(),
            self.store.vault.clone(),
            self.accounts.clone(),
            self.commerce.clone(),
            config,
        )
        .unwrap();
        let stats = dispatcher.stats();
        let (stop, stopped) = watch::channel(false);
        (stop, stats, tokio::spawn(dispatcher.run(stopped)))
    }

    async fn order_with_code(&self, account: AccountId, code: &str) -> OrderId {
        let owner = Owner::Account(account);
        let placed = self
            .commerce
            .place_order(
                owner,
                &PlaceOrder {
                    service: ServiceCode::new("tg").unwrap(),
                    country: CountryCode::new("DE").unwrap(),
                    channel: Channel::Sms,
                    price: PRICE,
                },
                None,
            )
            .await
            .unwrap();
        let id = placed.order;
        self.commerce
            .assign_number(id, "sim", "act-1", Micros(900_000), "4915112345678")
            .await
            .unwrap();
        self.commerce
            .receive_code(id, code, &format!("Your Telegram code is {code}"))
            .await
            .unwrap();
        id
    }

    async fn order_events(&self, id: OrderId) -> Vec<(u64, OrderEvent)> {
        let records = self
            .store
            .log
            .read_stream(&id.stream(), 1, Direction::Forwards, 100)
            .await
            .unwrap();
        records
            .iter()
            .map(|r| {
                (
                    r.version,
                    OrderEvent::from_recorded(r, &self.store.vault).unwrap(),
                )
            })
            .collect()
    }

    /// The capture entries of `account`'s wallet for `order`.
    async fn captures(&self, account: AccountId, order: OrderId) -> usize {
        let records = self
            .store
            .log
            .read_stream(
                &Owner::Account(account).wallet_stream(),
                1,
                Direction::Forwards,
                1000,
            )
            .await
            .unwrap();
        records
            .iter()
            .filter_map(|r| WalletEvent::from_recorded(r, &self.store.vault).ok())
            .filter(|e| matches!(e, WalletEvent::WalletHoldCaptured(c) if c.order == order))
            .count()
    }

    fn seen(&self) -> Vec<Seen> {
        self.receiver.lock().unwrap().seen.clone()
    }

    /// Waits until the receiver saw `n` requests.
    async fn wait_seen(&self, n: usize) -> Vec<Seen> {
        for _ in 0..400 {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the receiver saw {} requests, not {n}", self.seen().len());
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_code_event_is_retried_then_captures_the_hold_and_revisions_increase() {
    let w = world();
    let account = w.customer("erin@example.com").await;
    w.receiver.lock().unwrap().fail_first = 2;
    let (stop, stats, task) = w.start(quick_config(&w));

    let id = w.order_with_code(account, "52817").await;
    let seen = w.wait_seen(3).await;
    // The same event three times: two refusals, then the acknowledgement.
    let code_events: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.body["type"] == "order.code_received")
        .collect();
    assert_eq!(code_events.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|s| s.verified), "every signature verifies");
    assert_eq!(
        code_events.iter().map(|s| s.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(code_events
        .iter()
        .all(|s| s.event_id == code_events[0].event_id));
    let body = &code_events[2].body;
    assert_eq!(body["order_id"], id.to_string());
    assert_eq!(body["id"], code_events[0].event_id.as_str());
    assert_eq!(body["order"]["status"], "code_received");
    assert_eq!(body["order"]["code"]["code"], "52817");
    assert_eq!(body["order"]["code"]["text"], "Your Telegram code is 52817");
    assert_eq!(body["order"]["phone"], "4915112345678");
    assert_eq!(body["order"]["service"], "tg");
    assert_eq!(body["order"]["price"], "1.500000");
    // The revision is the order stream's version at the event.
    let events = w.order_events(id).await;
    let code_version = events
        .iter()
        .find(|(_, e)| matches!(e, OrderEvent::OrderCodeReceived(_)))
        .unwrap()
        .0;
    assert_eq!(body["revision"], code_version);

    // The acknowledgement was the delivery: captured once, via the webhook.
    wait_until("the capture", || {
        DeliveryStats::get(&stats.codes_captured) == 1
    })
    .await;
    let events = w.order_events(id).await;
    let delivered: Vec<_> = events
        .iter()
        .filter_map(|(_, e)| match e {
            OrderEvent::OrderCodeDelivered(d) => Some(d.via),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, [DeliveryChannel::Webhook]);
    assert_eq!(w.captures(account, id).await, 1);
    let wallet = w.commerce.wallet(Owner::Account(account)).await.unwrap();
    assert_eq!(wallet.held(), Micros::ZERO);
    // 10.00 - 1.50 + 2% cashback of 1.50.
    assert_eq!(wallet.available, Micros(10_000_000 - 1_500_000 + 30_000));
    // A read over the API afterwards returns the code and captures nothing more.
    let read = w
        .commerce
        .read_code(id, Owner::Account(account), DeliveryChannel::Api)
        .await
        .unwrap();
    assert_eq!(read.code, "52817");
    assert_eq!(w.captures(account, id).await, 1);

    // Completing sends a later revision.
    w.commerce
        .complete(id, Owner::Account(account))
        .await
        .unwrap();
    let seen = w.wait_seen(4).await;
    let completed = &seen[3].body;
    assert_eq!(completed["type"], "order.completed");
    assert_eq!(completed["order"]["status"], "completed");
    assert!(
        completed["order"].get("code").is_none(),
        "no code after the code event"
    );
    assert!(completed["revision"].as_u64().unwrap() > code_version);
    assert!(seen[3].verified);

    wait_until("the second acknowledgement", || {
        DeliveryStats::get(&stats.delivered) == 2
    })
    .await;
    assert_eq!(DeliveryStats::get(&stats.retried), 2);
    assert_eq!(DeliveryStats::get(&stats.failed), 0);
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

/// A retry after the code's key was erased carries no code: the body is built
/// anew for each attempt of a code event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_code_was_erased_does_not_carry_it() {
    let w = world();
    let account = w.customer("ivy@example.com").await;
    w.receiver.lock().unwrap().fail_first = usize::MAX;
    let config = CustomerWebhooksConfig {
        first_retry_delay_ms: 500,
        max_retry_delay_ms: 500,
        max_attempts: 2,
        ..quick_config(&w)
    };
    let (stop, stats, task) = w.start(config);
    let id = w.order_with_code(account, "73190").await;
    let first = w.wait_seen(1).await;
    assert_eq!(first[0].body["order"]["code"]["code"], "73190");
    w.store.vault.erase(&code_subject(id, 1)).unwrap();

    let seen = w.wait_seen(2).await;
    assert_eq!(seen[1].attempt, 2);
    assert_eq!(seen[1].body["type"], "order.code_received");
    assert!(
        seen[1].body["order"]["code"]["code"].is_null(),
        "{:?}",
        seen[1].body
    );
    assert!(seen[1].body["order"]["code"]["text"].is_null());
    assert!(!seen[1].body.to_string().contains("73190"));
    wait_until("the delivery given up", || {
        DeliveryStats::get(&stats.failed) == 1
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_over_the_api_and_the_webhook_capture_once() {
    let w = world();
    let account = w.customer("frank@example.com").await;
    let owner = Owner::Account(account);
    // The receiver answers slowly: the API read lands first.
    w.receiver.lock().unwrap().answer_delay_ms = 300;
    let (stop, stats, task) = w.start(quick_config(&w));
    let id = w.order_with_code(account, "40404").await;
    let read = w
        .commerce
        .read_code(id, owner, DeliveryChannel::Api)
        .await
        .unwrap();
    assert_eq!(read.code, "40404");
    w.wait_seen(1).await;
    wait_until("the acknowledgement", || {
        DeliveryStats::get(&stats.delivered) == 1
    })
    .await;
    // Let the dispatcher's read run.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(DeliveryStats::get(&stats.codes_captured), 0);
    assert_eq!(w.captures(account, id).await, 1);
    let delivered: Vec<_> = w
        .order_events(id)
        .await
        .into_iter()
        .filter_map(|(_, e)| match e {
            OrderEvent::OrderCodeDelivered(d) => Some(d.via),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, [DeliveryChannel::Api]);

    // Reads racing each other on another order: still one delivery, one capture.
    let id = w.order_with_code(account, "77777").await;
    let mut racing = Vec::new();
    for n in 0..8 {
        let commerce = w.commerce.clone();
        let via = if n % 2 == 0 {
            DeliveryChannel::Api
        } else {
            DeliveryChannel::Webhook
        };
        racing.push(tokio::spawn(async move {
            commerce.read_code(id, owner, via).await
        }));
    }
    for read in racing {
        assert_eq!(read.await.unwrap().unwrap().code, "77777");
    }
    let deliveries = w
        .order_events(id)
        .await
        .into_iter()
        .filter(|(_, e)| matches!(e, OrderEvent::OrderCodeDelivered(_)))
        .count();
    assert_eq!(deliveries, 1);
    assert_eq!(w.captures(account, id).await, 1);
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_given_up_after_the_last_attempt_and_nothing_is_captured() {
    let w = world();
    let account = w.customer("grace@example.com").await;
    w.receiver.lock().unwrap().fail_first = usize::MAX;
    let config = CustomerWebhooksConfig {
        max_attempts: 3,
        ..quick_config(&w)
    };
    let (stop, stats, task) = w.start(config);
    let id = w.order_with_code(account, "11111").await;
    wait_until("the delivery to be given up", || {
        DeliveryStats::get(&stats.failed) == 1
    })
    .await;
    assert_eq!(w.seen().len(), 3, "exactly the configured attempts");
    assert_eq!(DeliveryStats::get(&stats.retried), 2);
    assert_eq!(
        w.captures(account, id).await,
        0,
        "an unacknowledged code is not delivered"
    );
    let wallet = w.commerce.wallet(Owner::Account(account)).await.unwrap();
    assert_eq!(wallet.held(), PRICE);
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_is_sent_and_a_pending_delivery_survives_a_restart() {
    let w = world();
    let account = w.customer("heidi@example.com").await;
    let owner = Owner::Account(account);
    // Refuses everything at first, with retries far apart: still pending at stop.
    w.receiver.lock().unwrap().fail_first = usize::MAX;
    let slow = CustomerWebhooksConfig {
        first_retry_delay_ms: 60_000,
        max_retry_delay_ms: 60_000,
        ..quick_config(&w)
    };
    let (stop, _, task) = w.start(slow);
    let placed = w
        .commerce
        .place_order(
            owner,
            &PlaceOrder {
                service: ServiceCode::new("wa").unwrap(),
                country: CountryCode::new("GB").unwrap(),
                channel: Channel::Sms,
                price: PRICE,
            },
            None,
        )
        .await
        .unwrap();
    w.commerce
        .cancel(placed.order, Some(owner), CancelReason::Customer)
        .await
        .unwrap();
    let first = w.wait_seen(1).await;
    assert_eq!(first[0].body["type"], "order.cancelled");
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();

    // Restarted with a healthy receiver: the same event is sent again.
    w.receiver.lock().unwrap().fail_first = 0;
    let (stop, stats, task) = w.start(quick_config(&w));
    wait_until("the redelivery", || {
        DeliveryStats::get(&stats.delivered) == 1
    })
    .await;
    let seen = w.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.event_id, first[0].event_id, "the same event id");
    assert_eq!(last.body["order"]["status"], "cancelled");
    assert!(last.verified);
    // The wallet was refunded in full by the cancel.
    let wallet = w.commerce.wallet(owner).await.unwrap();
    assert_eq!(wallet.available, Micros(10_000_000));

    // Restarted again: what was acknowledged is not sent twice.
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    let before = w.seen().len();
    let (stop, _, task) = w.start(quick_config(&w));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.seen().len(), before);

    // Removing the endpoint stops deliveries.
    w.accounts.remove_webhook(account).await.unwrap();
    let before = w.seen().len();
    w.order_with_code(account, "22222").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.seen().len(), before);
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_the_next_events_and_urls_are_checked() {
    let w = world();
    let account = w.customer("ivan@example.com").await;
    let (stop, _, task) = w.start(quick_config(&w));
    let rotated = w.accounts.set_webhook(account, &w.url).await.unwrap();
    let old_secret = std::mem::replace(
        &mut w.receiver.lock().unwrap().secret,
        rotated.secret.expose().to_owned(),
    );
    assert_ne!(old_secret, rotated.secret.expose());
    w.order_with_code(account, "31337").await;
    let seen = w.wait_seen(1).await;
    assert!(seen[0].verified, "signed with the new secret");

    // The service refuses what the domain refuses; the default policy is strict.
    let strict = Accounts::new(
        w.store.log.clone(),
        w.store.vault.clone(),
        AccountsConfig::default(),
    )
    .unwrap();
    let refused = strict.set_webhook(account, &w.url).await.unwrap_err();
    assert!(refused.refusal().is_some(), "{refused}");
    let view = w.accounts.webhook(account).await.unwrap().unwrap();
    assert_eq!(view.url, w.url);
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_resolving_to_an_internal_address_is_never_connected_to() {
    // The receiver by a name (`localhost`) instead of its IP literal: the URL
    // passes the development policy, but delivery resolves the name and drops
    // internal addresses unless they are allowed.
    let mut w = world();
    w.url = w.url.replace("127.0.0.1", "localhost");
    let account = w.customer("heidi@example.com").await;
    let config = CustomerWebhooksConfig {
        max_attempts: 2,
        allow_internal_addresses: false,
        ..quick_config(&w)
    };
    let (stop, stats, task) = w.start(config);
    let id = w.order_with_code(account, "22222").await;
    wait_until("the delivery to be given up", || {
        DeliveryStats::get(&stats.failed) == 1
    })
    .await;
    assert!(w.seen().is_empty(), "nothing reached the internal host");
    assert_eq!(w.captures(account, id).await, 0);
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();

    // Allowed (development), the same name is delivered to.
    let config = CustomerWebhooksConfig {
        allow_internal_addresses: true,
        checkpoint: w.dir().join("webhooks-allowed.position"),
        ..quick_config(&w)
    };
    let (stop, stats, task) = w.start(config);
    w.order_with_code(account, "33333").await;
    wait_until("the delivery", || DeliveryStats::get(&stats.delivered) >= 1).await;
    assert!(!w.seen().is_empty());
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_ip_in_the_url_is_refused_at_every_attempt() {
    // The URL names the receiver by its loopback IP, accepted when it was set
    // (development policy): the dispatcher checks it again before each attempt.
    let w = world();
    let account = w.customer("judy@example.com").await;
    let config = CustomerWebhooksConfig {
        max_attempts: 2,
        allow_internal_addresses: false,
        ..quick_config(&w)
    };
    let (stop, stats, task) = w.start(config);
    let id = w.order_with_code(account, "44444").await;
    wait_until("the delivery to be given up", || {
        DeliveryStats::get(&stats.failed) == 1
    })
    .await;
    assert_eq!(DeliveryStats::get(&stats.retried), 1);
    assert!(w.seen().is_empty(), "nothing reached the internal address");
    assert_eq!(w.captures(account, id).await, 0);
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_never_answers_delays_no_other_account_and_overflows_only_its_own_queue() {
    let w = world();
    // Alice's endpoint takes every request and never answers; Bob's is the
    // world's receiver.
    let stuck = Arc::new(Mutex::new(Receiver {
        answer_delay_ms: 3_600_000,
        ..Receiver::default()
    }));
    let stuck_server = serve_receiver(stuck.clone());
    let alice = w
        .customer_at("alice@example.com", &stuck_server.url("/hook"), &stuck)
        .await;
    let bob = w.customer("bob@example.com").await;
    let config = CustomerWebhooksConfig {
        attempt_timeout_ms: 3_600_000,
        max_concurrent_requests: 3,
        max_concurrent_per_account: 2,
        max_queued_per_account: 3,
        ..quick_config(&w)
    };
    let (stop, stats, task) = w.start(config);
    let stuck_requests = || stuck.lock().unwrap().seen.len();

    // Six code events of Alice's: two in flight, three queued, and the sixth
    // drops the oldest queued one.
    for n in 0..6 {
        w.order_with_code(alice, &format!("1000{n}")).await;
    }
    wait_until("Alice's oldest queued event to be dropped", || {
        DeliveryStats::get(&stats.dropped) == 1
    })
    .await;
    wait_until("Alice's two requests", || stuck_requests() == 2).await;

    // Bob's events go out while every one of Alice's is stuck or queued, and
    // Alice's full queue drops none of them.
    let mut bobs = Vec::new();
    for n in 0..3 {
        bobs.push(w.order_with_code(bob, &format!("2000{n}")).await);
        let seen = w.wait_seen(n + 1).await;
        assert_eq!(seen[n].body["order_id"], bobs[n].to_string());
        assert!(seen[n].verified);
    }
    wait_until("Bob's codes to count as read", || {
        DeliveryStats::get(&stats.codes_captured) == 3
    })
    .await;
    assert_eq!(DeliveryStats::get(&stats.delivered), 3);
    assert_eq!(stuck_requests(), 2, "Alice still has her two requests only");
    assert!(stuck.lock().unwrap().seen.iter().all(|s| s.attempt == 1));
    assert_eq!(DeliveryStats::get(&stats.dropped), 1, "only Alice's oldest");
    assert_eq!(DeliveryStats::get(&stats.failed), 0);
    for id in bobs {
        assert_eq!(w.captures(bob, id).await, 1, "Bob's codes were delivered");
    }
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

/// Set in the process the proxy test starts; it holds the proxy's URL.
const PROXY_CHILD_ENV: &str = "NEXUS_TEST_WEBHOOK_PROXY";

#[test]
fn proxy_variables_of_the_environment_are_ignored() {
    if let Some(proxy) = std::env::var_os(PROXY_CHILD_ENV) {
        return deliver_with_proxy_variables(&proxy.to_string_lossy());
    }
    // A client reads the proxy variables when it is built, so they are set
    // only in a process of their own: this test binary again, running this
    // test alone, where the branch above delivers one webhook.
    let proxied = Arc::new(AtomicUsize::new(0));
    let counter = proxied.clone();
    let proxy = LoopbackServer::start(1, move |cfg| {
        let counter = counter.clone();
        cfg.default_service(web::to(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { HttpResponse::NoContent().finish() }
        }));
    });
    let proxy_url = proxy.url("");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "customer_webhooks::proxy_variables_of_the_environment_are_ignored",
            "--exact",
            "--test-threads=1",
        ])
        .env(PROXY_CHILD_ENV, &proxy_url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        child.env(name, &proxy_url);
    }
    let output = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 passed"), "the test ran: {stdout}");
    assert_eq!(
        proxied.load(Ordering::SeqCst),
        0,
        "nothing went to the proxy"
    );
}

/// In the child process: one webhook, sent straight to the receiver.
fn deliver_with_proxy_variables(proxy_url: &str) {
    assert!(std::env::var("HTTP_PROXY").is_ok_and(|v| v == proxy_url));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let w = world();
        let account = w.customer("kate@example.com").await;
        let (stop, stats, task) = w.start(quick_config(&w));
        w.order_with_code(account, "55555").await;
        wait_until("the acknowledgement", || {
            DeliveryStats::get(&stats.delivered) == 1
        })
        .await;
        let seen = w.seen();
        assert_eq!(seen.len(), 1, "the receiver answered, not the proxy");
        assert!(seen[0].verified);
        stop.send(true).unwrap();
        task.await.unwrap().unwrap();
    });
}
