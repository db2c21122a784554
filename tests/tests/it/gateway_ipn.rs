//! A deposit through the real NOWPayments gateway, end to end: the binary is
//! configured (`NEXUS_CONFIG`) with a `[gateway]` of kind `nowpayments` whose
//! `base_url` is a fake NOWPayments on loopback. The invoice is created over
//! HTTP by the real client (`POST /v1/payment` with the `x-api-key` header),
//! and the deposit is credited by a notification in NOWPayments' shape posted
//! to `/v1/payments/ipn`, signed as NOWPayments signs: HMAC-SHA512 under the
//! IPN secret over the body with its keys sorted, hex in `x-nowpayments-sig`.
//! Mis-signed notifications change nothing, a repeated one credits nothing
//! more, and the simulated gateway's pay route does not exist.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{SecondsFormat, Utc};
use hmac::{Hmac, KeyInit, Mac};
use nexus_tests::journey::{call, customer, to_micros};
use nexus_tests::loopback::LoopbackServer;
use nexus_tests::{Response, Server};
use sha2::Sha512;

const API_KEY: &str = "np-e2e-api-key-4f81c2d7";
const IPN_SECRET: &str = "np-e2e-ipn-secret-9d03b7aa";
const API_KEY_ENV: &str = "NEXUS_E2E_NOWPAYMENTS_API_KEY";
const IPN_SECRET_ENV: &str = "NEXUS_E2E_NOWPAYMENTS_IPN_SECRET";
const IPN_CALLBACK_URL: &str = "https://nexus.example/v1/payments/ipn";
const ADMIN_TOKEN: &str = "gateway-e2e-admin-token-5e2c";
/// The IPN signature header (NOWPayments' name).
const SIGNATURE_HEADER: &str = "x-nowpayments-sig";
/// How long the server may take to show a change.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// The fake gateway's payment, as it answers the creation.
const PAYMENT_ID: &str = "5745459419";
const PURCHASE_ID: &str = "5837122679";
const PAY_ADDRESS: &str = "3EZ2uczqFhE2RpxDg9JG7QjvFyXtMVn5K2";
/// A JSON number as NOWPayments writes it (JavaScript's shortest form).
const PAY_AMOUNT: &str = "0.00017070286";

/// One request the fake gateway received.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    path: String,
    api_key: Option<String>,
    content_type: Option<String>,
    body: String,
}

#[derive(Default)]
struct FakeState {
    received: Vec<Received>,
    /// The `expiration_estimate_date` of each payment created.
    expirations: Vec<String>,
}

/// NOWPayments on loopback: `POST /v1/payment` with the right `x-api-key`
/// creates a payment in the answer's real shape; a wrong or missing key is
/// NOWPayments' 403. Everything it receives is kept.
struct FakeNowPayments {
    state: web::Data<Mutex<FakeState>>,
    server: LoopbackServer,
}

/// The text of the JSON member `key` of a compact object (a number's text as
/// written), or None.
fn raw_member<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let (_, after) = json.split_once(&format!("\"{key}\":"))?;
    let end = after.find([',', '}']).unwrap_or(after.len());
    Some(after[..end].trim())
}

fn record(request: &HttpRequest, body: &web::Bytes, state: &Mutex<FakeState>) -> Received {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let received = Received {
        method: request.method().as_str().to_owned(),
        path: request.uri().to_string(),
        api_key: header("x-api-key"),
        content_type: header("content-type"),
        body: String::from_utf8_lossy(body).into_owned(),
    };
    state.lock().unwrap().received.push(received.clone());
    received
}

impl FakeNowPayments {
    fn start() -> FakeNowPayments {
        async fn create_payment(
            request: HttpRequest,
            body: web::Bytes,
            state: web::Data<Mutex<FakeState>>,
        ) -> HttpResponse {
            let received = record(&request, &body, &state);
            if received.api_key.as_deref() != Some(API_KEY) {
                return HttpResponse::Forbidden()
                    .content_type("application/json")
                    .body(r#"{"status":false,"statusCode":403,"code":"INVALID_API_KEY","message":"Invalid api key"}"#);
            }
            let bad_request = |message: &str| {
                HttpResponse::BadRequest()
                    .content_type("application/json")
                    .body(format!(
                        r#"{{"status":false,"statusCode":400,"code":"BAD_CREATE_PAYMENT_REQUEST","message":"{message}"}}"#
                    ))
            };
            let Ok(request) = serde_json::from_str::<serde_json::Value>(&received.body) else {
                return bad_request("body is not JSON");
            };
            let (Some(price_amount), Some(price_currency), Some(pay_currency), Some(order_id)) = (
                raw_member(&received.body, "price_amount")
                    .filter(|_| request["price_amount"].is_number()),
                request["price_currency"].as_str(),
                request["pay_currency"].as_str(),
                request["order_id"].as_str(),
            ) else {
                return bad_request(
                    "price_amount, price_currency, pay_currency and order_id are required",
                );
            };
            let now = Utc::now();
            let stamp = now.to_rfc3339_opts(SecondsFormat::Millis, true);
            let expiration =
                (now + chrono::Duration::minutes(20)).to_rfc3339_opts(SecondsFormat::Millis, true);
            state.lock().unwrap().expirations.push(expiration.clone());
            let text = |s: &str| serde_json::to_string(s).unwrap();
            let callback = request["ipn_callback_url"]
                .as_str()
                .map_or_else(|| "null".to_owned(), text);
            HttpResponse::Created()
                .content_type("application/json")
                .body(format!(
                    r#"{{"payment_id":"{PAYMENT_ID}","payment_status":"waiting","pay_address":"{PAY_ADDRESS}","price_amount":{price_amount},"price_currency":{},"pay_amount":{PAY_AMOUNT},"amount_received":0.00016920001,"pay_currency":{},"order_id":{},"order_description":"Nexus deposit","ipn_callback_url":{callback},"created_at":"{stamp}","updated_at":"{stamp}","purchase_id":"{PURCHASE_ID}","smart_contract":null,"network":"btc","network_precision":null,"time_limit":null,"burning_percent":null,"expiration_estimate_date":"{expiration}","is_fixed_rate":false,"is_fee_paid_by_user":false,"valid_until":"{expiration}","type":"crypto2crypto"}}"#,
                    text(price_currency),
                    text(pay_currency),
                    text(order_id),
                ))
        }

        async fn elsewhere(
            request: HttpRequest,
            body: web::Bytes,
            state: web::Data<Mutex<FakeState>>,
        ) -> HttpResponse {
            record(&request, &body, &state);
            HttpResponse::NotFound()
                .content_type("application/json")
                .body(
                    r#"{"status":false,"statusCode":404,"code":"NOT_FOUND","message":"Not found"}"#,
                )
        }

        let state = web::Data::new(Mutex::new(FakeState::default()));
        let shared = state.clone();
        let server = LoopbackServer::start(1, move |cfg| {
            cfg.app_data(shared.clone())
                .route("/v1/payment", web::post().to(create_payment))
                .default_service(web::to(elsewhere));
        });
        FakeNowPayments { state, server }
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    fn expirations(&self) -> Vec<String> {
        self.state.lock().unwrap().expirations.clone()
    }
}

/// A JSON value as written: scalars as their JSON text (numbers are never
/// re-formatted), objects with their members in the order given.
enum Json {
    Raw(String),
    Object(Vec<(&'static str, Json)>),
}

impl Json {
    fn number(text: &str) -> Json {
        Json::Raw(text.to_owned())
    }

    fn string(text: &str) -> Json {
        Json::Raw(serde_json::to_string(text).unwrap())
    }

    fn null() -> Json {
        Json::Raw("null".to_owned())
    }

    /// Compact, members in their own order: the body as NOWPayments sends it.
    fn as_sent(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, false);
        out
    }

    /// What NOWPayments signs, `JSON.stringify(sortObject(body))`: compact,
    /// object keys sorted (by UTF-16 code units, JavaScript's default sort) at
    /// every depth.
    fn key_sorted(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, true);
        out
    }

    fn write(&self, out: &mut String, sorted: bool) {
        match self {
            Json::Raw(text) => out.push_str(text),
            Json::Object(members) => {
                let mut members: Vec<&(&str, Json)> = members.iter().collect();
                if sorted {
                    members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
                }
                out.push('{');
                for (i, (key, value)) in members.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(key).unwrap());
                    out.push(':');
                    value.write(out, sorted);
                }
                out.push('}');
            }
        }
    }
}

/// NOWPayments' notification that payment `PAYMENT_ID` of deposit `order_id`
/// is finished: the whole quoted amount arrived. Members in the order
/// NOWPayments writes them, the fee object included.
fn finished_ipn(order_id: &str, price_amount: &str, actually_paid: &str) -> Json {
    Json::Object(vec![
        ("payment_id", Json::number(PAYMENT_ID)),
        ("invoice_id", Json::null()),
        ("payment_status", Json::string("finished")),
        ("pay_address", Json::string(PAY_ADDRESS)),
        ("payin_extra_id", Json::null()),
        ("price_amount", Json::number(price_amount)),
        ("price_currency", Json::string("usd")),
        ("pay_amount", Json::number(PAY_AMOUNT)),
        ("actually_paid", Json::number(actually_paid)),
        ("actually_paid_at_fiat", Json::number("0")),
        ("pay_currency", Json::string("btc")),
        ("order_id", Json::string(order_id)),
        ("order_description", Json::string("Nexus deposit")),
        ("purchase_id", Json::string(PURCHASE_ID)),
        ("outcome_amount", Json::number("0.00016731")),
        ("outcome_currency", Json::string("btc")),
        ("payment_extra_ids", Json::null()),
        (
            "fee",
            Json::Object(vec![
                ("currency", Json::string("btc")),
                ("depositFee", Json::number("0")),
                ("withdrawalFee", Json::number("0.00000339")),
                ("serviceFee", Json::number("0")),
            ]),
        ),
    ])
}

/// HMAC-SHA512 of `text` under `secret`, in hex.
fn hmac_sha512_hex(secret: &str, text: &str) -> String {
    let mut mac =
        <Hmac<Sha512> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(text.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// `nexus serve` with the configuration file at `config` and the gateway's
/// secrets (`api_key` and the IPN secret) in the environment the file names.
fn start(config: &str, api_key: &str) -> Server {
    Server::start_with(&[
        ("NEXUS_CONFIG", config),
        (API_KEY_ENV, api_key),
        (IPN_SECRET_ENV, IPN_SECRET),
        ("NEXUS_ADMIN_TOKEN", ADMIN_TOKEN),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_RETENTION_SWEEP_SECS", "0"),
    ])
}

fn write_config(dir: &tempfile::TempDir, gateway: &FakeNowPayments) -> String {
    let text = format!(
        r#"environment = "development"

[gateway]
kind = "nowpayments"
base_url = "{base}"
api_key_env = "{API_KEY_ENV}"
ipn_secret_env = "{IPN_SECRET_ENV}"
ipn_callback_url = "{IPN_CALLBACK_URL}"
timeout_ms = 5000
"#,
        base = gateway.server.url(""),
    );
    let path = dir.path().join("nexus.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A NOWPayments gateway for other modules' tests: since a real upstream needs
/// a `[gateway]`, they fund wallets through it rather than the simulated one.
pub(crate) struct TestGateway {
    gateway: FakeNowPayments,
}

impl TestGateway {
    pub(crate) fn start() -> TestGateway {
        TestGateway {
            gateway: FakeNowPayments::start(),
        }
    }

    /// The `[gateway]` section of a configuration file.
    pub(crate) fn section(&self) -> String {
        format!(
            "[gateway]\nkind = \"nowpayments\"\nbase_url = \"{}\"\napi_key_env = \"{API_KEY_ENV}\"\nipn_secret_env = \"{IPN_SECRET_ENV}\"\n",
            self.gateway.server.url("")
        )
    }

    /// The environment [`TestGateway::section`] names.
    pub(crate) fn env() -> [(&'static str, &'static str); 2] {
        [(API_KEY_ENV, API_KEY), (IPN_SECRET_ENV, IPN_SECRET)]
    }

    /// A deposit of `amount` for the customer with API key `key`, paid in full
    /// by the gateway's signed notification; waits until the wallet shows it.
    pub(crate) fn fund(&self, server: &Server, key: &str, amount: &str) {
        let before = wallet(server, key).1;
        let body = format!(r#"{{"amount":"{amount}"}}"#);
        let deposit = call(server, "POST", "/v1/deposits", key, &[], Some(&body));
        assert_eq!(deposit.status, 201, "{}", deposit.body);
        let id = deposit.json()["id"].as_str().expect("an id").to_owned();
        let ipn = finished_ipn(&id, amount, PAY_AMOUNT);
        let signature = hmac_sha512_hex(IPN_SECRET, &ipn.key_sorted());
        let paid = post_ipn(server, Some(&signature), &ipn.as_sent());
        assert_eq!(
            (paid.status, paid.json()["outcome"].as_str()),
            (200, Some("credited")),
            "{}",
            paid.body
        );
        eventually("the deposit is credited", || {
            (wallet(server, key).1 == before + to_micros(amount)).then_some(())
        });
    }
}

/// Polls `probe` until it gives a value; panics with `what` past the deadline.
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (balance, available, held) in micros.
fn wallet(server: &Server, key: &str) -> (i64, i64, i64) {
    let wallet = call(server, "GET", "/v1/wallet", key, &[], None);
    assert_eq!(wallet.status, 200, "{}", wallet.body);
    let wallet = wallet.json();
    let micros = |field: &str| to_micros(wallet[field].as_str().expect("an amount"));
    (micros("balance"), micros("available"), micros("held"))
}

/// Waits until every read model has applied the whole log; returns the log's
/// head then.
fn caught_up(server: &Server) -> u64 {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    eventually("the read models catch up with the log", || {
        let status = server.send(
            "GET",
            "/v1/admin/projections",
            &[("Authorization", &bearer)],
            None,
        );
        assert_eq!(status.status, 200, "{}", status.body);
        let status = status.json();
        let items = status["items"].as_array().expect("items");
        let done = !items.is_empty()
            && items
                .iter()
                .all(|p| p["state"] == "running" && p["lag_events"] == 0);
        done.then(|| status["log_head"].as_u64().expect("the log's head"))
    })
}

/// `POST /v1/deposits` of 10.00 for the customer with API key `key`.
fn request_deposit(server: &Server, key: &str) -> Response {
    call(
        server,
        "POST",
        "/v1/deposits",
        key,
        &[],
        Some(r#"{"amount":"10.00"}"#),
    )
}

fn post_ipn(server: &Server, signature: Option<&str>, body: &str) -> Response {
    let headers: Vec<(&str, &str)> = signature
        .map(|s| (SIGNATURE_HEADER, s))
        .into_iter()
        .collect();
    server.send("POST", "/v1/payments/ipn", &headers, Some(body))
}

#[test]
fn a_signed_nowpayments_ipn_over_http_credits_the_deposit_exactly_once() {
    let gateway = FakeNowPayments::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir, &gateway);
    let server = start(&config, API_KEY);
    let key = customer(&server, "gateway@example.com");
    assert_eq!(wallet(&server, &key), (0, 0, 0));
    assert!(gateway.received().is_empty(), "no call before a deposit");

    // The invoice: the real client creates the payment at the gateway.
    let deposit = request_deposit(&server, &key);
    assert_eq!(deposit.status, 201, "{}", deposit.body);
    let deposit = deposit.json();
    let deposit_id = deposit["id"].as_str().expect("an id").to_owned();

    let received = gateway.received();
    assert_eq!(received.len(), 1, "one call to the gateway: {received:?}");
    let create = &received[0];
    assert_eq!(create.method, "POST");
    assert_eq!(create.path, "/v1/payment");
    assert_eq!(create.api_key.as_deref(), Some(API_KEY));
    assert_eq!(create.content_type.as_deref(), Some("application/json"));
    let sent: serde_json::Value = serde_json::from_str(&create.body).expect("a JSON body");
    let price_text = raw_member(&create.body, "price_amount").expect("a price_amount");
    assert!(sent["price_amount"].is_number(), "{}", create.body);
    assert_eq!(to_micros(price_text), 10_000_000, "{}", create.body);
    assert_eq!(sent["price_currency"], "usd");
    assert_eq!(sent["pay_currency"], "btc");
    assert_eq!(sent["order_id"], deposit_id.as_str());
    assert_eq!(sent["ipn_callback_url"], IPN_CALLBACK_URL);

    // The answer is the gateway's payment.
    let expirations = gateway.expirations();
    assert_eq!(expirations.len(), 1);
    let expires_at = chrono::DateTime::parse_from_rfc3339(&expirations[0])
        .unwrap()
        .with_timezone(&Utc)
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    assert_eq!(
        deposit,
        serde_json::json!({
            "id": deposit_id,
            "amount": "10.000000",
            "status": "waiting",
            "pay_currency": "btc",
            "pay_amount": PAY_AMOUNT,
            "pay_address": PAY_ADDRESS,
            "expires_at": expires_at,
        })
    );

    // With a real gateway the simulated one's pay route does not exist.
    let dev_pay = server.send(
        "POST",
        &format!("/v1/dev/payments/{deposit_id}/pay"),
        &[],
        None,
    );
    assert_eq!(dev_pay.status, 404, "{}", dev_pay.body);
    assert_eq!(wallet(&server, &key), (0, 0, 0));

    let ipn = finished_ipn(&deposit_id, "10", PAY_AMOUNT);
    let body = ipn.as_sent();
    let signed_text = ipn.key_sorted();
    assert_ne!(
        body, signed_text,
        "the body is sent in another order than signed"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::from_str::<serde_json::Value>(&signed_text).unwrap(),
        "the same members"
    );
    let signature = hmac_sha512_hex(IPN_SECRET, &signed_text);

    // Refused, each a 401 problem that changes nothing: unsigned, signed with
    // another secret, signed over the body as sent rather than key-sorted, and
    // a genuine signature over a body paying more.
    let head = caught_up(&server);
    let tampered = finished_ipn(&deposit_id, "1000", "0.017070286").as_sent();
    let refused = [
        (None, body.clone(), "ipn_unsigned"),
        (
            Some(hmac_sha512_hex("not the IPN secret", &signed_text)),
            body.clone(),
            "ipn_bad_signature",
        ),
        (
            Some(hmac_sha512_hex(IPN_SECRET, &body)),
            body.clone(),
            "ipn_bad_signature",
        ),
        (Some(signature.clone()), tampered, "ipn_bad_signature"),
    ];
    for (forged, text, code) in &refused {
        let answer = post_ipn(&server, forged.as_deref(), text);
        assert_eq!(answer.status, 401, "{}", answer.body);
        assert_eq!(
            answer.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(answer.json()["code"], *code, "{}", answer.body);
    }
    assert_eq!(wallet(&server, &key), (0, 0, 0), "nothing credited");
    assert_eq!(caught_up(&server), head, "nothing written to the log");

    // The genuine notification credits the price, once.
    let credited = post_ipn(&server, Some(&signature), &body);
    assert_eq!(credited.status, 200, "{}", credited.body);
    assert_eq!(
        credited.json(),
        serde_json::json!({ "outcome": "credited" })
    );
    eventually("the deposit shows in the wallet", || {
        (wallet(&server, &key) == (10_000_000, 10_000_000, 0)).then_some(())
    });
    let head = caught_up(&server);

    // The same notification again, and again with its members key-sorted
    // (the same signature covers both): already credited, nothing written.
    for text in [&body, &signed_text] {
        let again = post_ipn(&server, Some(&signature), text);
        assert_eq!(again.status, 200, "{}", again.body);
        assert_eq!(
            again.json(),
            serde_json::json!({ "outcome": "already_credited" })
        );
    }
    assert_eq!(caught_up(&server), head, "a repeat writes nothing");
    assert_eq!(wallet(&server, &key), (10_000_000, 10_000_000, 0));

    // The read models: one deposit paid in full, one ledger row.
    let deposits = call(&server, "GET", "/v1/deposits", &key, &[], None);
    assert_eq!(deposits.status, 200, "{}", deposits.body);
    let deposits = deposits.json();
    let items = deposits["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{deposits}");
    assert_eq!(items[0]["id"], deposit_id.as_str());
    assert_eq!(items[0]["status"], "paid", "{deposits}");
    assert_eq!(items[0]["amount"], "10.000000");
    assert_eq!(items[0]["paid"], "10.000000");
    let entries = call(&server, "GET", "/v1/wallet/entries", &key, &[], None);
    assert_eq!(entries.status, 200, "{}", entries.body);
    let entries = entries.json();
    let rows = entries["items"].as_array().expect("items");
    assert_eq!(rows.len(), 1, "{entries}");
    assert_eq!(rows[0]["reason"], "deposit");
    assert_eq!(rows[0]["available_change"], "10.000000");
    assert_eq!(rows[0]["held_change"], "0.000000");

    // The notifications were the test's; the gateway heard only the creation.
    assert_eq!(gateway.received().len(), 1, "{:?}", gateway.received());
}

#[test]
fn a_deposit_whose_invoice_the_gateway_refuses_is_a_503_and_shows_failed() {
    let gateway = FakeNowPayments::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir, &gateway);
    let server = start(&config, "np-e2e-a-revoked-api-key");
    let key = customer(&server, "refused@example.com");

    let refused = request_deposit(&server, &key);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    assert!(
        !refused.body.contains("np-e2e-a-revoked-api-key"),
        "the key is never shown: {}",
        refused.body
    );
    let received = gateway.received();
    assert_eq!(received.len(), 1, "one creation asked: {received:?}");

    // The deposit the customer got no invoice for is closed, not left waiting.
    caught_up(&server);
    let deposits = call(&server, "GET", "/v1/deposits", &key, &[], None);
    assert_eq!(deposits.status, 200, "{}", deposits.body);
    let deposits = deposits.json();
    let items = deposits["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{deposits}");
    assert_eq!(items[0]["status"], "failed", "{deposits}");
    assert_eq!(wallet(&server, &key), (0, 0, 0));
}
