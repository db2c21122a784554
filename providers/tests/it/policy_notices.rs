//! Policy-change notices: one mail per active account registered before the
//! announcement, none to an account with a deletion pending. Each group of
//! notices is spooled before the walk's progress is written: a walk cut by a
//! crash between the two spools the same notices again, which the mailer
//! recognizes by id, and a replay of the announcement after a restart mails
//! nobody twice.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use nexus_core::domain::policy::PolicyChangeRequest;
use nexus_core::log::EventStore;
use nexus_providers::mailer::{MailSettings, MailTransport, Mailer, MailerConfig};
use nexus_providers::notifier::{Notifier, POLICY_MAILS_PER_STEP};
use nexus_testkit::World;
use tokio::sync::watch;

const ACCOUNTS: usize = 2 * POLICY_MAILS_PER_STEP + 20;

/// The recipients of the policy notices in the outbox, one entry per mail.
fn notice_recipients(dir: &Path) -> Vec<String> {
    let mut to: Vec<String> = std::fs::read_dir(dir.join("outbox"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.ends_with(".eml") && name.contains("-policy_change-")
                })
                .filter_map(|e| {
                    let text = std::fs::read_to_string(e.path()).unwrap();
                    text.lines()
                        .find_map(|l| l.strip_prefix("To: ").map(str::to_owned))
                })
                .collect()
        })
        .unwrap_or_default();
    to.sort();
    to
}

async fn wait_for_notices(dir: &Path, n: usize) -> Vec<String> {
    for _ in 0..400 {
        let to = notice_recipients(dir);
        if to.len() >= n {
            return to;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    notice_recipients(dir)
}

fn address(n: usize) -> String {
    format!("user{n:03}@example.com")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_active_account_is_mailed_once_across_a_crash() {
    let w = World::builder().system_clock().build();
    let (dir, store, accounts, policy) = (w.dir(), &w.store, &w.accounts, &w.policy);
    let mailer = Mailer::start(
        MailerConfig::new(
            MailTransport::outbox_in(dir),
            MailSettings::default(),
            MailerConfig::spool_in(dir),
        ),
        store.vault.clone(),
    )
    .unwrap();
    let checkpoint = dir.join("notifier.position");
    let start = || {
        let notifier = Notifier::new(
            store.log.clone(),
            store.vault.clone(),
            accounts.clone(),
            mailer.clone(),
            checkpoint.clone(),
        );
        let (stop, stopped) = watch::channel(false);
        (stop, tokio::spawn(notifier.run(stopped)))
    };

    let mut ids = Vec::new();
    for n in 0..ACCOUNTS {
        let registration = accounts
            .register(&address(n), "correct horse battery")
            .await
            .unwrap();
        ids.push(registration.account);
    }
    // One account in the second group asked to be deleted: it gets no notice.
    let leaving = POLICY_MAILS_PER_STEP + 3;
    accounts.request_deletion(ids[leaving], true).await.unwrap();
    // The notifier's first start was before the announcement.
    let before_announcement = store.log.head();
    std::fs::write(&checkpoint, before_announcement.to_string()).unwrap();

    let announced = policy
        .announce(
            &PolicyChangeRequest {
                title: "New retention periods".into(),
                summary: "Anonymous order data is kept 60 days.".into(),
                effective_at: Utc::now() + chrono::Duration::days(20),
                url: None,
            },
            None,
        )
        .await
        .unwrap();
    assert!(!announced.replayed);

    let (stop, task) = start();
    let expected: Vec<String> = (0..ACCOUNTS)
        .filter(|n| *n != leaving)
        .map(address)
        .collect();
    let to = wait_for_notices(dir, expected.len()).await;
    mailer.idle().await;
    assert_eq!(to, expected, "every active account, once");
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(mailer.report().duplicates, 0);

    // A crash cut the walk after the notices of the second and third groups
    // were spooled and before their progress was written: the progress file
    // still says "after the first group", the checkpoint is before the
    // announcement.
    let registrations: Vec<u64> = store
        .log
        .read_all(1, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.event_type == "AccountRegistered")
        .map(|r| r.position)
        .collect();
    assert_eq!(registrations.len(), ACCOUNTS);
    let progress = dir.join(format!("notifier.policy-{}.position", announced.change.id));
    std::fs::write(
        &progress,
        registrations[POLICY_MAILS_PER_STEP - 1].to_string(),
    )
    .unwrap();

    std::fs::write(&checkpoint, before_announcement.to_string()).unwrap();
    let (stop, task) = start();
    let respooled = (ACCOUNTS - POLICY_MAILS_PER_STEP - 1) as u64;
    for _ in 0..400 {
        if mailer.report().duplicates >= respooled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    mailer.idle().await;
    assert_eq!(
        mailer.report().duplicates,
        respooled,
        "the walk resumed after the first group and spooled the same ids"
    );
    assert_eq!(notice_recipients(dir), expected, "nobody mailed twice");
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();

    // Another crash, before the notifier's checkpoint passed the announcement:
    // it is handled again, and nobody is mailed twice.
    std::fs::write(&checkpoint, before_announcement.to_string()).unwrap();
    let (stop, task) = start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    mailer.idle().await;
    assert_eq!(notice_recipients(dir), expected, "no second notice");
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}
