//! The customer journey against the real binary with mail going through a real
//! SMTP server (aiosmtpd on loopback): the verification and deposit mails are
//! read from what that server received, not from the outbox folder.

use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use nexus_tests::journey::{call, customer_verified_by, fund, to_micros, PASSWORD};
use nexus_tests::smtp::SmtpServer;
use nexus_tests::Server;
use sha2::Sha512;

/// The IPN signature header (NOWPayments' name).
const SIGNATURE_HEADER: &str = "x-nowpayments-sig";
/// How long a read model may take to show a change.
const CATCH_UP_TIMEOUT_MS: u64 = 10_000;

/// `nexus serve` with its mail sent to `smtp`, healthy simulated upstreams,
/// and the extra settings in `env`.
fn start(smtp: &SmtpServer, env: &[(&str, &str)]) -> Server {
    let url = smtp.url();
    let mut all = vec![
        ("NEXUS_SMTP_URL", url.as_str()),
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_COOKIE_SECURE", "false"),
    ];
    all.extend_from_slice(env);
    Server::start_with(&all)
}

/// Registers and verifies with the token from the mail that came over SMTP;
/// returns an API key.
fn customer(server: &Server, smtp: &SmtpServer, email: &str) -> String {
    customer_verified_by(server, email, |email| smtp.verification_token(email))
}

/// Mail never went to the outbox folder: the SMTP transport replaced it.
fn assert_outbox_unused(server: &Server) {
    let outbox = server.data_dir.path().join("outbox");
    let files = std::fs::read_dir(&outbox)
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    assert_eq!(
        files, 0,
        "mail written to the outbox despite NEXUS_SMTP_URL"
    );
}

/// No mail the SMTP server received holds the password.
fn assert_no_password_in_mail(smtp: &SmtpServer) {
    let mails = smtp.mails();
    assert!(!mails.is_empty(), "no mail went over SMTP at all");
    for mail in &mails {
        assert!(!mail.contains(PASSWORD), "a mail holds the password");
    }
}

fn wallet(server: &Server, key: &str) -> (i64, i64, i64) {
    let wallet = call(server, "GET", "/v1/wallet", key, &[], None);
    assert_eq!(wallet.status, 200, "{}", wallet.body);
    let wallet = wallet.json();
    let micros = |field: &str| to_micros(wallet[field].as_str().expect("an amount"));
    (micros("balance"), micros("available"), micros("held"))
}

/// One ledger row of `/v1/wallet/entries`: reason, available and held changes.
type Entry = (String, i64, i64);

/// Waits until the wallet's ledger rows (newest first) have `reasons`.
fn entries_with(server: &Server, key: &str, reasons: &[&str]) -> Vec<Entry> {
    let deadline = Instant::now() + Duration::from_millis(CATCH_UP_TIMEOUT_MS);
    loop {
        let page = call(server, "GET", "/v1/wallet/entries", key, &[], None);
        assert_eq!(page.status, 200, "{}", page.body);
        let entries: Vec<Entry> = page.json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| {
                (
                    e["reason"].as_str().expect("a reason").to_owned(),
                    to_micros(e["available_change"].as_str().expect("an amount")),
                    to_micros(e["held_change"].as_str().expect("an amount")),
                )
            })
            .collect();
        let found: Vec<&str> = entries.iter().map(|(r, _, _)| r.as_str()).collect();
        if found == reasons {
            return entries;
        }
        assert!(Instant::now() < deadline, "ledger rows: {found:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn place_order(server: &Server, key: &str, idempotency_key: &str) -> (String, i64) {
    let order = call(
        server,
        "POST",
        "/v1/orders",
        key,
        &[("Idempotency-Key", idempotency_key)],
        Some(r#"{"service":"tg","country":"DE","channel":"sms"}"#),
    );
    assert_eq!(order.status, 201, "{}", order.body);
    let order = order.json();
    assert_eq!(order["status"], "number_assigned", "{order}");
    let price = to_micros(order["price"].as_str().expect("a price"));
    assert!(price > 0, "{order}");
    (order["id"].as_str().expect("an id").to_owned(), price)
}

/// A notification in NOWPayments' shape for `deposit`, fully paid. Amounts
/// stay decimal text, written into the JSON as numbers.
fn ipn_body(deposit: &serde_json::Value) -> String {
    let text = |field: &str| {
        deposit[field]
            .as_str()
            .unwrap_or_else(|| panic!("the invoice's {field}"))
            .to_owned()
    };
    format!(
        r#"{{"payment_id":5077125051,"payment_status":"finished","pay_address":"{}","price_amount":{},"price_currency":"usd","pay_amount":{},"actually_paid":{},"pay_currency":"{}","order_id":"{}","order_description":"Nexus deposit","payin_hash":"9f1c2d3e4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"}}"#,
        text("pay_address"),
        text("amount"),
        text("pay_amount"),
        text("pay_amount"),
        text("pay_currency"),
        text("id"),
    )
}

/// HMAC-SHA512 of `body` under `key`, in hex: well formed, so only the key
/// decides whether it verifies.
fn signature_under(key: &[u8], body: &str) -> String {
    let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[test]
fn register_verify_by_smtp_mail_deposit_by_signed_ipn_order_code_complete_cashback() {
    let smtp = SmtpServer::start();
    let server = start(&smtp, &[("NEXUS_SIM_CODE_DELAY_MS", "300")]);
    let email = "alice@example.com";

    // Register → the verification mail arrives over SMTP → verify → log in → key.
    let key = customer(&server, &smtp, email);
    let verification = smtp.mails_to(email);
    assert_eq!(verification.len(), 1, "one verification mail");
    assert!(
        verification[0].contains("Subject: Confirm your e-mail address for Nexus"),
        "the verification mail as sent"
    );
    assert_eq!(wallet(&server, &key), (0, 0, 0));

    // A deposit invoice.
    let deposit = call(
        &server,
        "POST",
        "/v1/deposits",
        &key,
        &[],
        Some(r#"{"amount":"10.00"}"#),
    );
    assert_eq!(deposit.status, 201, "{}", deposit.body);
    let deposit = deposit.json();
    assert_eq!(deposit["status"], "waiting");
    let deposit_id = deposit["id"].as_str().expect("an id").to_owned();

    // A notification not signed with the gateway's secret credits nothing.
    let body = ipn_body(&deposit);
    let forged = signature_under(b"not the gateway's IPN secret", &body);
    for headers in [vec![(SIGNATURE_HEADER, forged.as_str())], vec![]] {
        let refused = server.send("POST", "/v1/payments/ipn", &headers, Some(&body));
        assert_eq!(refused.status, 401, "{}", refused.body);
        assert_eq!(
            refused.header("content-type"),
            Some("application/problem+json")
        );
        let expected_code = if headers.is_empty() {
            "ipn_unsigned"
        } else {
            "ipn_bad_signature"
        };
        assert_eq!(refused.json()["code"], expected_code);
    }
    assert_eq!(
        wallet(&server, &key),
        (0, 0, 0),
        "no credit from a forged IPN"
    );

    // The simulated gateway's notification, signed with the real secret.
    let paid = server.send(
        "POST",
        &format!("/v1/dev/payments/{deposit_id}/pay"),
        &[],
        None,
    );
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert_eq!(paid.json()["outcome"], "credited");
    assert_eq!(wallet(&server, &key), (10_000_000, 10_000_000, 0));

    // The deposit confirmation arrives over SMTP.
    let confirmation = smtp.wait_for_mail_to(email, |m| m.contains(&deposit_id));
    assert!(confirmation.contains("Subject: Nexus: deposit of 10.000000 USD credited"));
    assert!(
        confirmation.contains("Credited: 10.000000 USD"),
        "the confirmation names the amount credited"
    );

    // Order → code → complete.
    let (order_id, price) = place_order(&server, &key, "smtp-journey-1");
    assert_eq!(
        wallet(&server, &key),
        (10_000_000, 10_000_000 - price, price),
        "the price is held"
    );
    let code = call(
        &server,
        "GET",
        &format!("/v1/orders/{order_id}/code?wait=20"),
        &key,
        &[],
        None,
    );
    assert_eq!(code.status, 200, "{}", code.body);
    let code = code.json()["code"].as_str().unwrap_or("").to_owned();
    assert!(
        code.len() >= 4 && code.chars().all(|c| c.is_ascii_digit()),
        "a code of digits"
    );
    let done = call(
        &server,
        "POST",
        &format!("/v1/orders/{order_id}/complete"),
        &key,
        &[],
        None,
    );
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.json()["status"], "completed");

    // Cashback: 2 % of the price (the default 200 basis points), rounded down.
    let cashback = price * 200 / 10_000;
    assert!(cashback > 0, "a price of {price} micros earns cashback");
    let expected = 10_000_000 - price + cashback;
    assert_eq!(wallet(&server, &key), (expected, expected, 0));
    let entries = entries_with(&server, &key, &["cashback", "capture", "hold", "deposit"]);
    assert_eq!(
        entries,
        vec![
            ("cashback".to_owned(), cashback, 0),
            ("capture".to_owned(), 0, -price),
            ("hold".to_owned(), -price, price),
            ("deposit".to_owned(), 10_000_000, 0),
        ]
    );

    // Exactly the two mails, both over SMTP, neither with the password nor the code.
    let mails = smtp.mails_to(email);
    assert_eq!(
        mails.len(),
        2,
        "the verification and one deposit confirmation"
    );
    assert!(mails.iter().all(|m| !m.contains(&format!("\n{code}"))));
    assert_no_password_in_mail(&smtp);
    assert_outbox_unused(&server);
}

#[test]
fn a_cancelled_order_is_refunded_in_full() {
    let smtp = SmtpServer::start();
    // No code comes (ten minutes away); cancelling is allowed at once.
    let server = start(
        &smtp,
        &[
            ("NEXUS_SIM_CODE_DELAY_MS", "600000"),
            ("NEXUS_CANCEL_GUARD_SECS", "0"),
        ],
    );
    let email = "bob@example.com";
    let key = customer(&server, &smtp, email);
    fund(&server, &key, "5.00");
    smtp.wait_for_mail_to(email, |m| m.contains("Credited: 5.000000 USD"));

    let (order_id, price) = place_order(&server, &key, "smtp-cancel-1");
    assert_eq!(wallet(&server, &key), (5_000_000, 5_000_000 - price, price));

    let cancelled = call(
        &server,
        "POST",
        &format!("/v1/orders/{order_id}/cancel"),
        &key,
        &[],
        None,
    );
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.json()["status"], "cancelled");
    assert_eq!(wallet(&server, &key), (5_000_000, 5_000_000, 0));
    let entries = entries_with(&server, &key, &["void", "hold", "deposit"]);
    assert_eq!(
        entries,
        vec![
            ("void".to_owned(), price, -price),
            ("hold".to_owned(), -price, price),
            ("deposit".to_owned(), 5_000_000, 0),
        ]
    );

    // A final order stays final: a second cancel is a conflict, no second refund.
    let again = call(
        &server,
        "POST",
        &format!("/v1/orders/{order_id}/cancel"),
        &key,
        &[],
        None,
    );
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(wallet(&server, &key), (5_000_000, 5_000_000, 0));
    let code = call(
        &server,
        "GET",
        &format!("/v1/orders/{order_id}/code"),
        &key,
        &[],
        None,
    );
    assert_eq!(code.status, 200, "{}", code.body);
    assert_eq!(
        code.json(),
        serde_json::json!({ "code": null, "status": "cancelled" })
    );

    assert_eq!(smtp.mails_to(email).len(), 2);
    assert_no_password_in_mail(&smtp);
    assert_outbox_unused(&server);
}

#[test]
fn an_order_without_a_code_expires_and_is_refunded_in_full() {
    let smtp = SmtpServer::start();
    // Orders live 3 s; no code comes before that.
    let server = start(
        &smtp,
        &[
            ("NEXUS_SIM_CODE_DELAY_MS", "600000"),
            ("NEXUS_ORDER_TTL_SECS", "3"),
        ],
    );
    let email = "carol@example.com";
    let key = customer(&server, &smtp, email);
    fund(&server, &key, "5.00");
    smtp.wait_for_mail_to(email, |m| m.contains("Credited: 5.000000 USD"));

    let (order_id, price) = place_order(&server, &key, "smtp-expiry-1");
    assert_eq!(wallet(&server, &key), (5_000_000, 5_000_000 - price, price));

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let order = call(
            &server,
            "GET",
            &format!("/v1/orders/{order_id}"),
            &key,
            &[],
            None,
        );
        assert_eq!(order.status, 200, "{}", order.body);
        let status = order.json()["status"].as_str().unwrap_or("").to_owned();
        if status == "expired" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the order is still {status} past its deadline"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(wallet(&server, &key), (5_000_000, 5_000_000, 0));
    let entries = entries_with(&server, &key, &["void", "hold", "deposit"]);
    assert_eq!(
        entries,
        vec![
            ("void".to_owned(), price, -price),
            ("hold".to_owned(), -price, price),
            ("deposit".to_owned(), 5_000_000, 0),
        ]
    );
    // An expired order cannot be cancelled (or refunded) again.
    let cancel = call(
        &server,
        "POST",
        &format!("/v1/orders/{order_id}/cancel"),
        &key,
        &[],
        None,
    );
    assert_eq!(cancel.status, 409, "{}", cancel.body);
    assert_eq!(wallet(&server, &key), (5_000_000, 5_000_000, 0));

    assert_eq!(smtp.mails_to(email).len(), 2);
    assert_no_password_in_mail(&smtp);
    assert_outbox_unused(&server);
}
