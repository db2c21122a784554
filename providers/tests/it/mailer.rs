//! The mailer through a real SMTP server (aiosmtpd on loopback, delivering
//! into a Maildir), and through the outbox folder. Replies aiosmtpd's stock
//! handler never gives (a 451 then success, a 550 to every recipient, a 554
//! echoing the message) come from aiosmtpd with a scripted handler hook
//! (`nexus_tests::smtp::Replies`); a refused connection is a loopback port
//! nothing listens on.

use crate::log_capture::{all_lines, capture_all};
use crate::mail_support;
use std::time::Duration;

use crate::mail_support::{
    config, header, idle, open_store, parse_message, refused, smtp, spool_files,
};
use chrono::{DateTime, Utc};
use nexus_core::domain::ids::{AccountId, DepositId};
use nexus_core::domain::money::Micros;
use nexus_providers::mailer::{
    Accepted, Mail, MailError, MailId, MailKind, MailTransport, Mailer, MailerConfig, Recipient,
};
use nexus_tests::smtp::{Replies, SmtpServer};

const TOKEN: &str = "vT0k3n_Q8s-2xYz9LmNoPqRsTuVwXyZ0123456789ab";

fn to(address: &str) -> Recipient {
    Recipient::parse(address).unwrap()
}

fn verification(address: &str) -> Mail {
    Mail::Verification {
        to: to(address),
        token: TOKEN.into(),
        expires_at: Some(DateTime::from_timestamp(1_900_000_000, 0).unwrap()),
    }
}

/// Sends `mail` under a fresh id for a fresh account.
fn send(mailer: &Mailer, mail: Mail) -> Result<Accepted, MailError> {
    mailer.send(
        MailId::derive(&[uuid::Uuid::new_v4().as_bytes()]),
        AccountId::new(),
        mail,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_mail_arrives_with_its_link_and_token_line() {
    capture_all();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let server = SmtpServer::start();
    let mailer = Mailer::start(config(smtp(&server), dir.path()), store.vault.clone()).unwrap();
    let id = MailId::for_verification(TOKEN);
    assert_eq!(
        mailer.send(id, AccountId::new(), verification("alice@example.com")),
        Ok(Accepted::Spooled)
    );
    idle(&mailer).await;

    let mails = server.mails_to("alice@example.com");
    assert_eq!(mails.len(), 1);
    let (headers, body) = parse_message(&mails[0]);
    assert_eq!(header(&headers, "x-mailfrom"), "no-reply@nexus.test");
    assert_eq!(header(&headers, "x-rcptto"), "alice@example.com");
    assert_eq!(header(&headers, "to"), "alice@example.com");
    assert_eq!(header(&headers, "from"), "Nexus <no-reply@nexus.test>");
    assert_eq!(
        header(&headers, "subject"),
        "Confirm your e-mail address for Nexus"
    );
    assert_eq!(header(&headers, "content-transfer-encoding"), "7bit");
    assert!(header(&headers, "content-type").starts_with("text/plain"));
    assert_eq!(
        header(&headers, "message-id"),
        format!("<{id}@nexus.test>"),
        "the Message-ID is the mail id"
    );
    DateTime::parse_from_rfc2822(header(&headers, "date")).expect("an RFC 5322 date");
    let lines: Vec<&str> = body.split('\n').collect();
    assert!(
        lines.contains(&format!("https://nexus.test/verify?token={TOKEN}").as_str()),
        "{body}"
    );
    assert!(
        lines.contains(&TOKEN),
        "the token on a line of its own: {body}"
    );

    let report = mailer.report();
    assert_eq!((report.sent, report.retried, report.failed), (1, 0, 0));
    assert_eq!(report.pending, 0);
    assert!(
        spool_files(dir.path(), "queued").is_empty(),
        "delivered: removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_starting_with_a_dot_survive_the_smtp_transfer() {
    capture_all();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let server = SmtpServer::start();
    let mailer = Mailer::start(config(smtp(&server), dir.path()), store.vault.clone()).unwrap();
    let summary = ".hidden files are now listed\n..two dots\n.\nthe line above is one dot";
    send(
        &mailer,
        Mail::PolicyChange {
            to: to("dora@example.com"),
            title: "Privacy policy v2".into(),
            summary: summary.into(),
            effective_at: Utc::now() + chrono::Duration::days(30),
            url: Some("https://nexus.test/privacy".into()),
        },
    )
    .unwrap();
    idle(&mailer).await;
    let mails = server.mails_to("dora@example.com");
    assert_eq!(mails.len(), 1);
    let (headers, body) = parse_message(&mails[0]);
    assert!(header(&headers, "subject").starts_with("Nexus: Privacy policy v2 (from "));
    assert!(body.contains(summary), "{body}");
    assert!(body.contains("The full text: https://nexus.test/privacy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_failure_is_retried_then_sent() {
    capture_all();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let server = SmtpServer::start_replying(Replies::BusyFirst(2));
    let mailer = Mailer::start(config(smtp(&server), dir.path()), store.vault.clone()).unwrap();
    send(
        &mailer,
        Mail::DepositConfirmation {
            to: to("erin@example.com"),
            deposit: DepositId::new(),
            invoiced: Micros::from_usd(10),
            credited: Micros(12_500_000),
            late: true,
            deletion_due_at: None,
        },
    )
    .unwrap();
    idle(&mailer).await;
    assert_eq!(server.rcpt_commands(), 3, "451, 451, then accepted");
    let mails = server.mails_to("erin@example.com");
    assert_eq!(mails.len(), 1);
    let (headers, body) = parse_message(&mails[0]);
    assert_eq!(
        header(&headers, "subject"),
        "Nexus: deposit of 12.500000 USD credited"
    );
    assert!(body.contains("Invoiced: 10.000000 USD"), "{body}");
    assert!(body.contains("More than the invoice arrived"), "{body}");
    assert!(body.contains("after the invoice expired"), "{body}");
    let report = mailer.report();
    assert_eq!((report.sent, report.retried, report.failed), (1, 2, 0));
    assert!(report.failures.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_is_reported_kept_and_sent_after_a_restart() {
    capture_all();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let server = SmtpServer::start_replying(Replies::RejectRecipients(
        "550 5.1.1 <{rcpt}>: mailbox unavailable".into(),
    ));
    let mut config_550 = config(smtp(&server), dir.path());
    config_550.retry.max_attempts = 3;
    let mailer = Mailer::start(config_550, store.vault.clone()).unwrap();
    let effective_at = Utc::now() + chrono::Duration::days(30);
    let id = MailId::derive(&[b"deletion scheduled"]);
    let account = AccountId::new();
    let mail = Mail::DeletionScheduled {
        to: to("frank.ghost@example.com"),
        effective_at,
        forfeit_balance: Micros(0),
    };
    mailer.send(id, account, mail.clone()).unwrap();
    idle(&mailer).await;
    assert_eq!(server.rcpt_commands(), 3, "exactly the bounded attempts");
    assert!(server.mails().is_empty());
    let report = mailer.report();
    assert_eq!((report.sent, report.retried, report.failed), (0, 2, 1));
    let failure = &report.failures[&MailKind::DeletionScheduled];
    assert_eq!(failure.count, 1);
    assert_eq!(failure.last_recipient, "f***@example.com");
    assert!(failure.last_error.contains("550"), "{}", failure.last_error);
    assert!(
        failure.last_error.contains("f***@example.com"),
        "{}",
        failure.last_error
    );
    assert!(
        !failure.last_error.contains("frank.ghost"),
        "{}",
        failure.last_error
    );
    assert_eq!(report.pending, 0);
    // Not lost: kept, sealed, in the failed part, and not queued twice.
    assert_eq!(report.failed_spooled, 1);
    assert_eq!(spool_files(dir.path(), "failed"), [format!("{id}.mail")]);
    assert!(spool_files(dir.path(), "queued").is_empty());
    assert_eq!(mailer.send(id, account, mail), Ok(Accepted::Duplicate));
    drop(mailer);

    // The relay is fixed; the next start sends it.
    let fixed = SmtpServer::start();
    let mailer = Mailer::start(config(smtp(&fixed), dir.path()), store.vault.clone()).unwrap();
    assert_eq!(mailer.report().restored, 1);
    idle(&mailer).await;
    assert_eq!(fixed.mails_to("frank.ghost@example.com").len(), 1);
    let report = mailer.report();
    assert_eq!((report.sent, report.failed_spooled), (1, 0));
    assert!(spool_files(dir.path(), "failed").is_empty());
    assert!(spool_files(dir.path(), "queued").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_with_a_typed_error_and_counts_it() {
    capture_all();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    // Refused connections and a long wait between attempts: mails stay pending.
    let mut config = config(refused(), dir.path());
    config.queue_capacity = 2;
    config.retry.first_delay = Duration::from_secs(60);
    config.retry.max_delay = Duration::from_secs(60);
    let mailer = Mailer::start(config, store.vault.clone()).unwrap();
    send(&mailer, verification("gina@example.com")).unwrap();
    send(&mailer, verification("hank@example.com")).unwrap();
    assert_eq!(
        send(&mailer, verification("ivan@example.com")),
        Err(MailError::QueueFull { capacity: 2 })
    );
    let report = mailer.report();
    assert_eq!(report.pending, 2);
    assert_eq!(report.rejected_queue_full, 1);
    assert_eq!(
        spool_files(dir.path(), "queued").len(),
        2,
        "only the accepted are spooled"
    );

    // Refused up front, without using the queue.
    assert_eq!(
        Recipient::parse("not an address"),
        Err(MailError::InvalidAddress)
    );
    assert_eq!(
        send(
            &mailer,
            Mail::PolicyChange {
                to: to("jill@example.com"),
                title: "Terms".into(),
                summary: "Shorter notice.".into(),
                effective_at: Utc::now() + chrono::Duration::days(13),
                url: None,
            }
        ),
        Err(MailError::NoticeTooShort)
    );
    assert_eq!(mailer.report().pending, 2);
    // A graceful stop waits its grace and leaves them spooled.
    assert_eq!(mailer.drain(Duration::from_millis(100)).await, 2);
    assert_eq!(spool_files(dir.path(), "queued").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_holds_one_parseable_eml_file_per_mail() {
    capture_all();
    let data = tempfile::tempdir().unwrap();
    let store = open_store(data.path());
    let mailer = Mailer::start(
        config(MailTransport::outbox_in(data.path()), data.path()),
        store.vault.clone(),
    )
    .unwrap();
    let mails = [
        verification("kim@example.com"),
        Mail::DepositConfirmation {
            to: to("kim@example.com"),
            deposit: DepositId::new(),
            invoiced: Micros::from_usd(10),
            credited: Micros::from_usd(4),
            late: false,
            deletion_due_at: None,
        },
        Mail::DeletionScheduled {
            to: to("kim@example.com"),
            effective_at: Utc::now() + chrono::Duration::days(30),
            forfeit_balance: Micros(9_610_000),
        },
        Mail::DeletionDone {
            to: to("kim@example.com"),
        },
        Mail::PolicyChange {
            to: to("kim@example.com"),
            title: "Privacy policy, new retention periods".into(),
            summary: "Anonymous orders are kept 90 days.\nCaf\u{e9} cr\u{e8}me: accents are fine."
                .into(),
            effective_at: Utc::now() + chrono::Duration::days(15),
            url: None,
        },
    ];
    for mail in mails {
        send(&mailer, mail).unwrap();
    }
    idle(&mailer).await;
    assert_eq!(mailer.report().sent, 5);

    let outbox = data.path().join("outbox");
    let mut names: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(
        names.iter().all(|n| n.ends_with(".eml")),
        "no temporary file left: {names:?}"
    );
    assert!(
        names.iter().all(|n| !n.contains("kim")),
        "no address in a file name"
    );
    let mut kinds = Vec::new();
    for name in &names {
        let path = outbox.join(name);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let raw = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
        assert!(
            raw.replace("\r\n", "")
                .bytes()
                .all(|b| b != b'\n' && b != b'\r'),
            "CRLF line ends only"
        );
        let (headers, body) = parse_message(&raw);
        assert_eq!(header(&headers, "to"), "kim@example.com");
        assert_eq!(header(&headers, "mime-version"), "1.0");
        DateTime::parse_from_rfc2822(header(&headers, "date")).expect("an RFC 5322 date");
        assert!(!header(&headers, "subject").is_empty());
        assert!(!header(&headers, "message-id").is_empty());
        let encoding = header(&headers, "content-transfer-encoding");
        if name.contains("verification") {
            assert_eq!(encoding, "7bit");
            let lines: Vec<&str> = body.split('\n').collect();
            assert!(lines.contains(&TOKEN));
            assert!(lines.contains(&format!("https://nexus.test/verify?token={TOKEN}").as_str()));
        }
        if name.contains("policy_change") {
            assert_eq!(encoding, "quoted-printable", "non-ASCII text is encoded");
        } else {
            assert!(body.is_ascii());
        }
        kinds.push(name.split('-').nth(1).unwrap().to_owned());
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "deletion_done",
            "deletion_scheduled",
            "deposit_confirmation",
            "policy_change",
            "verification"
        ]
    );
    assert!(spool_files(data.path(), "queued").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_or_spool_file_holds_an_address_or_a_token() {
    capture_all();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    // The server echoes the recipient and the link (with the token) in its
    // refusal: the mailer's logs and report must not.
    let server = SmtpServer::start_replying(Replies::RejectData);
    let mut config_554 = config(smtp(&server), dir.path());
    config_554.retry.max_attempts = 2;
    let mailer = Mailer::start(config_554, store.vault.clone()).unwrap();
    let address = "Lara.Secret@Example.com";
    send(&mailer, verification(address)).unwrap();
    idle(&mailer).await;
    let report = mailer.report();
    assert_eq!(report.failed, 1);
    let failure = &report.failures[&MailKind::Verification];
    assert!(failure.last_error.contains("554"), "{}", failure.last_error);
    // The echo was there, scrubbed: the address redacted, the token removed.
    assert!(
        failure.last_error.contains("L***@Example.com")
            && failure.last_error.contains("token=[redacted]"),
        "{}",
        failure.last_error
    );
    drop(mailer);

    // Queue-full refusals are logged too, redacted; spooled mails are sealed.
    let other = tempfile::tempdir().unwrap();
    let other_store = open_store(other.path());
    let mut full = MailerConfig::new(
        refused(),
        mail_support::settings(),
        mail_support::spool_dir(other.path()),
    );
    full.queue_capacity = 1;
    full.retry.first_delay = Duration::from_secs(60);
    let full = Mailer::start(full, other_store.vault.clone()).unwrap();
    send(&full, verification("mona.secret@example.com")).unwrap();
    assert!(send(&full, verification("nina.secret@example.com")).is_err());

    let lines = all_lines();
    let ours: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("L***@Example.com") || l.contains("n***@example.com"))
        .collect();
    assert!(
        ours.iter()
            .any(|l| l.contains("given up") && l.contains("verification")),
        "{ours:#?}"
    );
    assert!(
        ours.iter().any(|l| l.contains("queue is full")),
        "{ours:#?}"
    );
    let forbidden = [
        "lara.secret",
        "mona.secret",
        "nina.secret",
        &TOKEN.to_ascii_lowercase(),
    ];
    for line in &lines {
        let lower = line.to_ascii_lowercase();
        for secret in forbidden {
            assert!(!lower.contains(secret), "{line}");
        }
    }
    for text in [&failure.last_error, &failure.last_recipient] {
        let lower = text.to_ascii_lowercase();
        for secret in forbidden {
            assert!(!lower.contains(secret), "{text}");
        }
    }
    // Every file the spools hold (queued, failed, the delivered record).
    let mut files = 0;
    for root in [dir.path(), other.path()] {
        for part in ["queued", "failed"] {
            for name in spool_files(root, part) {
                let bytes =
                    std::fs::read(mail_support::spool_dir(root).join(part).join(&name)).unwrap();
                let lower = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
                for secret in forbidden {
                    assert!(
                        !lower.contains(secret),
                        "{part}/{name} holds a secret in plain"
                    );
                }
                assert!(
                    !lower.contains("example.com"),
                    "{part}/{name} holds an address"
                );
                files += 1;
            }
        }
    }
    assert_eq!(files, 2, "one failed, one queued");
    // Debug output of a mail is redacted too.
    let shown = format!("{:?}", verification(address));
    assert!(
        !shown.contains("Secret") && !shown.contains(TOKEN),
        "{shown}"
    );
}
