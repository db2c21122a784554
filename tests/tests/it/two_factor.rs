//! Two-factor authentication through the real server: enrolment from a
//! session, sign-in with and without a code, replay, recovery codes, turning
//! it off, and wrong codes paying the sign-in budget. The test computes its
//! codes from the secret in the enrolment's URI with its own clock and its own
//! HOTP (RFC 4226) over HMAC-SHA-1.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use nexus_tests::journey::{customer, PASSWORD};
use nexus_tests::{Response, Server};
use serde_json::{json, Value};

use crate::openapi::check_answer;

/// RFC 4648 base32, no padding.
fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut out, mut buffer, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == c).expect("base32") as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

/// The secret in `otpauth://totp/…?secret=…&…`.
fn secret_of(uri: &str) -> Vec<u8> {
    let query = uri.split_once('?').expect("a query").1;
    let secret = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("secret="))
        .expect("secret=");
    base32_decode(secret)
}

/// The 6-digit code of the 30-second step `offset` steps from now.
fn code(key: &[u8], offset: i64) -> String {
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let step = (now_s / 30 + offset) as u64;
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(&step.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let at = usize::from(hash[19] & 0x0f);
    let word = u32::from_be_bytes(hash[at..at + 4].try_into().unwrap()) & 0x7fff_ffff;
    format!("{:06}", word % 1_000_000)
}

fn sign_in(server: &Server, email: &str, password: &str, extra: Value) -> Response {
    let mut body = json!({ "email": email, "password": password });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    server.send("POST", "/v1/sessions", &[], Some(&body.to_string()))
}

fn session_of(answer: &Response) -> String {
    assert_eq!(answer.status, 201, "{}", answer.body);
    let cookie = answer.header("set-cookie").expect("a session cookie");
    cookie.split(';').next().unwrap().to_owned()
}

#[track_caller]
fn assert_problem(answer: &Response, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.json()["code"], code, "{}", answer.body);
}

/// Enrols the account of `session`: answers the secret from the URI and the
/// recovery codes.
fn enrol(server: &Server, document: &Value, session: &str) -> (Vec<u8>, Vec<String>) {
    let started = server.send("POST", "/v1/me/two-factor", &[("cookie", session)], None);
    assert_eq!(started.status, 201, "{}", started.body);
    check_answer(document, "post", "/v1/me/two-factor", &started);
    assert_eq!(started.header("cache-control"), Some("no-store"));
    let uri = started.json()["otpauth_uri"].as_str().unwrap().to_owned();
    assert!(uri.starts_with("otpauth://totp/Nexus:"), "{uri}");
    assert!(uri.contains("&issuer=Nexus"), "{uri}");
    let key = secret_of(&uri);
    assert_eq!(key.len(), 20);
    assert_eq!(
        key,
        base32_decode(started.json()["secret"].as_str().unwrap())
    );

    let confirm = |code: &str| {
        let body = json!({ "code": code }).to_string();
        server.send(
            "POST",
            "/v1/me/two-factor/confirm",
            &[("cookie", session)],
            Some(&body),
        )
    };
    let wrong = confirm(if code(&key, 0) == "000000" {
        "111111"
    } else {
        "000000"
    });
    assert_problem(&wrong, 401, "two_factor_code_invalid");
    check_answer(document, "post", "/v1/me/two-factor/confirm", &wrong);
    let confirmed = confirm(&code(&key, 0));
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    check_answer(document, "post", "/v1/me/two-factor/confirm", &confirmed);
    let recovery: Vec<String> = confirmed.json()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);
    (key, recovery)
}

#[test]
fn with_two_factor_on_a_sign_in_needs_a_fresh_code() {
    let server = Server::start_with(&[
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_RATE_AUTH_PER_MIN", "1000"),
    ]);
    let document = server.send("GET", "/openapi.json", &[], None).json();
    let email = "two.factor@example.com";
    let api_key = customer(&server, email);

    // An API key cannot enrol: a session only.
    let by_key = server.send(
        "POST",
        "/v1/me/two-factor",
        &[("authorization", &format!("Bearer {api_key}"))],
        None,
    );
    assert_problem(&by_key, 403, "session_required");
    let session = session_of(&sign_in(&server, email, PASSWORD, json!({})));
    let (key, recovery) = enrol(&server, &document, &session);
    assert!(!String::from_utf8_lossy(&key).contains("two.factor"));

    // The password alone no longer signs in; a wrong password is told as such.
    let no_code = sign_in(&server, email, PASSWORD, json!({}));
    assert_problem(&no_code, 401, "two_factor_required");
    check_answer(&document, "post", "/v1/sessions", &no_code);
    let wrong_password = sign_in(&server, email, "not the password!", json!({}));
    assert_problem(&wrong_password, 401, "invalid_credentials");
    let wrong = sign_in(&server, email, PASSWORD, json!({ "totp": "12345" }));
    assert_problem(&wrong, 401, "two_factor_code_invalid");

    // The confirming code's step is spent; the next step's code works once.
    let replayed = sign_in(&server, email, PASSWORD, json!({ "totp": code(&key, -1) }));
    assert_problem(&replayed, 401, "two_factor_code_invalid");
    let next = code(&key, 1);
    let signed_in = sign_in(&server, email, PASSWORD, json!({ "totp": next }));
    session_of(&signed_in);
    check_answer(&document, "post", "/v1/sessions", &signed_in);
    let again = sign_in(&server, email, PASSWORD, json!({ "totp": next }));
    assert_problem(&again, 401, "two_factor_code_invalid");

    // A recovery code works once, in any case.
    let spare = recovery[0].to_lowercase();
    session_of(&sign_in(
        &server,
        email,
        PASSWORD,
        json!({ "recovery_code": spare }),
    ));
    let spent = sign_in(&server, email, PASSWORD, json!({ "recovery_code": spare }));
    assert_problem(&spent, 401, "two_factor_code_invalid");

    // Turning it off takes the password and a code.
    let disable = |password: &str, code: &str| {
        let body = json!({ "password": password, "code": code }).to_string();
        server.send(
            "DELETE",
            "/v1/me/two-factor",
            &[("cookie", &session)],
            Some(&body),
        )
    };
    let bad_password = disable("not the password!", &recovery[1]);
    assert_problem(&bad_password, 401, "invalid_credentials");
    check_answer(&document, "delete", "/v1/me/two-factor", &bad_password);
    assert_problem(&disable(PASSWORD, "000000"), 401, "two_factor_code_invalid");
    let off = disable(PASSWORD, &recovery[1]);
    assert_eq!(off.status, 204, "{}", off.body);
    check_answer(&document, "delete", "/v1/me/two-factor", &off);
    session_of(&sign_in(&server, email, PASSWORD, json!({})));
}

/// Every wrong code pays two sign-in attempts of the IP's and the address's
/// budgets: with a budget of 6 a minute, a register, a sign-in and two wrong
/// codes spend it, so even the right code is refused next (it would be the
/// fifth attempt if a wrong code paid once).
#[test]
fn wrong_codes_pay_the_sign_in_budget_twice() {
    let server = Server::start_with(&[
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_RATE_AUTH_PER_MIN", "6"),
    ]);
    let document = server.send("GET", "/openapi.json", &[], None).json();
    let email = "guessed@example.com";
    let body = json!({ "email": email, "password": PASSWORD }).to_string();
    let created = server.send("POST", "/v1/accounts", &[], Some(&body));
    assert_eq!(created.status, 202, "{}", created.body);
    let session = session_of(&sign_in(&server, email, PASSWORD, json!({})));
    let (key, _) = enrol(&server, &document, &session);
    let wrong = if code(&key, 1) == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..2 {
        let guess = sign_in(&server, email, PASSWORD, json!({ "totp": wrong }));
        assert_problem(&guess, 401, "two_factor_code_invalid");
    }
    let right = sign_in(&server, email, PASSWORD, json!({ "totp": code(&key, 1) }));
    assert_problem(&right, 429, "rate_limited");
}

/// With no session left, a pending deletion is withdrawn with the password in
/// the body: with two-factor on, and a code too.
#[test]
fn withdrawing_a_deletion_with_the_password_needs_a_code() {
    let server = Server::start_with(&[
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_RATE_AUTH_PER_MIN", "1000"),
    ]);
    let document = server.send("GET", "/openapi.json", &[], None).json();
    let email = "leaving@example.com";
    let body = json!({ "email": email, "password": PASSWORD }).to_string();
    let created = server.send("POST", "/v1/accounts", &[], Some(&body));
    assert_eq!(created.status, 202, "{}", created.body);
    let session = session_of(&sign_in(&server, email, PASSWORD, json!({})));
    let (key, _) = enrol(&server, &document, &session);
    let requested = server.send("POST", "/v1/me/deletion", &[("cookie", &session)], None);
    assert_eq!(requested.status, 202, "{}", requested.body);

    let withdraw = |extra: Value| {
        let mut body = json!({ "email": email, "password": PASSWORD });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        server.send(
            "DELETE",
            "/v1/me/deletion",
            &[("content-type", "application/json")],
            Some(&body.to_string()),
        )
    };
    let no_code = withdraw(json!({}));
    assert_problem(&no_code, 401, "two_factor_required");
    check_answer(&document, "delete", "/v1/me/deletion", &no_code);
    let withdrawn = withdraw(json!({ "totp": code(&key, 1) }));
    assert_eq!(withdrawn.status, 200, "{}", withdrawn.body);
    check_answer(&document, "delete", "/v1/me/deletion", &withdrawn);
}
