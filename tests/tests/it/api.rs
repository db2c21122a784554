//! The customer journey over HTTP against the real binary on the embedded default
//! (healthy simulated upstreams, mail to the outbox).

use std::time::{Duration, Instant};

use nexus_tests::journey::{call, customer, fund, start, to_micros, verification_token, PASSWORD};
use nexus_tests::Server;

#[test]
fn register_verify_deposit_order_code_complete_cashback() {
    let admin_token = "api-journey-admin-token-0123";
    let server = Server::start_with(&[
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_SIM_CODE_DELAY_MS", "300"),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_BCRYPT_COST", "12"),
        ("NEXUS_ADMIN_TOKEN", admin_token),
    ]);
    let key = customer(&server, "alice@example.com");
    fund(&server, &key, "10.00");

    let order = call(
        &server,
        "POST",
        "/v1/orders",
        &key,
        &[("Idempotency-Key", "k-1")],
        Some(r#"{"service":"tg","country":"DE","channel":"sms"}"#),
    );
    assert_eq!(order.status, 201, "{}", order.body);
    let order = order.json();
    assert_eq!(
        order["status"], "number_assigned",
        "a number within the provisioning deadline"
    );
    assert!(order["phone"]
        .as_str()
        .unwrap()
        .chars()
        .all(|c| c.is_ascii_digit()));
    let price = order["price"].as_str().unwrap().to_owned();
    let id = order["id"].as_str().unwrap().to_owned();

    // The same key replays the same order and charges once.
    let again = call(
        &server,
        "POST",
        "/v1/orders",
        &key,
        &[("Idempotency-Key", "k-1")],
        Some(r#"{"service":"tg","country":"DE","channel":"sms"}"#),
    );
    assert_eq!(again.json()["id"], id.as_str());

    let code = call(
        &server,
        "GET",
        &format!("/v1/orders/{id}/code?wait=20"),
        &key,
        &[],
        None,
    );
    assert_eq!(code.status, 200, "{}", code.body);
    assert!(code.json()["code"].as_str().unwrap().len() >= 4);
    let done = call(
        &server,
        "POST",
        &format!("/v1/orders/{id}/complete"),
        &key,
        &[],
        None,
    );
    assert_eq!(done.json()["status"], "completed");

    // The list comes from the orders read model (caught up within moments).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = call(&server, "GET", "/v1/orders?limit=10", &key, &[], None).json();
        let items = list["items"].as_array().unwrap();
        if items
            .iter()
            .any(|o| o["id"] == id.as_str() && o["status"] == "completed")
        {
            assert_eq!(items.len(), 1, "one order, charged once");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the order list never showed the order: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The projections' details are the operator's.
    let ready = server.send("GET", "/ready", &[], None);
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json(), serde_json::json!({ "status": "ready" }));
    let bearer = format!("Bearer {admin_token}");
    let ready = server.send("GET", "/ready", &[("Authorization", &bearer)], None);
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["projections"].as_array().unwrap().len(), 5);

    // The ledger rows and the deposit history, from the wallets read model.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entries = call(&server, "GET", "/v1/wallet/entries", &key, &[], None).json();
        let reasons: Vec<&str> = entries["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["reason"].as_str())
            .collect();
        if reasons == ["cashback", "capture", "hold", "deposit"] {
            // Each entry names what it is for, and every amount has six decimals.
            let rows = entries["items"].as_array().unwrap();
            let deposit_id = call(&server, "GET", "/v1/deposits", &key, &[], None).json()["items"]
                [0]["id"]
                .clone();
            for row in &rows[..3] {
                assert_eq!(row["reference"]["kind"], "order", "{row}");
                assert_eq!(row["reference"]["id"], id.as_str(), "{row}");
            }
            assert_eq!(rows[3]["reference"]["kind"], "deposit", "{entries}");
            assert_eq!(rows[3]["reference"]["id"], deposit_id, "{entries}");
            for row in rows {
                for field in [
                    "available_change",
                    "held_change",
                    "available",
                    "held",
                    "balance",
                ] {
                    let amount = row[field].as_str().unwrap();
                    assert_eq!(amount.split('.').nth(1).map(str::len), Some(6), "{row}");
                }
            }
            break;
        }
        assert!(Instant::now() < deadline, "ledger rows: {reasons:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deposits = call(&server, "GET", "/v1/deposits", &key, &[], None).json();
    assert_eq!(deposits["items"][0]["status"], "paid");
    assert_eq!(deposits["items"][0]["amount"], "10.000000");

    let wallet = call(&server, "GET", "/v1/wallet", &key, &[], None).json();
    assert_eq!(wallet["held"], "0.000000");
    // 10.00 - price + 2% of the price.
    let price_micros = to_micros(&price);
    let expected = 10_000_000 - price_micros + price_micros * 2 / 100;
    assert_eq!(to_micros(wallet["available"].as_str().unwrap()), expected);
}

#[test]
fn another_customer_sees_404_and_bad_input_is_a_problem() {
    let server = start();
    let alice = customer(&server, "alice2@example.com");
    let mallory = customer(&server, "mallory@example.com");
    fund(&server, &alice, "5.00");
    let order = call(
        &server,
        "POST",
        "/v1/orders",
        &alice,
        &[],
        Some(r#"{"service":"wa","country":"GB"}"#),
    );
    assert_eq!(order.status, 201, "{}", order.body);
    let id = order.json()["id"].as_str().unwrap().to_owned();
    for (method, path) in [
        ("GET", format!("/v1/orders/{id}")),
        ("GET", format!("/v1/orders/{id}/code")),
        ("POST", format!("/v1/orders/{id}/cancel")),
    ] {
        let r = call(&server, method, &path, &mallory, &[], None);
        assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    let cases: Vec<(&str, &str, u16, &str)> = vec![
        ("/v1/orders", "{not json", 400, "invalid_json"),
        (
            "/v1/orders",
            r#"{"service":"tg","country":"DE","extra":1}"#,
            400,
            "invalid_json",
        ),
        (
            "/v1/orders",
            r#"{"service":"tg","country":"XX"}"#,
            400,
            "unknown_country",
        ),
        (
            "/v1/orders",
            r#"{"service":"nope!","country":"DE"}"#,
            400,
            "unknown_service",
        ),
        (
            "/v1/orders",
            r#"{"service":"tg","country":"DE","channel":"fax"}"#,
            400,
            "invalid_channel",
        ),
        (
            "/v1/orders",
            r#"{"service":"tg","country":"DE","max_price":"0.001"}"#,
            409,
            "price_above_max",
        ),
    ];
    for (path, body, status, code) in cases {
        let r = call(&server, "POST", path, &mallory, &[], Some(body));
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert_eq!(r.json()["code"], code, "{body}");
    }
    let oversized = format!(r#"{{"service":"{}","country":"DE"}}"#, "a".repeat(20_000));
    let too_large = call(
        &server,
        "POST",
        "/v1/orders",
        &mallory,
        &[],
        Some(&oversized),
    );
    assert_eq!(too_large.status, 413, "{}", too_large.body);
    assert_eq!(too_large.json()["code"], "body_too_large");
    // A currency the gateway does not take is bad input: no deposit is written.
    let doge = call(
        &server,
        "POST",
        "/v1/deposits",
        &mallory,
        &[],
        Some(r#"{"amount":"5.00","pay_currency":"doge"}"#),
    );
    assert_eq!(doge.status, 400, "{}", doge.body);
    assert_eq!(doge.json()["code"], "unsupported_currency");
    let deposits = call(&server, "GET", "/v1/deposits", &mallory, &[], None);
    assert_eq!(deposits.status, 200, "{}", deposits.body);
    assert_eq!(
        deposits.json()["items"],
        serde_json::json!([]),
        "{}",
        deposits.body
    );
    let anonymous = server.send("GET", "/v1/wallet", &[], None);
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Bearer realm=\"nexus\"")
    );
    // The scheme's name is case-insensitive (RFC 9110).
    let lower = format!("bearer {mallory}");
    let wallet = server.send("GET", "/v1/wallet", &[("Authorization", &lower)], None);
    assert_eq!(wallet.status, 200, "{}", wallet.body);
    let broke = call(
        &server,
        "POST",
        "/v1/orders",
        &mallory,
        &[],
        Some(r#"{"service":"tg","country":"DE"}"#),
    );
    assert_eq!(
        (broke.status, broke.json()["code"].as_str()),
        (402, Some("insufficient_funds"))
    );
}

#[test]
fn the_catalog_lists_countries_services_and_prices() {
    let server = start();
    let countries = server
        .send("GET", "/v1/catalog/countries", &[], None)
        .json();
    assert_eq!(countries["items"].as_array().unwrap().len(), 249);
    let services = server.send("GET", "/v1/catalog/services", &[], None).json();
    assert!(services["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["code"] == "tg"));
    let prices = server
        .send("GET", "/v1/catalog/prices?service=tg&country=DE", &[], None)
        .json();
    let price = prices["items"][0]["price"].as_str().unwrap();
    assert!(price.contains('.') && to_micros(price) > 0, "{prices}");
    let bad = server.send("GET", "/v1/catalog/prices?service=tg&country=QQ", &[], None);
    assert_eq!(bad.status, 400);
    let missing = server.send("GET", "/v1/catalog/prices?service=tg", &[], None);
    assert_eq!(
        (missing.status, missing.json()["code"].as_str()),
        (400, Some("invalid_query"))
    );
}

/// Without `NEXUS_SIM_CODE_DELAY_MS` the embedded default draws each code's
/// delay from its pair's spread (docs/SIMULATOR.md): WhatsApp in the UK has no
/// code for 4 minutes, so once the cancel guard has passed a cancel is
/// refunded; Telegram in Indonesia gets its code within 15 s.
#[test]
fn on_the_default_spread_the_slow_pair_can_be_cancelled_and_the_fast_pair_gets_its_code() {
    let server = Server::start_with(&[
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_CANCEL_GUARD_SECS", "1"),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_BCRYPT_COST", "12"),
    ]);
    let key = customer(&server, "first-hour@example.com");
    fund(&server, &key, "10.00");
    let order = |pair: &str| {
        let body = format!(
            r#"{{"service":"{}","country":"{}","channel":"sms"}}"#,
            &pair[..2],
            &pair[3..]
        );
        let placed = call(&server, "POST", "/v1/orders", &key, &[], Some(&body));
        assert_eq!(placed.status, 201, "{}", placed.body);
        assert_eq!(
            placed.json()["status"],
            "number_assigned",
            "{}",
            placed.body
        );
        placed.json()["id"].as_str().unwrap().to_owned()
    };
    let slow = order("wa/GB");
    let fast = order("tg/ID");

    // The code long-poll outlasts the fast pair's 15 s; the guard's 1 s passes meanwhile.
    let code = call(
        &server,
        "GET",
        &format!("/v1/orders/{fast}/code?wait=30"),
        &key,
        &[],
        None,
    );
    assert_eq!(code.status, 200, "{}", code.body);
    assert!(code.json()["code"].is_string(), "{}", code.body);

    let cancelled = call(
        &server,
        "POST",
        &format!("/v1/orders/{slow}/cancel"),
        &key,
        &[],
        None,
    );
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(
        cancelled.json()["status"],
        "cancelled",
        "{}",
        cancelled.body
    );
}

/// Telegram in Antarctica is the embedded default's pair out of stock
/// (docs/SIMULATOR.md): its price shows stock 0 and no price, and an order of
/// it is refused as no numbers, with nothing held; Telegram in Indonesia, the
/// fast pair, is in stock and cheaper than Telegram in the UK.
#[test]
fn a_pair_out_of_stock_shows_stock_0_and_its_order_is_refused() {
    let server = start();
    let price_of = |service: &str, country: &str| {
        let path = format!("/v1/catalog/prices?service={service}&country={country}");
        let answer = server.send("GET", &path, &[], None);
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()["items"][0].clone()
    };
    let antarctica = price_of("tg", "AQ");
    assert_eq!(antarctica["stock"], 0, "{antarctica}");
    assert!(antarctica["price"].is_null(), "{antarctica}");
    let indonesia = price_of("tg", "ID");
    let britain = price_of("tg", "GB");
    assert!(indonesia["stock"].as_u64().unwrap() > 0, "{indonesia}");
    assert!(
        to_micros(indonesia["price"].as_str().unwrap())
            < to_micros(britain["price"].as_str().unwrap()),
        "{indonesia} {britain}"
    );

    let key = customer(&server, "antarctic@example.com");
    fund(&server, &key, "10.00");
    let refused = call(
        &server,
        "POST",
        "/v1/orders",
        &key,
        &[],
        Some(r#"{"service":"tg","country":"AQ","channel":"sms"}"#),
    );
    assert_eq!(
        (refused.status, refused.json()["code"].as_str()),
        (409, Some("no_numbers")),
        "{}",
        refused.body
    );
    let wallet = call(&server, "GET", "/v1/wallet", &key, &[], None).json();
    assert_eq!(
        (wallet["available"].as_str(), wallet["held"].as_str()),
        (Some("10.000000"), Some("0.000000"))
    );
}

#[test]
fn the_development_pay_route_pays_an_invoice_once() {
    let server = start();
    let key = customer(&server, "payer@example.com");
    let deposit = call(
        &server,
        "POST",
        "/v1/deposits",
        &key,
        &[],
        Some(r#"{"amount":"10.00"}"#),
    );
    assert_eq!(deposit.status, 201, "{}", deposit.body);
    let id = deposit.json()["id"].as_str().unwrap().to_owned();
    let pay = || server.send("POST", &format!("/v1/dev/payments/{id}/pay"), &[], None);
    let first = pay();
    assert_eq!(
        (first.status, first.json()["outcome"].as_str()),
        (200, Some("credited")),
        "{}",
        first.body
    );
    // Paid again (it was credited again: $20 for a $10 invoice): nothing more.
    for _ in 0..2 {
        let again = pay();
        assert_eq!(
            (again.status, again.json()["outcome"].as_str()),
            (200, Some("already_credited")),
            "{}",
            again.body
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&server, "GET", "/v1/wallet", &key, &[], None).json()["available"] != "10.000000" {
        assert!(Instant::now() < deadline, "the deposit was not credited");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Still $10 once the read models have seen every payment.
    std::thread::sleep(Duration::from_millis(300));
    let wallet = call(&server, "GET", "/v1/wallet", &key, &[], None).json();
    assert_eq!(wallet["available"], "10.000000", "{wallet}");
}

#[test]
fn an_anonymous_order_is_paid_and_followed_by_its_tracking_id() {
    let server = start();
    let created = server.send(
        "POST",
        "/v1/anonymous/orders",
        &[],
        Some(r#"{"service":"wa","country":"ID","channel":"sms"}"#),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    let tracking = created["tracking_id"].as_str().unwrap().to_owned();
    assert!(tracking.starts_with("trk_") && tracking.len() > 40);
    let track = server
        .send("GET", &format!("/v1/track/{tracking}"), &[], None)
        .json();
    assert_eq!(track["status"], "awaiting_payment");
    let invoice = created["invoice"]["id"].as_str().unwrap();
    let paid = server.send(
        "POST",
        &format!("/v1/dev/payments/{invoice}/pay"),
        &[],
        None,
    );
    assert_eq!(paid.status, 200, "{}", paid.body);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let track = server
            .send("GET", &format!("/v1/track/{tracking}"), &[], None)
            .json();
        if track["code"].is_string() {
            assert!(track["phone"]
                .as_str()
                .unwrap()
                .chars()
                .all(|c| c.is_ascii_digit()));
            assert_eq!(
                track["status"], "code_received",
                "the status as read, before the delivery"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no code through the tracking ID: {track}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let unknown = format!("trk_{}", "A".repeat(43));
    assert_eq!(
        server
            .send("GET", &format!("/v1/track/{unknown}"), &[], None)
            .status,
        404
    );
    assert_eq!(
        server
            .send("GET", "/v1/track/not-a-tracking-id", &[], None)
            .status,
        404
    );
}

#[test]
fn the_link_in_the_verification_mail_verifies_the_address_in_a_browser() {
    let server = start();
    let email = "linked@example.com";
    let body = format!(r#"{{"email":"{email}","password":"{PASSWORD}"}}"#);
    let created = server.send("POST", "/v1/accounts", &[], Some(&body));
    assert_eq!(created.status, 202, "{}", created.body);
    // The token is the mail's; the link is read as it was written.
    let token = verification_token(&server, email);
    let origin = format!("http://{}", server.addr);
    let link = format!("/verify?token={token}");
    let outbox = server.data_dir.path().join("outbox");
    let mail = std::fs::read_dir(&outbox)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .find(|m| m.contains(email))
        .expect("the verification mail");
    assert!(
        mail.lines().any(|l| l.trim() == format!("{origin}{link}")),
        "the mail links to this server: {mail}"
    );

    // A tracking parameter a mail client adds changes nothing.
    let page = server.send("GET", &format!("{link}&utm_source=mail"), &[], None);
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(page.body.contains("confirmed"), "{}", page.body);
    assert!(!page.body.contains(&token), "the page echoes nothing");
    let login = server.send("POST", "/v1/sessions", &[], Some(&body));
    assert_eq!(login.status, 201, "{}", login.body);
    assert_eq!(login.json()["verified"], true, "{}", login.body);

    // Opened again, or with a token that is not one: a problem, nothing changes.
    let again = server.send("GET", &link, &[], None);
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.json()["code"], "verification_token_used");
    let forged = server.send("GET", "/verify?token=not-a-token", &[], None);
    assert_eq!(forged.status, 400, "{}", forged.body);
    assert_eq!(forged.json()["code"], "verification_token_invalid");
    let missing = server.send("GET", "/verify", &[], None);
    assert_eq!(missing.status, 400, "{}", missing.body);
    assert_eq!(missing.json()["code"], "invalid_query");
}

#[test]
fn completing_an_order_whose_code_came_but_was_not_read_delivers_and_charges_it() {
    let server = start();
    let key = customer(&server, "finisher@example.com");
    fund(&server, &key, "10.00");
    let order = call(
        &server,
        "POST",
        "/v1/orders",
        &key,
        &[("Idempotency-Key", "finish-1")],
        Some(r#"{"service":"tg","country":"DE","channel":"sms"}"#),
    );
    assert_eq!(order.status, 201, "{}", order.body);
    let order = order.json();
    let id = order["id"].as_str().unwrap().to_owned();
    let price = to_micros(order["price"].as_str().unwrap());

    // The code comes; the customer completes without reading it here.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = call(&server, "GET", &format!("/v1/orders/{id}"), &key, &[], None);
        assert_eq!(seen.status, 200, "{}", seen.body);
        if seen.json()["status"] == "code_received" {
            break;
        }
        assert!(Instant::now() < deadline, "no code: {}", seen.body);
        std::thread::sleep(Duration::from_millis(100));
    }
    let done = call(
        &server,
        "POST",
        &format!("/v1/orders/{id}/complete"),
        &key,
        &[],
        None,
    );
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.json()["status"], "completed", "{}", done.body);

    // The hold was captured once: the price paid, nothing held.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let wallet = call(&server, "GET", "/v1/wallet", &key, &[], None).json();
        let held = to_micros(wallet["held"].as_str().unwrap());
        let balance = to_micros(wallet["balance"].as_str().unwrap());
        if held == 0 && balance < 10_000_000 {
            // 2% cashback on the captured price.
            assert_eq!(balance, 10_000_000 - price + price / 50, "{wallet}");
            break;
        }
        assert!(Instant::now() < deadline, "{wallet}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Completing again is refused: the order is completed already.
    let again = call(
        &server,
        "POST",
        &format!("/v1/orders/{id}/complete"),
        &key,
        &[],
        None,
    );
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.json()["code"], "order_wrong_status", "{}", again.body);
}

/// A password change ends every other session of the account; the session it
/// was made from stays, and the new password signs in.
#[test]
fn a_password_change_ends_the_other_sessions() {
    let server = start();
    let email = "two.sessions@example.com";
    customer(&server, email);
    let login = |password: &str| {
        let body = serde_json::json!({ "email": email, "password": password }).to_string();
        let answer = server.send("POST", "/v1/sessions", &[], Some(&body));
        assert_eq!(answer.status, 201, "{}", answer.body);
        let cookie = answer.header("set-cookie").expect("a session cookie");
        cookie.split(';').next().unwrap().to_owned()
    };
    let (here, elsewhere) = (login(PASSWORD), login(PASSWORD));
    let me = |cookie: &str| {
        server
            .send("GET", "/v1/me", &[("cookie", cookie)], None)
            .status
    };
    assert_eq!((me(&here), me(&elsewhere)), (200, 200));

    let change = serde_json::json!({ "old_password": PASSWORD,
        "new_password": "a different horse battery" })
    .to_string();
    let answer = server.send(
        "POST",
        "/v1/me/password",
        &[("cookie", &here)],
        Some(&change),
    );
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert_eq!(me(&here), 200, "the session the change came from stays");
    assert_eq!(me(&elsewhere), 401, "every other session ended");
    let fresh = login("a different horse battery");
    assert_eq!(me(&fresh), 200);
}
