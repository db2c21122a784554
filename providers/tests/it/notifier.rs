//! Mail queued from events: deposit confirmations and deletion notices reach the
//! outbox once each, also across a restart of the notifier and a replay of
//! events whose mails were spooled already.

use std::path::Path;
use std::time::Duration;

use nexus_core::domain::deposit::PaymentReport;
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::money::Micros;
use nexus_core::domain::wallet::Payment;
use nexus_providers::mailer::{MailSettings, MailTransport, Mailer, MailerConfig};
use nexus_providers::notifier::Notifier;
use nexus_testkit::World;
use tokio::sync::watch;

fn mails_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("outbox"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_for_mails(dir: &Path, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let mails = mails_in(dir);
        if mails.len() >= n {
            return mails;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    mails_in(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposit_and_deletion_mails_are_sent_once_from_the_events() {
    let w = World::builder().system_clock().build();
    let (dir, store, commerce, accounts) = (w.dir(), &w.store, &w.commerce, &w.accounts);
    let settings = MailSettings {
        from: "Nexus <no-reply@nexus.example>".into(),
        public_url: "http://127.0.0.1".into(),
        service_name: "Nexus".into(),
    };
    let mailer = Mailer::start(
        MailerConfig::new(
            MailTransport::outbox_in(dir),
            settings,
            MailerConfig::spool_in(dir),
        ),
        store.vault.clone(),
    )
    .unwrap();
    let checkpoint = dir.join("notifier.position");
    let start = |mailer: Mailer| {
        let notifier = Notifier::new(
            store.log.clone(),
            store.vault.clone(),
            accounts.clone(),
            mailer,
            checkpoint.clone(),
        );
        let (stop, stopped) = watch::channel(false);
        (stop, tokio::spawn(notifier.run(stopped)))
    };
    let (stop, task) = start(mailer.clone());

    let registration = accounts
        .register("dora@example.com", "correct horse battery")
        .await
        .unwrap();
    // Only a verified account deposits.
    let token = registration.verification_token.expose();
    accounts.verify_email(token).await.unwrap();
    let account = registration.account;
    let owner = Owner::Account(account);
    let deposit = commerce
        .request_deposit(owner, Micros(10_000_000))
        .await
        .unwrap();
    commerce
        .record_payment(
            deposit,
            PaymentReport::new(
                "n-1",
                Payment::new("btc", "n-1").unwrap(),
                Micros(7_500_000),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let mails = wait_for_mails(dir, 1).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].contains("To: dora@example.com"));
    assert!(mails[0].contains("7.500000"), "the credited amount");

    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    // Restarted: what was mailed is not mailed again; what comes next is.
    let (stop, task) = start(mailer.clone());
    accounts.request_deletion(account, true).await.unwrap();
    let mails = wait_for_mails(dir, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mails_later = mails_in(dir);
    assert_eq!(mails.len(), 2, "{mails:?}");
    assert_eq!(mails_later.len(), 2, "no duplicates");
    // The deletion mail states the balance the request forfeited (from the
    // event) and how to withdraw, and asks for no reply.
    let deletion = mails
        .iter()
        .find(|m| m.to_lowercase().contains("delet"))
        .expect("a deletion mail");
    let text = deletion.replace("=\r\n", "").replace("\r\n", " ");
    assert!(
        text.contains("balance of 7.500000 USD is forfeited"),
        "{deletion}"
    );
    assert!(text.contains("withdraw the request before"), "{deletion}");
    assert!(!text.to_lowercase().contains("replying"), "{deletion}");
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();

    // A crash after the mails were spooled and before the checkpoint was
    // written: the events are handled again, and their mails (same ids) are
    // recognized by the mailer and not sent twice.
    std::fs::write(&checkpoint, "0").unwrap();
    let (stop, task) = start(mailer.clone());
    for _ in 0..200 {
        if mailer.report().duplicates >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    mailer.idle().await;
    assert_eq!(mailer.report().duplicates, 2, "both mails asked for again");
    assert_eq!(mails_in(dir).len(), 2, "and not sent again");

    // Money that arrives while the deletion is pending: its mail says it
    // will move to unclaimed balances with the rest, and how to keep it.
    commerce
        .record_payment(
            deposit,
            PaymentReport::new(
                "n-2",
                Payment::new("btc", "n-2").unwrap(),
                Micros(1_000_000),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let mails = wait_for_mails(dir, 3).await;
    let warned: Vec<String> = mails
        .iter()
        .map(|m| m.replace("=\r\n", "").replace("\r\n", " "))
        .filter(|m| m.contains("1.000000 USD") && m.contains("deletion is pending"))
        .collect();
    assert_eq!(warned.len(), 1, "{mails:?}");
    assert!(
        warned[0].contains("moves to unclaimed balances"),
        "{}",
        warned[0]
    );
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}
