//! What the mailer's tests share: a real store (sled in a temp dir, its
//! vault), settings, quick retries, and reading messages back.

#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nexus_core::vault::MasterKeySource;
use nexus_core::{Store, StoreConfig};
use nexus_providers::mailer::{MailSettings, MailTransport, Mailer, MailerConfig, RetryPolicy};
use nexus_tests::smtp::SmtpServer;

/// How long a test waits for the mailer to finish.
pub const IDLE_TIMEOUT_MS: u64 = 30_000;

/// Opens (or reopens) the store in `dir/store`.
pub fn open_store(dir: &Path) -> Store {
    Store::open(&StoreConfig {
        dir: dir.join("store"),
        master_key: MasterKeySource::GenerateAt(dir.join("master.key")),
        cache_capacity_bytes: 16 << 20,
    })
    .expect("the store opens")
}

pub fn settings() -> MailSettings {
    MailSettings {
        from: "Nexus <no-reply@nexus.test>".into(),
        public_url: "https://nexus.test/".into(),
        service_name: "Nexus".into(),
    }
}

pub fn spool_dir(dir: &Path) -> PathBuf {
    MailerConfig::spool_in(dir)
}

/// Quick retries: 8 attempts, 40 ms doubling up to 200 ms.
pub fn config(transport: MailTransport, dir: &Path) -> MailerConfig {
    let mut config = MailerConfig::new(transport, settings(), spool_dir(dir));
    config.retry = RetryPolicy {
        max_attempts: 8,
        first_delay: Duration::from_millis(40),
        max_delay: Duration::from_millis(200),
    };
    config.smtp_timeout = Duration::from_secs(5);
    config
}

pub fn smtp(server: &SmtpServer) -> MailTransport {
    MailTransport::Smtp {
        url: server.url(),
        credentials: None,
    }
}

/// An SMTP URL on a loopback port nothing listens on: every connection is
/// refused.
pub fn refused() -> MailTransport {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    MailTransport::Smtp {
        url: format!("smtp://127.0.0.1:{port}"),
        credentials: None,
    }
}

pub async fn idle(mailer: &Mailer) {
    tokio::time::timeout(Duration::from_millis(IDLE_TIMEOUT_MS), mailer.idle())
        .await
        .expect("the mailer finishes");
}

/// The file names in one part of the spool (`queued`, `failed`, `unreadable`).
pub fn spool_files(dir: &Path, part: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(spool_dir(dir).join(part))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Headers (unfolded, names lowercased) and the body of a message as the
/// Maildir stores it; checks line lengths on the way.
pub fn parse_message(raw: &str) -> (Vec<(String, String)>, String) {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw
        .split_once("\n\n")
        .expect("a blank line after the headers");
    for line in raw.split('\n') {
        assert!(!line.contains('\r'), "bare CR");
        assert!(line.len() <= 998, "line over 998 octets");
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split('\n') {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().expect("a folded line follows a header");
            last.1.push(' ');
            last.1.push_str(line.trim());
        } else {
            let (name, value) = line.split_once(':').expect("a header line");
            assert!(
                !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b)),
                "header name {name:?}"
            );
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    (headers, body.to_owned())
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header"))
}
