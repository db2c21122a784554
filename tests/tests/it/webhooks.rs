//! Customer webhooks end to end: the real binary posts signed order events to a
//! receiver on loopback, retries a refusal, and an acknowledged code is the
//! delivery (the wallet shows the capture without any read over the API).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use hmac::{Hmac, KeyInit, Mac};
use nexus_tests::journey::{fund, signed_in_customer, with_session};
use nexus_tests::loopback::LoopbackServer;
use nexus_tests::{Response, Server};
use serde_json::Value;
use sha2::Sha256;

/// The replay window a receiver applies to the signature's timestamp.
const REPLAY_WINDOW_SECS: i64 = 300;

fn start(insecure_urls: bool) -> Server {
    Server::start_with(&[
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_SIM_CODE_DELAY_MS", "300"),
        ("NEXUS_COOKIE_SECURE", "false"),
        (
            "NEXUS_WEBHOOK_ALLOW_INSECURE_URLS",
            if insecure_urls { "true" } else { "false" },
        ),
    ])
}

fn call(server: &Server, method: &str, path: &str, key: &str, body: Option<&str>) -> Response {
    let bearer = format!("Bearer {key}");
    server.send(method, path, &[("Authorization", &bearer)], body)
}

/// One request the receiver saw.
#[derive(Clone, Debug)]
struct Seen {
    signature: String,
    event_id: String,
    body: Vec<u8>,
}

/// A receiver on loopback: refuses the first `fail_first` requests with a 500,
/// acknowledges the rest with a 200, and keeps what it saw.
struct Receiver {
    url: String,
    state: web::Data<(Mutex<Vec<Seen>>, usize)>,
    _server: LoopbackServer,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        async fn hook(
            request: HttpRequest,
            body: web::Bytes,
            state: web::Data<(Mutex<Vec<Seen>>, usize)>,
        ) -> HttpResponse {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let mut seen = state.0.lock().unwrap();
            seen.push(Seen {
                signature: header("nexus-signature"),
                event_id: header("nexus-event-id"),
                body: body.to_vec(),
            });
            if seen.len() <= state.1 {
                HttpResponse::InternalServerError().finish()
            } else {
                HttpResponse::Ok().finish()
            }
        }

        let state = web::Data::new((Mutex::new(Vec::new()), fail_first));
        let shared = state.clone();
        let server = LoopbackServer::start(1, move |cfg| {
            cfg.app_data(shared.clone())
                .route("/hooks/nexus", web::post().to(hook));
        });
        Receiver {
            url: server.url("/hooks/nexus?tenant=t-1"),
            state,
            _server: server,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.0.lock().unwrap().clone()
    }
}

/// Checks `Nexus-Signature: t=<unix>,v1=<hex>` the way docs/WEBHOOKS.md says.
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - t).abs() > REPLAY_WINDOW_SECS {
        return false;
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

#[test]
fn a_signed_code_event_is_delivered_by_webhook_and_captures_the_hold() {
    let server = start(true);
    let alice_in = signed_in_customer(&server, "alice@example.com");
    let (alice, alice_session) = (alice_in.key, alice_in.session);
    let mallory_in = signed_in_customer(&server, "mallory@example.com");
    let (mallory, mallory_session) = (mallory_in.key, mallory_in.session);
    let receiver = Receiver::start(1);

    // No endpoint yet; then bad URLs are problems that never echo the URL.
    assert_eq!(
        call(&server, "GET", "/v1/me/webhook", &alice, None).status,
        404
    );
    let long = format!(r#"{{"url":"https://example.com/{}"}}"#, "a".repeat(2100));
    for body in [
        r#"{"url":"ftp://example.com/hook"}"#,
        r#"{"url":"https://user:s3cret@example.com/hook"}"#,
        r#"{"url":"not a url"}"#,
        r#"{"url":"https://example.com/hook#part"}"#,
        r#"{"url":"https://127.1/hook"}"#,
        long.as_str(),
    ] {
        let r = with_session(&server, "PUT", "/v1/me/webhook", &alice_session, Some(body));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.json()["code"], "invalid_webhook_url", "{body}");
        assert!(!r.body.contains("s3cret"), "{}", r.body);
    }
    let r = with_session(
        &server,
        "PUT",
        "/v1/me/webhook",
        &alice_session,
        Some(r#"{"uri":"x"}"#),
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("invalid_json"))
    );
    assert_eq!(
        server
            .send(
                "PUT",
                "/v1/me/webhook",
                &[],
                Some(&format!(r#"{{"url":"{}"}}"#, receiver.url))
            )
            .status,
        401
    );

    // Set: the secret is in this answer only.
    let set = with_session(
        &server,
        "PUT",
        "/v1/me/webhook",
        &alice_session,
        Some(&format!(r#"{{"url":"{}"}}"#, receiver.url)),
    );
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.header("cache-control"), Some("no-store"));
    let set = set.json();
    assert_eq!(set["url"], receiver.url.as_str());
    let secret = set["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() == 49,
        "{secret}"
    );
    let shown = call(&server, "GET", "/v1/me/webhook", &alice, None);
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.json()["url"], receiver.url.as_str());
    assert!(shown.json().get("secret").is_none());

    // Another account sees none of it, and its DELETE touches only its own.
    assert_eq!(
        call(&server, "GET", "/v1/me/webhook", &mallory, None).status,
        404
    );
    assert_eq!(
        with_session(&server, "DELETE", "/v1/me/webhook", &mallory_session, None).status,
        204
    );
    assert_eq!(
        call(&server, "GET", "/v1/me/webhook", &alice, None).status,
        200
    );

    // An order: its code arrives by webhook, refused once, then acknowledged.
    fund(&server, &alice, "10.00");
    let order = call(
        &server,
        "POST",
        "/v1/orders",
        &alice,
        Some(r#"{"service":"tg","country":"DE","channel":"sms"}"#),
    );
    assert_eq!(order.status, 201, "{}", order.body);
    let order = order.json();
    let id = order["id"].as_str().unwrap().to_owned();
    let price = order["price"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let code_events = loop {
        let seen = receiver.seen();
        let code_events: Vec<Seen> = seen
            .into_iter()
            .filter(|s| {
                serde_json::from_slice::<Value>(&s.body).unwrap()["type"] == "order.code_received"
            })
            .collect();
        if code_events.len() >= 2 {
            break code_events;
        }
        assert!(
            Instant::now() < deadline,
            "no retried code event: {code_events:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for s in &code_events {
        assert!(verify(&secret, &s.signature, &s.body), "{}", s.signature);
        assert!(!verify("whsec_wrong", &s.signature, &s.body));
        assert_eq!(
            s.event_id, code_events[0].event_id,
            "one event, two attempts"
        );
    }
    let body: Value = serde_json::from_slice(&code_events[1].body).unwrap();
    assert_eq!(body["order_id"], id.as_str());
    assert_eq!(body["id"], code_events[0].event_id.as_str());
    assert!(body["revision"].as_u64().unwrap() >= 3, "{body}");
    assert_eq!(body["order"]["status"], "code_received");
    assert_eq!(body["order"]["phone"], order["phone"]);
    let code = body["order"]["code"]["code"].as_str().unwrap();
    assert!(code.len() >= 4, "{body}");
    assert!(body["order"]["code"]["text"]
        .as_str()
        .unwrap()
        .contains(code));

    // Delivered by the webhook: captured without any read over the API.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let entries = call(&server, "GET", "/v1/wallet/entries", &alice, None).json();
        let reasons: Vec<&str> = entries["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["reason"].as_str())
            .collect();
        if reasons.contains(&"capture") {
            assert_eq!(
                reasons.iter().filter(|r| **r == "capture").count(),
                1,
                "{reasons:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no capture: {reasons:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let wallet = call(&server, "GET", "/v1/wallet", &alice, None).json();
    assert_eq!(wallet["held"], "0.000000");
    let read = call(&server, "GET", &format!("/v1/orders/{id}"), &alice, None).json();
    assert_eq!(read["status"], "code_delivered", "{read}");
    // The order price was captured (2% cashback on top), once.
    let micros = |text: &str| -> i64 {
        let (whole, fraction) = text.split_once('.').unwrap();
        whole.parse::<i64>().unwrap() * 1_000_000
            + format!("{fraction:0<6}").parse::<i64>().unwrap()
    };
    let price = micros(&price);
    assert_eq!(
        micros(wallet["available"].as_str().unwrap()),
        10_000_000 - price + price * 2 / 100
    );

    // Completing sends a later revision; removing stops the endpoint.
    let done = call(
        &server,
        "POST",
        &format!("/v1/orders/{id}/complete"),
        &alice,
        None,
    );
    assert_eq!(done.status, 200, "{}", done.body);
    let deadline = Instant::now() + Duration::from_secs(15);
    let completed = loop {
        let found = receiver.seen().into_iter().find_map(|s| {
            let body: Value = serde_json::from_slice(&s.body).unwrap();
            (body["type"] == "order.completed").then_some((s, body))
        });
        if let Some(found) = found {
            break found;
        }
        assert!(Instant::now() < deadline, "no completed event");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(verify(&secret, &completed.0.signature, &completed.0.body));
    assert!(completed.1["revision"].as_u64() > body["revision"].as_u64());
    assert_eq!(completed.1["order"]["status"], "completed");
    assert_eq!(
        with_session(&server, "DELETE", "/v1/me/webhook", &alice_session, None).status,
        204
    );
    assert_eq!(
        call(&server, "GET", "/v1/me/webhook", &alice, None).status,
        404
    );
}

#[test]
fn without_the_development_flag_only_public_https_endpoints_are_accepted() {
    let server = start(false);
    let session = signed_in_customer(&server, "bob@example.com").session;
    for url in [
        "http://127.0.0.1:9/hook",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://169.254.169.254/latest",
        "http://hooks.example.com/nexus",
    ] {
        let r = with_session(
            &server,
            "PUT",
            "/v1/me/webhook",
            &session,
            Some(&format!(r#"{{"url":"{url}"}}"#)),
        );
        assert_eq!(r.status, 400, "{url}: {}", r.body);
        assert_eq!(r.json()["code"], "invalid_webhook_url");
    }
    let first = with_session(
        &server,
        "PUT",
        "/v1/me/webhook",
        &session,
        Some(r#"{"url":"https://Hooks.Example.com/nexus"}"#),
    );
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.json()["url"], "https://hooks.example.com/nexus");
    // PUT again rotates the secret.
    let second = with_session(
        &server,
        "PUT",
        "/v1/me/webhook",
        &session,
        Some(r#"{"url":"https://hooks.example.com/nexus"}"#),
    );
    assert_eq!(second.status, 200, "{}", second.body);
    assert_ne!(first.json()["secret"], second.json()["secret"]);
}
