//! The SMSCode adapter against a fake SMSCode over real loopback HTTP, and the
//! webhook signature checks.

use std::collections::HashMap;
use std::time::Duration;

use crate::fake_smscode::FakeSmsCode;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{Channel, CountryCode, ServiceCode};
use nexus_providers::smscode::{
    verify_webhook, verify_webhook_at, SmsCode, SmsCodeApi, SmsCodeConfig, WebhookError,
    WebhookEventKind, WebhookHint, DEFAULT_WEBHOOK_TOLERANCE,
};
use nexus_providers::upstream::{
    BuyRequest, CancelOutcome, Handle, Upstream, UpstreamError, UpstreamState,
};
use serde_json::json;
use sha2::Sha256;

fn indonesia() -> CountryCode {
    CountryCode::new("ID").unwrap()
}

fn wa() -> ServiceCode {
    ServiceCode::new("wa").unwrap()
}

fn tg() -> ServiceCode {
    ServiceCode::new("tg").unwrap()
}

fn config(fake: &FakeSmsCode, api: SmsCodeApi) -> SmsCodeConfig {
    let mut config = SmsCodeConfig::new(
        "smscode",
        fake.base.parse().unwrap(),
        "S",
        16_000,
        HashMap::from([(indonesia(), 6)]),
        HashMap::from([(wa(), 3), (tg(), 4)]),
    );
    config.api = api;
    config.timeout = Duration::from_millis(500);
    config.connect_timeout = Duration::from_millis(500);
    config
}

fn adapter(fake: &FakeSmsCode, api: SmsCodeApi) -> SmsCode {
    SmsCode::new(config(fake, api)).unwrap()
}

fn request(key: &str) -> BuyRequest {
    BuyRequest {
        service: wa(),
        country: indonesia(),
        channel: Channel::Sms,
        max_cost: None,
        idempotency_key: key.into(),
    }
}

/// A predicate over the error an answer must give.
type Check = fn(&UpstreamError) -> bool;

#[tokio::test]
async fn offers_take_the_cheapest_price_in_stock_and_sum_the_stock() {
    let fake = FakeSmsCode::start();
    for api in [SmsCodeApi::V1, SmsCodeApi::V2] {
        let code = adapter(&fake, api);
        let offers = code.offers(None, None).await.unwrap();
        let summary: Vec<(&str, &str, i64, u64)> = offers
            .iter()
            .map(|o| (o.service.as_str(), o.country.as_str(), o.cost.0, o.stock))
            .collect();
        // v1: 750 IDR at 16000/USD = 46875 µ$; v2: SMSCode's own "0.0469".
        let wa_cost = if api == SmsCodeApi::V1 {
            46_875
        } else {
            46_900
        };
        let tg_cost = if api == SmsCodeApi::V1 {
            93_750
        } else {
            93_800
        };
        assert_eq!(
            summary,
            vec![("tg", "ID", tg_cost, 3), ("wa", "ID", wa_cost, 15)],
            "{api:?}"
        );
        let one = code.offers(Some(&wa()), Some(indonesia())).await.unwrap();
        assert_eq!(one.len(), 1);
        let last = fake
            .state()
            .last(
                "GET",
                &format!(
                    "/{}/catalog/products",
                    if api == SmsCodeApi::V1 { "v1" } else { "v2" }
                ),
            )
            .unwrap();
        assert!(
            last.query.contains("platform_id=3") && last.query.contains("country_id=6"),
            "{}",
            last.query
        );
        assert_eq!(
            code.offers(Some(&ServiceCode::new("ig").unwrap()), None)
                .await,
            Err(UpstreamError::BadService)
        );
    }
}

#[tokio::test]
async fn balance_in_rupiah_and_in_money_objects() {
    let fake = FakeSmsCode::start();
    // 460480 IDR / 16000 = 28.78 USD.
    assert_eq!(
        adapter(&fake, SmsCodeApi::V1).balance().await,
        Ok(Micros(28_780_000))
    );
    assert_eq!(
        adapter(&fake, SmsCodeApi::V2).balance().await,
        Ok(Micros(28_780_000))
    );
    let mut wrong = config(&fake, SmsCodeApi::V2);
    wrong.token = "nope".into();
    assert_eq!(
        SmsCode::new(wrong).unwrap().balance().await,
        Err(UpstreamError::BadKey)
    );
    let last = fake.state().last("GET", "/v2/balance").unwrap();
    assert_eq!(last.authorization.as_deref(), Some("Bearer nope"));
}

#[tokio::test]
async fn buy_sends_the_idempotency_key_and_the_cap_in_the_versions_unit() {
    let fake = FakeSmsCode::start();
    let v2 = adapter(&fake, SmsCodeApi::V2);
    let mut capped = request("7c9e6679-7425-40de-944b-e07fc1f90ae7");
    capped.max_cost = Some(Micros(500_000));
    let purchase = v2.buy(&capped).await.unwrap();
    assert_eq!(purchase.handle, Handle("90210".into()));
    assert_eq!(purchase.phone, "6281234560210");
    assert_eq!(purchase.cost, Micros(46_900));
    let expires = purchase.expires_at.unwrap();
    assert!(expires > Utc::now() + chrono::Duration::minutes(19));
    let sent = fake.state().last("POST", "/v2/orders/create").unwrap();
    assert_eq!(
        sent.idempotency_key.as_deref(),
        Some("7c9e6679-7425-40de-944b-e07fc1f90ae7")
    );
    assert_eq!(sent.authorization.as_deref(), Some("Bearer S"));
    assert_eq!(
        sent.body,
        json!({ "catalog_product_id": 88, "quantity": 1, "max_price": "0.5000" })
    );

    let v1 = adapter(&fake, SmsCodeApi::V1);
    let mut capped = request("order-2");
    capped.max_cost = Some(Micros(500_000));
    let purchase = v1.buy(&capped).await.unwrap();
    assert_eq!(purchase.cost, Micros(46_875));
    let sent = fake.state().last("POST", "/v1/orders/create").unwrap();
    assert_eq!(
        sent.body,
        json!({ "catalog_product_id": 88, "quantity": 1, "max_price": 8000 })
    );
    // A key outside the pattern goes out as a stable digest.
    v1.buy(&request("order:3/é")).await.unwrap();
    let key = fake
        .state()
        .last("POST", "/v1/orders/create")
        .unwrap()
        .idempotency_key
        .unwrap();
    assert!(key.starts_with("nx-") && key.len() == 67, "{key}");
    // A cap below every price: no offer.
    let mut low = request("order-4");
    low.max_cost = Some(Micros(10_000));
    assert_eq!(v1.buy(&low).await.unwrap_err(), UpstreamError::NoNumbers);
}

#[tokio::test]
async fn a_replayed_buy_returns_the_same_order_and_charges_once() {
    let fake = FakeSmsCode::start();
    let code = adapter(&fake, SmsCodeApi::V2);
    let first = code.buy(&request("order-1")).await.unwrap();
    let again = code.buy(&request("order-1")).await.unwrap();
    assert_eq!(first.handle, again.handle);
    assert_eq!(first.cost, again.cost);
    assert_eq!(fake.state().charges, 1);
    assert_eq!(fake.state().orders.len(), 1);

    // A buy whose answer times out went through upstream; find_purchase finds it
    // by replaying the key, without a second charge.
    fake.state().delay = Some(Duration::from_secs(1));
    let error = code.buy(&request("order-2")).await.unwrap_err();
    assert!(matches!(error, UpstreamError::Unavailable(_)), "{error:?}");
    assert!(!error.is_definite());
    fake.state().delay = None;
    assert_eq!(fake.state().charges, 2);
    let found = code
        .find_purchase(&request("order-2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.handle, Handle("90211".into()));
    assert_eq!(fake.state().charges, 2);

    // The same key with another body: refused, not definite (the first one ran).
    let mut changed = request("order-1");
    changed.max_cost = Some(Micros(900_000));
    let error = code.buy(&changed).await.unwrap_err();
    assert!(matches!(error, UpstreamError::Malformed(_)), "{error:?}");
    // The original still running: unknown outcome.
    fake.state().in_progress.push("order-9".into());
    assert!(matches!(
        code.buy(&request("order-9")).await.unwrap_err(),
        UpstreamError::Unavailable(_)
    ));
    assert!(matches!(
        code.find_purchase(&request("order-9")).await,
        Err(UpstreamError::Unavailable(_))
    ));
    // A key that never bought anything: a definite refusal means none.
    fake.state().create_error = Some((422, "NO_OFFER_AVAILABLE"));
    assert_eq!(code.find_purchase(&request("order-10")).await, Ok(None));
}

#[tokio::test]
async fn every_error_code_is_typed() {
    let fake = FakeSmsCode::start();
    let code = adapter(&fake, SmsCodeApi::V2);
    code.offers(None, None).await.unwrap(); // learn the catalog product first
    let cases: Vec<(u16, &'static str, Check)> = vec![
        (422, "NO_OFFER_AVAILABLE", |e| {
            *e == UpstreamError::NoNumbers
        }),
        (409, "INSUFFICIENT_BALANCE", |e| {
            *e == UpstreamError::NoBalance
        }),
        (401, "UNAUTHORIZED", |e| *e == UpstreamError::BadKey),
        (403, "FORBIDDEN", |e| *e == UpstreamError::BadKey),
        (404, "NOT_FOUND", |e| *e == UpstreamError::NotFound),
        (422, "PROVIDER_ERROR", |e| {
            matches!(e, UpstreamError::Unavailable(_))
        }),
        (503, "SERVICE_UNAVAILABLE", |e| {
            matches!(e, UpstreamError::Unavailable(_))
        }),
        (503, "FX_RATE_UNAVAILABLE", |e| {
            matches!(e, UpstreamError::Unavailable(_))
        }),
        (500, "INTERNAL_ERROR", |e| {
            matches!(e, UpstreamError::Unavailable(_))
        }),
        (409, "REQUEST_IN_PROGRESS", |e| {
            matches!(e, UpstreamError::Unavailable(_))
        }),
        (422, "VALIDATION_ERROR", |e| {
            matches!(e, UpstreamError::Malformed(_))
        }),
        (422, "IDEMPOTENCY_KEY_REUSED", |e| {
            matches!(e, UpstreamError::Malformed(_))
        }),
        (418, "SOMETHING_NEW", |e| {
            matches!(e, UpstreamError::Malformed(_))
        }),
        (502, "SOMETHING_NEW", |e| {
            matches!(e, UpstreamError::Unavailable(_))
        }),
    ];
    for (i, (status, error_code, check)) in cases.into_iter().enumerate() {
        fake.state().create_error = Some((status, error_code));
        let error = code.buy(&request(&format!("order-{i}"))).await.unwrap_err();
        assert!(check(&error), "{status} {error_code}: {error:?}");
    }
    fake.state().create_error = None;

    // 429 with Retry-After (seconds, and an HTTP date), and the abuse guard.
    fake.state().fail_all = Some((
        429,
        "RATE_LIMIT_EXCEEDED",
        Some(("Retry-After", "7".into())),
        serde_json::Value::Null,
    ));
    assert_eq!(
        code.balance().await,
        Err(UpstreamError::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        })
    );
    let later = (Utc::now() + chrono::Duration::seconds(90))
        .to_rfc2822()
        .replace("+0000", "GMT");
    fake.state().fail_all = Some((
        429,
        "RATE_LIMIT_EXCEEDED",
        Some(("Retry-After", later)),
        serde_json::Value::Null,
    ));
    match code.balance().await {
        Err(UpstreamError::RateLimited {
            retry_after: Some(d),
        }) => assert!(
            d > Duration::from_secs(80) && d <= Duration::from_secs(90),
            "{d:?}"
        ),
        other => panic!("expected RateLimited with a date hint, got {other:?}"),
    }
    fake.state().fail_all = Some((
        429,
        "TEMP_BANNED_ABUSE_GUARD",
        None,
        json!({ "until": "2030-01-01T00:00:00+00:00", "tier": 1, "retry_after_seconds": 600 }),
    ));
    assert_eq!(
        code.balance().await,
        Err(UpstreamError::Banned {
            retry_after: Some(Duration::from_secs(600))
        })
    );
    fake.state().fail_all = None;

    // No envelope at all: 413, proxies, garbage.
    for (status, raw, expect_unavailable) in [
        (413, "Payload Too Large", false),
        (502, "<html>Bad Gateway</html>", true),
        (200, "not json", false),
        (
            200,
            r#"{"success":true,"data":{"orders":[{"id":"x"}]}}"#,
            false,
        ),
        (200, r#"{"success":false}"#, false),
    ] {
        fake.state()
            .answers
            .insert("POST /v2/orders/create".into(), (status, raw.into()));
        let error = code.buy(&request("order-x")).await.unwrap_err();
        if expect_unavailable {
            assert!(
                matches!(error, UpstreamError::Unavailable(_)),
                "{status} {raw}: {error:?}"
            );
        } else {
            assert!(
                matches!(error, UpstreamError::Malformed(_)),
                "{status} {raw}: {error:?}"
            );
        }
    }
    fake.state().answers.clear();

    // An order list that failed softly: no numbers.
    fake.state().create_fails_softly = true;
    fake.state()
        .products
        .iter_mut()
        .for_each(|p| p.available = 0);
    assert_eq!(
        code.buy(&request("order-y")).await.unwrap_err(),
        UpstreamError::NoNumbers
    );

    // Slowness: a timeout, never definite.
    fake.state().delay = Some(Duration::from_secs(1));
    assert_eq!(
        code.balance().await,
        Err(UpstreamError::Unavailable("SMSCode timed out".into()))
    );
}

#[tokio::test]
async fn polls_read_v1_orders_and_revisions() {
    let fake = FakeSmsCode::start();
    fake.state().code_after_polls = 3;
    let code = adapter(&fake, SmsCodeApi::V2);
    let purchase = code.buy(&request("order-1")).await.unwrap();
    for _ in 0..2 {
        let waiting = code.poll(&purchase.handle).await.unwrap();
        assert_eq!(
            (waiting.state, waiting.revision, waiting.code.clone()),
            (UpstreamState::Waiting, 0, None)
        );
    }
    let first = code.poll(&purchase.handle).await.unwrap();
    assert_eq!(first.state, UpstreamState::CodeReceived);
    assert_eq!(first.code.as_deref(), Some("482913"));
    assert_eq!(first.text.as_deref(), Some("Your code is 482913"));
    assert_eq!(first.revision, 1);
    // Status reads go to /v1 whatever the configured version.
    assert_eq!(fake.state().calls("GET", "/v1/orders/90210"), 3);
    assert_eq!(fake.state().calls("GET", "/v2/orders/90210"), 0);

    // Resend: same handle, the next SMS is revision 2.
    let resent = code.resend(&purchase.handle).await.unwrap();
    assert_eq!(resent, purchase.handle);
    assert_eq!(
        fake.state().last("POST", "/v2/orders/resend").unwrap().body,
        json!({ "id": 90210 })
    );
    let second = code.poll(&resent).await.unwrap();
    assert_eq!(
        (second.code.as_deref(), second.revision),
        (Some("771100"), 2)
    );
    fake.state().resend_cooldown = true;
    assert_eq!(
        code.resend(&purchase.handle).await,
        Err(UpstreamError::RateLimited { retry_after: None })
    );

    // Finish completes; finishing again is fine.
    code.finish(&purchase.handle).await.unwrap();
    assert_eq!(
        fake.state().last("POST", "/v2/orders/finish").unwrap().body,
        json!({ "id": 90210 })
    );
    let done = code.poll(&purchase.handle).await.unwrap();
    assert_eq!((done.state, done.revision), (UpstreamState::Completed, 2));
    code.finish(&purchase.handle).await.unwrap();

    // Unknown orders, bad handles, unknown statuses.
    assert_eq!(
        code.poll(&Handle("1".into())).await,
        Err(UpstreamError::NotFound)
    );
    assert!(matches!(
        code.poll(&Handle("abc".into())).await,
        Err(UpstreamError::Malformed(_))
    ));
    fake.state().orders.get_mut(&90210).unwrap().status = "EXPIRED";
    assert_eq!(
        code.poll(&purchase.handle).await.unwrap().state,
        UpstreamState::Expired
    );
    fake.state().orders.get_mut(&90210).unwrap().status = "REFUNDING";
    assert!(matches!(
        code.poll(&purchase.handle).await,
        Err(UpstreamError::Malformed(_))
    ));
}

#[tokio::test]
async fn an_sms_without_a_classified_code_goes_through_the_extractor() {
    let fake = FakeSmsCode::start();
    {
        let mut s = fake.state();
        s.code_after_polls = 1;
        s.code_unclassified = true;
    }
    let code = adapter(&fake, SmsCodeApi::V1);
    let purchase = code.buy(&request("order-1")).await.unwrap();
    let snapshot = code.poll(&purchase.handle).await.unwrap();
    assert_eq!(snapshot.state, UpstreamState::CodeReceived);
    assert_eq!(snapshot.code.as_deref(), Some("482913"));
    assert_eq!(fake.state().orders[&90210].otp_code, None);
    // Finishing without an SMS is refused.
    fake.state().code_after_polls = 100;
    let other = code.buy(&request("order-2")).await.unwrap();
    assert!(matches!(
        code.finish(&other.handle).await,
        Err(UpstreamError::Malformed(_))
    ));
    // Resending without an SMS too.
    assert!(matches!(
        code.resend(&other.handle).await,
        Err(UpstreamError::Malformed(_))
    ));
}

#[tokio::test]
async fn cancel_outcomes() {
    let fake = FakeSmsCode::start();
    fake.state().code_after_polls = 100;
    let code = adapter(&fake, SmsCodeApi::V2);
    let purchase = code.buy(&request("order-1")).await.unwrap();
    assert_eq!(
        code.cancel(&purchase.handle).await,
        Ok(CancelOutcome::Cancelled)
    );
    assert_eq!(
        fake.state().last("POST", "/v2/orders/cancel").unwrap().body,
        json!({ "id": 90210 })
    );
    assert_eq!(
        code.poll(&purchase.handle).await.unwrap().state,
        UpstreamState::Cancelled
    );
    // Cancelled already: conflict, read as closed.
    assert_eq!(
        code.cancel(&purchase.handle).await,
        Ok(CancelOutcome::AlreadyClosed)
    );

    // Inside the minimum window: too early, with the time left from the order.
    fake.state().cancel_window = chrono::Duration::seconds(120);
    let early = code.buy(&request("order-2")).await.unwrap();
    match code.cancel(&early.handle).await.unwrap() {
        CancelOutcome::TooEarly {
            retry_after: Some(left),
        } => {
            assert!(
                left > Duration::from_secs(110) && left <= Duration::from_secs(120),
                "{left:?}"
            )
        }
        other => panic!("expected TooEarly, got {other:?}"),
    }
    fake.state().cancel_window = chrono::Duration::zero();

    // After an SMS: conflict, read as "has a code".
    fake.state().code_after_polls = 1;
    let coded = code.buy(&request("order-3")).await.unwrap();
    code.poll(&coded.handle).await.unwrap();
    assert_eq!(
        code.cancel(&coded.handle).await,
        Ok(CancelOutcome::AlreadyHasCode)
    );

    // The upstream failed the cancel: the order stays active, try again.
    fake.state().code_after_polls = 100;
    let stuck = code.buy(&request("order-4")).await.unwrap();
    fake.state().cancel_provider_error = true;
    assert_eq!(
        code.cancel(&stuck.handle).await,
        Ok(CancelOutcome::TooEarly { retry_after: None })
    );
    fake.state().cancel_provider_error = false;
    // The daily cancel cap.
    fake.state().fail_all = Some((
        429,
        "RATE_LIMIT_EXCEEDED",
        Some(("Retry-After", "60".into())),
        serde_json::Value::Null,
    ));
    assert_eq!(
        code.cancel(&stuck.handle).await,
        Err(UpstreamError::RateLimited {
            retry_after: Some(Duration::from_secs(60))
        })
    );
    fake.state().fail_all = None;
    assert_eq!(
        code.cancel(&stuck.handle).await,
        Ok(CancelOutcome::Cancelled)
    );
    assert_eq!(
        code.cancel(&Handle("1".into())).await,
        Err(UpstreamError::NotFound)
    );
}

#[tokio::test]
async fn unmapped_and_voice_requests_buy_nothing() {
    let fake = FakeSmsCode::start();
    let code = adapter(&fake, SmsCodeApi::V1);
    let mut voice = request("order-1");
    voice.channel = Channel::Voice;
    assert_eq!(
        code.buy(&voice).await.unwrap_err(),
        UpstreamError::BadService
    );
    let mut unmapped = request("order-2");
    unmapped.country = CountryCode::new("FR").unwrap();
    assert_eq!(
        code.buy(&unmapped).await.unwrap_err(),
        UpstreamError::BadCountry
    );
    assert!(fake.state().requests.is_empty());
}

// ---------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------

const SECRET: &[u8] = b"whsec_test_secret";

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn event_body(event: &str, at: DateTime<Utc>, revision: Option<u64>) -> Vec<u8> {
    json!({
        "event": event,
        "timestamp": at.to_rfc3339(),
        "data": {
            "order_id": 90210, "phone_number": "+6281234567890", "otp_code": "482913",
            "otp_message": "Your code is 482913", "sms_revision": revision, "product_id": 1024,
            "catalog_product_id": 88, "country": "Indonesia", "platform": "WhatsApp",
            "operator_id": null, "operator_name": null,
            "can_finish": true, "can_resend": true, "can_cancel": false, "can_replace": false, "can_reactivate": false,
            "resend_available_at": null, "cancel_available_at": null, "replace_available_at": null
        }
    })
    .to_string()
    .into_bytes()
}

#[test]
fn a_well_signed_fresh_event_yields_its_hint() {
    let now = Utc::now();
    let body = event_body(
        "order.otp_received",
        now - chrono::Duration::seconds(3),
        Some(1),
    );
    let event = verify_webhook(SECRET, Some(&sign(SECRET, &body)), &body).unwrap();
    assert_eq!(event.kind, WebhookEventKind::OtpReceived);
    let hint = event.hint.unwrap();
    assert_eq!(
        hint,
        WebhookHint {
            order_id: 90210,
            revision: Some(1)
        }
    );
    assert_eq!(hint.handle(), Handle("90210".into()));

    for (name, kind) in [
        ("order.completed", WebhookEventKind::Completed),
        ("order.expired", WebhookEventKind::Expired),
        ("order.canceled", WebhookEventKind::Canceled),
    ] {
        let body = event_body(name, now, None);
        let event = verify_webhook_at(
            SECRET,
            Some(&sign(SECRET, &body)),
            &body,
            DEFAULT_WEBHOOK_TOLERANCE,
            now,
        )
        .unwrap();
        assert_eq!(event.kind, kind);
        assert_eq!(
            event.hint,
            Some(WebhookHint {
                order_id: 90210,
                revision: None
            })
        );
    }
    let test = json!({ "event": "webhook.test", "timestamp": now.to_rfc3339(), "data": { "message": "hello" } }).to_string();
    let event = verify_webhook_at(
        SECRET,
        Some(&sign(SECRET, test.as_bytes())),
        test.as_bytes(),
        DEFAULT_WEBHOOK_TOLERANCE,
        now,
    )
    .unwrap();
    assert_eq!((event.kind, event.hint), (WebhookEventKind::Test, None));
    let unknown = event_body("order.replaced", now, Some(2));
    let event = verify_webhook_at(
        SECRET,
        Some(&sign(SECRET, &unknown)),
        &unknown,
        DEFAULT_WEBHOOK_TOLERANCE,
        now,
    )
    .unwrap();
    assert_eq!(event.kind, WebhookEventKind::Other("order.replaced".into()));
}

#[test]
fn bad_missing_and_malformed_signatures_are_refused() {
    let now = Utc::now();
    let body = event_body("order.otp_received", now, Some(1));
    let check = |signature: Option<&str>| {
        verify_webhook_at(SECRET, signature, &body, DEFAULT_WEBHOOK_TOLERANCE, now)
    };
    assert_eq!(check(None), Err(WebhookError::MissingSignature));
    assert_eq!(check(Some("")), Err(WebhookError::MissingSignature));
    // Signed with another secret.
    assert_eq!(
        check(Some(&sign(b"another secret", &body))),
        Err(WebhookError::BadSignature)
    );
    // One hex digit changed.
    let good = sign(SECRET, &body);
    let last = good.chars().last().unwrap();
    let flipped = format!(
        "{}{}",
        &good[..good.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    assert_eq!(check(Some(&flipped)), Err(WebhookError::BadSignature));
    let hex_part = good.trim_start_matches("sha256=");
    for malformed in [
        hex_part.to_owned(),                     // no prefix
        format!("sha1={hex_part}"),              // another prefix
        format!("sha256={}", &hex_part[..62]),   // too short
        format!("sha256={hex_part}00"),          // too long
        format!("sha256={}zz", &hex_part[..62]), // not hex
    ] {
        assert_eq!(
            check(Some(&malformed)),
            Err(WebhookError::MalformedSignature),
            "{malformed}"
        );
    }
    // No secret configured: nothing verifies.
    assert_eq!(
        verify_webhook_at(b"", Some(&good), &body, DEFAULT_WEBHOOK_TOLERANCE, now),
        Err(WebhookError::NoSecret)
    );
    assert!(check(Some(&good)).is_ok());
}

#[test]
fn a_tampered_body_is_refused() {
    let now = Utc::now();
    let body = event_body("order.otp_received", now, Some(1));
    let signature = sign(SECRET, &body);
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replace("90210", "90211")
        .into_bytes();
    assert_eq!(
        verify_webhook_at(
            SECRET,
            Some(&signature),
            &tampered,
            DEFAULT_WEBHOOK_TOLERANCE,
            now
        ),
        Err(WebhookError::BadSignature)
    );
    // Even whitespace counts: the raw bytes are signed.
    let mut spaced = body.clone();
    spaced.push(b' ');
    assert_eq!(
        verify_webhook_at(
            SECRET,
            Some(&signature),
            &spaced,
            DEFAULT_WEBHOOK_TOLERANCE,
            now
        ),
        Err(WebhookError::BadSignature)
    );
}

#[test]
fn stale_and_future_events_are_refused_with_a_configurable_tolerance() {
    let now = Utc::now();
    let old = event_body(
        "order.otp_received",
        now - chrono::Duration::minutes(6),
        Some(1),
    );
    let signed = sign(SECRET, &old);
    assert_eq!(
        verify_webhook_at(SECRET, Some(&signed), &old, DEFAULT_WEBHOOK_TOLERANCE, now),
        Err(WebhookError::Stale)
    );
    assert_eq!(
        verify_webhook(SECRET, Some(&signed), &old),
        Err(WebhookError::Stale)
    );
    assert!(verify_webhook_at(
        SECRET,
        Some(&signed),
        &old,
        Duration::from_secs(10 * 60),
        now
    )
    .is_ok());
    let future = event_body(
        "order.otp_received",
        now + chrono::Duration::minutes(6),
        Some(1),
    );
    assert_eq!(
        verify_webhook_at(
            SECRET,
            Some(&sign(SECRET, &future)),
            &future,
            DEFAULT_WEBHOOK_TOLERANCE,
            now
        ),
        Err(WebhookError::Stale)
    );
}

#[test]
fn well_signed_bodies_that_are_not_events_are_refused() {
    let now = Utc::now();
    for body in [
        "not json".to_owned(),
        json!({ "timestamp": now.to_rfc3339(), "data": {} }).to_string(),
        json!({ "event": "order.otp_received", "data": { "order_id": 1 } }).to_string(),
        json!({ "event": "order.otp_received", "timestamp": "yesterday", "data": { "order_id": 1 } }).to_string(),
        json!({ "event": "order.otp_received", "timestamp": now.to_rfc3339(), "data": {} }).to_string(),
    ] {
        let signature = sign(SECRET, body.as_bytes());
        assert_eq!(
            verify_webhook_at(SECRET, Some(&signature), body.as_bytes(), DEFAULT_WEBHOOK_TOLERANCE, now),
            Err(WebhookError::MalformedBody),
            "{body}"
        );
    }
}
