//! The steps most end-to-end tests share: a verified customer with an API key, a
//! funded wallet, calls with that key.

use std::time::{Duration, Instant};

use crate::{Response, Server};

pub const PASSWORD: &str = "correct horse battery staple";

/// The embedded default with healthy simulated upstreams and quick codes.
pub fn start() -> Server {
    Server::start_with(&[
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_SIM_CODE_DELAY_MS", "300"),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_BCRYPT_COST", "12"),
    ])
}

/// The verification token from the mail to `email` in the outbox: the link's
/// token, which also stands on a line of its own.
pub fn verification_token(server: &Server, email: &str) -> String {
    let outbox = server.data_dir.path().join("outbox");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mails: Vec<String> = std::fs::read_dir(&outbox)
            .map(|d| {
                d.flatten()
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        for text in mails.iter().filter(|t| t.contains(email)) {
            let token = text.lines().find_map(|l| {
                l.split_once("/verify?token=")
                    .map(|(_, t)| t.trim().to_owned())
            });
            if let Some(token) = token {
                assert!(
                    text.lines().any(|l| l.trim() == token),
                    "the token on a line of its own"
                );
                return token;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no verification mail for {email} in {} mails",
            mails.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Registers, verifies, and returns an API key.
pub fn customer(server: &Server, email: &str) -> String {
    let body = format!(r#"{{"email":"{email}","password":"{PASSWORD}"}}"#);
    let created = server.send("POST", "/v1/accounts", &[], Some(&body));
    assert_eq!(created.status, 201, "{}", created.body);
    let token = verification_token(server, email);
    let verified = server.send(
        "POST",
        "/v1/accounts/verify",
        &[],
        Some(&format!(r#"{{"token":"{token}"}}"#)),
    );
    assert_eq!(verified.status, 200, "{}", verified.body);
    let login = server.send("POST", "/v1/sessions", &[], Some(&body));
    assert_eq!(login.status, 201, "{}", login.body);
    let cookie = login
        .header("set-cookie")
        .expect("a session cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let key = server.send("POST", "/v1/api-keys", &[("Cookie", &session)], None);
    assert_eq!(key.status, 201, "{}", key.body);
    key.json()["key"].as_str().unwrap().to_owned()
}

pub fn authed<'a>(key: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, String)> {
    let mut headers = vec![("Authorization", format!("Bearer {key}"))];
    headers.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    headers
}

pub fn call(
    server: &Server,
    method: &str,
    path: &str,
    key: &str,
    extra: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let headers = authed(key, extra);
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    server.send(method, path, &refs, body)
}

pub fn fund(server: &Server, key: &str, amount: &str) {
    let deposit = call(
        server,
        "POST",
        "/v1/deposits",
        key,
        &[],
        Some(&format!(r#"{{"amount":"{amount}"}}"#)),
    );
    assert_eq!(deposit.status, 201, "{}", deposit.body);
    let id = deposit.json()["id"].as_str().unwrap().to_owned();
    let paid = server.send("POST", &format!("/v1/dev/payments/{id}/pay"), &[], None);
    assert!(paid.status == 200 || paid.status == 202, "{}", paid.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(server, "GET", "/v1/wallet", key, &[], None).json()["available"] != amount {
        assert!(Instant::now() < deadline, "the deposit was not credited");
        std::thread::sleep(Duration::from_millis(50));
    }
}
