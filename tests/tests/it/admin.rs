//! The admin surface and the public availability route, against the real binary:
//! off without a token, 401 with a wrong one; projections, providers, retention,
//! legal holds and policy-change announcements with real data; one notice per
//! active user, none again after a crash and a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use nexus_tests::journey::{
    call, customer, fund, signed_in_customer, verification_token, with_session, PASSWORD,
};
use nexus_tests::{Response, Server};

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

fn env(with_token: bool) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_SIM_CODE_DELAY_MS", "300"),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_BCRYPT_COST", "12"),
    ];
    if with_token {
        env.push(("NEXUS_ADMIN_TOKEN", ADMIN_TOKEN));
    }
    env
}

fn admin(server: &Server, method: &str, path: &str, body: Option<&str>) -> Response {
    call(server, method, path, ADMIN_TOKEN, &[], body)
}

fn assert_problem(response: &Response, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.body);
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json"),
        "{}",
        response.body
    );
    assert_eq!(response.json()["code"], code, "{}", response.body);
}

/// Polls `check` until it returns something, or fails after `timeout`.
fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The policy notices in the outbox, as (file name, text).
fn policy_mails(data_dir: &Path) -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir(data_dir.join("outbox")) else {
        return Vec::new();
    };
    let mut mails: Vec<(String, String)> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.ends_with(".eml") && name.contains("-policy_change-"))
                .then(|| (name, std::fs::read_to_string(e.path()).unwrap_or_default()))
        })
        .collect();
    mails.sort();
    mails
}

/// How many notices went to `email`.
fn notices_to(mails: &[(String, String)], email: &str) -> usize {
    let header = format!("To: {email}");
    mails
        .iter()
        .filter(|(_, text)| text.lines().any(|l| l.trim() == header))
        .count()
}

/// Places an order, reads its code and completes it; returns the order id.
fn completed_order(server: &Server, key: &str) -> String {
    let order = call(
        server,
        "POST",
        "/v1/orders",
        key,
        &[],
        Some(r#"{"service":"tg","country":"DE","channel":"sms"}"#),
    );
    assert_eq!(order.status, 201, "{}", order.body);
    let id = order.json()["id"].as_str().unwrap().to_owned();
    let code = call(
        server,
        "GET",
        &format!("/v1/orders/{id}/code?wait=20"),
        key,
        &[],
        None,
    );
    assert!(code.json()["code"].is_string(), "{}", code.body);
    let done = call(
        server,
        "POST",
        &format!("/v1/orders/{id}/complete"),
        key,
        &[],
        None,
    );
    assert_eq!(done.json()["status"], "completed", "{}", done.body);
    id
}

/// An RFC 3339 time `days` from now.
fn days_from_now(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[test]
fn without_a_token_the_admin_routes_do_not_exist() {
    let server = Server::start_with(&env(false));
    for (method, path) in [
        ("GET", "/v1/admin/projections"),
        ("GET", "/v1/admin/providers"),
        ("GET", "/v1/admin/retention"),
        ("POST", "/v1/admin/retention/sweep"),
        ("GET", "/v1/admin/retention/verify"),
        ("GET", "/v1/admin/legal-holds"),
        ("POST", "/v1/admin/legal-holds"),
        ("GET", "/v1/admin/policy-changes"),
    ] {
        let response = admin(&server, method, path, Some("{}"));
        assert_problem(&response, 404, "not_found");
    }
    // The public availability route answers, with nothing settled yet.
    let availability = server.send("GET", "/v1/catalog/availability", &[], None);
    assert_eq!(availability.status, 200, "{}", availability.body);
    assert_eq!(availability.json()["items"], serde_json::json!([]));
}

#[test]
fn the_admin_surface_with_real_data() {
    let server = Server::start_with(&env(true));

    // Authentication: no token, a wrong one, a customer's key.
    let none = server.send("GET", "/v1/admin/projections", &[], None);
    assert_problem(&none, 401, "unauthorized");
    let wrong = call(
        &server,
        "GET",
        "/v1/admin/projections",
        "admin-token-for-tests-0123456780",
        &[],
        None,
    );
    assert_problem(&wrong, 401, "unauthorized");
    assert!(!wrong.body.contains(ADMIN_TOKEN));
    let alice = customer(&server, "alice@example.com");
    let as_customer = call(&server, "GET", "/v1/admin/providers", &alice, &[], None);
    assert_problem(&as_customer, 401, "unauthorized");

    // Some real orders.
    fund(&server, &alice, "10.00");
    let first_order = completed_order(&server, &alice);
    completed_order(&server, &alice);

    // Projections: every one running and caught up.
    let projections = eventually(
        "the projections to catch up",
        Duration::from_secs(20),
        || {
            let body = admin(&server, "GET", "/v1/admin/projections", None).json();
            let items = body["items"].as_array().unwrap().clone();
            let caught_up = !items.is_empty()
                && items
                    .iter()
                    .all(|p| p["state"] == "running" && p["lag_events"] == 0);
            caught_up.then_some(body)
        },
    );
    let names: Vec<&str> = projections["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"catalog") && names.contains(&"retention"),
        "{names:?}"
    );
    let head = projections["log_head"].as_u64().unwrap();
    assert!(projections["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["position"].as_u64() == Some(head) && p["failure"].is_null()));

    // Providers: the router saw the two buys.
    let providers = admin(&server, "GET", "/v1/admin/providers", None).json();
    let items = providers["items"].as_array().unwrap();
    assert!(items.len() >= 2, "{providers}");
    // The counters say since when they count (the server's start).
    let since = providers["counted_since"].as_str().unwrap();
    assert!(since.ends_with('Z') && since.len() == 20, "{providers}");
    let successes: u64 = items.iter().map(|p| p["successes"].as_u64().unwrap()).sum();
    assert_eq!(successes, 2, "{providers}");
    assert!(items.iter().all(|p| p["breaker"] == "closed"));

    // Availability, public: two orders of tg in DE, both with a code.
    let availability = server.send(
        "GET",
        "/v1/catalog/availability?service=tg&country=DE",
        &[],
        None,
    );
    assert_eq!(availability.status, 200, "{}", availability.body);
    let items = availability.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{}", availability.body);
    assert_eq!(items[0]["service"], "tg");
    assert_eq!(items[0]["country"], "DE");
    assert_eq!(items[0]["orders"], 2);
    assert_eq!(items[0]["success_rate_bp"], 10_000);
    assert!(items[0]["median_time_to_code_secs"].as_i64().unwrap() >= 0);
    let everything = server
        .send("GET", "/v1/catalog/availability?limit=1", &[], None)
        .json();
    assert_eq!(everything["items"].as_array().unwrap().len(), 1);
    let other = server
        .send("GET", "/v1/catalog/availability?service=wa", &[], None)
        .json();
    assert_eq!(other["items"], serde_json::json!([]));

    // Users for the announcement: verified, unverified, deletion pending.
    let registered = server.send(
        "POST",
        "/v1/accounts",
        &[],
        Some(&format!(
            r#"{{"email":"bob@example.com","password":"{PASSWORD}"}}"#
        )),
    );
    assert_eq!(registered.status, 202, "{}", registered.body);
    verification_token(&server, "bob@example.com");
    let carol = signed_in_customer(&server, "carol@example.com");
    let carol_id = call(&server, "GET", "/v1/me", &carol.key, &[], None).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deletion = with_session(&server, "POST", "/v1/me/deletion", &carol.session, None);
    assert_eq!(deletion.status, 202, "{}", deletion.body);
    let carol_subject = format!("account-{carol_id}");

    // Retention: nothing due now; Carol's account in 30 days.
    let retention = eventually("the retention schedule", Duration::from_secs(20), || {
        let path = format!("/v1/admin/retention?until={}", days_from_now(31));
        let body = admin(&server, "GET", &path, None).json();
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["subject"] == carol_subject.as_str())
            .then_some(body)
    });
    assert_eq!(retention["due_now"], 0, "{retention}");
    let entry = &retention["items"][0];
    assert_eq!(entry["kind"], "account");
    assert_eq!(entry["held"], false);
    let now = admin(&server, "GET", "/v1/admin/retention", None).json();
    assert_eq!(now["items"], serde_json::json!([]), "{now}");
    let bad = admin(&server, "GET", "/v1/admin/retention?until=tomorrow", None);
    assert_problem(&bad, 400, "invalid_time");
    // A sweep now erases nothing (Carol is due in 30 days), and the proof holds.
    let swept = admin(&server, "POST", "/v1/admin/retention/sweep", None);
    assert_eq!(swept.status, 200, "{}", swept.body);
    assert_eq!(swept.json()["examined"], 0, "{}", swept.body);
    assert_eq!(swept.json()["accounts_erased"], 0, "{}", swept.body);
    let proof = admin(&server, "GET", "/v1/admin/retention/verify", None);
    assert_eq!(proof.status, 200, "{}", proof.body);
    assert_eq!(proof.json()["ok"], true, "{}", proof.body);
    assert_eq!(proof.json()["erasures_recorded"], 0, "{}", proof.body);
    assert!(
        proof.json()["events_checked"].as_u64().unwrap() > 10,
        "{}",
        proof.body
    );

    // Legal holds: on an order, and on Carol's account (which the retention
    // view then shows as held).
    let order_subject = format!("order-{first_order}");
    let placed = admin(
        &server,
        "POST",
        "/v1/admin/legal-holds",
        Some(&format!(
            r#"{{"subject":"{order_subject}","reference":"LIT-2026/0042"}}"#
        )),
    );
    assert_eq!(placed.status, 201, "{}", placed.body);
    assert_eq!(placed.json()["subject"], order_subject.as_str());
    assert_eq!(placed.json()["reason"], "litigation");
    let twice = admin(
        &server,
        "POST",
        "/v1/admin/legal-holds",
        Some(&format!(
            r#"{{"subject":"{order_subject}","reference":"LIT-2026/0042"}}"#
        )),
    );
    assert_problem(&twice, 409, "already_held");
    let free_text = admin(
        &server,
        "POST",
        "/v1/admin/legal-holds",
        Some(&format!(
            r#"{{"subject":"{carol_subject}","reference":"complaint by Carol"}}"#
        )),
    );
    assert_problem(&free_text, 400, "invalid_reference");
    let not_a_subject = admin(
        &server,
        "POST",
        "/v1/admin/legal-holds",
        Some(r#"{"subject":"wallet-1","reference":"X-1"}"#),
    );
    assert_problem(&not_a_subject, 400, "invalid_subject");
    let on_carol = admin(
        &server,
        "POST",
        "/v1/admin/legal-holds",
        Some(&format!(
            r#"{{"subject":"{carol_subject}","reference":"REG-7","reason":"regulator"}}"#
        )),
    );
    assert_eq!(on_carol.status, 201, "{}", on_carol.body);
    let holds = admin(&server, "GET", "/v1/admin/legal-holds", None).json();
    let held: Vec<&str> = holds["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["subject"].as_str().unwrap())
        .collect();
    assert_eq!(held.len(), 2, "{holds}");
    assert!(held.contains(&order_subject.as_str()) && held.contains(&carol_subject.as_str()));
    let path = format!("/v1/admin/retention?until={}", days_from_now(31));
    let retention = admin(&server, "GET", &path, None).json();
    // Carol's deletion is held; Bob, never verified, lapses tomorrow unheld.
    let entry = |subject: &str| {
        retention["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["subject"] == subject)
            .cloned()
            .unwrap_or_else(|| panic!("{subject} on the schedule: {retention}"))
    };
    assert_eq!(entry(&carol_subject)["held"], true, "{retention}");
    let unheld_other = retention["items"].as_array().unwrap().iter().any(|i| {
        i["kind"] == "account" && i["subject"] != carol_subject.as_str() && i["held"] == false
    });
    assert!(unheld_other, "{retention}");
    let released = admin(
        &server,
        "DELETE",
        &format!("/v1/admin/legal-holds/{order_subject}"),
        None,
    );
    assert_eq!(released.status, 204, "{}", released.body);
    let again = admin(
        &server,
        "DELETE",
        &format!("/v1/admin/legal-holds/{order_subject}"),
        None,
    );
    assert_problem(&again, 404, "not_found");
    let holds = admin(&server, "GET", "/v1/admin/legal-holds", None).json();
    assert_eq!(holds["items"].as_array().unwrap().len(), 1, "{holds}");
    assert_eq!(holds["items"][0]["subject"], carol_subject.as_str());

    // Announcements: 13 days is too short; 15 days is announced, once per key.
    let announcement = |days: i64| {
        format!(
            r#"{{"title":"New retention periods","summary":"Anonymous order data is kept 60 days.","effective_at":"{}","url":"https://nexus.example/privacy"}}"#,
            days_from_now(days)
        )
    };
    let too_soon = admin(
        &server,
        "POST",
        "/v1/admin/policy-changes",
        Some(&announcement(13)),
    );
    assert_problem(&too_soon, 422, "notice_too_short");
    let body = announcement(15);
    let announced = call(
        &server,
        "POST",
        "/v1/admin/policy-changes",
        ADMIN_TOKEN,
        &[("Idempotency-Key", "policy-2026-12")],
        Some(&body),
    );
    assert_eq!(announced.status, 201, "{}", announced.body);
    let id = announced.json()["id"].as_str().unwrap().to_owned();
    let repeat = call(
        &server,
        "POST",
        "/v1/admin/policy-changes",
        ADMIN_TOKEN,
        &[("Idempotency-Key", "policy-2026-12")],
        Some(&body),
    );
    assert_eq!(repeat.status, 200, "{}", repeat.body);
    assert_eq!(repeat.json()["id"], id.as_str());
    let reused = call(
        &server,
        "POST",
        "/v1/admin/policy-changes",
        ADMIN_TOKEN,
        &[("Idempotency-Key", "policy-2026-12")],
        Some(&announcement(16)),
    );
    assert_problem(&reused, 422, "idempotency_key_reused");
    let listed = admin(&server, "GET", "/v1/admin/policy-changes", None).json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["items"][0]["id"], id.as_str());

    // One notice each to Alice (verified) and Bob (unverified); none to Carol
    // (deletion pending).
    let mails = eventually("two policy notices", Duration::from_secs(20), || {
        let mails = policy_mails(server.data_dir.path());
        (mails.len() >= 2).then_some(mails)
    });
    std::thread::sleep(Duration::from_millis(1_500));
    let mails_now = policy_mails(server.data_dir.path());
    assert_eq!(mails_now, mails, "no more notices come");
    assert_eq!(mails.len(), 2);
    assert_eq!(notices_to(&mails, "alice@example.com"), 1);
    assert_eq!(notices_to(&mails, "bob@example.com"), 1);
    assert_eq!(notices_to(&mails, "carol@example.com"), 0);
    assert!(mails[0].1.contains("New retention periods"));

    // A crash and a restart: nobody is mailed again.
    let server = server.restart_with(&env(true));
    eventually(
        "the restarted server to be ready",
        Duration::from_secs(30),
        || (server.send("GET", "/ready", &[], None).status == 200).then_some(()),
    );
    // A user who registers after the announcement is not in it; their
    // verification mail shows the restarted server's mail is flowing.
    let late = server.send(
        "POST",
        "/v1/accounts",
        &[],
        Some(&format!(
            r#"{{"email":"erin@example.com","password":"{PASSWORD}"}}"#
        )),
    );
    assert_eq!(late.status, 202, "{}", late.body);
    verification_token(&server, "erin@example.com");
    std::thread::sleep(Duration::from_millis(1_500));
    let after_restart = policy_mails(server.data_dir.path());
    assert_eq!(
        after_restart, mails,
        "no notice sent twice, none to a later user"
    );
    let listed = admin(&server, "GET", "/v1/admin/policy-changes", None).json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    // The hold survives the restart (it is in the log).
    let holds = admin(&server, "GET", "/v1/admin/legal-holds", None).json();
    assert_eq!(holds["items"][0]["subject"], carol_subject.as_str());
}
