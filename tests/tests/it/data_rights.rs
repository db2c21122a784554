//! The data-rights routes against the real binary on the embedded default:
//! access and portability (`GET /v1/me`, `GET /v1/me/export`), correction
//! (`PATCH /v1/me`), deletion and its withdrawal (`POST|DELETE
//! /v1/me/deletion`), objection (`PUT /v1/me/objection`).

use std::time::{Duration, Instant};

use nexus_tests::journey::to_micros;
use nexus_tests::{Response, Server};

const PASSWORD: &str = "correct horse battery staple";

fn start() -> Server {
    Server::start_with(&[
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_SIM_CODE_DELAY_MS", "300"),
        ("NEXUS_CANCEL_GUARD_SECS", "0"),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_BCRYPT_COST", "12"),
        ("NEXUS_RATE_KEY_PER_S", "1000"),
        ("NEXUS_RATE_IP_PER_S", "1000"),
        ("NEXUS_RATE_AUTH_PER_MIN", "1000"),
    ])
}

/// The newest verification token mailed to exactly `email` (the `To:` line).
fn verification_token(server: &Server, email: &str) -> String {
    let outbox = server.data_dir.path().join("outbox");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut mails: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(&outbox)
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        let modified = e
                            .metadata()
                            .and_then(|m| m.modified())
                            .unwrap_or(std::time::UNIX_EPOCH);
                        (
                            modified,
                            std::fs::read_to_string(e.path()).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        mails.sort();
        let token = mails
            .iter()
            .rev()
            .filter(|(_, text)| {
                text.lines().any(|l| {
                    l.strip_prefix("To:")
                        .is_some_and(|to| to.trim().trim_matches(['<', '>']) == email)
                })
            })
            .find_map(|(_, text)| {
                text.lines().find_map(|l| {
                    l.split_once("/verify?token=")
                        .map(|(_, t)| t.trim().to_owned())
                })
            });
        if let Some(token) = token {
            return token;
        }
        assert!(
            Instant::now() < deadline,
            "no verification mail to {email} in {} mails",
            mails.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn credentials(email: &str, password: &str) -> String {
    format!(r#"{{"email":"{email}","password":"{password}"}}"#)
}

/// A logged-in customer: a session cookie (`name=value`) and an API key.
struct Customer {
    email: String,
    session: String,
    key: String,
}

impl Customer {
    fn with_key(&self, server: &Server, method: &str, path: &str, body: Option<&str>) -> Response {
        let bearer = format!("Bearer {}", self.key);
        server.send(method, path, &[("Authorization", &bearer)], body)
    }

    fn with_session(
        &self,
        server: &Server,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Response {
        server.send(method, path, &[("Cookie", &self.session)], body)
    }
}

fn login(server: &Server, email: &str) -> Response {
    server.send(
        "POST",
        "/v1/sessions",
        &[],
        Some(&credentials(email, PASSWORD)),
    )
}

fn session_of(login: &Response) -> String {
    let cookie = login.header("set-cookie").expect("a session cookie");
    cookie.split(';').next().unwrap().to_owned()
}

/// Registers, verifies, logs in and makes an API key of scope `full`.
fn customer(server: &Server, email: &str) -> Customer {
    let created = server.send(
        "POST",
        "/v1/accounts",
        &[],
        Some(&credentials(email, PASSWORD)),
    );
    assert_eq!(created.status, 202, "{}", created.body);
    let token = verification_token(server, email);
    let verified = server.send(
        "POST",
        "/v1/accounts/verify",
        &[],
        Some(&format!(r#"{{"token":"{token}"}}"#)),
    );
    assert_eq!(verified.status, 200, "{}", verified.body);
    let login = login(server, email);
    assert_eq!(login.status, 201, "{}", login.body);
    let session = session_of(&login);
    // A key for everything a key may do; the sensitive changes go through
    // the (fresh) session, as a customer's own would.
    let key = server.send(
        "POST",
        "/v1/api-keys",
        &[("Cookie", &session)],
        Some(r#"{"scope":"full","label":"tests"}"#),
    );
    assert_eq!(key.status, 201, "{}", key.body);
    Customer {
        email: email.to_owned(),
        session,
        key: key.json()["key"].as_str().unwrap().to_owned(),
    }
}

/// Deposits `amount` and waits until it is available; returns the deposit id.
fn fund(server: &Server, who: &Customer, amount: &str) -> String {
    let body = format!(r#"{{"amount":"{amount}"}}"#);
    let deposit = who.with_key(server, "POST", "/v1/deposits", Some(&body));
    assert_eq!(deposit.status, 201, "{}", deposit.body);
    let id = deposit.json()["id"].as_str().unwrap().to_owned();
    let paid = server.send("POST", &format!("/v1/dev/payments/{id}/pay"), &[], None);
    assert_eq!(paid.status, 200, "{}", paid.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while who.with_key(server, "GET", "/v1/wallet", None).json()["available"]
        .as_str()
        .map(to_micros)
        != Some(to_micros(amount))
    {
        assert!(Instant::now() < deadline, "the deposit was not credited");
        std::thread::sleep(Duration::from_millis(50));
    }
    id
}

/// Places an order; returns its JSON (status `number_assigned`).
fn order(server: &Server, who: &Customer) -> serde_json::Value {
    let placed = who.with_key(
        server,
        "POST",
        "/v1/orders",
        Some(r#"{"service":"tg","country":"DE","channel":"sms"}"#),
    );
    assert_eq!(placed.status, 201, "{}", placed.body);
    let placed = placed.json();
    assert_eq!(placed["status"], "number_assigned", "{placed}");
    placed
}

/// Waits until the order's status (from the log) is `status`.
fn wait_for_status(server: &Server, who: &Customer, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let order = who
            .with_key(server, "GET", &format!("/v1/orders/{id}"), None)
            .json();
        if order["status"] == status {
            return;
        }
        assert!(Instant::now() < deadline, "never {status}: {order}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn problem_code(response: &Response) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(&response.body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
}

/// Days since 1970-01-01 of an RFC 3339 UTC time (`YYYY-MM-DDTHH:MM:SSZ`), as
/// a fraction, to compare due dates without a date library.
fn days_since_epoch(text: &str) -> f64 {
    let number = |range: std::ops::Range<usize>| -> i64 { text[range].parse().unwrap() };
    let (mut y, m, d) = (number(0..4), number(5..7), number(8..10));
    let (hh, mm, ss) = (number(11..13), number(14..16), number(17..19));
    // Howard Hinnant's days_from_civil.
    if m <= 2 {
        y -= 1;
    }
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days as f64 + (hh * 3600 + mm * 60 + ss) as f64 / 86_400.0
}

#[test]
fn the_export_holds_my_deposit_and_orders_and_nothing_of_another_account() {
    let server = start();
    let alice = customer(&server, "alice@example.com");
    let bob = customer(&server, "bob@example.com");
    let alice_deposit = fund(&server, &alice, "10.00");
    let bob_deposit = fund(&server, &bob, "5.00");

    // Alice: one order whose code she read (delivered), one whose code waits.
    let read = order(&server, &alice);
    let read_id = read["id"].as_str().unwrap().to_owned();
    let code = alice.with_key(
        &server,
        "GET",
        &format!("/v1/orders/{read_id}/code?wait=20"),
        None,
    );
    assert_eq!(code.status, 200, "{}", code.body);
    let code_value = code.json()["code"].as_str().unwrap().to_owned();
    let waiting = order(&server, &alice);
    let waiting_id = waiting["id"].as_str().unwrap().to_owned();
    wait_for_status(&server, &alice, &waiting_id, "code_received");
    let bob_order = order(&server, &bob);
    let bob_order_id = bob_order["id"].as_str().unwrap();

    let export = alice.with_key(&server, "GET", "/v1/me/export", None);
    assert_eq!(export.status, 200, "{}", export.body);
    assert!(export
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    assert!(export
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment"));
    let doc = export.json();
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["complete"], true);
    assert!(doc["as_of_log_position"].as_u64().unwrap() > 0);

    let account = &doc["account"];
    assert_eq!(account["email"], "alice@example.com");
    assert_eq!(account["verified"], true);
    assert!(account["verified_at"].is_string());
    assert_eq!(account["status"], "active");
    assert!(account["deletion"].is_null());
    assert_eq!(account["objection"], false);
    assert_eq!(
        account,
        &alice.with_key(&server, "GET", "/v1/me", None).json(),
        "the export's account is GET /v1/me"
    );

    // API keys: id and prefix, never the key or its hash.
    let keys = doc["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let prefix = keys[0]["prefix"].as_str().unwrap();
    assert_eq!(prefix.len(), 8);
    assert!(alice.key.contains(prefix));
    assert!(keys[0].get("key").is_none() && keys[0].get("hash").is_none());
    assert_eq!(
        (
            &keys[0]["scope"],
            &keys[0]["label"],
            &keys[0]["allowed_ips"]
        ),
        (
            &serde_json::json!("full"),
            &serde_json::json!("tests"),
            &serde_json::json!([])
        )
    );
    assert!(!export.body.contains(&alice.key));
    assert!(doc["webhook"].is_null(), "no webhook set");

    // The wallet agrees with GET /v1/wallet; the newest entry's running balance
    // is the balance; every entry names what it refers to.
    let wallet = alice.with_key(&server, "GET", "/v1/wallet", None).json();
    for field in ["balance", "held", "available"] {
        assert_eq!(doc["wallet"][field], wallet[field], "{field}");
    }
    assert_eq!(doc["wallet"]["currency"], "USD");
    let entries = doc["wallet"]["entries"].as_array().unwrap();
    assert_eq!(entries[0]["balance"], wallet["balance"]);
    let reasons: Vec<&str> = entries
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    for reason in ["deposit", "hold", "capture"] {
        assert!(reasons.contains(&reason), "{reason} in {reasons:?}");
    }
    let deposit_entry = entries.iter().find(|e| e["reason"] == "deposit").unwrap();
    assert_eq!(deposit_entry["reference"]["kind"], "deposit");
    assert_eq!(deposit_entry["reference"]["id"], alice_deposit.as_str());
    assert_eq!(deposit_entry["available_change"], "10.000000");
    let positions: Vec<u64> = entries
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] > w[1]),
        "newest first: {positions:?}"
    );

    let deposits = doc["deposits"].as_array().unwrap();
    assert_eq!(deposits.len(), 1);
    assert_eq!(deposits[0]["id"], alice_deposit.as_str());
    assert_eq!(deposits[0]["status"], "paid");
    assert_eq!(deposits[0]["paid"], "10.000000");
    assert_eq!(deposits[0]["payment_count"], 1);
    assert!(deposits[0]["payments"][0]["tx_hash"].is_string());

    let orders = doc["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 2);
    let exported = |id: &str| orders.iter().find(|o| o["id"] == id).unwrap().clone();
    let delivered = exported(&read_id);
    assert_eq!(delivered["status"], "code_delivered");
    assert_eq!(
        (delivered["service"].as_str(), delivered["country"].as_str()),
        (Some("tg"), Some("DE"))
    );
    assert_eq!(delivered["channel"], "sms");
    assert_eq!(delivered["phone"], read["phone"]);
    assert_eq!(delivered["price"], read["price"]);
    assert_eq!(delivered["delivered_via"], "api");
    assert_eq!(delivered["code"]["state"], "readable");
    assert_eq!(delivered["code"]["value"], code_value.as_str());
    let pending = exported(&waiting_id);
    assert_eq!(pending["status"], "code_received");
    assert_eq!(pending["code"]["state"], "awaiting_first_read");
    assert!(pending["code"]["value"].is_null() && pending["code"]["text"].is_null());
    // Exporting did not deliver the waiting code (no capture, no status change).
    wait_for_status(&server, &alice, &waiting_id, "code_received");

    // Nothing of Bob's.
    for foreign in [
        "bob@example.com",
        bob_deposit.as_str(),
        bob_order_id,
        bob.key.as_str(),
    ] {
        assert!(
            !export.body.contains(foreign),
            "{foreign} in Alice's export"
        );
    }
    let bobs = bob.with_key(&server, "GET", "/v1/me/export", None).json();
    assert_eq!(bobs["account"]["email"], "bob@example.com");
    assert_eq!(bobs["orders"].as_array().unwrap().len(), 1);
    assert_eq!(bobs["deposits"][0]["id"], bob_deposit.as_str());
    assert!(!bobs.to_string().contains(&read_id));

    // No credentials, no export.
    let anonymous = server.send("GET", "/v1/me/export", &[], None);
    assert_eq!(anonymous.status, 401);
    let bogus = server.send(
        "GET",
        "/v1/me/export",
        &[("Authorization", "Bearer nx_not_a_key")],
        None,
    );
    assert_eq!(bogus.status, 401);
}

#[test]
fn a_corrected_email_is_verified_again_and_moves_the_login() {
    let server = start();
    let alice = customer(&server, "alice@example.com");
    let bob = customer(&server, "bob@example.com");
    let before = alice.with_key(&server, "GET", "/v1/me", None).json();

    // Every bad input is refused and changes nothing.
    for (body, status, code) in [
        (r#"{"email":"not-an-address"}"#, 400, "invalid_email"),
        (r#"{"email":"a b@example.com"}"#, 400, "invalid_email"),
        (r#"{"email":5}"#, 400, "invalid_json"),
        (r#"{"email":null}"#, 400, "invalid_json"),
        (r#"{}"#, 400, "invalid_json"),
        (
            r#"{"email":"new@example.com","verified":true}"#,
            400,
            "invalid_json",
        ),
        (r#"{"email":"#, 400, "invalid_json"),
        (r#"["new@example.com"]"#, 400, "invalid_json"),
        (r#"{"email":"alice@example.com"}"#, 422, "email_unchanged"),
        (r#"{"email":"Bob@Example.com"}"#, 409, "email_taken"),
    ] {
        let answer = alice.with_session(&server, "PATCH", "/v1/me", Some(body));
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert_eq!(problem_code(&answer).as_deref(), Some(code), "{body}");
        assert!(
            !answer.body.contains("Bob@") && !answer.body.contains("bob@"),
            "no address echoed"
        );
    }
    assert_eq!(
        alice.with_key(&server, "GET", "/v1/me", None).json(),
        before
    );
    let anonymous = server.send(
        "PATCH",
        "/v1/me",
        &[],
        Some(r#"{"email":"new@example.com"}"#),
    );
    assert_eq!(anonymous.status, 401);

    // The correction: unverified until the mail to the new address is used.
    let corrected = alice.with_session(
        &server,
        "PATCH",
        "/v1/me",
        Some(r#"{"email":" Alice.New@Example.COM "}"#),
    );
    assert_eq!(corrected.status, 200, "{}", corrected.body);
    let corrected = corrected.json();
    assert_eq!(corrected["email"], "Alice.New@example.com");
    assert_eq!(corrected["verified"], false);
    assert!(corrected["verified_at"].is_null());
    assert_eq!(corrected["id"], before["id"]);
    let token = verification_token(&server, "Alice.New@example.com");
    let verified = server.send(
        "POST",
        "/v1/accounts/verify",
        &[],
        Some(&format!(r#"{{"token":"{token}"}}"#)),
    );
    assert_eq!(verified.status, 200, "{}", verified.body);
    let me = alice.with_key(&server, "GET", "/v1/me", None).json();
    assert_eq!(me["verified"], true);
    assert_eq!(me["email"], "Alice.New@example.com");

    // The new address logs in (in any case), the old one does not.
    let new_login = login(&server, "alice.new@example.com");
    assert_eq!(new_login.status, 201, "{}", new_login.body);
    assert_eq!(new_login.json()["account"], before["id"]);
    let old_login = login(&server, &alice.email);
    assert_eq!(old_login.status, 401, "{}", old_login.body);
    // The old address is free again; Bob's is untouched.
    let bob_me = bob.with_key(&server, "GET", "/v1/me", None).json();
    assert_eq!(bob_me["email"], "bob@example.com");
    assert_ne!(bob_me["id"], before["id"]);
    let moved = bob.with_session(
        &server,
        "PATCH",
        "/v1/me",
        Some(r#"{"email":"alice@example.com"}"#),
    );
    assert_eq!(moved.status, 200, "{}", moved.body);
}

#[test]
fn deletion_waits_for_active_orders_and_is_withdrawn_by_session_or_password() {
    let server = start();
    let alice = customer(&server, "alice@example.com");
    let bob = customer(&server, "bob@example.com");
    fund(&server, &alice, "10.00");

    // An active order blocks the request; once cancelled, it goes through.
    let active = order(&server, &alice);
    let active_id = active["id"].as_str().unwrap();
    let refused = alice.with_session(&server, "POST", "/v1/me/deletion", None);
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(problem_code(&refused).as_deref(), Some("active_orders"));
    // The answer names the order in the way.
    assert_eq!(
        refused.json()["active_orders"],
        serde_json::json!([active_id]),
        "{}",
        refused.body
    );
    assert!(refused.json()["detail"]
        .as_str()
        .unwrap()
        .contains(active_id));
    assert_eq!(
        alice.with_key(&server, "GET", "/v1/me", None).json()["status"],
        "active"
    );
    let cancelled = alice.with_key(
        &server,
        "POST",
        &format!("/v1/orders/{active_id}/cancel"),
        None,
    );
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);

    // Money on the wallet: asked without confirming its forfeit (no body, an
    // empty one, `{}`, false), the request is refused with the amount, and
    // nothing changes.
    for body in [
        None,
        Some("{}"),
        Some(r#"{"confirm_forfeit_balance":false}"#),
    ] {
        let refused = alice.with_session(&server, "POST", "/v1/me/deletion", body);
        assert_eq!(refused.status, 409, "{body:?}: {}", refused.body);
        assert_eq!(
            refused.header("content-type"),
            Some("application/problem+json")
        );
        let problem = refused.json();
        assert_eq!(problem["code"], "balance_not_forfeited", "{problem}");
        assert_eq!(problem["forfeit_balance"], "10.000000", "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("10.000000 USD"), "{detail}");
        assert!(
            detail.contains(r#"{"confirm_forfeit_balance": true}"#),
            "{detail}"
        );
    }
    for (body, what) in [
        (r#"{"confirm_forfeit_balance":"yes"}"#, "a string"),
        (
            r#"{"confirm_forfeit_balance":true,"x":1}"#,
            "an unknown field",
        ),
        ("[true]", "an array"),
    ] {
        let refused = alice.with_session(&server, "POST", "/v1/me/deletion", Some(body));
        assert_eq!(refused.status, 400, "{what}: {}", refused.body);
    }
    let me = alice.with_session(&server, "GET", "/v1/me", None).json();
    assert_eq!(me["status"], "active", "{me}");
    assert_eq!(
        alice.with_key(&server, "GET", "/v1/wallet", None).json()["available"],
        "10.000000"
    );

    // Confirmed: accepted, stating what moves to unclaimed balances at the
    // erasure.
    let confirmed = Some(r#"{"confirm_forfeit_balance":true}"#);
    let requested = alice.with_session(&server, "POST", "/v1/me/deletion", confirmed);
    assert_eq!(requested.status, 202, "{}", requested.body);
    let requested = requested.json();
    assert_eq!(requested["status"], "deletion_pending");
    let deletion = &requested["deletion"];
    assert_eq!(deletion["forfeit_balance"], "10.000000", "{deletion}");
    let window_days = days_since_epoch(deletion["erase_due_at"].as_str().unwrap())
        - days_since_epoch(deletion["requested_at"].as_str().unwrap());
    assert!((window_days - 30.0).abs() < 1e-6, "{deletion}");

    // Disabled at once: the key is dead everywhere, a new login is refused, the
    // session reaches only the deletion's own routes.
    for (method, path) in [
        ("GET", "/v1/me"),
        ("GET", "/v1/wallet"),
        ("GET", "/v1/me/export"),
        ("DELETE", "/v1/me/deletion"),
    ] {
        let answer = alice.with_key(&server, method, path, None);
        assert_eq!(answer.status, 401, "{method} {path} with the key");
        assert_eq!(
            problem_code(&answer).as_deref(),
            Some("account_deletion_pending"),
            "{method} {path} with the key: {}",
            answer.body
        );
    }
    let relogin = login(&server, &alice.email);
    assert_eq!(relogin.status, 403, "{}", relogin.body);
    assert_eq!(problem_code(&relogin).as_deref(), Some("account_disabled"));
    for (method, path, body) in [
        ("GET", "/v1/wallet", None),
        ("GET", "/v1/orders", None),
        (
            "POST",
            "/v1/orders",
            Some(r#"{"service":"tg","country":"DE"}"#),
        ),
        ("POST", "/v1/api-keys", None),
        ("PATCH", "/v1/me", Some(r#"{"email":"x@example.com"}"#)),
        ("PUT", "/v1/me/objection", Some(r#"{"object":true}"#)),
    ] {
        let answer = alice.with_session(&server, method, path, body);
        assert_eq!(answer.status, 401, "{method} {path} with the session");
        assert_eq!(
            problem_code(&answer).as_deref(),
            Some("account_deletion_pending"),
            "{method} {path} with the session: {}",
            answer.body
        );
    }
    let me = alice.with_session(&server, "GET", "/v1/me", None);
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["deletion"], *deletion);
    // Sent again, confirmed or not: refused, nothing changes.
    for body in [None, confirmed] {
        let again = alice.with_session(&server, "POST", "/v1/me/deletion", body);
        assert_eq!(
            problem_code(&again).as_deref(),
            Some("deletion_already_requested")
        );
    }
    assert_eq!(
        alice.with_session(&server, "GET", "/v1/me", None).json()["deletion"],
        *deletion
    );
    let export = alice.with_session(&server, "GET", "/v1/me/export", None);
    assert_eq!(export.status, 200, "{}", export.body);
    assert_eq!(export.json()["account"]["status"], "deletion_pending");

    // Withdrawn with the session: the key works again.
    let withdrawn = alice.with_session(&server, "DELETE", "/v1/me/deletion", None);
    assert_eq!(withdrawn.status, 200, "{}", withdrawn.body);
    assert_eq!(withdrawn.json()["status"], "active");
    assert!(withdrawn.json()["deletion"].is_null());
    assert_eq!(
        alice.with_key(&server, "GET", "/v1/wallet", None).status,
        200
    );
    let nothing_pending = alice.with_session(&server, "DELETE", "/v1/me/deletion", None);
    assert_eq!(
        problem_code(&nothing_pending).as_deref(),
        Some("no_deletion_pending")
    );
    // The route is a session's: a key is told so.
    let by_key = alice.with_key(&server, "DELETE", "/v1/me/deletion", None);
    assert_eq!(by_key.status, 403, "{}", by_key.body);
    assert_eq!(problem_code(&by_key).as_deref(), Some("session_required"));

    // Requested again, then the session ends: the password is the way back.
    let requested = alice.with_session(&server, "POST", "/v1/me/deletion", confirmed);
    assert_eq!(requested.status, 202, "{}", requested.body);
    let logout = alice.with_session(&server, "DELETE", "/v1/sessions", None);
    assert_eq!(logout.status, 204);
    let gone = alice.with_session(&server, "DELETE", "/v1/me/deletion", None);
    assert_eq!(gone.status, 401);
    let anonymous = server.send("DELETE", "/v1/me/deletion", &[], None);
    assert_eq!(anonymous.status, 401);
    for (body, status) in [
        (credentials(&alice.email, "not the password").as_str(), 401),
        (credentials("nobody@example.com", PASSWORD).as_str(), 401),
        (r#"{"email":"alice@example.com"}"#, 400),
        (r#"{"email":"alice@example.com","password":5}"#, 400),
        (
            r#"{"email":"alice@example.com","password":"x","now":1}"#,
            400,
        ),
        ("not json", 400),
        (
            r#"["alice@example.com","correct horse battery staple"]"#,
            400,
        ),
    ] {
        let answer = server.send("DELETE", "/v1/me/deletion", &[], Some(body));
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert!(!answer.body.contains(PASSWORD));
    }
    // Still pending after all of those.
    assert_eq!(login(&server, &alice.email).status, 403);
    // Another account's password withdraws nothing of Alice's.
    let bobs = server.send(
        "DELETE",
        "/v1/me/deletion",
        &[],
        Some(&credentials(&bob.email, PASSWORD)),
    );
    assert_eq!(
        problem_code(&bobs).as_deref(),
        Some("no_deletion_pending"),
        "{}",
        bobs.body
    );
    assert_eq!(login(&server, &alice.email).status, 403);
    let back = server.send(
        "DELETE",
        "/v1/me/deletion",
        &[],
        Some(&credentials(&alice.email, PASSWORD)),
    );
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.json()["status"], "active");
    let relogin = login(&server, &alice.email);
    assert_eq!(relogin.status, 201, "{}", relogin.body);
    assert_eq!(
        alice.with_key(&server, "GET", "/v1/me", None).json()["status"],
        "active"
    );
    assert_eq!(
        bob.with_key(&server, "GET", "/v1/me", None).json()["status"],
        "active"
    );
}

#[test]
fn the_objection_round_trips_and_bad_input_changes_nothing() {
    let server = start();
    let alice = customer(&server, "alice@example.com");
    let bob = customer(&server, "bob@example.com");

    let set = alice.with_key(
        &server,
        "PUT",
        "/v1/me/objection",
        Some(r#"{"object":true}"#),
    );
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.json()["objection"], true);
    assert_eq!(
        alice.with_session(&server, "GET", "/v1/me", None).json()["objection"],
        true
    );
    // Setting it as it is changes nothing and says so.
    let same = alice.with_key(
        &server,
        "PUT",
        "/v1/me/objection",
        Some(r#"{"object":true}"#),
    );
    assert_eq!(same.json()["objection"], true);
    // Bob's account is his own.
    assert_eq!(
        bob.with_key(&server, "GET", "/v1/me", None).json()["objection"],
        false
    );

    for body in [
        r#"{"object":"yes"}"#,
        r#"{"object":0}"#,
        r#"{"object":null}"#,
        r#"{}"#,
        r#"{"object":false,"scope":"all"}"#,
        r#"{"object":false"#,
        r#"false"#,
        r#"[true]"#,
    ] {
        let answer = alice.with_key(&server, "PUT", "/v1/me/objection", Some(body));
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
        assert_eq!(problem_code(&answer).as_deref(), Some("invalid_json"));
    }
    let no_body = alice.with_key(&server, "PUT", "/v1/me/objection", None);
    assert_eq!(no_body.status, 400, "{}", no_body.body);
    assert_eq!(
        alice.with_key(&server, "GET", "/v1/me", None).json()["objection"],
        true,
        "nothing changed"
    );
    let anonymous = server.send("PUT", "/v1/me/objection", &[], Some(r#"{"object":false}"#));
    assert_eq!(anonymous.status, 401);

    let lifted = alice.with_key(
        &server,
        "PUT",
        "/v1/me/objection",
        Some(r#"{"object":false}"#),
    );
    assert_eq!(lifted.status, 200, "{}", lifted.body);
    assert_eq!(lifted.json()["objection"], false);
    let export = alice.with_key(&server, "GET", "/v1/me/export", None).json();
    assert_eq!(export["account"]["objection"], false);

    // A method the route does not take is 405 naming the one it does;
    // unknown routes under /v1/me stay unknown.
    let get = alice.with_key(&server, "GET", "/v1/me/objection", None);
    assert_eq!((get.status, get.header("allow")), (405, Some("PUT")));
    assert_eq!(
        alice
            .with_key(&server, "GET", "/v1/me/nothing", None)
            .status,
        404
    );
}
