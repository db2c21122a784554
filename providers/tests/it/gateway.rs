//! The payment gateway over real HTTP: an actix-web IPN route wired to the
//! `IpnHandler` on a real sled store, fed by the simulated gateway's signed
//! notifications; and the NOWPayments client against a fake NOWPayments.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::DateTime;
use nexus_core::domain::codec::DomainEvent;
use nexus_core::domain::deposit::DepositStatus;
use nexus_core::domain::ids::DepositId;
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::money::Micros;
use nexus_core::domain::wallet::{DepositOutcome, WalletEvent};
use nexus_core::log::{AnyLog, Direction, EventStore};
use nexus_providers::gateway::json::Json;
use nexus_providers::gateway::{
    canonical_body, sign, verify, GatewayError, IpnError, IpnHandler, IpnSecret, NowPayments,
    NowPaymentsConfig, PaymentGateway, PaymentStatus, SignedIpn, SimulatedGateway,
    SimulatedPayment, SIGNATURE_HEADER,
};
use nexus_tests::loopback::LoopbackServer;
use proptest::prelude::*;

const SECRET: &[u8] = b"ipn-secret-for-tests";

/// Serves `POST /ipn` with the handler, on a thread with its own actix system.
fn serve_ipn(handler: Arc<IpnHandler<AnyLog>>) -> LoopbackServer {
    async fn route(
        request: HttpRequest,
        body: web::Bytes,
        handler: web::Data<IpnHandler<AnyLog>>,
    ) -> HttpResponse {
        let signature = request
            .headers()
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok());
        match handler.handle(signature, &body).await {
            Ok(outcome) => HttpResponse::Ok()
                .content_type("application/json")
                .body(format!("{{\"outcome\":\"{}\"}}", outcome.as_str())),
            Err(e) => {
                let (status, code) = answer(&e);
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                    .content_type("application/json")
                    .body(format!("{{\"code\":\"{code}\"}}"))
            }
        }
    }

    /// The status and code the API answers a refusal with (its error mapping
    /// pins the same pairs), so the cases below name what a gateway sees.
    fn answer(e: &IpnError) -> (u16, &'static str) {
        match e {
            IpnError::NoSecret => (503, "ipn_not_configured"),
            IpnError::Unsigned => (401, "ipn_unsigned"),
            IpnError::MalformedSignature => (401, "ipn_malformed_signature"),
            IpnError::BadSignature => (401, "ipn_bad_signature"),
            IpnError::MalformedBody(_) => (400, "ipn_malformed_body"),
            IpnError::MissingField(_) => (422, "ipn_missing_field"),
            IpnError::InvalidField(_) => (422, "ipn_invalid_field"),
            IpnError::UnsupportedCurrency(_) => (422, "ipn_unsupported_currency"),
            IpnError::NothingPaid => (422, "ipn_nothing_paid"),
            IpnError::UnknownDeposit => (404, "unknown_deposit"),
            IpnError::Domain(_) => (503, "ipn_failed"),
        }
    }

    let data = web::Data::from(handler);
    LoopbackServer::start(2, move |cfg| {
        cfg.app_data(data.clone())
            .route("/ipn", web::post().to(route));
    })
}

/// The test kit's world with the IPN handler served on loopback and a
/// simulated gateway that pays into it.
struct World {
    kit: nexus_testkit::World,
    log: Arc<AnyLog>,
    gateway: Arc<SimulatedGateway>,
    url: String,
    _server: LoopbackServer,
    http: reqwest::Client,
}

impl std::ops::Deref for World {
    type Target = nexus_testkit::World;

    fn deref(&self) -> &Self::Target {
        &self.kit
    }
}

impl World {
    fn new() -> World {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kit = nexus_testkit::World::new();
        let handler = Arc::new(IpnHandler::new(
            kit.commerce.clone(),
            IpnSecret::new(SECRET.to_vec()).unwrap(),
        ));
        let server = serve_ipn(handler);
        let url = server.url("/ipn");
        let gateway = Arc::new(
            SimulatedGateway::new(IpnSecret::new(SECRET.to_vec()).unwrap(), Some(url.clone()))
                .unwrap()
                .with_clock(kit.clock.clone()),
        );
        World {
            log: kit.store.log.clone(),
            kit,
            gateway,
            url,
            _server: server,
            http: reqwest::Client::new(),
        }
    }

    /// A deposit of `amount` and its invoice (in BTC).
    async fn deposit(&self, owner: Owner, amount: Micros) -> DepositId {
        let deposit = self.commerce.request_deposit(owner, amount).await.unwrap();
        let invoice = self
            .gateway
            .create_invoice(deposit, amount, "btc")
            .await
            .unwrap();
        assert_eq!(invoice.id, deposit.to_string());
        assert_eq!(invoice.amount, amount);
        deposit
    }

    async fn available(&self, owner: Owner) -> Micros {
        self.commerce.wallet(owner).await.unwrap().available
    }

    async fn status(&self, deposit: DepositId) -> Option<DepositStatus> {
        self.commerce.deposit(deposit).await.unwrap().status
    }

    /// Pays through the gateway; returns (HTTP status, outcome or code).
    async fn pay(&self, deposit: DepositId, payment: SimulatedPayment) -> (u16, String) {
        let delivery = self.gateway.pay(deposit, &payment).await.unwrap();
        (delivery.status, answer_word(&delivery.body))
    }

    /// Posts a raw body with an optional signature.
    async fn post(&self, body: &str, signature: Option<&str>) -> (u16, String) {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(signature) = signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, answer_word(&response.text().await.unwrap()))
    }

    /// The deposit credits in the owner's wallet stream.
    async fn credits(&self, owner: Owner) -> Vec<(Micros, DepositOutcome, bool)> {
        let records = self
            .log
            .read_stream(&owner.wallet_stream(), 1, Direction::Forwards, 1000)
            .await
            .unwrap();
        records
            .iter()
            .filter_map(|r| {
                match WalletEvent::decode(&r.event_type, r.schema_version, &r.payload).unwrap() {
                    WalletEvent::WalletDepositCredited(e) => {
                        Some((e.entry.amount, e.outcome, e.late))
                    }
                    _ => None,
                }
            })
            .collect()
    }
}

/// `outcome` or `code` from the route's JSON answer.
fn answer_word(body: &str) -> String {
    let value = Json::parse(body.as_bytes()).unwrap();
    value
        .get("outcome")
        .or_else(|| value.get("code"))
        .and_then(Json::as_str)
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finished_credits_once_even_when_sent_five_times_concurrently() {
    let w = World::new();
    let owner = w.customer().await;
    let deposit = w.deposit(owner, Micros::from_usd(10)).await;
    let ipn = w
        .gateway
        .ipn(deposit, &SimulatedPayment::finished())
        .unwrap();

    let mut tasks = Vec::new();
    for _ in 0..5 {
        let gateway = w.gateway.clone();
        let ipn = ipn.clone();
        tasks.push(tokio::spawn(async move { gateway.deliver(ipn).await }));
    }
    let mut words = Vec::new();
    for task in tasks {
        let delivery = task.await.unwrap().unwrap();
        assert_eq!(delivery.status, 200, "{}", delivery.body);
        words.push(answer_word(&delivery.body));
    }
    words.sort();
    assert_eq!(
        words,
        [
            "already_credited",
            "already_credited",
            "already_credited",
            "already_credited",
            "credited"
        ]
    );
    assert_eq!(w.available(owner).await, Micros::from_usd(10));
    assert_eq!(w.status(deposit).await, Some(DepositStatus::Paid));
    assert_eq!(
        w.credits(owner).await,
        [(Micros::from_usd(10), DepositOutcome::Exact, false)]
    );

    // A retry much later changes nothing either.
    let head = w.log.head();
    let again = w.gateway.deliver(ipn).await.unwrap();
    assert_eq!(
        (again.status, answer_word(&again.body).as_str()),
        (200, "already_credited")
    );
    assert_eq!(w.log.head(), head);
    assert_eq!(w.available(owner).await, Micros::from_usd(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_mis_signed_tampered_or_malformed_calls_change_nothing() {
    let w = World::new();
    let owner = w.customer().await;
    let deposit = w.deposit(owner, Micros::from_usd(10)).await;
    let SignedIpn { body, signature } = w
        .gateway
        .ipn(deposit, &SimulatedPayment::finished())
        .unwrap();
    let other_secret = IpnSecret::new(b"not-the-secret".to_vec()).unwrap();
    let mis_signed = sign(&other_secret, body.as_bytes()).unwrap();
    let tampered = body.replace(
        "\"actually_paid_at_fiat\":10.00",
        "\"actually_paid_at_fiat\":1000.00",
    );
    assert_ne!(tampered, body);
    let truncated = &body[..body.len() - 1];
    let mut flipped = signature.clone().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();

    let head = w.log.head();
    let (genuine, sig) = (body.as_str(), signature.as_str());
    // A body that is not JSON cannot carry the gateway's signature: it is
    // refused for that, before its JSON is looked at.
    let cases: [(&str, &str, Option<&str>, u16, &str); 10] = [
        ("unsigned", genuine, None, 401, "ipn_unsigned"),
        ("empty signature", genuine, Some(""), 401, "ipn_unsigned"),
        (
            "mis-signed",
            genuine,
            Some(mis_signed.as_str()),
            401,
            "ipn_bad_signature",
        ),
        (
            "one digit off",
            genuine,
            Some(flipped.as_str()),
            401,
            "ipn_bad_signature",
        ),
        (
            "tampered body",
            tampered.as_str(),
            Some(sig),
            401,
            "ipn_bad_signature",
        ),
        (
            "short signature",
            genuine,
            Some("deadbeef"),
            401,
            "ipn_malformed_signature",
        ),
        (
            "truncated JSON",
            truncated,
            Some(sig),
            401,
            "ipn_bad_signature",
        ),
        (
            "not JSON",
            "payment_status=finished",
            Some(sig),
            401,
            "ipn_bad_signature",
        ),
        (
            "a duplicate key",
            r#"{"payment_id":1,"payment_id":2}"#,
            Some(sig),
            401,
            "ipn_bad_signature",
        ),
        ("an array", "[]", Some(sig), 401, "ipn_bad_signature"),
    ];
    for (name, body, signature, status, code) in cases {
        assert_eq!(
            w.post(body, signature).await,
            (status, code.to_owned()),
            "{name}"
        );
    }
    assert_eq!(w.log.head(), head, "nothing was appended");
    assert_eq!(w.available(owner).await, Micros::ZERO);
    assert_eq!(w.status(deposit).await, Some(DepositStatus::Waiting));

    // Signed but not acceptable: typed 4xx, still nothing changed.
    let unknown = DepositId::new();
    let signed = |text: String| {
        let signature = sign(&IpnSecret::new(SECRET.to_vec()).unwrap(), text.as_bytes()).unwrap();
        (text, signature)
    };
    let (text, sig) = signed(format!(
        r#"{{"payment_id":1,"payment_status":"finished","order_id":"{}","price_amount":5,"price_currency":"usd","pay_amount":1,"actually_paid":1,"pay_currency":"btc","payin_hash":"aa"}}"#,
        unknown.0.simple()
    ));
    assert_eq!(
        w.post(&text, Some(&sig)).await,
        (404, "unknown_deposit".into())
    );
    let (text, sig) = signed(
        r#"{"payment_id":1,"payment_status":"finished","order_id":"not-a-deposit","pay_currency":"btc","price_amount":5}"#.into(),
    );
    assert_eq!(
        w.post(&text, Some(&sig)).await,
        (422, "ipn_invalid_field".into())
    );
    let (text, sig) = signed(format!(
        r#"{{"payment_id":1,"payment_status":"finished","order_id":"{deposit}","price_amount":5,"price_currency":"eur","pay_currency":"btc"}}"#
    ));
    assert_eq!(
        w.post(&text, Some(&sig)).await,
        (422, "ipn_unsupported_currency".into())
    );
    let (text, sig) = signed(r#"{"payment_status":"finished"}"#.into());
    assert_eq!(
        w.post(&text, Some(&sig)).await,
        (422, "ipn_missing_field".into())
    );
    assert_eq!(w.log.head(), head, "nothing was appended");

    // The genuine notification still works afterwards.
    assert_eq!(
        w.post(&body, Some(&signature)).await,
        (200, "credited".into())
    );
    assert_eq!(w.available(owner).await, Micros::from_usd(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_and_over_payments_credit_what_was_paid() {
    let w = World::new();
    let owner = w.customer().await;

    let partial = w.deposit(owner, Micros::from_usd(10)).await;
    assert_eq!(
        w.pay(partial, SimulatedPayment::partially_paid(Micros(4_000_000)))
            .await,
        (200, "credited".into())
    );
    assert_eq!(w.available(owner).await, Micros(4_000_000));
    assert_eq!(
        w.commerce.deposit(partial).await.unwrap().paid,
        Micros(4_000_000)
    );

    let over = w.deposit(owner, Micros::from_usd(10)).await;
    assert_eq!(
        w.pay(over, SimulatedPayment::finished_with(Micros(12_500_000)))
            .await,
        (200, "credited".into())
    );
    assert_eq!(w.available(owner).await, Micros(16_500_000));

    // No fiat value in the notification: price × actually_paid / pay_amount,
    // rounded down. $10 quoted as 0.0001 BTC; $3.333333 buys 0.00003333 BTC,
    // worth $3.333 of the invoice.
    let proportional = w.deposit(owner, Micros::from_usd(10)).await;
    let payment = SimulatedPayment {
        fiat_value: false,
        ..SimulatedPayment::partially_paid(Micros(3_333_333))
    };
    assert_eq!(w.pay(proportional, payment).await, (200, "credited".into()));
    assert_eq!(w.available(owner).await, Micros(19_833_000));

    assert_eq!(
        w.credits(owner).await,
        [
            (Micros(4_000_000), DepositOutcome::Partial, false),
            (Micros(12_500_000), DepositOutcome::Over, false),
            (Micros(3_333_000), DepositOutcome::Partial, false),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_mark_the_deposit_failed_and_a_late_payment_still_credits() {
    let w = World::new();
    let owner = w.customer().await;

    let failed = w.deposit(owner, Micros::from_usd(5)).await;
    assert_eq!(
        w.pay(failed, SimulatedPayment::status(PaymentStatus::Failed))
            .await,
        (200, "failed".into())
    );
    assert_eq!(w.status(failed).await, Some(DepositStatus::Failed));

    let expired = w.deposit(owner, Micros::from_usd(10)).await;
    // Intermediate statuses change nothing.
    let head = w.log.head();
    for status in [
        PaymentStatus::Waiting,
        PaymentStatus::Confirming,
        PaymentStatus::Confirmed,
        PaymentStatus::Sending,
    ] {
        assert_eq!(
            w.pay(expired, SimulatedPayment::status(status)).await,
            (200, "pending".into())
        );
    }
    assert_eq!(w.log.head(), head);
    assert_eq!(w.status(expired).await, Some(DepositStatus::Waiting));

    w.clock.advance(chrono::Duration::minutes(90));
    assert_eq!(
        w.pay(expired, SimulatedPayment::status(PaymentStatus::Expired))
            .await,
        (200, "failed".into())
    );
    assert_eq!(w.status(expired).await, Some(DepositStatus::Failed));
    assert_eq!(w.available(owner).await, Micros::ZERO);

    // The money came anyway: credited, marked late.
    assert_eq!(
        w.pay(expired, SimulatedPayment::finished()).await,
        (200, "credited".into())
    );
    assert_eq!(w.status(expired).await, Some(DepositStatus::Paid));
    assert_eq!(w.available(owner).await, Micros::from_usd(10));
    assert_eq!(
        w.credits(owner).await,
        [(Micros::from_usd(10), DepositOutcome::Exact, true)]
    );

    // A failure after the payment keeps the payment.
    assert_eq!(
        w.pay(expired, SimulatedPayment::status(PaymentStatus::Failed))
            .await,
        (200, "failed".into())
    );
    assert_eq!(w.status(expired).await, Some(DepositStatus::Paid));
    assert_eq!(w.available(owner).await, Micros::from_usd(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_first_credited_without_its_hash_is_not_credited_again_with_it() {
    let w = World::new();
    let owner = w.customer().await;
    let deposit = w.deposit(owner, Micros::from_usd(7)).await;
    let without = SimulatedPayment {
        with_hash: false,
        ..SimulatedPayment::finished()
    };
    assert_eq!(w.pay(deposit, without).await, (200, "credited".into()));
    let with = SimulatedPayment {
        tx_hash: Some("f00dfeed".into()),
        ..SimulatedPayment::finished()
    };
    assert_eq!(w.pay(deposit, with).await, (200, "already_credited".into()));
    assert_eq!(w.available(owner).await, Micros::from_usd(7));

    // A second transaction against the same invoice is money that arrived: it
    // is credited too (a new payment at the gateway, its own id and hash).
    let second = w.deposit(owner, Micros::from_usd(7)).await;
    for (id, hash) in [("6000000001", "aa01"), ("6000000002", "aa02")] {
        let payment = SimulatedPayment {
            tx_hash: Some(hash.into()),
            payment_id: Some(id.into()),
            ..SimulatedPayment::finished()
        };
        assert_eq!(w.pay(second, payment).await, (200, "credited".into()));
    }
    assert_eq!(w.available(owner).await, Micros::from_usd(21));
    // The same payment at the gateway reported again with another hash adds nothing.
    let again = SimulatedPayment {
        tx_hash: Some("aa03".into()),
        payment_id: Some("6000000002".into()),
        ..SimulatedPayment::finished()
    };
    assert_eq!(w.pay(second, again).await, (200, "already_credited".into()));
    assert_eq!(w.available(owner).await, Micros::from_usd(21));
}

/// The reproduction: genuine, correctly signed notifications of one $5.00
/// invoice — `partially_paid` $2 (tx1), `finished` $5 in all (tx2), then
/// `finished` re-sent without its hash, twice — credited $12.00. Each
/// notification credits what it adds to its payment's total: $5.00 in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partially_paid_then_finished_then_resent_without_a_hash_credits_what_was_paid() {
    let w = World::new();
    let owner = w.customer().await;
    let deposit = w.deposit(owner, Micros::from_usd(5)).await;
    let partial = SimulatedPayment {
        tx_hash: Some("tx1".into()),
        ..SimulatedPayment::partially_paid(Micros(2_000_000))
    };
    assert_eq!(w.pay(deposit, partial).await, (200, "credited".into()));
    let finished = SimulatedPayment {
        tx_hash: Some("tx2".into()),
        ..SimulatedPayment::finished()
    };
    assert_eq!(w.pay(deposit, finished).await, (200, "credited".into()));
    let resent = SimulatedPayment {
        with_hash: false,
        ..SimulatedPayment::finished()
    };
    let resent = w.gateway.ipn(deposit, &resent).unwrap();
    for _ in 0..2 {
        let delivery = w.gateway.deliver(resent.clone()).await.unwrap();
        assert_eq!(
            (delivery.status, answer_word(&delivery.body)),
            (200, "already_credited".into())
        );
    }
    assert_eq!(w.available(owner).await, Micros::from_usd(5));
    assert_eq!(
        w.credits(owner).await,
        [
            (Micros(2_000_000), DepositOutcome::Partial, false),
            (Micros(3_000_000), DepositOutcome::Exact, false),
        ]
    );
}

// ---------------------------------------------------------------------------
// The NOWPayments client against a fake NOWPayments.

#[derive(Default)]
struct FakeNowPayments {
    requests: Vec<(Option<String>, String)>,
    answer: Option<(u16, String)>,
}

fn serve_nowpayments(state: Arc<Mutex<FakeNowPayments>>) -> LoopbackServer {
    async fn create(
        request: HttpRequest,
        body: web::Bytes,
        state: web::Data<Mutex<FakeNowPayments>>,
    ) -> HttpResponse {
        let key = request
            .headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = String::from_utf8(body.to_vec()).unwrap();
        let mut state = state.lock().unwrap();
        state.requests.push((key.clone(), body.clone()));
        if let Some((status, answer)) = &state.answer {
            return HttpResponse::build(actix_web::http::StatusCode::from_u16(*status).unwrap())
                .content_type("application/json")
                .body(answer.clone());
        }
        if key.as_deref() != Some("np-key") {
            return HttpResponse::Forbidden()
                .content_type("application/json")
                .body(r#"{"status":false,"statusCode":403,"code":"INVALID_API_KEY","message":"Invalid api key"}"#);
        }
        let request = Json::parse(body.as_bytes()).unwrap();
        let order_id = request.get("order_id").and_then(Json::as_str).unwrap();
        HttpResponse::Created().content_type("application/json").body(format!(
            r#"{{"payment_id":"5745459419","payment_status":"waiting","pay_address":"3EZ2uczqFhE2RpxDg9JG7QjvFyXtMVn5K2","price_amount":{},"price_currency":"usd","pay_amount":1.7070286e-4,"amount_received":0.000169,"pay_currency":"btc","order_id":"{order_id}","order_description":"Nexus deposit","ipn_callback_url":"https://nexus.example/ipn","created_at":"2025-12-22T15:00:22.742Z","updated_at":"2025-12-22T15:00:22.742Z","purchase_id":"5837122679","expiration_estimate_date":"2025-12-22T15:20:22.742Z"}}"#,
            request.get("price_amount").and_then(Json::scalar_text).unwrap()
        ))
    }

    let data = web::Data::from(state);
    LoopbackServer::start(1, move |cfg| {
        cfg.app_data(data.clone())
            .route("/v1/payment", web::post().to(create));
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nowpayments_creates_a_payment_with_exact_amounts() {
    let state = Arc::new(Mutex::new(FakeNowPayments::default()));
    let server = serve_nowpayments(state.clone());
    let base_url = server.url("");
    let client = |key: &str| {
        NowPayments::new(NowPaymentsConfig {
            base_url: format!("{base_url}/"),
            api_key: key.into(),
            ipn_callback_url: Some("https://nexus.example/ipn".into()),
            timeout: Duration::from_secs(5),
        })
        .unwrap()
    };
    let gateway = client("np-key");
    assert!(!format!(
        "{:?}",
        NowPaymentsConfig {
            base_url: base_url.clone(),
            api_key: "np-key".into(),
            ipn_callback_url: None,
            timeout: Duration::from_secs(1),
        }
    )
    .contains("np-key"));
    let deposit = DepositId::new();
    let invoice = gateway
        .create_invoice(deposit, Micros(10_500_000), "BTC")
        .await
        .unwrap();
    assert_eq!(invoice.id, deposit.to_string());
    assert_eq!(invoice.gateway_id, "5745459419");
    assert_eq!(invoice.amount, Micros(10_500_000));
    assert_eq!(invoice.pay_currency, "btc");
    assert_eq!(
        invoice.pay_amount, "0.00017070286",
        "exact, without exponent"
    );
    assert_eq!(invoice.pay_address, "3EZ2uczqFhE2RpxDg9JG7QjvFyXtMVn5K2");
    assert_eq!(
        invoice.expires_at,
        DateTime::parse_from_rfc3339("2025-12-22T15:20:22.742Z").unwrap()
    );
    let (key, body) = state.lock().unwrap().requests[0].clone();
    assert_eq!(key.as_deref(), Some("np-key"));
    assert_eq!(
        body,
        format!(
            r#"{{"price_amount":10.500000,"price_currency":"usd","pay_currency":"btc","order_id":"{deposit}","order_description":"Nexus deposit","ipn_callback_url":"https://nexus.example/ipn"}}"#
        )
    );

    assert!(matches!(
        client("wrong")
            .create_invoice(deposit, Micros(1), "btc")
            .await,
        Err(GatewayError::Rejected(_))
    ));
    assert!(matches!(
        gateway.create_invoice(deposit, Micros(0), "btc").await,
        Err(GatewayError::InvalidAmount)
    ));
    let answers = [
        (500, "oops".to_string(), "Unavailable"),
        (429, "{}".into(), "Unavailable"),
        (
            400,
            r#"{"message":"Currency xyz was not found"}"#.into(),
            "UnsupportedCurrency",
        ),
        (
            400,
            r#"{"message":"amountTo is too small"}"#.into(),
            "Rejected",
        ),
        (201, "not json".into(), "Malformed"),
        (
            201,
            r#"{"payment_id":"1","pay_address":"x"}"#.into(),
            "Malformed",
        ),
        (
            201,
            r#"{"payment_id":"1","pay_address":"x","pay_amount":-1}"#.into(),
            "Malformed",
        ),
    ];
    for (status, answer, want) in answers {
        state.lock().unwrap().answer = Some((status, answer.clone()));
        let got = gateway.create_invoice(deposit, Micros(1), "btc").await;
        let kind = match &got {
            Err(GatewayError::Unavailable(_)) => "Unavailable",
            Err(GatewayError::UnsupportedCurrency(_)) => "UnsupportedCurrency",
            Err(GatewayError::Rejected(_)) => "Rejected",
            Err(GatewayError::Malformed(_)) => "Malformed",
            _ => "other",
        };
        assert_eq!(kind, want, "{status} {answer}: {got:?}");
    }
}

// ---------------------------------------------------------------------------
// The canonical form.

/// JSON number texts, some in exponent form.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (any::<u32>(), 0u32..100_000_000, -12i32..12).prop_map(|(w, f, e)| {
            if e == 0 {
                format!("{w}.{f}")
            } else {
                format!("{w}.{f}e{e}")
            }
        }),
    ]
}

fn key() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_\u{e9}\u{2028}\u{ff5e}\u{1f600}\"\\\\\n]{0,6}"
}

fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        number_text().prop_map(Json::Number),
        "\\PC{0,12}|[\\x00-\\x1f\"\\\\/]{0,4}".prop_map(Json::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|members| Json::Object(members.into_iter().collect()))
                .prop_shuffle_members(),
        ]
    })
}

/// Shuffles an object's members (a proptest-driven permutation).
trait ShuffleMembers {
    fn prop_shuffle_members(self) -> BoxedStrategy<Json>;
}

impl<S: Strategy<Value = Json> + 'static> ShuffleMembers for S {
    fn prop_shuffle_members(self) -> BoxedStrategy<Json> {
        self.prop_flat_map(|value| match value {
            Json::Object(members) => Just(members).prop_shuffle().prop_map(Json::Object).boxed(),
            other => Just(other).boxed(),
        })
        .boxed()
    }
}

/// Another order of every object's members: permuted by `seeds`.
fn permute(value: &Json, seeds: &[u64], next: &mut usize) -> Json {
    match value {
        Json::Object(members) => {
            let mut members: Vec<(u64, String, Json)> = members
                .iter()
                .map(|(k, v)| {
                    *next += 1;
                    (
                        seeds[*next % seeds.len()],
                        k.clone(),
                        permute(v, seeds, next),
                    )
                })
                .collect();
            members.sort_by_key(|a| a.0);
            Json::Object(members.into_iter().map(|(_, k, v)| (k, v)).collect())
        }
        Json::Array(items) => Json::Array(items.iter().map(|v| permute(v, seeds, next)).collect()),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn canonical_json_ignores_key_order(
        value in json(),
        seeds in prop::collection::vec(any::<u64>(), 1..32),
    ) {
        let body = Json::Object(vec![("root".into(), value)]);
        let other = permute(&body, &seeds, &mut 0);
        let text = body.compact();
        let other_text = other.compact();
        // Both parse back to what was written.
        prop_assert_eq!(Json::parse(text.as_bytes()).unwrap(), body.clone());
        prop_assert_eq!(Json::parse(other_text.as_bytes()).unwrap(), other.clone());
        // The canonical form is the same whatever the order, and stable.
        let canonical = canonical_body(text.as_bytes()).unwrap();
        prop_assert_eq!(&canonical, &canonical_body(other_text.as_bytes()).unwrap());
        prop_assert_eq!(&canonical, &canonical_body(canonical.as_bytes()).unwrap());
        // So one signature verifies every order.
        let secret = IpnSecret::new(b"k".to_vec()).unwrap();
        let signature = sign(&secret, text.as_bytes()).unwrap();
        prop_assert!(verify(&secret, Some(&signature), other_text.as_bytes()).is_ok());
    }
}
