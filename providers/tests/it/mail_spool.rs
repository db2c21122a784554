//! The mail spool: a spooled mail whose account is erased is dropped, never
//! sent; a mail id already spooled or delivered is not sent twice (within the
//! retention of the delivered record, also across restarts); a corrupt or
//! foreign spool file is set aside and counted, and the rest is delivered.
//! Mail goes to a real SMTP server (aiosmtpd on loopback).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::mail_support::{config, idle, open_store, refused, smtp, spool_dir, spool_files};
use chrono::Utc;
use nexus_core::domain::clock::ManualClock;
use nexus_core::domain::ids::AccountId;
use nexus_core::log::AnyLog;
use nexus_core::service::account_service::{Accounts, AccountsConfig};
use nexus_core::Store;
use nexus_providers::mailer::spool::DELIVERED_RETENTION_DAYS;
use nexus_providers::mailer::{
    Accepted, Mail, MailError, MailId, MailTransport, Mailer, MailerConfig, Recipient,
};
use nexus_tests::smtp::SmtpServer;

fn accounts(store: &Store) -> Accounts<AnyLog> {
    Accounts::new(
        store.log.clone(),
        store.vault.clone(),
        AccountsConfig::default(),
    )
    .unwrap()
    .with_insecure_cost_for_tests(4)
}

fn deletion_notice(address: &str) -> Mail {
    Mail::DeletionScheduled {
        to: Recipient::parse(address).unwrap(),
        effective_at: Utc::now() + chrono::Duration::days(30),
        forfeit_balance: nexus_core::domain::money::Micros(0),
    }
}

/// A mailer whose attempts are all refused, one a minute: what it accepts
/// stays in the spool.
fn stuck_config(dir: &Path) -> MailerConfig {
    let mut config = config(refused(), dir);
    config.retry.first_delay = Duration::from_secs(60);
    config.retry.max_delay = Duration::from_secs(60);
    config
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn an_erased_account_s_spooled_mail_is_dropped_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let accounts = accounts(&store);
    let server = SmtpServer::start();
    let rt = runtime();
    let (kept, erased) = rt.block_on(async {
        let kept = accounts
            .register("kept@example.com", "correct horse battery")
            .await
            .unwrap()
            .account;
        let erased = accounts
            .register("erased@example.com", "correct horse battery")
            .await
            .unwrap()
            .account;
        (kept, erased)
    });

    // Spooled while the relay refuses; the process stops (its runtime ends).
    let first = runtime();
    first.block_on(async {
        let mailer = Mailer::start(stuck_config(dir.path()), store.vault.clone()).unwrap();
        for (account, address) in [(kept, "kept@example.com"), (erased, "erased@example.com")] {
            let id = MailId::derive(&[address.as_bytes()]);
            assert_eq!(
                mailer.send(id, account, deletion_notice(address)),
                Ok(Accepted::Spooled)
            );
        }
    });
    drop(first);
    assert_eq!(spool_files(dir.path(), "queued").len(), 2);

    // The account is erased (its key shredded) before the next start.
    store.vault.erase(&erased.subject()).unwrap();
    rt.block_on(async {
        let mailer = Mailer::start(config(smtp(&server), dir.path()), store.vault.clone()).unwrap();
        idle(&mailer).await;
        let report = mailer.report();
        assert_eq!(
            (report.restored, report.dropped_erased, report.sent),
            (1, 1, 1)
        );
        assert_eq!(server.mails_to("kept@example.com").len(), 1);
        assert!(server.mails_to("erased@example.com").is_empty());
        assert!(spool_files(dir.path(), "queued").is_empty());
        // Nothing new can be spooled for it.
        assert_eq!(
            mailer.send(
                MailId::derive(&[b"later"]),
                erased,
                deletion_notice("erased@example.com")
            ),
            Err(MailError::RecipientErased)
        );
    });
}

#[test]
fn an_account_erased_while_its_mail_waits_for_a_retry_is_not_mailed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let rt = runtime();
    rt.block_on(async {
        let mut config = config(refused(), dir.path());
        config.retry.first_delay = Duration::from_millis(300);
        config.retry.max_delay = Duration::from_millis(300);
        let mailer = Mailer::start(config, store.vault.clone()).unwrap();
        let account = AccountId::new();
        mailer
            .send(
                MailId::derive(&[b"waits"]),
                account,
                deletion_notice("waits@example.com"),
            )
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        store.vault.erase(&account.subject()).unwrap();
        idle(&mailer).await;
        let report = mailer.report();
        assert_eq!(report.dropped_erased, 1);
        assert_eq!((report.sent, report.failed), (0, 0));
        assert!(report.retried >= 1, "it was waiting for a retry");
        assert!(spool_files(dir.path(), "queued").is_empty());
        assert!(spool_files(dir.path(), "failed").is_empty());
    });
}

#[test]
fn a_mail_id_is_sent_once_until_its_record_expires() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let server = SmtpServer::start();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let account = AccountId::new();
    let id = MailId::for_event(
        nexus_providers::mailer::MailKind::DeletionScheduled,
        uuid::Uuid::now_v7(),
    );
    let address = "once@example.com";
    let start = || {
        Mailer::start_with_clock(
            config(smtp(&server), dir.path()),
            store.vault.clone(),
            clock.clone(),
        )
        .unwrap()
    };
    let rt = runtime();
    rt.block_on(async {
        let mailer = start();
        assert_eq!(
            mailer.send(id, account, deletion_notice(address)),
            Ok(Accepted::Spooled)
        );
        // Spooled already.
        assert_eq!(
            mailer.send(id, account, deletion_notice(address)),
            Ok(Accepted::Duplicate)
        );
        idle(&mailer).await;
        // Delivered already.
        assert_eq!(
            mailer.send(id, account, deletion_notice(address)),
            Ok(Accepted::Duplicate)
        );
        assert_eq!(mailer.report().duplicates, 2);
        assert_eq!(mailer.report().sent, 1);
    });
    drop(rt);
    // After a restart, the delivered record still knows it.
    let rt = runtime();
    rt.block_on(async {
        let mailer = start();
        assert_eq!(
            mailer.send(id, account, deletion_notice(address)),
            Ok(Accepted::Duplicate)
        );
        idle(&mailer).await;
    });
    drop(rt);
    assert_eq!(server.mails_to(address).len(), 1, "one mail for one id");
    let record = std::fs::read_to_string(spool_dir(dir.path()).join("delivered.log")).unwrap();
    assert_eq!(record.lines().count(), 1);
    assert!(record.starts_with(&id.to_string()), "ids only: {record}");

    // Past the retention the record is pruned: the id is new again.
    clock.advance(chrono::Duration::days(DELIVERED_RETENTION_DAYS) + chrono::Duration::hours(1));
    let rt = runtime();
    rt.block_on(async {
        let mailer = start();
        assert_eq!(
            mailer.send(id, account, deletion_notice(address)),
            Ok(Accepted::Spooled)
        );
        idle(&mailer).await;
    });
    assert_eq!(server.mails_to(address).len(), 2);
}

#[test]
fn corrupt_and_foreign_spool_files_are_set_aside_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let queued = spool_dir(dir.path()).join("queued");

    // A mail spooled by another deployment (another vault), copied in.
    let elsewhere = tempfile::tempdir().unwrap();
    let other_store = open_store(elsewhere.path());
    let foreign_id = MailId::derive(&[b"foreign"]);
    let rt = runtime();
    rt.block_on(async {
        let mailer =
            Mailer::start(stuck_config(elsewhere.path()), other_store.vault.clone()).unwrap();
        mailer
            .send(
                foreign_id,
                AccountId::new(),
                deletion_notice("foreign@example.com"),
            )
            .unwrap();
    });
    drop(rt);
    // And a good one, spooled here.
    let good_id = MailId::derive(&[b"good"]);
    let rt = runtime();
    rt.block_on(async {
        let mailer = Mailer::start(stuck_config(dir.path()), store.vault.clone()).unwrap();
        mailer
            .send(
                good_id,
                AccountId::new(),
                deletion_notice("good@example.com"),
            )
            .unwrap();
    });
    drop(rt);
    let foreign_name = format!("{foreign_id}.mail");
    std::fs::copy(
        spool_dir(elsewhere.path())
            .join("queued")
            .join(&foreign_name),
        queued.join(&foreign_name),
    )
    .unwrap();
    // Garbage, a truncated copy of the good file, a file of another name, and
    // a good file renamed to another id.
    let good_name = format!("{good_id}.mail");
    let good_bytes = std::fs::read(queued.join(&good_name)).unwrap();
    let garbage = format!("{}.mail", MailId::derive(&[b"garbage"]));
    std::fs::write(queued.join(&garbage), b"\x00\x01 not json at all").unwrap();
    let truncated = format!("{}.mail", MailId::derive(&[b"truncated"]));
    std::fs::write(queued.join(&truncated), &good_bytes[..good_bytes.len() / 2]).unwrap();
    std::fs::write(queued.join("notes.txt"), b"left by someone").unwrap();
    let moved = format!("{}.mail", MailId::derive(&[b"moved"]));
    std::fs::write(queued.join(&moved), &good_bytes).unwrap();

    let server = SmtpServer::start();
    let rt = runtime();
    rt.block_on(async {
        let mailer = Mailer::start(config(smtp(&server), dir.path()), store.vault.clone()).unwrap();
        idle(&mailer).await;
        let report = mailer.report();
        assert_eq!(report.unreadable, 5, "{report:?}");
        assert_eq!((report.restored, report.sent), (1, 1));
    });
    assert_eq!(server.mails_to("good@example.com").len(), 1);
    assert!(server.mails_to("foreign@example.com").is_empty());
    assert!(spool_files(dir.path(), "queued").is_empty());
    let mut expected = vec![
        foreign_name,
        garbage,
        truncated,
        moved,
        "notes.txt".to_owned(),
    ];
    expected.sort();
    assert_eq!(spool_files(dir.path(), "unreadable"), expected);
}

#[test]
fn a_mail_larger_than_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let rt = runtime();
    rt.block_on(async {
        let mailer = Mailer::start(
            config(MailTransport::outbox_in(dir.path()), dir.path()),
            store.vault.clone(),
        )
        .unwrap();
        // Far longer than an announcement may be: the mailer checks its own
        // limit on what it spools.
        let mail = Mail::PolicyChange {
            to: Recipient::parse("big@example.com").unwrap(),
            title: "Big".into(),
            summary: "\u{1F600}".repeat(30_000),
            effective_at: Utc::now() + chrono::Duration::days(20),
            url: None,
        };
        let refused = mailer.send(MailId::derive(&[b"big"]), AccountId::new(), mail);
        assert!(
            matches!(refused, Err(MailError::TooLarge { max, .. }) if max == nexus_providers::mailer::MAX_MESSAGE_BYTES),
            "{refused:?}"
        );
        assert!(spool_files(dir.path(), "queued").is_empty());
        assert_eq!(mailer.report().pending, 0);
    });
}
