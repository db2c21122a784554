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

/// The verification token in one mail (as sent, from any transport): the
/// token of the `…/verify?token=` link, which also stands on a line of its
/// own. None when the mail has no such link.
pub fn verification_token_in(mail: &str) -> Option<String> {
    let token = mail.lines().find_map(|l| {
        l.split_once("/verify?token=")
            .map(|(_, t)| t.trim().to_owned())
    })?;
    assert!(
        mail.lines().any(|l| l.trim() == token),
        "the token on a line of its own"
    );
    Some(token)
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
        let token = mails
            .iter()
            .filter(|t| t.contains(email))
            .find_map(|text| verification_token_in(text));
        if let Some(token) = token {
            return token;
        }
        assert!(
            Instant::now() < deadline,
            "no verification mail for {email} in {} mails",
            mails.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The token of the link to `<server>/<path>?token=` in a mail to `email` in
/// the outbox, waiting for the mail (at most 20 s); the token also stands on a
/// line of its own.
pub fn mailed_token(server: &Server, email: &str, path: &str) -> String {
    let marker = format!("/{path}?token=");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let token = outbox_mails(server)
            .iter()
            .filter(|text| text.contains(email))
            .find_map(|text| {
                let token = text
                    .lines()
                    .find_map(|l| l.split_once(&marker).map(|(_, t)| t.trim().to_owned()))?;
                text.lines().any(|l| l.trim() == token).then_some(token)
            });
        if let Some(token) = token {
            return token;
        }
        assert!(
            Instant::now() < deadline,
            "no mail with {marker} for {email}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every mail in the server's outbox, as written.
pub fn outbox_mails(server: &Server) -> Vec<String> {
    std::fs::read_dir(server.data_dir.path().join("outbox"))
        .map(|d| {
            d.flatten()
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// Registers, verifies, and returns an API key (of scope `full`).
pub fn customer(server: &Server, email: &str) -> String {
    signed_in_customer(server, email).key
}

/// A verified customer who just signed in: the session cookie (`name=value`;
/// fresh, its password was just entered, so it may make the sensitive
/// changes) and an API key of scope `full` (everything a key may do).
pub struct SignedIn {
    pub session: String,
    pub key: String,
}

/// Registers, verifies, signs in and makes an API key.
pub fn signed_in_customer(server: &Server, email: &str) -> SignedIn {
    signed_in_verified_by(server, email, |email| verification_token(server, email))
}

/// Registers, verifies with the token `token_for(email)` finds in the mail,
/// logs in, and returns an API key.
pub fn customer_verified_by(
    server: &Server,
    email: &str,
    token_for: impl FnOnce(&str) -> String,
) -> String {
    signed_in_verified_by(server, email, token_for).key
}

fn signed_in_verified_by(
    server: &Server,
    email: &str,
    token_for: impl FnOnce(&str) -> String,
) -> SignedIn {
    let body = format!(r#"{{"email":"{email}","password":"{PASSWORD}"}}"#);
    let created = server.send("POST", "/v1/accounts", &[], Some(&body));
    assert_eq!(created.status, 202, "{}", created.body);
    let token = token_for(email);
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
    let key = server.send(
        "POST",
        "/v1/api-keys",
        &[("Cookie", &session)],
        Some(r#"{"scope":"full"}"#),
    );
    assert_eq!(key.status, 201, "{}", key.body);
    let key = key.json()["key"].as_str().unwrap().to_owned();
    SignedIn { session, key }
}

/// A call with the session cookie `session` (`name=value`).
pub fn with_session(
    server: &Server,
    method: &str,
    path: &str,
    session: &str,
    body: Option<&str>,
) -> Response {
    server.send(method, path, &[("Cookie", session)], body)
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

/// A decimal amount as the API writes it ("10.000000", "-3.500000") or takes it ("0.065") in
/// integer micros.
pub fn to_micros(text: &str) -> i64 {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    assert!(
        fraction.len() <= 6 && !whole.starts_with(['-', '+']),
        "not an amount: {text}"
    );
    let fraction = format!("{fraction:0<6}");
    let whole: i64 = whole
        .parse()
        .unwrap_or_else(|_| panic!("not an amount: {text}"));
    let fraction: i64 = fraction
        .parse()
        .unwrap_or_else(|_| panic!("not an amount: {text}"));
    sign * (whole * 1_000_000 + fraction)
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
    let credited = |server: &Server| {
        let wallet = call(server, "GET", "/v1/wallet", key, &[], None).json();
        wallet["available"].as_str().map(to_micros) == Some(to_micros(amount))
    };
    while !credited(server) {
        assert!(Instant::now() < deadline, "the deposit was not credited");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_as_integer_micros() {
        assert_eq!(to_micros("10.00"), 10_000_000);
        assert_eq!(to_micros("0.065"), 65_000);
        assert_eq!(to_micros("-3.50"), -3_500_000);
        assert_eq!(to_micros("7"), 7_000_000);
    }

    #[test]
    fn the_token_comes_from_the_link_and_stands_on_its_own_line() {
        let mail = "Subject: Confirm\r\n\r\nhttp://x/verify?token=abc123\r\n\r\nabc123\r\n";
        assert_eq!(verification_token_in(mail).as_deref(), Some("abc123"));
        assert_eq!(verification_token_in("Credited: 5.00 USD\n"), None);
    }
}
