//! What an API key can and cannot do: never the changes that could take an
//! account over (those need a session whose password was just entered), only
//! what its scope covers, and only from the addresses it allows.

use nexus_tests::journey::{call, signed_in_customer, with_session, SignedIn, PASSWORD};
use nexus_tests::{Response, Server};

fn start_with(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_SIM_CODE_DELAY_MS", "300"),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_BCRYPT_COST", "12"),
    ];
    env.extend_from_slice(extra);
    Server::start_with(&env)
}

fn code(answer: &Response) -> String {
    answer.json()["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A new key of `owner`'s, made with the session and `body`.
fn new_key(server: &Server, owner: &SignedIn, body: &str) -> String {
    let made = with_session(server, "POST", "/v1/api-keys", &owner.session, Some(body));
    assert_eq!(made.status, 201, "{body}: {}", made.body);
    made.json()["key"].as_str().unwrap().to_owned()
}

fn compat(server: &Server, key: &str, action: &str, extra: &[(&str, &str)]) -> Response {
    let path = format!("/stubs/handler_api.php?api_key={key}&action={action}");
    server.send("GET", &path, extra, None)
}

/// The attack of the report: with nothing but Bob's key (of the widest
/// scope), none of the account's credentials, addresses or keys change.
#[test]
fn a_stolen_key_cannot_take_the_account_over() {
    let server = start_with(&[]);
    let bob = signed_in_customer(&server, "bob@example.com");
    let key = &bob.key;
    let before = call(&server, "GET", "/v1/me", key, &[], None).json();
    let key_id = call(&server, "GET", "/v1/api-keys", key, &[], None).json()["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoke = format!("/v1/api-keys/{key_id}");
    let password =
        format!(r#"{{"old_password":"{PASSWORD}","new_password":"mallory's password"}}"#);
    for (method, path, body) in [
        (
            "PATCH",
            "/v1/me",
            Some(r#"{"email":"mallory@example.com"}"#),
        ),
        ("POST", "/v1/me/deletion", None),
        ("POST", "/v1/me/password", Some(password.as_str())),
        (
            "PUT",
            "/v1/me/webhook",
            Some(r#"{"url":"https://mallory.example/h"}"#),
        ),
        ("DELETE", "/v1/me/webhook", None),
        ("POST", "/v1/api-keys", Some(r#"{"scope":"full"}"#)),
        ("DELETE", revoke.as_str(), None),
    ] {
        let refused = call(&server, method, path, key, &[], body);
        assert_eq!(refused.status, 403, "{method} {path}: {}", refused.body);
        assert_eq!(code(&refused), "session_required", "{method} {path}");
    }
    // Nothing changed: the same address, active, no webhook, one key, and the
    // password still signs in.
    assert_eq!(
        call(&server, "GET", "/v1/me", key, &[], None).json(),
        before
    );
    assert_eq!(
        call(&server, "GET", "/v1/me/webhook", key, &[], None).status,
        404
    );
    let keys = call(&server, "GET", "/v1/api-keys", key, &[], None).json();
    assert_eq!(keys["items"].as_array().map(Vec::len), Some(1));
    let login = server.send(
        "POST",
        "/v1/sessions",
        &[],
        Some(&format!(
            r#"{{"email":"bob@example.com","password":"{PASSWORD}"}}"#
        )),
    );
    assert_eq!(login.status, 201, "{}", login.body);

    // The owner's fresh session makes the same changes.
    let webhook = with_session(
        &server,
        "PUT",
        "/v1/me/webhook",
        &bob.session,
        Some(r#"{"url":"https://bob.example/h"}"#),
    );
    assert_eq!(webhook.status, 200, "{}", webhook.body);
}

/// Re-entering the password on a live session: a wrong one is refused, the
/// right one accepted; a key cannot do it.
#[test]
fn a_session_confirms_its_password_and_a_key_cannot() {
    let server = start_with(&[]);
    let alice = signed_in_customer(&server, "alice@example.com");
    let confirm = |session: &str, password: &str| {
        with_session(
            &server,
            "POST",
            "/v1/sessions/confirm",
            session,
            Some(&format!(r#"{{"password":"{password}"}}"#)),
        )
    };
    let wrong = confirm(&alice.session, "not the password");
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(code(&wrong), "invalid_credentials");
    let right = confirm(&alice.session, PASSWORD);
    assert_eq!(right.status, 204, "{}", right.body);
    let by_key = call(
        &server,
        "POST",
        "/v1/sessions/confirm",
        &alice.key,
        &[],
        Some(&format!(r#"{{"password":"{PASSWORD}"}}"#)),
    );
    assert_eq!(by_key.status, 403, "{}", by_key.body);
    assert_eq!(code(&by_key), "session_required");
    let nobody = confirm("nexus_session=0000", PASSWORD);
    assert_eq!(nobody.status, 401, "{}", nobody.body);
}

/// Each scope against a route of each class, on `/v1` and on the compatible
/// endpoint; the list shows each key's scope, label and allow-list.
#[test]
fn a_key_reaches_what_its_scope_covers() {
    let server = start_with(&[]);
    let carol = signed_in_customer(&server, "carol@example.com");
    let read = new_key(&server, &carol, r#"{"scope":"read","label":"dashboard"}"#);
    let orders = new_key(&server, &carol, "");
    let full = &carol.key;
    let deposit = Some(r#"{"amount":"5.00"}"#);
    let order = Some(r#"{"service":"tg","country":"DE"}"#);
    let status = |key: &str, method: &str, path: &str, body: Option<&str>| {
        let extra: &[(&str, &str)] = if path == "/v1/orders" && method == "POST" {
            &[("Idempotency-Key", "scopes-1")]
        } else {
            &[]
        };
        let answer = call(&server, method, path, key, extra, body);
        (answer.status, code(&answer))
    };
    let scope_refused = (403, "insufficient_scope".to_owned());

    // read: orders, wallet, deposits; nothing that buys, pays or shows the account.
    for path in [
        "/v1/orders",
        "/v1/wallet",
        "/v1/wallet/entries",
        "/v1/deposits",
    ] {
        assert_eq!(status(&read, "GET", path, None).0, 200, "{path}");
    }
    assert_eq!(status(&read, "POST", "/v1/orders", order), scope_refused);
    assert_eq!(
        status(&read, "POST", "/v1/deposits", deposit),
        scope_refused
    );
    assert_eq!(status(&read, "GET", "/v1/me", None), scope_refused);
    // orders (the default): buys (refused for want of money, not of scope)
    // and asks for deposits; not the account.
    assert_eq!(
        status(&orders, "POST", "/v1/orders", order),
        (402, "insufficient_funds".to_owned())
    );
    assert_eq!(status(&orders, "POST", "/v1/deposits", deposit).0, 201);
    assert_eq!(status(&orders, "GET", "/v1/me", None), scope_refused);
    assert_eq!(status(&orders, "GET", "/v1/api-keys", None), scope_refused);
    // full: the account too.
    assert_eq!(status(full, "GET", "/v1/me", None).0, 200);
    assert_eq!(status(full, "GET", "/v1/me/export", None).0, 200);

    // The compatible endpoint: reading needs read, buying orders.
    let balance = compat(&server, &read, "getBalance", &[]);
    assert!(
        balance.body.starts_with("ACCESS_BALANCE:"),
        "{}",
        balance.body
    );
    let buy = "getNumber&service=tg&country=43";
    assert_eq!(compat(&server, &read, buy, &[]).body, "BAD_KEY");
    assert_eq!(compat(&server, &orders, buy, &[]).body, "NO_BALANCE");

    let listed = status(full, "GET", "/v1/api-keys", None);
    assert_eq!(listed.0, 200);
    let keys = call(&server, "GET", "/v1/api-keys", full, &[], None).json();
    let items = keys["items"].as_array().unwrap();
    let scopes: Vec<&str> = items.iter().map(|k| k["scope"].as_str().unwrap()).collect();
    assert_eq!(scopes, ["orders", "read", "full"], "newest first");
    assert_eq!(items[1]["label"], "dashboard");
    assert!(items[0]["label"].is_null());
    assert_eq!(items[0]["allowed_ips"], serde_json::json!([]));
}

#[test]
fn bad_key_settings_are_refused_and_make_no_key() {
    let server = start_with(&[]);
    let dave = signed_in_customer(&server, "dave@example.com");
    let too_many: Vec<String> = (0..17).map(|i| format!("\"10.0.0.{i}\"")).collect();
    let too_many = format!(r#"{{"allowed_ips":[{}]}}"#, too_many.join(","));
    let long_label = format!(r#"{{"label":"{}"}}"#, "x".repeat(65));
    for (body, expected) in [
        (r#"{"scope":"admin"}"#, "invalid_json"),
        (r#"{"scope":"read","extra":1}"#, "invalid_json"),
        (long_label.as_str(), "invalid_label"),
        (r#"{"label":"tab\there"}"#, "invalid_label"),
        (r#"{"allowed_ips":["10.0.0.0/33"]}"#, "invalid_allowed_ips"),
        (r#"{"allowed_ips":["example.com"]}"#, "invalid_allowed_ips"),
        (too_many.as_str(), "invalid_allowed_ips"),
    ] {
        let answer = with_session(&server, "POST", "/v1/api-keys", &dave.session, Some(body));
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
        assert_eq!(code(&answer), expected, "{body}");
    }
    let keys = call(&server, "GET", "/v1/api-keys", &dave.key, &[], None).json();
    assert_eq!(keys["items"].as_array().map(Vec::len), Some(1));
}

/// A key with an allow-list works from its addresses only, on `/v1` and the
/// compatible endpoint; behind a trusted proxy, the forwarded client counts.
#[test]
fn a_key_is_accepted_only_from_its_allowed_addresses() {
    let server = start_with(&[("NEXUS_TRUSTED_PROXIES", "127.0.0.1/32")]);
    let erin = signed_in_customer(&server, "erin@example.com");
    let elsewhere = new_key(
        &server,
        &erin,
        r#"{"scope":"read","allowed_ips":["203.0.113.0/24","2001:db8::/32"]}"#,
    );
    let loopback = new_key(
        &server,
        &erin,
        r#"{"scope":"read","allowed_ips":["127.0.0.1"]}"#,
    );

    let wallet =
        |key: &str, extra: &[(&str, &str)]| call(&server, "GET", "/v1/wallet", key, extra, None);
    let refused = wallet(&elsewhere, &[]);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(code(&refused), "ip_not_allowed");
    assert_eq!(
        compat(&server, &elsewhere, "getBalance", &[]).body,
        "BAD_KEY"
    );
    assert_eq!(wallet(&loopback, &[]).status, 200);
    assert!(compat(&server, &loopback, "getBalance", &[])
        .body
        .starts_with("ACCESS_BALANCE:"));

    // Behind the trusted proxy (the loopback peer), the client it names.
    let from = |client: &'static str| [("X-Forwarded-For", client)];
    assert_eq!(wallet(&elsewhere, &from("203.0.113.7")).status, 200);
    assert_eq!(wallet(&elsewhere, &from("2001:db8::5")).status, 200);
    assert_eq!(wallet(&elsewhere, &from("198.51.100.1")).status, 403);
    assert_eq!(wallet(&loopback, &from("203.0.113.7")).status, 403);
    assert!(
        compat(&server, &elsewhere, "getBalance", &from("203.0.113.7"))
            .body
            .starts_with("ACCESS_BALANCE:")
    );
}
