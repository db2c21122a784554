//! The real binary with a configuration file (`nexus --config FILE serve`, here
//! through `NEXUS_CONFIG`) whose upstreams are the fake SMSCode and HeroSMS on
//! loopback: a number is bought through the real SMSCode adapter and its code
//! comes by SMSCode's signed webhook (refused when unsigned, mis-signed or
//! stale); a production file with loopback URLs starts and hears HeroSMS pushes
//! only from its allowed sources; bad files stop the start-up with a message
//! that names the line and key and never echoes a secret.

use crate::gateway_ipn::TestGateway;
use crate::{fake_herosms, fake_smscode};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use nexus_tests::journey::{call, customer};
use nexus_tests::{nexus_binary, Server};
use sha2::Sha256;

const WEBHOOK_SECRET: &str = "whsec-e2e-91c4";
const SMSCODE_TOKEN: &str = "S";

fn write_config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("nexus.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn sign(body: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn otp_event(order_id: u64, at: chrono::DateTime<Utc>) -> String {
    serde_json::json!({
        "event": "order.otp_received",
        "timestamp": at.to_rfc3339(),
        "data": {
            "order_id": order_id, "phone_number": "+6281234560001",
            "otp_code": "731904", "otp_message": "Your Telegram code is 731904",
            "sms_revision": 1, "product_id": 2001, "catalog_product_id": 91,
            "country": "Indonesia", "platform": "Telegram",
            "operator_id": null, "operator_name": null,
            "can_finish": true, "can_resend": true, "can_cancel": false,
            "can_replace": false, "can_reactivate": false,
            "resend_available_at": null, "cancel_available_at": null,
            "replace_available_at": null
        }
    })
    .to_string()
}

#[test]
fn a_number_is_bought_through_a_configured_upstream_and_its_code_comes_by_signed_webhook() {
    let fake = fake_smscode::FakeSmsCode::start();
    // The fake shows the code to polls only after many of them: it comes by push.
    fake.state().code_after_polls = 10_000;
    // A real upstream needs a real gateway: the simulated one pays for free.
    let gateway = TestGateway::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &format!(
            r#"
environment = "development"

{gateway_section}

[[upstream]]
kind = "smscode"
name = "smscode"
base_url = "{base}"
api_key_env = "NEXUS_E2E_SMSCODE_TOKEN"
webhook_secret_env = "NEXUS_E2E_SMSCODE_WEBHOOK_SECRET"
idr_per_usd = 16000
countries = {{ ID = 6 }}
services = {{ tg = 4, wa = 3 }}
timeout_ms = 3000
"#,
            base = fake.base,
            gateway_section = gateway.section(),
        ),
    );
    let [gateway_key, gateway_secret] = TestGateway::env();
    let server = Server::start_with(&[
        ("NEXUS_CONFIG", &config),
        ("NEXUS_E2E_SMSCODE_TOKEN", SMSCODE_TOKEN),
        ("NEXUS_E2E_SMSCODE_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_BCRYPT_COST", "12"),
        gateway_key,
        gateway_secret,
    ]);
    let key = customer(&server, "config@example.com");
    gateway.fund(&server, &key, "5.00");
    let placed = call(
        &server,
        "POST",
        "/v1/orders",
        &key,
        &[("Idempotency-Key", "cfg-1")],
        Some(r#"{"service":"tg","country":"ID","channel":"sms"}"#),
    );
    assert_eq!(placed.status, 201, "{}", placed.body);
    let order = placed.json();
    assert_eq!(order["status"], "number_assigned", "{order}");
    assert!(
        order["phone"].as_str().unwrap().starts_with("628123456"),
        "{order}"
    );
    let id = order["id"].as_str().unwrap().to_owned();
    let upstream_order = {
        let state = fake.state();
        assert_eq!(state.charges, 1, "one number bought at SMSCode");
        *state.orders.keys().next().unwrap()
    };

    let hook = "/v1/upstreams/smscode/webhook";
    let body = otp_event(upstream_order, Utc::now());
    // Refused: unsigned, mis-signed, stale. Each is a problem and changes nothing.
    let unsigned = server.send("POST", hook, &[], Some(&body));
    assert_eq!(unsigned.status, 401, "{}", unsigned.body);
    assert_eq!(
        unsigned.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(unsigned.json()["code"], "push_unsigned");
    let other_body = otp_event(upstream_order + 1, Utc::now());
    let mis_signed = server.send(
        "POST",
        hook,
        &[("X-Webhook-Signature", &sign(&other_body))],
        Some(&body),
    );
    assert_eq!(mis_signed.status, 401, "{}", mis_signed.body);
    assert_eq!(mis_signed.json()["code"], "push_bad_signature");
    let stale = otp_event(upstream_order, Utc::now() - chrono::Duration::hours(1));
    let refused = server.send(
        "POST",
        hook,
        &[("X-Webhook-Signature", &sign(&stale))],
        Some(&stale),
    );
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.json()["code"], "push_stale");
    let too_large = "x".repeat(70 * 1024);
    assert_eq!(server.send("POST", hook, &[], Some(&too_large)).status, 413);
    assert_eq!(
        server
            .send("POST", "/v1/upstreams/nobody/webhook", &[], Some(&body))
            .status,
        404
    );
    std::thread::sleep(Duration::from_millis(300));
    let now = call(&server, "GET", &format!("/v1/orders/{id}"), &key, &[], None).json();
    assert_eq!(
        now["status"], "number_assigned",
        "refused pushes change nothing"
    );

    // The signed push (delivered twice, as upstreams retry).
    for _ in 0..2 {
        let accepted = server.send(
            "POST",
            hook,
            &[("X-Webhook-Signature", &sign(&body))],
            Some(&body),
        );
        assert_eq!(accepted.status, 200, "{}", accepted.body);
        assert_eq!(accepted.json()["status"], "accepted");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = call(&server, "GET", &format!("/v1/orders/{id}"), &key, &[], None).json();
        if now["status"] == "code_received" {
            break;
        }
        assert!(Instant::now() < deadline, "no code: {now}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = call(
        &server,
        "GET",
        &format!("/v1/orders/{id}/code"),
        &key,
        &[],
        None,
    );
    assert_eq!(code.status, 200, "{}", code.body);
    assert_eq!(
        code.json()["code"],
        "731904",
        "the pushed code, not a polled one"
    );
}

/// A production file: TLS everywhere except loopback hosts.
fn production_config(hero_url: &str, sources: &str) -> String {
    format!(
        r#"
[[upstream]]
kind = "herosms"
name = "herosms"
base_url = "{hero_url}"
api_key_env = "NEXUS_E2E_HEROSMS_KEY"
webhook_sources = [{sources}]

[gateway]
kind = "nowpayments"
base_url = "http://127.0.0.1:9"
api_key_env = "NEXUS_E2E_NOWPAYMENTS_KEY"
ipn_secret_env = "NEXUS_E2E_NOWPAYMENTS_IPN"

[smtp]
url = "smtp://127.0.0.1:2525"
"#
    )
}

const PRODUCTION_ENV: [(&str, &str); 3] = [
    ("NEXUS_E2E_HEROSMS_KEY", fake_herosms::KEY),
    ("NEXUS_E2E_NOWPAYMENTS_KEY", "np-e2e-key"),
    ("NEXUS_E2E_NOWPAYMENTS_IPN", "np-e2e-ipn-secret"),
];

#[test]
fn a_production_file_with_loopback_upstreams_starts_and_hears_pushes_from_allowed_sources() {
    let fake = fake_herosms::FakeHeroSms::start(fake_herosms::Behaviour::default());
    let activation = fake.state().seed("tg");
    let hero_push = serde_json::json!({
        "activationId": activation, "service": "tg", "text": "code 482913",
        "code": "482913", "country": 6, "receivedAt": Utc::now().to_rfc3339()
    })
    .to_string();
    let hook = "/v1/upstreams/herosms/webhook";

    let dir = tempfile::tempdir().unwrap();
    let allowed = write_config(&dir, &production_config(&fake.url, "\"127.0.0.1\""));
    let key = master_key_outside_the_data_dir(&dir);
    let mut env = PRODUCTION_ENV.to_vec();
    env.push(("NEXUS_CONFIG", &allowed));
    env.push(("NEXUS_MASTER_KEY_FILE", &key));
    let server = Server::start_with(&env);
    assert_eq!(server.request("GET", "/health", None).0, 200);
    // No simulated gateway in production: the development pay route is gone.
    assert_eq!(
        server.request("POST", "/v1/dev/payments/x/pay", None).0,
        404
    );
    let heard = server.send("POST", hook, &[], Some(&hero_push));
    assert_eq!(heard.status, 200, "{}", heard.body);
    let malformed = server.send("POST", hook, &[], Some("{\"id\":1}"));
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let elsewhere = write_config(&dir, &production_config(&fake.url, "\"203.0.113.9\""));
    let key = master_key_outside_the_data_dir(&dir);
    let mut env = PRODUCTION_ENV.to_vec();
    env.push(("NEXUS_CONFIG", &elsewhere));
    env.push(("NEXUS_MASTER_KEY_FILE", &key));
    let server = Server::start_with(&env);
    let refused = server.send("POST", hook, &[], Some(&hero_push));
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.json()["code"], "push_source_not_allowed");
}

/// A master key file in `dir` (production wants it outside the data dir, which
/// the harness makes elsewhere).
fn master_key_outside_the_data_dir(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("master.key");
    std::fs::write(&path, format!("{}\n", "5a".repeat(32))).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn production_refuses_a_master_key_missing_or_in_the_data_dir() {
    let text = production_config("https://herosms.example", "\"127.0.0.1\"");
    let missing = refused_start(&text, &PRODUCTION_ENV);
    assert!(
        missing.contains("requires NEXUS_MASTER_KEY_FILE"),
        "{missing}"
    );
}

/// Runs `nexus --config FILE serve` and expects it to refuse to start.
fn refused_start(text: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, text);
    let mut command = Command::new(nexus_binary());
    command
        .args(["--config", &path, "serve"])
        .env("NEXUS_DATA_DIR", dir.path().join("data"))
        .env("NEXUS_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("nexus started with a bad configuration:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    stderr
}

#[test]
fn bad_configuration_files_stop_the_start_with_a_clear_message() {
    let hero = "https://hero-sms.example/stubs/handler_api.php";
    let env = PRODUCTION_ENV.to_vec();

    let plain = production_config("http://hero-sms.example/stubs/handler_api.php", "");
    let message = refused_start(&plain, &env);
    assert!(
        message.contains("line 5")
            && message.contains("base_url")
            && message.contains("production requires TLS"),
        "{message}"
    );

    let plain_smtp =
        production_config(hero, "").replace("smtp://127.0.0.1:2525", "smtp://mail.example:25");
    let message = refused_start(&plain_smtp, &env);
    assert!(
        message.contains("[smtp]") && message.contains("STARTTLS"),
        "{message}"
    );

    let unset = production_config(hero, "");
    let message = refused_start(&unset, &env[1..]);
    assert!(
        message.contains("NEXUS_E2E_HEROSMS_KEY") && message.contains("not set"),
        "{message}"
    );

    // A key pasted where the name of its variable belongs: named, not echoed.
    let pasted = production_config(hero, "").replace(
        "api_key_env = \"NEXUS_E2E_HEROSMS_KEY\"",
        "api_key = \"hs-live-7d1e0c55\"",
    );
    let message = refused_start(&pasted, &env);
    assert!(
        message.contains("line 6") && message.contains("api_key"),
        "{message}"
    );
    assert!(!message.contains("hs-live-7d1e0c55"), "{message}");

    let syntax = "[[upstream]]\nkind = \"herosms\"\nname = herosms\n";
    let message = refused_start(syntax, &env);
    assert!(message.contains("line 3"), "{message}");

    let simulator = format!(
        "{}\n[[upstream]]\nkind = \"simulator\"\nname = \"sim\"\n",
        production_config(hero, "")
    );
    let message = refused_start(&simulator, &env);
    assert!(message.contains("development only"), "{message}");

    // A real upstream with the simulated gateway, whose development pay route
    // pays for free: refused in development too.
    let production = production_config(hero, "");
    let (without_gateway, _) = production.split_once("[gateway]").unwrap();
    let free = format!("environment = \"development\"\n{without_gateway}");
    let message = refused_start(&free, &env);
    assert!(
        message.contains("upstream `herosms` is a real upstream: it needs a [gateway]"),
        "{message}"
    );
}
