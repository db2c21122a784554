//! The Proxnum adapter against a fake Proxnum over real loopback HTTP.

use std::sync::Arc;
use std::time::Duration;

use crate::fake_proxnum::{BadToken, FakeProxnum, ListShape};
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{Channel, CountryCode, ServiceCode};
use nexus_providers::proxnum::{Proxnum, ProxnumConfig};
use nexus_providers::router::{Router, RouterConfig, UpstreamHealth};
use nexus_providers::upstream::{
    BuyRequest, CancelOutcome, Handle, Upstream, UpstreamError, UpstreamState,
};
use serde_json::json;

fn indonesia() -> CountryCode {
    CountryCode::new("ID").unwrap()
}

fn tg() -> ServiceCode {
    ServiceCode::new("tg").unwrap()
}

fn config(fake: &FakeProxnum) -> ProxnumConfig {
    let mut config = ProxnumConfig::new("proxnum", fake.base.parse().unwrap(), "T");
    config.timeout = Duration::from_millis(500);
    config.connect_timeout = Duration::from_millis(500);
    config
}

fn adapter(fake: &FakeProxnum) -> Proxnum {
    Proxnum::new(config(fake)).unwrap()
}

fn with_token(fake: &FakeProxnum, token: &str) -> Proxnum {
    let mut config = config(fake);
    config.token = token.into();
    Proxnum::new(config).unwrap()
}

fn request() -> BuyRequest {
    BuyRequest {
        service: tg(),
        country: indonesia(),
        channel: Channel::Sms,
        max_cost: None,
        idempotency_key: "order-1".into(),
    }
}

fn handle_json(handle: &Handle) -> serde_json::Value {
    serde_json::from_str(&handle.0).unwrap()
}

/// A predicate over the error an answer must give.
type Check = fn(&UpstreamError) -> bool;

#[tokio::test]
async fn offers_map_sms_activate_ids_and_read_seven_decimals_exactly() {
    let fake = FakeProxnum::start();
    let prox = adapter(&fake);
    let mut offers = prox.offers(None, None).await.unwrap();
    offers.sort_by_key(|o| (o.country, o.service.clone()));
    let summary: Vec<(&str, &str, i64, u64)> = offers
        .iter()
        .map(|o| (o.country.as_str(), o.service.as_str(), o.cost.0, o.stock))
        .collect();
    // 999 and an unknown service are skipped, not guessed.
    assert_eq!(
        summary,
        vec![
            ("ID", "tg", 111_490, 42),
            ("ID", "wa", 200_000, 0),
            ("US", "tg", 310_000, 7)
        ]
    );
    let one = prox.offers(Some(&tg()), Some(indonesia())).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].cost, Micros(111_490));
    // The documented nesting is country → service; the other way round is read too.
    fake.state().answers.insert(
        "GET /prices".into(),
        (200, r#"{"success":true,"prices":{"tg":{"6":{"base_price":0.0334,"sell_price":0.1114892,"available":"5"}}}}"#.into()),
    );
    let flipped = prox.offers(None, None).await.unwrap();
    assert_eq!(flipped.len(), 1);
    assert_eq!((flipped[0].country, flipped[0].stock), (indonesia(), 5));
}

#[tokio::test]
async fn balance_in_either_shape_and_bad_tokens_in_every_form() {
    let fake = FakeProxnum::start();
    let prox = adapter(&fake);
    assert_eq!(prox.balance().await, Ok(Micros(12_500_000)));
    fake.state().balance_body =
        json!({ "success": true, "data": { "balance": "3.1400", "currency": "USD" } });
    assert_eq!(prox.balance().await, Ok(Micros(3_140_000)));
    for form in [BadToken::Html401, BadToken::Html200, BadToken::Json401] {
        fake.state().bad_token = form;
        assert_eq!(
            with_token(&fake, "nope").balance().await,
            Err(UpstreamError::BadKey),
            "{form:?}"
        );
        assert_eq!(
            with_token(&fake, "nope").buy(&request()).await.unwrap_err(),
            UpstreamError::BadKey,
            "{form:?}"
        );
    }
}

#[tokio::test]
async fn buy_posts_json_with_the_bearer_token() {
    let fake = FakeProxnum::start();
    let prox = adapter(&fake);
    let purchase = prox.buy(&request()).await.unwrap();
    assert_eq!(purchase.phone, "6281299887712");
    assert_eq!(purchase.cost, Micros(97_500));
    assert!(purchase.expires_at.is_some());
    let handle = handle_json(&purchase.handle);
    assert_eq!(handle["activation_id"], "5500112233");
    assert_eq!(handle["id"], 812);
    let (auth, body) = fake.state().last("POST", "/resell/virtual/buy").unwrap();
    assert_eq!(auth.as_deref(), Some("Bearer T"));
    assert_eq!(body, json!({ "service": "tg", "country": 6 }));
    // USA goes out as 187 (not the virtual 12).
    let mut us = request();
    us.country = CountryCode::new("US").unwrap();
    prox.buy(&us).await.unwrap();
    assert_eq!(
        fake.state().last("POST", "/resell/virtual/buy").unwrap().1["country"],
        187
    );
}

#[tokio::test]
async fn every_buy_error_is_typed() {
    let fake = FakeProxnum::start();
    let prox = adapter(&fake);
    for (nested, status) in [(false, 200), (false, 404), (true, 400)] {
        {
            let mut s = fake.state();
            s.nested_errors = nested;
            s.error_status = status;
        }
        for (code, expected) in [
            ("no_numbers", UpstreamError::NoNumbers),
            ("insufficient_balance", UpstreamError::NoBalance),
            ("invalid_service", UpstreamError::BadService),
            ("invalid_country", UpstreamError::BadCountry),
            (
                "too_many_requests",
                UpstreamError::RateLimited { retry_after: None },
            ),
        ] {
            fake.state().buy_error = Some(code);
            assert_eq!(
                prox.buy(&request()).await.unwrap_err(),
                expected,
                "{code} nested={nested} status={status}"
            );
        }
        fake.state().buy_error = Some("service_unavailable");
        let error = prox.buy(&request()).await.unwrap_err();
        assert!(matches!(error, UpstreamError::Unavailable(_)), "{error:?}");
        assert!(!error.is_definite());
        fake.state().buy_error = Some("something_new");
        assert!(matches!(
            prox.buy(&request()).await.unwrap_err(),
            UpstreamError::Malformed(_) | UpstreamError::NotFound
        ));
    }
}

#[tokio::test]
async fn server_errors_garbage_rate_limits_and_slowness() {
    let fake = FakeProxnum::start();
    let prox = adapter(&fake);
    let cases: Vec<(u16, &str, Check)> = vec![
        (500, "<html>Server Error</html>", |e| {
            matches!(e, UpstreamError::Unavailable(_))
        }),
        (502, "", |e| matches!(e, UpstreamError::Unavailable(_))),
        (429, r#"{"message":"Too Many Attempts."}"#, |e| {
            matches!(e, UpstreamError::RateLimited { .. })
        }),
        (200, "this is not json", |e| {
            matches!(e, UpstreamError::Malformed(_))
        }),
        (200, r#"{"success":true}"#, |e| {
            matches!(e, UpstreamError::Malformed(_))
        }),
        (
            200,
            r#"{"success":true,"activation":{"id":1,"phone":"62812","activation_id":"9","amount_paid":"x"}}"#,
            |e| matches!(e, UpstreamError::Malformed(_)),
        ),
    ];
    for (status, body, check) in cases {
        fake.state()
            .answers
            .insert("POST /resell/virtual/buy".into(), (status, body.into()));
        let error = prox.buy(&request()).await.unwrap_err();
        assert!(check(&error), "{status} {body}: {error:?}");
    }
    fake.state().answers.clear();
    fake.state().delay = Some(Duration::from_secs(2));
    let error = prox.buy(&request()).await.unwrap_err();
    assert_eq!(
        error,
        UpstreamError::Unavailable("Proxnum timed out".into())
    );
}

#[tokio::test]
async fn the_price_cap_is_checked_before_buying() {
    let fake = FakeProxnum::start();
    let prox = adapter(&fake);
    let mut capped = request();
    capped.max_cost = Some(Micros(100_000));
    assert_eq!(
        prox.buy(&capped).await.unwrap_err(),
        UpstreamError::PriceTooHigh {
            min: Some(Micros(111_490))
        }
    );
    assert_eq!(fake.state().calls("POST", "/resell/virtual/buy"), 0);
    capped.max_cost = Some(Micros(111_490));
    prox.buy(&capped).await.unwrap();
    let mut voice = request();
    voice.channel = Channel::Voice;
    assert_eq!(
        prox.buy(&voice).await.unwrap_err(),
        UpstreamError::BadService
    );
    let mut unknown = request();
    unknown.service = ServiceCode::new("zz_not_a_service").unwrap();
    assert_eq!(
        prox.buy(&unknown).await.unwrap_err(),
        UpstreamError::BadService
    );
    unknown = request();
    unknown.country = CountryCode::new("AQ").unwrap();
    assert_eq!(
        prox.buy(&unknown).await.unwrap_err(),
        UpstreamError::BadCountry
    );
}

#[tokio::test]
async fn status_strings_map_to_the_lifecycle() {
    let fake = FakeProxnum::start();
    fake.state().code_after_polls = 3;
    let prox = adapter(&fake);
    let purchase = prox.buy(&request()).await.unwrap();
    for _ in 0..2 {
        let waiting = prox.poll(&purchase.handle).await.unwrap();
        assert_eq!(
            (waiting.state, waiting.revision, waiting.code.clone()),
            (UpstreamState::Waiting, 0, None)
        );
    }
    let code = prox.poll(&purchase.handle).await.unwrap();
    assert_eq!(code.state, UpstreamState::CodeReceived);
    assert_eq!(code.code.as_deref(), Some("482913"));
    assert_eq!(code.text.as_deref(), Some("Telegram code 482913"));
    assert_eq!(code.revision, 1);
    assert_eq!(prox.poll(&purchase.handle).await.unwrap().revision, 1);
    finish_is_local(&fake, &prox, &purchase.handle).await;

    // Only a code-bearing msg: the extractor finds it.
    {
        let mut s = fake.state();
        s.code_in_msg_only = true;
        s.code_after_polls = 1;
        s.waiting_status = "waiting";
    }
    let other = prox.buy(&request()).await.unwrap();
    let from_msg = prox.poll(&other.handle).await.unwrap();
    assert_eq!(
        (from_msg.state, from_msg.code.as_deref()),
        (UpstreamState::CodeReceived, Some("482913"))
    );

    for (status, expected) in [
        ("cancelled", UpstreamState::Cancelled),
        ("canceled", UpstreamState::Cancelled),
        ("expired", UpstreamState::Expired),
        ("processing", UpstreamState::Waiting),
    ] {
        let fresh = adapter(&fake);
        fake.state().answers.insert(
            "GET /resell/virtual/5500112233/status".into(),
            (200, json!({ "success": true, "status": status, "activation": { "id": 812, "activation_id": "5500112233", "msg": "Waiting Sms" } }).to_string()),
        );
        let handle = Handle(r#"{"activation_id":"5500112233","id":812,"rev":0}"#.into());
        assert_eq!(
            fresh.poll(&handle).await.unwrap().state,
            expected,
            "{status}"
        );
    }
    fake.state().answers.insert(
        "GET /resell/virtual/5500112233/status".into(),
        (200, r#"{"success":true}"#.into()),
    );
    let handle = Handle(r#"{"activation_id":"5500112233","rev":0}"#.into());
    assert!(matches!(
        prox.poll(&handle).await,
        Err(UpstreamError::Malformed(_))
    ));
    let unknown = Handle(r#"{"activation_id":"1","rev":0}"#.into());
    assert_eq!(
        prox.poll(&unknown).await.unwrap_err(),
        UpstreamError::NotFound
    );
}

async fn finish_is_local(fake: &FakeProxnum, prox: &Proxnum, handle: &Handle) {
    let before = fake.state().requests.len();
    prox.finish(handle).await.unwrap();
    assert_eq!(fake.state().requests.len(), before);
}

#[tokio::test]
async fn resend_on_the_same_activation_counts_a_new_revision() {
    let fake = FakeProxnum::start();
    fake.state().code_after_polls = 1;
    let prox = adapter(&fake);
    let purchase = prox.buy(&request()).await.unwrap();
    assert_eq!(prox.poll(&purchase.handle).await.unwrap().revision, 1);
    fake.state().resend_after_polls = 2;
    let resent = prox.resend(&purchase.handle).await.unwrap();
    assert_eq!(handle_json(&resent)["activation_id"], "5500112233");
    assert_eq!(handle_json(&resent)["rev"], 1);
    assert_eq!(
        fake.state()
            .last("POST", "/resell/virtual/resend")
            .unwrap()
            .1,
        json!({ "activation_id": "5500112233" })
    );
    assert_eq!(prox.poll(&resent).await.unwrap().revision, 1);
    let second = prox.poll(&resent).await.unwrap();
    assert_eq!(
        (second.code.as_deref(), second.revision),
        (Some("551234"), 2)
    );
}

#[tokio::test]
async fn resend_onto_a_new_activation_returns_the_new_handle() {
    let fake = FakeProxnum::start();
    {
        let mut s = fake.state();
        s.code_after_polls = 1;
        s.resend_new_id = true;
        s.resend_after_polls = 2;
    }
    let prox = adapter(&fake);
    let purchase = prox.buy(&request()).await.unwrap();
    let first = prox.poll(&purchase.handle).await.unwrap();
    assert_eq!(first.revision, 1);
    let resent = prox.resend(&purchase.handle).await.unwrap();
    let moved = handle_json(&resent);
    assert_eq!(moved["activation_id"], "5500112234");
    assert_eq!(moved["id"], 812);
    assert_eq!(moved["rev"], 1);
    // The new activation has no SMS yet: the order keeps its first code.
    let pending = prox.poll(&resent).await.unwrap();
    assert_eq!(
        (pending.state, pending.revision, pending.code),
        (UpstreamState::CodeReceived, 1, None)
    );
    let second = prox.poll(&resent).await.unwrap();
    assert_eq!(
        (second.state, second.code.as_deref(), second.revision),
        (UpstreamState::CodeReceived, Some("551234"), 2)
    );
    // A restarted adapter agrees on the new code's revision.
    assert_eq!(adapter(&fake).poll(&resent).await.unwrap().revision, 2);
}

#[tokio::test]
async fn cancel_accepted_rejected_and_unknown() {
    let fake = FakeProxnum::start();
    fake.state().code_after_polls = 100;
    let prox = adapter(&fake);
    let purchase = prox.buy(&request()).await.unwrap();
    assert_eq!(
        prox.cancel(&purchase.handle).await,
        Ok(CancelOutcome::Cancelled)
    );
    assert_eq!(
        fake.state()
            .last("POST", "/resell/virtual/cancel")
            .unwrap()
            .1,
        json!({ "activation_id": "5500112233" })
    );
    assert_eq!(
        prox.poll(&purchase.handle).await.unwrap().state,
        UpstreamState::Cancelled
    );
    assert_eq!(
        prox.resend(&purchase.handle).await.unwrap_err(),
        UpstreamError::NotFound
    );

    // Refused with no code yet: too early.
    fake.state().refuse_cancel = true;
    let early = prox.buy(&request()).await.unwrap();
    assert_eq!(
        prox.cancel(&early.handle).await,
        Ok(CancelOutcome::TooEarly { retry_after: None })
    );

    // Refused after a code: the status read says so.
    fake.state().code_after_polls = 1;
    let coded = prox.buy(&request()).await.unwrap();
    prox.poll(&coded.handle).await.unwrap();
    for status in [200, 409] {
        fake.state().error_status = status;
        assert_eq!(
            prox.cancel(&coded.handle).await,
            Ok(CancelOutcome::AlreadyHasCode)
        );
    }
    let unknown = Handle(r#"{"activation_id":"1"}"#.into());
    assert_eq!(prox.cancel(&unknown).await, Err(UpstreamError::NotFound));
}

#[tokio::test]
async fn malformed_handles_make_no_request() {
    let fake = FakeProxnum::start();
    let prox = adapter(&fake);
    for bad in ["5500112233", "{}", r#"{"activation_id":"a/b"}"#] {
        let bad = Handle(bad.into());
        assert!(matches!(
            prox.poll(&bad).await,
            Err(UpstreamError::Malformed(_))
        ));
        assert!(matches!(
            prox.cancel(&bad).await,
            Err(UpstreamError::Malformed(_))
        ));
        assert!(matches!(
            prox.resend(&bad).await,
            Err(UpstreamError::Malformed(_))
        ));
        assert!(matches!(
            prox.finish(&bad).await,
            Err(UpstreamError::Malformed(_))
        ));
    }
    assert!(fake.state().requests.is_empty());
}

/// Proxnum's zone in the reconciliation tests (UTC+7, written without it).
const ZONE_MINUTES: i64 = 7 * 60;

/// A Proxnum adapter whose calls time out after 1 s.
fn reconciling_adapter(fake: &FakeProxnum) -> Proxnum {
    let mut config = config(fake);
    config.timeout = Duration::from_secs(1);
    Proxnum::new(config).unwrap()
}

/// A router over one Proxnum that gives up on a buy after 600 ms.
fn reconciling_router(prox: Arc<Proxnum>) -> Router {
    Router::new(
        vec![prox],
        RouterConfig {
            deadline: Duration::from_secs(2),
            attempt_timeout: Duration::from_millis(600),
            reconcile_attempts: 40,
            reconcile_interval: Duration::from_millis(50),
            late_answer_wait: Duration::from_secs(3),
            reconcile_clock_skew: CLOCK_SKEW,
            absent_after: Duration::from_millis(800),
            ..RouterConfig::default()
        },
    )
}

/// The clock skew the reconciling router allows.
const CLOCK_SKEW: Duration = Duration::from_secs(1);

/// Waits until purchases may be claimed: nothing bought within one clock skew
/// of the router's start is (an order from before a restart may hold it), and
/// Proxnum writes whole seconds.
async fn past_startup() {
    tokio::time::sleep(CLOCK_SKEW * 2 + Duration::from_millis(500)).await;
}

/// Waits (up to 10 s) until the only upstream's health satisfies `done`.
async fn health_when(router: &Router, done: impl Fn(&UpstreamHealth) -> bool) -> UpstreamHealth {
    for _ in 0..200 {
        let health = router.health().remove(0);
        if done(&health) {
            return health;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("reconciliation did not finish: {:?}", router.health());
}

fn status_of(fake: &FakeProxnum, activation_id: &str) -> String {
    fake.state().activations[activation_id].status.clone()
}

#[tokio::test]
async fn a_timed_out_buy_is_found_in_the_activation_list_and_cancelled() {
    let worlds: Vec<_> = [
        ListShape::Nested,
        ListShape::Flat,
        ListShape::Resource,
        ListShape::PlainList,
    ]
    .into_iter()
    .map(|shape| {
        let fake = FakeProxnum::start();
        {
            let mut s = fake.state();
            s.zone_offset_minutes = ZONE_MINUTES;
            s.list_shape = shape;
        }
        let router = reconciling_router(Arc::new(reconciling_adapter(&fake)));
        (shape, fake, router)
    })
    .collect();
    past_startup().await;
    for (shape, fake, router) in worlds {
        // An order's number, bought normally (it teaches Proxnum's zone).
        let held = router.buy(&request()).await.unwrap();
        let held_id = handle_json(&held.purchase.handle)["activation_id"]
            .as_str()
            .unwrap()
            .to_owned();
        // Older numbers (before this buy), another service, and enough of
        // them that the list runs to a second page.
        let (old, other) = {
            let mut s = fake.state();
            for _ in 0..120 {
                s.seed("tg", 6, 3_600);
            }
            (s.seed("tg", 6, 600), s.seed("wa", 6, 0))
        };
        fake.state().hang_buys = Some(Duration::from_millis(2_500));
        router.buy(&request()).await.unwrap_err();
        let lost = (fake.state().next_activation - 1).to_string();
        let health = health_when(&router, |h| h.reconciled_cancelled > 0).await;
        assert_eq!(
            (health.reconciled_cancelled, health.unreconciled),
            (1, 0),
            "{shape:?}"
        );
        assert_eq!(status_of(&fake, &lost), "cancelled", "{shape:?}");
        for untouched in [&held_id, &old, &other] {
            assert_eq!(status_of(&fake, untouched), "pending", "{shape:?}");
        }
        assert_eq!(
            fake.state()
                .last("POST", "/resell/virtual/cancel")
                .unwrap()
                .1,
            json!({ "activation_id": lost })
        );
        if shape != ListShape::PlainList {
            assert!(
                fake.state().calls("GET", "/resell/activations") >= 2,
                "{shape:?}: pages"
            );
        }
    }
}

#[tokio::test]
async fn a_failed_buy_finds_nothing_and_no_known_activation_is_claimed() {
    let fake = FakeProxnum::start();
    fake.state().zone_offset_minutes = ZONE_MINUTES;
    fake.state().resend_new_id = true;
    let prox = Arc::new(reconciling_adapter(&fake));
    let router = reconciling_router(prox.clone());
    past_startup().await;
    let held = router.buy(&request()).await.unwrap();
    // The order's number moves to a new activation on a resend: the router
    // never sees the new id, the adapter does.
    let moved = prox.resend(&held.purchase.handle).await.unwrap();
    let moved_id = handle_json(&moved)["activation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(status_of(&fake, &moved_id), "pending");
    // The lost buy was refused upstream: nothing to find.
    {
        let mut s = fake.state();
        s.buy_error = Some("no_numbers");
        s.hang_buys = Some(Duration::from_millis(2_500));
    }
    router.buy(&request()).await.unwrap_err();
    let health = health_when(&router, |h| h.reconciled_absent > 0).await;
    assert_eq!(
        (
            health.reconciled_absent,
            health.reconciled_cancelled,
            health.unreconciled
        ),
        (1, 0, 0)
    );
    assert_eq!(status_of(&fake, &moved_id), "pending");
    assert_eq!(fake.state().calls("POST", "/resell/virtual/cancel"), 0);
    assert!(fake.state().calls("GET", "/resell/activations") >= 1);
}

#[tokio::test]
async fn listed_activations_are_filtered_and_odd_lists_tolerated() {
    let fake = FakeProxnum::start();
    fake.state().zone_offset_minutes = ZONE_MINUTES;
    let prox = adapter(&fake);
    // Before any buy, Proxnum's zone is unknown: listed without a time.
    let seeded = fake.state().seed("tg", 6, 0);
    let listed = prox.open_purchases_like(&request()).await.unwrap().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].bought_at, None);
    let bought = prox.buy(&request()).await.unwrap();
    fake.state().seed("tg", 187, 0);
    let cancelled = fake.state().seed("tg", 6, 0);
    fake.state().activations.get_mut(&cancelled).unwrap().status = "cancelled".into();
    let listed = prox.open_purchases_like(&request()).await.unwrap().unwrap();
    let ids: Vec<String> = listed
        .iter()
        .map(|l| {
            handle_json(&l.purchase.handle)["activation_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let bought_id = handle_json(&bought.handle)["activation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(ids, vec![bought_id, seeded]);
    let now = chrono::Utc::now();
    for l in &listed {
        let at = l.bought_at.expect("placed in UTC");
        assert!((now - at).num_seconds().abs() < 30, "{at} vs {now}");
        assert_eq!(l.purchase.cost, Micros(97_500));
    }
    // Items without a service may be anyone's: listed, never with a time.
    fake.state().answers.insert(
        "GET /resell/activations".into(),
        (200, r#"{"success":true,"activations":[{"activation_id":"77","phone":"6281200000001","status":1,"date_created":"2026-05-11T09:00:00+00:00"},{"activation_id":"78","phone":"6281200000002","service":"tg","country":"6","status":"expired"},{"activation_id":"79"}]}"#.into()),
    );
    let listed = prox.open_purchases_like(&request()).await.unwrap().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].bought_at, None);
    fake.state().answers.insert(
        "GET /resell/activations".into(),
        (200, r#"{"success":true,"activations":"none"}"#.into()),
    );
    assert!(matches!(
        prox.open_purchases_like(&request()).await,
        Err(UpstreamError::Malformed(_))
    ));
}
