//! Mail survives a crash: `nexus serve` spools verification mails and
//! policy-change notices while its SMTP relay refuses connections, is killed
//! (SIGKILL) before any is delivered, and restarted with a real SMTP server
//! (aiosmtpd): every mail arrives exactly once, also after a second crash.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use nexus_tests::journey::{call, PASSWORD};
use nexus_tests::smtp::SmtpServer;
use nexus_tests::Server;

const ADMIN_TOKEN: &str = "admin-token-for-mail-crash-0123456789";
/// Customers registered before the crash.
const CUSTOMERS: usize = 4;
/// How long the spool may take to hold what the server accepted.
const SPOOL_TIMEOUT_MS: u64 = 20_000;
/// How long after delivery a test watches for a mail sent twice.
const QUIET_MS: u64 = 2_000;

fn env(smtp_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NEXUS_SMTP_URL", smtp_url.to_owned()),
        ("NEXUS_SIM_FAULTS", "off".into()),
        ("NEXUS_COOKIE_SECURE", "false".into()),
        ("NEXUS_ADMIN_TOKEN", ADMIN_TOKEN.into()),
    ]
}

fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `smtp://` on a loopback port nothing listens on: every attempt is refused.
fn refused_smtp_url() -> String {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    format!("smtp://127.0.0.1:{port}")
}

fn address(n: usize) -> String {
    format!("crash{n}@example.com")
}

fn queued_mails(data_dir: &Path) -> Vec<Vec<u8>> {
    std::fs::read_dir(data_dir.join("mail/spool/queued"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".mail"))
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn days_from_now(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339()
}

#[test]
fn spooled_mail_is_delivered_exactly_once_after_a_kill() {
    let refused = env(&refused_smtp_url());
    let server = Server::start_with(&refs(&refused));
    for n in 0..CUSTOMERS {
        let body = format!(r#"{{"email":"{}","password":"{PASSWORD}"}}"#, address(n));
        let created = server.send("POST", "/v1/accounts", &[], Some(&body));
        assert_eq!(created.status, 202, "{}", created.body);
    }
    let announced = call(
        &server,
        "POST",
        "/v1/admin/policy-changes",
        ADMIN_TOKEN,
        &[],
        Some(&format!(
            r#"{{"title":"Crash-proof notices","summary":"Every user is told once.","effective_at":"{}"}}"#,
            days_from_now(20)
        )),
    );
    assert_eq!(announced.status, 201, "{}", announced.body);

    // A verification mail and a notice per customer, spooled and sealed.
    let deadline = Instant::now() + Duration::from_millis(SPOOL_TIMEOUT_MS);
    let spooled = loop {
        let spooled = queued_mails(server.data_dir.path());
        if spooled.len() >= 2 * CUSTOMERS {
            break spooled;
        }
        assert!(
            Instant::now() < deadline,
            "{} mails spooled of {}",
            spooled.len(),
            2 * CUSTOMERS
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(spooled.len(), 2 * CUSTOMERS);
    for file in &spooled {
        let text = String::from_utf8_lossy(file);
        assert!(!text.contains("example.com"), "a spooled mail is sealed");
    }

    // Killed before any delivery (every attempt so far was refused).
    let smtp = SmtpServer::start();
    let delivering = env(&smtp.url());
    let server = server.restart_with(&refs(&delivering));
    for n in 0..CUSTOMERS {
        smtp.wait_for_mail_to(&address(n), |m| m.contains("/verify?token="));
        smtp.wait_for_mail_to(&address(n), |m| m.contains("Crash-proof notices"));
    }
    std::thread::sleep(Duration::from_millis(QUIET_MS));
    let once_each = || {
        for n in 0..CUSTOMERS {
            let mails = smtp.mails_to(&address(n));
            assert_eq!(mails.len(), 2, "{}: {} mails", address(n), mails.len());
            assert_eq!(
                mails
                    .iter()
                    .filter(|m| m.contains("/verify?token="))
                    .count(),
                1
            );
            assert_eq!(
                mails
                    .iter()
                    .filter(|m| m.contains("Crash-proof notices"))
                    .count(),
                1
            );
        }
    };
    once_each();
    assert!(
        queued_mails(server.data_dir.path()).is_empty(),
        "delivered: removed"
    );

    // Another crash: nothing is sent again.
    let server = server.restart_with(&refs(&delivering));
    let ready = server.send("GET", "/ready", &[], None);
    assert_eq!(ready.status, 200, "{}", ready.body);
    std::thread::sleep(Duration::from_millis(QUIET_MS));
    once_each();
    assert_eq!(smtp.mails().len(), 2 * CUSTOMERS);
}
