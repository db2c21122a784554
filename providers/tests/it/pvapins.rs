//! The PVAPins adapter against a fake PVAPins over real loopback HTTP.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::fake_pvapins::{FakePvaPins, Format};
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{Channel, CountryCode, ServiceCode};
use nexus_providers::pvapins::{PvaPins, PvaPinsConfig, UNKNOWN_STOCK};
use nexus_providers::router::{Router, RouterConfig, UpstreamHealth};
use nexus_providers::upstream::{
    BuyRequest, CancelOutcome, Handle, Upstream, UpstreamError, UpstreamState,
};

fn us() -> CountryCode {
    CountryCode::new("US").unwrap()
}

fn wa() -> ServiceCode {
    ServiceCode::new("wa").unwrap()
}

fn config(fake: &FakePvaPins) -> PvaPinsConfig {
    let mut config = PvaPinsConfig::new(
        "pvapins",
        fake.base.parse().unwrap(),
        "K",
        HashMap::from([
            (us(), "USA".to_owned()),
            (CountryCode::new("GB").unwrap(), "UK".to_owned()),
        ]),
        HashMap::from([
            (wa(), "Whatsapp24".to_owned()),
            (ServiceCode::new("go").unwrap(), "Gmail40".to_owned()),
        ]),
    );
    config.timeout = Duration::from_millis(500);
    config.connect_timeout = Duration::from_millis(500);
    // Rejects are allowed at once unless a test says otherwise.
    config.min_reject_after = Duration::ZERO;
    config
}

fn adapter(fake: &FakePvaPins) -> PvaPins {
    PvaPins::new(config(fake)).unwrap()
}

fn request() -> BuyRequest {
    BuyRequest {
        service: wa(),
        country: us(),
        channel: Channel::Sms,
        max_cost: None,
        idempotency_key: "order-1".into(),
    }
}

fn handle_json(handle: &Handle) -> serde_json::Value {
    serde_json::from_str(&handle.0).unwrap()
}

#[tokio::test]
async fn offers_come_from_the_public_catalog_in_both_formats() {
    for format in [Format::Plain, Format::Json] {
        let fake = FakePvaPins::start();
        fake.state().format = format;
        let pva = adapter(&fake);
        let offers = pva.offers(Some(&wa()), Some(us())).await.unwrap();
        assert_eq!(offers.len(), 1, "{format:?}");
        assert_eq!(offers[0].cost, Micros(840_000));
        assert_eq!(offers[0].stock, UNKNOWN_STOCK);
        // Catalog scripts carry no key.
        assert!(!fake
            .state()
            .last_query("load_apps.php")
            .contains_key("customer"));

        let mut all = pva.offers(None, None).await.unwrap();
        all.sort_by_key(|o| (o.country, o.service.clone()));
        let summary: Vec<(String, String, i64)> = all
            .iter()
            .map(|o| {
                (
                    o.country.as_str().to_owned(),
                    o.service.as_str().to_owned(),
                    o.cost.0,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("GB".into(), "wa".into(), 1_050_000),
                ("US".into(), "go".into(), 660_000),
                ("US".into(), "wa".into(), 840_000)
            ]
        );
    }
}

#[tokio::test]
async fn balance_and_a_bad_key() {
    let fake = FakePvaPins::start();
    assert_eq!(adapter(&fake).balance().await, Ok(Micros(12_340_000)));
    let mut wrong = config(&fake);
    wrong.api_key = "wrong".into();
    assert_eq!(
        PvaPins::new(wrong).unwrap().balance().await,
        Err(UpstreamError::BadKey)
    );
    fake.state().format = Format::Json;
    let mut wrong = config(&fake);
    wrong.api_key = "wrong".into();
    assert_eq!(
        PvaPins::new(wrong)
            .unwrap()
            .buy(&request())
            .await
            .unwrap_err(),
        UpstreamError::BadKey
    );
}

#[tokio::test]
async fn buy_in_both_formats_stores_the_whole_tuple() {
    for format in [Format::Plain, Format::Json] {
        let fake = FakePvaPins::start();
        fake.state().format = format;
        let pva = adapter(&fake);
        let before = chrono::Utc::now();
        let purchase = pva.buy(&request()).await.unwrap();
        assert_eq!(purchase.phone, "13865902416", "{format:?}");
        assert_eq!(purchase.cost, Micros(840_000));
        let expires = purchase.expires_at.unwrap();
        assert!(expires >= before + chrono::Duration::minutes(20) - chrono::Duration::seconds(1));
        assert!(expires <= chrono::Utc::now() + chrono::Duration::minutes(20));
        let handle = handle_json(&purchase.handle);
        assert_eq!(handle["number"], "13865902416");
        assert_eq!(handle["country"], "USA");
        assert_eq!(handle["app"], "Whatsapp24");
        assert!(handle["bought_at"].as_i64().unwrap() >= before.timestamp());
        assert!(purchase.handle.0.len() <= 512);
        let query = fake.state().last_query("get_number.php");
        assert_eq!(query.get("customer").map(String::as_str), Some("K"));
        assert_eq!(query.get("app").map(String::as_str), Some("Whatsapp24"));
        assert_eq!(query.get("country").map(String::as_str), Some("USA"));
        assert!(!query.contains_key("number"));
    }
}

#[tokio::test]
async fn every_buy_error_sentence_is_typed() {
    let cases: &[(&str, UpstreamError)] = &[
        (
            "No free channels available check after sometime.",
            UpstreamError::NoNumbers,
        ),
        ("No Number Found", UpstreamError::NoNumbers),
        (
            "New numbers registration in progress",
            UpstreamError::NoNumbers,
        ),
        ("Error 102, check back later.", UpstreamError::NoNumbers),
        ("Your balance is expired.", UpstreamError::NoBalance),
        (
            "Insufficient balance, please recharge",
            UpstreamError::NoBalance,
        ),
        ("customer not found", UpstreamError::BadKey),
        ("App Not Found.", UpstreamError::BadService),
        ("App or Country Not Found.", UpstreamError::BadService),
        ("Country Not Found.", UpstreamError::BadCountry),
        (
            r#"{"code":101,"data":"No free channels available check after sometime."}"#,
            UpstreamError::NoNumbers,
        ),
        (
            r#"{"code":102,"data":"Your balance is expired."}"#,
            UpstreamError::NoBalance,
        ),
        (
            "Too many requests, slow down",
            UpstreamError::RateLimited { retry_after: None },
        ),
    ];
    let fake = FakePvaPins::start();
    let pva = adapter(&fake);
    for (body, expected) in cases {
        fake.state()
            .answers
            .insert("get_number.php".into(), (*body).into());
        assert_eq!(pva.buy(&request()).await.unwrap_err(), *expected, "{body}");
        assert!(expected.is_definite());
    }
}

#[tokio::test]
async fn garbage_server_errors_and_slowness_are_not_definite() {
    let fake = FakePvaPins::start();
    let pva = adapter(&fake);
    for garbage in [
        "<html><body>502 Bad Gateway</body></html>",
        "",
        "OK done",
        r#"{"code":555,"data":"???"}"#,
        "{not json",
    ] {
        fake.state()
            .answers
            .insert("get_number.php".into(), garbage.into());
        let error = pva.buy(&request()).await.unwrap_err();
        assert!(
            matches!(error, UpstreamError::Malformed(_)),
            "{garbage:?}: {error:?}"
        );
    }
    fake.state().answers.clear();
    fake.state().statuses.insert("get_number.php".into(), 503);
    assert!(matches!(
        pva.buy(&request()).await.unwrap_err(),
        UpstreamError::Unavailable(_)
    ));
    fake.state().statuses.insert("get_number.php".into(), 429);
    assert!(matches!(
        pva.buy(&request()).await.unwrap_err(),
        UpstreamError::RateLimited { .. }
    ));
    fake.state().statuses.clear();
    fake.state().delay = Some(Duration::from_secs(2));
    let error = pva.balance().await.unwrap_err();
    match &error {
        UpstreamError::Unavailable(message) => {
            assert!(message.contains("timed out"), "{message}");
            // The key travels in the URL: never in an error.
            assert!(
                !message.contains("customer") && !message.contains("127.0.0.1"),
                "{message}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(!error.is_definite());
}

#[tokio::test]
async fn nothing_is_bought_over_the_price_cap_or_without_a_mapping() {
    let fake = FakePvaPins::start();
    let pva = adapter(&fake);
    let mut capped = request();
    capped.max_cost = Some(Micros(500_000));
    assert_eq!(
        pva.buy(&capped).await.unwrap_err(),
        UpstreamError::PriceTooHigh {
            min: Some(Micros(840_000))
        }
    );
    let mut unmapped = request();
    unmapped.service = ServiceCode::new("tg").unwrap();
    assert_eq!(
        pva.buy(&unmapped).await.unwrap_err(),
        UpstreamError::BadService
    );
    let mut unmapped = request();
    unmapped.country = CountryCode::new("FR").unwrap();
    assert_eq!(
        pva.buy(&unmapped).await.unwrap_err(),
        UpstreamError::BadCountry
    );
    let mut voice = request();
    voice.channel = Channel::Voice;
    assert_eq!(
        pva.buy(&voice).await.unwrap_err(),
        UpstreamError::BadService
    );
    assert_eq!(fake.state().calls("get_number.php"), 0);
    capped.max_cost = Some(Micros(840_000));
    assert!(pva.buy(&capped).await.is_ok());
}

#[tokio::test]
async fn the_code_arrives_after_some_polls_and_a_resend_brings_a_new_revision() {
    for format in [Format::Plain, Format::Json] {
        let fake = FakePvaPins::start();
        {
            let mut s = fake.state();
            s.format = format;
            s.code_after_polls = 3;
        }
        let pva = adapter(&fake);
        let purchase = pva.buy(&request()).await.unwrap();
        for _ in 0..2 {
            let snapshot = pva.poll(&purchase.handle).await.unwrap();
            assert_eq!(snapshot.state, UpstreamState::Waiting, "{format:?}");
            assert_eq!(snapshot.revision, 0);
        }
        let first = pva.poll(&purchase.handle).await.unwrap();
        assert_eq!(first.state, UpstreamState::CodeReceived);
        assert_eq!(first.code.as_deref(), Some("482913"));
        assert_eq!(first.text.as_deref(), Some("Your WhatsApp code is 482-913"));
        assert_eq!(first.revision, 1);
        assert!(!first.by_call);
        // The same SMS again: the same revision.
        assert_eq!(pva.poll(&purchase.handle).await.unwrap().revision, 1);

        fake.state().resend_after_polls = 2;
        let resent = pva.resend(&purchase.handle).await.unwrap();
        assert_eq!(handle_json(&resent)["rev"], 1);
        assert_eq!(handle_json(&resent)["number"], "13865902416");
        let query = fake.state().last_query("get_number.php");
        assert_eq!(query.get("number").map(String::as_str), Some("13865902416"));
        // Not there yet: still the first code.
        let waiting = pva.poll(&resent).await.unwrap();
        assert_eq!(
            (waiting.state, waiting.revision),
            (UpstreamState::CodeReceived, 1)
        );
        let second = pva.poll(&resent).await.unwrap();
        assert_eq!(second.state, UpstreamState::CodeReceived);
        assert_eq!(second.code.as_deref(), Some("777111"));
        assert_eq!(second.revision, 2);

        // A restarted adapter (no memory) never hides the new code either.
        let restarted = adapter(&fake);
        let after_restart = restarted.poll(&resent).await.unwrap();
        assert_eq!(after_restart.code.as_deref(), Some("777111"));
        assert!(after_restart.revision >= 2);
        // Finish is local: no request at all.
        let before = fake.state().requests.len();
        pva.finish(&resent).await.unwrap();
        assert_eq!(fake.state().requests.len(), before);
    }
}

#[tokio::test]
async fn cancel_rejects_then_reads_as_cancelled() {
    for format in [Format::Plain, Format::Json] {
        let fake = FakePvaPins::start();
        {
            let mut s = fake.state();
            s.format = format;
            s.code_after_polls = 100;
        }
        let pva = adapter(&fake);
        let purchase = pva.buy(&request()).await.unwrap();
        assert_eq!(
            pva.poll(&purchase.handle).await.unwrap().state,
            UpstreamState::Waiting
        );
        assert_eq!(
            pva.cancel(&purchase.handle).await,
            Ok(CancelOutcome::Cancelled),
            "{format:?}"
        );
        let query = fake.state().last_query("get_reject_number.php");
        assert_eq!(query.get("number").map(String::as_str), Some("13865902416"));
        assert_eq!(query.get("app").map(String::as_str), Some("Whatsapp24"));
        assert_eq!(query.get("country").map(String::as_str), Some("USA"));
        // Later get_sms answers "Number Not Found.": cancelled, since we rejected it.
        assert_eq!(
            pva.poll(&purchase.handle).await.unwrap().state,
            UpstreamState::Cancelled
        );
        // Rejecting again: already closed.
        assert_eq!(
            pva.cancel(&purchase.handle).await,
            Ok(CancelOutcome::AlreadyClosed)
        );
        // A resend on a released number: not found.
        assert_eq!(
            pva.resend(&purchase.handle).await.unwrap_err(),
            UpstreamError::NotFound
        );
    }
}

#[tokio::test]
async fn cancel_too_early_and_after_a_code() {
    for format in [Format::Plain, Format::Json] {
        let fake = FakePvaPins::start();
        {
            let mut s = fake.state();
            s.format = format;
            s.code_after_polls = 1;
        }
        // Inside the reject window, a refusal is "too early" with the time left.
        let mut cfg = config(&fake);
        cfg.min_reject_after = Duration::from_secs(180);
        let early = PvaPins::new(cfg).unwrap();
        let purchase = early.buy(&request()).await.unwrap();
        fake.state()
            .answers
            .insert("get_reject_number.php".into(), "Not able to reject.".into());
        match early.cancel(&purchase.handle).await.unwrap() {
            CancelOutcome::TooEarly {
                retry_after: Some(left),
            } => {
                assert!(
                    left > Duration::from_secs(170) && left <= Duration::from_secs(180),
                    "{left:?}"
                )
            }
            other => panic!("expected TooEarly, got {other:?}"),
        }
        // The minutes sentence (exact wording unconfirmed) is too early too.
        fake.state().answers.insert(
            "get_reject_number.php".into(),
            "You can reject this number after 3 minutes.".into(),
        );
        assert!(matches!(
            early.cancel(&purchase.handle).await,
            Ok(CancelOutcome::TooEarly { .. })
        ));
        fake.state().answers.clear();

        // Past the window, with a code there: the fake refuses, the SMS says why.
        let pva = adapter(&fake);
        assert_eq!(
            pva.poll(&purchase.handle).await.unwrap().state,
            UpstreamState::CodeReceived
        );
        assert_eq!(
            pva.cancel(&purchase.handle).await,
            Ok(CancelOutcome::AlreadyHasCode),
            "{format:?}"
        );
        // Past the window, no code, still refused: too early without a hint.
        let other = pva.buy(&request()).await.unwrap();
        fake.state().answers.insert(
            "get_reject_number.php".into(),
            r#"{"code":200,"data":"Cant Rejected"}"#.into(),
        );
        fake.state().code_after_polls = 100;
        fake.state().numbers.values_mut().for_each(|sold| {
            if sold.delivered.is_empty() {
                sold.scheduled.clear();
            }
        });
        assert_eq!(
            pva.cancel(&other.handle).await,
            Ok(CancelOutcome::TooEarly { retry_after: None })
        );
    }
}

#[tokio::test]
async fn the_local_deadline_expires_a_number_without_sms() {
    let fake = FakePvaPins::start();
    fake.state().code_after_polls = 100;
    let mut cfg = config(&fake);
    cfg.lifetime = Duration::ZERO;
    let pva = PvaPins::new(cfg).unwrap();
    let purchase = pva.buy(&request()).await.unwrap();
    assert_eq!(
        pva.poll(&purchase.handle).await.unwrap().state,
        UpstreamState::Expired
    );

    // Released upstream without a reject: expired too.
    let pva = adapter(&fake);
    let purchase = pva.buy(&request()).await.unwrap();
    fake.state().numbers.clear();
    assert_eq!(
        pva.poll(&purchase.handle).await.unwrap().state,
        UpstreamState::Expired
    );
}

#[tokio::test]
async fn a_released_number_after_a_code_is_completed() {
    let fake = FakePvaPins::start();
    fake.state().code_after_polls = 1;
    let pva = adapter(&fake);
    let purchase = pva.buy(&request()).await.unwrap();
    assert_eq!(pva.poll(&purchase.handle).await.unwrap().revision, 1);
    fake.state().numbers.clear();
    let snapshot = pva.poll(&purchase.handle).await.unwrap();
    assert_eq!(
        (snapshot.state, snapshot.revision),
        (UpstreamState::Completed, 1)
    );
}

#[tokio::test]
async fn malformed_handles_make_no_request() {
    let fake = FakePvaPins::start();
    let pva = adapter(&fake);
    for bad in [
        Handle("42".into()),
        Handle("{\"number\":1}".into()),
        Handle("x".repeat(600)),
    ] {
        assert!(matches!(
            pva.poll(&bad).await,
            Err(UpstreamError::Malformed(_))
        ));
        assert!(matches!(
            pva.cancel(&bad).await,
            Err(UpstreamError::Malformed(_))
        ));
        assert!(matches!(
            pva.resend(&bad).await,
            Err(UpstreamError::Malformed(_))
        ));
        assert!(matches!(
            pva.finish(&bad).await,
            Err(UpstreamError::Malformed(_))
        ));
    }
    assert!(fake.state().requests.is_empty());
}

#[tokio::test]
async fn get_sms_errors_are_typed() {
    let fake = FakePvaPins::start();
    let pva = adapter(&fake);
    let purchase = pva.buy(&request()).await.unwrap();
    fake.state()
        .answers
        .insert("get_sms.php".into(), "Customer Not Found.".into());
    assert_eq!(
        pva.poll(&purchase.handle).await.unwrap_err(),
        UpstreamError::BadKey
    );
    fake.state()
        .answers
        .insert("get_sms.php".into(), "<html>oops</html>".into());
    assert!(matches!(
        pva.poll(&purchase.handle).await,
        Err(UpstreamError::Malformed(_))
    ));
    // An unknown sentence is not taken for an SMS.
    fake.state()
        .answers
        .insert("get_sms.php".into(), "Service temporarily disabled.".into());
    assert!(matches!(
        pva.poll(&purchase.handle).await,
        Err(UpstreamError::Malformed(_))
    ));
    // An SMS that mentions a balance is an SMS.
    fake.state().answers.insert(
        "get_sms.php".into(),
        "Bank: insufficient balance. Code 5521".into(),
    );
    let snapshot = pva.poll(&purchase.handle).await.unwrap();
    assert_eq!(snapshot.state, UpstreamState::CodeReceived);
    assert_eq!(snapshot.code.as_deref(), Some("5521"));
    // The JSON envelope around the waiting sentence.
    fake.state().answers.insert(
        "get_sms.php".into(),
        r#"{"code":100,"data":"You have not received any code yet."}"#.into(),
    );
    let pva = adapter(&fake);
    assert_eq!(
        pva.poll(&purchase.handle).await.unwrap().state,
        UpstreamState::Waiting
    );
}

/// A router over one PVAPins that gives up on a buy after 200 ms.
fn impatient_router(pva: PvaPins) -> Router {
    Router::new(
        vec![Arc::new(pva)],
        RouterConfig {
            deadline: Duration::from_secs(2),
            attempt_timeout: Duration::from_millis(200),
            reconcile_attempts: 5,
            reconcile_interval: Duration::from_millis(50),
            late_answer_wait: Duration::from_secs(5),
            ..RouterConfig::default()
        },
    )
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

#[tokio::test]
async fn a_slow_buy_keeps_its_longer_timeout_and_its_late_number_is_rejected() {
    let fake = FakePvaPins::start();
    // Slower than the router's patience and the adapter's 500 ms for other
    // calls, within the buy's own timeout.
    fake.state().hang_buys = Some(Duration::from_millis(1_200));
    let mut config = config(&fake);
    config.buy_timeout = Duration::from_secs(3);
    let router = impatient_router(PvaPins::new(config).unwrap());
    router.buy(&request()).await.unwrap_err();
    let health = health_when(&router, |h| h.reconciled_cancelled + h.unreconciled > 0).await;
    assert_eq!((health.reconciled_cancelled, health.unreconciled), (1, 0));
    let state = fake.state();
    assert_eq!(state.numbers.len(), 1);
    assert!(state.numbers.values().all(|sold| sold.rejected));
    assert_eq!(state.calls("get_reject_number.php"), 1);
}

#[tokio::test]
async fn a_buy_lost_past_its_timeout_cannot_be_reconciled_and_is_counted() {
    let fake = FakePvaPins::start();
    fake.state().hang_buys = Some(Duration::from_millis(1_500));
    let mut config = config(&fake);
    config.buy_timeout = Duration::from_millis(400);
    let pva = PvaPins::new(config).unwrap();
    // PVAPins offers no listing to search.
    assert_eq!(pva.open_purchases_like(&request()).await, Ok(None));
    let router = impatient_router(pva);
    router.buy(&request()).await.unwrap_err();
    let health = health_when(&router, |h| h.reconciled_cancelled + h.unreconciled > 0).await;
    assert_eq!(
        (
            health.unreconciled,
            health.reconciled_cancelled,
            health.reconciled_absent
        ),
        (1, 0, 0)
    );
    // The number is still out there (PVAPins releases it after ~20 minutes);
    // the buy was not retried.
    let state = fake.state();
    assert_eq!(state.numbers.len(), 1);
    assert_eq!(state.calls("get_number.php"), 1);
    assert_eq!(state.calls("get_reject_number.php"), 0);
}
