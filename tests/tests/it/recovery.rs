//! Account recovery over HTTP against the real binary: a forgotten password,
//! the undo of an e-mail change by the old address, and registration that does
//! not tell who has an account. Mail is read from the outbox.

use std::time::{Duration, Instant};

use nexus_tests::journey::{
    customer, mailed_token, outbox_mails, signed_in_customer, with_session, PASSWORD,
};
use nexus_tests::{Response, Server};

const NEW_PASSWORD: &str = "a brand new passphrase";

/// The embedded default, with room in the sign-in budget for every step here.
fn start() -> Server {
    Server::start_with(&[
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_BCRYPT_COST", "12"),
        ("NEXUS_RATE_AUTH_PER_MIN", "100"),
    ])
}

fn credentials(email: &str, password: &str) -> String {
    format!(r#"{{"email":"{email}","password":"{password}"}}"#)
}

/// Signs in; the `name=value` of the session cookie.
fn session(server: &Server, email: &str, password: &str) -> String {
    let login = server.send(
        "POST",
        "/v1/sessions",
        &[],
        Some(&credentials(email, password)),
    );
    assert_eq!(login.status, 201, "{}", login.body);
    let cookie = login.header("set-cookie").expect("a session cookie");
    cookie.split(';').next().unwrap().to_owned()
}

fn me_with(server: &Server, session: &str) -> Response {
    server.send("GET", "/v1/me", &[("Cookie", session)], None)
}

/// The header names of an answer, without those that change by the moment.
fn header_names(answer: &Response) -> Vec<String> {
    let mut names: Vec<String> = answer
        .headers
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| k != "date")
        .collect();
    names.sort();
    names
}

fn token_body(token: &str, password: &str) -> String {
    format!(r#"{{"token":"{token}","new_password":"{password}"}}"#)
}

#[test]
fn a_forgotten_password_is_reset_by_the_mailed_token_and_every_session_ends() {
    let server = start();
    customer(&server, "ruth@example.com");
    let old_session = session(&server, "ruth@example.com", PASSWORD);
    assert_eq!(me_with(&server, &old_session).status, 200);

    // An unknown address and a known one: the same answer, byte for byte.
    let unknown = server.send(
        "POST",
        "/v1/password-resets",
        &[],
        Some(r#"{"email":"nobody-here@example.com"}"#),
    );
    let known = server.send(
        "POST",
        "/v1/password-resets",
        &[],
        Some(r#"{"email":"Ruth@Example.com"}"#),
    );
    assert_eq!(unknown.status, 202, "{}", unknown.body);
    assert_eq!(known.status, 202, "{}", known.body);
    assert_eq!(unknown.body, known.body);
    assert_eq!(header_names(&unknown), header_names(&known));

    let token = mailed_token(&server, "ruth@example.com", "password-reset");
    assert!(
        !outbox_mails(&server)
            .iter()
            .any(|m| m.contains("nobody-here@example.com")),
        "no mail for an address without an account"
    );
    let short = server.send(
        "POST",
        "/v1/password-resets/confirm",
        &[],
        Some(&token_body(&token, "short")),
    );
    assert_eq!(short.status, 400, "{}", short.body);
    let reset = server.send(
        "POST",
        "/v1/password-resets/confirm",
        &[],
        Some(&token_body(&token, NEW_PASSWORD)),
    );
    assert_eq!(reset.status, 204, "{}", reset.body);

    assert_eq!(
        me_with(&server, &old_session).status,
        401,
        "the session ended"
    );
    let old = server.send(
        "POST",
        "/v1/sessions",
        &[],
        Some(&credentials("ruth@example.com", PASSWORD)),
    );
    assert_eq!(old.status, 401, "{}", old.body);
    let new_session = session(&server, "ruth@example.com", NEW_PASSWORD);
    assert_eq!(me_with(&server, &new_session).status, 200);

    let again = server.send(
        "POST",
        "/v1/password-resets/confirm",
        &[],
        Some(&token_body(&token, "yet another passphrase")),
    );
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(
        again.json()["code"],
        "recovery_token_used",
        "{}",
        again.body
    );
    let made_up = server.send(
        "POST",
        "/v1/password-resets/confirm",
        &[],
        Some(&token_body("not-a-token", NEW_PASSWORD)),
    );
    assert_eq!(made_up.status, 400, "{}", made_up.body);
    assert_eq!(made_up.json()["code"], "recovery_token_invalid");
}

#[test]
fn registering_a_taken_address_answers_like_a_new_one_and_tells_the_holder() {
    let server = start();
    customer(&server, "sam@example.com");

    let fresh = server.send(
        "POST",
        "/v1/accounts",
        &[],
        Some(&credentials("someone-new@example.com", PASSWORD)),
    );
    let taken = server.send(
        "POST",
        "/v1/accounts",
        &[],
        Some(&credentials("SAM@example.com", "an attacker's passphrase")),
    );
    assert_eq!(fresh.status, 202, "{}", fresh.body);
    assert_eq!(taken.status, 202, "{}", taken.body);
    assert_eq!(fresh.body, taken.body, "the same bytes");
    assert_eq!(header_names(&fresh), header_names(&taken));
    assert_eq!(taken.header("location"), None);

    // The holder is told; nothing was created for the attacker.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !outbox_mails(&server)
        .iter()
        .any(|m| m.contains("sam@example.com") && m.contains("someone tried to register"))
    {
        assert!(Instant::now() < deadline, "no notice to the holder");
        std::thread::sleep(Duration::from_millis(100));
    }
    let attacker = server.send(
        "POST",
        "/v1/sessions",
        &[],
        Some(&credentials("sam@example.com", "an attacker's passphrase")),
    );
    assert_eq!(attacker.status, 401, "{}", attacker.body);
    session(&server, "sam@example.com", PASSWORD);
}

#[test]
fn an_email_change_tells_the_old_address_which_can_undo_it() {
    let server = start();
    customer(&server, "tess@old.example");
    let taken_over = session(&server, "tess@old.example", PASSWORD);
    let changed = server.send(
        "PATCH",
        "/v1/me",
        &[("Cookie", &taken_over)],
        Some(r#"{"email":"thief@evil.example"}"#),
    );
    assert_eq!(changed.status, 200, "{}", changed.body);

    let token = mailed_token(&server, "tess@old.example", "email-undo");
    let undone = server.send(
        "POST",
        "/v1/email-changes/undo",
        &[],
        Some(&token_body(&token, NEW_PASSWORD)),
    );
    assert_eq!(undone.status, 204, "{}", undone.body);
    assert_eq!(
        me_with(&server, &taken_over).status,
        401,
        "the session ended"
    );

    let back = session(&server, "tess@old.example", NEW_PASSWORD);
    let me = me_with(&server, &back).json();
    assert_eq!(me["email"], "tess@old.example");
    assert_eq!(me["verified"], true);
    let thief = server.send(
        "POST",
        "/v1/sessions",
        &[],
        Some(&credentials("thief@evil.example", PASSWORD)),
    );
    assert_eq!(thief.status, 401, "{}", thief.body);
    let again = server.send(
        "POST",
        "/v1/email-changes/undo",
        &[],
        Some(&token_body(&token, "yet another passphrase")),
    );
    assert_eq!(again.status, 409, "{}", again.body);
}

#[test]
fn changing_the_email_pays_from_the_sign_in_budget() {
    let server = Server::start_with(&[
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_BCRYPT_COST", "12"),
        ("NEXUS_RATE_AUTH_PER_MIN", "4"),
    ]);
    // signed_in_customer() spends three of the IP's four (register, verify,
    // log in); an e-mail change takes a fresh session.
    let alice = signed_in_customer(&server, "uma@example.com");
    let change = |email: &str| {
        let body = format!(r#"{{"email":"{email}"}}"#);
        with_session(&server, "PATCH", "/v1/me", &alice.session, Some(&body))
    };
    let first = change("uma@new.example");
    assert_eq!(first.status, 200, "{}", first.body);
    let second = change("uma@third.example");
    assert_eq!(second.status, 429, "{}", second.body);
    assert_eq!(second.json()["code"], "rate_limited");
}

/// Given an account whose address is not verified yet, signed in on a fresh
/// session: it cannot open an invoice, order or set a webhook (403
/// `email_not_verified`, nothing recorded); once the mailed link is used, it
/// can.
#[test]
fn an_unverified_account_cannot_deposit_order_or_set_a_webhook() {
    let server = start();
    let email = "unverified@example.com";
    let created = server.send(
        "POST",
        "/v1/accounts",
        &[],
        Some(&credentials(email, PASSWORD)),
    );
    assert_eq!(created.status, 202, "{}", created.body);
    let cookie = session(&server, email, PASSWORD);
    let attempts = [
        ("POST", "/v1/deposits", r#"{"amount":"5.00"}"#),
        (
            "POST",
            "/v1/orders",
            r#"{"service":"tg","country":"GB","channel":"sms"}"#,
        ),
        (
            "PUT",
            "/v1/me/webhook",
            r#"{"url":"https://hooks.example.com/n"}"#,
        ),
    ];
    for (method, path, body) in attempts {
        let refused = with_session(&server, method, path, &cookie, Some(body));
        assert_eq!(refused.status, 403, "{path}: {}", refused.body);
        assert_eq!(refused.json()["code"], "email_not_verified", "{path}");
    }
    let orders = with_session(&server, "GET", "/v1/orders", &cookie, None);
    assert_eq!(
        orders.json()["items"],
        serde_json::json!([]),
        "{}",
        orders.body
    );

    let token = nexus_tests::journey::verification_token(&server, email);
    let verified = server.send(
        "POST",
        "/v1/accounts/verify",
        &[],
        Some(&format!(r#"{{"token":"{token}"}}"#)),
    );
    assert_eq!(verified.status, 200, "{}", verified.body);
    let (method, path, body) = attempts[0];
    let invoice = with_session(&server, method, path, &cookie, Some(body));
    assert_eq!(invoice.status, 201, "{}", invoice.body);
    let (method, path, body) = attempts[2];
    let hook = with_session(&server, method, path, &cookie, Some(body));
    assert_eq!(hook.status, 200, "{}", hook.body);
}

#[test]
fn a_verification_mail_asked_for_again_answers_alike_and_waits_five_minutes() {
    let server = start();
    let email = "lost-mail@example.com";
    let registered = server.send(
        "POST",
        "/v1/accounts",
        &[],
        Some(&credentials(email, PASSWORD)),
    );
    assert_eq!(registered.status, 202, "{}", registered.body);
    let token = mailed_token(&server, email, "verify");
    let mails_to = |to: &str| {
        outbox_mails(&server)
            .into_iter()
            .filter(|m| m.contains(to))
            .count()
    };
    // Asked for again, for the unverified address and for one nobody has: the
    // same answer, so it tells nobody which addresses have accounts.
    let body = |to: &str| format!(r#"{{"email":"{to}"}}"#);
    let known = server.send("POST", "/v1/verification-mails", &[], Some(&body(email)));
    let unknown = server.send(
        "POST",
        "/v1/verification-mails",
        &[],
        Some(&body("nobody@example.com")),
    );
    assert_eq!(known.status, 202, "{}", known.body);
    assert_eq!((unknown.status, &unknown.body), (known.status, &known.body));
    assert_eq!(header_names(&unknown), header_names(&known));
    // The registration's mail went moments ago: no second one yet (a mail
    // bomb gets one every five minutes at most), and its link still works.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(mails_to(email), 1, "one mail within five minutes");
    let verified = server.send(
        "POST",
        "/v1/accounts/verify",
        &[],
        Some(&format!(r#"{{"token":"{token}"}}"#)),
    );
    assert_eq!(verified.status, 200, "{}", verified.body);
    // Bad input is refused, as everywhere.
    let bad = server.send(
        "POST",
        "/v1/verification-mails",
        &[],
        Some(r#"{"email":"nope"}"#),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.json()["code"], "invalid_email");
}
